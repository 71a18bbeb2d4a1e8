//! Scenario 4: many concurrent exec sessions through custody. Opens the sessions (each an
//! `exec -i demo -- cat` over WebSocket, recorded), reads the gateway's resident memory with
//! all of them idle, makes a share of them active (a known byte pattern through `cat` and
//! back, every byte checked), then has every session echo a final tagged block and end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;

use crate::client::{ExecReader, ExecWriter, Target, Transport, exec};
use crate::procs::Stack;
use crate::report::{Report, Section};
use crate::{Plan, Targets};

/// The byte at `offset` of session `session`'s stream.
fn pattern(session: usize, offset: usize) -> u8 {
    let x = session.wrapping_mul(2_654_435_761) ^ offset.wrapping_mul(40_503) ^ (offset >> 9);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the low byte is the pattern"
    )]
    let b = x as u8;
    b
}

type Session = (ExecReader, ExecWriter);

/// Sends `len` pattern bytes from `offset` in chunks and checks the echo byte for byte;
/// returns the number of wrong bytes (a lost chunk counts all its bytes).
async fn exchange(
    s: &mut Session,
    id: usize,
    offset: usize,
    len: usize,
    chunk: usize,
) -> anyhow::Result<u64> {
    let (rd, wr) = s;
    let mut wrong = 0u64;
    let mut buf = Vec::new();
    let mut at = offset;
    while at < offset + len {
        let n = chunk.min(offset + len - at);
        let data: Vec<u8> = (at..at + n).map(|i| pattern(id, i)).collect();
        wr.send(&data).await?;
        match tokio::time::timeout(Duration::from_secs(30), rd.read_exact(n, &mut buf)).await {
            Ok(Ok(())) => {
                wrong += buf.iter().zip(&data).filter(|(a, b)| a != b).count() as u64;
            }
            _ => return Ok(wrong + (offset + len - at) as u64),
        }
        at += n;
    }
    Ok(wrong)
}

