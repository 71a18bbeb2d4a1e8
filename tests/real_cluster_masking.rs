//! Masking against the real kube-apiserver: a person whose role masks Secrets (alice, group
//! `dev`), with RBAC on every verb of `secrets` in `default`, runs a corpus of operations
//! through custody with real kubectl (1.32 and 1.28) and raw HTTPS. Secrets seeded with
//! unique random canaries (in `data`, in `stringData`, inside a larger value, in the
//! last-applied annotation of a client-side `kubectl apply`, under server-side apply) must not
//! reach her in any form: every byte she received, and every byte custody wrote (recordings,
//! audit trail, index, log lines), is scanned for each canary in plain, base64 (any alignment,
//! with and without padding) and JSON-escaped forms.
//!
//! The two live bypasses found against kube-apiserver v1.37.2 are named regression tests:
//! `?watch=f` (a watch to the API server) and JSON Patch `copy` with `--dry-run=server`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests: a failure should stop the test"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use bytes::Bytes;
use custody::policy::PolicyConfig;
use custody::upstream::Upstream;
use custody_fixtures::harness::{Collected, Kubectl, kubectl_binary};
use custody_fixtures::real_cluster::RealCluster;
use env::{Env, Options};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// alice (group `dev`) sees masked values in `default`; bob (`sre`) would see them.
const POLICY: &str = r#"
[[roles]]
name = "dev"
groups = ["dev"]

[[roles.rules]]
actions = ["*"]
resources = ["*"]
namespaces = ["default"]

[[roles]]
name = "sre"
groups = ["sre"]
show_secrets = true

[[roles.rules]]
actions = ["*"]
resources = ["*"]
"#;

const SECRETS: &str = "/clusters/sim/api/v1/namespaces/default/secrets";

/// One real cluster at a time: the machine has two shared cores.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

/// Every log line of the gateway, at debug level, shared by the tests of this file (the
/// subscriber is global); each test scans it for its own canaries.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log() -> &'static Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .init();
        log
    })
}

/// A unique value: `cnry` and 24 random hex digits (never escaped in JSON, so the hex is in
/// every plain or escaped spelling), then `suffix`.
fn canary(suffix: &str) -> String {
    format!(
        "cnry{}{suffix}",
        &uuid::Uuid::new_v4().simple().to_string()[..24]
    )
}

/// The forms of `value` to look for. Plain and JSON-escaped forms all contain the hex core;
/// the base64 forms are those of the whole value (padded and not) and, for the core, the
/// stable middle of its encoding at each of the three byte alignments, so a canary inside a
/// larger encoded value is found too.
fn forms(value: &str) -> Vec<String> {
    let core = &value[..28];
    let mut out = vec![
        value.to_owned(),
        core.to_owned(),
        serde_json::to_string(value)
            .unwrap()
            .trim_matches('"')
            .to_owned(),
        STANDARD.encode(value),
        STANDARD_NO_PAD.encode(value),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value),
    ];
    for shift in 0..3 {
        let mut bytes = vec![b'x'; shift];
        bytes.extend_from_slice(core.as_bytes());
        let encoded = STANDARD_NO_PAD.encode(&bytes);
        // The characters that depend only on the core: skip the ones mixed with the prefix,
        // and the last (partial) group.
        let start = (shift * 8).div_ceil(6);
        let end = (bytes.len() / 3) * 4;
        out.push(encoded[start..end].to_owned());
    }
    out
}

/// What was seen, to scan at the end: a name and the bytes.
#[derive(Default)]
struct Seen(Vec<(String, Vec<u8>)>);

impl Seen {
    fn add(&mut self, name: impl Into<String>, bytes: impl AsRef<[u8]>) {
        self.0.push((name.into(), bytes.as_ref().to_vec()));
    }

    fn output(&mut self, name: &str, output: &Output) -> String {
        let mut all = output.stdout.clone();
        all.extend_from_slice(&output.stderr);
        self.add(name, &all);
        String::from_utf8_lossy(&all).into_owned()
    }
}

