//! A shard's own io_uring, for what glommio does not batch: the sends of a flush. glommio
//! arms a poll per socket and leaves the data path to us; a flush that finds N connections
//! with frames queued made N `sendmsg` calls. Here the N sends go in as N SENDMSG entries
//! and one `io_uring_enter`.
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

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring, Probe};

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
                out[cqe.user_data() as usize] = outcome(cqe.result());
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

/// A SENDMSG completion's result as `send_vectored` gives it.
fn outcome(res: i32) -> io::Result<Option<usize>> {
    if res >= 0 {
        Ok(Some(res as usize))
    } else if res == -libc::EAGAIN {
        Ok(None)
    } else {
        Err(io::Error::from_raw_os_error(-res))
    }
}
