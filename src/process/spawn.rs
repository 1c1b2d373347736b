//! Starting one node process from a `SpawnPlan`.
//!
//! The program is found and checked (exists, is executable) before the fork, so a
//! program that cannot start is reported by `Supervisor::create` itself. Everything the
//! child needs is built before the fork too (argv, envp, the CPU set, the open files
//! and pipes); the child, made by `clone` (see `Slots`), only makes raw system calls: it
//! takes a table of the few descriptors it needs, joins its own process group, asks
//! for the plan's death signal when the spawning thread dies, re-checks that its parent
//! is still the supervisor, sets up its streams, directory, core and limits, and execs.
//! A step that fails is reported back, so `create` says why.
//!
//! Must be called on the loop thread: the parent-death signal fires when the thread
//! that forked exits, and the loop thread lives as long as the supervisor.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsString, c_char};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::signal::Signal;
use nix::unistd::{Pid, pipe2};

use super::plan::{Output, SpawnPlan};
use super::{errno_text, os_error};

/// A started node process.
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    /// Readable once the process has exited.
    pub pidfd: OwnedFd,
    /// The supervisor's (non-blocking) read ends of captured streams.
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Three descriptors, opened when the supervisor starts (so their numbers are low),
/// through which a node's stdin, stdout and stderr are handed to its child, and the
/// stack the child runs on until it execs.
///
/// The child is made with `CLONE_VM | CLONE_VFORK | CLONE_FILES`, like `posix_spawn` but
/// sharing the descriptor table too: nothing is copied at the clone. Its first act is
/// `close_range(above the slots, CLOSE_RANGE_UNSHARE)`, with which the kernel gives it a
/// table of only the descriptors below that bound. So a spawn costs the same with 3 or
/// 3,000 descriptors open in the supervisor (3 per captured node), where a fork would
/// copy them all and the exec close them all again: a burst of N creates would be
/// O(N^2). The parent thread waits (vfork) until the child has exec'd or failed, so an
/// exec failure is reported by `create`, and the child's memory is the parent's.
pub struct Slots {
    fds: [OwnedFd; 3],
    stack: Vec<u8>,
}

/// The stack of a child between clone and exec: it only makes system calls.
const CHILD_STACK: usize = 64 * 1024;

impl Slots {
    pub fn new() -> std::io::Result<Slots> {
        let open = || -> std::io::Result<OwnedFd> {
            Ok(nix::fcntl::open(
                "/dev/null",
                OFlag::O_RDWR | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )?)
        };
        Ok(Slots {
            fds: [open()?, open()?, open()?],
            stack: vec![0; CHILD_STACK],
        })
    }

    /// Puts a copy of `fd` in slot `index` (close-on-exec, so no other child inherits it).
    fn fill(&self, index: usize, fd: RawFd) -> Result<(), Errno> {
        // SAFETY: dup3 onto a descriptor this struct owns.
        Errno::result(unsafe {
            nix::libc::dup3(fd, self.fds[index].as_raw_fd(), nix::libc::O_CLOEXEC)
        })
        .map(drop)
    }
}

