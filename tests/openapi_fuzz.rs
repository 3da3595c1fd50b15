//! The OpenAPI document against the daemon that serves it: schemathesis (pinned in
//! tests/requirements.txt) generates requests from `/api/v1/openapi.json` with every check,
//! including the stateful phase and the authenticated routes, and there must be no failure.
//!
//! The fuzzer calls routes that reach out (pairing's join, the dashboard proxy, messages to a
//! peer), so the daemon and the fuzzer run in a network namespace of their own with only a
//! loopback interface: nothing they try can leave this machine (hence root). Execution is
//! limited to harmless programs by an allow list, transfers to a scratch directory.
//! `tests/schemathesis.toml` holds the run's settings and, per operation, the answers the
//! document declares that schemathesis's defaults do not expect (each with its reason).

use std::time::Duration;

use crate::support::{self, skip, Home, TempDir};

/// How long the whole run may take (about 70 s on this machine: 2,640 cases over 75 operations).
const LIMIT: Duration = Duration::from_secs(480);

#[test]
fn the_openapi_document_is_exact_under_schemathesis() {
    let Some(()) = support::prerequisite(skip::root()) else { return };
    let Some(ip) = support::prerequisite(skip::program("ip", "iproute2")) else { return };
    let Some(python) = support::prerequisite(skip::python_with(&["schemathesis"])) else { return };
    isolate_network(&ip);

    let files = TempDir::new("fuzz-files");
    let home = Home::new("fuzz");
    home.edit_config(|doc| {
        doc["execution"]["allowlist"] = vec!["echo", "true"].into();
        doc["transfer"]["allowedPaths"] = vec![files.path().to_string_lossy().into_owned()].into();
    });
    let daemon = home.start();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let report = TempDir::new("fuzz-report");
    let run = support::run_within(
        support::command(&python)
            .current_dir(report.path())
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis_run.py"))
            .args(["--config-file", config, "run", "--checks", "all"])
            .arg(format!("http://{}/api/v1/openapi.json", daemon.addr))
            .args(["--header", &format!("Authorization: Bearer {}", daemon.key)]),
        LIMIT,
    );
    let output = format!("{}\n{}", run.stdout, run.stderr);
    eprintln!("{output}");
    assert!(!output.contains("stopped responding"), "the daemon closed connections on the fuzzer");
    assert!(output.contains("Stateful"), "the stateful phase ran");
    assert_eq!(run.code, 0, "schemathesis found failures (see above)");
    let (tested, total) = operations(&output);
    assert!(tested == total && total > 40, "every operation was tested: {tested}/{total}");
}

/// Moves this test's thread (and what it starts from now on) into a new network namespace with
/// only `lo`, up.
fn isolate_network(ip: &std::path::Path) {
    // SAFETY: unshare has no memory preconditions; CLONE_NEWNET acts on the calling thread.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    support::run_within(support::command(ip).args(["link", "set", "lo", "up"]), support::PROCESS_LIMIT).success();
    let routes = support::run_within(support::command(ip).args(["route", "show"]), support::PROCESS_LIMIT).success();
    assert!(routes.stdout.trim().is_empty(), "no route leaves the namespace: {}", routes.stdout);
}

/// `Tested: N` and `Selected: N/M` of schemathesis's summary.
fn operations(output: &str) -> (usize, usize) {
    let number = |prefix: &str| {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|rest| rest.trim().to_string())
            .unwrap_or_default()
    };
    let tested = number("Tested:").parse().unwrap_or(0);
    let total = number("Selected:").split('/').nth(1).and_then(|t| t.trim().parse().ok()).unwrap_or(0);
    (tested, total)
}
