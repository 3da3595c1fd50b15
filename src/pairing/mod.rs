//! Pairing: trust between two machines from a 6-digit code, without sending any key in clear.
//!
//! Pure logic, no I/O: the daemon's routes and the CLI drive it.

pub mod spake2;
