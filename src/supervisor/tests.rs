//! The supervisor's policy against the fake backend: no processes, and a clock the
//! tests move.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::*;
use crate::config::ExitInfo;
use crate::process::StartError;
use crate::process::fake::{Fake, World};

fn supervisor() -> (Supervisor, Rc<RefCell<World>>) {
    let (fake, world) = Fake::new();
    (
        Supervisor::new(Box::new(fake), ThisHost::named(&["here".into()])),
        world,
    )
}

fn command(name: &str) -> NodeConfig {
    let mut config = NodeConfig::named(name);
    config.command = Some(vec!["sleep".into(), "60".into()]);
    config
}

fn pid_of(sup: &Supervisor, name: &str) -> Pid {
    let pid = sup.status(name).nodes[name].pid.expect("a pid");
    Pid::from_raw(pid as i32)
}

fn state(sup: &Supervisor, name: &str) -> String {
    sup.status(name).nodes[name].state.clone()
}

/// The process running as `pid` ends (with `exit`, when given), as the I/O thread
/// would report it.
fn ends(sup: &mut Supervisor, world: &Rc<RefCell<World>>, pid: Pid, exit: Option<ExitInfo>) {
    let proc = world.borrow().proc_of(pid).expect("a live process");
    if let Some(exit) = exit {
        world.borrow_mut().exits.insert(proc, exit);
    }
    sup.process_exited(proc);
}

fn tick(sup: &mut Supervisor, world: &Rc<RefCell<World>>, by: Duration) {
    world.borrow_mut().advance(by);
    let now = world.borrow().now;
    sup.fire_due(now);
}

/// `command(name)` in a layout that puts it on `host`, beside a manager on "here".
fn on_host(name: &str, host: &str) -> NodeConfig {
    let endpoint = |host: &str| crate::config::ClusterEndpoint {
        host: host.into(),
        ..Default::default()
    };
    let mut config = command(name);
    config.cluster.insert(name.into(), endpoint(host));
    config.cluster.insert("manager".into(), endpoint("here"));
    config
}

#[test]
fn a_node_of_another_host_is_neither_started_nor_listed() {
    let (mut sup, world) = supervisor();
    assert_eq!(
        sup.create(on_host("w1", "there")),
        Ok(Placed::Elsewhere("there".into()))
    );
    assert_eq!(
        sup.create(on_host("w1", "there")),
        Ok(Placed::Elsewhere("there".into())),
        "not recorded, so not a duplicate either"
    );
    assert!(world.borrow().started.is_empty());
    assert!(sup.status("").nodes.is_empty());
    assert!(sup.take_notices().is_empty());
    assert!(!sup.destroy("w1") && !sup.restart("w1"));
    assert_eq!(sup.create(on_host("w2", "HERE")), Ok(Placed::Here));
    assert_eq!(sup.node_names().collect::<Vec<_>>(), ["w2"]);
    let mut bad = on_host("a b", "there");
    bad.cluster.insert("a b".into(), Default::default());
    assert!(
        matches!(sup.create(bad), Err(CreateError::Invalid(_))),
        "checked wherever it belongs"
    );
}

#[test]
fn create_starts_a_process_and_refuses_what_zeek_refuses() {
    let (mut sup, world) = supervisor();
    sup.create(command("w1")).unwrap();
    assert_eq!(world.borrow().started.len(), 1);
    assert_eq!(world.borrow().started[0].3, Start::First);
    assert_eq!(state(&sup, "w1"), "running");
    assert_eq!(
        sup.take_notices(),
        [
            Notice::Started {
                node: "w1".into(),
                pid: pid_of(&sup, "w1")
            },
            Notice::Ready { node: "w1".into() }
        ]
    );
    let exists = sup.create(command("w1")).unwrap_err();
    assert_eq!(exists, CreateError::Exists("w1".into()));
    assert_eq!(exists.to_string(), "node with name 'w1' already exists");
    assert_eq!(
        sup.create(NodeConfig::named("a b"))
            .unwrap_err()
            .to_string(),
        "node names must not contain spaces: 'a b'"
    );
    world.borrow_mut().refuse = Some("node 'w2': cannot start 'nope'".into());
    assert_eq!(
        sup.create(command("w2")).unwrap_err(),
        CreateError::Start(StartError::Program("node 'w2': cannot start 'nope'".into()))
    );
    assert!(
        sup.status("w2").nodes.is_empty(),
        "a refused node does not exist"
    );
    assert_eq!(sup.node_names().collect::<Vec<_>>(), ["w1"]);
}

#[test]
fn a_dead_node_is_revived_after_the_delay_and_backs_off() {
    let (mut sup, world) = supervisor();
    sup.create(command("w1")).unwrap();
    for expected in [1, 1, 1, 2] {
        let pid = pid_of(&sup, "w1");
        ends(&mut sup, &world, pid, Some(ExitInfo::Code(3)));
        assert_eq!(state(&sup, "w1"), "reviving");
        assert_eq!(sup.status("w1").nodes["w1"].pid, None);
        let starts = world.borrow().started.len();
        tick(
            &mut sup,
            &world,
            Duration::from_secs(expected) - Duration::from_millis(1),
        );
        assert_eq!(world.borrow().started.len(), starts, "not before its time");
        tick(&mut sup, &world, Duration::from_millis(1));
        assert_eq!(world.borrow().started.len(), starts + 1);
        assert_eq!(world.borrow().started[starts].3, Start::Again);
        assert_eq!(state(&sup, "w1"), "running");
    }
    let status = &sup.status("w1").nodes["w1"];
    assert_eq!(status.restarts, 4);
    assert_eq!(status.exit, Some(ExitInfo::Code(3)));
}

#[test]
fn destroy_stops_then_kills_after_the_stop_timeout() {
    let (mut sup, world) = supervisor();
    let mut config = command("w1");
    config.stop_timeout = Some(5.0);
    sup.create(config).unwrap();
    let pid = pid_of(&sup, "w1");
    assert!(sup.destroy("w1"));
    assert_eq!(
        world.borrow().signals_to(pid),
        [Signal::SIGTERM, Signal::SIGCONT]
    );
    // gone from the table at once; its process is still waited for
    assert!(sup.status("").nodes.is_empty());
    assert!(!sup.is_idle());
    assert_eq!(
        sup.next_deadline(),
        Some(world.borrow().now + Duration::from_secs(5))
    );
    tick(&mut sup, &world, Duration::from_secs(5));
    assert_eq!(
        world.borrow().signals_to(pid).last(),
        Some(&Signal::SIGKILL)
    );
    ends(&mut sup, &world, pid, None);
    assert!(sup.is_idle());
    assert!(!sup.destroy("w1"), "unknown now");
}

