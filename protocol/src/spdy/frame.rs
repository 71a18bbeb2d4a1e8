//! SPDY/3 frames: the typed form of one frame, its validation and its encoding.
//!
//! Layouts follow k8s-protocols §2.2 and `moby/spdystream` `spdy/types.go`, `read.go`,
//! `write.go`. Header blocks stay compressed here: they must be inflated in frame order with the
//! direction's [`HeaderDecompressor`](super::HeaderDecompressor).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{Error, Result};

/// The SPDY version carried by every control frame.
pub const VERSION: u16 = 3;
/// Length of every frame header in bytes.
pub const HEADER_LEN: usize = 8;
/// The largest payload length a 24-bit length field can announce.
pub const MAX_FRAME_LEN: usize = 0x00FF_FFFF;
/// The largest stream id (31 bits).
pub const MAX_STREAM_ID: u32 = 0x7FFF_FFFF;

/// `FLAG_FIN`: the sender half-closes the stream (DATA, `SYN_STREAM`, `SYN_REPLY`, HEADERS).
pub const FLAG_FIN: u8 = 0x01;
/// `FLAG_UNIDIRECTIONAL` of `SYN_STREAM`.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// `FLAG_SETTINGS_CLEAR_SETTINGS` of SETTINGS.
pub const FLAG_CLEAR_SETTINGS: u8 = 0x01;

/// `RST_STREAM` status `PROTOCOL_ERROR`.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// `RST_STREAM` status `INVALID_STREAM`.
pub const RST_INVALID_STREAM: u32 = 2;
/// `RST_STREAM` status `REFUSED_STREAM`.
pub const RST_REFUSED_STREAM: u32 = 3;
/// `RST_STREAM` status `UNSUPPORTED_VERSION`.
pub const RST_UNSUPPORTED_VERSION: u32 = 4;
/// `RST_STREAM` status `CANCEL`, what spdystream's `Stream.Reset()` sends.
pub const RST_CANCEL: u32 = 5;
/// `RST_STREAM` status `INTERNAL_ERROR`.
pub const RST_INTERNAL_ERROR: u32 = 6;
/// `RST_STREAM` status `FLOW_CONTROL_ERROR`.
pub const RST_FLOW_CONTROL_ERROR: u32 = 7;
/// `RST_STREAM` status `STREAM_IN_USE`.
pub const RST_STREAM_IN_USE: u32 = 8;
/// `RST_STREAM` status `STREAM_ALREADY_CLOSED`.
pub const RST_STREAM_ALREADY_CLOSED: u32 = 9;
/// `RST_STREAM` status `INVALID_CREDENTIALS`.
pub const RST_INVALID_CREDENTIALS: u32 = 10;
/// `RST_STREAM` status `FRAME_TOO_LARGE`.
pub const RST_FRAME_TOO_LARGE: u32 = 11;

/// GOAWAY status `OK`.
pub const GOAWAY_OK: u32 = 0;
/// GOAWAY status `PROTOCOL_ERROR`.
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;
/// GOAWAY status `INTERNAL_ERROR`.
pub const GOAWAY_INTERNAL_ERROR: u32 = 2;

