-- Change-budget totals for CAWS working specs: one row per file a spec's work
-- has touched, with the lines changed in it so far. Totals are sums over a
-- spec's rows, so they survive restarts and are shared by every process.
CREATE TABLE IF NOT EXISTS change_budget (
    tenant      TEXT    NOT NULL,
    spec_id     TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    lines       INTEGER NOT NULL DEFAULT 0,
    writes      INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (tenant, spec_id, path)
);
