//! The registry of known peers, keyed by node id, kept in `peers.json` (§5.4 format).
//!
//! Invariants: one entry per node id, and at most one entry per `address:port` (a node that
//! comes back at the same place under a new id replaces the old entry, keeping the user's name
//! and the manual flag). This node never lists itself. Every change wakes the saver, which
//! writes the file atomically (debounced); API changes are saved before they are answered.
//! A `peers.json` that cannot be read is set aside under a new name and reported, never
//! silently replaced.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smol::channel::{Receiver, Sender};

use super::{
    check_address, check_name, check_node_id, check_text, Announced, Invalid, Peer, PeerStatus, Sighting, Via,
};
use super::{FAILURES_BEFORE_OFFLINE, MANUAL_PREFIX};
use crate::clock::now_ms;
use crate::shutdown::Shutdown;

/// How long the saver waits for more changes before writing.
const SAVE_DEBOUNCE: Duration = Duration::from_millis(300);

/// A cheap-clone handle on the registry.
#[derive(Clone)]
pub(crate) struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    own_id: String,
    peers: Mutex<Vec<Peer>>,
    /// Serialises writers so an older snapshot never lands after a newer one.
    save_lock: Mutex<()>,
    changed_tx: Sender<()>,
    changed_rx: Receiver<()>,
}

/// A manual addition (`POST /api/v1/peers`, `discovery.manualPeers`), already validated.
#[derive(Debug, Clone, Default)]
pub(crate) struct ManualAdd {
    pub address: String,
    pub port: u16,
    pub node_id: Option<String>,
    pub hostname: Option<String>,
    pub name: Option<String>,
    /// A certificate pin (pairing): from now on the peer is reached over TLS with it.
    pub fingerprint: Option<String>,
}

/// What a health probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeOutcome {
    /// `/health` answered with this node id.
    Answered {
        node_id: String,
        version: String,
        /// The pinned certificate the connection proved (an HTTPS probe), if any.
        proven_pin: Option<String>,
    },
    Failed,
}

/// What [`Registry::apply_announcement`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The entry was created, updated or moved (a proven pin, or an unbound entry).
    Recorded(Peer),
    /// A bound entry stays where it is; the claim is its sighting now.
    Sighted(Peer),
    /// Nothing changed (this node itself, or a claim nobody answered for).
    Ignored,
}

