//! [`Local`]: the part of a shard that its connections use directly.
//!
//! A connection needs to encode frames, borrow receive buffers, join the write set, spawn
//! tasks the shard will wait for, and report that it is closing. Those live here, below the
//! connection in the module graph, so that `conn` never imports `shard` (which holds the
//! connections): closing a connection only records its session in [`Local::closing`] and
//! wakes the shard, which tears it down (`lifecycle::settle`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use glommio::sync::Gate;
use peerd_codec::{self as codec, EncodeError};

use crate::config::Limits;
use crate::fair::Fair;
use crate::frame::Frame;
use crate::inbound::RxPool;
use crate::metrics::{ShardCounters, TransportKind};
use crate::outbound::WriteSet;
use crate::shared::Shared;
use crate::uring::SendRing;
use crate::util::Notify;

/// What one relayed call waiting for its answer costs, as the memory budget counts it: the
/// callee shard's table and deadline entries and the request queued toward the callee,
/// rounded up.
pub(crate) const RELAY_COST: usize = 256;

/// How far held memory must fall from its peak before the shard trims the allocator.
const TRIM_AFTER: usize = 16 << 20;

/// Size of an encode chunk; frames are carved out of it, so small frames cost no
/// allocation of their own.
const ENCODE_CHUNK: usize = 64 * 1024;

pub(crate) struct Local {
    /// This shard's index.
    pub index: usize,
    pub shared: Arc<Shared>,
    encoder: RefCell<BytesMut>,
    pub rx_pool: RxPool,
    /// The budget of bulk input per pass of the shard's loop, and who waits for the next
    /// pass: bulk readers, and runs of frames or inbox messages over the budget of sends
    /// (`fair`).
    pub fair: Fair,
    pub writes: Rc<WriteSet>,
    /// Every task the shard spawns (connections, drains, timers); closed last at shutdown.
    pub tasks: Gate,
    /// Server-side RPC handler tasks; closed first at shutdown, with the drain deadline.
    pub handlers: Gate,
    /// Sessions closed since the last settle, waiting to be torn down.
    closing: RefCell<Vec<u64>>,
    /// Wakes the shard's janitor when a connection closes outside any batch.
    pub janitor: Notify,
    /// Peer-to-peer calls made by this shard's peers and not answered yet (each holds a
    /// table entry and a request on the callee's shard: [`RELAY_COST`] bytes, counted in
    /// the memory budget).
    relay_slots: Cell<usize>,
    relay_peak: Cell<usize>,
    /// This shard's share of `Limits::memory_budget`.
    pub memory_budget: Cell<usize>,
    /// What the shard held when the budget was last enforced (`grown_past_budget`).
    enforced_at: Cell<usize>,
    /// The limits in force (`PeerServer::set_limits` replaces them; connections read
    /// them when they need them, so a change applies from the next read).
    limits: RefCell<Rc<Limits>>,
    /// Heartbeat ticks since the shard started (four per heartbeat interval).
    pub tick: Cell<u32>,
    /// The shard is shutting down: handshakes still in progress are refused, not welcomed.
    pub stopping: Cell<bool>,
    /// This shard's counters (plain cells: only this thread touches them; a scrape asks
    /// the shard for a copy over its inbox).
    pub metrics: ShardCounters,
}

/// The shard's io_uring for batched sends (made on the shard's thread, which alone
/// submits to it), or None: turned off, or the kernel cannot (logged once, by shard 0).
fn send_ring(index: usize, shared: &Shared) -> Option<SendRing> {
    if !shared.config.batched_sends {
        if index == 0 {
            tracing::info!("sends: one sendmsg per connection (batched sends turned off)");
        }
        return None;
    }
    match SendRing::new() {
        Ok(ring) => {
            if index == 0 {
                tracing::info!("sends: batched through io_uring (SENDMSG, one enter per flush)");
            }
            Some(ring)
        }
        Err(e) => {
            if index == 0 {
                tracing::warn!(error = %e, "sends: no io_uring for batched sends; one sendmsg per connection");
            }
            None
        }
    }
}

