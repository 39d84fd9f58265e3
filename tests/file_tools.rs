//! The three file tools through the real binary: paging, atomic replacement,
//! exact edits, and the protocol-level errors for malformed calls.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::json;

#[tokio::test]
async fn tools_list_has_schemas_and_annotations() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let info = c.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("arbiter")
    );
    let tools = c.list_all_tools().await.unwrap();
    let find = |n: &str| {
        tools
            .iter()
            .find(|t| t.name == n)
            .unwrap_or_else(|| panic!("{n} missing"))
            .clone()
    };
    let read = find("file_read");
    assert_eq!(
        read.annotations.as_ref().and_then(|a| a.read_only_hint),
        Some(true)
    );
    assert!(read.output_schema.is_some());
    let props = read.input_schema.get("properties").unwrap();
    assert!(
        props.get("target_file").is_some()
            && props.get("offset").is_some()
            && props.get("limit").is_some()
    );
    let write = find("file_write");
    let a = write.annotations.unwrap();
    assert_eq!(
        (a.read_only_hint, a.destructive_hint, a.idempotent_hint),
        (Some(false), Some(true), Some(true))
    );
    let edit = find("file_search_replace");
    let a = edit.annotations.unwrap();
    assert_eq!(
        (a.destructive_hint, a.idempotent_hint),
        (Some(true), Some(false))
    );
    assert!(edit.output_schema.is_some());
}

#[tokio::test]
async fn file_read_pages_a_long_file() {
    let s = Scratch::new();
    let text: String = (1..=5000).map(|i| format!("line {i}\n")).collect();
    s.write("long.txt", &text);
    let c = start(&s.ws()).await;
    let first = ok(&c, "file_read", json!({"target_file": "long.txt"})).await;
    assert_eq!(first["end_line"], 2000);
    assert_eq!(first["truncated"], true);
    assert_eq!(first["next_offset"], 2001);
    let r = call(
        &c,
        "file_read",
        json!({"target_file": "long.txt", "offset": 4990, "limit": 50}),
    )
    .await;
    let out = r.structured_content.clone().unwrap();
    assert_eq!(out["start_line"], 4990);
    assert_eq!(out["end_line"], 5000);
    assert_eq!(out["truncated"], false);
    assert_eq!(out["total_lines"], 5000);
    assert!(text_of(&r).contains("  5000\tline 5000"));
    // The structured copy carries the same lines as the text block.
    assert_eq!(out["content"].as_str(), Some(text_of(&r).as_str()));
}

fn text_of(r: &rmcp::model::CallToolResult) -> String {
    common::text(r)
}

#[tokio::test]
async fn file_read_caps_a_reply_at_256_kib() {
    let s = Scratch::new();
    let text: String = (1..=1000)
        .map(|i| format!("{i}:{}\n", "x".repeat(1000)))
        .collect();
    s.write("wide.txt", &text);
    let c = start(&s.ws()).await;
    let out = ok(&c, "file_read", json!({"target_file": "wide.txt"})).await;
    assert!(out["content"].as_str().unwrap().len() <= 256 * 1024);
    assert_eq!(out["truncated"], true);
    let next = out["next_offset"].as_u64().unwrap();
    assert_eq!(next, out["end_line"].as_u64().unwrap() + 1);
    assert!(next > 200 && next < 300, "{next}");
}

