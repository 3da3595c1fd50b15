//! The route table: every route with its access rule, rate-limit category and handler.
//!
//! Routes are mounted only through [`Mount`], which takes the route's [`Access`] (who may use
//! it: a row of ARCHITECTURE.md's trust table) and records a [`RouteSpec`] for each, so the
//! tests can check that every route's access is in that table, that every route open to anyone
//! is listed there, and that the OpenAPI document describes every route that exists.

pub(crate) mod allow;
mod approvals;
mod context;
mod dashboard;
mod execute;
mod locks;
mod messages;
mod pairing;
mod peers;
mod system;
mod tasks;
mod terminals;
mod transfer;

use tide::http::Method;
use tide::Endpoint;

use super::guard::{Access, Guard};
use super::rate_limit::Category;
use super::state::State;

/// One mounted route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteSpec {
    pub method: Method,
    /// tide syntax: `/api/v1/context/:key`.
    pub path: &'static str,
    pub access: Access,
}

/// Mounts routes and remembers them.
pub(crate) struct Mount<'a> {
    /// `None` when only the table is wanted ([`table`]).
    app: Option<&'a mut tide::Server<State>>,
    specs: Vec<RouteSpec>,
}

impl Mount<'_> {
    /// Mounts `endpoint` at `method path`, for the callers `access` admits (ARCHITECTURE.md's
    /// access table), rate-limited in `limit` (peers only; the owner is not limited).
    pub(crate) fn route(
        &mut self,
        method: Method,
        path: &'static str,
        access: Access,
        limit: Option<Category>,
        endpoint: impl Endpoint<State>,
    ) -> &mut Self {
        if let Some(app) = self.app.as_mut() {
            let endpoint = Shared { path, endpoint: std::sync::Arc::new(endpoint) };
            if method == Method::Get {
                // HEAD is GET without the body (the encoder leaves it out).
                app.at(path).with(Guard { access, limit }).method(Method::Head, endpoint.clone());
            }
            app.at(path).with(Guard { access, limit }).method(method, endpoint);
        }
        self.specs.push(RouteSpec { method, path, access });
        self
    }
}

/// A mounted endpoint (shared by GET and HEAD). A request whose path names another, more
/// specific resource of the table (`DELETE /api/v1/execute/jobs` reaching `:jobId`) is not
/// this route's: it gets that resource's 405.
#[derive(Clone)]
struct Shared {
    path: &'static str,
    endpoint: std::sync::Arc<dyn Endpoint<State>>,
}

#[async_trait::async_trait]
impl Endpoint<State> for Shared {
    async fn call(&self, req: tide::Request<State>) -> tide::Result {
        if allow::methods().shadows(self.path, req.url().path()) {
            return allow::fallback(req).await;
        }
        self.endpoint.call(req).await
    }
}

/// Every area's routes.
fn mount_areas(mount: &mut Mount<'_>) {
    system::mount(mount);
    context::mount(mount);
    pairing::mount(mount);
    peers::mount(mount);
    execute::mount(mount);
    transfer::mount(mount);
    tasks::mount(mount);
    approvals::mount(mount);
    dashboard::mount(mount);
    messages::mount(mount);
    locks::mount(mount);
    terminals::mount(mount);
}

/// Mounts every route on `app` and returns the table.
pub(crate) fn mount(app: &mut tide::Server<State>) -> Vec<RouteSpec> {
    let mut mount = Mount { app: Some(&mut *app), specs: Vec::new() };
    mount_areas(&mut mount);
    let specs = mount.specs;
    // A method a path does not have: 405 with `Allow` (derived from the table, so every route
    // gets it), behind a key unless the path has a public route.
    for (path, access) in allow::fallback_paths(&specs) {
        app.at(path).with(Guard { access, limit: None }).all(allow::fallback);
    }
    // Everything else: authenticate first (no probing of what exists without a key), then 404.
    let fallback = Guard { access: Access::DataPlane, limit: None };
    app.at("/").with(fallback).all(allow::fallback);
    app.at("*").with(fallback).all(allow::fallback);
    specs
}

