//! [`Relays`]: peer-to-peer calls waiting for an answer from a peer on this shard.
//!
//! Keyed by (callee session, the id the server gave the request toward the callee), so the
//! callee's RpcResponse or RpcError finds its caller in one lookup, and a callee that leaves
//! finds its calls in one range (ordered map: no scan of other callees' calls). Deadlines sit in a
//! min-heap: expiring costs per expired call, not a scan of every pending call. An entry
//! answered before its deadline stays in the heap until that deadline and is skipped then;
//! so that quickly answered calls with long deadlines cannot grow the heap without bound,
//! it is rebuilt from the waiting calls when it holds more than twice as many entries.
//!
//! [`RemoteCalls`]: this shard's peers' calls to peers of other nodes, on the caller's side;
//! the same table ([`Waiting`]) keyed by the caller's session and request id.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Instant;

use crate::msg::ReplyTo;

/// Calls waiting for a local callee: (callee session, the id the server gave the request
/// toward the callee) -> the caller to answer.
pub(crate) type Relays = Waiting<ReplyTo>;

/// Calls from this shard's peers to peers of other nodes: (caller session, the caller's
/// request id) -> the callee's node (virtual shard). The answer comes from that node; this
/// table is what fails the call when the node dies or never answers (`ShardMsg::NodeGone`,
/// the deadline).
pub(crate) type RemoteCalls = Waiting<usize>;

/// Calls keyed by (session, request id), each with a value and a deadline (module doc).
pub(crate) struct Waiting<V> {
    waiting: BTreeMap<(u64, u64), (V, Instant)>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, u64)>>,
}

impl<V> Default for Waiting<V> {
    fn default() -> Self {
        Waiting {
            waiting: BTreeMap::new(),
            deadlines: BinaryHeap::new(),
        }
    }
}

impl<V: Copy> Waiting<V> {
    pub fn insert(&mut self, session: u64, id: u64, value: V, deadline: Instant) {
        self.waiting.insert((session, id), (value, deadline));
        self.deadlines.push(Reverse((deadline, session, id)));
        if self.deadlines.len() > 2 * self.waiting.len() + 1024 {
            self.deadlines = self
                .waiting
                .iter()
                .map(|(&(s, i), &(_, d))| Reverse((d, s, i)))
                .collect();
        }
    }

    /// The call (session, id) is answered: its value, if it still waited.
    pub fn answer(&mut self, session: u64, id: u64) -> Option<V> {
        self.waiting.remove(&(session, id)).map(|(v, _)| v)
    }

    /// Every call of `session` (its peer left), taken out.
    pub fn session_gone(&mut self, session: u64) -> Vec<V> {
        let keys: Vec<(u64, u64)> = self
            .waiting
            .range((session, 0)..=(session, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        keys.iter()
            .filter_map(|k| self.waiting.remove(k).map(|(v, _)| v))
            .collect()
    }

    /// Every call whose value is `value` (a node that is gone), taken out. A scan: nodes
    /// die rarely.
    pub fn value_gone(&mut self, value: V) -> Vec<(u64, u64)>
    where
        V: PartialEq,
    {
        let keys: Vec<(u64, u64)> = self
            .waiting
            .iter()
            .filter(|(_, (v, _))| *v == value)
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.waiting.remove(k);
        }
        keys
    }

    /// Calls whose deadline has passed, taken out, with their keys.
    pub fn expired(&mut self, now: Instant) -> Vec<((u64, u64), V)> {
        let mut out = Vec::new();
        while let Some(Reverse((deadline, session, id))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            // Skip entries answered already (or replaced by a later call with the same key).
            if self
                .waiting
                .get(&(session, id))
                .is_some_and(|(_, d)| *d == deadline)
            {
                out.extend(
                    self.waiting
                        .remove(&(session, id))
                        .map(|(v, _)| ((session, id), v)),
                );
            }
        }
        if self.waiting.is_empty() {
            self.deadlines.clear();
        }
        out
    }

    /// The earliest deadline still to check.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((d, _, _))| *d)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn to(id: u64) -> ReplyTo {
        ReplyTo {
            shard: 0,
            session: 1,
            id,
        }
    }

    #[test]
    fn answered_gone_and_expired_each_once() {
        let t0 = Instant::now();
        let mut r = Relays::default();
        r.insert(10, 1, to(1), t0 + Duration::from_millis(5));
        r.insert(10, 2, to(2), t0 + Duration::from_millis(10));
        r.insert(11, 3, to(3), t0 + Duration::from_millis(1));
        assert_eq!(r.answer(10, 1), Some(to(1)));
        assert_eq!(r.answer(10, 1), None);
        assert_eq!(r.expired(t0), vec![]);
        assert_eq!(
            r.expired(t0 + Duration::from_millis(6)),
            vec![((11, 3), to(3))]
        );
        assert_eq!(r.session_gone(10), vec![to(2)]);
        assert_eq!(r.expired(t0 + Duration::from_secs(1)), vec![]);
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn answered_calls_do_not_pile_up_in_the_heap() {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut r = Relays::default();
        for id in 0..100_000 {
            r.insert(1, id, to(id), far);
            assert_eq!(r.answer(1, id), Some(to(id)));
        }
        assert!(
            r.deadlines.len() <= 1025,
            "heap holds {}",
            r.deadlines.len()
        );
    }
}
