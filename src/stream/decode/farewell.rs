//! Farewells: what custody tells the client when it ends a session itself (an administrator,
//! a recording failure, the idle timeout, the maximum duration), in the words a Kubernetes
//! client already prints.
//!
//! An exec or attach client reads its error channel (WebSocket) or error stream (SPDY) to the
//! end and turns what it read into the command's error: a v4/v5 `metav1.Status` with status
//! `Failure` and a reason other than `NonZeroExitCode` becomes an error carrying `message`
//! (client-go's `errorDecoderV4`, also used for v5), plain text on the older protocols becomes
//! `error executing remote command: <text>`; kubectl prints either as `error: …` and exits 1.
//! So the farewell is the Status the API server itself would write there, followed by what
//! ends the channel cleanly: a close frame with code 1000 on WebSocket (client-go reads any
//! other code as an error and drops what the error channel held), FIN on the SPDY error stream.
//!
//! The bytes are only valid where the client's copy of the server-to-client direction stands
//! between frames (and, on WebSocket, outside a fragmented message) and its error channel is
//! still empty: the decoders check that ([`SessionDecoder::farewell`](super::SessionDecoder::farewell)).
//! The client may be one chunk behind the decoder: the relay feeds a chunk before forwarding it,
//! so when the recording refuses the chunk, or the session ends while the recorder holds it,
//! the decoder has seen it and the client never will. Each decoder therefore keeps its
//! [`ServerProgress`]: how many server bytes it was fed and whether a farewell could follow
//! them, and the same as it stood before the last chunk, so that the farewell is built for
//! where the client stands (and after a server Status the client never received, it may
//! still be given).
//! Port-forward gets no farewell: its error streams belong to single forwarded connections
//! (kubectl only logs them as `an error occurred forwarding …`), and an idle port-forward has
//! none open to speak on; its client sees the connection drop, and the manifest says why.

use std::fmt::Write as _;
use std::time::Duration;

use custody_protocol::channel::{ERROR, MessagePayload};
use custody_protocol::spdy::Frame as SpdyFrame;
use custody_protocol::status::{ListMeta, STATUS_FAILURE, Status};
use custody_protocol::websocket::{CLOSE_NORMAL, Frame as WsFrame};
use custody_protocol::{ChannelProtocol, spdy::RemoteCommandProtocol};

/// The longest detail of a recording failure quoted to the client.
const MAX_DETAIL_LEN: usize = 200;

/// Why custody ended a session, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Farewell {
    /// The human-readable message, starting with `custody: `.
    pub message: String,
    /// The Status `reason` (a `metav1.StatusReason`).
    pub reason: &'static str,
    /// The Status `code`, the HTTP status the reason goes with.
    pub code: i32,
}

impl Farewell {
    /// An administrator ended the session, giving `reason` or none.
    pub fn ended_by_admin(reason: Option<&str>) -> Self {
        let message = "custody: this session was ended by an administrator";
        Self {
            message: match reason.map(str::trim).filter(|r| !r.is_empty()) {
                Some(reason) => format!("{message}: {reason}"),
                None => message.to_owned(),
            },
            reason: "Forbidden",
            code: 403,
        }
    }

    /// The access grant that allowed the session was revoked (`grant_revoked: <reason>`) or
    /// expired (`grant_expired`).
    pub fn grant_ended(reason: &str) -> Self {
        let message = match reason.strip_prefix("grant_revoked") {
            Some(rest) => {
                let rest = rest.trim_start_matches(':').trim();
                if rest.is_empty() {
                    "custody: the access grant for this session was revoked".to_owned()
                } else {
                    format!("custody: the access grant for this session was revoked: {rest}")
                }
            }
            None => "custody: the access grant for this session expired".to_owned(),
        };
        Self {
            message,
            reason: "Forbidden",
            code: 403,
        }
    }

    /// The credential the session was started with expired.
    pub fn credential_expired() -> Self {
        Self {
            message: "custody: the credential this session was started with expired; run the \
                      command again to continue with a fresh one"
                .to_owned(),
            reason: "Unauthorized",
            code: 401,
        }
    }

    /// Nothing flowed for `timeout`.
    pub fn idle_timeout(timeout: Duration) -> Self {
        Self {
            message: format!(
                "custody: the session was idle for {} and was ended (idle timeout)",
                human(timeout)
            ),
            reason: "Timeout",
            code: 504,
        }
    }

    /// The session ran for its maximum duration `max`.
    pub fn max_duration(max: Duration) -> Self {
        Self {
            message: format!(
                "custody: the session reached its maximum duration of {} and was ended",
                human(max)
            ),
            reason: "Timeout",
            code: 504,
        }
    }

    /// The gateway replica holding the session is going away (`why`: shutting down, or it
    /// lost its place in the cluster); the client reconnects through the balancer.
    pub fn replica_leaving(why: &str) -> Self {
        Self {
            message: format!(
                "custody: the gateway replica holding this session {why}; the session was ended \
                 and its recording sealed; run the command again to continue through another \
                 replica"
            ),
            reason: "ServiceUnavailable",
            code: 503,
        }
    }

    /// The recording failed (`detail`, shortened); sessions never run unrecorded.
    pub fn recording_failure(detail: &str) -> Self {
        let detail = detail.trim();
        let mut end = detail.len().min(MAX_DETAIL_LEN);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        let ellipsis = if end < detail.len() { "…" } else { "" };
        Self {
            message: format!(
                "custody: the session's recording failed ({}{ellipsis}); the session was ended \
                 because it cannot run unrecorded",
                &detail[..end]
            ),
            reason: "ServiceUnavailable",
            code: 503,
        }
    }

