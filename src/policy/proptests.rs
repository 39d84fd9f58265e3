//! Property tests of [`super::Policy::evaluate`], against the built-in policy
//! and `policies/strict.yaml`:
//!
//! - it never panics, whatever the action (any path, command or added text,
//!   very long, with NUL, unicode, `.`/`..` segments), and every decision is
//!   consistent: its verdict is the strictest matched rule's, a refusal names
//!   at least one rule, and no rule is listed twice;
//! - spelling a path differently (`./`, `//`, `dir/../`, a leading `/`) never
//!   changes its decision, so in particular a denied path stays denied.

use std::collections::HashSet;
use std::sync::LazyLock;

use proptest::prelude::*;

use super::{Action, Decision, Policy, Verdict, file};

static BUILT_IN: LazyLock<Policy> = LazyLock::new(Policy::built_in);
static STRICT: LazyLock<Policy> = LazyLock::new(|| {
    file::parse_policy(include_str!("../../policies/strict.yaml"), "strict")
        .unwrap_or_else(|e| panic!("policies/strict.yaml does not load: {e}"))
});

fn policies() -> [(&'static str, &'static Policy); 2] {
    [("built-in", &BUILT_IN), ("strict", &STRICT)]
}

fn read(path: &str) -> Action<'_> {
    Action::ReadFile { path }
}

fn write(path: &str) -> Action<'_> {
    Action::WriteFile {
        path,
        hard_linked: false,
        added: "",
    }
}

fn access(path: &str, is_write: bool) -> Action<'_> {
    if is_write { write(path) } else { read(path) }
}

/// The decision's own invariants (what `Decision::add` promises).
fn check_consistent(d: &Decision) -> Result<(), TestCaseError> {
    let strictest = d
        .matched
        .iter()
        .map(|r| r.verdict)
        .max()
        .unwrap_or(Verdict::Allow);
    prop_assert_eq!(d.verdict, strictest, "{:?}", d);
    prop_assert!(
        d.is_allowed() || d.deciding_rules().next().is_some(),
        "a refusal names no rule: {:?}",
        d
    );
    let mut ids = HashSet::new();
    for rule in &d.matched {
        prop_assert!(ids.insert(&rule.id), "{} listed twice: {:?}", rule.id, d);
    }
    Ok(())
}

// ---- arbitrary inputs ------------------------------------------------------

/// One path segment, weighted towards what normalization and globs care about.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_]{1,8}",
        1 => Just(String::new()),
        2 => Just(".".to_string()),
        2 => Just("..".to_string()),
        1 => Just("...".to_string()),
        2 => prop::sample::select(
            &[
                ".env", ".env.local", ".git", ".caws", ".ssh", "id_rsa", "x.pem", ".aws",
                "credentials", "Cargo.toml", ".github", "\\", "*", "**", "[a]", "{a,b}",
            ][..]
        )
        .prop_map(str::to_string),
        1 => Just("\0".to_string()),
        1 => "\\PC{1,6}",
        1 => any::<String>(),
    ]
}

/// Segments joined by `/` (so also `//`, `/./`, `/../` and leading or trailing `/`).
fn segmented_path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..12).prop_map(|s| s.join("/"))
}

/// Very long text: many segments, one segment repeated, one char repeated.
fn long_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(segment(), 200..1000).prop_map(|s| s.join("/")),
        (segment(), 500usize..4000).prop_map(|(s, n)| vec![s; n].join("/")),
        (any::<char>(), 10_000usize..70_000).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// Any text a path argument could be.
fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => segmented_path(),
        2 => any::<String>(),
        1 => "[/.a\\x00]{0,64}",
        1 => long_text(),
    ]
}

