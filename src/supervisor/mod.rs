//! The node table: Zeek's `Supervisor::create/destroy/restart/status` and what keeps
//! nodes alive.
//!
//! `Supervisor` owns every node (`node::Node`, by name) and every process it started
//! (`Proc`, by `ProcId`). A process outlives its node entry when the node was destroyed:
//! it stays in `procs` until its exit is seen, so shutdown can wait for it and SIGKILL
//! it on time. Time-driven work (revivals, SIGKILL after the stop timeout) is kept as
//! deadlines that the loop asks for (`next_deadline`) and hands back when due
//! (`fire_due`). Starts are reported as `Notice`s for the loop to turn into
//! `node_status` calls, so no script runs while the table is borrowed.
//!
//! It lives on the loop thread only.

pub mod node;
pub mod output;

use output::TAIL_LINES;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::{NodeConfig, NodeStatus, OutputLine, Status};
use crate::process::plan::NodePayload;
use crate::process::plan::{Launcher, Output, SpawnPlan, plan};
use crate::process::reactor::{Watch, Watcher};
use crate::process::rotate::RotatingFile;
use crate::process::spawn::{Slots, Spawned, spawn, streams, watch};
use crate::process::stem::{self, Stem, StemError};
use crate::process::{ProcId, Stream, lines, reap, signal_group};
pub use node::{Action, Node, NodeState, RevivalPolicy};

/// Something the loop should tell the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A process for `node` started: `node_status(node, pid)`.
    Started { node: String, pid: Pid },
    /// `node` failed for good and is not revived: `node_status(node, 0)`.
    Failed { node: String },
}

/// A process we started and have not yet seen exit.
#[derive(Debug)]
struct Proc {
    pid: Pid,
    node: String,
    stop_timeout: Duration,
    /// Set once we asked it to stop.
    stop: Option<Stop>,
}

/// A process instance that has ended, remembered to deal with what it left behind.
#[derive(Clone, Copy, Debug)]
struct Retired {
    /// When its leftovers get SIGKILL (at once if it was being stopped).
    kill_at: Instant,
}

/// How many ended instances are remembered for attributing leftovers.
const RETIRED_KEPT: usize = 4096;

#[derive(Debug)]
struct Stop {
    /// Its node was destroyed: nothing starts again when it exits.
    detached: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Revive(String),
    Kill(ProcId),
    /// Leftovers whose time is up get SIGKILL.
    Strays,
}

pub struct Supervisor {
    nodes: BTreeMap<String, Node>,
    procs: HashMap<ProcId, Proc>,
    deadlines: BinaryHeap<Reverse<(Instant, Deadline)>>,
    notices: Vec<Notice>,
    launcher: Launcher,
    watcher: Watcher,
    self_pid: Pid,
    next_proc: u64,
    /// Set by `stop_all`: nothing is revived or restarted any more.
    stopping: bool,
    /// Leader pids of live instances.
    leaders: HashMap<Pid, ProcId>,
    /// Whether this process is a child subreaper, so that adopted leftovers of nodes
    /// are tracked, stopped and reaped (see `process::tree`).
    adopting: bool,
    /// Adopted leftovers being stopped: pid → when SIGKILL is due.
    strays: HashMap<Pid, Instant>,
    retired: HashMap<ProcId, Retired>,
    retired_order: VecDeque<ProcId>,
    /// A scan for adopted leftovers is due.
    sweep_due: bool,
    /// The process that forks script nodes, once one was needed.
    stem: Option<Stem>,
    /// How command nodes get their streams and a stack (see `spawn::Slots`).
    slots: Slots,
}

impl Supervisor {
    pub fn new(launcher: Launcher, watcher: Watcher, slots: Slots) -> Supervisor {
        Supervisor {
            nodes: BTreeMap::new(),
            procs: HashMap::new(),
            deadlines: BinaryHeap::new(),
            notices: Vec::new(),
            launcher,
            watcher,
            self_pid: nix::unistd::getpid(),
            next_proc: 1,
            stopping: false,
            leaders: HashMap::new(),
            adopting: false,
            strays: HashMap::new(),
            retired: HashMap::new(),
            retired_order: VecDeque::new(),
            sweep_due: false,
            stem: None,
            slots,
        }
    }

