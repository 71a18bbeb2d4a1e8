//! The `[policy]` section as written in the configuration, and every check serde cannot make,
//! reported all at once so an operator fixes a file in one pass.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::pattern;

/// The `[policy]` section: the roles. With no role that applies, a person may do nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The roles, `[[policy.roles]]`.
    pub roles: Vec<Role>,
}

/// A role: who it applies to, and what its members may do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Role {
    /// The name, shown in reasons and the audit trail.
    pub name: String,
    /// Usernames (as authentication maps them, e.g. `oidc:alice`), matched exactly.
    pub users: Vec<String>,
    /// Groups (as mapped), matched exactly.
    pub groups: Vec<String>,
    /// What members may do.
    pub rules: Vec<Rule>,
    /// Whom members may impersonate (`kubectl --as`).
    pub impersonate: Vec<ImpersonateRule>,
    /// Show secret values unmasked to members (default: masked).
    pub show_secrets: bool,
    /// How members' sessions are recorded.
    pub recording: RecordingMode,
    /// Extra patterns redacted from terminal output in members' recordings.
    pub redact: Vec<RedactPattern>,
    /// Members may approve other people's access requests.
    pub approve: bool,
    /// With `approve`: the clusters whose requests members may decide (patterns; empty: any).
    pub approve_clusters: Vec<String>,
    /// With `approve`: the namespaces whose requests members may decide (patterns; empty:
    /// any). As in rules, only `*` reaches a request for a cluster-scoped action.
    pub approve_namespaces: Vec<String>,
    /// Members may be handed `system:` identities (impersonation targets, grant groups).
    pub break_glass: bool,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Allow it.
    #[default]
    Allow,
    /// Refuse it, whatever else allows it.
    Deny,
    /// Allow it only under an approved access request.
    Approval,
}

/// How a session is recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordingMode {
    /// A session that cannot be recorded does not run.
    #[default]
    Strict,
    /// Recording failures are logged and the session goes on.
    BestEffort,
}

/// One redaction pattern for terminal output in recordings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactPattern {
    /// The name in `[REDACTED:<name>]`.
    pub name: String,
    /// A regular expression; a capture group named `s` redacts only that group.
    pub pattern: String,
}

/// What a role allows, denies or holds for approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rule {
    /// Allow (default), deny or approval.
    pub effect: Effect,
    /// Cluster name patterns (default `["*"]`).
    pub clusters: Vec<String>,
    /// Namespace patterns (default `["*"]`). `"*"` also matches cluster-scoped requests; any
    /// other pattern never does.
    pub namespaces: Vec<String>,
    /// Actions: kube verbs and `exec`, `attach`, `portforward`, `proxy`, `debug`; `"*"`.
    pub actions: Vec<String>,
    /// Resources: `pods`, `deployments.apps`, `pods/log`, `*` (patterns).
    pub resources: Vec<String>,
    /// Object-name patterns (default `["*"]`, which also matches collections).
    pub names: Vec<String>,
    /// Port-forward only: the ports; empty means any.
    pub ports: Vec<PortRange>,
    /// Non-resource URL patterns like `/healthz*`.
    pub paths: Vec<String>,
    /// Approval rules: groups an approved grant adds to the effective identity.
    pub grant_groups: Vec<String>,
    /// Approval rules: the longest grant, like `2h` (default 1h).
    pub max_grant: Option<String>,
    /// Shown to the person when this rule denies.
    pub reason: Option<String>,
}

impl Default for Rule {
    fn default() -> Self {
        let all = || vec!["*".to_owned()];
        Rule {
            effect: Effect::Allow,
            clusters: all(),
            namespaces: all(),
            actions: Vec::new(),
            resources: Vec::new(),
            names: all(),
            ports: Vec::new(),
            paths: Vec::new(),
            grant_groups: Vec::new(),
            max_grant: None,
            reason: None,
        }
    }
}

/// Whom a role's members may impersonate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImpersonateRule {
    /// Allow (default), deny or approval.
    pub effect: Effect,
    /// Usernames that may be impersonated (patterns; `*` never matches a `system:` name).
    pub users: Vec<String>,
    /// Groups that may be impersonated (`--as-group`); every requested group must match.
    pub groups: Vec<String>,
    /// UIDs that may be impersonated (`--as-uid`).
    pub uids: Vec<String>,
    /// Approval rules: groups an approved grant adds.
    pub grant_groups: Vec<String>,
    /// Approval rules: the longest grant (default 1h).
    pub max_grant: Option<String>,
}

