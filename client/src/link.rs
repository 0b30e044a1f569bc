//! The write side of one connection, shared by every thread that sends.
//!
//! Writers serialize on a mutex around the transport's write half: each frame is encoded
//! into the writer's reused buffer (behind room for a WebSocket header, where one is
//! needed) and written with one `write_all`, so frames never interleave and a small frame
//! costs one syscall. A second handle on the socket lets anyone shut it down without
//! taking that lock (a writer blocked on a full socket would otherwise hold it), which also
//! wakes the reader.
//!
//! A drain (PROTOCOL.md §6.10) half-closes the link at the peerd level: the client's
//! Close{reconnect} is written, and from then on only answers (RpcResponse, RpcError,
//! Pong) may follow it; every other frame is refused unwritten ([`SendFailure::Unusable`])
//! and its sender queues it for the next connection instead. The socket stays open both
//! ways (no FIN, no WebSocket Close) so the server's answers and its own Close arrive.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use bytes::{BufMut, BytesMut};
use peerd_codec::{encode, Close, Encode, EncodeError};

use crate::error::SendFailure;
use crate::pending::Outbound;
use crate::socket::Socket;
use crate::transport::WireWriter;

/// A write buffer bigger than this is not kept after its frame went out: one huge frame
/// should not pin its buffer for the life of the connection.
const KEEP_BUF: usize = 256 * 1024;

/// Why a frame was not written.
#[derive(Debug)]
pub(crate) enum WriteError {
    Encode(EncodeError),
    Io(io::Error),
    /// The link is half-closed (a drain): only answers may be written.
    HalfClosed,
}

/// The write side of one connection.
pub(crate) struct Link {
    writer: Mutex<Writer>,
    /// A second handle on the socket, to shut it down without taking the writer lock.
    sock: Socket,
    alive: AtomicBool,
    /// Our Close{reconnect} is written: only answers may follow. Set and checked under the
    /// writer lock, so no frame can slip in behind the Close.
    half_closed: AtomicBool,
    /// The largest body this side may send: the Hello's cap during the handshake, then the
    /// server's limit from Welcome. Bigger messages fail locally with `Encode(TooLarge)`
    /// instead of getting the connection closed.
    max_send: AtomicU32,
}

struct Writer {
    wire: WireWriter,
    buf: BytesMut,
}

impl Link {
    /// The write side `wire` of the connection on `sock`, sending frames of at most
    /// `max_send` body bytes.
    pub(crate) fn new(wire: WireWriter, sock: Socket, max_send: u32) -> Link {
        Link {
            writer: Mutex::new(Writer {
                wire,
                buf: BytesMut::with_capacity(4096),
            }),
            sock,
            alive: AtomicBool::new(true),
            half_closed: AtomicBool::new(false),
            max_send: AtomicU32::new(max_send),
        }
    }

    /// The server's limit, once Welcome announced it.
    pub(crate) fn set_max_send(&self, n: u32) {
        self.max_send.store(n, Ordering::Relaxed);
    }

    /// The largest body this link may send.
    pub(crate) fn max_send(&self) -> u32 {
        self.max_send.load(Ordering::Relaxed)
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Alive and not half-closed: a new request may be written on it.
    pub(crate) fn is_usable(&self) -> bool {
        self.is_alive() && !self.half_closed.load(Ordering::SeqCst)
    }

    /// Mark dead and shut the socket down, which wakes the reader (and any blocked writer).
    pub(crate) fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
        self.sock.shutdown();
    }

    /// Encode and write one frame (the Hello); an IO error is returned, not acted on.
    pub(crate) fn write<M: Encode>(&self, msg: &M) -> Result<(), WriteError> {
        self.write_with(
            |buf, max| encode(msg, buf, max).map_err(WriteError::Encode),
            false,
        )
    }

    /// Write one frame: `fill` appends it (header and body) to the buffer, whose front
    /// holds room for the transport's header. `reply`: an answer, which may follow our
    /// half-close; anything else is refused after it.
    fn write_with(
        &self,
        fill: impl FnOnce(&mut BytesMut, u32) -> Result<(), WriteError>,
        reply: bool,
    ) -> Result<(), WriteError> {
        let mut guard = self.writer.lock().unwrap();
        if !reply && self.half_closed.load(Ordering::SeqCst) {
            return Err(WriteError::HalfClosed);
        }
        let w = &mut *guard;
        w.buf.clear();
        let headroom = w.wire.headroom();
        w.buf.put_bytes(0, headroom);
        fill(&mut w.buf, self.max_send.load(Ordering::Relaxed))?;
        let r = w.wire.write_frame(&mut w.buf);
        if w.buf.capacity() > KEEP_BUF {
            w.buf = BytesMut::new();
        }
        r.map_err(WriteError::Io)
    }

