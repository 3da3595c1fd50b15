//! A rogue host for the trust tests: it claims a node id that is not its own, answering
//! `GET /api/v1/health` with it as any daemon would, and records every byte anyone sends it
//! (TLS handshakes included), so a test can prove that no key ever reached it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Rogue {
    pub ip: String,
    pub port: u16,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<Mutex<usize>>,
}

impl Rogue {
    /// Listens on `ip` (another loopback address, such as 127.0.0.2) and claims `node_id`.
    pub fn start(ip: &str, node_id: &str) -> Rogue {
        let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (log, count, node_id) = (received.clone(), connections.clone(), node_id.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                *count.lock().unwrap() += 1;
                let (log, node_id) = (log.clone(), node_id.clone());
                std::thread::spawn(move || answer(stream, &log, &node_id));
            }
        });
        Rogue { ip: ip.to_string(), port, received, connections }
    }

    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// Everything received so far, every connection one after the other.
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    /// Fails if any of `keys` reached the rogue in any encoding a client could use.
    #[track_caller]
    pub fn assert_no_key(&self, keys: &[&str]) {
        assert_no_key_in(&self.received(), keys);
    }
}

/// Fails if any of `keys` is in `received`, in any encoding a client could use.
#[track_caller]
pub fn assert_no_key_in(received: &[u8], keys: &[&str]) {
    for key in keys {
        for encoded in encodings(key) {
            let found = received.windows(encoded.len()).any(|w| w.eq_ignore_ascii_case(encoded.as_bytes()));
            assert!(!found, "a key reached the rogue ({encoded:?}); it got:\n{}", String::from_utf8_lossy(received));
        }
    }
}

/// Reads one request (head and a declared body, within 2 s), records it, and answers health
/// checks with the claimed node id; anything else gets a 404.
fn answer(mut stream: TcpStream, log: &Mutex<Vec<u8>>, node_id: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
        if complete(&request) || request.len() > 1 << 20 {
            break;
        }
    }
    log.lock().unwrap().extend_from_slice(&request);
    let body = if request.starts_with(b"GET /api/v1/health ") {
        format!(r#"{{"status":"ok","nodeId":"{node_id}","uptime":1,"version":"1.0.21"}}"#)
    } else if request.starts_with(b"GET ") || request.starts_with(b"POST ") || request.starts_with(b"PUT ") {
        r#"{"error":{"code":1,"message":"not found"}}"#.to_string()
    } else {
        return; // a TLS handshake, or nothing: there is nothing to say
    };
    let status = if body.contains("nodeId") { "200 OK" } else { "404 Not Found" };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// Whether `request` holds a whole head and the body its `Content-Length` declares.
fn complete(request: &[u8]) -> bool {
    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    request.len() >= end + 4 + length
}

/// `key` as it could travel: itself, base64 (standard and URL-safe, of the key and of a Basic
/// credential), hex of its bytes.
fn encodings(key: &str) -> Vec<String> {
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    let mut all = vec![key.to_string(), hex];
    for text in [key.to_string(), format!(":{key}"), format!("{key}:")] {
        let standard = base64(text.as_bytes());
        all.push(standard.trim_end_matches('=').replace('+', "-").replace('/', "_"));
        // The padding-free middle of the standard form also catches it inside longer data.
        all.push(standard.trim_end_matches('=').to_string());
    }
    all.retain(|e| e.len() >= 16);
    all
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}
