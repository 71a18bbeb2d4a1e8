//! Byte-level tests of the asciicast encoding.

use super::*;
use crate::model::{EffectiveIdentity, EventKind, Initiator, SessionKind};

fn meta() -> SessionMeta {
    SessionMeta {
        session_id: "0b7e2f7c-3f5d-4a8e-9a47-0d3c2a1b9e10".into(),
        kind: SessionKind::Exec,
        initiator: Initiator {
            issuer: "https://idp.example".into(),
            subject: "alice-sub".into(),
            username: "oidc:alice@example.com".into(),
            groups: vec!["oidc:sre".into()],
        },
        effective: EffectiveIdentity {
            user: "alice".into(),
            groups: vec!["sre".into()],
            uid: String::new(),
        },
        cluster: "prod".into(),
        namespace: "shop".into(),
        pod: "web-1".into(),
        container: "app".into(),
        command: vec!["sh".into(), "-c".into(), "echo hi".into()],
        tty: true,
        client_addr: "10.0.0.7:51234".into(),
        user_agent: "kubectl/v1.33".into(),
        approval_id: Some("apr-1".into()),
        gateway_id: "gw-a".into(),
        replica_id: None,
        started_at_us: 1_700_000_000_123_456,
        term_size: Some((100, 30)),
    }
}

fn ev(time_us: u64, kind: EventKind) -> Event {
    Event { time_us, kind }
}

fn encode(precision: TimePrecision, events: &[Event]) -> Vec<u8> {
    let mut encoder = Encoder::new(precision);
    let mut out = Vec::new();
    for event in events {
        encoder.event(event, &mut out).unwrap();
    }
    out
}

fn decode(bytes: &[u8]) -> Vec<Record> {
    let mut decoder = Decoder::new();
    let records = bytes
        .split_inclusive(|b| *b == b'\n')
        .filter_map(|line| decoder.line(line).unwrap())
        .collect();
    decoder.finish().unwrap();
    records
}

