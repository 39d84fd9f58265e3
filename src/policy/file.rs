//! Policy files: the YAML an operator writes, read strictly (an unknown key, a
//! bad glob or regex, or an example that does not behave as it claims is an
//! error with its line and column), then compiled into a [`Policy`].
//!
//! The format is documented in `policies/README.md`; `policies/default.yaml`
//! is also the built-in policy, compiled into the binary.

use std::fmt;
use std::path::{Path, PathBuf};

use rmcp::schemars;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::command::FindingKind;
use super::spec::Tiers;
use super::{Policy, Verdict};

/// The shipped default, used when no policy file is given or found.
pub const DEFAULT_POLICY_YAML: &str = include_str!("../../policies/default.yaml");
/// Name shown for the built-in policy.
pub const BUILT_IN_SOURCE: &str = "built-in default (policies/default.yaml)";

/// A policy file as written. Every section is optional; what is missing takes
/// the defaults documented in `policies/README.md`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Format version; only 1 exists.
    pub version: Spanned<u32>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub paths: PathSection,
    #[serde(default)]
    pub commands: CommandSection,
    #[serde(default)]
    pub content: ContentSection,
    #[serde(default)]
    pub tiers: Tiers,
    #[serde(default)]
    pub spec: SpecSection,
    #[serde(default)]
    pub sandbox: super::sandbox::SandboxSection,
    #[serde(default)]
    pub overrides: OverrideSettings,
    #[serde(default)]
    pub tasks: TaskSettings,
}

/// How submitted tasks are routed to agents and how long an agent's hold on
/// one lasts (`tasks:`). Capability matching always filters the candidates
/// first; the strategy picks among those left.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    /// `ucb1` (the agent most likely to succeed at the task's type, with room
    /// to try agents with little history), `least_loaded` or `round_robin`.
    #[serde(default)]
    pub strategy: RoutingStrategy,
    /// UCB1's exploration constant c in `success_rate + c*sqrt(ln(N+1)/(n+1))`:
    /// 0 always takes the best record so far; larger values try others more.
    #[serde(default = "sqrt_two")]
    pub ucb1_exploration: f64,
    /// UCB1's reward is `(1 - w) * success_rate + w * mean_verdict_score/100`
    /// (0 to 1): 0 counts only successes, 1 only how well the work was judged.
    #[serde(default = "half")]
    pub ucb1_score_weight: f64,
    /// An agent not seen (agent_register, task_next, task_update,
    /// task_complete) for this long is not routed to.
    #[serde(default = "ten")]
    pub agent_timeout_minutes: u64,
    /// How long a claim lasts without a task_update (and how long a routed
    /// task waits for its agent to pick it up); then it goes back to the queue.
    #[serde(default = "thirty")]
    pub lease_minutes: u64,
    /// Seed of the draw that breaks ties between equal scores. Set it for
    /// reproducible routing; absent, each server process draws its own (every
    /// routing decision records the seed it used).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Quality gates per risk tier (1, 2, 3): the commands task_complete runs
    /// in the sandbox, in order. A tier without gates is judged on nothing
    /// (the verdict says so).
    #[serde(default)]
    pub gates: std::collections::BTreeMap<u8, Vec<GateSpec>>,
    /// Model judges consulted after the gates pass (none by default).
    #[serde(default)]
    pub judge: JudgeSettings,
    /// Agents the operator declares: in the registry (routable) from the
    /// policy's load, as if each had called agent_register then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<DeclaredAgent>,
}

/// An agent declared in the policy (`tasks.agents`): what `agent_register`
/// would say, written by the operator. The agent connects under `name`
/// (its MCP client name) to claim work.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredAgent {
    pub name: String,
    pub capabilities: crate::tasks::Capabilities,
    /// How many tasks it holds at once (1 to 100).
    #[serde(default = "one_u32")]
    pub max_concurrent_tasks: u32,
}

fn one_u32() -> u32 {
    1
}

/// The model judge (`tasks.judge`): endpoints asked for a verdict on a task
/// whose gates did not fail, and how their answers are combined.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSettings {
    /// The judges; none means no model is asked.
    #[serde(default)]
    pub judges: Vec<JudgeSpec>,
    /// What the judges are told to weigh, besides the acceptance criteria.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rubric: Option<String>,
    /// An outcome whose vote share is below this goes to `needs_review`.
    #[serde(default = "sixty_percent")]
    pub min_confidence: f64,
    /// The gates' weight in the vote (a judge's weight is its confidence).
    #[serde(default = "one_f64")]
    pub gates_weight: f64,
    /// Tries per judge per task_complete (a malformed answer or a failed
    /// call is tried again, up to this many times in all).
    #[serde(default = "three_u32")]
    pub max_attempts: u32,
    /// Wait before the second try; doubled for each later one.
    #[serde(default = "half_second")]
    pub backoff_ms: u64,
    /// Time limit of one call.
    #[serde(default = "one_minute_ms")]
    pub timeout_ms: u64,
    /// Consecutive failed calls to an endpoint that open its circuit breaker.
    #[serde(default = "three_u32")]
    pub breaker_failures: u32,
    /// How long an open breaker fails calls fast before one is tried again.
    #[serde(default = "sixty_u64")]
    pub breaker_cooldown_seconds: u64,
}

