//! File transfer benchmark: `cargo bench -p roundtable --bench transfer`.
//! Prints its figures; asserts only that every copy arrived whole.
//!
//! One file moved over loopback, disk to disk, three ways side by side:
//! - a plain TCP copy of the same bytes (file → socket → file on two
//!   threads with 1 MiB buffers, synced at the end, no framing, no
//!   checks): the ceiling;
//! - `roundtable send-file --raw` into `roundtable receive-file`, two
//!   release processes: NVFlare's binary exchange with the CRC-32 checked,
//!   the SHA-256 computed, the file synced and renamed into place; with the
//!   peak resident memory of each process;
//! - NVFlare's own Python `send_binary_file` into `receive_all` (the venv
//!   `cargo xtask test` makes under target/; skipped if it is missing);
//! - between two `roundtable node` release processes (and a directory):
//!   `roundtable send-file --node` hands the file to alice's node, which
//!   sends it to bob inside the secure channel (Noise, AES-256-GCM where
//!   both CPUs do AES, else ChaCha20-Poly1305), with the CRC-32 and the
//!   whole-file SHA-256 checked and checkpoints every 64 MiB; timed from
//!   the transfer's creation (upload done) to its delivery, with each
//!   node's peak resident memory and the CPU time each used per GiB in
//!   that time (`/proc/<pid>/stat`, sampled every 50 ms);
//! - chat latency between two in-process nodes (a message every 10 ms,
//!   send to the receiver's event), without and then during a transfer;
//! - a file through the directory's relay to a node without a chat
//!   listener (in process, `BENCH_RELAY_MIB`, default 64), at the default
//!   pace and unpaced, with chat's latency through the relay beside it.
//!
//! Environment: `BENCH_TRANSFER_MIB` (default 1024; 2048 for the issue's
//! 2 GiB), `BENCH_SMALL_MIB` (default 64: the same Roundtable run on a
//! small file, to show memory stays flat), `BENCH_TRANSFER_DIR` (default
//! target/tmp; `/dev/shm` moves every file through memory instead of the
//! disk, which leaves the CPU's share), `BENCH_ONLY=chat` (only the chat
//! latency, on a file of `BENCH_TRANSFER_MIB`), `BENCH_ONLY=nodes` (only
//! node -> node, on a file of `BENCH_TRANSFER_MIB`: for profiling),
//! `BENCH_ONLY=relay` (only the relay's figures).

mod common;

use common::{env_usize, machine, Proc};

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roundtable_shared::api::{TransferInfo, TransferState};

const BIN: &str = env!("CARGO_BIN_EXE_roundtable");

