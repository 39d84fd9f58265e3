//! The policy engine: given an [`Action`] (what is about to happen, as plain
//! data), [`Policy::evaluate`] returns a [`Decision`]. It is a pure function:
//! no I/O, no clock, no state, so the same action always gets the same answer,
//! and `arbiter policy check` and the live server cannot disagree.
//!
//! A policy is written in YAML ([`file`]), compiled at load into matchers (one
//! `GlobSet` for every path rule, one `RegexSet` for every content rule, argv
//! patterns for command rules); the hot path only matches. When several rules
//! match, the strictest verdict wins and the decision lists every matched rule
//! with its justification. A default applies only when no rule matched.

pub mod budget;
pub mod command;
pub mod file;
#[cfg(test)]
mod proptests;
pub mod sandbox;
pub mod spec;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::bytes::{RegexSet, RegexSetBuilder};
use serde_json::{Value, json};

use command::{CommandLine, CommandPattern, FindingKind, ShellOptions};
use file::{
    Access, Examples, OverrideSettings, PolicyError, PolicyFile, Problems, SpecSection,
    TaskSettings,
};
use sandbox::SandboxSettings;
use spec::Tiers;

/// What a tool is about to do. Paths are workspace-relative; the executor
/// passes real paths (symlinks resolved), and [`Policy::evaluate`] normalizes
/// spelling (`./a`, `a//b`, `a/../b`) so no spelling slips past a glob.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// Read a file's contents.
    ReadFile { path: &'a str },
    /// Create or replace a file.
    WriteFile {
        path: &'a str,
        /// The file exists and has other hard links (a write would change them too).
        hard_linked: bool,
        /// The text being added: a new file's contents, or an edit's new string.
        added: &'a str,
    },
    /// Remove a directory entry: a file, a symlink (the link, not its target),
    /// or with `is_dir` a directory and everything in it. Judged with the path
    /// rules for `write` access; a directory also needs
    /// `paths.allow_directory_delete` (`DELETE-001`). A move is a delete of
    /// its source plus a write of its destination.
    DeleteFile { path: &'a str, is_dir: bool },
    /// Run a command line (the string the agent sent).
    RunCommand { command: &'a str },
}

impl Action<'_> {
    /// What the action names, for messages: a path or a command.
    pub fn subject(&self) -> &str {
        match self {
            Action::ReadFile { path }
            | Action::WriteFile { path, .. }
            | Action::DeleteFile { path, .. } => path,
            Action::RunCommand { command } => command,
        }
    }
}

/// A rule's verdict, ordered by severity: the strictest matched verdict wins.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    NeedsOverride,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::NeedsOverride => "needs_override",
            Verdict::Deny => "deny",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule that matched an action. Cheap to clone (shared strings).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MatchedRule {
    pub id: Arc<str>,
    #[serde(rename = "decision")]
    pub verdict: Verdict,
    pub justification: Arc<str>,
    /// What the caller can do instead.
    pub advice: Arc<str>,
}

impl MatchedRule {
    #[cfg(test)]
    pub(crate) fn for_test(id: &str, verdict: Verdict) -> Self {
        Self::new(id, verdict, "test", "test")
    }

    fn new(id: &str, verdict: Verdict, justification: &str, advice: &str) -> Self {
        Self {
            id: id.into(),
            verdict,
            justification: justification.into(),
            advice: advice.into(),
        }
    }
}

/// The answer for one action: the strictest verdict and every rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    #[serde(rename = "decision")]
    pub verdict: Verdict,
    pub matched: Vec<MatchedRule>,
    /// Rules an active waiver lifted for this action (their verdict in
    /// `matched` is then `allow`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waived: Vec<Waived>,
}

/// A rule lifted by a waiver: which rule, which waiver, and what it said before.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Waived {
    pub rule_id: Arc<str>,
    pub waiver_id: Arc<str>,
    pub was: Verdict,
}

/// Whether an override may waive a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waivability {
    Waivable,
    /// Never; the reason says why.
    Never(&'static str),
    /// No rule of this policy or the engine has this id.
    Unknown,
}

