//! Connect tokens: JSON Web Tokens in Hello's credentials, the way Centrifugo and NATS take
//! them (a browser cannot set headers on a WebSocket, so the token travels in the first
//! frame).
//!
//! [`JwtAuth`] verifies a token with the keys it was given, each pinned to one algorithm
//! (HS256 with a secret; RS256, ES256 or EdDSA with a public key; their 384/512 and PSS
//! variants when asked for), and turns it into a [`Grant`]: the `sub` claim is the peer id,
//! `exp` (required) says when the session must have refreshed, and the optional `peerd`
//! claim its [`Permissions`]. What it refuses and why:
//!
//! - the header's `alg` is checked against the configured keys' algorithms before anything
//!   else: `none`, or any algorithm no key is pinned to, is refused whatever the token
//!   says; a key is never used with another family's algorithm;
//! - a bad signature, an expired token (`exp`), one not valid yet (`nbf`), a missing `sub`
//!   or `exp`, claims of the wrong type (an `exp` that is a string), an `aud` or `iss` that
//!   is not the configured one (a token carrying `aud` is refused when no audience is
//!   configured, as RFC 7519 §4.1.3 asks), a `peerd` claim with an unknown field or a bad
//!   pattern;
//! - clocks may disagree by the leeway (default 5 s) on `exp` and `nbf`.
//!
//! A token is a bearer credential: presented again while it is valid (a replay), it is
//! accepted again. JWT has no replay protection of its own and peerd keeps no list of used
//! tokens (`jti`): keep `exp` short, carry tokens over TLS, and let the `sub` binding and
//! `peer_id_taken` do the rest (a replayed token cannot take over a live session without its
//! resume token).
//!
//! `docs/PROTOCOL.md` §6.1 and §6.8 and the README's "Authentication and permissions" say
//! the same for clients and operators.

mod ring;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::auth::{AuthRequest, Denied, Grant, PatternError, Patterns, Permissions};

/// The signature algorithms peerd accepts, by their JOSE names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenAlgorithm {
    /// HMAC with SHA-256 (a shared secret).
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

/// The kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Secret,
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl TokenAlgorithm {
    /// Every algorithm, in the order above.
    pub const ALL: [TokenAlgorithm; 12] = [
        TokenAlgorithm::HS256,
        TokenAlgorithm::HS384,
        TokenAlgorithm::HS512,
        TokenAlgorithm::RS256,
        TokenAlgorithm::RS384,
        TokenAlgorithm::RS512,
        TokenAlgorithm::PS256,
        TokenAlgorithm::PS384,
        TokenAlgorithm::PS512,
        TokenAlgorithm::ES256,
        TokenAlgorithm::ES384,
        TokenAlgorithm::EdDSA,
    ];

    /// The JOSE name (`"HS256"`, ..., `"EdDSA"`), as in a token's header.
    pub fn name(self) -> &'static str {
        match self {
            TokenAlgorithm::HS256 => "HS256",
            TokenAlgorithm::HS384 => "HS384",
            TokenAlgorithm::HS512 => "HS512",
            TokenAlgorithm::RS256 => "RS256",
            TokenAlgorithm::RS384 => "RS384",
            TokenAlgorithm::RS512 => "RS512",
            TokenAlgorithm::PS256 => "PS256",
            TokenAlgorithm::PS384 => "PS384",
            TokenAlgorithm::PS512 => "PS512",
            TokenAlgorithm::ES256 => "ES256",
            TokenAlgorithm::ES384 => "ES384",
            TokenAlgorithm::EdDSA => "EdDSA",
        }
    }

    fn jose(self) -> Algorithm {
        match self {
            TokenAlgorithm::HS256 => Algorithm::HS256,
            TokenAlgorithm::HS384 => Algorithm::HS384,
            TokenAlgorithm::HS512 => Algorithm::HS512,
            TokenAlgorithm::RS256 => Algorithm::RS256,
            TokenAlgorithm::RS384 => Algorithm::RS384,
            TokenAlgorithm::RS512 => Algorithm::RS512,
            TokenAlgorithm::PS256 => Algorithm::PS256,
            TokenAlgorithm::PS384 => Algorithm::PS384,
            TokenAlgorithm::PS512 => Algorithm::PS512,
            TokenAlgorithm::ES256 => Algorithm::ES256,
            TokenAlgorithm::ES384 => Algorithm::ES384,
            TokenAlgorithm::EdDSA => Algorithm::EdDSA,
        }
    }

    fn key_kind(self) -> KeyKind {
        use TokenAlgorithm::*;
        match self {
            HS256 | HS384 | HS512 => KeyKind::Secret,
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => KeyKind::Rsa,
            ES256 => KeyKind::P256,
            ES384 => KeyKind::P384,
            EdDSA => KeyKind::Ed25519,
        }
    }

    /// The smallest HMAC secret for this algorithm: as long as the hash (RFC 7518 §3.2).
    fn min_secret_len(self) -> usize {
        match self {
            TokenAlgorithm::HS384 => 48,
            TokenAlgorithm::HS512 => 64,
            _ => 32,
        }
    }
}

