//! End to end: real processes (`roundtable directory`, `roundtable node`,
//! `roundtable fl-drive`) and their dashboards in headless Chromium, driven
//! over WebDriver. Each test saves screenshots under `target/e2e/`.
//!
//! Run by `cargo xtask test`, or by hand after `trunk build --release`:
//! `cargo test -p roundtable --test dashboard -- --ignored --test-threads=1`.
//! Environment: `ROUNDTABLE_DIST` (default `<workspace>/dist`), `CHROMEDRIVER`
//! (default `/usr/bin/chromedriver`), `CHROMIUM` (default `/usr/bin/chromium`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::browser::{artifacts_dir, browser, dist_dir, free_port, Chromedriver};
use common::watch_output;
use fantoccini::{Client, Locator};

const BIN: &str = env!("CARGO_BIN_EXE_roundtable");
/// How long the page may take to show what a step waits for.
const WAIT: Duration = Duration::from_secs(30);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `roundtable directory` on a free port, open registration.
fn directory(data: &Path) -> (Proc, String) {
    let (child, addr) = common::process::directory_process(data);
    (Proc(child), addr)
}

/// A `roundtable node` and the addresses it printed.
struct Node {
    _proc: Proc,
    http: SocketAddr,
    notify: String,
}

impl Node {
    /// Starts `name` with its data under `data`, its web bridge on `http`.
    fn start(name: &str, dir: &str, data: &Path, http: &str, extra: &[&str]) -> Node {
        let mut child = Command::new(BIN)
            .args(["node", "--name", name, "--directory", dir])
            .args(["--chat", "127.0.0.1:0", "--notify", "127.0.0.1:0"])
            .args(["--http", http, "--data"])
            .arg(data.join(name))
            .arg("--dist")
            .arg(dist_dir())
            .args(extra)
            .env("ROUNDTABLE_PASSWORD", "pw")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting roundtable node");
        let mut web = None;
        let notify = watch_output(child.stdout.take().unwrap(), |line| {
            let line = line.trim();
            if let Some(url) = line.strip_prefix("dashboard  http://") {
                web = Some(url.trim().parse().unwrap());
            }
            // The notify line comes after the dashboard line.
            Some(line.strip_prefix("notify     ")?.trim().to_owned())
        });
        Node {
            _proc: Proc(child),
            http: web.expect("the node prints its dashboard before its notify address"),
            notify,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

/// Polls until the text of the first element matching `css` satisfies `ok`; returns it.
async fn wait_text(client: &Client, css: &str, ok: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        if let Ok(el) = client.find(Locator::Css(css)).await {
            if let Ok(text) = el.text().await {
                if ok(&text) {
                    return Ok(text);
                }
                last = text;
            }
        }
        if Instant::now() >= deadline {
            let body = match client.find(Locator::Css("body")).await {
                Ok(b) => b.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            bail!("waiting for {css}: last text {last:?}; the page shows: {body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `css` matches at least `n` elements; returns how many.
async fn wait_count(client: &Client, css: &str, n: usize) -> Result<usize> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = client.find_all(Locator::Css(css)).await?.len();
        if found >= n {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            bail!("waiting for {n} × {css}: found {found}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let path = artifacts_dir().join(name);
    if let Ok(png) = client.screenshot().await {
        let _ = std::fs::write(&path, png);
    }
    path
}

/// Runs `body` with a browser session; screenshots and closes it whatever happens.
async fn with_browser<F, Fut>(driver: &Chromedriver, shot: &str, body: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let profile = tempfile::tempdir().unwrap();
    let client = browser(driver, profile.path())
        .await
        .expect("cannot start headless Chromium");
    let result = body(client.clone()).await;
    let path = screenshot(&client, shot).await;
    let _ = client.close().await;
    if let Err(e) = result {
        panic!("{e:#}\n(screenshot: {})", path.display());
    }
    println!("screenshot at {}", path.display());
}

/// Types `text` into the send box and presses Enter.
async fn send(client: &Client, text: &str) -> Result<()> {
    let area = client.find(Locator::Css("#composer-text")).await?;
    area.send_keys(&format!("{text}\u{E007}")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and a built dashboard; run by cargo xtask test"]
async fn chat_between_two_dashboards() {
    let data = tempfile::tempdir().unwrap();
    let (_dir, dir) = directory(data.path());
    let alice = &Node::start("alice", &dir, data.path(), "127.0.0.1:0", &[]);
    let bob = &Node::start("bob", &dir, data.path(), "127.0.0.1:0", &[]);
    let driver = &Chromedriver::start(&artifacts_dir().join("chromedriver-chat.log"));

    with_browser(driver, "chat-alice.png", |a| async move {
        a.goto(&alice.url("/")).await?;
        wait_count(&a, "#peers li[data-name=bob]", 1).await?;
        // When the peer list first rendered, in ms since navigation started.
        let first = a
            .execute(
                "const m = performance.getEntriesByName('roundtable:peers');\
                 return m.length ? m[0].startTime : null;",
                vec![],
            )
            .await?;
        eprintln!("FIGURE navigation → first peer list: {first} ms");
        assert!(first.as_f64().is_some(), "no peer-list mark: {first}");
        // The wasm came compressed (the brotli copy `cargo xtask build`
        // writes: about a quarter of its size).
        let wasm = a
            .execute(
                "const w = performance.getEntriesByType('resource')\
                   .find(e => e.name.endsWith('_bg.wasm'));\
                 return w ? [w.encodedBodySize, w.decodedBodySize] : null;",
                vec![],
            )
            .await?;
        let (sent, size) = (
            wasm[0].as_f64().unwrap_or(0.0),
            wasm[1].as_f64().unwrap_or(0.0),
        );
        eprintln!("FIGURE dashboard wasm over the wire: {sent} of {size} bytes");
        assert!(
            size > 0.0 && sent < size / 2.0,
            "the wasm was not sent compressed ({sent} of {size} bytes): \
             was dist/ built by `cargo xtask build`?"
        );
        wait_text(&a, "#conn", |t| t.contains("connected")).await?;
        wait_text(&a, "#me", |t| t == "alice").await?;

        a.find(Locator::Css("#peers li[data-name=bob] a"))
            .await?
            .click()
            .await?;
        wait_text(&a, "#chat-title", |t| t == "bob").await?;
        send(&a, "hello bob").await?;
        wait_text(&a, ".msg.out .text", |t| t == "hello bob").await?;

        // Bob's dashboard: an unread badge, then the message.
        with_browser(driver, "chat-bob.png", |b| async move {
            b.goto(&bob.url("/")).await?;
            wait_text(&b, "#peers li[data-name=alice] .unread", |t| t == "1").await?;
            screenshot(&b, "peers-bob.png").await;
            b.find(Locator::Css("#peers li[data-name=alice] a"))
                .await?
                .click()
                .await?;
            wait_text(&b, ".msg.in .text", |t| t == "hello bob").await?;
            // Bob answers; it arrives live on Alice's page.
            send(&b, "hi alice").await?;
            wait_text(&b, ".msg.out .state", |t| t.contains("delivered")).await?;
            Ok(())
        })
        .await;

        wait_text(&a, ".msg.out .state", |t| t.contains("delivered")).await?;
        wait_text(&a, ".msg.in .text", |t| t == "hi alice").await?;
        // The URL can be reloaded: the conversation comes back from history.
        a.refresh().await?;
        wait_text(&a, ".msg.in .text", |t| t == "hi alice").await?;
        wait_text(&a, ".msg.out .state", |t| t.contains("delivered")).await?;
        // A narrow window (a phone, a side-by-side window) still reads well.
        a.set_window_size(400, 800).await?;
        wait_text(&a, ".msg.in .text", |t| t == "hi alice").await?;
        screenshot(&a, "chat-narrow.png").await;
        a.set_window_size(1200, 800).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and a built dashboard; run by cargo xtask test"]
async fn training_rounds_advance_live() {
    let data = tempfile::tempdir().unwrap();
    let (_dir, dir) = directory(data.path());
    let alice = &Node::start(
        "alice",
        &dir,
        data.path(),
        "127.0.0.1:0",
        &["--train-cmd", "echo local-step"],
    );
    let driver = Chromedriver::start(&artifacts_dir().join("chromedriver-training.log"));
    let uuid = "00000000-0000-4000-8000-00000000e2e1";

    with_browser(&driver, "training.png", |c| async move {
        c.goto(&alice.url("/trainings")).await?;
        wait_count(&c, "#no-trainings", 1).await?;
        wait_text(&c, "#conn", |t| t.contains("connected")).await?;
        let mut drive = Proc(
            Command::new(BIN)
                .args(["fl-drive", "--to", &alice.notify, "--rounds", "3"])
                .args(["--interval", "0.5", "--training-id", uuid])
                .stdout(Stdio::null())
                .spawn()
                .context("starting fl-drive")?,
        );
        // The training appears without a reload; open it.
        wait_count(&c, &format!("tr[data-uuid='{uuid}'] a"), 1).await?;
        c.find(Locator::Css(&format!("tr[data-uuid='{uuid}'] a")))
            .await?
            .click()
            .await?;
        wait_text(&c, "#training-title", |t| t.contains(uuid)).await?;
        // Rounds advance on the page while fl-drive plays them.
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let rows = c.find_all(Locator::Css("#phases .phase-row")).await?.len();
            if seen.last() != Some(&rows) {
                seen.push(rows);
            }
            // The state in words reads "Finished"; its attribute is the API's.
            let state = c
                .find(Locator::Css("#training-state"))
                .await?
                .attr("data-state")
                .await?
                .unwrap_or_default();
            if state == "finished" {
                break;
            }
            if Instant::now() >= deadline {
                bail!("the training did not finish on the page; rows seen {seen:?}, state {state}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = drive.0.wait()?;
        assert!(status.success(), "fl-drive: {status}");
        let rows = c.find_all(Locator::Css("#phases .phase-row")).await?.len();
        let bars = c.find_all(Locator::Css("#timeline .bar")).await?.len();
        eprintln!("training: phase rows seen growing {seen:?}, final {rows}, timeline bars {bars}");
        assert!(rows >= 4, "phases of 3 rounds: {rows}");
        assert_eq!(bars, rows, "one bar per phase");
        assert!(seen.len() >= 3, "rounds appeared one by one: {seen:?}");
        let round = c.find(Locator::Css("#current-round")).await?.text().await?;
        assert!(round.parse::<u32>().is_ok_and(|r| r >= 2), "round {round}");
        // The local run of each phase: status, exit code, its output.
        wait_count(&c, "#phases .run.succeeded", rows).await?;
        wait_text(&c, "#phases .phase-row td:last-child", |t| {
            t.contains("exit 0")
        })
        .await?;
        let out = c.find(Locator::Css("#phases details summary")).await?;
        out.click().await?;
        wait_text(&c, "#phases pre.output", |t| t.contains("local-step train")).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and a built dashboard; run by cargo xtask test"]
async fn page_reconnects_after_node_restart() {
    let data = tempfile::tempdir().unwrap();
    let (_dir, dir) = directory(data.path());
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let alice = Node::start("alice", &dir, data.path(), &http, &[]);
    let bob = Node::start("bob", &dir, data.path(), "127.0.0.1:0", &[]);
    let driver = Chromedriver::start(&artifacts_dir().join("chromedriver-restart.log"));

    with_browser(&driver, "restart-end.png", |c| async move {
        c.goto(&alice.url("/chat/bob")).await?;
        wait_text(&c, "#conn", |t| t.contains("connected")).await?;
        send(&c, "before the restart").await?;
        wait_text(&c, ".msg.out .state", |t| t.contains("delivered")).await?;

        // Alice's node goes away: the page says so.
        drop(alice);
        wait_text(&c, "#conn", |t| {
            t.contains("reconnecting") || t.contains("offline")
        })
        .await?;
        screenshot(&c, "restart-offline.png").await;

        // Meanwhile bob writes; it waits in bob's outbox.
        let (status, body) = common::http(
            "POST",
            bob.http,
            "/api/chats/alice/messages",
            Some(r#"{"text":"while you were away"}"#),
        )
        .await;
        assert_eq!(status, 202, "{body}");

        // Alice comes back on the same address and data.
        let alice = Node::start("alice", &dir, data.path(), &http, &[]);
        wait_text(&c, "#conn", |t| t.contains("connected")).await?;
        wait_text(&c, ".msg.in .text", |t| t == "while you were away").await?;
        wait_text(&c, ".msg.out .text", |t| t == "before the restart").await?;
        screenshot(&c, "restart.png").await;
        drop(alice);
        Ok(())
    })
    .await;
}
