//! `roundtable node` processes killed with SIGKILL keep every accepted
//! message: the sender's outbox and history, the receiver's history.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{eventually, get_json, http, Directory};
use roundtable_shared::api::{ChatMessage, MessageState};

const BIN: &str = env!("CARGO_BIN_EXE_roundtable");

/// A node process and its web address (read from what it prints).
struct Proc {
    child: Child,
    http: SocketAddr,
}

fn spawn(name: &str, dir: SocketAddr, data: &Path) -> Proc {
    let mut child = Command::new(BIN)
        .args(["node", "--name", name, "--directory", &dir.to_string()])
        .args(["--chat", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data"])
        .arg(data.join(name))
        .env("ROUNDTABLE_PASSWORD", "pw")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let http = loop {
        let line = lines
            .next()
            .expect("the node prints its addresses")
            .unwrap();
        if let Some(url) = line.trim().strip_prefix("dashboard  http://") {
            break url.parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Proc { child, http }
}

impl Proc {
    fn kill9(mut self) {
        let status = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = self.child.wait();
    }
}

async fn messages(p: &Proc, peer: &str) -> Vec<ChatMessage> {
    get_json(p.http, &format!("/api/chats/{peer}/messages?limit=100")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_accepted_message_sent_or_received() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();

    // Bob is away; Alice accepts three messages for him, then dies hard.
    let alice = spawn("alice", dir.addr, data.path());
    for i in 0..3 {
        let (status, body) = http(
            "POST",
            alice.http,
            "/api/chats/bob/messages",
            Some(&format!(r#"{{"text":"note {i}"}}"#)),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    alice.kill9();

    let alice = spawn("alice", dir.addr, data.path());
    let kept = messages(&alice, "bob").await;
    let texts: Vec<_> = kept.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["note 0", "note 1", "note 2"]);
    assert!(kept.iter().all(|m| m.state == MessageState::Queued));

    // Bob comes; the outbox drains into his history.
    let bob = spawn("bob", dir.addr, data.path());
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
    let bob = spawn("bob", dir.addr, data.path());
    let got = messages(&bob, "alice").await;
    let texts: Vec<_> = got.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["note 0", "note 1", "note 2"]);
    bob.kill9();
    alice.kill9();
    dir.stop().await;
}
