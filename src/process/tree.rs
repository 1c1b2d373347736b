//! Finding the processes a node left behind.
//!
//! A supervisor in the supervisor role is a child subreaper: descendants of a node that
//! lose their parent (a daemon that double-forked, a `setsid` helper whose node died)
//! become its children instead of init's. Every node is started with `OWNER_ENV` in its
//! environment, naming the supervisor and the process instance; descendants inherit it,
//! so an adopted process can be traced back to the node instance it came from by reading
//! its initial environment (`/proc/PID/environ`).
//!
//! `look` reads the kernel's lists of a process's children
//! (`/proc/PID/task/*/children`), and scans all of `/proc` where the kernel has none
//! (built without CONFIG_PROC_CHILDREN); callers space their looks (see `leftovers`).

use nix::unistd::Pid;

use super::ProcId;

/// Set in every node's environment: `SUPERVISOR_PID.PROC_ID`.
pub const OWNER_ENV: &str = "RHAI_SUPERVISOR_OWNER";

/// The value of `OWNER_ENV` for instance `proc` of this supervisor.
pub fn owner_tag(supervisor: Pid, proc: ProcId) -> String {
    format!("{supervisor}.{}", proc.0)
}

/// A child of this process that is not a node leader, as a look found it.
pub struct Child {
    pub pid: Pid,
    /// It has exited and waits to be reaped.
    pub zombie: bool,
}

/// The children of `parent`, zombies included, less those for which `known` is true:
/// those are not looked at, which matters when the kernel keeps no list of children and
/// every process's `stat` must be read (about 12 us each; a supervisor's own nodes are
/// most of the processes on the machine). Only the `stat` of the few unknown ones is
/// read.
pub fn look(parent: Pid, known: impl Fn(Pid) -> bool) -> Vec<Child> {
    let parent = parent.as_raw();
    listed_children(parent)
        .unwrap_or_else(every_process)
        .into_iter()
        .map(Pid::from_raw)
        .filter(|&pid| !known(pid))
        .filter_map(|pid| {
            let (state, ppid) = state_of(pid.as_raw())?;
            (ppid == parent).then_some(Child {
                pid,
                zombie: state == 'Z',
            })
        })
        .collect()
}

/// Every process on the machine (that this one can see).
fn every_process() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// The children of every thread of `pid`, from the kernel's lists; `None` when the
/// kernel keeps none. A child belongs to the thread that made it; an adopted one to the
/// process, listed under one of its threads.
fn listed_children(pid: i32) -> Option<Vec<i32>> {
    // The main thread's list exists whenever the kernel keeps lists at all.
    if !std::path::Path::new(&format!("/proc/{pid}/task/{pid}/children")).exists() {
        return None;
    }
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread that ended since the listing has no list any more: nothing to add.
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            found.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    Some(found)
}

/// The parent of live process `pid` (not a zombie).
pub fn parent_of(pid: i32) -> Option<i32> {
    match state_of(pid)? {
        ('Z' | 'X', _) => None,
        (_, parent) => Some(parent),
    }
}

/// The state letter and the parent of `pid`, from `/proc/PID/stat` (the fields after
/// the command name, which may itself contain spaces and parentheses).
fn state_of(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// What process `pid` uses (with its reaped children's CPU time): its process group
/// and its usage, from `/proc/PID/stat`; `None` for a zombie or a process gone.
pub fn usage_of(pid: i32) -> Option<(i32, super::Usage)> {
    stat_of(pid).map(|(pgrp, usage, _)| (pgrp, usage))
}

/// `usage_of`, and how many threads the process has (field 20).
fn stat_of(pid: i32) -> Option<(i32, super::Usage, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, from the state (field 3) on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let pgrp = fields.get(5 - 3)?.parse().ok()?;
    // utime, stime, cutime, cstime (fields 14-17), in clock ticks; rss (24), in pages.
    let ticks = field(14)? + field(15)? + field(16)? + field(17)?;
    let rss = field(24)?;
    let threads = field(20).unwrap_or(0);
    Some((
        pgrp,
        super::Usage {
            cpu: ticks as f64 / clock_ticks(),
            memory: rss * page_size(),
        },
        threads,
    ))
}

/// What the processes of the process group led by `leader` use: the leader and its
/// descendants still in its group, found through the kernel's lists of children, so the
/// cost is that of the node's own processes, not of every process on the machine. Where
/// the kernel keeps no lists, every process is looked at.
pub fn group_usage(leader: i32) -> Option<super::Usage> {
    let mut sum: Option<super::Usage> = None;
    let mut add = |of: super::Usage| {
        let total = sum.get_or_insert_with(super::Usage::default);
        total.cpu += of.cpu;
        total.memory += of.memory;
    };
    let mut queue = vec![leader];
    let mut seen = 0;
    while let Some(pid) = queue.pop() {
        seen += 1;
        if seen > 100_000 {
            break;
        }
        let mut threads = 0;
        if let Some((pgrp, of, count)) = stat_of(pid) {
            threads = count;
            if pgrp == leader {
                add(of);
            }
        }
        // A process of one thread has one list: read it, without listing its threads
        // (three system calls a node fewer, at 1000 nodes a scrape).
        let listed = if threads == 1 {
            match std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
                Ok(list) => Some(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok())
                        .collect(),
                ),
                // Gone meanwhile: nothing below it. Still there: the kernel keeps no
                // lists, which `listed_children` finds out.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        listed_children(pid)
                    } else {
                        Some(Vec::new())
                    }
                }
                Err(_) => Some(Vec::new()),
            }
        } else {
            listed_children(pid)
        };
        match listed {
            Some(children) => queue.extend(children),
            None => {
                // No lists: one look at every process instead.
                let mut total = None;
                for pid in every_process() {
                    if let Some((pgrp, of)) = usage_of(pid) {
                        if pgrp == leader {
                            let sum: &mut super::Usage = total.get_or_insert_with(Default::default);
                            sum.cpu += of.cpu;
                            sum.memory += of.memory;
                        }
                    }
                }
                return total;
            }
        }
    }
    sum
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let size = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn children(parent: Pid, known: impl Fn(Pid) -> bool) -> Vec<Pid> {
        look(parent, known)
            .into_iter()
            .filter(|child| !child.zombie)
            .map(|child| child.pid)
            .collect()
    }

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
        // Both sources: the kernel's lists (where it keeps them) and the scan.
        if let Some(listed) = listed_children(me.as_raw()) {
            assert!(listed.contains(&pid.as_raw()));
        }
        assert!(every_process().contains(&pid.as_raw()));
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
        // Killed and not yet reaped: a zombie, still listed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !look(me, |_| false).iter().any(|c| c.pid == pid && c.zombie)
            && std::time::Instant::now() < deadline
        {
            std::thread::yield_now();
        }
        assert!(look(me, |_| false).iter().any(|c| c.pid == pid && c.zombie));
        child.wait().unwrap();
        assert!(!children(me, |_| false).contains(&pid));
        assert!(!look(me, |_| false).iter().any(|c| c.pid == pid));
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
