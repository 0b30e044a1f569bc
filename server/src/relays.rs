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
//! [`RemoteCalls`]: this shard's peers' calls to peers of other nodes, on the caller's side.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Instant;

use crate::msg::ReplyTo;

#[derive(Default)]
pub(crate) struct Relays {
    waiting: BTreeMap<(u64, u64), (ReplyTo, Instant)>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, u64)>>,
}

impl Relays {
    pub fn insert(&mut self, callee_session: u64, id: u64, reply: ReplyTo, deadline: Instant) {
        self.waiting.insert((callee_session, id), (reply, deadline));
        self.deadlines.push(Reverse((deadline, callee_session, id)));
        if self.deadlines.len() > 2 * self.waiting.len() + 1024 {
            self.deadlines = self
                .waiting
                .iter()
                .map(|(&(s, i), &(_, d))| Reverse((d, s, i)))
                .collect();
        }
    }

    /// The caller waiting for the callee's answer to `id`, if any.
    pub fn answer(&mut self, callee_session: u64, id: u64) -> Option<ReplyTo> {
        self.waiting.remove(&(callee_session, id)).map(|(r, _)| r)
    }

    /// Every caller waiting for `callee_session` (it left).
    pub fn callee_gone(&mut self, callee_session: u64) -> Vec<ReplyTo> {
        let keys: Vec<(u64, u64)> = self
            .waiting
            .range((callee_session, 0)..=(callee_session, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        keys.iter()
            .filter_map(|k| self.waiting.remove(k).map(|(r, _)| r))
            .collect()
    }

    /// Callers whose deadline has passed.
    pub fn expired(&mut self, now: Instant) -> Vec<ReplyTo> {
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
                out.extend(self.waiting.remove(&(session, id)).map(|(r, _)| r));
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

/// Calls from this shard's peers to peers of other nodes, waiting for their answer: keyed
/// by (caller session, the caller's request id), with the callee's node (virtual shard)
/// and a deadline. The answer comes from the callee's node; this table is what fails the
/// call when that node dies or never answers (`ShardMsg::NodeGone`, the deadline).
#[derive(Default)]
pub(crate) struct RemoteCalls {
    waiting: BTreeMap<(u64, u64), (usize, Instant)>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, u64)>>,
}

impl RemoteCalls {
    pub fn insert(&mut self, session: u64, id: u64, node: usize, deadline: Instant) {
        self.waiting.insert((session, id), (node, deadline));
        self.deadlines.push(Reverse((deadline, session, id)));
        if self.deadlines.len() > 2 * self.waiting.len() + 1024 {
            self.deadlines = self
                .waiting
                .iter()
                .map(|(&(s, i), &(_, d))| Reverse((d, s, i)))
                .collect();
        }
    }

    /// The answer to (session, id) came: whether the call was still waiting.
    pub fn answer(&mut self, session: u64, id: u64) -> bool {
        self.waiting.remove(&(session, id)).is_some()
    }

    /// The caller left: forget its calls.
    pub fn caller_gone(&mut self, session: u64) {
        let keys: Vec<(u64, u64)> = self
            .waiting
            .range((session, 0)..=(session, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.waiting.remove(&k);
        }
    }

    /// Every call waiting for a peer of `node`, which is gone. A scan: nodes die rarely.
    pub fn node_gone(&mut self, node: usize) -> Vec<(u64, u64)> {
        let keys: Vec<(u64, u64)> = self
            .waiting
            .iter()
            .filter(|(_, (n, _))| *n == node)
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.waiting.remove(k);
        }
        keys
    }

    /// Calls whose deadline passed.
    pub fn expired(&mut self, now: Instant) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while let Some(Reverse((deadline, session, id))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if self
                .waiting
                .get(&(session, id))
                .is_some_and(|(_, d)| *d == deadline)
            {
                self.waiting.remove(&(session, id));
                out.push((session, id));
            }
        }
        if self.waiting.is_empty() {
            self.deadlines.clear();
        }
        out
    }

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
        assert_eq!(r.expired(t0 + Duration::from_millis(6)), vec![to(3)]);
        assert_eq!(r.callee_gone(10), vec![to(2)]);
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
