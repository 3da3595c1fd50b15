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
    /// 1.0.21's figure: issue 18's, or this run's with `--reference` (reference.rs).
    pub reference: String,
    /// The physical limit measured beside it in the same run (same unit), if there is one.
    pub limit: Option<f64>,
}

impl Figure {
    /// Sets the limit measured in the same run, printed with the ratio value/limit.
    pub fn limit(mut self, limit: f64) -> Figure {
        self.limit = Some(limit);
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.limit.filter(|l| *l > 0.0).map(|l| self.value / l)
    }
}

pub fn figure(
    name: &str,
    value: f64,
    unit: &'static str,
    target: impl Into<String>,
    reference: &'static str,
) -> Figure {
    Figure { name: name.to_string(), value, unit, target: target.into(), reference: reference.into(), limit: None }
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
    ("fleet", fleet),
    ("memory", memory),
    ("slowloris", crate::slowloris::bench),
    ("dashboard", dashboard),
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut json_path = crate::repo_root().join("target/bench.json");
    let mut only: Option<Vec<String>> = None;
    let mut given_bin: Option<PathBuf> = None;
    let mut reference = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => json_path = PathBuf::from(it.next().context("--json needs a file")?),
            // A loopsy binary built elsewhere (an older commit, for before/after figures).
            "--bin" => given_bin = Some(PathBuf::from(it.next().context("--bin needs a file")?)),
            // A built 1.0.21 checkout: its figures measured in this run (reference.rs).
            "--reference" => {
                let dir = it.next().context("--reference needs a directory")?;
                reference = Some(crate::reference::Reference::open(Path::new(dir))?);
            }
            "--only" => only = Some(it.next().context("--only needs names")?.split(',').map(String::from).collect()),
            other => anyhow::bail!("unknown option '{other}'"),
        }
    }
    let bin = match given_bin {
        Some(bin) => bin,
        None => build_release()?,
    };
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
        if let Some(reference) = reference.as_mut() {
            reference.bench(name);
        }
    }
    let notes = crate::reference::annotate(reference.as_ref(), &mut figures);
    print_table(&figures);
    println!("\n{}", notes.join("\n"));
    let json = json!({
        "machine": machine(),
        "figures": figures.iter().map(|f| json!({
            "name": f.name, "value": f.value, "unit": f.unit, "target": f.target, "reference": f.reference,
            "limit": f.limit, "ratio": f.ratio(),
        })).collect::<Vec<_>>(),
        "reference": reference.as_ref().map(crate::reference::Reference::json),
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

pub fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn print_table(figures: &[Figure]) {
    println!(
        "\n{:<46} {:>10} {:<7} {:>10} {:>6}  {:<12} 1.0.21",
        "figure", "value", "unit", "limit", "ratio", "target"
    );
    println!("{}", "-".repeat(106));
    for f in figures {
        let limit = f.limit.map(number).unwrap_or_default();
        let ratio = f.ratio().map(|r| format!("{r:.2}")).unwrap_or_default();
        println!(
            "{:<46} {:>10} {:<7} {:>10} {:>6}  {:<12} {}",
            f.name,
            number(f.value),
            f.unit,
            limit,
            ratio,
            f.target,
            f.reference
        );
    }
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
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
    let mut node = Node::start(bin, &home, &key)?.0;
    node.owns_home = true;
    Ok(node)
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
    let ExecRun { times, rate, ok_rate, refused, loaded, firsts } = measure_exec(&node)?;
    // The floor: spawning `echo` directly (posix_spawn, a pipe, wait) from this process.
    let direct = latencies(500, || {
        let out = Command::new("echo").arg("hi").output()?;
        anyhow::ensure!(out.status.success(), "echo failed");
        Ok(())
    })?;
    Ok(vec![
        figure("exec `echo hi` latency p50", percentile(&times, 0.5), "ms", "≤ 1.25 limit", "4.98")
            .limit(percentile(&direct, 0.5)),
        figure("  limit: spawn `echo` directly, p50", percentile(&direct, 0.5), "ms", "", ""),
        figure("exec at concurrency 32: completed", ok_rate, "ok/s", "", "226"),
        figure("exec at concurrency 32: refused (429)", refused as f64, "", "0", "9620"),
        figure("exec at concurrency 32: latency p99", percentile(&loaded, 0.99), "ms", "", ""),
        figure("exec `echo hi` latency p99", percentile(&times, 0.99), "ms", "", ""),
        figure("exec throughput, 8 connections", rate, "req/s", "", ""),
        figure("SSE time to first byte p50", percentile(&firsts, 0.5), "ms", "≤ 2", "11.7"),
    ])
}

/// What the exec group measures on a running daemon, loopsy's or 1.0.21's (`reference.rs`).
pub struct ExecRun {
    /// Sorted latencies in ms of `echo` over one kept-alive connection.
    pub times: Vec<f64>,
    /// Requests per second over 8 connections.
    pub rate: f64,
    /// At concurrency 32: completed per second, refused, sorted latencies of the completed.
    pub ok_rate: f64,
    pub refused: u64,
    pub loaded: Vec<f64>,
    /// Sorted ms to the first byte of an `/execute/stream` answer.
    pub firsts: Vec<f64>,
}

/// Runs `echo` on `node` every way the exec group measures.
pub fn measure_exec(node: &Node) -> anyhow::Result<ExecRun> {
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
    // Concurrency 32 against the default cap of 10: loopsy's queue holds the rest.
    let (ok_rate, refused, loaded) = exec_load(node, 32, Duration::from_secs(4))?;
    let mut firsts = Vec::new();
    for _ in 0..300 {
        firsts.push(first_byte(&node.addr, &node.key, body)?);
    }
    firsts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(ExecRun { times, rate, ok_rate, refused, loaded, firsts })
}

/// `workers` connections running `echo` for `duration`: (completed per second, refused,
/// sorted latencies in ms of the completed ones). A refusal is code 3003: loopsy answers it
/// with 429 past its queue, 1.0.21 with 400 at once.
fn exec_load(node: &Node, workers: usize, duration: Duration) -> anyhow::Result<(f64, u64, Vec<f64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..workers {
        let (stop, refused, addr, key) = (stop.clone(), refused.clone(), node.addr.clone(), node.key.clone());
        threads.push(std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
            let mut conn = Conn::open(&addr)?;
            let mut times = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let body = br#"{"command":"echo","args":["hi"]}"#;
                let reply = conn.call("POST", "/api/v1/execute", Some(&key), Some(body))?;
                match reply.status {
                    200 => times.push(started.elapsed().as_secs_f64() * 1000.0),
                    400 | 429 if is_refusal(&reply.body) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    other => anyhow::bail!("execute answered {other}: {}", String::from_utf8_lossy(&reply.body)),
                }
            }
            Ok(times)
        }));
    }
    let started = Instant::now();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for thread in threads {
        all.extend(thread.join().expect("bench worker")?);
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok((rate, refused.load(Ordering::Relaxed), all))
}

