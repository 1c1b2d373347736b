//! One supervised node: its state machine and its revival policy.
//!
//! The transitions are pure: each takes the current time and returns what the
//! supervisor must do (`Action`); the supervisor does it (spawn, signal, schedule).
//! That keeps every transition testable without processes.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::output::OutputTail;
use crate::config::{ExitInfo, NodeConfig, seconds};
use crate::process::ProcId;
use crate::process::rotate::RotatingFile;

/// Where a node is in its life. The pid exists only where there is a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Its process is alive, as far as the loop knows.
    Running {
        proc: ProcId,
        pid: Pid,
        since: Instant,
    },
    /// Its process ended on its own; a new one starts at `at`.
    Reviving { at: Instant },
    /// `restart` asked its process to stop; a new one starts as soon as it has exited.
    Restarting { proc: ProcId, pid: Pid },
    /// It is not revived any more, until `restart`.
    Failed(Failure),
}

/// Why a node is no longer revived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// It exited with `PERMANENT_FAILURE_EXIT`.
    PermanentExit,
    /// It was revived `max_restarts` times within `restart_window`.
    TooManyRestarts { restarts: u32, window: Duration },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::PermanentExit => write!(
                f,
                "it exited with code {PERMANENT_FAILURE_EXIT}, which means: do not revive"
            ),
            Failure::TooManyRestarts { restarts, window } => write!(
                f,
                "it was revived {restarts} times within {}",
                crate::supervisor::human(*window)
            ),
        }
    }
}

/// The exit code with which a node says it must not be revived (s6's convention).
pub const PERMANENT_FAILURE_EXIT: i32 = 125;

impl NodeState {
    pub fn name(&self) -> &'static str {
        match self {
            NodeState::Running { .. } => "running",
            NodeState::Reviving { .. } => "reviving",
            NodeState::Restarting { .. } => "restarting",
            NodeState::Failed(_) => "failed",
        }
    }

    pub fn pid(&self) -> Option<Pid> {
        match *self {
            NodeState::Running { pid, .. } | NodeState::Restarting { pid, .. } => Some(pid),
            NodeState::Reviving { .. } | NodeState::Failed(_) => None,
        }
    }

    pub fn proc(&self) -> Option<ProcId> {
        match *self {
            NodeState::Running { proc, .. } | NodeState::Restarting { proc, .. } => Some(proc),
            NodeState::Reviving { .. } | NodeState::Failed(_) => None,
        }
    }
}

/// What the supervisor must do after a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a process for the node now.
    Start,
    /// Start one at this time (schedule a revival).
    ReviveAt(Instant),
    /// Ask this process to stop (SIGTERM now, SIGKILL after the stop timeout).
    Stop(ProcId, Pid),
    /// The node has failed for good: tell the script (`node_status(node, 0)`).
    Fail(Failure),
    Nothing,
}

/// When a node that keeps failing is revived: Zeek's policy (1 s, doubled every third
/// consecutive failure, forgotten after 30 s of uptime), with settable first and
/// longest delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevivalPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// A process that ran at least this long ends a run of failures.
    pub reset_after: Duration,
    /// Revivals allowed within `restart_window` before the node is marked failed.
    pub max_restarts: Option<u32>,
    pub restart_window: Duration,
}

impl Default for RevivalPolicy {
    fn default() -> Self {
        RevivalPolicy {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            reset_after: Duration::from_secs(30),
            max_restarts: None,
            restart_window: Duration::from_secs(60),
        }
    }
}

impl RevivalPolicy {
    /// The policy of `config`, from its extension fields over the defaults.
    pub fn of(config: &NodeConfig) -> RevivalPolicy {
        let mut policy = RevivalPolicy::default();
        if let Some(Ok(d)) = config.revival_delay.map(seconds) {
            policy.first_delay = d;
        }
        if let Some(Ok(d)) = config.revival_max_delay.map(seconds) {
            policy.max_delay = d;
        }
        policy.max_restarts = config.max_restarts.and_then(|n| u32::try_from(n).ok());
        if let Some(Ok(d)) = config.restart_window.map(seconds) {
            policy.restart_window = d;
        }
        policy
    }

