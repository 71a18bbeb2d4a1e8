//! `custody login` against a real `OpenID` Connect provider (npm `oidc-provider`, pinned in
//! `fixtures/oidc-provider/`): the gateway publishes its login document, `custody login` runs
//! the authorization code flow with PKCE (a small HTTP client here plays the browser: it
//! follows redirects with cookies until custody's loopback redirect), `custody kubeconfig`
//! writes the kubeconfig, and kubectl 1.32 works through the gateway with `custody credential`
//! as its exec plugin, refreshing an expired ID token without a new login. `custody login
//! --device` (RFC 8628) works too: the test reads the user code from custody's stderr and
//! approves it with the provider's own user code form; a denied device login fails clearly.
//! The audit trail and the recording name the provider's user; no token appears in custody's
//! logs, audit trail, index or recordings.
//!
//! A second provider, the Python package `oidc-provider-mock` (pinned in `fixtures/oidc-provider-mock/`),
//! issues the ID token's `aud` as an array: login and the gateway accept it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test"
)]

use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use custody_fixtures::harness::{Kubectl, kubectl_binary};
use custody_fixtures::kube_sim::{KubeSim, KubeSimConfig};
use custody_fixtures::pki::Pki;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};

/// The ID token lifetime the provider gives, in seconds: short, so the test sees a refresh.
const ID_TOKEN_TTL: u64 = 12;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// `npm ci` of the pinned provider into a cache outside the clone, keyed by the lock file's
/// hash, under a file lock (`flock`), installed beside and renamed into place.
fn provider_install() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/oidc-provider");
    let lock = std::fs::read(source.join("package-lock.json")).unwrap();
    let script = std::fs::read(source.join("provider.mjs")).unwrap();
    let mut hash = Sha256::new();
    hash.update(&lock);
    hash.update(&script);
    let key = &hex::encode(hash.finalize())[..16];
    let home = std::env::var_os("HOME").expect("HOME");
    let tools = PathBuf::from(home).join(".cache/custody/tools");
    std::fs::create_dir_all(&tools).unwrap();
    let target = tools.join(format!("oidc-provider-{key}"));
    if target.join("node_modules/oidc-provider").is_dir() {
        return target;
    }
    for tool in ["node", "npm", "flock"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success(),
            "{tool} is missing: the login test runs the npm oidc-provider (see .ci/run)"
        );
    }
    let staging = tools.join(format!("oidc-provider-{key}.staging"));
    let install = format!(
        "set -e; if [ ! -d '{t}/node_modules/oidc-provider' ]; then rm -rf '{s}'; mkdir -p '{s}'; \
         cp '{src}/package.json' '{src}/package-lock.json' '{src}/provider.mjs' '{s}/'; \
         cd '{s}' && npm ci --no-audit --no-fund --loglevel=error >&2; rm -rf '{t}'; mv '{s}' '{t}'; fi",
        t = target.display(),
        s = staging.display(),
        src = source.display()
    );
    let status = Command::new("flock")
        .arg(tools.join("oidc-provider.lock"))
        .args(["sh", "-c", &install])
        .status()
        .unwrap();
    assert!(status.success(), "npm ci of oidc-provider failed");
    target
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for a line starting with `prefix` on the child's stdout; returns it.
fn wait_line(child: &mut Child, prefix: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
        if line.starts_with(prefix) {
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return line;
        }
    }
}

