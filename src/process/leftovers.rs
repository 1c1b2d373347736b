//! What nodes leave behind, for a supervisor that is a child subreaper.
//!
//! A descendant of a node that loses its parent (a daemon that double-forked, a
//! `setsid` helper whose node died) becomes the supervisor's child. Every node carries
//! its instance's tag in its environment (`tree::OWNER_ENV`), so such an adopted
//! process is traced to the instance it came from; once that instance has ended, the
//! leftover gets SIGTERM, and SIGKILL when the instance's stop timeout has passed (at
//! once if the instance was being stopped). At shutdown every adopted process goes.
//!
//! Looking for leftovers reads the supervisor's children from /proc (`tree::children`),
//! so it runs at most once per loop turn, and only when something may have been adopted
//! (an instance ended, SIGCHLD came while leftovers were being stopped, or shutdown).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{ProcId, tree};
use crate::config::DEFAULT_STOP_TIMEOUT;

/// How many ended instances are remembered for attributing leftovers.
const RETIRED_KEPT: usize = 4096;

#[derive(Default)]
pub struct Leftovers {
    /// Adopted leftovers being stopped: pid → when SIGKILL is due.
    strays: HashMap<Pid, Instant>,
    /// Ended instances: when their leftovers get SIGKILL.
    retired: HashMap<ProcId, Instant>,
    retired_order: VecDeque<ProcId>,
    /// When strays' SIGKILLs are due.
    deadlines: BinaryHeap<Reverse<Instant>>,
    /// A look for adopted leftovers is due.
    sweep_due: bool,
    /// Shutdown: every adopted process is stopped.
    stopping: bool,
}

impl Leftovers {
    /// Instance `proc` has ended; what it left behind gets SIGKILL at `kill_at`.
    pub fn retire(&mut self, proc: ProcId, kill_at: Instant) {
        self.retired.insert(proc, kill_at);
        self.retired_order.push_back(proc);
        while self.retired_order.len() > RETIRED_KEPT {
            if let Some(old) = self.retired_order.pop_front() {
                self.retired.remove(&old);
            }
        }
        self.sweep_due = true;
    }

    /// Reaps every adopted child that exited, leaving alone node leaders (`is_leader`),
    /// whose exits the I/O thread reports, and the stem. Returns the stem's pid if the
    /// stem is found dead: its handle collects it.
    pub fn reap_adopted(
        &mut self,
        is_leader: impl Fn(Pid) -> bool,
        stem: Option<Pid>,
    ) -> Option<Pid> {
        let (reaped, stopped_at) = tree::reap_adopted(|pid| is_leader(pid) || Some(pid) == stem);
        for pid in reaped {
            log::debug!("reaped adopted process {pid}");
            self.strays.remove(&pid);
        }
        stopped_at.filter(|&pid| Some(pid) == stem)
    }

    /// SIGCHLD: a stray's children are adopted when it dies; look for them too.
    pub fn child_exited(&mut self) {
        if !self.strays.is_empty() || self.stopping {
            self.sweep_due = true;
        }
    }

    pub fn shut_down(&mut self) {
        self.stopping = true;
        self.sweep_due = true;
    }

    /// Looks for adopted processes left behind by ended instances (or by anyone, while
    /// shutting down) and stops them, if a look is due. `is_known` says which children
    /// are live node leaders; `is_live` which instances are alive.
    pub fn sweep(
        &mut self,
        now: Instant,
        me: Pid,
        is_known: impl Fn(Pid) -> bool,
        is_live: impl Fn(ProcId) -> bool,
    ) {
        if !self.sweep_due {
            return;
        }
        self.sweep_due = false;
        let strays = &self.strays;
        let found = tree::children(me, |pid| is_known(pid) || strays.contains_key(&pid));
        for pid in found {
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
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse(at)| *at)
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
    }

    /// No adopted leftover is being stopped, and no look for one is due.
    pub fn is_idle(&self) -> bool {
        self.strays.is_empty() && !self.sweep_due
    }
}
