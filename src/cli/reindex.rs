//! `custody reindex --data-dir DIR`: rebuild the index from the recording files.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use custody_recorder::index::Index;
use custody_recorder::reindex::reindex;

/// Rebuilds the session rows of `<data_dir>/index.sqlite` from `<data_dir>/recordings`,
/// showing progress; damaged files are listed and skipped.
pub fn run(data_dir: &Path) -> anyhow::Result<ExitCode> {
    if !data_dir.is_dir() {
        anyhow::bail!(
            "{} is not a directory (pass the configuration's data_dir)",
            data_dir.display()
        );
    }
    let index_path = data_dir.join("index.sqlite");
    let mut index = Index::open(&index_path)
        .with_context(|| format!("cannot open the index {}", index_path.display()))?;
    let mut stderr = std::io::stderr();
    let report = reindex(data_dir, &mut index, None, |p| {
        let _ = write!(stderr, "\rreindexing: {}/{} files", p.done, p.total);
        if let Some(err) = p.error {
            let _ = writeln!(stderr, "\n  skipped {}: {err}", p.path.display());
        }
    })
    .context("reindex failed")?;
    let _ = writeln!(stderr);
    println!(
        "indexed {} sessions in {:.1} s; {} files skipped",
        report.indexed,
        report.elapsed.as_secs_f64(),
        report.failed.len()
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
