-- Schema version 4: in cluster mode, the replica that recorded a session and that audited a
-- request (empty on one machine).
ALTER TABLE sessions ADD COLUMN replica_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN replica_id TEXT NOT NULL DEFAULT '';
