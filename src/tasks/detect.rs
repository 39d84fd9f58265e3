//! What type of work a task is, and how risky, from its words.
//!
//! Detection counts cue words for each type: in the title (weight 2), the
//! description (weight 1) and the working spec (its `mode` weighs 3, its
//! title 1, its scope's paths 1). Each cue counts once per place, so a long
//! description cannot outvote the title by repetition. The confidence is the
//! chosen type's share of all the evidence, discounted when the evidence is
//! thin: `share * (1 - e^-score)`. With no cue at all the type is `feature`
//! with confidence 0. The signals say which words decided, so a person can
//! see why.
//!
//! Pure: no I/O, no clock.

use super::TaskType;
use crate::policy::spec::{Mode, WorkingSpec};

/// A cue: a word (a trailing `*` matches any word it begins), or a phrase of
/// several words, with its weight. Words that often mean something else
/// ("add", "error") weigh half.
type Cue = (&'static str, f64);

fn cues(task_type: TaskType) -> &'static [Cue] {
    match task_type {
        TaskType::Feature => &[
            ("implement*", 1.0),
            ("feature*", 1.0),
            ("introduc*", 1.0),
            ("add", 0.5),
            ("adds", 0.5),
            ("adding", 0.5),
            ("new", 0.5),
            ("support", 0.5),
            ("create", 0.5),
            ("allow", 0.5),
            ("enable", 0.5),
            ("build", 0.5),
        ],
        TaskType::Bugfix => &[
            ("fix*", 1.0),
            ("bug*", 1.0),
            ("crash*", 1.0),
            ("broken", 1.0),
            ("regression*", 1.0),
            ("panic*", 1.0),
            ("hotfix*", 1.0),
            ("defect*", 1.0),
            ("does not work", 1.0),
            ("doesn't work", 1.0),
            ("not working", 1.0),
            ("error*", 0.5),
            ("fail*", 0.5),
            ("incorrect*", 0.5),
            ("wrong", 0.5),
            ("leak*", 0.5),
            ("exception*", 0.5),
        ],
        TaskType::Refactor => &[
            ("refactor*", 1.0),
            ("restructur*", 1.0),
            ("simplif*", 1.0),
            ("rename*", 1.0),
            ("extract*", 1.0),
            ("reorganiz*", 1.0),
            ("deduplicat*", 1.0),
            ("decoupl*", 1.0),
            ("modulariz*", 1.0),
            ("clean up", 1.0),
            ("cleanup", 1.0),
            ("tidy", 0.5),
            ("move", 0.5),
        ],
        TaskType::Test => &[
            ("test*", 1.0),
            ("coverage", 1.0),
            ("unit test*", 0.5),
            ("e2e", 1.0),
            ("flaky", 1.0),
            ("fixture*", 1.0),
            ("mock*", 0.5),
            ("assert*", 0.5),
            ("proptest*", 1.0),
        ],
        TaskType::Docs => &[
            ("doc", 1.0),
            ("docs", 1.0),
            ("document", 1.0),
            ("documentation", 1.0),
            ("documented", 1.0),
            ("readme*", 1.0),
            ("docstring*", 1.0),
            ("changelog*", 1.0),
            ("tutorial*", 1.0),
            ("guide", 0.5),
            ("typo*", 1.0),
            ("comment*", 0.5),
        ],
        TaskType::Research => &[
            ("investigat*", 1.0),
            ("research*", 1.0),
            ("explor*", 1.0),
            ("spike", 1.0),
            ("evaluat*", 1.0),
            ("compar*", 1.0),
            ("analy*", 1.0),
            ("prototyp*", 1.0),
            ("feasib*", 1.0),
            ("assess*", 1.0),
            ("benchmark*", 0.5),
            ("why", 0.5),
        ],
        TaskType::Ops => &[
            ("deploy*", 1.0),
            ("ci", 1.0),
            ("pipeline*", 1.0),
            ("docker*", 1.0),
            ("kubernetes", 1.0),
            ("k8s", 1.0),
            ("helm", 1.0),
            ("terraform", 1.0),
            ("infra*", 1.0),
            ("monitoring", 1.0),
            ("alert*", 0.5),
            ("release*", 0.5),
            ("provision*", 1.0),
            ("backup*", 1.0),
            ("upgrade", 0.5),
            ("dependenc*", 0.5),
            ("github actions", 1.0),
        ],
    }
}

