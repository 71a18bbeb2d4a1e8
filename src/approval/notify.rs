//! Telling approvers: a JSON `POST` to a configured webhook when access is requested, approved,
//! denied or revoked. Best effort by design: a webhook that is down must not block anyone's
//! access decision, so a failure is logged (with the request id) and counted, never retried
//! into a queue that could grow without bound.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AccessRequest;
use crate::authn::https::HttpsClient;

/// How long one notification may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `[approvals]` in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// An `https://` URL that receives a JSON `POST` for every request and decision. The body
    /// has a `text` field (one line for chat tools such as Slack or Mattermost) and the whole
    /// request under `request`.
    pub webhook_url: Option<String>,
    /// PEM certificates to trust for the webhook instead of the system's roots.
    pub webhook_ca_file: Option<PathBuf>,
}

impl ApprovalsConfig {
    /// Problems with this section, each a sentence.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(url) = &self.webhook_url {
            match url.parse::<http::Uri>() {
                Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {}
                _ => out.push(format!(
                    "approvals.webhook_url {url:?} must be an https:// URL"
                )),
            }
        }
        if self.webhook_ca_file.is_some() && self.webhook_url.is_none() {
            out.push("approvals.webhook_ca_file is set but approvals.webhook_url is not".into());
        }
        out
    }
}

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happening {
    /// Someone asked.
    Requested,
    /// Someone approved.
    Approved,
    /// Someone denied.
    Denied,
    /// Someone revoked the grant.
    Revoked,
}

impl Happening {
    fn name(self) -> &'static str {
        match self {
            Happening::Requested => "access_requested",
            Happening::Approved => "access_approved",
            Happening::Denied => "access_denied",
            Happening::Revoked => "access_revoked",
        }
    }
}

/// Sends notifications, if a webhook is configured.
#[derive(Clone)]
pub struct Notifier {
    target: Option<(String, HttpsClient)>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("webhook", &self.target.as_ref().map(|(url, _)| url))
            .finish()
    }
}

impl Notifier {
    /// A notifier for `config`; reads the CA file now so a bad one fails at startup.
    pub fn new(config: &ApprovalsConfig) -> Result<Notifier, String> {
        let Some(url) = &config.webhook_url else {
            return Ok(Notifier { target: None });
        };
        let ca = match &config.webhook_ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let client = HttpsClient::new(ca.as_deref(), TIMEOUT)?;
        Ok(Notifier {
            target: Some((url.clone(), client)),
        })
    }

    /// A notifier that sends nothing.
    pub fn none() -> Notifier {
        Notifier { target: None }
    }

    /// Sends in the background; the caller never waits for the webhook.
    pub fn notify(self: &Arc<Self>, what: Happening, request: &AccessRequest) {
        let Some((url, client)) = self.target.clone() else {
            return;
        };
        let body = payload(what, request).to_string();
        let id = request.id.clone();
        tokio::spawn(async move {
            match client.post_json(&url, body).await {
                Ok(response) if response.status.is_success() => {
                    tracing::debug!(request = %id, event = what.name(), "approvers notified");
                }
                Ok(response) => tracing::warn!(
                    request = %id,
                    status = %response.status,
                    "the approvals webhook refused the notification"
                ),
                Err(error) => tracing::warn!(
                    request = %id,
                    %error,
                    "the approvals webhook could not be reached"
                ),
            }
        });
    }
}

/// The JSON a webhook receives.
pub fn payload(what: Happening, request: &AccessRequest) -> serde_json::Value {
    let text = match what {
        Happening::Requested => format!(
            "{} asks for access: {} — \"{}\". Approve with: custody request approve {}",
            request.requester,
            super::describe_scope(&request.scope),
            request.reason,
            request.id
        ),
        Happening::Approved | Happening::Denied | Happening::Revoked => format!(
            "{} {} access for {}",
            request.decided_by.as_deref().unwrap_or("someone"),
            match what {
                Happening::Approved => "approved",
                Happening::Denied => "denied",
                _ => "revoked",
            },
            request.describe()
        ),
    };
    json!({"event": what.name(), "text": text, "request": request})
}
