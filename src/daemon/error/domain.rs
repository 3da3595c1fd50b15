//! Every domain error of the modules below the daemon, as the [`ApiError`] it is answered with:
//! one `From` impl per error type, so handlers write `?` and no route picks a code or a status.
//!
//! Each arm names an [`ErrorCode`] (whose status `ErrorCode::status` decides) or, for the
//! families of 1.0.21 that have no codes, the plain status. [`recover`] lets a handler that
//! returns `tide::Result` use `?` on a domain error directly: `render` turns it back into the
//! same `ApiError` instead of a 500.

use serde_json::json;
use tide::http::StatusCode;

use super::{ApiError, ErrorCode};
use crate::approvals::DecideError;
use crate::dashboard::targets::Unreachable;
use crate::exec::ExecError;
use crate::locks::api::LockInfo;
use crate::locks::{FenceError, LockError};
use crate::messages::MessageError;
use crate::pairing::session::PairError;
use crate::peer::ClientError;
use crate::store::StoreError;
use crate::tasks::DispatchError;
use crate::terminal::{SessionError, TerminalError};
use crate::transfer::TransferError;

/// A domain error that a handler passed to tide with `?`, as its `ApiError`; anything else back.
pub(super) fn recover(error: tide::Error) -> Result<ApiError, tide::Error> {
    fn take<E>(error: tide::Error) -> Result<ApiError, tide::Error>
    where
        E: Into<ApiError> + std::fmt::Debug + std::fmt::Display + Send + Sync + 'static,
    {
        error.downcast::<E>().map(Into::into)
    }
    let error = match error.downcast::<ApiError>() {
        Ok(api_error) => return Ok(api_error),
        Err(error) => error,
    };
    take::<StoreError>(error)
        .or_else(take::<LockError>)
        .or_else(take::<FenceError>)
        .or_else(take::<ExecError>)
        .or_else(take::<MessageError>)
        .or_else(take::<TerminalError>)
        .or_else(take::<SessionError>)
        .or_else(take::<TransferError>)
        .or_else(take::<PairError>)
        .or_else(take::<ClientError>)
        .or_else(take::<Unreachable>)
        .or_else(take::<DispatchError>)
        .or_else(take::<DecideError>)
}

/// The context store.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        let message = error.to_string();
        match error {
            StoreError::NotFound { .. } => ApiError::new(ErrorCode::ContextKeyNotFound, message),
            StoreError::BadKey { .. } => ApiError::bad_request(message),
            StoreError::ValueTooLarge { .. } => ApiError::new(ErrorCode::ContextValueTooLarge, message),
            StoreError::TooManyEntries { .. } => ApiError::new(ErrorCode::ContextMaxEntries, message),
            StoreError::RevisionConflict { key, current, expected } => {
                ApiError::new(ErrorCode::ContextRevisionConflict, message)
                    .with_details(json!({"key": key, "currentRevision": current, "ifRevision": expected}))
            }
            StoreError::Storage(_) => ApiError::new(ErrorCode::ContextStorageFailed, message),
        }
    }
}

/// The lock table.
impl From<LockError> for ApiError {
    fn from(error: LockError) -> ApiError {
        let message = error.to_string();
        match error {
            LockError::Invalid(_) => ApiError::bad_request(message),
            LockError::Held(grant) | LockError::NotHolder { grant, .. } => {
                ApiError::new(ErrorCode::LockHeld, message).with_details(json!(LockInfo::from(&grant)))
            }
            LockError::NotHeld { .. } => ApiError::new(ErrorCode::LockNotHeld, message),
            LockError::TooMany => ApiError::new(ErrorCode::LockLimit, message),
            LockError::Storage(_) => ApiError::new(ErrorCode::LockStorageFailed, message),
        }
    }
}

/// A refused fenced write: 409 with the live grant, if any, in `error.details.current`.
impl From<FenceError> for ApiError {
    fn from(error: FenceError) -> ApiError {
        let message = error.to_string();
        let details = match &error {
            FenceError::NotHeld { name, token } => json!({"lock": name, "token": token, "current": null}),
            FenceError::Superseded { token, current } => {
                json!({"lock": current.name, "token": token, "current": LockInfo::from(current)})
            }
        };
        ApiError::new(ErrorCode::FenceRefused, message).with_details(details)
    }
}

