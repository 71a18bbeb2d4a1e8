//! Scenario 1: API requests. A small GET (one pod) and a LIST of 500 pods, at concurrency 1
//! and 64 (one keep-alive HTTP/1.1 connection per client), for a fixed time per run:
//! requests per second, p50 and p99 latency, and the CPU the gateway process spent per request.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;

use crate::client::Target;
use crate::procs::{Stack, Usage};
use crate::report::{Report, Section, Summary, percentile, ratio};
use crate::{Plan, Targets};

/// The LIST size.
const PODS: usize = 500;
const GET_PATH: &str = "/api/v1/namespaces/default/pods/demo";
const LIST_PATH: &str = "/api/v1/namespaces/default/pods?labelSelector=app%3Dbench";

/// Creates the 500 pods (each a `sleep` process in kube-sim) the LIST returns.
async fn seed(direct: &Target) -> anyhow::Result<()> {
    let mut http = direct.http().await?;
    for i in 0..PODS {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("bench-{i:03}"), "labels": {"app": "bench", "tier": "web"},
                         "annotations": {"bench.custody.dev/purpose": "a LIST of 500 pods"}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": "registry.example/app:1.0",
                "command": ["sleep", "3600"], "ports": []}]}
        });
        http.request(
            http::Method::POST,
            "/api/v1/namespaces/default/pods",
            Bytes::from(serde_json::to_vec(&pod)?),
        )
        .await
        .with_context(|| format!("creating pod bench-{i:03}"))?;
    }
    Ok(())
}

/// One load run: latencies (ms, sorted), requests per second, response bytes.
struct Run {
    rps: f64,
    p50: f64,
    p99: f64,
    cpu_per_req_us: Option<f64>,
}