impl Local {
    pub fn new(index: usize, shared: Arc<Shared>) -> Local {
        let tasks = Gate::new();
        let memory_budget = Cell::new(shared.config.limits.memory_budget / shared.shards());
        let limits = RefCell::new(Rc::new(shared.config.limits.clone()));
        let ring = send_ring(index, &shared);
        Local {
            relay_slots: Cell::new(0),
            relay_peak: Cell::new(0),
            memory_budget,
            enforced_at: Cell::new(0),
            limits,
            index,
            shared,
            encoder: RefCell::new(BytesMut::with_capacity(ENCODE_CHUNK)),
            rx_pool: RxPool::default(),
            fair: Fair::default(),
            writes: Rc::new(WriteSet::new(tasks.clone(), ring)),
            tasks,
            handlers: Gate::new(),
            closing: RefCell::new(Vec::new()),
            janitor: Notify::default(),
            tick: Cell::new(0),
            stopping: Cell::new(false),
            metrics: ShardCounters::default(),
        }
    }

    /// An admitted connection (`Shared::try_admit`) on `transport` ended: it no longer
    /// counts against `max_connections` nor as open.
    pub fn connection_ended(&self, transport: TransportKind) {
        self.shared.connection_ended();
        self.metrics.ended(transport);
    }

    pub fn limits(&self) -> Rc<Limits> {
        self.limits.borrow().clone()
    }

    /// New limits for this shard (see `PeerServer::set_limits`).
    pub fn set_limits(&self, limits: Limits) {
        self.memory_budget
            .set(limits.memory_budget / self.shared.shards());
        *self.limits.borrow_mut() = Rc::new(limits);
    }

    /// Encode a message once into the shard's encode arena and return it as a shareable
    /// frame (for every transport: `outbound::Frame`).
    pub fn encode<M: codec::Encode>(&self, msg: &M) -> Result<Frame, EncodeError> {
        self.encode_within(msg, u32::MAX)
    }

    /// Encode a frame that carries a peer's payload to other peers (a publish, a direct
    /// event, a relayed call...). It must fit the limit peers were told in Welcome
    /// (`max_frame_len`): the envelope the server adds (sender id, topic) can push a payload
    /// that fitted when it arrived past it, and then the sender is refused (too_large)
    /// rather than the receivers getting a frame larger than they were promised.
    pub fn encode_relayed<M: codec::Encode>(&self, msg: &M) -> Result<Frame, EncodeError> {
        self.encode_within(msg, self.limits().max_frame_len)
    }

    fn encode_within<M: codec::Encode>(&self, msg: &M, max: u32) -> Result<Frame, EncodeError> {
        let mut enc = self.encoder.borrow_mut();
        if enc.capacity() - enc.len() < 1024 {
            *enc = BytesMut::with_capacity(ENCODE_CHUNK);
        }
        let room = enc.capacity() - enc.len();
        let skip = Frame::encode_into(msg, &mut enc, max)?;
        enc.advance(skip);
        let frame = enc.split().freeze();
        if frame.len() + skip > room {
            // It outgrew the chunk: the encoder reallocated, with slack. Give the frame an
            // allocation of exactly its size (what queues are charged; `outbound`) and start
            // a fresh chunk rather than carve later frames out of this one.
            *enc = BytesMut::with_capacity(ENCODE_CHUNK);
            return Ok(Frame::from_framed(Bytes::copy_from_slice(&frame)));
        }
        Ok(Frame::from_framed(frame))
    }

    /// Spawn a task the shard waits for at shutdown. `false`: the shard is stopping and
    /// the task was not started.
    pub fn spawn(&self, f: impl Future<Output = ()> + 'static) -> bool {
        match self.tasks.spawn(f) {
            Ok(t) => {
                t.detach();
                true
            }
            Err(_) => false,
        }
    }