impl Registry {
    /// Loads `path`; a missing file is an empty registry, a bad one is set aside and reported.
    pub(crate) fn load(path: &Path, own_id: &str) -> Registry {
        let peers = match std::fs::read(path) {
            Ok(bytes) => {
                let (peers, problems) = parse_file(&bytes, own_id);
                if !problems.is_empty() {
                    let aside = set_aside(path);
                    for problem in &problems {
                        log::error!("{}: {problem}", path.display());
                    }
                    log::error!(
                        "{}: kept {} peer(s); the original file is kept as {aside}",
                        path.display(),
                        peers.len()
                    );
                }
                peers
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                log::error!("cannot read {}: {e}; starting with an empty peer list", path.display());
                Vec::new()
            }
        };
        let (changed_tx, changed_rx) = smol::channel::bounded(1);
        Registry {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                own_id: own_id.to_string(),
                peers: Mutex::new(peers),
                save_lock: Mutex::new(()),
                changed_tx,
                changed_rx,
            }),
        }
    }

    /// Every peer, in insertion order.
    pub(crate) fn list(&self) -> Vec<Peer> {
        self.peers().clone()
    }

    pub(crate) fn get(&self, node_id: &str) -> Option<Peer> {
        self.peers().iter().find(|p| p.node_id == node_id).cloned()
    }

    /// (total, online).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let peers = self.peers();
        (peers.len(), peers.iter().filter(|p| p.status == PeerStatus::Online).count())
    }

    pub(crate) fn own_id(&self) -> &str {
        &self.inner.own_id
    }

    /// Adds or updates a manual peer; returns the entry as stored.
    pub(crate) fn add_manual(&self, add: ManualAdd) -> Result<Peer, Invalid> {
        if add.node_id.as_deref() == Some(self.own_id()) {
            return Err(Invalid { field: "nodeId", problem: "is this node's own id".into() });
        }
        let mut peers = self.peers();
        // An entry already at that address keeps its (possibly verified) id and state.
        let existing = match &add.node_id {
            Some(id) => peers.iter().position(|p| &p.node_id == id),
            None => peers.iter().position(|p| p.is_at(&add.address, add.port)),
        };
        let index = match existing {
            Some(i) => {
                let peer = &mut peers[i];
                if !peer.is_at(&add.address, add.port) {
                    peer.status = PeerStatus::Unknown;
                    peer.failure_count = 0;
                }
                peer.address = add.address.clone();
                peer.port = add.port;
                peer.manually_added = true;
                peer.seen_at = None;
                i
            }
            None => {
                let mut peer = Peer::manual(&add.address, add.port);
                if let Some(id) = &add.node_id {
                    peer.node_id = id.clone();
                }
                peers.push(peer);
                peers.len() - 1
            }
        };
        if let Some(hostname) = add.hostname {
            peers[index].hostname = hostname;
        }
        if add.name.is_some() {
            peers[index].name = add.name;
        }
        if add.fingerprint.is_some() {
            peers[index].fingerprint = add.fingerprint;
        }
        let index = absorb_duplicates(&mut peers, index);
        let peer = peers[index].clone();
        drop(peers);
        self.changed();
        Ok(peer)
    }

    /// `discovery.manualPeers` at start: each becomes (or marks) a manual entry, pinned when
    /// `tls.pinnedCerts` has a fingerprint under its name or hostname.
    pub(crate) fn add_configured(
        &self,
        manual: &[crate::config::ManualPeer],
        pins: &std::collections::BTreeMap<String, String>,
    ) {
        for entry in manual {
            let Ok(address) = check_address("address", &entry.address) else {
                log::warn!("discovery.manualPeers: '{}' is not an address; skipped", entry.address);
                continue;
            };
            let add = ManualAdd {
                address,
                port: entry.port,
                node_id: None,
                hostname: entry.hostname.clone(),
                name: entry.name.clone(),
                fingerprint: entry.name.iter().chain(&entry.hostname).find_map(|n| pins.get(n)).cloned(),
            };
            if let Err(e) = self.add_manual(add) {
                log::warn!("discovery.manualPeers: {e}");
            }
        }
    }

    pub(crate) fn remove(&self, node_id: &str) -> Option<Peer> {
        let mut peers = self.peers();
        let index = peers.iter().position(|p| p.node_id == node_id)?;
        let removed = peers.remove(index);
        drop(peers);
        self.changed();
        Some(removed)
    }

    /// Applies a claim that node `announced.node_id` is at `announced.address:port` (an mDNS
    /// announcement with the probe of that address, or a handshake from it), by what `outcome`
    /// found there.
    ///
    /// A new or unbound entry follows an answering claim. A bound entry elsewhere (see
    /// [`Peer::is_bound`]) moves only when the probe proved its pinned certificate; otherwise
    /// the claim is kept as its [`Sighting`] for the owner to judge.
    pub(crate) fn apply_announcement(&self, announced: &Announced, via: Via, outcome: &ProbeOutcome) -> Applied {
        if announced.node_id == self.own_id() {
            return Applied::Ignored;
        }
        let (answers, proven_pin) = match outcome {
            ProbeOutcome::Answered { node_id, proven_pin, .. } if *node_id == announced.node_id => {
                (true, proven_pin.as_deref())
            }
            _ => (false, None),
        };
        let mut peers = self.peers();
        let existing = peers.iter().position(|p| p.node_id == announced.node_id);
        let index = match existing {
            Some(i) if peers[i].is_at(&announced.address, announced.port) || !peers[i].is_bound() => {
                if !answers {
                    return Applied::Ignored;
                }
                i
            }
            Some(i) => {
                let peer = &mut peers[i];
                let proven = answers && proven_pin.is_some() && peer.fingerprint.as_deref() == proven_pin;
                if !proven {
                    peer.seen_at = Some(Box::new(Sighting {
                        address: announced.address.clone(),
                        port: announced.port,
                        at: now_ms(),
                        via,
                        answers,
                    }));
                    log::warn!(
                        "peer {} ({}) was claimed to be at {}:{} ({}); not followed: confirm it with `loopsy peers confirm`",
                        peer.node_id,
                        peer.endpoint(),
                        announced.address,
                        announced.port,
                        via.as_str()
                    );
                    let peer = peer.clone();
                    drop(peers);
                    self.changed();
                    return Applied::Sighted(peer);
                }
                log::info!(
                    "peer {} proved its pinned certificate at {}:{}; it moves there",
                    peer.node_id,
                    announced.address,
                    announced.port
                );
                peer.seen_at = None;
                i
            }
            None if answers => {
                let mut peer = Peer::manual(&announced.address, announced.port);
                peer.node_id = announced.node_id.clone();
                peer.manually_added = false;
                peers.push(peer);
                peers.len() - 1
            }
            None => return Applied::Ignored,
        };
        let peer = &mut peers[index];
        peer.hostname = announced.hostname.clone();
        peer.address = announced.address.clone();
        peer.port = announced.port;
        peer.platform = announced.platform.clone();
        peer.version = announced.version.clone();
        peer.capabilities = announced.capabilities.clone();
        peer.status = PeerStatus::Online;
        peer.last_seen = now_ms();
        peer.failure_count = 0;
        let index = absorb_duplicates(&mut peers, index);
        let peer = peers[index].clone();
        drop(peers);
        self.changed();
        Applied::Recorded(peer)
    }

    /// The owner says `node_id` is now reached at `address:port` (`loopsy peers confirm`): the
    /// entry moves there, its sighting is cleared and it is probed again.
    pub(crate) fn confirm_address(&self, node_id: &str, address: &str, port: u16) -> Option<Peer> {
        let mut peers = self.peers();
        let index = peers.iter().position(|p| p.node_id == node_id)?;
        let peer = &mut peers[index];
        if !peer.is_at(address, port) {
            peer.status = PeerStatus::Unknown;
            peer.failure_count = 0;
        }
        peer.address = address.to_string();
        peer.port = port;
        peer.seen_at = None;
        let index = absorb_duplicates(&mut peers, index);
        let peer = peers[index].clone();
        drop(peers);
        self.changed();
        Some(peer)
    }

    /// Applies a health probe of the entry `node_id` made at `address:port`.
    /// `goodbye` (the peer said it leaves) makes one failure enough to be offline.
    /// Returns the entry's node id afterwards (a manual entry learns its real one).
    pub(crate) fn record_probe(&self, node_id: &str, outcome: &ProbeOutcome, goodbye: bool) -> Option<String> {
        let mut peers = self.peers();
        let index = peers.iter().position(|p| p.node_id == node_id)?;
        let answered = match outcome {
            ProbeOutcome::Answered { node_id: answered, version, proven_pin } => {
                let learns_id = peers[index].is_provisional() && answered.as_str() != self.own_id();
                if answered == node_id {
                    Some((answered.clone(), version.clone()))
                } else if learns_id {
                    // The owner added this address without saying which node is there; a bound
                    // entry of that node elsewhere moves here only with its pin proven.
                    let claimed = peers.iter().position(|p| &p.node_id == answered);
                    match claimed.filter(|&i| !may_take(&peers[i], proven_pin.as_deref())) {
                        None => Some((answered.clone(), version.clone())),
                        Some(bound) => {
                            let (address, port) = (peers[index].address.clone(), peers[index].port);
                            let at = now_ms();
                            let sighting = Sighting { address, port, at, via: Via::Probe, answers: true };
                            peers[bound].seen_at = Some(Box::new(sighting));
                            let provisional = &mut peers[index];
                            provisional.status = PeerStatus::Online;
                            provisional.last_seen = at;
                            provisional.failure_count = 0;
                            log::warn!(
                                "{} answers as peer {answered}, which is bound to another address; not merged: \
                                 confirm it with `loopsy peers confirm`",
                                provisional.endpoint()
                            );
                            drop(peers);
                            self.changed();
                            return Some(node_id.to_string());
                        }
                    }
                } else {
                    log::info!("peer {node_id}: a different node ({answered}) answers at {}", peers[index].endpoint());
                    None
                }
            }
            ProbeOutcome::Failed => None,
        };
        let before = peers[index].status;
        let result_id = match answered {
            Some((answered, version)) => {
                let peer = &mut peers[index];
                peer.status = PeerStatus::Online;
                peer.last_seen = now_ms();
                peer.failure_count = 0;
                if peer.version == "unknown" {
                    peer.version = version;
                }
                if peer.node_id != answered {
                    log::info!("peer {} is node {answered}", peer.endpoint());
                    peer.node_id = answered.clone();
                    merge_same_id(&mut peers, index);
                }
                answered
            }
            None => {
                let peer = &mut peers[index];
                peer.failure_count = peer.failure_count.saturating_add(1);
                if goodbye || peer.failure_count >= FAILURES_BEFORE_OFFLINE {
                    peer.status = PeerStatus::Offline;
                    peer.failure_count = peer.failure_count.max(FAILURES_BEFORE_OFFLINE);
                }
                node_id.to_string()
            }
        };
        let after = peers.iter().find(|p| p.node_id == result_id).map(|p| p.status);
        drop(peers);
        if after != Some(before) {
            log::info!("peer {result_id} is now {}", after.map(PeerStatus::as_str).unwrap_or("gone"));
        }
        self.changed();
        Some(result_id)
    }

    /// Writes `peers.json` now (atomically). Called by the saver, API handlers and shutdown.
    pub(crate) fn save_now(&self) -> anyhow::Result<()> {
        let _writer = self.inner.save_lock.lock().expect("registry save lock");
        let snapshot = self.list();
        let mut text = serde_json::to_vec_pretty(&snapshot)?;
        text.push(b'\n');
        crate::durable::write(&self.inner.path, &text, crate::durable::Mode::Public)
    }

    /// Saves after each burst of changes until shutdown, then once more.
    pub(crate) async fn run_saver(self, shutdown: Shutdown) {
        loop {
            let woke = shutdown.until(self.inner.changed_rx.recv()).await.is_some_and(|r| r.is_ok());
            if !woke {
                break;
            }
            async_io::Timer::after(SAVE_DEBOUNCE).await;
            let registry = self.clone();
            if let Err(e) = blocking::unblock(move || registry.save_now()).await {
                log::error!("cannot save the peer list: {e:#}");
            }
        }
        if let Err(e) = self.save_now() {
            log::error!("cannot save the peer list at shutdown: {e:#}");
        }
    }

    fn changed(&self) {
        let _ = self.inner.changed_tx.try_send(());
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Vec<Peer>> {
        self.inner.peers.lock().expect("registry lock")
    }
}

