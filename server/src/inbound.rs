//! The receive side: bytes read but not yet dispatched ([`RxBuf`]), the shard's pool of
//! receive buffers ([`RxPool`]), and one read ([`poll_fill`]).
//!
//! An idle connection holds no receive buffer at all: glommio waits for readiness before
//! it reads (the buffer is used only inside the synchronous read), so a buffer is taken from
//! the pool when the socket is readable and returned as soon as every received byte has
//! been dispatched.
//!
//! A frame larger than a pooled buffer grows its buffer as its bytes arrive (by a quarter at
//! a time, up to the size the header declared), never to the declared size up front: a header alone
//! must not make the server hold `max_frame_len` of memory. The pool counts every byte of
//! receive buffer out of it, for the shard's memory budget.

use std::cell::{Cell, RefCell};
use std::io;
use std::task::{Context, Poll};

use peerd_codec::{Header, RawFrame, WireError, HEADER_LEN};

use crate::outbound::Outbound;

/// Size of a pooled receive buffer. Frames larger than this get a dedicated buffer for as
/// long as they are incomplete.
pub(crate) const RX_BUF: usize = 32 * 1024;

/// Most receive buffers a shard keeps for reuse.
const RX_POOL_MAX: usize = 256;

/// The shard's spare receive buffers, and the bytes of those lent out.
#[derive(Default)]
pub(crate) struct RxPool {
    spare: RefCell<Vec<Vec<u8>>>,
    lent: Cell<usize>,
    /// The most `lent` has been since the last `take_peak`.
    peak: Cell<usize>,
}

impl RxPool {
    fn lend(&self, n: usize) {
        self.lent.set(self.lent.get() + n);
        self.peak.set(self.peak.get().max(self.lent.get()));
    }

    fn take(&self) -> Vec<u8> {
        self.lend(RX_BUF);
        self.spare
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; RX_BUF])
    }

    fn put(&self, buf: Vec<u8>) {
        self.lent.set(self.lent.get() - buf.len());
        let mut spare = self.spare.borrow_mut();
        if buf.len() == RX_BUF && spare.len() < RX_POOL_MAX {
            spare.push(buf);
        }
    }

    /// Grow a lent buffer to `len` bytes.
    fn grow(&self, buf: &mut Vec<u8>, len: usize) {
        self.lend(len - buf.len());
        // Exact: `resize` alone would double the capacity, holding memory not counted.
        buf.reserve_exact(len - buf.len());
        buf.resize(len, 0);
    }

    /// The most bytes lent since the last call; starts over from now.
    pub fn take_peak(&self) -> usize {
        self.peak.replace(self.lent.get())
    }

    /// Bytes of receive buffer held by connections now.
    pub fn lent(&self) -> usize {
        self.lent.get()
    }
}

/// Bytes received but not yet consumed; no buffer while there are none.
#[derive(Default)]
pub(crate) struct RxBuf {
    buf: Option<Vec<u8>>,
    start: usize,
    end: usize,
    /// Length of the incomplete frame at `start`, once its header has arrived (0: unknown).
    want: usize,
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

    /// The next whole frame (`Ok(None)`: more bytes needed). Consume it with
    /// [`consume`](Self::consume) once handled.
    pub fn next_frame(
        &mut self,
        max_body: u32,
    ) -> Result<Option<(RawFrame<'_>, usize)>, WireError> {
        // The header is parsed once: it says both whether the frame is whole and, if not,
        // how long it will be (`want`, for growing the buffer).
        let Some(header) = Header::parse(self.pending(), max_body)? else {
            self.want = 0;
            return Ok(None);
        };
        let len = header.frame_len();
        if self.pending().len() < len {
            self.want = len;
            return Ok(None);
        }
        self.want = 0;
        let body = &self.pending()[HEADER_LEN..len];
        Ok(Some((RawFrame { header, body }, len)))
    }

    /// The declared length of the frame being received, if one is incomplete.
    pub fn incomplete(&self) -> Option<usize> {
        (self.start < self.end).then_some(self.want)
    }

    /// Bytes of buffer this connection holds.
    pub fn held(&self) -> usize {
        self.buf.as_ref().map_or(0, Vec::len)
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
        self.want = 0;
        self.release_if_empty(pool);
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
        if rx.end == buf.len() {
            // Full of one incomplete frame: grow with what arrives, by a quarter (at least
            // one pooled buffer's worth), up to the declared length (module doc). A peer that
            // sent half of a large frame makes the server hold about that half, not double.
            let step = (buf.len() / 4).max(RX_BUF);
            let len = (buf.len() + step).min(rx.want).max(buf.len() + 1);
            pool.grow(&mut buf, len);
        }
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
