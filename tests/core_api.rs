//! `/health`, `/identity`, `/status`, authentication, unknown routes, the audit log, OpenAPI.

use std::time::Duration;

use crate::support::http::Connection;
use crate::support::{wait_until, Daemon, Home, Request};

#[test]
fn health_needs_no_key_and_has_the_1_0_21_shape() {
    let daemon = Daemon::start("health");
    let body = daemon.anon("GET", "/api/v1/health").send().expect(200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], "1.0.21");
    assert_eq!(body["nodeId"].as_str().unwrap().len(), 36);
    assert!(body["uptime"].is_u64());
    // The exemption is decided on the parsed path, so a query string changes nothing...
    daemon.anon("GET", "/api/v1/health?probe=1").send().expect(200);
    // ...and dot segments cannot smuggle another route under it.
    daemon.anon("GET", "/api/v1/health/../status").send().expect_error(401, 1001);
}

#[test]
fn identity_and_status_describe_the_node() {
    let home = Home::new("ident");
    home.edit_config(|doc| doc["server"]["hostname"] = "alice-box".into());
    let daemon = home.start();
    let identity = daemon.get("/api/v1/identity").expect(200);
    assert_eq!(identity["hostname"], "alice-box");
    assert_eq!(identity["port"], daemon.port);
    assert_eq!(identity["platform"], "linux");
    assert_eq!(identity["capabilities"], serde_json::json!(["execute", "transfer", "context", "ai-tasks"]));
    let status = daemon.get("/api/v1/status").expect(200);
    assert_eq!(status["nodeId"], identity["nodeId"]);
    assert_eq!(status["hostname"], "alice-box");
    for (section, field) in
        [("peers", "total"), ("peers", "online"), ("peers", "offline"), ("jobs", "active"), ("context", "entries")]
    {
        assert!(status[section][field].is_u64(), "status.{section}.{field}: {status}");
    }
    let res = daemon.req("GET", "/api/v1/status").send();
    assert!(res.header("content-type").unwrap().starts_with("application/json"));
}

#[test]
fn requests_without_a_key_get_401_code_1001() {
    let daemon = Daemon::start("nokey");
    let message = daemon.anon("GET", "/api/v1/status").send().expect_error(401, 1001);
    assert_eq!(message, "Missing Authorization header");
    daemon.anon("GET", "/api/v1/status").header("Authorization", "Bearer ").send().expect_error(401, 1001);
    // Unknown routes are not probed without a key either.
    daemon.anon("GET", "/api/v1/nowhere").send().expect_error(401, 1001);
}

#[test]
fn a_wrong_key_gets_403_code_1002() {
    let daemon = Daemon::start("wrongkey");
    let message = daemon.anon("GET", "/api/v1/status").key("not-the-key-0000000000").send().expect_error(403, 1002);
    assert_eq!(message, "Invalid API key");
    let last = if daemon.key.ends_with('0') { '1' } else { '0' };
    let almost = format!("{}{last}", &daemon.key[..daemon.key.len() - 1]);
    daemon.anon("GET", "/api/v1/status").key(&almost).send().expect_error(403, 1002);
}

#[test]
fn a_bare_key_without_bearer_is_refused() {
    let daemon = Daemon::start("bare");
    let message =
        daemon.anon("GET", "/api/v1/status").header("Authorization", &daemon.key).send().expect_error(401, 1001);
    assert!(message.contains("Bearer"), "{message}");
    daemon.anon("GET", "/api/v1/status").header("Authorization", &format!("bearer {}", daemon.key)).send().expect(200);
}

