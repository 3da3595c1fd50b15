//! `loopsy doctor`: checks of this node's setup, each with a status, a one-line message and a
//! fix. The checks only look (files, sockets, a few HTTP calls with short timeouts); nothing is
//! changed. Rendering is the CLI's (`cli/doctor.rs`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::instance::{self, Daemon};
use crate::paths::Paths;
use crate::peer::{Client, ClientError};

/// HTTP calls of the checks give up after this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// A certificate expiring sooner than this is a warning.
const EXPIRY_WARNING_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Level {
    Ok,
    Warn,
    Fail,
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub name: String,
    pub status: Level,
    pub message: String,
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &str, status: Level, message: impl Into<String>, fix: Option<String>) -> Check {
        Check { name: name.into(), status, message: message.into(), fix }
    }
    fn ok(name: &str, message: impl Into<String>) -> Check {
        Check::new(name, Level::Ok, message, None)
    }
    fn warn(name: &str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Level::Warn, message, Some(fix.into()))
    }
    fn fail(name: &str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, Level::Fail, message, Some(fix.into()))
    }
}

/// Runs every check for the data directory `paths`; `now_ms` is the current time.
pub(crate) fn run(paths: &Paths, now_ms: u64) -> Vec<Check> {
    let (config_check, config) = check_config(paths);
    let mut checks = vec![config_check, check_permissions(paths), check_daemon(paths, config.as_ref())];
    match &config {
        Some(config) => {
            checks.push(check_port(paths, config));
            checks.push(check_certificate(paths, config, now_ms));
            checks.push(check_insecure(paths, config));
            checks.extend(check_peers(paths, config));
            checks.push(check_mdns(paths, config));
        }
        None => {
            for name in ["Port", "TLS", "Insecure", "Peers", "mDNS"] {
                checks.push(Check::warn(name, "skipped: the config is unusable", "fix the config first"));
            }
        }
    }
    checks.push(check_mcp());
    checks.push(check_service(paths));
    checks
}

fn check_config(paths: &Paths) -> (Check, Option<Config>) {
    let path = paths.config_file();
    match Config::load(paths) {
        Ok(config) => {
            let unknown = Config::unknown_keys(&std::fs::read_to_string(&path).unwrap_or_default());
            let check = if unknown.is_empty() {
                Check::ok("Config", format!("valid ({})", path.display()))
            } else {
                Check::warn(
                    "Config",
                    format!("valid, but unknown keys are ignored: {}", unknown.join(", ")),
                    format!("remove or correct them in {}", path.display()),
                )
            };
            (check, Some(config))
        }
        Err(crate::config::ConfigError::Missing { .. }) => {
            (Check::fail("Config", format!("not found at {}", path.display()), "loopsy init"), None)
        }
        Err(e) => (
            Check::fail(
                "Config",
                e.to_string(),
                format!("correct {} (or start over: loopsy init --force)", path.display()),
            ),
            None,
        ),
    }
}

/// Files holding keys must not be readable by others (1.0.21 left them world-readable, C3).
fn check_permissions(paths: &Paths) -> Check {
    use std::os::unix::fs::PermissionsExt;
    let files = [paths.config_file(), paths.tls_dir().join("key.pem")];
    let mut checked = Vec::new();
    for file in &files {
        let Ok(meta) = std::fs::metadata(file) else { continue };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Check::fail(
                "Keys",
                format!("{} is {mode:03o}: other users can read the keys in it", file.display()),
                format!("chmod 600 {}", file.display()),
            );
        }
        checked.push(file.file_name().unwrap_or_default().to_string_lossy().into_owned());
    }
    if checked.is_empty() {
        return Check::ok("Keys", "no key files yet");
    }
    Check::ok("Keys", format!("{} private (0600)", checked.join(" and ")))
}

