-- Schema version 2: what the gateway knows about each audited request beyond its decision:
-- how the initiator authenticated, the client's socket address and user agent, the request
-- path, and kubectl's `Kubectl-Session` / `Kubectl-Command`, so the requests of one kubectl
-- invocation can be grouped into one API session.

ALTER TABLE audit_events ADD COLUMN initiator_method TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN client_addr TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN path TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN kubectl_session TEXT;
ALTER TABLE audit_events ADD COLUMN kubectl_command TEXT;

CREATE INDEX audit_events_kubectl_session ON audit_events (kubectl_session, time_us);
CREATE INDEX audit_events_effective ON audit_events (effective_user, time_us);
