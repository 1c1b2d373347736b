//! The real backend: plans and spawns with `plan` and `spawn` (command nodes) or the
//! `stem` (script nodes), hands every process to the I/O thread (`reactor`), reaps by
//! pid, and, as a subreaper, tracks what nodes leave behind (`leftovers`).
//!
//! Must live on the loop thread: the parent-death signal of every node is tied to the
//! thread that started it, and the loop thread lives as long as the supervisor.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::cgroup::{Cgroups, NodeCgroup};
use super::collector::Outlets;
use super::leftovers::Leftovers;
use super::plan::{Launcher, NodePayload, SpawnPlan, plan};
use super::probe::{HttpGet, NetProbe};
use super::reactor::{Watch, Watcher};
use super::spawn::{Slots, Spawned, spawn, streams, watch};
use super::stem::{self, Stem, StemError};
use super::{
    Backend, Ended, OutputFiles, ProcId, Remnants, Start, StartError, Started, Usage, errno_text,
    signal_group, signal_process, tree,
};
use crate::config::{Check, DEFAULT_STOP_TIMEOUT, ExitInfo, NodeConfig, human_bytes};

/// How long the cgroup of an ended process may still hold processes after they were
/// sent SIGKILL (one in uninterruptible sleep) before it is given up on.
const CGROUP_PATIENCE: Duration = Duration::from_secs(10);
/// The longest wait between two tries to remove a cgroup whose processes were killed.
const CGROUP_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two tries to remove a cgroup whose processes are left to
/// run (`kill_mode: "process"`); tried on loop turns only, never woken for.
const CGROUP_IDLE_RETRY: Duration = Duration::from_secs(10);

pub struct Native {
    launcher: Launcher,
    watcher: Watcher,
    /// Where each node is watched: here, or by a collector.
    outlets: Outlets,
    /// How command nodes get their streams and a stack (see `spawn::Slots`).
    slots: Slots,
    /// The process that forks script nodes, once one was needed.
    stem: Option<Stem>,
    self_pid: Pid,
    /// Leader pids of live instances: never reaped or swept as leftovers.
    leaders: HashMap<Pid, ProcId>,
    live: HashSet<ProcId>,
    /// Present when this process is a child subreaper: adopted leftovers of nodes are
    /// then tracked, stopped and reaped.
    leftovers: Option<Leftovers>,
    /// Shutting down: no node starts any more.
    stopping: bool,
    /// The layout of node cgroups, found when first needed.
    cgroups: Cgroups,
    /// The cgroup of each live instance that has one.
    groups: HashMap<ProcId, NodeCgroup>,
    /// Cgroups of ended instances that still hold processes: removed once empty.
    retiring: Vec<Retiring>,
}

/// The cgroup of an ended instance, waiting for its last process.
struct Retiring {
    cgroup: NodeCgroup,
    /// When what is left gets SIGKILL (it got SIGTERM); `None` when it already did, or
    /// is left to run.
    kill_at: Option<Instant>,
    /// When it got SIGKILL.
    killed_at: Option<Instant>,
    next_try: Instant,
    interval: Duration,
}

impl Retiring {
    /// Whether the loop should wake for it (its processes are being stopped).
    fn timed(&self) -> bool {
        self.kill_at.is_some() || self.killed_at.is_some()
    }

    fn due(&self) -> Option<Instant> {
        match self.kill_at {
            Some(kill_at) => Some(kill_at.min(self.next_try)),
            None => self.timed().then_some(self.next_try),
        }
    }
}

impl Native {
    /// A backend that starts nodes as `launcher` says and hands them to `watcher`.
    /// With `adopting` (this process is a child subreaper), what nodes leave behind is
    /// stopped and reaped.
    pub fn new(launcher: Launcher, watcher: Watcher, slots: Slots, adopting: bool) -> Native {
        let self_pid = nix::unistd::getpid();
        let mut outlets = Outlets::new(watcher.clone(), launcher.node_program.clone(), self_pid);
        // For tests: collectors at a few nodes already (`LOCAL,EACH`).
        if let Ok(value) = std::env::var("RHAI_SUPERVISOR_TEST_COLLECT") {
            if let Some((local, each)) = value.split_once(',') {
                if let (Ok(local), Ok(each)) = (local.parse(), each.parse()) {
                    outlets.set_capacities(local, each);
                }
            }
        }
        Native {
            launcher,
            watcher,
            outlets,
            slots,
            stem: None,
            self_pid,
            leaders: HashMap::new(),
            live: HashSet::new(),
            leftovers: adopting.then(Leftovers::default),
            stopping: false,
            cgroups: Cgroups::default(),
            groups: HashMap::new(),
            retiring: Vec::new(),
        }
    }

