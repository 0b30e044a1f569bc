//! Where a peer connects: an [`Endpoint`], parsed from the strings users type
//! (`--server`, config files) with typed errors.
//!
//! | form | transport |
//! |---|---|
//! | `host:port`, `tcp://host:port` | peerd frames over TCP |
//! | `unix:/path` | peerd frames over a Unix stream socket |
//! | `tls://host:port` | peerd frames inside TLS |
//! | `ws://host[:port][/path]` | one peerd frame per binary WebSocket message (port 80, path `/` by default) |
//! | `wss://host[:port][/path]` | the same inside TLS (port 443 by default) |
//!
//! Hosts are DNS names, IPv4 literals or bracketed IPv6 literals (`[::1]:7400`). Schemes
//! are case-insensitive. A WebSocket path may carry a query (`/peerd?room=a`) but no
//! fragment; it is sent as the request target, so it must be printable ASCII (percent-encode
//! the rest).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// A host and a port. The host is kept without IPv6 brackets; [`fmt::Display`] adds them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// DNS name, IPv4 literal or IPv6 literal (without brackets).
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
}

impl HostPort {
    /// The host as an IP address, when it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(a: SocketAddr) -> Self {
        HostPort {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

/// A peerd server's address with its transport. See the [module docs](self) for the
/// forms [`Endpoint::parse`] accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `host:port` or `tcp://host:port`: peerd frames over TCP.
    Tcp(HostPort),
    /// `unix:/path`: peerd frames over a Unix stream socket.
    Unix(PathBuf),
    /// `tls://host:port`: peerd frames inside TLS.
    Tls(HostPort),
    /// `ws://host[:port][/path]`: one peerd frame per binary WebSocket message.
    Ws {
        /// Where to connect; also the `Host` header.
        addr: HostPort,
        /// The request target, starting with `/`.
        path: String,
    },
    /// `wss://host[:port][/path]`: WebSocket inside TLS.
    Wss {
        /// Where to connect; also the `Host` header and the TLS server name.
        addr: HostPort,
        /// The request target, starting with `/`.
        path: String,
    },
}

/// Why a string is not an [`Endpoint`]. Local misuse: the string was typed wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Nothing was given.
    #[error("empty endpoint")]
    Empty,
    /// A `scheme://` this client does not speak.
    #[error("unknown scheme {0:?} (use tcp://, tls://, ws://, wss:// or unix:)")]
    UnknownScheme(String),
    /// `tcp://`, `tls://` and bare endpoints need an explicit port.
    #[error("missing port (host:port)")]
    MissingPort,
    /// The port is not a number in 1..=65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// The host is empty, has characters no host name has, or is a malformed IPv6
    /// literal (user names, `user@host`, are not supported either).
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    /// `tcp://` and `tls://` endpoints have no path.
    #[error("unexpected path {0:?} (only ws:// and wss:// endpoints have one)")]
    UnexpectedPath(String),
    /// A WebSocket path with a fragment, spaces, control or non-ASCII characters.
    #[error("invalid path {0:?} (printable ASCII, no '#'; percent-encode the rest)")]
    InvalidPath(String),
    /// `unix:` with no path after it.
    #[error("missing socket path after unix:")]
    MissingUnixPath,
}

impl Endpoint {
    /// Parse one of the forms in the [module docs](self).
    pub fn parse(s: &str) -> Result<Endpoint, EndpointError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(EndpointError::Empty);
        }
        if let Some(path) = strip_prefix_ignore_case(s, "unix:") {
            if path.is_empty() {
                return Err(EndpointError::MissingUnixPath);
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            // Bare host:port, as `connect` has always taken.
            return Ok(Endpoint::Tcp(parse_authority(s, None)?));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let no_path = |e: Endpoint| {
            if path.is_empty() || path == "/" {
                Ok(e)
            } else {
                Err(EndpointError::UnexpectedPath(path.to_string()))
            }
        };
        match scheme.to_ascii_lowercase().as_str() {
            "tcp" => no_path(Endpoint::Tcp(parse_authority(authority, None)?)),
            "tls" => no_path(Endpoint::Tls(parse_authority(authority, None)?)),
            "ws" => Ok(Endpoint::Ws {
                addr: parse_authority(authority, Some(80))?,
                path: parse_path(path)?,
            }),
            "wss" => Ok(Endpoint::Wss {
                addr: parse_authority(authority, Some(443))?,
                path: parse_path(path)?,
            }),
            _ => Err(EndpointError::UnknownScheme(scheme.to_string())),
        }
    }

    /// The host and port, for every endpoint but a Unix socket.
    pub fn host_port(&self) -> Option<&HostPort> {
        match self {
            Endpoint::Tcp(a) | Endpoint::Tls(a) => Some(a),
            Endpoint::Ws { addr, .. } | Endpoint::Wss { addr, .. } => Some(addr),
            Endpoint::Unix(_) => None,
        }
    }

    /// Whether the transport runs inside TLS (`tls://`, `wss://`).
    pub fn uses_tls(&self) -> bool {
        matches!(self, Endpoint::Tls(_) | Endpoint::Wss { .. })
    }

    /// The WebSocket request target (`ws://`, `wss://`).
    pub fn websocket_path(&self) -> Option<&str> {
        match self {
            Endpoint::Ws { path, .. } | Endpoint::Wss { path, .. } => Some(path),
            _ => None,
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::parse(s)
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        Endpoint::Tcp(a.into())
    }
}

/// The canonical form, which [`Endpoint::parse`] reads back to the same value.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tls(a) => write!(f, "tls://{a}"),
            Endpoint::Ws { addr, path } => write!(f, "ws://{addr}{path}"),
            Endpoint::Wss { addr, path } => write!(f, "wss://{addr}{path}"),
        }
    }
}

