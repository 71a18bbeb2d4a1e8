//! Tests of the policy: the example policy's decisions, the adversarial cases (streaming
//! requests disguised as reads, grants stretched beyond their scope, `system:` identities
//! reached by wildcards) and the checks at load.

use super::*;
use crate::classify::classify;
use crate::principal::{AuthMethod, Principal};

mod kubectl;
mod load;

const NOW: i64 = 1_800_000_000;

fn person(user: &str, groups: &[&str]) -> Principal {
    Principal {
        method: AuthMethod::Oidc,
        issuer: "https://idp.example.com".into(),
        subject: user.into(),
        username: user.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        expires_at: None,
    }
}

fn alice() -> Principal {
    person("oidc:alice", &["dev"])
}

fn bob() -> Principal {
    person("oidc:bob", &["sre"])
}

fn example() -> Policy {
    Policy::new(&PolicyConfig::from_section(EXAMPLE_POLICY).unwrap()).unwrap()
}

fn policy(text: &str) -> Policy {
    Policy::new(&PolicyConfig::from_section(text).unwrap()).unwrap()
}

/// One request, as the gateway would describe it.
struct Ask<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    upgrade: bool,
    ports: Vec<u16>,
    cluster: &'a str,
    impersonate: Option<EffectiveIdentity>,
}

fn ask<'a>(method: &'a str, path: &'a str) -> Ask<'a> {
    Ask {
        method,
        path,
        query: "",
        upgrade: false,
        ports: Vec::new(),
        cluster: "demo",
        impersonate: None,
    }
}

impl Ask<'_> {
    fn upgraded(mut self) -> Self {
        self.upgrade = true;
        self
    }

    fn ports(mut self, ports: &[u16]) -> Self {
        self.ports = ports.to_vec();
        self
    }

    fn on(mut self, cluster: &'static str) -> Self {
        self.cluster = cluster;
        self
    }

    fn acting_as(mut self, user: &str, groups: &[&str]) -> Self {
        self.impersonate = Some(EffectiveIdentity {
            user: user.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            uid: String::new(),
        });
        self
    }

    fn action(&self) -> Action {
        let info = classify(self.method, self.path, Some(self.query)).unwrap();
        Policy::action(&self.attributes(&info))
    }

    fn attributes<'b>(&'b self, info: &'b RequestInfo) -> RequestAttributes<'b> {
        RequestAttributes {
            cluster: self.cluster,
            info,
            method: self.method,
            upgrade: self.upgrade,
            ports: self.ports.clone(),
            impersonate: self.impersonate.as_ref(),
        }
    }

    fn decide(&self, policy: &Policy, who: &Principal, grants: &[Grant]) -> Decision {
        let info = classify(self.method, self.path, Some(self.query)).unwrap();
        policy.decide(who, &self.attributes(&info), grants, NOW)
    }
}

fn allowed(decision: &Decision) -> &Allowed {
    match decision {
        Decision::Allow(a) => a,
        other => panic!("expected allow, got {other:?}"),
    }
}

fn denied(decision: &Decision) -> &str {
    match decision {
        Decision::Deny { reason } => reason,
        other => panic!("expected deny, got {other:?}"),
    }
}

fn needs(decision: &Decision) -> (&str, &Scope) {
    match decision {
        Decision::NeedsApproval { reason, scope } => (reason, scope),
        other => panic!("expected needs-approval, got {other:?}"),
    }
}

const EXEC_COREDNS: &str = "/api/v1/namespaces/kube-system/pods/coredns-sim/exec";

