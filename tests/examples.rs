//! The files in `examples/` are run, so they cannot rot: every client
//! configuration is parsed and the command it names is started and asked
//! for its tools by a real MCP client; the CI script runs against a scratch
//! repository; `arbiter init` writes a policy and prints configurations that
//! start too.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rmcp::ServiceExt;
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The server entries of a client configuration (`mcpServers` or VS Code's `servers`).
fn servers(config: &Value) -> Vec<(String, Value)> {
    let map = config
        .get("mcpServers")
        .or_else(|| config.get("servers"))
        .and_then(Value::as_object)
        .expect("a configuration has mcpServers or servers");
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Start what `entry` names, with the workspace placeholders pointing at
/// `ws`, and return the tools it lists.
async fn tools_of(entry: &Value, ws: &Path) -> Vec<String> {
    if entry.get("type").is_some_and(|t| t == "http") {
        return http_tools_of(entry, ws).await;
    }
    let command = entry["command"].as_str().expect("command");
    assert_eq!(
        Path::new(command).file_name().unwrap(),
        "arbiter",
        "{entry}"
    );
    if let Some(kind) = entry.get("type") {
        assert_eq!(kind, "stdio", "{entry}");
    }
    let args: Vec<String> = entry["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            match a {
                "${workspaceFolder}" | "." | "/home/me/projects/myapp" => ws.display().to_string(),
                other => other.to_string(),
            }
        })
        .collect();
    assert!(args.first().is_some_and(|a| a == "serve"), "{entry}");
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(&args).current_dir(ws);
    let transport = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
        .0;
    let client = ().serve(transport).await.expect("MCP handshake");
    let tools = client.list_all_tools().await.unwrap();
    client.cancel().await.unwrap();
    tools.into_iter().map(|t| t.name.to_string()).collect()
}

/// An HTTP entry: serve `ws` over HTTP, make a token, and connect the way
/// the entry says (its URL with the server's port, its Authorization header
/// with the token in place of the client's variable).
async fn http_tools_of(entry: &Value, ws: &Path) -> Vec<String> {
    let url = entry["url"].as_str().expect("url");
    assert!(url.starts_with("http://127.0.0.1:8787/"), "{entry}");
    let auth = entry["headers"]["Authorization"]
        .as_str()
        .expect("an Authorization header");
    let variable = auth.strip_prefix("Bearer ").expect("a bearer token");
    assert!(
        variable.starts_with("${") && variable.ends_with('}'),
        "the token comes from a variable, never the file: {entry}"
    );
    let (code, token, err) = run_cli(
        ws,
        &[
            "token", "create", "--tenant", "default", "--agent", "example",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let server = HttpServer::start(ws, &[]);
    let url = url.replace("http://127.0.0.1:8787", &server.base);
    let config =
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(url)
            .auth_header(token.trim().to_string());
    let client = ()
        .serve(rmcp::transport::StreamableHttpClientTransport::from_config(
            config,
        ))
        .await
        .expect("MCP handshake over HTTP");
    let tools = client.list_all_tools().await.unwrap();
    client.cancel().await.unwrap();
    tools.into_iter().map(|t| t.name.to_string()).collect()
}

#[tokio::test]
async fn every_client_configuration_starts_a_server_with_the_tools() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (name, server) in servers(&config) {
            let s = Scratch::new();
            let tools = tools_of(&server, &s.ws()).await;
            for tool in ["file_read", "run_terminal_cmd", "override_request"] {
                assert!(
                    tools.iter().any(|t| t == tool),
                    "{} ({name}): {tools:?}",
                    path.display()
                );
            }
            seen += 1;
        }
    }
    assert!(seen >= 6, "only {seen} configurations found");
}

