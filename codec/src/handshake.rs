//! The Hello -> Welcome | Reject handshake, both sides, as sans-io helpers.
//!
//! A client builds its Hello with [`hello_frame`], writes it however it does IO, and feeds
//! whatever it reads to a [`ClientHandshake`] until that yields a [`Welcomed`] session or a
//! [`HandshakeError`]. Bytes that arrived after the Welcome stay in the handshake's framer
//! ([`ClientHandshake::into_framer`]), so nothing the server pipelined is lost.
//!
//! A server feeds its receive buffer to [`parse_hello`], which applies every check the
//! protocol itself defines (`docs/PROTOCOL.md` §6.1: frame kind, size, version, peer-id
//! rules) and returns the Hello's fields borrowed from the buffer, or the [`Refusal`] to send
//! as Reject. Checks that need server state (credentials, the peer directory) stay with the
//! server.
//!
//! One implementation for the Rust client, the loadgen, the benches and the tests: the
//! handshake used to be written four times and the copies had drifted (one ignored a Close
//! during the handshake, another a Reject).

use bytes::Bytes;

use crate::code::Code;
use crate::codec::{decode_bytes, encode, split_frame};
use crate::error::{EncodeError, WireError};
use crate::framer::Framer;
use crate::frames::{opt_bytes, opt_str, Frame, Hello, Limits};
use crate::header::FrameKind;
use crate::limits::{
    validate_declared_peer_id, validate_peer_id, MAX_HELLO_LEN, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};

/// Encode `hello` as a frame, within the Hello's own size cap ([`MAX_HELLO_LEN`]).
pub fn hello_frame(hello: &Hello<'_>) -> Result<Bytes, EncodeError> {
    let mut buf = bytes::BytesMut::new();
    encode(hello, &mut buf, MAX_HELLO_LEN)?;
    Ok(buf.freeze())
}

/// The session a Welcome established, copied out of the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcomed {
    /// Protocol version the session uses.
    pub version: u16,
    /// The peer id the server confirmed or assigned.
    pub peer_id: String,
    /// The session id.
    pub session_id: u64,
    /// Present in a later Hello to take this peer id over.
    pub resume_token: Vec<u8>,
    /// Limits the server enforces.
    pub limits: Limits,
    /// The server's heartbeat interval in milliseconds.
    pub heartbeat_ms: u32,
}

/// Why a client handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The server refused: Reject{code, reason}, or a Close before Welcome (a server sends
    /// Close{handshake_timeout} to a client that was too slow).
    #[error("server refused the handshake: {} ({reason})", Code::describe(*code))]
    Refused {
        /// The code the server sent.
        code: u16,
        /// Its reason.
        reason: String,
    },
    /// The server sent bytes that are not a valid frame.
    #[error("invalid frame from the server during the handshake: {0}")]
    Wire(#[from] WireError),
    /// The server sent a valid frame of a kind that has no place before Welcome.
    #[error("expected Welcome or Reject, got {}", .0.name())]
    Unexpected(FrameKind),
    /// The server chose a protocol version this side does not speak.
    #[error(
        "server chose protocol version {0}; this side speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
    )]
    UnsupportedVersion(u16),
}

/// A client's side of the handshake, after Hello was sent: waits for Welcome.
#[derive(Debug)]
pub struct ClientHandshake {
    framer: Framer,
}

impl ClientHandshake {
    /// Expect the server's answer; frames are accepted up to `max_frame_len` bytes (the
    /// framer is handed on after the handshake, so this is the connection's limit).
    pub fn new(max_frame_len: u32) -> ClientHandshake {
        ClientHandshake {
            framer: Framer::new(max_frame_len),
        }
    }

    /// Feed bytes read from the server. `Ok(None)`: more bytes are needed.
    pub fn receive(&mut self, data: &[u8]) -> Result<Option<Welcomed>, HandshakeError> {
        self.framer.extend(data);
        self.poll()
    }

    /// Look for the answer in what is already buffered (after writing into
    /// [`buffer_mut`](Self::buffer_mut) directly).
    pub fn poll(&mut self) -> Result<Option<Welcomed>, HandshakeError> {
        let Some(frame) = self.framer.next_frame()? else {
            return Ok(None);
        };
        match decode_bytes(&frame)? {
            Frame::Welcome(w) => {
                let version = w.version.to_native();
                // The server answers with the lower of its version and ours: anything from
                // the oldest we still speak up to ours is a session we can hold.
                if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
                    return Err(HandshakeError::UnsupportedVersion(version));
                }
                let l = &w.limits;
                Ok(Some(Welcomed {
                    version,
                    peer_id: w.peer_id.as_str().to_string(),
                    session_id: w.session_id.to_native(),
                    resume_token: w.resume_token.as_slice().to_vec(),
                    limits: Limits {
                        max_frame_len: l.max_frame_len.to_native(),
                        max_topics_per_peer: l.max_topics_per_peer.to_native(),
                        max_members_per_topic: l.max_members_per_topic.to_native(),
                        max_topic_len: l.max_topic_len.to_native(),
                        outbound_queue_bytes: l.outbound_queue_bytes.to_native(),
                    },
                    heartbeat_ms: w.heartbeat_ms.to_native(),
                }))
            }
            Frame::Reject(r) => Err(HandshakeError::Refused {
                code: r.code.to_native(),
                reason: r.reason.as_str().to_string(),
            }),
            Frame::Close(c) => Err(HandshakeError::Refused {
                code: c.code.to_native(),
                reason: c.reason.as_str().to_string(),
            }),
            other => Err(HandshakeError::Unexpected(other.kind())),
        }
    }

    /// The receive buffer, for reading into directly.
    pub fn buffer_mut(&mut self) -> &mut bytes::BytesMut {
        self.framer.buffer_mut()
    }

    /// The framer, holding any bytes that arrived after the Welcome.
    pub fn into_framer(self) -> Framer {
        self.framer
    }
}

