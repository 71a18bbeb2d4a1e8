//! Kubernetes `Status` responses: every error custody itself returns is one, so kubectl prints
//! its message as it would print the API server's (`Error from server (Forbidden): ...`).

use http::{HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::principal::AuthFailure;
use crate::proxy::{self, Body};

/// A `Status` failure response with this code and message, carrying the request id as
/// `Audit-Id` so the client's error can be found in the audit trail.
pub fn status_response(code: StatusCode, message: &str, request_id: &str) -> Response<Body> {
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason(code),
        "code": code.as_u16(),
    });
    let mut response = Response::new(proxy::full(status.to_string()));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("audit-id", id);
    }
    response
}

/// What a person should do after an authentication failure. The failure's detail is logged
/// and audited, never returned: it could help someone forging tokens.
pub fn auth_guidance(failure: &AuthFailure) -> &'static str {
    match failure {
        AuthFailure::Missing => {
            "custody: no credentials were presented; run `custody login` and use the kubeconfig it writes"
        }
        AuthFailure::Invalid(_) => {
            "custody: the credential was not accepted; run `custody login` to get a new one"
        }
        AuthFailure::Expired => {
            "custody: the credential has expired; run `custody login` to get a new one"
        }
        AuthFailure::Refused(_) => {
            "custody: this identity may not use the gateway; ask the gateway's administrators"
        }
        AuthFailure::Unavailable(_) => {
            "custody: the credential cannot be verified right now; try again in a moment"
        }
    }
}

/// The `Status.reason` for a code (`metav1.StatusReason`).
fn reason(code: StatusCode) -> &'static str {
    match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        500 => "InternalError",
        502..=504 => "ServiceUnavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn renders_a_kubernetes_status() {
        let response = status_response(StatusCode::FORBIDDEN, "alice may not", "id-1");
        assert_eq!(response.status(), 403);
        assert_eq!(response.headers()["audit-id"], "id-1");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["reason"], "Forbidden");
        assert_eq!(v["code"], 403);
        assert_eq!(v["message"], "alice may not");
    }

    #[test]
    fn guidance_never_carries_the_detail() {
        let msg = auth_guidance(&AuthFailure::Invalid("kid abc unknown".into()));
        assert!(!msg.contains("abc"));
    }
}
