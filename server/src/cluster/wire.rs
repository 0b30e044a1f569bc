//! The envelope of every message peerd nodes send each other over NATS: pure functions, no
//! IO, and a decoder that returns [`Malformed`] for any input it cannot read, never panics
//! (the bytes come from the network; `fuzz_targets/cluster_envelope.rs` runs it).
//!
//! Layout, little-endian: `u8 version (1) | u8 kind | u64 origin epoch |` the kind's fields
//! `|` a body. Strings are `u16 length + UTF-8`. The body of the kinds that carry a peer's
//! frame (topic, broadcast, deliver, answer) is the frame exactly as a shard encoded it,
//! WebSocket header in front ([`crate::frame::Frame::websocket`]): the receiving node
//! queues a slice of the NATS payload to its peers, without decoding or copying it, after
//! checking that the two headers agree with the length ([`frame`]).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use peerd_codec::header::Header;
use peerd_ws::frame::{self as wsframe, Opcode};

use crate::frame::Frame;

const VERSION: u8 = 1;

/// The input is not a message of this version: dropped and counted by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cluster message: {0}")]
pub(crate) struct Malformed(pub &'static str);

/// Where a peer lives on its own node: its shard there and its session there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct At {
    pub shard: u8,
    pub session: u64,
}

/// One change of a node's own state, as it replicates it to the others.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    PeerUp {
        peer: Arc<str>,
        at: At,
    },
    PeerDown {
        peer: Arc<str>,
        at: At,
    },
    Join {
        topic: Arc<str>,
        peer: Arc<str>,
        at: At,
    },
    Leave {
        topic: Arc<str>,
        peer: Arc<str>,
        at: At,
    },
}

/// A decoded message.
#[derive(Debug)]
pub(crate) enum Msg {
    /// A frame for the members of `topic` on the receiving node; `to`: only that member,
    /// on the node incarnation named (every node with members receives the message:
    /// another node must not take the member's place for one of its own sessions).
    Topic {
        topic: Arc<str>,
        to: Option<(u64, At)>,
        frame: Frame,
    },
    /// A frame for every peer of the receiving node.
    Broadcast { frame: Frame },
    /// A frame for one peer of the receiving node.
    Deliver { to: At, frame: Frame },
    /// A peer-to-peer call to a peer of the receiving node.
    Call {
        caller: At,
        id: u64,
        callee: At,
        timeout_ms: u32,
        caller_peer: Arc<str>,
        method: Box<str>,
        params: Bytes,
    },
    /// The outcome of a call, for the caller `to` (its request `id`).
    Answer { to: At, id: u64, frame: Frame },
    /// Close the peer `at` with `code` (its id was taken over elsewhere).
    Kick { at: At, code: u16 },
    /// The sender's state changes numbered `seq - ops.len() + 1 ..= seq`.
    Delta { seq: u64, ops: Vec<Op> },
    /// The sender is alive; `seq`: the last change it numbered.
    Heartbeat {
        seq: u64,
        interval_ms: u32,
        leaving: bool,
        node_id: Box<str>,
    },
    /// Send me your whole state (to the epoch in the envelope).
    SnapshotReq,
    /// Part of a node's whole state as of change `seq`; `last`: the final part.
    Snapshot { seq: u64, last: bool, ops: Vec<Op> },
    /// The sender declared the receiver's incarnation `dead` gone (it was silent for too
    /// long: paused, or cut off): it must rejoin under a new one.
    Rejoin { dead: u64 },
}

const TOPIC: u8 = 1;
const BROADCAST: u8 = 2;
const DELIVER: u8 = 3;
const CALL: u8 = 4;
const ANSWER: u8 = 5;
const KICK: u8 = 6;
const DELTA: u8 = 7;
const HEARTBEAT: u8 = 8;
const SNAPSHOT_REQ: u8 = 9;
const SNAPSHOT: u8 = 10;
const REJOIN: u8 = 11;

/// Builds one message.
pub(crate) struct Writer(BytesMut);