impl Decision {
    pub fn allow() -> Self {
        Self {
            verdict: Verdict::Allow,
            matched: Vec::new(),
            waived: Vec::new(),
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// The rules that decided a refusal (those with the winning verdict).
    pub fn deciding_rules(&self) -> impl Iterator<Item = &MatchedRule> {
        self.matched
            .iter()
            .filter(move |r| r.verdict == self.verdict)
    }

    /// Comma-separated ids of every matched rule, for the audit record.
    pub fn rule_ids(&self) -> String {
        let ids: Vec<&str> = self.matched.iter().map(|r| &*r.id).collect();
        ids.join(",")
    }

    /// Add a matched rule (once per id); the verdict becomes the strictest.
    pub fn add(&mut self, rule: MatchedRule) {
        self.verdict = self.verdict.max(rule.verdict);
        if !self.matched.iter().any(|m| m.id == rule.id) {
            self.matched.push(rule);
        }
    }

    /// Fold another decision into this one.
    pub fn merge(&mut self, other: Decision) {
        self.verdict = self.verdict.max(other.verdict);
        for rule in other.matched {
            self.add(rule);
        }
        for w in other.waived {
            if !self.waived.contains(&w) {
                self.waived.push(w);
            }
        }
    }

    /// Lift `rule_id` (when it matched with a verdict above allow) by
    /// `waiver_id`; the verdict becomes the strictest of what remains.
    /// Returns whether anything was lifted.
    pub fn waive(&mut self, rule_id: &str, waiver_id: &str) -> bool {
        let mut lifted = false;
        for rule in &mut self.matched {
            if &*rule.id == rule_id && rule.verdict > Verdict::Allow {
                self.waived.push(Waived {
                    rule_id: rule.id.clone(),
                    waiver_id: waiver_id.into(),
                    was: rule.verdict,
                });
                rule.verdict = Verdict::Allow;
                lifted = true;
            }
        }
        if lifted {
            self.verdict = self
                .matched
                .iter()
                .map(|r| r.verdict)
                .max()
                .unwrap_or(Verdict::Allow);
        }
        lifted
    }

    /// Comma-separated waiver ids that lifted rules, for the audit record.
    pub fn waiver_ids(&self) -> String {
        let mut ids: Vec<&str> = Vec::new();
        for w in &self.waived {
            if !ids.contains(&&*w.waiver_id) {
                ids.push(&w.waiver_id);
            }
        }
        ids.join(",")
    }
}

struct PathRule {
    rule: MatchedRule,
    read: bool,
    write: bool,
}

struct CommandRule {
    rule: MatchedRule,
    /// Any of these matches.
    patterns: Vec<CommandPattern>,
}

struct FindingRule {
    rule: MatchedRule,
    kinds: Vec<FindingKind>,
}

/// Examples kept from the file, checked once after compiling.
struct RuleExamples {
    kind: RuleKind,
    id: String,
    examples: Examples,
}

#[derive(Clone, Copy)]
enum RuleKind {
    Path,
    Command,
    Content,
}

/// A compiled policy.
pub struct Policy {
    source: String,
    name: String,
    path_default: Verdict,
    path_rules: Vec<PathRule>,
    /// One matcher over every path rule's globs; match indices map to `path_glob_owner`.
    path_globs: GlobSet,
    path_glob_owner: Vec<usize>,
    allow_hard_linked_writes: bool,
    hard_link_rule: MatchedRule,
    allow_directory_delete: bool,
    directory_delete_rule: MatchedRule,
    command_default: Verdict,
    shell: ShellOptions,
    command_rules: Vec<CommandRule>,
    finding_rules: Vec<FindingRule>,
    content_rules: Vec<MatchedRule>,
    content_set: RegexSet,
    content_owner: Vec<usize>,
    tiers: Tiers,
    spec: SpecSection,
    sandbox: SandboxSettings,
    examples: Vec<RuleExamples>,
    effective: Value,
    /// Workspace paths no write may touch: the policy file itself when it
    /// lives inside the workspace (`POLICY-001`).
    protected: Vec<String>,
    overrides: OverrideSettings,
    tasks: TaskSettings,
    /// Every rule id of the file, with whether it may be waived.
    rule_waivable: std::collections::HashMap<String, bool>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("source", &self.source)
            .field("rules", &self.rule_count())
            .finish()
    }
}

const NO_ADVICE: &str = "change the request, or call override_request with this rule id";

/// Advice for a rule that can never be waived and gives none of its own.
const NO_ADVICE_NEVER_WAIVABLE: &str = "change the request; this rule cannot be waived";

fn advice_or_default(advice: &Option<String>, never_waivable: bool) -> &str {
    advice.as_deref().unwrap_or(if never_waivable {
        NO_ADVICE_NEVER_WAIVABLE
    } else {
        NO_ADVICE
    })
}

impl Policy {
    /// The built-in default policy (`policies/default.yaml`, compiled in).
    pub fn built_in() -> Self {
        file::built_in_policy()
    }

    /// Where this policy came from (a file path or the built-in name).
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    pub fn spec_settings(&self) -> &SpecSection {
        &self.spec
    }

    pub fn shell_options(&self) -> ShellOptions {
        self.shell
    }

    /// How commands run: sandbox mode, network, limits, paths, environment.
    pub fn sandbox(&self) -> &SandboxSettings {
        &self.sandbox
    }

    pub fn rule_count(&self) -> usize {
        self.path_rules.len()
            + self.command_rules.len()
            + self.finding_rules.len()
            + self.content_rules.len()
    }

