//! `Inner`: the state a peer's threads share (the user's handle, the supervisor, the
//! dispatcher, the deadline timer), and the operations on it that more than one of them
//! needs: the live link, sending, starting requests, state changes, closing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerd_codec::{Code, Encode, Limits};

use crate::dispatch::{self, Control, Registry, Work};
use crate::error::{CallError, RequestError, SendFailure};
use crate::link::Link;
use crate::membership::{TopicState, WatchKey};
use crate::options::PeerOptions;
use crate::pending::{Deadlines, PendingTable, WaitError, Waiter};
use crate::socket::Socket;
use crate::state::{CloseInfo, Initiator, State, StateCell};
use crate::transport::Target;

/// What the last Welcome said about the session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The protocol version of the session (Refresh needs 2).
    pub(crate) version: u16,
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
    /// Mirror of `closed` for lock-free checks by the dispatcher's blocking sends (the
    /// registry holds a clone).
    flag: Arc<AtomicBool>,
    /// Threads inside `sleep`, counted under the lock: a test waits for this instead of
    /// sleeping, and then knows its `close` wakes a thread that is really waiting.
    #[cfg(test)]
    sleepers: std::sync::atomic::AtomicUsize,
}

impl Gate {
    fn new() -> Self {
        Gate {
            closed: Mutex::new(false),
            cv: Condvar::new(),
            flag: Arc::new(AtomicBool::new(false)),
            #[cfg(test)]
            sleepers: Default::default(),
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
        #[cfg(test)]
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while !*c {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            c = self.cv.wait_timeout(c, left).unwrap().0;
        }
        #[cfg(test)]
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        *c
    }
}

/// Everything the user's handle, the reader/supervisor thread, the dispatcher thread and
/// the deadline thread share. `Arc`/locks because these really are different threads;
/// the hot paths (write, complete a call) take one short uncontended lock each.
pub(crate) struct Inner {
    pub(crate) opts: PeerOptions,
    /// The credentials the next Hello presents: `opts.credentials` until
    /// `Peer::refresh_token` replaces them.
    pub(crate) credentials: Mutex<Option<Vec<u8>>>,
    /// Where to connect, for the first connection and every reconnect.
    pub(crate) target: Target,
    pub(crate) state: StateCell,
    pub(crate) gate: Gate,
    /// The live connection's write side; `None` while not Active.
    pub(crate) link: Mutex<Option<Arc<Link>>>,
    /// The last Welcome (kept while reconnecting: its token and id are presented again).
    pub(crate) session: Mutex<Option<Arc<Session>>>,
    /// The socket of a connect/handshake in progress, so `disconnect()` can interrupt it.
    pub(crate) connecting: Mutex<Option<Socket>>,
    pub(crate) last_close: Mutex<Option<CloseInfo>>,
    /// One counter for RPC ids, req ids and ping nonces: ids never collide across tables.
    next_id: AtomicU64,
    pub(crate) calls: Arc<PendingTable<Bytes, CallError>>,
    pub(crate) requests: Arc<PendingTable<Reply, RequestError>>,
    /// Ping nonce -> when the Pong arrived.
    pub(crate) pings: Arc<PendingTable<Instant, RequestError>>,
    pub(crate) resync: Mutex<HashMap<u64, Resync>>,
    pub(crate) deadlines: Arc<Deadlines>,
    /// Handlers and listeners, shared with the dispatcher thread.
    pub(crate) registry: Arc<Registry>,
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
    /// The state of a peer that has not connected yet.
    pub(crate) fn new(options: PeerOptions, target: Target) -> Arc<Inner> {
        let (work_tx, work_rx) = flume::bounded(options.dispatch_queue.max(1));
        let (ctl_tx, ctl_rx) = flume::unbounded();
        let gate = Gate::new();
        let closed = gate.flag.clone();
        Arc::new(Inner {
            credentials: Mutex::new(options.credentials.clone()),
            opts: options,
            target,
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
            registry: Arc::new(Registry::new(closed)),
            topics: Mutex::new(TopicState::default()),
            work: work_tx,
            ctl: ctl_tx,
            dispatch_rx: Mutex::new(Some((work_rx, ctl_rx))),
        })
    }

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
            let registry = self.registry.clone();
            std::thread::Builder::new()
                .name("peerd-dispatch".into())
                .spawn(move || dispatch::run(registry, work, ctl))
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
            link.send_close(Code::Normal.as_u16(), reason);
            link.kill();
            self.set_last_close(CloseInfo {
                code: Some(Code::Normal.as_u16()),
                reason: reason.to_string(),
                initiator: Initiator::Client,
            });
        }
        if let Some(s) = self.connecting.lock().unwrap().take() {
            s.shutdown();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_sleep_wakes_on_close() {
        let g = Arc::new(Gate::new());
        let g2 = g.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            (g2.sleep(Duration::from_secs(30)), start.elapsed())
        });
        // The sleeper counts itself under the lock and releases the lock only by waiting:
        // once it is counted, the close below (which takes the lock) wakes a waiting thread.
        while g.sleepers.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        assert!(g.close());
        assert!(!g.close());
        let (closed, waited) = t.join().unwrap();
        assert!(closed);
        assert!(waited < Duration::from_secs(5));
        assert!(!Gate::new().sleep(Duration::from_millis(1)));
    }
}
