//! NVIDIA FLARE's binary exchange on a bare connection (issue 14, first
//! slice): `roundtable receive-file` and `roundtable send-file --raw`
//! against NVFlare's own Python `binary_proto` both ways, and a receiver
//! that refuses every kind of bad exchange, keeps nothing partial and goes
//! on serving.
//!
//! The Python side runs from the virtual environment `cargo xtask test`
//! makes once (`target/nvflare-venv`, `pip install nvflare`), or the
//! interpreter named by `NVFLARE_PYTHON`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::browser::workspace_root;
use common::{eventually, exact, history, node, Directory};
use roundtable::transfer::raw::{self, ServeConfig, BLOCK};
use roundtable_shared::binary::{encode, footer, Header};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_roundtable");

fn python() -> PathBuf {
    let p = std::env::var_os("NVFLARE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/nvflare-venv/bin/python"));
    assert!(
        p.exists(),
        "no Python with nvflare at {}: run `cargo xtask test` once (it makes that venv), \
         or set NVFLARE_PYTHON",
        p.display()
    );
    p
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Files in `dir`, hidden temporaries included.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `roundtable receive-file` on a free port, and the lines it prints.
struct Receiver {
    child: Child,
    addr: SocketAddr,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Receiver {
    fn start(out: &Path) -> Receiver {
        let mut child = Command::new(BIN)
            .args(["receive-file", "--listen", "127.0.0.1:0", "--out"])
            .arg(out)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = out.next().unwrap().unwrap();
        let addr = first
            .strip_prefix("receiving on ")
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Receiver { child, addr, lines }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("receive-file reports the file")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn nvflare_send_binary_file_into_receive_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let rx = Receiver::start(&out);
    let body = bytes(3 * 1024 * 1024 + 11, 7);
    let src = dir.path().join("model.pt");
    std::fs::write(&src, &body).unwrap();
    let script = format!(
        r#"
import socket
from nvflare.fuel.hci.binary_proto import send_binary_file
for meta in ["", '{{"file_name": "model.pt"}}']:
    s = socket.create_connection(("127.0.0.1", {port}))
    send_binary_file(s, {src:?}, meta)
    s.close()
"#,
        port = rx.addr.port(),
        src = src.display().to_string(),
    );
    let status = Command::new(python())
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    let a = rx.next_line();
    let b = rx.next_line();
    for line in [&a, &b] {
        assert!(
            line.contains(&format!("sha256 {}", sha256(&body))),
            "{line}"
        );
        assert!(line.contains(&format!("({} bytes", body.len())), "{line}");
    }
    // The empty meta (NVFlare's downloads) is stored under a made-up
    // name; the JSON one under its file name.
    let names = listing(&out);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"model.pt".to_string()), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("from-127.0.0.1-")),
        "{names:?}"
    );
    for n in names {
        assert_eq!(std::fs::read(out.join(n)).unwrap(), body);
    }
}

#[test]
fn send_file_raw_into_nvflare_receive_all() {
    let dir = tempfile::tempdir().unwrap();
    for size in [0usize, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 3] {
        let src = dir.path().join(format!("f{size}.bin"));
        let body = bytes(size, 3);
        std::fs::write(&src, &body).unwrap();
        // receive_all leaves its temporary file behind: the script removes it.
        let script = r#"
import socket, hashlib, os, sys
from nvflare.fuel.hci.binary_proto import receive_all
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
ct, meta, tmp = receive_all(c)
data = b""
if tmp:
    data = open(tmp, "rb").read()
    os.remove(tmp)
print(ct, len(data), hashlib.sha256(data).hexdigest(), meta, flush=True)
"#;
        let mut py = Command::new(python())
            .args(["-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(py.stdout.take().unwrap()).lines();
        let port = lines.next().unwrap().unwrap();
        let sent = Command::new(BIN)
            .args(["send-file", "--raw", &format!("127.0.0.1:{port}")])
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            sent.status.success(),
            "{}",
            String::from_utf8_lossy(&sent.stderr)
        );
        let got = lines.next().unwrap().unwrap();
        assert!(py.wait().unwrap().success());
        let want = format!(
            "1 {size} {} {{\"file_name\":\"f{size}.bin\"}}",
            sha256(&body)
        );
        assert_eq!(got, want, "{size} bytes");
    }
}

/// A receiver in this process, and what it reports.
async fn serve(
    out: &Path,
) -> (
    SocketAddr,
    CancellationToken,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    let mut cfg = ServeConfig::new(out.to_path_buf());
    cfg.idle = Duration::from_secs(2);
    tokio::spawn(raw::serve(l, cfg, stop.clone(), move |r, _| {
        seen.lock()
            .unwrap()
            .push(r.path.file_name().unwrap().to_string_lossy().into_owned());
    }));
    (addr, stop, got)
}

async fn send_bytes(addr: SocketAddr, wire: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(wire).await;
    let _ = s.shutdown().await;
    // Wait until the receiver is done with it (it closes its side).
    let mut b = [0u8; 16];
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut s, &mut b),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_exchanges_keep_nothing_and_the_receiver_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (addr, stop, got) = serve(&out).await;
    let body = bytes(2 * BLOCK + 5, 9);
    let meta = |name: &str| serde_json::json!({ "file_name": name }).to_string();
    let good = encode(meta("good.bin").as_bytes(), &body).unwrap();

    let mut corrupted = encode(meta("c.bin").as_bytes(), &body).unwrap();
    corrupted[100_000] ^= 1;
    let truncated = &good[..good.len() / 2];
    let mut end_marker = encode(meta("e.bin").as_bytes(), &body).unwrap();
    let at = end_marker.len() - 8;
    end_marker[at + 3] = 7;
    // body_size says one byte more than is sent before the footer.
    let m = meta("l.bin");
    let mut lying = Header {
        meta_size: m.len() as u32,
        body_size: body.len() as u64 + 1,
    }
    .encode()
    .to_vec();
    lying.extend_from_slice(m.as_bytes());
    lying.extend_from_slice(&body);
    lying.extend_from_slice(&footer(crc32fast::hash(&body)));
    let mut huge_meta = Header {
        meta_size: u32::MAX,
        body_size: 0,
    }
    .encode()
    .to_vec();
    huge_meta.extend_from_slice(&[b'{'; 4096]);
    let traversal = encode(meta("../escaped.bin").as_bytes(), &body).unwrap();

    for (what, wire) in [
        ("corrupted body byte", &corrupted[..]),
        ("truncated body", truncated),
        ("wrong end marker", &end_marker[..]),
        ("lying body_size", &lying[..]),
        ("4 GiB meta_size claim", &huge_meta[..]),
        ("traversal file name", &traversal[..]),
    ] {
        send_bytes(addr, wire).await;
        assert_eq!(listing(&out), Vec::<String>::new(), "{what}: nothing kept");
    }
    assert!(!dir.path().join("escaped.bin").exists());
    // Still serving: a good exchange arrives whole.
    send_bytes(addr, &good).await;
    eventually(10, "the good file", || async {
        (listing(&out) == ["good.bin"]).then_some(())
    })
    .await;
    assert_eq!(std::fs::read(out.join("good.bin")).unwrap(), body);
    assert_eq!(*got.lock().unwrap(), ["good.bin"]);
    stop.cancel();
}

