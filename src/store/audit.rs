//! The audit trail: one record per `tools/call`, hash-chained so that any
//! edited, inserted or removed record (short of cutting the newest ones) breaks
//! verification.
//!
//! On SQLite, records are committed to an append-only journal before the
//! reply goes out and indexed into the store behind it (see `journal.rs`);
//! `verify` and `tail` read the store after catching up with the journal. On
//! PostgreSQL the database is the commit point (`Store::audit_append`, the
//! tenant's head row locked), so processes on several hosts share one chain.

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// A record could not be committed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit record could not be committed: {0}")]
pub struct AuditError(pub String);

/// Hash that precedes the first record of every chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest string argument kept verbatim in the redacted copy.
const MAX_KEPT_STRING: usize = 256;
/// Cap on the whole redacted copy.
const MAX_REDACTED_BYTES: usize = 2048;
/// Cap on the outcome detail.
const MAX_DETAIL_BYTES: usize = 1024;

/// What one call produced, before it joins the chain.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub ts: String,
    pub session_id: String,
    pub client_name: String,
    pub tool: String,
    pub args_sha256: String,
    pub args_redacted: String,
    /// `allow`, `deny`, `needs_override`, or `none` when no decision was reached.
    pub decision: String,
    pub rule_ids: String,
    /// `ok`, `refused`, `failed` or `invalid`.
    pub outcome: String,
    pub detail: String,
    pub duration_us: i64,
    /// Waivers that lifted a rule for this call (comma-separated ids).
    pub waiver_ids: String,
    /// The tasks the calling agent held when it made a file or terminal
    /// call (comma-separated, `T-12`); empty otherwise.
    pub task_ids: String,
}

/// A committed record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AuditRecord {
    pub tenant: String,
    pub seq: i64,
    pub ts: String,
    pub session_id: String,
    pub client_name: String,
    pub tool: String,
    pub args_sha256: String,
    pub args_redacted: String,
    pub decision: String,
    pub rule_ids: String,
    pub outcome: String,
    pub detail: String,
    pub duration_us: i64,
    /// Waivers that lifted a rule for this call; absent from older records.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub waiver_ids: String,
    /// The tasks the call was made under; absent from older records.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task_ids: String,
    pub prev_hash: String,
    pub hash: String,
}

/// A journal line to be indexed as it is: the record's JSON text and the
/// fields the index needs from it, read without building the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexLine<'a> {
    pub tenant: std::borrow::Cow<'a, str>,
    pub seq: i64,
    /// Comma-separated task ids (`task_ids`), empty for most records.
    pub task_ids: std::borrow::Cow<'a, str>,
    /// The whole record, as JSON.
    pub json: &'a str,
}

impl<'a> IndexLine<'a> {
    /// Read `line` (one record's JSON). The whole line is checked to be JSON
    /// (other fields are skipped, not built), so a torn or garbled line is
    /// refused here rather than stored.
    pub fn parse(line: &'a str) -> Result<Self, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Key<'a> {
            #[serde(borrow)]
            tenant: std::borrow::Cow<'a, str>,
            seq: i64,
            #[serde(default, borrow)]
            task_ids: std::borrow::Cow<'a, str>,
        }
        let key: Key<'a> = serde_json::from_str(line)?;
        Ok(Self {
            tenant: key.tenant,
            seq: key.seq,
            task_ids: key.task_ids,
            json: line,
        })
    }
}

/// The newest record of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

/// The fields a record's hash covers, in a fixed order (everything but `hash`).
#[derive(Serialize)]
struct HashedFields<'a> {
    tenant: &'a str,
    seq: i64,
    ts: &'a str,
    session_id: &'a str,
    client_name: &'a str,
    tool: &'a str,
    args_sha256: &'a str,
    args_redacted: &'a str,
    decision: &'a str,
    rule_ids: &'a str,
    outcome: &'a str,
    detail: &'a str,
    duration_us: i64,
    // Skipped when empty, so records written before waivers hash as they did.
    #[serde(skip_serializing_if = "str::is_empty")]
    waiver_ids: &'a str,
    // Likewise for records written before tasks were attributed.
    #[serde(skip_serializing_if = "str::is_empty")]
    task_ids: &'a str,
    prev_hash: &'a str,
}

