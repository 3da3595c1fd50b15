//! The lock table itself: named leases, their holders, expiry and fencing tokens. Pure logic:
//! time comes in as `now` (Unix milliseconds), and every change returns the journal [`Record`]
//! that replays it. No I/O here.
//!
//! Every change (grant, renewal, release) takes the table's next revision, and a grant's
//! fencing token is the revision that granted it. So the tokens of one name increase with every
//! grant, no token is ever given twice (the revision survives restarts in the journal), and a
//! released or expired name needs no memory: the table holds only live grants.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::writer::Sequenced;

/// Most live locks a table holds.
pub(crate) const MAX_LOCKS: usize = 10_000;
/// Longest lock name, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 128;
/// Longest holder, in characters (as JSON Schema counts `maxLength`).
pub(crate) const MAX_HOLDER_CHARS: usize = 256;
/// Shortest and longest TTL, in seconds.
pub(crate) const MIN_TTL_SECS: f64 = 0.1;
pub(crate) const MAX_TTL_SECS: f64 = 86_400.0;
/// Longest a request may wait for a lock, in seconds (the request stays open meanwhile).
pub(crate) const MAX_WAIT_SECS: f64 = 600.0;

/// Version of the record format, written in every base record.
pub(super) const FORMAT: u32 = 1;

/// One live lock: who holds it, with which token, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Grant {
    pub name: String,
    pub holder: String,
    /// The fencing token: the table revision of this grant.
    pub token: u64,
    pub ttl_ms: u64,
    pub acquired_at: u64,
    /// Expired when `expires_at <= now`.
    pub expires_at: u64,
}

impl Grant {
    pub(crate) fn is_expired(&self, now: u64) -> bool {
        self.expires_at <= now
    }
}

/// A record of `locks.journal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(super) enum Record {
    /// First record after a compaction: the table's revision then.
    Base { format: u32, revision: u64 },
    /// A new grant (its token is its revision).
    Grant { grant: Grant },
    /// The holder of grant `token` extended it.
    Renew {
        name: String,
        token: u64,
        #[serde(rename = "ttlMs")]
        ttl_ms: u64,
        #[serde(rename = "expiresAt")]
        expires_at: u64,
        revision: u64,
    },
    /// The holder of grant `token` released it.
    Release { name: String, token: u64, revision: u64 },
}

impl Sequenced for Record {
    fn revision(&self) -> u64 {
        match self {
            Record::Base { revision, .. } | Record::Renew { revision, .. } | Record::Release { revision, .. } => {
                *revision
            }
            Record::Grant { grant } => grant.token,
        }
    }
}

/// Why a lock operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LockError {
    /// A field of the request is unusable; the message names it.
    #[error("{0}")]
    Invalid(String),
    #[error("lock '{}' is held by '{}' (token {})", .0.name, .0.holder, .0.token)]
    Held(Grant),
    #[error("lock '{name}' is not held (it expired or was released)")]
    NotHeld { name: String },
    #[error("lock '{}' is held by '{}', not by '{holder}'", .grant.name, .grant.holder)]
    NotHolder { grant: Grant, holder: String },
    #[error("too many locks are held (at most {MAX_LOCKS})")]
    TooMany,
    #[error("{0}")]
    Storage(String),
}

/// Why a fenced write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FenceError {
    #[error("fenced write refused: lock '{name}' is not held any more (token {token} expired or was released)")]
    NotHeld { name: String, token: u64 },
    #[error(
        "fenced write refused: lock '{}' is held by '{}' with token {}, not token {token}",
        .current.name, .current.holder, .current.token
    )]
    Superseded { token: u64, current: Grant },
}

/// Checks a lock name: 1 to [`MAX_NAME_BYTES`] of `A-Z a-z 0-9 . _ - : / @`.
pub(crate) fn check_name(name: &str) -> Result<(), LockError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._-:/@".contains(&b);
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.bytes().all(allowed) {
        return Err(LockError::Invalid(format!(
            "a lock name is 1 to {MAX_NAME_BYTES} characters of A-Z a-z 0-9 . _ - : / @"
        )));
    }
    Ok(())
}

/// Checks a holder: 1 to [`MAX_HOLDER_CHARS`] characters, none of them a control character.
pub(crate) fn check_holder(holder: &str) -> Result<(), LockError> {
    if holder.is_empty() || holder.chars().count() > MAX_HOLDER_CHARS || holder.chars().any(char::is_control) {
        return Err(LockError::Invalid(format!(
            "field 'holder' must be 1 to {MAX_HOLDER_CHARS} characters of printable text"
        )));
    }
    Ok(())
}

