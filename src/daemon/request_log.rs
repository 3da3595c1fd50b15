//! Per-request bookkeeping: the request id and the audit line written after the response.

use std::time::Instant;

use tide::{Next, Request};

use super::audit::Entry;
use super::guard::Caller;
use super::state::State;

/// Outermost middleware: times the request and records it in the audit log.
pub(super) struct Record;

#[async_trait::async_trait]
impl tide::Middleware<State> for Record {
    async fn handle(&self, req: Request<State>, next: Next<'_, State>) -> tide::Result {
        record(req, next).await
    }
}

async fn record(req: Request<State>, next: Next<'_, State>) -> tide::Result {
    let started = Instant::now();
    let request_id = req
        .header("X-Request-Id")
        .map(|v| v.last().as_str().to_string())
        .filter(|id| is_sane_request_id(id))
        .unwrap_or_else(crate::random::request_uuid);
    let method = match req.ext::<super::methods::UnknownMethod>() {
        Some(unknown) => unknown.0.clone(),
        None => req.method().to_string(),
    };
    let path = req.url().path().to_string();
    let from_ip = req.peer_addr().unwrap_or_default().to_string();
    let audit = req.state().gate.audit.clone();
    let res = next.run(req).await;
    audit.record(Entry {
        request_id,
        method,
        path,
        from_ip,
        status_code: res.status() as u16,
        duration: started.elapsed().as_secs_f64() * 1000.0,
        timestamp: crate::clock::now_ms(),
        caller: res.ext::<Caller>().map(Caller::label),
    });
    Ok(res)
}

/// Client-chosen ids are logged only if they cannot forge or break a log line.
fn is_sane_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}
