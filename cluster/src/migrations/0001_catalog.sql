-- Schema version 1: the catalog of cluster mode. The same facts as the SQLite index
-- (recorder/src/index/migrations), shaped for PostgreSQL:
--
-- * lists (groups, command argv) are text[];
-- * session_text and audit_events are partitioned by month (custody creates the partitions,
--   see cluster/src/partition.rs), so a search or a time-bounded query reads only the months
--   it covers, and old months can be detached and archived whole;
-- * search uses custody's own tokens (cluster/src/search.rs) in a GIN index: PostgreSQL's
--   text parser keeps `/etc/passwd` as one token, custody's splits it as the SQLite index does;
-- * each audit row keeps the id of the transaction that wrote it (`txid`): the follow cursor
--   reads only rows older than every transaction still running, so a batch that commits late
--   is never skipped.

CREATE TABLE sessions (
    id                  text PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('exec', 'attach', 'port-forward', 'api')),
    initiator_issuer    text NOT NULL,
    initiator_subject   text NOT NULL,
    initiator_username  text NOT NULL,
    initiator_groups    text[] NOT NULL,
    effective_user      text NOT NULL,
    effective_groups    text[] NOT NULL,
    effective_uid       text NOT NULL,
    cluster             text NOT NULL,
    namespace           text NOT NULL,
    pod                 text NOT NULL,
    container           text NOT NULL,
    command             text[] NOT NULL,
    tty                 boolean NOT NULL,
    term_cols           integer,
    term_rows           integer,
    client_addr         text NOT NULL,
    user_agent          text NOT NULL,
    approval_id         text,
    gateway_id          text NOT NULL,
    started_at_us       bigint NOT NULL,
    ended_at_us         bigint,
    status              text NOT NULL
                        CHECK (status IN ('open', 'complete', 'interrupted', 'terminated')),
    end_reason          text,
    exit_code           integer,
    exit_message        text,
    event_count         bigint NOT NULL,
    frame_count         integer NOT NULL,
    chain_head          text,
    file_path           text NOT NULL,
    file_size           bigint NOT NULL,
    damage              text,
    replica_id          text NOT NULL DEFAULT ''
);

CREATE INDEX sessions_started ON sessions (started_at_us DESC);
CREATE INDEX sessions_initiator ON sessions (initiator_username, started_at_us DESC);
CREATE INDEX sessions_initiator_subject ON sessions (initiator_subject, started_at_us DESC);
CREATE INDEX sessions_effective ON sessions (effective_user, started_at_us DESC);
CREATE INDEX sessions_target ON sessions (cluster, namespace, pod);
CREATE INDEX sessions_open ON sessions (status) WHERE status = 'open';

CREATE TABLE frames (
    session_id          text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    idx                 integer NOT NULL,
    file_offset         bigint NOT NULL,
    compressed_len      bigint NOT NULL,
    first_event_us      bigint NOT NULL,
    last_event_us       bigint NOT NULL,
    event_count         integer NOT NULL,
    first_event_index   bigint NOT NULL,
    chain_hash          bytea NOT NULL,
    keyframe            bytea,
    PRIMARY KEY (session_id, idx)
);

-- Searchable text, partitioned by the start of its session: one row per frame of output and
-- one per typed line, with the distinct tokens of its body.
CREATE TABLE session_text (
    session_id          text NOT NULL,
    started_at_us       bigint NOT NULL,
    seq                 integer NOT NULL,
    source              text NOT NULL CHECK (source IN ('output', 'input')),
    time_us             bigint NOT NULL,
    body                text NOT NULL,
    tokens              text[] NOT NULL,
    PRIMARY KEY (session_id, started_at_us, seq)
) PARTITION BY RANGE (started_at_us);

CREATE INDEX session_text_tokens ON session_text USING gin (tokens);

