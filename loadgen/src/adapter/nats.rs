//! NATS over its text protocol, written by hand like the Redis adapter: `CONNECT` and a
//! `PING`/`PONG` round trip as the handshake, `SUB` for subscribe, `PUB` for publish, `MSG`
//! (and `HMSG`) for deliveries, the server's `PING`s answered with `PONG`. The payload with
//! its stamps is delivered unchanged, so latency is measured as for every other adapter:
//! the plain NATS fan-out that a NATS-based peerd cluster is compared with.
//!
//! Set-up is blocking (as for every adapter). A subscription counts as made only when a
//! `PING` sent after the `SUB` is answered: NATS handles a connection's protocol in order,
//! so the `PONG` proves the server has registered the subscription before any publisher
//! connects. (Interest reaching the other servers of a NATS *cluster* is that cluster's
//! business; one NATS server is the normal case here, and the warm-up covers the rest.)

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::BytesMut;

use super::{read_until, tcp_connect, write_all, Adapter, ConnectOptions, Connected, Incoming};

/// Longest control line accepted (`INFO` of a server in a big cluster lists its peers' URLs;
/// anything past this is not a NATS server talking).
const MAX_LINE: usize = 64 * 1024;

/// The NATS adapter.
#[derive(Debug, Default)]
pub struct Nats {
    /// Subscription ids: only unique per connection in NATS, one counter is simplest.
    next_sid: AtomicU64,
}

/// One protocol message from the server, borrowed from the buffer.
#[derive(Debug, PartialEq)]
pub enum Op<'a> {
    /// `INFO {...}`: server information (at connect, and again when a cluster changes).
    Info,
    /// `MSG` / `HMSG`: a message for one of our subscriptions (headers left out).
    Msg {
        /// The subject it was published to.
        subject: &'a [u8],
        /// The payload.
        payload: &'a [u8],
    },
    /// `PING`: answer with `PONG`.
    Ping,
    /// `PONG`: the answer to our `PING`.
    Pong,
    /// `+OK` (only in verbose mode, which the loadgen does not ask for).
    Ok,
    /// `-ERR '...'`.
    Err(&'a [u8]),
}

/// The control line at the start of `buf` (without its CRLF) and the bytes it takes.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some((&buf[..i], i + 2))),
        None if buf.len() > MAX_LINE => {
            bail!("NATS control line longer than {MAX_LINE} bytes")
        }
        None => Ok(None),
    }
}

fn number(b: &[u8]) -> Result<usize> {
    Ok(std::str::from_utf8(b)?.parse()?)
}

/// `MSG subject sid [reply-to] #bytes` (`headers`: `HMSG subject sid [reply-to] #header
/// #total`): the subject, where the body's payload starts, and the body's length.
fn msg_args<'a>(args: &[&'a [u8]], headers: bool) -> Result<(&'a [u8], usize, usize)> {
    let (fixed, optional) = if headers { (4, 5) } else { (3, 4) };
    if args.len() != fixed && args.len() != optional {
        bail!(
            "bad NATS {} line: {} arguments",
            if headers { "HMSG" } else { "MSG" },
            args.len()
        );
    }
    let total = number(args[args.len() - 1])?;
    let start = if headers {
        number(args[args.len() - 2])?
    } else {
        0
    };
    if start > total {
        bail!("bad NATS HMSG line: headers longer than the message");
    }
    Ok((args[0], start, total))
}

/// Parse one protocol message at the start of `buf`: `Ok(None)` when incomplete.
/// Operation names are case-insensitive in NATS.
pub fn parse_op(buf: &[u8]) -> Result<Option<(Op<'_>, usize)>> {
    let Some((l, n)) = line(buf)? else {
        return Ok(None);
    };
    // Leading blanks stripped, so that the operation name is a prefix of the line.
    let l = l.trim_ascii_start();
    let mut words = l
        .split(|&c| c == b' ' || c == b'\t')
        .filter(|w| !w.is_empty());
    let name = words.next().unwrap_or_default();
    let is = |op: &str| name.eq_ignore_ascii_case(op.as_bytes());
    if is("MSG") || is("HMSG") {
        let args: Vec<&[u8]> = words.collect();
        let (subject, start, len) = msg_args(&args, is("HMSG"))?;
        if buf.len() < n + len + 2 {
            return Ok(None);
        }
        if &buf[n + len..n + len + 2] != b"\r\n" {
            bail!("NATS message body not followed by CRLF");
        }
        return Ok(Some((
            Op::Msg {
                subject,
                payload: &buf[n + start..n + len],
            },
            n + len + 2,
        )));
    }
    let op = if is("PING") {
        Op::Ping
    } else if is("PONG") {
        Op::Pong
    } else if is("INFO") {
        Op::Info
    } else if is("+OK") {
        Op::Ok
    } else if is("-ERR") {
        Op::Err(l[name.len()..].trim_ascii())
    } else {
        bail!(
            "unknown NATS operation {:?}",
            String::from_utf8_lossy(&l[..l.len().min(64)])
        )
    };
    Ok(Some((op, n)))
}

