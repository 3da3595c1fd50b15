//! A recording HTTP server on loopback: answers every request through a handler and keeps
//! every byte it received, so a test can check what a client actually sent (headers, keys).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the handler answers: a status and a JSON body.
pub type Handler = Arc<dyn Fn(&Recorded) -> (u16, serde_json::Value) + Send + Sync>;

pub struct Recorder {
    pub addr: String,
    pub port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    raw: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    pub fn start(handler: impl Fn(&Recorded) -> (u16, serde_json::Value) + Send + Sync + 'static) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the recorder");
        let port = listener.local_addr().unwrap().port();
        let handler: Handler = Arc::new(handler);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, bytes, stopping) = (requests.clone(), raw.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (handler, log, bytes) = (handler.clone(), log.clone(), bytes.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, &handler, &log, &bytes);
                });
            }
        });
        Recorder { addr: format!("127.0.0.1:{port}"), port, requests, raw, stop }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Every byte received so far, all connections.
    pub fn raw(&self) -> Vec<u8> {
        self.raw.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Copies what the reader consumes into the raw log.
struct Tee<'a> {
    inner: TcpStream,
    raw: &'a Mutex<Vec<u8>>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.raw.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn serve(
    client: TcpStream,
    handler: &Handler,
    log: &Mutex<Vec<Recorded>>,
    raw: &Mutex<Vec<u8>>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = client.try_clone()?;
    let mut reader = BufReader::new(Tee { inner: client, raw });
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let length = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok());
        let mut body = vec![0u8; length.unwrap_or(0)];
        reader.read_exact(&mut body)?;
        let request = Recorded { method, path, headers, body };
        let close = request.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (status, answer) = handler(&request);
        log.lock().unwrap().push(request);
        let answer = answer.to_string();
        write!(
            writer,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{answer}",
            answer.len(),
            if close { "Connection: close\r\n" } else { "" }
        )?;
        if close {
            return Ok(());
        }
    }
}
