//! zlib compression of SPDY/3 header blocks, one context per direction per connection.
//!
//! Every header-bearing control frame of a direction (`SYN_STREAM`, `SYN_REPLY`, HEADERS)
//! continues one zlib stream primed with the SPDY/3 [`DICTIONARY`]; each block ends with a
//! `Z_SYNC_FLUSH` (`00 00 ff ff`). A receiver must inflate every block of the direction in order
//! (k8s-protocols §2.3).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::{DICTIONARY, DICTIONARY_ID};
use super::header_block::HeaderBlock;
use crate::{Error, Result};

/// The default bound on one inflated header block. Kubernetes blocks are a few dozen bytes.
pub const DEFAULT_HEADER_BLOCK_LIMIT: usize = 256 * 1024;

/// Inflates the header blocks of one direction of one connection.
pub struct HeaderDecompressor {
    inflate: Decompress,
    limit: usize,
}

impl HeaderDecompressor {
    /// A decompressor bounding each block to [`DEFAULT_HEADER_BLOCK_LIMIT`] bytes.
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_HEADER_BLOCK_LIMIT)
    }

    /// A decompressor refusing any block that inflates beyond `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            inflate: Decompress::new(true),
            limit,
        }
    }

    /// Inflates one compressed block, which must be consumed entirely.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let mut pos = 0;
        loop {
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let result = self
                .inflate
                .decompress(&block[pos..], &mut buf, FlushDecompress::Sync);
            let consumed = progress(self.inflate.total_in(), in_before);
            let produced = progress(self.inflate.total_out(), out_before);
            pos += consumed;
            if out.len() + produced > self.limit {
                return Err(Error::HeaderBlockTooLarge { limit: self.limit });
            }
            out.extend_from_slice(&buf[..produced]);
            match result {
                Ok(Status::StreamEnd) => {
                    // SPDY header streams never end; a finished stream cannot carry the next
                    // block, and unconsumed input here is garbage.
                    if pos < block.len() {
                        return Err(Error::DecompressStalled(block.len() - pos));
                    }
                    return Ok(out);
                }
                Ok(Status::Ok | Status::BufError) => {
                    if pos == block.len() && produced < buf.len() {
                        return Ok(out);
                    }
                    if consumed == 0 && produced == 0 {
                        return Err(Error::DecompressStalled(block.len() - pos));
                    }
                }
                Err(err) => match err.needs_dictionary() {
                    Some(DICTIONARY_ID) => {
                        self.inflate
                            .set_dictionary(DICTIONARY)
                            .map_err(Error::Decompress)?;
                    }
                    Some(found) => {
                        return Err(Error::WrongDictionary {
                            expected: DICTIONARY_ID,
                            found,
                        });
                    }
                    None => return Err(Error::Decompress(err)),
                },
            }
        }
    }

    /// Inflates and parses one header block.
    pub fn decode(&mut self, block: &[u8]) -> Result<HeaderBlock> {
        HeaderBlock::parse(&self.decompress(block)?)
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecompressor")
            .field("total_in", &self.inflate.total_in())
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// Deflates the header blocks of one direction of one connection.
pub struct HeaderCompressor {
    deflate: Compress,
}

impl HeaderCompressor {
    /// A compressor at level 9 (what Go's spdystream uses) primed with the SPDY/3 dictionary.
    pub fn new() -> Result<Self> {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate
            .set_dictionary(DICTIONARY)
            .map_err(Error::Compress)?;
        Ok(Self { deflate })
    }

    /// Deflates one raw block and sync-flushes, so the peer can inflate it right away.
    pub fn compress(&mut self, raw: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let in_before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync)
                .map_err(Error::Compress)?;
            pos += progress(self.deflate.total_in(), in_before);
            // The flush is complete once all input is taken and deflate stopped short of
            // filling the spare capacity it was given (zlib's `avail_out != 0`).
            if pos == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Encodes and deflates one header block.
    pub fn encode(&mut self, block: &HeaderBlock) -> Result<Vec<u8>> {
        self.compress(&block.encode()?)
    }
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCompressor")
            .field("total_in", &self.deflate.total_in())
            .finish_non_exhaustive()
    }
}

