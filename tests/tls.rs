//! HTTPS: the daemon's certificate, pinning, and local tools that keep working with TLS on.

use std::os::unix::fs::PermissionsExt;

use loopsy::peer::{Client, ClientError};
use loopsy::tls::Fingerprint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::support::skip::{program, python_with};
use crate::support::{command, prerequisite, run_within, Daemon, Home, PROCESS_LIMIT};

fn tls_daemon(name: &str) -> Daemon {
    let home = Home::new(name);
    home.edit_config(|doc| doc["tls"]["enabled"] = true.into());
    home.start()
}

fn certificate_fingerprint(daemon: &Daemon) -> Fingerprint {
    let cert = CertificateDer::from_pem_file(daemon.home.path().join("tls/cert.pem")).unwrap();
    Fingerprint::of_der(&cert)
}

/// Python's ssl, not ours: the SHA-256 of the certificate the server presents on `port`, and
/// of the one in `pem`, as 64 lowercase hex digits (1.0.21's format).
const INDEPENDENT_FINGERPRINTS: &str = r#"
import hashlib, ssl, sys
served = ssl.get_server_certificate(("127.0.0.1", int(sys.argv[1])))
stored = open(sys.argv[2]).read()
for pem in (served, stored):
    print(hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest())
"#;

#[test]
fn a_tls_daemon_serves_https_with_a_private_key_and_a_1_0_21_fingerprint() {
    let daemon = tls_daemon("tls");
    assert!(daemon.url.starts_with("https://127.0.0.1:"), "{}", daemon.url);
    let mode = std::fs::metadata(daemon.home.path().join("tls/key.pem")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The same port still answers plain HTTP from this machine (see the tests below).
    assert_eq!(daemon.anon("GET", "/api/v1/health").send().status, 200);
    let Some(python) = prerequisite(python_with(&["ssl", "hashlib"])) else { return };
    let cert = daemon.home.path().join("tls/cert.pem");
    let run = run_within(
        command(python).args(["-c", INDEPENDENT_FINGERPRINTS, &daemon.port.to_string()]).arg(&cert),
        PROCESS_LIMIT,
    )
    .success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    let (served, stored) = (lines[0], lines[1]);
    assert_eq!(served, stored, "the daemon serves the certificate in tls/cert.pem");
    assert!(served.len() == 64 && served.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')), "{served}");
    assert!(daemon.output_has(&format!("fingerprint {served}")), "the logged fingerprint is the served one");
    assert_eq!(certificate_fingerprint(&daemon).as_str(), served, "and so is the product's own computation");
}

// See: #13 (item 8)
#[test]
fn local_tools_keep_using_plain_http_on_the_same_port_when_tls_is_on() {
    let home = Home::new("tlsplain");
    home.edit_config(|doc| {
        doc["tls"]["enabled"] = true.into();
        // Local tools are served whatever this says: it is about other machines.
        doc["tls"]["allowInsecurePeers"] = false.into();
    });
    let daemon = home.start();
    assert!(daemon.url.starts_with("https://"));
    let base = format!("http://localhost:{}", daemon.port);
    if let Some(curl) = prerequisite(program("curl", "curl")) {
        for path in ["/api/v1/health", "/api/v1/status"] {
            let auth = format!("Authorization: Bearer {}", daemon.key);
            let out = run_within(
                command(&curl).args(["-sS", "--fail", "-H", &auth, &format!("{base}{path}")]),
                PROCESS_LIMIT,
            )
            .success();
            let body: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            assert!(body["nodeId"].is_string(), "{body}");
        }
    }
    assert!(daemon.req("GET", "/api/v1/status").send().expect(200)["nodeId"].is_string());
    // The CLI over HTTPS (daemon.json) and by plain address, as 1.0.21 tooling does.
    daemon.loopsy(&["exec", "local", "echo", "over-tls"]).success().stdout_has("over-tls");
    let address = format!("127.0.0.1:{}", daemon.port);
    let loose = Home::new("tlsplain-cli");
    let out = loose.loopsy(&["exec", "--key", &daemon.key, &address, "echo", "plain"]).success();
    assert!(out.stdout.contains("plain"), "{}", out.stdout);
    // An MCP client configured with LOOPSY_PORT and LOOPSY_API_KEY speaks plain HTTP.
    let empty = crate::support::TempDir::new("tlsplain-mcp");
    let port = daemon.port.to_string();
    let mut mcp = crate::support::mcp_stdio::McpServer::spawn_with(
        empty.path(),
        &[("LOOPSY_PORT", &port), ("LOOPSY_API_KEY", &daemon.key)],
    );
    mcp.ok("loopsy_context_set", serde_json::json!({"key": "via", "value": "plain"}));
    assert_eq!(daemon.get("/api/v1/context/via").expect(200)["value"], "plain");
    // HTTPS on the same port, pinned, works as before.
    let pinned = Client::pinned(&daemon.url, Some(daemon.key.clone()), Some(certificate_fingerprint(&daemon)));
    let status: serde_json::Value = smol::block_on(pinned.get("/api/v1/status")).unwrap();
    assert!(status["nodeId"].is_string());
}

#[test]
fn the_local_cli_keeps_working_when_tls_is_on() {
    let daemon = tls_daemon("tlscli");
    let status = daemon.loopsy(&["status", "--json"]).success().json();
    assert_eq!(status["running"], true);
    assert!(status["url"].as_str().unwrap().starts_with("https://"));
    daemon.loopsy(&["key", "generate"]).success().stdout_has("uses it now");
}

#[test]
fn a_client_pinned_to_the_certificate_gets_through_and_any_other_pin_is_refused() {
    let alice = tls_daemon("alice");
    let bob = tls_daemon("bob");
    let good = Client::pinned(&alice.url, Some(alice.key.clone()), Some(certificate_fingerprint(&alice)));
    let status: serde_json::Value = smol::block_on(good.get("/api/v1/status")).unwrap();
    assert!(status["nodeId"].is_string());

    let wrong = Client::pinned(&alice.url, Some(alice.key.clone()), Some(certificate_fingerprint(&bob)));
    match smol::block_on(wrong.get::<serde_json::Value>("/api/v1/status")) {
        Err(ClientError::Tls { url, reason }) => {
            assert!(url.contains(&alice.port.to_string()), "the error names the peer: {url}");
            assert!(reason.contains("invalid peer certificate"), "{reason}");
        }
        other => panic!("a wrong pin must be refused, got {other:?}"),
    }
}

#[test]
fn a_pinned_peer_answering_plain_http_is_refused_not_downgraded() {
    let plain = Daemon::start("plainpeer");
    let tls = tls_daemon("pin");
    let pinned = Client::pinned(&plain.url, Some(plain.key.clone()), Some(certificate_fingerprint(&tls)));
    assert!(pinned.base().starts_with("https://"), "a pinned peer is always reached over https");
    let err = smol::block_on(pinned.get::<serde_json::Value>("/api/v1/status")).unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    let unpinned_https = Client::new(&tls.url, Some(tls.key.clone()));
    let err = smol::block_on(unpinned_https.get::<serde_json::Value>("/api/v1/status")).unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "https without a pin is refused: {err:?}");
}

#[test]
fn with_insecure_peers_forbidden_an_unpinned_peer_is_refused_before_any_request() {
    let home = Home::new("strict");
    home.edit_config(|doc| doc["tls"]["allowInsecurePeers"] = false.into());
    let strict = home.start();
    let plain = Daemon::start("plainer");
    let address = format!("127.0.0.1:{}", plain.port);
    strict.loopsy(&["exec", &address, "echo", "hi"]).code(2).stderr_has("allowInsecurePeers is false");
    strict.loopsy(&["context", "get", "k", "--peer", &address]).code(2).stderr_has("pair with it");
    // The local daemon is not a peer: it stays reachable.
    strict.loopsy(&["exec", "local", "echo", "hi"]).success().stdout_has("hi");
}

// See: #13 (item 10): the key and the certificate are one pair.
#[test]
fn a_lone_certificate_makes_a_new_pair_and_a_foreign_key_stops_the_daemon() {
    // A certificate whose key was lost (a crash between the two writes of an older version).
    let first = tls_daemon("tls-pair");
    let old = certificate_fingerprint(&first);
    let old_key = std::fs::read(first.home.path().join("tls/key.pem")).unwrap();
    let mut first = first;
    first.stop();
    std::fs::remove_file(first.home.path().join("tls/key.pem")).unwrap();
    let second = first.restart();
    let new = certificate_fingerprint(&second);
    assert_ne!(new, old, "a new pair");
    let pinned = Client::pinned(&second.url, Some(second.key.clone()), Some(new));
    smol::block_on(pinned.get::<serde_json::Value>("/api/v1/status")).expect("the new pair serves TLS");
    let kept = std::fs::read_dir(second.home.path().join("tls"))
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("cert.pem.orphan-"));
    assert!(kept, "the lone certificate is set aside, not deleted");

    // A key that is not the certificate's: refused with a clear error, nothing rewritten.
    let mut second = second;
    second.stop();
    std::fs::write(second.home.path().join("tls/key.pem"), &old_key).unwrap();
    second.home.loopsy(&["start", "--foreground"]).code(2).stderr_has("is not the private key of");
    assert_eq!(std::fs::read(second.home.path().join("tls/key.pem")).unwrap(), old_key);
}
