//! The stem: a prepared, single-threaded process that forks script nodes.
//!
//! Starting a script node by exec costs an exec of this program, its dynamic loading,
//! and building Rhai's standard library again in the new process: most of a node's
//! start. Like Zeek's stem, the supervisor instead starts one helper process
//! (`PROGRAM __stem`) that builds the library once and then, for each script node,
//! forks itself. The fork inherits the ready library; the node only compiles and runs
//! its scripts.
//!
//! The fork is a `clone(CLONE_PARENT)`: the node becomes the *supervisor's* child, not
//! the stem's, so the supervisor watches it with a pidfd, reaps it by pid, and its
//! parent-death signal fires when the supervisor's loop thread dies, exactly as for a
//! node started by exec. The stem is single-threaded, so the forked copy holds no lock
//! another thread owned; it then sets itself up the way `spawn`'s pre-exec step does
//! (own process group, death signal, parent check, streams, directory, environment,
//! core, limits) and reports `ok` (or what failed) on a pipe before it runs the node.
//!
//! Requests travel on a `SOCK_SEQPACKET` socket pair: one JSON message per node, with
//! the node's stdout and stderr descriptors attached (`SCM_RIGHTS`); the answer is the
//! node's pid or the reason it could not start. A stem that fails is replaced, and if
//! none can be started the supervisor falls back to exec.

use std::ffi::CString;
use std::io::{IoSlice, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::prctl;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recv,
    recvmsg, send, sendmsg, socketpair,
};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{Pid, chdir, getppid, pipe2, setpgid};
use serde::{Deserialize, Serialize};

use super::errno_text;
use super::plan::{NODE_ENV, NodePayload, SpawnPlan};
use super::tree::OWNER_ENV;

/// The descriptor on which the stem finds its end of the socket pair.
const STEM_FD: RawFd = 3;
/// The largest request; a node's configuration is far smaller.
const MAX_MESSAGE: usize = 1 << 20;
/// How long the supervisor waits for the stem to answer before it gives up on it.
const PATIENCE: Duration = Duration::from_secs(5);

/// Everything a forked node needs besides its streams.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub name: String,
    pub payload: NodePayload,
    pub directory: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Removed from the stem's environment (which is the supervisor's).
    pub env_remove: Vec<String>,
    /// `WATCHDOG_PID` is set to the node's own pid.
    pub watchdog_pid: bool,
    pub cpu: Option<usize>,
    /// (`RLIMIT_*`, soft, hard, whether failing to set it is an error).
    pub rlimits: Vec<(u32, u64, u64, bool)>,
    pub creds: Option<super::plan::Creds>,
    pub umask: Option<u32>,
    /// The `cgroup.procs` files of the node's cgroup, joined first.
    pub cgroup: Vec<PathBuf>,
    pub owner: String,
    pub supervisor: i32,
}

