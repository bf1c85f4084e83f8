//! `roundtable node` and `roundtable directory` as real processes, for
//! tests that kill them hard or drive them from a browser.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::watch_output;

const BIN: &str = env!("CARGO_BIN_EXE_roundtable");

/// A node process and its web address (read from what it prints).
pub struct NodeProc {
    child: Child,
    pub http: SocketAddr,
}

impl NodeProc {
    /// `roundtable node --name NAME` against directory `dir`, its data
    /// under `data/NAME`, chat on `chat` (`127.0.0.1:0`, or `none`).
    pub fn spawn(name: &str, dir: SocketAddr, data: &Path, chat: &str) -> NodeProc {
        NodeProc::spawn_with(name, dir, data, chat, &[])
    }

    /// [`NodeProc::spawn`] with more arguments.
    pub fn spawn_with(
        name: &str,
        dir: SocketAddr,
        data: &Path,
        chat: &str,
        extra: &[&str],
    ) -> NodeProc {
        let mut child = Command::new(BIN)
            .args(["node", "--name", name, "--directory", &dir.to_string()])
            .args(["--chat", chat, "--http", "127.0.0.1:0", "--data"])
            .arg(data.join(name))
            .args(extra)
            .env("ROUNDTABLE_PASSWORD", "pw")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let http = watch_output(child.stdout.take().unwrap(), |line| {
            line.trim()
                .strip_prefix("dashboard  http://")
                .map(|u| u.parse().unwrap())
        });
        NodeProc { child, http }
    }

    /// SIGKILL: no shutdown, no LEAVE, nothing flushed.
    pub fn kill9(mut self) {
        let status = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = self.child.wait();
    }
}

/// A test that fails before its `kill9` leaves no node behind (one would
/// hold the test's output open and keep the run from ending).
impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `roundtable directory` on a free port with open registration, its
/// database under `data`: the child and the address it logged.
pub fn directory_process(data: &Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args([
            "directory",
            "--listen",
            "127.0.0.1:0",
            "--open-registration",
        ])
        .arg("--db")
        .arg(data.join("directory.db"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting roundtable directory");
    let addr = watch_output(child.stderr.take().unwrap(), super::logged_addr);
    (child, addr)
}
