//! custody in front of a real kube-apiserver (built from the pinned Kubernetes release, see
//! `docs/real-cluster.md`): kubectl's identity through custody, `--as`, RBAC on the effective
//! identity, the API server's audit log joined with custody's on the request id, and the API
//! server's own refusal when custody's identity may not impersonate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use custody::upstream::Upstream;
use custody_fixtures::harness::Kubectl;
use custody_fixtures::real_cluster::{CUSTODY_EXTRA_KEYS, CUSTODY_USER, RealCluster};
use env::{Env, Options, ok};

/// Starts the real cluster, reporting a failure (no Go toolchain, no module proxy, a server
/// that did not start) loudly rather than skipping.
fn start_cluster() -> RealCluster {
    let started = Instant::now();
    let cluster = RealCluster::start()
        .unwrap_or_else(|e| panic!("the real-cluster tier could not start a kube-apiserver: {e}"));
    eprintln!(
        "real cluster {} at {} ready in {:.1} s (build or cache check included)",
        cluster.version(),
        cluster.url(),
        started.elapsed().as_secs_f64()
    );
    cluster
}

/// The gateway in front of the real API server, forwarding with the kubeconfig's identity.
fn gateway_in_front_of(kubeconfig: &Path) -> Env {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream = rt
        .block_on(Upstream::from_kubeconfig(kubeconfig, None))
        .unwrap();
    Env::start(Options {
        upstream: Some(upstream),
        ..Options::default()
    })
}

#[test]
fn custody_impersonates_on_a_real_kube_apiserver_and_both_audit_trails_agree() {
    let cluster = start_cluster();
    // alice may read everything. (The built-in `view` is an aggregated role, which
    // kube-controller-manager would fill in; this cluster runs none.)
    cluster
        .create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            &serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "reader"},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]
            }),
        )
        .unwrap();
    cluster
        .bind_cluster_role("alice-reads", "reader", "alice", ("list", "namespaces"))
        .unwrap();
    let env = gateway_in_front_of(cluster.custody_kubeconfig());
    let k = env.kubectl("1.32");

    // The effective identity the real API server computed from custody's headers, as kubectl
    // 1.32 and 1.33 show it, without and with `--as`.
    for minor in ["1.32", "1.33"] {
        whoami(&env.kubectl(minor));
    }

    let namespaces = ok(&k.run(["--context", "alice", "get", "namespaces"]).unwrap());
    for ns in ["default", "kube-system", "kube-public"] {
        assert!(namespaces.contains(ns), "{namespaces}");
    }
    let pods = k.run(["--context", "alice", "get", "pods", "-A"]).unwrap();
    ok(&pods);
    assert!(
        String::from_utf8_lossy(&pods.stderr).contains("No resources found"),
        "{pods:?}"
    );
    // alice may not create anything: the real authorizer decides on the effective identity.
    let create = k
        .run([
            "--context",
            "alice",
            "create",
            "namespace",
            "alice-was-here",
        ])
        .unwrap();
    assert!(!create.status.success());
    let stderr = String::from_utf8_lossy(&create.stderr);
    assert!(
        stderr.contains("User \"alice\" cannot create resource \"namespaces\""),
        "{stderr}"
    );

    // alice may not: custody refuses before the cluster is contacted.
    let refused = k
        .run(["--context", "alice", "--as=carol", "get", "namespaces"])
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("alice may not impersonate user \"carol\""),
        "{stderr}"
    );

    assert_every_forwarded_request_is_in_the_apiserver_audit(&env, &cluster);
}

/// `kubectl auth whoami` as alice, then as bob `--as=carol`: bob may impersonate anyone under
/// custody's rules, and the cluster is told carol asks and that bob initiated it.
fn whoami(k: &Kubectl) {
    let whoami = ok(&k.run(["--context", "alice", "auth", "whoami"]).unwrap());
    assert!(whoami.contains("alice"), "{whoami}");
    assert!(whoami.contains("[dev system:authenticated]"), "{whoami}");
    assert!(whoami.contains("custody.dev/initiator"), "{whoami}");
    assert!(!whoami.contains(CUSTODY_USER), "{whoami}");

    let carol = ok(&k
        .run(["--context", "bob", "--as=carol", "auth", "whoami"])
        .unwrap());
    assert!(carol.contains("carol"), "{carol}");
    assert!(carol.contains("[bob]"), "{carol}");
    assert!(!carol.contains(CUSTODY_USER), "{carol}");
}