impl Default for JudgeSettings {
    fn default() -> Self {
        Self {
            judges: Vec::new(),
            rubric: None,
            min_confidence: sixty_percent(),
            gates_weight: one_f64(),
            max_attempts: three_u32(),
            backoff_ms: half_second(),
            timeout_ms: one_minute_ms(),
            breaker_failures: three_u32(),
            breaker_cooldown_seconds: sixty_u64(),
        }
    }
}

/// One model endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSpec {
    /// Unique; shown in the verdict and the stored exchange.
    pub name: String,
    /// `ollama` (`POST {url}/api/chat`) or `openai` (`POST {url}/v1/chat/completions`).
    pub api: JudgeApi,
    /// The server's base URL, `http://` or `https://`, without the API path.
    pub url: String,
    pub model: String,
    /// An environment variable holding a bearer token (OpenAI-compatible servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Price per 1,000 prompt tokens, in whatever currency the operator counts.
    #[serde(default)]
    pub prompt_price_per_1k: f64,
    /// Price per 1,000 completion tokens.
    #[serde(default)]
    pub completion_price_per_1k: f64,
    /// This judge's time limit of one call (default `tasks.judge.timeout_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Which wire format a judge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JudgeApi {
    Ollama,
    Openai,
}

impl JudgeApi {
    pub fn as_str(self) -> &'static str {
        match self {
            JudgeApi::Ollama => "ollama",
            JudgeApi::Openai => "openai",
        }
    }
}

impl JudgeSettings {
    /// The problems of values out of range, one message each.
    pub fn problems(&self) -> Vec<String> {
        let mut found = Vec::new();
        if !(self.min_confidence.is_finite() && (0.0..=1.0).contains(&self.min_confidence)) {
            found.push(format!(
                "tasks.judge.min_confidence must be between 0 and 1, not {}",
                self.min_confidence
            ));
        }
        if !(self.gates_weight.is_finite() && (0.0..=10.0).contains(&self.gates_weight)) {
            found.push(format!(
                "tasks.judge.gates_weight must be between 0 and 10, not {}",
                self.gates_weight
            ));
        }
        for (field, value, max) in [
            ("max_attempts", u64::from(self.max_attempts), 10),
            ("breaker_failures", u64::from(self.breaker_failures), 100),
            ("timeout_ms", self.timeout_ms, 3_600_000),
            (
                "breaker_cooldown_seconds",
                self.breaker_cooldown_seconds,
                86_400,
            ),
        ] {
            if !(1..=max).contains(&value) {
                found.push(format!(
                    "tasks.judge.{field} must be 1 to {max}, not {value}"
                ));
            }
        }
        if self.backoff_ms > 60_000 {
            found.push(format!(
                "tasks.judge.backoff_ms must be at most 60000, not {}",
                self.backoff_ms
            ));
        }
        let mut names = std::collections::HashSet::new();
        for j in &self.judges {
            let name = j.name.trim();
            if name.is_empty() || j.model.trim().is_empty() {
                found.push("tasks.judge.judges: every judge needs a name and a model".into());
            } else if !names.insert(name) {
                found.push(format!("tasks.judge.judges: two judges are named `{name}`"));
            }
            if !(j.url.starts_with("http://") || j.url.starts_with("https://")) {
                found.push(format!(
                    "tasks.judge.judges.{name}.url must start with http:// or https://, not `{}`",
                    j.url
                ));
            }
            for (field, price) in [
                ("prompt_price_per_1k", j.prompt_price_per_1k),
                ("completion_price_per_1k", j.completion_price_per_1k),
            ] {
                if !(price.is_finite() && price >= 0.0) {
                    found.push(format!(
                        "tasks.judge.judges.{name}.{field} must be 0 or more, not {price}"
                    ));
                }
            }
            if matches!(j.timeout_ms, Some(t) if !(1..=3_600_000).contains(&t)) {
                found.push(format!(
                    "tasks.judge.judges.{name}.timeout_ms must be 1 to 3600000"
                ));
            }
        }
        found
    }
}

fn sixty_percent() -> f64 {
    0.6
}
fn one_f64() -> f64 {
    1.0
}
fn three_u32() -> u32 {
    3
}
fn half_second() -> u64 {
    500
}
fn one_minute_ms() -> u64 {
    60_000
}
fn sixty_u64() -> u64 {
    60
}

