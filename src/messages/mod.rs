//! Agent messaging (`/api/v1/messages`): 1.0.21's convention on the context store (PROTOCOL.md
//! §6), delivered by the daemon instead of by each client, and made reliable.
//!
//! A message is written to `outbox:<id>` here (created with `ifRevision: 0`, so an id is never
//! used twice) and recorded in the delivery book (`outbox.rs`, `messages.json`) before it is sent
//! to `inbox:<peer hostname>:<id>` on the peer. A peer that cannot be reached gets it later: the
//! retrier (`deliver.rs`) tries again with back-off until it is delivered or its hour is over.
//! Acks travel the same way, to `ack:<us>:<id>` (one per message) and `ack:<us>` (1.0.21's
//! latest-id key) on the sender. The ids of acknowledged messages are remembered, so a late
//! re-delivery of one is dropped by the context PUT route instead of reappearing in the inbox.
//!
//! No tide here: `daemon/routes/messages.rs` parses and renders.

pub(crate) mod api;
mod deliver;
pub(crate) mod envelope;
mod kept;
pub(crate) mod outbox;
pub(crate) mod text;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::paths::Paths;
use crate::peers::{Peer, Registry};
use crate::store::{Put, Store, StoreError, Ttl};
use api::{AckRequest, Inbox, InboxMessage, MessageStatus, SendRequest, Sent, StatusReport};
use envelope::{Envelope, MESSAGE_TTL_SECS};
use outbox::{Backoff, Book, Delivery, Kind, Record};

/// Largest message body, in characters (what JSON Schema's `maxLength` counts, so the OpenAPI
/// document says exactly what is refused). The envelope is JSON-escaped once into the context
/// value and again into the PUT body: at most 7 bytes per character (a control character as
/// `\\u0001`), which keeps the worst case under every daemon's 1 MiB body limit.
pub(crate) const MAX_BODY_CHARS: usize = 64 * 1024;

/// Why a messaging operation failed; the message says what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum MessageError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    UnknownPeer(String),
    #[error("{0}")]
    NotFound(String),
    /// No way to reach the peer with a key (discovered only, or unpinned with TLS required).
    #[error("{0}")]
    NoRoute(String),
    #[error(transparent)]
    Full(#[from] outbox::Full),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Storage(String),
}

/// A cheap-clone handle on this daemon's messaging.
#[derive(Clone)]
pub(crate) struct Messages {
    inner: Arc<Inner>,
}

struct Inner {
    paths: Arc<Paths>,
    /// The config at start: the fallback when `config.yaml` cannot be read again.
    config: Arc<Config>,
    /// This node's messaging name.
    hostname: String,
    store: Store,
    registry: Registry,
    book: Mutex<Book>,
    /// Serialises writes of `messages.json`, so an older book never replaces a newer one.
    save_lock: Mutex<()>,
    /// Wakes the retrier (bounded to one: a pending wake-up is enough).
    wake: (smol::channel::Sender<()>, smol::channel::Receiver<()>),
}

impl Messages {
    /// Opens the delivery book of `paths`; a damaged book is set aside and reported.
    pub(crate) fn open(
        paths: Arc<Paths>,
        config: Arc<Config>,
        hostname: &str,
        store: Store,
        registry: Registry,
    ) -> Messages {
        let path = paths.messages_file();
        let now = crate::clock::now_ms();
        let book = Book::load(&path, now).unwrap_or_else(|e| {
            let aside = path.with_extension(format!("json.invalid-{now}"));
            log::error!("{}: {e:#}; moved to {} and starting with an empty outbox", path.display(), aside.display());
            let _ = std::fs::rename(&path, &aside);
            Book::default()
        });
        kept::prune(&paths.outbox_dir(), |id| book.is_queued_message(id));
        Messages {
            inner: Arc::new(Inner {
                paths,
                config,
                hostname: hostname.to_string(),
                store,
                registry,
                book: Mutex::new(book),
                save_lock: Mutex::new(()),
                wake: smol::channel::bounded(1),
            }),
        }
    }

