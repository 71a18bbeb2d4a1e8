//! The decision: every rule of every role that applies is consulted; a matching deny wins,
//! then a matching allow, then a matching approval rule (allowed only under a grant for
//! exactly this scope); with nothing matching the answer is no.

use std::fmt::Write as _;
use std::time::Duration;

use super::config::{Effect, ImpersonateRule, PortRange, RecordingMode, Role, Rule, max_grant};
use super::{
    Action, Allowed, Decision, Grant, GrantTerms, Policy, RequestAttributes, Scope, pattern,
};
use crate::principal::{EffectiveIdentity, Principal};

/// Paths any person with a role may read: kubectl cannot even start without discovery.
const DISCOVERY: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/version",
    "/openapi/*",
];

/// What the rules of the applying roles say about one thing (an action or a target).
struct Findings<'p> {
    deny: Option<(&'p Role, Option<&'p str>)>,
    allow: Vec<&'p Role>,
    approval: Vec<(&'p Role, &'p [String], Option<&'p str>)>,
    /// Port-forward: the ranges of the allow rules (`None` in the list: a rule with any port).
    allow_ports: Vec<Option<&'p [PortRange]>>,
    /// The same for the approval rules, for what a grant allows.
    approval_ports: Vec<Option<&'p [PortRange]>>,
    /// Port-forward with ports not yet known: ranges denied, to take out of what is allowed.
    deny_ports: Vec<PortRange>,
}

impl Findings<'_> {
    fn new() -> Self {
        Findings {
            deny: None,
            allow: Vec::new(),
            approval: Vec::new(),
            allow_ports: Vec::new(),
            approval_ports: Vec::new(),
            deny_ports: Vec::new(),
        }
    }

    fn allowed(&self) -> bool {
        self.deny.is_none() && !self.allow.is_empty()
    }
}

/// The request as the matcher needs it.
struct Subject<'a> {
    cluster: &'a str,
    action: &'a Action,
    is_resource: bool,
    /// `false` when only the action is known (an access request names no resource).
    resource_known: bool,
    ports: &'a [u16],
}

