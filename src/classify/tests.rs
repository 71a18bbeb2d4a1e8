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
        // The path as Go's `URL.Path` holds it: percent-decoded.
        assert_eq!(info.path, path.replace("d%65fault", "default"));
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

/// The verb of `GET /api/v1/namespaces/default/secrets?{query}`.
fn collection_verb(query: &str) -> Result<String, ClassifyError> {
    classify("GET", "/api/v1/namespaces/default/secrets", Some(query)).map(|i| i.verb)
}

#[test]
fn watch_is_read_as_apimachinery_converts_a_bool() {
    // `Convert_Slice_string_To_bool`: only absent, `0` and `false` (any case) are false. The
    // first three rows are the masking bypass: custody used to call them lists.
    for (query, verb) in [
        ("watch=f&fieldSelector=metadata.name%3Ddb", "watch"),
        ("watch=", "watch"),
        ("watch", "watch"),
        ("watch=no", "watch"),
        ("watch=off", "watch"),
        ("watch=00", "watch"),
        ("watch=+", "watch"),
        ("watch=yes", "watch"),
        ("watch=TRUE", "watch"),
        ("watch=0", "list"),
        ("watch=false", "list"),
        ("watch=FALSE", "list"),
        ("watch=fAlSe", "list"),
        ("", "list"),
        ("watchx=1", "list"),
        ("WATCH=1", "list"),
        // `strings.EqualFold`: U+017F folds to `s`.
        ("watch=fal%C5%BFe", "list"),
        // The first value wins.
        ("watch=false&watch=true", "list"),
        ("watch=true&watch=false", "watch"),
        ("watch=0&watch=1", "list"),
        // Keys are decoded too.
        ("wat%63h=1", "watch"),
        ("%77atch", "watch"),
        // A pair holding `;` is dropped, not split.
        ("watch=1;x=y", "list"),
        ("x=y;watch=1", "list"),
        ("a=1;b=2&watch=1", "watch"),
        ("watch;=1", "list"),
        ("watch=true;&watch=false", "list"),
        // A pair with an invalid escape is dropped; the rest of the query is kept.
        ("watch=%zz", "list"),
        ("watch=%zz&watch=1", "watch"),
        ("x=%4&watch=1", "watch"),
        ("watch=%&watch=0", "list"),
        ("&&watch=1&&", "watch"),
        // The API server cannot decode the list options (bad limit, timeoutSeconds or
        // selector): it reads `watch` with `strings.ToLower` instead, same answers for ASCII.
        ("watch=FALSE&limit=x", "list"),
        ("watch=f&limit=x", "watch"),
        ("watch=&fieldSelector=bogus", "watch"),
        ("watch=fal%C5%BFe&limit=x", "watch"),
        ("watch=fal%C5%BFe&timeoutSeconds=1.5", "watch"),
        ("watch=fal%C5%BFe&fieldSelector=a%3Db%3Dc", "watch"),
        ("watch=fal%C5%BFe&limit=%2B5", "list"),
        ("watch=fal%C5%BFe&labelSelector=app%3Dweb", "list"),
    ] {
        assert_eq!(collection_verb(query).as_deref(), Ok(verb), "{query}");
    }
    // A watch parameter on a named get does not change the verb.
    let info = classify("GET", "/api/v1/namespaces/d/pods/p", Some("watch=1")).unwrap();
    assert_eq!(info.verb, "get");
    // Nor on deletecollection.
    let info = classify("DELETE", "/api/v1/namespaces/d/pods", Some("watch=1")).unwrap();
    assert_eq!(info.verb, "deletecollection");
}

#[test]
fn a_watch_that_depends_on_an_unreadable_label_selector_is_refused() {
    // `falſe` is false to `EqualFold` and true to the `ToLower` fallback; which one the API
    // server uses depends on whether `labels.Parse` accepts the selector.
    assert!(matches!(
        collection_verb("watch=fal%C5%BFe&labelSelector=app+in+%28web%29"),
        Err(ClassifyError::AmbiguousWatch(_))
    ));
    // The same selector with an ASCII watch value is read with certainty.
    assert_eq!(
        collection_verb("watch=f&labelSelector=app+in+%28web%29").as_deref(),
        Ok("watch")
    );
}

