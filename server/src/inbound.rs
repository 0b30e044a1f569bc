//! The receive side: bytes read but not yet dispatched ([`RxBuf`]), the shard's pool of
//! receive buffers ([`RxPool`]), one read through glommio ([`poll_fill`]) or without
//! waiting ([`try_fill`]), what the shard's receive ring brought ([`RxBuf::append`], and
//! [`RxBuf::tls_received`] for TLS), and a connection's place on that ring ([`RingRecv`]). Every source writes through
//! [`RxBuf::fill`], so all of them are deframed and accounted alike.
//!
//! An idle connection holds no receive buffer at all: bytes come from the ring's provided
//! buffers (or glommio waits for readiness before it reads), so a buffer is taken from the
//! pool when bytes come and returned as soon as every received byte has been dispatched.
//! The ring's bytes wait for the reader's turn, so they land in a small buffer (`RING_BUF`,
//! grown to a pooled one if more come): a crowd of busy connections each holds one at once.
//!
//! A frame larger than a pooled buffer moves, once its header has come and the pooled buffer
//! is full, to a mapping of the length the header declared ([`crate::mapping`]): address
//! space, backed page by page as its bytes arrive, so a header alone does not make the server
//! hold `max_frame_len` of memory, and nothing is copied again as the frame grows. The pool
//! counts every byte of receive buffer out of it (a mapping's pages written), for the shard's
//! memory budget.
//!
//! On a WebSocket connection the buffer holds the raw stream: after each read the frames
//! that are whole are deframed in place ([`peerd_ws::Deframer`]: payloads unmasked and
//! moved down to follow the bytes already deframed), so what the peerd framer sees is the
//! same byte stream as on TCP, with no buffer of its own. Pings are answered here; a Close
//! from the peer or a WebSocket protocol error is kept for the connection to act on
//! ([`RxBuf::take_ws_end`]).

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use peerd_codec::{Header, RawFrame, WireError, HEADER_LEN};
use peerd_ws::frame::{self as wsframe, Deframer, Event, MessageKind, Opcode, Role};

use crate::mapping::Mapping;
use crate::outbound::Outbound;
use crate::util::Notify;

/// Size of a pooled receive buffer. Frames larger than this get a dedicated buffer for as
/// long as they are incomplete.
pub(crate) const RX_BUF: usize = 32 * 1024;

/// Bytes a connection may hold undispatched before its receive through the shard's ring is
/// paused (`RxBuf::is_full`). Small: what the ring takes ahead of the reader is held per
/// connection, a crowd of flooding peers would each hold it, and the shard's provided
/// buffers are shared.
const RING_SHARE: usize = 4 * 1024;

/// Size of the buffer the ring's bytes land in when a connection holds none. What the
/// reaper appends waits there for the reader's turn, so under a flood every connection
/// with bytes holds one at once: 5,000 pipelining peers held 96 MiB of pooled `RX_BUF`s
/// with a request or two in each. A read through glommio or a direct read is dispatched as
/// soon as it is made and keeps taking `RX_BUF`, the most one read brings in.
const RING_BUF: usize = RING_SHARE;

/// Most receive buffers of each size a shard keeps for reuse.
const RX_POOL_MAX: usize = 256;

/// Backed bytes of mappings [`RxPool::unmap_retired`] unmaps per pass of the shard's loop at
/// least (more when connections took more in the pass before): about 60 µs of the kernel
/// freeing pages on this project's VM. A memory-budget cut of 64 peers sending partial
/// frames, 32 MiB, took 3.5-4 ms to unmap at once while well-behaved peers waited
/// (results/unmap-in-turn/).
const UNMAP_PER_PASS: usize = 512 * 1024;