/// Starts `plan`. `supervisor` is this process's pid, which the child checks after
/// arming its death signal; `owner` is the instance tag its descendants inherit
/// (`tree::OWNER_ENV`).
pub fn spawn(
    plan: &SpawnPlan,
    supervisor: Pid,
    owner: &str,
    slots: &mut Slots,
) -> Result<Spawned, String> {
    let name = &plan.name;
    let fail = |what: String| format!("node '{name}': {what}");
    let cannot_start = |reason: String| {
        fail(format!(
            "cannot start '{}': {reason}",
            plan.program.display()
        ))
    };
    let program = resolve(plan).map_err(cannot_start)?;
    let [(stdout_end, stdout), (stderr_end, stderr)] = streams(plan)?;

    // Everything the child touches, built now: it runs on borrowed memory and may not
    // allocate.
    let c = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| fail("an argument or variable contains a NUL byte".into()))
    };
    let program = c(program.as_os_str().as_bytes())?;
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
    let envp_ptrs: Vec<*const c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let directory = match &plan.directory {
        Some(dir) => Some(c(dir.as_os_str().as_bytes())?),
        None => None,
    };
    let cpus = match plan.cpu {
        Some(core) => {
            let mut set = CpuSet::new();
            set.set(core)
                .map_err(|e| fail(format!("cpu_affinity {core}: {}", errno_text(e))))?;
            Some(set)
        }
        None => None,
    };

    // Slot 0 keeps /dev/null; slots 1 and 2 carry this node's streams for the moment.
    slots
        .fill(1, stdout_end.as_raw_fd())
        .and_then(|()| slots.fill(2, stderr_end.as_raw_fd()))
        .map_err(|e| fail(format!("cannot pass the streams: {}", errno_text(e))))?;
    drop((stdout_end, stderr_end));
    let slot_fds = [
        slots.fds[0].as_raw_fd(),
        slots.fds[1].as_raw_fd(),
        slots.fds[2].as_raw_fd(),
    ];
    let mut child = Child {
        program: &program,
        argv: &argv_ptrs,
        envp: &envp_ptrs,
        directory: directory.as_deref(),
        slots: slot_fds,
        keep_below: slot_fds.iter().max().map_or(3, |m| m + 1),
        death_signal: plan.death_signal,
        supervisor,
        cpus: cpus.as_ref(),
        nofile: plan.nofile,
        failed: None,
    };
    let pid = {
        let stack_top = slots.stack.as_mut_ptr_range().end;
        // Keep the top 16-byte aligned, as the ABI wants.
        let stack_top = stack_top
            .wrapping_sub(stack_top as usize % 16)
            .cast::<nix::libc::c_void>();
        let mut all: nix::libc::sigset_t = unsafe { std::mem::zeroed() };
        let mut old: nix::libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: the child runs `child_main` on `slots.stack` with the pointer to
        // `child`; this thread is suspended until it has exec'd or exited (CLONE_VFORK),
        // so `child` and the stack outlive its use. Signals are blocked around the clone
        // so that no handler of ours runs in the child, which shares our memory.
        unsafe {
            nix::libc::sigfillset(&mut all);
            nix::libc::pthread_sigmask(nix::libc::SIG_BLOCK, &all, &mut old);
            let pid = nix::libc::clone(
                child_main,
                stack_top,
                nix::libc::CLONE_VM
                    | nix::libc::CLONE_VFORK
                    | nix::libc::CLONE_FILES
                    | nix::libc::SIGCHLD,
                (&mut child as *mut Child).cast(),
            );
            let clone_error = Errno::last();
            nix::libc::pthread_sigmask(nix::libc::SIG_SETMASK, &old, std::ptr::null_mut());
            if pid < 0 {
                Err(clone_error)
            } else {
                Ok(Pid::from_raw(pid))
            }
        }
    };
    // The node has its copies; slots 1 and 2 go back to /dev/null, or the pipes would
    // never see their end when the node exits.
    let reset = slots.fds[0].as_raw_fd();
    let _ = slots.fill(1, reset).and_then(|()| slots.fill(2, reset));
    let pid = pid.map_err(|e| cannot_start(errno_text(e)))?;
    if let Some((step, errno)) = child.failed {
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(match step {
            Step::Exec => cannot_start(errno_text(errno)),
            step => fail(format!("{}: {}", step.describe(), errno_text(errno))),
        });
    }
    let pidfd = watch(pid, name)?;
    Ok(Spawned {
        pid,
        pidfd,
        stdout,
        stderr,
    })
}

/// What the child was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Descriptors,
    Streams,
    Directory,
    Core,
    Exec,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::Descriptors => "cannot set up the descriptors",
            Step::Streams => "cannot set up the standard streams",
            Step::Directory => "cannot enter the directory",
            Step::Core => "cannot pin to the core",
            Step::Exec => "cannot start the program",
        }
    }
}

/// What the child needs, all of it made before the clone.
struct Child<'a> {
    program: &'a CStr,
    argv: &'a [*const c_char],
    envp: &'a [*const c_char],
    directory: Option<&'a CStr>,
    /// stdin, stdout, stderr, as placed in the slots.
    slots: [RawFd; 3],
    /// The descriptors the child's own table keeps (the slots and below).
    keep_below: RawFd,
    death_signal: Signal,
    supervisor: Pid,
    cpus: Option<&'a CpuSet>,
    nofile: Option<(u64, u64)>,
    /// Set by the child when it fails, read by the parent after it resumes.
    failed: Option<(Step, Errno)>,
}

extern "C" fn child_main(arg: *mut nix::libc::c_void) -> nix::libc::c_int {
    // SAFETY: `spawn` passes a pointer to its `Child`, alive until the parent resumes.
    let child = unsafe { &mut *arg.cast::<Child>() };
    child.exec()
}