fn make_file(path: &Path, mib: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..mib {
        for b in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

fn rate(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// Peak resident memory of a process, MiB.
fn vm_hwm(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (ma, mb) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    if ma.len() != mb.len() {
        return false;
    }
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = std::io::Read::read(&mut fa, &mut ba).unwrap();
        if n == 0 {
            return true;
        }
        std::io::Read::read_exact(&mut fb, &mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// File → socket → file on two threads with 1 MiB buffers, synced at the
/// end: what the hardware and kernel allow, no framing, no checks.
fn plain_copy(src: &Path, dst: &Path) -> Duration {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let dst = dst.to_path_buf();
    let started = Instant::now();
    let rx = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut f = std::fs::File::create(&dst).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut s, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).unwrap();
        }
        f.sync_all().unwrap();
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut f = std::fs::File::open(src).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).unwrap();
    }
    drop(s);
    rx.join().unwrap();
    started.elapsed()
}

/// send-file → receive-file: time until the receiver reported the file,
/// and the peak memory of sender and receiver.
fn roundtable(src: &Path, out: &Path) -> (Duration, f64, f64, PathBuf) {
    std::fs::create_dir_all(out).unwrap();
    let mut rx = Command::new(BIN)
        .args(["receive-file", "--listen", "127.0.0.1:0", "--out"])
        .arg(out)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(rx.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("receiving on ")
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let mut tx = Command::new(BIN)
        .args(["send-file", "--raw", &addr])
        .arg(src)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut tx_peak = 0.0f64;
    while tx.try_wait().unwrap().is_none() {
        if let Some(m) = vm_hwm(tx.id()) {
            tx_peak = tx_peak.max(m);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = lines.next().unwrap().unwrap();
    let took = started.elapsed();
    let rx_peak = vm_hwm(rx.id()).unwrap_or(0.0);
    let _ = rx.kill();
    let _ = rx.wait();
    let path = line
        .strip_prefix("received ")
        .and_then(|r| r.split(" (").next())
        .unwrap()
        .into();
    (took, tx_peak, rx_peak, path)
}

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("NVFLARE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nvflare-venv/bin/python")
        });
    p.exists().then_some(p)
}

/// NVFlare's Python both ways; the receiver times from accept to done.
fn nvflare(py: &Path, src: &Path) -> Duration {
    let rx_script = r#"
import socket, time, os
from nvflare.fuel.hci.binary_proto import receive_all
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
t = time.monotonic()
ct, meta, tmp = receive_all(c)
took = time.monotonic() - t
print(took, os.path.getsize(tmp), flush=True)
os.remove(tmp)
"#;
    let mut rx = Command::new(py)
        .args(["-c", rx_script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(rx.stdout.take().unwrap()).lines();
    let port = lines.next().unwrap().unwrap();
    let tx_script = format!(
        "import socket\nfrom nvflare.fuel.hci.binary_proto import send_binary_file\n\
         s = socket.create_connection(('127.0.0.1', {port}))\nsend_binary_file(s, {:?}, '')\ns.close()\n",
        src.display().to_string()
    );
    let ok = Command::new(py)
        .args(["-c", &tx_script])
        .status()
        .unwrap()
        .success();
    assert!(ok, "NVFlare's sender failed");
    let line = lines.next().unwrap().unwrap();
    let _ = rx.wait();
    let secs: f64 = line.split(' ').next().unwrap().parse().unwrap();
    Duration::from_secs_f64(secs)
}

/// A tiny blocking HTTP GET: the body.
fn get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    body.to_owned()
}

/// A directory and two nodes, alice and bob, as release processes (the
/// nodes are stopped first: fields drop in order, and a directory gone
/// before its nodes has them log a lost session).
struct Nodes {
    alice: Proc,
    bob: Proc,
    _dir: Proc,
    alice_http: String,
    bob_http: String,
}

/// `roundtable directory` with open registration, its database in `data`,
/// and the address it logged.
fn directory(data: &Path) -> (Proc, String) {
    let mut dir = Command::new(BIN)
        .args([
            "directory",
            "--listen",
            "127.0.0.1:0",
            "--open-registration",
            "--db",
        ])
        .arg(data.join("directory.db"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dir.stderr.take().unwrap()).lines();
    let addr = loop {
        let l = lines.next().unwrap().unwrap();
        if let Some(a) = l.split("addr=").nth(1) {
            break a.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc(dir), addr)
}

fn start_nodes(data: &Path) -> Nodes {
    let (dir, addr) = directory(data);
    let node = |name: &str| {
        let mut c = Command::new(BIN)
            .args(["node", "--name", name, "--directory", &addr])
            .args(["--chat", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data"])
            .arg(data.join(name))
            .env("ROUNDTABLE_PASSWORD", "pw")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(c.stdout.take().unwrap()).lines();
        let http = loop {
            let l = out.next().unwrap().unwrap();
            if let Some(a) = l.trim().strip_prefix("dashboard  http://") {
                break a.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in out {});
        (Proc(c), http)
    };
    let (alice, alice_http) = node("alice");
    let (bob, bob_http) = node("bob");
    let started = Instant::now();
    while !get(&alice_http, "/api/peers").contains("\"name\":\"bob\",\"address\":\"127.0.0.1\"") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "alice never saw bob"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nodes {
        alice,
        bob,
        _dir: dir,
        alice_http,
        bob_http,
    }
}

/// CPU time (user and system) a process has used so far, seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: utime and stime are
    // the 12th and 13th.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let (u, st): (f64, f64) = (f.next()?.parse().ok()?, f.next()?.parse().ok()?);
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((u + st) / hz)
}

/// Both nodes' CPU time, sampled every 50 ms with the wall clock (ms since
/// the epoch, as the transfers' times are), and once more when `stop` is
/// set: never no sample.
fn sample_cpu(
    pids: [u32; 2],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<(i64, [f64; 2])>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let cpu = pids.map(|p| cpu_secs(p).unwrap_or(f64::NAN));
            samples.push((now, cpu));
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return samples;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// The CPU each node used between `from` and `to` (ms since the epoch),
/// from the samples nearest outside that window.
fn cpu_between(samples: &[(i64, [f64; 2])], from: i64, to: i64) -> [f64; 2] {
    let before = samples
        .iter()
        .rev()
        .find(|s| s.0 <= from)
        .unwrap_or(&samples[0]);
    let after = samples
        .iter()
        .find(|s| s.0 >= to)
        .unwrap_or(&samples[samples.len() - 1]);
    [after.1[0] - before.1[0], after.1[1] - before.1[1]]
}

/// What a file from alice's node to bob's took.
struct NodeRun {
    /// From the transfer's creation (upload done) to its delivery.
    took: Duration,
    /// With the upload.
    total: Duration,
    /// Peak resident memory, MiB: alice, bob.
    mem: [f64; 2],
    /// CPU seconds in `took`: alice, bob.
    cpu: [f64; 2],
}

/// `src` handed to alice's node (`send-file --node`) and sent to bob's:
/// the figures of [`NodeRun`] (times as alice's node recorded them), and
/// where bob put the file.
fn node_to_node(nodes: &Nodes, data: &Path, src: &Path) -> (NodeRun, PathBuf) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_cpu([nodes.alice.0.id(), nodes.bob.0.id()], stop.clone());
    let started = Instant::now();
    let ok = Command::new(BIN)
        .args([
            "send-file",
            "--node",
            &format!("http://{}", nodes.alice_http),
            "--to",
            "bob",
        ])
        .arg(src)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    let total = started.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    assert!(ok, "send-file --node failed");
    let files: Vec<TransferInfo> =
        serde_json::from_str(&get(&nodes.alice_http, "/api/files")).unwrap();
    let t = &files[0];
    assert_eq!(t.state, TransferState::Delivered);
    let took = Duration::from_millis((t.updated_at - t.created_at).max(1) as u64);
    let theirs: Vec<TransferInfo> =
        serde_json::from_str(&get(&nodes.bob_http, "/api/files")).unwrap();
    assert!(theirs
        .iter()
        .any(|x| x.id == t.id && x.state == TransferState::Delivered));
    let path = data.join("bob/files/received").join(&t.name);
    let mem = [
        vm_hwm(nodes.alice.0.id()).unwrap_or(0.0),
        vm_hwm(nodes.bob.0.id()).unwrap_or(0.0),
    ];
    let cpu = cpu_between(&samples, t.created_at, t.updated_at);
    (
        NodeRun {
            took,
            total,
            mem,
            cpu,
        },
        path,
    )
}

/// `src` from alice's node to bob's, on two fresh nodes under `data`
/// (removed afterwards), bob's copy checked: [`node_to_node`]'s figures.
fn nodes_run(data: &Path, src: &Path) -> NodeRun {
    std::fs::create_dir_all(data).unwrap();
    let nodes = start_nodes(data);
    let (run, got) = node_to_node(&nodes, data, src);
    assert!(same_file(src, &got), "bob's copy is whole");
    drop(nodes);
    std::fs::remove_dir_all(data).unwrap();
    run
}

/// A [`NodeRun`]'s CPU, per GiB moved.
fn cpu_words(run: &NodeRun, bytes: u64) -> String {
    let gib = bytes as f64 / f64::from(1u32 << 30);
    format!(
        "CPU per GiB alice {:.2} s, bob {:.2} s",
        run.cpu[0] / gib,
        run.cpu[1] / gib
    )
}

/// p50 and p99 of `samples`, ms.
fn p50_p99(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.50), at(0.99))
}

/// Chat latency between two in-process nodes, a message every 10 ms:
/// `n` messages alone, then as many as fit while a file of `src` moves
/// from alice to bob. (p50, p99) of each, and the samples taken during.
/// How the chat benchmark's bob is reached.
#[derive(Clone, Copy)]
enum Path2Bob {
    /// At his chat port.
    Direct,
    /// Through the directory's relay only (no chat listener); files at
    /// this pace (bytes a second, 0: none).
    Relayed { pace: u64 },
}

/// Chat latency alone, then during a transfer of `src`: the two
/// (p50, p99), the messages sent during it, and how long it took.
fn chat_latency(src: &Path, n: usize, path: Path2Bob) -> ((f64, f64), (f64, f64), usize, Duration) {
    use roundtable::node::{Node, NodeConfig};
    use roundtable_shared::api::Event;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir_in(src.parent().unwrap()).unwrap();
        let (_dir, addr) = directory(tmp.path());
        let start = |name: &str| {
            let mut cfg = NodeConfig::local(name, "pw", &addr, tmp.path().join(name));
            cfg.query_interval = Duration::from_millis(200);
            if let Path2Bob::Relayed { pace } = path {
                cfg.relay_file_rate = pace;
                if name == "bob" {
                    cfg.chat_listen = None;
                }
            }
            Node::start(cfg)
        };
        let alice = start("alice").await.unwrap();
        let bob = start("bob").await.unwrap();
        let relayed = matches!(path, Path2Bob::Relayed { .. });
        while !alice
            .peers
            .get("bob")
            .is_some_and(|p| p.online && (p.port.is_some() || (relayed && p.relay)))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut events = bob.events.subscribe();
        let mut one = async |i: usize| {
            let text = format!("latency probe {i}");
            let t = Instant::now();
            alice.chat.send("bob", &text).await.unwrap();
            loop {
                match events.recv().await {
                    Ok(Event::Message { message }) if message.text == text => return t.elapsed(),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        };
        // What earlier runs left to write back would be measured too.
        let _ = Command::new("sync").status();
        let mut alone = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for i in 0..n {
            tick.tick().await;
            alone.push(one(i).await);
        }
        let file = tokio::fs::File::open(src).await.unwrap();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
        let began = Instant::now();
        let t = alice
            .transfers
            .upload(&["bob".to_owned()], "during.bin", None, stream)
            .await
            .unwrap()
            .remove(0);
        let mut during = Vec::new();
        let mut i = n;
        loop {
            let now = alice.transfers.get(t.seq).await.unwrap().info;
            if now.state == TransferState::Delivered {
                break;
            }
            assert_ne!(now.state, TransferState::Failed, "{:?}", now.error);
            tick.tick().await;
            during.push(one(i).await);
            i += 1;
        }
        alice.stop(Duration::from_secs(5)).await;
        bob.stop(Duration::from_secs(5)).await;
        let took = began.elapsed();
        let k = during.len();
        (p50_p99(alone), p50_p99(during), k, took)
    })
}

/// Files through the directory's relay (bob has no chat listener): the
/// rate at the default pace and unpaced (the directory's default budget
/// then paces it), with chat's latency through the relay beside it.
fn print_relay(src: &Path, mib: usize) {
    let bytes = (mib as u64) << 20;
    for (what, pace) in [
        (
            "default pace (--relay-file-rate 4M)",
            roundtable::transfer::DEFAULT_RELAY_RATE,
        ),
        ("unpaced (--relay-file-rate 0)", 0),
    ] {
        let ((a50, a99), (d50, d99), k, took) = chat_latency(src, 1000, Path2Bob::Relayed { pace });
        println!(
            "  relayed file, {what}: {:.1} MB/s; chat through the relay, 100 msg/s: alone p50 {a50:.2} ms p99 {a99:.2} ms; during ({k} messages) p50 {d50:.2} ms p99 {d99:.2} ms ({:.2}x)",
            rate(bytes, took),
            d99 / a99
        );
    }
}

fn print_chat_latency(src: &Path) {
    let ((a50, a99), (d50, d99), k, _) = chat_latency(src, 1000, Path2Bob::Direct);
    println!(
        "  chat send -> delivered event, 100 msg/s: alone p50 {a50:.2} ms p99 {a99:.2} ms; during the transfer ({k} messages) p50 {d50:.2} ms p99 {d99:.2} ms ({:.2}x)",
        d99 / a99
    );
}

fn main() {
    let big = env_usize("BENCH_TRANSFER_MIB", 1024);
    let small = env_usize("BENCH_SMALL_MIB", 64);
    // BENCH_TRANSFER_DIR=/dev/shm takes the disk out: what is left is CPU.
    let root = std::env::var_os("BENCH_TRANSFER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp"));
    std::fs::create_dir_all(&root).unwrap();
    let tmp = tempfile::tempdir_in(&root).unwrap();
    println!();
    println!("transfer benchmark: loopback, disk to disk, {}", machine());
    if std::env::var("BENCH_ONLY").as_deref() == Ok("chat") {
        let src = tmp.path().join(format!("src-{big}.bin"));
        make_file(&src, big);
        print_chat_latency(&src);
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("nodes") {
        let src = tmp.path().join(format!("src-{big}.bin"));
        make_file(&src, big);
        let run = nodes_run(&tmp.path().join("nodes"), &src);
        let bytes = (big as u64) << 20;
        println!(
            "[{big} MiB] node -> node {:.0} MB/s, peak RSS alice {:.1} MiB, bob {:.1} MiB; {}",
            rate(bytes, run.took),
            run.mem[0],
            run.mem[1],
            cpu_words(&run, bytes)
        );
        return;
    }
    let relay_mib = env_usize("BENCH_RELAY_MIB", 64);
    if std::env::var("BENCH_ONLY").as_deref() == Ok("relay") {
        let src = tmp.path().join(format!("src-{relay_mib}.bin"));
        make_file(&src, relay_mib);
        println!("[{relay_mib} MiB through the directory's relay]");
        print_relay(&src, relay_mib);
        return;
    }
    for mib in [small, big] {
        let src = tmp.path().join(format!("src-{mib}.bin"));
        make_file(&src, mib);
        let bytes = (mib as u64) << 20;

        let dst = tmp.path().join(format!("plain-{mib}.bin"));
        let plain = plain_copy(&src, &dst);
        assert!(same_file(&src, &dst));
        std::fs::remove_file(&dst).unwrap();

        let out = tmp.path().join(format!("rt-{mib}"));
        let (took, tx_mem, rx_mem, got) = roundtable(&src, &out);
        assert!(same_file(&src, &got), "roundtable's copy is whole");
        std::fs::remove_dir_all(&out).unwrap();

        println!("[{mib} MiB]");
        println!(
            "  plain TCP copy (no framing, no checks)      {:>8.0} MB/s",
            rate(bytes, plain)
        );
        println!(
            "  roundtable send-file --raw -> receive-file  {:>8.0} MB/s ({:.2} of plain), peak RSS sender {tx_mem:.1} MiB, receiver {rx_mem:.1} MiB",
            rate(bytes, took),
            plain.as_secs_f64() / took.as_secs_f64()
        );
        match python() {
            Some(py) => {
                let t = nvflare(&py, &src);
                println!(
                    "  NVFlare Python send_binary_file -> receive_all {:>5.0} MB/s (roundtable {:.1}x)",
                    rate(bytes, t),
                    t.as_secs_f64() / took.as_secs_f64()
                );
            }
            None => println!("  NVFlare Python: skipped (no target/nvflare-venv)"),
        }
        let run = nodes_run(&tmp.path().join(format!("nodes-{mib}")), &src);
        println!(
            "  node -> node, sealed, SHA-256 verified    {:>8.0} MB/s ({:.2} of plain), peak RSS alice {:.1} MiB, bob {:.1} MiB; {}; with the upload to alice's node {:.0} MB/s",
            rate(bytes, run.took),
            plain.as_secs_f64() / run.took.as_secs_f64(),
            run.mem[0],
            run.mem[1],
            cpu_words(&run, bytes),
            rate(bytes, run.total)
        );
        if mib == big {
            print_chat_latency(&src);
        }
        std::fs::remove_file(&src).unwrap();
    }
    let src = tmp.path().join(format!("src-{relay_mib}.bin"));
    make_file(&src, relay_mib);
    println!("[{relay_mib} MiB through the directory's relay]");
    print_relay(&src, relay_mib);
}
