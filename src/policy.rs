//! The access policy: roles from the configuration, compiled once, and the pure decision for
//! one request (allow, deny, or needs approval) with a reason for the person and the audit
//! trail. No I/O here: the gateway supplies what it knows about a request and the grants it has.
//!
//! `config` owns the TOML shape and its checks, `pattern` the glob matcher, `action` what a
//! request really does (exec, debug, proxy, ...), `evaluate` the decision itself, `kubectl`
//! the mapping from a kubectl command line to the request the gateway would see (for
//! `custody policy test`) and `example` the documented example policy. `docs/policy.md` is
//! the reference.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::classify::RequestInfo;
use crate::principal::EffectiveIdentity;

mod action;
mod config;
mod evaluate;
mod example;
pub mod kubectl;
mod pattern;

pub use action::Action;
pub use config::{
    Effect, ImpersonateRule, PolicyConfig, PortRange, RecordingMode, RedactPattern, Role, Rule,
};
pub use example::EXAMPLE_POLICY;

/// A policy checked and ready to decide. Built only from a configuration without problems.
#[derive(Debug, Clone)]
pub struct Policy {
    roles: Vec<Role>,
}

/// Why a policy could not be built: every problem, each naming the role and rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct PolicyError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl Policy {
    /// Checks the configuration and keeps it for deciding.
    pub fn new(config: &PolicyConfig) -> Result<Policy, PolicyError> {
        let problems = config.problems();
        if problems.is_empty() {
            Ok(Policy {
                roles: config.roles.clone(),
            })
        } else {
            Err(PolicyError { problems })
        }
    }

    /// The names of the roles that apply to `principal` (by username or group), in order.
    pub fn roles_for(&self, principal: &crate::principal::Principal) -> Vec<String> {
        self.applying(principal)
            .map(|role| role.name.clone())
            .collect()
    }
}

/// What the gateway knows about one request.
#[derive(Debug, Clone)]
pub struct RequestAttributes<'a> {
    /// The cluster, as the gateway names it.
    pub cluster: &'a str,
    /// The classified request.
    pub info: &'a RequestInfo,
    /// The HTTP method.
    pub method: &'a str,
    /// An `Upgrade` header (WebSocket, SPDY) or a `CONNECT`.
    pub upgrade: bool,
    /// The ports from the query (`ports=`), often empty (SPDY names them per stream).
    pub ports: Vec<u16>,
    /// The identity the client asked to impersonate; `None` means as oneself.
    pub impersonate: Option<&'a EffectiveIdentity>,
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Forward it, under these terms.
    Allow(Allowed),
    /// Refuse it.
    Deny {
        /// Why, for the person at the keyboard (without a `custody: ` prefix).
        reason: String,
    },
    /// Refuse it for now: an approved access request for `scope` would allow it.
    NeedsApproval {
        /// Why, including the command to ask with.
        reason: String,
        /// Exactly what to ask for.
        scope: Scope,
    },
}

impl Decision {
    /// `allow`, `deny` or `needs-approval`.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Allow(_) => "allow",
            Decision::Deny { .. } => "deny",
            Decision::NeedsApproval { .. } => "needs-approval",
        }
    }

    /// The reason, whatever the outcome.
    pub fn reason(&self) -> &str {
        match self {
            Decision::Allow(allowed) => &allowed.reason,
            Decision::Deny { reason } | Decision::NeedsApproval { reason, .. } => reason,
        }
    }
}

/// The terms of an allowed request, from the roles whose rules allowed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowed {
    /// Why, for the audit trail.
    pub reason: String,
    /// The roles whose rules allowed it.
    pub roles: Vec<String>,
    /// Whether secret values may be shown unmasked (any allowing role says so).
    pub show_secrets: bool,
    /// How a session must be recorded: strict unless every allowing role says best-effort.
    pub recording: RecordingMode,
    /// Extra redaction patterns for terminal output in recordings (of every allowing role).
    pub redact: Vec<RedactPattern>,
    /// For port-forward: the ports allowed, to enforce per stream; `None` means any port.
    pub ports: Option<Vec<PortRange>>,
    /// The id of the grant that allowed it, if a grant did.
    pub grant: Option<String>,
    /// Groups that grant adds to the effective identity.
    pub grant_groups: Vec<String>,
    /// When that grant ends (Unix seconds), so a session it allowed can be ended then.
    pub grant_expires_at: Option<i64>,
}

/// What an access request asks for, and what a grant allows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The cluster.
    pub cluster: String,
    /// The namespace; empty for cluster-scoped requests.
    pub namespace: String,
    /// One object (usually a pod) by name; `None` means any in the namespace.
    pub pod: Option<String>,
    /// The action ([`Action::verb`]): `exec`, `attach`, `portforward`, `debug`, `get`, ...
    pub action: String,
    /// The user to impersonate, if any.
    pub as_user: Option<String>,
    /// The groups to impersonate with that user.
    pub as_groups: Vec<String>,
}

/// An approved access request, as the gateway hands it to [`Policy::decide`].
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Grant {
    /// The grant (request) id.
    pub id: String,
    /// The username of who asked; only they may use it.
    pub requester: String,
    /// What it allows.
    pub scope: Scope,
    /// When it ends (Unix seconds, exclusive).
    pub expires_at: i64,
    /// Groups it adds to the effective identity.
    pub groups: Vec<String>,
}

/// What an approval may grant for a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantTerms {
    /// Groups an approved grant adds to the effective identity.
    pub groups: Vec<String>,
    /// The longest the grant may last.
    pub max: Duration,
}

#[cfg(test)]
mod tests;
