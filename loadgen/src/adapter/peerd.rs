//! peerd's own protocol, spoken through peerd-codec directly (not the client crate: the
//! loadgen keeps its hot path to "encode into the write buffer, split frames out of the read
//! buffer").

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use peerd_codec::handshake::{hello_frame, ClientHandshake, Welcomed};
use peerd_codec::{
    encode, split_frame, Broadcast, Code, Event, Frame, Hello, Join, Message, Pong, Publish,
    RpcRequest, RpcResponse, PROTOCOL_VERSION,
};
use rkyv::Serialize;

use super::link::{self, Transport};
use super::{Adapter, ConnectOptions, Connected, Incoming};

/// The WebSocket subprotocol of a peerd endpoint.
pub const WS_SUBPROTOCOL: &str = "peerd.v1";

/// Largest frame body the loadgen accepts from the server.
const MAX_BODY: u32 = 64 << 20;

/// The peerd adapter.
#[derive(Debug, Clone)]
pub struct Peerd {
    /// RPC method answered by the server with its params (built-in `echo`).
    pub echo_method: String,
    /// Method name used for peer-to-peer calls (the callee answers any method).
    pub p2p_method: String,
    /// Event name of direct messages and broadcasts.
    pub event_name: String,
    /// How connections are carried: TCP, TLS, WebSocket (one peerd frame per binary
    /// message, subprotocol `peerd.v1`) or WebSocket in TLS.
    pub transport: Transport,
}

impl Default for Peerd {
    fn default() -> Self {
        Peerd::over(Transport::default())
    }
}

impl Peerd {
    /// The peerd adapter over `transport`.
    pub fn over(transport: Transport) -> Peerd {
        Peerd {
            echo_method: "echo".into(),
            p2p_method: "lg.echo".into(),
            event_name: "lg".into(),
            transport,
        }
    }
}

fn put<M>(out: &mut BytesMut, msg: &M) -> Result<()>
where
    M: Message + for<'a> Serialize<peerd_codec::codec::Serializer<'a>>,
{
    encode(msg, out, u32::MAX).map_err(|e| anyhow!("encoding {:?}: {e}", M::KIND))
}

/// Connect over plain TCP and handshake, declaring `peer_id` and presenting `resume_token`
/// (to take over the session that token belongs to); returns the connection and the
/// Welcome.
pub fn handshake(
    addr: SocketAddr,
    peer_id: Option<&str>,
    resume_token: Option<&[u8]>,
    opts: &ConnectOptions,
) -> Result<(Connected, Welcomed)> {
    handshake_over(addr, &Transport::default(), peer_id, resume_token, opts)
}

/// [`handshake`] over any transport.
pub fn handshake_over(
    addr: SocketAddr,
    transport: &Transport,
    peer_id: Option<&str>,
    resume_token: Option<&[u8]>,
    opts: &ConnectOptions,
) -> Result<(Connected, Welcomed)> {
    let deadline = Instant::now() + opts.timeout;
    let mut c = link::open(addr, transport, opts)?;
    let hello = hello_frame(&Hello {
        version: PROTOCOL_VERSION,
        peer_id: peer_id.map(Cow::Borrowed),
        credentials: None,
        resume_token: resume_token.map(Cow::Borrowed),
        client: Cow::Borrowed("peerd-loadgen"),
    })
    .map_err(|e| anyhow!("encoding Hello: {e}"))?;
    c.send(&hello)?;
    // The codec's handshake decides (Welcome, or Reject/Close with its code and reason);
    // a fresh one per read fits read_messages, which passes every unparsed byte each time
    // over TCP (the answer is a few hundred bytes) and the whole message over a WebSocket.
    let welcomed = c
        .read_messages(deadline, |b| {
            let mut hs = ClientHandshake::new(MAX_BODY);
            Ok(match hs.receive(b)? {
                Some(w) => (b.len() - hs.into_framer().buffered(), Some(w)),
                None => (0, None),
            })
        })
        .with_context(|| format!("peerd handshake with {addr}"))?;
    c.peer_id = Some(welcomed.peer_id.clone());
    Ok((c, welcomed))
}

