//! The reconnect queue: what the application sends while the peer is not connected
//! (reconnecting after a close it reconnects after, or draining: PROTOCOL.md §6.10), held
//! for the next connection instead of failing at once.
//!
//! - **What.** Every frame the application sends: events, broadcasts, publishes, topic
//!   sends, signals, calls and Status-confirmed requests (join, leave, watch, list peers).
//!   Not `ping` (it measures the live connection) nor `refresh_token` (its credentials
//!   are presented by the next Hello anyway), not answers (they belong to the connection
//!   their call came on), not Unwatch (the next connection has no watch to stop).
//! - **When.** Only once the peer has had a session (the first `connect()` is not
//!   retried, so before it sends fail with `NotConnected`) and only while reconnecting is
//!   possible: with reconnect or the queue disabled, sends fail at once as before.
//! - **Bounds.** Time: a frame waits at most `reconnect_queue_timeout`; then a request
//!   fails with `QueueTimeout`, and a fire-and-forget frame is dropped and reported
//!   through `on_error` (code `timeout`). Size: `reconnect_queue_frames` frames and
//!   `reconnect_queue_bytes` encoded bytes; a send that does not fit fails at once with
//!   `QueueFull` and what is queued stays (the oldest are never dropped for it: their
//!   senders were told they were accepted). A request waiting in the queue also keeps its
//!   own deadline (`Timeout`).
//! - **Order.** The next connection first re-joins and re-watches, then writes the queue
//!   in order, and only then takes direct sends (the link is published under the queue's
//!   lock once it is empty), so nothing sent later overtakes what was queued.
//! - **End.** When the peer closes for good (`disconnect()`, a final close, reconnect gave
//!   up) everything queued fails with `Closed`: it was never sent.
//!
//! Frames are encoded when queued (the caller's borrowed arguments are gone by the time
//! they are written) against the last session's frame limit, and checked again against
//! the next connection's. The queue is a `VecDeque` that allocates on the first frame
//! queued and is released when it empties: an idle or connected peer pays nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerd_codec::FrameKind;

use crate::error::SendFailure;
use crate::options::PeerOptions;
use crate::pending::Awaiting;

/// One frame waiting for the next connection.
pub(crate) struct Queued {
    /// The whole frame, header and body.
    pub(crate) frame: Bytes,
    pub(crate) kind: FrameKind,
    /// When the queue gives up on it.
    pub(crate) until: Instant,
    /// The waiter of a request (its table and id); `None` for a fire-and-forget frame.
    pub(crate) awaits: Option<(Arc<dyn Awaiting>, u64)>,
}

impl Queued {
    /// A frame whose request nobody waits for any more (it timed out or was dropped):
    /// it is not worth sending, nor room in the queue.
    fn abandoned(&self) -> bool {
        self.awaits
            .as_ref()
            .is_some_and(|(t, id)| !t.is_waiting(*id))
    }
}

/// What [`Outbox::push`] did.
pub(crate) enum Pushed {
    /// Queued. `arm`: the queue was empty; its expiry timer must be armed for this time.
    Queued { arm: Option<Instant> },
    /// A usable connection is published now: send on it instead.
    Retry,
}

/// The reconnect queue and its bounds.
pub(crate) struct Outbox {
    q: Mutex<Queue>,
    /// The options allow queueing (reconnect on, bounds non-zero).
    allowed: bool,
    timeout: Duration,
    max_frames: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Queued>,
    bytes: usize,
    /// The peer has had a session, so a send without a connection waits for the next.
    enabled: bool,
    /// The peer closed for good: nothing is queued any more.
    closed: bool,
}

impl Outbox {
    pub(crate) fn new(opts: &PeerOptions) -> Outbox {
        Outbox {
            q: Mutex::new(Queue::default()),
            allowed: opts.queues_while_reconnecting(),
            timeout: opts.reconnect_queue_timeout,
            max_frames: opts.reconnect_queue_frames,
            max_bytes: opts.reconnect_queue_bytes,
        }
    }

    /// The first session is up: from now on, sends without a connection are queued (if
    /// the options allow it).
    pub(crate) fn enable(&self) {
        if self.allowed {
            self.q.lock().unwrap().enabled = true;
        }
    }

