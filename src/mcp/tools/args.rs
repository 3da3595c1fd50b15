//! Tool arguments checked against the tool's schema (the subset our schemas use).

use serde_json::Value;

/// Validated arguments, and a key the caller offered through 1.0.21's `peerApiKey` (kept out of
/// the arguments and out of `Debug`, so it is never echoed or logged).
#[derive(Clone)]
pub(crate) struct Args(Value, Option<String>);

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let offered = if self.1.is_some() { "Some(<redacted>)" } else { "None" };
        f.debug_struct("Args").field("arguments", &self.0).field("offered_key", &offered).finish()
    }
}

impl Args {
    /// With the key the caller offered for a peer loopsy has no key for.
    pub(crate) fn with_offered_key(mut self, key: Option<String>) -> Args {
        self.1 = key;
        self
    }

    /// The key the caller offered (1.0.21's `peerApiKey`), if any.
    pub(crate) fn offered_key(&self) -> Option<&str> {
        self.1.as_deref()
    }

    /// Checks required properties, unknown properties, types and enums.
    pub(crate) fn validate(arguments: Value, schema: &Value) -> Result<Args, String> {
        let Value::Object(given) = &arguments else { return Err("arguments must be an object".into()) };
        let properties = schema["properties"].as_object().cloned().unwrap_or_default();
        for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if given.get(name).is_none_or(Value::is_null) {
                return Err(format!("'{name}' is required"));
            }
        }
        for (name, value) in given {
            let Some(property) = properties.get(name) else {
                let known: Vec<&String> = properties.keys().collect();
                return Err(format!("unknown argument '{name}' (known: {known:?})"));
            };
            if !value.is_null() {
                check_type(name, value, property)?;
            }
        }
        Ok(Args(arguments, None))
    }

    pub(crate) fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// A required string (the schema guarantees it is there).
    pub(crate) fn req(&self, name: &str) -> &str {
        self.str(name).unwrap_or_default()
    }

    pub(crate) fn u64(&self, name: &str) -> Option<u64> {
        self.0.get(name).and_then(Value::as_u64)
    }

    /// An argument as it was given (numbers passed through unchanged).
    pub(crate) fn value(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|value| !value.is_null())
    }

    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.0.get(name).and_then(Value::as_bool)
    }

    pub(crate) fn strings(&self, name: &str) -> Vec<String> {
        self.0
            .get(name)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect()
    }
}

fn check_type(name: &str, value: &Value, property: &Value) -> Result<(), String> {
    let ok = match property["type"].as_str() {
        Some("string") => value.is_string(),
        Some("integer") => value.is_u64() || value.is_i64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("array") => value
            .as_array()
            .is_some_and(|items| property["items"]["type"] != "string" || items.iter().all(Value::is_string)),
        Some("object") => value.is_object(),
        _ => true,
    };
    if !ok {
        return Err(format!("'{name}' must be of type {}", property["type"]));
    }
    if let Some(options) = property["enum"].as_array() {
        if !options.contains(value) {
            return Err(format!("'{name}' must be one of {}", Value::Array(options.clone())));
        }
    }
    if property["type"] == "integer"
        && property.get("minimum").and_then(Value::as_i64).is_some_and(|min| value.as_i64().unwrap_or(0) < min)
    {
        return Err(format!("'{name}' must be at least {}", property["minimum"]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        super::super::object(
            json!({"key": {"type": "string"}, "ttl": {"type": "integer", "minimum": 1}, "mode": {"type": "string", "enum": ["a", "b"]},
                   "args": {"type": "array", "items": {"type": "string"}}}),
            &["key"],
        )
    }

    #[track_caller]
    fn check(arguments: Value, expect: Result<(), &str>) {
        match (Args::validate(arguments, &schema()), expect) {
            (Ok(_), Ok(())) => {}
            (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
            (got, want) => panic!("{got:?} vs {want:?}"),
        }
    }

    #[test]
    fn arguments_are_checked_against_the_schema() {
        check(json!({"key": "k"}), Ok(()));
        check(json!({"key": "k", "ttl": 5, "mode": "a", "args": ["x"]}), Ok(()));
        check(json!({}), Err("'key' is required"));
        check(json!({"key": "k", "peerApiKey": "x"}), Err("unknown argument 'peerApiKey'"));
        check(json!({"key": 5}), Err("'key' must be of type"));
        check(json!({"key": "k", "ttl": 0}), Err("at least 1"));
        check(json!({"key": "k", "mode": "c"}), Err("one of"));
        check(json!({"key": "k", "args": [1]}), Err("'args'"));
        check(json!([1]), Err("an object"));
    }
}
