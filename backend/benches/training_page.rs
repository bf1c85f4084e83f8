//! Training page render benchmark (issue 15): `cargo bench -p roundtable
//! --bench training_page`, after `trunk build --release` (or `cargo xtask
//! test`). Needs Chromium and chromedriver (`cargo xtask setup`). Prints
//! its figures.
//!
//! A node whose trainings database holds one training with
//! `BENCH_PARTICIPANTS` participants (default 10: this node and nine peers'
//! shared lanes) × `BENCH_ROUNDS` rounds (default 100, an update and a test
//! phase each) × 4 metrics (loss and accuracy of each phase), written
//! through the store before the node starts. Its dashboard's training page
//! is then opened `BENCH_LOADS` times (default 3) in each of
//! `BENCH_BROWSERS` (default 6) headless Chromium processes, one after the
//! other, each on a fresh profile (nothing compiled or cached yet; with
//! `BENCH_PROFILE=shared`, all on one, as a returning user's). A
//! browser's first load opens the training's address in the 1st, 3rd, …
//! browser and clicks its link on the trainings list in the 2nd, 4th, …
//! (the dashboard already running); later loads open the address. The
//! three kinds are printed apart. The page's own marks are read:
//! - `roundtable:training-data`: the participants are fetched and decoded,
//!   about to enter the state; `roundtable:snapshot`: the same for the
//!   node's snapshot (the two are fetched at once; "data in" is the later
//!   of the two; a `dist/` built before 2026-12-07's late evening has no
//!   snapshot mark, as it fetched the participants after the snapshot,
//!   so for it "data in" is the participants, as `ROUNDTABLE_DIST=` A/B
//!   runs against it need);
//! - `roundtable:training-rendered`: the render that shows them (lanes and
//!   charts) has built its DOM;
//! - `roundtable:training-painted`: the browser has drawn the next frame
//!   (its style, layout and paint of that DOM).
//!
//! `BENCH_SETTLE_MS` (default 0) has each browser show a blank page that
//! long before its first load.
//!
//! The render time is data in → rendered; data in → painted is printed
//! beside it, and for loads at the address navigation → painted (from the
//! document's start: what a user waits for).

#[path = "../tests/common/browser.rs"]
#[allow(dead_code)]
mod browser;
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::Locator;

use common::{env_usize, machine, Proc};
use roundtable::fl_drive::{random_uuid, Plan};
use roundtable::store::trainings::{ApplyOptions, PhaseKey, Received, TrainingStore};
use roundtable_shared::progress::{Lane, Metric, PhaseReport, RunReport};
use roundtable_shared::training::{Phase, RunStatus, TrainingState};

const BIN: &str = env!("CARGO_BIN_EXE_roundtable");

fn metrics(round: u32, phase: Phase, who: usize) -> Vec<Metric> {
    let r = f64::from(round);
    let shift = who as f64 * 0.01;
    let loss = 1.0 / (1.0 + 0.1 * r) + shift;
    let kind = if phase == Phase::Test { 1.05 } else { 1.0 };
    vec![
        Metric {
            name: "loss".into(),
            value: loss * kind,
        },
        Metric {
            name: "accuracy".into(),
            value: (1.0 - loss * 0.7) / kind,
        },
    ]
}

