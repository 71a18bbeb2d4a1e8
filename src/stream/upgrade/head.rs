//! Reading the API server's answer to an upgrade request: the response head (size-limited,
//! parsed with `httparse`, obs-fold refused), and for a refusal its body, bounded in size and
//! time.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// The largest response head accepted.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// The most header lines accepted in a response head.
const MAX_HEADERS: usize = 128;

/// A parsed response head and the bytes read past it.
pub(super) struct ResponseHead {
    /// The status code.
    pub status: StatusCode,
    /// The header lines, in order.
    pub headers: HeaderMap,
    /// Bytes that followed the head in the same reads.
    pub rest: BytesMut,
}

/// Reads until a complete response head, refusing heads over [`MAX_HEAD`].
pub(super) async fn read_head<R: AsyncRead + Unpin>(io: &mut R) -> Result<ResponseHead, String> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(head) = parse(&mut buf)? {
            return Ok(head);
        }
        if buf.len() >= MAX_HEAD {
            return Err(format!("the response head is larger than {MAX_HEAD} bytes"));
        }
        // Never read much past the limit.
        let room = MAX_HEAD - buf.len();
        let n = (&mut *io)
            .take(u64::try_from(room).unwrap_or(u64::MAX))
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                "the connection closed before a response".to_owned()
            } else {
                "the connection closed inside the response head".to_owned()
            });
        }
    }
}

/// Parses `buf` if it holds a complete head; the head's bytes are then removed from it.
fn parse(buf: &mut BytesMut) -> Result<Option<ResponseHead>, String> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut lines);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    let code = response.code.ok_or("the response has no status")?;
    let status = StatusCode::from_u16(code).map_err(|_| format!("invalid status {code}"))?;
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for line in response.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes())
            .map_err(|_| format!("invalid header name {:?}", line.name))?;
        let value = HeaderValue::from_bytes(line.value)
            .map_err(|_| format!("invalid value of header {:?}", line.name))?;
        headers.append(name, value);
    }
    let rest = buf.split_off(len);
    Ok(Some(ResponseHead {
        status,
        headers,
        rest,
    }))
}

/// How a response body is delimited (RFC 9112 §6.3, for a response to a non-HEAD request).
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

fn framing(head: &ResponseHead) -> Framing {
    if head.status.is_informational()
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
    {
        return Framing::None;
    }
    if let Some(te) = head.headers.get(http::header::TRANSFER_ENCODING) {
        let chunked = te
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        };
    }
    let mut lengths = head.headers.get_all(http::header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(Framing::UntilClose, Framing::Length),
        _ => Framing::UntilClose,
    }
}

/// Reads the body of a refusal: at most `limit` bytes of it, until `deadline`. Returns the body
/// (de-chunked) and whether it was cut short (too long, too slow, or the connection failed).
pub(super) async fn read_body<R: AsyncRead + Unpin>(
    io: &mut R,
    head: ResponseHead,
    limit: usize,
    deadline: Instant,
) -> (Bytes, bool) {
    let framing = framing(&head);
    let mut raw = head.rest;
    // Chunk framing costs a few bytes per chunk; allow for it on the raw bytes.
    let raw_limit = limit.saturating_mul(2).saturating_add(64);
    loop {
        let (body, complete) = match framing {
            Framing::None => return (Bytes::new(), false),
            Framing::Length(n) => (&raw[..raw.len().min(n)], raw.len() >= n),
            Framing::Chunked => {
                let (body, complete) = dechunk(&raw);
                if complete || body.len() >= limit {
                    let truncated = body.len() > limit;
                    return (cut(body, limit), truncated);
                }
                (&raw[..0], false)
            }
            Framing::UntilClose => (&raw[..], false),
        };
        if complete || body.len() >= limit {
            let truncated = body.len() > limit;
            return (cut(body.to_vec(), limit), truncated);
        }
        if raw.len() >= raw_limit {
            return (cut(decoded(&framing, &raw), limit), true);
        }
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut raw)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) if matches!(framing, Framing::UntilClose) => {
                return (cut(raw.to_vec(), limit), false);
            }
            _ => return (cut(decoded(&framing, &raw), limit), true),
        }
    }
}

fn decoded(framing: &Framing, raw: &[u8]) -> Vec<u8> {
    match framing {
        Framing::Chunked => dechunk(raw).0,
        Framing::Length(n) => raw[..raw.len().min(*n)].to_vec(),
        Framing::None => Vec::new(),
        Framing::UntilClose => raw.to_vec(),
    }
}

fn cut(mut body: Vec<u8>, limit: usize) -> Bytes {
    body.truncate(limit);
    Bytes::from(body)
}

/// Decodes as much of a chunked body as `raw` holds; `true` once the last chunk was seen.
/// Trailers are ignored.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let line = &raw[..eol];
        let size = line.split(|b| *b == b';').next().unwrap_or_default();
        let Some(size) = std::str::from_utf8(size)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        else {
            return (out, false);
        };
        if size == 0 {
            return (out, true);
        }
        let data = &raw[eol + 2..];
        let take = size.min(data.len());
        out.extend_from_slice(&data[..take]);
        if data.len() < size.saturating_add(2) {
            return (out, false);
        }
        raw = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_partial_and_complete_bodies() {
        assert_eq!(dechunk(b"5\r\nhello\r\n"), (b"hello".to_vec(), false));
        assert_eq!(
            dechunk(b"5;x=y\r\nhello\r\n1\r\n!\r\n0\r\n\r\n"),
            (b"hello!".to_vec(), true)
        );
        assert_eq!(dechunk(b"5\r\nhel"), (b"hel".to_vec(), false));
        assert_eq!(dechunk(b"zz\r\n"), (Vec::new(), false));
    }

    #[test]
    fn parses_a_head_and_keeps_the_bytes_after_it() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nABC"[..]);
        let head = parse(&mut buf).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(head.headers["upgrade"], "x");
        assert_eq!(&head.rest[..], b"ABC");
    }

    #[test]
    fn refuses_obs_fold() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 101 OK\r\nUpgrade: x\r\n  y\r\n\r\n"[..]);
        assert!(parse(&mut buf).is_err());
    }

    #[tokio::test]
    async fn refuses_oversized_heads() {
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() < MAX_HEAD + 10 {
            big.extend_from_slice(b"X-Filler: ");
            big.extend_from_slice(&[b'a'; 1200]);
            big.extend_from_slice(b"\r\n");
        }
        let err = read_head(&mut &big[..]).await.err().unwrap();
        assert!(err.contains("larger"), "{err}");
    }
}
