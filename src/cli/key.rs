//! `custody key --data-dir DIR`: export the public key that verifies recordings.

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
