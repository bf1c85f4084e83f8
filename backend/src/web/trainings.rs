//! `/api/trainings…` and `/api/participants`: trainings as this node sees
//! them, their names, every participant's lane, and their metrics as CSV.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use roundtable_shared::progress::Participant;
use roundtable_shared::training::{clean_training_name, Training, MAX_TRAINING_NAME};
use serde::Deserialize;

use super::error::WebError;
use super::NodeApi;

pub async fn list(State(n): State<NodeApi>) -> Result<Json<Vec<Training>>, WebError> {
    Ok(Json(n.trainings.list().await?))
}

fn canonical(uuid: &str) -> Result<String, WebError> {
    roundtable_shared::notify::canonical_uuid(uuid)
        .ok_or_else(|| WebError::NotFound(format!("no training {uuid}")))
}

pub async fn get(
    State(n): State<NodeApi>,
    Path(uuid): Path<String>,
) -> Result<Json<Training>, WebError> {
    match n.trainings.get(&uuid).await? {
        Some(t) => Ok(Json(t)),
        None => Err(WebError::NotFound(format!("no training {uuid}"))),
    }
}

/// `PUT /api/trainings/{uuid}/name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    /// Empty or `null`: back to the default name.
    pub name: Option<String>,
}

pub async fn rename(
    State(n): State<NodeApi>,
    Path(uuid): Path<String>,
    body: Result<Json<NameBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Training>, WebError> {
    let Json(body) = body?;
    let name = match body.name.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(clean_training_name(s).ok_or_else(|| {
            WebError::BadRequest(format!(
                "a training name is 1 to {MAX_TRAINING_NAME} characters without control characters"
            ))
        })?),
    };
    match n.trainings.rename(&uuid, name).await? {
        Some(t) => Ok(Json(t)),
        None => Err(WebError::NotFound(format!("no training {uuid}"))),
    }
}

/// `GET /api/trainings/{uuid}/participants`: this node first, then the
/// peers that shared their progress, each with every phase.
pub async fn participants(
    State(n): State<NodeApi>,
    Path(uuid): Path<String>,
) -> Result<Json<Vec<Participant>>, WebError> {
    let uuid = canonical(&uuid)?;
    if n.trainings.get(&uuid).await?.is_none() {
        return Err(WebError::NotFound(format!("no training {uuid}")));
    }
    Ok(Json(n.progress.participants(&uuid).await?))
}

/// `GET /api/participants`: every participant of every training, each
/// with its latest phase only.
pub async fn summary(State(n): State<NodeApi>) -> Result<Json<Vec<Participant>>, WebError> {
    Ok(Json(n.progress.summary().await?))
}

/// `GET /api/trainings/{uuid}/metrics.csv`: one row per value,
/// `participant,round,phase,metric,value`, rounds in order.
pub async fn metrics_csv(
    State(n): State<NodeApi>,
    Path(uuid): Path<String>,
) -> Result<Response, WebError> {
    let uuid = canonical(&uuid)?;
    let Some(t) = n.trainings.get(&uuid).await? else {
        return Err(WebError::NotFound(format!("no training {uuid}")));
    };
    let participants = n.progress.participants(&uuid).await?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut rows: Vec<(u32, &str, &str, &str, f64)> = Vec::new();
    for p in &participants {
        for ph in &p.lane.phases {
            for m in &ph.metrics {
                rows.push((
                    ph.round,
                    p.name.as_str(),
                    ph.phase.as_str(),
                    &m.name,
                    m.value,
                ));
            }
        }
    }
    rows.sort_by(|a, b| (a.0, a.1, a.2, a.3).cmp(&(b.0, b.1, b.2, b.3)));
    w.write_record(["participant", "round", "phase", "metric", "value"])
        .map_err(WebError::internal)?;
    for (round, who, phase, metric, value) in rows {
        w.write_record([who, &round.to_string(), phase, metric, &value.to_string()])
            .map_err(WebError::internal)?;
    }
    let body = w.into_inner().map_err(WebError::internal)?;
    let file = format!("metrics-{}.csv", t.short_id());
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response())
}
