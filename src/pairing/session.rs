//! The pairing session: the host's state machine, the invite code and the offers.
//!
//! The host (the machine that ran `loopsy pair`) holds at most one session: a 6-digit code valid
//! for five minutes. Anyone on the network can try it, so a stranger must not be able to close
//! the owner's session by guessing: each source address gets three guesses, and after the
//! first three guesses (from anyone) each further one waits twice as long as the one before,
//! from 1 s up to 30 s, which bounds the guesses of a whole session to about twenty however
//! many addresses try. The joiner proves it knows the code through
//! SPAKE2; only then do the two exchange, sealed, an `Offer` each (identity, certificate
//! fingerprint and a key minted for the other alone). The result is applied only when both
//! humans have confirmed the SAS and both daemons know it.
//!
//! Pure: time is a parameter and nothing here touches disk or network.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::channel::{Channel, Tampered};
use super::spake2::{password_scalar, Keys, Role, Spake2};
use crate::random::to_hex;

/// How long a session lives.
pub const LIFETIME_MS: u64 = 5 * 60 * 1000;
/// Guesses one source address may make in a session.
pub const ATTEMPTS: u32 = 3;
/// Guesses (from anyone) answered without waiting.
const FREE_ATTEMPTS: u32 = 3;
/// The longest wait between two guesses.
const MAX_WAIT_MS: u64 = 30_000;
/// How long a joiner between its share and its confirmation keeps the session from others.
const CONFIRM_HOLD_MS: u64 = 10_000;
/// SPAKE2 identities: fixed role names (the parties learn each other's identity in the offers,
/// which the confirmation transcript does not need to cover because they are sealed under it).
pub const ID_A: &[u8] = b"loopsy pairing host";
pub const ID_B: &[u8] = b"loopsy pairing joiner";

/// A 6-digit invite code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code(String);

impl Code {
    /// Uniform over 000000..=999999 (rejection sampling, unlike 1.0.21's biased modulo).
    pub fn generate() -> Code {
        loop {
            let bytes = crate::random::bytes(4);
            let n = u32::from_be_bytes(bytes.try_into().expect("4 bytes"));
            if n < 4_294_000_000 {
                return Code(format!("{:06}", n % 1_000_000));
            }
        }
    }

    /// Accepts `123456` and `123 456` / `123-456`.
    pub fn parse(text: &str) -> Option<Code> {
        let digits: String = text.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(Code(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What each side tells the other, sealed under the channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    pub node_id: String,
    pub hostname: String,
    pub port: u16,
    /// SHA-256 of the sender's TLS certificate: the receiver pins it.
    pub fingerprint: String,
    /// A key the sender minted for the receiver alone: present it to the sender.
    pub api_key: String,
}

impl Offer {
    fn validate(&self) -> Result<(), PairError> {
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        // The node id is sliced and used as a registry key later: it must be a UUID, not just
        // 36 bytes (36 bytes of multi-byte text would panic the first slice).
        let ok = crate::peers::check_node_id("nodeId", &self.node_id).is_ok()
            && !self.hostname.is_empty()
            && self.hostname.len() <= 253
            && self.hostname.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            && self.port > 0
            && hex64(&self.fingerprint)
            && hex64(&self.api_key);
        ok.then_some(()).ok_or(PairError::BadOffer)
    }

    pub fn seal(&self, channel: &Channel, from: Role) -> String {
        channel.seal(from, &serde_json::to_vec(self).expect("offers serialise"))
    }

    pub fn open(channel: &Channel, from: Role, sealed: &str) -> Result<Offer, PairError> {
        let bytes = channel.open(from, sealed)?;
        let offer: Offer = serde_json::from_slice(&bytes).map_err(|_| PairError::BadOffer)?;
        offer.validate()?;
        Ok(offer)
    }
}

/// Why a pairing step was refused. Messages are shown to users on both sides.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PairError {
    #[error("no pairing session is waiting here (start one with `loopsy pair`)")]
    NoSession,
    #[error("the pairing session expired; start a new one with `loopsy pair`")]
    Expired,
    #[error(
        "this address has tried {ATTEMPTS} wrong codes; the session stays open for other machines \
         (or start a new one with `loopsy pair`)"
    )]
    TooManyAttempts,
    #[error("too many pairing attempts; try again in {} s", .0.div_ceil(1000))]
    BackOff(u64),
    #[error("wrong code ({0} attempt(s) left)")]
    WrongCode(u32),
    #[error("the pairing session is already in use by another machine")]
    Busy,
    #[error("the pairing was cancelled")]
    Cancelled,
    #[error("the other side sent an invalid offer")]
    BadOffer,
    #[error("a pairing message failed authentication")]
    Tampered,
    #[error("invalid pairing message: {0}")]
    Invalid(String),
}

