//! Workspace confinement, driven through the real binary with the rmcp client.
//! Each test is one way a peer server was broken (see FIELD-NOTES.md): the
//! call must be refused with `isError: true`, name its rule, and touch nothing.

mod common;

use std::os::unix::fs::symlink;

use common::*;
use serde_json::json;

#[tokio::test]
async fn dotdot_escape_is_refused() {
    let s = Scratch::new();
    std::fs::write(s.outside().join("secret.txt"), "top secret").unwrap();
    let c = start(&s.ws()).await;
    let e = refused(&c, "file_read", json!({"target_file": "../secret.txt"})).await;
    assert!(
        e.contains("CONFINE-001") && e.contains("outside the workspace"),
        "{e}"
    );
    refused(
        &c,
        "file_read",
        json!({"target_file": "a/../../secret.txt"}),
    )
    .await;
    let e = refused(
        &c,
        "file_write",
        json!({"file_path": "../secret.txt", "contents": "x"}),
    )
    .await;
    assert!(e.contains("CONFINE-001"), "{e}");
    assert_eq!(
        std::fs::read_to_string(s.outside().join("secret.txt")).unwrap(),
        "top secret"
    );
}

#[tokio::test]
async fn absolute_path_outside_is_refused_and_inside_is_fine() {
    let s = Scratch::new();
    s.write("in.txt", "inside\n");
    let c = start(&s.ws()).await;
    let e = refused(&c, "file_read", json!({"target_file": "/etc/passwd"})).await;
    assert!(e.contains("CONFINE-001"), "{e}");
    let inside = s.ws().canonicalize().unwrap().join("in.txt");
    let out = ok(&c, "file_read", json!({"target_file": inside})).await;
    assert_eq!(out["path"], "in.txt");
}

#[tokio::test]
async fn sibling_directory_sharing_the_root_prefix_is_refused() {
    // CVE-2025-53110: a `startsWith` check let `/ws` reach `/ws_evil`.
    let s = Scratch::new();
    let evil = s.outside().join("ws_evil");
    std::fs::create_dir(&evil).unwrap();
    std::fs::write(evil.join("loot.txt"), "loot").unwrap();
    let c = start(&s.ws()).await;
    let evil_abs = evil.canonicalize().unwrap().join("loot.txt");
    let e = refused(&c, "file_read", json!({"target_file": evil_abs})).await;
    assert!(e.contains("CONFINE-001"), "{e}");
    let e = refused(
        &c,
        "file_write",
        json!({"file_path": evil.join("new.txt"), "contents": "x"}),
    )
    .await;
    assert!(e.contains("CONFINE-001"), "{e}");
    assert!(!evil.join("new.txt").exists());
}

#[tokio::test]
async fn symlink_pointing_outside_is_refused_for_read() {
    // CVE-2025-53109: a swallowed realpath error let a symlink escape.
    let s = Scratch::new();
    std::fs::write(s.outside().join("secret.txt"), "top secret").unwrap();
    symlink(s.outside().join("secret.txt"), s.ws().join("abs_link")).unwrap();
    symlink("../secret.txt", s.ws().join("rel_link")).unwrap();
    symlink(s.outside(), s.ws().join("dir_link")).unwrap();
    let c = start(&s.ws()).await;
    for p in ["abs_link", "rel_link", "dir_link/secret.txt"] {
        let e = refused(&c, "file_read", json!({"target_file": p})).await;
        assert!(e.contains("CONFINE-001"), "{p}: {e}");
        assert!(!e.contains("top secret"));
    }
}

#[tokio::test]
async fn writing_through_a_symlink_that_leaves_the_root_is_refused() {
    let s = Scratch::new();
    let target = s.outside().join("victim.txt");
    std::fs::write(&target, "original").unwrap();
    symlink(&target, s.ws().join("link.txt")).unwrap();
    symlink(s.outside(), s.ws().join("dir_link")).unwrap();
    let c = start(&s.ws()).await;
    let e = refused(
        &c,
        "file_write",
        json!({"file_path": "link.txt", "contents": "pwned"}),
    )
    .await;
    assert!(e.contains("CONFINE-001"), "{e}");
    refused(
        &c,
        "file_search_replace",
        json!({"file_path": "link.txt", "old_string": "original", "new_string": "pwned"}),
    )
    .await;
    refused(
        &c,
        "file_write",
        json!({"file_path": "dir_link/new.txt", "contents": "pwned"}),
    )
    .await;
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "original");
    assert!(!s.outside().join("new.txt").exists());
}

