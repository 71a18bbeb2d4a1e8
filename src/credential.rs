//! kubectl's side of logging in: the `ExecCredential` a credential plugin prints
//! (`client.authentication.k8s.io/v1` and `v1beta1`), and a minimal non-interactive token fetch
//! from the development issuer (authorization code + PKCE with `login_hint`), which
//! `custody credential` wires together for `custody demo`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::authn::https::HttpsClient;
use crate::authn::jose::parse_strict_json;
use crate::{Error, Result};

/// The redirect URI of the non-interactive flow: loopback, where nothing listens; the code is
/// read from the issuer's `Location` header instead of being delivered.
pub const DEV_REDIRECT_URI: &str = "http://127.0.0.1/callback";

/// The `ExecCredential` API versions kubectl speaks to plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecCredentialVersion {
    /// `client.authentication.k8s.io/v1`.
    V1,
    /// `client.authentication.k8s.io/v1beta1` (older kubectl).
    V1Beta1,
}

impl ExecCredentialVersion {
    /// The `apiVersion` string.
    pub fn api_version(self) -> &'static str {
        match self {
            ExecCredentialVersion::V1 => "client.authentication.k8s.io/v1",
            ExecCredentialVersion::V1Beta1 => "client.authentication.k8s.io/v1beta1",
        }
    }

    /// The version kubectl asked for in `KUBERNETES_EXEC_INFO` (its `apiVersion`), `v1` when
    /// the variable is absent or unreadable. The answer must use the same version.
    pub fn from_exec_info(exec_info: Option<&str>) -> ExecCredentialVersion {
        let api_version = exec_info
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|v| {
                v.get("apiVersion")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        match api_version.as_deref() {
            Some("client.authentication.k8s.io/v1beta1") => ExecCredentialVersion::V1Beta1,
            _ => ExecCredentialVersion::V1,
        }
    }
}

/// The `ExecCredential` JSON a plugin prints on stdout: `status.token` and, when known,
/// `status.expirationTimestamp` (RFC 3339, UTC, seconds), after which kubectl runs the
/// plugin again.
pub fn exec_credential(
    version: ExecCredentialVersion,
    token: &str,
    expires_at: Option<i64>,
) -> Value {
    let mut status = json!({ "token": token });
    if let Some(ts) = expires_at.and_then(|t| DateTime::<Utc>::from_timestamp(t, 0)) {
        status["expirationTimestamp"] = json!(ts.to_rfc3339_opts(SecondsFormat::Secs, true));
    }
    json!({
        "apiVersion": version.api_version(),
        "kind": "ExecCredential",
        "status": status,
    })
}

/// A token from the development issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevToken {
    /// The ID token, what kubectl sends as its bearer token.
    pub id_token: String,
    /// When it expires, Unix seconds (its `exp`, or the token response's `expires_in`).
    pub expires_at: i64,
    /// The refresh token, if the issuer gave one.
    pub refresh_token: Option<String>,
}

