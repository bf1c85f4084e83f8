//! End to end, a training as its participants watch it (issue 15: "the
//! training page shows three lanes and a metric chart that grows as rounds
//! pass"): real `roundtable directory` and three `roundtable node`
//! processes (carol's training step is the slow one), a training driven
//! through their notification endpoints by `fl-drive`, and alice's
//! dashboard in headless Chromium. Screenshots go to
//! `target/e2e/training-*.png`.
//!
//! Run by `cargo xtask test`, or by hand after `trunk build --release`:
//! `cargo test -p roundtable --test training_dashboard -- --ignored --test-threads=1`.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use common::browser::{artifacts_dir, browser, Chromedriver};
use common::e2e::{attr, directory, screenshot, until, wait_for, wait_text, Node};
use common::get_json;
use roundtable::fl_drive::{drive, DriveOptions, Plan};
use roundtable_shared::api::PeerInfo;
use roundtable_shared::progress::Participant;

/// A training step that takes `secs` and reports a loss and an accuracy
/// that depend on the round.
fn script(dir: &Path, name: &str, secs: &str, skill: u32) -> String {
    let path = dir.join(format!("train-{name}.sh"));
    std::fs::write(
        &path,
        format!(
            r#"r=$5
sleep {secs}
case "$1" in
  train) echo "roundtable-metric {{\"name\": \"loss\", \"value\": 0.$((90 - r * 8 - {skill}))}}" ;;
  test) echo "roundtable-metric {{\"name\": \"accuracy\", \"value\": 0.$((40 + r * 8 + {skill}))}}" ;;
esac
"#
        ),
    )
    .unwrap();
    format!("sh {}", path.display())
}

async fn points(c: &fantoccini::Client, css: &str) -> Result<u32> {
    Ok(attr(c, css, "data-points")
        .await?
        .context("data-points")?
        .parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and a built dashboard; run by cargo xtask test"]
async fn the_training_page_shows_three_lanes_and_growing_metric_charts() {
    let data = tempfile::tempdir().unwrap();
    let (_dir, dir) = directory(data.path());
    let start = |name: &str, secs: &str, skill: u32| {
        let cmd = script(data.path(), name, secs, skill);
        Node::start_with(
            name,
            dir,
            data.path(),
            "127.0.0.1:0",
            &format!("training-{name}"),
            &["--train-cmd", &cmd],
        )
    };
    let alice = start("alice", "0.1", 0);
    let bob = start("bob", "0.2", 3);
    let carol = start("carol", "1.4", 6);
    until("alice to see bob and carol online", || async {
        let peers: Vec<PeerInfo> = get_json(alice.http, "/api/peers").await;
        (peers
            .iter()
            .filter(|p| p.online && p.fingerprint.is_some())
            .count()
            == 2)
            .then_some(())
    })
    .await
    .unwrap();

    let plan = Plan::random(5, false);
    let t = plan.training_uuid.clone();
    let urls = vec![
        alice.notify.clone(),
        bob.notify.clone(),
        carol.notify.clone(),
    ];
    let opts = DriveOptions {
        interval: Duration::from_millis(1800),
        ..DriveOptions::default()
    };
    let (plan2, urls2) = (plan.clone(), urls.clone());
    let driving = tokio::spawn(async move { drive(&plan2, &urls2, &opts, |_, _| {}).await });

    let driver = Chromedriver::start(&artifacts_dir().join("chromedriver-training.log"));
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path())
        .await
        .expect("cannot start headless Chromium");
    let result = async {
        until("alice to know the training", || async {
            let all: Vec<Participant> = get_json(alice.http, &format!("/api/trainings/{t}/participants")).await;
            (all.len() == 3).then_some(())
        })
        .await?;
        c.goto(&alice.url(&format!("/trainings/{t}"))).await?;
        wait_text(&c, "#conn", |t| t.contains("connected")).await?;
        // ---- three lanes, this node first --------------------------------
        for who in ["alice", "bob", "carol"] {
            wait_for(&c, &format!(".lane[data-participant={who}]")).await?;
        }
        let first = attr(&c, ".lane", "data-participant").await?;
        assert_eq!(first.as_deref(), Some("alice"), "this node's lane first");
        let rendered = c
            .execute(
                "const m = performance.getEntriesByName('roundtable:training-rendered');\
                 return m.length ? m[0].startTime : null;",
                vec![],
            )
            .await?;
        eprintln!("FIGURE navigation → training page rendered: {rendered} ms");
        assert!(rendered.as_f64().is_some(), "no render mark: {rendered}");

        // ---- a loss chart with a line per participant, growing ----------
        let line = |who: &str| {
            format!("svg.metric-chart[data-metric=loss][data-kind=train] polyline.metric-line[data-participant={who}]")
        };
        wait_for(&c, &line("bob")).await?;
        let before = points(&c, &line("bob")).await?;
        screenshot(&c, "training-early.png").await;
        // Carol's slow step makes her the straggler of a round.
        wait_for(&c, ".lane[data-participant=carol] .badge-straggler").await?;
        screenshot(&c, "training-straggler.png").await;
        let after = until("bob's loss line to grow", || async {
            points(&c, &line("bob")).await.ok().filter(|n| *n >= before + 2)
        })
        .await?;
        assert!(after > before);
        for who in ["alice", "carol"] {
            wait_for(&c, &line(who)).await?;
        }
        wait_for(&c, "svg.metric-chart[data-metric=accuracy][data-kind=test]").await?;
        // The CSV link is there and serves every value.
        let href = attr(&c, "a.metrics-csv", "href").await?.context("a CSV link")?;
        assert!(href.ends_with(&format!("/api/trainings/{t}/metrics.csv")), "{href}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    // Let the training finish, then the page as a person sees it at the end.
    let report = driving.await.unwrap();
    assert!(report.all_accepted(), "{}", report.table());
    if result.is_ok() {
        let ok = until("alice to show all five update rounds of each", || async {
            let all: Vec<Participant> =
                get_json(alice.http, &format!("/api/trainings/{t}/participants")).await;
            all.iter()
                .all(|p| {
                    p.lane
                        .phases
                        .iter()
                        .filter(|ph| ph.metric("loss").is_some())
                        .count()
                        == 5
                })
                .then_some(())
        })
        .await;
        if ok.is_ok() {
            let _ = wait_for(&c, ".lane[data-participant=carol]").await;
            // The whole page: lanes, charts, this node's timeline.
            let _ = c.set_window_size(1280, 2400).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            screenshot(&c, "training-finished.png").await;
        }
        ok.unwrap();
    }
    let _ = c.close().await;
    result.unwrap();
}
