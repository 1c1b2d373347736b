//! One supervised node and its state machine.
//!
//! `Node::step` is the whole life of a node in one function: given what happened
//! (`Input`) and the time, it moves the node to its next `State` and says what the
//! supervisor must do (`Action`s: start a process, schedule a revival, stop or kill a
//! process, forget the node). It has no effects of its own, so every pair of state and
//! input is tested without processes or time. The pid of a node's process, and the
//! deadline of its stop, exist only in the states where they mean something.
//!
//! Adding a state is a local change: a variant of `State`, its arms in `step` (the
//! compiler lists the pairs not yet handled: there is no catch-all arm), and its name.

use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::output::OutputTail;
use super::policy::{Failure, Failures, PERMANENT_FAILURE_EXIT, RevivalPolicy, Verdict};
use crate::config::{DEFAULT_STOP_TIMEOUT, ExitInfo, NodeConfig, seconds};
use crate::process::{OutputFiles, ProcId};

/// A process of a node: its id over its whole life, its pid, and since when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instance {
    pub proc: ProcId,
    pub pid: Pid,
    pub since: Instant,
}

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Its process runs, as far as the loop knows.
    Running(Instance),
    /// Its process ended on its own (or could not start); a new one starts at `at`.
    Reviving { at: Instant },
    /// Its process was asked to stop and gets SIGKILL at `deadline`; `then` says what
    /// follows its exit.
    Stopping {
        instance: Instance,
        deadline: Instant,
        then: Then,
    },
    /// It is not revived any more, until `restart`.
    Failed(Failure),
}

/// What follows the exit of a process that is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// The node was destroyed: forget it.
    Remove,
    /// The node is restarted: start a new process.
    Restart,
}

impl State {
    /// The name `status()` shows.
    pub fn name(&self) -> &'static str {
        match self {
            State::Running(_) => "running",
            State::Reviving { .. } => "reviving",
            State::Stopping {
                then: Then::Restart,
                ..
            } => "restarting",
            State::Stopping {
                then: Then::Remove, ..
            } => "stopping",
            State::Failed(_) => "failed",
        }
    }

    /// The node's process, where it has one.
    pub fn instance(&self) -> Option<&Instance> {
        match self {
            State::Running(instance) | State::Stopping { instance, .. } => Some(instance),
            State::Reviving { .. } | State::Failed(_) => None,
        }
    }

    pub fn pid(&self) -> Option<Pid> {
        self.instance().map(|i| i.pid)
    }
}

/// What happened to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A process was started for it (after `Action::Start`).
    Started(Instance),
    /// Starting a process failed (after `Action::Start`).
    StartFailed,
    /// Process `proc` ended with `exit`.
    Exited {
        proc: ProcId,
        exit: Option<ExitInfo>,
    },
    /// A scheduled revival is due.
    RevivalDue,
    /// The stop timeout of process `proc` has passed.
    KillDue { proc: ProcId },
    /// `Supervisor::restart`.
    Restart,
    /// `Supervisor::destroy`, or shutdown.
    Destroy,
}

/// What the supervisor must do after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a process for the node now, and report how it went (`Started` or
    /// `StartFailed`).
    Start,
    /// Step with `RevivalDue` at this time.
    ReviveAt(Instant),
    /// Send the stop signal to the process group of `pid` now, and step with `KillDue`
    /// at `deadline`.
    Stop { pid: Pid, deadline: Instant },
    /// SIGKILL to the process group of `pid`.
    Kill(Pid),
    /// The node is gone: forget it.
    Remove,
    /// The node has failed for good: tell the script.
    Fail(Failure),
}

/// A starting process that failed is retried after at least this long, even with a
/// revival delay of 0, so that a start that keeps failing never spins.
pub const START_RETRY: Duration = Duration::from_millis(100);

/// A node in the supervisor's table.
#[derive(Debug)]
pub struct Node {
    pub config: NodeConfig,
    pub state: State,
    pub policy: RevivalPolicy,
    pub stop_timeout: Duration,
    /// Processes started after the first one (revivals and restarts).
    pub restarts: u64,
    pub failures: Failures,
    pub last_exit: Option<ExitInfo>,
    /// The last lines it wrote.
    pub output: OutputTail,
    /// Its stdout and stderr files, when the supervisor writes and rotates them.
    pub files: OutputFiles,
    /// When the supervisor looks at `files` next, to rotate them by time.
    pub rotation_due: Option<Instant>,
}

/// The time between SIGTERM and SIGKILL for a node of `config`.
pub fn stop_timeout(config: &NodeConfig) -> Duration {
    config
        .stop_timeout
        .and_then(|s| seconds(s).ok())
        .unwrap_or(DEFAULT_STOP_TIMEOUT)
}

