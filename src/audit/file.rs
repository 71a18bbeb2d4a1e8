//! The JSON-lines audit file: one JSON object per line, appended and `fdatasync`'d before the
//! write returns, so a line that was acknowledged survives a crash. Lines of one batch go in
//! one write, so processes appending to the same file never interleave inside a line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::AuditEvent;
use crate::error::{Error, Result};

/// An open, append-only audit file.
pub(super) struct JsonLines {
    path: PathBuf,
    file: File,
}

/// One line: the stage, then the event's fields.
#[derive(Serialize)]
struct Line<'a> {
    stage: &'a str,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

impl JsonLines {
    /// Opens (creating the directory and file if needed) for appending, owner-only.
    pub(super) fn open(path: &Path) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| Error::AuditFile {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            custody_recorder::permissions::create_dir(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends several lines with one write and one sync (the events of concurrent requests,
    /// written together). Nothing is acknowledged unless all of them are durable.
    pub(super) fn append_all(&mut self, lines: &[(&str, &AuditEvent)]) -> Result<()> {
        let mut out = Vec::new();
        for (stage, event) in lines {
            serde_json::to_writer(&mut out, &Line { stage, event })
                .map_err(|e| Error::AuditEvent(e.to_string()))?;
            out.push(b'\n');
        }
        let err = |source| Error::AuditFile {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&out).map_err(err)?;
        self.file.sync_data().map_err(err)
    }
}
