//! Requests that wait for an answer: one protocol for every kind (RPC calls, requests
//! confirmed by Status, list peers, ping), blocking and async alike.
//!
//! A [`Waiter`] owns the whole sequence:
//! 1. it registers its id in a [`PendingTable`] *before* the request is written, so an
//!    answer can never arrive for an id nobody registered;
//! 2. it checks that the link is usable, then writes the request; if either fails it
//!    un-registers itself and the caller gets the error at once (or, when nothing was
//!    written, tries the reconnect queue: `Inner::start`);
//! 3. it waits for the outcome until its deadline: blocking ([`Waiter::wait`]) or as a
//!    future ([`Waiter::wait_async`]) whose deadline the [`Deadlines`] timer enforces,
//!    because the crate borrows no runtime's timer;
//! 4. it un-registers itself when it is done or dropped (a dropped future leaves nothing
//!    behind).
//!
//! A request made while the peer is not connected is registered *queued*
//! ([`Waiter::queued`]) and its frame goes to the reconnect queue (`outbox`). It keeps its
//! own deadline. When the queue writes it on the next connection it first marks it sent
//! ([`Awaiting::mark_sent`]), which fails if nobody waits any more (timed out, dropped):
//! such a request is not sent at all.
//!
//! **Who decides the outcome.** Whoever removes the entry from the table: the reader
//! ([`PendingTable::complete`]: the answer), the supervisor when the link drops
//! ([`PendingTable::fail_sent`]: lost, at once rather than at the deadline), the reconnect
//! queue (queue timeout, too large for the new connection), closing the peer
//! ([`PendingTable::fail_all`]), the timer (timeout, async waits), or the waiter itself at
//! its deadline (timeout). The remover then sends that outcome on the waiter's one-shot
//! channel. A waiter whose deadline passes but whose entry is already gone waits for what
//! the remover is sending, so an answer that arrives in the same instant as the deadline
//! is delivered: `complete` returning true always means the caller got the answer.
//!
//! **Link drop.** The supervisor marks the link dead *before* failing the table, and a
//! waiter checks the link *after* registering: either `fail_sent` sees the entry or the
//! waiter sees the dead link. No waiter is left behind to run into its deadline. Queued
//! entries are not failed by a link drop: they were never written on it, and wait for the
//! next connection.
//!
//! Each channel is bounded(1) and fed at most once (by the remover), so completing never
//! blocks the reader.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use peerd_codec::Encode;

use crate::error::{CallError, RequestError, SendFailure};

/// The errors a waiter produces on its own, besides the answer's.
pub(crate) trait WaitError: From<SendFailure> {
    /// The deadline passed before the answer.
    fn timeout() -> Self;
    /// The connection dropped before the answer.
    fn lost() -> Self;
}

impl WaitError for CallError {
    fn timeout() -> Self {
        CallError::Timeout
    }
    fn lost() -> Self {
        CallError::ConnectionLost
    }
}

impl WaitError for RequestError {
    fn timeout() -> Self {
        RequestError::Timeout
    }
    fn lost() -> Self {
        RequestError::ConnectionLost
    }
}

/// Where a waiter writes its request: the connection's write side.
pub(crate) trait Outbound {
    /// False once nothing more can be written: the connection is known to be dead (marked
    /// before `fail_sent` runs), or half-closed by a drain.
    fn is_usable(&self) -> bool;
    /// Write one frame.
    fn send<M: Encode>(&self, msg: &M) -> Result<(), SendFailure>;
}

/// One registered waiter: where its outcome goes, and whether its request has been
/// written on a connection yet.
struct Entry<V, E> {
    tx: flume::Sender<Result<V, E>>,
    /// In the reconnect queue, not written on any connection yet: a connection that drops
    /// does not fail it.
    queued: bool,
}

/// Registered waiters of one kind, keyed by request id.
pub(crate) struct PendingTable<V, E> {
    map: Mutex<HashMap<u64, Entry<V, E>>>,
}