/// One quality gate: a command judged by the policy and run in the sandbox
/// like `run_terminal_cmd`; it passes when it exits 0 (and, with a pattern,
/// when the pattern reads a percentage from its output).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    pub name: String,
    pub command: String,
    /// Time limit; default the sandbox's, at most its maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A regex with one capture group that reads the coverage percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_pattern: Option<Spanned<String>>,
    /// A regex with one capture group that reads the mutation score percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutation_pattern: Option<Spanned<String>>,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            strategy: RoutingStrategy::default(),
            ucb1_exploration: sqrt_two(),
            ucb1_score_weight: half(),
            agent_timeout_minutes: ten(),
            lease_minutes: thirty(),
            seed: None,
            gates: Default::default(),
            judge: JudgeSettings::default(),
            agents: Vec::new(),
        }
    }
}

impl TaskSettings {
    /// The problems of values out of range, one message each.
    pub fn problems(&self) -> Vec<String> {
        let mut found = Vec::new();
        if !(self.ucb1_exploration.is_finite() && (0.0..=100.0).contains(&self.ucb1_exploration)) {
            found.push(format!(
                "tasks.ucb1_exploration must be between 0 and 100, not {}",
                self.ucb1_exploration
            ));
        }
        if !(self.ucb1_score_weight.is_finite() && (0.0..=1.0).contains(&self.ucb1_score_weight)) {
            found.push(format!(
                "tasks.ucb1_score_weight must be between 0 and 1, not {}",
                self.ucb1_score_weight
            ));
        }
        for (field, minutes) in [
            ("agent_timeout_minutes", self.agent_timeout_minutes),
            ("lease_minutes", self.lease_minutes),
        ] {
            if !(1..=one_week()).contains(&minutes) {
                found.push(format!(
                    "tasks.{field} must be 1 to {} (a week), not {minutes}",
                    one_week()
                ));
            }
        }
        found.extend(self.judge.problems());
        let mut names = std::collections::HashSet::new();
        for a in &self.agents {
            let name = a.name.as_str();
            if let Err(e) = crate::tasks::registry::check_agent_name(name) {
                found.push(format!("tasks.agents: {e}"));
            } else if !names.insert(name) {
                found.push(format!("tasks.agents: two agents are named `{name}`"));
            }
            if let Err(e) = a.capabilities.normalized() {
                found.push(format!("tasks.agents.{name}.capabilities: {e}"));
            }
            let max = crate::tasks::registry::MAX_CONCURRENT;
            if !(1..=max).contains(&a.max_concurrent_tasks) {
                found.push(format!(
                    "tasks.agents.{name}.max_concurrent_tasks must be 1 to {max}, not {}",
                    a.max_concurrent_tasks
                ));
            }
        }
        for (tier, gates) in &self.gates {
            if !(1..=3).contains(tier) {
                found.push(format!(
                    "tasks.gates: risk tiers are 1, 2 and 3, not {tier}"
                ));
            }
            let mut names = std::collections::HashSet::new();
            for gate in gates {
                let name = gate.name.trim();
                if name.is_empty() || gate.command.trim().is_empty() {
                    found.push(format!(
                        "tasks.gates.{tier}: every gate needs a name and a command"
                    ));
                } else if !names.insert(name) {
                    found.push(format!("tasks.gates.{tier}: two gates are named `{name}`"));
                }
                if gate.timeout_ms == Some(0) {
                    found.push(format!(
                        "tasks.gates.{tier}.{name}: timeout_ms must be at least 1"
                    ));
                }
                if gate.coverage_pattern.is_some() && gate.mutation_pattern.is_some() {
                    found.push(format!(
                        "tasks.gates.{tier}.{name}: a gate reads coverage or mutation, not both (make two gates)"
                    ));
                }
            }
        }
        found
    }

    /// Bad measurement patterns, each located at its line and column.
    pub fn check_patterns(&self, problems: &mut Problems) {
        for (tier, gates) in &self.gates {
            for gate in gates {
                for (field, pattern) in [
                    ("coverage_pattern", &gate.coverage_pattern),
                    ("mutation_pattern", &gate.mutation_pattern),
                ] {
                    let Some(pattern) = pattern else { continue };
                    if let Err(e) = crate::tasks::gates::check_pattern(&pattern.value) {
                        problems.at(
                            pattern,
                            None,
                            format!(
                                "tasks.gates.{tier}.{}.{field} `{}` is not usable: {e}",
                                gate.name, pattern.value
                            ),
                        );
                    }
                }
            }
        }
    }