/// Text being written: arbitrary, long, or with near-miss secrets in it.
fn added_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        1 => long_text(),
        1 => prop::collection::vec(
            prop_oneof![
                "[ -~\n]{0,40}",
                Just("-----BEGIN RSA PRIVATE KEY-----".to_string()),
                "AKIA[0-9A-Z]{14,18}",
                "ghp_[A-Za-z0-9]{30,40}",
                "(?i)aws_secret_access_key ?= ?[A-Za-z0-9/+=]{38,42}",
                "\\PC{0,8}",
            ],
            0..10,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

/// A command word: plain, a wrapper or rule name, shell syntax, or junk.
fn command_word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9._/=-]{1,10}",
        3 => prop::sample::select(
            &[
                "sudo", "doas", "env", "FOO=1", "bash", "sh", "zsh", "-c", "-lc", "git", "push",
                "-c", "core.pager=sh", "reset", "--hard", "rm", "-rf", "find", ".", "-exec",
                "-delete", "{}", "\\;", "xargs", "-0", "-I", "timeout", "5", "nice", "cargo",
                "test", "--workspace", "busybox", "eval", "trap", "command", "builtin", "awk",
                "system(", "'", "\"", "\\", "$(", "`", "${X}", "$X", "|", ";", "&&", "||", "<",
                ">", "2>&1", "<<EOF", "(", ")", "{", "}", "*", "?", "!", "!!", "#", "~", "=cmd",
                "\n", "\t", "\r", "\0", "\u{202e}", "\u{a0}", "é", "日本",
            ][..]
        )
        .prop_map(str::to_string),
        1 => "\\PC{1,4}",
        1 => any::<String>(),
    ]
}