#[tokio::test]
async fn symlink_that_stays_inside_is_followed() {
    let s = Scratch::new();
    s.write("real/data.txt", "alpha\n");
    symlink("real/data.txt", s.ws().join("alias.txt")).unwrap();
    let c = start(&s.ws()).await;
    let out = ok(&c, "file_read", json!({"target_file": "alias.txt"})).await;
    assert_eq!(out["path"], "real/data.txt");
    ok(
        &c,
        "file_search_replace",
        json!({"file_path": "alias.txt", "old_string": "alpha", "new_string": "beta"}),
    )
    .await;
    assert_eq!(s.read("real/data.txt"), "beta\n");
    assert!(
        s.ws()
            .join("alias.txt")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
async fn symlink_loop_is_a_clear_error() {
    let s = Scratch::new();
    symlink("b", s.ws().join("a")).unwrap();
    symlink("a", s.ws().join("b")).unwrap();
    let c = start(&s.ws()).await;
    let e = refused(&c, "file_read", json!({"target_file": "a"})).await;
    assert!(e.contains("CONFINE-004") && e.contains("loop"), "{e}");
    let e = refused(&c, "file_write", json!({"file_path": "a", "contents": "x"})).await;
    assert!(e.contains("CONFINE-004"), "{e}");
}

#[tokio::test]
async fn server_state_directory_is_not_reachable() {
    let s = Scratch::new();
    symlink(".arbiter", s.ws().join("state")).unwrap();
    let c = start(&s.ws()).await;
    // The first call creates the audit database.
    ok(
        &c,
        "file_write",
        json!({"file_path": "x.txt", "contents": "x"}),
    )
    .await;
    for p in [
        ".arbiter/arbiter.db",
        "./.arbiter/arbiter.db",
        "state/arbiter.db",
        "sub/../.arbiter/arbiter.db",
    ] {
        let e = refused(&c, "file_read", json!({"target_file": p})).await;
        assert!(
            e.contains("CONFINE-002") || e.contains("FILE-001"),
            "{p}: {e}"
        );
    }
    for p in [
        ".arbiter/arbiter.db",
        "state/evil.txt",
        ".arbiter/policy.yaml",
    ] {
        let e = refused(&c, "file_write", json!({"file_path": p, "contents": "x"})).await;
        assert!(e.contains("CONFINE-002"), "{p}: {e}");
    }
    assert!(!s.ws().join(".arbiter/evil.txt").exists());
    assert!(!s.ws().join(".arbiter/policy.yaml").exists());
}

#[tokio::test]
async fn file_with_other_hard_links_is_not_written() {
    let s = Scratch::new();
    let outside = s.outside().join("linked.txt");
    std::fs::write(&outside, "shared").unwrap();
    std::fs::hard_link(&outside, s.ws().join("linked.txt")).unwrap();
    let c = start(&s.ws()).await;
    let e = refused(
        &c,
        "file_write",
        json!({"file_path": "linked.txt", "contents": "changed"}),
    )
    .await;
    assert!(e.contains("LINK-001"), "{e}");
    let e = refused(
        &c,
        "file_search_replace",
        json!({"file_path": "linked.txt", "old_string": "shared", "new_string": "x"}),
    )
    .await;
    assert!(e.contains("LINK-001"), "{e}");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "shared");
    assert_eq!(s.read("linked.txt"), "shared");
}

#[tokio::test]
async fn nul_empty_and_overlong_paths_get_clear_errors() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let e = refused(&c, "file_read", json!({"target_file": ""})).await;
    assert!(e.contains("CONFINE-003") && e.contains("empty"), "{e}");
    let e = refused(&c, "file_read", json!({"target_file": "a\u{0}b"})).await;
    assert!(e.contains("CONFINE-003") && e.contains("NUL"), "{e}");
    let e = refused(
        &c,
        "file_write",
        json!({"file_path": "d/".repeat(2100) + "f", "contents": "x"}),
    )
    .await;
    assert!(e.contains("CONFINE-003") && e.contains("4096"), "{e}");
    let e = refused(
        &c,
        "file_write",
        json!({"file_path": "n".repeat(256), "contents": "x"}),
    )
    .await;
    assert!(e.contains("CONFINE-003") && e.contains("255"), "{e}");
}

#[tokio::test]
async fn tilde_is_a_literal_directory_name() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let out = ok(
        &c,
        "file_write",
        json!({"file_path": "~/notes.txt", "contents": "n"}),
    )
    .await;
    assert_eq!(out["path"], "~/notes.txt");
    assert_eq!(s.read("~/notes.txt"), "n");
}

#[tokio::test]
async fn fifo_device_and_directory_are_refused_without_hanging() {
    let s = Scratch::new();
    s.write("dir/file.txt", "f");
    let fifo = s.ws().join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let c = start(&s.ws()).await;
    // Nobody writes to the FIFO: a blocking open would hang here forever.
    let e = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        refused(&c, "file_read", json!({"target_file": "pipe"})),
    )
    .await
    .expect("a FIFO must not hang the server");
    assert!(e.contains("FIFO") && e.contains("FILE-002"), "{e}");
    let e = refused(&c, "file_read", json!({"target_file": "dir"})).await;
    assert!(e.contains("is a directory"), "{e}");
    let e = refused(
        &c,
        "file_write",
        json!({"file_path": "dir", "contents": "x"}),
    )
    .await;
    assert!(e.contains("is a directory"), "{e}");
    // A character device inside the workspace (we run as root in CI; mknod needs it).
    let dev = s.ws().join("null");
    if std::process::Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status()
        .unwrap()
        .success()
    {
        let e = refused(&c, "file_read", json!({"target_file": "null"})).await;
        assert!(e.contains("character device"), "{e}");
    } else {
        eprintln!("mknod not permitted here: device case not exercised");
    }
    // The server is still answering.
    ok(&c, "file_read", json!({"target_file": "dir/file.txt"})).await;
}

#[tokio::test]
async fn secret_files_are_refused_by_policy_even_through_a_symlink() {
    let s = Scratch::new();
    s.write(".env", "API_KEY=123\n");
    symlink(".env", s.ws().join("harmless.txt")).unwrap();
    let c = start(&s.ws()).await;
    for p in [".env", "harmless.txt"] {
        let e = refused(&c, "file_read", json!({"target_file": p})).await;
        assert!(e.contains("PATH-002") && !e.contains("API_KEY"), "{p}: {e}");
    }
    let e = refused(
        &c,
        "file_write",
        json!({"file_path": ".git/hooks/pre-commit", "contents": "rm -rf /"}),
    )
    .await;
    assert!(e.contains("PATH-001"), "{e}");
    assert!(!s.ws().join(".git").exists());
}
