//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, assembled from each route area.
//!
//! Every area's file (`routes/*.rs`) describes its own paths next to its handlers; this file
//! adds what they share: the bearer scheme, the error body and the common error responses.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::routes;

/// The document as JSON text, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::to_string_pretty(&build()).expect("the document serialises"))
}

/// The document as a JSON value.
pub fn build() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("Error".into(), error_schema());
    for part in routes::openapi_parts() {
        for (path, item) in part["paths"].as_object().cloned().unwrap_or_default() {
            let entry = paths.entry(path).or_insert_with(|| json!({}));
            for (method, mut operation) in item.as_object().cloned().unwrap_or_default() {
                add_common_responses(&mut operation);
                entry[method] = operation;
            }
        }
        schemas.extend(part["schemas"].as_object().cloned().unwrap_or_default());
    }
    // Who may call each operation, from the route table itself (ARCHITECTURE.md's access table).
    for spec in routes::table() {
        let method = spec.method.to_string().to_lowercase();
        if let Some(operation) = paths.get_mut(&openapi_path(spec.path)).and_then(|item| item.get_mut(&method)) {
            operation["x-loopsy-access"] = spec.access.name().into();
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "loopsy daemon API",
            "version": crate::identity::PROTOCOL_VERSION,
            "description": "Wire-compatible with loopsy 1.0.21. Every route but the public ones needs `Authorization: Bearer <key>` (the node's own key or a key listed in auth.allowedKeys). `x-loopsy-access` says who may call an operation: Public (anyone), DataPlane (the owner and peers), Owner (this node's own key from loopback, or the dashboard), Local (the own key from loopback only); a caller of another class gets 403 with code 9009. Errors have the body `{\"error\":{\"code\":N,\"message\":\"...\"}}`."
        },
        "servers": [{"url": "http://127.0.0.1:19532"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
            "responses": {
                "Error": {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        }
    })
}

/// `/api/v1/context/:key` in tide's syntax is `/api/v1/context/{key}` in OpenAPI's (and a
/// wildcard `*rest` is `{rest}`).
fn openapi_path(tide_path: &str) -> String {
    tide_path
        .split('/')
        .map(|segment| match segment.strip_prefix(':').or_else(|| segment.strip_prefix('*')) {
            Some(name) => format!("{{{name}}}"),
            None => segment.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn error_schema() -> Value {
    json!({
        "type": "object", "required": ["error"],
        "properties": {"error": {"oneOf": [
            {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "integer", "description": "1001 missing key, 1002 invalid key, 9002 rate limited, 9003 invalid request, 9004 route not found, 9005 method not allowed, 9006 body too large, 9007 unsupported media type, 9009 not for this caller, 9020 plain HTTP from another machine refused (TLS required); area codes are listed with each route"},
                "message": {"type": "string"}}},
            {"type": "string"}
        ]}}
    })
}

fn add_common_responses(operation: &mut Value) {
    let error = json!({"$ref": "#/components/responses/Error"});
    let public = operation.get("security").is_some_and(|s| s.as_array().is_some_and(Vec::is_empty));
    let responses = operation["responses"].as_object_mut().expect("every operation has responses");
    let mut common = vec!["400", "413", "415", "429"];
    if !public {
        common.extend(["401", "403"]);
    }
    for status in common {
        responses.entry(status).or_insert_with(|| error.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::daemon::state::State;
    use crate::identity::NodeId;
    use crate::paths::Paths;

    #[test]
    fn every_mounted_route_is_documented_and_every_documented_route_is_mounted() {
        let dir = std::env::temp_dir().join(format!("loopsy-openapi-{}", crate::random::hex(6)));
        let paths = Paths::from_dir(&dir).unwrap();
        let config = Config::new_with_key(crate::random::api_key());
        let node = NodeId::load_or_create(&paths).unwrap();
        let (state, _nudges) = State::open(Arc::new(paths), config, node, 19532).unwrap();
        let (_app, specs) = crate::daemon::app(state.clone());
        let mounted: BTreeSet<(String, String)> =
            specs.iter().map(|spec| (spec.method.to_string().to_lowercase(), openapi_path(spec.path))).collect();
        assert!(mounted.len() > 30, "the route table is read: {} routes", mounted.len());
        let document = build();
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                assert!(
                    operation["responses"]["200"].is_object()
                        // A redirect is the success of the dashboard's /dashboard and its login, 101
                        // Switching Protocols that of a WebSocket.
                        || operation["responses"].as_object().unwrap().keys().any(|k| k.starts_with(['1', '2', '3'])),
                    "{method} {path} documents a success response"
                );
                let access = operation["x-loopsy-access"].as_str();
                assert!(access.is_some(), "{method} {path} says who may call it");
                let open = operation.get("security").is_some_and(|s| s.as_array().is_some_and(Vec::is_empty));
                assert_eq!(open, access == Some("Public"), "{method} {path}: `security: []` exactly on public routes");
                documented.insert((method.clone(), path.clone()));
            }
        }
        let undocumented: Vec<_> = mounted.difference(&documented).collect();
        assert!(undocumented.is_empty(), "routes missing from the OpenAPI document: {undocumented:?}");
        let phantom: Vec<_> = documented.difference(&mounted).collect();
        assert!(phantom.is_empty(), "documented routes that do not exist: {phantom:?}");
        state.context.close();
        state.locks.close();
        state.audit.close();
        let _ = std::fs::remove_dir_all(dir);
    }
}