#[test]
fn a_websocket_get_to_exec_attach_or_portforward_is_not_a_read() {
    for (sub, verb) in [
        ("exec", "exec"),
        ("attach", "attach"),
        ("portforward", "portforward"),
    ] {
        let path = format!("/api/v1/namespaces/default/pods/web/{sub}");
        for method in ["GET", "POST"] {
            let action = ask(method, &path).upgraded().action();
            assert_eq!(action.verb, verb, "{method} {path}");
            assert_eq!(action.resource, format!("pods/{sub}"));
            assert_eq!(
                (action.namespace.as_str(), action.name.as_str()),
                ("default", "web")
            );
        }
    }
    // A role that may only read gets no shell from a GET.
    let readers = policy(
        r#"[policy]
[[policy.roles]]
name = "readers"
groups = ["dev"]
[[policy.roles.rules]]
actions = ["get", "list", "watch"]
resources = ["*"]
"#,
    );
    let exec = ask("GET", "/api/v1/namespaces/default/pods/web/exec").upgraded();
    let reason = denied(&exec.decide(&readers, &alice(), &[])).to_owned();
    assert_eq!(
        reason,
        "no role lets oidc:alice exec pods/web in namespace default of cluster demo"
    );
    allowed(&ask("GET", "/api/v1/namespaces/default/pods/web").decide(&readers, &alice(), &[]));
}

#[test]
fn proxies_and_ephemeral_containers_are_classed_as_what_they_allow() {
    for path in [
        "/api/v1/nodes/node-1/proxy/metrics",
        "/api/v1/proxy/nodes/node-1/pods",
    ] {
        let action = ask("GET", path).action();
        assert_eq!(
            (action.verb.as_str(), action.resource.as_str()),
            ("proxy", "nodes/proxy"),
            "{path}"
        );
        assert_eq!(action.name, "node-1");
    }
    let pod = ask("GET", "/api/v1/namespaces/default/pods/web/proxy/").action();
    assert_eq!(
        (pod.verb.as_str(), pod.resource.as_str()),
        ("proxy", "pods/proxy")
    );
    let svc = ask("GET", "/api/v1/namespaces/default/services/web:80/proxy/x").action();
    assert_eq!(
        (svc.verb.as_str(), svc.resource.as_str()),
        ("proxy", "services/proxy")
    );
    let debug_path = "/api/v1/namespaces/default/pods/web/ephemeralcontainers";
    for method in ["PATCH", "PUT"] {
        let action = ask(method, debug_path).action();
        assert_eq!(
            (action.verb.as_str(), action.resource.as_str()),
            ("debug", "pods/ephemeralcontainers")
        );
    }
    assert_eq!(ask("GET", debug_path).action().verb, "get");
    let scale = ask(
        "PUT",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    )
    .action();
    assert_eq!(
        (scale.verb.as_str(), scale.resource.as_str()),
        ("update", "deployments.apps/scale")
    );

    // A rule about pods says nothing about the kubelet behind nodes/NAME/proxy.
    let pods_only = policy(
        r#"[policy]
[[policy.roles]]
name = "pods"
groups = ["dev"]
[[policy.roles.rules]]
actions = ["*"]
resources = ["pods", "pods/*"]
"#,
    );
    let node_proxy = ask("GET", "/api/v1/nodes/node-1/proxy/run/default/web/c");
    denied(&node_proxy.decide(&pods_only, &alice(), &[]));
    // The example's readers may read nodes, but never proxy to them.
    let reason = denied(&node_proxy.decide(&example(), &alice(), &[])).to_owned();
    assert!(
        reason.contains("proxy nodes/node-1 in cluster demo"),
        "{reason}"
    );
    allowed(&node_proxy.decide(&example(), &bob(), &[]));
}

#[test]
fn debug_is_exec_equivalent() {
    let debug = |ns: &str| {
        ask(
            "PATCH",
            &format!("/api/v1/namespaces/{ns}/pods/web/ephemeralcontainers"),
        )
        .decide(&example(), &alice(), &[])
    };
    allowed(&debug("default"));
    let gated = debug("kube-system");
    let (reason, scope) = needs(&gated);
    assert_eq!(scope.action, "debug");
    assert!(reason.contains("--action debug"), "{reason}");
    denied(&debug("prod"));
}

