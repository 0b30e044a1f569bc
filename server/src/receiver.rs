//! A shard's receives through its own io_uring ([`RecvRing`], module doc of `uring`): which
//! connection each multishot receive belongs to, the reaper task that hands their bytes
//! over, and the reader's side of it (wait for bytes, arm, stop).
//!
//! A connection goes on the ring when its read loop starts (after the handshake, which stays
//! on glommio: it is brief, and its deadline and upgrade parsing read in their own way) and
//! leaves it when the loop ends, before the close linger reads through glommio again. On a
//! TLS connection the reaper hands the ciphertext to the connection's rustls session and
//! moves the plaintext into its `RxBuf` (`RxBuf::tls_received`); rustls keeps its own
//! buffer for a record still incomplete, as it does when it reads the socket itself.
//!
//! The reaper appends what each completion brought to the connection's [`RxBuf`], exactly as
//! a read would have, and wakes the reader, which dispatches as before. Once a connection
//! holds 4 KiB undispatched ([`RxBuf::is_full`]: a rate-limited peer, a large frame still
//! coming), its receive is cancelled. What the peer sends meanwhile waits in the
//! kernel, under TCP flow control, as it does for a reader that stops reading.
//!
//! Fairness: the provided buffers are shared by every connection of the shard, and the
//! kernel fills them in the order data arrives, so a crowd of peers sending fast could keep
//! them empty, and every other receive would end "out of buffers" (ENOBUFS). So the ring
//! serves a connection only in small shares: a receive that was paused or ran out of
//! buffers is not simply armed again. When its reader next wants bytes it reads the socket
//! directly, in its own turn among the shard's tasks (glommio's path, whose round robin is
//! fair), and arms a receive only once the socket is empty. An idle or lightly loaded
//! connection stays on the ring; one that floods is served as it would be without it.
//!
//! **Parking.** With receives through glommio (the default), the same machinery parks
//! connections on a ring of multishot readiness polls instead of receives
//! ([`Receiver::polls`]). glommio keeps a readiness poll armed, about 270 B on the heap, for
//! every stream it waits on, and through glommio an idle connection waits on exactly that;
//! a parked connection's socket is bare (`stream::Stream::Bare`) and its poll is in the
//! kernel's memory, not ours. A connection is parked when its read loop starts, after the
//! handshake, and stays parked until it ends, busy or idle. Its poll is armed once and
//! completes every time bytes arrive (`RecvState::Ready`); its reader then reads the socket
//! directly, in its turn, and once a read leaves the socket empty it waits for the poll's
//! next completion, arming nothing. A read that brings less than it had room for left the
//! socket empty, with one exception: the peer's end (or an error) waiting behind the last
//! bytes, which only the next read reports. The poll completes once for it, possibly
//! together with the bytes before it, and never again; so a completion that saw the end
//! keeps the reader reading until a read reports it (`RecvState::ReadyToEnd`).
//!
//! glommio's polls are one-shot: a connection reading through glommio makes a poll (a
//! source allocated, a POLL_ADD armed in the kernel) after every read that empties its
//! socket. Under 5,000 peers each sending a little, that was most of what set the parked
//! path apart: the well-behaved peer's p99 9-21 ms instead of 100-150 under pipelining and
//! relay floods at 50,000 requests/s, at 15-25 % less server CPU (results/multishot-polls/).
//! It costs a hop through the ring's eventfd and its reaper per wake of the shard: 6-16 %
//! more server CPU per round trip for a lone echo caller, none measurable at 64. (Parking
//! first kept one-shot polls and sent a connection that read twice within a heartbeat tick
//! back to glommio's reads; the multishot poll made both unnecessary.)
//!
//! Keys: a completion carries its connection's slot index and the slot's generation, so a
//! completion still in the ring for a connection that has gone never reaches the one that
//! took its slot. A slot is freed only after its receive's last completion.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

use futures_lite::future::poll_fn;

use crate::conn::Conn;
use crate::inbound::{errno_of, try_fill, Errno, RecvState};
use crate::local::Local;
use crate::uring::{Received, RecvRing};

pub(crate) struct Receiver {
    ring: RefCell<RecvRing>,
    /// A ring of polls, for parked connections (module doc), not of receives.
    polls: bool,
    slots: RefCell<Slots>,
    /// The reaper stopped (waiting on the ring failed): no connection goes on the ring.
    failed: Cell<bool>,
}