impl fmt::Display for TokenAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TokenAlgorithm {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<TokenAlgorithm, KeyError> {
        TokenAlgorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| KeyError::UnknownAlgorithm(s.to_string()))
    }
}

/// A key could not be loaded or does not fit its algorithm (a configuration error, found
/// at start).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a PEM public key peerd can use.
    #[error("{what}: {reason}")]
    BadKey {
        /// The file, or "key" for bytes given directly.
        what: String,
        /// Why.
        reason: String,
    },
    /// An HMAC secret shorter than its hash (RFC 7518 §3.2 requires at least that much).
    #[error("{what}: an {alg} secret must be at least {min} bytes (this one is {len})")]
    WeakSecret {
        /// The file, or "secret".
        what: String,
        /// The algorithm.
        alg: TokenAlgorithm,
        /// Its minimum.
        min: usize,
        /// The secret's length.
        len: usize,
    },
    /// An algorithm name peerd does not know.
    #[error("unknown token algorithm {0:?} (known: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)")]
    UnknownAlgorithm(String),
    /// The algorithm asked for needs another kind of key.
    #[error("{what}: a {key} key cannot verify {alg} tokens")]
    WrongAlgorithm {
        /// The file, or "key".
        what: String,
        /// The key's kind.
        key: &'static str,
        /// The algorithm asked for.
        alg: TokenAlgorithm,
    },
}

/// Why a token was refused. [`TokenError::denied`] makes the peer's answer of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No credentials, and anonymous peers are not allowed.
    #[error("this server requires a token (a JWT in Hello.credentials)")]
    Missing,
    /// Not a compact JWS: three base64url parts, a JSON header.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header's `alg` is not one a configured key is pinned to (`none` never is).
    #[error("token algorithm {alg:?} is not accepted (accepted: {accepted})")]
    Algorithm {
        /// What the token said.
        alg: String,
        /// What the server's keys take.
        accepted: String,
    },
    /// The signature does not verify with any configured key of that algorithm.
    #[error("token signature does not verify")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    /// `aud` is missing or not the configured audience, or present with none configured.
    #[error("token audience (aud) is not this server's")]
    Audience,
    /// `iss` is missing or not the configured issuer.
    #[error("token issuer (iss) is not accepted")]
    Issuer,
    /// A required claim is absent.
    #[error("token has no {0:?} claim")]
    MissingClaim(String),
    /// Claims of the wrong type, or a bad `peerd` claim.
    #[error("invalid token claims: {0}")]
    Claims(String),
    /// Anonymous peers get server-assigned ids only: declaring one needs a token that
    /// proves it.
    #[error("declaring a peer id needs a token; anonymous peers get a server-assigned id")]
    AnonymousDeclaredId,
}

impl TokenError {
    /// The refusal a peer gets: `token_expired` for an expired token (get a new one and
    /// reconnect), `unauthorized` for everything else.
    pub fn denied(&self) -> Denied {
        match self {
            TokenError::Expired => Denied::expired(self.to_string()),
            _ => Denied::new(self.to_string()),
        }
    }
}

impl From<TokenError> for Denied {
    fn from(e: TokenError) -> Denied {
        e.denied()
    }
}

