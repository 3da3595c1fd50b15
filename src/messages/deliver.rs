//! Reaching peers: which registry entry a name means, its messaging name, the client with its
//! key and pin, one delivery attempt, and the retrier the daemon owns.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::envelope::{self, Envelope, ACK_TTL_SECS, MESSAGE_TTL_SECS};
use super::kept;
use super::outbox::{Kind, Record};
use super::{message_put, MessageError, Messages};
use crate::config::Config;
use crate::peer::{base_url, Client, Method};
use crate::peers::Peer;
use crate::percent;
use crate::resolve::{describe, find, key_for, pin_for, Found};
use crate::shutdown::Shutdown;

/// How the user named `peer` (its name, else its address for a peer added by hand), so asking
/// it for its name sends the key the user meant; `None` for a peer only discovered, which is
/// never sent a key by itself (see `resolve`).
fn user_spec(peer: &Peer) -> Option<String> {
    match &peer.name {
        Some(name) => Some(name.clone()),
        None => peer.manually_added.then(|| peer.endpoint()),
    }
}

/// How long a peer's `/status` may take when we only want its name.
const NAME_TIMEOUT: Duration = Duration::from_secs(3);
/// The retrier looks at the book at least this often (expiries, forgotten records).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Messages {
    /// The registry peer `spec` names (name, hostname, node id or prefix, address[:port]), or a
    /// peer known by address whose messaging name we learnt is `spec`.
    pub(super) async fn find_peer(&self, spec: &str) -> Result<Peer, MessageError> {
        let peers = self.inner.registry.list();
        match find(&peers, spec) {
            Found::One(peer) => Ok(peer),
            Found::Several(several) => {
                let lines: Vec<String> = several.iter().map(|p| format!("  {}", describe(p))).collect();
                Err(MessageError::Invalid(format!(
                    "'{spec}' fits {} peers:\n{}\nuse a name, a longer node id or address:port",
                    several.len(),
                    lines.join("\n")
                )))
            }
            Found::None => self.peer_by_learnt_name(&peers, spec).ok_or_else(|| {
                MessageError::UnknownPeer(format!(
                    "unknown peer '{spec}': no peer in the registry has that name, hostname, node id or address \
                     (list them with GET /api/v1/peers or `loopsy peers`; add one with `loopsy peers add`)"
                ))
            }),
        }
    }

    /// The sender of a message, by the hostname in its envelope: asks the peers we know only by
    /// address for their names if needed.
    pub(super) async fn find_sender(&self, hostname: &str) -> Result<Peer, MessageError> {
        match self.find_peer(hostname).await {
            Err(MessageError::UnknownPeer(_)) => {}
            found => return found,
        }
        let unnamed: Vec<Peer> =
            self.inner.registry.list().into_iter().filter(|p| self.known_name(p).is_none()).collect();
        let lookups: Vec<_> = unnamed
            .into_iter()
            .filter_map(|peer| {
                let client = self.client_for(&peer, &user_spec(&peer)?).ok()?;
                let this = self.clone();
                Some(smol::spawn(async move { this.learn_name(&client.with_timeout(NAME_TIMEOUT), &peer).await }))
            })
            .collect();
        for lookup in lookups {
            let _ = lookup.await;
        }
        self.find_peer(hostname).await.map_err(|_| {
            MessageError::UnknownPeer(format!(
                "the sender '{hostname}' is not a known peer, so the ack cannot reach it: add it with \
                 `loopsy peers add <address> <port> --name <name> --key <its key>` and acknowledge again"
            ))
        })
    }

    /// Whether some registry peer we could reach has a messaging name we do not know yet.
    pub(super) fn has_unnamed_peers(&self) -> bool {
        self.inner
            .registry
            .list()
            .iter()
            .any(|p| self.known_name(p).is_none() && user_spec(p).is_some_and(|spec| self.client_for(p, &spec).is_ok()))
    }

    fn peer_by_learnt_name(&self, peers: &[Peer], name: &str) -> Option<Peer> {
        let mut matching = peers.iter().filter(|p| self.learnt_name(p).is_some_and(|n| n.eq_ignore_ascii_case(name)));
        match (matching.next(), matching.next()) {
            (Some(peer), None) => Some(peer.clone()),
            _ => None,
        }
    }

    /// The peer's messaging name when known without asking it: the registry's hostname, unless
    /// that is only its address (a peer added by address and never introduced), else a name
    /// learnt before.
    pub(super) fn known_name(&self, peer: &Peer) -> Option<String> {
        let host = peer.hostname.as_str();
        let address_only = host.is_empty()
            || host.eq_ignore_ascii_case(&peer.address)
            || host.eq_ignore_ascii_case("localhost")
            || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok();
        if !address_only {
            return Some(peer.hostname.clone());
        }
        self.learnt_name(peer)
    }

    /// The name learnt for `peer`: under its node id, or under the id it had while it was only
    /// an address (a manual entry takes its real node id at its first probe, which may come
    /// between learning the name and using it).
    fn learnt_name(&self, peer: &Peer) -> Option<String> {
        let book = self.book();
        book.name_of(&peer.node_id)
            .or_else(|| book.name_of(&crate::peers::manual_id(&peer.address, peer.port)))
            .map(String::from)
    }

    /// Asks the peer's `/status` for its hostname (its messaging name, §6.1) and remembers it.
    pub(super) async fn learn_name(&self, client: &Client, peer: &Peer) -> Result<String, String> {
        let client =
            client.clone().with_timeout(NAME_TIMEOUT.min(self.delivery_timeout())).with_body_limit(1024 * 1024);
        let status: Value = client.get("/api/v1/status").await.map_err(|e| e.to_string())?;
        let name =
            status["hostname"].as_str().filter(|n| !n.trim().is_empty()).ok_or("its /status names no hostname")?;
        if self.book().learn_name(&peer.node_id, name) {
            if let Err(e) = self.save().await {
                log::error!("{e}");
            }
        }
        Ok(name.to_string())
    }

    /// A client for `peer` named as `spec`, with the key and pin `resolve` would use.
    /// The config is read again, so peers paired since the start are reached with their key.
    pub(super) fn client_for(&self, peer: &Peer, spec: &str) -> Result<Client, String> {
        let config = self.current_config();
        let key = key_for(peer, spec, &config, None)?;
        let pin = pin_for(peer, &config);
        if pin.is_none() && !config.tls.allow_insecure_peers {
            return Err(format!(
                "peer '{spec}' has no pinned certificate and tls.allowInsecurePeers is false: pair with it (`loopsy pair`)"
            ));
        }
        Ok(Client::pinned(&base_url(&peer.address, peer.port), Some(key), pin).with_timeout(self.delivery_timeout()))
    }

    fn current_config(&self) -> Arc<Config> {
        match Config::load(&self.inner.paths) {
            Ok(config) => Arc::new(config),
            Err(e) => {
                log::warn!("messaging uses the keys read at start: {e}");
                self.inner.config.clone()
            }
        }
    }

    fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.messaging.delivery_timeout)
    }

    /// Delivers a claimed record and books the outcome.
    pub(super) async fn run_attempt(&self, record: Record) {
        let outcome = self.deliver(&record).await;
        if let Err(error) = &outcome {
            log::debug!("delivery of {:?} {} to {} failed: {error}", record.kind, record.id, record.to);
        }
        let jitter = f64::from(crate::random::bytes(1)[0]) / 255.0;
        let delay = self.backoff().delay(record.attempts + 1, jitter);
        let delivered = self.book().finish(record.kind, &record.id, outcome, crate::clock::now_ms(), delay);
        if delivered {
            if let Err(e) = self.save().await {
                log::error!("{e}");
            }
            if record.kind == Kind::Message {
                kept::forget(&self.inner.paths.outbox_dir(), &record.id);
            }
        }
        // The next attempt time changed.
        self.wake_retrier();
    }

    /// Puts the record's keys on the peer. `Ok(Some(name))` when the peer's name was learnt.
    async fn deliver(&self, record: &Record) -> Result<Option<String>, String> {
        let registered = self.inner.registry.get(&record.peer).or_else(|| {
            // A manual entry that learnt its real node id since: the same address and port.
            self.inner.registry.list().into_iter().find(|p| crate::peers::manual_id(&p.address, p.port) == record.peer)
        });
        let peer = match registered {
            Some(peer) => peer,
            // An ack's sender was not known by name yet.
            None => self.find_sender(&record.spec).await.map_err(|e| e.to_string())?,
        };
        let client = self.client_for(&peer, &record.spec)?;
        let put = |key: String, value: String, ttl: u64| {
            let client = client.clone();
            async move {
                let path = format!("/api/v1/context/{}", percent::encode(&key));
                client.call::<Value>(Method::Put, &path, Some(&json!({"value": value, "ttl": ttl}))).await.map(drop)
            }
        };
        match record.kind {
            Kind::Message => {
                let (to, value, learnt) = self.outbox_value(record, &client, &peer).await?;
                put(envelope::inbox_key(&to, &record.id), value, MESSAGE_TTL_SECS).await.map_err(|e| e.to_string())?;
                Ok(learnt)
            }
            Kind::Ack => {
                let me = &self.inner.hostname;
                put(envelope::ack_key(me, &record.id), record.id.clone(), ACK_TTL_SECS)
                    .await
                    .map_err(|e| e.to_string())?;
                put(envelope::latest_ack_key(me), record.id.clone(), ACK_TTL_SECS).await.map_err(|e| e.to_string())?;
                Ok(None)
            }
        }
    }

    /// The envelope to deliver: the one kept at send time (`kept.rs`), never what `outbox:<id>`
    /// says now, which others may have changed. When the peer's name was not known at send time
    /// it is learnt now, and the kept envelope and the outbox entry are rewritten with it.
    async fn outbox_value(
        &self,
        record: &Record,
        client: &Client,
        peer: &Peer,
    ) -> Result<(String, String, Option<String>), String> {
        let store = &self.inner.store;
        let key = envelope::outbox_key(&record.id);
        let dir = self.inner.paths.outbox_dir();
        let now = crate::clock::now_ms();
        let mut envelope = if record.kept {
            kept::load(&dir, &record.id)
                .ok_or_else(|| format!("the envelope of {} kept at send time is gone", record.id))?
        } else {
            // A record of an older version, which kept nothing: `outbox:<id>` is all there is.
            let entry = store.get(&key, now).await.map_err(|_| format!("'{key}' is gone (expired or deleted)"))?;
            Envelope::parse(&entry.value).ok_or_else(|| format!("'{key}' is not a valid envelope"))?
        };
        if !record.provisional {
            return Ok((record.to.clone(), envelope.to_value(), None));
        }
        let name = self.learn_name(client, peer).await?;
        envelope.to = name.clone();
        let value = envelope.to_value();
        if record.kept {
            let (dir, to_keep) = (dir.clone(), envelope.clone());
            blocking::unblock(move || kept::keep(&dir, &to_keep)).await.map_err(|e| format!("{e:#}"))?;
        }
        // 1.0.21's record follows, for readers of the context, with the TTL it has left.
        if let Ok(entry) = store.get(&key, now).await {
            let ttl_left = (entry.expires_at.unwrap_or(now + 1000).saturating_sub(now) / 1000).max(1);
            store.put(&key, message_put(&value, ttl_left, None), now).await.map_err(|e| e.to_string())?;
        }
        Ok((name.clone(), value, Some(name)))
    }

    /// Retries queued deliveries when they are due, until shutdown. The daemon owns this task;
    /// attempts in flight are dropped with it (their records stay queued in the book).
    pub(crate) async fn run_retries(self, shutdown: Shutdown) {
        let mut attempts: Vec<smol::Task<()>> = Vec::new();
        loop {
            let now = crate::clock::now_ms();
            let (changed, due, next) = {
                let mut book = self.book();
                let changed = book.sweep(now);
                let (due, next) = book.due(now);
                let claimed: Vec<Record> = due.into_iter().filter(|r| book.begin(r.kind, &r.id)).collect();
                (changed, claimed, next)
            };
            if changed {
                if let Err(e) = self.save().await {
                    log::error!("{e}");
                }
                let dir = self.inner.paths.outbox_dir();
                let this = self.clone();
                blocking::unblock(move || kept::prune(&dir, |id| this.book().is_queued_message(id))).await;
            }
            attempts.retain(|task| !task.is_finished());
            for record in due {
                let this = self.clone();
                attempts.push(smol::spawn(async move { this.run_attempt(record).await }));
            }
            let wait = next.map_or(SWEEP_EVERY, |at| Duration::from_millis(at.saturating_sub(now))).min(SWEEP_EVERY);
            let woken = async {
                let _ = self.inner.wake.1.recv().await;
            };
            let stop = shutdown.until(crate::clock::timeout(wait, woken)).await.is_none();
            if stop {
                return;
            }
        }
    }
}
