//! The HTTP endpoint the DLR server POSTs notifications to
//! (protocols.md §2).
//!
//! - Any path (the server posts to the registered URL as is; the reference
//!   client ignores the path). `POST` only: other methods get 405 with
//!   `Allow: POST`.
//! - The `Content-Type` is not checked: the DLR server sends
//!   `application/json`, others may send none; the body must parse as JSON
//!   either way.
//! - Bodies over [`BODY_LIMIT`] get 413.
//! - Malformed JSON, missing or wrong-typed fields and unknown types get 400.
//! - Every error body is JSON: `{"error": "…"}`. Bad input never gets 500.
//! - A round more than the configured jump past the training's highest
//!   known round gets 400 (see [`Refused::RoundTooFar`]): answered at once
//!   from memory, nothing queued.
//! - A valid notification gets the reference status (200 or 202, empty
//!   body) as soon as it is queued; the work happens afterwards. If the
//!   queue stays full for the configured timeout the answer is 503 with
//!   `Retry-After: 1`: the DLR server only retries on connection errors and
//!   takes a non-2xx as the client leaving the training, so the queue is
//!   sized for this never to happen with a real server.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use roundtable_shared::notify;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Refused, Trainings};
use crate::web::server::Limits;

/// Largest notification body accepted, in bytes. Real ones are under 200.
pub const BODY_LIMIT: usize = 64 * 1024;

/// An error answer: its status and `{"error": msg}` (also the metrics
/// URL's, `metrics.rs`).
pub(super) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

/// The endpoint on every path.
pub fn router(svc: Trainings) -> Router {
    Router::new().fallback(handle).with_state(svc)
}

async fn handle(State(svc): State<Trainings>, req: Request) -> Response {
    if req.method() != Method::POST {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed; notifications are POSTed", req.method()),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return too_large();
    }
    let bytes: Bytes = match axum::body::to_bytes(req.into_body(), BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => return too_large(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read notification body");
            return error(StatusCode::BAD_REQUEST, "cannot read the request body");
        }
    };
    let n = match notify::parse(&bytes) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "notification rejected");
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    tracing::debug!(
        training = %n.training_uuid,
        kind = %n.notification_type(),
        round = ?n.round_number(),
        "notification received"
    );
    let status = StatusCode::from_u16(n.reference_status()).unwrap_or(StatusCode::OK);
    match svc.submit(n).await {
        Ok(()) => (status, Body::empty()).into_response(),
        Err(e @ Refused::RoundTooFar { .. }) => {
            tracing::warn!("notification rejected: {e}");
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e @ Refused::Busy) => {
            tracing::warn!("notification refused: {e}");
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body exceeds {BODY_LIMIT} bytes"),
    )
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Serves the endpoint on `listener` with the default limits
/// ([`Limits::notify`]) until `shutdown`, then finishes the requests in
/// progress.
pub async fn serve(
    listener: TcpListener,
    svc: Trainings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, svc, Limits::notify(), shutdown).await
}

/// Serves the endpoint with `limits` (timeouts, connection caps, the
/// `--notify-allow` list): the same accept loop as the web bridge.
pub async fn serve_with(
    listener: TcpListener,
    svc: Trainings,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, ?limits, "notification endpoint listening");
    }
    crate::web::server::serve(listener, router(svc), limits, "notify", shutdown).await
}
