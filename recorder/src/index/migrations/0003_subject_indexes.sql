-- Sessions and audit events are found by the initiator's username or subject
-- (`initiator = ?`): with an index on each column, SQLite answers the OR with two index
-- lookups instead of scanning the table.
CREATE INDEX sessions_initiator_subject ON sessions (initiator_subject, started_at_us);
CREATE INDEX audit_events_initiator_subject ON audit_events (initiator_subject, time_us);