/// The shard's spare receive buffers (of `RX_BUF` and of `RING_BUF` bytes), the bytes of
/// those lent out, and the mappings given back and not yet unmapped.
#[derive(Default)]
pub(crate) struct RxPool {
    spare: RefCell<Vec<Vec<u8>>>,
    spare_small: RefCell<Vec<Vec<u8>>>,
    lent: Cell<usize>,
    /// The most `lent` has been since the last `take_peak`.
    peak: Cell<usize>,
    /// Bytes lent since [`RxPool::unmap_retired`]'s last pass.
    taken: Cell<usize>,
    /// Large frames' mappings given back ([`RxPool::put`]), for [`RxPool::unmap_retired`].
    retired: RefCell<Vec<Mapping>>,
    /// Wakes [`RxPool::unmap_retired`].
    retiring: Notify,
}

impl RxPool {
    fn lend(&self, n: usize) {
        self.lent.set(self.lent.get() + n);
        self.taken.set(self.taken.get() + n);
        self.peak.set(self.peak.get().max(self.lent.get()));
    }

    /// The spares of buffers `len` long, if the pool keeps that size.
    fn spares(&self, len: usize) -> Option<&RefCell<Vec<Vec<u8>>>> {
        match len {
            RX_BUF => Some(&self.spare),
            RING_BUF => Some(&self.spare_small),
            _ => None,
        }
    }

    /// A buffer of `len` bytes (`RX_BUF` or `RING_BUF`).
    fn take(&self, len: usize) -> RxMem {
        self.lend(len);
        RxMem::Heap(
            self.spares(len)
                .and_then(|s| s.borrow_mut().pop())
                .unwrap_or_else(|| vec![0u8; len]),
        )
    }

    fn put(&self, buf: RxMem) {
        self.lent.set(self.lent.get() - buf.held());
        let buf = match buf {
            RxMem::Heap(buf) => buf,
            RxMem::Mapped(map) => {
                // Unmapped later, a share per pass: a teardown of the peers a budget cut
                // closed, or a reader that just consumed a large frame, does not free
                // thousands of pages while well-behaved peers wait.
                self.retired.borrow_mut().push(map);
                self.retiring.notify();
                return;
            }
        };
        if let Some(spares) = self.spares(buf.len()) {
            let mut spares = spares.borrow_mut();
            if spares.len() < RX_POOL_MAX {
                spares.push(buf);
            }
        }
    }

    /// A full lent buffer replaced by one of `len` bytes holding the same bytes: a mapping
    /// if `map` (a large frame's; see [`crate::mapping`]) and the kernel grants one, else a
    /// grown vector.
    fn grow(&self, buf: RxMem, len: usize, map: bool) -> RxMem {
        if map {
            if let Some(mut m) = Mapping::new(len) {
                m[..buf.len()].copy_from_slice(&buf);
                self.lend(m.written(buf.len()));
                self.put(buf);
                return RxMem::Mapped(m);
            }
        }
        match buf {
            RxMem::Heap(mut v) => {
                self.lend(len - v.len());
                // Exact: `resize` alone would double the capacity, holding memory not
                // counted.
                v.reserve_exact(len - v.len());
                v.resize(len, 0);
                RxMem::Heap(v)
            }
            mapped => {
                let mut v = vec![0u8; len];
                v[..mapped.len()].copy_from_slice(&mapped);
                self.lend(len);
                self.put(mapped);
                RxMem::Heap(v)
            }
        }
    }

    /// `buf` holds bytes up to `end`: count a mapping's pages written so far.
    fn written(&self, buf: &mut RxMem, end: usize) {
        if let RxMem::Mapped(map) = buf {
            self.lend(map.written(end));
        }
    }

    /// The most bytes lent since the last call; starts over from now.
    pub fn take_peak(&self) -> usize {
        self.peak.replace(self.lent.get())
    }

    /// Bytes of receive buffer held by connections now.
    pub fn lent(&self) -> usize {
        self.lent.get()
    }

    /// Backed bytes of mappings given back and not yet unmapped.
    #[cfg(test)]
    fn retired(&self) -> usize {
        self.retired.borrow().iter().map(Mapping::backed).sum()
    }