#[test]
fn a_field_selector_names_the_object_as_requires_exact_match_does() {
    let name = |query: &str| {
        classify("GET", "/api/v1/namespaces/default/secrets", Some(query)).map(|i| i.name)
    };
    for (query, want) in [
        ("fieldSelector=metadata.name%3Ddb", "db"),
        ("fieldSelector=metadata.name%3D%3Ddb", "db"),
        ("fieldSelector=metadata.name=db", "db"),
        ("fieldSelector=metadata.name%21%3Ddb", ""),
        // The field is not trimmed (`+` is a space).
        ("fieldSelector=+metadata.name%3Ddb", ""),
        ("fieldSelector=metadata.name+%3Ddb", ""),
        // The value is kept as written, spaces included.
        ("fieldSelector=metadata.name%3D+db", " db"),
        // Terms are sorted before the first match is taken.
        ("fieldSelector=metadata.name%3Db,metadata.name%3Da", "a"),
        (
            "fieldSelector=metadata.name%3Db,metadata.namespace%3Dx",
            "b",
        ),
        // Escapes in the value.
        ("fieldSelector=metadata.name%3Da%5C%2Cb", "a,b"),
        // The first fieldSelector wins.
        (
            "fieldSelector=metadata.name%3Ddb&fieldSelector=metadata.name%3Dother",
            "db",
        ),
        // Not a valid path segment name: no name.
        ("fieldSelector=metadata.name%3D..", ""),
        ("fieldSelector=metadata.name%3Da%2Fb", ""),
        ("fieldSelector=metadata.name%3Da%25b", ""),
        ("fieldSelector=metadata.name%3D", ""),
        // The selector does not parse: no name.
        ("fieldSelector=metadata.name%3Ddb,bogus", ""),
        ("fieldSelector=metadata.name%3Da%3Db", ""),
        ("fieldSelector=metadata.name%3Da%5C", ""),
        ("fieldSelector=metadata.name%3Da%5Cx", ""),
        // Another list option does not decode: the API server drops the name.
        ("fieldSelector=metadata.name%3Ddb&limit=ten", ""),
        (
            "fieldSelector=metadata.name%3Ddb&timeoutSeconds=99999999999999999999",
            "",
        ),
        ("fieldSelector=metadata.name%3Ddb&limit=-5", "db"),
        (
            "fieldSelector=metadata.name%3Ddb&labelSelector=app%3Dweb,%21gone",
            "db",
        ),
        ("fieldSelector=metadata.name%3Ddb&labelSelector=", "db"),
        // A `;` drops the pair.
        ("fieldSelector=metadata.name%3Ddb;", ""),
    ] {
        assert_eq!(name(query).as_deref(), Ok(want), "{query}");
    }
    // A name that depends on a label selector custody cannot be sure of is refused.
    for label in [
        "app+in+%28a%29",
        "a%3D",
        "tier%3E1",
        "example.com%2Fapp%3Dweb",
    ] {
        let query = format!("fieldSelector=metadata.name%3Ddb&labelSelector={label}");
        assert!(
            matches!(name(&query), Err(ClassifyError::UncertainLabelSelector(_))),
            "{query}"
        );
    }
    // A fieldSelector custody must read has to be UTF-8.
    assert_eq!(
        name("fieldSelector=metadata.name%3D%FF"),
        Err(ClassifyError::ParameterNotUtf8("fieldSelector".into()))
    );
}

#[test]
fn the_query_reader_follows_go_net_url() {
    let q = Query::parse(Some("a=1&a=2&b&c=&=d&e=x+y%2Bz&f=%zz&g;=1&h=1;2&a=3")).unwrap();
    assert_eq!(q.values("a"), [b"1", b"2", b"3"]);
    assert_eq!(q.first("b"), Some(&b""[..]));
    assert_eq!(q.first("c"), Some(&b""[..]));
    assert_eq!(q.first(""), Some(&b"d"[..]));
    assert_eq!(q.first("e"), Some(&b"x y+z"[..]));
    for dropped in ["f", "g", "g;", "h"] {
        assert_eq!(q.first(dropped), None, "{dropped}");
    }
    assert!(q.bool("b"));
    assert!(!q.bool("missing"));
    assert!(Query::parse(None).unwrap().is_empty());
    assert!(Query::parse(Some("&&;")).unwrap().is_empty());

    // Go 1.26 reads at most 10,000 parameters and drops them all above that.
    let at_limit = vec!["x=1"; MAX_PARAMS].join("&");
    assert!(Query::parse(Some(&at_limit)).is_ok());
    let over = format!("{at_limit}&watch=1");
    assert_eq!(
        Query::parse(Some(&over)),
        Err(ClassifyError::TooManyParameters(MAX_PARAMS + 1))
    );
    assert!(matches!(
        classify("GET", "/api/v1/secrets", Some(&over)),
        Err(ClassifyError::TooManyParameters(_))
    ));
}

