#!/usr/bin/env python3
"""Hot-code ordering of the arbiter binary (issue 3's RSS target): see README.md.

  hot_symbols.py patch BINARY MAP OUT
      Copy BINARY to OUT with an int3 at the entry of every function in .text
      (the input sections of lld's link map MAP); entrytrace.c then logs each
      function the first time it runs.
  hot_symbols.py order BINARY MAP TRACE...
      Print the functions whose entries the TRACE files list (`PID OFFSET` lines,
      file offsets in hex; `PID mark` where that server dropped its start-up
      pages), as an lld --symbol-ordering-file: those entered after a mark
      first, then the rest, each part in address order; without ThinLTO's
      `.llvm.<hash>` suffixes (they change with any edit to their codegen unit).
  hot_symbols.py resolve LIST LINKER-ARGS...
      Print LIST with each name matched against the symbols the object files
      among LINKER-ARGS define: a name without its suffix stands for every
      `.llvm.<hash>` variant of it (tools/link/cc, at release links).
"""
import os
import re
import shutil
import sys
import subprocess

SECTION = re.compile(r"\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+ ( *)(\S.*)$")
# Rust and C code are built with one section per function, named after its
# (mangled) symbol; the map itself prints symbols demangled.
# ThinLTO renames a local function it exports from its module `NAME.llvm.<hash>`.
PROMOTED = re.compile(r"\.llvm\.\d+$")
FUNCTION = re.compile(r":\(\.text(?:\.(?:unlikely|hot|startup|exit|split))?\.([^)]+)\)$")


def code_segment(binary):
    """(file offset, vaddr, size) of the executable LOAD segment."""
    out = subprocess.run(["readelf", "-lW", binary], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and "E" in f[6:-1]:
            return int(f[1], 16), int(f[2], 16), int(f[4], 16)
    sys.exit(f"{binary}: no executable segment")


def functions(link_map):
    """{vaddr: (size, symbol)} of the one-function input sections of .text."""
    funcs, in_text = {}, False
    for line in open(link_map, encoding="utf-8", errors="replace"):
        m = SECTION.match(line)
        if not m:
            continue
        depth = len(m.group(3)) // 8
        if depth == 0:
            in_text = m.group(4) == ".text"
        elif depth == 1 and in_text:
            f = FUNCTION.search(m.group(4))
            size = int(m.group(2), 16)
            if f and size:
                funcs[int(m.group(1), 16)] = (size, f.group(1))
    return funcs


def patch(binary, link_map, out):
    foff, vaddr, size = code_segment(binary)
    data = bytearray(open(binary, "rb").read())
    funcs = functions(link_map)
    for v in funcs:
        if vaddr <= v < vaddr + size:
            data[v - vaddr + foff] = 0xCC
    open(out, "wb").write(data)
    shutil.copymode(binary, out)
    print(f"{len(funcs)} function entries patched", file=sys.stderr)


def order(binary, link_map, traces):
    """The traced functions, those the running server entered (after its
    process's `mark`) first: after its start the server drops the code pages
    only the start used (src/memory.rs), and what comes back is then one run."""
    foff, vaddr, _ = code_segment(binary)
    funcs = functions(link_map)
    running, startup, marked = set(), set(), set()
    for t in traces:
        for line in open(t):
            pid, _, entry = line.strip().partition(" ")
            if entry == "mark":
                marked.add(pid)
                continue
            v = int(entry, 16) - foff + vaddr
            if v in funcs:
                (running if pid in marked else startup).add(v)
    startup -= running
    for v in sorted(running) + sorted(startup):
        print(PROMOTED.sub("", funcs[v][1]))
    for name, hit in (("running", running), ("start-up only", startup)):
        total = sum(funcs[v][0] for v in hit)
        print(f"{name}: {len(hit)} functions, {total / 1048576:.2f} MiB of code", file=sys.stderr)


def resolve(listing, linker_args):
    """The ordering file with suffix-free names expanded to the objects' symbols."""
    objects = [a for a in linker_args if a.endswith(".o") and os.path.isfile(a)]
    variants = {}
    if objects:
        out = subprocess.run(["nm", "--defined-only", "--format=just-symbols", *objects],
                             check=True, capture_output=True, text=True).stdout
        for name in out.split():
            stem = PROMOTED.sub("", name)
            if stem != name:
                variants.setdefault(stem, []).append(name)
    seen = set()
    for line in open(listing):
        name = PROMOTED.sub("", line.strip())
        for n in [name] + variants.get(name, []):
            if n and n not in seen:
                seen.add(n)
                print(n)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "patch":
        patch(*sys.argv[2:])
    elif len(sys.argv) >= 5 and sys.argv[1] == "order":
        order(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "resolve":
        resolve(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
