//! The sandbox plan: everything the sandbox helper (`arbiter __sandbox`, see
//! [`super::sandbox`]) needs to set up one command, as plain data. The server
//! builds it ([`build_plan`], a pure function of the policy's sandbox
//! settings, the analysed command and facts about the machine gathered
//! beforehand by [`HostFacts::gather`]) and hands it to the helper as JSON;
//! the helper only carries it out. So what a command will get is decided in
//! one place, and can be tested without starting a process.
//!
//! The layers and why each is there: `src/exec/README.md`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::command::CommandLine;
use crate::policy::sandbox::{SandboxMode, SandboxSettings};

/// Directories every command may read and execute from.
pub const SYSTEM_READ_PATHS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc", "/sys",
];
/// Device files every command may read and write (and ioctl).
pub const DEVICE_PATHS: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];
/// Private shared memory (a fresh tmpfs when the mount namespace is there).
pub const SHM_DIR: &str = "/dev/shm";
/// Pids below this are not handed out again once a PID namespace's counter
/// has wrapped (the kernel's RESERVED_PIDS), so a namespace whose `pid_max`
/// is `n + PID_RESERVED` always has room for `n` processes.
pub const PID_RESERVED: u64 = 300;
/// Size of the private `/dev/shm`.
pub const SHM_SIZE: &str = "size=256m,mode=1777";

/// One command's sandbox, as the helper carries it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPlan {
    pub argv: Vec<String>,
    /// The complete environment of the command.
    pub env: Vec<(String, String)>,
    /// Where `argv[0]` is looked up when it has no `/` (absolute directories only).
    pub search_path: Vec<PathBuf>,
    /// Absolute working directory (inside the workspace).
    pub cwd: PathBuf,
    /// Refuse to run when a layer is missing (SANDBOX-001), else note it and go on.
    pub strict: bool,
    /// The server: the helper stops at once if it is no longer its parent.
    pub server_pid: u32,
    /// The pids cgroup to join before anything else (a root server).
    pub cgroup: Option<PathBuf>,
    /// `pid_max` to set in the new PID namespace (a root server without a cgroup).
    #[serde(default)]
    pub pid_max: Option<u64>,
    /// An empty network namespace to join instead of creating one (a root
    /// server's shared one, as `/proc/<server>/fd/<n>`).
    #[serde(default)]
    pub join_net: Option<PathBuf>,
    pub namespaces: Namespaces,
    /// In the new mount namespace, in order.
    pub mounts: Vec<Mount>,
    pub landlock: LandlockPlan,
    pub seccomp: SeccompPlan,
    pub rlimits: Vec<Rlimit>,
    /// An interactive session: the helper's stdout is a terminal (the slave
    /// side of a PTY the server opened); the command gets it as stdin too,
    /// and as its controlling terminal (see `src/exec/README.md`, *Sessions*).
    #[serde(default)]
    pub tty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// A user namespace (a server that is not root needs one for the others).
    pub user: bool,
    pub pid: bool,
    /// No network: a fresh network namespace with no interface up.
    pub net: bool,
    pub mount: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mount {
    /// A fresh `proc` for the new PID namespace, on `/proc`.
    Proc,
    /// Replace a directory with an empty read-only tmpfs, or a file with an
    /// empty read-only one; `reveal` files (outside paths resolved before
    /// hiding) are bound back inside it.
    Hide {
        path: PathBuf,
        dir: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reveal: Vec<PathBuf>,
    },
    /// A fresh writable tmpfs (private `/dev/shm`).
    Tmpfs { path: PathBuf, options: String },
    /// Bind a directory onto itself: it can no longer be renamed or removed.
    Pin { path: PathBuf },
    /// Bind onto itself read-only.
    ReadOnly { path: PathBuf },
}

