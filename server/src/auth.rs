//! Who a peer is and what it may do.
//!
//! An authenticator (`ListenOptions::authenticate_with`, or the JWT verifier of
//! [`crate::jwt`]) turns a Hello's credentials into a [`Grant`]: the peer id they prove,
//! when they expire, and the [`Permissions`] they carry. The shard keeps the grant on the
//! connection and checks every [`Action`] a peer's frame asks for against it before
//! carrying the frame out (`dispatch`), then asks the embedder's authorizer
//! (`ListenOptions::authorize`), if any. A refusal is a [`Denied`]: the peer gets its code
//! (`unauthorized`, or `token_expired`) and reason, and nothing is delivered.
//!
//! Permissions are lists of [`Patterns`]: a name matches a pattern equal to it, or a
//! pattern ending in `*` whose part before the `*` starts it. `chat` matches only `chat`
//! (never `chat-admin`); `chat-*` matches `chat-1` and `chat-`; `*` matches everything.
//!
//! This module is a leaf: plain data and matching, no shard state.

use std::borrow::Cow;
use std::time::SystemTime;

use peerd_codec::Code;

/// A set of name patterns (topics, rooms, methods, event names).
///
/// Kept as two boxed slices and a flag: a peer's permission set is built once per token and
/// checked on every action, so it should be small and its check a short scan. Tokens carry
/// a handful of patterns; a linear scan over them beats hashing the name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns {
    /// `*`: every name.
    any: bool,
    /// Whole names.
    exact: Box<[Box<str>]>,
    /// The part before a trailing `*`.
    prefixes: Box<[Box<str>]>,
}

/// A pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// An empty string matches nothing anyone can name; it is a mistake.
    #[error("an empty pattern")]
    Empty,
    /// `*` anywhere but at the end: peerd's patterns are exact names or prefixes, and a
    /// `*` inside a pattern would silently be taken literally.
    #[error("pattern {0:?}: `*` may only be the last character")]
    InnerStar(String),
}

impl Patterns {
    /// Matches nothing.
    pub fn none() -> Patterns {
        Patterns::default()
    }

    /// Matches everything (`*`).
    pub fn all() -> Patterns {
        Patterns {
            any: true,
            ..Patterns::default()
        }
    }

    /// Patterns from strings: exact names, `prefix*`, or `*`.
    pub fn parse<I, S>(patterns: I) -> Result<Patterns, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let (mut any, mut exact, mut prefixes) = (false, Vec::new(), Vec::new());
        for p in patterns {
            let p = p.as_ref();
            if p.is_empty() {
                return Err(PatternError::Empty);
            }
            let (body, star) = match p.strip_suffix('*') {
                Some(body) => (body, true),
                None => (p, false),
            };
            if body.contains('*') {
                return Err(PatternError::InnerStar(p.to_string()));
            }
            match (star, body.is_empty()) {
                (true, true) => any = true,
                (true, false) => prefixes.push(Box::from(body)),
                (false, _) => exact.push(Box::from(body)),
            }
        }
        Ok(Patterns {
            any,
            exact: exact.into(),
            prefixes: prefixes.into(),
        })
    }

    /// Whether `name` matches one of the patterns.
    pub fn matches(&self, name: &str) -> bool {
        self.any
            || self.exact.iter().any(|e| &**e == name)
            || self.prefixes.iter().any(|p| name.starts_with(&**p))
    }

    /// Whether nothing matches.
    pub fn is_empty(&self) -> bool {
        !self.any && self.exact.is_empty() && self.prefixes.is_empty()
    }
}

/// What a peer may do. [`Permissions::all`] allows everything; a token's `peerd` claim
/// builds a restricted set in which whatever the claim does not list is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Topics it may join.
    pub join: Patterns,
    /// Topics it may publish to, and send to one member of (TopicSend).
    pub publish: Patterns,
    /// Topics it may watch, and list the members of.
    pub watch: Patterns,
    /// Methods it may call on the server.
    pub call: Patterns,
    /// Methods it may call on other peers.
    pub call_peers: Patterns,
    /// Events it may send, to the server or directly to a peer.
    pub emit: Patterns,
    /// Rooms it may signal in.
    pub signal: Patterns,
    /// Whether it may broadcast to every peer.
    pub broadcast: bool,
    /// Whether it may list every connected peer and watch them all (the global watch).
    pub peers: bool,
}

