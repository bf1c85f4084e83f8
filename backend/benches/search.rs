//! Chat search benchmark (issue 16): `cargo bench -p roundtable --bench
//! search`. Prints its figures.
//!
//! `BENCH_MESSAGES` messages (default 100,000) from 20 peers, written
//! through the chat store in batches as a node receives them, each a
//! sentence of eight words from a 5,000-word vocabulary; then a node is
//! started on that data and `BENCH_QUERIES` searches (default 1,000: one
//! word, two words, a prefix) are timed through its HTTP API
//! (`GET /api/search?q=…`, one keep-alive connection), from the request to
//! the whole JSON answer of up to 50 hits.

mod common;

use std::time::{Duration, Instant};

use common::{env_usize, machine};
use roundtable::node::{Node, NodeConfig};
use roundtable::store::chat::{ChatStore, Incoming};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn word(i: u64) -> String {
    // Pronounceable, distinct: two syllables from a base of 71.
    const S: [&str; 71] = [
        "ka", "ke", "ki", "ko", "ku", "la", "le", "li", "lo", "lu", "ma", "me", "mi", "mo", "mu",
        "na", "ne", "ni", "no", "nu", "pa", "pe", "pi", "po", "pu", "ra", "re", "ri", "ro", "ru",
        "sa", "se", "si", "so", "su", "ta", "te", "ti", "to", "tu", "va", "ve", "vi", "vo", "vu",
        "za", "ze", "zi", "zo", "zu", "ba", "be", "bi", "bo", "bu", "da", "de", "di", "do", "du",
        "fa", "fe", "fi", "fo", "fu", "ga", "ge", "gi", "go", "gu", "ha",
    ];
    let n = S.len() as u64;
    format!(
        "{}{}{}",
        S[(i % n) as usize],
        S[((i / n) % n) as usize],
        S[((i / n / n) % n) as usize]
    )
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn get(conn: &mut BufReader<tokio::net::TcpStream>, host: &str, path: &str) -> (u16, usize) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes()).await.unwrap();
    let mut status = String::new();
    conn.read_line(&mut status).await.unwrap();
    let code = status[9..12].parse().unwrap();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.unwrap();
    (code, len)
}

fn main() {
    let messages = env_usize("BENCH_MESSAGES", 100_000);
    let queries = env_usize("BENCH_QUERIES", 1000);
    let vocabulary = 5000u64;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("alice");
    std::fs::create_dir_all(&data).unwrap();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let filled = Instant::now();
    {
        let store = ChatStore::open(&data.join("chat.db")).unwrap();
        let mut left = messages;
        while left > 0 {
            let n = left.min(1000);
            let batch: Vec<Incoming> = (0..n)
                .map(|_| {
                    let text: Vec<String> = (0..8).map(|_| word(rng.next() % vocabulary)).collect();
                    Incoming {
                        sender: format!("site{:02}", rng.next() % 20),
                        id: None,
                        text: text.join(" "),
                        verified: true,
                    }
                })
                .collect();
            let (_, commit) = store.receive(&batch).unwrap();
            store.sync(commit).unwrap();
            left -= n;
        }
    }
    let filled = filled.elapsed();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stop = tokio_util::sync::CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dir_addr = listener.local_addr().unwrap().to_string();
        let dstore = roundtable::store::directory::DirectoryStore::open(&tmp.path().join("d.db")).unwrap();
        let cfg = roundtable::directory::DirectoryConfig {
            open_registration: true,
            ..Default::default()
        };
        let s = stop.clone();
        let dir_task = tokio::spawn(async move { roundtable::directory::serve(listener, dstore, cfg, s).await });
        let node = Node::start(NodeConfig::local("alice", "pw", &dir_addr, data)).await.unwrap();
        let host = node.http_addr.to_string();
        let mut conn = BufReader::new(tokio::net::TcpStream::connect(node.http_addr).await.unwrap());
        let mut samples = Vec::with_capacity(queries);
        let mut hits_bytes = 0usize;
        for i in 0..queries {
            let q = match i % 3 {
                0 => word(rng.next() % vocabulary),
                1 => format!("{}%20{}", word(rng.next() % vocabulary), word(rng.next() % vocabulary)),
                _ => word(rng.next() % vocabulary)[..4].to_owned(),
            };
            let t = Instant::now();
            let (code, len) = get(&mut conn, &host, &format!("/api/search?q={q}&limit=50")).await;
            samples.push(t.elapsed());
            assert_eq!(code, 200);
            hits_bytes += len;
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
        println!("machine: {}", machine());
        println!(
            "{messages} messages stored in {:.1} s; {queries} searches through GET /api/search (1 word, 2 words, a 4-letter prefix; up to 50 hits, {:.1} KiB an answer on average): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            filled.as_secs_f64(),
            hits_bytes as f64 / queries as f64 / 1024.0,
            at(0.5),
            at(0.99),
            at(1.0)
        );
        node.stop(Duration::from_secs(5)).await;
        stop.cancel();
        let _ = dir_task.await;
    });
}
