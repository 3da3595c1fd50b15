//! What a request gets when no route takes its method: 405 with `Allow` where the path has
//! other methods, 204 with `Allow` for `OPTIONS`, 501 for a method nobody implements
//! (`QUERY`), 404 for a path that does not exist.
//!
//! The methods of a path come from the route table itself, matched with tide's own router
//! (route-recognizer), so every route mounted through [`Mount`](super::Mount) gets this for
//! free. A path names one resource, the most specific pattern that matches it: the job list
//! `/api/v1/execute/jobs` is not also the job `jobs` of `DELETE /api/v1/execute/:jobId`, so a
//! parameterised route shadowed that way answers 405 too ([`Methods::resource`], checked by
//! `Mount`'s endpoint wrapper), and `Allow` is exactly what the OpenAPI document lists.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use route_recognizer::Router;
use tide::http::Method;
use tide::{Request, Response};

use super::RouteSpec;
use crate::daemon::error::{ApiError, ErrorCode};
use crate::daemon::guard::Access;
use crate::daemon::methods::UnknownMethod;
use crate::daemon::state::State;

/// The route table's paths in one router (tide's matcher), each with its methods.
pub(crate) struct Methods {
    router: Router<usize>,
    /// Per path pattern: the pattern and the methods mounted on it.
    patterns: Vec<(&'static str, Vec<Method>)>,
    /// Per pattern, the other patterns that could match a path it matches (see [`Methods::shadows`]).
    rivals: BTreeMap<&'static str, Vec<&'static str>>,
}

impl Methods {
    pub(crate) fn new(specs: &[RouteSpec]) -> Methods {
        let mut patterns: Vec<(&'static str, Vec<Method>)> = Vec::new();
        let mut router = Router::new();
        for spec in specs {
            match patterns.iter_mut().find(|(path, _)| *path == spec.path) {
                Some((_, methods)) => methods.push(spec.method),
                None => {
                    router.add(spec.path, patterns.len());
                    patterns.push((spec.path, vec![spec.method]));
                }
            }
        }
        let rivals = patterns
            .iter()
            .map(|(pattern, _)| {
                let rivals = patterns.iter().map(|(other, _)| *other).filter(|other| other != pattern);
                (*pattern, rivals.filter(|other| could_overlap(pattern, other)).collect())
            })
            .collect();
        Methods { router, patterns, rivals }
    }

    /// Whether `path`, which tide's router took to `pattern`, names another resource: the
    /// same answer as [`Methods::resource`] differing from `pattern`, without running the
    /// router again (it allocates) when no rival of `pattern` matches `path` segment by segment,
    /// which is nearly every request.
    pub(crate) fn shadows(&self, pattern: &'static str, path: &str) -> bool {
        let rivals = self.rivals.get(pattern).map(Vec::as_slice).unwrap_or_default();
        let plain = |p: &str| !p.contains('*');
        if plain(pattern) && rivals.iter().all(|rival| plain(rival) && !segments_match(rival, path)) {
            return false;
        }
        self.resource(path).is_some_and(|resource| resource != pattern)
    }

    /// The pattern that names the resource at `path`: the most specific one that matches, as
    /// tide ranks them (static segments before parameters before wildcards).
    pub(crate) fn resource(&self, path: &str) -> Option<&'static str> {
        self.router.recognize(path).ok().map(|found| self.patterns[*found.handler].0)
    }