/// `inner` wrapped in each of `shells` (`sh -c "…"`), escaped as a shell needs.
fn nest_in_shells(inner: String, shells: &[&str]) -> String {
    shells.iter().fold(inner, |cmd, shell| {
        let mut escaped = String::with_capacity(cmd.len() + 8);
        for c in cmd.chars() {
            if matches!(c, '"' | '\\' | '$' | '`') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        format!("{shell} \"{escaped}\"")
    })
}

/// Any text a command argument could be.
fn any_command() -> impl Strategy<Value = String> {
    let words = || prop::collection::vec(command_word(), 0..16).prop_map(|w| w.join(" "));
    let shells = prop::collection::vec(
        prop::sample::select(
            &[
                "sh -c",
                "bash -lc",
                "env sh -c",
                "sudo sh -c",
                "timeout 5 dash -c",
            ][..],
        ),
        0..12,
    );
    let wrappers = prop::collection::vec(
        prop::sample::select(
            &[
                "env",
                "nice",
                "timeout 5",
                "nohup",
                "sudo",
                "xargs",
                "env FOO=1",
            ][..],
        ),
        0..80,
    );
    prop_oneof![
        4 => words(),
        2 => any::<String>(),
        1 => (words(), shells).prop_map(|(inner, shells)| nest_in_shells(inner, &shells)),
        1 => (wrappers, words()).prop_map(|(w, inner)| format!("{} {inner}", w.join(" "))),
        1 => long_text(),
    ]
}

// ---- respelling ------------------------------------------------------------

/// Something inserted before a path component that does not change what the
/// path resolves to: `./`, an extra `/`, or `d/e/../../`.
#[derive(Debug, Clone)]
enum Detour {
    Dot,
    Slash,
    Climb(Vec<String>),
}

impl Detour {
    fn write(&self, out: &mut String) {
        match self {
            Detour::Dot => out.push_str("./"),
            Detour::Slash => out.push('/'),
            Detour::Climb(dirs) => {
                for d in dirs {
                    out.push_str(d);
                    out.push('/');
                }
                out.push_str(&"../".repeat(dirs.len()));
            }
        }
    }
}

fn detour() -> impl Strategy<Value = Detour> {
    // A directory name that is a real name: never empty, `.`, `..`, or with `/`.
    let dir = prop_oneof![
        3 => "[a-zA-Z0-9_-]{1,8}",
        1 => prop::sample::select(&[".env", ".git", "id_rsa", "x.pem", "...", "é", ".caws"][..])
            .prop_map(str::to_string),
    ];
    prop_oneof![
        Just(Detour::Dot),
        Just(Detour::Slash),
        prop::collection::vec(dir, 1..4).prop_map(Detour::Climb),
    ]
}

/// A way to respell a path of up to `max_parts` components: a leading `/`,
/// and detours before each component and after the last.
#[derive(Debug, Clone)]
struct Respelling {
    leading_slash: bool,
    detours: Vec<Vec<Detour>>,
}

fn respelling(max_parts: usize) -> impl Strategy<Value = Respelling> {
    (
        any::<bool>(),
        prop::collection::vec(prop::collection::vec(detour(), 0..3), max_parts + 1),
    )
        .prop_map(|(leading_slash, detours)| Respelling {
            leading_slash,
            detours,
        })
}

impl Respelling {
    fn apply(&self, path: &str) -> String {
        let parts: Vec<&str> = path.split('/').collect();
        let mut out = String::new();
        if self.leading_slash {
            out.push('/');
        }
        for (i, part) in parts.iter().enumerate() {
            for d in self.detours.get(i).into_iter().flatten() {
                d.write(&mut out);
            }
            out.push_str(part);
            if i + 1 < parts.len() {
                out.push('/');
            }
        }
        if let Some(tail) = self.detours.get(parts.len())
            && !tail.is_empty()
        {
            out.push('/');
            for d in tail {
                d.write(&mut out);
            }
        }
        out
    }

    /// Whether it changes the text at all.
    fn is_identity(&self) -> bool {
        !self.leading_slash && self.detours.iter().all(Vec::is_empty)
    }
}

/// A path the built-in policy denies for reads and writes (PATH-002).
fn secret_path() -> impl Strategy<Value = String> {
    let dirs = prop::collection::vec(
        prop_oneof![
            3 => "[a-z][a-z0-9_]{0,6}",
            1 => prop::sample::select(&[".ssh", "app", "home", "a", "b", "x", ".git"][..])
                .prop_map(str::to_string),
        ],
        0..4,
    );
    let name = prop_oneof![
        Just(".env".to_string()),
        "\\.env\\.[a-z]{1,6}",
        "[a-z_]{1,6}\\.(pem|key)",
        "id_(rsa|dsa|ecdsa|ed25519)(\\.pub)?",
        prop::sample::select(
            &[
                ".netrc",
                ".npmrc",
                ".pypirc",
                ".aws/credentials",
                ".docker/config.json",
                ".kube/config"
            ][..]
        )
        .prop_map(str::to_string),
    ];
    prop_oneof![
        1 => prop::sample::select(&[".env", "a/b/.env.local", "x/id_rsa"][..]).prop_map(str::to_string),
        4 => (dirs, name).prop_map(|(mut parts, name)| {
            parts.push(name);
            parts.join("/")
        }),
    ]
}

/// A path the built-in policy denies for writes only (PATH-001, `.git`).
fn git_path() -> impl Strategy<Value = String> {
    let dirs = prop::collection::vec("[a-z][a-z0-9_]{0,6}", 0..3);
    let rest =
        prop::sample::select(&["", "config", "HEAD", "hooks/pre-commit", "refs/heads/main"][..]);
    (dirs, rest).prop_map(|(mut parts, rest)| {
        parts.push(".git".to_string());
        if !rest.is_empty() {
            parts.push(rest.to_string());
        }
        parts.join("/")
    })
}

/// A denied path and whether the denial is for writing.
fn denied_access() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        3 => (secret_path(), any::<bool>()),
        1 => git_path().prop_map(|p| (p, true)),
    ]
}

