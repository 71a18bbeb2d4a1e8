//! The gateway's Prometheus metrics, in the text exposition format (version 0.0.4): requests by
//! cluster, verb and code, authentication failures, audit write failures and drops, upstream
//! failures, requests in flight, connections per listener, and recording events lost.
//! Hand-written: a few counters do not need a metrics framework.
//!
//! Every label value comes from a fixed set: a configured cluster name or `unknown`, a verb
//! custody knows or `unknown`, a status code. Nothing a client sends, least of all before it is
//! authenticated, can add a series (each would live as long as the process).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use custody_recorder::writer::LostCounter;

/// The gateway's counters. Shared as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, &'static str, u16), u64>>,
    /// The configured cluster names: the only `cluster` label values besides `unknown` and
    /// the empty one (no `/clusters/` prefix).
    clusters: Mutex<BTreeSet<String>>,
    authn_failures: AtomicU64,
    audit_write_failures: AtomicU64,
    audit_dropped_rate_limited: AtomicU64,
    upstream_failures: AtomicU64,
    in_flight: AtomicU64,
    recording_events_lost: AtomicU64,
    body_too_large: AtomicU64,
    /// Per listener: connections open now, and connections closed at once for the cap.
    connections: [ListenerCounters; 2],
}

#[derive(Debug, Default)]
struct ListenerCounters {
    open: AtomicU64,
    refused: AtomicU64,
}

/// A listener, as the `listener` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The HTTPS front door.
    Gateway,
    /// The admin listener (`/healthz`, `/metrics`).
    Admin,
}

impl Listener {
    const ALL: [Listener; 2] = [Listener::Gateway, Listener::Admin];

    fn label(self) -> &'static str {
        match self {
            Listener::Gateway => "gateway",
            Listener::Admin => "admin",
        }
    }

    fn index(self) -> usize {
        match self {
            Listener::Gateway => 0,
            Listener::Admin => 1,
        }
    }
}

/// The `cluster` label of a cluster that is not configured.
pub const UNKNOWN: &str = "unknown";

/// The verbs custody's classification gives (kube-apiserver's resource verbs, and the
/// lowercase methods of non-resource requests); any other becomes `unknown`.
const VERBS: &[&str] = &[
    "",
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "post",
    "put",
    "head",
    "options",
    "connect",
];

fn verb_label(verb: &str) -> &'static str {
    VERBS
        .iter()
        .find(|v| **v == verb)
        .copied()
        .unwrap_or(UNKNOWN)
}