impl Writer {
    fn new(kind: u8, origin: u64, room: usize) -> Writer {
        let mut b = BytesMut::with_capacity(10 + room);
        b.put_u8(VERSION);
        b.put_u8(kind);
        b.put_u64_le(origin);
        Writer(b)
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.put_u8(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.put_u16_le(v);
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.put_u32_le(v);
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.put_u64_le(v);
        self
    }
    fn at(self, at: At) -> Self {
        self.u8(at.shard).u64(at.session)
    }
    /// Strings longer than 64 KiB are cut (peer ids, topics and method names are far
    /// shorter: the codec's limits).
    fn str(mut self, s: &str) -> Self {
        let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        self.0.put_u16_le(b.len() as u16);
        self.0.put_slice(b);
        self
    }
    fn body(mut self, b: &[u8]) -> Bytes {
        self.0.put_slice(b);
        self.0.freeze()
    }
    fn ops(mut self, ops: &[Op]) -> Bytes {
        self.0.put_u32_le(ops.len() as u32);
        let mut w = self;
        for op in ops {
            w = match op {
                Op::PeerUp { peer, at } => w.u8(1).at(*at).str(peer),
                Op::PeerDown { peer, at } => w.u8(2).at(*at).str(peer),
                Op::Join { topic, peer, at } => w.u8(3).at(*at).str(peer).str(topic),
                Op::Leave { topic, peer, at } => w.u8(4).at(*at).str(peer).str(topic),
            };
        }
        w.0.freeze()
    }
}

/// Bytes one op takes on the wire (to cut snapshots below NATS's max_payload).
pub(crate) fn op_len(op: &Op) -> usize {
    match op {
        Op::PeerUp { peer, .. } | Op::PeerDown { peer, .. } => 12 + peer.len(),
        Op::Join { topic, peer, .. } | Op::Leave { topic, peer, .. } => {
            14 + peer.len() + topic.len()
        }
    }
}

pub(crate) fn topic(origin: u64, topic: &str, to: Option<(u64, At)>, frame: &Frame) -> Bytes {
    let ws = frame.websocket();
    let w = Writer::new(TOPIC, origin, 20 + topic.len() + ws.len()).str(topic);
    let w = match to {
        None => w.u8(0),
        Some((node, at)) => w.u8(1).u64(node).at(at),
    };
    w.body(&ws)
}

pub(crate) fn broadcast(origin: u64, frame: &Frame) -> Bytes {
    let ws = frame.websocket();
    Writer::new(BROADCAST, origin, ws.len()).body(&ws)
}

pub(crate) fn deliver(origin: u64, to: At, frame: &Frame) -> Bytes {
    let ws = frame.websocket();
    Writer::new(DELIVER, origin, 9 + ws.len()).at(to).body(&ws)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn call(
    origin: u64,
    caller: At,
    id: u64,
    callee: At,
    timeout_ms: u32,
    caller_peer: &str,
    method: &str,
    params: &[u8],
) -> Bytes {
    let room = 40 + caller_peer.len() + method.len() + params.len();
    Writer::new(CALL, origin, room)
        .at(caller)
        .u64(id)
        .at(callee)
        .u32(timeout_ms)
        .str(caller_peer)
        .str(method)
        .u32(params.len() as u32)
        .body(params)
}

pub(crate) fn answer(origin: u64, to: At, id: u64, frame: &Frame) -> Bytes {
    let ws = frame.websocket();
    Writer::new(ANSWER, origin, 17 + ws.len())
        .at(to)
        .u64(id)
        .body(&ws)
}

pub(crate) fn kick(origin: u64, at: At, code: u16) -> Bytes {
    Writer::new(KICK, origin, 11).at(at).u16(code).body(&[])
}

pub(crate) fn delta(origin: u64, seq: u64, ops: &[Op]) -> Bytes {
    let room = 12 + ops.iter().map(op_len).sum::<usize>();
    Writer::new(DELTA, origin, room).u64(seq).ops(ops)
}

pub(crate) fn heartbeat(
    origin: u64,
    seq: u64,
    interval_ms: u32,
    leaving: bool,
    node_id: &str,
) -> Bytes {
    Writer::new(HEARTBEAT, origin, 15 + node_id.len())
        .u64(seq)
        .u32(interval_ms)
        .u8(leaving as u8)
        .str(node_id)
        .body(&[])
}

pub(crate) fn snapshot_req(origin: u64) -> Bytes {
    Writer::new(SNAPSHOT_REQ, origin, 0).body(&[])
}

pub(crate) fn snapshot(origin: u64, seq: u64, last: bool, ops: &[Op]) -> Bytes {
    let room = 13 + ops.iter().map(op_len).sum::<usize>();
    Writer::new(SNAPSHOT, origin, room)
        .u64(seq)
        .u8(last as u8)
        .ops(ops)
}

pub(crate) fn rejoin(origin: u64, dead: u64) -> Bytes {
    Writer::new(REJOIN, origin, 8).u64(dead).body(&[])
}

/// Reads one message; every read checks the length left.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Malformed> {
        let end = self.pos.checked_add(n).ok_or(Malformed("length"))?;
        let s = self.buf.get(self.pos..end).ok_or(Malformed("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn at(&mut self) -> Result<At, Malformed> {
        Ok(At {
            shard: self.u8()?,
            session: self.u64()?,
        })
    }
    fn str(&mut self) -> Result<&str, Malformed> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| Malformed("string not UTF-8"))
    }
    fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        b
    }
    fn frame(&mut self) -> Result<Frame, Malformed> {
        frame(self.rest())
    }
    fn ops(&mut self) -> Result<Vec<Op>, Malformed> {
        let n = self.u32()? as usize;
        // Each op takes at least 12 bytes: a count larger than the input allows is a lie,
        // and must not size an allocation.
        if n > (self.buf.len() - self.pos) / 12 {
            return Err(Malformed("op count"));
        }
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = self.u8()?;
            let at = self.at()?;
            let peer: Arc<str> = self.str()?.into();
            ops.push(match kind {
                1 => Op::PeerUp { peer, at },
                2 => Op::PeerDown { peer, at },
                3 => Op::Join {
                    topic: self.str()?.into(),
                    peer,
                    at,
                },
                4 => Op::Leave {
                    topic: self.str()?.into(),
                    peer,
                    at,
                },
                _ => return Err(Malformed("op kind")),
            });
        }
        Ok(ops)
    }
}

