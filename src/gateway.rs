//! The request pipeline: request id → authenticate → cluster prefix → classify → impersonation
//! decision → audit (durable in strict mode) → rewrite headers → forward → complete the audit.
//!
//! Every request produces exactly one audit event, refusals included (those refused before
//! authentication with their fields cut short, and beyond a configured rate only counted:
//! [`crate::audit::refusal`]), and every error custody itself returns is a Kubernetes `Status`.
//! Upgrade requests (exec, attach, port-forward) go through the same steps, are checked by
//! `classify_upgrade`, and become recorded sessions ([`session`]); a gateway built without a
//! [`RecordingConfig`] refuses them with 501.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::time::Instant;

use crate::audit::{AuditEvent, AuditMode, AuditSink, Decision};
use crate::classify::{classify, split_cluster};
use crate::control::registry::LiveSessions;
use crate::error::{Error, Result};
use crate::impersonation::headers::{GatewayExtras, upstream_request_headers};
use crate::impersonation::{ImpersonationConfig, decide};
use crate::metrics::{InFlight, Metrics};
use crate::policy::{self as policy_core, Policy, PolicyConfig, RequestAttributes};
use crate::principal::Authenticate;
use crate::principal::EffectiveIdentity;
use crate::proxy::{self, Body, BoxError, OnEnd};
use crate::stream::upgrade::classify_upgrade;
use crate::upstream::Upstream;
use requests::Approvals;

pub mod api;
pub mod requests;
pub mod router;
pub mod session;
pub mod status;

pub use session::{ObjectStorage, RecordingConfig};
use session::{Recordings, StreamRequest};

use status::{auth_guidance, status_response};

/// What a gateway is made of; the lead's `serve` and `demo` build it from the configuration.
pub struct GatewayParts {
    /// Turns request credentials into a principal.
    pub authenticator: Arc<dyn Authenticate>,
    /// The clusters, by the name used in the path prefix `/clusters/<name>/`.
    pub clusters: Vec<(String, Upstream)>,
    /// Who may impersonate whom, and the extra domain.
    pub impersonation: ImpersonationConfig,
    /// Where audit events go.
    pub audit: AuditSink,
    /// The counters `/metrics` shows.
    pub metrics: Arc<Metrics>,
    /// How streaming sessions are recorded; `None` refuses exec, attach and port-forward, and
    /// leaves the sessions API (under `/custody/v1`) off.
    pub recording: Option<RecordingConfig>,
    /// Members of these groups see every session and audit event through the sessions API;
    /// everyone else sees their own (`[access] auditor_groups`).
    pub auditor_groups: Vec<String>,
    /// Who may do what (`[policy]`); `None` leaves every decision to the cluster's RBAC and
    /// impersonation to `[impersonation] allow`.
    pub policy: Option<PolicyConfig>,
    /// Where approvers hear of access requests (`[approvals]`).
    pub approvals: crate::approval::notify::ApprovalsConfig,
    /// Where access requests are kept: `None` for `<data_dir>/approvals.sqlite`, the shared
    /// PostgreSQL store in cluster mode.
    pub approval_store: Option<Arc<dyn crate::approval::ApprovalStore>>,
    /// Cluster mode: the other replicas, for ending sessions they hold.
    pub cluster: Option<crate::cluster::ClusterMode>,
}

/// The gateway: the pipeline every request goes through.
pub struct Gateway {
    authenticator: Arc<dyn Authenticate>,
    clusters: HashMap<String, Upstream>,
    impersonation: ImpersonationConfig,
    audit: AuditSink,
    metrics: Arc<Metrics>,
    recordings: Option<Recordings>,
    api: Option<custody_web::api::Api>,
    /// The login document served unauthenticated at `/.well-known/custody`, as JSON.
    login_document: Option<Bytes>,
    /// The policy, compiled.
    policy: Option<Arc<Policy>>,
    /// Access requests and grants (with a policy and a data directory).
    approvals: Option<Approvals>,
    /// Cluster mode: the other replicas.
    cluster: Option<crate::cluster::ClusterMode>,
    /// The web console, with `[console]`.
    console: Option<Arc<crate::console::Console>>,
    /// Members of these groups see every session and audit event.
    auditor_groups: Vec<String>,
    /// The recorder's redaction per set of role patterns, compiled once.
    redactors:
        std::sync::Mutex<HashMap<Vec<(String, String)>, custody_recorder::redaction::Redactor>>,
}

