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
use crate::daemon::state::State;
use crate::transfer::chunks::CHUNK;
use crate::transfer::dirs::{self, ListEntry};
use crate::transfer::{pull, push, TransferError};

/// Room for the multipart framing and text fields on top of `maxFileSize` in a push body.
const FORM_ALLOWANCE: u64 = 1024 * 1024;

pub fn mount(m: &mut Mount<'_>) {
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
    let ctx = req.state().transfer.clone();
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
    let ctx = req.state().transfer.clone();
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
    Ok(res)
}

async fn post_list(mut req: Request<State>) -> tide::Result {
    let request: PathBody = body::json(&mut req).await?;
    let path = request.path.filter(|p| !p.is_empty()).ok_or_else(|| ApiError::bad_request("Missing path"))?;
    let listing = dirs::list(&req.state().transfer.policy, &path).await?;
    json_response(&ListReply { files: listing.files, truncated: listing.truncated })
}

async fn post_mkdir(mut req: Request<State>) -> tide::Result {
    let request: PathBody = body::json(&mut req).await?;
    let path = request.path.filter(|p| !p.is_empty()).ok_or_else(|| ApiError::bad_request("Missing path"))?;
    let mode = request.mode.as_deref().map(push::parse_mode).transpose()?;
    let created = dirs::make_dir(&req.state().transfer.policy, &path, mode).await?;
    json_response(&json!({"path": path, "created": created}))
}