#[test]
fn a_destroyed_name_can_be_used_again_while_the_old_process_stops() {
    let (mut sup, world) = supervisor();
    sup.create(command("w1")).unwrap();
    let old = pid_of(&sup, "w1");
    sup.destroy("w1");
    sup.create(command("w1")).unwrap();
    let new = pid_of(&sup, "w1");
    assert_ne!(old, new);
    ends(&mut sup, &world, old, None);
    assert_eq!(state(&sup, "w1"), "running");
    assert_eq!(
        pid_of(&sup, "w1"),
        new,
        "the old exit is not the new node's"
    );
}

#[test]
fn restart_stops_and_starts_again_at_once() {
    let (mut sup, world) = supervisor();
    sup.create(command("w1")).unwrap();
    let pid = pid_of(&sup, "w1");
    assert!(sup.restart("w1"));
    assert_eq!(state(&sup, "w1"), "restarting");
    assert_eq!(
        pid_of(&sup, "w1"),
        pid,
        "the old process until it has stopped"
    );
    assert!(!sup.restart("nope"));
    ends(&mut sup, &world, pid, None);
    assert_eq!(state(&sup, "w1"), "running");
    assert_ne!(pid_of(&sup, "w1"), pid);
    assert_eq!(sup.status("w1").nodes["w1"].restarts, 1);
    assert_eq!(
        sup.status("w1").nodes["w1"].exit,
        Some(ExitInfo::Signal(Signal::SIGTERM as i32))
    );
}

#[test]
fn max_restarts_gives_up_and_tells_the_script() {
    let (mut sup, world) = supervisor();
    let mut config = command("w1");
    config.revival_delay = Some(0.0);
    config.max_restarts = Some(2);
    sup.create(config).unwrap();
    sup.take_notices();
    for _ in 0..2 {
        let pid = pid_of(&sup, "w1");
        ends(&mut sup, &world, pid, Some(ExitInfo::Code(1)));
        assert_eq!(state(&sup, "w1"), "running", "revived at once");
    }
    let pid = pid_of(&sup, "w1");
    ends(&mut sup, &world, pid, Some(ExitInfo::Code(1)));
    assert_eq!(state(&sup, "w1"), "failed");
    let notices = sup.take_notices();
    assert_eq!(notices.last(), Some(&Notice::Failed { node: "w1".into() }));
    // restart brings it back
    assert!(sup.restart("w1"));
    assert_eq!(state(&sup, "w1"), "running");
}

#[test]
fn a_revival_that_cannot_start_is_retried() {
    let (mut sup, world) = supervisor();
    let mut config = command("w1");
    config.revival_delay = Some(0.0);
    sup.create(config).unwrap();
    let pid = pid_of(&sup, "w1");
    world.borrow_mut().refuse = Some("node 'w1': cannot start 'sleep'".into());
    ends(&mut sup, &world, pid, None);
    assert_eq!(state(&sup, "w1"), "reviving");
    tick(&mut sup, &world, node::START_RETRY);
    assert_eq!(state(&sup, "w1"), "running");
}

#[test]
fn shutdown_stops_every_node_and_revives_none() {
    let (mut sup, world) = supervisor();
    sup.create(command("a")).unwrap();
    sup.create(command("b")).unwrap();
    let (a, b) = (pid_of(&sup, "a"), pid_of(&sup, "b"));
    // b is waiting to be revived when shutdown comes
    ends(&mut sup, &world, b, None);
    sup.stop_all();
    assert!(world.borrow().shut_down);
    assert_eq!(world.borrow().signals_to(a)[0], Signal::SIGTERM);
    assert!(sup.create(command("c")).is_err());
    assert!(!sup.restart("a"));
    let starts = world.borrow().started.len();
    tick(&mut sup, &world, Duration::from_secs(2));
    assert_eq!(world.borrow().started.len(), starts, "no revival");
    assert!(!sup.is_idle());
    ends(&mut sup, &world, a, None);
    assert!(sup.is_idle());
}

#[test]
fn kill_all_sends_sigkill_to_every_process() {
    let (mut sup, world) = supervisor();
    sup.create(command("a")).unwrap();
    let a = pid_of(&sup, "a");
    sup.stop_all();
    sup.kill_all();
    assert_eq!(world.borrow().signals_to(a).last(), Some(&Signal::SIGKILL));
    ends(&mut sup, &world, a, None);
    assert!(sup.is_idle());
}

#[test]
fn shutdown_during_a_restart_does_not_start_again() {
    let (mut sup, world) = supervisor();
    sup.create(command("a")).unwrap();
    let a = pid_of(&sup, "a");
    sup.restart("a");
    sup.stop_all();
    let starts = world.borrow().started.len();
    ends(&mut sup, &world, a, None);
    assert_eq!(world.borrow().started.len(), starts);
    assert!(sup.is_idle());
}

// Readiness, dependencies, order, health.

use crate::config::{
    Check, Condition, Dependencies, Dependency, Health, KillMode, Ready, RestartPolicy, SignalName,
    shapes::Target,
};
use crate::process::Remnants;
use crate::process::notify::Notification;

fn depends(config: &mut NodeConfig, deps: &[(&str, Condition, bool)]) {
    config.depends_on = Some(Dependencies(
        deps.iter()
            .map(|(name, condition, restart)| {
                (
                    name.to_string(),
                    Dependency {
                        condition: *condition,
                        restart: *restart,
                    },
                )
            })
            .collect(),
    ));
}

fn notify_node(name: &str) -> NodeConfig {
    let mut config = command(name);
    config.ready = Some(Ready::Notify);
    config
}

fn ready(sup: &mut Supervisor, name: &str) {
    let pid = pid_of(sup, name);
    sup.notified(
        pid,
        Notification {
            ready: true,
            ..Notification::default()
        },
    );
}

fn started_names(world: &Rc<RefCell<World>>) -> Vec<String> {
    world.borrow().started.iter().map(|s| s.0.clone()).collect()
}

#[test]
fn a_dependent_starts_when_its_dependency_is_ready() {
    let (mut sup, world) = supervisor();
    let mut app = command("app");
    depends(&mut app, &[("db", Condition::Ready, false)]);
    sup.create(app).unwrap();
    assert_eq!(state(&sup, "app"), "waiting");
    assert_eq!(
        sup.status("app").nodes["app"].waiting_for,
        Some(vec!["db".to_string()]),
        "not created yet"
    );
    assert!(
        world.borrow().started.is_empty(),
        "no process while waiting"
    );
    sup.create(notify_node("db")).unwrap();
    assert_eq!(state(&sup, "db"), "starting");
    assert_eq!(state(&sup, "app"), "waiting");
    // a notification from another process changes nothing
    sup.notified(
        Pid::from_raw(1),
        Notification {
            ready: true,
            ..Notification::default()
        },
    );
    assert_eq!(state(&sup, "db"), "starting");
    ready(&mut sup, "db");
    assert_eq!(state(&sup, "db"), "running");
    assert_eq!(state(&sup, "app"), "running", "in the same turn");
    assert_eq!(started_names(&world), ["db", "app"]);
    assert_eq!(sup.status("app").nodes["app"].restarts, 0);
    let notices = sup.take_notices();
    assert!(notices.contains(&Notice::Ready { node: "db".into() }));
}

