//! The reference Grafana dashboard (`deploy/grafana/custody.json`) and Prometheus alert rules
//! (`deploy/prometheus/alerts.yaml`) use only metrics the gateway exposes: a real gateway answers
//! kubectl's requests and an exec session, its admin listener's `/metrics` is read over HTTP, and
//! every `custody_` name in the dashboard's queries and the rules' expressions must be a series
//! there, as the exposition writes it (`_total`, `_bucket`, `_sum`, `_count` included).

#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use custody::config::LimitsConfig;
use env::{Env, Options, ok};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every `custody_` metric name in `text` (a `PromQL` expression).
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("custody_") {
        let start = at + found;
        let mut end = start + "custody_".len();
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !preceded {
            names.push(text[start..end].to_owned());
        }
        at = end;
    }
    names
}

/// The `PromQL` of a Grafana dashboard: each panel target's `expr` and each template
/// variable's query.
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(q)) => out.push(q.clone()),
                    ("query", serde_json::Value::String(q)) if q.contains('(') => {
                        out.push(q.clone());
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                dashboard_queries(v, out);
            }
        }
        _ => {}
    }
}

/// The alert rules' expressions; every rule must have a name, an expression and a severity.
fn alert_expressions(rules: &serde_yaml::Value) -> Vec<String> {
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let expr = rule["expr"].as_str().unwrap();
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "{name} has no severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name} has no summary"
            );
            out.push(expr.to_owned());
        }
    }
    out
}

/// The metric names of the samples in a text exposition, checking each line's shape.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "not a sample: {line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(!name.is_empty(), "not a sample: {line}");
        names.insert(name.to_owned());
    }
    names
}

/// The value of the series `series` (name and labels, as written) in a text exposition.
fn series(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `GET path` on the admin listener at `addr`: the response's head and body.
async fn admin_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

#[test]
fn every_metric_the_dashboard_and_alerts_use_is_exposed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("deploy/grafana/custody.json")).unwrap())
            .unwrap();
    let rules: serde_yaml::Value =
        serde_yaml::from_slice(&std::fs::read(root.join("deploy/prometheus/alerts.yaml")).unwrap())
            .unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    let alerts = alert_expressions(&rules);
    assert!(queries.len() >= 20, "{queries:?}");
    assert!(alerts.len() >= 6, "{alerts:?}");
    assert!(
        alerts.iter().any(|e| e.contains("up{")),
        "no alert for a gateway that is down"
    );
    let used: BTreeSet<String> = queries
        .iter()
        .chain(&alerts)
        .flat_map(|q| metric_names(q))
        .collect();
    assert!(used.len() >= 20, "{used:?}");

    let env = Env::start(Options {
        recording: true,
        ..Options::default()
    });
    let k = env.kubectl("1.32");
    ok(&k.run(["--context", "alice", "get", "pods"]).unwrap());
    let hi = ok(&k
        .run(["--context", "alice", "exec", "demo", "--", "echo", "hi"])
        .unwrap());
    assert_eq!(hi, "hi\n");

    let listener = env.rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    env.rt.spawn(custody::server::serve_admin(
        listener,
        custody::server::Health::new(),
        env.metrics.clone(),
        custody::server::ListenerLimits::admin(&LimitsConfig::default()),
        std::future::pending(),
    ));
    // The session is counted as ended once the gateway has sealed its recording, a moment
    // after kubectl returns.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (head, text) = loop {
        let (head, text) = env.rt.block_on(admin_get(addr, "/metrics"));
        // A scrape is not one instant: the gauge and the histogram may be read on either side
        // of the session's end.
        let ended = series(
            &text,
            "custody_session_duration_seconds_count{kind=\"exec\"}",
        ) == Some(1.0);
        if ended && series(&text, "custody_sessions_live{kind=\"exec\"}") == Some(0.0) {
            break (head, text);
        }
        assert!(
            Instant::now() < deadline,
            "the session never ended:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );

    let exposed = sample_names(&text);
    let missing: Vec<&String> = used.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts use metrics /metrics does not have: {missing:?}\n{text}"
    );

    // What the requests and the session did shows in the new series.
    let positive = |s: &str| series(&text, s).is_some_and(|v| v > 0.0);
    for s in [
        "custody_request_duration_seconds_count{verb=\"list\",code=\"200\"}",
        "custody_upstream_duration_seconds_count{cluster=\"sim\"}",
        "custody_audit_batch_events_count",
        "custody_audit_write_duration_seconds_count",
        "custody_recording_events_total",
        "custody_recording_bytes_total",
        "custody_connections_max{listener=\"admin\"}",
    ] {
        assert!(positive(s), "{s} is not above 0:\n{text}");
    }
    assert_eq!(
        series(&text, "custody_recording_events_lost_total"),
        Some(0.0)
    );
    assert_eq!(
        series(&text, "custody_audit_write_failures_total"),
        Some(0.0)
    );
    assert_eq!(
        series(&text, "custody_console_logins_total{outcome=\"failed\"}"),
        Some(0.0)
    );
}

#[test]
fn names_are_read_from_promql() {
    assert_eq!(
        metric_names(
            "sum(rate(custody_requests_total{code=\"200\"}[5m])) / \
             histogram_quantile(0.99, rate(custody_request_duration_seconds_bucket[5m])) \
             + my_custody_x + up"
        ),
        [
            "custody_requests_total",
            "custody_request_duration_seconds_bucket"
        ]
    );
}
