//! Scenario 10: what recordings in S3 cost per session-hour. A session recorded as cluster mode
//! records it (`SessionHandle` with a 250 ms flush interval, then `Spool` with its default 1 s
//! interval) writes 10 lines of output a second in real time to a real S3 server (versitygw
//! from the test fixture); its segment uploads (`SpoolStats`) are counted and extrapolated to
//! an hour. Then `Objects::put_recording` of a 10 MiB and a 100 MiB file is timed (one `PUT`,
//! and above the 64 MiB threshold a multipart upload and a server-side copy, each read back
//! and compared).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custody_cluster::objects::{ObjectStoreConfig, Objects};
use custody_cluster::spool::{Spool, SpoolConfig, SpoolStats};
use custody_fixtures::s3::S3;
use custody_recorder::model::{Event, EventKind, SessionStatus};
use custody_recorder::writer::{SessionHandle, WriterConfig};
use ed25519_dalek::SigningKey;
use serde_json::json;

use crate::Plan;
use crate::report::{Report, Section, Summary};

/// The price assumed per 1,000 `PUT`, `COPY`, `POST` or `LIST` requests (S3 Standard,
/// us-east-1, as AWS lists it) and per 1,000 `GET`s.
const PUT_PRICE_PER_1000: f64 = 0.005;
const GET_PRICE_PER_1000: f64 = 0.0004;
/// Lines of output a second.
const LINES_PER_SECOND: u64 = 10;

fn hash(i: u64) -> u64 {
    let mut z = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Line `i` of a service's log, as `kubectl logs -f` shows it (about 110 bytes).
fn line(i: u64, t_us: u64) -> Vec<u8> {
    let paths = ["/v1/orders", "/v1/users", "/healthz", "/v1/cart/items"];
    format!(
        "2026-03-02T10:{:02}:{:02}.{:03}Z INFO http request_id={:016x} method=GET path={} status={} latency_ms={}\r\n",
        t_us / 60_000_000 % 60,
        t_us / 1_000_000 % 60,
        t_us / 1000 % 1000,
        hash(i),
        paths[usize::try_from(hash(i + 1) % 4).unwrap_or(0)],
        [200, 200, 200, 404, 500][usize::try_from(hash(i + 2) % 5).unwrap_or(0)],
        hash(i + 3) % 900
    )
    .into_bytes()
}

/// What one recorded session uploaded.
struct Recorded {
    /// Uploads while it ran.
    live: SpoolStats,
    /// How long it ran (with one last spool interval).
    elapsed_s: f64,
    /// The sealed file's length.
    file_len: u64,
    /// How long `Spool::finish` took.
    finish_s: f64,
}

/// Records session `id` for `seconds`, its spool started `spool_delay` after the writer (the
/// gateway starts it at once), and finishes both.
async fn session(
    objects: &Objects,
    work: &Path,
    id: &str,
    seconds: u64,
    spool_delay: Option<Duration>,
) -> anyhow::Result<Recorded> {
    let key = Arc::new(SigningKey::from_bytes(&[7; 32]));
    let meta = custody_recorder::sample::session_meta(id, (120, 40));
    let writer = WriterConfig {
        flush_interval: Duration::from_millis(250),
        ..WriterConfig::default()
    };
    let handle = SessionHandle::open(work, meta, key, writer).await?;
    if let Some(delay) = spool_delay {
        tokio::time::sleep(delay).await;
    }
    let spool = Spool::start(
        objects.clone(),
        id.to_owned(),
        handle.path().to_owned(),
        SpoolConfig::default(),
    )?;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / 10);
    for i in 0..seconds * LINES_PER_SECOND {
        tick.tick().await;
        let t = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        handle
            .record(Event {
                time_us: t,
                kind: EventKind::Output(line(i, t)),
            })
            .await?;
    }
    // One more spool interval, so the last lines' flush is uploaded as it would be in a
    // session that goes on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let live = spool.stats();
    let elapsed_s = started.elapsed().as_secs_f64();
    handle.finish(SessionStatus::Complete).await?;
    let t = Instant::now();
    let file_len = spool.finish().await?;
    anyhow::ensure!(
        live.failed_uploads == 0,
        "{} segment uploads failed",
        live.failed_uploads
    );
    Ok(Recorded {
        live,
        elapsed_s,
        file_len,
        finish_s: t.elapsed().as_secs_f64(),
    })
}

