//! The types shared across crates: who a session belongs to, what it targets, and the events
//! it is made of. The gateway fills them in, the recorder writes them, the index and the player
//! read them.

use serde::{Deserialize, Serialize};

/// What kind of session a recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionKind {
    /// `kubectl exec`.
    Exec,
    /// `kubectl attach`.
    Attach,
    /// `kubectl port-forward`.
    PortForward,
    /// A plain API request stream (for example a watch), recorded as an API session.
    Api,
}

/// The authenticated person who started the session (who really asked).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initiator {
    /// The token issuer (`iss`), or the authentication method for non-OIDC principals.
    pub issuer: String,
    /// The subject (`sub`).
    pub subject: String,
    /// The username as the gateway maps it (with prefix), e.g. `oidc:alice@example.com`.
    pub username: String,
    /// The groups as the gateway maps them.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The identity the cluster was told the request acts as (the impersonation headers sent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveIdentity {
    /// `Impersonate-User`.
    pub user: String,
    /// `Impersonate-Group`, one per group.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `Impersonate-Uid`, empty when not sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// Everything a recording's header says about the session: identity and target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMeta {
    /// The session id (a UUID), also the file name stem.
    pub session_id: String,
    /// Exec, attach, port-forward or API.
    pub kind: SessionKind,
    /// Who really asked.
    pub initiator: Initiator,
    /// Who the cluster was told it is.
    pub effective: EffectiveIdentity,
    /// The cluster name as configured in the gateway.
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The container; empty for port-forward.
    #[serde(default)]
    pub container: String,
    /// The command argv (exec only).
    #[serde(default)]
    pub command: Vec<String>,
    /// Whether the session has a terminal.
    #[serde(default)]
    pub tty: bool,
    /// The client's address as the gateway's socket saw it.
    pub client_addr: String,
    /// The client's user agent.
    #[serde(default)]
    pub user_agent: String,
    /// The approval that allowed the session, if one was needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// The gateway instance that recorded it.
    pub gateway_id: String,
    /// In cluster mode, the replica that recorded it (absent on one machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
    /// Start time, microseconds since the Unix epoch.
    pub started_at_us: i64,
    /// The initial terminal size (columns, rows), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_size: Option<(u16, u16)>,
}

/// One thing that happened in a session, at a time relative to the session start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Microseconds since the session started.
    pub time_us: u64,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of events a recording holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Bytes the process wrote to stdout (or to the terminal, with a tty).
    Output(Vec<u8>),
    /// Bytes the process wrote to stderr (non-tty sessions).
    Stderr(Vec<u8>),
    /// Bytes the person typed or piped (stdin).
    Input(Vec<u8>),
    /// The terminal was resized.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// The process exited (the error channel's Status, decoded).
    Exit {
        /// The exit code, `None` when the Status carried no code.
        code: Option<i32>,
        /// The Status message, for failures that are not exit codes.
        message: String,
    },
    /// A marker (approval granted, policy note, ...).
    Marker(String),
    /// A port-forward connection opened.
    ConnectionOpened {
        /// The gateway's connection number within the session.
        connection: u32,
        /// The pod port.
        port: u16,
    },
    /// A port-forward connection closed.
    ConnectionClosed {
        /// The connection number.
        connection: u32,
        /// Bytes sent from the client to the pod.
        bytes_to_pod: u64,
        /// Bytes sent from the pod to the client.
        bytes_from_pod: u64,
        /// SHA-256 of the client-to-pod byte stream, hex.
        sha256_to_pod: String,
        /// SHA-256 of the pod-to-client byte stream, hex.
        sha256_from_pod: String,
    },
    /// Port-forward payload, when capture is configured.
    ConnectionData {
        /// The connection number.
        connection: u32,
        /// True for client-to-pod bytes.
        to_pod: bool,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SessionStatus {
    /// Still being written (no manifest yet).
    Open,
    /// Ended normally.
    Complete,
    /// The writer stopped without sealing (crash); sealed later by recovery.
    Interrupted,
    /// Ended by the gateway, with a reason such as `recording_failure`, `client_timeout`,
    /// `upstream_closed`, `approval_revoked`.
    Terminated {
        /// Why.
        reason: String,
    },
}

impl SessionKind {
    /// The kind's name as the index and the API write it (`exec`, `attach`, `port-forward`,
    /// `api`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Attach => "attach",
            Self::PortForward => "port-forward",
            Self::Api => "api",
        }
    }

    /// The kind a [`SessionKind::name`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "exec" => Self::Exec,
            "attach" => Self::Attach,
            "port-forward" => Self::PortForward,
            "api" => Self::Api,
            _ => return None,
        })
    }
}

impl SessionStatus {
    /// The status's name (`open`, `complete`, `interrupted`, `terminated`) and, when
    /// terminated, its reason.
    pub fn name(&self) -> (&'static str, Option<&str>) {
        match self {
            Self::Open => ("open", None),
            Self::Complete => ("complete", None),
            Self::Interrupted => ("interrupted", None),
            Self::Terminated { reason } => ("terminated", Some(reason)),
        }
    }

    /// The status a [`SessionStatus::name`] names (a missing reason is empty).
    pub fn from_name(name: &str, reason: Option<String>) -> Option<Self> {
        Some(match name {
            "open" => Self::Open,
            "complete" => Self::Complete,
            "interrupted" => Self::Interrupted,
            "terminated" => Self::Terminated {
                reason: reason.unwrap_or_default(),
            },
            _ => return None,
        })
    }
}
