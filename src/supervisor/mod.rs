//! The node table and the policy that keeps nodes alive: Zeek's
//! `Supervisor::create/destroy/restart/status`, revival with backoff, SIGKILL after
//! `stop_timeout`, `max_restarts`, readiness, dependencies, ordered stops, health.
//!
//! `Supervisor` owns every node (`node::Node`) in a table of slots, with an index of the
//! live ones by name. A destroyed node leaves the index at once (its name can be used
//! again) but keeps its slot, in the `stopping` state, until its process has exited.
//! Each node's state machine (`Node::step`) decides what happens to it; the supervisor
//! carries out its actions through the process backend (`process::Backend`), keeps the
//! deadlines they ask for (revivals, SIGKILLs, readiness and health checks, watchdogs),
//! which the loop asks for (`next_deadline`) and hands back when due (`fire_due`), and
//! looks after what a node's change means for others (`settle`): dependents that may
//! start, or must restart with it, and nodes being stopped in order that may go now.
//! What the script should hear of is left as `Notice`s for the loop to turn into hook
//! calls, so no script runs while the table is borrowed. While someone follows the
//! supervisor's events (`ctl events`, `watch`), each change of a node is also recorded
//! where it happens (`tell`) as a `config::Event`, which the loop takes and publishes.
//!
//! A process id (`ProcId`) names the node's slot and a serial number, so an exit finds
//! its node without a second table, and an exit of an earlier process of a slot is
//! told apart from that of the current one. A readiness or health check that is a
//! process has an id of the same form with `PROBE` set.
//!
//! `create` also decides where a node belongs (`host::ThisHost`): a node of another
//! host is not started here and not recorded, and `create` says so (`Placed`).
//!
//! It lives on the loop thread only.

pub mod host;
pub mod node;
pub mod output;
pub mod policy;
pub mod reload;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::{
    Condition, Dependency, Event, EventKind, ExitInfo, Health, KillMode, NodeConfig, NodeStatus,
    OutputLine, Ready, Status, Stream, seconds,
};
use crate::process::notify::Notification;
use crate::process::{Backend, OutputFiles, ProcId, Remnants, Start, StartError, lines};
pub use host::ThisHost;
pub use node::{Action, Input, Instance, Node, Readiness, STATE_NAMES, State, Then, Whom};
use output::TAIL_LINES;
pub use policy::human;
pub use reload::{Applying, Recording};

/// Something the loop should tell the script.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// A process for `node` started: `node_status(node, pid)`.
    Started { node: String, pid: Pid },
    /// `node` failed for good and is not revived: `node_status(node, 0)`.
    Failed { node: String },
    /// `node` became ready: `node_ready(node)`.
    Ready { node: String },
    /// `node`'s process ended on its own after `uptime` seconds: `node_exit(node,
    /// exit)`, which may keep it down.
    Exited {
        node: String,
        exit: Option<ExitInfo>,
        uptime: f64,
        /// Why, when more is known than the status: `out of memory (limit 64 MiB)`.
        reason: Option<String>,
    },
    /// `node` is gone from the table (destroyed, and its last process has exited; or
    /// shutdown): no more output will come from it.
    Removed { node: String },
}

/// What the metrics (`--metrics`) show of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub name: String,
    /// One of `node::STATE_NAMES`.
    pub state: &'static str,
    /// It has a process that is not being stopped.
    pub up: bool,
    /// It is ready (`running`).
    pub ready: bool,
    pub restarts: u64,
    /// Seconds of CPU time and bytes of memory of its processes, where it has any and
    /// they can be told.
    pub cpu: Option<f64>,
    pub memory: Option<u64>,
}

/// Who created a node: a reload changes only the nodes the scripts created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The scripts named on the command line, while they were loaded and their
    /// `zeek_init()` ran (or a reload of them).
    Script,
    /// Anything later: the REPL, `ctl create`, a hook, a timer, the embedding program.
    Run,
}

/// What `create` did with a node it accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placed {
    /// It runs here.
    Here,
    /// Its own endpoint names this other host, whose supervisor starts it: nothing was
    /// started or recorded here.
    Elsewhere(String),
}

/// Why `create` refused. The words are Zeek's where Zeek has them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// The configuration is not valid (a name, a field's value).
    #[error("{0}")]
    Invalid(String),
    #[error("node with name '{0}' already exists")]
    Exists(String),
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// Its dependencies would wait for each other.
    #[error("node '{node}': dependency cycle: {path}")]
    Cycle { node: String, path: String },
    /// Its process could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Why `signal` sent nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    #[error("node with name '{0}' does not exist")]
    Unknown(String),
    #[error("node '{0}' has no process to signal")]
    NoProcess(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    /// `Input::RevivalDue` for the node in this slot.
    Revive(Slot),
    /// `Input::KillDue` for this process.
    Kill(ProcId),
    /// `Input::ReadyTimeout` for this process.
    ReadyBy(ProcId),
    /// The next try of the node's readiness or health check, if its count still is
    /// this one.
    Probe(Slot, u32),
    /// A check that is a process has run out of time.
    ProbeTimeout(ProcId),
    /// The node's watchdog, if its count still is this one.
    Watchdog(Slot, u32),
    /// The end of a period of the output files of the node in this slot (rotation by
    /// time); stale unless it is the node's `rotation_due`.
    Rotate(Slot),
}

/// A node's place in the table.
type Slot = u32;

/// Marks the process ids of checks.
const PROBE: u64 = 1 << 63;

fn slot_of(proc: ProcId) -> Slot {
    ((proc.0 & !PROBE) >> 32) as Slot
}

/// Whether a dependency meets its condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edge {
    Met,
    Pending,
    /// It can no longer: why.
    Never(&'static str),
}

/// What a check is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Ready,
    Health,
}

/// A try of a check under way.
#[derive(Clone, Debug)]
struct Probe {
    id: ProcId,
    purpose: Purpose,
    /// Its process, for an `exec` check.
    pid: Option<Pid>,
    /// The last line it wrote, for the message of a failure.
    last_line: Option<String>,
    timed_out: bool,
}

