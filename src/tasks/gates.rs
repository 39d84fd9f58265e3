//! Quality gates: the verdict arithmetic, pure so it can be tested without
//! a sandbox. Running the gates is the task tools' job (`tools/tasks.rs`),
//! through the same path as `run_terminal_cmd`.
//!
//! The score is CAWS's: `0.4 × gates + 0.3 × coverage + 0.3 × mutation`,
//! out of 100, where
//! - `gates` is the share of the tier's gates that passed (1 with no gates:
//!   nothing failed);
//! - `coverage` is the coverage read from the coverage gate(s) over the
//!   tier's `min_coverage`, capped at 1 (the lowest, with several gates);
//!   a coverage gate that printed no percentage counts 0; with no coverage
//!   gate, 1: nothing was measured, so nothing is held against the task,
//!   and the reasons say so;
//! - `mutation` likewise, against `min_mutation`.
//!
//! Verdict: any failed gate → `fail`; a score below 70, or a measured
//! coverage or mutation below the tier's minimum → at best `conditional`
//! (a number under the bar is never a plain pass, whatever the rest scores);
//! otherwise `pass`.

use regex::Regex;
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

/// Below this score a task is at best `conditional`.
pub const PASS_SCORE: f64 = 70.0;

/// One gate's result as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct GateResult {
    pub name: String,
    pub command: String,
    pub passed: bool,
    /// Why it failed: GATE-001 (non-zero exit or killed), GATE-002 (the
    /// policy refused the command; `policy_rule` names the rule), GATE-003
    /// (timed out or could not run), GATE-004 (no percentage in its output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    /// The policy rule that refused the command (GATE-002).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_ms: i64,
    /// The coverage or mutation fraction (0 to 1) its pattern read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<f64>,
    /// How it ended, in a sentence.
    pub detail: String,
    /// The end of what it printed (stdout, then stderr), capped.
    pub output_tail: String,
}

/// A stored verdict with its gates.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictRecord {
    pub id: i64,
    pub task_id: i64,
    pub agent: String,
    pub risk_tier: u8,
    pub verdict: Verdict,
    pub score: f64,
    pub coverage: Option<f64>,
    pub mutation: Option<f64>,
    pub reasons: Vec<String>,
    pub decided_at: i64,
    /// `approved` or `rejected`, by a person (tier 1).
    pub review: Option<String>,
    pub reviewed_by: Option<String>,
    pub review_note: Option<String>,
    pub reviewed_at: Option<i64>,
    pub gates: Vec<GateResult>,
}

/// Most bytes of a gate's output kept with its result.
pub const OUTPUT_TAIL_BYTES: usize = 2000;

/// The last `OUTPUT_TAIL_BYTES` of `text`, cut at a character boundary.
pub fn tail(text: &str) -> String {
    if text.len() <= OUTPUT_TAIL_BYTES {
        return text.to_string();
    }
    let mut start = text.len() - OUTPUT_TAIL_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Which measurement a gate's pattern reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Coverage,
    Mutation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Conditional,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Conditional => "conditional",
            Verdict::Fail => "fail",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pass" => Verdict::Pass,
            "conditional" => Verdict::Conditional,
            "fail" => Verdict::Fail,
            _ => return None,
        })
    }
}

/// What one gate contributed to the score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateMark {
    pub passed: bool,
    /// The gate has a coverage or mutation pattern.
    pub measures: Option<Measure>,
    /// The fraction (0 to 1) its pattern read, if it read one.
    pub measured: Option<f64>,
}

/// The verdict and how it was reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// 0 to 100, two decimals.
    pub score: f64,
    /// The lowest coverage and mutation read, as fractions.
    pub coverage: Option<f64>,
    pub mutation: Option<f64>,
    /// One sentence per thing that shaped the verdict.
    pub reasons: Vec<String>,
}

/// The share of `min` that `measured` reaches, capped at 1 (a zero minimum is always met).
fn against(measured: f64, min: f64) -> f64 {
    if min <= 0.0 {
        1.0
    } else {
        (measured / min).clamp(0.0, 1.0)
    }
}

