//! What a command node's child runs between clone and exec, and everything it reads:
//! the `Image` (argv, envp, directory, CPU set, limits) is built before the clone and
//! left alone until the child is done with it; the child makes only raw system calls.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString, c_char};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::libc;
use nix::unistd::Pid;

use super::super::plan::SpawnPlan;
use super::super::raw;

/// What the child was doing when it failed; the value is what it reports (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Step {
    Descriptors = 1,
    Streams = 2,
    Directory = 3,
    Core = 4,
    Exec = 5,
    Cgroup = 6,
    Limits = 7,
    User = 8,
}

impl Step {
    pub(super) fn from_code(code: u32) -> Step {
        match code {
            1 => Step::Descriptors,
            2 => Step::Streams,
            3 => Step::Directory,
            4 => Step::Core,
            6 => Step::Cgroup,
            7 => Step::Limits,
            8 => Step::User,
            _ => Step::Exec,
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Step::Descriptors => "cannot set up the descriptors",
            Step::Streams => "cannot set up the standard streams",
            Step::Directory => "cannot enter the directory",
            Step::Core => "cannot pin to the core",
            Step::Exec => "cannot start the program",
            Step::Cgroup => "cannot join its cgroup",
            Step::Limits => "cannot set its resource limits",
            Step::User => "cannot change to its user",
        }
    }
}

/// What the child needs, all of it made before the clone and left alone until the
/// child is done with it.
pub(super) struct Image {
    program: CString,
    /// Owners of what the pointer arrays point to.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    directory: Option<CString>,
    cpus: Option<libc::cpu_set_t>,
    /// stdin, stdout, stderr, as placed in the slot (set by `Slots::launch`).
    pub(super) slots: [RawFd; 3],
    /// The descriptors the child's own table keeps (the slots and below).
    pub(super) keep_below: RawFd,
    /// The readiness descriptor: where the slot holds it, and the number the node gets
    /// (`ready: #{fd: N}`; set by `Slots::launch`).
    pub(super) ready: Option<(RawFd, libc::c_int)>,
    /// `WATCHDOG_PID=` and room for the digits, which the child fills in with its own
    /// pid (an entry of `envp_ptrs` points here).
    watchdog_pid: Option<Box<[u8; 32]>>,
    death_signal: libc::c_int,
    supervisor: libc::pid_t,
    /// (`RLIMIT_*`, limit, whether failing to set it is an error) to set.
    rlimits: Vec<(libc::c_uint, libc::rlimit, bool)>,
    /// uid, gid and supplementary groups to change to.
    creds: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    umask: Option<libc::mode_t>,
    /// The `cgroup.procs` of the node's cgroup (one per hierarchy), which the child
    /// joins first; closed when the child is done with the image.
    cgroup: Vec<OwnedFd>,
    /// Where the child says why it failed (in the slot's `Shared`; set by
    /// `Slots::launch`).
    pub(super) failed: *const AtomicU64,
}

