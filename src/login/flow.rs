//! The OAuth client: discovery, the authorization code flow with PKCE (S256), `state` and
//! `nonce` on a loopback redirect (`http://127.0.0.1:<random port>/callback`, RFC 8252), the
//! code exchange, ID token validation (signature with the provider's JWKS, `iss`, `aud`,
//! expiry, `nonce`), refresh and revocation. Tokens are never printed or logged.
//!
//! For machines without a browser, the device authorization grant (RFC 8628): the provider
//! gives a user code and a verification URL to open on another device, and custody polls the
//! token endpoint until the login is approved, denied or expired. The same ID token checks
//! apply, except `nonce`: the device authorization request has no `nonce` parameter.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::store::StoredLogin;
use super::{LoginDocument, LoginError};
use crate::authn::claims::Identity;
use crate::authn::config::OidcIssuerConfig;
use crate::authn::https::{HttpResponse, HttpsClient};
use crate::authn::jose::parse_strict_json;
use crate::authn::oidc::IssuerVerifier;

const TIMEOUT: Duration = Duration::from_secs(15);

/// The provider's endpoints, from its discovery document.
pub struct Provider {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    issuer_ca_pem: Option<String>,
    authorization_endpoint: String,
    token_endpoint: String,
    revocation_endpoint: Option<String>,
    device_authorization_endpoint: Option<String>,
    http: HttpsClient,
    login_hint: Option<String>,
}

