//! Pairing: trust between two machines from a 6-digit code, without sending any key in clear.
//!
//! `spake2` proves both sides know the code (RFC 9382); `channel` derives the sealing keys and
//! the short authentication string; `session` is the host's state machine and the offers;
//! `wire` the JSON bodies the two daemons (and the local CLI) send.
//! Pure logic, no I/O: the daemon's pairing routes and the CLI drive it.

pub mod channel;
pub mod session;
pub mod spake2;
pub mod wire;