/// A TTL in seconds (a JSON number) as milliseconds; `field` names it in the error.
pub(crate) fn ttl_ms(field: &str, seconds: &Value) -> Result<u64, LockError> {
    seconds_ms(field, seconds, MIN_TTL_SECS, MAX_TTL_SECS)
}

/// A wait in seconds (a JSON number, 0 allowed) as milliseconds.
pub(crate) fn wait_ms(seconds: &Value) -> Result<u64, LockError> {
    seconds_ms("wait", seconds, 0.0, MAX_WAIT_SECS)
}

fn seconds_ms(field: &str, seconds: &Value, min: f64, max: f64) -> Result<u64, LockError> {
    match seconds.as_f64() {
        Some(value) if (min..=max).contains(&value) => Ok((value * 1000.0).round() as u64),
        _ => Err(LockError::Invalid(format!("field '{field}' must be a number of seconds from {min} to {max}"))),
    }
}

/// The lock table.
#[derive(Debug, Default)]
pub(super) struct LockTable {
    // Invariant: no entry is known to be expired except between a `now` passing its expiry and
    // the next operation on it (every operation expires what it touches first).
    locks: BTreeMap<String, Grant>,
    /// The highest revision ever given out: the next change takes one more.
    revision: u64,
}

impl LockTable {
    pub(super) fn revision(&self) -> u64 {
        self.revision
    }

    /// Grants `name` to `holder` for `ttl_ms`. The holder that has it already gets the same
    /// grant (same token) with a new expiry, so a retried acquire is harmless.
    pub(super) fn acquire(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: u64,
        now: u64,
    ) -> Result<(Grant, Record), LockError> {
        self.expire(name, now);
        if let Some(grant) = self.locks.get(name) {
            if grant.holder != holder {
                return Err(LockError::Held(grant.clone()));
            }
            return self.extend(name, ttl_ms, now);
        }
        if self.locks.len() >= MAX_LOCKS {
            self.sweep(now);
            if self.locks.len() >= MAX_LOCKS {
                return Err(LockError::TooMany);
            }
        }
        self.revision += 1;
        let grant = Grant {
            name: name.to_string(),
            holder: holder.to_string(),
            token: self.revision,
            ttl_ms,
            acquired_at: now,
            expires_at: now.saturating_add(ttl_ms),
        };
        self.locks.insert(name.to_string(), grant.clone());
        Ok((grant.clone(), Record::Grant { grant }))
    }

    /// Extends `holder`'s grant of `name` by its TTL (or a new one) from `now`.
    pub(super) fn renew(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: Option<u64>,
        now: u64,
    ) -> Result<(Grant, Record), LockError> {
        let grant = self.held_by(name, holder, now)?;
        let ttl_ms = ttl_ms.unwrap_or(grant.ttl_ms);
        self.extend(name, ttl_ms, now)
    }

    /// Ends `holder`'s grant of `name`.
    pub(super) fn release(&mut self, name: &str, holder: &str, now: u64) -> Result<(Grant, Record), LockError> {
        let grant = self.held_by(name, holder, now)?;
        self.locks.remove(name);
        self.revision += 1;
        let record = Record::Release { name: name.to_string(), token: grant.token, revision: self.revision };
        Ok((grant, record))
    }

    /// The live grant of `name`.
    pub(super) fn get(&self, name: &str, now: u64) -> Option<&Grant> {
        self.locks.get(name).filter(|grant| !grant.is_expired(now))
    }

    /// Every live grant, by name.
    pub(super) fn list(&self, now: u64) -> Vec<Grant> {
        self.locks.values().filter(|grant| !grant.is_expired(now)).cloned().collect()
    }

    /// Whether a write fenced with `token` of lock `name` may happen at `now`: only while that
    /// very grant is live.
    pub(super) fn check_fence(&self, name: &str, token: u64, now: u64) -> Result<(), FenceError> {
        match self.get(name, now) {
            Some(grant) if grant.token == token => Ok(()),
            Some(grant) => Err(FenceError::Superseded { token, current: grant.clone() }),
            None => Err(FenceError::NotHeld { name: name.to_string(), token }),
        }
    }

    /// Forgets expired grants (expiry takes no revision: it is derived from `expiresAt`).
    pub(super) fn sweep(&mut self, now: u64) {
        self.locks.retain(|_, grant| !grant.is_expired(now));
    }

