//! The token store: one JSON file per gateway under the user's configuration directory
//! (`$XDG_CONFIG_HOME/custody/logins/` or `~/.config/custody/logins/`), the directory mode
//! 0700 and each file 0600. A file is replaced atomically (written beside, synced, renamed),
//! so a reader sees the old tokens or the new ones, never a mix.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{LoginDocument, LoginError};

/// What is kept for one gateway.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogin {
    /// The gateway URL as given to `custody login --server`.
    pub server: String,
    /// The login document the gateway published (issuer, client, CA, clusters).
    pub document: LoginDocument,
    /// The ID token, kubectl's bearer token.
    pub id_token: String,
    /// When the ID token expires, Unix seconds.
    pub expires_at: i64,
    /// The refresh token, if the provider gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The profile name, when one person keeps several logins to one gateway (`--profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl std::fmt::Debug for StoredLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredLogin")
            .field("server", &self.server)
            .field("profile", &self.profile)
            .field("issuer", &self.document.issuer)
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

/// The store's directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in the user's configuration directory, from `XDG_CONFIG_HOME` or `HOME`.
    pub fn from_env() -> Result<Store, LoginError> {
        let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
                .ok_or_else(|| LoginError::Store {
                    path: "~/.config".into(),
                    reason: "neither XDG_CONFIG_HOME nor HOME is set".into(),
                })?,
        };
        Ok(Store::at(base.join("custody").join("logins")))
    }

    /// A store in this directory.
    pub fn at(dir: PathBuf) -> Store {
        Store { dir }
    }

    /// The file for `server` (and `profile`): a hash of the normalized URL (and the profile
    /// name), so any URL and name make a safe file name.
    pub fn path_for(&self, server: &str, profile: Option<&str>) -> PathBuf {
        let mut key = normalize_server(server);
        if let Some(profile) = profile {
            key.push('#');
            key.push_str(profile);
        }
        let digest = Sha256::digest(key.as_bytes());
        self.dir
            .join(format!("{}.json", &hex::encode(digest)[..32]))
    }

    /// The stored login for `server` (and `profile`), if any.
    pub fn load(
        &self,
        server: &str,
        profile: Option<&str>,
    ) -> Result<Option<StoredLogin>, LoginError> {
        let path = self.path_for(server, profile);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| store_error(&path, &format!("unreadable: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store_error(&path, &e.to_string())),
        }
    }

    /// Every stored login.
    pub fn all(&self) -> Result<Vec<StoredLogin>, LoginError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(store_error(&self.dir, &e.to_string())),
        };
        let mut logins = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).map_err(|e| store_error(&path, &e.to_string()))?;
                if let Ok(login) = serde_json::from_slice::<StoredLogin>(&bytes) {
                    logins.push(login);
                }
            }
        }
        logins.sort_by(|a, b| a.server.cmp(&b.server));
        Ok(logins)
    }

    /// Stores `login`, replacing what was there atomically.
    pub fn save(&self, login: &StoredLogin) -> Result<(), LoginError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| store_error(&self.dir, &e.to_string()))?;
        // An existing directory keeps its mode through `create`: make sure of it.
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| store_error(&self.dir, &e.to_string()))?;
        let path = self.path_for(&login.server, login.profile.as_deref());
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| store_error(&path, &e.to_string()))?;
        let tmp = path.with_extension(format!("tmp-{}", hex::encode(suffix)));
        let json =
            serde_json::to_vec_pretty(login).map_err(|e| store_error(&path, &e.to_string()))?;
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(store_error(&path, &e.to_string()));
        }
        Ok(())
    }

    /// Holds the login for `server` against other processes until the returned file is
    /// dropped (an advisory lock on `<file>.lock`). kubectl runs its exec plugin once per
    /// command, often several at once: whoever holds the lock refreshes, the others then find
    /// the fresh tokens. With a provider that rotates refresh tokens, two refreshes with the same
    /// token would end the login.
    pub fn lock(&self, server: &str, profile: Option<&str>) -> Result<std::fs::File, LoginError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| store_error(&self.dir, &e.to_string()))?;
        let path = self.path_for(server, profile).with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| store_error(&path, &e.to_string()))?;
        file.lock()
            .map_err(|e| store_error(&path, &e.to_string()))?;
        Ok(file)
    }

    /// Removes the login for `server` (and `profile`); `false` when there was none.
    pub fn remove(&self, server: &str, profile: Option<&str>) -> Result<bool, LoginError> {
        let path = self.path_for(server, profile);
        // Nothing of the login stays behind; its lock guards nothing once the tokens are gone.
        let _ = std::fs::remove_file(path.with_extension("lock"));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(store_error(&path, &e.to_string())),
        }
    }
}

