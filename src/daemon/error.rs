//! The HTTP boundary's one error type, [`ApiError`], and the one place it becomes a response.
//!
//! Handlers return `Err(ApiError)` through `?`, or a domain error, which `domain` maps to its
//! `ApiError` (the one place that does); tide turns every error into a 500, and
//! [`render`] (an `After` middleware) maps it to the status and the JSON body of 1.0.21:
//! `{"error":{"code":N,"message":"..."}}`, or `{"error":"..."}` for the routes where 1.0.21 used
//! that family. Anything that is not an `ApiError` is a bug and answers 500 with a generic text.

use serde_json::json;
use tide::http::StatusCode;

mod domain;

/// Numeric error codes of 1.0.21 (§0.1) plus the ones this implementation adds (9004 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum ErrorCode {
    AuthMissingKey = 1001,
    AuthInvalidKey = 1002,
    PeerNotFound = 2001,
    PeerUnreachable = 2003,
    ExecCommandDenied = 3001,
    ExecMaxConcurrent = 3003,
    ExecFailed = 3004,
    ExecJobNotFound = 3006,
    /// An `Idempotency-Key` came again with a different request.
    ExecIdempotencyMismatch = 3007,
    /// The job of an `Idempotency-Key` ran, but its output is no longer kept.
    ExecJobExpired = 3008,
    TransferPathDenied = 4001,
    TransferFileNotFound = 4002,
    TransferTooLarge = 4003,
    TransferChecksumMismatch = 4004,
    TransferFailed = 4005,
    TransferBadDestination = 4006,
    TransferResumeConflict = 4007,
    TransferRangeNotSatisfiable = 4008,
    ContextKeyNotFound = 5001,
    ContextValueTooLarge = 5002,
    ContextMaxEntries = 5003,
    ContextRevisionConflict = 5004,
    /// The context journal cannot be written (disk full, I/O error) or the daemon is stopping.
    ContextStorageFailed = 5005,
    /// The permission request was decided before (or expired, or was withdrawn).
    ApprovalDecided = 6101,
    /// The target has no such permission request.
    ApprovalNotFound = 6102,
    /// No such message in this node's inbox (acknowledged already, expired, never arrived).
    MessageNotFound = 7001,
    /// The messaging outbox holds as many deliveries as it may.
    OutboxFull = 7002,
    /// Another holder has the lock.
    LockHeld = 6001,
    /// Nobody holds the lock (released or expired).
    LockNotHeld = 6002,
    /// A fenced write whose grant is not the live one.
    FenceRefused = 6003,
    /// The lock table holds as many locks as it may.
    LockLimit = 6004,
    /// The lock journal cannot be written, or the daemon is stopping.
    LockStorageFailed = 6005,
    /// No terminal session with that id or name.
    TerminalNotFound = 8001,
    /// `terminals.maxSessions` or `terminals.maxClients` reached.
    TerminalLimit = 8002,
    /// The terminal takes no input: its program exited, or does not read what was typed.
    TerminalExited = 8003,
    /// A running terminal already has that name, or an id prefix fits several.
    TerminalConflict = 8004,
    /// Pairing (routes new in loopsy): no session here.
    PairingNoSession = 8101,
    /// The pairing session's five minutes are over.
    PairingExpired = 8102,
    /// A wrong code, or this address used its guesses.
    PairingRefused = 8103,
    /// Guesses are spaced out: wait for `Retry-After`.
    PairingBackOff = 8104,
    /// A pairing session is already active, or it was cancelled.
    PairingConflict = 8105,
    /// A malformed pairing message (not hex, not 6 digits, a sealed offer that does not open).
    PairingInvalid = 8106,
    Internal = 9001,
    RateLimited = 9002,
    InvalidRequest = 9003,
    RouteNotFound = 9004,
    MethodNotAllowed = 9005,
    PayloadTooLarge = 9006,
    UnsupportedMediaType = 9007,
    ShuttingDown = 9008,
    /// The caller authenticated, but its class may not use this route (ARCHITECTURE.md's
    /// access table) or touch this object (another peer's task or registry entry).
    Forbidden = 9009,
    /// A request method no route of this server implements (`QUERY`), on a path that does
    /// not exist either (on one that does, the answer is 405 with `Allow`).
    NotImplemented = 9010,
    /// Plain HTTP from another machine while TLS is on and `tls.allowInsecurePeers` is false.
    TlsRequired = 9020,
}

