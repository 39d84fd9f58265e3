//! The model judge, pure parts: what a judge is asked ([`prompt`]), the
//! request body each wire format takes ([`request_body`]), reading its reply
//! ([`reply_content`], [`usage`]) and the answer inside it ([`parse_answer`],
//! a fixed shape, checked strictly), pricing ([`cost`]), combining verdicts
//! ([`combine`]) and the circuit breaker's state ([`Breaker`]). The HTTP
//! calls are [`super::judge_client`]'s.
//!
//! A judge never passes a task silently: a judge that gave no valid answer
//! (malformed after its tries, timed out, circuit open) sends the task to
//! `needs_review`, and so does a vote whose winner holds less than
//! `min_confidence` of the weight.

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::gates::{GateResult, Judgement, Verdict};
use super::{TaskRecord, rfc3339_ms};
use crate::policy::file::{JudgeApi, JudgeSpec};
use crate::policy::spec::AcceptanceCriterion;

/// The answer was not the required JSON (after a reply that was read).
pub const MALFORMED: &str = "JUDGE-001";
/// The call failed: no connection, a time-out, an HTTP error, no API key.
pub const CALL_FAILED: &str = "JUDGE-002";
/// The endpoint's circuit breaker is open: not called.
pub const BREAKER_OPEN: &str = "JUDGE-003";
/// The vote was too close, or a judge gave no answer: a person decides.
pub const LOW_CONFIDENCE: &str = "JUDGE-004";

/// Most characters of the spec, a description or a gate's output put in a prompt.
const SPEC_CHARS: usize = 8_000;
const TEXT_CHARS: usize = 6_000;
/// What changed: the files with their diffs, then the calls.
const CHANGES_CHARS: usize = 24_000;
const GATE_OUTPUT_CHARS: usize = 800;
/// Most reasons and characters per reason kept from an answer.
const MAX_REASONS: usize = 20;
const REASON_CHARS: usize = 500;

/// A judge's verdict, in the one shape it must answer with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JudgeAnswer {
    pub verdict: Verdict,
    /// 0 to 100.
    pub score: f64,
    /// 0 to 1: how sure the judge is.
    pub confidence: f64,
    pub reasons: Vec<String>,
}

/// Tokens a reply says it used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// One HTTP call to a judge (one try).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct JudgeCall {
    pub attempt: u32,
    /// RFC 3339, UTC.
    #[serde(serialize_with = "ms_as_time")]
    #[schemars(with = "String")]
    pub started_at: i64,
    pub duration_ms: i64,
    /// The request body sent (left out of task_status; `arbiter task review` shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The reply body as received (capped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_answer: Option<String>,
    /// The answer, when it had the required shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<JudgeAnswer>,
    /// JUDGE-001 (malformed), JUDGE-002 (call failed), JUDGE-003 (breaker open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// From the judge's per-1k-token prices.
    pub cost: f64,
}

fn ms_as_time<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_ms(*ms))
}

/// Everything one judge was asked and answered for one task_complete.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Exchange {
    pub judge: String,
    /// `ollama` or `openai`.
    pub api: String,
    /// The endpoint called.
    pub url: String,
    pub model: String,
    /// The valid answer, if any try gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<JudgeAnswer>,
    /// Why there is no answer: the last try's rule id and error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every try, in order.
    pub calls: Vec<JudgeCall>,
}

impl Exchange {
    /// An exchange read back from its calls: the answer is the last valid
    /// one; without one, the last call's error says why.
    pub fn from_calls(
        judge: String,
        api: String,
        url: String,
        model: String,
        calls: Vec<JudgeCall>,
    ) -> Self {
        let answer = calls.iter().rev().find_map(|c| c.answer.clone());
        let (rule_id, error) = match (&answer, calls.last()) {
            (None, Some(last)) => (last.rule_id.clone(), last.error.clone()),
            _ => (None, None),
        };
        Self {
            judge,
            api,
            url,
            model,
            answer,
            rule_id,
            error,
            calls,
        }
    }

