//! A received file written without letting its dirty pages pile up.
//!
//! Left to itself, the kernel keeps a file's written bytes in the page
//! cache until a tenth of memory is dirty or they are 30 s old: a 2 GiB
//! file arrived whole in memory and the final sync then wrote it all at
//! once, and every other fsync on the disk (chat's store) queued behind
//! that burst (chat p99 on disk during a 2 GiB transfer: 4.4-30 ms against
//! 1.5-1.8 ms alone, this VM). [`Writeback`] instead hands each
//! [`WINDOW`] to the disk as soon as it is written (`sync_file_range`,
//! asynchronous) and waits for the window two behind it, so at most
//! [`IN_FLIGHT`] windows of the file are ever dirty; once a window is on
//! disk its pages are dropped from the cache (`POSIX_FADV_DONTNEED`), so a
//! large file does not push the node's stores out of memory either.
//!
//! This is pacing, not durability: errors are ignored here (a filesystem
//! without `sync_file_range` just skips it) and the final `fsync` before the
//! file is renamed into place still decides.

use std::fs::File;

/// Bytes handed to writeback at a time.
pub const WINDOW: u64 = 4 << 20;

/// Windows that may be written and not yet on disk.
pub const IN_FLIGHT: u64 = 2;

/// What to do with the file for one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start writing `len` bytes at `at` to disk, without waiting.
    Start { at: u64, len: u64 },
    /// Wait until `len` bytes at `at` are on disk, then drop them from the
    /// page cache.
    Settle { at: u64, len: u64 },
}

/// Where a file being written stands: what was handed to the disk, what
/// is known to be there.
#[derive(Debug, Clone)]
pub struct Writeback {
    started: u64,
    settled: u64,
}

impl Writeback {
    /// For a file written from `offset` on (a resumed transfer's part
    /// file: what lies before was written by an earlier attempt).
    pub fn new(offset: u64) -> Writeback {
        Writeback {
            started: offset,
            settled: offset,
        }
    }

    /// The steps due once the file is written up to `pos`: pure, so that
    /// the pacing is tested without a disk.
    pub fn plan(&mut self, pos: u64) -> Vec<Step> {
        let mut steps = Vec::new();
        while pos.saturating_sub(self.started) >= WINDOW {
            steps.push(Step::Start {
                at: self.started,
                len: WINDOW,
            });
            self.started += WINDOW;
            while self.started - self.settled > IN_FLIGHT * WINDOW {
                let len = WINDOW.min(self.started - self.settled);
                steps.push(Step::Settle {
                    at: self.settled,
                    len,
                });
                self.settled += len;
            }
        }
        steps
    }

    /// Does what [`plan`](Self::plan) says for `file`, written up to `pos`.
    pub fn written(&mut self, file: &File, pos: u64) {
        for step in self.plan(pos) {
            apply(file, step);
        }
    }
}

#[cfg(target_os = "linux")]
fn apply(file: &File, step: Step) {
    use std::os::fd::AsRawFd;
    let (at, len, flags) = match step {
        Step::Start { at, len } => (at, len, libc::SYNC_FILE_RANGE_WRITE),
        Step::Settle { at, len } => (
            at,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        ),
    };
    let (Ok(off), Ok(n)) = (libc::off64_t::try_from(at), libc::off64_t::try_from(len)) else {
        return;
    };
    // SAFETY: a plain system call on an open descriptor, no memory passed.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, flags) };
    if r != 0 {
        tracing::trace!(e = %std::io::Error::last_os_error(), "sync_file_range");
        return;
    }
    if let Step::Settle { at, len } = step {
        if let Some(len) = std::num::NonZeroU64::new(len) {
            let advice = rustix::fs::Advice::DontNeed;
            if let Err(e) = rustix::fs::fadvise(file, at, Some(len), advice) {
                tracing::trace!(%e, "fadvise");
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn apply(_file: &File, _step: Step) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn at_most_two_windows_are_ever_written_and_not_settled() {
        let mut w = Writeback::new(0);
        let mut started = 0;
        let mut settled = 0;
        // Written in uneven pieces, as hand-overs come.
        let mut pos = 0;
        while pos < 100 * WINDOW {
            pos += 1_300_000;
            for step in w.plan(pos) {
                match step {
                    Step::Start { at, len } => {
                        assert_eq!(at, started, "windows start in order, none skipped");
                        assert!(at + len <= pos, "started before it was written");
                        started += len;
                    }
                    Step::Settle { at, len } => {
                        assert_eq!(at, settled, "settled in order");
                        assert!(at + len <= started, "settled before it was started");
                        settled += len;
                    }
                }
            }
            assert!(
                pos - started < WINDOW,
                "a whole window written, not started"
            );
            assert!(
                started - settled <= IN_FLIGHT * WINDOW,
                "{} bytes in flight",
                started - settled
            );
        }
        assert!(settled >= 97 * WINDOW, "settled {settled}");
    }

    #[test]
    fn a_resumed_file_is_paced_from_its_offset() {
        let mut w = Writeback::new(10 * WINDOW + 5);
        assert_eq!(w.plan(10 * WINDOW + 5 + WINDOW - 1), []);
        assert_eq!(
            w.plan(11 * WINDOW + 5),
            [Step::Start {
                at: 10 * WINDOW + 5,
                len: WINDOW
            }]
        );
        // A position behind the start (never happens) plans nothing.
        assert_eq!(w.plan(0), []);
    }

    #[test]
    fn a_paced_file_holds_exactly_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        let mut w = Writeback::new(0);
        let mut want = Vec::new();
        let mut pos = 0u64;
        for i in 0..40u32 {
            let piece: Vec<u8> = (0..700_001u32).map(|j| (i * 31 + j) as u8).collect();
            f.write_all(&piece).unwrap();
            pos += piece.len() as u64;
            want.extend_from_slice(&piece);
            w.written(&f, pos);
        }
        f.sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }
}