/// Words that put a task without a spec at tier 1 (critical): security,
/// money, data and access.
const CRITICAL_CUES: &[&str] = &[
    "auth*",
    "security",
    "secur*",
    "password*",
    "credential*",
    "secret*",
    "crypt*",
    "payment*",
    "billing",
    "invoice*",
    "migrat*",
    "permission*",
    "privacy",
    "gdpr",
];

const TITLE_WEIGHT: f64 = 2.0;
const DESCRIPTION_WEIGHT: f64 = 1.0;
const SPEC_MODE_WEIGHT: f64 = 3.0;
const SPEC_TEXT_WEIGHT: f64 = 1.0;

/// A detected type, how sure, and the evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub task_type: TaskType,
    /// 0 (a guess) to 1 (clear), rounded to two decimals.
    pub confidence: f64,
    /// The cues that counted, most weighty first, e.g. "`fix` in the title (bugfix)".
    pub signals: Vec<String>,
}

/// Detect the type of a task.
pub fn detect_task_type(title: &str, description: &str, spec: Option<&WorkingSpec>) -> Detection {
    let mut evidence = Evidence::default();
    evidence.words(&Words::new(title), "the title", TITLE_WEIGHT);
    evidence.words(
        &Words::new(description),
        "the description",
        DESCRIPTION_WEIGHT,
    );
    if let Some(spec) = spec {
        let by_mode = match spec.mode {
            Mode::Feature => TaskType::Feature,
            Mode::Fix => TaskType::Bugfix,
            Mode::Refactor => TaskType::Refactor,
            Mode::Doc => TaskType::Docs,
            Mode::Chore => TaskType::Ops,
        };
        evidence.add(
            by_mode,
            SPEC_MODE_WEIGHT,
            format!("the spec's mode ({})", by_mode.as_str()),
        );
        if spec.title.trim() != title.trim() {
            evidence.words(
                &Words::new(&spec.title),
                "the spec's title",
                SPEC_TEXT_WEIGHT,
            );
        }
        for (task_type, what) in scope_hints(&spec.scope.include) {
            evidence.add(task_type, SPEC_TEXT_WEIGHT, what);
        }
    }
    evidence.conclude()
}

/// A tier for a task that came without a spec: 1 when it touches security,
/// money, data or access; 3 for docs, tests and research; 2 otherwise.
/// Returns the tier and the reason.
pub fn infer_risk_tier(task_type: TaskType, title: &str, description: &str) -> (u8, String) {
    for text in [title, description] {
        let words = Words::new(text);
        if let Some(word) = CRITICAL_CUES.iter().find_map(|cue| words.find(cue)) {
            return (
                1,
                format!("no spec; mentions `{word}` (security, money, data or access)"),
            );
        }
    }
    match task_type {
        TaskType::Docs | TaskType::Test | TaskType::Research => (
            3,
            format!("no spec; {} tasks are low risk", task_type.as_str()),
        ),
        _ => (
            2,
            format!("no spec; the default for {} tasks", task_type.as_str()),
        ),
    }
}

