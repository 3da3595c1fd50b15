//! The route table: every route with its access rule, rate-limit category and handler.
//!
//! Routes are mounted only through [`Mount`], which records a [`RouteSpec`] for each, so the
//! OpenAPI test can check that the document describes every route that exists.

mod context;
mod dashboard;
mod execute;
mod locks;
mod messages;
mod pairing;
mod peers;
mod system;
mod tasks;
mod transfer;

use tide::http::Method;
use tide::Endpoint;

use super::guard::{Access, Guard};
use super::rate_limit::Category;
use super::state::State;

/// One mounted route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    /// tide syntax: `/api/v1/context/:key`.
    pub path: &'static str,
    pub access: Access,
}

/// Mounts routes and remembers them.
pub struct Mount<'a> {
    app: &'a mut tide::Server<State>,
    specs: Vec<RouteSpec>,
}

impl Mount<'_> {
    pub fn route(
        &mut self,
        method: Method,
        path: &'static str,
        access: Access,
        limit: Option<Category>,
        endpoint: impl Endpoint<State>,
    ) -> &mut Self {
        self.app.at(path).with(Guard { access, limit }).method(method, endpoint);
        self.specs.push(RouteSpec { method, path, access });
        self
    }
}

/// Mounts every route on `app` and returns the table.
pub fn mount(app: &mut tide::Server<State>) -> Vec<RouteSpec> {
    let mut mount = Mount { app, specs: Vec::new() };
    system::mount(&mut mount);
    context::mount(&mut mount);
    pairing::mount(&mut mount);
    peers::mount(&mut mount);
    execute::mount(&mut mount);
    transfer::mount(&mut mount);
    tasks::mount(&mut mount);
    dashboard::mount(&mut mount);
    messages::mount(&mut mount);
    locks::mount(&mut mount);
    let specs = mount.specs;
    // Everything else: authenticate first (no probing of what exists without a key), then 404.
    let fallback = Guard { access: Access::Key, limit: None };
    app.at("/").with(fallback).all(system::route_not_found);
    app.at("*").with(fallback).all(system::route_not_found);
    specs
}

/// The OpenAPI paths and schemas contributed by each area.
pub fn openapi_parts() -> Vec<serde_json::Value> {
    vec![
        system::openapi(),
        pairing::openapi(),
        peers::openapi(),
        execute::openapi(),
        context::openapi(),
        transfer::openapi(),
        tasks::openapi(),
        dashboard::openapi(),
        messages::openapi(),
        locks::openapi(),
    ]
}