/// Asserts no form of any canary is in what alice saw, in any file under custody's data
/// directory (zstd recordings decompressed) or in custody's log lines.
fn assert_no_canary(seen: &Seen, data_dir: &Path, canaries: &[String]) {
    let needles: Vec<(String, String)> = canaries
        .iter()
        .flat_map(|c| forms(c).into_iter().map(move |f| (c.clone(), f)))
        .collect();
    let check = |what: &str, bytes: &[u8]| {
        for (canary, form) in &needles {
            assert!(
                !contains(bytes, form.as_bytes()),
                "{what} holds canary {canary} as {form:?}:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    };
    for (name, bytes) in &seen.0 {
        check(&format!("what alice saw from {name}"), bytes);
    }
    let mut scanned = 0;
    for (path, bytes) in files(data_dir) {
        scanned += 1;
        check(&path.display().to_string(), &bytes);
    }
    assert!(scanned >= 2, "the audit file and the index at least");
    let lines = log().0.lock().unwrap().clone();
    assert!(!lines.is_empty(), "the gateway logged at debug level");
    check("custody's log", &lines);
}

/// Asserts no form of any canary is in `bytes` (one answer, checked as it arrives).
fn assert_no_canary_in(what: &str, bytes: &[u8], canaries: &[String]) {
    for canary in canaries {
        for form in forms(canary) {
            assert!(
                !contains(bytes, form.as_bytes()),
                "{what} holds canary {canary} as {form:?}:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, zstd recordings decompressed.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(mut bytes) = std::fs::read(&path) else {
                continue; // the control socket
            };
            if path.extension().is_some_and(|e| e == "zst") {
                let mut plain = Vec::new();
                zstd::stream::read::Decoder::new(bytes.as_slice())
                    .unwrap()
                    .read_to_end(&mut plain)
                    .unwrap();
                bytes = plain;
            }
            out.push((path, bytes));
        }
    }
    out
}

/// The real cluster, alice's RBAC, the gateway in front of it with the masking policy, and an
/// admin kubectl on the cluster directly.
struct Fixture {
    env: Env,
    admin: Kubectl,
    cluster: RealCluster,
    _guard: std::sync::MutexGuard<'static, ()>,
}

fn start() -> Fixture {
    let guard = ONE_CLUSTER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    log();
    let started = Instant::now();
    let cluster = RealCluster::start()
        .unwrap_or_else(|e| panic!("the real-cluster tier could not start a kube-apiserver: {e}"));
    eprintln!(
        "real cluster {} ready in {:.1} s",
        cluster.version(),
        started.elapsed().as_secs_f64()
    );
    cluster
        .create(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            &json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "secrets-all"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]}]
            }),
        )
        .unwrap();
    cluster
        .create(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            &json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "alice-secrets"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secrets-all"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]
            }),
        )
        .unwrap();
    wait_alice_may(&cluster, "deletecollection");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let upstream = rt
        .block_on(Upstream::from_kubeconfig(
            cluster.custody_kubeconfig(),
            None,
        ))
        .unwrap();
    let env = Env::start(Options {
        upstream: Some(upstream),
        recording: true,
        policy: Some(toml::from_str::<PolicyConfig>(POLICY).unwrap()),
        ..Options::default()
    });
    let home = env.dir().join("home-admin");
    std::fs::create_dir_all(&home).unwrap();
    let admin = Kubectl::new(
        kubectl_binary("1.32").unwrap(),
        cluster.admin_kubeconfig().to_owned(),
        home,
    );
    Fixture {
        env,
        admin,
        cluster,
        _guard: guard,
    }
}

/// Waits until the authorizer lets alice `verb` secrets in `default` (RBAC reads through an
/// informer cache).
fn wait_alice_may(cluster: &RealCluster, verb: &str) {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": "alice", "groups": ["dev"],
            "resourceAttributes": {"namespace": "default", "verb": verb, "resource": "secrets"}}
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = cluster
            .admin_request(
                "POST",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                Some(&review),
            )
            .unwrap();
        if r.json().unwrap()["status"]["allowed"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "alice never got {verb}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs kubectl with `stdin`, to completion.
fn run(k: &Kubectl, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = k
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn admin_ok(f: &Fixture, args: &[&str], stdin: Option<&str>) {
    let out = run(&f.admin, args, stdin);
    assert!(
        out.status.success(),
        "admin kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A raw answer: status, headers and the bytes that arrived before it ended or `wait` ran
/// out, and whether it ran out.
struct Raw {
    status: u16,
    text: String,
    bytes: Vec<u8>,
    cut: bool,
    elapsed: Duration,
}

/// One HTTP/1.1 request to custody as `who`, reading the answer for at most `wait`.
fn raw(
    env: &Env,
    who: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    wait: Duration,
) -> Raw {
    let started = Instant::now();
    env.rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut env.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(env.gateway_addr)
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .header("host", "127.0.0.1")
            .header("authorization", format!("Bearer {who}-token"))
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        let deadline = tokio::time::Instant::now() + wait;
        let Ok(resp) = tokio::time::timeout_at(deadline, sender.send_request(req)).await else {
            return Raw {
                status: 0,
                text: String::new(),
                bytes: Vec::new(),
                cut: true,
                elapsed: started.elapsed(),
            };
        };
        let resp = resp.unwrap();
        let status = resp.status().as_u16();
        let mut head = format!("HTTP {status}\n");
        for (k, v) in resp.headers() {
            let _ = writeln!(head, "{k}: {}", String::from_utf8_lossy(v.as_bytes()));
        }
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        let mut cut = false;
        loop {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    cut = true;
                    break;
                }
                Ok(None | Some(Err(_))) => break,
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
            }
        }
        let mut all = head.into_bytes();
        all.extend_from_slice(&bytes);
        Raw {
            status,
            text: String::from_utf8_lossy(&all).into_owned(),
            bytes: all,
            cut,
            elapsed: started.elapsed(),
        }
    })
}

