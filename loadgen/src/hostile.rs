//! Hostile peers, for the `attack` and `soak` scenarios: connections that cost the server
//! memory or CPU on purpose (they never read, never finish a frame, flood relayed calls,
//! pipeline requests without reading the answers), and the bookkeeping of how each one
//! ended: closed by the server (with which Close code, or by EOF or reset without one), or
//! still open when the loadgen stopped.
//!
//! A [`Swarm`] holds any mix of hostile connections in one mio (epoll) loop on one thread.
//! Only the kinds that read are registered for readability: a peer that never reads must
//! not cost the loadgen an event per arriving segment. Whether the server has closed a
//! connection that is never read cannot be seen from this side while the server's FIN sits
//! behind unread data (the receive window is full), so the swarm also looks at the server's
//! end of each connection in `/proc/net/tcp` (loopback IPv4 targets): a server-side socket
//! that left ESTABLISHED, or is gone, means the server closed it. Such a connection is then
//! read to its end to find the Close frame and its code.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::BytesMut;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use peerd_codec::{encode, Code, FrameKind, Pong, Publish, RpcRequest, HEADER_LEN};
use serde::Serialize;

use crate::adapter::Connected;
use crate::clock::now_ns;
use crate::schedule::Pacer;

/// What a hostile peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Joins a topic and never reads; a well-behaved publisher sends it many small messages.
    SlowReader,
    /// Joins a topic of its own and never reads; a well-behaved publisher sends big messages.
    SlowSubscribers,
    /// Sends the header and half the body of a large frame, then one byte per interval.
    PartialFrames,
    /// Calls itself peer to peer with long timeouts, reads everything, never answers.
    RelayFlood,
    /// Pipelines echo requests to the server and never reads the answers.
    Pipeline,
    /// Pipelines echo requests to the server and reads (discards) every answer: a flood
    /// that is not also a slow consumer, so only a rate limit stops it.
    Flood,
}

impl Kind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::SlowReader => "slow-reader",
            Kind::SlowSubscribers => "slow-subscribers",
            Kind::PartialFrames => "partial-frames",
            Kind::RelayFlood => "relay-flood",
            Kind::Pipeline => "pipeline",
            Kind::Flood => "flood",
        }
    }

    /// Whether peers of this kind read what the server sends (and discard it).
    pub fn reads(self) -> bool {
        matches!(self, Kind::RelayFlood | Kind::Flood)
    }

    /// Whether peers of this kind send anything after the handshake (and joins).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Kind::PartialFrames | Kind::RelayFlood | Kind::Pipeline | Kind::Flood
        )
    }
}

/// A hostile behaviour with its parameters.
#[derive(Debug, Clone, Serialize)]
pub struct Behaviour {
    /// The kind.
    pub kind: Kind,
    /// Requests per second per connection (relay-flood, pipeline); 0 = as fast as the
    /// socket takes them.
    pub rate: f64,
    /// Params bytes per request (relay-flood, pipeline).
    pub payload: usize,
    /// Declared body length of the partial frame (partial-frames); half of it is sent.
    pub partial_bytes: u32,
    /// Interval between the single bytes that follow the half frame, ns (partial-frames).
    pub trickle_ns: u64,
    /// `timeout_ms` of the relayed calls (relay-flood).
    pub call_timeout_ms: u32,
}

impl Behaviour {
    /// `kind` with the defaults of the attack scenario.
    pub fn new(kind: Kind) -> Behaviour {
        Behaviour {
            kind,
            rate: 0.0,
            payload: 64,
            partial_bytes: 1 << 20,
            trickle_ns: 1_000_000_000,
            call_timeout_ms: 3_600_000,
        }
    }

    /// Whether requests are sent at `rate` (request kinds with a rate) rather than as fast
    /// as the socket takes them.
    fn paced(&self) -> bool {
        matches!(self.kind, Kind::RelayFlood | Kind::Pipeline | Kind::Flood) && self.rate > 0.0
    }
}

/// Something a [`Skimmer`] saw go by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A complete frame of this kind byte (every frame, including the ones below).
    Frame(u8),
    /// A Close frame with this code.
    Close(u16),
    /// A Ping with this nonce.
    Ping(u64),
}

/// Follows the frames of a byte stream without keeping their bodies (only the bodies of
/// Close and Ping frames, which are small): what a peer that reads and discards needs.
#[derive(Debug, Default)]
pub struct Skimmer {
    hdr: [u8; HEADER_LEN],
    hfill: usize,
    in_body: bool,
    kind: u8,
    body_left: usize,
    keep: bool,
    body: Vec<u8>,
    /// The code of the first Close frame seen.
    pub close: Option<u16>,
}

const KIND_CLOSE: u8 = 0x7F;
const KIND_PING: u8 = 0x70;