#[test]
fn exec_options_are_read_as_the_api_server_converts_them() {
    let options = StreamOptions::read(Some(
        "container=a&container=b&command=sh&command=-c&command=echo+hi&tty=yes&stdin",
    ))
    .unwrap();
    assert_eq!(options.container, "a");
    assert_eq!(options.command, ["sh", "-c", "echo hi"]);
    assert!(options.tty, "tty=yes is a terminal to the API server");
    assert!(options.stdin, "a bare stdin is true");
    let options = StreamOptions::read(Some("tty=0&tty=1&stdin=FALSE")).unwrap();
    assert!(!options.tty);
    assert!(!options.stdin);
    // A command custody would record differently from what runs is refused.
    assert_eq!(
        classify(
            "POST",
            "/api/v1/namespaces/d/pods/p/exec",
            Some("command=%FF")
        ),
        Err(ClassifyError::ParameterNotUtf8("command".into()))
    );
    assert!(
        classify(
            "POST",
            "/api/v1/namespaces/d/pods/p/log",
            Some("command=%FF")
        )
        .is_ok()
    );
}

#[test]
fn refuses_unknown_methods_on_resources() {
    // The API server gives them the empty verb; Go's method names are case-sensitive.
    for method in ["TRACE", "OPTIONS", "get", "Post"] {
        assert_eq!(
            classify(method, "/api/v1/pods", None),
            Err(ClassifyError::Method(method.into()))
        );
    }
    // A path verb does not depend on the method.
    let info = classify("OPTIONS", "/api/v1/watch/pods", None).unwrap();
    assert_eq!(info.verb, "watch");
}

#[test]
fn non_resource_paths_are_decoded_for_the_policy() {
    for (raw, decoded) in [
        ("/healthz/%65tcd", "/healthz/etcd"),
        ("/version/", "/version/"),
        ("/", "/"),
        ("/metrics%20x", "/metrics x"),
        ("/a+b", "/a+b"),
        ("/api/v%31", "/api/v1"),
    ] {
        let info = classify("GET", raw, None).unwrap();
        assert!(!info.is_resource, "{raw}");
        assert_eq!(info.path, decoded, "{raw}");
    }
}

#[test]
fn paths_classify_as_new_request_info_splits_them() {
    let cases: &[(&str, &str, [&str; 7])] = &[
        // Namespace subresources stay on the namespace.
        (
            "PUT",
            "/api/v1/namespaces/ns/finalize",
            ["update", "", "v1", "namespaces", "finalize", "ns", "ns"],
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/status/",
            ["get", "", "v1", "namespaces", "status", "ns", "ns"],
        ),
        // Anything else after a namespace is a resource in it.
        (
            "GET",
            "/api/v1/namespaces/ns/finalizex",
            ["list", "", "v1", "finalizex", "", "ns", ""],
        ),
        (
            "GET",
            "/api/v1/watch/namespaces",
            ["watch", "", "v1", "namespaces", "", "", ""],
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/ns",
            ["watch", "", "v1", "namespaces", "", "ns", "ns"],
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/ns/pods/p/status",
            ["watch", "", "v1", "pods", "status", "ns", "p"],
        ),
        (
            "POST",
            "/api/v1/proxy/nodes/n/x/y",
            ["proxy", "", "v1", "nodes", "", "", "n"],
        ),
        (
            "DELETE",
            "/api/v1/proxy/namespaces/ns/services/s:80",
            ["proxy", "", "v1", "services", "", "ns", "s:80"],
        ),
        // `/apis/{group}/{version}/{x}` is a resource even if x names nothing.
        (
            "GET",
            "/apis/apps/v1/namespaces",
            ["list", "apps", "v1", "namespaces", "", "", ""],
        ),
        ("GET", "/apis/x/y/z", ["list", "x", "y", "z", "", "", ""]),
        // Only `api` is groupless; the fourth segment of `/api` paths is a name.
        (
            "GET",
            "/api/apps/v1/deployments",
            ["get", "", "apps", "v1", "", "", "deployments"],
        ),
        (
            "DELETE",
            "/api/v1/namespaces/ns/pods/p/ephemeralcontainers/x/y",
            ["delete", "", "v1", "pods", "ephemeralcontainers", "ns", "p"],
        ),
        (
            "DELETE",
            "/api/v1/namespaces/ns/pods?fieldSelector=metadata.name%3Dp",
            ["deletecollection", "", "v1", "pods", "", "ns", ""],
        ),
        (
            "HEAD",
            "/api/v1/pods",
            ["list", "", "v1", "pods", "", "", ""],
        ),
        (
            "GET",
            "/api/v1/namespaces/a%3Ab+c/configmaps/x%40y",
            ["get", "", "v1", "configmaps", "", "a:b+c", "x@y"],
        ),
    ];
    for (method, target, want) in cases {
        let (path, query) = target
            .split_once('?')
            .map_or((*target, None), |(p, q)| (p, Some(q)));
        let info = classify(method, path, query).unwrap_or_else(|e| panic!("{target}: {e}"));
        let got = [
            info.verb.as_str(),
            &info.api_group,
            &info.version,
            &info.resource,
            &info.subresource,
            &info.namespace,
            &info.name,
        ];
        assert_eq!(&got, want, "{method} {target}");
    }
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
