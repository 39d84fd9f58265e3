//! Writes under an active CAWS working spec: inside its scope (`SCOPE-001`)
//! and within its change budget (`BUDGET-001`). Pure, like the rest of the
//! policy: the caller brings the totals so far (kept in the store) and the
//! size of this change.

use serde::Serialize;

use super::spec::{EffectiveBudget, SpecScope, Tiers, WorkingSpec};
use super::{Decision, MatchedRule, Verdict};

/// The spec in force, compiled for checking writes.
#[derive(Debug, Clone)]
pub struct ActiveSpec {
    pub id: String,
    pub risk_tier: u8,
    pub budget: EffectiveBudget,
    pub scope: SpecScope,
}

impl ActiveSpec {
    /// Compile a valid spec; a scope that does not compile is its first problem.
    pub fn new(spec: &WorkingSpec, tiers: &Tiers) -> Result<Self, super::spec::Violation> {
        Ok(Self {
            id: spec.id.clone(),
            risk_tier: spec.risk_tier,
            budget: spec.effective_budget(tiers),
            scope: SpecScope::new(spec)?,
        })
    }
}

/// What the spec's work has changed so far (from the store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Distinct files changed.
    pub files: u64,
    /// Lines changed (added plus removed) over every write.
    pub lines: u64,
    /// The file about to be written is already among them.
    pub path_touched: bool,
}

/// Judge a write of `path` that changes `lines` lines.
pub fn judge_write(spec: &ActiveSpec, path: &str, lines: u64, usage: Usage) -> Decision {
    let mut decision = Decision::allow();
    if let Some(violation) = spec.scope.check(path) {
        decision.add(MatchedRule::new(
            "SCOPE-001",
            Verdict::Deny,
            &violation.message,
            &format!(
                "{} (the working spec is {}; a person may also grant an override)",
                violation.fix.trim_end_matches('.'),
                spec.id
            ),
        ));
    }
    let files_after = usage.files + u64::from(!usage.path_touched);
    let lines_after = usage.lines + lines;
    let max_files = u64::from(spec.budget.max_files);
    let max_loc = u64::from(spec.budget.max_loc);
    if files_after > max_files || lines_after > max_loc {
        decision.add(MatchedRule::new(
            "BUDGET-001",
            Verdict::NeedsOverride,
            &format!(
                "this write would exceed the change budget of spec {} (risk tier {}): \
                 {files_after} of {max_files} files and {lines_after} of {max_loc} lines changed \
                 (so far {} files, {} lines; this write {lines} lines)",
                spec.id, spec.risk_tier, usage.files, usage.lines
            ),
            "make a smaller change, split the work into another spec, or call override_request with rule_id BUDGET-001",
        ));
    }
    decision
}

/// Lines changed between two texts: lines added plus lines removed.
pub fn lines_changed(before: &str, after: &str) -> u64 {
    let diff = similar::TextDiff::from_lines(before, after);
    diff.iter_all_changes()
        .filter(|c| c.tag() != similar::ChangeTag::Equal)
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::spec::validate_spec;

    fn spec(budget: &str) -> ActiveSpec {
        let text = format!(
            "id: FEAT-7\ntitle: Add the export button\nrisk_tier: 3\nmode: feature\n{budget}\
             blast_radius: {{modules: [web]}}\noperational_rollback_slo: 5m\n\
             scope: {{in: [src/, docs/], out: [src/vendor/]}}\ninvariants: [nothing else changes]\n\
             acceptance: [{{id: A1, given: a page, when: clicked, then: it exports}}]\n\
             non_functional: {{perf: {{api_p95_ms: 100}}}}\ncontracts: []\n"
        );
        let report = validate_spec(&text, &Tiers::default());
        let s = report.spec.expect("the test spec reads");
        ActiveSpec::new(&s, &Tiers::default()).unwrap()
    }

    #[test]
    fn writes_inside_scope_and_budget_are_allowed() {
        let s = spec("change_budget: {max_files: 2, max_loc: 10}\n");
        assert!(judge_write(&s, "src/a.rs", 3, Usage::default()).is_allowed());
    }

    #[test]
    fn a_write_outside_scope_or_in_scope_out_is_scope_001() {
        let s = spec("");
        let d = judge_write(&s, "Cargo.toml", 1, Usage::default());
        assert_eq!(d.rule_ids(), "SCOPE-001");
        assert_eq!(d.verdict, Verdict::Deny);
        let d = judge_write(&s, "src/vendor/x.rs", 1, Usage::default());
        assert_eq!(d.rule_ids(), "SCOPE-001");
        assert!(d.matched[0].justification.contains("scope.out"), "{d:?}");
    }

    #[test]
    fn the_budget_counts_new_files_and_all_lines() {
        let s = spec("change_budget: {max_files: 2, max_loc: 10}\n");
        let used = Usage {
            files: 2,
            lines: 4,
            path_touched: false,
        };
        let d = judge_write(&s, "src/c.rs", 1, used);
        assert_eq!(d.rule_ids(), "BUDGET-001");
        assert!(d.matched[0].justification.contains("3 of 2 files"), "{d:?}");
        // A file already counted does not count again.
        let again = Usage {
            path_touched: true,
            ..used
        };
        assert!(judge_write(&s, "src/a.rs", 6, again).is_allowed());
        let d = judge_write(&s, "src/a.rs", 7, again);
        assert!(
            d.matched[0].justification.contains("11 of 10 lines"),
            "{d:?}"
        );
    }

    #[test]
    fn a_missing_budget_takes_the_tier_limits() {
        let s = spec("");
        assert_eq!((s.budget.max_files, s.budget.max_loc), (100, 5000));
    }

    #[test]
    fn lines_changed_counts_added_and_removed_lines() {
        assert_eq!(lines_changed("a\nb\nc\n", "a\nB\nc\nd\n"), 3);
        assert_eq!(lines_changed("", "x\ny\n"), 2);
        assert_eq!(lines_changed("same\n", "same\n"), 0);
    }
}
