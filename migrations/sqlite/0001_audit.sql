-- Hash-chained audit records, one chain per tenant. Rows are only ever
-- inserted; `arbiter audit verify` recomputes every hash.
CREATE TABLE audit_records (
    tenant        TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    ts            TEXT    NOT NULL,
    session_id    TEXT    NOT NULL,
    client_name   TEXT    NOT NULL,
    tool          TEXT    NOT NULL,
    args_sha256   TEXT    NOT NULL,
    args_redacted TEXT    NOT NULL,
    decision      TEXT    NOT NULL,
    rule_ids      TEXT    NOT NULL,
    outcome       TEXT    NOT NULL,
    detail        TEXT    NOT NULL,
    duration_us   INTEGER NOT NULL,
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL,
    PRIMARY KEY (tenant, seq)
) WITHOUT ROWID;
