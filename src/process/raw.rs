//! System calls made directly, without libc, for a new child that still shares the
//! supervisor's memory (see `spawn`).
//!
//! Such a child runs at the same time as the supervisor's threads, on the thread-local
//! storage of the thread that cloned it. libc's wrappers write `errno` there, which would
//! clobber the supervisor's own `errno` under its feet; these wrappers return the
//! kernel's result as is (`-errno` on failure) and touch no memory but their arguments.
//! Only the architectures listed here start nodes that way; on others `spawn` waits for
//! each child to exec, as `vfork` does, and uses libc.

#![allow(clippy::missing_safety_doc)]

use nix::libc::{c_char, c_int, c_long, c_uint, c_ulong, c_void, pid_t};

/// Whether this architecture has the wrappers below.
pub const AVAILABLE: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn syscall4(n: c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes a system call and arguments valid for it; `syscall`
    // clobbers rcx and r11 and nothing else.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn syscall4(n: c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes a system call and arguments valid for it; `svc 0`
    // returns in x0 and preserves the other registers.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") n as usize,
            inlateout("x0") a => ret,
            in("x1") b,
            in("x2") c,
            in("x3") d,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[inline(always)]
unsafe fn syscall4(n: c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    // SAFETY: as for the assembly versions; only reached from a child that does not
    // share the supervisor's memory concurrently (the parent waits, see `AVAILABLE`).
    unsafe {
        let ret = nix::libc::syscall(n, a, b, c, d);
        if ret < 0 {
            -(nix::errno::Errno::last_raw() as isize)
        } else {
            ret as isize
        }
    }
}

use nix::libc as l;

pub unsafe fn close_range(first: c_uint, last: c_uint, flags: c_uint) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe {
        syscall4(
            l::SYS_close_range,
            first as usize,
            last as usize,
            flags as usize,
            0,
        )
    }
}

pub unsafe fn unshare(flags: c_int) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe { syscall4(l::SYS_unshare, flags as usize, 0, 0, 0) }
}

pub unsafe fn close(fd: c_int) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe { syscall4(l::SYS_close, fd as usize, 0, 0, 0) }
}

pub unsafe fn dup3(old: c_int, new: c_int) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe { syscall4(l::SYS_dup3, old as usize, new as usize, 0, 0) }
}

/// Sets `signal` to its default action.
pub unsafe fn default_action(signal: c_int) -> isize {
    // The kernel's `struct sigaction` for SIG_DFL, no flags, no restorer, empty mask:
    // all zeros on every architecture, whatever the order of its fields.
    let action = [0u64; 4];
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe {
        syscall4(
            l::SYS_rt_sigaction,
            signal as usize,
            action.as_ptr() as usize,
            0,
            8,
        )
    }
}

/// Unblocks every signal.
pub unsafe fn unblock_all() -> isize {
    let empty = 0u64;
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe {
        syscall4(
            l::SYS_rt_sigprocmask,
            l::SIG_SETMASK as usize,
            &empty as *const u64 as usize,
            0,
            8,
        )
    }
}

pub unsafe fn setpgid_self() -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe { syscall4(l::SYS_setpgid, 0, 0, 0, 0) }
}

pub unsafe fn set_death_signal(signal: c_int) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe {
        syscall4(
            l::SYS_prctl,
            l::PR_SET_PDEATHSIG as usize,
            signal as c_ulong as usize,
            0,
            0,
        )
    }
}

pub unsafe fn getpid() -> pid_t {
    // SAFETY: a system call without arguments.
    unsafe { syscall4(l::SYS_getpid, 0, 0, 0, 0) as pid_t }
}

pub unsafe fn getppid() -> pid_t {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe { syscall4(l::SYS_getppid, 0, 0, 0, 0) as pid_t }
}

pub unsafe fn chdir(path: *const c_char) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe { syscall4(l::SYS_chdir, path as usize, 0, 0, 0) }
}

pub unsafe fn set_affinity(set: *const l::cpu_set_t) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe {
        syscall4(
            l::SYS_sched_setaffinity,
            0,
            std::mem::size_of::<l::cpu_set_t>(),
            set as usize,
            0,
        )
    }
}

/// Sets the limit `resource` of this process (soft and hard).
pub unsafe fn set_rlimit(resource: c_uint, limit: *const l::rlimit) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe { syscall4(l::SYS_prlimit64, 0, resource as usize, limit as usize, 0) }
}

pub unsafe fn write(fd: c_int, bytes: *const u8, len: usize) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe { syscall4(l::SYS_write, fd as usize, bytes as usize, len, 0) }
}

/// Sets the supplementary groups of this thread: without CLONE_THREAD the child is a
/// process of one thread, so (unlike libc's wrappers, which tell every thread) the
/// plain system call is the whole change.
pub unsafe fn setgroups(count: usize, groups: *const l::gid_t) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe { syscall4(l::SYS_setgroups, count, groups as usize, 0, 0) }
}

pub unsafe fn setresgid(gid: l::gid_t) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe {
        syscall4(
            l::SYS_setresgid,
            gid as usize,
            gid as usize,
            gid as usize,
            0,
        )
    }
}

pub unsafe fn setresuid(uid: l::uid_t) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe {
        syscall4(
            l::SYS_setresuid,
            uid as usize,
            uid as usize,
            uid as usize,
            0,
        )
    }
}

pub unsafe fn umask(mask: l::mode_t) -> isize {
    // SAFETY: a system call that only sets the mask and returns the old one.
    unsafe { syscall4(l::SYS_umask, mask as usize, 0, 0, 0) }
}

pub unsafe fn execve(
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> isize {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe {
        syscall4(
            l::SYS_execve,
            program as usize,
            argv as usize,
            envp as usize,
            0,
        )
    }
}

pub unsafe fn exit_group(code: c_int) -> ! {
    // SAFETY: a system call on the caller's arguments, which the caller vouches for.
    unsafe {
        syscall4(l::SYS_exit_group, code as usize, 0, 0, 0);
    }
    // exit_group does not return; should it ever, spin rather than run on.
    #[allow(clippy::empty_loop)]
    loop {}
}

/// Waits while the 32-bit word at `word` holds `value`, at most `timeout_ns`.
pub fn futex_wait(word: *const u32, value: u32, timeout_ns: i64) {
    let timeout = l::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as l::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as l::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the word (which the caller keeps alive) and sleeps; the
    // kernel's wake for CLONE_CHILD_CLEARTID is not private, so neither is this wait.
    // Called from the supervisor's own thread, so libc is fine here.
    unsafe {
        nix::libc::syscall(
            l::SYS_futex,
            word,
            l::FUTEX_WAIT,
            value,
            &timeout as *const l::timespec,
            std::ptr::null::<c_void>(),
            0,
        );
    }
}