impl Node {
    /// A node whose first process was just started.
    pub fn new(config: NodeConfig, instance: Instance, files: OutputFiles) -> Node {
        Node {
            policy: RevivalPolicy::of(&config),
            stop_timeout: stop_timeout(&config),
            config,
            state: State::Running(instance),
            restarts: 0,
            failures: Failures::default(),
            last_exit: None,
            output: OutputTail::default(),
            files,
            rotation_due: None,
        }
    }

    /// Moves the node on after `input` at `now`; returns what the supervisor must do.
    pub fn step(&mut self, input: Input, now: Instant) -> Vec<Action> {
        use Input as I;
        use State as S;
        let (next, actions) = match (self.state, input) {
            // A process runs.
            (S::Running(instance), I::Exited { proc, exit }) if proc == instance.proc => {
                self.last_exit = exit;
                if exit == Some(ExitInfo::Code(PERMANENT_FAILURE_EXIT)) {
                    (
                        S::Failed(Failure::PermanentExit),
                        vec![Action::Fail(Failure::PermanentExit)],
                    )
                } else {
                    if now.duration_since(instance.since) >= self.policy.reset_after {
                        self.failures.forget();
                    }
                    self.failed(now, Duration::ZERO)
                }
            }
            (S::Running(instance), I::Restart) => {
                self.failures.clear();
                self.stop(instance, Then::Restart, now)
            }
            (S::Running(instance), I::Destroy) => self.stop(instance, Then::Remove, now),
            (
                S::Running(_),
                I::Exited { .. }
                | I::Started(_)
                | I::StartFailed
                | I::RevivalDue
                | I::KillDue { .. },
            ) => (self.state, vec![]),

            // Waiting to be revived; `Start` was asked for when the two below arrive.
            (S::Reviving { at }, I::RevivalDue) if at <= now => (self.state, vec![Action::Start]),
            (S::Reviving { .. }, I::Started(instance)) => {
                self.restarts += 1;
                (S::Running(instance), vec![])
            }
            (S::Reviving { .. }, I::StartFailed) => self.failed(now, START_RETRY),
            (S::Reviving { .. }, I::Restart) => {
                self.failures.clear();
                (S::Reviving { at: now }, vec![Action::Start])
            }
            (S::Reviving { .. }, I::Destroy) => (self.state, vec![Action::Remove]),
            (S::Reviving { .. }, I::RevivalDue | I::Exited { .. } | I::KillDue { .. }) => {
                (self.state, vec![])
            }

            // Being stopped.
            (S::Stopping { instance, then, .. }, I::Exited { proc, exit })
                if proc == instance.proc =>
            {
                self.last_exit = exit;
                match then {
                    Then::Remove => (self.state, vec![Action::Remove]),
                    Then::Restart => (S::Reviving { at: now }, vec![Action::Start]),
                }
            }
            (S::Stopping { instance, .. }, I::KillDue { proc }) if proc == instance.proc => {
                (self.state, vec![Action::Kill(instance.pid)])
            }
            (
                S::Stopping {
                    instance,
                    deadline,
                    then: Then::Restart,
                },
                I::Destroy,
            ) => (
                S::Stopping {
                    instance,
                    deadline,
                    then: Then::Remove,
                },
                vec![],
            ),
            (
                S::Stopping {
                    then: Then::Remove, ..
                },
                I::Destroy,
            )
            | (
                S::Stopping { .. },
                I::Restart
                | I::Exited { .. }
                | I::KillDue { .. }
                | I::Started(_)
                | I::StartFailed
                | I::RevivalDue,
            ) => (self.state, vec![]),

            // Given up on.
            (S::Failed(_), I::Restart) => {
                self.failures.clear();
                (S::Reviving { at: now }, vec![Action::Start])
            }
            (S::Failed(_), I::Destroy) => (self.state, vec![Action::Remove]),
            (
                S::Failed(_),
                I::Exited { .. }
                | I::Started(_)
                | I::StartFailed
                | I::RevivalDue
                | I::KillDue { .. },
            ) => (self.state, vec![]),
        };
        self.state = next;
        actions
    }

    /// One more failure: revive after the policy's delay (at least `at_least`), or give
    /// up when there were too many.
    fn failed(&mut self, now: Instant, at_least: Duration) -> (State, Vec<Action>) {
        match self.failures.add(&self.policy, now) {
            Verdict::ReviveIn(delay) if delay.max(at_least).is_zero() => {
                (State::Reviving { at: now }, vec![Action::Start])
            }
            Verdict::ReviveIn(delay) => {
                let at = now + delay.max(at_least);
                (State::Reviving { at }, vec![Action::ReviveAt(at)])
            }
            Verdict::GiveUp(failure) => (State::Failed(failure), vec![Action::Fail(failure)]),
        }
    }

