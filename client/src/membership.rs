//! What this client has joined and watches: the joined set filters incoming topic
//! messages (a message for a topic not joined is discarded on receipt, the peersockets
//! rule), and both sets are re-established after a reconnect.

use std::collections::{HashMap, HashSet};

/// A presence watch target: `None` = every connected peer, `Some(topic)` = its members.
pub(crate) type WatchKey = Option<String>;

/// What the client has joined and watches; shared by user threads (join/leave/watch), the
/// reader (message filter) and the supervisor (resync after reconnect).
#[derive(Debug, Default)]
pub(crate) struct TopicState {
    joined: HashSet<String>,
    watches: HashMap<WatchKey, usize>,
}

impl TopicState {
    /// Whether a TopicMessage for `topic` is delivered (joined) or discarded.
    pub(crate) fn accepts(&self, topic: &str) -> bool {
        self.joined.contains(topic)
    }

    /// Record a join (before the Join frame is sent, so messages that follow the server's
    /// acceptance are not discarded). True if it was not joined already.
    pub(crate) fn mark_joined(&mut self, topic: &str) -> bool {
        self.joined.insert(topic.to_string())
    }

    pub(crate) fn forget_topic(&mut self, topic: &str) -> bool {
        self.joined.remove(topic)
    }

    pub(crate) fn joined_topics(&self) -> Vec<String> {
        let mut v: Vec<String> = self.joined.iter().cloned().collect();
        v.sort();
        v
    }

    /// One more watcher on `key`; true if it is the first (a Watch frame is needed).
    pub(crate) fn add_watch(&mut self, key: &WatchKey) -> bool {
        let n = self.watches.entry(key.clone()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// One watcher fewer on `key`; true if it was the last (an Unwatch frame is due).
    pub(crate) fn remove_watch(&mut self, key: &WatchKey) -> bool {
        match self.watches.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.watches.remove(key);
                true
            }
            None => false,
        }
    }

    pub(crate) fn watch_keys(&self) -> Vec<WatchKey> {
        let mut v: Vec<WatchKey> = self.watches.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_for_unjoined_topics_are_discarded() {
        let mut t = TopicState::default();
        assert!(!t.accepts("chat"));
        assert!(t.mark_joined("chat"));
        assert!(!t.mark_joined("chat"), "joining twice is one membership");
        assert!(t.accepts("chat"));
        assert!(!t.accepts("Chat"), "names are exact");
        assert!(!t.accepts("other"));
        assert!(t.forget_topic("chat"));
        assert!(!t.accepts("chat"), "left: in-flight messages are dropped");
    }

    #[test]
    fn joined_topics_and_watches_are_listed_for_resync() {
        let mut t = TopicState::default();
        t.mark_joined("b");
        t.mark_joined("a");
        assert_eq!(t.joined_topics(), vec!["a".to_string(), "b".to_string()]);
        let g: WatchKey = None;
        let r: WatchKey = Some("room".into());
        assert!(t.add_watch(&g));
        assert!(
            !t.add_watch(&g),
            "second watcher shares the server-side watch"
        );
        assert!(t.add_watch(&r));
        assert_eq!(t.watch_keys(), vec![None, Some("room".to_string())]);
        assert!(!t.remove_watch(&g));
        assert!(t.remove_watch(&g), "last watcher gone: Unwatch");
        assert!(!t.remove_watch(&g));
        assert_eq!(t.watch_keys(), vec![Some("room".to_string())]);
    }
}
