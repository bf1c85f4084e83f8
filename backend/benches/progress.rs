//! Progress propagation benchmark (issue 15): `cargo bench -p roundtable
//! --bench progress`. Prints its figures; asserts only that every update
//! arrived.
//!
//! A directory and `BENCH_PARTICIPANTS` nodes (default 10) in one process,
//! all in one training. Then, `BENCH_CHANGES` times (default 100), one node
//! (in turn) gets its next phase notification over HTTP on its real
//! notification endpoint, and the time is taken until that node's new
//! phase arrives as its lane on every other node's `/ws` WebSocket: one
//! sample per (change, other node). The clock starts before the POST, so a
//! sample covers the endpoint, the store, the local event, the push over
//! the secure channel (Noise), the receiver's store and its WebSocket.

mod common;

use std::time::{Duration, Instant};

use common::{env_usize, machine, Cluster};
use futures_util::StreamExt;
use roundtable::fl_drive::{drive, DriveOptions, Plan};
use roundtable_shared::api::Event;
use roundtable_shared::progress::Participant;

fn p50_p99(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.50), at(0.99), at(1.0))
}

fn main() {
    let n = env_usize("BENCH_PARTICIPANTS", 10).max(2);
    let changes = env_usize("BENCH_CHANGES", 100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(n, tmp.path()).await;
        let (nodes, names) = (&cluster.nodes[..], &cluster.names[..]);
        let urls: Vec<String> = nodes
            .iter()
            .map(|n| format!("http://{}/", n.notify_addr.unwrap()))
            .collect();
        let plan = Plan::random(100, false);
        let t = plan.training_uuid.clone();
        let opts = DriveOptions {
            interval: Duration::ZERO,
            ..DriveOptions::default()
        };
        // Everyone starts the training and its first round.
        let first = Plan {
            steps: plan.steps[..2].to_vec(),
            ..plan.clone()
        };
        assert!(drive(&first, &urls, &opts, |_, _| {}).await.all_accepted());
        let settle = Instant::now();
        for node in nodes {
            loop {
                let all: Vec<Participant> = node.progress.participants(&t).await.unwrap();
                if all.len() == n {
                    break;
                }
                assert!(settle.elapsed() < Duration::from_secs(60), "{} sees {} participants", node.name, all.len());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        println!(
            "{n} participants in one training; all lanes everywhere {:.1} s after the first round",
            settle.elapsed().as_secs_f64()
        );
        let mut sockets = Vec::new();
        for node in nodes {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", node.http_addr))
                .await
                .unwrap();
            sockets.push(ws);
        }
        let mut next_step = vec![2usize; n];
        let mut samples = Vec::new();
        let started = Instant::now();
        for k in 0..changes {
            let j = k % n;
            let step = plan.steps[next_step[j]].clone();
            next_step[j] += 1;
            let (round, phase) = match &step.kind {
                roundtable_shared::notify::Kind::Round { round, phase, .. } => (*round, *phase),
                _ => unreachable!("the plan's middle steps are rounds"),
            };
            let one = Plan {
                steps: vec![step],
                ..plan.clone()
            };
            let t0 = Instant::now();
            assert!(drive(&one, &urls[j..=j], &opts, |_, _| {}).await.all_accepted());
            let who = &names[j];
            let waits = sockets.iter_mut().enumerate().filter(|(i, _)| *i != j).map(|(_, ws)| {
                let t = t.clone();
                async move {
                    loop {
                        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
                            .await
                            .expect("the lane within 30 s")
                            .unwrap()
                            .unwrap();
                        let Ok(text) = msg.into_text() else { continue };
                        if let Ok(Event::Participant { participant: p }) = serde_json::from_str(&text) {
                            if &p.name == who
                                && p.lane.training == t
                                && p.lane.phases.iter().any(|ph| ph.round == round && ph.phase == phase)
                            {
                                return t0.elapsed();
                            }
                        }
                    }
                }
            });
            samples.extend(futures_util::future::join_all(waits).await);
        }
        let took = started.elapsed();
        let count = samples.len();
        let (p50, p99, max) = p50_p99(samples);
        println!("machine: {}", machine());
        println!(
            "progress propagation, phase change on one node -> lane on each other node's WebSocket: \
             {changes} changes x {} receivers = {count} samples in {:.1} s: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
            n - 1,
            took.as_secs_f64()
        );
        cluster.stop().await;
    });
}
