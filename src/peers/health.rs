//! The health checker: one background task that probes every peer's `/api/v1/health`.
//!
//! Each peer has its own schedule (every `discovery.healthInterval` with ±10 % jitter, the
//! first probe at once), and probes run as separate tasks, so a slow or unreachable peer never
//! delays another and a peer is never probed twice at the same time. Three failures make a peer
//! offline; offline peers keep being probed with a doubling back-off (at most 8 intervals) and
//! come back by themselves. An online peer that keeps answering the same way is probed less
//! often too (the interval doubles after each unchanged answer, up to 8 intervals), so an idle
//! fleet of sessions on one machine does not keep its cores busy probing itself; a failure, a
//! change or a nudge (`ProbeNow`, `Goodbye`) brings it back to every interval. A probe succeeds only if the answer carries the node id the entry
//! is about: another node at that address is another peer.
//!
//! mDNS announcements (and handshakes) arrive here as [`Nudge::Candidate`]s and enter the
//! registry only once a probe at the announced address confirms the announced node id. An entry
//! bound by the owner (`Peer::is_bound`) is never moved by that: for a pinned one the probe of
//! the new address is made over TLS with its pin and moves it only when the certificate is
//! proven; any other claim becomes the entry's sighting. Probes never carry a key.
//!
//! A peer on loopback that is a daemon of this data directory's family (the main daemon and its
//! sessions, `local::Family`) is not polled: once a probe found it online, the checker watches a
//! pidfd of the process holding its instance lock and marks it offline the moment that process
//! exits (`kill -9` included); while its lock is free it is offline without an HTTP probe. An API
//! change or a goodbye about it ends the watch and probes it again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use smol::channel::{Receiver, Sender};
use smol::Task;

use super::local::{Family, Liveness};
use super::registry::{Applied, ProbeOutcome, Registry};
use super::{check_node_id, Announced, PeerStatus, Via};
use crate::peer::base_url;
use crate::peer::Client;
use crate::shutdown::Shutdown;

/// The largest health answer read.
const HEALTH_LIMIT: usize = 64 * 1024;
/// Probes in flight at most (peers beyond wait for the next tick).
const MAX_IN_FLIGHT: usize = 64;
/// An offline peer is probed at most every this many intervals.
const MAX_BACKOFF: u32 = 8;
/// The same claim (node, address and port) is verified at most this often.
const CANDIDATE_COOLDOWN: Duration = Duration::from_secs(2);

/// Something that should make the checker look at a peer before its next turn.
#[derive(Debug, Clone)]
pub(crate) enum Nudge {
    /// A claim that a node is at an address (mDNS, or a handshake for a pinned entry): verify
    /// it, then record it.
    Candidate(Announced, Via),
    /// The peer said goodbye: probe now, one failure is enough.
    Goodbye(String),
    /// A peer was added or changed by the API: probe now.
    ProbeNow(String),
}

/// The sending side, for routes and discovery; sends never block (a full queue drops).
#[derive(Clone)]
pub(crate) struct Nudger(Sender<Nudge>);

impl Nudger {
    pub(crate) fn send(&self, nudge: Nudge) {
        if self.0.try_send(nudge).is_err() {
            log::debug!("health checker busy; a nudge was dropped");
        }
    }
}

pub(crate) fn channel() -> (Nudger, Receiver<Nudge>) {
    let (tx, rx) = smol::channel::bounded(256);
    (Nudger(tx), rx)
}

