//! [`Peer`], the handle users hold, and `Inner`, the state its threads share.

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerd_codec::{Close, Code, Encode, Limits, Ping};

use crate::dispatch::{self, Control, Work};
use crate::error::{ClientError, RequestError, SendFailure};
use crate::events::{EventInfo, ServerError};
use crate::handshake;
use crate::link::Link;
use crate::listeners::{KeyedSinks, ListenerId, Sink, Sinks};
use crate::options::PeerOptions;
use crate::pending::{Deadlines, PendingTable, WaitError, Waiter};
use crate::rpc::Handler;
use crate::state::{CloseInfo, Initiator, State, StateCell};
use crate::supervisor;
use crate::topics::{SignalInfo, TopicMessageInfo, TopicState, WatchKey};
use crate::CallError;

/// What the last Welcome said about the session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) peer_id: String,
    pub(crate) session_id: u64,
    pub(crate) resume_token: Vec<u8>,
    pub(crate) limits: Limits,
    pub(crate) heartbeat: Duration,
}

/// The answer to a Status-confirmed request.
#[derive(Debug)]
pub(crate) enum Reply {
    Ok,
    Peers(Vec<String>),
}

/// A request the client sends on its own after a reconnect; its Status is not awaited by
/// anyone, so a failure is reported through `on_error` instead.
#[derive(Debug, Clone)]
pub(crate) enum Resync {
    Join(String),
    Watch(WatchKey),
}

/// Closed once, never reopened; sleeping on it wakes early when it closes (so a reconnect
/// backoff ends at once on `disconnect()`).
pub(crate) struct Gate {
    closed: Mutex<bool>,
    cv: Condvar,
    /// Mirror of `closed` for lock-free checks by the dispatcher's blocking sends.
    pub(crate) flag: Arc<AtomicBool>,
}

impl Gate {
    fn new() -> Self {
        Gate {
            closed: Mutex::new(false),
            cv: Condvar::new(),
            flag: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Close; true the first time.
    pub(crate) fn close(&self) -> bool {
        let mut c = self.closed.lock().unwrap();
        let first = !*c;
        *c = true;
        self.flag.store(true, Ordering::SeqCst);
        self.cv.notify_all();
        first
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.lock().unwrap()
    }

    /// Sleep up to `d`; true if the gate closed.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut c = self.closed.lock().unwrap();
        while !*c {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            c = self.cv.wait_timeout(c, left).unwrap().0;
        }
        true
    }
}

/// Everything the user's handle, the reader/supervisor thread, the dispatcher thread and
/// the deadline thread share. `Arc`/locks because these really are different threads;
/// the hot paths (write, complete a call) take one short uncontended lock each.
pub(crate) struct Inner {
    pub(crate) opts: PeerOptions,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) state: StateCell,
    pub(crate) gate: Gate,
    /// The live connection's write side; `None` while not Active.
    pub(crate) link: Mutex<Option<Arc<Link>>>,
    /// The last Welcome (kept while reconnecting: its token and id are presented again).
    pub(crate) session: Mutex<Option<Arc<Session>>>,
    /// The socket of a connect/handshake in progress, so `disconnect()` can interrupt it.
    pub(crate) connecting: Mutex<Option<TcpStream>>,
    pub(crate) last_close: Mutex<Option<CloseInfo>>,
    /// One counter for RPC ids, req ids and ping nonces: ids never collide across tables.
    next_id: AtomicU64,
    pub(crate) calls: Arc<PendingTable<Bytes, CallError>>,
    pub(crate) requests: Arc<PendingTable<Reply, RequestError>>,
    /// Ping nonce -> when the Pong arrived.
    pub(crate) pings: Arc<PendingTable<Instant, RequestError>>,
    pub(crate) resync: Mutex<HashMap<u64, Resync>>,
    pub(crate) deadlines: Arc<Deadlines>,
    pub(crate) handlers: RwLock<HashMap<String, Handler>>,
    pub(crate) events: KeyedSinks<EventInfo>,
    pub(crate) any_events: Sinks<EventInfo>,
    pub(crate) broadcasts: Sinks<EventInfo>,
    pub(crate) topic_sinks: KeyedSinks<TopicMessageInfo>,
    pub(crate) signals: Sinks<SignalInfo>,
    pub(crate) errors: Sinks<ServerError>,
    /// State listeners get (state, version) and filter out changes older than their
    /// registration (see `StateCell`).
    pub(crate) states: Sinks<(State, u64)>,
    pub(crate) topics: Mutex<TopicState>,
    /// Reader -> dispatcher, bounded: the backpressure path.
    pub(crate) work: flume::Sender<Work>,
    /// Control -> dispatcher, unbounded but low-volume (state changes, watcher attach and
    /// detach), so that `disconnect()` from inside a handler can never block on a full
    /// queue that only its own thread drains.
    pub(crate) ctl: flume::Sender<Control>,
    dispatch_rx: Mutex<Option<(flume::Receiver<Work>, flume::Receiver<Control>)>>,
}

