//! Typed calls to the backend's JSON API, and the state of a request.

use gloo_net::http::Request;
use roundtable_shared::api::Health;
use serde::de::DeserializeOwned;

/// Path of the health report, relative to the page's origin.
pub const HEALTH_PATH: &str = "/api/health";

/// Why an API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request never got an HTTP answer (server down, network error).
    #[error("cannot reach the server: {0}")]
    Network(String),
    /// The server answered with an error status.
    #[error("the server answered {status} {text}")]
    Status { status: u16, text: String },
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

/// `GET path`, decoding a JSON body of type `T`.
pub async fn get_json<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    let resp = Request::get(path)
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|e| ApiError::Network(e.to_string()))?;
    if !resp.ok() {
        return Err(ApiError::Status {
            status: resp.status(),
            text: resp.status_text(),
        });
    }
    resp.json::<T>()
        .await
        .map_err(|e| ApiError::Decode(e.to_string()))
}

/// `GET /api/health`.
pub async fn health() -> Result<Health, ApiError> {
    get_json(HEALTH_PATH).await
}

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
        let r: Remote<u8> = Err(ApiError::Network("refused".into())).into();
        assert_eq!(r, Remote::Failed(ApiError::Network("refused".into())));
        assert_eq!(Remote::from(Ok::<_, ApiError>(1u8)), Remote::Ready(1));
    }
}