    /// How many examples the policy's rules carry (all passed, or it would not have loaded).
    pub fn example_count(&self) -> usize {
        self.examples
            .iter()
            .map(|e| e.examples.must_match.len() + e.examples.not_match.len())
            .sum()
    }

    /// The policy after defaults, as `arbiter policy show` prints it.
    pub fn effective(&self) -> &Value {
        &self.effective
    }

    /// Compile a parsed file; problems are collected, not returned at the first.
    fn compile(file: &PolicyFile, source: &str, problems: &mut Problems) -> Policy {
        let mut ids = std::collections::HashSet::new();
        let mut check_id = |id: &serde_saphyr::Spanned<String>, problems: &mut Problems| {
            if id.value.trim().is_empty() {
                problems.at(id, None, "a rule needs a non-empty id");
            } else if is_reserved_id(&id.value) {
                problems.at(
                    id,
                    Some(&id.value),
                    "this id belongs to the engine (confinement, command analysis, hard links, defaults, working specs, audit); pick another",
                );
            } else if !ids.insert(id.value.clone()) {
                problems.at(
                    id,
                    Some(&id.value),
                    "this rule id is used more than once; ids must be unique",
                );
            }
        };
        let mut examples = Vec::new();

        let mut path_rules = Vec::new();
        let mut builder = GlobSetBuilder::new();
        let mut path_glob_owner = Vec::new();
        for spec in &file.paths.rules {
            check_id(&spec.id, problems);
            if spec.globs.is_empty() {
                problems.at(
                    &spec.id,
                    Some(&spec.id.value),
                    "a path rule needs at least one glob",
                );
            }
            if spec.access.is_empty() {
                problems.at(
                    &spec.id,
                    Some(&spec.id.value),
                    "`access: []` never matches; list read, write or both (or leave it out for both)",
                );
            }
            for glob in &spec.globs {
                match compile_glob(&glob.value, spec.case_insensitive) {
                    Ok(g) => {
                        builder.add(g);
                        path_glob_owner.push(path_rules.len());
                    }
                    Err(e) => problems.at(
                        glob,
                        Some(&spec.id.value),
                        format!("bad glob `{}`: {e}", glob.value),
                    ),
                }
            }
            path_rules.push(PathRule {
                rule: MatchedRule::new(
                    &spec.id.value,
                    spec.decision,
                    &spec.justification,
                    advice_or_default(&spec.advice, spec.never_waivable),
                ),
                read: spec.access.contains(&Access::Read),
                write: spec.access.contains(&Access::Write),
            });
            examples.push(RuleExamples {
                kind: RuleKind::Path,
                id: spec.id.value.clone(),
                examples: clone_examples(&spec.examples),
            });
        }
        let path_globs = builder.build().unwrap_or_else(|e| {
            problems.general(format!("the path globs do not compile together: {e}"));
            GlobSet::empty()
        });

        let mut command_rules = Vec::new();
        for spec in &file.commands.rules {
            check_id(&spec.id, problems);
            let prefixes: Vec<&Vec<String>> = std::iter::once(&spec.prefix)
                .filter(|p| !p.is_empty())
                .chain(spec.prefixes.iter())
                .collect();
            if prefixes.is_empty() {
                problems.at(
                    &spec.id,
                    Some(&spec.id.value),
                    "a command rule needs `prefix` or `prefixes`",
                );
            }
            let mut patterns = Vec::new();
            for prefix in prefixes {
                match CommandPattern::new(prefix.clone(), spec.args_any.clone()) {
                    Ok(pattern) => patterns.push(pattern),
                    Err(e) => problems.at(
                        &spec.id,
                        Some(&spec.id.value),
                        format!("bad command pattern {prefix:?}: {e}"),
                    ),
                }
            }
            command_rules.push(CommandRule {
                rule: MatchedRule::new(
                    &spec.id.value,
                    spec.decision,
                    &spec.justification,
                    advice_or_default(&spec.advice, spec.never_waivable),
                ),
                patterns,
            });
            examples.push(RuleExamples {
                kind: RuleKind::Command,
                id: spec.id.value.clone(),
                examples: clone_examples(&spec.examples),
            });
        }
        let mut finding_rules = Vec::new();
        for spec in &file.commands.findings {
            check_id(&spec.id, problems);
            if spec.kinds.is_empty() {
                problems.at(
                    &spec.id,
                    Some(&spec.id.value),
                    "`kinds: []` never matches; list the finding kinds this rule is about",
                );
            }
            finding_rules.push(FindingRule {
                rule: MatchedRule::new(
                    &spec.id.value,
                    spec.decision,
                    &spec.justification,
                    advice_or_default(&spec.advice, spec.never_waivable),
                ),
                kinds: spec.kinds.clone(),
            });
        }

        let mut content_rules = Vec::new();
        let mut patterns = Vec::new();
        let mut content_owner = Vec::new();
        for spec in &file.content.rules {
            check_id(&spec.id, problems);
            if spec.patterns.is_empty() {
                problems.at(
                    &spec.id,
                    Some(&spec.id.value),
                    "a content rule needs at least one pattern",
                );
            }
            for pattern in &spec.patterns {
                patterns.push(pattern.value.clone());
                content_owner.push(content_rules.len());
            }
            content_rules.push(MatchedRule::new(
                &spec.id.value,
                spec.decision,
                &spec.justification,
                advice_or_default(&spec.advice, spec.never_waivable),
            ));
            examples.push(RuleExamples {
                kind: RuleKind::Content,
                id: spec.id.value.clone(),
                examples: clone_examples(&spec.examples),
            });
        }
        let content_set = content_regex_set(&patterns).unwrap_or_else(|_| {
            // Compile one by one only now, to say which pattern is wrong.
            for spec in &file.content.rules {
                for pattern in &spec.patterns {
                    if let Err(e) = content_regex_set(std::slice::from_ref(&pattern.value)) {
                        problems.at(
                            pattern,
                            Some(&spec.id.value),
                            format!(
                                "bad pattern `{}`: {}",
                                pattern.value,
                                regex_error_summary(&e.to_string())
                            ),
                        );
                    }
                }
            }
            RegexSet::empty()
        });

        let sandbox = SandboxSettings::compile(&file.sandbox, problems);
        for problem in file.tasks.problems() {
            problems.general(problem);
        }
        file.tasks.check_patterns(problems);
        let effective = effective_policy(file);
        let never: std::collections::HashSet<&str> = file
            .overrides
            .never_waivable
            .iter()
            .map(String::as_str)
            .collect();
        let mut rule_waivable = std::collections::HashMap::new();
        let ids = (file
            .paths
            .rules
            .iter()
            .map(|r| (&r.id.value, r.never_waivable)))
        .chain(
            file.commands
                .rules
                .iter()
                .map(|r| (&r.id.value, r.never_waivable)),
        )
        .chain(
            file.commands
                .findings
                .iter()
                .map(|r| (&r.id.value, r.never_waivable)),
        )
        .chain(
            file.content
                .rules
                .iter()
                .map(|r| (&r.id.value, r.never_waivable)),
        );
        for (id, never_flag) in ids {
            rule_waivable.insert(id.clone(), !never_flag && !never.contains(id.as_str()));
        }
        for id in &file.overrides.never_waivable {
            if !rule_waivable.contains_key(id)
                && !ENGINE_WAIVABLE.contains(&id.as_str())
                && !is_reserved_id(id)
            {
                problems.general(format!(
                    "overrides.never_waivable names `{id}`, which is no rule of this policy or the engine"
                ));
            }
        }
        Policy {
            source: source.to_string(),
            name: file.name.clone().unwrap_or_else(|| "unnamed".to_string()),
            path_default: file.paths.default,
            path_rules,
            path_globs,
            path_glob_owner,
            allow_hard_linked_writes: file.paths.allow_hard_linked_writes,
            hard_link_rule: MatchedRule::new(
                "LINK-001",
                Verdict::Deny,
                "the file has other hard links: replacing it would silently diverge from (or, edited in place, change) the other names, which may lie outside the workspace",
                "write to a new file, or ask a person to set paths.allow_hard_linked_writes in the policy",
            ),
            allow_directory_delete: file.paths.allow_directory_delete,
            directory_delete_rule: MatchedRule::new(
                "DELETE-001",
                Verdict::Deny,
                "removing a directory removes everything in it at once; the policy does not allow directory removal",
                "delete the files one by one with delete_file, or ask a person to set paths.allow_directory_delete in the policy",
            ),
            command_default: file.commands.default,
            shell: ShellOptions {
                allow_shell_syntax: file.commands.allow_shell_syntax,
            },
            command_rules,
            finding_rules,
            content_rules,
            content_set,
            content_owner,
            tiers: file.tiers.clone(),
            spec: file.spec.clone(),
            sandbox,
            examples,
            effective,
            protected: Vec::new(),
            overrides: file.overrides.clone(),
            tasks: file.tasks.clone(),
            rule_waivable,
        }
    }