    /// The gates of a risk tier, in order.
    pub fn gates_for(&self, tier: u8) -> &[GateSpec] {
        self.gates.get(&tier).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// How a task is matched to one of the capable agents.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RoutingStrategy {
    #[default]
    Ucb1,
    LeastLoaded,
    RoundRobin,
}

impl RoutingStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingStrategy::Ucb1 => "ucb1",
            RoutingStrategy::LeastLoaded => "least_loaded",
            RoutingStrategy::RoundRobin => "round_robin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Ucb1, Self::LeastLoaded, Self::RoundRobin]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

fn half() -> f64 {
    0.5
}
fn sqrt_two() -> f64 {
    std::f64::consts::SQRT_2
}
fn ten() -> u64 {
    10
}
fn thirty() -> u64 {
    30
}

/// How agents may ask for exceptions (`override_request`) and how long a
/// person's approval lasts.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideSettings {
    /// Requests one agent may make in any hour.
    #[serde(default = "five")]
    pub max_requests_per_hour: u32,
    /// Denials of one rule after which the agent may not ask for that rule
    /// again until `denial_cooldown_minutes` have passed.
    #[serde(default = "three")]
    pub max_denials: u32,
    #[serde(default = "sixty")]
    pub denial_cooldown_minutes: u64,
    /// How long an approval lasts when the approver does not say.
    #[serde(default = "one_day")]
    pub default_minutes: u64,
    /// The longest an approval may last.
    #[serde(default = "one_week")]
    pub max_minutes: u64,
    /// Ask the person at the client (MCP elicitation) when the client
    /// supports it. Off by default: the agent's own client is the one asking.
    #[serde(default)]
    pub elicitation: bool,
    /// Rule ids no override may waive (in addition to rules marked
    /// `never_waivable: true` and the engine's own invariants).
    #[serde(default)]
    pub never_waivable: Vec<String>,
}

impl Default for OverrideSettings {
    fn default() -> Self {
        Self {
            max_requests_per_hour: five(),
            max_denials: three(),
            denial_cooldown_minutes: sixty(),
            default_minutes: one_day(),
            max_minutes: one_week(),
            elicitation: false,
            never_waivable: Vec::new(),
        }
    }
}

