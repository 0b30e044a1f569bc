//! Redis over RESP2: `ECHO` for request/response, `SUBSCRIBE`/`PUBLISH` for fan-out.
//! Replies arrive in request order on a connection, and the payload (with its stamps) comes
//! back inside the reply, so no correlation table is needed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, Result};
use bytes::BytesMut;

use super::{read_until, tcp_connect, write_all, Adapter, ConnectOptions, Connected, Incoming};

/// The Redis adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Redis;

fn put_bulk(out: &mut BytesMut, b: &[u8]) {
    let mut head = Vec::with_capacity(16);
    let _ = write!(head, "${}\r\n", b.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn put_command(out: &mut BytesMut, parts: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for p in parts {
        put_bulk(out, p);
    }
}

/// One RESP2 value, borrowed from the buffer.
#[derive(Debug, PartialEq)]
pub enum Resp<'a> {
    /// `+...`
    Simple(&'a [u8]),
    /// `-...`
    Error(&'a [u8]),
    /// `:n`
    Int(i64),
    /// `$n` (None for `$-1`).
    Bulk(Option<&'a [u8]>),
    /// `*n` (None for `*-1`).
    Array(Option<Vec<Resp<'a>>>),
}

fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let i = buf.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[..i], i + 2))
}

fn int(b: &[u8]) -> Result<i64> {
    Ok(std::str::from_utf8(b)?.parse()?)
}

/// Parse one value at the start of `buf`: `Ok(None)` when incomplete.
pub fn parse_resp(buf: &[u8]) -> Result<Option<(Resp<'_>, usize)>> {
    let Some(&t) = buf.first() else {
        return Ok(None);
    };
    let Some((l, n)) = line(&buf[1..]) else {
        return Ok(None);
    };
    let n = n + 1;
    Ok(Some(match t {
        b'+' => (Resp::Simple(l), n),
        b'-' => (Resp::Error(l), n),
        b':' => (Resp::Int(int(l)?), n),
        b'$' => {
            let len = int(l)?;
            if len < 0 {
                (Resp::Bulk(None), n)
            } else {
                let len = len as usize;
                if buf.len() < n + len + 2 {
                    return Ok(None);
                }
                (Resp::Bulk(Some(&buf[n..n + len])), n + len + 2)
            }
        }
        b'*' => {
            let len = int(l)?;
            if len < 0 {
                (Resp::Array(None), n)
            } else {
                let mut items = Vec::with_capacity(len as usize);
                let mut at = n;
                for _ in 0..len {
                    let Some((v, used)) = parse_resp(&buf[at..])? else {
                        return Ok(None);
                    };
                    items.push(v);
                    at += used;
                }
                (Resp::Array(Some(items)), at)
            }
        }
        other => bail!("bad RESP type byte {other:#x}"),
    }))
}

impl Adapter for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn connect(
        &self,
        addr: SocketAddr,
        _: Option<&str>,
        opts: &ConnectOptions,
    ) -> Result<Connected> {
        let deadline = Instant::now() + opts.timeout;
        let mut stream = tcp_connect(addr, opts)?;
        let mut out = BytesMut::new();
        put_command(&mut out, &[b"PING"]);
        write_all(&mut stream, &out)?;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, deadline, |b| match parse_resp(b)? {
            Some((Resp::Simple(s), n)) if s == b"PONG" => Ok(Some(((), n))),
            Some((other, _)) => bail!("expected +PONG, got {other:?}"),
            None => Ok(None),
        })?;
        Ok(Connected::plain(stream, None, buf))
    }

    fn subscribe(&self, conn: &mut Connected, topic: &str) -> Result<()> {
        let mut out = BytesMut::new();
        put_command(&mut out, &[b"SUBSCRIBE", topic.as_bytes()]);
        write_all(&mut conn.stream, &out)?;
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let mut buf = std::mem::take(&mut conn.leftover);
        read_until(
            &mut conn.stream,
            &mut buf,
            deadline,
            |b| match parse_resp(b)? {
                Some((Resp::Array(Some(v)), n))
                    if v.first() == Some(&Resp::Bulk(Some(b"subscribe"))) =>
                {
                    Ok(Some(((), n)))
                }
                Some((other, _)) => bail!("expected a subscribe confirmation, got {other:?}"),
                None => Ok(None),
            },
        )?;
        conn.leftover = buf;
        Ok(())
    }

    fn encode_request(
        &self,
        out: &mut BytesMut,
        _: u64,
        target: Option<&str>,
        payload: &[u8],
    ) -> Result<()> {
        if target.is_some() {
            bail!("redis has no peer-to-peer calls");
        }
        put_command(out, &[b"ECHO", payload]);
        Ok(())
    }

    fn encode_publish(&self, out: &mut BytesMut, topic: &str, payload: &[u8]) -> Result<()> {
        put_command(out, &[b"PUBLISH", topic.as_bytes(), payload]);
        Ok(())
    }

    fn parse(&self, buf: &[u8], on: &mut dyn FnMut(Incoming<'_>)) -> Result<usize> {
        let mut used = 0;
        while let Some((v, n)) = parse_resp(&buf[used..])? {
            used += n;
            match v {
                Resp::Bulk(Some(p)) => on(Incoming::Response(p)),
                Resp::Error(e) => on(Incoming::Error {
                    ends_request: true,
                    message: String::from_utf8_lossy(e).into_owned(),
                }),
                Resp::Array(Some(items)) => match items.as_slice() {
                    [Resp::Bulk(Some(b"message")), _, Resp::Bulk(Some(p))] => {
                        on(Incoming::Delivery(p))
                    }
                    _ => on(Incoming::Ignored),
                },
                _ => on(Incoming::Ignored),
            }
        }
        Ok(used)
    }

    fn supports(&self, scenario: &str) -> bool {
        matches!(scenario, "rpc" | "fanout" | "connect" | "idle")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_commands_and_replies() {
        let mut out = BytesMut::new();
        Redis.encode_request(&mut out, 0, None, b"a\r\nb").unwrap();
        assert_eq!(&out[..], b"*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n");
        let replies = b"$4\r\na\r\nb\r\n:3\r\n*3\r\n$7\r\nmessage\r\n$1\r\nt\r\n$2\r\nhi\r\n-ERR x\r\n$5\r\nab";
        let mut seen = Vec::new();
        let used = Redis
            .parse(replies, &mut |i| seen.push(format!("{i:?}")))
            .unwrap();
        assert_eq!(used, replies.len() - 6);
        assert_eq!(seen.len(), 4);
        assert!(seen[0].starts_with("Response([97, 13, 10, 98]"));
        assert_eq!(seen[1], "Ignored");
        assert!(seen[2].starts_with("Delivery([104, 105]"));
        assert!(seen[3].contains("ERR x"));
    }
}
