//! The collaboration's view of a training (issue 15): nodes in the same
//! training, driven by `fl-drive` through their real notification
//! endpoints, see each other's lanes and metrics on their API and
//! WebSocket; the picture survives a restart; nothing is shared with a
//! node outside the training or from a node that turned sharing off.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, get_json, http, sees_online, Directory};
use futures_util::StreamExt;
use roundtable::fl_drive::{drive, random_uuid, DriveOptions, Plan};
use roundtable::node::{Node, NodeConfig};
use roundtable_shared::api::{Event, Me};
use roundtable_shared::progress::Participant;
use roundtable_shared::training::{Phase, RunStatus, Training};

/// A training command that reports a loss per update round and an
/// accuracy per test round, both depending on the round and the node
/// (`$NODE_SKILL`), plus a malformed metric line.
fn train_cmd(dir: &Path, skill: u32) -> Vec<String> {
    let script = dir.join(format!("train-{skill}.sh"));
    std::fs::write(
        &script,
        format!(
            r#"# args: phase --training-id T --round R --model-id M
r=$5
case "$1" in
  train) echo "roundtable-metric {{\"name\": \"loss\", \"value\": 0.$((90 - r * 10 - {skill}))}}" ;;
  test) echo "roundtable-metric {{\"name\": \"accuracy\", \"value\": 0.$((50 + r * 10 + {skill}))}}" ;;
esac
echo "roundtable-metric not json"
echo "ordinary output"
"#
        ),
    )
    .unwrap();
    vec!["sh".into(), script.display().to_string()]
}

async fn start(
    name: &str,
    dir: &Directory,
    data: &Path,
    edit: impl FnOnce(&mut NodeConfig),
) -> Node {
    let mut cfg = NodeConfig::local(name, "pw", &dir.addr.to_string(), data.join(name));
    cfg.train_cmd = Some(train_cmd(data, name.len() as u32));
    edit(&mut cfg);
    Node::start(cfg).await.unwrap()
}

/// Alice and bob, each seeing the other online.
async fn alice_and_bob(dir: &Directory, data: &Path) -> (Node, Node) {
    let alice = start("alice", dir, data, |_| {}).await;
    let bob = start("bob", dir, data, |_| {}).await;
    sees_online(&alice, "bob").await;
    sees_online(&bob, "alice").await;
    (alice, bob)
}

fn notify_url(n: &Node) -> String {
    format!("http://{}/", n.notify_addr.unwrap())
}

async fn participants(n: &Node, training: &str) -> Vec<Participant> {
    get_json(
        n.http_addr,
        &format!("/api/trainings/{training}/participants"),
    )
    .await
}

/// Waits until `n` shows `who` in `training` with its run of
/// (`round`, `phase`) ended and `metric` recorded.
async fn shows(
    n: &Node,
    training: &str,
    who: &str,
    round: u32,
    phase: Phase,
    metric: &str,
) -> Participant {
    eventually(
        20,
        &format!("{} to show {who} at {round}/{phase}", n.name),
        || async {
            participants(n, training).await.into_iter().find(|p| {
                p.name == who
                    && p.lane.phases.iter().any(|ph| {
                        ph.round == round
                            && ph.phase == phase
                            && ph.run_ended()
                            && ph.metric(metric).is_some()
                    })
            })
        },
    )
    .await
}

