//! The native process backend: how a node becomes a process and how its life reaches
//! the loop.
//!
//! - `plan` turns a `NodeConfig` into a `SpawnPlan` (paths resolved, directory created,
//!   core checked, env validated): everything that can be refused is refused there, so
//!   `Supervisor::create` reports it at once.
//! - `spawn` starts a command node (a clone that shares the supervisor's memory, takes a
//!   table of only the descriptors it needs, then execs, while the supervisor goes on;
//!   `raw` holds the system calls it makes): own process group, parent-death signal,
//!   affinity, output pipes or files, and a pidfd for the new process.
//! - `stem` forks script nodes from a prepared helper process (Rhai's library built
//!   once), as the supervisor's own children.
//! - `reactor` is the one I/O thread: it waits with epoll on every pidfd, every output
//!   pipe and the signal pipe, and sends `Event`s to the loop. A node's exit is sent only
//!   after its pipes were drained, so the loop sees its last line before its exit.
//! - `lines` splits pipe bytes into bounded lines; `rotate` writes rotated output files.
//! - `tree` finds what nodes leave behind (the supervisor is a subreaper) in `/proc`.
//!
//! Reaping is done by pid (`waitpid(pid)`) on the loop thread when the loop handles the
//! exit, so a pid stays valid (a zombie) for as long as the loop may still signal it,
//! and children that someone else in the process spawned are never stolen (adopted
//! processes are reaped only in subreaper mode, and never a node or the stem).

pub mod lines;
pub mod plan;
mod raw;
pub mod reactor;
pub mod rotate;
pub mod spawn;
pub mod stem;
pub mod tree;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::config::ExitInfo;

/// Identifies one spawned process over its whole life, including after its pid is
/// reused by the system. Assigned by the supervisor, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId(pub u64);

/// Which output stream of a node a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Sends `signal` to the process group led by `pid`. A group that is already gone is
/// not an error: the node may have exited on its own a moment ago.
pub fn signal_group(pid: Pid, signal: Signal) {
    match killpg(pid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => log::warn!(
            "cannot send {signal} to process group {pid}: {}",
            crate::process::errno_text(e)
        ),
    }
}

/// Collects the exit status of our child `pid`, which the reactor saw exit (its pidfd
/// became readable), so this does not block.
pub fn reap(pid: Pid) -> Option<ExitInfo> {
    for _ in 0..10_000 {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Some(ExitInfo::Code(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Some(ExitInfo::Signal(signal as i32)),
            Ok(WaitStatus::StillAlive) => {
                // A pidfd is readable only once the process has exited; if the status is
                // not there yet, it will be in a moment (the kernel publishes both together).
                std::thread::yield_now();
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::warn!(
                    "cannot collect exit status of pid {pid}: {}",
                    crate::process::errno_text(e)
                );
                return None;
            }
        }
    }
    log::warn!("pid {pid} was reported gone but its exit status never arrived");
    None
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
