//! Notification endpoint benchmark: `cargo bench -p roundtable --bench notify`.
//! Prints its figures; asserts nothing about speed.
//!
//! The endpoint (with its store worker, monitoring only) runs on a tokio
//! runtime of its own with 2 worker threads; the load comes from another
//! runtime (1 thread by default) over `BENCH_CONNS` keep-alive HTTP/1.1
//! connections, one request in flight on each: UPDATE_ROUND_START for 8
//! trainings × 1000 rounds, cycled, so the first 8000 are new phases and
//! the rest duplicates. Both share this machine's cores, so the rate is
//! what the endpoint does while competing with its load.
//!
//! Figures: requests per second (all answered 202 or counted as errors),
//! latency percentiles, CPU seconds used by the server's threads (workers
//! and its SQLite blocking pool) and by the load threads, and the time the
//! worker needed afterwards to apply what was still queued.
//!
//! Environment: `BENCH_SECS` (default 5), `BENCH_CONNS` (default 64),
//! `BENCH_LOAD_THREADS` (default 1). The server runs the endpoint's default
//! limits but for the per-source cap, raised to `BENCH_CONNS`.

mod common;

use common::{env_usize, machine};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roundtable::events::Events;
use roundtable::notify::{self, NotifyConfig, Trainings};
use roundtable_shared::notify::Notification;
use roundtable_shared::training::Phase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const TRAININGS: usize = 8;
const ROUNDS: u32 = 1000;

/// CPU seconds (user + system) used so far by this process's threads whose
/// name starts with `prefix` (Linux only; 0 elsewhere).
fn cpu_secs(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... ; comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // utime and stime are fields 14 and 15 of stat: 11 and 12 after comm.
        if let (Some(u), Some(s)) = (fields.get(11), fields.get(12)) {
            ticks += u.parse::<u64>().unwrap_or(0) + s.parse::<u64>().unwrap_or(0);
        }
    }
    // USER_HZ is 100 on every Linux configuration Rust targets.
    ticks as f64 / 100.0
}

/// The full HTTP request for each notification.
fn requests(addr: &str) -> Vec<Vec<u8>> {
    let model = "00000000-0000-4000-8000-00000000beef";
    let mut out = Vec::with_capacity(TRAININGS * ROUNDS as usize);
    for round in 0..ROUNDS {
        for t in 0..TRAININGS {
            let training = format!("00000000-0000-4000-8000-{t:012}");
            let body = Notification::round(training, Phase::Update, round, model).to_json();
            out.push(
                format!(
                    "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            );
        }
    }
    out
}

struct Counters {
    ok: AtomicU64,
    bad: AtomicU64,
}

/// Reads one response; returns its status. Bodies are expected to be empty
/// for 202 and small otherwise.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap_or("");
            let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connection(
    addr: String,
    reqs: Arc<Vec<Vec<u8>>>,
    start: usize,
    stride: usize,
    counters: Arc<Counters>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Vec<u32> {
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    s.set_nodelay(true).unwrap();
    let mut buf = Vec::with_capacity(4096);
    let mut latencies = Vec::new();
    let mut i = start;
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        s.write_all(&reqs[i % reqs.len()]).await.expect("send");
        let status = read_response(&mut s, &mut buf).await.expect("answer");
        if measuring.load(Ordering::Relaxed) {
            if status == 202 {
                counters.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.bad.fetch_add(1, Ordering::Relaxed);
            }
            if latencies.len() < 1_000_000 {
                latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
        }
        i += stride;
    }
    latencies
}

fn main() {
    let secs = env_usize("BENCH_SECS", 5) as u64;
    let conns = env_usize("BENCH_CONNS", 64).max(1);
    let load_threads = env_usize("BENCH_LOAD_THREADS", 1).max(1);
    let dir = tempfile::tempdir().unwrap();

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-server")
        .enable_all()
        .build()
        .unwrap();
    let stop_server = CancellationToken::new();
    let (addr, trainings) = server_rt.block_on(async {
        let trainings = Trainings::with_config(
            NotifyConfig {
                // The load keeps 64 requests in flight, 8 rounds apart: this
                // measures the endpoint, not the forged-round check.
                max_round_jump: ROUNDS,
                ..NotifyConfig::new(dir.path().join("trainings.db"))
            },
            Events::default(),
            &TaskTracker::new(),
            stop_server.clone(),
        )
        .unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        // The endpoint's default limits (header and idle timeouts, caps),
        // with the per-source cap raised to the load's connection count:
        // all of it comes from one address, where a real FL server opens
        // a handful of connections at most.
        let limits = roundtable::web::server::Limits {
            max_per_source: conns,
            max_connections: conns.max(roundtable::web::server::Limits::notify().max_connections),
            ..roundtable::web::server::Limits::notify()
        };
        tokio::spawn(notify::endpoint::serve_with(
            l,
            trainings.clone(),
            limits,
            stop_server.clone(),
        ));
        (addr, trainings)
    });

    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(load_threads)
        .thread_name("bench-load")
        .enable_all()
        .build()
        .unwrap();
    let reqs = Arc::new(requests(&addr));
    let counters = Arc::new(Counters {
        ok: AtomicU64::new(0),
        bad: AtomicU64::new(0),
    });
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));

    println!("machine: {}", machine());
    println!(
        "notification endpoint: server runtime 2 workers, load {load_threads} thread(s), \
         {conns} keep-alive connections, {secs} s (after 1 s warm-up)"
    );

    let (elapsed, cpu_server, cpu_load, latencies) = load_rt.block_on(async {
        let tasks: Vec<_> = (0..conns)
            .map(|c| {
                tokio::spawn(connection(
                    addr.clone(),
                    reqs.clone(),
                    c,
                    conns,
                    counters.clone(),
                    measuring.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (s0, l0) = (cpu_secs("bench-server"), cpu_secs("bench-load"));
        let t0 = Instant::now();
        measuring.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = t0.elapsed();
        let (s1, l1) = (cpu_secs("bench-server"), cpu_secs("bench-load"));
        stop.store(true, Ordering::Relaxed);
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        (elapsed, s1 - s0, l1 - l0, lat)
    });

    let ok = counters.ok.load(Ordering::Relaxed);
    let bad = counters.bad.load(Ordering::Relaxed);
    let rate = ok as f64 / elapsed.as_secs_f64();
    let mut lat = latencies;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "  {rate:>9.0} notifications/s   ({ok} answered 202, {bad} other) in {:.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  latency p50 {} µs, p99 {} µs, max {} µs",
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(0)
    );
    println!(
        "  CPU: server threads {:.2} s ({:.2} cores busy), load threads {:.2} s ({:.2} cores)",
        cpu_server,
        cpu_server / elapsed.as_secs_f64(),
        cpu_load,
        cpu_load / elapsed.as_secs_f64()
    );

    let t0 = Instant::now();
    let phases = server_rt.block_on(async {
        trainings.settled().await;
        trainings
            .list()
            .await
            .unwrap()
            .iter()
            .map(|t| t.phases().count())
            .sum::<usize>()
    });
    println!(
        "  backlog applied {:.2} s after the load stopped; {} trainings, {phases} phases stored",
        t0.elapsed().as_secs_f64(),
        trainings.list_now().len()
    );
    stop_server.cancel();
    drop(trainings);
    server_rt.shutdown_timeout(Duration::from_secs(5));
}
