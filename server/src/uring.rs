//! A shard's own io_urings, for what glommio does not do in batches: the sends of a flush
//! ([`SendRing`]) and the receives of every connection ([`RecvRing`]), or, by default, the
//! readiness polls of parked connections ([`RecvRing::polls`], parking: `receiver`).
//!
//! **Sends.** glommio arms a poll per socket and leaves the data path to us; a flush that
//! finds N connections with frames queued made N `sendmsg` calls. Here the N sends go in as
//! N SENDMSG entries and one `io_uring_enter`.
//!
//! Each entry carries `MSG_DONTWAIT`: io_uring then performs the send inline while
//! submitting and completes it at once, with the bytes taken or `EAGAIN`, instead of
//! parking it until the socket has room. So when `submit_and_wait` returns every completion
//! is there, the iovecs and message headers (on this call's stack and heap) are no longer
//! referenced by the kernel, and the caller handles a short or refused send exactly as
//! after a `sendmsg` (`outbound`). Nothing is in flight between flushes.
//!
//! [`SendRing::new`] probes the kernel: no io_uring (disabled, too old, a seccomp filter) or
//! no SENDMSG opcode, and the shard keeps the per-connection `sendmsg` path.
//!
//! **Receives.** Each connection has one multishot RECV in the [`RecvRing`], armed once: the
//! kernel completes it again every time bytes arrive, each time into a buffer it picks from
//! the shard's provided-buffer ring ([`RECV_BYTES`] cut into buffers by [`RecvLayout`], shared
//! by every connection of the shard). No `recv` call, no poll re-armed per read, and an idle
//! connection owns no buffer: the kernel takes one only when bytes come. The reaper
//! (`receiver`) copies them into the connection's receive buffer and gives the provided
//! buffer back at once, so the ring never runs dry because one peer is slow to be served.
//! Where the kernel consumes provided buffers incrementally (6.12), the ring is 16 buffers of
//! 64 KiB and a receive takes only the bytes it got ([`RecvLayout`]); elsewhere 256 of 4 KiB,
//! one per receive.
//!
//! The kernel signals an eventfd on every completion; glommio waits on it (an io_uring READ
//! in glommio's own ring), so the shard sleeps in one place. [`RecvRing::new`] probes for
//! provided-buffer rings (5.19) and multishot receive (6.0) with a real receive on a socket
//! pair; without them connections read through glommio as before.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, types, IoUring, Probe};

use crate::mapping::Mapping;

/// Entries in the ring: sends per `io_uring_enter` at most (a larger flush takes several).
pub(crate) const ENTRIES: u32 = 256;

pub(crate) struct SendRing {
    ring: IoUring,
    /// A batch's storage, kept between batches to reuse the allocations.
    spare: Batch,
    headers: Vec<libc::msghdr>,
    /// `io_uring_enter` failed for a reason other than an interruption: the ring is not
    /// used again (entries it did not take stay unread by the kernel, since nothing enters
    /// the ring any more), and the shard goes back to `sendmsg`.
    broken: bool,
}

/// Sends being gathered for one submission: per send its socket and a range of `iovecs`.
#[derive(Default)]
pub(crate) struct Batch {
    iovecs: Vec<libc::iovec>,
    sends: Vec<(RawFd, usize, usize)>,
}

impl Batch {
    /// One send of `slices`, in order, on `fd`.
    pub fn add<'b>(&mut self, fd: RawFd, slices: impl Iterator<Item = &'b [u8]>) {
        let start = self.iovecs.len();
        self.iovecs.extend(slices.map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        }));
        self.sends.push((fd, start, self.iovecs.len() - start));
    }
}

