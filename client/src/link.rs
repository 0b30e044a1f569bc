//! The write side of one connection, shared by every thread that sends.
//!
//! Writers serialize on a mutex around the socket: each frame is encoded into the writer's
//! reused buffer and written with one `write_all`, so frames never interleave and a small
//! frame costs one syscall. A second handle on the socket lets anyone shut it down without
//! taking that lock (a writer blocked on a full socket would otherwise hold it), which also
//! wakes the reader.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::BytesMut;
use peerd_codec::{encode, Encode};

use crate::error::SendFailure;
use crate::pending::Outbound;

/// A write buffer bigger than this is not kept after its frame went out: one huge frame
/// should not pin its buffer for the life of the connection.
const KEEP_BUF: usize = 256 * 1024;

/// The write side of one connection.
pub(crate) struct Link {
    writer: Mutex<Writer>,
    /// A second handle on the socket, to shut it down without taking the writer lock.
    sock: TcpStream,
    alive: AtomicBool,
    /// The server's body limit from Welcome: bigger messages fail locally with
    /// `Encode(TooLarge)` instead of getting the connection closed.
    max_send: u32,
}

struct Writer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Link {
    /// The write side of `stream` (which the caller keeps for reading), sending frames of
    /// at most `max_send` body bytes.
    pub(crate) fn new(stream: &TcpStream, max_send: u32) -> io::Result<Link> {
        Ok(Link {
            writer: Mutex::new(Writer {
                stream: stream.try_clone()?,
                buf: BytesMut::with_capacity(4096),
            }),
            sock: stream.try_clone()?,
            alive: AtomicBool::new(true),
            max_send,
        })
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Mark dead and shut the socket down, which wakes the reader (and any blocked writer).
    pub(crate) fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    /// Encode and write one frame.
    pub(crate) fn send<M>(&self, msg: &M) -> Result<(), SendFailure>
    where
        M: Encode,
    {
        if !self.is_alive() {
            return Err(SendFailure::ConnectionLost);
        }
        let mut guard = self.writer.lock().unwrap();
        let w = &mut *guard;
        w.buf.clear();
        encode(msg, &mut w.buf, self.max_send).map_err(SendFailure::Encode)?;
        if let Err(e) = w.stream.write_all(&w.buf) {
            drop(guard);
            // A partial write leaves the stream mid-frame: the connection is unusable.
            tracing::debug!(error = %e, "peerd-client write failed");
            self.kill();
            return Err(SendFailure::ConnectionLost);
        }
        if w.buf.capacity() > KEEP_BUF {
            w.buf = BytesMut::new();
        }
        Ok(())
    }
}

impl Outbound for Link {
    fn is_alive(&self) -> bool {
        Link::is_alive(self)
    }

    fn send<M: Encode>(&self, msg: &M) -> Result<(), SendFailure> {
        Link::send(self, msg)
    }
}
