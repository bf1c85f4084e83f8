//! What keeps other web pages and other hosts out of the bridge:
//!
//! - the token (when one is configured), from `Authorization: Bearer`,
//!   `?token=` or the cookie the `?token=` link sets;
//! - the `Host` check against DNS rebinding: without a token, a page at
//!   `evil.example` whose name resolves to 127.0.0.1 would otherwise be
//!   "same origin" with the bridge and could read chats and post. So
//!   without a token only a loopback `Host` is answered;
//! - the `Origin` check on every state-changing request and on `/ws`: a
//!   browser always sends `Origin` there, and it must be this server's own
//!   (a page elsewhere cannot post, even with the user's cookie);
//! - headers that forbid framing and MIME sniffing, on every response.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::uri::{Authority, Uri};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

use super::error::WebError;

/// Shortest token accepted: 16 bytes (a random 16-character token is far
/// beyond guessing; an empty or short one is a mistake, not a secret).
pub const MIN_TOKEN_LEN: usize = 16;

/// Refuses an empty or short token. Says nothing about the token itself.
pub fn check_token(token: &str) -> Result<(), TokenError> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(TokenError);
    }
    Ok(())
}

/// A token too short to protect anything.
#[derive(Debug, thiserror::Error)]
#[error("the web token (--token or ROUNDTABLE_TOKEN) must be at least {MIN_TOKEN_LEN} bytes (an empty one is refused too)")]
pub struct TokenError;

/// The cookie that carries the token for the dashboard's own requests.
pub const TOKEN_COOKIE: &str = "roundtable_token";

/// Checks the token, if one is configured. It may come as
/// `Authorization: Bearer …` (API clients), as `?token=…` (the link a user
/// opens; the answer then sets a same-site, HTTP-only cookie so that the
/// dashboard's scripts, API calls and WebSocket carry it), or as that cookie.
pub async fn authorize(State(token): State<Option<String>>, req: Request, next: Next) -> Response {
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
        return WebError::Unauthorized.into_response();
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

/// What the `Host`/`Origin` guard needs to know.
#[derive(Debug, Clone, Copy)]
pub struct HostPolicy {
    /// Without a token the bridge is for this machine only: loopback
    /// `Host` (and `Origin`) required.
    pub loopback_only: bool,
}

/// Refuses a foreign `Host` (without a token) and a foreign `Origin` on a
/// state-changing request or on `/ws`.
pub async fn check_host_and_origin(
    State(policy): State<HostPolicy>,
    req: Request,
    next: Next,
) -> Response {
    match host_and_origin(&policy, req.method(), req.uri(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            // The path only: a query may carry the token.
            tracing::debug!(error = %e, path = req.uri().path(), "request refused");
            e.into_response()
        }
    }
}

/// A `host[:port]` as found in `Host` or in an origin, normalised: host in
/// lower case without IPv6 brackets, port if given.
#[derive(Debug, PartialEq, Eq)]
struct HostPort {
    host: String,
    port: Option<u16>,
}

fn parse_host(s: &str) -> Option<HostPort> {
    if s.contains('@') {
        return None; // no user info in a Host
    }
    let a: Authority = s.parse().ok()?;
    let host = a.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some(HostPort {
        host: host.to_ascii_lowercase(),
        port: a.port_u16(),
    })
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The `(host, port)` of an `Origin` value such as `http://127.0.0.1:8080`,
/// with the scheme's default port filled in. `null` and other opaque
/// origins give `None`.
fn parse_origin(s: &str) -> Option<(HostPort, u16)> {
    let uri: Uri = s.parse().ok()?;
    let default = match uri.scheme_str()? {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let hp = parse_host(uri.authority()?.as_str())?;
    let port = hp.port.unwrap_or(default);
    Some((hp, port))
}

/// Whether a request must prove it comes from our own page.
fn changes_state(method: &Method, uri: &Uri) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || uri.path() == "/ws"
}

fn host_and_origin(
    policy: &HostPolicy,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), WebError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_host);
    if policy.loopback_only && !host.as_ref().is_some_and(|h| is_loopback(&h.host)) {
        return Err(WebError::MisdirectedHost(
            "this dashboard answers only to a loopback Host (127.0.0.1, localhost, [::1]); \
             set a token to serve other names"
                .into(),
        ));
    }
    if !changes_state(method, uri) {
        return Ok(());
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(()); // not a browser (a CLI tool, a test): the Host check holds
    };
    let foreign = || WebError::Forbidden("cross-origin request refused".into());
    let (origin, origin_port) = origin
        .to_str()
        .ok()
        .and_then(parse_origin)
        .ok_or_else(foreign)?;
    let host = host.ok_or_else(foreign)?;
    // A Host without a port was reached on the scheme's default port.
    let same = origin.host == host.host && host.port.unwrap_or(origin_port) == origin_port;
    if !same || (policy.loopback_only && !is_loopback(&origin.host)) {
        return Err(foreign());
    }
    Ok(())
}

