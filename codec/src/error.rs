//! Errors, split by who is at fault.
//!
//! [`WireError`]: the bytes that arrived are not a valid frame. The peer is at fault; the
//! server answers with a Close carrying [`WireError::code`] and drops the connection.
//! [`EncodeError`]: the local caller asked to send something the protocol cannot carry.

use crate::code::Code;
use crate::kind::FrameKind;

/// The peer sent bytes that are not a valid peerd frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The header announces a body longer than the receiver accepts.
    #[error("frame body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced body length.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
    /// The frame-kind byte is not one this version knows.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// Flags or reserved header bytes are non-zero.
    #[error("non-zero flags (0x{flags:02x}) or reserved bytes (0x{reserved:04x}) in header")]
    ReservedBits {
        /// The flags byte.
        flags: u8,
        /// The reserved u16.
        reserved: u16,
    },
    /// The body is not a valid archive of the message the header names (bad pointers,
    /// out-of-range lengths, invalid UTF-8, an unknown enum tag, truncation, ...).
    #[error("invalid {kind:?} archive: {check}: {detail}")]
    InvalidArchive {
        /// The kind named by the header.
        kind: FrameKind,
        /// The rule broken, named as in docs/PROTOCOL.md §3 (one of [`crate::check::rule`]).
        check: &'static str,
        /// Where and how, in body offsets, for humans; not a stable string.
        detail: String,
    },
    /// A frame is well-formed but breaks a protocol rule (for example a Hello after the
    /// handshake, or a peer id with forbidden characters).
    #[error("protocol violation: {0}")]
    Violation(&'static str),
}

impl WireError {
    /// The rule of docs/PROTOCOL.md §2 or §3 the frame broke (one of
    /// [`crate::check::rule`]), or `None` for a [`WireError::Violation`] of a protocol rule.
    pub fn check(&self) -> Option<&'static str> {
        use crate::check::rule;
        Some(match self {
            WireError::TooLarge { .. } => rule::BODY_WITHIN_THE_LIMIT,
            WireError::UnknownKind(_) => rule::KNOWN_FRAME_KIND,
            WireError::ReservedBits { flags, .. } if *flags != 0 => rule::FLAGS_ARE_ZERO,
            WireError::ReservedBits { .. } => rule::RESERVED_IS_ZERO,
            WireError::InvalidArchive { check, .. } => check,
            WireError::Violation(_) => return None,
        })
    }

    /// The close code a receiver sends back for this fault.
    pub fn code(&self) -> Code {
        match self {
            WireError::TooLarge { .. } => Code::TooLarge,
            _ => Code::BadFrame,
        }
    }
}

/// A message could not be encoded. The local caller is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded body would exceed the limit passed to `encode` (or the format's own
    /// limit of 2 GiB - 1, whichever is smaller; `max` says which).
    #[error("encoded {kind:?} body of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The message kind.
        kind: FrameKind,
        /// Encoded body length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// rkyv refused to serialize the value (in practice: a string of 1 GiB or more, or an
    /// offset past 32-bit relative pointers).
    #[error("serializing {kind:?}: {detail}")]
    Serialize {
        /// The message kind.
        kind: FrameKind,
        /// rkyv's message.
        detail: String,
    },
}