impl Skimmer {
    /// Feed the next bytes of the stream.
    pub fn feed(&mut self, mut d: &[u8], on: &mut dyn FnMut(Seen)) {
        while !d.is_empty() || (self.in_body && self.body_left == 0) {
            if !self.in_body {
                let n = (HEADER_LEN - self.hfill).min(d.len());
                self.hdr[self.hfill..self.hfill + n].copy_from_slice(&d[..n]);
                self.hfill += n;
                d = &d[n..];
                if self.hfill < HEADER_LEN {
                    return;
                }
                self.kind = self.hdr[4];
                self.body_left =
                    u32::from_le_bytes([self.hdr[0], self.hdr[1], self.hdr[2], self.hdr[3]])
                        as usize;
                self.keep = matches!(self.kind, KIND_CLOSE | KIND_PING);
                self.body.clear();
                self.in_body = true;
                continue;
            }
            let n = self.body_left.min(d.len());
            if self.keep && self.body.len() + n <= 64 * 1024 {
                self.body.extend_from_slice(&d[..n]);
            }
            self.body_left -= n;
            d = &d[n..];
            if self.body_left == 0 {
                self.in_body = false;
                self.hfill = 0;
                on(Seen::Frame(self.kind));
                if self.keep {
                    if let Some(kind) = FrameKind::from_u8(self.kind) {
                        match peerd_codec::decode(kind, &self.body) {
                            Ok(peerd_codec::Frame::Close(c)) => {
                                let code = c.code.to_native();
                                self.close.get_or_insert(code);
                                on(Seen::Close(code));
                            }
                            Ok(peerd_codec::Frame::Ping(p)) => on(Seen::Ping(p.nonce.to_native())),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

/// Name of a close code for reports: `slow_consumer`, `code_4242`, ...
pub fn code_name(code: u16) -> String {
    match Code::from_u16(code) {
        Some(c) => c.name().to_string(),
        None => format!("code_{code}"),
    }
}

/// Name of a frame kind byte for reports.
pub fn kind_name(kind: u8) -> String {
    FrameKind::from_u8(kind)
        .map(|k| k.name().to_string())
        .unwrap_or_else(|| format!("kind_0x{kind:02x}"))
}

/// TCP state of a socket (`tcpi_state` of TCP_INFO: 1 ESTABLISHED, 7 CLOSE, 8 CLOSE_WAIT).
pub fn tcp_state(s: &TcpStream) -> Option<u8> {
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `buf`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (r == 0 && len > 0).then_some(buf[0])
}

/// A socket address as `/proc/net/tcp` prints it (IPv4 only): `0100007F:1F90`.
pub fn proc_net_key(a: SocketAddr) -> Option<String> {
    match a.ip() {
        IpAddr::V4(ip) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(ip.octets()),
            a.port()
        )),
        IpAddr::V6(_) => None,
    }
}

/// The server's ends of its TCP connections, from the text of `/proc/net/tcp`:
/// remote address key -> (state, bytes in the send queue).
pub fn server_sockets(text: &str, server_key: &str) -> BTreeMap<String, (u8, u64)> {
    let mut out = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().take(5).collect();
        if f.len() < 5 || f[1] != server_key {
            continue;
        }
        let Ok(st) = u8::from_str_radix(f[3], 16) else {
            continue;
        };
        let tx = f[4]
            .split_once(':')
            .and_then(|(t, _)| u64::from_str_radix(t, 16).ok())
            .unwrap_or(0);
        out.insert(f[2].to_string(), (st, tx));
    }
    out
}

/// Whether the server's ends of its connections show in this machine's /proc/net/tcp.
fn server_end_visible(server: SocketAddr) -> bool {
    matches!(server.ip(), IpAddr::V4(ip) if ip.is_loopback())
}

/// How a swarm against `server` sees that the server closed a connection, for reports.
pub fn close_detection(server: SocketAddr) -> &'static str {
    if server_end_visible(server) {
        "reads (kinds that read), write errors, TCP_INFO, and the server's end of each connection in /proc/net/tcp every second (less often when that file is slow to read)"
    } else {
        "reads (kinds that read), write errors and TCP_INFO only (target not on loopback IPv4: a server close behind unread data is not seen until the end)"
    }
}

/// How one hostile connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The server sent Close with this code (then closed).
    Close(u16),
    /// EOF without a Close frame.
    Eof,
    /// Connection reset without a Close frame.
    Reset,
    /// The server closed its end, but the rest of the stream could not be read before the
    /// loadgen stopped.
    Unread,
    /// Some other socket error.
    Error(String),
}

/// Counts for one kind of hostile connection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindStats {
    /// Connections opened (handshaken, joined where the kind joins).
    pub opened: u64,
    /// Connections the server closed.
    pub closed_by_server: u64,
    /// Of those: Close frames read, by code name.
    pub close_codes: BTreeMap<String, u64>,
    /// Of those: EOF without a Close frame.
    pub eof_without_close: u64,
    /// Of those: reset without a Close frame.
    pub resets: u64,
    /// Of those: closed on the server's side (seen in /proc/net/tcp) but not read to the
    /// end before the loadgen stopped, so no code is known.
    pub closed_unread: u64,
    /// Of those: other socket errors.
    pub errors: u64,
    /// When the server closed the first and the last of them, seconds since the start of
    /// the run (the time axis of the RSS series).
    pub first_server_close_s: Option<f64>,
    /// See `first_server_close_s`.
    pub last_server_close_s: Option<f64>,
    /// Connections the loadgen closed itself (recycled in a soak, or at the end).
    pub closed_by_loadgen: u64,
    /// Connections still open when the loadgen stopped.
    pub open_at_end: u64,
    /// Requests (or single trickled bytes, and each completed half frame) written to the
    /// socket.
    pub messages_sent: u64,
    /// Bytes written to the socket.
    pub bytes_sent: u64,
    /// Frames received by the kinds that read, by frame kind name.
    pub frames_received: BTreeMap<String, u64>,
    #[serde(skip)]
    frames_by_kind: Vec<u64>,
}

impl KindStats {
    fn ended(&mut self, end: &End, at_s: f64) {
        self.closed_by_server += 1;
        match end {
            End::Close(c) => *self.close_codes.entry(code_name(*c)).or_default() += 1,
            End::Eof => self.eof_without_close += 1,
            End::Reset => self.resets += 1,
            End::Unread => self.closed_unread += 1,
            End::Error(_) => self.errors += 1,
        }
        self.first_server_close_s.get_or_insert(at_s);
        self.last_server_close_s = Some(at_s);
    }

