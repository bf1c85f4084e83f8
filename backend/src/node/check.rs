//! "Check peers" (`GET /api/peers/check`): one `info` request to every
//! online peer at once over its secure link, and who answered within the
//! deadline, with round-trip time, software version and path.
//!
//! For each peer at once, under one deadline: open a link (connection
//! and Noise handshake, or the relay's session), then send the request
//! over it and wait for the reply. The round-trip time is the request's
//! own, from the moment it is sent, not the handshake's; a peer whose link
//! cannot be opened in time (offline, unreachable, hung, a classic peer
//! that cannot answer requests, a changed key) is reported with the reason
//! in words, and delays nobody else.
//!
//! Each check opens its own links rather than borrowing the delivery
//! workers': a worker owns its link for the ordered, acknowledged outbox,
//! and a check must not wait behind a batch of messages.

use std::time::Duration;

use futures_util::future::join_all;
use roundtable_shared::api::{PeerCheck, PeerCheckResult, PeerPath};
use roundtable_shared::rpc::{InfoReply, RpcFrame, Status, MAX_TIMEOUT_MS};
use tokio::time::Instant;

use super::chat::Chat;
use super::link::Link;
use crate::overlay::rpc::Answer;

/// The request kind a check sends.
const KIND: &str = "info";

/// Longest deadline a check may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

fn no_answer(name: &str, path: Option<PeerPath>, why: String) -> PeerCheckResult {
    PeerCheckResult {
        name: name.to_owned(),
        answered: false,
        rtt_ms: None,
        version: None,
        path,
        error: Some(why),
    }
}

/// One peer's check, all within `deadline`.
async fn ask(chat: &Chat, peer: &str, deadline: Instant, ms: u128) -> PeerCheckResult {
    let link = match tokio::time::timeout_at(deadline, chat.open_link(peer)).await {
        Err(_) => return no_answer(peer, None, format!("not reachable within {ms} ms")),
        Ok(Ok(None)) => return no_answer(peer, None, "offline".into()),
        Ok(Err(e)) => return no_answer(peer, None, e.to_string()),
        Ok(Ok(Some(link))) => link,
    };
    let path = Some(link.path);
    if !link.secure() {
        return no_answer(
            peer,
            path,
            "classic eurechat peer: it cannot answer requests".into(),
        );
    }
    let mut link = link;
    match call(chat, &mut link, peer, KIND, Vec::new(), deadline).await {
        Ok(Answer {
            rtt,
            status: Status::Ok,
            body,
        }) => {
            let info: Option<InfoReply> = serde_json::from_slice(&body).ok();
            PeerCheckResult {
                name: peer.to_owned(),
                answered: true,
                rtt_ms: Some(rtt.as_secs_f64() * 1000.0),
                version: info.map(|i| format!("{} {}", i.software, i.version)),
                path,
                error: None,
            }
        }
        Ok(Answer { rtt, status, body }) => PeerCheckResult {
            name: peer.to_owned(),
            answered: true,
            rtt_ms: Some(rtt.as_secs_f64() * 1000.0),
            version: None,
            path,
            error: Some(format!(
                "answered {}: {}",
                status.as_str(),
                String::from_utf8_lossy(&body)
            )),
        },
        Err(CallFailed::NotSent(e)) => no_answer(peer, path, e),
        Err(CallFailed::NoAnswer) => no_answer(peer, path, format!("no answer within {ms} ms")),
    }
}

/// Why [`call`] got no answer.
#[derive(Debug)]
pub(crate) enum CallFailed {
    /// The request could not be started or written (the reason in words).
    NotSent(String),
    /// No reply before the deadline (or the link closed first).
    NoAnswer,
}

/// Sends one request of `kind` to `peer` over `link` (a secure link to
/// it) and reads the link until its reply or `deadline`. Other frames
/// read meanwhile are dropped: the link is the caller's own.
pub(crate) async fn call(
    chat: &Chat,
    link: &mut Link,
    peer: &str,
    kind: &str,
    body: Vec<u8>,
    deadline: Instant,
) -> Result<Answer, CallFailed> {
    let requests = chat.requests();
    let (id, pending) = requests
        .start(peer)
        .map_err(|e| CallFailed::NotSent(e.to_string()))?;
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout_ms = (left.as_millis().min(u128::from(MAX_TIMEOUT_MS)) as u32).max(1);
    let req = RpcFrame::Req {
        id,
        kind: kind.into(),
        timeout_ms,
        body,
    };
    link.send(&[req.to_frame()], left)
        .await
        .map_err(|e| CallFailed::NotSent(format!("request not sent: {e}")))?;
    // Read until the reply (given to the request table) or the deadline.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match link.recv(left).await {
            Ok(f) if f.kind == RpcFrame::REP => {
                if let Ok(rep) = RpcFrame::parse(&f) {
                    if rep.id() == id {
                        requests.complete(peer, rep);
                        break;
                    }
                }
            }
            Ok(_) => {}
            // Nothing more comes on this link (its deadline passed, or it
            // is gone: a peer that restarted closed it): no reason to wait.
            Err(_) => {
                return pending
                    .wait_until(Instant::now())
                    .await
                    .map_err(|_| CallFailed::NoAnswer)
            }
        }
    }
    pending
        .wait_until(deadline)
        .await
        .map_err(|_| CallFailed::NoAnswer)
}

impl Chat {
    /// Asks every online peer at once; answers within `timeout`.
    pub async fn check_peers(&self, timeout: Duration) -> PeerCheck {
        let timeout = timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT);
        let deadline = Instant::now() + timeout;
        let ms = timeout.as_millis();
        let mut online: Vec<String> = self
            .peers()
            .list()
            .into_iter()
            .filter(|p| p.online)
            .map(|p| p.name)
            .collect();
        online.sort();
        let results = join_all(online.iter().map(|p| ask(self, p, deadline, ms))).await;
        PeerCheck {
            timeout_ms: ms as u64,
            results,
        }
    }
}
