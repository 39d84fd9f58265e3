//! The hot-code ordering's link step (tools/link/cc, `hot_symbols.py resolve`):
//! list names kept without ThinLTO's `.llvm.<hash>` suffix must reach lld as the
//! names the objects being linked really define. A real C object built by `cc`
//! stands in for rustc's codegen units; a recording script stands in for `cc` at
//! the final step so the test can read what the linker would have been given.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An object defining `hot.llvm.111`, `hot.llvm.222` (one local function
/// promoted in two units), `plain` and `cold.llvm.333`.
fn object(dir: &Path) -> PathBuf {
    let src = dir.join("units.c");
    std::fs::write(
        &src,
        "void hot_a(void) __asm__(\"hot.llvm.111\");\n\
         void hot_a(void) {}\n\
         void hot_b(void) __asm__(\"hot.llvm.222\");\n\
         void hot_b(void) {}\n\
         void plain(void) {}\n\
         void cold(void) __asm__(\"cold.llvm.333\");\n\
         void cold(void) {}\n",
    )
    .unwrap();
    let obj = dir.join("units.o");
    let status = Command::new("cc")
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .expect("cc");
    assert!(status.success());
    obj
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn resolve_expands_suffix_free_names_to_the_objects_variants() {
    let dir = tempfile::tempdir().unwrap();
    let obj = object(dir.path());
    let list = dir.path().join("hot.txt");
    // A stale suffixed name matches by its stem; duplicates are printed once.
    std::fs::write(&list, "plain\nhot\nmissing\nhot.llvm.999\n").unwrap();
    let out = Command::new("python3")
        .arg(root().join("tools/bench/hot_symbols.py"))
        .arg("resolve")
        .arg(&list)
        .args(["-o", "out"])
        .arg(&obj)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        lines(&text),
        ["plain", "hot", "hot.llvm.111", "hot.llvm.222", "missing"]
    );
}

#[test]
fn the_link_wrapper_rewrites_only_the_ordering_file() {
    let dir = tempfile::tempdir().unwrap();
    let obj = object(dir.path());
    let list = dir.path().join("hot.txt");
    std::fs::write(&list, "hot\n").unwrap();
    // The stand-in for `cc`: records its arguments and the ordering file it got.
    let record = dir.path().join("record");
    let fake_cc = dir.path().join("fake-cc");
    std::fs::write(
        &fake_cc,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do echo \"arg $a\"; case $a in \
             -Wl,--symbol-ordering-file=*) sed 's/^/list /' \"${{a#*=}}\";; esac; done > {}\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &fake_cc,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ordering = format!("-Wl,--symbol-ordering-file={}", list.display());
    let status = Command::new(root().join("tools/link/cc"))
        .env("ARBITER_CC", &fake_cc)
        .arg(&obj)
        .arg(&ordering)
        .args(["-o", "prog"])
        .status()
        .unwrap();
    assert!(status.success());
    let recorded = std::fs::read_to_string(&record).unwrap();
    let recorded = lines(&recorded);
    assert_eq!(recorded[0], format!("arg {}", obj.display()));
    assert!(
        recorded[1].starts_with("arg -Wl,--symbol-ordering-file=") && recorded[1] != ordering,
        "{recorded:?}"
    );
    assert_eq!(
        recorded[2..],
        [
            "list hot",
            "list hot.llvm.111",
            "list hot.llvm.222",
            "arg -o",
            "arg prog"
        ]
    );

    // Any other link is passed through untouched.
    let status = Command::new(root().join("tools/link/cc"))
        .env("ARBITER_CC", &fake_cc)
        .args(["-o", "prog", "-Wl,--as-needed"])
        .status()
        .unwrap();
    assert!(status.success());
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        lines(&recorded),
        ["arg -o", "arg prog", "arg -Wl,--as-needed"]
    );
}