/// One SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `SYN_STREAM` (type 1): opens a stream.
    SynStream {
        /// The new stream's id (odd when the client opens it).
        stream_id: u32,
        /// The stream this one is associated with, or 0.
        associated_stream_id: u32,
        /// Priority 0 (highest) to 7.
        priority: u8,
        /// The credential slot, unused by Kubernetes.
        slot: u8,
        /// `FLAG_FIN`: the opener sends nothing on the stream.
        fin: bool,
        /// `FLAG_UNIDIRECTIONAL`: the receiver may not send on the stream.
        unidirectional: bool,
        /// The still-compressed header block.
        header_block: Bytes,
    },
    /// `SYN_REPLY` (type 2): accepts a stream.
    SynReply {
        /// The accepted stream.
        stream_id: u32,
        /// `FLAG_FIN`: the acceptor sends nothing on the stream.
        fin: bool,
        /// The still-compressed header block (empty pairs for Kubernetes).
        header_block: Bytes,
    },
    /// `RST_STREAM` (type 3): aborts a stream.
    RstStream {
        /// The aborted stream.
        stream_id: u32,
        /// Why, one of the `RST_*` constants.
        status: u32,
    },
    /// SETTINGS (type 4), ignored by spdystream.
    Settings {
        /// `FLAG_CLEAR_SETTINGS`.
        clear: bool,
        /// The settings entries in wire order.
        entries: Vec<Setting>,
    },
    /// PING (type 6).
    Ping {
        /// The ping id: odd from clients, even from servers.
        id: u32,
    },
    /// GOAWAY (type 7): the sender will accept no new streams.
    GoAway {
        /// The last stream id the sender processed.
        last_good_stream_id: u32,
        /// One of the `GOAWAY_*` constants.
        status: u32,
    },
    /// HEADERS (type 8): more headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// `FLAG_FIN`.
        fin: bool,
        /// The still-compressed header block.
        header_block: Bytes,
    },
    /// `WINDOW_UPDATE` (type 9), ignored by spdystream.
    WindowUpdate {
        /// The stream, or 0 for the session.
        stream_id: u32,
        /// The window increment.
        delta: u32,
    },
    /// A DATA frame.
    Data {
        /// The stream.
        stream_id: u32,
        /// `FLAG_FIN`: the sender half-closes the stream.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
    /// A version-3 control frame of a type Kubernetes peers do not implement (NOOP, CREDENTIAL,
    /// or anything else); spdystream ends the connection on these.
    Unknown {
        /// The control frame type.
        frame_type: u16,
        /// The raw flags byte.
        flags: u8,
        /// The raw body.
        body: Bytes,
    },
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The entry's flags byte.
    pub flags: u8,
    /// The 24-bit setting id.
    pub id: u32,
    /// The value.
    pub value: u32,
}

impl Frame {
    /// A DATA frame.
    pub fn data(stream_id: u32, data: impl Into<Bytes>, fin: bool) -> Self {
        Self::Data {
            stream_id,
            fin,
            data: data.into(),
        }
    }

    /// An empty DATA frame with `FLAG_FIN`: the half-close of a stream.
    pub fn fin(stream_id: u32) -> Self {
        Self::data(stream_id, Bytes::new(), true)
    }

