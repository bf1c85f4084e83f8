//! The web layer's one error type. Every refusal the bridge sends is JSON
//! `{"error": "…"}` with the right status; internal failures (store, SQL,
//! I/O) are logged here and answered with a generic "internal error", so
//! their text never reaches a client.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::node::chat::ChatError;
use crate::notify::NotifyError;
use crate::store::chat::RoomRefused;
use crate::store::pins::AcceptError;

/// Why a web request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The client sent something invalid; the text is for the client.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// A body over what the node accepts (an upload too large).
    #[error("{0}")]
    TooLarge(String),
    /// The request no longer matches the state (e.g. the key to accept
    /// changed since it was shown).
    #[error("{0}")]
    Conflict(String),
    #[error("missing or wrong token")]
    Unauthorized,
    /// A foreign page (a cross-origin request); the text says what.
    #[error("{0}")]
    Forbidden(String),
    /// A `Host` this server does not answer for (DNS rebinding).
    #[error("{0}")]
    MisdirectedHost(String),
    /// A request body axum could not take (its own status and text, which
    /// describe the client's input only).
    #[error("{0}")]
    Json(#[from] JsonRejection),
    /// Anything that is our fault. Logged; the client sees only
    /// "internal error".
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl WebError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        WebError::Internal(e.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::Unauthorized => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
            WebError::Json(r) => r.status(),
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ChatError> for WebError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::BadPeer(_)
            | ChatError::BadText
            | ChatError::ToSelf
            | ChatError::BadRoomName
            | ChatError::BadRoomText
            | ChatError::TooManyMembers => WebError::BadRequest(e.to_string()),
            ChatError::UnknownRecipient(_)
            | ChatError::UnknownMember(_)
            | ChatError::Room(RoomRefused::Unknown(_)) => WebError::NotFound(e.to_string()),
            ChatError::Room(RoomRefused::NotIn | RoomRefused::Exists) => {
                WebError::Conflict(e.to_string())
            }
            other => WebError::internal(other),
        }
    }
}

impl From<AcceptError> for WebError {
    fn from(e: AcceptError) -> Self {
        match e {
            AcceptError::NothingOffered(_) => WebError::NotFound(e.to_string()),
            AcceptError::Different { .. } => WebError::Conflict(e.to_string()),
            AcceptError::Store(s) => WebError::internal(s),
        }
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> Self {
        WebError::internal(e)
    }
}

impl From<NotifyError> for WebError {
    fn from(e: NotifyError) -> Self {
        WebError::internal(e)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        let text = match &self {
            WebError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "web request failed");
                "internal error".to_owned()
            }
            WebError::Json(r) => r.body_text(),
            other => other.to_string(),
        };
        (status, Json(serde_json::json!({ "error": text }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    async fn body_of(r: Response) -> (StatusCode, serde_json::Value) {
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn store_text_never_reaches_the_client() {
        let secret = "no such table: messages_v2 (SELECT * FROM secret)";
        let e = WebError::from(ChatError::Store(StoreError::Worker(secret.into())));
        let (status, body) = body_of(e.into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, serde_json::json!({ "error": "internal error" }));
    }

    #[tokio::test]
    async fn client_mistakes_are_explained() {
        let (status, body) = body_of(WebError::from(ChatError::BadText).into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("message text"));
        let (status, _) = body_of(WebError::MisdirectedHost("x".into()).into_response()).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    }
}
