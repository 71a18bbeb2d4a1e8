//! The console's static assets, compiled into the binary and served under content-hashed,
//! immutable URLs below [`PREFIX`].
//!
//! Every asset is named by its file name (`asciinema-player.min.js`) and served as
//! `<stem>.<first 16 hex digits of its SHA-256>.<ext>`. A new build with different bytes
//! gets a new URL, so browsers may keep any response for a year without asking again, and an
//! old page's stale URL finds nothing (404) rather than a file it was not written for.
//! Templates ask [`url_of`] for the current URL; the gateway routes requests below
//! [`PREFIX`] through [`lookup`] and answers with [`response`].
//!
//! The files live in `web/assets/`: `vendor/` holds third-party code exactly as published
//! (checked against `web/assets/MANIFEST.sha256` by this module's tests), `console/` the
//! console's own files.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};

use crate::api::Body;

/// The path below which assets are served; an asset's URL is this followed by its hashed
/// file name.
pub const PREFIX: &str = "/custody/ui/assets/";

/// How many hex digits of the SHA-256 go into a URL: 64 bits is far beyond any chance of two
/// builds' files colliding, and keeps URLs short.
const URL_HASH_HEX: usize = 16;

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The unhashed file name templates ask for, e.g. `asciinema-player.min.js`.
    pub name: &'static str,
    /// The `Content-Type` it is served with.
    pub content_type: &'static str,
    /// The file's bytes.
    pub bytes: &'static [u8],
}

/// Declares the embedded files once: their paths under `web/assets/` (kept for the tests,
/// which check the embedded bytes against the files and the manifest), names and types.
macro_rules! embed {
    ($($path:literal => $name:literal, $content_type:expr;)*) => {
        static ASSETS: &[Asset] = &[$(
            Asset {
                name: $name,
                content_type: $content_type,
                bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $path)),
            },
        )*];
        #[cfg(test)]
        static SOURCES: &[&str] = &[$($path,)*];
    };
}

embed! {
    "vendor/asciinema-player/asciinema-player.min.js" => "asciinema-player.min.js", JS;
    "vendor/asciinema-player/asciinema-player.css" => "asciinema-player.css", CSS;
    "vendor/asciinema-player/LICENSE" => "asciinema-player-LICENSE.txt", TEXT;
    "console/console.css" => "console.css", CSS;
    "console/console.js" => "console.js", JS;
}

/// What is derived from an asset's bytes, computed once for all of them on first use.
struct Derived {
    sha256_hex: String,
    file_name: String,
    url: String,
}

static DERIVED: LazyLock<Vec<Derived>> = LazyLock::new(|| ASSETS.iter().map(derive).collect());

fn derive(asset: &Asset) -> Derived {
    let sha256_hex = hex::encode(Sha256::digest(asset.bytes));
    let short = &sha256_hex[..URL_HASH_HEX];
    let file_name = match asset.name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{short}.{ext}"),
        None => format!("{}.{short}", asset.name),
    };
    let url = format!("{PREFIX}{file_name}");
    Derived {
        sha256_hex,
        file_name,
        url,
    }
}

impl Asset {
    /// The cached derivations when this is one of the embedded assets (found by address, so
    /// an equal copy made elsewhere is derived afresh instead).
    fn derived(&self) -> Option<&'static Derived> {
        let index = ASSETS.iter().position(|a| std::ptr::eq(a, self))?;
        DERIVED.get(index)
    }

    /// The full SHA-256 of the bytes, lowercase hex.
    pub fn sha256_hex(&self) -> String {
        match self.derived() {
            Some(d) => d.sha256_hex.clone(),
            None => derive(self).sha256_hex,
        }
    }

    /// The URL it is served under: `/custody/ui/assets/<stem>.<16 hex of sha256>.<ext>`.
    pub fn url(&self) -> String {
        match self.derived() {
            Some(d) => d.url.clone(),
            None => derive(self).url,
        }
    }
}

/// Every embedded asset.
pub fn all() -> &'static [Asset] {
    ASSETS
}

/// The asset with this unhashed name (`asciinema-player.min.js`).
pub fn by_name(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The current URL of the asset with this unhashed name, for templates.
pub fn url_of(name: &str) -> Option<&'static str> {
    let index = ASSETS.iter().position(|a| a.name == name)?;
    DERIVED.get(index).map(|d| d.url.as_str())
}

/// The asset whose hashed file name is exactly `file_name` (the request path after
/// [`PREFIX`]). The bare name, an old hash or anything else is `None`, which the caller
/// answers with 404: a hashed URL must never serve other bytes than the ones it names.
pub fn lookup(file_name: &str) -> Option<&'static Asset> {
    DERIVED
        .iter()
        .position(|d| d.file_name == file_name)
        .and_then(|index| ASSETS.get(index))
}