    /// Refuse every write to `paths` (workspace-relative): the server calls
    /// this with the policy file's own path when it lies inside the
    /// workspace, so no agent can rewrite the rules it is held to.
    pub fn protect(&mut self, paths: &[String]) {
        self.protected = paths.to_vec();
    }

    /// How tasks are routed and how long claims last.
    pub fn task_settings(&self) -> &TaskSettings {
        &self.tasks
    }

    /// The rules for `override_request`: limits and durations.
    pub fn override_settings(&self) -> &OverrideSettings {
        &self.overrides
    }

    /// Whether an override may waive `rule_id`. Policy rules may, unless
    /// marked `never_waivable`; of the engine's ids only the defaults, the
    /// working spec's scope and budget and directory removal may.
    pub fn waivability(&self, rule_id: &str) -> Waivability {
        let listed_never = self.overrides.never_waivable.iter().any(|n| n == rule_id);
        if let Some(&waivable) = self.rule_waivable.get(rule_id) {
            return if waivable {
                Waivability::Waivable
            } else {
                Waivability::Never("the policy marks this rule never_waivable")
            };
        }
        if ENGINE_WAIVABLE.contains(&rule_id) {
            return if listed_never {
                Waivability::Never("the policy lists this rule under overrides.never_waivable")
            } else {
                Waivability::Waivable
            };
        }
        if is_reserved_id(rule_id) {
            return Waivability::Never(
                "this is one of the engine's invariants (confinement, the policy file, waiver records, hard links, command analysis, audit), which no override lifts",
            );
        }
        Waivability::Unknown
    }