    /// Replays a journalled record (no checks: it was accepted once).
    pub(super) fn apply(&mut self, record: Record) {
        self.revision = self.revision.max(record.revision());
        match record {
            Record::Base { .. } => {}
            Record::Grant { grant } => {
                self.locks.insert(grant.name.clone(), grant);
            }
            Record::Renew { name, token, ttl_ms, expires_at, .. } => {
                if let Some(grant) = self.locks.get_mut(&name).filter(|grant| grant.token == token) {
                    grant.ttl_ms = ttl_ms;
                    grant.expires_at = expires_at;
                }
            }
            Record::Release { name, token, .. } => {
                if self.locks.get(&name).is_some_and(|grant| grant.token == token) {
                    self.locks.remove(&name);
                }
            }
        }
    }

    /// What a compaction writes: the base and every grant, live at `now`.
    pub(super) fn image(&self, now: u64) -> Vec<Record> {
        let base = Record::Base { format: FORMAT, revision: self.revision };
        let grants = self.list(now).into_iter().map(|grant| Record::Grant { grant });
        std::iter::once(base).chain(grants).collect()
    }

    fn expire(&mut self, name: &str, now: u64) {
        if self.locks.get(name).is_some_and(|grant| grant.is_expired(now)) {
            self.locks.remove(name);
        }
    }

    /// The live grant of `name` if `holder` holds it.
    fn held_by(&mut self, name: &str, holder: &str, now: u64) -> Result<Grant, LockError> {
        self.expire(name, now);
        match self.locks.get(name) {
            None => Err(LockError::NotHeld { name: name.to_string() }),
            Some(grant) if grant.holder != holder => {
                Err(LockError::NotHolder { grant: grant.clone(), holder: holder.to_string() })
            }
            Some(grant) => Ok(grant.clone()),
        }
    }

