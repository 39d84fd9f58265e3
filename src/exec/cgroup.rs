//! One pids cgroup per command, for a server running as root: the only
//! kernel limit on how many processes root can create (`RLIMIT_NPROC` does
//! not apply to uid 0), so it is what stops a fork bomb. The server creates
//! `<pids hierarchy>/arbiter/<server pid>-<n>` with `pids.max` set, the
//! sandbox helper moves itself into it before anything else (so every
//! descendant is counted), and after the call the server kills whatever is
//! still listed in it and removes it.
//!
//! This machine has the cgroup-v1 `pids` controller at `/sys/fs/cgroup/pids`;
//! a unified (v2) hierarchy with `pids` enabled is used when that is what
//! the machine has.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The v1 pids hierarchy.
pub const V1_PIDS: &str = "/sys/fs/cgroup/pids";
/// The v2 unified hierarchy.
pub const V2_ROOT: &str = "/sys/fs/cgroup";
/// Our directory inside the hierarchy.
const PARENT: &str = "arbiter";

static NEXT: AtomicU64 = AtomicU64::new(1);
static SWEPT: std::sync::Once = std::sync::Once::new();

/// Where pids cgroups can be made, if anywhere.
pub fn hierarchy() -> Option<PathBuf> {
    let v1 = Path::new(V1_PIDS);
    if v1.join("cgroup.procs").exists() {
        return Some(v1.to_path_buf());
    }
    let controllers =
        std::fs::read_to_string(Path::new(V2_ROOT).join("cgroup.controllers")).ok()?;
    controllers
        .split_whitespace()
        .any(|c| c == "pids")
        .then(|| PathBuf::from(V2_ROOT))
}

/// A command's pids cgroup.
#[derive(Debug)]
pub struct PidsCgroup {
    dir: PathBuf,
}

impl PidsCgroup {
    /// Create a fresh cgroup limited to `max` tasks (0: no limit, only tracking).
    pub fn create(hierarchy: &Path, max: u64) -> io::Result<Self> {
        let parent = hierarchy.join(PARENT);
        match std::fs::create_dir(&parent) {
            Ok(()) => {
                if hierarchy != Path::new(V1_PIDS) {
                    // v2: the controller must be enabled for our children.
                    std::fs::write(hierarchy.join("cgroup.subtree_control"), "+pids")?;
                    std::fs::write(parent.join("cgroup.subtree_control"), "+pids")?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        SWEPT.call_once(|| sweep_stale(&parent));
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("{}-{n}", std::process::id()));
        std::fs::create_dir(&dir)?;
        let cgroup = Self { dir };
        if max > 0
            && let Err(e) = std::fs::write(cgroup.dir.join("pids.max"), max.to_string())
        {
            let _ = std::fs::remove_dir(&cgroup.dir);
            return Err(e);
        }
        Ok(cgroup)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn members(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kill every process still in the cgroup and remove it. Waits (briefly)
    /// for the kernel to finish tearing the processes down.
    pub async fn remove(self) {
        for attempt in 0..400 {
            for pid in self.members() {
                // SAFETY: plain syscall; these are the command's processes.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(if attempt < 20 { 1 } else { 5 }))
                        .await
                }
            }
        }
        tracing::warn!(cgroup = %self.dir.display(), "could not remove a command's cgroup");
    }
}

/// Remove cgroups left by servers that are gone (a crash, a SIGKILL).
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            // Fails (harmlessly) when the cgroup still has processes.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}