impl SendRing {
    /// A ring for the calling thread, or why there is none.
    pub fn new() -> io::Result<SendRing> {
        // One thread submits (the shard's), and nothing needs an interrupt to complete:
        // both let the kernel skip work. Older kernels refuse the flags: try without.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(ENTRIES)
            .or_else(|_| IoUring::new(ENTRIES))?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::SendMsg::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel's io_uring has no SENDMSG",
            ));
        }
        Ok(SendRing {
            ring,
            spare: Batch::default(),
            headers: Vec::with_capacity(ENTRIES as usize),
            broken: false,
        })
    }

    /// Whether the ring may be used (see `broken`).
    pub fn usable(&self) -> bool {
        !self.broken
    }

    /// An empty batch (at most [`ENTRIES`] sends go in one).
    pub fn batch(&mut self) -> Batch {
        let mut b = std::mem::take(&mut self.spare);
        b.iovecs.clear();
        b.sends.clear();
        b
    }

    /// Send every send of `batch` with one `io_uring_enter`; `out` gets the outcome of each,
    /// in order: the bytes sent, `Ok(None)` for "would block", or the error, as
    /// [`crate::stream::send_vectored`] gives them (`Ok(Some(0))` for a send the ring could
    /// not take: the caller's own `sendmsg` then does it).
    ///
    /// # Safety
    ///
    /// Every byte the batch names must stay alive and unchanged until this returns (it
    /// returns only once the kernel is done with all of them).
    pub unsafe fn submit(&mut self, batch: Batch, out: &mut Vec<io::Result<Option<usize>>>) {
        out.clear();
        out.extend(batch.sends.iter().map(|_| Ok(Some(0))));
        // The headers point into `batch.iovecs`, which no longer grows.
        self.headers.clear();
        for &(_, start, len) in &batch.sends {
            // SAFETY: msghdr is plain data; zeroed is a valid value.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_iov = batch.iovecs[start..].as_ptr() as *mut libc::iovec;
            h.msg_iovlen = len as _;
            self.headers.push(h);
        }
        let flags = (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32;
        let mut pushed = 0;
        {
            let mut sq = self.ring.submission();
            for (i, h) in self.headers.iter().enumerate() {
                let entry = opcode::SendMsg::new(types::Fd(batch.sends[i].0), h as *const _)
                    .flags(flags)
                    .build()
                    .user_data(i as u64);
                // SAFETY: the header, its iovecs and their bytes outlive the submission:
                // this waits for every completion before returning (module doc), and the
                // caller keeps the bytes (this function's contract).
                if unsafe { sq.push(&entry) }.is_err() {
                    break; // the ring is full: the rest go by sendmsg
                }
                pushed += 1;
            }
        }
        // Every entry the kernel takes completes during the submission (MSG_DONTWAIT); the
        // loop is for an interrupted io_uring_enter.
        let mut reaped = 0;
        while reaped < pushed {
            let entered = self.ring.submit_and_wait(pushed - reaped);
            for cqe in self.ring.completion() {
                let res = cqe.result();
                out[cqe.user_data() as usize] = crate::stream::nonblocking(
                    usize::try_from(res).map_err(|_| io::Error::from_raw_os_error(-res)),
                );
                reaped += 1;
            }
            match entered {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if reaped < pushed => {
                    // What it did not take, it never reads (nothing enters this ring
                    // again): those sends stay Ok(Some(0)) and go by sendmsg.
                    tracing::error!(error = %e, "io_uring_enter failed; this shard sends with sendmsg from now on");
                    self.broken = true;
                    break;
                }
                _ => {}
            }
        }
        self.spare = batch;
    }
}

/// Bytes of provided receive buffers per shard, faulted in when the ring is made (a fixed
/// cost of the shard, not of its connections).
pub(crate) const RECV_BYTES: usize = 1 << 20;

/// How [`RECV_BYTES`] is cut into provided buffers: a few large ones consumed
/// incrementally, or many small ones each taken whole by one receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecvLayout {
    /// Buffers (a power of two: the ring's index is masked).
    pub count: u16,
    /// Bytes per buffer.
    pub len: usize,
    /// `IOU_PBUF_RING_INC` (6.12): a receive takes only the bytes it got from the buffer at
    /// the ring's head, and the next receive, of any connection, goes on after them. A
    /// 64-byte message then costs 64 bytes of the ring and not a whole buffer, so a crowd
    /// of small senders cannot empty the ring before the reaper gives its buffers back (on
    /// whole buffers, 64 echo callers at 40k/s ran it dry and into a storm of ENOBUFS and
    /// re-arms that stalled every connection for up to a second).
    pub incremental: bool,
}

impl RecvLayout {
    /// 16 x 64 KiB, consumed incrementally: a bulk receive takes up to 64 KiB at once.
    pub const INCREMENTAL: RecvLayout = RecvLayout {
        count: (RECV_BYTES / (64 * 1024)) as u16,
        len: 64 * 1024,
        incremental: true,
    };