    /// Run every rule's examples; each failure names the rule and the example's place.
    pub fn check_examples(&self) -> Vec<PolicyError> {
        self.check_examples_with(&mut |_| {})
    }

    /// [`Policy::check_examples`], telling `checked` how many examples have
    /// run after each rule's (for a progress bar).
    pub fn check_examples_with(&self, checked: &mut dyn FnMut(usize)) -> Vec<PolicyError> {
        let mut problems = Problems::new(&self.source);
        let mut done = 0;
        for entry in &self.examples {
            done += entry.examples.must_match.len() + entry.examples.not_match.len();
            for (example, should_match) in entry
                .examples
                .must_match
                .iter()
                .map(|e| (e, true))
                .chain(entry.examples.not_match.iter().map(|e| (e, false)))
            {
                let matched = self.rule_matches_example(entry.kind, &entry.id, &example.value);
                if matched != should_match {
                    let claim = if should_match {
                        "to match"
                    } else {
                        "not to match"
                    };
                    problems.at(
                        example,
                        Some(&entry.id),
                        format!(
                            "the example `{}` is listed {claim}, but the rule {} it",
                            example.value,
                            if matched { "matches" } else { "does not match" }
                        ),
                    );
                }
            }
            checked(done);
        }
        problems.list
    }

    fn rule_matches_example(&self, kind: RuleKind, id: &str, example: &str) -> bool {
        let decision = match kind {
            RuleKind::Path => {
                let mut d = self.evaluate(&Action::ReadFile { path: example });
                d.merge(self.evaluate(&Action::WriteFile {
                    path: example,
                    hard_linked: false,
                    added: "",
                }));
                d
            }
            RuleKind::Command => self.evaluate(&Action::RunCommand { command: example }),
            RuleKind::Content => self.evaluate(&Action::WriteFile {
                path: "example.txt",
                hard_linked: false,
                added: example,
            }),
        };
        decision.matched.iter().any(|r| &*r.id == id)
    }

    /// Decide `action`. Pure: no I/O; no allocation for a plain path that no
    /// rule matches.
    pub fn evaluate(&self, action: &Action<'_>) -> Decision {
        match action {
            Action::ReadFile { path } => self.evaluate_path(path, false),
            Action::WriteFile {
                path,
                hard_linked,
                added,
            } => {
                let mut decision = self.evaluate_path(path, true);
                if !self.protected.is_empty()
                    && normalize_path(path).is_some_and(|p| self.protected.iter().any(|x| *x == *p))
                {
                    decision.add(MatchedRule::new(
                        "POLICY-001",
                        Verdict::Deny,
                        "this file is the policy the server enforces; agents do not edit their own rules",
                        "ask a person to change the policy",
                    ));
                }
                if let Some(rule) = waiver_record_rule(path) {
                    decision.add(rule);
                }
                if *hard_linked && !self.allow_hard_linked_writes {
                    decision.add(self.hard_link_rule.clone());
                }
                if !added.is_empty() && !self.content_set.is_empty() {
                    for index in self.content_set.matches(added.as_bytes()).iter() {
                        decision.add(self.content_rules[self.content_owner[index]].clone());
                    }
                }
                decision
            }
            Action::DeleteFile { path, is_dir } => {
                let mut decision = self.evaluate_path(path, true);
                if let Some(rule) = waiver_record_rule(path) {
                    decision.add(rule);
                }
                if *is_dir && !self.allow_directory_delete {
                    decision.add(self.directory_delete_rule.clone());
                }
                decision
            }
            Action::RunCommand { command } => self.evaluate_command(command),
        }
    }