    /// This process is a child subreaper: track, stop and reap what nodes leave behind.
    pub fn adopt_leftovers(&mut self) {
        self.adopting = true;
    }

    /// `Supervisor::create`: starts a node, or says why not.
    pub fn create(&mut self, config: NodeConfig) -> Result<(), String> {
        config.validate()?;
        if self.nodes.contains_key(&config.name) {
            return Err(format!("node with name '{}' already exists", config.name));
        }
        if self.stopping {
            return Err("the supervisor is shutting down".into());
        }
        let now = Instant::now();
        let plan = plan(&config, &self.launcher)?;
        let mut files = [None, None];
        for (slot, output) in files.iter_mut().zip([&plan.stdout, &plan.stderr]) {
            if let Output::Rotated(path) = output {
                let (max, backups) = config.rotation().unwrap_or((u64::MAX, 0));
                *slot = Some(
                    RotatingFile::open(path, max, backups)
                        .map_err(|e| format!("node '{}': {e}", config.name))?,
                );
            }
        }
        let (proc, pid) = self.spawn_plan(&plan, node::stop_timeout(&config), false)?;
        let name = config.name.clone();
        let mut node = Node::new(config, proc, pid, now);
        node.files = files;
        self.nodes.insert(name, node);
        Ok(())
    }

    /// `Supervisor::destroy`: `""` means every node. False for an unknown name.
    pub fn destroy(&mut self, name: &str) -> bool {
        let names: Vec<String> = if name.is_empty() {
            self.nodes.keys().cloned().collect()
        } else if self.nodes.contains_key(name) {
            vec![name.to_string()]
        } else {
            return false;
        };
        let now = Instant::now();
        for name in names {
            if let Some(node) = self.nodes.remove(&name) {
                if let Some((proc, pid)) = node.state.proc().zip(node.state.pid()) {
                    log::info!("destroying node '{name}' (pid {pid})");
                    self.stop(proc, node.stop_timeout, true, now);
                } else {
                    log::info!("destroyed node '{name}'");
                }
            }
        }
        true
    }

    /// `Supervisor::restart`: `""` means every node. False for an unknown name.
    pub fn restart(&mut self, name: &str) -> bool {
        let names: Vec<String> = if name.is_empty() {
            self.nodes.keys().cloned().collect()
        } else if self.nodes.contains_key(name) {
            vec![name.to_string()]
        } else {
            return false;
        };
        if self.stopping {
            return false;
        }
        let now = Instant::now();
        for name in names {
            let Some(node) = self.nodes.get_mut(&name) else {
                continue;
            };
            let timeout = node.stop_timeout;
            match node.restart() {
                Action::Stop(proc, pid) => {
                    log::info!("restarting node '{name}' (pid {pid})");
                    self.stop(proc, timeout, false, now);
                }
                action => self.apply(&name, action, now),
            }
        }
        true
    }

    /// `Supervisor::status`: `""` means every node; an unknown name gives no entry.
    pub fn status(&self, name: &str) -> Status {
        let now = Instant::now();
        let entry = |node: &Node| {
            let mut status = NodeStatus::new(node.config.clone());
            status.pid = node.state.pid().map(|p| i64::from(p.as_raw()));
            status.state = node.state.name().to_string();
            status.restarts = node.restarts as i64;
            status.exit = node.last_exit;
            if let NodeState::Running { since, .. } = node.state {
                status.uptime = Some(now.duration_since(since).as_secs_f64());
            }
            // One node's status carries its recent output; every node's would be big.
            if !name.is_empty() {
                status.output = node.output.lines();
            }
            status
        };
        let nodes = if name.is_empty() {
            self.nodes
                .iter()
                .map(|(n, node)| (n.clone(), entry(node)))
                .collect()
        } else {
            self.nodes
                .get_key_value(name)
                .map(|(n, node)| (n.clone(), entry(node)))
                .into_iter()
                .collect()
        };
        Status { nodes }
    }

    /// The last lines a node wrote, oldest first; `None` for an unknown node.
    pub fn tail(&self, name: &str) -> Option<Vec<OutputLine>> {
        self.nodes.get(name).map(|n| n.output.lines())
    }

