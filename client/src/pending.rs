//! In-flight requests awaiting an answer, and the deadline timer for async waits.
//!
//! Every waiter is a one-shot flume channel: a blocking caller waits with
//! `recv_timeout`, an async caller awaits `recv_async`, and the reader thread completes
//! either kind the same way. The channel is bounded(1) and completed at most once (the
//! entry is removed from the table before the send), so a completion never blocks the
//! reader.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Waiters keyed by request id.
pub(crate) struct PendingTable<T> {
    map: Mutex<HashMap<u64, flume::Sender<T>>>,
}

impl<T> PendingTable<T> {
    pub(crate) fn new() -> Self {
        PendingTable {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Register `id`; the receiver yields its one answer.
    pub(crate) fn insert(&self, id: u64) -> flume::Receiver<T> {
        let (tx, rx) = flume::bounded(1);
        self.map.lock().unwrap().insert(id, tx);
        rx
    }

    /// Deliver the answer for `id`. False when nobody waits for it any more (it timed out,
    /// was cancelled, or the id is unknown): late answers are dropped.
    pub(crate) fn complete(&self, id: u64, value: T) -> bool {
        let tx = self.map.lock().unwrap().remove(&id);
        match tx {
            Some(tx) => tx.try_send(value).is_ok(),
            None => false,
        }
    }

    /// Forget `id` (the waiter gave up).
    pub(crate) fn remove(&self, id: u64) -> bool {
        self.map.lock().unwrap().remove(&id).is_some()
    }

    /// Fail every waiter at once (the connection dropped): nobody waits for a deadline
    /// that can no longer be met by an answer.
    pub(crate) fn fail_all(&self, mut err: impl FnMut() -> T) -> usize {
        let drained: Vec<_> = self.map.lock().unwrap().drain().collect();
        let n = drained.len();
        for (_, tx) in drained {
            let _ = tx.try_send(err());
        }
        n
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

/// Which table a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DeadlineKind {
    Call,
    Request,
    Ping,
}

/// Deadlines of async waits. Blocking waits use `recv_timeout` and need none of this; an
/// async wait has no runtime timer to lean on (the crate is runtime-agnostic), so one
/// lazily started thread per peer fails expired waiters.
pub(crate) struct Deadlines {
    inner: Mutex<DeadlineState>,
    cv: Condvar,
}

struct DeadlineState {
    // Keyed by (when, id) so the earliest is first and an id can be cancelled in O(log n).
    due: BTreeMap<(Instant, u64), DeadlineKind>,
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

    /// Add a deadline; returns true if the caller must start the timer thread.
    pub(crate) fn add(&self, when: Instant, id: u64, kind: DeadlineKind) -> bool {
        let mut st = self.inner.lock().unwrap();
        let earliest = st.due.keys().next().is_none_or(|(w, _)| when < *w);
        st.due.insert((when, id), kind);
        if earliest {
            self.cv.notify_one();
        }
        let start = !st.started && !st.stopped;
        st.started = true;
        start
    }

    pub(crate) fn cancel(&self, when: Instant, id: u64) {
        self.inner.lock().unwrap().due.remove(&(when, id));
    }

    pub(crate) fn stop(&self) {
        let mut st = self.inner.lock().unwrap();
        st.stopped = true;
        st.due.clear();
        self.cv.notify_all();
    }

    /// The timer thread's body: call `expire` for each deadline as it passes.
    pub(crate) fn run(self: &Arc<Self>, mut expire: impl FnMut(u64, DeadlineKind)) {
        let mut st = self.inner.lock().unwrap();
        loop {
            if st.stopped {
                return;
            }
            let now = Instant::now();
            match st.due.first_key_value().map(|(k, v)| (*k, *v)) {
                Some(((when, id), kind)) if when <= now => {
                    st.due.remove(&(when, id));
                    drop(st);
                    expire(id, kind);
                    st = self.inner.lock().unwrap();
                }
                Some(((when, _), _)) => {
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
    use std::time::Duration;

    #[derive(Debug, PartialEq)]
    enum Answer {
        Ok(u32),
        Lost,
    }

    #[test]
    fn complete_delivers_once_and_late_answers_are_dropped() {
        let t = PendingTable::new();
        let rx = t.insert(1);
        assert!(t.complete(1, Answer::Ok(7)));
        assert!(
            !t.complete(1, Answer::Ok(8)),
            "second answer for the same id"
        );
        assert_eq!(rx.recv().unwrap(), Answer::Ok(7));
        assert!(!t.complete(99, Answer::Ok(0)), "unknown id");
        let rx2 = t.insert(2);
        assert!(t.remove(2));
        assert!(
            !t.complete(2, Answer::Ok(1)),
            "answer after the waiter gave up"
        );
        assert!(rx2.recv().is_err());
    }

    #[test]
    fn fail_all_fails_every_waiter_immediately() {
        let t = Arc::new(PendingTable::new());
        let waiters: Vec<_> = (1..=50u64)
            .map(|id| {
                let rx = t.insert(id);
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let r = rx.recv_timeout(Duration::from_secs(30)).unwrap();
                    (r, start.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(t.fail_all(|| Answer::Lost), 50);
        assert_eq!(t.len(), 0);
        for w in waiters {
            let (r, waited) = w.join().unwrap();
            assert_eq!(r, Answer::Lost);
            assert!(
                waited < Duration::from_secs(5),
                "failed at once, not at the deadline"
            );
        }
        // A waiter registered after the failure is unaffected.
        let rx = t.insert(51);
        assert!(t.complete(51, Answer::Ok(1)));
        assert_eq!(rx.recv().unwrap(), Answer::Ok(1));
    }

    #[test]
    fn deadlines_fire_in_order_and_cancel() {
        let d = Arc::new(Deadlines::new());
        let now = Instant::now();
        assert!(d.add(now + Duration::from_millis(30), 3, DeadlineKind::Call));
        assert!(!d.add(now + Duration::from_millis(10), 1, DeadlineKind::Ping));
        d.add(now + Duration::from_millis(20), 2, DeadlineKind::Request);
        d.cancel(now + Duration::from_millis(20), 2);
        assert_eq!(d.len(), 2);
        let (tx, rx) = flume::unbounded();
        let d2 = d.clone();
        let t = std::thread::spawn(move || d2.run(|id, kind| tx.send((id, kind)).unwrap()));
        assert_eq!(rx.recv().unwrap(), (1, DeadlineKind::Ping));
        assert_eq!(rx.recv().unwrap(), (3, DeadlineKind::Call));
        assert!(Instant::now() >= now + Duration::from_millis(30));
        d.stop();
        t.join().unwrap();
    }
}
