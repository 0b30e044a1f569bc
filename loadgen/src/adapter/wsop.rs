//! `wsop`: the tiny wire format of the WebSocket peers peerd is compared with (Bun's
//! built-in pub/sub server and Node's `ws`, `bench-peers/`), always over a WebSocket
//! (`ws://` or `wss://`), one message per binary WebSocket message, no subprotocol.
//!
//! Every message starts with a one-byte op (an ASCII letter); the WebSocket message gives
//! the length, so there is no length field:
//!
//! | op | direction | rest of the message | the server |
//! |---|---|---|---|
//! | `E` | client -> server | payload | sends the same message back (`E` + payload) |
//! | `S` | client -> server | topic (UTF-8) | subscribes the connection, answers `A` + topic |
//! | `P` | client -> server | topic length (1 byte), topic, then a body | sends the body, unchanged, to every subscriber of the topic |
//! | `A` | server -> client | topic | (subscription acknowledged) |
//! | `M` | server -> client | payload | (a delivery: the body of a `P`, which the loadgen makes `M` + payload) |
//!
//! The body of a publish is already the delivery (`M` + payload), so a server forwards a
//! slice of what it received without building anything per publish, as peerd forwards
//! one encoded frame. Payloads carry the loadgen's stamps (intended send time, sequence)
//! like every other adapter's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{BufMut, BytesMut};

use super::link::{self, Transport};
use super::{Adapter, ConnectOptions, Connected, Incoming};

/// Echo request and its answer.
pub const OP_ECHO: u8 = b'E';
/// Subscribe to a topic.
pub const OP_SUBSCRIBE: u8 = b'S';
/// Subscription acknowledged.
pub const OP_ACK: u8 = b'A';
/// Publish to a topic.
pub const OP_PUBLISH: u8 = b'P';
/// A delivery to a subscriber.
pub const OP_MESSAGE: u8 = b'M';

/// The wsop adapter; `transport` must be a WebSocket (`ws` or `wss`).
#[derive(Debug, Clone)]
pub struct WsOp {
    transport: Transport,
}

impl WsOp {
    /// A wsop adapter over `transport` (a WebSocket).
    pub fn new(transport: Transport) -> Result<WsOp> {
        if transport.ws.is_none() {
            bail!("protocol wsop runs over a WebSocket: give a ws:// or wss:// target (or --transport ws)");
        }
        Ok(WsOp { transport })
    }
}

impl Adapter for WsOp {
    fn name(&self) -> &'static str {
        match self.transport.tls {
            None => "wsop",
            Some(_) => "wsop-tls",
        }
    }

    fn connect(
        &self,
        addr: SocketAddr,
        _: Option<&str>,
        opts: &ConnectOptions,
    ) -> Result<Connected> {
        link::open(addr, &self.transport, opts)
    }

    fn subscribe(&self, conn: &mut Connected, topic: &str) -> Result<()> {
        if topic.len() > 255 {
            bail!("wsop topics are at most 255 bytes");
        }
        let mut m = Vec::with_capacity(1 + topic.len());
        m.push(OP_SUBSCRIBE);
        m.extend_from_slice(topic.as_bytes());
        conn.send(&m)?;
        conn.read_messages(Instant::now() + Duration::from_secs(5), |msg| {
            match msg.split_first() {
                Some((&OP_ACK, t)) if t == topic.as_bytes() => Ok((msg.len(), Some(()))),
                _ => Ok((msg.len(), None)),
            }
        })
        .with_context(|| format!("subscribing to {topic:?}"))
    }

    fn encode_request(
        &self,
        out: &mut BytesMut,
        _: u64,
        target: Option<&str>,
        payload: &[u8],
    ) -> Result<()> {
        if target.is_some() {
            bail!("wsop has no peer-to-peer requests");
        }
        out.reserve(1 + payload.len());
        out.put_u8(OP_ECHO);
        out.extend_from_slice(payload);
        Ok(())
    }

    fn encode_publish(&self, out: &mut BytesMut, topic: &str, payload: &[u8]) -> Result<()> {
        if topic.len() > 255 {
            bail!("wsop topics are at most 255 bytes");
        }
        out.reserve(3 + topic.len() + payload.len());
        out.put_u8(OP_PUBLISH);
        out.put_u8(topic.len() as u8);
        out.extend_from_slice(topic.as_bytes());
        out.put_u8(OP_MESSAGE);
        out.extend_from_slice(payload);
        Ok(())
    }

    fn parse(&self, buf: &[u8], on: &mut dyn FnMut(Incoming<'_>)) -> Result<usize> {
        // Always one whole WebSocket message (the link hands messages out one by one).
        match buf.split_first() {
            Some((&OP_ECHO, p)) => on(Incoming::Response(p)),
            Some((&OP_MESSAGE, p)) => on(Incoming::Delivery(p)),
            Some((&OP_ACK, _)) => on(Incoming::Ignored),
            Some((op, _)) => bail!("wsop: unknown op 0x{op:02x} from the server"),
            None => bail!("wsop: empty message from the server"),
        }
        Ok(buf.len())
    }

    fn supports(&self, scenario: &str) -> bool {
        matches!(scenario, "rpc" | "fanout" | "connect" | "idle")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::link::WsSettings;

    fn ws() -> WsOp {
        WsOp::new(Transport {
            tls: None,
            ws: Some(WsSettings {
                host: "h".into(),
                path: "/".into(),
                subprotocol: String::new(),
            }),
        })
        .unwrap()
    }

    #[test]
    fn needs_a_websocket() {
        assert!(WsOp::new(Transport::default()).is_err());
    }

    #[test]
    fn encodes_and_parses() {
        let a = ws();
        let mut out = BytesMut::new();
        a.encode_request(&mut out, 0, None, b"hello").unwrap();
        assert_eq!(&out[..], b"Ehello");
        out.clear();
        a.encode_publish(&mut out, "top", b"xy").unwrap();
        assert_eq!(&out[..], b"P\x03topMxy");
        let mut seen = Vec::new();
        for m in [&b"Eabc"[..], b"Mdef", b"Atop"] {
            let used = a.parse(m, &mut |i| seen.push(format!("{i:?}"))).unwrap();
            assert_eq!(used, m.len());
        }
        assert_eq!(
            seen,
            vec![
                "Response([97, 98, 99])",
                "Delivery([100, 101, 102])",
                "Ignored"
            ]
        );
        assert!(a.parse(b"Z", &mut |_| {}).is_err());
        assert!(a.parse(b"", &mut |_| {}).is_err());
    }
}