/// Runs the scenario (through custody only: it is the gateway's memory that is measured).
pub async fn run(
    plan: &Plan,
    stack: &Stack,
    targets: &Targets,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = plan.sessions;
    let active = (n / 10).max(1);
    let per_active = if plan.mode == "quick" {
        256 * 1024
    } else {
        4 << 20
    };
    let target: Target = targets.custody.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_before = stack.custody.usage();

    // Open the sessions, 32 handshakes at a time.
    let opened = Instant::now();
    let gate = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let gate = gate.clone();
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            exec(&target, Transport::WebSocket, &["cat"], true).await
        }));
    }
    let mut sessions: Vec<Option<Session>> = Vec::new();
    let mut failed_open = 0;
    for t in tasks {
        match t.await? {
            Ok(s) => sessions.push(Some(s)),
            Err(e) => {
                if failed_open == 0 {
                    println!("scale: a session failed to open: {e:#}");
                }
                failed_open += 1;
                sessions.push(None);
            }
        }
    }
    let open_s = opened.elapsed().as_secs_f64();
    // A first byte through every session: the recordings and relays are set up and warm.
    let mut wrong_total = 0u64;
    let mut lost_sessions = 0usize;
    let mut handles = Vec::new();
    for (id, s) in sessions.into_iter().enumerate() {
        handles.push(tokio::spawn(async move {
            let mut s = s?;
            let wrong = exchange(&mut s, id, 0, 1, 1).await.unwrap_or(1);
            Some((s, wrong))
        }));
    }
    let mut live: Vec<(usize, Session)> = Vec::new();
    for (id, h) in handles.into_iter().enumerate() {
        if let Some((s, w)) = h.await? {
            wrong_total += w;
            if w > 0 {
                lost_sessions += 1;
            }
            live.push((id, s));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_all = stack.custody.usage();
    #[allow(clippy::cast_precision_loss, reason = "memory sizes")]
    let per_session_kib =
        (idle_all.rss.saturating_sub(idle_before.rss)) as f64 / 1024.0 / live.len().max(1) as f64;

    // The active share.
    let cpu_before = stack.custody.usage();
    let started = Instant::now();
    let mut handles = Vec::new();
    let mut rest = Vec::new();
    for (i, (id, s)) in live.into_iter().enumerate() {
        if i < active {
            handles.push(tokio::spawn(async move {
                let mut s = s;
                let w = exchange(&mut s, id, 1, per_active, 16 * 1024)
                    .await
                    .unwrap_or(per_active as u64);
                (id, s, w)
            }));
        } else {
            rest.push((id, s));
        }
    }
    let mut live = rest;
    for h in handles {
        let (id, s, w) = h.await?;
        wrong_total += w;
        if w > 0 {
            lost_sessions += 1;
        }
        live.push((id, s));
    }
    let active_s = started.elapsed().as_secs_f64();
    let cpu_after = stack.custody.usage();
    #[allow(clippy::cast_precision_loss, reason = "byte counts")]
    let active_mb = (active * per_active) as f64 / 1e6;
    let peak_rss = cpu_after.rss;

    // Every session: a final tagged block, then the end.
    let mut handles = Vec::new();
    for (id, s) in live {
        handles.push(tokio::spawn(async move {
            let mut s = s;
            let w = exchange(&mut s, id, 1 << 30, 1024, 1024)
                .await
                .unwrap_or(1024);
            let _ = s.1.close_stdin().await;
            let _ = tokio::time::timeout(Duration::from_secs(30), s.0.drain()).await;
            w
        }));
    }
    for h in handles {
        let w = h.await?;
        wrong_total += w;
        if w > 0 {
            lost_sessions += 1;
        }
    }
    #[allow(clippy::cast_precision_loss, reason = "byte counts")]
    let checked = (n - failed_open) * (1 + 1024) + active * per_active;
    let mut section = Section::new(
        "4. Scale: concurrent exec sessions through custody",
        &format!(
            "{n} sessions of `exec -i demo -- cat` over WebSocket held open at once through custody (each recorded), opened \
             32 at a time. Memory per idle session = (custody's RSS with all sessions open and idle − its RSS before) / \
             sessions. Then {active} of them ({} KiB each, 16 KiB writes) send a per-session byte pattern through `cat` \
             and back, and finally every session echoes a 1 KiB tagged block; every byte that comes back is compared. One \
             run.",
            per_active / 1024
        ),
        &["measure", "value"],
    );
    let rows: Vec<(&str, String)> = vec![
        (
            "sessions opened / failed",
            format!("{} / {failed_open} (in {open_s:.1} s)", n - failed_open),
        ),
        (
            "custody RSS before",
            format!("{:.1} MiB", mib(idle_before.rss)),
        ),
        (
            "custody RSS, all sessions idle",
            format!("{:.1} MiB", mib(idle_all.rss)),
        ),
        (
            "memory per idle session",
            format!("{per_session_kib:.0} KiB"),
        ),
        (
            "custody RSS after the active phase",
            format!("{:.1} MiB", mib(peak_rss)),
        ),
        (
            "active phase",
            format!(
                "{active} sessions, {active_mb:.1} MB each way in {active_s:.2} s; custody CPU {:.2} s ({:.1} ms/MB echoed)",
                cpu_after.cpu_s - cpu_before.cpu_s,
                (cpu_after.cpu_s - cpu_before.cpu_s) * 1e3 / active_mb.max(1e-9)
            ),
        ),
        ("bytes checked", format!("{checked}")),
        (
            "wrong or lost bytes / sessions affected",
            format!("{wrong_total} / {lost_sessions}"),
        ),
    ];
    for (k, v) in &rows {
        section.row(vec![(*k).to_owned(), v.clone()]);
    }
    report.json.insert(
        "scale".into(),
        json!({"sessions": n, "failed_open": failed_open, "rss_before": idle_before.rss,
            "rss_idle_all": idle_all.rss, "kib_per_idle_session": per_session_kib,
            "rss_after_active": peak_rss, "active_sessions": active, "active_bytes_each": per_active,
            "active_seconds": active_s, "active_cpu_s": cpu_after.cpu_s - cpu_before.cpu_s,
            "bytes_checked": checked, "wrong_bytes": wrong_total, "sessions_with_loss": lost_sessions}),
    );
    report.check(
        &format!("{n} concurrent sessions: under 100 KiB of gateway memory per idle session"),
        format!("{per_session_kib:.0} KiB"),
        Some(per_session_kib < 100.0 && failed_open == 0),
    );
    report.check(
        &format!("{n} concurrent sessions: no lost or corrupted frames"),
        format!(
            "{wrong_total} wrong bytes in {checked} checked, {failed_open} sessions failed to open"
        ),
        Some(wrong_total == 0 && failed_open == 0),
    );
    report.add(section);
    Ok(())
}

#[allow(clippy::cast_precision_loss, reason = "memory sizes")]
fn mib(b: u64) -> f64 {
    b as f64 / 1_048_576.0
}
