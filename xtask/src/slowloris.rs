//! The slowloris benchmark (issue 13, item 6): 20,000 connections from one address that send
//! half a request head and then nothing, against a daemon with its default limits.
//!
//! Measured beside their limits: `/health` latency from another address during the attack
//! (next to the same figure without an attack, the floor on this machine), the daemon's peak
//! descriptor count (next to its own limit, read from `/proc`), how many of the slow
//! connections it held (its per-address cap), and how long the held half-sent requests stayed
//! open (the header timeout). The connections are opened by worker processes
//! (`cargo xtask slowloris-worker`), each under its own descriptor limit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::bench::{figure, percentile, Figure};
use crate::http::Conn;

/// Slow connections in all.
const CONNECTIONS: usize = 20_000;
/// Where they come from: one address, not the one `/health` is measured from.
const ATTACKER: &str = "127.0.0.2";
/// The half-sent head each slow connection writes.
const HALF_HEAD: &[u8] = b"GET /api/v1/health HTTP/1.1\r\nHost: bench\r\nX-Slow: ";

pub fn bench(bin: &Path) -> anyhow::Result<Vec<Figure>> {
    let node = crate::bench::node(bin, "slowloris")?;
    let pid = node.pid();
    let limit = descriptor_limit(pid)?;
    let floor = health_latencies(&node.addr, 300)?;

    let per_worker = CONNECTIONS.div_ceil(workers_needed()?);
    let mut workers = Vec::new();
    let mut left = CONNECTIONS;
    while left > 0 {
        let count = left.min(per_worker);
        left -= count;
        let child = Command::new(std::env::current_exe()?)
            .args(["slowloris-worker", &node.addr, ATTACKER, &count.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a slowloris worker")?;
        workers.push(child);
    }

    // Meanwhile: /health from 127.0.0.1, and the daemon's descriptors.
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicUsize::new(0));
    let peak_fds = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, samples, failures, peak_fds, addr) =
            (stop.clone(), samples.clone(), failures.clone(), peak_fds.clone(), node.addr.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak_fds.fetch_max(open_descriptors(pid), Ordering::Relaxed);
                match health_once(&addr) {
                    Ok(ms) => samples.lock().unwrap().push(ms),
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut reports = Vec::new();
    for mut worker in workers {
        let stdout = worker.stdout.take().context("worker stdout")?;
        let report = BufReader::new(stdout).lines().map_while(Result::ok).last().unwrap_or_default();
        worker.wait()?;
        reports.push(serde_json::from_str::<serde_json::Value>(&report).context("a worker's report")?);
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler thread");

    let total = |field: &str| reports.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum::<u64>() as f64;
    let longest = reports.iter().map(|r| r["longestOpenSeconds"].as_f64().unwrap_or(0.0)).fold(0.0, f64::max);
    let mut attacked = samples.lock().unwrap().clone();
    attacked.sort_by(|a, b| a.partial_cmp(b).unwrap());
    anyhow::ensure!(!attacked.is_empty(), "no /health answer during the attack");
    Ok(vec![
        figure("/health p99, no attack (floor)", percentile(&floor, 0.99), "ms", "", ""),
        figure("/health p99 during 20,000 slow conns", percentile(&attacked, 0.99), "ms", "≤ 50", ""),
        figure("/health max during 20,000 slow conns", *attacked.last().unwrap(), "ms", "", ""),
        figure("/health failures during the attack", failures.load(Ordering::Relaxed) as f64, "", "0", ""),
        figure("slow connections opened", total("opened"), "", "20000", ""),
        figure("slow connections the daemon held", total("held"), "", "≤ 128", ""),
        figure("daemon descriptors, peak", peak_fds.load(Ordering::Relaxed) as f64, "", format!("< {limit}"), ""),
        figure("half-sent requests closed after (max)", longest, "s", "≤ 30", ""),
    ])
}

/// How many workers hold the connections: each may open up to its hard descriptor limit.
fn workers_needed() -> anyhow::Result<usize> {
    let hard = raise_descriptor_limit();
    let usable = hard.saturating_sub(64).max(1) as usize;
    Ok(CONNECTIONS.div_ceil(usable).max(2))
}

/// Raises the soft descriptor limit to the hard one; returns it.
fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read or write only the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// The soft "Max open files" of process `pid`.
fn descriptor_limit(pid: u32) -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits.lines().find(|l| l.starts_with("Max open files")).context("no descriptor limit")?;
    line.split_whitespace().nth(3).and_then(|v| v.parse().ok()).context("an unreadable descriptor limit")
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count()).unwrap_or(0)
}

/// One `/health` on a fresh connection (connect included, as a new client would): ms.
fn health_once(addr: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut conn = Conn::open(addr)?;
    let reply = conn.call("GET", "/api/v1/health", None, None)?;
    anyhow::ensure!(reply.status == 200, "health answered {}", reply.status);
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

fn health_latencies(addr: &str, samples: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = (0..samples).map(|_| health_once(addr)).collect::<anyhow::Result<Vec<f64>>>()?;
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(times)
}

/// `cargo xtask slowloris-worker TARGET SOURCE COUNT`: opens COUNT connections from SOURCE,
/// writes half a head on each, and watches when the daemon closes them; prints one JSON line.
pub fn worker(args: &[String]) -> anyhow::Result<()> {
    let [target, source, count] = args else { anyhow::bail!("usage: slowloris-worker TARGET SOURCE COUNT") };
    let target: SocketAddr = target.parse()?;
    let source: IpAddr = source.parse()?;
    let count: usize = count.parse()?;
    raise_descriptor_limit();
    let mut open: Vec<(TcpStream, Instant)> = Vec::with_capacity(count);
    let mut failed = 0;
    for _ in 0..count {
        match connect_from(source, target) {
            Ok(mut stream) => {
                // A refused connection may already be closed: that is the daemon's answer.
                let _ = stream.write_all(HALF_HEAD);
                stream.set_nonblocking(true)?;
                open.push((stream, Instant::now()));
            }
            Err(_) => failed += 1,
        }
    }
    let opened = open.len();
    // Watch them close. Refused ones are closed at once; what is still open a second after the
    // last connect was held by the daemon (it holds a slow one until its header timeout).
    let connected = Instant::now();
    let mut held = None;
    let mut longest = 0f64;
    let deadline = connected + Duration::from_secs(90);
    let mut buf = [0u8; 512];
    while !open.is_empty() && Instant::now() < deadline {
        if held.is_none() && connected.elapsed() >= Duration::from_secs(1) {
            held = Some(open.len());
        }
        open.retain_mut(|(stream, since)| {
            let closed = match stream.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            // Only the held ones tell how long the daemon lets a half-sent request wait.
            if closed && held.is_some() {
                longest = longest.max(since.elapsed().as_secs_f64());
            }
            !closed
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    for (_, since) in &open {
        longest = longest.max(since.elapsed().as_secs_f64());
    }
    let held = held.unwrap_or(open.len());
    let report = serde_json::json!({
        "opened": opened, "failed": failed, "held": held, "stillOpen": open.len(), "longestOpenSeconds": longest,
    });
    println!("{report}");
    Ok(())
}

fn connect_from(source: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(target), socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&target.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}
