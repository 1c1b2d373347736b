//! Starting one node process from a `SpawnPlan`.
//!
//! The program is found and checked (exists, is executable, is a native program or a
//! script whose interpreter is) before the clone (`program`), so a program that cannot
//! start is reported by `Supervisor::create` itself. Everything the child needs is built
//! before the clone too (argv, envp, the CPU set, the open files and pipes: `image`);
//! the child only makes raw system calls (see `raw`): it takes a table of the few
//! descriptors it needs, joins its own process group, asks for the plan's death signal
//! when the spawning thread dies, re-checks that its parent is still the supervisor,
//! sets up its streams, directory, core and limits, and execs.
//!
//! The supervisor does not wait for the exec (see `slots`): it goes on with the next
//! statement of the script, or the next revival, while the child execs on another core.
//! A step that fails in the child (rare once the checks passed: out of memory, an
//! environment too large for the kernel, a file being written) ends it with status 127,
//! and its reason is reported when its exit is handled (`Slots::finished`).
//!
//! Must be called on the loop thread: the parent-death signal fires when the thread
//! that forked exits, and the loop thread lives as long as the supervisor.

mod image;
mod program;
mod slots;

use std::fs::{File, OpenOptions};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::{Pid, pipe2};

use super::plan::{Output, SpawnPlan};
use super::{StartError, errno_text, os_error, raw};
use image::Image;
pub use slots::Slots;

/// A started node process.
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    /// Readable once the process has exited.
    pub pidfd: OwnedFd,
    /// The supervisor's (non-blocking) read ends of captured streams.
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// The read end of its readiness descriptor.
    pub ready: Option<OwnedFd>,
}

/// Starts `plan`. `supervisor` is this process's pid, which the child checks after
/// arming its death signal; `owner` is the instance tag its descendants inherit
/// (`tree::OWNER_ENV`); `cgroup` the `cgroup.procs` files the child joins first. With
/// `wait`, returns once the child has exec'd (or failed).
pub fn spawn(
    plan: &SpawnPlan,
    supervisor: Pid,
    owner: &str,
    slots: &mut Slots,
    wait: bool,
    cgroup: Vec<OwnedFd>,
) -> Result<Spawned, StartError> {
    let name = &plan.name;
    let fail = |what: String| format!("node '{name}': {what}");
    let (program, meta) = program::resolve(plan).map_err(|reason| {
        StartError::Program(fail(format!(
            "cannot start '{}': {reason}",
            plan.program.display()
        )))
    })?;
    if let Some(dir) = &plan.directory {
        nix::unistd::access(dir.as_path(), nix::unistd::AccessFlags::X_OK).map_err(|e| {
            StartError::Config(fail(format!(
                "cannot enter the directory '{}': {}",
                dir.display(),
                errno_text(e)
            )))
        })?;
    }
    // Wait for the exec when asked, when the program is not known to exec (so that its
    // failure is reported here), and on architectures where the child cannot avoid libc.
    let wait = wait || !raw::AVAILABLE || !slots.known_format(&program, &meta);
    let [(stdout_end, stdout), (stderr_end, stderr)] = streams(plan)?;
    let image = Image::new(plan, &program, owner, supervisor, cgroup)
        .map_err(|e| StartError::Config(fail(e)))?;
    let (ready, ready_end) = match plan.ready_fd {
        Some(_) => {
            let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| {
                StartError::System(fail(format!("cannot create a pipe: {}", errno_text(e))))
            })?;
            (Some(read), Some(write))
        }
        None => (None, None),
    };
    let pid = slots.launch(image, [stdout_end, stderr_end], ready_end, plan, wait)?;
    let pidfd = match watch(pid, name) {
        Ok(fd) => fd,
        Err(e) => {
            // `watch` killed and reaped it.
            slots.finished(pid);
            return Err(StartError::System(e));
        }
    };
    Ok(Spawned {
        pid,
        pidfd,
        stdout,
        stderr,
        ready,
    })
}

/// Checks what `spawn` would refuse about `plan`'s program and directory, without
/// starting anything.
pub fn check_program(plan: &SpawnPlan) -> Result<(), StartError> {
    if plan.payload.is_some() {
        return Ok(());
    }
    program::resolve(plan).map_err(|reason| {
        StartError::Program(format!(
            "node '{}': cannot start '{}': {reason}",
            plan.name,
            plan.program.display()
        ))
    })?;
    Ok(())
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
pub fn streams(plan: &SpawnPlan) -> Result<[(OwnedFd, Option<OwnedFd>); 2], StartError> {
    let owner = plan.creds.as_ref().map(|c| (c.uid, c.gid));
    let stdout = stream(&plan.name, &plan.stdout, "stdout_file", owner)?;
    let stderr = stream(&plan.name, &plan.stderr, "stderr_file", owner)?;
    Ok([stdout, stderr])
}

fn stream(
    name: &str,
    output: &Output,
    field: &str,
    owner: Option<(u32, u32)>,
) -> Result<(OwnedFd, Option<OwnedFd>), StartError> {
    match output {
        Output::Capture | Output::Rotated(_) => {
            let system = |what: &str, e| {
                StartError::System(format!("node '{name}': {what}: {}", errno_text(e)))
            };
            let (read, write) =
                pipe2(OFlag::O_CLOEXEC).map_err(|e| system("cannot create a pipe", e))?;
            fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                .map_err(|e| system("cannot set up a pipe", e))?;
            Ok((write, Some(read)))
        }
        Output::File(path) => {
            let file = open_output(path).map_err(|e| {
                StartError::Config(format!(
                    "node '{name}': cannot open {field} '{}': {}",
                    path.display(),
                    os_error(&e)
                ))
            })?;
            give(&file, owner).map_err(|e| {
                StartError::Config(format!(
                    "node '{name}': cannot give {field} '{}' to its user: {e}",
                    path.display()
                ))
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

/// Makes `file` belong to `owner` (uid, gid): a node's output files are its user's.
pub fn give(file: &File, owner: Option<(u32, u32)>) -> Result<(), String> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    nix::unistd::fchown(file, Some(uid.into()), Some(gid.into())).map_err(errno_text)
}

/// A pidfd for our child `pid`. The child cannot have been reaped yet (only we reap it),
/// so the pid still names it even if it has already exited.
/// A pidfd for process `pid`.
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, String> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no
    // memory is passed.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(errno_text(nix::errno::Errno::last()));
    }
    // SAFETY: the descriptor was just returned to us by the kernel and is owned by no one
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