impl Policy {
    /// The roles that apply to `principal`: by username, or by a group in common.
    pub(super) fn applying<'p>(
        &'p self,
        principal: &'p Principal,
    ) -> impl Iterator<Item = &'p Role> + 'p {
        self.roles.iter().filter(move |role| {
            role.users.contains(&principal.username)
                || principal.groups.iter().any(|g| role.groups.contains(g))
        })
    }

    /// Decides one request. `grants` are the approved access requests the gateway knows of
    /// (any person's; only the principal's own count), `now` is Unix seconds.
    pub fn decide(
        &self,
        principal: &Principal,
        req: &RequestAttributes<'_>,
        grants: &[Grant],
        now: i64,
    ) -> Decision {
        let action = Action::of(req);
        let roles: Vec<&Role> = self.applying(principal).collect();
        let user = &principal.username;
        let nobody = || Decision::Deny {
            reason: format!(
                "no role lets {user} {} {}",
                action.describe(),
                action.place(req.cluster)
            ),
        };
        if roles.is_empty() {
            return nobody();
        }
        let subject = Subject {
            cluster: req.cluster,
            action: &action,
            is_resource: req.info.is_resource,
            resource_known: true,
            ports: &req.ports,
        };
        let mut found = judge_action(&roles, &subject);
        if let Some((role, why)) = found.deny {
            return Decision::Deny {
                reason: denied(
                    role,
                    why,
                    &format!("{} {}", action.describe(), action.place(req.cluster)),
                ),
            };
        }
        let discovery =
            !req.info.is_resource && DISCOVERY.iter().any(|p| pattern::glob(p, &action.resource));
        if discovery && found.allow.is_empty() {
            found.allow.clone_from(&roles);
            found.allow_ports.push(None);
        }
        let target = req.impersonate.map(|t| (t, judge_target(&roles, t)));
        if let Some((t, f)) = &target {
            if let Some((role, _)) = f.deny {
                return Decision::Deny {
                    reason: format!(
                        "role {} does not let {user} impersonate {}",
                        role.name,
                        describe_target(t)
                    ),
                };
            }
            if f.allow.is_empty() && f.approval.is_empty() {
                return Decision::Deny {
                    reason: format!("no role lets {user} impersonate {}", describe_target(t)),
                };
            }
        }
        if found.allow.is_empty() && found.approval.is_empty() {
            return nobody();
        }
        let target_allowed = target.as_ref().is_none_or(|(_, f)| f.allowed());
        let as_text = req
            .impersonate
            .map(|t| format!(" as {}", describe_target(t)))
            .unwrap_or_default();
        let what = format!(
            "{} {}{as_text}",
            action.describe(),
            action.place(req.cluster)
        );
        if found.allowed() && target_allowed {
            let reason = if discovery && roles == found.allow {
                format!("API discovery is open to everyone with a role ({what})")
            } else {
                format!("{} {what}", allowing(&found.allow))
            };
            return allow(&found, &found.allow, &found.allow_ports, &action, reason);
        }
        let scope = Scope {
            cluster: req.cluster.to_owned(),
            namespace: action.namespace.clone(),
            pod: (!action.name.is_empty()).then(|| action.name.clone()),
            action: action.verb.clone(),
            as_user: req.impersonate.map(|t| t.user.clone()),
            as_groups: req
                .impersonate
                .map(|t| t.groups.clone())
                .unwrap_or_default(),
        };
        let target = target.map(|(_, f)| f);
        match grants.iter().find(|g| covers(g, user, &scope, now)) {
            Some(grant) => allow_by_grant(&found, &action, grant, &what),
            None => ask_for(&found, target.as_ref(), scope, &what),
        }
    }

    /// Whether `approver` may decide on access requests for `scope`: a role of theirs says
    /// `approve = true` and its `approve_clusters` and `approve_namespaces` (empty: any) reach
    /// the scope's cluster and namespace, so an approver for one team's namespaces cannot
    /// approve access to another's. The caller also checks that the approver is not the
    /// requester.
    pub fn may_approve(&self, approver: &Principal, scope: &Scope) -> bool {
        let reaches = |patterns: &[String], value: &str| {
            patterns.is_empty()
                || if value.is_empty() {
                    patterns.iter().any(|p| p == "*")
                } else {
                    pattern::any(patterns, value)
                }
        };
        self.applying(approver).any(|role| {
            role.approve
                && reaches(&role.approve_clusters, &scope.cluster)
                && reaches(&role.approve_namespaces, &scope.namespace)
        })
    }

    /// The terms an approval of `scope` for `requester` would get, or why it cannot be asked
    /// for: nothing but an approval rule would allow it. Several approval rules: the groups of
    /// all of them, for the shortest of their durations.
    pub fn requestable(&self, requester: &Principal, scope: &Scope) -> Result<GrantTerms, String> {
        let roles: Vec<&Role> = self.applying(requester).collect();
        let user = &requester.username;
        if roles.is_empty() {
            return Err(format!("no role applies to {user}"));
        }
        // An access request names the action, not the resource; the streaming actions can only
        // be about pods, everything else is matched on the action alone.
        let resource = match scope.action.as_str() {
            "exec" | "attach" | "portforward" => Some(format!("pods/{}", scope.action)),
            "debug" => Some("pods/ephemeralcontainers".to_owned()),
            _ => None,
        };
        let action = Action {
            verb: scope.action.clone(),
            resource: resource.clone().unwrap_or_default(),
            namespace: scope.namespace.clone(),
            name: scope.pod.clone().unwrap_or_default(),
        };
        let subject = Subject {
            cluster: &scope.cluster,
            action: &action,
            is_resource: true,
            resource_known: resource.is_some(),
            ports: &[],
        };
        let what = format!("{} {}", action.describe(), action.place(&scope.cluster));
        let found = judge_action(&roles, &subject);
        if let Some((role, why)) = found.deny {
            return Err(denied(role, why, &what));
        }
        if found.allow.is_empty() && found.approval.is_empty() {
            return Err(format!("no role lets {user} ask for {what}"));
        }
        let mut approvals = found.approval.clone();
        let mut action_needs = !found.allowed();
        if let Some(as_user) = &scope.as_user {
            let target = EffectiveIdentity {
                user: as_user.clone(),
                groups: scope.as_groups.clone(),
                uid: String::new(),
            };
            let t = judge_target(&roles, &target);
            if let Some((role, _)) = t.deny {
                return Err(format!(
                    "role {} does not let {user} impersonate {}",
                    role.name,
                    describe_target(&target)
                ));
            }
            if t.allow.is_empty() && t.approval.is_empty() {
                return Err(format!(
                    "no role lets {user} impersonate {}",
                    describe_target(&target)
                ));
            }
            if !t.allowed() {
                action_needs = true;
                if found.allowed() {
                    approvals.clear();
                }
                approvals.extend(t.approval);
            }
        }
        if !action_needs {
            return Err(format!("{user} may already {what} without approval"));
        }
        let mut groups: Vec<String> = Vec::new();
        let mut max = Duration::MAX;
        for (_, grant_groups, limit) in approvals {
            for g in grant_groups {
                if !groups.contains(g) {
                    groups.push(g.clone());
                }
            }
            // Checked at load, so the default only stands in for a rule that cannot exist.
            max = max.min(max_grant(limit).unwrap_or(super::config::DEFAULT_MAX_GRANT));
        }
        Ok(GrantTerms { groups, max })
    }
}

