//! Loud skips: a test whose prerequisite is missing fails under `CI`, and otherwise says so and
//! is counted.
//!
//! ```ignore
//! let Some(python) = prerequisite(python_with(&["zeroconf"])) else { return };
//! ```
//!
//! [`skip`] (and [`prerequisite`] on an `Err`) panics when `CI` is set (CI services set
//! `CI=true`; `cargo xtask e2e` sets it too), so a missing tool can never pass a CI run.
//! Otherwise it prints `SKIPPED: <test>: <why>`, records the skip in
//! `target/tmp/loopsy-skipped/` (where `.ci/run` counts them), and the test binary ends with a
//! summary of every skipped test and why. The caller returns right after.
//!
//! The probes below name what is missing and how to install it.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Whether `CI` asks for a strict run (set, and not `false` or `0`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Where skips are recorded for `.ci/run` and `cargo xtask e2e` to count
/// (`LOOPSY_SKIP_RECORDS` moves it, for the harness's own tests).
pub fn record_dir() -> PathBuf {
    match std::env::var_os("LOOPSY_SKIP_RECORDS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("loopsy-skipped"),
    }
}

static SKIPPED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Marks the running test skipped because `why`; fails it instead under `CI`.
#[track_caller]
pub fn skip(why: impl Display) {
    let test = super::test_name();
    if under_ci() {
        panic!("{test}: a prerequisite is missing and CI is set, so this is a failure, not a skip: {why}");
    }
    eprintln!("SKIPPED: {test}: {why}");
    count_at_exit();
    SKIPPED.lock().unwrap_or_else(|e| e.into_inner()).push((test.clone(), why.to_string()));
    let dir = record_dir();
    let _ = std::fs::create_dir_all(&dir);
    let file: String = test.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    let _ = std::fs::write(dir.join(file), format!("{test}: {why}\n"));
}

/// `Some(value)`, or `None` after [`skip`]ping with the error's reason.
#[track_caller]
pub fn prerequisite<T>(found: Result<T, String>) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(why) => {
            skip(why);
            None
        }
    }
}

/// Makes the test binary print the count of skipped tests when it exits (once per process; the
/// harness calls it when a test first uses it, so every run that started a daemon says it).
pub fn count_at_exit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain function with no captured state, once per process.
    ONCE.call_once(|| unsafe {
        libc::atexit(print_summary);
    });
}

/// Printed when the test binary exits: libtest shows no output of passing tests, so the
/// skips would otherwise go unseen.
extern "C" fn print_summary() {
    let skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if skipped.is_empty() {
        let text = "\n0 tests skipped for missing prerequisites\n";
        // SAFETY: write(2) of a static buffer to stderr.
        unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
        return;
    }
    let mut text = format!("\n{} test(s) SKIPPED for missing prerequisites (with CI=true they fail):\n", skipped.len());
    for (test, why) in skipped.iter() {
        text.push_str(&format!("  SKIPPED: {test}: {why}\n"));
    }
    // SAFETY: write(2) of an owned buffer to stderr; std's handles may be gone at exit.
    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
}

// ---- Probes ----

/// Root, for network namespaces (netlab).
pub fn root() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err("not root: netlab's network namespaces need CAP_NET_ADMIN (run as root, as .ci/run does)".into())
    }
}

/// A program on the test process's `PATH`; `package` is the Debian package that has it.
pub fn program(name: &str, package: &str) -> Result<PathBuf, String> {
    super::isolation::find_program(name).ok_or_else(|| format!("{name} is not installed (apt-get install {package})"))
}

