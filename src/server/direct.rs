//! `tools/call` requests answered without rmcp's dispatch.
//!
//! rmcp turns each request into a typed message, a task and two channel hops
//! before a tool runs, and its answer into a `serde_json::Value` before it is
//! written: about half of what a 4 KiB `file_read` costs over stdio. The file
//! tools need nothing from rmcp's request context (no progress, cancellation
//! or requests to the client), so a transport may answer their calls itself
//! through [`ArbiterServer::call_direct`]: the same argument check, policy,
//! tool, audit record (committed before the reply) and wire shape.
//!
//! Only plain requests take this lane: a `tools/call` with an id, whose
//! params are exactly `name` and `arguments` (no `_meta`: a progress token or
//! per-request protocol metadata is rmcp's to handle), in a session that
//! negotiated a protocol older than 2026-07-28 at `initialize`. Everything
//! else, including every line this module cannot read, goes to rmcp
//! unchanged, so errors and edge cases keep rmcp's answers.

use rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, ErrorData, InitializeRequestParams,
    JsonRpcMessage, JsonRpcVersion2_0, ProtocolVersion, RequestId, ServerJsonRpcMessage,
    ServerResult,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::ArbiterServer;
use super::json_out::{self, JsonStringBody};
use crate::store::audit::{AuditEntry, AuditError};
use crate::tools::files::FileReadOutput;

/// What a call answered in this lane returns.
#[derive(Debug)]
pub enum DirectReply {
    /// A tool's result (or rmcp's response), encoded here.
    Response(CallToolResponse),
    /// A successful `file_read`: its output (with `content` empty) and its
    /// lines already escaped, written into the reply by [`write_read_result`].
    Read(FileReadOutput, JsonStringBody),
}

impl From<CallToolResult> for DirectReply {
    fn from(result: CallToolResult) -> Self {
        Self::Response(result.into())
    }
}

/// The tools answered directly. `ArbiterServer::direct_run` runs exactly
/// these (a test holds the two together).
pub const DIRECT_TOOLS: &[&str] = &[
    "file_read",
    "file_write",
    "file_search_replace",
    "list_dir",
    "grep_search",
    "file_search",
    "delete_file",
    "move_file",
];

/// What a session settled at `initialize` that a direct answer depends on.
#[derive(Debug, Clone)]
pub struct DirectSession {
    /// The name the client gave itself (the audit record's client, unless a
    /// token names the agent).
    pub client_name: String,
}

impl DirectSession {
    /// The lane for a session that negotiated `peer`; `None` when its
    /// protocol (2026-07-28 and later: per-request metadata, other result
    /// shapes) is left to rmcp.
    pub fn for_peer(peer: &InitializeRequestParams) -> Option<Self> {
        let legacy = peer.protocol_version.as_str() < ProtocolVersion::V_2026_07_28.as_str();
        legacy.then(|| Self {
            client_name: peer.client_info.name.clone(),
        })
    }
}

/// A request this lane takes.
#[derive(Debug)]
pub struct DirectRequest {
    pub id: RequestId,
    pub tool: String,
    pub arguments: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[allow(dead_code)] // checked by deserializing: only "2.0"
    jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    method: String,
    params: CallParams,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: Option<Map<String, Value>>,
}

/// `line` as a request for this lane, or `None` for rmcp.
pub fn parse(line: &[u8]) -> Option<DirectRequest> {
    let request: Request = serde_json::from_slice(line).ok()?;
    if request.method != "tools/call" || !DIRECT_TOOLS.contains(&request.params.name.as_str()) {
        return None;
    }
    Some(DirectRequest {
        id: request.id,
        tool: request.params.name,
        arguments: request.params.arguments.unwrap_or_default(),
    })
}

/// Run `request` and encode its answer as one JSON-RPC line (with its `\n`).
/// With `deferred`, the audit record is added there for the caller to commit
/// before it sends the reply (see [`ArbiterServer::call_direct`]).
pub async fn answer(
    server: &ArbiterServer,
    session: &DirectSession,
    request: DirectRequest,
    deferred: Option<&mut Vec<AuditEntry>>,
) -> Vec<u8> {
    let mut line = Vec::new();
    answer_into(server, session, request, deferred, &mut line).await;
    line
}

