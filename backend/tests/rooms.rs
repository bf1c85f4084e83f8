//! Issue 16, rooms: every member gets every post exactly once, in each
//! sender's order, across a SIGKILL and a member away for a while;
//! members are added and leave; a classic eurechat member gets the posts
//! as `MESSAGE`s that name the room; a training's participants find the
//! training's room made for them.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::classic::ClassicPeer;
use common::process::NodeProc;
use common::{eventually, get_json, http, node, sees_online, Directory};
use roundtable::fl_drive::{drive, DriveOptions, Plan};
use roundtable_shared::api::{ChatMessage, Direction, MessageState, PeerInfo, RoomSummary};
use roundtable_shared::room::training_room_id;

async fn create(at: SocketAddr, name: &str, members: &[&str]) -> RoomSummary {
    let body = serde_json::json!({ "name": name, "members": members }).to_string();
    let (status, body) = http("POST", at, "/api/rooms", Some(&body)).await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn post(at: SocketAddr, room: &str, text: &str) -> (u16, String) {
    let body = serde_json::json!({ "text": text }).to_string();
    http(
        "POST",
        at,
        &format!("/api/rooms/{room}/messages"),
        Some(&body),
    )
    .await
}

async fn posted(at: SocketAddr, room: &str, text: &str) -> ChatMessage {
    let (status, body) = post(at, room, text).await;
    assert_eq!(status, 202, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A room's messages at `at` (none while it does not have the room yet).
async fn messages(at: SocketAddr, room: &str) -> Vec<ChatMessage> {
    let (status, body) = http(
        "GET",
        at,
        &format!("/api/rooms/{room}/messages?limit=500"),
        None,
    )
    .await;
    match status {
        200 => serde_json::from_str(&body).unwrap(),
        404 => Vec::new(),
        _ => panic!("room messages: {status} {body}"),
    }
}

async fn room(at: SocketAddr, id: &str) -> Option<RoomSummary> {
    let (status, body) = http("GET", at, &format!("/api/rooms/{id}"), None).await;
    (status == 200).then(|| serde_json::from_str(&body).unwrap())
}

/// Leaves room `id` at `at` (a node).
async fn leave(at: SocketAddr, id: &str) {
    let (status, text) = http("POST", at, &format!("/api/rooms/{id}/leave"), None).await;
    assert_eq!(status, 200, "{text}");
}

fn present(r: &RoomSummary) -> Vec<&str> {
    r.members
        .iter()
        .filter(|m| m.present)
        .map(|m| m.name.as_str())
        .collect()
}

/// Waits until `at` (a node) lists every peer in `names` as online.
async fn online(at: SocketAddr, names: &[&str]) {
    eventually(20, "peers to be online", || async {
        let peers: Vec<PeerInfo> = get_json(at, "/api/peers").await;
        names
            .iter()
            .all(|n| peers.iter().any(|p| p.name == *n && p.online))
            .then_some(())
    })
    .await;
}

/// The texts each sender wrote in `msgs` (posts only), in the order shown.
fn by_sender(msgs: &[ChatMessage]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for m in msgs.iter().filter(|m| !m.event) {
        out.entry(m.peer.clone()).or_default().push(m.text.clone());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_gets_every_post_once_in_each_senders_order_across_a_sigkill_and_an_absence() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let spawn = |name: &str| NodeProc::spawn(name, dir.addr, data.path(), "127.0.0.1:0");
    let alice = spawn("alice");
    let bob = spawn("bob");
    let mut carol = spawn("carol");
    online(alice.http, &["bob", "carol"]).await;
    let wg = create(alice.http, "Working group", &["bob", "carol"]).await;
    assert_eq!(present(&wg), ["alice", "bob", "carol"]);
    assert!(wg.joined);
    for p in [bob.http, carol.http] {
        eventually(10, "the room to reach every member", || room(p, &wg.id)).await;
    }
    let mut expected: HashMap<&str, Vec<String>> = HashMap::new();
    let mut say = |who: &'static str, text: String| {
        expected.entry(who).or_default().push(text.clone());
        text
    };

    // All three post at once, interleaved.
    for i in 0..15 {
        let (a, b, c) = (
            say("alice", format!("a{i}")),
            say("bob", format!("b{i}")),
            say("carol", format!("c{i}")),
        );
        let (ra, rb, rc) = tokio::join!(
            post(alice.http, &wg.id, &a),
            post(bob.http, &wg.id, &b),
            post(carol.http, &wg.id, &c)
        );
        for (status, body) in [ra, rb, rc] {
            assert_eq!(status, 202, "{body}");
        }
    }
    // Carol posts and is killed at once: what she was told is accepted
    // must go out after her restart.
    for i in 15..20 {
        posted(carol.http, &wg.id, &say("carol", format!("c{i}"))).await;
    }
    carol.kill9();
    // While she is dead, the others go on.
    for i in 15..25 {
        posted(alice.http, &wg.id, &say("alice", format!("a{i}"))).await;
        posted(bob.http, &wg.id, &say("bob", format!("b{i}"))).await;
    }
    carol = spawn("carol");
    // Bob goes away for a while (killed too); the others go on.
    bob.kill9();
    for i in 25..35 {
        posted(alice.http, &wg.id, &say("alice", format!("a{i}"))).await;
        posted(carol.http, &wg.id, &say("carol", format!("c{i}"))).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bob = spawn("bob");

    let total: usize = expected.values().map(Vec::len).sum();
    for (name, at) in [
        ("alice", alice.http),
        ("bob", bob.http),
        ("carol", carol.http),
    ] {
        let msgs = eventually(60, &format!("{name} to have every post"), || async {
            let m = messages(at, &wg.id).await;
            (m.iter().filter(|m| !m.event).count() >= total).then_some(m)
        })
        .await;
        let got = by_sender(&msgs);
        for (who, texts) in &expected {
            assert_eq!(
                got.get(*who),
                Some(texts),
                "{name} shows {who}'s posts once each, in the order sent"
            );
        }
        assert_eq!(
            msgs.iter().filter(|m| !m.event).count(),
            total,
            "{name}: nothing twice"
        );
    }
    // Every sender's posts end delivered to every member.
    for (name, at) in [
        ("alice", alice.http),
        ("bob", bob.http),
        ("carol", carol.http),
    ] {
        eventually(30, &format!("{name}'s posts to be delivered"), || async {
            let m = messages(at, &wg.id).await;
            m.iter()
                .filter(|m| m.direction == Direction::Out)
                .all(|m| m.state == MessageState::Delivered)
                .then_some(())
        })
        .await;
    }
    alice.kill9();
    bob.kill9();
    carol.kill9();
    dir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_leave_and_the_room_shows_who_is_in_it() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    let carol = node("carol", &dir, data.path()).await;
    sees_online(&alice, "bob").await;
    sees_online(&alice, "carol").await;
    let (a, b, c) = (alice.http_addr, bob.http_addr, carol.http_addr);

    // A misspelled member is refused, with a sentence.
    let (status, body) = http(
        "POST",
        a,
        "/api/rooms",
        Some(r#"{"name": "wg", "members": ["bbo"]}"#),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nobody named \\\"bbo\\\""), "{body}");

    let wg = create(a, "wg", &["bob"]).await;
    posted(a, &wg.id, "before carol").await;
    eventually(10, "bob to have the first post", || async {
        (messages(b, &wg.id)
            .await
            .iter()
            .any(|m| m.text == "before carol"))
        .then_some(())
    })
    .await;

    // Bob adds carol: everyone sees her in it, and carol gets the room.
    let body = r#"{"name": "carol"}"#;
    let (status, text) = http(
        "POST",
        b,
        &format!("/api/rooms/{}/members", wg.id),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    for (name, at) in [("alice", a), ("bob", b), ("carol", c)] {
        eventually(10, &format!("{name} to see carol in the room"), || async {
            let r = room(at, &wg.id).await?;
            (present(&r) == ["alice", "bob", "carol"]).then_some(())
        })
        .await;
    }
    let line = eventually(10, "carol to see who added her", || async {
        messages(c, &wg.id)
            .await
            .into_iter()
            .find(|m| m.event && m.text == "bob added carol")
    })
    .await;
    assert_eq!(line.peer, "bob");
    // She joined after the first post: it is not hers to see.
    assert!(!messages(c, &wg.id)
        .await
        .iter()
        .any(|m| m.text == "before carol"));
    posted(c, &wg.id, "hello from carol").await;
    for at in [a, b] {
        eventually(10, "carol's post to reach the others", || async {
            messages(at, &wg.id)
                .await
                .into_iter()
                .find(|m| m.text == "hello from carol" && m.peer == "carol")
        })
        .await;
    }

    // Bob leaves: the others see it; he posts nothing more and gets nothing more.
    let (status, text) = http("POST", b, &format!("/api/rooms/{}/leave", wg.id), None).await;
    assert_eq!(status, 200, "{text}");
    let left: RoomSummary = serde_json::from_str(&text).unwrap();
    assert!(!left.joined);
    for at in [a, c] {
        eventually(10, "bob's leaving to show", || async {
            let r = room(at, &wg.id).await?;
            (present(&r) == ["alice", "carol"]).then_some(())
        })
        .await;
    }
    let (status, text) = post(b, &wg.id, "still here?").await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("you left it"), "{text}");
    let after = posted(a, &wg.id, "after bob left").await;
    eventually(10, "carol to get the post after bob left", || async {
        messages(c, &wg.id)
            .await
            .into_iter()
            .find(|m| m.text == "after bob left")
    })
    .await;
    eventually(
        10,
        "alice's post to be delivered (to carol only)",
        || async {
            messages(a, &wg.id)
                .await
                .into_iter()
                .find(|m| m.seq == after.seq && m.state == MessageState::Delivered)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !messages(b, &wg.id)
            .await
            .iter()
            .any(|m| m.text == "after bob left"),
        "bob left: nothing more reaches him"
    );
    // The room list shows it, with bob out.
    let rooms: Vec<RoomSummary> = get_json(a, "/api/rooms").await;
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].name, "wg");
    // An unknown room is a 404 with a sentence.
    let (status, text) = http("GET", a, "/api/rooms/nope", None).await;
    assert_eq!(status, 404, "{text}");
    for n in [alice, bob, carol] {
        n.stop(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_member_gets_the_posts_as_messages_that_name_the_room() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    let mut dave = ClassicPeer::listen().await;
    dave.register("dave", "pw", dir.addr).await;
    sees_online(&alice, "bob").await;
    sees_online(&alice, "dave").await;
    let wg = create(alice.http_addr, "wg", &["bob", "dave"]).await;
    let m = posted(alice.http_addr, &wg.id, "hello all").await;
    let text = "[#wg] hello all";
    dave.wait_for(&format!("MESSAGE {} alice\n{text}", text.len()), 10)
        .await;
    // What happens to the room itself is not sent to him.
    assert!(!dave.received().contains("added"), "{}", dave.received());
    eventually(10, "bob to have it too", || async {
        messages(bob.http_addr, &wg.id)
            .await
            .into_iter()
            .find(|x| x.text == "hello all")
    })
    .await;
    eventually(10, "the post to be delivered to both", || async {
        messages(alice.http_addr, &wg.id)
            .await
            .into_iter()
            .find(|x| x.seq == m.seq && x.state == MessageState::Delivered)
    })
    .await;
    for n in [alice, bob] {
        n.stop(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trainings_participants_find_its_room_made_for_them() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    let carol = node("carol", &dir, data.path()).await;
    sees_online(&alice, "bob").await;
    sees_online(&bob, "alice").await;
    let plan = Plan::random(1, false);
    let urls: Vec<String> = [&alice, &bob]
        .iter()
        .map(|n| format!("http://{}/", n.notify_addr.unwrap()))
        .collect();
    let options = DriveOptions {
        interval: Duration::from_millis(100),
        ..DriveOptions::default()
    };
    assert!(drive(&plan, &urls, &options, |_, _| {})
        .await
        .all_accepted());
    let id = training_room_id(&plan.training_uuid);
    for (name, at) in [("alice", alice.http_addr), ("bob", bob.http_addr)] {
        eventually(
            20,
            &format!("{name} to have the training's room with both"),
            || async {
                let r = room(at, &id).await?;
                (present(&r) == ["alice", "bob"]
                    && r.training.as_deref() == Some(plan.training_uuid.as_str()))
                .then_some(())
            },
        )
        .await;
    }
    posted(alice.http_addr, &id, "loss looks good here").await;
    eventually(10, "bob to get it in the training's room", || async {
        messages(bob.http_addr, &id)
            .await
            .into_iter()
            .find(|m| m.text == "loss looks good here" && m.peer == "alice")
    })
    .await;
    // Carol is in no part of it.
    assert!(room(carol.http_addr, &id).await.is_none());
    for n in [alice, bob, carol] {
        n.stop(Duration::from_secs(2)).await;
    }
}

/// A training's room is written when the training is new on a node or a
/// remote participant new in it, not at each of its many events (every
/// phase here, every lane a peer sends); someone who left stays out, and
/// a participant who comes later is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trainings_room_is_written_only_for_what_is_new_in_the_training() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    let carol = node("carol", &dir, data.path()).await;
    for (n, others) in [
        (&alice, ["bob", "carol"]),
        (&bob, ["alice", "carol"]),
        (&carol, ["alice", "bob"]),
    ] {
        for o in others {
            sees_online(n, o).await;
        }
    }
    let url = |n: &roundtable::node::Node| format!("http://{}/", n.notify_addr.unwrap());
    let options = DriveOptions {
        interval: Duration::from_millis(100),
        ..DriveOptions::default()
    };
    // Five rounds: twelve notifications, each an event of the training
    // on both nodes, and as many lanes sent between them.
    let plan = Plan::random(5, false);
    let (first, rest) = plan.steps.split_at(2);
    let part = |steps: &[roundtable_shared::notify::Notification]| Plan {
        steps: steps.to_vec(),
        ..plan.clone()
    };
    let both = [url(&alice), url(&bob)];
    assert!(drive(&part(first), &both, &options, |_, _| {})
        .await
        .all_accepted());
    let id = training_room_id(&plan.training_uuid);
    eventually(20, "alice to have the training's room with bob", || async {
        let r = room(alice.http_addr, &id).await?;
        (present(&r) == ["alice", "bob"]).then_some(())
    })
    .await;
    // Bob leaves the training's room.
    leave(bob.http_addr, &id).await;
    eventually(20, "alice to see bob leave", || async {
        let r = room(alice.http_addr, &id).await?;
        (present(&r) == ["alice"]).then_some(())
    })
    .await;
    // The training goes on; then carol takes part in it too.
    assert!(drive(&part(rest), &both, &options, |_, _| {})
        .await
        .all_accepted());
    assert!(drive(&plan, &[url(&carol)], &options, |_, _| {})
        .await
        .all_accepted());
    eventually(
        20,
        "alice to have carol in the room, bob still out",
        || async {
            let r = room(alice.http_addr, &id).await?;
            (present(&r) == ["alice", "carol"]).then_some(())
        },
    )
    .await;
    // Bob's lanes came all along; carol's keep coming: both are known.
    let participants = |n: &roundtable::node::Node| {
        let (p, uuid) = (n.progress.clone(), plan.training_uuid.clone());
        async move { p.participants(&uuid).await.unwrap().len() }
    };
    eventually(10, "alice to know all three participants", || async {
        (participants(&alice).await == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One write for the training, one per remote participant as it
    // appeared (fewer if they came together): not one per event.
    let writes = alice.chat.store().training_room_writes();
    assert!(
        (1..=3).contains(&writes),
        "alice wrote the training's room {writes} times"
    );
    for n in [alice, bob, carol] {
        n.stop(Duration::from_secs(2)).await;
    }
}

/// A participant who leaves a training's room before the others turn up
/// in it (their node does not know them as participants yet) is out of
/// it for them too: its node tells each one that turns up later that it
/// left, so that nobody sees it in the room, or sends it the room's posts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_left_a_trainings_room_before_the_others_came_stays_out_for_them() {
    let dir = Directory::start().await;
    let data = tempfile::tempdir().unwrap();
    let alice = node("alice", &dir, data.path()).await;
    let bob = node("bob", &dir, data.path()).await;
    sees_online(&alice, "bob").await;
    sees_online(&bob, "alice").await;
    let url = |n: &roundtable::node::Node| format!("http://{}/", n.notify_addr.unwrap());
    let options = DriveOptions {
        interval: Duration::from_millis(100),
        ..DriveOptions::default()
    };
    let plan = Plan::random(3, false);
    let first = Plan {
        steps: plan.steps[..2].to_vec(),
        ..plan.clone()
    };
    // Bob alone in the training so far: his room has only him; he leaves.
    assert!(drive(&first, &[url(&bob)], &options, |_, _| {})
        .await
        .all_accepted());
    let id = training_room_id(&plan.training_uuid);
    eventually(20, "bob to have the training's room", || async {
        let r = room(bob.http_addr, &id).await?;
        (present(&r) == ["bob"]).then_some(())
    })
    .await;
    leave(bob.http_addr, &id).await;
    // Then alice trains in it too: the two nodes learn of each other.
    assert!(drive(&plan, &[url(&alice)], &options, |_, _| {})
        .await
        .all_accepted());
    let participants = |n: &roundtable::node::Node| {
        let (p, uuid) = (n.progress.clone(), plan.training_uuid.clone());
        async move { p.participants(&uuid).await.unwrap().len() }
    };
    eventually(20, "each to know the other as a participant", || async {
        (participants(&alice).await == 2 && participants(&bob).await == 2).then_some(())
    })
    .await;
    eventually(20, "alice to see that bob left", || async {
        let r = room(alice.http_addr, &id).await?;
        (present(&r) == ["alice"]).then_some(())
    })
    .await;
    let r = room(bob.http_addr, &id).await.unwrap();
    assert_eq!(present(&r), ["alice"], "bob's node has alice in, not him");
    // Alice's post goes to nobody but her.
    let m = posted(alice.http_addr, &id, "anyone?").await;
    eventually(10, "alice's post to be done", || async {
        let msgs = messages(alice.http_addr, &id).await;
        msgs.iter()
            .any(|x| x.id == m.id && x.state == MessageState::Delivered)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !messages(bob.http_addr, &id)
            .await
            .iter()
            .any(|x| x.id == m.id),
        "bob, who left, got alice's post"
    );
    for n in [alice, bob] {
        n.stop(Duration::from_secs(2)).await;
    }
}
