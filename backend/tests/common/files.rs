//! Helpers of the file-transfer tests: test bodies, their hashes, uploads
//! through a node's web API, and waiting for a transfer's state.

use roundtable::node::Node;
use roundtable_shared::api::{TransferInfo, TransferState};
use sha2::{Digest, Sha256};

use super::{eventually, get_json, request};

/// Lowercase hex SHA-256 of `b`, as the API and the CLI print it.
pub fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// `len` bytes that differ with `seed` and do not repeat in short runs.
pub fn body(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// Hands `body` to `n` for `to` (comma-separated); the transfers it made.
pub async fn upload(n: &Node, to: &str, name: &str, body: &[u8]) -> Vec<TransferInfo> {
    let path = format!("/api/files?to={to}&name={name}");
    let (status, _, out) = request("POST", n.http_addr, &path, &[], body).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&out));
    serde_json::from_slice(&out).unwrap()
}

/// Waits until `n` has a transfer with `id` in `state`.
pub async fn reaches(n: &Node, id: &str, state: TransferState, secs: u64) -> TransferInfo {
    eventually(
        secs,
        &format!("{} to see {id} {state:?}", n.name),
        || async {
            let all: Vec<TransferInfo> = get_json(n.http_addr, "/api/files").await;
            all.into_iter().find(|t| t.id == id && t.state == state)
        },
    )
    .await
}
