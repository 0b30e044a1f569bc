//! peerd close codes <-> WebSocket close statuses.
//!
//! Over WebSocket, peerd closes a connection twice over: a peerd `Close` frame with its code
//! (inside a binary message), then a WebSocket Close frame whose status carries the same
//! information for clients that only see the WebSocket layer (a browser's
//! `CloseEvent.code`). peerd codes 1000-1019 cannot be sent as they are: RFC 6455 gives most
//! of 1004-1019 other meanings or forbids them. So the codes with a WebSocket equivalent use
//! it, and every other peerd code `c` goes to the private-use range as `4000 + (c - 1000)`,
//! which tells the exact peerd code.
//!
//! | peerd code | name                  | WebSocket status | WebSocket meaning              |
//! |-----------:|-----------------------|-----------------:|--------------------------------|
//! | 1000       | `normal`              | 1000             | normal closure                 |
//! | 1001       | `shutdown`            | 1001             | going away                     |
//! | 1002       | `bad_frame`           | 1002             | protocol error                 |
//! | 1003       | `too_large`           | 1009             | message too big                |
//! | 1004       | `unauthorized`        | 4004             | private use: peerd 1004        |
//! | 1005       | `peer_id_taken`       | 4005             | private use: peerd 1005        |
//! | 1006       | `unknown_peer`        | 4006             | private use: peerd 1006        |
//! | 1007       | `method_not_found`    | 4007             | private use: peerd 1007        |
//! | 1008       | `timeout`             | 4008             | private use: peerd 1008        |
//! | 1009       | `overloaded`          | 1013             | try again later                |
//! | 1010       | `slow_consumer`       | 4010             | private use: peerd 1010        |
//! | 1011       | `replaced`            | 4011             | private use: peerd 1011        |
//! | 1012       | `peer_gone`           | 4012             | private use: peerd 1012        |
//! | 1013       | `unsupported_version` | 4013             | private use: peerd 1013        |
//! | 1014       | `handshake_timeout`   | 4014             | private use: peerd 1014        |
//! | 1015       | `limit_exceeded`      | 4015             | private use: peerd 1015        |
//! | 1016       | `invalid_argument`    | 4016             | private use: peerd 1016        |
//! | 1017       | `not_member`          | 4017             | private use: peerd 1017        |
//! | 1018       | `internal`            | 1011             | internal error                 |
//! | 1019       | `idle_timeout`        | 4019             | private use: peerd 1019        |
//! | 1020       | `token_expired`       | 4020             | private use: peerd 1020        |
//! | 1021       | `rate_limited`        | 4021             | private use: peerd 1021        |
//! | 1022       | `reconnect`           | 4022             | private use: peerd 1022        |
//! | 4000-4999  | application codes     | unchanged        | private use                    |
//! | any other  | (0, unknown numbers)  | 1008             | policy violation (generic)     |
//!
//! [`code_for`] inverts the table. The private-use images of peerd codes (4004-4008,
//! 4010-4017, 4019-4022) read back as those peerd codes, so an application code with one of those
//! numbers cannot round-trip through a WebSocket close; peerd's Close frames carry only
//! defined codes, and application codes travel in RpcError frames, so this does not arise
//! from peerd itself. 1008 reads back as `None`: it stands for no one code.
//!
//! Statuses the WebSocket layer itself sends ([`crate::WsError`]: 1002, 1003, 1007, 1009) are
//! not peerd codes; [`code_for`] maps 1002 and 1009 back because peerd's own `bad_frame` and
//! `too_large` use them too, and says `None` for 1003 and 1007.

use peerd_codec::Code;

/// peerd codes with a WebSocket status of the same meaning, as (peerd code, WebSocket status).
const EQUIVALENTS: [(Code, u16); 6] = [
    (Code::Normal, 1000),
    (Code::Shutdown, 1001),
    (Code::BadFrame, 1002),
    (Code::TooLarge, 1009),
    (Code::Overloaded, 1013),
    (Code::Internal, 1011),
];

/// Base of the private-use images: peerd code `c` -> `PRIVATE_BASE + (c - 1000)`.
const PRIVATE_BASE: u16 = 4000;

/// The status sent for a code with no defined mapping (RFC 6455's generic status).
pub const STATUS_UNKNOWN: u16 = 1008;

/// The WebSocket close status for a peerd Close/Reject code; see the table in the
/// [module docs](self).
pub fn status_for(code: u16) -> u16 {
    if let Some(&(_, status)) = EQUIVALENTS.iter().find(|(c, _)| c.as_u16() == code) {
        return status;
    }
    match Code::from_u16(code) {
        Some(c) if (1000..2000).contains(&c.as_u16()) => PRIVATE_BASE + (code - 1000),
        _ if (4000..5000).contains(&code) => code,
        _ => STATUS_UNKNOWN,
    }
}

/// The inverse of [`status_for`] for clients: `Some(peerd code)` for a status `status_for`
/// produces (application codes 4000-4999 come back unchanged, except the images of peerd
/// codes), `None` for any other status (including 1008, which stands for no one code).
pub fn code_for(status: u16) -> Option<u16> {
    if let Some(&(code, _)) = EQUIVALENTS.iter().find(|(_, s)| *s == status) {
        return Some(code.as_u16());
    }
    if (4000..5000).contains(&status) {
        let peerd = status - PRIVATE_BASE + 1000;
        // Only a code that status_for sends to the private range is an image; 4000-4003,
        // 4009 and 4018 (whose peerd codes have WebSocket equivalents) and the numbers of
        // no peerd code are application codes.
        let is_image = matches!(Code::from_u16(peerd), Some(c)
            if !EQUIVALENTS.iter().any(|(e, _)| *e == c));
        return Some(if is_image { peerd } else { status });
    }
    None
}

/// A Close frame payload: `status` big-endian, then `reason` cut at a char boundary so the
/// whole payload fits the 125 bytes a control frame may carry.
pub fn close_payload(status: u16, reason: &str) -> Vec<u8> {
    const MAX_REASON: usize = crate::frame::MAX_CONTROL_PAYLOAD - 2;
    let mut cut = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut p = Vec::with_capacity(2 + cut);
    p.extend_from_slice(&status.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..cut]);
    p
}