#[test]
fn the_example_policy_decides_as_documented() {
    let p = example();
    let list = ask("GET", "/api/v1/namespaces/kube-system/secrets").decide(&p, &alice(), &[]);
    let a = allowed(&list);
    assert!(!a.show_secrets);
    assert_eq!(a.roles, ["dev"]);
    assert_eq!(a.recording, RecordingMode::Strict);
    assert_eq!(
        a.reason,
        "role dev allows list secrets in namespace kube-system of cluster demo"
    );
    assert!(
        allowed(&ask("GET", "/api/v1/namespaces/default/secrets/db").decide(&p, &bob(), &[]))
            .show_secrets
    );
    allowed(
        &ask("GET", "/api/v1/namespaces/default/pods/web/exec")
            .upgraded()
            .decide(&p, &alice(), &[]),
    );
    allowed(
        &ask("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews").decide(&p, &alice(), &[]),
    );
    allowed(&ask("PUT", "/api/v1/namespaces/default/secrets/db").decide(&p, &alice(), &[]));
    denied(&ask("PUT", "/api/v1/namespaces/kube-system/secrets/db").decide(&p, &alice(), &[]));
    assert_eq!(
        denied(&ask("DELETE", "/api/v1/namespaces/default/pods/web").decide(&p, &alice(), &[])),
        "no role lets oidc:alice delete pods/web in namespace default of cluster demo"
    );
    assert_eq!(
        denied(&ask("DELETE", "/api/v1/nodes/node-1").decide(&p, &alice(), &[])),
        "no role lets oidc:alice delete nodes/node-1 in cluster demo"
    );
    let exec = ask("GET", EXEC_COREDNS)
        .upgraded()
        .decide(&p, &alice(), &[]);
    let (reason, scope) = needs(&exec);
    assert_eq!(
        reason,
        "exec pods/coredns-sim in namespace kube-system of cluster demo needs approval (role dev); \
         ask with: custody request create --cluster demo --namespace kube-system --pod coredns-sim --reason \"...\""
    );
    assert_eq!(
        scope,
        &Scope {
            cluster: "demo".into(),
            namespace: "kube-system".into(),
            pod: Some("coredns-sim".into()),
            action: "exec".into(),
            as_user: None,
            as_groups: Vec::new(),
        }
    );
    // port-forward is not part of the kube-system approval rule: plainly no.
    denied(
        &ask(
            "GET",
            "/api/v1/namespaces/kube-system/pods/coredns-sim/portforward",
        )
        .decide(&p, &alice(), &[]),
    );
    allowed(&ask("GET", EXEC_COREDNS).decide(&p, &bob(), &[]));
}

#[test]
fn discovery_is_open_to_people_with_a_role_and_other_paths_need_a_rule() {
    let p = example();
    for path in [
        "/api",
        "/api/v1",
        "/apis",
        "/apis/apps/v1",
        "/version",
        "/openapi/v3",
    ] {
        let a = allowed(&ask("GET", path).decide(&p, &alice(), &[])).clone();
        assert!(a.reason.contains("discovery"), "{path}: {}", a.reason);
        denied(&ask("GET", path).decide(&p, &person("oidc:mallory", &["guests"]), &[]));
    }
    assert_eq!(
        denied(&ask("GET", "/healthz").decide(&p, &alice(), &[])),
        "no role lets oidc:alice get /healthz in cluster demo"
    );
    allowed(&ask("GET", "/healthz").decide(&p, &bob(), &[]));
}

#[test]
fn roles_apply_by_exact_username_or_group() {
    let p = policy(
        r#"[policy]
[[policy.roles]]
name = "carol"
users = ["oidc:carol"]
[[policy.roles.rules]]
actions = ["get"]
resources = ["pods"]
"#,
    );
    allowed(&ask("GET", "/api/v1/namespaces/a/pods/x").decide(&p, &person("oidc:carol", &[]), &[]));
    denied(&ask("GET", "/api/v1/namespaces/a/pods/x").decide(
        &p,
        &person("oidc:carol2", &["oidc:carol"]),
        &[],
    ));
    assert_eq!(p.roles_for(&person("oidc:carol", &[])), ["carol"]);
}