#[test]
fn conditions_started_exited_and_succeeded() {
    let (mut sup, world) = supervisor();
    let mut migrate = command("migrate");
    migrate.restart = Some(RestartPolicy::Never);
    sup.create(migrate).unwrap();
    let mut after_start = command("watcher");
    depends(&mut after_start, &[("migrate", Condition::Started, false)]);
    sup.create(after_start).unwrap();
    assert_eq!(state(&sup, "watcher"), "running", "started is enough");
    let mut app = command("app");
    depends(&mut app, &[("migrate", Condition::Succeeded, false)]);
    sup.create(app).unwrap();
    let mut report = command("report");
    depends(&mut report, &[("migrate", Condition::Exited, false)]);
    sup.create(report).unwrap();
    assert_eq!(state(&sup, "app"), "waiting");
    let pid = pid_of(&sup, "migrate");
    ends(&mut sup, &world, pid, Some(ExitInfo::Code(0)));
    assert_eq!(state(&sup, "migrate"), "exited");
    assert_eq!(state(&sup, "app"), "running");
    assert_eq!(state(&sup, "report"), "running");
}

#[test]
fn a_dependency_that_can_no_longer_be_met_is_named() {
    let (mut sup, world) = supervisor();
    let mut migrate = command("migrate");
    migrate.restart = Some(RestartPolicy::Never);
    sup.create(migrate).unwrap();
    let mut app = command("app");
    depends(&mut app, &[("migrate", Condition::Succeeded, false)]);
    sup.create(app).unwrap();
    let pid = pid_of(&sup, "migrate");
    ends(&mut sup, &world, pid, Some(ExitInfo::Code(3)));
    assert_eq!(state(&sup, "app"), "waiting");
    assert_eq!(
        sup.status("app").nodes["app"].waiting_for,
        Some(vec!["migrate".to_string()])
    );
    // destroyed: can no longer either
    let mut other = command("other");
    depends(&mut other, &[("gone", Condition::Ready, false)]);
    sup.create(command("gone")).unwrap();
    sup.destroy("gone");
    sup.create(other).unwrap();
    assert_eq!(state(&sup, "other"), "waiting");
}

#[test]
fn cycles_and_self_dependencies_are_refused() {
    let (mut sup, _world) = supervisor();
    let mut a = command("a");
    depends(&mut a, &[("b", Condition::Ready, false)]);
    sup.create(a).unwrap();
    let mut b = command("b");
    depends(&mut b, &[("c", Condition::Ready, false)]);
    sup.create(b).unwrap();
    let mut c = command("c");
    depends(&mut c, &[("a", Condition::Started, false)]);
    let err = sup.create(c).unwrap_err().to_string();
    assert_eq!(err, "node 'c': dependency cycle: c -> a -> b -> c");
    assert!(sup.status("c").nodes.is_empty());
    let mut me = command("me");
    depends(&mut me, &[("me", Condition::Ready, false)]);
    assert!(
        sup.create(me)
            .unwrap_err()
            .to_string()
            .contains("names the node itself")
    );
}

#[test]
fn restart_true_takes_the_dependent_down_and_up_with_its_dependency() {
    let (mut sup, world) = supervisor();
    sup.create(command("db")).unwrap();
    let mut app = command("app");
    depends(&mut app, &[("db", Condition::Ready, true)]);
    sup.create(app).unwrap();
    let mut loose = command("loose");
    depends(&mut loose, &[("db", Condition::Ready, false)]);
    sup.create(loose).unwrap();
    let (app_pid, loose_pid) = (pid_of(&sup, "app"), pid_of(&sup, "loose"));
    sup.restart("db");
    assert_eq!(state(&sup, "app"), "stopping", "goes down with db");
    assert_eq!(world.borrow().signals_to(app_pid)[0], Signal::SIGTERM);
    assert_eq!(
        state(&sup, "loose"),
        "running",
        "without restart: true it stays"
    );
    ends(&mut sup, &world, app_pid, None);
    assert_eq!(state(&sup, "app"), "waiting");
    let db = world
        .borrow()
        .started
        .iter()
        .filter(|s| s.0 == "db")
        .count();
    let db_pid = world
        .borrow()
        .started
        .iter()
        .filter(|s| s.0 == "db")
        .map(|s| s.2)
        .next()
        .unwrap();
    assert_eq!(db, 1);
    ends(&mut sup, &world, db_pid, None);
    assert_eq!(state(&sup, "db"), "running");
    assert_eq!(state(&sup, "app"), "running", "back when db is");
    assert_ne!(pid_of(&sup, "app"), app_pid);
    assert_eq!(pid_of(&sup, "loose"), loose_pid);
}

#[test]
fn shutdown_stops_dependents_before_their_dependencies() {
    let (mut sup, world) = supervisor();
    sup.create(command("logger")).unwrap();
    let mut manager = command("manager");
    depends(&mut manager, &[("logger", Condition::Ready, false)]);
    sup.create(manager).unwrap();
    let mut worker = command("worker");
    depends(&mut worker, &[("manager", Condition::Ready, false)]);
    sup.create(worker).unwrap();
    sup.create(command("unrelated")).unwrap();
    let pids: Vec<Pid> = ["logger", "manager", "worker", "unrelated"]
        .iter()
        .map(|n| pid_of(&sup, n))
        .collect();
    sup.stop_all();
    let signalled =
        |world: &Rc<RefCell<World>>, pid: Pid| !world.borrow().signals_to(pid).is_empty();
    assert!(signalled(&world, pids[2]), "the worker first");
    assert!(signalled(&world, pids[3]), "unrelated nodes together");
    assert!(!signalled(&world, pids[1]) && !signalled(&world, pids[0]));
    ends(&mut sup, &world, pids[2], None);
    assert!(signalled(&world, pids[1]), "then the manager");
    assert!(!signalled(&world, pids[0]));
    ends(&mut sup, &world, pids[1], None);
    assert!(signalled(&world, pids[0]), "the logger last");
    ends(&mut sup, &world, pids[0], None);
    ends(&mut sup, &world, pids[3], None);
    assert!(sup.is_idle());
}

