//! The web console under attack, over raw HTTPS against `custody demo` (the real gateway and
//! the development OIDC issuer): cross-site form posts, forged or missing CSRF tokens, a
//! WebSocket opened from another origin, a cookie after logout, another person's session id, a
//! login callback the browser never started, and an open redirect through `next`. Each refusal
//! is checked against a control that succeeds, so that it is the defence that refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use custody_fixtures::harness::{Kubectl, kubectl_binary};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

#[path = "support/demo.rs"]
mod support;

use support::Demo;

const EVIL: &str = "https://evil.example";

/// One answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> String {
        self.headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The value the answer sets for cookie `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().iter().find_map(|c| {
            let first = c.split(';').next()?;
            let (k, v) = first.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    }

    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token");
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

/// An HTTPS client that trusts the demo's gateway and issuer CAs and keeps no cookies itself.
struct Client {
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    fn new(demo: &Demo) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for ca in ["gateway-ca.crt", "issuer-ca.crt"] {
            let pem = std::fs::read(demo.dir.path().join("demo").join(ca)).unwrap();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots.add(cert.unwrap()).unwrap();
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Client { tls: Arc::new(tls) }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let uri: http::Uri = url.parse().unwrap();
        let authority = uri.authority().unwrap().clone();
        let tcp = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(
                rustls::pki_types::ServerName::try_from(authority.host().to_owned()).unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(uri.path_and_query().unwrap().as_str())
            .header(header::HOST, authority.as_str());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, url, headers, "").await
    }

    /// Logs `who` in as a browser does; returns the session cookie's value and the answer
    /// that set it.
    async fn log_in(&self, base: &str, who: &str, next: &str) -> (String, Answer) {
        let start = self
            .get(&format!("{base}/custody/ui/login?next={next}"), &[])
            .await;
        assert_eq!(start.status, StatusCode::SEE_OTHER);
        let state = start.cookie("__Host-custody-login").unwrap();
        let at_issuer = self
            .get(&format!("{}&login_hint={who}", start.location()), &[])
            .await;
        assert_eq!(at_issuer.status, StatusCode::FOUND, "{}", at_issuer.body);
        let callback = self
            .get(
                &at_issuer.location(),
                &[("cookie", &format!("__Host-custody-login={state}"))],
            )
            .await;
        assert_eq!(callback.status, StatusCode::SEE_OTHER, "{}", callback.body);
        (callback.cookie("__Host-custody").unwrap(), callback)
    }
}

fn kubectl(demo: &Demo) -> Kubectl {
    let home = demo.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    Kubectl::new(
        kubectl_binary("1.32").unwrap(),
        demo.dir.path().join("demo/kubeconfig"),
        home,
    )
}

/// The ids linked from a page under `prefix` (`/custody/ui/sessions/`, `/custody/ui/live/`).
fn linked_ids(body: &str, prefix: &str) -> Vec<String> {
    body.split(&format!("href=\"{prefix}"))
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
                .collect::<String>()
        })
        .filter(|id| id.len() == 36)
        .collect()
}

fn cookie_header(value: &str) -> String {
    format!("__Host-custody={value}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_what_a_browser_attack_would_send() {
    // With the log in JSON, to check below that a refusal's line carries its request's id.
    let (demo, log) = support::start_demo_logged(
        &["--log-format", "json"],
        &[("CUSTODY_LOG", "custody=info")],
        Duration::from_secs(60),
    );
    let base = demo.printed[0].trim_start_matches("ready ").to_owned();
    let client = Client::new(&demo);
    let k = kubectl(&demo);

    // The cookie: __Host- prefixed, Secure, HttpOnly, SameSite=Lax, Path=/, no Domain. And an
    // open redirect through `next` is ignored: the login lands on the console.
    let (alice, answer) = client.log_in(&base, "alice", "https://evil.example/").await;
    assert_eq!(answer.location(), "/custody/ui/sessions");
    let set = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-custody="))
        .unwrap();
    let attributes: Vec<&str> = set.split("; ").collect();
    for wanted in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(attributes.contains(&wanted), "{wanted} missing from {set}");
    }
    assert!(!set.to_ascii_lowercase().contains("domain"), "{set}");
    assert_eq!(alice.len(), 43, "256 random bits");
    let alice_cookie = cookie_header(&alice);

    // Every page carries the strict policy.
    let page = client
        .get(
            &format!("{base}/custody/ui/requests"),
            &[("cookie", &alice_cookie)],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.headers[header::CONTENT_SECURITY_POLICY],
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
    assert!(page.body.contains("No request."), "nothing asked yet");
    let csrf = page.csrf();

    // A cross-site form post, even with the right token, is refused; so is one without the
    // token, with a wrong one, and one that says nothing of where it came from. None of them
    // creates anything.
    let form = format!(
        "csrf={csrf}&cluster=demo&namespace=kube-system&pod=coredns-sim&action=exec&minutes=15&reason=attack"
    );
    let no_token =
        "cluster=demo&namespace=kube-system&pod=coredns-sim&action=exec&minutes=15&reason=attack";
    let wrong_token = format!("csrf={}x&{no_token}", &csrf[..42]);
    let form_type = ("content-type", "application/x-www-form-urlencoded");
    let origin = base.clone();
    for (label, headers, body) in [
        (
            "cross-site",
            vec![
                ("cookie", alice_cookie.as_str()),
                ("origin", EVIL),
                form_type,
            ],
            form.as_str(),
        ),
        (
            "cross-site by fetch metadata",
            vec![
                ("cookie", alice_cookie.as_str()),
                ("sec-fetch-site", "cross-site"),
                form_type,
            ],
            form.as_str(),
        ),
        (
            "no token",
            vec![
                ("cookie", alice_cookie.as_str()),
                ("origin", origin.as_str()),
                form_type,
            ],
            no_token,
        ),
        (
            "wrong token",
            vec![
                ("cookie", alice_cookie.as_str()),
                ("origin", origin.as_str()),
                form_type,
            ],
            wrong_token.as_str(),
        ),
        (
            "no origin at all",
            vec![("cookie", alice_cookie.as_str()), form_type],
            form.as_str(),
        ),
    ] {
        let refused = client
            .send(
                Method::POST,
                &format!("{base}/custody/ui/requests"),
                &headers,
                body,
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{label}: {}",
            refused.body
        );
    }
    let page = client
        .get(
            &format!("{base}/custody/ui/requests"),
            &[("cookie", &alice_cookie)],
        )
        .await;
    assert!(
        page.body.contains("No request."),
        "a refused post created a request"
    );
    // The log is JSON, one object per line, and the refusal's line names its request.
    let deadline = Instant::now() + Duration::from_secs(5);
    let refusal = loop {
        let lines: Vec<serde_json::Value> = log
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect();
        if let Some(line) = lines
            .into_iter()
            .find(|l| l["message"] == "console request refused")
        {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            log.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refusal["level"], "WARN");
    let request_id = refusal["spans"][0]["request_id"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        uuid::Uuid::parse_str(request_id).unwrap().to_string(),
        request_id,
        "{refusal}"
    );
    // A request to the cluster without credentials: its log line's request id is its audit
    // event's id, so a collector joins the two.
    let refused = client.get(&format!("{base}/clusters/demo/api"), &[]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let audit_id = refused.headers["audit-id"].to_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let joined = log.text().lines().any(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            line["message"] == "authentication failed"
                && line["spans"][0]["request_id"] == audit_id.as_str()
        });
        if joined {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line of {audit_id}:\n{}",
            log.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The control: the same form from the console's own origin with the token is accepted.
    let accepted = client
        .send(
            Method::POST,
            &format!("{base}/custody/ui/requests"),
            &[("cookie", &alice_cookie), ("origin", &origin), form_type],
            &form,
        )
        .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.body);
    assert!(accepted.location().starts_with("/custody/ui/requests/"));

    // A login callback this browser never started is refused, and sets no session cookie.
    let start = client.get(&format!("{base}/custody/ui/login"), &[]).await;
    let at_issuer = client
        .get(&format!("{}&login_hint=bob", start.location()), &[])
        .await;
    let planted = client.get(&at_issuer.location(), &[]).await;
    assert_eq!(planted.status, StatusCode::FORBIDDEN, "{}", planted.body);
    assert!(planted.cookie("__Host-custody").is_none());

    // Sessions of both people: alice's runs on (for the WebSocket checks), bob's has ended.
    let mut running = k
        .command(["--context", "alice", "exec", "demo", "--", "sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = tokio::task::block_in_place(|| {
        k.run(["--context", "bob", "exec", "demo", "--", "true"])
            .unwrap()
    });
    assert!(out.status.success());
    let (bob, _) = client.log_in(&base, "bob", "/custody/ui/sessions").await;
    let bob_cookie = cookie_header(&bob);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (alice_live, bob_session) = loop {
        let live = client
            .get(
                &format!("{base}/custody/ui/live"),
                &[("cookie", &alice_cookie)],
            )
            .await;
        let alice_live = linked_ids(&live.body, "/custody/ui/live/");
        let mine = client
            .get(
                &format!("{base}/custody/ui/sessions"),
                &[("cookie", &bob_cookie)],
            )
            .await;
        let theirs = client
            .get(
                &format!("{base}/custody/ui/sessions"),
                &[("cookie", &alice_cookie)],
            )
            .await;
        let alice_sees = linked_ids(&theirs.body, "/custody/ui/sessions/");
        let bob_only: Vec<String> = linked_ids(&mine.body, "/custody/ui/sessions/")
            .into_iter()
            .filter(|id| !alice_sees.contains(id) && !alice_live.contains(id))
            .collect();
        if let (Some(live), Some(bobs)) = (alice_live.first(), bob_only.first()) {
            break (live.clone(), bobs.clone());
        }
        assert!(Instant::now() < deadline, "sessions never listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Another person's session id gives the same 404 as one that does not exist, page and
    // download alike.
    for path in [
        format!("/custody/ui/sessions/{bob_session}"),
        format!("/custody/ui/sessions/{bob_session}/download?format=raw"),
        "/custody/ui/sessions/00000000-0000-4000-8000-000000000000".to_owned(),
    ] {
        let answer = client
            .get(&format!("{base}{path}"), &[("cookie", &alice_cookie)])
            .await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            answer.body
        );
        assert!(answer.body.contains("No such session"), "{path}");
    }
    let bobs_own = client
        .get(
            &format!("{base}/custody/ui/sessions/{bob_session}"),
            &[("cookie", &bob_cookie)],
        )
        .await;
    assert_eq!(
        bobs_own.status,
        StatusCode::OK,
        "the control: bob sees his own"
    );

    // A WebSocket from another origin is refused; from the console's origin it opens.
    let watch = format!("{base}/custody/ui/live/{alice_live}/watch");
    let upgrade = |origin: Option<&'static str>, cookie: String| {
        let mut headers = vec![
            ("cookie".to_owned(), cookie),
            ("connection".to_owned(), "Upgrade".to_owned()),
            ("upgrade".to_owned(), "websocket".to_owned()),
            ("sec-websocket-version".to_owned(), "13".to_owned()),
            (
                "sec-websocket-key".to_owned(),
                "dGhlIHNhbXBsZSBub25jZQ==".to_owned(),
            ),
            (
                "sec-websocket-protocol".to_owned(),
                "v1.alis, v2.asciicast".to_owned(),
            ),
        ];
        if let Some(origin) = origin {
            headers.push(("origin".to_owned(), origin.to_owned()));
        }
        headers
    };
    let good_origin: &'static str = Box::leak(base.clone().into_boxed_str());
    for (label, origin, status) in [
        ("another origin", Some(EVIL), StatusCode::FORBIDDEN),
        ("no origin", None, StatusCode::FORBIDDEN),
        (
            "the console's origin",
            Some(good_origin),
            StatusCode::SWITCHING_PROTOCOLS,
        ),
    ] {
        let headers = upgrade(origin, alice_cookie.clone());
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let answer = client.get(&watch, &headers).await;
        assert_eq!(answer.status, status, "{label}: {}", answer.body);
    }

    // Logging out ends the visit on the server: the old cookie is dead everywhere.
    let page = client
        .get(
            &format!("{base}/custody/ui/sessions"),
            &[("cookie", &alice_cookie)],
        )
        .await;
    let csrf = page.csrf();
    let out = client
        .send(
            Method::POST,
            &format!("{base}/custody/ui/logout"),
            &[("cookie", &alice_cookie), ("origin", &origin), form_type],
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    let removed = out
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-custody="))
        .unwrap();
    assert!(removed.contains("Max-Age=0"), "{removed}");
    let after = client
        .get(
            &format!("{base}/custody/ui/sessions"),
            &[("cookie", &alice_cookie)],
        )
        .await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert!(
        after.location().starts_with("/custody/ui/login"),
        "{}",
        after.location()
    );
    let headers = upgrade(Some(good_origin), alice_cookie.clone());
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        client.get(&watch, &headers).await.status,
        StatusCode::UNAUTHORIZED
    );
    let post = client
        .send(
            Method::POST,
            &format!("{base}/custody/ui/requests"),
            &[("cookie", &alice_cookie), ("origin", &origin), form_type],
            &form,
        )
        .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED, "{}", post.body);

    let _ = running.kill();
    let _ = running.wait();
}
