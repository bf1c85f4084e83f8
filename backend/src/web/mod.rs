//! The web bridge: JSON API under `/api`, the event stream on `/ws`, and
//! the built dashboard with an SPA fallback for everything else.
//!
//! Handlers are thin: they validate, call the owning service, and answer.
//! `/ws` only forwards the node's event stream.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use roundtable_shared::api::{Health, Me, SendMessage, MAX_TEXT};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tower_http::services::{ServeDir, ServeFile};

use crate::events::Events;
use crate::node::chat::{Chat, ChatError};
use crate::node::directory_client::DirectoryLink;
use crate::node::peers::Peers;

/// Web server settings.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The dashboard built by Trunk (`dist/`), served at `/`.
    pub dist: PathBuf,
    /// When set, every request must carry it (`Authorization: Bearer …`
    /// or `?token=…`, the latter for the WebSocket).
    pub token: Option<String>,
}

impl WebConfig {
    /// Serves `dist` without a token (loopback use).
    pub fn new(dist: impl Into<PathBuf>) -> Self {
        WebConfig {
            dist: dist.into(),
            token: None,
        }
    }
}

/// What the node exposes to the web bridge.
#[derive(Clone)]
pub struct NodeApi {
    pub name: String,
    /// `host:port` others reach our chat port at.
    pub chat_addr: String,
    pub directory_addr: String,
    pub chat: Chat,
    pub peers: Peers,
    pub events: Events,
    pub directory: DirectoryLink,
    pub trainings: crate::notify::Trainings,
}

/// A JSON error answer.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

async fn health() -> Json<Health> {
    Json(Health::current())
}

async fn me(State(n): State<NodeApi>) -> Json<Me> {
    Json(Me {
        name: n.name.clone(),
        chat: n.chat_addr.clone(),
        directory: n.directory_addr.clone(),
        directory_state: n.directory.current(),
        version: roundtable_shared::VERSION.into(),
    })
}

async fn peers(State(n): State<NodeApi>) -> Response {
    Json(n.peers.list()).into_response()
}