#[cfg(test)]
impl AuditEntry {
    /// A plain allowed `file_read` entry, the `i`th of a test's.
    pub(crate) fn sample(i: i64) -> Self {
        Self {
            ts: format!("2026-01-01T00:00:{:02}Z", i % 60),
            session_id: "s".into(),
            client_name: "c".into(),
            tool: "file_read".into(),
            args_sha256: "0".into(),
            args_redacted: "{}".into(),
            decision: "allow".into(),
            rule_ids: String::new(),
            outcome: "ok".into(),
            detail: String::new(),
            duration_us: i,
            waiver_ids: String::new(),
            task_ids: String::new(),
        }
    }
}

#[cfg(test)]
impl AuditRecord {
    /// Records 1..=n of a `default` chain, the `seq`th made by `entry(seq)`.
    pub(crate) fn sample_chain(n: i64, entry: impl Fn(i64) -> AuditEntry) -> Vec<Self> {
        let mut records: Vec<Self> = Vec::new();
        for seq in 1..=n {
            let prev = records.last().map_or(GENESIS_HASH, |r| r.hash.as_str());
            let record = Self::from_entry("default", seq, prev, &entry(seq));
            records.push(record);
        }
        records
    }
}

impl AuditRecord {
    /// The record stored as `json` under the key (`tenant`, `seq`); an error
    /// naming that key when the JSON does not decode or holds another record.
    pub fn decode(json: &str, tenant: &str, seq: i64) -> Result<Self, super::StoreError> {
        let record: Self = serde_json::from_str(json).map_err(|e| {
            super::StoreError::Database(format!(
                "audit record {seq} of `{tenant}` does not decode: {e}"
            ))
        })?;
        if record.tenant != tenant || record.seq != seq {
            return Err(super::StoreError::Database(format!(
                "audit record {seq} of `{tenant}` holds record {} of `{}`",
                record.seq, record.tenant
            )));
        }
        Ok(record)
    }

    pub fn from_entry(tenant: &str, seq: i64, prev_hash: &str, e: &AuditEntry) -> Self {
        Self::from_owned_entry(tenant, seq, prev_hash, e.clone())
    }

    /// [`Self::from_entry`], taking the entry's strings instead of copying them.
    pub fn from_owned_entry(tenant: &str, seq: i64, prev_hash: &str, e: AuditEntry) -> Self {
        let mut record = Self::unhashed(tenant, seq, prev_hash, e);
        record.hash = record.compute_hash();
        record
    }

    /// The record of `e`, hashed, with its journal line (its JSON and `\n`)
    /// appended to `line`: the canonical JSON the hash covers is the line up
    /// to its `hash` field, so the fields are serialized once, not twice.
    pub fn from_owned_entry_with_line(
        tenant: &str,
        seq: i64,
        prev_hash: &str,
        e: AuditEntry,
        line: &mut Vec<u8>,
    ) -> Self {
        let mut record = Self::unhashed(tenant, seq, prev_hash, e);
        let start = line.len();
        serde_json::to_writer(&mut *line, &record.hashed_fields()).expect("plain fields serialize");
        record.hash = sha256_hex(&line[start..]);
        line.pop(); // the closing brace: `hash` comes last
        line.extend_from_slice(br#","hash":""#);
        line.extend_from_slice(record.hash.as_bytes());
        line.extend_from_slice(b"\"}\n");
        record
    }

    fn unhashed(tenant: &str, seq: i64, prev_hash: &str, e: AuditEntry) -> Self {
        let detail = if e.detail.len() <= MAX_DETAIL_BYTES {
            e.detail
        } else {
            cap(&e.detail, MAX_DETAIL_BYTES)
        };
        AuditRecord {
            tenant: tenant.to_string(),
            seq,
            ts: e.ts,
            session_id: e.session_id,
            client_name: e.client_name,
            tool: e.tool,
            args_sha256: e.args_sha256,
            args_redacted: e.args_redacted,
            decision: e.decision,
            rule_ids: e.rule_ids,
            outcome: e.outcome,
            detail,
            duration_us: e.duration_us,
            waiver_ids: e.waiver_ids,
            task_ids: e.task_ids,
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        }
    }

    /// SHA-256 over the canonical JSON of every field but `hash`.
    pub fn compute_hash(&self) -> String {
        let bytes = serde_json::to_vec(&self.hashed_fields()).expect("plain fields serialize");
        sha256_hex(&bytes)
    }

    fn hashed_fields(&self) -> HashedFields<'_> {
        HashedFields {
            tenant: &self.tenant,
            seq: self.seq,
            ts: &self.ts,
            session_id: &self.session_id,
            client_name: &self.client_name,
            tool: &self.tool,
            args_sha256: &self.args_sha256,
            args_redacted: &self.args_redacted,
            decision: &self.decision,
            rule_ids: &self.rule_ids,
            outcome: &self.outcome,
            detail: &self.detail,
            duration_us: self.duration_us,
            waiver_ids: &self.waiver_ids,
            task_ids: &self.task_ids,
            prev_hash: &self.prev_hash,
        }
    }
}