async fn get_upload(req: Request<State>) -> tide::Result {
    let (upload_id, dest_path) = upload_params(&req)?;
    let status = push::status(&req.state().transfer, &dest_path, &upload_id).await?;
    // Whether a push now would be rate-limited: a client should not start sending gigabytes
    // only to be refused (it cannot read the refusal before it has sent the whole body).
    let retry_after = req.ext::<Caller>().filter(|caller| !caller.is_owner()).and_then(|caller| {
        req.state().limiter.peek(&caller.label(), Category::Transfer, Instant::now()).err().map(|r| r.retry_after_secs)
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
    let deleted = push::cancel(&req.state().transfer, &dest_path, &upload_id).await?;
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
pub fn content_disposition(name: &str) -> String {
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let encoded = crate::percent::encode_keeping(name, b"!#$&+-.^_`|~");
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

pub fn openapi() -> serde_json::Value {
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let ok_json = |name: &str, description: &str| json!({"description": description, "content": {"application/json": {"schema": schema(name)}}});
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let json_body = |name: &str| json!({"required": true, "content": {"application/json": {"schema": schema(name)}}});
    let dest_query = json!([
        {"name": "uploadId", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$"}},
        {"name": "destPath", "in": "query", "required": true, "schema": {"type": "string", "minLength": 1}, "description": "the destination the upload is for"}
    ]);
    json!({
        "paths": {
            "/api/v1/transfer/push": {"post": {
                "tags": ["transfer"], "summary": "Upload a file to this node",
                "description": "multipart/form-data with a `destPath` text field and one file part (any field name; the first part with a filename is the file, later ones are ignored). The fields may come in either order: when the file comes first it is received into a private staging directory until `destPath` is known. The file is written to a hidden temporary file beside the destination (`.<name>.loopsy-tmp-<random>`), counted against `transfer.maxFileSize`, fsync'd, checked against every declared SHA-256, then renamed into place and the directory fsync'd; the 200 comes only after that. On any failure nothing appears at the destination. Parent directories are not created (use /api/v1/transfer/mkdir).\n\nDeclaring a checksum: a `sha256` text field (it may come after the file part, so a client can hash while sending) and/or the header `X-Loopsy-Sha256`. A mismatch answers code 4004.\n\nResuming: send `uploadId` (8-64 of A-Z a-z 0-9 - _, chosen by the client, stable for one source file) and `offset` before the file part, and only the bytes from `offset` on in the file part. The data goes to `.<name>.loopsy-part-<uploadId>` beside the destination; if the request is cut, what arrived is kept, and GET /api/v1/transfer/uploads/{uploadId} reports it. A push whose body ends properly completes the upload: the SHA-256 is computed over the whole file (earlier attempts included) and verified before the rename. Partial files unused for 24 hours are deleted.",
                "parameters": [{"name": "X-Loopsy-Sha256", "in": "header", "required": false, "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}, "description": "SHA-256 the received file must have"}],
                "requestBody": {"required": true, "content": {"multipart/form-data": {"schema": schema("PushForm"), "encoding": {"file": {"contentType": "application/octet-stream"}}}}},
                "responses": {
                    "200": ok_json("PushResult", "the file is complete, verified and durable at destPath"),
                    "400": error("9003 missing destPath, a malformed field, or a field in the wrong place (uploadId and offset must precede the file part); 4004 checksum mismatch; 4005 no file part or the body ended early"),
                    "403": error("4001 path not allowed (transfer.allowedPaths / deniedPaths)"),
                    "409": error("4006 the destination is a directory or its parent is missing; 4007 offset beyond what arrived, uploadId or offset after the file part, or the upload is being written by another request"),
                    "413": error("4003 the file is larger than transfer.maxFileSize (checked on Content-Length up front and while streaming); nothing is written"),
                    "415": error("9007 the body is not multipart/form-data")}}},
            "/api/v1/transfer/pull": {"post": {
                "tags": ["transfer"], "summary": "Download a file from this node",
                "description": "Streams the file with Content-Length. Headers: `Content-Disposition` (the last path component, RFC 6266 escaped), `X-Loopsy-File-Size` (the whole file's size), `Accept-Ranges: bytes`, and with `\"checksum\": true` `X-Loopsy-Sha256` (the whole file's SHA-256, computed before streaming). A single HTTP `Range: bytes=` range answers 206 with `Content-Range` (that is how an interrupted pull resumes); several ranges or a malformed header serve the whole file; a range starting past the end answers 416 with `Content-Range: bytes */<size>`. Symlinks are resolved first; a link leading outside transfer.allowedPaths is refused (4001).",
                "parameters": [{"name": "Range", "in": "header", "required": false, "schema": {"type": "string", "examples": ["bytes=1048576-"]}}],
                "requestBody": json_body("PullRequest"),
                "responses": {
                    "200": {"description": "the file's bytes", "headers": {"X-Loopsy-File-Size": {"schema": {"type": "integer"}}, "X-Loopsy-Sha256": {"schema": {"type": "string"}}, "Content-Disposition": {"schema": {"type": "string"}}}, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                    "206": {"description": "the requested range", "headers": {"Content-Range": {"schema": {"type": "string"}}, "X-Loopsy-File-Size": {"schema": {"type": "integer"}}}, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                    "400": error("9003 missing sourcePath"),
                    "403": error("4001 path not allowed"),
                    "404": error("4002 not found or not a regular file"),
                    "413": error("4003 the file is larger than transfer.maxFileSize"),
                    "416": error("4008 the range starts past the end of the file")}}},
            "/api/v1/transfer/list": {"post": {
                "tags": ["transfer"], "summary": "List a directory",
                "description": "One entry per directory entry (hidden ones included, no . and ..), in readdir order. `type` is that of the entry itself (a symlink to a directory is `symlink`); `size`, `modified` and `mode` follow symlinks; entries whose stat fails are left out. At most 100000 entries; then `truncated` is true.",
                "requestBody": json_body("PathRequest"),
                "responses": {
                    "200": ok_json("Listing", "the entries"),
                    "400": error("9003 missing path"),
                    "403": error("4001 path not allowed"),
                    "404": error("4002 not found or not a directory")}}},
            "/api/v1/transfer/mkdir": {"post": {
                "tags": ["transfer"], "summary": "Create a directory (and missing parents); optionally set its mode",
                "description": "Used by recursive sends to recreate a tree, empty directories included. With `mode` the permission bits are set, also on an existing directory (so a sender can restore read-only directory modes after filling them).",
                "requestBody": json_body("MkdirRequest"),
                "responses": {
                    "200": ok_json("MkdirResult", "the directory exists"),
                    "400": error("9003 missing path or bad mode"),
                    "403": error("4001 path not allowed"),
                    "409": error("4006 the path exists and is not a directory, or a parent is not a directory")}}},
            "/api/v1/transfer/uploads/{uploadId}": {
                "get": {
                    "tags": ["transfer"], "summary": "How many bytes of a resumable upload arrived",
                    "description": "Also checks destPath as a push would (policy, parent directory), and reports maxFileSize, so a client can refuse early instead of sending a body that will be rejected. Not rate-limited.",
                    "parameters": dest_query.clone(),
                    "responses": {
                        "200": ok_json("UploadStatus", "the upload's state; offset 0 when nothing arrived"),
                        "400": error("9003 bad uploadId or missing destPath"),
                        "403": error("4001 path not allowed"),
                        "409": error("4006 the destination cannot take a file")}},
                "delete": {
                    "tags": ["transfer"], "summary": "Abandon a resumable upload and delete what arrived",
                    "parameters": dest_query,
                    "responses": {
                        "200": ok_json("UploadDeleted", "nothing of the upload remains"),
                        "409": error("4007 a request is writing the upload right now")}}}
        },
        "schemas": {
            "PushForm": {"type": "object", "required": ["destPath", "file"],
                "propertyNames": {"pattern": "^[A-Za-z0-9_.-]+$"},
                "description": "Field order: `uploadId`, `offset` and `mode` must come before the file part (they decide where its bytes go); `destPath` may come before or after it; `sha256` anywhere. The properties are listed in an order that works.",
                "properties": {
                "destPath": {"type": "string", "minLength": 1, "description": "absolute destination path on this node"},
                "uploadId": {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$", "description": "makes the upload resumable; must precede the file part"},
                "offset": {"type": "integer", "minimum": 0, "description": "bytes of this upload already on this node (from GET /transfer/uploads/{uploadId}); must precede the file part; 0 starts over"},
                "mode": {"type": "string", "pattern": "^[0-7]{1,4}$", "description": "octal permission bits for the file, e.g. 644 (set-id and sticky bits are dropped)"},
                "file": {"type": "string", "format": "binary", "description": "the file (any field name, with a filename); for a resumed upload only the bytes from offset on"},
                "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$", "description": "SHA-256 of the whole file; may follow the file part"}}},
            "PushResult": {"type": "object", "required": ["path", "size", "checksum", "duration"], "properties": {
                "path": {"type": "string", "description": "destPath as sent"}, "size": {"type": "integer"},
                "checksum": {"type": "string", "description": "lowercase hex SHA-256 of the whole file"},
                "duration": {"type": "integer", "description": "milliseconds"}}},
            "PullRequest": {"type": "object", "required": ["sourcePath"], "properties": {
                "sourcePath": {"type": "string", "minLength": 1},
                "checksum": {"type": "boolean", "default": false, "description": "send the file's SHA-256 in X-Loopsy-Sha256"}}},
            "PathRequest": {"type": "object", "required": ["path"], "properties": {"path": {"type": "string", "minLength": 1}}},
            "MkdirRequest": {"type": "object", "required": ["path"], "properties": {"path": {"type": "string", "minLength": 1}, "mode": {"type": "string", "pattern": "^[0-7]{1,4}$"}}},
            "MkdirResult": {"type": "object", "required": ["path", "created"], "properties": {"path": {"type": "string"}, "created": {"type": "boolean"}}},
            "Listing": {"type": "object", "required": ["files"], "properties": {
                "files": {"type": "array", "items": {"type": "object", "required": ["name", "path", "type", "size", "modified"], "properties": {
                    "name": {"type": "string"}, "path": {"type": "string", "description": "the requested path joined with name"},
                    "type": {"enum": ["file", "directory", "symlink"]}, "size": {"type": "integer"},
                    "modified": {"type": "number", "description": "fractional milliseconds since the epoch"},
                    "mode": {"type": "integer", "description": "permission bits (decimal), e.g. 420 for 0644"}}}},
                "truncated": {"type": "boolean", "description": "present and true when the listing stopped at 100000 entries"}}},
            "UploadStatus": {"type": "object", "required": ["uploadId", "destPath", "offset", "active", "maxFileSize"], "properties": {
                "uploadId": {"type": "string"}, "destPath": {"type": "string"},
                "offset": {"type": "integer", "description": "bytes on this node; resume the push at this offset"},
                "active": {"type": "boolean", "description": "a request is writing this upload now (wait, or expect 4007)"},
                "maxFileSize": {"type": "integer"},
                "retryAfter": {"type": "integer", "description": "present when a push now would be refused by the transfer rate limit: seconds to wait first"}}},
            "UploadDeleted": {"type": "object", "properties": {"uploadId": {"type": "string"}, "destPath": {"type": "string"}, "deleted": {"type": "boolean"}}}
        }
    })
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