fn events_of(records: Vec<Record>) -> Vec<Event> {
    records
        .into_iter()
        .filter_map(|r| {
            if let Record::Event(e) = r {
                Some(e)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn header_is_v3_with_custody_key_and_round_trips() {
    let line = encode_header(&meta()).unwrap();
    assert!(line.ends_with(b"\n"));
    let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(value["version"], 3);
    assert_eq!(value["term"]["cols"], 100);
    assert_eq!(value["term"]["rows"], 30);
    assert_eq!(value["timestamp"], 1_700_000_000);
    assert_eq!(value["command"], "sh -c echo hi");
    assert_eq!(value["custody"]["format"], 1);
    assert_eq!(
        value["custody"]["initiator"]["username"],
        "oidc:alice@example.com"
    );
    assert_eq!(decode_header(&line).unwrap(), meta());
}

#[test]
fn standard_events_encode_to_expected_lines() {
    let bytes = encode(
        TimePrecision::MICROS,
        &[
            ev(250_000, EventKind::Output(b"hello\r\n".to_vec())),
            ev(1_250_001, EventKind::Input(b"ls\r".to_vec())),
            ev(1_250_001, EventKind::Resize { cols: 90, rows: 30 }),
            ev(3_000_000, EventKind::Marker("approved".into())),
            ev(
                4_000_000,
                EventKind::Exit {
                    code: Some(0),
                    message: String::new(),
                },
            ),
        ],
    );
    let expected = concat!(
        "[0.25,\"o\",\"hello\\r\\n\"]\n",
        "[1.000001,\"i\",\"ls\\r\"]\n",
        "[0.0,\"r\",\"90x30\"]\n",
        "[1.749999,\"m\",\"approved\"]\n",
        "[1.0,\"x\",\"0\"]\n",
    );
    assert_eq!(String::from_utf8(bytes).unwrap(), expected);
}

#[test]
fn every_event_kind_round_trips_exactly() {
    let events = vec![
        ev(
            1,
            EventKind::Output(b"\x1b[1mbold\x1b[0m \"quoted\" \\".to_vec()),
        ),
        ev(2, EventKind::Stderr(b"warning: x\n".to_vec())),
        ev(3, EventKind::Input(vec![0x03, 0x7f, b'q'])),
        ev(
            4,
            EventKind::Resize {
                cols: 1,
                rows: 65535,
            },
        ),
        ev(
            5,
            EventKind::Exit {
                code: Some(137),
                message: "OOMKilled".into(),
            },
        ),
        ev(
            6,
            EventKind::Exit {
                code: None,
                message: "container not found".into(),
            },
        ),
        ev(
            7,
            EventKind::Exit {
                code: Some(-1),
                message: String::new(),
            },
        ),
        ev(8, EventKind::Marker(String::new())),
        ev(
            9,
            EventKind::ConnectionOpened {
                connection: 3,
                port: 5432,
            },
        ),
        ev(
            10,
            EventKind::ConnectionData {
                connection: 3,
                to_pod: true,
                data: vec![0, 255, 10],
            },
        ),
        ev(
            11,
            EventKind::ConnectionClosed {
                connection: 3,
                bytes_to_pod: 3,
                bytes_from_pod: 0,
                sha256_to_pod: "ab".repeat(32),
                sha256_from_pod: "cd".repeat(32),
            },
        ),
        ev(3_600_000_000_123, EventKind::Output(Vec::new())),
    ];
    let bytes = encode(TimePrecision::MICROS, &events);
    assert_eq!(events_of(decode(&bytes)), events);
}

#[test]
fn stderr_is_shown_as_output_to_stock_players() {
    let bytes = encode(
        TimePrecision::MICROS,
        &[ev(500, EventKind::Stderr(b"oops\n".to_vec()))],
    );
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "[0.0005,\"e\",\"\"]\n[0.0,\"o\",\"oops\\n\"]\n"
    );
}

#[test]
fn bytes_that_are_not_utf8_keep_exact_bytes_and_show_replacement_text() {
    let raw = vec![b'a', 0xff, b'b', 0xc3, 0x28];
    let bytes = encode(
        TimePrecision::MICROS,
        &[ev(0, EventKind::Output(raw.clone()))],
    );
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert_eq!(
        text,
        "[0.0,\"b\",\"Yf9iwyg=\"]\n[0.0,\"o\",\"a\u{fffd}b\u{fffd}(\"]\n"
    );
    assert_eq!(
        events_of(decode(&bytes)),
        vec![ev(0, EventKind::Output(raw))]
    );
}

#[test]
fn utf8_split_across_events_is_completed_in_the_next_output_line() {
    // "é€" split as [c3] [a9 e2 82] [ac]
    let events = vec![
        ev(1, EventKind::Output(vec![b'x', 0xc3])),
        ev(2, EventKind::Input(b"k".to_vec())),
        ev(3, EventKind::Output(vec![0xa9, 0xe2, 0x82])),
        ev(4, EventKind::Output(vec![0xac, b'!'])),
    ];
    let bytes = encode(TimePrecision::MICROS, &events);
    let text = String::from_utf8(bytes.clone()).unwrap();
    let shown: Vec<&str> = text.lines().filter(|l| l.contains("\"o\"")).collect();
    assert_eq!(
        shown,
        [
            "[0.0,\"o\",\"x\"]",
            "[0.0,\"o\",\"é\"]",
            "[0.0,\"o\",\"€!\"]"
        ]
    );
    // Input has its own carry and is plain here: no bytes prefix.
    assert!(text.contains("[0.000001,\"i\",\"k\"]\n"));
    assert_eq!(events_of(decode(&bytes)), events);
}

#[test]
fn rounding_error_is_carried_forward() {
    // Every event 0.4 ms apart: at millisecond precision each interval alone would round to
    // 0, so the sum would drift. Carried forward, written times stay within half a step.
    let events: Vec<Event> = (1..=1000)
        .map(|i| ev(i * 400, EventKind::Output(b".".to_vec())))
        .collect();
    let bytes = encode(TimePrecision::MILLIS, &events);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with("[0.0,\"o\",\".\"]\n[0.001,\"o\",\".\"]\n[0.0,\"o\",\".\"]\n"));
    let decoded = events_of(decode(&bytes));
    for (written, truth) in decoded.iter().zip(&events) {
        assert_eq!(written.time_us, TimePrecision::MILLIS.round(truth.time_us));
        assert!(written.time_us.abs_diff(truth.time_us) <= 500);
    }
    assert_eq!(decoded.last().unwrap().time_us, 400_000);
}

#[test]
fn times_never_go_backwards() {
    let bytes = encode(
        TimePrecision::MICROS,
        &[
            ev(10, EventKind::Output(b"a".to_vec())),
            ev(5, EventKind::Output(b"b".to_vec())),
        ],
    );
    let decoded = events_of(decode(&bytes));
    assert_eq!(decoded[1].time_us, 10);
}

#[test]
fn anchors_and_end_lines() {
    let mut encoder = Encoder::new(TimePrecision::MICROS);
    let mut out = Vec::new();
    encoder
        .event(&ev(1_500_000, EventKind::Output(b"a".to_vec())), &mut out)
        .unwrap();
    let frame_start = out.len();
    encoder.anchor(&mut out);
    encoder
        .event(&ev(2_000_000, EventKind::Output(b"b".to_vec())), &mut out)
        .unwrap();
    let status = SessionStatus::Terminated {
        reason: "recording_failure".into(),
    };
    encoder.end(2_000_000, &status, &mut out).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.contains("[0.0,\"a\",\"1500000\"]\n"));
    assert!(text.ends_with(
        "[0.0,\"q\",\"{\\\"status\\\":\\\"terminated\\\",\\\"reason\\\":\\\"recording_failure\\\"}\"]\n"
    ));
    let records = decode(&out);
    assert_eq!(records[1], Record::Anchor(1_500_000));
    assert_eq!(records[3], Record::End(status));
    // A frame decodes on its own from its anchor.
    let mut decoder = Decoder::at_anchor(3);
    let from_frame: Vec<Record> = out[frame_start..]
        .split_inclusive(|b| *b == b'\n')
        .filter_map(|l| decoder.line(l).unwrap())
        .collect();
    assert_eq!(
        from_frame[1],
        Record::Event(ev(2_000_000, EventKind::Output(b"b".to_vec())))
    );
}

#[test]
fn inconsistent_or_malformed_lines_are_rejected() {
    let bad: &[&[u8]] = &[
        b"[0.5,\"a\",\"7\"]\n",
        b"[-1.0,\"o\",\"x\"]\n",
        b"[0.0,\"b\",\"AA==\"]\n[0.0,\"r\",\"1x1\"]\n",
        b"[0.0,\"X\",\"{\\\"code\\\":1,\\\"message\\\":\\\"m\\\"}\"]\n[0.0,\"x\",\"2\"]\n",
        b"[0.0,\"r\",\"80by24\"]\n",
        b"[0.0,\"?\",\"\"]\n",
        b"[0.0,\"o\"]\n",
        b"[0.0,\"a\",\"1\"]\n",
    ];
    for case in bad {
        let mut decoder = Decoder::new();
        let failed = case
            .split_inclusive(|b| *b == b'\n')
            .map(|l| decoder.line(l))
            .any(|r| r.is_err());
        assert!(failed, "accepted {}", String::from_utf8_lossy(case));
    }
    let mut decoder = Decoder::new();
    decoder.line(b"[0.0,\"e\",\"\"]\n").unwrap();
    assert!(decoder.finish().is_err());
}

#[test]
fn binary_chunks_keep_exact_bytes_without_display_text() {
    let mut binary = b"ustar\0\0\0".to_vec();
    binary.extend((0..=255u8).cycle().take(4000));
    assert!(looks_binary(&binary));
    assert!(!looks_binary(
        "héllo wörld, plain text\r\n".repeat(20).as_bytes()
    ));
    assert!(!looks_binary(b"\xc3"), "a short chunk is never binary");
    let events = vec![
        ev(1, EventKind::Output(binary.clone())),
        ev(2, EventKind::Input(binary.clone())),
        ev(3, EventKind::Output(b"after\r\n".to_vec())),
    ];
    let bytes = encode(TimePrecision::MICROS, &events);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains(r#""o",""]"#));
    assert!(text.contains(r#""i",""]"#));
    assert!(!text.contains('\u{fffd}'));
    assert_eq!(events_of(decode(&bytes)), events);
}