#[test]
fn a_second_sigterm_kills_everything_at_once() {
    let (mut sup, world) = supervisor();
    sup.create(command("logger")).unwrap();
    let mut worker = command("worker");
    depends(&mut worker, &[("logger", Condition::Ready, false)]);
    sup.create(worker).unwrap();
    let logger = pid_of(&sup, "logger");
    sup.stop_all();
    sup.kill_all();
    assert_eq!(
        world.borrow().signals_to(logger).last(),
        Some(&Signal::SIGKILL)
    );
}

#[test]
fn readiness_by_fd_log_and_polled_check() {
    let (mut sup, world) = supervisor();
    let mut fd = command("fd");
    fd.ready = Some(Ready::Fd(3));
    sup.create(fd).unwrap();
    let proc = world.borrow().proc_of(pid_of(&sup, "fd")).unwrap();
    sup.fd_ready(proc);
    assert_eq!(state(&sup, "fd"), "running");

    let mut log = command("log");
    log.ready = Some(Ready::Log("^listening on \\d+$".into()));
    sup.create(log).unwrap();
    let proc = world.borrow().proc_of(pid_of(&sup, "log")).unwrap();
    sup.take_output(proc, Stream::Stdout, b"starting\nlistening on x\n");
    assert_eq!(state(&sup, "log"), "starting");
    sup.take_output(proc, Stream::Stderr, b"listening on 80\n");
    assert_eq!(state(&sup, "log"), "running");

    let mut tcp = command("tcp");
    tcp.ready = Some(Ready::Check(Check::Tcp(Target {
        host: "127.0.0.1".into(),
        port: 9,
    })));
    tcp.ready_interval = Some(0.5);
    sup.create(tcp).unwrap();
    assert!(
        world.borrow().probes.is_empty(),
        "the first try after an interval"
    );
    tick(&mut sup, &world, Duration::from_millis(500));
    let (id, _) = world.borrow().probes[0].clone();
    sup.probed(id, Err("connection refused".into()));
    assert_eq!(state(&sup, "tcp"), "starting");
    tick(&mut sup, &world, Duration::from_millis(499));
    assert_eq!(world.borrow().probes.len(), 1, "not before the interval");
    tick(&mut sup, &world, Duration::from_millis(1));
    let (id, _) = world.borrow().probes[1].clone();
    sup.probed(id, Ok(()));
    assert_eq!(state(&sup, "tcp"), "running");
}

#[test]
fn not_ready_in_time_is_stopped_and_revived_with_backoff() {
    let (mut sup, world) = supervisor();
    let mut slow = notify_node("slow");
    slow.ready_timeout = Some(2.0);
    sup.create(slow).unwrap();
    let pid = pid_of(&sup, "slow");
    tick(&mut sup, &world, Duration::from_secs(2));
    assert_eq!(state(&sup, "slow"), "stopping");
    assert_eq!(world.borrow().signals_to(pid)[0], Signal::SIGTERM);
    ends(&mut sup, &world, pid, None);
    assert_eq!(state(&sup, "slow"), "reviving");
    tick(&mut sup, &world, Duration::from_secs(1));
    assert_eq!(state(&sup, "slow"), "starting");
}

#[test]
fn failing_health_checks_restart_the_node_and_show() {
    let (mut sup, world) = supervisor();
    let mut web = command("web");
    web.health = Some(Box::new(Health {
        check: Check::Exec(vec!["check".into()]),
        interval: Some(1.0),
        timeout: Some(0.5),
        failures: Some(2),
    }));
    sup.create(web).unwrap();
    assert_eq!(sup.status("web").nodes["web"].health.as_deref(), Some("ok"));
    let pid = pid_of(&sup, "web");
    // one try fails: the check's last line says why
    tick(&mut sup, &world, Duration::from_secs(1));
    let (id, _) = world.borrow().probes[0].clone();
    sup.take_output(id, Stream::Stdout, b"database down\n");
    world.borrow_mut().exits.insert(id, ExitInfo::Code(1));
    sup.process_exited(id);
    assert_eq!(
        sup.status("web").nodes["web"].health.as_deref(),
        Some("failing (1/2): exited with code 1: database down")
    );
    // the next one times out: killed, and the second failure restarts the node
    tick(&mut sup, &world, Duration::from_secs(1));
    let (id, _) = world.borrow().probes[1].clone();
    let check_pid = world.borrow().live[&id];
    tick(&mut sup, &world, Duration::from_millis(500));
    assert_eq!(world.borrow().signals_to(check_pid), [Signal::SIGKILL]);
    sup.process_exited(id);
    assert_eq!(state(&sup, "web"), "stopping");
    ends(&mut sup, &world, pid, None);
    assert_eq!(
        state(&sup, "web"),
        "reviving",
        "a failure: the usual backoff"
    );
}

#[test]
fn a_silent_watchdog_aborts_the_node() {
    let (mut sup, world) = supervisor();
    let mut w = notify_node("w");
    w.watchdog = Some(3.0);
    sup.create(w).unwrap();
    ready(&mut sup, "w");
    let pid = pid_of(&sup, "w");
    tick(&mut sup, &world, Duration::from_secs(2));
    sup.notified(
        pid,
        Notification {
            watchdog: true,
            ..Notification::default()
        },
    );
    tick(&mut sup, &world, Duration::from_secs(2));
    assert_eq!(state(&sup, "w"), "running", "the ping moved the deadline");
    tick(&mut sup, &world, Duration::from_secs(1));
    assert_eq!(state(&sup, "w"), "stopping");
    assert_eq!(world.borrow().process_signals[0], (pid, Signal::SIGABRT));
}

#[test]
fn node_exit_can_keep_a_node_down_before_it_is_revived() {
    let (mut sup, world) = supervisor();
    let mut w = command("w");
    w.revival_delay = Some(0.0);
    sup.create(w).unwrap();
    sup.set_exit_hook(true);
    sup.take_notices();
    let pid = pid_of(&sup, "w");
    ends(&mut sup, &world, pid, Some(ExitInfo::Code(4)));
    let notices = sup.take_notices();
    assert!(
        matches!(&notices[0], Notice::Exited { node, exit: Some(ExitInfo::Code(4)), .. } if node == "w")
    );
    assert_eq!(state(&sup, "w"), "reviving", "waits for the hook's answer");
    sup.keep_down("w");
    tick(&mut sup, &world, Duration::ZERO);
    assert_eq!(state(&sup, "w"), "exited");
    assert_eq!(world.borrow().started.len(), 1);
}

