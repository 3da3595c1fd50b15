//! The daemon as a user service: systemd (Linux), launchd (macOS), Task Scheduler (Windows).
//!
//! `units` renders the definitions (pure); this file installs them, asks the manager about them
//! and starts or stops the daemon through it. A daemon started by a manager says so in
//! `daemon.json` (`managedBy`), so `loopsy start`/`stop` go through the manager instead of
//! racing it (H3). Every external command gets its arguments as a vector, never a shell string.

pub(crate) mod units;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::paths::Paths;
pub(crate) use units::UnitSpec;

/// A service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Manager {
    Systemd,
    Launchd,
    Schtasks,
}

/// What the manager knows about our service.
#[derive(Debug, Clone)]
pub(crate) struct ServiceState {
    pub manager: Manager,
    /// Where the unit lives (the task name for schtasks).
    pub unit: String,
    pub installed: bool,
    /// The installed unit runs the daemon of this data directory.
    pub for_this_home: bool,
    /// Whether the manager reports it running; `None` when the manager cannot be asked.
    pub active: Option<bool>,
}

impl Manager {
    /// The manager of this operating system.
    pub(crate) fn for_this_os() -> anyhow::Result<Manager> {
        Manager::for_os(std::env::consts::OS)
    }

    pub(crate) fn for_os(os: &str) -> anyhow::Result<Manager> {
        match os {
            "linux" => Ok(Manager::Systemd),
            "macos" => Ok(Manager::Launchd),
            "windows" => Ok(Manager::Schtasks),
            other => bail!("unsupported platform: {other} (supported: linux with systemd, macos, windows)"),
        }
    }

    /// The `--managed-by` value units pass, and the name users see.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Manager::Systemd => "systemd",
            Manager::Launchd => "launchd",
            Manager::Schtasks => "schtasks",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Manager> {
        [Manager::Systemd, Manager::Launchd, Manager::Schtasks].into_iter().find(|m| m.name() == name)
    }

    /// The unit text for `spec`.
    pub(crate) fn render(self, spec: &UnitSpec) -> anyhow::Result<String> {
        Ok(match self {
            Manager::Systemd => units::systemd_unit(spec),
            Manager::Launchd => units::launchd_plist(spec),
            Manager::Schtasks => {
                let args = units::schtasks_create(spec)?;
                format!(
                    "schtasks {}\n",
                    args.iter().map(|a| format!("\"{}\"", a.replace('"', "\\\""))).collect::<Vec<_>>().join(" ")
                )
            }
        })
    }

    /// Where the unit file lives (none for schtasks).
    pub(crate) fn unit_file(self) -> anyhow::Result<Option<PathBuf>> {
        let home = crate::paths::user_home_dir().context("cannot find the home directory (HOME)")?;
        Ok(match self {
            Manager::Systemd => {
                let config = std::env::var_os("XDG_CONFIG_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| home.join(".config"));
                Some(config.join("systemd/user").join(units::SYSTEMD_UNIT))
            }
            Manager::Launchd => Some(home.join("Library/LaunchAgents").join(format!("{}.plist", units::LAUNCHD_LABEL))),
            Manager::Schtasks => None,
        })
    }

    /// The command that stops the managed daemon, as users would type it.
    pub(crate) fn stop_command(self) -> Vec<String> {
        match self {
            Manager::Systemd => words(&["systemctl", "--user", "stop", "loopsy"]),
            Manager::Launchd => vec!["launchctl".into(), "bootout".into(), launchd_target()],
            Manager::Schtasks => words(&["schtasks", "/end", "/tn", units::SCHTASKS_TASK]),
        }
    }

    /// The commands that (re)start the managed daemon.
    pub(crate) fn start_commands(self, restart: bool) -> Vec<Vec<String>> {
        match self {
            Manager::Systemd => {
                vec![words(&["systemctl", "--user", if restart { "restart" } else { "start" }, "loopsy"])]
            }
            Manager::Launchd => {
                let plist = self.unit_file().ok().flatten().unwrap_or_default().to_string_lossy().into_owned();
                let kick = if restart { vec!["-k".to_string()] } else { vec![] };
                vec![
                    // Loads the agent again if `stop` booted it out; fails harmlessly when loaded.
                    vec!["launchctl".into(), "bootstrap".into(), launchd_domain(), plist],
                    [vec!["launchctl".into(), "kickstart".into()], kick, vec![launchd_target()]].concat(),
                ]
            }
            Manager::Schtasks => vec![words(&["schtasks", "/run", "/tn", units::SCHTASKS_TASK])],
        }
    }
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| w.to_string()).collect()
}

