//! [`TopicIndex`]: topic membership shared by every shard.
//!
//! For each topic: its members (peer id -> shard, session), how many members each shard
//! has, and how many presence watchers each shard has. It is the source of truth for
//! membership, member listings and limits, and for deciding *which shards* a publish or a
//! presence change must reach. Every method takes and releases its own lock (one stripe of
//! a [`Striped`] map); callers never see a guard.
//!
//! Presence consistency rests on one rule kept here: a watch is registered and its snapshot
//! taken under the same stripe lock that a join or leave takes to decide which shards to
//! notify. So every change is either in a watcher's snapshot or sent to it as an event,
//! never both and never neither (`presence` explains the rest).

use std::collections::HashMap;
use std::sync::Arc;

use crate::directory::sorted;
use crate::striped::Striped;

#[derive(Default)]
struct TopicEntry {
    members: HashMap<Arc<str>, (usize, u64)>,
    /// Members per local shard; members of other nodes (at virtual shards, see
    /// `cluster::link`) are in `members` only.
    per_shard: Vec<u32>,
    watchers: Vec<u32>,
    /// In a cluster: this node's subscription to the topic's subject is confirmed, so a
    /// join here may be answered at once (see `topics::join`).
    subscribed: bool,
}

impl TopicEntry {
    fn sized(shards: usize) -> TopicEntry {
        TopicEntry {
            members: HashMap::new(),
            per_shard: vec![0; shards],
            watchers: vec![0; shards],
            subscribed: false,
        }
    }

    fn local_count(&self) -> u32 {
        self.per_shard.iter().sum()
    }

    fn is_unused(&self) -> bool {
        self.members.is_empty() && self.watchers.iter().all(|w| *w == 0)
    }
}

fn shards_with(counts: &[u32]) -> Vec<usize> {
    counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, _)| i)
        .collect()
}

/// The topic is at its member limit.
#[derive(Debug)]
pub(crate) struct TopicFull;

/// What a join or leave changed.
pub(crate) struct Change {
    /// The shards with watchers of the topic, to be told.
    pub notify: Vec<usize>,
    /// The topic's local membership started or ended (in a cluster, the node's
    /// subscription to the topic must follow).
    pub interest: bool,
    /// The node's subscription to the topic is confirmed (always true off a cluster's
    /// first member: see `topics::join`).
    pub subscribed: bool,
}

/// Shared topic membership, striped by topic name.
pub(crate) struct TopicIndex {
    map: Striped<TopicEntry>,
    shards: usize,
}

impl TopicIndex {
    pub fn new(shards: usize) -> TopicIndex {
        TopicIndex {
            map: Striped::new(),
            shards,
        }
    }

    /// Add a member (at a local shard, or at a virtual one: a member on another node).
    pub fn join(
        &self,
        topic: &Arc<str>,
        peer: &Arc<str>,
        at: (usize, u64),
        max_members: u32,
    ) -> Result<Change, TopicFull> {
        self.map.write(topic, |map| {
            let e = map
                .entry(topic.clone())
                .or_insert_with(|| TopicEntry::sized(self.shards));
            if e.members.len() >= max_members as usize {
                if e.is_unused() {
                    map.remove(topic);
                }
                return Err(TopicFull);
            }
            e.members.insert(peer.clone(), at);
            let mut interest = false;
            if let Some(n) = e.per_shard.get_mut(at.0) {
                *n += 1;
                interest = e.local_count() == 1;
            }
            Ok(Change {
                notify: shards_with(&e.watchers),
                interest,
                subscribed: e.subscribed,
            })
        })
    }

    /// Remove a member (only if `at` still owns the membership: a takeover's new session
    /// may have joined already).
    pub fn leave(&self, topic: &str, peer: &str, at: (usize, u64)) -> Change {
        self.map.write(topic, |map| {
            let Some(e) = map.get_mut(topic) else {
                return Change {
                    notify: Vec::new(),
                    interest: false,
                    subscribed: false,
                };
            };
            if e.members.get(peer) == Some(&at) {
                e.members.remove(peer);
            }
            let mut interest = false;
            if let Some(n) = e.per_shard.get_mut(at.0) {
                *n = n.saturating_sub(1);
                interest = e.local_count() == 0;
            }
            let change = Change {
                notify: shards_with(&e.watchers),
                interest,
                subscribed: e.subscribed,
            };
            if e.is_unused() {
                map.remove(topic);
            }
            change
        })
    }