    fn extend(&mut self, name: &str, ttl_ms: u64, now: u64) -> Result<(Grant, Record), LockError> {
        self.revision += 1;
        let revision = self.revision;
        let grant = self.locks.get_mut(name).expect("the caller found the grant");
        grant.ttl_ms = ttl_ms;
        grant.expires_at = now.saturating_add(ttl_ms);
        let record = Record::Renew {
            name: name.to_string(),
            token: grant.token,
            ttl_ms,
            expires_at: grant.expires_at,
            revision,
        };
        Ok((grant.clone(), record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(outcome: Result<(Grant, Record), LockError>) -> u64 {
        outcome.expect("granted").0.token
    }

    #[test]
    fn tokens_increase_with_every_grant_of_a_name_and_are_never_reused() {
        let mut table = LockTable::default();
        let first = token(table.acquire("db", "a", 1000, 0));
        table.release("db", "a", 10).unwrap();
        let second = token(table.acquire("db", "b", 1000, 20));
        let other = token(table.acquire("cache", "a", 1000, 20));
        // Expired, then granted again.
        let third = token(table.acquire("db", "c", 1000, 2000));
        assert!(first < second && second < third, "{first} {second} {third}");
        assert_ne!(other, second);
        assert_ne!(other, third);
    }

    #[test]
    fn a_held_lock_is_refused_to_others_and_given_again_to_its_holder() {
        let mut table = LockTable::default();
        let (grant, _) = table.acquire("db", "a", 1000, 0).unwrap();
        assert_eq!(table.acquire("db", "b", 1000, 500), Err(LockError::Held(grant.clone())));
        let (again, record) = table.acquire("db", "a", 5000, 600).unwrap();
        assert_eq!((again.token, again.expires_at), (grant.token, 5600));
        assert!(matches!(record, Record::Renew { token, .. } if token == grant.token));
    }

    #[test]
    fn a_lock_expires_at_its_ttl_unless_renewed() {
        let mut table = LockTable::default();
        let (grant, _) = table.acquire("db", "a", 1000, 0).unwrap();
        assert!(table.get("db", 999).is_some());
        let (renewed, _) = table.renew("db", "a", None, 900).unwrap();
        assert_eq!((renewed.token, renewed.expires_at), (grant.token, 1900));
        assert!(table.get("db", 1899).is_some());
        assert!(table.get("db", 1900).is_none(), "expired when expiresAt <= now");
        assert_eq!(table.renew("db", "a", None, 1900), Err(LockError::NotHeld { name: "db".into() }));
        assert!(table.acquire("db", "b", 1000, 1900).is_ok(), "free once expired");
    }

    #[test]
    fn only_the_holder_renews_or_releases() {
        let mut table = LockTable::default();
        let (grant, _) = table.acquire("db", "a", 1000, 0).unwrap();
        let not_holder = LockError::NotHolder { grant: grant.clone(), holder: "b".into() };
        assert_eq!(table.renew("db", "b", None, 1), Err(not_holder.clone()));
        assert_eq!(table.release("db", "b", 1), Err(not_holder));
        assert_eq!(table.release("nope", "a", 1), Err(LockError::NotHeld { name: "nope".into() }));
        assert_eq!(table.release("db", "a", 1).unwrap().0, grant);
        assert_eq!(table.release("db", "a", 2), Err(LockError::NotHeld { name: "db".into() }));
    }

    #[test]
    fn fences_pass_only_for_the_live_grant() {
        let mut table = LockTable::default();
        let old = token(table.acquire("db", "a", 1000, 0));
        assert_eq!(table.check_fence("db", old, 10), Ok(()));
        assert!(table.check_fence("db", old + 1, 10).unwrap_err().to_string().contains("not token"));
        assert!(matches!(table.check_fence("db", old, 1000), Err(FenceError::NotHeld { .. })));
        let new = token(table.acquire("db", "b", 1000, 1000));
        assert!(
            matches!(table.check_fence("db", old, 1001), Err(FenceError::Superseded { current, .. }) if current.token == new)
        );
        assert!(matches!(table.check_fence("other", old, 1001), Err(FenceError::NotHeld { .. })));
    }

    #[test]
    fn replay_rebuilds_the_table_and_its_revision() {
        let mut table = LockTable::default();
        let records = vec![
            table.acquire("a", "x", 1000, 0).unwrap().1,
            table.acquire("b", "y", 1000, 0).unwrap().1,
            table.renew("a", "x", Some(5000), 10).unwrap().1,
            table.release("b", "y", 20).unwrap().1,
        ];
        let mut replayed = LockTable::default();
        for record in records {
            replayed.apply(record);
        }
        assert_eq!(replayed.list(30), table.list(30));
        assert_eq!(replayed.revision(), 4);
        // A compaction image replays to the same table.
        let mut compacted = LockTable::default();
        for record in table.image(30) {
            compacted.apply(record);
        }
        assert_eq!((compacted.list(30), compacted.revision()), (table.list(30), 4));
        // A stale release (an older grant's token) does not remove a newer grant.
        compacted.apply(Record::Release { name: "a".into(), token: 999, revision: 5 });
        assert_eq!(compacted.list(30).len(), 1);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut table = LockTable::default();
        for i in 0..MAX_LOCKS {
            table.acquire(&format!("l{i}"), "a", 1000, 0).unwrap();
        }
        assert_eq!(table.acquire("one-more", "a", 1000, 0), Err(LockError::TooMany));
        assert!(table.acquire("one-more", "a", 1000, 1000).is_ok(), "expired ones make room");
    }

    #[track_caller]
    fn check_input(result: Result<(), LockError>, ok: bool) {
        assert_eq!(result.is_ok(), ok, "{result:?}");
    }

    #[test]
    fn names_holders_and_durations_are_validated() {
        for good in ["db", "deploy/prod", "a.b_c-d:e@f", &"x".repeat(MAX_NAME_BYTES)] {
            check_input(check_name(good), true);
        }
        for bad in ["", "a b", "é", "a\nb", "a%2F", &"x".repeat(MAX_NAME_BYTES + 1)] {
            check_input(check_name(bad), false);
        }
        check_input(check_holder("host-1:pid 42 ✓"), true);
        for bad in ["", "a\u{7}", &"h".repeat(MAX_HOLDER_CHARS + 1)] {
            check_input(check_holder(bad), false);
        }
        let json = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        assert_eq!(ttl_ms("ttl", &json("30")), Ok(30_000));
        assert_eq!(ttl_ms("ttl", &json("0.25")), Ok(250));
        for bad in ["0", "-1", "86401", "1e300", "\"30\"", "null", "0.01"] {
            assert!(ttl_ms("ttl", &json(bad)).is_err(), "{bad}");
        }
        assert_eq!(wait_ms(&json("0")), Ok(0));
        assert!(wait_ms(&json("601")).is_err());
        assert!(wait_ms(&json("-0.5")).is_err());
    }
}