    /// The wait before the revival that follows `failures` consecutive failures (>= 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1) / 3;
        let factor = 1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX);
        self.first_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay.max(self.first_delay))
    }
}

/// A node in the supervisor's table.
#[derive(Debug)]
pub struct Node {
    pub config: NodeConfig,
    pub state: NodeState,
    pub policy: RevivalPolicy,
    pub stop_timeout: Duration,
    /// Processes started after the first one (revivals and restarts).
    pub restarts: u64,
    /// Consecutive premature exits, for the revival delay.
    pub failures: u32,
    pub last_exit: Option<ExitInfo>,
    /// The last lines it wrote.
    pub output: OutputTail,
    /// Its stdout and stderr files, when the supervisor writes and rotates them.
    pub files: [Option<RotatingFile>; 2],
    /// When it was revived lately, for `max_restarts`.
    revivals: VecDeque<Instant>,
}

/// The default time between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The time between SIGTERM and SIGKILL for a node of `config`.
pub fn stop_timeout(config: &NodeConfig) -> Duration {
    config
        .stop_timeout
        .and_then(|s| seconds(s).ok())
        .unwrap_or(DEFAULT_STOP_TIMEOUT)
}

impl Node {
    /// A node whose first process was just started.
    pub fn new(config: NodeConfig, proc: ProcId, pid: Pid, now: Instant) -> Node {
        let stop_timeout = stop_timeout(&config);
        Node {
            policy: RevivalPolicy::of(&config),
            config,
            state: NodeState::Running {
                proc,
                pid,
                since: now,
            },
            stop_timeout,
            restarts: 0,
            failures: 0,
            last_exit: None,
            output: OutputTail::default(),
            files: [None, None],
            revivals: VecDeque::new(),
        }
    }

    /// Process `proc` ended with `exit`.
    pub fn exited(&mut self, proc: ProcId, exit: Option<ExitInfo>, now: Instant) -> Action {
        match self.state {
            NodeState::Running { proc: p, since, .. } if p == proc => {
                self.last_exit = exit;
                if exit == Some(ExitInfo::Code(PERMANENT_FAILURE_EXIT)) {
                    return self.fail(Failure::PermanentExit);
                }
                if now.duration_since(since) >= self.policy.reset_after {
                    self.failures = 0;
                }
                self.failed_once(now)
            }
            NodeState::Restarting { proc: p, .. } if p == proc => {
                self.last_exit = exit;
                Action::Start
            }
            // An exit of a process this node no longer owns.
            _ => Action::Nothing,
        }
    }

    /// One more failure: schedule the revival, or give up when there were too many.
    fn failed_once(&mut self, now: Instant) -> Action {
        self.failures = self.failures.saturating_add(1);
        if let Some(max) = self.policy.max_restarts {
            let window = self.policy.restart_window;
            while self
                .revivals
                .front()
                .is_some_and(|&t| now.duration_since(t) > window)
            {
                self.revivals.pop_front();
            }
            if self.revivals.len() >= max as usize {
                return self.fail(Failure::TooManyRestarts {
                    restarts: max,
                    window,
                });
            }
            self.revivals.push_back(now);
        }
        let delay = self.policy.delay(self.failures);
        if delay.is_zero() {
            Action::Start
        } else {
            let at = now + delay;
            self.state = NodeState::Reviving { at };
            Action::ReviveAt(at)
        }
    }

    fn fail(&mut self, failure: Failure) -> Action {
        self.state = NodeState::Failed(failure);
        Action::Fail(failure)
    }

    /// A scheduled revival is due (or a stale one fired).
    pub fn revival_due(&self, now: Instant) -> Action {
        match self.state {
            NodeState::Reviving { at } if at <= now => Action::Start,
            _ => Action::Nothing,
        }
    }

