//! Reading request bodies: size limit, content type and JSON decoding with clear errors.
//!
//! A malformed body is always a 4xx that says what is wrong and where (which field), never the
//! 500 with a raw validation dump that 1.0.21 answered.

use futures_lite::AsyncReadExt;
use serde::de::DeserializeOwned;
use tide::Request;

use super::error::{ApiError, ErrorCode};
use super::state::State;

/// Largest JSON body accepted (1.0.21's limit).
pub(crate) const MAX_JSON_BODY: u64 = 1024 * 1024;

/// Decodes the body as JSON into `T`.
pub(crate) async fn json<T: DeserializeOwned>(req: &mut Request<State>) -> Result<T, ApiError> {
    json_limited(req, MAX_JSON_BODY).await
}

/// Like [`json`] with a route's own size limit (the context PUT takes a 1 MiB value plus its
/// JSON envelope).
pub(crate) async fn json_limited<T: DeserializeOwned>(req: &mut Request<State>, limit: u64) -> Result<T, ApiError> {
    let bytes = read_limited(req, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty; this route expects a JSON object"));
    }
    decode(&bytes)
}

/// Decodes the body as JSON into `T`, or `T::default()` when there is no body.
pub(crate) async fn json_or_default<T: DeserializeOwned + Default>(req: &mut Request<State>) -> Result<T, ApiError> {
    // No body at all has no media type to refuse (the HTTP layer labels it octet-stream).
    if req.len() == Some(0) {
        return Ok(T::default());
    }
    let bytes = read_limited(req, MAX_JSON_BODY).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    decode(&bytes)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|inner| ApiError::bad_request(format!("invalid JSON body: {inner}")))?;
    integral_numbers(&mut value);
    // A member set to null is a member not given (the OpenAPI document marks every optional
    // member nullable), so `{"ttl": null}` means what `{}` means.
    if let serde_json::Value::Object(members) = &mut value {
        members.retain(|_, member| !member.is_null());
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() || path == "." {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid JSON body: field '{path}': {inner}")
        };
        ApiError::bad_request(message)
    })
}

/// JSON has one number type: `5.0` is the integer 5 (JSON Schema says so too), so integral
/// floats become integers before the typed decoding that would refuse them as floats.
fn integral_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                *value = Value::from(f as u64);
            } else if f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(members) => members.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

async fn read_limited(req: &mut Request<State>, limit: u64) -> Result<Vec<u8>, ApiError> {
    if let Some(content_type) = req.header("Content-Type").map(|v| v.last().as_str().to_string()) {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("unsupported media type '{content_type}': send Content-Type: application/json"),
            ));
        }
    }
    if req.len().is_some_and(|len| len as u64 > limit) {
        return Err(too_large(limit));
    }
    let mut bytes = Vec::new();
    let body = req.take_body();
    body.take(limit + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, format!("request body is larger than {limit} bytes"))
}

/// A query parameter, percent-decoded (`+` read as a space, as in forms).
pub(crate) fn query(req: &Request<State>, name: &str) -> Option<String> {
    req.url().query_pairs().find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
}

/// A path parameter, percent-decoded (`%2F` becomes `/`, as in 1.0.21).
pub(crate) fn param(req: &Request<State>, name: &str) -> Result<String, ApiError> {
    let raw = req.param(name).map_err(|_| ApiError::bad_request(format!("missing path parameter '{name}'")))?;
    crate::percent::decode(raw)
        .ok_or_else(|| ApiError::bad_request(format!("path parameter '{name}' is not valid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_are_integers() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Port {
            port: u16,
            ttl: Option<f64>,
        }
        assert_eq!(decode::<Port>(br#"{"port": 422.0, "ttl": 1.5}"#).unwrap(), Port { port: 422, ttl: Some(1.5) });
        assert_eq!(decode::<Port>(br#"{"port": 1e3}"#).unwrap(), Port { port: 1000, ttl: None });
        let err = decode::<Port>(br#"{"port": 1.5}"#).unwrap_err();
        assert!(err.message().contains("field 'port'"), "{}", err.message());
        assert!(decode::<Port>(br#"{"port": 70000.0}"#).is_err());
        assert!(decode::<Port>(br#"{"port": -0.0}"#).is_ok_and(|p| p.port == 0));
        assert!(decode::<Port>(b"{nope").unwrap_err().message().starts_with("invalid JSON body"));
        assert_eq!(decode::<Port>(br#"{"port": 1, "ttl": null}"#).unwrap(), Port { port: 1, ttl: None });
        assert!(
            decode::<Port>(br#"{"port": null}"#).unwrap_err().message().contains("port"),
            "required stays required"
        );
    }
}
