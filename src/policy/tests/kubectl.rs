//! The mapping from kubectl-like commands to the request the gateway sees.

use super::super::kubectl::{request, resource_type};

fn verb_resource(verb: &str, target: &str, ports: &[&str]) -> (String, String, String, String) {
    let ports: Vec<String> = ports.iter().map(|p| (*p).to_owned()).collect();
    let r = request(verb, target, &ports, "default").unwrap();
    let info = r.info;
    let resource = if info.api_group.is_empty() {
        info.resource
    } else {
        format!("{}.{}", info.resource, info.api_group)
    };
    (info.verb, resource, info.subresource, info.name)
}

#[test]
fn kubectl_names_map_to_plural_resources() {
    for (short, plural, group) in [
        ("pod", "pods", ""),
        ("po", "pods", ""),
        ("pods", "pods", ""),
        ("secret", "secrets", ""),
        ("svc", "services", ""),
        ("deploy.apps", "deployments", "apps"),
        ("deploy", "deployments", "apps"),
        ("deployments.apps", "deployments", "apps"),
        ("no", "nodes", ""),
        (
            "selfsubjectreviews.authentication.k8s.io",
            "selfsubjectreviews",
            "authentication.k8s.io",
        ),
        ("widgets.example.com", "widgets", "example.com"),
    ] {
        let t = resource_type(short);
        assert_eq!(
            (t.plural.as_str(), t.group.as_str()),
            (plural, group),
            "{short}"
        );
    }
    assert!(!resource_type("node").namespaced);
    assert!(resource_type("widgets.example.com").namespaced);
}

#[test]
fn commands_become_the_requests_kubectl_sends() {
    let s = |v: &str, t: &str| verb_resource(v, t, &[]);
    assert_eq!(
        s("get", "secrets"),
        (
            "list".into(),
            "secrets".into(),
            String::new(),
            String::new()
        )
    );
    assert_eq!(
        s("get", "secret/db-credentials"),
        (
            "get".into(),
            "secrets".into(),
            String::new(),
            "db-credentials".into()
        )
    );
    assert_eq!(
        s("watch", "po"),
        ("watch".into(), "pods".into(), String::new(), String::new())
    );
    assert_eq!(
        s("list", "pod/web").3,
        "web",
        "a named list selects by field"
    );
    assert_eq!(s("exec", "pod/coredns-sim").2, "exec");
    assert_eq!(
        s("debug", "pod/web"),
        (
            "patch".into(),
            "pods".into(),
            "ephemeralcontainers".into(),
            "web".into()
        )
    );
    assert_eq!(
        s("get", "nodes/node-1/proxy"),
        (
            "get".into(),
            "nodes".into(),
            "proxy".into(),
            "node-1".into()
        )
    );
    assert_eq!(s("proxy", "node/node-1").2, "proxy");
    assert_eq!(
        s("create", "secret/x"),
        (
            "create".into(),
            "secrets".into(),
            String::new(),
            String::new()
        )
    );
    assert_eq!(s("delete", "deploy.apps/web").0, "delete");
    assert_eq!(s("delete", "pods").0, "deletecollection");
    assert_eq!(s("logs", "pod/web").2, "log");
    assert_eq!(
        s("create", "selfsubjectreviews.authentication.k8s.io").1,
        "selfsubjectreviews.authentication.k8s.io"
    );
    assert_eq!(s("get", "/healthz").0, "get");

    let pf = request(
        "portforward",
        "pod/web",
        &["8080".into(), "9000:80".into()],
        "default",
    )
    .unwrap();
    assert_eq!(pf.ports, [8080, 80]);
    assert!(pf.upgrade);
    assert_eq!(pf.info.namespace, "default");
    assert_eq!(
        request("get", "nodes", &[], "default")
            .unwrap()
            .info
            .namespace,
        ""
    );

    for (verb, target, ports) in [
        ("exec", "pods", vec![]),
        ("frobnicate", "pods", vec![]),
        ("get", "pods", vec!["80".to_owned()]),
        ("portforward", "pod/web", vec!["http".to_owned()]),
        ("get", "pod/", vec![]),
    ] {
        assert!(
            request(verb, target, &ports, "default").is_err(),
            "{verb} {target}"
        );
    }
}