/// One measurement's part of the score (0 to 1) and the lowest value read.
fn part(
    marks: &[GateMark],
    which: Measure,
    min: f64,
    name: &str,
    reasons: &mut Vec<String>,
    below: &mut bool,
) -> (f64, Option<f64>) {
    let gates: Vec<&GateMark> = marks.iter().filter(|m| m.measures == Some(which)).collect();
    if gates.is_empty() {
        reasons.push(format!(
            "no {name} gate for this tier: {name} counts as met in the score"
        ));
        return (1.0, None);
    }
    if gates.iter().any(|m| m.measured.is_none()) {
        reasons.push(format!(
            "a {name} gate printed no percentage: {name} counts 0"
        ));
        let lowest = gates.iter().filter_map(|m| m.measured).reduce(f64::min);
        return (0.0, lowest);
    }
    let lowest = gates
        .iter()
        .filter_map(|m| m.measured)
        .fold(f64::INFINITY, f64::min);
    if lowest < min {
        *below = true;
        reasons.push(format!(
            "{name} {:.1}% is below the tier's minimum {:.1}%",
            lowest * 100.0,
            min * 100.0
        ));
    } else {
        reasons.push(format!(
            "{name} {:.1}% meets the tier's minimum {:.1}%",
            lowest * 100.0,
            min * 100.0
        ));
    }
    (against(lowest, min), Some(lowest))
}

/// The verdict on a tier's gates, given the tier's minimums (fractions).
pub fn judge(marks: &[GateMark], min_coverage: f64, min_mutation: f64) -> Judgement {
    let mut reasons = Vec::new();
    let total = marks.len();
    let passed = marks.iter().filter(|m| m.passed).count();
    let share = if total == 0 {
        reasons.push("no quality gates are configured for this tier (policy tasks.gates)".into());
        1.0
    } else {
        reasons.push(format!("{passed} of {total} gate(s) passed"));
        passed as f64 / total as f64
    };
    let mut below = false;
    let (coverage_part, coverage) = part(
        marks,
        Measure::Coverage,
        min_coverage,
        "coverage",
        &mut reasons,
        &mut below,
    );
    let (mutation_part, mutation) = part(
        marks,
        Measure::Mutation,
        min_mutation,
        "mutation",
        &mut reasons,
        &mut below,
    );
    let raw = 100.0 * (0.4 * share + 0.3 * coverage_part + 0.3 * mutation_part);
    let score = (raw * 100.0).round() / 100.0;
    let verdict = if passed < total {
        Verdict::Fail
    } else if score < PASS_SCORE {
        reasons.push(format!("score {score:.2} is below {PASS_SCORE}"));
        Verdict::Conditional
    } else if below {
        Verdict::Conditional
    } else {
        Verdict::Pass
    };
    Judgement {
        verdict,
        score,
        coverage,
        mutation,
        reasons,
    }
}

/// Whether `pattern` is a usable measurement pattern: a regex with exactly
/// one capture group. The error says what is wrong.
pub fn check_pattern(pattern: &str) -> Result<Regex, String> {
    let re = Regex::new(pattern).map_err(|e| {
        let text = e.to_string();
        text.lines().last().unwrap_or(&text).trim().to_string()
    })?;
    // captures_len counts the whole match as group 0.
    if re.captures_len() != 2 {
        return Err(format!(
            "it must have exactly one capture group (the percentage), not {}",
            re.captures_len() - 1
        ));
    }
    Ok(re)
}

