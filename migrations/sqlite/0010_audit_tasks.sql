-- Audit records name the tasks the calling agent held when it made a file or
-- terminal call (comma-separated `T-12`; empty before this and for calls
-- made under no task). The hash covers the field only when it is not empty,
-- so older chains verify as they did. Each link is also a row here, so a
-- task's calls are found without scanning the chain.
ALTER TABLE audit_records ADD COLUMN task_ids TEXT NOT NULL DEFAULT '';

CREATE TABLE audit_task_links (
    task_id INTEGER NOT NULL,
    tenant  TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (task_id, tenant, seq)
) WITHOUT ROWID;