/// The device grant's type (RFC 8628 section 3.4).
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What the person must do to approve a device login: open `verification_uri` (or the
/// `verification_uri_complete` that carries the code) and enter `user_code`.
#[derive(Debug, Clone)]
pub struct DevicePrompt {
    /// Where to enter the code.
    pub verification_uri: String,
    /// The same with the code filled in, when the provider gives one.
    pub verification_uri_complete: Option<String>,
    /// The code to enter.
    pub user_code: String,
    /// How long the code is valid.
    pub expires_in: Duration,
}

impl Provider {
    /// Reads the discovery document of the document's issuer.
    pub async fn discover(
        doc: &LoginDocument,
        client_secret: Option<String>,
    ) -> Result<Provider, LoginError> {
        let fail = |reason: String| LoginError::Provider {
            issuer: doc.issuer.clone(),
            reason,
        };
        let http = HttpsClient::new(doc.issuer_ca_pem.as_ref().map(String::as_bytes), TIMEOUT)
            .map_err(fail)?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            doc.issuer.trim_end_matches('/')
        );
        let discovery = json_of(&http.get(&url).await.map_err(fail)?, "discovery").map_err(fail)?;
        if discovery.get("issuer").and_then(Value::as_str) != Some(doc.issuer.as_str()) {
            return Err(fail("its discovery document names another issuer".into()));
        }
        let endpoint = |name: &str| {
            discovery
                .get(name)
                .and_then(Value::as_str)
                .filter(|u| u.starts_with("https://"))
                .map(str::to_owned)
        };
        Ok(Provider {
            authorization_endpoint: endpoint("authorization_endpoint")
                .ok_or_else(|| fail("no https authorization_endpoint".into()))?,
            token_endpoint: endpoint("token_endpoint")
                .ok_or_else(|| fail("no https token_endpoint".into()))?,
            revocation_endpoint: endpoint("revocation_endpoint"),
            device_authorization_endpoint: endpoint("device_authorization_endpoint"),
            issuer: doc.issuer.clone(),
            client_id: doc.client_id.clone(),
            client_secret,
            issuer_ca_pem: doc.issuer_ca_pem.clone(),
            http,
            login_hint: None,
        })
    }

    /// Sends `login_hint` with the authorization request: the account to log in as.
    #[must_use]
    pub fn with_login_hint(mut self, hint: Option<String>) -> Self {
        self.login_hint = hint;
        self
    }

    fn fail(&self, reason: String) -> LoginError {
        LoginError::Provider {
            issuer: self.issuer.clone(),
            reason,
        }
    }

    /// Runs the authorization code flow. `show` is given the URL to open (it prints it and may
    /// start a browser); the redirect must arrive within `wait`.
    pub async fn login(
        &self,
        server: &str,
        doc: &LoginDocument,
        show: &dyn Fn(&str),
        wait: Duration,
    ) -> Result<StoredLogin, LoginError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| LoginError::Redirect(format!("cannot listen on loopback: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| LoginError::Redirect(e.to_string()))?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}/callback");
        let verifier = random_b64(32).map_err(|e| self.fail(e))?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = random_b64(16).map_err(|e| self.fail(e))?;
        let nonce = random_b64(16).map_err(|e| self.fail(e))?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("scope", &doc.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(hint) = &self.login_hint {
            // OIDC Core 3.1.2.1: pre-fills (or, at a development issuer, picks) the account.
            query.append_pair("login_hint", hint);
        }
        if doc.scopes.iter().any(|s| s == "offline_access") {
            // OIDC Core 11: a refresh token for offline_access needs the consent prompt.
            query.append_pair("prompt", "consent");
        }
        let query = query.finish();
        let sep = if self.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        show(&format!("{}{sep}{query}", self.authorization_endpoint));
        let code = tokio::time::timeout(wait, receive_code(&listener, &state))
            .await
            .map_err(|_| LoginError::Redirect(format!("no answer within {wait:?}")))??;

        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code")
            .append_pair("code", &code)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("code_verifier", &verifier);
        let body = self.token_request(form).await?;
        self.stored_from(server, doc, &body, Some(&nonce), None)
            .await
    }

    /// Runs the authorization code flow with custody itself as the browser: it follows the
    /// authorization URL to the provider and the provider's redirect back to the loopback
    /// listener. Only a provider that logs the `login_hint` user in without a form (a
    /// development issuer, as `custody demo` runs) completes it; a real provider answers with
    /// its login page, and this fails with what it answered.
    pub async fn login_unattended(
        &self,
        server: &str,
        doc: &LoginDocument,
        wait: Duration,
    ) -> Result<StoredLogin, LoginError> {
        let http = self.http.clone();
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
        let failed_tx = std::sync::Mutex::new(Some(failed_tx));
        let show = move |url: &str| {
            let http = http.clone();
            let url = url.to_owned();
            let failed = failed_tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            tokio::spawn(async move {
                if let Err(why) = follow_as_browser(&http, &url).await
                    && let Some(failed) = failed
                {
                    let _ = failed.send(why);
                }
            });
        };
        tokio::select! {
            result = self.login(server, doc, &show, wait) => result,
            Ok(why) = failed_rx => Err(self.fail(format!("unattended login: {why}"))),
        }
    }

    /// Runs the device authorization grant (RFC 8628). `show` is given what to tell the
    /// person; custody then polls the token endpoint, at the provider's `interval` (5 seconds
    /// when it names none, 5 more after each `slow_down`), for at most `wait` and never past
    /// the code's expiry.
    pub async fn device_login(
        &self,
        server: &str,
        doc: &LoginDocument,
        show: &dyn Fn(&DevicePrompt),
        wait: Duration,
    ) -> Result<StoredLogin, LoginError> {
        let endpoint = self.device_authorization_endpoint.as_ref().ok_or_else(|| {
            self.fail(
                "it has no https device_authorization_endpoint: it does not offer the device \
                 flow; log in without --device"
                    .into(),
            )
        })?;
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("scope", &doc.scopes.join(" "));
        self.client_auth(&mut form);
        let resp = self
            .http
            .post_form(endpoint, form.finish())
            .await
            .map_err(|e| self.fail(e))?;
        let answer = json_of(&resp, "the device authorization endpoint").map_err(|e| {
            self.fail(format!(
                "{e}{}",
                provider_error(&resp.body)
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ))
        })?;
        let text = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_owned);
        let (Some(device_code), Some(user_code), Some(verification_uri)) = (
            text("device_code"),
            text("user_code"),
            text("verification_uri"),
        ) else {
            return Err(self.fail(
                "the device authorization answer lacks device_code, user_code or \
                 verification_uri"
                    .into(),
            ));
        };
        let expires_in = Duration::from_secs(
            answer
                .get("expires_in")
                .and_then(Value::as_u64)
                .unwrap_or(600),
        );
        let mut interval = Duration::from_secs(
            answer
                .get("interval")
                .and_then(Value::as_u64)
                .unwrap_or(5)
                .clamp(1, 60),
        );
        show(&DevicePrompt {
            verification_uri,
            verification_uri_complete: text("verification_uri_complete"),
            user_code,
            expires_in,
        });
        let deadline = tokio::time::Instant::now() + expires_in.min(wait);
        loop {
            if tokio::time::Instant::now() + interval > deadline {
                return Err(LoginError::Redirect(format!(
                    "the code was not approved within {:?}; run the login again",
                    expires_in.min(wait)
                )));
            }
            tokio::time::sleep(interval).await;
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", DEVICE_GRANT)
                .append_pair("device_code", &device_code);
            match self.token_request(form).await {
                Ok(body) => return self.stored_from(server, doc, &body, None, None).await,
                Err(LoginError::Provider { reason, .. }) => {
                    let code = reason.split(':').next().unwrap_or_default();
                    match code {
                        "authorization_pending" => {}
                        "slow_down" => interval += Duration::from_secs(5),
                        "expired_token" => {
                            return Err(LoginError::Redirect(
                                "the code expired before the login was approved; run the \
                                 login again"
                                    .into(),
                            ));
                        }
                        "access_denied" => {
                            return Err(LoginError::Redirect(
                                "the login was denied at the identity provider".into(),
                            ));
                        }
                        _ => return Err(self.fail(reason)),
                    }
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Exchanges the stored refresh token for new tokens.
    pub async fn refresh(&self, stored: &StoredLogin) -> Result<StoredLogin, LoginError> {
        let Some(refresh_token) = &stored.refresh_token else {
            return Err(LoginError::NotLoggedIn {
                server: stored.server.clone(),
                detail: ": the ID token expired and there is no refresh token".into(),
            });
        };
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", refresh_token);
        let body = match self.token_request(form).await {
            Err(LoginError::Provider { reason, .. }) if reason.starts_with("invalid_grant") => {
                return Err(LoginError::RefreshRefused {
                    issuer: self.issuer.clone(),
                    server: stored.server.clone(),
                    reason,
                });
            }
            other => other?,
        };
        let mut fresh = self
            .stored_from(&stored.server, &stored.document, &body, None, Some(stored))
            .await?;
        if fresh.refresh_token.is_none() {
            fresh.refresh_token.clone_from(&stored.refresh_token);
        }
        Ok(fresh)
    }

    /// Revokes the refresh token (RFC 7009) when the provider has a revocation endpoint;
    /// `false` when it has none or there was no refresh token.
    pub async fn revoke(&self, stored: &StoredLogin) -> Result<bool, LoginError> {
        let (Some(endpoint), Some(token)) = (&self.revocation_endpoint, &stored.refresh_token)
        else {
            return Ok(false);
        };
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("token", token)
            .append_pair("token_type_hint", "refresh_token");
        self.client_auth(&mut form);
        let resp = self
            .http
            .post_form(endpoint, form.finish())
            .await
            .map_err(|e| self.fail(e))?;
        if !resp.status.is_success() {
            return Err(self.fail(format!("the revocation endpoint answered {}", resp.status)));
        }
        Ok(true)
    }

    fn client_auth(&self, form: &mut form_urlencoded::Serializer<'_, String>) {
        form.append_pair("client_id", &self.client_id);
        if let Some(secret) = &self.client_secret {
            form.append_pair("client_secret", secret);
        }
    }

    async fn token_request(
        &self,
        mut form: form_urlencoded::Serializer<'_, String>,
    ) -> Result<Map<String, Value>, LoginError> {
        self.client_auth(&mut form);
        let resp = self
            .http
            .post_form(&self.token_endpoint, form.finish())
            .await
            .map_err(|e| self.fail(e))?;
        let text = std::str::from_utf8(&resp.body).unwrap_or_default();
        let body = parse_strict_json(text).ok();
        if !resp.status.is_success() {
            // The provider's error code and description, never the request.
            let code = body
                .as_ref()
                .and_then(|b| b.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("error");
            let description = body
                .as_ref()
                .and_then(|b| b.get("error_description"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(self.fail(format!(
                "{code}: {description} (the token endpoint answered {})",
                resp.status
            )));
        }
        match body {
            Some(Value::Object(map)) => Ok(map),
            _ => Err(self.fail("the token endpoint answered something other than JSON".into())),
        }
    }

    /// Checks the token response's ID token and makes the stored login of it.
    async fn stored_from(
        &self,
        server: &str,
        doc: &LoginDocument,
        body: &Map<String, Value>,
        nonce: Option<&str>,
        previous: Option<&StoredLogin>,
    ) -> Result<StoredLogin, LoginError> {
        let id_token = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| self.fail("the token response has no id_token".into()))?;
        let (identity, claims) = validate_id_token(doc, id_token).await?;
        if let Some(nonce) = nonce
            && claims.get("nonce").and_then(Value::as_str) != Some(nonce)
        {
            return Err(self.fail("the ID token's nonce does not match this login".into()));
        }
        if let Some(previous) = previous {
            // OIDC Core 12.2: a refreshed ID token names the same subject.
            let before = crate::authn::jose::parse(&previous.id_token)
                .ok()
                .and_then(|t| {
                    t.claims
                        .get("sub")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
            if before.as_deref() != Some(identity.subject.as_str()) {
                return Err(self.fail("the refreshed ID token names another subject".into()));
            }
        }
        Ok(StoredLogin {
            server: server.to_owned(),
            document: doc.clone(),
            id_token: id_token.to_owned(),
            expires_at: identity.expires_at,
            refresh_token: body
                .get("refresh_token")
                .and_then(Value::as_str)
                .map(str::to_owned),
            profile: previous.and_then(|p| p.profile.clone()),
        })
    }

    /// The issuer's CA, as the document gave it.
    pub fn issuer_ca_pem(&self) -> Option<&str> {
        self.issuer_ca_pem.as_deref()
    }
}

/// Verifies an ID token as the gateway will: signature with the issuer's published keys,
/// `iss`, `aud` (the client id), `exp`/`nbf`. Returns the identity and the raw claims.
pub async fn validate_id_token(
    doc: &LoginDocument,
    id_token: &str,
) -> Result<(Identity, Map<String, Value>), LoginError> {
    let fail = |reason: String| LoginError::Provider {
        issuer: doc.issuer.clone(),
        reason,
    };
    let mut config = OidcIssuerConfig::new(&doc.issuer, &doc.client_id);
    config.username_prefix = String::new();
    config.groups_prefix = String::new();
    let verifier = Arc::new(
        IssuerVerifier::new(config, doc.issuer_ca_pem.as_ref().map(String::as_bytes))
            .map_err(fail)?,
    );
    let token = crate::authn::jose::parse(id_token)
        .map_err(|e| fail(format!("the ID token is malformed: {e}")))?;
    let now = chrono::Utc::now().timestamp();
    let identity = verifier
        .verify(&token, now)
        .await
        .map_err(|e| fail(format!("the ID token does not verify: {e}")))?;
    Ok((identity, token.claims))
}

/// Accepts connections on the loopback listener until one brings the redirect with our
/// `state`; answers each with a short page.
/// What a browser does with the authorization URL when the provider asks nothing: request it,
/// and follow its redirect to the loopback callback.
async fn follow_as_browser(http: &HttpsClient, url: &str) -> Result<(), String> {
    let answer = http.get(url).await?;
    let location = answer
        .headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|_| answer.status.is_redirection())
        .ok_or_else(|| {
            format!(
                "the provider answered {} instead of redirecting back (it wants a person to log in)",
                answer.status
            )
        })?;
    let rest = location
        .strip_prefix("http://127.0.0.1:")
        .ok_or_else(|| format!("the provider redirected elsewhere: {location}"))?;
    let (port, path) = rest.split_once('/').unwrap_or((rest, ""));
    let port: u16 = port
        .parse()
        .map_err(|_| format!("a bad redirect: {location}"))?;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot reach the loopback listener: {e}"))?;
    conn.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut sink = Vec::new();
    let _ = conn.read_to_end(&mut sink).await;
    Ok(())
}

async fn receive_code(listener: &TcpListener, state: &str) -> Result<String, LoginError> {
    loop {
        let (mut conn, _) = listener
            .accept()
            .await
            .map_err(|e| LoginError::Redirect(e.to_string()))?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let text = String::from_utf8_lossy(&buf);
        let target = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("GET "))
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_default()
            .to_owned();
        let Some(query) = target.strip_prefix("/callback?") else {
            let _ = conn
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let result = code_from_query(query, state);
        let page = match &result {
            Ok(_) => "custody: you are logged in; you can close this window.",
            Err(_) => "custody: the login failed; see the terminal.",
        };
        let _ = conn
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                )
                .as_bytes(),
            )
            .await;
        let _ = conn.shutdown().await;
        match result {
            // A redirect with another state is not ours (or is forged): keep waiting.
            Err(CallbackError::WrongState) => {}
            Err(CallbackError::Refused(e)) => return Err(LoginError::Redirect(e)),
            Ok(code) => return Ok(code),
        }
    }
}

enum CallbackError {
    WrongState,
    Refused(String),
}

fn code_from_query(query: &str, state: &str) -> Result<String, CallbackError> {
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if get("state") != Some(state) {
        return Err(CallbackError::WrongState);
    }
    if let Some(error) = get("error") {
        let description = get("error_description").unwrap_or_default();
        return Err(CallbackError::Refused(format!(
            "the identity provider refused: {error} {description}"
        )));
    }
    get("code")
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| CallbackError::Refused("the redirect has no code".into()))
}

/// The `error` code of an OAuth error answer, if it is one.
fn provider_error(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    parse_strict_json(text)
        .ok()?
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn json_of(resp: &HttpResponse, what: &str) -> Result<Value, String> {
    if !resp.status.is_success() {
        return Err(format!("{what} answered {}", resp.status));
    }
    let text = std::str::from_utf8(&resp.body).map_err(|_| format!("{what} answered non-UTF-8"))?;
    parse_strict_json(text).map_err(|e| format!("{what} answered invalid JSON: {e}"))
}

fn random_b64(len: usize) -> Result<String, String> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The claims of a stored (already verified) ID token, for `custody status`.
pub fn stored_claims(id_token: &str) -> Option<Map<String, Value>> {
    crate::authn::jose::parse(id_token).ok().map(|t| t.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_need_our_state() {
        assert!(matches!(code_from_query("code=abc&state=s1", "s1"), Ok(c) if c == "abc"));
        assert!(matches!(
            code_from_query("code=abc&state=s2", "s1"),
            Err(CallbackError::WrongState)
        ));
        assert!(matches!(
            code_from_query("error=access_denied&state=s1", "s1"),
            Err(CallbackError::Refused(e)) if e.contains("access_denied")
        ));
        assert!(matches!(
            code_from_query("state=s1", "s1"),
            Err(CallbackError::Refused(_))
        ));
    }
}