impl Gateway {
    /// Builds the gateway, checking the impersonation configuration and the cluster names.
    pub fn new(parts: GatewayParts) -> Result<Self> {
        parts
            .impersonation
            .validate()
            .map_err(Error::GatewayConfig)?;
        let mut clusters = HashMap::new();
        for (name, upstream) in parts.clusters {
            if split_cluster(&format!("/clusters/{name}")).is_none() {
                return Err(Error::GatewayConfig(format!(
                    "cluster name {name:?} must be letters, digits, '-', '_' or '.'"
                )));
            }
            if clusters.insert(name.clone(), upstream).is_some() {
                return Err(Error::GatewayConfig(format!(
                    "cluster {name:?} is listed twice"
                )));
            }
        }
        parts
            .metrics
            .serve_clusters(clusters.keys().map(String::as_str));
        parts.audit.report_writes(parts.metrics.audit_writes());
        if let Some(recording) = &parts.recording {
            parts
                .metrics
                .report_recordings(recording.writer.stats.clone());
        }
        let api = parts.recording.as_ref().map(|recording| {
            custody_web::api::Api::new(custody_web::api::ApiConfig {
                data_dir: recording.data_dir.clone(),
                catalog: recording.catalog.clone(),
                files: recording.objects.as_ref().map(|storage| {
                    Arc::new(crate::cluster::ObjectFiles::new(storage))
                        as Arc<dyn custody_web::api::RecordingFiles>
                }),
                key: recording.key.verifying_key(),
                auditor_groups: parts.auditor_groups.clone(),
                audit_json: Arc::new(crate::audit::record_to_json),
            })
        });
        let policy = match &parts.policy {
            Some(config) => Some(Arc::new(
                Policy::new(config).map_err(|e| Error::GatewayConfig(e.to_string()))?,
            )),
            None => None,
        };
        let approvals = match (&policy, &parts.recording) {
            (Some(_), Some(recording)) => {
                let store: Arc<dyn crate::approval::ApprovalStore> = match &parts.approval_store {
                    Some(shared) => shared.clone(),
                    None => Arc::new(
                        crate::approval::Store::open(&recording.data_dir)
                            .map_err(|e| Error::GatewayConfig(e.to_string()))?,
                    ),
                };
                let notifier = crate::approval::notify::Notifier::new(&parts.approvals)
                    .map_err(|e| Error::GatewayConfig(format!("approvals webhook: {e}")))?;
                Some(Approvals {
                    store,
                    notifier: Arc::new(notifier),
                })
            }
            _ => None,
        };
        Ok(Self {
            api,
            policy,
            approvals,
            redactors: std::sync::Mutex::new(HashMap::new()),
            authenticator: parts.authenticator,
            clusters,
            impersonation: parts.impersonation,
            audit: parts.audit,
            metrics: parts.metrics,
            recordings: parts.recording.map(Recordings::new),
            cluster: parts.cluster,
            console: None,
            auditor_groups: parts.auditor_groups.clone(),
            login_document: None,
        })
    }

    /// Publishes `document` at [`crate::login::WELL_KNOWN_PATH`], unauthenticated: what
    /// `custody login` needs (issuer, client id, scopes, the gateway's CA, the clusters). It
    /// holds nothing secret, and requests for it are not audited (like `/healthz`).
    #[must_use]
    pub fn with_login_document(mut self, document: &crate::login::LoginDocument) -> Self {
        self.login_document = serde_json::to_vec(document).ok().map(Bytes::from);
        self
    }

    /// The answer at [`crate::login::WELL_KNOWN_PATH`].
    pub fn login_document_response(&self, method: &Method) -> Response<Body> {
        let (code, body) = match (&self.login_document, method) {
            (Some(doc), &Method::GET | &Method::HEAD) => (StatusCode::OK, doc.clone()),
            (Some(_), _) => (
                StatusCode::METHOD_NOT_ALLOWED,
                Bytes::from_static(b"{\"error\":\"use GET\"}"),
            ),
            (None, _) => (
                StatusCode::NOT_FOUND,
                Bytes::from_static(
                    b"{\"error\":\"this gateway publishes no login configuration\"}",
                ),
            ),
        };
        let mut response = Response::new(proxy::full(body));
        *response.status_mut() = code;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        response
    }

    /// The gateway's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The live streaming sessions, for the control endpoint; `None` without recording (no
    /// session can run).
    pub fn live_sessions(&self) -> Option<Arc<LiveSessions>> {
        self.recordings.as_ref().map(|r| r.live().clone())
    }

