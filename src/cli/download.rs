//! `custody download ID`: a session's recording (`raw`, the signed file itself) or an export of
//! it (`cast`, `cast-v2`, `txt`), from a data directory or a running gateway, into a file that
//! appears whole or not at all.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use custody_recorder::export::ExportFormat;
use custody_recorder::reader::read_recording;
use sha2::{Digest, Sha256};

use crate::cli::sessions::show::bytes as size_text;
use crate::cli::source::{Local, Source, SourceArgs};

/// `custody download`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: SourceArgs,
    /// The session id (from `custody sessions list`).
    id: String,
    /// What to download: `raw` is the signed recording as stored (zstd asciicast v3, verifiable
    /// with `custody verify`); `cast` is plain asciicast v3 for asciinema, `cast-v2` asciicast
    /// v2 for older players, `txt` the session as text. The exports hold the verified part.
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    format: Format,
    /// The file to write (default: ID.cast.zst, ID.cast, ID.v2.cast or ID.txt here).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
}

/// The download formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Raw,
    Cast,
    #[value(name = "cast-v2")]
    CastV2,
    Txt,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Cast => "cast",
            Format::CastV2 => "cast-v2",
            Format::Txt => "txt",
        }
    }

    fn export(self) -> Option<ExportFormat> {
        match self {
            Format::Raw => None,
            Format::Cast => Some(ExportFormat::Cast),
            Format::CastV2 => Some(ExportFormat::CastV2),
            Format::Txt => Some(ExportFormat::Txt),
        }
    }

    fn default_file(self, id: &str) -> PathBuf {
        let extension = self.export().map_or("cast.zst", ExportFormat::extension);
        PathBuf::from(format!("{id}.{extension}"))
    }
}

/// Runs `custody download`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let source = Source::open(&args.source)?;
    let dest = args
        .output
        .clone()
        .unwrap_or_else(|| args.format.default_file(&args.id));
    if dest.as_os_str().is_empty() || dest.is_dir() {
        anyhow::bail!("-o {}: name a file, not a directory", dest.display());
    }
    if !args.force && dest.symlink_metadata().is_ok() {
        anyhow::bail!("{} exists; pass --force to replace it", dest.display());
    }
    let mut sink = Sink::create(&dest)?;
    match &source {
        Source::Local(local) => from_data_dir(local, &args.id, args.format, &mut sink)?,
        Source::Remote(client) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async {
                let mut download = client
                    .download(&args.id, args.format.name())
                    .await
                    .with_context(|| format!("session {}", args.id))?;
                sink.expect(download.length);
                while let Some(chunk) = download.chunk().await? {
                    sink.write_all(&chunk)?;
                }
                anyhow::Ok(())
            })?;
        }
    }
    let (size, sha256) = sink.finish(&dest, args.force)?;
    println!("{}: {}, sha256 {sha256}", dest.display(), size_text(size));
    Ok(ExitCode::SUCCESS)
}