#[test]
fn deny_wins_over_allow_in_any_role() {
    let p = policy(
        r#"[policy]
[[policy.roles]]
name = "everything"
groups = ["dev"]
[[policy.roles.rules]]
actions = ["*"]
resources = ["*"]
[[policy.roles]]
name = "no-prod-secrets"
groups = ["dev"]
[[policy.roles.rules]]
effect = "deny"
actions = ["*"]
resources = ["secrets"]
clusters = ["prod*"]
reason = "production secrets are read through the vault"
"#,
    );
    let read = ask("GET", "/api/v1/namespaces/a/secrets/db").on("prod-eu");
    assert_eq!(
        denied(&read.decide(&p, &alice(), &[])),
        "role no-prod-secrets denies get secrets/db in namespace a of cluster prod-eu: \
         production secrets are read through the vault"
    );
    allowed(
        &ask("GET", "/api/v1/namespaces/a/secrets/db")
            .on("staging")
            .decide(&p, &alice(), &[]),
    );
}

#[test]
fn namespace_and_name_patterns() {
    let p = policy(
        r#"[policy]
[[policy.roles]]
name = "team"
groups = ["dev"]
[[policy.roles.rules]]
actions = ["get", "list"]
resources = ["*"]
namespaces = ["team-*"]
[[policy.roles.rules]]
actions = ["get"]
resources = ["secrets"]
namespaces = ["shared"]
names = ["db-*"]
"#,
    );
    let d = |method: &str, path: &str| ask(method, path).decide(&p, &alice(), &[]);
    allowed(&d("GET", "/api/v1/namespaces/team-a/pods"));
    denied(&d("GET", "/api/v1/namespaces/other/pods"));
    // A specific namespace pattern never reaches cluster-scoped objects.
    denied(&d("GET", "/api/v1/nodes"));
    // As in kube-apiserver, a namespace object is in its own namespace.
    allowed(&d("GET", "/api/v1/namespaces/team-a"));
    denied(&d("GET", "/api/v1/namespaces/other"));
    allowed(&d(
        "GET",
        "/api/v1/namespaces/shared/secrets/db-credentials",
    ));
    denied(&d("GET", "/api/v1/namespaces/shared/secrets/api-token"));
    // A name pattern never covers the whole collection.
    denied(&d("GET", "/api/v1/namespaces/shared/secrets"));
    // `*` does reach cluster-scoped objects.
    allowed(&ask("GET", "/api/v1/nodes").decide(&example(), &alice(), &[]));
}

fn grant(scope: Scope) -> Grant {
    Grant {
        id: "req-1".into(),
        requester: "oidc:alice".into(),
        scope,
        expires_at: NOW + 60,
        groups: vec!["custody:jit-kube-system".into()],
    }
}

fn coredns_scope() -> Scope {
    Scope {
        cluster: "demo".into(),
        namespace: "kube-system".into(),
        pod: Some("coredns-sim".into()),
        action: "exec".into(),
        as_user: None,
        as_groups: Vec::new(),
    }
}