/// A node and what the supervisor keeps about it besides its state machine.
struct Entry {
    node: Node,
    /// Each dependency, and whether it meets its condition (and was logged as one that
    /// can no longer).
    deps: BTreeMap<String, (Dependency, Edge, bool)>,
    /// Being stopped in order: it goes once its dependents have exited.
    doomed: bool,
    /// The state the supervisor last settled after (its name and process).
    seen: (&'static str, Option<ProcId>),
    /// Counts changes that make earlier check and watchdog deadlines stale.
    generation: u32,
    probe: Option<Probe>,
    /// Consecutive failed health checks, and the status to show.
    health_failures: u32,
    health: Option<String>,
    status_text: Option<String>,
    /// Who created it.
    origin: Origin,
    /// A reload's new configuration (and its output files), put in place once the
    /// node's process has ended.
    /// (Boxed: rare, and as large as the rest of the entry.)
    pending: Option<Box<(NodeConfig, OutputFiles)>>,
    /// Why the last process ended, beyond its status.
    exit_reason: Option<String>,
}

impl Entry {
    fn unmet(&self) -> impl Iterator<Item = &String> {
        self.deps
            .iter()
            .filter(|(_, (_, edge, _))| *edge != Edge::Met)
            .map(|(name, _)| name)
    }
}

pub struct Supervisor {
    backend: Box<dyn Backend>,
    nodes: Vec<Option<Entry>>,
    free: Vec<Slot>,
    /// The nodes that exist (not destroyed), by name.
    names: BTreeMap<String, Slot>,
    /// For each name, the nodes that depend on a node of that name.
    dependents: HashMap<String, Vec<Slot>>,
    /// Names that were destroyed and not created again: dependencies on them can no
    /// longer be met.
    destroyed: HashSet<String>,
    /// Nodes being stopped in order, by name.
    doomed: HashMap<String, Slot>,
    deadlines: BinaryHeap<Reverse<(Instant, Deadline)>>,
    notices: Vec<Notice>,
    /// The changes since the loop last took them (`take_events`), while `watched`.
    events: Vec<Event>,
    /// Someone follows the events: record them.
    watched: bool,
    next_serial: u32,
    /// Set by `stop_all`: nothing is revived or restarted any more.
    stopping: bool,
    /// A node changed state since `take_changed` was last asked.
    changed: bool,
    /// The script has a `node_exit` hook: revivals wait for its answer.
    exit_hook: bool,
    /// What a node's endpoint must name for the node to be started here.
    here: ThisHost,
}

impl Supervisor {
    pub fn new(backend: Box<dyn Backend>, here: ThisHost) -> Supervisor {
        log::debug!("this host is {}", here.describe());
        Supervisor {
            backend,
            here,
            nodes: Vec::new(),
            free: Vec::new(),
            names: BTreeMap::new(),
            dependents: HashMap::new(),
            destroyed: HashSet::new(),
            doomed: HashMap::new(),
            deadlines: BinaryHeap::new(),
            notices: Vec::new(),
            events: Vec::new(),
            watched: false,
            next_serial: 0,
            stopping: false,
            changed: false,
            exit_hook: false,
        }
    }

    /// `Supervisor::create` at run time (`Origin::Run`).
    pub fn create(&mut self, config: NodeConfig) -> Result<Placed, CreateError> {
        self.create_as(config, Origin::Run)
    }

