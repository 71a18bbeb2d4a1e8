//! The gateway's Prometheus metrics, served in the text exposition format (version 0.0.4) on the
//! admin listener's `/metrics`: requests by cluster, verb and code and how long they took, the
//! clusters' answer times, the audit trail's writes, recordings, live sessions, console logins,
//! connections per listener. Built on `prometheus-client` (the Prometheus project's own client).
//!
//! Every label value comes from a fixed set: a configured cluster name or `unknown`, a verb
//! custody knows or `unknown`, a status code, a listener, a session kind, an outcome. Nothing a
//! client sends, least of all before it is authenticated, can add a series (each would live as
//! long as the process).
//!
//! Locking: a label-free metric is an atomic. A family (a metric with labels) keeps its series
//! in a map behind a read-write lock of its own, taken for reading on each observation and for
//! writing only the first time a label set is seen; a histogram series has a small lock of its
//! own. There is no lock shared by the whole process on the request path: the metrics that
//! connections, sessions and the audit writer touch hold their series directly.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use custody_recorder::model::SessionKind;
use custody_recorder::writer::{LostCounter, WriterStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

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

/// Request and upstream durations, seconds: from a cached `get` to a slow `list`. Watches,
/// `logs -f` and sessions last until they end and land in `+Inf`.
const REQUEST_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Audit batch write times, seconds: an `fdatasync` and an index transaction, or one
/// PostgreSQL transaction.
const AUDIT_BUCKETS: [f64; 10] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Events in one audit batch, up to [`crate::audit::MAX_BATCH`].
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Session lengths, seconds: a one-command exec to a working day.
const SESSION_BUCKETS: [f64; 9] = [
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14_400.0, 28_800.0,
];

/// Label values from a fixed set: each enum below names its values.
macro_rules! label_values {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(self.label())
            }
        }
    )*};
}

label_values!(Listener, LoginOutcome, Kind, DropReason);

/// A listener, as the `listener` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// How a console login through the identity provider ended (`outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginOutcome {
    /// The person is logged in.
    Success,
    /// The identity provider answered with an ID token the authenticator refused.
    Refused,
    /// The login could not be completed: the state or its cookie did not match, or the code
    /// could not be exchanged with the identity provider.
    Failed,
}

impl LoginOutcome {
    const ALL: [LoginOutcome; 3] = [
        LoginOutcome::Success,
        LoginOutcome::Refused,
        LoginOutcome::Failed,
    ];

    fn label(self) -> &'static str {
        match self {
            LoginOutcome::Success => "success",
            LoginOutcome::Refused => "refused",
            LoginOutcome::Failed => "failed",
        }
    }

    fn index(self) -> usize {
        match self {
            LoginOutcome::Success => 0,
            LoginOutcome::Refused => 1,
            LoginOutcome::Failed => 2,
        }
    }
}

/// A streaming session's kind (`kind` label), as recordings name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Kind(SessionKind);

impl Kind {
    /// The kinds the gateway starts: their series exist from the start. (An `api` recording
    /// is not one of its sessions; its series would appear when first counted.)
    const STREAMS: [Kind; 3] = [
        Kind(SessionKind::Exec),
        Kind(SessionKind::Attach),
        Kind(SessionKind::PortForward),
    ];

    fn label(self) -> &'static str {
        match self.0 {
            SessionKind::Exec => "exec",
            SessionKind::Attach => "attach",
            SessionKind::PortForward => "port-forward",
            SessionKind::Api => "api",
        }
    }
}

/// Why audit events were not written (`reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DropReason {
    RateLimited,
}

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            DropReason::RateLimited => "rate_limited",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    cluster: Arc<str>,
    verb: &'static str,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    verb: &'static str,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClusterLabels {
    cluster: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: Listener,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: LoginOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: DropReason,
}

/// A histogram family's series constructor: a plain `fn` so the family's type is nameable.
type NewHistogram = fn() -> Histogram;

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn session_histogram() -> Histogram {
    Histogram::new(SESSION_BUCKETS)
}

