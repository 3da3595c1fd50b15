//! The daemon's pairing service: hosts a session (`loopsy pair`) or joins one on another
//! machine (`loopsy pair <address>`), and applies the result to the config and the keyring.
//!
//! Both roles run in the daemons, so key material never passes through a CLI. The protocol is
//! in `crate::pairing`; this file only moves its messages and applies the outcome.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tide::http::StatusCode;

use super::error::{ApiError, ErrorCode};
use super::state::State;
use crate::pairing::channel::{from_hex, Channel};
use crate::pairing::session::{Code, Finish, Host, Joiner, Offer, PairError, LIFETIME_MS};
use crate::pairing::spake2::Role;
use crate::pairing::wire::{Exchange, FinishAnswer, FinishRequest, JoinRequest, Sealed, Share, ShareAnswer};
use crate::peer::{Client, ClientError, Method};

/// The one pairing slot of a daemon.
#[derive(Clone, Default)]
pub(crate) struct Pairing {
    slot: Arc<Mutex<Slot>>,
}

#[derive(Default)]
enum Slot {
    #[default]
    Idle,
    Hosting {
        host: Box<Host>,
        mine: Offer,
        /// The name the peer was saved under, once both sides confirmed.
        applied: Option<String>,
        /// Where the joiner's daemon paired from: its address for later calls.
        joiner_address: Option<String>,
    },
    Joining(Box<Joined>),
}

/// A joined session after the offers were exchanged.
struct Joined {
    channel: Channel,
    peer: Offer,
    mine: Offer,
    address: String,
    port: u16,
    expires_at: u64,
}

fn decode_hex(text: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    from_hex(text).ok_or_else(|| ApiError::new(ErrorCode::PairingInvalid, format!("'{what}' is not hex")))
}

/// This daemon's offer, with a key freshly minted for the other side alone.
fn my_offer(state: &State) -> Result<Offer, ApiError> {
    let identity = crate::tls::Identity::load_or_create(&state.paths, &state.node.hostname)
        .map_err(|e| ApiError::internal(format!("cannot make the TLS certificate: {e:#}")))?;
    Ok(Offer {
        node_id: state.node.id.to_string(),
        hostname: state.node.hostname.clone(),
        port: state.node.port,
        fingerprint: identity.fingerprint.to_string(),
        api_key: crate::random::api_key(),
    })
}