impl Image {
    /// Everything the child of `plan` touches, built now: it runs on borrowed memory and
    /// may not allocate. `program` is the resolved path; the slot's part is filled in by
    /// `Slots::launch`.
    pub(super) fn new(
        plan: &SpawnPlan,
        program: &Path,
        owner: &str,
        supervisor: Pid,
        cgroup: Vec<OwnedFd>,
    ) -> Result<Image, String> {
        let c = |bytes: &[u8]| {
            CString::new(bytes)
                .map_err(|_| "an argument or variable contains a NUL byte".to_string())
        };
        let program_c = c(program.as_os_str().as_bytes())?;
        let mut argv = vec![c(plan.program.as_os_str().as_bytes())?];
        for arg in &plan.args {
            argv.push(c(arg.as_bytes())?);
        }
        let mut envp = Vec::new();
        for (key, value) in environment(plan, owner) {
            let mut entry = key.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp.push(c(&entry)?);
        }
        let argv_ptrs: Vec<*const c_char> = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let watchdog_pid = plan.watchdog_pid.then(|| {
            let mut entry = Box::new([0u8; 32]);
            entry[..WATCHDOG_PID_PREFIX.len()].copy_from_slice(WATCHDOG_PID_PREFIX);
            entry
        });
        let envp_ptrs: Vec<*const c_char> = envp
            .iter()
            .map(|e| e.as_ptr())
            .chain(watchdog_pid.as_ref().map(|e| e.as_ptr().cast()))
            .chain([std::ptr::null()])
            .collect();
        let directory = match &plan.directory {
            Some(dir) => Some(c(dir.as_os_str().as_bytes())?),
            None => None,
        };
        let cpus = match plan.cpu {
            Some(core) if core < libc::CPU_SETSIZE as usize => {
                // SAFETY: cpu_set_t is plain bits; all zeros is the empty set, and `core`
                // is below CPU_SETSIZE, so CPU_SET stays within it.
                let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                // SAFETY: as above.
                unsafe { libc::CPU_SET(core, &mut set) };
                Some(set)
            }
            Some(core) => return Err(format!("cpu_affinity {core}: no such core")),
            None => None,
        };
        Ok(Image {
            program: program_c,
            _argv: argv,
            _envp: envp,
            argv_ptrs,
            envp_ptrs,
            directory,
            cpus,
            slots: [-1; 3],
            keep_below: 0,
            ready: None,
            watchdog_pid,
            death_signal: plan.death_signal as libc::c_int,
            supervisor: supervisor.as_raw(),
            rlimits: plan
                .rlimits
                .iter()
                .map(|&(resource, soft, hard, required)| {
                    (
                        resource as libc::c_uint,
                        libc::rlimit {
                            rlim_cur: soft,
                            rlim_max: hard,
                        },
                        required,
                    )
                })
                .collect(),
            creds: plan
                .creds
                .as_ref()
                .map(|c| (c.uid, c.gid, c.groups.clone())),
            umask: plan.umask.map(|m| m as libc::mode_t),
            cgroup,
            failed: std::ptr::null(),
        })
    }
}

const WATCHDOG_PID_PREFIX: &[u8] = b"WATCHDOG_PID=";

/// The signals a node gets at their default action: every one this program or a
/// library it uses may catch or ignore, and those a launching shell may ignore.
const RESET_SIGNALS: [libc::c_int; 16] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGPIPE,
    libc::SIGCHLD,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGWINCH,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTSTP,
    libc::SIGCONT,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// Writes `n` in decimal at `at`, with a NUL after it: 12 bytes at most.
///
/// # Safety
/// `at` must be valid for 12 bytes of writing.
unsafe fn write_decimal(at: *mut u8, n: libc::pid_t) {
    let mut digits = [0u8; 11];
    let mut len = 0;
    let mut n = n.max(0) as u32;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: within the 12 bytes the caller vouches for.
        unsafe { *at.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: as above.
    unsafe { *at.add(len) = 0 };
}

pub(super) extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a pointer to its `Image`, alive until the child is done.
    let image = unsafe { &*arg.cast::<Image>() };
    image.exec()
}

