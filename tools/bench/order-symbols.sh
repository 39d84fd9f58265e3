#!/usr/bin/env bash
# Regenerates tools/bench/hot-symbols.txt, the functions the stdio hot path runs,
# which build.rs hands to lld so release links place them together (README.md,
# "Hot-code ordering"). Needs python3, readelf and a C compiler. Takes two
# release builds (~15 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
work=$target/order-symbols
rm -rf "$work" && mkdir -p "$work"
work=$(cd "$work" && pwd)

# 1. The current release binary and its link map (build.rs adds -Map for this).
#    arbiter is built on its own, as `cargo build --release` does: building it
#    in one invocation with other packages unifies dependency features
#    differently, which changes the hashes in every symbol name.
ARBITER_LINK_MAP=$work/arbiter.map cargo build --release -p arbiter
cargo build --release -p arbiter-bench
cp "$target/release/arbiter" "$work/arbiter"

# 2. A copy with an int3 at every function entry, run through the LD_PRELOAD
#    tracer, which logs each function the first time it runs, and again after the
#    server drops its start-up pages (src/memory.rs): those come first in the list.
cc -O2 -shared -fPIC -o "$work/entrytrace.so" tools/bench/entrytrace.c
python3 tools/bench/hot_symbols.py patch "$work/arbiter" "$work/arbiter.map" "$work/arbiter.patched"
cat > "$work/traced" <<WRAP
#!/bin/sh
ENTRYTRACE_OUT=$work/entries.txt ENTRYTRACE_ORIG=$work/arbiter \
LD_PRELOAD=$work/entrytrace.so exec $work/arbiter.patched "\$@"
WRAP
chmod +x "$work/traced"

# 3. The workload: what an MCP host does on connecting (tools/list), then the
#    benchmark's start-ups, reads, writes, edits, pipelined reads and 10,000 calls.
mkdir -p "$work/ws"
printf '%s\n' \
  '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"order-symbols","version":"0"}}}' \
  '{"jsonrpc":"2.0","method":"notifications/initialized"}' \
  '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' \
  '{"jsonrpc":"2.0","id":3,"method":"ping"}' \
  | "$work/traced" serve --workspace "$work/ws" > /dev/null
"$target/release/arbiter-bench" --arbiter "$work/traced" --starts 3 --iterations 1000 --pipelined 2000 > /dev/null

# 4. The list, then a release build that uses it.
python3 tools/bench/hot_symbols.py order "$work/arbiter" "$work/arbiter.map" "$work/entries.txt" \
  > tools/bench/hot-symbols.txt
cargo build --release -p arbiter
echo "tools/bench/hot-symbols.txt: $(wc -l < tools/bench/hot-symbols.txt) functions" >&2