/// The `peerd` claim: what the token's holder may do, as pattern lists (exact names,
/// `prefix*`, or `*`). When the claim is present, whatever it does not list is refused: an
/// absent list allows nothing, an absent flag is false. Unknown fields make the token
/// invalid, so a misspelt permission shows as a refused token instead of a silently
/// missing right.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionClaims {
    /// Topics it may join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<Vec<String>>,
    /// Topics it may publish to and send to one member of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// Topics it may watch and list the members of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<Vec<String>>,
    /// Methods it may call on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Vec<String>>,
    /// Methods it may call on other peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_peers: Option<Vec<String>>,
    /// Events it may send to the server or to one peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit: Option<Vec<String>>,
    /// Rooms it may signal in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Vec<String>>,
    /// Whether it may broadcast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<bool>,
    /// Whether it may list every peer and watch them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<bool>,
}

impl PermissionClaims {
    /// The permission set these claims describe.
    pub fn to_permissions(&self) -> Result<Permissions, PatternError> {
        let list =
            |l: &Option<Vec<String>>| l.as_ref().map_or(Ok(Patterns::none()), Patterns::parse);
        Ok(Permissions {
            join: list(&self.join)?,
            publish: list(&self.publish)?,
            watch: list(&self.watch)?,
            call: list(&self.call)?,
            call_peers: list(&self.call_peers)?,
            emit: list(&self.emit)?,
            signal: list(&self.signal)?,
            broadcast: self.broadcast.unwrap_or(false),
            peers: self.peers.unwrap_or(false),
        })
    }
}

/// The claims peerd reads from (and [`TokenSigner`] writes into) a token. Other claims
/// (`iat`, `jti`, anything an issuer adds) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The peer id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Audience (checked by jsonwebtoken; written by the signer when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Permissions; absent: the holder may do everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peerd: Option<PermissionClaims>,
}

