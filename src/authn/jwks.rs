//! A parsed JSON Web Key Set: the verification keys of one issuer, and which of them may check
//! a given token. Pure code; fetching and caching live in [`super::oidc`].

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::authn::jose::{ALLOWED_ALGORITHMS, JoseHeader};

/// The most keys kept from one JWKS (more are ignored), which bounds the work one token
/// without a `kid` can cause.
pub const MAX_KEYS: usize = 32;

/// The smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// One usable verification key.
#[derive(Clone)]
pub struct VerificationKey {
    /// The key id.
    pub kid: Option<String>,
    /// The algorithm the JWK pins, if it names one.
    pub alg: Option<Algorithm>,
    /// The algorithms this key's type and curve can verify.
    compatible: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerificationKey {
    /// The decoding key for the crypto backend.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// Whether this key may verify a token signed with `alg`.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|pinned| pinned == alg) && self.compatible.contains(&alg)
    }
}

/// The usable keys of a JWKS.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
}

impl KeySet {
    /// Parses a JWKS document. Keys that are not for signatures, of an unsupported type or
    /// algorithm, or too weak are skipped; a document that is not `{"keys": [...]}` is an
    /// error.
    pub fn parse(document: &Value) -> Result<KeySet, String> {
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("the JWKS has no keys array")?;
        let keys = keys
            .iter()
            .filter_map(|value| match usable_key(value) {
                Ok(key) => Some(key),
                Err(reason) => {
                    tracing::debug!(kid = ?value.get("kid"), %reason, "skipping a JWKS key");
                    None
                }
            })
            .take(MAX_KEYS)
            .collect();
        Ok(KeySet { keys })
    }

    /// The keys that may verify a token with this header: the key with the token's `kid`
    /// (exact match) or, when the token has no `kid`, every key; in both cases only keys
    /// compatible with the token's algorithm.
    pub fn candidates<'a>(
        &'a self,
        header: &'a JoseHeader,
    ) -> impl Iterator<Item = &'a VerificationKey> + 'a {
        self.keys.iter().filter(move |k| {
            header
                .kid
                .as_ref()
                .is_none_or(|kid| k.kid.as_ref() == Some(kid))
                && k.allows(header.alg)
        })
    }

    /// Whether a key with this `kid` is in the set.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// How many usable keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn usable_key(value: &Value) -> Result<VerificationKey, String> {
    let jwk: Jwk = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err("not a signature key".into());
    }
    let alg = match &jwk.common.key_algorithm {
        None => None,
        Some(alg) => {
            let name = format!("{alg:?}");
            let found = ALLOWED_ALGORITHMS.iter().find(|(n, _)| *n == name);
            Some(found.map(|(_, a)| *a).ok_or("algorithm not accepted")?)
        }
    };
    let compatible = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &rsa.n)
                    .map_err(|e| e.to_string())?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                return Err("RSA key shorter than 2048 bits".into());
            }
            vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ]
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        // Symmetric (`oct`) keys are never used: HS* is not accepted.
        _ => return Err("unsupported key type".into()),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(VerificationKey {
        kid: jwk.common.key_id.clone(),
        alg,
        compatible,
        key,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn skips_symmetric_encryption_and_weak_keys() {
        let doc = json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "enc", "use": "enc", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "ec", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            "garbage"
        ]});
        let set = KeySet::parse(&doc).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.has_kid("ec"));
        let es = JoseHeader {
            alg: Algorithm::ES256,
            kid: Some("ec".into()),
        };
        assert_eq!(set.candidates(&es).count(), 1);
        let rs = JoseHeader {
            alg: Algorithm::RS256,
            kid: Some("ec".into()),
        };
        assert_eq!(set.candidates(&rs).count(), 0);
        let es384 = JoseHeader {
            alg: Algorithm::ES384,
            kid: None,
        };
        assert_eq!(set.candidates(&es384).count(), 0);
        assert!(KeySet::parse(&json!({"nokeys": []})).is_err());
    }
}
