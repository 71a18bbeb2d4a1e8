//! `ServiceAccount` tokens: recognized by their claims, verified by the cluster through the
//! `TokenReviewer` seam (a scripted fake here), turned into `ServiceAccount` principals.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed setup or assertion should fail the test loudly"
)]

use std::sync::{Arc, Mutex};

use custody::authn::serviceaccount::ReviewFuture;
use custody::authn::{Authenticator, ReviewedUser, ServiceAccountConfig, TokenReviewer};
use custody::principal::{AuthFailure, AuthMethod};
use custody_fixtures::oidc_issuer::SigningKey;
use serde_json::json;

#[path = "support/authn.rs"]
mod support;

use support::{Setup, auth, authenticator, is_invalid};

/// Answers every review with a scripted result and journals what it was asked.
struct FakeReviewer {
    answer: Box<dyn Fn() -> custody::Result<Option<ReviewedUser>> + Send + Sync>,
    asked: Mutex<Vec<(String, String, Vec<String>)>>,
}

impl TokenReviewer for FakeReviewer {
    fn review<'a>(
        &'a self,
        cluster: &'a str,
        token: &'a str,
        audiences: &'a [String],
    ) -> ReviewFuture<'a> {
        self.asked
            .lock()
            .unwrap()
            .push((cluster.to_owned(), token.to_owned(), audiences.to_vec()));
        Box::pin(async move { (self.answer)() })
    }
}

fn reviewer(
    answer: impl Fn() -> custody::Result<Option<ReviewedUser>> + Send + Sync + 'static,
) -> Arc<FakeReviewer> {
    Arc::new(FakeReviewer {
        answer: Box::new(answer),
        asked: Mutex::new(Vec::new()),
    })
}

fn deployer() -> ReviewedUser {
    ReviewedUser {
        username: "system:serviceaccount:ci:deployer".into(),
        uid: "uid-1".into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:ci".into(),
        ],
    }
}

fn sa_token(key: &SigningKey) -> String {
    let now = chrono::Utc::now().timestamp();
    key.sign(&json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "sub": "system:serviceaccount:ci:deployer",
        "exp": now + 3600, "iat": now, "nbf": now,
        "kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "deployer", "uid": "uid-1"}},
    }))
    .unwrap()
}

fn enabled() -> ServiceAccountConfig {
    ServiceAccountConfig {
        enabled: true,
        audiences: vec!["https://kubernetes.default.svc".into()],
    }
}

#[tokio::test]
async fn a_reviewed_service_account_token_becomes_a_service_account_principal() {
    let key = SigningKey::generate_rs256("sa").unwrap();
    let token = sa_token(&key);
    let fake = reviewer(|| Ok(Some(deployer())));
    let authn = Authenticator::new(&[], &enabled(), Some(fake.clone())).unwrap();
    let p = authn.authenticate_token(&token, "prod").await.unwrap();
    assert_eq!(p.method, AuthMethod::ServiceAccount);
    assert_eq!(p.username, "system:serviceaccount:ci:deployer");
    assert_eq!(p.issuer, "prod");
    assert_eq!(p.groups.len(), 2);
    let asked = fake.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        [(
            "prod".to_owned(),
            token,
            vec!["https://kubernetes.default.svc".to_owned()]
        )]
    );
}

#[tokio::test]
async fn rejected_unreachable_and_non_service_account_reviews_fail() {
    let key = SigningKey::generate_rs256("sa").unwrap();
    let token = sa_token(&key);
    let run = |fake: Arc<FakeReviewer>| {
        let token = token.clone();
        async move {
            let authn = Authenticator::new(&[], &enabled(), Some(fake)).unwrap();
            authn.authenticate_token(&token, "prod").await
        }
    };
    assert!(is_invalid(&run(reviewer(|| Ok(None))).await));
    let down = run(reviewer(|| {
        Err(custody::Error::UpstreamConfig {
            cluster: "prod".into(),
            message: "down".into(),
        })
    }))
    .await;
    assert!(matches!(down, Err(AuthFailure::Unavailable(_))));
    for username in [
        "system:admin",
        "alice",
        "system:serviceaccount:ci",
        "system:serviceaccount::x",
        "system:node:n1",
    ] {
        let fake = reviewer(move || {
            Ok(Some(ReviewedUser {
                username: username.into(),
                ..deployer()
            }))
        });
        assert!(
            matches!(run(fake).await, Err(AuthFailure::Refused(_))),
            "{username}"
        );
    }
}

#[tokio::test]
async fn service_accounts_are_off_unless_enabled_and_oidc_issuers_win() {
    let s = Setup::start().await;
    let key = SigningKey::generate_rs256("sa").unwrap();
    let token = sa_token(&key);
    let off = authenticator(s.config());
    assert!(is_invalid(&auth(&off, &token).await));

    // Enabled: tokens that do not look like ServiceAccount tokens never reach the reviewer.
    let fake = reviewer(|| Ok(Some(deployer())));
    let authn = Authenticator::new(&[s.config()], &enabled(), Some(fake.clone())).unwrap();
    let stranger = key
        .sign(&json!({"iss": "https://elsewhere.example", "sub": "system:serviceaccount:a:b", "aud": "x", "exp": 4_000_000_000_i64}))
        .unwrap();
    assert!(is_invalid(&auth(&authn, &stranger).await));
    assert!(is_invalid(&auth(&authn, "opaque-static-token").await));
    assert!(fake.asked.lock().unwrap().is_empty());
    // A token from the configured issuer is verified as OIDC, never sent for review.
    let p = auth(&authn, &s.issuer.id_token_for("alice").unwrap())
        .await
        .unwrap();
    assert_eq!(p.method, AuthMethod::Oidc);
    assert!(fake.asked.lock().unwrap().is_empty());
}