    fn evaluate_path(&self, path: &str, is_write: bool) -> Decision {
        let path = match normalize_path(path) {
            Some(path) => path,
            None => {
                let mut decision = Decision::allow();
                decision.add(MatchedRule::new(
                    "CONFINE-001",
                    Verdict::Deny,
                    "the path leaves the workspace",
                    "use a path inside the workspace",
                ));
                return decision;
            }
        };
        let mut decision = Decision::allow();
        // `is_match` first: it does not allocate, so the common case (no rule
        // matches) costs no allocation at all.
        if !self.path_globs.is_empty() && self.path_globs.is_match(path.as_ref()) {
            for glob_index in self.path_globs.matches(path.as_ref()) {
                let rule = &self.path_rules[self.path_glob_owner[glob_index]];
                if (is_write && rule.write) || (!is_write && rule.read) {
                    decision.add(rule.rule.clone());
                }
            }
        }
        if decision.matched.is_empty() && self.path_default != Verdict::Allow {
            decision.add(MatchedRule::new(
                "PATH-DEFAULT",
                self.path_default,
                "no path rule allows this path, and the policy's default for paths is not allow",
                "use a path a rule allows, or ask a person for an override",
            ));
        }
        decision
    }

    fn evaluate_command(&self, command: &str) -> Decision {
        let mut decision = Decision::allow();
        let line = match command::analyze(command, &self.shell) {
            Ok(line) => line,
            Err(refusal) => {
                decision.add(MatchedRule::new(
                    refusal.rule_id(),
                    Verdict::Deny,
                    &refusal.to_string(),
                    refusal.advice(),
                ));
                return decision;
            }
        };
        self.judge_command_line(&line, &mut decision);
        decision
    }

    fn judge_command_line(&self, line: &CommandLine, decision: &mut Decision) {
        let mut any_rule = false;
        for rule in &self.command_rules {
            if rule
                .patterns
                .iter()
                .any(|p| line.invocations.iter().any(|inv| p.matches(inv)))
            {
                decision.add(rule.rule.clone());
                any_rule = true;
            }
        }
        for rule in &self.finding_rules {
            let found: Vec<_> = line
                .findings
                .iter()
                .filter(|f| rule.kinds.contains(&f.what))
                .collect();
            if !found.is_empty() {
                let evidence: Vec<String> = found
                    .iter()
                    .map(|f| format!("{} ({}: {})", f.program, f.what, f.evidence))
                    .collect();
                let mut matched = rule.rule.clone();
                matched.justification = format!(
                    "{} [found: {}]",
                    rule.rule.justification,
                    evidence.join("; ")
                )
                .into();
                decision.add(matched);
            }
        }
        // Only a command rule (a prefix the operator named) sets the default
        // aside: a finding rule that allows, say, interpreters must not open
        // every other command in a default-deny policy.
        if !any_rule && self.command_default != Verdict::Allow {
            decision.add(MatchedRule::new(
                "CMD-DEFAULT",
                self.command_default,
                "no command rule allows this command, and the policy's default for commands is not allow",
                "run a command the policy allows, or ask a person for an override",
            ));
        }
    }
}

/// `./a//b/../c` → `a/c`. Borrowed when already plain; `None` when it climbs
/// out of the root. An absolute path is judged as written, without its `/`.
fn normalize_path(path: &str) -> Option<Cow<'_, str>> {
    let trimmed = path.trim_start_matches('/');
    let plain = !trimmed.is_empty()
        && trimmed
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if plain {
        return Some(Cow::Borrowed(trimmed));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in trimmed.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    Some(Cow::Owned(parts.join("/")))
}

/// Content patterns match bytes, ASCII-minded (`\b`, `\w` and `(?i)` are
/// ASCII): secrets are ASCII, and the automata stay small and quick to build.
fn content_regex_set(patterns: &[String]) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns).unicode(false).build()
}

/// Globs match whole workspace-relative paths; `*` stays within one directory,
/// `**` crosses directories.
fn compile_glob(glob: &str, case_insensitive: bool) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .case_insensitive(case_insensitive)
        .build()
}

/// `WAIVER-001` when `path` is the CAWS waiver directory or inside it: waiver
/// files record what a person granted, so no agent writes or removes them.
fn waiver_record_rule(path: &str) -> Option<MatchedRule> {
    let path = normalize_path(path)?;
    let dir = crate::overrides::caws::WAIVER_DIR;
    let inside = path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'));
    inside.then(|| {
        MatchedRule::new(
            "WAIVER-001",
            Verdict::Deny,
            "CAWS waiver files record exceptions a person granted; agents do not write them",
            "ask for an exception with override_request; a person approves it",
        )
    })
}

/// Engine ids an override may lift: the defaults, directory removal, and the
/// working spec's scope and budget (what CAWS waivers are for).
const ENGINE_WAIVABLE: &[&str] = &[
    "PATH-DEFAULT",
    "CMD-DEFAULT",
    "DELETE-001",
    "SCOPE-001",
    "BUDGET-001",
];

