//! The built dashboard (`dist/`), served at `/` with an SPA fallback: any
//! path that is not a file gets `index.html`, so a client-side route
//! reloads.
//!
//! - **Compressed copies.** `cargo xtask build` writes `app.wasm.br` and
//!   `app.wasm.gz` beside each file (`xtask/src/precompress.rs`); the copy
//!   the request's `Accept-Encoding` takes is sent. The wasm is 1.15 MiB
//!   raw, 401 KiB gzip, 310 KiB brotli (2026-12-07): a remote dashboard
//!   loads a quarter of the bytes, and the node spends no CPU on it. A
//!   `dist/` without the copies (a bare `trunk build`) is served raw.
//! - **Caching.** Trunk names the wasm, JS and CSS after a hash of their
//!   content (`app-3f2bcc3eacc41e48_bg.wasm`), so those never change under
//!   their name: they are cached for a year, `immutable` (a reload sends
//!   no request for them). Everything else (`index.html`, which names the
//!   current hashes, and the routes that fall back to it) is `no-cache`:
//!   always revalidated, so a new build is picked up on the next load.

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::header::{HeaderValue, CACHE_CONTROL, VARY};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::services::{ServeDir, ServeFile};

/// For files named after their content's hash.
/// Not `public`: behind a token, no shared cache should keep them.
const IMMUTABLE: &str = "max-age=31536000, immutable";
/// For everything else: the browser may keep it but asks first.
const REVALIDATE: &str = "no-cache";

/// The dashboard's files under `dist`, as a fallback service.
pub fn service(dist: &Path) -> Router {
    let files = ServeDir::new(dist)
        .precompressed_br()
        .precompressed_gzip()
        .fallback(
            ServeFile::new(dist.join("index.html"))
                .precompressed_br()
                .precompressed_gzip(),
        );
    Router::new()
        .fallback_service(files)
        .layer(middleware::from_fn_with_state(
            dist.to_owned(),
            cache_policy,
        ))
}

/// Whether `name` is how Trunk names a built file: `<stem>-<16 hex
/// digits>` then an optional `_bg`, then the extension.
fn is_hashed(name: &str) -> bool {
    let Some((stem, _ext)) = name.rsplit_once('.') else {
        return false;
    };
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-').is_some_and(|(head, hash)| {
        !head.is_empty() && hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Sets `Cache-Control` (and `Vary`, since the body depends on
/// `Accept-Encoding`) on what the static files answer.
async fn cache_policy(State(dist): State<PathBuf>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let mut res = next.run(req).await;
    if !(res.status().is_success() || res.status().is_redirection()) {
        return res;
    }
    // One path segment only: Trunk's output is flat, and a name that is
    // not a file here (a stale hash) fell back to `index.html`.
    let name = path.strip_prefix('/').unwrap_or(&path);
    let immutable = !name.contains('/')
        && is_hashed(name)
        && tokio::fs::metadata(dist.join(name))
            .await
            .is_ok_and(|m| m.is_file());
    let headers = res.headers_mut();
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(if immutable { IMMUTABLE } else { REVALIDATE }),
    );
    headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    res
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    const WASM: &str = "app-3f2bcc3eacc41e48_bg.wasm";

    fn dist() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("index.html"), "<html>dashboard</html>").unwrap();
        std::fs::write(p.join(WASM), b"\0asm raw").unwrap();
        std::fs::write(p.join(format!("{WASM}.br")), b"brotli bytes").unwrap();
        std::fs::write(p.join(format!("{WASM}.gz")), b"gzip bytes").unwrap();
        std::fs::write(p.join("app-3f2bcc3eacc41e48.js"), b"js raw").unwrap();
        d
    }

    /// Status, `Content-Encoding`, `Cache-Control`, body.
    async fn get(
        dist: &Path,
        path: &str,
        accept: Option<&str>,
    ) -> (u16, Option<String>, String, Vec<u8>) {
        let mut req = Request::get(path);
        if let Some(a) = accept {
            req = req.header(ACCEPT_ENCODING, a);
        }
        let res = service(dist)
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let h = |n| {
            res.headers()
                .get(n)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
        };
        let (enc, cache) = (h(CONTENT_ENCODING), h(CACHE_CONTROL).unwrap_or_default());
        if enc.is_some() {
            assert_eq!(h(VARY).as_deref(), Some("accept-encoding"));
        }
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, enc, cache, body)
    }

    #[tokio::test]
    async fn the_copy_the_browser_takes_is_sent() {
        let d = dist();
        let path = format!("/{WASM}");
        // What Chromium sends.
        let (status, enc, _, body) = get(d.path(), &path, Some("gzip, deflate, br, zstd")).await;
        assert_eq!((status, enc.as_deref()), (200, Some("br")));
        assert_eq!(body, b"brotli bytes");
        let (_, enc, _, body) = get(d.path(), &path, Some("gzip")).await;
        assert_eq!(enc.as_deref(), Some("gzip"));
        assert_eq!(body, b"gzip bytes");
        let (_, enc, _, body) = get(d.path(), &path, None).await;
        assert_eq!(enc, None);
        assert_eq!(body, b"\0asm raw");
        // Without copies (a bare `trunk build`): raw, whatever is accepted.
        let (_, enc, _, body) = get(d.path(), "/app-3f2bcc3eacc41e48.js", Some("br")).await;
        assert_eq!(enc, None);
        assert_eq!(body, b"js raw");
    }

    #[tokio::test]
    async fn hashed_files_are_cached_for_good_and_the_rest_revalidated() {
        let d = dist();
        for path in [format!("/{WASM}"), "/app-3f2bcc3eacc41e48.js".into()] {
            let (status, _, cache, _) = get(d.path(), &path, Some("br")).await;
            assert_eq!((status, cache.as_str()), (200, IMMUTABLE), "{path}");
        }
        // The page naming the current hashes, a client-side route, and a
        // hash of an earlier build (not here: the dashboard's page).
        for path in [
            "/",
            "/index.html",
            "/trainings/abc",
            "/app-0000000000000000_bg.wasm",
        ] {
            let (status, _, cache, body) = get(d.path(), path, None).await;
            assert_eq!((status, cache.as_str()), (200, REVALIDATE), "{path}");
            assert_eq!(body, b"<html>dashboard</html>", "{path}");
        }
    }

    #[tokio::test]
    async fn the_compressed_copy_keeps_the_files_type() {
        let d = dist();
        let res = service(d.path())
            .oneshot(
                Request::get(format!("/{WASM}"))
                    .header(ACCEPT_ENCODING, "br")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        // `instantiateStreaming` insists on this type.
        assert_eq!(res.headers()[CONTENT_TYPE], "application/wasm");
    }

    #[test]
    fn trunk_names_are_told_apart() {
        for yes in [
            "app-3f2bcc3eacc41e48_bg.wasm",
            "roundtable-frontend-3f2bcc3eacc41e48.js",
            "main-2d2b4b2da2eadfeb.css",
        ] {
            assert!(is_hashed(yes), "{yes}");
        }
        for no in [
            "index.html",
            "app.js",
            "-3f2bcc3eacc41e48.js",
            "app-3f2bcc3eacc41e4.js",
            "app-3f2bcc3eacc41e4g.js",
            "app-3f2bcc3eacc41e48",
        ] {
            assert!(!is_hashed(no), "{no}");
        }
    }
}
