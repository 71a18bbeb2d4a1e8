//! Strict parsing of a compact JWS before any key is looked at: size limit, exactly three
//! segments, unpadded base64url in the canonical alphabet, UTF-8 JSON objects without duplicate
//! keys, and an asymmetric `alg` from a fixed list. Pure code, no I/O.
//!
//! Header fields that point at keys (`jku`, `x5u`, `jwk`, `x5c`) are never read: keys only
//! ever come from the issuer's JWKS, matched by `kid`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::principal::AuthFailure;

/// The largest token accepted, in bytes (anything larger is refused before decoding).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The algorithms accepted: asymmetric signatures only; never `HS*`, never `none`.
pub const ALLOWED_ALGORITHMS: &[(&str, Algorithm)] = &[
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// The parts of the JOSE header custody uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoseHeader {
    /// The signature algorithm, one of [`ALLOWED_ALGORITHMS`].
    pub alg: Algorithm,
    /// The key id, if any.
    pub kid: Option<String>,
}

/// A well-formed token whose signature has not been checked yet.
#[derive(Debug, Clone)]
pub struct UnverifiedToken {
    /// The parsed header.
    pub header: JoseHeader,
    /// The claims object.
    pub claims: Map<String, Value>,
    signing_input: String,
    signature: String,
}

impl UnverifiedToken {
    /// Checks the signature with one key; `false` for a wrong signature, a wrong key type or
    /// a malformed signature (e.g. ECDSA `r = 0` or `s = 0`).
    pub fn verify_with(&self, key: &jsonwebtoken::DecodingKey) -> bool {
        jsonwebtoken::crypto::verify(
            &self.signature,
            self.signing_input.as_bytes(),
            key,
            self.header.alg,
        )
        .unwrap_or(false)
    }

    /// The unverified `iss` claim, used only to pick the issuer whose keys must verify it.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Parses a compact JWS strictly. Every error is [`AuthFailure::Invalid`] with a short,
/// safe reason.
pub fn parse(token: &str) -> Result<UnverifiedToken, AuthFailure> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("token is too large"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "token is not a compact JWS (three dot-separated parts)",
        ));
    };
    if s.is_empty() {
        return Err(invalid("token has no signature"));
    }
    let header = decode_object(h).ok_or_else(|| invalid("malformed token header"))?;
    let claims = decode_object(c).ok_or_else(|| invalid("malformed token claims"))?;
    // The signature is decoded here only to reject non-canonical encodings; the crypto
    // backend decodes it again for verification.
    if URL_SAFE_NO_PAD.decode(s).is_err() {
        return Err(invalid("malformed token signature"));
    }
    let header = parse_header(&header)?;
    Ok(UnverifiedToken {
        header,
        claims,
        signing_input: format!("{h}.{c}"),
        signature: s.to_owned(),
    })
}

