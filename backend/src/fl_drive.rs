//! `roundtable fl-drive`: plays a DLR-shaped training against notification
//! endpoints, with real HTTP POSTs of the exact bodies the DLR server sends.
//!
//! The sequence is the server's (protocols.md §2): `TRAINING_START`, then
//! per round `UPDATE_ROUND_START(r)` and `MODEL_TEST_ROUND(r+1)`, with
//! `--swag` a `SWAG_ROUND_START(rounds)` after the last round, and finally
//! `TRAINING_FINISHED`. As on the server, one global model UUID names the
//! model throughout.
//!
//! Only `http://` endpoints are supported (no TLS).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand_core::{OsRng, RngCore};
use roundtable_shared::notify::{canonical_uuid, uuid_v4_from_bytes, Notification};
use roundtable_shared::training::Phase;

/// Most rounds a plan may have.
pub const MAX_ROUNDS: u32 = 10_000;

/// Arguments of `roundtable fl-drive`.
#[derive(Debug, clap::Args)]
pub struct FlDriveArgs {
    /// Notification endpoint URL(s), comma-separated (http:// only).
    #[arg(long, value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    /// Update rounds to play (at most 10000).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Seconds between steps (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Play a SWAG round after the last round, as the server does for
    /// trainings with the SWAG uncertainty method.
    #[arg(long)]
    pub swag: bool,
    /// The training's UUID (default: a fresh random one).
    #[arg(long)]
    pub training_id: Option<String>,
    /// Seconds to wait for each endpoint's answer.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
}

/// A fresh random (version 4) UUID.
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    uuid_v4_from_bytes(b)
}

/// The notifications of one training, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub training_uuid: String,
    pub global_model_uuid: String,
    pub steps: Vec<Notification>,
}

impl Plan {
    /// The DLR sequence for `rounds` update rounds. `rounds` above
    /// [`MAX_ROUNDS`] is capped.
    pub fn new(training_uuid: &str, global_model_uuid: &str, rounds: u32, swag: bool) -> Plan {
        let rounds = rounds.min(MAX_ROUNDS);
        let (t, m) = (training_uuid, global_model_uuid);
        let mut steps = vec![Notification::start(t, m)];
        for r in 0..rounds {
            steps.push(Notification::round(t, Phase::Update, r, m));
            steps.push(Notification::round(t, Phase::Test, r + 1, m));
        }
        if swag {
            // protocols.md §2: SWAG rounds follow the last round.
            steps.push(Notification::round(t, Phase::Swag, rounds, m));
        }
        steps.push(Notification::finished(t, m));
        Plan {
            training_uuid: t.to_owned(),
            global_model_uuid: m.to_owned(),
            steps,
        }
    }

    /// [`Plan::new`] with fresh UUIDs.
    pub fn random(rounds: u32, swag: bool) -> Plan {
        Plan::new(&random_uuid(), &random_uuid(), rounds, swag)
    }
}

/// How [`drive`] paces and waits.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    /// Pause between two steps.
    pub interval: Duration,
    /// How long one POST may take.
    pub timeout: Duration,
}

impl Default for DriveOptions {
    fn default() -> Self {
        DriveOptions {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What one endpoint answered to one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The HTTP status.
    Status(u16),
    /// No answer: invalid URL, connection refused, timeout, …
    Error(String),
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Status(s) if (200..300).contains(s))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Status(s) => write!(f, "{s}"),
            Outcome::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// One step and each endpoint's answer (in the order of the endpoints).
#[derive(Debug, Clone)]
pub struct StepReport {
    pub notification: Notification,
    pub outcomes: Vec<Outcome>,
}

/// Per-endpoint totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSummary {
    pub url: String,
    /// 2xx answers.
    pub accepted: usize,
    /// Other statuses.
    pub rejected: usize,
    /// No answer.
    pub errors: usize,
}

impl EndpointSummary {
    pub fn failed(&self) -> bool {
        self.rejected > 0 || self.errors > 0
    }
}

/// Everything a drive saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub steps: Vec<StepReport>,
    pub endpoints: Vec<EndpointSummary>,
}

