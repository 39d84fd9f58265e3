#!/usr/bin/env bash
# Using arbiter from a CI job without an MCP client: each `arbiter call` goes
# through the same policy and audit path as a call from an agent, and its exit
# status says what happened (0 done, 1 refused or failed, 2 bad usage).
set -euo pipefail
WS="${1:-.}"

arbiter --workspace "$WS" call file_search_replace \
  '{"file_path":"VERSION","old_string":"0.1.0","new_string":"0.1.1"}' > /dev/null

if ! arbiter --workspace "$WS" call file_read '{"target_file":".env"}' > refused.json; then
  echo "reading .env was refused, as the policy says:"
  jq -r '.content[0].text' refused.json
fi

# The trail of what this job did, and a check that nobody rewrote it.
arbiter --workspace "$WS" audit tail -n 5
arbiter --workspace "$WS" audit verify
