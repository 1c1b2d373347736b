//! The process backend: the mechanism under the supervisor's policy. It starts a
//! node's process, signals it, collects it when it has ended, and looks after what it
//! leaves behind; it knows nothing of scripts, the loop or the node table.
//!
//! The supervisor reaches it only through `Backend`. `Native` is the real one; the
//! supervisor's tests drive `fake::Fake`, whose clock and processes the test plays.
//!
//! Inside the native backend:
//! - `plan` turns a `NodeConfig` into a `SpawnPlan` (paths resolved, directory created,
//!   core checked, env validated): everything that can be refused is refused there, so
//!   `Supervisor::create` reports it at once.
//! - `spawn` starts a command node (a clone that shares the supervisor's memory, takes a
//!   table of only the descriptors it needs, then execs, while the supervisor goes on;
//!   `raw` holds the system calls it makes): own process group, parent-death signal,
//!   affinity, output pipes or files, and a pidfd for the new process.
//! - `stem` forks script nodes from a prepared helper process (Rhai's library built
//!   once), as the supervisor's own children.
//! - `cgroup` makes a cgroup per node process with `memory`, `pids` or `cpu` limits
//!   (v2 where delegated, else v1), which the child joins before its program runs;
//!   the backend stops what is in it with the node and removes it once empty.
//! - `envfile` reads a node's `env_file` at each start.
//! - `reactor` is the one I/O thread: it waits with epoll on every pidfd, every output
//!   pipe and the signal pipe, and sends `IoEvent`s to the loop. A node's exit is sent
//!   only after its pipes were drained, so the loop sees its last line before its exit.
//! - `leftovers` and `tree` find and stop what nodes leave behind (the supervisor is a
//!   subreaper); `lines` splits pipe bytes into bounded lines; `rotate` writes rotated
//!   output files, and `compress` gzips them on a worker thread of its own.
//!
//! Reaping is done by pid (`waitpid(pid)`) on the loop thread when the loop handles the
//! exit, so a pid stays valid (a zombie) for as long as the loop may still signal it,
//! and children that someone else in the process spawned are never stolen (adopted
//! processes are reaped only in subreaper mode, and never a node or the stem).

pub mod cgroup;
pub mod collector;
pub mod compress;
pub mod envfile;
#[cfg(test)]
pub mod fake;
mod leftovers;
pub mod lines;
mod native;
pub mod notify;
pub mod plan;
pub mod probe;
mod raw;
pub mod reactor;
pub mod rotate;
pub mod spawn;
pub mod stem;
pub mod tree;
pub mod trim;

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

pub use crate::config::Stream;
use crate::config::{Check, ExitInfo, NodeConfig};
pub use native::Native;
pub use rotate::OutputFiles;

/// Identifies one spawned process over its whole life, including after its pid is
/// reused by the system. Assigned by the supervisor, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId(pub u64);

/// Which start of a node this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The first, by `create`: the files the supervisor writes for the node are opened,
    /// and the call returns without waiting for the program's exec (a burst of creates
    /// from a script gains more from not waiting).
    First,
    /// `create` of a node that waits for its dependencies: everything `First` checks
    /// and opens, but no process yet.
    Check,
    /// A revival or a restart: the call returns once the program runs, so that the
    /// loop's other work does not delay it.
    Again,
}

/// A process that was started.
#[derive(Debug)]
pub struct Started {
    /// Its pid; none for `Start::Check`.
    pub pid: Option<Pid>,
    /// The node's rotated output files, for `Start::First` and `Start::Check` (empty
    /// otherwise).
    pub files: OutputFiles,
}

/// What becomes of what is left of a process group whose leader has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remnants {
    /// SIGKILL now: the node was being stopped.
    Kill,
    /// SIGTERM now and SIGKILL after this long: the node died on its own.
    Stop(Duration),
    /// Nothing: the node's kill mode is `process`.
    Leave,
}

/// Why a node's process could not be started. Each message names the node and, where
/// the configuration is at fault, the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The configuration asks for what cannot be had: a directory, a core, a script,
    /// an environment entry, an output file.
    #[error("{0}")]
    Config(String),
    /// The program cannot be started: missing, not executable, of an unknown format.
    #[error("{0}")]
    Program(String),
    /// The machine refused: a pipe, a process, a descriptor, the stem.
    #[error("{0}")]
    System(String),
}