#[test]
fn send_file_without_a_receiver_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("x.bin");
    std::fs::File::create(&src)
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let out = Command::new(BIN)
        .args(["send-file", "--raw", &format!("127.0.0.1:{port}")])
        .arg(&src)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to 127.0.0.1"), "{err}");
}

/// A bare exchange whose body is over the node's `--max-file-size` is
/// refused before its body is read: nothing kept, nothing listed, and the
/// chat port goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_exchange_over_the_nodes_limit_is_refused_on_the_chat_port() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut cfg = roundtable::node::NodeConfig::local(
        "alice",
        "pw",
        &dir.addr.to_string(),
        data.path().join("alice"),
    );
    cfg.max_file_size = 1000;
    let alice = roundtable::node::Node::start(cfg).await.unwrap();
    send_bytes(alice.chat_addr, &encode(b"", &bytes(1001, 3)).unwrap()).await;
    send_bytes(alice.chat_addr, &encode(b"", &bytes(1000, 4)).unwrap()).await;
    let files = data.path().join("alice/files/received");
    let kept = eventually(10, "the small file on alice's node", || async {
        let l = listing(&files);
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(files.join(&kept[0])).unwrap(), bytes(1000, 4));
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

/// The node's chat port serves both protocols, as NVFlare's receiver
/// decides: NVFlare's `send_binary_file` into it is stored as a file from
/// that address, and eurechat text on the same port still chats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nvflare_send_binary_file_into_a_nodes_chat_port() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let body = bytes(2 * BLOCK + 99, 5);
    let src = data.path().join("weights.bin");
    std::fs::write(&src, &body).unwrap();
    let script = format!(
        "import socket\nfrom nvflare.fuel.hci.binary_proto import send_binary_file\n\
         s = socket.create_connection(('127.0.0.1', {}))\nsend_binary_file(s, {:?}, '')\ns.close()\n",
        alice.chat_addr.port(),
        src.display().to_string()
    );
    let py = python();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(py).args(["-c", &script]).status().unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    let files = data.path().join("alice/files/received");
    let name = eventually(10, "the file on alice's node", || async {
        std::fs::read_dir(&files).ok().and_then(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .find(|n| !n.starts_with('.'))
        })
    })
    .await;
    assert!(name.starts_with("from-127.0.0.1-"), "{name}");
    assert_eq!(std::fs::read(files.join(&name)).unwrap(), body);
    // The dashboard lists it as a file from that address, downloadable.
    let listed: Vec<roundtable_shared::api::TransferInfo> =
        eventually(10, "the file listed", || async {
            let all: Vec<roundtable_shared::api::TransferInfo> =
                common::get_json(alice.http_addr, "/api/files").await;
            (!all.is_empty()).then_some(all)
        })
        .await;
    assert_eq!(listed.len(), 1);
    let t = &listed[0];
    assert!(t.bare && t.downloadable, "{t:?}");
    assert!(t.peer.starts_with("127.0.0.1:"), "{t:?}");
    assert_eq!(
        (t.name.as_str(), t.size),
        (name.as_str(), body.len() as u64)
    );
    assert_eq!(t.sha256, sha256(&body));
    let (status, _, got) = common::request(
        "GET",
        alice.http_addr,
        &format!("/api/files/{}/content", t.seq),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got, body);

    let mut nc = TcpStream::connect(alice.chat_addr).await.unwrap();
    nc.write_all(b"PING 0\n").await.unwrap();
    exact(&mut nc, "PONG 0\n").await;
    nc.write_all(b"MESSAGE 5 zed\nhello").await.unwrap();
    eventually(10, "the text message too", || async {
        history(&alice, "zed").await.into_iter().next()
    })
    .await;
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}
