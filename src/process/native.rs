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

use super::collector::Outlets;
use super::leftovers::Leftovers;
use super::plan::{Launcher, NodePayload, SpawnPlan, plan};
use super::probe::{HttpGet, NetProbe};
use super::reactor::{Watch, Watcher};
use super::spawn::{Slots, Spawned, spawn, streams, watch};
use super::stem::{self, Stem, StemError};
use super::{
    Backend, Ended, OutputFiles, ProcId, Remnants, Start, StartError, Started, errno_text,
    signal_group, signal_process, tree,
};
use crate::config::{Check, ExitInfo, NodeConfig};

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
        }
    }

    fn spawn_plan(
        &mut self,
        plan: &SpawnPlan,
        proc: ProcId,
        wait: bool,
    ) -> Result<Pid, StartError> {
        let owner = super::tree::owner_tag(self.self_pid, proc);
        let spawned = match &plan.payload {
            Some(payload) if self.launcher.stem => {
                self.spawn_by_stem(plan, payload, &owner, wait)?
            }
            _ => spawn(plan, self.self_pid, &owner, &mut self.slots, wait)?,
        };
        let pid = spawned.pid;
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

    /// Starts a script node by having the stem fork it; starts a stem first if there is
    /// none, replaces one that fails, and falls back to exec when none can be had.
    fn spawn_by_stem(
        &mut self,
        plan: &SpawnPlan,
        payload: &NodePayload,
        owner: &str,
        wait: bool,
    ) -> Result<Spawned, StartError> {
        let [(stdout_end, stdout), (stderr_end, stderr)] = streams(plan)?;
        let request = stem::Request::new(plan, payload, self.self_pid, owner);
        for _ in 0..2 {
            let stem = match &mut self.stem {
                Some(stem) => stem,
                None => match Stem::start(&self.launcher.node_program, self.self_pid) {
                    Ok(stem) => self.stem.insert(stem),
                    Err(e) => {
                        log::warn!("cannot start the stem ({e}); script nodes are started by exec");
                        self.launcher.stem = false;
                        return spawn(plan, self.self_pid, owner, &mut self.slots, wait);
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
        spawn(plan, self.self_pid, owner, &mut self.slots, wait)
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
        let files = match start {
            Start::First | Start::Check => {
                OutputFiles::open(config, &self.launcher.cwd).map_err(StartError::Config)?
            }
            Start::Again => OutputFiles::default(),
        };
        if start == Start::Check {
            // What the spawn would refuse about the program, refused now.
            super::spawn::check_program(&plan)?;
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
        match remnants {
            Remnants::Kill => signal_group(pid, Signal::SIGKILL),
            Remnants::Stop(_) => signal_group(pid, Signal::SIGTERM),
            Remnants::Leave => {}
        }
        let exit = reap(pid);
        // A child that failed between clone and exec says why; otherwise its exit does.
        let what = match self.slots.finished(pid) {
            Some(why) => why,
            None => exit.map_or("ended".to_string(), |e| e.to_string()),
        };
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
        Ended { exit, what }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.leftovers.as_ref().and_then(Leftovers::next_deadline)
    }

    fn fire_due(&mut self, now: Instant) {
        if let Some(leftovers) = self.leftovers.as_mut() {
            leftovers.fire_due(now);
        }
    }

    fn tidy(&mut self, now: Instant) {
        // Children that have exec'd since the last turn give their spawn slots (and the
        // slots' copies of their output pipes) back, which costs a look at each slot.
        self.slots.reap();
        self.outlets.tidy();
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
        if let Some(leftovers) = self.leftovers.as_mut() {
            let now = Instant::now();
            leftovers.shut_down(now);
            if self.leaders.is_empty() {
                leftovers.want_now(now);
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.leftovers.as_ref().is_none_or(Leftovers::is_idle)
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