/// The gateway's metrics. Shared as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The configured cluster names: the only `cluster` label values besides `unknown` and
    /// the empty one (no `/clusters/` prefix). Written once when the gateway is built, read on
    /// every request (a read lock: readers do not wait for each other).
    clusters: RwLock<BTreeSet<Arc<str>>>,
    /// The `cluster` label values that are not names: `""` and `unknown`.
    no_cluster: Arc<str>,
    unknown_cluster: Arc<str>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<DurationLabels, Histogram, NewHistogram>,
    upstream_duration: Family<ClusterLabels, Histogram, NewHistogram>,
    authn_failures: Counter,
    audit_write_failures: Counter,
    audit_dropped_rate_limited: Counter,
    audit_writes: AuditWrites,
    upstream_failures: Counter,
    in_flight: Gauge,
    recording_events_lost: Counter,
    body_too_large: Counter,
    /// Per listener: connections open now, closed at once for the cap, and the cap.
    connections_open: [Gauge; 2],
    connections_refused: [Counter; 2],
    connections_max: [Gauge; 2],
    /// Per session kind: live now, and how long the ended ones lasted (touched at a
    /// session's start and end only).
    sessions_live: Family<KindLabels, Gauge>,
    session_duration: Family<KindLabels, Histogram, NewHistogram>,
    logins: [Counter; 3],
    /// The recorder's counters, once the gateway records (read at each scrape).
    recorder: Arc<OnceLock<WriterStats>>,
}