#[tokio::test]
async fn binary_file_is_refused() {
    let s = Scratch::new();
    std::fs::write(s.ws().join("img.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let c = start(&s.ws()).await;
    let e = refused(&c, "file_read", json!({"target_file": "img.png"})).await;
    assert!(e.contains("FILE-004") && e.contains("binary"), "{e}");
    let e = refused(
        &c,
        "file_search_replace",
        json!({"file_path": "img.png", "old_string": "PNG", "new_string": "JPG"}),
    )
    .await;
    assert!(e.contains("FILE-004"), "{e}");
}

#[tokio::test]
async fn missing_file_says_so() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let e = refused(&c, "file_read", json!({"target_file": "nope.txt"})).await;
    assert!(
        e.contains("FILE-001") && e.contains("does not exist"),
        "{e}"
    );
}

#[tokio::test]
async fn file_write_creates_parents_and_keeps_the_mode_it_replaces() {
    let s = Scratch::new();
    s.write("bin/run.sh", "#!/bin/sh\n");
    std::fs::set_permissions(
        s.ws().join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let c = start(&s.ws()).await;
    let out = ok(
        &c,
        "file_write",
        json!({"file_path": "bin/run.sh", "contents": "#!/bin/sh\necho hi\n"}),
    )
    .await;
    assert_eq!(out["created"], false);
    let mode = std::fs::metadata(s.ws().join("bin/run.sh"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o755);
    let out = ok(
        &c,
        "file_write",
        json!({"file_path": "a/b/c/new.txt", "contents": "new"}),
    )
    .await;
    assert_eq!(out["created"], true);
    assert_eq!(out["dirs_created"], 3);
    assert_eq!(s.read("a/b/c/new.txt"), "new");
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(s.ws().join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["run.sh".to_string()]);
}

#[tokio::test]
async fn search_replace_is_exact_literal_and_reports_a_diff() {
    let s = Scratch::new();
    s.write("f.rs", "let a = 1;\nlet b = 2;\n");
    let c = start(&s.ws()).await;
    let out = ok(&c, "file_search_replace", json!({"file_path": "f.rs", "old_string": "let b = 2;", "new_string": "let b = \"$& $1 \\\\n\";"})).await;
    assert_eq!(out["replacements"], 1);
    let diff = out["diff"].as_str().unwrap();
    assert!(
        diff.contains("-let b = 2;") && diff.contains("+let b = \"$& $1 \\\\n\";"),
        "{diff}"
    );
    assert_eq!(s.read("f.rs"), "let a = 1;\nlet b = \"$& $1 \\\\n\";\n");
}

#[tokio::test]
async fn search_replace_refuses_ambiguity_and_points_at_near_misses() {
    let s = Scratch::new();
    s.write("f.txt", "foo\nbar\nfoo\nbaz qux\n");
    let c = start(&s.ws()).await;
    let e = refused(
        &c,
        "file_search_replace",
        json!({"file_path": "f.txt", "old_string": "foo", "new_string": "x"}),
    )
    .await;
    assert!(e.contains("EDIT-002") && e.contains("lines 1, 3"), "{e}");
    let e = refused(
        &c,
        "file_search_replace",
        json!({"file_path": "f.txt", "old_string": "baz quux", "new_string": "x"}),
    )
    .await;
    assert!(
        e.contains("EDIT-001") && e.contains("line 4") && e.contains("baz qux"),
        "{e}"
    );
    assert_eq!(s.read("f.txt"), "foo\nbar\nfoo\nbaz qux\n");
    let out = ok(
        &c,
        "file_search_replace",
        json!({"file_path": "f.txt", "old_string": "foo", "new_string": "x", "replace_all": true}),
    )
    .await;
    assert_eq!(out["replacements"], 2);
    assert_eq!(s.read("f.txt"), "x\nbar\nx\nbaz qux\n");
}

#[tokio::test]
async fn search_replace_keeps_crlf_bom_and_missing_final_newline() {
    let s = Scratch::new();
    s.write("win.txt", "\u{feff}one\r\ntwo\r\nthree");
    let c = start(&s.ws()).await;
    ok(
        &c,
        "file_search_replace",
        json!({"file_path": "win.txt", "old_string": "one\ntwo", "new_string": "uno\ndos\nmas"}),
    )
    .await;
    assert_eq!(s.read("win.txt"), "\u{feff}uno\r\ndos\r\nmas\r\nthree");
}

#[tokio::test]
async fn concurrent_edits_of_one_file_lose_no_update() {
    let s = Scratch::new();
    s.write("log.txt", "END\n");
    let c = start(&s.ws()).await;
    let edits = (0..24).map(|i| {
        let c = &c;
        async move {
            // Each edit rewrites the marker; a lost update would drop a line.
            ok(c, "file_search_replace", json!({"file_path": "log.txt", "old_string": "END", "new_string": format!("entry {i}\nEND")})).await
        }
    });
    futures::future::join_all(edits).await;
    let text = s.read("log.txt");
    for i in 0..24 {
        assert!(
            text.contains(&format!("entry {i}\n")),
            "entry {i} lost:\n{text}"
        );
    }
    assert_eq!(text.lines().count(), 25);
}

#[tokio::test]
async fn malformed_calls_get_json_rpc_errors_naming_the_field() {
    let s = Scratch::new();
    let c = start(&s.ws()).await;
    let err = try_call(&c, "no_such_tool", json!({})).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("-32602") || msg.contains("unknown tool"),
        "{msg}"
    );
    assert!(
        msg.contains("no_such_tool") && msg.contains("file_read"),
        "{msg}"
    );
    let err = try_call(&c, "file_read", json!({}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("target_file") && err.contains("missing"),
        "{err}"
    );
    let err = try_call(&c, "file_read", json!({"target_file": "a", "limit": "ten"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`limit`"), "{err}");
    let err = try_call(&c, "file_write", json!({"file_path": "a", "contents": 5}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`contents`"), "{err}");
    // The session is still usable.
    ok(
        &c,
        "file_write",
        json!({"file_path": "a", "contents": "fine"}),
    )
    .await;
}

/// Far more pipelined calls than the server keeps open at once: every one is
/// answered exactly once (the server reads on as answers go out, and never
/// stalls for good).
#[test]
fn a_thousand_pipelined_calls_are_all_answered() {
    let scratch = Scratch::new();
    scratch.write("a.txt", "hello\n");
    let mut server = RawServer::start(&scratch.ws());
    let mut stdin = server.take_stdin();
    const CALLS: u64 = 1000;
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for id in 1..=CALLS {
            let line = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "file_read", "arguments": {"target_file": "a.txt"}}});
            writeln!(stdin, "{line}").unwrap();
        }
        stdin.flush().unwrap();
        stdin // closed only after every answer is in
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..CALLS {
            let reply = server.recv();
            assert_eq!(reply["result"]["isError"], false, "{reply}");
            assert!(seen.insert(reply["id"].as_u64().unwrap()), "{reply}");
        }
        done_tx.send(seen.len()).unwrap();
        server
    });
    let answered = done_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("every pipelined call is answered within a minute");
    assert_eq!(answered as u64, CALLS);
    drop(writer.join().unwrap());
    drop(reader.join().unwrap());
}
