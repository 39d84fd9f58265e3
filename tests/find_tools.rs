//! `list_dir`, `grep_search`, `file_search`, `delete_file` and `move_file`
//! through the real binary: what they find, what they never show (secrets,
//! ignored files, anything outside the root), that they stay bounded, and
//! that deletes and moves are confined, judged like writes and audited.

mod common;

use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn paths(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v[key].as_str().unwrap().to_string())
        .collect()
}

fn entry<'a>(out: &'a Value, path: &str) -> &'a Value {
    out["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("{path} not listed: {out}"))
}

/// A policy file beside the workspace: the default's PATH-001 and PATH-002,
/// plus `extra` under `paths:`.
fn policy_file(s: &Scratch, extra: &str) -> String {
    let path = s.outside().join("policy.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\npaths:\n{extra}  rules:\n\
             \x20   - {{id: PATH-001, decision: deny, access: [write], globs: [\".git\", \".git/**\", \"**/.git\", \"**/.git/**\"], justification: git internals}}\n\
             \x20   - {{id: PATH-002, decision: deny, globs: [\"**/.env\"], justification: secrets}}\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test]
async fn tools_list_has_the_find_and_file_management_tools() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let tools = c.list_all_tools().await.unwrap();
    for (name, read_only, args) in [
        ("list_dir", true, &["relative_workspace_path", "depth"][..]),
        (
            "grep_search",
            true,
            &[
                "query",
                "include_pattern",
                "exclude_pattern",
                "case_sensitive",
                "fixed_string",
                "context_lines",
                "max_results",
            ][..],
        ),
        ("file_search", true, &["query", "max_results"][..]),
        ("delete_file", false, &["target_file"][..]),
        (
            "move_file",
            false,
            &["source", "destination", "overwrite"][..],
        ),
    ] {
        let tool = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let a = tool.annotations.as_ref().unwrap();
        assert_eq!(a.read_only_hint, Some(read_only), "{name}");
        if !read_only {
            assert_eq!(a.destructive_hint, Some(true), "{name}");
        }
        assert!(tool.output_schema.is_some(), "{name}");
        let props = tool.input_schema.get("properties").unwrap();
        for arg in args {
            assert!(props.get(*arg).is_some(), "{name} lacks {arg}");
        }
    }
}

#[tokio::test]
async fn list_dir_shows_types_sizes_times_and_inside_link_targets() {
    let s = Scratch::new();
    s.write("src/main.rs", "fn main() {}\n");
    s.write("src/util/mod.rs", "");
    s.write("README.md", "hello");
    s.write(".git/HEAD", "ref: refs/heads/main\n");
    symlink("src/main.rs", s.ws().join("main_link")).unwrap();
    symlink(s.outside(), s.ws().join("out_link")).unwrap();
    symlink("missing", s.ws().join("broken_link")).unwrap();
    let c = start(&s.ws()).await;

    let r = call(&c, "list_dir", json!({"relative_workspace_path": "."})).await;
    let out = r.structured_content.clone().unwrap();
    assert_eq!(out["path"], ".");
    assert_eq!(out["truncated"], false);
    assert_eq!(
        paths(&out["entries"], "path"),
        [
            ".git",
            "README.md",
            "broken_link",
            "main_link",
            "out_link",
            "src"
        ]
    );
    let readme = entry(&out, "README.md");
    assert_eq!(
        (readme["type"].as_str(), readme["size"].as_u64()),
        (Some("file"), Some(5))
    );
    assert!(
        readme["modified"].as_str().unwrap().ends_with('Z'),
        "{readme}"
    );
    assert_eq!(entry(&out, "src")["type"], "dir");
    assert!(entry(&out, "src").get("size").is_none());
    let link = entry(&out, "main_link");
    assert_eq!(
        (link["type"].as_str(), link["link"].as_str()),
        (Some("symlink"), Some("inside"))
    );
    assert_eq!(link["link_target"], "src/main.rs");
    let out_link = entry(&out, "out_link");
    assert_eq!(out_link["link"], "outside");
    assert!(out_link.get("link_target").is_none(), "{out_link}");
    assert_eq!(entry(&out, "broken_link")["link"], "broken");
    let text = text(&r);
    assert!(text.contains("src/\n") || text.contains("src/  "), "{text}");
    assert!(text.contains("main_link -> src/main.rs"), "{text}");
    assert!(!text.contains(&s.outside().display().to_string()), "{text}");

    // Deeper: breadth first, paths relative to the workspace; .git is listed, not entered.
    let deep = ok(
        &c,
        "list_dir",
        json!({"relative_workspace_path": "src", "depth": 3}),
    )
    .await;
    assert_eq!(deep["path"], "src");
    assert_eq!(
        paths(&deep["entries"], "path"),
        ["src/main.rs", "src/util", "src/util/mod.rs"]
    );
    let root = ok(
        &c,
        "list_dir",
        json!({"relative_workspace_path": "", "depth": 5}),
    )
    .await;
    assert!(!paths(&root["entries"], "path").contains(&".git/HEAD".to_string()));

    let e = refused(
        &c,
        "list_dir",
        json!({"relative_workspace_path": "README.md"}),
    )
    .await;
    assert!(e.starts_with("Failed [FILE-002]"), "{e}");
    let e = refused(&c, "list_dir", json!({"relative_workspace_path": ".."})).await;
    assert!(e.starts_with("Refused [CONFINE-001]"), "{e}");
    let e = refused(
        &c,
        "list_dir",
        json!({"relative_workspace_path": "out_link"}),
    )
    .await;
    assert!(e.starts_with("Refused [CONFINE-001]"), "{e}");
}

#[tokio::test]
async fn grep_search_finds_regex_and_literal_matches_with_context() {
    let s = Scratch::new();
    s.write(
        "src/lib.rs",
        "// header\nfn alpha() {}\nfn beta() {}\n// middle\n\n\nfn Alpha_two() {}\n",
    );
    s.write("docs/guide.md", "call alpha() first\n");
    s.write("src/special.txt", "price: $5 (a+b)\n");
    std::fs::write(s.ws().join("src/blob.bin"), b"alpha\0\x01\x02alpha").unwrap();
    let c = start(&s.ws()).await;

    let r = call(&c, "grep_search", json!({"query": "fn [a-z]+\\(\\)"})).await;
    let out = r.structured_content.clone().unwrap();
    assert_eq!(out["truncated"], false);
    let found: Vec<(String, u64)> = out["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap().into(),
                m["line_number"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(found, [("src/lib.rs".into(), 2), ("src/lib.rs".into(), 3)]);
    assert_eq!(out["matches"][0]["line"], "fn alpha() {}");
    assert!(
        text(&r).contains("src/lib.rs:2:fn alpha() {}"),
        "{}",
        text(&r)
    );

    // Case-insensitive, limited to *.rs, with context; binary files are skipped.
    let out = ok(
        &c,
        "grep_search",
        json!({"query": "alpha", "case_sensitive": false, "include_pattern": "*.rs", "context_lines": 1}),
    )
    .await;
    let m = out["matches"].as_array().unwrap();
    assert_eq!(m.len(), 2, "{out}");
    assert_eq!(m[0]["context_before"][0]["line"], "// header");
    assert_eq!(m[0]["context_after"][0]["line"], "fn beta() {}");
    assert_eq!(m[1]["line_number"], 7);
    assert_eq!(m[1]["context_before"][0]["line_number"], 6);

    // Literal text with regex metacharacters; exclude_pattern leaves a directory out.
    let out = ok(
        &c,
        "grep_search",
        json!({"query": "$5 (a+b)", "fixed_string": true}),
    )
    .await;
    assert_eq!(paths(&out["matches"], "path"), ["src/special.txt"]);
    let out = ok(
        &c,
        "grep_search",
        json!({"query": "alpha", "exclude_pattern": "src"}),
    )
    .await;
    assert_eq!(paths(&out["matches"], "path"), ["docs/guide.md"]);

    // max_results bounds the reply and says so.
    let out = ok(&c, "grep_search", json!({"query": "a", "max_results": 2})).await;
    assert_eq!(out["matches"].as_array().unwrap().len(), 2);
    assert_eq!(out["truncated"], true);

    let e = refused(&c, "grep_search", json!({"query": "fn (alpha"})).await;
    assert!(
        e.starts_with("Failed [FIND-001]") && e.contains("fixed_string"),
        "{e}"
    );
    let e = refused(
        &c,
        "grep_search",
        json!({"query": "x", "include_pattern": "src/[a"}),
    )
    .await;
    assert!(e.starts_with("Failed [FIND-002]"), "{e}");
}

#[tokio::test]
async fn file_search_ranks_the_best_matches_first() {
    let s = Scratch::new();
    for p in [
        "src/server/mod.rs",
        "src/server/backpressure.rs",
        "src/store/mod.rs",
        "tests/server_tests.rs",
        "README.md",
    ] {
        s.write(p, "x\n");
    }
    let c = start(&s.ws()).await;
    let r = call(&c, "file_search", json!({"query": "servermod"})).await;
    let out = r.structured_content.clone().unwrap();
    let found = paths(&out["files"], "path");
    assert_eq!(found[0], "src/server/mod.rs", "{out}");
    assert!(!found.contains(&"README.md".to_string()));
    assert!(text(&r).starts_with("src/server/mod.rs\n"), "{}", text(&r));
    let out = ok(&c, "file_search", json!({"query": "rs", "max_results": 2})).await;
    assert_eq!(out["files"].as_array().unwrap().len(), 2);
    assert_eq!(out["total_matches"], 4);
    assert_eq!(out["truncated"], true);
    let e = refused(&c, "file_search", json!({"query": "  "})).await;
    assert!(e.starts_with("Failed [FIND-001]"), "{e}");
}

#[tokio::test]
async fn a_secret_the_policy_forbids_never_shows_up_in_any_result() {
    let s = Scratch::new();
    s.write(".env", "API_TOKEN=needle-1234\n");
    s.write("app/.env.local", "needle\n");
    s.write("certs/server.pem", "needle\n");
    s.write(
        "src/config.rs",
        "// reads the token, not the needle itself\n",
    );
    symlink(".env", s.ws().join("innocent.txt")).unwrap();
    std::fs::create_dir_all(s.ws().join(".arbiter")).unwrap();
    std::fs::write(s.ws().join(".arbiter/notes"), "needle\n").unwrap();
    let c = start(&s.ws()).await;

    let out = ok(&c, "grep_search", json!({"query": "needle"})).await;
    assert_eq!(paths(&out["matches"], "path"), ["src/config.rs"], "{out}");
    let out = ok(
        &c,
        "grep_search",
        json!({"query": "needle", "include_pattern": ".env*"}),
    )
    .await;
    assert!(out["matches"].as_array().unwrap().is_empty(), "{out}");

    for query in ["env", ".env", "server.pem", "notes"] {
        let out = ok(&c, "file_search", json!({"query": query})).await;
        let found = paths(&out["files"], "path");
        assert!(
            found
                .iter()
                .all(|p| !p.contains(".env") && !p.ends_with(".pem") && !p.starts_with(".arbiter")),
            "{query}: {found:?}"
        );
    }

    let out = ok(
        &c,
        "list_dir",
        json!({"relative_workspace_path": ".", "depth": 3}),
    )
    .await;
    let listed = paths(&out["entries"], "path");
    for hidden in [
        ".env",
        "app/.env.local",
        "certs/server.pem",
        "innocent.txt",
        ".arbiter",
    ] {
        assert!(
            !listed.contains(&hidden.to_string()),
            "{hidden} listed: {listed:?}"
        );
    }
    assert!(listed.contains(&"src/config.rs".to_string()));
    let e = refused(
        &c,
        "list_dir",
        json!({"relative_workspace_path": ".arbiter"}),
    )
    .await;
    assert!(e.starts_with("Refused [CONFINE-002]"), "{e}");
}

#[tokio::test]
async fn gitignored_files_are_skipped() {
    let s = Scratch::new();
    s.write(".gitignore", "build/\n*.log\n");
    s.write("sub/.ignore", "generated.rs\n");
    s.write("build/out.txt", "marker\n");
    s.write("debug.log", "marker\n");
    s.write("sub/generated.rs", "marker\n");
    s.write("target/x.txt", "marker\n");
    s.write("node_modules/pkg/index.js", "marker\n");
    s.write("sub/kept.rs", "marker\n");
    let c = start(&s.ws()).await;
    let out = ok(&c, "grep_search", json!({"query": "marker"})).await;
    assert_eq!(paths(&out["matches"], "path"), ["sub/kept.rs"], "{out}");
    let out = ok(&c, "file_search", json!({"query": "txt"})).await;
    assert!(out["files"].as_array().unwrap().is_empty(), "{out}");
    let out = ok(&c, "file_search", json!({"query": "rs"})).await;
    assert_eq!(paths(&out["files"], "path"), ["sub/kept.rs"], "{out}");
}

#[tokio::test]
async fn a_symlink_loop_does_not_hang_the_walk() {
    let s = Scratch::new();
    s.write("a/b/file.txt", "loopy\n");
    symlink("..", s.ws().join("a/b/up")).unwrap();
    symlink(".", s.ws().join("self")).unwrap();
    symlink("l2", s.ws().join("l1")).unwrap();
    symlink("l1", s.ws().join("l2")).unwrap();
    let c = start(&s.ws()).await;
    let started = Instant::now();
    let out = ok(&c, "grep_search", json!({"query": "loopy"})).await;
    assert_eq!(paths(&out["matches"], "path"), ["a/b/file.txt"]);
    let out = ok(&c, "file_search", json!({"query": "file"})).await;
    assert_eq!(paths(&out["files"], "path"), ["a/b/file.txt"]);
    let out = ok(
        &c,
        "list_dir",
        json!({"relative_workspace_path": ".", "depth": 10}),
    )
    .await;
    assert_eq!(entry(&out, "l1")["link"], "loop");
    assert_eq!(entry(&out, "self")["link_target"], ".");
    assert_eq!(entry(&out, "a/b/up")["link_target"], "a");
    assert_eq!(out["entries"].as_array().unwrap().len(), 7, "{out}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_symlink_pointing_outside_is_never_followed() {
    let s = Scratch::new();
    let outside = s.outside().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "outside-needle\n").unwrap();
    symlink(&outside, s.ws().join("door")).unwrap();
    symlink(outside.join("secret.txt"), s.ws().join("file_door")).unwrap();
    s.write("inside.txt", "inside\n");
    let c = start(&s.ws()).await;
    let out = ok(&c, "grep_search", json!({"query": "needle"})).await;
    assert!(out["matches"].as_array().unwrap().is_empty(), "{out}");
    let out = ok(&c, "file_search", json!({"query": "secret"})).await;
    assert!(out["files"].as_array().unwrap().is_empty(), "{out}");
    let out = ok(
        &c,
        "list_dir",
        json!({"relative_workspace_path": ".", "depth": 3}),
    )
    .await;
    assert_eq!(
        paths(&out["entries"], "path"),
        ["door", "file_door", "inside.txt"]
    );
    assert_eq!(entry(&out, "door")["link"], "outside");
    // Deleting or moving the link touches the link, never what it points to.
    ok(
        &c,
        "move_file",
        json!({"source": "file_door", "destination": "moved/door"}),
    )
    .await;
    ok(&c, "delete_file", json!({"target_file": "moved/door"})).await;
    let e = refused(&c, "delete_file", json!({"target_file": "door/secret.txt"})).await;
    assert!(e.starts_with("Refused [CONFINE-001]"), "{e}");
    let e = refused(
        &c,
        "move_file",
        json!({"source": "inside.txt", "destination": "door/inside.txt"}),
    )
    .await;
    assert!(e.starts_with("Refused [CONFINE-001]"), "{e}");
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "outside-needle\n"
    );
    assert!(!outside.join("inside.txt").exists());
}

#[tokio::test]
async fn results_stay_bounded_on_a_tree_of_100k_files() {
    // In memory where the machine has it: creating and removing 100,000
    // files on a disk that other jobs are writing to can take a minute.
    let dir = tempfile::Builder::new()
        .prefix("arbiter-100k-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let ws = dir.path().join("ws");
    let started = Instant::now();
    for d in 0..100 {
        let sub = ws.join(format!("d{d:03}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..1000 {
            std::fs::write(sub.join(format!("f{f:04}.txt")), "hit\n").unwrap();
        }
    }
    eprintln!("generated 100,000 files in {:?}", started.elapsed());
    let c = start(&ws).await;

    let t = Instant::now();
    let out = ok(
        &c,
        "list_dir",
        json!({"relative_workspace_path": ".", "depth": 2}),
    )
    .await;
    assert_eq!(out["entries"].as_array().unwrap().len(), 1000);
    assert_eq!(out["truncated"], true);
    eprintln!("list_dir: {:?}", t.elapsed());

    let t = Instant::now();
    let out = ok(&c, "grep_search", json!({"query": "hit"})).await;
    assert_eq!(out["matches"].as_array().unwrap().len(), 50);
    assert_eq!(out["truncated"], true);
    let out = ok(
        &c,
        "grep_search",
        json!({"query": "hit", "max_results": 100000}),
    )
    .await;
    assert_eq!(out["matches"].as_array().unwrap().len(), 500);
    eprintln!("grep_search x2: {:?}", t.elapsed());

    let t = Instant::now();
    let out = ok(&c, "file_search", json!({"query": "f0999"})).await;
    assert_eq!(out["files"].as_array().unwrap().len(), 20);
    assert_eq!(out["truncated"], true);
    assert!(out["total_matches"].as_u64().unwrap() >= 100, "{out}");
    let out = ok(&c, "file_search", json!({"query": "d042f0999"})).await;
    assert_eq!(out["files"][0]["path"], "d042/f0999.txt", "{out}");
    eprintln!("file_search x2: {:?}", t.elapsed());
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn move_file_renames_and_creates_parents() {
    let s = Scratch::new();
    s.write("a.txt", "alpha\n");
    let c = start(&s.ws()).await;
    let r = call(
        &c,
        "move_file",
        json!({"source": "a.txt", "destination": "x/y/b.txt"}),
    )
    .await;
    let out = r.structured_content.clone().unwrap();
    assert_eq!(
        (
            out["source"].as_str(),
            out["destination"].as_str(),
            out["dirs_created"].as_u64()
        ),
        (Some("a.txt"), Some("x/y/b.txt"), Some(2))
    );
    assert_eq!(out["overwritten"], false);
    assert_eq!(text(&r), "Moved a.txt to x/y/b.txt.");
    assert!(!s.ws().join("a.txt").exists());
    assert_eq!(s.read("x/y/b.txt"), "alpha\n");
    let e = refused(
        &c,
        "move_file",
        json!({"source": "a.txt", "destination": "c.txt"}),
    )
    .await;
    assert!(e.starts_with("Failed [FILE-001]"), "{e}");
    let e = refused(
        &c,
        "move_file",
        json!({"source": "x", "destination": "x/y/z"}),
    )
    .await;
    assert!(e.contains("MOVE-002") || e.contains("DELETE-001"), "{e}");
}

#[tokio::test]
async fn move_without_overwrite_onto_an_existing_file_fails_and_changes_nothing() {
    let s = Scratch::new();
    s.write("from.txt", "new\n");
    s.write("to.txt", "old\n");
    s.write("dir/keep.txt", "k\n");
    let c = start(&s.ws()).await;
    let e = refused(
        &c,
        "move_file",
        json!({"source": "from.txt", "destination": "to.txt"}),
    )
    .await;
    assert!(
        e.starts_with("Failed [MOVE-001]") && e.contains("overwrite"),
        "{e}"
    );
    assert_eq!(
        (s.read("from.txt"), s.read("to.txt")),
        ("new\n".into(), "old\n".into())
    );
    let e = refused(
        &c,
        "move_file",
        json!({"source": "from.txt", "destination": "dir", "overwrite": true}),
    )
    .await;
    assert!(
        e.starts_with("Failed [FILE-002]") && e.contains("dir/from.txt"),
        "{e}"
    );
    assert_eq!(s.read("dir/keep.txt"), "k\n");
    let out = ok(
        &c,
        "move_file",
        json!({"source": "from.txt", "destination": "to.txt", "overwrite": true}),
    )
    .await;
    assert_eq!(out["overwritten"], true);
    assert_eq!(s.read("to.txt"), "new\n");
    assert!(!s.ws().join("from.txt").exists());
}

#[tokio::test]
async fn delete_file_removes_a_file_or_a_link_but_never_a_link_target() {
    let s = Scratch::new();
    s.write("gone.txt", "1\n2\n");
    s.write("kept.txt", "kept\n");
    symlink("kept.txt", s.ws().join("link")).unwrap();
    let c = start(&s.ws()).await;
    let r = call(&c, "delete_file", json!({"target_file": "gone.txt"})).await;
    let out = r.structured_content.clone().unwrap();
    assert_eq!(
        (out["path"].as_str(), out["type"].as_str()),
        (Some("gone.txt"), Some("file"))
    );
    assert_eq!(out["entries_removed"], 1);
    assert!(!s.ws().join("gone.txt").exists());
    let out = ok(&c, "delete_file", json!({"target_file": "link"})).await;
    assert_eq!(out["type"], "symlink");
    assert_eq!(s.read("kept.txt"), "kept\n");
    let e = refused(&c, "delete_file", json!({"target_file": "gone.txt"})).await;
    assert!(e.starts_with("Failed [FILE-001]"), "{e}");
    let e = refused(&c, "delete_file", json!({"target_file": "."})).await;
    assert!(e.starts_with("Refused [CONFINE-003]"), "{e}");
    let e = refused(&c, "delete_file", json!({"target_file": "../x"})).await;
    assert!(e.starts_with("Refused [CONFINE-001]"), "{e}");
}

#[tokio::test]
async fn deleting_a_directory_is_refused_by_default() {
    let s = Scratch::new();
    s.write("build/a.o", "x");
    s.write("build/sub/b.o", "y");
    let c = start(&s.ws()).await;
    let e = refused(&c, "delete_file", json!({"target_file": "build"})).await;
    assert!(e.starts_with("Refused [DELETE-001]"), "{e}");
    assert!(e.contains("override_request"), "{e}");
    let e = refused(
        &c,
        "move_file",
        json!({"source": "build", "destination": "old-build"}),
    )
    .await;
    assert!(e.starts_with("Refused [DELETE-001]"), "{e}");
    assert!(s.ws().join("build/sub/b.o").exists());
}

#[tokio::test]
async fn a_policy_that_allows_directory_deletes_still_judges_every_entry() {
    let s = Scratch::new();
    s.write("build/a.o", "x");
    s.write("build/sub/b.o", "y");
    s.write("vendor/lib/.git/HEAD", "ref\n");
    s.write("vendor/lib/src.c", "int x;\n");
    let policy = policy_file(&s, "  allow_directory_delete: true\n");
    let c = start_with(&s.ws(), &["--policy", &policy]).await;
    let out = ok(&c, "delete_file", json!({"target_file": "build"})).await;
    assert_eq!(
        (out["type"].as_str(), out["entries_removed"].as_u64()),
        (Some("dir"), Some(4))
    );
    assert!(!s.ws().join("build").exists());
    let e = refused(&c, "delete_file", json!({"target_file": "vendor"})).await;
    assert!(e.starts_with("Refused [PATH-001]"), "{e}");
    assert!(s.ws().join("vendor/lib/src.c").exists());
    let out = ok(
        &c,
        "move_file",
        json!({"source": "vendor/lib/src.c", "destination": "src/lib.c"}),
    )
    .await;
    assert_eq!(out["destination"], "src/lib.c");
    let e = refused(
        &c,
        "move_file",
        json!({"source": "vendor", "destination": "third_party"}),
    )
    .await;
    assert!(e.starts_with("Refused [PATH-001]"), "{e}");
    s.write("assets/img/logo.svg", "<svg/>");
    let out = ok(
        &c,
        "move_file",
        json!({"source": "assets", "destination": "web/static"}),
    )
    .await;
    assert_eq!(
        (out["type"].as_str(), out["dirs_created"].as_u64()),
        (Some("dir"), Some(1))
    );
    assert_eq!(s.read("web/static/img/logo.svg"), "<svg/>");
    assert!(!s.ws().join("assets").exists());
}

#[tokio::test]
async fn move_and_delete_of_git_paths_are_refused_with_path_001() {
    let s = Scratch::new();
    s.write(".git/config", "[core]\n");
    s.write(".git/hooks/pre-commit.sample", "#!/bin/sh\n");
    s.write("hook.sh", "#!/bin/sh\necho pwned\n");
    let c = start(&s.ws()).await;
    for (tool, args) in [
        ("delete_file", json!({"target_file": ".git/config"})),
        (
            "delete_file",
            json!({"target_file": "./.git/../.git/config"}),
        ),
        (
            "move_file",
            json!({"source": ".git/config", "destination": "config"}),
        ),
        (
            "move_file",
            json!({"source": "hook.sh", "destination": ".git/hooks/pre-commit"}),
        ),
    ] {
        let e = refused(&c, tool, args.clone()).await;
        assert!(
            e.starts_with("Refused [PATH-001]") && e.contains("Next:"),
            "{tool} {args}: {e}"
        );
    }
    assert_eq!(s.read(".git/config"), "[core]\n");
    assert!(!s.ws().join(".git/hooks/pre-commit").exists());
    assert!(s.ws().join("hook.sh").exists());
    let e = refused(&c, "delete_file", json!({"target_file": ".arbiter"})).await;
    assert!(e.starts_with("Refused [CONFINE-002]"), "{e}");
    let e = refused(
        &c,
        "move_file",
        json!({"source": "hook.sh", "destination": ".arbiter/x"}),
    )
    .await;
    assert!(e.starts_with("Refused [CONFINE-002]"), "{e}");
}

#[tokio::test]
async fn deletes_and_moves_count_against_the_change_budget() {
    let s = Scratch::new();
    s.write(
        ".caws/working-spec.yaml",
        "id: FEAT-9\ntitle: Tidy the module layout\nrisk_tier: 3\nmode: refactor\n\
         change_budget: {max_files: 2, max_loc: 10}\n\
         blast_radius: {modules: [core]}\noperational_rollback_slo: 5m\n\
         scope: {in: [src/]}\ninvariants: [behaviour unchanged]\n\
         acceptance:\n  - {id: A1, given: the tests, when: they run, then: they pass}\n\
         non_functional: {perf: {api_p95_ms: 200}}\ncontracts: []\n",
    );
    s.write("src/old.rs", "1\n2\n3\n4\n");
    s.write("src/a.rs", "a\n");
    s.write("src/b.rs", "b\n");
    s.write("docs/x.md", "x\n");
    let c = start(&s.ws()).await;
    let out = ok(&c, "delete_file", json!({"target_file": "src/old.rs"})).await;
    assert_eq!(out["lines_removed"], 4);
    let e = refused(&c, "delete_file", json!({"target_file": "docs/x.md"})).await;
    assert!(e.starts_with("Refused [SCOPE-001]"), "{e}");
    // A move touches two files; with one file left in the budget it needs an override.
    let e = refused(
        &c,
        "move_file",
        json!({"source": "src/a.rs", "destination": "src/c.rs"}),
    )
    .await;
    assert!(
        e.starts_with("Refused [BUDGET-001]") && e.contains("3 of 2 files"),
        "{e}"
    );
    assert!(s.ws().join("src/a.rs").exists());
    let records = audit_records(&s.ws());
    let last = records.last().unwrap();
    assert_eq!(
        (last["tool"].as_str(), last["rule_ids"].as_str()),
        (Some("move_file"), Some("BUDGET-001"))
    );
}

#[tokio::test]
async fn every_call_leaves_an_audit_record() {
    let s = Scratch::new();
    s.write("a.txt", "needle\n");
    s.write(".git/HEAD", "ref\n");
    s.write("d/x", "x\n");
    let c = start(&s.ws()).await;
    ok(&c, "list_dir", json!({"relative_workspace_path": "."})).await;
    ok(&c, "grep_search", json!({"query": "needle"})).await;
    ok(&c, "file_search", json!({"query": "a"})).await;
    ok(
        &c,
        "move_file",
        json!({"source": "a.txt", "destination": "b.txt"}),
    )
    .await;
    ok(&c, "delete_file", json!({"target_file": "b.txt"})).await;
    refused(&c, "delete_file", json!({"target_file": ".git/HEAD"})).await;
    refused(&c, "delete_file", json!({"target_file": "d"})).await;
    refused(&c, "grep_search", json!({"query": "("})).await;
    let records = audit_records(&s.ws());
    assert_eq!(
        audit_summary(&s.ws()),
        vec![
            ["list_dir", "ok", "allow", ""],
            ["grep_search", "ok", "allow", ""],
            ["file_search", "ok", "allow", ""],
            ["move_file", "ok", "allow", ""],
            ["delete_file", "ok", "allow", ""],
            ["delete_file", "refused", "deny", "PATH-001"],
            ["delete_file", "refused", "deny", "DELETE-001"],
            ["grep_search", "failed", "none", "FIND-001"],
        ]
    );
    assert!(
        records[3]["args_redacted"]
            .as_str()
            .unwrap()
            .contains("b.txt")
    );
    let (code, out, _) = run_cli(&s.ws(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}