/// Ids the engine itself reports; a policy rule with one would make
/// decisions and audit records ambiguous.
fn is_reserved_id(id: &str) -> bool {
    const EXACT: &[&str] = &[
        "CMD-001",
        "CMD-002",
        "SHELL-001",
        "SHELL-002",
        "LINK-001",
        "PATH-DEFAULT",
        "CMD-DEFAULT",
        "SCOPE-001",
        "POLICY-001",
        "DELETE-001",
        // The CAWS working-spec ids a broken spec refuses writes with.
        "BLAST-001",
        "ROLLBACK-001",
        "ACCEPTANCE-001",
        "INVARIANT-001",
        "CONTRACT-001",
        "OBSERVABILITY-001",
        "NONFUNC-001",
    ];
    const PREFIXES: &[&str] = &[
        "CONFINE-",
        "FILE-",
        "EDIT-",
        "AUDIT-",
        "BUDGET-",
        "SPEC-",
        "EXEC-",
        "FIND-",
        "MOVE-",
        "OVERRIDE-",
        "WAIVER-",
        "SESSION-",
        "SANDBOX-",
        "TASK-",
        "AGENT-",
        "STORE-",
    ];
    EXACT.contains(&id) || PREFIXES.iter().any(|p| id.starts_with(p))
}

fn clone_examples(e: &Examples) -> Examples {
    Examples {
        must_match: e.must_match.clone(),
        not_match: e.not_match.clone(),
    }
}

/// The `regex` crate puts its one-line summary (`error: ...`) last.
fn regex_error_summary(message: &str) -> String {
    message.lines().last().unwrap_or(message).trim().to_string()
}