/// The server URL without trailing slashes, scheme and host lowercased.
pub fn normalize_server(server: &str) -> String {
    let trimmed = server.trim().trim_end_matches('/');
    match trimmed.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let mut out = format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase()
            );
            if !path.is_empty() {
                out.push('/');
                out.push_str(path);
            }
            out
        }
        None => trimmed.to_owned(),
    }
}

fn store_error(path: &Path, reason: &str) -> LoginError {
    LoginError::Store {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(server: &str) -> StoredLogin {
        StoredLogin {
            server: server.to_owned(),
            document: LoginDocument {
                issuer: "https://idp.example".into(),
                client_id: "custody".into(),
                scopes: vec!["openid".into()],
                issuer_ca_pem: None,
                ca_pem: String::new(),
                clusters: Vec::new(),
            },
            id_token: "id-token-value".into(),
            expires_at: 10,
            refresh_token: Some("refresh-token-value".into()),
            profile: None,
        }
    }

    #[test]
    fn a_login_is_held_by_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("logins"));
        let held = store.lock("https://gw.example", None).unwrap();
        let again = std::fs::OpenOptions::new()
            .write(true)
            .open(
                store
                    .path_for("https://gw.example", None)
                    .with_extension("lock"),
            )
            .unwrap();
        assert!(again.try_lock().is_err(), "a second holder must wait");
        drop(held);
        assert!(again.try_lock().is_ok());
    }

    #[test]
    fn save_load_remove_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::at(tmp.path().join("custody/logins"));
        assert!(store.load("https://gw.example", None).unwrap().is_none());
        store.save(&login("https://gw.example/")).unwrap();
        let loaded = store.load("https://GW.example", None).unwrap().unwrap();
        assert_eq!(loaded, login("https://gw.example/"));
        let file = store.path_for("https://gw.example", None);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(tmp.path().join("custody/logins"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(store.all().unwrap().len(), 1);
        assert!(!format!("{loaded:?}").contains("token-value"));
        assert!(store.remove("https://gw.example", None).unwrap());
        assert!(!store.remove("https://gw.example", None).unwrap());
    }

    #[test]
    fn profiles_keep_logins_to_one_gateway_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::at(tmp.path().join("logins"));
        let alice = StoredLogin {
            profile: Some("alice".into()),
            id_token: "alice-token".into(),
            ..login("https://gw.example")
        };
        let bob = StoredLogin {
            profile: Some("bob".into()),
            id_token: "bob-token".into(),
            ..login("https://gw.example")
        };
        store.save(&alice).unwrap();
        store.save(&bob).unwrap();
        assert!(store.load("https://gw.example", None).unwrap().is_none());
        let got = |p| store.load("https://gw.example", Some(p)).unwrap().unwrap();
        assert_eq!(got("alice").id_token, "alice-token");
        assert_eq!(got("bob").id_token, "bob-token");
        assert_eq!(store.all().unwrap().len(), 2);
        assert!(store.remove("https://gw.example", Some("alice")).unwrap());
        assert_eq!(got("bob").id_token, "bob-token");
    }
}
