//! A TCP proxy for tests that records every byte both ways and can rewrite HTTP request bodies
//! (a man in the middle). TLS connections are relayed untouched (still recorded).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// How long a relayed connection may stay silent.
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Rewrites the body of a request to `path`.
pub type Rewrite = Arc<dyn Fn(&str, Vec<u8>) -> Vec<u8> + Send + Sync>;

pub struct Proxy {
    pub addr: String,
    pub port: u16,
    recording: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    pub fn start(target: &str, rewrite: Option<Rewrite>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let recording = Arc::new(Mutex::new(Vec::new()));
        let (target, log) = (target.to_string(), recording.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let (target, log, rewrite) = (target.clone(), log.clone(), rewrite.clone());
                std::thread::spawn(move || {
                    let _ = relay(client, &target, &log, rewrite);
                });
            }
        });
        Proxy { addr: format!("127.0.0.1:{port}"), port, recording }
    }

    /// Everything that went through, both directions.
    pub fn recording(&self) -> Vec<u8> {
        self.recording.lock().unwrap().clone()
    }
}

fn relay(client: TcpStream, target: &str, log: &Arc<Mutex<Vec<u8>>>, rewrite: Option<Rewrite>) -> std::io::Result<()> {
    // A relay thread never outlives a stalled peer by long (tests never wait on it, but it holds
    // sockets the daemons under test see).
    client.set_read_timeout(Some(IDLE))?;
    let mut first = [0u8; 1];
    if client.peek(&mut first)? == 0 {
        return Ok(());
    }
    let server = TcpStream::connect(target)?;
    server.set_read_timeout(Some(IDLE))?;
    if first[0] == 0x16 {
        return pump_both(client, server, log);
    }
    // Plain HTTP, one request per connection (our clients send Connection: close).
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    if let Some(rewrite) = &rewrite {
        body = rewrite(&path, body);
        head = head
            .lines()
            .map(|l| {
                if l.to_ascii_lowercase().starts_with("content-length:") {
                    format!("Content-Length: {}", body.len())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
            + "\r\n";
    }
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    log.lock().unwrap().extend_from_slice(&request);
    (&server).write_all(&request)?;
    let mut response = Vec::new();
    (&server).read_to_end(&mut response)?;
    log.lock().unwrap().extend_from_slice(&response);
    (&client).write_all(&response)?;
    Ok(())
}

fn pump_both(client: TcpStream, server: TcpStream, log: &Arc<Mutex<Vec<u8>>>) -> std::io::Result<()> {
    let (client2, server2, log2) = (client.try_clone()?, server.try_clone()?, log.clone());
    let upstream = std::thread::spawn(move || pump(client2, server2, &log2));
    pump(server, client, log);
    let _ = upstream.join();
    Ok(())
}

fn pump(mut from: TcpStream, mut to: TcpStream, log: &Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        log.lock().unwrap().extend_from_slice(&buf[..n]);
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
