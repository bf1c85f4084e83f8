//! `fl-drive` against our own notification endpoint: in-process through
//! [`drive`], and as the `roundtable fl-drive` command.

use std::process::Command;
use std::time::Duration;

use roundtable::events::Events;
use roundtable::fl_drive::{drive, DriveOptions, Outcome, Plan};
use roundtable::notify::{self, Trainings};
use roundtable_shared::training::{Phase, TrainingState};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const BIN: &str = env!("CARGO_BIN_EXE_roundtable");

async fn endpoint(dir: &std::path::Path) -> (String, Trainings, CancellationToken) {
    let stop = CancellationToken::new();
    let trainings = Trainings::open(
        &dir.join("t.db"),
        None,
        Events::default(),
        &TaskTracker::new(),
        stop.clone(),
    )
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", l.local_addr().unwrap());
    tokio::spawn(notify::serve(l, trainings.clone(), stop.clone()));
    (url, trainings, stop)
}

/// A port nothing listens on.
async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/")
}

fn fast() -> DriveOptions {
    DriveOptions {
        interval: Duration::ZERO,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn a_driven_training_arrives_whole_at_two_nodes() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (url1, t1, _s1) = endpoint(d1.path()).await;
    let (url2, t2, _s2) = endpoint(d2.path()).await;
    let plan = Plan::random(3, true);
    let mut steps_seen = 0;
    let report = drive(&plan, &[url1.clone(), url2.clone()], &fast(), |i, _| {
        assert_eq!(i, steps_seen);
        steps_seen += 1;
    })
    .await;
    assert_eq!(steps_seen, plan.steps.len());
    assert!(report.all_accepted(), "{report:?}");
    // The reference statuses, step by step, from both.
    for s in &report.steps {
        let expected = Outcome::Status(s.notification.reference_status());
        assert_eq!(s.outcomes, [expected.clone(), expected]);
    }
    assert_eq!(report.endpoints[0].accepted, plan.steps.len());
    assert_eq!(report.endpoints[1].url, url2);

    for t in [t1, t2] {
        t.settled().await;
        let got = t
            .get(&plan.training_uuid)
            .await
            .unwrap()
            .expect("the training");
        assert_eq!(got.state, TrainingState::Finished);
        assert_eq!(got.current_round, Some(3));
        assert_eq!(
            got.global_model_id.as_deref(),
            Some(plan.global_model_uuid.as_str())
        );
        let rounds: Vec<u32> = got.rounds.iter().map(|r| r.round).collect();
        assert_eq!(rounds, [0, 1, 2, 3]);
        assert_eq!(got.round(0).unwrap().phases.len(), 1);
        for r in 1..=2 {
            let phases: Vec<Phase> = got
                .round(r)
                .unwrap()
                .phases
                .iter()
                .map(|p| p.phase)
                .collect();
            assert_eq!(phases, [Phase::Test, Phase::Update], "round {r}");
        }
        let last: Vec<Phase> = got
            .round(3)
            .unwrap()
            .phases
            .iter()
            .map(|p| p.phase)
            .collect();
        assert_eq!(last, [Phase::Test, Phase::Swag]);
    }
}

#[tokio::test]
async fn a_dead_endpoint_is_counted_as_errors_without_stopping_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (url, trainings, _s) = endpoint(dir.path()).await;
    let dead = dead_url().await;
    let plan = Plan::random(1, false);
    let report = drive(&plan, &[dead.clone(), url], &fast(), |_, _| {}).await;
    assert!(!report.all_accepted());
    let n = plan.steps.len();
    assert_eq!(
        (report.endpoints[0].errors, report.endpoints[0].accepted),
        (n, 0)
    );
    assert_eq!(
        (report.endpoints[1].errors, report.endpoints[1].accepted),
        (0, n)
    );
    assert!(matches!(&report.steps[0].outcomes[0], Outcome::Error(e) if !e.is_empty()));
    trainings.settled().await;
    let t = trainings.get(&plan.training_uuid).await.unwrap().unwrap();
    assert_eq!(t.state, TrainingState::Finished);
}

#[tokio::test]
async fn the_command_reports_status_codes_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (url, trainings, _s) = endpoint(dir.path()).await;
    let training = "0b3e8a59-2c4d-4f60-a1b2-c3d4e5f60718";
    let out = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args([
                    "fl-drive",
                    "--to",
                    &url,
                    "--rounds",
                    "2",
                    "--interval",
                    "0.01",
                ])
                .args(["--training-id", training])
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<&str> = stdout.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(steps.len(), 6, "{stdout}");
    assert!(
        steps[0].starts_with("[1/6] TRAINING_START:")
            && steps[0].ends_with(&format!("{url} -> 200"))
    );
    assert!(steps[1].contains("UPDATE_ROUND_START round 0") && steps[1].ends_with("-> 202"));
    assert!(steps[2].contains("MODEL_TEST_ROUND round 1") && steps[2].ends_with("-> 202"));
    assert!(steps[5].contains("TRAINING_FINISHED") && steps[5].ends_with("-> 200"));
    // The summary table: 6 accepted, none rejected, no errors.
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&url))
        .expect("summary row");
    assert!(
        row.split_whitespace().eq([url.as_str(), "6", "0", "0"]),
        "{row}"
    );

    trainings.settled().await;
    let t = trainings
        .get(training)
        .await
        .unwrap()
        .expect("the named training");
    assert_eq!(t.state, TrainingState::Finished);
    assert_eq!(t.phases().count(), 4);
}

#[tokio::test]
async fn the_command_fails_against_a_dead_port() {
    let dead = dead_url().await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "fl-drive",
                "--to",
                &dead,
                "--rounds",
                "1",
                "--interval",
                "0",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("-> error:"), "{stdout}");
    assert!(
        stderr.contains("did not accept every notification"),
        "{stderr}"
    );
    let row = stdout.lines().last().unwrap();
    assert!(row.split_whitespace().skip(1).eq(["0", "0", "4"]), "{row}");
}

#[tokio::test]
async fn the_command_refuses_bad_arguments() {
    for args in [
        vec!["fl-drive", "--to", "https://127.0.0.1:1/"],
        vec![
            "fl-drive",
            "--to",
            "http://127.0.0.1:1/",
            "--training-id",
            "nope",
        ],
        vec![
            "fl-drive",
            "--to",
            "http://127.0.0.1:1/",
            "--interval",
            "-1",
        ],
        vec![
            "fl-drive",
            "--to",
            "http://127.0.0.1:1/",
            "--rounds",
            "10001",
        ],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
        assert!(out.stdout.is_empty(), "{args:?} sends nothing");
    }
}
