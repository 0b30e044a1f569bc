//! Every message peerd speaks.
//!
//! Each message is a plain Rust struct that derives rkyv's `Archive`. Text and byte fields are
//! `Cow`s archived "as owned" (`ArchivedString`, `ArchivedVec<u8>`): a sender can encode
//! straight from borrowed data without copying it into a `String` or `Vec` first, and a
//! receiver reads them in place as `&str` / `&[u8]` through the `Archived*` type.
//!
//! Direction and meaning of each field are documented here and, normatively, in
//! docs/PROTOCOL.md. Fields named `peer` are *the other end*: the target when a client
//! sends the frame, the origin when the server delivers it.

use std::borrow::Cow;

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::with::{AsOwned, Map};
use rkyv::{Archive, Deserialize, Portable, Serialize};

use crate::check::ArchiveError;
use crate::error::WireError;
use crate::kind::FrameKind;

/// Implemented by every message: which header kind carries it.
pub trait Message: Archive {
    /// The header's frame-kind byte for this message.
    const KIND: FrameKind;
}

/// Limits the server enforces on this session, announced in [`Welcome`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Limits {
    /// Largest frame body the server accepts from this client.
    pub max_frame_len: u32,
    /// Largest number of topics one peer may be in at once.
    pub max_topics_per_peer: u32,
    /// Largest number of members in one topic.
    pub max_members_per_topic: u32,
    /// Longest topic name, in bytes.
    pub max_topic_len: u32,
    /// Bytes the server will queue toward this client before closing it as a slow consumer.
    pub outbound_queue_bytes: u32,
}

/// Client -> server, the first frame of every connection.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Highest protocol version the client speaks.
    pub version: u16,
    /// Declared peer id, or `None` to have the server assign a numeric one.
    #[rkyv(with = Map<AsOwned>)]
    pub peer_id: Option<Cow<'a, str>>,
    /// Opaque credentials checked by the server's authenticator.
    #[rkyv(with = Map<AsOwned>)]
    pub credentials: Option<Cow<'a, [u8]>>,
    /// Resume token from an earlier Welcome: take over that session's peer id.
    #[rkyv(with = Map<AsOwned>)]
    pub resume_token: Option<Cow<'a, [u8]>>,
    /// Free-form client software name, for logs.
    #[rkyv(with = AsOwned)]
    pub client: Cow<'a, str>,
}

/// Server -> client: the handshake succeeded and the session is active.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Welcome<'a> {
    /// Protocol version the session uses.
    pub version: u16,
    /// The peer id of this session (declared or assigned).
    #[rkyv(with = AsOwned)]
    pub peer_id: Cow<'a, str>,
    /// Unique per session, for logs and correlation.
    pub session_id: u64,
    /// Present this in a later Hello to take over this peer id.
    #[rkyv(with = AsOwned)]
    pub resume_token: Cow<'a, [u8]>,
    /// Limits the server enforces.
    pub limits: Limits,
    /// The server pings an idle connection this often and closes it after three misses.
    pub heartbeat_ms: u32,
}

/// Server -> client: the handshake failed. The server closes the connection after it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Reject<'a> {
    /// Why, as a [`crate::Code`] number.
    pub code: u16,
    /// Human-readable detail.
    #[rkyv(with = AsOwned)]
    pub reason: Cow<'a, str>,
}

/// Client -> server, protocol v2 and later: replace this session's credentials with new
/// ones (a fresh token, before the current one expires). Answered by [`Status`] like any
/// request with a `req`; a v1 session never sends it (the server refuses it there as a
/// bad frame, the kind being unknown in v1).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Refresh<'a> {
    /// Request id for the Status reply; 0 = reply only on failure.
    pub req: u64,
    /// The new credentials, in the form Hello's `credentials` take.
    #[rkyv(with = AsOwned)]
    pub credentials: Cow<'a, [u8]>,
}

/// Either direction: call `method`. Answered by [`RpcResponse`] or [`RpcError`] with the
/// same `id`, on the same connection.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RpcRequest<'a> {
    /// Chosen by the caller, unique among its in-flight calls on this connection.
    pub id: u64,
    /// Method name.
    #[rkyv(with = AsOwned)]
    pub method: Cow<'a, str>,
    /// Client -> server: the peer to call (`None` = the server). Server -> client: the
    /// calling peer (`None` = the server itself).
    #[rkyv(with = Map<AsOwned>)]
    pub peer: Option<Cow<'a, str>>,
    /// The caller gives up after this many milliseconds; 0 = the receiver's default.
    pub timeout_ms: u32,
    /// Opaque parameters.
    #[rkyv(with = AsOwned)]
    pub params: Cow<'a, [u8]>,
}

