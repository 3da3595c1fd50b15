//! `cargo xtask bench --reference DIR`: 1.0.21's figures measured in the same run, on its Node
//! daemon built from source, so the 1.0.21 column is this machine's and not copied from issue 18.
//!
//! DIR is a checkout of 1.0.21 (leox255/loopsy at 20b0fcd) after `pnpm install && pnpm build`.
//! Its daemon runs as its own CLI runs it (`node packages/daemon/dist/main.js --data-dir D`,
//! output discarded), with the config loopsy's benchmarks get: a home of its own in the temp dir
//! (`node::command`), 127.0.0.1 only, a free port the OS picked, a fresh 32-byte key, mDNS off,
//! rate limits off (1.0.21 never enforced them) and the default limits (`execution.maxConcurrent`
//! 10, `transfer.maxFileSize` 1 GiB). Each group runs right after loopsy's group of the same name
//! and measures with the same client code; a figure 1.0.21 cannot have is printed "n/a" with the
//! reason in a footnote.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::bench::{cpu_seconds, measure_exec, percentile, throughput, ExecRun, Figure};
use crate::http::Conn;
use crate::node::{remove_home, user_home, Node};

/// The version the column is named after; a checkout of another one is refused.
const VERSION: &str = "1.0.21";

/// The figures of one group: measured by its function, "n/a" with the error when it fails.
type Group = fn(&Reference) -> anyhow::Result<Vec<Got>>;

/// Groups named as `bench::BENCHES`, with the names of the figures each gives.
const GROUPS: &[(&str, &[&str], Group)] = &[
    ("startup", &[COLD_P50, COLD_MAX, IDLE_RSS], Reference::startup),
    ("exec", &[EXEC_P50, EXEC_P99, EXEC_RATE, LOAD_OK, LOAD_REFUSED, LOAD_P99, SSE_FIRST], Reference::exec),
    ("context", &[PUT_RATE, GET_RATE, CONTEXT_PEAK], Reference::context),
    ("transfer", &[PUSH_64, PUSH_CPU, PULL_64, PULL_CPU, PUSH_512, PULL_512, TRANSFER_PEAK], Reference::transfer),
    ("mcp", &[MCP_SPAWN, MCP_EXEC, MCP_DIRECT, MCP_COST], Reference::mcp),
    ("fleet", &[FLEET_RSS, FLEET_PSS, FLEET_CPU, FLEET_START, FLEET_STOP], Reference::fleet),
];

// The names of loopsy's rows in bench.rs (a unit test checks that they are still there).
const COLD_P50: &str = "cold start to first /health 200 (p50)";
const COLD_MAX: &str = "cold start to first /health 200 (max)";
const IDLE_RSS: &str = "idle RSS after start";
const EXEC_P50: &str = "exec `echo hi` latency p50";
const EXEC_P99: &str = "exec `echo hi` latency p99";
const EXEC_RATE: &str = "exec throughput, 8 connections";
const LOAD_OK: &str = "exec at concurrency 32: completed";
const LOAD_REFUSED: &str = "exec at concurrency 32: refused (429)";
const LOAD_P99: &str = "exec at concurrency 32: latency p99";
const SSE_FIRST: &str = "SSE time to first byte p50";
const PUT_RATE: &str = "context PUT throughput, 32 conns, fsync'd";
const GET_RATE: &str = "context GET throughput, 32 conns";
const CONTEXT_PEAK: &str = "daemon peak RSS under context load";
const PUSH_64: &str = "push 64 MiB (plain HTTP)";
const PULL_64: &str = "pull 64 MiB (plain HTTP)";
const PUSH_512: &str = "push 512 MiB (plain HTTP)";
const PULL_512: &str = "pull 512 MiB (plain HTTP)";
/// These two rows appear once per size, in the same order for both daemons (`annotate` pairs
/// the n-th row of a name with the n-th figure of that name).
const PUSH_CPU: &str = "  daemon CPU for that push";
const PULL_CPU: &str = "  daemon CPU for that pull";
const TRANSFER_PEAK: &str = "daemon peak RSS during transfers";
const MCP_SPAWN: &str = "MCP spawn to tools/list answer p50";
const MCP_EXEC: &str = "MCP loopsy_execute `echo` p50, from a client";
const MCP_DIRECT: &str = "  the same exec over HTTP p50";
const MCP_COST: &str = "  MCP layer's own cost (difference)";
const FLEET_RSS: &str = "fleet of 20 sessions: total RSS";
const FLEET_PSS: &str = "  total PSS (shared pages counted once)";
const FLEET_CPU: &str = "fleet of 20 sessions: idle CPU";
const FLEET_START: &str = "fleet of 20 sessions: start-fleet";
const FLEET_STOP: &str = "fleet of 20 sessions: stop-all";