#[test]
fn stop_signal_kill_mode_and_signal() {
    let (mut sup, world) = supervisor();
    let mut web = command("web");
    web.stop_signal = Some(SignalName(Signal::SIGQUIT));
    web.kill_mode = Some(KillMode::Mixed);
    sup.create(web).unwrap();
    let pid = pid_of(&sup, "web");
    assert_eq!(sup.signal("web", Signal::SIGHUP), Ok(1));
    assert_eq!(world.borrow().process_signals, [(pid, Signal::SIGHUP)]);
    assert!(matches!(
        sup.signal("nope", Signal::SIGHUP),
        Err(SignalError::Unknown(_))
    ));
    sup.destroy("web");
    assert_eq!(
        world.borrow().process_signals[1..],
        [(pid, Signal::SIGQUIT), (pid, Signal::SIGCONT)]
    );
    assert!(
        world.borrow().signals_to(pid).is_empty(),
        "only the main process"
    );
    assert!(sup.status("").nodes.is_empty());
    tick(&mut sup, &world, crate::config::DEFAULT_STOP_TIMEOUT);
    assert_eq!(
        world.borrow().signals_to(pid),
        [Signal::SIGKILL],
        "the group at the timeout"
    );
    let proc = world.borrow().proc_of(pid).unwrap();
    sup.process_exited(proc);
    assert_eq!(world.borrow().remnants, [(proc, Remnants::Kill)]);
}

// Events: what the followers of `ctl events` are told.

/// The events recorded since the last call, as `node event state extra` words.
fn told(sup: &mut Supervisor) -> Vec<String> {
    sup.take_events()
        .iter()
        .map(|e| {
            let mut words = vec![
                e.node.clone().unwrap_or_default(),
                e.event.clone(),
                e.state.clone().unwrap_or_default(),
            ];
            if let Some(code) = e.code {
                words.push(format!("code={code}"));
            }
            if let Some(signal) = &e.signal {
                words.push(format!("signal={signal}"));
            }
            if let Some(delay) = e.delay {
                words.push(format!("delay={delay}"));
            }
            if let Some(health) = &e.health {
                words.push(health.clone());
            }
            if let Some(restarts) = e.restarts {
                words.push(format!("restarts={restarts}"));
            }
            if e.event == "started" || e.event == "exited" || e.event == "stopping" {
                assert!(e.pid.is_some(), "{e:?}");
            }
            words.join(" ").trim_end().to_string()
        })
        .collect()
}

#[test]
fn nothing_is_recorded_while_nobody_watches() {
    let (mut sup, world) = supervisor();
    sup.create(command("w1")).unwrap();
    let pid = pid_of(&sup, "w1");
    ends(&mut sup, &world, pid, Some(ExitInfo::Code(1)));
    assert!(sup.take_events().is_empty());
    sup.watch(true);
    sup.reload_applied("1 created");
    sup.watch(false);
    assert!(
        sup.take_events().is_empty(),
        "off forgets what was not taken"
    );
}

#[test]
fn a_node_life_is_told_change_by_change() {
    let (mut sup, world) = supervisor();
    sup.watch(true);
    let mut w1 = command("w1");
    w1.revival_delay = Some(2.0);
    sup.create(w1).unwrap();
    assert_eq!(
        told(&mut sup),
        [
            "w1 created running",
            "w1 started running restarts=0",
            "w1 ready running"
        ]
    );
    let pid = pid_of(&sup, "w1");
    ends(&mut sup, &world, pid, Some(ExitInfo::Code(3)));
    assert_eq!(
        told(&mut sup),
        ["w1 exited reviving code=3", "w1 reviving reviving delay=2"]
    );
    tick(&mut sup, &world, Duration::from_secs(2));
    assert_eq!(
        told(&mut sup),
        ["w1 started running restarts=1", "w1 ready running"]
    );
    sup.restart("w1");
    assert_eq!(told(&mut sup), ["w1 stopping restarting"]);
    let pid = pid_of(&sup, "w1");
    ends(&mut sup, &world, pid, Some(ExitInfo::Signal(15)));
    assert_eq!(
        told(&mut sup),
        [
            "w1 exited reviving signal=SIGTERM",
            "w1 started running restarts=2",
            "w1 ready running"
        ]
    );
    let pid = pid_of(&sup, "w1");
    sup.destroy("w1");
    assert_eq!(told(&mut sup), ["w1 stopping stopping"]);
    ends(&mut sup, &world, pid, Some(ExitInfo::Code(0)));
    assert_eq!(
        told(&mut sup),
        ["w1 exited stopping code=0", "w1 destroyed"]
    );
    sup.reload_applied("1 created, 2 unchanged");
    let events = sup.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].node.as_deref(), events[0].event.as_str()),
        (None, "reloaded")
    );
    assert_eq!(events[0].summary.as_deref(), Some("1 created, 2 unchanged"));
}

#[test]
fn an_immediate_revival_a_failure_and_waiting_are_told() {
    let (mut sup, world) = supervisor();
    sup.watch(true);
    let mut crash = command("crash");
    crash.revival_delay = Some(0.0);
    crash.max_restarts = Some(1);
    sup.create(crash).unwrap();
    told(&mut sup);
    let pid = pid_of(&sup, "crash");
    ends(&mut sup, &world, pid, Some(ExitInfo::Code(1)));
    assert_eq!(
        told(&mut sup),
        [
            "crash exited reviving code=1",
            "crash reviving reviving delay=0",
            "crash started running restarts=1",
            "crash ready running"
        ]
    );
    let pid = pid_of(&sup, "crash");
    ends(&mut sup, &world, pid, Some(ExitInfo::Code(1)));
    let events = sup.take_events();
    let last = events.last().unwrap();
    assert_eq!(
        (last.event.as_str(), last.state.as_deref()),
        ("failed", Some("failed"))
    );
    assert!(
        last.reason.as_deref().unwrap().contains("revived 1 times"),
        "{last:?}"
    );

    let mut db = command("db");
    db.revival_delay = Some(5.0);
    sup.create(db).unwrap();
    let mut web = command("web");
    web.depends_on = Some(crate::config::Dependencies(
        [(
            "db".to_string(),
            crate::config::Dependency {
                condition: crate::config::Condition::Started,
                restart: true,
            },
        )]
        .into(),
    ));
    sup.create(web).unwrap();
    told(&mut sup);
    let db_pid = pid_of(&sup, "db");
    ends(&mut sup, &world, db_pid, Some(ExitInfo::Code(1)));
    let words = told(&mut sup);
    assert!(
        words.contains(&"web stopping stopping".to_string()),
        "{words:?}"
    );
    let web_pid = pid_of(&sup, "web");
    ends(&mut sup, &world, web_pid, None);
    let events = sup.take_events();
    let waiting = events
        .iter()
        .find(|e| e.event == "waiting")
        .expect("waiting");
    assert_eq!(waiting.waiting_for, Some(vec!["db".to_string()]));
}