impl Request {
    pub fn new(
        plan: &SpawnPlan,
        payload: &NodePayload,
        supervisor: Pid,
        owner: &str,
        cgroup: Vec<PathBuf>,
    ) -> Request {
        Request {
            name: plan.name.to_string(),
            payload: payload.clone(),
            directory: plan.directory.clone(),
            env: plan
                .env
                .iter()
                .filter(|(k, _)| k != NODE_ENV)
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect(),
            env_remove: plan
                .env_remove
                .iter()
                .map(|k| k.to_string_lossy().into_owned())
                .collect(),
            watchdog_pid: plan.watchdog_pid,
            cpu: plan.cpu,
            rlimits: plan.rlimits.clone(),
            creds: plan.creds.clone(),
            umask: plan.umask,
            cgroup,
            owner: owner.to_string(),
            supervisor: supervisor.as_raw(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Started(i32),
    /// The node could not start; `pid` when a process was forked (and has exited).
    Refused {
        pid: Option<i32>,
        error: String,
    },
}

/// Why the stem did not start a node.
#[derive(Debug)]
pub enum StemError {
    /// The node cannot start (its directory, say): what `create` reports. A process
    /// that was forked for it has exited and must be reaped.
    Refused { pid: Option<Pid>, error: String },
    /// The stem itself failed: replace it.
    Broken(String),
}

/// The supervisor's handle on its stem.
pub struct Stem {
    socket: OwnedFd,
    pid: Pid,
}

impl Stem {
    /// Starts `program __stem`. Must run on the loop thread, whose death kills the stem.
    pub fn start(program: &Path, supervisor: Pid) -> Result<Stem, String> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("cannot create a socket pair: {}", errno_text(e)))?;
        let theirs_raw = theirs.as_raw_fd();
        let mut command = Command::new(program);
        command
            .arg("__stem")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        // SAFETY: runs between fork and exec; only raw system calls on values made before
        // the fork (dup2 clears close-on-exec on the copy, so the stem keeps it).
        unsafe {
            command.pre_exec(move || {
                if nix::libc::dup2(theirs_raw, STEM_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                prctl::set_pdeathsig(Signal::SIGKILL)?;
                if getppid() != supervisor {
                    nix::libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| {
            format!(
                "cannot start '{}': {}",
                program.display(),
                super::os_error(&e)
            )
        })?;
        let pid = Pid::from_raw(child.id() as i32);
        drop(child);
        Ok(Stem { socket: ours, pid })
    }

    /// Has the stem fork a node with these streams. Returns the node's pid: a child of
    /// this process.
    pub fn spawn(
        &mut self,
        request: &Request,
        stdout: &OwnedFd,
        stderr: &OwnedFd,
    ) -> Result<Pid, StemError> {
        let refused = |error: String| StemError::Refused { pid: None, error };
        let message = serde_json::to_vec(request)
            .map_err(|e| refused(format!("cannot encode the request: {e}")))?;
        if message.len() > MAX_MESSAGE {
            return Err(refused(format!(
                "node '{}': its configuration is too large",
                request.name
            )));
        }
        let fds = [stdout.as_raw_fd(), stderr.as_raw_fd()];
        let broken = |what: &str, e: Errno| StemError::Broken(format!("{what}: {}", errno_text(e)));
        loop {
            match sendmsg::<()>(
                self.socket.as_raw_fd(),
                &[IoSlice::new(&message)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(broken("cannot reach the stem", e)),
            }
        }
        let mut ready = [PollFd::new(
            std::os::fd::AsFd::as_fd(&self.socket),
            PollFlags::POLLIN,
        )];
        let timeout =
            PollTimeout::try_from(PATIENCE.as_millis() as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut ready, timeout) {
            Ok(0) => return Err(StemError::Broken("the stem did not answer in time".into())),
            Ok(_) => {}
            Err(e) => return Err(broken("cannot wait for the stem", e)),
        }
        let mut answer = vec![0u8; 64 * 1024];
        let n = recv(self.socket.as_raw_fd(), &mut answer, MsgFlags::empty())
            .map_err(|e| broken("cannot read the stem's answer", e))?;
        if n == 0 {
            return Err(StemError::Broken("the stem has gone".into()));
        }
        match serde_json::from_slice::<Reply>(&answer[..n]) {
            Ok(Reply::Started(pid)) => Ok(Pid::from_raw(pid)),
            Ok(Reply::Refused { pid, error }) => Err(StemError::Refused {
                pid: pid.map(Pid::from_raw),
                error,
            }),
            Err(e) => Err(StemError::Broken(format!(
                "the stem's answer is invalid: {e}"
            ))),
        }
    }
}

impl Stem {
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

impl Drop for Stem {
    fn drop(&mut self) {
        // The pid is still the stem's: only this handle collects it (the subreaper's
        // reaping leaves it alone), so it cannot have been reused.
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
}

/// The stem's side: prepares (`prepare`: what every node would otherwise build), then
/// forks a node per request until the supervisor closes the socket. Each forked node is
/// set up as an exec'd one would be, then runs `run_node` with its payload and exits with
/// its status.
pub fn serve(prepare: impl FnOnce(), run_node: fn(NodePayload) -> i32) -> i32 {
    // SAFETY: the supervisor put our end of the socket pair at this descriptor before
    // exec, and nothing else in this process owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(STEM_FD) };
    prepare();
    let mut buffer = vec![0u8; MAX_MESSAGE];
    loop {
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let received = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let (bytes, fds) = match received {
            Ok(message) => {
                let mut fds = Vec::new();
                for cmsg in message.cmsgs().into_iter().flatten() {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        fds.extend(raw.into_iter().map(|fd| {
                            // SAFETY: the kernel just gave us these descriptors; we own them.
                            unsafe { OwnedFd::from_raw_fd(fd) }
                        }));
                    }
                }
                (message.bytes, fds)
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return 1,
        };
        if bytes == 0 {
            return 0; // the supervisor has gone
        }
        let reply = match (
            serde_json::from_slice::<Request>(&buffer[..bytes]),
            <[OwnedFd; 2]>::try_from(fds),
        ) {
            (Ok(request), Ok(streams)) => fork_node(request, streams, &socket, run_node),
            (Err(e), _) => Reply::Refused {
                pid: None,
                error: format!("the stem got an invalid request: {e}"),
            },
            (_, Err(_)) => Reply::Refused {
                pid: None,
                error: "the stem got a request without two streams".into(),
            },
        };
        let Ok(answer) = serde_json::to_vec(&reply) else {
            return 1;
        };
        if send(socket.as_raw_fd(), &answer, MsgFlags::MSG_NOSIGNAL).is_err() {
            return 1;
        }
    }
}

fn fork_node(
    request: Request,
    streams: [OwnedFd; 2],
    socket: &OwnedFd,
    run_node: fn(NodePayload) -> i32,
) -> Reply {
    let refused = |error: String| Reply::Refused { pid: None, error };
    let (status_read, status_write) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(pair) => pair,
        Err(e) => {
            return refused(format!(
                "node '{}': cannot create a pipe: {}",
                request.name,
                errno_text(e)
            ));
        }
    };
    // SAFETY: a fork-like clone of this single-threaded process: no other thread can
    // hold a lock the copy would need. With CLONE_PARENT the copy becomes the
    // supervisor's child. It never returns here: it runs the node and exits.
    let pid = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_clone,
            (nix::libc::CLONE_PARENT | nix::libc::SIGCHLD) as nix::libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        let error = errno_text(Errno::last());
        return refused(format!(
            "node '{}': cannot start a process: {error}",
            request.name
        ));
    }
    if pid == 0 {
        drop(status_read);
        std::process::exit(run_forked(
            request,
            streams,
            status_write,
            socket.as_raw_fd(),
            run_node,
        ));
    }
    drop(status_write);
    drop(streams);
    let mut word = Vec::new();
    let _ = std::fs::File::from(status_read).read_to_end(&mut word);
    let pid = pid as i32;
    match word.as_slice() {
        b"ok" => Reply::Started(pid),
        [] => Reply::Refused {
            pid: Some(pid),
            error: format!("node '{}': it died while starting", request.name),
        },
        error => Reply::Refused {
            pid: Some(pid),
            error: String::from_utf8_lossy(error).into_owned(),
        },
    }
}

/// In the forked node: set up like a freshly exec'd node, report, and run.
fn run_forked(
    request: Request,
    [stdout, stderr]: [OwnedFd; 2],
    status: OwnedFd,
    stem_socket: RawFd,
    run_node: fn(NodePayload) -> i32,
) -> i32 {
    let name = request.name.clone();
    if let Err(error) = set_up(&request, stdout, stderr, stem_socket) {
        let _ = nix::unistd::write(&status, format!("node '{name}': {error}").as_bytes());
        return 1;
    }
    let _ = nix::unistd::write(&status, b"ok");
    drop(status);
    run_node(request.payload)
}

fn set_up(
    request: &Request,
    stdout: OwnedFd,
    stderr: OwnedFd,
    stem_socket: RawFd,
) -> Result<(), String> {
    let os = |what: &str, e: Errno| format!("{what}: {}", errno_text(e));
    // Into the node's cgroup first, so that everything it does counts there.
    for procs in &request.cgroup {
        std::fs::write(procs, "0").map_err(|e| {
            format!(
                "cannot join the cgroup {}: {}",
                procs.parent().unwrap_or(procs).display(),
                super::os_error(&e)
            )
        })?;
    }
    setpgid(Pid::from_raw(0), Pid::from_raw(0))
        .map_err(|e| os("cannot start a process group", e))?;
    prctl::set_pdeathsig(Signal::SIGTERM).map_err(|e| os("cannot ask for a death signal", e))?;
    if getppid().as_raw() != request.supervisor {
        return Err("the supervisor has gone".into());
    }
    let _ = nix::unistd::close(stem_socket);
    let null = open("/dev/null", OFlag::O_RDWR, Mode::empty())
        .map_err(|e| os("cannot open /dev/null", e))?;
    for (fd, target) in [(&null, 0), (&stdout, 1), (&stderr, 2)] {
        // SAFETY: dup2 onto the standard descriptors of this (single-threaded) process.
        if unsafe { nix::libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return Err(os("cannot set up the standard streams", Errno::last()));
        }
    }
    drop((null, stdout, stderr));
    if let Some(dir) = &request.directory {
        chdir(dir).map_err(|e| os(&format!("cannot enter directory '{}'", dir.display()), e))?;
    }
    // SAFETY (set_var, remove_var): this forked process has a single thread.
    unsafe {
        for key in &request.env_remove {
            std::env::remove_var(key);
        }
        if request.watchdog_pid {
            std::env::set_var(
                super::notify::WATCHDOG_PID_ENV,
                std::process::id().to_string(),
            );
        }
        for (key, value) in &request.env {
            std::env::set_var(key, value);
        }
        std::env::set_var(OWNER_ENV, &request.owner);
        std::env::remove_var(NODE_ENV);
    }
    if let Some(core) = request.cpu {
        let mut set = CpuSet::new();
        set.set(core).map_err(|e| os("cannot pin to a core", e))?;
        sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| os("cannot pin to a core", e))?;
    }
    for &(resource, soft, hard, required) in &request.rlimits {
        let limit = nix::libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: prlimit64 on this process, reading `limit`, writing nothing.
        let r = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_prlimit64,
                0,
                resource as nix::libc::c_ulong,
                &limit as *const nix::libc::rlimit,
                std::ptr::null_mut::<nix::libc::rlimit>(),
            )
        };
        if r < 0 && required {
            return Err(os("cannot set its resource limits", Errno::last()));
        }
    }
    // Limits first (raising one may need root), then the change of user.
    if let Some(creds) = &request.creds {
        use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
        let groups: Vec<Gid> = creds.groups.iter().map(|&g| Gid::from_raw(g)).collect();
        let gid = Gid::from_raw(creds.gid);
        let uid = Uid::from_raw(creds.uid);
        setgroups(&groups).map_err(|e| os("cannot set its groups", e))?;
        setresgid(gid, gid, gid).map_err(|e| os("cannot change to its group", e))?;
        setresuid(uid, uid, uid).map_err(|e| os("cannot change to its user", e))?;
        // A change of user clears the death signal: arm it again, and check the parent
        // once more in case it died meanwhile.
        prctl::set_pdeathsig(Signal::SIGTERM)
            .map_err(|e| os("cannot ask for a death signal", e))?;
        if getppid().as_raw() != request.supervisor {
            return Err("the supervisor has gone".into());
        }
    }
    if let Some(mask) = request.umask {
        nix::sys::stat::umask(Mode::from_bits_truncate(mask as nix::libc::mode_t));
    }
    // The kernel's name for the process, as `ps -o comm` and `top` show it.
    let comm: String = request.name.chars().take(15).collect();
    if let Ok(comm) = CString::new(comm) {
        let _ = prctl::set_name(&comm);
    }
    Ok(())
}

/// Collects a process the stem forked that exited while starting.
pub fn collect(pid: Pid) {
    let _ = waitpid(pid, Some(WaitPidFlag::empty()));
}