impl Pairing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().expect("pairing lock")
    }

    fn busy(slot: &Slot, now: u64) -> bool {
        match slot {
            Slot::Idle => false,
            Slot::Hosting { host, .. } => matches!(host.status(now).state, "waiting" | "exchanged"),
            Slot::Joining(joined) => now < joined.expires_at,
        }
    }

    /// `POST /pair/start`: a new session with a fresh code.
    pub(crate) fn start(&self, state: &State) -> Result<serde_json::Value, ApiError> {
        let now = crate::clock::now_ms();
        let mine = my_offer(state)?;
        let mut slot = self.lock();
        if Pairing::busy(&slot, now) {
            return Err(ApiError::new(ErrorCode::PairingConflict, "a pairing session is already active"));
        }
        let host = Host::with_lifetime(now, lifetime_ms());
        let answer = json!({
            "code": host.code.as_str(),
            "expiresAt": host.expires_at,
            "port": state.node.port,
            "addresses": crate::netif::local_addresses().iter().filter(|ip| ip.is_ipv4()).map(|ip| ip.to_string()).collect::<Vec<_>>(),
        });
        *slot = Slot::Hosting { host: Box::new(host), mine, applied: None, joiner_address: None };
        Ok(answer)
    }

    /// `GET /pair/status` for the local CLI.
    pub(crate) fn status(&self) -> serde_json::Value {
        let now = crate::clock::now_ms();
        match &*self.lock() {
            Slot::Idle => json!({"role": "none"}),
            Slot::Hosting { host, applied, .. } => {
                let mut status = serde_json::to_value(host.status(now)).expect("status serialises");
                status["role"] = "host".into();
                if let Some(name) = applied {
                    status["peerName"] = name.as_str().into();
                }
                status
            }
            Slot::Joining(joined) => json!({
                "role": "joiner", "state": if now < joined.expires_at { "exchanged" } else { "expired" },
                "sas": joined.channel.sas, "peerHostname": joined.peer.hostname, "expiresAt": joined.expires_at,
            }),
        }
    }

    /// `DELETE /pair`: give up whatever is in progress.
    pub(crate) fn cancel(&self) {
        let mut slot = self.lock();
        match &mut *slot {
            Slot::Hosting { host, .. } => host.cancel(),
            _ => *slot = Slot::Idle,
        }
    }

    fn with_host<T>(&self, f: impl FnOnce(&mut Host, u64) -> Result<T, PairError>) -> Result<T, ApiError> {
        let now = crate::clock::now_ms();
        match &mut *self.lock() {
            Slot::Hosting { host, .. } => f(host, now).map_err(ApiError::from),
            _ => Err(ApiError::from(PairError::NoSession)),
        }
    }

    /// `POST /pair/spake2` from the joining daemon at address `from`.
    pub(crate) fn host_spake2(&self, body: &Share, from: IpAddr) -> Result<ShareAnswer, ApiError> {
        let share = decode_hex(&body.share, "share")?;
        let (share, confirm) = self.with_host(|host, now| host.spake2(&share, from, now))?;
        Ok(ShareAnswer { share, confirm })
    }

    /// `POST /pair/exchange` from the joining daemon at address `from`.
    pub(crate) fn host_exchange(&self, body: &Exchange, from: IpAddr) -> Result<Sealed, ApiError> {
        let confirm = decode_hex(&body.confirm, "confirm")?;
        decode_hex(&body.offer, "offer")?;
        let now = crate::clock::now_ms();
        match &mut *self.lock() {
            Slot::Hosting { host, mine, joiner_address, .. } => {
                let offer = host.exchange(&confirm, &body.offer, mine, from, now)?;
                // Where the joiner's daemon is reached later: the address it paired from.
                *joiner_address = Some(from.to_canonical().to_string());
                Ok(Sealed { offer })
            }
            _ => Err(ApiError::from(PairError::NoSession)),
        }
    }

    /// `POST /pair/finish` from the joining daemon: its human's answer.
    pub(crate) fn host_finish(&self, state: &State, body: &FinishRequest) -> Result<FinishAnswer, ApiError> {
        // A malformed tag is the request's fault whatever the session's state.
        decode_hex(&body.tag, "tag")?;
        let finish = self.with_host(|host, now| host.confirm_remote(body.confirmed, &body.tag, now))?;
        self.apply_host_result(state)?;
        Ok(match finish {
            Finish::Waiting => FinishAnswer { state: "waiting".into(), tag: None },
            Finish::Cancelled => FinishAnswer { state: "cancelled".into(), tag: None },
            Finish::Done { tag } => FinishAnswer { state: "done".into(), tag: Some(tag) },
        })
    }

    /// `POST /pair/confirm` on the host: its human's answer.
    pub(crate) fn host_confirm(&self, state: &State, confirmed: bool) -> Result<serde_json::Value, ApiError> {
        self.with_host(|host, now| host.confirm_local(confirmed, now))?;
        self.apply_host_result(state)?;
        Ok(self.status())
    }

    /// Once both humans said yes, writes the peer into the config, exactly once.
    fn apply_host_result(&self, state: &State) -> Result<(), ApiError> {
        let mut slot = self.lock();
        let Slot::Hosting { host, mine, applied, joiner_address } = &mut *slot else { return Ok(()) };
        let Some(peer) = host.completed() else { return Ok(()) };
        if applied.is_some() {
            return Ok(());
        }
        let address = joiner_address.clone().unwrap_or_else(|| peer.hostname.clone());
        let name = apply(state, peer, mine, &address)
            .map_err(|e| ApiError::internal(format!("cannot save the pairing: {e:#}")))?;
        *applied = Some(name);
        Ok(())
    }
}