/// [`answer`], appending the line to `out` (a batch of replies).
pub async fn answer_into(
    server: &ArbiterServer,
    session: &DirectSession,
    request: DirectRequest,
    deferred: Option<&mut Vec<AuditEntry>>,
    out: &mut Vec<u8>,
) {
    let DirectRequest {
        id,
        tool,
        arguments,
    } = request;
    tracing::debug!(tool = %tool, "tools/call answered directly");
    let response = server
        .call_direct(&tool, arguments, session.client_name.clone(), deferred)
        .await
        .unwrap_or_else(|| {
            Err(ErrorData::internal_error(
                format!("`{tool}` is not answered directly"),
                None,
            ))
        });
    encode_into(out, id, response);
}

/// The reply to a read whose deferred audit record could not be committed.
pub fn audit_failure_reply(id: RequestId, error: &AuditError) -> Vec<u8> {
    encode(id, Ok(super::audit_failure(error, false).into()))
}

/// Append a successful read's `result` object, as [`write_text_result`] writes the
/// result `ArbiterServer::file_read` makes of `output` (text block, then
/// structured content, keys in `serde_json::Map`'s order), from its lines
/// `content` already escaped: the lines are not built, copied and escaped a
/// second time (a test holds the two alike).
pub fn write_read_result(out: &mut Vec<u8>, output: &FileReadOutput, content: &JsonStringBody) {
    let lines = content.0.as_slice();
    out.reserve(2 * lines.len() + 256 + output.path.len());
    out.extend_from_slice(br#"{"content":[{"type":"text","text":""#);
    out.extend_from_slice(lines);
    json_out::write_str_body(out, &output.note(lines.is_empty()));
    out.extend_from_slice(br#""}],"structuredContent":{"content":""#);
    out.extend_from_slice(lines);
    out.extend_from_slice(b"\"");
    number_field(out, "end_line", Some(output.end_line));
    bool_field(out, "invalid_utf8", output.invalid_utf8);
    number_field(out, "next_offset", output.next_offset);
    out.extend_from_slice(br#","path":"#);
    json_out::write_str(out, &output.path);
    number_field(out, "size_bytes", Some(output.size_bytes));
    number_field(out, "start_line", Some(output.start_line));
    number_field(out, "total_lines", output.total_lines);
    bool_field(out, "truncated", output.truncated);
    out.extend_from_slice(br#"},"isError":false}"#);
}

/// `,"key":n`, or nothing for `None` (serde's `skip_serializing_if`).
fn number_field(out: &mut Vec<u8>, key: &str, n: Option<u64>) {
    if let Some(n) = n {
        push_key(out, key);
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
}

/// `,"key":true` or `,"key":false`.
fn bool_field(out: &mut Vec<u8>, key: &str, b: bool) {
    push_key(out, key);
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// `,"key":` for a key that needs no escaping.
fn push_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// The reply line rmcp would write for `response` in a session on a protocol
/// older than 2026-07-28 (see rmcp's `handle_request`).
fn encode(id: RequestId, response: Result<DirectReply, ErrorData>) -> Vec<u8> {
    let mut line = Vec::new();
    encode_into(&mut line, id, response);
    line
}

/// [`encode`], appending to `out`.
fn encode_into(out: &mut Vec<u8>, id: RequestId, response: Result<DirectReply, ErrorData>) {
    let response = match response {
        Ok(DirectReply::Read(output, content)) => {
            out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
            push_id(out, &id);
            out.extend_from_slice(br#","result":"#);
            write_read_result(out, &output, &content);
            out.extend_from_slice(b"}\n");
            return;
        }
        Ok(DirectReply::Response(response)) => Ok(response),
        Err(e) => Err(e),
    };
    if let Ok(CallToolResponse::Complete(result)) = &response
        && write_text_result(out, &id, result)
    {
        return;
    }
    let message: ServerJsonRpcMessage = match response {
        Ok(response) => {
            let mut result = ServerResult::from(response);
            result.strip_result_type_for_legacy_peer();
            result.strip_non_object_output_for_legacy_peer();
            JsonRpcMessage::response(result, id)
        }
        Err(error) => JsonRpcMessage::error(error, Some(id)),
    };
    let start = out.len();
    if let Err(e) = serde_json::to_writer(&mut *out, &message) {
        // Not expected: every part is plain data. Say so rather than hang the client.
        tracing::error!(error = %e, "a direct reply could not be encoded");
        out.truncate(start);
        out.extend_from_slice(
            br#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"the reply could not be encoded"}}"#,
        );
    }
    out.push(b'\n');
}

/// Append the line for a result of one plain text block and structured
/// content (what every tool here returns), written by `json_out` in the shape
/// serde gives it; false (nothing written) for any other result.
fn write_text_result(out: &mut Vec<u8>, id: &RequestId, result: &CallToolResult) -> bool {
    let [ContentBlock::Text(text)] = result.content.as_slice() else {
        return false;
    };
    if text.meta.is_some() || text.annotations.is_some() || result.meta.is_some() {
        return false;
    }
    let structured_len = match &result.structured_content {
        Some(Value::Object(_)) | None => text.text.len(),
        // Non-object output is rewritten for older peers: rmcp's way.
        Some(_) => return false,
    };
    out.reserve(128 + text.text.len() + structured_len * 11 / 10);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    push_id(out, id);
    out.extend_from_slice(br#","result":{"content":[{"type":"text","text":"#);
    json_out::write_str(out, &text.text);
    out.extend_from_slice(b"}]");
    if let Some(structured) = &result.structured_content {
        out.extend_from_slice(br#","structuredContent":"#);
        json_out::write_value(out, structured);
    }
    if let Some(is_error) = result.is_error {
        out.extend_from_slice(if is_error {
            br#","isError":true"#.as_slice()
        } else {
            br#","isError":false"#.as_slice()
        });
    }
    out.extend_from_slice(b"}}\n");
    true
}

fn push_id(out: &mut Vec<u8>, id: &RequestId) {
    match id {
        RequestId::Number(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        RequestId::String(s) => json_out::write_str(out, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_calls_of_the_file_tools_take_the_lane() {
        let call = |params: &str| {
            format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{params}}}"#)
        };
        let taken =
            parse(call(r#"{"name":"file_read","arguments":{"target_file":"a"}}"#).as_bytes())
                .expect("a plain file_read");
        assert_eq!(taken.id, RequestId::Number(7));
        assert_eq!(taken.tool, "file_read");
        assert_eq!(taken.arguments["target_file"], "a");
        let no_arguments = parse(call(r#"{"name":"list_dir"}"#).as_bytes()).expect("no arguments");
        assert!(no_arguments.arguments.is_empty());
        let string_id = r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"file_read","arguments":{}}}"#;
        assert_eq!(
            parse(string_id.as_bytes()).map(|r| r.id),
            Some(RequestId::String("x".into()))
        );

        for rmcps in [
            // progress tokens and per-request metadata
            call(r#"{"name":"file_read","arguments":{},"_meta":{"progressToken":1}}"#),
            // tools that use the request context, and unknown ones
            call(r#"{"name":"run_terminal_cmd","arguments":{"command":"true"}}"#),
            call(r#"{"name":"no_such_tool","arguments":{}}"#),
            // malformed arguments: rmcp's error
            call(r#"{"name":"file_read","arguments":[1]}"#),
            call(r#"{"name":"file_read","arguments":"x"}"#),
            // other methods, notifications, odd ids and versions, garbage
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#.to_string(),
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"file_read"}}"#.to_string(),
            r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"file_read"}}"#
                .to_string(),
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"file_read"}}"#
                .to_string(),
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"file_read"}}"#
                .to_string(),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"file_read"},"x":1}"#
                .to_string(),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"file_read"}} x"#
                .to_string(),
            "not json".to_string(),
        ] {
            assert!(parse(rmcps.as_bytes()).is_none(), "{rmcps}");
        }
    }

    #[test]
    fn sessions_on_2026_07_28_and_later_are_left_to_rmcp() {
        let peer = |version: &str| -> InitializeRequestParams {
            serde_json::from_value(serde_json::json!({
                "protocolVersion": version, "capabilities": {},
                "clientInfo": {"name": "c", "version": "1"}
            }))
            .unwrap()
        };
        let session = DirectSession::for_peer(&peer("2025-11-25")).expect("2025-11-25");
        assert_eq!(session.client_name, "c");
        assert!(DirectSession::for_peer(&peer("2025-06-18")).is_some());
        assert!(DirectSession::for_peer(&peer("2026-07-28")).is_none());
    }

    #[test]
    fn a_read_encoded_as_it_is_numbered_is_the_tool_results_json() {
        let output = |content: &str, truncated: bool, total: Option<u64>| FileReadOutput {
            path: "dir/say \"hi\".txt".into(),
            content: content.into(),
            start_line: 3,
            end_line: 4,
            truncated,
            next_offset: truncated.then_some(5),
            total_lines: total,
            size_bytes: 4096,
            invalid_utf8: content.contains('\u{FFFD}'),
        };
        let lines = "     3\tsay \"hi\" \\ \u{1}\u{7f}é\u{2028}\n     4\t\u{FFFD}\r\n";
        for read in [
            output(lines, false, Some(4)),
            output(lines, true, None),
            output("", false, Some(0)),
            output("", false, Some(2)),
            output(&lines.repeat(50), false, Some(100)),
        ] {
            let mut body = JsonStringBody::default();
            json_out::write_str_body(&mut body.0, &read.content);
            let mut without_content = FileReadOutput {
                content: String::new(),
                path: read.path.clone(),
                ..read
            };
            let mut direct = Vec::new();
            write_read_result(&mut direct, &without_content, &body);
            let line = encode(
                RequestId::Number(1),
                Ok(DirectReply::Read(
                    FileReadOutput {
                        path: without_content.path.clone(),
                        ..without_content
                    },
                    body,
                )),
            );
            without_content.content = read.content.clone();
            let result = super::super::read_result(without_content);
            let mut through_tool = Vec::new();
            assert!(write_text_result(
                &mut through_tool,
                &RequestId::Number(1),
                &result
            ));
            let prefix = br#"{"jsonrpc":"2.0","id":1,"result":"#;
            let expected = &through_tool[prefix.len()..through_tool.len() - 2];
            assert_eq!(
                String::from_utf8(direct.clone()).unwrap(),
                String::from_utf8(expected.to_vec()).unwrap()
            );
            // And as a whole reply line.
            assert_eq!(line, through_tool);
        }
    }

    #[test]
    fn a_reply_has_rmcps_legacy_shape() {
        let result =
            rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text("hi")]);
        let line = encode(RequestId::Number(3), Ok(result.into()));
        assert_eq!(line.last(), Some(&b'\n'));
        let value: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"jsonrpc": "2.0", "id": 3,
                "result": {"content": [{"type": "text", "text": "hi"}], "isError": false}})
        );
        // The hand-written shape is serde's, byte for byte.
        let mut result =
            rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text(
                "     1\tsay \"hi\"\n     2\t\u{1}é\n",
            )]);
        result.structured_content = Some(serde_json::json!({"content": "x\ty", "n": 2, "t": null}));
        // A read's structured content repeats its text.
        let long = "     1\tsay \"hi\"\n     2\t\u{1}é\n".repeat(10);
        let mut read = rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text(
            long.clone(),
        )]);
        read.structured_content = Some(serde_json::json!({"content": long, "n": 20}));
        for (id, result) in [
            (RequestId::Number(-9), &result),
            (RequestId::String("a\"b".into()), &result),
            (RequestId::Number(4), &read),
        ] {
            let mut fast = b"before\n".to_vec();
            assert!(write_text_result(&mut fast, &id, result), "a text result");
            let fast = fast.split_off(b"before\n".len());
            let mut slow = ServerResult::from(CallToolResponse::from(result.clone()));
            slow.strip_result_type_for_legacy_peer();
            let mut slow = serde_json::to_vec(&ServerJsonRpcMessage::response(slow, id)).unwrap();
            slow.push(b'\n');
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(slow).unwrap()
            );
        }
        let error = encode(
            RequestId::String("s".into()),
            Err(ErrorData::invalid_params("bad", None)),
        );
        let value: Value = serde_json::from_slice(&error).unwrap();
        assert_eq!(value["id"], "s");
        assert_eq!(value["error"]["code"], -32602);
    }
}
