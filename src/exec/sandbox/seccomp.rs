//! The seccomp layer: system calls a command has no business making, refused
//! with `EPERM` (so programs see an ordinary error, not a crash).
//!
//! - debugging other processes: `ptrace`, `process_vm_readv/writev`;
//! - kernel interfaces that bypass or widen the other layers: `io_uring_*`
//!   (it performs socket and file operations seccomp cannot see), `bpf`,
//!   `perf_event_open`, `userfaultfd`, the keyrings (`keyctl`, `add_key`,
//!   `request_key`);
//! - namespaces and mounts, old and new API (`unshare`, `setns`, `clone`
//!   with a namespace flag, `mount`, `umount2`, `pivot_root`, `chroot`,
//!   `fsopen`/`fsmount`/`move_mount`/`open_tree`/`fspick`/`fsconfig`/
//!   `mount_setattr`): the sandbox's own mounts must stay as they are;
//! - machine administration (`reboot`, modules, `kexec`, `swapon/off`,
//!   `acct`), refused already by dropped capabilities, refused here again;
//! - sockets of any family but `AF_UNIX` and `AF_NETLINK` (and `AF_INET`,
//!   `AF_INET6` when the command has the network): no raw packets, no
//!   `AF_VSOCK` to the hypervisor, no exotic protocol code.
//!
//! - `ioctl(TIOCSTI)`: typing into the terminal. In an interactive session
//!   a program could otherwise put a line into the shell's input that the
//!   policy never judged (`dev.tty.legacy_tiocsti` is 1 on many kernels).
//!
//! `clone3` answers `ENOSYS`: its flags are in memory a filter cannot read,
//! and the C library then falls back to `clone`, whose flags it can.
//! On x86-64 the x32 system-call numbers are refused outright, so no call
//! slips past under its other number. seccompiler returns one action for
//! every rule, so these two are a short hand-written prefix of its program.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::exec::plan::SeccompPlan;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// Refused with EPERM, whatever their arguments.
const DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_reboot,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
];

const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())
}

/// The filter to install (one program, so one attach in the command).
pub fn build(plan: &SeccompPlan) -> Result<Vec<BpfProgram>, String> {
    let err = |e: seccompiler::BackendError| e.to_string();
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&nr| (nr, vec![])).collect();
    // clone(flags, ...): any namespace flag.
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            SeccompRule::new(vec![cond(0, SeccompCmpOp::MaskedEq(flag), flag)?]).map_err(err)
        })
        .collect::<Result<Vec<_>, String>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    // socket(family, ...): any family not allowed (conditions of one rule are all required).
    let mut allowed = vec![libc::AF_UNIX as u64, libc::AF_NETLINK as u64];
    if plan.allow_inet {
        allowed.extend([libc::AF_INET as u64, libc::AF_INET6 as u64]);
    }
    let not_allowed = allowed
        .iter()
        .map(|&family| cond(0, SeccompCmpOp::Ne, family))
        .collect::<Result<Vec<_>, String>>()?;
    rules.insert(
        libc::SYS_socket,
        vec![SeccompRule::new(not_allowed).map_err(err)?],
    );
    // ioctl(fd, TIOCSTI, ...): faking terminal input. (The request's type
    // differs between C libraries.)
    #[allow(clippy::unnecessary_cast)]
    let tiocsti = libc::TIOCSTI as u64;
    rules.insert(
        libc::SYS_ioctl,
        vec![SeccompRule::new(vec![cond(1, SeccompCmpOp::Eq, tiocsti)?]).map_err(err)?],
    );
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        ARCH,
    )
    .map_err(err)?;
    let mut program: BpfProgram = deny.try_into().map_err(err)?;
    program.splice(0..0, prefix());
    Ok(vec![program])
}

const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> seccompiler::sock_filter {
    seccompiler::sock_filter { code, jt, jf, k }
}

/// Before seccompiler's rules (which can return one action only): on this
/// architecture, `clone3` answers ENOSYS and, on x86-64, x32 numbers are
/// refused. Any other architecture goes on to seccompiler's own arch check.
#[cfg(target_arch = "x86_64")]
fn prefix() -> Vec<seccompiler::sock_filter> {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    vec![
        ins(LD_W_ABS, 0, 0, 4),              // A = seccomp_data.arch
        ins(JEQ_K, 0, 5, AUDIT_ARCH_X86_64), // another arch: on to the filter proper
        ins(LD_W_ABS, 0, 0, 0),              // A = seccomp_data.nr
        ins(JGE_K, 0, 1, X32_SYSCALL_BIT),   // an x32 number?
        ins(RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ins(JEQ_K, 0, 1, libc::SYS_clone3 as u32),
        ins(RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ]
}

#[cfg(target_arch = "aarch64")]
fn prefix() -> Vec<seccompiler::sock_filter> {
    const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
    vec![
        ins(LD_W_ABS, 0, 0, 4),
        ins(JEQ_K, 0, 3, AUDIT_ARCH_AARCH64),
        ins(LD_W_ABS, 0, 0, 0),
        ins(JEQ_K, 0, 1, libc::SYS_clone3 as u32),
        ins(RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ]
}

/// Install the filters on this process (they pass to everything it runs).
pub fn apply(filters: &[BpfProgram]) -> Result<(), String> {
    for f in filters {
        seccompiler::apply_filter(f).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_with_and_without_network() {
        for allow_inet in [false, true] {
            let filters = build(&SeccompPlan { allow_inet }).unwrap();
            assert_eq!(filters.len(), 1);
            assert!(filters.iter().all(|f| !f.is_empty() && f.len() < 4096));
        }
    }

    #[test]
    fn the_prefix_jumps_land_inside_it_or_on_the_filter_proper() {
        let p = prefix();
        let f = &build(&SeccompPlan::default()).unwrap()[0];
        for (i, ins) in p.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                // A conditional jump: both targets stay within the prefix or
                // land exactly on the first instruction after it.
                for off in [ins.jt, ins.jf] {
                    assert!(i + 1 + off as usize <= p.len(), "instruction {i}");
                }
            }
        }
        // Another architecture goes to seccompiler's program, which loads the arch again.
        assert_eq!(1 + 1 + p[1].jf as usize, p.len());
        assert_eq!((f[p.len()].code, f[p.len()].k), (LD_W_ABS, 4));
        // clone3 is answered before the rules, with ENOSYS.
        let clone3 = p
            .iter()
            .position(|i| i.code == JEQ_K && i.k == libc::SYS_clone3 as u32)
            .unwrap();
        assert_eq!(p[clone3 + 1].k, SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    }
}