    /// Whether a send without a connection would be queued now.
    pub(crate) fn is_open(&self) -> bool {
        let q = self.q.lock().unwrap();
        q.enabled && !q.closed
    }

    /// Queue `frame`, unless `direct()` says a usable connection was published meanwhile
    /// (asked under the queue's lock, which publishing takes too: see [`Outbox::pop`]).
    pub(crate) fn push(
        &self,
        direct: impl FnOnce() -> bool,
        frame: Bytes,
        kind: FrameKind,
        awaits: Option<(Arc<dyn Awaiting>, u64)>,
    ) -> Result<Pushed, SendFailure> {
        let mut q = self.q.lock().unwrap();
        if q.closed {
            return Err(SendFailure::Closed);
        }
        if direct() {
            return Ok(Pushed::Retry);
        }
        if !q.enabled {
            return Err(SendFailure::NotConnected);
        }
        let fits =
            |q: &Queue| q.items.len() < self.max_frames && q.bytes + frame.len() <= self.max_bytes;
        if !fits(&q) {
            // Requests whose callers gave up still hold room until they would have been
            // written; reclaim it before refusing anyone.
            let before = q.items.len();
            q.items.retain(|i| !i.abandoned());
            if q.items.len() != before {
                q.bytes = q.items.iter().map(|i| i.frame.len()).sum();
            }
            if !fits(&q) {
                return Err(SendFailure::QueueFull);
            }
        }
        let until = deadline_after(self.timeout);
        let arm = q.items.is_empty().then_some(until);
        q.bytes += frame.len();
        q.items.push_back(Queued {
            frame,
            kind,
            until,
            awaits,
        });
        Ok(Pushed::Queued { arm })
    }

    /// The next frame to write, in order. When there is none, `publish()` runs under the
    /// queue's lock (it makes the new connection the one direct sends use), so a send
    /// either finds the frames before it written or is queued behind them.
    pub(crate) fn pop(&self, publish: impl FnOnce()) -> Option<Queued> {
        let mut q = self.q.lock().unwrap();
        match q.items.pop_front() {
            Some(item) => {
                q.bytes -= item.frame.len();
                Some(item)
            }
            None => {
                // Release the buffer: a connected peer pays nothing for the queue.
                q.items = VecDeque::new();
                q.bytes = 0;
                publish();
                None
            }
        }
    }

    /// Put back at the front a frame [`pop`](Self::pop) gave that could not be written
    /// (nothing of it was). `Err` gives it back when the queue closed meanwhile.
    pub(crate) fn unpop(&self, item: Queued) -> Result<(), Queued> {
        let mut q = self.q.lock().unwrap();
        if q.closed {
            return Err(item);
        }
        q.bytes += item.frame.len();
        q.items.push_front(item);
        Ok(())
    }

    /// Take out the frames whose time is up at `now` (they are to be failed), and say when
    /// the next one's is.
    pub(crate) fn expire(&self, now: Instant) -> (Vec<Queued>, Option<Instant>) {
        let mut q = self.q.lock().unwrap();
        let mut expired = Vec::new();
        while q.items.front().is_some_and(|i| i.until <= now) {
            let item = q.items.pop_front().expect("front exists");
            q.bytes -= item.frame.len();
            expired.push(item);
        }
        (expired, q.items.front().map(|i| i.until))
    }

    /// The peer closed for good: take out everything (to be failed) and refuse more.
    pub(crate) fn close(&self) -> Vec<Queued> {
        let mut q = self.q.lock().unwrap();
        q.closed = true;
        q.bytes = 0;
        std::mem::take(&mut q.items).into()
    }

    /// Frames and bytes queued now.
    pub(crate) fn len(&self) -> (usize, usize) {
        let q = self.q.lock().unwrap();
        (q.items.len(), q.bytes)
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.q.lock().unwrap().items.capacity()
    }
}