impl Child<'_> {
    /// In the child, between clone and exec: only raw system calls; it never returns.
    fn exec(&mut self) -> ! {
        use nix::libc;
        let mut fail = |step: Step| -> ! {
            self.failed = Some((step, Errno::last()));
            // SAFETY: _exit ends the child without touching the shared memory.
            unsafe { libc::_exit(127) }
        };
        // SAFETY: each call is a plain system call on values prepared before the clone.
        unsafe {
            // A table of our own, of the low descriptors only.
            if libc::syscall(
                libc::SYS_close_range,
                self.keep_below as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) < 0
                && libc::unshare(libc::CLONE_FILES) < 0
            {
                fail(Step::Descriptors);
            }
            // Handlers of the supervisor must not run here (the memory is shared) and
            // are reset by exec anyway; SIGPIPE, which Rust ignores, goes back to default.
            for signal in [
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGCHLD,
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGPIPE,
            ] {
                libc::signal(signal, libc::SIG_DFL);
            }
            for (target, &fd) in self.slots.iter().enumerate() {
                if libc::dup2(fd, target as i32) < 0 {
                    fail(Step::Streams);
                }
            }
            for &fd in &self.slots {
                if fd > 2 {
                    libc::close(fd);
                }
            }
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, self.death_signal as libc::c_ulong);
            if libc::getppid() != self.supervisor.as_raw() {
                libc::_exit(1);
            }
            if let Some(dir) = self.directory {
                if libc::chdir(dir.as_ptr()) < 0 {
                    fail(Step::Directory);
                }
            }
            if let Some(set) = self.cpus {
                if sched_setaffinity(Pid::from_raw(0), set).is_err() {
                    fail(Step::Core);
                }
            }
            if let Some((soft, hard)) = self.nofile {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
            let empty: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execve(
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            );
        }
        fail(Step::Exec)
    }
}

/// The node's environment: the supervisor's, without `env_remove`, with the plan's
/// entries and the owner tag.
fn environment(plan: &SpawnPlan, owner: &str) -> Vec<(OsString, OsString)> {
    // The supervisor's own environment does not change while it runs: read it once.
    static BASE: std::sync::OnceLock<BTreeMap<OsString, OsString>> = std::sync::OnceLock::new();
    let mut env = BASE.get_or_init(|| std::env::vars_os().collect()).clone();
    for key in &plan.env_remove {
        env.remove(key);
    }
    for (key, value) in &plan.env {
        env.insert(key.clone(), value.clone());
    }
    env.insert(super::tree::OWNER_ENV.into(), owner.into());
    env.into_iter().collect()
}

/// Where the program is, found as `execvp` would (a name with a `/` relative to the
/// node's directory, else along the node's `PATH`), and checked to be executable, so a
/// program that cannot start is reported by `create` rather than by the dying child.
fn resolve(plan: &SpawnPlan) -> Result<PathBuf, String> {
    let program = &plan.program;
    let usable = |path: &Path| -> Result<(), Errno> {
        let meta =
            std::fs::metadata(path).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
        if meta.is_dir() {
            return Err(Errno::EACCES);
        }
        nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
    };
    if program.as_os_str().as_bytes().contains(&b'/') {
        let path = match &plan.directory {
            Some(dir) if program.is_relative() => dir.join(program),
            _ => program.clone(),
        };
        return usable(&path).map(|()| path).map_err(errno_text);
    }
    let path_var = plan
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = false;
    for dir in std::env::split_paths(&path_var) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        match usable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(Errno::EACCES) => denied = true,
            Err(_) => {}
        }
    }
    Err(errno_text(if denied {
        Errno::EACCES
    } else {
        Errno::ENOENT
    }))
}

/// A pidfd for our new child `pid`; if there is none, the child is taken down again at
/// once, since its exit would go unseen.
pub fn watch(pid: Pid, name: &str) -> Result<OwnedFd, String> {
    match pidfd_open(pid) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            super::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(format!("node '{name}': cannot watch pid {pid}: {e}"))
        }
    }
}

/// The node's stdout and stderr: for each, the child's end and, when captured, the
/// supervisor's (non-blocking) read end.
pub fn streams(plan: &SpawnPlan) -> Result<[(OwnedFd, Option<OwnedFd>); 2], String> {
    let name = &plan.name;
    let stdout = stream(&plan.stdout, "stdout_file").map_err(|e| format!("node '{name}': {e}"))?;
    let stderr = stream(&plan.stderr, "stderr_file").map_err(|e| format!("node '{name}': {e}"))?;
    Ok([stdout, stderr])
}

fn stream(output: &Output, field: &str) -> Result<(OwnedFd, Option<OwnedFd>), String> {
    match output {
        Output::Capture | Output::Rotated(_) => {
            let (read, write) = pipe2(OFlag::O_CLOEXEC)
                .map_err(|e| format!("cannot create a pipe: {}", crate::process::errno_text(e)))?;
            fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                .map_err(|e| format!("cannot set up a pipe: {}", crate::process::errno_text(e)))?;
            Ok((write, Some(read)))
        }
        Output::File(path) => {
            let file = open_output(path).map_err(|e| {
                format!("cannot open {field} '{}': {}", path.display(), os_error(&e))
            })?;
            Ok((file.into(), None))
        }
    }
}

/// Opens an output file as Zeek does: created with mode 0600, truncated, appending.
pub fn open_output(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_APPEND)
        .open(path)
}

/// A pidfd for our child `pid`. The child cannot have been reaped yet (only we reap it),
/// so the pid still names it even if it has already exited.
fn pidfd_open(pid: Pid) -> Result<OwnedFd, String> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no
    // memory is passed.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(super::errno_text(nix::errno::Errno::last()));
    }
    // SAFETY: the descriptor was just returned to us by the kernel and is owned by no one
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
