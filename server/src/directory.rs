//! The cross-shard peer directory: peer id -> (shard, session, resume token).
//!
//! This is the one structure every shard reads and writes, so it is shared (`Arc`) and
//! synchronised. It is *striped*: 64 independent `RwLock<HashMap>`s, the stripe chosen by a
//! hash of the peer id. Two shards contend only when they touch ids in the same stripe at
//! the same instant, and the message path takes a stripe's *read* lock for one hash lookup
//! (tens of nanoseconds, uncontended in the common case). Writes happen only on handshake,
//! takeover and disconnect. There is no global lock: nothing ever holds two stripes.
//!
//! Correctness under races: every entry carries the session id that owns it, and
//! [`Directory::release`] removes an entry only if it still belongs to the releasing
//! session. So when a resumed session takes over an id, the old connection's late
//! deregistration cannot remove the new owner.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use peerd_codec::Code;

const STRIPES: usize = 64;

/// Where a peer lives.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub shard: usize,
    pub session: u64,
    pub token: [u8; 16],
}

pub(crate) struct Directory {
    stripes: Vec<RwLock<HashMap<Arc<str>, Entry>>>,
    hasher: std::collections::hash_map::RandomState,
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
            stripes: (0..STRIPES).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    fn stripe(&self, id: &str) -> &RwLock<HashMap<Arc<str>, Entry>> {
        &self.stripes[(self.hasher.hash_one(id) as usize) % STRIPES]
    }

    /// Claim `id` for a new session. A live holder is displaced only if `resume` equals its
    /// token; otherwise the claim fails with PeerIdTaken.
    pub fn claim(
        &self,
        id: &Arc<str>,
        entry: Entry,
        resume: Option<&[u8]>,
    ) -> Result<Claimed, Code> {
        // A poisoned stripe means a shard panicked while holding it; the map itself is
        // still consistent (every critical section is a single insert/remove), so go on.
        let mut map = self.stripe(id).write().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            None => {
                map.insert(id.clone(), entry);
                Ok(Claimed::Fresh)
            }
            Some(old) => {
                let matches = resume.is_some_and(|t| constant_time_eq(t, &old.token));
                if !matches {
                    return Err(Code::PeerIdTaken);
                }
                let old = map.insert(id.clone(), entry).expect("present");
                Ok(Claimed::TookOver(old))
            }
        }
    }

    /// Take `id` over from its live holder if `resume` matches its token; never claims a
    /// free id. Used for server-assigned (numeric) ids, which a client may present only to
    /// resume: it must not be able to pick a numeric id that was never its own.
    pub fn take_over(&self, id: &Arc<str>, entry: Entry, resume: &[u8]) -> Option<Entry> {
        let mut map = self.stripe(id).write().unwrap_or_else(|e| e.into_inner());
        let old = map.get(id)?;
        if !constant_time_eq(resume, &old.token) {
            return None;
        }
        map.insert(id.clone(), entry)
    }

    /// Remove `id` if `session` still owns it. Returns whether it did.
    pub fn release(&self, id: &str, session: u64) -> bool {
        let mut map = self.stripe(id).write().unwrap_or_else(|e| e.into_inner());
        if map.get(id).is_some_and(|e| e.session == session) {
            map.remove(id);
            true
        } else {
            false
        }
    }

    /// Where `id` lives now.
    pub fn lookup(&self, id: &str) -> Option<(usize, u64)> {
        let map = self.stripe(id).read().unwrap_or_else(|e| e.into_inner());
        map.get(id).map(|e| (e.shard, e.session))
    }

    /// Every registered peer: (id, shard, session). Not a consistent snapshot across
    /// stripes, which is fine for listing: each entry was true when read.
    pub fn snapshot(&self) -> Vec<(Arc<str>, usize, u64)> {
        let mut out = Vec::new();
        for s in &self.stripes {
            let map = s.read().unwrap_or_else(|e| e.into_inner());
            out.extend(map.iter().map(|(k, e)| (k.clone(), e.shard, e.session)));
        }
        out
    }

    /// Every registered peer id, sorted.
    pub fn sorted_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .snapshot()
            .into_iter()
            .map(|(id, _, _)| id.to_string())
            .collect();
        v.sort();
        v
    }

    pub fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
    fn tokens_differ() {
        assert_ne!(random_token(), random_token());
    }
}