    /// 256 x 4 KiB, each taken whole: the kernels before 6.12.
    pub const WHOLE: RecvLayout = RecvLayout {
        count: (RECV_BYTES / 4096) as u16,
        len: 4096,
        incremental: false,
    };
}

/// `io_uring_buf_reg.flags` for incremental consumption (`IOU_PBUF_RING_INC`).
const IOU_PBUF_RING_INC: u16 = 2;

/// The provided-buffer group the receives take from (one per ring).
const RECV_GROUP: u16 = 0;

/// Submission entries of the receive ring: arms and cancellations between two submits.
const RECV_ENTRIES: u32 = 256;

/// Completion entries: room for a burst of receives between two reaps (the kernel keeps
/// what overflows, IORING_FEAT_NODROP, but that path is slow).
const RECV_CQ_ENTRIES: u32 = 4096;

/// `user_data` of entries whose completions say nothing anyone waits for (cancellations).
const UNWATCHED: u64 = u64::MAX;

/// What one receive completion brought, as [`RecvRing::reap`] hands it over.
pub(crate) enum Received<'a> {
    /// Bytes (in a provided buffer, valid until the callback returns).
    Data(&'a [u8]),
    /// The peer closed its side: end of stream.
    End,
    /// The receive ended with nothing wrong with the connection: cancelled, or every
    /// provided buffer was taken (`no_buffers`). It can be armed again.
    Stopped { no_buffers: bool },
    /// The receive failed (a reset, for instance).
    Failed(io::Error),
    /// On a ring of polls: the socket has something to read; `end` if the poll saw the
    /// peer's end or an error too (after the bytes still there, a read reports it).
    Readable { end: bool },
}

/// A shard's ring for multishot receives, or for the readiness polls of parked connections
/// (module doc).
pub(crate) struct RecvRing {
    /// Dropped first, by hand: the kernel must be done with the buffers before they go.
    ring: ManuallyDrop<IoUring>,
    /// Signalled by the kernel on every completion (registered with the ring).
    eventfd: OwnedFd,
    /// The receives' buffers; `None` on a ring of polls ([`RecvRing::polls`]).
    provided: Option<Provided>,
    /// Completions copied out of the ring, reused between reaps.
    reaped: Vec<(u64, i32, u32)>,
    /// `io_uring_enter` failed for good: nothing is submitted any more (see `receiver`).
    broken: bool,
}

/// The provided buffers of a ring of receives.
struct Provided {
    /// The provided-buffer ring the kernel reads (`layout.count` entries, page-aligned).
    entries: Mapping,
    /// The buffers the entries point into.
    bufs: Mapping,
    layout: RecvLayout,
    /// Per buffer, where the next bytes the kernel puts in it begin: the bytes it already
    /// consumed of it (always 0 unless `layout.incremental`).
    offsets: Vec<u32>,
    /// The ring's tail as we last wrote it (the kernel reads the copy in `entries`).
    tail: u16,
}

impl RecvRing {
    /// A ring with its provided buffers for the calling thread, or why there is none:
    /// consumed incrementally where the kernel can, else whole.
    pub fn new() -> io::Result<RecvRing> {
        RecvRing::with_layout(RecvLayout::INCREMENTAL)
            .or_else(|_| RecvRing::with_layout(RecvLayout::WHOLE))
    }

    /// A ring whose buffers are cut as `layout` says.
    pub fn with_layout(layout: RecvLayout) -> io::Result<RecvRing> {
        RecvRing::build(Some(layout), RECV_CQ_ENTRIES)
    }

    /// A ring of multishot readiness polls, without buffers: what a parked connection waits
    /// on (`receiver`). Probed with a real poll on a socket pair.
    pub fn polls() -> io::Result<RecvRing> {
        RecvRing::build(None, RECV_CQ_ENTRIES)
    }

