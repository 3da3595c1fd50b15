//! Who may call a route: the caller classes, the keyring, `Bearer` authentication, dashboard
//! sessions and rate limits.
//!
//! Every route is mounted with a [`Guard`] that states its [`Access`], so who may use it is a
//! property of the matched route, never a prefix test on the raw URL. A request is first
//! identified as a [`Caller`] (one of the classes of ARCHITECTURE.md's trust table), then the
//! route's `Access` says whether that class may use it (`Access::grant`); a unit test checks
//! every mounted route against that table.
//!
//! A request without `Authorization` may instead carry a dashboard session cookie
//! (`dashboard::auth`). It is accepted only when its `Host` names this machine and its `Origin`
//! (when the browser sends one) is the daemon's own (DNS rebinding, weakness A2), and a request
//! that changes something must also carry `X-Loopsy-Dashboard: 1`, a header no other site can
//! make a browser send without a CORS preflight, which this daemon never grants (CSRF).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tide::{Middleware, Next, Request};

use super::error::{ApiError, ErrorCode};
use super::listener::Connection;
use super::rate_limit::Category;
use super::state::State;
use crate::config::Config;
use crate::dashboard::origin;
use crate::random::constant_time_eq;

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// This node's own key from a loopback address: the local CLI, MCP server, sessions.
    Owner,
    /// A browser logged in to the dashboard (`loopsy dashboard`); acts for the owner.
    Dashboard,
    /// The key this node minted for a peer at pairing, presented over TLS; by the name the
    /// peer is listed under.
    Paired(String),
    /// A key in `auth.allowedKeys` that pairing did not mint (1.0.21 style), by its name.
    Legacy(String),
    /// This node's own key presented from another address (1.0.21's `connect` habit of sharing
    /// one key): a legacy peer that has no name of its own.
    OwnKeyRemote,
}

/// The classes of callers, as the columns of ARCHITECTURE.md's access table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    /// The owner at this machine: its own key from a loopback address.
    OwnerKey,
    /// The owner through the dashboard's session cookie.
    OwnerDashboard,
    /// A peer with the key minted for it at pairing, over TLS.
    Paired,
    /// A peer with a 1.0.21-style key, or this node's own key from another address.
    Legacy,
    /// Anyone, without credentials.
    Anyone,
}

impl Class {
    #[cfg(test)]
    pub(crate) const ALL: [Class; 5] =
        [Class::OwnerKey, Class::OwnerDashboard, Class::Paired, Class::Legacy, Class::Anyone];

    /// The column heading in ARCHITECTURE.md.
    #[cfg(test)]
    pub(crate) fn heading(self) -> &'static str {
        match self {
            Class::OwnerKey => "Owner (own key, loopback)",
            Class::OwnerDashboard => "Owner (dashboard cookie)",
            Class::Paired => "Paired peer",
            Class::Legacy => "Legacy peer",
            Class::Anyone => "Anyone",
        }
    }
}

impl Caller {
    pub(crate) fn class(&self) -> Class {
        match self {
            Caller::Owner => Class::OwnerKey,
            Caller::Dashboard => Class::OwnerDashboard,
            Caller::Paired(_) => Class::Paired,
            Caller::Legacy(_) | Caller::OwnKeyRemote => Class::Legacy,
        }
    }

    /// The owner, by either of its credentials.
    pub(crate) fn is_owner(&self) -> bool {
        matches!(self, Caller::Owner | Caller::Dashboard)
    }

    /// The name in the audit log and the rate limiter: `own`, `dashboard`, `paired:<name>`,
    /// `peer:<name>` (a legacy key) or `own-remote`.
    pub(crate) fn label(&self) -> String {
        match self {
            Caller::Owner => "own".into(),
            Caller::Dashboard => "dashboard".into(),
            Caller::Paired(name) => format!("paired:{name}"),
            Caller::Legacy(name) => format!("peer:{name}"),
            Caller::OwnKeyRemote => "own-remote".into(),
        }
    }
}

/// A key the keyring accepts, before the connection is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    Own,
    /// `auth.allowedKeys[name]`; `paired` when pairing minted it.
    Peer {
        name: String,
        paired: bool,
    },
}

/// The accepted keys; replaced whole when the config changes (no restart needed).
#[derive(Clone, Default)]
pub(crate) struct Keyring {
    keys: Arc<RwLock<Vec<(Holder, String)>>>,
}

