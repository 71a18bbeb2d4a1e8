//! Shared helpers for the recorder's integration tests: sample sessions, keys, decompression and
//! the real asciinema CLI.

#![allow(dead_code, reason = "each test crate uses a different subset")]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed step should fail the test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custody_recorder::integrity::load_or_create_signing_key;
use custody_recorder::model::{
    EffectiveIdentity, Event, EventKind, Initiator, SessionKind, SessionMeta,
};
use ed25519_dalek::SigningKey;

/// Session metadata for a test session.
pub fn meta(session_id: &str) -> SessionMeta {
    SessionMeta {
        session_id: session_id.into(),
        kind: SessionKind::Exec,
        initiator: Initiator {
            issuer: "https://idp.example".into(),
            subject: "u-1".into(),
            username: "oidc:alice@example.com".into(),
            groups: vec!["oidc:sre".into()],
        },
        effective: EffectiveIdentity {
            user: "alice".into(),
            groups: vec!["sre".into()],
            uid: String::new(),
        },
        cluster: "prod".into(),
        namespace: "shop".into(),
        pod: "web-1".into(),
        container: "app".into(),
        command: vec!["/bin/sh".into()],
        tty: true,
        client_addr: "10.0.0.7:51234".into(),
        user_agent: "kubectl/v1.33.0".into(),
        approval_id: None,
        gateway_id: "gw-test".into(),
        replica_id: None,
        started_at_us: 1_760_000_000_000_000,
        term_size: Some((40, 6)),
    }
}

/// The signing key at `<dir>/signing.pem`, created on first use.
pub fn key(dir: &Path) -> Arc<SigningKey> {
    Arc::new(load_or_create_signing_key(&dir.join("signing.pem")).unwrap())
}

/// An output event.
pub fn out(time_us: u64, text: &[u8]) -> Event {
    Event {
        time_us,
        kind: EventKind::Output(text.to_vec()),
    }
}

/// The whole file decompressed the way `zstd -d` does (skippable frames skipped).
pub fn decompress(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    zstd::stream::decode_all(bytes.as_slice()).unwrap()
}

/// The asciinema 3 CLI, installed with `cargo install --locked asciinema` into
/// `$HOME/.cache/custody/tools` when missing. Parallel tests serialize on a lock file.
pub fn asciinema() -> PathBuf {
    let root = PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/custody/tools");
    let bin = root.join("bin/asciinema");
    std::fs::create_dir_all(&root).unwrap();
    let lock = root.join("asciinema.install.lock");
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        if bin.exists() {
            return bin;
        }
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
            .is_ok()
        {
            break;
        }
        // Another test (or run) is installing: wait for it, taking over a stale lock.
        let stale = std::fs::metadata(&lock)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(900));
        if stale {
            let _ = std::fs::remove_file(&lock);
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for the asciinema install"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = Command::new("cargo")
        .args(["install", "--locked", "asciinema", "--root"])
        .arg(&root)
        .status();
    let _ = std::fs::remove_file(&lock);
    assert!(
        status.unwrap().success(),
        "cargo install --locked asciinema failed"
    );
    assert!(bin.exists(), "asciinema not at {}", bin.display());
    bin
}

/// `PyPI` asciinema 2.4 (reads asciicast v1 and v2 only), installed with pip into a virtual
/// environment under `$HOME/.cache/custody/tools/asciinema2` when missing. Parallel tests
/// serialize on a lock file; a finished install is marked by `installed`.
pub fn asciinema2() -> PathBuf {
    let root = PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/custody/tools");
    let venv = root.join("asciinema2");
    let bin = venv.join("bin/asciinema");
    let marker = venv.join("installed");
    std::fs::create_dir_all(&root).unwrap();
    let lock = root.join("asciinema2.install.lock");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if marker.exists() {
            return bin;
        }
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
            .is_ok()
        {
            break;
        }
        let stale = std::fs::metadata(&lock)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(300));
        if stale {
            let _ = std::fs::remove_file(&lock);
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for the asciinema 2 install"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A venv records its own path, so it is built in place; a failed attempt is removed.
    let _ = std::fs::remove_dir_all(&venv);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let created = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    let installed = created
        && Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "asciinema==2.4.0",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if installed {
        std::fs::write(&marker, "asciinema 2.4.0\n").unwrap();
    }
    let _ = std::fs::remove_file(&lock);
    assert!(
        installed && bin.exists(),
        "could not install PyPI asciinema 2.4.0 into {} with {python} -m venv and pip",
        venv.display()
    );
    bin
}

/// `asciinema convert -f txt` of a decompressed cast: the final screen as text.
pub fn asciinema_screen(cast: &Path) -> String {
    let out = cast.with_extension("txt");
    let result = Command::new(asciinema())
        .env("RUST_BACKTRACE", "0")
        .args(["convert", "--overwrite", "-f", "txt"])
        .arg(cast)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "asciinema convert failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::read_to_string(out).unwrap()
}