/// Rows 1.0.21 cannot have, with the reason, printed whenever their group runs.
const NOT_APPLICABLE: &[(&str, &[&str], &str)] = &[(
    "context",
    &[
        "context PUT p50 at 100,000 entries",
        "context GET p50 at 100,000 entries",
        "  entries in the store",
        "  filling 97,000 new keys, 32 conns",
        "  daemon RSS with 100,000 entries",
        "clean stop with 100,000 entries (compacts)",
        "start with 100,000 entries to first /health",
    ],
    "1.0.21's store refuses a new key past 1,000 entries (code 5003): the 100,000-entry figures cannot be taken",
)];

/// Caveats of figures 1.0.21 does give, printed as footnotes beside them.
const CAVEATS: &[(&str, &str)] = &[
    (LOAD_REFUSED, "1.0.21 refuses past execution.maxConcurrent at once, with HTTP 400 and code 3003 (counted here)"),
    (PUT_RATE, "1.0.21 rewrites context.json on every PUT without fsync: its writes are not durable"),
    (PUSH_64, "1.0.21 answers a push before its write reaches the file and never fsyncs"),
    (PUSH_512, "1.0.21 answers a push before its write reaches the file and never fsyncs"),
    (MCP_EXEC, "1.0.21's loopsy_execute is given the local daemon's address, port and key (peerAddress, peerPort, peerApiKey)"),
    (
        FLEET_RSS,
        "1.0.21: 20 daemons with the configs its `session start-fleet` writes (every sibling and the main daemon as manual peers), \
         started by the bench on 127.0.0.1 and free ports, as its CLI listens on 0.0.0.0:19533+",
    ),
    (FLEET_START, "1.0.21: spawning the 20 daemons until each answers /health (its CLI returns without waiting)"),
    (FLEET_STOP, "1.0.21: SIGTERM to the 20 daemons until each has exited"),
];

/// One figure measured on 1.0.21.
struct Got {
    name: &'static str,
    value: f64,
    unit: &'static str,
}

fn got(name: &'static str, value: f64, unit: &'static str) -> Got {
    Got { name, value, unit }
}

pub struct Reference {
    /// The 1.0.21 checkout.
    dir: PathBuf,
    /// The Node.js program, by absolute path (the isolated `PATH` may not hold it).
    node: PathBuf,
    node_version: String,
    commit: String,
    measured: Vec<Got>,
    /// Figure name to why it is "n/a" or what to know about its value.
    notes: Vec<(String, String)>,
}

