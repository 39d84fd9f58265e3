//! `override_request` and `override_status`: an agent asks a person for an
//! exception to one rule and follows the answer. Nothing here approves: that
//! happens outside the agent's reach (`arbiter override approve`).

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::{Outcome, ToolError, Toolbox, current_caller, note_error};
use crate::overrides::{
    self, CompiledScope, OverrideRecord, OverrideState, Scope, check_limits, rfc3339,
};
use crate::policy::Waivability;
use crate::store::NewOverride;

/// Longest reason kept.
const MAX_REASON_CHARS: usize = 2000;

/// Serializes the limit check and the insert of this process's requests, so
/// two requests at once cannot both slip under a limit.
static REQUESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequestInput {
    /// The rule id a refusal named (e.g. `PATH-001`, `CMD-100`, `BUDGET-001`).
    pub rule_id: String,
    /// Why the exception is needed: what you are doing and why the rule should not apply here. A person reads it before deciding.
    pub reason: String,
    /// Narrow the exception (recommended): `paths` (workspace paths or globs), `command` (a command prefix such as `git push origin`), or `task_id`. Without a scope it covers every action the rule refuses.
    #[serde(default)]
    pub scope: Option<Scope>,
    /// How long the exception should last once approved, in minutes (the person decides; default 24 hours; at most the policy's maximum).
    #[serde(default)]
    pub duration_minutes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideStatusInput {
    /// The id override_request returned (`OVR-12`).
    pub override_id: String,
}

/// A request and where it stands.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OverrideOutput {
    pub override_id: String,
    /// `pending`, `approved`, `denied`, `expired` or `revoked`.
    pub state: OverrideState,
    pub rule_id: String,
    pub reason: String,
    pub scope: Scope,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_minutes: Option<u64>,
    pub requested_at: String,
    /// Who decided, and their note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When an approval ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// What to do now.
    pub next: String,
}

impl OverrideOutput {
    fn new(r: &OverrideRecord, now: i64) -> Self {
        let state = r.state_at(now);
        let id = r.display_id();
        let next = match state {
            OverrideState::Pending => format!(
                "a person decides outside this session: `arbiter override approve {id}` \
                 (optionally --note TEXT --minutes N) or `arbiter override deny {id}`; \
                 check again with override_status, then retry the refused call once approved"
            ),
            OverrideState::Approved => format!(
                "retry the refused call: the policy now lets {} through within the scope until {}",
                r.rule_id,
                r.expires_at.map(rfc3339).unwrap_or_default()
            ),
            OverrideState::Denied => {
                "the request was denied; change the approach instead of the rule".to_string()
            }
            OverrideState::Expired => {
                "the approval has ended; ask again with override_request if it is still needed"
                    .to_string()
            }
            OverrideState::Revoked => {
                "a person revoked the approval; the rule applies again".to_string()
            }
        };
        Self {
            override_id: id,
            state,
            rule_id: r.rule_id.clone(),
            reason: r.reason.clone(),
            scope: r.scope.clone(),
            requested_minutes: r.requested_minutes,
            requested_at: rfc3339(r.created_at),
            decided_by: r.decided_by.clone(),
            note: r.note.clone(),
            expires_at: r.expires_at.map(rfc3339),
            next,
        }
    }

    pub fn render(&self) -> String {
        let mut text = format!(
            "Override {} for {} is {} (scope: {}).",
            self.override_id,
            self.rule_id,
            self.state.as_str(),
            self.scope.describe()
        );
        if let Some(by) = &self.decided_by {
            text.push_str(&format!(" Decided by {by}"));
            if let Some(note) = &self.note {
                text.push_str(&format!(": {note}"));
            }
            text.push('.');
        }
        if let Some(until) = &self.expires_at {
            text.push_str(&format!(" Until {until}."));
        }
        text.push_str(&format!(" Next: {}.", self.next));
        text
    }
}

fn invalid(message: String, advice: &str) -> ToolError {
    ToolError {
        outcome: Outcome::Invalid,
        rule_id: "OVERRIDE-005".into(),
        message,
        advice: advice.into(),
    }
}

