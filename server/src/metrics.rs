//! Per-shard counters ([`ShardCounters`]) and the snapshots they are read into
//! ([`ShardMetrics`], [`Metrics`]).
//!
//! Every counter a shard keeps is a plain `Cell<u64>` owned by the shard's thread: the
//! message path bumps it with no atomic and no lock. Nothing else ever reads those cells.
//! A scrape (`PeerServer::metrics`) sends each shard a `ShardMsg::Metrics` over its inbox;
//! the shard copies its counters into a [`ShardMetrics`] (a few KiB, no walk over its
//! connections: gauges are kept up to date as things change) and sends it back. Summing
//! and labelling happen on the scraping thread, as does the text encoding (`prometheus`).
//!
//! Counters that are open-ended by nature (rejections by reason, authentication failures by
//! reason) keep a short list of `(reason, count)`; past [`MAX_REASONS`] reasons new ones
//! fold into `other`, so that no input can grow the exposition without bound.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::time::{Duration, SystemTime};

use peerd_codec::{Code, FrameKind};

/// How a connection reached the server: the `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TransportKind {
    /// Plain peerd on TCP.
    Tcp,
    /// Plain peerd on a Unix stream socket.
    Unix,
    /// peerd inside TLS (`tls://`).
    Tls,
    /// WebSocket (`ws://`).
    Ws,
    /// WebSocket inside TLS (`wss://`).
    Wss,
}

impl TransportKind {
    /// Every transport, in label order.
    pub const ALL: [TransportKind; 5] = [
        TransportKind::Tcp,
        TransportKind::Unix,
        TransportKind::Tls,
        TransportKind::Ws,
        TransportKind::Wss,
    ];

    /// The label value: `tcp`, `unix`, `tls`, `ws`, `wss`.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Unix => "unix",
            TransportKind::Tls => "tls",
            TransportKind::Ws => "ws",
            TransportKind::Wss => "wss",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (seconds) of the server-side RPC handler latency buckets. Handlers that
/// answer without waiting take microseconds; ones that wait on a peer or on I/O take
/// milliseconds to seconds: the buckets span both.
pub const RPC_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Most distinct reasons an open-ended counter keeps before folding new ones into
/// `other`.
pub const MAX_REASONS: usize = 32;

/// Authentication failure reasons every shard reports from the start (at 0), so that the
/// series exist before the first failure: the wire code's name, `unauthorized` (the
/// credentials were refused: by a token check or the embedder's authenticator) or
/// `token_expired`.
const AUTH_REASONS: &[&str] = &["unauthorized", "token_expired"];

/// Why an accepted connection was dropped before any handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// The server was at `max_connections`.
    MaxConnections,
    /// The process ran out of file descriptors.
    OutOfFds,
    /// The shard was stopping.
    Shutdown,
}

impl Dropped {
    const ALL: [Dropped; 3] = [
        Dropped::MaxConnections,
        Dropped::OutOfFds,
        Dropped::Shutdown,
    ];

    fn name(self) -> &'static str {
        match self {
            Dropped::MaxConnections => "max_connections",
            Dropped::OutOfFds => "out_of_fds",
            Dropped::Shutdown => "shutdown",
        }
    }
}

/// What a slow consumer was cut for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlowConsumer {
    /// Its own queue passed `outbound_queue_bytes`.
    QueueLimit,
    /// It held the largest queue when the shard passed its memory budget.
    MemoryBudget,
}

impl SlowConsumer {
    const ALL: [SlowConsumer; 2] = [SlowConsumer::QueueLimit, SlowConsumer::MemoryBudget];

    fn name(self) -> &'static str {
        match self {
            SlowConsumer::QueueLimit => "queue_limit",
            SlowConsumer::MemoryBudget => "memory_budget",
        }
    }
}

/// Frame kinds are numbered below 0x80 (`peerd_codec::FrameKind`): one slot per number.
const KIND_SLOTS: usize = 128;

/// Close codes: one slot per code peerd defines, then `app` (4000-4999, the application's
/// own) and `other` (anything else a peer may put in its Close), so that a peer cannot
/// make a series per u16.
const CODE_SLOTS: usize = Code::ALL.len() + 2;

fn code_slot(code: u16) -> usize {
    match Code::ALL.iter().position(|c| c.as_u16() == code) {
        Some(i) => i,
        None if (4000..5000).contains(&code) => Code::ALL.len(),
        None => Code::ALL.len() + 1,
    }
}

fn code_slot_name(slot: usize) -> &'static str {
    match Code::ALL.get(slot) {
        Some(c) => c.name(),
        None if slot == Code::ALL.len() => "app",
        None => "other",
    }
}

