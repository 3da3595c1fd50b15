//! `cargo xtask bench`: every benchmark of the project, run against a release build on this
//! machine, printed as a table and written as JSON (`target/bench.json`).
//!
//! Figures are measured, never asserted: targets and 1.0.21's figures are printed beside them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::http::Conn;
use crate::node::{prepare_home, remove_home, user_home, Node};

/// One measured figure.
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// e.g. "≤ 8" — what the issue asks for, or the physical limit measured beside it.
    pub target: String,
    /// 1.0.21's figure on this kind of machine, where known.
    pub reference: &'static str,
}

pub fn figure(
    name: &str,
    value: f64,
    unit: &'static str,
    target: impl Into<String>,
    reference: &'static str,
) -> Figure {
    Figure { name: name.to_string(), value, unit, target: target.into(), reference }
}

type Bench = fn(&Path) -> anyhow::Result<Vec<Figure>>;

/// Every benchmark, in the order they run.
const BENCHES: &[(&str, Bench)] = &[
    ("startup", startup),
    ("status", status),
    ("exec", exec),
    ("context", context),
    ("transfer", transfer),
    ("mcp", mcp),
    ("terminal", crate::terminal_bench::terminal),
    ("slowloris", crate::slowloris::bench),
    ("dashboard", dashboard),
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut json_path = crate::repo_root().join("target/bench.json");
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => json_path = PathBuf::from(it.next().context("--json needs a file")?),
            "--only" => only = Some(it.next().context("--only needs names")?.split(',').map(String::from).collect()),
            other => anyhow::bail!("unknown option '{other}'"),
        }
    }
    let bin = build_release()?;
    let mut figures = Vec::new();
    let mut failed = Vec::new();
    for (name, bench) in BENCHES {
        if only.as_ref().is_some_and(|names| !names.iter().any(|n| n == name)) {
            continue;
        }
        eprintln!("bench: {name}…");
        // One benchmark failing (a missing browser, say) does not cost the others' figures.
        match bench(&bin) {
            Ok(more) => figures.extend(more),
            Err(err) => failed.push(format!("{name}: {err:#}")),
        }
    }
    print_table(&figures);
    let json = json!({
        "machine": machine(),
        "figures": figures.iter().map(|f| json!({
            "name": f.name, "value": f.value, "unit": f.unit, "target": f.target, "reference": f.reference
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
    println!("\nwritten to {}", json_path.display());
    anyhow::ensure!(failed.is_empty(), "benchmarks failed:\n  {}", failed.join("\n  "));
    Ok(())
}

fn build_release() -> anyhow::Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--package", "loopsy", "--bin", "loopsy"])
        .current_dir(crate::repo_root())
        .status()?;
    anyhow::ensure!(status.success(), "release build failed");
    Ok(crate::repo_root().join("target/release/loopsy"))
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores, {cpu}")
}

fn print_table(figures: &[Figure]) {
    println!("\n{:<38} {:>12} {:<7} {:<10} 1.0.21", "benchmark", "value", "unit", "target");
    println!("{}", "-".repeat(80));
    for f in figures {
        let value = if f.value >= 100.0 { format!("{:.0}", f.value) } else { format!("{:.2}", f.value) };
        println!("{:<38} {:>12} {:<7} {:<10} {}", f.name, value, f.unit, f.target, f.reference);
    }
}

/// Percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

/// Times `samples` sequential calls of `call`; returns sorted milliseconds.
pub fn latencies(samples: usize, mut call: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        call()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(times)
}

/// Runs `workers` threads, each with its own connection, calling `call` for `duration`;
/// returns completed calls per second.
pub fn throughput(
    addr: &str,
    workers: usize,
    duration: Duration,
    call: impl Fn(&mut Conn, u64) -> anyhow::Result<()> + Send + Sync + 'static,
) -> anyhow::Result<f64> {
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for worker in 0..workers {
        let (call, stop, done, addr) = (call.clone(), stop.clone(), done.clone(), addr.to_string());
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut conn = Conn::open(&addr)?;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                call(&mut conn, worker as u64 * 1_000_000_000 + i)?;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let started = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("bench worker")?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// A started daemon with its home, for benchmarks that need one.
pub fn node(bin: &Path, label: &str) -> anyhow::Result<Node> {
    let (home, key) = prepare_home(bin, label)?;
    Ok(Node::start(bin, &home, &key)?.0)
}

fn startup(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    let (home, key) = prepare_home(bin, "startup")?;
    let mut times = Vec::new();
    for _ in 0..15 {
        let (mut node, took) = Node::start(bin, &home, &key)?;
        times.push(took.as_secs_f64() * 1000.0);
        node.stop();
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (node, _) = Node::start(bin, &home, &key)?;
    std::thread::sleep(Duration::from_secs(2));
    let rss = node.memory_kib("VmRSS") as f64 / 1024.0;
    drop(node);
    remove_home(&home);
    Ok(vec![
        figure("cold start to first /health 200 (p50)", percentile(&times, 0.5), "ms", "≤ 65", "1300"),
        figure("cold start to first /health 200 (max)", *times.last().unwrap(), "ms", "", ""),
        figure("idle RSS after start", rss, "MiB", "≤ 8", "77"),
    ])
}

fn status(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    let node = node(bin, "status")?;
    let key = node.key.clone();
    let mut conn = Conn::open(&node.addr)?;
    let get_status = |conn: &mut Conn| -> anyhow::Result<()> {
        let reply = conn.call("GET", "/api/v1/status", Some(&key), None)?;
        anyhow::ensure!(reply.status == 200, "status answered {}", reply.status);
        Ok(())
    };
    for _ in 0..200 {
        get_status(&mut conn)?;
    }
    let times = latencies(3000, || get_status(&mut conn))?;
    let mut figures = vec![
        figure("GET /status latency p50", percentile(&times, 0.5), "ms", "", ""),
        figure("GET /status latency p99", percentile(&times, 0.99), "ms", "", ""),
    ];
    for workers in [8, 32] {
        let key = node.key.clone();
        let rate = throughput(&node.addr, workers, Duration::from_secs(3), move |conn, _| {
            let reply = conn.call("GET", "/api/v1/status", Some(&key), None)?;
            anyhow::ensure!(reply.status == 200, "status answered {}", reply.status);
            Ok(())
        })?;
        let name = format!("GET /status throughput, {workers} connections");
        figures.push(figure(&name, rate, "req/s", "", ""));
    }
    let peak = node.memory_kib("VmHWM") as f64 / 1024.0;
    figures.push(figure("daemon peak RSS under /status load", peak, "MiB", "", ""));
    Ok(figures)
}

fn exec(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    let node = node(bin, "exec")?;
    let body = br#"{"command":"echo","args":["hi"]}"#;
    let mut conn = Conn::open(&node.addr)?;
    let key = node.key.clone();
    let run = |conn: &mut Conn| -> anyhow::Result<()> {
        let reply = conn.call("POST", "/api/v1/execute", Some(&key), Some(body))?;
        anyhow::ensure!(reply.status == 200, "execute answered {}", reply.status);
        Ok(())
    };
    for _ in 0..50 {
        run(&mut conn)?;
    }
    let times = latencies(1000, || run(&mut conn))?;
    let key = node.key.clone();
    let rate = throughput(&node.addr, 8, Duration::from_secs(3), move |conn, _| {
        let reply = conn.call("POST", "/api/v1/execute", Some(&key), Some(body))?;
        anyhow::ensure!(reply.status == 200, "execute answered {}", reply.status);
        Ok(())
    })?;
    // Time to the first byte of an event stream's answer.
    let mut firsts = Vec::new();
    for _ in 0..300 {
        firsts.push(first_byte(&node.addr, &node.key, "/api/v1/execute/stream", body)?);
    }
    firsts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(vec![
        figure("exec `echo hi` latency p50", percentile(&times, 0.5), "ms", "≤ 2.5", "9.3"),
        figure("exec `echo hi` latency p99", percentile(&times, 0.99), "ms", "", ""),
        figure("exec throughput, 8 connections", rate, "req/s", "", ""),
        figure("SSE time to first byte p50", percentile(&firsts, 0.5), "ms", "≤ 2", "11.7"),
    ])
}

/// Milliseconds from sending a POST to the first byte of its answer.
fn first_byte(addr: &str, key: &str, path: &str, body: &[u8]) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    Ok(took)
}

fn context(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    let node = node(bin, "context")?;
    let key = node.key.clone();
    let puts = throughput(&node.addr, 32, Duration::from_secs(4), move |conn, i| {
        let body = format!(r#"{{"value":"value-{i}"}}"#);
        let reply = conn.call("PUT", &format!("/api/v1/context/k{}", i % 1000), Some(&key), Some(body.as_bytes()))?;
        anyhow::ensure!(reply.status == 200, "PUT answered {}", reply.status);
        Ok(())
    })?;
    let key = node.key.clone();
    let gets = throughput(&node.addr, 32, Duration::from_secs(4), move |conn, i| {
        let reply = conn.call("GET", &format!("/api/v1/context/k{}", i % 1000), Some(&key), None)?;
        anyhow::ensure!(reply.status == 200, "GET answered {}", reply.status);
        Ok(())
    })?;
    let peak = node.memory_kib("VmHWM") as f64 / 1024.0;
    Ok(vec![
        figure("context PUT throughput, 32 conns, fsync'd", puts, "req/s", "≥ 8000", "800"),
        figure("context GET throughput, 32 conns", gets, "req/s", "≥ 19000", "1950"),
        figure("daemon peak RSS under context load", peak, "MiB", "", ""),
    ])
}

fn transfer(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    let node = node(bin, "transfer")?;
    // Inside the daemon's user home: the default transfer.allowedPaths.
    let dir = user_home(&node.home).join("files");
    std::fs::create_dir_all(&dir)?;
    let mut figures = Vec::new();
    for mib in [64u64, 512] {
        let source = dir.join(format!("source-{mib}"));
        write_random_file(&source, mib * 1024 * 1024)?;
        let dest = dir.join(format!("pushed-{mib}"));
        let pushed = timed(|| push(&node, &source, &dest))?;
        let pulled = timed(|| pull(&node, &dest))?;
        figures.push(figure(&format!("push {mib} MiB"), mib as f64 / pushed, "MiB/s", "≥ 600", "77"));
        figures.push(figure(&format!("pull {mib} MiB"), mib as f64 / pulled, "MiB/s", "≥ 600", ""));
        let _ = std::fs::remove_file(&dest);
        let _ = std::fs::remove_file(&source);
    }
    let peak = node.memory_kib("VmHWM") as f64 / 1024.0;
    figures.push(figure("daemon peak RSS during transfers", peak, "MiB", "≤ 32", "245"));
    // The ceiling of a durable push: this disk's speed for the same bytes written and fsync'd.
    let ceiling = timed(|| {
        use std::io::Write;
        let path = dir.join("ceiling");
        let mut file = std::fs::File::create(&path)?;
        let block = vec![0x5au8; 1 << 20];
        for _ in 0..512 {
            file.write_all(&block)?;
        }
        file.sync_all()?;
        std::fs::remove_file(&path)?;
        Ok(())
    })?;
    figures.push(figure("disk ceiling: 512 MiB written + fsync", 512.0 / ceiling, "MiB/s", "", ""));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}

fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Incompressible bytes from a xorshift generator: hashing and disk see real data.
fn write_random_file(path: &Path, len: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

/// A multipart push streamed from disk, as curl `-F` sends it.
fn push(node: &Node, source: &Path, dest: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let boundary = "loopsybenchboundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"destPath\"\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n",
        dest.display()
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let len = std::fs::metadata(source)?.len() + head.len() as u64 + tail.len() as u64;
    let mut stream = std::net::TcpStream::connect(&node.addr)?;
    write!(
        stream,
        "POST /api/v1/transfer/push HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{head}",
        node.addr, node.key
    )?;
    std::io::copy(&mut std::fs::File::open(source)?, &mut stream)?;
    stream.write_all(tail.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    anyhow::ensure!(answer.starts_with("HTTP/1.1 200"), "push failed: {}", answer.lines().last().unwrap_or(""));
    Ok(())
}

/// A pull read to the end (and thrown away, as a client writing to its page cache would not
/// be the daemon's cost).
fn pull(node: &Node, source: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let body = format!(r#"{{"sourcePath":"{}"}}"#, source.display());
    let mut stream = std::net::TcpStream::connect(&node.addr)?;
    write!(
        stream,
        "POST /api/v1/transfer/pull HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        node.addr,
        node.key,
        body.len()
    )?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut first = true;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if first {
            anyhow::ensure!(
                buf.starts_with(b"HTTP/1.1 200"),
                "pull failed: {}",
                String::from_utf8_lossy(&buf[..n.min(200)])
            );
            first = false;
        }
        total += n as u64;
    }
    anyhow::ensure!(total >= std::fs::metadata(source)?.len(), "pull was short");
    Ok(())
}

fn mcp(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    use std::io::{BufRead, BufReader, Write};
    let node = node(bin, "mcp")?;
    let mut times = Vec::new();
    for _ in 0..30 {
        let started = Instant::now();
        let mut child = crate::node::command(bin, &node.home)
            .args(["mcp", "serve"])
            .env("LOOPSY_API_KEY", &node.key)
            .env("LOOPSY_PORT", node.addr.rsplit(':').next().unwrap_or("19532"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped");
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"bench","version":"1"}}}}}}"#
        )?;
        writeln!(stdin, r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#)?;
        writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list"}}"#)?;
        stdin.flush()?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        loop {
            let line = lines.next().context("the server closed its output")??;
            if line.contains(r#""id":2"#) {
                break;
            }
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(stdin);
        let _ = child.wait();
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(vec![figure("MCP spawn to tools/list answer p50", percentile(&times, 0.5), "ms", "≤ 10", "")])
}

/// The dashboard in headless Chromium (`tests/browser/paint.mjs`): the first load and each
/// view's paint, beside a tiny document's load and one animation frame in the same browser.
fn dashboard(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    let scripts = crate::repo_root().join("tests/browser");
    anyhow::ensure!(
        scripts.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing (run .ci/run, or npm ci --prefix tests/browser)"
    );
    let chromium = std::env::var("LOOPSY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    anyhow::ensure!(Path::new(&chromium).exists(), "{chromium} is missing (apt-get install chromium)");
    let node_program = std::env::var("LOOPSY_TEST_NODE").unwrap_or_else(|_| "node".into());
    let node = node(bin, "dashboard")?;
    let mut conn = Conn::open(&node.addr)?;
    let reply = conn.call("POST", "/api/v1/dashboard/token", Some(&node.key), None)?;
    anyhow::ensure!(reply.status == 200, "the dashboard token answered {}", reply.status);
    let token: serde_json::Value = serde_json::from_slice(&reply.body)?;
    let login_path = token["loginPath"].as_str().context("no loginPath")?;
    let base = format!("http://{}", node.addr);
    let config = json!({
        "base": base, "login": format!("{base}{login_path}"), "chromium": chromium, "rounds": 15,
        "screenshots": std::env::temp_dir(),
    });
    let out = crate::node::command(Path::new(&node_program), &node.home)
        .arg(scripts.join("paint.mjs"))
        .arg(config.to_string())
        .output()
        .with_context(|| format!("running {node_program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "paint.mjs failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find_map(|l| l.strip_prefix("figures ")).context("paint.mjs printed no figures")?;
    let got: serde_json::Value = serde_json::from_str(line)?;
    let ms = |name: &str| got[name].as_f64().unwrap_or(f64::NAN);
    let mut figures = vec![
        figure("dashboard first load to data shown (p50)", ms("firstLoad"), "ms", "", ""),
        figure("  limit: tiny document load, same daemon", ms("floorLoad"), "ms", "", ""),
    ];
    for view in ["overview", "peers", "context", "messages", "tasks", "terminal"] {
        figures.push(figure(&format!("dashboard {view} view paint (p50)"), ms(view), "ms", "< 1000", ""));
    }
    figures.push(figure("  limit: one animation frame", ms("frame"), "ms", "", ""));
    Ok(figures)
}
