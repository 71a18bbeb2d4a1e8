//! Tests of output stripping and typed-line reconstruction.

use super::*;

fn ev(time_us: u64, kind: EventKind) -> Event {
    Event { time_us, kind }
}

fn typed(bytes: &[u8]) -> Vec<String> {
    let mut editor = LineEditor::default();
    let mut lines = editor.push(bytes);
    lines.extend(editor.take_line());
    lines
}

fn stripped(chunks: &[&[u8]]) -> String {
    let mut text = OutputText::default();
    for c in chunks {
        text.push(c);
    }
    text.take_all()
}

#[test]
fn output_loses_escape_sequences() {
    let out = stripped(&[
        b"\x1b]0;user@pod: ~\x07\x1b[01;32muser@pod\x1b[00m:\x1b[01;34m~\x1b[00m$ ",
        b"ls\r\n\x1b[0m\x1b[01;34mbin\x1b[0m  secrets.txt\r\n",
        b"\x1b(B\x1b[?2004h\x1bP1$r0m\x1b\\done\x1b[",
        b"K\r\n",
    ]);
    assert_eq!(out, "user@pod:~$ ls\nbin  secrets.txt\ndone\n");
}

#[test]
fn output_applies_backspace_and_carriage_return() {
    assert_eq!(stripped(&[b"lz\x08 \x08s\r\n"]), "ls\n");
    assert_eq!(stripped(&[b"10%\r20%\rdone\n"]), "10%\n20%\ndone\n");
}

#[test]
fn output_joins_utf8_split_across_events() {
    assert_eq!(stripped(&[b"caf\xc3", b"\xa9"]), "café");
}

#[test]
fn typed_lines_follow_line_editing() {
    assert_eq!(typed(b"ls -la\r"), ["ls -la"]);
    assert_eq!(typed(b"lss\x7f -l\r"), ["ls -l"]);
    assert_eq!(typed(b"rm -rf /\x15echo hi\r"), ["echo hi"]);
    assert_eq!(typed(b"cat foo bar\x17baz\r"), ["cat foo baz"]);
    assert_eq!(typed(b"oops\x03\rkubectl get pods\n"), ["kubectl get pods"]);
    assert_eq!(typed(b"\x1b[A\x1b[Bwhoami\r"), ["whoami"]);
    assert_eq!(typed(b"\x1b[200~echo pasted\x1b[201~\r"), ["echo pasted"]);
    assert_eq!(typed(b"first\r\nsecond\r\n\r\n"), ["first", "second"]);
    assert_eq!(typed(b"unfinished"), ["unfinished"]);
}

#[test]
fn transcript_chunks_by_frame_without_cutting_lines() {
    let mut t = Transcript::default();
    t.push(&ev(10, EventKind::Output(b"hello wor".to_vec())));
    t.end_frame();
    t.push(&ev(20, EventKind::Output(b"ld\r\nnext line\r\n".to_vec())));
    t.push(&ev(25, EventKind::Input(b"exit\r".to_vec())));
    t.end_frame();
    t.push(&ev(30, EventKind::Stderr(b"tail".to_vec())));
    let chunks = t.finish(30);
    let bodies: Vec<(TextSource, u64, &str)> = chunks
        .iter()
        .map(|c| (c.source, c.time_us, c.body.as_str()))
        .collect();
    assert_eq!(
        bodies,
        [
            (TextSource::Input, 25, "exit"),
            (TextSource::Output, 10, "hello world\nnext line\n"),
            (TextSource::Output, 30, "tail"),
        ]
    );
}

#[test]
fn ctrl_w_after_a_multibyte_blank_keeps_char_boundaries() {
    // U+00A0 (no-break space) is two bytes in UTF-8 and counts as whitespace.
    assert_eq!(typed("ab\u{a0}cd\u{17}x\r".as_bytes()), ["ab\u{a0}x"]);
}

#[test]
fn text_per_session_is_capped() {
    let mut t = Transcript::default();
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n".repeat(1024);
    // 64 KiB of text per event, 256 MiB in all: far past the cap.
    for i in 0..4096 {
        t.push(&ev(i, EventKind::Output(line.clone())));
        if i % 16 == 0 {
            t.end_frame();
        }
    }
    t.push(&ev(
        5000,
        EventKind::Input(b"typed after the cap\r".to_vec()),
    ));
    let chunks = t.finish(5000);
    let total: usize = chunks.iter().map(|c| c.body.len()).sum();
    assert!(total >= MAX_SESSION_TEXT - line.len(), "{total}");
    assert!(total <= MAX_SESSION_TEXT + 2 * line.len(), "{total}");
    assert!(chunks.iter().all(|c| c.source == TextSource::Output));
}