    fn frame(&mut self, kind: u8) {
        if self.frames_by_kind.is_empty() {
            self.frames_by_kind = vec![0; 256];
        }
        self.frames_by_kind[kind as usize] += 1;
    }

    fn settle(&mut self) {
        for (k, &n) in self.frames_by_kind.iter().enumerate() {
            if n > 0 {
                self.frames_received.insert(kind_name(k as u8), n);
            }
        }
    }
}

/// SO_SNDBUF of the hostile connections that write.
pub const HOSTILE_SNDBUF: usize = 256 * 1024;

/// How many requests a writer encodes ahead (one batch per connection at a time).
const BATCH: usize = 16;

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

struct Hostile {
    stream: TcpStream,
    key: Option<String>,
    beh: Behaviour,
    skim: Skimmer,
    /// The server closed its end (seen in /proc/net/tcp, TCP_INFO, or a write error).
    server_closed_at: Option<u64>,
    /// Scans in a row that did not find the server's end in /proc/net/tcp.
    missing_scans: u8,
    opened_at: u64,
    /// Bytes encoded and not yet written.
    out: Vec<u8>,
    opos: usize,
    /// One encoded request (relay-flood, pipeline) and the offset of its id.
    template: Vec<u8>,
    id_at: usize,
    next_id: u64,
    /// Partial frames: zero bytes of the half body still to write; next trickled byte.
    zeros_left: usize,
    next_trickle: u64,
    credit: f64,
    credit_at: u64,
    writable: bool,
}

/// Lets the sampler and the soak see how many hostile connections are open.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Hostile connections open (from the loadgen's view: not yet seen closed by the server).
    pub open: AtomicU64,
    /// Bytes the server's kernel still holds unsent toward hostile peers (/proc/net/tcp
    /// tx_queue of the server's ends), when visible.
    pub server_unsent: AtomicU64,
}

/// Any mix of hostile connections, driven from one thread.
pub struct Swarm {
    poll: Poll,
    events: Events,
    conns: Vec<Option<Hostile>>,
    free: Vec<usize>,
    server_key: Option<String>,
    next_scan: u64,
    scan_ns: u64,
    rbuf: Vec<u8>,
    origin: u64,
    active: bool,
    /// The earliest moment a rate-paced connection has its next request due (ns), from the
    /// last pass over the connections: the next poll waits no longer than that.
    next_due: u64,
    /// Per kind.
    pub stats: BTreeMap<Kind, KindStats>,
    /// Shared readings.
    pub gauges: Arc<Gauges>,
    publisher: Option<Publisher>,
}

const PUBLISHER: Token = Token(usize::MAX - 2);

