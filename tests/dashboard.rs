//! The web dashboard: the token → cookie login, the Host/Origin/CSRF rules, security headers,
//! the aggregate and proxy routes (black-box, raw HTTP), and the views in headless Chromium
//! driven by Playwright (`tests/browser/*.mjs`).
//!
//! The browser tests need node, `tests/browser/node_modules` (`npm ci --prefix tests/browser`)
//! and Chromium (`/usr/bin/chromium`, or `LOOPSY_CHROMIUM`); without them they are skipped
//! loudly (`support::skip::browser`), and fail under `CI`. Screenshots of each view go to
//! `target/dashboard-screenshots/`. How fast the views paint is a figure of `cargo xtask bench`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    command, loopsy_bin, prerequisite, run_within, wait_until, Daemon, Home, Request, Response, PROCESS_LIMIT,
};

const WAIT: Duration = Duration::from_secs(10);
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A fresh one-time login path from the daemon (`/dashboard/login?token=…`).
fn login_path(d: &Daemon) -> String {
    let auth = format!("Bearer {}", d.key);
    let res = raw(d, "POST", "/api/v1/dashboard/token", &[("Host", &d.addr), ("Authorization", &auth)], None);
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["loginPath"].as_str().unwrap().to_string()
}

trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

/// A connection to `d`: over TLS pinned to its certificate when it serves HTTPS.
fn connect(d: &Daemon) -> Box<dyn Io> {
    let tcp = std::net::TcpStream::connect(&d.addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    if !d.url.starts_with("https://") {
        return Box::new(tcp);
    }
    let paths = loopsy::paths::Paths::from_dir(d.home.path()).unwrap();
    let pin = loopsy::tls::local_fingerprint(&paths).expect("the daemon's certificate");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(loopsy::tls::client_config(&pin), name).unwrap();
    Box::new(rustls::StreamOwned::new(connection, tcp))
}

/// Sends a request with exactly the head lines given (its own `Host`), `Connection: close`.
fn raw(d: &Daemon, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Response {
    if d.url.starts_with("https://") {
        return raw_tls(d, method, path, headers, body);
    }
    let mut request = Request::new(&d.addr, method, path).without_host().timeout(WAIT);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        request = request.header("Content-Type", "application/json").body(body);
    }
    request.send()
}

/// [`raw`] over pinned TLS, for a daemon that serves HTTPS: the body must be as long as
/// `Content-Length` says.
fn raw_tls(d: &Daemon, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Response {
    let mut stream = connect(d);
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or_default());
    stream.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').unwrap();
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut body = Vec::new();
    if let Err(e) = reader.read_to_end(&mut body) {
        // A TLS peer that closes without close_notify: the body read so far is all there is.
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }
    if let Some((_, length)) = headers.iter().find(|(name, _)| name == "content-length") {
        assert_eq!(length.parse::<usize>().ok(), Some(body.len()), "a truncated body over TLS");
    }
    Response { status, headers, body }
}

/// Logs in with a fresh token; returns the `name=value` of the session cookie.
fn log_in(d: &Daemon) -> String {
    let res = raw(d, "GET", &login_path(d), &[("Host", &d.addr)], None);
    assert_eq!(res.status, 303, "{}", res.text());
    let cookie = res.header("set-cookie").expect("a session cookie");
    cookie.split(';').next().unwrap().to_string()
}

/// A cookie request to `d` as the dashboard page would send it.
fn as_browser(d: &Daemon, method: &str, path: &str, cookie: &str, body: Option<&str>) -> Response {
    let scheme = if d.url.starts_with("https://") { "https" } else { "http" };
    let origin = format!("{scheme}://{}", d.addr);
    let headers = [("Host", d.addr.as_str()), ("Cookie", cookie), ("Origin", &origin), ("X-Loopsy-Dashboard", "1")];
    raw(d, method, path, &headers, body)
}

fn error_message(res: &Response, status: u16) -> String {
    assert_eq!(res.status, status, "{}", res.text());
    let body: Value = serde_json::from_slice(&res.body).unwrap();
    body["error"]["message"].as_str().or(body["error"].as_str()).unwrap_or_default().to_string()
}

/// A session daemon of `main`: its own home, linked as `<main>/sessions/<name>`.
fn session(main: &Path, name: &str, hostname: &str) -> Daemon {
    session_home(main, name, hostname).start()
}

/// The home of a session of `main`, not started yet.
fn session_home(main: &Path, name: &str, hostname: &str) -> Home {
    let home = Home::new(name);
    home.edit_config(|doc| doc["server"]["hostname"] = hostname.into());
    link_session(main, name, home.path());
    home
}

fn link_session(main: &Path, name: &str, dir: &Path) {
    std::fs::create_dir_all(main.join("sessions")).unwrap();
    std::os::unix::fs::symlink(dir, main.join("sessions").join(name)).unwrap();
}

#[test]
fn a_login_token_is_only_for_the_local_owner() {
    let home = Home::new("dash-token");
    home.edit_config(|doc| doc["auth"]["allowedKeys"]["bob"] = "bob-key-0123456789abcdef".into());
    let d = home.start();
    let answer = d.req("POST", "/api/v1/dashboard/token").send().expect(200);
    assert_eq!(answer["token"].as_str().unwrap().len(), 64);
    assert_eq!(answer["loginPath"], format!("/dashboard/login?token={}", answer["token"].as_str().unwrap()));
    d.anon("POST", "/api/v1/dashboard/token").send().expect_error(401, 1001);
    d.anon("POST", "/api/v1/dashboard/token").key("bob-key-0123456789abcdef").send().expect_error(403, 9009);
    // A dashboard session cannot mint more tokens: they are for `loopsy dashboard` only.
    let cookie = log_in(&d);
    let res = as_browser(&d, "POST", "/api/v1/dashboard/token", &cookie, None);
    assert!(error_message(&res, 403).contains("local owner"), "{}", res.text());
}

#[test]
fn a_login_token_works_once_and_becomes_a_strict_http_only_cookie() {
    let d = Daemon::start("dash-login");
    let path = login_path(&d);
    let res = raw(&d, "GET", &path, &[("Host", &d.addr)], None);
    assert_eq!(res.status, 303, "{}", res.text());
    assert_eq!(res.header("location"), Some("/dashboard/"), "the token leaves the address bar");
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let cookie = res.header("set-cookie").unwrap();
    let name = format!("loopsy_dashboard_{}=", d.port);
    assert!(cookie.starts_with(&name), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.split("; ").any(|a| a == attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: a Secure cookie would never come back");
    let again = raw(&d, "GET", &path, &[("Host", &d.addr)], None);
    assert!(error_message(&again, 403).contains("used already or has expired"));
    let made_up = raw(&d, "GET", "/dashboard/login?token=00", &[("Host", &d.addr)], None);
    assert_eq!(made_up.status, 403);
    let none = raw(&d, "GET", "/dashboard/login", &[("Host", &d.addr)], None);
    assert_eq!(none.status, 403);
}

#[test]
fn a_login_link_opened_under_a_foreign_host_name_is_refused_and_stays_usable() {
    let d = Daemon::start("dash-rebind");
    let path = login_path(&d);
    let res = raw(&d, "GET", &path, &[("Host", "evil.example:19532")], None);
    assert!(error_message(&res, 403).contains("Host"));
    let res = raw(&d, "GET", &path, &[("Host", &format!("localhost:{}", d.port))], None);
    assert_eq!(res.status, 303, "the refused attempt did not use the token up: {}", res.text());
}

#[test]
fn the_session_cookie_authenticates_api_calls_and_the_audit_log_names_the_dashboard() {
    let d = Daemon::start("dash-cookie");
    let cookie = log_in(&d);
    let status = as_browser(&d, "GET", "/api/v1/status", &cookie, None);
    assert_eq!(status.status, 200, "{}", status.text());
    let put = as_browser(&d, "PUT", "/api/v1/context/from-browser", &cookie, Some(r#"{"value":"v"}"#));
    assert_eq!(put.status, 200, "{}", put.text());
    d.get("/api/v1/context/from-browser").expect(200);
    let audit = d.home.path().join("logs/audit.jsonl");
    wait_until(WAIT, "the audit log names the dashboard", || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .any(|line| line.contains("\"/api/v1/context/from-browser\"") && line.contains("\"caller\":\"dashboard\""))
    });
    // Logging out ends the session at once.
    let out = as_browser(&d, "POST", "/api/v1/dashboard/logout", &cookie, None);
    assert_eq!(out.status, 200, "{}", out.text());
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert!(error_message(&as_browser(&d, "GET", "/api/v1/status", &cookie, None), 401).contains("loopsy dashboard"));
}

#[test]
fn cookie_requests_need_this_daemons_host_and_origin_and_the_dashboard_header_to_change_anything() {
    let d = Daemon::start("dash-rules");
    let cookie = log_in(&d);
    let host = d.addr.as_str();
    let own_origin = format!("http://{host}");
    let get = |headers: &[(&str, &str)]| raw(&d, "GET", "/api/v1/status", headers, None);
    assert_eq!(get(&[("Host", host), ("Cookie", &cookie)]).status, 200, "same-origin GET needs no Origin");
    assert_eq!(get(&[("Host", host), ("Cookie", &cookie), ("Origin", &own_origin)]).status, 200);
    let foreign_origin = get(&[("Host", host), ("Cookie", &cookie), ("Origin", "http://evil.example")]);
    assert!(error_message(&foreign_origin, 403).contains("origin"));
    let other_port = get(&[("Host", host), ("Cookie", &cookie), ("Origin", "http://127.0.0.1:1")]);
    assert_eq!(other_port.status, 403, "another port is another origin");
    let rebound = get(&[("Host", "evil.example"), ("Cookie", &cookie), ("Origin", "http://evil.example")]);
    assert!(error_message(&rebound, 403).contains("Host"));
    assert_eq!(get(&[("Host", host), ("Cookie", "loopsy_dashboard_1=nothing")]).status, 401, "wrong cookie name");
    let bogus = format!("loopsy_dashboard_{}=0000", d.port);
    assert_eq!(get(&[("Host", host), ("Cookie", &bogus)]).status, 401);
    assert_eq!(get(&[("Host", host)]).status, 401, "no cookie, no key");

    let body = Some(r#"{"value":"v"}"#);
    let put = |headers: &[(&str, &str)]| raw(&d, "PUT", "/api/v1/context/csrf", headers, body);
    let unmarked = put(&[("Host", host), ("Cookie", &cookie), ("Origin", &own_origin)]);
    assert!(error_message(&unmarked, 403).contains("X-Loopsy-Dashboard"));
    let cross_site =
        put(&[("Host", host), ("Cookie", &cookie), ("Origin", "http://evil.example"), ("X-Loopsy-Dashboard", "1")]);
    assert_eq!(cross_site.status, 403);
    d.get("/api/v1/context/csrf").expect_error(404, 5001);
    let marked = put(&[("Host", host), ("Cookie", &cookie), ("X-Loopsy-Dashboard", "1")]);
    assert_eq!(marked.status, 200, "{}", marked.text());
}

#[test]
fn peer_keys_cannot_use_the_dashboards_routes_but_a_browser_session_can() {
    let home = Home::new("dash-owner");
    home.edit_config(|doc| doc["auth"]["allowedKeys"]["bob"] = "bob-key-0123456789abcdef".into());
    let d = home.start();
    let bob = |path: &str| d.anon("GET", path).key("bob-key-0123456789abcdef").send();
    bob("/api/v1/status").expect(200);
    for path in ["/api/v1/dashboard/overview", "/api/v1/dashboard/targets", "/api/v1/dashboard/peers"] {
        assert!(bob(path).expect_error(403, 9009).contains("owner"), "{path}");
        d.get(path).expect(200);
        d.anon("GET", path).send().expect_error(401, 1001);
    }
    bob("/api/v1/dashboard/proxy/local/api/v1/status").expect_error(403, 9009);
    let cookie = log_in(&d);
    assert_eq!(as_browser(&d, "GET", "/api/v1/dashboard/overview", &cookie, None).status, 200);
}

#[test]
fn a_restart_logs_every_browser_out() {
    let home = Home::new("dash-restart");
    let d = home.start();
    let cookie = log_in(&d);
    let secret = cookie.split_once('=').unwrap().1.to_string();
    let d = d.restart();
    let cookie = format!("loopsy_dashboard_{}={secret}", d.port);
    assert!(error_message(&as_browser(&d, "GET", "/api/v1/status", &cookie, None), 401).contains("restarted"));
}

#[test]
fn dashboard_files_carry_a_strict_policy_and_no_response_has_cors_headers() {
    let d = Daemon::start("dash-headers");
    let redirect = raw(&d, "GET", "/dashboard", &[("Host", &d.addr)], None);
    assert_eq!((redirect.status, redirect.header("location")), (302, Some("/dashboard/")));
    for (path, content_type) in [
        ("/dashboard/", "text/html; charset=utf-8"),
        ("/dashboard/app.js", "text/javascript; charset=utf-8"),
        ("/dashboard/views/tasks.js", "text/javascript; charset=utf-8"),
        ("/dashboard/style.css", "text/css; charset=utf-8"),
    ] {
        let res = raw(&d, "GET", path, &[("Host", &d.addr)], None);
        assert_eq!(res.status, 200, "{path}");
        assert_eq!(res.header("content-type"), Some(content_type), "{path}");
        assert_eq!(res.header("content-security-policy"), Some(CSP), "{path}");
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(res.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(res.header("x-frame-options"), Some("DENY"));
    }
    let index = raw(&d, "GET", "/dashboard/", &[("Host", &d.addr)], None).text();
    assert!(index.contains("<script type=\"module\" src=\"app.js\"></script>") && !index.contains("http"));
    let escape = raw(&d, "GET", "/dashboard/../config.yaml", &[("Host", &d.addr)], None);
    assert!(matches!(escape.status, 401 | 404) && !escape.text().contains("apiKey"), "{}", escape.text());
    assert_eq!(raw(&d, "GET", "/dashboard/nothing.js", &[("Host", &d.addr)], None).status, 404);
    assert_eq!(raw(&d, "GET", "/dashboard/", &[("Host", "evil.example")], None).status, 403);

    let evil = [("Host", d.addr.as_str()), ("Origin", "http://evil.example")];
    let preflight =
        raw(&d, "OPTIONS", "/api/v1/context/x", &[evil[0], evil[1], ("Access-Control-Request-Method", "PUT")], None);
    assert_ne!(preflight.status / 100, 2, "no preflight is granted");
    for res in [preflight, raw(&d, "GET", "/api/v1/health", &evil, None), raw(&d, "GET", "/dashboard/", &evil, None)] {
        assert!(res.headers.iter().all(|(name, _)| !name.starts_with("access-control-")), "{:?}", res.headers);
    }
}

#[test]
fn the_overview_aggregates_the_local_sessions_running_or_not() {
    let main = Home::new("dash-overview");
    let w1 = session(main.path(), "w1", "ov-w1");
    let stopped = Home::new("w2");
    stopped.edit_config(|doc| doc["server"]["hostname"] = "ov-w2".into());
    link_session(main.path(), "w2", stopped.path());
    std::fs::create_dir_all(main.path().join("sessions/bad name")).unwrap();
    let d = main.start();
    w1.req("PUT", "/api/v1/context/k").json(&json!({"value": "v"})).send().expect(200);
    let overview = d.get("/api/v1/dashboard/overview").expect(200);
    assert_eq!(overview["node"]["hostname"], d.get("/api/v1/status").expect(200)["hostname"]);
    let sessions = overview["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "an invalid name is skipped: {sessions:?}");
    assert_eq!((sessions[0]["name"].as_str(), sessions[0]["state"].as_str()), (Some("w1"), Some("running")));
    assert_eq!(sessions[0]["hostname"], "ov-w1");
    assert_eq!(sessions[0]["status"]["context"]["entries"], 1, "its own /status, asked with its own key");
    assert_eq!(sessions[0]["port"], w1.port);
    assert_eq!((sessions[1]["name"].as_str(), sessions[1]["state"].as_str()), (Some("w2"), Some("stopped")));
    assert_eq!(sessions[1]["hostname"], "ov-w2");
    assert_eq!(overview["totals"]["sessions"], 2);
    assert_eq!(overview["totals"]["sessionsRunning"], 1);
    let targets = d.get("/api/v1/dashboard/targets").expect(200);
    let ids: Vec<&str> = targets["targets"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["local", "session:w1", "session:w2"]);
}

#[test]
fn the_proxy_reaches_named_targets_with_their_own_credentials_and_nothing_else() {
    let main = Home::new("dash-proxy");
    let w1 = session(main.path(), "w1", "px-w1");
    let bob = Daemon::start("dash-proxy-bob");
    main.edit_config(|doc| doc["auth"]["allowedKeys"]["bob"] = bob.key.clone().into());
    let d = main.start();
    let proxied = |target: &str, path: &str| d.get(&format!("/api/v1/dashboard/proxy/{target}{path}"));
    assert_eq!(proxied("session:w1", "/api/v1/status").expect(200)["hostname"], "px-w1");
    assert_eq!(proxied("session%3Aw1", "/api/v1/status").expect(200)["hostname"], "px-w1");
    w1.req("PUT", "/api/v1/context/inbox:px-w1:1").json(&json!({"value": "hi"})).send().expect(200);
    let listed = proxied("session:w1", "/api/v1/context?prefix=inbox%3A").expect(200);
    assert_eq!(listed["entries"][0]["key"], "inbox:px-w1:1", "the query string is forwarded");
    assert_eq!(proxied("session:w1", "/api/v1/context/inbox%3Apx-w1%3A1").expect(200)["value"], "hi");
    // A long answer (past 64 KiB it is checked on the daemon's blocking pool) arrives whole.
    let long = "x".repeat(200_000);
    w1.req("PUT", "/api/v1/context/long").json(&json!({"value": long})).send().expect(200);
    assert_eq!(proxied("session:w1", "/api/v1/context/long").expect(200)["value"], long.as_str());
    proxied("session:w1", "/api/v1/context/missing").expect_error(404, 5001);
    proxied("session:nope", "/api/v1/status").expect_error(404, 2001);
    proxied("session:..", "/api/v1/status").expect_error(400, 9003);
    proxied("10.0.0.1:19532", "/api/v1/status").expect_error(400, 9003);
    proxied("session:w1", "/api/v1/context/..%2F..%2Fstatus").expect_error(403, 9009);
    d.req("POST", "/api/v1/dashboard/proxy/session:w1/api/v1/execute")
        .json(&json!({"command": "true"}))
        .send()
        .expect_error(403, 9009);
    d.req("POST", "/api/v1/dashboard/proxy/session:w1/api/v1/pair/start").send().expect_error(403, 9009);

    // A peer added by name, with the key stored under that name.
    let added = d
        .req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": bob.port, "name": "bob"}))
        .send()
        .expect(200);
    let target = format!("peer:{}", added["nodeId"].as_str().unwrap());
    assert_eq!(proxied(&target, "/api/v1/identity").expect(200)["port"], bob.port);
    let peers = d.get("/api/v1/dashboard/peers").expect(200);
    assert_eq!(peers["peers"][0]["credential"], "named-key");
    assert_eq!(peers["peers"][0]["pinned"], false);

    // A peer that only announced itself (handshake) gets no key, so it cannot be reached.
    let handshake = json!({"nodeId": "dddddddd-0000-4000-8000-000000000001", "hostname": "stranger",
        "platform": "linux", "version": "1.0.21", "port": 9, "capabilities": []});
    d.req("POST", "/api/v1/peers/handshake").json(&handshake).send().expect(200);
    let refused = proxied("peer:dddddddd-0000-4000-8000-000000000001", "/api/v1/status").expect_error(403, 1002);
    assert!(refused.contains("discovered"), "{refused}");
    proxied("peer:eeeeeeee-0000-4000-8000-000000000001", "/api/v1/status").expect_error(404, 2001);
}

#[test]
fn the_proxy_relays_a_sessions_watch_stream_as_it_happens() {
    let main = Home::new("dash-relay");
    let w1 = session(main.path(), "w1", "rl-w1");
    let d = main.start();
    let mut stream = d.req("GET", "/api/v1/dashboard/proxy/session:w1/api/v1/context/watch?prefix=live").stream();
    assert_eq!(stream.status, 200);
    w1.req("PUT", "/api/v1/context/live-1").json(&json!({"value": "now"})).send().expect(200);
    w1.req("PUT", "/api/v1/context/other").json(&json!({"value": "x"})).send().expect(200);
    w1.req("DELETE", "/api/v1/context/live-1").send().expect(200);
    let put = stream.next_event().expect("the put");
    assert_eq!((put.event.as_deref(), put.id.as_deref()), (Some("put"), Some("1")));
    assert_eq!(put.json()["entry"]["value"], "now");
    let deleted = stream.next_event().expect("the delete");
    assert_eq!(deleted.event.as_deref(), Some("delete"), "the prefix filter reached the session");
    stream.close();
    let mut exec = d
        .req("POST", "/api/v1/dashboard/proxy/session:w1/api/v1/execute/stream")
        .json(&json!({"command": "echo", "args": ["relayed"]}))
        .stream();
    let mut seen = Vec::new();
    while let Some(event) = exec.next_event() {
        seen.push(event.json());
    }
    assert!(seen.iter().any(|e| e["type"] == "stdout" && e["data"] == "relayed\n"), "{seen:?}");
    assert_eq!(seen.last().unwrap()["type"], "exit");
}

#[test]
fn loopsy_dashboard_opens_the_login_link_with_the_browser_or_prints_it() {
    let d = Daemon::start("dash-cli");
    let printed = d.loopsy(&["dashboard", "--print-url"]).success();
    let url = printed.stdout.trim().to_string();
    assert!(url.starts_with(&format!("{}/dashboard/login?token=", d.url)), "{url}");
    let path = url.strip_prefix(&d.url).unwrap();
    assert_eq!(raw(&d, "GET", path, &[("Host", &d.addr)], None).status, 303);

    // The browser program gets the URL as one argument, whatever it contains.
    let dir = crate::support::TempDir::new("dash-browser");
    let record = dir.path().join("args");
    let browser = dir.path().join("browser");
    std::fs::write(&browser, format!("#!/bin/sh\nprintf '%s\\n' \"$#\" \"$@\" > '{}'\n", record.display())).unwrap();
    let mut permissions = std::fs::metadata(&browser).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&browser, permissions).unwrap();
    let dashboard = || {
        let mut dashboard = command(loopsy_bin());
        dashboard.arg("--home").arg(d.home.path()).arg("dashboard");
        dashboard
    };
    run_within(dashboard().env("BROWSER", &browser), PROCESS_LIMIT).success();
    let args = std::fs::read_to_string(&record).unwrap();
    let lines: Vec<&str> = args.lines().collect();
    assert_eq!(lines[0], "1", "{args}");
    assert!(lines[1].starts_with(&format!("{}/dashboard/login?token=", d.url)));

    // No browser at all: the link is printed.
    let printed = run_within(&mut dashboard(), PROCESS_LIMIT).success();
    assert!(printed.stdout.contains("/dashboard/login?token="), "{printed:?}");
}

// ---- Browser tests ----

/// Runs `tests/browser/<script>` with `config` as its argument; `None` when skipped.
fn run_browser(script: &str, config: &Value) -> Option<String> {
    let browser = prerequisite(crate::support::skip::browser())?;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut config = config.clone();
    config["chromium"] = browser.chromium.display().to_string().into();
    config["screenshots"] = shots.display().to_string().into();
    let run = run_within(
        command(&browser.node).arg(browser.scripts.join(script)).arg(config.to_string()),
        Duration::from_secs(180),
    );
    eprintln!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "{script} failed");
    Some(run.stdout)
}

fn url_of(d: &Daemon, path: &str) -> String {
    format!("{}{path}", d.url)
}

#[test]
fn the_browser_logs_in_once_and_strangers_are_refused() {
    let d = Daemon::start("dash-b-login");
    let other = Daemon::start("dash-b-other");
    let marker = d.home.path().join("drive-by");
    let config = json!({
        "base": d.url, "login": url_of(&d, &login_path(&d)), "rebindLogin": login_path(&d), "port": d.port,
        "otherOrigin": other.url, "marker": marker,
    });
    if run_browser("login.mjs", &config).is_none() {
        return;
    }
    assert!(!marker.exists(), "the cross-site command did not run");
    d.get("/api/v1/context/cross-site").expect_error(404, 5001);
    let audit = || std::fs::read_to_string(d.home.path().join("logs/audit.jsonl")).unwrap_or_default();
    let refused = |audit: &str, path: &str| audit.lines().any(|l| l.contains(path) && l.contains("\"statusCode\":403"));
    // Audit lines are written shortly after their request (`daemon/audit.rs`, GATHER).
    let _ = crate::support::wait_for(WAIT, || refused(&audit(), "\"/api/v1/execute/stream\""));
    let audit = audit();
    assert!(
        refused(&audit, "\"/api/v1/execute/stream\""),
        "the browser sent it, with the cookie, and it was refused: {audit}"
    );
}

#[test]
fn every_view_shows_real_data_and_messages_travel_between_sessions() {
    let main = Home::new("dash-b-main");
    main.edit_config(|doc| doc["server"]["hostname"] = "dash-main".into());
    main.edit_config(|doc| doc["discovery"]["healthInterval"] = 300.into());
    // The two sessions know each other as peers with each other's key, so each daemon can
    // deliver a message (w1 → w2) and its acknowledgement (w2 → w1) itself.
    let (w1, w2) = (session_home(main.path(), "w1", "dash-w1"), session_home(main.path(), "w2", "dash-w2"));
    let (w1_key, w2_key) = (w1.key(), w2.key());
    w1.edit_config(|doc| doc["auth"]["allowedKeys"]["w2"] = w2_key.into());
    w2.edit_config(|doc| doc["auth"]["allowedKeys"]["w1"] = w1_key.into());
    let (w1, w2) = (w1.start(), w2.start());
    for (from, name, to) in [(&w1, "w2", &w2), (&w2, "w1", &w1)] {
        from.req("POST", "/api/v1/peers")
            .json(&json!({"address": "127.0.0.1", "port": to.port, "name": name}))
            .send()
            .expect(200);
    }
    let stopped = Home::new("w3");
    link_session(main.path(), "w3", stopped.path());
    main.edit_config(|doc| doc["auth"]["allowedKeys"]["w2peer"] = w2.key.clone().into());
    let d = main.start();
    d.req("PUT", "/api/v1/context/greeting").json(&json!({"value": "hello from main"})).send().expect(200);
    d.req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": w2.port, "name": "w2peer"}))
        .send()
        .expect(200);
    let hostile = "<img src=x onerror=\"window.__xss=1;alert(1)\">";
    d.req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": 9, "hostname": hostile}))
        .send()
        .expect(200);
    wait_until(WAIT, "w2 is online as a peer", || {
        d.get("/api/v1/peers").expect(200)["peers"].as_array().unwrap().iter().any(|p| p["status"] == "online")
    });
    let config = json!({
        "base": d.url, "login": url_of(&d, &login_path(&d)), "hostile": hostile,
        "mainHost": "dash-main", "sessions": ["dash-w1", "dash-w2"], "stopped": "w3",
        "w1": {"url": w1.url, "key": w1.key}, "from": "session:w1", "to": "w2", "mainKey": d.key,
    });
    if run_browser("views.mjs", &config).is_none() {
        return;
    }
    // What the Messages view had the daemons write follows the §6 layout exactly.
    let inbox = w2.get("/api/v1/context?prefix=inbox%3Adash-w2%3A").expect(200);
    assert_eq!(inbox["entries"].as_array().unwrap().len(), 1, "the first was acknowledged (deleted): {inbox}");
    let entry = &inbox["entries"][0];
    let envelope: Value = serde_json::from_str(entry["value"].as_str().unwrap()).unwrap();
    let id = envelope["id"].as_str().unwrap();
    assert_eq!(entry["key"], format!("inbox:dash-w2:{id}"));
    assert_eq!((envelope["from"].as_str(), envelope["to"].as_str()), (Some("dash-w1"), Some("dash-w2")));
    assert_eq!(envelope["body"], "hello from the browser");
    assert!(
        id.starts_with(&format!("{}-dash-w1-", envelope["ts"])) && id.len() == envelope["ts"].to_string().len() + 13
    );
    let outbox = w1.get(&format!("/api/v1/context/outbox%3A{id}")).expect(200);
    assert_eq!(outbox["value"], entry["value"]);
    assert_eq!(outbox["ttl"], 3600);
    let ack = w1.get("/api/v1/context/ack%3Adash-w2").expect(200);
    assert_ne!(ack["value"], id, "the ack names the first message, which is gone from the inbox");
    assert_eq!(ack["ttl"], 7200);
    // The view sent through the messages API: w1's daemon has both messages on its delivery
    // record, delivered, the first acknowledged (a view writing context keys leaves no record).
    let report = w1.get("/api/v1/messages/status?peer=w2").expect(200);
    let states: Vec<(bool, &str)> = report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["acked"].as_bool().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(true, "delivered"), (false, "delivered")], "{report}");
    // Nothing the hostile hostname carried ran (the script checked the page; here, the peer is intact).
    let peers = d.get("/api/v1/peers").expect(200);
    assert!(peers["peers"].as_array().unwrap().iter().any(|p| p["hostname"] == hostile));
}

#[test]
fn a_task_dispatched_from_the_browser_asks_for_approval_and_finishes_once_approved() {
    let agents = crate::support::stand_in_agents();
    let user_home = crate::support::TempDir::new("dash-task-user");
    let mut home = Home::new("dash-b-tasks");
    home.with_stand_in_agents();
    home.env.push(("HOME".into(), user_home.path().display().to_string()));
    let d = home.start();
    d.get("/api/v1/ai-tasks").expect(200);
    assert!(agents.join("claude").exists(), "the stand-in agents of the AI task tests are missing");
    let workdir = crate::support::TempDir::new("dash-task-cwd");
    let config = json!({"base": d.url, "login": url_of(&d, &login_path(&d)), "cwd": workdir.path()});
    if run_browser("tasks.mjs", &config).is_none() {
        return;
    }
    let tasks = d.get("/api/v1/ai-tasks").expect(200);
    assert_eq!(tasks["tasks"][0]["status"], "completed", "{tasks}");
    assert!(workdir.path().join("out.txt").exists(), "the approved tool ran");
}

// See: #17 (item 1)
#[test]
fn the_approvals_view_counts_decides_and_shows_requests_of_this_daemon_and_a_session() {
    let user_home = crate::support::TempDir::new("dash-appr-user");
    let agents = |name: &str| {
        let mut home = Home::new(name);
        home.with_stand_in_agents();
        home.env.push(("HOME".into(), user_home.path().display().to_string()));
        home
    };
    let (main, session) = (agents("dash-b-appr"), agents("dash-b-appr-w1"));
    link_session(main.path(), "w1", session.path());
    let (session, d) = (session.start(), main.start());
    let (here, there) = (crate::support::TempDir::new("dash-appr-ws"), crate::support::TempDir::new("dash-appr-w1"));
    for (daemon, cwd) in [(&d, &here), (&session, &there)] {
        let body = json!({"prompt": "tool", "agent": "claude", "cwd": cwd.path()});
        daemon.req("POST", "/api/v1/ai-tasks").json(&body).send().expect(201);
    }
    wait_until(WAIT, "the inbox holds both requests", || d.get("/api/v1/approvals").expect(200)["pending"] == 2);
    let config = json!({"base": d.url, "login": url_of(&d, &login_path(&d))});
    if run_browser("approvals.mjs", &config).is_none() {
        return;
    }
    wait_until(WAIT, "the approved tool ran", || here.path().join("out.txt").exists());
    let inbox = d.get("/api/v1/approvals").expect(200);
    let states: Vec<(&str, &str)> = inbox["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["target"].as_str().unwrap(), i["state"].as_str().unwrap()))
        .collect();
    assert!(states.contains(&("local", "approved")) && states.contains(&("session:w1", "denied")), "{states:?}");
    assert!(!there.path().join("out.txt").exists(), "the denied tool did not run");
}

#[test]
fn the_terminal_view_types_into_terminals_here_and_on_a_peer() {
    let main = Home::new("dash-term-main");
    let peer = Daemon::start("dash-term-peer");
    main.edit_config(|doc| doc["auth"]["allowedKeys"]["termpeer"] = peer.key.clone().into());
    let d = main.start();
    d.req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": peer.port, "name": "termpeer"}))
        .send()
        .expect(200);
    let config = json!({"base": d.url, "login": url_of(&d, &login_path(&d))});
    if run_browser("terminal.mjs", &config).is_none() {
        return;
    }
    let local = d.get("/api/v1/terminals/web").expect(200);
    assert_eq!((local["startedBy"].as_str(), local["state"].as_str()), (Some("dashboard"), Some("running")));
    assert_eq!(peer.get("/api/v1/terminals").expect(200)["terminals"], json!([]), "the peer's terminal was killed");
}

#[test]
fn the_session_cookie_is_secure_over_https_and_the_proxy_follows_a_rotated_key() {
    let home = Home::new("dash-https");
    home.edit_config(|doc| doc["tls"]["enabled"] = true.into());
    let d = home.start();
    let res = raw(&d, "GET", &login_path(&d), &[("Host", &d.addr)], None);
    assert_eq!(res.status, 303, "{}", res.text());
    let set_cookie = res.header("set-cookie").unwrap();
    assert!(set_cookie.split("; ").any(|attribute| attribute == "Secure"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let status = "/api/v1/dashboard/proxy/local/api/v1/status";
    assert_eq!(as_browser(&d, "GET", status, &cookie, None).status, 200);
    // The owner rotates the key: the proxy uses the new one at once.
    d.loopsy(&["key", "generate"]).success();
    let res = as_browser(&d, "GET", status, &cookie, None);
    assert_eq!(res.status, 200, "{}", res.text());
}
