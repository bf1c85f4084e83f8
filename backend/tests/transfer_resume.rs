//! Resumable transfers (issue 14): a node killed with SIGKILL halfway
//! through a large file, then restarted, finishes it from the last synced
//! offset without anyone doing anything; the file arrives whole and
//! verified, once, and fewer bytes than the whole file cross the wire
//! after the restart.
//!
//! Bob's chat port is advertised behind a proxy that slows alice's bytes
//! to a few MiB/s (so that the kill lands mid-file) and counts them.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::browser::free_port;
use common::process::NodeProc;
use common::proxy::throttled_proxy;
use common::{eventually, get_json, request, Directory};
use roundtable_shared::api::{TransferInfo, TransferState};
use sha2::{Digest, Sha256};

/// Bytes per second the proxy lets through towards bob.
const RATE: u64 = 12 << 20;
const SIZE: usize = 64 << 20;

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn file(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

async fn transfer(http: SocketAddr, id: &str) -> Option<TransferInfo> {
    let all: Vec<TransferInfo> = get_json(http, "/api/files").await;
    all.into_iter().find(|t| t.id == id)
}

/// Alice (a process) and bob (a process behind the proxy): the file
/// handed to alice for bob, and the pieces to restart either.
struct Setup {
    dir: Directory,
    data: tempfile::TempDir,
    bob_chat: u16,
    proxy: SocketAddr,
    count: Arc<AtomicU64>,
}

impl Setup {
    async fn new() -> Setup {
        let dir = Directory::start().await;
        let data = tempfile::tempdir().unwrap();
        let bob_chat = free_port();
        let (proxy, count) =
            throttled_proxy(SocketAddr::from(([127, 0, 0, 1], bob_chat)), RATE).await;
        Setup {
            dir,
            data,
            bob_chat,
            proxy,
            count,
        }
    }

    fn alice(&self) -> NodeProc {
        NodeProc::spawn("alice", self.dir.addr, self.data.path(), "127.0.0.1:0")
    }

    fn bob(&self) -> NodeProc {
        let port = self.proxy.port().to_string();
        NodeProc::spawn_with(
            "bob",
            self.dir.addr,
            self.data.path(),
            &format!("127.0.0.1:{}", self.bob_chat),
            &["--advertise-port", &port],
        )
    }

    fn received(&self) -> std::path::PathBuf {
        self.data.path().join("bob/files/received/big.bin")
    }
}

/// Alice and bob running, the file handed to alice for bob and halfway
/// through the proxy: the two nodes, the file, and its transfer.
async fn halfway(s: &Setup) -> (NodeProc, NodeProc, Vec<u8>, TransferInfo) {
    let alice = s.alice();
    let bob = s.bob();
    let body = file(SIZE);
    let t = upload(&alice, &body).await;
    forwarded(&s.count, SIZE as u64 / 2).await;
    (alice, bob, body, t)
}

async fn upload(alice: &NodeProc, body: &[u8]) -> TransferInfo {
    let (status, _, out) = request(
        "POST",
        alice.http,
        "/api/files?to=bob&name=big.bin",
        &[],
        body,
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&out));
    let mut ts: Vec<TransferInfo> = serde_json::from_slice(&out).unwrap();
    ts.remove(0)
}

/// Waits until the proxy has let `bytes` through.
async fn forwarded(count: &AtomicU64, bytes: u64) {
    eventually(60, "the transfer to get halfway", || async {
        (count.load(Ordering::Relaxed) >= bytes).then_some(())
    })
    .await;
}

/// Part files bob holds.
fn part_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("bob/files/partial"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_killed_halfway_resumes_and_gets_the_file_once() {
    let s = Setup::new().await;
    let (alice, bob, body, t) = halfway(&s).await;
    bob.kill9();
    let before_restart = s.count.load(Ordering::Relaxed);
    assert!(
        before_restart < SIZE as u64,
        "the kill came too late to test anything"
    );
    s.count.store(0, Ordering::Relaxed);
    let bob = s.bob();
    let done = eventually(
        90,
        "the file to be delivered after bob's restart",
        || async {
            transfer(alice.http, &t.id)
                .await
                .filter(|t| t.state == TransferState::Delivered)
        },
    )
    .await;
    assert_eq!(done.bytes, SIZE as u64);
    let got = std::fs::read(s.received()).unwrap();
    assert_eq!(sha_hex(&got), sha_hex(&body));
    let after = s.count.load(Ordering::Relaxed);
    assert!(
        after < SIZE as u64,
        "{after} bytes were sent after the restart: the whole file again"
    );
    // Delivered once: one file, one record, no part left.
    let received: Vec<_> = std::fs::read_dir(s.data.path().join("bob/files/received"))
        .unwrap()
        .collect();
    assert_eq!(received.len(), 1);
    let bobs: Vec<TransferInfo> = get_json(bob.http, "/api/files").await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].state, TransferState::Delivered);
    assert_eq!(part_files(s.data.path()), 0);
    alice.kill9();
    bob.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_killed_halfway_resumes_after_its_restart() {
    let s = Setup::new().await;
    let (alice, bob, body, t) = halfway(&s).await;
    alice.kill9();
    s.count.store(0, Ordering::Relaxed);
    // Nothing to do but start it again: its outbox resumes on its own.
    let alice = s.alice();
    eventually(
        90,
        "the file to be delivered after alice's restart",
        || async {
            transfer(alice.http, &t.id)
                .await
                .filter(|t| t.state == TransferState::Delivered)
        },
    )
    .await;
    let got = std::fs::read(s.received()).unwrap();
    assert_eq!(sha_hex(&got), sha_hex(&body));
    let after = s.count.load(Ordering::Relaxed);
    assert!(
        after < SIZE as u64,
        "{after} bytes were sent again after the restart"
    );
    alice.kill9();
    bob.kill9();
}
