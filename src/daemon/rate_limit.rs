//! Per-key, per-category request limits (`rateLimits` in the config), enforced on peers, and
//! a limit on failed authentication per source address.
//!
//! A token bucket per (caller, category): it holds up to a minute's allowance and refills
//! continuously, so a burst of `limit` requests passes and the sustained rate is `limit` per
//! minute. Callers are the configured keys, so the table cannot grow without bound. The owner
//! is not limited by these (the guard does not ask): its own tools and agents' build loops
//! would hit a peer's limit at once.
//!
//! Wrong keys are counted per source address ([`FAILED_AUTH_PER_MINUTE`], IPv6 by /64): an
//! address that used up its allowance is answered 429 before any key it sends is looked at, so
//! keys cannot be guessed at speed. That table is bounded too ([`MAX_ADDRESSES`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

/// Failed authentications an address may make per minute (and in a burst).
pub(crate) const FAILED_AUTH_PER_MINUTE: u32 = 10;
/// Addresses tracked for failed authentication at most; beyond that the least recently seen
/// one is forgotten.
const MAX_ADDRESSES: usize = 4096;

use crate::config::RateLimits;

/// The limited categories of routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Category {
    Execute,
    Transfer,
    Context,
}

impl Category {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Category::Execute => "execute",
            Category::Transfer => "transfer",
            Category::Context => "context",
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The limiter of one daemon.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(String, Category), Bucket>>,
    /// Failed authentications per source address (IPv6 by /64).
    failures: Mutex<HashMap<IpAddr, Bucket>>,
}

/// A refused request: the limit per minute and when to retry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub per_minute: u32,
    pub retry_after_secs: u64,
}

impl RateLimiter {
    pub(crate) fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter { limits, buckets: Mutex::new(HashMap::new()), failures: Mutex::new(HashMap::new()) }
    }

    fn per_minute(&self, category: Category) -> u32 {
        match category {
            Category::Execute => self.limits.execute,
            Category::Transfer => self.limits.transfer,
            Category::Context => self.limits.context,
        }
    }

    /// Takes one token for `caller` in `category`, or says how long to wait.
    pub(crate) fn check(&self, caller: &str, category: Category, now: Instant) -> Result<(), Refusal> {
        self.take(caller, category, now, 1.0)
    }

    /// Says whether `check` would pass now, without taking a token: lets a client learn, before
    /// it starts a large upload, that the upload would be refused.
    pub(crate) fn peek(&self, caller: &str, category: Category, now: Instant) -> Result<(), Refusal> {
        self.take(caller, category, now, 0.0)
    }

    fn take(&self, caller: &str, category: Category, now: Instant, cost: f64) -> Result<(), Refusal> {
        let per_minute = self.per_minute(category);
        if per_minute == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let bucket = buckets.entry((caller.to_string(), category)).or_insert(Bucket::full(per_minute, now));
        bucket.take(per_minute, now, cost)
    }

    /// Whether `source` may still try a key: refused once it has failed too often.
    pub(crate) fn check_source(&self, source: IpAddr, now: Instant) -> Result<(), Refusal> {
        let mut failures = self.failures.lock().expect("rate limiter lock");
        match failures.get_mut(&address_key(source)) {
            Some(bucket) => bucket.take(FAILED_AUTH_PER_MINUTE, now, 0.0),
            None => Ok(()),
        }
    }

    /// Counts a failed authentication from `source`.
    pub(crate) fn failed_auth(&self, source: IpAddr, now: Instant) {
        let key = address_key(source);
        let mut failures = self.failures.lock().expect("rate limiter lock");
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&key) {
            let oldest = failures.iter().min_by_key(|(_, bucket)| bucket.last).map(|(address, _)| *address);
            if let Some(oldest) = oldest {
                failures.remove(&oldest);
            }
        }
        let bucket = failures.entry(key).or_insert(Bucket::full(FAILED_AUTH_PER_MINUTE, now));
        let _ = bucket.take(FAILED_AUTH_PER_MINUTE, now, 1.0);
    }
}