/// The session lifetime: five minutes. Test builds (the `test-hooks` feature, which only
/// `cargo test` turns on) read `LOOPSY_PAIRING_LIFETIME_MS` for tests of expiry; a daemon
/// anyone installs has no way to stretch a pairing window from its environment.
fn lifetime_ms() -> u64 {
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = std::env::var("LOOPSY_PAIRING_LIFETIME_MS").ok().and_then(|v| v.parse().ok()) {
        return ms;
    }
    LIFETIME_MS
}

/// Writes a completed pairing: keys both ways, the pin, the peer; then takes effect at once.
/// Returns the name the peer is saved under.
fn apply(state: &State, peer: &Offer, mine: &Offer, address: &str) -> anyhow::Result<String> {
    let registry = state.fleet.peers.list();
    let pairing = crate::config::Pairing {
        hostname: &peer.hostname,
        address,
        port: peer.port,
        fingerprint: &peer.fingerprint,
        accepted_key: &mine.api_key,
        presented_key: &peer.api_key,
    };
    // A name already used by another peer (paired with another certificate, a 1.0.21 key, a key
    // we present, or a registry entry of another node) is never overwritten (A6).
    let (config, name) = crate::config::save_pairing(&state.paths, &pairing, |in_config| {
        free_name(&peer.hostname, &peer.node_id, |candidate| {
            in_config(candidate)
                || registry.iter().any(|p| p.name.as_deref() == Some(candidate) && p.node_id != peer.node_id)
        })
    })?;
    if name != peer.hostname {
        log::warn!("another peer here is already named '{}': the new peer is named '{name}'", peer.hostname);
    }
    state.gate.keyring.replace(&config);
    super::enable_tls(state)?;
    let add = crate::peers::registry::ManualAdd {
        address: address.to_string(),
        port: peer.port,
        node_id: Some(peer.node_id.clone()),
        hostname: Some(peer.hostname.clone()),
        name: Some(name.clone()),
        fingerprint: Some(peer.fingerprint.clone()),
    };
    match state.fleet.peers.add_manual(add) {
        Ok(entry) => state.fleet.nudger.send(crate::peers::health::Nudge::ProbeNow(entry.node_id)),
        Err(e) => log::warn!("the paired peer could not enter the registry: {e}"),
    }
    log::info!("paired with {} ({}) at {address}:{}", name, peer.node_id, peer.port);
    Ok(name)
}

/// `hostname` if it is free, else `hostname-<8 of the node id>`, else that with `-2`, `-3`, ….
fn free_name(hostname: &str, node_id: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(hostname) {
        return hostname.to_string();
    }
    let short: String = node_id.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    let base = format!("{hostname}-{short}");
    std::iter::once(base.clone())
        .chain((2..).map(|n| format!("{base}-{n}")))
        .find(|candidate| !taken(candidate))
        .expect("an unbounded list of names has a free one")
}