/// A port or an inclusive range of ports, written `8080` or `"8000-8099"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PortSpec", into = "PortSpec")]
pub struct PortRange {
    /// The first port.
    pub first: u16,
    /// The last port (equal to `first` for one port).
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// How a port range is written in TOML.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PortSpec {
    One(i64),
    Range(String),
}

impl TryFrom<PortSpec> for PortRange {
    type Error = String;

    fn try_from(spec: PortSpec) -> Result<Self, Self::Error> {
        let port = |n: i64| {
            u16::try_from(n)
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("{n} is not a port (1-65535)"))
        };
        let (first, last) = match spec {
            PortSpec::One(n) => (port(n)?, port(n)?),
            PortSpec::Range(text) => {
                let parse = |s: &str| {
                    s.trim().parse::<i64>().map_err(|_| {
                        format!("{text:?} is not a port or a range like \"8000-8099\"")
                    })
                };
                match text.split_once('-') {
                    Some((a, b)) => (port(parse(a)?)?, port(parse(b)?)?),
                    None => (port(parse(&text)?)?, port(parse(&text)?)?),
                }
            }
        };
        if first > last {
            return Err(format!("the port range {first}-{last} is backwards"));
        }
        Ok(PortRange { first, last })
    }
}

impl From<PortRange> for PortSpec {
    fn from(range: PortRange) -> Self {
        if range.first == range.last {
            PortSpec::One(i64::from(range.first))
        } else {
            PortSpec::Range(range.to_string())
        }
    }
}

/// The actions a resource rule may name.
pub const ACTIONS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "exec",
    "attach",
    "portforward",
    "proxy",
    "debug",
];

/// The actions a non-resource (`paths`) rule may name: lowercase HTTP methods.
pub const PATH_ACTIONS: &[&str] = &["get", "head", "post", "put", "patch", "delete", "options"];

/// A grant lasts at most this long when its rule says nothing.
pub const DEFAULT_MAX_GRANT: Duration = Duration::from_secs(3600);

/// Reads `max_grant`; `None` means the default.
pub fn max_grant(text: Option<&str>) -> Result<Duration, String> {
    match text {
        None => Ok(DEFAULT_MAX_GRANT),
        Some(text) => match crate::approval::parse_duration(text) {
            Ok(d) if d.is_zero() => Err("max_grant must be longer than 0s".into()),
            other => other,
        },
    }
}

/// A file holding only a `[policy]` section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    policy: PolicyConfig,
}

impl PolicyConfig {
    /// Reads a TOML text that holds only a `[policy]` section (as `docs/policy.md` shows it).
    /// The problems are not checked here: see [`PolicyConfig::problems`].
    pub fn from_section(text: &str) -> Result<PolicyConfig, String> {
        toml::from_str::<Section>(text)
            .map(|s| s.policy)
            .map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Every problem with the policy, each naming the role and rule it concerns.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, role) in self.roles.iter().enumerate() {
            let at = format!("policy.roles[{i}] ({:?})", role.name);
            if role.name.trim().is_empty() || role.name.chars().any(char::is_control) {
                problems.push(format!("{at}: name must be a non-empty printable name"));
            } else if !names.insert(role.name.as_str()) {
                problems.push(format!("{at}: the name is used twice"));
            }
            role.problems(&at, &mut problems);
        }
        problems
    }
}

impl Role {
    fn problems(&self, at: &str, problems: &mut Vec<String>) {
        if self.users.is_empty() && self.groups.is_empty() {
            problems.push(format!(
                "{at}: names no users or groups, so it applies to nobody"
            ));
        }
        for (key, list) in [("users", &self.users), ("groups", &self.groups)] {
            if list.iter().any(|n| n.contains('*') || n.trim().is_empty()) {
                problems.push(format!(
                    "{at}.{key}: names are matched exactly; patterns and empty names are not allowed"
                ));
            }
        }
        let scoped = !(self.approve_clusters.is_empty() && self.approve_namespaces.is_empty());
        if scoped && !self.approve {
            problems.push(format!(
                "{at}: approve_clusters and approve_namespaces need approve = true"
            ));
        }
        for (j, rule) in self.rules.iter().enumerate() {
            rule.problems(&format!("{at}.rules[{j}]"), self.break_glass, problems);
        }
        for (j, rule) in self.impersonate.iter().enumerate() {
            rule.problems(
                &format!("{at}.impersonate[{j}]"),
                self.break_glass,
                problems,
            );
        }
        for (j, redact) in self.redact.iter().enumerate() {
            let at = format!("{at}.redact[{j}]");
            if redact.name.is_empty() || !redact.name.bytes().all(|b| b.is_ascii_graphic()) {
                problems.push(format!("{at}: name must be a non-empty printable word"));
            }
            let one = [(redact.name.as_str(), redact.pattern.as_str())];
            if let Err(err) = custody_recorder::redaction::Redactor::new(&one, 0) {
                // The regex error spans lines; a problem is one line.
                let err = err.to_string();
                let err: Vec<&str> = err.split_whitespace().collect();
                problems.push(format!("{at}: {}", err.join(" ")));
            }
        }
    }
}

