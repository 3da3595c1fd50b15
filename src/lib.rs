//! loopsy: lets AI coding agents on different machines work together over the LAN.
//!
//! One binary with several faces: the CLI ([`cli`]), the daemon with its REST API ([`daemon`]),
//! and the client every face uses to talk to daemons ([`peer`]). See ARCHITECTURE.md.
// Items are `pub(crate)` unless a test or main.rs needs them (issue 15): the compiler says so.
#![warn(unreachable_pub)]

pub(crate) mod approvals;
pub(crate) mod child_env;
pub mod cli;
pub mod clock;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod dashboard;
pub(crate) mod discovery;
pub(crate) mod doctor;
pub(crate) mod durable;
pub(crate) mod exec;
pub(crate) mod feed;
#[cfg(test)]
mod fuzz;
pub(crate) mod identity;
pub(crate) mod instance;
pub(crate) mod locks;
pub(crate) mod logger;
pub(crate) mod mcp;
pub(crate) mod messages;
pub(crate) mod netif;
pub mod pairing;
pub mod paths;
pub mod peer;
pub(crate) mod peers;
pub(crate) mod percent;
pub(crate) mod process;
pub(crate) mod random;
pub(crate) mod resolve;
pub(crate) mod service;
pub(crate) mod sessions;
pub(crate) mod shutdown;
pub(crate) mod store;
pub(crate) mod system;
pub(crate) mod tasks;
pub(crate) mod terminal;
pub mod tls;
pub(crate) mod transfer;
pub(crate) mod x509;
