//! `roundtable node` processes killed with SIGKILL keep every accepted
//! message: the sender's outbox and history, the receiver's history.

mod common;

use common::process::NodeProc;
use common::{eventually, get_json, http, Directory};
use roundtable_shared::api::{ChatMessage, MessageState};

async fn messages(p: &NodeProc, peer: &str) -> Vec<ChatMessage> {
    get_json(p.http, &format!("/api/chats/{peer}/messages?limit=100")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_accepted_message_sent_or_received() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();

    // Bob is away; Alice accepts three messages for him, then dies hard.
    let alice = NodeProc::spawn("alice", dir.addr, data.path(), "127.0.0.1:0");
    for i in 0..3 {
        let (status, body) = http(
            "POST",
            alice.http,
            "/api/chats/bob/messages",
            // Bob has never been seen by this node: alice insists.
            Some(&format!(r#"{{"text":"note {i}", "force": true}}"#)),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    alice.kill9();

    let alice = NodeProc::spawn("alice", dir.addr, data.path(), "127.0.0.1:0");
    let kept = messages(&alice, "bob").await;
    let texts: Vec<_> = kept.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["note 0", "note 1", "note 2"]);
    assert!(kept.iter().all(|m| m.state == MessageState::Queued));

    // Bob comes; the outbox drains into his history.
    let bob = NodeProc::spawn("bob", dir.addr, data.path(), "127.0.0.1:0");
    eventually(20, "all three delivered", || async {
        let m = messages(&alice, "bob").await;
        m.iter()
            .all(|m| m.state == MessageState::Delivered)
            .then_some(())
    })
    .await;
    assert_eq!(messages(&bob, "alice").await.len(), 3);

    // Bob dies hard too: what he received is still there.
    bob.kill9();
    let bob = NodeProc::spawn("bob", dir.addr, data.path(), "127.0.0.1:0");
    let got = messages(&bob, "alice").await;
    let texts: Vec<_> = got.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["note 0", "note 1", "note 2"]);
    bob.kill9();
    alice.kill9();
    dir.stop().await;
}