/// The answer to a GET for `asset`: the bytes with year-long immutable caching and a strong
/// `ETag` (the full SHA-256), or `304 Not Modified` when `If-None-Match` names that tag.
pub fn response(asset: &Asset, request_headers: &HeaderMap) -> Response<Body> {
    let etag = format!("\"{}\"", asset.sha256_hex());
    let not_modified = request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|value| if_none_match_hits(value, &etag));

    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from_static(asset.bytes))
    };
    let content_length = body.len();
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;

    let h = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    // A hex digest in quotes is always a valid header value; should that ever fail, the
    // response simply goes without an ETag.
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if status == StatusCode::OK {
        if let Ok(value) = HeaderValue::from_str(asset.content_type) {
            h.insert(header::CONTENT_TYPE, value);
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(content_length));
    }
    response
}

/// Whether one `If-None-Match` header value names `etag`: `*`, or a list of entity tags
/// compared weakly as RFC 9110 §13.1.2 requires (`W/"x"` matches `"x"`).
fn if_none_match_hits(value: &HeaderValue, etag: &str) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use super::*;

    fn assets_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
    }

    fn sha256(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// `MANIFEST.sha256` as path → hex digest, parsed strictly (`sha256sum` text format).
    fn manifest() -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(assets_dir().join("MANIFEST.sha256")).unwrap();
        let mut entries = BTreeMap::new();
        for line in text.lines() {
            let (digest, path) = line.split_once("  ").unwrap();
            assert_eq!(digest.len(), 64, "{line}");
            assert!(
                digest
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(
                entries.insert(path.to_owned(), digest.to_owned()).is_none(),
                "{path}"
            );
        }
        entries
    }

    fn files_under(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.insert(rel.to_str().unwrap().replace('\\', "/"));
            }
        }
    }

    fn file_name_of(asset: &Asset) -> String {
        asset.url().strip_prefix(PREFIX).unwrap().to_owned()
    }

    #[test]
    fn manifest_matches_files_on_disk_and_embedded_bytes() {
        let manifest = manifest();
        assert!(!manifest.is_empty());
        for (path, digest) in &manifest {
            let on_disk = std::fs::read(assets_dir().join(path)).unwrap();
            assert_eq!(&sha256(&on_disk), digest, "{path} on disk");
        }
        for (asset, source) in ASSETS.iter().zip(SOURCES) {
            let on_disk = std::fs::read(assets_dir().join(source)).unwrap();
            // Digests, not bytes: a mismatch should read as one line.
            assert_eq!(asset.sha256_hex(), sha256(&on_disk), "{source} embedded");
            if source.starts_with("vendor/") {
                assert_eq!(manifest.get(*source), Some(&asset.sha256_hex()), "{source}");
            } else {
                // The console's own files change with the console; only vendored code is
                // pinned by the manifest.
                assert!(!manifest.contains_key(*source), "{source}");
            }
        }
    }

    #[test]
    fn every_vendored_file_is_in_the_manifest() {
        let mut vendored = BTreeSet::new();
        files_under(&assets_dir().join("vendor"), &assets_dir(), &mut vendored);
        let listed: BTreeSet<String> = manifest().into_keys().collect();
        assert_eq!(vendored, listed);
        assert!(listed.contains("vendor/asciinema-player/asciinema-player.min.js"));
        assert!(listed.contains("vendor/asciinema-player/asciinema-player.css"));
        assert!(listed.contains("vendor/asciinema-player/LICENSE"));
        assert!(listed.contains("vendor/asciinema-player/VERSION"));
    }

    #[test]
    fn urls_carry_the_content_hash() {
        let player = by_name("asciinema-player.min.js").unwrap();
        let digest = sha256(player.bytes);
        assert_eq!(player.sha256_hex(), digest);
        assert_eq!(
            player.url(),
            format!(
                "/custody/ui/assets/asciinema-player.min.{}.js",
                &digest[..16]
            )
        );
        assert_eq!(
            url_of("asciinema-player.min.js"),
            Some(player.url().as_str())
        );
        let licence = by_name("asciinema-player-LICENSE.txt").unwrap();
        assert_eq!(
            licence.url(),
            format!(
                "/custody/ui/assets/asciinema-player-LICENSE.{}.txt",
                &sha256(licence.bytes)[..16]
            )
        );
        assert_eq!(url_of("nope.js"), None);
        assert!(by_name("nope.js").is_none());

        let names: BTreeSet<_> = all().iter().map(|a| a.name).collect();
        let urls: BTreeSet<_> = all().iter().map(Asset::url).collect();
        assert_eq!(names.len(), all().len());
        assert_eq!(urls.len(), all().len());
    }

    #[test]
    fn an_asset_not_embedded_is_derived_afresh() {
        let other = Asset {
            name: "x.js",
            content_type: JS,
            bytes: b"abc",
        };
        let digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(other.sha256_hex(), digest);
        assert_eq!(other.url(), "/custody/ui/assets/x.ba7816bf8f01cfea.js");
    }

    #[test]
    fn lookup_matches_only_the_exact_hashed_name() {
        for asset in all() {
            let hashed = file_name_of(asset);
            assert!(std::ptr::eq(lookup(&hashed).unwrap(), asset), "{hashed}");
            assert!(lookup(asset.name).is_none(), "{}", asset.name);
        }
        let hashed = file_name_of(by_name("asciinema-player.css").unwrap());
        let (stem, rest) = hashed.split_once('.').unwrap();
        let wrong = format!("{stem}.0000000000000000.css");
        assert_ne!(wrong, hashed);
        assert!(lookup(&wrong).is_none());
        assert!(lookup(&format!("/{hashed}")).is_none());
        assert!(lookup(&format!("{hashed}?v=1")).is_none());
        assert!(lookup(&format!("{stem}.{}", rest.to_uppercase())).is_none());
        assert!(lookup("").is_none());
    }

    #[tokio::test]
    async fn response_serves_bytes_with_immutable_caching() {
        let asset = by_name("asciinema-player.min.js").unwrap();
        let response = response(asset, &HeaderMap::new());
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(
            h[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(
            h[header::ETAG].to_str().unwrap(),
            format!("\"{}\"", sha256(asset.bytes))
        );
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(
            h[header::CONTENT_LENGTH],
            asset.bytes.len().to_string().as_str()
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), asset.bytes);

        let css = response_for("asciinema-player.css", &HeaderMap::new());
        assert_eq!(
            css.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        let licence = response_for("asciinema-player-LICENSE.txt", &HeaderMap::new());
        assert_eq!(
            licence.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }

    fn response_for(name: &str, headers: &HeaderMap) -> Response<Body> {
        response(by_name(name).unwrap(), headers)
    }

    #[tokio::test]
    async fn if_none_match_with_the_etag_is_304() {
        let asset = by_name("asciinema-player.css").unwrap();
        let etag = format!("\"{}\"", asset.sha256_hex());
        for value in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"deadbeef\", {etag}"),
            "*".to_owned(),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, value.parse().unwrap());
            let response = response(asset, &headers);
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{value}");
            assert_eq!(response.headers()[header::ETAG].to_str().unwrap(), etag);
            assert_eq!(
                response.headers()[header::CACHE_CONTROL],
                "public, max-age=31536000, immutable"
            );
            assert!(response.headers().get(header::CONTENT_TYPE).is_none());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(body.is_empty());
        }

        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, "\"deadbeef\"".parse().unwrap());
        headers.append(header::IF_NONE_MATCH, etag.parse().unwrap());
        assert_eq!(response(asset, &headers).status(), StatusCode::NOT_MODIFIED);

        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            format!("\"{}\"", &asset.sha256_hex()[..16])
                .parse()
                .unwrap(),
        );
        assert_eq!(response(asset, &headers).status(), StatusCode::OK);
    }

    #[test]
    fn the_player_licence_is_apache_2() {
        let licence =
            std::str::from_utf8(by_name("asciinema-player-LICENSE.txt").unwrap().bytes).unwrap();
        assert!(licence.trim_start().starts_with("Apache License"));
        assert!(licence.contains("Version 2.0, January 2004"));
        assert!(licence.contains("http://www.apache.org/licenses/"));
        assert!(licence.contains("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"));
        let version =
            std::fs::read_to_string(assets_dir().join("vendor/asciinema-player/VERSION")).unwrap();
        assert!(version.contains("license: Apache-2.0"));
    }

    #[test]
    fn the_player_bundle_is_the_browser_build() {
        let js = std::str::from_utf8(by_name("asciinema-player.min.js").unwrap().bytes).unwrap();
        // The IIFE bundle defines the global the console's script calls.
        assert!(js.contains("var AsciinemaPlayer="));
        // It reads asciicast v3, the format custody writes.
        assert!(js.contains("if(3===A.version)return"));
        assert!(js.contains("0===A.term.cols?80:A.term.cols"));
    }
}
