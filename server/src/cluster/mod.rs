//! A cluster of peerd nodes over NATS (`ListenOptions::cluster`): peers on any node reach
//! each other by id, topics and presence span the nodes, and peer ids are unique
//! cluster-wide. `docs/ARCHITECTURE.md` ("The cluster") gives the design and its costs.
//!
//! Modules, each importing only those before it:
//! - `wire`: the envelope of node-to-node messages (pure; fuzzed).
//! - `claims`: peer ids claimed in a JetStream KV bucket; the rule is pure.
//! - `link`: what the shards hold: the channel to the bridge, scoped sessions of remote
//!   peers (virtual shards), counters.
//! - `bridge`: the `peerd-cluster` thread: NATS's client on a tokio runtime, replication of
//!   node state, liveness, subscriptions, claims.

pub(crate) mod bridge;
pub(crate) mod claims;
pub(crate) mod link;
pub(crate) mod wire;

pub(crate) use link::{BridgeCmd, ClusterLink};
