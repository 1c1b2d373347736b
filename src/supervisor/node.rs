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

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::output::OutputTail;
use super::policy::{Failure, Failures, PERMANENT_FAILURE_EXIT, RevivalPolicy, Verdict};
use crate::config::{
    Check, DEFAULT_STOP_TIMEOUT, ExitInfo, KillMode, NodeConfig, Ready, RestartPolicy, seconds,
};
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
    /// A dependency is not met yet; no process.
    Waiting,
    /// Its process runs and is not ready yet; it must be by `ready_by`.
    Starting {
        instance: Instance,
        ready_by: Instant,
    },
    /// Its process runs and is ready.
    Running(Instance),
    /// Its process ended on its own (or could not start); a new one starts at `at`.
    Reviving { at: Instant },
    /// Its process was asked to stop at `since` and gets SIGKILL at `deadline`; `then`
    /// says what follows its exit.
    Stopping {
        instance: Instance,
        since: Instant,
        deadline: Instant,
        then: Then,
    },
    /// Its process ended and is not revived (its restart policy, or `node_exit`).
    Exited,
    /// It is not revived any more, until `restart`.
    Failed(Failure),
}

/// What follows the exit of a process that is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// The node was destroyed: forget it.
    Remove,
    /// The node is restarted: start a new process now.
    Restart,
    /// It failed (not ready in time, unhealthy, silent watchdog): revive it after the
    /// backoff, counting the failure.
    Revive,
    /// A dependency it must restart with went away: wait for it again.
    Wait,
    /// A reload changed its configuration: wait, as for `Wait`, while the supervisor
    /// puts the new configuration in place, then start again with it.
    Reconfigure,
}

/// Every name a state goes by, in the order of a node's life.
pub const STATE_NAMES: [&str; 8] = [
    "waiting",
    "starting",
    "running",
    "reviving",
    "restarting",
    "stopping",
    "exited",
    "failed",
];

impl State {
    /// The name `status()` shows (one of `STATE_NAMES`).
    pub fn name(&self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Starting { .. } => "starting",
            State::Running(_) => "running",
            State::Reviving { .. } => "reviving",
            State::Stopping {
                then: Then::Restart | Then::Reconfigure,
                ..
            } => "restarting",
            State::Stopping {
                then: Then::Remove | Then::Revive | Then::Wait,
                ..
            } => "stopping",
            State::Exited => "exited",
            State::Failed(_) => "failed",
        }
    }

    /// The node's process, where it has one.
    pub fn instance(&self) -> Option<&Instance> {
        match self {
            State::Starting { instance, .. }
            | State::Running(instance)
            | State::Stopping { instance, .. } => Some(instance),
            State::Waiting | State::Reviving { .. } | State::Exited | State::Failed(_) => None,
        }
    }

    pub fn pid(&self) -> Option<Pid> {
        self.instance().map(|i| i.pid)
    }

    /// Its process runs and is not being stopped.
    pub fn is_up(&self) -> bool {
        matches!(self, State::Starting { .. } | State::Running(_))
    }
}

/// What happened to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A process was started for it (after `Action::Start`).
    Started(Instance),
    /// Starting a process failed (after `Action::Start`).
    StartFailed,
    /// Its process said it is ready (or its readiness check succeeded).
    Ready,
    /// Process `proc` ended with `exit`.
    Exited {
        proc: ProcId,
        exit: Option<ExitInfo>,
    },
    /// A scheduled revival is due.
    RevivalDue,
    /// The stop timeout of process `proc` has passed.
    KillDue { proc: ProcId },
    /// Process `proc` did not become ready in time.
    ReadyTimeout { proc: ProcId },
    /// Process `proc` failed its health check too often.
    Unhealthy { proc: ProcId },
    /// Process `proc` did not send `WATCHDOG=1` in time.
    WatchdogMissed { proc: ProcId },
    /// Every dependency is met.
    DependenciesMet,
    /// A dependency that it restarts with ended or restarted.
    DependencyLost,
    /// `node_exit` said the node stays down.
    KeepDown,
    /// `Supervisor::restart`.
    Restart,
    /// A reload gave it another configuration: stop its process, if it has one, so it
    /// can start again with that one (the supervisor swaps it in once the node has no
    /// process, and starts it when its dependencies allow).
    Reconfigure,
    /// `Supervisor::destroy`, or shutdown.
    Destroy,
}