    fn stop(&self, instance: Instance, then: Then, now: Instant) -> (State, Vec<Action>) {
        let deadline = now + self.stop_timeout;
        (
            State::Stopping {
                instance,
                deadline,
                then,
            },
            vec![Action::Stop {
                pid: instance.pid,
                deadline,
            }],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P1: ProcId = ProcId(1);
    const P2: ProcId = ProcId(2);

    fn instance(proc: ProcId, pid: i32, since: Instant) -> Instance {
        Instance {
            proc,
            pid: Pid::from_raw(pid),
            since,
        }
    }

    fn node_with(config: NodeConfig, now: Instant) -> Node {
        Node::new(config, instance(P1, 100, now), OutputFiles::default())
    }

    fn node(now: Instant) -> Node {
        node_with(NodeConfig::named("w1"), now)
    }

    fn exited(proc: ProcId, exit: Option<ExitInfo>) -> Input {
        Input::Exited { proc, exit }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn running_exits_then_revives_when_due() {
        let t0 = Instant::now();
        let mut n = node(t0);
        let t1 = t0 + secs(2);
        assert_eq!(
            n.step(exited(P1, Some(ExitInfo::Code(3))), t1),
            [Action::ReviveAt(t1 + secs(1))]
        );
        assert_eq!(n.state.name(), "reviving");
        assert_eq!(n.state.pid(), None);
        assert_eq!(n.last_exit, Some(ExitInfo::Code(3)));
        assert_eq!(n.step(Input::RevivalDue, t1), [], "not yet due");
        assert_eq!(n.step(Input::RevivalDue, t1 + secs(1)), [Action::Start]);
        n.step(
            Input::Started(instance(P2, 101, t1 + secs(1))),
            t1 + secs(1),
        );
        assert_eq!(n.state.pid(), Some(Pid::from_raw(101)));
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
            let [Action::ReviveAt(at)] = n.step(exited(proc, None), now)[..] else {
                panic!("expected a revival")
            };
            assert_eq!(at - now, secs(expected));
            proc = ProcId(proc.0 + 1);
            assert_eq!(n.step(Input::RevivalDue, at), [Action::Start]);
            n.step(Input::Started(instance(proc, 200, at)), at);
            now = at;
        }
        // a process that ran for 30 s ends the run of failures
        now += secs(31);
        let [Action::ReviveAt(at)] = n.step(exited(proc, None), now)[..] else {
            panic!("expected a revival")
        };
        assert_eq!(at - now, secs(1));
    }

    #[test]
    fn zero_delay_starts_at_once() {
        let t0 = Instant::now();
        let mut cfg = NodeConfig::named("w1");
        cfg.revival_delay = Some(0.0);
        let mut n = node_with(cfg, t0);
        assert_eq!(n.step(exited(P1, None), t0), [Action::Start]);
    }

    #[test]
    fn exits_of_other_processes_are_ignored_in_every_state() {
        let t0 = Instant::now();
        let mut n = node(t0);
        assert_eq!(n.step(exited(P2, None), t0), []);
        assert_eq!(n.state.name(), "running");
        assert_eq!(n.last_exit, None);
        n.step(Input::Restart, t0);
        assert_eq!(n.step(exited(P2, None), t0), []);
        assert_eq!(n.state.name(), "restarting");
        assert_eq!(n.step(Input::KillDue { proc: P2 }, t0), []);
    }

    #[test]
    fn restart_from_each_state() {
        let t0 = Instant::now();
        // running: stop it, then start when it has exited
        let mut n = node(t0);
        assert_eq!(
            n.step(Input::Restart, t0),
            [Action::Stop {
                pid: Pid::from_raw(100),
                deadline: t0 + DEFAULT_STOP_TIMEOUT
            }]
        );
        assert_eq!(n.state.name(), "restarting");
        assert_eq!(n.state.pid(), Some(Pid::from_raw(100)));
        assert_eq!(n.step(Input::Restart, t0), [], "already restarting");
        assert_eq!(
            n.step(exited(P1, Some(ExitInfo::Signal(15))), t0),
            [Action::Start]
        );
        n.step(Input::Started(instance(P2, 101, t0)), t0);
        assert_eq!(n.state.name(), "running");
        // reviving: start now, with the failures forgotten
        let mut n = node(t0);
        n.step(exited(P1, None), t0);
        assert_eq!(n.step(Input::Restart, t0), [Action::Start]);
        assert_eq!(n.failures.count, 0);
    }

    #[test]
    fn a_stop_that_times_out_is_a_kill() {
        let t0 = Instant::now();
        let mut cfg = NodeConfig::named("w1");
        cfg.stop_timeout = Some(2.0);
        let mut n = node_with(cfg, t0);
        assert_eq!(
            n.step(Input::Destroy, t0),
            [Action::Stop {
                pid: Pid::from_raw(100),
                deadline: t0 + secs(2)
            }]
        );
        assert_eq!(n.state.name(), "stopping");
        assert_eq!(
            n.step(Input::KillDue { proc: P1 }, t0 + secs(2)),
            [Action::Kill(Pid::from_raw(100))]
        );
        assert_eq!(n.step(exited(P1, None), t0 + secs(2)), [Action::Remove]);
    }

    #[test]
    fn destroy_during_a_restart_removes_the_node_after_its_exit() {
        let t0 = Instant::now();
        let mut n = node(t0);
        n.step(Input::Restart, t0);
        assert_eq!(n.step(Input::Destroy, t0), [], "the stop is under way");
        assert_eq!(n.state.name(), "stopping");
        assert_eq!(n.step(exited(P1, None), t0), [Action::Remove]);
    }

    #[test]
    fn destroy_without_a_process_removes_at_once() {
        let t0 = Instant::now();
        let mut n = node(t0);
        n.step(exited(P1, None), t0);
        assert_eq!(n.step(Input::Destroy, t0), [Action::Remove]);
        let mut n = node(t0);
        n.step(exited(P1, Some(ExitInfo::Code(PERMANENT_FAILURE_EXIT))), t0);
        assert_eq!(n.step(Input::Destroy, t0), [Action::Remove]);
    }

    #[test]
    fn the_permanent_failure_code_stops_revivals_until_restart() {
        let t0 = Instant::now();
        let mut n = node(t0);
        assert_eq!(
            n.step(exited(P1, Some(ExitInfo::Code(PERMANENT_FAILURE_EXIT))), t0),
            [Action::Fail(Failure::PermanentExit)]
        );
        assert_eq!(n.state.name(), "failed");
        assert_eq!(n.state.pid(), None);
        assert_eq!(n.step(Input::RevivalDue, t0 + secs(3600)), []);
        assert_eq!(
            n.step(exited(P1, None), t0),
            [],
            "a failed node has no process"
        );
        assert_eq!(n.step(Input::Restart, t0), [Action::Start]);
        n.step(Input::Started(instance(P2, 101, t0)), t0);
        assert_eq!(n.state.name(), "running");
    }

    #[test]
    fn max_restarts_within_the_window_marks_the_node_failed() {
        let t0 = Instant::now();
        let mut cfg = NodeConfig::named("w1");
        cfg.revival_delay = Some(0.0);
        cfg.max_restarts = Some(3);
        cfg.restart_window = Some(10.0);
        let mut n = node_with(cfg, t0);
        let mut now = t0;
        let mut proc = P1;
        for _ in 0..3 {
            now += secs(1);
            assert_eq!(
                n.step(exited(proc, Some(ExitInfo::Code(1))), now),
                [Action::Start]
            );
            proc = ProcId(proc.0 + 1);
            n.step(Input::Started(instance(proc, 200, now)), now);
        }
        now += secs(1);
        let failure = Failure::TooManyRestarts {
            restarts: 3,
            window: secs(10),
        };
        assert_eq!(
            n.step(exited(proc, Some(ExitInfo::Code(1))), now),
            [Action::Fail(failure)]
        );
        assert_eq!(n.state, State::Failed(failure));
    }

    #[test]
    fn a_failed_start_waits_at_least_a_moment() {
        let t0 = Instant::now();
        let mut cfg = NodeConfig::named("w1");
        cfg.revival_delay = Some(0.0);
        let mut n = node_with(cfg, t0);
        assert_eq!(n.step(exited(P1, None), t0), [Action::Start]);
        assert_eq!(
            n.step(Input::StartFailed, t0),
            [Action::ReviveAt(t0 + START_RETRY)]
        );
        assert_eq!(n.state.name(), "reviving");
    }

    #[test]
    fn stray_inputs_change_nothing() {
        let t0 = Instant::now();
        let mut n = node(t0);
        for input in [
            Input::Started(instance(P2, 5, t0)),
            Input::StartFailed,
            Input::RevivalDue,
            Input::KillDue { proc: P1 },
        ] {
            assert_eq!(n.step(input, t0), [], "{input:?} while running");
            assert_eq!(n.state, State::Running(instance(P1, 100, t0)));
        }
    }
}