impl Swarm {
    /// A swarm against `server`; times in the stats are seconds from `origin` (ns).
    pub fn new(server: SocketAddr, origin: u64) -> Result<Swarm> {
        Ok(Swarm {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            conns: Vec::new(),
            free: Vec::new(),
            server_key: server_end_visible(server)
                .then(|| proc_net_key(server))
                .flatten(),
            next_scan: 0,
            scan_ns: 1_000_000_000,
            rbuf: vec![0; 256 * 1024],
            origin,
            active: false,
            next_due: u64::MAX,
            stats: BTreeMap::new(),
            gauges: Arc::new(Gauges::default()),
            publisher: None,
        })
    }

    /// Start (or stop) sending: connections added before are quiet until then.
    pub fn set_active(&mut self, on: bool, now: u64) {
        self.active = on;
        // Connections added before start together. Each starts with a different fraction of
        // a request's credit, evenly spread, so that their sends are evenly spaced: from
        // zero credit all would reach their first request at the same instant and send in
        // one burst every 1/rate seconds (5,000 requests at once, then nothing), a coarser
        // pattern than the aggregate rate says (BENCHMARKING.md, "Known pitfalls").
        let paced = self
            .conns
            .iter()
            .flatten()
            .filter(|h| h.beh.paced())
            .count();
        let mut k = 0;
        for h in self.conns.iter_mut().flatten() {
            h.credit_at = now;
            h.next_trickle = now;
            if h.beh.paced() {
                h.credit = k as f64 / paced as f64;
                k += 1;
            }
        }
        if let Some(p) = &mut self.publisher {
            p.active = on;
        }
    }

    /// Hostile connections open.
    pub fn open(&self) -> usize {
        self.conns.len() - self.free.len()
    }