    /// Starts the audit event of one request from `peer` (the socket address, or the client
    /// a PROXY header named: the only client address trusted).
    fn exchange(&self, parts: &http::request::Parts, peer: SocketAddr) -> Exchange {
        let id = parts
            .extensions
            .get::<RequestId>()
            .map_or_else(uuid::Uuid::new_v4, |id| id.0);
        let mut ex = Exchange {
            started: Instant::now(),
            in_flight: Some(self.metrics.in_flight()),
            event: AuditEvent::new(id, peer),
        };
        ex.event.user_agent = header(&parts.headers, "user-agent").unwrap_or_default();
        ex.event.kubectl_session = header(&parts.headers, "kubectl-session");
        ex.event.kubectl_command = header(&parts.headers, "kubectl-command");
        parts.uri.path().clone_into(&mut ex.event.request.path);
        if let Some((name, _)) = split_cluster(parts.uri.path()) {
            name.clone_into(&mut ex.event.cluster);
        }
        ex
    }

    /// Authenticates the request's credentials; a failure is refused (401) and audited here.
    async fn authenticate(
        &self,
        mut ex: Exchange,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> std::result::Result<(Exchange, crate::principal::Principal), Response<Body>> {
        match self
            .authenticator
            .authenticate(headers, &ex.event.cluster)
            .await
        {
            Ok(principal) => {
                ex.event.initiator = Some(principal.clone());
                Ok((ex, principal))
            }
            Err(failure) => {
                self.metrics.authn_failure();
                tracing::info!(request_id = %ex.event.id, %peer, %failure, "authentication failed");
                let message = auth_guidance(&failure);
                Err(self
                    .refuse(ex, StatusCode::UNAUTHORIZED, message, &failure.to_string())
                    .await)
            }
        }
    }

    /// Answers one request for custody's own API under `/custody/v1` (the router chose
    /// `endpoint`): authenticated and audited like a request to the cluster.
    pub async fn handle_own<B>(
        &self,
        request: Request<B>,
        peer: SocketAddr,
        endpoint: OwnEndpoint,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let ex = self.exchange(&parts, peer);
        let (ex, principal) = match self.authenticate(ex, &parts.headers, peer).await {
            Ok(authenticated) => authenticated,
            Err(refused) => return refused,
        };
        match endpoint {
            OwnEndpoint::Requests => self.requests_request(ex, &principal, &parts, body).await,
            OwnEndpoint::Sessions => {
                let Some(api) = &self.api else {
                    let msg = "custody: the sessions API is not enabled on this gateway (no recording is configured)";
                    return self.refuse(ex, StatusCode::NOT_FOUND, msg, msg).await;
                };
                self.api_request(ex, api, &principal, &parts).await
            }
        }
    }

    /// Answers one of custody's own API calls for `principal`, whom the console logged in:
    /// built as the JSON API request it stands for and answered and audited exactly like one,
    /// so every access rule of the API holds unchanged. `headers` are the browser's (its user
    /// agent goes into the audit event; the console passes `Range` for downloads).
    ///
    /// The future is boxed (and `Send`) so that handlers awaiting it stay `Send` for axum.
    #[allow(clippy::too_many_arguments, reason = "one request, spelled out")]
    pub fn own_as<'a>(
        &'a self,
        principal: &'a crate::principal::Principal,
        peer: SocketAddr,
        endpoint: OwnEndpoint,
        method: Method,
        path_and_query: &'a str,
        headers: HeaderMap,
        body: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send + 'a>> {
        Box::pin(self.own_as_inner(
            principal,
            peer,
            endpoint,
            method,
            path_and_query,
            headers,
            body,
        ))
    }