impl Inner {
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn session(&self) -> Option<Arc<Session>> {
        self.session.lock().unwrap().clone()
    }

    /// Change state and tell the dispatcher (which runs `on_state` listeners).
    pub(crate) fn set_state(&self, s: State) {
        if let Some(v) = self.state.set(s) {
            self.notify_state(s, v);
        }
    }

    pub(crate) fn transition_state(&self, from: State, to: State) -> bool {
        let changed = self.state.transition(from, to);
        if let Some(v) = changed {
            self.notify_state(to, v);
        }
        changed.is_some()
    }

    fn notify_state(&self, s: State, version: u64) {
        tracing::debug!(state = %s, "peerd-client state");
        let _ = self.ctl.send(Control::State(s, version));
        if s == State::Closed {
            let _ = self.ctl.send(Control::Stop);
        }
    }

    pub(crate) fn set_last_close(&self, info: CloseInfo) {
        *self.last_close.lock().unwrap() = Some(info);
    }

    pub(crate) fn current_link(&self) -> Result<Arc<Link>, SendFailure> {
        if let Some(l) = self.link.lock().unwrap().as_ref() {
            return Ok(l.clone());
        }
        if self.gate.is_closed() {
            Err(SendFailure::Closed)
        } else {
            Err(SendFailure::NotConnected)
        }
    }

    /// Write one frame on the live connection.
    pub(crate) fn send<M>(&self, msg: &M) -> Result<(), SendFailure>
    where
        M: Encode,
    {
        self.current_link()?.send(msg)
    }

    /// Start the dispatcher thread once. It is started before the first connect so that
    /// state listeners see Connecting and handlers see the very first frame.
    pub(crate) fn ensure_dispatcher(self: &Arc<Self>) {
        let rx = self.dispatch_rx.lock().unwrap().take();
        if let Some((work, ctl)) = rx {
            let inner = self.clone();
            std::thread::Builder::new()
                .name("peerd-dispatch".into())
                .spawn(move || dispatch::run(inner, work, ctl))
                .expect("spawn peerd-dispatch thread");
        }
    }

    /// Fail everything waiting on the connection that just ended.
    pub(crate) fn fail_pending(&self) {
        self.calls.fail_all();
        self.requests.fail_all();
        self.pings.fail_all();
        self.resync.lock().unwrap().clear();
    }

    /// Write the request `build` makes for a fresh id, with its waiter registered in
    /// `table` (see [`Waiter`]: the one protocol every request kind follows).
    pub(crate) fn start<V, E, M>(
        &self,
        table: &Arc<PendingTable<V, E>>,
        timeout: Duration,
        build: impl FnOnce(u64) -> M,
    ) -> Result<Waiter<V, E>, E>
    where
        V: Send + 'static,
        E: WaitError + Send + 'static,
        M: Encode,
    {
        let link = self.current_link()?;
        Waiter::start(table, &*link, self.next_id(), timeout, build)
    }

