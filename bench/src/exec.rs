//! Scenarios 2, 3 and 5: exec throughput (stdout of `head -c N /dev/urandom` through WebSocket
//! and SPDY), the keystroke round trip (one byte into `cat` and its echo), and the rate at
//! which exec sessions start.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{Target, Transport, exec};
use crate::procs::{Stack, Usage};
use crate::report::{Report, Section, Summary, percentile, ratio};
use crate::{Plan, Targets};

fn gateway_usage(stack: &Stack, target: &Target) -> Option<Usage> {
    match target.name {
        "custody" => Some(stack.custody.usage()),
        "nginx" => stack.nginx.as_ref().map(|(p, _)| p.usage()),
        _ => None,
    }
}

/// Removes finished recordings so full-size runs do not fill the disk.
fn clear_recordings(stack: &Stack) {
    let dir = stack.data_dir.join("recordings");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Scenario 2.
pub async fn throughput(
    plan: &Plan,
    stack: &Stack,
    targets: &Targets,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = plan.exec_bytes;
    let count = n.to_string();
    let command = ["head", "-c", count.as_str(), "/dev/urandom"];
    #[allow(clippy::cast_precision_loss, reason = "byte counts")]
    let mb = n as f64 / 1e6;
    let mut section = Section::new(
        "2. Exec throughput",
        &format!(
            "`exec demo -- head -c {n} /dev/urandom` ({:.0} MiB of random, incompressible stdout per run; the issue asks \
             for 1 GiB{}), read by an in-process client built from custody's codecs; every byte counted. custody always \
             records (its configuration has no switch to turn recording off for exec), so the recording-off baselines are \
             direct and nginx, which record nothing. {} runs; median (min–max).",
            n as f64 / 1_048_576.0,
            if n < 1 << 30 {
                ", reduced in this mode"
            } else {
                ""
            },
            plan.runs
        ),
        &[
            "transport",
            "path",
            "recording",
            "MB/s",
            "gateway CPU ms/MB",
            "vs direct",
        ],
    );
    let mut rows = Vec::new();
    for transport in [Transport::WebSocket, Transport::Spdy] {
        let mut direct = 0.0;
        for target in targets.all() {
            let mut speeds = Vec::new();
            let mut cpus = Vec::new();
            for _ in 0..plan.runs {
                let before = gateway_usage(stack, target);
                let started = Instant::now();
                let (mut rd, _wr) = exec(target, transport, &command, false).await?;
                let got = rd.drain().await?;
                let elapsed = started.elapsed().as_secs_f64();
                let after = gateway_usage(stack, target);
                anyhow::ensure!(
                    got == n,
                    "{} {}: {got} of {n} bytes arrived",
                    target.name,
                    transport.name()
                );
                speeds.push(mb / elapsed);
                if let (Some(b), Some(a)) = (before, after) {
                    cpus.push((a.cpu_s - b.cpu_s) * 1e3 / mb);
                }
                if target.name == "custody" && n >= 256 << 20 {
                    // Large recordings: let custody seal and index this one, then delete it.
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    clear_recordings(stack);
                }
            }
            let speed = Summary::of(&speeds);
            let cpu = (!cpus.is_empty()).then(|| Summary::of(&cpus));
            if target.name == "direct" {
                direct = speed.median;
            }
            section.row(vec![
                transport.name().to_owned(),
                target.name.to_owned(),
                if target.name == "custody" {
                    "on"
                } else {
                    "off"
                }
                .to_owned(),
                speed.show(0),
                cpu.map_or("—".to_owned(), |c| c.show(2)),
                ratio(speed.median, direct),
            ]);
            rows.push(json!({"transport": transport.name(), "path": target.name,
                "recording": target.name == "custody", "bytes": n,
                "mb_per_s": speed.json(), "gateway_cpu_ms_per_mb": cpu.map(|c| c.json())}));
            if target.name == "custody" {
                let r = speed.median / direct;
                report.check(
                    &format!(
                        "exec throughput, {}, recording on: at least 0.9 of direct",
                        transport.name()
                    ),
                    format!("{r:.2} ({:.0} vs {direct:.0} MB/s)", speed.median),
                    Some(r >= 0.9),
                );
            }
        }
    }
    report.json.insert("exec_throughput".into(), json!(rows));
    report.add(section);
    Ok(())
}

/// One run of keystrokes into `cat`: sorted round trips in ms.
async fn keystroke_run(target: &Target, count: usize) -> anyhow::Result<Vec<f64>> {
    let (mut rd, mut wr) = exec(target, Transport::WebSocket, &["cat"], true).await?;
    let mut buf = Vec::new();
    wr.send(b"w").await?;
    rd.read_exact(1, &mut buf).await?;
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let key = b'a' + u8::try_from(i % 26)?;
        let t = Instant::now();
        wr.send(&[key]).await?;
        rd.read_exact(1, &mut buf).await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(buf == [key], "{}: echoed {buf:?}, typed {key}", target.name);
    }
    wr.close_stdin().await?;
    let _ = rd.drain().await;
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// Scenario 3.
pub async fn keystrokes(plan: &Plan, targets: &Targets, report: &mut Report) -> anyhow::Result<()> {
    let mut section = Section::new(
        "3. Interactive latency (keystroke echo)",
        &format!(
            "One byte into `exec -i demo -- cat` over WebSocket and its echo back, {} keystrokes per run after one warm-up \
             byte, {} runs; p50 and p99 of each run, median (min–max) over the runs.",
            plan.keystrokes, plan.runs
        ),
        &["path", "p50 ms", "p99 ms", "p50 added", "p99 added"],
    );
    let mut rows = Vec::new();
    let (mut d50, mut d99) = (0.0, 0.0);
    for target in targets.all() {
        let (mut p50, mut p99) = (Vec::new(), Vec::new());
        for _ in 0..plan.runs {
            let t = keystroke_run(target, plan.keystrokes).await?;
            p50.push(percentile(&t, 50.0));
            p99.push(percentile(&t, 99.0));
        }
        let (p50, p99) = (Summary::of(&p50), Summary::of(&p99));
        if target.name == "direct" {
            (d50, d99) = (p50.median, p99.median);
        }
        section.row(vec![
            target.name.to_owned(),
            p50.show(3),
            p99.show(3),
            format!("{:+.3}", p50.median - d50),
            format!("{:+.3}", p99.median - d99),
        ]);
        rows.push(json!({"path": target.name, "p50_ms": p50.json(), "p99_ms": p99.json()}));
        if target.name == "custody" {
            let added = p99.median - d99;
            report.check(
                "keystroke round trip: p99 added by custody under 1 ms",
                format!("{added:+.3} ms ({:.3} vs {d99:.3} direct)", p99.median),
                Some(added < 1.0),
            );
        }
    }
    report.json.insert("keystroke".into(), json!(rows));
    report.add(section);
    Ok(())
}

/// Starts sessions of `true` with `concurrency` clients for `window`: (sessions per second,
/// sorted start latencies in ms, failures).
async fn start_level(
    target: &Target,
    concurrency: usize,
    window: Duration,
) -> anyhow::Result<(f64, Vec<f64>, usize)> {
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut failed) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                match exec(&target, Transport::WebSocket, &["true"], false).await {
                    Ok((mut rd, _wr)) => {
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                        let _ = rd.drain().await;
                    }
                    Err(_) => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await?;
        all.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    #[allow(clippy::cast_precision_loss, reason = "session counts")]
    let rate = all.len() as f64 / elapsed;
    Ok((rate, all, failed))
}

/// Scenario 5.
pub async fn start_rate(
    plan: &Plan,
    stack: &Stack,
    targets: &Targets,
    report: &mut Report,
) -> anyhow::Result<()> {
    let window = Duration::from_millis(if plan.mode == "quick" { 1000 } else { 5000 });
    let levels = [1usize, 4, 16, 64];
    let mut section = Section::new(
        "5. Session start rate",
        &format!(
            "Clients each start `exec demo -- true` over WebSocket back to back for {:.1} s per level (one run per level); \
             start latency is connect + TLS + upgrade until the 101. Through custody every session is also audited \
             (strict mode: durable before forwarding) and gets a signed recording file. The knee is the first level whose \
             p50 is more than twice the single-client p50.",
            window.as_secs_f64()
        ),
        &[
            "path",
            "clients",
            "sessions/s",
            "p50 ms",
            "p99 ms",
            "failed",
            "gateway CPU ms/session",
        ],
    );
    let mut rows = Vec::new();
    for target in targets.all() {
        let mut base = None;
        let mut best_before_knee: f64 = 0.0;
        let mut peak: f64 = 0.0;
        let mut knee = None;
        for &c in &levels {
            let before = gateway_usage(stack, target);
            let (rate, lat, failed) = start_level(target, c, window).await?;
            let after = gateway_usage(stack, target);
            let p50 = percentile(&lat, 50.0);
            let p99 = percentile(&lat, 99.0);
            #[allow(clippy::cast_precision_loss, reason = "session counts")]
            let cpu = before
                .zip(after)
                .map(|(b, a)| (a.cpu_s - b.cpu_s) * 1e3 / lat.len().max(1) as f64);
            let b = *base.get_or_insert(p50);
            if knee.is_none() && p50 > 2.0 * b {
                knee = Some(c);
            }
            peak = peak.max(rate);
            if knee.is_none() {
                best_before_knee = best_before_knee.max(rate);
            }
            section.row(vec![
                target.name.to_owned(),
                c.to_string(),
                format!("{rate:.0}"),
                format!("{p50:.2}"),
                format!("{p99:.2}"),
                failed.to_string(),
                cpu.map_or("—".to_owned(), |c| format!("{c:.2}")),
            ]);
            rows.push(
                json!({"path": target.name, "clients": c, "sessions_per_s": rate,
                "p50_ms": p50, "p99_ms": p99, "failed": failed, "gateway_cpu_ms_per_session": cpu}),
            );
        }
        section.row(vec![
            target.name.to_owned(),
            "**knee**".to_owned(),
            format!("**{best_before_knee:.0}** before it (peak {peak:.0})"),
            knee.map_or("none up to 64".to_owned(), |k| format!("at {k} clients")),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    report.json.insert("start_rate".into(), json!(rows));
    report.add(section);
    Ok(())
}