/// Whether an error body is the "Max concurrent jobs reached" refusal (code 3003).
pub fn is_refusal(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v["error"]["code"] == 3003)
}

/// Milliseconds from sending an `/execute/stream` POST to the first byte of its answer, the
/// stream then read to its last chunk (1.0.21 keeps the connection open after it).
fn first_byte(addr: &str, key: &str, body: &[u8]) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "POST /api/v1/execute/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = vec![0u8; 1];
    stream.read_exact(&mut answer)?;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"\r\n0\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        anyhow::ensure!(n > 0, "the stream ended without its last chunk");
        answer.extend_from_slice(&buf[..n]);
    }
    anyhow::ensure!(
        answer.starts_with(b"HTTP/1.1 200"),
        "execute/stream answered {}",
        String::from_utf8_lossy(&answer)
    );
    Ok(took)
}

/// GETs per second of keys `k0`..`k999` (all present) over 32 connections for 4 s: the same
/// measurement for loopsy and 1.0.21.
pub fn context_gets(addr: &str, key: &str) -> anyhow::Result<f64> {
    let key = key.to_string();
    throughput(addr, 32, Duration::from_secs(4), move |conn, i| {
        let reply = conn.call("GET", &format!("/api/v1/context/k{}", i % 1000), Some(&key), None)?;
        anyhow::ensure!(reply.status == 200, "GET answered {}", reply.status);
        Ok(())
    })
}

