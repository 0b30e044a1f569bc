//! Fair reading: a bounded amount of bulk input per pass of the shard's loop.
//!
//! glommio runs a shard's runnable tasks one after another and polls io_uring for new
//! completions only when none is left (or when its 100 ms preemption timer fires). A
//! connection whose socket always holds more (a flooder, a large upload; 5,000 peers each
//! sending half of a 1 MiB frame) used to read, yield to the back of the queue and read
//! again: one round of the queue read hundreds of megabytes, and a well-behaved peer's
//! request, found only by the next poll, waited for all of it (p99 0.18-0.52 s under issue
//! 9's partial frames; results/fair-reading/).
//!
//! So bulk input has a budget per pass, [`PASS_BYTES`]. A connection is a bulk reader while
//! its last read brought [`BULK_READ`] or more (its socket probably holds more) or while it
//! is receiving a frame larger than a pooled buffer (however slowly its bytes come). A bulk
//! reader reads again only while the pass's budget lasts; past it, it waits for a later pass
//! ([`Fair::next_pass`]), in order of arrival. Once per pass while readers wait,
//! [`Fair::run`] opens a new budget and wakes as many of them as it covers. A peer whose
//! reads are small, as a request/response peer's are, is never held back.
//!
//! The budget holds only if every way into a read keeps it, and four did not
//! (results/unmap-in-turn/): a bulk read into a large frame's mapping took the rest of the
//! frame (500 KB in one read), so a bulk read is now a pooled buffer's worth at most
//! ([`Fair::most_to_read`]); a connection's first read took 32 KiB whatever the budget, so
//! past the budget a reader not known to be bulk reads [`SPENT_READ`] and is bulk if it fills
//! it; a reader that had gone to wait for its socket read when the socket turned readable,
//! budget or not (the caller checks the budget again before that read); and any wake of a
//! waiting reader's task (glommio's readiness poll of its socket) counted as its turn, so
//! only [`Fair::run`] gives turns now ([`Fair::next_pass`]). A hundred readers used to read
//! in a pass whose budget covered four.
//!
//! What it costs: a bulk reader alone on a shard still waits for a poll of the ring after
//! each [`PASS_BYTES`], 5-8 % more server CPU per round trip for 512 KiB calls on one
//! connection. A budget of 256 KiB cost about as much there and let partial frames through
//! to a p99 of 5.4-6.2 ms instead of 4.5-5.0 (results/fair-reading/).
//!
//! Bytes are not the whole of a pass's cost: a 40-byte publish to a topic of 50 members
//! makes 50 sends. A publisher whose input backed up while the shard was busy brought
//! hundreds of publishes in one read, and the shard dispatched them all before it flushed
//! and polled: flushes of 5,000 connections took 60 ms, and the well-behaved peer's request
//! waited for them (slow-reader attack, results/fanout-share/). So a pass also has a
//! budget of sends, [`PASS_SENDS`] connections waiting to be written, and a connection
//! whose frames fan out stops dispatching when it is spent ([`SendShare`]); its buffered
//! frames wait for a later pass, as a bulk reader does. One frame always goes, so a single
//! frame's fan-out (a broadcast, a publish to a topic of 5,000) is not split; and a peer
//! whose frames make few sends (a request/response peer's answers all go to itself) is
//! never held back, however many others are waiting.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::util::Notify;

/// Bulk bytes a shard reads per pass of its loop, over all connections.
///
/// Chosen by measurement (module doc): 128 KiB of memory copies and reads is a small
/// fraction of a millisecond on this project's 2-core VM.
pub(crate) const PASS_BYTES: usize = 128 * 1024;

/// Connections waiting to be written (`WriteSet::pending`) that spend a pass's budget of
/// sends.
///
/// Chosen by measurement (results/fanout-share/): under the slow-reader attack 128 gave the
/// well-behaved peer a p99 15-43 % lower than 256 (five paired rounds), for the same server
/// CPU. A send costs 10-25 µs on this project's VM over loopback (the receiver's TCP input
/// runs in the sender's system call), so 128 are 1-3 ms of a pass; on a network, a fraction
/// of that.
pub(crate) const PASS_SENDS: usize = 128;

/// New connections waiting to be written that make a frame one that fans out.
const FANS_OUT: usize = PASS_SENDS / 16;

