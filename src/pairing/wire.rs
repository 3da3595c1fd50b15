//! The JSON bodies of the pairing routes: what the joining daemon and the host send each other
//! (`/pair/spake2`, `/pair/exchange`, `/pair/finish`) and what the local CLI sends to join.
//!
//! Hex strings throughout; the daemon checks them before the protocol sees them.

use serde::{Deserialize, Serialize};

/// `POST /pair/spake2` from the joiner: its SPAKE2 share.
#[derive(Debug, Serialize, Deserialize)]
pub struct Share {
    pub share: String,
}

/// The host's answer to a share: its own share and its key confirmation.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShareAnswer {
    pub share: String,
    pub confirm: String,
}

/// `POST /pair/exchange` from the joiner: its key confirmation and its sealed offer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Exchange {
    pub confirm: String,
    pub offer: String,
}

/// The host's sealed offer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sealed {
    pub offer: String,
}

/// `POST /pair/finish` from the joiner: its human's answer, tagged with the session key.
#[derive(Debug, Serialize, Deserialize)]
pub struct FinishRequest {
    pub confirmed: bool,
    pub tag: String,
}

/// The host's answer to a finish: `waiting`, `cancelled`, or `done` with the host's tag.
#[derive(Debug, Serialize, Deserialize)]
pub struct FinishAnswer {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `POST /pair/join`: what the local CLI sends to join the host at `address`.
#[derive(Debug, Deserialize)]
pub struct JoinRequest {
    pub address: String,
    #[serde(default)]
    pub port: Option<u16>,
    pub code: String,
}