    /// A started request as a future: its error at once, or its outcome. Takes the
    /// [`start`](Self::start) result rather than the message, so the future captures
    /// neither the message type nor its borrows (and so is `'static`).
    pub(crate) fn wait_async<V, E>(
        &self,
        started: Result<Waiter<V, E>, E>,
    ) -> impl Future<Output = Result<V, E>> + Send + 'static
    where
        V: Send + 'static,
        E: WaitError + Send + 'static,
    {
        let wait = started.map(|w| w.wait_async(&self.deadlines));
        async move { wait?.await }
    }

    /// Send a Status-confirmed request and wait for its Status (or PeerList).
    pub(crate) fn request<M>(
        &self,
        timeout: Duration,
        build: impl FnOnce(u64) -> M,
    ) -> Result<Reply, RequestError>
    where
        M: Encode,
    {
        self.start(&self.requests, timeout, build)?.wait()
    }

    /// `disconnect()`: idempotent; sends Close{Normal}, shuts the socket, fails pending
    /// waits, state Closed. Does not join threads, so it is safe from inside a handler.
    pub(crate) fn shutdown(&self, reason: &str) {
        if !self.gate.close() {
            return;
        }
        let link = self.link.lock().unwrap().take();
        if let Some(link) = link {
            let _ = link.send(&Close {
                code: Code::Normal.as_u16(),
                reason: reason.into(),
            });
            link.kill();
            self.set_last_close(CloseInfo {
                code: Some(Code::Normal.as_u16()),
                reason: reason.to_string(),
                initiator: Initiator::Client,
            });
        }
        if let Some(s) = self.connecting.lock().unwrap().take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.fail_pending();
        self.deadlines.stop();
        self.set_state(State::Closed);
    }

    /// The end when the connection ends for good without `disconnect()` (replaced,
    /// reconnect disabled or given up).
    pub(crate) fn finish(&self) {
        self.gate.close();
        self.fail_pending();
        self.deadlines.stop();
        self.set_state(State::Closed);
    }
}

/// Owned by every [`Peer`] clone; dropping the last one disconnects. The background
/// threads hold `Inner`, not this, so they do not keep the connection alive by themselves.
struct PeerHandle {
    inner: Arc<Inner>,
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        self.inner.shutdown("client dropped");
    }
}

/// A connection to a peerd server: RPC both ways, events, topics, presence, signaling, with
/// automatic reconnect.
///
/// Cheap to clone (`Arc`), `Send + Sync`: use it from any thread. Dropping the last clone
/// disconnects. A handler that needs the peer should capture a [`WeakPeer`] (from
/// [`Peer::downgrade`]): a strong `Peer` inside a handler is a reference cycle that keeps the
/// connection open until [`Peer::disconnect`] is called explicitly.
#[derive(Clone)]
pub struct Peer {
    h: Arc<PeerHandle>,
}

/// A non-owning reference to a [`Peer`], for use inside its own handlers.
#[derive(Clone)]
pub struct WeakPeer {
    h: Weak<PeerHandle>,
}

impl WeakPeer {
    /// The peer, if some [`Peer`] clone is still alive.
    pub fn upgrade(&self) -> Option<Peer> {
        self.h.upgrade().map(|h| Peer { h })
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("state", &self.state())
            .field("peer_id", &self.peer_id())
            .finish()
    }
}

/// Connect to `addr` and complete the handshake: returns an Active [`Peer`] or why not.
///
/// `addr` is anything [`ToSocketAddrs`] accepts (`"127.0.0.1:7000"`, `("host", 7000)`, a
/// `SocketAddr`). It is resolved once, here; reconnects try the same addresses in order.
/// The first connection is not retried: an error comes back typed by cause. Reconnect
/// (per [`PeerOptions::reconnect`]) applies once the session has been Active.
pub fn connect(
    addr: impl ToSocketAddrs + std::fmt::Debug,
    options: PeerOptions,
) -> Result<Peer, ClientError> {
    let peer = Peer::new(addr, options)?;
    peer.connect()?;
    Ok(peer)
}