impl Rule {
    fn problems(&self, at: &str, break_glass: bool, problems: &mut Vec<String>) {
        let mut push = |p: String| problems.push(format!("{at}: {p}"));
        if self.actions.is_empty() {
            push("actions: name at least one action, or \"*\"".into());
        }
        match (self.resources.is_empty(), self.paths.is_empty()) {
            (true, true) => {
                push("name resources (API objects) or paths (non-resource URLs)".into());
            }
            (false, false) => push("a rule is about resources or about paths, not both".into()),
            _ => {}
        }
        let known = if self.resources.is_empty() && !self.paths.is_empty() {
            PATH_ACTIONS
        } else {
            ACTIONS
        };
        for action in &self.actions {
            if action != "*" && !known.contains(&action.as_str()) {
                let hint = if action == "port-forward" {
                    " (write portforward)".to_owned()
                } else {
                    format!(" (one of {}, or \"*\")", known.join(", "))
                };
                push(format!("actions: unknown action {action:?}{hint}"));
            }
        }
        for (key, list) in [
            ("clusters", &self.clusters),
            ("namespaces", &self.namespaces),
            ("names", &self.names),
        ] {
            if list.is_empty() {
                push(format!(
                    "{key}: an empty list matches nothing; leave it out to mean \"*\""
                ));
            }
        }
        if self.paths.iter().any(|p| p != "*" && !p.starts_with('/')) {
            push("paths: each path starts with '/' (or is \"*\")".into());
        }
        let forwards = self.actions.iter().any(|a| a == "*" || a == "portforward");
        if !self.ports.is_empty() && !forwards {
            push(
                "ports: only port-forward rules name ports (add \"portforward\" to actions)".into(),
            );
        }
        if self.effect == Effect::Approval {
            if let Err(err) = max_grant(self.max_grant.as_deref()) {
                push(format!("max_grant: {err}"));
            }
            grant_group_problems(&self.grant_groups, break_glass, &mut push);
        } else if !self.grant_groups.is_empty() || self.max_grant.is_some() {
            push("grant_groups and max_grant belong to rules with effect = \"approval\"".into());
        }
    }
}

impl ImpersonateRule {
    fn problems(&self, at: &str, break_glass: bool, problems: &mut Vec<String>) {
        let mut push = |p: String| problems.push(format!("{at}: {p}"));
        if self.users.is_empty() {
            push(
                "users: name the users that may be impersonated (\"*\" for any non-system user)"
                    .into(),
            );
        }
        for (key, list) in [
            ("users", &self.users),
            ("groups", &self.groups),
            ("uids", &self.uids),
        ] {
            for name in list.iter().filter(|n| pattern::is_system(n)) {
                if !break_glass {
                    push(format!(
                        "{key}: {name:?} hands out a system: identity; only a role with break_glass = true may"
                    ));
                }
            }
        }
        if self.effect == Effect::Approval {
            if let Err(err) = max_grant(self.max_grant.as_deref()) {
                push(format!("max_grant: {err}"));
            }
            grant_group_problems(&self.grant_groups, break_glass, &mut push);
        } else if !self.grant_groups.is_empty() || self.max_grant.is_some() {
            push("grant_groups and max_grant belong to rules with effect = \"approval\"".into());
        }
    }
}

/// Grant groups are added to the cluster identity as written, so they must be exact names,
/// and `system:` ones (`system:masters`) only on a break-glass role.
fn grant_group_problems(groups: &[String], break_glass: bool, push: &mut impl FnMut(String)) {
    for group in groups {
        if group.contains('*') || group.trim().is_empty() || group.chars().any(char::is_control) {
            push(format!(
                "grant_groups: {group:?} must be an exact group name"
            ));
        } else if pattern::is_system(group) && !break_glass {
            push(format!(
                "grant_groups: {group:?} hands out a system: group; only a role with break_glass = true may"
            ));
        }
    }
}
