//! Differential classification against a real kube-apiserver: a generated corpus of request
//! lines (path tricks, encodings, duplicate and malformed query parameters, every verb and
//! subresource kubectl uses) goes through custody to the API server built from the pinned
//! Kubernetes release. Both audit trails are joined on the request id (custody's id is the
//! API server's `Audit-ID`), and for every request both recorded custody's reading (verb,
//! group, version, resource, subresource, namespace, name, or the non-resource path) must be
//! the API server's (`verb` and `objectRef`, or `requestURI`). A request custody refused must
//! never have reached the API server.
//!
//! The identity (alice) has no RBAC: the API server audits a request it denies with its verb
//! and `objectRef`, because `WithAudit` runs before `WithAuthorization`; denials are cheap, so
//! even watches end at once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use custody::upstream::Upstream;
use custody_fixtures::real_cluster::{CUSTODY_USER, RealCluster};
use env::{Env, Options};
use futures_util::StreamExt;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// How many request lines the corpus holds; about one in eight is refused by custody.
const CORPUS: usize = 2_600;
/// Requests in flight at once.
const CONCURRENCY: usize = 8;
/// The fixed seed: the same corpus on every run.
const SEED: u64 = 0x00c0_ffee_15c1_a551;

/// splitmix64: a tiny deterministic generator, enough to pick from tables.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// (group, version, resource, namespaced, subresources).
type Kind = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
);

const POD_SUBRESOURCES: &[&str] = &[
    "status",
    "log",
    "exec",
    "attach",
    "portforward",
    "proxy",
    "eviction",
    "ephemeralcontainers",
    "binding",
    "resize",
];

const KINDS: &[Kind] = &[
    ("", "v1", "pods", true, POD_SUBRESOURCES),
    ("", "v1", "secrets", true, &[]),
    ("", "v1", "configmaps", true, &[]),
    ("", "v1", "services", true, &["proxy", "status"]),
    ("", "v1", "serviceaccounts", true, &["token"]),
    ("", "v1", "events", true, &[]),
    ("", "v1", "endpoints", true, &[]),
    ("", "v1", "persistentvolumeclaims", true, &["status"]),
    (
        "",
        "v1",
        "replicationcontrollers",
        true,
        &["scale", "status"],
    ),
    ("", "v1", "resourcequotas", true, &["status"]),
    ("", "v1", "namespaces", false, &["status", "finalize"]),
    ("", "v1", "nodes", false, &["proxy", "status"]),
    ("", "v1", "persistentvolumes", false, &["status"]),
    ("apps", "v1", "deployments", true, &["scale", "status"]),
    ("apps", "v1", "statefulsets", true, &["scale", "status"]),
    ("apps", "v1", "daemonsets", true, &["status"]),
    ("apps", "v1", "replicasets", true, &["scale", "status"]),
    ("batch", "v1", "jobs", true, &["status"]),
    ("batch", "v1", "cronjobs", true, &["status"]),
    ("rbac.authorization.k8s.io", "v1", "roles", true, &[]),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        false,
        &[],
    ),
    ("networking.k8s.io", "v1", "ingresses", true, &["status"]),
    ("policy", "v1", "poddisruptionbudgets", true, &["status"]),
    ("coordination.k8s.io", "v1", "leases", true, &[]),
    (
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        true,
        &["status"],
    ),
    (
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        false,
        &["approval", "status"],
    ),
    ("storage.k8s.io", "v1", "storageclasses", false, &[]),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        false,
        &["status"],
    ),
    (
        "example.com",
        "v1alpha1",
        "widgets",
        true,
        &["status", "scale"],
    ),
];

/// Object names: plain, odd but valid in a path, and ordinary characters percent-encoded.
const NAMES: &[&str] = &[
    "db",
    "web-1",
    "a.b",
    "n1",
    "%64b",
    "web%2D1",
    "s:80",
    "https:web:8443",
    "user@x",
    "a+b",
    "a~b",
    "it's",
    "a(b)",
    "a*b",
    "a,b",
    "a;b",
    "a=b",
    "a$b",
    "a!b",
    "a%20b",
    "%C3%A9t%C3%A9",
    "a%25b",
    "a%3Fb",
    "a%23b",
    "UPPER",
    "0",
    "-",
    "_x_",
    "..a",
    "a..",
    "...",
    "proxy",
    "watch",
    "namespaces",
    "status",
];