impl TokenClaims {
    /// Claims for `sub` valid for `ttl` from now, without permissions.
    pub fn new(sub: impl Into<String>, ttl: Duration) -> TokenClaims {
        let now = unix_now();
        TokenClaims {
            sub: sub.into(),
            exp: now.saturating_add(ttl.as_secs()),
            nbf: None,
            iat: Some(now),
            aud: None,
            iss: None,
            peerd: None,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One verification key, pinned to one algorithm.
struct VerifyKey {
    alg: TokenAlgorithm,
    key: DecodingKey,
}

/// What to do with a Hello without credentials.
#[derive(Debug, Clone)]
enum Anonymous {
    Refused,
    /// Allowed, with these permissions (`None`: everything).
    Allowed(Option<Box<Permissions>>),
}

/// A token verifier, and the authenticator it makes (`ListenOptions::jwt`).
///
/// ```no_run
/// use peerd_server::jwt::JwtAuth;
/// let auth = JwtAuth::new()
///     .hmac_secret_file("secret.key")?
///     .public_key_file("issuer.pub.pem", None)?; // RS256, ES256 or EdDSA, from the key
/// # Ok::<(), peerd_server::jwt::KeyError>(())
/// ```
pub struct JwtAuth {
    keys: Vec<VerifyKey>,
    leeway: Duration,
    audience: Option<String>,
    issuer: Option<String>,
    anonymous: Anonymous,
}

impl Default for JwtAuth {
    fn default() -> JwtAuth {
        JwtAuth::new()
    }
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("algorithms", &self.algorithms())
            .field("leeway", &self.leeway)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// The default clock-skew allowance on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

impl JwtAuth {
    /// No keys yet (every token is refused), anonymous peers refused, leeway 5 s.
    pub fn new() -> JwtAuth {
        ring::install();
        JwtAuth {
            keys: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            audience: None,
            issuer: None,
            anonymous: Anonymous::Refused,
        }
    }

    /// Accept HS256 tokens signed with `secret` (at least 32 bytes).
    pub fn hmac_secret(self, secret: &[u8]) -> Result<JwtAuth, KeyError> {
        self.hmac_secret_for(TokenAlgorithm::HS256, secret, "secret")
    }

    /// Accept HS256 tokens signed with the secret in `path`: the file's bytes, without a
    /// trailing newline (so `openssl rand -hex 32 > secret.key` works as it is).
    pub fn hmac_secret_file(self, path: impl AsRef<Path>) -> Result<JwtAuth, KeyError> {
        let path = path.as_ref();
        let secret = read_secret(path)?;
        self.hmac_secret_for(TokenAlgorithm::HS256, &secret, &path.display().to_string())
    }

    /// Accept `alg` (HS256, HS384 or HS512) tokens signed with `secret`.
    pub fn hmac_secret_for(
        mut self,
        alg: TokenAlgorithm,
        secret: &[u8],
        what: &str,
    ) -> Result<JwtAuth, KeyError> {
        if alg.key_kind() != KeyKind::Secret {
            return Err(KeyError::WrongAlgorithm {
                what: what.to_string(),
                key: "shared secret",
                alg,
            });
        }
        if secret.len() < alg.min_secret_len() {
            return Err(KeyError::WeakSecret {
                what: what.to_string(),
                alg,
                min: alg.min_secret_len(),
                len: secret.len(),
            });
        }
        self.keys.push(VerifyKey {
            alg,
            key: DecodingKey::from_secret(secret),
        });
        Ok(self)
    }

    /// Accept tokens signed by the private half of the public key `pem` (a `PUBLIC KEY` or
    /// `RSA PUBLIC KEY` PEM block). `alg`: `None` takes the key's usual algorithm (RSA:
    /// RS256, P-256: ES256, P-384: ES384, Ed25519: EdDSA); `Some` picks another of the same
    /// key kind (RS384, PS256, ...).
    pub fn public_key_pem(
        self,
        pem: &[u8],
        alg: Option<TokenAlgorithm>,
    ) -> Result<JwtAuth, KeyError> {
        self.public_key_named(pem, alg, "key")
    }

    /// [`JwtAuth::public_key_pem`] from a file.
    pub fn public_key_file(
        self,
        path: impl AsRef<Path>,
        alg: Option<TokenAlgorithm>,
    ) -> Result<JwtAuth, KeyError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.public_key_named(&pem, alg, &path.display().to_string())
    }

    fn public_key_named(
        mut self,
        pem: &[u8],
        alg: Option<TokenAlgorithm>,
        what: &str,
    ) -> Result<JwtAuth, KeyError> {
        let bad = |reason: &str| KeyError::BadKey {
            what: what.to_string(),
            reason: reason.to_string(),
        };
        let text = std::str::from_utf8(pem).map_err(|_| bad("not a PEM file"))?;
        // A private key here is a mistake worth naming: the server only needs the public
        // half, and a private key on the server is one more copy to leak.
        if text.contains("PRIVATE KEY-----") {
            return Err(bad(
                "this is a private key; give the public key (`openssl pkey -in KEY -pubout`)",
            ));
        }
        if !text.contains("-----BEGIN PUBLIC KEY-----")
            && !text.contains("-----BEGIN RSA PUBLIC KEY-----")
        {
            return Err(bad("expected a PEM `PUBLIC KEY` block"));
        }
        let (kind, key) = if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            (KeyKind::Ed25519, k)
        } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            // The curve shows in the uncompressed point's length: 1 + 2 * 32 or 1 + 2 * 48.
            match k.as_bytes().len() {
                65 => (KeyKind::P256, k),
                97 => (KeyKind::P384, k),
                _ => return Err(bad("an EC key on a curve other than P-256 or P-384")),
            }
        } else if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            (KeyKind::Rsa, k)
        } else {
            return Err(bad("not an RSA, EC (P-256, P-384) or Ed25519 public key"));
        };
        let alg = match alg {
            Some(a) if a.key_kind() == kind => a,
            Some(a) => {
                return Err(KeyError::WrongAlgorithm {
                    what: what.to_string(),
                    key: match kind {
                        KeyKind::Rsa => "RSA",
                        KeyKind::P256 => "P-256",
                        KeyKind::P384 => "P-384",
                        KeyKind::Ed25519 => "Ed25519",
                        KeyKind::Secret => "secret",
                    },
                    alg: a,
                })
            }
            None => match kind {
                KeyKind::Rsa => TokenAlgorithm::RS256,
                KeyKind::P256 => TokenAlgorithm::ES256,
                KeyKind::P384 => TokenAlgorithm::ES384,
                KeyKind::Ed25519 | KeyKind::Secret => TokenAlgorithm::EdDSA,
            },
        };
        self.keys.push(VerifyKey { alg, key });
        Ok(self)
    }

