//! What nodes leave behind, for a supervisor that is a child subreaper.
//!
//! A descendant of a node that loses its parent (a daemon that double-forked, a
//! `setsid` helper whose node died) becomes the supervisor's child. Every node carries
//! its instance's tag in its environment (`tree::OWNER_ENV`), so such an adopted
//! process is traced to the instance it came from; once that instance has ended, the
//! leftover gets SIGTERM, and SIGKILL when the instance's stop timeout has passed (at
//! once if the instance was being stopped). At shutdown every adopted process goes.
//!
//! Finding adopted processes means reading the supervisor's list of children from
//! /proc (`tree::look`), which costs in proportion to the number of children: about
//! 1 ms at 10,000 nodes. So a look is never made for each death. The cost of a death
//! stays flat in the number of nodes because:
//!
//! - a node's leader is reaped by pid (the caller's business), never by
//!   `waitid(P_ALL)`, which walks every child;
//! - whether the ended node left processes in its group is one `kill(-pgid, 0)`; when
//!   it did, a look comes soon (at most every `SOON_GAP`), to find them and to reap
//!   them as they die;
//! - otherwise, a process that left the group (`setsid`) can only be found by a look,
//!   which comes at most every `LATER_GAP` (or 500 times what the last look took, if
//!   that is longer): the first death after a quiet spell is looked at at once, a crash
//!   storm costs one look per gap;
//! - SIGCHLD (every death of a child, leader or not) asks for a later look only, or a
//!   soon one while leftovers are being stopped: an adopted process that exits on its
//!   own is reaped by that look, so it stays a zombie for at most one gap.
//!
//! An idle supervisor makes no look: a look is due only after a death or SIGCHLD.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::{ProcId, tree};
use crate::config::DEFAULT_STOP_TIMEOUT;

/// How many ended instances are remembered for attributing leftovers.
const RETIRED_KEPT: usize = 4096;
/// The least time between looks when something is known to be left.
const SOON_GAP: Duration = Duration::from_millis(10);
/// The least time between looks when nothing is known to be left.
const LATER_GAP: Duration = Duration::from_secs(1);
/// Looks are also spaced by this many times what the last one took, so that they cost
/// at most 5 % of a core while leftovers are being stopped, and 0.2 % otherwise (a look
/// at 10,000 children takes a few milliseconds).
const SOON_FACTOR: u32 = 20;
const LATER_FACTOR: u32 = 500;

/// How urgently a look for adopted processes is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    /// Something is known to be left, or is being stopped.
    Soon,
    /// Something may have been adopted.
    Later,
}

/// What a look found besides leftovers: helpers (the stem, collectors) that have died;
/// their handles collect them.
pub struct Found {
    pub died: Vec<Pid>,
}

#[derive(Default)]
pub struct Leftovers {
    /// Adopted leftovers being stopped: pid → when SIGKILL is due.
    strays: HashMap<Pid, Instant>,
    /// Ended instances: when their leftovers get SIGKILL.
    retired: HashMap<ProcId, Instant>,
    retired_order: VecDeque<ProcId>,
    /// When strays' SIGKILLs are due.
    deadlines: BinaryHeap<Reverse<Instant>>,
    /// When the next look is due, if one is wanted.
    look_at: Option<Instant>,
    /// When the last look was made.
    last_look: Option<Instant>,
    /// How long the last look took.
    look_cost: Duration,
    /// Shutdown: every adopted process is stopped.
    stopping: bool,
}

impl Leftovers {
    /// Instance `proc` has ended and its leader was reaped; what it left behind gets
    /// SIGKILL at `kill_at`. `group_left`: processes of its group are still there.
    pub fn retire(&mut self, proc: ProcId, kill_at: Instant, group_left: bool, now: Instant) {
        self.retired.insert(proc, kill_at);
        self.retired_order.push_back(proc);
        while self.retired_order.len() > RETIRED_KEPT {
            if let Some(old) = self.retired_order.pop_front() {
                self.retired.remove(&old);
            }
        }
        self.want(if group_left { Look::Soon } else { Look::Later }, now);
    }

    /// SIGCHLD: some child exited; an adopted one is reaped by the next look, and a
    /// stray's children are adopted when it dies.
    pub fn child_exited(&mut self, now: Instant) {
        let urgency = if !self.strays.is_empty() || self.stopping {
            Look::Soon
        } else {
            Look::Later
        };
        self.want(urgency, now);
    }

    pub fn shut_down(&mut self, now: Instant) {
        self.stopping = true;
        self.want(Look::Soon, now);
    }