impl Keyring {
    pub(crate) fn new(config: &Config) -> Keyring {
        let keyring = Keyring::default();
        keyring.replace(config);
        keyring
    }

    /// Takes the keys of `config`; empty keys are never accepted.
    ///
    /// A key in `auth.allowedKeys[name]` was minted by pairing when the same name also has the
    /// key we present (`auth.peerKeys`) and a certificate pin (`tls.pinnedCerts`): pairing
    /// writes the three together and nothing else writes `peerKeys`. 1.0.21's pairing wrote a
    /// pin but no `peerKeys`, and `loopsy peers add --key` only `allowedKeys`: both are legacy.
    pub(crate) fn replace(&self, config: &Config) {
        let auth = &config.auth;
        let mut keys = vec![(Holder::Own, auth.api_key.clone())];
        keys.extend(auth.allowed_keys.iter().map(|(name, key)| {
            let paired = auth.peer_keys.contains_key(name) && config.tls.pinned_certs.contains_key(name);
            (Holder::Peer { name: name.clone(), paired }, key.clone())
        }));
        keys.retain(|(_, key)| !key.is_empty());
        *self.keys.write().expect("keyring lock") = keys;
    }

    /// This node's current key (it changes when the owner rotates it).
    pub(crate) fn own_key(&self) -> String {
        let keys = self.keys.read().expect("keyring lock");
        keys.iter().find(|(holder, _)| *holder == Holder::Own).map(|(_, key)| key.clone()).unwrap_or_default()
    }

    /// Whose key this is. Every stored key is compared, in constant time each, so the time
    /// taken does not tell which key (if any) matched.
    fn authenticate(&self, presented: &str) -> Option<Holder> {
        let keys = self.keys.read().expect("keyring lock");
        let mut found = None;
        for (holder, key) in keys.iter() {
            if constant_time_eq(key.as_bytes(), presented.as_bytes()) && found.is_none() {
                found = Some(holder.clone());
            }
        }
        found
    }

    /// The caller presenting `presented` over `connection` from `source`.
    fn identify(&self, presented: &str, connection: Connection, source: Option<IpAddr>) -> Result<Caller, ApiError> {
        match self.authenticate(presented) {
            None => Err(ApiError::new(ErrorCode::AuthInvalidKey, "Invalid API key")),
            Some(Holder::Own) if source.is_some_and(is_loopback) => Ok(Caller::Owner),
            Some(Holder::Own) => Ok(Caller::OwnKeyRemote),
            // Our own clients only ever send it over TLS pinned to this node's certificate; over
            // plain HTTP it was sent by something else, and may have been read on the way.
            Some(Holder::Peer { name, paired: true }) if !connection.tls => Err(ApiError::new(
                ErrorCode::AuthInvalidKey,
                format!("the key of paired peer '{name}' is accepted only over TLS"),
            )),
            Some(Holder::Peer { name, paired: true }) => Ok(Caller::Paired(name)),
            Some(Holder::Peer { name, paired: false }) => Ok(Caller::Legacy(name)),
        }
    }
}

/// Whether `ip` is this machine's loopback, IPv4-mapped IPv6 (`::ffff:127.0.0.1`) included.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The source address of a request's connection.
pub(crate) fn source_ip(req: &Request<State>) -> Option<IpAddr> {
    req.peer_addr().and_then(|addr| addr.parse::<SocketAddr>().ok()).map(|addr| addr.ip().to_canonical())
}

/// Whether a class may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    Yes,
    No,
    /// Only while a config switch is on.
    If(Switch),
}

/// A config switch that lets a class use routes it otherwise may not (for example
/// `terminals.allowLegacyPeers` admitting legacy peers to terminals). Add a variant, its
/// config key in [`Switch::key`] (the text of the ARCHITECTURE.md cell: ``if `key` ``) and its
/// value in [`Switch::is_on`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Switch {
    /// `terminals.allowLegacyPeers`: legacy peers may use terminals.
    LegacyTerminals,
}

impl Switch {
    #[cfg(test)]
    pub(crate) fn key(self) -> &'static str {
        match self {
            Switch::LegacyTerminals => "terminals.allowLegacyPeers",
        }
    }

    pub(crate) fn is_on(self, config: &Config) -> bool {
        match self {
            Switch::LegacyTerminals => config.terminals.allow_legacy_peers,
        }
    }
}