/// Writes the training: this node's rounds with their metrics, and the
/// peers' lanes.
fn fill(db: &Path, participants: usize, rounds: u32) -> String {
    let store = TrainingStore::open(db).unwrap();
    let plan = Plan::new(&random_uuid(), &random_uuid(), rounds, false);
    // Phases 30 s apart, the last one just now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now - (2 * i64::from(rounds) + 1) * 30_000;
    let batch: Vec<Received> = plan
        .steps
        .iter()
        .take(1 + 2 * rounds as usize)
        .enumerate()
        .map(|(i, n)| Received {
            notification: n.clone(),
            at: t0 + i as i64 * 30_000,
        })
        .collect();
    store.apply_batch(&batch, &ApplyOptions::default()).unwrap();
    let t = plan.training_uuid.clone();
    let phases: Vec<(u32, Phase)> = (0..rounds)
        .flat_map(|r| [(r, Phase::Update), (r + 1, Phase::Test)])
        .collect();
    for (round, phase) in &phases {
        let key = PhaseKey {
            training: t.clone(),
            round: *round,
            phase: *phase,
        };
        store
            .record_metrics(&key, &metrics(*round, *phase, 0), 0, t0)
            .unwrap();
    }
    for who in 1..participants {
        let reports: Vec<PhaseReport> = phases
            .iter()
            .enumerate()
            .map(|(i, (round, phase))| {
                let start = t0 + i as i64 * 30_000 + who as i64 * 500;
                PhaseReport {
                    round: *round,
                    phase: *phase,
                    started_at: start,
                    run: Some(RunReport {
                        status: RunStatus::Succeeded,
                        started_at: start,
                        ended_at: Some(start + 10_000 + who as i64 * 1_000),
                        exit_code: Some(0),
                    }),
                    metrics: metrics(*round, *phase, who),
                    seq: i as u64 + 1,
                }
            })
            .collect();
        let lane = Lane {
            training: t.clone(),
            state: TrainingState::Testing,
            current_round: Some(rounds),
            started_at: t0,
            finished_at: None,
            seq: reports.len() as u64,
            phases: reports,
        };
        store
            .apply_peer_lane(&format!("site{who:02}"), &lane, now)
            .unwrap()
            .unwrap();
    }
    t
}

fn spawn_logged(cmd: &mut Command, want: &str) -> (Proc, String) {
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    for stream in [
        Box::new(out) as Box<dyn std::io::Read + Send>,
        Box::new(err),
    ] {
        let tx = tx.clone();
        let want = want.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(want.as_str()).nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        });
    }
    let found = rx.recv_timeout(Duration::from_secs(30)).expect(want);
    (Proc(child), found)
}

