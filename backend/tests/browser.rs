//! End to end: the real dashboard (built by Trunk into `dist/`) served by the
//! web bridge, loaded in headless Chromium through chromedriver.
//!
//! Run by `cargo xtask test`, or by hand after `trunk build --release`:
//! `cargo test -p roundtable --test browser -- --ignored`.
//! Environment: `ROUNDTABLE_DIST` (default `<workspace>/dist`), `CHROMEDRIVER`
//! (default `/usr/bin/chromedriver`), `CHROMIUM` (default `/usr/bin/chromium`).

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::browser::{artifacts_dir, browser, dist_dir, Chromedriver};
use fantoccini::{Client, Locator};
use roundtable::web::{self, WebConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long the page may take to show the server version.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

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