impl Permissions {
    /// Everything allowed.
    pub fn all() -> Permissions {
        Permissions {
            join: Patterns::all(),
            publish: Patterns::all(),
            watch: Patterns::all(),
            call: Patterns::all(),
            call_peers: Patterns::all(),
            emit: Patterns::all(),
            signal: Patterns::all(),
            broadcast: true,
            peers: true,
        }
    }

    /// Nothing allowed (a starting point to add to).
    pub fn none() -> Permissions {
        Permissions::default()
    }

    /// Whether `action` is allowed; the refusal says what was refused.
    pub fn check(&self, action: &Action<'_>) -> Result<(), Denied> {
        let (allowed, what) = match *action {
            Action::Join { topic } => (self.join.matches(topic), "join topic"),
            Action::Publish { topic } => (self.publish.matches(topic), "publish to topic"),
            Action::SendToMember { topic, .. } => (self.publish.matches(topic), "send on topic"),
            Action::Watch { topic: Some(t) } => (self.watch.matches(t), "watch topic"),
            Action::ListPeers { topic: Some(t) } => {
                (self.watch.matches(t), "list the members of topic")
            }
            Action::Watch { topic: None } | Action::ListPeers { topic: None } => {
                return if self.peers {
                    Ok(())
                } else {
                    Err(Denied::new("not allowed to list or watch every peer"))
                };
            }
            Action::Call { method } => (self.call.matches(method), "call method"),
            Action::CallPeer { method, .. } => {
                (self.call_peers.matches(method), "call on peers method")
            }
            Action::Emit { name, .. } => (self.emit.matches(name), "emit event"),
            Action::Broadcast { .. } => {
                return if self.broadcast {
                    Ok(())
                } else {
                    Err(Denied::new("not allowed to broadcast"))
                };
            }
            Action::Signal { room, .. } => (self.signal.matches(room), "signal in room"),
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied::new(format!(
                "not allowed to {what} {:?}",
                action.name()
            )))
        }
    }
}

/// Something a peer's frame asks the server to do, as permissions and the embedder's
/// authorizer see it. Leaving a topic, stopping a watch, answering calls and heartbeats
/// are not actions: a peer may always undo or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action<'a> {
    /// Join a topic.
    Join {
        /// The topic.
        topic: &'a str,
    },
    /// Publish to every member of a topic.
    Publish {
        /// The topic.
        topic: &'a str,
    },
    /// Send to one member of a topic (TopicSend); governed by the `publish` permission.
    SendToMember {
        /// The topic.
        topic: &'a str,
        /// The receiving member.
        to: &'a str,
    },
    /// Watch a topic's members (`Some`), or every connected peer (`None`).
    Watch {
        /// The topic, or `None` for the global watch.
        topic: Option<&'a str>,
    },
    /// List a topic's members (`Some`), or every connected peer (`None`).
    ListPeers {
        /// The topic, or `None` for every connected peer.
        topic: Option<&'a str>,
    },
    /// Call a method on the server.
    Call {
        /// The method.
        method: &'a str,
    },
    /// Call a method on another peer through the server.
    CallPeer {
        /// The callee.
        peer: &'a str,
        /// The method.
        method: &'a str,
    },
    /// Send an event to the server's listeners (`to` None) or to one peer.
    Emit {
        /// The event name.
        name: &'a str,
        /// The receiving peer, or `None` for the server.
        to: Option<&'a str>,
    },
    /// Broadcast an event to every other peer.
    Broadcast {
        /// The event name.
        name: &'a str,
    },
    /// Relay a WebRTC signal in a room.
    Signal {
        /// The room.
        room: &'a str,
        /// The target, or `None` for an offer to the whole room.
        to: Option<&'a str>,
    },
}

impl Action<'_> {
    /// The name the action's permission is matched against: the topic, room, method or
    /// event name (empty for the global watch and list).
    pub fn name(&self) -> &str {
        match *self {
            Action::Join { topic }
            | Action::Publish { topic }
            | Action::SendToMember { topic, .. } => topic,
            Action::Watch { topic } | Action::ListPeers { topic } => topic.unwrap_or(""),
            Action::Call { method } | Action::CallPeer { method, .. } => method,
            Action::Emit { name, .. } | Action::Broadcast { name } => name,
            Action::Signal { room, .. } => room,
        }
    }
}

