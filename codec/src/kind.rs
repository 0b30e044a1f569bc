//! [`FrameKind`]: the frame-type byte of the header, and every kind's number and name.

macro_rules! frame_kinds {
    ($( $(#[$doc:meta])* $name:ident = $val:literal ),* $(,)?) => {
        /// The frame-type byte of the header. Values are stable: a kind is never renumbered,
        /// only added.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum FrameKind {
            $( $(#[$doc])* $name = $val, )*
        }

        impl FrameKind {
            /// Every kind, in numeric order.
            pub const ALL: &'static [FrameKind] = &[ $( FrameKind::$name, )* ];

            /// The kind for a header byte, or `None` if it is not a known kind.
            pub fn from_u8(v: u8) -> Option<FrameKind> {
                match v {
                    $( $val => Some(FrameKind::$name), )*
                    _ => None,
                }
            }

            /// The kind's name as it appears in docs/PROTOCOL.md.
            pub fn name(self) -> &'static str {
                match self {
                    $( FrameKind::$name => stringify!($name), )*
                }
            }
        }
    };
}

frame_kinds! {
    /// Client -> server, first frame of a connection.
    Hello = 0x01,
    /// Server -> client: the handshake succeeded.
    Welcome = 0x02,
    /// Server -> client: the handshake failed; the server closes after sending it.
    Reject = 0x03,
    /// Client -> server (protocol v2): replace the session's credentials (a fresh token)
    /// before the current ones expire; answered by Status.
    Refresh = 0x04,
    /// Either direction: call a method.
    RpcRequest = 0x10,
    /// Either direction: the successful result of a call.
    RpcResponse = 0x11,
    /// Either direction: the failure of a call.
    RpcError = 0x12,
    /// Either direction: a named event, optionally to or from one peer.
    Event = 0x20,
    /// Client -> server: relay to every peer. Server -> client: a relayed broadcast.
    Broadcast = 0x21,
    /// Client -> server: join a topic.
    Join = 0x30,
    /// Client -> server: leave a topic.
    Leave = 0x31,
    /// Client -> server: publish to every member of a topic.
    Publish = 0x32,
    /// Client -> server: send to one member of a topic.
    TopicSend = 0x33,
    /// Server -> client: a message delivered on a topic.
    TopicMessage = 0x34,
    /// Client -> server: start watching presence, globally or for one topic.
    Watch = 0x40,
    /// Client -> server: stop watching presence.
    Unwatch = 0x41,
    /// Server -> client: the members present when a watch started.
    PresenceSnapshot = 0x42,
    /// Server -> client: one peer joined or left.
    Presence = 0x43,
    /// Client -> server: list peers, globally or in a topic.
    ListPeers = 0x44,
    /// Server -> client: the answer to ListPeers.
    PeerList = 0x45,
    /// Either direction: WebRTC signaling relayed between peers of a room.
    Signal = 0x50,
    /// Server -> client: the outcome of a request that carried a `req` id.
    Status = 0x60,
    /// Either direction: liveness probe.
    Ping = 0x70,
    /// Either direction: answer to Ping.
    Pong = 0x71,
    /// Either direction: the sender is closing the connection, with a code.
    Close = 0x7F,
}