/// How a process ended, as the backend collected it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub exit: Option<ExitInfo>,
    /// For the log: `exited with code 3`, `killed by SIGKILL`, or why the program could
    /// not start when the process failed before it ran.
    pub what: String,
    /// Why it ended, when more is known than its status: `out of memory (limit 64 MiB)`.
    pub reason: Option<String>,
}

/// What a node's processes use.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Seconds of CPU time.
    pub cpu: f64,
    /// Bytes of memory.
    pub memory: u64,
}

/// What the supervisor's policy asks of the operating system.
pub trait Backend {
    /// The current time, by this backend's clock.
    fn now(&self) -> Instant;

    /// Starts instance `proc` of the node `config`: plans it (paths, directory, checks),
    /// starts its process in a process group of its own, and hands the process's exit
    /// and output to the I/O thread. An error says why, naming the node and the field.
    fn start(
        &mut self,
        config: &NodeConfig,
        proc: ProcId,
        start: Start,
    ) -> Result<Started, StartError>;

    /// Sends `signal` to the process group led by `pid`. A group that is already gone
    /// is not an error: the node may have exited on its own a moment ago.
    fn signal_group(&mut self, pid: Pid, signal: Signal);

    /// Sends `signal` to the process `pid` only.
    fn signal_process(&mut self, pid: Pid, signal: Signal);

    /// Instance `proc`, led by `pid`, has ended (the I/O thread said so): collects its
    /// exit status and deals with what is left of its group as `remnants` says.
    fn ended(&mut self, proc: ProcId, pid: Pid, remnants: Remnants) -> Ended;

    /// Starts one try of `check` for the node `config`, named `probe`, bounded by
    /// `timeout`. A network check ends with `IoEvent::Probed`; an `exec` check is a
    /// process (its pid is returned) whose output and exit come like a node's.
    fn probe(
        &mut self,
        config: &NodeConfig,
        probe: ProcId,
        check: &Check,
        timeout: Duration,
    ) -> Result<Option<Pid>, String>;

    /// What each of these processes (an instance and its leader's pid) uses with
    /// everything it started: from its cgroup where it has one, else from its process
    /// group. Looked up only when asked (`status` of one node, `ctl status`).
    fn usage(&self, of: &[(ProcId, Pid)]) -> Vec<Option<Usage>>;

    /// The instance that process `pid` belongs to (its leader, or a descendant), for a
    /// notification it sent.
    fn sender_of(&self, pid: Pid) -> Option<ProcId>;

    /// The earliest time at which `fire_due` has work.
    fn next_deadline(&self) -> Option<Instant>;

    /// Does the backend's time-driven work that is due at `now`.
    fn fire_due(&mut self, now: Instant);

    /// Once per loop turn: lets go of what started children held until their exec, and
    /// looks for processes that nodes left behind when something may have been adopted.
    fn tidy(&mut self, now: Instant);

    /// SIGCHLD reached the process (a subreaper's adopted children may have exited).
    fn child_exited(&mut self);

    /// Shutdown has begun: no node starts any more, and whatever nodes left behind is
    /// stopped too.
    fn shut_down(&mut self);

    /// Nothing the backend looks after is left (no leftover being stopped).
    fn is_idle(&self) -> bool;
}

/// Sends `signal` to the process group led by `pid`; a group that is gone is not an
/// error.
pub fn signal_group(pid: Pid, signal: Signal) {
    match killpg(pid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => log::warn!(
            "cannot send {signal} to process group {pid}: {}",
            errno_text(e)
        ),
    }
}

/// Sends `signal` to the process `pid`; one that is gone is not an error.
pub fn signal_process(pid: Pid, signal: Signal) {
    match kill(pid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => log::warn!("cannot send {signal} to process {pid}: {}", errno_text(e)),
    }
}

/// An OS error as a short lowercase phrase: "permission denied".
pub fn os_error(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => errno_text(nix::errno::Errno::from_raw(code)),
        None => error.to_string(),
    }
}

/// The C library's wording of an errno, lowercased: "resource temporarily unavailable".
pub fn errno_text(errno: nix::errno::Errno) -> String {
    let text = std::io::Error::from_raw_os_error(errno as i32).to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
