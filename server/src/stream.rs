//! The socket under a connection: TCP or Unix, as a glommio stream, or bare (a connection
//! whose receives go through the shard's ring keeps no glommio stream, [`Stream::bare`]).
//!
//! Reads through glommio (`poll_read`) first try the syscall directly and only when it
//! would block arm an io_uring poll for readiness; the buffer is used only inside the
//! synchronous `poll_read` call, never lent to the kernel while waiting. That is what lets
//! an idle connection own no receive buffer (see `inbound::RxBuf`).
//!
//! Writes bypass glommio for the common case: `sendmsg(MSG_DONTWAIT)` with up to 64
//! iovecs straight from the outbound queue (vectored, no copy into a staging buffer). Only
//! when the socket buffer is full do we fall back to glommio's `poll_write` to wait.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{TcpStream, UnixStream};

/// A connection's socket. glommio's streams are not boxed, though a bare one carries their
/// 120 B for nothing: boxed, a connection that keeps its glommio stream cost 260 B more
/// server RSS (1,537 against 1,799 B per idle connection, `peerd-loadgen idle`, from how
/// glibc reuses the handshake's freed memory), against 100 B less for a bare one.
pub(crate) enum Stream {
    Tcp(TcpStream),
    /// glommio's UnixStream does not expose its fd, so we keep it beside the stream.
    Unix(UnixStream, RawFd),
    /// The socket without a glommio stream ([`Stream::bare`]).
    Bare(OwnedFd, Family),
}

/// What a bare socket becomes again when it needs a glommio stream.
#[derive(Clone, Copy)]
pub(crate) enum Family {
    Tcp,
    Unix,
}

impl Stream {
    pub fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(_, fd) => *fd,
            Stream::Bare(fd, _) => fd.as_raw_fd(),
        }
    }

    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.glommio() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s, _) => Pin::new(s).poll_read(cx, buf),
            Stream::Bare(..) => unreachable!("glommio() made the stream"),
        }
    }

    /// This socket without its glommio stream, on a duplicate fd (same connection, another
    /// fd number); dropping `self` then closes the old fd and cancels what glommio armed.
    /// glommio arms a readiness poll for every stream it makes, at once, and again after
    /// every read that did not fill its buffer, and keeps it (about 270 B on the heap,
    /// docs/ARCHITECTURE.md) until the stream is read again, which a connection whose
    /// receives (or, parked, its polls) go through the shard's ring never does
    /// (`receiver`). A bare socket becomes a glommio stream again, on the
    /// same fd, the first time something waits through glommio (the close linger, a drain
    /// waiting for room).
    pub fn bare(&self) -> io::Result<Stream> {
        // SAFETY: F_DUPFD_CLOEXEC on an fd we own; the duplicate is owned by the result.
        let fd = unsafe { libc::fcntl(self.fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor of the same connected socket.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(match self {
            Stream::Tcp(_) => Stream::Bare(fd, Family::Tcp),
            Stream::Unix(..) => Stream::Bare(fd, Family::Unix),
            Stream::Bare(_, family) => Stream::Bare(fd, *family),
        })
    }

    /// The glommio stream, made now on the same fd if the socket is bare.
    fn glommio(&mut self) -> &mut Stream {
        if let Stream::Bare(fd, family) = self {
            let raw = fd.as_raw_fd();
            // SAFETY: `raw` is a connected socket; the glommio stream takes it over, and the
            // bare value that owned it is forgotten below, so it is closed once.
            let stream = match family {
                Family::Tcp => Stream::Tcp(unsafe { TcpStream::from_raw_fd(raw) }),
                Family::Unix => Stream::Unix(unsafe { UnixStream::from_raw_fd(raw) }, raw),
            };
            // Holds nothing but the fd (no heap): forgetting it only hands the fd over.
            std::mem::forget(std::mem::replace(self, stream));
        }
        self
    }

    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.glommio() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s, _) => Pin::new(s).poll_write(cx, buf),
            Stream::Bare(..) => unreachable!("glommio() made the stream"),
        }
    }
}

/// Non-blocking vectored send. `Ok(None)` = would block.
pub(crate) fn send_vectored(fd: RawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<Option<usize>> {
    if bufs.is_empty() {
        return Ok(Some(0));
    }
    // SAFETY: msghdr is plain data; we point it at `bufs`, which outlives the call, and
    // IoSlice is ABI-compatible with iovec.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    loop {
        // MSG_NOSIGNAL: a peer that closed must give EPIPE, not kill the process.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        match usize::try_from(n).map_err(|_| io::Error::last_os_error()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return nonblocking(r),
        }
    }
}

/// A non-blocking call's result as every path reports it (`sendmsg` here, a SENDMSG
/// completion in `uring`, a direct `recv` in `Outbound::try_read`): the bytes moved, `None`
/// when it would have blocked (the socket full, or nothing to read), or the error.
pub(crate) fn nonblocking(r: io::Result<usize>) -> io::Result<Option<usize>> {
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Non-blocking recv. `WouldBlock` when there is nothing to read.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: recv into a buffer we own, of the length we pass.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Shut both directions. Wakes a read pending on the socket (it sees end-of-stream), and
/// sends FIN after whatever the kernel already holds.
pub(crate) fn shutdown(fd: RawFd) {
    // SAFETY: shutdown on an fd we own; errors (already shut, not connected) are harmless.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Shut the write side: FIN after whatever the kernel already holds.
pub(crate) fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown on an fd we own; errors (already shut, reset) are harmless.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// Make the coming close(2) send a reset (SO_LINGER with a zero timeout) instead of a FIN.
pub(crate) fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an fd we own, with a properly sized linger struct.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Adopt an accepted Unix-socket fd into this shard's executor.
pub(crate) fn unix_from_fd(fd: std::os::fd::OwnedFd) -> Stream {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` is a connected Unix stream socket whose ownership we just took.
    Stream::Unix(unsafe { UnixStream::from_raw_fd(raw) }, raw)
}

/// Whether `fd` is a Unix-domain socket (an adopted connection may be either kind).
pub(crate) fn is_unix(fd: &std::os::fd::OwnedFd) -> bool {
    // SAFETY: sockaddr_storage is plain data; getsockname fills at most `len` bytes of it.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            &mut addr as *mut _ as *mut libc::sockaddr,
            &mut len,
        )
    };
    r == 0 && i32::from(addr.ss_family) == libc::AF_UNIX
}

/// A descriptor held in reserve by an accept loop: out of descriptors (EMFILE), it is given
/// up for one accept, so that the waiting connection is answered instead of left silent in
/// the backlog, then taken again.
pub(crate) fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}
