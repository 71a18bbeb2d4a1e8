//! The PROXY protocol v2 header an L4 balancer (`send-proxy-v2`) puts in front of a
//! TCP connection to say who the client is: an incremental, strict decoder over bytes.
//!
//! Layout: the 12-byte signature `\r\n\r\n\0\r\nQUIT\n`; a version/command byte (version 2;
//! `LOCAL` 0x20 or `PROXY` 0x21); a family/transport byte; a big-endian `u16` length; then that
//! many bytes: the addresses (IPv4: source 4, destination 4, source port 2, destination port
//! 2; IPv6: 16, 16, 2, 2; UNIX: 108, 108) followed by TLVs (type 1 byte, length 2 bytes, value).
//!
//! Decisions:
//! - Only v2. The text v1 form (`PROXY TCP4 …`) is an error that says so: a balancer
//!   configured with `send-proxy` instead of `send-proxy-v2` should be found at once.
//! - `LOCAL` (health checks) carries no client: its address block is ignored, as the
//!   specification asks, and the connection's own endpoints stand.
//! - `PROXY` over TCP (IPv4 or IPv6) gives both addresses. `UNSPEC` and UNIX stream sockets
//!   give none (the balancer's own address stands: it has no IP client to name). Datagram
//!   transports (UDP, UNIX datagram) are errors: a stream listener behind a balancer that
//!   describes its connection as datagrams is misconfigured, and a wrong address in the audit
//!   trail is worse than a refused connection.
//! - The address block and TLVs are at most [`MAX_PAYLOAD`] bytes, and the TLVs must fill
//!   the rest exactly (their contents are not interpreted).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::{Error, Result};

/// The 12 bytes every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part: signature, version/command, family/transport, length.
pub const FIXED_LEN: usize = 16;
/// The largest address block plus TLVs accepted. The header is read before the TLS handshake,
/// from anyone who can connect, so it must be bounded; 512 bytes hold the largest address
/// block (UNIX, 216) and the TLVs a balancer adds in practice (ALPN, authority, a unique id
/// of up to 128 bytes, SSL flags), and keep the whole header within one minimal TCP segment
/// (536 bytes), so a balancer never has to split it.
pub const MAX_PAYLOAD: usize = 512;
/// How v1 headers start (`PROXY TCP4 …`, `PROXY UNKNOWN`).
const V1_PREFIX: &[u8] = b"PROXY ";

/// What the header asks of the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The balancer's own connection (a health check): no client behind it.
    Local,
    /// A relayed client connection.
    Proxy,
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// `LOCAL` or `PROXY`.
    pub command: Command,
    /// The client's address as the balancer saw it; `None` for `LOCAL`, `UNSPEC` and UNIX.
    pub source: Option<SocketAddr>,
    /// The address the client connected to (the balancer's frontend); `None` likewise.
    pub destination: Option<SocketAddr>,
}