impl ErrorCode {
    /// The HTTP status of each code: the one table that decides it.
    pub(crate) fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            AuthMissingKey => StatusCode::Unauthorized,
            AuthInvalidKey | Forbidden | TlsRequired => StatusCode::Forbidden,
            PairingNoSession => StatusCode::NotFound,
            PairingExpired => StatusCode::Gone,
            PairingRefused => StatusCode::Forbidden,
            PairingBackOff => StatusCode::TooManyRequests,
            PairingConflict => StatusCode::Conflict,
            PairingInvalid => StatusCode::BadRequest,
            PeerNotFound | ExecJobNotFound | ContextKeyNotFound | MessageNotFound | LockNotHeld | RouteNotFound
            | TerminalNotFound | ApprovalNotFound => StatusCode::NotFound,
            PeerUnreachable => StatusCode::BadGateway,
            // 1.0.21 answered these with 400 too; its clients only look at the code and message.
            // A request the schema allows is refused with a 4xx that says why it is not the
            // request's form: a policy says no (403), what it names is not there (404).
            ExecCommandDenied | TransferPathDenied => StatusCode::Forbidden,
            ExecFailed | TransferFileNotFound => StatusCode::NotFound,
            TransferChecksumMismatch | TransferFailed | ContextValueTooLarge | ContextMaxEntries | InvalidRequest => {
                StatusCode::BadRequest
            }
            TransferTooLarge | PayloadTooLarge => StatusCode::PayloadTooLarge,
            ContextRevisionConflict
            | TransferBadDestination
            | TransferResumeConflict
            | LockHeld
            | FenceRefused
            | TerminalExited
            | TerminalConflict
            | ApprovalDecided => StatusCode::Conflict,
            ExecIdempotencyMismatch => StatusCode::UnprocessableEntity,
            ExecJobExpired => StatusCode::Gone,
            TransferRangeNotSatisfiable => StatusCode::RequestedRangeNotSatisfiable,
            MethodNotAllowed => StatusCode::MethodNotAllowed,
            NotImplemented => StatusCode::NotImplemented,
            UnsupportedMediaType => StatusCode::UnsupportedMediaType,
            // 1.0.21 answered 400 at once; loopsy queues first and refuses only past the queue.
            RateLimited | ExecMaxConcurrent | TerminalLimit => StatusCode::TooManyRequests,
            ShuttingDown | ContextStorageFailed | OutboxFull | LockLimit | LockStorageFailed => {
                StatusCode::ServiceUnavailable
            }
            Internal => StatusCode::InternalServerError,
        }
    }
}

/// Which JSON shape the error body has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `{"error":{"code":N,"message":"..."}}`
    Coded(ErrorCode),
    /// `{"error":"..."}` with the given status (1.0.21's AI-task routes and its pairing
    /// initiation).
    Plain(StatusCode),
    /// `{"error":{"code":N,"message":"..."}}` with another daemon's status and code, relayed
    /// (the dashboard's proxy, a joining daemon reporting the host's answer).
    Relayed(StatusCode, u16),
}

/// An error answered to an HTTP client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ApiError {
    family: Family,
    message: String,
    /// Seconds, sent as `Retry-After`.
    retry_after: Option<u64>,
    /// Machine-readable facts beside the message (`error.details`, which 1.0.21 defined).
    details: Option<serde_json::Value>,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { family: Family::Coded(code), message: message.into(), retry_after: None, details: None }
    }

    /// An error in the `{"error":"..."}` family, for routes where 1.0.21 used it.
    pub(crate) fn plain(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { family: Family::Plain(status), message: message.into(), retry_after: None, details: None }
    }

    /// Another daemon's error, relayed with its status and code (`None`: it sent no code;
    /// 2003 is used).
    pub(crate) fn relayed(status: StatusCode, code: Option<u64>, message: impl Into<String>) -> ApiError {
        let code = code.and_then(|c| u16::try_from(c).ok()).unwrap_or(ErrorCode::PeerUnreachable as u16);
        ApiError { family: Family::Relayed(status, code), message: message.into(), retry_after: None, details: None }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    pub(crate) fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    /// Adds `details` to a coded error's body.
    pub(crate) fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self.family {
            Family::Coded(code) => code.status(),
            Family::Plain(status) | Family::Relayed(status, _) => status,
        }
    }

    pub(crate) fn code(&self) -> Option<ErrorCode> {
        match self.family {
            Family::Coded(code) => Some(code),
            Family::Plain(_) | Family::Relayed(..) => None,
        }
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> serde_json::Value {
        match self.family {
            Family::Coded(code) => match &self.details {
                Some(details) => json!({"error": {"code": code as u16, "message": self.message, "details": details}}),
                None => json!({"error": {"code": code as u16, "message": self.message}}),
            },
            Family::Plain(_) => json!({"error": self.message}),
            Family::Relayed(_, code) => json!({"error": {"code": code, "message": self.message}}),
        }
    }

    /// This error as a complete response.
    pub(crate) fn into_response(self) -> tide::Response {
        let mut res = tide::Response::new(self.status());
        res.set_body(self.body());
        if let Some(seconds) = self.retry_after {
            res.insert_header("Retry-After", seconds.to_string());
        }
        res
    }
}

/// Maps whatever the endpoint produced to the final status and JSON body.
pub(crate) async fn render(mut res: tide::Response) -> tide::Result {
    if let Some(err) = res.take_error() {
        let api_error = match domain::recover(err) {
            Ok(api_error) => api_error,
            Err(other) => {
                log::error!("unexpected error in a handler: {other:?}");
                ApiError::internal("internal error; see the daemon log")
            }
        };
        let mut rendered = api_error.into_response();
        for (name, values) in res.iter() {
            if rendered.header(name).is_none() {
                rendered.insert_header(name.clone(), values);
            }
        }
        for ext_copy in [res.ext::<super::guard::Caller>().cloned()].into_iter().flatten() {
            rendered.insert_ext(ext_copy);
        }
        return Ok(rendered);
    }
    // Responses tide makes by itself (405, 404 from the router) have no body: give them one.
    let status = res.status();
    if status.is_client_error() && res.len() == Some(0) {
        let code = match status {
            StatusCode::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            StatusCode::NotFound => ErrorCode::RouteNotFound,
            _ => ErrorCode::InvalidRequest,
        };
        res.set_body(ApiError::new(code, status.canonical_reason().to_lowercase()).body());
    }
    Ok(res)
}