fn cells<const N: usize>() -> [Cell<u64>; N] {
    std::array::from_fn(|_| Cell::new(0))
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// `(reason, count)` pairs for an open-ended label, bounded by [`MAX_REASONS`].
struct Tally(RefCell<Vec<(Cow<'static, str>, u64)>>);

impl Tally {
    fn seeded(reasons: &[&'static str]) -> Tally {
        Tally(RefCell::new(
            reasons.iter().map(|r| (Cow::Borrowed(*r), 0)).collect(),
        ))
    }

    fn add(&self, reason: Cow<'static, str>) {
        let mut v = self.0.borrow_mut();
        if let Some(e) = v.iter_mut().find(|(r, _)| *r == reason) {
            e.1 += 1;
            return;
        }
        let reason = if v.len() + 1 >= MAX_REASONS {
            Cow::Borrowed("other")
        } else {
            reason
        };
        match v.iter_mut().find(|(r, _)| *r == reason) {
            Some(e) => e.1 += 1,
            None => v.push((reason, 1)),
        }
    }

    fn snapshot(&self) -> Vec<(String, u64)> {
        self.0
            .borrow()
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect()
    }
}

/// One shard's counters. Owned by the shard (in `Local`), touched only by its thread.
pub(crate) struct ShardCounters {
    frames_in: [Cell<u64>; KIND_SLOTS],
    bytes_in: [Cell<u64>; KIND_SLOTS],
    frames_out: [Cell<u64>; KIND_SLOTS],
    bytes_out: [Cell<u64>; KIND_SLOTS],
    /// Open connections by transport (a gauge): admitted and not yet ended.
    open: [Cell<u64>; 5],
    accepted: [Cell<u64>; 5],
    welcomed: [Cell<u64>; 5],
    dropped: [Cell<u64>; 3],
    rejected: Tally,
    closes: [Cell<u64>; CODE_SLOTS],
    slow_consumer: [Cell<u64>; 2],
    /// Per bucket of [`RPC_BUCKETS`] (not cumulative), the last one past the largest bound.
    rpc_buckets: [Cell<u64>; RPC_BUCKETS.len() + 1],
    rpc_nanos: Cell<u64>,
    rate_limit_hits: Cell<u64>,
    reads_deferred: Cell<u64>,
    frames_deferred: Cell<u64>,
    ring_arms: Cell<u64>,
    ring_no_buffers: Cell<u64>,
    ring_direct_reads: Cell<u64>,
    parks: Cell<u64>,
    auth_failures: Tally,
}

impl Default for ShardCounters {
    fn default() -> ShardCounters {
        ShardCounters {
            frames_in: cells(),
            bytes_in: cells(),
            frames_out: cells(),
            bytes_out: cells(),
            open: cells(),
            accepted: cells(),
            welcomed: cells(),
            dropped: cells(),
            rejected: Tally::seeded(&[]),
            closes: cells(),
            slow_consumer: cells(),
            rpc_buckets: cells(),
            rpc_nanos: Cell::new(0),
            rate_limit_hits: Cell::new(0),
            reads_deferred: Cell::new(0),
            frames_deferred: Cell::new(0),
            ring_arms: Cell::new(0),
            ring_no_buffers: Cell::new(0),
            ring_direct_reads: Cell::new(0),
            parks: Cell::new(0),
            auth_failures: Tally::seeded(AUTH_REASONS),
        }
    }
}

impl ShardCounters {
    /// A whole frame of `kind` (its number), `len` bytes with its header, arrived.
    pub fn frame_in(&self, kind: u8, len: usize) {
        let k = kind as usize % KIND_SLOTS;
        bump(&self.frames_in[k], 1);
        bump(&self.bytes_in[k], len as u64);
    }

    /// A frame of `kind`, `len` bytes with its header, was queued to a peer.
    pub fn frame_out(&self, kind: u8, len: usize) {
        let k = kind as usize % KIND_SLOTS;
        bump(&self.frames_out[k], 1);
        bump(&self.bytes_out[k], len as u64);
    }

    /// A socket was accepted (or adopted) by this shard.
    pub fn accepted(&self, t: TransportKind) {
        bump(&self.accepted[t.index()], 1);
    }

    /// A connection was admitted: it counts as open until [`ended`](Self::ended).
    pub fn opened(&self, t: TransportKind) {
        bump(&self.open[t.index()], 1);
    }

    /// An admitted connection ended.
    pub fn ended(&self, t: TransportKind) {
        let c = &self.open[t.index()];
        c.set(c.get().saturating_sub(1));
    }

    /// A connection completed its handshake.
    pub fn welcomed(&self, t: TransportKind) {
        bump(&self.welcomed[t.index()], 1);
    }

    /// A socket was refused before any handshake.
    pub fn dropped(&self, why: Dropped) {
        bump(&self.dropped[why as usize], 1);
    }

    /// A connection did not complete its handshake. `reason`: the code name of the Reject
    /// sent, `handshake_timeout`, `http_<status>`, `disconnected` or `tls_session`.
    pub fn rejected(&self, reason: impl Into<Cow<'static, str>>) {
        self.rejected.add(reason.into());
    }

    /// A handshaken connection was torn down with `code`.
    pub fn closed(&self, code: u16) {
        bump(&self.closes[code_slot(code)], 1);
    }

    /// A peer was closed as a slow consumer.
    pub fn slow_consumer(&self, why: SlowConsumer) {
        bump(&self.slow_consumer[why as usize], 1);
    }

    /// A server-side RPC handler answered after `took`.
    pub fn rpc_handled(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = RPC_BUCKETS.partition_point(|b| *b < secs);
        bump(&self.rpc_buckets[i], 1);
        bump(
            &self.rpc_nanos,
            took.as_nanos().min(u64::MAX as u128) as u64,
        );
    }

    /// A frame was refused by its peer's rate limit.
    pub fn rate_limit_hit(&self) {
        bump(&self.rate_limit_hits, 1);
    }

    /// A bulk reader waited for a later pass of the shard's loop (`fair`).
    pub fn read_deferred(&self) {
        bump(&self.reads_deferred, 1);
    }

    /// A connection's buffered frames waited for a later pass: the pass's share of sends
    /// was taken (`fair::PASS_SENDS`).
    pub fn frames_deferred(&self) {
        bump(&self.frames_deferred, 1);
    }

    /// A multishot receive was armed on the shard's ring (`receiver`).
    pub fn ring_armed(&self) {
        bump(&self.ring_arms, 1);
    }

    /// A ring receive ended because every provided buffer was in use.
    pub fn ring_out_of_buffers(&self) {
        bump(&self.ring_no_buffers, 1);
    }

    /// A connection on the ring, its receive ended (paused or out of buffers), read bytes
    /// directly from its socket in its reader's turn (`receiver`, fairness).
    pub fn ring_direct_read(&self) {
        bump(&self.ring_direct_reads, 1);
    }

    /// A connection was parked on the shard's ring of polls (`receiver`) after its
    /// handshake.
    pub fn parked(&self) {
        bump(&self.parks, 1);
    }

    /// Credentials were refused, for `reason` (a short `snake_case` word; see
    /// [`AUTH_REASONS`] for the ones present from the start).
    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures.add(Cow::Borrowed(reason));
    }

    /// Copy everything out; `gauges` are what the shard measures elsewhere.
    pub fn snapshot(&self, shard: usize, gauges: Gauges) -> ShardMetrics {
        let per_transport = |cells: &[Cell<u64>; 5]| {
            TransportKind::ALL
                .iter()
                .map(|t| (*t, cells[t.index()].get()))
                .collect()
        };
        let frames = FrameKind::ALL
            .iter()
            .map(|k| {
                let i = *k as usize % KIND_SLOTS;
                FrameCounts {
                    kind: *k,
                    received: self.frames_in[i].get(),
                    received_bytes: self.bytes_in[i].get(),
                    sent: self.frames_out[i].get(),
                    sent_bytes: self.bytes_out[i].get(),
                }
            })
            .collect();
        let closes = (0..CODE_SLOTS)
            .filter(|i| self.closes[*i].get() > 0)
            .map(|i| (code_slot_name(i).to_string(), self.closes[i].get()))
            .collect();
        ShardMetrics {
            shard,
            connections: per_transport(&self.open),
            accepted: per_transport(&self.accepted),
            welcomed: per_transport(&self.welcomed),
            rejected: self.rejected.snapshot(),
            dropped: Dropped::ALL
                .iter()
                .map(|d| (d.name().to_string(), self.dropped[*d as usize].get()))
                .collect(),
            closes,
            slow_consumer_closes: SlowConsumer::ALL
                .iter()
                .map(|s| (s.name().to_string(), self.slow_consumer[*s as usize].get()))
                .collect(),
            frames,
            outbound_queue_bytes: gauges.outbound_queue_bytes,
            receive_buffer_bytes: gauges.receive_buffer_bytes,
            memory_budget_bytes: gauges.memory_budget_bytes,
            topic_members: gauges.topic_members,
            rpc_handler_seconds: Histogram {
                bounds: RPC_BUCKETS,
                buckets: self.rpc_buckets.iter().map(Cell::get).collect(),
                sum_seconds: self.rpc_nanos.get() as f64 / 1e9,
            },
            rate_limit_hits: self.rate_limit_hits.get(),
            reads_deferred: self.reads_deferred.get(),
            frames_deferred: self.frames_deferred.get(),
            receive_ring_arms: self.ring_arms.get(),
            receive_ring_out_of_buffers: self.ring_no_buffers.get(),
            receive_ring_direct_reads: self.ring_direct_reads.get(),
            receive_parks: self.parks.get(),
            auth_failures: self.auth_failures.snapshot(),
        }
    }
}

/// Gauges a shard reads from its other parts when it answers a scrape.
pub(crate) struct Gauges {
    pub outbound_queue_bytes: u64,
    pub receive_buffer_bytes: u64,
    pub memory_budget_bytes: u64,
    pub topic_members: u64,
}

/// Frames of one kind through one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameCounts {
    /// The frame kind.
    pub kind: FrameKind,
    /// Whole frames received from peers (split from the stream; Hello included).
    pub received: u64,
    /// Their bytes, headers included (the peerd frames, without WebSocket or TLS framing).
    pub received_bytes: u64,
    /// Frames queued to peers (one per recipient: a publish to ten members is ten).
    pub sent: u64,
    /// Their bytes, headers included.
    pub sent_bytes: u64,
}

/// A latency histogram with fixed buckets.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Histogram {
    /// Upper bounds of the buckets, in seconds, increasing.
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative): `buckets[i]` took at most `bounds[i]` and
    /// more than `bounds[i - 1]`; the last entry (one more than `bounds`) took longer than
    /// every bound.
    pub buckets: Vec<u64>,
    /// The sum of every observation, in seconds.
    pub sum_seconds: f64,
}

