//! Wall-clock time as the wire wants it (Unix milliseconds and ISO-8601 UTC strings), and the
//! one way to bound a wait ([`timeout`], [`deadline`]; `Shutdown::until` for shutdown).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `future`'s output, or `None` when `after` passes first (the future is dropped).
pub async fn timeout<T>(after: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        async_io::Timer::after(after).await;
        None
    })
    .await
}

/// `future`'s output, or `None` when `at` passes first (the future is dropped).
pub async fn deadline<T>(at: Instant, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        async_io::Timer::at(at).await;
        None
    })
    .await
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `2026-11-23T22:38:23.972Z` for a Unix millisecond timestamp.
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(ms: u64, expect: &str) {
        assert_eq!(iso8601(ms), expect);
    }

    #[test]
    fn formats_iso8601() {
        check(0, "1970-01-01T00:00:00.000Z");
        check(951_782_400_000, "2000-02-29T00:00:00.000Z");
        check(1_795_473_503_972, "2026-11-23T22:38:23.972Z");
    }

    #[test]
    fn a_bounded_wait_gives_the_output_or_none() {
        smol::block_on(async {
            assert_eq!(timeout(Duration::from_secs(3600), async { 1 }).await, Some(1));
            assert_eq!(timeout(Duration::from_millis(1), futures_lite::future::pending::<()>()).await, None);
            assert_eq!(deadline(Instant::now(), futures_lite::future::pending::<()>()).await, None);
        });
    }
}
