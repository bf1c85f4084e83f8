//! The terminal's side of transfers through a node's web API:
//! `roundtable send-file --node URL --to bob,carol PATH` (stream the file
//! to the node, then one progress bar per recipient until each has it or
//! the node says why not) and `roundtable files --node URL` (a table).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use roundtable_shared::api::{Direction, RoomSummary, TransferInfo, TransferState};

type Body = BoxBody<Bytes, std::io::Error>;

/// A node's web API.
pub struct NodeClient {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Body>,
}

impl NodeClient {
    /// `url`: the node's web address (`http://127.0.0.1:8080`).
    pub fn new(url: &str, token: Option<String>) -> Result<NodeClient> {
        let base = url.trim_end_matches('/').to_owned();
        crate::fl_drive::check_url(&base).map_err(anyhow::Error::msg)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Ok(NodeClient {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn call(&self, method: Method, path: &str, body: Body) -> Result<(u16, Bytes)> {
        let uri: Uri = format!("{}{path}", self.base).parse()?;
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body)?;
        let resp = self
            .client
            .request(req)
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// A JSON answer, or the node's `{"error": …}` as an error.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<T> {
        let (status, bytes) = self.call(method, path, body).await?;
        if !(200..300).contains(&status) {
            let why = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            bail!("the node refused ({status}): {why}");
        }
        serde_json::from_slice(&bytes).context("the node's answer is not what this version expects")
    }

    /// Every transfer the node knows, newest first.
    pub async fn files(&self) -> Result<Vec<TransferInfo>> {
        self.json(Method::GET, "/api/files", empty()).await
    }

    pub async fn file(&self, seq: i64) -> Result<TransferInfo> {
        self.json(Method::GET, &format!("/api/files/{seq}"), empty())
            .await
    }

    /// The id of the room `room` names: its id, or its name if exactly one
    /// of the node's rooms has it.
    pub async fn room_id(&self, room: &str) -> Result<String> {
        let rooms: Vec<RoomSummary> = self.json(Method::GET, "/api/rooms", empty()).await?;
        if rooms.iter().any(|r| r.id == room) {
            return Ok(room.to_owned());
        }
        let named: Vec<&RoomSummary> = rooms.iter().filter(|r| r.name == room).collect();
        match named.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => bail!("the node has no room called {room:?} (a room's name or id, as its page's address shows)"),
            _ => bail!(
                "{} rooms are called {room:?}: name one by its id ({})",
                named.len(),
                named.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// Streams the file at `path` to the node for `to`; `sent` hears the
    /// bytes handed over so far.
    pub async fn upload(
        &self,
        to: &Recipients,
        path: &Path,
        sent: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<Vec<TransferInfo>> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("the path names no file")?;
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut total = 0u64;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).map_ok(move |b| {
            total += b.len() as u64;
            sent(total);
            Frame::data(b)
        });
        let body = BodyExt::boxed(StreamBody::new(stream));
        let name = utf8_percent_encode(name, NON_ALPHANUMERIC);
        let query = match to {
            Recipients::Users(to) => format!(
                "/api/files?to={}&name={name}",
                utf8_percent_encode(&to.join(","), NON_ALPHANUMERIC),
            ),
            Recipients::Room(id) => format!(
                "/api/rooms/{}/files?name={name}",
                utf8_percent_encode(id, NON_ALPHANUMERIC)
            ),
        };
        self.json(Method::POST, &query, body).await
    }
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn bar_style() -> Result<ProgressStyle> {
    Ok(ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    )?
    .progress_chars("=> "))
}

/// Who a file handed to the node goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// These users (`--to`).
    Users(Vec<String>),
    /// Everyone in the room with this id (`--room`).
    Room(String),
}

/// `roundtable send-file --node URL --to …|--room … PATH`: returns an
/// error if any recipient did not get the file.
pub async fn send(node: &NodeClient, to: &Recipients, path: &Path) -> Result<()> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let bars = MultiProgress::new();
    let upload = bars.add(ProgressBar::new(size));
    upload.set_style(bar_style()?);
    upload.set_prefix("to the node");
    let u = upload.clone();
    let transfers = node.upload(to, path, move |n| u.set_position(n)).await?;
    upload.finish_with_message("handed over");
    let mut watched: Vec<(TransferInfo, ProgressBar)> = transfers
        .into_iter()
        .map(|t| {
            let bar = bars.add(ProgressBar::new(t.size));
            bar.set_style(bar_style().expect("a fixed template"));
            bar.set_prefix(t.peer.clone());
            (t, bar)
        })
        .collect();
    loop {
        let mut open = 0;
        for (t, bar) in &mut watched {
            if t.state.is_final() {
                continue;
            }
            match node.file(t.seq).await {
                Ok(now) => *t = now,
                Err(e) => bar.set_message(format!("cannot ask the node: {e}")),
            }
            bar.set_position(t.bytes);
            match t.state {
                TransferState::Delivered => bar.finish_with_message("delivered, SHA-256 verified"),
                TransferState::Failed => bar.abandon_with_message(format!(
                    "failed: {}",
                    t.error.as_deref().unwrap_or("no reason given")
                )),
                TransferState::Waiting => {
                    bar.set_message(format!("waiting: {}", t.error.as_deref().unwrap_or("")));
                }
                TransferState::Queued => bar.set_message("queued"),
                TransferState::Sending => bar.set_message("sending"),
            }
            if !t.state.is_final() {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (t, _) in &watched {
        match t.state {
            TransferState::Delivered => {
                println!(
                    "{}: delivered {} ({}, SHA-256 {})",
                    t.peer,
                    t.name,
                    human(t.size),
                    t.sha256
                );
            }
            _ => println!(
                "{}: not delivered: {}",
                t.peer,
                t.error.as_deref().unwrap_or("no reason given")
            ),
        }
    }
    let failed: Vec<&str> = watched
        .iter()
        .filter(|(t, _)| t.state == TransferState::Failed)
        .map(|(t, _)| t.peer.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("not delivered to {}", failed.join(", "))
    }
}

/// A size for people: `1.5 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `roundtable files --node URL`: one line per transfer.
pub fn table(files: &[TransferInfo]) -> String {
    let mut out = format!(
        "{:<5} {:<3} {:<22} {:<28} {:>10} {:<10} {:<16}\n",
        "SEQ", "DIR", "PEER", "NAME", "SIZE", "STATE", "SHA-256"
    );
    for t in files {
        let dir = match t.direction {
            Direction::Out => "->",
            Direction::In => "<-",
        };
        let state = match t.state {
            TransferState::Sending | TransferState::Waiting if t.size > 0 => {
                format!("{:?} {}%", t.state, t.bytes * 100 / t.size).to_lowercase()
            }
            s => format!("{s:?}").to_lowercase(),
        };
        out.push_str(&format!(
            "{:<5} {:<3} {:<22} {:<28} {:>10} {:<10} {}\n",
            t.seq,
            dir,
            t.peer,
            t.name,
            human(t.size),
            state,
            &t.sha256[..t.sha256.len().min(16)]
        ));
        if let Some(e) = &t.error {
            if !t.state.is_final() || t.state == TransferState::Failed {
                out.push_str(&format!("      {e}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