/// Removes the other entries at the same `address:port` as `peers[keep]`, carrying over the
/// user's name and the manual flag; returns the kept entry's new index. Only entries nothing
/// binds to another node are folded: unbound ones, and a manual entry still waiting for its
/// node id without a pin (the node at its address has just said who it is). A bound entry of
/// another node stays, even at the same place, until the owner removes it.
fn absorb_duplicates(peers: &mut Vec<Peer>, keep: usize) -> usize {
    let (address, port, id) = (peers[keep].address.clone(), peers[keep].port, peers[keep].node_id.clone());
    let mut name = peers[keep].name.clone();
    let mut manual = peers[keep].manually_added;
    peers.retain(|p| {
        let foldable = !p.is_bound() || (p.is_provisional() && p.fingerprint.is_none());
        let duplicate = p.node_id != id && p.is_at(&address, port) && foldable;
        if duplicate {
            name = name.take().or_else(|| p.name.clone());
            manual |= p.manually_added;
        }
        !duplicate
    });
    let index = peers.iter().position(|p| p.node_id == id).expect("kept entry");
    peers[index].name = name;
    peers[index].manually_added = manual;
    index
}

/// After `peers[index]` took a real node id: if another entry already had it, fold into one.
fn merge_same_id(peers: &mut Vec<Peer>, index: usize) {
    let id = peers[index].node_id.clone();
    let Some(other) = peers.iter().enumerate().position(|(i, p)| i != index && p.node_id == id) else { return };
    let learned = peers.remove(index);
    let other = if other > index { other - 1 } else { other };
    let kept = &mut peers[other];
    kept.address = learned.address;
    kept.port = learned.port;
    kept.status = learned.status;
    kept.last_seen = learned.last_seen;
    kept.failure_count = 0;
    kept.manually_added |= learned.manually_added;
    kept.seen_at = None;
    if kept.name.is_none() {
        kept.name = learned.name;
    }
    if kept.fingerprint.is_none() {
        kept.fingerprint = learned.fingerprint;
    }
    absorb_duplicates(peers, other);
}

