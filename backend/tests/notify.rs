//! The DLR notification endpoint over real HTTP on 127.0.0.1, the trainings
//! it builds, and the runs of the training command.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use roundtable::events::Events;
use roundtable::notify::{self, NotifyConfig, Trainings, BODY_LIMIT};
use roundtable::store::trainings::INTERRUPTED_LINE;
use roundtable_shared::api::Event;
use roundtable_shared::notify::Notification;
use roundtable_shared::training::{Phase, RunStatus, Training, TrainingState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const T: &str = "6f1c1f9e-5b0a-4c39-9d7e-2a8e4f6b1c01";
const T2: &str = "6f1c1f9e-5b0a-4c39-9d7e-2a8e4f6b1c02";
const M: &str = "a4b2c3d4-1111-4222-8333-944455556666";

struct Node {
    url: String,
    trainings: Trainings,
    events: Events,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(config: NotifyConfig) -> Node {
    let events = Events::new(65_536);
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let trainings = Trainings::with_config(config, events.clone(), &tracker, stop.clone()).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    tracker.spawn(notify::serve(l, trainings.clone(), stop.clone()));
    Node {
        url,
        trainings,
        events,
        stop,
        tracker,
    }
}

async fn monitor(dir: &Path) -> Node {
    start(NotifyConfig::new(dir.join("t.db"))).await
}

struct Answer {
    status: u16,
    content_type: Option<String>,
    allow: Option<String>,
    body: String,
}

impl Answer {
    fn error(&self) -> String {
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "error bodies are JSON"
        );
        let v: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        v["error"].as_str().expect("an error message").to_owned()
    }
}

async fn request(method: Method, url: &str, body: &str, content_type: Option<&str>) -> Answer {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = Request::builder().method(method).uri(url);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (content_type, allow) = (header("content-type"), header("allow"));
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        allow,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn post(url: &str, body: &str) -> Answer {
    request(Method::POST, url, body, Some("application/json")).await
}

async fn send(node: &Node, n: &Notification) -> u16 {
    post(&node.url, &n.to_json()).await.status
}

fn update(round: u32) -> Notification {
    Notification::round(T, Phase::Update, round, M)
}

fn test_round(round: u32) -> Notification {
    Notification::round(T, Phase::Test, round, M)
}

/// Waits for the first event `f` accepts.
async fn wait_for<R>(
    rx: &mut broadcast::Receiver<Event>,
    mut f: impl FnMut(&Event) -> Option<R>,
) -> R {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let e = rx.recv().await.expect("event stream");
            if let Some(r) = f(&e) {
                return r;
            }
        }
    })
    .await
    .expect("the awaited event")
}

