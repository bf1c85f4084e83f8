//! A file on its way out, for both senders (a node's `outbound`, the bare
//! exchange's `raw`): a bulk thread ([`super::bulk::thread`]) reads it from an
//! offset to its end, a chunk at a time and a few chunks ahead of the
//! socket, straight into the buffers that are then written and handed back
//! to be filled again, and computes the CRC-32 of what it read.

use std::io::{self, Read as _, Seek, SeekFrom};

use tokio::sync::mpsc;

/// A buffer the reader fills.
pub trait Buffer: Default + Send + 'static {
    /// Readies the buffer for the file's next `n` bytes and returns the
    /// place they go.
    fn prepare(&mut self, n: usize) -> &mut [u8];
}

impl Buffer for Vec<u8> {
    fn prepare(&mut self, n: usize) -> &mut [u8] {
        // A recycled buffer is already this long: no fill.
        self.resize(n, 0);
        self
    }
}

/// What the reader hands over, in order.
pub enum Chunk<B> {
    /// A buffer holding the file's next `len` bytes.
    Data(B, usize),
    /// The file was read to its end: the CRC-32 of what was read.
    End(u32),
    /// Reading failed; `UnexpectedEof` if the file is shorter than it was.
    Failed(io::Error),
}

/// The reading side of a file being sent.
pub struct Reader<B> {
    rx: mpsc::Receiver<Chunk<B>>,
    recycle: std::sync::mpsc::Sender<B>,
}

impl<B: Buffer> Reader<B> {
    /// Reads `file` from `offset` to `size`, `chunk` bytes a buffer, at
    /// most `ahead` buffers ahead. Stops at the end, at an error, or when
    /// the reader is dropped.
    pub fn start(
        mut file: std::fs::File,
        offset: u64,
        size: u64,
        chunk: usize,
        ahead: usize,
    ) -> Reader<B> {
        let (tx, rx) = mpsc::channel(ahead);
        let (recycle, used) = std::sync::mpsc::channel::<B>();
        // The thread runs on its own; its end is told through the channel.
        drop(super::bulk::thread("read", move || {
            let mut crc = crc32fast::Hasher::new();
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                let _ = tx.blocking_send(Chunk::Failed(e));
                return;
            }
            let mut at = offset;
            while at < size {
                let want = (size - at).min(chunk as u64) as usize;
                let mut buf = used.try_recv().unwrap_or_default();
                let place = buf.prepare(want);
                if let Err(e) = file.read_exact(place) {
                    let _ = tx.blocking_send(Chunk::Failed(e));
                    return;
                }
                crc.update(place);
                at += want as u64;
                if tx.blocking_send(Chunk::Data(buf, want)).is_err() {
                    return;
                }
            }
            let _ = tx.blocking_send(Chunk::End(crc.finalize()));
        }));
        Reader { rx, recycle }
    }

    /// The next chunk; a `Failed` one if the thread is gone.
    pub async fn next(&mut self) -> Chunk<B> {
        self.rx.recv().await.unwrap_or_else(gone)
    }

    /// The next chunk if one is ready.
    pub fn try_next(&mut self) -> Option<Chunk<B>> {
        match self.rx.try_recv() {
            Ok(c) => Some(c),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(gone()),
        }
    }

    /// Hands a buffer back to be filled again.
    pub fn recycle(&self, buf: B) {
        let _ = self.recycle.send(buf);
    }
}

fn gone<B>() -> Chunk<B> {
    Chunk::Failed(io::Error::other("the file's reader stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(r: &mut Reader<Vec<u8>>) -> (Vec<u8>, Result<u32, io::Error>) {
        let mut got = Vec::new();
        loop {
            match r.next().await {
                Chunk::Data(b, n) => {
                    assert_eq!(b.len(), n);
                    got.extend_from_slice(&b);
                    r.recycle(b);
                }
                Chunk::End(crc) => return (got, Ok(crc)),
                Chunk::Failed(e) => return (got, Err(e)),
            }
        }
    }

    #[tokio::test]
    async fn a_file_is_read_from_its_offset_with_the_crc_of_what_was_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let body: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &body).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let mut r = Reader::start(f, 12_345, body.len() as u64, 65_536, 2);
        let (got, crc) = read_all(&mut r).await;
        assert_eq!(got, &body[12_345..]);
        assert_eq!(crc.unwrap(), crc32fast::hash(&body[12_345..]));
    }

    #[tokio::test]
    async fn a_file_shorter_than_said_fails_as_unexpected_eof() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, vec![1u8; 100_000]).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let mut r = Reader::start(f, 0, 200_000, 65_536, 2);
        let (got, res) = read_all(&mut r).await;
        assert_eq!(got.len(), 65_536);
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
