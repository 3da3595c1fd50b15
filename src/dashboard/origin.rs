//! Which browser requests may use a dashboard session: `Host`, `Origin` and cookie rules.
//!
//! A session cookie is accepted only on a request whose `Host` names this machine (a loopback
//! name or address, the node's hostname, or one of its interface addresses): a page of another
//! site that re-points its DNS name at us (DNS rebinding) sends its own name as `Host`. When the
//! browser says where the request comes from (`Origin`), that must be the daemon's own origin.
//! Pure functions over header values; `daemon::guard` applies them.

use std::net::IpAddr;

/// Cookie names carry the port: cookies are scoped by host, not port, so two daemons on one
/// machine (main and sessions) would otherwise overwrite each other's cookie.
pub(crate) fn cookie_name(port: u16) -> String {
    format!("loopsy_dashboard_{port}")
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`).
pub(crate) fn find_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|pair| pair.trim().split_once('=')).find(|(n, _)| *n == name).map(|(_, v)| v.trim())
}

/// The `Set-Cookie` value of a new session.
pub(crate) fn session_cookie(port: u16, secret: &str, max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{}={secret}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{secure}", cookie_name(port))
}

/// The host names (lowercase) that name this machine, besides loopback names and addresses.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostNames(Vec<String>);

impl HostNames {
    /// `hostname`, its `.local` mDNS form and the OS hostname likewise.
    pub(crate) fn new(names: &[String]) -> HostNames {
        let mut all = Vec::new();
        for name in names.iter().map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase()) {
            if name.is_empty() {
                continue;
            }
            all.push(format!("{name}.local"));
            all.push(name);
        }
        all.sort();
        all.dedup();
        HostNames(all)
    }

    /// Whether a `Host` header names this machine. `addresses` are its interface addresses
    /// (asked only when the header is an address that is not loopback).
    pub(crate) fn allows(&self, host_header: &str, addresses: impl FnOnce() -> Vec<IpAddr>) -> bool {
        let Some(host) = host_part(host_header) else { return false };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return ip.is_loopback() || ip.to_canonical().is_loopback() || addresses().contains(&ip.to_canonical());
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host == "localhost" || host.ends_with(".localhost") || self.0.contains(&host)
    }
}

/// The host of `host[:port]` or `[v6][:port]`; `None` when malformed.
fn host_part(header: &str) -> Option<&str> {
    let header = header.trim();
    let host = if let Some(rest) = header.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        host
    } else {
        match header.split_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return None,
            None => header,
        }
    };
    let ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    ok.then_some(host)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `origin` is this daemon's own origin as reached through `host_header`.
pub(crate) fn origin_matches(origin: &str, tls: bool, host_header: &str) -> bool {
    let scheme = if tls { "https" } else { "http" };
    origin.trim().eq_ignore_ascii_case(&format!("{scheme}://{}", host_header.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(host: &str, allowed: bool) {
        let names = HostNames::new(&["Box".into(), "box-w1".into()]);
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        assert_eq!(names.allows(host, || vec![lan]), allowed, "{host}");
    }

    #[test]
    fn hosts_that_name_this_machine_are_allowed() {
        check("127.0.0.1:19532", true);
        check("127.9.9.9", true);
        check("localhost:19532", true);
        check("LOCALHOST", true);
        check("app.localhost:1", true);
        check("[::1]:19532", true);
        check("box:19532", true);
        check("box.local", true);
        check("box-w1.local.:80", true);
        check("192.168.1.20:19532", true);
    }

    #[test]
    fn foreign_and_malformed_hosts_are_refused() {
        check("evil.example:19532", false);
        check("box.evil.example", false);
        check("localhost.evil.example", false);
        check("192.168.1.21:19532", false);
        check("", false);
        check("127.0.0.1:port", false);
        check("[::1", false);
        check("[::1]x", false);
        check("a b", false);
        check("127.0.0.1@evil", false);
    }

    #[test]
    fn origins_must_be_the_daemons_own() {
        assert!(origin_matches("http://127.0.0.1:19532", false, "127.0.0.1:19532"));
        assert!(origin_matches("https://box:19532", true, "box:19532"));
        assert!(!origin_matches("http://box:19532", true, "box:19532"), "scheme");
        assert!(!origin_matches("http://127.0.0.1:19533", false, "127.0.0.1:19532"), "port");
        assert!(!origin_matches("http://evil.example", false, "127.0.0.1:19532"));
        assert!(!origin_matches("null", false, "127.0.0.1:19532"));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        assert_eq!(find_cookie("a=1; loopsy_dashboard_5=abc ; b=2", "loopsy_dashboard_5"), Some("abc"));
        assert_eq!(find_cookie("loopsy_dashboard_55=abc", "loopsy_dashboard_5"), None);
        assert_eq!(find_cookie("", "x"), None);
        let cookie = session_cookie(5, "s", 60, true);
        assert_eq!(cookie, "loopsy_dashboard_5=s; HttpOnly; SameSite=Strict; Path=/; Max-Age=60; Secure");
    }
}
