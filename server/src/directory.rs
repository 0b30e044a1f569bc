//! The cross-shard peer directory: peer id -> (shard, session, resume token).
//!
//! This is the one structure every shard reads and writes, so it is shared (`Arc`) and
//! synchronised: a [`Striped`] map (see there for why striping). The message path takes one
//! stripe's *read* lock for one hash lookup (tens of nanoseconds, uncontended in the common
//! case). Writes happen only on handshake, takeover and disconnect.
//!
//! Correctness under races: every entry carries the session id that owns it, and
//! [`Directory::release`] removes an entry only if it still belongs to the releasing
//! session. So when a resumed session takes over an id, the old connection's late
//! deregistration cannot remove the new owner.

use std::sync::Arc;

use peerd_codec::Code;

use crate::striped::Striped;

/// Where a peer lives.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub shard: usize,
    pub session: u64,
    pub token: [u8; 16],
}

pub(crate) struct Directory {
    map: Striped<Entry>,
}

/// Outcome of a successful claim.
pub(crate) enum Claimed {
    /// The id was free.
    Fresh,
    /// The id was taken over from this older session (which must now be closed as Replaced).
    TookOver(Entry),
}

impl Directory {
    pub fn new() -> Directory {
        Directory {
            map: Striped::new(),
        }
    }

    /// Claim `id` for a new session. A live holder is displaced only if `resume` equals its
    /// token; otherwise the claim fails with PeerIdTaken.
    pub fn claim(
        &self,
        id: &Arc<str>,
        entry: Entry,
        resume: Option<&[u8]>,
    ) -> Result<Claimed, Code> {
        self.map.write(id, |map| match map.get(id) {
            None => {
                map.insert(id.clone(), entry);
                Ok(Claimed::Fresh)
            }
            Some(old) => {
                if !resume.is_some_and(|t| constant_time_eq(t, &old.token)) {
                    return Err(Code::PeerIdTaken);
                }
                let old = map.insert(id.clone(), entry).expect("present");
                Ok(Claimed::TookOver(old))
            }
        })
    }

    /// Take `id` over from its live holder if `resume` matches its token; never claims a
    /// free id. Used for server-assigned (numeric) ids, which a client may present only to
    /// resume: it must not be able to pick a numeric id that was never its own.
    pub fn take_over(&self, id: &Arc<str>, entry: Entry, resume: &[u8]) -> Option<Entry> {
        self.map.write(id, |map| {
            let old = map.get(id)?;
            if !constant_time_eq(resume, &old.token) {
                return None;
            }
            map.insert(id.clone(), entry)
        })
    }

    /// Set where `id` lives, whoever held it: a peer of another node, as its node reports
    /// it (the cluster's id claims decided who holds it; see `cluster::claims`), or a local
    /// peer whose claim the cluster granted. Returns the entry replaced.
    pub fn upsert(&self, id: &Arc<str>, entry: Entry) -> Option<Entry> {
        self.map.write(id, |map| map.insert(id.clone(), entry))
    }

    /// Set where `id` lives unless its entry now is one to `keep` (the replica's rule: a
    /// peer of another node never hides a local one, see `cluster::bridge`). Returns
    /// whether it did.
    pub fn place(&self, id: &Arc<str>, entry: Entry, keep: impl Fn(&Entry) -> bool) -> bool {
        self.map.write(id, |map| {
            if map.get(id).is_some_and(keep) {
                return false;
            }
            map.insert(id.clone(), entry);
            true
        })
    }

    /// Remove `id` if `session` still owns it. Returns whether it did.
    pub fn release(&self, id: &str, session: u64) -> bool {
        self.map.write(id, |map| {
            if map.get(id).is_some_and(|e| e.session == session) {
                map.remove(id);
                true
            } else {
                false
            }
        })
    }

    /// Where `id` lives now.
    pub fn lookup(&self, id: &str) -> Option<(usize, u64)> {
        self.map.read(id, |e| e.map(|e| (e.shard, e.session)))
    }

    /// Every registered peer: (id, shard, session), each entry true when read.
    pub fn snapshot(&self) -> Vec<(Arc<str>, usize, u64)> {
        let mut out = Vec::new();
        self.map
            .for_each(|k, e| out.push((k.clone(), e.shard, e.session)));
        out
    }

    /// Every registered peer id, sorted.
    pub fn sorted_ids(&self) -> Vec<String> {
        sorted(self.snapshot().into_iter().map(|(id, _, _)| id))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// Peer ids as sorted strings (listings are sorted so that they are stable to compare).
pub(crate) fn sorted(ids: impl Iterator<Item = Arc<str>>) -> Vec<String> {
    let mut v: Vec<String> = ids.map(|id| id.to_string()).collect();
    v.sort();
    v
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Resume tokens are secrets: do not leak how many leading bytes matched.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 16 bytes from the kernel's CSPRNG, for resume tokens.
pub(crate) fn random_token() -> [u8; 16] {
    let mut t = [0u8; 16];
    let mut filled = 0;
    while filled < t.len() {
        // SAFETY: writes at most the remaining length into our own buffer.
        let n = unsafe { libc::getrandom(t[filled..].as_mut_ptr().cast(), t.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // getrandom(2) cannot fail on Linux >= 3.17 once the pool is initialised; fall
            // back to a non-crypto generator rather than refusing connections.
            t.iter_mut().for_each(|b| *b = fastrand::u8(..));
            break;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(shard: usize, session: u64, tok: u8) -> Entry {
        Entry {
            shard,
            session,
            token: [tok; 16],
        }
    }

    #[test]
    fn claim_release_takeover() {
        let d = Directory::new();
        let id: Arc<str> = "alice".into();
        assert!(matches!(d.claim(&id, e(0, 1, 7), None), Ok(Claimed::Fresh)));
        assert_eq!(
            d.claim(&id, e(1, 2, 8), None).err(),
            Some(Code::PeerIdTaken)
        );
        assert_eq!(
            d.claim(&id, e(1, 2, 8), Some(&[9; 16])).err(),
            Some(Code::PeerIdTaken)
        );
        match d.claim(&id, e(1, 2, 8), Some(&[7; 16])) {
            Ok(Claimed::TookOver(old)) => assert_eq!(old.session, 1),
            _ => panic!("takeover expected"),
        }
        // The old session's late release must not remove the new owner.
        assert!(!d.release("alice", 1));
        assert_eq!(d.lookup("alice"), Some((1, 2)));
        assert!(d.release("alice", 2));
        assert_eq!(d.lookup("alice"), None);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn a_replica_entry_never_hides_a_local_one() {
        let d = Directory::new();
        let id: Arc<str> = "carol".into();
        let local = |e: &Entry| e.shard < 2;
        assert!(d.place(&id, e(5, 100, 0), local), "free: placed");
        assert!(
            d.place(&id, e(6, 200, 0), local),
            "remote over remote: placed"
        );
        // The cluster granted the id to a local session: it replaces the remote one.
        assert_eq!(d.upsert(&id, e(1, 7, 1)).map(|o| o.session), Some(200));
        assert!(!d.place(&id, e(5, 300, 0), local), "a local holder stays");
        assert_eq!(d.lookup("carol"), Some((1, 7)));
        assert!(d.release("carol", 7));
        assert!(d.place(&id, e(5, 300, 0), |_| true), "absent: revealed");
        assert!(!d.place(&id, e(6, 400, 0), |_| true), "present: kept");
        assert_eq!(d.lookup("carol"), Some((5, 300)));
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(random_token(), random_token());
    }
}
