//! `custody play ID|FILE`: the terminal player for a recorded (or, with `--follow`, a live)
//! session. The player itself is `custody_replay`; this file finds the recording, the key that
//! verifies it, and, when following, feeds it the control socket's event stream.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

use anyhow::Context;
use base64::Engine;
use custody::control::client::ControlClient;
use custody::control::events::FollowLine;
use custody_recorder::index::Index;
use custody_recorder::integrity::{load_or_create_signing_key, parse_verifying_key};
use custody_recorder::model::{Event, EventKind};
use custody_replay::{KeyOrigin, LiveUpdate, PlayOptions, PlaySource, Session};
use ed25519_dalek::VerifyingKey;

use super::serve::SIGNING_KEY_FILE;
use super::source::{Source, SourceArgs};

/// `custody play` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A session id (looked up in the index of --data-dir) or a recording file (`.cast.zst`).
    target: String,
    /// Where a session id is looked up: `--data-dir` (whose signing key verifies the file) or
    /// `--server` (the file is downloaded and verified with the gateway's published key).
    #[command(flatten)]
    source: SourceArgs,
    /// The public key that must have signed the file (PEM or hex, as `custody key` prints it).
    /// Default: the data directory's key with --data-dir, the gateway's with --server, else
    /// the key the file names (which proves the file is intact, not who wrote it).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Playback speed: 1, 2, 4, 8 or 16.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    speed: u32,
    /// Start at this point of the session: `SS`, `MM:SS` or `H:MM:SS`.
    #[arg(long, value_name = "TIME", value_parser = parse_at)]
    at: Option<u64>,
    /// Play pauses as one second at most.
    #[arg(long)]
    skip_idle: bool,
    /// Follow a live session as it happens (needs --data-dir and the gateway running there).
    #[arg(long, requires = "data_dir")]
    follow: bool,
}

/// Plays the session until the user quits.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (key, origin) = verifying_key(args)?;
    let path = Path::new(&args.target);
    let by_file = path.is_file() || args.target.ends_with(".cast.zst");
    let options = PlayOptions {
        speed: args.speed,
        start_at_us: args.at,
        skip_idle: args.skip_idle,
    };
    if args.source.server.is_some() {
        anyhow::ensure!(
            !args.follow,
            "--follow works on the gateway's host, with --data-dir"
        );
        anyhow::ensure!(!by_file, "with --server, give a session id, not a file");
        let source = Source::open(&args.source)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let given = key.map(|key| (key, origin));
        let session = runtime.block_on(source.player_session(&args.target, given))?;
        custody_replay::play(PlaySource::Session(Box::new(session)), &options)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.follow {
        let data_dir = args
            .source
            .data_dir
            .as_deref()
            .context("--follow needs --data-dir")?;
        anyhow::ensure!(!by_file, "--follow takes a session id, not a file");
        return follow(data_dir, &args.target, key.as_ref(), origin, &options);
    }
    let session = load(args, key.as_ref(), origin, by_file)?;
    custody_replay::play(PlaySource::Session(Box::new(session)), &options)?;
    Ok(ExitCode::SUCCESS)
}

fn load(
    args: &Args,
    key: Option<&VerifyingKey>,
    origin: KeyOrigin,
    by_file: bool,
) -> anyhow::Result<Session> {
    if by_file {
        return Session::open_file(Path::new(&args.target), key, origin)
            .with_context(|| format!("cannot play {}", args.target));
    }
    let Some(data_dir) = &args.source.data_dir else {
        anyhow::bail!(
            "{} is not a file; to play a session by id, pass --data-dir",
            args.target
        );
    };
    let index_path = data_dir.join("index.sqlite");
    if !index_path.exists() {
        return Err(super::source::no_index(data_dir));
    }
    let index = Index::open(&index_path)
        .with_context(|| format!("cannot open the index {}", index_path.display()))?;
    Session::open_indexed(&index, &args.target, key, origin)
        .with_context(|| format!("cannot play session {}", args.target))
}

/// The key from --key, else the data directory's, else none (the file's own).
fn verifying_key(args: &Args) -> anyhow::Result<(Option<VerifyingKey>, KeyOrigin)> {
    if let Some(path) = &args.key {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the key {}", path.display()))?;
        let key = parse_verifying_key(&text)
            .with_context(|| format!("{} is not a public key", path.display()))?;
        return Ok((Some(key), KeyOrigin::Given));
    }
    if let Some(dir) = &args.source.data_dir {
        let path = dir.join(SIGNING_KEY_FILE);
        if path.exists() {
            let key = load_or_create_signing_key(&path)
                .with_context(|| format!("signing key {}", path.display()))?;
            return Ok((Some(key.verifying_key()), KeyOrigin::DataDir));
        }
    }
    Ok((None, KeyOrigin::NamedInFile))
}