impl Mount {
    pub fn path(&self) -> &Path {
        match self {
            Mount::Proc => Path::new("/proc"),
            Mount::Hide { path, .. }
            | Mount::Tmpfs { path, .. }
            | Mount::Pin { path }
            | Mount::ReadOnly { path } => path,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPlan {
    /// Read and execute beneath these.
    pub read: Vec<PathBuf>,
    /// Everything but creating device nodes beneath these.
    pub write: Vec<PathBuf>,
    /// Read, write and ioctl on these device files.
    pub devices: Vec<PathBuf>,
    /// List only (so `/dev` can be listed without its devices being opened).
    pub list: Vec<PathBuf>,
    /// Deny every TCP bind and connect (when the command has no network).
    pub deny_tcp: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompPlan {
    /// Allow AF_INET/AF_INET6 sockets.
    pub allow_inet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RlimitKind {
    AddressSpace,
    FileSize,
    Cpu,
    OpenFiles,
    Core,
    Processes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub kind: RlimitKind,
    pub value: u64,
}

/// What the helper tells the server, one JSON object per line on the status socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum Report {
    /// A layer could not be set up (a refusal in strict mode, a note otherwise).
    LayerMissing { layer: String, detail: String },
    /// Something other than a layer failed (working directory, fork).
    SetupFailed { step: String, detail: String },
    /// The program could not be executed.
    ExecFailed {
        errno: i32,
        program: String,
        detail: String,
    },
    /// The command exited with this code.
    Exited { code: i32 },
    /// The command was terminated by this signal.
    Signaled { signal: i32 },
}

/// Facts about the machine and the workspace that the plan depends on,
/// gathered (with I/O) right before building it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub is_root: bool,
    pub server_pid: u32,
    /// The kernel keeps `pid_max` per PID namespace (Linux 6.14+).
    pub pid_max_per_namespace: bool,
    /// The server's empty network namespace, when it has one (root).
    pub offline_netns: Option<PathBuf>,
    /// The server user's home, for `~/` in the policy.
    pub home: Option<PathBuf>,
    /// `<workspace>/.arbiter` exists as a real directory.
    pub state_dir: bool,
    /// `<workspace>/.git` is a real directory; and its `hooks` and `config`.
    pub git_dir: bool,
    pub git_hooks: bool,
    pub git_config: bool,
    /// `<workspace>/.caws` and `.caws/waivers` are real directories: the
    /// waiver files are a person's record, so commands see them read-only.
    pub caws_waivers: bool,
    /// Hide paths that exist, resolved (`/var/run` -> `/run`), with whether each is a directory.
    pub hide: Vec<(PathBuf, bool)>,
    /// The real file behind `/etc/resolv.conf`.
    pub resolv_conf: Option<PathBuf>,
    /// Values of the server's environment the plan may copy: `LANG` and `env.pass`.
    pub server_env: Vec<(String, String)>,
}

impl HostFacts {
    /// Look at the machine. `workspace` is canonical.
    pub fn gather(workspace: &Path, settings: &SandboxSettings) -> Self {
        let is_dir = |p: &Path| p.symlink_metadata().is_ok_and(|m| m.is_dir());
        let is_file = |p: &Path| p.symlink_metadata().is_ok_and(|m| m.is_file());
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|h| h.is_absolute());
        let git = workspace.join(".git");
        let git_dir = is_dir(&git);
        let mut hide = Vec::new();
        for p in &settings.section.hide_paths {
            let Some(p) = expand_home(p, home.as_deref()) else {
                continue;
            };
            if let Ok(real) = std::fs::canonicalize(&p)
                && let Ok(meta) = real.metadata()
                && !hide.iter().any(|(h, _)| h == &real)
            {
                hide.push((real, meta.is_dir()));
            }
        }
        let mut server_env = Vec::new();
        for name in
            std::iter::once("LANG").chain(settings.section.env.pass.iter().map(|s| s.as_str()))
        {
            if let Ok(value) = std::env::var(name) {
                server_env.push((name.to_string(), value));
            }
        }
        Self {
            is_root: rustix::process::geteuid().is_root(),
            server_pid: std::process::id(),
            pid_max_per_namespace: kernel_at_least(6, 14),
            offline_netns: None,
            home,
            state_dir: is_dir(&workspace.join(crate::exec::workspace::STATE_DIR)),
            git_dir,
            git_hooks: git_dir && is_dir(&git.join("hooks")),
            git_config: git_dir && is_file(&git.join("config")),
            caws_waivers: is_dir(&workspace.join(".caws"))
                && is_dir(&workspace.join(crate::overrides::caws::WAIVER_DIR)),
            hide,
            resolv_conf: std::fs::canonicalize("/etc/resolv.conf").ok(),
            server_env,
        }
    }
}

/// The running kernel is this version or newer.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    version >= (major, minor)
}

/// `~/x` under `home`; other paths as they are; `None` for `~/` without a home.
pub fn expand_home(p: &str, home: Option<&Path>) -> Option<PathBuf> {
    match p.strip_prefix("~/") {
        Some(rest) => home.map(|h| h.join(rest)),
        None => Some(PathBuf::from(p)),
    }
}

/// What the plan is built from, besides the policy's settings.
#[derive(Debug, Clone)]
pub struct PlanInputs<'a> {
    pub line: &'a CommandLine,
    pub settings: &'a SandboxSettings,
    /// Whether the policy gives this command the network.
    pub network: bool,
    /// Canonical workspace root.
    pub workspace: &'a Path,
    /// Absolute working directory inside the workspace.
    pub cwd: &'a Path,
    /// The call's private directory (holds `home/` and `tmp/`).
    pub private_dir: &'a Path,
    pub cgroup: Option<&'a Path>,
    pub facts: &'a HostFacts,
}