fn secret_yaml(name: &str, body: &str) -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\n{body}")
}

/// The seeded canaries, by where they are stored.
struct Canaries {
    db_password: String,
    db_username: String,
    db_config: String,
    applied_token: String,
    ssa_key: String,
    tls_key: String,
    frozen: String,
}

impl Canaries {
    fn all(&self) -> Vec<String> {
        vec![
            self.db_password.clone(),
            self.db_username.clone(),
            self.db_config.clone(),
            self.applied_token.clone(),
            self.ssa_key.clone(),
            self.tls_key.clone(),
            self.frozen.clone(),
        ]
    }
}

/// Seeds the Secrets, as the admin on the cluster directly: `data`, `stringData`, a canary
/// inside a larger value, client-side and server-side apply, a TLS Secret, an immutable one.
fn seed(f: &Fixture) -> Canaries {
    let c = Canaries {
        db_password: canary(""),
        db_username: canary("-user"),
        db_config: canary("-in-a-file"),
        // Characters Go's JSON encoder escapes (`\u003c`, `\u0026`, `\u003e`), and a quote.
        applied_token: canary("<&>\"applied"),
        ssa_key: canary("-ssa"),
        tls_key: canary("-tls"),
        frozen: canary("-immutable"),
    };
    f.cluster
        .create(
            "/api/v1/namespaces/default/secrets",
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "db", "labels": {"app": "db"}},
                "type": "Opaque",
                "data": {"password": STANDARD.encode(&c.db_password)},
                "stringData": {
                    "username": c.db_username,
                    "config.ini": format!("[db]\nhost=db\npassword={}\nport=5432\n", c.db_config),
                }
            }),
        )
        .unwrap();
    // Client-side apply: the last-applied annotation holds the value.
    admin_ok(
        f,
        &["apply", "-f", "-"],
        Some(&secret_yaml(
            "applied",
            &format!(
                "type: Opaque\nstringData:\n  token: {}\n",
                serde_json::to_string(&c.applied_token).unwrap()
            ),
        )),
    );
    admin_ok(
        f,
        &[
            "apply",
            "--server-side",
            "--field-manager=seeder",
            "-f",
            "-",
        ],
        Some(&secret_yaml(
            "ssa",
            &format!("type: Opaque\nstringData:\n  key: {}\n", c.ssa_key),
        )),
    );
    f.cluster
        .create(
            "/api/v1/namespaces/default/secrets",
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "tls"},
                "type": "kubernetes.io/tls",
                "stringData": {"tls.crt": "not a certificate", "tls.key": c.tls_key},
            }),
        )
        .unwrap();
    f.cluster
        .create(
            "/api/v1/namespaces/default/secrets",
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "frozen"},
                "immutable": true,
                "stringData": {"value": c.frozen},
            }),
        )
        .unwrap();
    c
}

fn masked_b64() -> String {
    STANDARD.encode(custody::masking::PLACEHOLDER)
}

/// The JSON Patch copy from the issue, and the same with every other way a JSON Patch reads a
/// stored value: refused before it reaches the API server, the Secret unchanged.
#[test]
fn json_patch_copy_does_not_reveal_a_masked_secret() {
    let f = start();
    let c = seed(&f);
    let k = f.env.kubectl("1.32");
    let mut seen = Seen::default();
    let copy = r#"[{"op":"add","path":"/metadata/annotations","value":{}},{"op":"copy","from":"/data/password","path":"/metadata/annotations/leak"}]"#;
    for dry_run in [true, false] {
        let mut args = vec![
            "--context",
            "alice",
            "patch",
            "secret",
            "db",
            "--type=json",
            "-p",
            copy,
        ];
        if dry_run {
            args.push("--dry-run=server");
        }
        let out = run(&k, &args, None);
        let text = seen.output("kubectl patch --type=json copy", &out);
        assert_no_canary_in("kubectl patch --type=json copy", text.as_bytes(), &c.all());
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains("Error from server (Forbidden)")
                && text.contains("JSON Patch operation copy"),
            "{text}"
        );
    }
    // Every way a JSON Patch reads a stored value: into a label, the type, the name (a
    // validation error would quote it), move, and test as an oracle.
    let leaks = [
        r#"[{"op":"copy","from":"/data/password","path":"/metadata/labels/leak"}]"#,
        r#"[{"op":"copy","from":"/data/password","path":"/type"}]"#,
        r#"[{"op":"copy","from":"/data/password","path":"/metadata/name"}]"#,
        r#"[{"op":"move","from":"/data/password","path":"/metadata/annotations/leak"}]"#,
        r#"[{"op":"copy","from":"/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration","path":"/metadata/labels/x"}]"#,
    ];
    for patch in leaks {
        let out = run(
            &k,
            &[
                "--context",
                "alice",
                "patch",
                "secret",
                "db",
                "--type=json",
                "--dry-run=server",
                "-p",
                patch,
            ],
            None,
        );
        let text = seen.output(patch, &out);
        assert_no_canary_in(patch, text.as_bytes(), &c.all());
        assert!(!out.status.success(), "{patch}: {text}");
        assert!(text.contains("(Forbidden)"), "{patch}: {text}");
    }
    let guess = format!(
        r#"[{{"op":"test","path":"/data/password","value":"{}"}}]"#,
        STANDARD.encode(&c.db_password)
    );
    let out = run(
        &k,
        &[
            "--context",
            "alice",
            "patch",
            "secret",
            "db",
            "--type=json",
            "--dry-run=server",
            "-p",
            &guess,
        ],
        None,
    );
    // (alice's own guess is in her command, not in what came back.)
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        text.contains("JSON Patch operation test"),
        "the oracle is refused whether the guess is right or wrong: {text}"
    );
    assert!(!out.status.success());
    // Raw: another spelling of the media type, and a repeated op.
    for (ct, body) in [
        (
            "application/json-patch+json; charset=utf-8",
            copy.to_owned(),
        ),
        (
            "application/json-patch+json",
            r#"[{"op":"add","op":"copy","from":"/data/password","path":"/metadata/labels/x"}]"#
                .to_owned(),
        ),
    ] {
        let r = raw(
            &f.env,
            "alice",
            "PATCH",
            &format!("{SECRETS}/db?dryRun=All"),
            &[("content-type", ct)],
            body.as_bytes(),
            Duration::from_secs(10),
        );
        seen.add(format!("raw PATCH {ct}"), &r.bytes);
        assert!(matches!(r.status, 400 | 403), "{}", r.text);
    }
    // The Secret is as it was: nothing reached the API server.
    let stored = run(&f.admin, &["get", "secret", "db", "-o", "json"], None);
    let stored: Value = serde_json::from_slice(&stored.stdout).unwrap();
    assert!(stored["metadata"].get("annotations").is_none(), "{stored}");
    assert_eq!(
        stored["data"]["password"],
        STANDARD.encode(&c.db_password).as_str()
    );
    assert_no_canary(&seen, &f.env.data_dir, &c.all());
}