const NAMESPACES: &[&str] = &[
    "default",
    "kube-system",
    "team-a",
    "d%65fault",
    "ns.with.dots",
    "namespaces",
    "watch",
];

/// Query parameters, each a list of spellings.
const WATCH: &[&str] = &[
    "watch",
    "watch=",
    "watch=f",
    "watch=F",
    "watch=no",
    "watch=off",
    "watch=0",
    "watch=00",
    "watch=false",
    "watch=FALSE",
    "watch=fAlSe",
    "watch=1",
    "watch=true",
    "watch=True",
    "watch=yes",
    "watch=+",
    "watch=%20",
    "watch=fal%C5%BFe",
    "watch=%zz",
    "watch=1;",
    "watch;=1",
    "watch=0&watch=1",
    "watch=1&watch=0",
    "wat%63h=1",
    "%77atch=false",
    "WATCH=1",
    "watch=%",
];

const FIELD_SELECTORS: &[&str] = &[
    "fieldSelector=metadata.name%3Ddb",
    "fieldSelector=metadata.name=db",
    "fieldSelector=metadata.name%3D%3Ddb",
    "fieldSelector=metadata.name%21%3Ddb",
    "fieldSelector=metadata.name%3Db,metadata.name%3Da",
    "fieldSelector=metadata.name%3Dx,metadata.namespace%3Ddefault",
    "fieldSelector=metadata.namespace%3Ddefault,metadata.name%3Dy",
    "fieldSelector=metadata.name%3Da%5C%2Cb",
    "fieldSelector=metadata.name%3Da%5C%3Db",
    "fieldSelector=metadata.name%3D..",
    "fieldSelector=metadata.name%3Da%2Fb",
    "fieldSelector=metadata.name%3Da%25b",
    "fieldSelector=metadata.name%3D",
    "fieldSelector=metadata.name%3D+db",
    "fieldSelector=+metadata.name%3Ddb",
    "fieldSelector=metadata.name%3Ddb,bogus",
    "fieldSelector=metadata.name%3Da%3Db",
    "fieldSelector=metadata.name%3Da%5C",
    "fieldSelector=bogus",
    "fieldSelector=metadata.name%3Ddb&fieldSelector=metadata.name%3Dother",
    "fieldSelector=metadata.name%3Ddb;",
    "fieldSelector=spec.nodeName%3Dn1",
    "fieldSelector=metadata.name%3D%C3%A9",
    "fieldSelector=metadata.name%3D%FF",
];

const OTHER_PARAMS: &[&str] = &[
    "labelSelector=app%3Dweb",
    "labelSelector=app%3Dweb,%21gone",
    "labelSelector=app+in+%28web%29",
    "labelSelector=%3D%3D",
    "labelSelector=",
    "limit=500",
    "limit=ten",
    "limit=%2B5",
    "timeoutSeconds=30",
    "timeoutSeconds=1.5",
    "resourceVersion=0",
    "resourceVersionMatch=NotOlderThan",
    "allowWatchBookmarks=true",
    "sendInitialEvents=true",
    "continue=abc",
    "pretty=true",
    "dryRun=All",
    "dryRun=All&dryRun=bogus",
    "fieldManager=kubectl-client-side-apply",
    "fieldValidation=Strict",
    "force=true",
    "propagationPolicy=Background",
    "gracePeriodSeconds=0",
    "container=c",
    "container=c&container=d",
    "command=sh&command=-c&command=echo+hi",
    "command=%FF",
    "stdin=true&stdout=true&tty=yes",
    "tty=0&tty=1",
    "follow=true&tailLines=10",
    "follow",
    "ports=8080",
    "timeout=5s",
    "x=%",
    "%zz=1",
    "a=1;b=2",
    "&&",
    "=",
    "a==b",
    "q=%C3%A9",
    "q=%FF",
    "q=a%2Fb%3Fc%23d",
];

/// Requests outside `/api` and `/apis` resources, and discovery.
const NON_RESOURCE: &[&str] = &[
    "/",
    "/api",
    "/api/",
    "/api/v1",
    "/api/v1/",
    "/apis",
    "/apis/",
    "/apis/apps",
    "/apis/apps/v1",
    "/apis/apps/v1/",
    "/apis/example.com",
    "/apis/example.com/v1alpha1",
    "/version",
    "/version/",
    "/healthz",
    "/healthz/etcd",
    "/livez",
    "/readyz",
    "/openapi/v3",
    "/openapi/v3/apis/apps/v1",
    "/metrics",
    "/logs/",
    "/.well-known/openid-configuration",
    "/openid/v1/jwks",
    "/nonexistent/path",
    "/%61pi",
    "/ap%69s/apps",
    "/healthz/%65tcd",
    "/a%20b/c+d",
    "/apis/%C3%A9",
    "/debug/pprof",
];

