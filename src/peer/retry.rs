//! Requests that may be sent again after a dropped connection because they carry an
//! `Idempotency-Key`: the daemon answers a retry with the job the first attempt started, never a
//! second one.
//!
//! Only a daemon that honours the key may get a retry: a 1.0.21 daemon ignores the header and
//! would run the command twice. So before the first retry the client asks the daemon who it is
//! (`GET /api/v1/identity` says `implementation: loopsy-rs/…`); a daemon that does not answer
//! that at all is taken as down, an error at once. Once it has answered, later drops are ridden
//! out with back-off until the deadline.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Client, ClientError, Method};

/// Back-off between attempts: from this, doubling, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Retry pacing and the deadline, shared by the callers that reconnect.
#[derive(Debug)]
pub struct Backoff {
    pause: Duration,
    give_up_at: Instant,
}

impl Backoff {
    /// Attempts until `limit` from now.
    pub fn new(limit: Duration) -> Backoff {
        Backoff { pause: FIRST_PAUSE, give_up_at: Instant::now() + limit }
    }

    /// Waits before the next attempt; `false` when the deadline has passed.
    pub async fn pause(&mut self) -> bool {
        if Instant::now() >= self.give_up_at {
            return false;
        }
        async_io::Timer::after(self.pause.min(self.give_up_at - Instant::now())).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        true
    }

    /// Progress was made: the next failure starts the back-off afresh and gets `limit` again.
    pub fn reset(&mut self, limit: Duration) {
        *self = Backoff::new(limit);
    }
}

/// Whether a failure is the connection's (worth a retry) rather than the daemon's answer.
pub fn is_transient(error: &ClientError) -> bool {
    matches!(error, ClientError::Unreachable { .. } | ClientError::Timeout { .. })
}

/// Whether the daemon refused for its rate limit: nothing was processed, a retry that is part
/// of riding out a dropped link may come again later.
pub fn is_rate_limited(error: &ClientError) -> bool {
    matches!(error, ClientError::Remote { status: 429, .. })
}

impl Client {
    /// Whether the daemon honours `Idempotency-Key` (it is loopsy-rs, not 1.0.21).
    pub async fn honours_idempotency_keys(&self) -> Result<bool, ClientError> {
        let identity: serde_json::Value =
            self.clone().with_timeout(Duration::from_secs(3)).get("/api/v1/identity").await?;
        Ok(identity["implementation"].as_str().is_some_and(|name| name.starts_with("loopsy-rs/")))
    }

    /// `POST path` with a fresh `Idempotency-Key`, sent again with the same key after a dropped
    /// connection or a timeout, until `limit` has passed without an answer.
    pub async fn post_idempotent<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        limit: Duration,
    ) -> Result<T, ClientError> {
        let keyed = self.clone().with_header("Idempotency-Key", &crate::random::uuid_v4());
        let mut backoff = Backoff::new(limit);
        let mut confirmed = false;
        loop {
            let error = match keyed.call(Method::Post, path, Some(body)).await {
                Err(e) if is_transient(&e) => e,
                Err(e) if confirmed && is_rate_limited(&e) => e,
                outcome => return outcome,
            };
            if !confirmed {
                // Asked once: a daemon that cannot be reached at all is an error at once (it is
                // down, or the address is wrong), one that would run it again too.
                match self.honours_idempotency_keys().await {
                    Ok(true) => confirmed = true,
                    Ok(false) | Err(_) => return Err(error),
                }
            } else if !backoff.pause().await {
                return Err(error);
            }
            log::debug!("retrying {path} after: {error}");
        }
    }
}
