//! A node's identity key (issue 13's first slice, wired into the node):
//! made on first start and kept, refused when others can read it,
//! published to the directory, and peers' fingerprints learnt from it; a
//! classic directory that knows no keys still serves the node.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{eventually, get_json, node, Directory};
use roundtable::node::{Node, NodeConfig};
use roundtable_shared::api::{KeyAtDirectory, LinkState, Me};
use roundtable_shared::frame::{decode_all, Frame, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_publish_their_keys_and_learn_each_others_fingerprints() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    assert_ne!(alice.fingerprint, bob.fingerprint);
    assert_eq!(
        alice.fingerprint.split(' ').count(),
        8,
        "{}",
        alice.fingerprint
    );

    let me: Me = eventually(10, "alice's key pinned", || async {
        let me: Me = get_json(alice.http_addr, "/api/me").await;
        (me.key_at_directory == KeyAtDirectory::Pinned).then_some(me)
    })
    .await;
    assert_eq!(me.fingerprint, alice.fingerprint);
    // Each learns the other's from the directory.
    let fp = eventually(10, "alice to learn bob's fingerprint", || async {
        alice.peers.get("bob")?.fingerprint
    })
    .await;
    assert_eq!(fp, bob.fingerprint);
    eventually(10, "bob to learn alice's fingerprint", || async {
        (bob.peers.get("alice")?.fingerprint? == alice.fingerprint).then_some(())
    })
    .await;

    // The key is kept: a restart on the same data is the same identity.
    let before = alice.fingerprint.clone();
    alice.stop(Duration::from_secs(5)).await;
    let alice = node("alice", &dir, data.path()).await;
    assert_eq!(alice.fingerprint, before);
    let mode = std::fs::metadata(data.path().join("alice").join("identity.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    alice.stop(Duration::from_secs(5)).await;
    bob.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_others_can_read_stops_the_node() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    node("alice", &dir, data.path())
        .await
        .stop(Duration::from_secs(5))
        .await;
    let key = data.path().join("alice").join("identity.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = NodeConfig::local(
        "alice",
        "pw",
        &dir.addr.to_string(),
        data.path().join("alice"),
    );
    let err = match Node::start(cfg).await {
        Ok(_) => panic!("started with a key file others can read"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("identity.key"), "{err}");
    assert!(err.contains("644"), "{err}");
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_pin_is_reported_and_the_node_still_works() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    // Someone pinned another key for alice first.
    let mut s = TcpStream::connect(dir.addr).await.unwrap();
    s.write_all(format!("USER 0 alice\nPASS 0 pw\nKEY 0 {}\n", "ab".repeat(32)).as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("key published") {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    drop(s);
    let alice = node("alice", &dir, data.path()).await;
    let me: Me = eventually(10, "the conflict reported", || async {
        let me: Me = get_json(alice.http_addr, "/api/me").await;
        (me.key_at_directory == KeyAtDirectory::Conflict).then_some(me)
    })
    .await;
    assert_eq!(me.directory_state, LinkState::Connected);
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

/// A classic directory: USER, PASS, BIND, QUERY, LEAVE; anything else gets
/// `ERR I did not understand the message X` and the connection closed.
async fn classic_directory() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let (frames, used) = decode_all(&buf, &Limits::default()).unwrap();
                    buf.drain(..used);
                    for f in frames {
                        let _ = tx.send(f.kind.clone());
                        let (reply, close) = match f.kind.as_str() {
                            "USER" => (Frame::bare("ACK", "hi, authentication required"), false),
                            "PASS" => (Frame::bare("ACK", "successfully authenticated"), false),
                            "BIND" => (Frame::bare("ACK", "bound successfully"), false),
                            "QUERY" => (Frame::bare("RESULT", "alice,127.0.0.1,1"), false),
                            "LEAVE" => (Frame::bare("ACK", "deregistered from directory"), false),
                            other => (
                                Frame::bare(
                                    "ERR",
                                    format!("I did not understand the message {other}"),
                                ),
                                true,
                            ),
                        };
                        if s.write_all(&reply.encode().unwrap()).await.is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_directory_that_knows_no_keys_still_serves_the_node() {
    let (addr, mut seen) = classic_directory().await;
    let data = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::local("alice", "pw", &addr.to_string(), data.path().join("alice"));
    cfg.query_interval = Duration::from_millis(100);
    let alice = Node::start(cfg).await.unwrap();
    // KEY is refused once; from then on only classic commands, and the
    // session stays up (several QUERYs on one login).
    let mut kinds = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while kinds.iter().filter(|k: &&String| *k == "QUERY").count() < 5 {
        let k = tokio::time::timeout_at(deadline, seen.recv())
            .await
            .expect("the node keeps querying")
            .unwrap();
        kinds.push(k);
    }
    assert_eq!(kinds.iter().filter(|k| *k == "KEY").count(), 1, "{kinds:?}");
    assert!(!kinds.iter().any(|k| k == "KEYQUERY"), "{kinds:?}");
    let last_user = kinds.iter().rposition(|k| k == "USER").unwrap();
    assert!(
        kinds[last_user..].iter().filter(|k| *k == "QUERY").count() >= 3,
        "{kinds:?}"
    );
    assert_eq!(alice.directory.current(), LinkState::Connected);
    alice.stop(Duration::from_secs(5)).await;
}
