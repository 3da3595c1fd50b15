//! Black-box tests: the built `loopsy` binary, real daemons in temporary homes, real HTTP.

mod support;

mod approvals;
mod bound_peers;
mod conformance;
mod context;
mod core_api;
mod dashboard;
mod doctor;
mod exec_resume;
mod execute;
mod habits;
mod harness;
mod hostile_input;
mod lifecycle;
mod limits;
mod locks;
mod mcp;
mod mcp_aliases;
mod mcp_tools;
mod messages;
mod netlab;
mod openapi_fuzz;
mod pairing;
mod peers;
mod service;
mod sessions;
mod tasks;
mod terminals;
mod tls;
mod transfer;
mod trust;