/// Paths custody refuses: ambiguous or unreadable.
const REFUSED_PATHS: &[&str] = &[
    "/api//v1/pods",
    "//api/v1/pods",
    "/api/v1/pods//",
    "/api/v1/namespaces/a%2Fb/pods",
    "/api/v1/namespaces/default/secrets%2Fdb",
    "/api/v1/namespaces/../secrets",
    "/api/v1/namespaces/%2e%2e/secrets",
    "/api/v1/./pods",
    "/api/v1/namespaces/default/pods/%2E",
    "/api/v1/namespaces/%zz/pods",
    "/api/v1/namespaces/%4/pods",
    "/api/v1/namespaces/%ff/pods",
    "/api/v1/namespaces/a%00b/pods",
    "/api/v1/namespaces/a%0Ab/pods",
    "/api/v1/watch",
    "/api/v1/proxy",
    "/api/v1/watch/",
    "/apis/apps/v1/watch",
    "/healthz/%2F",
];

/// Queries every run sends on a collection `GET`, whatever the generator draws: the cases where
/// Go's and apimachinery's reading is least obvious (the unit tests in `src/classify/tests.rs`
/// hold the same table).
const FIXED_QUERIES: &[&str] = &[
    "watch=f&fieldSelector=metadata.name%3Ddb",
    "watch=",
    "watch",
    "watch=no",
    "watch=00",
    "watch=+",
    "watch=fAlSe",
    "watch=fal%C5%BFe",
    "watch=false&watch=true",
    "watch=true&watch=false",
    "wat%63h=1",
    "%77atch",
    "watch=1;x=y",
    "x=y;watch=1",
    "a=1;b=2&watch=1",
    "watch;=1",
    "watch=true;&watch=false",
    "watch=%zz",
    "watch=%zz&watch=1",
    "x=%4&watch=1",
    "watch=%&watch=0",
    "&&watch=1&&",
    "watch=FALSE&limit=x",
    "watch=f&limit=x",
    "watch=&fieldSelector=bogus",
    "watch=fal%C5%BFe&limit=x",
    "watch=fal%C5%BFe&timeoutSeconds=1.5",
    "watch=fal%C5%BFe&fieldSelector=a%3Db%3Dc",
    "watch=fal%C5%BFe&limit=%2B5",
    "watch=fal%C5%BFe&labelSelector=app%3Dweb",
    "watch=f&labelSelector=app+in+%28web%29",
    "fieldSelector=metadata.name%3Ddb",
    "fieldSelector=metadata.name%3D%3Ddb",
    "fieldSelector=metadata.name%21%3Ddb",
    "fieldSelector=+metadata.name%3Ddb",
    "fieldSelector=metadata.name+%3Ddb",
    "fieldSelector=metadata.name%3D+db",
    "fieldSelector=metadata.name%3Db,metadata.name%3Da",
    "fieldSelector=metadata.name%3Db,metadata.namespace%3Dx",
    "fieldSelector=metadata.name%3Da%5C%2Cb",
    "fieldSelector=metadata.name%3Ddb&fieldSelector=metadata.name%3Dother",
    "fieldSelector=metadata.name%3D..",
    "fieldSelector=metadata.name%3Da%2Fb",
    "fieldSelector=metadata.name%3Da%25b",
    "fieldSelector=metadata.name%3D",
    "fieldSelector=metadata.name%3Ddb,bogus",
    "fieldSelector=metadata.name%3Da%3Db",
    "fieldSelector=metadata.name%3Da%5C",
    "fieldSelector=metadata.name%3Da%5Cx",
    "fieldSelector=metadata.name%3Ddb&limit=ten",
    "fieldSelector=metadata.name%3Ddb&timeoutSeconds=99999999999999999999",
    "fieldSelector=metadata.name%3Ddb&limit=-5",
    "fieldSelector=metadata.name%3Ddb&labelSelector=app%3Dweb,%21gone",
    "fieldSelector=metadata.name%3Ddb&labelSelector=",
    "fieldSelector=metadata.name%3Ddb;",
    "fieldSelector=metadata.name%3Ddb&labelSelector=app+in+%28a%29",
];