/// Plays a live session: attaches to its event stream first (so nothing falls between), loads
/// what its file holds, then plays both. A session that is not live any more plays from its
/// file.
fn follow(
    data_dir: &Path,
    id: &str,
    key: Option<&VerifyingKey>,
    origin: KeyOrigin,
    options: &PlayOptions,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = ControlClient::new(data_dir);
    let stream = runtime.block_on(client.follow(id));
    let index_path = data_dir.join("index.sqlite");
    let index = Index::open(&index_path)
        .with_context(|| format!("cannot open the index {}", index_path.display()))?;
    let session = Session::open_indexed(&index, id, key, origin)
        .with_context(|| format!("cannot play session {id}"))?;
    let Ok(mut stream) = stream else {
        eprintln!("session {id} is not live; playing its recording");
        custody_replay::play(PlaySource::Session(Box::new(session)), options)?;
        return Ok(ExitCode::SUCCESS);
    };
    let (tx, rx) = mpsc::channel();
    runtime.spawn(async move {
        while let Ok(Some(line)) = stream.next_line().await {
            let Ok(line) = serde_json::from_slice::<FollowLine>(&line) else {
                continue;
            };
            let end = matches!(line, FollowLine::End { .. });
            if let Some(update) = update_of(line)
                && tx.send(update).is_err()
            {
                return;
            }
            if end {
                return;
            }
        }
    });
    custody_replay::play(
        PlaySource::Live {
            session: Box::new(session),
            updates: rx,
        },
        options,
    )?;
    runtime.shutdown_background();
    Ok(ExitCode::SUCCESS)
}

/// A line of the control socket's event stream as a player update.
fn update_of(line: FollowLine) -> Option<LiveUpdate> {
    let bytes = |text: Option<String>, b64: Option<String>| match (text, b64) {
        (Some(text), _) => Some(text.into_bytes()),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
        (None, None) => Some(Vec::new()),
    };
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "session seconds, clamped at 0, fit u64 microseconds"
    )]
    let at = |time: f64| -> u64 { (time.max(0.0) * 1e6).round() as u64 };
    let (time, kind) = match line {
        FollowLine::Output { time, text, base64 } => {
            (time, EventKind::Output(bytes(text, base64)?))
        }
        FollowLine::Stderr { time, text, base64 } => {
            (time, EventKind::Stderr(bytes(text, base64)?))
        }
        FollowLine::Input { time, text, base64 } => (time, EventKind::Input(bytes(text, base64)?)),
        FollowLine::Resize { time, cols, rows } => (time, EventKind::Resize { cols, rows }),
        FollowLine::Exit {
            time,
            code,
            message,
        } => (time, EventKind::Exit { code, message }),
        FollowLine::Marker { time, label } => (time, EventKind::Marker(label)),
        FollowLine::Lagged { missed } => return Some(LiveUpdate::Lagged(missed)),
        FollowLine::End { status } => return Some(LiveUpdate::End(status)),
        // Port-forward lines have nothing to show on a terminal.
        _ => return None,
    };
    Some(LiveUpdate::Event(Event {
        time_us: at(time),
        kind,
    }))
}

/// `SS`, `MM:SS` or `H:MM:SS` as µs.
fn parse_at(text: &str) -> Result<u64, String> {
    let mut seconds = 0u64;
    let parts: Vec<&str> = text.split(':').collect();
    if parts.is_empty() || parts.len() > 3 {
        return Err(format!("{text:?}: expected SS, MM:SS or H:MM:SS"));
    }
    for part in parts {
        let n: u64 = part
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: expected SS, MM:SS or H:MM:SS"))?;
        seconds = seconds * 60 + n;
    }
    Ok(seconds * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_at("12:34"), Ok(754_000_000));
        assert_eq!(parse_at("1:00:05"), Ok(3_605_000_000));
        assert_eq!(parse_at("7"), Ok(7_000_000));
        assert!(parse_at("x").is_err());
    }

    #[test]
    fn stream_lines_become_events() {
        let line = FollowLine::Output {
            time: 1.5,
            text: Some("hi".into()),
            base64: None,
        };
        assert_eq!(
            update_of(line),
            Some(LiveUpdate::Event(Event {
                time_us: 1_500_000,
                kind: EventKind::Output(b"hi".to_vec())
            }))
        );
    }
}