/// What a run of dispatches in this pass (a connection's buffered frames, a batch of the
/// shard's inbox) has made waiting to be written, and whether it must stop for a later pass.
///
/// It stops, before its next dispatch, when its dispatches after the first alone spent the
/// budget of sends, or when the budget is spent (by anyone) and its last dispatch fanned
/// out. The first is its own whatever it fans out to (one frame is not split). A dispatch
/// that adds no new connection (the next publish to the same topic: its members wait to be
/// written already, and the frame joins their queues) does not stop it, so a burst of
/// publishes to one large topic still leaves in one send per member. A peer whose answers
/// all go to itself adds at most one.
#[derive(Default)]
pub(crate) struct SendShare {
    /// Connections waiting after the first dispatch.
    after_first: Option<usize>,
    /// New connections waiting from the last dispatch (not counting the first).
    added: usize,
}

impl SendShare {
    /// One more dispatch: `before` connections waited to be written before it, `pending`
    /// after it.
    pub fn dispatched(&mut self, before: usize, pending: usize) {
        self.added = match self.after_first {
            None => {
                self.after_first = Some(pending);
                0
            }
            Some(_) => pending.saturating_sub(before),
        };
    }

    /// Whether the run stops before its next dispatch, `pending` connections waiting.
    pub fn spent(&self, pending: usize) -> bool {
        let Some(first) = self.after_first else {
            return false;
        };
        pending.saturating_sub(first) >= PASS_SENDS
            || (self.added >= FANS_OUT && pending >= PASS_SENDS)
    }
}

/// A read of at least this many bytes marks its connection as a bulk reader until a
/// smaller one: half a pooled receive buffer (`inbound::RX_BUF`).
pub(crate) const BULK_READ: usize = 16 * 1024;

/// What a reader not known to be a bulk reader reads at most while the pass's budget is
/// spent ([`Fair::most_to_read`]); if it fills that, it is one. A request/response peer's
/// frames fit in it; 5,000 peers connecting to send half a large frame each used to read a
/// pooled buffer's worth (32 KiB) in their first read, the pass they were found readable,
/// budget or not.
const SPENT_READ: usize = 4 * 1024;

/// Whether a read of `n` bytes, let read at most `most` ([`Fair::most_to_read`]), makes its
/// reader a bulk reader: it brought [`BULK_READ`] or more, or all it was let read (its
/// socket probably holds more).
pub(crate) fn was_bulk(n: usize, most: usize) -> bool {
    n >= BULK_READ || n == most
}

/// Readers woken per pass: the budget in reads of a pooled receive buffer (the most one
/// read brings in).
const GRANTS: usize = PASS_BYTES / crate::inbound::RX_BUF;

/// How long the service sleeps to let the shard poll its ring before a new budget. Any
/// timer already due when the reactor next looks would do: the reactor fires timers in its
/// pass, after the queue of runnable tasks ran dry, which is the pass boundary we want.
const TO_NEXT_PASS: Duration = Duration::from_micros(1);

/// Resolves at the next pass of the shard's loop, after the reactor has polled the ring
/// and the tasks it woke have run their turn.
pub(crate) async fn pass_boundary() {
    glommio::timer::sleep(TO_NEXT_PASS).await;
}

/// A shard's budget of bulk input for the current pass, and the readers waiting for the
/// next.
#[derive(Default)]
pub(crate) struct Fair {
    /// Bytes read in this pass.
    used: Cell<usize>,
    /// Readers past the budget, in order of arrival.
    waiting: RefCell<VecDeque<Waker>>,
    /// Readers that ever waited, and that [`Fair::run`] ever woke: the reader that waited
    /// `n`th has its turn once more than `n` were woken ([`Fair::next_pass`]).
    queued: Cell<u64>,
    woken: Cell<u64>,
    /// Wakes [`Fair::run`] when the first reader waits.
    wanted: Notify,
    /// The shard is stopping and its service is gone ([`Fair::lift`]): nothing waits for a
    /// pass any more.
    lifted: Cell<bool>,
}

impl Fair {
    /// Count `n` bytes read.
    pub fn charge(&self, n: usize) {
        self.used.set(self.used.get().saturating_add(n));
    }