    /// `Supervisor::restart` for this node.
    pub fn restart(&mut self) -> Action {
        self.failures = 0;
        self.revivals.clear();
        match self.state {
            NodeState::Running { proc, pid, .. } => {
                self.state = NodeState::Restarting { proc, pid };
                Action::Stop(proc, pid)
            }
            NodeState::Reviving { .. } | NodeState::Failed(_) => Action::Start,
            NodeState::Restarting { .. } => Action::Nothing,
        }
    }

    /// A new process was started for the node.
    pub fn started(&mut self, proc: ProcId, pid: Pid, now: Instant) {
        self.restarts += 1;
        self.state = NodeState::Running {
            proc,
            pid,
            since: now,
        };
    }

    /// Starting a new process failed: wait as if it had failed at once, but never retry
    /// a failing spawn in a tight loop, even with a revival delay of 0.
    pub fn start_failed(&mut self, now: Instant) -> Action {
        match self.failed_once(now) {
            Action::Start => {
                let at = now + Duration::from_millis(100);
                self.state = NodeState::Reviving { at };
                Action::ReviveAt(at)
            }
            Action::ReviveAt(at) => {
                let at = at.max(now + Duration::from_millis(100));
                self.state = NodeState::Reviving { at };
                Action::ReviveAt(at)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P1: ProcId = ProcId(1);
    const P2: ProcId = ProcId(2);

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n)
    }

    fn node(now: Instant) -> Node {
        Node::new(NodeConfig::named("w1"), P1, pid(100), now)
    }

    #[test]
    fn zeek_delays_double_every_third_failure_up_to_the_cap() {
        let policy = RevivalPolicy::default();
        let secs: Vec<u64> = (1..=22).map(|f| policy.delay(f).as_secs()).collect();
        assert_eq!(
            secs,
            [
                1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 60, 60, 60, 60
            ]
        );
        let zero = RevivalPolicy {
            first_delay: Duration::ZERO,
            ..policy
        };
        assert_eq!(zero.delay(50), Duration::ZERO);
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn running_to_reviving_on_exit_then_start_when_due() {
        let t0 = Instant::now();
        let mut n = node(t0);
        let t1 = t0 + Duration::from_secs(2);
        let action = n.exited(P1, Some(ExitInfo::Code(3)), t1);
        assert_eq!(action, Action::ReviveAt(t1 + Duration::from_secs(1)));
        assert_eq!(n.state.name(), "reviving");
        assert_eq!(n.state.pid(), None);
        assert_eq!(n.last_exit, Some(ExitInfo::Code(3)));
        assert_eq!(n.revival_due(t1), Action::Nothing, "not yet due");
        assert_eq!(n.revival_due(t1 + Duration::from_secs(1)), Action::Start);
        n.started(P2, pid(101), t1 + Duration::from_secs(1));
        assert_eq!(n.state.pid(), Some(pid(101)));
        assert_eq!(n.restarts, 1);
    }

    #[test]
    fn failures_back_off_and_long_uptime_resets_them() {
        let t0 = Instant::now();
        let mut n = node(t0);
        let mut now = t0;
        let mut proc = P1;
        for expected in [1, 1, 1, 2, 2, 2, 4] {
            now += Duration::from_millis(10);
            let Action::ReviveAt(at) = n.exited(proc, None, now) else {
                panic!("expected a revival")
            };
            assert_eq!(at - now, Duration::from_secs(expected));
            proc = ProcId(proc.0 + 1);
            n.started(proc, pid(200), at);
            now = at;
        }
        // a process that ran for 30 s ends the run of failures
        now += Duration::from_secs(31);
        let Action::ReviveAt(at) = n.exited(proc, None, now) else {
            panic!("expected a revival")
        };
        assert_eq!(at - now, Duration::from_secs(1));
    }

    #[test]
    fn zero_delay_starts_at_once() {
        let t0 = Instant::now();
        let mut cfg = NodeConfig::named("w1");
        cfg.revival_delay = Some(0.0);
        let mut n = Node::new(cfg, P1, pid(100), t0);
        assert_eq!(n.exited(P1, None, t0), Action::Start);
    }

    #[test]
    fn exits_of_other_processes_are_ignored() {
        let t0 = Instant::now();
        let mut n = node(t0);
        assert_eq!(n.exited(P2, None, t0), Action::Nothing);
        assert_eq!(n.state.name(), "running");
        assert_eq!(n.last_exit, None);
    }

    #[test]
    fn restart_from_each_state() {
        let t0 = Instant::now();
        // running: stop it, then start when it has exited
        let mut n = node(t0);
        assert_eq!(n.restart(), Action::Stop(P1, pid(100)));
        assert_eq!(n.state.name(), "restarting");
        assert_eq!(n.state.pid(), Some(pid(100)));
        assert_eq!(n.restart(), Action::Nothing, "already restarting");
        assert_eq!(n.exited(P1, Some(ExitInfo::Signal(15)), t0), Action::Start);
        // reviving: start now
        let mut n = node(t0);
        n.exited(P1, None, t0);
        assert_eq!(n.restart(), Action::Start);
        assert_eq!(n.failures, 0);
    }

    #[test]
    fn the_permanent_failure_code_stops_revivals_until_restart() {
        let t0 = Instant::now();
        let mut n = node(t0);
        let action = n.exited(P1, Some(ExitInfo::Code(PERMANENT_FAILURE_EXIT)), t0);
        assert_eq!(action, Action::Fail(Failure::PermanentExit));
        assert_eq!(n.state.name(), "failed");
        assert_eq!(n.state.pid(), None);
        assert_eq!(
            n.revival_due(t0 + Duration::from_secs(3600)),
            Action::Nothing
        );
        assert_eq!(
            n.exited(P1, None, t0),
            Action::Nothing,
            "a failed node has no process"
        );
        assert_eq!(n.restart(), Action::Start);
        n.started(P2, pid(101), t0);
        assert_eq!(n.state.name(), "running");
    }

    #[test]
    fn max_restarts_within_the_window_marks_the_node_failed() {
        let t0 = Instant::now();
        let mut cfg = NodeConfig::named("w1");
        cfg.revival_delay = Some(0.0);
        cfg.max_restarts = Some(3);
        cfg.restart_window = Some(10.0);
        let mut n = Node::new(cfg, P1, pid(100), t0);
        let mut now = t0;
        let mut proc = P1;
        for _ in 0..3 {
            now += Duration::from_secs(1);
            assert_eq!(n.exited(proc, Some(ExitInfo::Code(1)), now), Action::Start);
            proc = ProcId(proc.0 + 1);
            n.started(proc, pid(200), now);
        }
        now += Duration::from_secs(1);
        let action = n.exited(proc, Some(ExitInfo::Code(1)), now);
        assert_eq!(
            action,
            Action::Fail(Failure::TooManyRestarts {
                restarts: 3,
                window: Duration::from_secs(10)
            })
        );
        // outside the window the count starts over
        let mut n = Node::new(
            {
                let mut c = NodeConfig::named("w2");
                c.revival_delay = Some(0.0);
                c.max_restarts = Some(1);
                c.restart_window = Some(10.0);
                c
            },
            P1,
            pid(100),
            t0,
        );
        assert_eq!(n.exited(P1, None, t0), Action::Start);
        n.started(P2, pid(101), t0);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(n.exited(P2, None, later), Action::Start);
    }

    #[test]
    fn a_failed_start_waits_at_least_a_moment() {
        let t0 = Instant::now();
        let mut cfg = NodeConfig::named("w1");
        cfg.revival_delay = Some(0.0);
        let mut n = Node::new(cfg, P1, pid(100), t0);
        let Action::ReviveAt(at) = n.start_failed(t0) else {
            panic!("expected a retry")
        };
        assert!(at - t0 >= Duration::from_millis(100));
        assert_eq!(n.state.name(), "reviving");
    }
}
