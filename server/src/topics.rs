//! Topics, presence, direct messages, peer-to-peer RPC and signaling (placeholder: the
//! full implementation lands with the topics issue).

use std::rc::Rc;

use peerd_codec::{ArchivedEvent, ArchivedRpcRequest, Code, Frame};

use crate::conn::Conn;

/// Per-peer topic state.
#[derive(Default)]
pub(crate) struct PeerTopics {}

/// Per-shard topic state.
#[derive(Default)]
pub(crate) struct ShardTopics {}

pub(crate) fn on_connect(_conn: &Rc<Conn>) {}

pub(crate) fn on_disconnect(_conn: &Rc<Conn>) {}

pub(crate) fn forward_call(conn: &Rc<Conn>, r: &ArchivedRpcRequest<'static>, _target: &str) {
    let _ = conn.send_rpc_error(
        r.id.to_native(),
        Code::Internal.as_u16(),
        "peer-to-peer calls are not implemented yet",
    );
}

/// Returns true if `id` was a relayed call and the answer was forwarded.
pub(crate) fn relay_response(_conn: &Rc<Conn>, _id: u64, _r: Result<&[u8], (u16, &str)>) -> bool {
    false
}

pub(crate) fn direct_event(conn: &Rc<Conn>, _ev: &ArchivedEvent<'static>, _target: &str) {
    conn.status(0, Code::Internal, "direct events are not implemented yet");
}

pub(crate) fn dispatch(conn: &Rc<Conn>, _frame: Frame<'_>) {
    conn.status(0, Code::Internal, "topics are not implemented yet");
}