impl Metrics {
    /// New, all zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Declares the configured clusters: the `cluster` label takes these names, and
    /// [`UNKNOWN`] for any other. Their upstream latency series start at zero.
    pub fn serve_clusters<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut clusters = self
            .clusters
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for name in names {
            let name: Arc<str> = name.into();
            // Created now, so each configured cluster's series exists from the start.
            drop(self.upstream_duration.get_or_create(&ClusterLabels {
                cluster: name.clone(),
            }));
            clusters.insert(name);
        }
    }

    /// The `cluster` label of `cluster`: itself if configured (or empty), else `unknown`.
    fn cluster_label(&self, cluster: &str) -> Arc<str> {
        if cluster.is_empty() {
            return self.no_cluster.clone();
        }
        self.clusters
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(cluster)
            .cloned()
            .unwrap_or_else(|| self.unknown_cluster.clone())
    }

    /// Counts a finished request. A cluster that is not configured counts as `unknown`, a
    /// verb custody does not know as `unknown`.
    pub fn observe_request(&self, cluster: &str, verb: &str, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                cluster: self.cluster_label(cluster),
                verb: verb_label(verb),
                code,
            })
            .inc();
    }

    /// Counts a finished request ([`Self::observe_request`]) and how long it took, from its
    /// arrival to the end of its answer.
    ///
    /// Two kinds are counted but not timed. A request refused before it was classified (no
    /// verb: authentication failed, or no cluster was named): anyone can send those, they cost
    /// the gateway next to nothing, and each status they get would be one more histogram. An
    /// upgraded session (101): it lasts as long as the person works, and
    /// `custody_session_duration_seconds` times it by kind.
    pub fn request_done(&self, cluster: &str, verb: &str, code: u16, took: Duration) {
        self.observe_request(cluster, verb, code);
        if verb.is_empty() || code == 101 {
            return;
        }
        self.request_duration
            .get_or_create(&DurationLabels {
                verb: verb_label(verb),
                code,
            })
            .observe(took.as_secs_f64());
    }

    /// Observes how long `cluster` took to answer a request's head (or an upgrade's
    /// handshake), from sending it to reading the answer's status.
    pub fn upstream_answered(&self, cluster: &str, took: Duration) {
        self.upstream_duration
            .get_or_create(&ClusterLabels {
                cluster: self.cluster_label(cluster),
            })
            .observe(took.as_secs_f64());
    }

    /// Awaits `answer`, a request to `cluster`, and observes how long it took if the cluster
    /// answered ([`Self::upstream_answered`]); a failure is the caller's to count.
    pub async fn time_upstream<T, E>(
        &self,
        cluster: &str,
        answer: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let sent = std::time::Instant::now();
        let answer = answer.await;
        if answer.is_ok() {
            self.upstream_answered(cluster, sent.elapsed());
        }
        answer
    }

    /// Counts an audit event of a refused unauthenticated request that was not written
    /// because more arrived than `[limits] unauthenticated_audit_per_second` allows.
    pub fn audit_dropped_rate_limited(&self) {
        self.audit_dropped_rate_limited.inc();
    }

    /// The audit events dropped so far for the rate limit.
    pub fn audit_dropped(&self) -> u64 {
        self.audit_dropped_rate_limited.get()
    }

    /// Counts a request refused with 413 before it was read.
    pub fn body_too_large(&self) {
        self.body_too_large.inc();
    }

    /// Declares the most connections `listener` keeps open (`custody_connections_max`).
    pub fn connection_limit(&self, listener: Listener, max: usize) {
        self.connections_max[listener.index()].set(i64::try_from(max).unwrap_or(i64::MAX));
    }

    /// Counts a connection on `listener` until the returned guard is dropped.
    pub fn connection_opened(self: &Arc<Self>, listener: Listener) -> OpenConnection {
        self.connections_open[listener.index()].inc();
        OpenConnection(self.clone(), listener)
    }

    /// Counts a connection closed at once because `listener` had its maximum open.
    pub fn connection_refused(&self, listener: Listener) {
        self.connections_refused[listener.index()].inc();
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
        self.recording_events_lost.get()
    }

    /// Exports the recorder's counters (events and bytes written, events queued) of every
    /// session written with the configuration `stats` came from. The first call wins.
    pub fn report_recordings(&self, stats: WriterStats) {
        let _ = self.recorder.set(stats);
    }

    /// Counts a live session of `kind` until the returned guard is dropped, then observes how
    /// long it lasted.
    pub fn session_started(&self, kind: SessionKind) -> LiveSession {
        let labels = KindLabels { kind: Kind(kind) };
        let live = self.sessions_live.get_or_create_owned(&labels);
        live.inc();
        LiveSession {
            live,
            duration: self.session_duration.get_or_create_owned(&labels),
            started: std::time::Instant::now(),
        }
    }

    /// Counts a console login's outcome.
    pub fn console_login(&self, outcome: LoginOutcome) {
        self.logins[outcome.index()].inc();
    }

    /// Counts a console login that could not be completed ([`LoginOutcome::Failed`]).
    pub fn console_login_failed(&self) {
        self.console_login(LoginOutcome::Failed);
    }

    /// Counts a failed authentication.
    pub fn authn_failure(&self) {
        self.authn_failures.inc();
    }

    /// Counts a failed audit write.
    pub fn audit_write_failure(&self) {
        self.audit_write_failures.inc();
    }

    /// The audit writer's histograms, for [`crate::audit::AuditSink::report_writes`].
    pub fn audit_writes(&self) -> AuditWrites {
        self.audit_writes.clone()
    }

    /// Counts a request the upstream could not be reached for.
    pub fn upstream_failure(&self) {
        self.upstream_failures.inc();
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// The audit write failures so far.
    pub fn audit_write_failures(&self) -> u64 {
        self.audit_write_failures.get()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a `String` cannot fail, and every metric encodes infallibly.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    #[allow(
        clippy::too_many_lines,
        reason = "one registration per metric, in the order /metrics lists them"
    )]
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "custody_requests",
            "Requests answered, by cluster, verb and status code",
            requests.clone(),
        );
        let request_duration = Family::new_with_constructor(request_histogram as NewHistogram);
        registry.register(
            "custody_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by verb and status code \
             (watches and logs -f: until they end; sessions and requests refused before they \
             were classified are not timed)",
            request_duration.clone(),
        );
        let upstream_duration = Family::new_with_constructor(request_histogram as NewHistogram);
        registry.register(
            "custody_upstream_duration_seconds",
            "Time a cluster took to answer a request's head or an upgrade's handshake, by cluster",
            upstream_duration.clone(),
        );
        let plain = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let authn_failures = plain(
            &mut registry,
            "custody_authn_failures",
            "Requests whose authentication failed",
        );
        let audit_write_failures = plain(
            &mut registry,
            "custody_audit_write_failures",
            "Audit events that could not be written",
        );
        let upstream_failures = plain(
            &mut registry,
            "custody_upstream_failures",
            "Requests the cluster could not be reached for",
        );
        let recording_events_lost = plain(
            &mut registry,
            "custody_recording_events_lost",
            "Events of recorded sessions lost without the session being ended for it",
        );
        let body_too_large = plain(
            &mut registry,
            "custody_requests_body_too_large",
            "Requests refused with 413 because their Content-Length exceeds the limit",
        );
        let in_flight = Gauge::default();
        registry.register(
            "custody_requests_in_flight",
            "Requests being answered now, long-lived watches and logs included",
            in_flight.clone(),
        );
        let dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "custody_audit_dropped",
            "Audit events not written, by reason \
             (rate_limited: refused unauthenticated requests beyond the configured rate)",
            dropped.clone(),
        );
        let audit_dropped_rate_limited = dropped.get_or_create_owned(&ReasonLabels {
            reason: DropReason::RateLimited,
        });
        let audit_writes = AuditWrites {
            duration: Histogram::new(AUDIT_BUCKETS),
            batch: Histogram::new(BATCH_BUCKETS),
        };
        registry.register(
            "custody_audit_write_duration_seconds",
            "Time to write one batch of audit events durably (file and index, or the database)",
            audit_writes.duration.clone(),
        );
        registry.register(
            "custody_audit_batch_events",
            "Audit events written together in one batch",
            audit_writes.batch.clone(),
        );
        let per_listener = |family: &Family<ListenerLabels, Gauge>| {
            Listener::ALL.map(|listener| family.get_or_create_owned(&ListenerLabels { listener }))
        };
        let open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "custody_connections_open",
            "Connections open now, by listener",
            open.clone(),
        );
        let refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "custody_connections_refused",
            "Connections closed at once because the listener had its maximum open",
            refused.clone(),
        );
        let max = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "custody_connections_max",
            "Connections a listener keeps open at most ([limits] max_connections, \
             admin_max_connections)",
            max.clone(),
        );
        let live = Family::<KindLabels, Gauge>::default();
        registry.register(
            "custody_sessions_live",
            "Streaming sessions (exec, attach, port-forward) running now, by kind",
            live.clone(),
        );
        let durations =
            Family::<KindLabels, Histogram, NewHistogram>::new_with_constructor(session_histogram);
        registry.register(
            "custody_session_duration_seconds",
            "How long ended streaming sessions lasted, by kind",
            durations.clone(),
        );
        for kind in Kind::STREAMS {
            drop(live.get_or_create(&KindLabels { kind }));
            drop(durations.get_or_create(&KindLabels { kind }));
        }
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "custody_console_logins",
            "Logins to the web console through the identity provider, by outcome",
            logins.clone(),
        );
        let recorder = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(RecorderCollector(Arc::clone(&recorder))));
        Self {
            clusters: RwLock::new(BTreeSet::new()),
            no_cluster: Arc::from(""),
            unknown_cluster: Arc::from(UNKNOWN),
            requests,
            request_duration,
            upstream_duration,
            authn_failures,
            audit_write_failures,
            audit_dropped_rate_limited,
            audit_writes,
            upstream_failures,
            in_flight,
            recording_events_lost,
            body_too_large,
            connections_open: per_listener(&open),
            connections_refused: Listener::ALL
                .map(|listener| refused.get_or_create_owned(&ListenerLabels { listener })),
            connections_max: per_listener(&max),
            sessions_live: live,
            session_duration: durations,
            logins: LoginOutcome::ALL
                .map(|outcome| logins.get_or_create_owned(&OutcomeLabels { outcome })),
            recorder,
            registry,
        }
    }
}