/// Who may use a route: one row of ARCHITECTURE.md's access table. Every route declares one
/// when it is mounted ([`super::routes::Mount::route`]); a new kind of access is a new variant,
/// a row in that table and its arm in [`Access::grant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone, no key: health, the OpenAPI document, the dashboard's files and the messages of
    /// the pairing protocol (each listed in the table).
    Public,
    /// The owner and every peer: remote execution, transfer, context, AI tasks (each peer only
    /// its own), the peer list and the handshake (each peer only its own entry).
    DataPlane,
    /// The owner only, by either credential: what changes this node's registry, messages and
    /// config, and what acts with the credentials this node holds for others (dashboard proxy).
    Owner,
    /// The owner's own key from a loopback address only, not the dashboard's cookie: pairing
    /// control and minting dashboard logins.
    Local,
    /// Interactive terminals: the owner and paired peers; legacy peers only while
    /// `terminals.allowLegacyPeers` is on.
    Terminal,
}

impl Access {
    #[cfg(test)]
    pub(crate) const ALL: [Access; 5] =
        [Access::Public, Access::DataPlane, Access::Owner, Access::Local, Access::Terminal];

    /// The row name in ARCHITECTURE.md.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Access::Public => "Public",
            Access::DataPlane => "DataPlane",
            Access::Owner => "Owner",
            Access::Local => "Local",
            Access::Terminal => "Terminal",
        }
    }

    /// Whether `class` may use a route with this access.
    pub(crate) fn grant(self, class: Class) -> Grant {
        use Class::*;
        if self == Access::Terminal && class == Legacy {
            return Grant::If(Switch::LegacyTerminals);
        }
        let yes = match self {
            Access::Public => true,
            Access::DataPlane => matches!(class, OwnerKey | OwnerDashboard | Paired | Legacy),
            Access::Owner => matches!(class, OwnerKey | OwnerDashboard),
            Access::Local => class == OwnerKey,
            Access::Terminal => matches!(class, OwnerKey | OwnerDashboard | Paired),
        };
        if yes {
            Grant::Yes
        } else {
            Grant::No
        }
    }

    fn admits(self, class: Class, config: &Config) -> bool {
        match self.grant(class) {
            Grant::Yes => true,
            Grant::No => false,
            Grant::If(switch) => switch.is_on(config),
        }
    }

    fn refusal(self, caller: &Caller) -> ApiError {
        let who = match caller {
            Caller::Owner => "the owner".to_string(),
            Caller::Dashboard => "the dashboard".to_string(),
            Caller::Paired(name) => format!("paired peer '{name}'"),
            Caller::Legacy(name) => format!("legacy peer key '{name}'"),
            Caller::OwnKeyRemote => "this node's own key from another machine (a legacy peer)".to_string(),
        };
        let message = match self {
            Access::Owner => {
                format!("this route is for this node's owner (its own key from this machine, or the dashboard), not for {who}")
            }
            Access::Local => {
                format!("this route is for the local owner (its own key, from this machine), not for {who}")
            }
            Access::Terminal => format!(
                "terminals are for this node's owner and paired peers, not for {who} (pair with `loopsy pair`, \
                 or set terminals.allowLegacyPeers)"
            ),
            Access::Public | Access::DataPlane => format!("this route is not for {who}"),
        };
        ApiError::new(ErrorCode::Forbidden, message)
    }
}

/// Route middleware: authenticate, check the route's access, rate-limit, run the endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guard {
    pub access: Access,
    pub limit: Option<Category>,
}

/// The key of an `Authorization: Bearer <key>` header. A bare key without the scheme is
/// refused (1.0.21 accepted it, see weakness A8).
pub(crate) fn bearer_key(header: Option<&str>) -> Result<&str, ApiError> {
    let Some(value) = header.map(str::trim).filter(|v| !v.is_empty()) else {
        return Err(ApiError::new(ErrorCode::AuthMissingKey, "Missing Authorization header"));
    };
    let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::new(ErrorCode::AuthMissingKey, "Authorization header must have the form 'Bearer <key>'"));
    }
    let key = rest.trim();
    if key.is_empty() {
        return Err(ApiError::new(ErrorCode::AuthMissingKey, "Missing API key after 'Bearer'"));
    }
    Ok(key)
}

