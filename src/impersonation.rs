//! The effective identity of a request: who the cluster is told is asking.
//!
//! By default it is the authenticated person. A client asking to impersonate someone else
//! (`kubectl --as`, `--as-group`, `--as-uid`, i.e. `Impersonate-*` request headers) is honoured
//! only when an [`AllowRule`] lets that person impersonate that target. The client's own
//! `Impersonate-*` headers are never passed on: [`headers`] rebuilds them from the decision.

use std::fmt::Write;

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::principal::{EffectiveIdentity, Principal};

pub mod headers;

/// Who may impersonate whom. A simple allow-list; anything not allowed is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImpersonationConfig {
    /// The domain of the `Impersonate-Extra-<domain>/<key>` attributes the gateway adds
    /// (initiator, request id, client address), so the cluster's audit log names the real
    /// person. Lowercase DNS-like name; default `custody.dev`.
    pub extra_domain: String,
    /// The rules; a request to impersonate is allowed if one rule allows it.
    pub allow: Vec<AllowRule>,
}

impl Default for ImpersonationConfig {
    fn default() -> Self {
        Self {
            extra_domain: DEFAULT_EXTRA_DOMAIN.to_owned(),
            allow: Vec::new(),
        }
    }
}

impl ImpersonationConfig {
    /// Checks the configuration: a usable extra domain, and no rule that names nobody.
    pub fn validate(&self) -> Result<(), String> {
        let domain = &self.extra_domain;
        let ok = !domain.is_empty()
            && domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'));
        if !ok {
            return Err(format!(
                "impersonation.extra_domain {domain:?} must be a lowercase domain name"
            ));
        }
        for (i, rule) in self.allow.iter().enumerate() {
            if rule.users.is_empty() && rule.groups.is_empty() {
                return Err(format!(
                    "impersonation.allow[{i}] names no users or groups who may impersonate"
                ));
            }
        }
        Ok(())
    }
}

/// One allow-list entry: these people may impersonate these targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AllowRule {
    /// Usernames (as authentication maps them) who may impersonate.
    pub users: Vec<String>,
    /// Members of these groups may impersonate.
    pub groups: Vec<String>,
    /// Usernames they may impersonate; `"*"` matches any name except `system:` names, which
    /// must be listed exactly.
    pub targets_users: Vec<String>,
    /// Groups they may impersonate (`--as-group`); `"*"` matches any group except `system:`
    /// groups (such as `system:masters`), which must be listed exactly.
    pub targets_groups: Vec<String>,
    /// UIDs they may impersonate (`--as-uid`); `"*"` matches any. A request that names a uid
    /// is refused unless one is listed: the uid is part of the identity the cluster sees, so
    /// it is checked like the user and the groups.
    pub targets_uids: Vec<String>,
}

impl AllowRule {
    fn applies_to(&self, principal: &Principal) -> bool {
        self.users.contains(&principal.username)
            || principal.groups.iter().any(|g| self.groups.contains(g))
    }

    fn permits(&self, target: &EffectiveIdentity) -> bool {
        matches_target(&self.targets_users, &target.user)
            && target
                .groups
                .iter()
                .all(|g| matches_target(&self.targets_groups, g))
            && (target.uid.is_empty() || matches_target(&self.targets_uids, &target.uid))
    }
}

/// Why a request's identity was refused. The message is returned to the client in a 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImpersonationError {
    /// The person may not impersonate this target.
    #[error("{initiator} may not impersonate {target}")]
    NotAllowed {
        /// The authenticated username.
        initiator: String,
        /// What was asked for, e.g. `user "carol" with groups [system:masters]`.
        target: String,
    },
    /// Groups or a uid without a user.
    #[error("impersonating groups or a uid requires a user (--as)")]
    MissingUser,
    /// `Impersonate-Extra-*` from the client: the extras are the gateway's.
    #[error("impersonating extra attributes is not supported")]
    ExtraNotSupported,
    /// A requested value that cannot be sent safely (control characters, non-ASCII).
    #[error("the impersonation header {0} has an invalid value")]
    InvalidValue(String),
}

/// Decides the effective identity for `principal`, given the request's headers.
pub fn decide(
    config: &ImpersonationConfig,
    principal: &Principal,
    request_headers: &HeaderMap,
) -> Result<EffectiveIdentity, ImpersonationError> {
    let Some(target) = requested(request_headers)? else {
        return Ok(EffectiveIdentity {
            user: principal.username.clone(),
            groups: principal.groups.clone(),
            uid: String::new(),
        });
    };
    if config
        .allow
        .iter()
        .any(|rule| rule.applies_to(principal) && rule.permits(&target))
    {
        Ok(target)
    } else {
        Err(ImpersonationError::NotAllowed {
            initiator: principal.username.clone(),
            target: describe(&target),
        })
    }
}

/// The identity the client asked to impersonate (`Impersonate-User`, `-Group`, `-Uid`), if it
/// asked; `None` means as oneself. The gateway hands it to the policy. Only the canonical
/// header names count as a request; look-alikes (`Impersonate_User`) are stripped by
/// [`headers`] and ignored. Refuses extras, groups or a uid without a user, and unsafe values.
pub fn requested(h: &HeaderMap) -> Result<Option<EffectiveIdentity>, ImpersonationError> {
    if h.keys()
        .any(|k| k.as_str().starts_with("impersonate-extra-"))
    {
        return Err(ImpersonationError::ExtraNotSupported);
    }
    let users = values(h, "Impersonate-User")?;
    let groups = values(h, "Impersonate-Group")?;
    let uids = values(h, "Impersonate-Uid")?;
    if users.is_empty() && groups.is_empty() && uids.is_empty() {
        return Ok(None);
    }
    let user = match users.as_slice() {
        [one] if !one.is_empty() => one.clone(),
        // client-go sends an empty Impersonate-User when only groups are configured.
        [] | [_] => return Err(ImpersonationError::MissingUser),
        _ => return Err(ImpersonationError::InvalidValue("Impersonate-User".into())),
    };
    let uid = match uids.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        _ => return Err(ImpersonationError::InvalidValue("Impersonate-Uid".into())),
    };
    Ok(Some(EffectiveIdentity { user, groups, uid }))
}

fn values(h: &HeaderMap, name: &str) -> Result<Vec<String>, ImpersonationError> {
    h.get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|s| headers::is_safe_value(s))
                .map(str::to_owned)
                .ok_or_else(|| ImpersonationError::InvalidValue(name.to_owned()))
        })
        .collect()
}

/// `*` matches any name that is not a `system:` name; those match only when listed exactly,
/// so a wildcard can never grant `system:masters` or a service account.
fn matches_target(allowed: &[String], name: &str) -> bool {
    allowed
        .iter()
        .any(|a| a == name || (a == "*" && !name.starts_with("system:")))
}

fn describe(target: &EffectiveIdentity) -> String {
    let mut out = format!("user {:?}", target.user);
    if !target.groups.is_empty() {
        let _ = write!(out, " with groups [{}]", target.groups.join(" "));
    }
    if !target.uid.is_empty() {
        let _ = write!(out, " and uid {:?}", target.uid);
    }
    out
}

const DEFAULT_EXTRA_DOMAIN: &str = "custody.dev";

#[cfg(test)]
mod tests;
