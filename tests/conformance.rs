//! HTTP conformance: methods a path lacks, methods nobody implements, `Allow`, HEAD and
//! OPTIONS, a connection that stays usable after each of them.

use std::time::Duration;

use crate::support::http::Connection;
use crate::support::Daemon;

#[test]
fn a_method_the_path_lacks_gets_405_with_allow() {
    let daemon = Daemon::start("allow");
    let res = daemon.req("DELETE", "/api/v1/status").send();
    assert_eq!(
        res.expect_error(405, 9005),
        "Method DELETE is not allowed on /api/v1/status; allowed: GET, HEAD, OPTIONS"
    );
    assert_eq!(res.header("allow"), Some("GET, HEAD, OPTIONS"));
    let res = daemon.req("TRACE", "/api/v1/context/some-key").send();
    res.expect_error(405, 9005);
    assert_eq!(res.header("allow"), Some("GET, HEAD, PUT, DELETE, OPTIONS"));
    let res = daemon.req("GET", "/api/v1/execute").send();
    res.expect_error(405, 9005);
    assert_eq!(res.header("allow"), Some("POST, OPTIONS"));
    // A public path says so without a key; a private one wants the key first, as for a 404.
    let res = daemon.anon("PUT", "/api/v1/health").send();
    res.expect_error(405, 9005);
    assert_eq!(res.header("allow"), Some("GET, HEAD, OPTIONS"));
    daemon.anon("DELETE", "/api/v1/status").send().expect_error(401, 1001);
    // A path names one resource: the job list is not also the job called `jobs`, the watch
    // stream not also the key called `watch` (that one is `%77atch`).
    let res = daemon.req("DELETE", "/api/v1/execute/jobs").send();
    res.expect_error(405, 9005);
    assert_eq!(res.header("allow"), Some("GET, HEAD, OPTIONS"));
    daemon.req("PUT", "/api/v1/context/watch").json(&serde_json::json!({"value": "v"})).send().expect_error(405, 9005);
    daemon.req("PUT", "/api/v1/context/%77atch").json(&serde_json::json!({"value": "v"})).send().expect(200);
    assert_eq!(daemon.get("/api/v1/context/%77atch").expect(200)["value"], "v");
    // Still 404 where no route has the path at all.
    daemon.req("DELETE", "/api/v1/nowhere").send().expect_error(404, 9004);
}

#[test]
fn head_is_get_without_a_body_and_options_lists_the_methods() {
    let daemon = Daemon::start("head");
    let get = daemon.get("/api/v1/status");
    let head = daemon.req("HEAD", "/api/v1/status").send();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-type"), get.header("content-type"));
    let options = daemon.req("OPTIONS", "/api/v1/transfer/uploads/abc").send();
    assert_eq!(options.status, 204);
    assert_eq!(options.header("allow"), Some("GET, HEAD, DELETE, OPTIONS"));
    assert!(options.headers.iter().all(|(name, _)| !name.starts_with("access-control-")), "no CORS");
}

#[test]
fn an_unknown_method_gets_a_json_answer_and_the_connection_stays_usable() {
    let daemon = Daemon::start("query");
    // On a path that exists: 405 with Allow, like any method the path lacks.
    let res = daemon.req("QUERY", "/api/v1/context").send();
    assert_eq!(
        res.expect_error(405, 9005),
        "Method QUERY is not allowed on /api/v1/context; allowed: GET, HEAD, OPTIONS"
    );
    assert_eq!(res.header("allow"), Some("GET, HEAD, OPTIONS"));
    // Nowhere: 501, after the key like every unknown path.
    assert_eq!(
        daemon.req("QUERY", "/api/v1/nowhere").send().expect_error(501, 9010),
        "Method QUERY is not implemented"
    );
    daemon.anon("BREW", "/api/v1/nowhere").send().expect_error(401, 1001);
    daemon.anon("BREW", "/api/v1/health").send().expect_error(405, 9005);

    // One connection: an unknown method with a body, then TRACE, then an ordinary request.
    let mut conn = Connection::open(&daemon.addr, Duration::from_secs(10));
    let key = &daemon.key;
    let body = r#"{"select":"*"}"#;
    conn.write(
        format!(
            "QUERY /api/v1/context HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let first = conn.read_response("QUERY").unwrap();
    assert_eq!(first.status, 405, "{}", first.text());
    assert_eq!(first.header("connection"), None, "kept alive");
    conn.write(format!("TRACE /api/v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(conn.read_response("TRACE").unwrap().status, 405);
    conn.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(conn.read_response("GET").unwrap().json()["status"], "ok");

    // The audit log names the method the client sent.
    let audit = daemon.home.path().join("logs/audit.jsonl");
    crate::support::wait_until(Duration::from_secs(5), "the audit line of QUERY", || {
        std::fs::read_to_string(&audit).unwrap_or_default().contains(r#""method":"QUERY""#)
    });
}