/// Build the plan. Pure: the same inputs give the same plan.
pub fn build_plan(inputs: &PlanInputs<'_>) -> SandboxPlan {
    let PlanInputs {
        line,
        settings,
        network,
        workspace,
        cwd,
        private_dir,
        cgroup,
        facts,
    } = inputs;
    let section = &settings.section;
    let limits = settings.limits();
    let home = facts.home.as_deref();
    let expand = |list: &[String]| -> Vec<PathBuf> {
        list.iter().filter_map(|p| expand_home(p, home)).collect()
    };
    let private_home = private_dir.join("home");
    let private_tmp = private_dir.join("tmp");

    // The environment: a fixed base, what the policy passes or sets, then the
    // command's own leading assignments (judged by the policy already).
    let search_path: Vec<PathBuf> = expand(&section.path);
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: &str, v: String| {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v));
    };
    set(
        &mut env,
        "PATH",
        search_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    );
    set(&mut env, "HOME", private_home.display().to_string());
    set(&mut env, "TMPDIR", private_tmp.display().to_string());
    set(&mut env, "TERM", "dumb".to_string());
    set(
        &mut env,
        "LANG",
        lookup(&facts.server_env, "LANG").unwrap_or_else(|| "C.UTF-8".to_string()),
    );
    for name in &section.env.pass {
        if let Some(v) = lookup(&facts.server_env, name) {
            set(&mut env, name, v);
        }
    }
    for (name, value) in &section.env.set {
        let value = match value.strip_prefix("~/") {
            Some(_) => match expand_home(value, home) {
                Some(p) => p.display().to_string(),
                None => continue,
            },
            None => value.clone(),
        };
        set(&mut env, name, value);
    }
    let mut search_path = search_path;
    for (name, value) in &line.env {
        if name == "PATH" {
            // As in a shell, `PATH=... cmd` also decides where `cmd` is found.
            search_path = value
                .split(':')
                .filter(|d| d.starts_with('/'))
                .map(PathBuf::from)
                .collect();
        }
        set(&mut env, name, value.clone());
    }

    let namespaces = Namespaces {
        user: !facts.is_root,
        pid: true,
        net: !network,
        mount: true,
    };

    let mut mounts = vec![Mount::Proc];
    for (path, dir) in &facts.hide {
        // Never hide what the command must reach.
        let needed = [*workspace, *private_dir]
            .into_iter()
            .chain(std::iter::once(*cwd));
        if needed.clone().any(|n| n.starts_with(path)) {
            continue;
        }
        let reveal = match &facts.resolv_conf {
            Some(r) if *network && *dir && r.starts_with(path) => vec![r.clone()],
            _ => Vec::new(),
        };
        mounts.push(Mount::Hide {
            path: path.clone(),
            dir: *dir,
            reveal,
        });
    }
    mounts.push(Mount::Tmpfs {
        path: PathBuf::from(SHM_DIR),
        options: SHM_SIZE.to_string(),
    });
    if facts.state_dir {
        mounts.push(Mount::Hide {
            path: workspace.join(crate::exec::workspace::STATE_DIR),
            dir: true,
            reveal: Vec::new(),
        });
    }
    if facts.git_dir {
        let git = workspace.join(".git");
        mounts.push(Mount::Pin { path: git.clone() });
        if facts.git_hooks {
            mounts.push(Mount::ReadOnly {
                path: git.join("hooks"),
            });
        }
        if facts.git_config {
            mounts.push(Mount::ReadOnly {
                path: git.join("config"),
            });
        }
    }
    if facts.caws_waivers {
        // Pinned, so `.caws` cannot be renamed away and recreated writable.
        mounts.push(Mount::Pin {
            path: workspace.join(".caws"),
        });
        mounts.push(Mount::ReadOnly {
            path: workspace.join(crate::overrides::caws::WAIVER_DIR),
        });
    }

    let mut read: Vec<PathBuf> = SYSTEM_READ_PATHS.iter().map(PathBuf::from).collect();
    read.extend(expand(&section.read_paths));
    let mut write = vec![workspace.to_path_buf(), private_dir.to_path_buf()];
    write.extend(expand(&section.write_paths));
    write.push(PathBuf::from(SHM_DIR));
    let landlock = LandlockPlan {
        read,
        write,
        devices: DEVICE_PATHS.iter().map(PathBuf::from).collect(),
        list: vec![PathBuf::from("/dev")],
        deny_tcp: !network,
    };

    let mb = |v: u64| v.saturating_mul(1024 * 1024);
    let mut rlimits = Vec::new();
    let mut limit = |kind, value: u64, unlimited_when_zero: bool| {
        if value != 0 || !unlimited_when_zero {
            rlimits.push(Rlimit { kind, value });
        }
    };
    limit(RlimitKind::AddressSpace, mb(limits.address_space_mb), true);
    limit(RlimitKind::FileSize, mb(limits.file_size_mb), true);
    limit(RlimitKind::Cpu, limits.cpu_seconds, true);
    limit(RlimitKind::OpenFiles, limits.open_files, true);
    limit(RlimitKind::Core, 0, false);
    if !facts.is_root {
        // Root is exempt from RLIMIT_NPROC; it gets its PID namespace's
        // pid_max or a pids cgroup instead.
        limit(RlimitKind::Processes, limits.pids_max, true);
    }
    let pid_max =
        (facts.is_root && cgroup.is_none() && facts.pid_max_per_namespace && limits.pids_max > 0)
            .then(|| limits.pids_max + PID_RESERVED);

    SandboxPlan {
        argv: line.argv.clone(),
        env,
        search_path,
        cwd: cwd.to_path_buf(),
        strict: settings.mode() == SandboxMode::Strict,
        server_pid: facts.server_pid,
        cgroup: cgroup.map(Path::to_path_buf),
        pid_max,
        join_net: facts
            .offline_netns
            .clone()
            .filter(|_| namespaces.net && facts.is_root),
        namespaces,
        mounts,
        landlock,
        seccomp: SeccompPlan {
            allow_inet: *network,
        },
        rlimits,
        tty: false,
    }
}

