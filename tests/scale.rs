//! Many nodes: collectors (the helper processes that watch nodes once the supervisor's
//! own table of descriptors is full) keep every promise of capture, and a collector's
//! death costs its nodes a revival, not their output.
//!
//! `RHAI_SUPERVISOR_TEST_COLLECT=LOCAL,EACH` makes the supervisor watch only LOCAL nodes
//! itself and hand EACH to a collector, so a handful of nodes exercises what ten
//! thousand would under the real limit.

use crate::util::*;
use nix::libc::{SIGKILL, SIGTERM};

fn collectors_of(pid: i32) -> Vec<i32> {
    children_of(pid)
        .into_iter()
        .filter(|&c| {
            std::fs::read(format!("/proc/{c}/cmdline"))
                .map(|cmd| cmd.windows(9).any(|w| w == b"__collect"))
                .unwrap_or(false)
        })
        .collect()
}

/// How many pidfds process `pid` holds.
fn pidfds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|target| target.to_string_lossy().contains("pidfd"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn output_through_collectors_keeps_streams_apart_in_order_and_before_the_exit() {
    let sandbox = Sandbox::new("collect");
    // Five nodes, one watched here and the rest by collectors of two: each writes
    // numbered lines on both streams as fast as it can (together more than the
    // collectors' sockets hold, so writers wait on the supervisor), then exits.
    sandbox.write(
        "s.rhai",
        r#"
        let lines = 4000;
        fn zeek_init() {
            for i in 0..5 {
                Supervisor::create(#{name: `n${i}`, restart: "never",
                    command: ["sh", "-c", `i=0; while [ $i -lt ${lines} ]; do echo "o $i"; echo "e $i" >&2; i=$((i+1)); done; exit 7`]});
            }
        }
        let next = #{};
        let bad = 0;
        fn take(node, stream, line) {
            let key = `${node}.${stream}`;
            let want = next.get(key) ?? 0;
            let n = parse_int(line.split(" ")[1]);
            if line.split(" ")[0] != stream || n != want { bad += 1; print(`out of order: ${key} ${line} (want ${want})`); }
            next[key] = want + 1;
        }
        fn stdout_hook(node, line) { take(node, "o", line); }
        fn stderr_hook(node, line) { take(node, "e", line); }
        let done = 0;
        fn node_exit(node, exit) {
            let o = next.get(`${node}.o`) ?? 0;
            let e = next.get(`${node}.e`) ?? 0;
            print(`${node} exited ${exit.code} after ${o} and ${e} lines`);
            done += 1;
            if done == 5 { print(`all done; bad ${bad}`); }
        }
        "#,
    );
    let mut sup = sandbox.start_with(&["run", "--no-socket", "s.rhai"], |c| {
        c.env("RHAI_SUPERVISOR_TEST_COLLECT", "1,2");
    });
    let out = sup.expect_stdout("all done; bad ");
    assert!(out.contains("all done; bad 0"), "{out}");
    for i in 0..5 {
        assert!(
            out.contains(&format!("n{i} exited 7 after 4000 and 4000 lines")),
            "n{i}: {out}"
        );
    }
    // Four nodes went to collectors of two: two of them.
    let err = sup.stderr();
    assert_eq!(lines_with(&err, "watched by a collector").len(), 2, "{err}");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn nodes_past_the_supervisors_room_hold_no_descriptor_of_the_supervisor() {
    let sandbox = Sandbox::new("collectfd");
    sandbox.write(
        "s.rhai",
        r#"
        fn zeek_init() {
            for i in 0..30 { Supervisor::create(#{name: `n${i}`, command: ["sleep", "300"]}); }
            print("created");
        }
        "#,
    );
    let mut sup = sandbox.start_with(&["run", "--no-socket", "s.rhai"], |c| {
        c.env("RHAI_SUPERVISOR_TEST_COLLECT", "4,100");
    });
    sup.expect_stdout("created");
    let pid = sup.pid();
    assert!(wait_until(PATIENCE, || children_of(pid).len() == 31));
    let collectors = collectors_of(pid);
    assert_eq!(collectors.len(), 1, "{:?}", children_of(pid));
    // The supervisor holds the pidfds of its four nodes only; the collector those of
    // the other 26.
    assert_eq!(pidfds(pid), 4);
    assert_eq!(pidfds(collectors[0]), 26);
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(!alive(collectors[0]));
}

#[test]
fn a_collector_that_dies_costs_its_nodes_a_revival_and_their_output_comes_back() {
    let sandbox = Sandbox::new("collectdie");
    sandbox.write(
        "s.rhai",
        r#"
        fn zeek_init() {
            for i in 0..6 {
                Supervisor::create(#{name: `n${i}`, revival_delay: 0.1,
                    command: ["sh", "-c", `echo start ${i}; exec sleep 300`]});
            }
        }
        fn stdout_hook(node, line) { print(`${node}: ${line}`); }
        "#,
    );
    let mut sup = sandbox.start_with(&["run", "--no-socket", "s.rhai"], |c| {
        c.env("RHAI_SUPERVISOR_TEST_COLLECT", "2,10");
    });
    sup.expect_stdout_count(": start ", 6);
    let pid = sup.pid();
    let collectors = collectors_of(pid);
    assert_eq!(collectors.len(), 1);
    let before = children_of(pid);
    assert!(kill(collectors[0], SIGKILL));
    // Its four nodes are stopped and revived; each says its first line again, through
    // a new collector.
    sup.expect_stderr("the collector (pid");
    let out = sup.expect_stdout_count(": start ", 10);
    for i in 2..6 {
        assert_eq!(
            lines_with(&out, &format!("n{i}: start {i}")).len(),
            2,
            "n{i}: {out}"
        );
    }
    for i in 0..2 {
        assert_eq!(
            lines_with(&out, &format!("n{i}: start {i}")).len(),
            1,
            "{out}"
        );
    }
    assert!(wait_until(PATIENCE, || {
        let now = collectors_of(pid);
        now.len() == 1 && now[0] != collectors[0]
    }));
    // The two nodes watched here never noticed.
    let after = children_of(pid);
    assert_eq!(
        before.iter().filter(|p| after.contains(p)).count(),
        2,
        "{before:?} {after:?}"
    );
    assert!(zombie_children(pid).is_empty());
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}