    /// Encode and write one frame; a failed write kills the connection.
    pub(crate) fn send<M>(&self, msg: &M) -> Result<(), SendFailure>
    where
        M: Encode,
    {
        self.send_with(
            |buf, max| encode(msg, buf, max).map_err(WriteError::Encode),
            false,
        )
    }

    /// Write an answer (RpcResponse, RpcError, Pong): allowed after our half-close too, since
    /// the server waits for the answers to its calls before ending a drain.
    pub(crate) fn send_reply<M>(&self, msg: &M) -> Result<(), SendFailure>
    where
        M: Encode,
    {
        self.send_with(
            |buf, max| encode(msg, buf, max).map_err(WriteError::Encode),
            true,
        )
    }

    /// Write a frame encoded earlier (by the reconnect queue), as it is. Its body must fit
    /// [`max_send`](Self::max_send); the caller checks.
    pub(crate) fn send_encoded(&self, frame: &[u8]) -> Result<(), SendFailure> {
        self.send_with(
            |buf, _| {
                buf.extend_from_slice(frame);
                Ok(())
            },
            false,
        )
    }

    fn send_with(
        &self,
        fill: impl FnOnce(&mut BytesMut, u32) -> Result<(), WriteError>,
        reply: bool,
    ) -> Result<(), SendFailure> {
        if !self.is_alive() {
            return Err(SendFailure::Unusable);
        }
        match self.write_with(fill, reply) {
            Ok(()) => Ok(()),
            Err(WriteError::Encode(e)) => Err(SendFailure::Encode(e)),
            Err(WriteError::HalfClosed) => Err(SendFailure::Unusable),
            Err(WriteError::Io(e)) => {
                // A partial write leaves the stream mid-frame: the connection is unusable.
                tracing::debug!(error = %e, "peerd-client write failed");
                self.kill();
                Err(SendFailure::ConnectionLost)
            }
        }
    }

    /// The drain's half-close (PROTOCOL.md §6.10): write Close{code, reason} and refuse
    /// every later frame but answers, keeping the socket open both ways. True the first
    /// time.
    pub(crate) fn half_close(&self, code: u16, reason: &str) -> bool {
        let close = Close {
            code,
            reason: reason.into(),
        };
        let r = {
            let mut guard = self.writer.lock().unwrap();
            if self.half_closed.swap(true, Ordering::SeqCst) {
                return false;
            }
            let w = &mut *guard;
            w.buf.clear();
            let headroom = w.wire.headroom();
            w.buf.put_bytes(0, headroom);
            match encode(&close, &mut w.buf, self.max_send.load(Ordering::Relaxed)) {
                Ok(()) => w.wire.write_frame(&mut w.buf),
                // A reason too long for the server's limit: a bare Close says the same.
                Err(_) => Ok(()),
            }
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "peerd-client half-close write failed");
            self.kill();
        }
        true
    }

    /// Write bytes below the peerd framing (the WebSocket upgrade request).
    pub(crate) fn write_raw(&self, data: &[u8]) -> io::Result<()> {
        self.writer.lock().unwrap().wire.write_raw(data)
    }

    /// Answer a WebSocket Ping; a failed write kills the connection.
    pub(crate) fn send_pong(&self, payload: &[u8]) {
        let r = self.writer.lock().unwrap().wire.write_pong(payload);
        if let Err(e) = r {
            tracing::debug!(error = %e, "peerd-client pong write failed");
            self.kill();
        }
    }

    /// Send Close{code, reason}, then end the transport's own session (a WebSocket Close
    /// whose status stands for `code`, TLS close_notify), best effort. The caller kills
    /// the link next.
    pub(crate) fn send_close(&self, code: u16, reason: &str) {
        let _ = self.send(&Close {
            code,
            reason: reason.into(),
        });
        if self.is_alive() {
            let status = peerd_ws::close::status_for(code);
            self.writer.lock().unwrap().wire.close(Some(status), reason);
        }
    }

    /// End the transport's own session after the server ended the peerd one: echo its
    /// WebSocket Close `status` (as RFC 6455 wants), TLS close_notify. Best effort.
    pub(crate) fn close_transport(&self, status: Option<u16>) {
        if self.is_alive() {
            self.writer.lock().unwrap().wire.close(status, "");
        }
    }
}

impl Outbound for Link {
    fn is_usable(&self) -> bool {
        Link::is_usable(self)
    }

    fn send<M: Encode>(&self, msg: &M) -> Result<(), SendFailure> {
        Link::send(self, msg)
    }
}