fn five() -> u32 {
    5
}
fn three() -> u32 {
    3
}
fn sixty() -> u64 {
    60
}
fn one_day() -> u64 {
    24 * 60
}
fn one_week() -> u64 {
    7 * 24 * 60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSection {
    /// Decision for a path no rule matches.
    #[serde(default = "allow")]
    pub default: Verdict,
    /// Whether a file with other hard links may be replaced (`LINK-001`).
    #[serde(default)]
    pub allow_hard_linked_writes: bool,
    /// Whether `delete_file` may remove a directory (with everything in it),
    /// and `move_file` may move one. Off by default: such a call is refused
    /// with `DELETE-001` (a person can grant an override for it). Every entry
    /// inside is still judged by the path rules for `write` access, so a
    /// directory holding `.git/` or a secret is refused by those rules too.
    #[serde(default)]
    pub allow_directory_delete: bool,
    #[serde(default)]
    pub rules: Vec<PathRuleSpec>,
}

impl Default for PathSection {
    fn default() -> Self {
        Self {
            default: Verdict::Allow,
            allow_hard_linked_writes: false,
            allow_directory_delete: false,
            rules: Vec::new(),
        }
    }
}

/// What a path rule guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRuleSpec {
    pub id: Spanned<String>,
    pub decision: Verdict,
    /// Default: both read and write.
    #[serde(default = "read_write")]
    pub access: Vec<Access>,
    pub globs: Vec<Spanned<String>>,
    /// Match letters regardless of case (`**/*.pem` also matches `KEY.PEM`).
    /// Default: false (Linux file names are case-sensitive).
    #[serde(default)]
    pub case_insensitive: bool,
    /// No override may waive this rule.
    #[serde(default)]
    pub never_waivable: bool,
    pub justification: String,
    #[serde(default)]
    pub advice: Option<String>,
    #[serde(default)]
    pub examples: Examples,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSection {
    /// Decision for a command no rule matches.
    #[serde(default = "allow")]
    pub default: Verdict,
    /// Let commands use shell syntax (pipes, `;`, redirections); they then run
    /// through `sh -c`. Off by default (`SHELL-001`).
    #[serde(default)]
    pub allow_shell_syntax: bool,
    #[serde(default)]
    pub rules: Vec<CommandRuleSpec>,
    /// Rules on what the command analysis finds in any command: exec-capable
    /// flags (`find -exec`, `git -c`), interpreters, delete flags, ...
    #[serde(default)]
    pub findings: Vec<FindingRuleSpec>,
}

impl Default for CommandSection {
    fn default() -> Self {
        Self {
            default: Verdict::Allow,
            allow_shell_syntax: false,
            rules: Vec::new(),
            findings: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingRuleSpec {
    pub id: Spanned<String>,
    pub decision: Verdict,
    /// Which findings: `exec_flag`, `delete_flag`, `write_flag`, `interpreter`,
    /// `shell_escape`, `runs_project_code`, `exec_env`, `input_arguments`, `path_program`.
    pub kinds: Vec<FindingKind>,
    /// No override may waive this rule.
    #[serde(default)]
    pub never_waivable: bool,
    pub justification: String,
    #[serde(default)]
    pub advice: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRuleSpec {
    pub id: Spanned<String>,
    pub decision: Verdict,
    /// The argv prefix, e.g. `[git, push]`; the program is compared by name,
    /// so `/usr/bin/git` is `git`. Give `prefix` or `prefixes` (any of several).
    #[serde(default)]
    pub prefix: Vec<String>,
    #[serde(default)]
    pub prefixes: Vec<Vec<String>>,
    /// Optional: the rule matches only if one of these appears among the
    /// arguments (`--flag` also matches `--flag=value`; a token ending in `(`
    /// matches inside an argument, e.g. `system(` in an awk program).
    #[serde(default)]
    pub args_any: Vec<String>,
    /// No override may waive this rule.
    #[serde(default)]
    pub never_waivable: bool,
    pub justification: String,
    #[serde(default)]
    pub advice: Option<String>,
    #[serde(default)]
    pub examples: Examples,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentSection {
    #[serde(default)]
    pub rules: Vec<ContentRuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentRuleSpec {
    pub id: Spanned<String>,
    pub decision: Verdict,
    /// Regular expressions (Rust `regex` syntax) that must not be written.
    pub patterns: Vec<Spanned<String>>,
    /// No override may waive this rule.
    #[serde(default)]
    pub never_waivable: bool,
    pub justification: String,
    #[serde(default)]
    pub advice: Option<String>,
    #[serde(default)]
    pub examples: Examples,
}

/// Inputs a rule must match and must not match; checked when the policy loads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Examples {
    #[serde(default, rename = "match")]
    pub must_match: Vec<Spanned<String>>,
    #[serde(default)]
    pub not_match: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpecSection {
    /// Where the active CAWS working spec lives, relative to the workspace.
    #[serde(default = "default_spec_path")]
    pub path: String,
    /// Check writes against the active spec's scope and budget.
    #[serde(default = "yes")]
    pub enforce: bool,
}

impl Default for SpecSection {
    fn default() -> Self {
        Self {
            path: default_spec_path(),
            enforce: true,
        }
    }
}

fn allow() -> Verdict {
    Verdict::Allow
}
fn read_write() -> Vec<Access> {
    vec![Access::Read, Access::Write]
}
fn default_spec_path() -> String {
    ".caws/working-spec.yaml".to_string()
}
fn yes() -> bool {
    true
}

/// Why a policy was refused: where, which rule, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file (or the built-in name).
    pub source: String,
    /// 1-based line and column, when known.
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// The rule at fault, when the problem is inside one.
    pub rule: Option<String>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(rule) = &self.rule {
            write!(f, ": rule {rule}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Collects every problem of one file, so an operator fixes them in one pass.
#[derive(Debug, Default)]
pub struct Problems {
    source: String,
    pub list: Vec<PolicyError>,
}

impl Problems {
    pub fn new(source: &str) -> Self {
        Self {
            source: source.to_string(),
            list: Vec::new(),
        }
    }

    /// Record a problem at `at` (a spanned value of the file), inside `rule`.
    pub fn at<T>(&mut self, at: &Spanned<T>, rule: Option<&str>, message: impl Into<String>) {
        self.list.push(PolicyError {
            source: self.source.clone(),
            line: Some(at.referenced.line() as u32).filter(|&l| l > 0),
            column: Some(at.referenced.column() as u32).filter(|&c| c > 0),
            rule: rule.map(str::to_string),
            message: message.into(),
        });
    }

    pub fn general(&mut self, message: impl Into<String>) {
        self.list.push(PolicyError {
            source: self.source.clone(),
            line: None,
            column: None,
            rule: None,
            message: message.into(),
        });
    }
}

/// All problems of a policy that could not load.
#[derive(Debug, Clone)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// Parse and compile policy text; `source` names it in errors.
pub fn parse_policy(text: &str, source: &str) -> Result<Policy, PolicyErrors> {
    parse_policy_checked(text, source, true)
}

pub fn parse_policy_checked(
    text: &str,
    source: &str,
    check_examples: bool,
) -> Result<Policy, PolicyErrors> {
    let file: PolicyFile = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = error_location(&e);
        PolicyErrors(vec![PolicyError {
            source: source.to_string(),
            line,
            column,
            rule: None,
            message: first_line(&e.to_string()),
        }])
    })?;
    let mut problems = Problems::new(source);
    if file.version.value != 1 {
        problems.at(
            &file.version,
            None,
            format!(
                "unsupported version {}; this arbiter reads version 1",
                file.version.value
            ),
        );
    }
    let policy = Policy::compile(&file, source, &mut problems);
    if !problems.list.is_empty() {
        return Err(PolicyErrors(problems.list));
    }
    let failures = if check_examples {
        policy.check_examples()
    } else {
        Vec::new()
    };
    if !failures.is_empty() {
        return Err(PolicyErrors(failures));
    }
    Ok(policy)
}

/// Read and compile the policy file at `path`.
pub fn load_policy_file(path: &Path) -> Result<Policy, PolicyErrors> {
    load_policy_file_checked(path, true)
}

/// [`load_policy_file`], leaving the examples to the caller when
/// `check_examples` is false (`arbiter policy test` runs them with progress).
pub fn load_policy_file_checked(path: &Path, check_examples: bool) -> Result<Policy, PolicyErrors> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        PolicyErrors(vec![PolicyError {
            source: source.clone(),
            line: None,
            column: None,
            rule: None,
            message: format!("cannot read the policy file: {e}"),
        }])
    })?;
    parse_policy_checked(&text, &source, check_examples)
}

/// The built-in default policy.
pub fn built_in_policy() -> Policy {
    // The shipped file and its examples are tested
    // (`built_in_policy_loads_and_its_examples_pass`), so start-up skips the
    // examples; failing here means the binary was built from a broken default.
    parse_policy_checked(DEFAULT_POLICY_YAML, BUILT_IN_SOURCE, false)
        .unwrap_or_else(|e| panic!("the built-in policy does not load: {e}"))
}

/// The file a server follows for changes: `--policy FILE`, else
/// `<workspace>/.arbiter/policy.yaml` (which may appear later).
pub fn watched_policy_path(explicit: Option<&Path>, workspace: &Path) -> PathBuf {
    explicit.map(Path::to_path_buf).unwrap_or_else(|| {
        workspace
            .join(crate::exec::workspace::STATE_DIR)
            .join("policy.yaml")
    })
}

/// `path` relative to the workspace when it lies inside it (symlinks resolved).
pub fn inside_workspace(path: &Path, workspace: &Path) -> Option<String> {
    let root = std::fs::canonicalize(workspace).ok()?;
    let absolute = std::path::absolute(path).ok()?;
    // The file may not exist yet: resolve its directory.
    let real = match std::fs::canonicalize(&absolute) {
        Ok(real) => real,
        Err(_) => std::fs::canonicalize(absolute.parent()?)
            .ok()?
            .join(absolute.file_name()?),
    };
    let rel = real.strip_prefix(&root).ok()?;
    rel.to_str().map(str::to_string)
}

/// Which policy a workspace uses: `--policy FILE`, else
/// `<workspace>/.arbiter/policy.yaml`, else the built-in default.
pub fn policy_location(explicit: Option<&Path>, workspace: &Path) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    let local = workspace
        .join(crate::exec::workspace::STATE_DIR)
        .join("policy.yaml");
    local.is_file().then_some(local)
}

/// How often a watched policy file is looked at.
pub const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Follow the policy file at `path`: when it changes (or appears), load it; a
/// good file replaces the policy in `slot`, a bad one is refused and logged
/// and the policy in force stays. Runs until the process ends.
pub async fn watch_policy(
    path: PathBuf,
    protected: Vec<String>,
    slot: std::sync::Arc<arc_swap::ArcSwap<Policy>>,
) {
    let mut seen = file_stamp(&path);
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let now = file_stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        if now.is_none() {
            tracing::warn!(policy = %path.display(), "the policy file is gone; the policy in force stays");
            continue;
        }
        match load_policy_file(&path) {
            Ok(mut policy) => {
                policy.protect(&protected);
                tracing::info!(policy = %path.display(), rules = policy.rule_count(), "policy reloaded");
                slot.store(std::sync::Arc::new(policy));
            }
            Err(e) => {
                tracing::error!(policy = %path.display(), "the changed policy is refused; the previous policy stays in force:\n{e}");
            }
        }
    }
}

/// What identifies a version of a file: size, modification time, inode.
fn file_stamp(path: &Path) -> Option<(u64, std::time::SystemTime, u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino(), m.ctime_nsec()))
}

