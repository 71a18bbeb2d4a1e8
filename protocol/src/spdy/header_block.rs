//! Decompressed SPDY/3 header blocks: `count(32) { name-len(32) name value-len(32) value }*`.
//!
//! Names are lowercase on the wire and unique within a block; several values of one name are
//! joined with NUL (k8s-protocols §2.3, spdystream `parseHeaderValueBlock`).
//!
//! A block names at most [`MAX_HEADERS`] headers: Kubernetes streams carry three or four, and
//! the bound (checked before any pair is read) keeps one frame from costing more than a few
//! hundred string comparisons. Duplicates are found with a set, never by rescanning the pairs.

use std::collections::HashSet;

use bytes::Buf;

use crate::{Error, Result};

/// The most headers one block may name. exec, attach and port-forward streams use at most four
/// (`streamtype`, `port`, `requestid`, ...) and Kubernetes servers send empty replies; spdystream
/// itself has no bound, so this is custody's, generous for any client and small enough that a
/// hostile block is refused on its count alone.
pub const MAX_HEADERS: usize = 100;

/// The name/value pairs of one header block, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    pairs: Vec<(String, Vec<String>)>,
}

impl HeaderBlock {
    /// An empty block, what Kubernetes servers put in every `SYN_REPLY`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a decompressed block, refusing more than [`MAX_HEADERS`] names, uppercase, empty
    /// and duplicate names, and any byte after the last pair.
    pub fn parse(raw: &[u8]) -> Result<Self> {
        let mut rest = raw;
        let count = read_u32(&mut rest)?;
        if u64::from(count) > MAX_HEADERS as u64 {
            return Err(Error::TooManyHeaders {
                count,
                max: MAX_HEADERS,
            });
        }
        // Every pair takes at least 8 bytes, which bounds the allocation by the input size.
        let mut pairs: Vec<(String, Vec<String>)> =
            Vec::with_capacity((count as usize).min(rest.len() / 8));
        let mut seen: HashSet<String> = HashSet::with_capacity(pairs.capacity());
        for _ in 0..count {
            let name = read_string(&mut rest)?;
            if name.is_empty() {
                return Err(Error::HeaderNameEmpty);
            }
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(Error::HeaderNameNotLowercase(name));
            }
            if !seen.insert(name.clone()) {
                return Err(Error::DuplicateHeader(name));
            }
            let value = read_string(&mut rest)?;
            let values = value.split('\0').map(str::to_owned).collect();
            pairs.push((name, values));
        }
        if !rest.is_empty() {
            return Err(Error::HeaderBlockTrailingBytes(rest.len()));
        }
        Ok(Self { pairs })
    }

    /// Encodes the block (uncompressed).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(&wire_len(self.pairs.len())?.to_be_bytes());
        for (name, values) in &self.pairs {
            put_string(&mut out, name.as_bytes())?;
            put_string(&mut out, values.join("\0").as_bytes())?;
        }
        Ok(out)
    }

    /// Adds a value under `name` (lowercased), after any values it already has.
    pub fn insert(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let name = name.to_ascii_lowercase();
        let value = value.into();
        match self
            .pairs
            .iter_mut()
            .find(|(existing, _)| *existing == name)
        {
            Some((_, values)) => values.push(value),
            None => self.pairs.push((name, vec![value])),
        }
        self
    }

    /// A block built from `(name, value)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut block = Self::new();
        for (name, value) in pairs {
            block.insert(name, value);
        }
        block
    }

    /// The first value of `name`, looked up case-insensitively like Go's `Header.Get`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).first().map(String::as_str)
    }

    /// Every value of `name`, looked up case-insensitively.
    pub fn get_all(&self, name: &str) -> &[String] {
        self.pairs
            .iter()
            .find(|(existing, _)| existing.eq_ignore_ascii_case(name))
            .map_or(&[], |(_, values)| values.as_slice())
    }

    /// The pairs in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.pairs
            .iter()
            .map(|(name, values)| (name.as_str(), values.as_slice()))
    }

    /// The number of distinct names.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the block has no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

fn read_u32(rest: &mut &[u8]) -> Result<u32> {
    rest.try_get_u32().map_err(|_| Error::HeaderBlockTruncated)
}

