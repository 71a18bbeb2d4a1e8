//! The gateway's signing key on disk: generated on first start as PKCS#8 PEM with mode 0600,
//! and its public key exported as SPKI PEM or hex for offline verification.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use ed25519_dalek::pkcs8::EncodePublicKey as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::error::{Error, Result};

/// Loads the signing key at `path`, generating it (mode 0600, parent directories created,
/// fsynced) when the file does not exist. A key file readable by group or others is refused.
pub fn load_or_create_signing_key(path: &Path) -> Result<SigningKey> {
    let fail = |reason: String| Error::SigningKey {
        path: path.to_owned(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            let mode = std::fs::metadata(path)
                .map_err(|e| fail(e.to_string()))?
                .permissions();
            if mode.mode() & 0o077 != 0 {
                return Err(fail(format!(
                    "mode {:o} is open to others; want 0600",
                    mode.mode()
                )));
            }
            SigningKey::from_pkcs8_pem(&pem).map_err(|e| fail(e.to_string()))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => create(path).map_err(fail),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), readable by OpenSSL.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::VerifyingKey(e.to_string()))
}

/// The public key as 64 lowercase hex digits.
pub fn public_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// Parses a public key given as SPKI PEM or as 64 hex digits.
pub fn parse_verifying_key(text: &str) -> Result<VerifyingKey> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(text)
            .map_err(|e| Error::VerifyingKey(e.to_string()));
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|e| Error::VerifyingKey(e.to_string()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| Error::VerifyingKey(e.to_string()))
}

/// Generates a key and writes it with `create_new`, so two starting processes cannot both
/// write one; the loser reads the winner's key.
fn create(path: &Path) -> Result<SigningKey, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::permissions::create_dir(dir).map_err(|e| e.to_string())?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let pem = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
            return SigningKey::from_pkcs8_pem(&pem).map_err(|e| e.to_string());
        }
        Err(e) => return Err(e.to_string()),
    };
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| e.to_string())?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_0600_then_loaded_and_exported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.pem");
        let key = load_or_create_signing_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create_signing_key(&path).unwrap();
        assert_eq!(key.to_bytes(), again.to_bytes());
        let public = key.verifying_key();
        let pem = public_key_pem(&public).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(parse_verifying_key(&pem).unwrap(), public);
        assert_eq!(
            parse_verifying_key(&public_key_hex(&public)).unwrap(),
            public
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create_signing_key(&path).is_err());
    }
}
