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
//!   `cargo xtask test` makes under target/; skipped if it is missing).
//!
//! Environment: `BENCH_TRANSFER_MIB` (default 1024; 2048 for the issue's
//! 2 GiB), `BENCH_SMALL_MIB` (default 64: the same Roundtable run on a
//! small file, to show memory stays flat).

mod common;

use common::{env_usize, machine};

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

fn main() {
    let big = env_usize("BENCH_TRANSFER_MIB", 1024);
    let small = env_usize("BENCH_SMALL_MIB", 64);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
    std::fs::create_dir_all(&root).unwrap();
    let tmp = tempfile::tempdir_in(&root).unwrap();
    println!();
    println!("transfer benchmark: loopback, disk to disk, {}", machine());
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
        std::fs::remove_file(&src).unwrap();
    }
}