/// Waits until training `T` satisfies `f` (checked on each Training event).
async fn wait_training(
    rx: &mut broadcast::Receiver<Event>,
    f: impl Fn(&Training) -> bool,
) -> Training {
    wait_for(rx, |e| match e {
        Event::Training { training } if training.uuid == T && f(training) => Some(training.clone()),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn the_five_types_get_the_reference_statuses_and_build_the_training() {
    let dir = tempfile::tempdir().unwrap();
    let node = monitor(dir.path()).await;
    let mut rx = node.events.subscribe();

    let start = post(&node.url, &Notification::start(T, M).to_json()).await;
    assert_eq!(start.status, 200);
    assert_eq!(start.body, "", "the reference answers without a body");
    assert_eq!(send(&node, &update(0)).await, 202);
    assert_eq!(send(&node, &test_round(1)).await, 202);
    assert_eq!(
        send(&node, &Notification::round(T, Phase::Swag, 1, M)).await,
        202
    );
    assert_eq!(send(&node, &Notification::finished(T, M)).await, 200);
    assert_eq!(send(&node, &Notification::client_removed(T2)).await, 200);

    node.trainings.settled().await;
    let t = node.trainings.get(T).await.unwrap().expect("training T");
    assert_eq!(t.state, TrainingState::Finished);
    assert_eq!(t.current_round, Some(1));
    assert!(t.finished_at.is_some());
    assert_eq!(t.global_model_id.as_deref(), Some(M));
    let phases: Vec<_> = t.phases().map(|(r, p)| (r, p.phase)).collect();
    assert_eq!(
        phases,
        [(0, Phase::Update), (1, Phase::Test), (1, Phase::Swag)]
    );
    assert!(t.phases().all(|(_, p)| p.model_id == M && p.run.is_none()));

    let removed = node.trainings.get(T2).await.unwrap().unwrap();
    assert_eq!(removed.state, TrainingState::Removed);
    let all = node.trainings.list().await.unwrap();
    assert_eq!(all.len(), 2);

    // Each change was published, ending with the finished state.
    let last = wait_training(&mut rx, |t| t.state == TrainingState::Finished).await;
    assert_eq!(last, t);
}

#[tokio::test]
async fn bad_input_gets_a_json_400_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = monitor(dir.path()).await;
    let url = &node.url;

    let unknown = post(
        url,
        &format!(
            r#"{{"notification_type": "MODEL_DELETED", "training_uuid": "{T}", "body": {{}}}}"#
        ),
    )
    .await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.error().contains("unknown notification_type"),
        "{}",
        unknown.body
    );

    let malformed = post(url, r#"{"notification_type": "TRAINING_START", "#).await;
    assert_eq!(malformed.status, 400);
    assert!(
        malformed.error().contains("malformed"),
        "{}",
        malformed.body
    );

    let empty = post(url, "").await;
    assert_eq!(empty.status, 400);
    empty.error();

    let missing_round = post(
        url,
        &format!(
            r#"{{"notification_type": "UPDATE_ROUND_START", "training_uuid": "{T}", "body": {{"global_model_uuid": "{M}"}}}}"#
        ),
    )
    .await;
    assert_eq!(missing_round.status, 400);
    assert!(missing_round.error().contains("body.round"));

    let missing_body = post(
        url,
        &format!(r#"{{"notification_type": "TRAINING_START", "training_uuid": "{T}"}}"#),
    )
    .await;
    assert_eq!(missing_body.status, 400);
    assert!(missing_body.error().contains("`body`"));

    let negative = post(
        url,
        &format!(
            r#"{{"notification_type": "MODEL_TEST_ROUND", "training_uuid": "{T}", "body": {{"round": -1, "global_model_uuid": "{M}"}}}}"#
        ),
    )
    .await;
    assert_eq!(negative.status, 400);
    assert!(negative.error().contains("body.round"));

    let bad_uuid = post(
        url,
        &format!(r#"{{"notification_type": "TRAINING_START", "training_uuid": "42", "body": {{"global_model_uuid": "{M}"}}}}"#),
    )
    .await;
    assert_eq!(bad_uuid.status, 400);
    assert!(bad_uuid.error().contains("training_uuid"));

    node.trainings.settled().await;
    assert!(node.trainings.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn any_path_and_a_missing_content_type_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let node = monitor(dir.path()).await;
    let a = request(
        Method::POST,
        &format!("{}some/registered/path?x=1", node.url),
        &update(0).to_json(),
        None,
    )
    .await;
    assert_eq!(a.status, 202);
    node.trainings.settled().await;
    assert!(node.trainings.get(T).await.unwrap().is_some());
}

#[tokio::test]
async fn other_methods_get_405() {
    let dir = tempfile::tempdir().unwrap();
    let node = monitor(dir.path()).await;
    for m in [Method::GET, Method::PUT, Method::DELETE] {
        let a = request(m.clone(), &node.url, "", None).await;
        assert_eq!(a.status, 405, "{m}");
        assert_eq!(a.allow.as_deref(), Some("POST"));
        assert!(a.error().contains(m.as_str()));
    }
}

#[tokio::test]
async fn oversize_bodies_get_413() {
    let dir = tempfile::tempdir().unwrap();
    let node = monitor(dir.path()).await;
    // Valid JSON, padded past the limit.
    let big = format!(
        r#"{{"notification_type": "TRAINING_START", "training_uuid": "{T}", "body": {{"global_model_uuid": "{M}"}}, "pad": "{}"}}"#,
        "x".repeat(BODY_LIMIT)
    );
    let a = post(&node.url, &big).await;
    assert_eq!(a.status, 413);
    assert!(a.error().contains("exceeds"));

    // Chunked, with no Content-Length to refuse it up front.
    let addr = node.url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let chunk = "y".repeat(8192);
    for _ in 0..(BODY_LIMIT / 8192 + 2) {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("0\r\n\r\n");
    // The server may answer and close before reading everything.
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");

    // A body just under the limit is fine.
    let pad = 2 * BODY_LIMIT - 1 - big.len();
    let ok = format!(
        r#"{{"notification_type": "TRAINING_START", "training_uuid": "{T}", "body": {{"global_model_uuid": "{M}"}}, "pad": "{}"}}"#,
        "x".repeat(pad)
    );
    assert_eq!(ok.len(), BODY_LIMIT - 1);
    assert_eq!(post(&node.url, &ok).await.status, 200);
}

#[tokio::test]
async fn duplicates_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let node = monitor(dir.path()).await;
    for _ in 0..3 {
        assert_eq!(send(&node, &Notification::start(T, M)).await, 200);
        assert_eq!(send(&node, &update(0)).await, 202);
    }
    node.trainings.settled().await;
    let t = node.trainings.get(T).await.unwrap().unwrap();
    assert_eq!(t.phases().count(), 1);
    assert_eq!(t.state, TrainingState::InRound);
}

#[tokio::test]
async fn out_of_order_start_does_not_regress() {
    let dir = tempfile::tempdir().unwrap();
    let node = monitor(dir.path()).await;
    let m0 = "a4b2c3d4-1111-4222-8333-000000000000";
    assert_eq!(send(&node, &update(0)).await, 202);
    node.trainings.settled().await;
    let early = node
        .trainings
        .get(T)
        .await
        .unwrap()
        .expect("created by UPDATE");
    assert_eq!(early.state, TrainingState::InRound);
    assert_eq!(early.current_round, Some(0));
    assert_eq!(early.global_model_id, None);

    assert_eq!(send(&node, &Notification::start(T, m0)).await, 200);
    // A late UPDATE(0) after TEST(1) does not move the training back either.
    assert_eq!(send(&node, &test_round(1)).await, 202);
    assert_eq!(send(&node, &update(0)).await, 202);
    node.trainings.settled().await;
    let t = node.trainings.get(T).await.unwrap().unwrap();
    assert_eq!(t.state, TrainingState::Testing);
    assert_eq!(t.current_round, Some(1));
    assert_eq!(t.global_model_id.as_deref(), Some(m0));
    assert_eq!(t.started_at, early.started_at);
    assert_eq!(t.phases().count(), 2);
}

#[tokio::test]
async fn state_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let node = monitor(dir.path()).await;
        for n in [Notification::start(T, M), update(0), test_round(1)] {
            send(&node, &n).await;
        }
        node.trainings.settled().await;
        node.trainings.get(T).await.unwrap().unwrap()
    };
    let node = monitor(dir.path()).await;
    assert_eq!(node.trainings.get(T).await.unwrap(), Some(before.clone()));
    // And it carries on from there.
    assert_eq!(send(&node, &update(1)).await, 202);
    node.trainings.settled().await;
    let t = node.trainings.get(T).await.unwrap().unwrap();
    assert_eq!(t.current_round, Some(1));
    assert_eq!(t.state, TrainingState::InRound);
    assert_eq!(t.phases().count(), 3);
}

/// Writes a training script that logs its arguments to `calls.log` (one
/// line per run), prints `lines` numbered lines (odd ones to stderr), and
/// exits with `code`.
fn script(dir: &Path, lines: u32, code: i32) -> Vec<String> {
    let path = dir.join("train.sh");
    std::fs::write(
        &path,
        format!(
            r#"echo "$@" >> "{log}"
echo "args: $@"
i=1
while [ $i -le {lines} ]; do
  if [ $((i % 2)) -eq 1 ]; then echo "line $i" >&2; else echo "line $i"; fi
  i=$((i + 1))
done
exit {code}
"#,
            log = dir.join("calls.log").display()
        ),
    )
    .unwrap();
    vec!["sh".into(), path.display().to_string()]
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn with_cmd(dir: &Path, cmd: Vec<String>) -> NotifyConfig {
    NotifyConfig {
        train_cmd: Some(cmd),
        ..NotifyConfig::new(dir.join("t.db"))
    }
}

#[tokio::test]
async fn a_run_is_recorded_once_with_its_exit_code_and_output_tail() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(with_cmd(dir.path(), script(dir.path(), 60, 3))).await;
    let mut rx = node.events.subscribe();

    assert_eq!(send(&node, &Notification::start(T, M)).await, 200);
    for _ in 0..3 {
        assert_eq!(send(&node, &update(0)).await, 202);
    }
    let running = wait_training(&mut rx, |t| {
        t.phase(0, Phase::Update).is_some_and(|p| p.run.is_some())
    })
    .await;
    let run = running
        .phase(0, Phase::Update)
        .unwrap()
        .run
        .clone()
        .unwrap();
    assert_eq!(run.status, RunStatus::Running, "the start is published");

    let mut seen = Vec::new();
    let done = wait_for(&mut rx, |e| match e {
        Event::RunOutput {
            training,
            round,
            phase,
            line,
        } => {
            assert_eq!((training.as_str(), *round, *phase), (T, 0, Phase::Update));
            seen.push(line.clone());
            None
        }
        Event::Training { training }
            if training
                .phase(0, Phase::Update)
                .and_then(|p| p.run.as_ref())
                .is_some_and(|r| r.status != RunStatus::Running) =>
        {
            Some(training.clone())
        }
        _ => None,
    })
    .await;
    let run = done.phase(0, Phase::Update).unwrap().run.clone().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_code, Some(3));
    assert!(run.ended_at.unwrap() >= run.started_at);
    assert_eq!(run.output_tail.len(), 50);
    // stdout and stderr share one pipe, so the order is the script's.
    let expected: Vec<String> = (11..=60).map(|i| format!("line {i}")).collect();
    assert_eq!(run.output_tail, expected);
    // Every line was streamed, stdout and stderr alike.
    assert_eq!(seen.len(), 61);
    for i in [1, 2, 59, 60] {
        assert!(seen.contains(&format!("line {i}")), "line {i}");
    }
    assert!(seen.contains(&format!(
        "args: train --training-id {T} --round 0 --model-id {M}"
    )));

    // More duplicates, even after the run: still one run.
    assert_eq!(send(&node, &update(0)).await, 202);
    node.trainings.settled().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        calls(dir.path()),
        [format!("train --training-id {T} --round 0 --model-id {M}")]
    );
    assert_eq!(node.trainings.get(T).await.unwrap().unwrap(), done);
}

#[tokio::test]
async fn every_round_phase_runs_its_sub_command() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(with_cmd(dir.path(), script(dir.path(), 1, 0))).await;
    let mut rx = node.events.subscribe();
    for n in [
        Notification::start(T, M),
        update(0),
        test_round(1),
        Notification::round(T, Phase::Swag, 1, M),
        Notification::finished(T, M),
    ] {
        send(&node, &n).await;
    }
    let t = wait_training(&mut rx, |t| {
        t.phases().count() == 3
            && t.phases().all(|(_, p)| {
                p.run
                    .as_ref()
                    .is_some_and(|r| r.status == RunStatus::Succeeded)
            })
    })
    .await;
    assert!(t
        .phases()
        .all(|(_, p)| p.run.as_ref().unwrap().exit_code == Some(0)));
    let mut c = calls(dir.path());
    c.sort();
    assert_eq!(
        c,
        [
            format!("swag --training-id {T} --round 1 --model-id {M}"),
            format!("test --training-id {T} --round 1 --model-id {M}"),
            format!("train --training-id {T} --round 0 --model-id {M}"),
        ]
    );
    // No run for a phase that arrives after FINISHED.
    send(&node, &update(1)).await;
    node.trainings.settled().await;
    let t = node.trainings.get(T).await.unwrap().unwrap();
    assert!(t.phase(1, Phase::Update).unwrap().run.is_none());
}