    #[allow(clippy::too_many_arguments, reason = "one request, spelled out")]
    async fn own_as_inner(
        &self,
        principal: &crate::principal::Principal,
        peer: SocketAddr,
        endpoint: OwnEndpoint,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response<Body> {
        let mut request = Request::new(http_body_util::Full::new(body));
        *request.method_mut() = method;
        *request.headers_mut() = headers;
        match path_and_query.parse() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    "custody: the console asked for a malformed path",
                    &uuid::Uuid::new_v4().to_string(),
                );
            }
        }
        let (parts, body) = request.into_parts();
        let mut ex = self.exchange(&parts, peer);
        ex.event.initiator = Some(principal.clone());
        match endpoint {
            OwnEndpoint::Requests => self.requests_request(ex, principal, &parts, body).await,
            OwnEndpoint::Sessions => {
                let Some(api) = &self.api else {
                    let msg = "custody: the sessions API is not enabled on this gateway (no recording is configured)";
                    return self.refuse(ex, StatusCode::NOT_FOUND, msg, msg).await;
                };
                self.api_request(ex, api, principal, &parts).await
            }
        }
    }

    /// Authenticates an ID token the console's login received, exactly as a kubectl bearer
    /// token is (same issuers, claim mapping and refusals).
    pub async fn authenticate_id_token(
        &self,
        id_token: &str,
    ) -> std::result::Result<crate::principal::Principal, crate::principal::AuthFailure> {
        let mut headers = HeaderMap::new();
        let value = http::HeaderValue::from_str(&format!("Bearer {id_token}")).map_err(|_| {
            crate::principal::AuthFailure::Invalid("the ID token is not header text".into())
        })?;
        headers.insert(http::header::AUTHORIZATION, value);
        // Only the console's login asks: its outcome once the identity provider has answered.
        let principal = self.authenticator.authenticate(&headers, "").await;
        self.metrics.console_login(if principal.is_ok() {
            crate::metrics::LoginOutcome::Success
        } else {
            crate::metrics::LoginOutcome::Refused
        });
        principal
    }

    /// Whether `principal` audits: sees every session and audit event (`[access]`).
    pub fn is_auditor(&self, principal: &crate::principal::Principal) -> bool {
        principal
            .groups
            .iter()
            .any(|g| self.auditor_groups.contains(g))
    }

    /// The names of the clusters served, sorted.
    pub fn cluster_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.clusters.keys().cloned().collect();
        names.sort();
        names
    }

    /// Audits something a person does in the console that is not an API call (watching a
    /// live session, ending one): the decision is written before the action, and in strict
    /// mode a failure to write it is an `Err` with the message to show (the action must not
    /// happen). The returned handle writes the completion.
    #[allow(clippy::too_many_arguments, reason = "one audit event, spelled out")]
    pub async fn audit_console(
        &self,
        principal: &crate::principal::Principal,
        peer: SocketAddr,
        user_agent: &str,
        verb: &str,
        subresource: &str,
        cluster: &str,
        namespace: &str,
        session: &str,
    ) -> std::result::Result<ConsoleAudit, String> {
        let mut event = AuditEvent::new(uuid::Uuid::new_v4(), peer);
        event.initiator = Some(principal.clone());
        user_agent.clone_into(&mut event.user_agent);
        cluster.clone_into(&mut event.cluster);
        event.request = crate::classify::RequestInfo {
            verb: verb.to_owned(),
            api_group: api::API_GROUP.to_owned(),
            version: "v1".to_owned(),
            resource: "sessions".to_owned(),
            subresource: subresource.to_owned(),
            namespace: namespace.to_owned(),
            name: session.to_owned(),
            is_resource: true,
            path: format!("{}/live/{session}", crate::console::UI_PREFIX),
        };
        event.decision = Decision::Allow;
        if let Err(e) = self.audit.record_decision(&event).await {
            self.metrics.audit_write_failure();
            tracing::error!(request_id = %event.id, error = %e, "audit write failed");
            if self.audit.mode() == AuditMode::Strict {
                return Err(
                    "custody: the audit trail cannot be written, so this was not done".to_owned(),
                );
            }
        }
        Ok(ConsoleAudit {
            event,
            started: Instant::now(),
            audit: self.audit.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// The console, when the gateway serves one.
    pub fn console(&self) -> Option<&crate::console::Console> {
        self.console.as_deref()
    }

    /// Serves the web console with `console`.
    #[must_use]
    pub fn with_console(mut self, console: crate::console::Console) -> Self {
        if let Some(approvals) = &mut self.approvals {
            let notifier = approvals
                .notifier
                .as_ref()
                .clone()
                .with_console(&console.config().public_origin);
            approvals.notifier = Arc::new(notifier);
        }
        self.console = Some(Arc::new(console));
        self
    }

    /// Answers one request for a cluster (the router's fallback: every path that is not one of
    /// custody's own), from `peer`.
    #[allow(
        clippy::too_many_lines,
        reason = "the pipeline reads top to bottom, step by step as the module doc lists them"
    )]
    pub async fn handle<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let ex = self.exchange(&parts, peer);
        let split = split_cluster(parts.uri.path());
        let (mut ex, principal) = match self.authenticate(ex, &parts.headers, peer).await {
            Ok(authenticated) => authenticated,
            Err(refused) => return refused,
        };

        let Some((cluster, rest)) = split else {
            let msg = "custody: no cluster selected; the kubeconfig's server URL must end in /clusters/<name>";
            return self.refuse(ex, StatusCode::NOT_FOUND, msg, msg).await;
        };
        let Some(upstream) = self.clusters.get(cluster) else {
            let msg = format!("custody: cluster {cluster:?} is not served by this gateway");
            return self.refuse(ex, StatusCode::NOT_FOUND, &msg, &msg).await;
        };
        let query = parts.uri.query();
        match classify(parts.method.as_str(), rest, query) {
            Ok(info) => ex.event.request = info,
            Err(e) => {
                let msg = format!(
                    "custody: cannot read this request as the API server would, so it was refused: {e}"
                );
                return self.refuse(ex, StatusCode::BAD_REQUEST, &msg, &msg).await;
            }
        }
        let mut upgrade = None;
        if parts.method == Method::CONNECT || parts.headers.contains_key(http::header::UPGRADE) {
            if self.recordings.is_none() {
                let msg = "custody: exec, attach and port-forward are not enabled on this \
                           gateway (no recording is configured)";
                return self.refuse(ex, StatusCode::NOT_IMPLEMENTED, msg, msg).await;
            }
            match classify_upgrade(
                &parts.method,
                parts.version,
                &parts.headers,
                &ex.event.request,
            ) {
                Ok(request) => {
                    let Some(on_upgrade) = parts.extensions.get::<hyper::upgrade::OnUpgrade>()
                    else {
                        let msg = "custody: this connection cannot be upgraded";
                        return self.refuse(ex, StatusCode::BAD_REQUEST, msg, msg).await;
                    };
                    upgrade = Some((request, on_upgrade.clone()));
                }
                Err(e) => {
                    let msg = format!("custody: the upgrade was refused: {e}");
                    return self.refuse(ex, StatusCode::BAD_REQUEST, &msg, &msg).await;
                }
            }
        }
        let mut allowed = None;
        let effective = if let Some(policy) = &self.policy {
            let requested = match crate::impersonation::requested(&parts.headers) {
                Ok(requested) => requested,
                Err(e) => {
                    let msg = format!("custody: {e}");
                    return self.refuse(ex, StatusCode::FORBIDDEN, &msg, &msg).await;
                }
            };
            let forwarded_ports = match query_ports(&ex.event.request, query) {
                Ok(listed) => listed,
                Err(e) => {
                    let msg = format!("custody: the port-forward cannot be read: {e}");
                    return self.refuse(ex, StatusCode::BAD_REQUEST, &msg, &msg).await;
                }
            };
            let attributes = RequestAttributes {
                cluster,
                info: &ex.event.request,
                method: parts.method.as_str(),
                upgrade: upgrade.is_some(),
                ports: forwarded_ports,
                impersonate: requested.as_ref(),
            };
            match self.authorize(policy, &principal, &attributes).await {
                Ok(policy_core::Decision::Allow(grant)) => {
                    let mut identity = requested.unwrap_or_else(|| EffectiveIdentity {
                        user: principal.username.clone(),
                        groups: principal.groups.clone(),
                        uid: String::new(),
                    });
                    // A grant's groups reach the cluster for its scope only, visibly: they are
                    // in the impersonation headers and so in both audit logs.
                    for group in &grant.grant_groups {
                        if !identity.groups.contains(group) {
                            identity.groups.push(group.clone());
                        }
                    }
                    ex.event.allowed_by = Some(grant.reason.clone());
                    ex.event.approval_id.clone_from(&grant.grant);
                    allowed = Some(grant);
                    identity
                }
                Ok(
                    policy_core::Decision::Deny { reason }
                    | policy_core::Decision::NeedsApproval { reason, .. },
                ) => {
                    let msg = format!("custody: {reason}");
                    return self.refuse(ex, StatusCode::FORBIDDEN, &msg, &msg).await;
                }
                Err(msg) => {
                    return self
                        .refuse(ex, StatusCode::SERVICE_UNAVAILABLE, &msg, &msg)
                        .await;
                }
            }
        } else {
            match decide(&self.impersonation, &principal, &parts.headers) {
                Ok(identity) => identity,
                Err(e) => {
                    let msg = format!("custody: {e}");
                    return self.refuse(ex, StatusCode::FORBIDDEN, &msg, &msg).await;
                }
            }
        };
        ex.event.effective = Some(effective.clone());
        let extras = GatewayExtras {
            domain: self.impersonation.extra_domain.clone(),
            initiator: principal.username.clone(),
            request_id: ex.event.id.to_string(),
            client_address: peer.to_string(),
        };
        let mut headers = match upstream_request_headers(&parts.headers, &effective, &extras) {
            Ok(headers) => headers,
            Err(e) => {
                let msg = format!("custody: {e}");
                return self.refuse(ex, StatusCode::FORBIDDEN, &msg, &msg).await;
            }
        };

        // Secret values are masked in the answer for people whose roles do not show them; the
        // API server is asked for JSON, which custody can mask, instead of protobuf.
        let mask = allowed
            .as_ref()
            .filter(|a| !a.show_secrets)
            .and_then(|_| crate::masking::plan(&ex.event.request, false, &mut headers));
        let body = if mask.is_some() && is_write(&ex.event.request.verb) {
            // What the API server will read: the forwarded headers.
            let content_type = headers.get(http::header::CONTENT_TYPE);
            match guard_secret_write(&ex.event.request.verb, content_type, body).await {
                Ok(body) => body,
                Err((code, msg)) => return self.refuse(ex, code, &msg, &msg).await,
            }
        } else {
            proxy::boxed(body)
        };

        ex.event.decision = Decision::Allow;
        if let Err(e) = self.audit.record_decision(&ex.event).await {
            self.metrics.audit_write_failure();
            tracing::error!(request_id = %ex.event.id, error = %e, "audit write failed");
            if self.audit.mode() == AuditMode::Strict {
                let msg = "custody: the audit trail cannot be written, so the request was not sent";
                ex.event.decision = Decision::Deny(msg.to_owned());
                return self
                    .finish_refusal(ex, StatusCode::SERVICE_UNAVAILABLE, msg, false)
                    .await;
            }
        }

        let path_and_query = match query {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        if let (Some((upgrade, on_upgrade)), Some(recordings)) = (upgrade, &self.recordings) {
            let request = StreamRequest {
                method: parts.method,
                path_and_query,
                query,
                headers,
                upgrade,
                on_upgrade,
                principal: &principal,
                effective: &effective,
                upstream,
                grant: allowed.as_ref().and_then(|a| {
                    let id = a.grant.clone()?;
                    Some((id, a.grant_expires_at?))
                }),
                redactor: allowed.as_ref().and_then(|a| self.redactor(&a.redact)),
                ports: allowed.as_ref().and_then(|a| a.ports.clone()),
                best_effort: allowed
                    .as_ref()
                    .is_some_and(|a| a.recording == policy_core::RecordingMode::BestEffort),
            };
            return recordings
                .stream(ex, request, self.audit.clone(), self.metrics.clone())
                .await;
        }
        let bytes_in = Arc::new(AtomicU64::new(0));
        let bytes_out = Arc::new(AtomicU64::new(0));
        let forwarded = proxy::forward(
            upstream,
            parts.method,
            &path_and_query,
            headers,
            body,
            bytes_in.clone(),
            bytes_out.clone(),
        );
        match self.metrics.time_upstream(cluster, forwarded).await {
            Ok(forwarded) => {
                ex.event.upstream_audit_id = forwarded.upstream_audit_id;
                let status = forwarded.response.status();
                let (head, body) = forwarded.response.into_parts();
                let audit = self.audit.clone();
                let metrics = self.metrics.clone();
                let body = OnEnd::new(body, move |complete| {
                    ex.event.bytes_in = Some(proxy::count(&bytes_in));
                    ex.event.bytes_out = Some(proxy::count(&bytes_out));
                    if !complete {
                        tracing::debug!(request_id = %ex.event.id, "response ended early");
                    }
                    ex.complete(status, metrics, audit);
                });
                let body = proxy::boxed(body);
                // No answer outlives the access it was allowed with: the credential's expiry,
                // or the grant's end. This is what ends a watch (kubectl then comes back for a
                // fresh decision), `logs -f`, and any other long-running answer (a proxied
                // stream); a short answer is done long before.
                let body = match access_ends(&principal, allowed.as_ref()) {
                    Some(at) => proxy::boxed(proxy::Until::new(body, at)),
                    None => body,
                };
                let response = Response::from_parts(head, body);
                match mask {
                    Some(plan) => crate::masking::mask_complete(plan, response).await,
                    None => response,
                }
            }
            Err(e) => {
                self.metrics.upstream_failure();
                tracing::warn!(
                    request_id = %ex.event.id,
                    cluster,
                    error = %error_chain(&e),
                    "cannot reach the cluster"
                );
                let msg = format!("custody: the gateway could not reach cluster {cluster:?}");
                let response =
                    status_response(StatusCode::BAD_GATEWAY, &msg, &ex.event.id.to_string());
                ex.complete(
                    StatusCode::BAD_GATEWAY,
                    self.metrics.clone(),
                    self.audit.clone(),
                );
                response
            }
        }
    }

    /// The policy's decision, consulting the person's grants only when the policy holds the
    /// request for approval (most requests never touch the approvals store). `Err` is a message
    /// for a 503: the grants could not be read, so nothing is allowed on their strength.
    async fn authorize(
        &self,
        policy: &Policy,
        principal: &crate::principal::Principal,
        attributes: &RequestAttributes<'_>,
    ) -> std::result::Result<policy_core::Decision, String> {
        let now = chrono::Utc::now();
        let first = policy.decide(principal, attributes, &[], now.timestamp());
        let (policy_core::Decision::NeedsApproval { .. }, Some(approvals)) =
            (&first, &self.approvals)
        else {
            return Ok(first);
        };
        let store = approvals.store.clone();
        let user = principal.username.clone();
        let grants = tokio::task::spawn_blocking(move || store.active_grants(&user, now))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match grants {
            Ok(grants) if grants.is_empty() => Ok(first),
            Ok(grants) => Ok(policy.decide(principal, attributes, &grants, now.timestamp())),
            Err(e) => {
                tracing::error!(error = %e, "cannot read access grants");
                Err(
                    "custody: the access grants cannot be read now, so the request was not sent"
                        .to_owned(),
                )
            }
        }
    }

    /// The recorder's redaction for a role's extra patterns (added to the defaults); `None`
    /// for none (the gateway's configured redaction applies).
    fn redactor(
        &self,
        patterns: &[policy_core::RedactPattern],
    ) -> Option<custody_recorder::redaction::Redactor> {
        use custody_recorder::redaction::{DEFAULT_PATTERNS, DEFAULT_WINDOW, Redactor};
        if patterns.is_empty() {
            return None;
        }
        let key: Vec<(String, String)> = patterns
            .iter()
            .map(|p| (p.name.clone(), p.pattern.clone()))
            .collect();
        let mut cache = self
            .redactors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(redactor) = cache.get(&key) {
            return Some(redactor.clone());
        }
        let mut all: Vec<(String, String)> = DEFAULT_PATTERNS
            .iter()
            .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
            .collect();
        all.extend(key.iter().cloned());
        // The policy checked every pattern at load; a failure here would be a bug, and the
        // session then keeps the gateway's default redaction rather than none.
        let redactor = Redactor::new(&all, DEFAULT_WINDOW).ok()?;
        cache.insert(key, redactor.clone());
        Some(redactor)
    }

    /// Refuses the request: audits it as denied with `reason`, returns a `Status` with
    /// `message`.
    async fn refuse(
        &self,
        mut ex: Exchange,
        code: StatusCode,
        message: &str,
        reason: &str,
    ) -> Response<Body> {
        ex.event.decision = Decision::Deny(reason.to_owned());
        self.finish_refusal(ex, code, message, true).await
    }

    async fn finish_refusal(
        &self,
        mut ex: Exchange,
        code: StatusCode,
        message: &str,
        mut write: bool,
    ) -> Response<Body> {
        ex.event.status_code = Some(code.as_u16());
        ex.event.latency_ms = Some(ex.elapsed_ms());
        ex.event.bytes_in = Some(0);
        ex.event.bytes_out = Some(0);
        // Refused before authentication: anyone can send these, so they are audited cut short
        // and at a bounded rate (the rest counted), never as much as a client cares to send.
        if write && ex.event.initiator.is_none() {
            crate::audit::truncate_unauthenticated(&mut ex.event);
            if !self.audit.admit_unauthenticated() {
                self.metrics.audit_dropped_rate_limited();
                write = false;
            }
        }
        if write && let Err(e) = self.audit.record_decision(&ex.event).await {
            self.metrics.audit_write_failure();
            tracing::error!(request_id = %ex.event.id, error = %e, "audit write failed");
        }
        self.metrics.request_done(
            &ex.event.cluster,
            &ex.event.request.verb,
            code.as_u16(),
            ex.started.elapsed(),
        );
        status_response(code, message, &ex.event.id.to_string())
    }
}