/// Either direction: a call succeeded.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RpcResponse<'a> {
    /// The request's id.
    pub id: u64,
    /// Opaque result.
    #[rkyv(with = AsOwned)]
    pub result: Cow<'a, [u8]>,
}

/// Either direction: a call failed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RpcError<'a> {
    /// The request's id.
    pub id: u64,
    /// A [`crate::Code`] number, or an application code in 4000-4999.
    pub code: u16,
    /// Human-readable detail.
    #[rkyv(with = AsOwned)]
    pub message: Cow<'a, str>,
}

/// Either direction: a named event. Client -> server with `peer` set: deliver to that peer
/// (a direct message). Server -> client: `peer` is the sending peer, `None` = the server.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// Event name.
    #[rkyv(with = AsOwned)]
    pub name: Cow<'a, str>,
    /// Target (client -> server) or origin (server -> client).
    #[rkyv(with = Map<AsOwned>)]
    pub peer: Option<Cow<'a, str>>,
    /// Opaque payload.
    #[rkyv(with = AsOwned)]
    pub payload: Cow<'a, [u8]>,
}

/// Client -> server: relay to every connected peer (the sender excluded). Server -> client:
/// a broadcast from `peer` (`None` = the server).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Broadcast<'a> {
    /// Event name.
    #[rkyv(with = AsOwned)]
    pub name: Cow<'a, str>,
    /// Origin (server -> client); ignored from clients.
    #[rkyv(with = Map<AsOwned>)]
    pub peer: Option<Cow<'a, str>>,
    /// Opaque payload.
    #[rkyv(with = AsOwned)]
    pub payload: Cow<'a, [u8]>,
}

/// Client -> server: join a topic. Answered by [`Status`] when `req` != 0, or on failure.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Join<'a> {
    /// Request id for the Status reply; 0 = reply only on failure.
    pub req: u64,
    /// Topic name.
    #[rkyv(with = AsOwned)]
    pub topic: Cow<'a, str>,
}

/// Client -> server: leave a topic.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Leave<'a> {
    /// Request id for the Status reply; 0 = reply only on failure.
    pub req: u64,
    /// Topic name.
    #[rkyv(with = AsOwned)]
    pub topic: Cow<'a, str>,
}

/// Client -> server: deliver `payload` to every member of `topic`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    /// Request id for the Status reply; 0 = reply only on failure.
    pub req: u64,
    /// Topic name.
    #[rkyv(with = AsOwned)]
    pub topic: Cow<'a, str>,
    /// Deliver a copy to the sender too, if it is a member.
    pub echo: bool,
    /// Opaque payload.
    #[rkyv(with = AsOwned)]
    pub payload: Cow<'a, [u8]>,
}

/// Client -> server: deliver `payload` to one member of `topic`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicSend<'a> {
    /// Request id for the Status reply; 0 = reply only on failure.
    pub req: u64,
    /// Topic name.
    #[rkyv(with = AsOwned)]
    pub topic: Cow<'a, str>,
    /// The receiving peer.
    #[rkyv(with = AsOwned)]
    pub to: Cow<'a, str>,
    /// Opaque payload.
    #[rkyv(with = AsOwned)]
    pub payload: Cow<'a, [u8]>,
}

/// Server -> client: a message on a topic.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicMessage<'a> {
    /// Topic name.
    #[rkyv(with = AsOwned)]
    pub topic: Cow<'a, str>,
    /// The sending peer.
    #[rkyv(with = AsOwned)]
    pub from: Cow<'a, str>,
    /// true: sent to this peer alone (TopicSend); false: published to all members.
    pub direct: bool,
    /// Opaque payload.
    #[rkyv(with = AsOwned)]
    pub payload: Cow<'a, [u8]>,
}

/// Client -> server: start a presence watch (global when `topic` is `None`). The server
/// answers with one [`PresenceSnapshot`], then [`Presence`] frames as peers come and go.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Watch<'a> {
    /// Request id for the Status reply; 0 = reply only on failure.
    pub req: u64,
    /// Topic to watch, or `None` for every connected peer.
    #[rkyv(with = Map<AsOwned>)]
    pub topic: Option<Cow<'a, str>>,
}

/// Client -> server: stop a presence watch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Unwatch<'a> {
    /// Request id for the Status reply; 0 = reply only on failure.
    pub req: u64,
    /// The watched topic, or `None` for the global watch.
    #[rkyv(with = Map<AsOwned>)]
    pub topic: Option<Cow<'a, str>>,
}

