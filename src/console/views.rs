//! The console's pages as askama templates (`templates/console/`), and what each shows. HTML
//! escaping is askama's, on every value; nothing here builds markup by hand.

use askama::Template;

/// What every page's frame shows: the person, their CSRF token, the section, the assets.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The username.
    pub user: String,
    /// The groups, comma-separated.
    pub groups: String,
    /// The visit's CSRF token, for the forms.
    pub csrf: String,
    /// `sessions`, `live`, `audit` or `requests`.
    pub section: &'static str,
    /// The console stylesheet's URL.
    pub css: &'static str,
    /// The console script's URL.
    pub js: &'static str,
}

/// A plain message page (errors, login problems).
#[derive(Template)]
#[template(path = "console/message.html")]
pub struct Message {
    /// The heading.
    pub title: String,
    /// What happened and what to do.
    pub text: String,
    /// A link onward: (href, label).
    pub link: Option<(String, String)>,
    /// The stylesheet's URL.
    pub css: &'static str,
}

/// The filter form's values, as typed.
#[derive(Debug, Clone, Default)]
pub struct SessionFilterForm {
    /// Words to find.
    pub grep: String,
    /// Initiator.
    pub initiator: String,
    /// Effective user.
    pub effective_user: String,
    /// Cluster.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Kind.
    pub kind: String,
    /// Since.
    pub since: String,
    /// Until.
    pub until: String,
    /// Exit code.
    pub exit_code: String,
}

/// One row of the sessions list.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// The id.
    pub id: String,
    /// RFC 3339 start.
    pub started_at: String,
    /// The start, readable UTC.
    pub started_utc: String,
    /// The start, relative ("5 min ago").
    pub started_ago: String,
    /// Initiator.
    pub initiator: String,
    /// Effective user.
    pub effective_user: String,
    /// Cluster.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container.
    pub container: String,
    /// Kind.
    pub kind: String,
    /// The command, joined.
    pub command: String,
    /// Whether it had a terminal.
    pub tty: bool,
    /// Status.
    pub status: String,
    /// Termination reason.
    pub reason: Option<String>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Size, readable.
    pub size: String,
    /// Where the searched words occur first, when the list was searched.
    pub hit: Option<Hit>,
}

/// Where searched words occur in a session: the moment and the text around them.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Seconds into the session, for `?t=`.
    pub at: String,
    /// The text around the match, in pieces; `true` marks a matched word.
    pub parts: Vec<(String, bool)>,
}

/// The sessions list.
#[derive(Template)]
#[template(path = "console/sessions.html")]
pub struct Sessions {
    /// The frame.
    pub chrome: Chrome,
    /// The page's heading.
    pub heading: &'static str,
    /// The filter as typed.
    pub f: SessionFilterForm,
    /// Whether the person audits (may filter by initiator).
    pub auditor: bool,
    /// The kind choices: (value, label, selected).
    pub kinds: Vec<(&'static str, &'static str, bool)>,
    /// The rows.
    pub rows: Vec<SessionRow>,
    /// Why the list could not be shown.
    pub error: Option<String>,
    /// The next page's link.
    pub next: Option<String>,
}

/// An entry of a session's timeline: a typed command, a marker or a search hit.
#[derive(Debug, Clone)]
pub struct TimelineEntry {
    /// Seconds into the session.
    pub at: String,
    /// `mm:ss`.
    pub label_time: String,
    /// What.
    pub text: String,
    /// `command`, `marker` or `hit`.
    pub class: &'static str,
}

/// A session's page.
#[derive(Template)]
#[template(path = "console/session.html")]
pub struct Session {
    /// The frame.
    pub chrome: Chrome,
    /// The player's stylesheet URL.
    pub player_css: &'static str,
    /// The player's script URL.
    pub player_js: &'static str,
    /// The summary.
    pub s: SessionRow,
    /// The integrity verdict.
    pub integrity: custody_web::model::Integrity,
    /// The initiator's groups.
    pub meta_groups: String,
    /// The issuer.
    pub issuer: String,
    /// The client's address.
    pub client_addr: String,
    /// The approval the session ran under.
    pub approval: Option<String>,
    /// The start, readable UTC.
    pub started_utc: String,
    /// The start, relative.
    pub started_ago: String,
    /// The end, readable UTC.
    pub ended_utc: String,
    /// Where to start playing (`?t=`), seconds.
    pub start: String,
    /// Typed commands and markers.
    pub events: Vec<TimelineEntry>,
    /// The search words.
    pub q: String,
    /// Where they occur.
    pub hits: Vec<TimelineEntry>,
    /// A non-tty session's standard output.
    pub stdout: String,
    /// A non-tty session's standard error.
    pub stderr: String,
    /// A port-forward session's transcript.
    pub transcript: String,
    /// Who watched it live, and when.
    pub watched_by: Vec<String>,
}

