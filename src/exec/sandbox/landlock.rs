//! The Landlock layer: which files the command may read, write and execute,
//! enforced by the kernel however the command names them (absolute paths,
//! `..`, symlinks, hard links, file descriptors passed around).
//!
//! The ruleset handles every access right the running kernel's Landlock ABI
//! knows (no more: asking for rights the kernel lacks would silently make
//! the ruleset partial), and the result must be "fully enforced".

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};

use crate::exec::plan::LandlockPlan;

/// The Landlock ABI version of the running kernel (0 when absent).
pub fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_ulong = 1;
    // SAFETY: the version query takes no ruleset attribute.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(v).unwrap_or(0).max(0)
}

/// Restrict this process (and what it executes) to the plan.
pub fn restrict(plan: &LandlockPlan) -> Result<(), String> {
    let version = kernel_abi();
    let abi = ABI::from(version);
    if abi == ABI::Unsupported {
        return Err("Landlock is not available in this kernel (or not enabled at boot)".into());
    }
    let err = |e: landlock::RulesetError| e.to_string();
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let write: BitFlags<AccessFs> = all & !(AccessFs::MakeChar | AccessFs::MakeBlock);
    let device =
        all & (AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev | AccessFs::Truncate);
    let mut ruleset = Ruleset::default().handle_access(all).map_err(err)?;
    if plan.deny_tcp && abi >= ABI::V4 {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(err)?;
    }
    if abi >= ABI::V6 {
        ruleset = ruleset.scope(Scope::from_all(abi)).map_err(err)?;
    }
    let status = ruleset
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(&plan.read, read))
        .map_err(err)?
        .add_rules(path_beneath_rules(&plan.write, write))
        .map_err(err)?
        .add_rules(path_beneath_rules(&plan.devices, device))
        .map_err(err)?
        .add_rules(path_beneath_rules(&plan.list, AccessFs::ReadDir))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(()),
        other => Err(format!(
            "the Landlock ruleset is {other:?} (kernel ABI {version})"
        )),
    }
}
