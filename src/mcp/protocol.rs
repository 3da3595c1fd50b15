//! JSON-RPC 2.0 framing for MCP over stdio: parsing lines, error codes, responses.
//!
//! Pure: bytes in, values out. Parse errors and invalid requests are answered, never fatal.

use serde_json::{json, Value};

/// The MCP versions this server speaks, oldest first.
pub(crate) const VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// JSON-RPC error codes.
pub(crate) const PARSE_ERROR: i64 = -32700;
pub(crate) const INVALID_REQUEST: i64 = -32600;
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
pub(crate) const INVALID_PARAMS: i64 = -32602;

/// The version to answer: the client's when we speak it, else our newest. (Gemini CLI rejects
/// a newer answer than it asked for, so echoing matters.)
pub(crate) fn negotiate(requested: Option<&str>) -> &'static str {
    requested.and_then(|v| VERSIONS.iter().find(|s| **s == v).copied()).unwrap_or(VERSIONS[VERSIONS.len() - 1])
}

/// A JSON-RPC error for one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into() }
    }
    pub(crate) fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }
}

/// One incoming message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    /// Has an id: must be answered.
    Request { id: Value, method: String, params: Value },
    /// No id: never answered.
    Notification { method: String, params: Value },
    /// A response to something we sent (we send no requests, so these are ignored).
    Response,
    /// Not a valid message: answer this error with this id (null when unknown).
    Invalid { id: Value, error: RpcError },
}

/// Parses one line, which may hold a single message or a batch.
pub(crate) fn parse_line(line: &str) -> Vec<Incoming> {
    match serde_json::from_str::<Value>(line) {
        Err(e) => {
            vec![Incoming::Invalid { id: Value::Null, error: RpcError::new(PARSE_ERROR, format!("parse error: {e}")) }]
        }
        Ok(Value::Array(items)) if items.is_empty() => {
            vec![Incoming::Invalid { id: Value::Null, error: RpcError::new(INVALID_REQUEST, "empty batch") }]
        }
        Ok(Value::Array(items)) => items.into_iter().map(classify).collect(),
        Ok(value) => vec![classify(value)],
    }
}

fn classify(value: Value) -> Incoming {
    let id = value.get("id").cloned();
    let valid_id = |id: &Value| id.is_string() || id.is_number();
    let invalid = |id: Option<Value>, message: &str| Incoming::Invalid {
        id: id.filter(valid_id).unwrap_or(Value::Null),
        error: RpcError::new(INVALID_REQUEST, message),
    };
    if !value.is_object() {
        return invalid(None, "a message must be a JSON object");
    }
    if value.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(id, "jsonrpc must be \"2.0\"");
    }
    let Some(method) = value.get("method") else {
        return if value.get("result").is_some() || value.get("error").is_some() {
            Incoming::Response
        } else {
            invalid(id, "missing method")
        };
    };
    let Some(method) = method.as_str().map(String::from) else { return invalid(id, "method must be a string") };
    let params = value.get("params").cloned().unwrap_or(json!({}));
    if !(params.is_object() || params.is_array()) {
        return invalid(id, "params must be an object or an array");
    }
    match id {
        None => Incoming::Notification { method, params },
        Some(id) if valid_id(&id) => Incoming::Request { id, method, params },
        Some(id) => invalid(Some(id), "id must be a string or a number"),
    }
}

pub(crate) fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub(crate) fn error(id: &Value, error: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": error.code, "message": error.message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_invalid(line: &str, code: i64) {
        match parse_line(line).as_slice() {
            [Incoming::Invalid { error, .. }] => assert_eq!(error.code, code, "{line}"),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn versions_are_echoed_when_known_else_the_newest() {
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("2024-11-05")), "2024-11-05");
        assert_eq!(negotiate(Some("2099-01-01")), "2025-11-25");
        assert_eq!(negotiate(None), "2025-11-25");
    }

    #[test]
    fn lines_are_classified() {
        assert_eq!(
            parse_line(r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#),
            [Incoming::Request { id: json!("a"), method: "ping".into(), params: json!({}) }]
        );
        assert_eq!(
            parse_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            [Incoming::Notification { method: "notifications/initialized".into(), params: json!({}) }]
        );
        assert_eq!(parse_line(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#), [Incoming::Response]);
        assert_eq!(parse_line(r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]"#).len(), 2);
        check_invalid("{nope", PARSE_ERROR);
        check_invalid("[]", INVALID_REQUEST);
        check_invalid("42", INVALID_REQUEST);
        check_invalid(r#"{"id":1,"method":"ping"}"#, INVALID_REQUEST);
        check_invalid(r#"{"jsonrpc":"2.0","id":1}"#, INVALID_REQUEST);
        check_invalid(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, INVALID_REQUEST);
        check_invalid(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#, INVALID_REQUEST);
    }
}