    /// Members of `topic` on this node's shards.
    pub fn local_count(&self, topic: &str) -> u32 {
        self.map.read(topic, |e| e.map_or(0, |e| e.local_count()))
    }

    /// The node's subscription to `topic` is confirmed; false if the topic has no entry
    /// (its members left meanwhile).
    pub fn set_subscribed(&self, topic: &str) -> bool {
        self.map.write(topic, |map| match map.get_mut(topic) {
            Some(e) => {
                e.subscribed = true;
                true
            }
            None => false,
        })
    }

    /// Every membership on this node's shards: (topic, peer, shard, session).
    pub fn local_members(&self) -> Vec<(Arc<str>, Arc<str>, usize, u64)> {
        let mut out = Vec::new();
        self.map.for_each(|topic, e| {
            for (peer, &(shard, session)) in &e.members {
                if shard < self.shards {
                    out.push((topic.clone(), peer.clone(), shard, session));
                }
            }
        });
        out
    }

    /// Register a watcher on `shard` and return the current members (id, session) taken
    /// under the same lock.
    pub fn watch(&self, topic: &Arc<str>, shard: usize) -> Vec<(Arc<str>, u64)> {
        self.map.write(topic, |map| {
            let e = map
                .entry(topic.clone())
                .or_insert_with(|| TopicEntry::sized(self.shards));
            e.watchers[shard] += 1;
            e.members
                .iter()
                .map(|(k, (_, s))| (k.clone(), *s))
                .collect()
        })
    }

    /// Unregister a watcher on `shard`.
    pub fn unwatch(&self, topic: &str, shard: usize) {
        self.map.write(topic, |map| {
            if let Some(e) = map.get_mut(topic) {
                e.watchers[shard] = e.watchers[shard].saturating_sub(1);
                if e.is_unused() {
                    map.remove(topic);
                }
            }
        })
    }

    /// Shards that have members of `topic`.
    pub fn member_shards(&self, topic: &str) -> Vec<usize> {
        self.map.read(topic, |e| {
            e.map(|e| shards_with(&e.per_shard)).unwrap_or_default()
        })
    }

    /// (shard, session) of `peer` if it is a member of `topic`.
    pub fn member(&self, topic: &str, peer: &str) -> Option<(usize, u64)> {
        self.map
            .read(topic, |e| e.and_then(|e| e.members.get(peer).copied()))
    }

    /// Members of `topic`, sorted.
    pub fn members(&self, topic: &str) -> Vec<String> {
        self.map.read(topic, |e| {
            e.map(|e| sorted(e.members.keys().cloned()))
                .unwrap_or_default()
        })
    }

    /// Topics with members or watchers.
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_watch_leave_keeps_entries_only_while_used() {
        let ix = TopicIndex::new(2);
        let t: Arc<str> = "chat".into();
        let a: Arc<str> = "a".into();
        assert_eq!(
            ix.join(&t, &a, (1, 10), 2).unwrap().notify,
            Vec::<usize>::new()
        );
        assert_eq!(ix.member_shards("chat"), vec![1]);
        assert_eq!(ix.watch(&t, 0), vec![(a.clone(), 10)]);
        let b: Arc<str> = "b".into();
        assert_eq!(ix.join(&t, &b, (0, 11), 2).unwrap().notify, vec![0]);
        assert!(ix.join(&t, &"c".into(), (0, 12), 2).is_err());
        assert_eq!(ix.members("chat"), vec!["a", "b"]);
        assert_eq!(ix.leave("chat", "a", (1, 10)).notify, vec![0]);
        let last = ix.leave("chat", "b", (0, 11));
        assert_eq!(last.notify, vec![0]);
        assert!(last.interest, "the last local member left");
        assert_eq!(ix.len(), 1, "the watcher keeps the entry");
        ix.unwatch("chat", 0);
        assert_eq!(ix.len(), 0);
    }

    #[test]
    fn stale_leave_does_not_remove_the_new_session() {
        let ix = TopicIndex::new(1);
        let t: Arc<str> = "t".into();
        let a: Arc<str> = "a".into();
        ix.join(&t, &a, (0, 1), 10).unwrap();
        ix.join(&t, &a, (0, 2), 10).unwrap();
        ix.leave("t", "a", (0, 1));
        assert_eq!(ix.member("t", "a"), Some((0, 2)));
    }
}
