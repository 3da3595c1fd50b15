//! Memory comes back after a burst.
//!
//! glibc keeps the pages of freed buffers in its arenas. The daemon:
//! - fixes glibc's mmap and trim thresholds ([`fix_thresholds`]): left dynamic, they grow with
//!   the largest block freed, and the per-thread arenas glibc makes under contention then keep
//!   megabytes of free top that `malloc_trim` cannot shrink;
//! - hands free pages back to the kernel after a request or response of [`LARGE_BODY`] or more
//!   (a 2 MB body, a transfer's chunks), and once it has been quiet for a moment after any
//!   requests ([`Quiet`]: a thousand small execs free as much as one large body).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shutdown;

/// A request or response at least this large is followed by [`give_back_soon`].
pub(crate) const LARGE_BODY: usize = 1024 * 1024;

/// How long no request may have finished before the daemon trims after a burst.
pub(crate) const QUIET: Duration = Duration::from_secs(1);

/// Returns the allocator's free pages to the kernel (glibc's `malloc_trim`, every arena).
/// Costs well under a millisecond on a daemon's heap; a no-op elsewhere.
pub(crate) fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// [`give_back`] on the blocking pool, unless one is on its way already: it takes every arena's
/// lock and walks the heap, which the daemon's one executor thread must not wait for (and
/// anyone can send a large body, so they do not pile up).
pub(crate) fn give_back_soon() {
    static PENDING: AtomicBool = AtomicBool::new(false);
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if !PENDING.swap(true, Ordering::AcqRel) {
        smol::unblock(|| {
            let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // What is freed from here on is covered by the next trim.
            PENDING.store(false, Ordering::Release);
            give_back();
        })
        .detach();
    }
}

/// Fixes glibc's thresholds so freed memory goes back without one arena for all threads
/// (measured: one arena costs a quarter of the context GET throughput at 32 connections).
/// Left dynamic, glibc raises its mmap threshold to the largest block freed so far (a 2 MB
/// body: 2 MB) and the trim threshold to twice that, so later large buffers stay in the arenas
/// and each per-thread arena keeps up to 4 MB of free top, which `malloc_trim` cannot return.
/// Fixed: blocks of [`MMAP_THRESHOLD`] or more are mapped and unmapped on their own, and an
/// arena's free top above [`TRIM_THRESHOLD`] is returned when a block is freed. Called once,
/// before the daemon's threads start; a no-op elsewhere.
pub(crate) fn fix_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes tuning parameters of the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
    }
}

/// Blocks at least this large get their own mapping (glibc's initial default, kept fixed).
pub(crate) const MMAP_THRESHOLD: usize = 128 * 1024;
/// An arena's free top larger than this goes back to the kernel when a block is freed.
pub(crate) const TRIM_THRESHOLD: usize = 512 * 1024;

/// Notes finished requests, and trims once none has finished for [`QUIET`] (a task started
/// with [`Quiet::trim_when_quiet`]). An idle daemon does nothing: the task sleeps until a
/// request finishes.
#[derive(Clone)]
pub(crate) struct Quiet(Arc<QuietState>);

struct QuietState {
    finished: AtomicU64,
    /// A trim is due (the task has been woken, or will be).
    armed: AtomicBool,
    wake: smol::channel::Sender<()>,
    woken: smol::channel::Receiver<()>,
    /// Trims done, for tests.
    trims: AtomicU64,
}

impl Default for Quiet {
    fn default() -> Quiet {
        let (wake, woken) = smol::channel::bounded(1);
        Quiet(Arc::new(QuietState {
            finished: AtomicU64::new(0),
            armed: AtomicBool::new(false),
            wake,
            woken,
            trims: AtomicU64::new(0),
        }))
    }
}

impl Quiet {
    /// A request has finished (its buffers are freed). Two atomic operations, no lock.
    pub(crate) fn note(&self) {
        self.0.finished.fetch_add(1, Ordering::Relaxed);
        if !self.0.armed.swap(true, Ordering::AcqRel) {
            let _ = self.0.wake.try_send(());
        }
    }

    /// Trims once no request has finished for `quiet` after some did, until `shutdown`.
    pub(crate) async fn trim_when_quiet(self, quiet: Duration, shutdown: Shutdown) {
        loop {
            if shutdown.until(self.0.woken.recv()).await.is_none() {
                return;
            }
            loop {
                let seen = self.0.finished.load(Ordering::Relaxed);
                if !shutdown.sleep(quiet).await {
                    return;
                }
                if self.0.finished.load(Ordering::Relaxed) == seen {
                    break;
                }
            }
            // A request finishing from here on arms the next round; whatever it freed before
            // noting is covered by this trim.
            self.0.armed.store(false, Ordering::Release);
            smol::unblock(give_back).await;
            self.0.trims.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    fn trims(&self) -> u64 {
        self.0.trims.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn memory_freed_before_a_trim_can_be_allocated_again() {
        super::fix_thresholds();
        let big = vec![7u8; 8 << 20];
        drop(big);
        super::give_back();
        let again = vec![9u8; 8 << 20];
        assert!(again.iter().all(|b| *b == 9));
    }

    /// Waits (without a timing assertion: a generous deadline only ends a hung test) until
    /// `done` holds.
    async fn eventually(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting");
            async_io::Timer::after(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn requests_lead_to_one_trim_once_quiet_and_an_idle_daemon_trims_nothing() {
        smol::block_on(async {
            let quiet = Quiet::default();
            let shutdown = Shutdown::new();
            let task = smol::spawn(quiet.clone().trim_when_quiet(Duration::from_millis(20), shutdown.clone()));
            // Nothing finished: nothing is trimmed.
            async_io::Timer::after(Duration::from_millis(100)).await;
            assert_eq!(quiet.trims(), 0);
            // A burst of requests: one trim after it.
            for _ in 0..100 {
                quiet.note();
            }
            eventually(|| quiet.trims() == 1).await;
            async_io::Timer::after(Duration::from_millis(100)).await;
            assert_eq!(quiet.trims(), 1, "one trim per quiet period, not one per request");
            // Another request later: another trim.
            quiet.note();
            eventually(|| quiet.trims() == 2).await;
            // The task ends with the daemon.
            shutdown.trigger();
            task.await;
        });
    }
}