fn uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

fn launchd_domain() -> String {
    format!("gui/{}", uid())
}

fn launchd_target() -> String {
    format!("gui/{}/{}", uid(), units::LAUNCHD_LABEL)
}

/// The unit for the daemon of `paths`, run by the binary running now.
pub(crate) fn spec_for(paths: &Paths) -> anyhow::Result<UnitSpec> {
    let exe = std::env::current_exe().context("finding the loopsy binary")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    UnitSpec::new(exe, paths.home().to_path_buf(), std::env::var("PATH").unwrap_or_default())
}

/// Runs `argv`; returns stdout, or an error with the command and its stderr.
pub(crate) fn run(argv: &[String]) -> anyhow::Result<String> {
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{}`", argv.join(" ")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let detail = if stderr.trim().is_empty() { stdout.trim().to_string() } else { stderr.trim().to_string() };
        bail!("`{}` failed: {}", argv.join(" "), detail);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The unit file's text, or the task definition for schtasks, if installed.
fn installed_text(manager: Manager) -> anyhow::Result<(String, Option<String>)> {
    Ok(match manager.unit_file()? {
        Some(file) => (file.display().to_string(), std::fs::read_to_string(&file).ok()),
        None => {
            let query = run(&words(&["schtasks", "/query", "/tn", units::SCHTASKS_TASK, "/xml"])).ok();
            (units::SCHTASKS_TASK.to_string(), query)
        }
    })
}

/// Whether `text` (an installed unit) runs the daemon of `paths`.
fn names_home(manager: Manager, text: &str, paths: &Paths) -> bool {
    let home = paths.home().to_string_lossy();
    let marker = match manager {
        Manager::Systemd => units::systemd_quote(&home),
        Manager::Launchd => format!("<string>{}</string>", units::xml_escape(&home)),
        Manager::Schtasks => format!("\"{home}\""),
    };
    text.contains(&marker)
}

/// The manager whose installed unit runs the daemon of `paths`, if any (reads files only).
pub(crate) fn installed_for(paths: &Paths) -> Option<Manager> {
    let manager = Manager::for_this_os().ok()?;
    let file = manager.unit_file().ok()??;
    let text = std::fs::read_to_string(file).ok()?;
    names_home(manager, &text, paths).then_some(manager)
}

/// What the manager of this OS knows about the service of `paths`.
pub(crate) fn state(paths: &Paths) -> anyhow::Result<ServiceState> {
    let manager = Manager::for_this_os()?;
    let (unit, text) = installed_text(manager)?;
    let active = match manager {
        Manager::Systemd => Command::new("systemctl")
            .args(["--user", "is-active", "loopsy"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .and_then(|o| match String::from_utf8_lossy(&o.stdout).trim() {
                "" => None,
                state => Some(state == "active" || state == "activating"),
            }),
        Manager::Launchd => {
            run(&["launchctl".into(), "print".into(), launchd_target()]).ok().map(|out| out.contains("state = running"))
        }
        Manager::Schtasks => run(&words(&["schtasks", "/query", "/tn", units::SCHTASKS_TASK, "/fo", "csv", "/nh"]))
            .ok()
            .map(|out| out.contains("Running")),
    };
    Ok(ServiceState {
        manager,
        unit,
        installed: text.is_some(),
        for_this_home: text.is_some_and(|t| names_home(manager, &t, paths)),
        active,
    })
}

/// Installs and starts the service for `paths`; returns notes for the user.
pub(crate) fn enable(paths: &Paths) -> anyhow::Result<Vec<String>> {
    let manager = Manager::for_this_os()?;
    let spec = spec_for(paths)?;
    if manager == Manager::Systemd {
        check_systemd_user_manager()?;
    }
    let mut notes = Vec::new();
    // A daemon we started by hand would hold the lock and make the managed one fail.
    if let crate::instance::Daemon::Running(info) = crate::instance::probe(paths)? {
        if info.managed_by.is_none() {
            crate::instance::terminate(paths, std::time::Duration::from_secs(20))?;
            notes.push(format!(
                "stopped the daemon started by hand (PID {}) so {} can run it",
                info.pid,
                manager.name()
            ));
        }
    }
    std::fs::create_dir_all(paths.logs_dir()).context("creating the logs directory")?;
    match manager {
        Manager::Systemd => {
            let file = manager.unit_file()?.expect("systemd has a unit file");
            write_unit(&file, &units::systemd_unit(&spec))?;
            run(&words(&["systemctl", "--user", "daemon-reload"]))?;
            run(&words(&["systemctl", "--user", "enable", "--now", "loopsy"]))?;
            notes.extend(linger_advice());
        }
        Manager::Launchd => {
            let file = manager.unit_file()?.expect("launchd has a plist");
            write_unit(&file, &units::launchd_plist(&spec))?;
            let plist = file.to_string_lossy().into_owned();
            let _ = run(&["launchctl".into(), "bootout".into(), launchd_target()]);
            run(&["launchctl".into(), "bootstrap".into(), launchd_domain(), plist])?;
        }
        Manager::Schtasks => {
            let _ = run(&words(&["schtasks", "/delete", "/tn", units::SCHTASKS_TASK, "/f"]));
            let mut argv = vec!["schtasks".to_string()];
            argv.extend(units::schtasks_create(&spec)?);
            run(&argv)?;
            let _ = run(&words(&["schtasks", "/run", "/tn", units::SCHTASKS_TASK]));
        }
    }
    Ok(notes)
}

/// Stops and uninstalls the service; returns whether one was installed.
pub(crate) fn disable() -> anyhow::Result<bool> {
    let manager = Manager::for_this_os()?;
    match manager {
        Manager::Systemd | Manager::Launchd => {
            let file = manager.unit_file()?.expect("systemd and launchd have unit files");
            if !file.exists() {
                return Ok(false);
            }
            if manager == Manager::Systemd {
                let _ = run(&words(&["systemctl", "--user", "disable", "--now", "loopsy"]));
            } else {
                let _ = run(&manager.stop_command());
            }
            std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
            if manager == Manager::Systemd {
                let _ = run(&words(&["systemctl", "--user", "daemon-reload"]));
            }
            Ok(true)
        }
        Manager::Schtasks => {
            let _ = run(&manager.stop_command());
            Ok(run(&words(&["schtasks", "/delete", "/tn", units::SCHTASKS_TASK, "/f"])).is_ok())
        }
    }
}

/// `systemctl --user` must reach a user manager; in containers and `su` shells it cannot.
fn check_systemd_user_manager() -> anyhow::Result<()> {
    let outcome = Command::new("systemctl").args(["--user", "show-environment"]).stdin(Stdio::null()).output();
    let reason = match outcome {
        Ok(output) if output.status.success() => return Ok(()),
        Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
        Err(e) => format!("systemctl not found ({e})"),
    };
    bail!(
        "no systemd user session is reachable here (`systemctl --user`: {reason}).\n\
         `loopsy enable` installs a systemd user service, which needs a user manager: log in through a \
         normal session (not a container or `su` shell), or have root run `loginctl enable-linger {}` and log in again.\n\
         Without one, run the daemon with `loopsy start`; `loopsy enable --print` shows the unit it would install.",
        user_name()
    )
}

/// Without lingering, systemd stops user services at logout.
fn linger_advice() -> Option<String> {
    let user = user_name();
    let out = run(&words(&["loginctl", "show-user", &user, "-p", "Linger"])).ok()?;
    out.trim().eq("Linger=no").then(|| {
        format!("the service stops when you log out; to keep it running, run: sudo loginctl enable-linger {user}")
    })
}

fn user_name() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "$(whoami)".into())
}

fn write_unit(file: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::durable::write(file, text.as_bytes(), crate::durable::Mode::Public)
}