/// The file with every default filled in, for `arbiter policy show`.
fn effective_policy(file: &PolicyFile) -> Value {
    let examples = |e: &Examples| {
        json!({
            "match": e.must_match.iter().map(|s| &s.value).collect::<Vec<_>>(),
            "not_match": e.not_match.iter().map(|s| &s.value).collect::<Vec<_>>(),
        })
    };
    json!({
        "version": file.version.value,
        "name": file.name,
        "description": file.description,
        "paths": {
            "default": file.paths.default,
            "allow_hard_linked_writes": file.paths.allow_hard_linked_writes,
            "allow_directory_delete": file.paths.allow_directory_delete,
            "rules": file.paths.rules.iter().map(|r| json!({
                "id": r.id.value, "decision": r.decision, "access": r.access,
                "globs": r.globs.iter().map(|g| &g.value).collect::<Vec<_>>(), "case_insensitive": r.case_insensitive,
                "justification": r.justification, "advice": r.advice.as_deref().unwrap_or(NO_ADVICE),
                "examples": examples(&r.examples),
            })).collect::<Vec<_>>(),
        },
        "commands": {
            "default": file.commands.default,
            "allow_shell_syntax": file.commands.allow_shell_syntax,
            "rules": file.commands.rules.iter().map(|r| json!({
                "id": r.id.value, "decision": r.decision, "prefix": r.prefix, "prefixes": r.prefixes, "args_any": r.args_any,
                "justification": r.justification, "advice": r.advice.as_deref().unwrap_or(NO_ADVICE),
                "examples": examples(&r.examples),
            })).collect::<Vec<_>>(),
            "findings": file.commands.findings.iter().map(|r| json!({
                "id": r.id.value, "decision": r.decision, "kinds": r.kinds,
                "justification": r.justification, "advice": r.advice.as_deref().unwrap_or(NO_ADVICE),
            })).collect::<Vec<_>>(),
        },
        "content": {
            "rules": file.content.rules.iter().map(|r| json!({
                "id": r.id.value, "decision": r.decision,
                "patterns": r.patterns.iter().map(|p| &p.value).collect::<Vec<_>>(),
                "justification": r.justification, "advice": r.advice.as_deref().unwrap_or(NO_ADVICE),
                "examples": examples(&r.examples),
            })).collect::<Vec<_>>(),
        },
        "tiers": file.tiers,
        "spec": file.spec,
        "sandbox": file.sandbox,
        "overrides": file.overrides,
        "tasks": file.tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::built_in()
    }

    fn read(path: &str) -> Decision {
        policy().evaluate(&Action::ReadFile { path })
    }

    fn write(path: &str) -> Decision {
        policy().evaluate(&Action::WriteFile {
            path,
            hard_linked: false,
            added: "x",
        })
    }

    fn added(text: &str) -> Decision {
        policy().evaluate(&Action::WriteFile {
            path: "src/lib.rs",
            hard_linked: false,
            added: text,
        })
    }

    fn run(command: &str) -> Decision {
        policy().evaluate(&Action::RunCommand { command })
    }

    #[test]
    fn ordinary_paths_are_allowed_with_no_matches() {
        let d = write("src/main.rs");
        assert!(d.is_allowed());
        assert!(d.matched.is_empty());
        assert!(read("README.md").is_allowed());
    }

    #[test]
    fn git_internals_are_read_only() {
        assert!(read(".git/config").is_allowed());
        let d = write(".git/hooks/pre-commit");
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.rule_ids(), "PATH-001");
        assert_eq!(write("vendor/lib/.git/config").verdict, Verdict::Deny);
        assert!(write(".github/workflows/ci.yml").is_allowed());
    }

    #[test]
    fn secrets_are_neither_read_nor_written() {
        for p in [
            ".env",
            "app/.env",
            ".env.local",
            "certs/server.pem",
            "home/.ssh/id_rsa.pub",
        ] {
            assert_eq!(read(p).verdict, Verdict::Deny, "{p}");
            assert_eq!(write(p).verdict, Verdict::Deny, "{p}");
            assert_eq!(read(p).rule_ids(), "PATH-002");
        }
        assert!(read("environment.md").is_allowed());
    }

    #[test]
    fn spelling_a_path_differently_does_not_get_past_a_glob() {
        for p in [
            "./.env",
            "a/../.env",
            ".//app/.env",
            "/app/./.env",
            "x/y/../../.env",
        ] {
            assert_eq!(read(p).verdict, Verdict::Deny, "{p}");
        }
        assert_eq!(read("../.env").rule_ids(), "CONFINE-001");
    }

    #[test]
    fn hard_linked_files_are_not_written() {
        let d = policy().evaluate(&Action::WriteFile {
            path: "a.txt",
            hard_linked: true,
            added: "",
        });
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.rule_ids(), "LINK-001");
    }

    fn delete(path: &str, is_dir: bool) -> Decision {
        policy().evaluate(&Action::DeleteFile { path, is_dir })
    }

    #[test]
    fn deletes_are_judged_as_writes() {
        assert!(delete("src/old.rs", false).is_allowed());
        assert!(delete("src/old.rs", false).matched.is_empty());
        assert_eq!(delete(".git/config", false).rule_ids(), "PATH-001");
        assert_eq!(delete("app/.env", false).rule_ids(), "PATH-002");
        assert_eq!(delete("./a/../.git/HEAD", false).rule_ids(), "PATH-001");
    }

    #[test]
    fn directory_deletes_need_the_policy_setting() {
        let d = delete("build", true);
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.rule_ids(), "DELETE-001");
        let permissive = file::parse_policy(
            "version: 1\npaths:\n  allow_directory_delete: true\n",
            "p.yaml",
        )
        .unwrap();
        let d = permissive.evaluate(&Action::DeleteFile {
            path: "build",
            is_dir: true,
        });
        assert!(d.is_allowed() && d.matched.is_empty(), "{d:?}");
        assert_eq!(
            permissive.effective()["paths"]["allow_directory_delete"],
            true
        );
    }

    #[test]
    fn every_matched_rule_is_listed_once() {
        let d = policy().evaluate(&Action::WriteFile {
            path: ".git/.env",
            hard_linked: true,
            added: "",
        });
        assert_eq!(d.rule_ids(), "PATH-001,PATH-002,LINK-001");
    }

    #[test]
    fn content_rules_catch_keys_and_tokens_being_written() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n";
        assert_eq!(added(key).rule_ids(), "CONTENT-001");
        assert_eq!(
            added("aws_key = \"AKIAIOSFODNN7EXAMPLE\"").rule_ids(),
            "CONTENT-002"
        );
        assert_eq!(
            added("token: ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789").rule_ids(),
            "CONTENT-003"
        );
        assert!(added("fn main() { println!(\"BEGIN\"); }").is_allowed());
    }

    #[test]
    fn commands_are_judged_on_their_parsed_argv() {
        assert!(run("cargo test --workspace").is_allowed());
        for trick in [
            "sudo id",
            "\"sudo\" id",
            "s\\udo id",
            "/usr/bin/sudo id",
            "env sudo id",
            "FOO=1 sudo id",
            "bash -lc 'sudo id'",
        ] {
            let d = run(trick);
            assert_eq!(d.verdict, Verdict::Deny, "{trick}: {d:?}");
            assert!(
                d.rule_ids().contains("CMD-001") || d.rule_ids().contains("CMD-"),
                "{trick}: {d:?}"
            );
        }
        assert_eq!(run("ls; rm -rf /").rule_ids(), "SHELL-001");
        assert_eq!(run("git push origin main").verdict, Verdict::NeedsOverride);
        assert_eq!(
            run("git -c core.pager=sh log").verdict,
            Verdict::NeedsOverride
        );
        assert_eq!(
            run("find . -name x -delete").verdict,
            Verdict::NeedsOverride
        );
    }

    #[test]
    fn a_refusal_names_every_rule_and_the_strictest_wins() {
        let d = run("sudo git push");
        assert_eq!(d.verdict, Verdict::Deny);
        assert!(d.matched.len() >= 2, "{d:?}");
        assert!(d.deciding_rules().all(|r| r.verdict == Verdict::Deny));
    }
}
