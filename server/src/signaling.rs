//! WebRTC signaling relay (Peero): offers to everyone else in a room, or answers, ICE
//! candidates and byes to one member. A room is a topic; the sender must have joined it.
//! Payloads (SDP, candidates) are relayed untouched, never parsed.

use std::borrow::Cow;
use std::rc::Rc;

use peerd_codec::{self as codec, ArchivedSignal, ArchivedSignalKind, Code, SignalKind};

use crate::conn::Conn;
use crate::error::Refused;
use crate::shard::Shard;
use crate::topics::{deliver_member, fan_out, member};

/// The kind of a received Signal.
pub(crate) fn kind(s: &ArchivedSignal<'_>) -> SignalKind {
    match s.kind {
        ArchivedSignalKind::Offer => SignalKind::Offer,
        ArchivedSignalKind::Answer => SignalKind::Answer,
        ArchivedSignalKind::Candidate => SignalKind::Candidate,
        ArchivedSignalKind::Bye => SignalKind::Bye,
    }
}

pub(crate) fn signal(
    shard: &Rc<Shard>,
    conn: &Conn,
    s: &ArchivedSignal<'static>,
) -> Result<(), Refused> {
    let room = s.room.as_str();
    if !conn.topics.borrow().is_member(room) {
        return Err(Refused::new(
            Code::NotMember,
            "join the room before signaling in it",
        ));
    }
    let kind = kind(s);
    let to = codec::opt_str(&s.peer);
    if to.is_none() && kind != SignalKind::Offer {
        return Err(Refused::new(
            Code::InvalidArgument,
            "only offers may go to the whole room",
        ));
    }
    let frame = shard.local.encode_relayed(&codec::Signal {
        req: 0,
        room: Cow::Borrowed(room),
        kind,
        peer: Some(Cow::Borrowed(&conn.peer_id)),
        payload: Cow::Borrowed(s.payload.as_slice()),
    })?;
    match to {
        None => fan_out(shard, room, frame, conn.session),
        Some(to) => {
            let at = member(shard, room, to)?;
            deliver_member(shard, room, at, frame)
        }
    }
}
