//! Helpers shared by the node tests: a directory on port 0, a tiny HTTP
//! client, and polling with a deadline.
#![allow(dead_code)]

pub mod browser;
pub mod classic;
pub mod e2e;
pub mod files;
pub mod process;
pub mod proxy;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use roundtable::directory::accounts::HashCost;
use roundtable::directory::checker::CheckerConfig;
use roundtable::directory::{serve, DirectoryConfig};
use roundtable::node::{Node, NodeConfig};
use roundtable::store::directory::DirectoryStore;
use roundtable_shared::api::ChatMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A directory with open registration and cheap hashes, on port 0.
pub struct Directory {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Directory {
    pub async fn start() -> Directory {
        Directory::start_at("127.0.0.1:0".parse().unwrap()).await
    }

    /// A directory on a given address (to restart one where nodes expect it).
    pub async fn start_at(addr: SocketAddr) -> Directory {
        Directory::start_on(
            addr,
            CheckerConfig {
                // Long: node tests see LEAVE, not the checker, take peers away.
                interval: Duration::from_secs(3600),
                timeout: Duration::from_millis(500),
                parallelism: 16,
            },
        )
        .await
    }

    /// A directory whose liveness checker runs as `checker` says.
    pub async fn start_with_checker(checker: CheckerConfig) -> Directory {
        Directory::start_on("127.0.0.1:0".parse().unwrap(), checker).await
    }

    /// A directory on port 0 whose configuration `edit` adjusts (after the
    /// test defaults: open registration, cheap hashes, a slow checker).
    pub async fn start_with(edit: impl FnOnce(&mut DirectoryConfig)) -> Directory {
        Directory::start_edited(
            "127.0.0.1:0".parse().unwrap(),
            CheckerConfig {
                interval: Duration::from_secs(3600),
                timeout: Duration::from_millis(500),
                parallelism: 16,
            },
            edit,
        )
        .await
    }

    async fn start_on(addr: SocketAddr, checker: CheckerConfig) -> Directory {
        Directory::start_edited(addr, checker, |_| {}).await
    }

    async fn start_edited(
        addr: SocketAddr,
        checker: CheckerConfig,
        edit: impl FnOnce(&mut DirectoryConfig),
    ) -> Directory {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectoryStore::open(&dir.path().join("d.db")).unwrap();
        let l = TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let stop = CancellationToken::new();
        let mut cfg = DirectoryConfig {
            open_registration: true,
            hash_cost: HashCost {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            checker,
            ..DirectoryConfig::default()
        };
        edit(&mut cfg);
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { serve(l, store, cfg, stop).await.unwrap() }
        });
        Directory {
            addr,
            stop,
            task,
            _dir: dir,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// A node named `name` with loopback defaults, at `dir`, keeping its data
/// under `data/name`.
pub async fn node(name: &str, dir: &Directory, data: &Path) -> Node {
    let cfg = NodeConfig::local(name, "pw", &dir.addr.to_string(), data.join(name));
    Node::start(cfg).await.unwrap()
}

/// `n`'s whole conversation with `peer`, from its store.
pub async fn history(n: &Node, peer: &str) -> Vec<ChatMessage> {
    n.chat.store().history(peer, None, 500).unwrap()
}

/// Waits until `n` sees `peer` online at a chat address.
pub async fn sees_online(n: &Node, peer: &str) {
    eventually(10, &format!("{} to see {peer} online", n.name), || async {
        // Listed with its chat address, not only reachable by relay.
        n.peers
            .get(peer)
            .filter(|p| p.online && p.port.is_some())
            .map(|_| ())
    })
    .await;
}

/// Reads exactly `expect`'s length from `s` (10 s at most) and compares.
pub async fn exact(s: &mut tokio::net::TcpStream, expect: &str) {
    let mut got = vec![0u8; expect.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got))
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got), expect);
}

/// Polls `check` until it returns `Some`, or panics after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A one-shot HTTP/1.1 request; returns status and body.
pub async fn http(method: &str, addr: SocketAddr, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out[9..12].parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// A raw HTTP/1.1 request with a binary body; status, head and body.
pub async fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head[9..12].parse().unwrap();
    (status, head, out[split + 4..].to_vec())
}

pub async fn get_json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> T {
    let (status, body) = http("GET", addr, path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Reads a child's output line by line until `find` recognizes one (e.g. the
/// line where it prints its address), then keeps draining the rest on a
/// thread so that the child never blocks on a full pipe.
pub fn watch_output<T>(
    stream: impl std::io::Read + Send + 'static,
    mut find: impl FnMut(&str) -> Option<T>,
) -> T {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stream).lines();
    let found = loop {
        let line = lines
            .next()
            .expect("the process printed what we wait for before exiting")
            .expect("reading the process output");
        if let Some(v) = find(&line) {
            break v;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    found
}

/// The `addr=` field of a log line, if any.
pub fn logged_addr(line: &str) -> Option<String> {
    Some(
        line.split("addr=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_owned(),
    )
}

/// Logs in as `name` (password `pw`, open registration) and binds
/// 127.0.0.1:`port`, whose listener must answer the directory's `PING`
/// port test. Returns the session: dropping it ends the registration.
pub async fn bind_raw(directory: SocketAddr, name: &str, port: u16) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut session = tokio::net::TcpStream::connect(directory).await.unwrap();
    session
        .write_all(format!("USER 0 {name}\nPASS 0 pw\nBIND 0 127.0.0.1 {port}\n").as_bytes())
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("bound successfully") {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(10), session.read(&mut b))
            .await
            .expect("directory answers")
            .unwrap();
        assert!(
            n > 0,
            "directory closed: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&b[..n]);
    }
    session
}

/// A secure link from a Roundtable peer of the test's own making, `me`
/// (its key kept under `data/me`), to `peer`'s chat port on loopback: first
/// contact, as a node would open it to send a file.
pub async fn own_link(
    me: &str,
    data: &Path,
    peer: &str,
    port: u16,
) -> roundtable::node::link::Link {
    use roundtable::events::Events;
    use roundtable::node::link::{open_direct, Overlay};
    use roundtable::node::peers::Peers;
    use roundtable::node::trust::Trust;
    use roundtable::overlay::channel::ChannelConfig;
    use roundtable::overlay::identity::Identity;
    use roundtable::store::pins::PinStore;

    let m = data.join(me);
    std::fs::create_dir_all(&m).unwrap();
    let peers = Peers::new(me, Events::new(16));
    let overlay = Overlay {
        me: me.into(),
        identity: std::sync::Arc::new(Identity::load_or_create(&m).unwrap()),
        trust: Trust::load(PinStore::open(&m.join("pins.db")).unwrap(), peers).unwrap(),
        channel: ChannelConfig::default(),
        require_secure: false,
        secure: true,
    };
    let permit = std::sync::Arc::new(tokio::sync::Semaphore::new(1))
        .acquire_owned()
        .await
        .unwrap();
    open_direct(
        &overlay,
        peer,
        "127.0.0.1",
        port,
        Duration::from_secs(5),
        permit,
    )
    .await
    .unwrap()
}
