//! Plain settings every layer reads: [`Limits`] and the timing knobs of [`Config`].
//!
//! Kept apart from `options` (which also holds user callbacks that name `ConnectedPeer`) so
//! that the connection layer can read its limits without depending on the public API
//! above it.

use std::path::PathBuf;
use std::time::Duration;

pub use crate::rate::RateLimit;

/// Limits the server enforces. Defaults are documented on each field and in the README.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body accepted from a peer (default 1 MiB). Larger -> Close{TooLarge}.
    pub max_frame_len: u32,
    /// Most concurrent connections across all shards (default 100 000). Past it a
    /// connection is accepted, sent Reject{Overloaded}, closed and counted as dropped.
    pub max_connections: usize,
    /// Bytes queued toward one peer before it is closed as a slow consumer (default 8 MiB).
    pub outbound_queue_bytes: usize,
    /// Server-side handler calls in flight per connection before new ones are refused
    /// with Overloaded (default 1024).
    pub max_inflight_per_conn: usize,
    /// Topics one peer may join (default 1024).
    pub max_topics_per_peer: u32,
    /// Members one topic may have (default 100 000).
    pub max_members_per_topic: u32,
    /// Longest topic name in bytes (default 128).
    pub max_topic_len: u32,
    /// Peer-to-peer calls one peer may have waiting for answers at once; more are refused
    /// with overloaded (default 256). Each counts against the memory budget too.
    pub max_relayed_calls_per_peer: u32,
    /// Longest deadline a peer-to-peer call may ask for; longer ones are shortened to it
    /// (default 5 minutes).
    pub max_call_timeout: Duration,
    /// Memory the server may hold in outbound queues and receive buffers together, split
    /// evenly between shards (default: a quarter of the machine's memory). A shard whose
    /// queues and buffers pass seven eighths of its share closes its largest holders first
    /// (slow_consumer for a queue, overloaded for receive buffers: partial frames); the last
    /// eighth is headroom for what is not counted (the connections, the allocator's
    /// overhead), which is most of what RSS grows beyond the budget by.
    pub memory_budget: usize,
    /// Per-peer rate limits (default: none). See [`RateLimit`] and docs/PROTOCOL.md §6.9.
    pub rate_limit: Option<RateLimit>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_len: peerd_codec::DEFAULT_MAX_FRAME_LEN,
            max_connections: 100_000,
            outbound_queue_bytes: 8 << 20,
            max_inflight_per_conn: 1024,
            max_topics_per_peer: 1024,
            max_members_per_topic: 100_000,
            max_topic_len: peerd_codec::DEFAULT_MAX_TOPIC_LEN,
            max_relayed_calls_per_peer: 256,
            max_call_timeout: Duration::from_secs(300),
            memory_budget: default_memory_budget(),
            rate_limit: None,
        }
    }
}

/// A quarter of the machine's physical memory (1 GiB if it cannot be read).
fn default_memory_budget() -> usize {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && page > 0 {
        (pages as usize).saturating_mul(page as usize) / 4
    } else {
        1 << 30
    }
}

/// Smallest `memory_budget` accepted: below it a shard could not hold one full queue.
pub const MIN_MEMORY_BUDGET: usize = 16 << 20;

/// Smallest `max_frame_len` accepted: below it, ordinary frames whose names, ids and topic
/// at their longest take a few hundred bytes (before any payload) would be refused.
pub const MIN_FRAME_LEN: u32 = 1024;

impl Limits {
    /// Refuse limits that cannot work: the field (as `ListenError::InvalidOptions` names
    /// it) and why.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("limits.max_connections", self.max_connections as u64),
            (
                "limits.outbound_queue_bytes",
                self.outbound_queue_bytes as u64,
            ),
            (
                "limits.max_inflight_per_conn",
                self.max_inflight_per_conn as u64,
            ),
            (
                "limits.max_topics_per_peer",
                self.max_topics_per_peer as u64,
            ),
            (
                "limits.max_members_per_topic",
                self.max_members_per_topic as u64,
            ),
            ("limits.max_topic_len", self.max_topic_len as u64),
            (
                "limits.max_relayed_calls_per_peer",
                self.max_relayed_calls_per_peer as u64,
            ),
            (
                "limits.max_call_timeout",
                self.max_call_timeout.as_millis() as u64,
            ),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err((name, format!("{name} must be at least 1")));
            }
        }
        if self.memory_budget < MIN_MEMORY_BUDGET {
            return Err((
                "limits.memory_budget",
                format!(
                    "limits.memory_budget must be at least {MIN_MEMORY_BUDGET} bytes (got {})",
                    self.memory_budget
                ),
            ));
        }
        if let Some(r) = &self.rate_limit {
            r.validate().map_err(|e| ("limits.rate_limit", e))?;
        }
        if self.max_frame_len < MIN_FRAME_LEN {
            return Err((
                "limits.max_frame_len",
                format!(
                    "limits.max_frame_len must be at least {MIN_FRAME_LEN} bytes (got {})",
                    self.max_frame_len
                ),
            ));
        }
        Ok(())
    }

    /// The limits as announced to the client in Welcome.
    pub(crate) fn wire(&self) -> peerd_codec::Limits {
        peerd_codec::Limits {
            max_frame_len: self.max_frame_len,
            max_topics_per_peer: self.max_topics_per_peer,
            max_members_per_topic: self.max_members_per_topic,
            max_topic_len: self.max_topic_len,
            outbound_queue_bytes: self.outbound_queue_bytes.min(u32::MAX as usize) as u32,
        }
    }
}

/// The certificate chain and private key (PEM files) for `tls://` and `wss://` endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert_chain: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// WebSocket settings for `ws://` and `wss://` endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebSocketOptions {
    /// Origins allowed to connect (the browser's `Origin` header, e.g.
    /// `https://app.example.com`); `None` allows any. A request from another origin gets
    /// 403. Clients that are not browsers usually send no Origin and are then refused when
    /// a list is set.
    pub origins: Option<Vec<String>>,
    /// Conformance testing only: WebSocket endpoints echo every message back instead of
    /// speaking peerd (same handshake, framing, fragmentation and close code), for
    /// Autobahn|Testsuite. Text messages are accepted (UTF-8 checked) in this mode.
    #[doc(hidden)]
    pub echo: bool,
}

/// The settings shards run with, copied out of `ListenOptions` at start.
#[derive(Clone)]
pub(crate) struct Config {
    pub limits: Limits,
    pub handshake_timeout: Duration,
    pub heartbeat: Duration,
    pub default_call_timeout: Duration,
    pub close_linger: Duration,
    pub relay_broadcasts: bool,
    /// `ListenOptions::handover`.
    pub handover: bool,
    /// `ListenOptions::batched_sends`.
    pub batched_sends: bool,
    /// `ListenOptions::ring_receives`.
    pub ring_receives: bool,
    /// `ListenOptions::park_idle`.
    pub park_idle: bool,
    pub websocket: WebSocketOptions,
    /// The TLS configuration built from `ListenOptions::tls` (certificate and key loaded).
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// Milliseconds for a u32 wire field, saturating.
pub(crate) fn millis_u32(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}
