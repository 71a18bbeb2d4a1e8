//! Fetching a gateway's login document with the right TLS trust: a CA file, the system roots,
//! or, on first contact, a CA pinned by its SHA-256 fingerprint.
//!
//! With a fingerprint the document is fetched once without verifying the certificate, only to
//! learn the CA it names; that CA must have the given fingerprint, and the document is then
//! fetched again over TLS verified against that CA. Nothing from the unverified fetch is used
//! unless the verified one returns the same document.

use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::{LoginDocument, LoginError, WELL_KNOWN_PATH};
use crate::authn::https::HttpsClient;
use crate::authn::jose::parse_strict_json;

/// How to trust the gateway's TLS certificate.
#[derive(Debug, Clone)]
pub enum GatewayTrust {
    /// The CA certificates in this PEM text (from `--ca-file` or an earlier login).
    Ca(String),
    /// The system's roots.
    System,
    /// The CA the gateway publishes, if its DER has this SHA-256 (hex, colons allowed).
    Fingerprint(String),
}

const TIMEOUT: Duration = Duration::from_secs(15);

/// Fetches and checks the login document of `server` (`https://host:port`).
pub async fn fetch_document(
    server: &str,
    trust: &GatewayTrust,
) -> Result<LoginDocument, LoginError> {
    let fail = |reason: String| LoginError::Document {
        server: server.to_owned(),
        reason,
    };
    let url = format!("{}{WELL_KNOWN_PATH}", server.trim_end_matches('/'));
    let client = match trust {
        GatewayTrust::Ca(pem) => HttpsClient::new(Some(pem.as_bytes()), TIMEOUT).map_err(fail)?,
        GatewayTrust::System => HttpsClient::new(None, TIMEOUT).map_err(fail)?,
        GatewayTrust::Fingerprint(expected) => {
            let unverified = HttpsClient::with_tls(unverified_tls().map_err(fail)?, TIMEOUT);
            let first = get_document(&unverified, &url).await.map_err(fail)?;
            let actual = ca_fingerprint(&first.ca_pem).map_err(fail)?;
            if normalize_fingerprint(expected) != actual {
                return Err(fail(format!(
                    "the gateway's CA has the SHA-256 fingerprint {actual}, not the one given"
                )));
            }
            let verified =
                HttpsClient::new(Some(first.ca_pem.as_bytes()), TIMEOUT).map_err(fail)?;
            let second = get_document(&verified, &url).await.map_err(fail)?;
            if second != first {
                return Err(fail("the gateway answered two different documents".into()));
            }
            return Ok(second);
        }
    };
    get_document(&client, &url).await.map_err(fail)
}

async fn get_document(client: &HttpsClient, url: &str) -> Result<LoginDocument, String> {
    let resp = client.get(url).await?;
    if resp.status == http::StatusCode::NOT_FOUND {
        return Err("the gateway publishes no login configuration (no [login] section)".into());
    }
    if !resp.status.is_success() {
        return Err(format!("{url} answered {}", resp.status));
    }
    let text = std::str::from_utf8(&resp.body).map_err(|_| "the answer is not UTF-8")?;
    let value = parse_strict_json(text).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let doc: LoginDocument =
        serde_json::from_value(value).map_err(|e| format!("unexpected document: {e}"))?;
    if !doc.issuer.starts_with("https://") {
        return Err(format!("the issuer {:?} is not an https URL", doc.issuer));
    }
    Ok(doc)
}

/// The SHA-256 of the first certificate's DER in `pem`, lowercase hex.
pub fn ca_fingerprint(pem: &str) -> Result<String, String> {
    let mut reader = pem.as_bytes();
    let cert = rustls_pemfile::certs(&mut reader)
        .next()
        .ok_or("the document's CA is not a PEM certificate")?
        .map_err(|e| format!("the document's CA is unreadable: {e}"))?;
    Ok(hex::encode(Sha256::digest(cert.as_ref())))
}

fn normalize_fingerprint(text: &str) -> String {
    let text = text.trim();
    let text = text
        .strip_prefix("SHA256:")
        .or_else(|| text.strip_prefix("sha256:"))
        .unwrap_or(text);
    text.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// TLS that accepts any certificate (signatures on the handshake are still checked): used
/// only to read the CA a fingerprint then pins.
fn unverified_tls() -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalize() {
        assert_eq!(normalize_fingerprint(" SHA256:AB:cd:01 "), "abcd01");
        assert_eq!(normalize_fingerprint("abcd"), "abcd");
    }
}
