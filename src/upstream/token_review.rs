//! `TokenReview` against the clusters: the [`TokenReviewer`] the gateway uses for
//! `ServiceAccount` tokens. Each review is a `POST` of `authentication.k8s.io/v1` `TokenReview`
//! to the cluster the request is for, sent with the gateway's own credential and nothing of the
//! caller's (no impersonation), bounded in time and in the size of the answer.

use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use crate::authn::serviceaccount::{
    ReviewFuture, parse_token_review_response, token_review_request,
};
use crate::authn::{ReviewedUser, TokenReviewer};
use crate::error::Error;
use crate::proxy;
use crate::upstream::Upstream;

/// The path of the `TokenReview` API (under the cluster's server path prefix).
pub const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// How long one review may take, connection included, unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest `TokenReview` answer read; a real one is a few kilobytes.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Reviews tokens with the cluster each request is for, over that cluster's [`Upstream`].
#[derive(Debug, Clone)]
pub struct ClusterReviewer {
    upstreams: HashMap<String, Upstream>,
    timeout: Duration,
}

impl ClusterReviewer {
    /// A reviewer over these clusters (name, upstream), with [`DEFAULT_TIMEOUT`].
    pub fn new(upstreams: impl IntoIterator<Item = (String, Upstream)>) -> ClusterReviewer {
        ClusterReviewer {
            upstreams: upstreams.into_iter().collect(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same reviewer with another time limit per review.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> ClusterReviewer {
        self.timeout = timeout;
        self
    }
}

impl TokenReviewer for ClusterReviewer {
    fn review<'a>(
        &'a self,
        cluster: &'a str,
        token: &'a str,
        audiences: &'a [String],
    ) -> ReviewFuture<'a> {
        Box::pin(async move {
            let fail = |reason: String| Error::TokenReview {
                cluster: cluster.to_owned(),
                reason,
            };
            let upstream = self
                .upstreams
                .get(cluster)
                .ok_or_else(|| fail("the cluster is not served by this gateway".into()))?;
            match tokio::time::timeout(self.timeout, review(upstream, token, audiences)).await {
                Ok(answer) => answer.map_err(fail),
                Err(_) => Err(fail(format!(
                    "no answer within {} s",
                    self.timeout.as_secs_f64()
                ))),
            }
        })
    }
}

/// Sends one `TokenReview` and reads the answer. `Ok(None)`: the cluster did not authenticate
/// the token (or authenticated it for none of the requested audiences); `Err`: the cluster
/// could not be asked or did not answer with a `TokenReview`.
async fn review(
    upstream: &Upstream,
    token: &str,
    audiences: &[String],
) -> std::result::Result<Option<ReviewedUser>, String> {
    let body = token_review_request(token, audiences).to_string();
    let mut headers = HeaderMap::new();
    let json = HeaderValue::from_static("application/json");
    headers.insert(http::header::CONTENT_TYPE, json.clone());
    headers.insert(http::header::ACCEPT, json);
    let response = upstream
        .send(Method::POST, TOKEN_REVIEW_PATH, headers, proxy::full(body))
        .await
        .map_err(|e| format!("the request failed: {}", error_chain(&e)))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?
        .to_bytes();
    let answer: Option<Value> = serde_json::from_slice(&bytes).ok();
    if !status.is_success() {
        let message = answer
            .as_ref()
            .and_then(|a| a.get("message"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(format!("the cluster answered {status}: {message}"));
    }
    let Some(answer) = answer.filter(|a| a.get("kind") == Some(&Value::from("TokenReview"))) else {
        return Err(format!(
            "the cluster's {status} answer is not a TokenReview"
        ));
    };
    let Some(user) = parse_token_review_response(&answer) else {
        let reason = answer["status"]["error"].as_str().unwrap_or_default();
        tracing::debug!(%reason, "the cluster did not authenticate the token");
        return Ok(None);
    };
    if !audiences.is_empty() && !names_a_requested_audience(&answer, audiences) {
        tracing::warn!(
            ?audiences,
            answered = %answer["status"]["audiences"],
            "a TokenReview authenticated the token for none of the requested audiences"
        );
        return Ok(None);
    }
    Ok(Some(user))
}

/// Whether `status.audiences` of an answer names one of the audiences asked for, as
/// kube-apiserver's webhook token authenticator requires when it asked for audiences.
fn names_a_requested_audience(answer: &Value, requested: &[String]) -> bool {
    answer["status"]["audiences"]
        .as_array()
        .is_some_and(|got| got.iter().any(|a| requested.iter().any(|r| a == r)))
}

/// An error and its sources, `a: b: c`, so a connection failure says why.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn audiences_must_intersect_the_request() {
        let answer = json!({"status": {"authenticated": true, "audiences": ["a", "b"]}});
        assert!(names_a_requested_audience(&answer, &["b".into()]));
        assert!(!names_a_requested_audience(&answer, &["c".into()]));
        assert!(!names_a_requested_audience(
            &json!({"status": {"authenticated": true}}),
            &["a".into()]
        ));
    }

    #[tokio::test]
    async fn a_cluster_the_gateway_does_not_serve_cannot_review() {
        let reviewer = ClusterReviewer::new([]);
        let err = reviewer.review("nowhere", "t", &[]).await.unwrap_err();
        assert!(matches!(err, Error::TokenReview { .. }), "{err}");
        assert!(err.to_string().contains("not served"), "{err}");
    }
}
