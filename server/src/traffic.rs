//! What one peer sends to others through the server, as the embedder's traffic hooks see
//! it ([`ListenOptions::on_traffic`](crate::ListenOptions::on_traffic) and
//! [`on_traffic_error`](crate::ListenOptions::on_traffic_error)).
//!
//! A [`Traffic`] borrows everything from the frame as it was received: names, the target and
//! the payload are slices of the peer's receive buffer, never copied. It is built only when a
//! traffic hook is registered, on the sender's shard, after the frame was checked (names,
//! permissions, the authorizer) and before the server's own delivery checks (the room
//! joined, the target connected) and anything is delivered. The order, per frame:
//!
//! 1. names valid, rate limit, the credentials' permissions, the authorizer;
//! 2. `on_traffic(from, &traffic)`: `Err(Denied)` answers the sender with its code and
//!    reason, exactly like an authorizer's refusal, and nothing is delivered;
//! 3. the server delivers it, or refuses it for a reason of its own (`not_member`,
//!    `unknown_peer`, `invalid_argument`, `overloaded`, ...): the sender is answered as
//!    without hooks, and `on_traffic_error(from, &traffic, &refusal)` sees the same code and
//!    reason.
//!
//! This module is a leaf: plain data.

use peerd_codec::SignalKind;

/// A frame that carries a payload from one peer to others, as the traffic hooks see it.
///
/// Variants are named as [`Action`](crate::Action)s are (the permission that governs them).
/// Events sent to the server (no target) are not traffic: the server's own listeners get
/// them. Answers to calls (RpcResponse, RpcError) are not traffic either: a callee may
/// always answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Traffic<'a> {
    /// A WebRTC signal in a room (Signal frame): an offer to every other member (`to`
    /// None), or an offer, answer, ICE candidate or bye to one member.
    Signal {
        /// The room (a topic).
        room: &'a str,
        /// Offer, answer, candidate or bye.
        kind: SignalKind,
        /// The receiving member, or `None` for an offer to the whole room.
        to: Option<&'a str>,
        /// The payload (SDP, a candidate), which the server relays untouched.
        payload: &'a [u8],
    },
    /// A message to every member of a topic (Publish frame).
    Publish {
        /// The topic.
        topic: &'a str,
        /// The payload.
        payload: &'a [u8],
    },
    /// A message to one member of a topic (TopicSend frame).
    SendToMember {
        /// The topic.
        topic: &'a str,
        /// The receiving member.
        to: &'a str,
        /// The payload.
        payload: &'a [u8],
    },
    /// An event to one peer (Event frame with a target).
    Emit {
        /// The event name.
        name: &'a str,
        /// The receiving peer.
        to: &'a str,
        /// The payload.
        payload: &'a [u8],
    },
    /// An event to every other peer (Broadcast frame; only while the server relays
    /// broadcasts).
    Broadcast {
        /// The event name.
        name: &'a str,
        /// The payload.
        payload: &'a [u8],
    },
    /// A call of a method on another peer (RpcRequest frame with a target).
    CallPeer {
        /// The callee.
        peer: &'a str,
        /// The method.
        method: &'a str,
        /// The call's parameters.
        params: &'a [u8],
    },
}

impl<'a> Traffic<'a> {
    /// The name it is about: the room, topic, event name or method.
    pub fn name(&self) -> &'a str {
        match *self {
            Traffic::Signal { room, .. } => room,
            Traffic::Publish { topic, .. } | Traffic::SendToMember { topic, .. } => topic,
            Traffic::Emit { name, .. } | Traffic::Broadcast { name, .. } => name,
            Traffic::CallPeer { method, .. } => method,
        }
    }

    /// The one peer it is for, or `None` when it goes to a room, a topic or everyone.
    pub fn to(&self) -> Option<&'a str> {
        match *self {
            Traffic::Signal { to, .. } => to,
            Traffic::SendToMember { to, .. } | Traffic::Emit { to, .. } => Some(to),
            Traffic::CallPeer { peer, .. } => Some(peer),
            Traffic::Publish { .. } | Traffic::Broadcast { .. } => None,
        }
    }

    /// The bytes it carries (a call's parameters), for a hook that looks at content
    /// whatever the kind.
    pub fn payload(&self) -> &'a [u8] {
        match *self {
            Traffic::Signal { payload, .. }
            | Traffic::Publish { payload, .. }
            | Traffic::SendToMember { payload, .. }
            | Traffic::Emit { payload, .. }
            | Traffic::Broadcast { payload, .. } => payload,
            Traffic::CallPeer { params, .. } => params,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_name_target_and_payload_of_each_kind() {
        let all = [
            Traffic::Signal {
                room: "r",
                kind: SignalKind::Answer,
                to: Some("b"),
                payload: b"sdp",
            },
            Traffic::Publish {
                topic: "r",
                payload: b"sdp",
            },
            Traffic::SendToMember {
                topic: "r",
                to: "b",
                payload: b"sdp",
            },
            Traffic::Emit {
                name: "r",
                to: "b",
                payload: b"sdp",
            },
            Traffic::Broadcast {
                name: "r",
                payload: b"sdp",
            },
            Traffic::CallPeer {
                peer: "b",
                method: "r",
                params: b"sdp",
            },
        ];
        for t in &all {
            assert_eq!((t.name(), t.payload()), ("r", &b"sdp"[..]), "{t:?}");
            let one = !matches!(t, Traffic::Publish { .. } | Traffic::Broadcast { .. });
            assert_eq!(t.to(), one.then_some("b"), "{t:?}");
        }
    }
}