/// Whom a signal reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whom {
    /// The node's process group.
    Group,
    /// Its main process only.
    Process,
}

/// What the supervisor must do after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a process for the node now, and report how it went (`Started` or
    /// `StartFailed`).
    Start,
    /// Step with `RevivalDue` at this time.
    ReviveAt(Instant),
    /// Send `signal` (and SIGCONT) to `whom` of `pid` now, and step with `KillDue` at
    /// `deadline`.
    Stop {
        pid: Pid,
        signal: Signal,
        whom: Whom,
        deadline: Instant,
    },
    /// SIGKILL to `whom` of `pid`.
    Kill { pid: Pid, whom: Whom },
    /// The node is gone: forget it.
    Remove,
    /// The node has failed for good: tell the script.
    Fail(Failure),
}

/// A starting process that failed is retried after at least this long, even with a
/// revival delay of 0, so that a start that keeps failing never spins.
pub const START_RETRY: Duration = Duration::from_millis(100);
/// How long a started node may take to become ready, when `ready_timeout` is not set.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Seconds between two tries of a polled readiness check, when `ready_interval` is not
/// set.
pub const DEFAULT_READY_INTERVAL: Duration = Duration::from_millis(100);

/// How a node's readiness is told, as the supervisor watches for it.
#[derive(Clone, Debug)]
pub enum Readiness {
    /// A command node without `ready`: ready once its program runs.
    Started,
    /// The notify protocol: `READY=1` (a script node without `ready` sends it itself
    /// once its `zeek_init()` has returned).
    Notify,
    /// A newline on a descriptor of its own.
    Fd,
    /// A line of its output matches.
    Log(regex::Regex),
    /// A check tried every `interval`.
    Poll { check: Check, interval: Duration },
}

impl Readiness {
    fn of(config: &NodeConfig) -> Readiness {
        match &config.ready {
            None if config.command.is_some() => Readiness::Started,
            None | Some(Ready::Notify) => Readiness::Notify,
            Some(Ready::Fd(_)) => Readiness::Fd,
            // Checked by `create`; a pattern that does not compile never matches.
            Some(Ready::Log(pattern)) => Readiness::Log(
                regex::Regex::new(pattern).unwrap_or_else(|_| regex::Regex::new("$^").unwrap()),
            ),
            Some(Ready::Check(check)) => Readiness::Poll {
                check: check.clone(),
                interval: config
                    .ready_interval
                    .and_then(|s| seconds(s).ok())
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_READY_INTERVAL),
            },
        }
    }
}

/// A node in the supervisor's table.
#[derive(Debug)]
pub struct Node {
    pub config: NodeConfig,
    pub state: State,
    pub policy: RevivalPolicy,
    pub stop_timeout: Duration,
    pub stop_signal: Signal,
    pub kill_mode: KillMode,
    pub restart_policy: RestartPolicy,
    pub readiness: Readiness,
    pub ready_timeout: Duration,
    /// Whether a process was ever started (the first start is not a restart).
    pub started_once: bool,
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
    /// A node whose first process was just started (`Some`), or that waits for its
    /// dependencies (`None`).
    pub fn new(config: NodeConfig, instance: Option<Instance>, files: OutputFiles) -> Node {
        let mut node = Node {
            policy: RevivalPolicy::of(&config),
            stop_timeout: stop_timeout(&config),
            stop_signal: config.stop_signal.map_or(Signal::SIGTERM, |s| s.0),
            kill_mode: config.kill_mode.unwrap_or_default(),
            restart_policy: config.restart.unwrap_or_default(),
            readiness: Readiness::of(&config),
            ready_timeout: config
                .ready_timeout
                .and_then(|s| seconds(s).ok())
                .unwrap_or(DEFAULT_READY_TIMEOUT),
            config,
            state: State::Waiting,
            started_once: false,
            restarts: 0,
            failures: Failures::default(),
            last_exit: None,
            output: OutputTail::default(),
            files,
            rotation_due: None,
        };
        if let Some(instance) = instance {
            node.started_once = true;
            node.state = node.started(instance);
        }
        node
    }

