"""Interop guard: the official Python MCP SDK can drive `arbiter serve` over stdio.

Checks the handshake, the advertised file tools (schemas, annotations) and a
write -> read -> search/replace round trip, plus workspace confinement and
missing-file errors, as a third-party client sees them. Written for the `mcp`
2.x API (snake_case model fields).

Env: ARBITER_BIN (the server binary), ARBITER_WORKSPACE (a scratch directory).
Run: python test_stdio_sdk.py   -> prints "python-sdk: N passed, 0 failed".
"""

import asyncio
import os
import re
import sys
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

import checks
from checks import check, text_of


async def run(binary, workspace):
    # The SDK hands the server only a minimal environment; keep RUST_LOG for debugging.
    env = {"RUST_LOG": os.environ["RUST_LOG"]} if "RUST_LOG" in os.environ else None
    params = StdioServerParameters(command=binary, args=["serve", "--workspace", str(workspace)], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        init = await asyncio.wait_for(session.initialize(), 30)
        check("initialize serverInfo.name", init.server_info.name == "arbiter", f"got {init.server_info!r}")

        tools = {t.name: t for t in (await session.list_tools()).tools}
        for name in ("file_read", "file_write", "file_search_replace"):
            tool = tools.get(name)
            check(f"tools/list has {name}", tool is not None, f"tools: {sorted(tools)}")
            check(f"{name} inputSchema", bool(tool.input_schema), f"got {tool.input_schema!r}")
            check(f"{name} outputSchema", bool(tool.output_schema), f"got {tool.output_schema!r}")
        read_ann = tools["file_read"].annotations
        check("file_read readOnlyHint", read_ann is not None and read_ann.read_only_hint is True, f"got {read_ann!r}")
        write_ann = tools["file_write"].annotations
        check("file_write not readOnly", write_ann is None or not write_ann.read_only_hint, f"got {write_ann!r}")

        # The SDK validates structuredContent against each tool's outputSchema on success.
        async def call(name, args):
            try:
                return await asyncio.wait_for(session.call_tool(name, args), 30)
            except Exception as e:
                raise AssertionError(f"{name} {args}: call raised {e!r}") from e

        res = await call("file_write", {"file_path": "hello.txt", "contents": "one\ntwo\n"})
        check("file_write ok", res.is_error is not True, text_of(res))
        sc = res.structured_content or {}
        check("file_write path", sc.get("path") == "hello.txt", f"structuredContent={sc!r}")

        res = await call("file_read", {"target_file": "hello.txt"})
        check("file_read ok", res.is_error is not True, text_of(res))
        sc = res.structured_content or {}
        check("file_read content", "two" in str(sc.get("content", "")), f"structuredContent={sc!r}")
        text = text_of(res)
        check("file_read line numbers", re.search(r"1\D{0,8}one", text), f"text={text!r}")

        args = {"file_path": "hello.txt", "old_string": "two", "new_string": "$& 2"}
        res = await call("file_search_replace", args)
        check("file_search_replace ok", res.is_error is not True, text_of(res))
        sc = res.structured_content or {}
        check("file_search_replace replacements", sc.get("replacements") == 1, f"structuredContent={sc!r}")
        on_disk = (workspace / "hello.txt").read_text()
        check("file_search_replace literal $&", on_disk == "one\n$& 2\n", f"file on disk={on_disk!r}")

        res = await call("file_read", {"target_file": "../outside.txt"})
        text = text_of(res)
        check("file_read escape isError", res.is_error is True, f"text={text!r}")
        refusal = ("outside", "escape", "denied", "refuse", "not allowed", "workspace")
        check("file_read escape message", any(w in text.lower() for w in refusal), f"text={text!r}")
        check("file_read escape leaks nothing", "outside-secret" not in text, f"text={text!r}")

        res = await call("file_read", {"target_file": "no-such-file.txt"})
        check("file_read missing isError", res.is_error is True, f"text={text_of(res)!r}")


def main():
    binary = os.environ.get("ARBITER_BIN")
    workspace = os.environ.get("ARBITER_WORKSPACE")
    if not binary or not workspace:
        print("python-sdk: set ARBITER_BIN and ARBITER_WORKSPACE", file=sys.stderr)
        return 2
    return checks.run_main("python-sdk", run(binary, Path(workspace).resolve()))


if __name__ == "__main__":
    sys.exit(main())