fn lookup(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::command::{ShellOptions, analyze};
    use crate::policy::file::Problems;
    use crate::policy::sandbox::SandboxSection;

    fn settings(yaml: &str) -> SandboxSettings {
        let section: SandboxSection = serde_saphyr::from_str(yaml).unwrap();
        let mut problems = Problems::new("t");
        let s = SandboxSettings::compile(&section, &mut problems);
        assert!(problems.list.is_empty(), "{:?}", problems.list);
        s
    }

    fn facts() -> HostFacts {
        HostFacts {
            is_root: true,
            server_pid: 42,
            pid_max_per_namespace: true,
            offline_netns: Some(PathBuf::from("/proc/42/fd/7")),
            home: Some(PathBuf::from("/home/u")),
            state_dir: true,
            git_dir: true,
            git_hooks: true,
            git_config: true,
            caws_waivers: true,
            hide: vec![
                (PathBuf::from("/run"), true),
                (PathBuf::from("/etc/shadow"), false),
            ],
            resolv_conf: Some(PathBuf::from("/run/systemd/resolve/stub-resolv.conf")),
            server_env: vec![
                ("LANG".into(), "en_US.UTF-8".into()),
                ("SECRET_TOKEN".into(), "s3cr3t".into()),
                ("CI".into(), "true".into()),
            ],
        }
    }

    fn plan_with(command: &str, s: &SandboxSettings, network: bool, f: &HostFacts) -> SandboxPlan {
        let line = analyze(command, &ShellOptions::default()).unwrap();
        build_plan(&PlanInputs {
            line: &line,
            settings: s,
            network,
            workspace: Path::new("/ws"),
            cwd: Path::new("/ws/sub"),
            private_dir: Path::new("/tmp/arbiter-run-1"),
            cgroup: Some(Path::new("/sys/fs/cgroup/pids/arbiter/1")),
            facts: f,
        })
    }

    fn env_of<'p>(plan: &'p SandboxPlan, name: &str) -> Option<&'p str> {
        plan.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_environment_is_built_not_inherited() {
        let s = settings("env: {pass: [CI], set: {CARGO_HOME: \"~/.cargo\", NO_COLOR: \"1\"}}");
        let plan = plan_with("FOO=bar env", &s, false, &facts());
        let names: Vec<&str> = plan.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "PATH",
                "HOME",
                "TMPDIR",
                "TERM",
                "LANG",
                "CI",
                "CARGO_HOME",
                "NO_COLOR",
                "FOO"
            ]
        );
        assert_eq!(env_of(&plan, "HOME"), Some("/tmp/arbiter-run-1/home"));
        assert_eq!(env_of(&plan, "TMPDIR"), Some("/tmp/arbiter-run-1/tmp"));
        assert_eq!(env_of(&plan, "LANG"), Some("en_US.UTF-8"));
        assert_eq!(env_of(&plan, "CARGO_HOME"), Some("/home/u/.cargo"));
        assert_eq!(env_of(&plan, "TERM"), Some("dumb"));
        assert!(env_of(&plan, "SECRET_TOKEN").is_none());
        assert_eq!(plan.argv, ["env"]);
    }

    #[test]
    fn a_path_assignment_also_decides_where_the_program_is_found() {
        let plan = plan_with("PATH=/opt/x/bin:rel tool", &settings("{}"), false, &facts());
        assert_eq!(plan.search_path, [PathBuf::from("/opt/x/bin")]);
        assert_eq!(env_of(&plan, "PATH"), Some("/opt/x/bin:rel"));
        let plan = plan_with(
            "tool",
            &settings("path: [\"~/.cargo/bin\", /usr/bin]"),
            false,
            &facts(),
        );
        assert_eq!(
            plan.search_path,
            [
                PathBuf::from("/home/u/.cargo/bin"),
                PathBuf::from("/usr/bin")
            ]
        );
        assert_eq!(env_of(&plan, "PATH"), Some("/home/u/.cargo/bin:/usr/bin"));
    }

    #[test]
    fn no_network_means_a_network_namespace_tcp_denied_and_no_inet_sockets() {
        let s = settings("{}");
        let off = plan_with("cargo test", &s, false, &facts());
        assert!(off.namespaces.net && off.landlock.deny_tcp && !off.seccomp.allow_inet);
        assert_eq!(off.join_net, Some(PathBuf::from("/proc/42/fd/7")));
        let on = plan_with("cargo fetch", &s, true, &facts());
        assert!(!on.namespaces.net && !on.landlock.deny_tcp && on.seccomp.allow_inet);
        assert_eq!(on.join_net, None);
        // A server that is not root cannot join a namespace of the initial
        // user namespace: each command gets its own.
        let user = plan_with(
            "cargo test",
            &s,
            false,
            &HostFacts {
                is_root: false,
                ..facts()
            },
        );
        assert!(user.namespaces.net);
        assert_eq!(user.join_net, None);
    }

    #[test]
    fn root_without_a_cgroup_gets_pid_max_in_its_pid_namespace() {
        let line = analyze("true", &ShellOptions::default()).unwrap();
        let s = settings("limits: {pids_max: 64}");
        let f = facts();
        let inputs = PlanInputs {
            line: &line,
            settings: &s,
            network: false,
            workspace: Path::new("/ws"),
            cwd: Path::new("/ws"),
            private_dir: Path::new("/tmp/p"),
            cgroup: None,
            facts: &f,
        };
        assert_eq!(build_plan(&inputs).pid_max, Some(64 + PID_RESERVED));
        let old_kernel = HostFacts {
            pid_max_per_namespace: false,
            ..facts()
        };
        assert_eq!(
            build_plan(&PlanInputs {
                facts: &old_kernel,
                ..inputs.clone()
            })
            .pid_max,
            None
        );
        let user = HostFacts {
            is_root: false,
            ..facts()
        };
        assert_eq!(
            build_plan(&PlanInputs {
                facts: &user,
                ..inputs
            })
            .pid_max,
            None
        );
    }

    #[test]
    fn kernel_versions_compare_numerically() {
        assert!(kernel_at_least(2, 6));
        assert!(!kernel_at_least(999, 0));
    }

    #[test]
    fn root_gets_the_cgroup_and_others_a_user_namespace_and_rlimit_nproc() {
        let s = settings("limits: {pids_max: 64}");
        let root = plan_with("true", &s, false, &facts());
        assert!(!root.namespaces.user);
        assert!(root.cgroup.is_some());
        assert_eq!(root.pid_max, None, "the cgroup does the counting");
        assert!(!root.rlimits.iter().any(|r| r.kind == RlimitKind::Processes));
        let user = plan_with(
            "true",
            &s,
            false,
            &HostFacts {
                is_root: false,
                ..facts()
            },
        );
        assert!(user.namespaces.user);
        assert!(user.rlimits.contains(&Rlimit {
            kind: RlimitKind::Processes,
            value: 64
        }));
        assert!(root.rlimits.contains(&Rlimit {
            kind: RlimitKind::Core,
            value: 0
        }));
    }

    #[test]
    fn the_state_dir_is_hidden_and_git_machinery_pinned_read_only() {
        let plan = plan_with("true", &settings("{}"), false, &facts());
        assert_eq!(plan.mounts[0], Mount::Proc);
        assert!(plan.mounts.contains(&Mount::Hide {
            path: PathBuf::from("/ws/.arbiter"),
            dir: true,
            reveal: vec![]
        }));
        assert!(plan.mounts.contains(&Mount::Pin {
            path: PathBuf::from("/ws/.git")
        }));
        assert!(plan.mounts.contains(&Mount::Pin {
            path: PathBuf::from("/ws/.caws")
        }));
        for p in ["/ws/.git/hooks", "/ws/.git/config", "/ws/.caws/waivers"] {
            assert!(
                plan.mounts.contains(&Mount::ReadOnly {
                    path: PathBuf::from(p)
                }),
                "{p}"
            );
        }
        let bare = plan_with(
            "true",
            &settings("{}"),
            false,
            &HostFacts {
                git_dir: false,
                git_hooks: false,
                git_config: false,
                caws_waivers: false,
                state_dir: false,
                ..facts()
            },
        );
        assert!(
            !bare.mounts.iter().any(|m| m.path().starts_with("/ws")),
            "{:?}",
            bare.mounts
        );
    }

    #[test]
    fn hidden_dirs_never_cover_the_workspace_and_reveal_dns_only_with_network() {
        let mut f = facts();
        f.hide.push((PathBuf::from("/"), true));
        let plan = plan_with("true", &settings("{}"), false, &f);
        assert!(!plan.mounts.iter().any(|m| m.path() == Path::new("/")));
        let hide_run = |p: &SandboxPlan| {
            p.mounts
                .iter()
                .find(|m| m.path() == Path::new("/run"))
                .cloned()
        };
        assert_eq!(
            hide_run(&plan),
            Some(Mount::Hide {
                path: "/run".into(),
                dir: true,
                reveal: vec![]
            })
        );
        let online = plan_with("true", &settings("{}"), true, &f);
        assert_eq!(
            hide_run(&online),
            Some(Mount::Hide {
                path: "/run".into(),
                dir: true,
                reveal: vec!["/run/systemd/resolve/stub-resolv.conf".into()]
            })
        );
    }

    #[test]
    fn landlock_writes_only_the_workspace_and_private_dirs() {
        let s = settings("read_paths: [\"~/.rustup/toolchains\"]\nwrite_paths: [/cache]");
        let plan = plan_with("true", &s, false, &facts());
        assert_eq!(
            plan.landlock.write,
            [
                PathBuf::from("/ws"),
                PathBuf::from("/tmp/arbiter-run-1"),
                PathBuf::from("/cache"),
                PathBuf::from("/dev/shm")
            ]
        );
        assert!(plan.landlock.read.contains(&PathBuf::from("/usr")));
        assert!(
            plan.landlock
                .read
                .contains(&PathBuf::from("/home/u/.rustup/toolchains"))
        );
        assert!(!plan.landlock.read.iter().any(|p| p == Path::new("/home/u")));
        assert!(!plan.landlock.read.iter().any(|p| p == Path::new("/dev")));
        assert_eq!(plan.landlock.list, [PathBuf::from("/dev")]);
        assert!(plan.landlock.devices.contains(&PathBuf::from("/dev/null")));
    }

    #[test]
    fn home_relative_paths_are_dropped_without_a_home() {
        let s = settings("read_paths: [\"~/.cargo/bin\"]\nenv: {set: {CARGO_HOME: \"~/.cargo\"}}");
        let plan = plan_with(
            "true",
            &s,
            false,
            &HostFacts {
                home: None,
                ..facts()
            },
        );
        assert!(!plan.landlock.read.iter().any(|p| p.ends_with(".cargo/bin")));
        assert!(env_of(&plan, "CARGO_HOME").is_none());
    }

    #[test]
    fn the_plan_survives_its_trip_as_json() {
        let plan = plan_with("echo hi", &settings("{}"), true, &facts());
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<SandboxPlan>(&json).unwrap(), plan);
    }
}