/// Bytes processed between two `total_*` readings; bounded by the slice lengths given to zlib.
fn progress(after: u64, before: u64) -> usize {
    usize::try_from(after - before).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compressed block of the §2.3 example `SYN_STREAM id=1 {streamtype: error}`.
    const ERROR_STREAM_BLOCK: &[u8] = &[
        0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29, 0x4a,
        0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];
    /// The compressed empty block of the §2.3 example `SYN_REPLY id=1 {}`.
    const EMPTY_REPLY_BLOCK: &[u8] = &[
        0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x06, 0x00, 0x00, 0x00, 0x00, 0xff,
        0xff,
    ];

    #[test]
    fn inflates_the_documented_blocks() {
        let block = HeaderDecompressor::new()
            .decode(ERROR_STREAM_BLOCK)
            .unwrap();
        assert_eq!(block, HeaderBlock::from_pairs([("streamtype", "error")]));
        let block = HeaderDecompressor::new().decode(EMPTY_REPLY_BLOCK).unwrap();
        assert!(block.is_empty());
    }

    #[test]
    fn first_block_names_the_dictionary_and_every_block_sync_flushes() {
        let mut compressor = HeaderCompressor::new().unwrap();
        let first = compressor.encode(&HeaderBlock::new()).unwrap();
        assert_eq!(first[..6], [0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2]);
        assert!(first.ends_with(&[0, 0, 0xff, 0xff]));
        let second = compressor.encode(&HeaderBlock::new()).unwrap();
        assert_ne!(second[..2], [0x78, 0xf9]);
        assert!(second.ends_with(&[0, 0, 0xff, 0xff]));
    }

    #[test]
    fn one_context_per_direction_round_trips_many_blocks() {
        let blocks = [
            HeaderBlock::from_pairs([("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            HeaderBlock::from_pairs([("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            HeaderBlock::new(),
            HeaderBlock::from_pairs([("streamtype", "stdin")]),
            HeaderBlock::from_pairs([("x-big", "v".repeat(100_000).as_str())]),
            HeaderBlock::from_pairs([("streamtype", "resize")]),
        ];
        let mut compressor = HeaderCompressor::new().unwrap();
        let compressed: Vec<_> = blocks
            .iter()
            .map(|b| compressor.encode(b).unwrap())
            .collect();
        let mut decompressor = HeaderDecompressor::new();
        for (block, wire) in blocks.iter().zip(&compressed) {
            assert_eq!(&decompressor.decode(wire).unwrap(), block);
        }
        // A fresh context cannot start in the middle of the stream.
        assert!(HeaderDecompressor::new().decode(&compressed[1]).is_err());
    }

    #[test]
    fn refuses_a_header_bomb() {
        let bomb = HeaderBlock::from_pairs([("x", "a".repeat(4 << 20).as_str())]);
        let wire = HeaderCompressor::new().unwrap().encode(&bomb).unwrap();
        assert!(wire.len() < 64 * 1024, "{}", wire.len());
        let err = HeaderDecompressor::with_limit(256 * 1024)
            .decompress(&wire)
            .unwrap_err();
        assert!(matches!(err, Error::HeaderBlockTooLarge { limit: 262_144 }));
    }

    #[test]
    fn refuses_another_dictionary() {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate.set_dictionary(b"not the spdy dictionary").unwrap();
        let mut wire = Vec::with_capacity(128);
        deflate
            .compress_vec(&[0, 0, 0, 0], &mut wire, FlushCompress::Sync)
            .unwrap();
        let err = HeaderDecompressor::new().decompress(&wire).unwrap_err();
        assert!(matches!(
            err,
            Error::WrongDictionary {
                expected: DICTIONARY_ID,
                ..
            }
        ));
    }

    #[test]
    fn refuses_garbage() {
        let err = HeaderDecompressor::new()
            .decompress(&[0x12, 0x34, 0x56])
            .unwrap_err();
        assert!(matches!(err, Error::Decompress(_)));
    }
}