#[tokio::test]
async fn killed_and_unstartable_commands_are_failures() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("die.sh");
    std::fs::write(&path, "echo dying\nkill -9 $$\n").unwrap();
    let node = start(with_cmd(
        dir.path(),
        vec!["sh".into(), path.display().to_string()],
    ))
    .await;
    let mut rx = node.events.subscribe();
    send(&node, &update(0)).await;
    let t = wait_training(&mut rx, |t| {
        t.phase(0, Phase::Update)
            .and_then(|p| p.run.as_ref())
            .is_some_and(|r| r.status != RunStatus::Running)
    })
    .await;
    let run = t.phase(0, Phase::Update).unwrap().run.clone().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_code, None);
    assert_eq!(
        run.output_tail,
        ["dying", "[roundtable] killed by signal 9"]
    );

    let dir2 = tempfile::tempdir().unwrap();
    let node = start(with_cmd(
        dir2.path(),
        vec![dir2.path().join("missing").display().to_string()],
    ))
    .await;
    let mut rx = node.events.subscribe();
    send(&node, &update(0)).await;
    let t = wait_training(&mut rx, |t| {
        t.phase(0, Phase::Update)
            .and_then(|p| p.run.as_ref())
            .is_some_and(|r| r.status != RunStatus::Running)
    })
    .await;
    let run = t.phase(0, Phase::Update).unwrap().run.clone().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.output_tail[0].contains("cannot start"),
        "{:?}",
        run.output_tail
    );
}

