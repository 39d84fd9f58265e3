//! `Policy::evaluate` on a large policy: 200 rules (120 path rules with 1-3
//! globs each, 60 command rules, 20 content rules), written as YAML and
//! compiled with `parse_policy`, as an operator's file would be.
//!
//! `cargo bench --bench policy_eval -- --warm-up-time 1 --measurement-time 3`
//! The target is a median under 5 µs per evaluation.

use std::fmt::Write as _;
use std::hint::black_box;

use arbiter::policy::file::parse_policy;
use arbiter::policy::{Action, Policy, Verdict};
use criterion::{Criterion, criterion_group, criterion_main};

const PATH_RULES: usize = 120;
const COMMAND_RULES: usize = 60;
const CONTENT_RULES: usize = 20;

/// Extensions of key and certificate files, one rule each.
const KEY_EXTENSIONS: &[&str] = &[
    "pem", "key", "p12", "pfx", "jks", "keystore", "crt", "der", "asc", "gpg", "kdbx", "ovpn",
];
/// Directory names that hold secrets or generated code, anywhere.
const SENSITIVE_DIRS: &[&str] = &[
    "secrets",
    "private",
    "credentials",
    "vault",
    ".terraform",
    "node_modules",
    "vendor",
    "dist",
    "target",
    ".venv",
];
/// Programs with subcommands to guard.
const TOOLS: &[(&str, &[&str])] = &[
    ("docker", &["run", "push", "rm", "system"]),
    ("kubectl", &["delete", "apply", "exec", "port-forward"]),
    ("terraform", &["apply", "destroy", "import"]),
    ("helm", &["install", "uninstall", "upgrade"]),
    ("npm", &["publish", "unpublish", "login"]),
    ("cargo", &["publish", "yank", "login", "owner"]),
    ("aws", &["s3", "iam", "ec2", "lambda"]),
    ("gcloud", &["compute", "iam", "projects"]),
    ("psql", &["-c", "-f"]),
    ("gh", &["release", "repo", "secret"]),
];

fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The 200-rule policy, deterministic.
fn large_policy_yaml() -> String {
    let mut y = String::from("version: 1\nname: bench-200\npaths:\n  default: allow\n  rules:\n");
    // 119 generated rules and one for svc17 below.
    for i in 0..PATH_RULES - 1 {
        let (decision, access, globs): (&str, &str, Vec<String>) = match i % 6 {
            0 => (
                "deny",
                "[read, write]",
                vec![
                    format!("**/*.{}", KEY_EXTENSIONS[(i / 6) % KEY_EXTENSIONS.len()]),
                    format!(
                        "**/*.{}.bak",
                        KEY_EXTENSIONS[(i / 6) % KEY_EXTENSIONS.len()]
                    ),
                ],
            ),
            1 => (
                "deny",
                "[read, write]",
                vec![format!(
                    "**/{}/**",
                    SENSITIVE_DIRS[(i / 6) % SENSITIVE_DIRS.len()]
                )],
            ),
            2 => (
                "needs_override",
                "[write]",
                vec![
                    format!("services/svc{i}/**"),
                    format!("services/svc{i}/config/*.yaml"),
                    format!("deploy/svc{i}/*.tf"),
                ],
            ),
            3 => (
                "deny",
                "[read, write]",
                vec![format!("config/prod/app{i}.{{yaml,json,toml}}")],
            ),
            4 => (
                "needs_override",
                "[write]",
                vec![
                    format!("docs/internal/team{i}/**"),
                    format!("**/CODEOWNERS.{i}"),
                ],
            ),
            _ => (
                "deny",
                "[write]",
                vec![
                    format!("**/generated_{i}/**"),
                    format!("**/*_{i}.lock"),
                    format!("migrations/{i:04}_*.sql"),
                ],
            ),
        };
        writeln!(y, "    - id: PATH-{i:03}").unwrap();
        writeln!(y, "      decision: {decision}").unwrap();
        writeln!(y, "      access: {access}").unwrap();
        let globs: Vec<String> = globs.iter().map(|g| yaml_quote(g)).collect();
        writeln!(y, "      globs: [{}]", globs.join(", ")).unwrap();
        writeln!(y, "      justification: path rule {i}").unwrap();
    }
    // svc17 is guarded for reads too, so the denied read below matches several
    // rules of different kinds.
    y.push_str(
        "    - id: PATH-SVC17\n      decision: deny\n      globs: ['services/svc17/**']\n      justification: svc17 is off limits\n",
    );

    y.push_str("commands:\n  default: allow\n  rules:\n");
    for i in 0..COMMAND_RULES {
        let (tool, subs) = TOOLS[i % TOOLS.len()];
        let sub = subs[(i / TOOLS.len()) % subs.len()];
        let decision = if i % 3 == 0 { "deny" } else { "needs_override" };
        writeln!(y, "    - id: CMD-{i:03}").unwrap();
        writeln!(y, "      decision: {decision}").unwrap();
        if i % 4 == 0 {
            writeln!(
                y,
                "      prefixes: [[{tool}, {sub}], [/usr/local/bin/{tool}{i}, {sub}]]"
            )
            .unwrap();
        } else {
            writeln!(y, "      prefix: [{tool}, {sub}]").unwrap();
        }
        if i % 5 == 0 {
            y.push_str("      args_any: ['--force', '-f', '--all']\n");
        }
        writeln!(y, "      justification: command rule {i}").unwrap();
    }

    y.push_str("content:\n  rules:\n");
    for i in 0..CONTENT_RULES {
        let pattern = match i % 4 {
            0 => format!("\\bSECRET_{i}_[A-Z0-9]{{16}}\\b"),
            1 => format!("(?i)api[_-]?key_{i}\\s*[=:]\\s*['\"]?[A-Za-z0-9]{{32}}"),
            2 => format!("-----BEGIN {i} PRIVATE KEY-----"),
            _ => format!("\\btok{i}_[A-Za-z0-9]{{24,64}}\\b"),
        };
        writeln!(y, "    - id: CONTENT-{i:03}").unwrap();
        y.push_str("      decision: deny\n");
        writeln!(y, "      patterns: [{}]", yaml_quote(&pattern)).unwrap();
        writeln!(y, "      justification: content rule {i}").unwrap();
    }
    y
}