/// kube-apiserver answers a JSON Patch whose result does not decode as a Secret (an unknown
/// field under kubectl's `fieldValidation=Strict`, a value of the wrong type) with 422 and the
/// whole patched object, every value included, in its message. Such patches use only `add`, so
/// they pass the write check; the failure's message is what custody must withhold.
#[test]
fn a_failure_that_repeats_the_secret_does_not_reveal_it() {
    let f = start();
    let c = seed(&f);
    let k = f.env.kubectl("1.32");
    let mut seen = Seen::default();
    for patch in [
        r#"[{"op":"add","path":"/bogus","value":1}]"#,
        r#"[{"op":"add","path":"/data/n","value":5}]"#,
        r#"[{"op":"add","path":"/metadata/labels","value":{"a":{"b":1}}}]"#,
    ] {
        // kubectl patch asks for no strict field validation: the unknown field only warns.
        let kubectl_fails = !patch.contains("/bogus");
        for dry_run in [true, false].into_iter().filter(|_| kubectl_fails) {
            let mut args = vec![
                "--context",
                "alice",
                "patch",
                "secret",
                "db",
                "--type=json",
                "-p",
                patch,
            ];
            if dry_run {
                args.push("--dry-run=server");
            }
            let out = run(&k, &args, None);
            let text = seen.output(patch, &out);
            assert_no_canary_in(patch, text.as_bytes(), &c.all());
            assert!(!out.status.success(), "{patch}: {text}");
            assert!(text.contains("withheld"), "{patch}: {text}");
        }
        // The same over raw HTTPS, strict field validation as kubectl asks for it.
        let r = raw(
            &f.env,
            "alice",
            "PATCH",
            &format!("{SECRETS}/db?dryRun=All&fieldValidation=Strict"),
            &[("content-type", "application/json-patch+json")],
            patch.as_bytes(),
            Duration::from_secs(10),
        );
        seen.add(format!("raw PATCH {patch}"), &r.bytes);
        assert_no_canary_in(patch, &r.bytes, &c.all());
        assert!(r.status == 422 || r.status == 400, "{patch}: {}", r.text);
        // (The answer's head, then its body.)
        let body = &r.text[r.text.find('{').unwrap_or(0)..];
        let status: Value = serde_json::from_str(body).unwrap();
        assert_eq!(status["kind"], "Status", "{}", r.text);
        assert!(
            status["message"].as_str().unwrap().contains("withheld"),
            "{}",
            r.text
        );
    }
    assert_no_canary(&seen, &f.env.data_dir, &c.all());
}