impl Report {
    /// Every endpoint accepted every step.
    pub fn all_accepted(&self) -> bool {
        !self.endpoints.iter().any(EndpointSummary::failed)
    }

    /// The summary table: one line per endpoint.
    pub fn table(&self) -> String {
        let w = self
            .endpoints
            .iter()
            .map(|e| e.url.len())
            .max()
            .unwrap_or(0)
            .max("endpoint".len());
        let mut out = format!(
            "{:<w$}  {:>5}  {:>7}  {:>6}\n",
            "endpoint", "2xx", "non-2xx", "errors"
        );
        for e in &self.endpoints {
            let _ = writeln!(
                out,
                "{:<w$}  {:>5}  {:>7}  {:>6}",
                e.url, e.accepted, e.rejected, e.errors
            );
        }
        out
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Checks that `url` is something [`drive`] can POST to.
pub fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(s) => return Err(format!("{url}: only http:// is supported, not {s}://")),
        None => return Err(format!("{url}: an http:// URL is needed")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url}: no host"));
    }
    Ok(uri)
}

async fn post(client: &HttpClient, url: &str, body: &str, timeout: Duration) -> Outcome {
    let uri = match check_url(url) {
        Ok(u) => u,
        Err(e) => return Outcome::Error(e),
    };
    let req = match Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
    {
        Ok(r) => r,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            // The legacy client's own message is terse; its source says why.
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            msg
        })?;
        let status = resp.status().as_u16();
        // Read (and drop) the body so the connection can be reused.
        let _ = resp.into_body().collect().await;
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(status)) => Outcome::Status(status),
        Ok(Err(e)) => Outcome::Error(e),
        Err(_) => Outcome::Error(format!("no answer within {timeout:?}")),
    }
}

/// Plays `plan` against every endpoint: each step is POSTed to all
/// endpoints at once, `options.interval` apart. `on_step` sees each step's
/// answers as they complete (for progress output).
pub async fn drive(
    plan: &Plan,
    endpoints: &[String],
    options: &DriveOptions,
    mut on_step: impl FnMut(usize, &StepReport),
) -> Report {
    let client = client();
    let mut report = Report {
        steps: Vec::with_capacity(plan.steps.len()),
        endpoints: endpoints
            .iter()
            .map(|u| EndpointSummary {
                url: u.clone(),
                ..EndpointSummary::default()
            })
            .collect(),
    };
    for (i, n) in plan.steps.iter().enumerate() {
        if i > 0 && !options.interval.is_zero() {
            tokio::time::sleep(options.interval).await;
        }
        let body = n.to_json();
        let outcomes = futures_util::future::join_all(
            endpoints
                .iter()
                .map(|u| post(&client, u, &body, options.timeout)),
        )
        .await;
        for (summary, o) in report.endpoints.iter_mut().zip(&outcomes) {
            match o {
                Outcome::Status(s) if (200..300).contains(s) => summary.accepted += 1,
                Outcome::Status(_) => summary.rejected += 1,
                Outcome::Error(_) => summary.errors += 1,
            }
        }
        let step = StepReport {
            notification: n.clone(),
            outcomes,
        };
        on_step(i, &step);
        report.steps.push(step);
    }
    report
}

fn describe(n: &Notification) -> String {
    match n.round_number() {
        Some(r) => format!("{} round {r}", n.notification_type()),
        None => n.notification_type().to_string(),
    }
}

