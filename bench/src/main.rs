//! `custody-bench`: starts kube-sim, the real `custody` binary and nginx on loopback, runs each
//! scenario against every path it applies to (direct to kube-sim, through custody, through
//! nginx), and writes `docs/benchmarks.md` and `docs/benchmarks.json`.
//!
//! `cargo build --release && cargo run --release -p custody-bench -- --quick`
//!
//! The cluster scenarios (`pg-index`, `pg-audit`, `objects`) start their own PostgreSQL and
//! S3 servers (`custody_fixtures`) and need no custody binary.

#![allow(
    clippy::cast_precision_loss,
    clippy::too_many_lines,
    reason = "a benchmark: counts become floats for display, and each scenario reads top to bottom"
)]

mod api;
mod client;
mod exec;
mod index;
mod objects;
mod pg_index;
mod procs;
mod recorder;
mod report;
mod scale;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::client::Target;
use crate::report::Report;

/// Benchmarks custody against direct access and nginx; writes docs/benchmarks.md and .json.
#[derive(Debug, Parser)]
#[command(name = "custody-bench")]
struct Args {
    /// Short runs and reduced sizes (under two minutes); the report states the scale.
    #[arg(long)]
    quick: bool,
    /// The custody binary (default: `custody` next to this binary, else target/release).
    #[arg(long, value_name = "PATH")]
    custody: Option<PathBuf>,
    /// Where to write the markdown report.
    #[arg(long, default_value = "docs/benchmarks.md", value_name = "FILE")]
    out: PathBuf,
    /// Where to write the JSON results.
    #[arg(long, default_value = "docs/benchmarks.json", value_name = "FILE")]
    json: PathBuf,
    /// Only these scenarios (api, throughput, keystroke, scale, start, recorder, index,
    /// pg-index, pg-audit, objects).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Bytes of exec stdout per throughput run (default: 1 GiB, 32 MiB with --quick).
    #[arg(long, value_name = "BYTES")]
    exec_bytes: Option<u64>,
    /// Sessions and audit rows of the index scenario (default 1,000,000 and 10,000,000;
    /// 50,000 and 500,000 with --quick).
    #[arg(long, value_name = "N")]
    index_sessions: Option<u64>,
    /// Sessions of the pg-index scenario (default 10,000,000; 100,000 with --quick), reduced
    /// to fit the free disk space less 4 GiB.
    #[arg(long, value_name = "N")]
    pg_sessions: Option<u64>,
    /// Audit rows of the pg-index scenario (default 100,000,000; 1,000,000 with --quick).
    #[arg(long, value_name = "N")]
    pg_audit_rows: Option<u64>,
    /// Concurrent sessions of the scale scenario (default 1,000).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    sessions: usize,
    /// Runs per measurement (default 5, 3 with --quick).
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
}

