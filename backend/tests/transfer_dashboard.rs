//! End to end, a file as a person sends it (issue 14: "alice's dashboard
//! attaches a file, the progress bar is seen moving, bob's dashboard shows
//! the download link, and the downloaded bytes hash equal to the
//! original"): real `roundtable directory` and `roundtable node`
//! processes, bob's chat port behind a proxy that slows the file to a few
//! MiB/s so that its progress can be watched, and both dashboards in
//! headless Chromium. Screenshots go to `target/e2e/files-*.png`.
//!
//! Run by `cargo xtask test`, or by hand after `trunk build --release`:
//! `cargo test -p roundtable --test transfer_dashboard -- --ignored --test-threads=1`.

mod common;

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use common::browser::{artifacts_dir, browser, free_port, Chromedriver};
use common::e2e::{attr, directory, screenshot, until, wait_for, wait_text, Node};
use common::get_json;
use common::proxy::throttled_proxy;
use fantoccini::Locator;
use roundtable_shared::api::{PeerInfo, TransferInfo, TransferState};
use sha2::{Digest, Sha256};

/// What the proxy lets through to bob: 24 MiB take about three seconds.
const RATE: u64 = 8 << 20;
const SIZE: usize = 24 << 20;

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The body of the `progress.file-progress` element's `data-bytes`.
async fn progress_bytes(c: &fantoccini::Client, css: &str) -> Result<u64> {
    Ok(attr(c, css, "data-bytes")
        .await?
        .context("data-bytes")?
        .parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and a built dashboard; run by cargo xtask test"]
async fn a_file_attached_in_alices_chat_downloads_whole_from_bobs() {
    let data = tempfile::tempdir().unwrap();
    let (_dir, dir) = directory(data.path());
    let bob_chat = free_port();
    let (proxy, _count) = throttled_proxy(SocketAddr::from(([127, 0, 0, 1], bob_chat)), RATE).await;
    let alice = Node::start("alice", dir, data.path(), "127.0.0.1:0", "files-alice");
    let port = proxy.port().to_string();
    let bob = Node::start_with(
        "bob",
        dir,
        data.path(),
        &format!("127.0.0.1:{bob_chat}"),
        "files-bob",
        &["--advertise-port", &port],
    );
    until("alice to see bob online", || async {
        let peers: Vec<PeerInfo> = get_json(alice.http, "/api/peers").await;
        peers
            .into_iter()
            .find(|p| p.name == "bob" && p.online)
            .map(|_| ())
    })
    .await
    .unwrap();
    // The file as a person would have it on disk.
    let original: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    let src = data.path().join("checkpoint round 3.pt");
    std::fs::write(&src, &original).unwrap();
    let want = sha_hex(&original);

    let driver = Chromedriver::start(&artifacts_dir().join("chromedriver-files.log"));
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path())
        .await
        .expect("cannot start headless Chromium");
    let result = async {
        // ---- alice attaches the file in her chat with bob -----------------
        c.goto(&alice.url("/chat/bob")).await?;
        wait_text(&c, "#conn", |t| t.contains("connected")).await?;
        wait_for(&c, "#attach-file").await?;
        let input = c.find(Locator::Css("#attach-input")).await?;
        input
            .send_keys(src.to_str().context("a UTF-8 path")?)
            .await?;

        // ---- the progress bar moves -------------------------------------
        let bar = ".file-message[data-direction=out] progress.file-progress";
        wait_for(&c, ".file-message[data-direction=out][data-state=sending] progress.file-progress").await?;
        let first = until("the progress bar to show bytes", || async {
            progress_bytes(&c, bar).await.ok().filter(|b| *b > 0)
        })
        .await?;
        let text = wait_for(&c, ".file-message[data-direction=out] .file-progress-text").await?;
        screenshot(&c, "files-alice-sending.png").await;
        let later = until("the progress bar to move on", || async {
            progress_bytes(&c, bar).await.ok().filter(|b| *b > first)
        })
        .await?;
        assert!(later > first && later <= SIZE as u64, "{first} then {later}");
        assert!(text.contains("of 24.0 MiB") || text.contains("of 24 MiB"), "{text:?}");
        assert!(text.contains("/s"), "a rate: {text:?}");
        let name = wait_for(&c, ".file-message[data-direction=out] .file-name").await?;
        assert_eq!(name, "checkpoint round 3.pt");

        // ---- delivered on alice's side, with her own download link ------
        wait_for(&c, ".file-message[data-direction=out][data-state=delivered]").await?;
        wait_for(&c, ".file-message[data-direction=out] a.file-download").await?;
        screenshot(&c, "files-alice-delivered.png").await;

        // ---- bob's dashboard: the file in the conversation, downloadable --
        c.goto(&bob.url("/chat/alice")).await?;
        wait_text(&c, "#conn", |t| t.contains("connected")).await?;
        let link = ".file-message[data-direction=in][data-state=delivered] a.file-download";
        wait_for(&c, link).await?;
        let href = attr(&c, link, "href").await?.context("a download href")?;
        assert!(href.ends_with("/content"), "{href}");
        screenshot(&c, "files-bob-received.png").await;
        // The browser downloads it and hashes what it got.
        let got = c
            .execute_async(
                r#"const [href, done] = arguments;
                   fetch(href).then(async r => {
                     const disposition = r.headers.get('content-disposition');
                     const buf = await r.arrayBuffer();
                     const d = await crypto.subtle.digest('SHA-256', buf);
                     const hex = [...new Uint8Array(d)].map(b => b.toString(16).padStart(2, '0')).join('');
                     done({status: r.status, size: buf.byteLength, hex, disposition});
                   }).catch(e => done({error: String(e)}));"#,
                vec![serde_json::json!(href)],
            )
            .await?;
        if got.get("error").is_some() {
            bail!("download failed in the browser: {got}");
        }
        assert_eq!(got["status"], 200, "{got}");
        assert_eq!(got["size"], SIZE, "{got}");
        assert_eq!(got["hex"], want.as_str(), "the downloaded bytes hash equal to the original");
        assert!(
            got["disposition"].as_str().is_some_and(|d| d.starts_with("attachment")
                && d.contains("checkpoint%20round%203.pt")),
            "{got}"
        );

        // ---- bob's files page lists it with its SHA-256 --------------------
        c.goto(&bob.url("/files")).await?;
        let row = "#files tr.transfer-row[data-direction=in][data-state=delivered]";
        wait_for(&c, row).await?;
        let sha = attr(&c, &format!("{row} code.file-sha256"), "title").await?;
        assert_eq!(sha.as_deref(), Some(want.as_str()));
        let peer = wait_for(&c, &format!("{row} .file-peer")).await?;
        assert!(peer.contains("alice"), "{peer:?}");
        screenshot(&c, "files-bob-files-page.png").await;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = c.close().await;
    result.unwrap();
    // The API agrees with the page: delivered on both sides, same hash.
    let bobs: Vec<TransferInfo> = get_json(bob.http, "/api/files").await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(
        (bobs[0].state, bobs[0].sha256.as_str()),
        (TransferState::Delivered, want.as_str())
    );
    assert_eq!(
        sha_hex(
            &std::fs::read(data.path().join("bob/files/received/checkpoint round 3.pt")).unwrap()
        ),
        want
    );
    alice.proc.stop();
    bob.proc.stop();
}

/// A room's file as people send it: alice attaches it on the room's page,
/// sees a line per member turn delivered, and bob's room page offers the
/// download, whose bytes hash equal to the original. Screenshots:
/// `target/e2e/files-room-*.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and a built dashboard; run by cargo xtask test"]
async fn a_file_attached_in_a_room_reaches_every_members_dashboard() {
    let data = tempfile::tempdir().unwrap();
    let (_dir, dir) = directory(data.path());
    let alice = Node::start("alice", dir, data.path(), "127.0.0.1:0", "room-files-alice");
    let bob = Node::start("bob", dir, data.path(), "127.0.0.1:0", "room-files-bob");
    let carol = Node::start("carol", dir, data.path(), "127.0.0.1:0", "room-files-carol");
    for who in ["bob", "carol"] {
        until(&format!("alice to see {who} online"), || async {
            let peers: Vec<PeerInfo> = get_json(alice.http, "/api/peers").await;
            peers
                .into_iter()
                .find(|p| p.name == who && p.online)
                .map(|_| ())
        })
        .await
        .unwrap();
    }
    let (status, body) = common::http(
        "POST",
        alice.http,
        "/api/rooms",
        Some(r#"{"name": "Site leads", "members": ["bob", "carol"]}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let room: roundtable_shared::api::RoomSummary = serde_json::from_str(&body).unwrap();
    for n in [&bob, &carol] {
        until("the room on every member's node", || async {
            let (s, _) =
                common::http("GET", n.http, &format!("/api/rooms/{}", room.id), None).await;
            (s == 200).then_some(())
        })
        .await
        .unwrap();
    }
    let original: Vec<u8> = (0..(3u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let src = data.path().join("site protocol v2.pdf");
    std::fs::write(&src, &original).unwrap();
    let want = sha_hex(&original);

    let driver = Chromedriver::start(&artifacts_dir().join("chromedriver-room-files.log"));
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path())
        .await
        .expect("cannot start headless Chromium");
    let result = async {
        c.goto(&alice.url(&format!("/rooms/{}", room.id))).await?;
        wait_text(&c, "#conn", |t| t.contains("connected")).await?;
        wait_for(&c, "#attach-file").await?;
        c.find(Locator::Css("#attach-input"))
            .await?
            .send_keys(src.to_str().context("a UTF-8 path")?)
            .await?;
        // One post, a line per member, both delivered.
        wait_for(&c, ".room-file[data-state=delivered]").await?;
        for who in ["bob", "carol"] {
            wait_for(
                &c,
                &format!(".room-file .file-recipient[data-peer={who}][data-state=delivered]"),
            )
            .await?;
        }
        let line = wait_for(&c, ".room-file .file-progress-text").await?;
        assert_eq!(line, "2 of 2 have it");
        screenshot(&c, "files-room-alice.png").await;

        c.goto(&bob.url(&format!("/rooms/{}", room.id))).await?;
        let link = ".file-message[data-direction=in][data-state=delivered] a.file-download";
        wait_for(&c, link).await?;
        let from = wait_for(&c, ".file-message[data-direction=in] .file-peer").await?;
        assert_eq!(from, "from alice");
        screenshot(&c, "files-room-bob.png").await;
        let href = attr(&c, link, "href").await?.context("a download href")?;
        let got = c
            .execute_async(
                r#"const [href, done] = arguments;
                   fetch(href).then(async r => {
                     const d = await crypto.subtle.digest('SHA-256', await r.arrayBuffer());
                     done([...new Uint8Array(d)].map(b => b.toString(16).padStart(2, '0')).join(''));
                   }).catch(e => done('error: ' + e));"#,
                vec![serde_json::json!(href)],
            )
            .await?;
        assert_eq!(got.as_str(), Some(want.as_str()), "bob's download hashes equal to the original");
        // Not in bob's direct chat with alice: it belongs to the room.
        // (Moved to in the page, so its list of files stays loaded.)
        c.execute(
            "history.pushState({}, '', '/chat/alice'); dispatchEvent(new PopStateEvent('popstate'));",
            vec![],
        )
        .await?;
        wait_text(&c, "#chat-title", |t| t == "alice").await?;
        wait_for(&c, "#attach-file").await?;
        assert!(c.find(Locator::Css(".file-message")).await.is_err());
        // The files page says which room it came in, with a link there.
        c.goto(&bob.url("/files")).await?;
        let place = wait_text(&c, "#files tr.transfer-row .file-peer", |t| t.contains("Site leads")).await?;
        assert_eq!(place, "from alice in Site leads");
        let href = attr(&c, "#files tr.transfer-row .file-room a", "href").await?;
        assert_eq!(href.as_deref(), Some(format!("/rooms/{}", room.id).as_str()));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = c.close().await;
    result.unwrap();
    alice.proc.stop();
    bob.proc.stop();
    carol.proc.stop();
}