    /// The short name of the frame's type, as used in errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SynStream { .. } => "SYN_STREAM",
            Self::SynReply { .. } => "SYN_REPLY",
            Self::RstStream { .. } => "RST_STREAM",
            Self::Settings { .. } => "SETTINGS",
            Self::Ping { .. } => "PING",
            Self::GoAway { .. } => "GOAWAY",
            Self::Headers { .. } => "HEADERS",
            Self::WindowUpdate { .. } => "WINDOW_UPDATE",
            Self::Data { .. } => "DATA",
            Self::Unknown { .. } => "unknown control",
        }
    }

    /// The stream the frame belongs to, if it belongs to one.
    pub fn stream_id(&self) -> Option<u32> {
        match self {
            Self::SynStream { stream_id, .. }
            | Self::SynReply { stream_id, .. }
            | Self::RstStream { stream_id, .. }
            | Self::Headers { stream_id, .. }
            | Self::Data { stream_id, .. } => Some(*stream_id),
            Self::WindowUpdate { stream_id, .. } if *stream_id != 0 => Some(*stream_id),
            _ => None,
        }
    }

    /// Whether the frame carries `FLAG_FIN` for its stream.
    pub fn is_fin(&self) -> bool {
        match self {
            Self::SynStream { fin, .. }
            | Self::SynReply { fin, .. }
            | Self::Headers { fin, .. }
            | Self::Data { fin, .. } => *fin,
            _ => false,
        }
    }

    /// Appends the encoded frame to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) -> Result<()> {
        match self {
            Self::Data {
                stream_id,
                fin,
                data,
            } => {
                dst.put_u32(check_stream_id(*stream_id)?);
                put_flags_len(dst, flag(*fin, FLAG_FIN), data.len())?;
                dst.put_slice(data);
            }
            Self::SynStream { .. } => self.encode_syn_stream(dst)?,
            Self::SynReply {
                stream_id,
                fin,
                header_block,
            } => put_block_frame(dst, TYPE_SYN_REPLY, *stream_id, *fin, header_block)?,
            Self::Headers {
                stream_id,
                fin,
                header_block,
            } => put_block_frame(dst, TYPE_HEADERS, *stream_id, *fin, header_block)?,
            Self::RstStream { stream_id, status } => {
                put_control(dst, TYPE_RST_STREAM, 0, 8)?;
                dst.put_u32(check_stream_id(*stream_id)?);
                dst.put_u32(*status);
            }
            Self::Settings { clear, entries } => encode_settings(dst, *clear, entries)?,
            Self::Ping { id } => {
                put_control(dst, TYPE_PING, 0, 4)?;
                dst.put_u32(*id);
            }
            Self::GoAway {
                last_good_stream_id,
                status,
            } => {
                put_control(dst, TYPE_GOAWAY, 0, 8)?;
                dst.put_u32(check_stream_id(*last_good_stream_id)?);
                dst.put_u32(*status);
            }
            Self::WindowUpdate { stream_id, delta } => {
                put_control(dst, TYPE_WINDOW_UPDATE, 0, 8)?;
                dst.put_u32(check_stream_id(*stream_id)?);
                dst.put_u32(*delta);
            }
            Self::Unknown {
                frame_type,
                flags,
                body,
            } => {
                put_control(dst, *frame_type, *flags, body.len())?;
                dst.put_slice(body);
            }
        }
        Ok(())
    }

    /// Encodes a `SYN_STREAM`; [`Self::encode`] calls it for that variant only.
    fn encode_syn_stream(&self, dst: &mut impl BufMut) -> Result<()> {
        let Self::SynStream {
            stream_id,
            associated_stream_id,
            priority,
            slot,
            fin,
            unidirectional,
            header_block,
        } = self
        else {
            return Ok(());
        };
        if *priority > 7 {
            return Err(Error::FieldOverflow {
                field: "priority",
                value: u64::from(*priority),
            });
        }
        let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
        put_control(dst, TYPE_SYN_STREAM, flags, 10 + header_block.len())?;
        dst.put_u32(check_stream_id(*stream_id)?);
        dst.put_u32(check_stream_id(*associated_stream_id)?);
        dst.put_u8(priority << 5);
        dst.put_u8(*slot);
        dst.put_slice(header_block);
        Ok(())
    }

    /// The encoded frame as one buffer.
    pub fn to_bytes(&self) -> Result<Bytes> {
        let mut dst = BytesMut::new();
        self.encode(&mut dst)?;
        Ok(dst.freeze())
    }

    /// Parses one complete frame: its 8-byte header and exactly the body it announced.
    pub(crate) fn parse(header: [u8; HEADER_LEN], mut body: Bytes) -> Result<Self> {
        let first = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let flags = header[4];
        if first & 0x8000_0000 == 0 {
            let stream_id = first & MAX_STREAM_ID;
            nonzero(stream_id, "DATA")?;
            return Ok(Self::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: body,
            });
        }
        let version = u16::from_be_bytes([header[0], header[1]]) & 0x7FFF;
        if version != VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let len = body.len();
        let fin = flags & FLAG_FIN != 0;
        let frame = match u16::from_be_bytes([header[2], header[3]]) {
            TYPE_SYN_STREAM => {
                min_len(len, 10, "SYN_STREAM")?;
                let stream_id = nonzero(body.get_u32() & MAX_STREAM_ID, "SYN_STREAM")?;
                let associated_stream_id = body.get_u32() & MAX_STREAM_ID;
                let priority = body.get_u8() >> 5;
                let slot = body.get_u8();
                Self::SynStream {
                    stream_id,
                    associated_stream_id,
                    priority,
                    slot,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    header_block: body,
                }
            }
            TYPE_SYN_REPLY => {
                min_len(len, 4, "SYN_REPLY")?;
                Self::SynReply {
                    stream_id: nonzero(body.get_u32() & MAX_STREAM_ID, "SYN_REPLY")?,
                    fin,
                    header_block: body,
                }
            }
            TYPE_HEADERS => {
                min_len(len, 4, "HEADERS")?;
                Self::Headers {
                    stream_id: nonzero(body.get_u32() & MAX_STREAM_ID, "HEADERS")?,
                    fin,
                    header_block: body,
                }
            }
            TYPE_RST_STREAM => parse_rst_stream(body)?,
            TYPE_SETTINGS => parse_settings(flags, body)?,
            TYPE_PING => {
                exact_len(len, 4, "PING")?;
                no_flags(flags, "PING")?;
                Self::Ping {
                    id: nonzero(body.get_u32(), "PING")?,
                }
            }
            TYPE_GOAWAY => {
                exact_len(len, 8, "GOAWAY")?;
                no_flags(flags, "GOAWAY")?;
                Self::GoAway {
                    last_good_stream_id: body.get_u32() & MAX_STREAM_ID,
                    status: body.get_u32(),
                }
            }
            TYPE_WINDOW_UPDATE => {
                exact_len(len, 8, "WINDOW_UPDATE")?;
                no_flags(flags, "WINDOW_UPDATE")?;
                Self::WindowUpdate {
                    stream_id: body.get_u32() & MAX_STREAM_ID,
                    delta: body.get_u32() & 0x7FFF_FFFF,
                }
            }
            frame_type => Self::Unknown {
                frame_type,
                flags,
                body,
            },
        };
        Ok(frame)
    }
}