/// Decodes a header from the start of `buf`: `Ok(None)` while more bytes are needed, else the
/// header and the number of bytes it took (what follows belongs to the connection). An
/// error is final: the bytes are not a header this decoder accepts, and more will not help.
pub fn decode(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>> {
    // Each byte is judged as soon as it arrives: a direct client is refused at its first
    // byte, a bad version or family without waiting for the rest.
    check_signature(buf)?;
    let Some(&version_command) = buf.get(12) else {
        return Ok(None);
    };
    let command = command(version_command)?;
    if let (Command::Proxy, Some(&family)) = (command, buf.get(13)) {
        address_len(family)?;
    }
    let Some(fixed) = buf.get(..FIXED_LEN) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_PAYLOAD {
        return Err(Error::ProxyHeaderTooLong {
            len,
            max: MAX_PAYLOAD,
        });
    }
    let Some(payload) = buf.get(FIXED_LEN..FIXED_LEN + len) else {
        return Ok(None);
    };
    let consumed = FIXED_LEN + len;
    let (source, destination) = match command {
        // The specification: a receiver must ignore the protocol block of a LOCAL header and
        // use the connection's real endpoints.
        Command::Local => (None, None),
        Command::Proxy => {
            let (source, destination, address_len) = addresses(fixed[13], payload)?;
            check_tlvs(&payload[address_len..])?;
            (source, destination)
        }
    };
    let header = ProxyHeader {
        command,
        source,
        destination,
    };
    Ok(Some((header, consumed)))
}

/// The command of a version/command byte, which must say version 2.
fn command(version_command: u8) -> Result<Command> {
    let version = version_command >> 4;
    if version != 2 {
        return Err(Error::ProxyHeaderVersion(version));
    }
    match version_command & 0x0f {
        0 => Ok(Command::Local),
        1 => Ok(Command::Proxy),
        other => Err(Error::ProxyHeaderCommand(other)),
    }
}

/// The length of a PROXY header's address block for a family/transport byte, if accepted.
fn address_len(family: u8) -> Result<usize> {
    match family {
        // UNSPEC: no addresses.
        0x00 => Ok(0),
        0x11 => Ok(12),
        0x21 => Ok(36),
        0x31 => Ok(216),
        0x12 | 0x22 | 0x32 => Err(Error::ProxyHeaderDatagram(family)),
        other => Err(Error::ProxyHeaderFamily(other)),
    }
}

/// Checks the bytes seen so far against the signature (and recognises a v1 header).
fn check_signature(buf: &[u8]) -> Result<()> {
    let seen = buf.len().min(SIGNATURE.len());
    if buf[..seen] == SIGNATURE[..seen] {
        return Ok(());
    }
    let prefix = buf.len().min(V1_PREFIX.len());
    if buf[..prefix] == V1_PREFIX[..prefix] {
        // Possibly v1: wait until "PROXY " is whole before saying so.
        return if prefix == V1_PREFIX.len() {
            Err(Error::ProxyHeaderV1)
        } else {
            Ok(())
        };
    }
    Err(Error::ProxyHeaderSignature)
}

/// The source and destination of a PROXY header's address block, and the block's length.
fn addresses(
    family: u8,
    payload: &[u8],
) -> Result<(Option<SocketAddr>, Option<SocketAddr>, usize)> {
    let need = address_len(family)?;
    let Some(block) = payload.get(..need) else {
        return Err(Error::ProxyHeaderAddressTruncated {
            family,
            len: payload.len(),
            need,
        });
    };
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    let (source, destination) = match family {
        0x11 => {
            let ip =
                |at: usize| Ipv4Addr::new(block[at], block[at + 1], block[at + 2], block[at + 3]);
            (
                SocketAddr::from((ip(0), port(8))),
                SocketAddr::from((ip(4), port(10))),
            )
        }
        0x21 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            (
                SocketAddr::from((ip(0), port(32))),
                SocketAddr::from((ip(16), port(34))),
            )
        }
        // UNSPEC, and UNIX stream sockets (paths, not socket addresses): the balancer's
        // address stands.
        _ => return Ok((None, None, need)),
    };
    Ok((Some(source), Some(destination), need))
}