#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

struct Slot {
    /// Bumped each time the slot is taken; part of the key (0 is never used, so no key is
    /// 0, which `RingRecv::key` keeps for "not on the ring").
    gen: u32,
    /// `None` while free.
    conn: Option<Weak<Conn>>,
}

fn key(index: u32, gen: u32) -> u64 {
    (u64::from(gen) << 32) | u64::from(index)
}

impl Slots {
    fn take(&mut self, conn: Weak<Conn>) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { gen: 0, conn: None });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.gen = slot.gen.wrapping_add(1).max(1);
        slot.conn = Some(conn);
        key(index, slot.gen)
    }

    /// The slot `key` names, if it is still the one it named.
    fn get(&self, key: u64) -> Option<&Slot> {
        let slot = self.slots.get(key as u32 as usize)?;
        (slot.gen == (key >> 32) as u32 && slot.conn.is_some()).then_some(slot)
    }

    fn release(&mut self, key: u64) {
        if self.get(key).is_some() {
            self.slots[key as u32 as usize].conn = None;
            self.free.push(key as u32);
        }
    }
}

/// Where [`RxBuf::tls_received`]'s outcome leaves the stream: `None` while it goes on,
/// `Some(0)` after the peer's close_notify, `Some(EPROTO)` after a TLS protocol error (its
/// alert already sent).
fn session_end(fed: &io::Result<bool>) -> Option<Errno> {
    match fed {
        Ok(false) => None,
        Ok(true) => Some(0),
        Err(_) => Some(libc::EPROTO as Errno),
    }
}

impl Receiver {
    /// Receives through the shard's ring, multishot, into provided buffers.
    pub fn new() -> io::Result<Receiver> {
        Receiver::with_ring(RecvRing::new()?)
    }

    /// A ring of polls, to park connections that read through glommio (module doc).
    pub fn polls() -> io::Result<Receiver> {
        Receiver::with_ring(RecvRing::polls()?)
    }

    fn with_ring(ring: RecvRing) -> io::Result<Receiver> {
        Ok(Receiver {
            polls: ring.layout().is_none(),
            ring: RefCell::new(ring),
            slots: RefCell::new(Slots::default()),
            failed: Cell::new(false),
        })
    }

    /// How the shard's provided buffers are cut (`None`: a ring of polls).
    pub fn layout(&self) -> Option<crate::uring::RecvLayout> {
        self.ring.borrow().layout()
    }

    /// Put `conn` on the ring (its first receive, or poll, is armed when its reader first
    /// waits), and drop its glommio stream: the handshake read through glommio, whose
    /// stream keeps a readiness poll armed that the ring makes useless (about 270 B per
    /// idle connection). False if the ring cannot take it (it reads through glommio then).
    pub fn register(&self, conn: &Rc<Conn>) -> bool {
        if !self.take(conn) {
            return false;
        }
        // If the fd cannot be duplicated (out of descriptors) the connection keeps its
        // glommio stream, and works the same.
        let _ = conn.out.bare_stream();
        if self.polls {
            conn.local.metrics.parked();
        }
        true
    }

    /// Give `conn` a slot on the ring.
    fn take(&self, conn: &Rc<Conn>) -> bool {
        if self.failed.get() || !self.ring.borrow().usable() {
            return false;
        }
        let key = self.slots.borrow_mut().take(Rc::downgrade(conn));
        conn.ring.key.set(key);
        conn.ring.state.set(RecvState::Idle);
        if conn.out.is_tls() {
            // Plaintext rustls decrypted during the handshake's reads and still holds would
            // otherwise wait for the next record: into `rx` now, for the reader's first pass.
            let mut rx = conn.rx.borrow_mut();
            let fed = rx.tls_received(&[], &conn.local.rx_pool, &conn.out);
            if let Some(errno) = session_end(&fed) {
                conn.ring.state.set(RecvState::Ended(errno));
            }
            conn.set_rx_held(rx.held());
        }
        true
    }

