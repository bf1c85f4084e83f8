//! "Check peers" (`GET /api/peers/check`): one request to every online peer
//! at once, over the secure channel; who answered within the deadline
//! (round-trip time, version, path) and who did not, with the reason.

mod common;

use std::time::{Duration, Instant};

use common::classic::ClassicPeer;
use common::{bind_raw, get_json, node, sees_online, Directory};
use roundtable_shared::api::{PeerCheck, PeerPath};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A peer that is listed but dead: its listener answers the directory's
/// port test (one `PING`) and then accepts connections without ever
/// answering, as a hung process whose socket stays open would.
async fn dead_peer(name: &str, dir: &Directory) -> (TcpStream, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut answered = false;
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            if !answered {
                answered = true;
                let mut b = [0u8; 64];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(b"PONG 0\n").await;
            } else {
                held.push(s);
            }
        }
    });
    let session = bind_raw(dir.addr, name, port).await;
    (session, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_who_answered_and_the_dead_peer_at_the_deadline() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    let carol = node("carol", &dir, data.path()).await;
    let mut corrado = ClassicPeer::listen().await;
    corrado.register("corrado", "pw", dir.addr).await;
    let (_session, _dead) = dead_peer("dave", &dir).await;
    for p in ["bob", "carol", "corrado", "dave"] {
        sees_online(&alice, p).await;
    }

    let started = Instant::now();
    let check: PeerCheck = get_json(alice.http_addr, "/api/peers/check?timeout_ms=1500").await;
    let took = started.elapsed();
    assert_eq!(check.timeout_ms, 1500);
    let names: Vec<&str> = check.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["bob", "carol", "corrado", "dave"]);
    for r in &check.results[..2] {
        assert!(r.answered, "{r:?}");
        let rtt = r.rtt_ms.unwrap();
        assert!(rtt > 0.0 && rtt < 1500.0, "{r:?}");
        assert_eq!(
            r.version.as_deref(),
            Some(format!("roundtable {}", roundtable_shared::VERSION).as_str())
        );
        assert_eq!(r.path, Some(PeerPath::Direct));
    }
    let classic = &check.results[2];
    assert!(!classic.answered);
    assert!(
        classic.error.as_deref().unwrap().contains("classic"),
        "{classic:?}"
    );
    let dead = &check.results[3];
    assert!(!dead.answered && dead.rtt_ms.is_none(), "{dead:?}");
    assert!(
        dead.error.as_deref().unwrap().contains("1500 ms"),
        "{dead:?}"
    );
    // The dead peer held the answer until the deadline, and no longer.
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(took < Duration::from_millis(4000), "{took:?}");

    // A deadline out of range is refused in words.
    let (status, body) = common::http(
        "GET",
        alice.http_addr,
        "/api/peers/check?timeout_ms=0",
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("timeout_ms must be"), "{body}");

    for n in [alice, bob, carol] {
        n.stop(Duration::from_secs(5)).await;
    }
    dir.stop().await;
}