/// The percentage `re` reads from `output`, as a fraction: the last match
/// (tools print a summary line last). `None` if nothing matches or the
/// group is not a number from 0 to 100.
pub fn read_percentage(re: &Regex, output: &str) -> Option<f64> {
    let caps = re.captures_iter(output).last()?;
    let n: f64 = caps.get(1)?.as_str().trim().parse().ok()?;
    (n.is_finite() && (0.0..=100.0).contains(&n)).then_some(n / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(passed: bool) -> GateMark {
        GateMark {
            passed,
            measures: None,
            measured: None,
        }
    }

    fn coverage(measured: Option<f64>) -> GateMark {
        GateMark {
            passed: true,
            measures: Some(Measure::Coverage),
            measured,
        }
    }

    fn mutation(measured: Option<f64>) -> GateMark {
        GateMark {
            passed: true,
            measures: Some(Measure::Mutation),
            measured,
        }
    }

    #[test]
    fn passing_gates_without_measurements_score_100() {
        let j = judge(&[plain(true), plain(true)], 0.8, 0.5);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.score, 100.0);
        assert!(j.reasons.iter().any(|r| r.contains("no coverage gate")));
    }

    #[test]
    fn no_gates_pass_and_say_so() {
        let j = judge(&[], 0.8, 0.5);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.score, 100.0);
        assert!(j.reasons[0].contains("no quality gates"));
    }

    #[test]
    fn any_failed_gate_fails_whatever_the_score() {
        let j = judge(
            &[plain(true), plain(true), plain(true), plain(false)],
            0.8,
            0.5,
        );
        assert_eq!(j.verdict, Verdict::Fail);
        // 0.4 * 3/4 + 0.3 + 0.3
        assert_eq!(j.score, 90.0);
    }

    #[test]
    fn coverage_under_the_minimum_is_conditional_with_its_share() {
        // 0.4 + 0.3 * (0.55 / 0.8) + 0.3 = 0.90625
        let j = judge(&[plain(true), coverage(Some(0.55))], 0.8, 0.5);
        assert_eq!(j.verdict, Verdict::Conditional);
        assert_eq!(j.score, 90.63);
        assert_eq!(j.coverage, Some(0.55));
        assert!(j.reasons.iter().any(|r| r.contains("below")));
    }

    #[test]
    fn a_score_under_70_is_conditional() {
        // 0.4 + 0.3 * (0.55 / 0.8) + 0.3 * (0.1 / 0.5) = 0.66625
        let j = judge(&[coverage(Some(0.55)), mutation(Some(0.1))], 0.8, 0.5);
        assert_eq!(j.verdict, Verdict::Conditional);
        assert_eq!(j.score, 66.63);
        assert!(j.reasons.iter().any(|r| r.contains("below 70")));
    }

    #[test]
    fn measurements_over_the_minimum_are_capped() {
        let j = judge(&[coverage(Some(0.95)), mutation(Some(0.9))], 0.8, 0.5);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.score, 100.0);
    }

    #[test]
    fn an_unread_measurement_counts_zero() {
        // 0.4 + 0 + 0.3
        let j = judge(&[coverage(None)], 0.8, 0.5);
        assert_eq!(j.score, 70.0);
        assert_eq!(j.coverage, None);
    }

    #[test]
    fn the_lowest_of_several_coverage_gates_counts() {
        let j = judge(&[coverage(Some(0.9)), coverage(Some(0.4))], 0.8, 0.5);
        assert_eq!(j.coverage, Some(0.4));
        // 0.4 + 0.3 * 0.5 + 0.3
        assert_eq!(j.score, 85.0);
    }

    #[test]
    fn a_zero_minimum_is_always_met() {
        let j = judge(&[coverage(Some(0.0))], 0.0, 0.0);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.score, 100.0);
    }

    #[test]
    fn tails_keep_the_end_on_a_character_boundary() {
        assert_eq!(tail("short"), "short");
        let long = format!("{}é{}", "a".repeat(10), "b".repeat(OUTPUT_TAIL_BYTES - 1));
        let t = tail(&long);
        assert!(t.starts_with('…') && t.ends_with('b'));
        assert!(t.len() <= OUTPUT_TAIL_BYTES + '…'.len_utf8());
    }

    #[test]
    fn patterns_need_one_group_and_read_the_last_match() {
        assert!(check_pattern("coverage: ([0-9.]+)%").is_ok());
        assert!(
            check_pattern("coverage: [0-9.]+%")
                .unwrap_err()
                .contains("not 0")
        );
        assert!(check_pattern("(a)(b)").unwrap_err().contains("not 2"));
        assert!(check_pattern("(unclosed").is_err());
        let re = check_pattern(r"coverage: ([0-9.]+)%").unwrap();
        let out = "coverage: 12%\nlib: 40%\ncoverage: 55.5%\n";
        assert_eq!(read_percentage(&re, out), Some(0.555));
        assert_eq!(read_percentage(&re, "nothing here"), None);
        assert_eq!(read_percentage(&re, "coverage: 250%"), None);
    }
}
