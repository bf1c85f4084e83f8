//! Typed calls to the node's JSON API, and the state of a request.

use gloo_net::http::Request;
use roundtable_shared::api::{
    AddMember, ChatMessage, ChatSummary, CreateRoom, Health, MarkRead, Me, PeerCheck, PeerInfo,
    ReadState, RoomSummary, SearchHit, SendMessage, TransferInfo, TrustKey,
};
use roundtable_shared::progress::Participant;
use roundtable_shared::training::Training;
use serde::de::DeserializeOwned;

/// Path of the health report, relative to the page's origin.
pub const HEALTH_PATH: &str = "/api/health";

/// Messages per history page.
pub const PAGE: usize = 100;

/// The deadline "Check peers" asks for, ms (the request lasts up to it).
pub const CHECK_TIMEOUT_MS: u64 = 3000;

/// Why an API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request never got an HTTP answer (server down, network error).
    #[error("cannot reach the server: {0}")]
    Network(String),
    /// The server answered with an error status.
    #[error("the server answered {status} {text}")]
    Status { status: u16, text: String },
    /// The node refused and said why (its `{"error": "…"}` body).
    #[error("the node refused: {error} (HTTP {status})")]
    Refused { status: u16, error: String },
    /// The answer was not the expected JSON.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

/// A value fetched from the server: not there yet, there, or failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Remote<T> {
    Loading,
    Ready(T),
    Failed(ApiError),
}

impl<T> From<Result<T, ApiError>> for Remote<T> {
    fn from(r: Result<T, ApiError>) -> Self {
        match r {
            Ok(v) => Remote::Ready(v),
            Err(e) => Remote::Failed(e),
        }
    }
}

impl ApiError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } | ApiError::Refused { status, .. } => Some(*status),
            ApiError::Network(_) | ApiError::Decode(_) => None,
        }
    }
}

/// The node's refusals: `{"error": "…"}`.
#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
}

/// The response, when its status is a success; else its error.
async fn checked(
    resp: Result<gloo_net::http::Response, gloo_net::Error>,
) -> Result<gloo_net::http::Response, ApiError> {
    let resp = resp.map_err(|e| ApiError::Network(e.to_string()))?;
    if resp.ok() {
        return Ok(resp);
    }
    let status = resp.status();
    let text = resp.status_text();
    Err(match resp.json::<ErrorBody>().await {
        Ok(body) => ApiError::Refused {
            status,
            error: body.error,
        },
        Err(_) => ApiError::Status { status, text },
    })
}

async fn decode<T: DeserializeOwned>(
    resp: Result<gloo_net::http::Response, gloo_net::Error>,
) -> Result<T, ApiError> {
    checked(resp)
        .await?
        .json::<T>()
        .await
        .map_err(|e| ApiError::Decode(e.to_string()))
}

/// `GET path`, decoding a JSON body of type `T`.
pub async fn get_json<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    decode(
        Request::get(path)
            .header("Accept", "application/json")
            .send()
            .await,
    )
    .await
}

/// Percent-encodes a path segment (peer names are short ASCII words, but be safe).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /api/health`.
pub async fn health() -> Result<Health, ApiError> {
    get_json(HEALTH_PATH).await
}

pub async fn me() -> Result<Me, ApiError> {
    get_json("/api/me").await
}

pub async fn peers() -> Result<Vec<PeerInfo>, ApiError> {
    get_json("/api/peers").await
}

pub async fn chats() -> Result<Vec<ChatSummary>, ApiError> {
    get_json("/api/chats").await
}

pub async fn trainings() -> Result<Vec<Training>, ApiError> {
    get_json("/api/trainings").await
}

/// `GET /api/trainings/{uuid}/participants`: this node first, then the
/// peers that shared their progress, each with all its phases.
pub async fn training_participants(uuid: &str) -> Result<Vec<Participant>, ApiError> {
    get_json(&format!("/api/trainings/{}/participants", segment(uuid))).await
}

/// `GET /api/participants`: every training's participants, each with its
/// latest phase only (the trainings list's counts).
pub async fn participants() -> Result<Vec<Participant>, ApiError> {
    get_json("/api/participants").await
}

/// `PUT /api/trainings/{uuid}/name` body.
#[derive(serde::Serialize)]
struct TrainingName<'a> {
    name: &'a str,
}

/// `PUT /api/trainings/{uuid}/name`: names the training (an empty name
/// resets it to the default); the node answers with the training.
pub async fn rename_training(uuid: &str, name: &str) -> Result<Training, ApiError> {
    let req = Request::put(&format!("/api/trainings/{}/name", segment(uuid)))
        .header("Accept", "application/json")
        .json(&TrainingName { name })
        .map_err(|e| ApiError::Decode(e.to_string()))?;
    decode(req.send().await).await
}

