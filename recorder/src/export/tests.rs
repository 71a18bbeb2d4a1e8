//! Exports on bytes: what each format holds for a known session.

use super::*;
use crate::model::{EffectiveIdentity, Initiator, SessionKind, SessionStatus};

fn meta(tty: bool) -> SessionMeta {
    SessionMeta {
        session_id: "0b6f3c1e-5d2a-4c8e-9f1a-2b3c4d5e6f70".into(),
        kind: SessionKind::Exec,
        initiator: Initiator {
            issuer: "https://idp.example".into(),
            subject: "u-1".into(),
            username: "oidc:alice".into(),
            groups: vec![],
        },
        effective: EffectiveIdentity::default(),
        cluster: "prod".into(),
        namespace: "shop".into(),
        pod: "web-1".into(),
        container: "app".into(),
        command: vec!["sh".into(), "-c".into(), "echo hi".into()],
        tty,
        client_addr: "10.0.0.7:51234".into(),
        user_agent: String::new(),
        approval_id: None,
        gateway_id: "gw".into(),
        replica_id: None,
        started_at_us: 1_700_000_000_500_000,
        term_size: tty.then_some((20, 3)),
    }
}

fn recording(tty: bool, events: Vec<(u64, EventKind)>) -> Recording {
    Recording {
        meta: meta(tty),
        events: events
            .into_iter()
            .map(|(time_us, kind)| Event { time_us, kind })
            .collect(),
        frames: Vec::new(),
        manifest: None,
        status: SessionStatus::Complete,
        damage: None,
        verified_len: 0,
        tail: None,
        signer: None,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn sample(tty: bool) -> Recording {
    recording(
        tty,
        vec![
            (0, EventKind::Output(b"hello \xc3".to_vec())),
            (250_000, EventKind::Output(b"\xa9t\xe9\n".to_vec())),
            (500_000, EventKind::Stderr(b"oops\n".to_vec())),
            (600_000, EventKind::Input(b"ls\r".to_vec())),
            (700_000, EventKind::Resize { cols: 30, rows: 4 }),
            (800_000, EventKind::Marker("approved".into())),
            (
                1_500_000,
                EventKind::Exit {
                    code: Some(3),
                    message: "exit 3".into(),
                },
            ),
        ],
    )
}

#[test]
fn cast_is_plain_v3_with_standard_events_only() {
    let out = text(&cast(&sample(false)).unwrap());
    let lines: Vec<&str> = out.lines().collect();
    let header: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(header["version"], 3);
    assert_eq!(header["term"]["cols"], 80);
    assert_eq!(header["timestamp"], 1_700_000_000);
    assert_eq!(header["command"], "sh -c echo hi");
    assert!(header.get("custody").is_none(), "{header}");
    assert_eq!(
        &lines[1..],
        [
            r#"[0.0, "o", "hello "]"#,
            r#"[0.25, "o", "étU+FFFD\n"]"#.replace("U+FFFD", "\u{fffd}").as_str(),
            r#"[0.25, "o", "oops\n"]"#,
            r#"[0.1, "i", "ls\r"]"#,
            r#"[0.1, "r", "30x4"]"#,
            r#"[0.1, "m", "approved"]"#,
            r#"[0.7, "x", "3"]"#,
        ]
    );
}

#[test]
fn cast_v2_has_absolute_times_and_no_exit() {
    let out = text(&cast_v2(&sample(true)).unwrap());
    let lines: Vec<&str> = out.lines().collect();
    let header: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 20);
    assert_eq!(header["height"], 3);
    assert_eq!(header["timestamp"], 1_700_000_000);
    assert!(
        header["title"]
            .as_str()
            .unwrap()
            .starts_with("oidc:alice on prod shop/web-1/app")
    );
    assert_eq!(lines[2], "[0.25, \"o\", \"ét\u{fffd}\\n\"]");
    assert_eq!(lines[5], r#"[0.7, "r", "30x4"]"#);
    assert_eq!(lines.len(), 7, "{out}");
    assert!(!out.contains("\"x\""), "{out}");
}

#[test]
fn exits_without_code_and_port_forward_become_markers() {
    let rec = recording(
        false,
        vec![
            (
                0,
                EventKind::ConnectionOpened {
                    connection: 1,
                    port: 5432,
                },
            ),
            (
                10,
                EventKind::ConnectionData {
                    connection: 1,
                    to_pod: true,
                    data: b"secret".to_vec(),
                },
            ),
            (
                20,
                EventKind::ConnectionClosed {
                    connection: 1,
                    bytes_to_pod: 6,
                    bytes_from_pod: 0,
                    sha256_to_pod: String::new(),
                    sha256_from_pod: String::new(),
                },
            ),
            (
                30,
                EventKind::Exit {
                    code: None,
                    message: "container not found".into(),
                },
            ),
        ],
    );
    let out = text(&cast(&rec).unwrap());
    assert!(out.contains(r#""m", "port-forward connection 1 opened to port 5432""#));
    assert!(out.contains("connection 1 closed: 6 bytes to the pod"));
    assert!(out.contains(r#""m", "exit: container not found""#));
    assert!(!out.contains("secret"));
    let txt = text(&txt(&rec).unwrap());
    assert_eq!(
        txt,
        "[port-forward] connection 1 opened to port 5432\n[port-forward] connection 1 closed: 6 bytes to the pod, 0 bytes from it\n"
    );
}

#[test]
fn binary_output_is_left_out_of_casts_and_counted_in_txt() {
    let rec = recording(false, vec![(0, EventKind::Output(vec![0u8; 200]))]);
    let out = text(&cast(&rec).unwrap());
    assert_eq!(out.lines().count(), 1, "{out}");
    assert_eq!(text(&txt(&rec).unwrap()), "[200 bytes of binary output]\n");
}

#[test]
fn txt_without_a_terminal_marks_stderr() {
    let rec = recording(
        false,
        vec![
            (0, EventKind::Output(b"one\ntwo".to_vec())),
            (1, EventKind::Stderr(b"bad\nworse\n".to_vec())),
            (2, EventKind::Output(b"three\n".to_vec())),
        ],
    );
    assert_eq!(
        text(&txt(&rec).unwrap()),
        "one\ntwo\n[stderr] bad\n[stderr] worse\nthree\n"
    );
}

#[test]
fn txt_of_a_terminal_keeps_what_scrolled_off_and_the_final_screen() {
    let rec = recording(
        true,
        vec![
            (0, EventKind::Output(b"l1\r\nl2\r\nl3\r\nl4\r\n".to_vec())),
            (
                1,
                EventKind::Output(b"\x1b[1;31mred\x1b[0m abc\x08\x08\x08xyz".to_vec()),
            ),
        ],
    );
    assert_eq!(text(&txt(&rec).unwrap()), "l1\nl2\nl3\nl4\nred xyz\n");
}

#[test]
fn formats_parse_by_name() {
    for format in [ExportFormat::Cast, ExportFormat::CastV2, ExportFormat::Txt] {
        assert_eq!(ExportFormat::parse(format.name()), Some(format));
    }
    assert_eq!(ExportFormat::parse("raw"), None);
    assert_eq!(seconds(1_000_001), "1.000001");
    assert_eq!(seconds(0), "0.0");
}

/// A recording made before the gateway turned 0-column or 0-row resizes into markers: the
/// exports never hold such a size (asciinema 3 panics on one) and the transcript keeps the
/// last real size.
#[test]
fn a_recorded_resize_of_0_columns_or_rows_is_exported_as_a_marker() {
    let old = recording(
        true,
        vec![
            (0, EventKind::Resize { cols: 0, rows: 0 }),
            (100_000, EventKind::Output(b"before\r\n".to_vec())),
            (200_000, EventKind::Resize { cols: 0, rows: 7 }),
            (300_000, EventKind::Output(b"after".to_vec())),
        ],
    );
    for out in [cast(&old).unwrap(), cast_v2(&old).unwrap()] {
        let out = text(&out);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .skip(1)
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert!(lines.iter().all(|line| line[1] != "r"), "{out}");
        let markers: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|line| line[1] == "m")
            .map(|line| &line[2])
            .collect();
        assert_eq!(
            markers,
            [
                "resize ignored: 0x0 is not a size",
                "resize ignored: 0x7 is not a size"
            ],
            "{out}"
        );
    }
    // The 20x3 screen of the header stays: both lines are on it.
    assert_eq!(text(&txt(&old).unwrap()), "before\nafter\n");
}
