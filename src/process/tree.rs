//! Finding the processes a node left behind.
//!
//! A supervisor in the supervisor role is a child subreaper: descendants of a node that
//! lose their parent (a daemon that double-forked, a `setsid` helper whose node died)
//! become its children instead of init's. Every node is started with `OWNER_ENV` in its
//! environment, naming the supervisor and the process instance; descendants inherit it,
//! so an adopted process can be traced back to the node instance it came from by reading
//! its initial environment (`/proc/PID/environ`).
//!
//! This kernel offers no list of a process's children (`/proc/PID/task/*/children`
//! needs CONFIG_PROC_CHILDREN), so `children` scans `/proc`; callers batch their scans.

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use super::ProcId;

/// Set in every node's environment: `SUPERVISOR_PID.PROC_ID`.
pub const OWNER_ENV: &str = "RHAI_SUPERVISOR_OWNER";

/// The value of `OWNER_ENV` for instance `proc` of this supervisor.
pub fn owner_tag(supervisor: Pid, proc: ProcId) -> String {
    format!("{supervisor}.{}", proc.0)
}

/// The live children of `parent`, less those for which `known` is true: they are not
/// looked at, which matters because reading a process's `stat` is most of a scan's cost
/// (about 12 us each; a supervisor's own nodes are most of the processes on the machine).
pub fn children(parent: Pid, known: impl Fn(Pid) -> bool) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
        .filter(|&pid| !known(pid) && parent_of(pid.as_raw()) == Some(parent.as_raw()))
        .collect()
}

/// The parent of `pid`, from `/proc/PID/stat` (the fields after the command name, which
/// may itself contain spaces and parentheses).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// Which instance of which supervisor `pid` descends from, if its environment says.
pub fn owner_of(pid: Pid, supervisor: Pid) -> Option<ProcId> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{OWNER_ENV}={supervisor}.");
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .and_then(|id| std::str::from_utf8(id).ok()?.parse().ok())
        .map(ProcId)
}

/// Reaps every exited child for which `is_ours` is false (node leaders, whose exits the
/// I/O thread reports and the loop collects, and the stem), stopping at the first one
/// for which it is true: that one is returned, to be collected by its owner, which lets
/// the next call go further. Returns the reaped pids too.
pub fn reap_adopted(is_ours: impl Fn(Pid) -> bool) -> (Vec<Pid>, Option<Pid>) {
    let mut reaped = Vec::new();
    let mut stopped_at = None;
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let pid = match waitid(Id::All, flags) {
            Ok(WaitStatus::Exited(pid, _)) | Ok(WaitStatus::Signaled(pid, _, _)) => pid,
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::warn!(
                    "cannot look for exited children: {}",
                    crate::process::errno_text(e)
                );
                break;
            }
        };
        if is_ours(pid) {
            stopped_at = Some(pid);
            break;
        }
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(_) => reaped.push(pid),
            Err(e) => {
                log::warn!(
                    "cannot reap adopted process {pid}: {}",
                    crate::process::errno_text(e)
                );
                break;
            }
        }
    }
    (reaped, stopped_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn finds_its_children_and_their_owner() {
        let me = nix::unistd::getpid();
        let mut child = Command::new("sleep")
            .arg("30")
            .env(OWNER_ENV, owner_tag(me, ProcId(42)))
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        assert!(children(me, |_| false).contains(&pid));
        assert!(!children(me, |p| p == pid).contains(&pid));
        // spawn returns once exec has begun; the new environment is published a moment
        // later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while owner_of(pid, me).is_none() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(owner_of(pid, me), Some(ProcId(42)));
        assert_eq!(
            owner_of(pid, Pid::from_raw(1)),
            None,
            "another supervisor's tag"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!children(me, |_| false).contains(&pid));
    }

    #[test]
    fn parses_stat_with_odd_command_names() {
        assert_eq!(
            parent_of(std::process::id() as i32),
            Some(nix::unistd::getppid().as_raw())
        );
        assert_eq!(parent_of(-5), None);
    }
}