impl From<Tampered> for PairError {
    fn from(_: Tampered) -> PairError {
        PairError::Tampered
    }
}

/// Where a host session stands.
enum Phase {
    Waiting,
    /// SPAKE2 answered; waiting for the joiner's key confirmation.
    Confirming {
        keys: Keys,
        /// Where the share came from: only that address may confirm.
        from: IpAddr,
        since: u64,
    },
    /// Offers exchanged; waiting for both humans.
    Exchanged {
        channel: Channel,
        peer: Offer,
        local: Option<bool>,
        remote: Option<bool>,
    },
    Done {
        channel: Channel,
        peer: Offer,
    },
    Cancelled,
}

/// The host side of one pairing session.
pub struct Host {
    pub code: Code,
    pub expires_at: u64,
    /// SPAKE2 runs so far: each is one guess at the code.
    attempts: u32,
    /// Attempts that ended without a valid confirmation.
    wrong: u32,
    /// Guesses per source address (a few entries: every one was a spaced-out attempt).
    tried: Vec<(IpAddr, u32)>,
    /// No guess is taken before this (Unix ms).
    next_attempt_at: u64,
    phase: Phase,
}

/// The host's answer to the joiner's final message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The host's human has not answered yet; ask again.
    Waiting,
    /// Both confirmed: apply the offers. Carries the host's tag over "done".
    Done {
        tag: String,
    },
    Cancelled,
}

/// A summary for the local CLI.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    pub state: &'static str,
    pub expires_at: u64,
    /// Guesses made so far, from anyone.
    pub attempts: u32,
    /// How many attempts failed so far (wrong codes).
    pub wrong_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sas: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_hostname: Option<String>,
    pub local_confirmed: Option<bool>,
    pub remote_confirmed: Option<bool>,
}

impl Host {
    pub fn new(now: u64) -> Host {
        Host::with_lifetime(now, LIFETIME_MS)
    }

    pub fn with_lifetime(now: u64, lifetime_ms: u64) -> Host {
        Host {
            code: Code::generate(),
            expires_at: now + lifetime_ms,
            attempts: 0,
            wrong: 0,
            tried: Vec::new(),
            next_attempt_at: 0,
            phase: Phase::Waiting,
        }
    }

    fn live(&self, now: u64) -> Result<(), PairError> {
        match self.phase {
            Phase::Cancelled => Err(PairError::Cancelled),
            Phase::Done { .. } => Ok(()),
            _ if now >= self.expires_at => Err(PairError::Expired),
            _ => Ok(()),
        }
    }

    /// Guesses made from `from` so far.
    fn tried_from(&self, from: IpAddr) -> u32 {
        self.tried.iter().find(|(address, _)| *address == from).map_or(0, |(_, n)| *n)
    }

