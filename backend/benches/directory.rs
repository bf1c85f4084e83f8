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
//! - the server's peak resident memory (VmHWM) over the whole run,
//! - relay throughput (issue 13): `SEC` frames per second through one
//!   directory from N senders to N receivers (1 and 16 pairs, 200-byte and
//!   4 KiB payloads; rate limits off), each sender keeping at most 128
//!   frames in flight (as a node's end-to-end acks would),
//! - relay memory: a fresh server's resident memory with 1,000 logged-in
//!   `RELAY` sessions, idle and then with 500 pairs exchanging frames.
//!
//! Environment: `BENCH_PEERS` (default 10000, at least 1000), `BENCH_SECS`
//! (default 5), `BENCH_RELAY_SECS` (default 3, per throughput figure).

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
use roundtable_shared::secure::{Sealed, SecureFrame};
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
        Server::start_with(db, &[])
    }

    /// A server with `extra` arguments after the benchmark's own.
    fn start_with(db: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["directory", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(["--check-interval", "3600", "--check-parallelism", "256"])
            .args(["--max-connections", "8192"])
            // One load-generating host re-binding flat out: lift the per-source
            // and per-session BIND limits that protect a real server.
            .args(["--max-connections-per-source", "8192"])
            .args(["--max-binds-per-minute", "0"])
            .args(extra)
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

    /// Current resident set size in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
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

/// Limits that admit the largest relayed frame.
const RELAY_LIMITS: Limits = Limits {
    max_header: roundtable_shared::frame::DEFAULT_MAX_HEADER,
    max_payload: roundtable_shared::directory::MAX_RELAY_PAYLOAD,
};

/// A logged-in session that sent `RELAY 0`.
async fn relay_session(addr: &str, name: &str) -> Connection<TcpStream> {
    let mut c = login(addr, name).await;
    c.set_limits(RELAY_LIMITS);
    request(&mut c, Frame::bare("RELAY", ""), "ACK").await;
    c
}

/// An encoded `SEC` from `from` to `to` with a `len`-byte payload.
fn sec(from: &str, to: &str, counter: u64, len: usize) -> Vec<u8> {
    SecureFrame::Sealed(Sealed {
        from: from.into(),
        to: to.into(),
        epoch: 0,
        counter,
        payload: vec![0x5a; len],
    })
    .into_frame()
    .encode()
    .unwrap()
}

/// Most frames a sender has in flight (sent, not yet read by its receiver).
const WINDOW: u64 = 128;

/// Frames per second relayed from `pairs` senders (peer{2i}) to as many
/// receivers (peer{2i+1}), `len`-byte payloads, for `secs` seconds. Also
/// returns the RELAYNAKs the senders got (0 expected: the window is below
/// the queue bound and the rate limits are off).
async fn relay_throughput(addr: &str, pairs: usize, len: usize, secs: u64) -> (f64, u64) {
    use std::sync::atomic::AtomicBool;
    use tokio::sync::Notify;
    let mut tasks = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut conns = Vec::new();
    for p in 0..pairs {
        let sender = relay_session(addr, &format!("peer{}", 2 * p)).await;
        let receiver = relay_session(addr, &format!("peer{}", 2 * p + 1)).await;
        conns.push((sender, receiver));
    }
    let started = Instant::now();
    for (p, (mut sender, mut receiver)) in conns.into_iter().enumerate() {
        let delivered = Arc::new(AtomicU64::new(0));
        let sent_total = Arc::new(AtomicU64::new(u64::MAX));
        let notify = Arc::new(Notify::new());
        let (d, n, total) = (delivered.clone(), notify.clone(), sent_total.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = 0u64;
            let mut quiet_since = Instant::now();
            while got < total.load(Ordering::Acquire) {
                // Short waits, so that the end (the sender's total) is seen
                // promptly; reading is cancel-safe.
                match tokio::time::timeout(Duration::from_millis(50), receiver.read_frame()).await {
                    Err(_) if quiet_since.elapsed() < Duration::from_secs(10) => continue,
                    Ok(Ok(Some(f))) => {
                        quiet_since = Instant::now();
                        assert_eq!(f.kind, "SEC");
                        got += 1;
                        // Everything already buffered counts before waking the sender.
                        while let Ok(Some(f)) = receiver.buffered_frame() {
                            assert_eq!(f.kind, "SEC");
                            got += 1;
                        }
                        d.store(got, Ordering::Release);
                        n.notify_one();
                    }
                    _ => break,
                }
            }
            (got, 0u64)
        }));
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let (from, to) = (format!("peer{}", 2 * p), format!("peer{}", 2 * p + 1));
            let mut sent = 0u64;
            let mut batch = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                while sent - delivered.load(Ordering::Acquire) >= WINDOW {
                    notify.notified().await;
                }
                let room = WINDOW - (sent - delivered.load(Ordering::Acquire));
                batch.clear();
                for _ in 0..room.min(32) {
                    batch.push(sec(&from, &to, sent, len));
                    sent += 1;
                }
                sender.write_encoded(&batch).await.unwrap();
            }
            sent_total.store(sent, Ordering::Release);
            notify.notify_one();
            // Refusals, if any, arrived before the answer to this QUERY.
            sender
                .write_frame(&Frame::new("QUERY", ["nobody"], ""))
                .await
                .unwrap();
            let mut naks = 0;
            loop {
                let f = sender.read_frame().await.unwrap().expect("a reply");
                match f.kind.as_str() {
                    "RELAYNAK" => naks += 1,
                    "RESULT" => break,
                    other => panic!("unexpected {other}"),
                }
            }
            (0u64, naks)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut frames, mut naks) = (0, 0);
    for t in tasks {
        let (f, n) = t.await.unwrap();
        frames += f;
        naks += n;
    }
    (frames as f64 / started.elapsed().as_secs_f64(), naks)
}

