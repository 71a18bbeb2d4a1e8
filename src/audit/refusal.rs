//! What the audit trail keeps of requests refused before authentication: their fields cut to a
//! bounded size, and at most a configured rate of them (a token bucket). Anyone who can reach
//! the listener can send such requests, so neither their size nor their number may decide how
//! much the trail grows or how often it syncs. Authenticated requests never pass through here.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{AuditEvent, Decision};

/// The most bytes of the request path kept.
pub const MAX_PATH: usize = 1024;
/// The most bytes kept of any other field taken from the request (user agent, kubectl
/// session and command, the cluster name from the path) and of the refusal's reason.
pub const MAX_FIELD: usize = 256;
/// How often at most the gateway logs how many events it dropped.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The rate at which refused unauthenticated requests are audited.
#[derive(Debug)]
pub struct RefusalLimit {
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    /// Dropped since the last log line, and when that was.
    dropped: u64,
    logged: Option<Instant>,
}

impl RefusalLimit {
    /// `per_second` events on average, `burst` at once (the bucket starts full).
    pub fn new(per_second: u64, burst: u64) -> Self {
        let (per_second, burst) = as_rates(per_second, burst);
        Self {
            state: Mutex::new(Bucket {
                per_second,
                burst,
                tokens: burst,
                refilled: Instant::now(),
                dropped: 0,
                logged: None,
            }),
        }
    }

    /// Changes the rate and burst; the bucket starts full again.
    pub fn set(&self, per_second: u64, burst: u64) {
        let (per_second, burst) = as_rates(per_second, burst);
        let mut bucket = self.lock();
        bucket.per_second = per_second;
        bucket.burst = burst;
        bucket.tokens = burst;
        bucket.refilled = Instant::now();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether one more event may be written now; `false` counts it as dropped (and logs the
    /// count at most once a minute).
    pub fn admit(&self) -> bool {
        let mut bucket = self.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * bucket.per_second).min(bucket.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return true;
        }
        bucket.dropped += 1;
        if bucket
            .logged
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            tracing::warn!(
                dropped = bucket.dropped,
                per_second = bucket.per_second,
                burst = bucket.burst,
                "audit events of requests refused before authentication were dropped for the \
                 rate limit ([limits] unauthenticated_audit_per_second); see \
                 custody_audit_dropped_total"
            );
            bucket.dropped = 0;
            bucket.logged = Some(now);
        }
        false
    }
}

/// Both are bounded by the configuration's checks, far below 2^52, so exact as `f64`.
#[allow(clippy::cast_precision_loss, reason = "values checked far below 2^52")]
fn as_rates(per_second: u64, burst: u64) -> (f64, f64) {
    (per_second as f64, burst as f64)
}

impl Default for RefusalLimit {
    fn default() -> Self {
        let limits = crate::config::LimitsConfig::default();
        Self::new(
            limits.unauthenticated_audit_per_second,
            limits.unauthenticated_audit_burst,
        )
    }
}

/// Cuts every field of `event` that a client chose, before authentication, to a bounded size.
pub fn truncate_unauthenticated(event: &mut AuditEvent) {
    truncate(&mut event.request.path, MAX_PATH);
    truncate(&mut event.user_agent, MAX_FIELD);
    truncate(&mut event.cluster, MAX_FIELD);
    for value in [&mut event.kubectl_session, &mut event.kubectl_command]
        .into_iter()
        .flatten()
    {
        truncate(value, MAX_FIELD);
    }
    if let Decision::Deny(reason) = &mut event.decision {
        truncate(reason, MAX_FIELD);
    }
}

/// Keeps at most `max` bytes of `value` (on a character boundary) and marks what was cut:
/// `…[+N bytes]`.
pub fn truncate(value: &mut String, max: usize) {
    if value.len() <= max {
        return;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let cut = value.len() - end;
    value.truncate(end);
    // Writing to a String cannot fail.
    let _ = write!(value, "…[+{cut} bytes]");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_are_cut_and_marked() {
        let mut s = "é".repeat(600);
        truncate(&mut s, MAX_PATH);
        assert!(s.starts_with("éé"));
        assert!(s.ends_with("…[+176 bytes]"), "{s}");
        let mut short = "abc".to_owned();
        truncate(&mut short, 3);
        assert_eq!(short, "abc");
        let mut event = AuditEvent::new(uuid::Uuid::nil(), "127.0.0.1:1".parse().unwrap());
        event.request.path = "/".repeat(5000);
        event.user_agent = "u".repeat(300);
        event.kubectl_command = Some("c".repeat(257));
        event.decision = Decision::Deny("r".repeat(10));
        truncate_unauthenticated(&mut event);
        assert!(event.request.path.len() < MAX_PATH + 20);
        assert!(event.user_agent.ends_with("…[+44 bytes]"));
        assert!(event.kubectl_command.unwrap().ends_with("…[+1 bytes]"));
        assert_eq!(event.decision, Decision::Deny("r".repeat(10)));
    }

    #[test]
    fn the_bucket_admits_its_burst_then_drops() {
        let limit = RefusalLimit::new(0, 3);
        assert!((0..3).all(|_| limit.admit()));
        assert!(!limit.admit());
        let none = RefusalLimit::new(0, 0);
        assert!(!none.admit());
    }
}
