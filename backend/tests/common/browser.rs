//! The headless-Chromium harness shared by the end-to-end tests: where the
//! built dashboard and test artifacts are, chromedriver, and a browser on a
//! fresh profile with nothing that talks to the network.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fantoccini::{Client, ClientBuilder};
use serde_json::json;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the backend lives in the workspace")
        .to_path_buf()
}

pub fn dist_dir() -> PathBuf {
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
pub fn artifacts_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target>/tmp`, whatever the target directory is.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .join("e2e");
    std::fs::create_dir_all(&dir).expect("creating target/e2e");
    dir
}

pub fn free_port() -> u16 {
    StdListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("no free local port")
        .port()
}

/// A chromedriver process, killed when dropped (also when the test fails).
pub struct Chromedriver {
    child: Child,
    pub url: String,
}

impl Chromedriver {
    pub fn start(log: &Path) -> Self {
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
pub async fn browser(driver: &Chromedriver, profile: &Path) -> Result<Client> {
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