    /// Takes the lines (each ending in `\n`) that `node` wrote: keeps them for `tail`,
    /// and writes them to the node's file when the supervisor rotates it. True when
    /// they went to a file, false when they are for hooks or printing.
    pub fn take_output(&mut self, node: &str, stream: Stream, data: &[u8]) -> bool {
        let Some(node) = self.nodes.get_mut(node) else {
            return false;
        };
        // Only the lines that will still be kept after this chunk are worth copying.
        for line in lines::split(lines::last(data, TAIL_LINES)) {
            node.output.push(stream, &String::from_utf8_lossy(line));
        }
        match &mut node.files[stream as usize] {
            Some(file) => {
                file.write(data);
                true
            }
            None => false,
        }
    }

    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// The reactor saw process `proc` exit (after delivering its output).
    pub fn process_exited(&mut self, proc: ProcId) {
        let Some(entry) = self.procs.remove(&proc) else {
            return;
        };
        self.leaders.remove(&entry.pid);
        // Whatever is left of the node's process group goes with its leader: at once
        // when it was being stopped, politely when it died on its own. The leader is
        // still a zombie, so the group id cannot name anything else.
        let remnants = if entry.stop.is_some() {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        signal_group(entry.pid, remnants);
        let exit = reap(entry.pid);
        // A child that failed between clone and exec says why; otherwise its exit does.
        let what = match self.slots.finished(entry.pid) {
            Some(why) => why,
            None => exit.map_or("ended".to_string(), |e| e.to_string()),
        };
        let now = Instant::now();
        let kill_at = if entry.stop.is_some() {
            now
        } else {
            now + entry.stop_timeout
        };
        self.retire(proc, Retired { kill_at });
        if entry.stop.as_ref().is_some_and(|s| s.detached) {
            log::info!("node '{}' (pid {}) stopped: {what}", entry.node, entry.pid);
            return;
        }
        let Some(node) = self.nodes.get_mut(&entry.node) else {
            return;
        };
        let action = node.exited(proc, exit, now);
        match action {
            Action::Start if entry.stop.is_some() => {
                log::info!(
                    "node '{}' (pid {}) stopped for restart: {what}",
                    entry.node,
                    entry.pid
                )
            }
            Action::Start => {
                log::warn!(
                    "node '{}' (pid {}) {what}; reviving it now",
                    entry.node,
                    entry.pid
                )
            }
            Action::ReviveAt(at) => log::warn!(
                "node '{}' (pid {}) {what}; reviving it in {}",
                entry.node,
                entry.pid,
                human(at.duration_since(now))
            ),
            Action::Fail(failure) => log::error!(
                "node '{}' (pid {}) {what}; it has failed and is not revived until restarted: {failure}",
                entry.node,
                entry.pid
            ),
            _ => {}
        }
        if self.stopping {
            return;
        }
        let name = entry.node;
        self.apply(&name, action, now);
    }

    /// The earliest time at which `fire_due` has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Does the time-driven work that is due at `now`.
    pub fn fire_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, deadline))) = self.deadlines.pop() else {
                break;
            };
            match deadline {
                Deadline::Revive(name) => {
                    if self.stopping {
                        continue;
                    }
                    if let Some(node) = self.nodes.get(&name) {
                        let action = node.revival_due(now);
                        self.apply(&name, action, now);
                    }
                }
                Deadline::Strays => {
                    for (pid, kill_at) in &self.strays {
                        if *kill_at <= now {
                            log::warn!(
                                "process {pid} left behind by a node did not stop in time; sending SIGKILL"
                            );
                            let _ = nix::sys::signal::kill(*pid, Signal::SIGKILL);
                        }
                    }
                }
                Deadline::Kill(proc) => {
                    if let Some(entry) = self.procs.get(&proc) {
                        log::warn!(
                            "node '{}' (pid {}) did not stop in time; sending SIGKILL",
                            entry.node,
                            entry.pid
                        );
                        signal_group(entry.pid, Signal::SIGKILL);
                    }
                }
            }
        }
    }

    /// Shutdown: destroy every node and revive nothing any more. The supervisor is done
    /// when `is_idle`.
    pub fn stop_all(&mut self) {
        self.stopping = true;
        self.sweep_due = true;
        // No node will start any more.
        self.stem = None;
        self.destroy("");
    }

    /// SIGCHLD: reap adopted processes that exited.
    pub fn child_exited(&mut self) {
        self.reap_adopted();
        if !self.strays.is_empty() || self.stopping {
            // A stray's children are adopted when it dies: look for them too.
            self.sweep_due = true;
        }
    }

    fn reap_adopted(&mut self) {
        if !self.adopting {
            return;
        }
        loop {
            let stem = self.stem.as_ref().map(Stem::pid);
            let leaders = &self.leaders;
            let (reaped, stopped_at) = crate::process::tree::reap_adopted(|pid| {
                leaders.contains_key(&pid) || Some(pid) == stem
            });
            for pid in reaped {
                log::debug!("reaped adopted process {pid}");
                self.strays.remove(&pid);
            }
            match stopped_at {
                // The stem died: its handle collects it, and the next script node gets a
                // new one.
                Some(pid) if Some(pid) == stem => {
                    log::warn!("the stem (pid {pid}) has died");
                    self.stem = None;
                }
                _ => break,
            }
        }
    }

    fn retire(&mut self, proc: ProcId, retired: Retired) {
        if !self.adopting {
            return;
        }
        self.retired.insert(proc, retired);
        self.retired_order.push_back(proc);
        while self.retired_order.len() > RETIRED_KEPT {
            if let Some(old) = self.retired_order.pop_front() {
                self.retired.remove(&old);
            }
        }
        self.reap_adopted();
        self.sweep_due = true;
    }

    /// Looks for adopted processes left behind by ended instances (or by anyone, while
    /// shutting down) and stops them: SIGTERM now and SIGKILL when their instance's
    /// stop timeout has passed (at once if the instance was being stopped). Reads the
    /// supervisor's children from /proc (`tree::children`), so it runs at most once per
    /// loop turn, when something may have been adopted.
    /// First, children that have exec'd since the last turn give their spawn slots (and
    /// the slots' copies of their output pipes) back, which costs a look at each slot.
    pub fn sweep(&mut self, now: Instant) {
        self.slots.reap();
        if !self.adopting || !self.sweep_due {
            return;
        }
        self.sweep_due = false;
        let me = self.self_pid;
        let (leaders, strays) = (&self.leaders, &self.strays);
        let found = crate::process::tree::children(me, |pid| {
            leaders.contains_key(&pid) || strays.contains_key(&pid)
        });
        for pid in found {
            let owner = crate::process::tree::owner_of(pid, me);
            let kill_at = match owner {
                // Its node instance is alive: it is that node's business.
                Some(proc) if self.procs.contains_key(&proc) => continue,
                Some(proc) => self
                    .retired
                    .get(&proc)
                    .map_or(now + node::DEFAULT_STOP_TIMEOUT, |r| r.kill_at),
                None if self.stopping => now + node::DEFAULT_STOP_TIMEOUT,
                // Not traceable to a node: left alone until shutdown.
                None => continue,
            };
            if kill_at <= now {
                log::info!("killing process {pid}, left behind by a stopped node");
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            } else {
                log::info!("stopping process {pid}, left behind by a node that ended");
                let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
                let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
                self.deadlines.push(Reverse((kill_at, Deadline::Strays)));
            }
            self.strays.insert(pid, kill_at);
        }
    }

    /// Impatient shutdown: SIGKILL every process now.
    pub fn kill_all(&mut self) {
        self.stopping = true;
        self.destroy("");
        for entry in self.procs.values() {
            signal_group(entry.pid, Signal::SIGKILL);
        }
    }

    /// No process of ours is left: no node process, and (as a subreaper) no adopted
    /// leftover.
    pub fn is_idle(&self) -> bool {
        self.procs.is_empty() && (!self.adopting || (self.strays.is_empty() && !self.sweep_due))
    }

    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    fn apply(&mut self, name: &str, action: Action, now: Instant) {
        match action {
            Action::Start => self.revive(name, now),
            Action::ReviveAt(at) => self
                .deadlines
                .push(Reverse((at, Deadline::Revive(name.to_string())))),
            Action::Stop(proc, _) => {
                let timeout = self
                    .nodes
                    .get(name)
                    .map(|n| n.stop_timeout)
                    .unwrap_or_default();
                self.stop(proc, timeout, false, now);
            }
            Action::Fail(_) => self.notices.push(Notice::Failed {
                node: name.to_string(),
            }),
            Action::Nothing => {}
        }
    }

    /// Starts a new process for an existing node.
    fn revive(&mut self, name: &str, now: Instant) {
        let Some(config) = self.nodes.get(name).map(|n| n.config.clone()) else {
            return;
        };
        let result = self.spawn(&config);
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        match result {
            Ok((proc, pid)) => node.started(proc, pid, now),
            Err(e) => {
                let action = node.start_failed(now);
                match action {
                    Action::ReviveAt(at) => log::error!(
                        "cannot revive {e}; trying again in {}",
                        human(at.duration_since(now))
                    ),
                    Action::Fail(failure) => log::error!(
                        "cannot revive {e}; the node has failed and is not revived until restarted: {failure}"
                    ),
                    _ => {}
                }
                self.apply(name, action, now);
            }
        }
    }

    fn spawn(&mut self, config: &NodeConfig) -> Result<(ProcId, Pid), String> {
        let plan = plan(config, &self.launcher)?;
        // One process started by the loop on its own: let it exec before the loop's
        // other work, which would otherwise delay it (a burst of creates from a script
        // gains more from not waiting).
        self.spawn_plan(&plan, node::stop_timeout(config), true)
    }

    fn spawn_plan(
        &mut self,
        plan: &SpawnPlan,
        stop_timeout: Duration,
        wait: bool,
    ) -> Result<(ProcId, Pid), String> {
        let proc = ProcId(self.next_proc);
        let owner = crate::process::tree::owner_tag(self.self_pid, proc);
        let spawned = match &plan.payload {
            Some(payload) if self.launcher.stem => {
                self.spawn_by_stem(plan, payload, &owner, wait)?
            }
            _ => spawn(plan, self.self_pid, &owner, &mut self.slots, wait)?,
        };
        self.next_proc += 1;
        let pid = spawned.pid;
        self.leaders.insert(pid, proc);
        self.watcher.watch(Watch {
            proc,
            name: plan.name.clone(),
            pidfd: spawned.pidfd,
            stdout: spawned.stdout,
            stderr: spawned.stderr,
        });
        self.procs.insert(
            proc,
            Proc {
                pid,
                node: plan.name.to_string(),
                stop_timeout,
                stop: None,
            },
        );
        log::info!("node '{}' started (pid {pid})", plan.name);
        self.notices.push(Notice::Started {
            node: plan.name.to_string(),
            pid,
        });
        Ok((proc, pid))
    }

    /// Starts a script node by having the stem fork it; starts a stem first if there is
    /// none, replaces one that fails, and falls back to exec when none can be had.
    fn spawn_by_stem(
        &mut self,
        plan: &SpawnPlan,
        payload: &NodePayload,
        owner: &str,
        wait: bool,
    ) -> Result<Spawned, String> {
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
                    let pidfd = watch(pid, &plan.name)?;
                    return Ok(Spawned {
                        pid,
                        pidfd,
                        stdout,
                        stderr,
                    });
                }
                Err(StemError::Refused { pid, error }) => {
                    if let Some(pid) = pid {
                        stem::collect(pid);
                    }
                    return Err(error);
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

    /// SIGTERM (and SIGCONT, for a stopped process) to the process group now, SIGKILL
    /// when `timeout` has passed.
    fn stop(&mut self, proc: ProcId, timeout: Duration, detached: bool, now: Instant) {
        let Some(entry) = self.procs.get_mut(&proc) else {
            return;
        };
        if let Some(stop) = &mut entry.stop {
            stop.detached |= detached;
            return;
        }
        signal_group(entry.pid, Signal::SIGTERM);
        signal_group(entry.pid, Signal::SIGCONT);
        let kill_at = now + timeout;
        entry.stop = Some(Stop { detached });
        self.deadlines
            .push(Reverse((kill_at, Deadline::Kill(proc))));
    }
}

/// `250 ms`, `1.5 s`: a delay as a person reads it.
pub fn human(delay: std::time::Duration) -> String {
    if delay < std::time::Duration::from_secs(1) {
        format!("{} ms", delay.as_millis())
    } else {
        format!("{:.1} s", delay.as_secs_f64())
    }
}
