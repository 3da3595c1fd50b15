//! Black-box tests: the built `loopsy` binary, real daemons in temporary homes, real HTTP.

mod support;

mod core_api;
mod lifecycle;
mod pairing;
mod tasks;
mod tls;