    /// Step 1: the joiner's SPAKE2 share, from address `from`. Every call that is answered
    /// spends one of that address's three guesses and pushes the next guess back.
    pub fn spake2(&mut self, joiner_share: &[u8], from: IpAddr, now: u64) -> Result<(String, String), PairError> {
        self.live(now)?;
        let from = from.to_canonical();
        let unconfirmed = match self.phase {
            Phase::Waiting => false,
            Phase::Confirming { from: other, since, .. } if other != from && now < since + CONFIRM_HOLD_MS => {
                return Err(PairError::Busy);
            }
            Phase::Confirming { .. } => true,
            _ => return Err(PairError::Busy),
        };
        if self.tried_from(from) >= ATTEMPTS {
            return Err(PairError::TooManyAttempts);
        }
        if now < self.next_attempt_at {
            return Err(PairError::BackOff(self.next_attempt_at - now));
        }
        if unconfirmed {
            self.wrong += 1; // the attempt this one replaces never confirmed
        }
        self.attempts += 1;
        match self.tried.iter_mut().find(|(address, _)| *address == from) {
            Some((_, n)) => *n += 1,
            None => self.tried.push((from, 1)),
        }
        self.next_attempt_at = now + wait_after(self.attempts);
        let spake = Spake2::start(Role::A, password_scalar(self.code.as_str()), ID_A, ID_B);
        let share = to_hex(spake.share());
        let keys = match spake.finish(joiner_share) {
            Ok(keys) => keys,
            Err(e) => {
                self.wrong += 1;
                self.phase = Phase::Waiting;
                return Err(PairError::Invalid(e.to_string()));
            }
        };
        let confirm = to_hex(&keys.confirmation());
        self.phase = Phase::Confirming { keys, from, since: now };
        Ok((share, confirm))
    }

    /// Step 2: the joiner's confirmation and sealed offer (from the address that sent the
    /// share); answers with the host's sealed offer.
    pub fn exchange(
        &mut self,
        confirm: &[u8],
        sealed_offer: &str,
        mine: &Offer,
        from: IpAddr,
        now: u64,
    ) -> Result<String, PairError> {
        self.live(now)?;
        let Phase::Confirming { keys, from: share_from, .. } = &self.phase else {
            return Err(match self.phase {
                Phase::Waiting => PairError::Invalid("send the SPAKE2 share first".into()),
                _ => PairError::Busy,
            });
        };
        let from = from.to_canonical();
        if *share_from != from {
            return Err(PairError::Busy);
        }
        if keys.verify_peer(confirm).is_err() {
            self.wrong += 1;
            self.phase = Phase::Waiting;
            return Err(PairError::WrongCode(ATTEMPTS.saturating_sub(self.tried_from(from))));
        }
        let channel = Channel::new(keys);
        let peer = Offer::open(&channel, Role::B, sealed_offer)?;
        let sealed_mine = mine.seal(&channel, Role::A);
        self.phase = Phase::Exchanged { channel, peer, local: None, remote: None };
        Ok(sealed_mine)
    }

    /// The host's human answered.
    pub fn confirm_local(&mut self, confirmed: bool, now: u64) -> Result<(), PairError> {
        self.live(now)?;
        match &mut self.phase {
            Phase::Exchanged { local, .. } => *local = Some(confirmed),
            Phase::Done { .. } => return Ok(()),
            _ => return Err(PairError::Invalid("nothing to confirm yet".into())),
        }
        self.settle();
        Ok(())
    }

    /// Step 3: the joiner's human answered (authenticated by the joiner's tag).
    pub fn confirm_remote(&mut self, confirmed: bool, tag: &str, now: u64) -> Result<Finish, PairError> {
        if let Phase::Cancelled = self.phase {
            return Ok(Finish::Cancelled);
        }
        self.live(now)?;
        let statement = if confirmed { "confirm" } else { "cancel" };
        match &mut self.phase {
            Phase::Exchanged { channel, remote, .. } => {
                channel.check_tag(Role::B, statement, tag)?;
                *remote = Some(confirmed);
            }
            Phase::Done { channel, .. } => channel.check_tag(Role::B, statement, tag)?,
            _ => return Err(PairError::Invalid("no offers were exchanged".into())),
        }
        self.settle();
        Ok(match &self.phase {
            Phase::Done { channel, .. } => Finish::Done { tag: channel.tag(Role::A, "done") },
            Phase::Cancelled => Finish::Cancelled,
            _ => Finish::Waiting,
        })
    }