impl Bucket {
    fn full(per_minute: u32, now: Instant) -> Bucket {
        Bucket { tokens: f64::from(per_minute), last: now }
    }

    /// Refills for the time since the last call, then takes `cost` tokens if one is there.
    fn take(&mut self, per_minute: u32, now: Instant, cost: f64) -> Result<(), Refusal> {
        let capacity = f64::from(per_minute);
        let per_second = capacity / 60.0;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= cost;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / per_second;
            Err(Refusal { per_minute, retry_after_secs: wait.ceil().max(1.0) as u64 })
        }
    }
}

/// The unit failures are counted in: an IPv4 address, an IPv6 /64 (one host can use a whole
/// /64, so counting single IPv6 addresses would not limit it).
fn address_key(source: IpAddr) -> IpAddr {
    match source.to_canonical() {
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            IpAddr::V6(Ipv6Addr::new(segments[0], segments[1], segments[2], segments[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_of_the_limit_passes_then_the_rate_is_enforced() {
        let limiter = RateLimiter::new(RateLimits { execute: 3, transfer: 0, context: 60 });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("own", Category::Execute, t0), Ok(()));
        }
        assert_eq!(limiter.check("own", Category::Execute, t0), Err(Refusal { per_minute: 3, retry_after_secs: 20 }));
        assert_eq!(limiter.check("peer:bob", Category::Execute, t0), Ok(()), "buckets are per caller");
        assert_eq!(limiter.check("own", Category::Context, t0), Ok(()), "and per category");
        assert_eq!(limiter.check("own", Category::Execute, t0 + Duration::from_secs(20)), Ok(()));
        assert!(limiter.check("own", Category::Execute, t0 + Duration::from_secs(21)).is_err());
    }

    #[test]
    fn peeking_takes_no_token() {
        let limiter = RateLimiter::new(RateLimits { execute: 0, transfer: 1, context: 0 });
        let t0 = Instant::now();
        assert_eq!(limiter.peek("own", Category::Transfer, t0), Ok(()));
        assert_eq!(limiter.check("own", Category::Transfer, t0), Ok(()));
        assert!(limiter.peek("own", Category::Transfer, t0).is_err());
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = RateLimiter::new(RateLimits { execute: 1, transfer: 0, context: 1 });
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(limiter.check("own", Category::Transfer, t0), Ok(()));
        }
    }

    #[test]
    fn failed_authentication_is_limited_per_address_and_ipv6_per_64() {
        let limiter = RateLimiter::new(RateLimits { execute: 0, transfer: 0, context: 0 });
        let t0 = Instant::now();
        let (one, other) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..FAILED_AUTH_PER_MINUTE {
            assert_eq!(limiter.check_source(one, t0), Ok(()));
            limiter.failed_auth(one, t0);
        }
        assert_eq!(limiter.check_source(one, t0), Err(Refusal { per_minute: 10, retry_after_secs: 6 }));
        assert_eq!(limiter.check_source(other, t0), Ok(()), "per address");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(limiter.check_source(mapped, t0).is_err(), "an IPv4-mapped address is the IPv4 address");
        assert_eq!(limiter.check_source(one, t0 + Duration::from_secs(6)), Ok(()), "one more after 6 s");
        for i in 0..FAILED_AUTH_PER_MINUTE {
            limiter.failed_auth(format!("fd00:1:2:3::{i}").parse().unwrap(), t0);
        }
        assert!(limiter.check_source("fd00:1:2:3:ffff::9".parse().unwrap(), t0).is_err(), "the /64 is one unit");
        assert_eq!(limiter.check_source("fd00:1:2:4::1".parse().unwrap(), t0), Ok(()));
    }

    #[test]
    fn the_failed_authentication_table_is_bounded() {
        let limiter = RateLimiter::new(RateLimits { execute: 0, transfer: 0, context: 0 });
        let t0 = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            limiter.failed_auth(IpAddr::from(i.to_be_bytes()), t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(limiter.failures.lock().unwrap().len(), MAX_ADDRESSES);
    }
}