/// `PUT`-class requests of a session-hour with `segments_h` segments: those, the last segment,
/// the recording (one `PUT` below the multipart threshold), and one `LIST` page per 1,000
/// segments to delete them (bulk deletes are free of charge).
fn puts(segments_h: f64) -> f64 {
    segments_h + 2.0 + (segments_h / 1000.0).ceil()
}

/// Their cost, with the one `GET` that reads the recording back.
fn cost(segments_h: f64) -> f64 {
    puts(segments_h) * PUT_PRICE_PER_1000 / 1000.0 + GET_PRICE_PER_1000 / 1000.0
}

/// Runs the scenario.
pub fn run(
    plan: &Plan,
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) -> anyhow::Result<()> {
    let s3 = S3::start()?;
    let config = ObjectStoreConfig::new(
        &s3.endpoint(),
        s3.bucket(),
        s3.region(),
        s3.access_key(),
        s3.secret_key(),
    );
    let objects = Objects::new(&config)?;
    let seconds = plan.object_seconds;
    let work = dir.join("objects");
    std::fs::create_dir_all(&work)?;
    // As the gateway does it, and with the spool's ticks half a flush interval after the
    // writer's flushes.
    let gateway = runtime.block_on(session(&objects, &work, "objects-a", seconds, None))?;
    let shifted = runtime.block_on(session(
        &objects,
        &work,
        "objects-b",
        seconds,
        Some(Duration::from_millis(125)),
    ))?;
    let per_hour = 3600.0 / gateway.elapsed_s;
    let segments_h = gateway.live.segments as f64 * per_hour;
    let segment_bytes_h = gateway.live.bytes as f64 * per_hour;
    // What the writer adds when the session ends (the last frame's close, the manifest).
    let tail = gateway.file_len.saturating_sub(gateway.live.bytes);
    let recording_bytes_h = segment_bytes_h + tail as f64;
    let (puts_h, cost_h) = (puts(segments_h), cost(segments_h));
    let shifted_h = shifted.live.segments as f64 * 3600.0 / shifted.elapsed_s;
    let mut section = Section::new(
        "10. Recordings in S3: requests and cost per session-hour",
        &format!(
            "A session recorded as cluster mode records it (`SessionHandle` with `flush_interval` 250 ms, then at once \
             `Spool::start` with `SpoolConfig::default()`: new bytes uploaded every 1 s, as one segment or more) \
             writing {LINES_PER_SECOND} lines of log output (about 110 bytes each) a second in real time for {seconds} s \
             ({:.1} s with one last interval) to versitygw {} on loopback (the test fixture); segments and bytes from \
             `SpoolStats`, extrapolated to an hour. `Spool::finish` (the last segment, the recording object read back \
             and compared, the segments deleted) took {:.2} s for this {}-byte file. Requests per hour = segments + 1 \
             last segment + 1 recording `PUT` + 1 `LIST` page per 1,000 segments (`PUT` class), and 1 `GET` to verify; \
             bulk deletes are free. Cost **assumes S3 Standard's ${PUT_PRICE_PER_1000} per 1,000 `PUT`/`LIST` \
             requests and ${GET_PRICE_PER_1000} per 1,000 `GET`s** (us-east-1 list prices), without storage or \
             transfer. An idle session (no new bytes in an interval) uploads nothing. The what-if row is the same \
             session with `Spool::start` called 125 ms after the writer opened (not what the gateway does). The last \
             rows time `Objects::put_recording` alone.",
            gateway.elapsed_s,
            s3.version(),
            gateway.finish_s,
            gateway.file_len,
        ),
        &["per session-hour", "value"],
    );
    section.row(vec![
        format!(
            "segment `PUT`s ({} in {:.1} s × 3600 s)",
            gateway.live.segments, gateway.elapsed_s
        ),
        format!("{segments_h:.0}"),
    ]);
    section.row(vec![
        "`PUT`-class requests in all".into(),
        format!("{puts_h:.0}"),
    ]);
    section.row(vec![
        "bytes uploaded as segments".into(),
        format!("{:.2} MB", segment_bytes_h / 1e6),
    ]);
    section.row(vec![
        format!(
            "bytes of the recording object (the segments' + {tail} written at the end; uploaded once more, then stored)"
        ),
        format!("{:.2} MB", recording_bytes_h / 1e6),
    ]);
    section.row(vec![
        format!("request cost at ${PUT_PRICE_PER_1000} per 1,000 `PUT`s"),
        format!("${cost_h:.4}"),
    ]);
    section.row(vec![
        "request cost of 1,000 sessions running around the clock for a month (720 h)".into(),
        format!("${:.0}", cost_h * 720.0 * 1000.0),
    ]);
    section.row(vec![
        format!(
            "what-if, spool ticks 125 ms after the writer's flushes: segment `PUT`s ({} in {:.1} s), cost",
            shifted.live.segments, shifted.elapsed_s
        ),
        format!("{shifted_h:.0}, ${:.4}", cost(shifted_h)),
    ]);
    let mut uploads = Vec::new();
    for mib in [10u64, 100] {
        let file = work.join(format!("random-{mib}.bin"));
        write_random(&file, mib << 20)?;
        let mut times = Vec::new();
        for run in 0..plan.runs {
            let key = format!("put-{mib}-{run}");
            let t = Instant::now();
            let len = runtime.block_on(objects.put_recording(&key, &file))?;
            times.push(t.elapsed().as_secs_f64());
            anyhow::ensure!(len == mib << 20, "stored {len} bytes of {mib} MiB");
            // Keep the fixture's disk small: the object is not needed any more.
            s3.request(
                "DELETE",
                &format!("/{}/{}", s3.bucket(), Objects::location(&key).display()),
                &[],
                b"",
            )?;
        }
        let _ = std::fs::remove_file(&file);
        let s = Summary::of(&times);
        section.row(vec![
            format!(
                "`put_recording` of a {mib} MiB file ({}), s; median (min–max) of {}",
                if mib << 20 > config.multipart_threshold {
                    "multipart upload, server-side copy, read back"
                } else {
                    "one `PUT`, read back"
                },
                plan.runs
            ),
            format!(
                "{} ({:.0} MiB/s)",
                s.show(2),
                mib as f64 / s.median.max(1e-9)
            ),
        ]);
        uploads.push(json!({"mib": mib, "s": s.json()}));
    }
    report.add(section);
    report.json.insert(
        "objects".into(),
        json!({"seconds": gateway.elapsed_s, "segments": gateway.live.segments,
            "segment_bytes": gateway.live.bytes, "recording_bytes": gateway.file_len,
            "finish_s": gateway.finish_s, "segments_per_hour": segments_h,
            "put_requests_per_hour": puts_h, "segment_bytes_per_hour": segment_bytes_h,
            "recording_bytes_per_hour": recording_bytes_h, "cost_per_hour_usd": cost_h,
            "put_price_per_1000_usd": PUT_PRICE_PER_1000,
            "shifted_spool": {"segments": shifted.live.segments, "seconds": shifted.elapsed_s,
                "segments_per_hour": shifted_h},
            "put_recording": uploads}),
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Writes `len` bytes that do not compress (a recording is zstd already).
fn write_random(path: &Path, len: u64) -> anyhow::Result<()> {
    let mut bytes = Vec::with_capacity(usize::try_from(len)?);
    let mut i = 0u64;
    while (bytes.len() as u64) < len {
        bytes.extend_from_slice(&hash(i).to_le_bytes());
        i += 1;
    }
    bytes.truncate(usize::try_from(len)?);
    std::fs::write(path, bytes)?;
    Ok(())
}