    /// The Status written on the error channel of the v4/v5 protocols.
    pub fn status(&self) -> Status {
        Status {
            kind: Some("Status".to_owned()),
            api_version: Some("v1".to_owned()),
            metadata: ListMeta::default(),
            status: Some(STATUS_FAILURE.to_owned()),
            message: Some(self.message.clone()),
            reason: Some(self.reason.to_owned()),
            details: None,
            code: Some(self.code),
        }
    }

    /// What the error channel carries: the Status JSON, or the plain message before v4.
    fn error_payload(&self, status_json: bool) -> Option<Vec<u8>> {
        if status_json {
            self.status().to_json().ok()
        } else {
            Some(self.message.clone().into_bytes())
        }
    }

    /// A server's WebSocket frames: the farewell on the error channel, then a close 1000.
    pub fn websocket(&self, protocol: ChannelProtocol) -> Option<Vec<u8>> {
        let payload = self.error_payload(protocol.error_is_status_json())?;
        let frame = match protocol.encode_data(ERROR, &payload) {
            MessagePayload::Binary(bytes) => WsFrame::binary(bytes),
            MessagePayload::Text(text) => WsFrame::text(text),
        };
        let mut out = frame.to_bytes();
        WsFrame::close(CLOSE_NORMAL, &self.message).encode(&mut out);
        Some(out)
    }

    /// A server's SPDY DATA frame on the error stream `stream_id`, with FIN.
    pub fn spdy(&self, protocol: RemoteCommandProtocol, stream_id: u32) -> Option<Vec<u8>> {
        let payload = self.error_payload(protocol.error_is_status_json())?;
        SpdyFrame::data(stream_id, payload, true)
            .to_bytes()
            .ok()
            .map(Vec::from)
    }
}

/// Where the server-to-client direction stands for a farewell: `S` is what a farewell needs at
/// the end of the last whole frame (whether one may be written, the stream it goes on). The
/// relay forwards the server's bytes only up to the end of a whole frame (see
/// [`SessionDecoder::server_boundary`](super::SessionDecoder::server_boundary)), so the client
/// stands at the boundary after the last chunk fed, or, when that chunk was never forwarded,
/// at the boundary before it; both are answered here.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ServerProgress<S> {
    /// Server-to-client bytes fed.
    fed: u64,
    /// The boundary before the last server-to-client chunk, and the state there.
    before_last: Option<(u64, S)>,
    /// A chunk is being fed (or its decoding failed): the decoder's state is not a boundary's.
    feeding: bool,
}

impl<S: Copy> ServerProgress<S> {
    /// Notes that a server-to-client chunk of `len` bytes is fed next, with the boundary and
    /// state before it.
    pub(super) fn feeding(&mut self, len: usize, before: (u64, S)) {
        self.before_last = Some(before);
        self.fed = self.fed.saturating_add(len as u64);
        self.feeding = true;
    }

    /// The chunk was decoded.
    pub(super) fn fed_whole(&mut self) {
        self.feeding = false;
    }

    /// Server-to-client bytes fed.
    pub(super) fn fed(&self) -> u64 {
        self.fed
    }

    /// The state where a client stands that received exactly the first `delivered` bytes:
    /// `now()` (the boundary after the last chunk and the state there) when it is that
    /// boundary, the one before the last chunk when it is that one, `None` anywhere else.
    pub(super) fn at(&self, delivered: u64, now: impl FnOnce() -> (u64, S)) -> Option<S> {
        if !self.feeding {
            let (boundary, state) = now();
            if boundary == delivered {
                return Some(state);
            }
        }
        self.before_last
            .and_then(|(boundary, state)| (boundary == delivered).then_some(state))
    }
}

/// A duration as people write it: `1h`, `30s`, `1h30m`, `250ms`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (value, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if value > 0 {
            let _ = write!(out, "{value}{unit}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(3661)), "1h1m1s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_millis(1500)), "1s");
    }

    #[test]
    fn messages_say_why() {
        assert_eq!(
            Farewell::idle_timeout(Duration::from_secs(30)).message,
            "custody: the session was idle for 30s and was ended (idle timeout)"
        );
        assert_eq!(
            Farewell::max_duration(Duration::from_secs(3600)).message,
            "custody: the session reached its maximum duration of 1h and was ended"
        );
        assert_eq!(
            Farewell::ended_by_admin(Some("incident 42")).message,
            "custody: this session was ended by an administrator: incident 42"
        );
        for none in [None, Some(" ")] {
            assert_eq!(
                Farewell::ended_by_admin(none).message,
                "custody: this session was ended by an administrator"
            );
        }
        let failure = Farewell::recording_failure("No space left on device (os error 28)\n");
        assert_eq!(
            failure.message,
            "custody: the session's recording failed (No space left on device (os error 28)); \
             the session was ended because it cannot run unrecorded"
        );
        let long = Farewell::recording_failure(&"é".repeat(300));
        assert!(long.message.contains(&format!("{}…)", "é".repeat(100))));
    }

    #[test]
    fn the_status_is_a_full_kubernetes_status() {
        let json = Farewell::idle_timeout(Duration::from_secs(1))
            .status()
            .to_json()
            .unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"custody: the session was idle for 1s and was ended (idle timeout)","reason":"Timeout","code":504}"#
        );
    }
}