/// The id the listener gives a request: its log lines' `request_id` and its audit event's id
/// (and, for exec, attach and port-forward, its recording's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(pub uuid::Uuid);

impl RequestId {
    /// A fresh, random id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

/// A console action's audit event, completed by [`ConsoleAudit::finish`].
pub struct ConsoleAudit {
    event: AuditEvent,
    started: Instant,
    audit: AuditSink,
    metrics: Arc<Metrics>,
}

impl ConsoleAudit {
    /// Writes the completion: how long it lasted and the bytes sent.
    pub async fn finish(mut self, bytes_out: u64) {
        self.event.status_code = Some(200);
        self.event.latency_ms =
            Some(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX));
        self.event.bytes_in = Some(0);
        self.event.bytes_out = Some(bytes_out);
        if let Err(e) = self.audit.record_completion(&self.event).await {
            self.metrics.audit_write_failure();
            tracing::error!(request_id = %self.event.id, error = %e, "audit completion write failed");
        }
    }
}

/// Which of custody's own API endpoints a request is for; the router decides from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnEndpoint {
    /// The sessions API (`/custody/v1/sessions`, `/key`, `/audit`).
    Sessions,
    /// Access requests (`/custody/v1/requests`).
    Requests,
}

/// One request on its way through the pipeline.
struct Exchange {
    started: Instant,
    in_flight: Option<InFlight>,
    event: AuditEvent,
}

