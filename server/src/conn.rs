//! [`Conn`]: one handshaken peer connection on its shard, and its [`ConnState`].
//!
//! The connection's life, one transition function ([`Conn::transition`]), no other flags:
//!
//! ```text
//! Active --close(code) / peer went away--> Closing{code} --teardown--> Gone{code} --reader ends--> Closed{code}
//! ```
//!
//! - `Closing`: no frame is accepted in or out any more (except our Close, already queued);
//!   the session waits in `Local::closing` for the shard to tear it down.
//! - `Gone`: torn down (`lifecycle::teardown`): deregistered everywhere, pending calls
//!   failed with PeerGone, callbacks run. The socket may still linger to deliver our Close.
//! - `Closed`: the reader has ended and the socket is shut.
//!
//! A drain (docs/PROTOCOL.md §6.10) runs beside that, in [`Drain`]: an active peer is
//! told to finish (`Notified`), and once its Close{reconnect} arrived (`Finishing`) and its
//! calls are answered, it is closed with `reconnect`.
//!
//! The receive side is in `inbound`, the send side in `outbound`, what a closing connection
//! undoes in `lifecycle`.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use peerd_codec::{self as codec, Code};

use crate::auth::{Action, Grant, Permissions};
use crate::error::{CallError, Refused, SendError};
use crate::frame::Frame;
use crate::inbound::{RingRecv, RxBuf};
use crate::local::Local;
use crate::metrics::SlowConsumer;
use crate::outbound::Outbound;
use crate::rate::Throttle;
use crate::request::{EventRef, HandlerFuture, Request};
use crate::util::{oneshot, OneshotRx, OneshotTx};

/// Where a connection is in its life (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    Active,
    Closing { code: u16 },
    Gone { code: u16 },
    Closed { code: u16 },
}

impl ConnState {
    fn rank(self) -> u8 {
        match self {
            ConnState::Active => 0,
            ConnState::Closing { .. } => 1,
            ConnState::Gone { .. } => 2,
            ConnState::Closed { .. } => 3,
        }
    }

    /// The close code, once closing.
    pub fn code(self) -> Option<u16> {
        match self {
            ConnState::Active => None,
            ConnState::Closing { code } | ConnState::Gone { code } | ConnState::Closed { code } => {
                Some(code)
            }
        }
    }
}

/// Where an active connection is in a drain (docs/PROTOCOL.md §6.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drain {
    /// Not draining.
    No,
    /// Sent Status{0, reconnect}: waiting for the client's Close{reconnect}.
    Notified,
    /// The client's Close{reconnect} arrived: nothing but answers is acted on any more;
    /// closed with `reconnect` once the peer's calls are answered.
    Finishing,
}

