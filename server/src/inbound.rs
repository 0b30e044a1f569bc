//! The receive side: bytes read but not yet dispatched ([`RxBuf`]), the shard's pool of
//! receive buffers ([`RxPool`]), and one read ([`poll_fill`]).
//!
//! An idle connection holds no receive buffer at all: glommio waits for readiness before
//! it reads (the buffer is used only inside the synchronous read), so a buffer is taken from
//! the pool when the socket is readable and returned as soon as every received byte has
//! been dispatched.

use std::cell::RefCell;
use std::io;
use std::task::{Context, Poll};

use peerd_codec::{split_frame, RawFrame, WireError};

use crate::outbound::Outbound;

/// Size of a pooled receive buffer. Frames larger than this get a dedicated buffer for as
/// long as they are incomplete.
pub(crate) const RX_BUF: usize = 32 * 1024;

/// Most receive buffers a shard keeps for reuse.
const RX_POOL_MAX: usize = 256;

/// The shard's spare receive buffers.
#[derive(Default)]
pub(crate) struct RxPool(RefCell<Vec<Vec<u8>>>);

impl RxPool {
    fn take(&self) -> Vec<u8> {
        self.0
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; RX_BUF])
    }

    fn put(&self, buf: Vec<u8>) {
        let mut pool = self.0.borrow_mut();
        if buf.len() == RX_BUF && pool.len() < RX_POOL_MAX {
            pool.push(buf);
        }
    }
}

/// Bytes received but not yet consumed; no buffer while there are none.
#[derive(Default)]
pub(crate) struct RxBuf {
    buf: Option<Vec<u8>>,
    start: usize,
    end: usize,
}

impl RxBuf {
    /// The bytes not yet consumed.
    pub fn pending(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.start..self.end],
            None => &[],
        }
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// The next whole frame (`Ok(None)`: more bytes needed, and room is made for the frame
    /// the header announces). Consume it with [`consume`](Self::consume) once handled.
    pub fn next_frame(
        &mut self,
        max_body: u32,
    ) -> Result<Option<(RawFrame<'_>, usize)>, WireError> {
        if split_frame(self.pending(), max_body)?.is_none() {
            if let Ok(Some(h)) = peerd_codec::Header::parse(self.pending(), max_body) {
                self.reserve_frame(h.frame_len());
            }
            return Ok(None);
        }
        split_frame(self.pending(), max_body)
    }

    /// Give the buffer back to the pool if everything in it was consumed.
    pub fn release_if_empty(&mut self, pool: &RxPool) {
        if self.start == self.end {
            if let Some(b) = self.buf.take() {
                pool.put(b);
            }
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drop everything buffered and give the buffer back.
    pub fn clear(&mut self, pool: &RxPool) {
        self.start = self.end;
        self.release_if_empty(pool);
    }

    /// Make sure a frame of `frame_len` bytes starting at `start` fits.
    fn reserve_frame(&mut self, frame_len: usize) {
        let Some(buf) = self.buf.as_mut() else { return };
        if buf.len() - self.start >= frame_len {
            return;
        }
        let have = self.end - self.start;
        if frame_len <= buf.len() {
            buf.copy_within(self.start..self.end, 0);
        } else {
            // A frame larger than the pooled buffer (bounded by max_frame_len, checked on
            // the header before we get here).
            let mut big = vec![0u8; frame_len];
            big[..have].copy_from_slice(&buf[self.start..self.end]);
            *buf = big;
        }
        self.start = 0;
        self.end = have;
    }
}

/// Read once from `socket` into `rx`, taking a pooled buffer only for the duration of the
/// read (and keeping it only while it holds unconsumed bytes).
pub(crate) fn poll_fill(
    socket: &Outbound,
    rx: &mut RxBuf,
    pool: &RxPool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut buf = rx.buf.take().unwrap_or_else(|| pool.take());
    if rx.start == rx.end {
        rx.start = 0;
        rx.end = 0;
    } else if rx.end == buf.len() {
        buf.copy_within(rx.start..rx.end, 0);
        rx.end -= rx.start;
        rx.start = 0;
    }
    let r = socket.poll_read(cx, &mut buf[rx.end..]);
    if let Poll::Ready(Ok(n)) = r {
        rx.end += n;
    }
    if rx.start == rx.end {
        pool.put(buf);
    } else {
        rx.buf = Some(buf);
    }
    r
}