/// The Python interpreter of the test clients, if it can import every module in `modules`:
/// `LOOPSY_TEST_PYTHON`, else the virtualenv `.ci/run` made (`.ci/venv`), else `python3`.
pub fn python_with(modules: &[&str]) -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python");
    let named = match std::env::var("LOOPSY_TEST_PYTHON") {
        Ok(python) => python,
        Err(_) if venv.exists() => venv.display().to_string(),
        Err(_) => "python3".into(),
    };
    let python = super::isolation::find_program(&named)
        .ok_or_else(|| format!("{named} is not installed (apt-get install python3 python3-venv, or run .ci/run)"))?;
    let imports = modules.iter().map(|m| format!("import {m}")).collect::<Vec<_>>().join("; ");
    let run = super::run_within(super::command(&python).args(["-c", &imports]), Duration::from_secs(60));
    if run.code != 0 {
        return Err(format!(
            "{} cannot import {} (.ci/run installs tests/requirements.txt into .ci/venv and sets LOOPSY_TEST_PYTHON): {}",
            python.display(),
            modules.join(", "),
            run.stderr.lines().last().unwrap_or_default()
        ));
    }
    Ok(python)
}

/// What the browser tests need: node, playwright-core (`tests/browser/node_modules`) and
/// Chromium. `LOOPSY_TEST_NODE` and `LOOPSY_CHROMIUM` name other binaries.
pub struct Browser {
    pub node: PathBuf,
    pub scripts: PathBuf,
    pub chromium: PathBuf,
}

pub fn browser() -> Result<Browser, String> {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let named = std::env::var("LOOPSY_TEST_NODE").unwrap_or_else(|_| "node".into());
    let node = super::isolation::find_program(&named)
        .ok_or_else(|| format!("{named} is not installed (apt-get install nodejs npm, or run .ci/run)"))?;
    let package = scripts.join("node_modules/playwright-core/package.json");
    let Ok(text) = std::fs::read_to_string(&package) else {
        return Err("tests/browser/node_modules is missing (npm ci --prefix tests/browser, or run .ci/run)".into());
    };
    let manifest: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", package.display()))?;
    let needs = manifest["engines"]["node"].as_str().unwrap_or(">=0").to_string();
    let version = super::run_within(super::command(&node).arg("--version"), Duration::from_secs(30));
    let have = version.stdout.trim().trim_start_matches('v').to_string();
    if !node_satisfies(&have, &needs) {
        return Err(format!(
            "playwright-core {} needs Node {needs}, but {} is {have}",
            manifest["version"].as_str().unwrap_or("?"),
            node.display()
        ));
    }
    let chromium = PathBuf::from(std::env::var("LOOPSY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if !chromium.exists() {
        return Err(format!("{} is missing (apt-get install chromium)", chromium.display()));
    }
    Ok(Browser { node, scripts, chromium })
}

/// Whether Node `version` (`20.1.0`) meets an engines range of the form `>=N[.M[.P]]`.
pub fn node_satisfies(version: &str, range: &str) -> bool {
    let parse = |text: &str| -> Vec<u64> { text.split('.').map(|p| p.trim().parse().unwrap_or(0)).collect() };
    match range.trim().strip_prefix(">=") {
        Some(minimum) => parse(version) >= parse(minimum),
        // Other range forms are not used by playwright-core; let node itself complain.
        None => true,
    }
}

/// UDP `port` free on loopback (nothing bound to it exclusively).
pub fn udp_port_free(port: u16) -> Result<std::net::UdpSocket, String> {
    std::net::UdpSocket::bind(("127.0.0.1", port))
        .map_err(|e| format!("UDP port {port} is taken on this machine ({e}); stop the mDNS responder (avahi-daemon)"))
}

/// At least `bytes` free on the filesystem of `dir`.
pub fn free_disk(dir: &Path, bytes: u64) -> Result<u64, String> {
    let free = free_bytes(dir)?;
    if free < bytes {
        return Err(format!("{} has {} MiB free; this test writes {} MiB", dir.display(), free >> 20, bytes >> 20));
    }
    Ok(free)
}

/// Bytes available to an unprivileged writer on the filesystem of `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64, String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: statvfs(3) fills the zeroed struct; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(format!("statvfs {}: {}", dir.display(), std::io::Error::last_os_error()));
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}