/// A bearer key, or else a dashboard session cookie.
fn identify(req: &Request<State>) -> Result<Caller, ApiError> {
    if req.header("Authorization").is_none() {
        let name = origin::cookie_name(req.state().node.port);
        let cookies = req.header("Cookie").map(|values| values.iter().map(|v| v.as_str()).collect::<Vec<_>>());
        let session = cookies.unwrap_or_default().into_iter().find_map(|header| origin::find_cookie(header, &name));
        if let Some(session) = session {
            return dashboard_session(req, session);
        }
    }
    let header = req.header("Authorization").map(|values| values.last().as_str());
    let key = bearer_key(header)?;
    req.state().gate.keyring.identify(key, connection(req), source_ip(req))
}

/// How the request's connection arrived (plain when the listener did not say, as in tests that
/// call the app directly).
pub(crate) fn connection(req: &Request<State>) -> Connection {
    req.ext::<Connection>().copied().unwrap_or(Connection { tls: false })
}

/// The checks on a request carrying a dashboard session cookie.
fn dashboard_session(req: &Request<State>, session: &str) -> Result<Caller, ApiError> {
    let refuse = |message: &str| Err(ApiError::new(ErrorCode::AuthInvalidKey, message));
    check_browser_host(req)?;
    let host = req.header("Host").map(|v| v.last().as_str()).unwrap_or_default();
    if let Some(origin) = req.header("Origin").map(|v| v.last().as_str()) {
        if !origin::origin_matches(origin, connection(req).tls, host) {
            return refuse("dashboard requests must come from the dashboard's own origin");
        }
    }
    let safe = matches!(req.method(), tide::http::Method::Get | tide::http::Method::Head);
    let marked = req.header("X-Loopsy-Dashboard").is_some_and(|v| v.last().as_str() == "1");
    if !safe && !marked {
        return refuse("dashboard requests that change something need the header X-Loopsy-Dashboard: 1");
    }
    if !req.state().gate.logins.check(session, crate::clock::now_ms()) {
        return Err(ApiError::new(
            ErrorCode::AuthMissingKey,
            "the dashboard session has expired or the daemon restarted; run `loopsy dashboard` again",
        ));
    }
    Ok(Caller::Dashboard)
}

/// Refuses a browser request whose `Host` does not name this machine (DNS rebinding).
pub(crate) fn check_browser_host(req: &Request<State>) -> Result<(), ApiError> {
    let host = req.header("Host").map(|v| v.last().as_str()).unwrap_or_default();
    if req.state().gate.host_names.allows(host, crate::netif::local_addresses) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::AuthInvalidKey, "the Host header does not name this daemon"))
    }
}

/// The caller of a request that passed a guard; `None` only on `Access::Public` routes.
pub(crate) fn caller(req: &Request<State>) -> Option<&Caller> {
    req.ext::<Caller>()
}

/// Who is asking, with the failed-authentication limit of the source address applied: an
/// address (not loopback: the owner is never locked out of its own daemon by a local process)
/// that sent too many wrong keys gets 429 before its key is looked at.
fn identify_limited(req: &Request<State>) -> Result<Caller, ApiError> {
    let source = source_ip(req).filter(|ip| !is_loopback(*ip));
    let limiter = &req.state().gate.limiter;
    if let Some(source) = source {
        if let Err(refusal) = limiter.check_source(source, Instant::now()) {
            let message = format!(
                "too many failed authentications from {source}: at most {} per minute; retry in {} s",
                refusal.per_minute, refusal.retry_after_secs
            );
            return Err(ApiError::new(ErrorCode::RateLimited, message).with_retry_after(refusal.retry_after_secs));
        }
    }
    let identified = identify(req);
    if let (Err(err), Some(source)) = (&identified, source) {
        if err.code() == Some(ErrorCode::AuthInvalidKey) {
            limiter.failed_auth(source, Instant::now());
        }
    }
    identified
}

