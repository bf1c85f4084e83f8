//! End to end, the secure overlay as a person sees it (issue 13, "an
//! end-to-end browser test shows verified/unverified/key-changed marks and
//! the check-peers result"): real `roundtable directory` and `roundtable
//! node` processes, a classic eurechat peer played over raw TCP, and alice's
//! dashboard in headless Chromium, driven over WebDriver. Screenshots of each
//! state go to `target/e2e/secure-*.png`.
//!
//! Run by `cargo xtask test`, or by hand after `trunk build --release`:
//! `cargo test -p roundtable --test secure_dashboard -- --ignored --test-threads=1`.
//! Environment: `ROUNDTABLE_DIST` (default `<workspace>/dist`), `CHROMEDRIVER`
//! (default `/usr/bin/chromedriver`), `CHROMIUM` (default `/usr/bin/chromium`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use common::browser::{artifacts_dir, browser, Chromedriver};
use common::classic::ClassicPeer;
use common::e2e::{attr, directory, screenshot, until, wait_for, wait_gone, wait_text, Node};
use common::get_json;
use fantoccini::Locator;
use roundtable::overlay::identity::{Identity, KEY_FILE};
use roundtable_shared::api::{ChatMessage, MessageState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
/// A round trip as the dashboard writes it: `0.8 ms`.
fn is_rtt(text: &str) -> bool {
    text.strip_suffix(" ms")
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(|ms| ms >= 0.0)
}

/// Logs in as `name` and sends `line`; waits for `want` in the answer.
async fn ask_directory(dir: SocketAddr, name: &str, line: &str, want: &str) {
    let mut s = TcpStream::connect(dir).await.unwrap();
    s.write_all(format!("USER 0 {name}\nPASS 0 pw\n{line}\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(want) {
        let mut b = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .expect("the directory answers")
            .unwrap();
        assert!(n > 0, "{:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
}

/// alice's dashboard, with bob (a Roundtable node reached directly), carol
/// (`--chat none`, reached through the directory's relay) and corrado (a
/// classic eurechat client): the trust and path marks in the peer list;
/// "Check peers" (bob and carol answer with a round trip, corrado cannot
/// answer requests, and says why); then bob comes back with a new identity
/// key: his row and conversation say "key changed" with both fingerprints,
/// the message alice wrote meanwhile is held, and "Accept new key" makes him
/// verified again (pinned by acceptance) and delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and a built dashboard; run by cargo xtask test"]
async fn trust_marks_check_and_key_change() {
    let data = tempfile::tempdir().unwrap();
    let (_dir, dir) = directory(data.path());
    let alice = &Node::start("alice", dir, data.path(), "127.0.0.1:0", "secure-alice");
    let bob = Node::start("bob", dir, data.path(), "127.0.0.1:0", "secure-bob");
    let carol = Node::start("carol", dir, data.path(), "none", "secure-carol");
    let mut corrado = ClassicPeer::listen().await;
    corrado.register("corrado", "pw", dir).await;
    let driver = Chromedriver::start(&artifacts_dir().join("chromedriver-secure.log"));

    // Links to all three, so that each has a path and a trust.
    for peer in ["bob", "carol", "corrado"] {
        until(&format!("alice to see {peer} online"), || async {
            alice.peer(peer).await.filter(|p| p.online).map(|_| ())
        })
        .await
        .unwrap();
    }
    let to_bob = alice.send("bob", "hello bob").await;
    let to_carol = alice.send("carol", "hello carol").await;
    alice.send("corrado", "hello corrado").await;
    corrado
        .wait_for("MESSAGE 13 alice\nhello corrado", 45)
        .await;
    let old_fp = bob.me().await.fingerprint;
    let carol_fp = carol.me().await.fingerprint;
    assert!(carol.me().await.relay_only, "carol runs with --chat none");

    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path())
        .await
        .expect("cannot start headless Chromium");
    let result = async {
        // ---- the peer list: trust and path marks --------------------------
        c.goto(&alice.url("/")).await?;
        wait_text(&c, "#conn", |t| t.contains("connected")).await?;
        wait_for(&c, "#peers li[data-name=bob] .peer-trust.verified").await?;
        wait_for(&c, "#peers li[data-name=bob] .peer-path[data-path=direct]").await?;
        wait_for(&c, "#peers li[data-name=carol] .peer-trust.verified").await?;
        wait_for(
            &c,
            "#peers li[data-name=carol] .peer-path[data-path=relayed][data-relay-only=true]",
        )
        .await?;
        let corrado_mark =
            wait_for(&c, "#peers li[data-name=corrado] .peer-trust.unverified").await?;
        assert!(corrado_mark.contains("unverified"), "{corrado_mark:?}");
        let bob_mark = wait_for(&c, "#peers li[data-name=bob] .peer-trust").await?;
        assert!(bob_mark.contains("verified"), "{bob_mark:?}");
        assert_eq!(
            attr(&c, "#peers li[data-name=bob] .peer-trust", "data-trust").await?,
            Some("verified".into())
        );
        assert_eq!(
            attr(&c, "#peers li[data-name=bob] .peer-path", "data-relay-only").await?,
            Some("false".into()),
            "bob has a chat address"
        );
        assert!(
            c.find_all(Locator::Css("#peers li.key-changed"))
                .await?
                .is_empty(),
            "no key changed yet"
        );
        // Both Roundtable nodes' messages were delivered (acknowledged over
        // the secure channel, directly and through the relay).
        for (peer, m) in [("bob", &to_bob), ("carol", &to_carol)] {
            c.goto(&alice.url(&format!("/chat/{peer}"))).await?;
            wait_for(
                &c,
                &format!(".msg[data-seq='{}'] .state[data-state=delivered]", m.seq),
            )
            .await?;
        }
        wait_for(&c, "#chat-identity .peer-trust.verified").await?;
        wait_for(
            &c,
            "#chat-identity .peer-path[data-path=relayed][data-relay-only=true]",
        )
        .await?;
        wait_for(&c, "#chat-identity .pin-source[data-pinned-by=first_use]").await?;
        let pinned = wait_for(&c, "#chat-identity .pinned-fingerprint").await?;
        assert_eq!(pinned, carol_fp, "carol's pinned fingerprint, in full");
        screenshot(&c, "secure-chat-carol.png").await;
        c.goto(&alice.url("/")).await?;
        wait_for(&c, "#peers li[data-name=corrado] .peer-trust.unverified").await?;
        screenshot(&c, "secure-peers.png").await;

        // ---- check peers ---------------------------------------------------
        wait_for(&c, "#peer-check[data-state=idle]").await?;
        c.find(Locator::Css("#check-peers")).await?.click().await?;
        wait_for(&c, "#peer-check[data-state=done]").await?;
        for peer in ["bob", "carol"] {
            let row = format!("#check-results .check-result[data-peer={peer}]");
            wait_for(&c, &format!("{row}.answered")).await?;
            let rtt = wait_for(&c, &format!("{row} .rtt")).await?;
            assert!(is_rtt(&rtt), "{peer}'s round trip: {rtt:?}");
        }
        let why = wait_for(
            &c,
            "#check-results .check-result[data-peer=corrado].no-answer .check-why",
        )
        .await?;
        assert!(why.contains("classic eurechat peer"), "{why:?}");
        let summary = wait_for(&c, "#check-summary").await?;
        assert!(summary.starts_with("2 of 3 answered"), "{summary:?}");
        screenshot(&c, "secure-check.png").await;

        // ---- bob's key changes ----------------------------------------------
        bob.proc.stop();
        let bob_data = data.path().join("bob");
        let old = Identity::load_or_create(&bob_data)?;
        std::fs::remove_file(bob_data.join(KEY_FILE))?;
        let new = Identity::load_or_create(&bob_data)?;
        ask_directory(
            dir,
            "bob",
            &format!(
                "REKEY 0 {} {}",
                old.public_key().to_text(),
                new.public_key().to_text()
            ),
            "key replaced",
        )
        .await;
        drop((old, new));
        let bob = Node::start("bob", dir, data.path(), "127.0.0.1:0", "secure-bob-new-key");
        let new_fp = bob.me().await.fingerprint;
        assert_ne!(new_fp, old_fp, "bob has a new key");
        // At his new chat address (not the stale entry of the old process).
        let port: u16 = bob
            .me()
            .await
            .chat
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .context("bob's chat address")?;
        until("alice to see bob back at his new address", || async {
            alice
                .peer("bob")
                .await
                .filter(|p| p.online && p.port == Some(port))
                .map(|_| ())
        })
        .await?;
        let held = alice.send("bob", "after your new key").await;

        wait_for(
            &c,
            "#peers li[data-name=bob].key-changed .peer-trust.key-changed",
        )
        .await?;
        assert_eq!(
            attr(&c, "#peers li[data-name=bob] .peer-trust", "data-trust").await?,
            Some("key-changed".into())
        );
        screenshot(&c, "secure-peers-key-changed.png").await;

        c.find(Locator::Css("#peers li[data-name=bob] a"))
            .await?
            .click()
            .await?;
        wait_text(&c, "#chat-title", |t| t == "bob").await?;
        wait_for(&c, "#chat-identity .peer-trust.key-changed").await?;
        wait_for(&c, "#key-changed-banner.key-changed-banner[data-peer=bob]").await?;
        let shown_old = wait_for(&c, "#key-changed-banner #old-fingerprint").await?;
        let shown_new =
            wait_text(&c, "#key-changed-banner #new-fingerprint", |t| t == new_fp).await?;
        assert_eq!(
            (shown_old.as_str(), shown_new.as_str()),
            (old_fp.as_str(), new_fp.as_str())
        );
        // Held: the message waits in alice's outbox, not sent to the new
        // key, and the page says so (queued, not "sent").
        wait_for(
            &c,
            &format!(".msg[data-seq='{}'] .state[data-state=queued]", held.seq),
        )
        .await?;
        let outbox: Vec<ChatMessage> = get_json(alice.http, "/api/chats/bob/messages").await;
        let stored = outbox.iter().find(|m| m.seq == held.seq).map(|m| m.state);
        assert_eq!(stored, Some(MessageState::Queued), "held in alice's outbox");
        let mine: Vec<ChatMessage> = get_json(bob.http, "/api/chats/alice/messages").await;
        assert!(
            mine.iter().all(|m| m.text != "after your new key"),
            "bob has not received the held message: {mine:?}"
        );
        screenshot(&c, "secure-key-changed.png").await;

        c.find(Locator::Css("#accept-key")).await?.click().await?;
        wait_gone(&c, "#key-changed-banner").await?;
        wait_for(&c, "#chat-identity .peer-trust.verified").await?;
        wait_for(&c, "#chat-identity .pin-source[data-pinned-by=accepted]").await?;
        let pinned = wait_for(&c, "#chat-identity .pinned-fingerprint").await?;
        assert_eq!(pinned, new_fp, "the accepted key is the one pinned");
        wait_for(&c, "#chat-identity .peer-path[data-path=direct]").await?;
        wait_for(
            &c,
            &format!(".msg[data-seq='{}'] .state[data-state=delivered]", held.seq),
        )
        .await?;
        let peer = alice.peer("bob").await.context("bob in alice's peers")?;
        assert_eq!(peer.pinned_fingerprint.as_deref(), Some(new_fp.as_str()));
        let got = until("bob to hold the message once", || async {
            let mine: Vec<ChatMessage> = get_json(bob.http, "/api/chats/alice/messages").await;
            let n = mine
                .iter()
                .filter(|m| m.text == "after your new key")
                .count();
            (n > 0).then_some(n)
        })
        .await?;
        assert_eq!(got, 1, "delivered exactly once");
        screenshot(&c, "secure-key-accepted.png").await;
        c.goto(&alice.url("/")).await?;
        wait_for(&c, "#peers li[data-name=bob] .peer-trust.verified").await?;
        assert!(
            c.find_all(Locator::Css("#peers li.key-changed"))
                .await?
                .is_empty(),
            "bob's row is no longer marked"
        );
        assert!(
            c.find_all(Locator::Css("#relay-only")).await?.is_empty(),
            "alice has a chat address"
        );
        drop(bob);

        // carol's own dashboard says she is reachable only through the relay.
        c.goto(&carol.url("/")).await?;
        let note = wait_for(&c, "#relay-only").await?;
        assert!(note.contains("relay"), "{note:?}");
        wait_for(&c, "#peers li[data-name=alice] .peer-trust.verified").await?;
        screenshot(&c, "secure-carol-relay-only.png").await;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let path = screenshot(&c, "secure-end.png").await;
    let _ = c.close().await;
    drop(carol);
    if let Err(e) = result {
        panic!(
            "{e:#}\n(screenshot: {}; node logs: target/e2e/secure-*.log)",
            path.display()
        );
    }
}
