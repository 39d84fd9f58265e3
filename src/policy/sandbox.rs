//! The `sandbox:` section of a policy: how commands run (not whether they
//! may: that is the `commands:` section). Which layers must be present
//! (`mode`), network per command, limits, the extra paths a command may read
//! or write, what is hidden, and the environment it gets.
//!
//! Everything here is data for the executor (`exec::plan` turns it into a
//! sandbox plan). The one decision it holds, whether a command gets the
//! network, is a pure function of the analysed command line, like every
//! other policy decision.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{CommandLine, CommandPattern};
use super::file::Problems;

/// What to do when a sandbox layer is not available on this machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// Refuse to run commands (SANDBOX-001) unless every layer is in force.
    #[default]
    Strict,
    /// Run with the layers that are available and say which were missing.
    BestEffort,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    #[serde(default)]
    pub mode: SandboxMode,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub limits: SandboxLimits,
    /// Directories (or files) commands may read and execute, beyond the
    /// workspace and the system directories. `~/` is the server user's home.
    #[serde(default)]
    pub read_paths: Vec<String>,
    /// Directories commands may also write (beyond the workspace and their
    /// private temporary directory).
    #[serde(default)]
    pub write_paths: Vec<String>,
    /// Directories replaced by an empty read-only directory for commands
    /// (daemon sockets live there). Default: `/run`.
    #[serde(default = "default_hide_paths")]
    pub hide_paths: Vec<String>,
    #[serde(default)]
    pub env: EnvSection,
    /// The `PATH` commands get, in order; `argv[0]` is looked up in it.
    #[serde(default = "default_search_path")]
    pub path: Vec<String>,
}

