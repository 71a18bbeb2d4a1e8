use super::*;

/// (method, path, query) → (verb, group, version, resource, subresource, namespace, name).
type Row = (
    &'static str,
    &'static str,
    Option<&'static str>,
    [&'static str; 7],
);

const RESOURCE_CASES: &[Row] = &[
    (
        "GET",
        "/api/v1/pods",
        None,
        ["list", "", "v1", "pods", "", "", ""],
    ),
    (
        "GET",
        "/api/v1/pods",
        Some("watch=true"),
        ["watch", "", "v1", "pods", "", "", ""],
    ),
    (
        "GET",
        "/api/v1/pods",
        Some("watch=1"),
        ["watch", "", "v1", "pods", "", "", ""],
    ),
    (
        "GET",
        "/api/v1/pods",
        Some("watch=false"),
        ["list", "", "v1", "pods", "", "", ""],
    ),
    (
        "GET",
        "/api/v1/namespaces/default/pods",
        Some("resourceVersion=9&watch=true"),
        ["watch", "", "v1", "pods", "", "default", ""],
    ),
    (
        "GET",
        "/api/v1/namespaces/default/pods/web",
        None,
        ["get", "", "v1", "pods", "", "default", "web"],
    ),
    (
        "HEAD",
        "/api/v1/namespaces/default/pods/web",
        None,
        ["get", "", "v1", "pods", "", "default", "web"],
    ),
    (
        "GET",
        "/api/v1/namespaces/default/pods/web/log",
        Some("follow=true&container=c"),
        ["get", "", "v1", "pods", "log", "default", "web"],
    ),
    (
        "POST",
        "/api/v1/namespaces/default/pods/web/exec",
        Some("command=sh"),
        ["create", "", "v1", "pods", "exec", "default", "web"],
    ),
    (
        "POST",
        "/api/v1/namespaces/default/pods",
        None,
        ["create", "", "v1", "pods", "", "default", ""],
    ),
    (
        "PUT",
        "/api/v1/namespaces/default/pods/web",
        None,
        ["update", "", "v1", "pods", "", "default", "web"],
    ),
    (
        "PATCH",
        "/api/v1/namespaces/default/pods/web/ephemeralcontainers",
        None,
        [
            "patch",
            "",
            "v1",
            "pods",
            "ephemeralcontainers",
            "default",
            "web",
        ],
    ),
    (
        "DELETE",
        "/api/v1/namespaces/default/pods/web",
        None,
        ["delete", "", "v1", "pods", "", "default", "web"],
    ),
    (
        "DELETE",
        "/api/v1/namespaces/default/pods",
        None,
        ["deletecollection", "", "v1", "pods", "", "default", ""],
    ),
    (
        "GET",
        "/api/v1/namespaces",
        None,
        ["list", "", "v1", "namespaces", "", "", ""],
    ),
    (
        "GET",
        "/api/v1/namespaces/kube-system",
        None,
        [
            "get",
            "",
            "v1",
            "namespaces",
            "",
            "kube-system",
            "kube-system",
        ],
    ),
    (
        "PUT",
        "/api/v1/namespaces/kube-system/finalize",
        None,
        [
            "update",
            "",
            "v1",
            "namespaces",
            "finalize",
            "kube-system",
            "kube-system",
        ],
    ),
    (
        "GET",
        "/api/v1/namespaces/kube-system/status",
        None,
        [
            "get",
            "",
            "v1",
            "namespaces",
            "status",
            "kube-system",
            "kube-system",
        ],
    ),
    (
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        None,
        [
            "get",
            "apps",
            "v1",
            "deployments",
            "scale",
            "default",
            "web",
        ],
    ),
    (
        "GET",
        "/apis/apps/v1/deployments",
        None,
        ["list", "apps", "v1", "deployments", "", "", ""],
    ),
    (
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        None,
        [
            "create",
            "authentication.k8s.io",
            "v1",
            "selfsubjectreviews",
            "",
            "",
            "",
        ],
    ),
    (
        "GET",
        "/api/v1/watch/namespaces/default/pods",
        None,
        ["watch", "", "v1", "pods", "", "default", ""],
    ),
    (
        "GET",
        "/api/v1/watch/namespaces/default/pods/web",
        None,
        ["watch", "", "v1", "pods", "", "default", "web"],
    ),
    (
        "GET",
        "/api/v1/proxy/namespaces/default/pods/web/some/path",
        None,
        ["proxy", "", "v1", "pods", "", "default", "web"],
    ),
    (
        "GET",
        "/api/v1/namespaces/default/pods/web/proxy/some/path",
        None,
        ["get", "", "v1", "pods", "proxy", "default", "web"],
    ),
    (
        "GET",
        "/api/v1/nodes/n1/proxy/exec/default/web/c",
        None,
        ["get", "", "v1", "nodes", "proxy", "", "n1"],
    ),
    (
        "GET",
        "/api/v1/namespaces/default/pods",
        Some("fieldSelector=metadata.name%3Dweb"),
        ["list", "", "v1", "pods", "", "default", "web"],
    ),
    (
        "GET",
        "/api/v1/namespaces/default/pods",
        Some("fieldSelector=metadata.name%3D%3Dweb&watch=true"),
        ["watch", "", "v1", "pods", "", "default", "web"],
    ),
    (
        "GET",
        "/api/v1/namespaces/default/pods/",
        None,
        ["list", "", "v1", "pods", "", "default", ""],
    ),
    (
        "GET",
        "/api/v1/namespaces/d%65fault/pods",
        None,
        ["list", "", "v1", "pods", "", "default", ""],
    ),
];

#[test]
fn classifies_resource_requests_like_kube_apiserver() {
    for (method, path, query, want) in RESOURCE_CASES {
        let info =
            classify(method, path, *query).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let got = [
            info.verb.as_str(),
            &info.api_group,
            &info.version,
            &info.resource,
            &info.subresource,
            &info.namespace,
            &info.name,
        ];
        assert_eq!(&got, want, "{method} {path} {query:?}");
        assert!(info.is_resource, "{path}");
        assert_eq!(info.path, *path);
    }
}

#[test]
fn classifies_non_resource_urls_by_method() {
    for (method, path, verb) in [
        ("GET", "/", "get"),
        ("GET", "/api", "get"),
        ("GET", "/apis", "get"),
        ("GET", "/apis/apps", "get"),
        ("GET", "/version", "get"),
        ("GET", "/healthz/etcd", "get"),
        ("POST", "/logs", "post"),
        ("GET", "/openapi/v3/apis/apps/v1", "get"),
        ("OPTIONS", "/version", "options"),
    ] {
        let info = classify(method, path, None).unwrap();
        assert!(!info.is_resource, "{path}");
        assert_eq!(info.verb, verb, "{path}");
        assert!(info.resource.is_empty());
    }
}

#[test]
fn refuses_ambiguous_paths() {
    for (path, want) in [
        ("api/v1/pods", ClassifyError::NotAbsolute),
        ("", ClassifyError::NotAbsolute),
        ("/api/v1/namespaces/a%2Fb/pods", ClassifyError::EncodedSlash),
        ("/api/v1/namespaces/a%2fb/pods", ClassifyError::EncodedSlash),
        (
            "/api/v1/namespaces/default/pods%2Fweb",
            ClassifyError::EncodedSlash,
        ),
        ("/api/v1/namespaces/../pods", ClassifyError::DotSegment),
        ("/api/v1/./pods", ClassifyError::DotSegment),
        (
            "/api/v1/namespaces/%2e%2e/secrets",
            ClassifyError::DotSegment,
        ),
        ("/api/v1/namespaces/%2E/secrets", ClassifyError::DotSegment),
        ("/api//v1/pods", ClassifyError::EmptySegment),
        ("//api/v1/pods", ClassifyError::EmptySegment),
        ("/api/v1/pods//", ClassifyError::EmptySegment),
        ("/api/v1/namespaces/%zz/pods", ClassifyError::BadEscape),
        ("/api/v1/namespaces/%4/pods", ClassifyError::BadEscape),
        ("/api/v1/namespaces/%ff/pods", ClassifyError::NotUtf8),
        (
            "/api/v1/namespaces/a%00b/pods",
            ClassifyError::ControlCharacter,
        ),
        (
            "/api/v1/namespaces/a%0d%0ab/pods",
            ClassifyError::ControlCharacter,
        ),
        ("/api/v1/watch", ClassifyError::MissingResource),
        ("/api/v1/proxy", ClassifyError::MissingResource),
    ] {
        assert_eq!(classify("GET", path, None), Err(want), "{path}");
    }
}

#[test]
fn refuses_ambiguous_watch_parameters() {
    for query in [
        "watch=true&watch=false",
        "watch=yes",
        "watch=true&watch=true",
    ] {
        assert!(
            matches!(
                classify("GET", "/api/v1/pods", Some(query)),
                Err(ClassifyError::AmbiguousWatch(_))
            ),
            "{query}"
        );
    }
    // A watch parameter on a named get does not change the verb.
    let info = classify("GET", "/api/v1/namespaces/d/pods/p", Some("watch=1")).unwrap();
    assert_eq!(info.verb, "get");
}

#[test]
fn refuses_unknown_methods_on_resources() {
    assert_eq!(
        classify("TRACE", "/api/v1/pods", None),
        Err(ClassifyError::Method("TRACE".into()))
    );
}

#[test]
fn field_selector_name_must_be_a_plain_segment() {
    for selector in [
        "metadata.name%3D..",
        "metadata.name%3Da%2Fb",
        "metadata.name%21%3Dweb",
    ] {
        let q = format!("fieldSelector={selector}");
        let info = classify("GET", "/api/v1/pods", Some(&q)).unwrap();
        assert_eq!(info.name, "", "{selector}");
    }
}

#[test]
fn splits_the_cluster_prefix() {
    assert_eq!(
        split_cluster("/clusters/sim/api/v1/pods"),
        Some(("sim", "/api/v1/pods"))
    );
    assert_eq!(split_cluster("/clusters/sim"), Some(("sim", "/")));
    assert_eq!(split_cluster("/clusters/sim/"), Some(("sim", "/")));
    assert_eq!(
        split_cluster("/clusters/prod-eu.1/version"),
        Some(("prod-eu.1", "/version"))
    );
    for bad in [
        "/api/v1/pods",
        "/clusters/",
        "/clusters//api",
        "/clusters/../api",
        "/clusters/a%2Fb/api",
        "/clusters/sim%2f..",
        "/Clusters/sim/api",
    ] {
        assert_eq!(split_cluster(bad), None, "{bad}");
    }
}

#[test]
fn discovery_paths_are_non_resource_requests() {
    for path in ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1"] {
        let info = classify("GET", path, None).unwrap();
        assert!(!info.is_resource, "{path}");
        assert_eq!(info.verb, "get", "{path}");
    }
    let pods = classify("GET", "/api/v1/pods", None).unwrap();
    assert!(pods.is_resource);
    assert_eq!(pods.verb, "list");
}
