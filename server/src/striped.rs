//! [`Striped`]: a map shared by every shard, split into independently locked stripes.
//!
//! The peer directory and the topic index are the only structures shards share. Both are
//! read on the message path (where does this peer live? which shards have members of this
//! topic?) and written only on handshakes, joins and leaves. A single lock would serialise
//! every shard on those reads; 64 `RwLock`ed stripes chosen by a hash of the key make two
//! shards contend only when they touch keys of the same stripe at the same instant. No
//! code ever holds two stripes, so there is no lock order to get wrong.
//!
//! A poisoned stripe means a shard panicked while holding it; every critical section the
//! users of this type run is a small, self-consistent update, so the map is still usable
//! and the poison is ignored rather than spreading the panic to every shard.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

const STRIPES: usize = 64;

/// A `HashMap<Arc<str>, V>` striped over 64 locks.
pub(crate) struct Striped<V> {
    stripes: Vec<RwLock<HashMap<Arc<str>, V>>>,
    hasher: RandomState,
}

impl<V> Striped<V> {
    pub fn new() -> Striped<V> {
        Striped {
            stripes: (0..STRIPES).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn stripe(&self, key: &str) -> &RwLock<HashMap<Arc<str>, V>> {
        &self.stripes[(self.hasher.hash_one(key) as usize) % STRIPES]
    }

    /// Run `f` on the value for `key` (if any) under its stripe's read lock.
    pub fn read<R>(&self, key: &str, f: impl FnOnce(Option<&V>) -> R) -> R {
        let map = self.stripe(key).read().unwrap_or_else(|e| e.into_inner());
        f(map.get(key))
    }

    /// Run `f` on the stripe holding `key` under its write lock. `f` sees the whole stripe
    /// so it can insert, replace or remove `key` in one critical section.
    pub fn write<R>(&self, key: &str, f: impl FnOnce(&mut HashMap<Arc<str>, V>) -> R) -> R {
        let mut map = self.stripe(key).write().unwrap_or_else(|e| e.into_inner());
        f(&mut map)
    }

    /// Visit every entry, one stripe at a time. Not a consistent snapshot across stripes,
    /// which is what listings need: each entry was true when it was read.
    pub fn for_each(&self, mut f: impl FnMut(&Arc<str>, &V)) {
        for s in &self.stripes {
            let map = s.read().unwrap_or_else(|e| e.into_inner());
            for (k, v) in map.iter() {
                f(k, v);
            }
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_visit() {
        let m: Striped<u32> = Striped::new();
        for i in 0..200u32 {
            let k: Arc<str> = format!("k{i}").into();
            m.write(&k, |s| s.insert(k.clone(), i));
        }
        assert_eq!(m.len(), 200);
        assert_eq!(m.read("k7", |v| v.copied()), Some(7));
        assert_eq!(m.read("nope", |v| v.copied()), None);
        let mut sum = 0;
        m.for_each(|_, v| sum += v);
        assert_eq!(sum, (0..200u32).sum::<u32>());
        m.write("k7", |s| s.remove("k7"));
        assert_eq!(m.len(), 199);
    }
}