/// A type, a test every scope path must pass for it, and what that means.
type ScopeHint = (TaskType, fn(&str) -> bool, &'static str);

/// What the spec's scope says about the work: only tests, only docs, CI files.
fn scope_hints(paths: &[String]) -> Vec<(TaskType, String)> {
    let checks: [ScopeHint; 3] = [
        (TaskType::Test, is_test_path, "tests"),
        (TaskType::Docs, is_docs_path, "documentation"),
        (TaskType::Ops, is_ops_path, "CI or deployment files"),
    ];
    if paths.is_empty() {
        return Vec::new();
    }
    checks
        .into_iter()
        .filter(|(_, check, _)| paths.iter().all(|p| check(p)))
        .map(|(task_type, _, what)| (task_type, format!("the spec's scope is only {what}")))
        .collect()
}

fn is_test_path(path: &str) -> bool {
    path.split('/')
        .any(|c| c.starts_with("test") || c == "spec")
}

fn is_docs_path(path: &str) -> bool {
    path.starts_with("docs") || path.ends_with(".md")
}

fn is_ops_path(path: &str) -> bool {
    path.starts_with(".github")
        || path.contains("Dockerfile")
        || path.starts_with("deploy")
        || path.starts_with("infra")
        || path.starts_with(".ci")
}

/// A text cut into lower-case words.
struct Words {
    words: Vec<String>,
    /// The words joined by single spaces, with a space at each end, for phrases.
    joined: String,
}

impl Words {
    fn new(text: &str) -> Self {
        let lower = text.to_lowercase();
        let words: Vec<String> = lower
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .map(|w| w.trim_matches('\''))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        let joined = format!(" {} ", words.join(" "));
        Self { words, joined }
    }

    /// The word or phrase of the text that `cue` matches, if any.
    fn find(&self, cue: &str) -> Option<String> {
        let (stem, prefix) = match cue.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (cue, false),
        };
        if stem.contains(' ') {
            // A phrase: whole words in a row; a trailing `*` lets its last word run on.
            let needle = format!(" {stem}");
            let at = self.joined.find(&needle)?;
            let rest = &self.joined[at + needle.len()..];
            let ends_word = rest.starts_with(' ');
            return (prefix || ends_word).then(|| {
                let tail: String = rest.chars().take_while(|c| *c != ' ').collect();
                format!("{stem}{tail}")
            });
        }
        self.words
            .iter()
            .find(|w| {
                if prefix {
                    w.starts_with(stem)
                } else {
                    *w == stem
                }
            })
            .cloned()
    }
}

#[derive(Default)]
struct Evidence {
    scores: [f64; 7],
    /// (weight, type, what) for every cue that counted.
    signals: Vec<(f64, TaskType, String)>,
}

impl Evidence {
    fn add(&mut self, task_type: TaskType, weight: f64, what: String) {
        self.scores[index(task_type)] += weight;
        self.signals.push((weight, task_type, what));
    }

    fn words(&mut self, words: &Words, place: &str, weight: f64) {
        for task_type in TaskType::ALL {
            for (cue, cue_weight) in cues(task_type) {
                if let Some(word) = words.find(cue) {
                    self.add(
                        task_type,
                        weight * cue_weight,
                        format!("`{word}` in {place}"),
                    );
                }
            }
        }
    }

    fn conclude(mut self) -> Detection {
        let total: f64 = self.scores.iter().sum();
        if total <= 0.0 {
            return Detection {
                task_type: TaskType::Feature,
                confidence: 0.0,
                signals: vec!["no cue words; feature is the default".to_string()],
            };
        }
        // The first of the highest scores, in TaskType::ALL order.
        let (best, top) = TaskType::ALL
            .into_iter()
            .map(|t| (t, self.scores[index(t)]))
            .fold((TaskType::Feature, f64::MIN), |acc, (t, s)| {
                if s > acc.1 { (t, s) } else { acc }
            });
        let confidence = (top / total) * (1.0 - (-top).exp());
        self.signals
            .sort_by(|a, b| b.0.total_cmp(&a.0).then(index(a.1).cmp(&index(b.1))));
        Detection {
            task_type: best,
            confidence: (confidence * 100.0).round() / 100.0,
            signals: self
                .signals
                .into_iter()
                .map(|(_, t, what)| format!("{what} ({})", t.as_str()))
                .collect(),
        }
    }
}

