//! `/api/rooms`: group conversations (issue 16). Thin, like `api.rs`:
//! validate, call the chat service, answer.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use roundtable_shared::api::{
    AddMember, ChatMessage, CreateRoom, MarkRead, ReadState, RoomSummary, SendMessage,
};

use super::api::Page;
use super::error::WebError;
use super::NodeApi;

/// `GET /api/rooms`: every room, the most recently active first.
pub async fn list(State(n): State<NodeApi>) -> Result<Json<Vec<RoomSummary>>, WebError> {
    Ok(Json(n.chat.rooms().await?))
}

/// `POST /api/rooms`: a new room; 201 with its summary.
pub async fn create(
    State(n): State<NodeApi>,
    body: Result<Json<CreateRoom>, JsonRejection>,
) -> Result<impl IntoResponse, WebError> {
    let Json(body) = body?;
    let room = n.chat.create_room(&body.name, &body.members).await?;
    Ok((StatusCode::CREATED, Json(room)))
}

/// `GET /api/rooms/{id}`.
pub async fn get(
    State(n): State<NodeApi>,
    Path(id): Path<String>,
) -> Result<Json<RoomSummary>, WebError> {
    Ok(Json(n.chat.room(&id).await?))
}

/// `GET /api/rooms/{id}/messages?before=SEQ&limit=N`, oldest first.
pub async fn history(
    State(n): State<NodeApi>,
    Path(id): Path<String>,
    Query(p): Query<Page>,
) -> Result<Json<Vec<ChatMessage>>, WebError> {
    Ok(Json(n.chat.room_history(&id, p.before, p.limit()).await?))
}

/// `POST /api/rooms/{id}/messages`: 202 once on disk.
pub async fn post_message(
    State(n): State<NodeApi>,
    Path(id): Path<String>,
    body: Result<Json<SendMessage>, JsonRejection>,
) -> Result<impl IntoResponse, WebError> {
    let Json(body) = body?;
    let m = n.chat.room_post(&id, &body.text).await?;
    Ok((StatusCode::ACCEPTED, Json(m)))
}

/// `POST /api/rooms/{id}/members`: add someone.
pub async fn add_member(
    State(n): State<NodeApi>,
    Path(id): Path<String>,
    body: Result<Json<AddMember>, JsonRejection>,
) -> Result<Json<RoomSummary>, WebError> {
    let Json(body) = body?;
    Ok(Json(n.chat.add_member(&id, &body.name).await?))
}

/// `POST /api/rooms/{id}/leave`.
pub async fn leave(
    State(n): State<NodeApi>,
    Path(id): Path<String>,
) -> Result<Json<RoomSummary>, WebError> {
    Ok(Json(n.chat.leave_room(&id).await?))
}

/// `PUT /api/rooms/{id}/read`.
pub async fn mark_read(
    State(n): State<NodeApi>,
    Path(id): Path<String>,
    body: Result<Json<MarkRead>, JsonRejection>,
) -> Result<Json<ReadState>, WebError> {
    let Json(body) = body?;
    Ok(Json(n.chat.mark_room_read(&id, body.seq).await?))
}
