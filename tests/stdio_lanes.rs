//! Over stdio, plain `tools/call`s of the file tools are answered without
//! rmcp's dispatch (`src/server/direct.rs`); a call carrying `_meta` still
//! goes through rmcp. Both lanes must give the same answers and the same
//! audit records: each call below is made both ways and compared.

mod common;

use common::*;
use serde_json::{Value, json};

/// A call's line, through rmcp's lane or the direct one.
fn call_line(id: u64, tool: &str, args: &Value, through_rmcp: bool) -> String {
    lane_call(id, tool, args, through_rmcp).to_string()
}

#[test]
fn both_lanes_answer_and_record_alike() {
    let s = Scratch::new();
    lane_test_files(&s);
    let log = s.dir.path().join("server.log");
    let mut server = RawServer::start_logging(&s.ws(), &log);

    let calls = lane_test_calls();
    let mut id = 100;
    for (tool, args) in &calls {
        let mut answers = Vec::new();
        for through_rmcp in [true, false] {
            id += 1;
            server.send_line(&call_line(id, tool, args, through_rmcp));
            let mut answer = server.recv();
            assert_eq!(answer["id"], id, "{answer}");
            answer["id"] = Value::Null;
            answers.push(answer);
        }
        assert_eq!(
            answers[0], answers[1],
            "{tool} {args}: rmcp's lane (left) and the direct one (right) differ"
        );
    }

    // Changes made through the direct lane land.
    id += 1;
    server.send_line(&call_line(
        id,
        "file_search_replace",
        &json!({"file_path": "crlf.txt", "old_string": "y", "new_string": "z"}),
        false,
    ));
    let edit = server.recv();
    assert_eq!(
        edit["result"]["structuredContent"]["replacements"], 1,
        "{edit}"
    );
    assert_eq!(s.read("crlf.txt"), "x\r\nz\r\n");
    id += 1;
    server.send_line(&call_line(
        id,
        "move_file",
        &json!({"source": "w.txt", "destination": "v.txt"}),
        false,
    ));
    let moved = server.recv();
    assert_eq!(moved["result"]["isError"], false, "{moved}");
    assert_eq!(s.read("v.txt"), "new\n");
    id += 1;
    server.send_line(&call_line(
        id,
        "delete_file",
        &json!({"target_file": "v.txt"}),
        false,
    ));
    let deleted = server.recv();
    assert_eq!(deleted["result"]["isError"], false, "{deleted}");
    assert!(!s.ws().join("v.txt").exists());
    server.hang_up();

    // Every call made directly said so in the log (the test would pass
    // trivially if they had all gone through rmcp).
    let log = std::fs::read_to_string(&log).unwrap();
    let direct = log.matches("tools/call answered directly").count();
    assert_eq!(direct, calls.len() + 3, "{log}");

    // The records of each pair agree, and the chain verifies.
    let records = audit_summary(&s.ws());
    assert_eq!(records.len(), calls.len() * 2 + 3, "{records:?}");
    for pair in records[..calls.len() * 2].chunks(2) {
        assert_eq!(pair[0], pair[1]);
    }
    let (code, out, err) = run_cli(&s.ws(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_pipelined_burst_is_answered_once_each_in_either_lane() {
    let s = Scratch::new();
    s.write("r.txt", &"0123456789abcdef\n".repeat(256));
    let mut server = RawServer::start(&s.ws());
    let calls = 400u64;
    let mut stdin = server.take_stdin();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut burst = String::new();
        for id in 1..=calls {
            let (tool, args) = match id % 4 {
                0 => (
                    "file_write",
                    json!({"file_path": format!("w{}.txt", id % 8), "contents": id.to_string()}),
                ),
                _ => ("file_read", json!({"target_file": "r.txt"})),
            };
            burst.push_str(&call_line(id, tool, &args, id % 5 == 0));
            burst.push('\n');
        }
        stdin.write_all(burst.as_bytes()).unwrap();
        stdin
    });
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..calls {
        let answer = server.recv();
        assert_eq!(answer["result"]["isError"], false, "{answer}");
        assert!(
            seen.insert(answer["id"].as_u64().unwrap()),
            "twice: {answer}"
        );
    }
    assert_eq!(seen.len() as u64, calls);
    drop(writer.join().unwrap());
    assert!(server.hang_up().success());
    assert_eq!(audit_records(&s.ws()).len() as u64, calls);
}

/// A burst of reads is answered in batches, sent by a thread of their own
/// while the next batch is answered (`BatchSender` in `src/server/stdio.rs`);
/// the records still join the chain in the order the calls came.
#[test]
fn the_records_of_a_burst_of_reads_follow_the_order_of_its_calls() {
    let s = Scratch::new();
    let files = 7;
    for f in 0..files {
        // ~8 KiB each: a 256 KiB batch is ~30 replies, so the burst makes
        // several batches.
        s.write(&format!("f{f}.txt"), &format!("file {f}\n").repeat(1000));
    }
    let mut server = RawServer::start(&s.ws());
    let calls = 600u64;
    let file_of = |id: u64| format!("f{}.txt", (id * 3) % files);
    let lines: Vec<String> = (1..=calls)
        .map(|id| call_line(id, "file_read", &json!({"target_file": file_of(id)}), false) + "\n")
        .collect();
    let mut stdin = server.take_stdin();
    // Pieces of 60 calls and of 2, 20 ms apart: a small batch (sent right
    // on the reading task when nothing waits) comes while a large one may
    // still be being sent, and must not overtake it. (With a sender slowed
    // by 5 ms a batch and allowed to be overtaken, this test fails.)
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut rest = &lines[..];
        for piece in [60, 2].into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(piece.min(rest.len()));
            stdin.write_all(now.concat().as_bytes()).unwrap();
            stdin.flush().unwrap();
            rest = later;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        stdin
    });
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..calls {
        let answer = server.recv();
        let id = answer["id"].as_u64().unwrap();
        let text = answer["result"]["content"][0]["text"].as_str().unwrap();
        let f = (id * 3) % files;
        assert!(text.contains(&format!("\tfile {f}\n")), "{id}: {text:.80}");
        assert!(seen.insert(id), "twice: {id}");
    }
    drop(writer.join().unwrap());
    assert!(server.hang_up().success());
    let read: Vec<String> = audit_records(&s.ws())
        .iter()
        .map(|r| {
            let args: Value = serde_json::from_str(r["args_redacted"].as_str().unwrap()).unwrap();
            args["target_file"].as_str().unwrap().to_string()
        })
        .collect();
    let asked: Vec<String> = (1..=calls).map(file_of).collect();
    assert_eq!(read, asked, "the chain's order is not the calls' order");
    let (code, out, err) = run_cli(&s.ws(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn reads_whose_records_cannot_be_committed_are_answered_as_failed_in_both_lanes() {
    let s = Scratch::new();
    s.write("r.txt", "hello\n");
    let mut server = RawServer::start(&s.ws());
    server.send_call(1, "file_read", json!({"target_file": "r.txt"}));
    assert_eq!(server.recv()["result"]["isError"], false);
    // Something not a record at the journal's end: the chain's head cannot
    // be read, so no record can be committed after it.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(s.ws().join(".arbiter/audit.journal"))
        .unwrap()
        .write_all(b"not a record\n")
        .unwrap();
    // A burst (records committed together, by the sending thread when the
    // batch is large enough) and single calls, in both lanes.
    let args = json!({"target_file": "r.txt"});
    let burst: Vec<String> = (10..18)
        .map(|id| call_line(id, "file_read", &args, false))
        .collect();
    server.send_line(&burst.join("\n"));
    server.send_line(&call_line(20, "file_read", &args, false));
    server.send_line(&call_line(21, "file_read", &args, true));
    let mut failed = std::collections::BTreeMap::new();
    for _ in 0..10 {
        let answer = server.recv();
        assert_eq!(answer["result"]["isError"], true, "{answer}");
        let text = answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            text.contains("AUDIT-001") && text.contains("Nothing was changed"),
            "{text}"
        );
        assert!(
            !text.contains("hello"),
            "the file's text went out without its record: {text}"
        );
        failed.insert(answer["id"].as_u64().unwrap(), text);
    }
    assert_eq!(
        failed.keys().copied().collect::<Vec<_>>(),
        [10, 11, 12, 13, 14, 15, 16, 17, 20, 21]
    );
    assert_eq!(failed[&20], failed[&21], "both lanes say the same");
}
