//! The floor's servers: plain blocking TCP, one thread per connection, every thread pinned
//! to the server cores, their CPU time the floor's "server CPU". [`FloorServer::echo`]
//! echoes raw bytes and never parses them, so it costs exactly a read and a write per
//! batch: the kernel's price for the same bytes peerd moves. The fan-out floor
//! ([`crate::fanout_floor`]) runs on the same server with its own per-connection code.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use crate::sys;

/// What a floor server does with each accepted connection, on that connection's own
/// thread; it returns when it is done with the connection.
pub type Serve = Arc<dyn Fn(TcpStream) + Send + Sync>;

/// A running floor server inside this process.
#[derive(Debug)]
pub struct FloorServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tids: Arc<Mutex<Vec<i32>>>,
    live: Arc<Mutex<Live>>,
    accept: Option<JoinHandle<()>>,
}

/// The connections being served, so that dropping the server ends their threads too (a
/// thread blocked in a read or a write returns once its socket is shut down).
#[derive(Debug, Default)]
struct Live {
    next: u64,
    conns: HashMap<u64, TcpStream>,
}

impl FloorServer {
    /// The echo floor: listen on `127.0.0.1:0`; every thread it starts is pinned to
    /// `cores` (if any).
    pub fn echo(cores: Option<Vec<usize>>) -> Result<FloorServer> {
        FloorServer::start("floor-echo", cores, Arc::new(echo))
    }

    /// Listen on `127.0.0.1:0` and run `serve` on a thread of its own (named `name`) for
    /// every connection; every thread it starts is pinned to `cores` (if any).
    pub fn start(name: &str, cores: Option<Vec<usize>>, serve: Serve) -> Result<FloorServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a floor server")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let tids = Arc::new(Mutex::new(Vec::new()));
        let live = Arc::new(Mutex::new(Live::default()));
        let shared = Accept {
            stop: stop.clone(),
            tids: tids.clone(),
            live: live.clone(),
            cores,
            name: name.to_string(),
            serve,
        };
        let accept = std::thread::Builder::new()
            .name("floor-accept".into())
            .spawn(move || shared.run(listener))?;
        Ok(FloorServer {
            addr,
            stop,
            tids,
            live,
            accept: Some(accept),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// CPU seconds used so far by the server's threads (the floor's "server CPU").
    pub fn cpu_s(&self) -> f64 {
        self.tids
            .lock()
            .unwrap()
            .iter()
            .filter_map(|&t| sys::thread_cpu_s(t).ok())
            .sum()
    }
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        // Set before the sweep below: a connection accepted meanwhile sees it under the
        // `live` lock and is not served.
        self.stop.store(true, Ordering::SeqCst);
        for c in self.live.lock().unwrap().conns.values() {
            let _ = c.shutdown(Shutdown::Both);
        }
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// What the accept loop shares with the connection threads.
struct Accept {
    stop: Arc<AtomicBool>,
    tids: Arc<Mutex<Vec<i32>>>,
    live: Arc<Mutex<Live>>,
    cores: Option<Vec<usize>>,
    name: String,
    serve: Serve,
}

impl Accept {
    /// Pin the calling thread and count its CPU as the server's.
    fn enrol(&self) {
        if let Some(c) = &self.cores {
            let _ = sys::set_affinity(0, c);
        }
        self.tids.lock().unwrap().push(sys::gettid());
    }

    fn run(self, listener: TcpListener) {
        self.enrol();
        let me = Arc::new(self);
        for conn in listener.incoming() {
            let Ok(conn) = conn else {
                if me.stop.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            };
            let id = {
                let mut live = me.live.lock().unwrap();
                if me.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(handle) = conn.try_clone() else {
                    continue;
                };
                live.next += 1;
                let id = live.next;
                live.conns.insert(id, handle);
                id
            };
            let me2 = me.clone();
            // Connection threads end when the client closes or the server is dropped;
            // they are not joined.
            let spawned = std::thread::Builder::new()
                .name(me.name.clone())
                .spawn(move || {
                    me2.enrol();
                    (me2.serve)(conn);
                    me2.live.lock().unwrap().conns.remove(&id);
                });
            if spawned.is_err() {
                me.live.lock().unwrap().conns.remove(&id);
            }
        }
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