/// Wait for the `PONG` that answers our `PING`, skipping `INFO` and `+OK` and answering
/// the server's own `PING`s; fail on `-ERR` or a message (nothing may arrive before the
/// set-up it belongs to is confirmed).
fn await_pong(conn: &mut std::net::TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<()> {
    // Each call re-parses the buffer from its start (read_until consumes only on success),
    // so the count of the server's PINGs is recomputed, never carried over.
    let pings = read_until(conn, buf, deadline, |b| {
        let (mut at, mut pings) = (0, 0);
        loop {
            match parse_op(&b[at..])? {
                None => return Ok(None),
                Some((Op::Pong, n)) => return Ok(Some((pings, at + n))),
                Some((Op::Ping, n)) => {
                    pings += 1;
                    at += n;
                }
                Some((Op::Info | Op::Ok, n)) => at += n,
                Some((Op::Err(e), _)) => {
                    bail!("NATS server said -ERR {}", String::from_utf8_lossy(e))
                }
                Some((Op::Msg { subject, .. }, _)) => bail!(
                    "a NATS message on {:?} arrived before the set-up was confirmed",
                    String::from_utf8_lossy(subject)
                ),
            }
        }
    })?;
    for _ in 0..pings {
        write_all(conn, b"PONG\r\n")?;
    }
    Ok(())
}

/// A subject the loadgen can put on a control line (NATS subjects have no whitespace).
fn check_subject(s: &str) -> Result<()> {
    if s.is_empty() || s.bytes().any(|c| c.is_ascii_whitespace()) {
        bail!("{s:?} is not a NATS subject (empty, or with whitespace)");
    }
    Ok(())
}

impl Adapter for Nats {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn connect(
        &self,
        addr: SocketAddr,
        peer_id: Option<&str>,
        opts: &ConnectOptions,
    ) -> Result<Connected> {
        let deadline = Instant::now() + opts.timeout;
        let mut stream = tcp_connect(addr, opts)?;
        let mut buf = Vec::new();
        // The server speaks first.
        read_until(&mut stream, &mut buf, deadline, |b| match parse_op(b)? {
            Some((Op::Info, n)) => Ok(Some(((), n))),
            Some((other, _)) => bail!("expected INFO from a NATS server, got {other:?}"),
            None => Ok(None),
        })?;
        // Not verbose (no +OK per PUB), not pedantic, and no echo: a publisher never gets
        // its own messages back (none subscribes, but a NATS server would otherwise send
        // them). The name shows in the server's monitoring.
        let connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "echo": false,
            "tls_required": false,
            "lang": "rust",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
            "name": peer_id.unwrap_or("peerd-loadgen"),
        });
        write_all(
            &mut stream,
            format!("CONNECT {connect}\r\nPING\r\n").as_bytes(),
        )?;
        // The PONG proves the CONNECT was accepted (a refusal is -ERR, then a close).
        await_pong(&mut stream, &mut buf, deadline)?;
        Ok(Connected::plain(stream, None, buf))
    }

    fn subscribe(&self, conn: &mut Connected, topic: &str) -> Result<()> {
        check_subject(topic)?;
        let sid = self.next_sid.fetch_add(1, Ordering::Relaxed) + 1;
        write_all(
            &mut conn.stream,
            format!("SUB {topic} {sid}\r\nPING\r\n").as_bytes(),
        )?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = std::mem::take(&mut conn.leftover);
        await_pong(&mut conn.stream, &mut buf, deadline)?;
        conn.leftover = buf;
        Ok(())
    }

    fn encode_request(&self, _: &mut BytesMut, _: u64, _: Option<&str>, _: &[u8]) -> Result<()> {
        bail!("the nats adapter does fan-out only (no request/reply)")
    }

    fn encode_publish(&self, out: &mut BytesMut, topic: &str, payload: &[u8]) -> Result<()> {
        // BytesMut's fmt::Write: the header straight into the write buffer.
        write!(out, "PUB {topic} {}\r\n", payload.len())?;
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    fn encode_pong(&self, out: &mut BytesMut, _: u64) -> Result<()> {
        out.extend_from_slice(b"PONG\r\n");
        Ok(())
    }

    fn parse(&self, buf: &[u8], on: &mut dyn FnMut(Incoming<'_>)) -> Result<usize> {
        let mut used = 0;
        while let Some((op, n)) = parse_op(&buf[used..])? {
            used += n;
            match op {
                Op::Msg { payload, .. } => on(Incoming::Delivery(payload)),
                Op::Ping => on(Incoming::Ping(0)),
                Op::Err(e) => on(Incoming::Error {
                    ends_request: false,
                    message: format!("NATS -ERR {}", String::from_utf8_lossy(e)),
                }),
                Op::Info | Op::Pong | Op::Ok => on(Incoming::Ignored),
            }
        }
        Ok(used)
    }

    fn supports(&self, scenario: &str) -> bool {
        matches!(scenario, "fanout" | "connect" | "idle")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(buf: &[u8]) -> (Vec<String>, usize) {
        let mut seen = Vec::new();
        let used = Nats::default()
            .parse(buf, &mut |i| seen.push(format!("{i:?}")))
            .unwrap();
        (seen, used)
    }

    #[test]
    fn publish_and_pong_encode() {
        let mut out = BytesMut::new();
        let n = Nats::default();
        n.encode_publish(&mut out, "lg1-topic0", b"ab\r\ncd")
            .unwrap();
        n.encode_pong(&mut out, 7).unwrap();
        assert_eq!(&out[..], b"PUB lg1-topic0 6\r\nab\r\ncd\r\nPONG\r\n");
        assert!(n.encode_request(&mut out, 0, None, b"x").is_err());
    }

    #[test]
    fn messages_pings_and_errors_parse() {
        let input: &[u8] = b"INFO {\"server_id\":\"x\"}\r\nMSG t 1 5\r\nhe\r\no\r\n\
            msg t 1 _INBOX.r 2\r\nhi\r\nHMSG t 1 12 14\r\nNATS/1.0\r\n\r\nyo\r\n\
            PING\r\nPONG\r\n+OK\r\n-ERR 'Slow Consumer'\r\nMSG t 1 9\r\npart";
        let (seen, used) = parse_all(input);
        // The last message is incomplete and left for the next read.
        assert_eq!(used, input.len() - b"MSG t 1 9\r\npart".len());
        assert_eq!(
            seen,
            [
                "Ignored",
                // The payload may hold CRLF: its length, not a delimiter, ends it.
                "Delivery([104, 101, 13, 10, 111])",
                "Delivery([104, 105])",
                "Delivery([121, 111])",
                "Ping(0)",
                "Ignored",
                "Ignored",
                "Error { ends_request: false, message: \"NATS -ERR 'Slow Consumer'\" }",
            ]
        );
    }

    #[test]
    fn incomplete_and_malformed_input() {
        for partial in [
            &b"MS"[..],
            b"MSG t 1 5\r\nhel",
            b"MSG t 1 5\r\nhello\r",
            b"PIN",
        ] {
            assert_eq!(parse_op(partial).unwrap(), None, "{partial:?}");
        }
        assert!(parse_op(b"MSG t 1\r\n").is_err());
        assert!(parse_op(b"MSG t 1 2\r\nhiXX").is_err());
        assert!(parse_op(b"HMSG t 1 9 4\r\n").is_err());
        assert!(parse_op(b"WHAT\r\n").is_err());
        assert!(parse_op(&vec![b'x'; MAX_LINE + 1]).is_err());
    }

    #[test]
    fn subjects_are_checked() {
        assert!(check_subject("lg1n2-topic0").is_ok());
        assert!(check_subject("a b").is_err());
        assert!(check_subject("").is_err());
    }

    /// The set-up against a scripted server on loopback: INFO first, CONNECT + PING
    /// answered by PONG; a server PING during the SUB's round trip is answered; an -ERR
    /// fails the set-up.
    #[test]
    fn setup_round_trips() {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"INFO {\"max_payload\":1048576}\r\n").unwrap();
            let mut lines = Vec::new();
            let mut next = |r: &mut BufReader<std::net::TcpStream>| {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                lines.push(line.trim_end().to_string());
            };
            next(&mut r); // CONNECT
            next(&mut r); // PING
            w.write_all(b"PONG\r\n").unwrap();
            next(&mut r); // SUB
            next(&mut r); // PING
            w.write_all(b"PING\r\nPONG\r\n").unwrap();
            next(&mut r); // our PONG to the server's PING
            next(&mut r); // the second SUB: refused
            w.write_all(b"-ERR 'Unknown Protocol Operation'\r\n")
                .unwrap();
            // Read all the client sent before closing, so that the close is a FIN and not
            // a reset that could overtake the -ERR.
            next(&mut r); // PING
            lines
        });
        let n = Nats::default();
        let mut c = n
            .connect(addr, Some("lg-s0"), &ConnectOptions::default())
            .unwrap();
        n.subscribe(&mut c, "lg-topic0").unwrap();
        let err = n.subscribe(&mut c, "lg-topic1").unwrap_err();
        assert!(format!("{err:#}").contains("Unknown Protocol"), "{err:#}");
        let lines = server.join().unwrap();
        assert!(lines[0].starts_with("CONNECT {"), "{lines:?}");
        let json: serde_json::Value = serde_json::from_str(&lines[0][8..]).unwrap();
        assert_eq!(json["verbose"], false);
        assert_eq!(json["pedantic"], false);
        assert_eq!(json["echo"], false);
        assert_eq!(json["name"], "lg-s0");
        assert_eq!(lines[1], "PING");
        assert_eq!(lines[2], "SUB lg-topic0 1");
        assert_eq!(lines[3], "PING");
        assert_eq!(lines[4], "PONG");
        assert_eq!(lines[5], "SUB lg-topic1 2");
    }
}