fn main() {
    let participants = env_usize("BENCH_PARTICIPANTS", 10).max(1);
    let rounds = env_usize("BENCH_ROUNDS", 100) as u32;
    let loads = env_usize("BENCH_LOADS", 3).max(1);
    let browsers = env_usize("BENCH_BROWSERS", 6).max(1);
    // `BENCH_PROFILE=shared`: every browser on one profile, as a returning
    // user's browser restarts on theirs (its HTTP cache and the compiled
    // wasm Chromium keeps with it); a fresh profile each by default.
    let shared = std::env::var("BENCH_PROFILE").is_ok_and(|v| v == "shared");
    // `BENCH_SETTLE_MS=3000`: each browser shows a blank page this long
    // before its first load, as a user's browser that was open before
    // they typed the address. A just-started Chromium is still busy with
    // its own start-up (its trace shows a renderer building the address
    // bar's pop-up during the page's first render); 0 by default.
    let settle = Duration::from_millis(env_usize("BENCH_SETTLE_MS", 0) as u64);
    let shared_profile = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("alice");
    std::fs::create_dir_all(&data).unwrap();
    let t = fill(&data.join("trainings.db"), participants, rounds);
    let (_dir, dir_addr) = spawn_logged(
        Command::new(BIN)
            .args([
                "directory",
                "--listen",
                "127.0.0.1:0",
                "--open-registration",
                "--db",
            ])
            .arg(tmp.path().join("directory.db")),
        "addr=",
    );
    let (_node, http) = spawn_logged(
        Command::new(BIN)
            .args(["node", "--name", "alice", "--directory", &dir_addr])
            .args([
                "--chat",
                "127.0.0.1:0",
                "--notify",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(&data)
            .arg("--dist")
            .arg(browser::dist_dir())
            .env("ROUNDTABLE_PASSWORD", "pw"),
        "dashboard  http://",
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let driver = browser::Chromedriver::start(&browser::artifacts_dir().join("chromedriver-bench.log"));
        let list = format!("http://{http}/trainings");
        let url = format!("{list}/{t}");
        let shot = browser::artifacts_dir().join("bench-training-page.png");
        println!("machine: {}", machine());
        println!(
            "training page, {participants} participants x {rounds} rounds x 4 metrics, headless Chromium, \
             {browsers} new browsers ({}{}) x {loads} loads:",
            if shared { "one profile, used by the browsers before" } else { "a fresh profile each" },
            if settle.is_zero() { String::new() } else { format!(", {} ms on a blank page first", settle.as_millis()) }
        );
        let mut figures: [Vec<(f64, f64, f64)>; 3] = Default::default();
        for b in 0..browsers {
            let fresh = tempfile::tempdir().unwrap();
            let profile = if shared { shared_profile.path() } else { fresh.path() };
            let c = browser::browser(&driver, profile).await.unwrap();
            if !settle.is_zero() {
                c.goto("about:blank").await.unwrap();
                tokio::time::sleep(settle).await;
            }
            for load in 0..loads {
                // 0: a first load at the address (browsers 1, 3, …);
                // 1: a first load through the list (browsers 2, 4, …);
                // 2: a later load, at the address.
                let kind = match (load, b % 2) {
                    (0, 0) => 0,
                    (0, _) => 1,
                    _ => 2,
                };
                if kind == 1 {
                    c.goto(&list).await.unwrap();
                    let link = loop {
                        if let Ok(l) = c.find(Locator::Css("a.training-link")).await {
                            break l;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    };
                    link.click().await.unwrap();
                } else {
                    c.goto(&url).await.unwrap();
                }
                // Waits in the page for the marks (a PerformanceObserver),
                // not by asking chromedriver again and again: each poll
                // costs the browser and chromedriver CPU time, on the two
                // cores the render runs on.
                let got = c
                    .execute_async(
                        "const done = arguments[arguments.length - 1];\
                         const at = n => { const e = performance.getEntriesByName(n); \
                             return e.length ? e[e.length - 1].startTime : null; };\
                         const check = () => { \
                             const d = at('roundtable:training-data'), r = at('roundtable:training-rendered'), \
                                 p = at('roundtable:training-painted'), s = at('roundtable:snapshot');\
                             if (d === null || r === null || p === null) return false;\
                             done([s === null ? d : Math.max(d, s), r, p, document.querySelectorAll('polyline.metric-line').length, \
                                   document.querySelectorAll('.lane').length]);\
                             return true; };\
                         if (!check()) { const o = new PerformanceObserver(() => { if (check()) o.disconnect(); }); \
                             o.observe({ type: 'mark' }); }",
                        vec![],
                    )
                    .await
                    .unwrap();
                let at = |i: usize| got[i].as_f64().unwrap();
                assert_eq!(got[4].as_u64(), Some(participants as u64), "lanes: {got}");
                assert!(got[3].as_u64().unwrap_or(0) >= participants as u64, "lines: {got}");
                // The marks are from the document's start: at the
                // address, the navigation.
                figures[kind].push((at(1) - at(0), at(2) - at(0), at(2)));
            }
            if b + 1 == browsers {
                if let Ok(png) = c.screenshot().await {
                    let _ = std::fs::write(&shot, png);
                }
            }
            let _ = c.close().await;
        }
        let fmt = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
            let mut x: Vec<f64> = v.iter().map(f).collect();
            x.sort_by(f64::total_cmp);
            let list = x.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
            match x.len() {
                0 => "-".to_owned(),
                n => format!("median {:.0}: {list}", x[n / 2]),
            }
        };
        for (i, (kind, v)) in [
            "first load, the training's address",
            "first load, through the trainings list",
            "later loads",
        ]
        .iter()
        .zip(&figures)
        .enumerate()
        {
            println!("  {kind}:");
            println!("    data in -> rendered:       {} ms", fmt(v, |x| x.0));
            println!("    data in -> painted:        {} ms", fmt(v, |x| x.1));
            if i != 1 {
                println!("    navigation -> painted:     {} ms", fmt(v, |x| x.2));
            }
        }
        println!("  screenshot: {}", shot.display());
    });
}