/// A node stopped during a run: on restart the run is failed, not redone.
#[test]
fn a_run_cut_short_by_a_restart_is_failed_and_never_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.sh");
    let log = dir.path().join("calls.log");
    std::fs::write(
        &path,
        format!(
            "echo \"$@\" >> \"{}\"\necho started\nexec sleep 30\n",
            log.display()
        ),
    )
    .unwrap();
    let cmd = vec!["sh".to_owned(), path.display().to_string()];

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = start(with_cmd(dir.path(), cmd.clone())).await;
        let mut rx = node.events.subscribe();
        send(&node, &update(0)).await;
        wait_for(&mut rx, |e| {
            matches!(e, Event::RunOutput { line, .. } if line == "started").then_some(())
        })
        .await;
        drop(node);
    });
    // Dropping the runtime drops the run's task, which kills the process.
    rt.shutdown_timeout(Duration::from_secs(5));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = start(with_cmd(dir.path(), cmd)).await;
        let t = node.trainings.get(T).await.unwrap().unwrap();
        let run = t.phase(0, Phase::Update).unwrap().run.clone().unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(
            run.output_tail.last().map(String::as_str),
            Some(INTERRUPTED_LINE)
        );
        // The DLR server retries: the duplicate starts nothing.
        assert_eq!(send(&node, &update(0)).await, 202);
        node.trainings.settled().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(calls(dir.path()).len(), 1);
    });
}

