//! One NVFlare binary exchange over a bare connection: send a file, receive
//! one into a folder, or serve a listener that receives them.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use roundtable_shared::binary::{footer, BinaryError, Decoder, Header, Limits, Step};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::reader::{Chunk, Reader};
use super::sink::{Output, Sink};
use super::writeback::Writeback;
use crate::caps::{accept, Caps, RefusalLog};

/// Bytes read from disk or the socket at a time.
pub const BLOCK: usize = 1 << 20;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad exchange: {0}")]
    Exchange(#[from] BinaryError),
    #[error("connection closed after {got} of {want} body bytes")]
    Truncated { got: u64, want: u64 },
    #[error("connection closed before the exchange began")]
    Empty,
    #[error("nothing arrived for {0:?}")]
    Idle(Duration),
    #[error("refused file name {0:?}: only a plain name, no folders")]
    BadName(String),
    #[error("not enough free disk space: {need} bytes needed, {free} free")]
    NoSpace { need: u64, free: u64 },
    #[error("{path} changed size while it was sent ({want} bytes declared)")]
    FileChanged { path: String, want: u64 },
}

/// What was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub size: u64,
    pub crc: u32,
}

/// Streams the file at `path` to `w` as one exchange with `meta`;
/// `progress` hears the body bytes sent so far.
pub async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    path: &Path,
    meta: &str,
    mut progress: impl FnMut(u64),
) -> Result<Sent, TransferError> {
    let file = tokio::fs::File::open(path).await?;
    let size = file.metadata().await?.len();
    let meta_size = u32::try_from(meta.len()).map_err(|_| BinaryError::MetaTooLarge {
        size: u32::MAX,
        max: u32::MAX,
    })?;
    let header = Header {
        meta_size,
        body_size: size,
    };
    w.write_all(&header.encode()).await?;
    w.write_all(meta.as_bytes()).await?;
    let mut blocks = Reader::<Vec<u8>>::start(file.into_std().await, 0, size, BLOCK, 2);
    let mut sent = 0u64;
    let crc = loop {
        match blocks.next().await {
            Chunk::Data(block, len) => {
                w.write_all(&block).await?;
                sent += len as u64;
                blocks.recycle(block);
                progress(sent);
            }
            Chunk::End(crc) => break crc,
            Chunk::Failed(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(TransferError::FileChanged {
                    path: path.display().to_string(),
                    want: size,
                })
            }
            Chunk::Failed(e) => return Err(e.into()),
        }
    };
    w.write_all(&footer(crc)).await?;
    w.flush().await?;
    Ok(Sent { size, crc })
}

/// A file received whole and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub path: PathBuf,
    pub meta: String,
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
}

/// The name to store an exchange under: the `file_name` of a JSON meta
/// (Roundtable's own, refused if it is not a plain name), else one made
/// from the sender's address and the time (NVFlare's downloads send an
/// empty meta).
pub fn file_name(meta: &str, from: SocketAddr, now_ms: i64) -> Result<String, TransferError> {
    let given = serde_json::from_str::<serde_json::Value>(meta)
        .ok()
        .and_then(|v| {
            v.get("file_name")
                .and_then(|n| n.as_str())
                .map(str::to_owned)
        });
    let Some(name) = given else {
        return Ok(format!("from-{}-{now_ms}.bin", from.ip()));
    };
    if roundtable_shared::transfer::valid_file_name(&name) {
        Ok(name)
    } else {
        Err(TransferError::BadName(name))
    }
}

/// Receives one exchange from `r` into `out_dir` (see the module doc):
/// the file appears there only once verified, under its name or, if that
/// is taken, with ` (1)`, ` (2)`… before the extension.
pub async fn receive<R: AsyncRead + Unpin>(
    r: &mut R,
    out_dir: &Path,
    from: SocketAddr,
    limits: Limits,
    idle: Duration,
) -> Result<Received, TransferError> {
    let mut decoder = Decoder::new(limits);
    let mut buf = BytesMut::new();
    let mut head: Option<(String, String)> = None;
    let mut temp: Option<(tempfile::NamedTempFile, Sink<()>)> = None;
    let mut got = 0u64;
    loop {
        // The bytes read are handed on as views of this buffer: each read
        // goes on filling it, a new one only once it is nearly full.
        if buf.capacity() < BLOCK / 16 {
            buf = BytesMut::with_capacity(BLOCK);
        }
        let n = tokio::time::timeout(idle, r.read_buf(&mut buf))
            .await
            .map_err(|_| TransferError::Idle(idle))??;
        let data = buf.split().freeze();
        if n == 0 {
            return Err(match head {
                None => TransferError::Empty,
                Some(_) => TransferError::Truncated {
                    got,
                    want: decoder.body_size(),
                },
            });
        }
        let mut at = 0;
        while at < n {
            let (step, used) = decoder.step(&data[at..n])?;
            at += used;
            match step {
                Step::NeedMore => break,
                Step::Head { meta, header } => {
                    let name = file_name(&meta, from, crate::store::chat::now_ms())?;
                    // Refused before a body byte is read, like a body over
                    // the limit (the decoder's).
                    let need = header.body_size.saturating_add(super::FREE_MARGIN);
                    let free = super::free_space(out_dir)?;
                    if need > free {
                        return Err(TransferError::NoSpace { need, free });
                    }
                    let t = tempfile::Builder::new()
                        .prefix(".partial-")
                        .tempfile_in(out_dir)?;
                    let f = t.as_file().try_clone()?;
                    temp = Some((
                        t,
                        Sink::start(Sha256::new(), move || {
                            Ok(Temp {
                                file: f,
                                written: 0,
                                writeback: Writeback::new(0),
                            })
                        }),
                    ));
                    head = Some((name, meta));
                }
                Step::Body(chunk) => {
                    got += chunk.len() as u64;
                    if let Some((_, sink)) = &mut temp {
                        if !sink.write(data.slice_ref(chunk)).await {
                            // It failed: finish says why.
                            let (_, sink) = temp.take().expect("just matched");
                            sink.finish().await?;
                            return Err(std::io::Error::other("the writer stopped").into());
                        }
                    }
                }
                Step::Done { .. } => {
                    let (Some((name, meta)), Some((t, sink))) = (head, temp) else {
                        unreachable!("Done comes after Head");
                    };
                    let ((), sha) = sink.finish().await?;
                    let path = place(t, out_dir, &name)?;
                    let sha256 = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
                    return Ok(Received {
                        path,
                        meta,
                        size: got,
                        sha256,
                    });
                }
            }
        }
    }
}