    fn build(layout: Option<RecvLayout>, cq_entries: u32) -> io::Result<RecvRing> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_cqsize(cq_entries)
            .build(RECV_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(cq_entries)
                    .build(RECV_ENTRIES)
            })?;
        let provided = layout.map(|l| Provided::register(&ring, l)).transpose()?;
        // SAFETY: eventfd(2) with valid flags; blocking (no EFD_NONBLOCK), so that an
        // io_uring READ of it waits for a count instead of failing with EAGAIN.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        let mut r = RecvRing {
            ring: ManuallyDrop::new(ring),
            eventfd,
            provided,
            reaped: Vec::with_capacity(RECV_CQ_ENTRIES as usize),
            broken: false,
        };
        r.probe()?;
        // Registered after the probe: its completions need not wake anyone.
        r.ring.submitter().register_eventfd(r.eventfd.as_raw_fd())?;
        Ok(r)
    }

    /// One request on a socket pair, as the ring will make them: kernels before 6.0 refuse
    /// a multishot receive; a poll must see the byte sent.
    fn probe(&mut self) -> io::Result<()> {
        let mut fds = [0; 2];
        // SAFETY: socketpair fills two fds, which we own from here.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just created, ours alone.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        self.arm(a.as_raw_fd(), 1);
        // SAFETY: one byte from a valid buffer.
        unsafe { libc::send(b.as_raw_fd(), b"p".as_ptr().cast(), 1, libc::MSG_DONTWAIT) };
        let mut first = None;
        let mut ended = false;
        while !ended {
            self.ring.submit_and_wait(1)?;
            let cqes: Vec<_> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags()))
                .collect();
            for (key, res, flags) in cqes {
                if key == UNWATCHED {
                    continue;
                }
                if let (Some(bid), Some(p)) = (cqueue::buffer_select(flags), &mut self.provided) {
                    p.consumed(bid, res.max(0) as u32, flags);
                }
                first.get_or_insert((res, cqueue::more(flags)));
                ended |= !cqueue::more(flags);
            }
            if !ended {
                // Still armed after its first completion, as it should be: it ends when
                // cancelled (its socket pair is ours alone, nothing else ends it).
                self.cancel(1);
            }
        }
        if let Some(p) = &self.provided {
            p.publish();
        }
        match first {
            Some((1, true)) if self.provided.is_some() => Ok(()),
            Some((mask, true)) if self.provided.is_none() && mask > 0 && mask & POLL_MASK != 0 => {
                Ok(())
            }
            Some((res, _)) if res < 0 => Err(io::Error::from_raw_os_error(-res)),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                if self.provided.is_some() {
                    "the kernel's io_uring has no multishot receive"
                } else {
                    "the kernel's io_uring has no multishot poll, or it did not see the socket \
                     readable"
                },
            )),
        }
    }

    /// How the ring's buffers are cut (`None`: a ring of polls).
    pub fn layout(&self) -> Option<RecvLayout> {
        self.provided.as_ref().map(|p| p.layout)
    }

    /// The eventfd the kernel signals on every completion.
    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Whether the ring may be used (see `broken`).
    pub fn usable(&self) -> bool {
        !self.broken
    }

    /// Queue a multishot receive on `fd` (a multishot readiness poll, on a ring of polls);
    /// its completions carry `key`. Goes to the kernel with the next
    /// [`submit`](Self::submit).
    pub fn arm(&mut self, fd: RawFd, key: u64) {
        let entry = match self.provided {
            Some(_) => opcode::RecvMulti::new(types::Fd(fd), RECV_GROUP).build(),
            None => opcode::PollAdd::new(types::Fd(fd), POLL_MASK as u32)
                .multi(true)
                .build(),
        };
        self.push(&entry.user_data(key));
    }

    /// Queue the cancellation of `key`'s request (its last completion says so).
    pub fn cancel(&mut self, key: u64) {
        let entry = opcode::AsyncCancel::new(key).build().user_data(UNWATCHED);
        self.push(&entry);
    }

    fn push(&mut self, entry: &io_uring::squeue::Entry) {
        loop {
            // SAFETY: a receive names no memory of ours (the kernel picks a provided
            // buffer, which outlives the ring); a poll or a cancellation names none at all.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            // Full: send what is queued, then there is room.
            if self.submit().is_err() {
                return;
            }
        }
    }

    /// Hand what was queued to the kernel, without waiting. An error other than an
    /// interruption marks the ring broken (and is returned).
    pub fn submit(&mut self) -> io::Result<()> {
        if self.broken || (self.ring.submission().is_empty() && !self.overflowed()) {
            return Ok(());
        }
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // The completion queue is over full: what the reaper takes makes room.
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(error = %e, "io_uring_enter failed on the receive ring");
                    self.broken = true;
                    return Err(e);
                }
            }
        }
    }

    /// Whether completions the completion queue had no room for wait in the kernel
    /// (`IORING_FEAT_NODROP`). They reach the queue only at an `io_uring_enter`, and every
    /// later completion queues up behind them: without that enter no receive on this ring
    /// would ever be heard from again.
    fn overflowed(&self) -> bool {
        // SAFETY: reading the flags word of the mapped submission ring, which the kernel
        // writes atomically; no entry is touched.
        unsafe { self.ring.submission_shared().cq_overflow() }
    }

    /// Every completion so far, in order, to `f(key, what, more)`; `more` is false on a
    /// request's last. `f` returning true asks to stop that receive (it is cancelled).
    /// Provided buffers go back to the kernel as soon as `f` has seen them. Completions that
    /// overflowed the queue are flushed into it and handed over too.
    pub fn reap(&mut self, mut f: impl FnMut(u64, Received<'_>, bool) -> bool) {
        loop {
            self.reap_queue(&mut f);
            let overflowed = self.overflowed();
            // Submits what `f` asked for (cancellations) and, on an overflow, flushes it.
            let _ = self.submit();
            if !overflowed || self.broken {
                return;
            }
        }
    }

    /// What the completion queue holds now, to `f` (see [`reap`](Self::reap)).
    fn reap_queue(&mut self, f: &mut impl FnMut(u64, Received<'_>, bool) -> bool) {
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.clear();
        reaped.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(key, res, flags) in &reaped {
            if key == UNWATCHED {
                continue;
            }
            let more = cqueue::more(flags);
            let bid = cqueue::buffer_select(flags);
            let what = match (res, bid, &self.provided) {
                (n, Some(bid), Some(p)) if n > 0 => {
                    let offset = p.offsets[bid as usize] as usize;
                    let start = bid as usize * p.layout.len + offset;
                    // SAFETY: the kernel wrote `n` bytes into buffer `bid` after the bytes
                    // it consumed of it before, and will not write there again until we
                    // give the buffer back (below).
                    Received::Data(unsafe {
                        std::slice::from_raw_parts(
                            p.bufs.as_ptr().add(start),
                            (n as usize).min(p.layout.len - offset),
                        )
                    })
                }
                // A poll's result is the events it saw.
                (n, _, None) if n > 0 => Received::Readable {
                    end: n & POLL_END != 0,
                },
                (0, _, Some(_)) => Received::End,
                (n, _, _) if n == -libc::ECANCELED => Received::Stopped { no_buffers: false },
                (n, _, _) if n == -libc::ENOBUFS => Received::Stopped { no_buffers: true },
                (n, _, _) if n < 0 => Received::Failed(io::Error::from_raw_os_error(-n)),
                _ => Received::Failed(io::Error::other("a receive completed without its buffer")),
            };
            let stop = f(key, what, more);
            if let (Some(bid), Some(p)) = (bid, &mut self.provided) {
                p.consumed(bid, res.max(0) as u32, flags);
            }
            if stop && more {
                self.cancel(key);
            }
        }
        if let Some(p) = &self.provided {
            p.publish();
        }
        self.reaped = reaped;
    }
}

/// What a parked connection's poll waits for: bytes, or the peer's end of the stream
/// (errors and hang-ups are reported whatever the mask).
const POLL_MASK: i32 = (libc::POLLIN | libc::POLLRDHUP) as i32;

/// What a poll reports of a peer's end or an error (the kernel reports POLLERR and POLLHUP
/// whatever was asked for).
const POLL_END: i32 = (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as i32;

impl Provided {
    /// Buffers cut as `layout` says, registered with `ring` and all given to the kernel.
    fn register(ring: &IoUring, layout: RecvLayout) -> io::Result<Provided> {
        let count = layout.count as usize;
        let entries =
            Mapping::populated((count * std::mem::size_of::<types::BufRingEntry>()).max(4096))?;
        let bufs = Mapping::populated(count * layout.len)?;
        // SAFETY: `entries` is page-aligned, holds `count` entries and lives as long as the
        // ring (dropped after it, see Drop). A kernel without incremental consumption
        // refuses the flag (EINVAL).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                layout.count,
                RECV_GROUP,
                if layout.incremental {
                    IOU_PBUF_RING_INC
                } else {
                    0
                },
            )?;
        }
        let mut p = Provided {
            entries,
            bufs,
            layout,
            offsets: vec![0; count],
            tail: 0,
        };
        for bid in 0..layout.count {
            p.give_back(bid);
        }
        p.publish();
        Ok(p)
    }

    /// A completion's `n` bytes of buffer `bid` were seen: the buffer goes back to the
    /// kernel when this was its last use (no `IORING_CQE_F_BUF_MORE`), else its next bytes
    /// begin after these.
    fn consumed(&mut self, bid: u16, n: u32, flags: u32) {
        if cqueue::buffer_more(flags) {
            self.offsets[bid as usize] += n;
        } else {
            self.offsets[bid as usize] = 0;
            self.give_back(bid);
        }
    }

    /// Put buffer `bid`, whole, at the ring's tail (seen by the kernel after [`publish`]).
    fn give_back(&mut self, bid: u16) {
        let slot = (self.tail & (self.layout.count - 1)) as usize;
        // SAFETY: `slot` < `count` entries of the mapping; the kernel reads only the
        // entries before the published tail, and this one is past it.
        let entry = unsafe {
            &mut *self
                .entries
                .as_ptr()
                .cast::<types::BufRingEntry>()
                .add(slot)
        };
        entry.set_addr(self.bufs.as_ptr() as u64 + (bid as usize * self.layout.len) as u64);
        entry.set_len(self.layout.len as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Let the kernel see the buffers given back.
    fn publish(&self) {
        // SAFETY: the tail field of the mapped ring, written by us and read by the kernel:
        // a release store, so the entries are written before the kernel sees them counted.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries.as_ptr().cast()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for RecvRing {
    fn drop(&mut self) {
        // No receive may pick a buffer once the ring is gone and the buffers unmapped:
        // unregistered first, the group is empty for whatever the ring's teardown runs.
        if self.provided.is_some() {
            let _ = self.ring.submitter().unregister_buf_ring(RECV_GROUP);
        }
        // SAFETY: dropped once, here; the fields after it (the mappings) go next.
        unsafe { ManuallyDrop::drop(&mut self.ring) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// Reap until `want` bytes came for key 7, all through one receive (`more` on each).
    fn receive(r: &mut RecvRing, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < want {
            r.ring.submit_and_wait(1).expect("wait for a completion");
            r.reap(|key, what, more| {
                assert_eq!(key, 7);
                match what {
                    Received::Data(b) => got.extend_from_slice(b),
                    _ => panic!("the receive ended (more: {more})"),
                }
                assert!(more, "the multishot receive ended");
                false
            });
        }
        assert_eq!(got.len(), want);
        got
    }

    /// Messages of several sizes, each received before the next is sent (so each is its
    /// own completion), then far more bytes than all buffers hold: every byte comes back as
    /// written. Incrementally, the small messages share a buffer at growing offsets; the
    /// bulk shows that every buffer goes back to the kernel (else ENOBUFS past 1 MiB).
    fn round_trip(layout: RecvLayout) {
        let mut r = RecvRing::with_layout(layout).expect("a receive ring");
        assert_eq!(r.layout(), Some(layout));
        let (a, mut b) = UnixStream::pair().unwrap();
        r.arm(a.as_raw_fd(), 7);
        r.submit().unwrap();
        for (i, len) in [64, 1, 1000, 4096, 5000, 70_000].into_iter().enumerate() {
            let msg: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            b.write_all(&msg).unwrap();
            assert!(
                receive(&mut r, len) == msg,
                "message {i} ({len} bytes) differs"
            );
        }
        let chunk: Vec<u8> = (0..30_000u32).map(|j| (j % 253) as u8).collect();
        for _ in 0..(3 * RECV_BYTES / chunk.len()) {
            b.write_all(&chunk).unwrap();
            assert!(receive(&mut r, chunk.len()) == chunk);
        }
    }

    #[test]
    fn incremental_buffers_hand_over_every_byte_in_order() {
        match RecvRing::with_layout(RecvLayout::INCREMENTAL) {
            Ok(_) => round_trip(RecvLayout::INCREMENTAL),
            // A kernel before 6.12: the shard must then get whole buffers.
            Err(e) => {
                eprintln!("no incremental provided buffers here ({e})");
                let r = RecvRing::new().expect("a receive ring of whole buffers");
                assert_eq!(r.layout(), Some(RecvLayout::WHOLE));
            }
        }
    }

    #[test]
    fn whole_buffers_hand_over_every_byte_in_order() {
        round_trip(RecvLayout::WHOLE);
    }

    /// A ring of polls: a poll completes whenever its socket gets bytes, and not before,
    /// reading none of them, and stays armed (multishot) until cancelled; a cancelled one
    /// ends as stopped.
    #[test]
    fn a_poll_completes_each_time_its_socket_turns_readable_and_ends_when_cancelled() {
        let mut r = RecvRing::polls().expect("a ring of polls");
        assert_eq!(r.layout(), None);
        let (a, mut b) = UnixStream::pair().unwrap();
        r.arm(a.as_raw_fd(), 5);
        r.submit().unwrap();
        r.reap(|key, _, _| panic!("poll {key} completed before anything was sent"));
        for sent in [b'x', b'y'] {
            b.write_all(&[sent]).unwrap();
            let mut readable = 0;
            while readable == 0 {
                r.ring.submit_and_wait(1).expect("wait for the poll");
                r.reap(|key, what, more| {
                    assert_eq!(key, 5);
                    assert!(
                        matches!(what, Received::Readable { end: false }),
                        "not readable"
                    );
                    assert!(more, "the poll stays armed");
                    readable += 1;
                    false
                });
            }
            let mut byte = [0u8; 2];
            assert_eq!(crate::stream::recv(a.as_raw_fd(), &mut byte).unwrap(), 1);
            assert_eq!(byte[0], sent, "the poll took the byte");
        }
        // Cancelled after its completions, and before any.
        cancel_and_wait(&mut r, 5);
        let (c, _d) = UnixStream::pair().unwrap();
        r.arm(c.as_raw_fd(), 6);
        r.submit().unwrap();
        cancel_and_wait(&mut r, 6);
    }

    /// Cancel `key`'s poll and wait for its last completion, which says it stopped.
    fn cancel_and_wait(r: &mut RecvRing, key: u64) {
        r.cancel(key);
        r.submit().unwrap();
        let mut stopped = false;
        for _ in 0..10 {
            r.ring
                .submit_and_wait(1)
                .expect("wait for the cancellation");
            r.reap(|k, what, more| {
                assert_eq!(k, key);
                assert!(matches!(what, Received::Stopped { no_buffers: false }));
                stopped |= !more;
                false
            });
            if stopped {
                break;
            }
        }
        assert!(stopped, "the cancelled poll {key} never ended");
    }

    /// More completions at once than the completion queue holds: those the kernel kept
    /// aside (IORING_FEAT_NODROP) are flushed and handed over by the same reap, so no
    /// connection's bytes stay stuck in the kernel (under 5,000 flooding peers the shard
    /// stopped hearing from every connection before this).
    #[test]
    fn completions_past_the_queue_are_flushed_and_handed_over() {
        const PAIRS: usize = 300;
        let mut r = RecvRing::build(Some(RecvLayout::INCREMENTAL), RECV_ENTRIES)
            .or_else(|_| RecvRing::build(Some(RecvLayout::WHOLE), RECV_ENTRIES))
            .expect("a receive ring");
        let pairs: Vec<_> = (0..PAIRS).map(|_| UnixStream::pair().unwrap()).collect();
        for (i, (a, _)) in pairs.iter().enumerate() {
            r.arm(a.as_raw_fd(), i as u64 + 1);
        }
        r.submit().unwrap();
        // One byte each, all before any reap: one completion each, 300 > 256.
        for (i, (_, b)) in pairs.iter().enumerate() {
            (&*b).write_all(&[i as u8]).unwrap();
        }
        assert!(
            r.overflowed(),
            "the queue did not overflow: the test shows nothing"
        );
        let mut got = vec![None; PAIRS];
        r.reap(|key, what, _more| {
            if let Received::Data(bytes) = what {
                got[key as usize - 1] = Some(bytes.to_vec());
            }
            false
        });
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g.as_deref(), Some(&[i as u8][..]), "pair {i}");
        }
        assert!(!r.overflowed());
    }
}