#[test]
fn a_grant_allows_exactly_its_scope() {
    let p = example();
    let exec = ask("GET", EXEC_COREDNS).upgraded();
    let good = grant(coredns_scope());
    let decision = exec.decide(&p, &alice(), std::slice::from_ref(&good));
    let a = allowed(&decision);
    assert_eq!(a.grant.as_deref(), Some("req-1"));
    assert_eq!(a.grant_groups, ["custody:jit-kube-system"]);
    assert_eq!(a.grant_expires_at, Some(NOW + 60));
    assert!(
        a.reason
            .starts_with("approved access request req-1 allows exec pods/coredns-sim"),
        "{}",
        a.reason
    );

    // A grant for any pod of the namespace covers this one.
    let any_pod = grant(Scope {
        pod: None,
        ..coredns_scope()
    });
    allowed(&exec.decide(&p, &alice(), &[any_pod]));

    let other = |scope: Scope| grant(scope);
    let mut wrong = vec![
        (
            "another pod",
            other(Scope {
                pod: Some("etcd".into()),
                ..coredns_scope()
            }),
        ),
        (
            "another namespace",
            other(Scope {
                namespace: "default".into(),
                ..coredns_scope()
            }),
        ),
        (
            "another action",
            other(Scope {
                action: "attach".into(),
                ..coredns_scope()
            }),
        ),
        (
            "another cluster",
            other(Scope {
                cluster: "prod".into(),
                ..coredns_scope()
            }),
        ),
        (
            "another --as",
            other(Scope {
                as_user: Some("carol".into()),
                ..coredns_scope()
            }),
        ),
    ];
    let mut expired = good.clone();
    expired.expires_at = NOW;
    wrong.push(("expired", expired));
    let mut mallory = good.clone();
    mallory.requester = "oidc:mallory".into();
    wrong.push(("another requester", mallory));
    for (what, g) in &wrong {
        needs(&exec.decide(&p, &alice(), std::slice::from_ref(g)));
        let _ = what;
    }
    // All the wrong ones together are still not the right one.
    let all: Vec<Grant> = wrong.into_iter().map(|(_, g)| g).collect();
    needs(&exec.decide(&p, &alice(), &all));
    // Someone else holding alice's grant gets nothing from it.
    denied(&exec.decide(
        &p,
        &person("oidc:mallory", &["guests"]),
        std::slice::from_ref(&good),
    ));
    // The grant for coredns-sim does not open etcd, nor another namespace, nor attach.
    needs(
        &ask("GET", "/api/v1/namespaces/kube-system/pods/etcd/exec").decide(
            &p,
            &alice(),
            std::slice::from_ref(&good),
        ),
    );
    needs(
        &ask(
            "GET",
            "/api/v1/namespaces/kube-system/pods/coredns-sim/attach",
        )
        .decide(&p, &alice(), std::slice::from_ref(&good)),
    );
    // A grant never overrides a deny, nor makes an action that no rule gates possible.
    denied(
        &ask("DELETE", "/api/v1/namespaces/kube-system/pods/coredns-sim").decide(
            &p,
            &alice(),
            &[grant(Scope {
                action: "delete".into(),
                ..coredns_scope()
            })],
        ),
    );
}

