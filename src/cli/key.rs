//! `custody key --data-dir DIR`: export the public key that verifies recordings; `custody key
//! --generate FILE`: make the signing key the replicas of a cluster share.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use custody_recorder::integrity::{load_or_create_signing_key, public_key_hex, public_key_pem};

use super::serve::SIGNING_KEY_FILE;

/// Prints the public half of the gateway's signing key. The key is created by the gateway on
/// its first start; this command never creates one.
pub fn run(data_dir: &Path, hex: bool) -> anyhow::Result<ExitCode> {
    let path = data_dir.join(SIGNING_KEY_FILE);
    if !path.exists() {
        anyhow::bail!(
            "no signing key at {} (the gateway creates it on its first start)",
            path.display()
        );
    }
    let key = load_or_create_signing_key(&path)
        .with_context(|| format!("signing key {}", path.display()))?;
    let public = key.verifying_key();
    if hex {
        println!("{}", public_key_hex(&public));
    } else {
        print!("{}", public_key_pem(&public)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a new signing key to `file`, which must not exist (a key that signed recordings is
/// never overwritten), and prints its public half.
pub fn generate(file: &Path, hex: bool) -> anyhow::Result<ExitCode> {
    if file.exists() {
        anyhow::bail!(
            "{} exists; a signing key is never replaced (recordings it signed verify only with it)",
            file.display()
        );
    }
    let key = load_or_create_signing_key(file)
        .with_context(|| format!("cannot create the signing key {}", file.display()))?;
    let public = key.verifying_key();
    eprintln!(
        "custody: wrote a new signing key to {} (owner-only); give the same file to every replica",
        file.display()
    );
    if hex {
        println!("{}", public_key_hex(&public));
    } else {
        print!("{}", public_key_pem(&public)?);
    }
    Ok(ExitCode::SUCCESS)
}
