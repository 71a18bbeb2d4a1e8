//! Terminal sizes as the resize channel carries them (`client-go` `remotecommand.TerminalSize`),
//! and a streaming decoder of the resize channel's concatenated JSON objects.

use std::fmt;

use bytes::{Buf, BytesMut};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{Error, Result};

/// A terminal size. client-go's struct has no JSON tags, so the fields are `Width` and `Height`
/// on the wire (`{"Width":100,"Height":30}`); Go decodes field names case-insensitively, and so
/// does this type's `Deserialize`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

impl TerminalSize {
    /// The JSON line client-go's `json.Encoder` writes: `{"Width":100,"Height":30}\n`.
    pub fn to_json_line(&self) -> Vec<u8> {
        format!("{{\"Width\":{},\"Height\":{}}}\n", self.width, self.height).into_bytes()
    }
}

impl<'de> Deserialize<'de> for TerminalSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `deserialize_any` so that a top-level `null` decodes to a zero size, as in Go.
        deserializer.deserialize_any(TerminalSizeVisitor)
    }
}

struct TerminalSizeVisitor;

impl<'de> Visitor<'de> for TerminalSizeVisitor {
    type Value = TerminalSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TerminalSize object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TerminalSize, A::Error> {
        // Go's encoding/json: keys match fields case-insensitively, the last occurrence wins,
        // `null` leaves the field alone and unknown keys are skipped.
        let mut size = TerminalSize::default();
        while let Some(key) = map.next_key::<String>()? {
            if key.eq_ignore_ascii_case("width") {
                if let Some(width) = map.next_value::<Option<u16>>()? {
                    size.width = width;
                }
            } else if key.eq_ignore_ascii_case("height") {
                if let Some(height) = map.next_value::<Option<u16>>()? {
                    size.height = height;
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(size)
    }

    fn visit_unit<E: de::Error>(self) -> Result<TerminalSize, E> {
        Ok(TerminalSize::default())
    }
}

/// Decodes a resize stream: JSON objects back to back, with or without whitespace between
/// them, split anywhere (like Go's `json.Decoder` loop in the kubelet's `handleResizeEvents`).
///
/// At most `limit` bytes of an incomplete object are buffered; a longer one is an error, as is
/// anything that is not a `TerminalSize` object. After an error the stream is unusable.
#[derive(Debug)]
pub struct TerminalSizeDecoder {
    buf: BytesMut,
    limit: usize,
}

impl TerminalSizeDecoder {
    /// The default bound on buffered bytes; real messages are under 40 bytes.
    pub const DEFAULT_LIMIT: usize = 4096;

    /// A decoder buffering at most [`Self::DEFAULT_LIMIT`] bytes.
    pub fn new() -> Self {
        Self::with_limit(Self::DEFAULT_LIMIT)
    }

    /// A decoder buffering at most `limit` bytes of an incomplete object.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            limit,
        }
    }

    /// Feeds a chunk and returns every size it completes, in order.
    pub fn decode(&mut self, chunk: &[u8]) -> Result<Vec<TerminalSize>> {
        let mut sizes = Vec::new();
        let mut chunk = chunk;
        // Feed at most `limit` bytes at a time, so one huge chunk full of small objects is
        // fine while one huge object is not.
        loop {
            let room = self.limit.saturating_sub(self.buf.len()).max(1);
            let (now, later) = chunk.split_at(chunk.len().min(room));
            self.buf.extend_from_slice(now);
            chunk = later;
            self.drain(&mut sizes)?;
            if self.buf.len() >= self.limit {
                return Err(Error::ResizeBufferFull { limit: self.limit });
            }
            if chunk.is_empty() {
                return Ok(sizes);
            }
        }
    }

    /// The number of bytes of an incomplete object held back.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn drain(&mut self, sizes: &mut Vec<TerminalSize>) -> Result<()> {
        let mut stream =
            serde_json::Deserializer::from_slice(&self.buf).into_iter::<TerminalSize>();
        // `byte_offset` is past the last complete value and any whitespace after it: an
        // incomplete object stays buffered for the next chunk.
        let outcome = loop {
            match stream.next() {
                Some(Ok(size)) => sizes.push(size),
                None => break Ok(()),
                Some(Err(err)) if err.is_eof() => break Ok(()),
                Some(Err(err)) => break Err(Error::ResizeJson(err)),
            }
        };
        let consumed = stream.byte_offset();
        self.buf.advance(consumed);
        outcome
    }
}

impl Default for TerminalSizeDecoder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL: &[u8] = b"{\"Width\":100,\"Height\":30}\n";

    fn size(width: u16, height: u16) -> TerminalSize {
        TerminalSize { width, height }
    }

    #[test]
    fn decodes_the_wire_message() {
        let mut decoder = TerminalSizeDecoder::new();
        assert_eq!(decoder.decode(KUBECTL).unwrap(), [size(100, 30)]);
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(size(100, 30).to_json_line(), KUBECTL);
        assert_eq!(
            serde_json::to_string(&size(1, 2)).unwrap(),
            r#"{"Width":1,"Height":2}"#
        );
    }

    #[test]
    fn decodes_concatenated_objects_split_at_every_byte() {
        // kubectl's newline-terminated form, then kube-rs's bare form back to back.
        let stream: &[u8] = b"{\"Width\":100,\"Height\":30}\n{\"Width\":120,\"Height\":40}\
              {\"width\":7,\"HEIGHT\":8} \r\n";
        let expected = [size(100, 30), size(120, 40), size(7, 8)];
        for split in 0..=stream.len() {
            let mut decoder = TerminalSizeDecoder::new();
            let mut got = decoder.decode(&stream[..split]).unwrap();
            got.extend(decoder.decode(&stream[split..]).unwrap());
            assert_eq!(got, expected, "split at {split}");
        }
        let mut decoder = TerminalSizeDecoder::new();
        let got: Vec<_> = stream
            .iter()
            .flat_map(|b| decoder.decode(std::slice::from_ref(b)).unwrap())
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn go_field_rules() {
        let mut decoder = TerminalSizeDecoder::new();
        let got = decoder
            .decode(br#"{"Width":1,"width":2,"Height":null,"Depth":{"x":[1]}} {} null"#)
            .unwrap();
        assert_eq!(got, [size(2, 0), size(0, 0), size(0, 0)]);
    }

    #[test]
    fn refuses_non_objects_and_out_of_range_values() {
        for bad in [
            &b"[1,2]"[..],
            b"{\"Width\":-1}",
            b"{\"Width\":65536}",
            b"{\"Width\":1.5}",
            b"}",
        ] {
            let err = TerminalSizeDecoder::new().decode(bad).unwrap_err();
            assert!(
                matches!(err, Error::ResizeJson(_)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bounds_buffered_bytes() {
        let mut decoder = TerminalSizeDecoder::with_limit(64);
        let mut huge = b"{\"Width\":1,\"Pad\":\"".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 100));
        let err = decoder.decode(&huge).unwrap_err();
        assert!(matches!(err, Error::ResizeBufferFull { limit: 64 }));
        // Many small objects in one large chunk are fine.
        let many = KUBECTL.repeat(100);
        assert_eq!(
            TerminalSizeDecoder::with_limit(64)
                .decode(&many)
                .unwrap()
                .len(),
            100
        );
    }
}
