//! One shard: a glommio `LocalExecutor` pinned to a core, owning its slice of the
//! connection map.
//!
//! Everything here is `Rc`/`RefCell`: a shard's state is touched only by its own thread.
//! Other threads reach a shard only through its flume inbox ([`ShardMsg`]), drained in
//! batches; after each batch (and after each read batch of a connection) the shard flushes
//! every connection that got frames, so frames queued together leave in one `sendmsg`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::future::poll_fn;
use glommio::net::TcpListener;
use peerd_codec::{self as codec, Code, EncodeError};

use crate::conn::{self, Conn, RX_BUF};
use crate::options::{Limits, SharedHandler};
use crate::server::Shared;
use crate::stream::Stream;

/// A closure run on a shard on behalf of another thread.
pub(crate) type ShardTask = Box<dyn FnOnce(&Rc<Shard>) + Send>;

/// A message to a shard from another thread.
pub(crate) enum ShardMsg {
    /// Queue `frame` to every local peer except session `exclude` (0 = none).
    Broadcast { frame: Bytes, exclude: u64 },
    /// Queue `frame` to the peer with this session, if it is still here.
    Deliver { session: u64, frame: Bytes },
    /// Close the peer with this session.
    Kick {
        session: u64,
        code: Code,
        reason: &'static str,
    },
    /// A Unix-socket connection accepted by the acceptor thread, to be served here.
    Adopt(OwnedFd),
    /// Run a closure on this shard (topic fan-out, queries, cross-shard RPC relays).
    Exec(ShardTask),
    /// Stop accepting, let in-flight handlers finish for up to `drain`, close every peer
    /// with Shutdown, and stop.
    Shutdown { drain: Duration },
}

/// What a shard accepts connections from.
pub(crate) enum ListenerSource {
    /// This shard's own SO_REUSEPORT TCP socket.
    Tcp(OwnedFd),
    /// A Unix-socket server: connections arrive by `Adopt` from the acceptor thread.
    None,
}

pub(crate) struct Shard {
    pub index: usize,
    pub shared: Arc<Shared>,
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    rx_pool: RefCell<Vec<Vec<u8>>>,
    enc: RefCell<BytesMut>,
    dirty: RefCell<Vec<Rc<Conn>>>,
    handlers: HashMap<String, SharedHandler>,
    live_tasks: Cell<usize>,
    live_waker: RefCell<Option<Waker>>,
    stopping: Cell<bool>,
    pub(crate) topics: RefCell<crate::topics::ShardTopics>,
}

/// Most receive buffers a shard keeps for reuse (32 KiB each).
const RX_POOL_MAX: usize = 256;