/// Checks that the TLVs after the address block fill it exactly.
fn check_tlvs(mut rest: &[u8]) -> Result<()> {
    while !rest.is_empty() {
        let Some(&[kind, high, low]) = rest.get(..3) else {
            return Err(Error::ProxyHeaderTlv {
                kind: rest[0],
                left: rest.len(),
            });
        };
        let len = 3 + usize::from(u16::from_be_bytes([high, low]));
        if len > rest.len() {
            return Err(Error::ProxyHeaderTlv {
                kind,
                left: rest.len(),
            });
        }
        rest = &rest[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with this version/command byte, family/transport byte and payload.
    fn header(version_command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = SIGNATURE.to_vec();
        bytes.push(version_command);
        bytes.push(family);
        bytes.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// An IPv4 address block: 192.0.2.7:51234 → 198.51.100.1:8443.
    fn ipv4_block() -> Vec<u8> {
        let mut block = vec![192, 0, 2, 7, 198, 51, 100, 1];
        block.extend_from_slice(&51234u16.to_be_bytes());
        block.extend_from_slice(&8443u16.to_be_bytes());
        block
    }

    /// The start of a TLS `ClientHello` record, as a direct client sends it.
    const CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];

    fn decoded(bytes: &[u8]) -> (ProxyHeader, usize) {
        decode(bytes).unwrap().unwrap()
    }

    /// Every prefix shorter than the header needs more bytes, the header alone decodes to the
    /// same as the header followed by other bytes, and what follows is not consumed.
    fn assert_incremental(bytes: &[u8]) {
        let (header, consumed) = decoded(bytes);
        assert_eq!(consumed, bytes.len());
        for end in 0..bytes.len() {
            assert!(
                decode(&bytes[..end]).unwrap().is_none(),
                "a prefix of {end} bytes decoded"
            );
        }
        let mut followed = bytes.to_vec();
        followed.extend_from_slice(CLIENT_HELLO);
        assert_eq!(decoded(&followed), (header, consumed));
    }

    #[test]
    fn proxy_over_tcp4() {
        let bytes = header(0x21, 0x11, &ipv4_block());
        let (header, consumed) = decoded(&bytes);
        assert_eq!(consumed, 28);
        assert_eq!(header.command, Command::Proxy);
        assert_eq!(header.source, Some("192.0.2.7:51234".parse().unwrap()));
        assert_eq!(
            header.destination,
            Some("198.51.100.1:8443".parse().unwrap())
        );
        assert_incremental(&bytes);
    }

    #[test]
    fn proxy_over_tcp6() {
        let source: std::net::SocketAddrV6 = "[2001:db8::1]:40000".parse().unwrap();
        let destination: std::net::SocketAddrV6 = "[2001:db8::2:0]:443".parse().unwrap();
        let mut block = source.ip().octets().to_vec();
        block.extend_from_slice(&destination.ip().octets());
        block.extend_from_slice(&source.port().to_be_bytes());
        block.extend_from_slice(&destination.port().to_be_bytes());
        let bytes = header(0x21, 0x21, &block);
        let (header, consumed) = decoded(&bytes);
        assert_eq!(consumed, 52);
        assert_eq!(header.source, Some(SocketAddr::V6(source)));
        assert_eq!(header.destination, Some(SocketAddr::V6(destination)));
        assert_incremental(&bytes);
    }

    #[test]
    fn local_carries_no_address_whatever_its_block() {
        let expected = ProxyHeader {
            command: Command::Local,
            source: None,
            destination: None,
        };
        // HAProxy's health checks; and LOCAL with an address block, or even a family this
        // decoder refuses for PROXY: the specification says to ignore the block.
        for (family, payload) in [
            (0x00, Vec::new()),
            (0x11, ipv4_block()),
            (0x12, ipv4_block()),
            (0xff, vec![1, 2, 3]),
        ] {
            let bytes = header(0x20, family, &payload);
            assert_eq!(decoded(&bytes), (expected, bytes.len()), "{family:#x}");
            assert_incremental(&bytes);
        }
    }

    #[test]
    fn unspec_and_unix_streams_carry_no_address() {
        for (family, payload) in [
            (0x00, Vec::new()),
            (0x00, vec![0x04, 0, 0]),
            (0x31, vec![b'/'; 216]),
        ] {
            let bytes = header(0x21, family, &payload);
            let (header, consumed) = decoded(&bytes);
            assert_eq!(consumed, bytes.len());
            assert_eq!(header.command, Command::Proxy);
            assert_eq!((header.source, header.destination), (None, None));
            assert_incremental(&bytes);
        }
    }

    #[test]
    fn datagram_and_unknown_families_are_refused() {
        for family in [0x12, 0x22, 0x32] {
            let err = decode(&header(0x21, family, &[0; 216])).unwrap_err();
            assert!(
                matches!(err, Error::ProxyHeaderDatagram(f) if f == family),
                "{err}"
            );
        }
        for family in [0x01, 0x10, 0x13, 0x41, 0xff] {
            let err = decode(&header(0x21, family, &[0; 216])).unwrap_err();
            assert!(
                matches!(err, Error::ProxyHeaderFamily(f) if f == family),
                "{err}"
            );
        }
    }

    #[test]
    fn versions_other_than_2_and_unknown_commands_are_refused() {
        for byte in [0x01, 0x11, 0x31, 0xf1] {
            let err = decode(&header(byte, 0x11, &ipv4_block())).unwrap_err();
            assert!(
                matches!(err, Error::ProxyHeaderVersion(v) if v == byte >> 4),
                "{err}"
            );
        }
        for byte in [0x22, 0x2f] {
            let err = decode(&header(byte, 0x11, &ipv4_block())).unwrap_err();
            assert!(
                matches!(err, Error::ProxyHeaderCommand(c) if c == byte & 0x0f),
                "{err}"
            );
        }
        // Decided on the 13th byte (the family on the 14th): no need to wait for the rest.
        let bytes = header(0x31, 0x11, &ipv4_block());
        assert!(decode(&bytes[..13]).is_err());
        let bytes = header(0x21, 0x12, &ipv4_block());
        assert!(decode(&bytes[..13]).unwrap().is_none());
        assert!(decode(&bytes[..14]).is_err());
    }

    #[test]
    fn the_length_is_bounded_before_the_payload_arrives() {
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let err = decode(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ProxyHeaderTooLong {
                    len: 65535,
                    max: 512
                }
            ),
            "{err}"
        );
        // 513 is refused, 512 (an address block and TLVs filling it) accepted.
        let mut payload = ipv4_block();
        payload.extend_from_slice(&[0x04, 0x01, 0xf1]);
        payload.resize(512, 0);
        assert_eq!(decoded(&header(0x21, 0x11, &payload)).1, 16 + 512);
        payload.push(0);
        let err = decode(&header(0x21, 0x11, &payload)[..16]).unwrap_err();
        assert!(
            matches!(err, Error::ProxyHeaderTooLong { len: 513, .. }),
            "{err}"
        );
    }

    #[test]
    fn short_address_blocks_are_refused() {
        for (family, need) in [(0x11, 12), (0x21, 36), (0x31, 216)] {
            let err = decode(&header(0x21, family, &vec![0; need - 1])).unwrap_err();
            assert!(
                matches!(err, Error::ProxyHeaderAddressTruncated { family: f, len, need: n }
                    if f == family && len == need - 1 && n == need),
                "{err}"
            );
        }
    }

    #[test]
    fn tlvs_must_fill_the_length_exactly() {
        let mut payload = ipv4_block();
        // ALPN "h2", then a NOOP with no value, then an authority.
        payload.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x00]);
        payload.extend_from_slice(&[0x02, 0x00, 0x03, b'a', b'.', b'b']);
        let bytes = header(0x21, 0x11, &payload);
        assert_eq!(
            decoded(&bytes).0.source,
            Some("192.0.2.7:51234".parse().unwrap())
        );
        assert_incremental(&bytes);

        // A TLV whose value runs past the header.
        let mut past = ipv4_block();
        past.extend_from_slice(&[0x02, 0x00, 0x04, b'a', b'.', b'b']);
        let err = decode(&header(0x21, 0x11, &past)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ProxyHeaderTlv {
                    kind: 0x02,
                    left: 6
                }
            ),
            "{err}"
        );
        // One or two bytes left: not even a TLV's type and length.
        for tail in [&[0x04][..], &[0x04, 0x00]] {
            let mut short = ipv4_block();
            short.extend_from_slice(tail);
            let err = decode(&header(0x21, 0x11, &short)).unwrap_err();
            assert!(
                matches!(err, Error::ProxyHeaderTlv { kind: 0x04, .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn a_direct_client_is_refused_at_its_first_byte() {
        assert!(decode(&[]).unwrap().is_none());
        for end in 1..=CLIENT_HELLO.len() {
            let err = decode(&CLIENT_HELLO[..end]).unwrap_err();
            assert!(matches!(err, Error::ProxyHeaderSignature), "{err}");
        }
        // A wrong byte anywhere in the signature, even the last.
        for at in 0..SIGNATURE.len() {
            let mut bytes = header(0x21, 0x11, &ipv4_block());
            bytes[at] ^= 0x40;
            assert!(decode(&bytes[..=at]).is_err(), "byte {at}");
            assert!(decode(&bytes).is_err(), "byte {at}");
        }
        let err = decode(b"GET / HTTP/1.1\r\n").unwrap_err();
        assert!(matches!(err, Error::ProxyHeaderSignature), "{err}");
    }

    #[test]
    fn v1_is_refused_with_a_message_that_says_so() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 8443\r\n";
        let err = decode(v1).unwrap_err();
        assert!(matches!(err, Error::ProxyHeaderV1), "{err}");
        assert!(err.to_string().contains("only v2 is supported"), "{err}");
        assert!(matches!(
            decode(b"PROXY UNKNOWN\r\n"),
            Err(Error::ProxyHeaderV1)
        ));
        // Until "PROXY " is whole it may still be v1.
        for end in 1..6 {
            assert!(decode(&v1[..end]).unwrap().is_none(), "{end}");
        }
        assert!(matches!(decode(b"PROXZ"), Err(Error::ProxyHeaderSignature)));
    }

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }

    /// Whatever the bytes: no panic; a header decodes only from its own bytes and from
    /// nothing shorter; an error does not turn into a header when bytes are added; an error
    /// on a prefix stays an error on the whole.
    #[test]
    fn truncated_and_mutated_headers_keep_the_decoder_consistent() {
        let mut seeds = vec![
            header(0x21, 0x11, &ipv4_block()),
            header(0x20, 0x00, &[]),
            header(0x21, 0x00, &[]),
            header(0x21, 0x31, &[b'/'; 216]),
        ];
        let mut with_tlv = ipv4_block();
        with_tlv.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        seeds.push(header(0x21, 0x11, &with_tlv));
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut headers = 0;
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].clone();
            // Flip up to three bytes, biased to the fixed part where the decisions are.
            for _ in 0..rng.below(4) {
                let at = if rng.below(2) == 0 {
                    rng.below(FIXED_LEN.min(bytes.len()))
                } else {
                    rng.below(bytes.len())
                };
                bytes[at] = u8::try_from(rng.next() & 0xff).unwrap();
            }
            let extra = rng.below(8);
            bytes.extend((0..extra).map(|_| u8::try_from(rng.next() & 0xff).unwrap()));
            let whole = decode(&bytes);
            if let Ok(Some((header, consumed))) = &whole {
                headers += 1;
                assert!(*consumed <= bytes.len());
                assert_eq!(decoded(&bytes[..*consumed]), (*header, *consumed));
                for end in 0..*consumed {
                    assert!(
                        decode(&bytes[..end]).unwrap().is_none(),
                        "{bytes:?} at {end}"
                    );
                }
            }
            for end in 0..bytes.len() {
                if decode(&bytes[..end]).is_err() {
                    assert!(
                        whole.is_err(),
                        "{bytes:?}: an error at {end} became {whole:?}"
                    );
                    break;
                }
            }
        }
        // The mutations leave many headers valid: the checks above ran on them.
        assert!(headers > 1000, "{headers}");
    }
}
