//! `jsonwebtoken`'s cryptography on `ring`.
//!
//! jsonwebtoken 10 moved its cryptography behind a [`CryptoProvider`] and ships two: one on
//! aws-lc-rs (a C library built with cmake, which this workspace avoids for rustls too) and
//! one on the RustCrypto crates (among them `rsa`, whose advisory RUSTSEC-2023-0071 has no
//! fix). `ring` is already here, under rustls, and does every algorithm peerd accepts, so
//! this module adapts it: jsonwebtoken keeps the token parsing and the claim checks, ring
//! does the signatures.
//!
//! A provider is process-wide in jsonwebtoken. [`install`] installs this one the first time
//! a verifier or signer is built; if the embedding program installed another first, that
//! one is used, which is its choice to make.

use std::sync::Once;

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature as sig;
use ring::{hmac, signature::RsaEncoding};

/// Make ring jsonwebtoken's provider, unless one is installed already.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = PROVIDER.install_default();
    });
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    jwk_utils: JwkUtils::new_unimplemented(),
};

fn key_error() -> Error {
    ErrorKind::InvalidKeyFormat.into()
}

fn failed(e: impl std::fmt::Display) -> signature::Error {
    signature::Error::from_source(e.to_string())
}

/// How one algorithm signs and verifies.
#[derive(Clone, Copy)]
enum Scheme {
    Hmac(hmac::Algorithm),
    Rsa {
        verify: &'static sig::RsaParameters,
        sign: &'static dyn RsaEncoding,
    },
    Ecdsa {
        verify: &'static sig::EcdsaVerificationAlgorithm,
        sign: &'static sig::EcdsaSigningAlgorithm,
    },
    Ed25519,
}

fn scheme(alg: Algorithm) -> Scheme {
    match alg {
        Algorithm::HS256 => Scheme::Hmac(hmac::HMAC_SHA256),
        Algorithm::HS384 => Scheme::Hmac(hmac::HMAC_SHA384),
        Algorithm::HS512 => Scheme::Hmac(hmac::HMAC_SHA512),
        Algorithm::RS256 => Scheme::Rsa {
            verify: &sig::RSA_PKCS1_2048_8192_SHA256,
            sign: &sig::RSA_PKCS1_SHA256,
        },
        Algorithm::RS384 => Scheme::Rsa {
            verify: &sig::RSA_PKCS1_2048_8192_SHA384,
            sign: &sig::RSA_PKCS1_SHA384,
        },
        Algorithm::RS512 => Scheme::Rsa {
            verify: &sig::RSA_PKCS1_2048_8192_SHA512,
            sign: &sig::RSA_PKCS1_SHA512,
        },
        Algorithm::PS256 => Scheme::Rsa {
            verify: &sig::RSA_PSS_2048_8192_SHA256,
            sign: &sig::RSA_PSS_SHA256,
        },
        Algorithm::PS384 => Scheme::Rsa {
            verify: &sig::RSA_PSS_2048_8192_SHA384,
            sign: &sig::RSA_PSS_SHA384,
        },
        Algorithm::PS512 => Scheme::Rsa {
            verify: &sig::RSA_PSS_2048_8192_SHA512,
            sign: &sig::RSA_PSS_SHA512,
        },
        Algorithm::ES256 => Scheme::Ecdsa {
            verify: &sig::ECDSA_P256_SHA256_FIXED,
            sign: &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        },
        Algorithm::ES384 => Scheme::Ecdsa {
            verify: &sig::ECDSA_P384_SHA384_FIXED,
            sign: &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        },
        Algorithm::EdDSA => Scheme::Ed25519,
    }
}

/// The key family an algorithm needs: a key of another family is never used with it (an
/// RSA public key is not an HMAC secret, whatever a token's header says).
fn family_of(s: Scheme) -> AlgorithmFamily {
    match s {
        Scheme::Hmac(_) => AlgorithmFamily::Hmac,
        Scheme::Rsa { .. } => AlgorithmFamily::Rsa,
        Scheme::Ecdsa { .. } => AlgorithmFamily::Ec,
        Scheme::Ed25519 => AlgorithmFamily::Ed,
    }
}

struct RingVerifier {
    alg: Algorithm,
    scheme: Scheme,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let bytes = match self.key.kind() {
            DecodingKeyKind::SecretOrDer(b) => b.as_slice(),
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                let Scheme::Rsa { verify, .. } = self.scheme else {
                    return Err(failed("RSA components for a non-RSA algorithm"));
                };
                return sig::RsaPublicKeyComponents { n, e }
                    .verify(verify, msg, signature)
                    .map_err(failed);
            }
        };
        match self.scheme {
            Scheme::Hmac(alg) => hmac::verify(&hmac::Key::new(alg, bytes), msg, signature),
            Scheme::Rsa { verify, .. } => {
                sig::UnparsedPublicKey::new(verify, bytes).verify(msg, signature)
            }
            Scheme::Ecdsa { verify, .. } => {
                sig::UnparsedPublicKey::new(verify, bytes).verify(msg, signature)
            }
            Scheme::Ed25519 => {
                sig::UnparsedPublicKey::new(&sig::ED25519, bytes).verify(msg, signature)
            }
        }
        .map_err(failed)
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let scheme = scheme(*alg);
    if key.family() != family_of(scheme) {
        return Err(key_error());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        scheme,
        key: key.clone(),
    }))
}

/// A parsed signing key, ready to sign.
enum SigningKey {
    Hmac(hmac::Key),
    Rsa(sig::RsaKeyPair, &'static dyn RsaEncoding),
    Ecdsa(sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
}

struct RingSigner {
    alg: Algorithm,
    key: SigningKey,
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let rng = SystemRandom::new();
        match &self.key {
            SigningKey::Hmac(k) => Ok(hmac::sign(k, msg).as_ref().to_vec()),
            SigningKey::Rsa(k, encoding) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(*encoding, &rng, msg, &mut out).map_err(failed)?;
                Ok(out)
            }
            SigningKey::Ecdsa(k) => Ok(k.sign(&rng, msg).map_err(failed)?.as_ref().to_vec()),
            SigningKey::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    let scheme = scheme(*alg);
    if key.family() != family_of(scheme) {
        return Err(key_error());
    }
    let der = key.inner();
    let key = match scheme {
        Scheme::Hmac(a) => SigningKey::Hmac(hmac::Key::new(a, der)),
        // jsonwebtoken hands over PKCS#1 (from "RSA PRIVATE KEY", or taken out of PKCS#8).
        Scheme::Rsa { sign, .. } => SigningKey::Rsa(
            sig::RsaKeyPair::from_der(der)
                .or_else(|_| sig::RsaKeyPair::from_pkcs8(der))
                .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?,
            sign,
        ),
        Scheme::Ecdsa { sign, .. } => SigningKey::Ecdsa(
            sig::EcdsaKeyPair::from_pkcs8(sign, der, &SystemRandom::new())
                .map_err(|_| ErrorKind::InvalidEcdsaKey)?,
        ),
        // OpenSSL writes PKCS#8 v1 (no public key inside), which the checked parser refuses.
        Scheme::Ed25519 => SigningKey::Ed25519(
            sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|_| ErrorKind::InvalidEddsaKey)?,
        ),
    };
    Ok(Box::new(RingSigner { alg: *alg, key }))
}
