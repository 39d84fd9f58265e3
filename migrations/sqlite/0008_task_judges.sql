-- The model judges: for each verdict that put a task to them, how the gates'
-- verdict and each judge's answer were combined, and every call made (the
-- request, the raw reply, the parsed answer or why there was none, tokens,
-- cost and time). Tokens and cost per task are sums over its calls.

CREATE TABLE task_arbitrations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    verdict_id    INTEGER NOT NULL REFERENCES task_verdicts (id),
    task_id       INTEGER NOT NULL REFERENCES tasks (id),
    gates_verdict TEXT    NOT NULL CHECK (gates_verdict IN ('pass', 'conditional', 'fail')),
    verdict       TEXT    NOT NULL CHECK (verdict IN ('pass', 'conditional', 'fail')),
    confidence    REAL    NOT NULL,   -- the winner's share of the weight, 0 to 1
    needs_review  INTEGER NOT NULL,
    reasons       TEXT    NOT NULL,   -- JSON array of sentences
    votes         TEXT    NOT NULL,   -- JSON array of {source, verdict, weight}
    decided_at    INTEGER NOT NULL
);
CREATE INDEX task_arbitrations_by_task ON task_arbitrations (task_id, id);

-- One row per try of one judge; `ord` keeps the order across judges.
CREATE TABLE task_judge_calls (
    arbitration_id    INTEGER NOT NULL REFERENCES task_arbitrations (id),
    ord               INTEGER NOT NULL,
    task_id           INTEGER NOT NULL REFERENCES tasks (id),
    judge             TEXT    NOT NULL,
    api               TEXT    NOT NULL CHECK (api IN ('ollama', 'openai')),
    url               TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    attempt           INTEGER NOT NULL,
    started_at        INTEGER NOT NULL,
    duration_ms       INTEGER NOT NULL,
    request           TEXT,              -- the body sent; NULL when not called (breaker open)
    http_status       INTEGER,
    raw_answer        TEXT,              -- the reply body, capped
    answer            TEXT,              -- JSON {verdict, score, confidence, reasons} when valid
    rule_id           TEXT,              -- JUDGE-001 malformed, -002 call failed, -003 breaker open
    error             TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    cost              REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (arbitration_id, ord)
);
CREATE INDEX task_judge_calls_by_task ON task_judge_calls (task_id);