/// `?watch=f`, `?watch=` and a bare `?watch` are watches to the API server
/// (`Convert_Slice_string_To_bool` in `k8s.io/apimachinery/pkg/runtime/conversion.go`), and so
/// to custody's classifier: the answer is a watch of masked events. (Should the two readings
/// ever part again, the buffered masker refuses the first watch event it meets with a 502
/// rather than pass it: `src/masking/tests.rs`
/// `refuses_a_watch_at_its_first_event_without_waiting_for_its_end`.)
#[test]
fn watch_f_does_not_reveal_a_masked_secret() {
    let f = start();
    let c = seed(&f);
    let mut seen = Seen::default();
    for query in [
        // A watch that ends after one event: what leaked the value before custody refused
        // unknown shapes.
        "watch=f&fieldSelector=metadata.name%3Ddb&timeoutSeconds=1",
        "watch=f&fieldSelector=metadata.name%3Ddb",
        "watch=&fieldSelector=metadata.name%3Ddb",
        "watch&fieldSelector=metadata.name%3Ddb",
        "watch=F",
        "watch=no",
        "watch=0x1",
    ] {
        let r = raw(
            &f.env,
            "alice",
            "GET",
            &format!("{SECRETS}?{query}"),
            &[("accept", "application/json")],
            b"",
            Duration::from_secs(8),
        );
        seen.add(format!("GET ?{query}"), &r.bytes);
        assert_no_canary_in(&format!("GET ?{query}"), &r.bytes, &c.all());
        assert!(
            r.elapsed < Duration::from_secs(9),
            "?{query} answered in {:?}",
            r.elapsed
        );
        // custody reads each of these as the watch the API server serves: masked events.
        assert_eq!(r.status, 200, "?{query}: {}", r.text);
        assert!(r.text.contains(&masked_b64()), "?{query}: {}", r.text);
        assert!(
            r.text.contains("\"type\":\"ADDED\""),
            "?{query}: {}",
            r.text
        );
    }
    // The same through kubectl's raw GET.
    let k = f.env.kubectl("1.32");
    let out = run(
        &k,
        &[
            "--context",
            "alice",
            "get",
            "--raw",
            &format!("{SECRETS}?watch=f&fieldSelector=metadata.name%3Ddb&timeoutSeconds=3"),
        ],
        None,
    );
    seen.output("kubectl get --raw ?watch=f", &out);
    assert_no_canary(&seen, &f.env.data_dir, &c.all());
}

/// A watch as kubectl runs it, killed after `until` appears (or `max`), while `during` runs.
fn watch_with(
    k: &Kubectl,
    args: &[&str],
    until: &str,
    during: impl FnOnce(),
    max: Duration,
) -> Vec<u8> {
    let mut child = k
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Collected::spawn(child.stdout.take().unwrap());
    let err = Collected::spawn(child.stderr.take().unwrap());
    // The initial state first, so the change arrives as an event.
    let _ = out.wait_for("db", Duration::from_secs(15));
    during();
    let _ = out.wait_for(until, max);
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let mut all = out.text().into_bytes();
    all.extend(err.text().into_bytes());
    all
}