#[test]
fn an_allowed_peer_key_is_accepted_and_audited_under_its_name() {
    let home = Home::new("allowed");
    let bob_key = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
    home.edit_config(|doc| doc["auth"]["allowedKeys"]["bob"] = bob_key.into());
    let daemon = home.start();
    daemon.anon("GET", "/api/v1/status").key(bob_key).send().expect(200);
    let audit = daemon.home.path().join("logs/audit.jsonl");
    wait_until(Duration::from_secs(5), "the audit line names bob", || {
        std::fs::read_to_string(&audit).unwrap_or_default().contains(r#""caller":"peer:bob""#)
    });
}

#[test]
fn unknown_routes_get_a_json_404() {
    let daemon = Daemon::start("unknown");
    let message = daemon.get("/api/v1/nonexistent").expect_error(404, 9004);
    assert_eq!(message, "Route GET:/api/v1/nonexistent not found");
    daemon.req("DELETE", "/api/v1/nonexistent").send().expect_error(404, 9004);
    daemon.get("/").expect_error(404, 9004);
    daemon.get("/api/v1/status/").expect_error(404, 9004);
}

#[test]
fn every_request_gets_an_audit_line_with_the_1_0_21_fields() {
    let daemon = Daemon::start("audit");
    daemon.req("GET", "/api/v1/identity?secret=1").header("X-Request-Id", "trace-42").send().expect(200);
    daemon.anon("GET", "/api/v1/status").header("X-Request-Id", "evil\",\"x\":\"y").send().expect_error(401, 1001);
    let audit = daemon.home.path().join("logs/audit.jsonl");
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&audit).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    wait_until(Duration::from_secs(5), "two audit lines", || lines().len() >= 2);
    let lines = lines();
    let traced = lines.iter().find(|l| l["requestId"] == "trace-42").expect("the client's request id is kept");
    assert_eq!(traced["method"], "GET");
    assert_eq!(traced["path"], "/api/v1/identity", "the query string is not logged");
    assert_eq!(traced["fromIp"], "127.0.0.1");
    assert_eq!(traced["statusCode"], 200);
    assert!(traced["duration"].is_f64());
    assert!(traced["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(traced["caller"], "own");
    let refused = lines.iter().find(|l| l["statusCode"] == 401).unwrap();
    assert_eq!(refused["requestId"].as_str().unwrap().len(), 36, "a hostile request id is replaced: {refused}");
    assert!(refused.get("caller").is_none());
}

#[test]
fn the_openapi_document_is_served_without_a_key() {
    let daemon = Daemon::start("openapi");
    let doc = daemon.anon("GET", "/api/v1/openapi.json").send().expect(200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/api/v1/health", "/api/v1/identity", "/api/v1/status"] {
        assert!(doc["paths"][path]["get"]["responses"]["200"].is_object(), "{path} is documented");
    }
    assert_eq!(doc["paths"]["/api/v1/status"]["get"]["responses"]["401"]["$ref"], "#/components/responses/Error");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let daemon = Daemon::start("keepalive");
    let mut connection = Connection::open(&daemon.addr, Duration::from_secs(5));
    for _ in 0..3 {
        connection.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let response = connection.read_response("GET").expect("an answer on the kept-alive connection");
        assert_eq!(response.expect(200)["status"], "ok");
    }
    let _ = Request::new(&daemon.addr, "GET", "/api/v1/health").send();
}

/// One health request on `stream`, its answer read whole, the connection left open.
fn health_on(stream: &mut (impl std::io::Read + std::io::Write)) {
    stream.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"}") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the daemon closed the connection: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
}

// A client going away between keep-alive requests is no malformed request: the daemon used to
// try to write a 400 into the dead connection (the review of the one-read-per-request change).
#[test]
fn a_client_leaving_a_kept_alive_connection_abruptly_is_let_go_without_an_answer() {
    let closed = |d: &Daemon, local: std::net::SocketAddr| {
        let line = format!("{local}: connection closed before a request");
        wait_until(Duration::from_secs(5), &line, || d.output_has(&line));
        assert!(!d.output_has("malformed request"), "no 400 was written: {:?}", d.output.lock().unwrap());
    };

    // Plain HTTP: the client resets the connection (SO_LINGER 0).
    let home = Home::new("reset");
    home.edit_config(|doc| doc["logging"]["level"] = "debug".into());
    let daemon = home.start();
    let mut tcp = std::net::TcpStream::connect(&daemon.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    health_on(&mut tcp);
    let local = tcp.local_addr().unwrap();
    socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO)).unwrap();
    drop(tcp);
    closed(&daemon, local);

    // HTTPS: the client closes TCP without TLS's close_notify, as browsers often do.
    let home = Home::new("no-close-notify");
    home.edit_config(|doc| {
        doc["logging"]["level"] = "debug".into();
        doc["tls"]["enabled"] = true.into();
    });
    let daemon = home.start();
    let tcp = std::net::TcpStream::connect(&daemon.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = tcp.local_addr().unwrap();
    let paths = loopsy::paths::Paths::from_dir(daemon.home.path()).unwrap();
    let pin = loopsy::tls::local_fingerprint(&paths).expect("the daemon's certificate");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(loopsy::tls::client_config(&pin), name).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    health_on(&mut tls);
    tls.sock.shutdown(std::net::Shutdown::Both).unwrap();
    closed(&daemon, local);
}

#[test]
fn shutdown_lets_a_request_in_flight_finish_and_refuses_new_connections() {
    let mut daemon = Daemon::start("drain");
    let request = daemon.req("POST", "/api/v1/execute").json(&serde_json::json!({"command": "sleep", "args": ["1"]}));
    let in_flight = std::thread::spawn(move || request.send());
    wait_until(Duration::from_secs(5), "the job is listed", || {
        daemon.get("/api/v1/execute/jobs").expect(200)["jobs"].as_array().is_some_and(|jobs| jobs.len() == 1)
    });
    daemon.signal(libc::SIGTERM);
    wait_until(Duration::from_secs(5), "new connections are refused", || {
        std::net::TcpStream::connect(&daemon.addr).is_err()
    });
    let result = in_flight.join().unwrap().expect(200);
    assert_eq!(result["exitCode"], 0, "the in-flight request got its result: {result}");
    assert_eq!(result["killed"], false);
    assert_eq!(daemon.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn refused_requests_with_bodies_keep_a_keep_alive_connection_usable() {
    // See: the exec issue's report; the unread body used to be drained after the answer, which
    // could swallow the start of the client's next request and stall the connection.
    let daemon = Daemon::start("drain");
    let mut connection = Connection::open(&daemon.addr, Duration::from_secs(5));
    let body = r#"{"command":"echo","args":["hi"]}"#;
    for i in 0..200 {
        let request = format!(
            "POST /api/v1/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        connection.write(request.as_bytes()).unwrap();
        let response = connection.read_response("POST").unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(response.status, 401, "request {i}: {}", response.text());
    }
}

#[test]
fn malformed_json_bodies_get_a_400_that_says_what_is_wrong() {
    let daemon = Daemon::start("badjson");
    let put = |body: &str| {
        daemon.req("PUT", "/api/v1/context/k").header("Content-Type", "application/json").body(body).send()
    };
    let message = put(r#"{"value": "unterminated"#).expect_error(400, 9003);
    assert!(message.starts_with("invalid JSON body"), "{message}");
    put("not json at all").expect_error(400, 9003);
    let message = put(r#"{"value": 42}"#).expect_error(400, 9003);
    assert!(message.contains("field 'value'") && message.contains("expected a string"), "{message}");
    let message = put(r#"{"value": "v", "ttl": true}"#).expect_error(400, 9003);
    assert!(message.contains("field 'ttl'"), "{message}");
    let message = put(r#"{"ttl": 5}"#).expect_error(400, 9003);
    assert_eq!(message, "Missing value", "a missing field is named");
    put("[]").expect_error(400, 9003);
    let message = put("").expect_error(400, 9003);
    assert!(message.contains("empty"), "{message}");
    put("  \r\n").expect_error(400, 9003);
    daemon.get("/api/v1/context/k").expect_error(404, 5001);
}

#[test]
fn other_content_types_get_415() {
    let daemon = Daemon::start("mediatype");
    let message = daemon
        .req("PUT", "/api/v1/context/k")
        .header("Content-Type", "text/plain")
        .body(r#"{"value":"v"}"#)
        .send()
        .expect_error(415, 9007);
    assert!(message.contains("text/plain") && message.contains("application/json"), "{message}");
    daemon
        .req("PUT", "/api/v1/context/k")
        .header("Content-Type", "application/json; charset=utf-8")
        .body(r#"{"value":"v"}"#)
        .send()
        .expect(200);
}

#[test]
fn oversized_bodies_get_413_without_being_read() {
    use std::io::{BufRead, BufReader, Write};
    let daemon = Daemon::start("toolarge");
    // Over the raised limit of the context PUT (1 MiB + 64 KiB), sent whole.
    let big = format!(r#"{{"value":"{}"}}"#, "v".repeat(1024 * 1024 + 65 * 1024));
    let message = daemon
        .req("PUT", "/api/v1/context/k")
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .expect_error(413, 9006);
    assert!(message.contains("larger than"), "{message}");
    // A declared 100 MiB body is refused after its first bytes: the answer comes although
    // the rest is never sent.
    let mut stream = std::net::TcpStream::connect(&daemon.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        stream,
        "PUT /api/v1/context/k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"value\":\"",
        daemon.key,
        100 * 1024 * 1024
    )
    .unwrap();
    stream.write_all(&[b'v'; 64 * 1024]).unwrap();
    let mut status = String::new();
    BufReader::new(stream).read_line(&mut status).expect("an answer before the body is complete");
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    daemon.get("/api/v1/context/k").expect_error(404, 5001);
}

#[test]
fn rate_limits_are_enforced_per_peer_key_and_category_and_not_on_the_owner() {
    let home = Home::new("ratelimit");
    let (bob_key, carol_key) = ("b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0", "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0");
    home.edit_config(|doc| {
        doc["rateLimits"]["context"] = 3.into();
        doc["auth"]["allowedKeys"]["bob"] = bob_key.into();
        doc["auth"]["allowedKeys"]["carol"] = carol_key.into();
    });
    let daemon = home.start();
    let bob = |method: &str, path: &str| daemon.anon(method, path).key(bob_key);
    bob("PUT", "/api/v1/context/k").json(&serde_json::json!({"value": "v"})).send().expect(200);
    bob("GET", "/api/v1/context/k").send().expect(200);
    bob("GET", "/api/v1/context").send().expect(200);
    let res = bob("GET", "/api/v1/context/k").send();
    let message = res.expect_error(429, 9002);
    assert!(message.contains("3 context requests per minute"), "{message}");
    let retry_after: u64 = res.header("retry-after").expect("a Retry-After header").parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    bob("DELETE", "/api/v1/context/k").send().expect_error(429, 9002);
    // Carol's key has a bucket of its own...
    daemon.anon("GET", "/api/v1/context/k").key(carol_key).send().expect(200);
    // ...the owner is not limited by the peers' limits...
    for _ in 0..10 {
        daemon.get("/api/v1/context/k").expect(200);
    }
    // ...and other categories and unlimited routes are not affected.
    bob("GET", "/api/v1/status").send().expect(200);
    bob("GET", "/api/v1/identity").send().expect(200);
}
