//! Peer chat against bad faith (issue 12, findings 1, 2 and 4): a claimed
//! sender is only a claim, a claimed name never becomes the way to that
//! user, and one source cannot take the chat port's slots (nor, through
//! them, the node's directory listing). Real nodes on loopback; other
//! sources are played from 127.0.0.2.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{eventually, exact, get_json, history, node, sees_online, Directory};
use roundtable::directory::checker::CheckerConfig;
use roundtable::node::chat::ChatConfig;
use roundtable::node::{Node, NodeConfig};
use roundtable_shared::api::{ChatMessage, Direction, MessageState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    s.connect(to).await
}

/// Finding 1 (and issue 13): anyone who reaches a chat port can name any
/// sender. A plain message naming a Roundtable node (one with a key) is
/// refused and never shown as that node's; a plain message naming anyone
/// else is stored, served and shown as unverified, in both forms; what
/// bob really sends arrives over the secure channel, verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_sender_is_refused_or_unverified_and_the_real_one_verified() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    sees_online(&alice, "bob").await;
    eventually(
        10,
        "alice to learn bob's key from the directory",
        || async { alice.peers.get("bob").and_then(|p| p.fingerprint) },
    )
    .await;

    let mut mallory = connect_from("127.0.0.2", alice.chat_addr).await.unwrap();
    mallory.write_all(b"PING 0 roundtable/1\n").await.unwrap();
    exact(&mut mallory, "PONG 0 roundtable/1\n").await;
    mallory
        .write_all(b"MSG 6 bob 0123abcd\nforgedMESSAGE 7 bob\nforged2")
        .await
        .unwrap();
    let refusal = "bob is a Roundtable node: its messages come over its secure channel only";
    let err = format!("ERR {}\n{refusal}", refusal.len());
    exact(&mut mallory, &format!("{err}{err}")).await;
    // Someone without a key is a classic peer as far as anyone can tell.
    mallory
        .write_all(b"MSG 5 carol 4567cdef\nhello")
        .await
        .unwrap();
    exact(&mut mallory, "MSGACK 0 4567cdef\n").await;

    alice.chat.send("bob", "mine").await.unwrap();
    bob.chat.send("alice", "really bob").await.unwrap();
    // Through the web API, as the dashboard reads it.
    let page: Vec<ChatMessage> = eventually(10, "bob's real message", || async {
        let page: Vec<ChatMessage> =
            get_json(alice.http_addr, "/api/chats/bob/messages?limit=10").await;
        page.iter()
            .any(|m| m.direction == Direction::In)
            .then_some(page)
    })
    .await;
    let inbound: Vec<(&str, bool)> = page
        .iter()
        .filter(|m| m.direction == Direction::In)
        .map(|m| (m.text.as_str(), m.verified))
        .collect();
    assert_eq!(inbound, [("really bob", true)], "no forgery shown as bob's");
    let carol: Vec<ChatMessage> =
        get_json(alice.http_addr, "/api/chats/carol/messages?limit=10").await;
    assert_eq!(carol.len(), 1);
    assert!(!carol[0].verified, "a claim is shown as a claim");
    // The raw JSON says so too (what other API clients see).
    let (_, body) = common::http(
        "GET",
        alice.http_addr,
        "/api/chats/carol/messages?limit=10",
        None,
    )
    .await;
    assert!(body.contains(r#""verified":false"#), "{body}");

    alice.stop(Duration::from_secs(5)).await;
    bob.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

/// Finding 2: while bob is offline, a connection that claims to be bob
/// must not become the path for alice's messages to bob. They wait,
/// queued, for the address the directory gives for bob, and reach the real
/// bob once he is back, exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claiming_an_offline_users_name_does_not_receive_their_messages() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;

    // mallory claims to be bob, who is not online, and listens.
    let mut mallory = connect_from("127.0.0.2", alice.chat_addr).await.unwrap();
    mallory.write_all(b"MESSAGE 5 bob\nhello").await.unwrap();
    eventually(10, "alice to store 'bob's' message", || async {
        (history(&alice, "bob").await.len() == 1).then_some(())
    })
    .await;
    for i in 0..20 {
        alice
            .chat
            .send("bob", &format!("for bob {i}"))
            .await
            .unwrap();
    }
    // Nothing of it reaches mallory.
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(Duration::from_millis(1500), mallory.read(&mut buf)).await {
        Err(_) => {}
        Ok(Ok(n)) => assert_eq!(n, 0, "mallory got {:?}", String::from_utf8_lossy(&buf[..n])),
        Ok(Err(_)) => {}
    }
    let ours = |h: Vec<ChatMessage>| -> Vec<ChatMessage> {
        h.into_iter()
            .filter(|m| m.direction == Direction::Out)
            .collect()
    };
    assert!(
        ours(history(&alice, "bob").await)
            .iter()
            .all(|m| m.state == MessageState::Queued),
        "nothing counts as sent while bob is away"
    );

    // The real bob comes online and gets all twenty.
    let bob = node("bob", &dir, data.path()).await;
    let got = eventually(15, "bob to get all twenty", || async {
        let h = history(&bob, "alice").await;
        (h.len() >= 20).then_some(h)
    })
    .await;
    let texts: Vec<String> = got.iter().map(|m| m.text.clone()).collect();
    let want: Vec<String> = (0..20).map(|i| format!("for bob {i}")).collect();
    assert_eq!(texts, want);
    eventually(10, "all delivered", || async {
        ours(history(&alice, "bob").await)
            .iter()
            .all(|m| m.state == MessageState::Delivered)
            .then_some(())
    })
    .await;
    alice.stop(Duration::from_secs(5)).await;
    bob.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

/// The directory's answer to `QUERY 0 alice`, over a fresh session.
async fn listed(directory: SocketAddr, who: &str) -> bool {
    let mut s = TcpStream::connect(directory).await.unwrap();
    s.write_all(format!("USER 0 probe\nPASS 0 pw\nQUERY 0 {who}\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&out).contains("RESULT") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        out.extend_from_slice(&buf[..n]);
    }
    // RESULT's payload may come in the next read.
    tokio::time::sleep(Duration::from_millis(50)).await;
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).contains(&format!("{who},"))
}

/// Finding 4 (the chat port's side): 300 idle connections from one
/// address took every inbound slot, so the directory's liveness check
/// failed and dropped the node. Now one source holds a bounded share, the
/// rest are closed at once, and the checker (from another address) keeps
/// finding the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_take_the_chat_port_or_the_directory_listing() {
    // A liveness checker that sweeps every 100 ms.
    let dir = Directory::start_with_checker(CheckerConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        parallelism: 16,
    })
    .await;
    let directory = dir.addr;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    eventually(10, "alice listed", || async {
        listed(directory, "alice").await.then_some(())
    })
    .await;

    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = connect_from("127.0.0.2", alice.chat_addr).await {
            idle.push(s);
        }
    }
    // Those over the per-source share are closed as soon as they are
    // accepted (the node may still be working through its backlog: look
    // again until it has, 5 s at most). A closed one stays closed.
    let share = ChatConfig::new("x").max_inbound_per_source;
    let mut closed = vec![false; idle.len()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        for (s, closed) in idle.iter_mut().zip(closed.iter_mut()) {
            if !*closed {
                let mut b = [0u8; 16];
                // Still open (waiting for a first frame) unless closed or reset.
                let r = tokio::time::timeout(Duration::from_millis(5), s.read(&mut b)).await;
                *closed = r.is_ok();
            }
        }
        let open = closed.iter().filter(|c| !**c).count();
        if open <= share {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} idle connections from one address held"
        );
    }

    // Several sweeps of the checker during the attack: alice stays listed,
    // and PING from elsewhere is still answered.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    roundtable::framing::ping("127.0.0.1", alice.chat_addr.port(), Duration::from_secs(2))
        .await
        .expect("PING answered during the attack");
    assert!(
        listed(directory, "alice").await,
        "alice dropped from the directory"
    );
    drop(idle);
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

/// A connection that sends nothing is closed at the first-frame deadline;
/// one that spoke stays until it is idle for longer than the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_chat_connections_are_closed_at_the_deadline() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut chat = ChatConfig::new("alice");
    chat.first_frame_timeout = Duration::from_millis(300);
    chat.inbound_idle_timeout = Duration::from_secs(30);
    let cfg = NodeConfig::local("alice", "pw", &dir.addr.to_string(), data.path().join("a"));
    let alice = Node::start_with(cfg, chat).await.unwrap();

    let mut silent = TcpStream::connect(alice.chat_addr).await.unwrap();
    let mut talker = TcpStream::connect(alice.chat_addr).await.unwrap();
    talker.write_all(b"PING 0\n").await.unwrap();
    exact(&mut talker, "PONG 0\n").await;

    let mut b = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut b))
        .await
        .expect("the silent connection is closed within the deadline")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&b[..n]));
    // The one that spoke is still served.
    talker.write_all(b"PING 0\n").await.unwrap();
    exact(&mut talker, "PONG 0\n").await;
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}