    /// The shard's service that unmaps the mappings given back, in the passes of the
    /// shard's loop after they were: per pass, [`UNMAP_PER_PASS`] of their pages, or as
    /// many as connections took in the pass before if that is more, so that what is given
    /// back never piles up faster than it goes (a flat share let a partial-frames attack
    /// retire 120 MiB more than had gone, over a 256 MiB budget). Never ends.
    pub async fn unmap_retired(&self) {
        loop {
            self.retiring.notified().await;
            self.taken.set(0);
            loop {
                crate::fair::pass_boundary().await;
                if !self.unmap_share() {
                    break;
                }
            }
        }
    }

    /// One pass's work of [`Self::unmap_retired`]: unmaps a share of what was given back;
    /// whether some is left.
    fn unmap_share(&self) -> bool {
        let share = UNMAP_PER_PASS.max(self.taken.replace(0));
        let mut unmapped = 0;
        while unmapped < share {
            // Not borrowed across the drop: dropping only unmaps.
            let Some(map) = self.retired.borrow_mut().pop() else {
                break;
            };
            unmapped += map.backed();
            drop(map);
        }
        !self.retired.borrow().is_empty()
    }
}

/// A receive buffer's memory.
pub(crate) enum RxMem {
    /// A pooled buffer, or one grown from it (whole frames piling up undispatched).
    Heap(Vec<u8>),
    /// A frame larger than a pooled buffer: a mapping of its declared length, of which the
    /// pages written are lent out of the pool.
    Mapped(Mapping),
}

impl RxMem {
    /// Memory it holds, as the pool counts it.
    fn held(&self) -> usize {
        match self {
            RxMem::Heap(v) => v.len(),
            RxMem::Mapped(map) => map.backed(),
        }
    }
}

impl std::ops::Deref for RxMem {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            RxMem::Heap(v) => v,
            RxMem::Mapped(map) => map,
        }
    }
}

impl std::ops::DerefMut for RxMem {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            RxMem::Heap(v) => v,
            RxMem::Mapped(map) => map,
        }
    }
}

/// Bytes received but not yet consumed; no buffer while there are none.
///
/// `buf[start..app]` are deframed bytes, of which `buf[start..ready]` belong to whole
/// messages and are for the peerd framer, and `buf[raw..end]` are bytes not yet deframed
/// (WebSocket only; on other transports `ready == app == raw == end`). A WebSocket message
/// reaches the framer only once it is whole and found to be exactly one peerd frame, so a
/// message that is not (docs/PROTOCOL.md §1.1) is refused before any of it is acted on.
#[derive(Default)]
pub(crate) struct RxBuf {
    buf: Option<RxMem>,
    start: usize,
    ready: usize,
    app: usize,
    raw: usize,
    end: usize,
    /// Length of the incomplete frame at `start`, once its header has arrived (0: unknown).
    want: usize,
    /// How to deframe WebSocket input, once the connection was upgraded.
    ws_config: Option<WsConfig>,
    /// The WebSocket receive state while a message or a verdict is in progress. Between
    /// messages it holds nothing worth keeping, so it is dropped then and rebuilt from
    /// `ws_config` by the next bytes: an idle WebSocket connection holds no deframer (96
    /// bytes with its allocation), for one small allocation per busy read.
    ws: Option<Box<WsRx>>,
}

/// What a WebSocket connection's deframer is built from.
#[derive(Debug, Clone, Copy)]
struct WsConfig {
    max_message: u32,
    echo: bool,
}

/// The receive side of a WebSocket connection.
struct WsRx {
    deframer: Deframer,
    /// Echo every message back instead of passing it on (conformance testing).
    echo: bool,
    /// Raw bytes the frame being received needs in all (0: unknown).
    want: usize,
    /// The peer's Close, or why its input was refused; nothing after it is deframed.
    end: Option<WsEnd>,
}

/// How the WebSocket input ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WsEnd {
    /// The peer sent Close (with this status, if any).
    PeerClosed(Option<u16>),
    /// The input broke RFC 6455 or peerd's use of it: close with this status.
    Refused { status: u16, reason: &'static str },
}

