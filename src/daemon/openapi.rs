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

/// The content of a `text/event-stream` response whose events carry `data` as JSON of
/// `data_schema` (OpenAPI 3.2's `itemSchema` describes one event: `event`, `id`, `data`).
pub fn event_stream(data_schema: Value) -> Value {
    json!({"text/event-stream": {"itemSchema": {"type": "object", "required": ["data"], "properties": {
        "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer"},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data_schema}}}}})
}

/// A 429 answer with `Retry-After`.
pub fn busy() -> Value {
    json!({"$ref": "#/components/responses/Busy"})
}

/// What `peers::check_address` accepts: a host name (labels of letters, digits, `_` and `-`,
/// not starting with `-`; not an unspecified or multicast IPv4 address) or an IPv6 literal.
pub fn address_schema(description: &str) -> Value {
    let host = "^\\s*(?!(0+\\.0+\\.0+\\.0+|(22[4-9]|23[0-9])\\.[0-9]+\\.[0-9]+\\.[0-9]+)\\.?\\s*$)(?=[^.]{1}.{0,252}(\\.|)\\s*$)[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\\.?\\s*$";
    json!({"description": description, "anyOf": [
        {"type": "string", "pattern": host},
        {"type": "string", "format": "ipv6", "not": {"pattern": "^(::|0*:0*:0*:0*:0*:0*:0*:0*|[fF][fF].*)$"}}]})
}

/// What `peers::check_text` accepts: 1 to `max` characters, not blank, no control characters.
pub fn text_schema(max: usize) -> Value {
    json!({"type": "string", "maxLength": max, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"})
}

/// What `dashboard::targets::TargetId::parse` accepts: `local`, `session:<name>`, `peer:<id>`.
pub const TARGET_PATTERN: &str = "^(local|session:(?!(\\.|\\.\\.|main)$)[A-Za-z0-9._-]{1,64}|peer:[!-.0-~]{1,300})$";

/// A node id: a UUID in hex (`peers::check_node_id`).
pub const NODE_ID_PATTERN: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

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
        state.context.close();
        state.locks.close();
        state.audit.close();
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
}
