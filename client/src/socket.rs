//! A connected stream socket (TCP or Unix), and [`ReadSome`]: one read of a layer of the
//! transport stack, which the layers above (TLS, WebSocket, peerd) are generic over.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A connected stream socket.
pub(crate) enum Socket {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Socket {
    pub(crate) fn try_clone(&self) -> io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            #[cfg(unix)]
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
        })
    }

    /// Shut both directions down: wakes a reader blocked on it, fails blocked writers.
    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
            #[cfg(unix)]
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    /// Applies to the socket, so to every handle of it.
    pub(crate) fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_read_timeout(d),
            #[cfg(unix)]
            Socket::Unix(s) => s.set_read_timeout(d),
        }
    }

    pub(crate) fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_write_timeout(d),
            #[cfg(unix)]
            Socket::Unix(s) => s.set_write_timeout(d),
        }
    }
}

impl Read for &Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            Socket::Tcp(s) => (&*s).read(buf),
            #[cfg(unix)]
            Socket::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            Socket::Tcp(s) => (&*s).write(buf),
            #[cfg(unix)]
            Socket::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What one read of the layer under a WebSocket (or under peerd) gave.
pub(crate) enum Got {
    /// This many bytes were put at the start of the buffer.
    Bytes(usize),
    /// Bytes arrived but none for the layer above (TLS handshake records).
    Nothing,
    /// The stream ended.
    Eof,
}

/// One read of a layer of the transport: blocks at most once (up to the socket's read
/// timeout), so the caller keeps control of its deadline.
pub(crate) trait ReadSome {
    fn read_some(&mut self, dst: &mut [u8]) -> io::Result<Got>;
}

impl ReadSome for Socket {
    fn read_some(&mut self, dst: &mut [u8]) -> io::Result<Got> {
        match (&*self).read(dst)? {
            0 => Ok(Got::Eof),
            n => Ok(Got::Bytes(n)),
        }
    }
}
