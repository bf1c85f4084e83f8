//! End-to-end helpers: `roundtable directory` and `roundtable node`
//! processes serving the built dashboard, and waits on what a page shows
//! (headless Chromium over WebDriver, `fantoccini`).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use fantoccini::{Client, Locator};
use roundtable_shared::api::{ChatMessage, Me, PeerInfo};

use super::browser::{artifacts_dir, dist_dir};
use super::{get_json, http, watch_output};

const BIN: &str = env!("CARGO_BIN_EXE_roundtable");

/// How long the page may take to show what a step waits for (a slow,
/// shared machine: handshakes, the relay and the 2 s directory queries).
pub const WAIT: Duration = Duration::from_secs(45);

pub struct Proc(pub Child);

impl Proc {
    /// SIGTERM (the node leaves the directory and closes its stores), then
    /// SIGKILL if it has not exited within 10 s.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Drop kills it.
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A log file `target/e2e/{name}.log` for a child's stderr.
pub fn log_file(name: &str) -> Stdio {
    let path = artifacts_dir().join(format!("{name}.log"));
    Stdio::from(File::create(&path).expect("creating a log file in target/e2e"))
}

/// `roundtable directory` on a free port, open registration.
pub fn directory(data: &Path) -> (Proc, SocketAddr) {
    let (child, addr) = super::process::directory_process(data);
    (Proc(child), addr.parse().expect("the directory's address"))
}

/// A `roundtable node` and its web address.
pub struct Node {
    pub proc: Proc,
    pub http: SocketAddr,
    /// Its notification endpoint's URL (`http://…/`).
    #[allow(dead_code)]
    pub notify: String,
}

impl Node {
    /// Starts `name` with its data under `data/name`, its chat listener on
    /// `chat` (`none`: reachable only through the directory's relay), its
    /// log in `target/e2e/{log}.log`; `extra` arguments after the rest.
    pub fn start(name: &str, dir: SocketAddr, data: &Path, chat: &str, log: &str) -> Node {
        Node::start_with(name, dir, data, chat, log, &[])
    }

    pub fn start_with(
        name: &str,
        dir: SocketAddr,
        data: &Path,
        chat: &str,
        log: &str,
        extra: &[&str],
    ) -> Node {
        let mut child = Command::new(BIN)
            .args(["node", "--name", name, "--directory", &dir.to_string()])
            .args(["--chat", chat, "--notify", "127.0.0.1:0"])
            .args(["--http", "127.0.0.1:0", "--data"])
            .arg(data.join(name))
            .arg("--dist")
            .arg(dist_dir())
            .args(extra)
            .env("ROUNDTABLE_PASSWORD", "pw")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file(log))
            .spawn()
            .expect("starting roundtable node");
        // It prints its dashboard, then (always, as --notify is given) its
        // notification endpoint.
        let mut http = None;
        let (http, notify) = watch_output(child.stdout.take().unwrap(), |line| {
            let line = line.trim();
            if let Some(a) = line.strip_prefix("dashboard  http://") {
                http = Some(a.trim().parse().unwrap());
            }
            let notify = line.strip_prefix("notify     ")?.trim().to_owned();
            Some((http.expect("the dashboard is printed first"), notify))
        });
        Node {
            proc: Proc(child),
            http,
            notify,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub async fn me(&self) -> Me {
        get_json(self.http, "/api/me").await
    }

    pub async fn peer(&self, name: &str) -> Option<PeerInfo> {
        let peers: Vec<PeerInfo> = get_json(self.http, "/api/peers").await;
        peers.into_iter().find(|p| p.name == name)
    }

    /// `POST /api/chats/{peer}/messages`, as the composer does.
    pub async fn send(&self, peer: &str, text: &str) -> ChatMessage {
        let body = serde_json::json!({ "text": text }).to_string();
        let path = format!("/api/chats/{peer}/messages");
        let (status, reply) = http("POST", self.http, &path, Some(&body)).await;
        assert_eq!(status, 202, "POST {path}: {reply}");
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("POST {path}: {e}: {reply}"))
    }
}

/// Polls `check` (an API read) until it returns `Some`, for `WAIT`.
pub async fn until<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the body, to say what the page showed when a wait failed.
pub async fn page_text(client: &Client) -> String {
    match client.find(Locator::Css("body")).await {
        Ok(b) => b.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Polls until `css` matches an element; returns its text.
pub async fn wait_for(client: &Client, css: &str) -> Result<String> {
    wait_text(client, css, |_| true).await
}

/// Polls until the text of the first element matching `css` satisfies `ok`; returns it.
pub async fn wait_text(client: &Client, css: &str, ok: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        if let Ok(el) = client.find(Locator::Css(css)).await {
            if let Ok(text) = el.text().await {
                if ok(&text) {
                    return Ok(text);
                }
                last = Some(text);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "waiting for {css}: {}; the page shows: {}",
                match last {
                    Some(t) => format!("last text {t:?}"),
                    None => "never matched".into(),
                },
                page_text(client).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until nothing matches `css`.
pub async fn wait_gone(client: &Client, css: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !client.find_all(Locator::Css(css)).await?.is_empty() {
        if Instant::now() >= deadline {
            bail!(
                "{css} is still shown; the page shows: {}",
                page_text(client).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub async fn attr(client: &Client, css: &str, name: &str) -> Result<Option<String>> {
    Ok(client.find(Locator::Css(css)).await?.attr(name).await?)
}

pub async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let path = artifacts_dir().join(name);
    if let Ok(png) = client.screenshot().await {
        let _ = std::fs::write(&path, png);
    }
    println!("screenshot at {}", path.display());
    path
}
