//! Stable numeric error and close codes.
//!
//! One table serves Close, Reject, RpcError and Status frames. Numbers never change meaning.
//! 0 is success; 1000-1999 are protocol codes defined here; 4000-4999 are free for
//! applications (an RPC handler may fail with its own code in that range).

/// A code carried by Close, Reject, RpcError and Status frames.
///
/// Codes outside this list still travel as raw `u16`; [`Code::from_u16`] returns `None` for
/// them and callers keep the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum Code {
    /// Success (Status only).
    Ok = 0,
    /// Orderly close requested by the sender; nothing went wrong.
    Normal = 1000,
    /// The server is shutting down.
    Shutdown = 1001,
    /// A frame could not be parsed or broke a protocol rule.
    BadFrame = 1002,
    /// A frame exceeded the receiver's maximum frame size.
    TooLarge = 1003,
    /// Credentials were missing, invalid, expired or replayed.
    Unauthorized = 1004,
    /// Another live session holds the requested peer id.
    PeerIdTaken = 1005,
    /// No peer with that id is connected.
    UnknownPeer = 1006,
    /// The callee has no handler for the method.
    MethodNotFound = 1007,
    /// The call's deadline passed before a response arrived.
    Timeout = 1008,
    /// The server is at a limit (max connections, in-flight calls) and refused the work.
    Overloaded = 1009,
    /// The peer did not read fast enough; its outbound queue overflowed.
    SlowConsumer = 1010,
    /// A new connection resumed this session; this one is closed.
    Replaced = 1011,
    /// The peer went away while a call to it was pending.
    PeerGone = 1012,
    /// The client's protocol version is not supported.
    UnsupportedVersion = 1013,
    /// The handshake did not complete before the deadline.
    HandshakeTimeout = 1014,
    /// A configured limit was hit (topics per peer, members per topic, ...).
    LimitExceeded = 1015,
    /// An argument is malformed (bad topic name, bad peer id, ...).
    InvalidArgument = 1016,
    /// The target peer is not a member of the topic.
    NotMember = 1017,
    /// The handler failed without choosing a code.
    Internal = 1018,
    /// No heartbeat from the peer within the allowed interval.
    IdleTimeout = 1019,
    /// The session's credentials (a token) expired: refused at the handshake, or the
    /// connection is closed because no Refresh replaced them in time. Get a new token and
    /// reconnect (unlike `Unauthorized`, which another attempt cannot change).
    TokenExpired = 1020,
    /// The peer sent more than its rate limit allows: the frame was not acted on (Status,
    /// RpcError), or the peer stayed over its limit too long (Close).
    RateLimited = 1021,
    /// The server is draining (a restart or a scale-down): as an unsolicited Status it asks
    /// the client to stop sending and say so with Close; as the server's Close it means
    /// "everything you sent before your Close was acted on and answered: reconnect now,
    /// another process or node at this address takes you" (PROTOCOL.md §6.10).
    Reconnect = 1022,
}

impl Code {
    /// Every defined code.
    pub const ALL: &'static [Code] = &[
        Code::Ok,
        Code::Normal,
        Code::Shutdown,
        Code::BadFrame,
        Code::TooLarge,
        Code::Unauthorized,
        Code::PeerIdTaken,
        Code::UnknownPeer,
        Code::MethodNotFound,
        Code::Timeout,
        Code::Overloaded,
        Code::SlowConsumer,
        Code::Replaced,
        Code::PeerGone,
        Code::UnsupportedVersion,
        Code::HandshakeTimeout,
        Code::LimitExceeded,
        Code::InvalidArgument,
        Code::NotMember,
        Code::Internal,
        Code::IdleTimeout,
        Code::TokenExpired,
        Code::RateLimited,
        Code::Reconnect,
    ];

    /// The numeric value on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a wire value, if it is one defined here.
    pub fn from_u16(v: u16) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| *c as u16 == v)
    }

    /// Short stable name, as in docs/PROTOCOL.md.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Normal => "normal",
            Code::Shutdown => "shutdown",
            Code::BadFrame => "bad_frame",
            Code::TooLarge => "too_large",
            Code::Unauthorized => "unauthorized",
            Code::PeerIdTaken => "peer_id_taken",
            Code::UnknownPeer => "unknown_peer",
            Code::MethodNotFound => "method_not_found",
            Code::Timeout => "timeout",
            Code::Overloaded => "overloaded",
            Code::SlowConsumer => "slow_consumer",
            Code::Replaced => "replaced",
            Code::PeerGone => "peer_gone",
            Code::UnsupportedVersion => "unsupported_version",
            Code::HandshakeTimeout => "handshake_timeout",
            Code::LimitExceeded => "limit_exceeded",
            Code::InvalidArgument => "invalid_argument",
            Code::NotMember => "not_member",
            Code::Internal => "internal",
            Code::IdleTimeout => "idle_timeout",
            Code::TokenExpired => "token_expired",
            Code::RateLimited => "rate_limited",
            Code::Reconnect => "reconnect",
        }
    }

    /// A name for any wire value: the defined name, `app_<n>` for 4000-4999, else `code_<n>`.
    pub fn describe(v: u16) -> String {
        match Code::from_u16(v) {
            Some(c) => c.name().to_string(),
            None if (4000..5000).contains(&v) => format!("app_{v}"),
            None => format!("code_{v}"),
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), *self as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_pinned() {
        // These numbers are the public contract; changing one breaks every client.
        let pinned: &[(Code, u16)] = &[
            (Code::Ok, 0),
            (Code::Normal, 1000),
            (Code::Shutdown, 1001),
            (Code::BadFrame, 1002),
            (Code::TooLarge, 1003),
            (Code::Unauthorized, 1004),
            (Code::PeerIdTaken, 1005),
            (Code::UnknownPeer, 1006),
            (Code::MethodNotFound, 1007),
            (Code::Timeout, 1008),
            (Code::Overloaded, 1009),
            (Code::SlowConsumer, 1010),
            (Code::Replaced, 1011),
            (Code::PeerGone, 1012),
            (Code::UnsupportedVersion, 1013),
            (Code::HandshakeTimeout, 1014),
            (Code::LimitExceeded, 1015),
            (Code::InvalidArgument, 1016),
            (Code::NotMember, 1017),
            (Code::Internal, 1018),
            (Code::IdleTimeout, 1019),
            (Code::TokenExpired, 1020),
            (Code::RateLimited, 1021),
            (Code::Reconnect, 1022),
        ];
        assert_eq!(pinned.len(), Code::ALL.len());
        for (c, v) in pinned {
            assert_eq!(c.as_u16(), *v);
            assert_eq!(Code::from_u16(*v), Some(*c));
        }
        assert_eq!(Code::describe(4001), "app_4001");
        assert_eq!(Code::describe(77), "code_77");
    }
}
