//! Files posted into a room (issues 14 and 16): one upload reaches every
//! member in the room, each receiver shows it in that room, and a peer's
//! claim that a file belongs to a room counts only if the receiver's own
//! member list has both of them in it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::files::sha_hex;
use common::{eventually, get_json, http, request, sees_online, Directory};
use roundtable::node::Node;
use roundtable_shared::api::{Direction, RoomSummary, TransferInfo, TransferState};

async fn create(at: SocketAddr, name: &str, members: &[&str]) -> RoomSummary {
    let body = serde_json::json!({ "name": name, "members": members }).to_string();
    let (status, body) = http("POST", at, "/api/rooms", Some(&body)).await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Posts `body` as file `name` into room `room` at `at`: status and answer.
async fn post_file(at: SocketAddr, room: &str, name: &str, body: &[u8]) -> (u16, String) {
    let path = format!("/api/rooms/{room}/files?name={name}");
    let (status, _, out) = request("POST", at, &path, &[], body).await;
    (status, String::from_utf8_lossy(&out).into_owned())
}

async fn has_room(at: SocketAddr, id: &str) -> Option<()> {
    let (status, _) = http("GET", at, &format!("/api/rooms/{id}"), None).await;
    (status == 200).then_some(())
}

/// `n`'s transfers named `name`.
async fn files_named(n: &Node, name: &str) -> Vec<TransferInfo> {
    let all: Vec<TransferInfo> = get_json(n.http_addr, "/api/files").await;
    all.into_iter().filter(|t| t.name == name).collect()
}

/// Waits until `n` holds file `name` delivered, and returns it.
async fn delivered(n: &Node, name: &str) -> TransferInfo {
    eventually(20, &format!("{} to have {name}", n.name), || async {
        files_named(n, name)
            .await
            .into_iter()
            .find(|t| t.state == TransferState::Delivered)
    })
    .await
}

async fn content(n: &Node, seq: i64) -> Vec<u8> {
    let path = format!("/api/files/{seq}/content");
    let (status, _, body) = request("GET", n.http_addr, &path, &[], b"").await;
    assert_eq!(status, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_posted_in_a_room_reaches_every_member_and_shows_in_that_room() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = common::node("alice", &dir, data.path()).await;
    let bob = common::node("bob", &dir, data.path()).await;
    let carol = common::node("carol", &dir, data.path()).await;
    let dave = common::node("dave", &dir, data.path()).await;
    for p in ["bob", "carol", "dave"] {
        sees_online(&alice, p).await;
    }
    sees_online(&bob, "carol").await;
    let wg = create(alice.http_addr, "Working group", &["bob", "carol"]).await;
    for n in [&bob, &carol] {
        eventually(10, "the room to reach every member", || {
            has_room(n.http_addr, &wg.id)
        })
        .await;
    }

    let file: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let (status, body) = post_file(alice.http_addr, &wg.id, "plan%20v2.pdf", &file).await;
    assert_eq!(status, 201, "{body}");
    let sent: Vec<TransferInfo> = serde_json::from_str(&body).unwrap();
    let mut to: Vec<&str> = sent.iter().map(|t| t.peer.as_str()).collect();
    to.sort();
    assert_eq!(to, ["bob", "carol"], "one transfer per other member");
    assert!(sent
        .iter()
        .all(|t| t.room.as_deref() == Some(wg.id.as_str()) && t.direction == Direction::Out));

    for n in [&bob, &carol] {
        let got = delivered(n, "plan v2.pdf").await;
        assert_eq!(got.peer, "alice");
        assert_eq!(
            got.room.as_deref(),
            Some(wg.id.as_str()),
            "shown in the room"
        );
        assert_eq!(got.sha256, sha_hex(&file));
        assert_eq!(content(n, got.seq).await, file);
    }
    eventually(10, "alice to hear both deliveries", || async {
        let out = files_named(&alice, "plan v2.pdf").await;
        (out.len() == 2 && out.iter().all(|t| t.state == TransferState::Delivered)).then_some(())
    })
    .await;
    assert!(
        files_named(&dave, "plan v2.pdf").await.is_empty(),
        "not to a non-member"
    );

    // Any member may post one; once carol left, files go to the others only.
    let (status, body) = http(
        "POST",
        carol.http_addr,
        &format!("/api/rooms/{}/leave", wg.id),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually(10, "bob to see carol leave", || async {
        let r: RoomSummary = get_json(bob.http_addr, &format!("/api/rooms/{}", wg.id)).await;
        r.members
            .iter()
            .any(|m| m.name == "carol" && !m.present)
            .then_some(())
    })
    .await;
    let (status, body) = post_file(bob.http_addr, &wg.id, "notes.txt", b"round 3 notes").await;
    assert_eq!(status, 201, "{body}");
    let sent: Vec<TransferInfo> = serde_json::from_str(&body).unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].peer, "alice");
    let got = delivered(&alice, "notes.txt").await;
    assert_eq!(got.room.as_deref(), Some(wg.id.as_str()));
    // Carol, out of the room, can post nothing into it.
    let (status, body) = post_file(carol.http_addr, &wg.id, "late.txt", b"x").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not in this room"), "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(files_named(&carol, "notes.txt").await.is_empty());

    // A room of one has nobody to send to; an unknown room is not found.
    let alone = create(dave.http_addr, "Just me", &[]).await;
    let (status, body) = post_file(dave.http_addr, &alone.id, "a.txt", b"x").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nobody else"), "{body}");
    let (status, body) = post_file(dave.http_addr, &"f".repeat(32), "a.txt", b"x").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        files_named(&dave, "a.txt").await.is_empty(),
        "nothing queued"
    );
}