/// The test's browser: follows redirects, keeping cookies, from the authorization URL until
/// custody's loopback redirect has been delivered.
async fn browse(start: &str, provider_ca: &str) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut provider_ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let mut cookies: Vec<(String, String)> = Vec::new();
    let mut url = start.to_owned();
    for _ in 0..20 {
        let cookie = cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut req = http::Request::get(&url);
        if !cookie.is_empty() {
            req = req.header(http::header::COOKIE, cookie);
        }
        let resp = client
            .request(req.body(Full::default()).unwrap())
            .await
            .unwrap();
        for value in resp.headers().get_all(http::header::SET_COOKIE) {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            if let Some((k, v)) = pair.split_once('=') {
                cookies.retain(|(name, _)| name != k);
                if !v.is_empty() {
                    cookies.push((k.to_owned(), v.to_owned()));
                }
            }
        }
        let status = resp.status();
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if url.starts_with("http://127.0.0.1:") {
            assert!(
                status.is_success(),
                "the loopback redirect answered {status}"
            );
            assert!(
                String::from_utf8_lossy(&body).contains("logged in"),
                "{}",
                String::from_utf8_lossy(&body)
            );
            return;
        }
        let Some(location) = location else {
            panic!(
                "{url} answered {status} without a redirect: {}",
                String::from_utf8_lossy(&body)
            );
        };
        url = if location.starts_with("http") {
            location
        } else {
            let origin: http::Uri = url.parse().unwrap();
            format!(
                "{}://{}{location}",
                origin.scheme_str().unwrap(),
                origin.authority().unwrap()
            )
        };
    }
    panic!("too many redirects");
}