/// `now + d`, or a year from now when that does not fit an `Instant`.
fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86400 * 365))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RequestError;
    use crate::pending::{PendingTable, Waiter};

    fn outbox(frames: usize, bytes: usize, timeout: Duration) -> Outbox {
        let o = Outbox::new(
            &PeerOptions::new()
                .reconnect_queue_limits(frames, bytes)
                .reconnect_queue_timeout(timeout),
        );
        o.enable();
        o
    }

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    fn push(o: &Outbox, n: usize) -> Result<Pushed, SendFailure> {
        o.push(|| false, frame(n), FrameKind::Event, None)
    }

    #[test]
    fn nothing_is_queued_before_the_first_session_or_when_disabled() {
        let o = Outbox::new(&PeerOptions::new());
        assert!(matches!(push(&o, 1), Err(SendFailure::NotConnected)));
        assert!(!o.is_open());
        let off = Outbox::new(&PeerOptions::new().no_reconnect_queue());
        off.enable();
        assert!(matches!(push(&off, 1), Err(SendFailure::NotConnected)));
        assert_eq!(o.capacity(), 0, "nothing allocated");
    }

    #[test]
    fn bounds_refuse_the_new_frame_and_keep_the_old_ones() {
        let o = outbox(3, 100, Duration::from_secs(10));
        assert!(matches!(push(&o, 10), Ok(Pushed::Queued { arm: Some(_) })));
        assert!(matches!(push(&o, 10), Ok(Pushed::Queued { arm: None })));
        assert!(matches!(push(&o, 81), Err(SendFailure::QueueFull)), "bytes");
        assert!(push(&o, 80).is_ok());
        assert!(matches!(push(&o, 1), Err(SendFailure::QueueFull)), "frames");
        assert_eq!(o.len(), (3, 100));
        // A usable connection published meanwhile: send on it.
        assert!(matches!(
            o.push(|| true, frame(1), FrameKind::Event, None),
            Ok(Pushed::Retry)
        ));
    }

    #[test]
    fn abandoned_requests_give_their_room_back() {
        let o = outbox(2, 1000, Duration::from_secs(10));
        let t = Arc::new(PendingTable::<u32, RequestError>::new());
        let w = Waiter::queued(&t, 7, Duration::from_secs(30));
        let awaits: Arc<dyn Awaiting> = t.clone();
        assert!(o
            .push(|| false, frame(10), FrameKind::Publish, Some((awaits, 7)))
            .is_ok());
        assert!(push(&o, 10).is_ok());
        assert!(matches!(push(&o, 10), Err(SendFailure::QueueFull)));
        drop(w);
        assert!(
            push(&o, 10).is_ok(),
            "the dropped request's frame made room"
        );
        assert_eq!(o.len(), (2, 20));
    }

    #[test]
    fn frames_come_out_in_order_then_the_link_is_published_and_memory_released() {
        let o = outbox(10, 1000, Duration::from_secs(10));
        for n in 1..=3 {
            push(&o, n).unwrap();
        }
        let mut published = false;
        let mut seen = Vec::new();
        while let Some(i) = o.pop(|| published = true) {
            seen.push(i.frame.len());
        }
        assert_eq!(seen, [1, 2, 3]);
        assert!(published);
        assert_eq!((o.len(), o.capacity()), ((0, 0), 0));
        // A frame that could not be written goes back to the front.
        push(&o, 5).unwrap();
        push(&o, 6).unwrap();
        let first = o.pop(|| unreachable!()).unwrap();
        assert!(o.unpop(first).is_ok());
        assert_eq!(o.pop(|| unreachable!()).unwrap().frame.len(), 5);
    }

    #[test]
    fn expiry_takes_the_due_frames_and_names_the_next_deadline() {
        let o = outbox(10, 1000, Duration::from_millis(50));
        push(&o, 1).unwrap();
        let (none, next) = o.expire(Instant::now());
        assert!(none.is_empty());
        let next = next.expect("one queued");
        let (due, after) = o.expire(next);
        assert_eq!((due.len(), after.is_none()), (1, true));
        assert_eq!(o.len(), (0, 0));
    }

    #[test]
    fn closing_takes_everything_and_refuses_more() {
        let o = outbox(10, 1000, Duration::from_secs(10));
        push(&o, 1).unwrap();
        push(&o, 2).unwrap();
        assert_eq!(o.close().len(), 2);
        assert!(matches!(push(&o, 1), Err(SendFailure::Closed)));
        assert!(!o.is_open());
        let mut published = false;
        assert!(o.pop(|| published = true).is_none());
        assert!(published, "the caller checks the closed gate itself");
    }
}