fn store_failed(e: impl std::fmt::Display) -> ToolError {
    ToolError::failed(
        "OVERRIDE-007",
        format!("the override store cannot be used: {e}"),
        "nothing was recorded; the operator must fix the store (`arbiter doctor` says what is wrong)",
    )
}

/// The form shown to the person at the client when the policy enables
/// elicitation.
#[derive(Debug, Deserialize, JsonSchema)]
struct PersonAnswer {
    /// Check to approve the exception; leave unchecked to deny it.
    approve: bool,
    /// A note for the record (the agent sees it).
    #[serde(default)]
    note: String,
    /// How long an approval lasts, in minutes (0: what the agent asked, else 24 hours).
    #[serde(default)]
    minutes: u32,
}

rmcp::elicit_safe!(PersonAnswer);

/// How long the person at the client has to answer before the request stays
/// pending for `arbiter override`.
const ELICITATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

impl Toolbox {
    /// `peer`: the client, asked to show the person a form when the policy
    /// enables elicitation and the client supports it.
    pub async fn override_request(
        &self,
        input: OverrideRequestInput,
        peer: Option<rmcp::Peer<rmcp::RoleServer>>,
    ) -> Result<OverrideOutput, ToolError> {
        let result = async {
            let (record, now) = self.override_request_inner(input).await?;
            let record = match peer {
                Some(peer) if self.policy.load().override_settings().elicitation => {
                    self.ask_person(&peer, record).await
                }
                _ => record,
            };
            Ok(OverrideOutput::new(&record, now))
        }
        .await;
        result.inspect_err(note_error)
    }