    /// Cancels the session (the local human said no, or gave up).
    pub fn cancel(&mut self) {
        if !matches!(self.phase, Phase::Done { .. }) {
            self.phase = Phase::Cancelled;
        }
    }

    fn settle(&mut self) {
        let Phase::Exchanged { local, remote, .. } = &self.phase else { return };
        let (local, remote) = (*local, *remote);
        if local == Some(false) || remote == Some(false) {
            self.phase = Phase::Cancelled;
        } else if local == Some(true) && remote == Some(true) {
            let Phase::Exchanged { channel, peer, .. } = std::mem::replace(&mut self.phase, Phase::Waiting) else {
                unreachable!("matched above")
            };
            self.phase = Phase::Done { channel, peer };
        }
    }

    /// The peer's offer once both sides confirmed.
    pub fn completed(&self) -> Option<&Offer> {
        match &self.phase {
            Phase::Done { peer, .. } => Some(peer),
            _ => None,
        }
    }

    pub fn status(&self, now: u64) -> HostStatus {
        let (state, sas, peer, local, remote) = match &self.phase {
            Phase::Cancelled => ("cancelled", None, None, None, None),
            Phase::Done { channel, peer } => ("done", Some(channel.sas.clone()), Some(peer), Some(true), Some(true)),
            _ if now >= self.expires_at => ("expired", None, None, None, None),
            Phase::Waiting | Phase::Confirming { .. } => ("waiting", None, None, None, None),
            Phase::Exchanged { channel, peer, local, remote } => {
                ("exchanged", Some(channel.sas.clone()), Some(peer), *local, *remote)
            }
        };
        HostStatus {
            state,
            expires_at: self.expires_at,
            attempts: self.attempts,
            wrong_attempts: self.wrong,
            sas,
            peer_hostname: peer.map(|p| p.hostname.clone()),
            local_confirmed: local,
            remote_confirmed: remote,
        }
    }
}

/// How long after the `attempts`-th guess the next one is taken: nothing for the first few,
/// then 1 s, doubling up to 30 s.
fn wait_after(attempts: u32) -> u64 {
    match attempts.checked_sub(FREE_ATTEMPTS) {
        None => 0,
        Some(extra) => 1000u64.checked_shl(extra).unwrap_or(MAX_WAIT_MS).min(MAX_WAIT_MS),
    }
}

/// The joiner side of a run, between its SPAKE2 share and the host's answer.
pub struct Joiner {
    spake: Spake2,
}

impl Joiner {
    pub fn new(code: &Code) -> Joiner {
        Joiner { spake: Spake2::start(Role::B, password_scalar(code.as_str()), ID_A, ID_B) }
    }

    pub fn share(&self) -> String {
        to_hex(self.spake.share())
    }