fn read_string(rest: &mut &[u8]) -> Result<String> {
    let len = read_u32(rest)? as usize;
    let Some((bytes, tail)) = rest.split_at_checked(len) else {
        return Err(Error::HeaderBlockTruncated);
    };
    *rest = tail;
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::HeaderNotUtf8)
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) -> Result<()> {
    out.extend_from_slice(&wire_len(bytes.len())?.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn wire_len(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::FieldOverflow {
        field: "header block length",
        value: len as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decompressed block of the §2.3 example `SYN_STREAM {streamtype: error}`.
    const STREAMTYPE_ERROR: &[u8] = b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x05error";

    #[test]
    fn parses_the_error_stream_block() {
        let block = HeaderBlock::parse(STREAMTYPE_ERROR).unwrap();
        assert_eq!(block.len(), 1);
        assert_eq!(block.get("streamType"), Some("error"));
        assert_eq!(block.encode().unwrap(), STREAMTYPE_ERROR);
    }

    #[test]
    fn empty_block_is_four_zero_bytes() {
        assert_eq!(HeaderBlock::new().encode().unwrap(), [0, 0, 0, 0]);
        assert!(HeaderBlock::parse(&[0, 0, 0, 0]).unwrap().is_empty());
    }

    #[test]
    fn values_are_nul_joined() {
        let mut block = HeaderBlock::new();
        block.insert("X-Many", "a").insert("x-many", "b");
        let raw = block.encode().unwrap();
        assert_eq!(raw, b"\0\0\0\x01\0\0\0\x06x-many\0\0\0\x03a\0b");
        assert_eq!(
            HeaderBlock::parse(&raw).unwrap().get_all("x-many"),
            ["a", "b"]
        );
    }

    #[test]
    fn refuses_uppercase_duplicate_and_empty_names() {
        let upper = b"\0\0\0\x01\0\0\0\x04Port\0\0\0\x0280";
        assert!(matches!(
            HeaderBlock::parse(upper),
            Err(Error::HeaderNameNotLowercase(name)) if name == "Port"
        ));
        let dup = b"\0\0\0\x02\0\0\0\x04port\0\0\0\x0280\0\0\0\x04port\0\0\0\x0281";
        assert!(matches!(
            HeaderBlock::parse(dup),
            Err(Error::DuplicateHeader(name)) if name == "port"
        ));
        let empty = b"\0\0\0\x01\0\0\0\0\0\0\0\x0280";
        assert!(matches!(
            HeaderBlock::parse(empty),
            Err(Error::HeaderNameEmpty)
        ));
    }

    #[test]
    fn refuses_truncation_and_trailing_bytes() {
        for cut in 0..STREAMTYPE_ERROR.len() {
            assert!(matches!(
                HeaderBlock::parse(&STREAMTYPE_ERROR[..cut]),
                Err(Error::HeaderBlockTruncated)
            ));
        }
        let mut long = STREAMTYPE_ERROR.to_vec();
        long.push(0);
        assert!(matches!(
            HeaderBlock::parse(&long),
            Err(Error::HeaderBlockTrailingBytes(1))
        ));
    }

    /// A block of `count` distinct headers `h0`, `h1`, ... with empty values.
    fn block_of(count: usize) -> Vec<u8> {
        let mut raw = u32::try_from(count).unwrap().to_be_bytes().to_vec();
        for i in 0..count {
            put_string(&mut raw, format!("h{i}").as_bytes()).unwrap();
            put_string(&mut raw, b"").unwrap();
        }
        raw
    }

    #[test]
    fn a_block_of_100000_headers_is_refused_at_once() {
        let raw = block_of(100_000);
        let start = std::time::Instant::now();
        let refused = HeaderBlock::parse(&raw);
        let took = start.elapsed();
        assert!(
            matches!(
                refused,
                Err(Error::TooManyHeaders {
                    count: 100_000,
                    max: MAX_HEADERS
                })
            ),
            "{refused:?}"
        );
        // Refused on the count, before a pair is read (a quadratic duplicate check takes
        // seconds on such a block).
        assert!(took < std::time::Duration::from_millis(50), "{took:?}");
        assert_eq!(
            Error::TooManyHeaders {
                count: 100_000,
                max: MAX_HEADERS
            }
            .to_string(),
            "SPDY header block names 100000 headers, more than the limit of 100"
        );
    }

    #[test]
    fn a_block_at_the_cap_is_accepted_and_one_more_is_refused() {
        let block = HeaderBlock::parse(&block_of(MAX_HEADERS)).unwrap();
        assert_eq!(block.len(), MAX_HEADERS);
        assert_eq!(block.get("h99"), Some(""));
        assert!(matches!(
            HeaderBlock::parse(&block_of(MAX_HEADERS + 1)),
            Err(Error::TooManyHeaders { .. })
        ));
        // A duplicate at the end of a full block is still found.
        let mut raw = block_of(MAX_HEADERS - 1);
        raw[..4].copy_from_slice(&u32::try_from(MAX_HEADERS).unwrap().to_be_bytes());
        put_string(&mut raw, b"h0").unwrap();
        put_string(&mut raw, b"x").unwrap();
        assert!(matches!(
            HeaderBlock::parse(&raw),
            Err(Error::DuplicateHeader(name)) if name == "h0"
        ));
    }

    #[test]
    fn huge_count_does_not_allocate() {
        assert!(matches!(
            HeaderBlock::parse(b"\xff\xff\xff\xff"),
            Err(Error::TooManyHeaders { .. })
        ));
    }
}