/// One request line: method, and the path with its query after `/clusters/<name>`.
#[derive(Debug, Clone)]
struct Line {
    method: &'static str,
    target: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.target)
    }
}

/// Replaces one ASCII letter or digit of `segment` by its percent-encoding, sometimes.
fn maybe_encode(rng: &mut Rng, segment: &str) -> String {
    if !rng.chance(8) || segment.is_empty() {
        return segment.to_owned();
    }
    let bytes = segment.as_bytes();
    let i = rng.below(bytes.len());
    if !bytes[i].is_ascii_alphanumeric() {
        return segment.to_owned();
    }
    format!("{}%{:02X}{}", &segment[..i], bytes[i], &segment[i + 1..])
}

/// The resource path of `kind`: a collection, an object or a subresource, sometimes through
/// the `watch`/`proxy` path verbs.
fn resource_path(rng: &mut Rng, kind: &Kind) -> String {
    let (group, version, resource, namespaced, subresources) = *kind;
    let mut segs: Vec<String> = Vec::new();
    if group.is_empty() {
        segs.push(maybe_encode(rng, "api"));
    } else {
        segs.push(maybe_encode(rng, "apis"));
        segs.push(maybe_encode(rng, group));
    }
    segs.push(maybe_encode(rng, version));
    let verb_prefix = match rng.below(100) {
        0..=7 => Some("watch"),
        8..=11 => Some("proxy"),
        _ => None,
    };
    if let Some(prefix) = verb_prefix {
        segs.push(maybe_encode(rng, prefix));
    }
    if namespaced && !rng.chance(15) {
        segs.push(maybe_encode(rng, "namespaces"));
        segs.push((*rng.pick(NAMESPACES)).to_owned());
    }
    segs.push(maybe_encode(rng, resource));
    let depth = rng.below(10);
    if depth >= 3 {
        segs.push((*rng.pick(NAMES)).to_owned());
    }
    if depth >= 7 {
        if subresources.is_empty() || rng.chance(10) {
            segs.push("status".to_owned());
        } else {
            let sub = rng_pick_str(rng, subresources);
            segs.push(maybe_encode(rng, sub));
        }
        if depth == 9 {
            // The rest of a proxied path, or trailing segments the API server ignores.
            segs.push("some".to_owned());
            segs.push((*rng.pick(NAMES)).to_owned());
        }
    }
    let mut path = format!("/{}", segs.join("/"));
    if rng.chance(12) {
        path.push('/');
    }
    path
}