    /// The methods the resource at `path` answers to, in the order of RFC 9110's list: the
    /// mounted ones, `HEAD` beside `GET` (mounted with it), and `OPTIONS`; none if no route
    /// matches.
    pub(crate) fn allowed(&self, path: &str) -> Vec<Method> {
        let Some(found) = self.router.recognize(path).ok() else { return Vec::new() };
        let mounted = &self.patterns[*found.handler].1;
        let order = [Method::Get, Method::Head, Method::Post, Method::Put, Method::Patch, Method::Delete];
        let mut allowed: Vec<Method> = order
            .into_iter()
            .filter(|m| mounted.contains(m) || (*m == Method::Head && mounted.contains(&Method::Get)))
            .collect();
        allowed.extend(mounted.iter().filter(|m| !order.contains(m)));
        allowed.push(Method::Options);
        allowed
    }
}

/// Whether some path could match both patterns: segment by segment, two static segments
/// differ only if they are different text; a parameter matches any segment, and from a
/// wildcard on anything may follow (so patterns with one are rivals of everything their
/// prefixes allow).
fn could_overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), _) | (_, Some(x)) if x.starts_with('*') => return true,
            (Some(x), Some(y)) if x == y || x.starts_with(':') || y.starts_with(':') => {}
            _ => return false,
        }
    }
}

/// Whether `path` matches `pattern` (no wildcard) segment by segment: static segments as
/// they are, a parameter any non-empty segment.
fn segments_match(pattern: &str, path: &str) -> bool {
    let (mut pattern, mut path) = (pattern.split('/'), path.split('/'));
    loop {
        match (pattern.next(), path.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if p == s || (p.starts_with(':') && !s.is_empty()) => {}
            _ => return false,
        }
    }
}

/// The methods of the mounted route table.
pub(crate) fn methods() -> &'static Methods {
    static METHODS: OnceLock<Methods> = OnceLock::new();
    METHODS.get_or_init(|| Methods::new(&super::table()))
}

/// `GET, HEAD, OPTIONS`
pub(crate) fn allow_header(methods: &[Method]) -> String {
    methods.iter().map(Method::to_string).collect::<Vec<_>>().join(", ")
}

/// Each path of the table with the access its fallback is guarded by: public when any route
/// of the path is public (its methods are no secret), else the data plane's (a key first).
pub(crate) fn fallback_paths(specs: &[RouteSpec]) -> Vec<(&'static str, Access)> {
    let mut paths: BTreeMap<&'static str, Access> = BTreeMap::new();
    for spec in specs {
        let access = if spec.access == Access::Public { Access::Public } else { Access::DataPlane };
        let entry = paths.entry(spec.path).or_insert(access);
        if access == Access::Public {
            *entry = Access::Public;
        }
    }
    paths.into_iter().collect()
}