/// The page of `peer`'s history before `before` (the newest page without).
pub async fn history(
    peer: &str,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<ChatMessage>, ApiError> {
    let mut path = format!("/api/chats/{}/messages?limit={limit}", segment(peer));
    if let Some(b) = before {
        path.push_str(&format!("&before={b}"));
    }
    get_json(&path).await
}

/// `PUT /api/chats/{peer}/read`: the conversation is read up to `seq`;
/// the node keeps it for every browser (and tells them all).
pub async fn mark_read(peer: &str, seq: i64) -> Result<ReadState, ApiError> {
    let req = Request::put(&format!("/api/chats/{}/read", segment(peer)))
        .header("Accept", "application/json")
        .json(&MarkRead { seq })
        .map_err(|e| ApiError::Decode(e.to_string()))?;
    decode(req.send().await).await
}

/// `GET /api/search?q=…&limit=N`: messages of every conversation with
/// every word typed (the last as a prefix), newest first.
pub async fn search(q: &str, limit: usize) -> Result<Vec<SearchHit>, ApiError> {
    get_json(&format!("/api/search?q={}&limit={limit}", segment(q))).await
}

/// `POST /api/chats/{peer}/messages`; `force` queues it even for a name
/// nobody has heard of (else refused with 404 and the node's sentence).
pub async fn send(peer: &str, text: &str, force: bool) -> Result<ChatMessage, ApiError> {
    let body = SendMessage {
        text: text.into(),
        force,
    };
    let req = Request::post(&format!("/api/chats/{}/messages", segment(peer)))
        .json(&body)
        .map_err(|e| ApiError::Decode(e.to_string()))?;
    decode(req.send().await).await
}

/// `GET /api/rooms`: every room, most recent activity first.
pub async fn rooms() -> Result<Vec<RoomSummary>, ApiError> {
    get_json("/api/rooms").await
}

/// `GET /api/rooms/{id}` (404 when this node has no such room).
pub async fn room(id: &str) -> Result<RoomSummary, ApiError> {
    get_json(&format!("/api/rooms/{}", segment(id))).await
}

/// The names typed in the "New room" form (`"bob, carol"`): trimmed,
/// without empty entries or repeats, in the order typed.
pub fn member_names(typed: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for n in typed.split([',', ' ', '\n', ';']).map(str::trim) {
        if !n.is_empty() && !names.iter().any(|m| m == n) {
            names.push(n.to_owned());
        }
    }
    names
}

/// `POST /api/rooms`: a new room with these members (besides us).
pub async fn create_room(name: &str, members: Vec<String>) -> Result<RoomSummary, ApiError> {
    let body = CreateRoom {
        name: name.into(),
        members,
    };
    let req = Request::post("/api/rooms")
        .header("Accept", "application/json")
        .json(&body)
        .map_err(|e| ApiError::Decode(e.to_string()))?;
    decode(req.send().await).await
}

/// The path of `room`'s messages.
pub fn room_messages_path(room: &str) -> String {
    format!("/api/rooms/{}/messages", segment(room))
}

/// The page of `room`'s history before `before` (the newest page without).
pub async fn room_history(
    room: &str,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<ChatMessage>, ApiError> {
    let mut path = format!("{}?limit={limit}", room_messages_path(room));
    if let Some(b) = before {
        path.push_str(&format!("&before={b}"));
    }
    get_json(&path).await
}

/// `POST /api/rooms/{id}/messages` (409 with the node's sentence once we
/// left the room).
pub async fn send_room(room: &str, text: &str) -> Result<ChatMessage, ApiError> {
    let body = SendMessage {
        text: text.into(),
        force: false,
    };
    let req = Request::post(&room_messages_path(room))
        .header("Accept", "application/json")
        .json(&body)
        .map_err(|e| ApiError::Decode(e.to_string()))?;
    decode(req.send().await).await
}

/// `POST /api/rooms/{id}/members`: adds `name` (404 with a sentence when
/// nobody has that name).
pub async fn add_member(room: &str, name: &str) -> Result<RoomSummary, ApiError> {
    let req = Request::post(&format!("/api/rooms/{}/members", segment(room)))
        .header("Accept", "application/json")
        .json(&AddMember { name: name.into() })
        .map_err(|e| ApiError::Decode(e.to_string()))?;
    decode(req.send().await).await
}

/// `POST /api/rooms/{id}/leave`: we keep the history and can no longer post.
pub async fn leave_room(room: &str) -> Result<RoomSummary, ApiError> {
    let req = Request::post(&format!("/api/rooms/{}/leave", segment(room)))
        .header("Accept", "application/json");
    decode(req.send().await).await
}

/// `PUT /api/rooms/{id}/read`: the room is read up to `seq` (for every
/// browser of the user).
pub async fn mark_room_read(room: &str, seq: i64) -> Result<ReadState, ApiError> {
    let req = Request::put(&format!("/api/rooms/{}/read", segment(room)))
        .header("Accept", "application/json")
        .json(&MarkRead { seq })
        .map_err(|e| ApiError::Decode(e.to_string()))?;
    decode(req.send().await).await
}

/// `GET /api/peers/check?timeout_ms=N`: asks every online peer at once and
/// answers at the deadline at the latest.
pub async fn check_peers(timeout_ms: u64) -> Result<PeerCheck, ApiError> {
    get_json(&format!("/api/peers/check?timeout_ms={timeout_ms}")).await
}

/// `POST /api/peers/{name}/trust`: accepts the key `fingerprint`, the one
/// the user was shown (409 when the peer's key changed again since).
pub async fn trust(peer: &str, fingerprint: &str) -> Result<(), ApiError> {
    let body = TrustKey {
        fingerprint: fingerprint.into(),
    };
    let req = Request::post(&format!("/api/peers/{}/trust", segment(peer)))
        .json(&body)
        .map_err(|e| ApiError::Decode(e.to_string()))?;
    checked(req.send().await).await.map(drop)
}

/// `GET /api/files`: every transfer, newest first.
pub async fn files() -> Result<Vec<TransferInfo>, ApiError> {
    get_json("/api/files").await
}

/// The URL that hands `name` to the node for `peer` (`POST` it the bytes).
pub fn upload_url(peer: &str, name: &str) -> String {
    format!("/api/files?to={}&name={}", segment(peer), segment(name))
}

/// `POST /api/files?to=PEER&name=NAME` with the file as the body: the
/// browser streams the `File` (a `Blob`) from disk, it is never read into
/// wasm memory. The node answers with one transfer per recipient.
pub async fn upload(peer: &str, file: &web_sys::File) -> Result<Vec<TransferInfo>, ApiError> {
    post_file(&upload_url(peer, &file.name()), file).await
}

/// `POST /api/rooms/{id}/files?name=NAME`.
pub fn room_upload_url(room: &str, name: &str) -> String {
    format!("/api/rooms/{}/files?name={}", segment(room), segment(name))
}

/// Like [`upload`], into room `room`: one transfer to each member in it.
pub async fn upload_to_room(
    room: &str,
    file: &web_sys::File,
) -> Result<Vec<TransferInfo>, ApiError> {
    post_file(&room_upload_url(room, &file.name()), file).await
}

async fn post_file(url: &str, file: &web_sys::File) -> Result<Vec<TransferInfo>, ApiError> {
    let req = Request::post(url)
        .header("Content-Type", "application/octet-stream")
        .header("Accept", "application/json")
        .body(file.clone())
        .map_err(|e| ApiError::Network(e.to_string()))?;
    decode(req.send().await).await
}

impl ApiError {
    /// What to tell the user: the node's own sentence when it refused,
    /// else what went wrong.
    pub fn sentence(&self) -> String {
        match self {
            ApiError::Refused { error, .. } => error.clone(),
            // The browser's own words ("TypeError: Failed to fetch") say
            // nothing to a person.
            ApiError::Network(_) => "your node did not answer (is it still running?)".into(),
            other => other.to_string(),
        }
    }
}

/// HTTP 409: what the user acted on changed in the meantime.
pub const CONFLICT: u16 = 409;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_well() {
        let e = ApiError::Status {
            status: 502,
            text: "Bad Gateway".into(),
        };
        assert_eq!(e.to_string(), "the server answered 502 Bad Gateway");
        assert_eq!(e.status(), Some(502));
        let e = ApiError::Refused {
            status: 409,
            error: "bob's key changed again".into(),
        };
        assert_eq!(
            e.to_string(),
            "the node refused: bob's key changed again (HTTP 409)"
        );
        assert_eq!(e.status(), Some(CONFLICT));
        assert_eq!(ApiError::Network("refused".into()).status(), None);
        let r: Remote<u8> = Err(ApiError::Network("refused".into())).into();
        assert_eq!(r, Remote::Failed(ApiError::Network("refused".into())));
        assert_eq!(Remote::from(Ok::<_, ApiError>(1u8)), Remote::Ready(1));
    }

    #[test]
    fn typed_member_names_are_split_and_cleaned() {
        assert_eq!(
            member_names(" bob, carol ,,bob  dave"),
            ["bob", "carol", "dave"]
        );
        assert!(member_names(" , ").is_empty());
        assert_eq!(
            room_messages_path("0123456789abcdef0123456789abcdef"),
            "/api/rooms/0123456789abcdef0123456789abcdef/messages"
        );
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("bob"), "bob");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn upload_urls_encode_peer_and_name() {
        assert_eq!(
            upload_url("bob", "model v2 (final)&x=1.pt"),
            "/api/files?to=bob&name=model%20v2%20%28final%29%26x%3D1.pt"
        );
        assert_eq!(
            upload_url("bob", "résumé.txt"),
            "/api/files?to=bob&name=r%C3%A9sum%C3%A9.txt"
        );
        assert_eq!(
            room_upload_url("r0a1", "notes #3.txt"),
            "/api/rooms/r0a1/files?name=notes%20%233.txt"
        );
    }

    #[test]
    fn a_refusal_reads_as_the_nodes_sentence() {
        let e = ApiError::Refused {
            status: 413,
            error: "the file is larger than bob accepts".into(),
        };
        assert_eq!(e.sentence(), "the file is larger than bob accepts");
        // The browser's words stay out of it.
        let e = ApiError::Network("TypeError: Failed to fetch".into());
        assert_eq!(
            e.sentence(),
            "your node did not answer (is it still running?)"
        );
    }
}