fn options() -> DriveOptions {
    DriveOptions {
        interval: Duration::from_millis(150),
        ..DriveOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_in_one_training_see_every_lane_and_metric() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = start("alice", &dir, data.path(), |_| {}).await;
    let bob = start("bob", &dir, data.path(), |_| {}).await;
    let carol = start("carol", &dir, data.path(), |_| {}).await;
    // Dave takes part in another training only.
    let dave = start("dave", &dir, data.path(), |_| {}).await;
    let mut dave_events = dave.events.subscribe();
    for n in [&alice, &bob, &carol, &dave] {
        for p in ["alice", "bob", "carol", "dave"] {
            if p != n.name {
                sees_online(n, p).await;
            }
        }
    }

    let plan = Plan::random(2, false);
    let t = plan.training_uuid.clone();
    let other = Plan::random(1, false);
    let urls: Vec<String> = [&alice, &bob, &carol].map(notify_url).to_vec();
    let (opts, dave_url) = (options(), [notify_url(&dave)]);
    let (a, b) = tokio::join!(
        drive(&plan, &urls, &opts, |_, _| {}),
        drive(&other, &dave_url, &opts, |_, _| {})
    );
    assert!(a.all_accepted() && b.all_accepted(), "{}", a.table());

    // Everyone's lanes everywhere: the last update round's loss and the
    // last test round's accuracy of each of the three.
    for n in [&alice, &bob, &carol] {
        for who in ["alice", "bob", "carol"] {
            let p = shows(n, &t, who, 1, Phase::Update, "loss").await;
            assert_eq!(p.local, who == n.name);
            shows(n, &t, who, 2, Phase::Test, "accuracy").await;
        }
        let all = participants(n, &t).await;
        let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names[0], n.name, "this node first");
        assert_eq!(all.len(), 3, "{names:?}");
    }
    // Metrics differ per participant and move over the rounds.
    let all = participants(&alice, &t).await;
    let loss = |who: &str, round: u32| {
        all.iter()
            .find(|p| p.name == who)
            .and_then(|p| {
                p.lane
                    .phases
                    .iter()
                    .find(|ph| ph.round == round && ph.phase == Phase::Update)
            })
            .and_then(|ph| ph.metric("loss"))
            .unwrap()
    };
    assert!(loss("bob", 1) < loss("bob", 0));
    assert_ne!(loss("bob", 1), loss("alice", 1));
    // The malformed metric line was counted on the node that ran it, and
    // nothing of its output travelled.
    let own: Training = get_json(bob.http_addr, &format!("/api/trainings/{t}")).await;
    let run = own.phase(0, Phase::Update).unwrap().run.as_ref().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.metrics_ignored, 1);
    let (status, raw) = http(
        "GET",
        alice.http_addr,
        &format!("/api/trainings/{t}/participants"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        !raw.contains("ordinary output") && !raw.contains(&plan.global_model_uuid),
        "{raw}"
    );

    // The CSV has every value.
    let (status, csv) = http(
        "GET",
        alice.http_addr,
        &format!("/api/trainings/{t}/metrics.csv"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("participant,round,phase,metric,value"));
    let rows: Vec<&str> = lines.collect();
    // 3 nodes × (2 update losses + 2 test accuracies).
    assert_eq!(rows.len(), 12, "{csv}");
    assert!(
        rows.contains(&format!("bob,1,update,loss,{}", loss("bob", 1)).as_str()),
        "{csv}"
    );

    // The list's summary: three participants per training, latest phase only.
    let summary: Vec<Participant> = get_json(alice.http_addr, "/api/participants").await;
    let of_t: Vec<&Participant> = summary.iter().filter(|p| p.lane.training == t).collect();
    assert_eq!(of_t.len(), 3);
    assert!(of_t.iter().all(|p| p.lane.phases.len() == 1));

    // Dave, outside the training, got nothing of it, and gave nothing.
    assert_eq!(participants(&dave, &other.training_uuid).await.len(), 1);
    let (status, _) = http(
        "GET",
        dave.http_addr,
        &format!("/api/trainings/{t}/participants"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    while let Ok(ev) = dave_events.try_recv() {
        if let Event::Participant { participant } = ev {
            assert_eq!(participant.lane.training, other.training_uuid);
            assert!(participant.local, "{participant:?}");
        }
    }
    // Nobody even sent it a lane of a training it could not prove.
    assert_eq!(dave.progress.unknown_lanes(), 0);
    let summary: Vec<Participant> = get_json(alice.http_addr, "/api/participants").await;
    assert!(summary.iter().all(|p| p.name != "dave"), "{summary:?}");

    for n in [alice, bob, carol, dave] {
        n.stop(Duration::from_secs(5)).await;
    }
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_phase_reaches_the_other_nodes_websocket_and_survives_a_restart() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let (alice, bob) = alice_and_bob(&dir, data.path()).await;
    let plan = Plan::random(3, false);
    let t = plan.training_uuid.clone();
    // Both start the training.
    let first = Plan {
        steps: plan.steps[..2].to_vec(),
        ..plan.clone()
    };
    let urls = [notify_url(&alice), notify_url(&bob)];
    assert!(drive(&first, &urls, &options(), |_, _| {})
        .await
        .all_accepted());
    shows(&alice, &t, "bob", 0, Phase::Update, "loss").await;

    // A phase on bob alone shows on alice's WebSocket as bob's lane.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", alice.http_addr))
        .await
        .unwrap();
    let next = Plan {
        steps: plan.steps[2..3].to_vec(),
        ..plan.clone()
    };
    assert!(drive(&next, &[notify_url(&bob)], &options(), |_, _| {})
        .await
        .all_accepted());
    let sent = tokio::time::Instant::now();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let msg = ws.next().await.unwrap().unwrap();
            let Ok(Event::Participant { participant }) =
                serde_json::from_str(&msg.into_text().unwrap())
            else {
                continue;
            };
            if participant.name == "bob"
                && participant.lane.training == t
                && participant
                    .lane
                    .phases
                    .iter()
                    .any(|p| p.round == 1 && p.phase == Phase::Test)
            {
                return participant;
            }
        }
    })
    .await
    .expect("bob's new phase on alice's WebSocket");
    assert!(!seen.local);
    eprintln!(
        "bob's phase on alice's WebSocket after {:?}",
        sent.elapsed()
    );

    // Bob restarts: alice keeps his lane, bob keeps hers, and what bob
    // does after the restart reaches alice.
    let bob_data = data.path().join("bob");
    bob.stop(Duration::from_secs(5)).await;
    let still = participants(&alice, &t).await;
    assert!(still.iter().any(|p| p.name == "bob"), "{still:?}");
    let bob = Node::start({
        let mut cfg = NodeConfig::local("bob", "pw", &dir.addr.to_string(), bob_data);
        cfg.train_cmd = Some(train_cmd(data.path(), 3));
        cfg
    })
    .await
    .unwrap();
    let kept = participants(&bob, &t).await;
    assert!(
        kept.iter().any(|p| p.name == "alice" && !p.local),
        "{kept:?}"
    );
    sees_online(&bob, "alice").await;
    let rest = Plan {
        steps: plan.steps[3..4].to_vec(),
        ..plan.clone()
    };
    assert!(drive(&rest, &[notify_url(&bob)], &options(), |_, _| {})
        .await
        .all_accepted());
    shows(&alice, &t, "bob", 1, Phase::Update, "loss").await;
    // Alice's kept link to the bob of before the restart is dead: her next
    // phase still reaches the new bob (on a new link).
    assert!(drive(&rest, &[notify_url(&alice)], &options(), |_, _| {})
        .await
        .all_accepted());
    shows(&bob, &t, "alice", 1, Phase::Update, "loss").await;

    alice.stop(Duration::from_secs(5)).await;
    bob.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_turned_sharing_off_shares_nothing_and_gets_nothing() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = start("alice", &dir, data.path(), |_| {}).await;
    let bob = start("bob", &dir, data.path(), |_| {}).await;
    let erin = start("erin", &dir, data.path(), |c| c.share_progress = false).await;
    for (n, p) in [
        (&alice, "bob"),
        (&alice, "erin"),
        (&bob, "alice"),
        (&erin, "alice"),
    ] {
        sees_online(n, p).await;
    }
    let me: Me = get_json(erin.http_addr, "/api/me").await;
    assert!(!me.share_progress);
    let me: Me = get_json(alice.http_addr, "/api/me").await;
    assert!(me.share_progress);

    let plan = Plan::random(1, false);
    let t = plan.training_uuid.clone();
    let urls: Vec<String> = [&alice, &bob, &erin].map(notify_url).to_vec();
    assert!(drive(&plan, &urls, &options(), |_, _| {})
        .await
        .all_accepted());
    // Bob's lane reaches alice: sharing works for the others...
    shows(&alice, &t, "bob", 0, Phase::Update, "loss").await;
    shows(&alice, &t, "alice", 1, Phase::Test, "accuracy").await;
    shows(&erin, &t, "erin", 1, Phase::Test, "accuracy").await;
    // ...and a few more exchange rounds pass (the pusher ticks every 2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names = |ps: Vec<Participant>| ps.into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(names(participants(&alice, &t).await), ["alice", "bob"]);
    assert_eq!(names(participants(&erin, &t).await), ["erin"]);

    for n in [alice, bob, erin] {
        n.stop(Duration::from_secs(5)).await;
    }
    dir.stop().await;
}

