//! Interop guard: the official Python MCP SDK (PyPI `mcp`, pinned below) must be able to
//! drive the real `arbiter serve` binary over stdio. The checks live in
//! `tests/python/test_stdio_sdk.py`; this test provisions a cached virtualenv under
//! `target/py-venv`, runs the script against a fresh workspace, and fails with the
//! script's output (or pip's) when anything goes wrong. `tests/python/test_http_sdk.py`
//! does the same over HTTP: streamable HTTP at `/mcp` and the legacy SSE transport.

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::HttpServer;

/// The `mcp` release the script is written against (2.x API).
const MCP_PIN: &str = "2.3.0";
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// `target/` of this build, derived from the binary path (honours CARGO_TARGET_DIR).
fn target_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_arbiter"));
    exe.parent()
        .and_then(Path::parent)
        .expect("binary lives in target/<profile>/")
        .to_path_buf()
}

fn venv_ok(venv: &Path) -> bool {
    let check =
        format!("import mcp, importlib.metadata as m; assert m.version('mcp') == '{MCP_PIN}'");
    Command::new(venv.join("bin/python"))
        .args(["-c", &check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Returns `target/py-venv` with `mcp==MCP_PIN` importable. The venv is built in a
/// private directory and renamed into place, so parallel runs never share a half-built one.
fn ensure_venv() -> PathBuf {
    let venv = target_dir().join("py-venv");
    if venv_ok(&venv) {
        return venv;
    }
    let _ = fs::remove_dir_all(&venv); // stale pin or broken leftovers
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let tmp = target_dir().join(format!("py-venv.tmp-{}-{nanos}", std::process::id()));

    let mut errors = Vec::new();
    let created = ["python3", "/usr/bin/python3"].iter().any(|py| {
        let _ = fs::remove_dir_all(&tmp);
        run(
            Command::new(py).args(["-m", "venv"]).arg(&tmp),
            &format!("{py} -m venv"),
        )
        .map_err(|e| errors.push(e))
        .is_ok()
    });
    assert!(
        created,
        "could not create a virtualenv:\n{}",
        errors.join("\n")
    );

    let pip = run(
        Command::new(tmp.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("mcp=={MCP_PIN}"),
        ]),
        &format!("pip install mcp=={MCP_PIN}"),
    );
    if let Err(e) = pip {
        let _ = fs::remove_dir_all(&tmp);
        panic!("{e}");
    }
    // Losing the race to a parallel run is fine: its venv is just as good.
    if fs::rename(&tmp, &venv).is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    assert!(
        venv_ok(&venv),
        "{} has no working mcp=={MCP_PIN} after install",
        venv.display()
    );
    venv
}

/// Run a script of `tests/python/` with the venv's python and `env`; print its
/// output when it passes, panic with it when it fails or times out.
fn run_script(venv: &Path, script: &str, dir: &Path, env: &[(&str, &std::ffi::OsStr)]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut command = Command::new(venv.join("bin/python"));
    command
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start the python SDK script");
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(100));
    };

    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        Some(s) if s.success() => print!("{stdout}"),
        Some(s) => panic!(
            "python SDK script failed ({s})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
        None => panic!(
            "python SDK script timed out after {SCRIPT_TIMEOUT:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
}

/// A workspace inside a tempdir, next to a file the server must refuse to read.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let workspace = root.path().join("ws");
    fs::create_dir(&workspace).unwrap();
    fs::write(root.path().join("outside.txt"), "outside-secret\n").unwrap();
    (root, workspace)
}

#[test]
fn python_mcp_sdk_drives_stdio_server() {
    let venv = ensure_venv();
    let (root, workspace) = scratch();
    run_script(
        &venv,
        "test_stdio_sdk.py",
        root.path(),
        &[
            ("ARBITER_BIN", env!("CARGO_BIN_EXE_arbiter").as_ref()),
            ("ARBITER_WORKSPACE", workspace.as_os_str()),
        ],
    );
}

#[test]
fn python_mcp_sdk_drives_streamable_http_and_legacy_sse() {
    let venv = ensure_venv();
    let (root, workspace) = scratch();
    fs::write(workspace.join("notes.txt"), "hello from http\n").unwrap();
    let token = Command::new(env!("CARGO_BIN_EXE_arbiter"))
        .args([
            "token", "create", "--tenant", "default", "--agent", "py-sdk",
        ])
        .arg("--workspace")
        .arg(&workspace)
        .output()
        .expect("arbiter token create");
    assert!(token.status.success(), "token create: {token:?}");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let server = HttpServer::start(&workspace, &[]);
    let base = server.base.clone();
    run_script(
        &venv,
        "test_http_sdk.py",
        root.path(),
        &[
            ("ARBITER_URL", base.as_ref()),
            ("ARBITER_TOKEN", token.as_ref()),
            ("ARBITER_WORKSPACE", workspace.as_os_str()),
        ],
    );
}

/// Run the `arbiter` CLI on `workspace`; returns its stdout, or panics with its stderr.
fn cli(workspace: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_arbiter"))
        .args(args)
        .arg("--workspace")
        .arg(workspace)
        .output()
        .expect("run arbiter");
    assert!(out.status.success(), "arbiter {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn python_mcp_sdk_two_tenants_cannot_reach_each_other() {
    two_tenants_try_each_others_data(&[]);
}

/// The same on PostgreSQL, where row-level security stands behind the
/// server's own checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_mcp_sdk_two_tenants_cannot_reach_each_other_on_postgres() {
    let Some(db) = common::pg::database().await else {
        return;
    };
    tokio::task::spawn_blocking(move || two_tenants_try_each_others_data(&db.args()))
        .await
        .unwrap();
}

/// Tenants acme and beta, each with a workspace and a token, served by one
/// `serve --http` (with `db_args`); `test_tenants_sdk.py` has each try the
/// other's files, tasks, overrides, terminal sessions and MCP sessions.
fn two_tenants_try_each_others_data(db_args: &[&str]) {
    let venv = ensure_venv();
    let (root, served) = scratch();
    let (ws_a, ws_b) = (root.path().join("acme"), root.path().join("beta"));
    for (dir, secret) in [(&ws_a, "A-SECRET"), (&ws_b, "B-SECRET")] {
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::write(dir.join("src/secret.txt"), format!("{secret}\n")).unwrap();
    }
    let cli = |args: &[&str]| cli(&served, &[db_args, args].concat());
    for (name, dir) in [("acme", &ws_a), ("beta", &ws_b)] {
        cli(&[
            "tenant",
            "add",
            name,
            "--tenant-workspace",
            dir.to_str().unwrap(),
        ]);
    }
    let token = |tenant: &str| {
        cli(&["token", "create", "--tenant", tenant, "--agent", "py"])
            .trim()
            .to_string()
    };
    let (token_a, token_b) = (token("acme"), token("beta"));
    let server = HttpServer::start(&served, db_args);
    let base = server.base.clone();
    run_script(
        &venv,
        "test_tenants_sdk.py",
        root.path(),
        &[
            ("ARBITER_URL", base.as_ref()),
            ("ARBITER_TOKEN_A", token_a.as_ref()),
            ("ARBITER_TOKEN_B", token_b.as_ref()),
            ("ARBITER_WORKSPACE_B", ws_b.as_os_str()),
        ],
    );
}