/// Logs `user` in at the development issuer without a browser: discovery, then the
/// authorization request with PKCE (S256), `state`, `nonce` and `login_hint`, whose redirect
/// is read (not followed) to take the code, then the code exchange. `ca_pem` is the CA that
/// signed the issuer's certificate (`None`: the system roots).
pub async fn fetch_dev_token(
    issuer_url: &str,
    client_id: &str,
    user: &str,
    ca_pem: Option<&[u8]>,
) -> Result<DevToken> {
    let fail = |reason: String| Error::TokenFetch {
        issuer: issuer_url.to_owned(),
        reason,
    };
    let client = HttpsClient::new(ca_pem, std::time::Duration::from_secs(15)).map_err(fail)?;

    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        issuer_url.trim_end_matches('/')
    );
    let doc = json_of(
        &client.get(&discovery_url).await.map_err(fail)?,
        "discovery",
    )
    .map_err(fail)?;
    if doc.get("issuer").and_then(Value::as_str) != Some(issuer_url) {
        return Err(fail("the discovery document names another issuer".into()));
    }
    let endpoint = |name: &str| {
        doc.get(name)
            .and_then(Value::as_str)
            .filter(|u| u.starts_with("https://"))
            .map(str::to_owned)
            .ok_or_else(|| fail(format!("the discovery document has no https {name}")))
    };
    let (authorize_url, token_url) = (
        endpoint("authorization_endpoint")?,
        endpoint("token_endpoint")?,
    );

    let verifier = random_b64(32).map_err(fail)?;
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = random_b64(16).map_err(fail)?;
    let nonce = random_b64(16).map_err(fail)?;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", DEV_REDIRECT_URI)
        .append_pair("scope", "openid email profile groups offline_access")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("login_hint", user)
        .finish();
    let sep = if authorize_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let resp = client
        .get(&format!("{authorize_url}{sep}{query}"))
        .await
        .map_err(fail)?;
    if !resp.status.is_redirection() {
        return Err(fail(format!(
            "the authorization endpoint answered {}",
            resp.status
        )));
    }
    let location = resp
        .headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| fail("the authorization endpoint did not redirect".into()))?;
    let code = code_from_redirect(location, &state).map_err(fail)?;

    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &code)
        .append_pair("redirect_uri", DEV_REDIRECT_URI)
        .append_pair("client_id", client_id)
        .append_pair("code_verifier", &verifier)
        .finish();
    let resp = client.post_form(&token_url, form).await.map_err(fail)?;
    let body = json_of(&resp, "the token endpoint").map_err(fail)?;
    let id_token = body
        .get("id_token")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("the token response has no id_token".into()))?
        .to_owned();
    // The gateway verifies the token; here the claims are only read, to check the nonce
    // (binding the token to this request) and to learn the expiry.
    let claims = crate::authn::jose::parse(&id_token)
        .map_err(|e| fail(format!("the id_token is malformed: {e}")))?
        .claims;
    if claims.get("nonce").and_then(Value::as_str) != Some(nonce.as_str()) {
        return Err(fail("the id_token's nonce does not match".into()));
    }
    let expires_in = body.get("expires_in").and_then(Value::as_i64);
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_i64)
        .or_else(|| expires_in.map(|s| Utc::now().timestamp() + s))
        .ok_or_else(|| fail("the token response says nothing about expiry".into()))?;
    Ok(DevToken {
        id_token,
        expires_at,
        refresh_token: body
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Takes the code from the redirect `Location`, after checking it goes to our redirect URI,
/// carries our `state` (RFC 6749 §10.12) and no `error`.
fn code_from_redirect(location: &str, state: &str) -> std::result::Result<String, String> {
    let rest = location
        .strip_prefix(DEV_REDIRECT_URI)
        .and_then(|r| r.strip_prefix('?'))
        .ok_or("the issuer redirected somewhere else")?;
    let params: Vec<(String, String)> = form_urlencoded::parse(rest.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(error) = get("error") {
        return Err(format!("the issuer refused the login: {error}"));
    }
    if get("state") != Some(state) {
        return Err("the redirect's state does not match".into());
    }
    get("code")
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| "the redirect has no code".to_owned())
}

fn json_of(
    resp: &crate::authn::https::HttpResponse,
    what: &str,
) -> std::result::Result<Value, String> {
    if !resp.status.is_success() {
        return Err(format!("{what} answered {}", resp.status));
    }
    let text = std::str::from_utf8(&resp.body).map_err(|_| format!("{what} answered non-UTF-8"))?;
    parse_strict_json(text).map_err(|e| format!("{what} answered invalid JSON: {e}"))
}

fn random_b64(len: usize) -> std::result::Result<String, String> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_credentials_in_both_versions() {
        let v1 = exec_credential(ExecCredentialVersion::V1, "tok", Some(4_070_908_800));
        assert_eq!(
            v1,
            json!({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                   "status": {"token": "tok", "expirationTimestamp": "2099-01-01T00:00:00Z"}})
        );
        let beta = exec_credential(ExecCredentialVersion::V1Beta1, "tok", None);
        assert_eq!(beta["apiVersion"], "client.authentication.k8s.io/v1beta1");
        assert!(beta["status"].get("expirationTimestamp").is_none());
    }

    #[test]
    fn version_follows_kubernetes_exec_info() {
        let beta = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","spec":{"interactive":false}}"#;
        assert_eq!(
            ExecCredentialVersion::from_exec_info(Some(beta)),
            ExecCredentialVersion::V1Beta1
        );
        let v1 = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#;
        assert_eq!(
            ExecCredentialVersion::from_exec_info(Some(v1)),
            ExecCredentialVersion::V1
        );
        assert_eq!(
            ExecCredentialVersion::from_exec_info(None),
            ExecCredentialVersion::V1
        );
        assert_eq!(
            ExecCredentialVersion::from_exec_info(Some("junk")),
            ExecCredentialVersion::V1
        );
    }

    #[test]
    fn redirect_codes_need_our_state() {
        let ok = format!("{DEV_REDIRECT_URI}?code=abc&state=s1");
        assert_eq!(code_from_redirect(&ok, "s1").unwrap(), "abc");
        assert!(code_from_redirect(&ok, "s2").is_err());
        let err = format!("{DEV_REDIRECT_URI}?error=access_denied&state=s1");
        assert!(
            code_from_redirect(&err, "s1")
                .unwrap_err()
                .contains("access_denied")
        );
        assert!(
            code_from_redirect("http://evil.example/callback?code=abc&state=s1", "s1").is_err()
        );
        assert!(code_from_redirect(&format!("{DEV_REDIRECT_URI}?state=s1"), "s1").is_err());
    }
}
