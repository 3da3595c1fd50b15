//! Per-key, per-category request limits (`rateLimits` in the config), enforced.
//!
//! A token bucket per (caller, category): it holds up to a minute's allowance and refills
//! continuously, so a burst of `limit` requests passes and the sustained rate is `limit` per
//! minute. Callers are the configured keys, so the table cannot grow without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimits;

/// The limited categories of routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Execute,
    Transfer,
    Context,
}

impl Category {
    pub fn name(self) -> &'static str {
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
pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(String, Category), Bucket>>,
}

/// A refused request: the limit per minute and when to retry.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub per_minute: u32,
    pub retry_after_secs: u64,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter { limits, buckets: Mutex::new(HashMap::new()) }
    }

    fn per_minute(&self, category: Category) -> u32 {
        match category {
            Category::Execute => self.limits.execute,
            Category::Transfer => self.limits.transfer,
            Category::Context => self.limits.context,
        }
    }

    /// Takes one token for `caller` in `category`, or says how long to wait.
    pub fn check(&self, caller: &str, category: Category, now: Instant) -> Result<(), Refusal> {
        self.take(caller, category, now, 1.0)
    }

    /// Says whether `check` would pass now, without taking a token: lets a client learn, before
    /// it starts a large upload, that the upload would be refused.
    pub fn peek(&self, caller: &str, category: Category, now: Instant) -> Result<(), Refusal> {
        self.take(caller, category, now, 0.0)
    }

    fn take(&self, caller: &str, category: Category, now: Instant, cost: f64) -> Result<(), Refusal> {
        let per_minute = self.per_minute(category);
        if per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let bucket = buckets.entry((caller.to_string(), category)).or_insert(Bucket { tokens: capacity, last: now });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= cost;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            Err(Refusal { per_minute, retry_after_secs: wait.ceil().max(1.0) as u64 })
        }
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
}