    /// Makes the cgroup of a process of `plan`, when its limits ask for one.
    fn make_cgroup(&mut self, plan: &SpawnPlan) -> Result<Option<NodeCgroup>, StartError> {
        let Some(limits) = &plan.cgroup else {
            return Ok(None);
        };
        self.cgroups
            .create(&plan.name, limits)
            .map(Some)
            .map_err(|e| StartError::Config(format!("node '{}': {e}", plan.name)))
    }

    /// Removes `cgroup` now if nothing is left in it, else once its last process has
    /// gone: `kill_at` when what is left gets SIGKILL, `killed` when it already did.
    fn retire(&mut self, cgroup: NodeCgroup, kill_at: Option<Instant>, killed: bool) {
        if cgroup.is_empty() && cgroup.remove() {
            return;
        }
        let now = Instant::now();
        let interval = Duration::from_millis(2);
        self.retiring.push(Retiring {
            cgroup,
            kill_at,
            killed_at: killed.then_some(now),
            next_try: now + interval,
            interval,
        });
    }

    /// Tries to remove the cgroups due at `now`; `timed` picks those being stopped
    /// (woken for) or those left to run (tried on loop turns).
    fn try_retiring(&mut self, now: Instant, timed: bool) {
        let mut index = 0;
        while index < self.retiring.len() {
            let entry = &mut self.retiring[index];
            if entry.timed() != timed {
                index += 1;
                continue;
            }
            if entry.kill_at.is_some_and(|at| at <= now) {
                entry.cgroup.signal(Signal::SIGKILL);
                entry.kill_at = None;
                entry.killed_at = Some(now);
            }
            if entry.next_try > now {
                index += 1;
                continue;
            }
            if entry.cgroup.is_empty() && entry.cgroup.remove() {
                self.retiring.swap_remove(index);
                continue;
            }
            if entry
                .killed_at
                .is_some_and(|at| now.duration_since(at) > CGROUP_PATIENCE)
            {
                log::warn!(
                    "cgroup {} still holds processes {:?} after SIGKILL; leaving it",
                    entry
                        .cgroup
                        .dirs
                        .first()
                        .map_or(String::new(), |d| d.display().to_string()),
                    entry.cgroup.pids()
                );
                self.retiring.swap_remove(index);
                continue;
            }
            let cap = if timed {
                CGROUP_RETRY
            } else {
                CGROUP_IDLE_RETRY
            };
            entry.interval = (entry.interval * 2).min(cap);
            entry.next_try = now + entry.interval;
            index += 1;
        }
        if self.stopping && self.retiring.is_empty() && self.groups.is_empty() {
            self.cgroups.remove_parents();
        }
    }