#[test]
fn impersonation_needs_the_action_and_the_target() {
    let p = example();
    let whoami = |who: &Principal, user: &str, groups: &[&str]| {
        ask("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .acting_as(user, groups)
            .decide(&p, who, &[])
    };
    let a = allowed(&whoami(&bob(), "carol", &[])).clone();
    assert!(a.reason.ends_with("as user carol"), "{}", a.reason);
    allowed(&whoami(&bob(), "carol", &["dev"]));
    assert_eq!(
        denied(&whoami(&bob(), "carol", &["system:masters"])),
        "no role lets oidc:bob impersonate user carol with groups system:masters"
    );
    denied(&whoami(&bob(), "system:admin", &[]));
    denied(&whoami(
        &bob(),
        "system:serviceaccount:kube-system:default",
        &[],
    ));
    assert_eq!(
        denied(&whoami(&alice(), "carol", &[])),
        "no role lets oidc:alice impersonate user carol"
    );
}

#[test]
fn an_approval_for_impersonation_is_one_grant_with_the_action() {
    let p = policy(
        r#"[policy]
[[policy.roles]]
name = "support"
groups = ["support"]
[[policy.roles.rules]]
actions = ["get", "list"]
resources = ["*"]
[[policy.roles.impersonate]]
effect = "approval"
users = ["customer-*"]
max_grant = "30m"
"#,
    );
    let ann = person("oidc:ann", &["support"]);
    let list = ask("GET", "/api/v1/namespaces/shop/pods").acting_as("customer-7", &[]);
    let decision = list.decide(&p, &ann, &[]);
    let (reason, scope) = needs(&decision);
    assert!(
        reason.contains("--namespace shop --action list --as customer-7"),
        "{reason}"
    );
    assert_eq!(scope.pod, None);
    let terms = p.requestable(&ann, scope).unwrap();
    assert_eq!(terms.max, std::time::Duration::from_secs(1800));
    let mut g = grant(scope.clone());
    g.requester = "oidc:ann".into();
    allowed(&list.decide(&p, &ann, std::slice::from_ref(&g)));
    // The same grant does not let ann act as another customer, or as herself in addition.
    needs(
        &ask("GET", "/api/v1/namespaces/shop/pods")
            .acting_as("customer-8", &[])
            .decide(&p, &ann, std::slice::from_ref(&g)),
    );
    denied(
        &ask("GET", "/api/v1/namespaces/shop/pods")
            .acting_as("admin", &[])
            .decide(&p, &ann, std::slice::from_ref(&g)),
    );
}

#[test]
fn a_wildcard_never_reaches_system_identities_even_for_break_glass_roles() {
    let p = policy(
        r#"[policy]
[[policy.roles]]
name = "root"
users = ["oidc:root"]
break_glass = true
[[policy.roles.rules]]
actions = ["*"]
resources = ["*"]
[[policy.roles.impersonate]]
users = ["*"]
groups = ["*"]
[[policy.roles.impersonate]]
users = ["oidc:root"]
groups = ["system:masters"]
"#,
    );
    let root = person("oidc:root", &[]);
    let as_ = |user: &str, groups: &[&str]| {
        ask("GET", "/api/v1/pods")
            .acting_as(user, groups)
            .decide(&p, &root, &[])
    };
    allowed(&as_("carol", &["dev", "ops"]));
    denied(&as_("carol", &["system:masters"]));
    denied(&as_("system:kube-controller-manager", &[]));
    // Listed exactly, on a break-glass role: allowed.
    allowed(&as_("oidc:root", &["system:masters"]));
}

#[test]
fn port_forward_ports() {
    let p = policy(
        r#"[policy]
[[policy.roles]]
name = "web"
groups = ["dev"]
[[policy.roles.rules]]
actions = ["portforward"]
resources = ["pods"]
ports = [8080, "9000-9009"]
[[policy.roles]]
name = "everything-but-ssh"
groups = ["ops"]
[[policy.roles.rules]]
actions = ["portforward"]
resources = ["pods"]
[[policy.roles.rules]]
effect = "deny"
actions = ["portforward"]
resources = ["pods"]
ports = [22]
"#,
    );
    let pf = "/api/v1/namespaces/default/pods/web/portforward";
    let a = allowed(
        &ask("GET", pf)
            .upgraded()
            .ports(&[8080, 9005])
            .decide(&p, &alice(), &[]),
    )
    .clone();
    assert_eq!(
        a.ports,
        Some(vec![
            PortRange {
                first: 8080,
                last: 8080
            },
            PortRange {
                first: 9000,
                last: 9009
            }
        ])
    );
    denied(
        &ask("GET", pf)
            .upgraded()
            .ports(&[8080, 22])
            .decide(&p, &alice(), &[]),
    );
    // SPDY names ports per stream: allowed, with the ports the gateway must hold it to.
    assert!(
        allowed(&ask("POST", pf).upgraded().decide(&p, &alice(), &[]))
            .ports
            .is_some()
    );
    let ops = person("oidc:olga", &["ops"]);
    denied(&ask("GET", pf).upgraded().ports(&[22]).decide(&p, &ops, &[]));
    let open = allowed(&ask("POST", pf).upgraded().decide(&p, &ops, &[])).clone();
    assert_eq!(
        open.ports,
        Some(vec![
            PortRange { first: 1, last: 21 },
            PortRange {
                first: 23,
                last: 65535
            }
        ])
    );
    assert_eq!(
        allowed(&ask("POST", pf).upgraded().decide(&example(), &alice(), &[])).ports,
        None
    );

    // A grant under an approval rule with ports is held to those ports.
    let gated = policy(
        r#"[policy]
[[policy.roles]]
name = "db"
groups = ["dev"]
[[policy.roles.rules]]
effect = "approval"
actions = ["portforward"]
resources = ["pods"]
ports = [5432]
"#,
    );
    let scope = Scope {
        namespace: "default".into(),
        pod: Some("web".into()),
        action: "portforward".into(),
        ..coredns_scope()
    };
    let asking = ask("POST", pf).upgraded().decide(&gated, &alice(), &[]);
    assert_eq!(needs(&asking).1, &scope);
    let g = grant(scope);
    let granted = allowed(&ask("POST", pf).upgraded().decide(&gated, &alice(), &[g])).clone();
    assert_eq!(
        granted.ports,
        Some(vec![PortRange {
            first: 5432,
            last: 5432
        }])
    );
}

#[test]
fn recording_mode_and_redaction_come_from_the_allowing_roles() {
    let p = policy(
        r#"[policy]
[[policy.roles]]
name = "lab"
groups = ["lab"]
recording = "best-effort"
redact = [{ name = "token", pattern = "tok_[a-z0-9]+" }]
[[policy.roles.rules]]
actions = ["exec"]
resources = ["pods"]
[[policy.roles]]
name = "prod"
groups = ["prod"]
[[policy.roles.rules]]
actions = ["exec"]
resources = ["pods"]
namespaces = ["prod"]
"#,
    );
    let exec = |ns: &str, who: &Principal| {
        allowed(
            &ask("GET", &format!("/api/v1/namespaces/{ns}/pods/x/exec"))
                .upgraded()
                .decide(&p, who, &[]),
        )
        .clone()
    };
    let lab = exec("lab", &person("u", &["lab"]));
    assert_eq!(lab.recording, RecordingMode::BestEffort);
    assert_eq!(lab.redact.len(), 1);
    let both = person("u", &["lab", "prod"]);
    assert_eq!(exec("prod", &both).recording, RecordingMode::Strict);
    assert_eq!(exec("lab", &both).recording, RecordingMode::BestEffort);
}

#[test]
fn requestable_and_may_approve() {
    let p = example();
    let terms = p.requestable(&alice(), &coredns_scope()).unwrap();
    assert_eq!(terms.groups, ["custody:jit-kube-system"]);
    assert_eq!(terms.max, std::time::Duration::from_secs(7200));
    assert!(
        p.requestable(
            &alice(),
            &Scope {
                pod: None,
                ..coredns_scope()
            }
        )
        .is_ok()
    );
    let already = p.requestable(
        &alice(),
        &Scope {
            namespace: "default".into(),
            ..coredns_scope()
        },
    );
    assert!(already.unwrap_err().contains("without approval"));
    assert!(
        p.requestable(
            &alice(),
            &Scope {
                action: "portforward".into(),
                ..coredns_scope()
            }
        )
        .is_err()
    );
    assert!(
        p.requestable(
            &alice(),
            &Scope {
                action: "delete".into(),
                ..coredns_scope()
            }
        )
        .is_err()
    );
    assert!(
        p.requestable(
            &alice(),
            &Scope {
                as_user: Some("carol".into()),
                ..coredns_scope()
            }
        )
        .is_err()
    );
    assert!(p.requestable(&bob(), &coredns_scope()).is_err());
    assert!(
        p.requestable(&person("oidc:mallory", &[]), &coredns_scope())
            .is_err()
    );
    assert!(p.may_approve(&bob(), &coredns_scope()));
    assert!(!p.may_approve(&alice(), &coredns_scope()));
}

#[test]
fn approvers_decide_only_within_their_clusters_and_namespaces() {
    let p = policy(
        r#"[policy]
        [[policy.roles]]
        name = "team-a-leads"
        groups = ["leads-a"]
        approve = true
        approve_clusters = ["prod-*"]
        approve_namespaces = ["team-a", "team-a-*"]

        [[policy.roles]]
        name = "sre"
        groups = ["sre"]
        approve = true
        "#,
    );
    let scope = |cluster: &str, namespace: &str| Scope {
        cluster: cluster.into(),
        namespace: namespace.into(),
        pod: None,
        action: "exec".into(),
        as_user: None,
        as_groups: Vec::new(),
    };
    let lead = person("oidc:lea", &["leads-a"]);
    assert!(p.may_approve(&lead, &scope("prod-eu", "team-a")));
    assert!(p.may_approve(&lead, &scope("prod-us", "team-a-jobs")));
    assert!(!p.may_approve(&lead, &scope("prod-eu", "team-b")));
    assert!(!p.may_approve(&lead, &scope("staging", "team-a")));
    // A cluster-scoped action is reached only by `*`.
    assert!(!p.may_approve(&lead, &scope("prod-eu", "")));
    let sre = person("oidc:sam", &["sre"]);
    assert!(p.may_approve(&sre, &scope("staging", "team-b")));
    assert!(p.may_approve(&sre, &scope("prod-eu", "")));
}