/// Server -> client: members present when the watch started; clients surface each as a
/// join event.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PresenceSnapshot<'a> {
    /// The watched topic, or `None` for the global watch.
    #[rkyv(with = Map<AsOwned>)]
    pub topic: Option<Cow<'a, str>>,
    /// Peer ids present.
    pub peers: Vec<String>,
}

/// What happened to a peer, in a [`Presence`] frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq), compare(PartialEq))]
#[repr(u8)]
pub enum PresenceChange {
    /// The peer connected (global watch) or joined the topic.
    Join = 0,
    /// The peer disconnected or left the topic.
    Leave = 1,
}

/// Server -> client: one presence change.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Presence<'a> {
    /// The watched topic, or `None` for the global watch.
    #[rkyv(with = Map<AsOwned>)]
    pub topic: Option<Cow<'a, str>>,
    /// The peer that joined or left.
    #[rkyv(with = AsOwned)]
    pub peer: Cow<'a, str>,
    /// Join or leave.
    pub change: PresenceChange,
}

/// Client -> server: list connected peers, or the members of a topic.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ListPeers<'a> {
    /// Request id echoed in [`PeerList`].
    pub req: u64,
    /// Topic (room) to list, or `None` for every connected peer.
    #[rkyv(with = Map<AsOwned>)]
    pub topic: Option<Cow<'a, str>>,
}

/// Server -> client: the answer to [`ListPeers`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PeerList {
    /// The ListPeers request id.
    pub req: u64,
    /// Peer ids.
    pub peers: Vec<String>,
}

/// The kind of a WebRTC signaling message.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq), compare(PartialEq))]
#[repr(u8)]
pub enum SignalKind {
    /// An SDP offer.
    Offer = 0,
    /// An SDP answer.
    Answer = 1,
    /// An ICE candidate.
    Candidate = 2,
    /// The sender is hanging up.
    Bye = 3,
}

/// Either direction: WebRTC signaling between members of `room` (a topic). The server
/// relays `payload` untouched. Client -> server: `peer` is the target; `None` is allowed for
/// offers only and means every other member of the room. Server -> client: `peer` is the
/// sender.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Signal<'a> {
    /// Request id for the Status reply (client -> server); 0 = reply only on failure.
    pub req: u64,
    /// Room (topic) name.
    #[rkyv(with = AsOwned)]
    pub room: Cow<'a, str>,
    /// Offer, answer, candidate or bye.
    pub kind: SignalKind,
    /// Target (client -> server) or sender (server -> client).
    #[rkyv(with = Map<AsOwned>)]
    pub peer: Option<Cow<'a, str>>,
    /// Opaque SDP / candidate blob.
    #[rkyv(with = AsOwned)]
    pub payload: Cow<'a, [u8]>,
}

/// Server -> client: the outcome of a request that carried `req`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Status<'a> {
    /// The request's `req` (0 when the request carried none and failed).
    pub req: u64,
    /// 0 on success, else a [`crate::Code`] number.
    pub code: u16,
    /// Human-readable detail (empty on success).
    #[rkyv(with = AsOwned)]
    pub message: Cow<'a, str>,
}

/// Either direction: liveness probe; the receiver answers [`Pong`] with the same nonce.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Ping {
    /// Echoed in the Pong.
    pub nonce: u64,
}

/// Either direction: answer to [`Ping`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Pong {
    /// The Ping's nonce.
    pub nonce: u64,
}

/// Either direction: the sender is closing the connection and will send nothing more.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Close<'a> {
    /// A [`crate::Code`] number.
    pub code: u16,
    /// Human-readable detail.
    #[rkyv(with = AsOwned)]
    pub reason: Cow<'a, str>,
}

macro_rules! frames {
    ($( $name:ident => $ty:ty, $archived:ty; )*) => {
        $( impl Message for $ty { const KIND: FrameKind = FrameKind::$name; } )*

        /// A validated frame, borrowed in place from the receive buffer.
        #[derive(Clone, Copy)]
        #[non_exhaustive]
        pub enum Frame<'a> {
            $(
                #[doc = concat!("A [`", stringify!($name), "`] frame.")]
                $name(&'a $archived),
            )*
        }

        impl std::fmt::Debug for Frame<'_> {
            // Archived types with borrowed-Cow fields cannot derive Debug (their field types
            // are projections rkyv's derive cannot name), so a frame prints as its kind.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "Frame::{}", self.kind().name())
            }
        }

        impl Frame<'_> {
            /// The header kind of this frame.
            pub fn kind(&self) -> FrameKind {
                match self { $( Frame::$name(_) => FrameKind::$name, )* }
            }
        }

        /// Validate `body` as the archive `kind` names and borrow it.
        pub(crate) fn access_kind(kind: FrameKind, body: &[u8]) -> Result<Frame<'_>, crate::WireError> {
            Ok(match kind {
                $( FrameKind::$name => Frame::$name(access::<$archived>(kind, body)?), )*
            })
        }
    };
}