impl Default for SandboxSection {
    fn default() -> Self {
        Self {
            mode: SandboxMode::default(),
            network: NetworkSection::default(),
            limits: SandboxLimits::default(),
            read_paths: Vec::new(),
            write_paths: Vec::new(),
            hide_paths: default_hide_paths(),
            env: EnvSection::default(),
            path: default_search_path(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Give every command the network. Default: false.
    #[serde(default)]
    pub allow: bool,
    /// Commands that get the network even when `allow` is false, as argv
    /// prefixes like command rules (`[cargo, fetch]`); a command gets it when
    /// one of its invocations matches.
    #[serde(default)]
    pub commands: Vec<Vec<String>>,
}

/// How a root server limits the processes of a command (a server that is
/// not root always uses `RLIMIT_NPROC`, counted in the command's own user
/// namespace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PidsMechanism {
    /// `pid_namespace` when the kernel has it (Linux 6.14+), else `cgroup`.
    #[default]
    Auto,
    /// `pid_max` of the command's PID namespace: free, but a bound between
    /// `pids_max` and `pids_max + 299` (pids below 300 are not reused once
    /// the namespace's counter has wrapped).
    PidNamespace,
    /// A pids cgroup per command: exact, but joining a cgroup-v1 hierarchy
    /// costs a kernel RCU grace period (about 10 ms) per command.
    Cgroup,
}

/// Limits on one command. Sizes of 0 mean "no limit" (not recommended).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxLimits {
    /// Timeout when the call gives none (foreground commands).
    pub timeout_ms: u64,
    /// The most a call may ask for (and the timeout of background jobs that ask for none).
    pub max_timeout_ms: u64,
    /// How long a command has to exit after SIGTERM before SIGKILL.
    pub kill_grace_ms: u64,
    /// Output kept per stream (stdout, stderr): first and last halves.
    pub output_max_bytes: usize,
    /// Processes and threads of one command, all descendants included.
    pub pids_max: u64,
    /// How a root server enforces `pids_max`.
    pub pids_mechanism: PidsMechanism,
    /// RLIMIT_AS of each process, MiB.
    pub address_space_mb: u64,
    /// RLIMIT_FSIZE: largest file a process may write, MiB.
    pub file_size_mb: u64,
    /// RLIMIT_CPU of each process, seconds.
    pub cpu_seconds: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// Background jobs one session may have running at once.
    pub max_background_jobs: usize,
    /// Interactive terminal sessions one MCP session (client) may have open.
    pub max_sessions: usize,
    /// An interactive terminal session unused this long is closed.
    pub session_idle_ms: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            timeout_ms: 60_000,
            max_timeout_ms: 300_000,
            kill_grace_ms: 1_000,
            output_max_bytes: 1024 * 1024,
            pids_max: 512,
            pids_mechanism: PidsMechanism::Auto,
            address_space_mb: 16 * 1024,
            file_size_mb: 4 * 1024,
            cpu_seconds: 600,
            open_files: 4096,
            max_background_jobs: 8,
            max_sessions: 8,
            session_idle_ms: 15 * 60 * 1000,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSection {
    /// Variables copied from the server's environment when set there.
    #[serde(default)]
    pub pass: Vec<String>,
    /// Variables set to a fixed value (a value starting with `~/` is under
    /// the server user's home).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

fn default_hide_paths() -> Vec<String> {
    vec!["/run".to_string()]
}

fn default_search_path() -> Vec<String> {
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .map(str::to_string)
    .to_vec()
}

/// The sandbox section, checked and compiled.
#[derive(Debug, Clone, Default)]
pub struct SandboxSettings {
    pub section: SandboxSection,
    network_commands: Vec<CommandPattern>,
}

/// Names the environment may carry: what a shell would accept.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn is_policy_path(p: &str) -> bool {
    (p.starts_with('/') || p.starts_with("~/")) && !p.split('/').any(|part| part == "..")
}

impl SandboxSettings {
    pub fn compile(section: &SandboxSection, problems: &mut Problems) -> Self {
        let mut network_commands = Vec::new();
        for prefix in &section.network.commands {
            match CommandPattern::new(prefix.clone(), Vec::new()) {
                Ok(p) => network_commands.push(p),
                Err(e) => problems.general(format!(
                    "sandbox.network.commands: bad command prefix {prefix:?}: {e}"
                )),
            }
        }
        for (field, paths) in [
            ("read_paths", &section.read_paths),
            ("write_paths", &section.write_paths),
            ("hide_paths", &section.hide_paths),
            ("path", &section.path),
        ] {
            for p in paths {
                if !is_policy_path(p) {
                    problems.general(format!(
                        "sandbox.{field}: `{p}` must be an absolute path or start with `~/`, without `..`"
                    ));
                }
            }
        }
        for p in &section.hide_paths {
            if p == "/" || p.trim_end_matches('/').is_empty() {
                problems.general("sandbox.hide_paths: `/` cannot be hidden");
            }
        }
        for name in section.env.pass.iter().chain(section.env.set.keys()) {
            if !is_env_name(name) {
                problems.general(format!(
                    "sandbox.env: `{name}` is not a variable name (letters, digits, `_`)"
                ));
            }
            if ["PATH", "HOME", "TMPDIR"].contains(&name.as_str()) {
                problems.general(format!(
                    "sandbox.env: `{name}` is set by the sandbox (use sandbox.path for PATH)"
                ));
            }
        }
        let l = &section.limits;
        if l.timeout_ms == 0 || l.max_timeout_ms == 0 || l.timeout_ms > l.max_timeout_ms {
            problems.general(
                "sandbox.limits: timeout_ms and max_timeout_ms must be positive, timeout_ms <= max_timeout_ms",
            );
        }
        if l.output_max_bytes < 2 {
            problems.general("sandbox.limits.output_max_bytes must be at least 2");
        }
        if l.pids_max != 0 && l.pids_max < 8 {
            problems.general("sandbox.limits.pids_max must be at least 8 (or 0 for no limit)");
        }
        Self {
            section: section.clone(),
            network_commands,
        }
    }

    pub fn mode(&self) -> SandboxMode {
        self.section.mode
    }

    pub fn limits(&self) -> &SandboxLimits {
        &self.section.limits
    }

    /// Whether `line` runs with the network: every command when
    /// `network.allow`, else those an entry of `network.commands` matches.
    pub fn network_allowed(&self, line: &CommandLine) -> bool {
        self.section.network.allow
            || self
                .network_commands
                .iter()
                .any(|p| p.find_in(line).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::command::{ShellOptions, analyze};

    fn settings(yaml: &str) -> Result<SandboxSettings, Vec<String>> {
        let section: SandboxSection =
            serde_saphyr::from_str(yaml).map_err(|e| vec![e.to_string()])?;
        let mut problems = Problems::new("t");
        let s = SandboxSettings::compile(&section, &mut problems);
        if problems.list.is_empty() {
            Ok(s)
        } else {
            Err(problems.list.iter().map(|p| p.message.clone()).collect())
        }
    }

    #[test]
    fn defaults_are_strict_offline_and_bounded() {
        let s = settings("{}").unwrap();
        assert_eq!(s.mode(), SandboxMode::Strict);
        assert_eq!(s.limits().timeout_ms, 60_000);
        assert_eq!(s.limits().max_timeout_ms, 300_000);
        assert_eq!(s.section.hide_paths, ["/run"]);
        let line = analyze("cargo fetch", &ShellOptions::default()).unwrap();
        assert!(!s.network_allowed(&line));
    }

    #[test]
    fn network_can_be_given_to_named_commands_only() {
        let s = settings("network: {commands: [[cargo, fetch], [npm, ci]]}").unwrap();
        let opts = ShellOptions::default();
        assert!(s.network_allowed(&analyze("cargo fetch --locked", &opts).unwrap()));
        assert!(s.network_allowed(&analyze("timeout 60 npm ci", &opts).unwrap()));
        assert!(!s.network_allowed(&analyze("cargo test", &opts).unwrap()));
        assert!(!s.network_allowed(&analyze("curl example.com", &opts).unwrap()));
    }

    #[test]
    fn bad_settings_are_named() {
        let e = settings("read_paths: [relative/dir]").unwrap_err();
        assert!(e[0].contains("relative/dir"), "{e:?}");
        let e = settings("env: {pass: [\"BAD-NAME\", PATH]}").unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        let e = settings("limits: {timeout_ms: 10, max_timeout_ms: 5}").unwrap_err();
        assert!(e[0].contains("timeout_ms"), "{e:?}");
        assert!(settings("hide_paths: [/]").is_err());
        assert!(settings("mode: lenient").is_err());
        assert!(settings("limits: {pids: 3}").is_err());
    }
}
