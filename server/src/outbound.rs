//! The send side: a connection's socket and bounded queue of frames ([`Outbound`]), and the
//! shard's set of connections with frames waiting to be written ([`WriteSet`]).
//!
//! Frames are `Bytes`: a frame for many recipients is encoded once and queued to each by
//! reference count. Queuing never writes; the shard flushes its write set at the end of each
//! batch (a read batch, an inbox batch, a timer tick), so frames queued together leave in
//! one vectored `sendmsg` per connection. When the socket buffer is full a drain task (in
//! the shard's gate) waits for writability and hands writing back to `flush`.
//!
//! # What a queue costs
//!
//! A queue's limit (`outbound_queue_bytes`) and the shard's memory budget must bound memory,
//! not just the frames' lengths. Two things would make them lie: small frames are carved out
//! of the shard's 64 KiB encode chunks (a queue holding one small frame of each of many
//! chunks would pin them all), and each queued frame has bookkeeping of its own. So a
//! queue is charged `len + FRAME_OVERHEAD` per frame, and the moment frames have to wait
//! (the socket is full) those that share a chunk are copied out into allocations of their
//! own: a waiting queue then holds what it is charged, and frames that go out at once cost
//! no copy. (Frames larger than a chunk get an exact allocation when encoded, `local`.)
//!
//! # Transports
//!
//! A [`Frame`] is encoded once with the header of a WebSocket binary message in front of
//! it (server frames are unmasked, so that header depends only on the length): TCP, Unix
//! and `tls://` peers are queued the slice after it, WebSocket peers the whole, both by
//! reference count. So one publish to TCP and WebSocket members is one encode and no copy.
//! Over TLS the queued bytes are plaintext: [`Outbound::flush`] hands them to the
//! connection's [`TlsSession`] and writes its records instead.

use std::cell::{Cell, Ref, RefCell};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_lite::future::poll_fn;
use glommio::sync::Gate;

use peerd_ws::frame::{self as wsframe, Opcode};

use crate::frame::Frame;
use crate::metrics::TransportKind;
use crate::stream::{self, Stream};
use crate::tls::TlsSession;
use crate::uring::{self, SendRing};

/// Most iovecs per sendmsg.
const MAX_IOV: usize = 64;

/// What a queued frame costs besides its bytes: its slot in the queue and its allocation's
/// header, rounded up.
pub(crate) const FRAME_OVERHEAD: usize = 64;

/// Frames up to this size may share an encode chunk; they are copied out when they wait.
const SHARED_MAX: usize = 64 * 1024;

/// A frame that will wait in a queue, in memory of its own if it may share a chunk.
fn own(frame: Bytes) -> Bytes {
    if frame.len() <= SHARED_MAX {
        Bytes::copy_from_slice(&frame)
    } else {
        frame
    }
}

/// Who writes to the socket next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteState {
    /// Nothing queued that is not already being written.
    Idle,
    /// Frames queued; this connection is on the shard's write set.
    Dirty,
    /// The socket buffer was full: a drain task owns writing until it has room.
    Draining,
}

/// The queue went past its limit: the frame was not queued.
#[derive(Debug)]
pub(crate) struct Overflow;

struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// The front frame is partly written: the peer has its first bytes.
    front_started: bool,
}

impl Queue {
    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let front = self.frames.front_mut().expect("consumed more than queued");
            if front.len() <= n {
                n -= front.len();
                self.frames.pop_front();
                self.front_started = false;
                if self.frames.is_empty() {
                    // An empty queue keeps no storage: most connections are idle most of
                    // the time, and 128 B each is an eighth of an idle connection's budget.
                    // A busy one pays a small malloc and free per drained batch instead.
                    self.frames = VecDeque::new();
                }
            } else {
                front.advance(n);
                self.front_started = true;
                n = 0;
            }
        }
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
        self.front_started = false;
    }

    /// What the queue is charged: its bytes and each frame's overhead.
    fn charge(&self) -> usize {
        self.bytes + self.frames.len() * FRAME_OVERHEAD
    }

    /// Drop every frame not yet started. A partly written frame stays: whatever follows it
    /// on the wire must start at a frame boundary.
    fn drop_unstarted(&mut self) {
        let keep = if self.front_started { 1 } else { 0 };
        while self.frames.len() > keep {
            let f = self.frames.pop_back().expect("len checked");
            self.bytes -= f.len();
        }
    }
}

