//! The dispatcher thread: runs RPC handlers and listeners, feeds subscriptions and
//! presence watchers, in the order frames arrived.
//!
//! It exists so that user code never runs on the reader thread: a handler that blocks, or
//! that makes a blocking `call` whose answer the reader must deliver, cannot deadlock the
//! connection. It also owns the presence views (who is present per watched topic), so the
//! snapshot-to-join conversion, live presence and late-attaching watchers are serialized
//! without a lock around user-visible channels.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use peerd_codec::{Code, RpcError, RpcResponse};

use crate::error::SendFailure;
use crate::link::Link;
use crate::listeners::{send_blocking, KeyedSinks, ListenerId, Sinks};
use crate::membership::WatchKey;
use crate::messages::{
    EventInfo, Handler, PresenceEvent, RpcFailure, RpcRequestInfo, ServerError, SignalInfo,
    TopicMessageInfo,
};
use crate::state::State;

/// What the dispatcher delivers to: RPC handlers, listeners and subscriptions. Registered
/// from any thread; listener lists are copy-on-write, so delivery never holds their locks
/// while user code runs.
pub(crate) struct Registry {
    pub(crate) handlers: RwLock<HashMap<String, Handler>>,
    /// Events and broadcasts, by name.
    pub(crate) events: KeyedSinks<EventInfo>,
    /// Events and broadcasts, whatever their name.
    pub(crate) any_events: Sinks<EventInfo>,
    pub(crate) topic_sinks: KeyedSinks<TopicMessageInfo>,
    pub(crate) signals: Sinks<SignalInfo>,
    pub(crate) errors: Sinks<ServerError>,
    /// State listeners get (state, version) and filter out changes older than their
    /// registration (see `StateCell`).
    pub(crate) states: Sinks<(State, u64)>,
    /// The peer's closed flag: a blocking send to a full receiver gives up once it is set.
    closed: Arc<AtomicBool>,
}

impl Registry {
    pub(crate) fn new(closed: Arc<AtomicBool>) -> Self {
        Registry {
            handlers: RwLock::new(HashMap::new()),
            events: KeyedSinks::new(closed.clone()),
            any_events: Sinks::new(closed.clone()),
            topic_sinks: KeyedSinks::new(closed.clone()),
            signals: Sinks::new(closed.clone()),
            errors: Sinks::new(closed.clone()),
            states: Sinks::new(closed.clone()),
            closed,
        }
    }

    /// Remove a listener or subscription, whichever list it is in.
    pub(crate) fn remove(&self, id: ListenerId) -> bool {
        self.events.remove(id)
            || self.any_events.remove(id)
            || self.topic_sinks.remove(id)
            || self.signals.remove(id)
            || self.errors.remove(id)
            || self.states.remove(id)
    }
}

/// Data from the reader, in arrival order (bounded queue).
pub(crate) enum Work {
    /// An incoming call; answered on the connection it arrived on (ids are per connection).
    Request {
        link: Arc<Link>,
        id: u64,
        info: RpcRequestInfo,
    },
    /// An Event or a Broadcast (`EventInfo::broadcast` says which).
    Event(EventInfo),
    Topic(TopicMessageInfo),
    Signal(SignalInfo),
    Error(ServerError),
    Snapshot {
        key: WatchKey,
        peers: Vec<String>,
    },
    Presence {
        key: WatchKey,
        event: PresenceEvent,
    },
}

/// Low-volume control messages (unbounded queue, drained before each data item).
pub(crate) enum Control {
    /// A state change and its version (see `StateCell`).
    State(State, u64),
    /// A new watcher: it first receives the current members of an already-synced view as
    /// joins, then live changes.
    Attach {
        key: WatchKey,
        id: u64,
        tx: flume::Sender<PresenceEvent>,
    },
    Detach {
        key: WatchKey,
        id: u64,
    },
    /// The peer closed: finish what is queued, then exit.
    Stop,
}

/// Who is present for one watched key, as last told by the server.
#[derive(Default)]
pub(crate) struct View {
    /// A snapshot has been applied; `members` is meaningful.
    synced: bool,
    members: BTreeSet<String>,
    watchers: Vec<(u64, flume::Sender<PresenceEvent>)>,
}