/// The audit writer's histograms: how long each batch took to write, and its size. Cheap to
/// clone (the clones share the series).
#[derive(Debug, Clone)]
pub struct AuditWrites {
    duration: Histogram,
    batch: Histogram,
}

impl AuditWrites {
    /// Observes one batch of `events` written (or failed) in `took`.
    pub fn batch_written(&self, events: usize, took: Duration) {
        self.duration.observe(took.as_secs_f64());
        self.batch
            .observe(f64::from(u32::try_from(events).unwrap_or(u32::MAX)));
    }
}

/// The recorder's counters, read at each scrape.
#[derive(Debug)]
struct RecorderCollector(Arc<OnceLock<WriterStats>>);

impl Collector for RecorderCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (events, bytes, queued) = self.0.get().map_or((0, 0, 0), |s| {
            (s.events_written(), s.bytes_written(), s.queued_events())
        });
        for (name, help, value) in [
            (
                "custody_recording_events",
                "Events written to session recordings.",
                events,
            ),
            (
                "custody_recording_bytes",
                "Bytes written to session recording files (compressed).",
                bytes,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let gauge = ConstGauge::new(i64::try_from(queued).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "custody_recording_queued_events",
            "Events waiting in recorders' queues for their writers (a disk falling behind).",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// An open connection; decrements the gauge when dropped.
#[derive(Debug)]
pub struct OpenConnection(Arc<Metrics>, Listener);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open[self.1.index()].dec();
    }
}

/// A live streaming session; when dropped it leaves the gauge and its length is observed.
#[derive(Debug)]
pub struct LiveSession {
    live: Gauge,
    duration: Histogram,
    started: std::time::Instant,
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.live.dec();
        self.duration.observe(self.started.elapsed().as_secs_f64());
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
            self.metrics.recording_events_lost.inc_by(lost);
        }
    }
}

