//! `custody verify FILE [--key KEY]`: checks a recording's hash chain and signatures offline
//! and prints a one-line verdict, then what was checked.
//!
//! | exit | first line | meaning |
//! |---|---|---|
//! | 0 | `intact` | every frame verifies and the signed manifest closes the file |
//! | 2 | `intact but interrupted at H:MM:SS.mmm` | verified up to that session time, then cut by a crash (sealed by recovery, or not sealed yet / still being written) |
//! | 1 | `altered: frame N at byte B: <what>` | the first frame, checkpoint or manifest that does not verify; or `not signed by the given key` |
//! | 3 | `unreadable: <why>` | not a file, not a custody recording, or a key that cannot be read |
//!
//! Without `--key` the signatures are checked against the key the file names: that proves the
//! file was not changed after it was signed (integrity), not who signed it (authorship). With
//! `--key` (the gateway's public key, PEM or hex, as `custody key` or `GET /custody/v1/key`
//! print it) every signature must also be by that key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use custody_recorder::integrity::{parse_verifying_key, public_key_hex};
use custody_recorder::reader::{Recording, read_recording_bytes};
use custody_recorder::verdict::{Verdict, session_time};

/// What to verify, against what.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recording (`<id>.cast.zst`, as stored or downloaded with format raw).
    file: PathBuf,
    /// The public key that must have signed it: a file with SPKI PEM or 64 hex digits.
    #[arg(long, value_name = "PUBKEY_PEM_OR_HEX_FILE")]
    key: Option<PathBuf>,
}

/// Exit code: the whole file verifies.
const INTACT: u8 = 0;
/// Exit code: something does not verify, or another key signed it.
const ALTERED: u8 = 1;
/// Exit code: verified up to a point, then cut by a crash.
const INTERRUPTED: u8 = 2;
/// Exit code: the file or the key cannot be read, or it is not a recording.
const UNREADABLE: u8 = 3;

/// Verifies and prints the verdict; the exit code says it too.
#[allow(
    clippy::unnecessary_wraps,
    reason = "every subcommand's run has this signature"
)]
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (code, lines) = verify(&args.file, args.key.as_deref());
    for line in lines {
        println!("{line}");
    }
    Ok(ExitCode::from(code))
}

fn verify(file: &Path, key_file: Option<&Path>) -> (u8, Vec<String>) {
    let unreadable = |why: String| (UNREADABLE, vec![format!("unreadable: {why}")]);
    let key = match key_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_verifying_key(&text).map_err(|e| e.to_string()))
        {
            Ok(key) => Some(key),
            Err(e) => return unreadable(format!("the key {}: {e}", path.display())),
        },
    };
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => return unreadable(format!("{}: {e}", file.display())),
    };
    if !bytes.starts_with(&ZSTD_MAGIC) {
        return unreadable(format!(
            "{} is not a custody recording (it does not start with a zstd frame)",
            file.display()
        ));
    }
    let recording = match read_recording_bytes(&bytes, None) {
        Ok(recording) => recording,
        Err(custody_recorder::Error::HeaderDamaged(damage)) => {
            return (
                ALTERED,
                vec![
                    format!("altered: {damage}"),
                    "  the header frame does not verify, so nothing in the file can be attributed"
                        .to_owned(),
                ],
            );
        }
        Err(e) => return unreadable(e.to_string()),
    };
    let named = recording
        .signer
        .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
        .map(|k| public_key_hex(&k))
        .unwrap_or_default();
    if let Some(key) = &key
        && public_key_hex(key) != named
    {
        return (
            ALTERED,
            vec![
                "altered: not signed by the given key".to_owned(),
                format!("  the file's signatures are by {named}"),
                format!("  the key given is {}", public_key_hex(key)),
            ],
        );
    }
    let verdict = Verdict::of(&recording);
    let code = match verdict {
        Verdict::Intact => INTACT,
        Verdict::Interrupted { .. } => INTERRUPTED,
        Verdict::Altered { .. } => ALTERED,
    };
    let mut lines = vec![verdict.to_string()];
    lines.push(describe(&recording));
    if let Verdict::Interrupted { .. } = verdict
        && let Some(problem) = verdict.problem(&recording)
    {
        lines.push(format!("  stops verifying at {problem}"));
    }
    lines.push(if key.is_some() {
        format!("  signed by the given key {named}")
    } else {
        format!(
            "  checked against the key the file names, {named}: this shows the file is unchanged \
             since it was signed, not who signed it; pass --key with the gateway's public key \
             to check that too"
        )
    });
    (code, lines)
}

fn describe(recording: &Recording) -> String {
    let meta = &recording.meta;
    let target = if meta.container.is_empty() {
        format!("{}/{}", meta.namespace, meta.pod)
    } else {
        format!("{}/{}/{}", meta.namespace, meta.pod, meta.container)
    };
    format!(
        "  session {} ({:?} by {} on {} {}): {} verified frames, {} events, until {}",
        meta.session_id,
        meta.kind,
        meta.initiator.username,
        meta.cluster,
        target,
        recording.frames.len(),
        recording.events.len(),
        session_time(recording.events.last().map_or(0, |e| e.time_us)),
    )
}

/// A zstd frame's magic number, little-endian: every recording starts with one.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
