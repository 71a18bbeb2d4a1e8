//! `ServiceAccount` tokens through the gateway, end to end: real kubectl with kube-sim's
//! `robot` token, custody reviewing it with kube-sim (`TokenReview` with the gateway's own
//! credential) and impersonating the robot; forged tokens and a cluster that cannot review
//! are refused with nothing forwarded.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed step should fail the test loudly"
)]

#[path = "gateway_support/env.rs"]
mod env;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use custody_fixtures::kube_sim::rbac::Policy;
use custody_fixtures::kube_sim::server::{GATEWAY_USER, ROBOT_USER};
use custody_fixtures::oidc_issuer::SigningKey;
use env::{Env, Options, ok};
use serde_json::{Value, json};

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

fn with_service_accounts() -> Options {
    Options {
        service_accounts: true,
        ..Options::default()
    }
}

fn robot_token(env: &Env) -> String {
    std::fs::read_to_string(env.sim_dir.join("robot.token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A token shaped exactly like a bound `ServiceAccount` token of the robot, signed by a key
/// the cluster never saw.
fn forged_token() -> String {
    let key = SigningKey::generate_es256("forged").unwrap();
    let now = chrono::Utc::now().timestamp();
    key.sign(&json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "sub": ROBOT_USER,
        "exp": now + 3600, "iat": now, "nbf": now,
        "jti": "forged",
        "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "robot", "uid": "x"}},
    }))
    .unwrap()
}

/// Whether a kube-sim audit event is a `TokenReview` the gateway sent as itself.
fn is_gateway_token_review(e: &Value) -> bool {
    e["requestURI"] == TOKEN_REVIEWS
        && e["verb"] == "create"
        && e["user"]["username"] == GATEWAY_USER
        && e.get("impersonatedUser").is_none_or(Value::is_null)
}

/// kubectl's words for a 401 (`Status` reason `Unauthorized`).
fn is_unauthorized(output: &std::process::Output) -> bool {
    stderr(output).contains("You must be logged in to the server")
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_robot_token_works_through_the_gateway_and_kube_sim_sees_the_robot_impersonated() {
    let env = Env::start(with_service_accounts());
    let token = robot_token(&env);
    let k = env.kubectl("1.32");
    let whoami = ok(&k.run(["--token", &token, "auth", "whoami"]).unwrap());
    assert!(
        whoami
            .lines()
            .any(|l| l.starts_with("Username") && l.trim_end().ends_with(ROBOT_USER)),
        "{whoami}"
    );
    assert!(
        whoami.contains("system:serviceaccounts:default"),
        "{whoami}"
    );
    let pods = ok(&k.run(["--token", &token, "get", "pods"]).unwrap());
    assert!(pods.contains("demo"), "{pods}");
    // The cluster authorizes the robot, not the gateway: it may not read secrets.
    let secrets = k.run(["--token", &token, "get", "secrets"]).unwrap();
    assert!(!secrets.status.success());
    assert!(
        stderr(&secrets).contains(&format!(
            "User \"{ROBOT_USER}\" cannot list resource \"secrets\""
        )),
        "{}",
        stderr(&secrets)
    );
    std::thread::sleep(Duration::from_millis(300));

    let custody = env.custody_audit();
    let decisions: Vec<&Value> = custody
        .iter()
        .filter(|e| e["stage"] == "decision")
        .collect();
    let allowed: HashSet<&str> = decisions
        .iter()
        .filter(|e| e["decision"] == "allow")
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(allowed.len() >= 3, "{custody:#?}");
    for e in &decisions {
        assert_eq!(e["decision"], "allow", "{e}");
        assert_eq!(e["initiator"]["method"], "service-account", "{e}");
        assert_eq!(e["initiator"]["username"], ROBOT_USER, "{e}");
        assert_eq!(e["initiator"]["issuer"], "sim", "{e}");
        assert_eq!(e["effective"]["user"], ROBOT_USER, "{e}");
    }

    let sim = env.sim_audit();
    let (reviews, forwarded): (Vec<&Value>, Vec<&Value>) =
        sim.iter().partition(|e| is_gateway_token_review(e));
    // The token was reviewed, as the gateway, and the review succeeded; requests within the
    // authenticator's cache time (10 s) use that review instead of asking again.
    assert!(!reviews.is_empty(), "{sim:#?}");
    assert!(reviews.len() <= decisions.len(), "{sim:#?}");
    for r in &reviews {
        assert_eq!(r["responseStatus"]["code"], 201, "{r}");
    }
    let mut seen = HashSet::new();
    for e in &forwarded {
        assert_eq!(e["user"]["username"], GATEWAY_USER, "{e}");
        let imp = &e["impersonatedUser"];
        assert_eq!(imp["username"], ROBOT_USER, "{e}");
        assert_eq!(
            imp["extra"]["custody.dev/initiator"],
            json!([ROBOT_USER]),
            "{e}"
        );
        assert!(
            imp["groups"]
                .as_array()
                .unwrap()
                .contains(&json!("system:serviceaccounts:default")),
            "{e}"
        );
        seen.insert(e["auditID"].as_str().unwrap());
    }
    assert_eq!(
        seen, allowed,
        "every allowed request reached kube-sim under its id"
    );
}

#[test]
fn forged_and_foreign_tokens_get_401_and_only_the_token_review_reaches_kube_sim() {
    let env = Env::start(with_service_accounts());
    let k = env.kubectl("1.32");
    let forged = forged_token();
    // The robot's real token with another ServiceAccount's claims pasted in: the signature no
    // longer matches, and the cluster does not know the token.
    let real = robot_token(&env);
    let parts: Vec<&str> = real.split('.').collect();
    let claims = base64_url(
        &json!({"iss": "https://kubernetes.default.svc.cluster.local",
                "sub": "system:serviceaccount:kube-system:default",
                "kubernetes.io": {"namespace": "kube-system", "serviceaccount": {"name": "default"}}})
        .to_string(),
    );
    let tampered = format!("{}.{claims}.{}", parts[0], parts[2]);
    for token in [&forged, &tampered] {
        let out = k.run(["--token", token, "get", "pods"]).unwrap();
        assert!(!out.status.success());
        assert!(is_unauthorized(&out), "{}", stderr(&out));
    }
    let sim = env.sim_audit();
    assert!(!sim.is_empty(), "the tokens were reviewed");
    for e in &sim {
        assert!(
            is_gateway_token_review(e),
            "only TokenReviews reach kube-sim: {e}"
        );
        assert_eq!(e["responseStatus"]["code"], 201, "{e}");
    }
    let reviewed = sim.len();

    // Tokens that do not look like ServiceAccount tokens are not even reviewed.
    for token in ["opaque-static-token", &real.replace('.', "")] {
        let out = k.run(["--token", token, "get", "pods"]).unwrap();
        assert!(!out.status.success());
    }
    assert_eq!(
        env.sim_audit().len(),
        reviewed,
        "nothing more reached kube-sim"
    );

    let custody = env.custody_audit();
    assert!(!custody.is_empty());
    for e in &custody {
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["status_code"], 401, "{e}");
    }
    assert!(
        custody.iter().any(|e| e["reason"]
            .as_str()
            .unwrap()
            .contains("did not accept the ServiceAccount token")),
        "{custody:#?}"
    );
}

#[test]
fn a_review_for_another_audience_is_not_a_pass() {
    // kube-sim's robot token is for the API server's audience only.
    let env = Env::start(Options {
        review_audiences: vec!["https://custody.example".into()],
        ..with_service_accounts()
    });
    let token = robot_token(&env);
    let out = env
        .kubectl("1.32")
        .run(["--token", &token, "get", "pods"])
        .unwrap();
    assert!(!out.status.success());
    assert!(is_unauthorized(&out), "{}", stderr(&out));
    assert!(env.sim_audit().iter().all(is_gateway_token_review));
}

/// Runs kubectl with the robot's token against an environment whose reviews cannot succeed,
/// and checks the refusal: 401 with "try again", audited as unavailable, nothing forwarded.
fn assert_refused_as_unavailable(env: &Env) {
    let token = robot_token(env);
    let started = Instant::now();
    let out = env
        .kubectl("1.32")
        .run(["--token", &token, "get", "pods"])
        .unwrap();
    assert!(!out.status.success());
    assert!(is_unauthorized(&out), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        env.sim_audit().iter().all(is_gateway_token_review),
        "nothing but TokenReviews reached kube-sim"
    );
    let custody = env.custody_audit();
    assert!(!custody.is_empty());
    for e in &custody {
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["status_code"], 401, "{e}");
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .contains("cannot verify the credential now"),
            "{e}"
        );
    }
}