impl Exchange {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts the request and writes its completion record in the background.
    fn complete(mut self, status: StatusCode, metrics: Arc<Metrics>, audit: AuditSink) {
        self.event.status_code = Some(status.as_u16());
        self.event.latency_ms = Some(self.elapsed_ms());
        metrics.request_done(
            &self.event.cluster,
            &self.event.request.verb,
            status.as_u16(),
            self.started.elapsed(),
        );
        self.in_flight.take();
        let event = self.event;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(request_id = %event.id, "no runtime to write the audit completion");
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = audit.record_completion(&event).await {
                metrics.audit_write_failure();
                tracing::error!(request_id = %event.id, error = %e, "audit completion write failed");
            }
        });
    }
}

/// When the access a request was allowed with ends: the earlier of the credential's expiry and
/// the grant's end, as a timer instant.
fn access_ends(
    principal: &crate::principal::Principal,
    allowed: Option<&policy_core::Allowed>,
) -> Option<Instant> {
    let at = [
        principal.expires_at,
        allowed.and_then(|a| a.grant_expires_at),
    ]
    .into_iter()
    .flatten()
    .min()?;
    let left = at.saturating_sub(chrono::Utc::now().timestamp());
    Some(Instant::now() + std::time::Duration::from_secs(u64::try_from(left).unwrap_or(0)))
}