/// The temporary file an exchange is received into, on the sink's writer
/// thread.
struct Temp {
    file: std::fs::File,
    /// Bytes written so far.
    written: u64,
    writeback: Writeback,
}

impl Output for Temp {
    type Done = ();

    fn write(&mut self, chunks: &[Bytes]) -> std::io::Result<()> {
        for c in chunks {
            self.file.write_all(c)?;
            self.written += c.len() as u64;
        }
        self.writeback.written(&self.file, self.written);
        Ok(())
    }

    fn finish(self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

/// Renames the verified temporary file to `name` in `dir` without
/// replacing an existing file.
fn place(t: tempfile::NamedTempFile, dir: &Path, name: &str) -> Result<PathBuf, TransferError> {
    let mut t = t;
    for candidate in super::candidates(dir, name) {
        match t.persist_noclobber(&candidate) {
            Ok(_) => {
                // The rename is durable once the folder is synced.
                std::fs::File::open(dir)?.sync_all()?;
                return Ok(candidate);
            }
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => t = e.file,
            Err(e) => return Err(e.error.into()),
        }
    }
    Err(TransferError::Io(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("too many files named like {name}"),
    )))
}

/// Settings of a receiving listener.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub out_dir: PathBuf,
    pub limits: Limits,
    /// A connection silent for this long is dropped (and its partial file).
    pub idle: Duration,
    pub max_connections: usize,
    pub max_per_source: usize,
}

impl ServeConfig {
    pub fn new(out_dir: PathBuf) -> Self {
        ServeConfig {
            out_dir,
            limits: Limits::default(),
            idle: Duration::from_secs(30),
            max_connections: 64,
            max_per_source: 8,
        }
    }
}

/// Receives exchanges on `listener`, one per connection, until `shutdown`;
/// `on_file` hears each file received.
pub async fn serve(
    listener: TcpListener,
    cfg: ServeConfig,
    shutdown: CancellationToken,
    on_file: impl Fn(&Received, SocketAddr) + Send + Sync + 'static,
) {
    let caps = Caps::new(cfg.max_connections, cfg.max_per_source);
    let cfg = std::sync::Arc::new(cfg);
    let on_file = std::sync::Arc::new(on_file);
    let mut refusals = RefusalLog::default();
    loop {
        let Some((mut stream, from)) = accept(&listener, &shutdown, "receive-file").await else {
            return;
        };
        let admission = match caps.admit(from.ip()) {
            Ok(a) => a,
            Err(why) => {
                refusals.refused("receive-file", from, &why);
                continue;
            }
        };
        let (cfg, on_file) = (cfg.clone(), on_file.clone());
        tokio::spawn(async move {
            let _admission = admission;
            match receive(&mut stream, &cfg.out_dir, from, cfg.limits, cfg.idle).await {
                Ok(r) => {
                    tracing::info!(%from, path = %r.path.display(), size = r.size, sha256 = %r.sha256, "file received");
                    on_file(&r, from);
                }
                Err(e) => tracing::warn!(%from, %e, "exchange refused; nothing kept"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "10.1.2.3:4567".parse().unwrap()
    }

    #[test]
    fn names_from_meta_are_plain_or_refused() {
        assert_eq!(
            file_name(r#"{"file_name":"model.pt"}"#, addr(), 5).unwrap(),
            "model.pt"
        );
        assert_eq!(file_name("", addr(), 5).unwrap(), "from-10.1.2.3-5.bin");
        assert_eq!(
            file_name("job 7", addr(), 5).unwrap(),
            "from-10.1.2.3-5.bin"
        );
        for bad in ["../evil", "a/b", "..", ".hidden", "c:\\\\x", ""] {
            let meta = serde_json::json!({ "file_name": bad }).to_string();
            assert!(
                matches!(file_name(&meta, addr(), 5), Err(TransferError::BadName(_))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_file_round_trips_and_a_taken_name_gets_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.bin");
        let body: Vec<u8> = (0..(3 * BLOCK + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &body).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        for expect in ["m.bin", "m (1).bin"] {
            let (mut a, mut b) = tokio::io::duplex(64 * 1024);
            let meta = r#"{"file_name":"m.bin"}"#;
            let send = async {
                let s = send(&mut a, &src, meta, |_| {}).await.unwrap();
                drop(a);
                s
            };
            let recv = receive(
                &mut b,
                &out,
                addr(),
                Limits::default(),
                Duration::from_secs(5),
            );
            let (sent, got) = tokio::join!(send, recv);
            let got = got.unwrap();
            assert_eq!(sent.size, body.len() as u64);
            assert_eq!(got.path, out.join(expect));
            assert_eq!(std::fs::read(&got.path).unwrap(), body);
            let want: String = Sha256::digest(&body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got.sha256, want);
        }
        // Only the two files: no temporary left.
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2);
    }
}
