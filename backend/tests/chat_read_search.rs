//! Issue 16, the node's side: read state kept by the node and shared by
//! every browser of its user, and full-text search over all
//! conversations.

mod common;

use std::time::Duration;

use common::{eventually, get_json, http, node, sees_online, Directory};
use futures_util::StreamExt;
use roundtable_shared::api::{
    ChatSummary, Event, ReadState, SearchHit, SNIPPET_END, SNIPPET_START,
};

async fn next_read_state(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> ReadState {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let msg = ws.next().await.unwrap().unwrap();
            if let Ok(Event::ReadState { state }) = serde_json::from_str(&msg.into_text().unwrap())
            {
                return state;
            }
        }
    })
    .await
    .expect("a read state event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_read_in_one_browser_is_read_in_every_other() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    sees_online(&bob, "alice").await;
    for text in ["one", "two", "three"] {
        bob.chat.send("alice", text).await.unwrap();
    }
    let chats = eventually(10, "alice to have bob's three messages", || async {
        let chats: Vec<ChatSummary> = get_json(alice.http_addr, "/api/chats").await;
        chats.into_iter().find(|c| c.peer == "bob" && c.unread == 3)
    })
    .await;
    // Two browsers of alice's.
    let url = format!("ws://{}/ws", alice.http_addr);
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut second, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let last = chats.last.unwrap().seq;
    // The first reads up to the second message.
    let second_seq = last - 1;
    let (status, body) = http(
        "PUT",
        alice.http_addr,
        "/api/chats/bob/read",
        Some(&format!(r#"{{"seq": {second_seq}}}"#)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answered: ReadState = serde_json::from_str(&body).unwrap();
    assert_eq!((answered.last_read, answered.unread), (second_seq, 1));
    // Both browsers hear it; a fresh load agrees.
    assert_eq!(next_read_state(&mut second).await, answered);
    assert_eq!(next_read_state(&mut first).await, answered);
    let chats: Vec<ChatSummary> = get_json(alice.http_addr, "/api/chats").await;
    let bob_chat = chats.iter().find(|c| c.peer == "bob").unwrap();
    assert_eq!((bob_chat.last_read, bob_chat.unread), (second_seq, 1));
    // A lagging tab marking an older message moves nothing back.
    let (status, body) = http(
        "PUT",
        alice.http_addr,
        "/api/chats/bob/read",
        Some(r#"{"seq": 1}"#),
    )
    .await;
    assert_eq!(status, 200);
    let st: ReadState = serde_json::from_str(&body).unwrap();
    assert_eq!(st.last_read, second_seq);
    // Survives a restart of the node.
    let alice_data = data.path().join("alice");
    alice.stop(Duration::from_secs(5)).await;
    let cfg = roundtable::node::NodeConfig::local("alice", "pw", &dir.addr.to_string(), alice_data);
    let alice = roundtable::node::Node::start(cfg).await.unwrap();
    let chats: Vec<ChatSummary> = get_json(alice.http_addr, "/api/chats").await;
    assert_eq!(chats.iter().find(|c| c.peer == "bob").unwrap().unread, 1);
    // Bad input: a clear error.
    let (status, body) = http(
        "PUT",
        alice.http_addr,
        "/api/chats/bob/read",
        Some(r#"{"seq": "x"}"#),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = http(
        "PUT",
        alice.http_addr,
        "/api/chats/no%20such/read",
        Some(r#"{"seq": 1}"#),
    )
    .await;
    assert_eq!(status, 400);
    alice.stop(Duration::from_secs(5)).await;
    bob.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_a_word_sent_a_thousand_messages_ago() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    sees_online(&bob, "alice").await;
    bob.chat
        .send("alice", "The new checkpoint is in the shared folder")
        .await
        .unwrap();
    for i in 0..1000 {
        bob.chat
            .send("alice", &format!("status update {i}: all good"))
            .await
            .unwrap();
    }
    eventually(60, "alice to have all 1001 messages", || async {
        let chats: Vec<ChatSummary> = get_json(alice.http_addr, "/api/chats").await;
        chats
            .into_iter()
            .find(|c| c.peer == "bob" && c.count == 1001)
    })
    .await;
    let hits: Vec<SearchHit> = get_json(alice.http_addr, "/api/search?q=checkpoint").await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].message.peer, "bob");
    assert!(
        hits[0]
            .snippet
            .contains(&format!("{SNIPPET_START}checkpoint{SNIPPET_END}")),
        "{}",
        hits[0].snippet
    );
    // The hit's seq opens the conversation there: the page before it is
    // empty, the one at it starts with it.
    let page: Vec<roundtable_shared::api::ChatMessage> = get_json(
        alice.http_addr,
        &format!(
            "/api/chats/bob/messages?before={}&limit=1",
            hits[0].message.seq + 1
        ),
    )
    .await;
    assert_eq!(page[0].text, "The new checkpoint is in the shared folder");
    // Typing as a person does: prefixes, several words, syntax as text.
    let hits: Vec<SearchHit> = get_json(alice.http_addr, "/api/search?q=shared%20fold").await;
    assert_eq!(hits.len(), 1);
    let hits: Vec<SearchHit> =
        get_json(alice.http_addr, "/api/search?q=update%20999&limit=5").await;
    assert_eq!(hits.len(), 1);
    let (status, _) = http("GET", alice.http_addr, "/api/search?q=%22%28AND", None).await;
    assert_eq!(status, 200);
    let long = "x".repeat(300);
    let (status, body) = http(
        "GET",
        alice.http_addr,
        &format!("/api/search?q={long}"),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    alice.stop(Duration::from_secs(5)).await;
    bob.stop(Duration::from_secs(5)).await;
    dir.stop().await;
}