/// Allowed under `grant`, on the terms of the roles whose rules let it be granted.
fn allow_by_grant(found: &Findings<'_>, action: &Action, grant: &Grant, what: &str) -> Decision {
    let mut by: Vec<&Role> = Vec::new();
    let ports = if found.allowed() {
        by.clone_from(&found.allow);
        &found.allow_ports
    } else {
        for (role, _, _) in &found.approval {
            push_role(&mut by, role);
        }
        &found.approval_ports
    };
    let until = chrono::DateTime::from_timestamp(grant.expires_at, 0)
        .map_or_else(|| grant.expires_at.to_string(), |t| t.to_rfc3339());
    let reason = format!(
        "approved access request {} allows {what} until {until}",
        grant.id
    );
    let mut allowed = allow(found, &by, ports, action, reason);
    if let Decision::Allow(a) = &mut allowed {
        a.grant = Some(grant.id.clone());
        a.grant_groups.clone_from(&grant.groups);
        a.grant_expires_at = Some(grant.expires_at);
    }
    allowed
}

/// Needs approval: names the roles holding it and the command to ask with.
fn ask_for(
    found: &Findings<'_>,
    target: Option<&Findings<'_>>,
    scope: Scope,
    what: &str,
) -> Decision {
    let mut holders: Vec<&str> = Vec::new();
    let target_approvals = target
        .into_iter()
        .filter(|f| !f.allowed())
        .flat_map(|f| &f.approval);
    let action_approvals = found.approval.iter().filter(|_| !found.allowed());
    for (role, _, _) in action_approvals.chain(target_approvals) {
        if !holders.contains(&role.name.as_str()) {
            holders.push(&role.name);
        }
    }
    Decision::NeedsApproval {
        reason: format!(
            "{what} needs approval (role {}); ask with: {}",
            holders.join(", "),
            request_command(&scope)
        ),
        scope,
    }
}

fn judge_action<'p>(roles: &[&'p Role], s: &Subject<'_>) -> Findings<'p> {
    let mut found = Findings::new();
    for &role in roles {
        for rule in &role.rules {
            if !rule_matches(rule, s) {
                continue;
            }
            let forward = s.action.verb == "portforward";
            match rule.effect {
                Effect::Deny => {
                    // Ports not known yet: the gateway holds each stream to what is left.
                    if forward && s.ports.is_empty() && !rule.ports.is_empty() {
                        found.deny_ports.extend(&rule.ports);
                    } else if found.deny.is_none() {
                        found.deny = Some((role, rule.reason.as_deref()));
                    }
                }
                Effect::Allow => {
                    push_role(&mut found.allow, role);
                    found
                        .allow_ports
                        .push((!rule.ports.is_empty()).then_some(&rule.ports[..]));
                }
                Effect::Approval => {
                    found
                        .approval
                        .push((role, &rule.grant_groups, rule.max_grant.as_deref()));
                    found
                        .approval_ports
                        .push((!rule.ports.is_empty()).then_some(&rule.ports[..]));
                }
            }
        }
    }
    found
}