    /// The most a reader's next read may bring (its buffer's room may be less). A bulk
    /// reader, once the budget let it read: a pooled buffer's worth, so that the readers
    /// a pass wakes read what its budget covers (the room of a large frame's mapping is the
    /// rest of the frame: reads of 500 KB each took passes to many times their budget);
    /// what is left of the budget if no reader waits for a pass, so that a large upload
    /// alone on its shard is not cut into more reads than passes. Any other reader, past
    /// the budget: [`SPENT_READ`]. Else whatever its buffer holds.
    pub fn most_to_read(&self, bulk: bool) -> usize {
        if bulk {
            let left = PASS_BYTES.saturating_sub(self.used.get());
            if self.waiting() == 0 {
                left.max(crate::inbound::RX_BUF)
            } else {
                crate::inbound::RX_BUF
            }
        } else if self.spent() {
            SPENT_READ
        } else {
            usize::MAX
        }
    }

    /// Whether this pass's budget is spent: a bulk reader waits for the next.
    pub fn spent(&self) -> bool {
        self.used.get() >= PASS_BYTES && !self.lifted.get()
    }

    /// Wait for a later pass: resolves when [`Fair::run`] gives this reader its turn, or
    /// once the shard stops ([`Fair::lift`]). Nothing else: glommio wakes a reader's task
    /// whenever its socket turns readable if a read armed a readiness poll, and when such
    /// wakes counted as turns, a hundred readers read in a pass whose budget covered four
    /// (results/unmap-in-turn/). A caller that must also notice other events (its
    /// connection closing) checks them before polling this.
    pub fn next_pass(&self) -> impl Future<Output = ()> + '_ {
        let mut ticket = None;
        std::future::poll_fn(move |cx| {
            if let Some(n) = ticket {
                return if self.woken.get() > n || self.lifted.get() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            }
            if self.lifted.get() {
                // No service to wake it: only yield, so a caller that loops on passes
                // still lets the shard's other tasks run.
                ticket = Some(0);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ticket = Some(self.queued.get());
            self.queued.set(self.queued.get() + 1);
            self.waiting.borrow_mut().push_back(cx.waker().clone());
            self.wanted.notify();
            Poll::Pending
        })
    }

    /// The shard is stopping and [`Fair::run`] was cancelled: wake every reader waiting
    /// for a pass, and let none wait from now on. Connections still lingering after their
    /// Close would otherwise wait for a pass that never comes, and notice their peer's
    /// end only at the close linger.
    pub fn lift(&self) {
        self.lifted.set(true);
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        self.woken.set(self.queued.get());
        for reader in waiting {
            reader.wake();
        }
    }

    /// Readers waiting for a pass.
    pub fn waiting(&self) -> usize {
        self.waiting.borrow().len()
    }