    /// Checks the host's confirmation; on success returns the channel and our confirmation.
    pub fn confirm(self, host_share: &[u8], host_confirm: &[u8]) -> Result<(Channel, String), PairError> {
        let keys = self.spake.finish(host_share).map_err(|e| PairError::Invalid(e.to_string()))?;
        keys.verify_peer(host_confirm).map_err(|_| PairError::WrongCode(0))?;
        Ok((Channel::new(&keys), to_hex(&keys.confirmation())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairing::channel::from_hex;

    fn offer(name: &str) -> Offer {
        Offer {
            node_id: crate::random::uuid_v4(),
            hostname: name.into(),
            port: 19532,
            fingerprint: crate::random::hex(32),
            api_key: crate::random::api_key(),
        }
    }

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn at(last: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, last))
    }

    /// Runs the joiner against `host` with `code`; returns the joiner's channel and both offers.
    fn join(host: &mut Host, code: &Code, now: u64) -> Result<(Channel, Offer), PairError> {
        join_from(host, code, HERE, now)
    }

    fn join_from(host: &mut Host, code: &Code, from: IpAddr, now: u64) -> Result<(Channel, Offer), PairError> {
        let joiner = Joiner::new(code);
        let (share, confirm) = host.spake2(&from_hex(&joiner.share()).unwrap(), from, now)?;
        let (channel, my_confirm) = match joiner.confirm(&from_hex(&share).unwrap(), &from_hex(&confirm).unwrap()) {
            Ok(ok) => ok,
            Err(_) => {
                // A joiner with the wrong code still sends its confirmation: the host counts it.
                let err = host.exchange(&[0u8; 32], "", &offer("host"), from, now).unwrap_err();
                return Err(err);
            }
        };
        let sealed = offer("joiner").seal(&channel, Role::B);
        let sealed_host = host.exchange(&from_hex(&my_confirm).unwrap(), &sealed, &offer("host"), from, now)?;
        let host_offer = Offer::open(&channel, Role::A, &sealed_host)?;
        Ok((channel, host_offer))
    }

    // See: #13 (an offer's nodeId was sliced before it was validated).
    #[test]
    fn anything_the_other_side_sends_is_judged_without_panicking() {
        let valid = offer("joiner");
        let alphabet = "0123456789abcdefABCDEF-.:_ ";
        let inputs = crate::fuzz::inputs(&[&valid.node_id, "123 456", &valid.api_key], alphabet, 17, 10_000);
        for text in &inputs {
            let mut changed = valid.clone();
            changed.node_id = text.clone();
            assert_eq!(changed.validate().is_ok(), crate::peers::check_node_id("nodeId", text).is_ok(), "{text:?}");
            if changed.validate().is_ok() {
                assert!(text.is_ascii() && text.len() == 36 && text.get(..8).is_some(), "{text:?}");
            }
            let mut changed = valid.clone();
            changed.hostname = text.clone();
            if changed.validate().is_ok() {
                assert!(text.is_ascii() && (1..=253).contains(&text.len()), "{text:?}");
            }
            let mut changed = valid.clone();
            (changed.fingerprint, changed.api_key) = (text.clone(), text.clone());
            assert_eq!(changed.validate().is_ok(), text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()));
            if let Some(code) = Code::parse(text) {
                assert!(code.as_str().len() == 6 && code.as_str().bytes().all(|b| b.is_ascii_digit()), "{text:?}");
            }
            if let Some(bytes) = from_hex(text) {
                assert_eq!(crate::random::to_hex(&bytes), text.to_ascii_lowercase(), "{text:?}");
            }
        }
        // Shares, confirmations and sealed offers of every length and content.
        let mut rng = crate::fuzz::Rng::new(18);
        let mut host = Host::new(0);
        for round in 0..60 {
            let share: Vec<u8> = (0..rng.below(80)).map(|_| rng.next() as u8).collect();
            let from = std::net::IpAddr::from([10, 0, 0, round as u8]);
            if host.spake2(&share, from, 1).is_err() && round % 10 == 0 {
                host = Host::new(0);
            }
            let joiner = Joiner::new(&host.code.clone());
            let _ = host.spake2(&from_hex(&joiner.share()).unwrap(), from, 1);
            let confirm: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
            let sealed = &inputs[rng.below(inputs.len())];
            let _ = host.exchange(&confirm, sealed, &valid, from, 1);
            let _ = host.confirm_remote(true, sealed, 1);
            if host.status(1).state != "waiting" {
                host = Host::new(0);
            }
        }
        let channel = Channel::new(&{
            let (a, b) = (
                Spake2::start(Role::A, password_scalar("000000"), ID_A, ID_B),
                Spake2::start(Role::B, password_scalar("000000"), ID_A, ID_B),
            );
            let share_b = *b.share();
            a.finish(&share_b).unwrap()
        });
        for text in &inputs {
            assert!(Offer::open(&channel, Role::B, text).is_err());
            let sealed = channel.seal(Role::B, text.as_bytes());
            assert!(Offer::open(&channel, Role::B, &sealed).is_err(), "{text:?}");
        }
        let odd_id = Offer { node_id: "é".repeat(18), ..valid.clone() };
        assert!(Offer::open(&channel, Role::B, &odd_id.seal(&channel, Role::B)).is_err());
        assert!(Offer::open(&channel, Role::B, &valid.seal(&channel, Role::B)).is_ok());
    }