/// The server's answer to a Hello that breaks a protocol rule: send Reject{code, reason}.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// The Reject code.
    pub code: Code,
    /// The Reject reason.
    pub reason: String,
}

impl Refusal {
    fn new(code: Code, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
        }
    }
}

impl From<WireError> for Refusal {
    fn from(e: WireError) -> Refusal {
        Refusal::new(e.code(), e.to_string())
    }
}

/// A Hello that passed the protocol's own checks, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloFields<'a> {
    /// The version the client announced (the server answers with the lower of it and
    /// [`PROTOCOL_VERSION`]: [`HelloFields::session_version`]).
    pub version: u16,
    /// The declared peer id, if any (already checked against the peer-id rules).
    pub peer_id: Option<&'a str>,
    /// Credentials for the server's authenticator.
    pub credentials: Option<&'a [u8]>,
    /// A resume token from an earlier Welcome.
    pub resume_token: Option<&'a [u8]>,
    /// The client software's name, for logs.
    pub client: &'a str,
}

impl HelloFields<'_> {
    /// The version of the session this Hello opens: the highest both sides speak.
    pub fn session_version(&self) -> u16 {
        self.version.min(PROTOCOL_VERSION)
    }

    /// The Hello resumes a server-assigned (numeric) id: such an id may only be taken over
    /// with its session's token, never claimed (`docs/PROTOCOL.md` §6.1, *Resume*).
    pub fn resumes_assigned_id(&self) -> bool {
        self.resume_token.is_some()
            && self
                .peer_id
                .is_some_and(|id| id.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// Find and check the Hello at the start of `buf`. `Ok(None)`: more bytes are needed.
/// `Ok(Some((hello, n)))`: the Hello occupies the first `n` bytes.
pub fn parse_hello(buf: &[u8]) -> Result<Option<(HelloFields<'_>, usize)>, Refusal> {
    let Some((raw, n)) = split_frame(buf, MAX_HELLO_LEN)? else {
        return Ok(None);
    };
    let frame = raw.decode()?;
    let Frame::Hello(h) = frame else {
        return Err(Refusal::new(
            Code::BadFrame,
            format!("expected Hello, got {}", frame.kind().name()),
        ));
    };
    let version = h.version.to_native();
    if version < MIN_PROTOCOL_VERSION {
        return Err(Refusal::new(
            Code::UnsupportedVersion,
            format!(
                "protocol version {version} not supported; this server speaks \
                 {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
            ),
        ));
    }
    let fields = HelloFields {
        version,
        peer_id: opt_str(&h.peer_id),
        credentials: opt_bytes(&h.credentials),
        resume_token: opt_bytes(&h.resume_token),
        client: h.client.as_str(),
    };
    if let Some(id) = fields.peer_id {
        let valid = if fields.resumes_assigned_id() {
            validate_peer_id(id)
        } else {
            validate_declared_peer_id(id)
        };
        valid.map_err(|e| Refusal::new(Code::InvalidArgument, e.to_string()))?;
    }
    Ok(Some((fields, n)))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::codec::encode_to_bytes;
    use crate::frames::{Close, Ping, Reject, Welcome};

    fn hello(id: Option<&str>, token: Option<&[u8]>) -> Hello<'static> {
        Hello {
            version: PROTOCOL_VERSION,
            peer_id: id.map(|s| Cow::Owned(s.into())),
            credentials: None,
            resume_token: token.map(|t| Cow::Owned(t.to_vec())),
            client: Cow::Borrowed("test"),
        }
    }

    fn welcome() -> Bytes {
        encode_to_bytes(&Welcome {
            version: PROTOCOL_VERSION,
            peer_id: "alice".into(),
            session_id: 7,
            resume_token: Cow::Borrowed(&[1, 2, 3]),
            limits: Limits {
                max_frame_len: 1000,
                max_topics_per_peer: 1,
                max_members_per_topic: 2,
                max_topic_len: 3,
                outbound_queue_bytes: 4,
            },
            heartbeat_ms: 15,
        })
        .unwrap()
    }

    #[test]
    fn welcome_split_anywhere_then_leftover_kept() {
        let w = welcome();
        let ping = encode_to_bytes(&Ping { nonce: 9 }).unwrap();
        let mut all = w.to_vec();
        all.extend_from_slice(&ping);
        for cut in 0..w.len() {
            let mut hs = ClientHandshake::new(1 << 20);
            assert_eq!(hs.receive(&all[..cut]).unwrap(), None, "cut {cut}");
            let got = hs.receive(&all[cut..]).unwrap().expect("welcome");
            assert_eq!(got.peer_id, "alice");
            assert_eq!(got.session_id, 7);
            assert_eq!(got.resume_token, vec![1, 2, 3]);
            assert_eq!(got.limits.max_frame_len, 1000);
            assert_eq!(got.heartbeat_ms, 15);
            let mut framer = hs.into_framer();
            assert_eq!(framer.next_frame().unwrap().unwrap(), ping);
        }
    }

    #[test]
    fn a_v1_welcome_is_a_session_and_a_newer_one_is_refused() {
        let welcome_v = |version: u16| {
            let mut f = welcome().to_vec();
            // Welcome's version is the first field of its 50-byte root, at the body's end.
            let root = f.len() - 50;
            f[root..root + 2].copy_from_slice(&version.to_le_bytes());
            ClientHandshake::new(1 << 20).receive(&f)
        };
        assert_eq!(welcome_v(MIN_PROTOCOL_VERSION).unwrap().unwrap().version, 1);
        assert_eq!(welcome_v(PROTOCOL_VERSION).unwrap().unwrap().version, 2);
        assert_eq!(
            welcome_v(PROTOCOL_VERSION + 1),
            Err(HandshakeError::UnsupportedVersion(PROTOCOL_VERSION + 1))
        );
        let mut old = hello(None, None);
        old.version = 1;
        let f = hello_frame(&old).unwrap();
        assert_eq!(parse_hello(&f).unwrap().unwrap().0.session_version(), 1);
        old.version = 9;
        let f = hello_frame(&old).unwrap();
        assert_eq!(parse_hello(&f).unwrap().unwrap().0.session_version(), 2);
    }

    #[test]
    fn reject_close_and_stray_frames_fail() {
        let reject = encode_to_bytes(&Reject {
            code: Code::PeerIdTaken.as_u16(),
            reason: "taken".into(),
        })
        .unwrap();
        let close = encode_to_bytes(&Close {
            code: Code::HandshakeTimeout.as_u16(),
            reason: "slow".into(),
        })
        .unwrap();
        let ping = encode_to_bytes(&Ping { nonce: 1 }).unwrap();
        let run = |b: &[u8]| ClientHandshake::new(1 << 20).receive(b);
        assert_eq!(
            run(&reject),
            Err(HandshakeError::Refused {
                code: Code::PeerIdTaken.as_u16(),
                reason: "taken".into()
            })
        );
        assert!(matches!(
            run(&close),
            Err(HandshakeError::Refused { code, .. }) if code == Code::HandshakeTimeout.as_u16()
        ));
        assert_eq!(run(&ping), Err(HandshakeError::Unexpected(FrameKind::Ping)));
        assert!(matches!(run(&[0xff; 8]), Err(HandshakeError::Wire(_))));
    }

    #[test]
    fn parse_hello_applies_the_protocol_rules() {
        let f = hello_frame(&hello(Some("alice"), None)).unwrap();
        assert_eq!(parse_hello(&f[..f.len() - 1]).unwrap(), None);
        let (h, n) = parse_hello(&f).unwrap().unwrap();
        assert_eq!((h.peer_id, n), (Some("alice"), f.len()));
        assert!(!h.resumes_assigned_id());

        let refuse = |h: &Hello<'_>| parse_hello(&hello_frame(h).unwrap()).unwrap_err().code;
        assert_eq!(refuse(&hello(Some("42"), None)), Code::InvalidArgument);
        assert_eq!(refuse(&hello(Some("a b"), None)), Code::InvalidArgument);
        let mut old = hello(None, None);
        old.version = 0;
        assert_eq!(refuse(&old), Code::UnsupportedVersion);

        let f = hello_frame(&hello(Some("42"), Some(&[1; 16]))).unwrap();
        let (h, _) = parse_hello(&f).unwrap().unwrap();
        assert!(h.resumes_assigned_id());

        let ping = encode_to_bytes(&Ping { nonce: 1 }).unwrap();
        assert_eq!(parse_hello(&ping).unwrap_err().code, Code::BadFrame);
        let mut huge = vec![0u8; 8];
        huge[..4].copy_from_slice(&(MAX_HELLO_LEN + 1).to_le_bytes());
        huge[4] = FrameKind::Hello as u8;
        assert_eq!(parse_hello(&huge).unwrap_err().code, Code::TooLarge);
    }
}