    /// `Supervisor::create`: starts a node (or has it wait for its dependencies), unless
    /// it belongs to another host, or says why not. The configuration is checked
    /// wherever the node belongs, so one layout gives the same errors on every host.
    pub fn create_as(&mut self, config: NodeConfig, origin: Origin) -> Result<Placed, CreateError> {
        config.validate().map_err(CreateError::Invalid)?;
        if let Some(host) = self.here.elsewhere(&config) {
            log::debug!(
                "node '{}' belongs to host '{host}'; it is not started here",
                config.name
            );
            return Ok(Placed::Elsewhere(host.to_string()));
        }
        if self.names.contains_key(&config.name) {
            return Err(CreateError::Exists(config.name));
        }
        if self.stopping {
            return Err(CreateError::ShuttingDown);
        }
        if let Some(path) = self.cycle(&config) {
            return Err(CreateError::Cycle {
                node: config.name,
                path,
            });
        }
        let deps = self.dependencies(&config);
        let ready = deps.values().all(|(_, edge, _)| *edge == Edge::Met);
        let slot = self
            .free
            .last()
            .copied()
            .unwrap_or(self.nodes.len() as Slot);
        let proc = self.proc_id(slot);
        let how = if ready { Start::First } else { Start::Check };
        let started = self.backend.start(&config, proc, how)?;
        let now = self.backend.now();
        self.free.pop();
        if slot as usize == self.nodes.len() {
            self.nodes.push(None);
        }
        let name = config.name.clone();
        let instance = started.pid.map(|pid| {
            self.notices.push(Notice::Started {
                node: name.clone(),
                pid,
            });
            Instance {
                proc,
                pid,
                since: now,
            }
        });
        for dep in deps.keys() {
            self.dependents.entry(dep.clone()).or_default().push(slot);
        }
        let entry = Entry {
            node: Node::new(config, instance, started.files),
            deps,
            doomed: false,
            seen: ("new", None),
            generation: 0,
            probe: None,
            health_failures: 0,
            health: None,
            status_text: None,
            origin,
            pending: None,
            exit_reason: None,
        };
        if !ready {
            let waiting: Vec<&str> = entry.unmet().map(String::as_str).collect();
            log::info!(
                "node '{name}' waits for {}",
                waiting
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        self.nodes[slot as usize] = Some(entry);
        self.destroyed.remove(&name);
        self.names.insert(name, slot);
        self.tell(slot, EventKind::Created, |_, _| {});
        if let Some(instance) = instance {
            self.tell(slot, EventKind::Started, |event, _| {
                event.pid = Some(i64::from(instance.pid.as_raw()));
                event.restarts = Some(0);
            });
        }
        self.settle(slot);
        self.log_hopeless(slot);
        self.schedule_rotation(slot, now);
        Ok(Placed::Here)
    }

    /// `Supervisor::destroy`: `""` means every node, stopped in order (dependents
    /// before what they depend on). False for an unknown name.
    pub fn destroy(&mut self, name: &str) -> bool {
        let Some(slots) = self.targets(name) else {
            return false;
        };
        self.destroy_slots(slots, name.is_empty());
        true
    }

    /// Destroys the nodes in `slots`: `ordered`, each once the nodes that depend on it
    /// and go too have exited; else all at once.
    fn destroy_slots(&mut self, slots: Vec<Slot>, ordered: bool) {
        for &slot in &slots {
            let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
                continue;
            };
            let name = entry.node.config.name.clone();
            entry.doomed = ordered;
            if !ordered {
                match entry.node.state.pid() {
                    Some(pid) => log::info!("destroying node '{name}' (pid {pid})"),
                    None => log::info!("destroyed node '{name}'"),
                }
            }
            self.names.remove(&name);
            self.destroyed.insert(name.clone());
            if ordered {
                self.doomed.insert(name, slot);
            }
        }
        if ordered {
            for slot in slots {
                self.stop_if_free(slot);
            }
        } else {
            for slot in slots {
                self.step(slot, Input::Destroy);
            }
        }
    }

    /// `Supervisor::restart`: `""` means every node. False for an unknown name, and
    /// during shutdown.
    pub fn restart(&mut self, name: &str) -> bool {
        let Some(slots) = self.targets(name) else {
            return false;
        };
        if self.stopping {
            return false;
        }
        for slot in slots {
            if let Some(entry) = self.entry(slot) {
                if let Some(instance) = entry
                    .node
                    .state
                    .instance()
                    .filter(|_| entry.node.state.is_up())
                {
                    log::info!(
                        "restarting node '{}' (pid {})",
                        entry.node.config.name,
                        instance.pid
                    );
                }
            }
            self.step(slot, Input::Restart);
        }
        true
    }

    /// `Supervisor::signal`: sends `signal` to the main process of `name` (`""`: of
    /// every node that has one). Returns how many were sent.
    pub fn signal(&mut self, name: &str, signal: Signal) -> Result<usize, SignalError> {
        let slots = self
            .targets(name)
            .ok_or_else(|| SignalError::Unknown(name.to_string()))?;
        let mut sent = 0;
        for slot in slots {
            let Some(entry) = self.entry(slot) else {
                continue;
            };
            let node = entry.node.config.name.clone();
            let Some(pid) = entry.node.state.pid() else {
                if !name.is_empty() {
                    return Err(SignalError::NoProcess(node));
                }
                continue;
            };
            log::info!("sent {} to node '{node}' (pid {pid})", signal.as_str());
            self.backend.signal_process(pid, signal);
            sent += 1;
        }
        Ok(sent)
    }

    /// `node_exit` returned `false` for `name`: it stays down.
    pub fn keep_down(&mut self, name: &str) {
        if let Some(&slot) = self.names.get(name) {
            if matches!(
                self.entry(slot).map(|e| e.node.state),
                Some(State::Reviving { .. })
            ) {
                log::info!("node '{name}' stays down: node_exit() returned false");
            }
            self.step(slot, Input::KeepDown);
        }
    }

    /// Whether the script has a `node_exit` hook, whose answer revivals then wait for.
    pub fn set_exit_hook(&mut self, defined: bool) {
        self.exit_hook = defined;
    }

    /// `Supervisor::status`: `""` means every node; an unknown name gives no entry. The
    /// status of one node has what its processes use (`cpu`, `memory`).
    pub fn status(&self, name: &str) -> Status {
        let mut status = self.plain_status(name);
        if !name.is_empty() {
            self.add_usage(&mut status);
        }
        status
    }

    /// `status`, with what every node's processes use (for a person's table: `ctl
    /// status`, `:status`).
    pub fn status_with_usage(&self, name: &str) -> Status {
        let mut status = self.plain_status(name);
        self.add_usage(&mut status);
        status
    }

    /// Fills in `cpu` and `memory` of the nodes of `status` that have a process.
    fn add_usage(&self, status: &mut Status) {
        let live: Vec<(String, ProcId, Pid)> = status
            .nodes
            .keys()
            .filter_map(|name| {
                let entry = self.entry(*self.names.get(name)?)?;
                let instance = entry.node.state.instance()?;
                Some((name.clone(), instance.proc, instance.pid))
            })
            .collect();
        if live.is_empty() {
            return;
        }
        let asked: Vec<(ProcId, Pid)> = live.iter().map(|(_, proc, pid)| (*proc, *pid)).collect();
        let usage = self.backend.usage(&asked);
        for ((name, _, _), usage) in live.iter().zip(usage) {
            if let (Some(node), Some(usage)) = (status.nodes.get_mut(name), usage) {
                node.cpu = Some(usage.cpu);
                node.memory = Some(i64::try_from(usage.memory).unwrap_or(i64::MAX));
            }
        }
    }

    fn plain_status(&self, name: &str) -> Status {
        let now = self.backend.now();
        let entry = |e: &Entry| {
            let node = &e.node;
            let mut status = NodeStatus::new(node.config.clone());
            status.pid = node.state.pid().map(|p| i64::from(p.as_raw()));
            status.state = node.state.name().to_string();
            status.restarts = node.restarts as i64;
            status.exit = node.last_exit;
            match node.state {
                State::Running(instance) | State::Starting { instance, .. } => {
                    status.uptime = Some(now.duration_since(instance.since).as_secs_f64());
                }
                State::Stopping { since, .. } => {
                    status.stopping_for = Some(now.duration_since(since).as_secs_f64());
                }
                State::Waiting => {
                    status.waiting_for = Some(e.unmet().cloned().collect());
                }
                State::Reviving { .. } | State::Exited | State::Failed(_) => {}
            }
            status.status_text = e.status_text.clone();
            status.health = e.health.clone();
            status.exit_reason = e.exit_reason.clone();
            // One node's status carries its recent output; every node's would be big.
            if !name.is_empty() {
                status.output = node.output.lines();
            }
            status
        };
        let nodes = self
            .named(name)
            .filter_map(|(n, slot)| Some((n.clone(), entry(self.entry(slot)?))))
            .collect();
        Status { nodes }
    }

    /// What the metrics show of every node, by name: a look at the table, without the
    /// copies of configurations that `status` makes.
    pub fn figures(&self) -> Vec<Figures> {
        let mut live = Vec::new();
        let mut figures: Vec<Figures> = self
            .names
            .iter()
            .filter_map(|(name, &slot)| {
                let node = &self.entry(slot)?.node;
                Some((name, node))
            })
            .enumerate()
            .map(|(index, (name, node))| {
                if let Some(instance) = node.state.instance() {
                    live.push((index, instance.proc, instance.pid));
                }
                Figures {
                    name: name.clone(),
                    state: node.state.name(),
                    up: node.state.is_up(),
                    ready: matches!(node.state, State::Running(_)),
                    restarts: node.restarts,
                    cpu: None,
                    memory: None,
                }
            })
            .collect();
        if !live.is_empty() {
            let asked: Vec<(ProcId, Pid)> = live.iter().map(|&(_, p, pid)| (p, pid)).collect();
            let usage = self.backend.usage(&asked);
            for ((index, _, _), usage) in live.iter().zip(usage) {
                if let Some(usage) = usage {
                    figures[*index].cpu = Some(usage.cpu);
                    figures[*index].memory = Some(usage.memory);
                }
            }
        }
        figures
    }

    /// The status of the nodes named (those that exist), with what their processes
    /// use and without their output.
    pub fn status_of(&self, names: &[String]) -> Status {
        let mut status = Status::default();
        for name in names {
            if let Some(mut one) = self.plain_status(name).nodes.remove(name) {
                one.output = Vec::new();
                status.nodes.insert(name.clone(), one);
            }
        }
        self.add_usage(&mut status);
        status
    }

    /// Whether a node changed state since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// One line on every node: `3 nodes: 2 running, 1 starting`.
    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for (_, slot) in self.names.iter() {
            if let Some(entry) = self.entry(*slot) {
                *counts.entry(entry.node.state.name()).or_default() += 1;
            }
        }
        let total: usize = counts.values().sum();
        if total == 0 {
            return "no nodes".into();
        }
        // In the order of a node's life, not of the alphabet.
        let order = [
            "running",
            "starting",
            "waiting",
            "reviving",
            "restarting",
            "stopping",
            "exited",
            "failed",
        ];
        let parts: Vec<String> = order
            .iter()
            .filter_map(|state| counts.get(state).map(|n| format!("{n} {state}")))
            .collect();
        let noun = if total == 1 { "node" } else { "nodes" };
        format!("{total} {noun}: {}", parts.join(", "))
    }

    /// Keeps the names of `nodes` that are still on their way up: starting and within
    /// their readiness timeout, or waiting for dependencies that are. A node that is
    /// ready, has ended, failed, timed out (it is then stopped and revived), or is gone
    /// has settled; so has one that waits for what has settled without being up.
    pub fn unsettled(&self, nodes: &mut Vec<String>) {
        nodes.retain(|name| !self.settled(name, 0));
    }