/// `VALUES (...), (...)` of `records` for an INSERT into PostgreSQL's
/// `audit_records`, columns in table order (its `COLUMNS`; SQLite's too
/// before migration 0015, which keeps each record as JSON: `IndexLine`).
pub(crate) fn push_audit_values<DB>(query: &mut sqlx::QueryBuilder<DB>, records: &[AuditRecord])
where
    DB: sqlx::Database,
    for<'t> &'t String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    query.push_values(records, |mut row, r| {
        row.push_bind(&r.tenant)
            .push_bind(r.seq)
            .push_bind(&r.ts)
            .push_bind(&r.session_id)
            .push_bind(&r.client_name)
            .push_bind(&r.tool)
            .push_bind(&r.args_sha256)
            .push_bind(&r.args_redacted)
            .push_bind(&r.decision)
            .push_bind(&r.rule_ids)
            .push_bind(&r.outcome)
            .push_bind(&r.detail)
            .push_bind(r.duration_us)
            .push_bind(&r.waiver_ids)
            .push_bind(&r.task_ids)
            .push_bind(&r.prev_hash)
            .push_bind(&r.hash);
    });
}

/// Result of walking a chain.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub tenant: String,
    pub records: u64,
    pub head_seq: i64,
    pub head_hash: String,
    /// The first record that does not verify, and why.
    pub first_bad: Option<BadRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BadRecord {
    pub seq: i64,
    pub reason: String,
}

/// Walk a tenant's chain from the start and recompute every link;
/// `progress` hears how many records were checked, after each page.
pub async fn verify_chain(
    store: &dyn Store,
    tenant: &str,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport {
        tenant: tenant.to_string(),
        records: 0,
        head_seq: 0,
        head_hash: GENESIS_HASH.to_string(),
        first_bad: None,
    };
    loop {
        progress(report.records);
        let page = store.audit_page(tenant, report.head_seq, 1000).await?;
        if page.is_empty() {
            return Ok(report);
        }
        for record in page {
            let reason = if record.seq != report.head_seq + 1 {
                Some(format!(
                    "expected seq {}, found {} (records are missing)",
                    report.head_seq + 1,
                    record.seq
                ))
            } else if record.prev_hash != report.head_hash {
                Some("prev_hash does not match the previous record's hash".to_string())
            } else if record.compute_hash() != record.hash {
                Some(
                    "the stored hash does not match the record's contents (the record was altered)"
                        .to_string(),
                )
            } else {
                None
            };
            if let Some(reason) = reason {
                report.first_bad = Some(BadRecord {
                    seq: record.seq,
                    reason,
                });
                return Ok(report);
            }
            report.records += 1;
            report.head_seq = record.seq;
            report.head_hash = record.hash;
        }
    }
}

/// SHA-256 of the arguments' canonical JSON (object keys sorted at every level).
pub fn arguments_sha256(args: &Map<String, Value>) -> String {
    let mut out = Vec::with_capacity(128);
    write_canonical_map(&mut out, args);
    sha256_hex(&out)
}

