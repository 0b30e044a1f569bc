//! One peer connection on its shard: receive buffer, handshake, read loop, outbound queue.
//!
//! State machine (explicit, as in quinn): `Active` -> `Closing` (we sent or received Close,
//! or the peer vanished; logically gone: deregistered, calls failed, callbacks run; the
//! socket lingers only to deliver our Close frame) -> `Closed` (the read loop ended).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_lite::future::poll_fn;
use peerd_codec::{self as codec, Code, Frame};

use crate::error::{CallError, SendError};
use crate::options::HandlerFuture;
use crate::peer::{ConnectedPeer, EventRef, Request};
use crate::shard::Shard;
use crate::stream::{self, Stream};
use crate::util::OneshotTx;

/// Size of a pooled receive buffer. Frames larger than this get a dedicated buffer for as
/// long as they are incomplete.
pub(crate) const RX_BUF: usize = 32 * 1024;
/// How long a closing connection keeps reading (and discarding) so the peer receives our
/// Close frame before the socket is torn down.
const LINGER: Duration = Duration::from_secs(2);
/// Most iovecs per sendmsg.
const MAX_IOV: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    Active,
    Closing,
    Closed,
}

/// Bytes received but not yet consumed. Holds no buffer at all while the connection is
/// idle: a buffer is taken from the shard's pool when the socket is readable, and returned
/// as soon as every received byte has been dispatched.
#[derive(Default)]
pub(crate) struct RxBuf {
    buf: Option<Vec<u8>>,
    start: usize,
    end: usize,
}

impl RxBuf {
    pub(crate) fn pending_bytes(&self) -> &[u8] {
        self.pending()
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
    }

    fn pending(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.start..self.end],
            None => &[],
        }
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

/// Read once into `rx`, taking a pooled buffer only for the duration of the read.
pub(crate) fn poll_fill(
    stream: &RefCell<Stream>,
    rx: &mut RxBuf,
    shard: &Shard,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut buf = rx.buf.take().unwrap_or_else(|| shard.take_rx_buf());
    if rx.start == rx.end {
        rx.start = 0;
        rx.end = 0;
    } else if rx.end == buf.len() {
        buf.copy_within(rx.start..rx.end, 0);
        rx.end -= rx.start;
        rx.start = 0;
    }
    let r = stream.borrow_mut().poll_read(cx, &mut buf[rx.end..]);
    if let Poll::Ready(Ok(n)) = r {
        rx.end += n;
    }
    if rx.start == rx.end {
        shard.put_rx_buf(buf);
    } else {
        rx.buf = Some(buf);
    }
    r
}

struct OutQueue {
    frames: VecDeque<Bytes>,
    bytes: usize,
}