/// Joins custody's audit trail with the API server's on the request id: every request custody
/// forwarded is in the API server's log as custody's identity impersonating the effective
/// user, with the initiator and request id as extras, and the API server saw nothing from
/// custody's identity that custody did not audit.
fn assert_every_forwarded_request_is_in_the_apiserver_audit(env: &Env, cluster: &RealCluster) {
    let custody = env.custody_audit();
    let forwarded: HashMap<String, &serde_json::Value> = custody
        .iter()
        .filter(|e| e["stage"] == "decision" && e["decision"] == "allow")
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e))
        .collect();
    assert!(forwarded.len() >= 6, "{custody:#?}");
    let expected_keys: BTreeSet<&str> = CUSTODY_EXTRA_KEYS.into_iter().collect();

    // The API server writes an event when a response completes: wait for the last ones.
    let deadline = Instant::now() + Duration::from_secs(20);
    let by_custody = loop {
        let events: Vec<serde_json::Value> = cluster
            .audit_events()
            .unwrap()
            .into_iter()
            .filter(|e| e["user"]["username"] == CUSTODY_USER)
            .collect();
        let seen: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| e["auditID"].as_str())
            .collect();
        if forwarded.keys().all(|id| seen.contains(id.as_str())) || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    let mut seen = BTreeSet::new();
    for e in &by_custody {
        let id = e["auditID"].as_str().unwrap();
        let ours = forwarded
            .get(id)
            .unwrap_or_else(|| panic!("the API server saw {id}, which custody did not audit: {e}"));
        let imp = &e["impersonatedUser"];
        assert_eq!(imp["username"], ours["effective"]["user"], "{e}");
        let initiator = ours["initiator"]["username"].as_str().unwrap();
        assert_eq!(
            imp["extra"]["custody.dev/initiator"],
            serde_json::json!([initiator]),
            "{e}"
        );
        assert_eq!(
            imp["extra"]["custody.dev/request-id"],
            serde_json::json!([id]),
            "{e}"
        );
        let keys: BTreeSet<&str> = imp["extra"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, expected_keys, "{e}");
        seen.insert(id.to_owned());
    }
    let missing: Vec<_> = forwarded.keys().filter(|id| !seen.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "custody forwarded {missing:?}, which the API server never logged"
    );
    assert!(
        by_custody
            .iter()
            .any(|e| e["impersonatedUser"]["username"] == "carol"),
        "bob's --as reached the API server as carol"
    );
    // custody's completion records carry the Audit-Id the API server echoed.
    for c in custody.iter().filter(|e| e["stage"] == "complete") {
        assert_eq!(c["upstream_audit_id"], c["id"], "{c}");
    }
}

#[test]
fn a_gateway_identity_without_impersonate_rights_is_refused_by_the_apiserver() {
    let cluster = start_cluster();
    let unbound = "custody-without-rights";
    let kubeconfig = cluster.kubeconfig_for(unbound, None).unwrap();
    let env = gateway_in_front_of(&kubeconfig);
    let k = env.kubectl("1.32");

    // The API server's own words, passed through to kubectl. kube-apiserver 1.37 checks
    // constrained impersonation (`impersonate-on:<mode>:<verb>`) when the legacy `impersonate`
    // check fails, and its message names that verb.
    let words = format!(
        "namespaces is forbidden: User \"{unbound}\" cannot impersonate-on:user-info:list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    let refused = k
        .run([
            "--context",
            "alice",
            "get",
            "--raw",
            "/clusters/sim/api/v1/namespaces",
        ])
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("Error from server (Forbidden): {words}")),
        "{stderr}"
    );
    // client-go's discovery shows a 403 Status as "unknown", with kube-apiserver as with
    // kube-sim; the refusal is still a Forbidden.
    let refused = k.run(["--context", "alice", "get", "namespaces"]).unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Error from server (Forbidden)"), "{stderr}");

    std::thread::sleep(Duration::from_millis(300));
    let custody = env.custody_audit();
    let completions: Vec<_> = custody
        .iter()
        .filter(|e| e["stage"] == "complete")
        .collect();
    assert!(!completions.is_empty(), "{custody:#?}");
    for c in &completions {
        assert_eq!(c["status_code"], 403, "{c}");
    }
    let refusals: Vec<_> = cluster
        .audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| e["user"]["username"] == unbound)
        .collect();
    for c in &completions {
        let event = refusals
            .iter()
            .find(|e| e["auditID"] == c["id"])
            .unwrap_or_else(|| panic!("the API server did not log {c}: {refusals:#?}"));
        assert_eq!(event["responseStatus"]["code"], 403, "{event}");
        assert!(event["impersonatedUser"].is_null(), "{event}");
    }
}