/// What authenticating a peer established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The peer id the credentials prove (a token's `sub`). When the Hello declared an id
    /// it must be this one (else the handshake is refused with `unauthorized`); when it
    /// declared none, the session takes this one. `None`: the credentials prove no id, and
    /// the Hello's rules apply as without an authenticator.
    pub peer_id: Option<String>,
    /// When the credentials stop being valid: the connection is closed with
    /// `token_expired` then unless a Refresh brought new ones. `None`: never.
    pub expires_at: Option<SystemTime>,
    /// What the peer may do; `None`: everything.
    pub permissions: Option<Permissions>,
}

impl Grant {
    /// A grant that proves nothing and restricts nothing (anonymous, or an authenticator
    /// that only says yes or no).
    pub fn anonymous() -> Grant {
        Grant::default()
    }
}

/// Credentials to check: a Hello's, or a Refresh's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthRequest<'a> {
    /// Hello: the declared peer id, if any. Refresh: the session's peer id.
    pub peer_id: Option<&'a str>,
    /// The credentials (Hello's are optional; a Refresh always carries some).
    pub credentials: Option<&'a [u8]>,
    /// Whether this is a Refresh of a live session rather than a Hello.
    pub refresh: bool,
}

/// A refusal: the code the peer gets (`unauthorized`, or `token_expired` for credentials
/// that are valid but expired) and why. The traffic hooks refuse with one too, and
/// [`ListenOptions::on_traffic_error`](crate::ListenOptions::on_traffic_error) is shown the
/// server's own refusals (`unknown_peer`, `not_member`, ...) as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", code.name())]
pub struct Denied {
    /// The wire code.
    pub code: Code,
    /// Why, for the peer.
    pub reason: Cow<'static, str>,
}

impl Denied {
    /// Refused with `unauthorized`.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Denied {
        Denied {
            code: Code::Unauthorized,
            reason: reason.into(),
        }
    }

    /// Refused with `token_expired`: the credentials were good but are no longer.
    pub fn expired(reason: impl Into<Cow<'static, str>>) -> Denied {
        Denied {
            code: Code::TokenExpired,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_or_prefixes_only() {
        let p = Patterns::parse(["chat", "room-*"]).unwrap();
        assert!(p.matches("chat"));
        assert!(!p.matches("chat-admin"), "an exact name is not a prefix");
        assert!(!p.matches("cha"));
        assert!(!p.matches("chat "));
        assert!(p.matches("room-1"));
        assert!(p.matches("room-"));
        assert!(!p.matches("room"));
        assert!(!p.matches("rooms"));
        assert!(Patterns::parse(["*"]).unwrap().matches("anything"));
        assert!(Patterns::parse(["*"]).unwrap().matches(""));
        assert!(!Patterns::none().matches("chat"));
        assert!(Patterns::parse(Vec::<String>::new()).unwrap().is_empty());
    }

    #[test]
    fn a_star_only_at_the_end() {
        assert_eq!(
            Patterns::parse(["a*b"]),
            Err(PatternError::InnerStar("a*b".into()))
        );
        assert_eq!(
            Patterns::parse(["**"]),
            Err(PatternError::InnerStar("**".into()))
        );
        assert_eq!(Patterns::parse([""]), Err(PatternError::Empty));
    }

    #[test]
    fn every_action_is_governed_by_its_permission() {
        let mut p = Permissions::none();
        let actions = [
            Action::Join { topic: "t" },
            Action::Publish { topic: "t" },
            Action::SendToMember {
                topic: "t",
                to: "b",
            },
            Action::Watch { topic: Some("t") },
            Action::ListPeers { topic: Some("t") },
            Action::Watch { topic: None },
            Action::ListPeers { topic: None },
            Action::Call { method: "t" },
            Action::CallPeer {
                peer: "b",
                method: "t",
            },
            Action::Emit {
                name: "t",
                to: None,
            },
            Action::Broadcast { name: "t" },
            Action::Signal {
                room: "t",
                to: None,
            },
        ];
        for a in &actions {
            let d = p.check(a).unwrap_err();
            assert_eq!(d.code, Code::Unauthorized, "{a:?}");
        }
        assert!(actions.iter().all(|a| Permissions::all().check(a).is_ok()));
        p.publish = Patterns::parse(["t"]).unwrap();
        assert!(p
            .check(&Action::SendToMember {
                topic: "t",
                to: "b"
            })
            .is_ok());
        assert!(p.check(&Action::Join { topic: "t" }).is_err());
        let reason = p.check(&Action::Join { topic: "t" }).unwrap_err().reason;
        assert_eq!(reason, "not allowed to join topic \"t\"");
    }
}