impl Peer {
    /// A peer in state [`State::Idle`]: register handlers and listeners, then call
    /// [`Peer::connect`] so they see the very first frame the server sends.
    pub fn new(
        addr: impl ToSocketAddrs + std::fmt::Debug,
        options: PeerOptions,
    ) -> Result<Peer, ClientError> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| ClientError::Resolve {
                addr: format!("{addr:?}"),
                source: e,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::Resolve {
                addr: format!("{addr:?}"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            });
        }
        if let Some(id) = &options.peer_id {
            peerd_codec::validate_declared_peer_id(id)
                .map_err(|e| ClientError::InvalidOptions(format!("peer_id {id:?}: {e}")))?;
        }
        let (work_tx, work_rx) = flume::bounded(options.dispatch_queue.max(1));
        let (ctl_tx, ctl_rx) = flume::unbounded();
        let gate = Gate::new();
        let closed = gate.flag.clone();
        let inner = Arc::new(Inner {
            opts: options,
            addrs,
            state: StateCell::new(),
            gate,
            link: Mutex::new(None),
            session: Mutex::new(None),
            connecting: Mutex::new(None),
            last_close: Mutex::new(None),
            next_id: AtomicU64::new(1),
            calls: Arc::new(PendingTable::new()),
            requests: Arc::new(PendingTable::new()),
            pings: Arc::new(PendingTable::new()),
            resync: Mutex::new(HashMap::new()),
            deadlines: Arc::new(Deadlines::new()),
            handlers: RwLock::new(HashMap::new()),
            events: KeyedSinks::new(closed.clone()),
            any_events: Sinks::new(closed.clone()),
            broadcasts: Sinks::new(closed.clone()),
            topic_sinks: KeyedSinks::new(closed.clone()),
            signals: Sinks::new(closed.clone()),
            errors: Sinks::new(closed.clone()),
            states: Sinks::new(closed.clone()),
            topics: Mutex::new(TopicState::default()),
            work: work_tx,
            ctl: ctl_tx,
            dispatch_rx: Mutex::new(Some((work_rx, ctl_rx))),
        });
        Ok(Peer {
            h: Arc::new(PeerHandle { inner }),
        })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.h.inner
    }

    /// Connect and handshake (Idle -> Connecting -> Negotiating -> Active), blocking.
    ///
    /// On failure the peer goes back to Idle and `connect()` may be called again. Only
    /// valid from Idle: [`ClientError::NotIdle`] otherwise.
    pub fn connect(&self) -> Result<(), ClientError> {
        let inner = self.inner();
        if !inner.transition_state(State::Idle, State::Connecting) {
            return Err(match inner.state.get() {
                State::Closed => ClientError::Closed,
                s => ClientError::NotIdle(s),
            });
        }
        inner.ensure_dispatcher();
        match handshake::establish(inner, true) {
            Ok(est) => {
                if !supervisor::install(inner, &est, false) {
                    return Err(ClientError::Closed);
                }
                supervisor::spawn(inner.clone(), est);
                Ok(())
            }
            Err(e) => {
                if inner.gate.is_closed() {
                    return Err(ClientError::Closed);
                }
                for from in [State::Connecting, State::Negotiating] {
                    inner.transition_state(from, State::Idle);
                }
                Err(e)
            }
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.inner().state.get()
    }

    /// Wait until the session is Active. `Err(Closed)` if it closed (or is Idle and nobody is
    /// connecting it), `Err(Timeout)` when `timeout` passes first.
    pub fn when_ready(&self, timeout: Duration) -> Result<(), ClientError> {
        match self.inner().state.wait_active(timeout) {
            Ok(()) => Ok(()),
            Err(Some(State::Idle)) => Err(ClientError::NotIdle(State::Idle)),
            Err(Some(_)) => Err(ClientError::Closed),
            Err(None) => Err(ClientError::Timeout),
        }
    }

    /// Call `f` with every state change from now on, on the dispatcher thread.
    pub fn on_state(&self, f: impl Fn(State) + Send + Sync + 'static) -> ListenerId {
        let id = self.new_listener_id();
        let since = Arc::new(AtomicU64::new(u64::MAX));
        let cutoff = since.clone();
        let filtered = move |(s, v): (State, u64)| {
            if v > cutoff.load(Ordering::SeqCst) {
                f(s)
            }
        };
        self.inner()
            .states
            .add(id, Sink::Callback(Arc::new(filtered)));
        // Read the version only once registered, so no change after it can be missed.
        since.store(self.inner().state.version(), Ordering::SeqCst);
        id
    }

    /// Every state change from now on, as a channel, delivered at once from the thread that
    /// makes the change (not through the dispatcher, so a slow handler cannot delay it).
    /// State is "latest wins": if the receiver is full, changes are dropped rather than
    /// blocking ([`Peer::state`] always has the current one). Drop the receiver to stop.
    pub fn state_changes(&self) -> flume::Receiver<State> {
        let (tx, rx) = self.channel();
        self.inner().state.subscribe(tx);
        rx
    }

    /// This session's peer id (declared or server-assigned); `None` before the first Welcome.
    pub fn peer_id(&self) -> Option<String> {
        self.inner().session().map(|s| s.peer_id.clone())
    }

    /// The server's id for the current (or last) session.
    pub fn session_id(&self) -> Option<u64> {
        self.inner().session().map(|s| s.session_id)
    }

    /// The limits the server announced in the last Welcome.
    pub fn limits(&self) -> Option<Limits> {
        self.inner().session().map(|s| s.limits.clone())
    }

    /// The server's heartbeat interval from the last Welcome.
    pub fn heartbeat(&self) -> Option<Duration> {
        self.inner().session().map(|s| s.heartbeat)
    }

    /// Why the last connection ended (a Close received or sent, or a transport failure).
    pub fn last_close(&self) -> Option<CloseInfo> {
        self.inner().last_close.lock().unwrap().clone()
    }

    /// Round trip of a Ping to the server.
    pub fn ping(&self, timeout: Duration) -> Result<Duration, RequestError> {
        let inner = self.inner();
        let sent = Instant::now();
        let pong = inner
            .start(&inner.pings, timeout, |nonce| Ping { nonce })?
            .wait()?;
        Ok(pong.saturating_duration_since(sent))
    }

    /// [`Peer::ping`] as a future; the Ping is sent when this is called.
    pub fn ping_async(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Duration, RequestError>> + Send + 'static {
        let inner = self.inner();
        let sent = Instant::now();
        let pong = inner.wait_async(inner.start(&inner.pings, timeout, |nonce| Ping { nonce }));
        async move { Ok(pong.await?.saturating_duration_since(sent)) }
    }

    /// Stop a listener or subscription registered with any `on*`/`subscribe*` method.
    /// False if it was not registered (or already removed).
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        let i = self.inner();
        i.events.remove(id)
            || i.any_events.remove(id)
            || i.broadcasts.remove(id)
            || i.topic_sinks.remove(id)
            || i.signals.remove(id)
            || i.errors.remove(id)
            || i.states.remove(id)
    }

    /// Close the session: sends Close{Normal}, closes the socket, fails pending calls with
    /// `ConnectionLost`, stops reconnecting; state Closed. Idempotent, non-blocking beyond
    /// the Close write, callable from handlers. Background threads exit on their own.
    pub fn disconnect(&self) {
        self.inner().shutdown("client disconnect");
    }

    /// A [`WeakPeer`] for use inside handlers (see the type's docs about cycles).
    pub fn downgrade(&self) -> WeakPeer {
        WeakPeer {
            h: Arc::downgrade(&self.h),
        }
    }

    pub(crate) fn new_listener_id(&self) -> ListenerId {
        ListenerId(self.inner().next_id())
    }

    /// A bounded channel for a subscription.
    pub(crate) fn channel<T>(&self) -> (flume::Sender<T>, flume::Receiver<T>) {
        flume::bounded(self.inner().opts.subscription_capacity.max(1))
    }

    /// The default deadline.
    pub(crate) fn default_timeout(&self) -> Duration {
        self.inner().opts.default_call_timeout
    }
}

