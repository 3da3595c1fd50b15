//! `loopsy doctor`: each check's passing and failing state, through `--json` and the table.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};

use crate::support::{
    command, loopsy_bin, prerequisite, run_within, Daemon, Home, Run, TempDir, UserHome, PROCESS_LIMIT,
};

/// `loopsy doctor` with HOME = `user` (agents' configs, service units) and no agent CLI.
fn doctor(home: &Path, user: &Path, args: &[&str]) -> Run {
    run_within(command(loopsy_bin()).arg("--home").arg(home).arg("doctor").args(args).user_home(user), PROCESS_LIMIT)
}

/// The checks named `name`, from `doctor --json`.
fn checks<'a>(report: &'a Value, name: &str) -> Vec<&'a Value> {
    report["checks"].as_array().unwrap().iter().filter(|c| c["name"] == name).collect()
}

#[track_caller]
fn assert_check(report: &Value, name: &str, status: &str, text: &str) {
    let found = checks(report, name);
    assert!(
        found.iter().any(|c| c["status"] == status && c["message"].as_str().unwrap().contains(text)),
        "no {status} check {name} saying {text:?} in {found:?}"
    );
}

#[test]
fn a_healthy_node_passes_every_check_that_can_fail() {
    let home = Home::new("doctor-ok");
    home.edit_config(|doc| {
        doc["tls"]["enabled"] = true.into();
        doc["tls"]["allowInsecurePeers"] = false.into();
    });
    let daemon = home.start();
    let user = TempDir::new("user");
    // Where Claude Code reads it with CLAUDE_CONFIG_DIR set (the sandbox sets it to ~/.claude).
    std::fs::create_dir_all(user.path().join(".claude")).unwrap();
    std::fs::write(
        user.path().join(".claude/.claude.json"),
        json!({"mcpServers": {"loopsy": {"command": "loopsy"}}}).to_string(),
    )
    .unwrap();
    let unit = daemon.loopsy(&["enable", "--print", "--platform", "linux"]).success();
    let unit_file = user.path().join(".config/systemd/user/loopsy.service");
    std::fs::create_dir_all(unit_file.parent().unwrap()).unwrap();
    std::fs::write(&unit_file, unit.stdout).unwrap();

    let run = doctor(daemon.home.path(), user.path(), &["--json"]).success();
    let report = run.json();
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_check(&report, "Config", "ok", "valid");
    assert_check(&report, "Keys", "ok", "config.yaml and key.pem private (0600)");
    assert_check(
        &report,
        "Daemon",
        "ok",
        &format!("running (PID {}) at https://127.0.0.1:{}", daemon.pid(), daemon.port),
    );
    assert_check(&report, "Port", "ok", &format!("{} held by the daemon", daemon.port));
    assert_check(&report, "TLS", "ok", "enabled, certificate valid until");
    assert_check(&report, "Insecure", "ok", "only pinned TLS peers");
    assert_check(&report, "Peers", "warn", "none configured");
    assert_check(&report, "mDNS", "ok", "off");
    assert_check(&report, "MCP", "ok", "registered with Claude Code");
    assert_check(&report, "Service", "ok", "enabled (systemd: ");

    doctor(daemon.home.path(), user.path(), &[])
        .success()
        .stdout_has("Loopsy Health Check\n--------------------------------------------------\n")
        .stdout_has("  [OK  ] Daemon     running")
        .stdout_has("  [WARN] Peers      none configured\n          Fix: loopsy pair")
        .stdout_has("All checks passed!");

    // A running daemon is still found when the config on disk broke meanwhile.
    std::fs::write(daemon.home.config_path(), "auth: [unclosed\n").unwrap();
    let report = doctor(daemon.home.path(), user.path(), &["--json"]).code(1).json();
    assert_check(&report, "Config", "fail", "invalid config");
    assert_check(&report, "Daemon", "ok", &format!("running (PID {}", daemon.pid()));
}

#[test]
fn a_missing_invalid_or_unknown_config_is_reported_with_a_fix() {
    let user = TempDir::new("user");
    let empty = TempDir::new("doctor-none");
    let report = doctor(empty.path(), user.path(), &["--json"]).code(1).json();
    assert_check(&report, "Config", "fail", "not found");
    assert_eq!(checks(&report, "Config")[0]["fix"], "loopsy init");
    assert_check(&report, "Port", "warn", "skipped");
    assert_check(&report, "Daemon", "fail", "not running");

    let home = Home::new("doctor-bad");
    std::fs::write(home.config_path(), "auth: [unclosed\n").unwrap();
    let report = doctor(home.path(), user.path(), &["--json"]).code(1).json();
    assert_check(&report, "Config", "fail", "invalid config");
    assert!(checks(&report, "Config")[0]["fix"].as_str().unwrap().contains("loopsy init --force"));

    let home = Home::new("doctor-unknown");
    home.edit_config(|doc| doc["execution"]["maxConcurent"] = 3.into());
    let report = doctor(home.path(), user.path(), &["--json"]).json();
    assert_check(&report, "Config", "warn", "unknown keys are ignored: execution.maxConcurent");
    doctor(home.path(), user.path(), &[]).code(1).stdout_has("1 check(s) failed.");
}

