//! Owner-only permissions for what custody keeps under its data directory: directories 0700,
//! files 0600. Recordings, the index and the audit trail hold who did what on which cluster
//! (and whatever a terminal printed); nobody but the gateway's own user reads them directly,
//! auditors read them through the gateway.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// The mode of every directory custody creates under its data directory.
pub const DIR_MODE: u32 = 0o700;

/// The mode of every file custody creates under its data directory.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode 0700. An existing directory is left as it
/// is: an operator may have chosen its mode (a group-readable data directory, say).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Makes sure `path` exists as a file only its owner can read and write: created 0600 when
/// missing; an existing file readable by others is narrowed to 0600. Used before `SQLite`
/// opens a database, which would otherwise create it with the process umask (and its `-wal`
/// and `-shm` files with the database's mode).
///
/// An existing file is never opened here, only looked at and `chmod`ed by path: closing any
/// descriptor of a file drops every POSIX lock this process holds on it, and another `SQLite`
/// connection of this process (the audit writer's, the API's) may hold some.
pub fn private_file(path: &Path) -> io::Result<()> {
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(path)
            {
                // Created here: nobody else in this process had it open.
                Ok(_) => return Ok(()),
                // Created by someone else meanwhile.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    std::fs::metadata(path)?.permissions().mode()
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_files_are_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        for d in [root.path().join("a"), dir.clone()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        let file = dir.join("index.sqlite");
        private_file(&file).unwrap();
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // An existing world-readable file is narrowed, its content kept.
        let loose = dir.join("loose");
        std::fs::write(&loose, b"kept").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&loose).unwrap();
        assert_eq!(
            std::fs::metadata(&loose).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read(&loose).unwrap(), b"kept");
    }
}
