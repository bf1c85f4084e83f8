//! End to end, chat as people use it (issue 16): read state that every
//! browser of the user shares, through two Chromium sessions on separate
//! profiles; and a send while the node is gone, whose text is kept.
//! Real `roundtable directory` and `roundtable node` processes.
//! Screenshots go to `target/e2e/chat-*.png`.
//!
//! Run by `cargo xtask test`, or by hand after `trunk build --release`:
//! `cargo test -p roundtable --test chat_dashboard -- --ignored --test-threads=1`.

mod common;

use anyhow::Result;
use common::browser::{artifacts_dir, browser, Chromedriver};
use common::e2e::{attr, directory, screenshot, until, wait_for, wait_gone, wait_text, Node};
use fantoccini::{Client, Locator};

async fn title(c: &Client) -> Result<String> {
    Ok(c.execute("return document.title;", vec![])
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and a built dashboard; run by cargo xtask test"]
async fn a_conversation_read_in_one_browser_is_read_in_the_other() {
    let data = tempfile::tempdir().unwrap();
    let (_dir, dir) = directory(data.path());
    let alice = Node::start("alice", dir, data.path(), "127.0.0.1:0", "chat-alice");
    let bob = Node::start("bob", dir, data.path(), "127.0.0.1:0", "chat-bob");
    until("bob to see alice online", || async {
        bob.peer("alice").await.filter(|p| p.online).map(|_| ())
    })
    .await
    .unwrap();
    bob.send("alice", "are the round 3 weights uploaded?").await;
    bob.send("alice", "and the dataset card?").await;

    let driver = Chromedriver::start(&artifacts_dir().join("chromedriver-chat.log"));
    let (p1, p2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = browser(&driver, p1.path())
        .await
        .expect("headless Chromium");
    let second = browser(&driver, p2.path())
        .await
        .expect("a second Chromium");
    let result = async {
        // Both of alice's browsers show the two unread, in the title too.
        for c in [&first, &second] {
            c.goto(&alice.url("/")).await?;
            wait_text(c, "#peers li[data-name=bob] .unread", |t| t == "2").await?;
            until("the title to count them", || async {
                title(c).await.ok().filter(|t| t == "(2) Roundtable")
            })
            .await?;
        }
        screenshot(&second, "chat-unread-second.png").await;
        // The first reads the conversation...
        first
            .find(Locator::Css("#peers li[data-name=bob] a"))
            .await?
            .click()
            .await?;
        wait_text(&first, "#messages", |t| t.contains("dataset card")).await?;
        // ...and the second, which did nothing, shows it read.
        wait_gone(&second, "#peers li[data-name=bob] .unread").await?;
        until("the second's title", || async {
            title(&second).await.ok().filter(|t| t == "Roundtable")
        })
        .await?;
        screenshot(&second, "chat-read-second.png").await;
        // One mark for what the first saw, not one per render: a message
        // that arrives while the conversation is open is one more.
        bob.send("alice", "and the seed for round 4?").await;
        wait_text(&first, "#messages", |t| t.contains("seed for round 4")).await?;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let marks = first
            .execute(
                "return performance.getEntriesByType('resource') \
                   .filter(e => e.name.endsWith('/api/chats/bob/read')).length;",
                vec![],
            )
            .await?;
        assert_eq!(
            marks.as_u64(),
            Some(2),
            "read marks sent by the first browser"
        );
        // A reload of the second keeps it read: the node has the mark.
        second.refresh().await?;
        wait_for(&second, "#peers li[data-name=bob]").await?;
        assert!(second
            .find_all(Locator::Css("#peers li[data-name=bob] .unread"))
            .await?
            .is_empty());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = first.close().await;
    let _ = second.close().await;
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and a built dashboard; run by cargo xtask test"]
async fn a_send_while_the_node_is_gone_keeps_its_text_and_says_why() {
    let data = tempfile::tempdir().unwrap();
    let (_dir, dir) = directory(data.path());
    let alice = Node::start("alice", dir, data.path(), "127.0.0.1:0", "draft-alice");
    let bob = Node::start("bob", dir, data.path(), "127.0.0.1:0", "draft-bob");
    until("alice to see bob online", || async {
        alice.peer("bob").await.filter(|p| p.online).map(|_| ())
    })
    .await
    .unwrap();
    let driver = Chromedriver::start(&artifacts_dir().join("chromedriver-draft.log"));
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path())
        .await
        .expect("headless Chromium");
    let url = alice.url("/chat/bob");
    let result = async {
        // A misspelled name: refused with a sentence, sent only when insisted.
        c.goto(&alice.url("/chat/bobb")).await?;
        wait_text(&c, "#conn", |t| t.contains("connected")).await?;
        c.find(Locator::Css("#composer-text"))
            .await?
            .send_keys("hello?")
            .await?;
        c.find(Locator::Css("#send")).await?.click().await?;
        let error = wait_for(&c, "#send-error").await?;
        assert!(error.contains("nobody named \"bobb\""), "{error}");
        screenshot(&c, "chat-unknown-recipient.png").await;
        c.find(Locator::Css("#send-anyway")).await?.click().await?;
        wait_for(&c, ".msg.out[data-seq] .state[data-state=queued]").await?;
        wait_gone(&c, "#send-error").await?;
        c.goto(&url).await?;
        wait_text(&c, "#conn", |t| t.contains("connected")).await?;
        wait_text(&c, "#chat-title", |t| t == "bob").await?;
        // Alice's node goes away.
        alice.proc.stop();
        // The dashboard notices: presence is no longer claimed.
        wait_text(&c, "#conn", |t| !t.contains("connected")).await?;
        let status = c
            .find(Locator::Css(".chat .card-head"))
            .await?
            .text()
            .await?;
        assert!(
            status.contains("presence unknown") && !status.contains("online"),
            "{status}"
        );
        let text = "the checkpoint is ready, sending it after lunch";
        let area = c.find(Locator::Css("#composer-text")).await?;
        area.send_keys(text).await?;
        c.find(Locator::Css("#send")).await?.click().await?;
        let error = wait_for(&c, "#send-error").await?;
        assert!(error.contains("did not answer"), "{error}");
        assert!(!error.contains("TypeError"), "{error}");
        let kept = attr(&c, "#composer-text", "value").await?;
        let kept = match kept {
            Some(v) if !v.is_empty() => v,
            _ => c
                .execute(
                    "return document.querySelector('#composer-text').value;",
                    vec![],
                )
                .await?
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        assert_eq!(kept, text, "the text is kept for a retry");
        screenshot(&c, "chat-draft-kept.png").await;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = c.close().await;
    drop(bob);
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and a built dashboard; run by cargo xtask test"]
async fn a_room_made_in_the_dashboard_reaches_every_member_and_shows_who_is_in_it() {
    let data = tempfile::tempdir().unwrap();
    let (_dir, dir) = directory(data.path());
    let alice = Node::start("alice", dir, data.path(), "127.0.0.1:0", "room-alice");
    let bob = Node::start("bob", dir, data.path(), "127.0.0.1:0", "room-bob");
    let carol = Node::start("carol", dir, data.path(), "127.0.0.1:0", "room-carol");
    for who in ["bob", "carol"] {
        until(&format!("alice to see {who} online"), || async {
            alice.peer(who).await.filter(|p| p.online).map(|_| ())
        })
        .await
        .unwrap();
    }
    let driver = Chromedriver::start(&artifacts_dir().join("chromedriver-room.log"));
    let (p1, p2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = browser(&driver, p1.path())
        .await
        .expect("headless Chromium");
    let b = browser(&driver, p2.path())
        .await
        .expect("a second Chromium");
    let result = async {
        // Alice makes a room with bob from the peers page.
        a.goto(&alice.url("/")).await?;
        wait_text(&a, "#conn", |t| t.contains("connected")).await?;
        a.find(Locator::Css("#new-room-name"))
            .await?
            .send_keys("Site leads")
            .await?;
        a.find(Locator::Css("#new-room-members"))
            .await?
            .send_keys("bob")
            .await?;
        a.find(Locator::Css("#new-room-create"))
            .await?
            .click()
            .await?;
        wait_text(&a, "#room-name", |t| t.contains("Site leads")).await?;
        let members = wait_text(&a, "#room-members", |t| t.contains("bob")).await?;
        assert!(members.contains("alice"), "{members}");
        a.find(Locator::Css("#composer-text"))
            .await?
            .send_keys("round 4 starts at noon")
            .await?;
        a.find(Locator::Css("#send")).await?.click().await?;
        wait_for(&a, ".msg.out[data-seq] .state[data-state=delivered]").await?;

        // Bob's dashboard lists the room, unread, and shows the post in it.
        b.goto(&bob.url("/")).await?;
        wait_text(&b, "#room-list", |t| t.contains("Site leads")).await?;
        screenshot(&b, "room-list-bob.png").await;
        b.find(Locator::Css("#room-list a.room-link"))
            .await?
            .click()
            .await?;
        let shown = wait_text(&b, "#messages", |t| t.contains("round 4 starts at noon")).await?;
        assert!(shown.contains("alice"), "the sender is named: {shown}");
        // Bob adds carol; alice's page shows her in it, live.
        b.find(Locator::Css("#add-member-name"))
            .await?
            .send_keys("carol")
            .await?;
        b.find(Locator::Css("#add-member-button"))
            .await?
            .click()
            .await?;
        wait_text(&a, "#room-members", |t| t.contains("carol")).await?;
        wait_text(&a, "#messages", |t| t.contains("bob added carol")).await?;
        screenshot(&a, "room-alice.png").await;
        // Bob leaves: alice sees him gone; his composer is closed.
        b.find(Locator::Css("#leave-room")).await?.click().await?;
        wait_for(&b, "#room-left-notice").await?;
        until("alice's member list without bob", || async {
            let t = a
                .find(Locator::Css("#room-members"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (!t.contains("bob") && t.contains("carol")).then_some(())
        })
        .await?;
        screenshot(&b, "room-left-bob.png").await;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = a.close().await;
    let _ = b.close().await;
    drop(carol);
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and a built dashboard; run by cargo xtask test"]
async fn a_search_hit_opens_at_the_message_and_a_phone_gets_a_compact_header() {
    let data = tempfile::tempdir().unwrap();
    let (_dir, dir) = directory(data.path());
    let alice = Node::start("alice", dir, data.path(), "127.0.0.1:0", "hit-alice");
    let bob = Node::start("bob", dir, data.path(), "127.0.0.1:0", "hit-bob");
    until("bob to see alice online", || async {
        bob.peer("alice").await.filter(|p| p.online).map(|_| ())
    })
    .await
    .unwrap();
    // The word is said once, 1,200 messages ago.
    let hit = bob.send("alice", "the pelican dataset is ready").await;
    for i in 0..1200 {
        bob.send("alice", &format!("status line {i}")).await;
    }
    until("alice to have all of them", || async {
        let chats: Vec<roundtable_shared::api::ChatSummary> =
            common::get_json(alice.http, "/api/chats").await;
        chats
            .into_iter()
            .find(|c| c.peer == "bob" && c.count == 1201)
            .map(|_| ())
    })
    .await
    .unwrap();
    let driver = Chromedriver::start(&artifacts_dir().join("chromedriver-hit.log"));
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path())
        .await
        .expect("headless Chromium");
    let result = async {
        c.goto(&alice.url("/search?q=pelican")).await?;
        wait_text(&c, "#search-hits", |t| t.contains("pelican")).await?;
        c.find(Locator::Css("#search-hits a.hit-link"))
            .await?
            .click()
            .await?;
        // It opens at the message, 1,200 back, marked and on screen.
        let css = format!(".msg.hit[data-seq=\"{}\"]", hit.seq);
        let shown = wait_for(&c, &css).await?;
        assert!(shown.contains("pelican"), "{shown}");
        let visible = c
            .execute(
                "const m = document.querySelector(arguments[0]).getBoundingClientRect();
                 const l = document.querySelector('#messages').getBoundingClientRect();
                 return m.top >= l.top && m.bottom <= l.bottom;",
                vec![serde_json::json!(css)],
            )
            .await?;
        assert_eq!(visible, serde_json::json!(true), "the hit is in view");
        screenshot(&c, "chat-search-hit.png").await;

        // On a phone-sized screen the first line is the name and the
        // connection; the addresses fold away and nothing overflows.
        // The header folds when it first renders on a narrow window: load
        // the page only once the resize has taken effect (headless Chromium
        // applies it a moment after answering).
        c.set_window_size(390, 844).await?;
        until("the window to be phone-sized", || async {
            let w = c.execute("return window.innerWidth;", vec![]).await.ok()?;
            w.as_u64().filter(|&w| w <= 600)
        })
        .await?;
        c.goto(&alice.url("/")).await?;
        wait_text(&c, "#conn", |t| t.contains("connected")).await?;
        // The addresses render once the node's details have loaded, which
        // may be after the connection.
        wait_for(&c, "#header-addresses").await?;
        let layout = c
            .execute(
                "const a = document.querySelector('#header-addresses');
                 return [document.documentElement.scrollWidth <= window.innerWidth,
                         a !== null && !a.open];",
                vec![],
            )
            .await?;
        assert_eq!(
            layout,
            serde_json::json!([true, true]),
            "compact, no overflow"
        );
        screenshot(&c, "chat-phone-header.png").await;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = c.close().await;
    result.unwrap();
}
