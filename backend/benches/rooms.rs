//! Room benchmark (issue 16): `cargo bench -p roundtable --bench rooms`.
//! Prints its figures; asserts only that every post arrived everywhere.
//!
//! A directory and `BENCH_MEMBERS` nodes (default 10) in one process, all
//! in one room. Posts go in at `BENCH_RATE` a second (default 100, open
//! loop: each at its scheduled time, whether or not the earlier ones have
//! arrived), `BENCH_POSTS` of them (default 1000), from the members in
//! turn, each a `POST /api/rooms/{id}/messages` over HTTP. A sample is the
//! time from just before that POST until the post arrives as an `Event::
//! Message` on another member's `/ws` WebSocket: one per (post, other
//! member). Between the two: the web bridge, the chat store and its fsync,
//! the sender's delivery worker, the secure channel (Noise), the
//! receiver's store, fsync and event stream.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{env_usize, machine, Cluster};
use futures_util::StreamExt;
use roundtable_shared::api::{Direction, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.50), at(0.99), at(1.0))
}

/// One `POST` with a JSON body; the status code.
async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    std::str::from_utf8(&out[9..12]).unwrap().parse().unwrap()
}

fn main() {
    let n = env_usize("BENCH_MEMBERS", 10).max(2);
    let posts = env_usize("BENCH_POSTS", 1000);
    let rate = env_usize("BENCH_RATE", 100).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tmp = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(n, tmp.path()).await;
        let (nodes, names) = (&cluster.nodes[..], &cluster.names[..]);
        let room = nodes[0]
            .chat
            .create_room("bench", &names[1..])
            .await
            .unwrap()
            .id;
        for node in &nodes[1..] {
            while node.chat.room(&room).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Warm every link: one post from each member, reaching everyone
        // (each then has n - 1 "added" lines and n warm-ups).
        for node in nodes {
            node.chat.room_post(&room, "warm-up").await.unwrap();
        }
        for node in nodes {
            while node.chat.room_history(&room, None, 500).await.unwrap().len() < 2 * n - 1 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Arrivals per member: post text -> when it showed on the WebSocket.
        let arrivals: Vec<Arc<Mutex<HashMap<String, Instant>>>> =
            (0..n).map(|_| Arc::default()).collect();
        let mut readers = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", node.http_addr))
                .await
                .unwrap();
            let (seen, room) = (arrivals[i].clone(), room.clone());
            readers.push(tokio::spawn(async move {
                while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                    let Ok(text) = msg.into_text() else { continue };
                    if let Ok(Event::Message { message: m }) = serde_json::from_str(&text) {
                        if m.room.as_deref() == Some(room.as_str()) && m.direction == Direction::In {
                            seen.lock().unwrap().insert(m.text, Instant::now());
                        }
                    }
                }
            }));
        }
        let sent: Arc<Mutex<HashMap<String, (usize, Instant)>>> = Arc::default();
        let started = Instant::now();
        let every = Duration::from_secs_f64(1.0 / rate as f64);
        let mut tasks = Vec::new();
        for k in 0..posts {
            tokio::time::sleep_until((started + every * k as u32).into()).await;
            let j = k % n;
            let (addr, room, sent) = (nodes[j].http_addr, room.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                let text = format!("p{k}");
                sent.lock().unwrap().insert(text.clone(), (j, Instant::now()));
                let body = format!(r#"{{"text":"{text}"}}"#);
                assert_eq!(post(addr, &format!("/api/rooms/{room}/messages"), &body).await, 202);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let posting = started.elapsed();
        // Wait for every arrival (or give up after 60 s and say so).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let missing: usize = (0..n)
                .map(|i| {
                    let seen = arrivals[i].lock().unwrap();
                    let sent = sent.lock().unwrap();
                    sent.iter().filter(|(t, (j, _))| *j != i && !seen.contains_key(*t)).count()
                })
                .sum();
            if missing == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{missing} arrivals missing after 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let sent = sent.lock().unwrap().clone();
        let mut samples = Vec::new();
        for (i, seen) in arrivals.iter().enumerate() {
            let seen = seen.lock().unwrap();
            for (text, (j, t0)) in &sent {
                if *j != i {
                    samples.push(seen[text].duration_since(*t0));
                }
            }
        }
        for r in readers {
            r.abort();
        }
        let count = samples.len();
        let (p50, p99, max) = percentiles(samples);
        println!("machine: {}", machine());
        println!(
            "room of {n} members, {posts} posts at {rate}/s (posted in {:.1} s), post -> on each other member's WebSocket: \
             {count} samples: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
            posting.as_secs_f64()
        );
        cluster.stop().await;
    });
}