    /// Clock skew allowed on `exp` and `nbf` (default 5 s).
    pub fn leeway(mut self, leeway: Duration) -> JwtAuth {
        self.leeway = leeway;
        self
    }

    /// Require `aud` to name this audience.
    pub fn audience(mut self, aud: impl Into<String>) -> JwtAuth {
        self.audience = Some(aud.into());
        self
    }

    /// Require `iss` to be this issuer.
    pub fn issuer(mut self, iss: impl Into<String>) -> JwtAuth {
        self.issuer = Some(iss.into());
        self
    }

    /// Let peers in without a token, with `permissions` (`None`: everything). They get
    /// server-assigned ids: with keys configured, only a token proves a declared id.
    pub fn allow_anonymous(mut self, permissions: Option<Permissions>) -> JwtAuth {
        self.anonymous = Anonymous::Allowed(permissions.map(Box::new));
        self
    }

    /// The algorithms the configured keys are pinned to.
    pub fn algorithms(&self) -> Vec<TokenAlgorithm> {
        let mut algs: Vec<TokenAlgorithm> = self.keys.iter().map(|k| k.alg).collect();
        algs.dedup();
        algs
    }

    /// Whether any key is configured.
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Whether peers without a token are let in.
    pub fn allows_anonymous(&self) -> bool {
        matches!(self.anonymous, Anonymous::Allowed(_))
    }