/// One audit event, as listed.
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// RFC 3339.
    pub time: String,
    /// Readable UTC.
    pub time_utc: String,
    /// The verb.
    pub verb: String,
    /// What was asked for.
    pub what: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// Why it was refused.
    pub reason: Option<String>,
    /// The HTTP status.
    pub status: String,
    /// The recorded session the request started, if any.
    pub session: Option<String>,
}

/// The events of one kubectl invocation.
#[derive(Debug, Clone)]
pub struct AuditGroup {
    /// The kubectl command.
    pub command: Option<String>,
    /// Who.
    pub who: String,
    /// The events, oldest first.
    pub events: Vec<AuditRow>,
}

/// The audit trail.
#[derive(Template)]
#[template(path = "console/audit.html")]
pub struct Audit {
    /// The frame.
    pub chrome: Chrome,
    /// The filter fields: (name, label, value).
    pub fields: Vec<(&'static str, &'static str, String)>,
    /// Why the list could not be shown.
    pub error: Option<String>,
    /// The events, grouped by kubectl invocation.
    pub groups: Vec<AuditGroup>,
}

/// One access request, as shown.
#[derive(Debug, Clone)]
pub struct RequestRow {
    /// The id.
    pub id: String,
    /// Who asked.
    pub requester: String,
    /// What for, readable.
    pub scope: String,
    /// Why.
    pub reason: String,
    /// The state.
    pub state: String,
    /// When, readable UTC.
    pub created: String,
    /// How long, readable.
    pub duration: String,
    /// Who decided, when, why.
    pub decided: Option<String>,
    /// When the grant ends.
    pub expires: Option<String>,
}

/// The access requests list.
#[derive(Template)]
#[template(path = "console/requests.html")]
pub struct Requests {
    /// The frame.
    pub chrome: Chrome,
    /// The rows.
    pub rows: Vec<RequestRow>,
    /// The state choices: (state, selected).
    pub states: Vec<(&'static str, bool)>,
    /// Why something failed.
    pub error: Option<String>,
    /// Whether the new-request form is open.
    pub open_form: bool,
    /// The cluster the form proposes.
    pub default_cluster: String,
}

/// One access request's page.
#[derive(Template)]
#[template(path = "console/request.html")]
pub struct Request {
    /// The frame.
    pub chrome: Chrome,
    /// The request.
    pub r: RequestRow,
    /// Whether the person asked for it.
    pub mine: bool,
    /// Whether approve and deny are offered (pending and not theirs; the store decides).
    pub can_decide: bool,
    /// Why something failed.
    pub error: Option<String>,
}

/// One live session, as listed.
#[derive(Debug, Clone)]
pub struct LiveRow {
    /// The id.
    pub id: String,
    /// When it started, readable UTC.
    pub started_utc: String,
    /// How long it has run.
    pub running_for: String,
    /// Who.
    pub initiator: String,
    /// As whom.
    pub effective_user: String,
    /// cluster/namespace/pod.
    pub target: String,
    /// Kind.
    pub kind: &'static str,
    /// The command.
    pub command: String,
    /// In cluster mode, the replica.
    pub replica: Option<String>,
}

/// The live sessions.
#[derive(Template)]
#[template(path = "console/live.html")]
pub struct Live {
    /// The frame.
    pub chrome: Chrome,
    /// The sessions.
    pub rows: Vec<LiveRow>,
}

/// Watching one live session.
#[derive(Template)]
#[template(path = "console/watch.html")]
pub struct Watch {
    /// The frame.
    pub chrome: Chrome,
    /// The player's stylesheet URL.
    pub player_css: &'static str,
    /// The player's script URL.
    pub player_js: &'static str,
    /// The session id.
    pub id: String,
    /// Who.
    pub initiator: String,
    /// cluster/namespace/pod.
    pub target: String,
    /// The command.
    pub command: String,
    /// Whether the person may end it.
    pub may_end: bool,
}