    pub fn tokens(&self) -> (u64, u64) {
        self.calls.iter().fold((0, 0), |(p, c), call| {
            (
                p + call.prompt_tokens.unwrap_or(0),
                c + call.completion_tokens.unwrap_or(0),
            )
        })
    }

    pub fn cost(&self) -> f64 {
        self.calls.iter().map(|c| c.cost).sum()
    }
}

/// One voter's say: the gates or a judge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Vote {
    /// `gates` or the judge's name.
    pub source: String,
    pub verdict: Verdict,
    /// The gates' configured weight, or the judge's confidence.
    pub weight: f64,
}

/// The combined outcome of the gates and the judges.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Arbitration {
    /// What the gates alone said.
    pub gates_verdict: Verdict,
    /// The vote's winner (ties go to the stricter verdict).
    pub verdict: Verdict,
    /// The winner's share of the weight, 0 to 1.
    pub confidence: f64,
    /// A person must decide: the vote was under `min_confidence`, or a judge gave no valid answer.
    pub needs_review: bool,
    pub reasons: Vec<String>,
    pub votes: Vec<Vote>,
    pub exchanges: Vec<Exchange>,
}

impl Arbitration {
    /// Prompt and completion tokens, and cost, over every call.
    pub fn usage(&self) -> (u64, u64, f64) {
        self.exchanges.iter().fold((0, 0, 0.0), |(p, c, cost), e| {
            let (ep, ec) = e.tokens();
            (p + ep, c + ec, cost + e.cost())
        })
    }
}

/// A stored arbitration.
#[derive(Debug, Clone, PartialEq)]
pub struct ArbitrationRecord {
    pub id: i64,
    pub verdict_id: i64,
    pub task_id: i64,
    pub decided_at: i64,
    pub arbitration: Arbitration,
}

/// What a judge is shown about a task.
pub struct Brief<'a> {
    pub task: &'a TaskRecord,
    pub summary: &'a str,
    pub acceptance: &'a [AcceptanceCriterion],
    pub judgement: &'a Judgement,
    pub gates: &'a [GateResult],
    /// Files and lines changed under the task, when known.
    pub changes: Option<&'a str>,
}

fn cap(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max).collect();
    format!("{kept}… (cut at {max} characters)")
}

fn cap_tail(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let kept: String = text.chars().skip(n - max).collect();
    format!("…{kept}")
}

/// The shape every answer must have, as told to the judge.
pub const ANSWER_SHAPE: &str = r#"{"verdict": "pass" | "conditional" | "fail", "score": <number 0-100>, "confidence": <number 0-1>, "reasons": [<one sentence per finding>]}"#;

/// The system and user messages for a judge.
pub fn prompt(rubric: Option<&str>, b: &Brief<'_>) -> (String, String) {
    let mut system = String::from(
        "You judge whether an agent's work on a software task meets the task's acceptance criteria. \
         You see the task, its working spec, the agent's summary, what changed (when known) and \
         the quality gates' results. `pass`: every criterion is met; `conditional`: met with \
         gaps a person should know about; `fail`: a criterion is not met or the evidence is \
         missing. `confidence` is how sure you are (0 to 1).\n",
    );
    if let Some(rubric) = rubric.map(str::trim).filter(|r| !r.is_empty()) {
        system.push_str(&format!("Also weigh this rubric:\n{rubric}\n"));
    }
    system.push_str(&format!(
        "Answer with one JSON object and nothing else, with exactly these keys: {ANSWER_SHAPE}"
    ));

    let t = b.task;
    let mut user = format!(
        "Task {} ({}, risk tier {}): {}\n\nDescription:\n{}\n",
        t.display_id(),
        t.task_type.as_str(),
        t.risk_tier,
        t.title,
        cap(&t.description, TEXT_CHARS)
    );
    if let Some(spec) = &t.spec {
        user.push_str(&format!(
            "\nWorking spec {}:\n{}\n",
            t.spec_id.as_deref().unwrap_or(""),
            cap(spec, SPEC_CHARS)
        ));
    }
    user.push_str("\nAcceptance criteria:\n");
    if b.acceptance.is_empty() {
        user.push_str("- none given: judge against the title and description\n");
    }
    for a in b.acceptance {
        user.push_str(&format!(
            "- {}: given {}, when {}, then {}\n",
            a.id, a.given, a.when, a.then
        ));
    }
    user.push_str(&format!(
        "\nThe agent's summary:\n{}\n",
        cap(b.summary, TEXT_CHARS)
    ));
    user.push_str(&format!(
        "\nChanges:\n{}\n",
        b.changes
            .map(|c| cap(c, CHANGES_CHARS))
            .unwrap_or_else(|| "not known (judge from the summary and the gates)".to_string())
    ));
    let j = b.judgement;
    user.push_str(&format!(
        "\nQuality gates: {} (score {:.2}): {}\n",
        j.verdict.as_str(),
        j.score,
        j.reasons.join("; ")
    ));
    for g in b.gates {
        user.push_str(&format!(
            "- {} `{}`: {} ({})\n",
            g.name,
            g.command,
            if g.passed { "passed" } else { "failed" },
            g.detail
        ));
        let out = g.output_tail.trim();
        if !out.is_empty() {
            user.push_str(&format!(
                "  output (end):\n  {}\n",
                cap_tail(out, GATE_OUTPUT_CHARS).replace('\n', "\n  ")
            ));
        }
    }
    (system, user)
}