fn context(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    let mut node = node(bin, "context")?;
    let key = node.key.clone();
    let puts = throughput(&node.addr, 32, Duration::from_secs(4), move |conn, i| {
        let body = format!(r#"{{"value":"value-{i}"}}"#);
        let reply = conn.call("PUT", &format!("/api/v1/context/k{}", i % 1000), Some(&key), Some(body.as_bytes()))?;
        anyhow::ensure!(reply.status == 200, "PUT answered {}", reply.status);
        Ok(())
    })?;
    let gets = context_gets(&node.addr, &node.key)?;
    let peak = node.memory_kib("VmHWM") as f64 / 1024.0;
    // One connection per store, one request at a time: a PUT of a new key and a GET on a store
    // of 1,000 entries (a second daemon) and on this one once it holds 100,000 (the default
    // context.maxEntries), taken alternately so both see the same load of this shared machine.
    let small = self::node(bin, "context-small")?;
    fill(&small, 1000)?;
    let target = 100_000 - 1000 - LATENCY_SAMPLES; // with k0…k999 and the measured PUTs: 100,000
    let fill_took = timed(|| fill(&node, target))?;
    let placed = SamePlacement::of(&[small.pid(), node.pid()])?;
    let [small_put, large_put, small_get, large_get] = context_latencies(&small, &node)?;
    drop(placed);
    drop(small);
    let mut conn = Conn::open(&node.addr)?;
    let status: serde_json::Value =
        serde_json::from_slice(&conn.call("GET", "/api/v1/status", Some(&node.key), None)?.body)?;
    let entries = status["context"]["entries"].as_f64().unwrap_or(0.0);
    let rss = node.memory_kib("VmRSS") as f64 / 1024.0;
    // A clean stop compacts the store into one snapshot; a start reads it back.
    let compaction = timed(|| {
        node.stop();
        Ok(())
    })?;
    let (home, key) = (node.home.clone(), node.key.clone());
    let (restarted, start) = Node::start(bin, &home, &key)?;
    // What reading the store back costs in memory: the peak during start, and what stays.
    std::thread::sleep(Duration::from_millis(500));
    let start_peak = restarted.memory_kib("VmHWM") as f64 / 1024.0;
    let start_rss = restarted.memory_kib("VmRSS") as f64 / 1024.0;
    drop(restarted);
    Ok(vec![
        figure("context PUT throughput, 32 conns, fsync'd", puts, "req/s", "≥ 10× 1.0.21", "800"),
        figure("context GET throughput, 32 conns", gets, "req/s", "≥ 19000", "1950"),
        figure("daemon peak RSS under context load", peak, "MiB", "", ""),
        figure("context PUT p50 at 100,000 entries", large_put, "ms", "≤ 1.1 limit", "").limit(small_put),
        figure("  limit: context PUT p50 at 1,000 entries", small_put, "ms", "", ""),
        figure("context GET p50 at 100,000 entries", large_get, "ms", "≤ 1.1 limit", "").limit(small_get),
        figure("  limit: context GET p50 at 1,000 entries", small_get, "ms", "", ""),
        figure("  entries in the store", entries, "", "100000", "1000"),
        figure("  filling 97,000 new keys, 32 conns", fill_took * 1000.0, "ms", "", ""),
        figure("  daemon RSS with 100,000 entries", rss, "MiB", "", ""),
        figure("clean stop with 100,000 entries (compacts)", compaction * 1000.0, "ms", "", ""),
        figure("start with 100,000 entries to first /health", start.as_secs_f64() * 1000.0, "ms", "", ""),
        figure("  daemon peak RSS during that start", start_peak, "MiB", "", ""),
        figure("  daemon RSS 0.5 s after that start", start_rss, "MiB", "", ""),
    ])
}

/// PUTs `count` new keys over 32 connections, each worker taking the next number until all are in.
fn fill(node: &Node, count: u64) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (next, addr, key) = (next.clone(), node.addr.clone(), node.key.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut conn = Conn::open(&addr)?;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return Ok(());
                    }
                    let reply =
                        conn.call("PUT", &format!("/api/v1/context/fill-{n}"), Some(&key), Some(br#"{"value":"x"}"#))?;
                    anyhow::ensure!(reply.status == 200, "PUT answered {}", reply.status);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("fill worker")?;
    }
    Ok(())
}

/// PUTs of new keys (then GETs of them) measured per store in [`context_latencies`].
const LATENCY_SAMPLES: u64 = 2000;

/// Two daemons compared on equal terms: every thread of both on the last CPU, the measuring
/// thread on the first, until dropped. Left to the scheduler, whichever daemon happened to be
/// placed better beside the client answered a GET up to 2× faster than the other, either one
/// from run to run, which swamped what the stores themselves cost. Nothing on one CPU.
struct SamePlacement {
    pids: Vec<u32>,
    /// The measuring thread's CPUs before, and everyone's after.
    before: libc::cpu_set_t,
}

impl SamePlacement {
    fn of(pids: &[u32]) -> anyhow::Result<Option<SamePlacement>> {
        // SAFETY: cpu_set_t is plain data; the calls get its real size.
        let mut before: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        anyhow::ensure!(unsafe { libc::sched_getaffinity(0, size, &mut before) } == 0, "sched_getaffinity failed");
        let cpus: Vec<usize> =
            (0..libc::CPU_SETSIZE as usize).filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &before) }).collect();
        let (Some(&first), Some(&last)) = (cpus.first(), cpus.last()) else { return Ok(None) };
        if first == last {
            return Ok(None);
        }
        let placed = SamePlacement { pids: pids.to_vec(), before };
        set_affinity(0, &[first]).map_err(|e| anyhow::anyhow!("sched_setaffinity: {e}"))?;
        for pid in pids {
            for thread in threads_of(*pid)? {
                match set_affinity(thread, &[last]) {
                    // A thread that ended meanwhile (an idle pool thread retires) needs no place.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    done => done.map_err(|e| anyhow::anyhow!("sched_setaffinity({thread}): {e}"))?,
                }
            }
        }
        Ok(Some(placed))
    }
}