/// Mallory, a Roundtable peer outside the room, offers bob a file naming a
/// room alice and bob share: bob takes the file as one from mallory, not
/// as a post in the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_claimed_for_a_room_the_sender_is_not_in_is_shown_as_from_the_sender() {
    use roundtable_shared::binary::{footer, Header};
    use roundtable_shared::frame::Frame;
    use roundtable_shared::transfer::{ExchangeMeta, FileOffer, FileReply, TransferFrame};

    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = common::node("alice", &dir, data.path()).await;
    let bob = common::node("bob", &dir, data.path()).await;
    sees_online(&alice, "bob").await;
    let wg = create(alice.http_addr, "Working group", &["bob"]).await;
    eventually(10, "bob to have the room", || {
        has_room(bob.http_addr, &wg.id)
    })
    .await;

    let mut link = common::own_link("mallory", data.path(), "bob", bob.chat_addr.port()).await;
    let body = b"not really the group's file".to_vec();
    let sha = sha_hex(&body);
    let id = "0123456789abcdef0123456789abcdef".to_owned();
    let offer = FileOffer {
        id: id.clone(),
        name: "forged.bin".into(),
        size: body.len() as u64,
        sha256: sha.clone(),
        room: Some(wg.id.clone()),
    };
    let t = Duration::from_secs(5);
    link.send(&[TransferFrame::Offer(offer).to_frame()], t)
        .await
        .unwrap();
    let reply = TransferFrame::parse(&link.recv(t).await.unwrap()).unwrap();
    assert!(
        matches!(
            reply,
            TransferFrame::Reply {
                reply: FileReply::Resume { offset: 0 },
                ..
            }
        ),
        "{reply:?}"
    );
    let meta = serde_json::to_vec(&ExchangeMeta {
        id,
        sender: "mallory".into(),
        file_name: "forged.bin".into(),
        size: body.len() as u64,
        sha256: sha,
        offset: 0,
    })
    .unwrap();
    let mut exchange = Header {
        meta_size: meta.len() as u32,
        body_size: body.len() as u64,
    }
    .encode()
    .to_vec();
    exchange.extend_from_slice(&meta);
    exchange.extend_from_slice(&body);
    exchange.extend_from_slice(&footer(crc32fast::hash(&body)));
    link.send(&[Frame::bare("FILEDATA", exchange)], t)
        .await
        .unwrap();
    let verdict = TransferFrame::parse(&link.recv(t).await.unwrap()).unwrap();
    assert!(
        matches!(
            verdict,
            TransferFrame::Reply {
                reply: FileReply::Done,
                ..
            }
        ),
        "{verdict:?}"
    );
    let got = delivered(&bob, "forged.bin").await;
    assert_eq!(got.peer, "mallory");
    assert_eq!(got.room, None, "not in a room mallory is not in");
    drop(link);
}