async fn load(
    target: &Target,
    path: &'static str,
    concurrency: usize,
    window: Duration,
    gateway: Option<&dyn Fn() -> Usage>,
) -> anyhow::Result<Run> {
    let mut conns = Vec::new();
    for _ in 0..concurrency {
        let mut c = target.http().await?;
        c.get(GET_PATH).await?; // warm the connection (and custody's upstream pool)
        conns.push(c);
    }
    let before = gateway.map(|g| g());
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = Vec::new();
    for mut c in conns {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                c.get(path).await?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = gateway.map(|g| g());
    all.sort_by(f64::total_cmp);
    #[allow(clippy::cast_precision_loss, reason = "request counts")]
    let n = all.len() as f64;
    Ok(Run {
        rps: n / elapsed,
        p50: percentile(&all, 50.0),
        p99: percentile(&all, 99.0),
        cpu_per_req_us: before
            .zip(after)
            .map(|(b, a)| (a.cpu_s - b.cpu_s) * 1e6 / n),
    })
}

/// Runs the scenario and adds its table and target checks.
pub async fn run(
    plan: &Plan,
    stack: &Stack,
    targets: &Targets,
    report: &mut Report,
) -> anyhow::Result<()> {
    println!("api: creating {PODS} pods");
    seed(&targets.direct).await?;
    let mut section = Section::new(
        "1. API requests",
        &format!(
            "A GET of one pod and a LIST of {PODS} pods (label selector; about {} KiB of JSON), each client on its own \
             keep-alive HTTP/1.1 TLS connection, {:.1} s per run, {} runs; median (min–max) of the runs. CPU/request is the \
             gateway process's user+system time (custody, or nginx's master and worker) over the run divided by the \
             requests; kube-sim and the load generator share the same two cores.",
            "…",
            plan.api_window.as_secs_f64(),
            plan.runs
        ),
        &[
            "request",
            "conc.",
            "path",
            "req/s",
            "p50 ms",
            "p99 ms",
            "gateway CPU µs/req",
            "req/s vs direct",
        ],
    );
    let mut json_rows = Vec::new();
    let mut list_bytes = 0;
    for (label, path) in [("GET pod", GET_PATH), ("LIST 500 pods", LIST_PATH)] {
        if list_bytes == 0 && path == LIST_PATH {
            list_bytes = targets.direct.http().await?.get(LIST_PATH).await?;
        }
        for concurrency in [1usize, 64] {
            let mut direct_rps = 0.0;
            let mut direct_p50 = 0.0;
            let mut nginx_rps = None;
            let mut custody_rps = 0.0;
            for target in targets.all() {
                let custody_usage = || stack.custody.usage();
                let nginx_usage = || {
                    stack
                        .nginx
                        .as_ref()
                        .map(|(p, _)| p.usage())
                        .unwrap_or_default()
                };
                let gateway: Option<&dyn Fn() -> Usage> = match target.name {
                    "custody" => Some(&custody_usage),
                    "nginx" => Some(&nginx_usage),
                    _ => None,
                };
                let mut runs = Vec::new();
                for _ in 0..plan.runs {
                    runs.push(load(target, path, concurrency, plan.api_window, gateway).await?);
                }
                let rps = Summary::of(&runs.iter().map(|r| r.rps).collect::<Vec<_>>());
                let p50 = Summary::of(&runs.iter().map(|r| r.p50).collect::<Vec<_>>());
                let p99 = Summary::of(&runs.iter().map(|r| r.p99).collect::<Vec<_>>());
                let cpu: Vec<f64> = runs.iter().filter_map(|r| r.cpu_per_req_us).collect();
                let cpu = (!cpu.is_empty()).then(|| Summary::of(&cpu));
                match target.name {
                    "direct" => {
                        direct_rps = rps.median;
                        direct_p50 = p50.median;
                    }
                    "nginx" => nginx_rps = Some(rps.median),
                    _ => {}
                }
                section.row(vec![
                    label.to_owned(),
                    concurrency.to_string(),
                    target.name.to_owned(),
                    rps.show(0),
                    p50.show(3),
                    p99.show(3),
                    cpu.map_or("—".to_owned(), |c| c.show(0)),
                    ratio(rps.median, direct_rps),
                ]);
                json_rows.push(json!({
                    "request": label, "concurrency": concurrency, "path": target.name,
                    "rps": rps.json(), "p50_ms": p50.json(), "p99_ms": p99.json(),
                    "gateway_cpu_us_per_request": cpu.map(|c| c.json()),
                }));
                if target.name == "custody" {
                    if concurrency == 1 {
                        let added = p50.median - direct_p50;
                        report.check(
                            &format!("{label}, concurrency 1: p50 added by custody under 0.3 ms"),
                            format!(
                                "{added:+.3} ms ({:.3} vs {:.3} direct)",
                                p50.median, direct_p50
                            ),
                            Some(added < 0.3),
                        );
                    }
                    custody_rps = rps.median;
                }
            }
            if concurrency == 64 {
                let measured = nginx_rps.map(|n| custody_rps / n);
                report.check(
                    &format!("{label}, concurrency 64: custody throughput at least 0.8 of nginx's"),
                    measured.map_or("nginx not measured".to_owned(), |r| {
                        format!(
                            "{r:.2} ({custody_rps:.0} vs {:.0} req/s)",
                            nginx_rps.unwrap_or(0.0)
                        )
                    }),
                    measured.map(|r| r >= 0.8),
                );
            }
        }
    }
    section.note = section
        .note
        .replace("about … KiB", &format!("about {} KiB", list_bytes / 1024));
    let sync = fdatasync_ms(&stack.data_dir)?;
    let _ = write!(
        section.note,
        " For scale: one append of 1 KiB plus `fdatasync` on the disk of custody's data directory takes {} ms \
         (median (min–max) of 200).",
        sync.show(3)
    );
    report.json.insert("fdatasync_ms".into(), sync.json());
    report.json.insert("api".into(), json!(json_rows));
    report.add(section);
    Ok(())
}

/// The cost of one durable append on this disk (what custody's strict audit pays per write).
fn fdatasync_ms(dir: &Path) -> anyhow::Result<Summary> {
    let path = dir.join("bench-fsync.tmp");
    let mut file = std::fs::File::create(&path)?;
    let line = [b'x'; 1024];
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        file.write_all(&line)?;
        file.sync_data()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Summary::of(&times))
}