impl WsEnd {
    /// The WebSocket Close that answers it: the peer's own status echoed (RFC 6455
    /// §5.5.1), or the status of what it broke.
    pub fn answer(&self) -> (u16, &'static str) {
        match self {
            WsEnd::PeerClosed(status) => (status.unwrap_or(1000), ""),
            WsEnd::Refused { status, reason } => (*status, reason),
        }
    }
}

impl RxBuf {
    /// Deframe WebSocket frames from now on (the upgrade was answered). The largest
    /// message accepted is one peerd frame of `max_body` bytes; with `echo` messages are
    /// echoed (and text accepted) instead of being passed to the peerd framer.
    ///
    /// The bytes not yet consumed (what the client sent right behind its upgrade request)
    /// are WebSocket frames: they are deframed now.
    pub fn start_websocket(&mut self, max_body: u32, echo: bool, out: &Rc<Outbound>) {
        self.ws_config = Some(WsConfig {
            max_message: max_body.saturating_add(HEADER_LEN as u32),
            echo,
        });
        self.raw = self.start;
        self.app = self.start;
        self.ready = self.start;
        if let Some(mut buf) = self.buf.take() {
            self.received(&mut buf, out);
            self.buf = Some(buf);
        }
    }

    /// The peer's Close or a refused input, once (the WebSocket layer's verdict).
    pub fn take_ws_end(&mut self) -> Option<WsEnd> {
        self.ws.as_mut().and_then(|w| w.end.take())
    }

    /// The bytes not yet consumed.
    pub fn pending(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.start..self.ready],
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
        (self.start < self.end).then_some(self.want.max(self.ws_want()))
    }

    /// Whether a frame larger than a pooled buffer is being received: its reads are bulk
    /// input (`fair`), however small each is.
    pub fn in_large_frame(&self) -> bool {
        self.incomplete().is_some_and(|len| len > RX_BUF)
    }

    /// Bytes the buffer must hold for the frames being received to complete.
    fn ws_want(&self) -> usize {
        match &self.ws {
            Some(w) if w.want > 0 => (self.app - self.start) + w.want,
            _ => 0,
        }
    }

    /// Bytes of buffer this connection holds.
    pub fn held(&self) -> usize {
        self.buf.as_ref().map_or(0, RxMem::held)
    }

    /// Give the buffer back to the pool if everything in it was consumed.
    pub fn release_if_empty(&mut self, pool: &RxPool) {
        if self.start == self.end || (self.start == self.app && self.raw == self.end) {
            if let Some(b) = self.buf.take() {
                pool.put(b);
            }
            self.empty();
        }
    }

    /// Every offset back to the buffer's start: nothing is held.
    fn empty(&mut self) {
        self.start = 0;
        self.ready = 0;
        self.app = 0;
        self.raw = 0;
        self.end = 0;
    }

    /// Drop everything buffered and give the buffer back.
    pub fn clear(&mut self, pool: &RxPool) {
        self.start = self.end;
        self.ready = self.end;
        self.app = self.end;
        self.raw = self.end;
        self.want = 0;
        self.release_if_empty(pool);
    }

    /// Bytes just read: pass them on (plain) or deframe what is whole (WebSocket).
    fn received(&mut self, buf: &mut [u8], out: &Rc<Outbound>) {
        let Some(config) = self.ws_config else {
            self.ready = self.end;
            self.app = self.end;
            self.raw = self.end;
            return;
        };
        let ws = self.ws.get_or_insert_with(|| {
            Box::new(WsRx {
                deframer: Deframer::new(Role::Server, config.max_message as usize, config.echo),
                echo: config.echo,
                want: 0,
                end: None,
            })
        });
        while ws.end.is_none() && self.raw < self.end {
            let step = match ws.deframer.step(buf, self.app, self.raw, self.end) {
                Ok(step) => step,
                Err(e) => {
                    ws.end = Some(WsEnd::Refused {
                        status: e.status,
                        reason: e.reason,
                    });
                    break;
                }
            };
            self.raw += step.consumed;
            match step.event {
                Event::NeedMore { want } => {
                    ws.want = want;
                    break;
                }
                Event::Data {
                    len,
                    end_of_message,
                } => {
                    self.app += len;
                    if let Some((kind, msg_len)) = end_of_message {
                        let msg = self.app - msg_len..self.app;
                        if ws.echo {
                            echo(out, kind, &buf[msg.clone()]);
                            // Nothing else reads the deframed bytes in echo mode.
                            self.app = msg.start;
                        } else if one_frame(&buf[msg]) {
                            self.ready = self.app;
                        } else {
                            ws.end = Some(WsEnd::Refused {
                                status: 1002,
                                reason: "a WebSocket message must carry exactly one peerd frame",
                            });
                        }
                    }
                }
                Event::Ping { payload } => {
                    let mut pong = Vec::with_capacity(2 + payload.len());
                    wsframe::write_frame(Opcode::Pong, true, &buf[payload], &mut pong);
                    // Bounded like any frame: past the queue limit a pong is dropped.
                    let _ = out.push_bytes(Bytes::from(pong));
                }
                Event::Pong => {}
                Event::Close { status, .. } => ws.end = Some(WsEnd::PeerClosed(status)),
            }
            ws.want = 0;
        }
        if self.raw == self.end {
            // Everything read is deframed: the raw region is empty again.
            self.raw = self.app;
            self.end = self.app;
            ws.want = 0;
            if ws.end.is_none() && ws.deframer.message_in_progress().is_none() {
                // Between messages: nothing to keep (see `ws`).
                self.ws = None;
            }
        }
    }
}