#[tokio::test]
async fn commands_are_split_like_a_shell_would() {
    assert_eq!(
        notify::parse_command("python 'src/main file.py' --x \"a b\"").unwrap(),
        ["python", "src/main file.py", "--x", "a b"]
    );
    assert!(notify::parse_command("   ").is_err());
    assert!(notify::parse_command("python 'unclosed").is_err());
    let dir = tempfile::tempdir().unwrap();
    assert!(Trainings::open(
        &dir.path().join("t.db"),
        Some(vec![]),
        Events::default(),
        &TaskTracker::new(),
        CancellationToken::new()
    )
    .is_err());
}

/// Finding 12: a forged round far beyond the training's is refused at once
/// with a JSON 400 and changes nothing; real sequences, however fast, pass.
#[tokio::test]
async fn a_round_far_ahead_is_refused_with_a_json_400() {
    let dir = tempfile::tempdir().unwrap();
    let node = monitor(dir.path()).await;
    assert_eq!(send(&node, &update(0)).await, 202);
    let far = post(&node.url, &update(6).to_json()).await;
    assert_eq!(far.status, 400, "{}", far.body);
    assert!(far.error().contains("round 6"), "{}", far.body);
    let huge = post(&node.url, &test_round(u32::MAX).to_json()).await;
    assert_eq!(huge.status, 400);
    // An unknown training starts at round 0: a forged round 6 creates nothing.
    let new = post(
        &node.url,
        &Notification::round(T2, Phase::Update, 6, M).to_json(),
    )
    .await;
    assert_eq!(new.status, 400);
    new.error();

    // UPDATE(r) then TEST(r + 1), sent as fast as the endpoint answers:
    // the check never lags behind the queue.
    for r in 0..12 {
        assert_eq!(send(&node, &update(r)).await, 202, "update {r}");
        assert_eq!(send(&node, &test_round(r + 1)).await, 202, "test {}", r + 1);
    }
    // Exactly the jump is fine; one more is not.
    assert_eq!(send(&node, &update(17)).await, 202);
    assert_eq!(send(&node, &update(23)).await, 400);
    node.trainings.settled().await;
    let t = node.trainings.get(T).await.unwrap().unwrap();
    assert_eq!(t.current_round, Some(17));
    assert_eq!(t.phases().count(), 25);
    assert!(t.round(6).unwrap().phase(Phase::Update).is_some());
    assert!(t.round(23).is_none() && t.round(u32::MAX).is_none());
    assert_eq!(node.trainings.get(T2).await.unwrap(), None);
}