/// Whether a provisional entry whose probe found node `claimed` may fold into `claimed`'s
/// entry (and so move it to the provisional entry's address): when `claimed` is unbound, or
/// the probe proved `claimed`'s pinned certificate.
fn may_take(claimed: &Peer, proven_pin: Option<&str>) -> bool {
    !claimed.is_bound() || (proven_pin.is_some() && claimed.fingerprint.as_deref() == proven_pin)
}

/// Parses `peers.json`: the peers that are usable, and what was wrong with the rest.
fn parse_file(bytes: &[u8], own_id: &str) -> (Vec<Peer>, Vec<String>) {
    let items: Vec<serde_json::Value> = match serde_json::from_slice(bytes) {
        Ok(items) => items,
        Err(e) => return (Vec::new(), vec![format!("not a JSON array of peers: {e}")]),
    };
    let mut peers: Vec<Peer> = Vec::new();
    let mut problems = Vec::new();
    for (i, mut item) in items.into_iter().enumerate() {
        // 1.0.21 stored whatever port type it was given; a numeric string is still a port.
        if let Some(port) = item.get("port").and_then(|p| p.as_str()).and_then(|p| p.parse::<u16>().ok()) {
            item["port"] = port.into();
        }
        let peer = match serde_json::from_value::<Peer>(item) {
            Ok(peer) => peer,
            Err(e) => {
                problems.push(format!("entry {i}: {e}"));
                continue;
            }
        };
        if let Err(e) = check_entry(&peer) {
            problems.push(format!("entry {i}: {e}"));
            continue;
        }
        if peer.node_id == own_id || peers.iter().any(|p| p.node_id == peer.node_id) {
            continue;
        }
        // Duplicates by address:port (1.0.21 made one per restart): the latest seen wins.
        match peers.iter().position(|p| p.is_at(&peer.address, peer.port)) {
            Some(j) if peers[j].last_seen >= peer.last_seen => {}
            Some(j) => peers[j] = peer,
            None => peers.push(peer),
        }
    }
    (peers, problems)
}