/// Whether a whole WebSocket message is exactly one peerd frame (its header's length is
/// the message's).
fn one_frame(msg: &[u8]) -> bool {
    match Header::parse(msg, u32::MAX) {
        Ok(Some(h)) => h.frame_len() == msg.len(),
        _ => false,
    }
}

/// Send a message back as it came (echo mode).
fn echo(out: &Rc<Outbound>, kind: MessageKind, payload: &[u8]) {
    let opcode = match kind {
        MessageKind::Text => Opcode::Text,
        MessageKind::Binary => Opcode::Binary,
    };
    let mut v = Vec::with_capacity(wsframe::MAX_SERVER_HEADER + payload.len());
    wsframe::write_frame(opcode, true, payload, &mut v);
    let _ = out.push_bytes(Bytes::from(v));
}

/// Read once from `socket` into `rx`, taking a pooled buffer only for the duration of the
/// read (and keeping it only while it holds unconsumed bytes).
pub(crate) fn poll_fill(
    socket: &Rc<Outbound>,
    rx: &mut RxBuf,
    pool: &RxPool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    poll_fill_at_most(socket, rx, pool, usize::MAX, cx)
}

/// [`poll_fill`], reading at most `max` bytes.
pub(crate) fn poll_fill_at_most(
    socket: &Rc<Outbound>,
    rx: &mut RxBuf,
    pool: &RxPool,
    max: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    rx.fill(pool, socket, max, |room| {
        let r = socket.poll_read(cx, room);
        let n = match r {
            Poll::Ready(Ok(n)) => n,
            _ => 0,
        };
        (r, n)
    })
}

/// Read at most `max` bytes once from `socket` into `rx` without waiting (`Ok(None)`:
/// nothing to read), with the buffer lent as in [`poll_fill`]: the ring's reader, when no
/// receive is in the kernel. With the bytes read comes whether the socket was left empty:
/// a plain socket's read that brought less than it had room for (a TLS read's plaintext
/// says nothing of what the socket holds: never for TLS).
pub(crate) fn try_fill(
    socket: &Rc<Outbound>,
    rx: &mut RxBuf,
    pool: &RxPool,
    max: usize,
) -> io::Result<Option<(usize, bool)>> {
    rx.fill(pool, socket, max, |room| match socket.try_read(room) {
        Ok(Some(n)) => {
            let emptied = n > 0 && n < room.len() && !socket.is_tls();
            (Ok(Some((n, emptied))), n)
        }
        Ok(None) => (Ok(None), 0),
        Err(e) => (Err(e), 0),
    })
}