    /// The shard's service: while readers wait, once per pass, a new budget and as many of
    /// them woken as it covers. Never ends.
    pub async fn run(&self) {
        loop {
            self.wanted.notified().await;
            while self.waiting() > 0 {
                pass_boundary().await;
                self.used.set(0);
                for _ in 0..GRANTS {
                    // Not borrowed across the wake: a wake only schedules the task.
                    let Some(reader) = self.waiting.borrow_mut().pop_front() else {
                        break;
                    };
                    self.woken.set(self.woken.get() + 1);
                    reader.wake();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// A share after dispatches that made waiting, in turn, the given numbers of new
    /// connections, starting from `others` made waiting by anyone else.
    fn share_after(others: usize, adds: &[usize]) -> (SendShare, usize) {
        let mut share = SendShare::default();
        let mut pending = others;
        for &a in adds {
            share.dispatched(pending, pending + a);
            pending += a;
        }
        (share, pending)
    }

    #[test]
    fn only_a_run_whose_dispatches_fan_out_is_stopped_by_sends() {
        let spent = |others, adds: &[usize]| {
            let (share, pending) = share_after(others, adds);
            share.spent(pending)
        };
        // Nothing dispatched yet, or only the first, however much it fanned out.
        assert!(!spent(10 * PASS_SENDS, &[]));
        assert!(!spent(0, &[10 * PASS_SENDS]));
        // Later dispatches alone spent the budget, each adding one.
        assert!(spent(0, &[1; PASS_SENDS + 1]));
        // Others (or the first) spent it, and the last fanned out.
        assert!(spent(PASS_SENDS, &[0, FANS_OUT]));
        assert!(spent(0, &[PASS_SENDS, FANS_OUT]));
        // The first spent it; the later ones go to the same members.
        assert!(!spent(0, &[10 * PASS_SENDS, 0, 0, 0]));
        // Others spent it; the run makes one connection waiting (its own answers).
        assert!(!spent(10 * PASS_SENDS, &[1, 0, 0]));
        // The run fans out, with budget left.
        assert!(!spent(0, &[FANS_OUT; PASS_SENDS / FANS_OUT - 1]));
    }

    #[test]
    fn the_budget_is_spent_by_bulk_bytes() {
        let fair = Fair::default();
        fair.charge(PASS_BYTES - 1);
        assert!(!fair.spent());
        fair.charge(1);
        assert!(fair.spent());
    }

    /// What a read may bring: a bulk reader a pooled buffer's worth; any other the room its
    /// buffer has, or a small share once the budget is spent, which, filled, makes it bulk.
    #[test]
    fn reads_are_limited_to_what_the_budget_covers() {
        let fair = Fair::default();
        // Alone, a bulk reader may read what is left of the budget.
        assert_eq!(fair.most_to_read(true), PASS_BYTES);
        assert_eq!(fair.most_to_read(false), usize::MAX);
        fair.charge(PASS_BYTES);
        assert_eq!(fair.most_to_read(true), crate::inbound::RX_BUF);
        assert_eq!(fair.most_to_read(false), SPENT_READ);
        assert!(was_bulk(SPENT_READ, SPENT_READ));
        assert!(!was_bulk(SPENT_READ - 1, SPENT_READ));
        assert!(was_bulk(BULK_READ, usize::MAX));
        assert!(!was_bulk(BULK_READ - 1, usize::MAX));
    }

    /// A waiting reader whose task something else wakes (glommio's readiness poll of its
    /// socket) goes on waiting: only the service gives it its turn.
    #[test]
    fn only_the_service_gives_a_waiting_reader_its_turn() {
        glommio::LocalExecutor::default().run(async {
            let fair = Rc::new(Fair::default());
            fair.charge(PASS_BYTES);
            let turn = Rc::new(Cell::new(false));
            let task = Rc::new(RefCell::new(None::<Waker>));
            let reader = {
                let (fair, turn, task) = (fair.clone(), turn.clone(), task.clone());
                glommio::spawn_local(async move {
                    let mut pass = std::pin::pin!(fair.next_pass());
                    std::future::poll_fn(|cx| {
                        *task.borrow_mut() = Some(cx.waker().clone());
                        pass.as_mut().poll(cx)
                    })
                    .await;
                    turn.set(true);
                })
            };
            futures_lite::future::yield_now().await;
            assert_eq!(fair.waiting(), 1);
            let woken_by_socket = task.borrow().clone().expect("the reader waits");
            woken_by_socket.wake();
            for _ in 0..3 {
                futures_lite::future::yield_now().await;
            }
            assert!(!turn.get(), "a wake that is not its turn ended the wait");
            let service = {
                let fair = fair.clone();
                glommio::spawn_local(async move { fair.run().await }).detach()
            };
            reader.await;
            assert!(turn.get());
            drop(service);
        });
    }

    /// Waiting readers are woken in order of arrival, no more per pass than the budget
    /// covers: each woken reader finds budget left for the read it makes.
    #[test]
    fn each_pass_wakes_as_many_readers_as_its_budget_covers_in_order() {
        glommio::LocalExecutor::default().run(async {
            let fair = Rc::new(Fair::default());
            fair.charge(PASS_BYTES);
            let service = {
                let fair = fair.clone();
                glommio::spawn_local(async move { fair.run().await }).detach()
            };
            let order = Rc::new(RefCell::new(Vec::new()));
            let readers: Vec<_> = (0..3 * GRANTS + 1)
                .map(|i| {
                    let (fair, order) = (fair.clone(), order.clone());
                    glommio::spawn_local(async move {
                        fair.next_pass().await;
                        // Budget left for this reader's read of a whole receive buffer.
                        let budget_left = !fair.spent();
                        fair.charge(crate::inbound::RX_BUF);
                        order.borrow_mut().push((i, budget_left));
                    })
                })
                .collect();
            for r in readers {
                r.await;
            }
            let order = order.borrow();
            let expected: Vec<_> = (0..3 * GRANTS + 1).map(|i| (i, true)).collect();
            assert_eq!(*order, expected);
            assert_eq!(fair.waiting(), 0);
            drop(service);
        });
    }
}