    /// The reader's wait: the bytes appended since it last looked, the end of the stream,
    /// or `Pending` (the caller keeps the waker in `Conn::reader_waker`, which the reaper
    /// wakes). Arms a receive if none is in the kernel. A direct read brings at most
    /// `most` bytes (`fair::Fair::most_to_read`).
    pub fn poll_read(&self, conn: &Conn, most: usize) -> Poll<io::Result<usize>> {
        let n = conn.ring.arrived.replace(0);
        if n > 0 {
            return Poll::Ready(Ok(n as usize));
        }
        match conn.ring.state.get() {
            RecvState::Ended(0) | RecvState::Ending(0) | RecvState::Off => Poll::Ready(Ok(0)),
            RecvState::Ended(errno) | RecvState::Ending(errno) => {
                Poll::Ready(Err(io::Error::from_raw_os_error(i32::from(errno))))
            }
            RecvState::Armed | RecvState::Stopping => Poll::Pending,
            state @ (RecvState::Idle | RecvState::Ready | RecvState::ReadyToEnd) => {
                // Idle: no receive in the kernel: it was paused (4 KiB held), ran out of
                // provided buffers, or was never armed. Whatever the socket holds is read
                // directly first, in this reader's turn, so a connection the ring could not
                // serve is served like one on glommio's path, in task order; a receive is
                // armed only when the socket is empty (fairness, module doc). Ready and
                // ReadyToEnd: a parked connection's poll completed, and it reads the same
                // way.
                if state == RecvState::ReadyToEnd {
                    conn.out.end_pending();
                }
                let direct = try_fill(
                    &conn.out,
                    &mut conn.rx.borrow_mut(),
                    &conn.local.rx_pool,
                    most,
                );
                match direct {
                    Ok(Some((n, emptied))) => {
                        if state == RecvState::Ready && emptied {
                            // The poll completes again when more comes: no read only to
                            // find the socket empty.
                            conn.ring.state.set(RecvState::Armed);
                        }
                        if n > 0 && !self.polls {
                            conn.local.metrics.ring_direct_read();
                        }
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                    Ok(None) => {}
                }
                if state != RecvState::Idle {
                    // Its multishot poll is still in the kernel.
                    conn.ring.state.set(RecvState::Armed);
                    return Poll::Pending;
                }
                let Some(fd) = conn.out.fd() else {
                    return Poll::Ready(Ok(0));
                };
                let mut ring = self.ring.borrow_mut();
                ring.arm(fd, conn.ring.key.get());
                match ring.submit() {
                    Ok(()) => {
                        if !self.polls {
                            conn.local.metrics.ring_armed();
                        }
                        conn.ring.state.set(RecvState::Armed);
                        Poll::Pending
                    }
                    Err(e) => {
                        conn.ring.state.set(RecvState::Ended(errno_of(&e)));
                        Poll::Ready(Err(e))
                    }
                }
            }
        }
    }

    /// Take `conn` off the ring: cancel its receive, wait for the last completion, free its
    /// slot. The bytes that came meanwhile are in its `rx`.
    pub async fn stop(&self, conn: &Conn) {
        let key = conn.ring.key.get();
        if key == 0 {
            return;
        }
        if matches!(
            conn.ring.state.get(),
            RecvState::Armed | RecvState::Ready | RecvState::ReadyToEnd
        ) {
            let mut ring = self.ring.borrow_mut();
            ring.cancel(key);
            if ring.submit().is_ok() {
                conn.ring.state.set(RecvState::Stopping);
            }
        }
        poll_fn(|cx: &mut Context<'_>| {
            let waiting = matches!(
                conn.ring.state.get(),
                RecvState::Armed | RecvState::Stopping | RecvState::Ending(_)
            );
            if waiting && self.ring.borrow().usable() {
                conn.reader_waker.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        conn.reader_waker.take();
        if self.ring.borrow().usable() {
            self.slots.borrow_mut().release(key);
        }
        // On a broken ring a receive may still be in the kernel: its slot stays taken.
        conn.ring.key.set(0);
        conn.ring.state.set(RecvState::Off);
    }

    /// Hand every completion so far to its connection.
    fn reap(&self, local: &Local) {
        let (pool, metrics) = (&local.rx_pool, &local.metrics);
        let mut slots = self.slots.borrow_mut();
        self.ring.borrow_mut().reap(|key, what, more| {
            let Some(slot) = slots.get(key) else {
                return true;
            };
            let Some(conn) = slot.conn.as_ref().and_then(Weak::upgrade) else {
                // The connection is gone without stopping (its task was dropped): end the
                // receive, and free the slot at its last completion.
                if !more {
                    slots.release(key);
                }
                return true;
            };
            let ring = &conn.ring;
            let mut stop = false;
            match what {
                // After the end of a TLS session nothing more is read (what still comes
                // before the cancellation lands is dropped, as a reader that stopped).
                Received::Data(_)
                    if matches!(ring.state.get(), RecvState::Ending(_) | RecvState::Ended(_)) => {}
                Received::Data(bytes) => {
                    let mut rx = conn.rx.borrow_mut();
                    // Plain bytes are appended; TLS records decrypted first.
                    let fed = rx.tls_received(bytes, pool, &conn.out);
                    conn.set_rx_held(rx.held());
                    ring.arrived
                        .set(ring.arrived.get().saturating_add(bytes.len() as u32));
                    match session_end(&fed) {
                        None => {
                            if more && rx.is_full() && ring.state.get() == RecvState::Armed {
                                ring.state.set(RecvState::Stopping);
                                stop = true;
                            }
                        }
                        // The reader sees the end once it has what came before; the
                        // receive is cancelled.
                        Some(errno) => {
                            // A pause's cancellation may be on its way already.
                            stop = more && ring.state.get() == RecvState::Armed;
                            ring.state.set(if more {
                                RecvState::Ending(errno)
                            } else {
                                RecvState::Ended(errno)
                            });
                        }
                    }
                }
                // An end after a TLS session's end changes nothing for the reader.
                Received::End | Received::Failed(_)
                    if matches!(ring.state.get(), RecvState::Ending(_)) => {}
                Received::End => ring.state.set(RecvState::Ended(0)),
                Received::Failed(e) => ring.state.set(RecvState::Ended(errno_of(&e))),
                Received::Stopped { no_buffers } => {
                    if no_buffers {
                        metrics.ring_out_of_buffers();
                    }
                }
                // The reader reads the socket directly in its turn; its poll stays armed.
                Received::Readable { end } => match (ring.state.get(), end) {
                    (RecvState::Armed | RecvState::Ready, true) => {
                        ring.state.set(RecvState::ReadyToEnd)
                    }
                    (RecvState::Armed, false) => ring.state.set(RecvState::Ready),
                    _ => {}
                },
            }
            if !more {
                match ring.state.get() {
                    RecvState::Armed
                    | RecvState::Ready
                    | RecvState::ReadyToEnd
                    | RecvState::Stopping => ring.state.set(RecvState::Idle),
                    RecvState::Ending(errno) => ring.state.set(RecvState::Ended(errno)),
                    _ => {}
                }
            }
            if let Some(w) = conn.reader_waker.take() {
                w.wake();
            }
            stop
        });
    }

    /// The reaper: reap whenever the kernel signals completions, until the shard stops
    /// (the task is cancelled then). If waiting fails, every connection on the ring ends.
    pub async fn run(self: Rc<Self>, local: Rc<Local>) {
        // glommio owns (and closes) its copy of the eventfd.
        // SAFETY: dup of an fd we own; the copy is handed to glommio alone.
        let fd = unsafe { libc::dup(self.ring.borrow().eventfd()) };
        if fd < 0 {
            self.fail_all(io::Error::last_os_error());
            return;
        }
        // SAFETY: `fd` is a fresh descriptor of ours.
        let signal = unsafe { glommio::io::BufferedFile::from_raw_fd(fd) };
        loop {
            self.reap(&local);
            if let Err(e) = signal.read_at(0, 8).await {
                let e = io::Error::from(e);
                tracing::error!(error = %e, fd = signal.as_raw_fd(), "waiting for the receive ring failed; its connections end");
                self.fail_all(e);
                return;
            }
        }
    }

    /// End every connection on the ring (it cannot be waited on any more); parked ones go
    /// back to glommio's reads instead.
    fn fail_all(&self, e: io::Error) {
        self.failed.set(true);
        let errno = errno_of(&e);
        for slot in &self.slots.borrow().slots {
            if let Some(conn) = slot.conn.as_ref().and_then(Weak::upgrade) {
                if self.polls {
                    conn.ring.key.set(0);
                    conn.ring.state.set(RecvState::Off);
                } else {
                    conn.ring.state.set(RecvState::Ended(errno));
                }
                if let Some(w) = conn.reader_waker.take() {
                    w.wake();
                }
            }
        }
    }
}