/// The joiner's side, driven from `POST /pair/join` and `POST /pair/confirm`.
impl Pairing {
    pub(crate) async fn join(&self, state: &State, request: JoinRequest) -> Result<serde_json::Value, ApiError> {
        let code = Code::parse(&request.code)
            .ok_or_else(|| ApiError::new(ErrorCode::PairingInvalid, "the code has 6 digits"))?;
        let port = request.port.unwrap_or(crate::config::DEFAULT_PORT);
        if Pairing::busy(&self.lock(), crate::clock::now_ms()) {
            return Err(ApiError::new(ErrorCode::PairingConflict, "a pairing session is already active here"));
        }
        let mine = my_offer(state)?;
        let client = pairing_client(&request.address, port).await?;
        let joiner = Joiner::new(&code);
        let answer = spake2_when_allowed(&client, &Share { share: joiner.share() }).await?;
        let (host_share, host_confirm) = (decode_hex(&answer.share, "share")?, decode_hex(&answer.confirm, "confirm")?);
        let (channel, confirm) = match joiner.confirm(&host_share, &host_confirm) {
            Ok(ok) => ok,
            Err(_) => {
                // Tell the host, which counts the attempt and says how many remain.
                let wrong = Exchange { confirm: "00".repeat(32), offer: String::new() };
                call::<Sealed>(&client, "/api/v1/pair/exchange", &wrong).await?;
                return Err(ApiError::from(PairError::WrongCode(0)));
            }
        };
        let exchange = Exchange { confirm, offer: mine.seal(&channel, Role::B) };
        let sealed: Sealed = call(&client, "/api/v1/pair/exchange", &exchange).await?;
        let peer = Offer::open(&channel, Role::A, &sealed.offer)?;
        let answer = json!({"sas": channel.sas, "peerHostname": peer.hostname, "peerNodeId": peer.node_id});
        let expires_at = crate::clock::now_ms() + lifetime_ms();
        let joined = Joined { channel, peer, mine, address: request.address, port, expires_at };
        *self.lock() = Slot::Joining(Box::new(joined));
        Ok(answer)
    }

    /// `POST /pair/confirm`: the local human's answer, on either side.
    pub(crate) async fn confirm(&self, state: &State, confirmed: bool) -> Result<serde_json::Value, ApiError> {
        if matches!(&*self.lock(), Slot::Hosting { .. }) {
            return self.host_confirm(state, confirmed);
        }
        let (statement, tag, base, pin, expires_at) = {
            let slot = self.lock();
            let Slot::Joining(joined) = &*slot else { return Err(ApiError::from(PairError::NoSession)) };
            let statement = if confirmed { "confirm" } else { "cancel" };
            let base = crate::peer::base_url(&joined.address, joined.port);
            let pin = crate::tls::Fingerprint::parse(&joined.peer.fingerprint);
            (statement, joined.channel.tag(Role::B, statement), base, pin, joined.expires_at)
        };
        let request = FinishRequest { confirmed, tag };
        loop {
            let answer = finish_with_host(&base, pin.clone(), &request).await?;
            match answer.state.as_str() {
                "waiting" if confirmed && crate::clock::now_ms() < expires_at => {
                    async_io::Timer::after(Duration::from_millis(250)).await;
                }
                "waiting" => {
                    *self.lock() = Slot::Idle;
                    return Err(ApiError::from(if confirmed { PairError::Expired } else { PairError::Cancelled }));
                }
                "done" if statement == "confirm" => return self.finish_joined(state, answer.tag.unwrap_or_default()),
                _ => {
                    *self.lock() = Slot::Idle;
                    return Ok(json!({"state": "cancelled", "message": "the pairing was cancelled"}));
                }
            }
        }
    }

    fn finish_joined(&self, state: &State, host_tag: String) -> Result<serde_json::Value, ApiError> {
        let slot = std::mem::take(&mut *self.lock());
        let Slot::Joining(joined) = slot else { return Err(ApiError::from(PairError::NoSession)) };
        joined.channel.check_tag(Role::A, "done", &host_tag).map_err(|_| ApiError::from(PairError::Tampered))?;
        let name = apply(state, &joined.peer, &joined.mine, &joined.address)
            .map_err(|e| ApiError::internal(format!("cannot save the pairing: {e:#}")))?;
        Ok(json!({"state": "done", "peer": name, "nodeId": joined.peer.node_id}))
    }
}

