//! Bounded everything a stranger can send (issue 13, item 6): the daemon's header and idle
//! timeouts, head size and connection caps; and the client's caps on answers from peers (a
//! health probe goes to any address mDNS announced).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::http::{connect_from, drip};
use crate::support::{wait_until, Daemon, Home};

const WAIT: Duration = Duration::from_secs(15);

fn daemon_with(name: &str, server: &[(&str, u64)]) -> Daemon {
    let home = Home::new(name);
    home.edit_config(|doc| {
        for (field, value) in server {
            doc["server"][*field] = (*value).into();
        }
    });
    home.start()
}

/// How long until the daemon closes `stream` (EOF or reset); panics after `limit`.
#[track_caller]
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return start.elapsed(),
        }
        assert!(start.elapsed() < limit, "the connection is still open after {limit:?}");
    }
}

/// Whether `stream` is still open (nothing to read, no EOF) for the next 200 ms.
fn still_open(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    matches!(stream.read(&mut [0u8; 1]), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

fn health_ok(d: &Daemon) -> bool {
    d.anon("GET", "/api/v1/health").timeout(Duration::from_secs(2)).try_send().is_ok_and(|r| r.status == 200)
}

// See: #13 (item 6)
#[test]
fn silent_and_dripping_clients_are_closed_after_the_header_timeout() {
    let d = daemon_with("slowloris", &[("headerTimeout", 500)]);
    let mut silent = TcpStream::connect(&d.addr).unwrap();
    let mut dripping = TcpStream::connect(&d.addr).unwrap();
    dripping.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n").unwrap();
    // A header line every 100 ms: never idle, never done.
    let drip = drip(dripping.try_clone().unwrap(), b"X-Drip: 1\r\n", Duration::from_millis(100));
    assert!(health_ok(&d), "others are served meanwhile");
    let took = closed_within(&mut silent, Duration::from_secs(5));
    assert!(took >= Duration::from_millis(300), "closed too early: {took:?}");
    closed_within(&mut dripping, Duration::from_secs(5));
    drip.join().unwrap();
    assert!(health_ok(&d));
}

// See: #13 (item 6)
#[test]
fn a_stalled_body_and_an_endless_head_end_the_connection() {
    let d = daemon_with("stalled", &[("idleTimeout", 500)]);
    let mut stalled = TcpStream::connect(&d.addr).unwrap();
    let head = format!(
        "PUT /api/v1/context/k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"value\":",
        d.key
    );
    stalled.write_all(head.as_bytes()).unwrap();
    closed_within(&mut stalled, Duration::from_secs(5));
    assert_eq!(d.get("/api/v1/context/k").status, 404, "nothing half-sent was stored");

    // A head that never ends a line: cut at 64 KiB instead of growing.
    let mut endless = TcpStream::connect(&d.addr).unwrap();
    endless.write_all(b"GET /api/v1/health HTTP/1.1\r\nX-Long: ").unwrap();
    let filler = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 64 * 1024 * 1024 && endless.write_all(&filler).is_ok() {
        sent += filler.len();
    }
    assert!(sent < 64 * 1024 * 1024, "the daemon kept reading a head of {sent} bytes");
    assert!(health_ok(&d));
}

// See: #13 (item 6)
#[test]
fn connections_are_capped_per_address_and_in_all() {
    let d = daemon_with("caps", &[("headerTimeout", 20_000), ("maxConnectionsPerAddress", 4), ("maxConnections", 6)]);
    let mut held: Vec<TcpStream> =
        (0..4).map(|_| connect_from("127.0.0.2".parse().unwrap(), &d.addr).unwrap()).collect();
    assert!(held.iter_mut().all(still_open));
    let mut fifth = connect_from("127.0.0.2".parse().unwrap(), &d.addr).unwrap();
    closed_within(&mut fifth, Duration::from_secs(2));
    assert!(health_ok(&d), "another address is still served");
    held.extend((0..2).map(|_| connect_from("127.0.0.3".parse().unwrap(), &d.addr).unwrap()));
    assert!(held.iter_mut().all(still_open));
    assert!(!health_ok(&d), "six connections fill the global cap");
    held.truncate(3);
    wait_until(WAIT, "closed connections free their places", || health_ok(&d));
}

/// How a fake peer misbehaves after reading a request.
#[derive(Clone, Copy)]
enum Answer {
    /// A header line that never ends.
    EndlessHead,
    /// A JSON body that never ends (no length, no chunks: read until close).
    EndlessBody,
    /// A `Content-Length` of a terabyte.
    HugeDeclared,
    /// An event stream whose first line never ends.
    EndlessLine,
    /// An event stream of `data:` lines that never completes an event.
    EndlessEvent,
}

/// A fake peer on loopback that answers every request the same bad way and counts what it
/// manages to send before the client hangs up.
struct BadPeer {
    port: u16,
    sent: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

impl BadPeer {
    fn start(answer: Answer) -> BadPeer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sent, connections, finished) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, c, f) = (sent.clone(), connections.clone(), finished.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                c.fetch_add(1, Ordering::SeqCst);
                let (s, f) = (s.clone(), f.clone());
                std::thread::spawn(move || {
                    serve_badly(stream, answer, &s);
                    f.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        BadPeer { port, sent, connections, finished }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

fn serve_badly(mut stream: TcpStream, answer: Answer, sent: &AtomicU64) {
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    // Bodies are chunked, as daemons send them (async-h1 reads a body without a length or
    // chunks as empty).
    let sse = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    let json = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n";
    let (head, filler): (String, &[u8]) = match answer {
        Answer::EndlessHead => ("HTTP/1.1 200 OK\r\nX-Filler: ".into(), b"aaaaaaaaaaaaaaaa"),
        Answer::EndlessBody => (json.into(), b"10\r\n1,1,1,1,1,1,1,1,\r\n"),
        Answer::HugeDeclared => (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n[".into(),
            b"1,1,1,1,1,1,1,1,",
        ),
        Answer::EndlessLine => (format!("{sse}6\r\ndata: \r\n"), b"10\r\naaaaaaaaaaaaaaaa\r\n"),
        Answer::EndlessEvent => (sse.into(), b"10\r\ndata: aaaaaaaaa\n\r\n"),
    };
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let chunk = filler.repeat(4096);
    while stream.write_all(&chunk).is_ok() {
        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
}

// See: #13 (item 6)
#[test]
fn health_probes_read_only_a_small_answer_from_whatever_answers_there() {
    for answer in [Answer::EndlessBody, Answer::EndlessHead] {
        let bad = BadPeer::start(answer);
        let home = Home::new("probe-caps");
        home.edit_config(|doc| doc["discovery"]["healthInterval"] = 200.into());
        let d = home.start();
        d.req("POST", "/api/v1/peers").json(&json!({"address": "127.0.0.1", "port": bad.port})).send().expect(200);
        wait_until(WAIT, "two probes were answered badly and hung up on", || bad.finished.load(Ordering::SeqCst) >= 2);
        let per_probe = bad.sent() / bad.connections.load(Ordering::SeqCst) as u64;
        assert!(per_probe < 16 * 1024 * 1024, "a probe let the peer send {per_probe} bytes");
        let peers = d.get("/api/v1/peers").expect(200);
        assert_ne!(peers["peers"][0]["status"], "online", "{peers}");
        assert!(health_ok(&d));
    }
}

// See: #13 (item 6)
#[test]
fn the_cli_gives_up_on_endless_or_oversized_answers_instead_of_growing() {
    let home = Home::new("client-caps");
    let cases = [
        (Answer::EndlessBody, &["context", "get", "k", "--peer"][..], "larger than 67108864 bytes", 96 << 20),
        (Answer::HugeDeclared, &["context", "get", "k", "--peer"][..], "larger than 67108864 bytes", 96 << 20),
        (Answer::EndlessHead, &["context", "get", "k", "--peer"][..], "response head is larger", 16 << 20),
        (Answer::EndlessLine, &["exec"][..], "a line longer than", 48 << 20),
        (Answer::EndlessEvent, &["exec"][..], "an event larger than", 48 << 20),
    ];
    for (answer, args, message, bound) in cases {
        let bad = BadPeer::start(answer);
        let mut argv: Vec<&str> = args.to_vec();
        let address = bad.address();
        argv.push(&address);
        if args[0] == "exec" {
            argv.extend(["echo", "hi"]);
        }
        let run = crate::support::loopsy_in(home.path(), &argv);
        assert_eq!(run.code, 2, "{argv:?}: {run:?}");
        assert!(run.stderr.contains(message), "{argv:?}: {}", run.stderr);
        assert!(bad.sent() < bound, "{argv:?}: the peer sent {} bytes", bad.sent());
    }
}
