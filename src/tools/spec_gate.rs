//! The active CAWS working spec, as the tools see it. It is read from the
//! workspace through the same confinement as any read, re-read only when its
//! file changes, and consulted on every write together with the change-budget
//! totals kept in the store (so they survive restarts and are shared by every
//! process on the workspace).

use std::sync::{Arc, Mutex};

use super::{Outcome, ToolError, Toolbox};
use crate::exec::ConfineError;
use crate::policy::budget::{ActiveSpec, judge_write, lines_changed};
use crate::policy::spec::validate_spec;
use crate::policy::{Action, Decision, Policy};
use crate::store::DEFAULT_TENANT;

/// Largest working spec read.
const MAX_SPEC_BYTES: u64 = 1024 * 1024;

/// The spec as last read, keyed by the file's identity and the policy in force.
#[derive(Debug, Default)]
pub struct SpecCache {
    last: Mutex<Option<(SpecKey, Arc<SpecState>)>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SpecKey {
    policy: usize,
    size: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

/// What the workspace's working spec says for writes.
#[derive(Debug)]
pub enum SpecState {
    /// No spec file (or the policy does not enforce specs): no spec checks.
    Absent,
    Active(Box<ActiveSpec>),
    /// A spec file that does not validate: writes are refused until it is fixed.
    Broken {
        rule_id: String,
        message: String,
    },
}

/// A change to count against the spec once the write has succeeded.
#[derive(Debug)]
pub struct Charge {
    /// Whose totals: the workspace spec's are the default tenant's, a held
    /// task's are its tenant's.
    tenant: String,
    spec_id: String,
    path: String,
    lines: u64,
}

impl Toolbox {
    /// The working spec in force now.
    pub fn active_spec(&self) -> Arc<SpecState> {
        let policy = self.policy.load();
        let settings = policy.spec_settings();
        if !settings.enforce {
            return Arc::new(SpecState::Absent);
        }
        let opened = match self.root.open_for_read(&settings.path) {
            Ok(opened) => opened,
            Err(ConfineError::NotFound(_)) => return Arc::new(SpecState::Absent),
            Err(e) => {
                return Arc::new(SpecState::Broken {
                    rule_id: "SPEC-001".into(),
                    message: format!("the working spec `{}` cannot be read: {e}", settings.path),
                });
            }
        };
        let meta = opened.file.metadata().ok();
        let key = SpecKey {
            policy: Arc::as_ptr(&policy) as usize,
            size: opened.meta.size,
            modified: meta.as_ref().and_then(|m| m.modified().ok()),
            inode: meta
                .as_ref()
                .map(std::os::unix::fs::MetadataExt::ino)
                .unwrap_or(0),
        };
        if let Ok(last) = self.spec.last.lock()
            && let Some((k, state)) = last.as_ref()
            && *k == key
        {
            return state.clone();
        }
        let state = Arc::new(read_spec(opened, &settings.path, &policy));
        if let Ok(mut last) = self.spec.last.lock() {
            *last = Some((key, state.clone()));
        }
        state
    }

    /// What the active spec says of a write of `path` from `before` to
    /// `after`: a decision (empty when no spec is in force) and the change to
    /// count once the write succeeds. `arbiter policy check` asks this too.
    pub async fn judge_spec_write(
        &self,
        path: &str,
        before: &str,
        after: &str,
    ) -> Result<(Decision, Option<Charge>), ToolError> {
        let lines = lines_changed(before, after);
        let (decision, charges) = self.judge_spec_changes(&[(path, lines)]).await?;
        Ok((decision, charges.into_iter().next()))
    }

    /// What the active spec says of one call that changes several paths
    /// (`(path, lines changed)` each: a move's two ends, a directory's
    /// entries). They are judged as if written one after the other, so the
    /// budget sees them all; the charges are counted once the call succeeds.
    pub async fn judge_spec_changes(
        &self,
        changes: &[(&str, u64)],
    ) -> Result<(Decision, Vec<Charge>), ToolError> {
        let state = self.active_spec();
        let workspace = match state.as_ref() {
            SpecState::Absent => None,
            SpecState::Broken { rule_id, message } => {
                return Err(ToolError {
                    outcome: Outcome::Refused,
                    rule_id: rule_id.clone(),
                    message: format!("writes wait for a valid working spec: {message}"),
                    advice: "ask a person to fix the working spec (`arbiter_validate` lists its problems), or remove it".into(),
                });
            }
            SpecState::Active(spec) => Some(spec.as_ref()),
        };
        // The specs of the tasks the caller holds bind its writes too.
        let (tenant, held) = self.held_task_specs().await;
        let specs: Vec<(&str, &ActiveSpec)> = workspace
            .map(|spec| (DEFAULT_TENANT, spec))
            .into_iter()
            .chain(held.iter().map(|spec| (tenant.as_str(), spec)))
            .collect();
        if specs.is_empty() {
            return Ok((Decision::allow(), Vec::new()));
        }
        let store = self.store.get().await.map_err(|e| budget_unavailable(&e))?;
        let mut judged = Vec::with_capacity(changes.len() * specs.len());
        let mut charges = Vec::with_capacity(changes.len() * specs.len());
        for (tenant, spec) in specs {
            self.judge_against(&*store, tenant, spec, changes, &mut judged, &mut charges)
                .await?;
        }
        let policy = self.policy.load();
        self.lift_waived(&policy, &mut judged).await;
        let mut decision = Decision::allow();
        for (_, d) in judged {
            decision.merge(d);
        }
        Ok((decision, charges))
    }

    /// Judge `changes` against one spec and its stored totals.
    async fn judge_against<'p>(
        &self,
        store: &dyn crate::store::Store,
        tenant: &str,
        spec: &ActiveSpec,
        changes: &[(&'p str, u64)],
        judged: &mut Vec<(Action<'p>, Decision)>,
        charges: &mut Vec<Charge>,
    ) -> Result<(), ToolError> {
        // CAWS waivers with a `delta` raise the budget while they are in
        // force; their files are read only when a change is over budget.
        let mut widened: Option<ActiveSpec> = None;
        // What this call has added so far, on top of the stored totals.
        let mut files_before = 0;
        let mut lines_before = 0;
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for &(path, lines) in changes {
            let mut usage = store
                .budget_usage(tenant, &spec.id, path)
                .await
                .map_err(|e| budget_unavailable(&e.to_string()))?;
            let seen_here = !seen.insert(path);
            usage.files += files_before;
            usage.lines += lines_before;
            if !usage.path_touched && !seen_here {
                files_before += 1;
            }
            usage.path_touched |= seen_here;
            lines_before += lines;
            let action = Action::WriteFile {
                path,
                hard_linked: false,
                added: "",
            };
            let mut decision = judge_write(spec, path, lines, usage);
            if decision.matched.iter().any(|r| &*r.id == "BUDGET-001") {
                let widened = widened.get_or_insert_with(|| self.with_waived_budget(spec));
                decision = judge_write(widened, path, lines, usage);
            }
            judged.push((action, decision));
            charges.push(Charge {
                tenant: tenant.to_string(),
                spec_id: spec.id.clone(),
                path: path.to_string(),
                lines,
            });
        }
        Ok(())
    }

    /// Whether writes are measured now (lines changed, so old text must be
    /// read): a workspace spec is in force, or the caller may hold a task,
    /// whose spec can bind its writes.
    pub(crate) fn changes_are_measured(&self) -> bool {
        let caller = super::current_caller();
        matches!(self.active_spec().as_ref(), SpecState::Active(_))
            || crate::tasks::attribution::may_hold(&caller.tenant, &caller.agent)
    }

    /// The caller's tenant, and the specs of the tasks it holds (claims not
    /// lapsed) that came with one. Each is named `<spec id> of task T-n`:
    /// refusals say which task's spec refused, and each task's budget is
    /// counted on its own. Only agents this process saw claim a task are
    /// looked up (as for the audit attribution).
    pub(super) async fn held_task_specs(&self) -> (String, Vec<ActiveSpec>) {
        let caller = super::current_caller();
        let mut specs = Vec::new();
        if !crate::tasks::attribution::may_hold(&caller.tenant, &caller.agent) {
            return (caller.tenant, specs);
        }
        let held = match self.store.get().await {
            Ok(store) => store.task_held(&caller.tenant, &caller.agent).await,
            Err(e) => Err(crate::store::StoreError::Database(e)),
        };
        let held = match held {
            Ok(held) => held,
            Err(e) => {
                // Without the tasks the call cannot be checked against them.
                tracing::warn!(agent = %caller.agent, error = %e, "cannot read the caller's tasks; their scope and budget are not checked");
                return (caller.tenant, specs);
            }
        };
        let now = crate::tasks::now_ms();
        let policy = self.policy.load();
        for task in held {
            let Some(text) = task.spec.as_deref() else {
                continue;
            };
            if task.lease_expires_at.is_none_or(|end| end <= now) {
                continue;
            }
            let report = validate_spec(text, policy.tiers());
            let active = report
                .spec
                .as_ref()
                .ok_or_else(|| "it no longer reads".to_string())
                .and_then(|spec| ActiveSpec::new(spec, policy.tiers()).map_err(|v| v.to_string()));
            match active {
                Ok(mut spec) => {
                    spec.id = format!("{} of task {}", spec.id, task.display_id());
                    specs.push(spec);
                }
                Err(e) => {
                    tracing::warn!(task = %task.display_id(), error = %e, "the task's spec is not checked");
                }
            }
        }
        (caller.tenant, specs)
    }

    /// `spec` with its budget raised by the deltas of the CAWS waivers in
    /// force that name BUDGET-001.
    fn with_waived_budget(&self, spec: &ActiveSpec) -> ActiveSpec {
        let mut spec = spec.clone();
        if !self.caws_waivers {
            return spec;
        }
        let now = crate::overrides::now_unix();
        let (waivers, _) = crate::overrides::caws::read_dir(&self.root);
        for w in waivers {
            if let Some(delta) = w.delta
                && w.in_force(now)
                && w.rule_ids.iter().any(|r| r == "BUDGET-001")
            {
                let add = |base: u32, extra: u64| {
                    u32::try_from(u64::from(base).saturating_add(extra)).unwrap_or(u32::MAX)
                };
                spec.budget.max_files = add(spec.budget.max_files, delta.max_files);
                spec.budget.max_loc = add(spec.budget.max_loc, delta.max_loc);
            }
        }
        spec
    }

    /// Check a call that changes several paths against the active spec; see
    /// [`Toolbox::gate_write`].
    pub(crate) async fn gate_changes(
        &self,
        mut decision: Decision,
        changes: &[(&str, u64)],
    ) -> Result<Vec<Charge>, ToolError> {
        let (spec_decision, charges) = self.judge_spec_changes(changes).await?;
        if spec_decision.matched.is_empty() {
            return Ok(charges);
        }
        let subject = changes.first().map_or("", |c| c.0).to_string();
        decision.merge(spec_decision);
        self.settle(&self.policy.load(), decision, &subject)?;
        Ok(charges)
    }

    /// Check a write against the active spec, folding the answer into
    /// `decision` (what the policy already allowed) and noting it for the audit.
    pub(crate) async fn gate_write(
        &self,
        mut decision: Decision,
        path: &str,
        before: &str,
        after: &str,
    ) -> Result<Option<Charge>, ToolError> {
        let (spec_decision, charge) = self.judge_spec_write(path, before, after).await?;
        if spec_decision.matched.is_empty() {
            return Ok(charge);
        }
        decision.merge(spec_decision);
        self.settle(&self.policy.load(), decision, path)?;
        Ok(charge)
    }

    /// Count the changes of a successful call against their spec.
    pub(crate) async fn charge_all(&self, charges: Vec<Charge>) {
        for charge in charges {
            self.charge(Some(charge)).await;
        }
    }

    /// Record a successful write or edit of `path` (from `before` to
    /// `after`) in the history of each task the caller holds, for the judge
    /// and `task export` (`tasks::changes`). A store that cannot take it is
    /// logged: the write happened either way.
    pub(crate) async fn record_task_change(
        &self,
        tool: &str,
        path: &str,
        before: &str,
        after: &str,
    ) {
        let ids = super::noted_task_ids();
        if ids.is_empty() {
            return;
        }
        let caller = super::current_caller();
        let diff = super::edit::unified_diff(before, after, path);
        let change = crate::tasks::changes::FileChange::new(tool, path, before, after, diff);
        let Ok(note) = serde_json::to_string(&change) else {
            return;
        };
        let store = match self.store.get().await {
            Ok(store) => store,
            Err(e) => {
                tracing::warn!(path, error = %e, "cannot record the change in the held task's history");
                return;
            }
        };
        let now = crate::tasks::now_ms();
        for id in ids {
            let kind = crate::tasks::changes::EVENT_KIND;
            if let Err(e) = store
                .task_note(&caller.tenant, id, &caller.agent, now, kind, &note)
                .await
            {
                tracing::warn!(task = id, path, error = %e, "cannot record the change in the task's history");
            }
        }
    }

    /// Count a successful write against its spec.
    pub(crate) async fn charge(&self, charge: Option<Charge>) {
        let Some(charge) = charge else { return };
        let result = match self.store.get().await {
            Ok(store) => store
                .budget_add(&charge.tenant, &charge.spec_id, &charge.path, charge.lines)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            // The write happened; only the total is short. Say so loudly.
            tracing::error!(spec = %charge.spec_id, path = %charge.path, error = %e, "could not count a write against the change budget");
        }
    }
}

fn budget_unavailable(e: &str) -> ToolError {
    ToolError {
        outcome: Outcome::Failed,
        rule_id: "BUDGET-003".into(),
        message: format!("the change-budget totals cannot be read: {e}"),
        advice: "nothing was written; the operator must fix the store (`arbiter doctor` says what is wrong)".into(),
    }
}

fn read_spec(opened: crate::exec::OpenedFile, path: &str, policy: &Policy) -> SpecState {
    use std::io::Read;
    if opened.meta.size > MAX_SPEC_BYTES {
        return SpecState::Broken {
            rule_id: "SPEC-001".into(),
            message: format!("the working spec `{path}` is larger than {MAX_SPEC_BYTES} bytes"),
        };
    }
    let mut text = String::new();
    if let Err(e) = (&opened.file)
        .take(MAX_SPEC_BYTES)
        .read_to_string(&mut text)
    {
        return SpecState::Broken {
            rule_id: "SPEC-001".into(),
            message: format!("the working spec `{path}` is not readable text: {e}"),
        };
    }
    let report = validate_spec(&text, policy.tiers());
    let errors: Vec<_> = report.violations.iter().filter(|v| v.is_error()).collect();
    match (report.spec, errors.first()) {
        (Some(spec), None) => match ActiveSpec::new(&spec, policy.tiers()) {
            Ok(active) => SpecState::Active(Box::new(active)),
            Err(v) => SpecState::Broken {
                rule_id: v.rule_id.to_string(),
                message: v.to_string(),
            },
        },
        (_, first) => SpecState::Broken {
            rule_id: first.map_or("SPEC-001", |v| v.rule_id).to_string(),
            message: format!(
                "`{path}` has {} error(s): {}",
                errors.len(),
                errors
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        },
    }
}