    /// Verify `token` (a compact JWS) and return its claims.
    pub fn verify(&self, token: &[u8]) -> Result<TokenClaims, TokenError> {
        let token = std::str::from_utf8(token)
            .map_err(|_| TokenError::Malformed("not UTF-8".into()))?
            .trim();
        let alg = header_alg(token)?;
        // The algorithm is chosen by configuration, never by the token: the token's `alg`
        // only selects among the keys, each pinned to one algorithm. `none` matches none.
        let candidates: Vec<&VerifyKey> =
            self.keys.iter().filter(|k| k.alg.name() == alg).collect();
        if candidates.is_empty() {
            return Err(TokenError::Algorithm {
                alg,
                accepted: self
                    .algorithms()
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut last = TokenError::BadSignature;
        for k in candidates {
            match jsonwebtoken::decode::<TokenClaims>(token, &k.key, &self.validation(k.alg)) {
                Ok(data) => return Ok(data.claims),
                // Several keys of one algorithm (a rotation): try the next.
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => {}
                Err(e) => {
                    last = map_error(e.kind());
                    break;
                }
            }
        }
        Err(last)
    }

    fn validation(&self, alg: TokenAlgorithm) -> Validation {
        let mut v = Validation::new(alg.jose());
        v.leeway = self.leeway.as_secs();
        v.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(aud) = &self.audience {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// The authenticator: a Hello's or a Refresh's credentials to a [`Grant`].
    pub fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Grant, Denied> {
        let credentials = req.credentials.filter(|c| !c.is_empty());
        let Some(token) = credentials else {
            return match &self.anonymous {
                Anonymous::Refused => Err(TokenError::Missing.denied()),
                // A Refresh without a token would change nothing; say so.
                Anonymous::Allowed(_) if req.refresh => Err(TokenError::Missing.denied()),
                Anonymous::Allowed(_)
                    if self.has_keys()
                        && req
                            .peer_id
                            .is_some_and(|id| !id.bytes().all(|b| b.is_ascii_digit())) =>
                {
                    // A numeric id is a server-assigned one being resumed (the resume
                    // token decides); any other declared id would be a claim no token backs.
                    Err(TokenError::AnonymousDeclaredId.denied())
                }
                Anonymous::Allowed(p) => Ok(Grant {
                    peer_id: None,
                    expires_at: None,
                    permissions: p.as_deref().cloned(),
                }),
            };
        };
        let claims = self.verify(token)?;
        let permissions = claims
            .peerd
            .as_ref()
            .map(|p| p.to_permissions())
            .transpose()
            .map_err(|e| TokenError::Claims(format!("peerd: {e}")).denied())?;
        // The session may live as long as a Hello with this token would be accepted.
        let expires_at = UNIX_EPOCH + Duration::from_secs(claims.exp) + self.leeway;
        Ok(Grant {
            peer_id: Some(claims.sub),
            expires_at: Some(expires_at),
            permissions,
        })
    }
}

/// The `alg` of a compact JWS's header, read before anything is verified so that an
/// algorithm no key is pinned to (`none` above all) is refused by name.
fn header_alg(token: &str) -> Result<String, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "a JWT is three base64url parts separated by dots".into(),
        ));
    };
    #[derive(Deserialize)]
    struct AlgOnly {
        alg: String,
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed("the header is not base64url".into()))?;
    let h: AlgOnly = serde_json::from_slice(&json)
        .map_err(|e| TokenError::Malformed(format!("the header: {e}")))?;
    Ok(h.alg)
}

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => TokenError::Claims(format!("{c} has the wrong type")),
        ErrorKind::Json(e) => TokenError::Claims(e.to_string()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => TokenError::BadSignature,
        other => TokenError::Malformed(format!("{other:?}")),
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, KeyError> {
    let mut secret = std::fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    Ok(secret)
}

/// Signs tokens: for tests, tools (`peerd token`) and embedders that issue their own.
pub struct TokenSigner {
    alg: TokenAlgorithm,
    key: EncodingKey,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// HS256 with `secret` (at least 32 bytes).
    pub fn hmac(secret: &[u8]) -> Result<TokenSigner, KeyError> {
        TokenSigner::hmac_for(TokenAlgorithm::HS256, secret)
    }

    /// `alg` (HS256, HS384, HS512) with `secret`.
    pub fn hmac_for(alg: TokenAlgorithm, secret: &[u8]) -> Result<TokenSigner, KeyError> {
        ring::install();
        if alg.key_kind() != KeyKind::Secret {
            return Err(KeyError::WrongAlgorithm {
                what: "secret".into(),
                key: "shared secret",
                alg,
            });
        }
        if secret.len() < alg.min_secret_len() {
            return Err(KeyError::WeakSecret {
                what: "secret".into(),
                alg,
                min: alg.min_secret_len(),
                len: secret.len(),
            });
        }
        Ok(TokenSigner {
            alg,
            key: EncodingKey::from_secret(secret),
        })
    }

    /// HS256 with the secret in `path` (read as [`JwtAuth::hmac_secret_file`] reads it).
    pub fn hmac_file(path: impl AsRef<Path>) -> Result<TokenSigner, KeyError> {
        TokenSigner::hmac(&read_secret(path.as_ref())?)
    }

    /// `alg` with a PEM private key (RSA: PKCS#1 or PKCS#8; EC and Ed25519: PKCS#8).
    pub fn private_key_pem(alg: TokenAlgorithm, pem: &[u8]) -> Result<TokenSigner, KeyError> {
        ring::install();
        let key = match alg.key_kind() {
            KeyKind::Secret => return TokenSigner::hmac_for(alg, pem),
            KeyKind::Rsa => EncodingKey::from_rsa_pem(pem),
            KeyKind::P256 | KeyKind::P384 => EncodingKey::from_ec_pem(pem),
            KeyKind::Ed25519 => EncodingKey::from_ed_pem(pem),
        }
        .map_err(|e| KeyError::BadKey {
            what: "key".into(),
            reason: e.to_string(),
        })?;
        Ok(TokenSigner { alg, key })
    }

    /// The signed token.
    pub fn sign(&self, claims: &TokenClaims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(self.alg.jose()), claims, &self.key)
            .map_err(|e| TokenError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn hs256_round_trip_and_the_refusals() {
        let auth = JwtAuth::new()
            .hmac_secret(SECRET)
            .unwrap()
            .leeway(Duration::ZERO);
        let signer = TokenSigner::hmac(SECRET).unwrap();
        let good = signer
            .sign(&TokenClaims::new("alice", Duration::from_secs(60)))
            .unwrap();
        assert_eq!(auth.verify(good.as_bytes()).unwrap().sub, "alice");

        let mut expired = TokenClaims::new("alice", Duration::ZERO);
        expired.exp -= 10;
        let t = signer.sign(&expired).unwrap();
        assert_eq!(auth.verify(t.as_bytes()), Err(TokenError::Expired));

        let mut early = TokenClaims::new("alice", Duration::from_secs(60));
        early.nbf = Some(unix_now() + 30);
        let t = signer.sign(&early).unwrap();
        assert_eq!(auth.verify(t.as_bytes()), Err(TokenError::NotYetValid));

        let other = TokenSigner::hmac(&[7; 32]).unwrap();
        let t = other
            .sign(&TokenClaims::new("alice", Duration::from_secs(60)))
            .unwrap();
        assert_eq!(auth.verify(t.as_bytes()), Err(TokenError::BadSignature));

        // alg none: the same claims, an empty signature.
        let claims = good.split('.').nth(1).unwrap();
        let none = format!("{}.{claims}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
        assert!(matches!(
            auth.verify(none.as_bytes()),
            Err(TokenError::Algorithm { alg, .. }) if alg == "none"
        ));
        // An algorithm no key is pinned to, even with a valid HMAC over it.
        let hs512 = format!("{}.{claims}.AAAA", b64(r#"{"alg":"HS512"}"#));
        assert!(matches!(
            auth.verify(hs512.as_bytes()),
            Err(TokenError::Algorithm { .. })
        ));
        assert!(matches!(
            auth.verify(b"not a token"),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn an_exp_that_is_a_string_is_refused_not_ignored() {
        // CVE-2026-25537 in jsonwebtoken < 10.3: a claim of the wrong type was taken as
        // absent. peerd's claims are typed and `exp` is required, so it cannot pass.
        let auth = JwtAuth::new().hmac_secret(SECRET).unwrap();
        let key = EncodingKey::from_secret(SECRET);
        let claims = serde_json::json!({"sub": "alice", "exp": "never"});
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        assert!(matches!(
            auth.verify(t.as_bytes()),
            Err(TokenError::Claims(_))
        ));
        let claims = serde_json::json!({"sub": "alice"});
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        assert!(
            matches!(auth.verify(t.as_bytes()), Err(TokenError::Claims(m)) if m.contains("exp"))
        );
    }

    #[test]
    fn weak_secrets_and_wrong_keys_are_refused_at_start() {
        assert!(matches!(
            JwtAuth::new().hmac_secret(b"short"),
            Err(KeyError::WeakSecret { len: 5, .. })
        ));
        assert!(matches!(
            JwtAuth::new().public_key_pem(b"-----BEGIN PRIVATE KEY-----\n", None),
            Err(KeyError::BadKey { .. })
        ));
        assert!("rs256".parse::<TokenAlgorithm>().is_ok());
        assert!("none".parse::<TokenAlgorithm>().is_err());
    }

    #[test]
    fn the_peerd_claim_becomes_permissions_and_unknown_fields_refuse_the_token() {
        let auth = JwtAuth::new().hmac_secret(SECRET).unwrap();
        let signer = TokenSigner::hmac(SECRET).unwrap();
        let mut c = TokenClaims::new("alice", Duration::from_secs(60));
        c.peerd = Some(PermissionClaims {
            join: Some(vec!["chat".into(), "room-*".into()]),
            ..PermissionClaims::default()
        });
        let req = |t: &str| {
            auth.authenticate(&AuthRequest {
                peer_id: None,
                credentials: Some(t.as_bytes()),
                refresh: false,
            })
        };
        let g = req(&signer.sign(&c).unwrap()).unwrap();
        let p = g.permissions.unwrap();
        assert!(p.join.matches("room-1") && !p.join.matches("chat-admin"));
        assert!(!p.broadcast && p.publish.is_empty());
        assert_eq!(g.peer_id.as_deref(), Some("alice"));

        let key = EncodingKey::from_secret(SECRET);
        let typo = serde_json::json!({"sub": "a", "exp": unix_now() + 60,
            "peerd": {"pubish": ["chat"]}});
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &typo, &key).unwrap();
        assert_eq!(req(&t).unwrap_err().code, peerd_codec::Code::Unauthorized);
    }
}
