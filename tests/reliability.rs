//! Faults and hostile input: scripts, nodes and the operating system misbehave, the
//! supervisor goes on and loses nothing.

use crate::util::*;

#[test]
fn the_permanent_failure_code_stops_revival_until_restart() {
    let sandbox = Sandbox::new("exit125");
    sandbox.write(
        "s.rhai",
        r#"
        let events = [];
        fn node_status(node, pid) {
            let s = Supervisor::status(node).nodes[node];
            events.push(`${pid == 0} ${s.state} ${s.exit_code}`);
            if pid == 0 {
                print(`failed: ${events}`);
                schedule(200, || {
                    print(`still failed: ${Supervisor::status(node).nodes[node].state} restarts=${Supervisor::status(node).nodes[node].restarts}`);
                    print(`restart: ${Supervisor::restart(node)}`);
                });
            } else if events.len() > 2 {
                print(`after restart: ${events[-1]}`);
                terminate();
            }
        }
        Supervisor::create(#{name: "p", revival_delay: 0, command: ["sh", "-c", "exit 125"]});
        "#,
    );
    let out = sandbox.run(&["run", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("failed: [\"false running \", \"true failed 125\"]"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("still failed: failed restarts=0"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("restart: true"), "{}", out.stdout);
    assert!(
        out.stdout.contains("after restart: false running 125"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("it has failed and is not revived until restarted: it exited with code 125"),
        "{}",
        out.stderr
    );
}

#[test]
fn max_restarts_within_a_window_marks_a_crash_loop_failed() {
    let sandbox = Sandbox::new("maxrestarts");
    sandbox.write(
        "s.rhai",
        r#"
        let starts = 0;
        fn node_status(node, pid) {
            if pid == 0 {
                let s = Supervisor::status(node).nodes[node];
                print(`failed after ${starts} starts: state=${s.state} restarts=${s.restarts} pid=${s.pid}`);
                terminate();
            } else {
                starts += 1;
            }
        }
        Supervisor::create(#{name: "loop", revival_delay: 0, max_restarts: 5, restart_window: 60, command: ["false"]});
        "#,
    );
    let out = sandbox.run(&["run", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("failed after 6 starts: state=failed restarts=5 pid="),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("it was revived 5 times within 60.0 s"),
        "{}",
        out.stderr
    );
}

/// A shell snippet (`label=NAME; . ./escape.sh`) that starts `sleep` in a new session
/// and prints `NAME=PID` once it is there.
fn write_escape_script(sandbox: &Sandbox) {
    sandbox.write(
        "escape.sh",
        "setsid sleep 300 & p=$!\nwhile [ \"$(cut -d' ' -f6 /proc/$p/stat)\" != \"$p\" ]; do :; done\necho \"$label=$p\"\n",
    );
}

#[test]
fn descendants_that_escape_the_process_group_are_stopped_with_their_node() {
    let sandbox = Sandbox::new("escape");
    write_escape_script(&sandbox);
    sandbox.write(
        "s.rhai",
        r#"
        fn stdout_hook(node, line) { print(`${node}: ${line}`); false }
        // escapes into its own session, then the node waits
        Supervisor::create(#{name: "destroyed", command: ["sh", "-c", "label=escaped; . ./escape.sh; sleep 300"]});
        // a helper daemonizes (its parent exits) while the node lives on
        Supervisor::create(#{name: "daemonizer", command: ["sh", "-c", "label=helper sh escape.sh; sleep 300"]});
        // escapes, then the node crashes
        Supervisor::create(#{name: "crasher", revival_delay: 3600, command: ["sh", "-c", "label=escaped; . ./escape.sh; exit 3"]});
        "#,
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    let out = sup.expect_stdout("destroyed: escaped=");
    let out = if out.contains("daemonizer: helper=") {
        out
    } else {
        sup.expect_stdout("daemonizer: helper=")
    };
    let out = if out.contains("crasher: escaped=") {
        out
    } else {
        sup.expect_stdout("crasher: escaped=")
    };
    let destroyed = numbers_after(&out, "destroyed: escaped=")[0];
    let helper = numbers_after(&out, "daemonizer: helper=")[0];
    let crashed = numbers_after(&out, "crasher: escaped=")[0];
    // The crashed node's escapee gets SIGTERM once the crash is seen.
    assert!(
        wait_until(PATIENCE, || !alive(crashed)),
        "the escapee of a crashed node survived"
    );
    // The daemonized helper of a live node is that node's business.
    assert!(alive(helper), "a live node's helper was killed");
    assert!(alive(destroyed));
    let err = sup.expect_stderr("left behind by a node that ended");
    assert!(err.contains(&format!("process {crashed}")), "{err}");

    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    for pid in [destroyed, helper] {
        assert!(
            !alive(pid),
            "process {pid} outlived the supervisor's shutdown"
        );
    }
}

#[test]
fn destroy_stops_a_descendant_in_another_session() {
    let sandbox = Sandbox::new("escape-destroy");
    write_escape_script(&sandbox);
    sandbox.write(
        "s.rhai",
        r#"
        fn stdout_hook(node, line) {
            print(`${node}: ${line}`);
            print(`destroy: ${Supervisor::destroy(node)}`);
            false
        }
        Supervisor::create(#{name: "e", command: ["sh", "-c", "label=escaped; . ./escape.sh; sleep 300"]});
        "#,
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    let out = sup.expect_stdout("destroy: true");
    let escaped = numbers_after(&out, "e: escaped=")[0];
    assert!(
        wait_until(PATIENCE, || !alive(escaped)),
        "the escapee survived destroy"
    );
    sup.expect_stderr(&format!(
        "killing process {escaped}, left behind by a stopped node"
    ));
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}
