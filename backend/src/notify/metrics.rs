//! Metrics a local run reports (issue 15): by printing
//! `roundtable-metric {"name": …, "value": …}` lines, or by POSTing the
//! same JSON to the URL in its `ROUNDTABLE_METRICS_URL`. The forms and
//! limits are defined in [`roundtable_shared::progress`].
//!
//! Each run gets a [`RunMetrics`] accumulator: lines and posts add to it,
//! the runner flushes it to the store a few times a second and at the
//! run's end (so a run printing a metric per batch costs a few writes a
//! second, not one per line).
//!
//! **The URL.** One listener per node on `127.0.0.1` (an ephemeral port),
//! started with the first run. A run's URL is
//! `http://127.0.0.1:PORT/runs/<token>/metrics`, the token 128 random bits
//! made for that run and forgotten when it ends, so a URL works only for
//! its own run and only while it runs: another run (or a later process
//! that learnt an old URL) gets 404. A caller that is not on loopback gets
//! 403 (the listener is bound to loopback, so this is a second check, not
//! the only one). Bodies are at most [`POST_LIMIT`] bytes; the listener
//! has the same header and body timeouts and connection caps as the
//! notification endpoint.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use rand_core::{OsRng, RngCore};
use roundtable_shared::progress::{
    parse_metric_line, parse_metric_post, Metric, MetricLine, MAX_METRIC_VALUES_PER_RUN,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::endpoint::error;
use crate::store::trainings::PhaseKey;
use crate::web::server::Limits;

/// Largest body of a POST to a metrics URL.
pub const POST_LIMIT: usize = 16 * 1024;

/// What a run reported and the store has not got yet.
#[derive(Debug, Default)]
struct Pending {
    /// The latest value of each name.
    values: BTreeMap<String, f64>,
    /// Values accepted so far by this run (flushed or not).
    accepted: u32,
    /// Malformed or over-the-limit values not yet counted in the store.
    ignored: u32,
}

/// One run's metrics: fed by its output lines and its posts, drained by
/// the runner.
#[derive(Debug, Clone)]
pub struct RunMetrics {
    pub key: PhaseKey,
    pending: Arc<Mutex<Pending>>,
}

/// What [`RunMetrics::take`] hands the store.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    pub metrics: Vec<Metric>,
    pub ignored: u32,
}

