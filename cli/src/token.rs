//! `peerd token`: sign a connect token (JWT) for a peer id, so that a server started with
//! `--auth-hs256-secret` (or a public key) can be tried with nothing but this binary.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use peerd_server::jwt::{PermissionClaims, TokenAlgorithm, TokenClaims, TokenSigner};

/// `peerd token` flags. Without any permission flag the token carries no `peerd` claim and
/// its holder may do everything; with one or more, it may do only what they list.
#[derive(Args)]
pub struct TokenArgs {
    /// Sign HS256 with the secret in this file (the one `peerd serve --auth-hs256-secret`
    /// reads).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "key",
        conflicts_with = "key"
    )]
    secret: Option<PathBuf>,
    /// Sign with this PEM private key instead (RSA, EC or Ed25519), with --alg.
    #[arg(long, value_name = "FILE", requires = "alg")]
    key: Option<PathBuf>,
    /// The algorithm for --key: RS256, ES256, EdDSA, ...
    #[arg(long, value_name = "ALG")]
    alg: Option<TokenAlgorithm>,
    /// The peer id the token proves (its `sub` claim).
    #[arg(long, value_parser = peer_id)]
    sub: String,
    /// Lifetime in seconds (its `exp` claim).
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    ttl: u64,
    /// Audience (`aud`), for a server started with --auth-audience.
    #[arg(long)]
    aud: Option<String>,
    /// Issuer (`iss`), for a server started with --auth-issuer.
    #[arg(long)]
    iss: Option<String>,
    /// Topics it may join (repeat; `prefix*` and `*` match several).
    #[arg(long, value_name = "PATTERN")]
    join: Vec<String>,
    /// Topics it may publish to and send on.
    #[arg(long, value_name = "PATTERN")]
    publish: Vec<String>,
    /// Topics it may watch and list the members of.
    #[arg(long, value_name = "PATTERN")]
    watch: Vec<String>,
    /// Methods it may call on the server.
    #[arg(long, value_name = "PATTERN")]
    call: Vec<String>,
    /// Methods it may call on other peers.
    #[arg(long, value_name = "PATTERN")]
    call_peers: Vec<String>,
    /// Events it may send to the server or to a peer.
    #[arg(long, value_name = "PATTERN")]
    emit: Vec<String>,
    /// Rooms it may signal in.
    #[arg(long, value_name = "PATTERN")]
    signal: Vec<String>,
    /// It may broadcast.
    #[arg(long)]
    broadcast: bool,
    /// It may list every peer and watch them all.
    #[arg(long)]
    peers: bool,
}

/// `--sub`: an id a Hello may declare (tokens for server-assigned numeric ids are refused).
fn peer_id(s: &str) -> Result<String, String> {
    peerd_codec::validate_declared_peer_id(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

impl TokenArgs {
    /// The `peerd` claim, if any permission flag was given.
    fn permissions(&self) -> Option<PermissionClaims> {
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let p = PermissionClaims {
            join: list(&self.join),
            publish: list(&self.publish),
            watch: list(&self.watch),
            call: list(&self.call),
            call_peers: list(&self.call_peers),
            emit: list(&self.emit),
            signal: list(&self.signal),
            broadcast: self.broadcast.then_some(true),
            peers: self.peers.then_some(true),
        };
        (p != PermissionClaims::default()).then_some(p)
    }
}

/// Print the signed token on stdout.
pub fn token(a: &TokenArgs) -> Result<(), String> {
    let signer = match (&a.secret, &a.key, a.alg) {
        (Some(path), _, _) => TokenSigner::hmac_file(path),
        (None, Some(path), Some(alg)) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            TokenSigner::private_key_pem(alg, &pem)
        }
        _ => unreachable!("clap requires --secret, or --key with --alg"),
    }
    .map_err(|e| e.to_string())?;
    let mut claims = TokenClaims::new(a.sub.clone(), Duration::from_secs(a.ttl));
    claims.aud = a.aud.clone().map(serde_json::Value::String);
    claims.iss = a.iss.clone();
    if let Some(p) = a.permissions() {
        p.to_permissions().map_err(|e| e.to_string())?;
        claims.peerd = Some(p);
    }
    println!("{}", signer.sign(&claims).map_err(|e| e.to_string())?);
    Ok(())
}
