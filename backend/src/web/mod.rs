//! The web bridge: JSON API under `/api`, and the built dashboard with an
//! SPA fallback for everything else.

use std::path::PathBuf;

use axum::routing::get;
use axum::{Json, Router};
use roundtable_shared::api::Health;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::services::{ServeDir, ServeFile};

/// Web server settings.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The dashboard built by Trunk (`dist/`), served at `/`.
    pub dist: PathBuf,
}

async fn health() -> Json<Health> {
    Json(Health::current())
}

/// The router: API routes first, then static files, then `index.html` for
/// any other path so that client-side routes can be reloaded.
pub fn router(config: &WebConfig) -> Router {
    let index = config.dist.join("index.html");
    let api = Router::new()
        .route("/health", get(health))
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                Json(serde_json::json!({"error": "no such API route"})),
            )
        });
    Router::new()
        .nest("/api", api)
        .fallback_service(ServeDir::new(&config.dist).fallback(ServeFile::new(index)))
}

/// Serves the web bridge on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: WebConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, dist = %config.dist.display(), "web bridge listening");
    }
    axum::serve(listener, router(&config))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(dist: PathBuf) -> (String, CancellationToken) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(serve(l, WebConfig { dist }, stop.clone()));
        (url, stop)
    }

    async fn get(url: &str) -> (u16, String) {
        // A minimal HTTP/1.1 client keeps the test free of extra dependencies.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
        let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn health_static_files_and_spa_fallback() {
        let dist = tempfile::tempdir().unwrap();
        std::fs::write(dist.path().join("index.html"), "<html>dashboard</html>").unwrap();
        std::fs::write(dist.path().join("app.js"), "console.log(1)").unwrap();
        let (url, stop) = start(dist.path().to_path_buf()).await;

        let (status, body) = get(&format!("{url}/api/health")).await;
        assert_eq!(status, 200);
        let h: Health = serde_json::from_str(&body).unwrap();
        assert_eq!(h, Health::current());

        assert_eq!(
            get(&format!("{url}/app.js")).await,
            (200, "console.log(1)".into())
        );
        // A client-side route reloads into the dashboard.
        assert_eq!(
            get(&format!("{url}/peers/bob")).await,
            (200, "<html>dashboard</html>".into())
        );
        // Unknown API routes are JSON 404s, not the dashboard.
        let (status, body) = get(&format!("{url}/api/nope")).await;
        assert_eq!(status, 404);
        assert!(body.contains("no such API route"));
        stop.cancel();
    }
}