/// Finding 12: a training's phases run one at a time, and a flood of them
/// leaves one process and a short queue; the oldest waiting runs are
/// recorded as skipped.
#[tokio::test]
async fn a_training_runs_one_command_at_a_time_and_skips_what_piles_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gated.sh");
    let log = dir.path().join("runs.log");
    let go = dir.path().join("go");
    std::fs::write(
        &path,
        format!(
            "echo \"start $1 $5\" >> \"{log}\"\nwhile [ ! -e \"{go}\" ]; do sleep 0.02; done\necho \"end $1 $5\" >> \"{log}\"\n",
            log = log.display(),
            go = go.display()
        ),
    )
    .unwrap();
    let node = start(NotifyConfig {
        // Room for every run at once: only the per-training rule holds them.
        max_concurrent_runs: 8,
        ..with_cmd(dir.path(), vec!["sh".into(), path.display().to_string()])
    })
    .await;
    let mut rx = node.events.subscribe();
    for n in [
        update(0),
        test_round(1),
        update(1),
        test_round(2),
        update(2),
    ] {
        assert_eq!(send(&node, &n).await, 202);
    }
    node.trainings.settled().await;
    std::fs::write(&go, "").unwrap();
    let t = wait_training(&mut rx, |t| {
        t.phases().count() == 5
            && t.phases().all(|(_, p)| {
                p.run
                    .as_ref()
                    .is_some_and(|r| r.status != RunStatus::Running)
            })
    })
    .await;
    let status = |r, p| t.phase(r, p).unwrap().run.clone().unwrap();
    for (r, p) in [(0, Phase::Update), (2, Phase::Test), (2, Phase::Update)] {
        assert_eq!(status(r, p).status, RunStatus::Succeeded, "{r} {p}");
    }
    for (r, p) in [(1, Phase::Test), (1, Phase::Update)] {
        let run = status(r, p);
        assert_eq!(run.status, RunStatus::Skipped, "{r} {p}");
        assert_eq!(run.output_tail, [notify::runner::SKIPPED_LINE]);
        assert_eq!(run.exit_code, None);
    }
    // Never two at once: each run ended before the next started.
    let runs: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        runs,
        [
            "start train 0",
            "end train 0",
            "start test 2",
            "end test 2",
            "start train 2",
            "end train 2"
        ]
    );
}

/// Finding 12: forged trainings filling the limit give way to new ones:
/// finished ones at once, live ones once stale, the least recently updated
/// first.
#[tokio::test]
async fn a_full_table_of_forged_trainings_does_not_lock_out_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(NotifyConfig {
        max_trainings: 2,
        stale_after: Duration::from_millis(300),
        ..NotifyConfig::new(dir.path().join("t.db"))
    })
    .await;
    let mut events = node.events.subscribe();
    // UUIDs below T's, so that a tie in update time still evicts them first.
    let done = "00000000-0000-4000-8000-000000000001";
    let forged = "00000000-0000-4000-8000-000000000002";
    for n in [
        Notification::start(done, M),
        Notification::finished(done, M),
        Notification::round(forged, Phase::Update, 0, M),
    ] {
        assert!(send(&node, &n).await < 300);
    }
    node.trainings.settled().await;
    // A finished training makes room at once.
    assert_eq!(send(&node, &Notification::start(T, M)).await, 200);
    node.trainings.settled().await;
    assert!(node.trainings.get(T).await.unwrap().is_some());
    assert_eq!(node.trainings.get(done).await.unwrap(), None);
    // Open dashboards are told to forget it.
    let mut gone = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let Event::TrainingGone { uuid } = ev {
            gone.push(uuid);
        }
    }
    assert_eq!(gone, [done]);
    // Fresh live ones do not...
    assert_eq!(send(&node, &Notification::start(T2, M)).await, 200);
    node.trainings.settled().await;
    assert_eq!(node.trainings.get(T2).await.unwrap(), None);
    // ... until they are stale; then the least recently updated goes.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(send(&node, &Notification::start(T2, M)).await, 200);
    node.trainings.settled().await;
    let kept: Vec<String> = node
        .trainings
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.uuid)
        .collect();
    assert_eq!(kept, [T, T2]);
}