    fn spawn_plan(
        &mut self,
        plan: &SpawnPlan,
        proc: ProcId,
        wait: bool,
    ) -> Result<Pid, StartError> {
        let owner = super::tree::owner_tag(self.self_pid, proc);
        let cgroup = self.make_cgroup(plan)?;
        let spawned = match &plan.payload {
            Some(payload) if self.launcher.stem => {
                self.spawn_by_stem(plan, payload, &owner, wait, cgroup.as_ref())
            }
            _ => self.spawn_command(plan, &owner, wait, cgroup.as_ref()),
        };
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                if let Some(cgroup) = cgroup {
                    cgroup.signal(Signal::SIGKILL);
                    self.retire(cgroup, None, true);
                }
                return Err(e);
            }
        };
        let pid = spawned.pid;
        if let Some(cgroup) = cgroup {
            self.groups.insert(proc, cgroup);
        }
        self.leaders.insert(pid, proc);
        self.live.insert(proc);
        self.outlets.watch(
            Watch {
                proc,
                name: plan.name.clone(),
                pidfd: spawned.pidfd,
                stdout: spawned.stdout,
                stderr: spawned.stderr,
                ready: spawned.ready,
            },
            pid,
        );
        Ok(pid)
    }

    /// Starts a command node (or a script node by exec), in `cgroup` if it has one.
    fn spawn_command(
        &mut self,
        plan: &SpawnPlan,
        owner: &str,
        wait: bool,
        cgroup: Option<&NodeCgroup>,
    ) -> Result<Spawned, StartError> {
        let procs = match cgroup {
            Some(cgroup) => cgroup
                .open_procs()
                .map_err(|e| StartError::System(format!("node '{}': {e}", plan.name)))?,
            None => Vec::new(),
        };
        spawn(plan, self.self_pid, owner, &mut self.slots, wait, procs)
    }

    /// Starts a script node by having the stem fork it; starts a stem first if there is
    /// none, replaces one that fails, and falls back to exec when none can be had.
    fn spawn_by_stem(
        &mut self,
        plan: &SpawnPlan,
        payload: &NodePayload,
        owner: &str,
        wait: bool,
        cgroup: Option<&NodeCgroup>,
    ) -> Result<Spawned, StartError> {
        let [(stdout_end, stdout), (stderr_end, stderr)] = streams(plan)?;
        let paths = cgroup.map(NodeCgroup::procs_paths).unwrap_or_default();
        let request = stem::Request::new(plan, payload, self.self_pid, owner, paths);
        for _ in 0..2 {
            let stem = match &mut self.stem {
                Some(stem) => stem,
                None => match Stem::start(&self.launcher.node_program, self.self_pid) {
                    Ok(stem) => self.stem.insert(stem),
                    Err(e) => {
                        log::warn!("cannot start the stem ({e}); script nodes are started by exec");
                        self.launcher.stem = false;
                        return self.spawn_command(plan, owner, wait, cgroup);
                    }
                },
            };
            match stem.spawn(&request, &stdout_end, &stderr_end) {
                Ok(pid) => {
                    let pidfd = watch(pid, &plan.name).map_err(StartError::System)?;
                    return Ok(Spawned {
                        pid,
                        pidfd,
                        stdout,
                        stderr,
                        ready: None,
                    });
                }
                Err(StemError::Refused { pid, error }) => {
                    if let Some(pid) = pid {
                        stem::collect(pid);
                    }
                    return Err(StartError::Config(error));
                }
                Err(StemError::Broken(e)) => {
                    log::warn!("the stem failed ({e}); starting another");
                    self.stem = None;
                }
            }
        }
        log::warn!("the stem keeps failing; script nodes are started by exec");
        self.launcher.stem = false;
        self.spawn_command(plan, owner, wait, cgroup)
    }

    /// Makes a look for adopted processes if one is due (see `leftovers`).
    fn look(&mut self, now: Instant) {
        let Some(leftovers) = self.leftovers.as_mut() else {
            return;
        };
        let (leaders, live) = (&self.leaders, &self.live);
        let stem = self.stem.as_ref().map(Stem::pid);
        let helpers: Vec<Pid> = stem.into_iter().chain(self.outlets.helpers()).collect();
        let found = leftovers.look(
            now,
            self.self_pid,
            |pid| leaders.contains_key(&pid),
            |proc| live.contains(&proc),
            &helpers,
        );
        for died in found.died {
            if Some(died) == stem {
                // The stem died: its handle collects it, and the next script node gets
                // a new one.
                log::warn!("the stem (pid {died}) has died");
                self.stem = None;
            } else if self.outlets.died(died) {
                log::warn!("the collector (pid {died}) has died");
            }
        }
    }
}

