//! [`TopicMembers`]: this shard's member connections of each topic, for fan-out without
//! touching shared state. Which *shards* have members is in the shared `topic_index`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::frame::Frame;

use crate::conn::Conn;

#[derive(Default)]
pub(crate) struct TopicMembers {
    map: RefCell<HashMap<Arc<str>, Vec<Rc<Conn>>>>,
    /// Memberships in `map`, all topics together (a gauge for the metrics, kept as they
    /// change so a scrape does not walk the map).
    count: Cell<usize>,
}

impl TopicMembers {
    pub fn add(&self, topic: &Arc<str>, conn: Rc<Conn>) {
        self.map
            .borrow_mut()
            .entry(topic.clone())
            .or_default()
            .push(conn);
        self.count.set(self.count.get() + 1);
    }

    /// Memberships held by this shard's peers.
    pub fn count(&self) -> usize {
        self.count.get()
    }

    pub fn remove(&self, topic: &str, session: u64) {
        let mut map = self.map.borrow_mut();
        if let Some(v) = map.get_mut(topic) {
            let before = v.len();
            v.retain(|c| c.session != session);
            self.count.set(self.count.get() - (before - v.len()));
            if v.is_empty() {
                map.remove(topic);
            }
        }
    }

    /// Queue `frame` to every local member of `topic` except session `exclude`. Queuing
    /// never tears a connection down on the spot (a slow consumer is only marked closing),
    /// so the member list can be walked in place.
    pub fn deliver(&self, topic: &str, frame: &Frame, exclude: u64) {
        if let Some(members) = self.map.borrow().get(topic) {
            for c in members {
                if c.session != exclude {
                    let _ = c.queue(frame);
                }
            }
        }
    }
}