fn push_role<'p>(roles: &mut Vec<&'p Role>, role: &'p Role) {
    if !roles.iter().any(|r| std::ptr::eq(*r, role)) {
        roles.push(role);
    }
}

fn rule_matches(rule: &Rule, s: &Subject<'_>) -> bool {
    let a = s.action;
    let verb_ok = rule.actions.iter().any(|x| {
        // `kubectl debug` opens a shell like exec does, so an exec rule covers it too.
        x == "*" || *x == a.verb || (a.verb == "debug" && x == "exec")
    });
    if !verb_ok || !pattern::any(&rule.clusters, s.cluster) {
        return false;
    }
    if !s.is_resource {
        return pattern::any(&rule.paths, &a.resource);
    }
    if rule.resources.is_empty() {
        return false;
    }
    let resource_ok = if s.resource_known {
        pattern::any(&rule.resources, &a.resource)
            || (a.is_derived() && pattern::any(&rule.resources, a.parent()))
    } else {
        // Unknown resource: an allow or approval rule might cover it; a deny rule counts only
        // when it covers every resource.
        rule.effect != Effect::Deny || rule.resources.iter().any(|r| r == "*")
    };
    // `*` is the only pattern that reaches cluster-scoped objects and whole collections.
    let place_ok = |patterns: &[String], value: &str| {
        if value.is_empty() {
            patterns.iter().any(|p| p == "*")
        } else {
            pattern::any(patterns, value)
        }
    };
    let ports_ok = a.verb != "portforward"
        || rule.ports.is_empty()
        || s.ports.is_empty()
        || if rule.effect == Effect::Deny {
            s.ports
                .iter()
                .any(|p| rule.ports.iter().any(|r| r.contains(*p)))
        } else {
            s.ports
                .iter()
                .all(|p| rule.ports.iter().any(|r| r.contains(*p)))
        };
    resource_ok
        && place_ok(&rule.namespaces, &a.namespace)
        && place_ok(&rule.names, &a.name)
        && ports_ok
}

fn judge_target<'p>(roles: &[&'p Role], target: &EffectiveIdentity) -> Findings<'p> {
    let mut found = Findings::new();
    for &role in roles {
        for rule in role
            .impersonate
            .iter()
            .filter(|r| target_matches(r, target))
        {
            match rule.effect {
                Effect::Deny => {
                    found.deny.get_or_insert((role, None));
                }
                Effect::Allow => push_role(&mut found.allow, role),
                Effect::Approval => {
                    found
                        .approval
                        .push((role, &rule.grant_groups, rule.max_grant.as_deref()));
                }
            }
        }
    }
    found
}

fn target_matches(rule: &ImpersonateRule, target: &EffectiveIdentity) -> bool {
    pattern::identity(&rule.users, &target.user)
        && target
            .groups
            .iter()
            .all(|g| pattern::identity(&rule.groups, g))
        && (target.uid.is_empty() || pattern::identity(&rule.uids, &target.uid))
}

/// Whether `grant` allows `scope` for `user` at `now`: the requester's own, unexpired, and for
/// exactly this cluster, namespace, action and identity; a grant naming a pod is for that pod.
fn covers(grant: &Grant, user: &str, scope: &Scope, now: i64) -> bool {
    let g = &grant.scope;
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    grant.requester == user
        && now < grant.expires_at
        && g.cluster == scope.cluster
        && g.namespace == scope.namespace
        && g.action == scope.action
        && (g.pod.is_none() || g.pod == scope.pod)
        && g.as_user == scope.as_user
        && sorted(&g.as_groups) == sorted(&scope.as_groups)
}