#[test]
fn an_unreachable_cluster_refuses_service_account_tokens() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let env = Env::start(Options {
        review_server: Some(format!("https://{addr}")),
        ..with_service_accounts()
    });
    assert_refused_as_unavailable(&env);
    assert!(env.sim_audit().is_empty());
}

#[test]
fn a_cluster_that_never_answers_is_cut_off_by_the_review_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    // Accepts connections and never says a word (not even the TLS handshake).
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let env = Env::start(Options {
        review_server: Some(format!("https://{addr}")),
        review_timeout: Some(Duration::from_millis(500)),
        ..with_service_accounts()
    });
    assert_refused_as_unavailable(&env);
    assert!(env.sim_audit().is_empty());
}

#[test]
fn a_gateway_without_the_right_to_review_tokens_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    let mut policy = Policy::defaults(GATEWAY_USER);
    policy.grants.retain(|g| g.name != "gateway-auth-delegator");
    std::fs::write(&rules, serde_yaml::to_string(&policy).unwrap()).unwrap();
    let env = Env::start(Options {
        sim_rules: Some(rules),
        ..with_service_accounts()
    });
    assert_refused_as_unavailable(&env);
    let sim = env.sim_audit();
    assert!(!sim.is_empty());
    for e in &sim {
        assert_eq!(e["responseStatus"]["code"], 403, "{e}");
    }
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}