/// Writes the gateway's certificates and configuration into `dir` (beside kube-sim's
/// `cluster/` and the provider's `provider-ca.crt`) and starts `custody serve` with `[login]`
/// for this provider; the gateway and its URL.
fn start_gateway(dir: &Path, provider_url: &str, scopes: &str) -> (Killed, String) {
    let path = |p: &str| dir.join(p);
    let gateway_pki = Pki::generate(&["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(path("gateway.crt"), &gateway_pki.server().cert).unwrap();
    std::fs::write(path("gateway.key"), &gateway_pki.server().key).unwrap();
    std::fs::write(path("gateway-ca.crt"), gateway_pki.ca_pem()).unwrap();
    let toml_path = |p: &str| toml::Value::String(path(p).display().to_string()).to_string();
    let config = format!(
        r#"data_dir = {data}
[server]
listen = "127.0.0.1:0"
tls_cert = {cert}
tls_key = {key}
[admin]
listen = "127.0.0.1:0"
[[clusters]]
name = "sim"
kubeconfig = {cluster}
[[oidc]]
issuer = "{provider_url}"
client_id = "custody"
ca_file = {provider_ca}
groups_prefix = ""
[login]
issuer = "{provider_url}"
client_id = "custody"
scopes = {scopes}
ca_file = {gateway_ca}
"#,
        data = toml_path("data"),
        cert = toml_path("gateway.crt"),
        key = toml_path("gateway.key"),
        cluster = toml_path("cluster/gateway.kubeconfig"),
        provider_ca = toml_path("provider-ca.crt"),
        gateway_ca = toml_path("gateway-ca.crt"),
    );
    std::fs::write(path("custody.toml"), config).unwrap();
    let gateway_log = std::fs::File::create(path("gateway.log")).unwrap();
    let mut gateway = Killed(
        Command::new(env!("CARGO_BIN_EXE_custody"))
            .args(["serve", "--config"])
            .arg(path("custody.toml"))
            .env("CUSTODY_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(gateway_log)
            .spawn()
            .unwrap(),
    );
    let ready = wait_line(&mut gateway.0, "ready https://");
    let server = ready
        .trim_start_matches("ready ")
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    (gateway, server)
}

struct Setup {
    dir: tempfile::TempDir,
    server: String,
    config_home: PathBuf,
    provider_ca: String,
    provider_url: String,
}

impl Setup {
    fn custody(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_custody"));
        cmd.args(args)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env("HOME", self.dir.path())
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_EXEC_INFO");
        cmd
    }

    fn stored(&self) -> serde_json::Value {
        let dir = self.config_home.join("custody/logins");
        let entry = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .unwrap();
        serde_json::from_slice(&std::fs::read(entry).unwrap()).unwrap()
    }

    fn kubectl(&self) -> Kubectl {
        let home = self.dir.path().join("kube-home");
        std::fs::create_dir_all(&home).unwrap();
        Kubectl::new(
            kubectl_binary("1.32").unwrap(),
            self.dir.path().join("kubeconfig"),
            home,
        )
        .env("XDG_CONFIG_HOME", self.config_home.to_str().unwrap())
    }
}

fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
#[allow(clippy::too_many_lines, reason = "one story, step by step")]
fn login_kubeconfig_kubectl_refresh_and_no_token_leaks() {
    let install = provider_install();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p);

    // The provider, on HTTPS with a throwaway CA.
    let provider_pki = Pki::generate(&["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(path("provider.crt"), &provider_pki.server().cert).unwrap();
    std::fs::write(path("provider.key"), &provider_pki.server().key).unwrap();
    std::fs::write(path("provider-ca.crt"), provider_pki.ca_pem()).unwrap();
    let port = free_port();
    let provider_url = format!("https://127.0.0.1:{port}");
    let mut provider = Killed(
        Command::new("node")
            .arg(install.join("provider.mjs"))
            .env("ISSUER", &provider_url)
            .env("PORT", port.to_string())
            .env("TLS_CERT", path("provider.crt"))
            .env("TLS_KEY", path("provider.key"))
            .env("ACCOUNT", "dana")
            .env("GROUPS", "dev")
            .env("ID_TOKEN_TTL", ID_TOKEN_TTL.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_line(&mut provider.0, "ready ");

    // kube-sim, and custody serve in front of it with [login].
    let sim = rt
        .block_on(KubeSim::start(KubeSimConfig::new(path("cluster"))))
        .unwrap();
    let (gateway, server) = start_gateway(
        dir.path(),
        &provider_url,
        r#"["openid", "profile", "email", "groups", "offline_access"]"#,
    );
    let setup = Setup {
        config_home: path("config"),
        server,
        provider_ca: provider_pki.ca_pem(),
        provider_url,
        dir,
    };

    // 1. The login document, unauthenticated.
    let status = setup
        .custody(&["status", "--server", &setup.server])
        .output()
        .unwrap();
    assert!(!status.status.success(), "status before login must fail");

    // 2. custody login: the URL goes to stderr; the test's browser completes it.
    let started = Instant::now();
    let mut login = setup
        .custody(&[
            "login",
            "--server",
            &setup.server,
            "--ca-file",
            setup.dir.path().join("gateway-ca.crt").to_str().unwrap(),
            "--no-browser",
            "--timeout",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = login.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines.next().expect("login printed no URL").unwrap();
        if let Some(url) = line.trim().strip_prefix("https://") {
            break format!("https://{url}");
        }
    };
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    rt.block_on(browse(&url, &setup.provider_ca));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let mut out = String::new();
    login
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let exit = login.wait().unwrap();
    assert!(exit.success(), "login failed: {rest:?}");
    assert!(out.contains("user:     dana"), "{out}");
    eprintln!("login took {:?}", started.elapsed());

    let stored = setup.stored();
    let first_id_token = stored["id_token"].as_str().unwrap().to_owned();
    let refresh_token = stored["refresh_token"].as_str().unwrap().to_owned();
    for text in [&out, &rest.join("\n")] {
        assert!(!text.contains(&first_id_token) && !text.contains(&refresh_token));
    }
    let status = ok(&setup
        .custody(&["status", "--server", &setup.server])
        .output()
        .unwrap());
    assert!(
        status.contains("dana") && status.contains("clusters: sim"),
        "{status}"
    );

    // 3. custody kubeconfig, then kubectl through custody with the exec plugin.
    ok(&setup
        .custody(&[
            "kubeconfig",
            "--server",
            &setup.server,
            "-o",
            setup.dir.path().join("kubeconfig").to_str().unwrap(),
        ])
        .output()
        .unwrap());
    let k = setup.kubectl();
    let whoami = ok(&k.run(["auth", "whoami"]).unwrap());
    assert!(
        whoami.contains("oidc:dana") && whoami.contains("dev"),
        "{whoami}"
    );
    let exec = ok(&k
        .run(["exec", "demo", "--", "echo", "custody-login-ok"])
        .unwrap());
    assert!(exec.contains("custody-login-ok"), "{exec}");

    // 4. After the ID token expires, kubectl still works: the plugin refreshes.
    let expires_at = setup.stored()["expires_at"].as_i64().unwrap();
    let now = chrono::Utc::now().timestamp();
    std::thread::sleep(Duration::from_secs(
        u64::try_from(expires_at - now + 1).unwrap_or(0),
    ));
    let whoami = ok(&k.run(["auth", "whoami"]).unwrap());
    assert!(whoami.contains("oidc:dana"), "{whoami}");
    let refreshed = setup.stored();
    let second_id_token = refreshed["id_token"].as_str().unwrap().to_owned();
    assert_ne!(
        second_id_token, first_id_token,
        "the token was not refreshed"
    );
    assert!(refreshed["expires_at"].as_i64().unwrap() > expires_at);

    // 5. A revoked refresh token: a clear message and a non-zero exit.
    let revoke = rt.block_on(async {
        post_unauthenticated(
            &format!("{}/test/revoke-all", setup.provider_url),
            &setup.provider_ca,
        )
        .await
    });
    assert!(revoke.contains("revoked"), "{revoke}");
    let mut forced = refreshed.clone();
    forced["expires_at"] = serde_json::json!(0);
    let store_file = std::fs::read_dir(setup.config_home.join("custody/logins"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    std::fs::write(&store_file, serde_json::to_vec(&forced).unwrap()).unwrap();
    let failed = setup
        .custody(&["credential", "--server", &setup.server])
        .env(
            "KUBERNETES_EXEC_INFO",
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#,
        )
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let message = String::from_utf8_lossy(&failed.stderr);
    assert!(
        message.contains(&format!("custody login --server {}", setup.server)),
        "{message}"
    );
    assert!(!message.contains(&refresh_token));

    // 6. custody login --device: approved on "another device" (the test's HTTP client), then
    // status and kubectl work with the new login; a denied one fails clearly.
    let started = Instant::now();
    let device_token = device_login(&setup, &rt, DeviceAnswer::Approve);
    eprintln!("device login took {:?}", started.elapsed());
    let status = ok(&setup
        .custody(&["status", "--server", &setup.server])
        .output()
        .unwrap());
    assert!(status.contains("user:     dana"), "{status}");
    let whoami = ok(&k.run(["auth", "whoami"]).unwrap());
    assert!(whoami.contains("oidc:dana"), "{whoami}");
    device_login(&setup, &rt, DeviceAnswer::Deny);
    // The denied attempt left the earlier login alone.
    assert_eq!(setup.stored()["id_token"].as_str().unwrap(), device_token);

    // 7. The trail and the recording name dana; no token anywhere custody writes.
    drop(gateway);
    let data = setup.dir.path().join("data");
    let audit = Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["audit", "--json", "--limit", "1000", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let audit = ok(&audit);
    assert!(audit.contains("oidc:dana"), "{audit}");
    let mut written = vec![
        std::fs::read(setup.dir.path().join("gateway.log")).unwrap(),
        audit.into_bytes(),
    ];
    let mut recorded_dana = false;
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap();
        if entry.to_string_lossy().ends_with(".cast.zst") {
            let plain = zstd::stream::decode_all(&bytes[..]).unwrap_or_default();
            recorded_dana |= String::from_utf8_lossy(&plain).contains("oidc:dana");
            written.push(plain);
        }
        written.push(bytes);
    }
    assert!(recorded_dana, "no recording names oidc:dana");
    for token in [
        &first_id_token,
        &second_id_token,
        &refresh_token,
        &device_token,
    ] {
        // Tokens are long; any 24-character piece of the signature would be enough to worry.
        let piece = &token[token.len() - 24..];
        for bytes in &written {
            assert!(
                !String::from_utf8_lossy(bytes).contains(piece),
                "a token appears in what custody wrote"
            );
        }
    }

    // 8. logout forgets the tokens.
    let out = setup
        .custody(&["logout", "--server", &setup.server])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        std::fs::read_dir(setup.config_home.join("custody/logins"))
            .unwrap()
            .next()
            .is_none()
    );
    rt.block_on(sim.shutdown());
}

/// The Python package `oidc-provider-mock` in a venv under the tools cache, keyed by the pinned requirements'
/// hash, built in place (a venv records its path) under a file lock (`flock`).
fn mock_install() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/oidc-provider-mock");
    let mut hash = Sha256::new();
    hash.update(std::fs::read(source.join("requirements.txt")).unwrap());
    let key = &hex::encode(hash.finalize())[..16];
    let home = std::env::var_os("HOME").expect("HOME");
    let tools = PathBuf::from(home).join(".cache/custody/tools");
    std::fs::create_dir_all(&tools).unwrap();
    let target = tools.join(format!("oidc-provider-mock-{key}"));
    if target.join("installed").is_file() {
        return target;
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let install = format!(
        "set -e; if [ ! -f '{t}/installed' ]; then rm -rf '{t}'; '{python}' -m venv '{t}'; \
         '{t}/bin/pip' install --quiet --disable-pip-version-check -r '{src}/requirements.txt' >&2; \
         touch '{t}/installed'; fi",
        t = target.display(),
        src = source.display()
    );
    let status = Command::new("flock")
        .arg(tools.join("oidc-provider-mock.lock"))
        .args(["sh", "-c", &install])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "could not install PyPI oidc-provider-mock with {python} -m venv and pip (see .ci/run)"
    );
    target
}

#[test]
#[allow(clippy::too_many_lines, reason = "one story, step by step")]
fn provider_with_array_audience_login_and_kubectl() {
    let venv = mock_install();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p);
    let provider_pki = Pki::generate(&["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(path("provider.crt"), &provider_pki.server().cert).unwrap();
    std::fs::write(path("provider.key"), &provider_pki.server().key).unwrap();
    std::fs::write(path("provider-ca.crt"), provider_pki.ca_pem()).unwrap();
    let port = free_port();
    let mut provider = Killed(
        Command::new(venv.join("bin/python"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/oidc-provider-mock/serve.py"))
            .env("PORT", port.to_string())
            .env("TLS_CERT", path("provider.crt"))
            .env("TLS_KEY", path("provider.key"))
            .env("ACCOUNT", "erin")
            .env("GROUPS", "ops")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = wait_line(&mut provider.0, "ready ");
    let provider_url = ready.trim_start_matches("ready ").to_owned();
    let sim = rt
        .block_on(KubeSim::start(KubeSimConfig::new(path("cluster"))))
        .unwrap();
    let (_gateway, server) = start_gateway(
        dir.path(),
        &provider_url,
        r#"["openid", "profile", "email"]"#,
    );
    let setup = Setup {
        config_home: path("config"),
        server,
        provider_ca: provider_pki.ca_pem(),
        provider_url,
        dir,
    };

    // This provider authenticates clients at its token endpoint with a secret (any secret).
    std::fs::write(setup.dir.path().join("client-secret"), "any\n").unwrap();
    let started = Instant::now();
    let mut login = setup
        .custody(&[
            "login",
            "--server",
            &setup.server,
            "--ca-file",
            setup.dir.path().join("gateway-ca.crt").to_str().unwrap(),
            "--client-secret-file",
            setup.dir.path().join("client-secret").to_str().unwrap(),
            "--no-browser",
            "--timeout",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = login.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines.next().expect("login printed no URL").unwrap();
        if let Some(url) = line.trim().strip_prefix("https://") {
            break format!("https://{url}");
        }
    };
    assert!(url.starts_with(&setup.provider_url), "{url}");
    rt.block_on(async {
        // The provider's page is a form that names the user; submitting it redirects to custody.
        let mut browser = Browser::new(&setup.provider_ca);
        let page = browser.follow(url.clone()).await;
        assert!(page.contains("name=\"sub\""), "{page}");
        let page = browser.post_follow(&url, &[("sub", "erin")]).await;
        assert!(page.contains("logged in"), "{page}");
    });
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let mut out = String::new();
    login
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(login.wait().unwrap().success(), "login failed: {rest:?}");
    assert!(out.contains("user:     erin"), "{out}");
    eprintln!("login took {:?}", started.elapsed());

    // The point of this provider: the ID token's aud is an array.
    let id_token = setup.stored()["id_token"].as_str().unwrap().to_owned();
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert!(
        claims["aud"].is_array(),
        "aud is not an array: {}",
        claims["aud"]
    );
    assert!(
        claims["aud"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("custody")),
        "{}",
        claims["aud"]
    );

    ok(&setup
        .custody(&[
            "kubeconfig",
            "--server",
            &setup.server,
            "-o",
            setup.dir.path().join("kubeconfig").to_str().unwrap(),
        ])
        .output()
        .unwrap());
    let whoami = ok(&setup.kubectl().run(["auth", "whoami"]).unwrap());
    assert!(
        whoami.contains("oidc:erin") && whoami.contains("ops"),
        "{whoami}"
    );
    rt.block_on(sim.shutdown());
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DeviceAnswer {
    Approve,
    Deny,
}

/// Runs `custody login --device`, reads the verification URL and user code from its stderr and
/// answers on the provider's pages. Approved: the login succeeds and its ID token is returned.
/// Denied: custody exits non-zero saying so.
fn device_login(setup: &Setup, rt: &tokio::runtime::Runtime, answer: DeviceAnswer) -> String {
    let mut login = setup
        .custody(&[
            "login",
            "--device",
            "--server",
            &setup.server,
            "--timeout",
            "90",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = login.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let mut verification_uri = None;
    let mut user_code = None;
    let mut code_next = false;
    while user_code.is_none() {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("device login printed no code: {seen:?}"))
            .unwrap();
        let text = line.trim().to_owned();
        if text.starts_with("https://") && verification_uri.is_none() {
            verification_uri = Some(text.clone());
        } else if text.contains("enter the code") {
            code_next = true;
        } else if code_next && !text.is_empty() {
            user_code = Some(text.clone());
        }
        seen.push(line);
    }
    let verification_uri = verification_uri.unwrap();
    assert!(
        !verification_uri.contains("user_code="),
        "the plain URL comes first: {seen:?}"
    );
    rt.block_on(approve_device(
        &verification_uri,
        user_code.as_deref().unwrap(),
        &setup.provider_ca,
        answer,
    ));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let mut out = String::new();
    login
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let exit = login.wait().unwrap();
    if answer == DeviceAnswer::Deny {
        assert!(!exit.success(), "a denied device login succeeded: {out}");
        assert!(
            rest.iter().any(|l| l.contains("denied")),
            "no clear message: {rest:?}"
        );
        return String::new();
    }
    assert!(exit.success(), "device login failed: {rest:?}");
    assert!(out.contains("user:     dana"), "{out}");
    let token = setup.stored()["id_token"].as_str().unwrap().to_owned();
    for text in [&out, &rest.join("\n"), &seen.join("\n")] {
        assert!(!text.contains(&token));
    }
    token
}

/// A browser on another device: the user code form, the confirmation (or its abort), then the
/// provider's login and consent interactions, following redirects and keeping cookies.
async fn approve_device(verification_uri: &str, user_code: &str, ca: &str, answer: DeviceAnswer) {
    let mut browser = Browser::new(ca);
    let page = browser.follow(verification_uri.to_owned()).await;
    assert!(page.contains("op.deviceInputForm"), "{page}");
    let (action, xsrf) = form_of(&page, verification_uri);
    let page = browser
        .post_follow(&action, &[("xsrf", &xsrf), ("user_code", user_code)])
        .await;
    assert!(page.contains("op.deviceConfirmForm"), "{page}");
    let (action, xsrf) = form_of(&page, verification_uri);
    let decision = match answer {
        DeviceAnswer::Approve => ("confirm", "yes"),
        DeviceAnswer::Deny => ("abort", "yes"),
    };
    let page = browser
        .post_follow(
            &action,
            &[("xsrf", &xsrf), ("user_code", user_code), decision],
        )
        .await;
    match answer {
        DeviceAnswer::Approve => assert!(page.contains("Sign-in Success"), "{page}"),
        DeviceAnswer::Deny => assert!(page.contains("interrupted"), "{page}"),
    }
}

/// The form's action (absolute) and its `xsrf` field.
fn form_of(page: &str, base: &str) -> (String, String) {
    let attribute = |marker: &str| {
        let start = page
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} in {page}"))
            + marker.len();
        page[start..][..page[start..].find('"').unwrap()].to_owned()
    };
    let action = attribute("action=\"");
    let xsrf = attribute("name=\"xsrf\" value=\"");
    (absolute(&action, base), xsrf)
}

fn absolute(location: &str, base: &str) -> String {
    if location.starts_with("http") {
        return location.to_owned();
    }
    let origin: http::Uri = base.parse().unwrap();
    format!(
        "{}://{}{location}",
        origin.scheme_str().unwrap(),
        origin.authority().unwrap()
    )
}

/// An HTTPS client that keeps cookies.
struct Browser {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(ca: &str) -> Browser {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Browser {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build(connector),
            cookies: Vec::new(),
        }
    }

    /// One request; the status, the redirect target (absolute) and the body.
    async fn send(
        &mut self,
        url: &str,
        form: Option<String>,
    ) -> (http::StatusCode, Option<String>, String) {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut req = match &form {
            Some(_) => http::Request::post(url).header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            ),
            None => http::Request::get(url),
        };
        if !cookie.is_empty() {
            req = req.header(http::header::COOKIE, cookie);
        }
        let body = Full::new(Bytes::from(form.unwrap_or_default()));
        let resp = self.client.request(req.body(body).unwrap()).await.unwrap();
        for value in resp.headers().get_all(http::header::SET_COOKIE) {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            if let Some((k, v)) = pair.split_once('=') {
                self.cookies.retain(|(name, _)| name != k);
                if !v.is_empty() {
                    self.cookies.push((k.to_owned(), v.to_owned()));
                }
            }
        }
        let status = resp.status();
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .map(|v| absolute(v.to_str().unwrap(), url));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// GETs `url`, following redirects; the final page.
    async fn follow(&mut self, mut url: String) -> String {
        for _ in 0..20 {
            let (status, location, body) = self.send(&url, None).await;
            match location {
                Some(next) if status.is_redirection() => url = next,
                _ => {
                    assert!(status.is_success(), "{url} answered {status}: {body}");
                    return body;
                }
            }
        }
        panic!("too many redirects");
    }

    /// POSTs a form, then follows redirects; the final page.
    async fn post_follow(&mut self, url: &str, fields: &[(&str, &str)]) -> String {
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let (status, location, body) = self.send(url, Some(form)).await;
        match location {
            Some(next) if status.is_redirection() => self.follow(next).await,
            _ => body,
        }
    }
}

async fn post_unauthenticated(url: &str, ca: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let resp = client
        .request(http::Request::post(url).body(Full::default()).unwrap())
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if !path.to_string_lossy().ends_with(".sock") {
            out.push(path);
        }
    }
    out
}