impl Drop for SamePlacement {
    fn drop(&mut self) {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let threads = self.pids.iter().flat_map(|pid| threads_of(*pid).unwrap_or_default());
        for thread in std::iter::once(0).chain(threads) {
            // SAFETY: a valid set of the size given; a thread gone since is ignored.
            unsafe { libc::sched_setaffinity(thread, size, &self.before) };
        }
    }
}

/// The thread ids of process `pid`.
fn threads_of(pid: u32) -> anyhow::Result<Vec<libc::pid_t>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))?;
    Ok(tasks.filter_map(|task| task.ok()?.file_name().to_str()?.parse().ok()).collect())
}

/// Runs thread `thread` (0: the calling one) on `cpus` only.
fn set_affinity(thread: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data, filled by the libc macros and passed with its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus {
        unsafe { libc::CPU_SET(*cpu, &mut set) };
    }
    match unsafe { libc::sched_setaffinity(thread, std::mem::size_of::<libc::cpu_set_t>(), &set) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// p50 in ms of [`LATENCY_SAMPLES`] PUTs of new keys and as many GETs of them, one at a time on
/// one connection per store, alternating between the stores (which goes first alternates too):
/// `[small PUT, large PUT, small GET, large GET]`.
fn context_latencies(small: &Node, large: &Node) -> anyhow::Result<[f64; 4]> {
    let nodes = [small, large];
    let mut conns = [Conn::open(&small.addr)?, Conn::open(&large.addr)?];
    let mut times = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for get in [false, true] {
        for i in 0..LATENCY_SAMPLES {
            for turn in 0..2 {
                let which = (turn + i as usize) % 2;
                let path = format!("/api/v1/context/latency-{i}");
                let conn = &mut conns[which];
                let key = &nodes[which].key;
                let started = Instant::now();
                let reply = match get {
                    false => conn.call("PUT", &path, Some(key), Some(br#"{"value":"v"}"#))?,
                    true => conn.call("GET", &path, Some(key), None)?,
                };
                let took = started.elapsed().as_secs_f64() * 1000.0;
                anyhow::ensure!(reply.status == 200, "{} answered {}", if get { "GET" } else { "PUT" }, reply.status);
                times[usize::from(get) * 2 + which].push(took);
            }
        }
    }
    Ok(times.map(|mut t| {
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        percentile(&t, 0.5)
    }))
}

fn transfer(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    // TLS on: the same daemon answers plain HTTP (loopback) and pinned TLS on one port.
    let (home, key) = crate::node::prepare_home_with(bin, "transfer", true)?;
    let node = Node::start(bin, &home, &key)?.0;
    let tls = crate::tls_client::pinned(&home.join("tls/cert.pem"))?;
    // Inside the daemon's user home: the default transfer.allowedPaths.
    let dir = user_home(&node.home).join("files");
    std::fs::create_dir_all(&dir)?;
    let mut figures = Vec::new();
    // The disk is shared and its write+fsync speed swings 2–3× between moments: each figure is
    // the median of several rounds, and the limit (the same bytes written and fsync'd) is
    // measured before every round and once after the last, interleaved with the pushes.
    for (mib, rounds) in [(64u64, 7usize), (512, 5)] {
        let source = dir.join(format!("source-{mib}"));
        write_random_file(&source, mib * 1024 * 1024)?;
        let dest = dir.join(format!("pushed-{mib}"));
        let rate = |seconds: f64| mib as f64 / seconds;
        let (mut ceilings, mut plain, mut secure, mut floors, mut pulls) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut plain_cpu, mut secure_cpu, mut pull_cpu) = (vec![], vec![], vec![]);
        // Daemon CPU seconds and wall seconds of `f`.
        let measured = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<(f64, f64)> {
            let before = cpu_seconds(node.pid());
            let took = timed(f)?;
            Ok((took, cpu_seconds(node.pid()) - before))
        };
        for _ in 0..rounds {
            ceilings.push(write_and_fsync(&dir.join("ceiling"), mib)?);
            let (took, cpu) = measured(&mut || push(&node, &source, &dest))?;
            plain.push(rate(took));
            plain_cpu.push(cpu);
            // The same file served by a minimal sendfile(2) server: what the kernel can do.
            floors.push(rate(timed(|| sendfile_pull(&dest))?));
            let (took, cpu) = measured(&mut || pull(&node, &dest))?;
            pulls.push(rate(took));
            pull_cpu.push(cpu);
            std::fs::remove_file(&dest)?;
            let (took, cpu) = measured(&mut || push_tls(&node, &tls, &source, &dest))?;
            secure.push(rate(took));
            secure_cpu.push(cpu);
            std::fs::remove_file(&dest)?;
        }
        ceilings.push(write_and_fsync(&dir.join("ceiling"), mib)?);
        let _ = std::fs::remove_file(&source);
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            percentile(v, 0.5)
        };
        let ceiling = median(&mut ceilings);
        let plain_rate = median(&mut plain);
        let name = format!("push {mib} MiB (plain HTTP)");
        figures.push(figure(&name, plain_rate, "MiB/s", "≥ 0.9 limit", "405").limit(ceiling));
        figures.push(figure("  daemon CPU for that push", median(&mut plain_cpu), "s", "", ""));
        figures.push(figure(&format!("    lowest of {rounds} pushes"), plain[0], "MiB/s", "", ""));
        figures.push(figure(&format!("    highest of {rounds} pushes"), plain[rounds - 1], "MiB/s", "", ""));
        let n = ceilings.len();
        figures.push(figure(&format!("  limit: {mib} MiB written + fsync, median"), ceiling, "MiB/s", "", ""));
        figures.push(figure(&format!("    lowest of {n} (before/after pushes)"), ceilings[0], "MiB/s", "", ""));
        figures.push(figure(&format!("    highest of {n} (before/after pushes)"), ceilings[n - 1], "MiB/s", "", ""));
        let name = format!("push {mib} MiB (pinned TLS), limit: plain");
        figures.push(figure(&name, median(&mut secure), "MiB/s", "≥ 0.7 plain", "").limit(plain_rate));
        figures.push(figure("  daemon CPU for that push", median(&mut secure_cpu), "s", "", ""));
        let name = format!("pull {mib} MiB (plain HTTP)");
        figures.push(figure(&name, median(&mut pulls), "MiB/s", "≥ 0.9 limit", "460").limit(median(&mut floors)));
        figures.push(figure("  daemon CPU for that pull", median(&mut pull_cpu), "s", "", ""));
    }
    // A push also hashes every byte (SHA-256, checked before the file appears): on one core that
    // alone takes this long, beside the socket and page-cache copies, on the same two cores.
    let hashing = 512.0
        / timed(|| {
            use sha2::Digest;
            let block = vec![0x5au8; 1 << 20];
            let mut hasher = sha2::Sha256::new();
            for _ in 0..512 {
                hasher.update(&block);
            }
            std::hint::black_box(hasher.finalize());
            Ok(())
        })?;
    figures.push(figure("  SHA-256 of 512 MiB on one core (sha2)", hashing, "MiB/s", "", ""));
    let peak = node.memory_kib("VmHWM") as f64 / 1024.0;
    figures.push(figure("daemon peak RSS during transfers", peak, "MiB", "≤ 32", "245"));
    let _ = std::fs::remove_dir_all(&dir);
    drop(node);
    remove_home(&home);
    Ok(figures)
}

/// The ceiling of a durable push of `mib` MiB: this disk's speed (MiB/s) for as many bytes
/// written and fsync'd (the file's removal afterwards is not timed). Writeback is started every
/// 8 MiB while writing, as the daemon does: without it the disk idles until the fsync and the
/// limit would read lower than what the disk can do.
fn write_and_fsync(path: &Path, mib: u64) -> anyhow::Result<f64> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let block = vec![0x5au8; 1 << 20];
    let took = timed(|| {
        let mut file = std::fs::File::create(path)?;
        for i in 1..=mib {
            file.write_all(&block)?;
            if i % 8 == 0 {
                // SAFETY: sync_file_range(2) on an open descriptor; it reads no memory of ours.
                unsafe {
                    libc::sync_file_range(
                        file.as_raw_fd(),
                        ((i - 8) << 20) as i64,
                        8 << 20,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                }
            }
        }
        file.sync_all()?;
        Ok(())
    })?;
    std::fs::remove_file(path)?;
    Ok(mib as f64 / took)
}

/// Downloads `path` from a one-shot server that answers with `sendfile(2)`, as nginx would:
/// the fastest a daemon could serve it on this machine.
fn sendfile_pull(path: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let path = path.to_path_buf();
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let (mut socket, _) = listener.accept()?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            anyhow::ensure!(socket.read(&mut byte)? == 1, "the client went away");
            head.push(byte[0]);
        }
        let file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        write!(socket, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")?;
        let mut left = len;
        while left > 0 {
            // SAFETY: both descriptors are open for the call; a null offset uses the file's.
            let n = unsafe {
                libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), std::ptr::null_mut(), left.min(1 << 30) as usize)
            };
            anyhow::ensure!(n > 0, "sendfile: {}", std::io::Error::last_os_error());
            left -= n as u64;
        }
        Ok(())
    });
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(stream, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut buf = vec![0u8; 1 << 20];
    while stream.read(&mut buf)? > 0 {}
    server.join().expect("sendfile server")?;
    Ok(())
}

