//! The console's browser login: the OIDC authorization code flow with PKCE (S256), `state` and
//! `nonce`, run by the gateway as the browser's backend, with the `openidconnect` crate (on
//! `oauth2`) over custody's own HTTPS client (the issuer's CA, `ring`, timeouts, size caps).
//!
//! The ID token is verified twice on purpose: by `openidconnect` (signature with the
//! discovered keys, issuer, audience, expiry and the nonce of this login), then by the
//! gateway's authenticator exactly as a kubectl token is, which maps it to the person (claims,
//! prefixes, refusals). The second is what makes the console's person the same as kubectl's.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AsyncHttpClient, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest,
    HttpResponse, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
};

use super::ConsoleConfig;
use super::visits::Visits;
use crate::authn::https::HttpsClient;
use crate::error::{Error, Result};

/// How long the issuer's discovery document and keys are used before they are fetched again.
const METADATA_MAX_AGE: Duration = Duration::from_secs(3600);

/// The OIDC client of the console.
pub struct Login {
    http: IssuerHttp,
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    scopes: Vec<String>,
    redirect_uri: String,
    metadata: tokio::sync::Mutex<Option<(CoreProviderMetadata, Instant)>>,
}

/// An ID token that verified, with where the person was going.
#[derive(Debug)]
pub struct LoggedIn {
    /// The ID token, to be mapped by the gateway's authenticator.
    pub id_token: String,
    /// The console path to continue at.
    pub next: String,
}

impl Login {
    /// The client for this configuration.
    pub fn new(config: &ConsoleConfig) -> Result<Self> {
        let http = HttpsClient::new(config.issuer_ca_pem.as_deref(), config.http_timeout)
            .map_err(Error::AuthnConfig)?;
        Ok(Self {
            http: IssuerHttp(http),
            issuer: config.issuer.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scopes: config.scopes.clone(),
            redirect_uri: format!(
                "{}{}/login/callback",
                config.public_origin,
                super::UI_PREFIX
            ),
            metadata: tokio::sync::Mutex::new(None),
        })
    }

    /// The issuer's metadata (and keys), discovered at most [`METADATA_MAX_AGE`] ago.
    async fn metadata(&self, refresh: bool) -> Result<CoreProviderMetadata> {
        let mut cached = self.metadata.lock().await;
        if let Some((metadata, at)) = cached.as_ref()
            && !refresh
            && at.elapsed() < METADATA_MAX_AGE
        {
            return Ok(metadata.clone());
        }
        let issuer = IssuerUrl::new(self.issuer.clone())
            .map_err(|e| Error::ConsoleLogin(format!("issuer URL {:?}: {e}", self.issuer)))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                Error::ConsoleLogin(format!(
                    "cannot discover issuer {}: {}",
                    self.issuer,
                    error_chain(&e)
                ))
            })?;
        *cached = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
    > {
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .map_err(|e| Error::ConsoleLogin(format!("redirect URI: {e}")))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.client_id.clone()),
            self.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// Starts a login that will continue at `next`: records its state, nonce and PKCE
    /// verifier in `visits`, and returns the issuer's authorization URL and the `state` (which
    /// the caller binds to the browser with a cookie).
    pub async fn start(&self, visits: &Visits, next: String) -> Result<(String, String)> {
        let client = self.client(self.metadata(false).await?)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in self.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        visits.start_login(
            state.secret(),
            nonce.secret().clone(),
            verifier.secret().clone(),
            next,
        );
        Ok((url.to_string(), state.secret().clone()))
    }

    /// Finishes the login whose `state` came back with `code`: the state must be one this
    /// browser started (`bound_state`, from its cookie) and still pending; the code is
    /// exchanged with the PKCE verifier and the ID token verified with the nonce.
    pub async fn finish(
        &self,
        visits: &Visits,
        state: &str,
        bound_state: Option<&str>,
        code: &str,
    ) -> Result<LoggedIn> {
        // Security: the callback must come back to the browser that started the login (login
        // CSRF: otherwise an attacker could log a victim's browser into the attacker's account).
        if bound_state != Some(state) {
            return Err(Error::ConsoleLogin(
                "this login was not started in this browser (or its cookie expired)".into(),
            ));
        }
        let pending = visits.finish_login(state).ok_or_else(|| {
            Error::ConsoleLogin("this login is unknown, already used or too old".into())
        })?;
        let client = self.client(self.metadata(false).await?)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| Error::ConsoleLogin(format!("the issuer has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                Error::ConsoleLogin(format!("the issuer refused the code: {}", error_chain(&e)))
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| Error::ConsoleLogin("the issuer answered without an ID token".into()))?;
        let nonce = Nonce::new(pending.nonce.clone());
        if let Err(first) = id_token.claims(&client.id_token_verifier(), &nonce) {
            // The issuer may have rotated its keys since discovery: fetch them once more.
            let client = self.client(self.metadata(true).await?)?;
            id_token
                .claims(&client.id_token_verifier(), &nonce)
                .map_err(|e| {
                    Error::ConsoleLogin(format!(
                        "the ID token did not verify: {e} (before refreshing the keys: {first})"
                    ))
                })?;
        }
        Ok(LoggedIn {
            id_token: id_token.to_string(),
            next: pending.next,
        })
    }
}

/// `openidconnect`'s HTTP client: custody's HTTPS client (https only, the issuer's CA,
/// timeouts, response size cap, redirects never followed).
struct IssuerHttp(HttpsClient);

/// A request to the issuer that failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IssuerHttpError(String);

impl<'c> AsyncHttpClient<'c> for IssuerHttp {
    type Error = IssuerHttpError;
    type Future = Pin<
        Box<dyn Future<Output = std::result::Result<HttpResponse, IssuerHttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move { self.0.exchange(request).await.map_err(IssuerHttpError) })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}