impl Metrics {
    /// New, all zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Declares the configured clusters: the `cluster` label takes these names, and
    /// [`UNKNOWN`] for any other.
    pub fn serve_clusters<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        lock(&self.clusters).extend(names.into_iter().map(str::to_owned));
    }

    /// Counts a finished request. A cluster that is not configured counts as `unknown`, a
    /// verb custody does not know as `unknown`.
    pub fn observe_request(&self, cluster: &str, verb: &str, code: u16) {
        let cluster = if cluster.is_empty() || lock(&self.clusters).contains(cluster) {
            cluster
        } else {
            UNKNOWN
        };
        let mut map = lock(&self.requests);
        *map.entry((cluster.to_owned(), verb_label(verb), code))
            .or_default() += 1;
    }

    /// Counts an audit event of a refused unauthenticated request that was not written
    /// because more arrived than `[limits] unauthenticated_audit_per_second` allows.
    pub fn audit_dropped_rate_limited(&self) {
        self.audit_dropped_rate_limited
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The audit events dropped so far for the rate limit.
    pub fn audit_dropped(&self) -> u64 {
        self.audit_dropped_rate_limited.load(Ordering::Relaxed)
    }

    /// Counts a request refused with 413 before it was read.
    pub fn body_too_large(&self) {
        self.body_too_large.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection on `listener` until the returned guard is dropped.
    pub fn connection_opened(self: &Arc<Self>, listener: Listener) -> OpenConnection {
        self.connections[listener.index()]
            .open
            .fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone(), listener)
    }

    /// Counts a connection closed at once because `listener` had its maximum open.
    pub fn connection_refused(&self, listener: Listener) {
        self.connections[listener.index()]
            .refused
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the events a recording lost (`lost`) to `custody_recording_events_lost_total` when
    /// the returned guard is dropped (at the end of the session).
    pub fn recording_losses(self: &Arc<Self>, lost: LostCounter) -> RecordingLosses {
        RecordingLosses {
            metrics: self.clone(),
            lost,
        }
    }

    /// Recording events lost so far.
    pub fn recording_events_lost(&self) -> u64 {
        self.recording_events_lost.load(Ordering::Relaxed)
    }

    /// Counts a failed authentication.
    pub fn authn_failure(&self) {
        self.authn_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed audit write.
    pub fn audit_write_failure(&self) {
        self.audit_write_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request the upstream could not be reached for.
    pub fn upstream_failure(&self) {
        self.upstream_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// The audit write failures so far.
    pub fn audit_write_failures(&self) -> u64 {
        self.audit_write_failures.load(Ordering::Relaxed)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP custody_requests_total Requests answered, by cluster, verb and status code.\n\
             # TYPE custody_requests_total counter\n",
        );
        let map = lock(&self.requests);
        for ((cluster, verb, code), n) in map.iter() {
            let _ = writeln!(
                out,
                "custody_requests_total{{cluster=\"{}\",verb=\"{}\",code=\"{code}\"}} {n}",
                escape(cluster),
                escape(verb)
            );
        }
        drop(map);
        for (name, help, kind, value) in [
            (
                "custody_authn_failures_total",
                "Requests whose authentication failed.",
                "counter",
                &self.authn_failures,
            ),
            (
                "custody_audit_write_failures_total",
                "Audit events that could not be written.",
                "counter",
                &self.audit_write_failures,
            ),
            (
                "custody_upstream_failures_total",
                "Requests the cluster could not be reached for.",
                "counter",
                &self.upstream_failures,
            ),
            (
                "custody_recording_events_lost_total",
                "Events of recorded sessions lost without the session being ended for it.",
                "counter",
                &self.recording_events_lost,
            ),
            (
                "custody_requests_body_too_large_total",
                "Requests refused with 413 because their Content-Length exceeds the limit.",
                "counter",
                &self.body_too_large,
            ),
            (
                "custody_requests_in_flight",
                "Requests being answered now, long-lived watches and logs included.",
                "gauge",
                &self.in_flight,
            ),
        ] {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = write!(
            out,
            "# HELP custody_audit_dropped_total Audit events not written, by reason \
             (rate_limited: refused unauthenticated requests beyond the configured rate).\n\
             # TYPE custody_audit_dropped_total counter\n\
             custody_audit_dropped_total{{reason=\"rate_limited\"}} {}\n",
            self.audit_dropped_rate_limited.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP custody_connections_open Connections open now, by listener.\n\
             # TYPE custody_connections_open gauge\n",
        );
        for listener in Listener::ALL {
            let _ = writeln!(
                out,
                "custody_connections_open{{listener=\"{}\"}} {}",
                listener.label(),
                self.connections[listener.index()]
                    .open
                    .load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP custody_connections_refused_total Connections closed at once because the \
             listener had its maximum open.\n\
             # TYPE custody_connections_refused_total counter\n",
        );
        for listener in Listener::ALL {
            let _ = writeln!(
                out,
                "custody_connections_refused_total{{listener=\"{}\"}} {}",
                listener.label(),
                self.connections[listener.index()]
                    .refused
                    .load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// An open connection; decrements the gauge when dropped.
#[derive(Debug)]
pub struct OpenConnection(Arc<Metrics>, Listener);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections[self.1.index()]
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// A recorded session's lost events, counted when it ends.
pub struct RecordingLosses {
    metrics: Arc<Metrics>,
    lost: LostCounter,
}

impl std::fmt::Debug for RecordingLosses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingLosses").finish_non_exhaustive()
    }
}

impl Drop for RecordingLosses {
    fn drop(&mut self) {
        let lost = self.lost.get();
        if lost > 0 {
            tracing::error!(lost, "a recording lost events");
            self.metrics
                .recording_events_lost
                .fetch_add(lost, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A request in flight; decrements the gauge when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Escapes a label value (`\`, `"` and newlines).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauge() {
        let m = Metrics::new();
        m.serve_clusters(["sim", "s\"im"]);
        m.observe_request("sim", "list", 200);
        m.observe_request("sim", "list", 200);
        m.observe_request("s\"im", "get", 404);
        m.authn_failure();
        let guard = m.in_flight();
        let text = m.render();
        assert!(
            text.contains("custody_requests_total{cluster=\"sim\",verb=\"list\",code=\"200\"} 2")
        );
        assert!(text.contains("cluster=\"s\\\"im\""));
        assert!(text.contains("custody_authn_failures_total 1"));
        assert!(text.contains("custody_requests_in_flight 1"));
        drop(guard);
        assert!(m.render().contains("custody_requests_in_flight 0"));
    }

    #[test]
    fn labels_take_only_configured_clusters_and_known_verbs() {
        let m = Metrics::new();
        m.serve_clusters(["prod"]);
        m.observe_request("prod", "get", 200);
        m.observe_request("x".repeat(4096).as_str(), "get", 401);
        m.observe_request("other", "FOOBAR", 401);
        m.observe_request("", "", 401);
        let text = m.render();
        assert!(
            text.contains("cluster=\"prod\",verb=\"get\",code=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cluster=\"unknown\",verb=\"get\",code=\"401\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cluster=\"unknown\",verb=\"unknown\",code=\"401\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cluster=\"\",verb=\"\",code=\"401\"} 1"),
            "{text}"
        );
        assert!(!text.contains("xxxx") && !text.contains("FOOBAR"), "{text}");
        assert!(text.contains("custody_audit_dropped_total{reason=\"rate_limited\"} 0"));
        assert!(text.contains("custody_recording_events_lost_total 0"));
        let open = m.connection_opened(Listener::Admin);
        m.connection_refused(Listener::Gateway);
        let text = m.render();
        assert!(
            text.contains("custody_connections_open{listener=\"admin\"} 1"),
            "{text}"
        );
        assert!(text.contains("custody_connections_refused_total{listener=\"gateway\"} 1"));
        drop(open);
        assert!(
            m.render()
                .contains("custody_connections_open{listener=\"admin\"} 0")
        );
    }
}