/// The corpus: at least 40 distinct operations as alice, every one scanned.
#[test]
fn no_canary_reaches_a_masked_person_through_any_operation() {
    let f = start();
    let c = seed(&f);
    let k = f.env.kubectl("1.32");
    let k28 = f.env.kubectl("1.28");
    let mut seen = Seen::default();
    let mut ops = 0;
    // What should have been refused and was not: reported after the scan, so a leak shows
    // as the canary it revealed.
    let mut problems: Vec<String> = Vec::new();
    let masked = masked_b64();

    // kubectl reads, 1.32 and 1.28.
    let reads: [&[&str]; 20] = [
        &["get", "secret", "db", "-o", "yaml"],
        &["get", "secret", "db", "-o", "json"],
        &["get", "secret", "db", "-o", "jsonpath={.data.password}"],
        &["get", "secret", "db", "-o", "jsonpath={.data}"],
        &[
            "get",
            "secret",
            "db",
            "-o",
            "go-template={{.data.password}}",
        ],
        &[
            "get",
            "secret",
            "db",
            "-o",
            "custom-columns=PW:.data.password,CFG:.data.config\\.ini",
        ],
        &["get", "secrets"],
        &["get", "secrets", "-o", "wide"],
        &["get", "secrets", "-o", "json"],
        &["get", "secrets", "-o", "yaml", "--show-managed-fields"],
        &[
            "get",
            "secrets",
            "--field-selector",
            "metadata.name=db",
            "-o",
            "json",
        ],
        &["get", "secrets", "-l", "app=db", "-o", "yaml"],
        &["get", "secrets", "--chunk-size=1", "-o", "json"],
        &[
            "get",
            "secret",
            "applied",
            "-o",
            "jsonpath={.metadata.annotations}",
        ],
        &[
            "get",
            "secret",
            "ssa",
            "-o",
            "yaml",
            "--show-managed-fields",
        ],
        &["get", "secret", "tls", "-o", "json"],
        &["get", "secret", "db", "-o", "name"],
        &["describe", "secret", "db"],
        &["describe", "secret", "applied"],
        &["get", "secrets", "-A"],
    ];
    for args in reads {
        for (minor, kubectl) in [("1.32", &k), ("1.28", &k28)] {
            let mut all = vec!["--context", "alice"];
            all.extend_from_slice(args);
            let out = run(kubectl, &all, None);
            let text = seen.output(&format!("kubectl {minor} {args:?}"), &out);
            ops += 1;
            if args[..2] == ["get", "secret"] && args.contains(&"yaml") || args.contains(&"json") {
                assert!(out.status.success(), "{args:?}: {text}");
                assert!(text.contains(&masked), "{args:?}: {text}");
            }
        }
    }
    let jsonpath = run(
        &k,
        &[
            "--context",
            "alice",
            "get",
            "secret",
            "db",
            "-o",
            "jsonpath={.data.password}",
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&jsonpath.stdout), masked);

    // Watches through kubectl, while the admin stores new values.
    let modified = canary("-modified");
    let text = watch_with(
        &k,
        &["--context", "alice", "get", "secrets", "-w", "-o", "json"],
        "round-1",
        || {
            admin_ok(
                &f,
                &[
                    "patch", "secret", "db", "--type=merge", "-p",
                    &json!({"metadata": {"labels": {"round": "round-1"}}, "data": {"password": STANDARD.encode(&modified)}}).to_string(),
                ],
                None,
            );
        },
        Duration::from_secs(15),
    );
    seen.add("kubectl get -w -o json", &text);
    assert!(String::from_utf8_lossy(&text).contains("round-1"));
    ops += 1;
    let modified2 = canary("-modified2");
    let text = watch_with(
        &k28,
        &[
            "--context",
            "alice",
            "get",
            "secret",
            "db",
            "-w",
            "--output-watch-events",
            "-o",
            "yaml",
        ],
        "round-2",
        || {
            admin_ok(
                &f,
                &[
                    "patch", "secret", "db", "--type=merge", "-p",
                    &json!({"metadata": {"labels": {"round": "round-2"}}, "stringData": {"extra": modified2}}).to_string(),
                ],
                None,
            );
        },
        Duration::from_secs(15),
    );
    seen.add("kubectl 1.28 get -w --output-watch-events -o yaml", &text);
    assert!(String::from_utf8_lossy(&text).contains("round-2"));
    ops += 1;
    let text = watch_with(
        &k,
        &["--context", "alice", "get", "secrets", "-w"],
        "db",
        || {},
        Duration::from_secs(3),
    );
    seen.add("kubectl get -w (table)", &text);
    ops += 1;

    // Raw watches in every spelling, and lists that look like watches.
    let raw_gets: [(&str, &str); 22] = [
        ("?watch=1&timeoutSeconds=2", "application/json"),
        ("?watch=true&timeoutSeconds=2", "application/json"),
        (
            "?watch=f&fieldSelector=metadata.name%3Ddb",
            "application/json",
        ),
        (
            "?watch=&fieldSelector=metadata.name%3Ddb",
            "application/json",
        ),
        (
            "?watch&fieldSelector=metadata.name%3Ddb",
            "application/json",
        ),
        ("?watch=0", "application/json"),
        ("?watch=false&limit=1", "application/json"),
        (
            "?watch=1&allowWatchBookmarks=true&timeoutSeconds=2",
            "application/json",
        ),
        (
            "?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=2",
            "application/json",
        ),
        (
            "?watch=1&timeoutSeconds=2",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        ),
        (
            "?watch=1&timeoutSeconds=2&includeObject=Object",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        ),
        (
            "?watch=1&timeoutSeconds=2",
            "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
        ),
        ("", "application/json;as=Table;v=v1;g=meta.k8s.io"),
        (
            "?includeObject=Object",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        ),
        (
            "/db?includeObject=Object",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        ),
        (
            "/db",
            "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
        ),
        (
            "",
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
        ),
        ("/db", "application/vnd.kubernetes.protobuf"),
        ("/db", "application/yaml"),
        ("/db", "application/cbor"),
        ("?limit=1", "application/json"),
        ("/applied", "*/*"),
    ];
    for (suffix, accept) in raw_gets {
        let r = raw(
            &f.env,
            "alice",
            "GET",
            &format!("{SECRETS}{suffix}"),
            &[("accept", accept), ("accept-encoding", "gzip")],
            b"",
            Duration::from_secs(6),
        );
        seen.add(format!("raw GET {suffix} ({accept})"), &r.bytes);
        // Every read answers, masked (the watch spellings as watches).
        if r.status != 200 || !r.text.contains(custody::masking::MASKED_ANNOTATION) {
            problems.push(format!(
                "GET {suffix} ({accept}) was not answered masked: {}",
                r.text
            ));
        }
        eprintln!(
            "raw GET {suffix} ({accept}): {} in {:?}{}: {}",
            r.status,
            r.elapsed,
            if r.cut { " (cut)" } else { "" },
            r.text
                .chars()
                .filter(|c| *c != '\n')
                .skip_while(|c| *c != '{')
                .take(160)
                .collect::<String>()
        );
        ops += 1;
    }
    for path in [
        "/clusters/sim/api/v1/watch/namespaces/default/secrets?timeoutSeconds=2",
        "/clusters/sim/api/v1/watch/namespaces/default/secrets/db?timeoutSeconds=2",
        "/clusters/sim/api/v1/namespaces/default/secrets?watch=1&fieldSelector=metadata.name%3Ddb&timeoutSeconds=2",
    ] {
        let r = raw(
            &f.env,
            "alice",
            "GET",
            path,
            &[],
            b"",
            Duration::from_secs(6),
        );
        seen.add(format!("raw GET {path}"), &r.bytes);
        eprintln!("raw GET {path}: {} in {:?}", r.status, r.elapsed);
        ops += 1;
    }

    // Writes: patches of every type, with and without --dry-run=server. alice's own values
    // are hers to see; the stored ones are not.
    let patches: [(&str, &str, &str); 12] = [
        (
            "merge",
            r#"{"metadata":{"annotations":{"note":"alice"}}}"#,
            "db",
        ),
        ("merge", r#"{"stringData":{"alice":"alices-own"}}"#, "db"),
        (
            "strategic",
            r#"{"metadata":{"labels":{"by":"alice"}}}"#,
            "db",
        ),
        (
            "strategic",
            r#"{"metadata":{"labels":{"by":"alice"}}}"#,
            "applied",
        ),
        (
            "json",
            r#"[{"op":"add","path":"/metadata/labels/j","value":"x"}]"#,
            "db",
        ),
        (
            "json",
            r#"[{"op":"replace","path":"/metadata/labels/j","value":"y"}]"#,
            "db",
        ),
        (
            "json",
            r#"[{"op":"remove","path":"/metadata/labels/j"}]"#,
            "db",
        ),
        (
            "json",
            r#"[{"op":"copy","from":"/data/password","path":"/metadata/annotations/leak"}]"#,
            "db",
        ),
        (
            "json",
            r#"[{"op":"move","from":"/data/username","path":"/metadata/labels/leak"}]"#,
            "db",
        ),
        (
            "json",
            r#"[{"op":"test","path":"/data/password","value":"eA=="}]"#,
            "db",
        ),
        // Errors that quote values: an immutable type, an immutable Secret, a bad label.
        ("merge", r#"{"type":"kubernetes.io/tls"}"#, "db"),
        ("merge", r#"{"stringData":{"value":"changed"}}"#, "frozen"),
    ];
    for (kind, patch, name) in patches {
        for dry_run in [true, false] {
            let mut args = vec![
                "--context",
                "alice",
                "patch",
                "secret",
                name,
                "--type",
                kind,
                "-p",
                patch,
                "-o",
                "yaml",
            ];
            if dry_run {
                args.push("--dry-run=server");
            }
            let out = run(&k, &args, None);
            let text = seen.output(&format!("kubectl patch {args:?}"), &out);
            if (patch.contains("\"copy\"")
                || patch.contains("\"move\"")
                || patch.contains("\"test\""))
                && !text.contains("(Forbidden)")
            {
                problems.push(format!("not refused: {args:?}: {text}"));
            }
            ops += 1;
        }
    }
    let bad_label = run(
        &k,
        &[
            "--context",
            "alice",
            "label",
            "secret",
            "db",
            "bad=not a valid label!",
            "--dry-run=server",
        ],
        None,
    );
    seen.output("kubectl label (invalid)", &bad_label);
    let annotate = run(
        &k,
        &[
            "--context",
            "alice",
            "annotate",
            "secret",
            "tls",
            "by=alice",
            "-o",
            "yaml",
        ],
        None,
    );
    seen.output("kubectl annotate", &annotate);
    ops += 2;

    // apply: client-side and server-side, create and change, dry runs, a conflict.
    let own = secret_yaml(
        "alice-app",
        "type: Opaque\nstringData:\n  token: alices-token\n",
    );
    for args in [
        &["apply", "-f", "-", "-o", "yaml"][..],
        &["apply", "-f", "-", "--dry-run=server", "-o", "yaml"],
        &["apply", "--server-side", "-f", "-", "-o", "yaml"],
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            "-",
            "-o",
            "yaml",
        ],
    ] {
        let mut all = vec!["--context", "alice"];
        all.extend_from_slice(args);
        let out = run(&k, &all, Some(&own));
        seen.output(&format!("kubectl {args:?}"), &out);
        ops += 1;
    }
    // Server-side apply over the admin's field manager: the conflict names fields only.
    let ssa = secret_yaml("ssa", "type: Opaque\nstringData:\n  key: alices-key\n");
    for extra in [&[][..], &["--force-conflicts", "--dry-run=server"]] {
        let mut all = vec![
            "--context",
            "alice",
            "apply",
            "--server-side",
            "-f",
            "-",
            "-o",
            "yaml",
        ];
        all.extend_from_slice(extra);
        let out = run(&k, &all, Some(&ssa));
        seen.output(&format!("kubectl apply --server-side ssa {extra:?}"), &out);
        ops += 1;
    }
    // Client-side apply over the admin's applied Secret: the patch kubectl computes from the
    // masked last-applied annotation.
    let over = secret_yaml(
        "applied",
        "type: Opaque\nstringData:\n  token: alices-token\n",
    );
    let out = run(
        &k,
        &[
            "--context",
            "alice",
            "apply",
            "-f",
            "-",
            "--dry-run=server",
            "-o",
            "yaml",
        ],
        Some(&over),
    );
    seen.output("kubectl apply over applied", &out);
    ops += 1;

    // create, replace, delete: dry runs and real ones.
    let creates: [&[&str]; 4] = [
        &[
            "create",
            "secret",
            "generic",
            "made",
            "--from-literal=k=alices-literal",
            "--dry-run=server",
            "-o",
            "yaml",
        ],
        &[
            "create",
            "secret",
            "generic",
            "made",
            "--from-literal=k=alices-literal",
            "-o",
            "json",
        ],
        &["delete", "secret", "made", "--dry-run=server"],
        &["delete", "secret", "made"],
    ];
    for args in creates {
        let mut all = vec!["--context", "alice"];
        all.extend_from_slice(args);
        let out = run(&k, &all, None);
        seen.output(&format!("kubectl {args:?}"), &out);
        ops += 1;
    }
    // Edit-like: get -o yaml, change a label, replace (the masked values are refused).
    let yaml = String::from_utf8(
        run(
            &k,
            &["--context", "alice", "get", "secret", "db", "-o", "yaml"],
            None,
        )
        .stdout,
    )
    .unwrap();
    let edited = yaml.replace("app: db", "app: db-edited");
    for dry_run in [true, false] {
        let mut args = vec!["--context", "alice", "replace", "-f", "-", "-o", "yaml"];
        if dry_run {
            args.push("--dry-run=server");
        }
        let out = run(&k, &args, Some(&edited));
        let text = seen.output("kubectl replace (edited masked yaml)", &out);
        if !text.contains("placeholder") {
            problems.push(format!("replace of masked values not refused: {text}"));
        }
        ops += 1;
    }
    // kubectl edit, with an editor that changes a label.
    let editor = f.env.dir().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/app: db/app: db-by-edit/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &editor,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let out = k
        .command(["--context", "alice", "edit", "secret", "db", "-o", "yaml"])
        .env("KUBE_EDITOR", &editor)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    seen.output("kubectl edit", &out);
    ops += 1;

    // Raw writes and deletes: dry-run delete answers the object; deletecollection answers the
    // list of everything it would delete.
    let raw_writes: [(&str, String, &str, &str); 7] = [
        ("DELETE", format!("{SECRETS}/db?dryRun=All"), "", ""),
        (
            "DELETE",
            format!("{SECRETS}/applied?dryRun=All&propagationPolicy=Foreground"),
            "",
            "",
        ),
        ("DELETE", format!("{SECRETS}?dryRun=All"), "", ""),
        (
            "DELETE",
            format!("{SECRETS}?dryRun=All&labelSelector=app%3Ddb"),
            "",
            "",
        ),
        (
            "PATCH",
            format!("{SECRETS}/db?dryRun=All"),
            "application/merge-patch+json",
            r#"{"metadata":{"name":"other"}}"#,
        ),
        (
            "PATCH",
            format!("{SECRETS}/db?dryRun=All"),
            "application/json-patch+json",
            "not json",
        ),
        (
            "PATCH",
            format!("{SECRETS}/db?dryRun=All&fieldManager=alice"),
            "application/apply-patch+yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  x: y\n",
        ),
    ];
    for (method, path, ct, body) in raw_writes {
        let mut headers = vec![("accept", "application/json")];
        if !ct.is_empty() {
            headers.push(("content-type", ct));
        }
        let r = raw(
            &f.env,
            "alice",
            method,
            &path,
            &headers,
            body.as_bytes(),
            Duration::from_secs(10),
        );
        seen.add(format!("raw {method} {path}"), &r.bytes);
        eprintln!(
            "raw {method} {path}: {}: {}",
            r.status,
            r.text
                .chars()
                .filter(|c| *c != '\n')
                .skip_while(|c| *c != '{')
                .take(160)
                .collect::<String>()
        );
        assert!(r.status != 0, "{method} {path} answered");
        ops += 1;
    }

    assert!(ops >= 40, "{ops} operations");
    eprintln!(
        "{ops} operations as alice, {} transcripts scanned",
        seen.0.len()
    );
    // Sanity: the scan finds a canary where it is (what the admin sees).
    let admin = run(&f.admin, &["get", "secret", "applied", "-o", "json"], None);
    let applied = &c.applied_token;
    assert!(
        forms(applied)
            .iter()
            .any(|form| contains(&admin.stdout, form.as_bytes())),
        "the scan finds the canary in the admin's view"
    );
    let mut all = c.all();
    all.push(modified);
    all.push(modified2);
    assert_no_canary(&seen, &f.env.data_dir, &all);
    assert!(problems.is_empty(), "{problems:#?}");
}
