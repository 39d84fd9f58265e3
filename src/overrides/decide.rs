//! A person's decision on a request, however it arrives (`arbiter override`,
//! the admin HTTP API): checked against the policy, stored with an event, and
//! appended to the audit chain of the tenant that asked, whether it took
//! effect or not.

use serde_json::json;

use super::{OverrideRecord, approval_minutes, rfc3339};
use crate::policy::{Policy, Waivability};
use crate::store::audit::{AuditEntry, arguments_sha256, redact_arguments};
use crate::store::{AuditChain, OverrideDecision, Store};

/// What the person decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// For `minutes` (default: what the agent asked, else the policy's default).
    Approve {
        minutes: Option<u64>,
    },
    Deny,
    Revoke,
}

impl Verdict {
    /// The verb, as the CLI and the audit record name it.
    pub fn verb(self) -> &'static str {
        match self {
            Verdict::Approve { .. } => "approve",
            Verdict::Deny => "deny",
            Verdict::Revoke => "revoke",
        }
    }

    fn states(self) -> (&'static [&'static str], &'static str) {
        match self {
            Verdict::Approve { .. } => (&["pending"], "approved"),
            Verdict::Deny => (&["pending"], "denied"),
            Verdict::Revoke => (&["approved"], "revoked"),
        }
    }
}

/// Why a decision did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The decision itself is not allowed (duration out of bounds, a rule the
    /// policy no longer lets anyone waive). Nothing was recorded.
    #[error("{0}")]
    NotAllowed(String),
    /// The request is not in a state this decision applies to (recorded).
    #[error("{0}")]
    WrongState(String),
    #[error("{0}")]
    Store(String),
}

/// Who decided what, and when.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub verdict: Verdict,
    /// `cli:USER`, `admin:NAME`, ...
    pub actor: &'a str,
    pub note: Option<&'a str>,
    pub now: i64,
}

/// Apply `decision` to `record`; returns the record as it is now and the
/// one-line account that went into the audit record.
pub async fn decide(
    store: &dyn Store,
    audit: &AuditChain,
    policy: &Policy,
    record: &OverrideRecord,
    decision: Decision<'_>,
) -> Result<(OverrideRecord, String), DecideError> {
    let Decision {
        verdict,
        actor,
        note,
        now,
    } = decision;
    let started = std::time::Instant::now();
    let expires_at = match verdict {
        Verdict::Approve { minutes } => {
            if let Waivability::Never(why) = policy.waivability(&record.rule_id) {
                return Err(DecideError::NotAllowed(format!(
                    "{} cannot be waived under the policy in force: {why}",
                    record.rule_id
                )));
            }
            let m = approval_minutes(
                minutes,
                record.requested_minutes,
                policy.override_settings(),
            )
            .map_err(DecideError::NotAllowed)?;
            Some(now + m as i64 * 60)
        }
        Verdict::Deny | Verdict::Revoke => None,
    };
    let (from, to) = verdict.states();
    let changed = store
        .override_decide(&OverrideDecision {
            id: record.id,
            from,
            to,
            actor,
            note,
            expires_at,
            now,
        })
        .await
        .map_err(|e| DecideError::Store(e.to_string()))?;
    let id = record.display_id();
    let detail = match &changed {
        Some(r) => {
            let until = r
                .expires_at
                .filter(|_| to == "approved")
                .map(|e| format!(" until {}", rfc3339(e)))
                .unwrap_or_default();
            format!(
                "{id} {to} by {actor}{until}: {} for agent {} (scope: {})",
                r.rule_id,
                r.agent,
                r.scope.describe()
            )
        }
        None => format!(
            "{id} is {}; only a request that is {} can be {to}",
            record.state_at(now).as_str(),
            from.join(" or ")
        ),
    };
    let mut args = serde_json::Map::new();
    args.insert("override_id".into(), json!(id));
    if let Some(note) = note {
        args.insert("note".into(), json!(note));
    }
    if let Some(e) = expires_at {
        args.insert("expires_at".into(), json!(rfc3339(e)));
    }
    audit
        .append(AuditEntry {
            ts: rfc3339_now(),
            session_id: format!("decision-{}", std::process::id()),
            client_name: actor.to_string(),
            tool: format!("override {}", verdict.verb()),
            args_sha256: arguments_sha256(&args),
            args_redacted: redact_arguments(&args),
            decision: "none".into(),
            rule_ids: record.rule_id.clone(),
            outcome: if changed.is_some() { "ok" } else { "failed" }.into(),
            detail: detail.clone(),
            duration_us: started.elapsed().as_micros() as i64,
            waiver_ids: if changed.is_some() {
                id.clone()
            } else {
                String::new()
            },
            task_ids: String::new(),
        })
        .await
        .map_err(|e| DecideError::Store(e.to_string()))?;
    match changed {
        Some(r) => Ok((r, detail)),
        None => Err(DecideError::WrongState(detail)),
    }
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
