//! Kubernetes `ServiceAccount` tokens for automation: recognized by their claims, verified by the
//! cluster itself through a `TokenReview` (`authentication.k8s.io/v1`), which the proxy side
//! sends with the gateway's own credential through the [`TokenReviewer`] seam.

use std::future::Future;
use std::pin::Pin;

use serde_json::{Value, json};

use crate::authn::config::ServiceAccountConfig;
use crate::authn::jose::UnverifiedToken;
use crate::principal::{AuthFailure, AuthMethod, Principal};

/// The username prefix of every `ServiceAccount`.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The issuer of legacy (Secret-based) `ServiceAccount` tokens.
const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// The identity a `TokenReview` returned for an authenticated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewedUser {
    /// `status.user.username`, e.g. `system:serviceaccount:ci:deployer`.
    pub username: String,
    /// `status.user.uid`.
    pub uid: String,
    /// `status.user.groups`.
    pub groups: Vec<String>,
}

/// The future a [`TokenReviewer`] returns (boxed so the trait stays object-safe).
pub type ReviewFuture<'a> =
    Pin<Box<dyn Future<Output = crate::Result<Option<ReviewedUser>>> + Send + 'a>>;

/// Asks a cluster whether a token is valid: `POST /apis/authentication.k8s.io/v1/tokenreviews`
/// with the gateway's own credential. `Ok(None)` means the cluster answered that the token is
/// not authenticated; `Err` means the cluster could not be asked.
pub trait TokenReviewer: Send + Sync {
    /// Reviews `token` with the named cluster, for these audiences (empty: the API server's).
    fn review<'a>(
        &'a self,
        cluster: &'a str,
        token: &'a str,
        audiences: &'a [String],
    ) -> ReviewFuture<'a>;
}

/// Whether an unverified token looks like a `ServiceAccount` token: a bound token (with the
/// `kubernetes.io` claim) or a legacy one, whose `sub` names a `ServiceAccount`.
pub fn looks_like_service_account(token: &UnverifiedToken) -> bool {
    let claims = &token.claims;
    let sub_ok = claims
        .get("sub")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with(SERVICE_ACCOUNT_PREFIX));
    let bound = claims.get("kubernetes.io").is_some_and(Value::is_object);
    let legacy = token.issuer() == Some(LEGACY_ISSUER);
    sub_ok && (bound || legacy)
}

/// The `TokenReview` request body for a token.
pub fn token_review_request(token: &str, audiences: &[String]) -> Value {
    let mut spec = json!({ "token": token });
    if !audiences.is_empty() {
        spec["audiences"] = json!(audiences);
    }
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec})
}

/// Reads a `TokenReview` response: the user when `status.authenticated` is `true`, `None`
/// otherwise (including malformed answers).
pub fn parse_token_review_response(body: &Value) -> Option<ReviewedUser> {
    let status = body.get("status")?;
    if status.get("authenticated") != Some(&Value::Bool(true)) {
        return None;
    }
    let user = status.get("user")?;
    let username = user.get("username")?.as_str()?.to_owned();
    let uid = user
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let groups = match user.get("groups") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|g| g.as_str().map(str::to_owned))
            .collect::<Option<_>>()?,
        Some(_) => return None,
    };
    Some(ReviewedUser {
        username,
        uid,
        groups,
    })
}

/// Verifies a `ServiceAccount` token with the cluster and builds its principal.
pub(crate) async fn authenticate(
    reviewer: &dyn TokenReviewer,
    config: &ServiceAccountConfig,
    cluster: &str,
    raw: &str,
    token: &UnverifiedToken,
) -> Result<Principal, AuthFailure> {
    let user = match reviewer.review(cluster, raw, &config.audiences).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Err(AuthFailure::Invalid(
                "the cluster did not accept the ServiceAccount token".into(),
            ));
        }
        Err(error) => {
            tracing::warn!(%cluster, %error, "TokenReview failed");
            return Err(AuthFailure::Unavailable(
                "the cluster cannot review tokens now".into(),
            ));
        }
    };
    // A TokenReview can authenticate any kind of cluster identity; only ServiceAccounts
    // are accepted here (people use OIDC).
    let name = user
        .username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .unwrap_or_default();
    let valid_name = matches!(name.split(':').collect::<Vec<_>>()[..], [ns, sa] if !ns.is_empty() && !sa.is_empty());
    if !valid_name || user.username.chars().any(char::is_control) {
        return Err(AuthFailure::Refused(
            "only ServiceAccount identities are accepted".into(),
        ));
    }
    Ok(Principal {
        method: AuthMethod::ServiceAccount,
        issuer: cluster.to_owned(),
        subject: user.username.clone(),
        username: user.username,
        groups: user.groups,
        expires_at: token.claims.get("exp").and_then(Value::as_i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_review_bodies_round_trip() {
        let req = token_review_request("t", &["aud".into()]);
        assert_eq!(req["spec"]["token"], "t");
        assert_eq!(req["spec"]["audiences"][0], "aud");
        assert!(
            token_review_request("t", &[])["spec"]
                .get("audiences")
                .is_none()
        );
        let resp = json!({"kind": "TokenReview", "status": {"authenticated": true, "user": {
            "username": "system:serviceaccount:ci:deployer", "uid": "u1",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:ci"]}}});
        let user = parse_token_review_response(&resp).unwrap();
        assert_eq!(user.username, "system:serviceaccount:ci:deployer");
        assert_eq!(user.groups.len(), 2);
        let denied = json!({"status": {"user": {}, "error": "invalid bearer token"}});
        assert_eq!(parse_token_review_response(&denied), None);
        let odd = json!({"status": {"authenticated": "true", "user": {"username": "x"}}});
        assert_eq!(parse_token_review_response(&odd), None);
    }
}