impl RxBuf {
    /// Let `source` write into the room after the bytes held, at most `max` bytes of it; it
    /// returns its result and how many bytes it wrote, which are then passed on
    /// (`received`). The buffer is kept only while it holds unconsumed bytes.
    pub fn fill<R>(
        &mut self,
        pool: &RxPool,
        socket: &Rc<Outbound>,
        max: usize,
        source: impl FnOnce(&mut [u8]) -> (R, usize),
    ) -> R {
        self.fill_from(RX_BUF, pool, socket, |room| {
            let end = room.len().min(max);
            source(&mut room[..end])
        })
    }

    /// [`fill`](Self::fill), taking a buffer of `first` bytes if none is held.
    fn fill_from<R>(
        &mut self,
        first: usize,
        pool: &RxPool,
        socket: &Rc<Outbound>,
        source: impl FnOnce(&mut [u8]) -> (R, usize),
    ) -> R {
        let mut buf = self.room(first, pool);
        let (r, n) = source(&mut buf[self.end..]);
        if n > 0 {
            self.end += n;
            pool.written(&mut buf, self.end);
            self.received(&mut buf, socket);
        }
        self.keep(buf, pool);
        r
    }

    /// Bytes the ring received for this connection (`receiver`): appended as if read.
    pub fn append(&mut self, mut data: &[u8], pool: &RxPool, socket: &Rc<Outbound>) {
        while !data.is_empty() {
            self.fill_from(RING_BUF, pool, socket, |room| {
                let n = room.len().min(data.len());
                room[..n].copy_from_slice(&data[..n]);
                data = &data[n..];
                ((), n)
            });
        }
    }

    /// Ciphertext the ring received for a TLS connection (`receiver`): handed to rustls a
    /// record's worth at a time and the plaintext moved in after each, so rustls's plaintext
    /// buffer never fills (`&[]`: only move in what rustls holds). Records rustls owes the
    /// peer (alerts, tickets) are flushed. `Ok(true)`: the peer ended the session
    /// (close_notify); an error is a TLS protocol error, its alert sent.
    pub fn tls_received(
        &mut self,
        mut bytes: &[u8],
        pool: &RxPool,
        socket: &Rc<Outbound>,
    ) -> io::Result<bool> {
        let Some(tls) = socket.tls() else {
            self.append(bytes, pool, socket);
            return Ok(false);
        };
        let r = loop {
            let plain = self.fill_from(RING_BUF, pool, socket, |room| {
                let r = tls.borrow_mut().read_plaintext(room);
                let n = match r {
                    Ok(Some(n)) => n,
                    _ => 0,
                };
                (r, n)
            });
            match plain {
                Ok(Some(0)) => break Ok(true),
                Ok(Some(_)) => {}
                Ok(None) if bytes.is_empty() => break Ok(false),
                Ok(None) => {
                    let before = bytes.len();
                    if let Err(e) = tls.borrow_mut().feed_some(&mut bytes) {
                        break Err(e);
                    }
                    if bytes.len() == before {
                        // rustls took nothing and has nothing to give: never spin on it.
                        break Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "TLS input refused by the session",
                        ));
                    }
                }
                Err(e) => break Err(e),
            }
        };
        socket.flush_tls_records();
        r
    }

    /// Whether the bytes held undispatched are [`RING_SHARE`] or more: the ring's receive
    /// is paused then (`receiver`), and the rest (a large frame, or what a peer sends while
    /// it is throttled) is read directly, in the reader's turn. Not the frame's whole
    /// length: the shard's provided buffers are shared, and a connection sending a large
    /// frame, slowly or not, must not take them all from the others.
    pub fn is_full(&self) -> bool {
        self.end - self.start >= RING_SHARE
    }

    /// The buffer, with room after `end` for at least one byte: taken from the pool (`first`
    /// bytes) if there is none, the unconsumed bytes moved to its front when they reach its
    /// end, grown when they fill it.
    fn room(&mut self, first: usize, pool: &RxPool) -> RxMem {
        let mut buf = self.buf.take().unwrap_or_else(|| pool.take(first));
        if self.start == self.end {
            self.empty();
        } else if self.end == buf.len() {
            // Move what is left to the front: the peerd bytes, then the raw ones after them
            // (closing the gap deframing left).
            let app_len = self.app - self.start;
            buf.copy_within(self.start..self.app, 0);
            buf.copy_within(self.raw..self.end, app_len);
            self.end = app_len + (self.end - self.raw);
            self.ready -= self.start;
            self.start = 0;
            self.app = app_len;
            self.raw = app_len;
            let want = self.want.max(self.ws_want());
            if matches!(buf, RxMem::Mapped(_)) && self.end < RX_BUF && want <= RX_BUF {
                // The large frame is gone; what follows it fits a pooled buffer: the
                // mapping's pages go back.
                let mut small = pool.take(RX_BUF);
                small[..self.end].copy_from_slice(&buf[..self.end]);
                pool.put(std::mem::replace(&mut buf, small));
            }
            if self.end == buf.len() {
                let len = grown_len(buf.len(), want);
                // A frame larger than a pooled buffer gets a mapping of its whole
                // declared length at once: backed only as its bytes arrive, it never has
                // to grow again.
                let large = want > RX_BUF || matches!(buf, RxMem::Mapped(_));
                buf = pool.grow(buf, if large { len.max(want) } else { len }, large);
            }
        }
        buf
    }

    /// Keep `buf` if it holds unconsumed bytes, else give it back to the pool.
    fn keep(&mut self, buf: RxMem, pool: &RxPool) {
        if self.start == self.end {
            pool.put(buf);
            self.empty();
        } else {
            self.buf = Some(buf);
        }
    }
}

