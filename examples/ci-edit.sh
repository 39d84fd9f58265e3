#!/usr/bin/env bash
# Using arbiter from a CI job without an MCP client: each `arbiter call` goes
# through the same policy and audit path as a call from an agent, and its exit
# status says what happened (0 done, 1 refused or failed, 2 bad usage). A
# refused call fails the job (set -e), unless the script expects it.
set -euo pipefail
WS="${1:-.}"

# Read and edit under the policy.
arbiter --workspace "$WS" call file_read '{"target_file":"VERSION"}' > /dev/null
arbiter --workspace "$WS" call file_search_replace \
  '{"file_path":"VERSION","old_string":"0.1.0","new_string":"0.1.1"}' > /dev/null

# Run the tests in the sandbox; a non-zero exit of the tests fails the job too.
arbiter --workspace "$WS" call run_terminal_cmd '{"command":"sh test.sh","timeout_ms":120000}' > run.json
grep -q '"exit_code": 0' run.json || { echo "the tests failed:"; cat run.json; exit 1; }

# A call the policy refuses exits 1; here that is expected.
if arbiter --workspace "$WS" call file_read '{"target_file":".env"}' > refused.json; then
  echo "reading .env should have been refused" >&2
  exit 1
fi
echo "reading .env was refused, as the policy says"

# The trail of what this job did, and a check that nobody rewrote it.
arbiter --workspace "$WS" audit tail -n 5
arbiter --workspace "$WS" audit verify