/// 4 KiB of ordinary source text, which no content rule matches.
fn four_kib_of_code() -> String {
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 4096 {
        writeln!(
            text,
            "fn handler_{i}(req: &Request) -> Result<Response, Error> {{ let key = req.header(\"x-api-key\")?; Ok(lookup(key, {i})?) }}"
        )
        .unwrap();
        i += 1;
    }
    text.truncate(4096);
    text
}

fn policy_eval(c: &mut Criterion) {
    let yaml = large_policy_yaml();
    let policy: Policy = parse_policy(&yaml, "bench-200.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        policy.rule_count(),
        PATH_RULES + COMMAND_RULES + CONTENT_RULES
    );
    let added = four_kib_of_code();
    assert_eq!(added.len(), 4096);

    let read = Action::ReadFile {
        path: "src/main.rs",
    };
    let denied = Action::ReadFile {
        path: "services/svc17/secrets/prod.pem",
    };
    let write = Action::WriteFile {
        path: "src/handlers.rs",
        hard_linked: false,
        added: &added,
    };
    let command = Action::RunCommand {
        command: "cargo test --workspace",
    };

    // The cases are what they claim to be.
    let d = policy.evaluate(&read);
    assert!(d.is_allowed() && d.matched.is_empty(), "{d:?}");
    let d = policy.evaluate(&denied);
    assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
    assert!(d.matched.len() >= 3, "{}", d.rule_ids());
    eprintln!("denied read matches: {}", d.rule_ids());
    let d = policy.evaluate(&write);
    assert!(d.is_allowed() && d.matched.is_empty(), "{d:?}");
    let d = policy.evaluate(&command);
    assert!(d.is_allowed(), "{d:?}");

    let mut group = c.benchmark_group("evaluate_200_rules");
    group.bench_function("read_allowed_src_main_rs", |b| {
        b.iter(|| policy.evaluate(black_box(&read)))
    });
    group.bench_function("read_denied_several_rules", |b| {
        b.iter(|| policy.evaluate(black_box(&denied)))
    });
    group.bench_function("write_4kib_added", |b| {
        b.iter(|| policy.evaluate(black_box(&write)))
    });
    group.bench_function("command_cargo_test_workspace", |b| {
        b.iter(|| policy.evaluate(black_box(&command)))
    });
    group.finish();

    c.bench_function("compile_200_rule_policy", |b| {
        b.iter(|| parse_policy(black_box(&yaml), "bench-200.yaml").map(|p| p.rule_count()))
    });
}

criterion_group!(benches, policy_eval);
criterion_main!(benches);