impl Reference {
    /// Checks that `dir` is a built 1.0.21 and finds Node.js.
    pub fn open(dir: &Path) -> anyhow::Result<Reference> {
        let build = "build it with `npx pnpm@9 install && npx pnpm@9 build` in the checkout (README, Development)";
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("package.json"))
                .with_context(|| format!("{} is not a loopsy checkout (no package.json)", dir.display()))?,
        )?;
        let version = manifest["version"].as_str().unwrap_or("");
        anyhow::ensure!(version == VERSION, "{} holds loopsy {version:?}, not {VERSION}", dir.display());
        for built in ["packages/daemon/dist/main.js", "packages/mcp-server/dist/index.js"] {
            anyhow::ensure!(dir.join(built).is_file(), "{} has no {built}: {build}", dir.display());
        }
        let node = node_program()?;
        let out = Command::new(&node).arg("--version").output().context("running node --version")?;
        let node_version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let commit = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_default();
        Ok(Reference { dir: dir.to_path_buf(), node, node_version, commit, measured: Vec::new(), notes: Vec::new() })
    }

    /// Measures group `name` (a name of `bench::BENCHES`) on 1.0.21, if it has one.
    pub fn bench(&mut self, name: &str) {
        for (group, names, reason) in NOT_APPLICABLE {
            if *group == name {
                self.notes.extend(names.iter().map(|n| (n.to_string(), reason.to_string())));
            }
        }
        let Some((_, names, measure)) = GROUPS.iter().find(|(group, _, _)| *group == name) else {
            return;
        };
        eprintln!("bench: {name} on {VERSION}…");
        let result = measure(self);
        // Also after a failure: each group's data directory is named after the group.
        remove_home(&data_dir(name));
        match result {
            Ok(got) => {
                for (figure, caveat) in CAVEATS {
                    if got.iter().any(|g| g.name == *figure) {
                        self.notes.push((figure.to_string(), caveat.to_string()));
                    }
                }
                self.measured.extend(got);
            }
            Err(err) => {
                eprintln!("bench: {name} on {VERSION} failed: {err:#}");
                let reason = format!("measuring it on {VERSION} failed: {err:#}");
                self.notes.extend(names.iter().map(|n| (n.to_string(), reason.clone())));
            }
        }
    }

    /// What the JSON output holds of this run's 1.0.21.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "version": VERSION,
            "commit": self.commit,
            "node": self.node_version,
            "figures": self.measured.iter().map(|g| json!({"name": g.name, "value": g.value, "unit": g.unit})).collect::<Vec<_>>(),
            "notes": self.notes.iter().map(|(name, note)| json!({"name": name, "note": note})).collect::<Vec<_>>(),
        })
    }

    fn main_js(&self) -> PathBuf {
        self.dir.join("packages/daemon/dist/main.js")
    }

    /// A data directory with a config (its user home beside it, as `node::user_home` says).
    fn prepare(&self, label: &str) -> anyhow::Result<Home> {
        let data = data_dir(label);
        remove_home(&data);
        std::fs::create_dir_all(&data)?;
        std::fs::create_dir_all(user_home(&data))?;
        let home = Home { data, key: new_key()?, port: free_ports(1)?[0] };
        home.write_config(None, &[])?;
        Ok(home)
    }

    /// Starts 1.0.21's daemon on `home` and waits until `/health` answers from it.
    fn start(&self, home: &Home) -> anyhow::Result<(Node, Duration)> {
        let started = Instant::now();
        let child = crate::node::command(&self.node, &home.data)
            .arg(self.main_js())
            .arg("--data-dir")
            .arg(&home.data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning 1.0.21's daemon")?;
        let node = Node {
            child: Some(child),
            addr: format!("127.0.0.1:{}", home.port),
            key: home.key.clone(),
            home: home.data.clone(),
            owns_home: false,
        };
        let took = wait_healthy(node, started)?;
        Ok(took)
    }

    fn startup(&self) -> anyhow::Result<Vec<Got>> {
        let home = self.prepare("startup")?;
        let mut times = Vec::new();
        for _ in 0..15 {
            let (mut node, took) = self.start(&home)?;
            times.push(took.as_secs_f64() * 1000.0);
            node.stop();
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (node, _) = self.start(&home)?;
        std::thread::sleep(Duration::from_secs(2));
        let rss = node.memory_kib("VmRSS") as f64 / 1024.0;
        drop(node);
        remove_home(&home.data);
        Ok(vec![
            got(COLD_P50, percentile(&times, 0.5), "ms"),
            got(COLD_MAX, *times.last().unwrap(), "ms"),
            got(IDLE_RSS, rss, "MiB"),
        ])
    }

    fn exec(&self) -> anyhow::Result<Vec<Got>> {
        let home = self.prepare("exec")?;
        let (node, _) = self.start(&home)?;
        let ExecRun { times, rate, ok_rate, refused, loaded, firsts } = measure_exec(&node)?;
        drop(node);
        remove_home(&home.data);
        Ok(vec![
            got(EXEC_P50, percentile(&times, 0.5), "ms"),
            got(EXEC_P99, percentile(&times, 0.99), "ms"),
            got(EXEC_RATE, rate, "req/s"),
            got(LOAD_OK, ok_rate, "ok/s"),
            got(LOAD_REFUSED, refused as f64, ""),
            got(LOAD_P99, percentile(&loaded, 0.99), "ms"),
            got(SSE_FIRST, percentile(&firsts, 0.5), "ms"),
        ])
    }

    fn context(&self) -> anyhow::Result<Vec<Got>> {
        let home = self.prepare("context")?;
        let (node, _) = self.start(&home)?;
        // The same 1,000 keys as loopsy's run: exactly 1.0.21's cap.
        let key = node.key.clone();
        let puts = throughput(&node.addr, 32, Duration::from_secs(4), move |conn, i| {
            let body = format!(r#"{{"value":"value-{i}"}}"#);
            let reply =
                conn.call("PUT", &format!("/api/v1/context/k{}", i % 1000), Some(&key), Some(body.as_bytes()))?;
            anyhow::ensure!(reply.status == 200, "PUT answered {}", reply.status);
            Ok(())
        })?;
        // Loopsy's PUTs wrote all 1,000 keys in their 4 s; 1.0.21's may not have: the GETs
        // below must find every key.
        let mut conn = Conn::open(&node.addr)?;
        for i in 0..1000 {
            let reply =
                conn.call("PUT", &format!("/api/v1/context/k{i}"), Some(&node.key), Some(br#"{"value":"v"}"#))?;
            anyhow::ensure!(reply.status == 200, "PUT answered {}", reply.status);
        }
        let gets = crate::bench::context_gets(&node.addr, &node.key)?;
        let peak = node.memory_kib("VmHWM") as f64 / 1024.0;
        drop(node);
        remove_home(&home.data);
        Ok(vec![got(PUT_RATE, puts, "req/s"), got(GET_RATE, gets, "req/s"), got(CONTEXT_PEAK, peak, "MiB")])
    }

    fn transfer(&self) -> anyhow::Result<Vec<Got>> {
        let home = self.prepare("transfer")?;
        let (node, _) = self.start(&home)?;
        // Inside the daemon's user home: its transfer.allowedPaths.
        let dir = user_home(&home.data).join("files");
        std::fs::create_dir_all(&dir)?;
        let mut figures = Vec::new();
        for (mib, push_name, pull_name) in [(64u64, PUSH_64, PULL_64), (512, PUSH_512, PULL_512)] {
            let source = dir.join(format!("source-{mib}"));
            crate::bench::write_random_file(&source, mib * 1024 * 1024)?;
            let dest = dir.join(format!("pushed-{mib}"));
            let cpu_before = cpu_seconds(node.pid());
            let pushed = crate::bench::timed(|| crate::bench::push(&node, &source, &dest))?;
            let push_cpu = cpu_seconds(node.pid()) - cpu_before;
            // 1.0.21 answers before the file is written: wait for all of it before pulling.
            wait_for_size(&dest, mib * 1024 * 1024)?;
            let cpu_before = cpu_seconds(node.pid());
            let pulled = crate::bench::timed(|| crate::bench::pull(&node, &dest))?;
            let pull_cpu = cpu_seconds(node.pid()) - cpu_before;
            figures.push(got(push_name, mib as f64 / pushed, "MiB/s"));
            figures.push(got(PUSH_CPU, push_cpu, "s"));
            figures.push(got(pull_name, mib as f64 / pulled, "MiB/s"));
            figures.push(got(PULL_CPU, pull_cpu, "s"));
            let _ = std::fs::remove_file(&dest);
            let _ = std::fs::remove_file(&source);
        }
        figures.push(got(TRANSFER_PEAK, node.memory_kib("VmHWM") as f64 / 1024.0, "MiB"));
        drop(node);
        remove_home(&home.data);
        Ok(figures)
    }

    fn mcp(&self) -> anyhow::Result<Vec<Got>> {
        use std::io::{BufRead, BufReader, Write};
        let home = self.prepare("mcp")?;
        let (node, _) = self.start(&home)?;
        let server = self.dir.join("packages/mcp-server/dist/index.js");
        let spawn = || {
            crate::node::command(&self.node, &home.data)
                .arg(&server)
                .env("LOOPSY_API_KEY", &home.key)
                .env("LOOPSY_PORT", home.port.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("spawning 1.0.21's MCP server")
        };
        let initialize = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
        let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let spawns = crate::bench::mcp_spawn_times(30, &spawn)?;
        let mut child = spawn()?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        writeln!(stdin, "{initialize}\n{initialized}")?;
        stdin.flush()?;
        lines.next().context("the MCP server closed its output")??;
        let mut id = 0;
        let call = || -> anyhow::Result<()> {
            id += 1;
            let request = json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "loopsy_execute", "arguments": {
                    "peerAddress": "127.0.0.1", "peerPort": home.port, "peerApiKey": home.key,
                    "command": "echo", "args": ["hi"],
                }},
            });
            writeln!(stdin, "{request}")?;
            stdin.flush()?;
            let line = lines.next().context("the MCP server closed its output")??;
            anyhow::ensure!(line.contains("exitCode") && !line.contains("isError"), "loopsy_execute failed: {line}");
            Ok(())
        };
        let through_mcp = crate::bench::mcp_call_p50(call)?;
        drop(stdin);
        let _ = child.wait();
        let direct = crate::bench::http_exec_p50(&node)?;
        drop(node);
        remove_home(&home.data);
        Ok(vec![
            got(MCP_SPAWN, percentile(&spawns, 0.5), "ms"),
            got(MCP_EXEC, through_mcp, "ms"),
            got(MCP_DIRECT, direct, "ms"),
            got(MCP_COST, through_mcp - direct, "ms"),
        ])
    }

    /// 20 sessions as 1.0.21's `session start-fleet` makes them, beside a main daemon.
    fn fleet(&self) -> anyhow::Result<Vec<Got>> {
        const COUNT: usize = 20;
        let main = self.prepare("fleet")?;
        let ports = free_ports(COUNT)?;
        let sessions: Vec<Home> = ports
            .iter()
            .enumerate()
            .map(|(i, port)| Home {
                data: main.data.join(format!("sessions/worker-{}", i + 1)),
                key: main.key.clone(),
                port: *port,
            })
            .collect();
        // Each knows the main daemon and every sibling, as start-fleet's registrations leave them.
        let mut peers = vec![(main.port, "bench".to_string())];
        peers.extend(sessions.iter().enumerate().map(|(i, s)| (s.port, format!("bench-worker-{}", i + 1))));
        for (i, session) in sessions.iter().enumerate() {
            std::fs::create_dir_all(session.data.join("logs"))?;
            let others: Vec<_> = peers.iter().filter(|(port, _)| *port != session.port).cloned().collect();
            session.write_config_for(&main, Some(&format!("bench-worker-{}", i + 1)), &others)?;
        }
        let (main_node, _) = self.start(&main)?;
        let started = Instant::now();
        let mut children = Vec::new();
        for session in &sessions {
            let child = crate::node::command(&self.node, &main.data)
                .arg(self.main_js())
                .arg("--data-dir")
                .arg(&session.data)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("spawning a 1.0.21 session")?;
            children.push(Node {
                child: Some(child),
                addr: format!("127.0.0.1:{}", session.port),
                key: session.key.clone(),
                home: session.data.clone(),
                owns_home: false,
            });
        }
        let mut nodes = Vec::new();
        for child in children {
            nodes.push(wait_healthy(child, started)?.0);
        }
        let start_took = started.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(3)); // let start-up work settle, as for loopsy
        let pids: Vec<u32> = nodes.iter().map(Node::pid).collect();
        let cpu = |pids: &[u32]| pids.iter().map(|pid| cpu_seconds(*pid)).sum::<f64>();
        let before = cpu(&pids);
        let window = Duration::from_secs(20);
        std::thread::sleep(window);
        let idle = (cpu(&pids) - before) / window.as_secs_f64() * 100.0;
        let rss: f64 = nodes.iter().map(|n| n.memory_kib("VmRSS") as f64 / 1024.0).sum();
        let pss: f64 = pids.iter().map(|pid| pss_kib(*pid) as f64 / 1024.0).sum();
        let stopped = Instant::now();
        for node in &nodes {
            let _ = Command::new("kill").arg("-TERM").arg(node.pid().to_string()).status();
        }
        for mut node in nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.wait();
            }
        }
        let stop_took = stopped.elapsed().as_secs_f64();
        drop(main_node);
        remove_home(&main.data);
        Ok(vec![
            got(FLEET_RSS, rss, "MiB"),
            got(FLEET_PSS, pss, "MiB"),
            got(FLEET_CPU, idle, "% core"),
            got(FLEET_START, start_took * 1000.0, "ms"),
            got(FLEET_STOP, stop_took * 1000.0, "ms"),
        ])
    }
}

