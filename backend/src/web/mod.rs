//! The web bridge: JSON API under `/api`, the event stream on `/ws`, and
//! the built dashboard with an SPA fallback for everything else.
//!
//! - [`api`]: the JSON handlers (thin: validate, call the service, answer);
//! - [`assets`]: the dashboard's files, compressed and cached;
//! - [`ws`]: the event stream;
//! - [`security`]: token, `Host`/`Origin` checks, security headers;
//! - [`error`]: [`WebError`], the one error type every handler returns;
//! - [`server`]: the accept loop with its timeouts and connection caps,
//!   shared with the notification endpoint.
//!
//! This file wires them into routers and serves them.

pub mod api;
pub mod assets;
pub mod error;
pub mod files;
pub mod rooms;
pub mod security;
pub mod server;
pub mod trainings;
pub mod ws;

use std::path::PathBuf;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post, put};
use axum::Router;
use roundtable_shared::api::MAX_TEXT;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::events::Events;
use crate::node::chat::Chat;
use crate::node::directory_client::DirectoryLink;
use crate::node::peers::Peers;
pub use error::WebError;
pub use server::Limits;

/// Web server settings.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The dashboard built by Trunk (`dist/`), served at `/`.
    pub dist: PathBuf,
    /// When set, every request must carry it (`Authorization: Bearer …`,
    /// `?token=…` or the cookie that link sets); at least
    /// [`security::MIN_TOKEN_LEN`] bytes. Without it only a loopback `Host`
    /// is answered.
    pub token: Option<String>,
    /// Timeouts and connection caps of the listener.
    pub limits: Limits,
}

impl WebConfig {
    /// Serves `dist` without a token (loopback use).
    pub fn new(dist: impl Into<PathBuf>) -> Self {
        WebConfig {
            dist: dist.into(),
            token: None,
            limits: Limits::web(),
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
    /// Files sent and received.
    pub transfers: crate::transfer::Transfers,
    /// Our identity key's fingerprint.
    pub fingerprint: String,
    /// Pinned peer keys.
    pub trust: crate::node::trust::Trust,
    /// `--chat none`.
    pub relay_only: bool,
    /// `--require-secure`.
    pub require_secure: bool,
    /// Training progress shared with peers (`--share-progress`).
    pub progress: crate::progress::Progress,
}

fn api_fallback() -> Router {
    Router::new().fallback(api::no_such_route)
}

/// The checks every request passes, outermost first: security headers on
/// every answer, then `Host`/`Origin`, then the token.
fn guarded(router: Router, config: &WebConfig) -> Router {
    let policy = security::HostPolicy {
        loopback_only: config.token.is_none(),
    };
    let router = router
        .layer(middleware::from_fn_with_state(
            config.token.clone(),
            security::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            policy,
            security::check_host_and_origin,
        ));
    security::with_security_headers(router)
}

/// The router without a node: health and the dashboard.
pub fn router(config: &WebConfig) -> Router {
    let api = Router::new()
        .route("/health", get(api::health))
        .merge(api_fallback());
    let router = Router::new()
        .nest("/api", security::not_stored(api))
        .fallback_service(assets::service(&config.dist));
    guarded(router, config)
}

/// The node's full router.
pub fn node_router(config: &WebConfig, node: NodeApi) -> Router {
    let api = Router::new()
        .route("/health", get(api::health))
        .route("/me", get(api::me))
        .route("/peers", get(api::peers))
        .route("/peers/check", get(api::check_peers))
        .route("/peers/{name}/trust", post(api::trust_peer))
        .route("/chats", get(api::chats))
        .route(
            "/chats/{peer}/messages",
            get(api::history).post(api::post_message),
        )
        .route("/chats/{peer}/read", put(api::mark_read))
        .route("/search", get(api::search))
        .route("/rooms", get(rooms::list).post(rooms::create))
        .route("/rooms/{id}", get(rooms::get))
        .route(
            "/rooms/{id}/messages",
            get(rooms::history).post(rooms::post_message),
        )
        .route("/rooms/{id}/members", post(rooms::add_member))
        .route("/rooms/{id}/leave", post(rooms::leave))
        .route("/rooms/{id}/read", put(rooms::mark_read))
        .route("/rooms/{id}/files", post(files::upload_to_room))
        .route("/trainings", get(trainings::list))
        .route("/trainings/{uuid}", get(trainings::get))
        .route("/trainings/{uuid}/name", put(trainings::rename))
        .route(
            "/trainings/{uuid}/participants",
            get(trainings::participants),
        )
        .route("/trainings/{uuid}/metrics.csv", get(trainings::metrics_csv))
        .route("/participants", get(trainings::summary))
        .route("/files", get(files::list).post(files::upload))
        .route("/files/{seq}", get(files::get))
        .route("/files/{seq}/content", get(files::content))
        .with_state(node.clone())
        .merge(api_fallback());
    let router = Router::new()
        .nest("/api", security::not_stored(api))
        .route("/ws", get(ws::ws).with_state(node))
        .fallback_service(assets::service(&config.dist))
        .layer(DefaultBodyLimit::max(MAX_TEXT + 4096));
    guarded(router, config)
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
    if let Some(t) = &config.token {
        security::check_token(t)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            %addr,
            dist = %config.dist.display(),
            limits = ?config.limits,
            "web bridge listening"
        );
    }
    server::serve(listener, app, config.limits.clone(), "web", shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_shared::api::Health;

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
        // No API answer is kept by a cache; the dashboard's files may be.
        for path in ["/api/health", "/api/nope"] {
            let (_, head) = get_head(&format!("{url}{path}")).await;
            assert!(
                head.to_ascii_lowercase()
                    .contains("cache-control: no-store"),
                "{path}: {head}"
            );
        }
        let (_, head) = get_head(&format!("{url}/app.js")).await;
        assert!(!head.contains("no-store"), "{head}");
        stop.cancel();
    }

    #[tokio::test]
    async fn token_is_required_when_set() {
        let dist = dist();
        let config = WebConfig {
            dist: dist.path().into(),
            token: Some("s3cret-0123456789".into()),
            limits: Limits::web(),
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
                &[("Authorization", "Bearer s3cret-0123456789")]
            )
            .await
            .0,
            200
        );
        assert_eq!(
            get(&format!("{url}/api/health?token=s3cret-0123456789"), &[])
                .await
                .0,
            200
        );
        assert_eq!(get(&format!("{url}/"), &[]).await.0, 401);
        // The link with the token sets a cookie the dashboard's own requests carry.
        let (status, head) = get_head(&format!("{url}/?token=s3cret-0123456789")).await;
        assert_eq!(status, 200);
        assert!(
            head.contains("roundtable_token=s3cret-0123456789; Path=/; HttpOnly; SameSite=Strict"),
            "{head}"
        );
        assert_eq!(
            get(
                &format!("{url}/app.js"),
                &[("Cookie", "a=b; roundtable_token=s3cret-0123456789")]
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
}