/// A fresh server's resident memory (KiB): with no session, with 1,000
/// logged-in RELAY sessions, and after 500 pairs of them exchanged
/// `rounds` frames each way (200-byte payloads), sessions still open.
async fn relay_memory(server: &Server, rounds: u64) -> (u64, u64, u64) {
    let addr = server.addr.clone();
    let empty = server.rss_kib();
    let mut sessions = Vec::with_capacity(1000);
    for i in 0..1000 {
        sessions.push(relay_session(&addr, &format!("peer{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = server.rss_kib();
    let mut tasks = Vec::new();
    let mut it = sessions.into_iter();
    for p in 0..500 {
        let (mut a, mut b) = (it.next().unwrap(), it.next().unwrap());
        tasks.push(tokio::spawn(async move {
            let (na, nb) = (format!("peer{}", 2 * p), format!("peer{}", 2 * p + 1));
            for r in 0..rounds {
                a.write_encoded(&[sec(&na, &nb, r, 200)]).await.unwrap();
                assert_eq!(b.read_frame().await.unwrap().unwrap().kind, "SEC");
                b.write_encoded(&[sec(&nb, &na, r, 200)]).await.unwrap();
                assert_eq!(a.read_frame().await.unwrap().unwrap().kind, "SEC");
            }
            (a, b)
        }));
    }
    let mut kept = Vec::new();
    for t in tasks {
        kept.push(t.await.unwrap());
    }
    let busy = server.rss_kib();
    drop(kept);
    (empty, idle, busy)
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

    // 5. Relay throughput, rate limits off, on a fresh server.
    assert!(peers >= 1000, "the relay figures need 1,000 accounts");
    let relay_secs = env_usize("BENCH_RELAY_SECS", 3) as u64;
    let unlimited = [
        "--relay-frames-per-second",
        "0",
        "--relay-bytes-per-second",
        "0",
    ];
    let server = Server::start_with(&db, &unlimited);
    let mut relay_rates = Vec::new();
    for pairs in [1, 16] {
        for len in [200, 4096] {
            let (rate, naks) = rt.block_on(relay_throughput(&server.addr, pairs, len, relay_secs));
            relay_rates.push((pairs, len, rate, naks));
        }
    }
    server.stop();

    // 6. Relay memory: 1,000 RELAY sessions, 500 pairs exchanging frames.
    let server = Server::start_with(&db, &unlimited);
    let (rss_empty, rss_idle, rss_busy) = rt.block_on(relay_memory(&server, 100));
    let relay_peak = server.peak_kib();
    server.stop();

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
    for (pairs, len, rate, naks) in relay_rates {
        println!(
            "  relay: {pairs:>2} pair(s), {len:>4}-byte SEC        {rate:>10.0} frames/s ({:.1} MiB/s payload, {naks} RELAYNAK)",
            rate * len as f64 / (1024.0 * 1024.0)
        );
    }
    println!(
        "  relay memory: server RSS empty {:.1} MiB, 1,000 RELAY sessions idle {:.1} MiB, 500 pairs after 100 round trips {:.1} MiB, peak {:.1} MiB",
        rss_empty as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        rss_busy as f64 / 1024.0,
        relay_peak as f64 / 1024.0
    );
}