/// Where the data directory of a group's 1.0.21 daemon lives (its user home beside it).
fn data_dir(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!("loopsy-bench-ref-{label}-{}", std::process::id()))
}

/// A 1.0.21 data directory: its config's port and key.
struct Home {
    data: PathBuf,
    key: String,
    port: u16,
}

impl Home {
    fn write_config(&self, hostname: Option<&str>, peers: &[(u16, String)]) -> anyhow::Result<()> {
        self.write_config_for(self, hostname, peers)
    }

    /// Writes `config.yaml` (as JSON, which YAML reads) with the user home of `owner`, the
    /// home whose processes' `HOME` it is.
    fn write_config_for(&self, owner: &Home, hostname: Option<&str>, peers: &[(u16, String)]) -> anyhow::Result<()> {
        let text = config_text(self.port, &self.key, &user_home(&owner.data), hostname, peers);
        std::fs::create_dir_all(&self.data)?;
        let path = self.data.join("config.yaml");
        std::fs::write(&path, text)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    }
}

/// 1.0.21's `config.yaml` for a benchmark: its defaults (packages/daemon/src/config.ts) but
/// loopback only, on `port`, with `key`, mDNS and rate limits off, transfers under `user_home`.
fn config_text(port: u16, key: &str, user_home: &Path, hostname: Option<&str>, peers: &[(u16, String)]) -> String {
    let user_home = user_home.display().to_string();
    let mut server = json!({"port": port, "host": "127.0.0.1"});
    if let Some(hostname) = hostname {
        server["hostname"] = hostname.into();
    }
    let manual: Vec<_> =
        peers.iter().map(|(port, name)| json!({"address": "127.0.0.1", "port": port, "hostname": name})).collect();
    let config = json!({
        "server": server,
        "auth": {"apiKey": key, "allowedKeys": {}},
        "execution": {
            "denylist": ["rm", "rmdir", "format", "mkfs", "dd", "shutdown", "reboot"],
            "maxConcurrent": 10,
            "defaultTimeout": 300_000,
        },
        "transfer": {
            "allowedPaths": [user_home],
            "deniedPaths": [format!("{user_home}/.ssh"), format!("{user_home}/.gnupg")],
            "maxFileSize": 1_073_741_824u64,
        },
        "rateLimits": {"execute": 0, "transfer": 0, "context": 0},
        "discovery": {"enabled": false, "manualPeers": manual},
        "logging": {"level": "info"},
    });
    serde_json::to_string_pretty(&config).expect("a JSON value") + "\n"
}