/// Marks every answer of `api` `Cache-Control: no-store` (unless a handler
/// says otherwise): messages, names, keys and files are the user's, and
/// no browser cache or proxy should keep a copy of them on disk, least of
/// all on a shared machine reaching a node through its token.
pub fn not_stored(api: Router) -> Router {
    api.layer(SetResponseHeaderLayer::if_not_present(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ))
}

/// Adds the headers that keep the dashboard out of frames and stop
/// browsers from guessing content types, on every response.
pub fn with_security_headers(router: Router) -> Router {
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    router
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(set(
            header::CONTENT_SECURITY_POLICY,
            "frame-ancestors 'none'",
        ))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        loopback_only: bool,
        method: Method,
        path: &str,
        host: &str,
        origin: Option<&str>,
    ) -> bool {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        let uri: Uri = path.parse().unwrap();
        host_and_origin(&HostPolicy { loopback_only }, &method, &uri, &h).is_ok()
    }

    #[test]
    fn without_a_token_only_loopback_hosts_are_answered() {
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LocalHost",
            "[::1]:8080",
            "127.0.0.1",
        ] {
            assert!(check(true, Method::GET, "/api/chats", host, None), "{host}");
        }
        for host in [
            "evil.example:8080",
            "evil.example",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "u@127.0.0.1",
        ] {
            assert!(
                !check(true, Method::GET, "/api/chats", host, None),
                "{host}"
            );
        }
        // With a token, any name may be used (behind a proxy, on a LAN).
        assert!(check(
            false,
            Method::GET,
            "/api/chats",
            "node.lan:8080",
            None
        ));
    }

    #[test]
    fn state_changes_and_websockets_need_our_own_origin() {
        let post =
            |host, origin| check(true, Method::POST, "/api/chats/bob/messages", host, origin);
        assert!(
            post("127.0.0.1:8080", None),
            "non-browser clients send no Origin"
        );
        assert!(post("127.0.0.1:8080", Some("http://127.0.0.1:8080")));
        assert!(post("localhost:8080", Some("http://LOCALHOST:8080")));
        assert!(post("[::1]:8080", Some("http://[::1]:8080")));
        assert!(!post("127.0.0.1:8080", Some("http://evil.example")));
        assert!(!post("127.0.0.1:8080", Some("http://127.0.0.1:9999")));
        assert!(!post("127.0.0.1:8080", Some("null")));
        assert!(check(
            true,
            Method::GET,
            "/ws",
            "127.0.0.1:8080",
            Some("http://127.0.0.1:8080")
        ));
        assert!(!check(
            true,
            Method::GET,
            "/ws",
            "127.0.0.1:8080",
            Some("http://evil.example")
        ));
        // Reads are left to the Host check and the browser's CORS rules.
        assert!(check(
            true,
            Method::GET,
            "/api/chats",
            "127.0.0.1:8080",
            Some("http://evil.example")
        ));
        // With a token: same origin still required, any name.
        assert!(check(
            false,
            Method::DELETE,
            "/api/x",
            "node.lan",
            Some("https://node.lan")
        ));
        assert!(!check(
            false,
            Method::PUT,
            "/api/x",
            "node.lan",
            Some("https://evil.example")
        ));
    }

    #[test]
    fn short_tokens_are_refused() {
        assert!(check_token("").is_err());
        assert!(check_token("fifteen-bytes!!").is_err());
        assert!(check_token("sixteen-bytes!!!").is_ok());
        let text = check_token("hunter2").unwrap_err().to_string();
        assert!(!text.contains("hunter2") && text.contains("16"), "{text}");
    }
}
