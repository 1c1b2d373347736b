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
        [Notice::Started {
            node: "w1".into(),
            pid: pid_of(&sup, "w1")
        }]
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
