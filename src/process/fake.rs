//! A backend for the supervisor's tests: no processes and no clock of its own. It
//! records what the supervisor asks (starts, signals), hands out pids, and lets the test
//! say when time passes, how a process ends and when a start fails.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{Backend, Ended, OutputFiles, ProcId, Remnants, Start, StartError, Started, Usage};
use crate::config::{Check, ExitInfo, NodeConfig};

/// What the fake's world holds; shared between the backend and the test.
#[derive(Debug)]
pub struct World {
    pub now: Instant,
    next_pid: i32,
    /// Every start asked for: node, process, pid, which start.
    pub started: Vec<(String, ProcId, Pid, Start)>,
    /// Every signal sent to a process group, in order.
    pub signals: Vec<(Pid, Signal)>,
    /// Every signal sent to a single process, in order.
    pub process_signals: Vec<(Pid, Signal)>,
    /// Every check tried: its id and what it checks.
    pub probes: Vec<(ProcId, Check)>,
    /// What remnants each ended process was left with.
    pub remnants: Vec<(ProcId, Remnants)>,
    /// How each process will have ended, when the test says so; otherwise a signalled
    /// one is killed by its last signal and another exits with 0.
    pub exits: HashMap<ProcId, ExitInfo>,
    /// Why a process ended, beyond its status, when the test says so.
    pub reasons: HashMap<ProcId, String>,
    /// What each process uses, when the test says so.
    pub usage: HashMap<ProcId, Usage>,
    /// The next start fails with this message.
    pub refuse: Option<String>,
    /// Processes started and not yet ended.
    pub live: HashMap<ProcId, Pid>,
    pub shut_down: bool,
}

impl World {
    fn spawn(&mut self, proc: ProcId) -> Pid {
        let pid = Pid::from_raw(self.next_pid);
        self.next_pid += 1;
        self.live.insert(proc, pid);
        pid
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// The process running as `pid`.
    pub fn proc_of(&self, pid: Pid) -> Option<ProcId> {
        self.live
            .iter()
            .find_map(|(proc, p)| (*p == pid).then_some(*proc))
    }

    /// The signals sent to `pid`.
    pub fn signals_to(&self, pid: Pid) -> Vec<Signal> {
        self.signals
            .iter()
            .filter(|(p, _)| *p == pid)
            .map(|(_, s)| *s)
            .collect()
    }
}

pub struct Fake {
    world: Rc<RefCell<World>>,
}

impl Fake {
    /// A fake and a handle on its world.
    pub fn new() -> (Fake, Rc<RefCell<World>>) {
        let world = Rc::new(RefCell::new(World {
            now: Instant::now(),
            next_pid: 1000,
            started: Vec::new(),
            signals: Vec::new(),
            process_signals: Vec::new(),
            probes: Vec::new(),
            remnants: Vec::new(),
            exits: HashMap::new(),
            reasons: HashMap::new(),
            usage: HashMap::new(),
            refuse: None,
            live: HashMap::new(),
            shut_down: false,
        }));
        (
            Fake {
                world: world.clone(),
            },
            world,
        )
    }
}

impl Backend for Fake {
    fn now(&self) -> Instant {
        self.world.borrow().now
    }

    fn start(
        &mut self,
        config: &NodeConfig,
        proc: ProcId,
        start: Start,
    ) -> Result<Started, StartError> {
        let mut world = self.world.borrow_mut();
        if let Some(error) = world.refuse.take() {
            return Err(StartError::Program(error));
        }
        if start == Start::Check {
            return Ok(Started {
                pid: None,
                files: OutputFiles::default(),
            });
        }
        let pid = world.spawn(proc);
        world.started.push((config.name.clone(), proc, pid, start));
        Ok(Started {
            pid: Some(pid),
            files: OutputFiles::default(),
        })
    }

    fn signal_group(&mut self, pid: Pid, signal: Signal) {
        self.world.borrow_mut().signals.push((pid, signal));
    }

    fn signal_process(&mut self, pid: Pid, signal: Signal) {
        self.world.borrow_mut().process_signals.push((pid, signal));
    }

    fn probe(
        &mut self,
        _config: &NodeConfig,
        probe: ProcId,
        check: &Check,
        _timeout: Duration,
    ) -> Result<Option<Pid>, String> {
        let mut world = self.world.borrow_mut();
        world.probes.push((probe, check.clone()));
        match check {
            Check::Exec(_) => Ok(Some(world.spawn(probe))),
            Check::Tcp(_) | Check::Http(_) => Ok(None),
        }
    }

    fn sender_of(&self, pid: Pid) -> Option<ProcId> {
        self.world.borrow().proc_of(pid)
    }

    fn ended(&mut self, proc: ProcId, pid: Pid, remnants: Remnants) -> Ended {
        let mut world = self.world.borrow_mut();
        world.live.remove(&proc);
        world.remnants.push((proc, remnants));
        let last_signal = world
            .signals
            .iter()
            .chain(&world.process_signals)
            .rev()
            .find(|(p, s)| *p == pid && *s != Signal::SIGCONT)
            .map(|(_, s)| *s);
        let exit = world.exits.remove(&proc).unwrap_or(match last_signal {
            Some(signal) => ExitInfo::Signal(signal as i32),
            None => ExitInfo::Code(0),
        });
        Ended {
            exit: Some(exit),
            what: exit.to_string(),
            reason: world.reasons.remove(&proc),
        }
    }

    fn usage(&self, of: &[(ProcId, Pid)]) -> Vec<Option<Usage>> {
        let world = self.world.borrow();
        of.iter()
            .map(|(proc, _)| world.usage.get(proc).copied())
            .collect()
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn fire_due(&mut self, _now: Instant) {}

    fn tidy(&mut self, _now: Instant) {}

    fn child_exited(&mut self) {}

    fn shut_down(&mut self) {
        self.world.borrow_mut().shut_down = true;
    }

    fn is_idle(&self) -> bool {
        true
    }
}
