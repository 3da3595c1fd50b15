//! Who may call a route: the keyring, `Bearer` authentication, dashboard sessions and rate
//! limits.
//!
//! Every route is mounted with a [`Guard`] that states its access, so exemption from
//! authentication is a property of the matched route, never a prefix test on the raw URL.
//!
//! A request without `Authorization` may instead carry a dashboard session cookie
//! (`dashboard::auth`). It is accepted only when its `Host` names this machine and its `Origin`
//! (when the browser sends one) is the daemon's own (DNS rebinding, weakness A2), and a request
//! that changes something must also carry `X-Loopsy-Dashboard: 1`, a header no other site can
//! make a browser send without a CORS preflight, which this daemon never grants (CSRF).

use std::sync::{Arc, RwLock};
use std::time::Instant;

use tide::{Middleware, Next, Request};

use super::error::{ApiError, ErrorCode};
use super::rate_limit::Category;
use super::state::State;
use crate::config::Auth;
use crate::dashboard::origin;
use crate::random::constant_time_eq;

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// This node's own key: the local CLI, MCP server, dashboard.
    Own,
    /// A key from `auth.allowedKeys`, by the name it is listed under.
    Peer(String),
    /// A browser logged in to the dashboard (`loopsy dashboard`); acts for the owner.
    Dashboard,
}

impl Caller {
    /// The name in the audit log and the rate limiter: `own` or `peer:<name>`.
    pub fn label(&self) -> String {
        match self {
            Caller::Own => "own".into(),
            Caller::Peer(name) => format!("peer:{name}"),
            Caller::Dashboard => "dashboard".into(),
        }
    }
}

/// The accepted keys; replaced whole when the config changes (no restart needed).
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Arc<RwLock<Vec<(Caller, String)>>>,
}

impl Keyring {
    pub fn new(auth: &Auth) -> Keyring {
        let keyring = Keyring::default();
        keyring.replace(auth);
        keyring
    }

    /// Takes the keys of `auth`; empty keys are never accepted.
    pub fn replace(&self, auth: &Auth) {
        let mut keys = vec![(Caller::Own, auth.api_key.clone())];
        keys.extend(auth.allowed_keys.iter().map(|(name, key)| (Caller::Peer(name.clone()), key.clone())));
        keys.retain(|(_, key)| !key.is_empty());
        *self.keys.write().expect("keyring lock") = keys;
    }

    /// The caller whose key this is. Every stored key is compared, in constant time each, so the
    /// time taken does not tell which key (if any) matched.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let keys = self.keys.read().expect("keyring lock");
        let mut found = None;
        for (caller, key) in keys.iter() {
            if constant_time_eq(key.as_bytes(), presented.as_bytes()) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        found
    }
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key needed (`/health`, the OpenAPI document).
    Public,
    /// The node's key, an allowed peer key or a dashboard session.
    Key,
    /// The node's own key or a dashboard session, not a peer's key: routes that act with the
    /// credentials this node holds for others (the dashboard's proxy and aggregates).
    Owner,
    /// The node's own key, from a loopback address only (pairing control, local administration).
    Local,
}

/// Route middleware: authenticate, then rate-limit, then run the endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    pub access: Access,
    pub limit: Option<Category>,
}

