//! `/api/files`: hand a file to the node for peers, list transfers, and
//! download a file. Uploads and downloads stream: the upload goes straight
//! from the request body into the outbox (`Transfers::upload`), and the
//! download is served from disk by `tower_http`'s `ServeFile`, which
//! answers HTTP `Range` requests.

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use roundtable_shared::api::TransferInfo;
use serde::Deserialize;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::error::WebError;
use super::NodeApi;
use crate::transfer::FilesError;

impl From<FilesError> for WebError {
    fn from(e: FilesError) -> Self {
        match e {
            FilesError::BadPeer(_)
            | FilesError::Recipients(_)
            | FilesError::ToSelf
            | FilesError::BadName(_)
            | FilesError::Upload(_) => WebError::BadRequest(e.to_string()),
            FilesError::TooLarge { .. } => WebError::TooLarge(e.to_string()),
            FilesError::NotFound => WebError::NotFound(e.to_string()),
            other => WebError::internal(other),
        }
    }
}

#[derive(Deserialize)]
pub struct ListParams {
    peer: Option<String>,
}

pub async fn list(
    State(n): State<NodeApi>,
    Query(p): Query<ListParams>,
) -> Result<Json<Vec<TransferInfo>>, WebError> {
    Ok(Json(n.transfers.list(p.peer).await?))
}

pub async fn get(
    State(n): State<NodeApi>,
    Path(seq): Path<i64>,
) -> Result<Json<TransferInfo>, WebError> {
    Ok(Json(n.transfers.get(seq).await?.info))
}

#[derive(Deserialize)]
pub struct UploadParams {
    /// Recipients, comma-separated.
    to: String,
    /// The file's name.
    name: String,
}

/// `POST /api/files?to=bob,carol&name=model.pt` with the file as the body.
pub async fn upload(
    State(n): State<NodeApi>,
    Query(p): Query<UploadParams>,
    body: Body,
) -> Result<impl IntoResponse, WebError> {
    let to: Vec<String> =
        p.to.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    let infos = n
        .transfers
        .upload(&to, &p.name, None, body.into_data_stream())
        .await?;
    Ok((StatusCode::CREATED, Json(infos)))
}

#[derive(Deserialize)]
pub struct RoomUploadParams {
    /// The file's name.
    name: String,
}

/// `POST /api/rooms/{id}/files?name=model.pt` with the file as the body:
/// one transfer to each member in the room now, each marked with the room
/// (201 with them all).
pub async fn upload_to_room(
    State(n): State<NodeApi>,
    Path(id): Path<String>,
    Query(p): Query<RoomUploadParams>,
    body: Body,
) -> Result<impl IntoResponse, WebError> {
    let to = n.chat.room_recipients(&id).await?;
    if to.is_empty() {
        return Err(WebError::BadRequest(
            "nobody else is in this room yet: add someone, then send the file".into(),
        ));
    }
    let infos = n
        .transfers
        .upload(&to, &p.name, Some(&id), body.into_data_stream())
        .await?;
    Ok((StatusCode::CREATED, Json(infos)))
}

/// Characters kept as they are in `filename*` (RFC 8187's attr-char).
const ATTR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment` with the name both as plain ASCII (for old clients) and
/// exactly, percent-encoded UTF-8 (RFC 6266).
pub fn content_disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let exact = utf8_percent_encode(name, ATTR);
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{exact}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// `GET /api/files/{seq}/content`: the bytes, with `Range` support.
pub async fn content(
    State(n): State<NodeApi>,
    Path(seq): Path<i64>,
    req: Request,
) -> Result<Response, WebError> {
    let (path, info) = n.transfers.content(seq).await?;
    let mut res = ServeFile::new(path)
        .oneshot(req)
        .await
        .map_err(WebError::internal)?
        .map(Body::new);
    if res.status().is_success() || res.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        let h = res.headers_mut();
        h.insert(CONTENT_DISPOSITION, content_disposition(&info.name));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_given_exactly_and_safely() {
        assert_eq!(
            content_disposition("model.pt"),
            "attachment; filename=\"model.pt\"; filename*=UTF-8''model.pt"
        );
        assert_eq!(
            content_disposition("données \"v2\".csv"),
            "attachment; filename=\"donn_es _v2_.csv\"; filename*=UTF-8''donn%C3%A9es%20%22v2%22.csv"
        );
    }
}