/// Runs the drive: prints each step's answers and the summary table; fails
/// if any endpoint rejected a step or did not answer.
pub async fn run(args: FlDriveArgs) -> anyhow::Result<()> {
    let endpoints: Vec<String> = args
        .to
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if endpoints.is_empty() {
        bail!("--to needs at least one endpoint URL");
    }
    for u in &endpoints {
        if let Err(e) = check_url(u) {
            bail!("{e}");
        }
    }
    if args.rounds > MAX_ROUNDS {
        bail!("--rounds must be at most {MAX_ROUNDS}");
    }
    let interval = Duration::try_from_secs_f64(args.interval)
        .with_context(|| format!("invalid --interval {}", args.interval))?;
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .with_context(|| format!("invalid --timeout {}", args.timeout))?;
    let training = match &args.training_id {
        Some(t) => {
            canonical_uuid(t).with_context(|| format!("--training-id {t:?} is not a UUID"))?
        }
        None => random_uuid(),
    };
    let plan = Plan::new(&training, &random_uuid(), args.rounds, args.swag);
    println!(
        "training {} (model {}): {} steps to {} endpoint(s)",
        plan.training_uuid,
        plan.global_model_uuid,
        plan.steps.len(),
        endpoints.len()
    );
    let total = plan.steps.len();
    let report = drive(
        &plan,
        &endpoints,
        &DriveOptions { interval, timeout },
        |i, step| {
            let mut line = format!("[{}/{total}] {}:", i + 1, describe(&step.notification));
            for (url, o) in endpoints.iter().zip(&step.outcomes) {
                let _ = write!(line, "  {url} -> {o}");
            }
            println!("{line}");
        },
    )
    .await;
    println!();
    print!("{}", report.table());
    let failed = report.endpoints.iter().filter(|e| e.failed()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} endpoint(s) did not accept every notification",
            endpoints.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use roundtable_shared::notify::NotificationType::*;

    #[test]
    fn plans_follow_the_server_sequence() {
        let sequence = |p: &Plan| -> Vec<_> {
            p.steps
                .iter()
                .map(|n| (n.notification_type(), n.round_number()))
                .collect()
        };
        let p = Plan::new("t", "m", 3, false);
        assert_eq!(
            sequence(&p),
            [
                (TrainingStart, None),
                (UpdateRoundStart, Some(0)),
                (ModelTestRound, Some(1)),
                (UpdateRoundStart, Some(1)),
                (ModelTestRound, Some(2)),
                (UpdateRoundStart, Some(2)),
                (ModelTestRound, Some(3)),
                (TrainingFinished, None),
            ]
        );
        assert_eq!(
            sequence(&Plan::new("t", "m", 1, true)),
            [
                (TrainingStart, None),
                (UpdateRoundStart, Some(0)),
                (ModelTestRound, Some(1)),
                (SwagRoundStart, Some(1)),
                (TrainingFinished, None),
            ]
        );
        assert_eq!(Plan::new("t", "m", 0, false).steps.len(), 2);
        assert!(p.steps.iter().all(|n| n.training_uuid == "t"));
    }

    #[test]
    fn random_plans_have_fresh_valid_uuids() {
        let (a, b) = (Plan::random(1, false), Plan::random(1, false));
        assert_ne!(a.training_uuid, b.training_uuid);
        assert_ne!(a.training_uuid, a.global_model_uuid);
        assert_eq!(
            canonical_uuid(&a.training_uuid).as_deref(),
            Some(a.training_uuid.as_str())
        );
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("http://127.0.0.1:8101/").is_ok());
        assert!(check_url("http://localhost:8101/any/path").is_ok());
        assert!(check_url("https://x:1/")
            .unwrap_err()
            .contains("only http://"));
        assert!(check_url("127.0.0.1:8101").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn table_lists_every_endpoint() {
        let r = Report {
            steps: vec![],
            endpoints: vec![
                EndpointSummary {
                    url: "http://a/".into(),
                    accepted: 3,
                    rejected: 1,
                    errors: 0,
                },
                EndpointSummary {
                    url: "http://b/".into(),
                    accepted: 4,
                    rejected: 0,
                    errors: 0,
                },
            ],
        };
        let t = r.table();
        assert_eq!(t.lines().count(), 3);
        assert!(t
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .eq(["http://a/", "3", "1", "0"]));
        assert!(!r.all_accepted());
    }
}
