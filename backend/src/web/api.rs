//! The JSON API under `/api`. Handlers are thin: they validate, call the
//! owning service (never a store), and answer; every failure is a
//! [`WebError`].

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use roundtable_shared::api::{
    ChatMessage, ChatSummary, Health, MarkRead, Me, PeerCheck, PeerInfo, ReadState, SearchHit,
    SendMessage, TrustKey,
};
use serde::Deserialize;

use super::error::WebError;
use super::NodeApi;

/// Largest page of history one request returns.
const MAX_PAGE: usize = 500;
const DEFAULT_PAGE: usize = 50;

pub async fn health() -> Json<Health> {
    Json(Health::current())
}

pub async fn me(State(n): State<NodeApi>) -> Json<Me> {
    Json(Me {
        name: n.name.clone(),
        chat: n.chat_addr.clone(),
        directory: n.directory_addr.clone(),
        directory_state: n.directory.current(),
        version: roundtable_shared::VERSION.into(),
        fingerprint: n.fingerprint.clone(),
        key_at_directory: n.directory.key_at_directory(),
        relay_only: n.relay_only,
        require_secure: n.require_secure,
        share_progress: n.progress.sharing(),
    })
}

pub async fn peers(State(n): State<NodeApi>) -> Json<Vec<PeerInfo>> {
    Json(n.peers.list())
}

#[derive(Debug, Deserialize)]
pub struct CheckParams {
    timeout_ms: Option<u64>,
}

/// Default deadline of a check, ms.
const CHECK_TIMEOUT_MS: u64 = 3000;

/// One request to every online peer at once; who answered in time.
pub async fn check_peers(
    State(n): State<NodeApi>,
    Query(p): Query<CheckParams>,
) -> Result<Json<PeerCheck>, WebError> {
    let ms = p.timeout_ms.unwrap_or(CHECK_TIMEOUT_MS);
    let max = crate::node::check::MAX_TIMEOUT.as_millis() as u64;
    if !(1..=max).contains(&ms) {
        return Err(WebError::BadRequest(format!(
            "timeout_ms must be 1 to {max}"
        )));
    }
    Ok(Json(n.chat.check_peers(Duration::from_millis(ms)).await))
}

/// The user accepts the key a peer now presents (the one they were shown).
pub async fn trust_peer(
    State(n): State<NodeApi>,
    Path(name): Path<String>,
    body: Result<Json<TrustKey>, JsonRejection>,
) -> Result<Json<PeerInfo>, WebError> {
    let Json(body) = body?;
    let trust = n.trust.clone();
    let peer = name.clone();
    tokio::task::spawn_blocking(move || trust.accept(&peer, Some(&body.fingerprint)))
        .await
        .map_err(WebError::internal)??;
    n.peers
        .get(&name)
        .map(Json)
        .ok_or_else(|| WebError::NotFound(format!("no peer {name}")))
}

pub async fn chats(State(n): State<NodeApi>) -> Result<Json<Vec<ChatSummary>>, WebError> {
    Ok(Json(n.chat.chats().await?))
}

#[derive(Debug, Deserialize)]
pub struct Page {
    pub before: Option<i64>,
    limit: Option<usize>,
}

impl Page {
    /// The page size asked for, within bounds.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
    }
}

pub async fn history(
    State(n): State<NodeApi>,
    Path(peer): Path<String>,
    Query(p): Query<Page>,
) -> Result<Json<Vec<ChatMessage>>, WebError> {
    Ok(Json(n.chat.history(&peer, p.before, p.limit()).await?))
}

pub async fn post_message(
    State(n): State<NodeApi>,
    Path(peer): Path<String>,
    body: Result<Json<SendMessage>, JsonRejection>,
) -> Result<impl IntoResponse, WebError> {
    let Json(body) = body?;
    let m = n.chat.send_from_user(&peer, &body.text, body.force).await?;
    Ok((StatusCode::ACCEPTED, Json(m)))
}

/// `PUT /api/chats/{peer}/read`.
pub async fn mark_read(
    State(n): State<NodeApi>,
    Path(peer): Path<String>,
    body: Result<Json<MarkRead>, JsonRejection>,
) -> Result<Json<ReadState>, WebError> {
    let Json(body) = body?;
    Ok(Json(n.chat.mark_read(&peer, body.seq).await?))
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    q: String,
    limit: Option<usize>,
}

/// `GET /api/search?q=…[&limit=N]`: messages of every conversation
/// containing every word typed (the last as a prefix), newest first.
pub async fn search(
    State(n): State<NodeApi>,
    Query(p): Query<SearchQuery>,
) -> Result<Json<Vec<SearchHit>>, WebError> {
    if p.q.len() > crate::store::chat::MAX_QUERY {
        return Err(WebError::BadRequest(format!(
            "a search is at most {} bytes",
            crate::store::chat::MAX_QUERY
        )));
    }
    let limit = p.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    Ok(Json(n.chat.search(&p.q, limit).await?))
}

pub async fn no_such_route() -> WebError {
    WebError::NotFound("no such API route".into())
}