fn error_location(e: &serde_saphyr::Error) -> (Option<u32>, Option<u32>) {
    match e.location() {
        Some(loc) if loc.line() > 0 => (Some(loc.line() as u32), Some(loc.column() as u32)),
        _ => (None, None),
    }
}

/// serde-saphyr renders a snippet of the file under the message; the first
/// line is the message (the location is printed separately).
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message).trim();
    // The location is printed before the message already: drop its repeat.
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line.strip_prefix("line ") {
        Some(rest) => match rest.split_once(": ") {
            Some((place, message)) if place.contains(" column ") => message.to_string(),
            _ => line.to_string(),
        },
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<PolicyError> {
        match parse_policy(text, "p.yaml") {
            Ok(_) => panic!("the policy loaded:\n{text}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn declared_agents_are_checked_like_registrations() {
        let found = errors(
            "version: 1\ntasks:\n  agents:\n    - {name: a, capabilities: {task_types: []}}\n\
             \x20   - {name: a, capabilities: {task_types: [docs]}, max_concurrent_tasks: 0}\n",
        );
        let text: Vec<String> = found.iter().map(|e| e.to_string()).collect();
        let text = text.join("\n");
        assert!(
            text.contains("tasks.agents.a.capabilities: task_types is empty"),
            "{text}"
        );
        assert!(text.contains("two agents are named `a`"), "{text}");
        assert!(
            text.contains("tasks.agents.a.max_concurrent_tasks must be 1 to 100, not 0"),
            "{text}"
        );
    }

    #[test]
    fn built_in_policy_loads_and_its_examples_pass() {
        let policy = parse_policy(DEFAULT_POLICY_YAML, BUILT_IN_SOURCE).unwrap();
        assert!(policy.rule_count() >= 10, "{}", policy.rule_count());
    }

    #[test]
    fn shipped_example_policies_load() {
        for name in ["default.yaml", "strict.yaml", "ci.yaml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("policies")
                .join(name);
            if let Err(e) = load_policy_file(&path) {
                panic!("{name}: {e}");
            }
        }
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_line() {
        let e = errors("version: 1\npaths:\n  rules: []\n  defualt: deny\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(4), "{}", e[0]);
        assert!(e[0].message.contains("defualt"), "{}", e[0]);
    }

    #[test]
    fn a_bad_glob_names_the_rule_and_its_place() {
        let e = errors(
            "version: 1\npaths:\n  rules:\n    - id: P-1\n      decision: deny\n      globs: [\"a/[b\"]\n      justification: j\n",
        );
        assert_eq!(e[0].rule.as_deref(), Some("P-1"));
        assert_eq!(e[0].line, Some(6), "{}", e[0]);
        assert!(e[0].to_string().starts_with("p.yaml:6:"), "{}", e[0]);
    }

    #[test]
    fn an_example_that_does_not_behave_is_refused() {
        let e = errors(
            "version: 1\npaths:\n  rules:\n    - id: P-1\n      decision: deny\n      globs: [\"**/*.pem\"]\n      justification: j\n      examples:\n        match: [a/b.key]\n        not_match: [c.pem]\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().all(|e| e.rule.as_deref() == Some("P-1")));
        assert_eq!(e[0].line, Some(9), "{}", e[0]);
        assert!(e[0].message.contains("a/b.key"), "{}", e[0]);
        assert!(e[1].message.contains("c.pem"), "{}", e[1]);
    }

    #[test]
    fn a_bad_decision_or_version_is_refused() {
        let e = errors("version: 1\npaths:\n  default: maybe\n");
        assert_eq!(e[0].line, Some(3), "{}", e[0]);
        let e = errors("version: 2\n");
        assert!(e[0].message.contains("version 2"), "{}", e[0]);
    }

    #[test]
    fn gates_load_per_tier_and_a_bad_pattern_is_located() {
        let p = parse_policy(
            "version: 1\ntasks:\n  gates:\n    2:\n      - name: tests\n        command: cargo test\n      - name: coverage\n        command: make cov\n        timeout_ms: 5000\n        coverage_pattern: 'coverage: ([0-9.]+)%'\n",
            "p.yaml",
        )
        .unwrap();
        let gates = p.task_settings().gates_for(2);
        assert_eq!(gates.len(), 2);
        assert_eq!(gates[1].timeout_ms, Some(5000));
        assert!(p.task_settings().gates_for(1).is_empty());
        assert_eq!(
            p.effective()["tasks"]["gates"]["2"][1]["coverage_pattern"],
            "coverage: ([0-9.]+)%"
        );
        let e = errors(
            "version: 1\ntasks:\n  gates:\n    1:\n      - name: cov\n        command: make cov\n        coverage_pattern: 'coverage: [0-9]+%'\n",
        );
        assert_eq!(e[0].line, Some(7), "{}", e[0]);
        assert!(e[0].message.contains("capture group"), "{}", e[0]);
        let e = errors("version: 1\ntasks:\n  gates:\n    4: [{name: a, command: b}]\n");
        assert!(e[0].message.contains("not 4"), "{}", e[0]);
        let e = errors("version: 1\ntasks:\n  gates:\n    1: [{name: a, comand: b}]\n");
        assert!(e[0].message.contains("comand"), "{}", e[0]);
    }

    #[test]
    fn judges_load_and_bad_judge_settings_are_refused() {
        let p = parse_policy(
            "version: 1\ntasks:\n  judge:\n    min_confidence: 0.7\n    judges:\n      - {name: local, api: ollama, url: 'http://127.0.0.1:11434', model: llama3.1, prompt_price_per_1k: 0.01}\n      - {name: hosted, api: openai, url: 'https://example.invalid/v1', model: m, api_key_env: KEY}\n",
            "p.yaml",
        )
        .unwrap();
        let j = &p.task_settings().judge;
        assert_eq!(j.judges.len(), 2);
        assert_eq!(j.judges[1].api, JudgeApi::Openai);
        assert_eq!(j.min_confidence, 0.7);
        assert_eq!(j.max_attempts, 3);
        assert_eq!(
            p.effective()["tasks"]["judge"]["judges"][0]["model"],
            "llama3.1"
        );
        for (yaml, says) in [
            (
                "    min_confidence: 2\n",
                "min_confidence must be between 0 and 1",
            ),
            ("    max_attempts: 0\n", "max_attempts must be 1 to 10"),
            ("    breaker_failures: 0\n", "breaker_failures must be 1"),
            (
                "    judges: [{name: a, api: ollama, url: 'ftp://x', model: m}]\n",
                "must start with http:// or https://",
            ),
            (
                "    judges: [{name: a, api: ollama, url: 'http://x', model: m}, {name: a, api: openai, url: 'http://y', model: m}]\n",
                "two judges are named `a`",
            ),
            (
                "    judges: [{name: a, api: ollama, url: 'http://x', model: m, completion_price_per_1k: -1}]\n",
                "completion_price_per_1k must be 0 or more",
            ),
            (
                "    judges: [{name: a, api: claude, url: 'http://x', model: m}]\n",
                "claude",
            ),
        ] {
            let e = errors(&format!("version: 1\ntasks:\n  judge:\n{yaml}"));
            assert!(e.iter().any(|e| e.message.contains(says)), "{yaml}: {e:?}");
        }
    }

    #[test]
    fn duplicate_rule_ids_are_refused() {
        let e = errors(
            "version: 1\ncontent:\n  rules:\n    - {id: C-1, decision: deny, patterns: [a], justification: j}\n    - {id: C-1, decision: deny, patterns: [b], justification: j}\n",
        );
        assert!(e[0].message.contains("more than once"), "{}", e[0]);
        assert_eq!(e[0].line, Some(5), "{}", e[0]);
    }

    #[test]
    fn the_effective_policy_loads_as_a_policy_again() {
        let policy = parse_policy(DEFAULT_POLICY_YAML, BUILT_IN_SOURCE).unwrap();
        let shown = serde_json::to_string_pretty(policy.effective()).unwrap();
        let again = parse_policy(&shown, "shown.json").unwrap();
        assert_eq!(again.effective(), policy.effective());
    }

    #[test]
    fn engine_ids_and_rules_that_never_match_are_refused() {
        let e = errors(
            "version: 1\ncontent:\n  rules:\n    - {id: LINK-001, decision: deny, patterns: [a], justification: j}\n",
        );
        assert!(e[0].message.contains("belongs to the engine"), "{}", e[0]);
        let e = errors(
            "version: 1\npaths:\n  rules:\n    - {id: P-1, decision: deny, access: [], globs: [a], justification: j}\n",
        );
        assert!(e[0].message.contains("never matches"), "{}", e[0]);
        let e = errors(
            "version: 1\ncommands:\n  findings:\n    - {id: F-1, decision: deny, kinds: [], justification: j}\n",
        );
        assert!(e[0].message.contains("never matches"), "{}", e[0]);
    }

    #[test]
    fn yaml_errors_say_their_place_once() {
        let e = errors("version: 1\npaths:\n  defualt: deny\n");
        assert!(!e[0].message.contains("line 3"), "{}", e[0]);
        assert!(e[0].to_string().starts_with("p.yaml:3:"), "{}", e[0]);
    }

    #[test]
    fn case_insensitive_globs_match_any_case() {
        let p = parse_policy(
            "version: 1\npaths:\n  rules:\n    - {id: P-1, decision: deny, globs: [\"**/*.pem\"], case_insensitive: true, justification: j}\n",
            "p.yaml",
        )
        .unwrap();
        let read = |path| p.evaluate(&crate::policy::Action::ReadFile { path });
        assert!(!read("certs/Server.PEM").is_allowed());
        assert!(read("certs/server.txt").is_allowed());
    }

    #[test]
    fn the_tasks_section_has_defaults_and_checks_its_values() {
        let p = parse_policy("version: 1\n", "p.yaml").unwrap();
        assert_eq!(p.task_settings(), &TaskSettings::default());
        assert_eq!(p.effective()["tasks"]["strategy"], "ucb1");
        let p = parse_policy(
            "version: 1\ntasks:\n  strategy: round_robin\n  seed: 7\n  lease_minutes: 5\n",
            "p.yaml",
        )
        .unwrap();
        let t = p.task_settings();
        assert_eq!(t.strategy, RoutingStrategy::RoundRobin);
        assert_eq!(
            (t.seed, t.lease_minutes, t.agent_timeout_minutes),
            (Some(7), 5, 10)
        );
        assert_eq!(p.effective()["tasks"]["seed"], 7);
        let e = errors("version: 1\ntasks:\n  lease_minutes: 0\n  ucb1_exploration: -1\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].message.contains("ucb1_exploration"), "{}", e[0]);
        assert!(e[1].message.contains("lease_minutes"), "{}", e[1]);
        let e = errors("version: 1\ntasks:\n  stratgy: ucb1\n");
        assert_eq!(e[0].line, Some(3), "{}", e[0]);
        let e = errors("version: 1\ntasks:\n  strategy: random\n");
        assert_eq!(e[0].line, Some(3), "{}", e[0]);
    }

    #[test]
    fn task_and_agent_ids_belong_to_the_engine() {
        let e = errors(
            "version: 1\ncontent:\n  rules:\n    - {id: TASK-001, decision: deny, patterns: [a], justification: j}\n",
        );
        assert!(e[0].message.contains("belongs to the engine"), "{}", e[0]);
    }

    #[test]
    fn an_empty_file_needs_a_version() {
        let e = errors("paths: {}\n");
        assert!(e[0].message.contains("version"), "{}", e[0]);
    }
}
