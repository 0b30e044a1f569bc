//! Protocol constants and the validation rules for names.

use crate::error::WireError;

/// The highest protocol version this crate speaks. Version 2 added the Refresh frame
/// (`docs/PROTOCOL.md` §6.8); everything of version 1 is unchanged in it.
pub const PROTOCOL_VERSION: u16 = 2;

/// The lowest protocol version this crate still speaks: a v2 server serves v1 clients
/// (Welcome.version = the lower of the two), and a v2 client accepts a v1 server.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Default maximum frame body a peer may send (1 MiB). Servers and clients may configure
/// their own; the server announces its limit in Welcome.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 1 << 20;

/// The largest body the Hello may have, whatever the configured frame limit: a client that
/// has not authenticated yet gets no more than this.
pub const MAX_HELLO_LEN: u32 = 16 * 1024;

/// Longest peer id, in bytes.
pub const MAX_PEER_ID_LEN: usize = 64;

/// Longest RPC method or event name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Default longest topic (room) name, in bytes.
pub const DEFAULT_MAX_TOPIC_LEN: u32 = 128;

/// Check a peer id a client declares in Hello.
///
/// 1 to [`MAX_PEER_ID_LEN`] bytes of `A-Z a-z 0-9 . _ - : @`, and not all digits: purely
/// numeric ids are reserved for ids the server assigns, so a declared id can never collide
/// with an assigned one.
pub fn validate_declared_peer_id(id: &str) -> Result<(), WireError> {
    validate_peer_id(id)?;
    if id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WireError::Violation(
            "declared peer ids must not be all digits (reserved for server-assigned ids)",
        ));
    }
    Ok(())
}

/// Check the shape of any peer id (declared or assigned).
pub fn validate_peer_id(id: &str) -> Result<(), WireError> {
    if id.is_empty() || id.len() > MAX_PEER_ID_LEN {
        return Err(WireError::Violation("peer id must be 1 to 64 bytes"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'))
    {
        return Err(WireError::Violation(
            "peer id may contain only A-Z a-z 0-9 . _ - : @",
        ));
    }
    Ok(())
}

/// Check a topic or room name: 1 to `max_len` bytes of UTF-8 with no control characters.
pub fn validate_topic(name: &str, max_len: u32) -> Result<(), WireError> {
    if name.is_empty() || name.len() > max_len as usize {
        return Err(WireError::Violation("topic name length out of range"));
    }
    if name.chars().any(char::is_control) {
        return Err(WireError::Violation(
            "topic name must not contain control characters",
        ));
    }
    Ok(())
}

/// Check an RPC method or event name: 1 to [`MAX_NAME_LEN`] bytes, no control characters.
pub fn validate_name(name: &str) -> Result<(), WireError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(WireError::Violation("name must be 1 to 128 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(WireError::Violation(
            "name must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_rules() {
        assert!(validate_declared_peer_id("alice").is_ok());
        assert!(validate_declared_peer_id("node-7.eu:1@x_y").is_ok());
        assert!(validate_declared_peer_id("42").is_err());
        assert!(validate_peer_id("42").is_ok());
        assert!(validate_declared_peer_id("").is_err());
        assert!(validate_declared_peer_id(&"a".repeat(65)).is_err());
        assert!(validate_declared_peer_id(&"a".repeat(64)).is_ok());
        assert!(validate_declared_peer_id("a b").is_err());
        assert!(validate_declared_peer_id("é").is_err());
    }

    #[test]
    fn topic_rules() {
        assert!(validate_topic("chat", 128).is_ok());
        assert!(validate_topic("room/ü 1", 128).is_ok());
        assert!(validate_topic("", 128).is_err());
        assert!(validate_topic("a\nb", 128).is_err());
        assert!(validate_topic("abcde", 4).is_err());
    }
}
