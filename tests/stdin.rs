//! How `serve` reads stdin: a pipe is busy-polled for a moment after each
//! quiet spell before the server waits to be woken (`PollingStdin`,
//! `--stdin-busy-poll-us`); anything else (a file) is read by rmcp's reader.
//! Every way must answer every request.

mod common;

use common::*;
use serde_json::{Value, json};

fn read_call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "file_read", "arguments": {"target_file": "a.txt"}}})
}

#[test]
fn calls_spread_out_in_time_are_answered_with_busy_polling_on_or_off() {
    let s = Scratch::new();
    s.write("a.txt", "alpha\n");
    // Off; the default (100 µs, shorter than the pauses below); and 200 ms
    // (longer: each next call is found while polling).
    for extra in [
        &["--stdin-busy-poll-us", "0"][..],
        &[],
        &["--stdin-busy-poll-us", "200000"],
    ] {
        let mut server = RawServer::start_with(&s.ws(), extra);
        for id in 1..=4 {
            std::thread::sleep(std::time::Duration::from_millis(30));
            server.send_line(&read_call(id).to_string());
            let reply = server.recv();
            assert_eq!(reply["id"], id, "{extra:?}: {reply}");
            let text = reply["result"]["content"][0]["text"]
                .as_str()
                .unwrap_or_default();
            assert_eq!(text, "     1\talpha\n", "{extra:?}: {reply}");
        }
        assert!(server.hang_up().success(), "{extra:?}");
    }
}

#[test]
fn requests_from_a_file_on_stdin_are_answered() {
    let s = Scratch::new();
    s.write("a.txt", "alpha\n");
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "file-test", "version": "0"}}});
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let requests = s.dir.path().join("requests.jsonl");
    let lines: Vec<String> = [init, initialized, read_call(1), read_call(2)]
        .iter()
        .map(Value::to_string)
        .collect();
    std::fs::write(&requests, lines.join("\n") + "\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arbiter"))
        .args(["serve", "--workspace"])
        .arg(s.ws())
        .stdin(std::fs::File::open(&requests).unwrap())
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let replies: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for id in [1, 2] {
        let reply = replies
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no reply {id}: {replies:?}"));
        assert_eq!(reply["result"]["content"][0]["text"], "     1\talpha\n");
    }
}