/// Waits until `node` answers `/health` as 1.0.21 (not some other process on its port).
fn wait_healthy(mut node: Node, started: Instant) -> anyhow::Result<(Node, Duration)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            node.child = None;
            anyhow::bail!("1.0.21's daemon exited at start ({status})");
        }
        if let Ok(mut conn) = Conn::open(&node.addr) {
            if let Ok(reply) = conn.call("GET", "/api/v1/health", None, None) {
                let version = format!(r#""version":"{VERSION}""#);
                anyhow::ensure!(
                    reply.status == 200 && String::from_utf8_lossy(&reply.body).contains(&version),
                    "{} answered /health, but not as {VERSION}",
                    node.addr
                );
                return Ok((node, started.elapsed()));
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "1.0.21's daemon did not answer /health within 60 s");
        // The same polling as loopsy's start (node::Node::start).
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Waits until the file at `path` holds `len` bytes (1.0.21 answers a push before it is written).
fn wait_for_size(path: &Path, len: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) < len {
        anyhow::ensure!(Instant::now() < deadline, "{} was not written in full", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Proportional set size of a process in KiB.
fn pss_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `count` distinct ports free on 127.0.0.1, as the OS picks them for a port 0 listener (1.0.21
/// announces the port it bound nowhere but its log, so it is given one).
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..count).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

/// A fresh key as 1.0.21's `init` makes one: 32 random bytes in hex.
fn new_key() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Node.js by absolute path: `LOOPSY_TEST_NODE`, else `node` on this process's `PATH`.
fn node_program() -> anyhow::Result<PathBuf> {
    if let Some(program) = std::env::var_os("LOOPSY_TEST_NODE") {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("node"))
        .find(|candidate| candidate.is_file())
        .context("Node.js (node) is not on PATH: 1.0.21 needs it (Node 20)")
}

/// Fills the 1.0.21 column of `figures`: this run's figure with `reference`, else the issue's
/// fixed figure marked "(issue)". Returns the lines to print under the table.
pub fn annotate(reference: Option<&Reference>, figures: &mut [Figure]) -> Vec<String> {
    let Some(reference) = reference else {
        for figure in figures.iter_mut().filter(|f| !f.reference.is_empty()) {
            figure.reference = format!("{} (issue)", figure.reference);
        }
        return vec![format!(
            "{VERSION} column: the figures of issue 18, not this run's (marked \"(issue)\"); \
             measure them with `cargo xtask bench --reference DIR` (README, Development)"
        )];
    };
    let mut footnotes: Vec<&str> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for figure in figures.iter_mut() {
        // The n-th row of a name is the n-th figure of that name (the per-size transfer rows).
        let nth = seen.iter().filter(|name| **name == figure.name).count();
        let measured = reference.measured.iter().filter(|g| g.name == figure.name).nth(nth);
        if let Some(got) = measured {
            seen.push(got.name);
        }
        let note = reference.notes.iter().find(|(name, _)| *name == figure.name).map(|(_, note)| {
            let index = footnotes.iter().position(|n| *n == note).unwrap_or_else(|| {
                footnotes.push(note);
                footnotes.len() - 1
            });
            index + 1
        });
        // A target relative to 1.0.21 ("≥ 10× 1.0.21") has this run's 1.0.21 figure as its
        // limit, so the ratio column prints the multiple.
        if let Some(got) = measured.filter(|_| figure.limit.is_none() && figure.target.ends_with(VERSION)) {
            figure.limit = Some(got.value);
        }
        let text = match (measured, note) {
            (Some(got), _) => crate::bench::number(got.value),
            (None, Some(_)) => "n/a".to_string(),
            (None, None) if figure.reference.is_empty() => String::new(),
            (None, None) => format!("{} (issue)", figure.reference),
        };
        figure.reference = match note {
            Some(index) => format!("{text} [{index}]"),
            None => text,
        };
    }
    let commit = if reference.commit.is_empty() { "unknown commit".to_string() } else { reference.commit.clone() };
    let mut lines = vec![format!(
        "{VERSION} column: measured in this run ({commit}, Node {}, same config, loopback); \"(issue)\": issue 18's figure",
        reference.node_version
    )];
    lines.extend(footnotes.iter().enumerate().map(|(i, note)| format!("[{}] {note}", i + 1)));
    let paired = |got: &&Got| {
        let before = reference.measured.iter().take_while(|g| !std::ptr::eq(*g, *got)).filter(|g| g.name == got.name);
        figures.iter().filter(|f| f.name == got.name).count() > before.count()
    };
    for got in reference.measured.iter().filter(|g| !paired(g)) {
        lines.push(format!(
            "{VERSION} also measured (no loopsy row of that name in this run): {} = {} {}",
            got.name.trim(),
            crate::bench::number(got.value),
            got.unit
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_named_here_is_a_row_of_the_bench() {
        let bench = include_str!("bench.rs");
        let names = GROUPS.iter().flat_map(|(_, names, _)| names.iter()).chain(
            NOT_APPLICABLE.iter().flat_map(|(_, names, _)| names.iter()).chain(CAVEATS.iter().map(|(name, _)| name)),
        );
        for name in names {
            // The transfer rows are formatted per size.
            let spelled = name.replace("64 MiB", "{mib} MiB").replace("512 MiB", "{mib} MiB");
            assert!(bench.contains(&format!("\"{spelled}\"")), "bench.rs has no row {name:?}");
        }
        let groups = GROUPS.iter().map(|(group, _, _)| group).chain(NOT_APPLICABLE.iter().map(|(group, _, _)| group));
        for group in groups {
            assert!(bench.contains(&format!("(\"{group}\", ")), "bench.rs has no group {group:?}");
        }
    }

    #[test]
    fn the_config_listens_on_loopback_only_without_mdns() {
        let text = config_text(4242, "k", Path::new("/tmp/u"), None, &[(4243, "w".into())]);
        let config: serde_json::Value = serde_json::from_str(&text).unwrap();
        // 1.0.21's file, checked by JSON pointer (the key paths of loopsy's are config's own).
        let at = |pointer: &str| config.pointer(pointer).cloned().unwrap_or_default();
        assert_eq!(at("/server/host"), "127.0.0.1");
        assert_eq!(at("/server/port"), 4242);
        assert_eq!(at("/discovery/enabled"), false);
        assert_eq!(at("/discovery/manualPeers/0/address"), "127.0.0.1");
        assert_eq!(at("/transfer/allowedPaths/0"), "/tmp/u");
        assert_eq!(at("/execution/maxConcurrent"), 10);
    }

    #[test]
    fn refusals_are_code_3003_only() {
        assert!(crate::bench::is_refusal(br#"{"error":{"code":3003,"message":"Max concurrent jobs (10) reached"}}"#));
        assert!(!crate::bench::is_refusal(br#"{"error":{"code":3001,"message":"Command 'rm' is denied"}}"#));
        assert!(!crate::bench::is_refusal(b"not json"));
    }

    fn row(name: &str, reference: &'static str) -> Figure {
        crate::bench::figure(name, 1.0, "ms", "", reference)
    }

    #[test]
    fn without_a_reference_the_fixed_figures_are_marked_as_the_issues() {
        let mut figures = vec![row(EXEC_P50, "4.98"), row("other", "")];
        let lines = annotate(None, &mut figures);
        assert_eq!(figures[0].reference, "4.98 (issue)");
        assert_eq!(figures[1].reference, "");
        assert!(lines[0].contains("not this run's"));
    }

    #[test]
    fn measured_figures_replace_the_issues_and_notes_are_numbered_once() {
        let reference = Reference {
            dir: PathBuf::new(),
            node: PathBuf::new(),
            node_version: "v20".into(),
            commit: "abc".into(),
            measured: vec![
                got(EXEC_P50, 5.0, "ms"),
                got(PUT_RATE, 800.0, "req/s"),
                got("renamed", 2.0, "ms"),
                got(PUSH_CPU, 1.0, "s"),
                got(PUSH_CPU, 3.0, "s"),
                got(PUSH_CPU, 4.0, "s"),
            ],
            notes: vec![
                (PUT_RATE.into(), "not durable".into()),
                ("a".into(), "too small".into()),
                ("b".into(), "too small".into()),
            ],
        };
        let mut figures = vec![
            row(EXEC_P50, "4.98"),
            row(PUT_RATE, "800"),
            row("a", ""),
            row("b", "12"),
            row("c", "7"),
            row("d", ""),
            row(PUSH_CPU, ""),
            row(PUSH_CPU, ""),
        ];
        let lines = annotate(Some(&reference), &mut figures);
        let column: Vec<&str> = figures.iter().map(|f| f.reference.as_str()).collect();
        assert_eq!(column, ["5.00", "800 [1]", "n/a [2]", "n/a [2]", "7 (issue)", "", "1.00", "3.00"]);
        assert_eq!(lines[1], "[1] not durable");
        assert_eq!(lines[2], "[2] too small");
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines[3].contains("renamed"), "{lines:?}");
        assert!(lines[4].contains("4.00"), "{lines:?}");
    }

    #[test]
    fn a_target_relative_to_1_0_21_gets_its_figure_as_the_limit() {
        let reference = Reference {
            dir: PathBuf::new(),
            node: PathBuf::new(),
            node_version: "v20".into(),
            commit: "abc".into(),
            measured: vec![got(PUT_RATE, 2_000.0, "req/s"), got(EXEC_P50, 5.0, "ms")],
            notes: Vec::new(),
        };
        let relative = crate::bench::figure(PUT_RATE, 21_000.0, "req/s", "≥ 10× 1.0.21", "800");
        let mut figures = vec![relative, row(EXEC_P50, "4.98")];
        annotate(Some(&reference), &mut figures);
        assert_eq!(figures[0].limit, Some(2_000.0));
        assert_eq!(figures[1].limit, None, "a target not relative to 1.0.21 keeps no limit");
        let mut alone = vec![crate::bench::figure(PUT_RATE, 21_000.0, "req/s", "≥ 10× 1.0.21", "800")];
        annotate(None, &mut alone);
        assert_eq!(alone[0].limit, None, "issue 18's fixed figure is not this run's limit");
    }
}
