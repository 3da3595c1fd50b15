//! The daemon as a user service: generated units, `enable` without a user manager, and
//! `start`/`stop`/`service-status` of a daemon a manager owns (H3).
//!
//! No test installs a real service: every command runs with `HOME` in a temporary directory and
//! no reachable user bus, so `systemctl --user` fails the way it does in a container.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{loopsy_bin, Home, Run, TempDir};

/// A data directory whose path needs quoting in every format.
const HOSTILE: &str = "d a&b<c>'q\"100%$x";

/// `loopsy --home <home> <args>` with HOME = `user_home` and no user bus.
fn loopsy_as_user(user_home: &Path, home: &Path, args: &[&str]) -> Run {
    let runtime = user_home.join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let output = Command::new(loopsy_bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .env("HOME", user_home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Skips (prints why) when `tool` is missing, except under CI where it must be installed.
fn have(tool: &str, why: &str) -> bool {
    let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap().status.success();
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{tool} is required under CI ({why})");
        eprintln!("skipped: {tool} is not installed ({why})");
    }
    found
}

#[test]
fn the_printed_systemd_unit_quotes_a_hostile_home_and_passes_systemd_analyze() {
    let dir = TempDir::new("unit");
    let home = dir.path().join(HOSTILE);
    let unit = loopsy_as_user(dir.path(), &home, &["enable", "--print", "--platform", "linux"]).success().stdout;
    let quoted = home.to_string_lossy().replace('%', "%%").replace('$', "$$").replace('"', "\\\"");
    assert!(
        unit.contains(&format!(
            "ExecStart=\"{}\" \"--home\" \"{quoted}\" \"start\" \"--foreground\" \"--managed-by\" \"systemd\"",
            Path::new(loopsy_bin()).canonicalize().unwrap().display()
        )),
        "{unit}"
    );
    assert!(unit.contains("Restart=on-failure"));
    assert!(unit.contains(&format!(
        "StandardOutput=append:{}/logs/daemon.log",
        home.to_string_lossy().replace('%', "%%").replace('$', "$$")
    )));
    if !have("systemd-analyze", "verifies the generated unit") {
        return;
    }
    let file = dir.path().join("loopsy.service");
    std::fs::write(&file, &unit).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify failed:\n{stderr}\n{unit}");
    assert!(!stderr.contains("loopsy.service:"), "systemd-analyze warns about the unit:\n{stderr}");
}

#[test]
fn the_plists_parse_and_name_the_home_exactly() {
    let dir = TempDir::new("plist");
    let home = dir.path().join(HOSTILE);
    let plist = loopsy_as_user(dir.path(), &home, &["enable", "--print", "--platform", "macos"]).success().stdout;
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dist/units/com.loopsy.daemon.plist");
    if !have("python3", "parses the plist with plistlib") {
        return;
    }
    let file = dir.path().join("agent.plist");
    std::fs::write(&file, &plist).unwrap();
    for path in [&file, &golden] {
        let script = "import plistlib, sys, json; d = plistlib.load(open(sys.argv[1], 'rb')); print(json.dumps(d))";
        let out = Command::new("python3").args(["-c", script]).arg(path).output().unwrap();
        assert!(
            out.status.success(),
            "{} is not a valid plist: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(parsed["Label"], "com.loopsy.daemon");
        assert_eq!(parsed["RunAtLoad"], true);
        assert_eq!(parsed["ProgramArguments"][1], "--home");
        assert_eq!(parsed["StandardOutPath"], parsed["StandardErrorPath"]);
        if path == &file {
            assert_eq!(parsed["ProgramArguments"][2], home.to_string_lossy().as_ref());
            assert_eq!(parsed["StandardOutPath"], format!("{}/logs/daemon.log", home.display()));
        }
    }
}

#[cfg(target_os = "linux")]
#[test]
fn enable_fails_clearly_without_a_systemd_user_session_and_installs_nothing() {
    let home = Home::new("enable");
    let user = TempDir::new("user");
    let run = loopsy_as_user(user.path(), home.path(), &["enable"]).code(2);
    assert!(run.stderr.contains("no systemd user session is reachable here"), "{}", run.stderr);
    assert!(run.stderr.contains("loopsy start") && run.stderr.contains("enable-linger"), "{}", run.stderr);
    assert!(!user.path().join(".config/systemd/user/loopsy.service").exists());
    loopsy_as_user(user.path(), home.path(), &["service-status"])
        .success()
        .stdout_has("System service: disabled")
        .stdout_has("Daemon process: stopped")
        .stdout_has("loopsy enable");
    loopsy_as_user(user.path(), home.path(), &["disable"]).success().stdout_has("no loopsy service is installed");
}

/// `loopsy start --foreground --managed-by <manager>` as a service manager would run it.
struct Managed {
    child: Child,
}

impl Managed {
    fn start(home: &Path, manager: &str) -> Managed {
        let managed = Managed {
            child: Command::new(loopsy_bin())
                .arg("--home")
                .arg(home)
                .args(["start", "--foreground", "--managed-by", manager])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let info = std::fs::read_to_string(home.join("daemon.json")).ok();
            if info.is_some_and(|text| text.contains(&format!("\"pid\": {}", managed.child.id()))) {
                return managed;
            }
            assert!(Instant::now() < deadline, "the managed daemon did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_managed_daemon_is_stopped_through_its_manager_and_not_started_twice() {
    let home = Home::new("managed");
    let user = TempDir::new("user");
    let mut daemon = Managed::start(home.path(), "systemd");
    let pid = daemon.child.id();

    let stop = loopsy_as_user(user.path(), home.path(), &["stop"]).code(2);
    assert!(stop.stderr.contains("managed by systemd"), "{}", stop.stderr);
    assert!(stop.stderr.contains("stop it with: systemctl --user stop loopsy"), "{}", stop.stderr);
    assert!(daemon.child.try_wait().unwrap().is_none(), "the daemon was not signalled behind systemd's back");

    loopsy_as_user(user.path(), home.path(), &["start"])
        .success()
        .stdout_has(&format!("already running under systemd (PID {pid})"));
    loopsy_as_user(user.path(), home.path(), &["service-status"])
        .success()
        .stdout_has(&format!("Daemon process: running (PID {pid}, managed by systemd)"));
    let status = loopsy_as_user(user.path(), home.path(), &["service-status", "--json"]).success().json();
    assert_eq!(status["managedBy"], "systemd");
    assert_eq!(status["enabled"], false);
}

#[cfg(target_os = "linux")]
#[test]
fn start_goes_through_an_installed_unit_for_this_home_and_disable_removes_it() {
    let home = Home::new("installed");
    let user = TempDir::new("user");
    let unit = loopsy_as_user(user.path(), home.path(), &["enable", "--print"]).success().stdout;
    let file = user.path().join(".config/systemd/user/loopsy.service");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, unit).unwrap();

    let start = loopsy_as_user(user.path(), home.path(), &["start"]).code(2);
    assert!(start.stderr.contains("managed by systemd (installed unit)"), "{}", start.stderr);
    assert!(start.stderr.contains("`systemctl --user start loopsy` failed"), "{}", start.stderr);
    assert!(!home.path().join("daemon.json").exists(), "no second, unmanaged daemon was started");
    loopsy_as_user(user.path(), home.path(), &["service-status"])
        .success()
        .stdout_has("System service: enabled (systemd: ");

    // Another data directory is not affected by this home's unit.
    let other = Home::new("other");
    loopsy_as_user(user.path(), other.path(), &["service-status"])
        .success()
        .stdout_has("enabled for another data directory");

    loopsy_as_user(user.path(), home.path(), &["disable"]).success().stdout_has("disabled and removed");
    assert!(!file.exists());
}

#[test]
fn unsupported_platforms_are_named() {
    let dir = TempDir::new("platform");
    loopsy_as_user(dir.path(), dir.path(), &["enable", "--print", "--platform", "plan9"])
        .code(2)
        .stderr_has("unsupported platform: plan9");
}