proptest! {
    // Default case count (256) so the suite stays quick; no regression files,
    // which would be written outside this module's file.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn evaluate_never_panics_on_reads(path in any_path()) {
        for (_, policy) in policies() {
            check_consistent(&policy.evaluate(&read(&path)))?;
        }
    }

    #[test]
    fn evaluate_never_panics_on_writes(
        path in any_path(),
        hard_linked in any::<bool>(),
        added in added_text(),
    ) {
        for (_, policy) in policies() {
            let d = policy.evaluate(&Action::WriteFile { path: &path, hard_linked, added: &added });
            check_consistent(&d)?;
            if hard_linked {
                prop_assert_eq!(d.verdict, Verdict::Deny, "{:?}", d);
            }
        }
    }

    #[test]
    fn evaluate_never_panics_on_commands(command in any_command()) {
        for (_, policy) in policies() {
            check_consistent(&policy.evaluate(&Action::RunCommand { command: &command }))?;
        }
    }

    /// The property this module exists for: `..` and `./` cannot un-deny a path.
    #[test]
    fn a_denied_path_stays_denied_however_it_is_spelled(
        (path, is_write) in denied_access(),
        spelling in respelling(8),
    ) {
        let respelled = spelling.apply(&path);
        for (name, policy) in policies() {
            let plain = policy.evaluate(&access(&path, is_write));
            prop_assert_eq!(plain.verdict, Verdict::Deny, "{}: {:?} -> {:?}", name, path, plain);
            let other = policy.evaluate(&access(&respelled, is_write));
            prop_assert!(
                !other.is_allowed(),
                "{}: {:?} is denied but its respelling {:?} is allowed: {:?}",
                name, path, respelled, other
            );
            prop_assert_eq!(&other, &plain, "{}: {:?} vs {:?}", name, path, respelled);
        }
    }

    #[test]
    fn respelling_any_path_changes_no_decision(
        path in prop_oneof![3 => segmented_path(), 1 => any::<String>()],
        spelling in respelling(12),
    ) {
        prop_assume!(!spelling.is_identity());
        let respelled = spelling.apply(&path);
        for (name, policy) in policies() {
            for is_write in [false, true] {
                let plain = policy.evaluate(&access(&path, is_write));
                let other = policy.evaluate(&access(&respelled, is_write));
                prop_assert_eq!(&other, &plain, "{}: {:?} vs {:?}", name, path, respelled);
            }
        }
    }
}

#[test]
fn the_examples_of_denied_paths_are_denied_in_every_spelling() {
    let cases = [
        (
            ".env",
            false,
            &[
                "./.env",
                "/.env",
                "a/../.env",
                ".//.env",
                "x/y/../.././.env",
            ][..],
        ),
        (
            "a/b/.env.local",
            false,
            &[
                "a/./b//.env.local",
                "/a/b/c/../.env.local",
                "a/x/../b/./.env.local",
            ][..],
        ),
        (
            "x/id_rsa",
            false,
            &["./x/id_rsa", "x//id_rsa", "y/../x/id_rsa", "//x/./id_rsa"][..],
        ),
        (
            ".git/config",
            true,
            &["./.git/config", ".git//config", "a/../.git/./config"][..],
        ),
    ];
    for (path, is_write, spellings) in cases {
        for (name, policy) in policies() {
            let plain = policy.evaluate(&access(path, is_write));
            assert_eq!(plain.verdict, Verdict::Deny, "{name}: {path}");
            for spelling in spellings {
                assert_eq!(
                    policy.evaluate(&access(spelling, is_write)),
                    plain,
                    "{name}: {path} vs {spelling}"
                );
            }
        }
    }
}

#[test]
fn the_respelling_helper_respells() {
    let s = Respelling {
        leading_slash: true,
        detours: vec![
            vec![Detour::Dot],
            vec![Detour::Climb(vec!["d".into(), "e".into()]), Detour::Slash],
            vec![Detour::Dot],
        ],
    };
    assert_eq!(s.apply("a/.env"), "/./a/d/e/../..//.env/./");
    assert!(!s.is_identity());
    let none = Respelling {
        leading_slash: false,
        detours: vec![vec![]; 3],
    };
    assert_eq!(none.apply("a/.env"), "a/.env");
    assert!(none.is_identity());
}