/// The key of an `Authorization: Bearer <key>` header. A bare key without the scheme is
/// refused (1.0.21 accepted it, see weakness A8).
pub fn bearer_key(header: Option<&str>) -> Result<&str, ApiError> {
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

fn authenticate(req: &Request<State>) -> Result<Caller, ApiError> {
    let header = req.header("Authorization").map(|values| values.last().as_str());
    let key = bearer_key(header)?;
    req.state().keyring.authenticate(key).ok_or_else(|| ApiError::new(ErrorCode::AuthInvalidKey, "Invalid API key"))
}

/// A bearer key, or else a dashboard session cookie.
fn authenticate_any(req: &Request<State>) -> Result<Caller, ApiError> {
    if req.header("Authorization").is_none() {
        let name = origin::cookie_name(req.state().node.port);
        let cookies = req.header("Cookie").map(|values| values.iter().map(|v| v.as_str()).collect::<Vec<_>>());
        let session = cookies.unwrap_or_default().into_iter().find_map(|header| origin::find_cookie(header, &name));
        if let Some(session) = session {
            return dashboard_session(req, session);
        }
    }
    authenticate(req)
}

/// The checks on a request carrying a dashboard session cookie.
fn dashboard_session(req: &Request<State>, session: &str) -> Result<Caller, ApiError> {
    let refuse = |message: &str| Err(ApiError::new(ErrorCode::AuthInvalidKey, message));
    check_browser_host(req)?;
    let host = req.header("Host").map(|v| v.last().as_str()).unwrap_or_default();
    if let Some(origin) = req.header("Origin").map(|v| v.last().as_str()) {
        if !origin::origin_matches(origin, req.state().tls.is_on(), host) {
            return refuse("dashboard requests must come from the dashboard's own origin");
        }
    }
    let safe = matches!(req.method(), tide::http::Method::Get | tide::http::Method::Head);
    let marked = req.header("X-Loopsy-Dashboard").is_some_and(|v| v.last().as_str() == "1");
    if !safe && !marked {
        return refuse("dashboard requests that change something need the header X-Loopsy-Dashboard: 1");
    }
    if !req.state().logins.check(session, crate::clock::now_ms()) {
        return Err(ApiError::new(
            ErrorCode::AuthMissingKey,
            "the dashboard session has expired or the daemon restarted; run `loopsy dashboard` again",
        ));
    }
    Ok(Caller::Dashboard)
}

/// Refuses a browser request whose `Host` does not name this machine (DNS rebinding).
pub fn check_browser_host(req: &Request<State>) -> Result<(), ApiError> {
    let host = req.header("Host").map(|v| v.last().as_str()).unwrap_or_default();
    if req.state().host_names.allows(host, crate::netif::local_addresses) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::AuthInvalidKey, "the Host header does not name this daemon"))
    }
}

/// Only this node's own key, presented from this machine.
fn local_owner(req: &Request<State>, caller: Caller) -> Result<Caller, ApiError> {
    let loopback = req
        .peer_addr()
        .and_then(|addr| addr.parse::<std::net::SocketAddr>().ok())
        .is_some_and(|addr| addr.ip().is_loopback());
    if caller == Caller::Own && loopback {
        Ok(caller)
    } else {
        Err(ApiError::new(
            ErrorCode::AuthInvalidKey,
            "this route is only for the local owner (own key, from this machine)",
        ))
    }
}

/// Only this node's own key or its dashboard.
fn owner(caller: Caller) -> Result<Caller, ApiError> {
    match caller {
        Caller::Own | Caller::Dashboard => Ok(caller),
        Caller::Peer(_) => {
            Err(ApiError::new(ErrorCode::AuthInvalidKey, "this route is for this node's owner, not for peers"))
        }
    }
}

#[async_trait::async_trait]
impl Middleware<State> for Guard {
    async fn handle(&self, mut req: Request<State>, next: Next<'_, State>) -> tide::Result {
        let caller = match self.access {
            Access::Public => None,
            Access::Key => match authenticate_any(&req) {
                Ok(caller) => Some(caller),
                Err(err) => return Ok(err.into_response()),
            },
            Access::Owner => match authenticate_any(&req).and_then(owner) {
                Ok(caller) => Some(caller),
                Err(err) => return Ok(err.into_response()),
            },
            Access::Local => match authenticate(&req).and_then(|caller| local_owner(&req, caller)) {
                Ok(caller) => Some(caller),
                Err(err) => return Ok(err.into_response()),
            },
        };
        if let (Some(category), Some(caller)) = (self.limit, &caller) {
            if let Err(refusal) = req.state().limiter.check(&caller.label(), category, Instant::now()) {
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

    #[test]
    fn the_keyring_names_the_caller_and_never_accepts_an_empty_key() {
        let auth = Auth {
            api_key: "own-key-0123456789".into(),
            allowed_keys: BTreeMap::from([("bob".into(), "bob-key-0123456789".into()), ("eve".into(), String::new())]),
            peer_keys: BTreeMap::new(),
        };
        let keyring = Keyring::new(&auth);
        assert_eq!(keyring.authenticate("own-key-0123456789"), Some(Caller::Own));
        assert_eq!(keyring.authenticate("bob-key-0123456789"), Some(Caller::Peer("bob".into())));
        assert_eq!(keyring.authenticate(""), None);
        assert_eq!(keyring.authenticate("own-key-012345678"), None);
    }
}
