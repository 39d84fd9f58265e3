//! CAWS working specs (`.caws/working-spec.yaml`): what a change promises
//! before any code is written, checked against its risk tier, and the scope
//! every write is then held to.
//!
//! [`validate_spec`] reads the document field by field, so one mistyped field
//! does not hide the problems in the others: a spec with five problems gets
//! five violations, each with the field path, a rule id and a concrete fix.
//! Like the policy engine it is pure: no I/O, no clock, no waiver files.
//!
//! The format is the CAWS working-spec schema (`working-spec.schema.json` in
//! Paths-Design/coding-agent-working-standard) and the tier rules of its
//! validator; where CAWS is silent, arbiter's own rules fill in:
//!
//! | rule | what it catches |
//! |---|---|
//! | `SPEC-001` | not YAML/JSON (with line and column), a field of the wrong type (with its path), an unknown top-level key (warning) |
//! | `SPEC-002` | `id`, `title`, `mode`, `risk_tier` or a waiver id missing or malformed |
//! | `SCOPE-001` | `scope.in` empty, a bad glob, a `scope.out` entry that cancels a `scope.in` entry; and every write outside scope ([`SpecScope`]) |
//! | `BLAST-001` | `blast_radius` missing or naming no module |
//! | `ROLLBACK-001` | no `operational_rollback_slo` or `rollback` steps where the tier needs them |
//! | `ACCEPTANCE-001` | no acceptance criteria, one without id/given/when/then, duplicate ids |
//! | `INVARIANT-001` | no invariants |
//! | `CONTRACT-001` | the tier requires contracts and there are none, or one is incomplete |
//! | `OBSERVABILITY-001` | no logs/metrics/traces where the tier needs them |
//! | `NONFUNC-001` | `non_functional` missing, or no security/perf requirements where the tier needs them |
//! | `BUDGET-001` | `change_budget` above the tier's limit |
//! | `BUDGET-002` | no `change_budget`: the tier's limits apply (warning) |

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rmcp::schemars::{self, JsonSchema};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Risk tiers
// ---------------------------------------------------------------------------

/// One risk tier's budget and quality thresholds. CAWS defaults: tier 1 = 25
/// files / 1000 lines, coverage 0.90, mutation 0.70, contracts and human
/// review required; tier 2 = 50 / 2000, 0.80, 0.50, contracts required;
/// tier 3 = 100 / 5000, 0.70, 0.30.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TierBudget {
    /// Most files one change may touch.
    pub max_files: u32,
    /// Most lines (added + removed) one change may touch.
    pub max_loc: u32,
    /// Minimum branch coverage, as a fraction (0.90 = 90%).
    pub min_coverage: f64,
    /// Minimum mutation score, as a fraction.
    pub min_mutation: f64,
    /// Specs at this tier must name at least one contract.
    pub contracts_required: bool,
    /// A person must review changes at this tier.
    pub human_review: bool,
}

/// The three risk tiers (1 is the strictest). `Default` is CAWS's bundled
/// policy. Deserializes from a policy section such as
/// `tiers: {1: {max_files: 10}, 2: {...}}`: each tier's fields override that
/// tier's default and the rest stay. CAWS `policy.yaml` spellings are accepted
/// too (`coverage_threshold`/`mutation_threshold` in percent,
/// `manual_review_required`), so its `risk_tiers` section reads as is.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiers([TierBudget; 3]);

impl Default for Tiers {
    fn default() -> Self {
        Self([
            TierBudget {
                max_files: 25,
                max_loc: 1000,
                min_coverage: 0.90,
                min_mutation: 0.70,
                contracts_required: true,
                human_review: true,
            },
            TierBudget {
                max_files: 50,
                max_loc: 2000,
                min_coverage: 0.80,
                min_mutation: 0.50,
                contracts_required: true,
                human_review: false,
            },
            TierBudget {
                max_files: 100,
                max_loc: 5000,
                min_coverage: 0.70,
                min_mutation: 0.30,
                contracts_required: false,
                human_review: false,
            },
        ])
    }
}

impl Tiers {
    pub fn get(&self, tier: u8) -> Option<&TierBudget> {
        self.0.get(usize::from(tier).checked_sub(1)?)
    }

    /// The strictest tier looser than `tier` whose limit on `limit_of` admits
    /// `wanted`, for "or move to tier N" advice.
    fn looser_tier_admitting(&self, tier: u8, wanted: u32, limit_of: LimitOf) -> Option<(u8, u32)> {
        (tier + 1..=3).find_map(|t| {
            let limit = limit_of(self.get(t)?);
            (limit >= wanted).then_some((t, limit))
        })
    }
}

/// Picks one limit (files or lines) out of a tier.
type LimitOf = fn(&TierBudget) -> u32;

impl Serialize for Tiers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().enumerate().map(|(i, b)| (i + 1, b)))
    }
}

impl<'de> Deserialize<'de> for Tiers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let overrides = BTreeMap::<TierKey, TierOverride>::deserialize(deserializer)?;
        let mut tiers = Tiers::default();
        for (TierKey(tier), o) in overrides {
            let slot = &mut tiers.0[usize::from(tier) - 1];
            *slot = o
                .apply(slot.clone())
                .map_err(|e| de::Error::custom(format!("tier {tier}: {e}")))?;
        }
        Ok(tiers)
    }
}

/// A tier number as a map key: `1`, `"1"` (JSON and CAWS `policy.yaml`
/// quote them) or `"T1"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TierKey(u8);