    /// Sends a message: stored in our outbox, then delivered now or queued for retries.
    pub(crate) async fn send(&self, request: SendRequest) -> Result<Sent, MessageError> {
        let chars = request.body.chars().count();
        if chars > MAX_BODY_CHARS {
            return Err(MessageError::Invalid(format!(
                "the body has {chars} characters; a message body may have at most {MAX_BODY_CHARS} (send a file for more)"
            )));
        }
        let peer = self.find_peer(&request.to).await?;
        let client = self.client_for(&peer, &request.to).map_err(MessageError::NoRoute)?;
        // Unreachable now, and only known by address: its name is learnt when it is delivered,
        // and the first attempt waits for the retrier (it would only fail the same way).
        let (to, unreachable) = match self.known_name(&peer) {
            Some(name) => (name, None),
            None => match self.learn_name(&client, &peer).await {
                Ok(name) => (name, None),
                Err(error) => (peer.hostname.clone(), Some(format!("cannot reach {}: {error}", peer.endpoint()))),
            },
        };
        let provisional = unreachable.is_some();
        let now = crate::clock::now_ms();
        let envelope = self.write_outbox(&to, request.kind, request.body, now).await?;
        // What is delivered, on every attempt: `outbox:<id>` can be changed by anyone who may
        // write the context, this copy only by us.
        let dir = self.inner.paths.outbox_dir();
        let to_keep = envelope.clone();
        if let Err(e) = blocking::unblock(move || kept::keep(&dir, &to_keep)).await {
            let _ = self.inner.store.delete(&envelope::outbox_key(&envelope.id), None, now).await;
            return Err(MessageError::Storage(format!("cannot keep the message: {e:#}")));
        }
        let record = Record {
            kind: Kind::Message,
            id: envelope.id.clone(),
            to,
            provisional,
            peer: peer.node_id.clone(),
            spec: request.to,
            message_type: request.kind,
            state: Delivery::Queued,
            attempts: 0,
            last_error: unreachable.clone(),
            created_at: now,
            // The attempt below comes first; the retrier takes over if it fails.
            next_attempt_at: now + self.backoff().initial.as_millis() as u64,
            delivered_at: None,
            kept: true,
        };
        let added = {
            let mut book = self.book();
            // The first attempt is this call's (claimed before the retrier can see the record),
            // so the answer says what that attempt did.
            book.add(record, now).map(|()| unreachable.is_none() && book.begin(Kind::Message, &envelope.id))
        };
        let claimed = match added {
            Ok(claimed) => claimed,
            Err(full) => {
                let _ = self.inner.store.delete(&envelope::outbox_key(&envelope.id), None, now).await;
                kept::forget(&self.inner.paths.outbox_dir(), &envelope.id);
                return Err(full.into());
            }
        };
        let saved = self.save().await;
        self.first_attempt(Kind::Message, &envelope.id, claimed, saved).await?;
        self.sent(Kind::Message, &envelope.id, peer.endpoint(), envelope::inbox_key)
    }

    /// Messages for this node, oldest first; entries that are not valid envelopes are skipped.
    pub(crate) async fn inbox(&self) -> Result<Inbox, MessageError> {
        let prefix = envelope::inbox_prefix(&self.inner.hostname);
        let entries = self.inner.store.list(&prefix, crate::clock::now_ms()).await?;
        let mut messages: Vec<InboxMessage> = entries
            .into_iter()
            .filter_map(|entry| {
                let e = Envelope::parse(&entry.value)?;
                Some(InboxMessage { key: entry.key.to_string(), envelope: e })
            })
            .collect();
        messages.sort_by_key(|m| m.envelope.ts);
        Ok(Inbox { messages })
    }