/// `roundtable send-file --node URL --room NAME PATH`: the room named, its
/// members each get the file in it; a name no room has is refused with a
/// sentence, before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_sends_a_file_into_a_room_by_its_name() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = common::node("alice", &dir, data.path()).await;
    let bob = common::node("bob", &dir, data.path()).await;
    let carol = common::node("carol", &dir, data.path()).await;
    for p in ["bob", "carol"] {
        sees_online(&alice, p).await;
    }
    let wg = create(alice.http_addr, "Site leads", &["bob", "carol"]).await;
    for n in [&bob, &carol] {
        eventually(10, "the room to reach every member", || {
            has_room(n.http_addr, &wg.id)
        })
        .await;
    }
    let src = data.path().join("agenda.md");
    std::fs::write(&src, b"1. round 4\n2. new site\n").unwrap();
    let node = format!("http://{}", alice.http_addr);
    let run = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_roundtable"));
        c.args(["send-file", "--node", &node]).args(args).arg(&src);
        c.output()
    };
    let out = run(&["--room", "Site leads"]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("bob: delivered agenda.md"), "{stdout}");
    assert!(stdout.contains("carol: delivered agenda.md"), "{stdout}");
    for n in [&bob, &carol] {
        let got = delivered(n, "agenda.md").await;
        assert_eq!(got.room.as_deref(), Some(wg.id.as_str()));
    }

    let out = run(&["--room", "Nowhere"]).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no room called \"Nowhere\""), "{stderr}");
    let out = run(&["--room", "Site leads", "--to", "bob"]).await.unwrap();
    assert!(
        !out.status.success(),
        "--room and --to together are refused"
    );
    assert_eq!(
        files_named(&alice, "agenda.md").await.len(),
        2,
        "nothing more sent"
    );
}

/// Dave runs a node of before room files: its `PONG` does not grant
/// `roundtable-roomfiles/1`, and it refuses an offer with a field it does
/// not know. Alice's room post reaches it as a plain offer, without the
/// room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_room_files_is_offered_the_file_without_the_room() {
    use roundtable::framing::Connection;
    use roundtable::node::link::open_frame;
    use roundtable::overlay::channel::{self, ChannelConfig};
    use roundtable::overlay::identity::Identity;
    use roundtable_shared::frame::{Frame, Limits};
    use roundtable_shared::secure::SecureFrame;
    use roundtable_shared::transfer::TransferFrame;

    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = common::node("alice", &dir, data.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (offers, mut offered) = tokio::sync::mpsc::unbounded_channel::<Frame>();
    let dave = std::sync::Arc::new(Identity::generate().unwrap());
    // Every connection alice opens (chat links, then the file's): the
    // capabilities of before, the handshake, and the first opened frame if
    // it is an offer.
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (dave, offers) = (dave.clone(), offers.clone());
            tokio::spawn(async move {
                let mut conn = Connection::new(s, Limits::default());
                let Ok(Some(_ping)) = conn.read_frame().await else {
                    return;
                };
                let pong = Frame::new("PONG", ["roundtable/1", "roundtable-secure/1"], "");
                if conn.write_frame(&pong).await.is_err() {
                    return;
                }
                let Ok(Some(first)) = conn.read_frame().await else {
                    return;
                };
                let Ok(SecureFrame::Hello(first)) = SecureFrame::parse(&first) else {
                    return;
                };
                let Ok(mut session) = channel::accept(
                    &mut conn,
                    &dave,
                    "dave",
                    Some(first),
                    |_| None,
                    &ChannelConfig::default(),
                )
                .await
                else {
                    return;
                };
                while let Ok(Some(f)) = conn.read_frame().await {
                    let Ok(frames) = open_frame(&mut session, f) else {
                        return;
                    };
                    for f in frames {
                        if f.kind == TransferFrame::OFFER {
                            let _ = offers.send(f);
                            return;
                        }
                    }
                }
            });
        }
    });
    let _dave_session = common::bind_raw(dir.addr, "dave", port).await;
    eventually(10, "alice to see dave", || async {
        alice.peers.get("dave").filter(|p| p.online).map(|_| ())
    })
    .await;
    let wg = create(alice.http_addr, "Working group", &["dave"]).await;
    let (status, body) = post_file(alice.http_addr, &wg.id, "plan.pdf", b"the plan").await;
    assert_eq!(status, 201, "{body}");
    let sent: Vec<TransferInfo> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        sent[0].room.as_deref(),
        Some(wg.id.as_str()),
        "alice's own record keeps the room"
    );
    let offer = tokio::time::timeout(Duration::from_secs(15), offered.recv())
        .await
        .expect("alice offers the file to dave")
        .unwrap();
    let json = String::from_utf8_lossy(&offer.payload).into_owned();
    assert!(!json.contains("room"), "an offer dave can read: {json}");
    let TransferFrame::Offer(o) = TransferFrame::parse(&offer).unwrap() else {
        panic!("not an offer");
    };
    assert_eq!((o.name.as_str(), o.room), ("plan.pdf", None));
}