/// What the endpoint-taking constructors accept: a string to parse, or an [`Endpoint`]
/// (or a `SocketAddr`, which is TCP). `Debug` names the value in errors.
pub trait ToEndpoint: fmt::Debug {
    /// The endpoint, or why the value is not one.
    fn to_endpoint(&self) -> Result<Endpoint, EndpointError>;
}

impl ToEndpoint for Endpoint {
    fn to_endpoint(&self) -> Result<Endpoint, EndpointError> {
        Ok(self.clone())
    }
}

impl ToEndpoint for str {
    fn to_endpoint(&self) -> Result<Endpoint, EndpointError> {
        Endpoint::parse(self)
    }
}

impl ToEndpoint for String {
    fn to_endpoint(&self) -> Result<Endpoint, EndpointError> {
        Endpoint::parse(self)
    }
}

impl ToEndpoint for SocketAddr {
    fn to_endpoint(&self) -> Result<Endpoint, EndpointError> {
        Ok((*self).into())
    }
}

impl<T: ToEndpoint + ?Sized> ToEndpoint for &T {
    fn to_endpoint(&self) -> Result<Endpoint, EndpointError> {
        (**self).to_endpoint()
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `host:port`, `[v6]:port`, or (with a default port) `host` / `[v6]`.
fn parse_authority(s: &str, default_port: Option<u16>) -> Result<HostPort, EndpointError> {
    if s.is_empty() {
        return Err(EndpointError::InvalidHost(String::new()));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(EndpointError::InvalidHost(s.to_string()));
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(EndpointError::InvalidHost(v6.to_string()));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| EndpointError::InvalidHost(s.to_string()))?,
            ),
        };
        (v6, port)
    } else {
        match s.rsplit_once(':') {
            // Two colons and no brackets: an IPv6 literal someone forgot to bracket.
            Some((h, _)) if h.contains(':') => {
                return Err(EndpointError::InvalidHost(h.to_string()));
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if !host.contains(':') && !valid_host_name(host) {
        return Err(EndpointError::InvalidHost(host.to_string()));
    }
    let port = match (port, default_port) {
        (Some(p), _) => match p.parse::<u16>() {
            Ok(n) if n != 0 => n,
            _ => return Err(EndpointError::InvalidPort(p.to_string())),
        },
        (None, Some(d)) => d,
        (None, None) => return Err(EndpointError::MissingPort),
    };
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// Letters, digits, `-`, `.` and `_` (seen in real internal names): DNS names and IPv4
/// literals. Anything else (`@`, spaces, `%`) is a typo or an attempt at something this
/// client does not do.
fn valid_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn parse_path(p: &str) -> Result<String, EndpointError> {
    if p.is_empty() {
        return Ok("/".to_string());
    }
    // The path goes into the request line as is: no CR/LF or spaces can be smuggled in.
    if p.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        Ok(p.to_string())
    } else {
        Err(EndpointError::InvalidPath(p.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    fn ok(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> EndpointError {
        Endpoint::parse(s).expect_err(s)
    }

    #[test]
    fn bare_and_tcp_forms_are_tcp() {
        assert_eq!(ok("127.0.0.1:7400"), Endpoint::Tcp(hp("127.0.0.1", 7400)));
        assert_eq!(ok("localhost:1"), Endpoint::Tcp(hp("localhost", 1)));
        assert_eq!(
            ok("tcp://example.com:7400"),
            Endpoint::Tcp(hp("example.com", 7400))
        );
        assert_eq!(ok("TCP://h:7400/"), Endpoint::Tcp(hp("h", 7400)));
        assert_eq!(ok("[::1]:7400"), Endpoint::Tcp(hp("::1", 7400)));
        assert_eq!(ok("  tcp://[fe80::1]:9  "), Endpoint::Tcp(hp("fe80::1", 9)));
    }

    #[test]
    fn tls_unix_and_websocket_forms() {
        assert_eq!(
            ok("tls://localhost:7443"),
            Endpoint::Tls(hp("localhost", 7443))
        );
        assert_eq!(
            ok("unix:/run/peerd.sock"),
            Endpoint::Unix("/run/peerd.sock".into())
        );
        assert_eq!(ok("unix:rel.sock"), Endpoint::Unix("rel.sock".into()));
        assert_eq!(
            ok("ws://127.0.0.1:7401"),
            Endpoint::Ws {
                addr: hp("127.0.0.1", 7401),
                path: "/".into()
            }
        );
        assert_eq!(
            ok("wss://example.com/peerd?room=a"),
            Endpoint::Wss {
                addr: hp("example.com", 443),
                path: "/peerd?room=a".into()
            }
        );
        assert_eq!(
            ok("Ws://[::1]/x"),
            Endpoint::Ws {
                addr: hp("::1", 80),
                path: "/x".into()
            }
        );
        assert!(ok("wss://h:1/").uses_tls());
        assert!(ok("tls://h:1").uses_tls());
        assert!(!ok("ws://h:1").uses_tls());
        assert_eq!(ok("ws://h:1/a").websocket_path(), Some("/a"));
        assert_eq!(ok("unix:/s").host_port(), None);
    }

    #[test]
    fn display_reads_back() {
        for s in [
            "tcp://127.0.0.1:7400",
            "tcp://[::1]:7400",
            "unix:/tmp/p.sock",
            "tls://localhost:7443",
            "ws://h:80/",
            "wss://[::1]:443/a/b?c=d",
        ] {
            assert_eq!(ok(s).to_string(), s);
            assert_eq!(ok(&ok(s).to_string()), ok(s));
        }
        assert_eq!(ok("h:1").to_string(), "tcp://h:1");
        let a: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(Endpoint::from(a), ok("[::1]:5"));
        assert_eq!(a.to_endpoint().unwrap(), ok("tcp://[::1]:5"));
        assert_eq!("ws://h:2".to_endpoint().unwrap(), ok("ws://h:2/"));
    }

    #[test]
    fn bad_endpoints_say_what_is_wrong() {
        assert_eq!(err(""), EndpointError::Empty);
        assert_eq!(err("   "), EndpointError::Empty);
        assert_eq!(
            err("http://h:1"),
            EndpointError::UnknownScheme("http".into())
        );
        assert_eq!(err("localhost"), EndpointError::MissingPort);
        assert_eq!(err("tls://localhost"), EndpointError::MissingPort);
        assert_eq!(err("h:0"), EndpointError::InvalidPort("0".into()));
        assert_eq!(err("h:65536"), EndpointError::InvalidPort("65536".into()));
        assert_eq!(err("ws://h:x/"), EndpointError::InvalidPort("x".into()));
        assert_eq!(err("h:"), EndpointError::InvalidPort("".into()));
        assert_eq!(err(":7400"), EndpointError::InvalidHost("".into()));
        assert_eq!(err("::1:7400"), EndpointError::InvalidHost("::1".into()));
        assert_eq!(err("[::g]:1"), EndpointError::InvalidHost("::g".into()));
        assert_eq!(err("[::1:1"), EndpointError::InvalidHost("[::1:1".into()));
        assert_eq!(err("[::1]x"), EndpointError::InvalidHost("[::1]x".into()));
        assert_eq!(
            err("ws://user@h:1/"),
            EndpointError::InvalidHost("user@h".into())
        );
        assert_eq!(err("tcp://"), EndpointError::InvalidHost("".into()));
        assert_eq!(
            err("tcp://h:1/x"),
            EndpointError::UnexpectedPath("/x".into())
        );
        assert_eq!(
            err("tls://h:1/x"),
            EndpointError::UnexpectedPath("/x".into())
        );
        assert_eq!(
            err("ws://h:1/a b"),
            EndpointError::InvalidPath("/a b".into())
        );
        assert_eq!(
            err("ws://h:1/a\r\nX: y"),
            EndpointError::InvalidPath("/a\r\nX: y".into())
        );
        assert_eq!(
            err("wss://h/#frag"),
            EndpointError::InvalidPath("/#frag".into())
        );
        assert_eq!(err("ws://h/é"), EndpointError::InvalidPath("/é".into()));
        assert_eq!(err("unix:"), EndpointError::MissingUnixPath);
        // Every error names the offending part.
        assert!(err("ws://h:1/a b").to_string().contains("/a b"));
    }
}
