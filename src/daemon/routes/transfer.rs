//! `/transfer/*`: push, pull and list (1.0.21's wire format), plus what this implementation adds:
//! `mkdir` for recursive sends and `uploads/:uploadId` for resuming interrupted pushes.
//!
//! Handlers parse the request, call `crate::transfer` and render; file contents stream through
//! and are never held in memory whole.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tide::http::Method;
use tide::{Body, Request, Response};

use super::system::json_response;
use super::Mount;
use crate::daemon::body;
use crate::daemon::error::{ApiError, ErrorCode};
use crate::daemon::guard::{Access, Caller};
use crate::daemon::rate_limit::Category;
use crate::daemon::sendfile::FileBody;
use crate::daemon::state::State;
use crate::transfer::chunks::CHUNK;
use crate::transfer::dirs::{self, ListEntry};
use crate::transfer::{pull, push, TransferError};

/// Room for the multipart framing and text fields on top of `maxFileSize` in a push body.
const FORM_ALLOWANCE: u64 = 1024 * 1024;

pub(super) fn mount(m: &mut Mount<'_>) {
    let limit = Some(Category::Transfer);
    m.route(Method::Post, "/api/v1/transfer/push", Access::DataPlane, limit, post_push)
        .route(Method::Post, "/api/v1/transfer/pull", Access::DataPlane, limit, post_pull)
        .route(Method::Post, "/api/v1/transfer/list", Access::DataPlane, limit, post_list)
        .route(Method::Post, "/api/v1/transfer/mkdir", Access::DataPlane, limit, post_mkdir)
        // Cheap and read-only; a client asks it before every resumable push.
        .route(Method::Get, "/api/v1/transfer/uploads/:uploadId", Access::DataPlane, None, get_upload)
        .route(Method::Delete, "/api/v1/transfer/uploads/:uploadId", Access::DataPlane, limit, delete_upload);
}

/// The response of a push (1.0.21's members).
#[derive(Debug, Serialize)]
struct PushReply {
    path: String,
    size: u64,
    checksum: String,
    duration: u64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PullBody {
    source_path: Option<String>,
    /// Ask for the file's SHA-256 in `X-Loopsy-Sha256`.
    #[serde(default)]
    checksum: bool,
}

#[derive(Debug, Deserialize, Default)]
struct PathBody {
    path: Option<String>,
    /// Octal permission bits for mkdir, e.g. "755".
    mode: Option<String>,
}

#[derive(Debug, Serialize)]
struct ListReply {
    files: Vec<ListEntry>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadReply {
    upload_id: String,
    dest_path: String,
    offset: u64,
    active: bool,
    max_file_size: u64,
    /// Seconds until a push would pass the transfer rate limit; absent when it would pass now.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

async fn post_push(mut req: Request<State>) -> tide::Result {
    let ctx = req.state().data.transfer.clone();
    let content_type = header(&req, "Content-Type").unwrap_or_default();
    let boundary = push::boundary(&content_type).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the request is not multipart: send Content-Type: multipart/form-data with a boundary",
        )
    })?;
    let limit = ctx.max_file_size + FORM_ALLOWANCE;
    if req.len().is_some_and(|len| len as u64 > limit) {
        return Err(ApiError::new(
            ErrorCode::TransferTooLarge,
            format!(
                "File exceeds max size: the body is larger than {} bytes (transfer.maxFileSize)",
                ctx.max_file_size
            ),
        )
        .into());
    }
    let declared = header(&req, "X-Loopsy-Sha256");
    let pushed = push::receive(&ctx, req.take_body(), boundary, limit, declared).await?;
    json_response(&PushReply {
        path: pushed.path,
        size: pushed.size,
        checksum: pushed.checksum,
        duration: pushed.duration_ms,
    })
}

