//! Nodes started for real, with a directory, on port 0: chat delivery and
//! acknowledgement, the outbox, classic peers, the web API and its events.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::classic::ClassicPeer;
use common::{bind_raw, eventually, exact, get_json, history, http, node, sees_online, Directory};
use futures_util::StreamExt;
use roundtable::node::{Node, NodeConfig};
use roundtable_shared::api::{
    ChatMessage, Direction, Event, LinkState, Me, MessageState, PeerInfo,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_to_bob_is_delivered_stored_and_acknowledged() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    sees_online(&alice, "bob").await;

    // Through the web API, as the dashboard does it.
    let (status, body) = http(
        "POST",
        alice.http_addr,
        "/api/chats/bob/messages",
        Some(r#"{"text":"hello bob"}"#),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let accepted: ChatMessage = serde_json::from_str(&body).unwrap();
    assert_eq!(accepted.direction, Direction::Out);
    assert_eq!(accepted.text, "hello bob");

    let got = eventually(10, "bob to store it", || async {
        history(&bob, "alice").await.into_iter().next()
    })
    .await;
    assert_eq!(got.text, "hello bob");
    assert_eq!(
        got.id, accepted.id,
        "the sender's id travels with the message"
    );
    assert_eq!(got.direction, Direction::In);

    eventually(10, "alice's copy to become delivered", || async {
        let h = history(&alice, "bob").await;
        (h.len() == 1 && h[0].state == MessageState::Delivered).then_some(())
    })
    .await;
    // Both acknowledged writes were synced to disk before their answers
    // (alice's 202, bob's MSGACK).
    assert!(alice.chat.store().syncs_done() >= 1);
    assert!(bob.chat.store().syncs_done() >= 1);
    // And bob's API shows it.
    let page: Vec<ChatMessage> =
        get_json(bob.http_addr, "/api/chats/alice/messages?limit=10").await;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].text, "hello bob");
    let me: Me = get_json(bob.http_addr, "/api/me").await;
    assert_eq!(me.name, "bob");
    assert_eq!(me.directory_state, LinkState::Connected);

    alice.stop(Duration::from_secs(5)).await;
    bob.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_peer_gets_queued_messages_once_in_order_when_back() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    sees_online(&alice, "bob").await;
    bob.stop(Duration::from_secs(5)).await;
    eventually(10, "alice to see bob offline", || async {
        alice.peers.get("bob").filter(|p| !p.online).map(|_| ())
    })
    .await;

    for i in 0..5 {
        alice.chat.send("bob", &format!("m{i}")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        history(&alice, "bob")
            .await
            .iter()
            .all(|m| m.state == MessageState::Queued),
        "nothing can be sent while bob is away"
    );

    let bob = node("bob", &dir, data.path()).await;
    let got = eventually(15, "bob to get all five", || async {
        let h = history(&bob, "alice").await;
        (h.len() >= 5).then_some(h)
    })
    .await;
    let texts: Vec<_> = got.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    eventually(10, "all delivered", || async {
        history(&alice, "bob")
            .await
            .iter()
            .all(|m| m.state == MessageState::Delivered)
            .then_some(())
    })
    .await;
    // Still exactly once a moment later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(history(&bob, "alice").await.len(), 5);
    alice.stop(Duration::from_secs(5)).await;
    bob.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_peer_chats_with_a_node_over_raw_tcp() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    // corrado runs a classic client: a chat port registered at the directory.
    let mut corrado = ClassicPeer::listen().await;
    corrado.register("corrado", "pw", dir.addr).await;

    let mut nc = TcpStream::connect(alice.chat_addr).await.unwrap();
    nc.write_all(b"PING 0\n").await.unwrap();
    exact(&mut nc, "PONG 0\n").await;
    nc.write_all(b"MESSAGE 12 corrado\nHello world!")
        .await
        .unwrap();
    let got = eventually(10, "alice to store corrado's message", || async {
        history(&alice, "corrado").await.into_iter().next()
    })
    .await;
    assert_eq!(got.text, "Hello world!");
    assert!(!got.verified, "a plain connection only claims its sender");
    // Alice answers; it goes to the port corrado registered, in the plain form.
    sees_online(&alice, "corrado").await;
    alice.chat.send("corrado", "hi corrado").await.unwrap();
    corrado.wait_for("MESSAGE 10 alice\nhi corrado", 10).await;
    eventually(10, "the reply marked sent", || async {
        history(&alice, "corrado")
            .await
            .iter()
            .any(|m| m.direction == Direction::Out && m.state == MessageState::Sent)
            .then_some(())
    })
    .await;
    // Nonsense gets an ERR, as in the original; nothing else came back here.
    nc.write_all(b"HELLO 0\n").await.unwrap();
    exact(&mut nc, "ERR 38\nI did not understand the message HELLO").await;
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_ids_are_acknowledged_but_stored_once() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let mut s = TcpStream::connect(alice.chat_addr).await.unwrap();
    s.write_all(b"PING 0 roundtable/1\n").await.unwrap();
    exact(&mut s, "PONG 0 roundtable/1\n").await;
    let msg = b"MSG 5 zed 00ff00ff\nhello";
    s.write_all(msg).await.unwrap();
    exact(&mut s, "MSGACK 0 00ff00ff\n").await;
    s.write_all(&[&msg[..], &msg[..]].concat()).await.unwrap();
    exact(
        &mut s,
        "MSGACK 0 00ff00ffMSGACK 0 00ff00ff\n"
            .replace("ffMSG", "ff\nMSG")
            .as_str(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(history(&alice, "zed").await.len(), 1);
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_sees_each_kind_of_event() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    // Alice runs a local training step, so that its output is an event too.
    let script = data.path().join("train.sh");
    std::fs::write(&script, "echo \"step $1 round $5\"\n").unwrap();
    let mut cfg = NodeConfig::local(
        "alice",
        "pw",
        &dir.addr.to_string(),
        data.path().join("alice"),
    );
    cfg.train_cmd = Some(vec!["sh".into(), script.display().to_string()]);
    let alice = Node::start(cfg).await.unwrap();
    let url = format!("ws://{}/ws", alice.http_addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let bob = node("bob", &dir, data.path()).await;

    let mut kinds = std::collections::BTreeSet::new();
    let mut sent = false;
    let mut notified = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let wanted = ["peer", "message", "message_state", "training", "run_output"];
    while !wanted.iter().all(|k| kinds.contains(*k)) {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("saw only {kinds:?}"))
            .unwrap()
            .unwrap();
        let text = next.into_text().unwrap();
        let ev: Event = serde_json::from_str(&text).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        kinds.insert(v["type"].as_str().unwrap().to_owned());
        if let Event::RunOutput { line, round, .. } = &ev {
            assert_eq!(*round, 0);
            assert_eq!(line, "step train round 0");
        }
        if let Event::Peer {
            peer: PeerInfo { online: true, .. },
        } = ev
        {
            if !sent {
                sent = true;
                alice.chat.send("bob", "ping over ws").await.unwrap();
            }
        }
        if !notified {
            notified = true;
            let notify = alice.notify_addr.unwrap();
            let body = r#"{"notification_type":"UPDATE_ROUND_START","training_uuid":"7d5e1a4c-2b7e-4c1e-9a53-0d6f6a1b2c3d","body":{"round":0,"global_model_uuid":"0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"}}"#;
            let (status, _) = http("POST", notify, "/", Some(body)).await;
            assert_eq!(status, 202);
        }
    }
    // Cross-origin pages may not open it.
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(&url)
            .unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    alice.stop(Duration::from_secs(5)).await;
    bob.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_api_input_gets_clear_errors() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let a: SocketAddr = alice.http_addr;
    for (path, body, status) in [
        ("/api/chats/bob/messages", "not json", 400),
        ("/api/chats/bob/messages", r#"{"text":""}"#, 400),
        ("/api/chats/bob/messages", r#"{"nope":1}"#, 422),
        ("/api/chats/a,b/messages", r#"{"text":"x"}"#, 400),
        ("/api/chats/alice/messages", r#"{"text":"x"}"#, 400),
    ] {
        let (got, text) = http("POST", a, path, Some(body)).await;
        assert_eq!(got, status, "{path} {body}: {text}");
        assert!(text.contains("error"), "{text}");
    }
    // A name nobody has heard of (a typo, most often): refused with a
    // sentence, queued only when the person insists.
    let (got, text) = http(
        "POST",
        a,
        "/api/chats/dave/messages",
        Some(r#"{"text":"hi"}"#),
    )
    .await;
    assert_eq!(got, 404, "{text}");
    assert!(
        text.contains("nobody named \\\"dave\\\" is known"),
        "{text}"
    );
    let chats: Vec<roundtable_shared::api::ChatSummary> = get_json(a, "/api/chats").await;
    assert!(chats.is_empty(), "nothing stored: {chats:?}");
    let (got, text) = http(
        "POST",
        a,
        "/api/chats/dave/messages",
        Some(r#"{"text":"hi", "force": true}"#),
    )
    .await;
    assert_eq!(got, 202, "{text}");
    // Now there is a conversation: no need to insist again.
    let (got, _) = http(
        "POST",
        a,
        "/api/chats/dave/messages",
        Some(r#"{"text":"again"}"#),
    )
    .await;
    assert_eq!(got, 202);
    let huge = format!(r#"{{"text":"{}"}}"#, "x".repeat(200_000));
    assert_eq!(
        http("POST", a, "/api/chats/bob/messages", Some(&huge))
            .await
            .0,
        413
    );
    assert_eq!(http("GET", a, "/api/trainings/nope", None).await.0, 404);
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_rebinds_when_the_directory_returns_and_leaves_on_stop() {
    let dir = Directory::start().await;
    let addr = dir.addr;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    sees_online(&bob, "alice").await;

    dir.stop().await;
    eventually(10, "alice to notice the directory is gone", || async {
        (alice.directory.current() == LinkState::Reconnecting).then_some(())
    })
    .await;
    let dir = Directory::start_at(addr).await;
    eventually(20, "alice to bind again", || async {
        (alice.directory.current() == LinkState::Connected).then_some(())
    })
    .await;
    sees_online(&bob, "alice").await;

    // Stopping sends LEAVE: bob sees alice go offline without waiting for
    // the liveness checker to notice.
    alice.stop(Duration::from_secs(5)).await;
    eventually(10, "bob to see alice offline", || async {
        bob.peers.get("alice").filter(|p| !p.online).map(|_| ())
    })
    .await;
    bob.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

/// A browser that falls behind the event stream is disconnected (it then
/// reconnects and refetches) instead of slowing the node down.
#[tokio::test]
async fn a_websocket_client_that_falls_behind_is_dropped() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", alice.http_addr))
        .await
        .unwrap();
    // On this single-threaded runtime nothing else runs while we publish,
    // so the forwarder finds itself far more than its buffer behind.
    const N: usize = 20_000;
    for _ in 0..N {
        alice.events.publish(Event::Directory {
            state: LinkState::Connected,
        });
    }
    let mut received = 0;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(m))) if m.is_close() => break true,
            Ok(Some(Ok(_))) => received += 1,
            Ok(Some(Err(_))) | Ok(None) => break true,
            Err(_) => break false,
        }
    };
    assert!(closed, "the lagging client was not disconnected");
    assert!(
        received < N,
        "it got everything ({received}), so it was not behind"
    );
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

/// A Roundtable peer of before the secure channel (`roundtable/1` only),
/// listening on 127.0.0.1: answers `PING`, and for each `MSG` waits for
/// `on_msg(id)`: `true` acknowledges it, `false` hangs up. Returns its port.
async fn plain_roundtable_peer<F, Fut>(on_msg: F) -> u16
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    use roundtable::framing::Connection;
    use roundtable_shared::frame::Limits;
    use roundtable_shared::peer::{Capabilities, PeerFrame};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let on_msg = on_msg.clone();
            tokio::spawn(async move {
                let mut conn = Connection::new(s, Limits::default());
                while let Ok(Some(f)) = conn.read_frame().await {
                    match PeerFrame::parse(&f) {
                        Ok(PeerFrame::Ping { .. }) => {
                            let caps = Capabilities {
                                roundtable: true,
                                secure: false,
                                aesgcm: false,
                                room_files: false,
                            };
                            let pong = PeerFrame::Pong { caps }.to_frame();
                            conn.write_frame(&pong).await.unwrap();
                        }
                        Ok(PeerFrame::Msg { id, .. }) => {
                            if !on_msg(id.clone()).await {
                                return;
                            }
                            let ack = PeerFrame::MsgAck { id }.to_frame();
                            conn.write_frame(&ack).await.unwrap();
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    port
}

/// A Roundtable peer that holds its acknowledgements until told: the sender
/// records `sent` while it waits, then `delivered` when the ack comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_acknowledgement_is_recorded_as_sent_then_delivered() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;

    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let port = plain_roundtable_peer(move |_| {
        let mut release = release_rx.clone();
        async move { release.wait_for(|go| *go).await.is_ok() }
    })
    .await;
    // zed registers where that peer listens (the directory tests the port).
    let _session = bind_raw(dir.addr, "zed", port).await;
    sees_online(&alice, "zed").await;

    let sent = alice.chat.send("zed", "take your time").await.unwrap();
    let state = || async { alice.chat.store().get(sent.seq).unwrap().map(|m| m.state) };
    eventually(10, "sent recorded while the ack is awaited", || async {
        (state().await == Some(MessageState::Sent)).then_some(())
    })
    .await;
    release_tx.send(true).unwrap();
    eventually(10, "delivered once acknowledged", || async {
        (state().await == Some(MessageState::Delivered)).then_some(())
    })
    .await;
    assert!(alice.chat.store().outbox("zed", 10).unwrap().is_empty());
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

/// A link that breaks after the message was written but before it was
/// acknowledged: the browser is told `sent`, then `queued` again (the
/// store still says queued, and the message waits for the next attempt),
/// not left believing it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_link_breaks_before_its_ack_reads_queued_again() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    // Takes the message and hangs up without an ack.
    let port = plain_roundtable_peer(|_| async { false }).await;
    let _session = bind_raw(dir.addr, "zed", port).await;
    sees_online(&alice, "zed").await;

    let mut events = alice.events.subscribe();
    let sent = alice.chat.send("zed", "will you take it").await.unwrap();
    let mut states = Vec::new();
    while states.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("state events")
            .unwrap();
        if let Event::MessageState { id, state, .. } = e {
            if id == sent.id {
                states.push(state);
            }
        }
    }
    assert_eq!(states, [MessageState::Sent, MessageState::Queued]);
    let stored = alice.chat.store().get(sent.seq).unwrap().unwrap();
    assert_eq!(stored.state, MessageState::Queued);
    alice.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_links_give_way_when_the_nodes_links_run_short() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    // Alice may have two outgoing links at once; she writes to three.
    let alice = {
        let cfg = NodeConfig::local(
            "alice",
            "pw",
            &dir.addr.to_string(),
            data.path().join("alice"),
        );
        let mut chat = roundtable::node::chat::ChatConfig::new("alice");
        chat.max_links = 2;
        Node::start_with(cfg, chat).await.unwrap()
    };
    let peers = [
        node("bob", &dir, data.path()).await,
        node("carol", &dir, data.path()).await,
        node("dave", &dir, data.path()).await,
    ];
    for p in &peers {
        sees_online(&alice, &p.name).await;
    }
    // Each delivered, then its link idle: bob's is kept (one of two links
    // still free), carol's is not (none would be).
    let started = std::time::Instant::now();
    for p in &peers {
        let text = format!("hello {}", p.name);
        alice.chat.send(&p.name, &text).await.unwrap();
        // Well under the 60 s an idle link is otherwise kept.
        eventually(
            15,
            &format!("{} to get alice's message", p.name),
            || async {
                let h = history(&alice, &p.name).await;
                (h.len() == 1 && h[0].state == MessageState::Delivered).then_some(())
            },
        )
        .await;
        assert_eq!(history(p, "alice").await[0].text, text);
    }
    eprintln!("three peers reached in {:?}", started.elapsed());
    // Bob's kept link still serves him without a new one.
    let opened = alice.chat.links_opened();
    alice.chat.send("bob", "again").await.unwrap();
    eventually(10, "bob to get the second message", || async {
        (history(&peers[0], "alice").await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(alice.chat.links_opened(), opened, "bob's link was kept");
    alice.stop(Duration::from_secs(5)).await;
    for p in peers {
        p.stop(Duration::from_secs(5)).await;
    }
    dir.stop().await;
}