impl View {
    /// Apply a PresenceSnapshot and return the events watchers should see.
    ///
    /// The first snapshot becomes one Join per member (in the server's order, duplicates
    /// removed). A later snapshot (the watch was re-established after a reconnect) becomes
    /// the difference against what watchers already know: Leave for members that are gone,
    /// then Join for newcomers. Watchers thus see one consistent stream across reconnects.
    pub(crate) fn apply_snapshot(&mut self, peers: Vec<String>) -> Vec<PresenceEvent> {
        let mut events = Vec::new();
        if self.synced {
            let next: BTreeSet<String> = peers.iter().cloned().collect();
            for gone in self.members.difference(&next) {
                events.push(PresenceEvent::Leave(gone.clone()));
            }
            for p in peers {
                if !self.members.contains(&p) && !events.contains(&PresenceEvent::Join(p.clone())) {
                    events.push(PresenceEvent::Join(p));
                }
            }
            self.members = next;
        } else {
            for p in peers {
                if self.members.insert(p.clone()) {
                    events.push(PresenceEvent::Join(p));
                }
            }
            self.synced = true;
        }
        events
    }

    /// Apply a live Presence change.
    pub(crate) fn apply(&mut self, event: &PresenceEvent) {
        match event {
            PresenceEvent::Join(p) => {
                self.members.insert(p.clone());
            }
            PresenceEvent::Leave(p) => {
                self.members.remove(p);
            }
        }
    }

    /// What a watcher attaching now must be told first.
    pub(crate) fn catch_up(&self) -> Vec<PresenceEvent> {
        if !self.synced {
            return Vec::new();
        }
        self.members
            .iter()
            .map(|p| PresenceEvent::Join(p.clone()))
            .collect()
    }

    /// Send to every watcher (blocking: backpressure); drop watchers whose receiver is gone.
    fn send_all(&mut self, events: &[PresenceEvent], closed: &AtomicBool) {
        self.watchers.retain(|(_, tx)| {
            events
                .iter()
                .all(|e| send_blocking(tx, e.clone(), closed).is_ok())
        });
    }
}

pub(crate) fn run(reg: Arc<Registry>, work: flume::Receiver<Work>, ctl: flume::Receiver<Control>) {
    let mut views: HashMap<WatchKey, View> = HashMap::new();
    loop {
        // Control first: a watcher attached before its Watch frame was sent must be in
        // place before the snapshot that the Watch provokes is processed.
        while let Ok(c) = ctl.try_recv() {
            if !on_control(&reg, &mut views, c) {
                drain(&reg, &mut views, &work);
                return;
            }
        }
        enum Next {
            Ctl(Result<Control, flume::RecvError>),
            Work(Result<Work, flume::RecvError>),
        }
        let next = flume::Selector::new()
            .recv(&ctl, Next::Ctl)
            .recv(&work, Next::Work)
            .wait();
        match next {
            Next::Ctl(Ok(c)) => {
                if !on_control(&reg, &mut views, c) {
                    drain(&reg, &mut views, &work);
                    return;
                }
            }
            Next::Work(Ok(w)) => on_work(&reg, &mut views, w),
            // The senders live in the peer's shared state; once that is gone (after the
            // Stop that closing sends), nothing more can come.
            Next::Ctl(Err(_)) | Next::Work(Err(_)) => return,
        }
    }
}

/// Deliver what the reader queued before the close, then stop.
fn drain(reg: &Registry, views: &mut HashMap<WatchKey, View>, work: &flume::Receiver<Work>) {
    while let Ok(w) = work.try_recv() {
        on_work(reg, views, w);
    }
}

fn on_control(reg: &Registry, views: &mut HashMap<WatchKey, View>, c: Control) -> bool {
    match c {
        Control::State(s, v) => reg.states.emit((s, v)),
        Control::Attach { key, id, tx } => {
            let view = views.entry(key).or_default();
            let closed = &reg.closed;
            if view
                .catch_up()
                .into_iter()
                .all(|e| send_blocking(&tx, e, closed).is_ok())
            {
                view.watchers.push((id, tx));
            }
        }
        Control::Detach { key, id } => {
            if let Some(view) = views.get_mut(&key) {
                view.watchers.retain(|(i, _)| *i != id);
                if view.watchers.is_empty() {
                    views.remove(&key);
                }
            }
        }
        Control::Stop => return false,
    }
    true
}

