//! The gateway's own bearer credential for an API server: a fixed token from the kubeconfig,
//! or a token file that is read again as it changes.
//!
//! In a pod, the `ServiceAccount` token at
//! `/var/run/secrets/kubernetes.io/serviceaccount/token` is a projected token the kubelet
//! rotates (hourly by default; it expires soon after). A gateway that read it once would start
//! failing every request an hour or so after it started. Like client-go
//! (`k8s.io/client-go/transport/token_source.go`, `cachingTokenSource` over a file token
//! source, re-read at most once a minute), the file is read again when the cached copy is older
//! than [`REREAD_AFTER`]; a failed read keeps the last good token and is logged, so a file
//! briefly absent during the kubelet's atomic swap never fails a request.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderValue;

/// How long a token read from a file is used before the file is read again.
pub const REREAD_AFTER: Duration = Duration::from_secs(60);

/// Where the gateway's bearer token comes from.
#[derive(Debug)]
pub enum Credential {
    /// A token written in the kubeconfig.
    Fixed(HeaderValue),
    /// A token file, read again when the cached copy is old.
    File(TokenFile),
}

impl Credential {
    /// The `Authorization` header value to send now.
    pub fn header(&self) -> HeaderValue {
        match self {
            Credential::Fixed(value) => value.clone(),
            Credential::File(file) => file.current(Instant::now()),
        }
    }
}

/// A token file and its last good reading.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    max_age: Duration,
    cached: Mutex<(HeaderValue, Instant)>,
}

impl TokenFile {
    /// Reads `path` now (failing if it cannot be read: a gateway must not start without its
    /// credential) and again whenever the reading is older than `max_age`.
    pub fn open(path: PathBuf, max_age: Duration) -> Result<Self, String> {
        let value = read(&path)?;
        Ok(Self {
            path,
            max_age,
            cached: Mutex::new((value, Instant::now())),
        })
    }

    fn current(&self, now: Instant) -> HeaderValue {
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.duration_since(cached.1) >= self.max_age {
            match read(&self.path) {
                Ok(value) => *cached = (value, now),
                Err(e) => {
                    // Keep the last good token, try again at the next interval: the kubelet
                    // replaces the file atomically, so a failure is usually momentary.
                    tracing::warn!(error = %e, "cannot re-read the gateway's token file; using the last token read");
                    cached.1 = now;
                }
            }
        }
        cached.0.clone()
    }
}

/// Reads a token file into a sensitive `Authorization` value.
fn read(path: &std::path::Path) -> Result<HeaderValue, String> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
    bearer(token.trim())
}

/// `Bearer <token>`, marked sensitive so it is never logged by the HTTP stack.
pub fn bearer(token: &str) -> Result<HeaderValue, String> {
    if token.is_empty() {
        return Err("the token is empty".to_owned());
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token contains characters not allowed in a header".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_token_file_is_read_again_after_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let file = TokenFile::open(path.clone(), Duration::from_secs(60)).unwrap();
        let t0 = Instant::now();
        assert_eq!(file.current(t0), "Bearer first");
        // The kubelet rotates the token (write beside, rename over).
        let beside = dir.path().join("token.new");
        std::fs::write(&beside, "second").unwrap();
        std::fs::rename(&beside, &path).unwrap();
        assert_eq!(file.current(t0 + Duration::from_secs(30)), "Bearer first");
        assert_eq!(file.current(t0 + Duration::from_secs(61)), "Bearer second");
        // Briefly missing: the last good token is kept.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.current(t0 + Duration::from_secs(200)), "Bearer second");
        std::fs::write(&path, "third").unwrap();
        assert_eq!(file.current(t0 + Duration::from_secs(300)), "Bearer third");
        assert!(file.current(t0 + Duration::from_secs(300)).is_sensitive());
    }

    #[test]
    fn a_missing_or_empty_token_file_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        assert!(TokenFile::open(path.clone(), REREAD_AFTER).is_err());
        std::fs::write(&path, "\n").unwrap();
        let err = TokenFile::open(path, REREAD_AFTER).unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }
}