impl Histogram {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Observations up to each bound, then all of them (the `+Inf` bucket): the cumulative
    /// counts the Prometheus exposition carries.
    pub fn cumulative(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .scan(0u64, |acc, n| {
                *acc += n;
                Some(*acc)
            })
            .collect()
    }

    /// Add `other`'s observations (same bounds) to these.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_seconds += other.sum_seconds;
    }
}

/// One shard's counters and gauges, as it answered a scrape. Counters count from the
/// server's start; labels are listed the same way on every shard (every transport, every
/// frame kind, every drop reason), except the open-ended ones (rejections, closes,
/// authentication failures), which list what happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ShardMetrics {
    /// The shard's index.
    pub shard: usize,
    /// Open connections by transport: admitted and not yet ended (still handshaking
    /// included).
    pub connections: Vec<(TransportKind, u64)>,
    /// Sockets accepted by transport (refused ones included).
    pub accepted: Vec<(TransportKind, u64)>,
    /// Connections that completed the handshake, by transport.
    pub welcomed: Vec<(TransportKind, u64)>,
    /// Connections that did not complete the handshake, by reason: the code name of the
    /// Reject sent (`unauthorized`, `peer_id_taken`, `bad_frame`, `shutdown`, ...),
    /// `handshake_timeout`, `http_<status>` (a refused WebSocket upgrade), `disconnected`
    /// (the peer went away first, or its TLS handshake failed) or `tls_session` (no TLS
    /// session could be made for it).
    pub rejected: Vec<(String, u64)>,
    /// Sockets refused before any handshake, by reason: `max_connections`, `out_of_fds`,
    /// `shutdown`.
    pub dropped: Vec<(String, u64)>,
    /// Handshaken connections torn down, by close code name (peerd's codes, `app` for
    /// 4000-4999, `other`); only codes that occurred.
    pub closes: Vec<(String, u64)>,
    /// Peers closed as slow consumers, by reason: `queue_limit` (their queue passed
    /// `outbound_queue_bytes`), `memory_budget` (the shard passed its budget and theirs
    /// was among the largest queues).
    pub slow_consumer_closes: Vec<(String, u64)>,
    /// Frames and bytes in and out, for every frame kind.
    pub frames: Vec<FrameCounts>,
    /// What the shard's outbound queues are charged now (bytes + 64 per frame).
    pub outbound_queue_bytes: u64,
    /// Receive buffer bytes lent out now.
    pub receive_buffer_bytes: u64,
    /// The shard's share of the memory budget.
    pub memory_budget_bytes: u64,
    /// Topic memberships held by the shard's peers.
    pub topic_members: u64,
    /// How long server-side RPC handlers took, from the request's dispatch to the answer.
    pub rpc_handler_seconds: Histogram,
    /// Frames refused by a per-peer rate limit.
    pub rate_limit_hits: u64,
    /// Reads put off to a later pass of the shard's loop: the connection was a bulk reader
    /// (its last read brought 16 KiB or more, or it is receiving a frame larger than a
    /// pooled buffer) and the pass's budget for bulk input was spent (docs/ARCHITECTURE.md,
    /// "Fair reading").
    pub reads_deferred: u64,
    /// Times a connection stopped dispatching its buffered frames until a later pass of
    /// the shard's loop: its frames fan out (a publisher to many topics) and the pass's
    /// budget of sends, 128 connections waiting to be written, was spent
    /// (docs/ARCHITECTURE.md, "Fair reading").
    pub frames_deferred: u64,
    /// Multishot receives armed on the shard's io_uring: one per connection on the ring,
    /// one more after each pause (the connection held enough undispatched bytes) and each
    /// time the shard's provided buffers ran out. 0 when receives go through glommio.
    pub receive_ring_arms: u64,
    /// Ring receives ended because every provided buffer of the shard was in use (the
    /// connection is then read directly, and its receive armed again once its socket is
    /// empty; often, and more buffers per shard would pay).
    pub receive_ring_out_of_buffers: u64,
    /// Reads that a connection on the ring made directly from its socket, in its reader's
    /// turn, after its receive was paused (a large frame, a flood) or ran out of buffers:
    /// how much of the input the ring left to the fair path (`receiver`, fairness).
    pub receive_ring_direct_reads: u64,
    /// Connections parked on the shard's ring of polls after their handshake: they wait on
    /// a multishot readiness poll there, not on glommio's, and keep no glommio readiness
    /// poll, about 270 B (docs/ARCHITECTURE.md, "Memory an idle peer costs"). 0 with
    /// `--ring-receives` or `--no-park-idle`.
    pub receive_parks: u64,
    /// Credentials refused, by reason (`refused`: the `authenticate` callback said no).
    pub auth_failures: Vec<(String, u64)>,
}

