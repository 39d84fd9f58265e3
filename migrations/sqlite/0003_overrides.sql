-- Override requests: an agent asks to waive one rule (optionally within a
-- scope); a person approves, denies or revokes. `expired` is not stored: an
-- approval past `expires_at` reads as expired. Rows are never deleted.
CREATE TABLE overrides (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant            TEXT    NOT NULL,
    agent             TEXT    NOT NULL,
    session_id        TEXT    NOT NULL,
    rule_id           TEXT    NOT NULL,
    reason            TEXT    NOT NULL,
    scope             TEXT    NOT NULL,  -- JSON: {paths?, command?, task_id?}
    requested_minutes INTEGER,
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'revoked')),
    created_at        INTEGER NOT NULL,  -- unix seconds, UTC
    decided_at        INTEGER,
    decided_by        TEXT,
    note              TEXT,
    expires_at        INTEGER
);
CREATE INDEX overrides_by_agent ON overrides (tenant, agent, created_at);
CREATE INDEX overrides_by_state ON overrides (tenant, state);

-- Every state change of a request, with who made it.
CREATE TABLE override_events (
    override_id INTEGER NOT NULL REFERENCES overrides (id),
    at          INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    note        TEXT
);
CREATE INDEX override_events_by_override ON override_events (override_id, at);

-- The waivers that lifted a rule for a call (comma-separated ids).
ALTER TABLE audit_records ADD COLUMN waiver_ids TEXT NOT NULL DEFAULT '';
