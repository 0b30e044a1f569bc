//! An accept thread, for the listeners the shards do not accept on themselves: Unix sockets
//! (no SO_REUSEPORT load balancing), and every listener of a server that may hand its
//! sockets to a successor (`ListenOptions::handover`).
//!
//! It waits with poll(2) and accepts with non-blocking accept4(2), dealing connections
//! round-robin to the shards (`ShardMsg::Adopt`), or to the successor once one took over
//! (`Shared::forward`). Stopping it is race-free, which is why a handover server uses it:
//! after the stop flag is set no accept(2) is ever called, so every connection not yet
//! accepted stays in the socket's queue for whoever else listens on it. (An io_uring accept,
//! glommio's, cannot be withdrawn like that: one that completes while it is being cancelled
//! takes a connection that no one then serves.)
//!
//! Out of descriptors, it closes the waiting connection at once (with a descriptor kept in
//! reserve for that), like the shards' own accept loops, but without their Reject{overloaded}:
//! the thread has no shard's encoder to write one. The client sees the connection end.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::msg::{ShardMsg, Transport};
use crate::shared::Shared;
use crate::stream;

/// A running accept thread.
pub(crate) struct Acceptor {
    stopping: Arc<AtomicBool>,
    /// Written to wake the thread's poll(2) when it must stop.
    wake: Arc<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    /// Accept on `listeners` (each with what its connections speak) until stopped.
    pub fn spawn(
        listeners: Vec<(OwnedFd, Transport)>,
        shared: Arc<Shared>,
    ) -> std::io::Result<Acceptor> {
        // SAFETY: eventfd returns a new descriptor (or -1), which we own.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wake < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(wake) });
        let stopping = Arc::new(AtomicBool::new(false));
        for (fd, _) in &listeners {
            // accept4 must not block when another process took the connection first.
            // SAFETY: fcntl on a descriptor we hold.
            unsafe {
                let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
        let (stop, w) = (stopping.clone(), wake.clone());
        let thread = std::thread::Builder::new()
            .name("peerd-accept".into())
            .spawn(move || run(&listeners, &shared, &stop, w.as_raw_fd()))?;
        Ok(Acceptor {
            stopping,
            wake,
            thread: Some(thread),
        })
    }

    /// Stop accepting: the thread checks the flag before each accept(2), so none starts
    /// once it has seen it. Idempotent.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our eventfd.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            );
        }
    }

    /// Stop and wait for the thread to end; its listeners are closed then (unless shared
    /// with a successor, which keeps them open).
    pub fn join(mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(listeners: &[(OwnedFd, Transport)], shared: &Shared, stop: &AtomicBool, wake: RawFd) {
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|(fd, _)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    fds.push(libc::pollfd {
        fd: wake,
        events: libc::POLLIN,
        revents: 0,
    });
    let mut next = 0usize;
    // A descriptor held in reserve, as the shards' accept loops hold one: out of
    // descriptors (EMFILE), it is given up to take the waiting connection and close it at
    // once, so that the client is told instead of left in the backlog.
    let mut spare = stream::open_spare();
    while !stop.load(Ordering::Acquire) {
        // SAFETY: `fds` is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue; // EINTR
        }
        for (i, (listener, transport)) in listeners.iter().enumerate() {
            if fds[i].revents == 0 {
                continue;
            }
            // Take what is queued, but look at the stop flag before every accept.
            while !stop.load(Ordering::Acquire) {
                match accept(listener.as_raw_fd()) {
                    Ok(Some(conn)) => {
                        if let Some(forward) = shared.forward.get() {
                            forward(conn);
                        } else {
                            shared.send(next, ShardMsg::Adopt(conn, transport.clone()));
                            next = (next + 1) % shared.shards();
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        shared.accept_failed();
                        tracing::warn!(error = %e, "accept failed; retrying in 10 ms");
                        let out_of_fds =
                            matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                        if out_of_fds && spare.take().is_some() {
                            if let Ok(Some(conn)) = accept(listener.as_raw_fd()) {
                                shared.count_dropped();
                                drop(conn);
                            }
                            spare = stream::open_spare();
                        }
                        std::thread::sleep(Duration::from_millis(10));
                        break;
                    }
                }
            }
        }
    }
}

/// One non-blocking accept: `None` when nothing is queued.
fn accept(fd: RawFd) -> std::io::Result<Option<OwnedFd>> {
    loop {
        // SAFETY: accept4 on a listening socket we hold; we do not want the peer address.
        let c = unsafe {
            libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if c >= 0 {
            // SAFETY: a new descriptor, ours.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(c) }));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(None),
            // The connection was reset while queued, or a signal: try the next one.
            Some(libc::ECONNABORTED | libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}