/// Test helper: an `Inner` that never connects.
#[cfg(test)]
pub(crate) fn test_peer() -> Peer {
    Peer::new("127.0.0.1:9", PeerOptions::default()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_is_send_sync_clone() {
        fn assert<T: Send + Sync + Clone + 'static>() {}
        assert::<Peer>();
        assert::<WeakPeer>();
    }

    #[test]
    fn idle_peer_fails_requests_fast_and_disconnect_is_idempotent() {
        let p = test_peer();
        assert_eq!(p.state(), State::Idle);
        assert_eq!(p.peer_id(), None);
        assert_eq!(
            p.ping(Duration::from_secs(5)),
            Err(RequestError::NotConnected)
        );
        p.disconnect();
        p.disconnect();
        assert_eq!(p.state(), State::Closed);
        assert_eq!(p.ping(Duration::from_secs(5)), Err(RequestError::Closed));
        assert!(matches!(p.connect(), Err(ClientError::Closed)));
        assert!(matches!(
            p.when_ready(Duration::from_millis(1)),
            Err(ClientError::Closed)
        ));
    }

    #[test]
    fn invalid_declared_peer_id_is_refused_before_connecting() {
        let e = Peer::new("127.0.0.1:9", PeerOptions::new().peer_id("123")).unwrap_err();
        assert!(matches!(e, ClientError::InvalidOptions(_)), "{e}");
        let e = Peer::new("127.0.0.1:9", PeerOptions::new().peer_id("a b")).unwrap_err();
        assert!(matches!(e, ClientError::InvalidOptions(_)), "{e}");
    }

    #[test]
    fn refused_connect_is_an_io_error_and_the_peer_stays_idle() {
        // A port nobody listens on (bound, then released).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let p = Peer::new(addr, PeerOptions::default()).unwrap();
        let states = p.state_changes();
        let e = p.connect().unwrap_err();
        assert!(matches!(e, ClientError::Io { .. }), "{e}");
        assert_eq!(p.state(), State::Idle, "connect() may be retried");
        assert_eq!(
            states.try_iter().collect::<Vec<_>>(),
            vec![State::Connecting, State::Idle]
        );
    }

    #[test]
    fn a_silent_server_is_a_handshake_timeout_and_a_hangup_is_closed_during_handshake() {
        use std::io::Read;
        let opts = PeerOptions::new().handshake_timeout(Duration::from_millis(100));

        // The listen backlog completes the TCP connect; nobody ever answers the Hello.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = Peer::new(silent.local_addr().unwrap(), opts.clone()).unwrap();
        let e = p.connect().unwrap_err();
        assert!(matches!(e, ClientError::HandshakeTimeout), "{e}");
        assert_eq!(p.state(), State::Idle);

        // Reads the Hello, then hangs up without a word.
        let rude = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = Peer::new(rude.local_addr().unwrap(), opts).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = rude.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "a Hello arrived");
        });
        let e = p.connect().unwrap_err();
        server.join().unwrap();
        assert!(matches!(e, ClientError::ClosedDuringHandshake), "{e}");
    }

    #[test]
    fn unresolvable_addresses_name_the_address() {
        let e = Peer::new("no-port-here", PeerOptions::default()).unwrap_err();
        assert!(matches!(e, ClientError::Resolve { .. }), "{e}");
        assert!(e.to_string().contains("no-port-here"), "{e}");
    }

    #[test]
    fn weak_peer_does_not_keep_the_peer_alive() {
        let p = test_peer();
        let w = p.downgrade();
        assert!(w.upgrade().is_some());
        let inner = p.inner().clone();
        drop(p);
        assert!(w.upgrade().is_none());
        assert_eq!(
            inner.state.get(),
            State::Closed,
            "dropping the last handle disconnects"
        );
    }

    #[test]
    fn gate_sleep_wakes_on_close() {
        let g = Arc::new(Gate::new());
        let g2 = g.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            (g2.sleep(Duration::from_secs(30)), start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(g.close());
        assert!(!g.close());
        let (closed, waited) = t.join().unwrap();
        assert!(closed);
        assert!(waited < Duration::from_secs(5));
        assert!(!Gate::new().sleep(Duration::from_millis(1)));
    }
}
