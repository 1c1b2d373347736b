//! The node table and the policy that keeps nodes alive: Zeek's
//! `Supervisor::create/destroy/restart/status`, revival with backoff, SIGKILL after
//! `stop_timeout`, `max_restarts`, shutdown.
//!
//! `Supervisor` owns every node (`node::Node`) in a table of slots, with an index of the
//! live ones by name. A destroyed node leaves the index at once (its name can be used
//! again) but keeps its slot, in the `stopping` state, until its process has exited.
//! Each node's state machine (`Node::step`) decides; the supervisor carries out its
//! actions through the process backend (`process::Backend`), and keeps the deadlines
//! they ask for (revivals, SIGKILLs), which the loop asks for (`next_deadline`) and hands
//! back when due (`fire_due`). Starts are reported as `Notice`s for the loop to turn
//! into `node_status` calls, so no script runs while the table is borrowed.
//!
//! A process id (`ProcId`) names the node's slot and a serial number, so an exit finds
//! its node without a second table, and an exit of an earlier process of a slot is
//! told apart from that of the current one.
//!
//! It lives on the loop thread only.

pub mod node;
pub mod output;
pub mod policy;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::{NodeConfig, NodeStatus, OutputLine, Status, Stream};
use crate::process::{Backend, ProcId, Start, StartError, lines};
pub use node::{Action, Input, Instance, Node, State, Then};
use output::TAIL_LINES;
pub use policy::human;

/// Something the loop should tell the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A process for `node` started: `node_status(node, pid)`.
    Started { node: String, pid: Pid },
    /// `node` failed for good and is not revived: `node_status(node, 0)`.
    Failed { node: String },
    /// `node` is gone from the table (destroyed, and its last process has exited; or
    /// shutdown): no more output will come from it.
    Removed { node: String },
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
    /// Its process could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    /// `Input::RevivalDue` for the node in this slot.
    Revive(u32),
    /// `Input::KillDue` for this process.
    Kill(ProcId),
    /// The end of a period of the output files of the node in this slot (rotation by
    /// time); stale unless it is the node's `rotation_due`.
    Rotate(Slot),
}

/// A node's place in the table.
type Slot = u32;

fn slot_of(proc: ProcId) -> Slot {
    (proc.0 >> 32) as Slot
}

pub struct Supervisor {
    backend: Box<dyn Backend>,
    nodes: Vec<Option<Node>>,
    free: Vec<Slot>,
    /// The nodes that exist (not destroyed), by name.
    names: BTreeMap<String, Slot>,
    deadlines: BinaryHeap<Reverse<(Instant, Deadline)>>,
    notices: Vec<Notice>,
    next_serial: u32,
    /// Set by `stop_all`: nothing is revived or restarted any more.
    stopping: bool,
}

impl Supervisor {
    pub fn new(backend: Box<dyn Backend>) -> Supervisor {
        Supervisor {
            backend,
            nodes: Vec::new(),
            free: Vec::new(),
            names: BTreeMap::new(),
            deadlines: BinaryHeap::new(),
            notices: Vec::new(),
            next_serial: 0,
            stopping: false,
        }
    }

    /// `Supervisor::create`: starts a node, or says why not.
    pub fn create(&mut self, config: NodeConfig) -> Result<(), CreateError> {
        config.validate().map_err(CreateError::Invalid)?;
        if self.names.contains_key(&config.name) {
            return Err(CreateError::Exists(config.name));
        }
        if self.stopping {
            return Err(CreateError::ShuttingDown);
        }
        let slot = self
            .free
            .last()
            .copied()
            .unwrap_or(self.nodes.len() as Slot);
        let proc = self.proc_id(slot);
        let started = self.backend.start(&config, proc, Start::First)?;
        let now = self.backend.now();
        self.free.pop();
        if slot as usize == self.nodes.len() {
            self.nodes.push(None);
        }
        let name = config.name.clone();
        self.notices.push(Notice::Started {
            node: name.clone(),
            pid: started.pid,
        });
        let instance = Instance {
            proc,
            pid: started.pid,
            since: now,
        };
        self.nodes[slot as usize] = Some(Node::new(config, instance, started.files));
        self.names.insert(name, slot);
        self.schedule_rotation(slot, now);
        Ok(())
    }

