//! [`Watchers`]: this shard's presence watchers (global and per topic), and the rule that
//! turns a join or leave into the events one watcher must see ([`report`]).
//!
//! Each watcher remembers which session of each peer it last reported as joined. That is
//! what makes a takeover (a peer id resumed by a new connection) show as leave then join
//! even when the new session's join and the old session's leave reach this shard from
//! different shards, in either order.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use peerd_codec::PresenceChange;

use crate::conn::Conn;

/// What one watcher has reported: peer id -> the session it last reported as joined.
pub(crate) type Reported = HashMap<Arc<str>, u64>;

/// The events a watcher must be sent for `change` of `peer`'s connection `session`, given
/// what it has reported so far (updated in place).
///
/// - A join of a session already reported: nothing (the snapshot had it).
/// - A join while another session of the same id is reported (a takeover whose join
///   arrived before the old session's leave): leave, then join.
/// - A leave of the reported session: leave. A leave of any other session (the old
///   session of a takeover already shown as leave+join): nothing.
pub(crate) fn report(
    reported: &mut Reported,
    peer: &Arc<str>,
    session: u64,
    change: PresenceChange,
) -> &'static [PresenceChange] {
    use PresenceChange::{Join, Leave};
    match change {
        Join => match reported.insert(peer.clone(), session) {
            Some(s) if s == session => &[],
            Some(_) => &[Leave, Join],
            None => &[Join],
        },
        Leave => {
            if reported.get(peer) == Some(&session) {
                reported.remove(peer);
                &[Leave]
            } else {
                &[]
            }
        }
    }
}

/// Watchers on this shard by session: the connection and what it has been told.
type BySession = HashMap<u64, (Rc<Conn>, Reported)>;

#[derive(Default)]
pub(crate) struct Watchers {
    global: BySession,
    topics: HashMap<Arc<str>, BySession>,
}

impl Watchers {
    /// Add a watcher of `topic` (None: global) with what its snapshot reported.
    pub fn add(&mut self, topic: Option<&Arc<str>>, conn: Rc<Conn>, reported: Reported) {
        let set = match topic {
            None => &mut self.global,
            Some(t) => self.topics.entry(t.clone()).or_default(),
        };
        set.insert(conn.session, (conn, reported));
    }

    pub fn remove(&mut self, topic: Option<&str>, session: u64) {
        match topic {
            None => {
                self.global.remove(&session);
            }
            Some(t) => {
                if let Some(set) = self.topics.get_mut(t) {
                    set.remove(&session);
                    if set.is_empty() {
                        self.topics.remove(t);
                    }
                }
            }
        }
    }

    /// Apply one change to the watchers of `topic` (None: global): the events to send.
    pub fn apply(
        &mut self,
        topic: Option<&str>,
        peer: &Arc<str>,
        session: u64,
        change: PresenceChange,
    ) -> Vec<(Rc<Conn>, PresenceChange)> {
        let set = match topic {
            None => Some(&mut self.global),
            Some(t) => self.topics.get_mut(t),
        };
        let mut out = Vec::new();
        for (conn, reported) in set.into_iter().flat_map(|s| s.values_mut()) {
            for c in report(reported, peer, session, change) {
                out.push((conn.clone(), *c));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PresenceChange::{Join, Leave};

    #[test]
    fn join_leave_and_snapshot_duplicates() {
        let mut r = Reported::new();
        let a: Arc<str> = "a".into();
        assert_eq!(report(&mut r, &a, 1, Join), &[Join]);
        assert_eq!(report(&mut r, &a, 1, Join), &[] as &[PresenceChange]);
        assert_eq!(report(&mut r, &a, 1, Leave), &[Leave]);
        assert_eq!(report(&mut r, &a, 1, Leave), &[] as &[PresenceChange]);
        assert!(r.is_empty());
    }

    #[test]
    fn takeover_seen_join_first_is_leave_then_join() {
        let mut r = Reported::new();
        let a: Arc<str> = "a".into();
        report(&mut r, &a, 1, Join);
        assert_eq!(report(&mut r, &a, 2, Join), &[Leave, Join]);
        // The old session's leave arrives late: already shown.
        assert_eq!(report(&mut r, &a, 1, Leave), &[] as &[PresenceChange]);
        assert_eq!(r.get(&a), Some(&2));
    }

    #[test]
    fn takeover_seen_leave_first_is_leave_then_join() {
        let mut r = Reported::new();
        let a: Arc<str> = "a".into();
        report(&mut r, &a, 1, Join);
        assert_eq!(report(&mut r, &a, 1, Leave), &[Leave]);
        assert_eq!(report(&mut r, &a, 2, Join), &[Join]);
    }
}