    #[test]
    fn codes_are_six_digits_and_parse_with_separators() {
        let code = Code::generate();
        assert_eq!(code.as_str().len(), 6);
        assert_eq!(Code::parse("123 456").unwrap().as_str(), "123456");
        assert_eq!(Code::parse("123-456").unwrap().as_str(), "123456");
        assert!(Code::parse("12345").is_none());
        assert!(Code::parse("12345a").is_none());
    }

    #[test]
    fn a_right_code_exchanges_offers_and_completes_only_when_both_confirm() {
        let mut host = Host::new(0);
        let code = host.code.clone();
        let (channel, host_offer) = join(&mut host, &code, 10).unwrap();
        assert_eq!(host_offer.hostname, "host");
        let status = host.status(10);
        assert_eq!(status.state, "exchanged");
        assert_eq!(status.sas.as_deref(), Some(channel.sas.as_str()), "both sides show the same SAS");
        assert_eq!(host.confirm_remote(true, &channel.tag(Role::B, "confirm"), 11).unwrap(), Finish::Waiting);
        assert!(host.completed().is_none(), "nothing applies before the host's human confirms");
        host.confirm_local(true, 12).unwrap();
        assert_eq!(host.completed().unwrap().hostname, "joiner");
        let Finish::Done { tag } = host.confirm_remote(true, &channel.tag(Role::B, "confirm"), 13).unwrap() else {
            panic!("done")
        };
        channel.check_tag(Role::A, "done", &tag).unwrap();
    }

    fn wrong_code(host: &Host) -> Code {
        Code::parse(if host.code.as_str() == "000000" { "000001" } else { "000000" }).unwrap()
    }

    #[test]
    fn an_address_gets_three_guesses_and_the_session_stays_open_for_others() {
        let mut host = Host::new(0);
        let wrong = wrong_code(&host);
        assert_eq!(join(&mut host, &wrong, 1).unwrap_err(), PairError::WrongCode(2));
        assert_eq!(join(&mut host, &wrong, 2).unwrap_err(), PairError::WrongCode(1));
        assert_eq!(join(&mut host, &wrong, 3).unwrap_err(), PairError::WrongCode(0));
        assert_eq!(host.status(3).wrong_attempts, 3);
        let right = host.code.clone();
        assert_eq!(join(&mut host, &right, 4).unwrap_err(), PairError::TooManyAttempts, "not from there any more");
        assert_eq!(host.status(4).state, "waiting", "the session is not burned");
        // Another machine, once the back-off after three guesses has passed.
        assert_eq!(join_from(&mut host, &right, at(3), 4).unwrap_err(), PairError::BackOff(999));
        join_from(&mut host, &right, at(3), 1003).unwrap();
        assert_eq!(host.status(1003).state, "exchanged");
    }