/// The route table, without a server.
pub(crate) fn table() -> Vec<RouteSpec> {
    let mut mount = Mount { app: None, specs: Vec::new() };
    mount_areas(&mut mount);
    mount.specs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::guard::{Class, Grant};
    use std::collections::{BTreeMap, BTreeSet};

    /// ARCHITECTURE.md, the source of the trust tables.
    fn architecture() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md")).unwrap()
    }

    fn cells(line: &str) -> Vec<String> {
        line.trim().trim_matches('|').split('|').map(|cell| cell.trim().to_string()).collect()
    }

    /// The access table: row name → (class → the cell's text).
    fn access_table(doc: &str) -> BTreeMap<String, BTreeMap<Class, String>> {
        let mut lines = doc.lines().skip_while(|line| !line.starts_with("| Access |"));
        let header = cells(lines.next().expect("ARCHITECTURE.md has a table starting with '| Access |'"));
        let columns: Vec<Option<Class>> = header
            .iter()
            .skip(1)
            .map(|heading| Class::ALL.into_iter().find(|class| class.heading() == heading))
            .collect();
        for class in Class::ALL {
            assert!(columns.contains(&Some(class)), "the access table has no column '{}'", class.heading());
        }
        let mut table = BTreeMap::new();
        for line in lines.skip(1).take_while(|line| line.starts_with('|')) {
            let row = cells(line);
            let name = row[0].trim_matches('`').to_string();
            let grants = columns.iter().zip(&row[1..]).filter_map(|(c, cell)| c.map(|c| (c, cell.clone()))).collect();
            table.insert(name, grants);
        }
        table
    }

    fn cell_text(grant: Grant) -> String {
        match grant {
            Grant::Yes => "yes".into(),
            Grant::No => "no".into(),
            Grant::If(switch) => format!("if `{}`", switch.key()),
        }
    }

    /// `METHOD /path` of each line under "The public routes, all of them:".
    fn public_routes(doc: &str) -> BTreeSet<String> {
        let lines = doc.lines().skip_while(|line| !line.starts_with("The public routes, all of them:")).skip(1);
        let mut routes = BTreeSet::new();
        for line in lines.take_while(|line| line.starts_with("- ")) {
            let listed = line.split(':').next().unwrap_or_default();
            routes.extend(listed.split('`').skip(1).step_by(2).map(String::from));
        }
        routes
    }

    #[test]
    fn every_route_declares_an_access_of_the_trust_table() {
        let doc = architecture();
        let table = access_table(&doc);
        for access in Access::ALL {
            let row = table.get(access.name()).unwrap_or_else(|| {
                panic!("Access::{access:?} is not a row of ARCHITECTURE.md's access table: add it there")
            });
            for class in Class::ALL {
                assert_eq!(
                    row[&class],
                    cell_text(access.grant(class)),
                    "ARCHITECTURE.md says `{}` / {} but the code grants otherwise",
                    access.name(),
                    class.heading()
                );
            }
        }
        let specs = super::table();
        assert!(specs.len() > 30, "the route table is read: {} routes", specs.len());
        let mut public = BTreeSet::new();
        for spec in &specs {
            assert!(
                table.contains_key(spec.access.name()),
                "{} {} has access {:?}, which ARCHITECTURE.md's access table does not list",
                spec.method,
                spec.path,
                spec.access
            );
            if spec.access.grant(Class::Anyone) != Grant::No {
                public.insert(format!("{} {}", spec.method, spec.path));
            }
        }
        let listed = public_routes(&doc);
        let unlisted: Vec<_> = public.difference(&listed).collect();
        assert!(unlisted.is_empty(), "routes open to anyone but not listed in ARCHITECTURE.md: {unlisted:?}");
        let phantom: Vec<_> = listed.difference(&public).collect();
        assert!(phantom.is_empty(), "ARCHITECTURE.md lists as public what is not: {phantom:?}");
    }
}