frames! {
    Hello => Hello<'_>, ArchivedHello<'static>;
    Welcome => Welcome<'_>, ArchivedWelcome<'static>;
    Reject => Reject<'_>, ArchivedReject<'static>;
    Refresh => Refresh<'_>, ArchivedRefresh<'static>;
    RpcRequest => RpcRequest<'_>, ArchivedRpcRequest<'static>;
    RpcResponse => RpcResponse<'_>, ArchivedRpcResponse<'static>;
    RpcError => RpcError<'_>, ArchivedRpcError<'static>;
    Event => Event<'_>, ArchivedEvent<'static>;
    Broadcast => Broadcast<'_>, ArchivedBroadcast<'static>;
    Join => Join<'_>, ArchivedJoin<'static>;
    Leave => Leave<'_>, ArchivedLeave<'static>;
    Publish => Publish<'_>, ArchivedPublish<'static>;
    TopicSend => TopicSend<'_>, ArchivedTopicSend<'static>;
    TopicMessage => TopicMessage<'_>, ArchivedTopicMessage<'static>;
    Watch => Watch<'_>, ArchivedWatch<'static>;
    Unwatch => Unwatch<'_>, ArchivedUnwatch<'static>;
    PresenceSnapshot => PresenceSnapshot<'_>, ArchivedPresenceSnapshot<'static>;
    Presence => Presence<'_>, ArchivedPresence<'static>;
    ListPeers => ListPeers<'_>, ArchivedListPeers<'static>;
    PeerList => PeerList, ArchivedPeerList;
    Signal => Signal<'_>, ArchivedSignal<'static>;
    Status => Status<'_>, ArchivedStatus<'static>;
    Ping => Ping, ArchivedPing;
    Pong => Pong, ArchivedPong;
    Close => Close<'_>, ArchivedClose<'static>;
}

/// Borrow an archived optional string as `Option<&str>`.
pub fn opt_str(v: &rkyv::option::ArchivedOption<rkyv::string::ArchivedString>) -> Option<&str> {
    v.as_ref().map(|s| s.as_str())
}

/// Borrow an archived optional byte vector as `Option<&[u8]>`.
pub fn opt_bytes(v: &rkyv::option::ArchivedOption<rkyv::vec::ArchivedVec<u8>>) -> Option<&[u8]> {
    v.as_ref().map(|s| s.as_slice())
}

/// Validate `body` as the archive of `T` (the message a `kind` frame carries).
///
/// Two passes, the second only on failure. The first validates with `rancor::Failure`,
/// which carries nothing: what `rancor::Error` is in a release build, so valid frames take
/// exactly the path they always took. A frame that fails is validated again with
/// [`ArchiveError`], which keeps rkyv's message and field path, so the peer's Close (or
/// Reject) says which rule of PROTOCOL.md §3 its frame broke, and where. The second pass
/// costs one more validation of a frame whose connection is being closed anyway.
pub(crate) fn access<T>(kind: FrameKind, body: &[u8]) -> Result<&T, WireError>
where
    T: Portable
        + for<'a> CheckBytes<HighValidator<'a, rancor::Failure>>
        + for<'a> CheckBytes<HighValidator<'a, ArchiveError>>,
{
    match rkyv::access::<T, rancor::Failure>(body) {
        Ok(archived) => Ok(archived),
        Err(rancor::Failure) => Err(explain::<T>(kind, body)),
    }
}

/// The second pass of [`access`]: validate again, keeping what rkyv says.
#[cold]
#[inline(never)]
fn explain<T>(kind: FrameKind, body: &[u8]) -> WireError
where
    T: Portable + for<'a> CheckBytes<HighValidator<'a, ArchiveError>>,
{
    let (check, detail) = match rkyv::access::<T, ArchiveError>(body) {
        Err(e) => crate::check::describe(&e, body),
        // Validation is a pure function of the bytes; this arm is unreachable, and a vague
        // reason is the right answer should it ever be reached.
        Ok(_) => (crate::check::rule::ARCHIVE, String::from("no detail")),
    };
    WireError::InvalidArchive {
        kind,
        check,
        detail,
    }
}