/// Command execution.
impl From<ExecError> for ApiError {
    fn from(error: ExecError) -> ApiError {
        let message = error.to_string();
        match error {
            ExecError::Invalid(message) => ApiError::bad_request(message),
            ExecError::Refused(refusal) => ApiError::new(ErrorCode::ExecCommandDenied, refusal.to_string()),
            // 1.0.21's code with 429: a client may come back after `Retry-After`.
            ExecError::Busy { .. } | ExecError::QueueTimeout { .. } => {
                ApiError::new(ErrorCode::ExecMaxConcurrent, message).with_retry_after(1)
            }
            ExecError::Spawn(spawn) => ApiError::new(ErrorCode::ExecFailed, format!("Execution failed: {spawn}")),
            ExecError::KeyReused { job_id, .. } => {
                ApiError::new(ErrorCode::ExecIdempotencyMismatch, message).with_details(json!({"jobId": job_id}))
            }
            ExecError::Expired { job_id, exit_code, .. } => ApiError::new(ErrorCode::ExecJobExpired, message)
                .with_details(json!({"jobId": job_id, "exitCode": exit_code})),
        }
    }
}

/// Agent messaging.
impl From<MessageError> for ApiError {
    fn from(error: MessageError) -> ApiError {
        let message = error.to_string();
        match error {
            MessageError::Invalid(_) => ApiError::bad_request(message),
            // Well-formed, but this node holds no key for that peer: refused, not malformed.
            MessageError::NoRoute(_) => ApiError::new(ErrorCode::Forbidden, message),
            MessageError::UnknownPeer(_) => ApiError::new(ErrorCode::PeerNotFound, message),
            MessageError::NotFound(_) => ApiError::new(ErrorCode::MessageNotFound, message),
            MessageError::Full(_) => ApiError::new(ErrorCode::OutboxFull, message).with_retry_after(60),
            MessageError::Store(e) => e.into(),
            MessageError::Storage(_) => ApiError::new(ErrorCode::ContextStorageFailed, message),
        }
    }
}

/// Terminal sessions.
impl From<TerminalError> for ApiError {
    fn from(error: TerminalError) -> ApiError {
        let message = error.to_string();
        match error {
            TerminalError::Invalid(_) => ApiError::bad_request(message),
            TerminalError::NotFound(_) => ApiError::new(ErrorCode::TerminalNotFound, message),
            TerminalError::Ambiguous(..) | TerminalError::NameTaken(_) => {
                ApiError::new(ErrorCode::TerminalConflict, message)
            }
            TerminalError::TooMany(_) => ApiError::new(ErrorCode::TerminalLimit, message),
            TerminalError::Denied(_) => ApiError::new(ErrorCode::ExecCommandDenied, message),
            TerminalError::Spawn { .. } => ApiError::new(ErrorCode::ExecFailed, message),
            TerminalError::Session(error) => error.into(),
        }
    }
}

/// One terminal session (input, clients).
impl From<SessionError> for ApiError {
    fn from(error: SessionError) -> ApiError {
        let message = error.to_string();
        match error {
            SessionError::Exited(_) | SessionError::InputBlocked(_) => {
                ApiError::new(ErrorCode::TerminalExited, message)
            }
            SessionError::TooManyClients(..) => ApiError::new(ErrorCode::TerminalLimit, message),
            SessionError::ReadOnly => ApiError::new(ErrorCode::Forbidden, message),
            SessionError::Io(..) => ApiError::internal(message),
        }
    }
}

/// File transfer.
impl From<TransferError> for ApiError {
    fn from(error: TransferError) -> ApiError {
        let code = match &error {
            TransferError::PathDenied { .. } => ErrorCode::TransferPathDenied,
            TransferError::NotFound(_) => ErrorCode::TransferFileNotFound,
            TransferError::TooLarge(_) => ErrorCode::TransferTooLarge,
            TransferError::ChecksumMismatch { .. } => ErrorCode::TransferChecksumMismatch,
            TransferError::NoFile | TransferError::Failed(_) => ErrorCode::TransferFailed,
            TransferError::BadDestination(_) => ErrorCode::TransferBadDestination,
            TransferError::ResumeConflict(_) => ErrorCode::TransferResumeConflict,
            TransferError::RangeNotSatisfiable { .. } => ErrorCode::TransferRangeNotSatisfiable,
            TransferError::Invalid(_) => ErrorCode::InvalidRequest,
        };
        ApiError::new(code, error.to_string())
    }
}

