//! The floor's server: a plain blocking TCP echo, one thread per connection, pinned to the
//! server cores. It echoes raw bytes and never parses them, so it costs exactly a read and a
//! write per batch: the kernel's price for the same bytes peerd moves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use crate::sys;

/// A running echo server inside this process.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tids: Arc<Mutex<Vec<i32>>>,
    accept: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listen on `127.0.0.1:0`; every thread it starts is pinned to `cores` (if any).
    pub fn start(cores: Option<Vec<usize>>) -> Result<EchoServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the floor echo server")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let tids = Arc::new(Mutex::new(Vec::new()));
        let (s2, t2) = (stop.clone(), tids.clone());
        let accept = std::thread::Builder::new()
            .name("floor-accept".into())
            .spawn(move || accept_loop(listener, s2, t2, cores))?;
        Ok(EchoServer {
            addr,
            stop,
            tids,
            accept: Some(accept),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// CPU seconds used so far by the echo threads (the floor's "server CPU").
    pub fn cpu_s(&self) -> f64 {
        self.tids
            .lock()
            .unwrap()
            .iter()
            .filter_map(|&t| sys::thread_cpu_s(t).ok())
            .sum()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    tids: Arc<Mutex<Vec<i32>>>,
    cores: Option<Vec<usize>>,
) {
    if let Some(c) = &cores {
        let _ = sys::set_affinity(0, c);
    }
    tids.lock().unwrap().push(sys::gettid());
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let (tids, cores) = (tids.clone(), cores.clone());
        // Connection threads end when the client closes; they are not joined.
        let _ = std::thread::Builder::new()
            .name("floor-echo".into())
            .spawn(move || {
                if let Some(c) = &cores {
                    let _ = sys::set_affinity(0, c);
                }
                tids.lock().unwrap().push(sys::gettid());
                echo(conn);
            });
    }
}

fn echo(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