impl RunMetrics {
    pub fn new(key: PhaseKey) -> Self {
        RunMetrics {
            key,
            pending: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads one output line: a metric line adds its value (or counts as
    /// ignored); any other line is left alone.
    pub fn line(&self, line: &str) {
        match parse_metric_line(line) {
            MetricLine::Output => {}
            MetricLine::Metric(m) => self.add(std::iter::once(m)),
            MetricLine::Malformed(e) => {
                tracing::debug!(training = %self.key.training, error = %e, "metric line ignored");
                self.lock().ignored += 1;
            }
        }
    }

    /// Adds values (beyond the run's limit they are counted as ignored).
    pub fn add(&self, metrics: impl IntoIterator<Item = Metric>) {
        let mut p = self.lock();
        for m in metrics {
            if p.accepted >= MAX_METRIC_VALUES_PER_RUN {
                p.ignored += 1;
            } else {
                p.accepted += 1;
                p.values.insert(m.name, m.value);
            }
        }
    }

    /// Counts `n` refused values.
    pub fn ignore(&self, n: u32) {
        let mut p = self.lock();
        p.ignored = p.ignored.saturating_add(n);
    }

    /// What arrived since the last call; `None` if nothing did.
    pub fn take(&self) -> Option<Batch> {
        let mut p = self.lock();
        if p.values.is_empty() && p.ignored == 0 {
            return None;
        }
        let values = std::mem::take(&mut p.values);
        Some(Batch {
            metrics: values
                .into_iter()
                .map(|(name, value)| Metric { name, value })
                .collect(),
            ignored: std::mem::take(&mut p.ignored),
        })
    }
}

/// The node's metrics URL listener and the runs it serves.
#[derive(Clone, Default)]
pub struct MetricsHub {
    runs: Arc<Mutex<HashMap<String, RunMetrics>>>,
    addr: Arc<tokio::sync::OnceCell<Option<SocketAddr>>>,
}

/// A run's registration; its URL stops working when this is dropped.
pub struct Registration {
    hub: MetricsHub,
    token: String,
    pub url: Option<String>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
    }
}

impl MetricsHub {
    /// Registers `run` and returns its URL (`None` if the listener could
    /// not be started: then the run reports by output lines only). Starts
    /// the listener on first use, as a task of `tracker`.
    pub async fn register(
        &self,
        run: RunMetrics,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Registration {
        let addr = *self
            .addr
            .get_or_init(|| self.start(tracker.clone(), shutdown.clone()))
            .await;
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone(), run);
        Registration {
            hub: self.clone(),
            url: addr.map(|a| format!("http://{a}/runs/{token}/metrics")),
            token,
        }
    }

    async fn start(&self, tracker: TaskTracker, shutdown: CancellationToken) -> Option<SocketAddr> {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the metrics listener; runs report by output lines only");
                return None;
            }
        };
        let addr = listener.local_addr().ok()?;
        tracing::debug!(%addr, "metrics listener");
        let limits = Limits {
            max_connections: 32,
            max_per_source: 32,
            ..Limits::notify()
        };
        let app = router(self.clone());
        tracker.spawn(async move {
            if let Err(e) =
                crate::web::server::serve(listener, app, limits, "metrics", shutdown).await
            {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
        Some(addr)
    }
}

/// The metrics URL's routes (a router of its own: nothing else is served
/// on that port).
pub fn router(hub: MetricsHub) -> Router {
    Router::new()
        .route("/runs/{token}/metrics", post(post_metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such URL") })
        .layer(axum::extract::DefaultBodyLimit::max(POST_LIMIT))
        .with_state(hub)
}

async fn post_metrics(
    State(hub): State<MetricsHub>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    if !from.ip().is_loopback() {
        return error(
            StatusCode::FORBIDDEN,
            "metrics are accepted from this machine only",
        );
    }
    let run = hub
        .runs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&token)
        .cloned();
    let Some(run) = run else {
        return error(
            StatusCode::NOT_FOUND,
            "no run in progress has this URL (a URL is valid only for its own run, while it runs)",
        );
    };
    match parse_metric_post(&body) {
        Ok(metrics) => {
            run.add(metrics);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            run.ignore(1);
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use roundtable_shared::training::Phase;
    use tower::ServiceExt;

    fn key() -> PhaseKey {
        PhaseKey {
            training: "t".into(),
            round: 0,
            phase: Phase::Update,
        }
    }

    #[test]
    fn lines_keep_the_last_value_and_count_what_is_ignored() {
        let m = RunMetrics::new(key());
        m.line("epoch 1 loss 0.9");
        m.line(r#"roundtable-metric {"name": "loss", "value": 0.9}"#);
        m.line(r#"roundtable-metric {"name": "loss", "value": 0.5}"#);
        m.line(r#"roundtable-metric {"name": "acc", "value": 1e300}"#);
        m.line("roundtable-metric nonsense");
        let b = m.take().unwrap();
        assert_eq!(
            b.metrics,
            vec![Metric {
                name: "loss".into(),
                value: 0.5
            }]
        );
        assert_eq!(b.ignored, 2);
        assert_eq!(m.take(), None);
    }

    #[test]
    fn a_flood_is_bounded() {
        let m = RunMetrics::new(key());
        for i in 0..5000 {
            m.line(&format!(
                r#"roundtable-metric {{"name": "m{}", "value": {i}}}"#,
                i % 7
            ));
        }
        let b = m.take().unwrap();
        assert_eq!(b.metrics.len(), 7);
        assert_eq!(b.ignored, 5000 - MAX_METRIC_VALUES_PER_RUN);
        // Still bounded after a flush.
        m.line(r#"roundtable-metric {"name": "late", "value": 1}"#);
        assert_eq!(m.take().unwrap().ignored, 1);
    }

    async fn post(hub: &MetricsHub, from: [u8; 4], path: &str, body: &str) -> StatusCode {
        let mut req = Request::post(path)
            .body(Body::from(body.to_owned()))
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((from, 40000))));
        router(hub.clone()).oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn the_url_serves_its_own_run_while_it_runs_and_loopback_only() {
        let hub = MetricsHub::default();
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let run = RunMetrics::new(key());
        let reg = hub.register(run.clone(), &tracker, &stop).await;
        let url = reg.url.clone().unwrap();
        let path = url
            .split_once("/runs/")
            .map(|(_, p)| format!("/runs/{p}"))
            .unwrap();
        let good = r#"{"name": "loss", "value": 0.25}"#;
        assert_eq!(
            post(&hub, [127, 0, 0, 1], &path, good).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(run.take().unwrap().metrics[0].value, 0.25);
        // Not from loopback.
        assert_eq!(
            post(&hub, [10, 1, 2, 3], &path, good).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(run.take(), None);
        // Another run's token (or a made-up one).
        let other = path.replace(&path[6..38], &"0".repeat(32));
        assert_eq!(
            post(&hub, [127, 0, 0, 1], &other, good).await,
            StatusCode::NOT_FOUND
        );
        // A bad body is refused and counted.
        assert_eq!(
            post(&hub, [127, 0, 0, 1], &path, "loss=1").await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(run.take().unwrap().ignored, 1);
        // Over the size limit.
        let big = format!("[{}]", vec![good; 1000].join(","));
        assert_eq!(
            post(&hub, [127, 0, 0, 1], &path, &big).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        // Once the run has ended its URL is dead.
        drop(reg);
        assert_eq!(
            post(&hub, [127, 0, 0, 1], &path, good).await,
            StatusCode::NOT_FOUND
        );
        // And over real TCP, from the run's own machine.
        let run2 = RunMetrics::new(key());
        let reg2 = hub.register(run2.clone(), &tracker, &stop).await;
        let url2 = reg2.url.clone().unwrap();
        assert!(url2.starts_with("http://127.0.0.1:"));
        let addr = url2
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap();
        let path2 = &url2[7 + addr.len()..];
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!(
            "POST {path2} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{good}",
            good.len()
        );
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
        assert_eq!(run2.take().unwrap().metrics.len(), 1);
        stop.cancel();
    }
}
