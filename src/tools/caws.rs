//! `arbiter_validate`: check a CAWS working spec and say, for each problem,
//! its rule id, where in the document it is, and how to fix it.

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::{Outcome, ToolError, Toolbox};
use crate::policy::Action;
use crate::policy::spec::{EffectiveBudget, Severity, Violation, validate_spec};

/// Largest spec accepted, as text or as a file.
const MAX_SPEC_BYTES: usize = 1024 * 1024;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArbiterValidateInput {
    /// The working spec: its YAML or JSON text, or the workspace path of a
    /// spec file (e.g. `.caws/working-spec.yaml`).
    pub spec: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ArbiterValidateOutput {
    /// True when the spec has no errors (warnings allowed).
    pub valid: bool,
    /// `text`, or the workspace path the spec was read from.
    pub source: String,
    pub spec_id: Option<String>,
    pub risk_tier: Option<u8>,
    /// The change budget writes are held to: the spec's own, or its tier's.
    pub budget: Option<EffectiveBudget>,
    pub errors: usize,
    pub warnings: usize,
    pub violations: Vec<Violation>,
}

impl ArbiterValidateOutput {
    /// One line per problem, for the model.
    pub fn render(&self) -> String {
        let mut text = match (&self.spec_id, self.valid) {
            (Some(id), true) => format!("VALID: spec {id} ({})", self.source),
            (Some(id), false) => format!("INVALID: spec {id} ({})", self.source),
            (None, _) => format!("INVALID: the spec could not be read ({})", self.source),
        };
        text.push_str(&format!(
            ", {} error(s), {} warning(s)",
            self.errors, self.warnings
        ));
        if let (Some(tier), Some(budget)) = (self.risk_tier, self.budget) {
            text.push_str(&format!(
                "; risk tier {tier}, budget {} files / {} lines",
                budget.max_files, budget.max_loc
            ));
        }
        for v in &self.violations {
            let level = match v.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let at = if v.path.is_empty() {
                "(document)"
            } else {
                &v.path
            };
            text.push_str(&format!(
                "\n- {level} [{}] {at}: {} Fix: {}",
                v.rule_id, v.message, v.fix
            ));
        }
        text
    }
}

impl Toolbox {
    pub async fn arbiter_validate(
        &self,
        input: ArbiterValidateInput,
    ) -> Result<ArbiterValidateOutput, ToolError> {
        let (text, source) = self.read_spec(input.spec).await?;
        let tiers = self.policy.load().tiers().clone();
        let report = validate_spec(&text, &tiers);
        let errors = report.violations.iter().filter(|v| v.is_error()).count();
        Ok(ArbiterValidateOutput {
            valid: report.is_valid(),
            source,
            spec_id: report.spec.as_ref().map(|s| s.id.clone()),
            risk_tier: report.spec.as_ref().map(|s| s.risk_tier),
            budget: report.spec.as_ref().map(|s| s.effective_budget(&tiers)),
            errors,
            warnings: report.violations.len() - errors,
            violations: report.violations,
        })
    }
}

impl Toolbox {
    /// A spec given as text, or as a workspace path read through the policy.
    /// Returns the text and where it came from (`text` or the path).
    pub(crate) async fn read_spec(&self, spec: String) -> Result<(String, String), ToolError> {
        if looks_like_a_path(&spec) {
            let opened = self.root.open_for_read(&spec)?;
            self.enforce(&[Action::ReadFile {
                path: &opened.rel_path,
            }])
            .await?;
            let source = opened.rel_path.clone();
            return Ok((
                super::files::read_whole_text(opened, MAX_SPEC_BYTES as u64)?,
                source,
            ));
        }
        if spec.len() > MAX_SPEC_BYTES {
            return Err(ToolError {
                outcome: Outcome::Failed,
                rule_id: "SPEC-001".into(),
                message: format!(
                    "the spec is {} bytes; the limit is {MAX_SPEC_BYTES}",
                    spec.len()
                ),
                advice: "send a smaller spec".into(),
            });
        }
        Ok((spec, "text".to_string()))
    }
}

/// One line ending in `.yaml`, `.yml` or `.json` names a file; anything else is the spec itself.
pub(crate) fn looks_like_a_path(spec: &str) -> bool {
    let spec = spec.trim();
    !spec.contains('\n')
        && !spec.contains(": ")
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| spec.ends_with(ext))
}
