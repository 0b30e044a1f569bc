//! The HTTP/1.1 upgrade (RFC 6455 §4), both sides, over byte slices.
//!
//! Server: [`parse_upgrade`] reads the request from whatever bytes have arrived and answers
//! with an [`Upgrade`] (write [`Upgrade::response`], then the connection speaks WebSocket) or
//! a [`Refusal`] (write [`Refusal::response`] and close). Client: [`client_key`],
//! [`client_request`], then [`check_response`] on the bytes read back.
//!
//! peerd never negotiates extensions (permessage-deflate and friends): an offer is ignored,
//! as RFC 6455 §9.1 allows, and a server that answers with one fails the client's check.
//! HTTP parsing is httparse's; the accept key is tungstenite's `derive_accept_key`.

use std::fmt;

use tungstenite::handshake::derive_accept_key;

/// Header slots for one request or response. Browsers send 10-20 headers; more than this is
/// refused with 431 rather than parsed into a bigger table.
pub const MAX_HEADERS: usize = 64;

/// What the server accepts in an upgrade request.
#[derive(Clone, Copy, Debug)]
pub struct UpgradePolicy<'a> {
    /// The required request path (compared with the part of the target before `?`);
    /// `None` accepts any path.
    pub path: Option<&'a str>,
    /// The subprotocol the client must offer in `Sec-WebSocket-Protocol` (e.g. `peerd.v1`),
    /// echoed in the 101 response; `None` requires none and selects none.
    pub protocol: Option<&'a str>,
    /// Allowed `Origin` values (exact, ASCII case-insensitive); `None` allows any.
    ///
    /// A request without an `Origin` header is accepted even with a list: browsers always
    /// send one, so the list keeps other sites' pages from connecting (cross-site WebSocket
    /// hijacking), while non-browser clients (peerd's Rust client, loadgen, curl) send none
    /// and could forge any value anyway, so refusing them would protect nothing.
    pub origins: Option<&'a [String]>,
    /// The request head (request line and headers) must be complete within this many bytes,
    /// e.g. 8192; a longer one is refused with 431.
    pub max_header: usize,
}

/// An accepted upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// `Sec-WebSocket-Accept` for the response.
    pub accept: String,
    /// The selected subprotocol (the policy's, when it required one).
    pub protocol: Option<String>,
    /// The request target as sent: the path and any `?query` (e.g. a token the server
    /// wants to read).
    pub path: String,
    /// The `Origin` header, if the client sent one.
    pub origin: Option<String>,
}