/// Allowed by the rules of `by`; `ports` are the port ranges of those rules.
fn allow(
    found: &Findings<'_>,
    by: &[&Role],
    ports: &[Option<&[PortRange]>],
    action: &Action,
    reason: String,
) -> Decision {
    let mut redact = Vec::new();
    for role in by {
        for pattern in &role.redact {
            if !redact.contains(pattern) {
                redact.push(pattern.clone());
            }
        }
    }
    let ports = if action.verb == "portforward" {
        match allowed_ports(ports, &found.deny_ports) {
            Some(ranges) if ranges.is_empty() => {
                return Decision::Deny {
                    reason: format!("every port of {} is denied", action.describe()),
                };
            }
            other => other,
        }
    } else {
        None
    };
    Decision::Allow(Allowed {
        reason,
        roles: by.iter().map(|r| r.name.clone()).collect(),
        show_secrets: by.iter().any(|r| r.show_secrets),
        recording: if by.iter().all(|r| r.recording == RecordingMode::BestEffort) {
            RecordingMode::BestEffort
        } else {
            RecordingMode::Strict
        },
        redact,
        ports,
        grant: None,
        grant_groups: Vec::new(),
        grant_expires_at: None,
    })
}

/// The ports a port-forward may use: what the allow rules name (any, if one names none),
/// less what deny rules name. `None` means any port.
fn allowed_ports(allow: &[Option<&[PortRange]>], deny: &[PortRange]) -> Option<Vec<PortRange>> {
    let full = PortRange {
        first: 1,
        last: u16::MAX,
    };
    let mut ranges: Vec<PortRange> = if allow.is_empty() || allow.iter().any(Option::is_none) {
        vec![full]
    } else {
        allow
            .iter()
            .flatten()
            .flat_map(|r| r.iter().copied())
            .collect()
    };
    for cut in deny {
        ranges = ranges.into_iter().flat_map(|r| subtract(r, *cut)).collect();
    }
    ranges.sort_by_key(|r| r.first);
    (ranges != [full]).then_some(ranges)
}

fn subtract(r: PortRange, cut: PortRange) -> Vec<PortRange> {
    if cut.last < r.first || cut.first > r.last {
        return vec![r];
    }
    let mut out = Vec::new();
    if cut.first > r.first {
        out.push(PortRange {
            first: r.first,
            last: cut.first - 1,
        });
    }
    if cut.last < r.last {
        out.push(PortRange {
            first: cut.last + 1,
            last: r.last,
        });
    }
    out
}

fn allowing(roles: &[&Role]) -> String {
    match roles {
        [one] => format!("role {} allows", one.name),
        many => format!(
            "roles {} allow",
            many.iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn denied(role: &Role, why: Option<&str>, what: &str) -> String {
    match why {
        Some(why) => format!("role {} denies {what}: {why}", role.name),
        None => format!("role {} denies {what}", role.name),
    }
}

fn describe_target(t: &EffectiveIdentity) -> String {
    let mut out = format!("user {}", t.user);
    // Writing to a String cannot fail.
    if !t.groups.is_empty() {
        let _ = write!(out, " with groups {}", t.groups.join(", "));
    }
    if !t.uid.is_empty() {
        let _ = write!(out, " and uid {}", t.uid);
    }
    out
}

/// The command that asks for `scope`, ready to paste.
fn request_command(scope: &Scope) -> String {
    let mut out = format!("custody request create --cluster {}", quote(&scope.cluster));
    let mut flag = |name: &str, value: &str| {
        // Writing to a String cannot fail.
        let _ = write!(out, " --{name} {}", quote(value));
    };
    if !scope.namespace.is_empty() {
        flag("namespace", &scope.namespace);
    }
    if let Some(pod) = &scope.pod {
        flag("pod", pod);
    }
    if scope.action != "exec" {
        flag("action", &scope.action);
    }
    if let Some(user) = &scope.as_user {
        flag("as", user);
    }
    for group in &scope.as_groups {
        flag("as-group", group);
    }
    out.push_str(" --reason \"...\"");
    out
}

/// Shell-quotes a value unless it is plainly safe, so the printed command can be pasted.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'/' | b'@')
        });
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}