/// The endpoint for every method no route of the path takes, and for every path no route has.
pub(crate) async fn fallback(req: Request<State>) -> tide::Result {
    let path = req.url().path().to_string();
    let unknown = req.ext::<UnknownMethod>().map(|m| m.0.clone());
    let method = unknown.clone().unwrap_or_else(|| req.method().to_string());
    let allowed = methods().allowed(&path);
    if allowed.is_empty() {
        return Err(match unknown {
            Some(_) => ApiError::new(ErrorCode::NotImplemented, format!("Method {method} is not implemented")),
            None => ApiError::new(ErrorCode::RouteNotFound, format!("Route {method}:{path} not found")),
        }
        .into());
    }
    let allow = allow_header(&allowed);
    if unknown.is_none() && req.method() == Method::Options {
        return Ok(Response::builder(204).header("Allow", allow).build());
    }
    let error = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("Method {method} is not allowed on {path}; allowed: {allow}"),
    );
    let mut res = error.into_response();
    res.insert_header("Allow", allow);
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: Method, path: &'static str, access: Access) -> RouteSpec {
        RouteSpec { method, path, access }
    }

    #[test]
    fn the_quick_shadow_check_agrees_with_the_router_on_every_route() {
        let table = crate::daemon::routes::table();
        let methods = Methods::new(&table);
        let patterns: Vec<&'static str> = methods.patterns.iter().map(|(p, _)| *p).collect();
        // Every static segment of the table, and others, in every parameter's place.
        let mut words: Vec<String> = patterns
            .iter()
            .flat_map(|p| p.split('/'))
            .filter(|s| !s.starts_with([':', '*']))
            .map(String::from)
            .collect();
        words.extend(["k1", "%77atch", "a%2Fb", "x.y", "inbox:b", ""].map(String::from));
        words.sort();
        words.dedup();
        // tide routes by method, so a request can reach any pattern that matches its path.
        let alone: Vec<(&'static str, Router<()>)> = patterns
            .iter()
            .map(|p| {
                let mut router = Router::new();
                router.add(p, ());
                (*p, router)
            })
            .collect();
        let mut checked = 0;
        for pattern in &patterns {
            for word in &words {
                let path: String = pattern
                    .split('/')
                    .map(|s| if s.starts_with([':', '*']) { word.as_str() } else { s })
                    .collect::<Vec<_>>()
                    .join("/");
                for path in [path.clone(), format!("{path}/"), format!("{path}/{word}")] {
                    for (routed, router) in &alone {
                        if router.recognize(&path).is_err() {
                            continue;
                        }
                        let slow = methods.resource(&path).is_some_and(|resource| resource != *routed);
                        assert_eq!(methods.shadows(routed, &path), slow, "{path} routed to {routed}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked} paths checked");
        // A route shadowed by a more specific one: the check still sees it.
        assert!(methods.shadows("/api/v1/execute/:jobId", "/api/v1/execute/jobs"));
        assert!(!methods.shadows("/api/v1/context/:key", "/api/v1/context/k1"));
        assert!(methods.shadows("/api/v1/context/:key", "/api/v1/context/watch"));
    }

    #[test]
    fn allowed_methods_follow_tides_matching() {
        let specs = [
            spec(Method::Get, "/api/v1/context", Access::DataPlane),
            spec(Method::Get, "/api/v1/context/:key", Access::DataPlane),
            spec(Method::Get, "/api/v1/context/watch", Access::DataPlane),
            spec(Method::Put, "/api/v1/context/:key", Access::DataPlane),
            spec(Method::Delete, "/api/v1/context/:key", Access::DataPlane),
            spec(Method::Post, "/api/v1/execute", Access::DataPlane),
            spec(Method::Get, "/dashboard/*path", Access::Public),
        ];
        let methods = Methods::new(&specs);
        let names = |path: &str| allow_header(&methods.allowed(path));
        assert_eq!(names("/api/v1/context/a%2Fb"), "GET, HEAD, PUT, DELETE, OPTIONS");
        assert_eq!(names("/api/v1/context/watch"), "GET, HEAD, OPTIONS", "the static path is its own resource");
        assert_eq!(methods.resource("/api/v1/context/watch"), Some("/api/v1/context/watch"));
        assert_eq!(methods.resource("/api/v1/context/%77atch"), Some("/api/v1/context/:key"));
        assert_eq!(names("/api/v1/context"), "GET, HEAD, OPTIONS");
        assert_eq!(names("/api/v1/execute"), "POST, OPTIONS");
        assert_eq!(names("/dashboard/js/app.js"), "GET, HEAD, OPTIONS");
        assert_eq!(names("/api/v1/context/a/b"), "", "a parameter is one segment");
        assert_eq!(names("/api/v1/execute/"), "", "a trailing slash is another path");
        assert_eq!(names("/nope"), "");
        assert_eq!(
            fallback_paths(&[
                spec(Method::Get, "/a", Access::Owner),
                spec(Method::Post, "/a", Access::Local),
                spec(Method::Get, "/b", Access::Public),
                spec(Method::Post, "/b", Access::Owner),
            ]),
            vec![("/a", Access::DataPlane), ("/b", Access::Public)]
        );
    }

    #[test]
    fn every_path_of_the_table_is_its_own_resource_with_its_methods() {
        for spec in &super::super::table() {
            let concrete: String = spec
                .path
                .split('/')
                .map(|s| if s.starts_with([':', '*']) { "x-1" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            assert_eq!(methods().resource(&concrete), Some(spec.path), "{concrete}");
            let allowed = methods().allowed(&concrete);
            assert!(
                allowed.contains(&spec.method),
                "{} {} is in Allow for {concrete}: {allowed:?}",
                spec.method,
                spec.path
            );
        }
    }
}