impl Upgrade {
    /// The `101 Switching Protocols` response. No extensions are ever negotiated.
    pub fn response(&self) -> Vec<u8> {
        let mut r = String::with_capacity(160);
        r.push_str("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
        r.push_str("Connection: Upgrade\r\nSec-WebSocket-Accept: ");
        r.push_str(&self.accept);
        r.push_str("\r\n");
        if let Some(p) = &self.protocol {
            r.push_str("Sec-WebSocket-Protocol: ");
            r.push_str(p);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// A refused upgrade request: an HTTP error response to send before closing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status code (400, 403, 404, 405, 426, 431 or 505).
    pub status: u16,
    /// The reason phrase for the status line (`Bad Request`, ...).
    pub reason: &'static str,
    /// A plain-text body saying what was wrong and what to do; ends in `\n`.
    pub body: String,
    /// Extra response headers (`Allow`, `Upgrade`, `Sec-WebSocket-Version`).
    pub headers: Vec<(&'static str, String)>,
}

impl Refusal {
    /// A refusal with `status` (its standard reason phrase) and a one-line `body`. Besides
    /// what [`parse_upgrade`] refuses, a server answers with it when it cannot even read the
    /// request: 408 (not complete before its deadline), 503 (at its connection limit).
    pub fn new(status: u16, body: impl Into<String>) -> Refusal {
        let mut body = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Refusal {
            status,
            reason: reason_phrase(status),
            body,
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Refusal {
        self.headers.push((name, value.into()));
        self
    }

    /// The whole HTTP/1.1 response: status line, `Content-Type: text/plain; charset=utf-8`,
    /// `Content-Length`, `Connection: close`, the extra headers, then the body.
    pub fn response(&self) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.body.len()
        );
        for (name, value) in &self.headers {
            r.push_str(name);
            r.push_str(": ");
            r.push_str(value);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r.push_str(&self.body);
        r.into_bytes()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "upgrade refused: {} {}: {}",
            self.status,
            self.reason,
            self.body.trim_end()
        )
    }
}

impl std::error::Error for Refusal {}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Parse an upgrade request from the bytes received so far.
///
/// - `Ok(None)`: the request head is incomplete and still under `policy.max_header`; read
///   more and call again with all the bytes.
/// - `Ok(Some((upgrade, consumed)))`: accepted; the bytes after `consumed` already belong to
///   the WebSocket stream.
/// - `Err(refusal)`, checked in this order:
///   - malformed request line or headers: 400; HTTP version not 1.1: 505; more than
///     [`MAX_HEADERS`] headers or a head longer than `max_header`: 431;
///   - method not GET: 405 with `Allow: GET`;
///   - no `Host` header: 400;
///   - path mismatch: 404 (before the upgrade check, so a browser's stray
///     `GET /favicon.ico` gets a plain 404);
///   - not an upgrade (no `Upgrade: websocket` token, or no `upgrade` token in
///     `Connection`): 426 with `Upgrade: websocket` and a body saying how to connect;
///   - `Sec-WebSocket-Version` missing or not 13: 426 with `Sec-WebSocket-Version: 13`;
///   - `Sec-WebSocket-Key` missing, repeated, or not base64 of exactly 16 bytes: 400;
///   - `Origin` present and not in `policy.origins`: 403;
///   - `policy.protocol` is `Some(p)` and the offered subprotocols do not include `p`: 400.
pub fn parse_upgrade(
    bytes: &[u8],
    policy: &UpgradePolicy<'_>,
) -> Result<Option<(Upgrade, usize)>, Refusal> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let consumed = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) if n <= policy.max_header => n,
        Ok(httparse::Status::Partial) if bytes.len() < policy.max_header => return Ok(None),
        Ok(_) => return Err(too_large(policy.max_header)),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(
                431,
                format!("too many header fields (more than {MAX_HEADERS})"),
            ))
        }
        Err(httparse::Error::Version) => return Err(version_refusal()),
        Err(e) => return Err(Refusal::new(400, format!("malformed HTTP request: {e}"))),
    };
    if req.version != Some(1) {
        return Err(version_refusal());
    }
    if req.method != Some("GET") {
        return Err(Refusal::new(405, "a WebSocket upgrade is a GET request").with("Allow", "GET"));
    }
    let headers = &*req.headers;
    if find(headers, "host").next().is_none() {
        return Err(Refusal::new(400, "missing Host header"));
    }
    let target = req.path.unwrap_or("/");
    let path_part = target.split_once('?').map_or(target, |(p, _)| p);
    if let Some(want) = policy.path {
        if path_part != want {
            return Err(Refusal::new(
                404,
                format!("not found; the WebSocket endpoint is {want}"),
            ));
        }
    }
    if !has_token(headers, "upgrade", "websocket") || !has_token(headers, "connection", "upgrade") {
        let how = match policy.protocol {
            Some(p) => format!(
                "This is a peerd WebSocket endpoint. Connect with a WebSocket client offering \
                 subprotocol {p}."
            ),
            None => {
                "This is a peerd WebSocket endpoint. Connect with a WebSocket client.".to_string()
            }
        };
        return Err(Refusal::new(426, how).with("Upgrade", "websocket"));
    }
    let mut versions = find(headers, "sec-websocket-version").peekable();
    if versions.peek().is_none() || !versions.all(|v| v.trim_ascii() == b"13") {
        return Err(
            Refusal::new(426, "unsupported WebSocket version; use version 13")
                .with("Upgrade", "websocket")
                .with("Sec-WebSocket-Version", "13"),
        );
    }
    let mut keys = find(headers, "sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.trim_ascii(),
        (None, _) => return Err(Refusal::new(400, "missing Sec-WebSocket-Key header")),
        (Some(_), Some(_)) => return Err(Refusal::new(400, "more than one Sec-WebSocket-Key")),
    };
    if base64_decoded_len(key) != Some(16) {
        return Err(Refusal::new(
            400,
            "Sec-WebSocket-Key must be the base64 of 16 bytes",
        ));
    }
    let origin = match find(headers, "origin").next() {
        None => None,
        Some(o) => {
            let o = std::str::from_utf8(o.trim_ascii())
                .map_err(|_| Refusal::new(400, "Origin header is not UTF-8"))?;
            if let Some(allowed) = policy.origins {
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(o)) {
                    return Err(Refusal::new(403, "origin not allowed"));
                }
            }
            Some(o.to_string())
        }
    };
    let protocol = match policy.protocol {
        None => None,
        Some(p) => {
            let mut offered = find(headers, "sec-websocket-protocol").peekable();
            if offered.peek().is_none() {
                return Err(Refusal::new(
                    400,
                    format!("subprotocol {p} is required: offer subprotocol {p} in Sec-WebSocket-Protocol"),
                ));
            }
            let found = offered.any(|v| tokens(v).any(|t| t == p.as_bytes()));
            if !found {
                return Err(Refusal::new(
                    400,
                    format!("unsupported subprotocol: offer subprotocol {p}"),
                ));
            }
            Some(p.to_string())
        }
    };
    let upgrade = Upgrade {
        // The key is checked base64 (ASCII), exactly as the client sent it minus whitespace.
        accept: derive_accept_key(key),
        protocol,
        path: target.to_string(),
        origin,
    };
    Ok(Some((upgrade, consumed)))
}