/// The probe timeout for an interval: shorter than the interval, at most 5 s (1.0.21's value).
pub(crate) fn probe_timeout(interval: Duration) -> Duration {
    (interval * 3 / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// How long after a probe started the next one is due; `steady` counts the answers in a row
/// that found an online peer unchanged.
pub(crate) fn next_delay(interval: Duration, status: PeerStatus, failure_count: u32, steady: u32) -> Duration {
    let doublings = match status {
        PeerStatus::Offline => failure_count.saturating_sub(super::FAILURES_BEFORE_OFFLINE),
        PeerStatus::Online => steady,
        _ => 0,
    };
    jitter(interval * (1u32 << doublings.min(3)).min(MAX_BACKOFF))
}

/// ±10 %.
fn jitter(base: Duration) -> Duration {
    let random = u16::from_le_bytes(crate::random::bytes(2).try_into().expect("two bytes"));
    let fraction = 0.9 + 0.2 * (random as f64 / u16::MAX as f64);
    base.mul_f64(fraction)
}

#[derive(Debug)]
struct Schedule {
    next: Instant,
    in_flight: bool,
    goodbye: bool,
    /// Answers in a row that found the peer online and unchanged.
    steady: u32,
    /// A daemon of the family watched through its pidfd (and the port it was found on): not
    /// probed while this runs.
    watch: Option<(u16, Task<()>)>,
}

impl Schedule {
    fn new(next: Instant) -> Schedule {
        Schedule { next, in_flight: false, goodbye: false, steady: 0, watch: None }
    }
}

enum Job {
    Entry { node_id: String, started: Instant },
    Candidate(Announced, Via),
}

enum Wake {
    Nudge(Nudge),
    Done(Job, ProbeOutcome),
    /// A watched daemon of the family exited.
    Exited(String),
    Tick,
    Stop,
}

/// Runs until shutdown.
pub(crate) async fn run(
    registry: Registry,
    interval: Duration,
    nudges: Receiver<Nudge>,
    shutdown: Shutdown,
    family: Family,
) {
    let timeout = probe_timeout(interval);
    // The loop sleeps until the next probe is due (a nudge or a finished probe wakes it
    // earlier), at least this long, and at most one interval (new registry entries come with a
    // nudge; this catches any that do not).
    let min_sleep = Duration::from_millis(20);
    // A new entry is first probed this long after it appears, as when the loop woke on a fixed
    // tick: messaging records the name it learns under the entry's id, which that first probe
    // may change (a `manual-…` entry takes the node id it answers with).
    let first_probe = (interval / 10).clamp(min_sleep, Duration::from_millis(500));
    let (done_tx, done_rx) = smol::channel::unbounded::<(Job, ProbeOutcome)>();
    let (exit_tx, exit_rx) = smol::channel::unbounded::<String>();
    let mut schedules: HashMap<String, Schedule> = HashMap::new();
    let mut candidates: HashMap<String, Instant> = HashMap::new();
    let mut tasks: Vec<Task<()>> = Vec::new();
    loop {
        tasks.retain(|t| !t.is_finished());
        let now = Instant::now();
        let peers = registry.list();
        schedules.retain(|id, _| peers.iter().any(|p| &p.node_id == id));
        for peer in &peers {
            let schedule = schedules.entry(peer.node_id.clone()).or_insert_with(|| Schedule::new(now + first_probe));
            if schedule.watch.as_ref().is_some_and(|(port, _)| *port != peer.port || !Family::may_hold(&peer.address)) {
                schedule.watch = None;
                schedule.next = now;
            }
            if schedule.watch.is_some() || schedule.in_flight || schedule.next > now || tasks.len() >= MAX_IN_FLIGHT {
                continue;
            }
            if Family::may_hold(&peer.address) && family.liveness(&peer.node_id, peer.port) == Liveness::Stopped {
                // A daemon of the family that does not run: offline, no probe needed; checked
                // again (a lock query, no HTTP) every interval, so a restart is seen soon.
                if peer.status != PeerStatus::Offline {
                    log::info!("peer {} (a daemon on this machine) is not running", peer.node_id);
                    registry.record_probe(&peer.node_id, &ProbeOutcome::Failed, true);
                }
                schedule.steady = 0;
                schedule.next = now + jitter(interval);
                continue;
            }
            schedule.in_flight = true;
            let job = Job::Entry { node_id: peer.node_id.clone(), started: now };
            let pin = peer.fingerprint.as_deref().and_then(crate::tls::Fingerprint::parse);
            tasks.push(spawn_probe(job, peer.address.clone(), peer.port, pin, timeout, done_tx.clone()));
        }

        let now = Instant::now();
        let due = schedules
            .values()
            .filter(|s| !s.in_flight && s.watch.is_none())
            .map(|s| s.next.saturating_duration_since(now))
            .min();
        let sleep = due.unwrap_or(interval).clamp(min_sleep, interval.max(min_sleep));
        let wake = futures_lite::future::or(
            async { nudges.recv().await.map(Wake::Nudge).unwrap_or(Wake::Stop) },
            futures_lite::future::or(
                async { done_rx.recv().await.map(|(job, outcome)| Wake::Done(job, outcome)).unwrap_or(Wake::Stop) },
                futures_lite::future::or(
                    async { exit_rx.recv().await.map(Wake::Exited).unwrap_or(Wake::Stop) },
                    futures_lite::future::or(
                        async {
                            async_io::Timer::after(sleep).await;
                            Wake::Tick
                        },
                        async {
                            shutdown.wait().await;
                            Wake::Stop
                        },
                    ),
                ),
            ),
        )
        .await;
        match wake {
            Wake::Stop => break,
            Wake::Tick => {}
            Wake::Nudge(Nudge::ProbeNow(id)) => {
                if let Some(s) = schedules.get_mut(&id) {
                    s.next = Instant::now();
                    s.steady = 0;
                    s.watch = None;
                }
            }
            Wake::Exited(id) => {
                if let Some(s) = schedules.get_mut(&id).filter(|s| s.watch.is_some()) {
                    log::info!("peer {id} (a daemon on this machine) exited");
                    s.watch = None;
                    s.steady = 0;
                    s.next = Instant::now() + jitter(interval);
                    registry.record_probe(&id, &ProbeOutcome::Failed, true);
                }
            }
            Wake::Nudge(Nudge::Goodbye(id)) => {
                if let Some(s) = schedules.get_mut(&id) {
                    log::info!("peer {id} said goodbye; checking it now");
                    s.next = Instant::now();
                    s.goodbye = true;
                    s.steady = 0;
                    s.watch = None;
                }
            }
            Wake::Nudge(Nudge::Candidate(announced, via)) => {
                if worth_verifying(&registry, &announced, &mut candidates) && tasks.len() < MAX_IN_FLIGHT {
                    let (address, port) = (announced.address.clone(), announced.port);
                    // A pinned entry is probed at the claimed address with its pin: only its
                    // own certificate can move it there.
                    let pin = registry
                        .get(&announced.node_id)
                        .and_then(|p| p.fingerprint)
                        .as_deref()
                        .and_then(crate::tls::Fingerprint::parse);
                    let job = Job::Candidate(announced, via);
                    tasks.push(spawn_probe(job, address, port, pin, timeout, done_tx.clone()));
                }
            }
            Wake::Done(Job::Entry { node_id, started }, outcome) => {
                let goodbye = schedules.get(&node_id).is_some_and(|s| s.goodbye);
                let before = registry.get(&node_id);
                let Some(id) = registry.record_probe(&node_id, &outcome, goodbye) else { continue };
                let Some(peer) = registry.get(&id) else { continue };
                let mut schedule = schedules.remove(&node_id).unwrap_or(Schedule::new(started));
                schedule.in_flight = false;
                schedule.goodbye = false;
                let unchanged = before.is_some_and(|before| {
                    id == node_id
                        && before.status == PeerStatus::Online
                        && peer.status == PeerStatus::Online
                        && before.version == peer.version
                        && before.is_at(&peer.address, peer.port)
                });
                schedule.steady = if unchanged { schedule.steady.saturating_add(1) } else { 0 };
                schedule.next = started + next_delay(interval, peer.status, peer.failure_count, schedule.steady);
                if peer.status == PeerStatus::Online && schedule.watch.is_none() && Family::may_hold(&peer.address) {
                    // From now on the kernel tells when it ends.
                    if let Some(pidfd) = family.watch(&id, peer.port) {
                        let (exited, id) = (exit_tx.clone(), id.clone());
                        let task = smol::spawn(async move {
                            if pidfd.readable().await.is_ok() {
                                let _ = exited.send(id).await;
                            }
                        });
                        schedule.watch = Some((peer.port, task));
                    }
                }
                schedules.insert(id, schedule);
            }
            Wake::Done(Job::Candidate(announced, via), outcome) => {
                match registry.apply_announcement(&announced, via, &outcome) {
                    Applied::Recorded(peer) => {
                        log::debug!("peer {} confirmed at {}", peer.node_id, peer.endpoint());
                        let next = Instant::now() + next_delay(interval, PeerStatus::Online, 0, 0);
                        schedules.insert(peer.node_id, Schedule::new(next));
                    }
                    Applied::Sighted(_) => {}
                    Applied::Ignored => log::debug!(
                        "announcement of {} at {}:{} not confirmed by a probe",
                        announced.node_id,
                        announced.address,
                        announced.port
                    ),
                }
            }
        }
    }
}

/// Whether an announcement says something the registry does not know yet.
fn worth_verifying(registry: &Registry, announced: &Announced, recent: &mut HashMap<String, Instant>) -> bool {
    if announced.node_id == registry.own_id() {
        return false;
    }
    if let Some(peer) = registry.get(&announced.node_id) {
        let same = peer.status == PeerStatus::Online
            && peer.is_at(&announced.address, announced.port)
            && peer.hostname == announced.hostname
            && peer.platform == announced.platform
            && peer.version == announced.version
            && peer.capabilities == announced.capabilities;
        if same {
            return false;
        }
    }
    // Per node and place: a claim of a new place is checked even right after another one.
    let key = format!("{}@{}:{}", announced.node_id, announced.address, announced.port);
    let now = Instant::now();
    recent.retain(|_, at| now.duration_since(*at) < CANDIDATE_COOLDOWN);
    if recent.contains_key(&key) || recent.len() >= MAX_IN_FLIGHT {
        return false;
    }
    recent.insert(key, now);
    true
}

fn spawn_probe(
    job: Job,
    address: String,
    port: u16,
    pin: Option<crate::tls::Fingerprint>,
    timeout: Duration,
    done: Sender<(Job, ProbeOutcome)>,
) -> Task<()> {
    smol::spawn(async move {
        let outcome = probe(&address, port, pin, timeout).await;
        let _ = done.send((job, outcome)).await;
    })
}

/// `GET /api/v1/health` without a key (over pinned TLS for a pinned peer); any 2xx that names a
/// node id is an answer.
pub(crate) async fn probe(
    address: &str,
    port: u16,
    pin: Option<crate::tls::Fingerprint>,
    timeout: Duration,
) -> ProbeOutcome {
    let proven_pin = pin.as_ref().map(ToString::to_string);
    // Any address that was announced is probed: its answer may take only what a health answer
    // needs.
    let client =
        Client::pinned(&base_url(address, port), None, pin).with_timeout(timeout).with_body_limit(HEALTH_LIMIT);
    match client.get::<serde_json::Value>("/api/v1/health").await {
        Ok(body) => {
            let node_id = body["nodeId"].as_str().unwrap_or_default();
            if check_node_id("nodeId", node_id).is_ok() {
                let version = body["version"].as_str().unwrap_or("unknown").chars().take(64).collect();
                ProbeOutcome::Answered { node_id: node_id.to_string(), version, proven_pin }
            } else {
                ProbeOutcome::Failed
            }
        }
        Err(e) => {
            log::debug!("probe of {address}:{port} failed: {e}");
            ProbeOutcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_peers_back_off_up_to_eight_intervals() {
        let i = Duration::from_secs(10);
        let within = |d: Duration, base: Duration| d >= base.mul_f64(0.9) && d <= base.mul_f64(1.1);
        assert!(within(next_delay(i, PeerStatus::Online, 0, 0), i));
        assert!(within(next_delay(i, PeerStatus::Unknown, 2, 0), i));
        assert!(within(next_delay(i, PeerStatus::Offline, 3, 0), i));
        assert!(within(next_delay(i, PeerStatus::Offline, 4, 0), i * 2));
        assert!(within(next_delay(i, PeerStatus::Offline, 5, 0), i * 4));
        assert!(within(next_delay(i, PeerStatus::Offline, 6, 0), i * 8));
        assert!(within(next_delay(i, PeerStatus::Offline, 600, 0), i * 8));
    }

    #[test]
    fn steady_online_peers_back_off_up_to_eight_intervals_and_others_do_not() {
        let i = Duration::from_secs(10);
        let within = |d: Duration, base: Duration| d >= base.mul_f64(0.9) && d <= base.mul_f64(1.1);
        assert!(within(next_delay(i, PeerStatus::Online, 0, 1), i * 2));
        assert!(within(next_delay(i, PeerStatus::Online, 0, 2), i * 4));
        assert!(within(next_delay(i, PeerStatus::Online, 0, 3), i * 8));
        assert!(within(next_delay(i, PeerStatus::Online, 0, 1000), i * 8));
        assert!(within(next_delay(i, PeerStatus::Unknown, 1, 5), i), "a failing peer is checked every interval");
    }

    #[test]
    fn probes_time_out_before_the_next_is_due() {
        assert_eq!(probe_timeout(Duration::from_secs(15)), Duration::from_secs(5));
        assert_eq!(probe_timeout(Duration::from_millis(400)), Duration::from_millis(300));
        assert_eq!(probe_timeout(Duration::from_millis(100)), Duration::from_millis(100));
    }
}