async fn post_pull(mut req: Request<State>) -> tide::Result {
    let request: PullBody = body::json(&mut req).await?;
    let source =
        request.source_path.filter(|s| !s.is_empty()).ok_or_else(|| ApiError::bad_request("Missing sourcePath"))?;
    let ctx = req.state().data.transfer.clone();
    let range = header(&req, "Range");
    let plan = match pull::open(&ctx.policy, ctx.max_file_size, &source, range, request.checksum).await {
        Ok(plan) => plan,
        Err(TransferError::RangeNotSatisfiable { size }) => {
            let mut res = ApiError::from(TransferError::RangeNotSatisfiable { size }).into_response();
            res.insert_header("Content-Range", format!("bytes */{size}"));
            return Ok(res);
        }
        Err(e) => return Err(ApiError::from(e).into()),
    };
    let length = plan.length();
    // The listener sends the file with sendfile where it can (a plain connection); the reader
    // body of the same bytes is what it sends otherwise.
    let file_body = FileBody::SUPPORTED
        .then(|| plan.file.try_clone().ok())
        .flatten()
        .map(|file| FileBody::new(file, plan.range.map_or(0, |(first, _)| first), length));
    let reader = futures_lite::AsyncReadExt::take(blocking::Unblock::with_capacity(CHUNK, plan.file), length);
    let body = Body::from_reader(futures_lite::io::BufReader::with_capacity(CHUNK, reader), Some(length as usize));
    let mut res = Response::builder(if plan.range.is_some() { 206 } else { 200 })
        .body(body)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Disposition", content_disposition(&plan.name))
        .header("X-Loopsy-File-Size", plan.size.to_string())
        .header("Accept-Ranges", "bytes")
        .build();
    if let Some((first, last)) = plan.range {
        res.insert_header("Content-Range", format!("bytes {first}-{last}/{}", plan.size));
    }
    if let Some(sha256) = plan.sha256 {
        res.insert_header("X-Loopsy-Sha256", sha256);
    }
    if let Some(file_body) = file_body {
        res.insert_ext(file_body);
    }
    Ok(res)
}

async fn post_list(mut req: Request<State>) -> tide::Result {
    let request: PathBody = body::json(&mut req).await?;
    let path = request.path.filter(|p| !p.is_empty()).ok_or_else(|| ApiError::bad_request("Missing path"))?;
    let listing = dirs::list(&req.state().data.transfer.policy, &path).await?;
    json_response(&ListReply { files: listing.files, truncated: listing.truncated })
}

async fn post_mkdir(mut req: Request<State>) -> tide::Result {
    let request: PathBody = body::json(&mut req).await?;
    let path = request.path.filter(|p| !p.is_empty()).ok_or_else(|| ApiError::bad_request("Missing path"))?;
    let mode = request.mode.as_deref().map(push::parse_mode).transpose()?;
    let created = dirs::make_dir(&req.state().data.transfer.policy, &path, mode).await?;
    json_response(&json!({"path": path, "created": created}))
}

async fn get_upload(req: Request<State>) -> tide::Result {
    let (upload_id, dest_path) = upload_params(&req)?;
    let status = push::status(&req.state().data.transfer, &dest_path, &upload_id).await?;
    // Whether a push now would be rate-limited: a client should not start sending gigabytes
    // only to be refused (it cannot read the refusal before it has sent the whole body).
    let retry_after = req.ext::<Caller>().filter(|caller| !caller.is_owner()).and_then(|caller| {
        req.state()
            .gate
            .limiter
            .peek(&caller.label(), Category::Transfer, Instant::now())
            .err()
            .map(|r| r.retry_after_secs)
    });
    json_response(&UploadReply {
        upload_id,
        dest_path,
        offset: status.offset,
        active: status.active,
        max_file_size: status.max_file_size,
        retry_after,
    })
}

async fn delete_upload(req: Request<State>) -> tide::Result {
    let (upload_id, dest_path) = upload_params(&req)?;
    let deleted = push::cancel(&req.state().data.transfer, &dest_path, &upload_id).await?;
    json_response(&json!({"uploadId": upload_id, "destPath": dest_path, "deleted": deleted}))
}

fn upload_params(req: &Request<State>) -> Result<(String, String), ApiError> {
    let upload_id = body::param(req, "uploadId")?;
    let dest_path = req
        .url()
        .query_pairs()
        .find(|(name, _)| name == "destPath")
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing destPath query parameter"))?;
    Ok((upload_id, dest_path))
}

fn header(req: &Request<State>, name: &str) -> Option<String> {
    req.header(name).map(|values| values.last().as_str().to_string())
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>` (RFC 6266):
/// quotes, backslashes and control characters can never break out of the header.
pub(super) fn content_disposition(name: &str) -> String {
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let encoded = crate::percent::encode_keeping(name, b"!#$&+-.^_`|~");
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_break_out_of_content_disposition() {
        assert_eq!(content_disposition("a b.txt"), "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt");
        let evil = content_disposition("x\"; filename=evil\r\nSet-Cookie: a");
        assert!(!evil.contains('\r') && !evil.contains('\n'));
        assert!(evil.starts_with("attachment; filename=\"x_; filename=evil__Set-Cookie: a\""), "{evil}");
        assert!(content_disposition("é").ends_with("filename*=UTF-8''%C3%A9"));
    }
}