pub fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Incompressible bytes from a xorshift generator: hashing and disk see real data.
pub fn write_random_file(path: &Path, len: u64) -> anyhow::Result<()> {
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
    // On disk before anything is timed: otherwise its writeback competes with the first
    // measurements.
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// A multipart push streamed from disk, as curl `-F` sends it (the body with sendfile(2)).
pub fn push(node: &Node, source: &Path, dest: &Path) -> anyhow::Result<()> {
    let stream = std::net::TcpStream::connect(&node.addr)?;
    push_over(stream, node, source, dest, |stream, file| std::io::copy(file, stream).map(drop))
}

/// The same push over TLS, pinned to the daemon's certificate: the same request, the body in
/// 1 MiB writes (large TLS records; sendfile cannot encrypt).
pub fn push_tls(node: &Node, config: &Arc<rustls::ClientConfig>, source: &Path, dest: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let stream = crate::tls_client::connect(config, &node.addr)?;
    push_over(stream, node, source, dest, |stream, file| {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n])?;
        }
    })
}

fn push_over<S: std::io::Read + std::io::Write>(
    mut stream: S,
    node: &Node,
    source: &Path,
    dest: &Path,
    body: impl FnOnce(&mut S, &mut std::fs::File) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let boundary = "loopsybenchboundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"destPath\"\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n",
        dest.display()
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let len = std::fs::metadata(source)?.len() + head.len() as u64 + tail.len() as u64;
    let request = format!(
        "POST /api/v1/transfer/push HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{head}",
        node.addr, node.key
    );
    stream.write_all(request.as_bytes())?;
    body(&mut stream, &mut std::fs::File::open(source)?)?;
    stream.write_all(tail.as_bytes())?;
    stream.flush()?;
    let mut answer = Vec::new();
    // A TLS peer may close without close_notify once it has answered: what arrived counts.
    if let Err(e) = stream.read_to_end(&mut answer) {
        anyhow::ensure!(e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty(), "push: {e}");
    }
    let answer = String::from_utf8_lossy(&answer);
    anyhow::ensure!(answer.starts_with("HTTP/1.1 200"), "push failed: {}", answer.lines().last().unwrap_or(""));
    Ok(())
}