-- The audit trail: one row per decision, completed when the response ends.
CREATE TABLE audit_events (
    txid                xid8 NOT NULL DEFAULT pg_current_xact_id(),
    id                  text NOT NULL,
    time_us             bigint NOT NULL,
    initiator_method    text NOT NULL,
    initiator_issuer    text NOT NULL,
    initiator_subject   text NOT NULL,
    initiator_username  text NOT NULL,
    initiator_groups    text[] NOT NULL,
    effective_user      text NOT NULL,
    effective_groups    text[] NOT NULL,
    effective_uid       text NOT NULL,
    client_addr         text NOT NULL,
    user_agent          text NOT NULL,
    cluster             text NOT NULL,
    verb                text NOT NULL,
    api_group           text NOT NULL,
    api_version         text NOT NULL,
    resource            text NOT NULL,
    subresource         text NOT NULL,
    namespace           text NOT NULL,
    name                text NOT NULL,
    path                text NOT NULL,
    decision            text NOT NULL,
    reason              text NOT NULL,
    status_code         integer,
    upstream_audit_id   text,
    latency_us          bigint,
    bytes_in            bigint,
    bytes_out           bigint,
    kubectl_session     text,
    kubectl_command     text,
    replica_id          text NOT NULL DEFAULT '',
    approval_id         text,
    PRIMARY KEY (id, time_us)
) PARTITION BY RANGE (time_us);

CREATE INDEX audit_events_time ON audit_events (time_us DESC);
CREATE INDEX audit_events_txid ON audit_events (txid);
CREATE INDEX audit_events_id ON audit_events (id);
CREATE INDEX audit_events_initiator ON audit_events (initiator_username, time_us DESC);
CREATE INDEX audit_events_initiator_subject ON audit_events (initiator_subject, time_us DESC);
CREATE INDEX audit_events_effective ON audit_events (effective_user, time_us DESC);
CREATE INDEX audit_events_kubectl_session ON audit_events (kubectl_session, time_us DESC);

-- Access requests and grants (the approvals of the one-machine `approvals.sqlite`, with the
-- same conditional updates: decided once, never by the requester). Times in Unix seconds.
CREATE TABLE access_requests (
    id               text PRIMARY KEY,
    requester        text NOT NULL,
    scope            text NOT NULL,
    reason           text NOT NULL,
    duration_seconds bigint NOT NULL,
    state            text NOT NULL,
    created_at       bigint NOT NULL,
    decided_by       text,
    decided_at       bigint,
    decision_reason  text,
    expires_at       bigint,
    groups           text NOT NULL
);

CREATE INDEX access_requests_by_requester ON access_requests (requester, state, expires_at);

-- Replica membership: each replica holds a lease it renews; `epoch` grows each time a replica
-- (re)joins or its lease is taken, and every write a replica makes about its sessions names
-- the epoch it holds, so a replica whose lease was taken (a zombie) cannot write.
CREATE TABLE replicas (
    id               text PRIMARY KEY,
    epoch            bigint NOT NULL,
    state            text NOT NULL CHECK (state IN ('active', 'draining', 'gone')),
    url              text NOT NULL,
    key_fingerprint  text NOT NULL,
    version          text NOT NULL,
    started_at       timestamptz NOT NULL,
    heartbeat_at     timestamptz NOT NULL,
    lease_until      timestamptz NOT NULL
);

-- The live sessions of every replica, while they run: who holds each, under which epoch.
CREATE TABLE live_sessions (
    id               text PRIMARY KEY,
    replica_id       text NOT NULL,
    epoch            bigint NOT NULL,
    approval_id      text,
    summary          jsonb NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX live_sessions_replica ON live_sessions (replica_id);
CREATE INDEX live_sessions_approval ON live_sessions (approval_id) WHERE approval_id IS NOT NULL;

-- Commands for a replica (end a session, end a grant's sessions): durable, so none is lost
-- while its replica is busy or reconnecting; NOTIFY on `custody_commands` only wakes it.
CREATE TABLE commands (
    id               bigserial PRIMARY KEY,
    replica_id       text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('end_session', 'end_grant')),
    target           text NOT NULL,
    reason           text NOT NULL,
    issued_by        text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    done_at          timestamptz,
    outcome          text
);

CREATE INDEX commands_pending ON commands (replica_id, id) WHERE done_at IS NULL;

-- Facts every replica must agree on, set by the first replica that joins: the fingerprint of
-- the signing key (a replica with another key refuses to join).
CREATE TABLE cluster_settings (
    name             text PRIMARY KEY,
    value            text NOT NULL,
    set_by           text NOT NULL,
    set_at           timestamptz NOT NULL DEFAULT now()
);
