//! Starting one node process from a `SpawnPlan`.
//!
//! The program is found and checked (exists, is executable) before the fork, so a
//! program that cannot start is reported by `Supervisor::create` itself. Everything the
//! child needs is built before the fork too (argv, envp, the CPU set, the open files
//! and pipes); after the fork the child only makes async-signal-safe system calls: it
//! joins its own process group, asks for the plan's death signal when the spawning
//! thread dies, re-checks that its parent is still the supervisor, sets up its streams,
//! directory, core and limits, and execs. The supervisor does not wait for the exec (as
//! std's `Command` does, to report its errors): the children of a burst of creates
//! exec in parallel while it goes on. An exec that fails after all ends the child with
//! status 127 and a line on its stderr, like a crash.
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
use nix::unistd::{ForkResult, Pid, fork, pipe2};

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

/// Starts `plan`. `supervisor` is this process's pid, which the child checks after
/// arming its death signal, in case the supervisor died during the fork; `owner` is the
/// instance tag its descendants inherit (`tree::OWNER_ENV`).
pub fn spawn(plan: &SpawnPlan, supervisor: Pid, owner: &str) -> Result<Spawned, String> {
    let name = &plan.name;
    let fail = |what: String| format!("node '{name}': {what}");
    let program = resolve(plan).map_err(|reason| {
        fail(format!(
            "cannot start '{}': {reason}",
            plan.program.display()
        ))
    })?;
    let [(stdout_end, stdout), (stderr_end, stderr)] = streams(plan)?;
    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail(format!("cannot open /dev/null: {}", errno_text(e))))?;

    // Everything the child touches, built now: after the fork it may not allocate.
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
    let child = Child {
        program: &program,
        argv: &argv_ptrs,
        envp: &envp_ptrs,
        directory: directory.as_deref(),
        fds: [
            null.as_raw_fd(),
            stdout_end.as_raw_fd(),
            stderr_end.as_raw_fd(),
        ],
        death_signal: plan.death_signal,
        supervisor,
        cpus: cpus.as_ref(),
        nofile: plan.nofile,
    };
    // SAFETY: the child of this (multi-threaded) process runs only `Child::exec`, which
    // makes raw system calls on memory prepared above and never returns.
    let pid = match unsafe { fork() } {
        Ok(ForkResult::Child) => child.exec(),
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            return Err(fail(format!(
                "cannot start '{}': {}",
                plan.program.display(),
                errno_text(e)
            )));
        }
    };
    // The child has its copies; the parent's ends close here.
    drop((null, stdout_end, stderr_end));
    let pidfd = watch(pid, name)?;
    Ok(Spawned {
        pid,
        pidfd,
        stdout,
        stderr,
    })
}

/// What the forked child needs, all of it made before the fork.
struct Child<'a> {
    program: &'a CStr,
    argv: &'a [*const c_char],
    envp: &'a [*const c_char],
    directory: Option<&'a CStr>,
    /// stdin, stdout, stderr.
    fds: [RawFd; 3],
    death_signal: Signal,
    supervisor: Pid,
    cpus: Option<&'a CpuSet>,
    nofile: Option<(u64, u64)>,
}

impl Child<'_> {
    /// In the child, between fork and exec: only async-signal-safe system calls.
    fn exec(&self) -> ! {
        use nix::libc;
        let die = |message: &[u8], code: i32| -> ! {
            // SAFETY: write and _exit are async-signal-safe; the message is static.
            unsafe {
                libc::write(2, message.as_ptr().cast(), message.len());
                libc::_exit(code)
            }
        };
        // SAFETY: each call is a plain system call on values prepared before the fork.
        unsafe {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, self.death_signal as libc::c_ulong);
            if libc::getppid() != self.supervisor.as_raw() {
                // The supervisor died before the death signal was armed.
                libc::_exit(1);
            }
            for (target, &fd) in self.fds.iter().enumerate() {
                if libc::dup2(fd, target as i32) < 0 {
                    die(b"rhai-supervisor: cannot set up the node's streams\n", 126);
                }
            }
            if let Some(dir) = self.directory {
                if libc::chdir(dir.as_ptr()) < 0 {
                    die(b"rhai-supervisor: cannot enter the node's directory\n", 126);
                }
            }
            if let Some(set) = self.cpus {
                if sched_setaffinity(Pid::from_raw(0), set).is_err() {
                    die(b"rhai-supervisor: cannot pin the node to its core\n", 126);
                }
            }
            if let Some((soft, hard)) = self.nofile {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
            // Rust ignores SIGPIPE in the supervisor; programs expect the default. Handled
            // signals are reset by exec; ignored ones are not.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let empty: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::execve(
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            );
        }
        die(b"rhai-supervisor: cannot execute the node's program\n", 127)
    }
}

/// The node's environment: the supervisor's, without `env_remove`, with the plan's
/// entries and the owner tag.
fn environment(plan: &SpawnPlan, owner: &str) -> Vec<(OsString, OsString)> {
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os()
        .filter(|(k, _)| !plan.env_remove.contains(k))
        .collect();
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