/// A pull read to the end (and thrown away, as a client writing to its page cache would not
/// be the daemon's cost).
pub fn pull(node: &Node, source: &Path) -> anyhow::Result<()> {
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

/// Sorted ms from spawning an MCP server (`spawn`, stdin and stdout piped) to its answer to
/// `tools/list` after the handshake, `rounds` times: loopsy's and 1.0.21's (`reference.rs`).
pub fn mcp_spawn_times(
    rounds: usize,
    mut spawn: impl FnMut() -> anyhow::Result<std::process::Child>,
) -> anyhow::Result<Vec<f64>> {
    use std::io::{BufRead, BufReader, Write};
    let mut times = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let mut child = spawn()?;
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
            let line = lines.next().context("the MCP server closed its output")??;
            if line.contains(r#""id":2"#) {
                break;
            }
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(stdin);
        let _ = child.wait();
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(times)
}

fn mcp(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    let node = node(bin, "mcp")?;
    let times = mcp_spawn_times(30, || {
        Ok(crate::node::command(bin, &node.home)
            .args(["mcp", "serve"])
            .env("LOOPSY_API_KEY", &node.key)
            .env("LOOPSY_PORT", node.addr.rsplit(':').next().unwrap_or("19532"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?)
    })?;
    let (through_mcp, direct) = mcp_execute(bin, &node)?;
    Ok(vec![
        figure("MCP spawn to tools/list answer p50", percentile(&times, 0.5), "ms", "≤ 10", ""),
        figure("MCP loopsy_execute `echo` p50, from a client", through_mcp, "ms", "", "9.1"),
        figure("  the same exec over HTTP p50", direct, "ms", "", ""),
        figure("  MCP layer's own cost (difference)", through_mcp - direct, "ms", "< 0.5", ""),
    ])
}

/// p50 of `loopsy_execute` of `echo` through one MCP server, and of the same exec over HTTP.
fn mcp_execute(bin: &Path, node: &Node) -> anyhow::Result<(f64, f64)> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = crate::node::command(bin, &node.home)
        .arg("--home")
        .arg(&node.home)
        .args(["mcp", "serve"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"bench","version":"1"}}}}}}"#
    )?;
    writeln!(stdin, r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#)?;
    stdin.flush()?;
    lines.next().context("the server closed its output")??;
    let mut id = 0;
    let call = || -> anyhow::Result<()> {
        id += 1;
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"loopsy_execute","arguments":{{"peer":"local","command":"echo","args":["hi"]}}}}}}"#
        )?;
        stdin.flush()?;
        let line = lines.next().context("the server closed its output")??;
        anyhow::ensure!(line.contains("exitCode") && !line.contains("isError"), "loopsy_execute failed: {line}");
        Ok(())
    };
    let through_mcp = mcp_call_p50(call)?;
    drop(stdin);
    let _ = child.wait();
    Ok((through_mcp, http_exec_p50(node)?))
}

