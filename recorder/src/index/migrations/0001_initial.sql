-- Schema version 1: sessions, frames with keyframes, API requests, audit events, and the
-- full-text index of session output and typed lines.
--
-- Times are integer microseconds: absolute ones (`*_at_us`, `time_us` of requests) since the
-- Unix epoch, session-relative ones (`first_event_us`, `time_us` of text) since the session
-- start. Lists (groups, command argv) are JSON arrays. Everything in `sessions`, `frames` and
-- `session_text` is derived from the recording files and can be rebuilt by `custody reindex`.

CREATE TABLE sessions (
    id                  TEXT PRIMARY KEY NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('exec', 'attach', 'port-forward', 'api')),
    initiator_issuer    TEXT NOT NULL,
    initiator_subject   TEXT NOT NULL,
    initiator_username  TEXT NOT NULL,
    initiator_groups    TEXT NOT NULL,
    effective_user      TEXT NOT NULL,
    effective_groups    TEXT NOT NULL,
    effective_uid       TEXT NOT NULL,
    cluster             TEXT NOT NULL,
    namespace           TEXT NOT NULL,
    pod                 TEXT NOT NULL,
    container           TEXT NOT NULL,
    command             TEXT NOT NULL,
    tty                 INTEGER NOT NULL CHECK (tty IN (0, 1)),
    term_cols           INTEGER,
    term_rows           INTEGER,
    client_addr         TEXT NOT NULL,
    user_agent          TEXT NOT NULL,
    approval_id         TEXT,
    gateway_id          TEXT NOT NULL,
    started_at_us       INTEGER NOT NULL,
    ended_at_us         INTEGER,
    status              TEXT NOT NULL
                        CHECK (status IN ('open', 'complete', 'interrupted', 'terminated')),
    end_reason          TEXT,
    exit_code           INTEGER,
    exit_message        TEXT,
    event_count         INTEGER NOT NULL,
    frame_count         INTEGER NOT NULL,
    chain_head          TEXT,
    file_path           TEXT NOT NULL,
    file_size           INTEGER NOT NULL,
    damage              TEXT
) STRICT;

CREATE INDEX sessions_started ON sessions (started_at_us);
CREATE INDEX sessions_initiator ON sessions (initiator_username, started_at_us);
CREATE INDEX sessions_effective ON sessions (effective_user, started_at_us);
CREATE INDEX sessions_target ON sessions (cluster, namespace, pod);
CREATE INDEX sessions_status ON sessions (status);

CREATE TABLE frames (
    session_id          TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    idx                 INTEGER NOT NULL,
    file_offset         INTEGER NOT NULL,
    compressed_len      INTEGER NOT NULL,
    first_event_us      INTEGER NOT NULL,
    last_event_us       INTEGER NOT NULL,
    event_count         INTEGER NOT NULL,
    first_event_index   INTEGER NOT NULL,
    chain_hash          BLOB NOT NULL,
    keyframe            BLOB,
    PRIMARY KEY (session_id, idx)
) STRICT;

-- One row per forwarded API request, completed when its response ends.
CREATE TABLE api_requests (
    id                  TEXT PRIMARY KEY NOT NULL,
    time_us             INTEGER NOT NULL,
    initiator_issuer    TEXT NOT NULL,
    initiator_subject   TEXT NOT NULL,
    initiator_username  TEXT NOT NULL,
    initiator_groups    TEXT NOT NULL,
    effective_user      TEXT NOT NULL,
    effective_groups    TEXT NOT NULL,
    effective_uid       TEXT NOT NULL,
    cluster             TEXT NOT NULL,
    verb                TEXT NOT NULL,
    api_group           TEXT NOT NULL,
    api_version         TEXT NOT NULL,
    resource            TEXT NOT NULL,
    subresource         TEXT NOT NULL,
    namespace           TEXT NOT NULL,
    name                TEXT NOT NULL,
    path                TEXT NOT NULL,
    decision            TEXT NOT NULL,
    reason              TEXT NOT NULL,
    approval_id         TEXT,
    status_code         INTEGER,
    upstream_audit_id   TEXT,
    latency_us          INTEGER,
    bytes_in            INTEGER,
    bytes_out           INTEGER,
    session_id          TEXT,
    kubectl_session     TEXT,
    kubectl_command     TEXT
) STRICT;

CREATE INDEX api_requests_time ON api_requests (time_us);
CREATE INDEX api_requests_initiator ON api_requests (initiator_username, time_us);
CREATE INDEX api_requests_session ON api_requests (session_id);

-- The audit trail: one event per decision, appended (denials included), `seq` is the cursor
-- SIEM sinks export from.
CREATE TABLE audit_events (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  TEXT NOT NULL UNIQUE,
    request_id          TEXT NOT NULL,
    time_us             INTEGER NOT NULL,
    initiator_issuer    TEXT NOT NULL,
    initiator_subject   TEXT NOT NULL,
    initiator_username  TEXT NOT NULL,
    initiator_groups    TEXT NOT NULL,
    effective_user      TEXT NOT NULL,
    effective_groups    TEXT NOT NULL,
    effective_uid       TEXT NOT NULL,
    cluster             TEXT NOT NULL,
    verb                TEXT NOT NULL,
    api_group           TEXT NOT NULL,
    api_version         TEXT NOT NULL,
    resource            TEXT NOT NULL,
    subresource         TEXT NOT NULL,
    namespace           TEXT NOT NULL,
    name                TEXT NOT NULL,
    decision            TEXT NOT NULL,
    reason              TEXT NOT NULL,
    approval_id         TEXT,
    status_code         INTEGER,
    upstream_audit_id   TEXT,
    latency_us          INTEGER,
    bytes_in            INTEGER,
    bytes_out           INTEGER,
    session_id          TEXT
) STRICT;

CREATE INDEX audit_events_time ON audit_events (time_us);
CREATE INDEX audit_events_initiator ON audit_events (initiator_username, time_us);
CREATE INDEX audit_events_request ON audit_events (request_id);
CREATE INDEX audit_events_session ON audit_events (session_id);

-- Searchable text: one row per frame of output and one per typed line. `session_text_fts`
-- indexes `body` with the rows kept here (external content), so a session's rows are found
-- and deleted through an ordinary index.
CREATE TABLE session_text (
    id                  INTEGER PRIMARY KEY,
    session_id          TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq                 INTEGER NOT NULL,
    source              TEXT NOT NULL CHECK (source IN ('output', 'input')),
    time_us             INTEGER NOT NULL,
    body                TEXT NOT NULL,
    UNIQUE (session_id, seq)
) STRICT;

CREATE VIRTUAL TABLE session_text_fts USING fts5 (
    body,
    content = 'session_text',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER session_text_ai AFTER INSERT ON session_text BEGIN
    INSERT INTO session_text_fts (rowid, body) VALUES (new.id, new.body);
END;

CREATE TRIGGER session_text_ad AFTER DELETE ON session_text BEGIN
    INSERT INTO session_text_fts (session_text_fts, rowid, body)
    VALUES ('delete', old.id, old.body);
END;

CREATE TRIGGER session_text_au AFTER UPDATE ON session_text BEGIN
    INSERT INTO session_text_fts (session_text_fts, rowid, body)
    VALUES ('delete', old.id, old.body);
    INSERT INTO session_text_fts (rowid, body) VALUES (new.id, new.body);
END;