    /// Add a handshaken (and joined) connection with behaviour `beh`; returns its slot.
    pub fn add(&mut self, c: Connected, peer_id: &str, beh: &Behaviour) -> Result<usize> {
        let Connected {
            stream, leftover, ..
        } = c;
        stream.set_nonblocking(true)?;
        stream.set_read_timeout(None)?;
        if beh.kind.writes() {
            // A fixed send buffer (no autotuning up to several MiB per socket): the kernel
            // holds a bounded amount for each hostile writer, and what it writes beyond
            // waits for the server to read.
            socket2::SockRef::from(&stream).set_send_buffer_size(HOSTILE_SNDBUF)?;
        }
        let key = stream.local_addr().ok().and_then(proc_net_key);
        let now = now_ns();
        let mut h = Hostile {
            stream,
            key,
            beh: beh.clone(),
            skim: Skimmer::default(),
            server_closed_at: None,
            missing_scans: 0,
            opened_at: now,
            out: Vec::new(),
            opos: 0,
            template: Vec::new(),
            id_at: 0,
            next_id: 1,
            zeros_left: 0,
            next_trickle: now,
            credit: 0.0,
            credit_at: now,
            writable: true,
        };
        match beh.kind {
            Kind::RelayFlood | Kind::Pipeline | Kind::Flood => {
                let params = vec![b'h'; beh.payload];
                let req = RpcRequest {
                    id: 0,
                    method: if beh.kind == Kind::RelayFlood {
                        "lg.flood".into()
                    } else {
                        "echo".into()
                    },
                    peer: (beh.kind == Kind::RelayFlood).then(|| peer_id.to_string().into()),
                    timeout_ms: if beh.kind == Kind::RelayFlood {
                        beh.call_timeout_ms
                    } else {
                        0
                    },
                    params: params.into(),
                };
                let mut one = BytesMut::new();
                encode(&req, &mut one, u32::MAX).context("encoding a hostile request")?;
                h.id_at = request_id_offset(one.len());
                h.template = one.to_vec();
            }
            Kind::PartialFrames => {
                let mut hdr = [0u8; HEADER_LEN];
                hdr[..4].copy_from_slice(&beh.partial_bytes.to_le_bytes());
                hdr[4] = FrameKind::Event as u8;
                h.out = hdr.to_vec();
                h.opos = 0;
                h.zeros_left = beh.partial_bytes as usize / 2;
            }
            Kind::SlowReader | Kind::SlowSubscribers => {}
        }
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let interest = match (beh.kind.reads(), beh.kind.writes()) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        };
        if let Some(i) = interest {
            self.poll
                .registry()
                .register(&mut SourceFd(&h.stream.as_raw_fd()), Token(slot), i)?;
        }
        // What the set-up read past its last answer is the start of the stream: the
        // skimmer must see it to stay on frame boundaries when it reads the rest.
        if !leftover.is_empty() {
            let stats = self.stats.entry(beh.kind).or_default();
            h.skim
                .feed(&leftover, &mut |s| skimmed(stats, &mut Vec::new(), s));
        }
        self.stats.entry(beh.kind).or_default().opened += 1;
        self.conns[slot] = Some(h);
        self.gauges.open.fetch_add(1, Ordering::Relaxed);
        Ok(slot)
    }

    /// Add the well-behaved publisher of the slow-reader kinds.
    pub fn set_publisher(&mut self, p: Publisher) -> Result<()> {
        self.poll.registry().register(
            &mut SourceFd(&p.stream.as_raw_fd()),
            PUBLISHER,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.publisher = Some(p);
        Ok(())
    }

    /// The publisher's counts, when there is one.
    pub fn publisher_report(&self) -> Option<PublisherReport> {
        self.publisher.as_ref().map(|p| p.report.clone())
    }

    /// Slots of the connections open, with their kind and how long ago they opened (ns).
    pub fn slots(&self, now: u64) -> Vec<(usize, Kind, u64)> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                h.as_ref()
                    .map(|h| (i, h.beh.kind, now.saturating_sub(h.opened_at)))
            })
            .collect()
    }

    /// Close connection `slot` from this side (reset: no linger, unread data discarded).
    pub fn retire(&mut self, slot: usize) {
        if let Some(h) = self.take(slot) {
            let _ = socket2::SockRef::from(&h.stream).set_linger(Some(Duration::ZERO));
            self.stats.entry(h.beh.kind).or_default().closed_by_loadgen += 1;
        }
    }

    /// Take connection `slot` out of the swarm (its socket closes when dropped).
    fn take(&mut self, slot: usize) -> Option<Hostile> {
        let h = self.conns.get_mut(slot).and_then(Option::take)?;
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&h.stream.as_raw_fd()));
        self.free.push(slot);
        self.gauges.open.fetch_sub(1, Ordering::Relaxed);
        Some(h)
    }

    /// One turn of the loop: wait for events at most until `until` (ns), send what is due,
    /// read what the reading kinds got, and look for connections the server closed.
    pub fn step(&mut self, until: u64) -> Result<()> {
        let now = now_ns();
        // Until the next request or publish is due, at most 10 ms (mio waits whole
        // milliseconds, so at high rates each pass sends about a millisecond's worth).
        let mut due = if self.active { self.next_due } else { u64::MAX };
        if let Some(t) = self.publisher.as_ref().and_then(Publisher::next_due) {
            due = due.min(t);
        }
        let wait = Duration::from_nanos(until.min(due).saturating_sub(now).min(10_000_000));
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        let now = now_ns();
        let mut readable = Vec::new();
        for ev in self.events.iter() {
            if ev.token() == PUBLISHER {
                if let Some(p) = &mut self.publisher {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        p.read(&mut self.rbuf);
                    }
                    if ev.is_writable() {
                        p.flush();
                    }
                }
                continue;
            }
            let i = ev.token().0;
            let Some(h) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if ev.is_writable() {
                h.writable = true;
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                readable.push(i);
            }
        }
        for i in readable {
            self.read(i, now);
        }
        if let Some(p) = &mut self.publisher {
            p.send_due(now);
        }
        if self.active {
            self.next_due = u64::MAX;
            for i in 0..self.conns.len() {
                self.pump(i, now);
            }
        }
        if now >= self.next_scan {
            self.scan(now);
            // Every second, or less often when reading /proc/net/tcp is slow (tens of
            // thousands of sockets): at most a tenth of this thread goes to scanning.
            let took = now_ns().saturating_sub(now);
            self.next_scan = now + self.scan_ns.max(10 * took);
        }
        // Connections the server closed that are not read otherwise: read them to the end.
        for i in 0..self.conns.len() {
            let closing = self.conns[i]
                .as_ref()
                .is_some_and(|h| h.server_closed_at.is_some() && !h.beh.kind.reads());
            if closing {
                self.read(i, now);
            }
        }
        Ok(())
    }

    /// Look for connections the server closed: TCP state on this side, the server's end in
    /// /proc/net/tcp.
    fn scan(&mut self, now: u64) {
        let server = self.server_key.as_ref().and_then(|k| {
            std::fs::read_to_string("/proc/net/tcp")
                .ok()
                .map(|t| server_sockets(&t, k))
        });
        let mut unsent = 0;
        for h in self.conns.iter_mut().flatten() {
            if h.server_closed_at.is_some() {
                continue;
            }
            // FIN or RST arrived on this side.
            let here = matches!(tcp_state(&h.stream), Some(7 | 8));
            let there = match (&server, &h.key) {
                (Some(m), Some(k)) => match m.get(k) {
                    // ESTABLISHED or CLOSE_WAIT: the server has not closed its end.
                    Some((1 | 8, tx)) => {
                        unsent += tx;
                        h.missing_scans = 0;
                        false
                    }
                    Some(_) => true,
                    // Gone: closed and reaped. Twice in a row, so that a line skipped while
                    // the kernel's table changed under the read is not taken for a close.
                    None => {
                        h.missing_scans += 1;
                        h.missing_scans >= 2
                    }
                },
                _ => false,
            };
            if here || there {
                h.server_closed_at = Some(now);
            }
        }
        self.gauges.server_unsent.store(unsent, Ordering::Relaxed);
    }

    /// Read connection `i` until the socket is drained; settle it if it ended.
    fn read(&mut self, i: usize, now: u64) {
        let Some(h) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let stats = self.stats.entry(h.beh.kind).or_default();
        let mut pings = Vec::new();
        let end = loop {
            match (&h.stream).read(&mut self.rbuf) {
                Ok(0) => {
                    break Some(h.skim.close.map(End::Close).unwrap_or(End::Eof));
                }
                Ok(n) => h
                    .skim
                    .feed(&self.rbuf[..n], &mut |s| skimmed(stats, &mut pings, s)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    break Some(h.skim.close.map(End::Close).unwrap_or(End::Reset));
                }
                Err(e) => {
                    break Some(
                        h.skim
                            .close
                            .map(End::Close)
                            .unwrap_or(End::Error(e.to_string())),
                    )
                }
            }
        };
        if let Some(end) = end {
            let at = h.server_closed_at.unwrap_or(now);
            self.settle(i, &end, at);
        }
    }

    /// Connection `i` ended as `end` (the server closed it at `at`): count and drop it.
    fn settle(&mut self, i: usize, end: &End, at: u64) {
        if let Some(h) = self.take(i) {
            let at_s = at.saturating_sub(self.origin) as f64 / 1e9;
            self.stats.entry(h.beh.kind).or_default().ended(end, at_s);
        }
    }

    /// Send what connection `i` has due.
    fn pump(&mut self, i: usize, now: u64) {
        let Some(h) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if h.server_closed_at.is_some() {
            return;
        }
        let stats = self.stats.entry(h.beh.kind).or_default();
        let failed = match h.beh.kind {
            Kind::SlowReader | Kind::SlowSubscribers => None,
            Kind::PartialFrames => pump_partial(h, stats, now),
            Kind::RelayFlood | Kind::Pipeline | Kind::Flood => pump_requests(h, stats, now),
        };
        if failed.is_none() && h.beh.paced() && h.writable {
            // `pump_requests` spent the whole credit: the next request is due when it
            // reaches one again.
            let wait_s = (1.0 - h.credit).max(0.0) / h.beh.rate;
            self.next_due = self.next_due.min(now + (wait_s * 1e9) as u64);
        }
        if let Some(e) = failed {
            // The server is gone from this connection: read what it left for the code.
            h.server_closed_at = Some(now);
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                self.read(i, now);
            } else {
                let at = now;
                self.settle(i, &End::Error(e.to_string()), at);
            }
        }
    }

    /// Stop: look once more for closes by the server, read those connections to their end
    /// (until `deadline`), count the rest as open at the end and close them all.
    pub fn finish(&mut self, deadline: u64) {
        self.active = false;
        let now = now_ns();
        self.scan(now);
        loop {
            let now = now_ns();
            let mut left = 0;
            for i in 0..self.conns.len() {
                let closing = self.conns[i]
                    .as_ref()
                    .is_some_and(|h| h.server_closed_at.is_some());
                if closing {
                    self.read(i, now);
                    left += self.conns[i].is_some() as usize;
                }
            }
            if left == 0 || now >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for i in 0..self.conns.len() {
            let Some(h) = self.conns[i].as_ref() else {
                continue;
            };
            if let Some(at) = h.server_closed_at {
                self.settle(i, &End::Unread, at);
            } else {
                let kind = h.beh.kind;
                self.stats.entry(kind).or_default().open_at_end += 1;
                self.take(i);
            }
        }
        for s in self.stats.values_mut() {
            s.settle();
        }
        if let Some(p) = &mut self.publisher {
            p.report.unsent_at_end = p.wbuf.len() as u64;
            p.active = false;
        }
    }
}