impl Backend for Native {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn start(
        &mut self,
        config: &NodeConfig,
        proc: ProcId,
        start: Start,
    ) -> Result<Started, StartError> {
        let plan = plan(config, &self.launcher).map_err(StartError::Config)?;
        let owner = plan.creds.as_ref().map(|c| (c.uid, c.gid));
        let files = match start {
            Start::First | Start::Check => {
                OutputFiles::open(config, &self.launcher.cwd, owner).map_err(StartError::Config)?
            }
            Start::Again => OutputFiles::default(),
        };
        if start == Start::Check {
            // What the spawn would refuse about the program and the cgroup, refused now.
            super::spawn::check_program(&plan)?;
            if let Some(limits) = &plan.cgroup {
                self.cgroups
                    .check(limits)
                    .map_err(|e| StartError::Config(format!("node '{}': {e}", plan.name)))?;
            }
            return Ok(Started { pid: None, files });
        }
        let pid = self.spawn_plan(&plan, proc, start == Start::Again)?;
        log::info!("node '{}' started (pid {pid})", plan.name);
        Ok(Started {
            pid: Some(pid),
            files,
        })
    }

    fn signal_group(&mut self, pid: Pid, signal: Signal) {
        signal_group(pid, signal);
        // With a cgroup, whatever left the process group goes too.
        if let Some(cgroup) = self
            .leaders
            .get(&pid)
            .and_then(|proc| self.groups.get(proc))
        {
            cgroup.signal(signal);
        }
    }

    fn signal_process(&mut self, pid: Pid, signal: Signal) {
        signal_process(pid, signal);
    }

