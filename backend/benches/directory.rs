//! Directory server benchmark: `cargo bench -p roundtable --bench directory`
//! (or `cargo xtask bench`). Prints its figures; asserts nothing about speed.
//!
//! The server runs as a separate `roundtable directory` process so that its
//! memory can be read from /proc. This process plays the peers: 10,000 real
//! listeners answering PING, registered through real sessions.
//!
//! Figures:
//! - registration: USER + PASS + BIND sessions per second (64 clients),
//! - BIND throughput: re-binds per second over 64 authenticated connections,
//!   each including the port test and the SQLite write,
//! - QUERY throughput: single-user QUERY per second over 64 connections,
//!   one request in flight per connection,
//! - one full liveness sweep of all peers, as the restarted server re-verifies
//!   the registrations it loads,
//! - the server's peak resident memory (VmHWM) over the whole run.
//!
//! Environment: `BENCH_PEERS` (default 10000), `BENCH_SECS` (default 5).

mod common;

use common::{env_usize, machine};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use roundtable::directory::accounts::HashCost;
use roundtable::framing::Connection;
use roundtable::store::directory::DirectoryStore;
use roundtable_shared::frame::{Frame, Limits};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_roundtable");
const CLIENTS: usize = 64;

/// A server process and the lines it logs.
struct Server {
    child: Child,
    addr: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn start(db: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["directory", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(["--check-interval", "3600", "--check-parallelism", "256"])
            .args(["--max-connections", "8192"])
            // One load-generating host re-binding flat out: lift the per-source
            // and per-session BIND limits that protect a real server.
            .args(["--max-connections-per-source", "8192"])
            .args(["--max-binds-per-minute", "0"])
            .env(
                "RUST_LOG",
                "warn,roundtable::directory=info,roundtable::directory::checker=debug",
            )
            .stderr(Stdio::piped())
            .spawn()
            .expect("start roundtable directory");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("server address");
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        Server {
            child,
            addr,
            lines: rx,
        }
    }

    /// Peak resident set size in KiB.
    fn peak_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Waits for the checker's log line of a sweep that checked `n` peers.
    fn sweep_ms(&self, n: usize) -> u64 {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .expect("a sweep report");
            if line.contains("liveness sweep") && line.contains(&format!("checked={n}")) {
                let ms = line.split("elapsed_ms=").nth(1).unwrap();
                return ms.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

async fn pong_listener() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut c = Connection::new(s, Limits::default());
                while let Ok(Some(f)) = c.read_frame().await {
                    if f.kind == "PING" && c.write_frame(&Frame::bare("PONG", "")).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

async fn request(c: &mut Connection<TcpStream>, f: Frame, expect: &str) -> Frame {
    c.write_frame(&f).await.unwrap();
    let reply = c.read_frame().await.unwrap().expect("reply");
    assert_eq!(reply.kind, expect, "{:?}", reply.text());
    reply
}

async fn login(addr: &str, name: &str) -> Connection<TcpStream> {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut c = Connection::new(s, Limits::default());
    request(&mut c, Frame::new("USER", [name], ""), "ACK").await;
    request(&mut c, Frame::new("PASS", ["pw"], ""), "ACK").await;
    c
}

fn bind(port: u16) -> Frame {
    Frame::new("BIND", ["127.0.0.1".to_string(), port.to_string()], "")
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} {per_sec}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let peers = env_usize("BENCH_PEERS", 10_000);
    let secs = env_usize("BENCH_SECS", 5) as u64;
    // One client thread: the load generator shares the 2 cores with the server
    // and should take as little of them as it can.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");

    // Accounts with cheap hashes: the logins are setup here, not the subject.
    let cheap = HashCost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    {
        let store = DirectoryStore::open(&db).unwrap();
        let pb = progress(peers, "accounts");
        for i in 0..peers {
            let hash = roundtable::directory::accounts::hash_password("pw", cheap).unwrap();
            store.put_account(&format!("peer{i}"), &hash).unwrap();
            pb.inc(1);
        }
        pb.finish();
    }

    let server = Server::start(&db);
    let addr = server.addr.clone();
    let ports: Arc<Vec<u16>> = Arc::new(rt.block_on(async {
        let mut v = Vec::with_capacity(peers);
        for _ in 0..peers {
            v.push(pong_listener().await);
        }
        v
    }));

    // 1. Register every peer through a real session.
    let pb = progress(peers, "registering");
    let started = Instant::now();
    rt.block_on(async {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (addr, ports, next, pb) = (addr.clone(), ports.clone(), next.clone(), pb.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= ports.len() {
                        return;
                    }
                    let mut c = login(&addr, &format!("peer{i}")).await;
                    request(&mut c, bind(ports[i]), "ACK").await;
                    pb.inc(1);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let register_rate = peers as f64 / started.elapsed().as_secs_f64();
    pb.finish();

    // 2. BIND throughput: 64 sessions re-binding to their own ports.
    let (binds, bind_elapsed) = rt.block_on(async {
        let stop_at = Instant::now() + Duration::from_secs(secs);
        let count = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..CLIENTS {
            let (addr, ports, count) = (addr.clone(), ports.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = login(&addr, &format!("peer{w}")).await;
                while Instant::now() < stop_at {
                    request(&mut c, bind(ports[w]), "ACK").await;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (count.load(Ordering::Relaxed), started.elapsed())
    });

    // 3. QUERY throughput: single-user queries, one in flight per connection.
    let (queries, query_elapsed) = rt.block_on(async {
        let stop_at = Instant::now() + Duration::from_secs(secs);
        let count = Arc::new(AtomicU64::new(0));
        let mut conns = Vec::new();
        for w in 0..CLIENTS {
            conns.push(login(&addr, &format!("peer{w}")).await);
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (w, mut c) in conns.into_iter().enumerate() {
            let (ports, count) = (ports.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = w * 7919;
                let mut n = 0u64;
                while Instant::now() < stop_at {
                    i = (i + 104_729) % ports.len();
                    let who = format!("peer{i}");
                    let r =
                        request(&mut c, Frame::new("QUERY", [who.as_str()], ""), "RESULT").await;
                    // Every answer is checked, not just counted.
                    assert_eq!(
                        r.payload,
                        format!("{who},127.0.0.1,{}", ports[i]).as_bytes()
                    );
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (count.load(Ordering::Relaxed), started.elapsed())
    });
    let peak_first = server.peak_kib();
    server.stop();

    // 4. Restart on the same database: the first sweep re-verifies everyone.
    let server = Server::start(&db);
    let sweep_ms = server.sweep_ms(peers);
    let peak_second = server.peak_kib();
    let after = rt.block_on(async {
        let mut c = login(&server.addr, "peer0").await;
        let r = request(
            &mut c,
            Frame::new("QUERY", Vec::<String>::new(), ""),
            "RESULT",
        )
        .await;
        r.payload.split(|&b| b == b'\n').count()
    });
    server.stop();
    assert_eq!(after, peers, "every live peer stays registered");

    println!();
    println!(
        "directory benchmark: {peers} registered peers, {CLIENTS} client connections, {}",
        machine()
    );
    println!("  registration (USER+PASS+BIND sessions)  {register_rate:>10.0} /s");
    println!(
        "  BIND incl. port test + SQLite write     {:>10.0} /s",
        binds as f64 / bind_elapsed.as_secs_f64()
    );
    println!(
        "  single-user QUERY                       {:>10.0} /s   (goal >= 50,000)",
        queries as f64 / query_elapsed.as_secs_f64()
    );
    println!("  full liveness sweep of {peers} peers     {sweep_ms:>10} ms  (goal < 3,000)");
    println!(
        "  server peak memory (VmHWM)              {:>10.1} MiB (goal < 100)",
        peak_first.max(peak_second) as f64 / 1024.0
    );
}
