//! End to end: the real dashboard (built by Trunk into `dist/`) served by the
//! web bridge, loaded in headless Chromium through chromedriver.
//!
//! Run by `cargo xtask test`, or by hand after `trunk build --release`:
//! `cargo test -p roundtable --test browser -- --ignored`.
//! Environment: `ROUNDTABLE_DIST` (default `<workspace>/dist`), `CHROMEDRIVER`
//! (default `/usr/bin/chromedriver`), `CHROMIUM` (default `/usr/bin/chromium`).

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};
use roundtable::web::{self, WebConfig};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long the page may take to show the server version.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the backend lives in the workspace")
        .to_path_buf()
}

fn dist_dir() -> PathBuf {
    let dist = std::env::var_os("ROUNDTABLE_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("dist"));
    assert!(
        dist.join("index.html").is_file(),
        "no built dashboard at {}: run `trunk build --release` (or `cargo xtask test`), \
         or point ROUNDTABLE_DIST at a Trunk dist/ folder",
        dist.display()
    );
    dist
}

/// Where test artifacts go: `target/e2e/`.
fn artifacts_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp`, whatever the target directory is.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .join("e2e");
    std::fs::create_dir_all(&dir).expect("creating target/e2e");
    dir
}

fn free_port() -> u16 {
    StdListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("no free local port")
        .port()
}

/// A chromedriver process, killed when dropped (also when the test fails).
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    fn start(log: &Path) -> Self {
        let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = free_port();
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver {bin}: {e} (set CHROMEDRIVER)"));
        let mut driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited at start ({status}); see {}",
                    log.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium on a fresh profile, with nothing that talks to the network.
async fn browser(driver: &Chromedriver, profile: &Path) -> Result<Client> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ],
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::rustls()
        .context("setting up the webdriver client")?
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .context("starting a Chromium session through chromedriver")
}

/// Waits for `#version` to show text; returns it.
async fn wait_for_version(client: &Client) -> Result<String> {
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        if let Ok(el) = client.find(Locator::Css("#version")).await {
            let text = el.text().await?;
            if !text.trim().is_empty() {
                return Ok(text);
            }
        }
        if Instant::now() >= deadline {
            let shown = match client.find(Locator::Css("main")).await {
                Ok(main) => main.text().await.unwrap_or_default(),
                Err(_) => client.source().await.unwrap_or_default(),
            };
            bail!(
                "#version did not show within {} s; the page shows: {shown:?}",
                PAGE_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn check_dashboard(client: &Client, url: &str, screenshot: &Path) -> Result<()> {
    client.goto(url).await.context("opening the dashboard")?;
    let version = wait_for_version(client).await;
    // A picture of whatever the page shows, passed or failed.
    let png = client.screenshot().await.context("taking a screenshot")?;
    std::fs::write(screenshot, png).context("saving the screenshot")?;
    let version = version?;
    if version != roundtable_shared::VERSION {
        bail!(
            "#version shows {version:?}, expected {:?}",
            roundtable_shared::VERSION
        );
    }
    let title = client.find(Locator::Css("h1")).await?.text().await?;
    if title != "Roundtable" {
        bail!("the page header reads {title:?}");
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs Chromium and a built dashboard; run by cargo xtask test"]
async fn dashboard_shows_server_version() {
    let dist = dist_dir();
    let artifacts = artifacts_dir();

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(web::serve(listener, WebConfig::new(dist), stop.clone()));

    let driver = Chromedriver::start(&artifacts.join("chromedriver.log"));
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path())
        .await
        .expect("cannot start headless Chromium");
    let screenshot = artifacts.join("health.png");
    let result = check_dashboard(&client, &url, &screenshot).await;
    // Close the browser before judging, so that no Chromium outlives the test.
    let _ = client.close().await;
    drop(driver);
    stop.cancel();
    let _ = server.await;

    if let Err(e) = result {
        panic!("{e:#}\n(screenshot: {})", screenshot.display());
    }
    println!("dashboard OK; screenshot at {}", screenshot.display());
}