fn parse_rst_stream(mut body: Bytes) -> Result<Frame> {
    exact_len(body.len(), 8, "RST_STREAM")?;
    let stream_id = nonzero(body.get_u32() & MAX_STREAM_ID, "RST_STREAM")?;
    let status = body.get_u32();
    if status == 0 {
        return Err(Error::InvalidControlFrame {
            frame: "RST_STREAM",
            reason: "status 0",
        });
    }
    Ok(Frame::RstStream { stream_id, status })
}

fn parse_settings(flags: u8, mut body: Bytes) -> Result<Frame> {
    let len = body.len();
    min_len(len, 4, "SETTINGS")?;
    let count = body.get_u32() as usize;
    if count.checked_mul(8) != Some(len - 4) {
        return Err(Error::InvalidFrameLength {
            frame: "SETTINGS",
            len,
        });
    }
    let entries = (0..count)
        .map(|_| {
            let word = body.get_u32();
            Setting {
                flags: word.to_be_bytes()[0],
                id: word & 0x00FF_FFFF,
                value: body.get_u32(),
            }
        })
        .collect();
    Ok(Frame::Settings {
        clear: flags & FLAG_CLEAR_SETTINGS != 0,
        entries,
    })
}

fn encode_settings(dst: &mut impl BufMut, clear: bool, entries: &[Setting]) -> Result<()> {
    let len = entries
        .len()
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .unwrap_or(usize::MAX);
    put_control(dst, TYPE_SETTINGS, flag(clear, FLAG_CLEAR_SETTINGS), len)?;
    dst.put_u32(field_u32("settings count", entries.len())?);
    for entry in entries {
        if entry.id > 0x00FF_FFFF {
            return Err(Error::FieldOverflow {
                field: "setting id",
                value: u64::from(entry.id),
            });
        }
        dst.put_u32((u32::from(entry.flags) << 24) | entry.id);
        dst.put_u32(entry.value);
    }
    Ok(())
}

fn put_block_frame(
    dst: &mut impl BufMut,
    frame_type: u16,
    stream_id: u32,
    fin: bool,
    header_block: &[u8],
) -> Result<()> {
    put_control(dst, frame_type, flag(fin, FLAG_FIN), 4 + header_block.len())?;
    dst.put_u32(check_stream_id(stream_id)?);
    dst.put_slice(header_block);
    Ok(())
}

/// Reads the payload length announced by a frame header.
pub(crate) fn announced_len(header: [u8; HEADER_LEN]) -> usize {
    usize::from(header[5]) << 16 | usize::from(header[6]) << 8 | usize::from(header[7])
}

fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

fn put_control(dst: &mut impl BufMut, frame_type: u16, flags: u8, len: usize) -> Result<()> {
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(frame_type);
    put_flags_len(dst, flags, len)
}

fn put_flags_len(dst: &mut impl BufMut, flags: u8, len: usize) -> Result<()> {
    if len > MAX_FRAME_LEN {
        return Err(Error::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    // `len` fits in 24 bits, checked above.
    dst.put_u32((u32::from(flags) << 24) | field_u32("frame length", len)?);
    Ok(())
}

fn field_u32(field: &'static str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::FieldOverflow {
        field,
        value: value as u64,
    })
}

fn check_stream_id(id: u32) -> Result<u32> {
    if id > MAX_STREAM_ID {
        return Err(Error::FieldOverflow {
            field: "stream id",
            value: u64::from(id),
        });
    }
    Ok(id)
}

fn nonzero(id: u32, frame: &'static str) -> Result<u32> {
    if id == 0 {
        return Err(Error::ZeroStreamId { frame });
    }
    Ok(id)
}

fn min_len(len: usize, min: usize, frame: &'static str) -> Result<()> {
    if len < min {
        return Err(Error::InvalidFrameLength { frame, len });
    }
    Ok(())
}

fn exact_len(len: usize, expected: usize, frame: &'static str) -> Result<()> {
    if len != expected {
        return Err(Error::InvalidFrameLength { frame, len });
    }
    Ok(())
}

fn no_flags(flags: u8, frame: &'static str) -> Result<()> {
    if flags != 0 {
        return Err(Error::InvalidControlFrame {
            frame,
            reason: "flags must be 0",
        });
    }
    Ok(())
}

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;