/// The path each wire format is served on, after the base URL.
pub fn endpoint(spec: &JudgeSpec) -> String {
    let base = spec.url.trim_end_matches('/');
    match spec.api {
        JudgeApi::Ollama => format!("{base}/api/chat"),
        JudgeApi::Openai if base.ends_with("/v1") => format!("{base}/chat/completions"),
        JudgeApi::Openai => format!("{base}/v1/chat/completions"),
    }
}

/// The request body: non-streaming, JSON output asked for, temperature 0.
pub fn request_body(api: JudgeApi, model: &str, system: &str, user: &str) -> Value {
    let messages = json!([
        {"role": "system", "content": system},
        {"role": "user", "content": user},
    ]);
    match api {
        JudgeApi::Ollama => json!({
            "model": model,
            "messages": messages,
            "stream": false,
            "format": "json",
            "options": {"temperature": 0},
        }),
        JudgeApi::Openai => json!({
            "model": model,
            "messages": messages,
            "stream": false,
            "response_format": {"type": "json_object"},
            "temperature": 0,
        }),
    }
}

/// The tokens a reply reports: Ollama's `prompt_eval_count`/`eval_count`,
/// OpenAI's `usage.prompt_tokens`/`usage.completion_tokens`.
pub fn usage(api: JudgeApi, reply: &Value) -> Usage {
    let (p, c) = match api {
        JudgeApi::Ollama => (&reply["prompt_eval_count"], &reply["eval_count"]),
        JudgeApi::Openai => (
            &reply["usage"]["prompt_tokens"],
            &reply["usage"]["completion_tokens"],
        ),
    };
    Usage {
        prompt_tokens: p.as_u64(),
        completion_tokens: c.as_u64(),
    }
}

/// The model's message text in a reply.
pub fn reply_content(api: JudgeApi, reply: &Value) -> Result<String, String> {
    let content = match api {
        JudgeApi::Ollama => &reply["message"]["content"],
        JudgeApi::Openai => &reply["choices"][0]["message"]["content"],
    };
    content
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| match api {
            JudgeApi::Ollama => "the reply has no message.content string".to_string(),
            JudgeApi::Openai => "the reply has no choices[0].message.content string".to_string(),
        })
}

/// The answer as the judge must write it; unknown keys are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenAnswer {
    verdict: String,
    score: f64,
    confidence: f64,
    reasons: Vec<String>,
}