/// The length a full receive buffer of `len` bytes grows to, `want` being the declared
/// length of the frame being received (0: none known).
///
/// By a quarter (at least one pooled buffer's worth), up to `want`. A frame larger than a
/// pooled buffer is then given a mapping of its whole length instead (`RxBuf::room`, module
/// doc), which holds only the pages written; this step is for a vector. When no longer frame
/// is known the buffer holds whole frames not yet dispatched (`want` is learnt only when the
/// reader parses, and the ring's reaper appends several completions before it does): it
/// grows by the whole step, never byte by byte, as each growth reallocates and copies
/// everything held.
fn grown_len(len: usize, want: usize) -> usize {
    // The ring's small buffer becomes a pooled one first.
    let grown = if len < RX_BUF {
        RX_BUF
    } else {
        len + (len / 4).max(RX_BUF)
    };
    if want > len {
        grown.min(want)
    } else {
        grown
    }
}

/// Where a connection's receive through the shard's ring stands (`receiver`): 16 bytes
/// per connection, in place of the poll glommio keeps armed for an idle socket.
#[derive(Default)]
pub(crate) struct RingRecv {
    /// The receive's key in the shard's ring (0: the connection reads through glommio).
    pub key: Cell<u64>,
    pub state: Cell<RecvState>,
    /// Bytes appended since the reader last looked.
    pub arrived: Cell<u32>,
}

/// See [`RingRecv`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvState {
    /// Not on the ring.
    #[default]
    Off,
    /// On the ring, no receive in the kernel: the reader arms one when it wants bytes.
    Idle,
    /// A multishot receive (on a ring of polls, a multishot poll) is in the kernel.
    Armed,
    /// Parked (`receiver`): its multishot poll, still in the kernel, completed since the
    /// reader last found the socket empty. The reader reads the socket directly, and is
    /// `Armed` again, arming nothing, once a read leaves it empty.
    Ready,
    /// `Ready`, and the poll saw the peer's end or an error: the reader reads until a read
    /// says so (0 or the error). A read that leaves no bytes does not mean the end was
    /// read, and no completion would come for it again.
    ReadyToEnd,
    /// Its cancellation was asked for; its last completion has not come yet.
    Stopping,
    /// The stream ended for the reader (0: a TLS close_notify; else the errno of a TLS
    /// protocol error) while its receive, cancelled, is still in the kernel: `Ended` at the
    /// receive's last completion.
    Ending(Errno),
    /// The stream ended (0) or failed (the errno): nothing more comes.
    Ended(Errno),
}

