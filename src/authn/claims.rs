//! Pure validation of an ID token's claims against one issuer's configuration: `iss`, `aud`,
//! the time claims with their JSON types checked first, and the username and groups mapping
//! with kube-apiserver's rules. No I/O; the caller passes the clock.

use serde_json::{Map, Value};

use crate::authn::config::OidcIssuerConfig;
use crate::principal::AuthFailure;

/// Who a token names, after mapping and prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim.
    pub subject: String,
    /// The prefixed username.
    pub username: String,
    /// The prefixed groups, in token order without duplicates.
    pub groups: Vec<String>,
    /// The `exp` claim, Unix seconds.
    pub expires_at: i64,
}

/// Validates the claims of a token whose signature has been verified with this issuer's keys.
/// `now` is Unix seconds.
pub fn validate(
    claims: &Map<String, Value>,
    config: &OidcIssuerConfig,
    now: i64,
) -> Result<Identity, AuthFailure> {
    // `iss` must be byte-for-byte the configured issuer: no normalization of any kind.
    if claims.get("iss").and_then(Value::as_str) != Some(config.issuer.as_str()) {
        return Err(invalid("the token's issuer is not trusted"));
    }
    check_audience(claims.get("aud"), &config.effective_audiences())?;

    let leeway = i64::try_from(config.leeway_seconds).unwrap_or(0);
    // jsonwebtoken before 10.3 skipped `exp`/`nbf` checks when the claim had the wrong type,
    // so the types are checked here, on the raw JSON, before anything else reads them.
    let expires_at =
        time_claim(claims, "exp")?.ok_or_else(|| invalid("the token has no expiry"))?;
    let not_before = time_claim(claims, "nbf")?;
    time_claim(claims, "iat")?;
    if now > expires_at.saturating_add(leeway) {
        return Err(AuthFailure::Expired);
    }
    if not_before.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(invalid("the token is not valid yet"));
    }

    let subject = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        _ => return Err(invalid("the token has no subject")),
    };
    let username = username(claims, config)?;
    let groups = groups(claims, config)?;
    Ok(Identity {
        subject,
        username,
        groups,
        expires_at,
    })
}

/// `aud` is a string or a non-empty array of strings that contains an accepted audience.
fn check_audience(aud: Option<&Value>, accepted: &[String]) -> Result<(), AuthFailure> {
    let ours = |a: &str| accepted.iter().any(|x| x == a);
    let ok = match aud {
        Some(Value::String(a)) => ours(a),
        Some(Value::Array(items)) => {
            if !items.iter().all(Value::is_string) {
                return Err(invalid("the token's audience is malformed"));
            }
            items.iter().filter_map(Value::as_str).any(ours)
        }
        Some(_) => return Err(invalid("the token's audience is malformed")),
        None => return Err(invalid("the token has no audience")),
    };
    if ok {
        Ok(())
    } else {
        Err(invalid("the token was issued for another audience"))
    }
}

/// A `NumericDate` claim: absent, or a non-negative integer. Strings, floats, booleans and null
/// are refused rather than ignored.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, AuthFailure> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(t) if t >= 0 => Ok(Some(t)),
            _ => Err(AuthFailure::Invalid(format!(
                "the token's {name} is not a valid time"
            ))),
        },
        Some(_) => Err(AuthFailure::Invalid(format!(
            "the token's {name} is not a number"
        ))),
    }
}

/// The username: the configured claim (a non-empty string), prefixed. With the `email` claim,
/// `email_verified` must be the boolean `true` (absent only if configured).
fn username(claims: &Map<String, Value>, config: &OidcIssuerConfig) -> Result<String, AuthFailure> {
    let raw = match claims.get(&config.username_claim) {
        Some(Value::String(name)) => name.as_str(),
        Some(_) => return Err(invalid("the token's username claim is not a string")),
        None => return Err(refused("the token has no username")),
    };
    if config.username_claim == "email" {
        match claims.get("email_verified") {
            Some(Value::Bool(true)) => {}
            None if config.allow_missing_email_verified => {}
            // Absent, `false`, or not a boolean (`"true"` included).
            _ => return Err(refused("the token's email address is not verified")),
        }
    }
    if raw.is_empty() {
        return Err(refused("the token has an empty username"));
    }
    let username = format!("{}{raw}", config.username_prefix);
    check_name(raw, &username, "username")?;
    Ok(username)
}

/// The groups: the configured claim as an array of strings or a single string (both map the
/// same), each prefixed; absent or null means none.
fn groups(
    claims: &Map<String, Value>,
    config: &OidcIssuerConfig,
) -> Result<Vec<String>, AuthFailure> {
    let raw: Vec<&str> = match claims.get(&config.groups_claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(g)) => vec![g.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| invalid("the token's groups claim is malformed"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("the token's groups claim is malformed")),
    };
    let mut groups: Vec<String> = Vec::with_capacity(raw.len());
    for g in raw.into_iter().filter(|g| !g.is_empty()) {
        let group = format!("{}{g}", config.groups_prefix);
        check_name(g, &group, "group")?;
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    Ok(groups)
}

/// `system:` names belong to the cluster (kube-apiserver's userValidationRules refuse them for
/// OIDC identities), before or after the prefix. Control characters could split the headers
/// these names end up in.
fn check_name(raw: &str, prefixed: &str, what: &str) -> Result<(), AuthFailure> {
    if raw.starts_with("system:") || prefixed.starts_with("system:") {
        return Err(AuthFailure::Refused(format!(
            "a {what} starting with system: is reserved"
        )));
    }
    if raw.chars().any(char::is_control) {
        return Err(AuthFailure::Refused(format!(
            "the {what} has control characters"
        )));
    }
    Ok(())
}

fn invalid(reason: &str) -> AuthFailure {
    AuthFailure::Invalid(reason.to_owned())
}

fn refused(reason: &str) -> AuthFailure {
    AuthFailure::Refused(reason.to_owned())
}

#[cfg(test)]
mod tests;