/// Whether `verb` writes an object (its body may carry values).
fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch")
}

/// The largest Secret write custody reads to check (the API server's limit for a Secret is
/// 1 MiB of data; its request limit is 3 MiB).
const MAX_SECRET_WRITE: usize = 3 * 1024 * 1024;

/// Reads a masked person's Secret write and refuses one that would store custody's placeholder
/// (a `kubectl edit` of a masked Secret would replace every value with it) or that could read
/// stored values back (a JSON Patch `copy`, `move` or `test`): [`crate::masking::check_write`].
async fn guard_secret_write<B>(
    verb: &str,
    content_type: Option<&http::HeaderValue>,
    body: B,
) -> std::result::Result<Body, (StatusCode, String)>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    let bytes = http_body_util::Limited::new(body, MAX_SECRET_WRITE)
        .collect()
        .await
        .map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                "custody: the Secret in the request is too large or could not be read".to_owned(),
            )
        })?
        .to_bytes();
    crate::masking::check_write(verb, content_type.map(http::HeaderValue::as_bytes), &bytes)
        .map_err(|refused| (refused.status(), format!("custody: {refused}")))?;
    Ok(proxy::full(bytes))
}

/// The ports a port-forward request names in its query, read exactly as the API server and the
/// kubelet read them (repeated values, comma lists, duplicates kept: see
/// [`custody_protocol::portforward::query_ports`]), so that the policy sees every port that
/// reaches the pod. A query they would refuse, or that custody cannot read with certainty, is an
/// error and the request is refused. Other requests have no ports.
fn query_ports(
    info: &crate::classify::RequestInfo,
    query: Option<&str>,
) -> Result<Vec<u16>, custody_protocol::Error> {
    if info.subresource != "portforward" {
        return Ok(Vec::new());
    }
    custody_protocol::portforward::query_ports(query.unwrap_or_default())
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// An error and its sources, `a: b: c`, for logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
