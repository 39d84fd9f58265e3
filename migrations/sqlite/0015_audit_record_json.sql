-- The audit index keeps each record as its JSON text (the journal's line)
-- beside its key, instead of one column per field: indexing binds three
-- values a record instead of seventeen, and the journal's line is stored as
-- it is, not parsed into fields first (the indexer was about a third of the
-- server's CPU under a burst of reads). The fields can be queried by name
-- through the view `audit_record_fields`. (Generated columns on the table
-- itself were tried: SQLite computes even virtual ones at every insert.)
CREATE TABLE audit_records_json (
    tenant TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    record TEXT    NOT NULL,
    PRIMARY KEY (tenant, seq)
) WITHOUT ROWID;

INSERT INTO audit_records_json (tenant, seq, record)
SELECT tenant, seq, json_object(
    'tenant', tenant, 'seq', seq, 'ts', ts, 'session_id', session_id,
    'client_name', client_name, 'tool', tool, 'args_sha256', args_sha256,
    'args_redacted', args_redacted, 'decision', decision, 'rule_ids', rule_ids,
    'outcome', outcome, 'detail', detail, 'duration_us', duration_us,
    'waiver_ids', waiver_ids, 'task_ids', task_ids, 'prev_hash', prev_hash, 'hash', hash)
FROM audit_records;

DROP TABLE audit_records;
ALTER TABLE audit_records_json RENAME TO audit_records;

CREATE VIEW audit_record_fields AS
SELECT tenant, seq,
    json_extract(record, '$.ts')            AS ts,
    json_extract(record, '$.session_id')    AS session_id,
    json_extract(record, '$.client_name')   AS client_name,
    json_extract(record, '$.tool')          AS tool,
    json_extract(record, '$.args_sha256')   AS args_sha256,
    json_extract(record, '$.args_redacted') AS args_redacted,
    json_extract(record, '$.decision')      AS decision,
    json_extract(record, '$.rule_ids')      AS rule_ids,
    json_extract(record, '$.outcome')       AS outcome,
    json_extract(record, '$.detail')        AS detail,
    json_extract(record, '$.duration_us')   AS duration_us,
    ifnull(json_extract(record, '$.waiver_ids'), '') AS waiver_ids,
    ifnull(json_extract(record, '$.task_ids'), '')   AS task_ids,
    json_extract(record, '$.prev_hash')     AS prev_hash,
    json_extract(record, '$.hash')          AS hash
FROM audit_records;
