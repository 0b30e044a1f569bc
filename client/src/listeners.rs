//! Listener registries: callbacks and subscription channels, optionally keyed by name.
//!
//! Lists are copy-on-write (`Arc<Vec<..>>` swapped under a lock): the dispatcher takes a
//! cheap snapshot and calls listeners without holding the lock, so a listener may itself
//! register or remove listeners without deadlocking.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Identifies a registered listener or subscription; pass it to
/// [`Peer::remove_listener`](crate::Peer::remove_listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub(crate) u64);

pub(crate) type Callback<T> = Arc<dyn Fn(T) + Send + Sync + 'static>;

pub(crate) enum Sink<T> {
    Callback(Callback<T>),
    Channel(flume::Sender<T>),
}

impl<T> Clone for Sink<T> {
    fn clone(&self) -> Self {
        match self {
            Sink::Callback(f) => Sink::Callback(f.clone()),
            Sink::Channel(tx) => Sink::Channel(tx.clone()),
        }
    }
}

type List<T> = Arc<Vec<(ListenerId, Sink<T>)>>;

/// Deliver `value` to every sink in `list`. Returns the ids of channel sinks whose receiver
/// is gone, for the caller to remove.
///
/// A channel send blocks while the receiver is full: that is the backpressure path (the
/// dispatcher stalls, its queue fills, the reader stops reading, TCP pushes back on the
/// server). A panicking callback is contained so one bad listener cannot kill the
/// dispatcher thread.
fn deliver<T: Clone>(list: &List<T>, value: T, closed: &AtomicBool) -> Vec<ListenerId> {
    let mut dead = Vec::new();
    let n = list.len();
    let mut value = Some(value);
    for (i, (id, sink)) in list.iter().enumerate() {
        // The last sink gets the value itself; the others get clones.
        let v = if i + 1 == n {
            value.take().expect("value still present for the last sink")
        } else {
            value.clone().expect("value present")
        };
        match sink {
            Sink::Callback(f) => {
                if catch_unwind(AssertUnwindSafe(|| f(v))).is_err() {
                    tracing::error!(listener = id.0, "peerd-client listener panicked");
                }
            }
            Sink::Channel(tx) => {
                if send_blocking(tx, v, closed).is_err() {
                    dead.push(*id);
                }
            }
        }
    }
    dead
}

/// Send, waiting while the receiver is full (backpressure), but give up (dropping the
/// value) once the peer is closed: a closed peer's dispatcher must be able to exit even
/// if a receiver is kept and never read. `Err` when the receiver is gone.
pub(crate) fn send_blocking<T>(
    tx: &flume::Sender<T>,
    mut v: T,
    closed: &AtomicBool,
) -> Result<(), ()> {
    loop {
        match tx.send_timeout(v, Duration::from_millis(100)) {
            Ok(()) => return Ok(()),
            Err(flume::SendTimeoutError::Disconnected(_)) => return Err(()),
            Err(flume::SendTimeoutError::Timeout(back)) => {
                if closed.load(Ordering::SeqCst) {
                    return Ok(());
                }
                v = back;
            }
        }
    }
}

/// An unkeyed list of sinks.
pub(crate) struct Sinks<T> {
    list: Mutex<List<T>>,
    closed: Arc<AtomicBool>,
}

impl<T: Clone> Sinks<T> {
    /// `closed`: the peer's closed flag (see [`send_blocking`]).
    pub(crate) fn new(closed: Arc<AtomicBool>) -> Self {
        Sinks {
            list: Mutex::new(Arc::new(Vec::new())),
            closed,
        }
    }

    pub(crate) fn add(&self, id: ListenerId, sink: Sink<T>) {
        let mut l = self.list.lock().unwrap();
        let mut v = Vec::clone(&l);
        v.push((id, sink));
        *l = Arc::new(v);
    }

    pub(crate) fn remove(&self, id: ListenerId) -> bool {
        let mut l = self.list.lock().unwrap();
        if !l.iter().any(|(i, _)| *i == id) {
            return false;
        }
        let v: Vec<_> = l.iter().filter(|(i, _)| *i != id).cloned().collect();
        *l = Arc::new(v);
        true
    }

    pub(crate) fn emit(&self, value: T) {
        let snapshot = self.list.lock().unwrap().clone();
        if snapshot.is_empty() {
            return;
        }
        for id in deliver(&snapshot, value, &self.closed) {
            self.remove(id);
        }
    }
}

/// Sinks keyed by a name (event name, topic).
pub(crate) struct KeyedSinks<T> {
    map: Mutex<HashMap<String, List<T>>>,
    closed: Arc<AtomicBool>,
}

