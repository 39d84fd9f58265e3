"""Tenant isolation through the official Python MCP SDK: two tenants of one
`arbiter serve --http`, each with its own token and workspace, try to reach
each other's files, tasks, overrides, terminal sessions and MCP sessions.
Tenant A speaks streamable HTTP, tenant B the legacy SSE transport.

Env: ARBITER_URL, ARBITER_TOKEN_A / ARBITER_TOKEN_B (agent tokens of tenants
acme and beta), ARBITER_WORKSPACE_A / ARBITER_WORKSPACE_B (their workspaces,
each holding src/secret.txt with A-SECRET / B-SECRET).
Run: python test_tenants_sdk.py  -> prints "python-sdk-tenants: N passed, 0 failed".
"""

import asyncio
import os
import sys

from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

import checks
from checks import check, text_of


async def call(session, tool, args):
    res = await asyncio.wait_for(session.call_tool(tool, args), 30)
    return res, text_of(res)


async def ok(session, tool, args):
    res, text = await call(session, tool, args)
    check(f"{tool} {args} succeeds", res.is_error is not True, text)
    return res.structured_content or {}


async def refused(label, session, tool, args, must_not_contain):
    res, text = await call(session, tool, args)
    check(f"{label}: isError", res.is_error is True, text)
    for secret in must_not_contain:
        check(f"{label}: leaks nothing", secret not in text, text)
    return text


async def attempts(a, b, ws_b, base, token_a):
    # Each reads its own secret.
    _, text = await call(a, "file_read", {"target_file": "src/secret.txt"})
    check("A reads its own file", "A-SECRET" in text, text)
    _, text = await call(b, "file_read", {"target_file": "src/secret.txt"})
    check("B reads its own file", "B-SECRET" in text, text)

    # A cannot read B's files by any path.
    b_secret = os.path.join(ws_b, "src", "secret.txt")
    for path in [b_secret, "../" + os.path.basename(ws_b) + "/src/secret.txt", "/proc/self/root" + b_secret]:
        await refused(f"A reads {path}", a, "file_read", {"target_file": path}, ["B-SECRET"])
    for tool, args in [
        ("grep_search", {"query": "SECRET"}),
        ("list_dir", {"relative_workspace_path": ".", "depth": 5}),
        ("file_search", {"query": "secret"}),
    ]:
        _, text = await call(a, tool, args)
        check(f"A's {tool} shows nothing of B", "B-SECRET" not in text, text)
    res, text = await call(a, "run_terminal_cmd", {"command": f"cat {b_secret}"})
    check("A's command cannot read B's file", "B-SECRET" not in text + repr(res.structured_content), text)

    # B's task does not exist for A.
    task = await ok(b, "task_submit", {"title": "Fix the login bug", "description": "login fails on empty password"})
    task_id = task["task_id"]
    await refused("A reads B's task", a, "task_status", {"task_id": task_id}, ["login"])
    listed = await ok(a, "task_list", {})
    check("A's task list lacks B's task", task_id not in repr(listed), repr(listed))
    await refused("A cancels B's task", a, "task_cancel", {"task_id": task_id}, [])
    status = await ok(b, "task_status", {"task_id": task_id})
    check("B's task is not cancelled", status.get("state") != "cancelled", repr(status))

    # B's override request does not exist for A.
    await refused("B writes .env", b, "file_write", {"file_path": "config/.env", "contents": "X=1\n"}, [])
    request = await ok(b, "override_request", {
        "rule_id": "PATH-002", "reason": "generated dev settings", "scope": {"paths": ["config/.env"]}})
    await refused("A reads B's override", a, "override_status", {"override_id": request["override_id"]},
                  ["generated dev settings"])

    # B's terminal session does not exist for A.
    term = await ok(b, "terminal_create_session", {})
    sid = term["session_id"]
    await ok(b, "terminal_send_input", {"session_id": sid, "data": "echo B-TERMINAL\n"})
    await refused("A reads B's terminal", a, "terminal_read_output", {"session_id": sid}, ["B-TERMINAL"])
    await refused("A types into B's terminal", a, "terminal_send_input",
                  {"session_id": sid, "data": "echo A-WAS-HERE\n"}, [])
    await refused("A closes B's terminal", a, "terminal_close_session", {"session_id": sid}, [])
    await ok(b, "terminal_close_session", {"session_id": sid})

    # A's token cannot join an MCP session it did not make: open one with A's
    # token, then present its id with B's token (and A's token with a made-up id).
    token_b = os.environ["ARBITER_TOKEN_B"]
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
    async with create_mcp_http_client() as http:
        r = await http.post(f"{base}/mcp", json=init, headers={**headers, "Authorization": f"Bearer {token_a}"})
        check("A opens a raw session", r.status_code == 200, f"{r.status_code} {r.text}")
        session_id = r.headers.get("mcp-session-id")
        check("A's session has an id", bool(session_id), repr(r.headers))
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        r = await http.post(f"{base}/mcp", json=ping, headers={
            **headers, "Authorization": f"Bearer {token_b}", "Mcp-Session-Id": session_id})
        check("B cannot use A's session id", r.status_code == 404, f"{r.status_code} {r.text}")


async def run(base, token_a, token_b, ws_b):
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token_a}"}) as http:
        async with streamable_http_client(f"{base}/mcp", http_client=http) as (ra, wa, *_):
            async with ClientSession(ra, wa) as a:
                await asyncio.wait_for(a.initialize(), 30)
                async with sse_client(f"{base}/sse", headers={"Authorization": f"Bearer {token_b}"}) as (rb, wb):
                    async with ClientSession(rb, wb) as b:
                        await asyncio.wait_for(b.initialize(), 30)
                        await attempts(a, b, ws_b, base, token_a)


def main():
    env = {k: os.environ.get(k) for k in ["ARBITER_URL", "ARBITER_TOKEN_A", "ARBITER_TOKEN_B", "ARBITER_WORKSPACE_B"]}
    if not all(env.values()):
        print(f"python-sdk-tenants: set {', '.join(env)}", file=sys.stderr)
        return 2
    return checks.run_main("python-sdk-tenants", run(env["ARBITER_URL"], env["ARBITER_TOKEN_A"], env["ARBITER_TOKEN_B"], env["ARBITER_WORKSPACE_B"]))


if __name__ == "__main__":
    sys.exit(main())