fn skimmed(stats: &mut KindStats, pings: &mut Vec<u64>, s: Seen) {
    match s {
        Seen::Frame(k) => stats.frame(k),
        Seen::Ping(n) => pings.push(n),
        Seen::Close(_) => {}
    }
}

/// Offset of `id` in an encoded RpcRequest frame of `frame_len` bytes: the root (37 bytes,
/// `id` first) is the last part of the body (PROTOCOL.md §4, §5).
pub fn request_id_offset(frame_len: usize) -> usize {
    frame_len - 37
}

/// Write `h.out[h.opos..]` until done or the socket is full.
fn write_out(h: &mut Hostile, stats: &mut KindStats) -> Result<bool, io::Error> {
    while h.opos < h.out.len() {
        match (&h.stream).write(&h.out[h.opos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                h.opos += n;
                stats.bytes_sent += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                h.writable = false;
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Messages connection `h` may send now under its rate (unbounded when rate is 0).
fn allowance(h: &mut Hostile, now: u64) -> usize {
    if h.beh.rate <= 0.0 {
        return usize::MAX;
    }
    let dt = now.saturating_sub(h.credit_at) as f64 / 1e9;
    h.credit_at = now;
    // At most one second of unspent credit.
    h.credit = (h.credit + dt * h.beh.rate).min(h.beh.rate.max(1.0));
    h.credit.floor() as usize
}

fn pump_requests(h: &mut Hostile, stats: &mut KindStats, now: u64) -> Option<io::Error> {
    let mut budget = allowance(h, now);
    if !h.writable {
        return None;
    }
    loop {
        if h.opos == h.out.len() {
            if budget == 0 {
                return None;
            }
            let n = budget.min(BATCH);
            h.out.clear();
            for _ in 0..n {
                let at = h.out.len() + h.id_at;
                h.out.extend_from_slice(&h.template);
                h.out[at..at + 8].copy_from_slice(&h.next_id.to_le_bytes());
                h.next_id += 1;
            }
            h.opos = 0;
            budget = budget.saturating_sub(n);
            if h.beh.rate > 0.0 {
                h.credit -= n as f64;
            }
            stats.messages_sent += n as u64;
        }
        match write_out(h, stats) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(e),
        }
    }
}

fn pump_partial(h: &mut Hostile, stats: &mut KindStats, now: u64) -> Option<io::Error> {
    if !h.writable {
        return None;
    }
    if h.opos < h.out.len() {
        match write_out(h, stats) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(e),
        }
    }
    while h.zeros_left > 0 {
        let n = h.zeros_left.min(ZEROS.len());
        match (&h.stream).write(&ZEROS[..n]) {
            Ok(0) => return Some(io::ErrorKind::WriteZero.into()),
            Ok(w) => {
                h.zeros_left -= w;
                stats.bytes_sent += w as u64;
                if h.zeros_left == 0 {
                    stats.messages_sent += 1;
                    h.next_trickle = now + h.beh.trickle_ns;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                h.writable = false;
                return None;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(e),
        }
    }
    if now >= h.next_trickle {
        h.next_trickle = now + h.beh.trickle_ns;
        match (&h.stream).write(&ZEROS[..1]) {
            Ok(n) => {
                stats.bytes_sent += n as u64;
                stats.messages_sent += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => h.writable = false,
            Err(e) => return Some(e),
        }
    }
    None
}

/// What the well-behaved publisher of the slow-reader kinds did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublisherReport {
    /// Offered publishes per second.
    pub rate: f64,
    /// Payload bytes per publish.
    pub payload_bytes: usize,
    /// Topics it published to, round-robin.
    pub topics: usize,
    /// Publishes written to the socket buffer.
    pub published: u64,
    /// Publishes skipped because the server was not reading the publisher fast enough
    /// (more than 4 MiB unsent).
    pub skipped_backpressure: u64,
    /// Bytes still unsent when the attack ended.
    pub unsent_at_end: u64,
    /// Status frames (failures: publishes carry req 0) from the server.
    pub status_errors: u64,
    /// The server closed the publisher's connection (with this code, or "eof").
    pub disconnected: Option<String>,
}

/// A well-behaved paced publisher, read by the swarm's loop: answers pings, notices a close.
pub struct Publisher {
    stream: TcpStream,
    pacer: Pacer,
    topics: Vec<String>,
    payload: Vec<u8>,
    wbuf: BytesMut,
    skim: Skimmer,
    rr: usize,
    active: bool,
    /// Counts.
    pub report: PublisherReport,
}

/// Most bytes the publisher keeps unsent before it skips publishes.
const PUBLISHER_MAX_UNSENT: usize = 4 << 20;

impl Publisher {
    /// A publisher on a handshaken connection, publishing `payload`-byte messages to
    /// `topics` on `pacer`'s schedule once the swarm is active.
    pub fn new(
        c: Connected,
        pacer: Pacer,
        rate: f64,
        topics: Vec<String>,
        payload: usize,
    ) -> Result<Publisher> {
        c.stream.set_nonblocking(true)?;
        c.stream.set_read_timeout(None)?;
        Ok(Publisher {
            stream: c.stream,
            pacer,
            report: PublisherReport {
                rate,
                payload_bytes: payload,
                topics: topics.len(),
                ..Default::default()
            },
            topics,
            payload: vec![b'p'; payload],
            wbuf: BytesMut::with_capacity(64 * 1024),
            skim: Skimmer::default(),
            rr: 0,
            active: false,
        })
    }

    /// When the next publish is due, once the attack has started.
    fn next_due(&self) -> Option<u64> {
        (self.active && self.report.disconnected.is_none())
            .then(|| self.pacer.next_time())
            .flatten()
    }

    fn send_due(&mut self, now: u64) {
        // The schedule starts with the attack: nothing is owed before `set_active`.
        if !self.active || self.report.disconnected.is_some() {
            return;
        }
        while self.pacer.pop_due(now).is_some() {
            if self.wbuf.len() > PUBLISHER_MAX_UNSENT {
                self.report.skipped_backpressure += 1;
                continue;
            }
            let t = &self.topics[self.rr % self.topics.len()];
            self.rr = self.rr.wrapping_add(1);
            let msg = Publish {
                req: 0,
                topic: t.as_str().into(),
                echo: false,
                payload: self.payload.as_slice().into(),
            };
            if encode(&msg, &mut self.wbuf, u32::MAX).is_ok() {
                self.report.published += 1;
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        while !self.wbuf.is_empty() {
            match (&self.stream).write(&self.wbuf) {
                Ok(0) => break,
                Ok(n) => {
                    let _ = self.wbuf.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) {
        let mut pings = Vec::new();
        let mut statuses = 0;
        loop {
            match (&self.stream).read(buf) {
                Ok(0) => {
                    self.report.disconnected.get_or_insert_with(|| {
                        self.skim
                            .close
                            .map(code_name)
                            .unwrap_or_else(|| "eof".into())
                    });
                    break;
                }
                Ok(n) => self.skim.feed(&buf[..n], &mut |s| match s {
                    Seen::Ping(n) => pings.push(n),
                    Seen::Frame(0x60) => statuses += 1,
                    _ => {}
                }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.report
                        .disconnected
                        .get_or_insert_with(|| e.to_string());
                    break;
                }
            }
        }
        self.report.status_errors += statuses;
        for n in pings {
            let _ = encode(&Pong { nonce: n }, &mut self.wbuf, u32::MAX);
        }
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerd_codec::{encode_to_bytes, Close, Ping, TopicMessage};

    #[test]
    fn skimmer_finds_close_and_ping_in_any_chunking() {
        let mut s = Vec::new();
        s.extend_from_slice(
            &encode_to_bytes(&TopicMessage {
                topic: "t".into(),
                from: "p".into(),
                direct: false,
                payload: vec![7u8; 3000].into(),
            })
            .unwrap(),
        );
        s.extend_from_slice(&encode_to_bytes(&Ping { nonce: 42 }).unwrap());
        s.extend_from_slice(
            &encode_to_bytes(&Close {
                code: Code::SlowConsumer.as_u16(),
                reason: "too slow to read".into(),
            })
            .unwrap(),
        );
        for chunk in [1, 3, 7, 100, s.len()] {
            let mut sk = Skimmer::default();
            let mut seen = Vec::new();
            for c in s.chunks(chunk) {
                sk.feed(c, &mut |x| seen.push(x));
            }
            assert_eq!(
                seen,
                vec![
                    Seen::Frame(0x34),
                    Seen::Frame(0x70),
                    Seen::Ping(42),
                    Seen::Frame(0x7F),
                    Seen::Close(1010)
                ],
                "chunk {chunk}"
            );
            assert_eq!(sk.close, Some(1010));
        }
        assert_eq!(code_name(1010), "slow_consumer");
        assert_eq!(code_name(4242), "code_4242");
        assert_eq!(kind_name(0x34), "TopicMessage");
    }

    #[test]
    fn request_ids_are_patched_in_place() {
        let req = RpcRequest {
            id: 0,
            method: "lg.flood".into(),
            peer: Some("lg-h1".into()),
            timeout_ms: 5,
            params: vec![1u8; 64].into(),
        };
        let mut b = BytesMut::new();
        encode(&req, &mut b, u32::MAX).unwrap();
        let at = request_id_offset(b.len());
        b[at..at + 8].copy_from_slice(&0xDEAD_BEEFu64.to_le_bytes());
        let (raw, _) = peerd_codec::split_frame(&b, u32::MAX).unwrap().unwrap();
        match raw.decode().unwrap() {
            peerd_codec::Frame::RpcRequest(r) => {
                assert_eq!(r.id.to_native(), 0xDEAD_BEEF);
                assert_eq!(r.timeout_ms.to_native(), 5);
                assert_eq!(r.params.as_slice(), &[1u8; 64][..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn proc_net_tcp_lines_parse() {
        let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let key = proc_net_key(server).unwrap();
        assert_eq!(key, "0100007F:1F90");
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:C350 01 00001000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n\
   2: 0100007F:1F90 0100007F:C351 04 00200000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1\n\
   3: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n";
        let m = server_sockets(text, &key);
        assert_eq!(m.len(), 3);
        assert_eq!(m["0100007F:C350"], (1, 0x1000));
        assert_eq!(m["0100007F:C351"], (4, 0x200000));
        assert_eq!(m["00000000:0000"].0, 0x0A);
    }
}
