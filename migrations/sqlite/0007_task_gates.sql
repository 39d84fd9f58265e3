-- no-transaction
-- Quality gates: each task_complete's verdict (pass, conditional, fail, with
-- the CAWS score) and every gate's result, and a new task state,
-- `needs_review` (a tier 1 task waiting for a person's sign-off).
--
-- SQLite cannot change a CHECK constraint, so `tasks` is rebuilt (SQLite's
-- documented 12-step way): foreign keys are off while the old table is
-- dropped and the new one renamed, which is why this file runs outside
-- sqlx's transaction and opens its own.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE tasks_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant           TEXT    NOT NULL,
    title            TEXT    NOT NULL,
    description      TEXT    NOT NULL,
    spec             TEXT,
    spec_id          TEXT,
    task_type        TEXT    NOT NULL,
    type_confidence  REAL    NOT NULL,
    type_source      TEXT    NOT NULL CHECK (type_source IN ('given', 'detected')),
    risk_tier        INTEGER NOT NULL CHECK (risk_tier BETWEEN 1 AND 3),
    tier_reason      TEXT    NOT NULL,
    priority         INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    required         TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('queued', 'assigned', 'claimed', 'needs_review', 'completed', 'cancelled')),
    assigned_agent   TEXT,
    holder           TEXT,
    lease_expires_at INTEGER,
    progress         INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    submitted_by     TEXT    NOT NULL,
    summary          TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    claimed_at       INTEGER,
    completed_at     INTEGER
);
INSERT INTO tasks_new SELECT * FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;
CREATE INDEX tasks_by_state ON tasks (tenant, state, priority DESC, id);
CREATE INDEX tasks_by_holder ON tasks (tenant, holder, state);
CREATE INDEX tasks_by_assignee ON tasks (tenant, assigned_agent, state);
CREATE INDEX tasks_by_lease ON tasks (tenant, lease_expires_at) WHERE lease_expires_at IS NOT NULL;

-- One row per task_complete that ran the gates. `review` is a person's
-- decision on a tier 1 task (`arbiter task approve|reject`).
CREATE TABLE task_verdicts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id      INTEGER NOT NULL REFERENCES tasks (id),
    tenant       TEXT    NOT NULL,
    agent        TEXT    NOT NULL,
    risk_tier    INTEGER NOT NULL,
    verdict      TEXT    NOT NULL CHECK (verdict IN ('pass', 'conditional', 'fail')),
    score        REAL    NOT NULL,   -- 0 to 100
    coverage     REAL,               -- fraction read from a coverage gate
    mutation     REAL,               -- fraction read from a mutation gate
    reasons      TEXT    NOT NULL,   -- JSON array of sentences
    decided_at   INTEGER NOT NULL,
    review       TEXT CHECK (review IN ('approved', 'rejected')),
    reviewed_by  TEXT,
    review_note  TEXT,
    reviewed_at  INTEGER
);
CREATE INDEX task_verdicts_by_task ON task_verdicts (task_id, id);

-- Every gate of a verdict, in the policy's order.
CREATE TABLE task_gate_results (
    verdict_id  INTEGER NOT NULL REFERENCES task_verdicts (id),
    ord         INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    command     TEXT    NOT NULL,
    passed      INTEGER NOT NULL,
    rule_id     TEXT,                -- GATE-00x, or the policy rule that refused it
    exit_code   INTEGER,
    duration_ms INTEGER NOT NULL,
    measured    REAL,                -- the coverage or mutation fraction it printed
    detail      TEXT    NOT NULL,
    output_tail TEXT    NOT NULL,    -- the last bytes of stdout and stderr, capped
    PRIMARY KEY (verdict_id, ord)
);

COMMIT;
PRAGMA foreign_keys = ON;