/// p50 in ms of an MCP tool `call` (30 calls to warm up, then 300), loopsy's or 1.0.21's.
pub fn mcp_call_p50(mut call: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    for _ in 0..30 {
        call()?;
    }
    Ok(percentile(&latencies(300, &mut call)?, 0.5))
}

/// p50 in ms of `echo` over HTTP on `node`, the figure an MCP call is compared with.
pub fn http_exec_p50(node: &Node) -> anyhow::Result<f64> {
    let mut conn = Conn::open(&node.addr)?;
    let direct = latencies(300, || {
        let reply =
            conn.call("POST", "/api/v1/execute", Some(&node.key), Some(br#"{"command":"echo","args":["hi"]}"#))?;
        anyhow::ensure!(reply.status == 200, "execute answered {}", reply.status);
        Ok(())
    })?;
    Ok(percentile(&direct, 0.5))
}

/// `loopsy session start-fleet --count 20`: total RSS and idle CPU of the sessions, and a
/// clean stop of all of them.
fn fleet(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    const COUNT: usize = 20;
    let node = node(bin, "fleet")?;
    let run = |args: &[&str]| crate::node::loopsy(bin, &node.home, args);
    let started = Instant::now();
    run(&["session", "start-fleet", "--count", &COUNT.to_string()])?;
    let start_took = started.elapsed().as_secs_f64();
    let pids: Vec<u32> = std::fs::read_dir(node.home.join("sessions"))?
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("daemon.pid")).ok())
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    let measured = (|| -> anyhow::Result<(f64, f64, f64, Split)> {
        anyhow::ensure!(pids.len() == COUNT, "{} sessions run, not {COUNT}", pids.len());
        std::thread::sleep(Duration::from_secs(3)); // let start-up work settle
        let cpu = |pids: &[u32]| pids.iter().map(|pid| cpu_seconds(*pid)).sum::<f64>();
        let before = cpu(&pids);
        let window = Duration::from_secs(20);
        std::thread::sleep(window);
        let idle = (cpu(&pids) - before) / window.as_secs_f64() * 100.0;
        let rss_kib: u64 = pids
            .iter()
            .map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                status
                    .lines()
                    .find(|l| l.starts_with("VmRSS"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum();
        // Proportional set size: pages shared between the sessions (the binary's code, the
        // libraries) counted once in total, not once per session as the RSS sum does.
        let pss_kib: u64 = pids
            .iter()
            .map(|pid| {
                let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
                rollup
                    .lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum();
        // What one session's RSS is made of (the mean of the sessions).
        let splits: Vec<Split> = pids.iter().map(|pid| Split::of(*pid, bin)).collect();
        let split = Split::mean(&splits);
        Ok((idle, rss_kib as f64 / 1024.0, pss_kib as f64 / 1024.0, split))
    })();
    let stopped = Instant::now();
    let stop = run(&["session", "stop-all"]);
    let stop_took = stopped.elapsed().as_secs_f64();
    let (idle, rss, pss, split) = measured?;
    stop?;
    Ok(vec![
        figure("fleet of 20 sessions: total RSS", rss, "MiB", "≤ 155", "1587"),
        figure("  total PSS (shared pages counted once)", pss, "MiB", "", ""),
        figure("  per session: the loopsy binary's pages", split.binary, "MiB", "", ""),
        figure("  per session: libc's pages", split.libc, "MiB", "", ""),
        figure("  per session: other libraries' pages", split.libraries, "MiB", "", ""),
        figure("  per session: anonymous memory", split.anon, "MiB", "", ""),
        figure("fleet of 20 sessions: idle CPU", idle, "% core", "≤ 0.5", ""),
        figure("fleet of 20 sessions: start-fleet", start_took * 1000.0, "ms", "", ""),
        figure("fleet of 20 sessions: stop-all", stop_took * 1000.0, "ms", "", ""),
    ])
}

/// One process's resident memory by where it comes from, in MiB: the pages of the binary
/// itself (code and read-only data, shared by every process of the same binary), of libc, of
/// the other shared libraries, and anonymous memory (heap, stacks: its own).
#[derive(Default, Clone, Copy)]
struct Split {
    binary: f64,
    libc: f64,
    libraries: f64,
    anon: f64,
}

impl Split {
    fn of(pid: u32, bin: &Path) -> Split {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let bin = std::fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
        let mut split = Split::default();
        let mut path = String::new();
        for line in smaps.lines() {
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or("");
            if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                path = words.nth(4).unwrap_or("").to_string();
                continue;
            }
            let mut kib =
                |name: &str| if first == name { words.next().and_then(|v| v.parse::<f64>().ok()) } else { None };
            if let Some(rss) = kib("Rss:") {
                let mib = rss / 1024.0;
                if Path::new(&path) == bin {
                    split.binary += mib;
                } else if path.contains("/libc.so") {
                    split.libc += mib;
                } else if path.starts_with('/') {
                    split.libraries += mib;
                }
            } else if let Some(anon) = kib("Anonymous:") {
                split.anon += anon / 1024.0;
            }
        }
        split
    }

    fn mean(splits: &[Split]) -> Split {
        let n = splits.len().max(1) as f64;
        let sum = |f: fn(&Split) -> f64| splits.iter().map(f).sum::<f64>() / n;
        Split {
            binary: sum(|s| s.binary),
            libc: sum(|s| s.libc),
            libraries: sum(|s| s.libraries),
            anon: sum(|s| s.anon),
        }
    }
}

/// Memory comes back: RSS idle, then after a burst (a 2 MB body read whole, 1,000 execs, a
/// 512 MiB push and pull), once things are quiet again.
fn memory(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    let node = node(bin, "memory")?;
    std::thread::sleep(Duration::from_secs(2));
    let idle = node.memory_kib("VmRSS") as f64 / 1024.0;
    let idle_anon = node.memory_kib("RssAnon") as f64 / 1024.0;
    // One 2 MB request body the daemon reads whole: a push of a 2 MB file (a 2 MB context
    // value would be refused unread, values being capped at 1 MiB as in 1.0.21).
    let dir = user_home(&node.home).join("files");
    std::fs::create_dir_all(&dir)?;
    let (small, small_dest) = (dir.join("small"), dir.join("small-dest"));
    write_random_file(&small, 2_000_000)?;
    push(&node, &small, &small_dest)?;
    anyhow::ensure!(std::fs::metadata(&small_dest)?.len() == 2_000_000, "the 2 MB push did not land whole");
    let after_body = {
        std::thread::sleep(Duration::from_secs(2));
        node.memory_kib("VmRSS") as f64 / 1024.0
    };
    let mut conn = Conn::open(&node.addr)?;
    for _ in 0..1000 {
        let reply =
            conn.call("POST", "/api/v1/execute", Some(&node.key), Some(br#"{"command":"echo","args":["hi"]}"#))?;
        anyhow::ensure!(reply.status == 200, "execute answered {}", reply.status);
    }
    let (source, dest) = (dir.join("source"), dir.join("dest"));
    write_random_file(&source, 512 << 20)?;
    push(&node, &source, &dest)?;
    pull(&node, &dest)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::thread::sleep(Duration::from_secs(3));
    let after = node.memory_kib("VmRSS") as f64 / 1024.0;
    let after_anon = node.memory_kib("RssAnon") as f64 / 1024.0;
    Ok(vec![
        figure("idle RSS before the burst", idle, "MiB", "", ""),
        figure("RSS after one 2 MB body", after_body, "MiB", "≤ idle + 2", "").limit(idle),
        figure("RSS after 2 MB body, 1000 execs, 512 MiB", after, "MiB", "≤ idle + 2", "").limit(idle),
        // The rest is the binary's code and libraries, shared by every daemon on the machine.
        figure("  anonymous RSS (heap, stacks) idle", idle_anon, "MiB", "", ""),
        figure("  anonymous RSS after the burst", after_anon, "MiB", "", "").limit(idle_anon),
    ])
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
