//! The connection state machine and the last close reason.

use std::fmt;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use peerd_codec::Code;

/// Where a [`Peer`](crate::Peer) is in its life.
///
/// ```text
/// Idle -> Connecting -> Negotiating -> Active <-> Reconnecting
///                                        \            |
///                                         +-> Closed <+
/// ```
///
/// `Closed` is terminal: a closed peer never connects again (make a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Created with [`Peer::new`](crate::Peer::new), `connect()` not called yet. Handlers
    /// and listeners can be registered so that they see the very first frame.
    Idle,
    /// TCP connect in progress (first connection).
    Connecting,
    /// Hello sent, waiting for Welcome (first connection).
    Negotiating,
    /// The session is up: calls and requests are sent.
    Active,
    /// The connection dropped (retrying with backoff), or the server is draining it (the
    /// client half-closed it and reconnects as soon as the server closes it). What is sent
    /// meanwhile waits in the reconnect queue, within its bounds
    /// ([`PeerOptions::reconnect_queue_timeout`](crate::PeerOptions)).
    Reconnecting,
    /// Disconnected for good.
    Closed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Negotiating => "negotiating",
            State::Active => "active",
            State::Reconnecting => "reconnecting",
            State::Closed => "closed",
        })
    }
}

/// Which end ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Initiator {
    /// The server sent Close (or Reject).
    Server,
    /// This client closed it (`disconnect()`, a protocol violation by the server, a dead
    /// connection detected by keepalive).
    Client,
    /// Neither said so: the transport failed (EOF, reset, ...).
    Transport,
}

/// Why the last connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The Close code, when one was sent or received.
    pub code: Option<u16>,
    /// Human-readable detail.
    pub reason: String,
    /// Who ended it.
    pub initiator: Initiator,
}

impl CloseInfo {
    /// The code as a known [`Code`], if it is one.
    pub fn known_code(&self) -> Option<Code> {
        self.code.and_then(Code::from_u16)
    }
}

/// The current state with a condition variable for `when_ready`.
///
/// Transitions out of `Closed` are refused, so a background thread that loses a race with
/// `disconnect()` cannot resurrect the peer.
#[derive(Debug)]
pub(crate) struct StateCell {
    /// The state and how many changes led to it: a listener registered at version `v`
    /// is only told about changes numbered above `v`, even if older notifications are
    /// still queued for the dispatcher.
    cur: Mutex<(State, u64)>,
    cv: Condvar,
    /// `state_changes()` receivers, fed right here under the same lock as the change:
    /// in order, at once, and never held up by a slow handler on the dispatcher.
    channels: Mutex<Vec<flume::Sender<State>>>,
    /// Threads inside `wait_active`, counted under the lock: a test waits for this instead
    /// of sleeping, and then knows the change it makes wakes a thread that is really waiting.
    #[cfg(test)]
    waiters: std::sync::atomic::AtomicUsize,
}

impl StateCell {
    pub(crate) fn new() -> Self {
        StateCell {
            cur: Mutex::new((State::Idle, 0)),
            cv: Condvar::new(),
            channels: Mutex::new(Vec::new()),
            #[cfg(test)]
            waiters: Default::default(),
        }
    }

    pub(crate) fn get(&self) -> State {
        self.cur.lock().unwrap().0
    }

    /// Feed every later change into `tx` (non-blocking: a full receiver misses changes,
    /// a dropped one is forgotten).
    pub(crate) fn subscribe(&self, tx: flume::Sender<State>) {
        let _cur = self.cur.lock().unwrap();
        self.channels.lock().unwrap().push(tx);
    }

    fn changed(&self, to: State) {
        self.cv.notify_all();
        self.channels
            .lock()
            .unwrap()
            .retain(|tx| !matches!(tx.try_send(to), Err(flume::TrySendError::Disconnected(_))));
    }

    /// The number of changes so far.
    pub(crate) fn version(&self) -> u64 {
        self.cur.lock().unwrap().1
    }

    /// Move to `to`; returns the change's version, or `None` when nothing changed (same
    /// state, or already Closed).
    pub(crate) fn set(&self, to: State) -> Option<u64> {
        let mut cur = self.cur.lock().unwrap();
        if cur.0 == to || cur.0 == State::Closed {
            return None;
        }
        cur.0 = to;
        cur.1 += 1;
        self.changed(to);
        Some(cur.1)
    }

    /// Move to `to` only from `from`.
    pub(crate) fn transition(&self, from: State, to: State) -> Option<u64> {
        let mut cur = self.cur.lock().unwrap();
        if cur.0 != from || cur.0 == State::Closed {
            return None;
        }
        cur.0 = to;
        cur.1 += 1;
        self.changed(to);
        Some(cur.1)
    }

    /// Wait until Active (Ok) or Closed (Err(Closed)) or the timeout (Err(None)).
    pub(crate) fn wait_active(&self, timeout: Duration) -> Result<(), Option<State>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut cur = self.cur.lock().unwrap();
        #[cfg(test)]
        self.waiters
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let r = loop {
            match cur.0 {
                State::Active => break Ok(()),
                State::Closed => break Err(Some(State::Closed)),
                State::Idle => break Err(Some(State::Idle)),
                _ => {}
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                break Err(None);
            }
            cur = self.cv.wait_timeout(cur, left).unwrap().0;
        };
        #[cfg(test)]
        self.waiters
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn closed_is_terminal() {
        let s = StateCell::new();
        assert_eq!(s.set(State::Connecting), Some(1));
        assert_eq!(s.set(State::Connecting), None);
        assert_eq!(s.transition(State::Idle, State::Active), None);
        assert_eq!(s.set(State::Closed), Some(2));
        assert_eq!(s.set(State::Active), None);
        assert_eq!(s.transition(State::Closed, State::Active), None);
        assert_eq!(s.version(), 2);
        assert_eq!(s.get(), State::Closed);
    }

    #[test]
    fn wait_active_wakes_on_transition() {
        let s = Arc::new(StateCell::new());
        s.set(State::Reconnecting);
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_active(Duration::from_secs(10)));
        // Counted under the lock, which the waiter gives up only by waiting: the change
        // below (which takes the lock) wakes a thread that is really waiting.
        while s.waiters.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        s.set(State::Active);
        assert_eq!(t.join().unwrap(), Ok(()));
        let (tx, rx) = flume::bounded(8);
        s.subscribe(tx);
        s.set(State::Reconnecting);
        assert_eq!(s.wait_active(Duration::from_millis(10)), Err(None));
        assert_eq!(rx.try_recv(), Ok(State::Reconnecting));
        s.set(State::Closed);
        assert_eq!(
            s.wait_active(Duration::from_secs(1)),
            Err(Some(State::Closed))
        );
    }
}
