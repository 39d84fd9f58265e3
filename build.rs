//! Release links of the `arbiter` binary place the code the stdio hot path runs
//! together (lld's `--symbol-ordering-file`), so the kernel maps fewer pages of
//! cold code beside it: see tools/bench/README.md, "Hot-code ordering" (issue 3's
//! RSS target). Debug and test builds are untouched.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    // rust-lld is the default linker only on this target; other linkers lack the flag.
    let lld = std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    // A build that picks its own linker may not be linking with lld: no flags then.
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let own_linker = std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
        || [
            "linker",
            "link-self-contained",
            "fuse-ld",
            "linker-features",
        ]
        .iter()
        .any(|f| flags.contains(f));
    if !release || !lld || own_linker {
        return;
    }
    // tools/bench/order-symbols.sh asks for the link map it maps traced pages with.
    println!("cargo::rerun-if-env-changed=ARBITER_LINK_MAP");
    if let Ok(map) = std::env::var("ARBITER_LINK_MAP") {
        println!("cargo::rustc-link-arg-bin=arbiter=-Wl,-Map={map}");
    }
    let list = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/bench/hot-symbols.txt");
    println!("cargo::rerun-if-changed={list}");
    if std::path::Path::new(list).exists() {
        println!("cargo::rustc-link-arg-bin=arbiter=-Wl,--symbol-ordering-file={list}");
        // Names of code changed since the list was made are skipped quietly; names
        // kept without ThinLTO's `.llvm.<hash>` suffix are matched to this build's
        // by tools/link/cc (the linker .cargo/config.toml names).
        println!("cargo::rustc-link-arg-bin=arbiter=-Wl,--no-warn-symbol-ordering");
    }
}
