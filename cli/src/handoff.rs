//! Zero-downtime restarts: a running `peerd serve` hands its listening sockets to a new one
//! over a Unix socket (`lifecycle.handoff_socket`), the way HAProxy (`-x`) and Envoy's hot
//! restart do, then drains its peers towards it (README "Restarts without losses").
//!
//! The exchange, on a stream socket, fds passed with SCM_RIGHTS:
//!
//! ```text
//! new -> old   "peerd-takeover 1\n"
//! old -> new   "<addr>\n" per listening socket, with the sockets themselves
//! new -> old   "ready\n"          (the new server accepts on them now)
//! old -> new   "c" + a socket, for every connection the old one still accepts (until
//!              it exits: its accept thread stops race-free only with the process)
//! ```
//!
//! After "ready" the old process drains (as on SIGTERM) and exits; the new one puts its
//! own handoff socket in place of the old one's (a rename: the path always leads to a live
//! process), ready for the next restart.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use peerd_server::{sockfile, InheritedListener, PeerServer};

const HELLO: &[u8] = b"peerd-takeover 1\n";
const READY: &[u8] = b"ready\n";

/// Why a takeover or a handoff socket failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("handoff socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "handoff socket {path}: another peerd serves it (start with --takeover to take its place)"
    )]
    InUse { path: PathBuf },
    #[error("handoff socket {path}: {reason}")]
    Protocol { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> HandoffError + '_ {
    move |source| HandoffError::Io {
        path: path.into(),
        source,
    }
}

/// The new process's side: connect to the running server, receive its sockets.
pub struct Predecessor {
    path: PathBuf,
    stream: UnixStream,
}

impl Predecessor {
    /// Ask the process serving `path` for its listening sockets.
    pub fn connect(path: &Path) -> Result<(Predecessor, Vec<InheritedListener>), HandoffError> {
        let mut stream = UnixStream::connect(path).map_err(io(path))?;
        stream.write_all(HELLO).map_err(io(path))?;
        let (text, fds) = recv_with_fds(stream.as_raw_fd(), 64 << 10, 253).map_err(io(path))?;
        let text = String::from_utf8_lossy(&text);
        let addrs: Vec<&str> = text.lines().collect();
        if addrs.len() != fds.len() || fds.is_empty() {
            return Err(HandoffError::Protocol {
                path: path.into(),
                reason: format!(
                    "expected one address per socket, got {} addresses and {} sockets",
                    addrs.len(),
                    fds.len()
                ),
            });
        }
        let mut listeners = Vec::with_capacity(fds.len());
        for (a, fd) in addrs.iter().zip(fds) {
            let addr: SocketAddr = a.parse().map_err(|e| HandoffError::Protocol {
                path: path.into(),
                reason: format!("bad address {a:?}: {e}"),
            })?;
            listeners.push(InheritedListener { addr, fd });
        }
        Ok((
            Predecessor {
                path: path.into(),
                stream,
            },
            listeners,
        ))
    }

    /// Tell the predecessor we accept now (it starts draining), and serve what it still
    /// accepts until it exits.
    pub fn ready(mut self, server: Arc<PeerServer>) -> Result<(), HandoffError> {
        self.stream.write_all(READY).map_err(io(&self.path))?;
        std::thread::Builder::new()
            .name("peerd-handoff-in".into())
            .spawn(move || {
                let fd = self.stream.as_raw_fd();
                while let Ok((data, fds)) = recv_with_fds(fd, 64, 16) {
                    if data.is_empty() && fds.is_empty() {
                        break; // the predecessor exited
                    }
                    for conn in fds {
                        if let Err(e) = server.adopt(conn) {
                            tracing::warn!(error = %e, "a connection handed over could not be served");
                        }
                    }
                }
                tracing::info!("predecessor gone");
            })
            .map_err(io(&self.path))?;
        Ok(())
    }
}

/// The running process's side: wait for a successor on the handoff socket.
pub struct HandoffListener {
    path: PathBuf,
    listener: UnixListener,
}

impl HandoffListener {
    /// Bind the handoff socket. A live one at `path` is another server's: refused unless
    /// `take_over` (we are its successor; ours replaces it atomically).
    pub fn bind(path: &Path, take_over: bool) -> Result<HandoffListener, HandoffError> {
        let live = UnixStream::connect(path).is_ok();
        if live && !take_over {
            return Err(HandoffError::InUse { path: path.into() });
        }
        // Whoever connects gets our listening sockets: the owner only.
        let listener = sockfile::bind_over(path, Some(0o600)).map_err(io(path))?;
        Ok(HandoffListener {
            path: path.into(),
            listener,
        })
    }

    /// Serve one successor on a thread: hand it `server`'s sockets, and once it is ready
    /// forward every connection still accepted here, then send `()` on `handed_over` (the
    /// main thread drains then). Attempts that fail (a stray connection, a successor that
    /// dies before it is ready) are logged and the next one is waited for.
    ///
    /// The returned guard removes the socket file when dropped, unless a successor has
    /// put its own in its place.
    pub fn spawn(self, server: Arc<PeerServer>, handed_over: mpsc::Sender<()>) -> SocketFile {
        let file = SocketFile {
            id: sockfile::file_id(&self.path),
            path: self.path.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("peerd-handoff".into())
            .spawn(move || {
                for conn in self.listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    match hand_over(&server, conn) {
                        Ok(()) => {
                            let _ = handed_over.send(());
                            return;
                        }
                        Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "takeover failed"),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the handoff thread");
        }
        file
    }
}

/// Our handoff socket file, removed when dropped if it is still ours.
pub struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            sockfile::remove_if_ours(&self.path, id);
        }
    }
}

fn hand_over(server: &PeerServer, mut conn: UnixStream) -> std::io::Result<()> {
    let mut hello = [0u8; HELLO.len()];
    conn.read_exact(&mut hello)?;
    if hello != HELLO {
        return Err(std::io::Error::other("not a peerd takeover request"));
    }
    let listeners = server.listener_fds()?;
    let text: String = listeners.iter().map(|l| format!("{}\n", l.addr)).collect();
    let fds: Vec<RawFd> = listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
    send_with_fds(conn.as_raw_fd(), text.as_bytes(), &fds)?;
    drop(listeners);
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    if line.as_bytes() != READY {
        return Err(std::io::Error::other(format!(
            "the successor did not start ({line:?})"
        )));
    }
    tracing::info!("successor ready: forwarding new connections to it, then draining");
    let conn = Mutex::new(conn);
    server.forward_accepted(move |fd| {
        let c = conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = send_with_fds(c.as_raw_fd(), b"c", &[fd.as_raw_fd()]) {
            tracing::warn!(error = %e, "could not hand a connection to the successor");
        }
    });
    Ok(())
}

fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let iov = [IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::empty(), None).map_err(std::io::Error::from)?;
    Ok(())
}

/// One message and the descriptors that came with it (empty and none: end of stream).
fn recv_with_fds(
    sock: RawFd,
    max_data: usize,
    max_fds: usize,
) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut data = vec![0u8; max_data];
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut data)];
        let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(std::io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs() {
            if let ControlMessageOwned::ScmRights(r) = c {
                // SAFETY: descriptors the kernel just installed in this process for us.
                fds.extend(r.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        (msg.bytes, fds)
    };
    if fds.len() > max_fds {
        return Err(std::io::Error::other("too many descriptors in one message"));
    }
    data.truncate(n);
    Ok((data, fds))
}