#[async_trait::async_trait]
impl Middleware<State> for Guard {
    async fn handle(&self, mut req: Request<State>, next: Next<'_, State>) -> tide::Result {
        let caller = if self.access.grant(Class::Anyone) == Grant::Yes {
            None
        } else {
            let caller = match identify_limited(&req) {
                Ok(caller) => caller,
                Err(err) => return Ok(err.into_response()),
            };
            if !self.access.admits(caller.class(), &req.state().config) {
                let mut res = self.access.refusal(&caller).into_response();
                res.insert_ext(caller);
                return Ok(res);
            }
            Some(caller)
        };
        // Rate limits are for peers; the owner is not limited by them.
        let limited = caller.as_ref().filter(|caller| !caller.is_owner());
        if let (Some(category), Some(caller)) = (self.limit, limited) {
            if let Err(refusal) = req.state().gate.limiter.check(&caller.label(), category, Instant::now()) {
                let message = format!(
                    "Rate limit exceeded: {} {} requests per minute; retry in {} s",
                    refusal.per_minute,
                    category.name(),
                    refusal.retry_after_secs
                );
                let err = ApiError::new(ErrorCode::RateLimited, message).with_retry_after(refusal.retry_after_secs);
                let mut res = err.into_response();
                res.insert_ext(caller.clone());
                return Ok(res);
            }
        }
        if let Some(caller) = &caller {
            req.set_ext(caller.clone());
        }
        let mut res = next.run(req).await;
        if let Some(caller) = caller {
            res.insert_ext(caller);
        }
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn bearer_keys_are_parsed_strictly() {
        assert_eq!(bearer_key(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_key(Some("bearer   abc ")).unwrap(), "abc");
        for bad in [None, Some(""), Some("abc"), Some("Bearer "), Some("Basic abc")] {
            assert_eq!(bearer_key(bad).unwrap_err().code(), Some(ErrorCode::AuthMissingKey), "{bad:?}");
        }
    }

    fn keyring() -> Keyring {
        let mut config = Config::new_with_key("own-key-0123456789".into());
        config.auth.allowed_keys = BTreeMap::from([
            ("bob".into(), "bob-key-0123456789".into()),
            ("eve".into(), String::new()),
            ("carol".into(), "carol-key-0123456789".into()),
            // 1.0.21's pairing wrote a pin but no key of ours for the peer: still legacy.
            ("dave".into(), "dave-key-0123456789".into()),
        ]);
        config.auth.peer_keys.insert("carol".into(), "to-carol-0123456789".into());
        config.tls.pinned_certs.insert("carol".into(), "c".repeat(64));
        config.tls.pinned_certs.insert("dave".into(), "d".repeat(64));
        Keyring::new(&config)
    }

    #[track_caller]
    fn check(key: &str, tls: bool, source: &str, expect: Result<Caller, ErrorCode>) {
        let source: IpAddr = source.parse().unwrap();
        let found = keyring().identify(key, Connection { tls }, Some(source)).map_err(|e| e.code().unwrap());
        assert_eq!(found, expect, "{key} tls={tls} from {source}");
    }

    #[test]
    fn the_keyring_tells_the_caller_class_from_the_key_the_address_and_the_transport() {
        use Caller::*;
        check("own-key-0123456789", false, "127.0.0.1", Ok(Owner));
        check("own-key-0123456789", true, "::1", Ok(Owner));
        check("own-key-0123456789", false, "::ffff:127.0.0.1", Ok(Owner));
        check("own-key-0123456789", false, "127.0.0.2", Ok(Owner));
        check("own-key-0123456789", true, "10.0.0.7", Ok(OwnKeyRemote));
        check("own-key-0123456789", false, "::ffff:10.0.0.7", Ok(OwnKeyRemote));
        check("bob-key-0123456789", false, "10.0.0.7", Ok(Legacy("bob".into())));
        check("bob-key-0123456789", true, "127.0.0.1", Ok(Legacy("bob".into())));
        check("dave-key-0123456789", true, "10.0.0.7", Ok(Legacy("dave".into())));
        check("carol-key-0123456789", true, "10.0.0.7", Ok(Paired("carol".into())));
        check("carol-key-0123456789", false, "10.0.0.7", Err(ErrorCode::AuthInvalidKey));
        check("carol-key-0123456789", false, "127.0.0.1", Err(ErrorCode::AuthInvalidKey));
        check("to-carol-0123456789", true, "10.0.0.7", Err(ErrorCode::AuthInvalidKey));
        check("", true, "127.0.0.1", Err(ErrorCode::AuthInvalidKey));
        check("own-key-012345678", true, "127.0.0.1", Err(ErrorCode::AuthInvalidKey));
        assert_eq!(keyring().own_key(), "own-key-0123456789");
    }

    #[test]
    fn ipv4_mapped_loopback_is_loopback() {
        for yes in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(yes.parse().unwrap()), "{yes}");
        }
        for no in ["10.0.0.1", "::ffff:10.0.0.1", "0.0.0.0", "::", "fe80::1"] {
            assert!(!is_loopback(no.parse().unwrap()), "{no}");
        }
    }
}