/// The file as stored (`raw`), or its export, from the data directory.
fn from_data_dir(local: &Local, id: &str, format: Format, sink: &mut Sink) -> anyhow::Result<()> {
    let (_row, path) = local.session(id)?;
    let Some(export) = format.export() else {
        let mut file =
            File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        sink.expect(file.metadata().ok().map(|m| m.len()));
        let mut buffer = vec![0; 256 * 1024];
        loop {
            let n = file
                .read(&mut buffer)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                return Ok(());
            }
            sink.write_all(&buffer[..n])?;
        }
    };
    let key = local.verifying_key()?;
    let recording = match read_recording(&path, Some(&key)) {
        Ok(recording) => recording,
        Err(custody_recorder::Error::HeaderDamaged(damage)) => anyhow::bail!(
            "the recording's header does not verify ({damage}); only --format raw can be \
             downloaded"
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if let Some(damage) = &recording.damage {
        eprintln!(
            "custody: the recording does not verify to its end ({damage}); the {} export holds \
             the verified part",
            format.name()
        );
    }
    let bytes = export.export(&recording)?;
    sink.expect(Some(bytes.len() as u64));
    sink.write_all(&bytes)?;
    Ok(())
}

/// A temporary file next to the destination, hashed and counted as it is written; removed
/// unless [`Sink::finish`] moves it into place.
struct Sink {
    file: Option<std::io::BufWriter<File>>,
    temp: PathBuf,
    kept: bool,
    hasher: Sha256,
    written: u64,
    progress: Progress,
}

impl Sink {
    fn create(dest: &Path) -> anyhow::Result<Self> {
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut attempt = 0u32;
        loop {
            let temp = dir.join(format!(".{name}.{}.{attempt}.part", std::process::id()));
            match File::options().write(true).create_new(true).open(&temp) {
                Ok(file) => {
                    return Ok(Self {
                        file: Some(std::io::BufWriter::with_capacity(256 * 1024, file)),
                        temp,
                        kept: false,
                        hasher: Sha256::new(),
                        written: 0,
                        progress: Progress::new(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create a temporary file in {}", dir.display())
                    });
                }
            }
        }
    }

    /// The size to expect, for the progress bar.
    fn expect(&mut self, total: Option<u64>) {
        self.progress.total = total;
    }

    fn write_all(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the download is already finished"))?;
        file.write_all(bytes)
            .with_context(|| format!("cannot write {}", self.temp.display()))?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        self.progress.show(self.written);
        Ok(())
    }

    /// Syncs the file and moves it to `dest` (replacing it only with `force`); returns the
    /// size and the hex SHA-256.
    fn finish(mut self, dest: &Path, force: bool) -> anyhow::Result<(u64, String)> {
        self.progress.clear();
        let file = self
            .file
            .take()
            .ok_or_else(|| anyhow::anyhow!("the download is already finished"))?
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .with_context(|| format!("cannot write {}", self.temp.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot sync {}", self.temp.display()))?;
        drop(file);
        if force {
            std::fs::rename(&self.temp, dest)
                .with_context(|| format!("cannot move the download to {}", dest.display()))?;
        } else {
            // A hard link never replaces an existing file: a file that appeared meanwhile wins.
            match std::fs::hard_link(&self.temp, dest) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&self.temp);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    anyhow::bail!("{} exists; pass --force to replace it", dest.display());
                }
                Err(_) if dest.symlink_metadata().is_err() => {
                    std::fs::rename(&self.temp, dest).with_context(|| {
                        format!("cannot move the download to {}", dest.display())
                    })?;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot move the download to {}", dest.display())
                    });
                }
            }
        }
        self.kept = true;
        let digest = std::mem::take(&mut self.hasher).finalize();
        let hex = digest.iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
        Ok((self.written, hex))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.kept {
            self.progress.clear();
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A progress bar on stderr, for files of at least a megabyte, when stderr is a terminal.
struct Progress {
    enabled: bool,
    total: Option<u64>,
    started: Instant,
    last: Option<Instant>,
    shown: bool,
}

/// Files smaller than this show no progress.
const PROGRESS_FROM: u64 = 1024 * 1024;
/// How often the bar is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

impl Progress {
    fn new() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            total: None,
            started: Instant::now(),
            last: None,
            shown: false,
        }
    }

    fn show(&mut self, done: u64) {
        if !self.enabled || self.total.is_some_and(|t| t < PROGRESS_FROM) {
            return;
        }
        if self.total.is_none() && done < PROGRESS_FROM {
            return;
        }
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < PROGRESS_EVERY) {
            return;
        }
        self.last = Some(now);
        self.shown = true;
        let _ = write!(
            std::io::stderr(),
            "\r\x1b[2K{}",
            progress_line(done, self.total, now - self.started)
        );
    }

    fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.shown = false;
        }
    }
}

/// `[=========>          ]  45%  12.3 MiB / 27.0 MiB  4.1 MiB/s`.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a progress bar needs no exact arithmetic"
)]
fn progress_line(done: u64, total: Option<u64>, elapsed: Duration) -> String {
    const WIDTH: usize = 30;
    let mib = |n: u64| n as f64 / 1_048_576.0;
    let rate = mib(done) / elapsed.as_secs_f64().max(0.001);
    match total {
        Some(total) if total > 0 => {
            let fraction = (done as f64 / total as f64).clamp(0.0, 1.0);
            let filled = (fraction * WIDTH as f64) as usize;
            let mut bar = "=".repeat(filled);
            if filled < WIDTH {
                bar.push('>');
                bar.push_str(&" ".repeat(WIDTH - filled - 1));
            }
            format!(
                "[{bar}] {:>3}%  {:.1} MiB / {:.1} MiB  {rate:.1} MiB/s",
                (fraction * 100.0) as u32,
                mib(done),
                mib(total)
            )
        }
        _ => format!("{:.1} MiB  {rate:.1} MiB/s", mib(done)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_bar_shows_how_far_and_how_fast() {
        let line = progress_line(5 * 1_048_576, Some(10 * 1_048_576), Duration::from_secs(2));
        assert_eq!(
            line,
            "[===============>              ]  50%  5.0 MiB / 10.0 MiB  2.5 MiB/s"
        );
        assert_eq!(
            progress_line(3 * 1_048_576, None, Duration::from_secs(1)),
            "3.0 MiB  3.0 MiB/s"
        );
        assert!(progress_line(10, Some(10), Duration::from_secs(1)).contains("100%"));
    }

    #[test]
    fn a_failed_download_leaves_nothing_and_an_existing_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.cast.zst");
        let mut sink = Sink::create(&dest).unwrap();
        sink.write_all(b"partial").unwrap();
        drop(sink);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        std::fs::write(&dest, b"old").unwrap();
        let mut sink = Sink::create(&dest).unwrap();
        sink.write_all(b"new").unwrap();
        assert!(sink.finish(&dest, false).is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let mut sink = Sink::create(&dest).unwrap();
        sink.write_all(b"new").unwrap();
        let (size, sha) = sink.finish(&dest, true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(size, 3);
        assert_eq!(
            sha,
            "11507a0e2f5e69d5dfa40a62a1bd7b6ee57e6bcd85c67c9b8431b36fff21c437"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