/// Read and check a judge's answer; the error says what is wrong with it.
pub fn parse_answer(content: &str) -> Result<JudgeAnswer, String> {
    let w: WrittenAnswer = serde_json::from_str(content.trim())
        .map_err(|e| format!("the answer is not {ANSWER_SHAPE}: {e}"))?;
    let verdict = Verdict::parse(&w.verdict).ok_or_else(|| {
        format!(
            "verdict must be pass, conditional or fail, not {:?}",
            w.verdict
        )
    })?;
    if !(w.score.is_finite() && (0.0..=100.0).contains(&w.score)) {
        return Err(format!("score must be 0 to 100, not {}", w.score));
    }
    if !(w.confidence.is_finite() && (0.0..=1.0).contains(&w.confidence)) {
        return Err(format!("confidence must be 0 to 1, not {}", w.confidence));
    }
    let reasons: Vec<String> = w
        .reasons
        .iter()
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .take(MAX_REASONS)
        .map(|r| cap(r, REASON_CHARS))
        .collect();
    if reasons.is_empty() {
        return Err("reasons must hold at least one sentence".into());
    }
    Ok(JudgeAnswer {
        verdict,
        score: w.score,
        confidence: w.confidence,
        reasons,
    })
}

/// What a call cost at the judge's per-1,000-token prices (6 decimals).
pub fn cost(spec: &JudgeSpec, u: Usage) -> f64 {
    let raw = u.prompt_tokens.unwrap_or(0) as f64 / 1000.0 * spec.prompt_price_per_1k
        + u.completion_tokens.unwrap_or(0) as f64 / 1000.0 * spec.completion_price_per_1k;
    (raw * 1e6).round() / 1e6
}

fn severity(v: Verdict) -> u8 {
    match v {
        Verdict::Pass => 0,
        Verdict::Conditional => 1,
        Verdict::Fail => 2,
    }
}

/// Combine the gates' verdict (weight `gates_weight`) and each judge's valid
/// answer (weight: its confidence) by weighted vote. A judge without a
/// valid answer gets no vote but sends the task to a person.
pub fn combine(
    gates_verdict: Verdict,
    gates_weight: f64,
    exchanges: Vec<Exchange>,
    min_confidence: f64,
) -> Arbitration {
    let mut votes = vec![Vote {
        source: "gates".into(),
        verdict: gates_verdict,
        weight: gates_weight,
    }];
    let mut reasons = Vec::new();
    let mut silent = Vec::new();
    for e in &exchanges {
        match &e.answer {
            Some(a) => {
                votes.push(Vote {
                    source: e.judge.clone(),
                    verdict: a.verdict,
                    weight: a.confidence,
                });
                reasons.push(format!(
                    "judge {} ({}): {} (score {:.0}, confidence {:.2}): {}",
                    e.judge,
                    e.model,
                    a.verdict.as_str(),
                    a.score,
                    a.confidence,
                    a.reasons.join("; ")
                ));
            }
            None => {
                silent.push(e.judge.clone());
                reasons.push(format!(
                    "judge {} gave no valid answer in {} tries [{}]: {}",
                    e.judge,
                    e.calls.len(),
                    e.rule_id.as_deref().unwrap_or(CALL_FAILED),
                    e.error.as_deref().unwrap_or("no answer")
                ));
            }
        }
    }
    let total: f64 = votes.iter().map(|v| v.weight).sum();
    let weight_of = |verdict: Verdict| -> f64 {
        votes
            .iter()
            .filter(|v| v.verdict == verdict)
            .map(|v| v.weight)
            .sum()
    };
    // The heaviest verdict; on a tie, the stricter.
    let verdict = [Verdict::Fail, Verdict::Conditional, Verdict::Pass]
        .into_iter()
        .max_by(|a, b| {
            weight_of(*a)
                .total_cmp(&weight_of(*b))
                .then(severity(*a).cmp(&severity(*b)))
        })
        .unwrap_or(gates_verdict);
    let confidence = if total > 0.0 {
        ((weight_of(verdict) / total) * 1e4).round() / 1e4
    } else {
        0.0
    };
    let tally: Vec<String> = votes
        .iter()
        .map(|v| format!("{} {} {:.2}", v.source, v.verdict.as_str(), v.weight))
        .collect();
    reasons.push(format!(
        "vote ({}): {} with {:.0}% of the weight",
        tally.join(", "),
        verdict.as_str(),
        confidence * 100.0
    ));
    let mut needs_review = false;
    if !silent.is_empty() {
        needs_review = true;
        reasons.push(format!(
            "[{LOW_CONFIDENCE}] a person must review: judge(s) {} gave no valid answer",
            silent.join(", ")
        ));
    }
    if confidence < min_confidence {
        needs_review = true;
        reasons.push(format!(
            "[{LOW_CONFIDENCE}] a person must review: {:.0}% is under min_confidence {:.0}%",
            confidence * 100.0,
            min_confidence * 100.0
        ));
    }
    Arbitration {
        gates_verdict,
        verdict,
        confidence,
        needs_review,
        reasons,
        votes,
        exchanges,
    }
}

