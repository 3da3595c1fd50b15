//! Black-box tests: the built `loopsy` binary, real daemons in temporary homes, real HTTP.

mod support;

mod context;
mod core_api;
mod dashboard;
mod doctor;
mod exec_resume;
mod execute;
mod lifecycle;
mod locks;
mod mcp;
mod mcp_tools;
mod messages;
mod netlab;
mod pairing;
mod peers;
mod service;
mod sessions;
mod tasks;
mod tls;
mod transfer;
