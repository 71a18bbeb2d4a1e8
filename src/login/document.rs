//! The login document: what a client needs to log in to a gateway and to write a kubeconfig
//! for it. The gateway builds it from `[login]` and serves it unauthenticated; it holds nothing
//! secret (never the client secret).

use serde::{Deserialize, Serialize};

/// Where the gateway serves its login document.
pub const WELL_KNOWN_PATH: &str = "/.well-known/custody";

/// One cluster the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginCluster {
    /// The cluster's name, as in `/clusters/<name>`.
    pub name: String,
    /// The path kubectl's `server` URL ends in, `/clusters/<name>`.
    pub path: String,
}

/// The published login configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginDocument {
    /// The OIDC issuer URL.
    pub issuer: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The scopes to request.
    pub scopes: Vec<String>,
    /// The CA (PEM) that signed the issuer's TLS certificate, when it is not a public one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ca_pem: Option<String>,
    /// The CA certificate (PEM) of the gateway's TLS certificate.
    pub ca_pem: String,
    /// The clusters, in configuration order.
    pub clusters: Vec<LoginCluster>,
}

impl LoginDocument {
    /// The document for a gateway: `[login]`, the issuer's CA file's text, the gateway CA, the
    /// cluster names.
    pub fn new(
        login: &crate::config::LoginConfig,
        issuer_ca_pem: Option<String>,
        ca_pem: String,
        cluster_names: impl IntoIterator<Item = String>,
    ) -> LoginDocument {
        LoginDocument {
            issuer: login.issuer.clone(),
            client_id: login.client_id.clone(),
            scopes: login.scopes.clone(),
            issuer_ca_pem,
            ca_pem,
            clusters: cluster_names
                .into_iter()
                .map(|name| LoginCluster {
                    path: format!("/clusters/{name}"),
                    name,
                })
                .collect(),
        }
    }
}

/// The last PEM certificate block of a chain file: the CA end of a served chain.
pub fn last_certificate_pem(chain: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = chain.rfind(BEGIN)?;
    let end = chain[start..].find(END)? + start + END.len();
    Some(format!("{}\n", &chain[start..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_certificate_of_a_chain() {
        let chain = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            last_certificate_pem(chain).unwrap(),
            "-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n"
        );
        assert!(last_certificate_pem("nothing").is_none());
    }
}
