//! Files to a peer reached only through the directory's relay (carol runs
//! without a chat listener, as `--chat none`): delivered whole and
//! verified, paced so chat keeps flowing beside them, resumed after the
//! receiver restarts, and whole even when the directory refuses frames
//! (its per-user budget exceeded) in the middle of one.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::files::{body, reaches, sha_hex, upload};
use common::{eventually, get_json, history, request, Directory};
use roundtable::node::{Node, NodeConfig};
use roundtable_shared::api::{Direction, Event, MessageState, TransferInfo, TransferState};

/// A node of `name`; `relay_only`: no chat listener.
async fn start(
    name: &str,
    dir: &Directory,
    data: &Path,
    relay_only: bool,
    edit: impl FnOnce(&mut NodeConfig),
) -> Node {
    let mut cfg = NodeConfig::local(name, "pw", &dir.addr.to_string(), data.join(name));
    if relay_only {
        cfg.chat_listen = None;
    }
    edit(&mut cfg);
    Node::start(cfg).await.unwrap()
}

/// Waits until `n` sees `peer` online through the relay only.
async fn sees_relayed(n: &Node, peer: &str) {
    eventually(
        10,
        &format!("{} to see {peer} through the relay", n.name),
        || async {
            n.peers
                .get(peer)
                .filter(|p| p.online && p.relay && p.port.is_none())
                .map(|_| ())
        },
    )
    .await;
}

