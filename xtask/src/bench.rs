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
use crate::node::{prepare_home, Node};

/// One measured figure.
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// e.g. "≤ 8" — what the issue asks for.
    pub target: &'static str,
    /// 1.0.21's figure on this kind of machine, where known.
    pub reference: &'static str,
}

fn figure(name: &str, value: f64, unit: &'static str, target: &'static str, reference: &'static str) -> Figure {
    Figure { name: name.to_string(), value, unit, target, reference }
}

type Bench = fn(&Path) -> anyhow::Result<Vec<Figure>>;

/// Every benchmark, in the order they run.
const BENCHES: &[(&str, Bench)] = &[("startup", startup), ("status", status)];

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
    for (name, bench) in BENCHES {
        if only.as_ref().is_some_and(|names| !names.iter().any(|n| n == name)) {
            continue;
        }
        eprintln!("bench: {name}…");
        figures.extend(bench(&bin).with_context(|| format!("benchmark {name}"))?);
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
    let _ = std::fs::remove_dir_all(&home);
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