/// An errno in 16 bits (Linux's are below 4096): `RecvState` fits in 4 bytes then, and
/// `RingRecv` in 16.
pub(crate) type Errno = u16;

/// The errno of `e` (EIO when it has none).
pub(crate) fn errno_of(e: &io::Error) -> Errno {
    e.raw_os_error()
        .and_then(|n| Errno::try_from(n).ok())
        .unwrap_or(libc::EIO as Errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_grows_by_a_step_towards_the_frame_it_waits_for() {
        // By a quarter, up to the frame (a large one then gets a mapping of its length).
        assert_eq!(grown_len(RX_BUF, 1 << 20), 2 * RX_BUF);
        assert_eq!(grown_len(256 * 1024, 1 << 20), 320 * 1024);
        // The last step stops at the frame's end.
        assert_eq!(grown_len(RX_BUF, RX_BUF + 10), RX_BUF + 10);
        // The ring's small buffer grows to a pooled one, or to the frame if shorter.
        assert_eq!(grown_len(RING_BUF, 1 << 20), RX_BUF);
        assert_eq!(grown_len(RING_BUF, RING_BUF + 10), RING_BUF + 10);
    }

    /// Mappings given back are unmapped a share per pass, or as much as connections took
    /// in the pass before; the shard's service does it in the passes after they were given
    /// back until none is left.
    #[test]
    fn mappings_given_back_are_unmapped_a_share_per_pass_later() {
        let retire_three = |pool: &RxPool| {
            for _ in 0..3 {
                let mut map = Mapping::new(UNMAP_PER_PASS).unwrap();
                map[..UNMAP_PER_PASS].fill(1);
                pool.lend(map.written(UNMAP_PER_PASS));
                pool.put(RxMem::Mapped(map));
            }
            assert_eq!((pool.lent(), pool.retired()), (0, 3 * UNMAP_PER_PASS));
        };
        // A pass's share, called directly: the order of the service's and a test's timers
        // on a loaded machine is no part of it.
        let pool = RxPool::default();
        retire_three(&pool);
        // What was lent before counts no more, as when the service wakes.
        pool.taken.set(0);
        assert!(pool.unmap_share());
        assert_eq!(pool.retired(), 2 * UNMAP_PER_PASS, "one share in a pass");
        // Connections took two shares' worth: the next pass takes as much, all that is left.
        pool.lend(2 * UNMAP_PER_PASS);
        assert!(!pool.unmap_share());
        assert_eq!(pool.retired(), 0, "the rest in one pass");

        // The service does it by itself, in the passes after the giving back.
        glommio::LocalExecutor::default().run(async {
            let pool = Rc::new(RxPool::default());
            let service = {
                let pool = pool.clone();
                glommio::spawn_local(async move { pool.unmap_retired().await }).detach()
            };
            retire_three(&pool);
            let mut passes = 0;
            while pool.retired() > 0 && passes < 100 {
                crate::fair::pass_boundary().await;
                passes += 1;
            }
            assert_eq!(pool.retired(), 0, "all unmapped within {passes} passes");
            drop(service);
        });
    }

    #[test]
    fn a_full_buffer_of_whole_frames_grows_by_a_whole_step() {
        // The ring appended more whole frames than a buffer holds before the reader parsed
        // them: no frame is waited for (or a stale, shorter one is remembered). Growing by
        // one byte per appended byte cost a reallocation and a copy each (a soak's
        // pipeliners took a shard's whole core with it).
        assert_eq!(grown_len(RX_BUF, 0), 2 * RX_BUF);
        assert_eq!(grown_len(2 * RX_BUF, 100), 3 * RX_BUF);
        assert_eq!(grown_len(2 * RX_BUF, 2 * RX_BUF), 3 * RX_BUF);
    }
}
