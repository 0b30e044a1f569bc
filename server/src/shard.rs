//! [`Shard`]: one executor's state. Data only; what a shard does lives in the modules that
//! take a `&Rc<Shard>`: `executor` (its tasks), `dispatch` (frames from its peers), `route`
//! (messages from other shards), `lifecycle` (connections ending).
//!
//! Everything here is `Rc`/`RefCell`: a shard's state is touched only by its own thread.
//! Other threads reach a shard only through its flume inbox (`msg::ShardMsg`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::conn::Conn;
use crate::local::Local;
use crate::members::TopicMembers;
use crate::options::Hooks;
use crate::receiver::Receiver;
use crate::relays::{Relays, RemoteCalls};
use crate::shared::Shared;
use crate::util::Notify;
use crate::watchers::Watchers;

/// Joins waiting for their topic's subscription: topic -> (session, request id).
pub(crate) type JoinWaiters = HashMap<Arc<str>, Vec<(u64, u64)>>;

pub(crate) struct Shard {
    /// What connections use: encoder, buffers, write set, gates.
    pub local: Rc<Local>,
    pub hooks: Arc<Hooks>,
    /// This shard's connections by session.
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    /// Local members of each topic.
    pub members: TopicMembers,
    /// Local presence watchers.
    pub watchers: RefCell<Watchers>,
    /// Peer-to-peer calls waiting for a local callee's answer.
    pub relays: RefCell<Relays>,
    /// This shard's peers' calls to peers of other nodes, waiting for an answer.
    pub remote_calls: RefCell<RemoteCalls>,
    /// Wakes the relay expiry task when a call with an earlier deadline is added.
    pub relay_timer: Notify,
    /// In a cluster: joins answered once the node's subscription to their topic is in
    /// place, topic -> (session, request id).
    pub join_waiters: RefCell<JoinWaiters>,
    /// The accept loops, with their listeners' fds; dropped (cancelled) to stop accepting.
    pub accepts: RefCell<Vec<(glommio::Task<()>, i32)>>,
    /// Receives through the shard's own io_uring (`--ring-receives`), or the ring of polls
    /// silent connections are parked on (the default); None: connections read and wait
    /// through glommio (turned off, or the kernel cannot).
    pub receiver: Option<Rc<Receiver>>,
}

/// The shard's receive ring or ring of polls (made on the shard's thread), or None: turned
/// off, or the kernel cannot (logged once, by shard 0).
fn receiver(local: &Local) -> Option<Rc<Receiver>> {
    let first = local.index == 0;
    let config = &local.shared.config;
    if config.ring_receives {
        match Receiver::new() {
            Ok(r) => {
                if let (true, Some(layout)) = (first, r.layout()) {
                    tracing::info!(
                        buffers = layout.count,
                        buffer_bytes = layout.len,
                        incremental = layout.incremental,
                        "receives: multishot through io_uring, with a provided-buffer ring per shard"
                    );
                }
                return Some(Rc::new(r));
            }
            Err(e) if first => {
                tracing::warn!(error = %e, "receives: no multishot receive with provided buffers here; one recv per read, through glommio");
            }
            Err(_) => {}
        }
    } else if first {
        tracing::info!("receives: one recv per read, through glommio (ring receives turned off)");
    }
    if !config.park_idle {
        if first {
            tracing::info!("connections wait on glommio's polls (parking turned off)");
        }
        return None;
    }
    match Receiver::polls() {
        Ok(r) => {
            if first {
                tracing::info!("connections are parked on a ring of multishot polls per shard");
            }
            Some(Rc::new(r))
        }
        Err(e) => {
            if first {
                tracing::warn!(error = %e, "no multishot io_uring polls here: connections wait on glommio's polls");
            }
            None
        }
    }
}

impl Shard {
    pub fn new(local: Local, hooks: Arc<Hooks>) -> Shard {
        let receiver = receiver(&local);
        Shard {
            receiver,
            local: Rc::new(local),
            hooks,
            conns: RefCell::new(HashMap::new()),
            members: TopicMembers::default(),
            watchers: RefCell::new(Watchers::default()),
            relays: RefCell::new(Relays::default()),
            remote_calls: RefCell::new(RemoteCalls::default()),
            relay_timer: Notify::default(),
            join_waiters: RefCell::new(HashMap::new()),
            accepts: RefCell::new(Vec::new()),
        }
    }

    pub fn index(&self) -> usize {
        self.local.index
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.local.shared
    }

    pub fn register(&self, conn: &Rc<Conn>) {
        self.conns.borrow_mut().insert(conn.session, conn.clone());
    }

    pub fn unregister(&self, session: u64) {
        self.conns.borrow_mut().remove(&session);
    }

    pub fn conn(&self, session: u64) -> Option<Rc<Conn>> {
        self.conns.borrow().get(&session).cloned()
    }

    pub fn all_conns(&self) -> Vec<Rc<Conn>> {
        self.conns.borrow().values().cloned().collect()
    }
}