fn check_daemon(paths: &Paths, config: Option<&Config>) -> Check {
    let info = match instance::probe(paths) {
        Ok(Daemon::Running(info)) => info,
        Ok(Daemon::Starting { pid }) => {
            return Check::warn("Daemon", format!("starting (PID {pid})"), "wait a moment and run doctor again")
        }
        Ok(Daemon::NotRunning) => return Check::fail("Daemon", "not running", "loopsy start"),
        Err(e) => {
            return Check::fail("Daemon", format!("cannot tell: {e:#}"), "check the data directory's permissions")
        }
    };
    let managed = info.managed_by.as_deref().map(|m| format!(", managed by {m}")).unwrap_or_default();
    let Some(config) = config else {
        // Without a key only the public health route can be asked.
        let health = Client::local(paths, "").and_then(|client| {
            smol::block_on(client.with_timeout(CALL_TIMEOUT).get::<crate::system::Health>("/api/v1/health"))
        });
        return match health {
            Ok(health) => Check::ok(
                "Daemon",
                format!("running (PID {}{managed}) at {}, protocol {}", info.pid, info.url, health.version),
            ),
            Err(e) => Check::fail(
                "Daemon",
                format!("PID {} holds the lock but does not answer at {}: {e}", info.pid, info.url),
                "loopsy restart (and see loopsy logs --daemon)",
            ),
        };
    };
    let answer = Client::local(paths, &config.auth.api_key).and_then(|client| {
        smol::block_on(client.with_timeout(CALL_TIMEOUT).get::<crate::system::Identity>("/api/v1/identity"))
    });
    match answer {
        Ok(identity) if identity.implementation != crate::identity::IMPLEMENTATION => Check::warn(
            "Daemon",
            format!(
                "running (PID {}) another version: {} (this CLI is {})",
                info.pid,
                identity.implementation,
                crate::identity::IMPLEMENTATION
            ),
            "loopsy restart",
        ),
        Ok(identity) => Check::ok(
            "Daemon",
            format!(
                "running (PID {}{managed}) at {}, {} (protocol {})",
                info.pid, info.url, identity.implementation, identity.version
            ),
        ),
        Err(e) => Check::fail(
            "Daemon",
            format!("PID {} holds the lock but does not answer at {}: {e}", info.pid, info.url),
            "loopsy restart (and see loopsy logs --daemon)",
        ),
    }
}

/// Who holds the configured port when our daemon does not.
fn check_port(paths: &Paths, config: &Config) -> Check {
    let port = config.server.port;
    if let Ok(Daemon::Running(info)) = instance::probe(paths) {
        return Check::ok("Port", format!("{} held by the daemon (PID {})", info.port, info.pid));
    }
    if port == 0 {
        return Check::ok("Port", "chosen at start (server.port: 0)");
    }
    let host: IpAddr = config.server.host.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    match std::net::TcpListener::bind(SocketAddr::new(host, port)) {
        Ok(_) => Check::ok("Port", format!("{port} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let owner = port_owner(port)
                .map(|(pid, name)| format!("PID {pid} ({name})"))
                .unwrap_or_else(|| "another process".into());
            Check::fail(
                "Port",
                format!("{port} is in use by {owner}"),
                format!("stop that process, or set server.port to a free port in {}", paths.config_file().display()),
            )
        }
        Err(e) => Check::fail(
            "Port",
            format!("cannot listen on {host}:{port}: {e}"),
            "choose another server.port or server.host",
        ),
    }
}

/// The process listening on TCP `port`, from `/proc` (Linux; only processes we may inspect).
fn port_owner(port: u16) -> Option<(u32, String)> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else {
                continue;
            };
            let local_port = local.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if local_port == Some(port) && *state == "0A" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim().to_string();
            return Some((pid, name));
        }
    }
    None
}