fn version_refusal() -> Refusal {
    Refusal::new(505, "HTTP/1.1 is required for a WebSocket upgrade")
}

fn too_large(max: usize) -> Refusal {
    Refusal::new(431, format!("request head larger than {max} bytes"))
}

/// The values of every header called `name` (ASCII case-insensitive).
fn find<'h, 'b: 'h>(
    headers: &'h [httparse::Header<'b>],
    name: &'static str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The comma-separated tokens of one header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether any header called `name` lists `token` (ASCII case-insensitive).
fn has_token(headers: &[httparse::Header<'_>], name: &'static str, token: &str) -> bool {
    find(headers, name).any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The decoded length of padded standard base64, or `None` if it is not valid base64.
/// Nonzero bits in the last character's unused low bits are tolerated (they decode to the
/// same length; some encoders leave them).
fn base64_decoded_len(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() % 4 != 0 {
        return None;
    }
    let pad = s.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let body = &s[..s.len() - pad];
    if !body.iter().all(|c| BASE64.contains(c)) {
        return None;
    }
    Some(s.len() / 4 * 3 - pad)
}

/// A fresh `Sec-WebSocket-Key`: base64 of 16 random bytes. The key only proves the server
/// read the request (it is not a secret), so fastrand is enough.
pub fn client_key() -> String {
    let mut nonce = [0u8; 16];
    fastrand::fill(&mut nonce);
    base64_encode(&nonce)
}

/// The client's upgrade request. `path` is the request target (path and optional query);
/// an empty `protocol` sends no `Sec-WebSocket-Protocol` header.
pub fn client_request(host: &str, path: &str, protocol: &str, key: &str) -> Vec<u8> {
    let path = if path.is_empty() { "/" } else { path };
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !protocol.is_empty() {
        r.push_str("Sec-WebSocket-Protocol: ");
        r.push_str(protocol);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Why the client's upgrade failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The response is not valid HTTP, or not a valid WebSocket acceptance (missing
    /// `Upgrade`/`Connection`, an extension or subprotocol that was not offered).
    Malformed(String),
    /// The server answered with a status other than 101; `body` is whatever of the body had
    /// arrived (lossy UTF-8), which for a peerd refusal says what was wrong.
    Status {
        /// The HTTP status code.
        status: u16,
        /// The response body received so far.
        body: String,
    },
    /// `Sec-WebSocket-Accept` is missing or does not match the key.
    BadAccept,
    /// The server did not select the subprotocol the client required.
    NoProtocol,
    /// The response head did not end within `max_header` bytes.
    TooLarge,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Malformed(m) => write!(f, "malformed upgrade response: {m}"),
            HandshakeError::Status { status, body } => {
                write!(f, "server refused the upgrade with HTTP {status}")?;
                let body = body.trim();
                if !body.is_empty() {
                    write!(f, ": {body}")?;
                }
                Ok(())
            }
            HandshakeError::BadAccept => f.write_str("wrong Sec-WebSocket-Accept in the response"),
            HandshakeError::NoProtocol => {
                f.write_str("server did not select the required subprotocol")
            }
            HandshakeError::TooLarge => f.write_str("upgrade response head too large"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Check the server's response to [`client_request`].
///
/// `Ok(None)`: the head is incomplete (and under `max_header`); read more. `Ok(Some(n))`:
/// upgraded; the bytes after `n` are already WebSocket frames. Checks the 101 status,
/// `Upgrade: websocket`, `Connection: upgrade`, `Sec-WebSocket-Accept` against `key`, that
/// `protocol` (unless empty) was selected, and that no extension was. A non-101 status is
/// [`HandshakeError::Status`] with whatever of its body is in `bytes`.
pub fn check_response(
    bytes: &[u8],
    key: &str,
    protocol: &str,
    max_header: usize,
) -> Result<Option<usize>, HandshakeError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let n = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) if n <= max_header => n,
        Ok(httparse::Status::Partial) if bytes.len() < max_header => return Ok(None),
        Ok(_) => return Err(HandshakeError::TooLarge),
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    let headers = &*resp.headers;
    if status != 101 {
        let mut body = &bytes[n..];
        if let Some(len) = find(headers, "content-length")
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            body = &body[..len.min(body.len())];
        }
        return Err(HandshakeError::Status {
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        });
    }
    if !has_token(headers, "upgrade", "websocket") {
        return Err(HandshakeError::Malformed("no Upgrade: websocket".into()));
    }
    if !has_token(headers, "connection", "upgrade") {
        return Err(HandshakeError::Malformed("no Connection: upgrade".into()));
    }
    let expected = derive_accept_key(key.as_bytes());
    let mut accepts = find(headers, "sec-websocket-accept");
    match (accepts.next(), accepts.next()) {
        (Some(a), None) if a.trim_ascii() == expected.as_bytes() => {}
        _ => return Err(HandshakeError::BadAccept),
    }
    if find(headers, "sec-websocket-extensions").next().is_some() {
        return Err(HandshakeError::Malformed(
            "server selected an extension that was not offered".into(),
        ));
    }
    let mut selected = find(headers, "sec-websocket-protocol");
    match (selected.next(), selected.next(), protocol.is_empty()) {
        (None, _, true) => {}
        (Some(_), _, true) => {
            return Err(HandshakeError::Malformed(
                "server selected a subprotocol that was not offered".into(),
            ))
        }
        (Some(p), None, false) if p.trim_ascii() == protocol.as_bytes() => {}
        _ => return Err(HandshakeError::NoProtocol),
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            if !plain.is_empty() {
                assert_eq!(base64_decoded_len(encoded.as_bytes()), Some(plain.len()));
            }
        }
        assert_eq!(
            base64_encode(b"the sample nonce"),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        for bad in ["", "Zg=", "Z===", "Zg=a", "Z!==", "Zm9v\n"] {
            assert_eq!(base64_decoded_len(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