impl Shard {
    pub fn new(index: usize, shared: Arc<Shared>) -> Shard {
        let handlers = shared.opts.handlers.iter().cloned().collect();
        Shard {
            index,
            shared,
            conns: RefCell::new(HashMap::new()),
            rx_pool: RefCell::new(Vec::new()),
            enc: RefCell::new(BytesMut::with_capacity(64 * 1024)),
            dirty: RefCell::new(Vec::new()),
            handlers,
            live_tasks: Cell::new(0),
            live_waker: RefCell::new(None),
            stopping: Cell::new(false),
            topics: RefCell::new(Default::default()),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.opts.limits
    }

    pub fn handler(&self, method: &str) -> Option<SharedHandler> {
        self.handlers.get(method).cloned()
    }

    pub fn take_rx_buf(&self) -> Vec<u8> {
        self.rx_pool
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; RX_BUF])
    }

    pub fn put_rx_buf(&self, buf: Vec<u8>) {
        let mut pool = self.rx_pool.borrow_mut();
        if buf.len() == RX_BUF && pool.len() < RX_POOL_MAX {
            pool.push(buf);
        }
    }

    /// Encode a message once into the shard's encode arena and return it as a shareable
    /// frame. Frames are carved out of 64 KiB chunks, so small frames cost no allocation.
    pub fn encode<M>(&self, msg: &M) -> Result<Bytes, EncodeError>
    where
        M: codec::Encode,
    {
        let mut enc = self.enc.borrow_mut();
        if enc.capacity() - enc.len() < 1024 {
            *enc = BytesMut::with_capacity(64 * 1024);
        }
        codec::encode(msg, &mut enc, u32::MAX)?;
        Ok(enc.split().freeze())
    }

    pub fn mark_dirty(&self, conn: Rc<Conn>) {
        self.dirty.borrow_mut().push(conn);
    }

    /// Write out every connection that has queued frames.
    pub fn flush_dirty(&self) {
        loop {
            let list = std::mem::take(&mut *self.dirty.borrow_mut());
            if list.is_empty() {
                return;
            }
            for c in list {
                c.flush();
            }
        }
    }

    pub fn register(&self, conn: &Rc<Conn>) {
        self.conns.borrow_mut().insert(conn.session, conn.clone());
    }

    /// Remove a closing connection from every table. Called once per connection.
    pub fn deregister(&self, conn: &Conn) {
        self.conns.borrow_mut().remove(&conn.session);
        self.shared.directory.release(&conn.peer_id, conn.session);
        self.shared.connection_ended();
    }

    pub fn conn(&self, session: u64) -> Option<Rc<Conn>> {
        self.conns.borrow().get(&session).cloned()
    }

    /// Queue `frame` to the peer with `session` on shard `target`: directly when that is
    /// this shard, else by one inbox message. A peer that has left is skipped silently.
    pub fn deliver(&self, target: usize, session: u64, frame: Bytes) {
        if target == self.index {
            if let Some(c) = self.conn(session) {
                let _ = c.queue(frame);
            }
        } else {
            let _ = self.shared.senders[target].send(ShardMsg::Deliver { session, frame });
        }
    }

    pub fn all_conns(&self) -> Vec<Rc<Conn>> {
        self.conns.borrow().values().cloned().collect()
    }

    fn spawn_conn(self: &Rc<Self>, stream: Stream) {
        if self.stopping.get() {
            return;
        }
        if !self.shared.try_admit() {
            crate::handshake::reject(
                self,
                stream.fd(),
                Code::Overloaded,
                "server at max connections",
            );
            return;
        }
        let shard = self.clone();
        let guard = LiveTask::new(self.clone());
        glommio::spawn_local(async move {
            let _guard = guard;
            conn::serve(shard, stream).await;
        })
        .detach();
    }

    fn handle(self: &Rc<Self>, msg: ShardMsg) -> Option<Duration> {
        match msg {
            ShardMsg::Broadcast { frame, exclude } => {
                for c in self.all_conns() {
                    if c.session != exclude {
                        let _ = c.queue(frame.clone());
                    }
                }
            }
            ShardMsg::Deliver { session, frame } => {
                if let Some(c) = self.conn(session) {
                    let _ = c.queue(frame);
                }
            }
            ShardMsg::Kick {
                session,
                code,
                reason,
            } => {
                if let Some(c) = self.conn(session) {
                    c.close(code, reason);
                }
            }
            ShardMsg::Adopt(fd) => self.spawn_conn(crate::stream::unix_from_fd(fd)),
            ShardMsg::Exec(f) => f(self),
            ShardMsg::Shutdown { drain } => return Some(drain),
        }
        None
    }

    /// Drain the inbox until Shutdown.
    async fn inbox(self: &Rc<Self>, rx: flume::Receiver<ShardMsg>) -> Duration {
        loop {
            let Ok(first) = rx.recv_async().await else {
                return Duration::ZERO;
            };
            let mut stop = self.handle(first);
            // Take what else is waiting in one go, bounded so a flood of cross-shard
            // traffic cannot starve this shard's own sockets.
            let mut n = 0;
            while stop.is_none() && n < 256 {
                match rx.try_recv() {
                    Ok(m) => stop = self.handle(m),
                    Err(_) => break,
                }
                n += 1;
            }
            self.flush_dirty();
            if let Some(d) = stop {
                return d;
            }
        }
    }

    async fn heartbeat(self: Rc<Self>) {
        let interval = self.shared.opts.heartbeat;
        let ping = self
            .encode(&codec::Ping { nonce: 0 })
            .expect("Ping always encodes");
        loop {
            glommio::timer::sleep(interval).await;
            if self.stopping.get() {
                return;
            }
            for c in self.all_conns() {
                if c.rx_seen.replace(false) {
                    c.missed_beats.set(0);
                    continue;
                }
                let missed = c.missed_beats.get() + 1;
                c.missed_beats.set(missed);
                if missed >= 3 {
                    c.close(
                        Code::IdleTimeout,
                        "no frame within three heartbeat intervals",
                    );
                } else {
                    let _ = c.queue(ping.clone());
                }
            }
            self.flush_dirty();
        }
    }

    /// Stop: no new connections; wait up to `drain` for in-flight handlers; close all.
    async fn stop(self: &Rc<Self>, drain: Duration) {
        self.stopping.set(true);
        let deadline = Instant::now() + drain;
        while Instant::now() < deadline && self.all_conns().iter().any(|c| c.inflight() > 0) {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        for c in self.all_conns() {
            c.close(Code::Shutdown, "server shutting down");
        }
        self.flush_dirty();
        // Wait for connection tasks to finish their linger, bounded.
        let _ = glommio::timer::timeout(Duration::from_secs(3), async {
            poll_fn(|cx| {
                if self.live_tasks.get() == 0 {
                    Poll::Ready(Ok(()))
                } else {
                    *self.live_waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await
        })
        .await;
    }
}

/// Counts a connection task as alive for the shutdown gate.
struct LiveTask(Rc<Shard>);

impl LiveTask {
    fn new(shard: Rc<Shard>) -> LiveTask {
        shard.live_tasks.set(shard.live_tasks.get() + 1);
        LiveTask(shard)
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        let s = &self.0;
        s.live_tasks.set(s.live_tasks.get() - 1);
        if s.live_tasks.get() == 0 {
            if let Some(w) = s.live_waker.borrow_mut().take() {
                w.wake();
            }
        }
    }
}

fn accept_loop(shard: Rc<Shard>, fd: OwnedFd) -> impl Future<Output = ()> {
    // SAFETY: the fd is a listening TCP socket we created and hand over exclusively.
    let listener = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
    async move {
        loop {
            match listener.accept().await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    shard.spawn_conn(Stream::Tcp(s));
                }
                Err(_) => {
                    if shard.stopping.get() {
                        return;
                    }
                    // EMFILE/ENFILE and friends: back off instead of spinning on an
                    // accept that keeps failing; the kernel backlog holds the rest.
                    shard
                        .shared
                        .accept_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// The body of a shard's executor.
pub(crate) async fn run(
    index: usize,
    shared: Arc<Shared>,
    source: ListenerSource,
    rx: flume::Receiver<ShardMsg>,
) {
    let shard = Rc::new(Shard::new(index, shared));
    let (accept, listen_fd) = match source {
        ListenerSource::Tcp(fd) => {
            let raw = fd.as_raw_fd();
            (
                Some(glommio::spawn_local(accept_loop(shard.clone(), fd))),
                Some(raw),
            )
        }
        ListenerSource::None => (None, None),
    };
    let beat = glommio::spawn_local(shard.clone().heartbeat());
    let drain = shard.inbox(rx).await;
    shard.stopping.set(true);
    if let Some(fd) = listen_fd {
        // An io_uring accept in flight keeps the socket listening even after the listener
        // is dropped; shutting it down fails that accept and frees the port now, so that
        // `close()` returning means the address can be bound again.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
    if let Some(a) = accept {
        a.cancel().await;
    }
    shard.stop(drain).await;
    beat.cancel().await;
}