/// Validates the header: `alg` from the allow-list (exact spelling), `kid` a string if
/// present, and no `crit` extensions (RFC 7515 §4.1.11: we understand none).
fn parse_header(header: &Map<String, Value>) -> Result<JoseHeader, AuthFailure> {
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("token header has no algorithm"))?;
    let alg = ALLOWED_ALGORITHMS
        .iter()
        .find(|(name, _)| *name == alg)
        .map(|(_, alg)| *alg)
        .ok_or_else(|| invalid("token algorithm is not accepted (asymmetric signatures only)"))?;
    if header.contains_key("crit") {
        return Err(invalid("token header has critical extensions"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(invalid("token key id is not a string")),
    };
    Ok(JoseHeader { alg, kid })
}

/// Decodes one segment: canonical unpadded base64url, UTF-8, a JSON object with no duplicate
/// key at any depth.
fn decode_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    match parse_strict_json(text).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Parses JSON, refusing duplicate object keys (`serde_json` alone keeps the last one, which
/// lets two parsers disagree about a claim).
pub fn parse_strict_json(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue::deserialize(&mut de)?.0;
    de.end()?;
    Ok(value)
}

fn invalid(reason: &str) -> AuthFailure {
    AuthFailure::Invalid(reason.to_owned())
}

/// A JSON value deserialized with duplicate-key detection.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(claims), b64("sig"))
    }

    fn reason(result: Result<UnverifiedToken, AuthFailure>) -> String {
        match result {
            Err(AuthFailure::Invalid(r)) => r,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_well_formed_token() {
        let t = parse(&token(
            r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#,
            r#"{"iss":"x"}"#,
        ))
        .unwrap();
        assert_eq!(t.header.alg, Algorithm::RS256);
        assert_eq!(t.header.kid.as_deref(), Some("k1"));
        assert_eq!(t.issuer(), Some("x"));
    }

    #[test]
    fn refuses_none_and_symmetric_algorithms_in_any_spelling() {
        for alg in [
            "none", "NONE", "nOnE", "HS256", "HS384", "HS512", "rs256", "", "ES256K",
        ] {
            let h = format!(r#"{{"alg":"{alg}"}}"#);
            assert!(
                reason(parse(&token(&h, "{}"))).contains("algorithm"),
                "{alg}"
            );
        }
        assert!(parse(&token(r#"{"alg":256}"#, "{}")).is_err());
        assert!(parse(&token(r#"{"typ":"JWT"}"#, "{}")).is_err());
    }

    #[test]
    fn refuses_wrong_segment_counts_and_empty_signatures() {
        let h = b64(r#"{"alg":"RS256"}"#);
        let c = b64("{}");
        for bad in [
            format!("{h}.{c}"),
            format!("{h}.{c}."),
            format!("{h}.{c}.{}.x", b64("s")),
            h.clone(),
            String::new(),
            "..".to_owned(),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_padding_wrong_alphabet_and_non_canonical_base64() {
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#);
        let claims = r#"{"sub":"???"}"#;
        let c = URL_SAFE_NO_PAD.encode(claims);
        assert!(parse(&format!("{h}.{c}.c2ln")).is_ok());
        // Padding.
        let padded =
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"alg":"RS256","kid":"k"}"#);
        assert!(padded.ends_with('='));
        assert!(parse(&format!("{padded}.{c}.c2ln")).is_err());
        // Standard alphabet (`+`/`/`) instead of URL-safe.
        let std_c = base64::engine::general_purpose::STANDARD_NO_PAD.encode(claims);
        assert!(std_c.contains('/') || std_c.contains('+'));
        assert!(parse(&format!("{h}.{std_c}.c2ln")).is_err());
        // Non-canonical: the last character carries bits beyond the decoded byte.
        assert!(parse(&format!("{h}.{c}.AB")).is_err());
        // Whitespace inside.
        assert!(parse(&format!("{h}.{c}.c2 ln")).is_err());
    }

    #[test]
    fn refuses_non_utf8_non_objects_and_duplicate_keys() {
        let h = b64(r#"{"alg":"RS256"}"#);
        let bad_utf8 = URL_SAFE_NO_PAD.encode([b'{', b'"', 0xff, b'"', b':', b'1', b'}']);
        assert!(parse(&format!("{h}.{bad_utf8}.c2ln")).is_err());
        assert!(parse(&token(r#"{"alg":"RS256"}"#, "[1]")).is_err());
        assert!(parse(&token(r#"{"alg":"RS256"}"#, r#""x""#)).is_err());
        assert!(parse(&token(r#"{"alg":"RS256"}"#, r#"{"sub":"a","sub":"b"}"#)).is_err());
        assert!(parse(&token(r#"{"alg":"RS256","alg":"RS256"}"#, "{}")).is_err());
        assert!(parse(&token(r#"{"alg":"RS256"}"#, r#"{"x":{"a":1,"a":2}}"#)).is_err());
        assert!(parse(&token(r#"{"alg":"RS256"}"#, r#"{"x":1} {}"#)).is_err());
    }

    #[test]
    fn refuses_oversized_json_serialization_and_crit() {
        let big = format!(r#"{{"pad":"{}"}}"#, "a".repeat(MAX_TOKEN_BYTES));
        assert!(reason(parse(&token(r#"{"alg":"RS256"}"#, &big))).contains("too large"));
        let json_form = r#"{"payload":"e30","signatures":[{"protected":"e30","signature":"c2ln"},{"protected":"e30","signature":"c2ln"}]}"#;
        assert!(parse(json_form).is_err());
        assert!(
            parse(&token(
                r#"{"alg":"RS256","crit":["b64"],"b64":false}"#,
                "{}"
            ))
            .is_err()
        );
        assert!(parse(&token(r#"{"alg":"RS256","kid":7}"#, "{}")).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_without_stack_overflow() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
        assert!(parse_strict_json(&deep).is_err());
    }
}
