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
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "loopsy daemon API",
            "version": crate::identity::PROTOCOL_VERSION,
            "description": "Wire-compatible with loopsy 1.0.21. Every route but the public ones needs `Authorization: Bearer <key>` (the node's own key or a key listed in auth.allowedKeys). Errors have the body `{\"error\":{\"code\":N,\"message\":\"...\"}}`."
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

fn error_schema() -> Value {
    json!({
        "type": "object", "required": ["error"],
        "properties": {"error": {"oneOf": [
            {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "integer", "description": "1001 missing key, 1002 invalid key, 9002 rate limited, 9003 invalid request, 9004 route not found, 9005 method not allowed, 9006 body too large, 9007 unsupported media type; area codes are listed with each route"},
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