#[test]
fn health_verdicts_are_told_when_they_change() {
    let (mut sup, world) = supervisor();
    sup.watch(true);
    let mut web = command("web");
    web.health = Some(Box::new(Health {
        check: Check::Tcp(Target {
            host: "127.0.0.1".into(),
            port: 9,
        }),
        interval: Some(1.0),
        timeout: Some(0.5),
        failures: Some(3),
    }));
    sup.create(web).unwrap();
    told(&mut sup);
    let verdict = |sup: &mut Supervisor, result: Result<(), String>| {
        tick(sup, &world, Duration::from_secs(1));
        let (id, _) = world.borrow().probes.last().unwrap().clone();
        sup.probed(id, result);
    };
    verdict(&mut sup, Ok(()));
    assert!(told(&mut sup).is_empty(), "healthy and still healthy");
    verdict(&mut sup, Err("connection refused".into()));
    let events = sup.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].health.as_deref(), Some("unhealthy"));
    assert_eq!((events[0].failures, events[0].limit), (Some(1), Some(3)));
    assert_eq!(events[0].reason.as_deref(), Some("connection refused"));
    verdict(&mut sup, Ok(()));
    assert_eq!(told(&mut sup), ["web health running healthy"]);
}

// Reloads: the plan against the table, and carrying it out.

use crate::config::reload::ReloadReport;

/// A node the scripts created at start.
fn scripted(sup: &mut Supervisor, config: NodeConfig) {
    sup.create_as(config, Origin::Script).unwrap();
}

/// Records `configs` as a reload's scripts would create them; the refusals as they
/// were told.
fn record(sup: &Supervisor, configs: Vec<NodeConfig>) -> (Recording, Vec<String>) {
    let mut recording = Recording::default();
    let mut refused = Vec::new();
    for config in configs {
        if let Err(e) = sup.record(&mut recording, config) {
            refused.push(e.to_string());
        }
    }
    (recording, refused)
}

/// A reload to `configs`, carried out: its report and what it waits for.
fn reload(sup: &mut Supervisor, configs: Vec<NodeConfig>) -> (ReloadReport, Applying) {
    let (recording, refused) = record(sup, configs);
    assert!(refused.is_empty(), "{refused:?}");
    let plan = sup.plan(recording);
    let report = plan.report(false);
    let checked = sup.check(&plan).expect("the plan checks");
    let (applying, errors) = sup.apply_plan(plan, checked);
    assert!(errors.is_empty(), "{errors:?}");
    (report, applying)
}

fn lines(report: &ReloadReport) -> Vec<String> {
    report.nodes.iter().map(ToString::to_string).collect()
}

fn with_env(mut config: NodeConfig, key: &str, value: &str) -> NodeConfig {
    config.env.insert(key.into(), value.into());
    config
}

fn starts_of(world: &Rc<RefCell<World>>, name: &str) -> usize {
    world
        .borrow()
        .started
        .iter()
        .filter(|s| s.0 == name)
        .count()
}

#[test]
fn a_reload_creates_destroys_restarts_and_keeps() {
    let (mut sup, world) = supervisor();
    scripted(&mut sup, command("manager"));
    scripted(&mut sup, with_env(command("w1"), "LEVEL", "1"));
    scripted(&mut sup, command("w2"));
    sup.create(command("r1")).unwrap(); // at run time
    sup.take_notices();
    let (manager, w1, w2, r1) = (
        pid_of(&sup, "manager"),
        pid_of(&sup, "w1"),
        pid_of(&sup, "w2"),
        pid_of(&sup, "r1"),
    );

    let (report, applying) = reload(
        &mut sup,
        vec![
            command("manager"),
            with_env(command("w1"), "LEVEL", "2"),
            command("w3"),
        ],
    );
    assert_eq!(
        lines(&report),
        [
            "= manager",
            "~ w1 (env.LEVEL: \"1\" -> \"2\")",
            "+ w3",
            "- w2"
        ]
    );
    assert!(!report.dry_run);
    // Untouched: no signal, no start, no notice.
    assert!(world.borrow().signals_to(manager).is_empty());
    assert!(world.borrow().signals_to(r1).is_empty());
    assert_eq!(pid_of(&sup, "manager"), manager);
    assert_eq!(starts_of(&world, "manager"), 1);
    // The changed and the removed are being stopped; the new one runs.
    assert_eq!(world.borrow().signals_to(w1)[0], Signal::SIGTERM);
    assert_eq!(world.borrow().signals_to(w2)[0], Signal::SIGTERM);
    assert_eq!(state(&sup, "w1"), "restarting");
    assert_eq!(state(&sup, "w3"), "running");
    assert!(sup.status("w2").nodes.is_empty(), "destroyed at once");
    assert!(!sup.is_applied(&applying));
    let notices = sup.take_notices();
    assert!(
        notices.iter().all(
            |n| matches!(n, Notice::Started { node, .. } | Notice::Ready { node } if node == "w3")
        ),
        "{notices:?}"
    );

    ends(&mut sup, &world, w2, None);
    assert!(!sup.is_applied(&applying), "w1 still stops");
    ends(&mut sup, &world, w1, None);
    assert!(sup.is_applied(&applying));
    assert_eq!(state(&sup, "w1"), "running");
    let status = &sup.status("w1").nodes["w1"];
    assert_eq!(status.node.env["LEVEL"], "2", "the new configuration");
    assert_eq!(status.restarts, 1);
    assert_ne!(pid_of(&sup, "w1"), w1);
    assert_eq!(starts_of(&world, "w1"), 2);
    // w2 is gone once its process has ended; w1 starts again.
    assert_eq!(
        sup.take_notices()[..2],
        [
            Notice::Removed { node: "w2".into() },
            Notice::Started {
                node: "w1".into(),
                pid: pid_of(&sup, "w1")
            }
        ]
    );

    // The new scripts' nodes are the scripts' own now; the run-time node is not.
    assert_eq!(sup.origin_of("w3"), Some(Origin::Script));
    assert_eq!(sup.origin_of("r1"), Some(Origin::Run));
    let (report, applying) = reload(&mut sup, vec![command("manager")]);
    assert_eq!(lines(&report), ["= manager", "- w1", "- w3"]);
    assert!(!sup.is_applied(&applying));
    assert_eq!(pid_of(&sup, "r1"), r1);
    assert!(world.borrow().signals_to(r1).is_empty());
}

#[test]
fn a_plan_only_shown_changes_nothing() {
    let (mut sup, world) = supervisor();
    scripted(&mut sup, command("w1"));
    scripted(&mut sup, command("w2"));
    let (recording, _) = record(&sup, vec![with_env(command("w1"), "A", "1"), command("w9")]);
    let report = sup.plan(recording).report(true);
    assert!(report.dry_run);
    assert_eq!(
        lines(&report),
        ["~ w1 (env.A: () -> \"1\")", "+ w9", "- w2"]
    );
    assert!(world.borrow().signals.is_empty());
    assert_eq!(world.borrow().started.len(), 2);
    assert_eq!(sup.node_names().collect::<Vec<_>>(), ["w1", "w2"]);
}