/// A peer's frame as another node encoded it: the WebSocket header of a binary message in
/// front of a peerd frame, each length agreeing with the bytes there are.
pub(crate) fn frame(b: Bytes) -> Result<Frame, Malformed> {
    if b.len() < 2 {
        return Err(Malformed("frame truncated"));
    }
    let n = match b[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let Some(len) = b.len().checked_sub(n) else {
        return Err(Malformed("frame truncated"));
    };
    let (head, hn) = wsframe::header(Opcode::Binary, true, len);
    if hn != n || b[..n] != head[..n] {
        return Err(Malformed("frame's WebSocket header"));
    }
    match Header::parse(&b[n..], u32::MAX) {
        Ok(Some(h)) if h.frame_len() == len => Ok(Frame::from_framed(b)),
        _ => Err(Malformed("frame's peerd header")),
    }
}

/// Decode a message: its origin epoch and what it says.
pub(crate) fn decode(buf: &Bytes) -> Result<(u64, Msg), Malformed> {
    let mut r = Reader { buf, pos: 0 };
    if r.u8()? != VERSION {
        return Err(Malformed("version"));
    }
    let kind = r.u8()?;
    let origin = r.u64()?;
    let msg = match kind {
        TOPIC => {
            let topic = r.str()?.into();
            let to = match r.u8()? {
                0 => None,
                _ => Some((r.u64()?, r.at()?)),
            };
            Msg::Topic {
                topic,
                to,
                frame: r.frame()?,
            }
        }
        BROADCAST => Msg::Broadcast { frame: r.frame()? },
        DELIVER => Msg::Deliver {
            to: r.at()?,
            frame: r.frame()?,
        },
        CALL => Msg::Call {
            caller: r.at()?,
            id: r.u64()?,
            callee: r.at()?,
            timeout_ms: r.u32()?,
            caller_peer: r.str()?.into(),
            method: r.str()?.into(),
            params: {
                let n = r.u32()? as usize;
                r.take(n)?;
                r.buf.slice(r.pos - n..r.pos)
            },
        },
        ANSWER => Msg::Answer {
            to: r.at()?,
            id: r.u64()?,
            frame: r.frame()?,
        },
        KICK => Msg::Kick {
            at: r.at()?,
            code: r.u16()?,
        },
        DELTA => Msg::Delta {
            seq: r.u64()?,
            ops: r.ops()?,
        },
        HEARTBEAT => Msg::Heartbeat {
            seq: r.u64()?,
            interval_ms: r.u32()?,
            leaving: r.u8()? != 0,
            node_id: r.str()?.into(),
        },
        SNAPSHOT_REQ => Msg::SnapshotReq,
        SNAPSHOT => Msg::Snapshot {
            seq: r.u64()?,
            last: r.u8()? != 0,
            ops: r.ops()?,
        },
        REJOIN => Msg::Rejoin { dead: r.u64()? },
        _ => return Err(Malformed("kind")),
    };
    if r.pos != buf.len() {
        return Err(Malformed("trailing bytes"));
    }
    Ok((origin, msg))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn a_frame(n: usize) -> Frame {
        Frame::encode(&peerd_codec::Event {
            name: Cow::Borrowed("e"),
            peer: None,
            payload: Cow::Owned(vec![7; n]),
        })
        .unwrap()
    }

    fn at(s: u64) -> At {
        At {
            shard: 1,
            session: s,
        }
    }

    fn every_message() -> Vec<Bytes> {
        let f = a_frame(10);
        let big = a_frame(70_000);
        let ops = vec![
            Op::PeerUp {
                peer: "alice".into(),
                at: at(1),
            },
            Op::Join {
                topic: "t.*>".into(),
                peer: "alice".into(),
                at: at(1),
            },
            Op::Leave {
                topic: "t".into(),
                peer: "bob".into(),
                at: at(2),
            },
            Op::PeerDown {
                peer: "bob".into(),
                at: at(2),
            },
        ];
        vec![
            topic(9, "room", None, &f),
            topic(9, "room", Some((0xabc, at(3))), &big),
            broadcast(9, &f),
            deliver(9, at(4), &f),
            call(9, at(5), 77, at(6), 1000, "bob", "m", b"params"),
            answer(9, at(5), 77, &f),
            kick(9, at(6), 4003),
            delta(9, 41, &ops),
            heartbeat(9, 41, 200, false, "node-a"),
            snapshot_req(9),
            snapshot(9, 41, true, &ops),
            rejoin(9, 0xdead),
        ]
    }

    #[test]
    fn round_trips() {
        for m in every_message() {
            let (origin, msg) = decode(&m).unwrap_or_else(|e| panic!("{e} in {m:?}"));
            assert_eq!(origin, 9);
            match msg {
                Msg::Topic { topic, to, frame } => {
                    assert_eq!(&*topic, "room");
                    if let Some(to) = to {
                        assert_eq!(to, (0xabc, at(3)));
                        assert_eq!(frame.websocket(), a_frame(70_000).websocket());
                    }
                }
                Msg::Call {
                    caller,
                    id,
                    callee,
                    timeout_ms,
                    caller_peer,
                    method,
                    params,
                } => {
                    assert_eq!((caller, id, callee, timeout_ms), (at(5), 77, at(6), 1000));
                    assert_eq!((&*caller_peer, &*method), ("bob", "m"));
                    assert_eq!(&params[..], b"params");
                }
                Msg::Delta { seq, ops } | Msg::Snapshot { seq, ops, .. } => {
                    assert_eq!(seq, 41);
                    assert_eq!(ops.len(), 4);
                    assert_eq!(ops.iter().map(op_len).sum::<usize>() + 4, {
                        let whole = delta(9, 41, &ops);
                        whole.len() - 18
                    });
                }
                Msg::Heartbeat { node_id, .. } => assert_eq!(&*node_id, "node-a"),
                Msg::Kick { at: a, code } => assert_eq!((a, code), (at(6), 4003)),
                Msg::Rejoin { dead } => assert_eq!(dead, 0xdead),
                _ => {}
            }
        }
    }

    #[test]
    fn every_truncation_and_a_byte_more_is_refused() {
        for m in every_message() {
            for n in 0..m.len() {
                assert!(decode(&m.slice(..n)).is_err(), "{n} of {m:?}");
            }
            let mut longer = m.to_vec();
            longer.push(0);
            assert!(decode(&Bytes::from(longer)).is_err());
        }
    }

    #[test]
    fn a_frame_whose_headers_disagree_is_refused() {
        let mut m = deliver(9, at(4), &a_frame(10)).to_vec();
        let body = m.len() - a_frame(10).websocket().len();
        m[body + 2] ^= 1; // the peerd header's length
        assert!(decode(&Bytes::from(m)).is_err());
        let lying_count = {
            let mut w = Writer::new(DELTA, 1, 0).u64(1).0;
            w.put_u32_le(u32::MAX);
            w.freeze()
        };
        assert_eq!(decode(&lying_count).unwrap_err(), Malformed("op count"));
    }
}