    fn settled(&self, name: &str, depth: usize) -> bool {
        let Some(entry) = self.names.get(name).and_then(|&slot| self.entry(slot)) else {
            return true;
        };
        match entry.node.state {
            State::Starting { .. } => false,
            State::Waiting if depth < self.names.len() => entry.unmet().all(|dep| {
                let up = self
                    .names
                    .get(dep)
                    .and_then(|&slot| self.entry(slot))
                    .is_some_and(|e| e.node.state.is_up());
                !up && self.settled(dep, depth + 1)
            }),
            State::Waiting
            | State::Running(_)
            | State::Reviving { .. }
            | State::Stopping { .. }
            | State::Exited
            | State::Failed(_) => true,
        }
    }

    /// The last lines a node wrote, oldest first; `None` for an unknown node.
    pub fn tail(&self, name: &str) -> Option<Vec<OutputLine>> {
        let slot = *self.names.get(name)?;
        self.entry(slot).map(|e| e.node.output.lines())
    }

    /// Takes the lines (each ending in `\n`) that process `proc` wrote: keeps them for
    /// `tail`, writes them to the node's file when the supervisor rotates it, and looks
    /// for the line that makes it ready (`ready: #{log: ...}`). True when they went to
    /// a file, false when they are for hooks or printing.
    pub fn take_output(&mut self, proc: ProcId, stream: Stream, data: &[u8]) -> bool {
        let slot = slot_of(proc);
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return false;
        };
        if proc.0 & PROBE != 0 {
            if let Some(probe) = entry.probe.as_mut().filter(|p| p.id == proc) {
                if let Some(line) = lines::split(data).filter(|l| !l.is_empty()).last() {
                    probe.last_line = Some(String::from_utf8_lossy(line).into_owned());
                }
            }
            return true;
        }
        // Only the lines that will still be kept after this chunk are worth copying.
        for line in lines::split(lines::last(data, TAIL_LINES)) {
            entry
                .node
                .output
                .push(stream, &String::from_utf8_lossy(line));
        }
        let ready = match (&entry.node.readiness, entry.node.state) {
            (Readiness::Log(pattern), State::Starting { instance, .. })
                if instance.proc == proc =>
            {
                lines::split(data).any(|line| pattern.is_match(&String::from_utf8_lossy(line)))
            }
            _ => false,
        };
        let to_file = entry.node.files.write(stream, data);
        if ready {
            self.step(slot, Input::Ready);
        }
        to_file
    }

    /// A process said something on the notification socket.
    pub fn notified(&mut self, pid: Pid, notification: Notification) {
        let Some(proc) = self.backend.sender_of(pid) else {
            log::debug!("notification from pid {pid}, which is no node's: ignored");
            return;
        };
        let slot = slot_of(proc);
        let now = self.backend.now();
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if entry.node.state.instance().map(|i| i.proc) != Some(proc) {
            return;
        }
        if let Some(status) = notification.status {
            entry.status_text = Some(status);
        }
        let notify = matches!(entry.node.readiness, Readiness::Notify);
        if notification.watchdog {
            if let (Some(period), State::Running(_)) =
                (watchdog(&entry.node.config), entry.node.state)
            {
                entry.generation = entry.generation.wrapping_add(1);
                let at = now + period;
                let generation = entry.generation;
                self.deadlines
                    .push(Reverse((at, Deadline::Watchdog(slot, generation))));
            }
        }
        if notification.ready && notify {
            self.step(slot, Input::Ready);
        }
    }

    /// Process `proc` wrote a newline to its readiness descriptor.
    pub fn fd_ready(&mut self, proc: ProcId) {
        let slot = slot_of(proc);
        let ours = self.entry(slot).is_some_and(|e| {
            matches!(e.node.readiness, Readiness::Fd)
                && e.node.state.instance().map(|i| i.proc) == Some(proc)
        });
        if ours {
            self.step(slot, Input::Ready);
        }
    }

    /// A network check ended.
    pub fn probed(&mut self, id: ProcId, result: Result<(), String>) {
        self.probe_ended(id, result);
    }