impl Adapter for Peerd {
    fn name(&self) -> &'static str {
        match self.transport.scheme() {
            "tls" => "peerd-tls",
            "ws" => "peerd-ws",
            "wss" => "peerd-wss",
            _ => "peerd",
        }
    }

    fn connect(
        &self,
        addr: SocketAddr,
        peer_id: Option<&str>,
        opts: &ConnectOptions,
    ) -> Result<Connected> {
        let (c, _) = handshake_over(addr, &self.transport, peer_id, None, opts)?;
        Ok(c)
    }

    fn subscribe(&self, conn: &mut Connected, topic: &str) -> Result<()> {
        const REQ: u64 = 0x10AD;
        let mut out = BytesMut::new();
        put(
            &mut out,
            &Join {
                req: REQ,
                topic: Cow::Borrowed(topic),
            },
        )?;
        conn.send(&out)?;
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        conn.read_messages(deadline, |b| {
            let mut used = 0;
            while let Some((raw, n)) = split_frame(&b[used..], MAX_BODY)? {
                used += n;
                if let Frame::Status(s) = raw.decode()? {
                    if s.req.to_native() == REQ {
                        let code = s.code.to_native();
                        if code != 0 {
                            bail!(
                                "joining {topic:?}: {} ({})",
                                Code::describe(code),
                                s.message.as_str()
                            );
                        }
                        return Ok((used, Some(())));
                    }
                }
            }
            Ok((used, None))
        })
    }

    fn encode_request(
        &self,
        out: &mut BytesMut,
        id: u64,
        target: Option<&str>,
        payload: &[u8],
    ) -> Result<()> {
        let method = if target.is_some() {
            &self.p2p_method
        } else {
            &self.echo_method
        };
        put(
            out,
            &RpcRequest {
                id,
                method: Cow::Borrowed(method),
                peer: target.map(Cow::Borrowed),
                timeout_ms: 0,
                params: Cow::Borrowed(payload),
            },
        )
    }

    fn encode_response(&self, out: &mut BytesMut, id: u64, payload: &[u8]) -> Result<()> {
        put(
            out,
            &RpcResponse {
                id,
                result: Cow::Borrowed(payload),
            },
        )
    }

    fn encode_publish(&self, out: &mut BytesMut, topic: &str, payload: &[u8]) -> Result<()> {
        put(
            out,
            &Publish {
                req: 0,
                topic: Cow::Borrowed(topic),
                echo: false,
                payload: Cow::Borrowed(payload),
            },
        )
    }

    fn encode_direct(&self, out: &mut BytesMut, target: &str, payload: &[u8]) -> Result<()> {
        put(
            out,
            &Event {
                name: Cow::Borrowed(&self.event_name),
                peer: Some(Cow::Borrowed(target)),
                payload: Cow::Borrowed(payload),
            },
        )
    }

    fn encode_broadcast(&self, out: &mut BytesMut, payload: &[u8]) -> Result<()> {
        put(
            out,
            &Broadcast {
                name: Cow::Borrowed(&self.event_name),
                peer: None,
                payload: Cow::Borrowed(payload),
            },
        )
    }

    fn encode_pong(&self, out: &mut BytesMut, nonce: u64) -> Result<()> {
        put(out, &Pong { nonce })
    }

    fn parse(&self, buf: &[u8], on: &mut dyn FnMut(Incoming<'_>)) -> Result<usize> {
        let mut used = 0;
        while let Some((raw, n)) = split_frame(&buf[used..], MAX_BODY)? {
            let inc = match raw.decode()? {
                Frame::RpcResponse(r) => Incoming::Response(r.result.as_slice()),
                Frame::RpcRequest(r) => Incoming::Request {
                    id: r.id.to_native(),
                    payload: r.params.as_slice(),
                },
                Frame::TopicMessage(m) => Incoming::Delivery(m.payload.as_slice()),
                Frame::Event(e) => Incoming::Delivery(e.payload.as_slice()),
                Frame::Broadcast(b) => Incoming::Delivery(b.payload.as_slice()),
                Frame::Ping(p) => Incoming::Ping(p.nonce.to_native()),
                Frame::RpcError(e) => Incoming::Error {
                    ends_request: true,
                    message: format!(
                        "rpc error {} ({})",
                        Code::describe(e.code.to_native()),
                        e.message.as_str()
                    ),
                },
                Frame::Status(s) if s.code.to_native() != 0 => Incoming::Error {
                    ends_request: false,
                    message: format!(
                        "status {} ({})",
                        Code::describe(s.code.to_native()),
                        s.message.as_str()
                    ),
                },
                Frame::Close(c) => Incoming::Closed(format!(
                    "{} ({})",
                    Code::describe(c.code.to_native()),
                    c.reason.as_str()
                )),
                _ => Incoming::Ignored,
            };
            on(inc);
            used += n;
        }
        Ok(used)
    }

    fn supports(&self, scenario: &str) -> bool {
        matches!(
            scenario,
            "rpc" | "p2p" | "fanout" | "direct" | "broadcast" | "connect" | "idle"
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use peerd_codec::{encode_to_bytes, Ping, RpcError, Status, TopicMessage};

    #[test]
    fn parses_what_the_server_sends() {
        let mut b = BytesMut::new();
        b.extend_from_slice(
            &encode_to_bytes(&RpcResponse {
                id: 1,
                result: Cow::Borrowed(b"abc"),
            })
            .unwrap(),
        );
        b.extend_from_slice(
            &encode_to_bytes(&TopicMessage {
                topic: "t".into(),
                from: "p".into(),
                direct: false,
                payload: Cow::Borrowed(b"xyz"),
            })
            .unwrap(),
        );
        b.extend_from_slice(&encode_to_bytes(&Ping { nonce: 9 }).unwrap());
        b.extend_from_slice(
            &encode_to_bytes(&RpcError {
                id: 2,
                code: 1007,
                message: "nope".into(),
            })
            .unwrap(),
        );
        b.extend_from_slice(
            &encode_to_bytes(&Status {
                req: 0,
                code: 0,
                message: "".into(),
            })
            .unwrap(),
        );
        let whole = b.len();
        // Half a frame more: left unconsumed.
        let extra = encode_to_bytes(&Ping { nonce: 1 }).unwrap();
        b.extend_from_slice(&extra[..5]);
        let mut seen = Vec::new();
        let used = Peerd::default()
            .parse(&b, &mut |i| seen.push(format!("{i:?}")))
            .unwrap();
        assert_eq!(used, whole);
        assert_eq!(seen.len(), 5);
        assert!(seen[0].starts_with("Response([97, 98, 99]"));
        assert!(seen[1].starts_with("Delivery([120, 121, 122]"));
        assert_eq!(seen[2], "Ping(9)");
        assert!(seen[3].contains("method_not_found"));
        assert_eq!(seen[4], "Ignored");
    }

    /// A one-connection server: reads the Hello, answers with `reply`, then waits for the
    /// client to hang up.
    fn answer_hello_with(reply: Vec<u8>) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            let id = loop {
                if let Some((h, _)) = peerd_codec::handshake::parse_hello(&buf).unwrap() {
                    break h.peer_id.unwrap_or_default().to_string();
                }
                let n = s.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..n]);
            };
            std::io::Write::write_all(&mut s, &reply).unwrap();
            while s.read(&mut chunk).is_ok_and(|n| n > 0) {}
            id
        });
        (addr, t)
    }

    #[test]
    fn handshake_keeps_what_follows_the_welcome() {
        let mut reply = encode_to_bytes(&peerd_codec::Welcome {
            version: PROTOCOL_VERSION,
            peer_id: "lg-1".into(),
            session_id: 1,
            resume_token: Cow::Borrowed(&[]),
            limits: peerd_codec::Limits {
                max_frame_len: 1 << 20,
                max_topics_per_peer: 1,
                max_members_per_topic: 1,
                max_topic_len: 1,
                outbound_queue_bytes: 1,
            },
            heartbeat_ms: 1000,
        })
        .unwrap()
        .to_vec();
        let ping = encode_to_bytes(&Ping { nonce: 3 }).unwrap();
        reply.extend_from_slice(&ping);
        let (addr, t) = answer_hello_with(reply);
        let c = Peerd::default()
            .connect(addr, Some("lg-1"), &ConnectOptions::default())
            .unwrap();
        assert_eq!(c.peer_id.as_deref(), Some("lg-1"));
        assert_eq!(c.leftover, ping.to_vec());
        drop(c);
        assert_eq!(t.join().unwrap(), "lg-1");
    }

    #[test]
    fn refused_handshake_names_code_and_reason() {
        let reject = encode_to_bytes(&peerd_codec::Reject {
            code: Code::PeerIdTaken.as_u16(),
            reason: "lg-1 is connected".into(),
        })
        .unwrap();
        let (addr, t) = answer_hello_with(reject.to_vec());
        let err = Peerd::default()
            .connect(addr, Some("lg-1"), &ConnectOptions::default())
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("peer_id_taken") && msg.contains("lg-1 is connected"),
            "{msg}"
        );
        assert!(msg.contains(&addr.to_string()), "{msg}");
        t.join().unwrap();
    }

    #[test]
    fn request_round_trips_through_the_codec() {
        let p = Peerd::default();
        let mut out = BytesMut::new();
        p.encode_request(&mut out, 5, Some("bob"), b"hi").unwrap();
        let (raw, n) = split_frame(&out, MAX_BODY).unwrap().unwrap();
        assert_eq!(n, out.len());
        match raw.decode().unwrap() {
            Frame::RpcRequest(r) => {
                assert_eq!(r.id.to_native(), 5);
                assert_eq!(r.method.as_str(), "lg.echo");
                assert_eq!(r.params.as_slice(), b"hi");
            }
            other => panic!("{other:?}"),
        }
    }
}