    /// `Supervisor::destroy`: `""` means every node. False for an unknown name.
    pub fn destroy(&mut self, name: &str) -> bool {
        let Some(slots) = self.targets(name) else {
            return false;
        };
        for slot in slots {
            if let Some(node) = self.node(slot) {
                let name = node.config.name.clone();
                match node.state.pid() {
                    Some(pid) => log::info!("destroying node '{name}' (pid {pid})"),
                    None => log::info!("destroyed node '{name}'"),
                }
                self.names.remove(&name);
            }
            self.step(slot, Input::Destroy);
        }
        true
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
            if let Some(node) = self.node(slot) {
                if let State::Running(instance) = node.state {
                    log::info!(
                        "restarting node '{}' (pid {})",
                        node.config.name,
                        instance.pid
                    );
                }
            }
            self.step(slot, Input::Restart);
        }
        true
    }

    /// `Supervisor::status`: `""` means every node; an unknown name gives no entry.
    pub fn status(&self, name: &str) -> Status {
        let now = self.backend.now();
        let entry = |node: &Node| {
            let mut status = NodeStatus::new(node.config.clone());
            status.pid = node.state.pid().map(|p| i64::from(p.as_raw()));
            status.state = node.state.name().to_string();
            status.restarts = node.restarts as i64;
            status.exit = node.last_exit;
            if let State::Running(instance) = node.state {
                status.uptime = Some(now.duration_since(instance.since).as_secs_f64());
            }
            // One node's status carries its recent output; every node's would be big.
            if !name.is_empty() {
                status.output = node.output.lines();
            }
            status
        };
        let nodes = self
            .named(name)
            .filter_map(|(n, slot)| Some((n.clone(), entry(self.node(slot)?))))
            .collect();
        Status { nodes }
    }

    /// The last lines a node wrote, oldest first; `None` for an unknown node.
    pub fn tail(&self, name: &str) -> Option<Vec<OutputLine>> {
        let slot = *self.names.get(name)?;
        self.node(slot).map(|n| n.output.lines())
    }

    /// Takes the lines (each ending in `\n`) that process `proc` wrote: keeps them for
    /// `tail`, and writes them to the node's file when the supervisor rotates it. True
    /// when they went to a file, false when they are for hooks or printing.
    pub fn take_output(&mut self, proc: ProcId, stream: Stream, data: &[u8]) -> bool {
        let Some(node) = self
            .nodes
            .get_mut(slot_of(proc) as usize)
            .and_then(Option::as_mut)
        else {
            return false;
        };
        // Only the lines that will still be kept after this chunk are worth copying.
        for line in lines::split(lines::last(data, TAIL_LINES)) {
            node.output.push(stream, &String::from_utf8_lossy(line));
        }
        node.files.write(stream, data)
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
        let slot = slot_of(proc);
        let Some(node) = self.node(slot) else {
            return;
        };
        let Some(instance) = node.state.instance().copied().filter(|i| i.proc == proc) else {
            return;
        };
        let stopping = matches!(node.state, State::Stopping { .. });
        let restarting = matches!(
            node.state,
            State::Stopping {
                then: Then::Restart,
                ..
            }
        );
        let stop_timeout = node.stop_timeout;
        let name = node.config.name.clone();
        let ended = self
            .backend
            .ended(proc, instance.pid, stopping, stop_timeout);
        let now = self.backend.now();
        let pid = instance.pid;
        let what = ended.what;
        let actions = self.node_mut(slot).map_or_else(Vec::new, |node| {
            node.step(
                Input::Exited {
                    proc,
                    exit: ended.exit,
                },
                now,
            )
        });
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
            Some(Action::Stop { .. } | Action::Kill(_)) | None => {}
        }
        self.apply(slot, actions, now);
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
            match deadline {
                Deadline::Revive(slot) if !self.stopping => self.step(slot, Input::RevivalDue),
                Deadline::Revive(_) => {}
                Deadline::Kill(proc) => self.step(slot_of(proc), Input::KillDue { proc }),
                Deadline::Rotate(slot) => {
                    let Some(node) = self.node_mut(slot) else {
                        continue;
                    };
                    if node.rotation_due != Some(at) {
                        continue;
                    }
                    node.files.rotate_due();
                    self.schedule_rotation(slot, now);
                }
            }
        }
        self.backend.fire_due(now);
        self.backend.tidy(now);
    }

    /// Shutdown: destroy every node and revive nothing any more. The supervisor is done
    /// when `is_idle`.
    pub fn stop_all(&mut self) {
        self.stopping = true;
        self.backend.shut_down();
        self.destroy("");
    }

    /// SIGCHLD: adopted processes may have exited.
    pub fn child_exited(&mut self) {
        self.backend.child_exited();
    }

    /// Impatient shutdown: SIGKILL every process now.
    pub fn kill_all(&mut self) {
        self.stopping = true;
        self.backend.shut_down();
        self.destroy("");
        for node in self.nodes.iter().flatten() {
            if let Some(pid) = node.state.pid() {
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

    /// Keeps a deadline for the end of the current period of the node's output files,
    /// when they rotate by time. One wake-up per period: the loop sleeps until then.
    fn schedule_rotation(&mut self, slot: Slot, now: Instant) {
        let Some(node) = self.node_mut(slot) else {
            return;
        };
        let Some(wait) = node.files.until_rotation() else {
            return;
        };
        // At least a millisecond ahead: the wall clock that the period ends by and the
        // loop's clock may disagree by a little, and a due deadline must not spin.
        let at = now + wait.max(std::time::Duration::from_millis(1));
        node.rotation_due = Some(at);
        self.deadlines.push(Reverse((at, Deadline::Rotate(slot))));
    }

    fn node(&self, slot: Slot) -> Option<&Node> {
        self.nodes.get(slot as usize).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, slot: Slot) -> Option<&mut Node> {
        self.nodes.get_mut(slot as usize).and_then(Option::as_mut)
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

    /// Steps the node in `slot` and carries out what it says.
    fn step(&mut self, slot: Slot, input: Input) {
        let now = self.backend.now();
        let Some(node) = self.node_mut(slot) else {
            return;
        };
        let actions = node.step(input, now);
        self.apply(slot, actions, now);
    }

    fn apply(&mut self, slot: Slot, actions: Vec<Action>, now: Instant) {
        for action in actions {
            match action {
                // Shutdown: nothing starts again, and the node is done with.
                Action::Start if self.stopping => self.remove(slot),
                Action::Start => self.start(slot, now),
                Action::ReviveAt(at) => self.deadlines.push(Reverse((at, Deadline::Revive(slot)))),
                Action::Stop { pid, deadline } => {
                    self.backend.signal_group(pid, Signal::SIGTERM);
                    self.backend.signal_group(pid, Signal::SIGCONT);
                    if let Some(proc) = self
                        .node(slot)
                        .and_then(|n| n.state.instance())
                        .map(|i| i.proc)
                    {
                        self.deadlines
                            .push(Reverse((deadline, Deadline::Kill(proc))));
                    }
                }
                Action::Kill(pid) => {
                    if let Some(node) = self.node(slot) {
                        log::warn!(
                            "node '{}' (pid {pid}) did not stop in time; sending SIGKILL",
                            node.config.name
                        );
                    }
                    self.backend.signal_group(pid, Signal::SIGKILL);
                }
                Action::Remove => self.remove(slot),
                Action::Fail(_) => {
                    if let Some(node) = self.node(slot) {
                        self.notices.push(Notice::Failed {
                            node: node.config.name.clone(),
                        });
                    }
                }
            }
        }
    }

    fn remove(&mut self, slot: Slot) {
        if let Some(node) = self.nodes.get_mut(slot as usize).and_then(Option::take) {
            if self.names.get(&node.config.name) == Some(&slot) {
                self.names.remove(&node.config.name);
            }
            self.free.push(slot);
            self.notices.push(Notice::Removed {
                node: node.config.name,
            });
        }
    }

    /// Starts a new process for the node in `slot` and steps it with the outcome.
    fn start(&mut self, slot: Slot, now: Instant) {
        let proc = self.proc_id(slot);
        let Some(config) = self.node(slot).map(|n| n.config.clone()) else {
            return;
        };
        let input = match self.backend.start(&config, proc, Start::Again) {
            Ok(started) => {
                self.notices.push(Notice::Started {
                    node: config.name.clone(),
                    pid: started.pid,
                });
                Input::Started(Instance {
                    proc,
                    pid: started.pid,
                    since: now,
                })
            }
            Err(e) => {
                let Some(node) = self.node_mut(slot) else {
                    return;
                };
                let actions = node.step(Input::StartFailed, now);
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
        self.step(slot, input);
    }
}

#[cfg(test)]
mod tests;