    fn probe(
        &mut self,
        config: &NodeConfig,
        probe: ProcId,
        check: &Check,
        timeout: Duration,
    ) -> Result<Option<Pid>, String> {
        let target = match check {
            Check::Exec(argv) => {
                let plan = super::plan::check(config, argv, &self.launcher)?;
                return self
                    .spawn_plan(&plan, probe, false)
                    .map(Some)
                    .map_err(|e| e.to_string());
            }
            Check::Tcp(target) => target,
            Check::Http(url) => &url.target,
        };
        // Host names are looked up at each try; an address or localhost costs nothing.
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(target.host.as_str(), target.port))
            .map_err(|e| format!("cannot resolve '{}': {e}", target.host))?
            .next()
            .ok_or_else(|| format!("'{}' has no address", target.host))?;
        let http = match check {
            Check::Http(url) => Some(HttpGet {
                host: url.target.to_string(),
                path: url.path.clone(),
            }),
            Check::Tcp(_) | Check::Exec(_) => None,
        };
        self.watcher.probe(NetProbe {
            id: probe,
            addr,
            http,
            timeout,
        });
        Ok(None)
    }

    fn sender_of(&self, pid: Pid) -> Option<ProcId> {
        // The node itself, or a descendant still in its tree: up the chain of parents.
        let mut at = pid;
        for _ in 0..32 {
            if let Some(proc) = self.leaders.get(&at) {
                return Some(*proc);
            }
            match tree::parent_of(at.as_raw()) {
                Some(parent) if parent > 1 && parent != self.self_pid.as_raw() => {
                    at = Pid::from_raw(parent)
                }
                _ => break,
            }
        }
        // Adopted by us, or the chain is long: its instance's tag says.
        tree::owner_of(pid, self.self_pid).filter(|proc| self.live.contains(proc))
    }

    fn ended(&mut self, proc: ProcId, pid: Pid, remnants: Remnants) -> Ended {
        self.leaders.remove(&pid);
        self.live.remove(&proc);
        // Whatever is left of the node's process group goes with its leader: at once
        // when it was being stopped, politely when it died on its own. The leader is
        // still a zombie, so the group id cannot name anything else.
        let cgroup = self.groups.remove(&proc);
        match remnants {
            Remnants::Kill => signal_group(pid, Signal::SIGKILL),
            Remnants::Stop(_) => signal_group(pid, Signal::SIGTERM),
            Remnants::Leave => {}
        }
        if let Some(cgroup) = &cgroup {
            match remnants {
                Remnants::Kill => cgroup.signal(Signal::SIGKILL),
                Remnants::Stop(_) => {
                    cgroup.signal(Signal::SIGTERM);
                    cgroup.signal(Signal::SIGCONT);
                }
                Remnants::Leave => {}
            }
        }
        let exit = reap(pid);
        let reason = cgroup.as_ref().and_then(|cgroup| {
            let limit = cgroup.memory_limit?;
            cgroup
                .oom_killed()
                .then(|| format!("out of memory (limit {})", human_bytes(limit)))
        });
        // A child that failed between clone and exec says why; otherwise its exit does.
        let what = match (self.slots.finished(pid), &reason) {
            (Some(why), _) => why,
            (None, Some(reason)) => format!(
                "{}: {reason}",
                exit.map_or("ended".to_string(), |e| e.to_string())
            ),
            (None, None) => exit.map_or("ended".to_string(), |e| e.to_string()),
        };
        if let Some(cgroup) = cgroup {
            match remnants {
                Remnants::Kill => self.retire(cgroup, None, true),
                Remnants::Stop(timeout) => {
                    self.retire(cgroup, Some(Instant::now() + timeout), false)
                }
                Remnants::Leave => self.retire(cgroup, None, false),
            }
        }
        if let Some(leftovers) = self.leftovers.as_mut() {
            let now = Instant::now();
            let kill_at = match remnants {
                Remnants::Kill => Some(now),
                Remnants::Stop(timeout) => Some(now + timeout),
                Remnants::Leave => None,
            };
            if let Some(kill_at) = kill_at {
                // The leader is reaped: a process that answers for its group is one it
                // left (a new process would have to make a group of that number).
                let group_left = nix::sys::signal::killpg(pid, None).is_ok();
                leftovers.retire(proc, kill_at, group_left, now);
            }
            if self.stopping && self.leaders.is_empty() {
                // The last node is gone: what is left is looked for now.
                leftovers.want_now(now);
            }
        }
        Ended { exit, what, reason }
    }

    fn usage(&self, of: &[(ProcId, Pid)]) -> Vec<Option<Usage>> {
        of.iter()
            .map(|(proc, pid)| match self.groups.get(proc) {
                Some(cgroup) => Some(cgroup.usage()),
                // Without a cgroup: its process group, from the leader down.
                None => tree::group_usage(pid.as_raw()),
            })
            .collect()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let cgroups = self.retiring.iter().filter_map(Retiring::due).min();
        let leftovers = self.leftovers.as_ref().and_then(Leftovers::next_deadline);
        match (cgroups, leftovers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn fire_due(&mut self, now: Instant) {
        if let Some(leftovers) = self.leftovers.as_mut() {
            leftovers.fire_due(now);
        }
        if !self.retiring.is_empty() {
            self.try_retiring(now, true);
        }
    }

    fn tidy(&mut self, now: Instant) {
        // Children that have exec'd since the last turn give their spawn slots (and the
        // slots' copies of their output pipes) back, which costs a look at each slot.
        self.slots.reap();
        self.outlets.tidy();
        if !self.retiring.is_empty() || self.stopping {
            self.try_retiring(now, false);
        }
        self.look(now);
    }

    fn child_exited(&mut self) {
        if let Some(leftovers) = self.leftovers.as_mut() {
            leftovers.child_exited(Instant::now());
        }
    }

    fn shut_down(&mut self) {
        // No node will start any more.
        self.stem = None;
        self.stopping = true;
        // What was left to run in cgroups goes now, as adopted leftovers do.
        let now = Instant::now();
        for entry in &mut self.retiring {
            if !entry.timed() {
                entry.cgroup.signal(Signal::SIGTERM);
                entry.cgroup.signal(Signal::SIGCONT);
                entry.kill_at = Some(now + DEFAULT_STOP_TIMEOUT);
                entry.next_try = now;
            }
        }
        if let Some(leftovers) = self.leftovers.as_mut() {
            let now = Instant::now();
            leftovers.shut_down(now);
            if self.leaders.is_empty() {
                leftovers.want_now(now);
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.retiring.is_empty() && self.leftovers.as_ref().is_none_or(Leftovers::is_idle)
    }
}

/// Collects the exit status of our child `pid`, which the reactor saw exit (its pidfd
/// became readable), so this does not block.
fn reap(pid: Pid) -> Option<ExitInfo> {
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
                log::warn!("cannot collect exit status of pid {pid}: {}", errno_text(e));
                return None;
            }
        }
    }
    log::warn!("pid {pid} was reported gone but its exit status never arrived");
    None
}
