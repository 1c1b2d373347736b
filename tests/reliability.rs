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
