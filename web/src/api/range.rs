//! The raw download: the recording file streamed from disk in chunks, never read whole, with
//! single `Range` requests (`bytes=a-b`, `bytes=a-`, `bytes=-n`) answered 206 and
//! unsatisfiable ones 416. A header with several ranges, or one that does not parse, is
//! ignored and the whole file is sent (RFC 9110 allows both).

use std::io::SeekFrom;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Body, BoxError, insert_disposition};
use crate::error::{Error, Result};

/// Bytes read from the file per body chunk.
const CHUNK: usize = 64 * 1024;

/// The inclusive byte range `Range` asks for in a file of `len` bytes: `Ok(None)` for the whole
/// file, `Err` when it is unsatisfiable.
///
/// Written here rather than with a range crate (`http-range-header` was the candidate): those
/// parse and validate multi-range sets and turn a header they cannot read into an error, while
/// this endpoint's policy is to answer one range and to *ignore* any other header, as RFC 9110
/// §14.2 allows, so that a client's odd `Range` costs it a whole download, never a refusal.
pub(super) fn parse_range(value: Option<&HeaderValue>, len: u64) -> Result<Option<(u64, u64)>> {
    let Some(spec) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = Error::RangeNotSatisfiable { len };
    if first.is_empty() {
        // The last `n` bytes.
        let Ok(n) = last.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || len == 0 {
            return Err(unsatisfiable);
        }
        return Ok(Some((len.saturating_sub(n), len - 1)));
    }
    let Ok(start) = first.parse::<u64>() else {
        return Ok(None);
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return Ok(None),
        }
    };
    if start >= len {
        return Err(unsatisfiable);
    }
    Ok(Some((start, end.min(len - 1))))
}

/// Streams the file (or the range asked for) as an attachment named `filename`.
pub(super) async fn serve_file(
    path: &Path,
    filename: &str,
    headers: &HeaderMap,
) -> Result<Response<Body>> {
    let unreadable = |e: std::io::Error| {
        Error::Internal(format!(
            "the recording {} cannot be read: {e}",
            path.display()
        ))
    };
    let mut file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    // The length when the download starts: a live recording grows, and this answer does not.
    let len = file.metadata().await.map_err(unreadable)?.len();
    let range = parse_range(headers.get(header::RANGE), len)?;
    let (start, count) = match range {
        Some((start, end)) => (start, end - start + 1),
        None => (0, len),
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(unreadable)?;
    }
    let mut response = Response::new(file_body(file, count));
    if let Some((start, end)) = range {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    insert_disposition(h, filename);
    Ok(response)
}

/// A body of the next `count` bytes of `file`, read chunk by chunk as the client takes them.
fn file_body(file: tokio::fs::File, count: u64) -> Body {
    let chunks = futures_util::stream::unfold((file, count), |(mut file, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let want = usize::try_from(remaining).unwrap_or(CHUNK).min(CHUNK);
        let mut buf = BytesMut::zeroed(want);
        match file.read(&mut buf).await {
            Ok(0) => {
                let err: BoxError = "the recording file ended early".into();
                Some((Err(err), (file, 0)))
            }
            Ok(n) => {
                buf.truncate(n);
                let frame = Frame::data(Bytes::from(buf));
                Some((Ok(frame), (file, remaining - n as u64)))
            }
            Err(e) => Some((Err(BoxError::from(e)), (file, 0))),
        }
    });
    StreamBody::new(chunks).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, len: u64) -> Result<Option<(u64, u64)>> {
        parse_range(Some(&HeaderValue::from_str(value).unwrap()), len)
    }

    #[test]
    fn single_ranges_are_read_and_clamped() {
        assert_eq!(range("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(range("bytes=90-", 100).unwrap(), Some((90, 99)));
        assert_eq!(range("bytes=90-500", 100).unwrap(), Some((90, 99)));
        assert_eq!(range("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(range("bytes=-500", 100).unwrap(), Some((0, 99)));
    }

    #[test]
    fn odd_ranges_are_ignored_and_impossible_ones_refused() {
        assert_eq!(range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(range("items=0-1", 100).unwrap(), None);
        assert_eq!(range("bytes=5-1", 100).unwrap(), None);
        assert_eq!(range("bytes=x-1", 100).unwrap(), None);
        assert!(matches!(
            range("bytes=100-", 100),
            Err(Error::RangeNotSatisfiable { len: 100 })
        ));
        assert!(range("bytes=-0", 100).is_err());
        assert!(range("bytes=0-", 0).is_err());
        assert_eq!(parse_range(None, 100).unwrap(), None);
    }
}