/// A snapshot of the whole server: every shard's [`ShardMetrics`] and the server-wide
/// figures. From [`PeerServer::metrics`](crate::PeerServer::metrics).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// The shards that answered, by index.
    pub shards: Vec<ShardMetrics>,
    /// Shards that did not answer in time (their series are left out of this scrape).
    pub missing_shards: Vec<usize>,
    /// Accepting connections: not draining, not closed.
    pub ready: bool,
    /// When the server started.
    pub started_at: SystemTime,
    /// Open connections, all shards (the figure `max_connections` is checked against).
    pub connections: usize,
    /// The connection limit in force.
    pub max_connections: usize,
    /// Handshaken peers in the directory.
    pub peers: usize,
    /// Topics with members or presence watchers.
    pub topics: usize,
    /// accept(2) failures (EMFILE and the like), all shards and Unix acceptors.
    pub accept_errors: u64,
    /// The cluster link's figures, on a cluster node.
    pub cluster: Option<ClusterMetrics>,
}

/// A cluster node's figures (`peerd_cluster_*`), written by its bridge thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterMetrics {
    /// Linked to NATS and in sync: new peers are admitted.
    pub up: bool,
    /// Nodes alive, this one included.
    pub nodes: u64,
    /// Messages and bytes this node published to NATS / received from it.
    pub messages_out: u64,
    pub messages_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Topic messages received from other nodes (zero on a node with no member of any
    /// topic others publish to: interest-based subscriptions).
    pub topic_messages_in: u64,
    /// Cross-node messages not sent (link down, backlog full) or dropped by NATS for a
    /// slow subscription.
    pub dropped: u64,
    /// Messages from other nodes that could not be read.
    pub malformed: u64,
    /// Snapshots asked of other nodes (new node, gap, link back).
    pub resyncs: u64,
    /// Nodes declared dead or that left.
    pub nodes_lost: u64,
    /// Times the link to NATS went down or came back.
    pub link_changes: u64,
    /// Times this node rejoined under a new epoch (it had been declared gone).
    pub rejoins: u64,
    /// Local peers closed because their id was claimed elsewhere while this node was cut
    /// off (found when it rejoined).
    pub ids_lost: u64,
    /// Ids of dead nodes' peers this node deleted from the id bucket.
    pub ids_reaped: u64,
    /// Messages from incarnations declared gone, answered with "rejoin".
    pub rejoins_asked: u64,
    /// The replica: other nodes' peers and topic memberships held here.
    pub remote_peers: u64,
    pub remote_members: u64,
    /// Topic subjects subscribed (topics with a local member).
    pub subscriptions: u64,
    /// Ids this node holds in the id bucket.
    pub claims: u64,
}