fn on_work(reg: &Registry, views: &mut HashMap<WatchKey, View>, w: Work) {
    match w {
        Work::Request { link, id, info } => answer(reg, &link, id, info),
        Work::Event(e) => {
            reg.any_events.emit(e.clone());
            let name = e.name.clone();
            reg.events.emit(&name, e);
        }
        Work::Topic(m) => {
            let topic = m.topic.clone();
            reg.topic_sinks.emit(&topic, m);
        }
        Work::Signal(s) => reg.signals.emit(s),
        Work::Error(e) => reg.errors.emit(e),
        Work::Snapshot { key, peers } => {
            // No view: nobody watches this key any more (unwatched while the snapshot was
            // in flight).
            if let Some(view) = views.get_mut(&key) {
                let events = view.apply_snapshot(peers);
                view.send_all(&events, &reg.closed);
            }
        }
        Work::Presence { key, event } => {
            if let Some(view) = views.get_mut(&key) {
                view.apply(&event);
                view.send_all(std::slice::from_ref(&event), &reg.closed);
            }
        }
    }
}

/// Run the handler for an incoming call and send its answer.
fn answer(reg: &Registry, link: &Link, id: u64, info: RpcRequestInfo) {
    let handler = reg.handlers.read().unwrap().get(&info.method).cloned();
    let result = match handler {
        None => Err(RpcFailure::new(
            Code::MethodNotFound.as_u16(),
            format!("no handler for method {:?}", info.method),
        )),
        Some(h) => match catch_unwind(AssertUnwindSafe(|| h(info))) {
            Ok(r) => r,
            Err(_) => {
                tracing::error!("peerd-client RPC handler panicked");
                Err(RpcFailure::new(Code::Internal.as_u16(), "handler panicked"))
            }
        },
    };
    // Answers go out on the connection the call came on, after a drain's half-close too
    // (the server waits for them before it ends the drain).
    let sent = match &result {
        Ok(v) => link.send_reply(&RpcResponse {
            id,
            result: Cow::Borrowed(v),
        }),
        Err(f) => link.send_reply(&RpcError {
            id,
            code: f.code,
            message: Cow::Borrowed(&f.message),
        }),
    };
    if let Err(SendFailure::Encode(e)) = sent {
        // The result does not fit the server's frame limit: the caller still gets an answer.
        let _ = link.send_reply(&RpcError {
            id,
            code: Code::TooLarge.as_u16(),
            message: Cow::Owned(format!("result too large: {e}")),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PresenceEvent::{Join, Leave};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn first_snapshot_becomes_joins_in_server_order() {
        let mut v = View::default();
        assert!(v.catch_up().is_empty(), "nothing known before the snapshot");
        let ev = v.apply_snapshot(s(&["carol", "alice", "bob", "alice"]));
        assert_eq!(
            ev,
            vec![
                Join("carol".into()),
                Join("alice".into()),
                Join("bob".into())
            ]
        );
    }

    #[test]
    fn live_changes_update_the_view_and_late_watchers_catch_up() {
        let mut v = View::default();
        v.apply_snapshot(s(&["a", "b"]));
        v.apply(&Join("c".into()));
        v.apply(&Leave("a".into()));
        assert_eq!(v.catch_up(), vec![Join("b".into()), Join("c".into())]);
    }

    #[test]
    fn snapshot_after_reconnect_is_a_diff() {
        let mut v = View::default();
        v.apply_snapshot(s(&["a", "b", "c"]));
        let ev = v.apply_snapshot(s(&["b", "d", "c"]));
        assert_eq!(ev, vec![Leave("a".into()), Join("d".into())]);
        assert!(v.apply_snapshot(s(&["b", "c", "d"])).is_empty());
    }

    #[test]
    fn watchers_get_events_and_dropped_watchers_are_removed() {
        let mut v = View::default();
        let (tx1, rx1) = flume::unbounded();
        let (tx2, rx2) = flume::unbounded();
        v.watchers.push((1, tx1));
        v.watchers.push((2, tx2));
        drop(rx2);
        let ev = v.apply_snapshot(s(&["x"]));
        v.send_all(&ev, &AtomicBool::new(false));
        assert_eq!(rx1.try_recv().unwrap(), Join("x".into()));
        assert_eq!(v.watchers.len(), 1);
    }
}