impl<T: Clone> KeyedSinks<T> {
    /// `closed`: the peer's closed flag (see [`send_blocking`]).
    pub(crate) fn new(closed: Arc<AtomicBool>) -> Self {
        KeyedSinks {
            map: Mutex::new(HashMap::new()),
            closed,
        }
    }

    pub(crate) fn add(&self, key: &str, id: ListenerId, sink: Sink<T>) {
        let mut m = self.map.lock().unwrap();
        let entry = m.entry(key.to_string()).or_default();
        let mut v = Vec::clone(entry);
        v.push((id, sink));
        *entry = Arc::new(v);
    }

    pub(crate) fn remove(&self, id: ListenerId) -> bool {
        let mut m = self.map.lock().unwrap();
        let key = m
            .iter()
            .find(|(_, l)| l.iter().any(|(i, _)| *i == id))
            .map(|(k, _)| k.clone());
        let Some(key) = key else { return false };
        let v: Vec<_> = m[&key].iter().filter(|(i, _)| *i != id).cloned().collect();
        if v.is_empty() {
            m.remove(&key);
        } else {
            m.insert(key, Arc::new(v));
        }
        true
    }

    /// Deliver to the sinks of `key`; false if there were none.
    pub(crate) fn emit(&self, key: &str, value: T) -> bool {
        let snapshot = self.map.lock().unwrap().get(key).cloned();
        let Some(list) = snapshot else { return false };
        for id in deliver(&list, value, &self.closed) {
            self.remove(id);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn callbacks_and_channels_both_receive_and_dropped_channels_are_pruned() {
        let s = KeyedSinks::new(Arc::default());
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        s.add(
            "a",
            ListenerId(1),
            Sink::Callback(Arc::new(move |v: u32| {
                h.fetch_add(v as usize, Ordering::SeqCst);
            })),
        );
        let (tx, rx) = flume::bounded(4);
        s.add("a", ListenerId(2), Sink::Channel(tx));
        let (tx3, rx3) = flume::bounded(4);
        s.add("a", ListenerId(3), Sink::Channel(tx3));
        drop(rx3);
        assert!(s.emit("a", 5));
        assert!(!s.emit("b", 5));
        assert_eq!(hits.load(Ordering::SeqCst), 5);
        assert_eq!(rx.try_recv().unwrap(), 5);
        assert!(
            !s.remove(ListenerId(3)),
            "pruned after its receiver was dropped"
        );
        assert!(s.remove(ListenerId(1)));
        assert!(s.remove(ListenerId(2)));
        assert!(!s.emit("a", 1), "key removed with its last sink");
    }

    #[test]
    fn a_panicking_listener_does_not_stop_the_others() {
        let s = Sinks::new(Arc::default());
        s.add(
            ListenerId(1),
            Sink::Callback(Arc::new(|_: u8| panic!("boom"))),
        );
        let (tx, rx) = flume::bounded(1);
        s.add(ListenerId(2), Sink::Channel(tx));
        s.emit(9);
        assert_eq!(rx.try_recv().unwrap(), 9);
    }

    #[test]
    fn a_full_receiver_blocks_until_read_or_closed() {
        let closed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = flume::bounded(1);
        tx.send(1).unwrap();
        let c = closed.clone();
        let t = std::thread::spawn(move || send_blocking(&tx, 2, &c));
        // Full and not closed: it cannot have returned, however long it has run. (No
        // sleep to let it block first: if it dropped the value instead of waiting, the
        // last receive below fails.)
        assert!(!t.is_finished(), "backpressure: waits for the reader");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(2),
            "the waiting value goes in once there is room"
        );

        let (tx, rx) = flume::bounded(1);
        tx.send(1).unwrap();
        let c = closed.clone();
        let t = std::thread::spawn(move || send_blocking(&tx, 2, &c));
        closed.store(true, Ordering::SeqCst);
        assert_eq!(
            t.join().unwrap(),
            Ok(()),
            "closed: gives up instead of hanging"
        );
        drop(rx);
    }

    #[test]
    fn a_listener_may_register_listeners() {
        let s = Arc::new(Sinks::new(Arc::default()));
        let s2 = s.clone();
        s.add(
            ListenerId(1),
            Sink::Callback(Arc::new(move |_: u8| {
                s2.add(ListenerId(2), Sink::Callback(Arc::new(|_| {})));
            })),
        );
        s.emit(1);
        assert!(s.remove(ListenerId(2)));
    }
}