    #[test]
    fn guesses_from_many_addresses_are_spaced_out_doubling_to_thirty_seconds() {
        let waits: Vec<u64> = (1..=10).map(wait_after).collect();
        assert_eq!(waits, [0, 0, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(wait_after(u32::MAX), 30_000);
        // However many addresses try, a five-minute session takes about twenty guesses.
        let mut host = Host::new(0);
        let wrong = wrong_code(&host);
        let (mut now, mut guesses) = (0, 0);
        for address in 1..=250u8 {
            loop {
                match join_from(&mut host, &wrong, at(address), now) {
                    Err(PairError::BackOff(wait)) => now += wait,
                    Err(PairError::WrongCode(_)) => guesses += 1,
                    Err(PairError::TooManyAttempts) => break,
                    Err(PairError::Expired) => break,
                    other => panic!("{other:?}"),
                }
                if now >= LIFETIME_MS {
                    break;
                }
            }
        }
        assert!(guesses <= 20, "{guesses} guesses in one session");
    }

    #[test]
    fn an_unconfirmed_attempt_still_counts() {
        let mut host = Host::new(0);
        for _ in 0..ATTEMPTS {
            let joiner = Joiner::new(&Code::parse("111111").unwrap());
            let _ = host.spake2(&from_hex(&joiner.share()).unwrap(), HERE, 1);
        }
        assert_eq!(host.status(1).wrong_attempts, 2, "two were replaced before confirming");
        let joiner = Joiner::new(&host.code.clone());
        assert_eq!(host.spake2(&from_hex(&joiner.share()).unwrap(), HERE, 2).unwrap_err(), PairError::TooManyAttempts);
    }

    #[test]
    fn a_joiner_between_share_and_confirmation_is_not_interrupted_by_another_address() {
        let mut host = Host::new(0);
        let code = host.code.clone();
        let joiner = Joiner::new(&code);
        let (share, confirm) = host.spake2(&from_hex(&joiner.share()).unwrap(), HERE, 1).unwrap();
        let stranger = Joiner::new(&wrong_code(&host));
        assert_eq!(host.spake2(&from_hex(&stranger.share()).unwrap(), at(9), 2).unwrap_err(), PairError::Busy);
        let (channel, my_confirm) = joiner.confirm(&from_hex(&share).unwrap(), &from_hex(&confirm).unwrap()).unwrap();
        let sealed = offer("joiner").seal(&channel, Role::B);
        let confirm = from_hex(&my_confirm).unwrap();
        assert_eq!(host.exchange(&confirm, &sealed, &offer("host"), at(9), 3).unwrap_err(), PairError::Busy);
        host.exchange(&confirm, &sealed, &offer("host"), HERE, 3).unwrap();
    }

    #[test]
    fn sessions_expire() {
        let mut host = Host::new(0);
        let code = host.code.clone();
        assert_eq!(join(&mut host, &code, LIFETIME_MS).unwrap_err(), PairError::Expired);
        assert_eq!(host.status(LIFETIME_MS).state, "expired");
    }

    #[test]
    fn either_side_saying_no_cancels() {
        let mut host = Host::new(0);
        let code = host.code.clone();
        let (channel, _) = join(&mut host, &code, 1).unwrap();
        assert_eq!(host.confirm_remote(false, &channel.tag(Role::B, "cancel"), 2).unwrap(), Finish::Cancelled);
        assert!(host.completed().is_none());
        assert_eq!(host.status(2).state, "cancelled");

        let mut host = Host::new(0);
        let code = host.code.clone();
        let (channel, _) = join(&mut host, &code, 1).unwrap();
        host.confirm_local(false, 2).unwrap();
        assert_eq!(host.confirm_remote(true, &channel.tag(Role::B, "confirm"), 3).unwrap(), Finish::Cancelled);
    }

    #[test]
    fn a_forged_confirmation_is_refused() {
        let mut host = Host::new(0);
        let code = host.code.clone();
        join(&mut host, &code, 1).unwrap();
        host.confirm_local(true, 2).unwrap();
        assert_eq!(host.confirm_remote(true, &"00".repeat(32), 3).unwrap_err(), PairError::Tampered);
        assert!(host.completed().is_none());
        let mut second = Host::new(0);
        let code = second.code.clone();
        join(&mut second, &code, 1).unwrap();
        assert_eq!(second.spake2(&[4u8; 65], HERE, 2).unwrap_err(), PairError::Busy, "one joiner per session");
    }
}