fn check_certificate(paths: &Paths, config: &Config, now_ms: u64) -> Check {
    let tls_dir = paths.tls_dir();
    let cert_path = tls_dir.join("cert.pem");
    let regenerate = format!(
        "remove {} and restart the daemon to make a new certificate (paired peers must then pair again)",
        tls_dir.display()
    );
    if !cert_path.exists() {
        return if config.tls.enabled {
            Check::warn("TLS", "enabled; the certificate is made when the daemon starts", "loopsy restart")
        } else {
            Check::warn(
                "TLS",
                "off: peers are reached over plain HTTP",
                format!(
                    "pair with `loopsy pair` (turns TLS on), or set tls.enabled: true in {}",
                    paths.config_file().display()
                ),
            )
        };
    }
    let validity = match crate::tls::certificate_validity(&cert_path) {
        Ok(validity) => validity,
        Err(e) => return Check::fail("TLS", format!("cannot read {}: {e}", cert_path.display()), regenerate),
    };
    let (level, message) = judge_validity(validity, now_ms);
    match level {
        Level::Ok if !config.tls.enabled => Check::warn(
            "TLS",
            format!("certificate {message}, but tls.enabled is false"),
            format!("set tls.enabled: true in {}", paths.config_file().display()),
        ),
        Level::Ok => Check::ok("TLS", format!("enabled, certificate {message}")),
        level => Check::new("TLS", level, format!("certificate {message}"), Some(regenerate)),
    }
}

/// Whether a certificate valid over `validity` is fine at `now_ms`, and a phrase saying why.
pub(crate) fn judge_validity(validity: crate::x509::Validity, now_ms: u64) -> (Level, String) {
    let now = (now_ms / 1000) as i64;
    let date = |secs: i64| crate::clock::iso8601(secs.max(0) as u64 * 1000)[..10].to_string();
    let days_left = (validity.not_after - now).div_euclid(86_400);
    if now < validity.not_before {
        (Level::Fail, format!("not valid before {}", date(validity.not_before)))
    } else if now >= validity.not_after {
        (Level::Fail, format!("expired on {}", date(validity.not_after)))
    } else if days_left < EXPIRY_WARNING_DAYS {
        (Level::Warn, format!("expires on {} (in {days_left} days)", date(validity.not_after)))
    } else {
        (Level::Ok, format!("valid until {}", date(validity.not_after)))
    }
}

fn check_insecure(paths: &Paths, config: &Config) -> Check {
    if config.tls.allow_insecure_peers {
        Check::warn(
            "Insecure",
            "tls.allowInsecurePeers is true: peers without a pinned certificate get keys over plain HTTP",
            format!(
                "pair every peer (`loopsy pair`), then set tls.allowInsecurePeers: false in {}",
                paths.config_file().display()
            ),
        )
    } else {
        Check::ok("Insecure", "only pinned TLS peers are trusted")
    }
}

/// Each registry peer: does it answer, as itself, with the pinned certificate.
fn check_peers(paths: &Paths, config: &Config) -> Vec<Check> {
    let peers = smol::block_on(crate::resolve::registry_peers(paths, config));
    if peers.is_empty() {
        return vec![Check::warn("Peers", "none configured", "loopsy pair <address> (or loopsy peers add <address>)")];
    }
    smol::block_on(async {
        let probes: Vec<smol::Task<Check>> = peers
            .into_iter()
            .map(|peer| {
                let pin = peer
                    .name
                    .as_ref()
                    .and_then(|name| config.tls.pinned_certs.get(name))
                    .and_then(|text| crate::tls::Fingerprint::parse(text));
                smol::spawn(probe_peer(peer, pin))
            })
            .collect();
        let mut checks = Vec::new();
        for probe in probes {
            checks.push(probe.await);
        }
        checks
    })
}

async fn probe_peer(peer: crate::peers::Peer, pin: Option<crate::tls::Fingerprint>) -> Check {
    let label = format!("{} ({})", peer.name.clone().unwrap_or_else(|| peer.hostname.clone()), peer.endpoint());
    let pinned = pin.is_some();
    let client = Client::pinned(&crate::peer::base_url(&peer.address, peer.port), None, pin)
        .with_timeout(CALL_TIMEOUT)
        .with_body_limit(64 * 1024);
    match client.get::<crate::system::Health>("/api/v1/health").await {
        Ok(health) if !peer.is_provisional() && health.node_id != peer.node_id => Check::warn(
            "Peer",
            format!("{label} answers as another node ({})", health.node_id),
            "loopsy peers remove <node id> and add it again",
        ),
        Ok(_) if pinned => Check::ok("Peer", format!("{label}: reachable, certificate matches the pin")),
        Ok(_) => Check::ok("Peer", format!("{label}: reachable (no pinned certificate)")),
        Err(ClientError::Tls { reason, .. }) if pinned => Check::fail(
            "Peer",
            format!("{label}: the certificate does not match the pin: {reason}"),
            format!("if the peer made a new certificate, pair again: loopsy pair {}", peer.address),
        ),
        Err(e) => Check::warn(
            "Peer",
            format!("{label}: unreachable: {e}"),
            "is its daemon running? (`loopsy peers` shows the last contact)",
        ),
    }
}