fn rng_pick_str(rng: &mut Rng, items: &[&'static str]) -> &'static str {
    items[rng.below(items.len())]
}

/// Paths around namespaces and discovery that `NewRequestInfo` treats specially.
fn namespace_path(rng: &mut Rng) -> String {
    let ns = rng.pick(NAMESPACES);
    let base = ["/api/v1", "/api/v1/watch", "/api/v1/proxy"][rng.below(3)];
    let tail = match rng.below(6) {
        0 => "/namespaces".to_owned(),
        1 => format!("/namespaces/{ns}"),
        2 => format!("/namespaces/{ns}/status"),
        3 => format!("/namespaces/{ns}/finalize"),
        4 => format!("/namespaces/{ns}/finalizex"),
        _ => format!("/namespaces/{ns}/status/extra"),
    };
    let mut path = format!("{base}{tail}");
    if rng.chance(15) {
        path.push('/');
    }
    path
}

/// A query of up to four parameters, malformed ones included, in random order.
fn query(rng: &mut Rng, collection_get: bool) -> Option<String> {
    let n = rng.below(if collection_get { 5 } else { 3 });
    if n == 0 && !rng.chance(3) {
        return None;
    }
    let mut params = Vec::new();
    for _ in 0..n {
        let table = match rng.below(if collection_get { 4 } else { 6 }) {
            0 => WATCH,
            1 => FIELD_SELECTORS,
            _ => OTHER_PARAMS,
        };
        params.push(*rng.pick(table));
    }
    Some(params.join("&"))
}

const METHODS: &[&str] = &[
    "GET", "GET", "GET", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "DELETE",
];

/// The corpus: deterministic, `CORPUS` lines.
fn corpus() -> Vec<Line> {
    let mut rng = Rng(SEED);
    let mut lines = Vec::with_capacity(CORPUS);
    while lines.len() < CORPUS {
        let shape = rng.below(100);
        let (method, path) = match shape {
            0..=69 => {
                let kind = rng.pick(KINDS);
                (*rng.pick(METHODS), resource_path(&mut rng, kind))
            }
            70..=79 => (*rng.pick(METHODS), namespace_path(&mut rng)),
            80..=89 => {
                let method = if rng.chance(80) {
                    "GET"
                } else {
                    *rng.pick(&["POST", "OPTIONS", "HEAD"])
                };
                (method, (*rng.pick(NON_RESOURCE)).to_owned())
            }
            90..=94 => (*rng.pick(METHODS), (*rng.pick(REFUSED_PATHS)).to_owned()),
            // Methods the API server gives no verb on resource paths.
            _ => (*rng.pick(&["OPTIONS", "TRACE", "PROPFIND"]), {
                let kind = rng_kind(&mut rng);
                resource_path(&mut rng, kind)
            }),
        };
        let collection_get = matches!(method, "GET" | "HEAD");
        let target = match query(&mut rng, collection_get) {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        // The corpus is only of request lines a client can send.
        assert!(
            http::Uri::try_from(format!("/clusters/sim{target}")).is_ok(),
            "the corpus holds an unsendable request target: {target}"
        );
        lines.push(Line { method, target });
    }
    for query in FIXED_QUERIES {
        for path in [
            "/api/v1/namespaces/default/secrets",
            "/apis/apps/v1/deployments",
        ] {
            lines.push(Line {
                method: "GET",
                target: format!("{path}?{query}"),
            });
        }
    }
    lines
}

fn rng_kind(rng: &mut Rng) -> &'static Kind {
    &KINDS[rng.below(KINDS.len())]
}

/// What a request got back: status and custody's request id.
#[derive(Debug)]
struct Sent {
    status: u16,
    audit_id: Option<String>,
    body: Vec<u8>,
}

/// Sends one request line as alice over a fresh TLS connection, without a body.
async fn send(
    env_addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    line: Line,
) -> (Line, Sent) {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(env_addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .method(line.method)
            .uri(format!("/clusters/sim{}", line.target))
            .header("host", "127.0.0.1")
            .header("authorization", "Bearer alice-token")
            .header("content-length", "0")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let audit_id = resp
            .headers()
            .get("audit-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Read the body, so the exchange completes in both audit trails.
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        Sent {
            status,
            audit_id,
            body,
        }
    };
    let sent = tokio::time::timeout(Duration::from_secs(30), attempt)
        .await
        .unwrap_or_else(|_| panic!("{line}: no answer in 30 s"));
    (line, sent)
}

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Go's percent-decoding of a path (`+` stays `+`).
fn decode_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// custody's reading and the API server's, as comparable strings.
fn custody_reading(request: &Value) -> String {
    let s = |k: &str| request[k].as_str().unwrap_or_default().to_owned();
    if request["is_resource"] == true {
        format!(
            "verb={} group={} version={} resource={} subresource={} namespace={} name={}",
            s("verb"),
            s("api_group"),
            s("version"),
            s("resource"),
            s("subresource"),
            s("namespace"),
            s("name")
        )
    } else {
        format!("verb={} non-resource path={}", s("verb"), s("path"))
    }
}

fn apiserver_reading(event: &Value) -> String {
    let verb = event["verb"].as_str().unwrap_or_default();
    let r = &event["objectRef"];
    if r.is_object() {
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
        format!(
            "verb={verb} group={} version={} resource={} subresource={} namespace={} name={}",
            s("apiGroup"),
            s("apiVersion"),
            s("resource"),
            s("subresource"),
            s("namespace"),
            s("name")
        )
    } else {
        let uri = event["requestURI"].as_str().unwrap_or_default();
        let path = uri.split_once('?').map_or(uri, |(p, _)| p);
        // The cluster prefix is custody's: the API server sees the path after it.
        format!("verb={verb} non-resource path={}", decode_path(path))
    }
}

/// Starts the real cluster, reporting a failure loudly rather than skipping.
fn start_cluster() -> RealCluster {
    let started = Instant::now();
    let cluster = RealCluster::start()
        .unwrap_or_else(|e| panic!("the real-cluster tier could not start a kube-apiserver: {e}"));
    eprintln!(
        "real cluster {} ready in {:.1} s",
        cluster.version(),
        started.elapsed().as_secs_f64()
    );
    cluster
}

/// custody in front of `cluster`, with `policy` if any.
fn gateway(cluster: &RealCluster, policy: Option<custody::policy::PolicyConfig>) -> Env {
    let upstream = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(Upstream::from_kubeconfig(
            cluster.custody_kubeconfig(),
            None,
        ))
        .unwrap()
    };
    Env::start(Options {
        upstream: Some(upstream),
        policy,
        ..Options::default()
    })
}

#[test]
fn custody_classifies_every_request_as_the_real_apiserver_does() {
    let lines = corpus();
    let cluster = start_cluster();
    let env = gateway(&cluster, None);

    let sending = Instant::now();
    let tls = client_config(&env.ca_pem);
    let addr = env.gateway_addr;
    let results: Vec<(Line, Sent)> = env.rt.block_on(
        futures_util::stream::iter(lines.iter().cloned())
            .map(|line| send(addr, tls.clone(), line))
            .buffer_unordered(CONCURRENCY)
            .collect(),
    );
    eprintln!(
        "{} request lines sent in {:.1} s",
        results.len(),
        sending.elapsed().as_secs_f64()
    );

    // Every request reached custody and got its request id back.
    let unanswered: Vec<String> = results
        .iter()
        .filter(|(_, sent)| sent.audit_id.is_none())
        .map(|(line, sent)| format!("{line} -> {}", sent.status))
        .collect();
    assert!(
        unanswered.is_empty(),
        "requests custody never answered with a request id:\n{}",
        unanswered.join("\n")
    );

    // custody's reading of each request, by id.
    let custody: HashMap<String, Value> = env
        .custody_audit()
        .into_iter()
        .filter(|e| e["stage"] == "decision" || e["decision"] == "deny")
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e))
        .collect();
    let mut forwarded = HashSet::new();
    let mut refused = HashSet::new();
    for (line, sent) in &results {
        let id = sent.audit_id.as_deref().unwrap();
        let event = custody
            .get(id)
            .unwrap_or_else(|| panic!("{line}: custody answered {id} but did not audit it"));
        if event["decision"] == "allow" {
            forwarded.insert(id.to_owned());
        } else {
            refused.insert(id.to_owned());
        }
    }

    // The API server writes an event when a response completes: wait for the last ones.
    let deadline = Instant::now() + Duration::from_secs(30);
    let apiserver: HashMap<String, Value> = loop {
        let events: HashMap<String, Value> = cluster
            .audit_events()
            .unwrap()
            .into_iter()
            .filter(|e| e["user"]["username"] == CUSTODY_USER)
            .filter_map(|e| Some((e["auditID"].as_str()?.to_owned(), e)))
            .collect();
        if forwarded.iter().all(|id| events.contains_key(id)) || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(250));
    };

    let mut mismatches = String::new();
    let mut joined = 0;
    let mut by_verb: BTreeMap<String, usize> = BTreeMap::new();
    for (line, sent) in &results {
        let id = sent.audit_id.as_deref().unwrap();
        if refused.contains(id) {
            assert!(
                !apiserver.contains_key(id),
                "{line}: custody refused it, yet the API server saw it: {}",
                apiserver[id]
            );
            continue;
        }
        let Some(theirs) = apiserver.get(id) else {
            continue;
        };
        joined += 1;
        let ours = custody_reading(&custody[id]["request"]);
        let theirs_reading = apiserver_reading(theirs);
        *by_verb
            .entry(theirs["verb"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
        if ours != theirs_reading {
            let _ = writeln!(
                mismatches,
                "{line}\n  custody:    {ours}\n  apiserver:  {theirs_reading}\n  requestURI: {}",
                theirs["requestURI"]
            );
        }
    }
    // Everything the API server saw from custody's identity is a request custody forwarded.
    for (id, event) in &apiserver {
        assert!(
            forwarded.contains(id),
            "the API server saw {id}, which custody did not forward: {event}"
        );
    }
    let lost: Vec<String> = results
        .iter()
        .filter(|(_, s)| {
            let id = s.audit_id.as_deref().unwrap();
            forwarded.contains(id) && !apiserver.contains_key(id)
        })
        .map(|(line, s)| format!("{line} -> {}", s.status))
        .collect();
    eprintln!(
        "{} lines: {} forwarded, {} refused by custody, {} joined with the API server's audit, \
         {} forwarded but not in its audit; verbs: {by_verb:?}; {:.1} s after the cluster was up",
        results.len(),
        forwarded.len(),
        refused.len(),
        joined,
        lost.len(),
        sending.elapsed().as_secs_f64()
    );
    assert!(
        mismatches.is_empty(),
        "custody and the API server read these requests differently:\n{mismatches}"
    );
    assert!(
        lost.is_empty(),
        "forwarded requests the API server never audited:\n{}",
        lost.join("\n")
    );
    assert!(joined >= 2_000, "only {joined} requests were joined");
    assert!(
        refused.len() >= 100,
        "the corpus should exercise refusals too; only {} were refused",
        refused.len()
    );
}

/// alice's role reads everything in `default` but does not show Secret values.
const MASKING_POLICY: &str = r#"
[[roles]]
name = "dev"
groups = ["dev"]

[[roles.rules]]
actions = ["*"]
resources = ["*"]
namespaces = ["default"]
"#;

/// The bypass this module's reading closes: `watch=f`, `watch=`, a bare `watch` and every
/// other spelling apimachinery reads as true are watches to the API server. custody used to
/// call them lists and did not mask the watch stream, so a person whose role hides Secret
/// values read them. Each spelling must now come back masked, and be audited as a watch.
#[test]
fn every_watch_spelling_of_a_secret_is_masked_on_the_real_apiserver() {
    const CANARY: &str = "canary-c1a551fy-w4tch";
    let cluster = start_cluster();
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "default"},
        "stringData": {"password": CANARY}
    });
    // The `default` namespace appears shortly after the API server is ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = cluster.create("/api/v1/namespaces/default/secrets", &secret) {
        assert!(Instant::now() < deadline, "cannot seed the Secret: {e}");
        std::thread::sleep(Duration::from_millis(500));
    }
    cluster
        .create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            &serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "secret-reader"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]
            }),
        )
        .unwrap();
    cluster
        .bind_cluster_role(
            "alice-reads-secrets",
            "secret-reader",
            "alice",
            ("watch", "secrets"),
        )
        .unwrap();
    let env = gateway(&cluster, Some(toml::from_str(MASKING_POLICY).unwrap()));
    let tls = client_config(&env.ca_pem);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let masked = b64(custody::masking::PLACEHOLDER);

    let spellings = [
        "watch=f",
        "watch=",
        "watch",
        "watch=no",
        "watch=F",
        "watch=0x",
        "watch=1",
        "watch=true",
        "watch=%20",
        "watch=f&watch=false",
        "wat%63h=off",
    ];
    let lines: Vec<Line> = spellings
        .iter()
        .map(|w| Line {
            method: "GET",
            target: format!(
                "/api/v1/namespaces/default/secrets?{w}&fieldSelector=metadata.name%3Ddb&timeoutSeconds=1"
            ),
        })
        .collect();
    let results: Vec<(Line, Sent)> = env.rt.block_on(
        futures_util::stream::iter(lines)
            .map(|line| send(env.gateway_addr, tls.clone(), line))
            .buffer_unordered(CONCURRENCY)
            .collect(),
    );
    let custody: HashMap<String, Value> = env
        .custody_audit()
        .into_iter()
        .filter(|e| e["stage"] == "decision")
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e))
        .collect();
    let mut problems = Vec::new();
    for (line, sent) in &results {
        let body = String::from_utf8_lossy(&sent.body);
        let id = sent.audit_id.as_deref().unwrap();
        if body.contains(CANARY) || body.contains(&b64(CANARY)) {
            problems.push(format!(
                "{line}: LEAK: the Secret's value reached a person whose role masks it \
                 (custody read it as {}): {body}",
                custody[id]["request"]["verb"]
            ));
        } else if sent.status != 200
            // The Secret did arrive, as a watch event, masked.
            || !body.contains("\"type\":\"ADDED\"")
            || !body.contains(&masked)
        {
            problems.push(format!("{line}: {} {body}", sent.status));
        } else if custody[id]["request"]["verb"] != "watch"
            || custody[id]["request"]["name"] != "db"
        {
            problems.push(format!("{line}: audited as {}", custody[id]["request"]));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