impl<'de> Deserialize<'de> for TierKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = TierKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a risk tier: 1, 2 or 3")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TierKey, E> {
                match v {
                    1..=3 => Ok(TierKey(v as u8)),
                    _ => Err(E::custom(format!(
                        "risk tier {v} does not exist; use 1, 2 or 3"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TierKey, E> {
                self.visit_u64(u64::try_from(v).unwrap_or(u64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TierKey, E> {
                match parse_tier_text(v) {
                    Some(t) => Ok(TierKey(t)),
                    None => Err(E::custom(format!(
                        "`{v}` is not a risk tier; use 1, 2 or 3"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

/// One tier's entry in a policy file; unset fields keep the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierOverride {
    max_files: Option<u32>,
    max_loc: Option<u32>,
    min_coverage: Option<f64>,
    min_mutation: Option<f64>,
    contracts_required: Option<bool>,
    #[serde(alias = "manual_review_required")]
    human_review: Option<bool>,
    /// CAWS `policy.yaml` spelling of `min_coverage`, in percent.
    coverage_threshold: Option<f64>,
    /// CAWS `policy.yaml` spelling of `min_mutation`, in percent.
    mutation_threshold: Option<f64>,
    /// CAWS `policy.yaml` carries a description per tier; kept for humans only.
    #[serde(rename = "description")]
    _description: Option<String>,
}

impl TierOverride {
    fn apply(self, mut base: TierBudget) -> Result<TierBudget, String> {
        fn fraction(
            name: &str,
            fraction: Option<f64>,
            percent_name: &str,
            percent: Option<f64>,
        ) -> Result<Option<f64>, String> {
            match (fraction, percent) {
                (Some(_), Some(_)) => Err(format!("set {name} or {percent_name}, not both")),
                (Some(f), None) if (0.0..=1.0).contains(&f) => Ok(Some(f)),
                (Some(f), None) => Err(format!("{name} is a fraction from 0 to 1, got {f}")),
                (None, Some(p)) if (0.0..=100.0).contains(&p) => Ok(Some(p / 100.0)),
                (None, Some(p)) => Err(format!("{percent_name} is a percentage, got {p}")),
                (None, None) => Ok(None),
            }
        }
        for (name, value) in [("max_files", self.max_files), ("max_loc", self.max_loc)] {
            if value == Some(0) {
                return Err(format!("{name} must be at least 1"));
            }
        }
        base.max_files = self.max_files.unwrap_or(base.max_files);
        base.max_loc = self.max_loc.unwrap_or(base.max_loc);
        if let Some(c) = fraction(
            "min_coverage",
            self.min_coverage,
            "coverage_threshold",
            self.coverage_threshold,
        )? {
            base.min_coverage = c;
        }
        if let Some(m) = fraction(
            "min_mutation",
            self.min_mutation,
            "mutation_threshold",
            self.mutation_threshold,
        )? {
            base.min_mutation = m;
        }
        base.contracts_required = self.contracts_required.unwrap_or(base.contracts_required);
        base.human_review = self.human_review.unwrap_or(base.human_review);
        Ok(base)
    }
}

/// `"1"`, `"T1"` or `"t1"` as a tier number.
fn parse_tier_text(text: &str) -> Option<u8> {
    let digits = text.strip_prefix(['T', 't']).unwrap_or(text);
    match digits {
        "1" => Some(1),
        "2" => Some(2),
        "3" => Some(3),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Violations
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The spec cannot be used until this is fixed.
    Error,
    /// Worth fixing; the spec is still usable.
    Warning,
}

/// One problem with a spec, or one write outside its scope.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Violation {
    pub rule_id: &'static str,
    /// Field path such as `acceptance[2].then` or `change_budget.max_files`;
    /// empty for the document as a whole.
    pub path: String,
    pub message: String,
    /// What to change, as one concrete sentence.
    pub fix: String,
    pub severity: Severity,
}

impl Violation {
    fn error(rule_id: &'static str, path: impl Into<String>, message: String, fix: String) -> Self {
        Self {
            rule_id,
            path: path.into(),
            message,
            fix,
            severity: Severity::Error,
        }
    }

    fn warning(
        rule_id: &'static str,
        path: impl Into<String>,
        message: String,
        fix: String,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(rule_id, path, message, fix)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{} {severity}", self.rule_id)?;
        if !self.path.is_empty() {
            write!(f, " at {}", self.path)?;
        }
        write!(f, ": {}. Fix: {}", self.message, self.fix)
    }
}

/// The outcome of [`validate_spec`].
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SpecReport {
    /// The spec, when the document could be read into one: it parsed, every
    /// field present had the right type, and `id`, `title`, `mode` and a
    /// `risk_tier` of 1–3 were there. Present even when other rules failed;
    /// check [`SpecReport::is_valid`] before enforcing it.
    pub spec: Option<WorkingSpec>,
    /// Every problem found, in document order.
    pub violations: Vec<Violation>,
}

impl SpecReport {
    /// A usable spec with no `Error` violations (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.spec.is_some() && !self.violations.iter().any(Violation::is_error)
    }
}

// ---------------------------------------------------------------------------
// The working spec
// ---------------------------------------------------------------------------

/// A working spec as read from `.caws/working-spec.yaml`. Only
/// [`validate_spec`] makes one, so holding one means the document was read.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WorkingSpec {
    /// `PREFIX-NUMBER`, e.g. `FEAT-1234`.
    pub id: String,
    pub title: String,
    /// 1 (critical, strictest) to 3 (low risk).
    pub risk_tier: u8,
    pub mode: Mode,
    /// As written; `None` means the tier's limits apply (see
    /// [`WorkingSpec::effective_budget`]).
    pub change_budget: Option<ChangeBudget>,
    pub blast_radius: Option<BlastRadius>,
    /// How fast the change can be rolled back in operation, e.g. `5m`.
    pub operational_rollback_slo: Option<String>,
    pub scope: Scope,
    pub invariants: Vec<String>,
    pub acceptance: Vec<AcceptanceCriterion>,
    pub non_functional: Option<NonFunctional>,
    pub contracts: Vec<Contract>,
    /// Rollback steps, in order.
    pub rollback: Vec<String>,
    pub observability: Option<Observability>,
    /// CAWS waivers (`WV-0001`) this spec relies on. Not applied here: that
    /// needs the waiver files.
    pub waiver_ids: Vec<String>,
}

impl WorkingSpec {
    /// The budget this change is held to: the spec's own `change_budget`,
    /// with anything it leaves out taken from its tier.
    pub fn effective_budget(&self, tiers: &Tiers) -> EffectiveBudget {
        // A WorkingSpec's tier is always 1-3; the fallback is the strictest.
        let tier = tiers.get(self.risk_tier).unwrap_or(&tiers.0[0]);
        let declared = self.change_budget.unwrap_or_default();
        EffectiveBudget {
            max_files: declared.max_files.unwrap_or(tier.max_files),
            max_loc: declared.max_loc.unwrap_or(tier.max_loc),
        }
    }
}

/// The limits a change is actually held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub struct EffectiveBudget {
    pub max_files: u32,
    pub max_loc: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Feature,
    Refactor,
    Fix,
    Doc,
    Chore,
}

impl Mode {
    /// CAWS's modes; `docs` is its older spelling of `doc`.
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "feature" => Mode::Feature,
            "refactor" => Mode::Refactor,
            "fix" => Mode::Fix,
            "doc" | "docs" => Mode::Doc,
            "chore" => Mode::Chore,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChangeBudget {
    pub max_files: Option<u32>,
    pub max_loc: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BlastRadius {
    /// Modules or paths the change can affect.
    #[serde(default, deserialize_with = "null_as_default")]
    pub modules: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub data_migration: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Scope {
    /// Paths or globs the change may write (a plain path covers everything
    /// under it).
    #[serde(rename = "in", default, deserialize_with = "null_as_default")]
    pub include: Vec<String>,
    /// Paths or globs it must not write, even inside `in`.
    #[serde(rename = "out", default, deserialize_with = "null_as_default")]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AcceptanceCriterion {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub given: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub when: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub then: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NonFunctional {
    #[serde(default, deserialize_with = "null_as_default")]
    pub a11y: Vec<String>,
    /// Performance budgets by name, e.g. `api_p95_ms: 250`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub perf: BTreeMap<String, f64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub security: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Contract {
    /// `openapi`, `graphql`, `proto`, `pact` or `project_setup`.
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub kind: String,
    /// Where the contract lives, workspace-relative.
    #[serde(default, deserialize_with = "null_as_default")]
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Observability {
    #[serde(default, deserialize_with = "null_as_default")]
    pub logs: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metrics: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub traces: Vec<String>,
}

impl Observability {
    fn is_empty(&self) -> bool {
        self.logs.is_empty() && self.metrics.is_empty() && self.traces.is_empty()
    }
}

/// YAML writes an empty value as null (`then:`); treat it as empty so the
/// rule for that field reports it, instead of a type error.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

const CONTRACT_TYPES: &[&str] = &["openapi", "graphql", "proto", "pact", "project_setup"];

/// Top-level fields this module reads, with the shape each must have (for
/// type-error fixes).
const SPEC_FIELDS: &[(&str, &str)] = &[
    ("id", "a string like FEAT-1234"),
    ("title", "a string"),
    ("risk_tier", "1, 2 or 3"),
    ("mode", "one of feature, refactor, fix, doc, chore"),
    (
        "change_budget",
        "a map with max_files and max_loc (whole numbers)",
    ),
    (
        "blast_radius",
        "a map with modules (a list of strings) and data_migration (true/false)",
    ),
    ("operational_rollback_slo", "a duration string like 5m"),
    (
        "scope",
        "a map with in and out, each a list of paths or globs",
    ),
    ("invariants", "a list of strings"),
    ("acceptance", "a list of {id, given, when, then} entries"),
    (
        "non_functional",
        "a map with a11y (list), perf (map of name to number) and security (list)",
    ),
    ("contracts", "a list of {type, path} entries"),
    ("rollback", "a list of rollback steps (strings)"),
    (
        "observability",
        "a map with logs, metrics and traces, each a list of strings",
    ),
    ("waiver_ids", "a list of waiver ids like WV-0001"),
];

/// Optional top-level fields CAWS defines that arbiter accepts but does not use.
const CAWS_EXTRA_FIELDS: &[&str] = &[
    "type",
    "status",
    "created_at",
    "updated_at",
    "worktree",
    "migrations",
    "threats",
    "experimental_mode",
    "timeboxed_hours",
    "human_override",
    "ai_assessment",
    "lifecycle_state",
    "resolution",
    "owner",
    "blockers",
    "supersedes",
    "superseded_by",
    "successors",
    "closure_notes",
];

// ---------------------------------------------------------------------------
// Reading the document
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Format {
    Json,
    Yaml,
}

/// The spec text and how to read it. Each field is read straight from the
/// text (not from a parsed tree) so YAML's scalar rules apply and a type
/// error points at its line.
#[derive(Debug, Clone, Copy)]
struct Source<'a> {
    text: &'a str,
    format: Format,
}

/// Where and why a read failed.
struct ReadError {
    path: String,
    message: String,
    location: Option<(u64, u64)>,
}

impl ReadError {
    fn describe(&self) -> String {
        match self.location {
            Some((line, column)) => format!("{} (line {line}, column {column})", self.message),
            None => self.message.clone(),
        }
    }
}

impl<'a> Source<'a> {
    fn new(text: &'a str) -> Self {
        let format = if text
            .trim_start_matches('\u{feff}')
            .trim_start()
            .starts_with('{')
        {
            Format::Json
        } else {
            Format::Yaml
        };
        Self { text, format }
    }

    fn yaml_options() -> serde_saphyr::Options {
        let mut options = serde_saphyr::Options::default();
        options.with_snippet = false;
        options
    }

    /// Deserialize `seed` from the text, tracking the field path for errors.
    fn run<S, V>(&self, seed: S) -> Result<V, ReadError>
    where
        S: for<'de> DeserializeSeed<'de, Value = V>,
    {
        let mut track = serde_path_to_error::Track::new();
        let (message, location) = match self.format {
            Format::Json => {
                let mut de = serde_json::Deserializer::from_str(self.text);
                let result = seed
                    .deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track))
                    .and_then(|value| de.end().map(|()| value));
                match result {
                    Ok(value) => return Ok(value),
                    Err(e) => {
                        let (line, column) = (e.line() as u64, e.column() as u64);
                        let text = e.to_string();
                        let suffix = format!(" at line {line} column {column}");
                        let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
                        (message, (line > 0).then_some((line, column)))
                    }
                }
            }
            Format::Yaml => {
                let result = serde_saphyr::with_deserializer_from_str_with_options(
                    self.text,
                    Self::yaml_options(),
                    |de| seed.deserialize(serde_path_to_error::Deserializer::new(de, &mut track)),
                );
                match result {
                    Ok(value) => return Ok(value),
                    Err(e) => {
                        let location = e.location().map(|l| (l.line(), l.column()));
                        let text = e.to_string();
                        let message = match location {
                            Some((line, column)) => {
                                let suffix = format!(" at line {line}, column {column}");
                                text.strip_suffix(&suffix).unwrap_or(&text).to_string()
                            }
                            None => text,
                        };
                        (message, location)
                    }
                }
            }
        };
        let path = track.path().to_string();
        Err(ReadError {
            path: if path == "." { String::new() } else { path },
            message,
            location,
        })
    }

    /// The whole document as an untyped tree: for syntax errors, key
    /// presence and unknown keys.
    fn tree(&self) -> Result<serde_json::Map<String, Value>, Violation> {
        let value = self
            .run(PhantomData::<Value>)
            .map_err(|e| {
                Violation::error(
                    "SPEC-001",
                    "",
                    format!("the working spec is not valid YAML or JSON: {}", e.describe()),
                    "Fix the syntax at that line (indentation, an unclosed bracket or quote, a stray `:`), then validate again.".to_string(),
                )
            })?;
        match value {
            Value::Object(map) => Ok(map),
            Value::Null => Err(Violation::error(
                "SPEC-001",
                "",
                "the working spec is empty".to_string(),
                "Write the spec as a YAML mapping starting with `id:`, `title:`, `risk_tier:` and `mode:`.".to_string(),
            )),
            other => Err(Violation::error(
                "SPEC-001",
                "",
                format!("the working spec must be a mapping of fields, not {}", kind_of(&other)),
                "Write the spec as a YAML mapping starting with `id:`, `title:`, `risk_tier:` and `mode:`.".to_string(),
            )),
        }
    }

    /// Read one top-level field as `T`.
    fn field<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, ReadError> {
        self.run(FieldProbe::<T> {
            key,
            _value: PhantomData,
        })
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Reads one key of the top-level mapping as `T`, skipping the rest.
struct FieldProbe<T> {
    key: &'static str,
    _value: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for FieldProbe<T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for FieldProbe<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of working-spec fields")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.key {
                found = map.next_value::<Option<T>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Reads fields, turning type errors into `SPEC-001` and remembering that the
/// spec could not be read whole.
struct FieldReader<'a> {
    source: Source<'a>,
    tree: &'a serde_json::Map<String, Value>,
    violations: Vec<Violation>,
    /// Fields present but of the wrong type: already reported, so the rules
    /// for them are skipped.
    unreadable: Vec<&'static str>,
}

impl FieldReader<'_> {
    /// `None` when absent, null, or of the wrong type (then reported).
    fn read<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        if !self.has(key) {
            return None;
        }
        match self.source.field::<T>(key) {
            Ok(value) => value,
            Err(e) => {
                self.unreadable.push(key);
                let path = if e.path.is_empty() {
                    key.to_string()
                } else {
                    e.path.clone()
                };
                let shape = SPEC_FIELDS
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map_or("the type CAWS defines", |(_, shape)| shape);
                self.violations.push(Violation::error(
                    "SPEC-001",
                    path.clone(),
                    format!("{path} has the wrong type: {}", e.describe()),
                    format!("Write {key} as {shape}."),
                ));
                None
            }
        }
    }

    /// Present with a non-null value.
    fn has(&self, key: &str) -> bool {
        self.tree.get(key).is_some_and(|v| !v.is_null())
    }

    fn unreadable(&self, key: &str) -> bool {
        self.unreadable.contains(&key)
    }

    /// Present with a non-null value, one level down.
    fn has_nested(&self, key: &str, sub: &str) -> bool {
        self.tree
            .get(key)
            .and_then(|v| v.get(sub))
            .is_some_and(|v| !v.is_null())
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Parse YAML or JSON text (JSON when it starts with `{`, for serde_json's
/// messages) and validate it against the tiers.
pub fn validate_spec(text: &str, tiers: &Tiers) -> SpecReport {
    let source = Source::new(text);
    let tree = match source.tree() {
        Ok(tree) => tree,
        Err(violation) => {
            return SpecReport {
                spec: None,
                violations: vec![violation],
            };
        }
    };
    let mut reader = FieldReader {
        source,
        tree: &tree,
        violations: Vec::new(),
        unreadable: Vec::new(),
    };
    check_unknown_fields(&tree, &mut reader.violations);

    let id = check_id(&mut reader);
    let title = check_title(&mut reader);
    let risk_tier = check_risk_tier(&mut reader);
    let mode = check_mode(&mut reader);

    let change_budget = reader.read::<ChangeBudget>("change_budget");
    let blast_radius = reader.read::<BlastRadius>("blast_radius");
    let operational_rollback_slo = reader.read::<String>("operational_rollback_slo");
    let scope = reader.read::<Scope>("scope");
    let invariants = reader.read::<Vec<String>>("invariants");
    let acceptance = reader.read::<Vec<AcceptanceCriterion>>("acceptance");
    let non_functional = reader.read::<NonFunctional>("non_functional");
    let contracts = reader.read::<Vec<Contract>>("contracts");
    let rollback = reader.read::<Vec<String>>("rollback");
    let observability = reader.read::<Observability>("observability");
    let waiver_ids = reader.read::<Vec<String>>("waiver_ids");

    let mut c = Checker {
        violations: std::mem::take(&mut reader.violations),
        tier: risk_tier.and_then(|t| Some((t, tiers.get(t)?))),
    };
    let readable = |key| !reader.unreadable(key);
    if readable("change_budget") {
        c.budget(change_budget.as_ref(), tiers);
    }
    if readable("blast_radius") {
        c.blast_radius(
            blast_radius.as_ref(),
            reader.has_nested("blast_radius", "data_migration"),
        );
    }
    if readable("operational_rollback_slo") {
        c.rollback_slo(operational_rollback_slo.as_deref());
    }
    if readable("rollback") && readable("blast_radius") {
        let migrates = blast_radius.as_ref().is_some_and(|b| b.data_migration);
        c.rollback_steps(rollback.as_deref().unwrap_or_default(), migrates);
    }
    if readable("scope") {
        c.scope(scope.as_ref());
    }
    if readable("invariants") {
        c.invariants(invariants.as_deref().unwrap_or_default());
    }
    if readable("acceptance") {
        c.acceptance(acceptance.as_deref().unwrap_or_default());
    }
    if readable("non_functional") {
        c.non_functional(non_functional.as_ref());
    }
    if readable("contracts") {
        c.contracts(contracts.as_deref().unwrap_or_default(), mode);
    }
    if readable("observability") {
        c.observability(observability.as_ref());
    }
    c.waivers(waiver_ids.as_deref().unwrap_or_default());

    let spec = match (id, title, risk_tier, mode) {
        (Some(id), Some(title), Some(risk_tier), Some(mode)) if reader.unreadable.is_empty() => {
            Some(WorkingSpec {
                id,
                title,
                risk_tier,
                mode,
                change_budget,
                blast_radius,
                operational_rollback_slo,
                scope: scope.unwrap_or_default(),
                invariants: invariants.unwrap_or_default(),
                acceptance: acceptance.unwrap_or_default(),
                non_functional,
                contracts: contracts.unwrap_or_default(),
                rollback: rollback.unwrap_or_default(),
                observability,
                waiver_ids: waiver_ids.unwrap_or_default(),
            })
        }
        _ => None,
    };
    SpecReport {
        spec,
        violations: c.violations,
    }
}

/// CAWS's classic schema allows extra top-level keys, and its own specs carry
/// some (`status`, `threats`, ...); a key no CAWS version defines is most
/// likely a typo that silently drops a section, so it is flagged.
fn check_unknown_fields(tree: &serde_json::Map<String, Value>, out: &mut Vec<Violation>) {
    for key in tree.keys() {
        let known =
            SPEC_FIELDS.iter().any(|(k, _)| k == key) || CAWS_EXTRA_FIELDS.contains(&key.as_str());
        if known {
            continue;
        }
        let closest = SPEC_FIELDS
            .iter()
            .map(|(k, _)| *k)
            .chain(CAWS_EXTRA_FIELDS.iter().copied())
            .map(|k| (strsim::jaro_winkler(key, k), k))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .filter(|(score, _)| *score >= 0.85);
        let fix = match closest {
            Some((_, k)) => format!("Rename `{key}` to `{k}`."),
            None => format!("Remove `{key}`; CAWS working specs have no such field."),
        };
        out.push(Violation::warning(
            "SPEC-001",
            key.clone(),
            format!("`{key}` is not a CAWS working-spec field, so nothing reads it"),
            fix,
        ));
    }
}

/// A non-blank string field; `None` (and nothing reported) when it was
/// unreadable, since SPEC-001 already said why.
fn read_text(reader: &mut FieldReader<'_>, key: &'static str) -> Result<Option<String>, ()> {
    let value = reader.read::<String>(key);
    if reader.unreadable(key) {
        return Err(());
    }
    Ok(value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty()))
}

fn check_id(reader: &mut FieldReader<'_>) -> Option<String> {
    let id = read_text(reader, "id").ok()?;
    let Some(id) = id else {
        reader.violations.push(Violation::error(
            "SPEC-002",
            "id",
            "the spec has no id".to_string(),
            "Add `id: FEAT-1234` (an uppercase prefix, a dash, a number).".to_string(),
        ));
        return None;
    };
    if !is_spec_id(&id) {
        reader.violations.push(Violation::error(
            "SPEC-002",
            "id",
            format!("id `{id}` is not PREFIX-NUMBER"),
            format!(
                "Use an uppercase prefix, a dash and a number, e.g. `{}`.",
                suggest_spec_id(&id)
            ),
        ));
    }
    Some(id)
}

fn check_title(reader: &mut FieldReader<'_>) -> Option<String> {
    let title = read_text(reader, "title").ok()?;
    let Some(title) = title else {
        reader.violations.push(Violation::error(
            "SPEC-002",
            "title",
            "the spec has no title".to_string(),
            "Add `title:` with one line saying what the change does.".to_string(),
        ));
        return None;
    };
    let length = title.chars().count();
    if length < 10 {
        reader.violations.push(Violation::warning(
            "SPEC-002",
            "title",
            format!("title `{title}` is {length} characters; CAWS asks for at least 10"),
            "Say what the change does and where, e.g. `Rate-limit login attempts per account`."
                .to_string(),
        ));
    } else if length > 200 {
        reader.violations.push(Violation::warning(
            "SPEC-002",
            "title",
            format!("title is {length} characters; CAWS allows at most 200"),
            "Shorten the title to one line and move detail into invariants or acceptance."
                .to_string(),
        ));
    }
    Some(title)
}

fn check_risk_tier(reader: &mut FieldReader<'_>) -> Option<u8> {
    let raw = reader.read::<Value>("risk_tier");
    let fix = "Set `risk_tier:` to 1 (critical: auth, billing, migrations), 2 (ordinary features) or 3 (low risk: docs, internal tooling).".to_string();
    match raw {
        None => {
            reader.violations.push(Violation::error(
                "SPEC-002",
                "risk_tier",
                "the spec has no risk_tier".to_string(),
                fix,
            ));
            None
        }
        Some(Value::Number(n)) => match n.as_u64() {
            Some(t @ 1..=3) => Some(t as u8),
            _ => {
                reader.violations.push(Violation::error(
                    "SPEC-002",
                    "risk_tier",
                    format!("risk_tier {n} does not exist; tiers are 1, 2 and 3"),
                    fix,
                ));
                None
            }
        },
        Some(Value::String(s)) => match parse_tier_text(s.trim()) {
            Some(t) => {
                reader.violations.push(Violation::warning(
                    "SPEC-002",
                    "risk_tier",
                    format!("risk_tier is the string `{s}`; newer CAWS tools accept only a number"),
                    format!("Write `risk_tier: {t}`."),
                ));
                Some(t)
            }
            None => {
                reader.violations.push(Violation::error(
                    "SPEC-002",
                    "risk_tier",
                    format!("risk_tier `{s}` is not a tier"),
                    fix,
                ));
                None
            }
        },
        Some(other) => {
            reader.violations.push(Violation::error(
                "SPEC-002",
                "risk_tier",
                format!("risk_tier is {}, not a tier number", kind_of(&other)),
                fix,
            ));
            None
        }
    }
}

fn check_mode(reader: &mut FieldReader<'_>) -> Option<Mode> {
    let text = read_text(reader, "mode").ok()?;
    let fix = "Set `mode:` to feature, refactor, fix, doc or chore.".to_string();
    let Some(text) = text else {
        reader.violations.push(Violation::error(
            "SPEC-002",
            "mode",
            "the spec has no mode".to_string(),
            fix,
        ));
        return None;
    };
    let mode = Mode::parse(&text);
    if mode.is_none() {
        let message = if text == "development" {
            "mode `development` says nothing about the change; CAWS has dropped it".to_string()
        } else {
            format!("mode `{text}` is not a CAWS mode")
        };
        reader
            .violations
            .push(Violation::error("SPEC-002", "mode", message, fix));
    }
    mode
}

/// `^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*-\d+[a-z]*$`, the id pattern of the CAWS
/// schema (e.g. `FEAT-1234`, `P03-TRUTH-001`).
fn is_spec_id(id: &str) -> bool {
    let Some((head, last)) = id.rsplit_once('-') else {
        return false;
    };
    let digits = last
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(last.len());
    let upper_or_digit = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    let mut segments = head.split('-');
    let first = segments.next().unwrap_or_default();
    digits > 0
        && last[digits..].chars().all(|c| c.is_ascii_lowercase())
        && first.starts_with(|c: char| c.is_ascii_uppercase())
        && upper_or_digit(first)
        && segments.all(|s| !s.is_empty() && upper_or_digit(s))
}

/// A well-formed id close to a malformed one, for the fix sentence.
fn suggest_spec_id(id: &str) -> String {
    let prefix: String = id
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let number: String = id.chars().filter(char::is_ascii_digit).collect();
    let prefix = if prefix.is_empty() {
        "FEAT".to_string()
    } else {
        prefix
    };
    let number = if number.is_empty() {
        "1".to_string()
    } else {
        number
    };
    format!("{prefix}-{number}")
}

/// `5m`, `30s`, `1h`, `2d`, `15 min`: a number and a time unit.
fn is_duration(text: &str) -> bool {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    const UNITS: &[&str] = &[
        "ms", "s", "sec", "secs", "second", "seconds", "m", "min", "mins", "minute", "minutes",
        "h", "hr", "hrs", "hour", "hours", "d", "day", "days",
    ];
    number.parse::<f64>().is_ok() && UNITS.contains(&unit.trim())
}

/// Applies the content rules; `tier` is `None` when the risk tier is missing
/// or malformed, and then tier-dependent rules are skipped (SPEC-002 already
/// said why).
struct Checker<'t> {
    violations: Vec<Violation>,
    tier: Option<(u8, &'t TierBudget)>,
}

impl Checker<'_> {
    fn error(&mut self, rule: &'static str, path: impl Into<String>, message: String, fix: String) {
        self.violations
            .push(Violation::error(rule, path, message, fix));
    }

    fn warning(
        &mut self,
        rule: &'static str,
        path: impl Into<String>,
        message: String,
        fix: String,
    ) {
        self.violations
            .push(Violation::warning(rule, path, message, fix));
    }

    /// Tiers 1 and 2 are held to the stricter rules below.
    fn strict_tier(&self) -> Option<u8> {
        self.tier.map(|(t, _)| t).filter(|t| *t <= 2)
    }

    fn budget(&mut self, budget: Option<&ChangeBudget>, tiers: &Tiers) {
        let Some((tier, limits)) = self.tier else {
            return;
        };
        let Some(declared) = budget else {
            self.warning(
                "BUDGET-002",
                "change_budget",
                format!(
                    "no change_budget; tier {tier}'s limits apply ({} files, {} lines)",
                    limits.max_files, limits.max_loc
                ),
                format!(
                    "Add `change_budget: {{max_files: N, max_loc: M}}` with what this change needs, at most {} files and {} lines.",
                    limits.max_files, limits.max_loc
                ),
            );
            return;
        };
        let fields: [(&str, &str, Option<u32>, LimitOf); 2] = [
            ("max_files", "files", declared.max_files, |b| b.max_files),
            ("max_loc", "lines", declared.max_loc, |b| b.max_loc),
        ];
        for (field, unit, value, limit_of) in fields {
            let path = format!("change_budget.{field}");
            let limit = limit_of(limits);
            match value {
                None => self.warning(
                    "BUDGET-002",
                    path.clone(),
                    format!("change_budget has no {field}; tier {tier}'s limit of {limit} {unit} applies"),
                    format!("Add `{field}:` with what this change needs, at most {limit}."),
                ),
                Some(0) => self.error(
                    "BUDGET-001",
                    path.clone(),
                    format!("{path} is 0, which allows no change at all"),
                    format!("Set {path} to what the change needs, at most {limit}."),
                ),
                Some(wanted) if wanted > limit => {
                    let fix = match tiers.looser_tier_admitting(tier, wanted, limit_of) {
                        Some((looser, looser_limit)) => format!(
                            "Lower {field} to {limit} or split the change; set risk_tier: {looser} (allows {looser_limit} {unit}; lower tier numbers are stricter) only if the change really is lower-risk."
                        ),
                        None => format!(
                            "Lower {field} to {limit} or split the change into several specs; no tier allows {wanted} {unit}."
                        ),
                    };
                    self.error(
                        "BUDGET-001",
                        path,
                        format!("{field} {wanted} is above tier {tier}'s limit of {limit} {unit}"),
                        fix,
                    );
                }
                Some(_) => {}
            }
        }
    }

    fn blast_radius(&mut self, blast: Option<&BlastRadius>, states_migration: bool) {
        let Some(blast) = blast else {
            self.error(
                "BLAST-001",
                "blast_radius",
                "the spec has no blast_radius".to_string(),
                "Add `blast_radius: {modules: [the modules this change can break], data_migration: false}`.".to_string(),
            );
            return;
        };
        if blast.modules.iter().all(|m| m.trim().is_empty()) {
            self.error(
                "BLAST-001",
                "blast_radius.modules",
                "blast_radius names no module".to_string(),
                "List the modules or paths this change can break in blast_radius.modules."
                    .to_string(),
            );
        }
        if !states_migration {
            self.warning(
                "BLAST-001",
                "blast_radius.data_migration",
                "blast_radius does not say whether data is migrated".to_string(),
                "Add `data_migration: false` (or true) to blast_radius.".to_string(),
            );
        }
        if blast.data_migration && self.tier.is_some_and(|(t, _)| t > 1) {
            let tier = self.tier.map_or(0, |(t, _)| t);
            self.warning(
                "BLAST-001",
                "blast_radius.data_migration",
                format!("the change migrates data but is tier {tier}; CAWS classes data migrations as tier 1"),
                "Set risk_tier: 1, or move the migration into its own tier-1 spec.".to_string(),
            );
        }
    }

    fn rollback_slo(&mut self, slo: Option<&str>) {
        match slo.map(str::trim).filter(|s| !s.is_empty()) {
            None => {
                let message = "the spec has no operational_rollback_slo".to_string();
                let fix = "Add `operational_rollback_slo: 5m` (how fast the change can be undone in production).".to_string();
                match (self.strict_tier(), self.tier) {
                    (Some(tier), _) => self.error(
                        "ROLLBACK-001",
                        "operational_rollback_slo",
                        format!("{message}; tier {tier} needs one"),
                        fix,
                    ),
                    (None, Some(_)) => {
                        self.warning("ROLLBACK-001", "operational_rollback_slo", message, fix)
                    }
                    (None, None) => {}
                }
            }
            Some(text) if !is_duration(text) => self.warning(
                "ROLLBACK-001",
                "operational_rollback_slo",
                format!("operational_rollback_slo `{text}` is not a duration"),
                "Write a number and a unit, e.g. `5m`, `30m` or `1h`.".to_string(),
            ),
            Some(_) => {}
        }
    }

    fn rollback_steps(&mut self, steps: &[String], migrates_data: bool) {
        if steps.iter().any(|s| !s.trim().is_empty()) {
            return;
        }
        let fix = "Add `rollback:` with the steps that undo the change, e.g. `- Revert the deploy to the previous release`.".to_string();
        if migrates_data {
            self.error(
                "ROLLBACK-001",
                "rollback",
                "the change migrates data but has no rollback steps".to_string(),
                "Add `rollback:` steps that reverse the data migration as well as the code."
                    .to_string(),
            );
        } else if let Some((1, _)) = self.tier {
            self.error(
                "ROLLBACK-001",
                "rollback",
                "tier 1 needs rollback steps and the spec has none".to_string(),
                fix,
            );
        } else if let Some((2, _)) = self.tier {
            self.warning(
                "ROLLBACK-001",
                "rollback",
                "the spec has no rollback steps".to_string(),
                fix,
            );
        }
    }

    fn scope(&mut self, scope: Option<&Scope>) {
        let Some(scope) = scope else {
            self.error(
                "SCOPE-001",
                "scope",
                "the spec has no scope, so no write can be checked against it".to_string(),
                "Add `scope: {in: [the paths this change may write], out: [paths it must not]}`."
                    .to_string(),
            );
            return;
        };
        let (compiled, problems) = CompiledScope::compile(scope);
        self.violations.extend(problems);
        if let Some(compiled) = compiled {
            self.violations.extend(compiled.cancelled_entries(scope));
        }
    }

    fn invariants(&mut self, invariants: &[String]) {
        if invariants.iter().all(|i| i.trim().is_empty()) {
            self.error(
                "INVARIANT-001",
                "invariants",
                "the spec states no invariants".to_string(),
                "Add `invariants:` with one to three statements that must stay true through the change, e.g. `- Existing sessions stay valid`.".to_string(),
            );
        }
    }

    fn acceptance(&mut self, criteria: &[AcceptanceCriterion]) {
        if criteria.is_empty() {
            self.error(
                "ACCEPTANCE-001",
                "acceptance",
                "the spec has no acceptance criteria".to_string(),
                "Add `acceptance:` with at least one `{id: A1, given: ..., when: ..., then: ...}`."
                    .to_string(),
            );
            return;
        }
        let mut first_with_id: HashMap<&str, usize> = HashMap::new();
        for (index, criterion) in criteria.iter().enumerate() {
            let parts = [
                ("id", &criterion.id),
                ("given", &criterion.given),
                ("when", &criterion.when),
                ("then", &criterion.then),
            ];
            for (part, value) in parts {
                if value.trim().is_empty() {
                    let fix = if part == "id" {
                        format!("Give acceptance[{index}] an id such as `A{}`.", index + 1)
                    } else {
                        format!("Write acceptance[{index}].{part} as one plain sentence.")
                    };
                    self.error(
                        "ACCEPTANCE-001",
                        format!("acceptance[{index}].{part}"),
                        format!("acceptance[{index}] has no `{part}`"),
                        fix,
                    );
                }
            }
            let id = criterion.id.trim();
            if id.is_empty() {
                continue;
            }
            if let Some(first) = first_with_id.get(id) {
                self.error(
                    "ACCEPTANCE-001",
                    format!("acceptance[{index}].id"),
                    format!("acceptance[{index}] reuses id `{id}` from acceptance[{first}]"),
                    format!(
                        "Give acceptance[{index}] its own id, e.g. `A{}`.",
                        criteria.len() + 1
                    ),
                );
            } else {
                first_with_id.insert(id, index);
            }
        }
    }

    fn non_functional(&mut self, nf: Option<&NonFunctional>) {
        let strict = self.strict_tier();
        let Some(nf) = nf else {
            let message = "the spec has no non_functional requirements".to_string();
            let fix = "Add `non_functional: {a11y: [], perf: {api_p95_ms: 250}, security: [the security requirements]}`.".to_string();
            match (strict, self.tier) {
                (Some(tier), _) => self.error(
                    "NONFUNC-001",
                    "non_functional",
                    format!("{message}; tier {tier} needs them"),
                    fix,
                ),
                (None, Some(_)) => self.warning("NONFUNC-001", "non_functional", message, fix),
                (None, None) => {}
            }
            return;
        };
        let Some(tier) = strict else {
            return;
        };
        if nf.security.iter().all(|s| s.trim().is_empty()) {
            let message = format!("non_functional.security is empty at tier {tier}");
            let fix =
                "List the security requirements, e.g. `- Input validated at the API boundary`."
                    .to_string();
            if tier == 1 {
                self.error("NONFUNC-001", "non_functional.security", message, fix);
            } else {
                self.warning("NONFUNC-001", "non_functional.security", message, fix);
            }
        }
        if nf.perf.is_empty() {
            self.warning(
                "NONFUNC-001",
                "non_functional.perf",
                format!("non_functional.perf sets no performance budget at tier {tier}"),
                "Add a budget such as `perf: {api_p95_ms: 250}`.".to_string(),
            );
        }
    }

    fn contracts(&mut self, contracts: &[Contract], mode: Option<Mode>) {
        let required = self
            .tier
            .filter(|(_, b)| b.contracts_required)
            .map(|(t, _)| t);
        // CAWS exempts chores (maintenance has no interface to pin down).
        if contracts.is_empty() && mode != Some(Mode::Chore) {
            if let Some(tier) = required {
                self.error(
                    "CONTRACT-001",
                    "contracts",
                    format!("tier {tier} requires contracts and the spec names none"),
                    "Add `contracts: [{type: openapi, path: docs/api/feature.yaml}]` (types: openapi, graphql, proto, pact, project_setup).".to_string(),
                );
            }
            return;
        }
        for (index, contract) in contracts.iter().enumerate() {
            let kind = contract.kind.trim();
            if kind.is_empty() {
                self.error(
                    "CONTRACT-001",
                    format!("contracts[{index}].type"),
                    format!("contracts[{index}] has no type"),
                    "Set its type to openapi, graphql, proto, pact or project_setup.".to_string(),
                );
            } else if !CONTRACT_TYPES.contains(&kind) {
                self.warning(
                    "CONTRACT-001",
                    format!("contracts[{index}].type"),
                    format!("contracts[{index}] has type `{kind}`, which CAWS does not know"),
                    "Use openapi, graphql, proto, pact or project_setup.".to_string(),
                );
            }
            if contract.path.trim().is_empty() {
                self.error(
                    "CONTRACT-001",
                    format!("contracts[{index}].path"),
                    format!("contracts[{index}] has no path"),
                    "Set path to the contract file, workspace-relative.".to_string(),
                );
            }
        }
    }

    fn observability(&mut self, observability: Option<&Observability>) {
        if observability.is_some_and(|o| !o.is_empty()) {
            return;
        }
        let fix = "Add `observability: {logs: [...], metrics: [...], traces: [...]}` naming what will show the change working or failing in production.".to_string();
        match self.tier {
            Some((1, _)) => self.error(
                "OBSERVABILITY-001",
                "observability",
                "tier 1 needs observability (logs, metrics, traces) and the spec has none"
                    .to_string(),
                fix,
            ),
            Some((2, _)) => self.warning(
                "OBSERVABILITY-001",
                "observability",
                "the spec names no logs, metrics or traces".to_string(),
                fix,
            ),
            _ => {}
        }
    }

    fn waivers(&mut self, waiver_ids: &[String]) {
        for (index, id) in waiver_ids.iter().enumerate() {
            let well_formed = id
                .strip_prefix("WV-")
                .is_some_and(|n| n.len() == 4 && n.chars().all(|c| c.is_ascii_digit()));
            if !well_formed {
                self.error(
                    "SPEC-002",
                    format!("waiver_ids[{index}]"),
                    format!("waiver id `{id}` is not WV- and four digits"),
                    "Use the waiver's id as CAWS wrote it, e.g. `WV-0001`.".to_string(),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Scope
// ---------------------------------------------------------------------------

/// Scope globs compiled once (globset), for checking every write against the
/// active spec.
#[derive(Debug, Clone)]
pub struct SpecScope {
    spec_id: String,
    compiled: CompiledScope,
    /// `scope.in` and `scope.out` as written, for messages.
    include: Vec<String>,
    exclude: Vec<String>,
}

impl SpecScope {
    /// Fails with the first `SCOPE-001` problem (empty `scope.in` or a bad
    /// entry); [`validate_spec`] reports them all.
    pub fn new(spec: &WorkingSpec) -> Result<Self, Violation> {
        let (compiled, mut problems) = CompiledScope::compile(&spec.scope);
        problems.retain(Violation::is_error);
        match (compiled, problems.into_iter().next()) {
            (Some(compiled), None) => Ok(Self {
                spec_id: spec.id.clone(),
                compiled,
                include: spec.scope.include.clone(),
                exclude: spec.scope.exclude.clone(),
            }),
            (_, Some(problem)) => Err(problem),
            (None, None) => Err(Violation::error(
                "SCOPE-001",
                "scope.in",
                "scope.in is empty".to_string(),
                "List the paths this change may write in scope.in.".to_string(),
            )),
        }
    }

    /// None when `path` (workspace-relative, `/`-separated) is inside
    /// scope.in and not inside scope.out; otherwise the SCOPE-001 violation
    /// explaining which.
    pub fn check(&self, path: &str) -> Option<Violation> {
        let path = path.strip_prefix("./").unwrap_or(path);
        if let Some(index) = self.compiled.excluding_entry(path) {
            let entry = &self.exclude[index];
            return Some(Violation::error(
                "SCOPE-001",
                format!("scope.out[{index}]"),
                format!(
                    "`{path}` is excluded by scope.out[{index}] (`{entry}`) of spec {}",
                    self.spec_id
                ),
                format!(
                    "Leave `{path}` alone, or ask for spec {} to be amended so scope.out no longer excludes it.",
                    self.spec_id
                ),
            ));
        }
        if self.compiled.include.is_match(path) {
            return None;
        }
        Some(Violation::error(
            "SCOPE-001",
            "scope.in",
            format!(
                "`{path}` is outside spec {}'s scope.in ({})",
                self.spec_id,
                self.include.join(", ")
            ),
            format!(
                "Change only files under scope.in, or ask for spec {} to be amended to include `{path}`.",
                self.spec_id
            ),
        ))
    }
}

#[derive(Debug, Clone)]
struct CompiledScope {
    include: GlobSet,
    exclude: GlobSet,
    /// Exclude glob index -> `scope.out` entry index.
    exclude_owner: Vec<usize>,
    /// (index as written, normalized entry) of the entries that compiled.
    include_entries: Vec<(usize, String)>,
    exclude_entries: Vec<(usize, String)>,
}

impl CompiledScope {
    /// Compile both lists; `None` when nothing usable is left. Each entry
    /// covers what it matches and everything beneath it, so CAWS's plain
    /// directory entries (`src/auth/`) work as well as globs (`src/**/*.rs`).
    /// `*` does not cross `/`; `**` does.
    fn compile(scope: &Scope) -> (Option<Self>, Vec<Violation>) {
        let mut problems = Vec::new();
        let no_include = scope.include.iter().all(|e| e.trim().is_empty());
        if no_include {
            problems.push(Violation::error(
                "SCOPE-001",
                "scope.in",
                "scope.in is empty, so the change may write nothing".to_string(),
                "List the paths or globs this change may write in scope.in, e.g. `[src/auth/]`."
                    .to_string(),
            ));
        }
        let (include, _, include_entries) =
            compile_entries("scope.in", &scope.include, no_include, &mut problems);
        let (exclude, exclude_owner, exclude_entries) =
            compile_entries("scope.out", &scope.exclude, false, &mut problems);
        let compiled = (!include_entries.is_empty()).then_some(Self {
            include,
            exclude,
            exclude_owner,
            include_entries,
            exclude_entries,
        });
        (compiled, problems)
    }

    /// The first `scope.out` entry covering `path`. `is_match` first keeps
    /// the common case (not excluded) free of allocation.
    fn excluding_entry(&self, path: &str) -> Option<usize> {
        if !self.exclude.is_match(path) {
            return None;
        }
        self.exclude
            .matches(path)
            .first()
            .map(|&g| self.exclude_owner[g])
    }

    /// A `scope.out` entry that covers all of a `scope.in` entry makes the
    /// latter dead: CAWS's `overbroad_out` rule, extended to globs. An
    /// `in` entry lives under its literal directory prefix, and `out` entries
    /// cover everything beneath what they match, so an `out` matching that
    /// prefix covers the whole `in` entry.
    fn cancelled_entries(&self, scope: &Scope) -> Vec<Violation> {
        let mut out = Vec::new();
        for (i, entry) in &self.include_entries {
            let i = *i;
            let base = literal_prefix(entry);
            let mut by: Vec<usize> = if base.is_empty() {
                Vec::new()
            } else {
                self.exclude
                    .matches(base)
                    .iter()
                    .map(|&g| self.exclude_owner[g])
                    .collect()
            };
            by.extend(
                self.exclude_entries
                    .iter()
                    .filter(|(_, e)| e == entry)
                    .map(|(j, _)| *j),
            );
            by.sort_unstable();
            by.dedup();
            for j in by {
                let (written_in, written_out) = (&scope.include[i], &scope.exclude[j]);
                out.push(Violation::error(
                    "SCOPE-001",
                    format!("scope.out[{j}]"),
                    format!(
                        "scope.out[{j}] (`{written_out}`) excludes everything scope.in[{i}] (`{written_in}`) admits, so that entry allows nothing"
                    ),
                    format!(
                        "Narrow or remove scope.out[{j}] so it no longer covers `{written_in}`, or drop scope.in[{i}]."
                    ),
                ));
            }
            if entry == "**" || entry == "**/*" {
                out.push(Violation::warning(
                    "SCOPE-001",
                    format!("scope.in[{i}]"),
                    format!("scope.in[{i}] (`{entry}`) admits every file in the workspace"),
                    "Name the directories this change really touches, so scope can catch stray edits.".to_string(),
                ));
            }
        }
        out
    }
}

/// The path before the first segment with a glob character.
fn literal_prefix(entry: &str) -> &str {
    let mut end = 0;
    for (offset, segment) in segment_offsets(entry) {
        if segment.contains(['*', '?', '[', '{']) {
            break;
        }
        end = offset + segment.len();
    }
    &entry[..end]
}

fn segment_offsets(path: &str) -> impl Iterator<Item = (usize, &str)> {
    path.split('/').scan(0, |offset, segment| {
        let start = *offset;
        *offset += segment.len() + 1;
        Some((start, segment))
    })
}

/// Normalize an entry: trim, drop `./` and trailing `/`. Refuses what can
/// never match a workspace-relative path.
fn normalize_entry(raw: &str) -> Result<String, String> {
    let mut entry = raw.trim();
    while let Some(rest) = entry.strip_prefix("./") {
        entry = rest;
    }
    let entry = entry.trim_end_matches('/');
    if entry.is_empty() || entry == "." {
        return Err("is empty; name a directory, file or glob (`**` for everything)".to_string());
    }
    if entry.starts_with('/') {
        return Err("is absolute; scope entries are relative to the workspace root".to_string());
    }
    if entry.split('/').any(|s| s == "..") {
        return Err("contains `..`; scope entries cannot leave the workspace".to_string());
    }
    Ok(entry.to_string())
}

/// Compile one list into a set whose glob indices map to entry indices, plus
/// the normalized entries that compiled (bad ones are reported and skipped).
fn compile_entries(
    field: &str,
    entries: &[String],
    skip_blank: bool,
    problems: &mut Vec<Violation>,
) -> (GlobSet, Vec<usize>, Vec<(usize, String)>) {
    let mut builder = GlobSetBuilder::new();
    let mut owner = Vec::new();
    let mut compiled_entries = Vec::new();
    for (index, raw) in entries.iter().enumerate() {
        if skip_blank && raw.trim().is_empty() {
            continue;
        }
        let path = format!("{field}[{index}]");
        let entry = match normalize_entry(raw) {
            Ok(entry) => entry,
            Err(why) => {
                problems.push(Violation::error(
                    "SCOPE-001",
                    path,
                    format!("{field}[{index}] (`{raw}`) {why}"),
                    format!("Write {field}[{index}] as a workspace-relative path or glob, e.g. `src/auth/` or `src/**/*.rs`."),
                ));
                continue;
            }
        };
        let globs: Result<Vec<_>, _> = [entry.clone(), format!("{entry}/**")]
            .iter()
            .map(|g| GlobBuilder::new(g).literal_separator(true).build())
            .collect();
        match globs {
            Ok(globs) => {
                for glob in globs {
                    builder.add(glob);
                    owner.push(index);
                }
                compiled_entries.push((index, entry));
            }
            Err(e) => problems.push(Violation::error(
                "SCOPE-001",
                path,
                format!("{field}[{index}] (`{raw}`) is not a valid glob: {}", e.kind()),
                format!("Fix the glob in {field}[{index}]: close brackets and braces, and use `*`, `**` and `?` only as wildcards."),
            )),
        }
    }
    // Every glob compiled on its own, so the set builds; empty is the safe
    // fallback (it admits nothing in scope.in).
    let set = builder.build().unwrap_or_else(|_| GlobSet::empty());
    (set, owner, compiled_entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete tier-1 spec in the shape of CAWS's own `.caws/working-spec.yaml`.
    const TIER1: &str = r#"# CAWS Working Specification
id: FEAT-1234
title: Rate-limit login attempts per account
risk_tier: 1
mode: feature
change_budget:
  max_files: 20
  max_loc: 800
blast_radius:
  modules: ["auth", "api/login"]
  data_migration: false
operational_rollback_slo: "5m"
scope:
  in: ["src/auth/", "tests/auth/**/*.rs"]
  out: ["src/auth/vendor/"]
invariants:
  - "Existing sessions stay valid"
acceptance:
  - id: "A1"
    given: "an account with 5 failed logins in a minute"
    when: "a sixth attempt arrives"
    then: "it is refused with 429 and a Retry-After header"
  - id: "A2"
    given: "a refused account"
    when: "the minute has passed"
    then: "a correct password logs in"
non_functional:
  a11y: []
  perf:
    api_p95_ms: 250
  security: ["Counters keyed by account, not by IP alone"]
contracts:
  - type: "openapi"
    path: "docs/api/login.yaml"
observability:
  logs: ["auth.rate_limited"]
  metrics: ["login_refused_total"]
  traces: ["login_flow"]
rollback:
  - "Disable the limiter with AUTH_RATE_LIMIT=off"
waiver_ids: []
status: draft
"#;

    fn validate(text: &str) -> SpecReport {
        validate_spec(text, &Tiers::default())
    }

    /// TIER1 with `field: ...` (a whole top-level block) replaced by `with`.
    fn tier1_with(field: &str, with: &str) -> String {
        let mut out = String::new();
        let mut skipping = false;
        for line in TIER1.lines() {
            let top_level = !line.starts_with([' ', '-']);
            if top_level {
                skipping = line.starts_with(&format!("{field}:"));
                if skipping {
                    out.push_str(with);
                    continue;
                }
            }
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn ids_at(report: &SpecReport) -> Vec<(&'static str, &str, Severity)> {
        report
            .violations
            .iter()
            .map(|v| (v.rule_id, v.path.as_str(), v.severity))
            .collect()
    }

    fn find<'r>(report: &'r SpecReport, rule: &str, path: &str) -> &'r Violation {
        report
            .violations
            .iter()
            .find(|v| v.rule_id == rule && v.path == path)
            .unwrap_or_else(|| panic!("no {rule} at {path}: {:#?}", report.violations))
    }

    #[test]
    fn valid_tier1_spec_passes_with_no_violations() {
        let report = validate(TIER1);
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        assert!(report.is_valid());
        let spec = report.spec.unwrap();
        assert_eq!(spec.id, "FEAT-1234");
        assert_eq!(spec.risk_tier, 1);
        assert_eq!(spec.mode, Mode::Feature);
        assert_eq!(spec.scope.include, ["src/auth/", "tests/auth/**/*.rs"]);
        assert_eq!(spec.acceptance[1].then, "a correct password logs in");
        assert_eq!(
            spec.non_functional.as_ref().unwrap().perf["api_p95_ms"],
            250.0
        );
        assert_eq!(spec.contracts[0].kind, "openapi");
        assert_eq!(
            spec.effective_budget(&Tiers::default()),
            EffectiveBudget {
                max_files: 20,
                max_loc: 800
            }
        );
    }

    #[test]
    fn spec_001_broken_yaml_gives_line_and_column() {
        let text =
            "id: FEAT-1\ntitle: Something long enough\nscope:\n  in: [src/a, src/b\nmode: fix\n";
        let report = validate(text);
        assert_eq!(report.spec, None);
        assert_eq!(report.violations.len(), 1);
        let v = &report.violations[0];
        assert_eq!(
            (v.rule_id, v.path.as_str(), v.severity),
            ("SPEC-001", "", Severity::Error)
        );
        assert!(v.message.contains("line 5"), "{}", v.message);
        assert!(v.message.contains("column"), "{}", v.message);
        assert!(!report.is_valid());
    }

    #[test]
    fn spec_001_mistyped_field_names_its_path_and_line() {
        let text = TIER1.replace(
            "then: \"a correct password logs in\"",
            "then: [\"a list\", \"not a sentence\"]",
        );
        let report = validate(&text);
        let v = find(&report, "SPEC-001", "acceptance[1].then");
        assert_eq!(v.severity, Severity::Error);
        assert!(v.message.contains("line 26, column 11"), "{}", v.message);
        assert!(v.fix.contains("{id, given, when, then}"), "{}", v.fix);
        // The wrong type does not hide the rest of the spec, but no spec is
        // handed out with a field silently dropped.
        assert_eq!(report.spec, None);
        assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    }

    #[test]
    fn spec_001_unknown_top_level_key_is_a_warning_with_a_suggestion() {
        let text = TIER1.replace("invariants:", "invariant:");
        let report = validate(&text);
        let v = find(&report, "SPEC-001", "invariant");
        assert_eq!(v.severity, Severity::Warning);
        assert!(v.fix.contains("`invariants`"), "{}", v.fix);
        // ...and the real field is then missing.
        find(&report, "INVARIANT-001", "invariants");
        let report = validate(&format!("{TIER1}frobnicate: 3\n"));
        let v = find(&report, "SPEC-001", "frobnicate");
        assert!(v.fix.starts_with("Remove"), "{}", v.fix);
        assert!(
            report.is_valid(),
            "an unknown key alone does not invalidate"
        );
    }

    #[test]
    fn spec_001_empty_or_non_mapping_documents() {
        for text in ["", "# only a comment\n", "- a\n- b\n", "just a string"] {
            let report = validate(text);
            assert_eq!(
                ids_at(&report),
                [("SPEC-001", "", Severity::Error)],
                "{text:?}"
            );
        }
    }

    #[test]
    fn spec_002_identity_fields() {
        let text = TIER1
            .replace("id: FEAT-1234", "id: feat_1234")
            .replace("risk_tier: 1", "risk_tier: 4")
            .replace("mode: feature", "mode: development")
            .replace("title: Rate-limit login attempts per account\n", "");
        let report = validate(&text);
        let v = find(&report, "SPEC-002", "id");
        assert!(v.fix.contains("FEAT-1234"), "{}", v.fix);
        find(&report, "SPEC-002", "title");
        find(&report, "SPEC-002", "risk_tier");
        find(&report, "SPEC-002", "mode");
        assert_eq!(report.spec, None);

        for good in ["FEAT-1", "P03-TRUTH-001", "ALG-001A-HARDEN-01", "FIX-12a"] {
            assert!(is_spec_id(good), "{good}");
        }
        for bad in [
            "FEAT", "feat-1", "FEAT-", "-1", "FEAT--1", "FEAT-1-", "FEAT-A",
        ] {
            assert!(!is_spec_id(bad), "{bad}");
        }
    }

    #[test]
    fn spec_002_string_tier_is_read_with_a_warning_and_short_title_warns() {
        let text = TIER1.replace("risk_tier: 1", "risk_tier: \"T1\"").replace(
            "title: Rate-limit login attempts per account",
            "title: Limit",
        );
        let report = validate(&text);
        assert_eq!(
            find(&report, "SPEC-002", "risk_tier").severity,
            Severity::Warning
        );
        assert_eq!(
            find(&report, "SPEC-002", "title").severity,
            Severity::Warning
        );
        assert!(report.is_valid());
        assert_eq!(report.spec.unwrap().risk_tier, 1);
    }

    #[test]
    fn spec_002_malformed_waiver_id() {
        let report = validate(&tier1_with("waiver_ids", "waiver_ids: [WV-0001, WV-12]\n"));
        assert_eq!(
            ids_at(&report),
            [("SPEC-002", "waiver_ids[1]", Severity::Error)]
        );
    }

    #[test]
    fn scope_001_empty_in() {
        let report = validate(&tier1_with("scope", "scope:\n  in: []\n  out: []\n"));
        assert_eq!(
            ids_at(&report),
            [("SCOPE-001", "scope.in", Severity::Error)]
        );
        let report = validate(&tier1_with("scope", ""));
        assert_eq!(ids_at(&report), [("SCOPE-001", "scope", Severity::Error)]);
    }

    #[test]
    fn scope_001_bad_entries() {
        let report = validate(&tier1_with(
            "scope",
            "scope:\n  in: [\"src/{a,b\", \"/etc\", \"../x\", src/ok]\n  out: [\"[z\"]\n",
        ));
        assert_eq!(
            ids_at(&report),
            [
                ("SCOPE-001", "scope.in[0]", Severity::Error),
                ("SCOPE-001", "scope.in[1]", Severity::Error),
                ("SCOPE-001", "scope.in[2]", Severity::Error),
                ("SCOPE-001", "scope.out[0]", Severity::Error),
            ]
        );
        assert!(report.violations[0].message.contains("not a valid glob"));
    }

    #[test]
    fn scope_001_out_entry_that_cancels_an_in_entry() {
        let report = validate(&tier1_with(
            "scope",
            "scope:\n  in: [src/auth/, \"lib/**/*.rs\", docs]\n  out: [src, \"lib/**/*.rs\", docs/drafts]\n",
        ));
        let cancelled: Vec<_> = report
            .violations
            .iter()
            .map(|v| (v.path.as_str(), &v.message))
            .collect();
        assert_eq!(report.violations.len(), 2, "{cancelled:#?}");
        let v = find(&report, "SCOPE-001", "scope.out[0]");
        assert!(v.message.contains("scope.in[0]"), "{}", v.message);
        let v = find(&report, "SCOPE-001", "scope.out[1]");
        assert!(v.message.contains("scope.in[1]"), "{}", v.message);
        // docs/drafts only narrows docs: normal, not reported.
    }

    #[test]
    fn blast_001_missing_or_empty_modules() {
        let report = validate(&tier1_with("blast_radius", ""));
        assert_eq!(
            ids_at(&report),
            [("BLAST-001", "blast_radius", Severity::Error)]
        );
        let report = validate(&tier1_with(
            "blast_radius",
            "blast_radius:\n  modules: []\n",
        ));
        assert_eq!(
            ids_at(&report),
            [
                ("BLAST-001", "blast_radius.modules", Severity::Error),
                (
                    "BLAST-001",
                    "blast_radius.data_migration",
                    Severity::Warning
                ),
            ]
        );
    }

    #[test]
    fn rollback_001_by_tier() {
        let no_slo = tier1_with("operational_rollback_slo", "");
        let report = validate(&no_slo);
        assert_eq!(
            ids_at(&report),
            [("ROLLBACK-001", "operational_rollback_slo", Severity::Error)]
        );
        let tier3 = no_slo.replace("risk_tier: 1", "risk_tier: 3");
        assert_eq!(
            ids_at(&validate(&tier3)),
            [(
                "ROLLBACK-001",
                "operational_rollback_slo",
                Severity::Warning
            )]
        );

        let no_steps = tier1_with("rollback", "");
        assert_eq!(
            ids_at(&validate(&no_steps)),
            [("ROLLBACK-001", "rollback", Severity::Error)]
        );

        let migrating_tier3 = no_steps
            .replace("risk_tier: 1", "risk_tier: 3")
            .replace("data_migration: false", "data_migration: true");
        let report = validate(&migrating_tier3);
        assert_eq!(
            find(&report, "ROLLBACK-001", "rollback").severity,
            Severity::Error
        );
        assert_eq!(
            find(&report, "BLAST-001", "blast_radius.data_migration").severity,
            Severity::Warning
        );

        let vague = TIER1.replace("\"5m\"", "\"quickly\"");
        assert_eq!(
            ids_at(&validate(&vague)),
            [(
                "ROLLBACK-001",
                "operational_rollback_slo",
                Severity::Warning
            )]
        );
        for ok in ["5m", "30s", "1h", "2 days", "1.5h", "15 min"] {
            assert!(is_duration(ok), "{ok}");
        }
    }

    #[test]
    fn acceptance_001_missing_empty_and_duplicate() {
        let report = validate(&tier1_with("acceptance", "acceptance: []\n"));
        assert_eq!(
            ids_at(&report),
            [("ACCEPTANCE-001", "acceptance", Severity::Error)]
        );

        let report = validate(&tier1_with(
            "acceptance",
            "acceptance:\n  - id: A1\n    given: g\n    when: w\n    then: t\n  - id: A2\n    given: g\n    when: w\n    then:\n  - id: A1\n    given: g\n    when: w\n    then: t\n  - given: g\n    when: w\n    then: t\n",
        ));
        assert_eq!(
            ids_at(&report),
            [
                ("ACCEPTANCE-001", "acceptance[1].then", Severity::Error),
                ("ACCEPTANCE-001", "acceptance[2].id", Severity::Error),
                ("ACCEPTANCE-001", "acceptance[3].id", Severity::Error),
            ]
        );
        assert!(report.violations[1].message.contains("acceptance[0]"));
    }

    #[test]
    fn invariant_001_none_stated() {
        let report = validate(&tier1_with("invariants", "invariants: []\n"));
        assert_eq!(
            ids_at(&report),
            [("INVARIANT-001", "invariants", Severity::Error)]
        );
    }

    #[test]
    fn contract_001_required_by_tier() {
        let none = tier1_with("contracts", "contracts: []\n");
        assert_eq!(
            ids_at(&validate(&none)),
            [("CONTRACT-001", "contracts", Severity::Error)]
        );
        // Tier 3 does not require contracts; CAWS exempts chores at any tier.
        let tier3 = none.replace("risk_tier: 1", "risk_tier: 3");
        assert!(
            validate(&tier3)
                .violations
                .iter()
                .all(|v| v.rule_id != "CONTRACT-001")
        );
        let chore = none.replace("mode: feature", "mode: chore");
        assert!(validate(&chore).violations.is_empty());

        let incomplete = tier1_with(
            "contracts",
            "contracts:\n  - type: soap\n  - path: x.yaml\n",
        );
        assert_eq!(
            ids_at(&validate(&incomplete)),
            [
                ("CONTRACT-001", "contracts[0].type", Severity::Warning),
                ("CONTRACT-001", "contracts[0].path", Severity::Error),
                ("CONTRACT-001", "contracts[1].type", Severity::Error),
            ]
        );
    }

    #[test]
    fn observability_001_tier1_error_tier2_warning() {
        let none = tier1_with("observability", "observability:\n  logs: []\n");
        assert_eq!(
            ids_at(&validate(&none)),
            [("OBSERVABILITY-001", "observability", Severity::Error)]
        );
        let tier2 = none.replace("risk_tier: 1", "risk_tier: 2");
        let report = validate(&tier2);
        assert_eq!(
            ids_at(&report),
            [("OBSERVABILITY-001", "observability", Severity::Warning)]
        );
        assert!(report.is_valid());
    }

    #[test]
    fn nonfunc_001_missing_and_empty_lists() {
        let missing = tier1_with("non_functional", "").replace("risk_tier: 1", "risk_tier: 2");
        assert_eq!(
            ids_at(&validate(&missing)),
            [("NONFUNC-001", "non_functional", Severity::Error)]
        );
        let thin = tier1_with(
            "non_functional",
            "non_functional:\n  a11y: []\n  perf: {}\n  security: []\n",
        );
        assert_eq!(
            ids_at(&validate(&thin)),
            [
                ("NONFUNC-001", "non_functional.security", Severity::Error),
                ("NONFUNC-001", "non_functional.perf", Severity::Warning),
            ]
        );
    }

    #[test]
    fn budget_001_above_tier_limit_names_limit_and_fix() {
        let report = validate(&TIER1.replace("max_files: 20", "max_files: 40"));
        let v = find(&report, "BUDGET-001", "change_budget.max_files");
        assert_eq!(v.severity, Severity::Error);
        assert!(v.message.contains("tier 1's limit of 25"), "{}", v.message);
        assert!(v.fix.starts_with("Lower max_files to 25"), "{}", v.fix);
        assert!(v.fix.contains("risk_tier: 2 (allows 50 files"), "{}", v.fix);
        assert_eq!(report.violations.len(), 1);
        assert!(
            v.to_string()
                .starts_with("BUDGET-001 error at change_budget.max_files: max_files 40 is above"),
            "{v}"
        );

        let report = validate(&TIER1.replace("max_loc: 800", "max_loc: 9000"));
        let v = find(&report, "BUDGET-001", "change_budget.max_loc");
        assert!(v.fix.contains("no tier allows 9000 lines"), "{}", v.fix);
    }

    #[test]
    fn budget_002_missing_budget_warns_and_tier_limits_apply() {
        let text = tier1_with("change_budget", "");
        let report = validate(&text);
        assert_eq!(
            ids_at(&report),
            [("BUDGET-002", "change_budget", Severity::Warning)]
        );
        assert!(
            report.violations[0]
                .message
                .contains("25 files, 1000 lines")
        );
        assert!(report.is_valid());
        let spec = report.spec.unwrap();
        assert_eq!(
            spec.effective_budget(&Tiers::default()),
            EffectiveBudget {
                max_files: 25,
                max_loc: 1000
            }
        );
        let half = tier1_with("change_budget", "change_budget:\n  max_files: 5\n");
        assert_eq!(
            ids_at(&validate(&half)),
            [("BUDGET-002", "change_budget.max_loc", Severity::Warning)]
        );
    }

    #[test]
    fn several_problems_are_all_reported() {
        let text = "id: FEAT-9\ntitle: Something quite long\nrisk_tier: 2\nmode: fix\nscope:\n  in: []\nacceptance:\n  - id: A1\n    given: g\n";
        let report = validate(text);
        let rules: Vec<_> = report.violations.iter().map(|v| v.rule_id).collect();
        for rule in [
            "BUDGET-002",
            "BLAST-001",
            "ROLLBACK-001",
            "SCOPE-001",
            "INVARIANT-001",
            "ACCEPTANCE-001",
            "NONFUNC-001",
            "CONTRACT-001",
            "OBSERVABILITY-001",
        ] {
            assert!(rules.contains(&rule), "{rule} missing from {rules:?}");
        }
        assert!(report.violations.iter().all(|v| !v.fix.is_empty()));
        // Readable, so the spec is there, but not valid.
        assert!(report.spec.is_some());
        assert!(!report.is_valid());
    }

    #[test]
    fn json_input_works() {
        let value: serde_json::Value = serde_saphyr::from_str(TIER1).unwrap();
        let json = serde_json::to_string_pretty(&value).unwrap();
        let report = validate(&json);
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        assert_eq!(report.spec, validate(TIER1).spec);

        let broken = "{\n  \"id\": \"FEAT-1\",\n  \"title\": oops\n}";
        let report = validate(broken);
        assert_eq!(ids_at(&report), [("SPEC-001", "", Severity::Error)]);
        assert!(
            report.violations[0].message.contains("line 3"),
            "{}",
            report.violations[0].message
        );

        let mistyped = json.replace("\"max_files\": 20", "\"max_files\": \"twenty\"");
        let report = validate(&mistyped);
        let v = find(&report, "SPEC-001", "change_budget.max_files");
        assert!(v.message.contains("line"), "{}", v.message);
    }

    fn scope_of(include: &[&str], exclude: &[&str]) -> SpecScope {
        let mut spec = validate(TIER1).spec.unwrap();
        spec.scope = Scope {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        };
        SpecScope::new(&spec).unwrap()
    }

    #[test]
    fn spec_scope_in_and_out() {
        let scope = scope_of(
            &["src/auth/", "tests/**/*.rs", "README.md"],
            &["src/auth/vendor/", "**/*.snap"],
        );
        for inside in [
            "src/auth/login.rs",
            "src/auth/deep/er.rs",
            "./src/auth/x.rs",
            "tests/auth/limit.rs",
            "tests/a/b/c.rs",
            "README.md",
        ] {
            assert_eq!(scope.check(inside), None, "{inside}");
        }
        let v = scope.check("src/main.rs").unwrap();
        assert_eq!(
            (v.rule_id, v.path.as_str(), v.severity),
            ("SCOPE-001", "scope.in", Severity::Error)
        );
        assert!(v.message.contains("FEAT-1234"), "{}", v.message);
        // Plain entries cover what is beneath them, not siblings sharing a prefix.
        assert!(scope.check("src/authz.rs").is_some());
        assert!(scope.check("tests/auth/data.json").is_some());
        // out wins over in.
        let v = scope.check("src/auth/vendor/lib.rs").unwrap();
        assert_eq!(v.path, "scope.out[0]");
        assert_eq!(
            scope.check("src/auth/ui.snap").unwrap().path,
            "scope.out[1]"
        );
        // `*` stays within one directory.
        let star = scope_of(&["src/*.rs"], &[]);
        assert_eq!(star.check("src/lib.rs"), None);
        assert!(star.check("src/a/lib.rs").is_some());
    }

    #[test]
    fn spec_scope_new_refuses_a_bad_scope() {
        let mut spec = validate(TIER1).spec.unwrap();
        spec.scope.include = vec!["src/[".to_string()];
        let v = SpecScope::new(&spec).unwrap_err();
        assert_eq!((v.rule_id, v.path.as_str()), ("SCOPE-001", "scope.in[0]"));
        spec.scope.include.clear();
        assert_eq!(SpecScope::new(&spec).unwrap_err().path, "scope.in");
    }

    #[test]
    fn tier_defaults_are_caws_numbers() {
        let tiers = Tiers::default();
        let t1 = tiers.get(1).unwrap();
        assert_eq!(
            (t1.max_files, t1.max_loc, t1.min_coverage, t1.min_mutation),
            (25, 1000, 0.90, 0.70)
        );
        assert!(t1.contracts_required && t1.human_review);
        let t2 = tiers.get(2).unwrap();
        assert_eq!(
            (t2.max_files, t2.max_loc, t2.min_coverage, t2.min_mutation),
            (50, 2000, 0.80, 0.50)
        );
        assert!(t2.contracts_required && !t2.human_review);
        let t3 = tiers.get(3).unwrap();
        assert_eq!(
            (t3.max_files, t3.max_loc, t3.min_coverage, t3.min_mutation),
            (100, 5000, 0.70, 0.30)
        );
        assert!(!t3.contracts_required && !t3.human_review);
        assert_eq!(tiers.get(0), None);
        assert_eq!(tiers.get(4), None);
    }

    #[test]
    fn partial_tier_overrides_fall_back_to_defaults() {
        let tiers: Tiers =
            serde_saphyr::from_str("1:\n  max_files: 10\n\"3\":\n  human_review: true\n").unwrap();
        let defaults = Tiers::default();
        assert_eq!(tiers.get(1).unwrap().max_files, 10);
        assert_eq!(tiers.get(1).unwrap().max_loc, 1000);
        assert_eq!(tiers.get(2), defaults.get(2));
        assert!(tiers.get(3).unwrap().human_review);
        assert_eq!(tiers.get(3).unwrap().max_files, 100);

        // CAWS policy.yaml's risk_tiers section reads as is (percentages).
        let caws: Tiers = serde_saphyr::from_str(
            "'2':\n  max_files: 100\n  max_loc: 10000\n  coverage_threshold: 85\n  manual_review_required: true\n  description: Standard\n",
        )
        .unwrap();
        let t2 = caws.get(2).unwrap();
        assert_eq!(
            (t2.max_files, t2.max_loc, t2.min_coverage, t2.human_review),
            (100, 10000, 0.85, true)
        );
        assert_eq!(t2.min_mutation, 0.50);

        let json: Tiers = serde_json::from_str(r#"{"2": {"max_loc": 3000}}"#).unwrap();
        assert_eq!(json.get(2).unwrap().max_loc, 3000);
        // Serialize then read back is the identity.
        let round: Tiers = serde_json::from_str(&serde_json::to_string(&caws).unwrap()).unwrap();
        assert_eq!(round, caws);

        for bad in [
            "4:\n  max_files: 1\n",
            "1:\n  max_file: 10\n",
            "1:\n  max_files: 0\n",
            "1:\n  min_coverage: 90\n",
            "1:\n  min_coverage: 0.9\n  coverage_threshold: 90\n",
        ] {
            assert!(serde_saphyr::from_str::<Tiers>(bad).is_err(), "{bad}");
        }

        // Overrides drive the budget rule.
        let report = validate_spec(TIER1, &tiers);
        let v = find(&report, "BUDGET-001", "change_budget.max_files");
        assert!(v.message.contains("limit of 10"), "{}", v.message);
    }
}