    /// Ask the person at the client to decide now. Whatever goes wrong (no
    /// support, declined, no answer in time), the request stays pending.
    async fn ask_person(
        &self,
        peer: &rmcp::Peer<rmcp::RoleServer>,
        record: OverrideRecord,
    ) -> OverrideRecord {
        let message = format!(
            "The agent `{}` asks for an exception to {} ({}).\nReason: {}\nApprove or deny it.",
            record.agent,
            record.rule_id,
            record.scope.describe(),
            overrides::one_line(&record.reason, 500)
        );
        let answer = match peer
            .elicit_with_timeout::<PersonAnswer>(message, Some(ELICITATION_TIMEOUT))
            .await
        {
            Ok(Some(answer)) => answer,
            Ok(None) => return record,
            Err(e) => {
                tracing::info!(override_id = %record.display_id(), error = %e, "no decision at the client; the request stays pending");
                return record;
            }
        };
        let settings = self.policy.load().override_settings().clone();
        let now = overrides::now_unix();
        let (to, expires_at) = if answer.approve {
            let asked = (answer.minutes > 0).then_some(u64::from(answer.minutes));
            match overrides::approval_minutes(asked, record.requested_minutes, &settings) {
                Ok(m) => ("approved", Some(now + m as i64 * 60)),
                Err(e) => {
                    tracing::warn!(override_id = %record.display_id(), error = %e, "the answer at the client is out of bounds; the request stays pending");
                    return record;
                }
            }
        } else {
            ("denied", None)
        };
        let actor = format!("elicitation:{}", record.agent);
        let note = answer.note.trim();
        let decided = match self.store.get().await {
            Ok(store) => store
                .override_decide(&crate::store::OverrideDecision {
                    id: record.id,
                    from: &["pending"],
                    to,
                    actor: &actor,
                    note: (!note.is_empty()).then_some(note),
                    expires_at,
                    now,
                })
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match decided {
            Ok(Some(r)) => {
                super::note_detail(format!(
                    "{} {to} by the person at the client ({actor})",
                    r.display_id()
                ));
                r
            }
            Ok(None) => record,
            Err(e) => {
                tracing::error!(override_id = %record.display_id(), error = %e, "cannot store the decision made at the client");
                record
            }
        }
    }

    async fn override_request_inner(
        &self,
        input: OverrideRequestInput,
    ) -> Result<(OverrideRecord, i64), ToolError> {
        let policy = self.policy.load();
        let settings = policy.override_settings().clone();
        let rule_id = input.rule_id.trim().to_string();
        match policy.waivability(&rule_id) {
            Waivability::Waivable => {}
            Waivability::Never(why) => {
                return Err(ToolError {
                    outcome: Outcome::Refused,
                    rule_id: "OVERRIDE-001".into(),
                    message: format!("{rule_id} cannot be waived: {why}"),
                    advice: "change the approach so the rule is not broken".into(),
                });
            }
            Waivability::Unknown => {
                return Err(invalid(
                    format!("the policy `{}` has no rule `{rule_id}`", policy.name()),
                    "give the rule id a refusal named (in its [brackets])",
                ));
            }
        }
        let reason = input.reason.trim();
        if reason.is_empty() {
            return Err(invalid(
                "the reason is empty".into(),
                "say what you are doing and why the rule should not apply",
            ));
        }
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(invalid(
                format!("the reason is longer than {MAX_REASON_CHARS} characters"),
                "say it shorter",
            ));
        }
        let scope = input.scope.unwrap_or_default();
        CompiledScope::compile(&scope).map_err(|e| {
            invalid(
                format!("bad scope: {e}"),
                "give workspace-relative paths or globs, or a plain command prefix",
            )
        })?;
        if let Some(m) = input.duration_minutes
            && (m == 0 || m > settings.max_minutes)
        {
            return Err(invalid(
                format!(
                    "duration_minutes must be 1 to {} (the policy's overrides.max_minutes), not {m}",
                    settings.max_minutes
                ),
                "ask for a shorter time, or leave it out for the default (24 hours)",
            ));
        }
        let caller = current_caller();
        let store = self.store.get().await.map_err(store_failed)?;
        let _one_at_a_time = REQUESTS.lock().await;
        let now = overrides::now_unix();
        let since = now - 3600i64.max(settings.denial_cooldown_minutes as i64 * 60);
        let history = store
            .override_recent(&caller.tenant, &caller.agent, since)
            .await
            .map_err(store_failed)?;
        check_limits(&history, &rule_id, &settings, now).map_err(|refusal| ToolError {
            outcome: Outcome::Refused,
            rule_id: refusal.rule_id.into(),
            message: refusal.message,
            advice: format!(
                "you may ask again from {} ({} seconds from now); meanwhile work within the rules",
                rfc3339(refusal.retry_at),
                (refusal.retry_at - now).max(0)
            ),
        })?;
        let record = store
            .override_create(&NewOverride {
                tenant: &caller.tenant,
                agent: &caller.agent,
                session_id: &caller.session_id,
                rule_id: &rule_id,
                reason,
                scope: &scope,
                requested_minutes: input.duration_minutes,
                now,
            })
            .await
            .map_err(store_failed)?;
        tracing::info!(
            override_id = %record.display_id(),
            rule = %rule_id,
            agent = %caller.agent,
            "override requested; approve with `arbiter override approve {}`",
            record.display_id()
        );
        Ok((record, now))
    }

    pub async fn override_status(
        &self,
        input: OverrideStatusInput,
    ) -> Result<OverrideOutput, ToolError> {
        let result = async {
            let id = overrides::parse_id(&input.override_id).ok_or_else(|| {
                invalid(
                    format!("`{}` is not an override id", input.override_id),
                    "give the id override_request returned, such as OVR-12",
                )
            })?;
            let caller = current_caller();
            let store = self.store.get().await.map_err(store_failed)?;
            let record = store
                .override_get(Some(&caller.tenant), id)
                .await
                .map_err(store_failed)?
                .ok_or_else(|| {
                    ToolError::failed(
                        "OVERRIDE-006",
                        format!("there is no override {}", overrides::display_id(id)),
                        "give the id override_request returned",
                    )
                })?;
            Ok(OverrideOutput::new(&record, overrides::now_unix()))
        }
        .await;
        result.inspect_err(note_error)
    }
}
