//! The terminal benchmarks (issue 16): the keystroke round trip through a daemon's terminal,
//! and 50 MiB of output fanned out to three clients, one of them stalled.
//!
//! Each figure is printed beside its physical limit measured in the same run: the same program
//! on a local PTY with no daemon, WebSocket or network in between.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tungstenite::{Message, WebSocket};

use crate::bench::{figure, node, percentile, Figure};
use crate::http::Conn;
use crate::node::Node;

/// A program that sends back every byte at once: the "echo from `cat`".
const RAW_CAT: &str = "stty raw -echo; exec cat";
const FLOOD_BYTES: u64 = 50 * 1024 * 1024;
const KEYSTROKES: usize = 2000;

pub fn terminal(bin: &std::path::Path) -> anyhow::Result<Vec<Figure>> {
    let mut figures = keystrokes(bin)?;
    figures.extend(flood(bin)?);
    Ok(figures)
}

fn keystrokes(bin: &std::path::Path) -> anyhow::Result<Vec<Figure>> {
    let node = node(bin, "term-keys")?;
    let id = create(&node, &["sh", "-c", RAW_CAT])?;
    let mut ws = attach(&node, &id)?;
    // Until the program answers, keystrokes only reach the line discipline.
    let mut probe = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        ws.send(Message::Binary(vec![b'.'].into()))?;
        probe.extend(read_output(&mut ws, Duration::from_millis(200))?);
        if probe.contains(&b'.') && !probe.ends_with(b"stty raw -echo") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the terminal never echoed");
    }
    drain(&mut ws)?;
    let mut times = Vec::with_capacity(KEYSTROKES);
    for i in 0..KEYSTROKES + 100 {
        let key = b'a' + (i % 26) as u8;
        let sent = Instant::now();
        ws.send(Message::Binary(vec![key].into()))?;
        loop {
            let bytes = read_output(&mut ws, Duration::from_secs(5))?;
            anyhow::ensure!(!bytes.is_empty(), "no echo within 5 s");
            if bytes.contains(&key) {
                break;
            }
        }
        if i >= 100 {
            times.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let local = local_keystrokes()?;
    Ok(vec![
        figure("terminal keystroke round trip p50", percentile(&times, 0.5), "ms", "≤ 2", ""),
        figure("terminal keystroke round trip p99", percentile(&times, 0.99), "ms", "≤ 5", ""),
        figure("  limit: local PTY round trip p50", percentile(&local, 0.5), "ms", "", ""),
        figure("  limit: local PTY round trip p99", percentile(&local, 0.99), "ms", "", ""),
    ])
}

/// The same round trip on a PTY of our own.
fn local_keystrokes() -> anyhow::Result<Vec<f64>> {
    let (mut master, mut child) = local_pty(RAW_CAT)?;
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        master.write_all(b".")?;
        std::thread::sleep(Duration::from_millis(50));
        let n = read_ready(&mut master, &mut buffer)?;
        if buffer[..n].contains(&b'.') {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the local PTY never echoed");
    }
    while read_ready(&mut master, &mut buffer)? > 0 {}
    let mut times = Vec::with_capacity(KEYSTROKES);
    for i in 0..KEYSTROKES {
        let key = b'a' + (i % 26) as u8;
        let sent = Instant::now();
        master.write_all(&[key])?;
        loop {
            let n = master.read(&mut buffer)?;
            if buffer[..n].contains(&key) {
                break;
            }
        }
        times.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = child.kill();
    let _ = child.wait();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(times)
}

fn flood(bin: &std::path::Path) -> anyhow::Result<Vec<Figure>> {
    let node = node(bin, "term-flood")?;
    let id = create(&node, &["sh"])?;
    let idle_rss = node.memory_kib("VmRSS") as f64 / 1024.0;
    let readers: Vec<WebSocket<TcpStream>> = (0..2).map(|_| attach(&node, &id)).collect::<anyhow::Result<_>>()?;
    let stalled = attach(&node, &id)?;
    stalled.get_ref().set_read_timeout(None)?;
    let command = format!("head -c {FLOOD_BYTES} /dev/zero | tr '\\0' x; echo; echo FLOOD-$((40+2))-END\r");
    let (with_stalled, received) = run_flood(readers, &command)?;
    let peak = node.memory_kib("VmHWM") as f64 / 1024.0;
    drop(stalled);
    // The same without the stalled client, for comparison.
    let readers: Vec<WebSocket<TcpStream>> = (0..2).map(|_| attach(&node, &id)).collect::<anyhow::Result<_>>()?;
    let (without, _) = run_flood(readers, &command)?;
    let local = local_flood(&command)?;
    let mib = FLOOD_BYTES as f64 / (1024.0 * 1024.0);
    Ok(vec![
        figure("50 MiB to 3 clients (1 stalled): time", with_stalled, "s", "", ""),
        figure("  each reading client received", received as f64 / (1024.0 * 1024.0), "MiB", "≥ 50", ""),
        figure("  throughput per reading client", mib / with_stalled, "MiB/s", "", ""),
        figure("  same, no stalled client: time", without, "s", "≈ same", ""),
        figure("  limit: local PTY, no daemon: time", local, "s", "", ""),
        figure("daemon RSS idle with a terminal", idle_rss, "MiB", "", ""),
        figure("daemon peak RSS during the 50 MiB", peak, "MiB", "≤ 32", ""),
    ])
}

/// Types `command` through the first reader; returns the seconds until every reader saw the
/// end marker and the fewest bytes any reader received.
fn run_flood(readers: Vec<WebSocket<TcpStream>>, command: &str) -> anyhow::Result<(f64, u64)> {
    let least = Arc::new(AtomicU64::new(u64::MAX));
    let mut readers = readers;
    for ws in &mut readers {
        drain(ws)?;
    }
    let mut first = readers.remove(0);
    first.send(Message::Binary(command.as_bytes().to_vec().into()))?;
    let started = Instant::now();
    readers.insert(0, first);
    let threads: Vec<_> = readers
        .into_iter()
        .map(|mut ws| {
            let least = least.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut received = 0u64;
                let mut tail = Vec::new();
                loop {
                    let bytes = read_output(&mut ws, Duration::from_secs(120))?;
                    anyhow::ensure!(!bytes.is_empty(), "the flood stopped arriving");
                    received += bytes.len() as u64;
                    tail.extend_from_slice(&bytes);
                    if find(&tail, b"FLOOD-42-END") {
                        least.fetch_min(received, Ordering::Relaxed);
                        return Ok(());
                    }
                    let keep = tail.len().saturating_sub(32);
                    tail.drain(..keep);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| anyhow::anyhow!("a reader panicked"))??;
    }
    Ok((started.elapsed().as_secs_f64(), least.load(Ordering::Relaxed)))
}

/// The same command on a PTY of our own, read to the end marker.
fn local_flood(command: &str) -> anyhow::Result<f64> {
    let (mut master, mut child) = local_pty("exec sh")?;
    let started = Instant::now();
    master.write_all(command.as_bytes())?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut tail = Vec::new();
    loop {
        let n = master.read(&mut buffer)?;
        anyhow::ensure!(n > 0, "the local PTY closed");
        tail.extend_from_slice(&buffer[..n]);
        if find(&tail, b"FLOOD-42-END") {
            break;
        }
        let keep = tail.len().saturating_sub(32);
        tail.drain(..keep);
    }
    let took = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    Ok(took)
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `sh -c script` on a new PTY of 200x50; returns the master and the child.
fn local_pty(script: &str) -> anyhow::Result<(std::fs::File, std::process::Child)> {
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize { ws_row: 50, ws_col: 200, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty fills the two descriptors, which we own from here on.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    anyhow::ensure!(rc == 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nothing else.
    let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let child = Command::new("sh")
        .args(["-c", script])
        .env("PS1", "$ ")
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave))
        .spawn()?;
    Ok((master, child))
}

/// Reads what is there without waiting (the master is blocking: poll first).
fn read_ready(master: &mut std::fs::File, buffer: &mut [u8]) -> anyhow::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut poll = libc::pollfd { fd: master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one descriptor we own.
    if unsafe { libc::poll(&mut poll, 1, 0) } <= 0 {
        return Ok(0);
    }
    Ok(master.read(buffer)?)
}

/// `POST /api/v1/terminals` for `argv` at 200x50; returns its id.
fn create(node: &Node, argv: &[&str]) -> anyhow::Result<String> {
    let body =
        serde_json::json!({"command": argv[0], "args": &argv[1..], "cols": 200, "rows": 50, "env": {"PS1": "$ "}});
    let mut conn = Conn::open(&node.addr)?;
    let reply = conn.call("POST", "/api/v1/terminals", Some(&node.key), Some(body.to_string().as_bytes()))?;
    anyhow::ensure!(reply.status == 201, "creating a terminal answered {}", reply.status);
    let info: serde_json::Value = serde_json::from_slice(&reply.body)?;
    Ok(info["id"].as_str().context("no id")?.to_string())
}

fn attach(node: &Node, id: &str) -> anyhow::Result<WebSocket<TcpStream>> {
    use tungstenite::client::IntoClientRequest;
    let mut request =
        format!("ws://{}/api/v1/terminals/{id}/attach?cols=200&rows=50", node.addr).into_client_request()?;
    request.headers_mut().insert("Authorization", format!("Bearer {}", node.key).parse()?);
    let stream = TcpStream::connect(&node.addr)?;
    stream.set_nodelay(true)?;
    let (ws, _) = tungstenite::client(request, stream).map_err(|e| anyhow::anyhow!("attach: {e}"))?;
    Ok(ws)
}

/// Terminal bytes of the next output frame(s) within `limit`; control frames are skipped.
fn read_output(ws: &mut WebSocket<TcpStream>, limit: Duration) -> anyhow::Result<Vec<u8>> {
    ws.get_ref().set_read_timeout(Some(limit))?;
    loop {
        match ws.read() {
            Ok(Message::Binary(bytes)) => return Ok(bytes.to_vec()),
            Ok(Message::Close(_)) => anyhow::bail!("the terminal closed"),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads until nothing arrives for a moment.
fn drain(ws: &mut WebSocket<TcpStream>) -> anyhow::Result<()> {
    while !read_output(ws, Duration::from_millis(300))?.is_empty() {}
    Ok(())
}
