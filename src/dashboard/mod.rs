//! The web dashboard's domain: logins, the browser-request rules, the overview of the local
//! sessions (found by `crate::sessions`) and the targets it may reach. No tide here: the routes are `daemon/routes/dashboard.rs`, the cookie
//! check is in `daemon/guard.rs`, and the files themselves are in `dashboard/` at the root.
//!
//! The dashboard is a client of the public API like the CLI: the browser calls `/api/v1/...`
//! with a session cookie instead of a key, and reaches sessions and peers only through the
//! proxy route, which picks the credentials (never the browser).

pub(crate) mod assets;
pub(crate) mod auth;
pub(crate) mod origin;
pub(crate) mod overview;
pub(crate) mod targets;
