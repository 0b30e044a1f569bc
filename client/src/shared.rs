//! `Inner`: the state a peer's threads share (the user's handle, the supervisor, the
//! dispatcher, the deadline timer), and the operations on it that more than one of them
//! needs: the live link, sending (or queueing while not connected), starting requests,
//! state changes, closing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use peerd_codec::{Code, Encode, EncodeError, Limits, DEFAULT_MAX_FRAME_LEN, HEADER_LEN};

use crate::dispatch::{self, Control, Registry, Work};
use crate::error::{CallError, RequestError, SendFailure};
use crate::link::Link;
use crate::membership::{TopicState, WatchKey};
use crate::messages::ServerError;
use crate::options::PeerOptions;
use crate::outbox::{Outbox, Pushed, Queued};
use crate::pending::{Awaiting, Deadlines, Expire, PendingTable, WaitError, Waiter};
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
    /// The live connection's write side; `None` while reconnecting, and while a new
    /// connection writes what was queued (the queue publishes it once empty). A link
    /// that is dead or half-closed (a drain) may stay here a moment: senders check
    /// [`Link::is_usable`].
    pub(crate) link: Mutex<Option<Arc<Link>>>,
    /// What is sent while not connected, for the next connection (see `outbox`).
    pub(crate) outbox: Outbox,
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
    /// This `Inner`, for the deadline timer, which expires the reconnect queue through
    /// it (a weak reference: the timer must not keep a dropped peer alive).
    me: Weak<Inner>,
}

/// Where a frame sent now goes.
enum Route {
    Link(Arc<Link>),
    Queue,
}

/// Why queued frames were not sent.
#[derive(Debug, Clone, Copy)]
enum Unsent {
    /// `reconnect_queue_timeout` ran out.
    Timeout,
    /// The new connection's frame limit is below the frame's body.
    TooLarge { max: u32 },
}