/// SHA-256 in lowercase hex. Encoded into a buffer at once: `hex::encode`
/// collects an iterator of chars, ~1.5% of the server's CPU under a burst
/// of reads (two hashes a call).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut out = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(bytes), &mut out).expect("64 hex digits for 32 bytes");
    String::from_utf8_lossy(&out).into_owned()
}

/// Compact JSON with every object's keys sorted (what the hash is taken of).
fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => write_canonical_map(out, map),
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, v);
            }
            out.push(b']');
        }
        // serde_json's own text for strings, numbers and literals.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

fn write_canonical_map(out: &mut Vec<u8>, map: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    write_object(out, entries, |out, _, v| write_canonical(out, v));
}

/// `{"key":value,...}` of `entries` (keys escaped by serde_json), each value
/// written by `write_value(out, key, value)`.
fn write_object<'a>(
    out: &mut Vec<u8>,
    entries: impl IntoIterator<Item = (&'a String, &'a Value)>,
    mut write_value: impl FnMut(&mut Vec<u8>, &'a str, &'a Value),
) {
    out.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        write_value(out, k, v);
    }
    out.push(b'}');
}

/// A copy of the arguments that is safe and small enough to keep: file contents
/// and edit strings are reduced to their size, values under secret-looking keys
/// are removed, long strings are cut, and the whole copy is capped.
pub fn redact_arguments(args: &Map<String, Value>) -> String {
    // Written straight out, not built as a redacted `Value` first (that was
    // a clone of every argument on every call).
    let mut out = Vec::with_capacity(64);
    write_redacted_map(&mut out, args);
    // serde_json writes UTF-8.
    let text = String::from_utf8(out).unwrap_or_default();
    if text.len() <= MAX_REDACTED_BYTES {
        text
    } else {
        serde_json::json!({ "_truncated": cap(&text, MAX_REDACTED_BYTES - 64) }).to_string()
    }
}

/// What [`redact_arguments`] writes of `map`: compact JSON, keys in the map's order.
fn write_redacted_map(out: &mut Vec<u8>, map: &Map<String, Value>) {
    write_object(out, map, |out, k, v| write_redacted(out, Some(k), v));
}

fn write_redacted(out: &mut Vec<u8>, key: Option<&str>, value: &Value) {
    match redaction(key, value) {
        Some(Redacted::Text(text)) => {
            let _ = serde_json::to_writer(&mut *out, &text);
        }
        Some(Redacted::Map(map)) => write_redacted_map(out, map),
        Some(Redacted::Items(items)) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_redacted(out, None, item);
            }
            out.push(b']');
        }
        None => {
            let _ = serde_json::to_writer(&mut *out, value);
        }
    }
}

/// How a value is written in a redacted copy; `None` when it is kept as it is.
enum Redacted<'a> {
    Text(String),
    Map(&'a Map<String, Value>),
    Items(&'a [Value]),
}

fn redaction<'a>(key: Option<&str>, value: &'a Value) -> Option<Redacted<'a>> {
    const CONTENT_KEYS: &[&str] = &["contents", "content", "old_string", "new_string"];
    const SECRET_MARKERS: &[&str] = &[
        "token",
        "secret",
        "password",
        "passwd",
        "api_key",
        "apikey",
        "authorization",
    ];
    if let Some(k) = key {
        if SECRET_MARKERS
            .iter()
            .any(|m| contains_ignoring_ascii_case(k, m))
        {
            return Some(Redacted::Text("<redacted>".to_string()));
        }
        if let Value::String(s) = value
            && CONTENT_KEYS.iter().any(|c| k.eq_ignore_ascii_case(c))
        {
            return Some(Redacted::Text(format!("<{} bytes>", s.len())));
        }
    }
    match value {
        Value::Object(map) => Some(Redacted::Map(map)),
        Value::Array(items) => Some(Redacted::Items(items)),
        Value::String(s) if s.len() > MAX_KEPT_STRING => Some(Redacted::Text(format!(
            "{}…<{} bytes>",
            cap(s, 64),
            s.len()
        ))),
        _ => None,
    }
}

