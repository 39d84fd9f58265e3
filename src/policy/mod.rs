//! The policy engine: given an [`Action`] (what is about to happen, as plain
//! data), [`Policy::evaluate`] returns a [`Decision`]. It is a pure function:
//! no I/O, no clock, no state, so the same action always gets the same answer,
//! and `arbiter call` and the live server cannot disagree.
//!
//! Rules compile at load into glob matchers (one `GlobSet` per rule kind); the
//! hot path only matches. When several rules match, the strictest verdict wins
//! and the decision lists every matched rule with its justification.
//!
//! This is the built-in default policy; policy files (CAWS) extend it.

pub mod command;

use std::fmt;

use globset::{Glob, GlobSet, GlobSetBuilder};

/// What a tool is about to do. Paths are real, workspace-relative paths
/// (symlinks already resolved by the executor), so globs judge the file that
/// will actually be touched.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// Read a file's contents.
    ReadFile { path: &'a str },
    /// Create or replace a file.
    WriteFile {
        path: &'a str,
        /// The file exists and has other hard links (a write would change them too).
        hard_linked: bool,
        /// Size of the new contents in bytes.
        bytes: u64,
    },
}

impl Action<'_> {
    pub fn path(&self) -> &str {
        match self {
            Action::ReadFile { path } | Action::WriteFile { path, .. } => path,
        }
    }
}

/// A rule's verdict, ordered by severity: the strictest matched verdict wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
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

/// A rule that matched an action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MatchedRule {
    pub id: &'static str,
    pub verdict: Verdict,
    pub justification: &'static str,
    /// What the caller can do instead.
    pub advice: &'static str,
}

/// The answer for one action: the strictest verdict and every rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub matched: Vec<MatchedRule>,
}

impl Decision {
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
        let ids: Vec<&str> = self.matched.iter().map(|r| r.id).collect();
        ids.join(",")
    }
}

/// Which actions a path rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applies {
    Write,
    ReadWrite,
}

struct PathRule {
    rule: MatchedRule,
    applies: Applies,
}

/// A compiled policy.
pub struct Policy {
    path_rules: Vec<PathRule>,
    /// One matcher over every path rule's globs; match indices map to `glob_owner`.
    path_globs: GlobSet,
    glob_owner: Vec<usize>,
    hard_link_rule: MatchedRule,
    allow_hard_linked_writes: bool,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("path_rules", &self.path_rules.len())
            .field("allow_hard_linked_writes", &self.allow_hard_linked_writes)
            .finish()
    }
}

const BUILT_IN_PATH_RULES: &[(&str, Applies, &[&str], &str, &str)] = &[
    (
        "PATH-001",
        Applies::Write,
        &[".git", ".git/**", "**/.git/**"],
        "the repository's history and configuration (.git/) are not edited by agents: a changed hook or config runs code outside any sandbox",
        "change files in the working tree; use git commands for history",
    ),
    (
        "PATH-002",
        Applies::ReadWrite,
        &[
            "**/.env",
            "**/.env.*",
            "**/*.pem",
            "**/*.key",
            "**/id_rsa*",
            "**/id_ed25519*",
            "**/id_ecdsa*",
            "**/.netrc",
            "**/.npmrc",
            "**/.pypirc",
            "**/.aws/credentials",
        ],
        "files that usually hold secrets (.env, private keys, credentials) are not read or written through tools",
        "ask a person for the value you need, or call override_request with this rule id",
    ),
];

impl Policy {
    /// The built-in default policy.
    pub fn built_in() -> Self {
        let mut builder = GlobSetBuilder::new();
        let mut glob_owner = Vec::new();
        let mut path_rules = Vec::new();
        for (index, (id, applies, globs, justification, advice)) in
            BUILT_IN_PATH_RULES.iter().enumerate()
        {
            for glob in *globs {
                // Built-in globs are constants; a failure here is a programming error
                // caught by the unit tests below.
                builder.add(Glob::new(glob).expect("built-in glob is valid"));
                glob_owner.push(index);
            }
            path_rules.push(PathRule {
                rule: MatchedRule {
                    id,
                    verdict: Verdict::Deny,
                    justification,
                    advice,
                },
                applies: *applies,
            });
        }
        Self {
            path_rules,
            path_globs: builder.build().expect("built-in globs compile"),
            glob_owner,
            hard_link_rule: MatchedRule {
                id: "LINK-001",
                verdict: Verdict::Deny,
                justification: "the file has other hard links: replacing it would silently diverge from (or, edited in place, change) the other names, which may lie outside the workspace",
                advice: "write to a new file, or ask a person to allow hard-linked writes in the policy",
            },
            allow_hard_linked_writes: false,
        }
    }

    /// Decide `action`. Pure: no I/O, no allocation when nothing matches.
    pub fn evaluate(&self, action: &Action<'_>) -> Decision {
        let mut matched = Vec::new();
        let is_write = matches!(action, Action::WriteFile { .. });
        if !self.path_globs.is_empty() && self.path_globs.is_match(action.path()) {
            let mut seen = [false; 64];
            for glob_index in self.path_globs.matches(action.path()) {
                let owner = self.glob_owner[glob_index];
                let rule = &self.path_rules[owner];
                let applies = match rule.applies {
                    Applies::ReadWrite => true,
                    Applies::Write => is_write,
                };
                if applies && !seen.get(owner).copied().unwrap_or(false) {
                    if let Some(s) = seen.get_mut(owner) {
                        *s = true;
                    }
                    matched.push(rule.rule.clone());
                }
            }
        }
        if let Action::WriteFile {
            hard_linked: true, ..
        } = action
            && !self.allow_hard_linked_writes
        {
            matched.push(self.hard_link_rule.clone());
        }
        let verdict = matched
            .iter()
            .map(|r| r.verdict)
            .max()
            .unwrap_or(Verdict::Allow);
        Decision { verdict, matched }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &str) -> Decision {
        Policy::built_in().evaluate(&Action::ReadFile { path })
    }

    fn write(path: &str) -> Decision {
        Policy::built_in().evaluate(&Action::WriteFile {
            path,
            hard_linked: false,
            bytes: 1,
        })
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
    fn hard_linked_files_are_not_written() {
        let d = Policy::built_in().evaluate(&Action::WriteFile {
            path: "a.txt",
            hard_linked: true,
            bytes: 1,
        });
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.rule_ids(), "LINK-001");
    }

    #[test]
    fn every_matched_rule_is_listed_once() {
        let d = Policy::built_in().evaluate(&Action::WriteFile {
            path: ".git/.env",
            hard_linked: true,
            bytes: 1,
        });
        assert_eq!(d.rule_ids(), "PATH-001,PATH-002,LINK-001");
    }
}