impl<V, E> PendingTable<V, E> {
    pub(crate) fn new() -> Self {
        PendingTable {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn register(&self, id: u64, queued: bool) -> flume::Receiver<Result<V, E>> {
        let (tx, rx) = flume::bounded(1);
        self.map.lock().unwrap().insert(id, Entry { tx, queued });
        rx
    }

    /// Take `id`'s entry out: the caller now decides its outcome.
    fn take(&self, id: u64) -> Option<flume::Sender<Result<V, E>>> {
        self.map.lock().unwrap().remove(&id).map(|e| e.tx)
    }

    /// Deliver the outcome for `id`. True: its waiter gets it. False: nobody waits for it
    /// any more (it timed out, was dropped, or the id is unknown) and the value is dropped.
    pub(crate) fn complete(&self, id: u64, value: Result<V, E>) -> bool {
        match self.take(id) {
            Some(tx) => tx.try_send(value).is_ok(),
            None => false,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

impl<V, E: WaitError> PendingTable<V, E> {
    /// The connection dropped: fail every waiter whose request was written at once with
    /// [`WaitError::lost`], since no answer can come any more. Queued ones stay: they go
    /// out on the next connection. Returns how many failed.
    pub(crate) fn fail_sent(&self) -> usize {
        let failed: Vec<_> = {
            let mut map = self.map.lock().unwrap();
            let ids: Vec<u64> = map
                .iter()
                .filter(|(_, e)| !e.queued)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| map.remove(&id)).collect()
        };
        let n = failed.len();
        for e in failed {
            let _ = e.tx.try_send(Err(E::lost()));
        }
        n
    }

    /// The peer closed for good: fail every waiter, those written with
    /// [`WaitError::lost`], queued ones (never sent) with `Closed`. Returns how many.
    pub(crate) fn fail_all(&self) -> usize {
        let drained: Vec<_> = self.map.lock().unwrap().drain().collect();
        let n = drained.len();
        for (_, e) in drained {
            let err = if e.queued {
                E::from(SendFailure::Closed)
            } else {
                E::lost()
            };
            let _ = e.tx.try_send(Err(err));
        }
        n
    }
}

/// A request waiting in the reconnect queue, as the queue sees it (whatever its table's
/// types).
pub(crate) trait Awaiting: Send + Sync {
    /// The request is about to be written: from now on a dropped connection fails it.
    /// False when nobody waits for it any more (timed out, dropped, peer closed): it must
    /// not be sent.
    fn mark_sent(&self, id: u64) -> bool;
    /// Undo [`mark_sent`](Self::mark_sent): nothing of it was written after all.
    fn mark_queued(&self, id: u64);
    /// Whether someone still waits for `id`.
    fn is_waiting(&self, id: u64) -> bool;
    /// `id` will not be sent: fail it with `why`, if it is still queued.
    fn fail_queued(&self, id: u64, why: SendFailure) -> bool;
}

impl<V: Send, E: WaitError + Send> Awaiting for PendingTable<V, E> {
    fn mark_sent(&self, id: u64) -> bool {
        match self.map.lock().unwrap().get_mut(&id) {
            Some(e) => {
                e.queued = false;
                true
            }
            None => false,
        }
    }

    fn mark_queued(&self, id: u64) {
        if let Some(e) = self.map.lock().unwrap().get_mut(&id) {
            e.queued = true;
        }
    }

    fn is_waiting(&self, id: u64) -> bool {
        self.map.lock().unwrap().contains_key(&id)
    }

    fn fail_queued(&self, id: u64, why: SendFailure) -> bool {
        let tx = {
            let mut map = self.map.lock().unwrap();
            match map.get(&id) {
                Some(e) if e.queued => map.remove(&id).map(|e| e.tx),
                _ => None,
            }
        };
        tx.is_some_and(|tx| tx.try_send(Err(E::from(why))).is_ok())
    }
}

/// What the deadline timer calls when an async wait's deadline passes.
pub(crate) trait Expire: Send + Sync {
    fn expire(&self, id: u64);
}

impl<V: Send, E: WaitError + Send> Expire for PendingTable<V, E> {
    fn expire(&self, id: u64) {
        self.complete(id, Err(E::timeout()));
    }
}

/// One request in flight: registered in its table, written (or queued), awaiting the
/// outcome. See the module docs for the protocol.
pub(crate) struct Waiter<V, E> {
    table: Arc<PendingTable<V, E>>,
    id: u64,
    rx: flume::Receiver<Result<V, E>>,
    deadline: Instant,
    /// The timer holding this waiter's deadline (async waits only), to cancel it on drop.
    timer: Option<Arc<Deadlines>>,
    /// Made while not connected: its request went to the reconnect queue.
    queued: bool,
}

impl<V, E> Waiter<V, E>
where
    V: Send + 'static,
    E: WaitError + Send + 'static,
{
    /// Register `id` in `table`, then write `msg` on `link`. On `Err` nothing stays
    /// registered; `Unusable` means nothing was written. The deadline runs from now.
    pub(crate) fn start<L, M>(
        table: &Arc<PendingTable<V, E>>,
        link: &L,
        id: u64,
        timeout: Duration,
        msg: &M,
    ) -> Result<Self, SendFailure>
    where
        L: Outbound + ?Sized,
        M: Encode,
    {
        let waiter = Self::register(table, id, timeout, false);
        // After registering: see "Link drop" in the module docs. Returning drops the
        // waiter, which un-registers it.
        if !link.is_usable() {
            return Err(SendFailure::Unusable);
        }
        link.send(msg)?;
        Ok(waiter)
    }

    /// Register `id` in `table` as queued: its request waits in the reconnect queue. The
    /// deadline runs from now, like a request written at once.
    pub(crate) fn queued(table: &Arc<PendingTable<V, E>>, id: u64, timeout: Duration) -> Self {
        Self::register(table, id, timeout, true)
    }

    fn register(table: &Arc<PendingTable<V, E>>, id: u64, timeout: Duration, queued: bool) -> Self {
        Waiter {
            table: table.clone(),
            id,
            rx: table.register(id, queued),
            deadline: deadline_after(timeout),
            timer: None,
            queued,
        }
    }

    /// Whether the request was made while not connected and went to the reconnect queue.
    pub(crate) fn was_queued(&self) -> bool {
        self.queued
    }

    /// Block until the outcome: the answer, the link dropping, or the deadline.
    pub(crate) fn wait(self) -> Result<V, E> {
        match self.rx.recv_deadline(self.deadline) {
            Ok(r) => r,
            Err(flume::RecvTimeoutError::Timeout) => self.deadline_passed(),
            Err(flume::RecvTimeoutError::Disconnected) => Err(E::lost()),
        }
    }

    /// The deadline passed with nothing received. If the entry is still ours, it is a
    /// timeout; if someone already took it, their outcome is on its way: wait for it (the
    /// remover sends right after removing, so this returns at once).
    fn deadline_passed(&self) -> Result<V, E> {
        if self.table.take(self.id).is_some() {
            return Err(E::timeout());
        }
        self.rx.recv().unwrap_or_else(|_| Err(E::lost()))
    }

    /// [`wait`](Self::wait) as a future that needs no particular runtime. The deadline is
    /// registered with `timer` now, so it runs from the call, not from the first poll.
    pub(crate) fn wait_async(
        mut self,
        timer: &Arc<Deadlines>,
    ) -> impl Future<Output = Result<V, E>> + Send + 'static {
        let table: Arc<dyn Expire> = self.table.clone();
        timer.add(self.deadline, self.id, Arc::downgrade(&table));
        self.timer = Some(timer.clone());
        async move {
            // Disconnected: the sender went without a word, which no remover does; count
            // it as lost rather than hang.
            self.rx
                .recv_async()
                .await
                .unwrap_or_else(|_| Err(E::lost()))
        }
    }
}

impl<V, E> Drop for Waiter<V, E> {
    fn drop(&mut self) {
        if let Some(timer) = &self.timer {
            timer.cancel(self.deadline, self.id);
        }
        self.table.take(self.id);
    }
}

/// `now + timeout`, or a year from now when that does not fit an `Instant`.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86400 * 365))
}

/// Deadlines of async waits. A blocking wait times out by itself; an async one has no
/// runtime timer to lean on (the crate is runtime-agnostic), so one thread per peer,
/// started on first use, expires them in order.
pub(crate) struct Deadlines {
    inner: Mutex<DeadlineState>,
    cv: Condvar,
}

struct DeadlineState {
    // Keyed by (when, id) so the earliest is first and a wait can be cancelled in O(log n).
    due: BTreeMap<(Instant, u64), Weak<dyn Expire>>,
    stopped: bool,
    started: bool,
}

impl Deadlines {
    pub(crate) fn new() -> Self {
        Deadlines {
            inner: Mutex::new(DeadlineState {
                due: BTreeMap::new(),
                stopped: false,
                started: false,
            }),
            cv: Condvar::new(),
        }
    }

    /// Expire `id` in `table` at `when`, unless cancelled first. Starts the timer thread
    /// on first use.
    pub(crate) fn add(self: &Arc<Self>, when: Instant, id: u64, table: Weak<dyn Expire>) {
        let mut st = self.inner.lock().unwrap();
        if st.stopped {
            return;
        }
        let earliest = st.due.keys().next().is_none_or(|(w, _)| when < *w);
        st.due.insert((when, id), table);
        if earliest {
            self.cv.notify_one();
        }
        if !st.started {
            st.started = true;
            let me = self.clone();
            std::thread::Builder::new()
                .name("peerd-timer".into())
                .spawn(move || me.run())
                .expect("spawn peerd-timer thread");
        }
    }

    pub(crate) fn cancel(&self, when: Instant, id: u64) {
        self.inner.lock().unwrap().due.remove(&(when, id));
    }

    /// Forget every deadline and end the timer thread.
    pub(crate) fn stop(&self) {
        let mut st = self.inner.lock().unwrap();
        st.stopped = true;
        st.due.clear();
        self.cv.notify_all();
    }

    fn run(&self) {
        let mut st = self.inner.lock().unwrap();
        loop {
            if st.stopped {
                return;
            }
            let now = Instant::now();
            match st.due.first_key_value().map(|(k, _)| *k) {
                Some((when, id)) if when <= now => {
                    let table = st.due.remove(&(when, id));
                    drop(st);
                    if let Some(t) = table.and_then(|t| t.upgrade()) {
                        t.expire(id);
                    }
                    st = self.inner.lock().unwrap();
                }
                Some((when, _)) => {
                    st = self.cv.wait_timeout(st, when - now).unwrap().0;
                }
                None => {
                    st = self.cv.wait(st).unwrap();
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().unwrap().due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::block_on;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Barrier;

    type Table = PendingTable<u32, RequestError>;

    /// A link whose liveness and writes the test controls.
    struct FakeLink {
        alive: AtomicBool,
        fail_send: bool,
        sent: AtomicUsize,
        /// Runs inside `send`, after the frame is "written".
        during_send: Box<dyn Fn() + Send + Sync>,
    }

    impl FakeLink {
        fn up() -> Self {
            FakeLink {
                alive: AtomicBool::new(true),
                fail_send: false,
                sent: AtomicUsize::new(0),
                during_send: Box::new(|| {}),
            }
        }
    }

    impl Outbound for FakeLink {
        fn is_usable(&self) -> bool {
            self.alive.load(Ordering::SeqCst)
        }
        fn send<M: Encode>(&self, _msg: &M) -> Result<(), SendFailure> {
            if self.fail_send {
                return Err(SendFailure::ConnectionLost);
            }
            self.sent.fetch_add(1, Ordering::SeqCst);
            (self.during_send)();
            Ok(())
        }
    }

    fn ping(nonce: u64) -> peerd_codec::Ping {
        peerd_codec::Ping { nonce }
    }

    fn start(
        t: &Arc<Table>,
        link: &FakeLink,
        id: u64,
        timeout: Duration,
    ) -> Waiter<u32, RequestError> {
        Waiter::start(t, link, id, timeout, &ping(id)).unwrap()
    }

    #[test]
    fn answer_is_delivered_once_and_late_answers_are_dropped() {
        let t = Arc::new(Table::new());
        let link = FakeLink::up();
        let w = start(&t, &link, 1, Duration::from_secs(30));
        assert_eq!(link.sent.load(Ordering::SeqCst), 1);
        assert!(t.complete(1, Ok(7)));
        assert!(!t.complete(1, Ok(8)), "second answer for the same id");
        assert!(!t.complete(99, Ok(0)), "unknown id");
        assert_eq!(w.wait(), Ok(7));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn timeout_unregisters_and_a_later_answer_is_reported_late() {
        let t = Arc::new(Table::new());
        let link = FakeLink::up();
        let w = start(&t, &link, 1, Duration::from_millis(1));
        assert_eq!(w.wait(), Err(RequestError::Timeout));
        assert_eq!(t.len(), 0);
        assert!(!t.complete(1, Ok(1)), "nobody waits any more");
    }

    #[test]
    fn an_answer_taken_out_as_the_deadline_passes_wins_over_the_timeout() {
        // The reader has removed the entry (it is inside `complete`) but not yet sent when
        // the waiter's deadline passes: the waiter must get the answer, not Timeout.
        let t = Arc::new(Table::new());
        let link = FakeLink::up();
        let w = start(&t, &link, 1, Duration::ZERO);
        let tx = t.take(1).expect("registered");
        tx.send(Ok(5)).unwrap();
        assert_eq!(w.deadline_passed(), Ok(5));

        // The same with the sender still mid-way on another thread when the waiter looks.
        let w = start(&t, &link, 2, Duration::ZERO);
        let tx = t.take(2).expect("registered");
        let gate = Arc::new(Barrier::new(2));
        let g = gate.clone();
        let answer = std::thread::spawn(move || {
            g.wait();
            tx.send(Ok(6)).unwrap();
        });
        gate.wait();
        assert_eq!(w.wait(), Ok(6));
        answer.join().unwrap();
    }

    #[test]
    fn answers_racing_the_deadline_are_never_lost() {
        // Whatever the interleaving, exactly one of these holds: the waiter got the answer
        // and `complete` said so, or the waiter timed out and `complete` said it was late.
        let t = Arc::new(Table::new());
        let link = FakeLink::up();
        let mut outcomes = [0usize; 2];
        for id in 0..300u64 {
            let w = start(&t, &link, id, Duration::from_micros(id % 40));
            let t2 = t.clone();
            let reader = std::thread::spawn(move || t2.complete(id, Ok(id as u32)));
            let got = w.wait();
            let delivered = reader.join().unwrap();
            match got {
                Ok(v) => {
                    assert!(delivered, "id {id}: answered but reported late");
                    assert_eq!(u64::from(v), id);
                    outcomes[0] += 1;
                }
                Err(RequestError::Timeout) => {
                    assert!(
                        !delivered,
                        "id {id}: reported delivered but the caller timed out"
                    );
                    outcomes[1] += 1;
                }
                Err(e) => panic!("id {id}: {e:?}"),
            }
        }
        assert_eq!(t.len(), 0);
        assert_eq!(outcomes.iter().sum::<usize>(), 300);
    }

    #[test]
    fn link_drop_fails_every_waiter_at_once() {
        let t = Arc::new(Table::new());
        let link = FakeLink::up();
        let started = Arc::new(Barrier::new(51));
        let waiters: Vec<_> = (1..=50u64)
            .map(|id| {
                let w = start(&t, &link, id, Duration::from_secs(30));
                let started = started.clone();
                std::thread::spawn(move || {
                    started.wait();
                    let t0 = Instant::now();
                    (w.wait(), t0.elapsed())
                })
            })
            .collect();
        started.wait();
        assert_eq!(t.fail_sent(), 50);
        assert_eq!(t.len(), 0);
        for w in waiters {
            let (r, waited) = w.join().unwrap();
            assert_eq!(r, Err(RequestError::ConnectionLost));
            assert!(
                waited < Duration::from_secs(5),
                "failed at once, not at the deadline"
            );
        }
        // A waiter registered after the failure is unaffected.
        let w = start(&t, &link, 51, Duration::from_secs(30));
        assert!(t.complete(51, Ok(1)));
        assert_eq!(w.wait(), Ok(1));
    }

    #[test]
    fn queued_waiters_outlive_a_link_drop_and_fail_closed_at_the_end() {
        let t = Arc::new(Table::new());
        let link = FakeLink::up();
        let sent = start(&t, &link, 1, Duration::from_secs(30));
        let queued = Waiter::queued(&t, 2, Duration::from_secs(30));
        assert!(queued.was_queued() && !sent.was_queued());
        // The link drops: only what was written on it fails.
        assert_eq!(t.fail_sent(), 1);
        assert_eq!(sent.wait(), Err(RequestError::ConnectionLost));
        assert!(t.is_waiting(2));
        // Written on the next link, then that one drops too.
        assert!(t.mark_sent(2));
        assert!(!t.fail_queued(2, SendFailure::QueueTimeout), "sent by now");
        assert_eq!(t.fail_sent(), 1);
        assert_eq!(queued.wait(), Err(RequestError::ConnectionLost));

        // Still queued when the peer closes: Closed (never sent); a written one: lost.
        let queued = Waiter::queued(&t, 3, Duration::from_secs(30));
        let sent = start(&t, &link, 4, Duration::from_secs(30));
        assert_eq!(t.fail_all(), 2);
        assert_eq!(queued.wait(), Err(RequestError::Closed));
        assert_eq!(sent.wait(), Err(RequestError::ConnectionLost));

        // Dropped or timed out while queued: not to be sent.
        let w = Waiter::queued(&t, 5, Duration::from_millis(1));
        assert_eq!(w.wait(), Err(RequestError::Timeout), "its own deadline");
        assert!(!t.mark_sent(5));
        let w = Waiter::queued(&t, 6, Duration::from_secs(30));
        assert!(t.fail_queued(6, SendFailure::QueueTimeout));
        assert_eq!(w.wait(), Err(RequestError::QueueTimeout));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_dead_link_or_a_failed_write_leaves_nothing_registered() {
        let t = Arc::new(Table::new());
        let dead = FakeLink::up();
        dead.alive.store(false, Ordering::SeqCst);
        let r = Waiter::start(&t, &dead, 1, Duration::from_secs(30), &ping(1));
        assert!(
            matches!(r.err(), Some(SendFailure::Unusable)),
            "nothing written"
        );
        assert_eq!(dead.sent.load(Ordering::SeqCst), 0, "nothing written");
        assert_eq!(t.len(), 0);

        let failing = FakeLink {
            fail_send: true,
            ..FakeLink::up()
        };
        let r = Waiter::start(&t, &failing, 2, Duration::from_secs(30), &ping(2));
        assert!(matches!(r.err(), Some(SendFailure::ConnectionLost)));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_link_dropping_during_the_write_fails_the_waiter_at_once() {
        // The supervisor fails the table while the request is being written: the waiter
        // is registered by then, so it is failed too and does not sit out its deadline.
        let t = Arc::new(Table::new());
        let t2 = t.clone();
        let link = FakeLink {
            during_send: Box::new(move || {
                t2.fail_sent();
            }),
            ..FakeLink::up()
        };
        let w = start(&t, &link, 1, Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(w.wait(), Err(RequestError::ConnectionLost));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn async_waits_answer_time_out_and_unregister_when_dropped() {
        let timer = Arc::new(Deadlines::new());
        let t = Arc::new(Table::new());
        let link = FakeLink::up();

        let f = start(&t, &link, 1, Duration::from_secs(30)).wait_async(&timer);
        assert!(t.complete(1, Ok(3)));
        assert_eq!(block_on(f), Ok(3));
        assert_eq!(timer.len(), 0, "deadline cancelled once answered");

        let f = start(&t, &link, 2, Duration::from_millis(5)).wait_async(&timer);
        assert_eq!(block_on(f), Err(RequestError::Timeout));
        assert_eq!(t.len(), 0);

        let f = start(&t, &link, 3, Duration::from_secs(30)).wait_async(&timer);
        assert_eq!((t.len(), timer.len()), (1, 1));
        drop(f);
        assert_eq!(
            (t.len(), timer.len()),
            (0, 0),
            "a dropped future leaves nothing"
        );

        let f = start(&t, &link, 4, Duration::from_secs(30)).wait_async(&timer);
        assert_eq!(t.fail_sent(), 1);
        assert_eq!(block_on(f), Err(RequestError::ConnectionLost));
        timer.stop();
    }

    #[test]
    fn deadlines_fire_in_order_and_cancel() {
        struct Record(flume::Sender<u64>);
        impl Expire for Record {
            fn expire(&self, id: u64) {
                self.0.send(id).unwrap();
            }
        }
        let (tx, rx) = flume::unbounded();
        let target: Arc<dyn Expire> = Arc::new(Record(tx));
        let d = Arc::new(Deadlines::new());
        let now = Instant::now();
        d.add(now + Duration::from_millis(30), 3, Arc::downgrade(&target));
        d.add(now + Duration::from_millis(10), 1, Arc::downgrade(&target));
        d.add(now + Duration::from_millis(20), 2, Arc::downgrade(&target));
        d.cancel(now + Duration::from_millis(20), 2);
        assert_eq!(rx.recv().unwrap(), 1);
        assert_eq!(rx.recv().unwrap(), 3);
        assert!(Instant::now() >= now + Duration::from_millis(30));
        assert_eq!(d.len(), 0);
        d.stop();
        d.add(now, 4, Arc::downgrade(&target));
        assert_eq!(d.len(), 0, "a stopped timer takes no more deadlines");
    }
}