/// A client for the host's pairing endpoints: plain HTTP, or HTTPS if that is all it serves.
async fn pairing_client(address: &str, port: u16) -> Result<Client, ApiError> {
    // Only an IP or a host name becomes a URL (the HTTP client panics on some other hosts).
    let address = crate::peers::check_address("address", address)
        .map_err(|e| ApiError::new(ErrorCode::PairingInvalid, e.to_string()))?;
    if port == 0 {
        return Err(ApiError::new(ErrorCode::PairingInvalid, "port must be 1 to 65535"));
    }
    let plain = crate::peer::base_url(&address, port);
    crate::peer::check_base_url(&plain).map_err(|e| ApiError::new(ErrorCode::PairingInvalid, e))?;
    let mut last = String::new();
    for base in [plain.clone(), plain.replacen("http://", "https://", 1)] {
        let client = Client::for_pairing(&base).with_timeout(Duration::from_secs(10));
        match client.get::<serde_json::Value>("/api/v1/health").await {
            Ok(_) => return Ok(client),
            Err(e) => last = e.to_string(),
        }
    }
    Err(ApiError::new(ErrorCode::PeerUnreachable, format!("cannot reach {address}:{port}: {last}")))
}

/// Sends our share, waiting out the host's back-off (429) if other guesses came first: a
/// stranger's tries slow a pairing down, they do not stop it.
async fn spake2_when_allowed(client: &Client, share: &Share) -> Result<ShareAnswer, ApiError> {
    let give_up = std::time::Instant::now() + JOIN_PATIENCE;
    loop {
        match call(client, "/api/v1/pair/spake2", share).await {
            Err(err) if err.status() == StatusCode::TooManyRequests && std::time::Instant::now() < give_up => {
                log::info!("the host asks to wait before the next pairing attempt ({err}); retrying");
                async_io::Timer::after(Duration::from_secs(1)).await;
            }
            answer => return answer,
        }
    }
}

/// How long a joiner waits out the host's back-off at most (its longest wait is 30 s).
const JOIN_PATIENCE: Duration = Duration::from_secs(40);

/// A call to the host's pairing endpoints, with its errors passed through to our caller.
async fn call<T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
    body: &impl Serialize,
) -> Result<T, ApiError> {
    client.call(Method::Post, path, Some(body)).await.map_err(|err| match err {
        ClientError::Remote { status: 404, message, .. } if message.starts_with("Route ") => ApiError::new(
            ErrorCode::PeerUnreachable,
            "the other machine runs loopsy 1.0.21 (or another version without secure pairing): \
             connect to it with `loopsy peers add <address> --key <its key>`",
        ),
        // Plain HTTP refused by a host with TLS on: the caller retries over HTTPS.
        ClientError::Remote { code: Some(code), message, .. } if code == ErrorCode::TlsRequired as u64 => {
            ApiError::new(ErrorCode::PeerUnreachable, message)
        }
        other => other.into(),
    })
}

/// Sends the finish message; once the host switched to TLS, over TLS pinned to its certificate.
async fn finish_with_host(
    base: &str,
    pin: Option<crate::tls::Fingerprint>,
    request: &FinishRequest,
) -> Result<FinishAnswer, ApiError> {
    let plain = Client::for_pairing(base).with_timeout(Duration::from_secs(10));
    match call(&plain, "/api/v1/pair/finish", request).await {
        Ok(answer) => Ok(answer),
        Err(err) if err.status() == StatusCode::BadGateway => {
            let pinned = Client::pinned(base, None, pin).with_timeout(Duration::from_secs(10));
            call(&pinned, "/api/v1/pair/finish", request).await
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pairing_takes_a_free_name_and_never_another_peers() {
        let id = "0123abcd-0000-4000-8000-000000000001";
        assert_eq!(free_name("bob", id, |_| false), "bob");
        assert_eq!(free_name("bob", id, |n| n == "bob"), "bob-0123abcd");
        assert_eq!(free_name("bob", id, |n| n == "bob" || n == "bob-0123abcd"), "bob-0123abcd-2");
        // A node id with odd characters is not sliced, only filtered.
        assert_eq!(free_name("bob", "é-ü-1", |n| n == "bob"), "bob-1");
    }
}
