"""Interop guard: the official Python MCP SDK can drive `arbiter serve --http`
over both HTTP transports: streamable HTTP at /mcp and the legacy HTTP+SSE
transport at /sse (GET /sse + POST /messages).

For each transport, with a bearer token: the handshake, the tool list, a
`file_read` that succeeds and one the server refuses (`isError`). Written for
the `mcp` 2.x API (snake_case model fields, httpx2 clients).

Env: ARBITER_URL (http://HOST:PORT of the server), ARBITER_TOKEN (an agent
token), ARBITER_WORKSPACE (its workspace, holding notes.txt).
Run: python test_http_sdk.py   -> prints "python-sdk-http: N passed, 0 failed".
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


async def exercise(label, session):
    """The same checks over any transport."""
    init = await asyncio.wait_for(session.initialize(), 30)
    check(f"{label}: serverInfo.name", init.server_info.name == "arbiter", f"got {init.server_info!r}")

    tools = {t.name for t in (await asyncio.wait_for(session.list_tools(), 30)).tools}
    check(f"{label}: tools/list has file_read", "file_read" in tools, f"tools: {sorted(tools)}")

    res = await asyncio.wait_for(session.call_tool("file_read", {"target_file": "notes.txt"}), 30)
    check(f"{label}: file_read ok", res.is_error is not True, text_of(res))
    check(f"{label}: file_read content", "hello from http" in text_of(res), text_of(res))

    res = await asyncio.wait_for(session.call_tool("file_read", {"target_file": "../outside.txt"}), 30)
    text = text_of(res)
    check(f"{label}: refused read isError", res.is_error is True, f"text={text!r}")
    check(f"{label}: refused read leaks nothing", "outside-secret" not in text, f"text={text!r}")


async def run(base, token):
    headers = {"Authorization": f"Bearer {token}"}

    async with sse_client(f"{base}/sse", headers=headers) as (read, write):
        async with ClientSession(read, write) as session:
            await exercise("sse", session)

    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(f"{base}/mcp", http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await exercise("streamable-http", session)

    # Without a token the SSE stream is refused before it opens.
    refused = False
    try:
        async with sse_client(f"{base}/sse") as (read, write):
            async with ClientSession(read, write) as session:
                await asyncio.wait_for(session.initialize(), 10)
    except BaseException as e:  # the SDK may wrap the HTTP error in an ExceptionGroup
        refused = "401" in repr(e) or "Unauthorized" in repr(e)
        if not refused:
            raise
    check("sse without a token: 401", refused)


def main():
    base = os.environ.get("ARBITER_URL")
    token = os.environ.get("ARBITER_TOKEN")
    if not base or not token:
        print("python-sdk-http: set ARBITER_URL and ARBITER_TOKEN", file=sys.stderr)
        return 2
    return checks.run_main("python-sdk-http", run(base, token))


if __name__ == "__main__":
    sys.exit(main())