#[test]
fn the_ci_script_edits_tests_and_fails_on_refusals() {
    let s = Scratch::new();
    s.write("VERSION", "0.1.0\n");
    s.write("test.sh", "test \"$(cat VERSION)\" = 0.1.1\n");
    s.write(".env", "SECRET=1\n");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |script: &Path| {
        std::process::Command::new("bash")
            .arg(script)
            .arg(".")
            .current_dir(s.ws())
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let out = run(&examples().join("ci-edit.sh"));
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert_eq!(s.read("VERSION"), "0.1.1\n");
    assert!(said.contains("audit chain OK"), "{said}");
    // The same script fails the job when the tests fail.
    s.write("VERSION", "0.1.0\n");
    s.write("test.sh", "exit 3\n");
    let out = run(&examples().join("ci-edit.sh"));
    assert!(!out.status.success());
}

#[test]
fn the_github_workflow_runs_the_ci_script() {
    let text = std::fs::read_to_string(examples().join("github-actions.yml")).unwrap();
    let workflow: Value = serde_saphyr::from_str(&text).unwrap();
    let steps = workflow["jobs"]["arbiter"]["steps"].as_array().unwrap();
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(
        runs.iter().any(|r| r.contains("examples/ci-edit.sh")),
        "{runs:?}"
    );
    assert!(runs.iter().any(|r| r.contains("cargo build --release")));
}

#[tokio::test]
async fn init_writes_a_policy_once_and_prints_configurations_that_start() {
    let s = Scratch::new();
    let (code, out, err) = run_cli(&s.ws(), &["init", "--profile", "strict"]);
    assert_eq!(code, 0, "{err}");
    let written = std::fs::read_to_string(s.ws().join(".arbiter/policy.yaml")).unwrap();
    assert!(written.contains("name: strict"), "{written}");
    let (code, _, err) = run_cli(&s.ws(), &["init"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(s.ws().join(".arbiter/policy.yaml")).unwrap(),
        written
    );
    let (code, _, err) = run_cli(&s.ws(), &["init", "--profile", "ci", "--force"]);
    assert_eq!(code, 0, "{err}");
    let (_, shown, _) = run_cli(&s.ws(), &["policy", "show"]);
    assert!(shown.contains("\"name\": \"ci\""), "{shown}");
    // The JSON it printed for Claude Desktop / Cursor starts a server.
    let start = out.find("{\n").expect("a JSON snippet");
    let mut depth = 0;
    let mut end = start;
    for (i, c) in out[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = start + i + 1;
                    break;
                }
            }
            _ => {}
        }
    }
    let snippet: Value = serde_json::from_str(&out[start..end]).unwrap();
    let (_, entry) = servers(&snippet).remove(0);
    let tools = tools_of(&entry, &s.ws()).await;
    assert!(tools.iter().any(|t| t == "file_read"), "{tools:?}");
}

/// The README's tool table names every tool the server lists, with every
/// argument, and no tool the server does not have.
#[tokio::test]
async fn the_readme_tool_table_matches_the_server() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let s = Scratch::new();
    let client = start(&s.ws()).await;
    let tools = client.list_all_tools().await.unwrap();
    client.cancel().await.unwrap();
    let section = readme
        .split("\n## Tools\n")
        .nth(1)
        .expect("README has a Tools section")
        .split("\n## ")
        .next()
        .unwrap();
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    for tool in &tools {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("| `{}` |", tool.name)))
            .unwrap_or_else(|| panic!("README has no row for `{}`", tool.name));
        let required: Vec<&str> = tool
            .input_schema
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = tool
            .input_schema
            .get("properties")
            .and_then(Value::as_object)
        {
            for arg in props.keys() {
                let mark = if required.contains(&arg.as_str()) {
                    format!("`{arg}`*")
                } else {
                    format!("`{arg}`")
                };
                assert!(
                    row.contains(&mark),
                    "README row for `{}` lacks {mark}: {row}",
                    tool.name
                );
            }
        }
    }
    assert_eq!(rows.len(), tools.len(), "one README row per tool: {rows:?}");
}