    /// Asks for a look: no sooner than its gap after the last one, and no later than one
    /// already asked for.
    pub fn want(&mut self, urgency: Look, now: Instant) {
        let gap = match urgency {
            Look::Soon => SOON_GAP.max(self.look_cost * SOON_FACTOR),
            Look::Later => LATER_GAP.max(self.look_cost * LATER_FACTOR),
        };
        let at = match self.last_look {
            Some(last) => (last + gap).max(now),
            None => now,
        };
        self.look_at = Some(self.look_at.map_or(at, |due| due.min(at)));
    }

    /// Asks for a look at once, whatever the gap.
    pub fn want_now(&mut self, now: Instant) {
        self.look_at = Some(now);
    }

    /// Makes a look if one is due: reaps adopted children that have exited, and stops
    /// those left behind by ended instances (or by anyone, while shutting down).
    /// `is_leader` says which children are live node leaders (their exits are reported
    /// and collected elsewhere), `is_live` which instances are alive; `helpers` are the
    /// pids of the stem and the collectors, which are left alone.
    pub fn look(
        &mut self,
        now: Instant,
        me: Pid,
        is_leader: impl Fn(Pid) -> bool,
        is_live: impl Fn(ProcId) -> bool,
        helpers: &[Pid],
    ) -> Found {
        let mut found = Found { died: Vec::new() };
        if self.look_at.is_none_or(|at| at > now) {
            return found;
        }
        self.look_at = None;
        self.last_look = Some(now);
        let children = tree::look(me, &is_leader);
        let mut listed = Vec::with_capacity(self.strays.len());
        for child in children {
            let pid = child.pid;
            if child.zombie {
                if helpers.contains(&pid) {
                    found.died.push(pid);
                } else if waitpid(pid, Some(WaitPidFlag::WNOHANG)).is_ok() {
                    log::debug!("reaped adopted process {pid}");
                    self.strays.remove(&pid);
                }
                continue;
            }
            if helpers.contains(&pid) {
                continue;
            }
            if self.strays.contains_key(&pid) {
                listed.push(pid);
                continue;
            }
            let kill_at = match tree::owner_of(pid, me) {
                // Its node instance is alive: it is that node's business.
                Some(proc) if is_live(proc) => continue,
                Some(proc) => self
                    .retired
                    .get(&proc)
                    .copied()
                    .unwrap_or(now + DEFAULT_STOP_TIMEOUT),
                None if self.stopping => now + DEFAULT_STOP_TIMEOUT,
                // Not traceable to a node: left alone until shutdown.
                None => continue,
            };
            if kill_at <= now {
                log::info!("killing process {pid}, left behind by a stopped node");
                let _ = kill(pid, Signal::SIGKILL);
            } else {
                log::info!("stopping process {pid}, left behind by a node that ended");
                let _ = kill(pid, Signal::SIGTERM);
                let _ = kill(pid, Signal::SIGCONT);
                self.deadlines.push(Reverse(kill_at));
            }
            self.strays.insert(pid, kill_at);
            listed.push(pid);
        }
        self.look_cost = now.elapsed();
        // A stray that is no longer a child was reaped above, or by someone else.
        if listed.len() != self.strays.len() {
            self.strays.retain(|pid, _| listed.contains(pid));
        }
        if !self.strays.is_empty() {
            // Until every stray has gone: its death comes as SIGCHLD, but a look soon
            // after the SIGKILLs makes sure.
            if let Some(next) = self.next_kill() {
                self.look_at = Some(self.look_at.map_or(next, |at| at.min(next)));
            }
        }
        found
    }

    fn next_kill(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse(at)| *at)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.next_kill(), self.look_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Leftovers whose time is up get SIGKILL.
    pub fn fire_due(&mut self, now: Instant) {
        let mut due = false;
        while self.deadlines.peek().is_some_and(|Reverse(at)| *at <= now) {
            self.deadlines.pop();
            due = true;
        }
        if !due {
            return;
        }
        for (pid, kill_at) in &self.strays {
            if *kill_at <= now {
                log::warn!(
                    "process {pid} left behind by a node did not stop in time; sending SIGKILL"
                );
                let _ = kill(*pid, Signal::SIGKILL);
            }
        }
        // Their deaths are reaped by a look.
        self.want(Look::Soon, now);
    }

    /// No adopted leftover is being stopped, and no look is due.
    pub fn is_idle(&self) -> bool {
        self.strays.is_empty() && self.look_at.is_none()
    }
}