#[test]
fn the_recorder_answers_as_create_would() {
    let (mut sup, world) = supervisor();
    scripted(&mut sup, command("w1"));
    sup.create(command("r1")).unwrap();
    let mut a = command("a");
    depends(&mut a, &[("b", Condition::Ready, false)]);
    let mut b = command("b");
    depends(&mut b, &[("a", Condition::Ready, false)]);
    let (recording, refused) = record(
        &sup,
        vec![
            command("w1"),
            command("w1"),
            command("r1"),
            NodeConfig::named("a b"),
            a,
            b,
            on_host("w5", "there"),
        ],
    );
    assert_eq!(
        refused,
        [
            "node with name 'w1' already exists",
            "node with name 'r1' already exists",
            "node names must not contain spaces: 'a b'",
            "node 'b': dependency cycle: b -> a -> b",
        ]
    );
    assert!(recording.has("w1") && recording.has("a"));
    assert!(
        !recording.has("w5"),
        "another host's node is not this host's plan"
    );
    assert_eq!(
        lines(&sup.plan(recording).report(true)),
        ["= w1", "+ a"],
        "a run-time node is not the scripts' to change"
    );
    // a cycle through a run-time node that stays
    let mut r2 = command("r2");
    depends(&mut r2, &[("c", Condition::Ready, false)]);
    sup.create(r2).unwrap();
    let mut c = command("c");
    depends(&mut c, &[("r2", Condition::Ready, false)]);
    let (_, refused) = record(&sup, vec![c]);
    assert_eq!(refused, ["node 'c': dependency cycle: c -> r2 -> c"]);
    assert_eq!(world.borrow().started.len(), 2, "nothing started");
}

#[test]
fn a_plan_the_machine_refuses_changes_nothing() {
    let (mut sup, world) = supervisor();
    scripted(&mut sup, command("w1"));
    scripted(&mut sup, command("w2"));
    let (recording, _) = record(&sup, vec![with_env(command("w1"), "A", "1"), command("w3")]);
    let plan = sup.plan(recording);
    world.borrow_mut().refuse = Some("node 'w1': cannot start 'sleep'".into());
    assert_eq!(
        sup.check(&plan).err().map(|e| e.to_string()).as_deref(),
        Some("node 'w1': cannot start 'sleep'")
    );
    assert!(world.borrow().signals.is_empty());
    assert_eq!(sup.node_names().collect::<Vec<_>>(), ["w1", "w2"]);
}

#[test]
fn removed_nodes_stop_in_order_and_leave_the_others_alone() {
    let (mut sup, world) = supervisor();
    scripted(&mut sup, command("logger"));
    let mut manager = command("manager");
    depends(&mut manager, &[("logger", Condition::Ready, false)]);
    scripted(&mut sup, manager);
    let mut worker = command("worker");
    depends(&mut worker, &[("manager", Condition::Ready, false)]);
    scripted(&mut sup, worker);
    // A run-time node that depends on the manager and stays: the manager does not
    // wait for it.
    let mut watcher = command("watcher");
    depends(&mut watcher, &[("manager", Condition::Ready, false)]);
    sup.create(watcher).unwrap();
    scripted(&mut sup, command("other"));
    let pids: Vec<Pid> = ["logger", "manager", "worker", "watcher"]
        .iter()
        .map(|n| pid_of(&sup, n))
        .collect();
    let (report, applying) = reload(&mut sup, vec![command("other")]);
    assert_eq!(
        lines(&report),
        ["= other", "- worker", "- manager", "- logger"],
        "stop order"
    );
    let signalled =
        |world: &Rc<RefCell<World>>, pid: Pid| !world.borrow().signals_to(pid).is_empty();
    assert!(signalled(&world, pids[2]), "the worker first");
    assert!(!signalled(&world, pids[1]) && !signalled(&world, pids[0]));
    ends(&mut sup, &world, pids[2], None);
    assert!(signalled(&world, pids[1]), "then the manager");
    assert!(!signalled(&world, pids[0]));
    ends(&mut sup, &world, pids[1], None);
    assert!(signalled(&world, pids[0]), "the logger last");
    assert!(!sup.is_applied(&applying));
    ends(&mut sup, &world, pids[0], None);
    assert!(sup.is_applied(&applying));
    assert!(!signalled(&world, pids[3]), "the run-time node stays");
    assert_eq!(state(&sup, "watcher"), "running");
}

#[test]
fn a_changed_nodes_dependents_follow_restart_true() {
    let (mut sup, world) = supervisor();
    scripted(&mut sup, command("db"));
    let mut app = command("app");
    depends(&mut app, &[("db", Condition::Ready, true)]);
    scripted(&mut sup, app.clone());
    let mut loose = command("loose");
    depends(&mut loose, &[("db", Condition::Ready, false)]);
    scripted(&mut sup, loose.clone());
    let (db, app_pid, loose_pid) = (
        pid_of(&sup, "db"),
        pid_of(&sup, "app"),
        pid_of(&sup, "loose"),
    );
    let (report, applying) = reload(
        &mut sup,
        vec![with_env(command("db"), "V", "2"), app, loose],
    );
    assert_eq!(
        lines(&report),
        ["~ db (env.V: () -> \"2\")", "= app", "= loose"]
    );
    assert_eq!(state(&sup, "app"), "stopping", "restarts with db");
    assert_eq!(state(&sup, "loose"), "running");
    ends(&mut sup, &world, app_pid, None);
    assert_eq!(state(&sup, "app"), "waiting");
    ends(&mut sup, &world, db, None);
    assert!(sup.is_applied(&applying));
    assert_eq!(state(&sup, "db"), "running");
    assert_eq!(state(&sup, "app"), "running", "back once db is");
    assert_ne!(pid_of(&sup, "app"), app_pid);
    assert_eq!(pid_of(&sup, "loose"), loose_pid);
    assert!(world.borrow().signals_to(loose_pid).is_empty());
}

#[test]
fn a_reviving_node_that_changed_starts_at_once_and_one_that_did_not_waits() {
    let (mut sup, world) = supervisor();
    scripted(&mut sup, command("changed"));
    scripted(&mut sup, command("same"));
    for name in ["changed", "same"] {
        let pid = pid_of(&sup, name);
        ends(&mut sup, &world, pid, Some(ExitInfo::Code(1)));
        assert_eq!(state(&sup, name), "reviving");
    }
    let (report, applying) = reload(
        &mut sup,
        vec![with_env(command("changed"), "A", "1"), command("same")],
    );
    assert_eq!(lines(&report)[1], "= same");
    assert!(sup.is_applied(&applying), "nothing to stop");
    assert_eq!(state(&sup, "changed"), "running");
    assert_eq!(sup.status("changed").nodes["changed"].node.env["A"], "1");
    assert_eq!(state(&sup, "same"), "reviving", "its backoff goes on");
    tick(&mut sup, &world, Duration::from_secs(1));
    assert_eq!(state(&sup, "same"), "running");
}