impl OutQueue {
    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let front = self.frames.front_mut().expect("consumed more than queued");
            if front.len() <= n {
                n -= front.len();
                self.frames.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

pub(crate) type LocalHandler = Rc<dyn Fn(Request) -> HandlerFuture>;
type Listener = Rc<dyn Fn(EventRef<'_>)>;
type DisconnectCallback = Box<dyn FnOnce(u16)>;

/// A connected, handshaken peer.
pub(crate) struct Conn {
    pub session: u64,
    pub peer_id: Arc<str>,
    pub shard: Rc<Shard>,
    fd: std::os::fd::RawFd,
    pub(crate) stream: RefCell<Stream>,
    state: Cell<ConnState>,
    out: RefCell<OutQueue>,
    /// A drainer task owns the write side while the socket buffer is full.
    draining: Cell<bool>,
    /// Queued frames not yet flushed: this conn is on the shard's dirty list.
    dirty: Cell<bool>,
    /// Any frame received since the last heartbeat tick.
    pub(crate) rx_seen: Cell<bool>,
    pub(crate) missed_beats: Cell<u8>,
    reader_waker: RefCell<Option<Waker>>,
    close_code: Cell<u16>,
    inflight: Cell<u32>,
    next_call: Cell<u64>,
    pending: RefCell<HashMap<u64, OneshotTx<Result<Bytes, CallError>>>>,
    handlers: RefCell<HashMap<Box<str>, LocalHandler>>,
    listeners: RefCell<Vec<(Box<str>, Listener)>>,
    on_disconnect: RefCell<Vec<DisconnectCallback>>,
    /// Topic and presence state of this peer (see `topics`).
    pub(crate) topics: RefCell<crate::topics::PeerTopics>,
}

impl Conn {
    pub(crate) fn new(shard: Rc<Shard>, stream: Stream, session: u64, peer_id: Arc<str>) -> Conn {
        Conn {
            session,
            peer_id,
            shard,
            fd: stream.fd(),
            stream: RefCell::new(stream),
            state: Cell::new(ConnState::Active),
            out: RefCell::new(OutQueue {
                frames: VecDeque::new(),
                bytes: 0,
            }),
            draining: Cell::new(false),
            dirty: Cell::new(false),
            rx_seen: Cell::new(false),
            missed_beats: Cell::new(0),
            reader_waker: RefCell::new(None),
            close_code: Cell::new(0),
            inflight: Cell::new(0),
            next_call: Cell::new(1),
            pending: RefCell::new(HashMap::new()),
            handlers: RefCell::new(HashMap::new()),
            listeners: RefCell::new(Vec::new()),
            on_disconnect: RefCell::new(Vec::new()),
            topics: RefCell::new(Default::default()),
        }
    }

    pub fn is_active(&self) -> bool {
        self.state.get() == ConnState::Active
    }

    /// Server-side handler calls still running for this peer.
    pub fn inflight(&self) -> u32 {
        self.inflight.get()
    }

    // ---- outbound ----------------------------------------------------------------------

    /// Queue a frame; it is written by the next `Shard::flush_dirty`. Past the outbound
    /// limit the peer is closed as a slow consumer and the frame is dropped.
    pub fn queue(self: &Rc<Self>, frame: Bytes) -> Result<(), SendError> {
        if !self.is_active() {
            return Err(SendError::Closed);
        }
        let over = {
            let mut out = self.out.borrow_mut();
            out.bytes += frame.len();
            out.frames.push_back(frame);
            out.bytes > self.shard.limits().outbound_queue_bytes
        };
        if over {
            self.close(Code::SlowConsumer, "outbound queue limit exceeded");
            return Err(SendError::Closed);
        }
        if !self.dirty.replace(true) {
            self.shard.mark_dirty(self.clone());
        }
        Ok(())
    }

    /// Encode and queue a message.
    pub fn queue_msg<M>(self: &Rc<Self>, msg: &M) -> Result<(), SendError>
    where
        M: codec::Encode,
    {
        let frame = self.shard.encode(msg)?;
        self.queue(frame)
    }

    /// Write as much of the queue as the socket takes now, without waiting.
    pub(crate) fn flush(self: &Rc<Self>) {
        self.dirty.set(false);
        if self.draining.get() || self.state.get() == ConnState::Closed {
            return;
        }
        loop {
            let result = {
                let out = self.out.borrow();
                if out.frames.is_empty() {
                    break;
                }
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let mut k = 0;
                for f in out.frames.iter().take(MAX_IOV) {
                    iov[k] = IoSlice::new(f);
                    k += 1;
                }
                stream::send_vectored(self.fd, &iov[..k])
            };
            match result {
                Ok(Some(n)) => self.out.borrow_mut().consume(n),
                Ok(None) => {
                    self.draining.set(true);
                    glommio::spawn_local(drain(self.clone())).detach();
                    return;
                }
                Err(_) => {
                    // The peer reset the connection; the reader sees it too and tears
                    // down. Nothing queued can be delivered any more.
                    let mut out = self.out.borrow_mut();
                    out.frames.clear();
                    out.bytes = 0;
                    break;
                }
            }
        }
        if self.state.get() == ConnState::Closing {
            // Everything, our Close frame included, is in the kernel: send FIN.
            unsafe { libc::shutdown(self.fd, libc::SHUT_WR) };
        }
    }

    // ---- close ---------------------------------------------------------------------------

    /// Close with `code`: send Close{code, reason}, tear the peer down, and let the socket
    /// linger until the frame is delivered. Idempotent.
    pub fn close(self: &Rc<Self>, code: Code, reason: &str) {
        if !self.is_active() {
            return;
        }
        let close = codec::Close {
            code: code.as_u16(),
            reason: Cow::Borrowed(reason),
        };
        let frame = self.shard.encode(&close).ok();
        {
            let mut out = self.out.borrow_mut();
            if code == Code::SlowConsumer {
                // What is queued will never be read in time; keep only the Close.
                out.frames.clear();
                out.bytes = 0;
            }
            if let Some(f) = frame {
                out.bytes += f.len();
                out.frames.push_back(f);
            }
        }
        self.teardown(code.as_u16());
        self.flush();
        if let Some(w) = self.reader_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// The peer is gone (EOF, error, or its own Close): tear down without sending.
    fn peer_closed(self: &Rc<Self>, code: u16) {
        if self.is_active() {
            self.teardown(code);
            unsafe { libc::shutdown(self.fd, libc::SHUT_WR) };
        }
    }

    /// Logical disconnect: deregister everywhere, fail pending calls, run callbacks.
    fn teardown(self: &Rc<Self>, code: u16) {
        self.state.set(ConnState::Closing);
        self.close_code.set(code);
        self.shard.deregister(self);
        crate::topics::on_disconnect(self);
        // Dropping the senders resolves every waiting call with PeerGone.
        self.pending.borrow_mut().clear();
        self.handlers.borrow_mut().clear();
        self.listeners.borrow_mut().clear();
        let callbacks = std::mem::take(&mut *self.on_disconnect.borrow_mut());
        for cb in callbacks {
            cb(code);
        }
    }

    pub(crate) fn add_on_disconnect(&self, f: Box<dyn FnOnce(u16)>) {
        if self.is_active() {
            self.on_disconnect.borrow_mut().push(f);
        } else {
            f(self.close_code.get());
        }
    }

    // ---- RPC and events -----------------------------------------------------------------

    pub(crate) fn add_handler(&self, method: &str, h: LocalHandler) {
        if self.is_active() {
            self.handlers.borrow_mut().insert(method.into(), h);
        }
    }

    pub(crate) fn add_listener(&self, name: &str, l: Listener) {
        if self.is_active() {
            self.listeners.borrow_mut().push((name.into(), l));
        }
    }

    /// Start a server -> peer call: queue the request now, return the id and receiver.
    pub(crate) fn start_call(
        self: &Rc<Self>,
        method: &str,
        from: Option<&str>,
        params: &[u8],
        timeout: Duration,
    ) -> Result<(u64, crate::util::OneshotRx<Result<Bytes, CallError>>), SendError> {
        if !self.is_active() {
            return Err(SendError::Closed);
        }
        if self.pending.borrow().len() >= self.shard.limits().max_inflight_per_conn {
            return Err(SendError::TooManyInFlight);
        }
        let id = self.next_call_id();
        let req = codec::RpcRequest {
            id,
            method: Cow::Borrowed(method),
            peer: from.map(Cow::Borrowed),
            timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
            params: Cow::Borrowed(params),
        };
        self.queue_msg(&req)?;
        let (tx, rx) = crate::util::oneshot();
        self.pending.borrow_mut().insert(id, tx);
        Ok((id, rx))
    }

    /// Allocate an id for a request sent to this peer (server calls and relayed calls share
    /// the id space, so their answers can never be confused).
    pub(crate) fn next_call_id(&self) -> u64 {
        let id = self.next_call.get();
        self.next_call.set(id + 1);
        id
    }

    pub(crate) fn forget_call(&self, id: u64) {
        self.pending.borrow_mut().remove(&id);
    }

    fn complete_call(&self, id: u64, result: Result<Bytes, CallError>) {
        // An answer to an unknown id (late, after a timeout) is dropped.
        if let Some(tx) = self.pending.borrow_mut().remove(&id) {
            tx.send(result);
        }
    }

    fn run_handler(self: &Rc<Self>, id: u64, fut: HandlerFuture) {
        let mut fut = fut;
        // Fast path: most handlers finish without waiting; answer inline, no task spawned.
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
            self.respond(id, r);
            return;
        }
        self.inflight.set(self.inflight.get() + 1);
        let conn = self.clone();
        glommio::spawn_local(async move {
            let r = fut.await;
            conn.inflight.set(conn.inflight.get() - 1);
            conn.respond(id, r);
            conn.shard.flush_dirty();
        })
        .detach();
    }

    fn respond(self: &Rc<Self>, id: u64, r: Result<Bytes, crate::RpcFailure>) {
        let _ = match r {
            Ok(result) => self.queue_msg(&codec::RpcResponse {
                id,
                result: Cow::Borrowed(&result),
            }),
            Err(f) => self.send_rpc_error(id, f.code, &f.message),
        };
    }

    pub(crate) fn send_rpc_error(
        self: &Rc<Self>,
        id: u64,
        code: u16,
        message: &str,
    ) -> Result<(), SendError> {
        self.queue_msg(&codec::RpcError {
            id,
            code,
            message: Cow::Borrowed(message),
        })
    }

    /// Send Status{req, code, message} if the request asked for one or it failed.
    pub(crate) fn status(self: &Rc<Self>, req: u64, code: Code, message: &str) {
        if req != 0 || code != Code::Ok {
            let _ = self.queue_msg(&codec::Status {
                req,
                code: code.as_u16(),
                message: Cow::Borrowed(message),
            });
        }
    }

    // ---- dispatch -----------------------------------------------------------------------

    /// Handle one validated frame from the peer. `Err` closes the connection.
    fn dispatch(self: &Rc<Self>, frame: Frame<'_>) -> Result<(), (Code, &'static str)> {
        match frame {
            Frame::Ping(p) => {
                let _ = self.queue_msg(&codec::Pong {
                    nonce: p.nonce.to_native(),
                });
            }
            Frame::Pong(_) => {}
            Frame::RpcRequest(r) => {
                let id = r.id.to_native();
                match r.peer.as_ref() {
                    Some(target) => crate::topics::forward_call(self, r, target.as_str()),
                    None => self.dispatch_request(id, r.method.as_str(), r.params.as_slice()),
                }
            }
            Frame::RpcResponse(r) => {
                let id = r.id.to_native();
                if !crate::topics::relay_response(self, id, Ok(r.result.as_slice())) {
                    self.complete_call(id, Ok(Bytes::copy_from_slice(r.result.as_slice())));
                }
            }
            Frame::RpcError(e) => {
                let id = e.id.to_native();
                let code = e.code.to_native();
                if !crate::topics::relay_response(self, id, Err((code, e.message.as_str()))) {
                    self.complete_call(
                        id,
                        Err(CallError::Remote {
                            code,
                            message: e.message.as_str().to_string(),
                        }),
                    );
                }
            }
            Frame::Event(ev) if codec::validate_name(ev.name.as_str()).is_err() => {
                self.status(
                    0,
                    Code::InvalidArgument,
                    "event name must be 1 to 128 bytes, no control characters",
                );
            }
            Frame::Event(ev) => match ev.peer.as_ref() {
                Some(target) => crate::topics::direct_event(self, ev, target.as_str()),
                None => {
                    let name = ev.name.as_str();
                    let matching: Vec<Listener> = self
                        .listeners
                        .borrow()
                        .iter()
                        .filter(|(n, _)| &**n == name)
                        .map(|(_, l)| l.clone())
                        .collect();
                    for l in matching {
                        l(EventRef {
                            name,
                            payload: ev.payload.as_slice(),
                        });
                    }
                }
            },
            Frame::Broadcast(b) => {
                if self.shard.shared.opts.relay_broadcasts {
                    let msg = codec::Broadcast {
                        name: Cow::Borrowed(b.name.as_str()),
                        peer: Some(Cow::Borrowed(&self.peer_id)),
                        payload: Cow::Borrowed(b.payload.as_slice()),
                    };
                    if let Ok(frame) = self.shard.encode(&msg) {
                        self.shard.shared.broadcast_frame(frame, self.session);
                    }
                }
            }
            Frame::Close(c) => {
                self.peer_closed(c.code.to_native());
            }
            Frame::Join(_)
            | Frame::Leave(_)
            | Frame::Publish(_)
            | Frame::TopicSend(_)
            | Frame::Watch(_)
            | Frame::Unwatch(_)
            | Frame::ListPeers(_)
            | Frame::Signal(_) => crate::topics::dispatch(self, frame),
            Frame::Hello(_) => return Err((Code::BadFrame, "Hello after handshake")),
            _ => return Err((Code::BadFrame, "frame kind not accepted from clients")),
        }
        Ok(())
    }

    fn dispatch_request(self: &Rc<Self>, id: u64, method: &str, params: &[u8]) {
        if let Err(e) = codec::validate_name(method) {
            let _ = self.send_rpc_error(id, Code::InvalidArgument.as_u16(), &e.to_string());
            return;
        }
        if self.inflight.get() as usize >= self.shard.limits().max_inflight_per_conn {
            let _ = self.send_rpc_error(id, Code::Overloaded.as_u16(), "too many calls in flight");
            return;
        }
        let local = self.handlers.borrow().get(method).cloned();
        let req = || Request {
            id,
            method: method.into(),
            from: None,
            params: Bytes::copy_from_slice(params),
        };
        if let Some(h) = local {
            self.run_handler(id, h(req()));
        } else if let Some(h) = self.shard.handler(method) {
            self.run_handler(id, h(ConnectedPeer::from_conn(self.clone()), req()));
        } else {
            let _ = self.send_rpc_error(
                id,
                Code::MethodNotFound.as_u16(),
                &format!("no handler for method {method:?}"),
            );
        }
    }

    /// Dispatch every whole frame in `rx`. Returns Err to close.
    fn process(self: &Rc<Self>, rx: &mut RxBuf) -> Result<(), (Code, String)> {
        let max = self.shard.limits().max_frame_len;
        while self.is_active() {
            let pending = rx.pending();
            match codec::split_frame(pending, max) {
                Ok(Some((raw, n))) => {
                    let frame = raw.decode().map_err(|e| (e.code(), e.to_string()))?;
                    self.dispatch(frame).map_err(|(c, m)| (c, m.to_string()))?;
                    rx.start += n;
                }
                Ok(None) => {
                    if let Ok(Some(h)) = codec::Header::parse(pending, max) {
                        rx.reserve_frame(h.frame_len());
                    }
                    break;
                }
                Err(e) => return Err((e.code(), e.to_string())),
            }
        }
        if rx.start == rx.end {
            if let Some(b) = rx.buf.take() {
                self.shard.put_rx_buf(b);
            }
        }
        Ok(())
    }
}

/// Wait for the socket to drain the queue (it was full), then hand writing back to
/// `flush`.
async fn drain(conn: Rc<Conn>) {
    let r = poll_fn(|cx| {
        let out = conn.out.borrow();
        let Some(front) = out.frames.front() else {
            return Poll::Ready(Ok(0));
        };
        conn.stream.borrow_mut().poll_write(cx, front)
    })
    .await;
    conn.draining.set(false);
    match r {
        Ok(0) => {}
        Ok(n) => {
            conn.out.borrow_mut().consume(n);
            // The socket took data: the vectored path writes the rest, or finds the socket
            // full again and spawns a fresh drainer.
            conn.flush();
        }
        Err(_) => {
            let mut out = conn.out.borrow_mut();
            out.frames.clear();
            out.bytes = 0;
        }
    }
}

/// Outcome of the handshake.
pub(crate) struct Handshaken {
    pub conn: Rc<Conn>,
    pub rx: RxBuf,
}

/// Serve one accepted socket from handshake to close.
pub(crate) async fn serve(shard: Rc<Shard>, stream: Stream) {
    let fd = stream.fd();
    let stream = RefCell::new(stream);
    let mut rx = RxBuf::default();
    let timeout = shard.shared.opts.handshake_timeout;
    let hs = glommio::timer::timeout(timeout, async {
        Ok(crate::handshake::run(&shard, &stream, &mut rx).await)
    })
    .await;
    let accepted = match hs {
        Ok(Some(a)) => a,
        Ok(None) => {
            shard.shared.connection_ended();
            return;
        }
        Err(_) => {
            crate::handshake::reject(
                &shard,
                fd,
                Code::HandshakeTimeout,
                "no Hello before the handshake deadline",
            );
            shard.shared.connection_ended();
            return;
        }
    };
    let Handshaken { conn, mut rx } =
        crate::handshake::register(&shard, stream.into_inner(), rx, accepted);
    // The bytes after Hello (a client may pipeline its first requests) are dispatched
    // here, after on_connection ran, so handlers registered there see them.
    read_loop(&conn, &mut rx).await;
    // Tearing down may have queued frames to other peers (presence leaves, PeerGone for
    // relayed calls): send them now, not at this shard's next unrelated flush.
    conn.shard.flush_dirty();
    linger(&conn).await;
    conn.state.set(ConnState::Closed);
    stream::shutdown(fd);
}

async fn read_loop(conn: &Rc<Conn>, rx: &mut RxBuf) {
    loop {
        if let Err((code, reason)) = conn.process(rx) {
            conn.close(code, &reason);
        }
        conn.shard.flush_dirty();
        if !conn.is_active() {
            return;
        }
        let r = poll_fn(|cx| {
            let r = poll_fill(&conn.stream, rx, &conn.shard, cx);
            if r.is_pending() {
                if !conn.is_active() {
                    // Closed from elsewhere while we were about to wait.
                    return Poll::Ready(Ok(0));
                }
                *conn.reader_waker.borrow_mut() = Some(cx.waker().clone());
            }
            r
        })
        .await;
        conn.reader_waker.borrow_mut().take();
        if !conn.is_active() {
            return;
        }
        match r {
            Ok(0) => {
                conn.peer_closed(Code::PeerGone.as_u16());
                return;
            }
            Ok(_) => conn.rx_seen.set(true),
            Err(_) => {
                conn.peer_closed(Code::PeerGone.as_u16());
                return;
            }
        }
    }
}

/// After Close: keep reading (and discarding) until the peer closes or LINGER passes, so
/// the kernel does not answer unread input with a reset that destroys our Close frame.
async fn linger(conn: &Rc<Conn>) {
    let mut rx = RxBuf::default();
    let _ = glommio::timer::timeout(LINGER, async {
        loop {
            let r = poll_fn(|cx| poll_fill(&conn.stream, &mut rx, &conn.shard, cx)).await;
            if let Some(b) = rx.buf.take() {
                conn.shard.put_rx_buf(b);
            }
            rx.start = 0;
            rx.end = 0;
            match r {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            }
        }
    })
    .await;
}