/// One endpoint's circuit breaker: after `threshold` consecutive failed
/// calls it opens for the cool-down, failing calls fast; then one call is
/// let through (others still fail fast until it reports, or until its
/// `probe_ms` are up, should it never report), and a failure opens it again
/// at once (the count is kept until a call succeeds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Breaker {
    pub consecutive_failures: u32,
    /// Unix milliseconds.
    pub open_until: Option<i64>,
}

impl Breaker {
    /// `Err(until)` while open. The first call after the cool-down is the
    /// probe: it is let through and the breaker stays shut to the others
    /// for `probe_ms`.
    pub fn check(&mut self, now: i64, probe_ms: i64) -> Result<(), i64> {
        match self.open_until {
            Some(until) if now < until => Err(until),
            Some(_) => {
                self.open_until = Some(now + probe_ms.max(1));
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn success(&mut self) {
        *self = Self::default();
    }

    /// Count a failure; `true` when this one opened the breaker.
    pub fn failure(&mut self, now: i64, threshold: u32, cooldown_ms: i64) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.consecutive_failures >= threshold.max(1) {
            self.open_until = Some(now + cooldown_ms);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{RequiredCapabilities, TaskState, TaskType};

    fn task() -> TaskRecord {
        TaskRecord {
            id: 7,
            tenant: "default".into(),
            title: "Fix crash when the config is empty".into(),
            description: "It panics.".into(),
            spec: Some("id: FIX-1\n".into()),
            spec_id: Some("FIX-1".into()),
            task_type: TaskType::Bugfix,
            type_confidence: 1.0,
            type_source: "given".into(),
            risk_tier: 2,
            tier_reason: "spec".into(),
            priority: 3,
            required: RequiredCapabilities::default(),
            state: TaskState::Claimed,
            assigned_agent: None,
            holder: Some("w".into()),
            lease_expires_at: None,
            progress: 0,
            attempts: 1,
            submitted_by: "lead".into(),
            summary: None,
            created_at: 0,
            updated_at: 0,
            claimed_at: None,
            completed_at: None,
        }
    }

    fn answered(judge: &str, verdict: Verdict, confidence: f64) -> Exchange {
        Exchange::from_calls(
            judge.into(),
            "ollama".into(),
            "http://127.0.0.1/api/chat".into(),
            "m".into(),
            vec![JudgeCall {
                attempt: 1,
                started_at: 0,
                duration_ms: 1,
                request: None,
                http_status: Some(200),
                raw_answer: None,
                answer: Some(JudgeAnswer {
                    verdict,
                    score: 80.0,
                    confidence,
                    reasons: vec!["why".into()],
                }),
                rule_id: None,
                error: None,
                prompt_tokens: Some(10),
                completion_tokens: Some(5),
                cost: 0.5,
            }],
        )
    }

    fn silent(judge: &str) -> Exchange {
        let call = JudgeCall {
            attempt: 1,
            started_at: 0,
            duration_ms: 1,
            request: None,
            http_status: None,
            raw_answer: None,
            answer: None,
            rule_id: Some(CALL_FAILED.into()),
            error: Some("timed out".into()),
            prompt_tokens: None,
            completion_tokens: None,
            cost: 0.0,
        };
        Exchange::from_calls(
            judge.into(),
            "openai".into(),
            "u".into(),
            "m".into(),
            vec![call],
        )
    }

    #[test]
    fn the_prompt_shows_criteria_summary_and_gates_and_the_shape() {
        let acceptance = vec![AcceptanceCriterion {
            id: "A1".into(),
            given: "an empty config".into(),
            when: "it starts".into(),
            then: "it uses defaults".into(),
        }];
        let j = crate::tasks::gates::judge(&[], 0.8, 0.5);
        let gates = vec![GateResult {
            name: "tests".into(),
            command: "cargo test".into(),
            passed: true,
            rule_id: None,
            policy_rule: None,
            exit_code: Some(0),
            duration_ms: 5,
            measured: None,
            detail: "exited 0".into(),
            output_tail: "ok: 12 passed\n".into(),
        }];
        let t = task();
        let (system, user) = prompt(
            Some("Prefer small diffs."),
            &Brief {
                task: &t,
                summary: "guarded the empty case",
                acceptance: &acceptance,
                judgement: &j,
                gates: &gates,
                changes: None,
            },
        );
        assert!(system.contains("Prefer small diffs."));
        assert!(system.contains(ANSWER_SHAPE));
        for part in [
            "T-7 (bugfix, risk tier 2)",
            "A1: given an empty config, when it starts, then it uses defaults",
            "guarded the empty case",
            "tests `cargo test`: passed (exited 0)",
            "ok: 12 passed",
            "Working spec FIX-1",
        ] {
            assert!(user.contains(part), "{part} missing from:\n{user}");
        }
    }

    #[test]
    fn answers_must_have_the_exact_shape() {
        let a = parse_answer(
            r#" {"verdict":"pass","score":88,"confidence":0.9,"reasons":["tests cover A1"]} "#,
        )
        .unwrap();
        assert_eq!(a.verdict, Verdict::Pass);
        assert_eq!(a.confidence, 0.9);
        for (bad, why) in [
            ("not json", "is not"),
            (
                r#"{"verdict":"maybe","score":1,"confidence":0.5,"reasons":["x"]}"#,
                "verdict must",
            ),
            (
                r#"{"verdict":"pass","score":101,"confidence":0.5,"reasons":["x"]}"#,
                "score must",
            ),
            (
                r#"{"verdict":"pass","score":1,"confidence":1.5,"reasons":["x"]}"#,
                "confidence must",
            ),
            (
                r#"{"verdict":"pass","score":1,"confidence":0.5,"reasons":[" "]}"#,
                "reasons must",
            ),
            (
                r#"{"verdict":"pass","score":1,"confidence":0.5}"#,
                "missing field",
            ),
            (
                r#"{"verdict":"pass","score":1,"confidence":0.5,"reasons":["x"],"extra":1}"#,
                "unknown field",
            ),
        ] {
            let e = parse_answer(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn replies_are_read_in_both_wire_formats() {
        let ollama = json!({"message": {"role": "assistant", "content": "{}"}, "done": true,
            "prompt_eval_count": 120, "eval_count": 30});
        assert_eq!(reply_content(JudgeApi::Ollama, &ollama).unwrap(), "{}");
        assert_eq!(
            usage(JudgeApi::Ollama, &ollama),
            Usage {
                prompt_tokens: Some(120),
                completion_tokens: Some(30)
            }
        );
        let openai = json!({"choices": [{"message": {"content": "{}"}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}});
        assert_eq!(reply_content(JudgeApi::Openai, &openai).unwrap(), "{}");
        assert_eq!(usage(JudgeApi::Openai, &openai).completion_tokens, Some(3));
        assert!(reply_content(JudgeApi::Openai, &ollama).is_err());
        let body = request_body(JudgeApi::Ollama, "m", "s", "u");
        assert_eq!(body["format"], "json");
        assert_eq!(body["stream"], false);
        let body = request_body(JudgeApi::Openai, "m", "s", "u");
        assert_eq!(body["response_format"]["type"], "json_object");
    }

    #[test]
    fn endpoints_and_costs() {
        let mut spec = JudgeSpec {
            name: "j".into(),
            api: JudgeApi::Openai,
            url: "http://127.0.0.1:9/".into(),
            model: "m".into(),
            api_key_env: None,
            prompt_price_per_1k: 0.5,
            completion_price_per_1k: 1.5,
            timeout_ms: None,
        };
        assert_eq!(endpoint(&spec), "http://127.0.0.1:9/v1/chat/completions");
        spec.url = "https://host/v1".into();
        assert_eq!(endpoint(&spec), "https://host/v1/chat/completions");
        spec.api = JudgeApi::Ollama;
        assert_eq!(endpoint(&spec), "https://host/v1/api/chat");
        let u = Usage {
            prompt_tokens: Some(1200),
            completion_tokens: Some(300),
        };
        // 1.2 * 0.5 + 0.3 * 1.5
        assert_eq!(cost(&spec, u), 1.05);
        assert_eq!(cost(&spec, Usage::default()), 0.0);
    }

    #[test]
    fn agreeing_votes_carry_full_confidence() {
        let a = combine(
            Verdict::Pass,
            1.0,
            vec![answered("a", Verdict::Pass, 0.9)],
            0.6,
        );
        assert_eq!(a.verdict, Verdict::Pass);
        assert_eq!(a.confidence, 1.0);
        assert!(!a.needs_review);
        assert_eq!(a.usage(), (10, 5, 0.5));
    }

    #[test]
    fn a_close_disagreement_goes_to_a_person() {
        // pass 1.0 + 0.3 against fail 0.9 + 0.8: fail wins with 1.7/3.0.
        let a = combine(
            Verdict::Pass,
            1.0,
            vec![
                answered("a", Verdict::Fail, 0.9),
                answered("b", Verdict::Pass, 0.3),
                answered("c", Verdict::Fail, 0.8),
            ],
            0.6,
        );
        assert_eq!(a.verdict, Verdict::Fail);
        assert_eq!(a.confidence, 0.5667);
        assert!(a.needs_review);
        assert!(a.reasons.iter().any(|r| r.contains(LOW_CONFIDENCE)));
    }

    #[test]
    fn a_confident_judge_can_outvote_light_gates() {
        let a = combine(
            Verdict::Pass,
            0.2,
            vec![answered("a", Verdict::Fail, 0.95)],
            0.6,
        );
        assert_eq!(a.verdict, Verdict::Fail);
        assert!(!a.needs_review, "{a:?}");
    }

    #[test]
    fn ties_go_to_the_stricter_verdict() {
        let a = combine(
            Verdict::Pass,
            0.5,
            vec![answered("a", Verdict::Conditional, 0.5)],
            0.0,
        );
        assert_eq!(a.verdict, Verdict::Conditional);
        assert_eq!(a.confidence, 0.5);
    }

    #[test]
    fn a_judge_without_an_answer_is_never_a_silent_pass() {
        let a = combine(
            Verdict::Pass,
            1.0,
            vec![answered("a", Verdict::Pass, 1.0), silent("b")],
            0.6,
        );
        assert_eq!(a.verdict, Verdict::Pass);
        assert!(a.needs_review);
        assert!(
            a.reasons
                .iter()
                .any(|r| r.contains("judge b gave no valid answer"))
        );
    }

    #[test]
    fn the_breaker_opens_fails_fast_and_lets_one_probe_through() {
        let mut b = Breaker::default();
        assert!(b.check(0, 100).is_ok());
        assert!(!b.failure(0, 2, 1000));
        assert!(b.check(1, 100).is_ok());
        assert!(b.failure(10, 2, 1000));
        assert_eq!(b.check(500, 100), Err(1010));
        // After the cool-down one call goes through, and only one: the
        // others fail fast while it is out; its failure reopens at once.
        assert!(b.check(1010, 100).is_ok());
        assert_eq!(b.check(1011, 100), Err(1110));
        assert!(b.failure(1050, 2, 1000));
        assert_eq!(b.check(1500, 100), Err(2050));
        // A probe that never reports lets another through once its time is up.
        assert!(b.check(2050, 100).is_ok());
        assert_eq!(b.check(2100, 100), Err(2150));
        assert!(b.check(2150, 100).is_ok());
        b.success();
        assert!(b.check(2200, 100).is_ok());
        assert!(b.check(2201, 100).is_ok());
        assert_eq!(b.consecutive_failures, 0);
    }
}