#[test]
fn exited_failed_waiting_and_restarting_nodes_take_their_new_configuration() {
    let (mut sup, world) = supervisor();
    let mut once = command("once");
    once.restart = Some(RestartPolicy::Never);
    scripted(&mut sup, once.clone());
    let pid = pid_of(&sup, "once");
    ends(&mut sup, &world, pid, Some(ExitInfo::Code(0)));
    assert_eq!(state(&sup, "once"), "exited");
    let mut waiting = command("waiting");
    depends(&mut waiting, &[("nobody", Condition::Ready, false)]);
    scripted(&mut sup, waiting);
    scripted(&mut sup, command("restarting"));
    let restarting = pid_of(&sup, "restarting");
    sup.restart("restarting");
    assert_eq!(state(&sup, "restarting"), "restarting");

    let (_, applying) = reload(
        &mut sup,
        vec![
            with_env(once, "RUN", "2"),
            command("waiting"), // no longer waits
            with_env(command("restarting"), "A", "1"),
        ],
    );
    assert_eq!(state(&sup, "once"), "running", "run again with the new one");
    assert_eq!(state(&sup, "waiting"), "running");
    assert_eq!(state(&sup, "restarting"), "restarting");
    assert!(!sup.is_applied(&applying));
    ends(&mut sup, &world, restarting, None);
    assert!(sup.is_applied(&applying));
    assert_eq!(
        sup.status("restarting").nodes["restarting"].node.env["A"],
        "1"
    );
    assert_eq!(starts_of(&world, "restarting"), 2, "one start, not two");
}

#[test]
fn a_new_dependency_is_waited_for() {
    let (mut sup, world) = supervisor();
    scripted(&mut sup, command("app"));
    let app = pid_of(&sup, "app");
    let mut new_app = command("app");
    depends(&mut new_app, &[("db", Condition::Ready, false)]);
    let (report, applying) = reload(&mut sup, vec![notify_node("db"), new_app]);
    assert_eq!(
        lines(&report),
        ["+ db", "~ app (depends_on: () -> [\"db\"])"]
    );
    ends(&mut sup, &world, app, None);
    assert!(sup.is_applied(&applying));
    assert_eq!(state(&sup, "app"), "waiting");
    ready(&mut sup, "db");
    assert_eq!(state(&sup, "app"), "running");
    // and a dependency dropped is no longer waited for
    let (_, _) = reload(&mut sup, vec![notify_node("db"), command("app")]);
    let app = pid_of(&sup, "app");
    ends(&mut sup, &world, app, None);
    sup.restart("db");
    assert_eq!(state(&sup, "app"), "running");
}

#[test]
fn shutdown_during_a_reload_stops_everything() {
    let (mut sup, world) = supervisor();
    scripted(&mut sup, command("w1"));
    let w1 = pid_of(&sup, "w1");
    let (_, applying) = reload(&mut sup, vec![with_env(command("w1"), "A", "1")]);
    sup.stop_all();
    ends(&mut sup, &world, w1, None);
    assert!(sup.is_applied(&applying));
    assert!(sup.is_idle());
    assert_eq!(starts_of(&world, "w1"), 1, "nothing starts during shutdown");
}

#[test]
fn why_a_process_ended_reaches_the_hook_and_the_status() {
    let (mut sup, world) = supervisor();
    sup.create(command("hog")).unwrap();
    let pid = pid_of(&sup, "hog");
    let proc = world.borrow().proc_of(pid).unwrap();
    world
        .borrow_mut()
        .reasons
        .insert(proc, "out of memory (limit 64 MiB)".into());
    sup.take_notices();
    ends(&mut sup, &world, pid, Some(ExitInfo::Signal(9)));
    let exited = sup
        .take_notices()
        .into_iter()
        .find_map(|n| match n {
            Notice::Exited { reason, .. } => Some(reason),
            _ => None,
        })
        .expect("an exit notice");
    assert_eq!(exited.as_deref(), Some("out of memory (limit 64 MiB)"));
    let status = &sup.status("hog").nodes["hog"];
    assert_eq!(
        status.exit_reason.as_deref(),
        Some("out of memory (limit 64 MiB)")
    );
    // The next exit, for no particular reason, clears it.
    tick(&mut sup, &world, Duration::from_secs(2));
    let pid = pid_of(&sup, "hog");
    ends(&mut sup, &world, pid, Some(ExitInfo::Code(1)));
    assert_eq!(sup.status("hog").nodes["hog"].exit_reason, None);
}

#[test]
fn usage_is_asked_for_one_node_or_for_a_table_only() {
    let (mut sup, world) = supervisor();
    sup.create(command("a")).unwrap();
    sup.create(command("b")).unwrap();
    let proc = world.borrow().proc_of(pid_of(&sup, "a")).unwrap();
    world.borrow_mut().usage.insert(
        proc,
        crate::process::Usage {
            cpu: 1.5,
            memory: 4096,
        },
    );
    let one = &sup.status("a").nodes["a"];
    assert_eq!((one.cpu, one.memory), (Some(1.5), Some(4096)));
    assert_eq!(sup.status("").nodes["a"].cpu, None, "not for every node");
    let table = sup.status_with_usage("");
    assert_eq!(table.nodes["a"].cpu, Some(1.5));
    assert_eq!(table.nodes["b"].cpu, None, "the backend knows nothing of b");
}

#[test]
fn a_summary_and_the_nodes_still_on_their_way_up() {
    let (mut sup, world) = supervisor();
    assert_eq!(sup.summary(), "no nodes");
    let mut slow = command("slow");
    slow.ready = Some(Ready::Notify);
    slow.ready_timeout = Some(5.0);
    sup.create(slow).unwrap();
    sup.create(command("fast")).unwrap();
    let mut app = command("app");
    app.depends_on = Some(crate::config::Dependencies(
        [(
            "slow".to_string(),
            Dependency {
                condition: Condition::Ready,
                restart: false,
            },
        )]
        .into(),
    ));
    sup.create(app).unwrap();
    assert!(sup.take_changed());
    assert_eq!(sup.summary(), "3 nodes: 1 running, 1 starting, 1 waiting");
    let mut pending: Vec<String> = sup.node_names().map(str::to_string).collect();
    sup.unsettled(&mut pending);
    assert_eq!(pending, ["app", "slow"]);
    // slow times out: it is stopped and revived, and app waits for it no more.
    tick(&mut sup, &world, Duration::from_secs(6));
    sup.unsettled(&mut pending);
    assert!(pending.is_empty(), "{pending:?}: {}", sup.summary());
}