    /// Takes `config` (and its output `files`) in place of the node's configuration,
    /// with everything that follows from it; what the node has been through (its
    /// restarts, last exit, recent output) stays. For a node without a process.
    pub fn reconfigure(&mut self, config: NodeConfig, files: OutputFiles) {
        let fresh = Node::new(config, None, files);
        self.policy = fresh.policy;
        self.stop_timeout = fresh.stop_timeout;
        self.stop_signal = fresh.stop_signal;
        self.kill_mode = fresh.kill_mode;
        self.restart_policy = fresh.restart_policy;
        self.readiness = fresh.readiness;
        self.ready_timeout = fresh.ready_timeout;
        self.config = fresh.config;
        self.files = fresh.files;
        self.failures = Failures::default();
    }

    /// The state a node enters when its process `instance` has started.
    fn started(&self, instance: Instance) -> State {
        match self.readiness {
            Readiness::Started => State::Running(instance),
            Readiness::Notify | Readiness::Fd | Readiness::Log(_) | Readiness::Poll { .. } => {
                State::Starting {
                    instance,
                    ready_by: instance.since + self.ready_timeout,
                }
            }
        }
    }

    /// Moves the node on after `input` at `now`; returns what the supervisor must do.
    pub fn step(&mut self, input: Input, now: Instant) -> Vec<Action> {
        use Input as I;
        use State as S;
        let none = Vec::new;
        let (next, actions) = match (self.state, input) {
            // Waiting for dependencies.
            (S::Waiting, I::DependenciesMet) => (S::Reviving { at: now }, vec![Action::Start]),
            (S::Waiting, I::Destroy) => (self.state, vec![Action::Remove]),
            (
                S::Waiting,
                I::Started(_)
                | I::StartFailed
                | I::Ready
                | I::Exited { .. }
                | I::RevivalDue
                | I::KillDue { .. }
                | I::ReadyTimeout { .. }
                | I::Unhealthy { .. }
                | I::WatchdogMissed { .. }
                | I::DependencyLost
                | I::KeepDown
                | I::Restart
                | I::Reconfigure,
            ) => (self.state, none()),

            // A process runs, ready or not yet.
            (S::Starting { instance, .. } | S::Running(instance), I::Exited { proc, exit })
                if proc == instance.proc =>
            {
                self.exited(instance, exit, now)
            }
            (S::Starting { instance, .. }, I::Ready) => (S::Running(instance), none()),
            (S::Starting { instance, .. }, I::ReadyTimeout { proc }) if proc == instance.proc => {
                self.stop(instance, Then::Revive, now)
            }
            (S::Running(instance), I::Unhealthy { proc }) if proc == instance.proc => {
                self.stop(instance, Then::Revive, now)
            }
            (S::Running(instance), I::WatchdogMissed { proc }) if proc == instance.proc => {
                let deadline = now + self.stop_timeout;
                (
                    S::Stopping {
                        instance,
                        since: now,
                        deadline,
                        then: Then::Revive,
                    },
                    vec![Action::Stop {
                        pid: instance.pid,
                        signal: Signal::SIGABRT,
                        whom: Whom::Process,
                        deadline,
                    }],
                )
            }
            (S::Starting { instance, .. } | S::Running(instance), I::Restart) => {
                self.failures.clear();
                self.stop(instance, Then::Restart, now)
            }
            (S::Starting { instance, .. } | S::Running(instance), I::Destroy) => {
                self.stop(instance, Then::Remove, now)
            }
            (S::Starting { instance, .. } | S::Running(instance), I::DependencyLost) => {
                self.stop(instance, Then::Wait, now)
            }
            (S::Starting { instance, .. } | S::Running(instance), I::Reconfigure) => {
                self.failures.clear();
                self.stop(instance, Then::Reconfigure, now)
            }
            (
                S::Starting { .. } | S::Running(_),
                I::Exited { .. }
                | I::Started(_)
                | I::StartFailed
                | I::RevivalDue
                | I::KillDue { .. }
                | I::ReadyTimeout { .. }
                | I::Unhealthy { .. }
                | I::WatchdogMissed { .. }
                | I::DependenciesMet
                | I::KeepDown,
            )
            | (S::Running(_), I::Ready) => (self.state, none()),

            // Waiting to be revived, or starting; `Start` was asked for when `Started`
            // or `StartFailed` arrive.
            (S::Reviving { at }, I::RevivalDue) if at <= now => (self.state, vec![Action::Start]),
            (S::Reviving { .. }, I::Started(instance)) => {
                if self.started_once {
                    self.restarts += 1;
                }
                self.started_once = true;
                (self.started(instance), none())
            }
            (S::Reviving { .. }, I::StartFailed) => self.failed(now, START_RETRY),
            (S::Reviving { .. }, I::Restart) => {
                self.failures.clear();
                (S::Reviving { at: now }, vec![Action::Start])
            }
            (S::Reviving { .. }, I::Destroy) => (self.state, vec![Action::Remove]),
            (S::Reviving { .. }, I::KeepDown) => (S::Exited, none()),
            (S::Reviving { .. }, I::DependencyLost) => (S::Waiting, none()),
            // A new configuration gets a fresh start, not the old one's backoff.
            (S::Reviving { .. }, I::Reconfigure) => {
                self.failures.clear();
                (S::Waiting, none())
            }
            (
                S::Reviving { .. },
                I::RevivalDue
                | I::Ready
                | I::Exited { .. }
                | I::KillDue { .. }
                | I::ReadyTimeout { .. }
                | I::Unhealthy { .. }
                | I::WatchdogMissed { .. }
                | I::DependenciesMet,
            ) => (self.state, none()),

            // Being stopped.
            (S::Stopping { instance, then, .. }, I::Exited { proc, exit })
                if proc == instance.proc =>
            {
                self.last_exit = exit;
                match then {
                    Then::Remove => (self.state, vec![Action::Remove]),
                    Then::Restart => (S::Reviving { at: now }, vec![Action::Start]),
                    Then::Revive => self.failed(now, Duration::ZERO),
                    Then::Wait | Then::Reconfigure => (S::Waiting, none()),
                }
            }
            (S::Stopping { instance, .. }, I::KillDue { proc }) if proc == instance.proc => {
                let whom = match self.kill_mode {
                    KillMode::Group | KillMode::Mixed => Whom::Group,
                    KillMode::Process => Whom::Process,
                };
                (
                    self.state,
                    vec![Action::Kill {
                        pid: instance.pid,
                        whom,
                    }],
                )
            }
            (
                S::Stopping {
                    instance,
                    since,
                    deadline,
                    then: Then::Restart | Then::Revive | Then::Wait | Then::Reconfigure,
                },
                I::Destroy,
            ) => (
                S::Stopping {
                    instance,
                    since,
                    deadline,
                    then: Then::Remove,
                },
                none(),
            ),
            // Stopping already: what follows its exit becomes the new configuration.
            (
                S::Stopping {
                    instance,
                    since,
                    deadline,
                    then: Then::Restart | Then::Revive | Then::Wait | Then::Reconfigure,
                },
                I::Reconfigure,
            ) => {
                self.failures.clear();
                (
                    S::Stopping {
                        instance,
                        since,
                        deadline,
                        then: Then::Reconfigure,
                    },
                    none(),
                )
            }
            (
                S::Stopping {
                    then: Then::Remove, ..
                },
                I::Destroy | I::Reconfigure,
            )
            | (
                S::Stopping { .. },
                I::Restart
                | I::Exited { .. }
                | I::KillDue { .. }
                | I::Started(_)
                | I::StartFailed
                | I::Ready
                | I::RevivalDue
                | I::ReadyTimeout { .. }
                | I::Unhealthy { .. }
                | I::WatchdogMissed { .. }
                | I::DependenciesMet
                | I::DependencyLost
                | I::KeepDown,
            ) => (self.state, none()),

            // Ended for good, or given up on: only `restart` brings it back.
            (S::Exited | S::Failed(_), I::Restart) => {
                self.failures.clear();
                (S::Reviving { at: now }, vec![Action::Start])
            }
            (S::Exited | S::Failed(_), I::Destroy) => (self.state, vec![Action::Remove]),
            (S::Exited | S::Failed(_), I::Reconfigure) => {
                self.failures.clear();
                (S::Waiting, none())
            }
            (
                S::Exited | S::Failed(_),
                I::Exited { .. }
                | I::Started(_)
                | I::StartFailed
                | I::Ready
                | I::RevivalDue
                | I::KillDue { .. }
                | I::ReadyTimeout { .. }
                | I::Unhealthy { .. }
                | I::WatchdogMissed { .. }
                | I::DependenciesMet
                | I::DependencyLost
                | I::KeepDown,
            ) => (self.state, none()),
        };
        self.state = next;
        actions
    }