pub(crate) type LocalHandler = Rc<dyn Fn(Request) -> HandlerFuture>;
pub(crate) type Listener = Rc<dyn Fn(EventRef<'_>)>;
type DisconnectCallback = Box<dyn FnOnce(u16)>;
type Waiter = OneshotTx<Result<Bytes, CallError>>;

/// Topics and watches this peer holds, for limits and for cleanup when it goes.
///
/// Boxed on first use: two hash sets are 96 bytes inline, and a peer that never joins or
/// watches anything (an idle connection, a pure RPC client) should not pay them.
#[derive(Default)]
pub(crate) struct PeerTopics(Option<Box<TopicsHeld>>);

#[derive(Default)]
pub(crate) struct TopicsHeld {
    pub joined: HashSet<Arc<str>>,
    pub watch_global: bool,
    pub watched: HashSet<Arc<str>>,
}

impl PeerTopics {
    /// What the peer holds, if it ever joined or watched anything.
    pub fn held(&self) -> Option<&TopicsHeld> {
        self.0.as_deref()
    }

    /// What the peer holds, allocated on first use.
    pub fn held_mut(&mut self) -> &mut TopicsHeld {
        self.0.get_or_insert_with(Default::default)
    }

    /// Stop holding `topic`; the name as held, if the peer was a member.
    pub fn leave(&mut self, topic: &str) -> Option<Arc<str>> {
        self.0.as_mut()?.joined.take(topic)
    }

    /// Every topic joined, leaving none (teardown).
    pub fn take_joined(&mut self) -> HashSet<Arc<str>> {
        self.0
            .as_mut()
            .map(|h| std::mem::take(&mut h.joined))
            .unwrap_or_default()
    }

    /// The global watch flag and every topic watch, leaving none (teardown).
    pub fn take_watches(&mut self) -> (bool, HashSet<Arc<str>>) {
        self.0.as_mut().map_or_else(Default::default, |h| {
            (
                std::mem::take(&mut h.watch_global),
                std::mem::take(&mut h.watched),
            )
        })
    }

    /// Whether the peer is a member of `topic`.
    pub fn is_member(&self, topic: &str) -> bool {
        self.held().is_some_and(|h| h.joined.contains(topic))
    }
}

/// A connected, handshaken peer.
pub(crate) struct Conn {
    pub session: u64,
    pub peer_id: Arc<str>,
    pub local: Rc<Local>,
    pub out: Rc<Outbound>,
    state: Cell<ConnState>,
    /// The session's protocol version (Welcome's): a v1 client knows no drain notice.
    pub version: u16,
    drain: Cell<Drain>,
    /// The heartbeat tick (`Local::tick`) at which bytes last arrived.
    pub last_rx_tick: Cell<u32>,
    /// The tick by which the frame being received must be complete (None: no partial
    /// frame). Set when a frame starts, not moved by each byte of it.
    pub frame_deadline: Cell<Option<u32>>,
    /// Bytes received and not yet dispatched. Here rather than in the reader task, so that
    /// tearing the connection down frees the buffer at once instead of whenever the reader
    /// next runs (a shard cutting peers over its memory budget counts on that).
    pub rx: RefCell<RxBuf>,
    /// Bytes of receive buffer the reader holds (for the shard's memory budget); 32 bits,
    /// packed with the other small fields (a buffer holds at most about a frame, and
    /// `max_frame_len` is a u32; saturates rather than wraps).
    rx_held: Cell<u32>,
    /// The reader, while it waits for the socket; woken when the connection closes.
    pub reader_waker: Cell<Option<Waker>>,
    /// Its receive through the shard's ring, when it reads that way (`receiver`).
    pub ring: RingRecv,
    /// Server-side handler calls running for this peer.
    pub inflight: Cell<u32>,
    /// Peer-to-peer calls this peer made that still wait for their outcome.
    pub relayed_calls: Cell<u32>,
    next_call: Cell<u64>,
    /// What only some peers use; allocated on first use (see [`Extras`]).
    extras: RefCell<Option<Box<Extras>>>,
    /// The peer's rate limiter, when the server has rate limits (boxed: most servers do
    /// not, and their peers pay one pointer).
    pub throttle: Option<Box<Throttle>>,
    pub topics: RefCell<PeerTopics>,
}

/// The parts of a peer that only an embedding application's per-peer code or the server's
/// own calls use: most peers of the stock server never touch them, and held inline they
/// were a third of an idle connection's `Conn` (two hash maps and two vectors, 176 bytes),
/// so they are boxed on first use.
#[derive(Default)]
struct Extras {
    /// Server -> peer calls waiting for their answer.
    pending: HashMap<u64, Waiter>,
    handlers: HashMap<Box<str>, LocalHandler>,
    listeners: Vec<(Box<str>, Listener)>,
    on_disconnect: Vec<DisconnectCallback>,
    /// What the peer's credentials allow and until when; `None` (anonymous, or credentials
    /// that restrict nothing and never expire) allows everything for ever. Here, boxed
    /// inside the boxed extras, so that a peer without a token pays nothing for it.
    auth: Option<Box<SessionAuth>>,
}

/// The part of a [`Grant`] a session keeps: its deadline and its permissions. The
/// permissions (seven pattern lists, some 300 bytes) are boxed again, so that a token that
/// only expires costs its peer 24 bytes here.
struct SessionAuth {
    expires_at: Option<SystemTime>,
    permissions: Option<Box<Permissions>>,
}

impl Conn {
    /// Bytes of receive buffer the reader holds (for the shard's memory budget).
    pub fn rx_held(&self) -> usize {
        self.rx_held.get() as usize
    }

    /// Record what the receive buffer holds now.
    pub fn set_rx_held(&self, n: usize) {
        self.rx_held.set(u32::try_from(n).unwrap_or(u32::MAX));
    }

    pub fn new(
        local: Rc<Local>,
        out: Rc<Outbound>,
        session: u64,
        peer_id: Arc<str>,
        version: u16,
    ) -> Conn {
        let throttle = local
            .limits()
            .rate_limit
            .as_ref()
            .map(|l| Box::new(Throttle::new(l, std::time::Instant::now())));
        Conn {
            last_rx_tick: Cell::new(local.tick.get()),
            frame_deadline: Cell::new(None),
            rx: RefCell::new(RxBuf::default()),
            rx_held: Cell::new(0),
            session,
            peer_id,
            local,
            out,
            state: Cell::new(ConnState::Active),
            version,
            drain: Cell::new(Drain::No),
            reader_waker: Cell::new(None),
            ring: RingRecv::default(),
            inflight: Cell::new(0),
            relayed_calls: Cell::new(0),
            next_call: Cell::new(1),
            extras: RefCell::new(None),
            throttle,
            topics: RefCell::new(PeerTopics::default()),
        }
    }

    pub fn state(&self) -> ConnState {
        self.state.get()
    }

    pub fn is_active(&self) -> bool {
        self.state.get() == ConnState::Active
    }

    /// The one way a connection changes state: only forward along the module doc's
    /// diagram (a state may be skipped, never revisited). Returns whether it moved.
    pub fn transition(&self, to: ConnState) -> bool {
        if to.rank() <= self.state.get().rank() {
            return false;
        }
        self.state.set(to);
        true
    }

    // ---- outbound ----------------------------------------------------------------------

    /// Queue a frame; it is written at the shard's next flush. Past the outbound limit the
    /// peer is closed as a slow consumer and the frame is dropped.
    pub fn queue(&self, frame: &Frame) -> Result<(), SendError> {
        if !self.is_active() {
            return Err(SendError::Closed);
        }
        if self.out.push(frame).is_err() {
            tracing::warn!(
                peer = %self.peer_id,
                session = self.session,
                queued = self.out.charged(),
                "closing slow consumer: outbound queue limit exceeded"
            );
            self.local.metrics.slow_consumer(SlowConsumer::QueueLimit);
            self.close(Code::SlowConsumer, "outbound queue limit exceeded");
            return Err(SendError::Closed);
        }
        self.local
            .metrics
            .frame_out(frame.kind(), frame.peerd_len());
        Ok(())
    }

    /// Encode and queue a message.
    pub fn queue_msg<M: codec::Encode>(&self, msg: &M) -> Result<(), SendError> {
        let frame = self.local.encode(msg)?;
        self.queue(&frame)
    }

    /// Send Status{req, code, message} if the request asked for one (req != 0) or failed.
    pub fn status(&self, req: u64, code: Code, message: &str) {
        if req != 0 || code != Code::Ok {
            let _ = self.queue_msg(&codec::Status {
                req,
                code: code.as_u16(),
                message: Cow::Borrowed(message),
            });
        }
    }

    pub fn send_rpc_error(&self, id: u64, code: u16, message: &str) {
        let _ = self.queue_msg(&codec::RpcError {
            id,
            code,
            message: Cow::Borrowed(message),
        });
    }

    // ---- drain (docs/PROTOCOL.md §6.10) ---------------------------------------------------

    pub fn drain(&self) -> Drain {
        self.drain.get()
    }

    /// Ask the peer to finish: Status{0, reconnect}. A v1 client does not know the notice;
    /// it is left to the drain's grace, at whose end it gets Close{shutdown}. Returns whether
    /// the notice went out.
    pub fn notify_drain(&self) -> bool {
        if !self.is_active() || self.drain.get() != Drain::No || self.version < 2 {
            return false;
        }
        self.drain.set(Drain::Notified);
        self.status(
            0,
            Code::Reconnect,
            "server draining: send Close{reconnect}, then reconnect",
        );
        true
    }

    /// The client's Close{reconnect}: it sends nothing but answers from now on. Only after
    /// our notice; a Close{reconnect} out of the blue is an ordinary close.
    pub fn client_finished(&self) -> bool {
        if self.drain.get() != Drain::Notified {
            return false;
        }
        self.drain.set(Drain::Finishing);
        self.finish_drain_if_idle();
        true
    }

    /// Close with `reconnect` once a finishing peer has no call left waiting: its handlers
    /// answered and its calls to other peers came back. Called when it finished and each
    /// time one of those ends.
    pub fn finish_drain_if_idle(&self) {
        if self.drain.get() == Drain::Finishing
            && self.inflight.get() == 0
            && self.relayed_calls.get() == 0
        {
            self.close(
                Code::Reconnect,
                "server draining: everything you sent was answered; reconnect",
            );
        }
    }

    // ---- close ---------------------------------------------------------------------------

    /// Close with `code`: queue Close{code, reason} (after what is queued, or alone for a
    /// slow consumer), and hand the connection to the shard for teardown. Idempotent. On a
    /// WebSocket the WebSocket Close that follows carries the status mapped from `code`.
    pub fn close(&self, code: Code, reason: &str) {
        let status = peerd_ws::close::status_for(code.as_u16());
        self.close_with(code, status, reason);
    }

    /// Close because the WebSocket layer refused what the peer sent (a protocol error, a
    /// text message, a message too large): the WebSocket Close carries `status`, the
    /// peerd Close before it `code`.
    pub fn close_websocket(&self, code: Code, status: u16, reason: &str) {
        self.close_with(code, status, reason);
    }

    fn close_with(&self, code: Code, ws_status: u16, reason: &str) {
        if !self.transition(ConnState::Closing {
            code: code.as_u16(),
        }) {
            return;
        }
        tracing::debug!(peer = %self.peer_id, session = self.session, code = code.name(), ws_status, reason, "closing connection");
        let frame = self
            .local
            .encode(&codec::Close {
                code: code.as_u16(),
                reason: Cow::Borrowed(reason),
            })
            .ok();
        if let Some(f) = &frame {
            self.local.metrics.frame_out(f.kind(), f.peerd_len());
        }
        self.out.push_last(
            frame.as_ref(),
            code == Code::SlowConsumer,
            Some((ws_status, reason)),
        );
        self.after_close();
    }

    /// The peer is gone (end of stream, error, or its own Close): close without sending a
    /// Close of our own, except the WebSocket Close that answers the peer's (`ws_echo`:
    /// the status it sent, RFC 6455 §5.5.1).
    pub fn peer_closed(&self, code: u16, ws_echo: Option<u16>) {
        if self.transition(ConnState::Closing { code }) {
            tracing::debug!(peer = %self.peer_id, session = self.session, code = Code::describe(code), "peer closed");
            self.out.push_last(None, false, ws_echo.map(|s| (s, "")));
            self.after_close();
        }
    }

    fn after_close(&self) {
        self.local.closing(self.session);
        if let Some(w) = self.reader_waker.take() {
            w.wake();
        }
    }

    /// Closing -> Gone: drop the peer's calls (every waiting call resolves to PeerGone),
    /// handlers and listeners, and return the disconnect callbacks to run. `None` if the
    /// connection was not closing (already torn down).
    pub fn take_for_teardown(&self) -> Option<(u16, Vec<DisconnectCallback>)> {
        let ConnState::Closing { code } = self.state.get() else {
            return None;
        };
        self.transition(ConnState::Gone { code });
        // Dropping the pending waiters resolves every waiting call to PeerGone.
        let extras = self.extras.borrow_mut().take();
        Some((code, extras.map(|e| e.on_disconnect).unwrap_or_default()))
    }

    /// The peer's [`Extras`], allocated on first use.
    fn extras(&self) -> std::cell::RefMut<'_, Extras> {
        std::cell::RefMut::map(self.extras.borrow_mut(), |e| {
            &mut **e.get_or_insert_with(Default::default)
        })
    }

    /// A peer-to-peer call of this peer was forwarded: it holds a slot until its outcome.
    pub fn relay_started(&self) {
        self.relayed_calls.set(self.relayed_calls.get() + 1);
        self.local.relays_changed(true, 1);
    }

    /// The outcome of one of this peer's relayed calls came back (or, with `all`, the peer
    /// is gone and no longer waits for any).
    pub fn relay_ended(&self, all: bool) {
        let n = if all { self.relayed_calls.get() } else { 1 }.min(self.relayed_calls.get());
        self.relayed_calls.set(self.relayed_calls.get() - n);
        self.local.relays_changed(false, n as usize);
        if !all {
            self.finish_drain_if_idle();
        }
    }

    pub fn add_on_disconnect(&self, f: DisconnectCallback) {
        match self.state.get() {
            ConnState::Active | ConnState::Closing { .. } => self.extras().on_disconnect.push(f),
            ConnState::Gone { code } | ConnState::Closed { code } => f(code),
        }
    }

    // ---- authorization ---------------------------------------------------------------------

    /// Take what credentials granted (at the handshake, or a Refresh's new ones, which
    /// replace the old entirely). A grant that neither expires nor restricts allocates
    /// nothing.
    pub fn set_auth(&self, grant: Grant) {
        let auth = (grant.expires_at.is_some() || grant.permissions.is_some()).then(|| {
            Box::new(SessionAuth {
                expires_at: grant.expires_at,
                permissions: grant.permissions.map(Box::new),
            })
        });
        match auth {
            Some(a) => self.extras().auth = Some(a),
            None => {
                if let Some(e) = self.extras.borrow_mut().as_mut() {
                    e.auth = None;
                }
            }
        }
    }

    /// Whether the session's credentials have expired by `now`.
    pub fn auth_expired(&self, now: SystemTime) -> bool {
        let extras = self.extras.borrow();
        let deadline = extras
            .as_ref()
            .and_then(|e| e.auth.as_ref())
            .and_then(|a| a.expires_at);
        deadline.is_some_and(|d| d <= now)
    }

    /// Whether the session's credentials allow `action`. An expired session is closed
    /// here rather than at the next heartbeat tick, so nothing is done on its behalf after
    /// its deadline.
    pub fn permits(&self, action: &Action<'_>) -> Result<(), Refused> {
        let extras = self.extras.borrow();
        let Some(auth) = extras.as_ref().and_then(|e| e.auth.as_ref()) else {
            return Ok(());
        };
        if auth.expires_at.is_some_and(|d| d <= SystemTime::now()) {
            return Err(Refused::close(
                Code::TokenExpired,
                "token expired: no Refresh before its exp",
            ));
        }
        match &auth.permissions {
            Some(p) => p.check(action).map_err(|d| Refused::new(d.code, d.reason)),
            None => Ok(()),
        }
    }

    // ---- RPC and events -----------------------------------------------------------------

    pub fn add_handler(&self, method: &str, h: LocalHandler) {
        if self.is_active() {
            self.extras().handlers.insert(method.into(), h);
        }
    }

    pub fn handler(&self, method: &str) -> Option<LocalHandler> {
        let extras = self.extras.borrow();
        extras.as_ref()?.handlers.get(method).cloned()
    }

    pub fn add_listener(&self, name: &str, l: Listener) {
        if self.is_active() {
            self.extras().listeners.push((name.into(), l));
        }
    }

    /// Listeners for event `name` (cloned out, so a listener may register others).
    pub fn listeners(&self, name: &str) -> Vec<Listener> {
        let extras = self.extras.borrow();
        let Some(e) = extras.as_ref() else {
            return Vec::new();
        };
        e.listeners
            .iter()
            .filter(|(n, _)| &**n == name)
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Start a server -> peer call: queue the request now, return the id and receiver.
    pub fn start_call(
        &self,
        method: &str,
        params: &[u8],
        timeout: Duration,
    ) -> Result<(u64, OneshotRx<Result<Bytes, CallError>>), SendError> {
        if !self.is_active() {
            return Err(SendError::Closed);
        }
        let waiting = self.extras.borrow().as_ref().map_or(0, |e| e.pending.len());
        if waiting >= self.local.limits().max_inflight_per_conn {
            return Err(SendError::TooManyInFlight);
        }
        let id = self.next_call_id();
        self.queue_msg(&codec::RpcRequest {
            id,
            method: Cow::Borrowed(method),
            peer: None,
            timeout_ms: crate::config::millis_u32(timeout),
            params: Cow::Borrowed(params),
        })?;
        let (tx, rx) = oneshot();
        self.extras().pending.insert(id, tx);
        Ok((id, rx))
    }

    /// Allocate an id for a request sent to this peer (server calls and relayed calls share
    /// the id space, so their answers can never be confused).
    pub fn next_call_id(&self) -> u64 {
        let id = self.next_call.get();
        self.next_call.set(id + 1);
        id
    }

    pub fn forget_call(&self, id: u64) {
        if let Some(e) = self.extras.borrow_mut().as_mut() {
            e.pending.remove(&id);
        }
    }

    /// Resolve a server -> peer call. An answer to an unknown id (late, after a timeout) is
    /// dropped.
    pub fn complete_call(&self, id: u64, result: Result<Bytes, CallError>) {
        let waiter = self
            .extras
            .borrow_mut()
            .as_mut()
            .and_then(|e| e.pending.remove(&id));
        if let Some(tx) = waiter {
            tx.send(result);
        }
    }
}
#[cfg(test)]
mod size_tests {
    /// Every connection carries a `Conn` and an `Outbound` (each in an `Rc`) for its whole
    /// life, so their sizes are most of an idle connection's memory (docs/ARCHITECTURE.md,
    /// "An idle connection's memory"). glibc serves them from 16-byte size classes: Conn at 248
    /// B and Outbound at 216 B each sit one class below where they were before the fields
    /// were packed. A field added to either should be a decision, not an accident.
    #[test]
    fn an_idle_connections_structs_stay_in_their_size_classes() {
        assert!(std::mem::size_of::<super::Conn>() <= 248);
        assert!(std::mem::size_of::<crate::outbound::Outbound>() <= 216);
        assert!(std::mem::size_of::<super::RingRecv>() <= 16);
    }
}
