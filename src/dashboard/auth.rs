//! Dashboard logins: one-time tokens that become browser sessions, both kept in memory only.
//!
//! `loopsy dashboard` asks the daemon (own key, from this machine) for a token; the browser
//! trades it once for a session id carried in an HttpOnly cookie. Only SHA-256 digests of
//! tokens and session ids are stored, so neither a lookup's timing nor a memory dump gives out
//! a usable secret. A restart forgets every session: the browser has to log in again.
//! Pure logic with the time passed in; the cookie and header rules live in `daemon::guard`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// How long a login token may wait for its browser.
pub(crate) const TOKEN_TTL_MS: u64 = 60_000;
/// How long a browser session lasts (absolute, not sliding).
pub(crate) const SESSION_TTL_MS: u64 = 12 * 3600 * 1000;
/// Bounds on what is kept: the oldest entry makes room for a new one.
const MAX_TOKENS: usize = 32;
const MAX_SESSIONS: usize = 64;

type Digest32 = [u8; 32];

/// Tokens waiting for a browser and live browser sessions; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Logins {
    inner: Arc<Mutex<Tables>>,
}

#[derive(Default)]
struct Tables {
    /// Token digest → expiry (Unix ms).
    tokens: HashMap<Digest32, u64>,
    /// Session digest → expiry (Unix ms).
    sessions: HashMap<Digest32, u64>,
}

/// A new login token and when it stops working.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub secret: String,
    pub expires_at: u64,
}

/// A browser session created from a token.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub secret: String,
}

impl Logins {
    /// Mints a single-use login token.
    pub(crate) fn issue_token(&self, now: u64) -> Token {
        let secret = crate::random::hex(32);
        let expires_at = now + TOKEN_TTL_MS;
        let mut tables = self.inner.lock().expect("logins lock");
        tables.tokens.retain(|_, expiry| *expiry > now);
        make_room(&mut tables.tokens, MAX_TOKENS);
        tables.tokens.insert(digest(&secret), expires_at);
        Token { secret, expires_at }
    }

    /// Consumes `token` (whatever the outcome, it never works twice) and opens a session.
    pub(crate) fn redeem(&self, token: &str, now: u64) -> Option<Session> {
        let mut tables = self.inner.lock().expect("logins lock");
        let expiry = tables.tokens.remove(&digest(token))?;
        if expiry <= now {
            return None;
        }
        tables.sessions.retain(|_, expiry| *expiry > now);
        make_room(&mut tables.sessions, MAX_SESSIONS);
        let secret = crate::random::hex(32);
        let expires_at = now + SESSION_TTL_MS;
        tables.sessions.insert(digest(&secret), expires_at);
        Some(Session { secret })
    }

    /// Whether `session` is a live session.
    pub(crate) fn check(&self, session: &str, now: u64) -> bool {
        let tables = self.inner.lock().expect("logins lock");
        tables.sessions.get(&digest(session)).is_some_and(|expiry| *expiry > now)
    }

    /// Ends `session` (log out).
    pub(crate) fn end(&self, session: &str) {
        self.inner.lock().expect("logins lock").sessions.remove(&digest(session));
    }
}

fn digest(secret: &str) -> Digest32 {
    Sha256::digest(secret.as_bytes()).into()
}

/// Drops the entries that expire first until there is room for one more.
fn make_room(table: &mut HashMap<Digest32, u64>, max: usize) {
    while table.len() >= max {
        let Some(first) = table.iter().min_by_key(|(_, expiry)| **expiry).map(|(k, _)| *k) else { return };
        table.remove(&first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_one_session_and_only_once() {
        let logins = Logins::default();
        let token = logins.issue_token(1_000);
        assert_eq!(token.expires_at, 1_000 + TOKEN_TTL_MS);
        let session = logins.redeem(&token.secret, 2_000).expect("fresh token");
        assert!(logins.check(&session.secret, 3_000));
        assert!(logins.redeem(&token.secret, 2_001).is_none(), "single use");
        assert!(!logins.check(&token.secret, 3_000), "a token is not a session");
        assert!(!logins.check("", 3_000));
    }

    #[test]
    fn tokens_and_sessions_expire() {
        let logins = Logins::default();
        let token = logins.issue_token(0);
        assert!(logins.redeem(&token.secret, TOKEN_TTL_MS).is_none(), "expired token");
        assert!(logins.redeem(&token.secret, 1).is_none(), "and it is gone");
        let token = logins.issue_token(0);
        let session = logins.redeem(&token.secret, 0).unwrap();
        assert!(logins.check(&session.secret, SESSION_TTL_MS - 1));
        assert!(!logins.check(&session.secret, SESSION_TTL_MS));
    }

    #[test]
    fn a_session_can_be_ended_and_memory_stays_bounded() {
        let logins = Logins::default();
        let sessions: Vec<Session> =
            (0..100).map(|i| logins.redeem(&logins.issue_token(i).secret, i).unwrap()).collect();
        assert!(!logins.check(&sessions[0].secret, 200), "the oldest made room");
        assert!(logins.check(&sessions[99].secret, 200));
        logins.end(&sessions[99].secret);
        assert!(!logins.check(&sessions[99].secret, 200));
        let tables = logins.inner.lock().unwrap();
        assert!(tables.sessions.len() <= MAX_SESSIONS && tables.tokens.len() <= MAX_TOKENS);
    }
}
