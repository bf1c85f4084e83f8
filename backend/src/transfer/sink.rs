//! Bytes on their way into a file, for both receivers (a node's
//! `inbound`, the bare exchange's `raw`): one blocking thread writes them
//! and another hashes them (SHA-256), so that neither waits for the other
//! or for the socket (writing into the page cache and SHA-256 were a
//! receiver's two largest costs after the cipher, measured with `perf`).
//! They are handed over [`HAND_OVER`] bytes at a time, as views of the
//! buffers they arrived in: one wake-up of each thread per MiB, and no copy.

use std::io;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc;

use super::bulk;

/// Bytes handed to the threads at a time.
pub const HAND_OVER: usize = 1 << 20;

/// Hand-overs queued for each thread (so at most a few MiB in memory).
const QUEUE: usize = 4;

/// Where a [`Sink`]'s bytes go, on the writer thread.
pub trait Output: Send + 'static {
    /// What the output gives back once everything is written.
    type Done: Send + 'static;
    /// Writes the next bytes, in order.
    fn write(&mut self, chunks: &[Bytes]) -> io::Result<()>;
    /// After the last bytes (say, sync the file).
    fn finish(self) -> io::Result<Self::Done>;
}

/// Bytes queued for an [`Output`] and for SHA-256.
pub struct Sink<D> {
    write_tx: mpsc::Sender<Vec<Bytes>>,
    hash_tx: mpsc::Sender<Vec<Bytes>>,
    /// Bytes not yet handed over, and how many.
    batch: Vec<Bytes>,
    batched: usize,
    writer: Pin<Box<dyn Future<Output = io::Result<io::Result<D>>> + Send>>,
    hasher: Pin<Box<dyn Future<Output = io::Result<Sha256>> + Send>>,
}

impl<D: Send + 'static> Sink<D> {
    /// Opens the output on the writer thread (`open` may block) and goes
    /// on hashing from `sha` (the hash of what came before, if anything).
    pub fn start<O: Output<Done = D>>(
        sha: Sha256,
        open: impl FnOnce() -> io::Result<O> + Send + 'static,
    ) -> Sink<D> {
        let (write_tx, mut write_rx) = mpsc::channel::<Vec<Bytes>>(QUEUE);
        let (hash_tx, mut hash_rx) = mpsc::channel::<Vec<Bytes>>(QUEUE);
        let hasher = bulk::thread("hash", move || {
            let mut sha = sha;
            while let Some(batch) = hash_rx.blocking_recv() {
                for chunk in batch {
                    sha.update(&chunk);
                }
            }
            sha
        });
        let writer = bulk::thread("write", move || {
            let mut out = open()?;
            while let Some(batch) = write_rx.blocking_recv() {
                out.write(&batch)?;
            }
            out.finish()
        });
        Sink {
            write_tx,
            hash_tx,
            batch: Vec::new(),
            batched: 0,
            writer: Box::pin(writer),
            hasher: Box::pin(hasher),
        }
    }

    /// Queues bytes; false if the writer has stopped (it failed: see
    /// [`finish`](Self::finish) for why).
    pub async fn write(&mut self, chunk: Bytes) -> bool {
        self.batched += chunk.len();
        self.batch.push(chunk);
        if self.batched >= HAND_OVER {
            self.hand_over().await
        } else {
            !self.stopped()
        }
    }

    /// Hands what is queued to the threads; false if the writer has stopped.
    async fn hand_over(&mut self) -> bool {
        if self.batch.is_empty() {
            return !self.stopped();
        }
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        self.hash_tx.send(batch.clone()).await.is_ok() && self.write_tx.send(batch).await.is_ok()
    }

    /// Whether the writer has stopped early (it failed).
    pub fn stopped(&self) -> bool {
        self.write_tx.is_closed()
    }

    /// Waits until everything queued is written (and the output finished)
    /// and hashed.
    pub async fn finish(mut self) -> io::Result<(D, Sha256)> {
        self.hand_over().await;
        drop(self.write_tx);
        drop(self.hash_tx);
        let done = self.writer.await??;
        let sha = self.hasher.await?;
        Ok((done, sha))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps what it is given; fails at the byte `fail_at` if set.
    struct Keep {
        got: Vec<u8>,
        calls: usize,
        fail_at: Option<usize>,
    }

    impl Output for Keep {
        type Done = (Vec<u8>, usize);
        fn write(&mut self, chunks: &[Bytes]) -> io::Result<()> {
            self.calls += 1;
            for c in chunks {
                self.got.extend_from_slice(c);
            }
            match self.fail_at {
                Some(n) if self.got.len() >= n => Err(io::Error::other("disk full")),
                _ => Ok(()),
            }
        }
        fn finish(self) -> io::Result<Self::Done> {
            Ok((self.got, self.calls))
        }
    }

    fn keep(fail_at: Option<usize>) -> impl FnOnce() -> io::Result<Keep> {
        move || {
            Ok(Keep {
                got: Vec::new(),
                calls: 0,
                fail_at,
            })
        }
    }

    #[tokio::test]
    async fn everything_is_written_in_order_and_hashed_a_mib_at_a_time() {
        let body: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        let whole = Bytes::from(body.clone());
        // Go on from the hash of a first part, as a resumed transfer does.
        let (first, rest) = whole.split_at(1234);
        let mut sink = Sink::start(Sha256::new().chain_update(first), keep(None));
        for c in rest.chunks(65_536) {
            assert!(sink.write(whole.slice_ref(c)).await);
        }
        let ((got, calls), sha) = sink.finish().await.unwrap();
        assert_eq!(got, rest);
        assert_eq!(sha.finalize(), Sha256::digest(&body));
        // ~4.77 MB in 64 KiB chunks: 5 hand-overs, not 73.
        assert_eq!(calls, rest.len().div_ceil(HAND_OVER));
    }

    #[tokio::test]
    async fn a_failing_output_stops_the_sink_and_says_why() {
        let mut sink = Sink::start(Sha256::new(), keep(Some(3 * HAND_OVER)));
        let chunk = Bytes::from(vec![1u8; 65_536]);
        let mut accepted = 0;
        for _ in 0..1000 {
            if !sink.write(chunk.clone()).await {
                break;
            }
            accepted += 1;
        }
        assert!(accepted < 1000, "the sink went on after its output failed");
        let err = sink.finish().await.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