/// A request in flight; decrements the gauge when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
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

    /// One sample line: its name, its labels (values unescaped), its value.
    fn sample(line: &str) -> (String, Vec<(String, String)>, f64) {
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(
            name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'),
            "bad name: {line}"
        );
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            rest = inner;
            loop {
                let (key, after) = rest.split_once("=\"").unwrap();
                assert!(
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name {key:?}: {line}"
                );
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().unwrap() {
                        (_, '\\') => match chars.next().unwrap().1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c}: {line}"),
                        },
                        (i, '"') => break i,
                        (_, c) => value.push(c),
                    }
                };
                labels.push((key.to_owned(), value));
                rest = &after[end + 1..];
                if let Some(more) = rest.strip_prefix(',') {
                    rest = more;
                } else {
                    rest = rest.strip_prefix('}').unwrap();
                    break;
                }
            }
        }
        let value = rest.strip_prefix(' ').unwrap();
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        (name.to_owned(), labels, value)
    }

    /// Every line of the exposition is a `# HELP` or `# TYPE` line or a sample
    /// `name{labels} value` of a declared family, with every metric in use; histogram buckets
    /// add up.
    #[test]
    #[allow(
        clippy::too_many_lines,
        reason = "one exposition, checked line by line"
    )]
    fn the_exposition_parses() {
        let m = Metrics::new();
        m.serve_clusters(["prod", "s\"im"]);
        m.request_done("prod", "get", 200, Duration::from_millis(3));
        m.request_done("elsewhere", "watch", 200, Duration::from_secs(100));
        m.request_done("", "", 401, Duration::from_micros(200));
        m.request_done("", "list", 401, Duration::from_micros(200));
        m.request_done("sim", "create", 101, Duration::from_secs(60));
        m.upstream_answered("prod", Duration::from_millis(40));
        m.upstream_answered("s\"im", Duration::from_secs(20));
        m.audit_writes().batch_written(3, Duration::from_millis(2));
        m.audit_dropped_rate_limited();
        m.audit_write_failure();
        m.authn_failure();
        m.body_too_large();
        m.upstream_failure();
        drop(m.session_started(SessionKind::PortForward));
        let live = m.session_started(SessionKind::Exec);
        m.console_login(LoginOutcome::Refused);
        m.report_recordings(WriterStats::default());
        m.connection_limit(Listener::Gateway, 4096);
        let open = m.connection_opened(Listener::Gateway);
        m.connection_refused(Listener::Admin);
        let flight = m.in_flight();
        let text = m.render();
        drop((live, open, flight));

        let mut types = std::collections::HashMap::new();
        let mut helped = BTreeSet::new();
        let mut buckets: std::collections::HashMap<String, Vec<(f64, f64)>> =
            std::collections::HashMap::new();
        let mut counts = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(name.starts_with("custody_") && !help.is_empty(), "{line}");
                helped.insert(name.to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(matches!(kind, "counter" | "gauge" | "histogram"), "{line}");
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let (name, labels, value) = sample(line);
            let declared = |family: &str| types.get(family).map(String::as_str);
            let family_of = |suffix: &str| name.strip_suffix(suffix).map(str::to_owned);
            match declared(&name) {
                Some("counter") => assert!(name.ends_with("_total"), "{line}"),
                Some(_) => {}
                None => {
                    let family = family_of("_bucket")
                        .or_else(|| family_of("_sum"))
                        .or_else(|| family_of("_count"))
                        .unwrap_or_else(|| panic!("undeclared: {line}"));
                    assert_eq!(declared(&family), Some("histogram"), "{line}");
                    let series: Vec<String> = labels
                        .iter()
                        .filter(|(k, _)| k != "le")
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    let key = format!("{family}{series:?}");
                    if name.ends_with("_bucket") {
                        let le = &labels.iter().find(|(k, _)| k == "le").unwrap().1;
                        let le = if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap()
                        };
                        buckets.entry(key).or_default().push((le, value));
                    } else if name.ends_with("_count") {
                        counts.insert(key, value);
                    }
                }
            }
            assert!(value >= 0.0, "{line}");
        }
        assert!(!buckets.is_empty());
        for (series, les) in &buckets {
            assert!(
                les.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{series}: {les:?}"
            );
            let (le, total) = les.last().unwrap();
            assert!(le.is_infinite(), "{series}");
            assert_eq!(Some(total), counts.get(series), "{series}");
        }
        for name in [
            "custody_request_duration_seconds_bucket{verb=\"watch\",code=\"200\",le=\"+Inf\"} 1",
            "custody_upstream_duration_seconds_count{cluster=\"prod\"} 1",
            "custody_audit_batch_events_sum 3",
            "custody_session_duration_seconds_count{kind=\"port-forward\"} 1",
            "custody_sessions_live{kind=\"exec\"} 1",
            "custody_console_logins_total{outcome=\"refused\"} 1",
            "custody_connections_max{listener=\"gateway\"} 4096",
            "custody_connections_open{listener=\"gateway\"} 1",
            "custody_recording_queued_events 0",
            "custody_recording_bytes_total 0",
        ] {
            assert!(text.contains(name), "no {name}:\n{text}");
        }
        // Only the configured clusters and `unknown` name a cluster.
        assert!(!text.contains("elsewhere"), "{text}");
        // Refused before classification: counted, not timed.
        assert!(text.contains("custody_requests_total{cluster=\"\",verb=\"\",code=\"401\"} 1"));
        assert!(!text.contains("custody_request_duration_seconds_count{verb=\"\""));
        assert!(!text.contains("code=\"101\",le="), "{text}");
        assert!(
            text.contains("custody_request_duration_seconds_count{verb=\"list\",code=\"401\"} 1")
        );
        let live = m.render();
        assert!(
            live.contains("custody_sessions_live{kind=\"exec\"} 0"),
            "{live}"
        );
        assert!(live.contains("custody_session_duration_seconds_count{kind=\"exec\"} 1"));
    }
}