    /// Record that the connection with `session` is closing; it is torn down at the next
    /// settle.
    pub fn closing(&self, session: u64) {
        self.closing.borrow_mut().push(session);
        self.janitor.notify();
    }

    /// Memory held for this shard's peers: queues, receive buffers, relayed calls.
    pub fn memory_held(&self) -> usize {
        self.writes.charged() + self.rx_pool.lent() + self.relay_slots.get() * RELAY_COST
    }

    /// Whether the shard is over its memory budget and has grown by a sixteenth of it since
    /// the budget was last enforced. A reader checks this after each read, so that a crowd
    /// of peers growing their receive buffers at once is stopped within a read of each
    /// (the budget is otherwise enforced once per batch of reads, after every reader the
    /// reactor found ready has read: 5,000 of them overshot a 256 MiB budget by 250 MiB).
    /// The step keeps the enforcement's scan of the shard's connections from running after
    /// every read while what is over the budget is on its way out (queues of closed peers).
    pub fn grown_past_budget(&self) -> bool {
        let (held, budget) = (self.memory_held(), self.memory_budget.get());
        held > self.budget_counted() && held >= self.enforced_at.get() + budget / 16
    }

    /// What the shard lets what it counts (queues, receive buffers, relayed calls) reach
    /// before it closes the largest holders: seven eighths of its budget. The last eighth is
    /// for what it does not count: the connections themselves, the allocator's own overhead
    /// and free memory not yet returned, and the overshoot of one read per reader before
    /// the check. With a 256 MiB budget and 5,000 peers sending large partial frames,
    /// counting to the whole budget peaked at 281-283 MiB of RSS, and to seven eighths at
    /// 243-246 MiB. A small budget is exceeded still: at 32 MiB, RSS grew by 33-37 MiB in
    /// `cli/tests/hostile.rs` (likely a growing buffer's old and new copies, not counted).
    pub fn budget_counted(&self) -> usize {
        let budget = self.memory_budget.get();
        budget - budget / 8
    }

    /// The budget was just enforced (`grown_past_budget`).
    pub fn budget_enforced(&self) {
        self.enforced_at.set(self.memory_held());
    }

    /// `n` relayed calls of this shard's peers started (or, negative, ended).
    pub fn relays_changed(&self, started: bool, n: usize) {
        let v = if started {
            self.relay_slots.get() + n
        } else {
            self.relay_slots.get().saturating_sub(n)
        };
        self.relay_slots.set(v);
        self.relay_peak.set(self.relay_peak.get().max(v));
    }

    /// Give freed memory back to the system after a burst: when what the shard held has
    /// dropped by more than [`TRIM_AFTER`] since the last call (slow consumers were cut, a
    /// flood of partial frames ended), `malloc_trim` returns the allocator's free pages.
    /// Without it glibc keeps each shard thread's arena at its peak for good. Called every
    /// heartbeat tick; the trim itself is rare.
    pub fn return_memory_after_burst(&self) {
        let relay_peak = self.relay_peak.replace(self.relay_slots.get()) * RELAY_COST;
        let peak = self.writes.take_peak() + self.rx_pool.take_peak() + relay_peak;
        if peak > self.memory_held() + TRIM_AFTER {
            self.return_freed_memory();
        }
    }

    /// Return the allocator's free pages to the system (`malloc_trim`): after a burst, and
    /// after the memory budget cut peers (`lifecycle::settle`). It walks every arena of the
    /// process, other shards' too, so it is kept to those moments.
    pub fn return_freed_memory(&self) {
        // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
        unsafe { libc::malloc_trim(0) };
    }

    /// Whether no session waits to be torn down.
    pub fn nothing_closing(&self) -> bool {
        self.closing.borrow().is_empty()
    }

    /// Sessions to tear down.
    pub fn take_closing(&self) -> Vec<u64> {
        std::mem::take(&mut *self.closing.borrow_mut())
    }
}