async fn chats(State(n): State<NodeApi>) -> Response {
    let store = n.chat.store().clone();
    match crate::store::blocking(move || store.chats()).await {
        Ok(c) => Json(c).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    before: Option<i64>,
    limit: Option<usize>,
}

async fn history(
    State(n): State<NodeApi>,
    Path(peer): Path<String>,
    Query(p): Query<Page>,
) -> Response {
    let limit = p.limit.unwrap_or(50).clamp(1, 500);
    let store = n.chat.store().clone();
    match crate::store::blocking(move || store.history(&peer, p.before, limit)).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn post_message(
    State(n): State<NodeApi>,
    Path(peer): Path<String>,
    body: Result<Json<SendMessage>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    match n.chat.send(&peer, &body.text).await {
        Ok(m) => (StatusCode::ACCEPTED, Json(m)).into_response(),
        Err(e @ (ChatError::BadPeer(_) | ChatError::BadText | ChatError::ToSelf)) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn trainings(State(n): State<NodeApi>) -> Response {
    match n.trainings.list().await {
        Ok(t) => Json(t).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn training(State(n): State<NodeApi>, Path(uuid): Path<String>) -> Response {
    match n.trainings.get(&uuid).await {
        Ok(Some(t)) => Json(t).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no training {uuid}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Whether the page that opened the WebSocket is our own: browsers always
/// send `Origin`; its host must be the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true; // not a browser (a CLI tool, a test)
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .split_once("://")
        .map(|(_, h)| h.trim_end_matches('/'));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

async fn ws(State(n): State<NodeApi>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    if !same_origin(&headers) {
        return error(StatusCode::FORBIDDEN, "cross-origin WebSocket refused");
    }
    upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| forward_events(socket, n.events))
}

/// Forwards events until the browser leaves. A browser that cannot keep up
/// (its send stalls, or it falls behind the bus) is disconnected; it
/// reconnects and fetches a fresh snapshot, so nothing is silently lost.
async fn forward_events(mut socket: WebSocket, events: Events) {
    let mut rx = events.subscribe();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    let Ok(text) = serde_json::to_string(&ev) else { continue };
                    let send = socket.send(WsMessage::Text(text.into()));
                    match tokio::time::timeout(Duration::from_secs(5), send).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "dropping a WebSocket client that fell behind");
                    let _ = socket.send(WsMessage::Close(None)).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The cookie that carries the token for the dashboard's own requests.
const TOKEN_COOKIE: &str = "roundtable_token";

/// Checks the token, if one is configured. It may come as
/// `Authorization: Bearer …` (API clients), as `?token=…` (the link a user
/// opens; the answer then sets a same-site, HTTP-only cookie so that the
/// dashboard's scripts, API calls and WebSocket carry it), or as that cookie.
async fn authorize(State(token): State<Option<String>>, req: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='));
    let ok = |given: Option<&str>| {
        given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
    };
    if !(ok(bearer) || ok(query) || ok(cookie)) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let set_cookie = ok(query) && !ok(cookie);
    let mut response = next.run(req).await;
    if set_cookie {
        if let Ok(v) = format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict").parse()
        {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn static_files(config: &WebConfig) -> ServeDir<ServeFile> {
    let index = config.dist.join("index.html");
    ServeDir::new(&config.dist).fallback(ServeFile::new(index))
}

fn api_fallback() -> Router {
    Router::new().fallback(|| async { error(StatusCode::NOT_FOUND, "no such API route") })
}

/// The router without a node: health and the dashboard.
pub fn router(config: &WebConfig) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .merge(api_fallback());
    Router::new()
        .nest("/api", api)
        .fallback_service(static_files(config))
        .layer(middleware::from_fn_with_state(
            config.token.clone(),
            authorize,
        ))
}

/// The node's full router.
pub fn node_router(config: &WebConfig, node: NodeApi) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/me", get(me))
        .route("/peers", get(peers))
        .route("/chats", get(chats))
        .route("/chats/{peer}/messages", get(history).post(post_message))
        .route("/trainings", get(trainings))
        .route("/trainings/{uuid}", get(training))
        .with_state(node.clone())
        .merge(api_fallback());
    Router::new()
        .nest("/api", api)
        .route("/ws", get(ws).with_state(node))
        .fallback_service(static_files(config))
        .layer(DefaultBodyLimit::max(MAX_TEXT + 4096))
        .layer(middleware::from_fn_with_state(
            config.token.clone(),
            authorize,
        ))
}

/// Serves health and the dashboard on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: WebConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    run(listener, router(&config), &config, shutdown).await
}

/// Serves the node's web bridge on `listener` until `shutdown`.
pub async fn serve_node(
    listener: TcpListener,
    config: WebConfig,
    node: NodeApi,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    run(listener, node_router(&config, node), &config, shutdown).await
}

async fn run(
    listener: TcpListener,
    app: Router,
    config: &WebConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, dist = %config.dist.display(), "web bridge listening");
    }
    // Small JSON answers and events must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(config: WebConfig) -> (String, CancellationToken) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(serve(l, config, stop.clone()));
        (url, stop)
    }

    /// A minimal HTTP/1.1 GET keeps the test free of extra dependencies:
    /// status, response head and body.
    async fn request(url: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
        let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (status, head.to_owned(), body.to_owned())
    }

    /// Status and body of a GET.
    async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let (status, _, body) = request(url, headers).await;
        (status, body)
    }

    /// Status and response head of a GET.
    async fn get_head(url: &str) -> (u16, String) {
        let (status, head, _) = request(url, &[]).await;
        (status, head)
    }

    fn dist() -> tempfile::TempDir {
        let dist = tempfile::tempdir().unwrap();
        std::fs::write(dist.path().join("index.html"), "<html>dashboard</html>").unwrap();
        std::fs::write(dist.path().join("app.js"), "console.log(1)").unwrap();
        dist
    }

    #[tokio::test]
    async fn health_static_files_and_spa_fallback() {
        let dist = dist();
        let (url, stop) = start(WebConfig::new(dist.path())).await;
        let (status, body) = get(&format!("{url}/api/health"), &[]).await;
        assert_eq!(status, 200);
        let h: Health = serde_json::from_str(&body).unwrap();
        assert_eq!(h, Health::current());
        assert_eq!(
            get(&format!("{url}/app.js"), &[]).await,
            (200, "console.log(1)".into())
        );
        // A client-side route reloads into the dashboard.
        assert_eq!(
            get(&format!("{url}/peers/bob"), &[]).await,
            (200, "<html>dashboard</html>".into())
        );
        // Unknown API routes are JSON 404s, not the dashboard.
        let (status, body) = get(&format!("{url}/api/nope"), &[]).await;
        assert_eq!(status, 404);
        assert!(body.contains("no such API route"));
        stop.cancel();
    }

    #[tokio::test]
    async fn token_is_required_when_set() {
        let dist = dist();
        let config = WebConfig {
            dist: dist.path().into(),
            token: Some("s3cret".into()),
        };
        let (url, stop) = start(config).await;
        assert_eq!(get(&format!("{url}/api/health"), &[]).await.0, 401);
        assert_eq!(
            get(
                &format!("{url}/api/health"),
                &[("Authorization", "Bearer nope")]
            )
            .await
            .0,
            401
        );
        assert_eq!(
            get(
                &format!("{url}/api/health"),
                &[("Authorization", "Bearer s3cret")]
            )
            .await
            .0,
            200
        );
        assert_eq!(
            get(&format!("{url}/api/health?token=s3cret"), &[]).await.0,
            200
        );
        assert_eq!(get(&format!("{url}/"), &[]).await.0, 401);
        // The link with the token sets a cookie the dashboard's own requests carry.
        let (status, head) = get_head(&format!("{url}/?token=s3cret")).await;
        assert_eq!(status, 200);
        assert!(
            head.contains("roundtable_token=s3cret; Path=/; HttpOnly; SameSite=Strict"),
            "{head}"
        );
        assert_eq!(
            get(
                &format!("{url}/app.js"),
                &[("Cookie", "a=b; roundtable_token=s3cret")]
            )
            .await
            .0,
            200
        );
        assert_eq!(
            get(
                &format!("{url}/app.js"),
                &[("Cookie", "roundtable_token=wrong")]
            )
            .await
            .0,
            401
        );
        stop.cancel();
    }

    #[test]
    fn websocket_origin_must_match_host() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "non-browser clients send no Origin");
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
