//! Buffers that a session opens large records into, used again once every
//! view of them is gone.
//!
//! A receiving file hands its opened records, as [`Bytes`] views, to the
//! threads that write and hash them ([`crate::transfer`]'s sink), which
//! drop them a few MiB later. Opened each into a fresh zeroed allocation,
//! they were freed on those threads, the allocator gave the memory back to
//! the kernel and took it again: page faults and page clearing were 7% of
//! a receiving node's CPU (`perf`, 512 MiB between two nodes). From the
//! pool each record's buffer is the one an earlier record no longer needs,
//! already faulted in, and not cleared again.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;

/// Records shorter than this (chat, acknowledgements) get buffers of their
/// own: a pooled buffer is as large as the largest record.
pub const POOLED_MIN: usize = 16 * 1024;

/// Buffers a pool keeps; those beyond are freed. A receiving file holds
/// about 11 MiB of records in flight (its sink's queues), 170 or so.
const KEEP: usize = 192;

type Free = Mutex<Vec<Vec<u8>>>;

/// A session's free buffers.
#[derive(Debug, Default)]
pub struct Pool(Arc<Free>);

impl Pool {
    /// A buffer of at least `len` bytes, its contents unspecified (those of
    /// an earlier record, or zeroes).
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        buf
    }

    /// `range` of `buf` as bytes that give `buf` back to the pool when the
    /// last view of them is dropped (or free it, if the pool is gone).
    pub fn share(&self, buf: Vec<u8>, range: Range<usize>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::downgrade(&self.0),
        })
        .slice(range)
    }
}

/// A buffer on loan from a [`Pool`].
struct Pooled {
    buf: Vec<u8>,
    pool: Weak<Free>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            let mut free = pool.lock().unwrap_or_else(PoisonError::into_inner);
            if free.len() < KEEP {
                free.push(std::mem::take(&mut self.buf));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_once_its_last_view_is_dropped() {
        let pool = Pool::default();
        let mut buf = pool.take(100);
        let at = buf.as_ptr();
        buf[..5].copy_from_slice(b"hello");
        let whole = pool.share(buf, 0..5);
        let part = whole.slice(1..3);
        drop(whole);
        // Still lent out: a new buffer.
        let other = pool.take(100);
        assert_ne!(other.as_ptr(), at);
        assert_eq!(&part[..], b"el");
        drop(part);
        // Given back: the same memory, not cleared.
        let again = pool.take(100);
        assert_eq!(again.as_ptr(), at);
        assert_eq!(&again[..5], b"hello");
    }

    #[test]
    fn a_buffer_grows_to_what_is_asked_and_outlives_its_pool() {
        let pool = Pool::default();
        let small = pool.take(10);
        drop(pool.share(small, 0..10));
        assert!(pool.take(1000).len() >= 1000);
        let view = pool.share(pool.take(10), 2..4);
        drop(pool);
        assert_eq!(view.len(), 2);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_buffers() {
        let pool = Pool::default();
        let views: Vec<Bytes> = (0..KEEP + 50)
            .map(|_| pool.share(pool.take(8), 0..8))
            .collect();
        drop(views);
        assert_eq!(pool.0.lock().unwrap().len(), KEEP);
    }
}