/// One connection's socket and outbound queue.
pub(crate) struct Outbound {
    /// `None` once the connection is finished: the fd is closed then, so nothing may use
    /// its number again (another socket may have it by now).
    stream: RefCell<Option<Stream>>,
    /// The TLS session of a `tls://` or `wss://` connection.
    tls: Option<Box<RefCell<TlsSession>>>,
    /// Frames go out as WebSocket messages (set once the upgrade is answered).
    ws: Cell<bool>,
    /// The endpoint's transport, fixed at accept (a `ws://` connection still in its
    /// upgrade is `Ws`): the label the shard's connection counters use from admission to
    /// the end.
    transport: TransportKind,
    queue: RefCell<Queue>,
    /// The queue's limit (`outbound_queue_bytes`), in 32 bits beside the small fields (the
    /// 8 bytes saved put the connection in a smaller allocation class); a larger setting
    /// saturates at 4 GiB.
    limit: u32,
    state: Cell<WriteState>,
    /// Shut the write side once the queue is empty (the connection is closing).
    finish: Cell<bool>,
    writes: Rc<WriteSet>,
}

impl Outbound {
    pub fn new(
        stream: Stream,
        tls: Option<TlsSession>,
        limit: usize,
        writes: Rc<WriteSet>,
        transport: TransportKind,
    ) -> Rc<Outbound> {
        Rc::new(Outbound {
            stream: RefCell::new(Some(stream)),
            tls: tls.map(|t| Box::new(RefCell::new(t))),
            ws: Cell::new(false),
            transport,
            queue: RefCell::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
                front_started: false,
            }),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            state: Cell::new(WriteState::Idle),
            finish: Cell::new(false),
            writes,
        })
    }

    /// The socket's fd; None once finished.
    pub fn fd(&self) -> Option<RawFd> {
        self.stream.borrow().as_ref().map(Stream::fd)
    }

    /// Drop the socket's glommio stream and keep the bare socket, on a duplicate fd
    /// (`Stream::bare`: what glommio keeps armed for a stream costs an idle connection
    /// about 270 B): for a connection whose receives go through the shard's ring (its
    /// receives, or its polls when parked), once its handshake's reads through glommio are
    /// over. The fd number changes; nothing holds it
    /// across this call (a batch of sends is submitted within the flush that built it).
    /// Not while a drain waits for room: its waker is with the glommio stream. On failure
    /// the stream stays as it was. True if the socket is bare now.
    pub fn bare_stream(&self) -> io::Result<bool> {
        if self.state.get() == WriteState::Draining {
            return Ok(false);
        }
        let mut stream = self.stream.borrow_mut();
        match stream.as_mut() {
            Some(Stream::Bare(..)) => Ok(true),
            Some(s) => {
                *s = s.bare()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The socket holds its end behind the bytes a short read took (a parked connection's
    /// poll saw it): a TLS read asks the socket again instead of trusting that short read
    /// (`TlsSession::not_drained`). A plain read always asks it.
    pub fn end_pending(&self) {
        if let Some(tls) = &self.tls {
            tls.borrow_mut().not_drained();
        }
    }

    /// Read from the socket (the receive side shares it): plaintext, for a TLS connection.
    /// A finished socket reads as end of stream.
    pub fn poll_read(
        self: &Rc<Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let Some(tls) = &self.tls else {
            return match self.stream.borrow_mut().as_mut() {
                Some(s) => s.poll_read(cx, buf),
                None => Poll::Ready(Ok(0)),
            };
        };
        loop {
            match self.read_tls(tls, buf) {
                Ok(Some(n)) => return Poll::Ready(Ok(n)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            // Wait for readability through glommio with a one-byte read (tls module doc).
            let mut one = [0u8; 1];
            let r = match self.stream.borrow_mut().as_mut() {
                Some(s) => s.poll_read(cx, &mut one),
                None => return Poll::Ready(Ok(0)),
            };
            match r {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(_)) => {
                    let fed = tls.borrow_mut().feed(&one);
                    self.flush_tls_records();
                    // On an error the alert for it was just flushed.
                    fed?;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Read what the socket has now, without waiting: `Ok(None)` when it has nothing (the
    /// ring's receive side reads this way when its receive has ended, `receiver`).
    /// Plaintext for a TLS connection; a finished socket reads as end of stream.
    pub fn try_read(self: &Rc<Self>, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match &self.tls {
            Some(tls) => self.read_tls(tls, buf),
            None => match self.fd() {
                Some(fd) => stream::nonblocking(stream::recv(fd, buf)),
                None => Ok(Some(0)),
            },
        }
    }

    /// Plaintext rustls holds, else what it decrypts of the ciphertext the socket has now;
    /// `Ok(None)`: neither has any.
    fn read_tls(
        self: &Rc<Self>,
        tls: &RefCell<TlsSession>,
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        let Some(fd) = self.fd() else {
            return Ok(Some(0));
        };
        loop {
            let r = {
                let mut t = tls.borrow_mut();
                match t.read_plaintext(buf) {
                    Ok(Some(n)) => return Ok(Some(n)),
                    Ok(None) => t.read_socket(fd),
                    Err(e) => Err(e),
                }
            };
            // Handshake messages, alerts, session tickets: rustls may have records to send
            // after any input.
            self.flush_tls_records();
            match r? {
                crate::tls::Fed::Progress => {}
                crate::tls::Fed::Eof => return Ok(Some(0)),
                crate::tls::Fed::WouldBlock => return Ok(None),
            }
        }
    }

    /// The TLS session, for the ring's receive side (`inbound`), which feeds it what the
    /// ring received.
    pub fn tls(&self) -> Option<&RefCell<TlsSession>> {
        self.tls.as_deref()
    }

    /// Write what rustls owes the peer (handshake messages, alerts, tickets) after input.
    pub fn flush_tls_records(self: &Rc<Self>) {
        if self.tls.as_ref().is_some_and(|t| t.borrow().wants_write()) {
            self.flush();
        }
    }

    /// From now on frames go out as WebSocket binary messages.
    pub fn start_websocket(&self) {
        self.ws.set(true);
    }

    /// The endpoint's transport (see the field).
    pub fn transport(&self) -> TransportKind {
        self.transport
    }

    /// Whether the WebSocket upgrade was answered (frames go out as binary messages).
    pub fn is_websocket(&self) -> bool {
        self.ws.get()
    }

    /// Change the queue, keeping the shard's total of queued charges in step.
    fn with_queue<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> R {
        let mut q = self.queue.borrow_mut();
        let before = q.charge();
        let r = f(&mut q);
        let after = q.charge();
        let total = &self.writes.charged;
        total.set(total.get() - before + after);
        let peak = &self.writes.peak;
        peak.set(peak.get().max(total.get()));
        r
    }

    /// Queue a frame for the next flush, as this connection's transport sends it. Past the
    /// limit nothing is queued.
    pub fn push(self: &Rc<Self>, frame: &Frame) -> Result<(), Overflow> {
        self.push_bytes(if self.ws.get() {
            frame.websocket()
        } else {
            frame.peerd()
        })
    }

    /// Queue bytes to go out exactly as they are (an HTTP answer, a WebSocket control
    /// frame, an echoed message). Past the limit nothing is queued.
    pub fn push_bytes(self: &Rc<Self>, frame: Bytes) -> Result<(), Overflow> {
        let waiting = self.state.get() == WriteState::Draining;
        self.with_queue(|q| {
            if q.charge() + frame.len() + FRAME_OVERHEAD > self.limit as usize {
                return Err(Overflow);
            }
            q.bytes += frame.len();
            q.frames.push_back(if waiting { own(frame) } else { frame });
            Ok(())
        })?;
        if self.state.get() == WriteState::Idle {
            self.state.set(WriteState::Dirty);
            self.writes.dirty.borrow_mut().push(self.clone());
        }
        Ok(())
    }

    /// Queue the connection's last frame (a Close) whatever the limit, and shut the write
    /// side once it is written. With `discard` (a slow consumer would never read it in
    /// time) the frames queued before it are dropped, except one the peer already has the
    /// start of: the Close then follows that frame's end, so it arrives whole. On a
    /// WebSocket, `ws_close` (status, reason) follows as the WebSocket Close frame.
    pub fn push_last(
        self: &Rc<Self>,
        frame: Option<&Frame>,
        discard: bool,
        ws_close: Option<(u16, &str)>,
    ) {
        let last = frame.map(|f| {
            if self.ws.get() {
                f.websocket()
            } else {
                f.peerd()
            }
        });
        let ws_close = ws_close.filter(|_| self.ws.get()).map(|(status, reason)| {
            let mut v = Vec::with_capacity(4 + 125);
            wsframe::write_frame(
                Opcode::Close,
                true,
                &peerd_ws::close::close_payload(status, reason),
                &mut v,
            );
            Bytes::from(v)
        });
        self.with_queue(|q| {
            if discard {
                q.drop_unstarted();
            }
            for f in last.into_iter().chain(ws_close) {
                q.bytes += f.len();
                q.frames.push_back(f);
            }
        });
        self.finish.set(true);
        self.flush();
    }

    /// What the queue is charged now (bytes not yet written, plus per-frame overhead).
    pub fn charged(&self) -> usize {
        self.queue.borrow().charge()
    }

    /// Write as much of the queue as the socket takes now, without waiting.
    pub fn flush(self: &Rc<Self>) {
        if self.state.get() == WriteState::Draining {
            return;
        }
        let Some(fd) = self.fd() else {
            self.with_queue(Queue::clear);
            return;
        };
        self.state.set(WriteState::Idle);
        let written = match &self.tls {
            None => self.write_plain(fd),
            Some(tls) => self.write_tls(&mut tls.borrow_mut(), fd),
        };
        match written {
            Written::All => {
                if self.finish.get() {
                    // Everything, the Close frame included, is in the kernel: send FIN.
                    stream::shutdown_write(fd);
                }
            }
            Written::SocketFull => {
                self.state.set(WriteState::Draining);
                // From now on frames wait: give them memory of their own (module doc).
                self.with_queue(|q| {
                    for f in q.frames.iter_mut() {
                        *f = own(std::mem::take(f));
                    }
                });
                // Detached: a glommio task whose handle is dropped is cancelled.
                if let Ok(task) = self.writes.tasks.spawn(drain(self.clone())) {
                    task.detach();
                    return;
                }
                // The shard is stopping and its gate is closed: what is left will not be
                // written.
                self.state.set(WriteState::Idle);
                self.with_queue(Queue::clear);
            }
            Written::Failed => {
                // The peer reset the connection; the reader sees it too and tears down.
                // Nothing queued can be delivered any more.
                self.with_queue(Queue::clear);
            }
        }
    }

    /// Add this connection's first send to `batch` if it writes plain bytes now (not TLS,
    /// not waiting for room); the queue stays borrowed while the batch refers to it.
    fn join_batch<'a>(&'a self, batch: &mut uring::Batch, held: &mut Vec<Ref<'a, Queue>>) -> bool {
        if self.state.get() != WriteState::Dirty || self.tls.is_some() {
            return false;
        }
        let Some(fd) = self.fd() else { return false };
        let q = self.queue.borrow();
        if q.frames.is_empty() {
            return false;
        }
        batch.add(fd, q.frames.iter().take(MAX_IOV).map(|f| &f[..]));
        held.push(q);
        // A connection can be on the dirty list twice (flushed directly, then queued to
        // again): the second must not send the same bytes again.
        self.state.set(WriteState::Idle);
        true
    }

    /// Vectored writes straight from the queue.
    fn write_plain(&self, fd: RawFd) -> Written {
        loop {
            let result = {
                let q = self.queue.borrow();
                if q.frames.is_empty() {
                    return Written::All;
                }
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let mut k = 0;
                for f in q.frames.iter().take(MAX_IOV) {
                    iov[k] = IoSlice::new(f);
                    k += 1;
                }
                stream::send_vectored(fd, &iov[..k])
            };
            match result {
                Ok(Some(n)) => self.with_queue(|q| q.consume(n)),
                Ok(None) => return Written::SocketFull,
                Err(_) => return Written::Failed,
            }
        }
    }

    /// Records first, then as much of the queue as rustls takes (its buffer limit keeps
    /// what it holds bounded), until both are out or the socket is full. A closing
    /// connection ends its session with close_notify.
    fn write_tls(&self, tls: &mut TlsSession, fd: RawFd) -> Written {
        loop {
            match tls.write_socket(fd) {
                Ok(true) => {}
                Ok(false) => return Written::SocketFull,
                Err(_) => return Written::Failed,
            }
            let fed = self.with_queue(|q| {
                let mut fed = 0;
                while let Some(front) = q.frames.front() {
                    let len = front.len();
                    let n = tls.encrypt(front);
                    if n == 0 {
                        break;
                    }
                    q.consume(n);
                    fed += n;
                    if n < len {
                        break;
                    }
                }
                fed
            });
            if fed > 0 {
                continue;
            }
            if self.finish.get() && self.queue.borrow().frames.is_empty() && !tls.closed() {
                tls.close_notify();
                continue;
            }
            return Written::All;
        }
    }

    /// The socket is being torn down. If the peer never read the end of what was queued
    /// (our Close among it), reset the connection rather than end it with a FIN after a
    /// truncated frame: a reset says "cut", a FIN would look like a clean end.
    pub fn abandon(&self) {
        if let Some(s) = self.stream.borrow_mut().take() {
            let unsent_records = self.tls.as_ref().is_some_and(|t| t.borrow().unsent());
            if !self.queue.borrow().frames.is_empty() || unsent_records {
                stream::reset_on_close(s.fd());
            }
            // Dropping the stream closes the fd, whoever still holds this connection.
        }
        self.with_queue(Queue::clear);
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        // Whatever is left no longer counts against the shard's budget.
        self.with_queue(Queue::clear);
    }
}

/// How far a flush got.
enum Written {
    /// Everything queued is in the kernel.
    All,
    /// The socket is full: a drain task waits for room.
    SocketFull,
    /// The socket failed (reset): nothing more can be written.
    Failed,
}

/// Wait for the socket to take the front of what is waiting (the queue's first frame, or a
/// TLS connection's stalled records), then hand writing back to `flush`.
async fn drain(out: Rc<Outbound>) {
    let r = poll_fn(|cx| {
        let mut stream = out.stream.borrow_mut();
        let Some(s) = stream.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        if let Some(tls) = &out.tls {
            let t = tls.borrow();
            return s.poll_write(cx, &t.stalled[t.stalled_sent..]);
        }
        let q = out.queue.borrow();
        match q.frames.front() {
            Some(front) => s.poll_write(cx, front),
            None => Poll::Ready(Ok(0)),
        }
    })
    .await;
    out.state.set(WriteState::Idle);
    match r {
        Ok(n) => {
            match &out.tls {
                Some(tls) => {
                    let mut t = tls.borrow_mut();
                    t.stalled_sent += n;
                    if t.stalled_sent >= t.stalled.len() {
                        t.stalled_consumed();
                    }
                }
                None => out.with_queue(|q| q.consume(n)),
            }
            // The socket took data: the vectored path writes the rest, or finds the socket
            // full again and starts a fresh drain.
            out.flush();
        }
        Err(_) => out.with_queue(Queue::clear),
    }
}

/// The shard's connections with frames queued since the last flush.
pub(crate) struct WriteSet {
    dirty: RefCell<Vec<Rc<Outbound>>>,
    /// The shard's io_uring for batched sends; None: one `sendmsg` per connection (no
    /// io_uring with SENDMSG here, or turned off: `ListenOptions::batched_sends`).
    ring: Option<RefCell<SendRing>>,
    /// What every queue of the shard is charged, together (for the memory budget).
    charged: Cell<usize>,
    /// The most `charged` has been since the last `take_peak`.
    peak: Cell<usize>,
    /// The shard's task gate: drain tasks are tracked like every other task.
    tasks: Gate,
}

impl WriteSet {
    pub fn new(tasks: Gate, ring: Option<SendRing>) -> WriteSet {
        WriteSet {
            dirty: RefCell::new(Vec::new()),
            ring: ring.map(RefCell::new),
            charged: Cell::new(0),
            peak: Cell::new(0),
            tasks,
        }
    }

    /// What the shard's queues are charged together.
    pub fn charged(&self) -> usize {
        self.charged.get()
    }

    /// The highest total charge since the last call; starts over from now.
    pub fn take_peak(&self) -> usize {
        self.peak.replace(self.charged.get())
    }

    /// Whether sends are batched through the shard's io_uring: then a read settles later,
    /// once every connection found readable has been read (`executor::read_loop`).
    pub fn batching(&self) -> bool {
        self.ring.as_ref().is_some_and(|r| r.borrow().usable())
    }

    /// Connections with frames queued and not yet written.
    pub fn pending(&self) -> usize {
        self.dirty.borrow().len()
    }

    /// Write out every connection that has queued frames. Returns whether there was any.
    pub fn flush(&self) -> bool {
        let mut any = false;
        loop {
            let list = std::mem::take(&mut *self.dirty.borrow_mut());
            if list.is_empty() {
                return any;
            }
            any = true;
            // One connection gains nothing from the ring (send_batched stops at once if
            // the ring broke).
            if let Some(ring) = self.ring.as_ref().filter(|_| list.len() > 1) {
                send_batched(&mut ring.borrow_mut(), &list);
            }
            // What the batch sent is consumed: each flush writes what is left (a short or
            // refused send, a TLS connection, one not in the batch) or finishes.
            for out in list {
                out.flush();
            }
        }
    }
}

/// The first send of every connection in `list` that writes plain bytes, through the ring:
/// one `io_uring_enter` per [`uring::ENTRIES`] connections instead of one `sendmsg` each.
fn send_batched(ring: &mut SendRing, list: &[Rc<Outbound>]) {
    let mut outcomes = Vec::new();
    for chunk in list.chunks(uring::ENTRIES as usize) {
        if !ring.usable() {
            return;
        }
        let mut batch = ring.batch();
        let mut held = Vec::with_capacity(chunk.len());
        let mut who = Vec::with_capacity(chunk.len());
        for out in chunk {
            if out.join_batch(&mut batch, &mut held) {
                who.push(out);
            }
        }
        if who.is_empty() {
            continue;
        }
        // SAFETY: every byte the batch names belongs to a queue borrowed in `held`, which
        // lives until the call has returned with every completion (uring module doc).
        unsafe { ring.submit(batch, &mut outcomes) };
        drop(held);
        for (out, result) in who.into_iter().zip(outcomes.drain(..)) {
            // Would block, or failed: the connection's own flush finds out again and starts
            // its drain, or clears its queue.
            if let Ok(Some(n)) = result {
                out.with_queue(|q| q.consume(n));
            }
        }
    }
}