    /// Acknowledges a message of our inbox: the ack goes to its sender (now or later), the
    /// entry is removed here and its id remembered.
    pub(crate) async fn ack(&self, request: AckRequest) -> Result<Sent, MessageError> {
        if let Some(id) = request.id.as_deref().filter(|id| !envelope::is_valid_id(id)) {
            return Err(MessageError::Invalid(format!(
                "'{id}' is not a message id (<ms>-<sender host>-<4 hex>, as the inbox lists them)"
            )));
        }
        let key = match (&request.key, &request.id) {
            (Some(key), _) => key.clone(),
            (None, Some(id)) => envelope::inbox_key(&self.inner.hostname, id),
            (None, None) => {
                return Err(MessageError::Invalid("give 'key' (the inbox key) or 'id' (the message id)".into()))
            }
        };
        if !key.starts_with("inbox:") {
            return Err(MessageError::Invalid(format!("'{key}' is not an inbox key (inbox:<host>:<id>)")));
        }
        let now = crate::clock::now_ms();
        let entry = match self.inner.store.get(&key, now).await {
            Err(StoreError::NotFound { .. }) => {
                return Err(MessageError::NotFound(format!(
                    "no message '{key}' in this inbox: it was acknowledged already, expired, or never arrived (list the inbox to see what is there)"
                )))
            }
            other => other?,
        };
        let envelope = Envelope::parse(&entry.value)
            .ok_or_else(|| MessageError::Invalid(format!("'{key}' does not hold a valid message envelope")))?;
        if let Some(id) = request.id.as_deref().filter(|id| *id != envelope.id) {
            return Err(MessageError::Invalid(format!("'{key}' holds message {}, not {id}", envelope.id)));
        }
        let sender = match self.find_sender(&envelope.from).await {
            Ok(sender) => {
                self.client_for(&sender, &envelope.from).map_err(MessageError::NoRoute)?;
                Some(sender)
            }
            // A peer we know only by address may be the sender, down now: which one is found
            // out when they answer again.
            Err(MessageError::UnknownPeer(_)) if self.has_unnamed_peers() => None,
            Err(e) => return Err(e),
        };
        let endpoint = sender.as_ref().map_or_else(|| "unknown until it answers".to_string(), Peer::endpoint);
        let record = Record {
            kind: Kind::Ack,
            id: envelope.id.clone(),
            to: envelope.from.clone(),
            provisional: sender.is_none(),
            peer: sender.map(|s| s.node_id).unwrap_or_default(),
            spec: envelope.from.clone(),
            message_type: envelope.kind,
            state: Delivery::Queued,
            attempts: 0,
            last_error: None,
            created_at: now,
            next_attempt_at: now + self.backoff().initial.as_millis() as u64,
            delivered_at: None,
            kept: false,
        };
        let claimed = {
            let mut book = self.book();
            book.add(record, now)?;
            // Before the entry goes: a re-delivery from now on is dropped.
            book.mark_seen(&envelope.id, now);
            book.begin(Kind::Ack, &envelope.id)
        };
        let stored = match self.save().await {
            Ok(()) => match self.inner.store.delete(&key, None, now).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e),
        };
        self.first_attempt(Kind::Ack, &envelope.id, claimed, stored).await?;
        self.sent(Kind::Ack, &envelope.id, endpoint, |_, _| key.clone())
    }

    /// What became of the messages sent to `spec`, and which of them it acknowledged.
    pub(crate) async fn status(&self, spec: &str) -> Result<StatusReport, MessageError> {
        let peer = self.find_peer(spec).await?;
        let records: Vec<Record> = self.book().messages().into_iter().filter(|r| r.peer == peer.node_id).collect();
        let hostname = match self.known_name(&peer) {
            Some(name) => name,
            None => match records.iter().rev().find(|r| !r.provisional) {
                Some(record) => record.to.clone(),
                None => match self.client_for(&peer, spec) {
                    Ok(client) => self.learn_name(&client, &peer).await.unwrap_or_else(|_| peer.hostname.clone()),
                    Err(_) => peer.hostname.clone(),
                },
            },
        };
        let now = crate::clock::now_ms();
        let store = &self.inner.store;
        let last_ack = store.get(&envelope::latest_ack_key(&hostname), now).await.ok().map(|e| e.value.to_string());
        let mut messages = Vec::new();
        for record in &records {
            messages.push(MessageStatus {
                id: record.id.clone(),
                ts: record.created_at,
                kind: record.message_type,
                state: record.state.as_str().into(),
                attempts: record.attempts,
                last_error: record.last_error.clone(),
                delivered_at: record.delivered_at,
                acked: false,
            });
        }
        // Messages a 1.0.21 client put in our outbox itself: sent, as far as we know.
        for entry in store.list("outbox:", now).await? {
            let Some(e) = Envelope::parse(&entry.value) else { continue };
            if e.to == hostname && !records.iter().any(|r| r.id == e.id) {
                let status = MessageStatus {
                    id: e.id,
                    ts: e.ts,
                    kind: e.kind,
                    state: "unknown".into(),
                    attempts: 0,
                    last_error: None,
                    delivered_at: None,
                    acked: false,
                };
                messages.push(status);
            }
        }
        for message in &mut messages {
            message.acked = last_ack.as_deref() == Some(message.id.as_str())
                || store.get(&envelope::ack_key(&hostname, &message.id), now).await.is_ok();
        }
        messages.sort_by_key(|m| m.ts);
        Ok(StatusReport { peer: spec.to_string(), node_id: peer.node_id, hostname, last_ack, messages })
    }

    /// Whether a PUT of `key` = `value` re-delivers a message already acknowledged here (it is
    /// then answered without being stored).
    pub(crate) fn is_redelivery(&self, key: &str, value: &str) -> bool {
        key.starts_with("inbox:")
            && envelope::envelope_id(value).is_some_and(|id| self.book().is_seen(&id, crate::clock::now_ms()))
    }

    /// Notes who delivered a message: `peer_name` is the name its key is listed under in
    /// `auth.allowedKeys`, so the registry peer of that name is the envelope's sender.
    pub(crate) async fn note_sender(&self, peer_name: &str, value: &str) {
        let Some(envelope) = Envelope::parse(value) else { return };
        let peers = self.inner.registry.list();
        let mut named = peers.iter().filter(|p| p.name.as_deref() == Some(peer_name));
        let (Some(peer), None) = (named.next(), named.next()) else { return };
        if self.known_name(peer).is_some() {
            return;
        }
        if self.book().learn_name(&peer.node_id, &envelope.from) {
            if let Err(e) = self.save().await {
                log::error!("{e}");
            }
        }
    }

    /// Creates `outbox:<id>` with a fresh id (compare-and-set on absence, so never one in use).
    async fn write_outbox(
        &self,
        to: &str,
        kind: envelope::MessageType,
        body: String,
        now: u64,
    ) -> Result<Envelope, MessageError> {
        let mut envelope =
            Envelope { from: self.inner.hostname.clone(), to: to.to_string(), ts: now, id: String::new(), kind, body };
        for _ in 0..16 {
            let random = u16::from_le_bytes(crate::random::bytes(2).try_into().expect("two bytes"));
            envelope.id = envelope::new_id(now, &self.inner.hostname, random);
            match self
                .inner
                .store
                .put(
                    &envelope::outbox_key(&envelope.id),
                    message_put(&envelope.to_value(), MESSAGE_TTL_SECS, Some(0)),
                    now,
                )
                .await
            {
                Ok(_) => return Ok(envelope),
                Err(StoreError::RevisionConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(MessageError::Storage("no free message id after 16 tries".into()))
    }

    /// The answer to a send or an ack, from the record's state now.
    fn sent(
        &self,
        kind: Kind,
        id: &str,
        endpoint: String,
        key: impl Fn(&str, &str) -> String,
    ) -> Result<Sent, MessageError> {
        let record = self
            .book()
            .get(kind, id)
            .cloned()
            .ok_or_else(|| MessageError::Storage(format!("record of {id} vanished")))?;
        let delivered = record.state == Delivery::Delivered;
        Ok(Sent {
            id: id.to_string(),
            key: key(&record.to, id),
            to: record.to,
            endpoint,
            kind: record.message_type,
            state: record.state.as_str().into(),
            error: if delivered { None } else { record.last_error },
        })
    }

    /// After a record was added (and claimed by this call when `claimed`): its first attempt
    /// now if what came before it (`ready`) succeeded, else the claim goes back to the retrier.
    async fn first_attempt(
        &self,
        kind: Kind,
        id: &str,
        claimed: bool,
        ready: Result<(), MessageError>,
    ) -> Result<(), MessageError> {
        if ready.is_err() || !claimed {
            if claimed {
                self.book().release(kind, id);
            }
            self.wake_retrier();
            return ready;
        }
        let record = self.book().get(kind, id).cloned();
        match record {
            Some(record) => self.run_attempt(record).await,
            None => self.book().release(kind, id),
        }
        Ok(())
    }

    /// Makes the retrier look at the book again (a record was added or its time changed).
    fn wake_retrier(&self) {
        let _ = self.inner.wake.0.try_send(());
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.book.lock().expect("message book lock")
    }

    /// Writes `messages.json` (atomically, fsync'd).
    async fn save(&self) -> Result<(), MessageError> {
        let inner = self.inner.clone();
        blocking::unblock(move || {
            let _writer = inner.save_lock.lock().expect("message book save lock");
            let bytes = inner.book.lock().expect("message book lock").to_bytes();
            crate::durable::write(&inner.paths.messages_file(), &bytes, crate::durable::Mode::Public)
        })
        .await
        .map_err(|e| MessageError::Storage(format!("cannot write the outbox: {e:#}")))
    }

    fn backoff(&self) -> Backoff {
        let messaging = &self.inner.config.messaging;
        Backoff {
            initial: Duration::from_millis(messaging.retry_initial),
            max: Duration::from_millis(messaging.retry_max),
        }
    }
}

/// A context write of a message value with its TTL.
fn message_put(value: &str, ttl_secs: u64, if_revision: Option<u64>) -> Put {
    let ttl = Ttl::parse(Some(&ttl_secs.into())).expect("message TTLs are valid");
    Put { value: value.into(), ttl, if_revision, from_node_id: "local".into() }
}