impl Inner {
    /// The state of a peer that has not connected yet.
    pub(crate) fn new(options: PeerOptions, target: Target) -> Arc<Inner> {
        let (work_tx, work_rx) = flume::bounded(options.dispatch_queue.max(1));
        let (ctl_tx, ctl_rx) = flume::unbounded();
        let gate = Gate::new();
        let closed = gate.flag.clone();
        Arc::new_cyclic(|me| Inner {
            credentials: Mutex::new(options.credentials.clone()),
            outbox: Outbox::new(&options),
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
            me: me.clone(),
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

    /// The link new frames are written on now, if there is one that takes them.
    pub(crate) fn usable_link(&self) -> Option<Arc<Link>> {
        self.link
            .lock()
            .unwrap()
            .as_ref()
            .filter(|l| l.is_usable())
            .cloned()
    }

    /// Where a frame sent now goes: the live link, the reconnect queue, or nowhere (the
    /// error says why).
    fn route(&self) -> Result<Route, SendFailure> {
        if let Some(l) = self.usable_link() {
            return Ok(Route::Link(l));
        }
        if self.gate.is_closed() {
            Err(SendFailure::Closed)
        } else if self.outbox.is_open() {
            Ok(Route::Queue)
        } else {
            Err(SendFailure::NotConnected)
        }
    }

    /// Whether a frame sent now would be written or queued; if neither, why.
    pub(crate) fn can_send(&self) -> Result<(), SendFailure> {
        self.route().map(|_| ())
    }

    /// Write one frame on the live connection, or queue it for the next one while not
    /// connected.
    pub(crate) fn send<M>(&self, msg: &M) -> Result<(), SendFailure>
    where
        M: Encode,
    {
        // Each turn either succeeds or moves on: a link that refused the frame unwritten
        // is no longer usable, and the queue says Retry only when a usable one is
        // published.
        loop {
            match self.route()? {
                Route::Link(l) => match l.send(msg) {
                    Err(SendFailure::Unusable) => continue,
                    r => return r,
                },
                Route::Queue => match self.enqueue(msg, None)? {
                    Pushed::Queued { .. } => return Ok(()),
                    Pushed::Retry => continue,
                },
            }
        }
    }

    /// Write one frame if a connection takes it now; otherwise drop it (Unwatch: the next
    /// connection has nothing to undo).
    pub(crate) fn send_if_connected<M>(&self, msg: &M)
    where
        M: Encode,
    {
        if let Some(l) = self.usable_link() {
            let _ = l.send(msg);
        }
    }

    /// Encode `msg` and put it in the reconnect queue, arming the queue's expiry timer
    /// when it was empty.
    fn enqueue<M>(
        &self,
        msg: &M,
        awaits: Option<(Arc<dyn Awaiting>, u64)>,
    ) -> Result<Pushed, SendFailure>
    where
        M: Encode,
    {
        // The last session's limit: the next one is most likely the same server's (it is
        // checked again when written).
        let max = self
            .session()
            .map_or(DEFAULT_MAX_FRAME_LEN, |s| match s.limits.max_frame_len {
                0 => DEFAULT_MAX_FRAME_LEN,
                n => n,
            });
        let mut buf = BytesMut::new();
        peerd_codec::encode(msg, &mut buf, max).map_err(SendFailure::Encode)?;
        let pushed = self.outbox.push(
            || self.usable_link().is_some(),
            buf.freeze(),
            M::KIND,
            awaits,
        )?;
        if let Pushed::Queued { arm: Some(when) } = pushed {
            self.arm_queue_expiry(when);
        }
        Ok(pushed)
    }

    fn arm_queue_expiry(&self, when: Instant) {
        let me: Weak<dyn Expire> = self.me.clone();
        self.deadlines.add(when, self.next_id(), me);
    }

    /// Write what the reconnect queue holds on `link`, in order, then publish `link` for
    /// direct sends (under the queue's lock: no send overtakes a queued one). False when
    /// the link died first: it is not published, and what is left waits for the next.
    pub(crate) fn flush_queue(&self, link: &Arc<Link>) -> bool {
        let mut written = 0usize;
        loop {
            let Some(item) = self
                .outbox
                .pop(|| *self.link.lock().unwrap() = Some(link.clone()))
            else {
                if written > 0 {
                    tracing::debug!(written, "peerd-client: reconnect queue flushed");
                }
                return true;
            };
            // Its expiry may be due without the timer having run yet.
            if item.until <= Instant::now() {
                self.unsent(vec![item], Unsent::Timeout);
                continue;
            }
            let max = link.max_send();
            if item.frame.len() - HEADER_LEN > max as usize {
                self.unsent(vec![item], Unsent::TooLarge { max });
                continue;
            }
            if let Some((table, id)) = &item.awaits {
                if !table.mark_sent(*id) {
                    continue; // Nobody waits for it any more: not sent.
                }
            }
            match link.send_encoded(&item.frame) {
                Ok(()) => written += 1,
                Err(SendFailure::Unusable) => {
                    // Nothing was written: it waits for the next connection, still first.
                    if let Some((table, id)) = &item.awaits {
                        table.mark_queued(*id);
                    }
                    if let Err(item) = self.outbox.unpop(item) {
                        if let Some((table, id)) = &item.awaits {
                            table.fail_queued(*id, SendFailure::Closed);
                        }
                    }
                    return false;
                }
                Err(e) => {
                    // Written part-way: like anything in flight when a connection drops,
                    // it may or may not have arrived; a request fails with the link
                    // (ConnectionLost), a fire-and-forget frame is gone.
                    tracing::debug!(?e, kind = ?item.kind, "peerd-client: queued frame lost");
                    return false;
                }
            }
        }
    }

    /// Fail queued frames that will not be sent: a request gets its error, fire-and-forget
    /// frames are reported through `on_error` (their senders were told they were taken).
    fn unsent(&self, items: Vec<Queued>, why: Unsent) {
        let mut dropped: Vec<&'static str> = Vec::new();
        for item in &items {
            match &item.awaits {
                Some((table, id)) => {
                    let err = match why {
                        Unsent::Timeout => SendFailure::QueueTimeout,
                        Unsent::TooLarge { max } => SendFailure::Encode(EncodeError::TooLarge {
                            kind: item.kind,
                            len: item.frame.len() - HEADER_LEN,
                            max,
                        }),
                    };
                    table.fail_queued(*id, err);
                }
                None => dropped.push(item.kind.name()),
            }
        }
        if dropped.is_empty() {
            return;
        }
        let (code, message) = match why {
            Unsent::Timeout => (
                Code::Timeout,
                format!(
                    "not sent: {} frame(s) ({}) waited in the reconnect queue longer than \
                     reconnect_queue_timeout ({:?})",
                    dropped.len(),
                    dropped.join(", "),
                    self.opts.reconnect_queue_timeout
                ),
            ),
            Unsent::TooLarge { max } => (
                Code::TooLarge,
                format!(
                    "not sent: {} queued frame(s) ({}) exceed the new connection's frame \
                     limit of {max} bytes",
                    dropped.len(),
                    dropped.join(", ")
                ),
            ),
        };
        tracing::warn!(%message, "peerd-client");
        // Never blocks: this runs on the timer thread or the supervisor, and a full
        // dispatcher queue must not stall them (the warning above is always logged).
        let _ = self.work.try_send(Work::Error(ServerError {
            code: code.as_u16(),
            message,
        }));
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

    /// Fail everything waiting on the connection that just ended (what is queued waits
    /// for the next one). Returns how many requests failed.
    pub(crate) fn fail_pending(&self) -> usize {
        let n = self.calls.fail_sent() + self.requests.fail_sent() + self.pings.fail_sent();
        self.resync.lock().unwrap().clear();
        n
    }

    /// The peer closed for good: fail everything waiting, queued or sent.
    fn fail_everything(&self) {
        // The queue first, so nothing more gets in; then the tables, which hold the
        // queued requests' waiters too (they fail with `Closed`: never sent).
        let dropped = self
            .outbox
            .close()
            .iter()
            .filter(|i| i.awaits.is_none())
            .count();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "peerd-client closed with fire-and-forget frames still queued; not sent"
            );
        }
        self.calls.fail_all();
        self.requests.fail_all();
        self.pings.fail_all();
        self.resync.lock().unwrap().clear();
    }

    /// Write the request `build` makes for a fresh id, with its waiter registered in
    /// `table` (see [`Waiter`]: the one protocol every request kind follows); while not
    /// connected, queue it for the next connection.
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
        let id = self.next_id();
        let msg = build(id);
        // As in `send`: every turn succeeds or moves on.
        loop {
            match self.route()? {
                Route::Link(l) => match Waiter::start(table, &*l, id, timeout, &msg) {
                    Err(SendFailure::Unusable) => continue,
                    r => return r.map_err(E::from),
                },
                Route::Queue => {
                    // Registered before it is queued, as before it is written: the
                    // queue may write it (and the answer arrive) at once.
                    let waiter = Waiter::queued(table, id, timeout);
                    let awaits: Arc<dyn Awaiting> = table.clone();
                    match self.enqueue(&msg, Some((awaits, id)))? {
                        Pushed::Queued { .. } => return Ok(waiter),
                        Pushed::Retry => continue,
                    }
                }
            }
        }
    }

    /// [`start`](Self::start) on the live connection only, never queued (ping: it
    /// measures the connection).
    pub(crate) fn start_live<V, E, M>(
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
        let id = self.next_id();
        let Some(link) = self.usable_link() else {
            return Err(E::from(if self.gate.is_closed() {
                SendFailure::Closed
            } else {
                SendFailure::NotConnected
            }));
        };
        Waiter::start(table, &*link, id, timeout, &build(id)).map_err(|e| match e {
            // Dead or draining since we looked: not connected, as far as a ping goes.
            SendFailure::Unusable => E::from(SendFailure::NotConnected),
            e => E::from(e),
        })
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
        self.fail_everything();
        self.deadlines.stop();
        self.set_state(State::Closed);
    }

    /// The end when the connection ends for good without `disconnect()` (replaced,
    /// reconnect disabled or given up).
    pub(crate) fn finish(&self) {
        self.gate.close();
        self.fail_everything();
        self.deadlines.stop();
        self.set_state(State::Closed);
    }
}

/// The deadline timer calls this when the reconnect queue's front frame is due.
impl Expire for Inner {
    fn expire(&self, _id: u64) {
        let (due, next) = self.outbox.expire(Instant::now());
        if !due.is_empty() {
            self.unsent(due, Unsent::Timeout);
        }
        if let Some(when) = next {
            self.arm_queue_expiry(when);
        }
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
