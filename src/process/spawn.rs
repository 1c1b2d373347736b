//! Starting one node process from a `SpawnPlan`.
//!
//! Everything the child needs is built before the fork (argv, envp, the CPU set, the
//! open files and pipes); after the fork the child only makes async-signal-safe calls:
//! it joins its own process group, asks for the plan's death signal when the spawning
//! thread dies, re-checks that its parent is still the supervisor, pins itself to its
//! core, and execs. An exec failure comes back to `spawn` through std's error pipe, so
//! a program that cannot start is reported by `Supervisor::create` itself.
//!
//! Must be called on the loop thread: the parent-death signal fires when the thread
//! that forked exits, and the loop thread lives as long as the supervisor.

use std::fs::{File, OpenOptions};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Pid, getppid, pipe2};

use super::os_error;
use super::plan::{Output, SpawnPlan};

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
    let [(stdout_end, stdout), (stderr_end, stderr)] = streams(plan)?;

    let mut command = Command::new(&plan.program);
    command.args(&plan.args);
    for key in &plan.env_remove {
        command.env_remove(key);
    }
    command.envs(plan.env.iter().map(|(k, v)| (k, v)));
    command.env(super::tree::OWNER_ENV, owner);
    if let Some(dir) = &plan.directory {
        command.current_dir(dir);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout_end))
        .stderr(Stdio::from(stderr_end))
        .process_group(0);

    let cpus = match plan.cpu {
        Some(core) => {
            let mut set = CpuSet::new();
            set.set(core).map_err(|e| {
                format!(
                    "node '{name}': cpu_affinity {core}: {}",
                    crate::process::errno_text(e)
                )
            })?;
            Some(set)
        }
        None => None,
    };
    let death_signal = plan.death_signal;
    let nofile = plan.nofile;
    // SAFETY: the closure runs in the child between fork and exec. It only makes raw
    // system calls (prctl, getppid, sched_setaffinity, setrlimit, _exit) on values built
    // before the fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            prctl::set_pdeathsig(death_signal)?;
            if getppid() != supervisor {
                // The supervisor died before the death signal was armed.
                nix::libc::_exit(1);
            }
            if let Some(set) = &cpus {
                sched_setaffinity(Pid::from_raw(0), set)?;
            }
            if let Some((soft, hard)) = nofile {
                setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;
            }
            Ok(())
        });
    }

    let child = command.spawn().map_err(|e| {
        let program = plan.program.display();
        format!("node '{name}': cannot start '{program}': {}", os_error(&e))
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    // The child is reaped by pid when the reactor reports its exit; std's handle is not
    // needed (dropping it neither waits nor kills).
    drop(child);
    let pidfd = watch(pid, name)?;
    Ok(Spawned {
        pid,
        pidfd,
        stdout,
        stderr,
    })
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