/// Stopping the service (as `Node::stop` does) waits for the runs: a
/// running command is killed and recorded as interrupted, output kept.
#[tokio::test]
async fn stopping_kills_a_running_command_and_records_it_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.sh");
    let pid = dir.path().join("pid");
    std::fs::write(
        &path,
        format!(
            "echo $$ > \"{}\"\necho started\nexec sleep 30\n",
            pid.display()
        ),
    )
    .unwrap();
    let db = dir.path().join("t.db");
    let node = start(with_cmd(
        dir.path(),
        vec!["sh".into(), path.display().to_string()],
    ))
    .await;
    let mut rx = node.events.subscribe();
    send(&node, &update(0)).await;
    wait_for(&mut rx, |e| {
        matches!(e, Event::RunOutput { line, .. } if line == "started").then_some(())
    })
    .await;
    let pid = std::fs::read_to_string(&pid).unwrap().trim().to_owned();

    node.stop.cancel();
    node.tracker.close();
    tokio::time::timeout(Duration::from_secs(10), node.tracker.wait())
        .await
        .expect("the worker and the run stop");
    let alive = std::process::Command::new("kill")
        .args(["-0", &pid])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!alive.success(), "the command was killed");

    // Recorded by the stop itself (a restart's recovery would have kept no
    // output).
    let again = start(NotifyConfig::new(db)).await;
    let t = again.trainings.get(T).await.unwrap().unwrap();
    let run = t.phase(0, Phase::Update).unwrap().run.clone().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.output_tail, ["started", INTERRUPTED_LINE]);
    assert!(run.ended_at.is_some());
}

/// Finding 11: the training command does not inherit the node's secrets.
/// A real `roundtable node` with ROUNDTABLE_PASSWORD and ROUNDTABLE_TOKEN
/// set runs `sh -c env` for a real notification; its recorded output has
/// the environment without them.
#[tokio::test]
async fn the_training_command_gets_no_roundtable_secrets() {
    const PASSWORD: &str = "pw-7f3a9c1e5b2d4f60";
    const TOKEN: &str = "tok-0d9e8f7a6b5c4d3e2f1a";
    let dir = tempfile::tempdir().unwrap();
    // A directory nobody listens on: the node keeps retrying it, which is
    // all this test needs.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let directory = dead.local_addr().unwrap().to_string();
    drop(dead);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_roundtable"))
            .args(["node", "--name", "alice", "--directory", &directory])
            .args(["--chat", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(["--notify", "127.0.0.1:0", "--train-cmd", "sh -c env"])
            .arg("--data")
            .arg(dir.path().join("alice"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ROUNDTABLE_PASSWORD", PASSWORD)
            .env("ROUNDTABLE_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = child.0.stdout.take().unwrap();
    let (http, notify_url) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(out).lines();
        let (mut http, mut notify_url) = (None, None);
        while http.is_none() || notify_url.is_none() {
            let line = lines
                .next()
                .expect("the node prints its addresses")
                .unwrap();
            let line = line.trim();
            if let Some(a) = line.strip_prefix("dashboard  http://") {
                http = Some(a.to_owned());
            }
            if let Some(u) = line.strip_prefix("notify     ") {
                notify_url = Some(u.to_owned());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        (http.unwrap(), notify_url.unwrap())
    })
    .await
    .unwrap();

    assert_eq!(post(&notify_url, &update(0).to_json()).await.status, 202);
    let url = format!("http://{http}/api/trainings/{T}?token={TOKEN}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let run = loop {
        let a = request(Method::GET, &url, "", None).await;
        if a.status == 200 {
            let t: Training = serde_json::from_str(&a.body).unwrap();
            if let Some(run) = t.phase(0, Phase::Update).and_then(|p| p.run.clone()) {
                if run.status != RunStatus::Running {
                    break run;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run ends: {} {}",
            a.status,
            a.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.output_tail);
    assert!(
        run.output_tail.iter().any(|l| l.starts_with("PATH=")),
        "the rest of the environment is there: {:?}",
        run.output_tail
    );
    // The one ROUNDTABLE_ variable a run gets is its own metrics URL,
    // which is not a secret of the node's.
    let own_url = |l: &str| l.starts_with("ROUNDTABLE_METRICS_URL=http://127.0.0.1:");
    assert!(
        run.output_tail.iter().any(|l| own_url(l)),
        "the run's metrics URL: {:?}",
        run.output_tail
    );
    for line in &run.output_tail {
        assert!(
            !line.contains(PASSWORD)
                && !line.contains(TOKEN)
                && (!line.starts_with("ROUNDTABLE_") || own_url(line)),
            "a secret reached the training command: {line}"
        );
    }
}