    /// The names of the nodes that exist.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// Whether a node of this name exists (has not been destroyed).
    pub fn exists(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// The I/O thread saw process `proc` exit (after delivering its output).
    pub fn process_exited(&mut self, proc: ProcId) {
        if proc.0 & PROBE != 0 {
            return self.probe_exited(proc);
        }
        let slot = slot_of(proc);
        let Some(entry) = self.entry(slot) else {
            return;
        };
        let node = &entry.node;
        let Some(instance) = node.state.instance().copied().filter(|i| i.proc == proc) else {
            return;
        };
        let stopping = matches!(node.state, State::Stopping { .. });
        let reconfiguring = matches!(
            node.state,
            State::Stopping {
                then: Then::Reconfigure,
                ..
            }
        );
        let restarting = matches!(
            node.state,
            State::Stopping {
                then: Then::Restart | Then::Reconfigure,
                ..
            }
        );
        let remnants = match (stopping, node.kill_mode) {
            (_, KillMode::Process) => Remnants::Leave,
            (true, _) => Remnants::Kill,
            (false, _) => Remnants::Stop(node.stop_timeout),
        };
        let name = node.config.name.clone();
        let ended = self.backend.ended(proc, instance.pid, remnants);
        let now = self.backend.now();
        let pid = instance.pid;
        let what = ended.what;
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        entry.exit_reason = ended.reason.clone();
        let mut actions = entry.node.step(
            Input::Exited {
                proc,
                exit: ended.exit,
            },
            now,
        );
        self.tell(slot, EventKind::Exited, |event, _| {
            *event = std::mem::take(event).with_exit(ended.exit);
            event.pid = Some(i64::from(pid.as_raw()));
            event.uptime = Some(now.duration_since(instance.since).as_secs_f64());
        });
        if !stopping {
            self.notices.push(Notice::Exited {
                node: name.clone(),
                exit: ended.exit,
                uptime: now.duration_since(instance.since).as_secs_f64(),
                reason: ended.reason,
            });
            if self.exit_hook {
                // The hook may keep the node down: revive once it has answered.
                for action in &mut actions {
                    if *action == Action::Start {
                        *action = Action::ReviveAt(now);
                    }
                }
            }
        }
        if actions.first() == Some(&Action::Start) && !restarting {
            self.tell(slot, EventKind::Reviving, |event, _| {
                event.delay = Some(0.0)
            });
        }
        match actions.first() {
            Some(Action::Remove) => log::info!("node '{name}' (pid {pid}) stopped: {what}"),
            Some(Action::Start) if restarting => {
                log::info!("node '{name}' (pid {pid}) stopped for restart: {what}")
            }
            Some(Action::Start) => {
                log::warn!("node '{name}' (pid {pid}) {what}; reviving it now")
            }
            Some(Action::ReviveAt(at)) => log::warn!(
                "node '{name}' (pid {pid}) {what}; reviving it in {}",
                human(at.duration_since(now))
            ),
            Some(Action::Fail(failure)) => log::error!(
                "node '{name}' (pid {pid}) {what}; it has failed and is not revived until restarted: {failure}"
            ),
            Some(Action::Stop { .. } | Action::Kill { .. }) | None => {
                let state = self.entry(slot).map(|e| e.node.state);
                match state {
                    _ if reconfiguring => {
                        log::info!("node '{name}' (pid {pid}) stopped for restart: {what}")
                    }
                    Some(State::Exited) => {
                        log::info!(
                            "node '{name}' (pid {pid}) {what}; it is not revived (restart policy)"
                        )
                    }
                    Some(State::Waiting) => log::info!(
                        "node '{name}' (pid {pid}) stopped: {what}; it waits for its dependencies again"
                    ),
                    _ => log::info!("node '{name}' (pid {pid}) stopped: {what}"),
                }
            }
        }
        self.apply(slot, actions, now);
        self.settle(slot);
    }

    /// The earliest time at which `fire_due` has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let own = self.deadlines.peek().map(|Reverse((at, _))| *at);
        match (own, self.backend.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Does the time-driven work that is due at `now`, then the backend's tidying of
    /// the loop turn.
    pub fn fire_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, deadline))) = self.deadlines.pop() else {
                break;
            };
            self.deadline(at, deadline);
        }
        self.backend.fire_due(now);
        self.backend.tidy(now);
    }

    /// Shutdown: destroy every node, dependents first, and revive nothing any more. The
    /// supervisor is done when `is_idle`.
    pub fn stop_all(&mut self) {
        self.stopping = true;
        self.backend.shut_down();
        self.destroy("");
    }

    /// SIGCHLD: adopted processes may have exited.
    pub fn child_exited(&mut self) {
        self.backend.child_exited();
    }

    /// Impatient shutdown: SIGKILL every process now, whatever the order.
    pub fn kill_all(&mut self) {
        self.stopping = true;
        self.backend.shut_down();
        self.destroy("");
        let slots: Vec<Slot> = (0..self.nodes.len() as Slot).collect();
        for slot in slots {
            self.step(slot, Input::Destroy);
            if let Some(pid) = self.entry(slot).and_then(|e| e.node.state.pid()) {
                self.backend.signal_group(pid, Signal::SIGKILL);
            }
        }
    }

    /// No process of ours is left: no node process, and nothing the backend looks
    /// after.
    pub fn is_idle(&self) -> bool {
        self.nodes.iter().all(Option::is_none) && self.backend.is_idle()
    }

    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Whether to record each change as an `Event` (someone follows the events). Off
    /// forgets those not taken yet.
    pub fn watch(&mut self, on: bool) {
        self.watched = on;
        if !on {
            self.events = Vec::new();
        }
    }

    /// The changes recorded since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// A reload of the scripts has been applied: tells the followers of the events
    /// (`reloaded`, with `summary`: what it did, such as `1 created, 1 restarted, 4
    /// unchanged`). The reload calls this once its plan is carried out.
    pub fn reload_applied(&mut self, summary: &str) {
        if self.watched {
            let mut event = Event::new(EventKind::Reloaded, None);
            event.summary = Some(summary.to_string());
            self.events.push(event);
        }
    }

    /// Records a change of the node in `slot` for the followers of the events, if
    /// there are any: `kind`, the node's state now, and what `fill` adds.
    fn tell(&mut self, slot: Slot, kind: EventKind, fill: impl FnOnce(&mut Event, &Entry)) {
        if !self.watched {
            return;
        }
        let Some(entry) = self.entry(slot) else {
            return;
        };
        let mut event = Event::new(kind, Some(&entry.node.config.name));
        event.state = Some(entry.node.state.name().to_string());
        if matches!(entry.node.state, State::Waiting) {
            event.waiting_for = Some(entry.unmet().cloned().collect());
        }
        fill(&mut event, entry);
        self.events.push(event);
    }

    /// Keeps a deadline for the end of the current period of the node's output files,
    /// when they rotate by time. One wake-up per period: the loop sleeps until then.
    fn schedule_rotation(&mut self, slot: Slot, now: Instant) {
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let node = &mut entry.node;
        let Some(wait) = node.files.until_rotation() else {
            return;
        };
        // At least a millisecond ahead: the wall clock that the period ends by and the
        // loop's clock may disagree by a little, and a due deadline must not spin.
        let at = now + wait.max(std::time::Duration::from_millis(1));
        node.rotation_due = Some(at);
        self.deadlines.push(Reverse((at, Deadline::Rotate(slot))));
    }

    fn entry(&self, slot: Slot) -> Option<&Entry> {
        self.nodes.get(slot as usize).and_then(Option::as_ref)
    }

    /// The live nodes `name` stands for (`""`: every one), by name.
    fn named<'a>(&'a self, name: &'a str) -> Box<dyn Iterator<Item = (&'a String, Slot)> + 'a> {
        if name.is_empty() {
            Box::new(self.names.iter().map(|(n, s)| (n, *s)))
        } else {
            Box::new(
                self.names
                    .get_key_value(name)
                    .map(|(n, s)| (n, *s))
                    .into_iter(),
            )
        }
    }

    /// The slots of the nodes `name` stands for; `None` for an unknown name.
    fn targets(&self, name: &str) -> Option<Vec<Slot>> {
        let slots: Vec<Slot> = self.named(name).map(|(_, slot)| slot).collect();
        (name.is_empty() || !slots.is_empty()).then_some(slots)
    }

    fn proc_id(&mut self, slot: Slot) -> ProcId {
        self.next_serial = self.next_serial.wrapping_add(1);
        ProcId(u64::from(slot) << 32 | u64::from(self.next_serial))
    }

    /// A path by which `config`'s dependencies lead back to it, as `a -> b -> a`.
    fn cycle(&self, config: &NodeConfig) -> Option<String> {
        let deps = |name: &str| -> Vec<String> {
            if name == config.name {
                return config
                    .depends_on
                    .iter()
                    .flat_map(|d| d.0.keys().cloned())
                    .collect();
            }
            self.names
                .get(name)
                .and_then(|&slot| self.entry(slot))
                .map(|e| e.deps.keys().cloned().collect())
                .unwrap_or_default()
        };
        // Any cycle passes through the new node, since the table had none.
        cycle_through(&config.name, &deps)
    }

    /// The dependencies of a node of `config`, each with whether it is met now.
    fn dependencies(&self, config: &NodeConfig) -> BTreeMap<String, (Dependency, Edge, bool)> {
        config
            .depends_on
            .iter()
            .flat_map(|d| d.0.iter())
            .map(|(name, dep)| (name.clone(), (*dep, self.edge(name, dep.condition), false)))
            .collect()
    }

    /// Whether the node named `name` meets `condition` now.
    fn edge(&self, name: &str, condition: Condition) -> Edge {
        let Some(node) = self
            .names
            .get(name)
            .and_then(|&s| self.entry(s))
            .map(|e| &e.node)
        else {
            return if self.destroyed.contains(name) {
                Edge::Never("it was destroyed")
            } else {
                Edge::Pending
            };
        };
        match (condition, node.state) {
            (Condition::Started, State::Starting { .. } | State::Running(_))
            | (Condition::Ready, State::Running(_))
            | (Condition::Exited, State::Exited | State::Failed(_)) => Edge::Met,
            (Condition::Succeeded, State::Exited) if node.last_exit == Some(ExitInfo::Code(0)) => {
                Edge::Met
            }
            (Condition::Succeeded, State::Exited) => Edge::Never("it exited unsuccessfully"),
            (Condition::Started | Condition::Ready | Condition::Succeeded, State::Failed(_)) => {
                Edge::Never("it has failed")
            }
            (Condition::Started | Condition::Ready, State::Exited) => Edge::Never("it has exited"),
            (
                _,
                State::Waiting
                | State::Starting { .. }
                | State::Running(_)
                | State::Reviving { .. }
                | State::Stopping { .. },
            ) => Edge::Pending,
        }
    }

    /// Steps the node in `slot`, carries out what it says, and settles what follows.
    fn step(&mut self, slot: Slot, input: Input) {
        let now = self.backend.now();
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let actions = entry.node.step(input, now);
        self.apply(slot, actions, now);
        self.settle(slot);
    }

    fn apply(&mut self, slot: Slot, actions: Vec<Action>, now: Instant) {
        for action in actions {
            match action {
                // Shutdown (or an ordered destroy): nothing starts again, and the node
                // is done with.
                Action::Start if self.stopping || self.entry(slot).is_some_and(|e| e.doomed) => {
                    self.remove(slot)
                }
                Action::Start => self.start(slot, now),
                Action::ReviveAt(at) => {
                    self.tell(slot, EventKind::Reviving, |event, _| {
                        event.delay = Some(at.saturating_duration_since(now).as_secs_f64());
                    });
                    self.deadlines.push(Reverse((at, Deadline::Revive(slot))));
                }
                Action::Stop {
                    pid,
                    signal,
                    whom,
                    deadline,
                } => {
                    if let Some(entry) = self.entry(slot) {
                        // The default (SIGTERM to the group) is what "destroying" and
                        // "restarting" already say; anything else is worth a line.
                        let whom_text = match whom {
                            Whom::Group => " and its process group",
                            Whom::Process => "",
                        };
                        let line = format!(
                            "sent {} to node '{}' (pid {pid}){whom_text}",
                            signal.as_str(),
                            entry.node.config.name,
                        );
                        if signal == Signal::SIGTERM && whom == Whom::Group {
                            log::debug!("{line}");
                        } else {
                            log::info!("{line}");
                        }
                    }
                    self.send(pid, signal, whom);
                    self.send(pid, Signal::SIGCONT, whom);
                    if let Some(proc) = self
                        .entry(slot)
                        .and_then(|e| e.node.state.instance())
                        .map(|i| i.proc)
                    {
                        self.deadlines
                            .push(Reverse((deadline, Deadline::Kill(proc))));
                    }
                }
                Action::Kill { pid, whom } => {
                    if let Some(entry) = self.entry(slot) {
                        log::warn!(
                            "node '{}' (pid {pid}) did not stop in time; sending SIGKILL",
                            entry.node.config.name
                        );
                    }
                    self.send(pid, Signal::SIGKILL, whom);
                }
                Action::Remove => self.remove(slot),
                Action::Fail(failure) => {
                    self.tell(slot, EventKind::Failed, |event, _| {
                        event.reason = Some(failure.to_string());
                    });
                    if let Some(entry) = self.entry(slot) {
                        self.notices.push(Notice::Failed {
                            node: entry.node.config.name.clone(),
                        });
                    }
                }
            }
        }
    }

    fn send(&mut self, pid: Pid, signal: Signal, whom: Whom) {
        match whom {
            Whom::Group => self.backend.signal_group(pid, signal),
            Whom::Process => self.backend.signal_process(pid, signal),
        }
    }

    fn remove(&mut self, slot: Slot) {
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        let name = &entry.node.config.name;
        if self.names.get(name) == Some(&slot) {
            self.names.remove(name);
            self.destroyed.insert(name.clone());
        }
        if self.doomed.get(name) == Some(&slot) {
            self.doomed.remove(name);
        }
        for dep in entry.deps.keys() {
            if let Some(list) = self.dependents.get_mut(dep) {
                list.retain(|&s| s != slot);
                if list.is_empty() {
                    self.dependents.remove(dep);
                }
            }
        }
        self.free.push(slot);
        if self.watched {
            self.events.push(Event::new(
                EventKind::Destroyed,
                Some(&entry.node.config.name),
            ));
        }
        self.notices.push(Notice::Removed {
            node: entry.node.config.name.clone(),
        });
        // What it depended on may be stopped now; what depended on it learns it is gone.
        let deps: Vec<String> = entry.deps.keys().cloned().collect();
        for dep in deps {
            if let Some(&doomed) = self.doomed.get(&dep) {
                self.stop_if_free(doomed);
            }
        }
        self.update_dependents(&entry.node.config.name, false);
    }

    /// Starts a new process for the node in `slot` and steps it with the outcome.
    fn start(&mut self, slot: Slot, now: Instant) {
        let proc = self.proc_id(slot);
        let Some(config) = self.entry(slot).map(|e| e.node.config.clone()) else {
            return;
        };
        let input = match self.backend.start(&config, proc, Start::Again) {
            Ok(started) => {
                let Some(pid) = started.pid else {
                    return;
                };
                self.notices.push(Notice::Started {
                    node: config.name.clone(),
                    pid,
                });
                Input::Started(Instance {
                    proc,
                    pid,
                    since: now,
                })
            }
            Err(e) => {
                let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
                    return;
                };
                let actions = entry.node.step(Input::StartFailed, now);
                match actions.first() {
                    Some(Action::ReviveAt(at)) => log::error!(
                        "cannot revive {e}; trying again in {}",
                        human(at.duration_since(now))
                    ),
                    Some(Action::Fail(failure)) => log::error!(
                        "cannot revive {e}; the node has failed and is not revived until restarted: {failure}"
                    ),
                    _ => {}
                }
                self.apply(slot, actions, now);
                return;
            }
        };
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let actions = entry.node.step(input, now);
        self.tell(slot, EventKind::Started, |event, entry| {
            event.pid = entry.node.state.pid().map(|p| i64::from(p.as_raw()));
            event.restarts = Some(entry.node.restarts as i64);
        });
        self.apply(slot, actions, now);
    }

    /// After the node in `slot` may have changed: what its new state needs (readiness
    /// and health checks, deadlines, notices), and what it means for others (dependents
    /// that may start or must restart with it, nodes being stopped in order).
    fn settle(&mut self, slot: Slot) {
        let now = self.backend.now();
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let state = entry.node.state;
        let seen = (state.name(), state.instance().map(|i| i.proc));
        if entry.seen == seen {
            return;
        }
        self.changed = true;
        let was_up = matches!(entry.seen.0, "starting" | "running");
        let was_running = entry.seen.0 == "running" && entry.seen.1 == seen.1;
        let was_new = entry.seen.0 == "new";
        entry.seen = seen;
        entry.generation = entry.generation.wrapping_add(1);
        entry.probe = None;
        let generation = entry.generation;
        let name = entry.node.config.name.clone();
        let doomed = entry.doomed;
        match state {
            State::Starting { instance, ready_by } => {
                entry.health = None;
                entry.health_failures = 0;
                self.deadlines
                    .push(Reverse((ready_by, Deadline::ReadyBy(instance.proc))));
                if let Readiness::Poll { interval, .. } = entry.node.readiness {
                    self.deadlines
                        .push(Reverse((now + interval, Deadline::Probe(slot, generation))));
                }
            }
            State::Running(_) if !was_running => {
                // Worth a line when the node was asked how it tells (`ready`).
                if entry.node.config.ready.is_some() {
                    log::info!("node '{name}' is ready");
                } else {
                    log::debug!("node '{name}' is ready");
                }
                if let Some(health) = &entry.node.config.health {
                    entry.health = Some("ok".into());
                    entry.health_failures = 0;
                    let interval = Duration::from_secs_f64(
                        health.interval.unwrap_or(Health::DEFAULT_INTERVAL),
                    );
                    self.deadlines
                        .push(Reverse((now + interval, Deadline::Probe(slot, generation))));
                }
                if let Some(period) = watchdog(&entry.node.config) {
                    self.deadlines.push(Reverse((
                        now + period,
                        Deadline::Watchdog(slot, generation),
                    )));
                }
                self.notices.push(Notice::Ready { node: name.clone() });
                self.tell(slot, EventKind::Ready, |event, _| {
                    event.pid = state.pid().map(|p| i64::from(p.as_raw()));
                });
            }
            State::Running(_) => {}
            State::Stopping { instance, .. } => {
                entry.health = None;
                self.tell(slot, EventKind::Stopping, |event, _| {
                    event.pid = Some(i64::from(instance.pid.as_raw()));
                });
            }
            State::Waiting if !was_new => {
                entry.health = None;
                self.tell(slot, EventKind::Waiting, |_, _| {});
            }
            State::Waiting | State::Reviving { .. } | State::Exited | State::Failed(_) => {
                entry.health = None;
            }
        }
        let up = state.is_up();
        // The nodes that depend on this one, by the name it has in the table.
        if self.names.get(&name) == Some(&slot) {
            self.update_dependents(&name, was_up && !up);
        }
        if doomed && state.instance().is_none() {
            self.step(slot, Input::Destroy);
        }
        if state.instance().is_none() && self.entry(slot).is_some_and(|e| e.pending.is_some()) {
            // A reload's new configuration, now that the old process is gone.
            self.take_pending(slot);
            return;
        }
        if let State::Waiting = state {
            if self.entry(slot).is_some_and(|e| e.unmet().next().is_none()) {
                self.step(slot, Input::DependenciesMet);
            }
        }
    }

    /// The node named `name` changed: its dependents' edges are brought up to date,
    /// those now free to start start, and with `went_down` (its process ended or is
    /// being stopped) those that restart with it are stopped.
    fn update_dependents(&mut self, name: &str, went_down: bool) {
        let Some(dependents) = self.dependents.get(name).cloned() else {
            return;
        };
        for slot in dependents {
            let Some(entry) = self.entry(slot) else {
                continue;
            };
            let Some(&(dependency, old, _)) = entry.deps.get(name) else {
                continue;
            };
            let edge = self.edge(name, dependency.condition);
            let up = entry.node.state.is_up();
            let waiting = matches!(entry.node.state, State::Waiting);
            if let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) {
                if let Some(e) = entry.deps.get_mut(name) {
                    e.1 = edge;
                    if edge != old {
                        e.2 = false;
                    }
                }
            }
            if went_down && dependency.restart && up && !self.stopping {
                let dependent = self
                    .entry(slot)
                    .map(|e| e.node.config.name.clone())
                    .unwrap_or_default();
                log::info!("node '{dependent}' restarts with '{name}'");
                self.step(slot, Input::DependencyLost);
                continue;
            }
            if waiting {
                if self.entry(slot).is_some_and(|e| e.unmet().next().is_none()) {
                    self.step(slot, Input::DependenciesMet);
                } else {
                    self.log_hopeless(slot);
                }
            }
        }
    }

    /// Logs, once each, the dependencies of a waiting node that can no longer be met.
    fn log_hopeless(&mut self, slot: Slot) {
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if !matches!(entry.node.state, State::Waiting) {
            return;
        }
        let node = entry.node.config.name.clone();
        for (dep, (dependency, edge, logged)) in entry.deps.iter_mut() {
            if let (Edge::Never(why), false) = (*edge, *logged) {
                *logged = true;
                log::warn!(
                    "node '{node}' waits for '{dep}' to be {}, which it can no longer be: {why}",
                    dependency.condition.name()
                );
            }
        }
    }

    /// A node being stopped in order goes now if nothing that depends on it still has
    /// a process.
    fn stop_if_free(&mut self, slot: Slot) {
        let Some(entry) = self.entry(slot) else {
            return;
        };
        if !entry.doomed {
            return;
        }
        let name = &entry.node.config.name;
        // Dependents that stay (a reload destroys only some nodes) go on without it;
        // those that go too, or went already, stop first.
        let blocking: Vec<&str> = self
            .dependents
            .get(name)
            .into_iter()
            .flatten()
            .filter(|&&s| s != slot)
            .filter_map(|&s| Some((s, self.entry(s)?)))
            .filter(|(s, d)| d.doomed || self.names.get(&d.node.config.name) != Some(s))
            .filter(|(_, d)| d.node.state.instance().is_some())
            .map(|(_, d)| d.node.config.name.as_str())
            .collect();
        if !blocking.is_empty() {
            log::debug!(
                "node '{name}' stops once {} have",
                blocking
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return;
        }
        match entry.node.state {
            State::Stopping { .. } => {}
            state => match state.pid() {
                Some(pid) => log::info!("destroying node '{name}' (pid {pid})"),
                None => log::info!("destroyed node '{name}'"),
            },
        }
        self.step(slot, Input::Destroy);
    }

    fn deadline(&mut self, at: Instant, deadline: Deadline) {
        let now = self.backend.now();
        match deadline {
            Deadline::Rotate(slot) => {
                let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
                    return;
                };
                if entry.node.rotation_due != Some(at) {
                    return;
                }
                entry.node.files.rotate_due();
                self.schedule_rotation(slot, now);
            }
            Deadline::Revive(slot) if !self.stopping => self.step(slot, Input::RevivalDue),
            Deadline::Revive(_) => {}
            Deadline::Kill(proc) => self.step(slot_of(proc), Input::KillDue { proc }),
            Deadline::ReadyBy(proc) => {
                let slot = slot_of(proc);
                let late = self.entry(slot).and_then(|e| match e.node.state {
                    State::Starting { instance, .. } if instance.proc == proc => {
                        Some((e.node.config.name.clone(), e.node.ready_timeout))
                    }
                    _ => None,
                });
                if let Some((name, timeout)) = late {
                    log::error!("node '{name}' not ready after {}", human_whole(timeout));
                    self.step(slot, Input::ReadyTimeout { proc });
                }
            }
            Deadline::Probe(slot, generation) => self.try_check(slot, generation),
            Deadline::ProbeTimeout(id) => {
                let slot = slot_of(id);
                let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
                    return;
                };
                let Some(probe) = entry.probe.as_mut().filter(|p| p.id == id) else {
                    return;
                };
                probe.timed_out = true;
                if let Some(pid) = probe.pid {
                    self.backend.signal_group(pid, Signal::SIGKILL);
                }
            }
            Deadline::Watchdog(slot, generation) => {
                let Some(entry) = self.entry(slot) else {
                    return;
                };
                let State::Running(instance) = entry.node.state else {
                    return;
                };
                if entry.generation != generation {
                    return;
                }
                let period = watchdog(&entry.node.config).unwrap_or_default();
                log::error!(
                    "node '{}' (pid {}) sent no WATCHDOG=1 for {}; sending SIGABRT",
                    entry.node.config.name,
                    instance.pid,
                    human(period)
                );
                let _ = now;
                self.step(
                    slot,
                    Input::WatchdogMissed {
                        proc: instance.proc,
                    },
                );
            }
        }
    }

    /// Starts the next try of the node's readiness or health check, if it is still due.
    fn try_check(&mut self, slot: Slot, generation: u32) {
        let Some(entry) = self.entry(slot) else {
            return;
        };
        if entry.generation != generation || entry.probe.is_some() {
            return;
        }
        let (purpose, check, timeout) = match (&entry.node.state, &entry.node.readiness) {
            (State::Starting { .. }, Readiness::Poll { check, interval }) => (
                Purpose::Ready,
                check.clone(),
                (*interval).max(Duration::from_secs(1)),
            ),
            (State::Running(_), _) => match &entry.node.config.health {
                Some(health) => (
                    Purpose::Health,
                    health.check.clone(),
                    Duration::from_secs_f64(health.timeout.unwrap_or(Health::DEFAULT_TIMEOUT)),
                ),
                None => return,
            },
            _ => return,
        };
        let config = entry.node.config.clone();
        let id = ProcId(self.proc_id(slot).0 | PROBE);
        let started = self.backend.probe(&config, id, &check, timeout);
        let now = self.backend.now();
        match started {
            Ok(pid) => {
                if pid.is_some() {
                    self.deadlines
                        .push(Reverse((now + timeout, Deadline::ProbeTimeout(id))));
                }
                if let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) {
                    entry.probe = Some(Probe {
                        id,
                        purpose,
                        pid,
                        last_line: None,
                        timed_out: false,
                    });
                }
            }
            Err(error) => {
                if let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) {
                    entry.probe = Some(Probe {
                        id,
                        purpose,
                        pid: None,
                        last_line: None,
                        timed_out: false,
                    });
                }
                self.probe_ended(id, Err(error));
            }
        }
    }

    /// A check that is a process has exited.
    fn probe_exited(&mut self, id: ProcId) {
        let slot = slot_of(id);
        let Some(probe) = self
            .entry(slot)
            .and_then(|e| e.probe.clone())
            .filter(|p| p.id == id)
        else {
            return;
        };
        let Some(pid) = probe.pid else {
            return;
        };
        let ended = self.backend.ended(id, pid, Remnants::Kill);
        let result = if probe.timed_out {
            Err("it timed out".to_string())
        } else if ended.exit == Some(ExitInfo::Code(0)) {
            Ok(())
        } else {
            Err(match probe.last_line {
                Some(line) => format!("{}: {line}", ended.what),
                None => ended.what,
            })
        };
        self.probe_ended(id, result);
    }

    /// A try of a check ended with `result`.
    fn probe_ended(&mut self, id: ProcId, result: Result<(), String>) {
        let slot = slot_of(id);
        let now = self.backend.now();
        let Some(entry) = self.nodes.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(probe) = entry.probe.take().filter(|p| p.id == id) else {
            return;
        };
        let generation = entry.generation;
        let name = entry.node.config.name.clone();
        match (probe.purpose, result) {
            (Purpose::Ready, Ok(())) => self.step(slot, Input::Ready),
            (Purpose::Ready, Err(error)) => {
                log::debug!("node '{name}' is not ready yet: {error}");
                if let Readiness::Poll { interval, .. } = entry.node.readiness {
                    self.deadlines
                        .push(Reverse((now + interval, Deadline::Probe(slot, generation))));
                }
            }
            (Purpose::Health, result) => {
                let Some(health) = entry.node.config.health.clone() else {
                    return;
                };
                let limit = health
                    .failures
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(Health::DEFAULT_FAILURES);
                let interval =
                    Duration::from_secs_f64(health.interval.unwrap_or(Health::DEFAULT_INTERVAL));
                match result {
                    Ok(()) => {
                        let recovered = entry.health_failures > 0;
                        entry.health_failures = 0;
                        entry.health = Some("ok".into());
                        if recovered {
                            self.tell(slot, EventKind::Health, |event, _| {
                                event.health = Some("healthy".into());
                            });
                        }
                    }
                    Err(error) => {
                        entry.health_failures += 1;
                        let failures = entry.health_failures;
                        entry.health = Some(format!("failing ({failures}/{limit}): {error}"));
                        self.tell(slot, EventKind::Health, |event, _| {
                            event.health = Some("unhealthy".into());
                            event.failures = Some(i64::from(failures));
                            event.limit = Some(i64::from(limit));
                            event.reason = Some(error.clone());
                        });
                        let Some(entry) =
                            self.nodes.get_mut(slot as usize).and_then(Option::as_mut)
                        else {
                            return;
                        };
                        if failures >= limit {
                            let proc = entry.node.state.instance().map(|i| i.proc);
                            log::error!(
                                "node '{name}' failed its health check ({}) {failures} times, last: {error}; restarting it",
                                health.check
                            );
                            if let Some(proc) = proc {
                                self.step(slot, Input::Unhealthy { proc });
                            }
                            return;
                        }
                        log::warn!(
                            "node '{name}' failed its health check ({failures}/{limit}): {error}"
                        );
                    }
                }
                self.deadlines
                    .push(Reverse((now + interval, Deadline::Probe(slot, generation))));
            }
        }
    }
}

/// A path by which `deps` (a node's dependencies by name) lead from `start` back to
/// it, as `a -> b -> a`: depth first, along names that `deps` knows.
fn cycle_through(start: &str, deps: &dyn Fn(&str) -> Vec<String>) -> Option<String> {
    fn walk(
        at: &str,
        target: &str,
        path: &mut Vec<String>,
        seen: &mut HashSet<String>,
        deps: &dyn Fn(&str) -> Vec<String>,
    ) -> bool {
        for next in deps(at) {
            path.push(next.clone());
            if next == target {
                return true;
            }
            if seen.insert(next.clone()) && walk(&next, target, path, seen, deps) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = HashSet::new();
    walk(start, start, &mut path, &mut seen, deps).then(|| path.join(" -> "))
}

/// The watchdog period of a node that speaks the notify protocol.
fn watchdog(config: &NodeConfig) -> Option<Duration> {
    let notify =
        config.ready == Some(Ready::Notify) || config.ready.is_none() && config.command.is_none();
    config
        .watchdog
        .and_then(|s| seconds(s).ok())
        .filter(|_| notify)
}

/// `90s`, `2.5s`: a timeout as it was set.
fn human_whole(delay: Duration) -> String {
    let secs = delay.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests;
