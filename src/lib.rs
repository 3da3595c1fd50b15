//! loopsy: lets AI coding agents on different machines work together over the LAN.
//!
//! One binary with several faces: the CLI ([`cli`]), the daemon with its REST API ([`daemon`]),
//! and the client every face uses to talk to daemons ([`peer`]). See ARCHITECTURE.md.

pub mod approvals;
pub mod child_env;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod discovery;
pub mod doctor;
pub mod durable;
pub mod exec;
pub mod feed;
#[cfg(test)]
mod fuzz;
pub mod identity;
pub mod instance;
pub mod locks;
pub mod logger;
pub mod mcp;
pub mod messages;
pub mod netif;
pub mod pairing;
pub mod paths;
pub mod peer;
pub mod peers;
pub mod percent;
pub mod process;
pub mod random;
pub(crate) mod resolve;
pub mod service;
pub mod sessions;
pub mod shutdown;
pub mod store;
pub mod system;
pub mod tasks;
pub mod terminal;
pub mod tls;
pub mod transfer;
pub mod x509;