/// Sizes and durations of one invocation.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `quick` or `full`.
    pub mode: &'static str,
    /// Runs per measurement.
    pub runs: usize,
    /// Duration of one API load run.
    pub api_window: Duration,
    /// Exec stdout bytes per throughput run.
    pub exec_bytes: u64,
    /// Keystrokes per run.
    pub keystrokes: usize,
    /// Concurrent sessions of the scale scenario.
    pub sessions: usize,
    /// Sessions in the index.
    pub index_sessions: u64,
    /// Audit rows in the index.
    pub audit_rows: u64,
    /// Sessions in the PostgreSQL catalog.
    pub pg_sessions: u64,
    /// Audit rows in the PostgreSQL catalog.
    pub pg_audit_rows: u64,
    /// Seconds of the recorded session whose uploads to S3 are counted.
    pub object_seconds: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custody-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let quick = args.quick;
    let index_sessions = args
        .index_sessions
        .unwrap_or(if quick { 50_000 } else { 1_000_000 });
    let plan = Plan {
        mode: if quick { "quick" } else { "full" },
        runs: args.runs.unwrap_or(if quick { 3 } else { 5 }).max(1),
        api_window: Duration::from_millis(if quick { 500 } else { 5000 }),
        exec_bytes: args
            .exec_bytes
            .unwrap_or(if quick { 32 << 20 } else { 1 << 30 }),
        keystrokes: if quick { 300 } else { 2000 },
        sessions: args.sessions,
        index_sessions,
        audit_rows: index_sessions * 10,
        pg_sessions: args
            .pg_sessions
            .unwrap_or(if quick { 100_000 } else { 10_000_000 }),
        pg_audit_rows: args
            .pg_audit_rows
            .unwrap_or(if quick { 1_000_000 } else { 100_000_000 }),
        object_seconds: if quick { 10 } else { 60 },
    };
    let wants = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let needs_stack = ["api", "throughput", "keystroke", "scale", "start"]
        .iter()
        .any(|s| wants(s));
    // Only the scenarios that run it need the gateway's binary.
    let custody_bin = if needs_stack {
        Some(find_custody(args.custody.as_deref())?)
    } else {
        None
    };

    let mut report = Report {
        header: header(&plan, custody_bin.as_deref()),
        ..Report::default()
    };
    for line in &report.header {
        println!("{line}");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::Builder::new().prefix("custody-bench").tempdir()?;
    if let Some(custody_bin) = &custody_bin {
        runtime.block_on(async {
            let stack = procs::start(dir.path(), custody_bin).await?;
            if let Some(why) = &stack.nginx_missing {
                println!("nginx: not measured: {why}");
                report
                    .header
                    .push(format!("nginx: **not measured**: {why}"));
            }
            let targets = targets(&stack)?;
            if wants("api") {
                let t = Instant::now();
                api::run(&plan, &stack, &targets, &mut report).await?;
                report.timing("api", t);
            }
            if wants("throughput") {
                let t = Instant::now();
                exec::throughput(&plan, &stack, &targets, &mut report).await?;
                report.timing("throughput", t);
            }
            if wants("keystroke") {
                let t = Instant::now();
                exec::keystrokes(&plan, &targets, &mut report).await?;
                report.timing("keystroke", t);
            }
            if wants("start") {
                let t = Instant::now();
                exec::start_rate(&plan, &stack, &targets, &mut report).await?;
                report.timing("start", t);
            }
            if wants("scale") {
                let t = Instant::now();
                scale::run(&plan, &stack, &targets, &mut report).await?;
                report.timing("scale", t);
            }
            stack.sim.shutdown().await;
            anyhow::Ok(())
        })?;
        // Free the disk for the index: the cluster's files and custody's recordings.
        for sub in ["cluster", "data", "nginx"] {
            let _ = std::fs::remove_dir_all(dir.path().join(sub));
        }
    }
    if wants("recorder") {
        let t = Instant::now();
        recorder::run(&plan, dir.path(), &runtime, &mut report)?;
        report.timing("recorder", t);
    }
    if wants("index") {
        let t = Instant::now();
        index::run(&plan, dir.path(), &mut report)?;
        report.timing("index", t);
    }
    if wants("pg-index") {
        let t = Instant::now();
        pg_index::run(&plan, dir.path(), &runtime, &mut report)?;
        report.timing("pg-index", t);
    }
    if wants("pg-audit") {
        let t = Instant::now();
        pg_index::audit(&plan, dir.path(), &runtime, &mut report)?;
        report.timing("pg-audit", t);
    }
    if wants("objects") {
        let t = Instant::now();
        objects::run(&plan, dir.path(), &runtime, &mut report)?;
        report.timing("objects", t);
    }
    report.header.push(format!(
        "the whole run took {:.0} s ({})",
        started.elapsed().as_secs_f64(),
        report.timings.join(", ")
    ));
    report.write(&args.out, &args.json)?;
    println!(
        "\nwrote {} and {} in {:.0} s",
        args.out.display(),
        args.json.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The three paths (nginx only when it runs).
pub struct Targets {
    /// Straight to kube-sim.
    pub direct: Target,
    /// Through the custody process.
    pub custody: Target,
    /// Through nginx.
    pub nginx: Option<Target>,
}

impl Targets {
    /// direct, custody, nginx (when running), in that order.
    pub fn all(&self) -> Vec<&Target> {
        let mut v = vec![&self.direct, &self.custody];
        if let Some(n) = &self.nginx {
            v.push(n);
        }
        v
    }
}

fn targets(stack: &procs::Stack) -> anyhow::Result<Targets> {
    let sim_ca = std::fs::read_to_string(stack.sim.dir().join("ca.crt"))?;
    let tls = client::connector(&[sim_ca, stack.front_ca.clone()])?;
    Ok(Targets {
        direct: Target {
            name: "direct",
            addr: stack.sim.addr(),
            prefix: String::new(),
            token: stack.sim_token.clone(),
            tls: tls.clone(),
        },
        custody: Target {
            name: "custody",
            addr: stack.custody_addr,
            prefix: "/clusters/bench".to_owned(),
            token: stack.issuer.id_token_for("alice")?,
            tls: tls.clone(),
        },
        nginx: stack.nginx.as_ref().map(|(_, addr)| Target {
            name: "nginx",
            addr: *addr,
            prefix: String::new(),
            token: stack.sim_token.clone(),
            tls,
        }),
    })
}

/// `--custody`, else `custody` beside this binary (same profile), else target/release.
fn find_custody(arg: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = arg {
        anyhow::ensure!(p.exists(), "--custody {}: no such file", p.display());
        return Ok(p.to_owned());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the bench binary has no directory")?;
    let candidates = [dir.join("custody"), dir.join("../release/custody")];
    let found = candidates.iter().find(|p| p.exists()).cloned();
    let Some(found) = found else {
        anyhow::bail!(
            "no custody binary next to {}; build it first: `cargo build --release --bin custody` (or pass --custody PATH)",
            exe.display()
        );
    };
    if !found.to_string_lossy().contains("release") {
        println!(
            "warning: {} is not a release build; numbers of a debug gateway mean little (`cargo build --release --bin custody`)",
            found.display()
        );
    }
    Ok(found)
}

fn header(plan: &Plan, custody_bin: Option<&Path>) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown CPU", |m| m.trim_start_matches([' ', '\t', ':']))
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_owned(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        });
    let nginx = procs::nginx_binary()
        .and_then(|b| std::process::Command::new(b).arg("-v").output().ok())
        .map_or("not installed".to_owned(), |o| {
            String::from_utf8_lossy(&o.stderr).trim().to_owned()
        });
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    let commit = if dirty {
        format!("{commit} with uncommitted changes in the working tree")
    } else {
        commit
    };
    #[allow(clippy::cast_precision_loss, reason = "a memory size for display")]
    let mem_gib = mem_kb as f64 / 1024.0 / 1024.0;
    vec![
        format!(
            "mode: **{}** ({} runs per measurement; sizes stated per scenario)",
            plan.mode, plan.runs
        ),
        format!("machine: {model}, {cores} cores, {mem_gib:.1} GiB, Linux {kernel}"),
        format!(
            "commit: {commit}; custody binary: {}; this harness: {} build",
            custody_bin.map_or("not used".to_owned(), |b| shown_path(b)
                .display()
                .to_string()),
            if cfg!(debug_assertions) {
                "debug (dependencies at opt-level 2)"
            } else {
                "release"
            }
        ),
        format!("nginx: {nginx}"),
        format!(
            "date: {}",
            std::process::Command::new("date")
                .args(["-u", "+%Y-%m-%d %H:%M UTC"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        ),
    ]
}

/// A path as the report shows it: relative to the working directory when it is inside it
/// (`target/release/custody`), else its last two components, so a report names no machine's
/// directories.
fn shown_path(path: &std::path::Path) -> std::path::PathBuf {
    if let Ok(cwd) = std::env::current_dir()
        && let Ok(inside) = path.strip_prefix(&cwd)
    {
        return inside.to_owned();
    }
    let mut tail: Vec<_> = path.components().rev().take(2).collect();
    tail.reverse();
    tail.iter().collect()
}