#[test]
fn a_key_file_readable_by_others_fails() {
    let home = Home::new("doctor-mode");
    let user = TempDir::new("user");
    std::fs::set_permissions(home.config_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let report = doctor(home.path(), user.path(), &["--json"]).code(1).json();
    assert_check(&report, "Keys", "fail", "is 644: other users can read the keys");
    assert_eq!(checks(&report, "Keys")[0]["fix"], format!("chmod 600 {}", home.config_path().display()));
    std::fs::set_permissions(home.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = doctor(home.path(), user.path(), &["--json"]).json();
    assert_check(&report, "Keys", "ok", "config.yaml private");
}

#[test]
fn a_port_taken_by_another_process_names_that_process() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let home = Home::new("doctor-port");
    home.edit_config(|doc| doc["server"]["port"] = (port as u64).into());
    let user = TempDir::new("user");
    let report = doctor(home.path(), user.path(), &["--json"]).code(1).json();
    assert_check(&report, "Port", "fail", &format!("{port} is in use by PID {}", std::process::id()));
    assert_check(&report, "Daemon", "fail", "not running");
    drop(holder);
    let report = doctor(home.path(), user.path(), &["--json"]).json();
    assert_check(&report, "Port", "ok", &format!("{port} is free"));
}

/// Writes a self-signed certificate valid from `from_days` to `to_days` from today.
fn write_certificate(home: &Path, from_days: i64, to_days: i64) {
    let date = |days: i64| {
        let ms = (loopsy::clock::now_ms() as i64 + days * 86_400_000) as u64;
        let iso = loopsy::clock::iso8601(ms);
        rcgen::date_time_ymd(iso[0..4].parse().unwrap(), iso[5..7].parse().unwrap(), iso[8..10].parse().unwrap())
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    params.not_before = date(from_days);
    params.not_after = date(to_days);
    let cert = params.self_signed(&key).unwrap();
    let dir = home.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn an_expiring_expired_or_unreadable_certificate_is_reported() {
    let home = Home::new("doctor-cert");
    home.edit_config(|doc| doc["tls"]["enabled"] = true.into());
    let user = TempDir::new("user");

    write_certificate(home.path(), -1, 10);
    let report = doctor(home.path(), user.path(), &["--json"]).json();
    assert_check(&report, "TLS", "warn", "expires on");
    assert!(checks(&report, "TLS")[0]["fix"].as_str().unwrap().contains("restart the daemon"));

    write_certificate(home.path(), -30, -2);
    let report = doctor(home.path(), user.path(), &["--json"]).code(1).json();
    assert_check(&report, "TLS", "fail", "expired on");

    write_certificate(home.path(), -1, 400);
    let report = doctor(home.path(), user.path(), &["--json"]).json();
    assert_check(&report, "TLS", "ok", "valid until");

    std::fs::write(home.path().join("tls/cert.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        .unwrap();
    let report = doctor(home.path(), user.path(), &["--json"]).code(1).json();
    assert_check(&report, "TLS", "fail", "cannot read");

    std::fs::remove_dir_all(home.path().join("tls")).unwrap();
    home.edit_config(|doc| doc["tls"]["enabled"] = false.into());
    let report = doctor(home.path(), user.path(), &["--json"]).json();
    assert_check(&report, "TLS", "warn", "off: peers are reached over plain HTTP");
    assert_check(&report, "Insecure", "warn", "tls.allowInsecurePeers is true");
}

#[test]
fn a_wrong_pin_fails_the_right_pin_passes_and_a_dead_peer_warns() {
    let bob_home = Home::new("doctor-bob");
    bob_home.edit_config(|doc| doc["tls"]["enabled"] = true.into());
    let bob = bob_home.start();
    let alice = Daemon::start("doctor-alice");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    alice
        .req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": bob.port, "name": "bob"}))
        .send()
        .expect(200);
    alice
        .req("POST", "/api/v1/peers")
        .json(&json!({"address": "127.0.0.1", "port": closed, "name": "ghost"}))
        .send()
        .expect(200);
    let user = TempDir::new("user");

    alice.home.edit_config(|doc| doc["tls"]["pinnedCerts"]["bob"] = "0".repeat(64).into());
    let report = doctor(alice.home.path(), user.path(), &["--json"]).code(1).json();
    assert_check(&report, "Peer", "fail", "bob (127.0.0.1:");
    assert_check(&report, "Peer", "fail", "does not match the pin");
    assert_check(&report, "Peer", "warn", "ghost (127.0.0.1:");

    let cert = rustls::pki_types::CertificateDer::from_pem_file(bob.home.path().join("tls/cert.pem")).unwrap();
    let fingerprint = loopsy::tls::Fingerprint::of_der(&cert);
    alice.home.edit_config(|doc| doc["tls"]["pinnedCerts"]["bob"] = fingerprint.as_str().into());
    let report = doctor(alice.home.path(), user.path(), &["--json"]).success().json();
    assert_check(&report, "Peer", "ok", "bob (127.0.0.1:");
    assert_check(&report, "Peer", "ok", "certificate matches the pin");
}

#[test]
fn an_mdns_port_held_exclusively_is_a_warning() {
    let home = Home::new("doctor-mdns");
    home.edit_config(|doc| doc["discovery"]["enabled"] = true.into());
    let user = TempDir::new("user");
    // Held on loopback only, without address reuse: nothing else may bind 5353 then.
    let Some(_blocker) = prerequisite(crate::support::skip::udp_port_free(5353)) else { return };
    let report = doctor(home.path(), user.path(), &["--json"]).json();
    assert_check(&report, "mDNS", "warn", "cannot bind UDP 5353");
}