#[tokio::test]
async fn a_training_gets_a_name_a_person_chose() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = start("alice", &dir, data.path(), |_| {}).await;
    let plan = Plan::random(1, false);
    let t = plan.training_uuid.clone();
    assert!(drive(&plan, &[notify_url(&alice)], &options(), |_, _| {})
        .await
        .all_accepted());
    let path = format!("/api/trainings/{t}/name");
    let (status, body) = http(
        "PUT",
        alice.http_addr,
        &path,
        Some(r#"{"name": "  Lung CT, site A  "}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let named: Training = get_json(alice.http_addr, &format!("/api/trainings/{t}")).await;
    assert_eq!(named.name.as_deref(), Some("Lung CT, site A"));
    let long = format!(r#"{{"name": "{}"}}"#, "x".repeat(81));
    let (status, body) = http("PUT", alice.http_addr, &path, Some(&long)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("1 to 80 characters"), "{body}");
    let (status, _) = http("PUT", alice.http_addr, &path, Some(r#"{"name": ""}"#)).await;
    assert_eq!(status, 200);
    let back: Training = get_json(alice.http_addr, &format!("/api/trainings/{t}")).await;
    assert_eq!(back.name, None);
    let (status, _) = http(
        "PUT",
        alice.http_addr,
        "/api/trainings/00000000-0000-4000-8000-000000000000/name",
        Some(r#"{"name": "x"}"#),
    )
    .await;
    assert_eq!(status, 404);
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_history_with_many_metrics_arrives_whole_in_several_requests() {
    use roundtable::store::trainings::PhaseKey;
    use roundtable_shared::progress::{Metric, MAX_METRICS_PER_PHASE};
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = start("alice", &dir, data.path(), |c| c.train_cmd = None).await;
    let bob = start("bob", &dir, data.path(), |c| c.train_cmd = None).await;
    sees_online(&alice, "bob").await;
    sees_online(&bob, "alice").await;
    let rounds = 60;
    let plan = Plan::new(&random_uuid(), &random_uuid(), rounds, false);
    let t = plan.training_uuid.clone();
    let fast = DriveOptions {
        interval: Duration::ZERO,
        ..DriveOptions::default()
    };
    // Bob only needs to know the training.
    let start_only = Plan {
        steps: plan.steps[..1].to_vec(),
        ..plan.clone()
    };
    assert!(drive(&start_only, &[notify_url(&bob)], &fast, |_, _| {})
        .await
        .all_accepted());
    let all_but_last = Plan {
        steps: plan.steps[..plan.steps.len() - 1].to_vec(),
        ..plan.clone()
    };
    assert!(
        drive(&all_but_last, &[notify_url(&alice)], &fast, |_, _| {})
            .await
            .all_accepted()
    );
    alice.trainings.settled().await;
    // Every phase of alice's gets the most metrics a phase may have:
    // about 150 KB of lane, more than two requests' worth.
    let store = alice.trainings.store().clone();
    for r in 0..rounds {
        for (round, phase) in [(r, Phase::Update), (r + 1, Phase::Test)] {
            let key = PhaseKey {
                training: t.clone(),
                round,
                phase,
            };
            let metrics: Vec<Metric> = (0..MAX_METRICS_PER_PHASE)
                .map(|i| Metric {
                    name: format!("metric_number_{i:02}"),
                    value: f64::from(round) + i as f64 / 100.0,
                })
                .collect();
            store.record_metrics(&key, &metrics, 0, 1).unwrap();
        }
    }
    // The last step makes the change known.
    let last = Plan {
        steps: plan.steps[plan.steps.len() - 1..].to_vec(),
        ..plan.clone()
    };
    assert!(drive(&last, &[notify_url(&alice)], &fast, |_, _| {})
        .await
        .all_accepted());
    let phases = 2 * rounds as usize;
    let got = eventually(30, "bob to have alice's whole history", || async {
        participants(&bob, &t).await.into_iter().find(|p| {
            p.name == "alice"
                && p.lane.phases.len() == phases
                && p.lane
                    .phases
                    .iter()
                    .all(|ph| ph.metrics.len() == MAX_METRICS_PER_PHASE)
        })
    })
    .await;
    let ph = got
        .lane
        .phases
        .iter()
        .find(|p| p.round == 37 && p.phase == Phase::Test)
        .unwrap();
    assert_eq!(ph.metric("metric_number_05"), Some(37.05));
    let body = serde_json::to_vec(&got.lane).unwrap();
    assert!(
        body.len() > 2 * roundtable_shared::rpc::MAX_BODY,
        "{} bytes",
        body.len()
    );
    alice.stop(Duration::from_secs(5)).await;
    bob.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_posts_metrics_to_its_own_url_which_dies_with_it() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let script = data.path().join("post.py");
    std::fs::write(
        &script,
        r#"import os, sys, urllib.request
url = os.environ["ROUNDTABLE_METRICS_URL"]
print("metrics url " + url, flush=True)
r = int(sys.argv[5])
body = ('[{"name": "loss", "value": %f}, {"name": "dice", "value": 0.5}]' % (1.0 / (r + 1))).encode()
req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
print("status", urllib.request.urlopen(req).status, flush=True)
"#,
    )
    .unwrap();
    let alice = start("alice", &dir, data.path(), |c| {
        c.train_cmd = Some(vec!["python3".into(), script.display().to_string()])
    })
    .await;
    let plan = Plan::random(2, false);
    let t = plan.training_uuid.clone();
    assert!(drive(&plan, &[notify_url(&alice)], &options(), |_, _| {})
        .await
        .all_accepted());
    let me = shows(&alice, &t, "alice", 1, Phase::Update, "dice").await;
    let update = |r: u32| {
        me.lane
            .phases
            .iter()
            .find(|p| p.round == r && p.phase == Phase::Update)
            .unwrap()
            .clone()
    };
    assert_eq!(update(0).metric("loss"), Some(1.0));
    assert_eq!(update(1).metric("loss"), Some(0.5));
    // Each run had its own URL.
    let own: Training = get_json(alice.http_addr, &format!("/api/trainings/{t}")).await;
    let urls: Vec<String> = own
        .phases()
        .filter_map(|(_, p)| p.run.as_ref())
        .flat_map(|r| r.output_tail.iter())
        .filter_map(|l| l.strip_prefix("metrics url ").map(str::to_owned))
        .collect();
    // At least the two update runs (a test run may still be going).
    assert!(urls.len() >= 2, "{urls:?}");
    let mut unique = urls.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), urls.len(), "one URL per run: {urls:?}");
    // The run has ended: its URL is refused.
    let u = urls[0].trim_start_matches("http://");
    let (addr, path) = u.split_once('/').unwrap();
    let (status, body) = http(
        "POST",
        addr.parse().unwrap(),
        &format!("/{path}"),
        Some(r#"{"name": "loss", "value": 0}"#),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_training_keeps_its_link_to_each_peer_instead_of_opening_one_per_change() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let (alice, bob) = alice_and_bob(&dir, data.path()).await;
    let plan = Plan::random(4, false);
    let t = plan.training_uuid.clone();
    // Each phase well apart: a change each time, pushed on its own.
    let opts = DriveOptions {
        interval: Duration::from_millis(400),
        ..DriveOptions::default()
    };
    let (before_a, before_b) = (alice.chat.links_opened(), bob.chat.links_opened());
    let urls = [notify_url(&alice), notify_url(&bob)];
    assert!(drive(&plan, &urls, &opts, |_, _| {}).await.all_accepted());
    shows(&alice, &t, "bob", 4, Phase::Test, "accuracy").await;
    shows(&bob, &t, "alice", 4, Phase::Test, "accuracy").await;
    let opened = (
        alice.chat.links_opened() - before_a,
        bob.chat.links_opened() - before_b,
    );
    eprintln!(
        "links opened over {} phases: alice {}, bob {}",
        plan.steps.len(),
        opened.0,
        opened.1
    );
    // The room of the training may take a link of the chat outbox too.
    assert!(opened.0 <= 2 && opened.1 <= 2, "{opened:?}");
    alice.stop(Duration::from_secs(5)).await;
    bob.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kept_progress_link_gives_way_to_chat_when_links_run_short() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    // Alice may have two outgoing links at once.
    let alice = {
        let mut cfg = NodeConfig::local(
            "alice",
            "pw",
            &dir.addr.to_string(),
            data.path().join("alice"),
        );
        cfg.train_cmd = Some(train_cmd(data.path(), 5));
        let mut chat = roundtable::node::chat::ChatConfig::new("alice");
        chat.max_links = 2;
        Node::start_with(cfg, chat).await.unwrap()
    };
    let bob = start("bob", &dir, data.path(), |_| {}).await;
    let carol = start("carol", &dir, data.path(), |_| {}).await;
    for p in ["bob", "carol"] {
        sees_online(&alice, p).await;
    }
    sees_online(&bob, "alice").await;
    // A training with bob: its room goes to bob over alice's chat link to
    // him, her lane over her progress link to him; both are then unused.
    let plan = Plan::random(1, false);
    let t = plan.training_uuid.clone();
    let urls = [notify_url(&alice), notify_url(&bob)];
    assert!(drive(&plan, &urls, &options(), |_, _| {})
        .await
        .all_accepted());
    shows(&bob, &t, "alice", 1, Phase::Test, "accuracy").await;
    // A message to carol needs a third link: the kept progress link makes
    // way within a few seconds (it would otherwise hold on for 60 s).
    alice
        .chat
        .send("carol", "are you in the next one?")
        .await
        .unwrap();
    eventually(15, "carol to get alice's message", || async {
        common::history(&carol, "alice")
            .await
            .into_iter()
            .find(|m| m.text == "are you in the next one?")
    })
    .await;
    for n in [alice, bob, carol] {
        n.stop(Duration::from_secs(5)).await;
    }
    dir.stop().await;
}