    /// Its process ended on its own: revive it, or not, as the policies say.
    fn exited(
        &mut self,
        instance: Instance,
        exit: Option<ExitInfo>,
        now: Instant,
    ) -> (State, Vec<Action>) {
        self.last_exit = exit;
        if exit == Some(ExitInfo::Code(PERMANENT_FAILURE_EXIT)) {
            return (
                State::Failed(Failure::PermanentExit),
                vec![Action::Fail(Failure::PermanentExit)],
            );
        }
        match (self.restart_policy, exit) {
            (RestartPolicy::Never, _) | (RestartPolicy::OnFailure, Some(ExitInfo::Code(0))) => {
                return (State::Exited, vec![]);
            }
            (RestartPolicy::Always | RestartPolicy::OnFailure, _) => {}
        }
        if now.duration_since(instance.since) >= self.policy.reset_after {
            self.failures.forget();
        }
        self.failed(now, Duration::ZERO)
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
        let whom = match self.kill_mode {
            KillMode::Group => Whom::Group,
            KillMode::Mixed | KillMode::Process => Whom::Process,
        };
        (
            State::Stopping {
                instance,
                since: now,
                deadline,
                then,
            },
            vec![Action::Stop {
                pid: instance.pid,
                signal: self.stop_signal,
                whom,
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

    fn command(name: &str) -> NodeConfig {
        let mut config = NodeConfig::named(name);
        config.command = Some(vec!["sleep".into(), "60".into()]);
        config
    }

    fn node_with(config: NodeConfig, now: Instant) -> Node {
        Node::new(config, Some(instance(P1, 100, now)), OutputFiles::default())
    }

    /// A command node without `ready`: running as soon as it started.
    fn node(now: Instant) -> Node {
        node_with(command("w1"), now)
    }

    fn stop(pid: i32, signal: Signal, whom: Whom, deadline: Instant) -> Action {
        Action::Stop {
            pid: Pid::from_raw(pid),
            signal,
            whom,
            deadline,
        }
    }

    fn exited(proc: ProcId, exit: Option<ExitInfo>) -> Input {
        Input::Exited { proc, exit }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn every_state_name_is_listed() {
        let now = Instant::now();
        let instance = Instance {
            proc: ProcId(1),
            pid: Pid::from_raw(1),
            since: now,
        };
        let stopping = |then| State::Stopping {
            instance,
            since: now,
            deadline: now,
            then,
        };
        let states = [
            State::Waiting,
            State::Starting {
                instance,
                ready_by: now,
            },
            State::Running(instance),
            State::Reviving { at: now },
            stopping(Then::Restart),
            stopping(Then::Remove),
            State::Exited,
            State::Failed(Failure::PermanentExit),
        ];
        let names: Vec<&str> = states.iter().map(State::name).collect();
        assert_eq!(names, STATE_NAMES);
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
        let mut cfg = command("w1");
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
            [stop(
                100,
                Signal::SIGTERM,
                Whom::Group,
                t0 + DEFAULT_STOP_TIMEOUT
            )]
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
        let mut cfg = command("w1");
        cfg.stop_timeout = Some(2.0);
        let mut n = node_with(cfg, t0);
        assert_eq!(
            n.step(Input::Destroy, t0),
            [stop(100, Signal::SIGTERM, Whom::Group, t0 + secs(2))]
        );
        assert_eq!(n.state.name(), "stopping");
        assert_eq!(
            n.step(Input::KillDue { proc: P1 }, t0 + secs(2)),
            [Action::Kill {
                pid: Pid::from_raw(100),
                whom: Whom::Group
            }]
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
        let mut cfg = command("w1");
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
        let mut cfg = command("w1");
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

    fn with(f: impl FnOnce(&mut NodeConfig)) -> NodeConfig {
        let mut config = command("w1");
        f(&mut config);
        config
    }

    #[test]
    fn a_node_with_a_readiness_check_starts_then_becomes_ready() {
        let t0 = Instant::now();
        let mut n = node_with(with(|c| c.ready = Some(Ready::Notify)), t0);
        assert_eq!(n.state.name(), "starting");
        assert_eq!(n.state.pid(), Some(Pid::from_raw(100)));
        assert_eq!(n.step(Input::Ready, t0), []);
        assert_eq!(n.state, State::Running(instance(P1, 100, t0)));
        assert_eq!(n.step(Input::Ready, t0), [], "ready once");
        // a script node without `ready` is told by its zeek_init()
        let script = Node::new(
            NodeConfig::named("s"),
            Some(instance(P1, 100, t0)),
            OutputFiles::default(),
        );
        assert_eq!(script.state.name(), "starting");
    }

    #[test]
    fn not_ready_in_time_is_a_failed_start() {
        let t0 = Instant::now();
        let mut n = node_with(
            with(|c| {
                c.ready = Some(Ready::Notify);
                c.ready_timeout = Some(5.0);
            }),
            t0,
        );
        let State::Starting { ready_by, .. } = n.state else {
            panic!("starting")
        };
        assert_eq!(ready_by, t0 + secs(5));
        assert_eq!(
            n.step(Input::ReadyTimeout { proc: P2 }, t0),
            [],
            "another process"
        );
        let [Action::Stop { signal, .. }] = n.step(Input::ReadyTimeout { proc: P1 }, t0)[..] else {
            panic!("a stop")
        };
        assert_eq!(signal, Signal::SIGTERM);
        assert_eq!(n.state.name(), "stopping");
        // its exit counts as a failure: the usual backoff
        assert_eq!(
            n.step(exited(P1, None), t0),
            [Action::ReviveAt(t0 + secs(1))]
        );
        assert_eq!(n.failures.count, 1);
    }

    #[test]
    fn a_node_that_exits_while_starting_is_revived() {
        let t0 = Instant::now();
        let mut n = node_with(with(|c| c.ready = Some(Ready::Notify)), t0);
        assert_eq!(
            n.step(exited(P1, Some(ExitInfo::Code(1))), t0),
            [Action::ReviveAt(t0 + secs(1))]
        );
    }

    #[test]
    fn restart_policies() {
        let t0 = Instant::now();
        let mut never = node_with(with(|c| c.restart = Some(RestartPolicy::Never)), t0);
        assert_eq!(never.step(exited(P1, Some(ExitInfo::Code(1))), t0), []);
        assert_eq!(never.state, State::Exited);
        assert_eq!(never.step(Input::RevivalDue, t0 + secs(60)), []);
        assert_eq!(
            never.step(Input::Restart, t0),
            [Action::Start],
            "restart runs it again"
        );
        let mut on_failure = node_with(with(|c| c.restart = Some(RestartPolicy::OnFailure)), t0);
        assert_eq!(on_failure.step(exited(P1, Some(ExitInfo::Code(0))), t0), []);
        assert_eq!(on_failure.state, State::Exited);
        let mut on_failure = node_with(with(|c| c.restart = Some(RestartPolicy::OnFailure)), t0);
        assert_eq!(
            on_failure.step(exited(P1, Some(ExitInfo::Signal(9))), t0),
            [Action::ReviveAt(t0 + secs(1))]
        );
        // exit 125 wins over any policy
        let mut n = node(t0);
        n.step(exited(P1, Some(ExitInfo::Code(PERMANENT_FAILURE_EXIT))), t0);
        assert_eq!(n.state.name(), "failed");
        let mut exited_node = node_with(with(|c| c.restart = Some(RestartPolicy::Never)), t0);
        exited_node.step(exited(P1, None), t0);
        assert_eq!(exited_node.step(Input::Destroy, t0), [Action::Remove]);
    }

    #[test]
    fn node_exit_keeps_a_node_down() {
        let t0 = Instant::now();
        let mut n = node(t0);
        n.step(exited(P1, None), t0);
        assert_eq!(n.step(Input::KeepDown, t0), []);
        assert_eq!(n.state, State::Exited);
        assert_eq!(n.step(Input::KeepDown, t0), []);
    }

    #[test]
    fn waiting_for_dependencies() {
        let t0 = Instant::now();
        let mut n = Node::new(command("w1"), None, OutputFiles::default());
        assert_eq!(n.state, State::Waiting);
        assert_eq!(n.state.pid(), None);
        assert_eq!(n.step(Input::Restart, t0), [], "nothing to restart yet");
        assert_eq!(n.step(Input::DependenciesMet, t0), [Action::Start]);
        n.step(Input::Started(instance(P1, 100, t0)), t0);
        assert_eq!(n.state.name(), "running");
        assert_eq!(n.restarts, 0, "the first start is not a restart");
        // a dependency it restarts with goes: stop, then wait again
        let [Action::Stop { .. }] = n.step(Input::DependencyLost, t0)[..] else {
            panic!("a stop")
        };
        assert_eq!(n.step(exited(P1, None), t0), []);
        assert_eq!(n.state, State::Waiting);
        assert_eq!(n.failures.count, 0, "not a failure");
        assert_eq!(n.step(Input::Destroy, t0), [Action::Remove]);
        // a revival that is overtaken by a lost dependency waits instead
        let mut n = node(t0);
        n.step(exited(P1, None), t0);
        assert_eq!(n.step(Input::DependencyLost, t0), []);
        assert_eq!(n.state, State::Waiting);
    }

    #[test]
    fn health_and_watchdog_failures_restart_and_count() {
        let t0 = Instant::now();
        let mut n = node(t0);
        assert_eq!(n.step(Input::Unhealthy { proc: P2 }, t0), []);
        let [Action::Stop { .. }] = n.step(Input::Unhealthy { proc: P1 }, t0)[..] else {
            panic!("a stop")
        };
        assert_eq!(
            n.step(exited(P1, None), t0),
            [Action::ReviveAt(t0 + secs(1))]
        );
        let mut n = node(t0);
        assert_eq!(
            n.step(Input::WatchdogMissed { proc: P1 }, t0),
            [stop(
                100,
                Signal::SIGABRT,
                Whom::Process,
                t0 + DEFAULT_STOP_TIMEOUT
            )]
        );
        assert_eq!(
            n.step(exited(P1, Some(ExitInfo::Signal(6))), t0),
            [Action::ReviveAt(t0 + secs(1))]
        );
    }

    #[test]
    fn stop_signal_and_kill_mode() {
        let t0 = Instant::now();
        let config = with(|c| {
            c.stop_signal = Some(crate::config::SignalName(Signal::SIGQUIT));
            c.kill_mode = Some(KillMode::Mixed);
        });
        let mut n = node_with(config, t0);
        let deadline = t0 + DEFAULT_STOP_TIMEOUT;
        assert_eq!(
            n.step(Input::Destroy, t0),
            [stop(100, Signal::SIGQUIT, Whom::Process, deadline)]
        );
        assert_eq!(
            n.step(Input::KillDue { proc: P1 }, deadline),
            [Action::Kill {
                pid: Pid::from_raw(100),
                whom: Whom::Group
            }],
            "mixed: the rest of the group goes at the timeout"
        );
        let mut n = node_with(with(|c| c.kill_mode = Some(KillMode::Process)), t0);
        n.step(Input::Destroy, t0);
        assert_eq!(
            n.step(Input::KillDue { proc: P1 }, deadline),
            [Action::Kill {
                pid: Pid::from_raw(100),
                whom: Whom::Process
            }]
        );
    }

    #[test]
    fn reconfigure_from_each_state() {
        let t0 = Instant::now();
        // running: stopped, then it waits (for the supervisor to swap the config in)
        let mut n = node(t0);
        assert_eq!(
            n.step(Input::Reconfigure, t0),
            [stop(
                100,
                Signal::SIGTERM,
                Whom::Group,
                t0 + DEFAULT_STOP_TIMEOUT
            )]
        );
        assert_eq!(n.state.name(), "restarting");
        assert_eq!(n.step(Input::Reconfigure, t0), [], "once");
        assert_eq!(n.step(exited(P1, None), t0), []);
        assert_eq!(n.state, State::Waiting);
        assert_eq!(n.failures.count, 0, "not a failure");
        assert_eq!(n.step(Input::Reconfigure, t0), [], "waiting: stays");
        // reviving, exited, failed: waiting, with the failures forgotten
        let mut n = node(t0);
        n.step(exited(P1, Some(ExitInfo::Code(1))), t0);
        assert_eq!(n.failures.count, 1);
        assert_eq!(n.step(Input::Reconfigure, t0), []);
        assert_eq!((n.state, n.failures.count), (State::Waiting, 0));
        let mut n = node_with(with(|c| c.restart = Some(RestartPolicy::Never)), t0);
        n.step(exited(P1, None), t0);
        assert_eq!(n.step(Input::Reconfigure, t0), []);
        assert_eq!(n.state, State::Waiting);
        let mut n = node(t0);
        n.step(exited(P1, Some(ExitInfo::Code(PERMANENT_FAILURE_EXIT))), t0);
        assert_eq!(n.step(Input::Reconfigure, t0), []);
        assert_eq!(n.state, State::Waiting);
        // stopping for another reason: what follows becomes the new configuration
        let mut n = node(t0);
        n.step(Input::Restart, t0);
        assert_eq!(n.step(Input::Reconfigure, t0), []);
        assert_eq!(n.step(exited(P1, None), t0), [], "no start of the old one");
        assert_eq!(n.state, State::Waiting);
        // being destroyed: stays destroyed
        let mut n = node(t0);
        n.step(Input::Destroy, t0);
        assert_eq!(n.step(Input::Reconfigure, t0), []);
        assert_eq!(n.step(exited(P1, None), t0), [Action::Remove]);
        // and a reconfiguring node that is destroyed is removed
        let mut n = node(t0);
        n.step(Input::Reconfigure, t0);
        assert_eq!(n.step(Input::Destroy, t0), []);
        assert_eq!(n.step(exited(P1, None), t0), [Action::Remove]);
    }

    #[test]
    fn a_new_configuration_brings_its_settings() {
        let t0 = Instant::now();
        let mut n = node(t0);
        n.step(exited(P1, None), t0);
        n.step(Input::Reconfigure, t0);
        n.reconfigure(
            with(|c| {
                c.stop_signal = Some(crate::config::SignalName(Signal::SIGQUIT));
                c.stop_timeout = Some(3.0);
                c.ready = Some(Ready::Notify);
            }),
            OutputFiles::default(),
        );
        assert_eq!(n.step(Input::DependenciesMet, t0), [Action::Start]);
        n.step(Input::Started(instance(P2, 101, t0)), t0);
        assert_eq!(n.state.name(), "starting", "ready: notify now");
        assert_eq!(n.restarts, 1);
        assert_eq!(
            n.step(Input::Destroy, t0),
            [stop(101, Signal::SIGQUIT, Whom::Group, t0 + secs(3))]
        );
    }

    #[test]
    fn destroy_overrides_what_a_stop_was_for() {
        let t0 = Instant::now();
        for input in [
            Input::Restart,
            Input::Unhealthy { proc: P1 },
            Input::DependencyLost,
        ] {
            let mut n = node(t0);
            n.step(input, t0);
            assert_eq!(n.step(Input::Destroy, t0), [], "{input:?}");
            assert_eq!(n.step(exited(P1, None), t0), [Action::Remove], "{input:?}");
        }
    }
}