fn index(task_type: TaskType) -> usize {
    TaskType::ALL
        .iter()
        .position(|t| *t == task_type)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::spec::{Tiers, validate_spec};

    fn detect(title: &str, description: &str) -> Detection {
        detect_task_type(title, description, None)
    }

    #[test]
    fn each_type_is_found_from_a_plain_title() {
        let cases = [
            ("Implement CSV export for reports", TaskType::Feature),
            ("Fix crash when the config file is empty", TaskType::Bugfix),
            (
                "Refactor the storage layer into modules",
                TaskType::Refactor,
            ),
            ("Add unit tests for the parser", TaskType::Test),
            ("Update the README with install steps", TaskType::Docs),
            (
                "Investigate slow startup on large workspaces",
                TaskType::Research,
            ),
            ("Deploy the service with Docker to staging", TaskType::Ops),
        ];
        for (title, expected) in cases {
            let d = detect(title, "");
            assert_eq!(d.task_type, expected, "{title}: {d:?}");
            assert!(d.confidence > 0.4, "{title}: {d:?}");
        }
    }

    #[test]
    fn a_clear_title_is_confident_and_a_mixed_one_less_so() {
        let clear = detect("Fix crash in the bug report parser", "");
        assert_eq!(clear.task_type, TaskType::Bugfix);
        assert!(clear.confidence >= 0.9, "{clear:?}");
        let mixed = detect("Add error handling", "");
        assert!(mixed.confidence <= 0.5, "{mixed:?}");
        assert!((0.0..=1.0).contains(&mixed.confidence));
    }

    #[test]
    fn the_signals_name_the_words_that_decided() {
        let d = detect("Fix the login bug", "It crashes on submit");
        assert_eq!(d.task_type, TaskType::Bugfix);
        assert!(
            d.signals.iter().any(|s| s == "`fix` in the title (bugfix)"),
            "{d:?}"
        );
        assert!(
            d.signals
                .iter()
                .any(|s| s == "`crashes` in the description (bugfix)"),
            "{d:?}"
        );
    }

    #[test]
    fn the_title_outweighs_the_description() {
        let d = detect(
            "Write documentation for the exporter",
            "the exporter was added last week to fix the sync",
        );
        assert_eq!(d.task_type, TaskType::Docs, "{d:?}");
    }

    #[test]
    fn no_cue_is_a_feature_with_no_confidence() {
        let d = detect("Parser", "the parser");
        assert_eq!(d.task_type, TaskType::Feature);
        assert_eq!(d.confidence, 0.0);
    }

    #[test]
    fn a_word_inside_another_word_is_not_a_cue() {
        // `prefix` is not `fix`, `docker` is not `doc`.
        let d = detect("Prefix handling for docker images", "");
        assert_ne!(d.task_type, TaskType::Bugfix, "{d:?}");
        assert!(!d.signals.iter().any(|s| s.contains("(docs)")), "{d:?}");
    }

    #[test]
    fn a_phrase_is_matched_as_whole_words() {
        let d = detect("Login does not work", "");
        assert_eq!(d.task_type, TaskType::Bugfix, "{d:?}");
        let d = detect("Clean up the old config loader", "");
        assert_eq!(d.task_type, TaskType::Refactor, "{d:?}");
    }

    #[test]
    fn the_specs_mode_and_scope_count() {
        let text = "id: FIX-7\ntitle: Login page\nrisk_tier: 2\nmode: fix\n\
                    scope: {in: [tests/login/]}\ninvariants: [x]\n\
                    acceptance: [{id: A1, given: g, when: w, then: t}]\n";
        let report = validate_spec(text, &Tiers::default());
        let spec = report.spec.expect("the spec reads");
        let d = detect_task_type("Login page", "", Some(&spec));
        assert_eq!(d.task_type, TaskType::Bugfix, "{d:?}");
        assert!(
            d.signals
                .iter()
                .any(|s| s.starts_with("the spec's mode (bugfix)")),
            "{d:?}"
        );
        assert!(
            d.signals
                .iter()
                .any(|s| s.starts_with("the spec's scope is only tests")),
            "{d:?}"
        );
    }

    #[test]
    fn the_tier_follows_critical_words_then_the_type() {
        let (tier, why) = infer_risk_tier(TaskType::Feature, "Add authentication to the API", "");
        assert_eq!(tier, 1);
        assert!(why.contains("`authentication`"), "{why}");
        assert_eq!(
            infer_risk_tier(TaskType::Bugfix, "Fix the payment retry", "").0,
            1
        );
        assert_eq!(infer_risk_tier(TaskType::Docs, "Fix a typo", "").0, 3);
        assert_eq!(infer_risk_tier(TaskType::Feature, "Add a button", "").0, 2);
    }
}
