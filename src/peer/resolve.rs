//! Turning a `<peer>` argument into a daemon to talk to.
//!
//! Accepted today: `local` (this machine's daemon) and `address[:port]` (IPv4, a host name, or
//! an IPv6 literal in brackets). The peer registry adds names, hostnames and node-id prefixes.

use crate::config::{Config, DEFAULT_PORT};
use crate::paths::Paths;

use super::{Client, ClientError};

/// A daemon chosen by the user.
#[derive(Debug)]
pub struct Target {
    pub client: Client,
    /// How to name it in messages: `local` or `host:port`.
    pub label: String,
}

/// A parsed `<peer>` argument.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerSpec {
    Local,
    Address { host: String, port: u16 },
}

/// Parses `local`, `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal.
pub fn parse(spec: &str) -> Result<PeerSpec, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("the peer is empty".into());
    }
    if matches!(spec, "local" | "self") {
        return Ok(PeerSpec::Local);
    }
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("'{spec}': missing ']'"))?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(format!("'{spec}': unexpected text after ']'")),
        };
        (host.to_string(), port)
    } else if spec.matches(':').count() > 1 {
        (spec.to_string(), None) // a bare IPv6 literal
    } else {
        match spec.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (spec.to_string(), None),
        }
    };
    let port = match port {
        Some(text) => {
            text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("'{spec}': bad port '{text}'"))?
        }
        None => DEFAULT_PORT,
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!("'{spec}' is not an address"));
    }
    Ok(PeerSpec::Address { host, port })
}

/// The base URL of `host:port`, bracketing IPv6 literals.
pub fn base_url(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

/// Resolves `spec` to a client. `key` overrides the key sent (default: this node's own key).
pub fn resolve(paths: &Paths, config: &Config, spec: &str, key: Option<&str>) -> anyhow::Result<Target> {
    let key = key.unwrap_or(&config.auth.api_key).to_string();
    match parse(spec).map_err(|e| anyhow::anyhow!("unknown peer {e}"))? {
        PeerSpec::Local => {
            let client = Client::local(paths, &key).map_err(|e: ClientError| anyhow::anyhow!(e))?;
            Ok(Target { client, label: "local".into() })
        }
        PeerSpec::Address { host, port } => {
            let label = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
            Ok(Target { client: Client::new(&base_url(&host, port), Some(key)), label })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(spec: &str, expect: Result<PeerSpec, &str>) {
        let got = parse(spec);
        match expect {
            Ok(spec) => assert_eq!(got, Ok(spec)),
            Err(text) => assert!(got.as_ref().unwrap_err().contains(text), "{got:?}"),
        }
    }

    fn addr(host: &str, port: u16) -> Result<PeerSpec, &'static str> {
        Ok(PeerSpec::Address { host: host.into(), port })
    }

    #[test]
    fn peer_arguments() {
        check("local", Ok(PeerSpec::Local));
        check("10.0.0.2", addr("10.0.0.2", 19532));
        check("10.0.0.2:19533", addr("10.0.0.2", 19533));
        check("box.lan:8080", addr("box.lan", 8080));
        check("[fe80::1]:9", addr("fe80::1", 9));
        check("[::1]", addr("::1", 19532));
        check("fe80::1", addr("fe80::1", 19532));
        check("host:0", Err("bad port"));
        check("host:x", Err("bad port"));
        check("", Err("empty"));
        check("a b", Err("not an address"));
        assert_eq!(base_url("::1", 5), "http://[::1]:5");
    }
}
