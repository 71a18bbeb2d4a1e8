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
    /// The web console's origin, when it serves one: messages link to the request's page.
    console: Option<String>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("webhook", &self.target.as_ref().map(|(url, _)| url))
            .field("console", &self.console)
            .finish()
    }
}

impl Notifier {
    /// A notifier for `config`; reads the CA file now so a bad one fails at startup.
    pub fn new(config: &ApprovalsConfig) -> Result<Notifier, String> {
        let Some(url) = &config.webhook_url else {
            return Ok(Notifier {
                target: None,
                console: None,
            });
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
            console: None,
        })
    }

    /// A notifier that sends nothing.
    pub fn none() -> Notifier {
        Notifier {
            target: None,
            console: None,
        }
    }

    /// This notifier, linking each message to the request's page in the console at `origin`.
    #[must_use]
    pub fn with_console(mut self, origin: &str) -> Notifier {
        self.console = Some(origin.to_owned());
        self
    }

    /// Sends in the background; the caller never waits for the webhook.
    pub fn notify(self: &Arc<Self>, what: Happening, request: &AccessRequest) {
        let Some((url, client)) = self.target.clone() else {
            return;
        };
        let link = self
            .console
            .as_ref()
            .map(|origin| format!("{origin}/custody/ui/requests/{}", request.id));
        let body = payload(what, request, link.as_deref()).to_string();
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

/// The JSON a webhook receives; `link` is the request's page in the web console, when there is
/// one (approvers open it from the chat message).
pub fn payload(what: Happening, request: &AccessRequest, link: Option<&str>) -> serde_json::Value {
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
    let text = match link {
        Some(link) => format!("{text} — {link}"),
        None => text,
    };
    let mut message = json!({"event": what.name(), "text": text, "request": request});
    if let Some(link) = link {
        message["url"] = json!(link);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> AccessRequest {
        serde_json::from_value(json!({
            "id": "5df6646c-df4a-4b5b-9ce4-ea6bf48e4ac9",
            "requester": "oidc:alice",
            "scope": {"cluster": "demo", "namespace": "kube-system", "pod": "coredns-sim", "action": "exec", "as_user": null, "as_groups": []},
            "reason": "INC-7",
            "duration_seconds": 900,
            "state": "pending",
            "created_at": "2026-12-07T01:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn messages_link_to_the_request_in_the_console() {
        let link =
            "https://custody.example.com/custody/ui/requests/5df6646c-df4a-4b5b-9ce4-ea6bf48e4ac9";
        let message = payload(Happening::Requested, &request(), Some(link));
        assert_eq!(message["url"], link);
        assert!(message["text"].as_str().unwrap().ends_with(link));
        let without = payload(Happening::Requested, &request(), None);
        assert!(without.get("url").is_none());
        assert!(!without["text"].as_str().unwrap().contains("https://"));
    }
}
