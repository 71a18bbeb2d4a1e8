//! `metav1.Status` as the error channel/stream of exec and attach carries it, and the exit-code
//! rules of client-go's `errorDecoderV4` (k8s-protocols §1.5).
//!
//! On the error channel the Status has no `kind`/`apiVersion` (no `TypeMeta`) but always a
//! `metadata:{}`; `StatusCause.Type` serializes as `"reason"`.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `status` of a successful Status.
pub const STATUS_SUCCESS: &str = "Success";
/// `status` of a failed Status.
pub const STATUS_FAILURE: &str = "Failure";
/// The reason of a command that exited non-zero.
///
/// Upstream: [`NonZeroExitCodeReason`](https://github.com/kubernetes/apimachinery/blob/release-1.32/pkg/util/remotecommand/constants.go).
pub const REASON_NON_ZERO_EXIT_CODE: &str = "NonZeroExitCode";
/// The cause type carrying the exit code as decimal text.
///
/// Upstream: [`ExitCodeCauseType`](https://github.com/kubernetes/apimachinery/blob/release-1.32/pkg/util/remotecommand/constants.go).
pub const CAUSE_EXIT_CODE: &str = "ExitCode";
/// The reason of `apierrors.NewInternalError`.
pub const REASON_INTERNAL_ERROR: &str = "InternalError";

/// A `metav1.Status`, field order as Go marshals it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `kind`, absent on the error channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `apiVersion`, absent on the error channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `metadata`, always written (Go's `ListMeta` is a struct, never omitted).
    #[serde(default)]
    pub metadata: ListMeta,
    /// `Success` or `Failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// A human-readable description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A machine-readable reason such as `NonZeroExitCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Extended data, such as the exit-code cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The suggested HTTP status code, 0 or absent when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
}

/// `metav1.ListMeta`: empty on the error channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    /// `selfLink`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_link: Option<String>,
    /// `resourceVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// `continue`.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
    /// `remainingItemCount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_item_count: Option<i64>,
}

/// `metav1.StatusDetails`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// The name of the resource concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its API group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Its kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Its UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The individual causes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// Seconds a client should wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<i32>,
}

/// `metav1.StatusCause`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// The cause type (Go field `Type`), serialized as `"reason"`.
    #[serde(default, rename = "reason", skip_serializing_if = "Option::is_none")]
    pub cause_type: Option<String>,
    /// A human-readable description; the decimal exit code for `ExitCode` causes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The field concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// What an exec ended with, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The command succeeded (exit code 0).
    Success,
    /// The command exited with this non-zero code.
    ExitCode(u8),
    /// The session failed with this message.
    Failure(String),
}

impl Status {
    /// `{"metadata":{},"status":"Success"}`.
    pub fn success() -> Self {
        Self {
            status: Some(STATUS_SUCCESS.to_owned()),
            ..Self::default()
        }
    }

    /// The Status of a command that exited with `code`; `text` is the runtime's description of
    /// the exit, appended to `command terminated with non-zero exit code: `.
    pub fn non_zero_exit_code(code: i32, text: &str) -> Self {
        Self {
            status: Some(STATUS_FAILURE.to_owned()),
            message: Some(format!(
                "command terminated with non-zero exit code: {text}"
            )),
            reason: Some(REASON_NON_ZERO_EXIT_CODE.to_owned()),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    cause_type: Some(CAUSE_EXIT_CODE.to_owned()),
                    message: Some(code.to_string()),
                    field: None,
                }],
                ..StatusDetails::default()
            }),
            ..Self::default()
        }
    }

    /// The Status of a command exit as the 1.32 apiserver's stream translator writes it on the
    /// v5 channel: code 0 is success, anything else `NonZeroExitCode` with client-go's text
    /// `command terminated with exit code <code>`.
    pub fn from_exit_code(code: i32) -> Self {
        if code == 0 {
            return Self::success();
        }
        Self::non_zero_exit_code(code, &format!("command terminated with exit code {code}"))
    }

    /// `apierrors.NewInternalError(err)`: `Internal error occurred: <message>`, code 500.
    pub fn internal_error(message: &str) -> Self {
        Self {
            status: Some(STATUS_FAILURE.to_owned()),
            message: Some(format!("Internal error occurred: {message}")),
            reason: Some(REASON_INTERNAL_ERROR.to_owned()),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    message: Some(message.to_owned()),
                    ..StatusCause::default()
                }],
                ..StatusDetails::default()
            }),
            code: Some(500),
            ..Self::default()
        }
    }

    /// Parses a Status from the error channel's bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(Error::StatusJson)
    }

    /// The compact JSON the server writes on the error channel.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(Error::StatusJson)
    }

    /// Interprets the Status as client-go's `errorDecoderV4` does.
    pub fn outcome(&self) -> Result<ExecOutcome> {
        match self.status.as_deref() {
            Some(STATUS_SUCCESS) => Ok(ExecOutcome::Success),
            Some(STATUS_FAILURE) => {
                if self.reason.as_deref() != Some(REASON_NON_ZERO_EXIT_CODE) {
                    return Ok(ExecOutcome::Failure(
                        self.message.clone().unwrap_or_default(),
                    ));
                }
                let Some(details) = &self.details else {
                    return Err(Error::StatusProtocol("details must be set".to_owned()));
                };
                let cause = details
                    .causes
                    .iter()
                    .find(|c| c.cause_type.as_deref() == Some(CAUSE_EXIT_CODE))
                    .ok_or_else(|| {
                        Error::StatusProtocol(format!("no {CAUSE_EXIT_CODE} cause given"))
                    })?;
                let text = cause.message.as_deref().unwrap_or_default();
                parse_exit_code(text).map(ExecOutcome::ExitCode)
            }
            _ => Err(Error::StatusProtocol("unknown error".to_owned())),
        }
    }

    /// The exit code the Status reports, as client-go derives it (0 for success).
    pub fn exit_code(&self) -> Option<u8> {
        match self.outcome() {
            Ok(ExecOutcome::Success) => Some(0),
            Ok(ExecOutcome::ExitCode(code)) => Some(code),
            _ => None,
        }
    }
}

