//! The gateway's Prometheus metrics, in the text exposition format (version 0.0.4): requests by
//! cluster, verb and code, authentication failures, audit write failures, upstream failures and
//! requests in flight. Hand-written: a few counters do not need a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The gateway's counters. Shared as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    authn_failures: AtomicU64,
    audit_write_failures: AtomicU64,
    upstream_failures: AtomicU64,
    in_flight: AtomicU64,
}

impl Metrics {
    /// New, all zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts a finished request.
    pub fn observe_request(&self, cluster: &str, verb: &str, code: u16) {
        let mut map = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry((cluster.to_owned(), verb.to_owned(), code))
            .or_default() += 1;
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
        let map = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        out
    }
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
}
