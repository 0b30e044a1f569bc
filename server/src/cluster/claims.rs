//! Peer ids across the cluster: a claim is a create-only write to a JetStream KV bucket
//! (`peerd_<cluster>_ids`, key: the id in base64url), so that exactly one node wins an id
//! whatever the timing; a takeover (the resume token) or a stale holder (its node is not
//! alive) replaces the entry with a compare-and-set on its revision. The value names the
//! holder and a hash of its resume token, never the token itself: reading the bucket does
//! not let anyone take a session over.
//!
//! [`decide`] is the rule, pure and unit-tested; [`claim`] runs it against the bucket on the
//! bridge thread, while the handshake that asked waits for the answer without blocking its
//! shard.

use std::sync::Arc;

use async_nats::jetstream::kv::{self, Operation};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use peerd_codec::Code;

use super::wire::At;
use crate::directory::constant_time_eq;

/// A handshake's claim, sent to the bridge.
pub(crate) struct ClaimRequest {
    /// The id declared (or resumed); None: assign one.
    pub peer: Option<Arc<str>>,
    /// The resume token presented, if any.
    pub resume: Option<Vec<u8>>,
    /// The Hello resumes a server-assigned id: never claim it fresh.
    pub resumes_assigned: bool,
    /// The new session and its resume token.
    pub at: At,
    pub token: [u8; 16],
    pub reply: flume::Sender<Result<Claimed, (Code, String)>>,
}

/// A successful claim: the id (assigned by the bridge when none was declared). A local
/// holder it displaced is found (and closed) by the handshake, in the directory; a holder
/// on another node is told by the bridge.
pub(crate) struct Claimed {
    pub peer: Arc<str>,
}

/// Who holds an id, as its KV entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    pub epoch: u64,
    pub at: At,
    pub token_hash: [u8; 16],
}

const VALUE_LEN: usize = 33;

impl Holder {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(VALUE_LEN);
        b.put_u64_le(self.epoch);
        b.put_u8(self.at.shard);
        b.put_u64_le(self.at.session);
        b.put_slice(&self.token_hash);
        b.freeze()
    }

    pub fn decode(b: &[u8]) -> Option<Holder> {
        if b.len() != VALUE_LEN {
            return None;
        }
        Some(Holder {
            epoch: u64::from_le_bytes(b[0..8].try_into().ok()?),
            at: At {
                shard: b[8],
                session: u64::from_le_bytes(b[9..17].try_into().ok()?),
            },
            token_hash: b[17..33].try_into().ok()?,
        })
    }
}

/// The first 16 bytes of SHA-256 of a resume token.
pub(crate) fn token_hash(token: &[u8]) -> [u8; 16] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    d.as_ref()[..16].try_into().expect("32 bytes")
}

/// The KV key of a peer id: base64url without padding, valid for any id (ids may hold
/// characters KV keys may not, such as `:` or `@`).
pub(crate) fn key(peer: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(peer)
}

/// What to do with an id whose entry exists.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The holder is alive and the claim has no matching token.
    Taken,
    /// The holder is gone (its node is not alive, or it is not here any more): replace it.
    Stale,
    /// The token matches a live holder: replace it and close it as Replaced.
    TakeOver,
}

/// The rule: a live holder keeps its id unless the claim presents its resume token.
pub(crate) fn decide(holder: &Holder, alive: bool, resume: Option<&[u8]>) -> Decision {
    if !alive {
        return Decision::Stale;
    }
    match resume {
        Some(t) if constant_time_eq(&token_hash(t), &holder.token_hash) => Decision::TakeOver,
        _ => Decision::Taken,
    }
}

/// What the bridge knows that a claim needs.
pub(crate) trait Liveness {
    /// Whether the holder of `peer`'s entry is alive: its node is, and (for this node) the
    /// session still holds the claim.
    fn alive(&self, peer: &str, holder: &Holder) -> bool;
}

/// The outcome of a claim against the bucket: the id, its revision, and the holder it
/// displaced (to be closed), if any.
pub(crate) type Won = (Arc<str>, u64, Option<Holder>);

fn failed(e: impl std::fmt::Display) -> (Code, String) {
    (
        Code::Overloaded,
        format!("cluster id store unavailable, retry: {e}"),
    )
}

/// Claim `peer` in the bucket for `me`.
pub(crate) async fn claim_id(
    kv: &kv::Store,
    live: &impl Liveness,
    peer: Arc<str>,
    me: &Holder,
    resume: Option<&[u8]>,
    only_take_over: bool,
) -> Result<Option<Won>, (Code, String)> {
    let key = key(&peer);
    // A CAS can lose to a concurrent writer; retry from the read a few times.
    for _ in 0..4 {
        if !only_take_over {
            match kv.create(&key, me.encode()).await {
                Ok(rev) => return Ok(Some((peer, rev, None))),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(failed(e)),
            }
        }
        let entry = kv.entry(key.clone()).await.map_err(failed)?;
        let Some(entry) = entry else {
            if only_take_over {
                return Ok(None);
            }
            continue;
        };
        if matches!(entry.operation, Operation::Delete | Operation::Purge) {
            if only_take_over {
                return Ok(None);
            }
            continue;
        }
        let old = Holder::decode(&entry.value);
        let decision = match &old {
            Some(h) => decide(h, live.alive(&peer, h), resume),
            None => Decision::Stale,
        };
        match decision {
            Decision::Taken if only_take_over => return Ok(None),
            Decision::Taken => {
                return Err((
                    Code::PeerIdTaken,
                    format!("peer id {peer:?} is held by a live session"),
                ))
            }
            Decision::Stale if only_take_over => return Ok(None),
            Decision::Stale | Decision::TakeOver => {
                match kv.update(&key, me.encode(), entry.revision).await {
                    Ok(rev) => {
                        let displaced = (decision == Decision::TakeOver).then_some(old).flatten();
                        return Ok(Some((peer, rev, displaced)));
                    }
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(failed(e)),
                }
            }
        }
    }
    Err((
        Code::Overloaded,
        format!("peer id {peer:?} is being claimed concurrently, retry"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(tok: &[u8]) -> Holder {
        Holder {
            epoch: 7,
            at: At {
                shard: 1,
                session: 9,
            },
            token_hash: token_hash(tok),
        }
    }

    #[test]
    fn values_round_trip_and_hold_no_token() {
        let h = holder(b"secret-token-123");
        let v = h.encode();
        assert_eq!(Holder::decode(&v), Some(h));
        assert!(!v.windows(6).any(|w| w == b"secret"));
        assert_eq!(Holder::decode(&v[1..]), None);
    }

    #[test]
    fn the_rule() {
        let h = holder(b"tok");
        assert_eq!(decide(&h, true, None), Decision::Taken);
        assert_eq!(decide(&h, true, Some(b"other")), Decision::Taken);
        assert_eq!(decide(&h, true, Some(b"tok")), Decision::TakeOver);
        assert_eq!(decide(&h, false, None), Decision::Stale);
        assert_eq!(decide(&h, false, Some(b"other")), Decision::Stale);
    }

    #[test]
    fn keys_are_valid_for_any_id() {
        for id in ["alice", "a:b@c.d", "with space", "émoji-🎉", "*.>"] {
            let k = key(id);
            assert!(k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }
}