/// The pairing protocol (its routes are new in loopsy, so they use the one
/// `{"error":{"code","message"}}` shape).
impl From<PairError> for ApiError {
    fn from(error: PairError) -> ApiError {
        let code = match error {
            PairError::NoSession => ErrorCode::PairingNoSession,
            PairError::Expired => ErrorCode::PairingExpired,
            PairError::TooManyAttempts | PairError::WrongCode(_) => ErrorCode::PairingRefused,
            PairError::BackOff(wait_ms) => {
                return ApiError::new(ErrorCode::PairingBackOff, error.to_string())
                    .with_retry_after(wait_ms.div_ceil(1000))
            }
            // Well-formed (the hex was checked first) but not what this session can take: a
            // share that is no curve point, a step out of order.
            PairError::Busy | PairError::Cancelled | PairError::Invalid(_) => ErrorCode::PairingConflict,
            // A sealed message that does not open or verify: the other side does not hold the key.
            PairError::BadOffer | PairError::Tampered => ErrorCode::PairingRefused,
        };
        ApiError::new(code, error.to_string())
    }
}

/// A failed call to another daemon: its own error relayed with its status and code, or 502
/// (2003) when it did not answer.
impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> ApiError {
        match error {
            ClientError::Remote { status, code, message } => {
                ApiError::relayed(StatusCode::try_from(status).unwrap_or(StatusCode::BadGateway), code, message)
            }
            other => ApiError::new(ErrorCode::PeerUnreachable, other.to_string()),
        }
    }
}

/// A dashboard target this node cannot reach.
impl From<Unreachable> for ApiError {
    fn from(error: Unreachable) -> ApiError {
        let code = match error {
            Unreachable::UnknownSession(_) | Unreachable::UnknownPeer(_) => ErrorCode::PeerNotFound,
            Unreachable::Stopped(_) | Unreachable::NoConfig(_) => ErrorCode::PeerUnreachable,
            Unreachable::NoCredential(_) | Unreachable::Unpinned(_) => ErrorCode::AuthInvalidKey,
        };
        ApiError::new(code, error.to_string())
    }
}

/// AI-task dispatch, in 1.0.21's plain `{"error":"..."}` family of those routes (no codes).
impl From<DispatchError> for ApiError {
    fn from(error: DispatchError) -> ApiError {
        let status = match &error {
            DispatchError::Invalid { .. } => StatusCode::BadRequest,
            // What the request names is not on this node: the working directory, or the agent.
            DispatchError::NoSuchDirectory(_) => StatusCode::NotFound,
            DispatchError::NotInstalled(_) | DispatchError::NoAgent => StatusCode::ServiceUnavailable,
            DispatchError::Forbidden(_) => StatusCode::Forbidden,
            DispatchError::TooMany(_) => StatusCode::TooManyRequests,
            DispatchError::Spawn { .. } => StatusCode::ServiceUnavailable,
        };
        ApiError::plain(status, error.to_string())
    }
}

/// An owner's decision on a permission request of a target, as the approval inbox sent it.
impl From<DecideError> for ApiError {
    fn from(error: DecideError) -> ApiError {
        match error {
            DecideError::UnknownTarget(m) => ApiError::new(ErrorCode::PeerNotFound, m),
            DecideError::Unreachable(m) | DecideError::Refused(m) => ApiError::new(ErrorCode::PeerUnreachable, m),
            DecideError::NoSuchRequest(m) => ApiError::new(ErrorCode::ApprovalNotFound, m),
            DecideError::Decided { message, item } => {
                let error = ApiError::new(ErrorCode::ApprovalDecided, message);
                match item {
                    Some(item) => error.with_details(json!({"approval": item})),
                    None => error,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_error_passed_to_tide_comes_back_as_its_api_error() {
        let passed = tide::Error::from(StoreError::NotFound { key: "k".into() });
        let recovered = recover(passed).expect("a store error is recovered");
        assert_eq!(recovered.code(), Some(ErrorCode::ContextKeyNotFound));
        assert_eq!(recovered.message(), StoreError::NotFound { key: "k".into() }.to_string());

        let recovered = recover(tide::Error::from(LockError::TooMany)).expect("a lock error is recovered");
        assert_eq!(recovered.status(), StatusCode::ServiceUnavailable);

        let recovered = recover(tide::Error::from(TransferError::NoFile)).expect("a transfer error is recovered");
        assert_eq!(recovered.code(), Some(ErrorCode::TransferFailed));
    }

    #[test]
    fn anything_else_stays_an_unexpected_error() {
        let other = tide::Error::from(std::io::Error::other("disk on fire"));
        assert!(recover(other).is_err());
    }
}
