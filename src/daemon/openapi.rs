//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, assembled from each route area.
//!
//! Every area (`routes/<area>.rs`) describes its paths and schemas as data in
//! `openapi/<area>.json`, embedded at build time; this file adds what they share: the bearer
//! scheme, the error body, the common error responses, the nullable optional members of JSON
//! bodies and `x-loopsy-access` from the route table. Values that mirror a Rust constant (limits,
//! the terminal key names) are checked against it by the tests below.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::routes;

/// The document as JSON text, built once.
pub(crate) fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::to_string_pretty(&build()).expect("the document serialises"))
}

/// The document as a JSON value.
pub(crate) fn build() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert("Error".into(), error_schema());
    for part in parts() {
        for (path, item) in part["paths"].as_object().cloned().unwrap_or_default() {
            let entry = paths.entry(path).or_insert_with(|| json!({}));
            for (method, mut operation) in item.as_object().cloned().unwrap_or_default() {
                add_common_responses(&mut operation);
                entry[method] = operation;
            }
        }
        schemas.extend(part["schemas"].as_object().cloned().unwrap_or_default());
    }
    // A JSON body's member set to null counts as not given (`body.rs`): optional members of
    // every JSON request body accept null.
    let mut bodies = std::collections::BTreeSet::new();
    for item in paths.values_mut() {
        for operation in item.as_object_mut().into_iter().flat_map(|ops| ops.values_mut()) {
            let Some(schema) = operation.pointer_mut("/requestBody/content/application~1json/schema") else { continue };
            match schema.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    bodies.insert(reference.trim_start_matches("#/components/schemas/").to_string());
                }
                None => nullable_optionals(schema),
            }
        }
    }
    for name in bodies {
        if let Some(schema) = schemas.get_mut(&name) {
            nullable_optionals(schema);
        }
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
            "description": "Wire-compatible with loopsy 1.0.21. Every route but the public ones needs `Authorization: Bearer <key>` (the node's own key or a key listed in auth.allowedKeys). `x-loopsy-access` says who may call an operation: Public (anyone), DataPlane (the owner and peers), Owner (this node's own key from loopback, or the dashboard), Local (the own key from loopback only); a caller of another class gets 403 with code 9009. Errors have the body `{\"error\":{\"code\":N,\"message\":\"...\"}}` (routes 1.0.21 answered with `{\"error\":\"...\"}`, the AI-task and pairing routes, keep that shape: see each operation). In a JSON body, a member set to null counts as not given."
        },
        "servers": [{"url": "http://127.0.0.1:19532"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
            "responses": {
                "Error": {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Busy": {"description": "too many requests: come back after `Retry-After` (rate limits 9002, a full queue 3003, pairing's back-off)",
                    "headers": {"Retry-After": {"required": false, "schema": {"type": "integer", "minimum": 0}, "description": "seconds"}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        }
    })
}

/// Each area's paths and schemas, in the order they are merged.
const PARTS: [(&str, &str); 12] = [
    ("system", include_str!("openapi/system.json")),
    ("pairing", include_str!("openapi/pairing.json")),
    ("peers", include_str!("openapi/peers.json")),
    ("execute", include_str!("openapi/execute.json")),
    ("context", include_str!("openapi/context.json")),
    ("transfer", include_str!("openapi/transfer.json")),
    ("tasks", include_str!("openapi/tasks.json")),
    ("approvals", include_str!("openapi/approvals.json")),
    ("dashboard", include_str!("openapi/dashboard.json")),
    ("messages", include_str!("openapi/messages.json")),
    ("locks", include_str!("openapi/locks.json")),
    ("terminals", include_str!("openapi/terminals.json")),
];

/// The parts, parsed (`document` builds once; a part that is not JSON fails every test).
fn parts() -> impl Iterator<Item = Value> {
    PARTS.iter().map(|(area, text)| {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("src/daemon/openapi/{area}.json is not JSON: {e}"))
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

/// A 429 answer with `Retry-After`.
fn busy() -> Value {
    json!({"$ref": "#/components/responses/Busy"})
}

/// Makes every property of the object `schema` that is not required also accept null.
fn nullable_optionals(schema: &mut Value) {
    let required: Vec<String> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else { return };
    for (name, property) in properties.iter_mut() {
        if required.contains(name) {
            continue;
        }
        match property.get("type").cloned() {
            Some(Value::String(kind)) if kind != "null" => property["type"] = json!([kind, "null"]),
            Some(Value::Array(mut kinds)) if !kinds.contains(&json!("null")) => {
                kinds.push("null".into());
                property["type"] = kinds.into();
            }
            Some(_) => {}
            None => *property = json!({"anyOf": [property.take(), {"type": "null"}]}),
        }
        if let Some(options) = property.get_mut("enum").and_then(Value::as_array_mut) {
            if !options.contains(&Value::Null) {
                options.push(Value::Null);
            }
        }
    }
}

fn error_schema() -> Value {
    json!({
        "type": "object", "required": ["error"],
        "properties": {"error": {"oneOf": [
            {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "integer", "description": "1001 missing key, 1002 invalid key, 9002 rate limited, 9003 invalid request, 9004 route not found, 9005 method not allowed (with `Allow`), 9006 body too large, 9007 unsupported media type, 9009 not for this caller, 9010 method not implemented (501), 9020 plain HTTP from another machine refused (TLS required); 8101-8106 pairing; area codes are listed with each route. A request the schema allows can still be refused for what it names: 403 when a policy says no (3001 the deny/allow list, 4001 the transfer paths), 404 when what it names is not there (3004, 4002, 5001), 409 on a conflict with the current state, 429 when the node is busy"},
                "message": {"type": "string"}}},
            {"type": "string"}
        ]}}
    })
}

fn add_common_responses(operation: &mut Value) {
    let error = json!({"$ref": "#/components/responses/Error"});
    let public = operation.get("security").is_some_and(|s| s.as_array().is_some_and(Vec::is_empty));
    let responses = operation["responses"].as_object_mut().expect("every operation has responses");
    let mut common = vec!["400", "413", "415"];
    if !public {
        common.extend(["401", "403"]);
    }
    for status in common {
        responses.entry(status).or_insert_with(|| error.clone());
    }
    responses.entry("429").or_insert_with(busy);
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
                        || operation["responses"].as_object().unwrap().keys().any(|k| k.starts_with(['1', '2', '3']))
                        // 1.0.21's clear-text pairing only ever answers 426.
                        || path == "/api/v1/pair/initiate",
                    "{method} {path} documents a success response"
                );
                // Every path parameter is declared, in the path, required.
                for name in path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))) {
                    let declared = operation["parameters"].as_array().into_iter().flatten().any(|p| {
                        p["name"] == name && p["in"] == "path" && p["required"] == true && p["schema"].is_object()
                    });
                    assert!(declared, "{method} {path} declares its path parameter {name}");
                }
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
        state.data.context.close();
        state.data.locks.close();
        state.gate.audit.close();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_document_states_what_the_server_enforces() {
        let doc = build();
        let op = |path: &str, method: &str| doc["paths"][path][method].clone();
        let schema = |name: &str| doc["components"]["schemas"][name].clone();
        let param = |path: &str, method: &str, name: &str| {
            op(path, method)["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap()
        };
        for method in ["get", "delete"] {
            let dest = param("/api/v1/transfer/uploads/{uploadId}", method, "destPath");
            assert_eq!((dest["required"].clone(), dest["schema"]["minLength"].clone()), (json!(true), json!(1)));
        }
        let peer = param("/api/v1/messages/status", "get", "peer");
        assert_eq!((peer["required"].clone(), peer["schema"]["minLength"].clone()), (json!(true), json!(1)));
        assert_eq!(schema("PathRequest")["properties"]["path"]["minLength"], 1);
        assert_eq!(schema("PullRequest")["properties"]["sourcePath"]["minLength"], 1);
        assert_eq!(schema("PushForm")["properties"]["destPath"]["minLength"], 1);
        assert!(schema("PushForm")["description"].as_str().unwrap().contains("must come before the file part"));
        let join = &op("/api/v1/pair/join", "post")["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(join["properties"]["code"]["pattern"], "^[ -]*([0-9][ -]*){6}$");
        let spake2 = &op("/api/v1/pair/spake2", "post")["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(spake2["properties"]["share"]["pattern"], "^([0-9a-fA-F]{2})*$");
        assert!(op("/api/v1/pair/initiate", "post")["responses"]["426"].is_object());
        assert!(op("/api/v1/execute", "post")["description"].as_str().unwrap().contains("403 code 3001"));
        assert!(op("/api/v1/execute", "post")["responses"]["403"].is_object());
        // A 429 says when to come back; main's routes state their refusals too.
        assert_eq!(op("/api/v1/execute", "post")["responses"]["429"]["$ref"], "#/components/responses/Busy");
        assert!(doc["components"]["responses"]["Busy"]["headers"]["Retry-After"].is_object());
        for status in ["403", "404", "429"] {
            assert!(op("/api/v1/terminals", "post")["responses"][status].is_object(), "POST /terminals {status}");
        }
        assert!(op("/api/v1/terminals/{id}/attach", "get")["responses"]["426"].is_object());
        assert_eq!(schema("Fence")["properties"]["lock"]["allOf"][0]["maxLength"], crate::locks::MAX_NAME_BYTES);
        // Optional members of JSON bodies take null (body.rs reads null as absent); required ones do not.
        assert_eq!(schema("ContextPut")["properties"]["ttl"]["type"], json!(["number", "null"]));
        assert_eq!(schema("ContextPut")["properties"]["value"]["type"], "string");
    }

    /// Every value under a member named `name`, anywhere in `value`.
    fn members<'a>(value: &'a Value, name: &str, out: &mut Vec<&'a Value>) {
        match value {
            Value::Object(map) => {
                for (key, member) in map {
                    if key == name {
                        out.push(member);
                    }
                    members(member, name, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| members(item, name, out)),
            _ => {}
        }
    }

    #[test]
    fn the_data_agrees_with_the_constants() {
        use crate::{locks, messages, store};
        let doc = build();
        let at =
            |pointer: &str| doc.pointer(pointer).cloned().unwrap_or_else(|| panic!("{pointer} is in the document"));
        let schemas = "/components/schemas";
        let lock = "/paths/~1api~1v1~1locks~1{name}";
        for pointer in [
            format!("{lock}/post/parameters/0/schema/maxLength"),
            format!("{lock}/get/parameters/0/schema/maxLength"),
            format!("{lock}/delete/parameters/0/schema/maxLength"),
            format!("{lock}~1renew/post/parameters/0/schema/maxLength"),
            format!("{schemas}/Fence/properties/lock/allOf/0/maxLength"),
        ] {
            assert_eq!(at(&pointer), locks::MAX_NAME_BYTES, "{pointer}");
        }
        for pointer in [
            format!("{lock}/delete/parameters/1/schema/maxLength"),
            format!("{schemas}/LockAcquire/properties/holder/maxLength"),
            format!("{schemas}/LockRenew/properties/holder/maxLength"),
            format!("{schemas}/LockHolder/properties/holder/maxLength"),
        ] {
            assert_eq!(at(&pointer), locks::MAX_HOLDER_CHARS, "{pointer}");
        }
        for body in ["LockAcquire", "LockRenew"] {
            assert_eq!(at(&format!("{schemas}/{body}/properties/ttl/minimum")), locks::MIN_TTL_SECS);
            assert_eq!(at(&format!("{schemas}/{body}/properties/ttl/maximum")), locks::MAX_TTL_SECS);
        }
        assert_eq!(at(&format!("{schemas}/LockAcquire/properties/wait/maximum")), locks::MAX_WAIT_SECS);
        assert_eq!(at(&format!("{schemas}/MessageSend/properties/body/maxLength")), messages::MAX_BODY_CHARS);
        assert_eq!(at(&format!("{schemas}/ContextPut/properties/ttl/maximum")), store::MAX_TTL_SECS);
        for method in ["put", "get", "delete"] {
            let key = at(&format!("/paths/~1api~1v1~1context~1{{key}}/{method}/parameters/0/description"));
            assert!(
                key.as_str().unwrap().starts_with(&format!("1 to {} bytes", store::MAX_KEY_BYTES)),
                "{method}: {key}"
            );
        }
        let keys = "/paths/~1api~1v1~1terminals~1{id}~1input/post/requestBody/content/application~1json/schema/properties/keys";
        assert_eq!(at(&format!("{keys}/items/pattern")), crate::terminal::keys::pattern());
    }

    #[test]
    fn a_shape_written_in_several_places_is_written_alike() {
        let doc = build();
        let mut patterns = Vec::new();
        members(&doc, "pattern", &mut patterns);
        let mut addresses = Vec::new();
        members(&doc, "address", &mut addresses);
        let addresses: Vec<_> =
            addresses.into_iter().filter(|a| a.get("anyOf").is_some()).map(|a| &a["anyOf"]).collect();
        let mut node_ids = Vec::new();
        members(&doc, "nodeId", &mut node_ids);
        let node_ids: Vec<_> = node_ids.into_iter().filter_map(|n| n.get("pattern")).collect();
        let targets: Vec<_> =
            patterns.iter().filter(|p| p.as_str().is_some_and(|p| p.starts_with("^(local|"))).collect();
        let texts: Vec<_> = patterns
            .iter()
            .filter(|p| p.as_str().is_some_and(|p| p.starts_with("^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s")))
            .collect();
        // How many copies each has today: the dashboard proxy's four methods and the approval
        // decision; the pairing join and the two peer bodies; the two peer bodies' node ids and
        // the hostnames of both, the platform and version of one.
        for (what, copies, at_least) in [
            ("target", targets.len(), 5),
            ("address", addresses.len(), 3),
            ("nodeId", node_ids.len(), 2),
            ("text", texts.len(), 4),
        ] {
            assert!(copies >= at_least, "{what}: {copies} copies found");
        }
        assert!(targets.windows(2).all(|w| w[0] == w[1]), "the dashboard target pattern differs: {targets:?}");
        assert!(addresses.windows(2).all(|w| w[0] == w[1]), "the address schema differs: {addresses:?}");
        assert!(node_ids.windows(2).all(|w| w[0] == w[1]), "the node id pattern differs: {node_ids:?}");
        assert!(texts.windows(2).all(|w| w[0] == w[1]), "the text pattern differs: {texts:?}");
    }
}