/// mDNS needs UDP 5353, shared with other responders (SO_REUSEADDR/SO_REUSEPORT).
fn check_mdns(paths: &Paths, config: &Config) -> Check {
    if !config.discovery.enabled {
        return Check::ok("mDNS", "off (discovery.enabled: false)");
    }
    if let Ok(Daemon::Running(_)) = instance::probe(paths) {
        return Check::ok("mDNS", "on; the daemon holds the mDNS socket");
    }
    match crate::discovery::can_share_mdns_port() {
        Ok(()) => Check::ok("mDNS", "UDP port 5353 can be shared"),
        Err(e) => Check::warn(
            "mDNS",
            format!("cannot bind UDP 5353: {e}"),
            "another responder holds it exclusively, or add peers by hand: loopsy peers add <address>",
        ),
    }
}

fn check_mcp() -> Check {
    use crate::mcp::register::AGENTS;
    let Some(home) = crate::paths::user_home_dir() else {
        return Check::warn("MCP", "cannot find the home directory", "set HOME");
    };
    let present: Vec<_> = AGENTS.into_iter().filter(|a| a.present(&home)).collect();
    if present.is_empty() {
        return Check::warn(
            "MCP",
            "no AI agent found (Claude Code, Gemini CLI, Codex CLI)",
            "install one, then: loopsy mcp add",
        );
    }
    let (registered, missing): (Vec<_>, Vec<_>) = present.iter().partition(|a| a.registered(&home).unwrap_or(false));
    let names = |list: &[&crate::mcp::register::Agent]| list.iter().map(|a| a.label()).collect::<Vec<_>>().join(", ");
    if missing.is_empty() {
        Check::ok("MCP", format!("registered with {}", names(&registered)))
    } else if registered.is_empty() {
        Check::warn("MCP", format!("not registered with {}", names(&missing)), "loopsy mcp add")
    } else {
        Check::warn(
            "MCP",
            format!("registered with {}; not with {}", names(&registered), names(&missing)),
            "loopsy mcp add",
        )
    }
}

fn check_service(paths: &Paths) -> Check {
    let state = match crate::service::state(paths) {
        Ok(state) => state,
        Err(e) => return Check::warn("Service", format!("{e:#}"), "start the daemon by hand: loopsy start"),
    };
    let name = state.manager.name();
    match (state.installed, state.for_this_home) {
        (true, true) => Check::ok("Service", format!("enabled ({name}: {})", state.unit)),
        (true, false) => Check::warn(
            "Service",
            format!("the {name} service runs another data directory ({})", state.unit),
            "loopsy enable (from this data directory) to switch it",
        ),
        (false, _) => Check::warn("Service", "not enabled: the daemon does not start at login", "loopsy enable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::Validity;

    #[test]
    fn certificates_are_judged_by_their_dates() {
        let day = 86_400_000u64;
        let validity = Validity { not_before: 0, not_after: 100 * 86_400 };
        assert_eq!(judge_validity(validity, 10 * day).0, Level::Ok);
        let (level, message) = judge_validity(validity, 80 * day);
        assert_eq!(level, Level::Warn);
        assert!(message.contains("in 20 days"), "{message}");
        let (level, message) = judge_validity(validity, 100 * day);
        assert_eq!(level, Level::Fail);
        assert!(message.contains("expired on 1970-04-11"), "{message}");
        let future = Validity { not_before: 50 * 86_400, not_after: 100 * 86_400 };
        assert_eq!(judge_validity(future, day).0, Level::Fail);
    }
}
