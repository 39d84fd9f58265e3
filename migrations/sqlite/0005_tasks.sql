-- Tasks, the agents that work them, how each task was routed (with every
-- candidate's score), each task's history, and each agent's record per task
-- type. Times are unix milliseconds, UTC. Rows are never deleted.

-- A task moves queued -> assigned -> claimed -> completed, or to cancelled;
-- a lapsed lease sends it back to queued. A claim is one conditional UPDATE
-- (`... WHERE state = 'queued'`), so only one agent can win it.
CREATE TABLE tasks (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant           TEXT    NOT NULL,
    title            TEXT    NOT NULL,
    description      TEXT    NOT NULL,
    spec             TEXT,              -- the working spec's text, as submitted
    spec_id          TEXT,
    task_type        TEXT    NOT NULL,
    type_confidence  REAL    NOT NULL,
    type_source      TEXT    NOT NULL CHECK (type_source IN ('given', 'detected')),
    risk_tier        INTEGER NOT NULL CHECK (risk_tier BETWEEN 1 AND 3),
    tier_reason      TEXT    NOT NULL,
    priority         INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    required         TEXT    NOT NULL,  -- JSON: {languages, tools}
    state            TEXT    NOT NULL CHECK (state IN ('queued', 'assigned', 'claimed', 'completed', 'cancelled')),
    assigned_agent   TEXT,              -- routing's choice
    holder           TEXT,              -- the agent holding (claimed) or that completed it
    lease_expires_at INTEGER,           -- assigned: time to claim; claimed: the claim's end
    progress         INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,  -- claims so far
    submitted_by     TEXT    NOT NULL,
    summary          TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    claimed_at       INTEGER,
    completed_at     INTEGER
);
CREATE INDEX tasks_by_state ON tasks (tenant, state, priority DESC, id);
CREATE INDEX tasks_by_holder ON tasks (tenant, holder, state);
CREATE INDEX tasks_by_assignee ON tasks (tenant, assigned_agent, state);
CREATE INDEX tasks_by_lease ON tasks (tenant, lease_expires_at) WHERE lease_expires_at IS NOT NULL;

-- Every change of a task, with who made it (`arbiter` for lapsed leases).
CREATE TABLE task_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id  INTEGER NOT NULL REFERENCES tasks (id),
    at       INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    actor    TEXT    NOT NULL,
    progress INTEGER,
    note     TEXT
);
CREATE INDEX task_events_by_task ON task_events (task_id, id);

-- Agents by identity within a tenant; capabilities are JSON arrays.
CREATE TABLE agents (
    tenant               TEXT    NOT NULL,
    name                 TEXT    NOT NULL,
    task_types           TEXT    NOT NULL,
    languages            TEXT    NOT NULL,
    tools                TEXT    NOT NULL,
    max_concurrent_tasks INTEGER NOT NULL CHECK (max_concurrent_tasks >= 1),
    registered_at        INTEGER NOT NULL,
    last_seen_at         INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- One row per routing decision; the round-robin turn is the newest
-- round_robin decision's chosen agent.
CREATE TABLE routing_decisions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant       TEXT    NOT NULL,
    task_id      INTEGER NOT NULL REFERENCES tasks (id),
    strategy     TEXT    NOT NULL,
    seed         INTEGER NOT NULL,  -- the u64 seed, bit for bit
    chosen_agent TEXT,              -- NULL: nobody could take it (queued)
    rationale    TEXT    NOT NULL,
    decided_at   INTEGER NOT NULL
);
CREATE INDEX routing_decisions_by_task ON routing_decisions (task_id);
CREATE INDEX routing_decisions_by_strategy ON routing_decisions (tenant, strategy, id);

-- Every candidate of a decision: its score, or why it was excluded.
CREATE TABLE routing_scores (
    decision_id INTEGER NOT NULL REFERENCES routing_decisions (id),
    rank        INTEGER NOT NULL,  -- 0 is the best; excluded candidates come last
    agent       TEXT    NOT NULL,
    eligible    INTEGER NOT NULL,
    score       REAL,
    detail      TEXT    NOT NULL,
    PRIMARY KEY (decision_id, rank)
);

-- Each agent's record per task type: outcomes (completions and lapsed
-- claims) and the time from claim to completion, summed over successes.
CREATE TABLE agent_performance (
    tenant      TEXT    NOT NULL,
    agent       TEXT    NOT NULL,
    task_type   TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    successes   INTEGER NOT NULL DEFAULT 0,
    failures    INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, agent, task_type)
);