fn partial_files(data: &Path, name: &str) -> usize {
    std::fs::read_dir(data.join(name).join("files/partial"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_reaches_a_relay_only_peer_paced_while_chat_flows() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let rate = 2 << 20;
    let alice = start("alice", &dir, data.path(), false, |c| {
        c.relay_file_rate = rate
    })
    .await;
    let carol = start("carol", &dir, data.path(), true, |_| {}).await;
    sees_relayed(&alice, "carol").await;
    let mut carol_events = carol.events.subscribe();
    let mut alice_events = alice.events.subscribe();

    let file = body(5 * 1024 * 1024 + 77, 3);
    let began = Instant::now();
    let t = upload(&alice, "carol", "weights.bin", &file)
        .await
        .remove(0);
    // Chat through the same relay while the file moves.
    let sending = reaches(&alice, &t.id, TransferState::Sending, 10).await;
    assert_eq!(sending.peer, "carol");
    let (status, _) = common::http(
        "POST",
        alice.http_addr,
        "/api/chats/carol/messages",
        Some(r#"{"text":"the weights are on their way"}"#),
    )
    .await;
    assert_eq!(status, 202);
    // And both ways, a message every 20 ms, sharing the channel with the
    // file's chunks and windows.
    let chatter = {
        let (a, c) = (alice.chat.clone(), carol.chat.clone());
        tokio::spawn(async move {
            for i in 0..60 {
                let _ = a.send("carol", &format!("from alice {i}")).await;
                let _ = c.send("alice", &format!("from carol {i}")).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let chatted = eventually(
        10,
        "the message to be delivered during the file",
        || async {
            history(&alice, "carol")
                .await
                .into_iter()
                .find(|m| m.state == MessageState::Delivered)
                .map(|_| Instant::now())
        },
    )
    .await;

    let out = reaches(&alice, &t.id, TransferState::Delivered, 30).await;
    let took = began.elapsed();
    let got = reaches(&carol, &t.id, TransferState::Delivered, 5).await;
    assert_eq!((got.direction, got.peer.as_str()), (Direction::In, "alice"));
    assert_eq!(
        (out.bytes, got.bytes),
        (file.len() as u64, file.len() as u64)
    );
    let placed = data.path().join("carol/files/received/weights.bin");
    assert_eq!(sha_hex(&std::fs::read(&placed).unwrap()), sha_hex(&file));
    assert_eq!(partial_files(data.path(), "carol"), 0);
    // The download on carol's side is the file.
    let path = format!("/api/files/{}/content", got.seq);
    let (status, _, bytes) = request("GET", carol.http_addr, &path, &[], b"").await;
    assert_eq!((status, sha_hex(&bytes)), (200, sha_hex(&file)));
    // The chat message did not wait for the file.
    assert!(
        chatted < began + took,
        "the message was delivered before the file was"
    );
    // Paced: after the first window, no faster than the rate.
    let floor = Duration::from_secs_f64((file.len() as f64 - (1 << 20) as f64) / rate as f64);
    assert!(
        took >= floor,
        "{took:?}: the file went faster than its pace allows ({floor:?})"
    );
    // Never interrupted: chat beside it lost none of its frames (each
    // sender's frames reach the channel in the order they were sealed).
    chatter.await.unwrap();
    while let Ok(ev) = alice_events.try_recv() {
        if let Event::Transfer { transfer: x } = ev {
            assert!(
                !(x.id == t.id && x.state == TransferState::Waiting),
                "the file was interrupted: {:?}",
                x.error
            );
        }
    }
    // Carol's dashboard saw it move.
    let mut moving = 0;
    while let Ok(ev) = carol_events.try_recv() {
        if let Event::Transfer { transfer: x } = ev {
            if x.id == t.id && x.rate.is_some() && x.bytes > 0 && x.bytes < file.len() as u64 {
                moving += 1;
            }
        }
    }
    assert!(moving >= 2, "carol saw {moving} progress events");
    alice.stop(Duration::from_secs(2)).await;
    carol.stop(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_file_resumes_after_the_receiver_restarts() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = start("alice", &dir, data.path(), false, |c| {
        c.relay_file_rate = 4 << 20
    })
    .await;
    let carol = start("carol", &dir, data.path(), true, |_| {}).await;
    sees_relayed(&alice, "carol").await;
    let file = body(24 * 1024 * 1024, 9);
    let t = upload(&alice, "carol", "checkpoint.pt", &file)
        .await
        .remove(0);
    // Carol stops a third of the way through (her checkpoints hold it).
    eventually(20, "carol to hold a third of the file", || async {
        let all: Vec<TransferInfo> = get_json(carol.http_addr, "/api/files").await;
        all.into_iter()
            .find(|x| x.id == t.id && x.bytes >= file.len() as u64 / 3)
    })
    .await;
    carol.stop(Duration::from_secs(2)).await;
    let mut events = alice.events.subscribe();
    let carol = start("carol", &dir, data.path(), true, |_| {}).await;
    let got = reaches(&carol, &t.id, TransferState::Delivered, 40).await;
    reaches(&alice, &t.id, TransferState::Delivered, 5).await;
    assert_eq!(
        sha_hex(&std::fs::read(data.path().join("carol/files/received/checkpoint.pt")).unwrap()),
        sha_hex(&file)
    );
    assert_eq!(got.bytes, file.len() as u64);
    // Every attempt after the restart started near where carol had
    // stopped (a state change, not a progress event, says where).
    let mut resumed_at = None::<u64>;
    while let Ok(ev) = events.try_recv() {
        if let Event::Transfer { transfer: x } = ev {
            if x.id == t.id && x.state == TransferState::Sending && x.rate.is_none() {
                resumed_at = Some(resumed_at.map_or(x.bytes, |b| b.min(x.bytes)));
            }
        }
    }
    let at = resumed_at.expect("alice sent again after the restart");
    assert!(
        at >= file.len() as u64 / 4,
        "resumed at {at}, not near where carol stopped"
    );
    assert_eq!(partial_files(data.path(), "carol"), 0);
    alice.stop(Duration::from_secs(2)).await;
    carol.stop(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_the_directory_refuses_mid_file_lose_nothing() {
    // A directory with a small byte budget per user, and alice unpaced:
    // her file's chunks overrun the budget and are refused (RELAYNAK).
    let dir = Directory::start_with(|c| {
        c.relay.bytes_per_second = 1 << 20;
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let alice = start("alice", &dir, data.path(), false, |c| c.relay_file_rate = 0).await;
    let carol = start("carol", &dir, data.path(), true, |_| {}).await;
    sees_relayed(&alice, "carol").await;
    let mut events = alice.events.subscribe();
    let file = body(6 * 1024 * 1024 + 5, 11);
    let t = upload(&alice, "carol", "dataset.csv", &file)
        .await
        .remove(0);
    reaches(&carol, &t.id, TransferState::Delivered, 60).await;
    reaches(&alice, &t.id, TransferState::Delivered, 5).await;
    assert_eq!(
        sha_hex(&std::fs::read(data.path().join("carol/files/received/dataset.csv")).unwrap()),
        sha_hex(&file)
    );
    // The directory refused chunks on the way; alice slowed down and
    // resumed, and said so.
    let mut slowed = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let Event::Transfer { transfer: x } = ev {
            if x.id == t.id && x.state == TransferState::Waiting {
                slowed.extend(x.error.filter(|e| e.contains("asked to slow down")));
            }
        }
    }
    assert!(
        !slowed.is_empty(),
        "the directory never refused a chunk: the test proves nothing"
    );
    assert_eq!(partial_files(data.path(), "carol"), 0);
    alice.stop(Duration::from_secs(2)).await;
    carol.stop(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_crossing_through_a_tight_relay_never_stall() {
    // Alice and carol each send the other a file through a directory with
    // a small byte budget per user. Alice keeps to a pace under it; carol
    // is unpaced, so the directory refuses her frames to alice: her file's
    // chunks, and with them the windows she grants alice's file (the same
    // budget pays for them). A refused window must be granted again: alice
    // is never refused anything, and must never wait. Each refusal also
    // makes carol offer her file again, which must resume at once, not be
    // turned away while her last attempt is still winding down at alice.
    // And the first frame each sends on the new channel (an offer) must not
    // be lost by overtaking the handshake's last message (it was, one run
    // in three: that sender waited out its 30 s offer timeout).
    let dir = Directory::start_with(|c| {
        c.relay.bytes_per_second = 2 << 20;
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let alice = start("alice", &dir, data.path(), true, |c| {
        c.relay_file_rate = 1 << 20
    })
    .await;
    let carol = start("carol", &dir, data.path(), true, |c| c.relay_file_rate = 0).await;
    sees_relayed(&alice, "carol").await;
    sees_relayed(&carol, "alice").await;
    let mut events = [alice.events.subscribe(), carol.events.subscribe()];
    let to_carol = body(4 * 1024 * 1024 + 3, 21);
    let to_alice = body(6 * 1024 * 1024 + 7, 22);
    let c = upload(&carol, "alice", "c.bin", &to_alice).await.remove(0);
    let a = upload(&alice, "carol", "a.bin", &to_carol).await.remove(0);
    reaches(&carol, &a.id, TransferState::Delivered, 90).await;
    reaches(&alice, &c.id, TransferState::Delivered, 90).await;
    reaches(&alice, &a.id, TransferState::Delivered, 5).await;
    reaches(&carol, &c.id, TransferState::Delivered, 5).await;
    for (who, name, want) in [("carol", "a.bin", &to_carol), ("alice", "c.bin", &to_alice)] {
        let got = std::fs::read(data.path().join(who).join("files/received").join(name)).unwrap();
        assert_eq!(sha_hex(&got), sha_hex(want), "{name} at {who}");
    }
    // What each sender said while its file waited.
    let mut waits: [Vec<String>; 2] = Default::default();
    for (rx, w) in events.iter_mut().zip(&mut waits) {
        while let Ok(ev) = rx.try_recv() {
            if let Event::Transfer { transfer: x } = ev {
                if x.direction == Direction::Out {
                    w.extend(x.error);
                }
            }
        }
    }
    let [alice_waits, carol_waits] = waits;
    assert!(
        carol_waits.iter().any(|e| e.contains("asked to slow down")),
        "the directory never refused carol's frames: the test proves nothing ({carol_waits:?})"
    );
    let other: Vec<_> = carol_waits
        .iter()
        .filter(|e| !e.contains("asked to slow down"))
        .collect();
    assert!(
        other.is_empty(),
        "carol's file waited for another reason: {other:?}"
    );
    assert!(
        alice_waits.is_empty(),
        "alice's file waited: {alice_waits:?}"
    );
    for who in ["alice", "carol"] {
        assert_eq!(partial_files(data.path(), who), 0, "{who}'s partial files");
    }
    alice.stop(Duration::from_secs(2)).await;
    carol.stop(Duration::from_secs(2)).await;
}