/// Decodes a whole error stream: a JSON Status for v4/v5 (`status_json`), otherwise the plain
/// text older protocols write only on failure (nothing means success).
pub fn decode_error_stream(bytes: &[u8], status_json: bool) -> Result<ExecOutcome> {
    if status_json {
        return Status::from_json(bytes)?.outcome();
    }
    if bytes.is_empty() {
        return Ok(ExecOutcome::Success);
    }
    Ok(ExecOutcome::Failure(
        String::from_utf8_lossy(bytes).into_owned(),
    ))
}

/// `strconv.ParseUint(text, 10, 8)`: decimal digits only, 0 to 255.
fn parse_exit_code(text: &str) -> Result<u8> {
    if !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && let Ok(code) = text.parse::<u8>()
    {
        return Ok(code);
    }
    Err(Error::StatusProtocol(format!(
        "invalid exit code value {text:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The v5 status of `sh -c 'echo hi; exit 3'` as k8s-protocols §1.5 gives it.
    const EXIT_3: &str = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: command terminated with exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;

    #[test]
    fn success_json_is_exact() {
        assert_eq!(
            Status::success().to_json().unwrap(),
            br#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(Status::from_exit_code(0), Status::success());
    }

    #[test]
    fn non_zero_exit_json_is_exact() {
        let status = Status::from_exit_code(3);
        assert_eq!(
            String::from_utf8(status.to_json().unwrap()).unwrap(),
            EXIT_3
        );
        assert_eq!(Status::from_json(EXIT_3.as_bytes()).unwrap(), status);
        assert_eq!(status.exit_code(), Some(3));
        let kubelet = Status::non_zero_exit_code(3, "exit status 3");
        assert_eq!(
            kubelet.message.as_deref(),
            Some("command terminated with non-zero exit code: exit status 3")
        );
    }

    #[test]
    fn internal_error_json_is_exact() {
        assert_eq!(
            String::from_utf8(Status::internal_error("boom").to_json().unwrap()).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError","details":{"causes":[{"message":"boom"}]},"code":500}"#
        );
        assert_eq!(
            Status::internal_error("boom").outcome().unwrap(),
            ExecOutcome::Failure("Internal error occurred: boom".to_owned())
        );
    }

    #[test]
    fn outcome_follows_error_decoder_v4() {
        let decode = |json: &str| Status::from_json(json.as_bytes()).unwrap().outcome();
        assert_eq!(
            decode(r#"{"metadata":{},"status":"Success"}"#).unwrap(),
            ExecOutcome::Success
        );
        assert_eq!(decode(EXIT_3).unwrap(), ExecOutcome::ExitCode(3));
        for bad_code in ["256", "-1", "+3", "", "x"] {
            let json = EXIT_3.replace(r#""message":"3""#, &format!(r#""message":"{bad_code}""#));
            assert!(
                matches!(decode(&json), Err(Error::StatusProtocol(_))),
                "{bad_code}"
            );
        }
        let no_details = r#"{"status":"Failure","reason":"NonZeroExitCode"}"#;
        assert!(matches!(decode(no_details), Err(Error::StatusProtocol(_))));
        let no_cause = r#"{"status":"Failure","reason":"NonZeroExitCode","details":{}}"#;
        assert!(matches!(decode(no_cause), Err(Error::StatusProtocol(_))));
        assert!(matches!(
            decode(r#"{"status":"Weird"}"#),
            Err(Error::StatusProtocol(_))
        ));
        // Tolerates TypeMeta and unknown fields, as Go does.
        let typed = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","x":1}"#;
        assert_eq!(decode(typed).unwrap(), ExecOutcome::Success);
    }

    #[test]
    fn plain_text_error_streams() {
        assert_eq!(
            decode_error_stream(b"", false).unwrap(),
            ExecOutcome::Success
        );
        assert_eq!(
            decode_error_stream(b"command terminated", false).unwrap(),
            ExecOutcome::Failure("command terminated".to_owned())
        );
        assert!(decode_error_stream(b"", true).is_err());
    }
}