fn check_entry(peer: &Peer) -> Result<(), Invalid> {
    if !peer.is_provisional() {
        check_node_id("nodeId", &peer.node_id)?;
    } else if peer.node_id.len() > MANUAL_PREFIX.len() + 300 {
        return Err(Invalid { field: "nodeId", problem: "too long".into() });
    }
    check_address("address", &peer.address)?;
    if peer.port == 0 {
        return Err(Invalid { field: "port", problem: "must be 1 to 65535".into() });
    }
    check_text("hostname", &peer.hostname, 253)?;
    if let Some(name) = &peer.name {
        check_name("name", name)?;
    }
    Ok(())
}

/// Renames a bad `peers.json` out of the way; returns the new name (or why it could not).
fn set_aside(path: &Path) -> String {
    let aside = path.with_extension(format!("json.invalid-{}", now_ms()));
    match std::fs::copy(path, &aside) {
        Ok(_) => aside.display().to_string(),
        Err(e) => format!("(not kept: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "00000000-0000-4000-8000-000000000000";
    const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
    const B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

    fn registry() -> (Registry, PathBuf) {
        let dir = std::env::temp_dir().join(format!("loopsy-registry-{}", crate::random::hex(6)));
        let path = dir.join("peers.json");
        (Registry::load(&path, ME), dir)
    }

    fn announced(id: &str, address: &str, port: u16) -> Announced {
        Announced {
            node_id: id.into(),
            hostname: "h".into(),
            address: address.into(),
            port,
            platform: "linux".into(),
            version: "1.0.21".into(),
            capabilities: vec![],
        }
    }

    fn manual(address: &str, port: u16) -> ManualAdd {
        ManualAdd { address: address.into(), port, ..Default::default() }
    }

    fn answer(id: &str, pin: Option<&str>) -> ProbeOutcome {
        ProbeOutcome::Answered { node_id: id.into(), version: "1.0.21".into(), proven_pin: pin.map(String::from) }
    }

    /// An announcement of `id` at `address:port` that the probe there confirmed (plain HTTP).
    fn seen(reg: &Registry, id: &str, address: &str, port: u16) -> Applied {
        reg.apply_announcement(&announced(id, address, port), Via::Mdns, &answer(id, None))
    }

    fn recorded(applied: Applied) -> Peer {
        match applied {
            Applied::Recorded(peer) => peer,
            other => panic!("expected the claim to be recorded, got {other:?}"),
        }
    }

    #[test]
    fn a_node_seen_again_at_the_same_place_under_a_new_id_replaces_only_an_unbound_entry() {
        let (reg, dir) = registry();
        recorded(seen(&reg, A, "10.0.0.2", 19532));
        recorded(seen(&reg, B, "10.0.0.2", 19532));
        let peers = reg.list();
        assert_eq!(peers.len(), 1, "{peers:?}");
        assert_eq!(peers[0].node_id, B);

        // A manual entry waiting for its id takes the id of the node at its address...
        reg.add_manual(ManualAdd { name: Some("bob".into()), ..manual("10.0.0.3", 19532) }).unwrap();
        recorded(seen(&reg, A, "10.0.0.3", 19532));
        let bob = reg.get(A).unwrap();
        assert_eq!((bob.name.as_deref(), bob.manually_added, bob.address.as_str()), (Some("bob"), true, "10.0.0.3"));
        // ...but once it is bob, another id at that place does not inherit bob's name and key.
        const C: &str = "cccccccc-0000-4000-8000-000000000003";
        recorded(seen(&reg, C, "10.0.0.3", 19532));
        assert_eq!(reg.get(A).unwrap().name.as_deref(), Some("bob"), "bob's entry stays");
        assert_eq!(reg.get(C).unwrap().name, None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unauthenticated_claims_move_unbound_entries_but_only_record_a_sighting_for_bound_ones() {
        let (reg, dir) = registry();
        const C: &str = "cccccccc-0000-4000-8000-000000000003";
        let pin = "ab".repeat(32);
        let pin = pin.as_str();
        recorded(seen(&reg, A, "10.0.0.2", 19532));
        reg.add_manual(ManualAdd { node_id: Some(B.into()), name: Some("bob".into()), ..manual("10.0.0.3", 19532) })
            .unwrap();
        reg.add_manual(ManualAdd { node_id: Some(C.into()), fingerprint: Some(pin.into()), ..manual("10.0.0.4", 1) })
            .unwrap();

        // A discovered-only entry follows (it is never sent a key by itself).
        assert_eq!(recorded(seen(&reg, A, "10.0.0.66", 19532)).address, "10.0.0.66");
        for (id, via) in [(B, Via::Mdns), (B, Via::Handshake), (C, Via::Mdns)] {
            let claim = reg.apply_announcement(&announced(id, "10.0.0.66", 19532), via, &answer(id, None));
            let Applied::Sighted(peer) = claim else { panic!("{id} moved on a {via:?} claim: {claim:?}") };
            assert_ne!(peer.address, "10.0.0.66");
            let sighting = peer.seen_at.unwrap();
            assert_eq!(
                (sighting.address.as_str(), sighting.port, sighting.via, sighting.answers),
                ("10.0.0.66", 19532, via, true)
            );
        }
        assert_eq!(reg.get(B).unwrap().endpoint(), "10.0.0.3:19532");
        // A pinned entry moves only with its own certificate proven at the new address.
        let other_pin = "cd".repeat(32);
        let wrong = reg.apply_announcement(&announced(C, "10.0.0.67", 2), Via::Mdns, &answer(C, Some(&other_pin)));
        assert!(matches!(wrong, Applied::Sighted(_)), "{wrong:?}");
        let failed = reg.apply_announcement(&announced(C, "10.0.0.67", 2), Via::Mdns, &ProbeOutcome::Failed);
        assert!(matches!(&failed, Applied::Sighted(p) if !p.seen_at.as_ref().unwrap().answers), "{failed:?}");
        let proven = recorded(reg.apply_announcement(&announced(C, "10.0.0.67", 2), Via::Mdns, &answer(C, Some(pin))));
        assert_eq!((proven.endpoint().as_str(), proven.seen_at), ("10.0.0.67:2", None));
        // The owner moves a bound entry to where it was seen.
        let moved = reg.confirm_address(B, "10.0.0.66", 19532).unwrap();
        assert_eq!(
            (moved.endpoint().as_str(), moved.seen_at, moved.status),
            ("10.0.0.66:19532", None, PeerStatus::Unknown)
        );
        assert_eq!(reg.get(A).map(|p| p.endpoint()), None, "the unbound entry there was folded into bob's");
        assert!(reg.confirm_address("unknown", "x", 1).is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_manual_address_answering_as_a_bound_peer_does_not_take_that_peers_entry() {
        let (reg, dir) = registry();
        reg.add_manual(ManualAdd { node_id: Some(A.into()), name: Some("bob".into()), ..manual("10.0.0.2", 19532) })
            .unwrap();
        let stranger = reg.add_manual(manual("10.0.0.66", 19532)).unwrap();
        assert_eq!(reg.record_probe(&stranger.node_id, &answer(A, None), false), Some(stranger.node_id.clone()));
        assert_eq!(reg.list().len(), 2, "not merged");
        let bob = reg.get(A).unwrap();
        assert_eq!(bob.address, "10.0.0.2");
        assert_eq!(bob.seen_at.map(|s| (s.address, s.via)), Some(("10.0.0.66".to_string(), Via::Probe)));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_manual_entry_learns_its_id_and_merges_with_a_known_node() {
        let (reg, dir) = registry();
        recorded(seen(&reg, A, "box.lan", 19532));
        let manual_entry = reg.add_manual(manual("10.0.0.2", 19532)).unwrap();
        assert!(manual_entry.is_provisional());
        assert_eq!(reg.record_probe(&manual_entry.node_id, &answer(A, None), false).as_deref(), Some(A));
        let peers = reg.list();
        assert_eq!(peers.len(), 1, "{peers:?}");
        assert_eq!((peers[0].address.as_str(), peers[0].manually_added), ("10.0.0.2", true));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn three_failures_make_a_peer_offline_and_one_answer_brings_it_back() {
        let (reg, dir) = registry();
        recorded(seen(&reg, A, "10.0.0.2", 1));
        for expected in [PeerStatus::Online, PeerStatus::Online, PeerStatus::Offline, PeerStatus::Offline] {
            reg.record_probe(A, &ProbeOutcome::Failed, false);
            assert_eq!(reg.get(A).unwrap().status, expected);
        }
        let wrong = answer(B, None);
        reg.record_probe(A, &wrong, false);
        assert_eq!(reg.get(A).unwrap().status, PeerStatus::Offline, "another node at the address is no proof");
        reg.record_probe(A, &answer(A, None), false);
        let peer = reg.get(A).unwrap();
        assert_eq!((peer.status, peer.failure_count), (PeerStatus::Online, 0));
        reg.record_probe(A, &ProbeOutcome::Failed, true);
        assert_eq!(reg.get(A).unwrap().status, PeerStatus::Offline, "after a goodbye one failure is enough");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_node_itself_is_never_listed() {
        let (reg, dir) = registry();
        assert_eq!(seen(&reg, ME, "10.0.0.9", 1), Applied::Ignored);
        assert!(reg.add_manual(ManualAdd { node_id: Some(ME.into()), ..manual("x", 1) }).is_err());
        assert!(reg.list().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn saved_entries_load_back_and_bad_files_are_kept_aside() {
        let (reg, dir) = registry();
        recorded(seen(&reg, A, "10.0.0.2", 19532));
        reg.save_now().unwrap();
        let again = Registry::load(&dir.join("peers.json"), ME);
        assert_eq!(again.list(), reg.list());

        std::fs::write(dir.join("peers.json"), b"{not json").unwrap();
        assert!(Registry::load(&dir.join("peers.json"), ME).list().is_empty());
        let kept = std::fs::read_dir(&dir).unwrap().filter_map(Result::ok).any(|e| {
            e.file_name().to_string_lossy().starts_with("peers.json.invalid-")
                && std::fs::read(e.path()).unwrap() == b"{not json"
        });
        assert!(kept, "the bad file is kept");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_1_0_21_file_with_string_ports_and_duplicates_is_cleaned_up() {
        let text = format!(
            r#"[{{"nodeId":"{A}","hostname":"h","address":"10.0.0.2","port":"19532","platform":"linux",
            "version":"1.0.21","capabilities":[],"status":"online","lastSeen":5,"failureCount":0,
            "trusted":false,"manuallyAdded":false}},
            {{"nodeId":"{B}","hostname":"h","address":"10.0.0.2","port":19532,"platform":"linux",
            "version":"1.0.21","capabilities":[],"status":"online","lastSeen":9,"failureCount":0,
            "trusted":false,"manuallyAdded":false}}]"#
        );
        let (peers, problems) = parse_file(text.as_bytes(), ME);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].node_id, B, "the most recently seen wins");
    }
}