/// Whether `haystack` contains `needle` (lowercase ASCII), in any case.
fn contains_ignoring_ascii_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Cut `s` to at most `max` bytes on a character boundary.
pub fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The redacted copy as first written (a redacted `Value`, then its text).
    fn redacted_as_first_written(key: Option<&str>, value: &Value) -> Value {
        match (redaction(key, value), value) {
            (Some(Redacted::Text(text)), _) => Value::String(text),
            (Some(Redacted::Map(map)), _) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), redacted_as_first_written(Some(k), v)))
                    .collect(),
            ),
            (Some(Redacted::Items(items)), _) => Value::Array(
                items
                    .iter()
                    .map(|v| redacted_as_first_written(None, v))
                    .collect(),
            ),
            (None, other) => other.clone(),
        }
    }

    fn argument_values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z\"\\\\é\\x00-\\x1f]{0,300}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    "(token|Content|contents|old_string|new_string|apiKey|path|x|é)",
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Written straight out, the redacted copy is the text of the redacted value.
        #[test]
        fn redacted_arguments_written_out_are_the_redacted_values_text(value in argument_values()) {
            let Value::Object(args) = json!({ "a": value.clone(), "content": "x", "b": [value] }) else {
                unreachable!()
            };
            let expected = redacted_as_first_written(None, &Value::Object(args.clone())).to_string();
            let written = redact_arguments(&args);
            if expected.len() <= MAX_REDACTED_BYTES {
                prop_assert_eq!(written, expected);
            } else {
                let truncated = written.starts_with(r#"{"_truncated":"#);
                prop_assert!(truncated, "not a truncated copy: {}", written);
            }
        }
    }

    /// The canonical form as first written (through `Value` and `String`):
    /// records already on chains were hashed with it.
    fn canonical_as_first_written(out: &mut String, value: &Value) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical_as_first_written(out, &map[k]);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical_as_first_written(out, v);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    #[test]
    fn the_arguments_hash_is_the_one_chains_were_made_with() {
        let args = json!({
            "z": [1, -2, 3.5, 1e300, u64::MAX, null, true, "t\"\\\n\u{1}é"],
            "a": {"nested": {"b": 1, "A": [], "é": {}}, "": ""},
            "Ünïcode key\t": "x".repeat(300),
            "contents": "line\r\n",
        });
        let Value::Object(map) = args else {
            unreachable!()
        };
        let mut first = String::new();
        canonical_as_first_written(&mut first, &Value::Object(map.clone()));
        assert_eq!(
            arguments_sha256(&map),
            hex::encode(Sha256::digest(first.as_bytes()))
        );
        let mut now = Vec::new();
        write_canonical_map(&mut now, &map);
        assert_eq!(String::from_utf8(now).unwrap(), first);
    }

    #[test]
    fn secret_and_content_keys_are_matched_in_any_case() {
        let args = json!({"API_Key": "k", "MyPassword": "p", "Contents": "abc", "note": "keep"});
        let Value::Object(map) = args else {
            unreachable!()
        };
        let kept: Value = serde_json::from_str(&redact_arguments(&map)).unwrap();
        assert_eq!(
            kept,
            json!({"API_Key": "<redacted>", "MyPassword": "<redacted>", "Contents": "<3 bytes>", "note": "keep"})
        );
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn canonical_hash_ignores_key_order() {
        let a = obj(json!({"b": 1, "a": {"y": [1, 2], "x": "s"}}));
        let b = obj(json!({"a": {"x": "s", "y": [1, 2]}, "b": 1}));
        assert_eq!(arguments_sha256(&a), arguments_sha256(&b));
        let c = obj(json!({"a": {"x": "s", "y": [2, 1]}, "b": 1}));
        assert_ne!(arguments_sha256(&a), arguments_sha256(&c));
    }

    #[test]
    fn contents_and_secrets_are_not_kept() {
        let args = obj(json!({
            "file_path": "a.txt",
            "contents": "-----BEGIN PRIVATE KEY-----",
            "api_token": "abc",
            "note": "x".repeat(1000),
        }));
        let r = redact_arguments(&args);
        assert!(r.contains("a.txt"));
        assert!(!r.contains("PRIVATE KEY"), "{r}");
        assert!(!r.contains("abc"), "{r}");
        assert!(r.contains("<1000 bytes>"), "{r}");
        assert!(r.len() <= MAX_REDACTED_BYTES);
    }

    #[test]
    fn any_field_change_changes_the_hash() {
        let entry = AuditEntry {
            ts: "t".into(),
            session_id: "s".into(),
            client_name: "c".into(),
            tool: "file_read".into(),
            args_sha256: "h".into(),
            args_redacted: "{}".into(),
            decision: "allow".into(),
            rule_ids: String::new(),
            outcome: "ok".into(),
            detail: String::new(),
            duration_us: 5,
            waiver_ids: String::new(),
            task_ids: String::new(),
        };
        let r = AuditRecord::from_entry("default", 1, GENESIS_HASH, &entry);
        assert_eq!(r.hash, r.compute_hash());
        let mut altered = r.clone();
        altered.outcome = "refused".into();
        assert_ne!(altered.compute_hash(), r.hash);
        let mut moved = r.clone();
        moved.seq = 2;
        assert_ne!(moved.compute_hash(), r.hash);
        // The task a call was made under is covered too.
        let mut attributed = r.clone();
        attributed.task_ids = "T-1".into();
        assert_ne!(attributed.compute_hash(), r.hash);
    }

    #[test]
    fn a_journal_line_written_with_the_hash_is_the_records_json() {
        for (waivers, tasks, detail) in [
            ("", "", ""),
            ("W-1", "", "refused: \"x\"\\ \u{1} é"),
            ("", "T-1,T-2", "\n"),
            ("W-1,W-2", "T-3", "x"),
        ] {
            let entry = AuditEntry {
                waiver_ids: waivers.into(),
                task_ids: tasks.into(),
                detail: detail.into(),
                ..AuditEntry::sample(7)
            };
            let mut line = b"before\n".to_vec();
            let record = AuditRecord::from_owned_entry_with_line(
                "team \"a\"",
                9,
                GENESIS_HASH,
                entry.clone(),
                &mut line,
            );
            let expected = AuditRecord::from_entry("team \"a\"", 9, GENESIS_HASH, &entry);
            assert_eq!(record, expected);
            assert_eq!(record.hash, record.compute_hash());
            let mut json = serde_json::to_string(&expected).unwrap();
            json.push('\n');
            assert_eq!(String::from_utf8(line).unwrap(), format!("before\n{json}"));
        }
    }

    #[test]
    fn sha256_hex_is_the_lowercase_hex_of_the_digest() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for input in [&b"abc"[..], &[0xffu8; 100][..], b"{\"a\":1}"] {
            assert_eq!(sha256_hex(input), hex::encode(Sha256::digest(input)));
        }
    }

    #[test]
    fn a_record_without_tasks_hashes_as_before_tasks_existed() {
        // A record from before `task_ids` (and `waiver_ids`): its JSON has
        // neither field, and its hash is over the fields it had.
        let old = r#"{"tenant":"default","seq":1,"ts":"t","session_id":"s","client_name":"c","tool":"file_read","args_sha256":"h","args_redacted":"{}","decision":"allow","rule_ids":"","outcome":"ok","detail":"","duration_us":5,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","hash":""}"#;
        let mut r: AuditRecord = serde_json::from_str(old).unwrap();
        assert!(r.task_ids.is_empty());
        let fields_then = r#"{"tenant":"default","seq":1,"ts":"t","session_id":"s","client_name":"c","tool":"file_read","args_sha256":"h","args_redacted":"{}","decision":"allow","rule_ids":"","outcome":"ok","detail":"","duration_us":5,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
        r.hash = hex::encode(Sha256::digest(fields_then.as_bytes()));
        assert_eq!(r.compute_hash(), r.hash);
        assert!(!serde_json::to_string(&r).unwrap().contains("task_ids"));
    }
}