impl Image {
    /// In the child, between clone and exec: only raw system calls, no libc (which
    /// would write the supervisor's `errno`), no allocation; it never returns.
    fn exec(&self) -> ! {
        let fail = |step: Step, result: isize| -> ! {
            let errno = (-result) as u64 & 0xffff_ffff;
            // SAFETY: `failed` points into the slot, alive until the child is done; the
            // store is seen by the supervisor once the kernel clears the slot's word.
            unsafe {
                (*self.failed).store((step as u64) << 32 | errno, Ordering::Release);
                raw::exit_group(127)
            }
        };
        // SAFETY: each call is a plain system call on values prepared before the clone.
        unsafe {
            // Into the node's cgroup first, through descriptors of the table we still
            // share (`0` is the writer itself), so that all it does counts there.
            for fd in &self.cgroup {
                let r = raw::write(fd.as_raw_fd(), b"0".as_ptr(), 1);
                if r < 0 {
                    fail(Step::Cgroup, r);
                }
            }
            // A table of our own, of the low descriptors only.
            let r = raw::close_range(self.keep_below as u32, u32::MAX, libc::CLOSE_RANGE_UNSHARE);
            if r < 0 {
                let r = raw::unshare(libc::CLONE_FILES);
                if r < 0 {
                    fail(Step::Descriptors, r);
                }
            }
            // Handlers of the supervisor (and of the libraries it uses) must not run
            // here: the memory is shared. And a node starts with every signal at its
            // default action, as a service should, whatever the supervisor inherited:
            // a shell starts background jobs with SIGINT and SIGQUIT ignored, Rust
            // ignores SIGPIPE.
            for signal in RESET_SIGNALS {
                raw::default_action(signal);
            }
            for (target, &fd) in self.slots.iter().enumerate() {
                let r = raw::dup3(fd, target as libc::c_int);
                if r < 0 {
                    fail(Step::Streams, r);
                }
            }
            // The readiness descriptor last: its number may be one the slots used.
            let keep = match self.ready {
                Some((from, to)) => {
                    if from != to {
                        let r = raw::dup3(from, to);
                        if r < 0 {
                            fail(Step::Streams, r);
                        }
                    }
                    Some(to as u32)
                }
                None => None,
            };
            let closed = match keep {
                Some(n) => {
                    (n == 3 || raw::close_range(3, n - 1, 0) >= 0)
                        && raw::close_range(n + 1, u32::MAX, 0) >= 0
                }
                None => raw::close_range(3, u32::MAX, 0) >= 0,
            };
            if !closed {
                for &fd in &self.slots {
                    raw::close(fd);
                }
            }
            if let Some(entry) = &self.watchdog_pid {
                // The environment's copy of our pid, written in place before the exec.
                write_decimal(
                    entry.as_ptr().add(WATCHDOG_PID_PREFIX.len()).cast_mut(),
                    raw::getpid(),
                );
            }
            raw::setpgid_self();
            if let Some(dir) = &self.directory {
                let r = raw::chdir(dir.as_ptr());
                if r < 0 {
                    fail(Step::Directory, r);
                }
            }
            if let Some(set) = &self.cpus {
                let r = raw::set_affinity(set);
                if r < 0 {
                    fail(Step::Core, r);
                }
            }
            // Limits before the change of user: raising one may need root.
            for (resource, limit, required) in &self.rlimits {
                let r = raw::set_rlimit(*resource, limit);
                if r < 0 && *required {
                    fail(Step::Limits, r);
                }
            }
            if let Some((uid, gid, groups)) = &self.creds {
                let r = raw::setgroups(groups.len(), groups.as_ptr());
                if r < 0 {
                    fail(Step::User, r);
                }
                let r = raw::setresgid(*gid);
                if r < 0 {
                    fail(Step::User, r);
                }
                let r = raw::setresuid(*uid);
                if r < 0 {
                    fail(Step::User, r);
                }
            }
            if let Some(mask) = self.umask {
                raw::umask(mask);
            }
            // After the change of user, which clears it; then the parent is checked, in
            // case it died before the signal was armed.
            raw::set_death_signal(self.death_signal);
            if raw::getppid() != self.supervisor {
                raw::exit_group(1);
            }
            raw::unblock_all();
            let r = raw::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            );
            fail(Step::Exec, r)
        }
    }
}

/// The node's environment: the supervisor's, without `env_remove`, with the plan's
/// entries and the owner tag.
pub(super) fn environment(plan: &SpawnPlan, owner: &str) -> Vec<(OsString, OsString)> {
    // The supervisor's own environment does not change while it runs: read it once.
    static BASE: std::sync::OnceLock<BTreeMap<OsString, OsString>> = std::sync::OnceLock::new();
    let mut env = BASE.get_or_init(|| std::env::vars_os().collect()).clone();
    for key in &plan.env_remove {
        env.remove(key);
    }
    for (key, value) in &plan.env {
        env.insert(key.clone(), value.clone());
    }
    env.insert(super::super::tree::OWNER_ENV.into(), owner.into());
    env.into_iter().collect()
}
