//! Keeping nodes alive and stopping them: revival, destroy, restart, shutdown.

use crate::util::*;

/// A script that creates the nodes in `creates` (Rhai map literals) and prints every start.
fn supervisor_script(creates: &[&str]) -> String {
    let mut script = String::from(
        "fn node_status(node, pid) { print(`started ${node} pid=${pid}`); }\n\
         fn zeek_done() { print(\"zeek_done\"); }\n",
    );
    for create in creates {
        script.push_str(&format!(
            "let r = Supervisor::create({create});\nif r != \"\" {{ print(`create failed: ${{r}}`); }}\n"
        ));
    }
    script
}

#[test]
fn a_killed_node_is_revived_with_a_new_pid() {
    let sandbox = Sandbox::new("revive");
    sandbox.write(
        "s.rhai",
        &supervisor_script(&[r#"#{name: "w1", command: ["sleep", "300"], revival_delay: 0.05}"#]),
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    let out = sup.expect_stdout("started w1 pid=");
    let first = numbers_after(&out, "started w1 pid=")[0];
    assert!(alive(first));
    assert!(kill(first, SIGKILL));
    let out = sup.expect_stdout_count("started w1 pid=", 2);
    let second = numbers_after(&out, "started w1 pid=")[1];
    assert_ne!(first, second);
    assert!(alive(second));
    sup.expect_stderr("node 'w1' (pid");
    assert!(
        sup.stderr().contains("killed by SIGKILL"),
        "{}",
        sup.stderr()
    );
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(wait_until(PATIENCE, || !alive(second)));
}

#[test]
fn status_shows_no_pid_while_reviving_and_the_last_exit() {
    let sandbox = Sandbox::new("reviving");
    sandbox.write(
        "s.rhai",
        r#"
        fn node_status(node, pid) {
            let s = Supervisor::status(node).nodes[node];
            print(`start pid=${pid} restarts=${s.restarts} state=${s.state}`);
            if s.restarts == 1 {
                print(`last exit: ${s.exit} code=${s.exit_code}`);
                terminate();
            }
        }
        Supervisor::create(#{name: "f", command: ["sh", "-c", "exit 3"], revival_delay: 0.3});
        fn check() {
            let s = Supervisor::status("f").nodes.f;
            if s.state == "reviving" {
                print(`reviving no_pid=${s.pid == ()} exit=${s.exit_code}`);
            } else {
                schedule(5, check);
            }
        }
        schedule(5, check);
        "#,
    );
    let out = sandbox.run(&["run", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("reviving no_pid=true exit=3"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("start pid="), "{}", out.stdout);
    assert!(
        out.stdout.contains("restarts=1 state=running"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("last exit: exited with code 3 code=3"),
        "{}",
        out.stdout
    );
}

#[test]
fn destroy_kills_the_node_and_its_process_group() {
    let sandbox = Sandbox::new("destroy");
    sandbox.write(
        "s.rhai",
        r#"
        fn node_status(node, pid) { print(`started ${node} pid=${pid}`); }
        Supervisor::create(#{name: "g", command: ["sh", "-c", "sleep 300 & echo grandchild=$!; wait"]});
        fn stdout_hook(node, line) {
            if line.starts_with("grandchild=") {
                print(line);
                print(`destroy=${Supervisor::destroy("g")} left=${Supervisor::status().nodes.len()}`);
            }
        }
        "#,
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    let out = sup.expect_stdout("destroy=true left=0");
    let node = numbers_after(&out, "started g pid=")[0];
    let grandchild = numbers_after(&out, "grandchild=")[0];
    assert!(
        wait_until(PATIENCE, || !alive(node) && !alive(grandchild)),
        "node or grandchild survived destroy"
    );
    sup.expect_stderr("node 'g'");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn restart_starts_a_new_process() {
    let sandbox = Sandbox::new("restart");
    sandbox.write(
        "s.rhai",
        r#"
        fn node_status(node, pid) {
            print(`started ${node} pid=${pid}`);
            let s = Supervisor::status(node).nodes[node];
            if s.restarts == 0 { print(`restart=${Supervisor::restart(node)}`); }
            else { print(`restarts=${s.restarts} exit=${s.exit}`); }
        }
        Supervisor::create(#{name: "r", command: ["sleep", "300"]});
        "#,
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    let out = sup.expect_stdout("restarts=1");
    let pids = numbers_after(&out, "started r pid=");
    assert_eq!(pids.len(), 2, "{out}");
    assert!(out.contains("restart=true"), "{out}");
    assert!(out.contains("exit=killed by SIGTERM"), "{out}");
    assert!(wait_until(PATIENCE, || !alive(pids[0])));
    assert!(alive(pids[1]));
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(wait_until(PATIENCE, || !alive(pids[1])));
}

#[test]
fn sigterm_stops_every_node_even_one_that_ignores_it() {
    let sandbox = Sandbox::new("shutdown");
    sandbox.write(
        "s.rhai",
        &supervisor_script(&[
            r#"#{name: "stubborn", command: ["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.05; done"], stop_timeout: 0.5}"#,
            r#"#{name: "polite", command: ["sleep", "300"]}"#,
            r#"#{name: "script"}"#,
        ]),
    );
    sandbox.write(
        "s.rhai",
        &(sandbox.read("s.rhai") + "if Supervisor::is_supervised() { print(\"ready\"); }\n"),
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    let out = sup.expect_stdout_count("] ready", 2);
    let pids: Vec<i32> = ["stubborn", "polite", "script"]
        .iter()
        .map(|n| numbers_after(&out, &format!("started {n} pid="))[0])
        .collect();
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} outlived the supervisor");
    }
    let out = sup.stdout();
    assert!(out.trim_end().ends_with("zeek_done"), "{out}");
    assert!(
        sup.stderr()
            .contains("did not stop in time; sending SIGKILL"),
        "{}",
        sup.stderr()
    );
}

#[test]
fn terminate_from_a_script_shuts_down_cleanly() {
    let sandbox = Sandbox::new("terminate");
    sandbox.write(
        "s.rhai",
        r#"
        fn node_status(node, pid) { print(`started ${node} pid=${pid}`); terminate(); }
        fn zeek_done() { print(`zeek_done nodes=${Supervisor::status().nodes.len()}`); }
        Supervisor::create(#{name: "t", command: ["sleep", "300"]});
        "#,
    );
    let out = sandbox.run(&["run", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let pid = numbers_after(&out.stdout, "started t pid=")[0];
    assert!(!alive(pid));
    assert!(
        out.stdout.ends_with("zeek_done nodes=0\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn sigkill_of_the_supervisor_leaves_no_node_alive() {
    let sandbox = Sandbox::new("sigkill");
    sandbox.write(
        "s.rhai",
        &(supervisor_script(&[
            r#"#{name: "cmd", command: ["sleep", "300"]}"#,
            r#"#{name: "stubborn", command: ["sh", "-c", "trap '' TERM; while true; do sleep 0.05; done"]}"#,
            r#"#{name: "script1"}"#,
            r#"#{name: "script2"}"#,
        ]) + "if Supervisor::is_supervised() { print(\"up\"); }\n"),
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    let out = sup.expect_stdout_count("] up", 2);
    let pids: Vec<i32> = ["cmd", "stubborn", "script1", "script2"]
        .iter()
        .map(|n| numbers_after(&out, &format!("started {n} pid="))[0])
        .collect();
    sup.signal(SIGKILL);
    sup.expect_exit();
    for pid in pids {
        assert!(
            wait_until(PATIENCE, || !alive(pid)),
            "node pid {pid} outlived a SIGKILLed supervisor"
        );
    }
}

#[test]
fn a_crashing_node_backs_off() {
    let sandbox = Sandbox::new("backoff");
    sandbox.write(
        "s.rhai",
        r#"
        let starts = 0;
        fn node_status(node, pid) {
            starts += 1;
            if starts == 5 { terminate(); }
        }
        Supervisor::create(#{name: "crash", command: ["false"], revival_delay: 0.05});
        "#,
    );
    let out = sandbox.run(&["run", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    // Zeek's policy: the first delay three times, then doubled.
    let delays: Vec<&str> = lines_with(&out.stderr, "reviving it in")
        .iter()
        .map(|l| l.rsplit("reviving it in ").next().unwrap())
        .collect();
    assert_eq!(
        delays,
        ["50 ms", "50 ms", "50 ms", "100 ms"],
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("node 'crash' (pid"), "{}", out.stderr);
    assert!(out.stderr.contains("exited with code 1"), "{}", out.stderr);
}

#[test]
fn the_shipped_cluster_example_runs_and_stops() {
    let sandbox = Sandbox::new("cluster-example");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/cluster.rhai");
    sandbox.write(
        "scripts/cluster/worker.rhai",
        &std::fs::read_to_string(root.join("scripts/cluster/worker.rhai")).unwrap(),
    );
    let mut sup = sandbox.start(&["run", script.to_str().unwrap()]);
    for node in ["manager", "logger", "proxy", "worker-1", "worker-2"] {
        sup.expect_stdout(&format!("[{node}] up as "));
    }
    sup.expect_stdout("[worker-1] worker-1 on lo: 1000 packets so far");
    let pids = numbers_after(&sup.stdout(), "is running as pid ");
    assert_eq!(pids.len(), 5, "{}", sup.stdout());
    assert!(sandbox.path("cluster-run/worker-2").is_dir());
    sup.signal(SIGINT);
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(
        sup.stdout().trim_end().ends_with("every node has stopped"),
        "{}",
        sup.stdout()
    );
    for pid in pids {
        assert!(!alive(pid));
    }
}

#[test]
fn the_shipped_crash_demo_revives_five_times() {
    let sandbox = Sandbox::new("crash-example");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/crash.rhai");
    let out = sandbox.run(&["run", script.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(
        lines_with(&out.stdout, "crashy: start #").len(),
        6,
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("crashy: start #2, pid"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("(after it exited with code 3)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("crashy was revived 5 times; destroying it: true"),
        "{}",
        out.stdout
    );
}

/// The process name (`comm`) and command line of a process.
fn comm_and_cmdline(pid: i32) -> (String, String) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    (
        comm.trim().to_string(),
        String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .trim()
            .to_string(),
    )
}

#[test]
fn script_nodes_are_forked_from_a_stem_that_is_replaced_when_it_dies() {
    let sandbox = Sandbox::new("stem");
    sandbox.write(
        "s.rhai",
        r#"
        fn node_status(node, pid) { print(`started ${node} pid=${pid}`); }
        if Supervisor::is_supervisor() {
            Supervisor::create(#{name: "first"});
            schedule(0, || {});
        } else {
            print(`I am ${Supervisor::node().name}`);
        }
        "#,
    );
    let mut sup = sandbox.start(&["run", "--no-socket", "s.rhai"]);
    let out = sup.expect_stdout("[first] I am first");
    let first = numbers_after(&out, "started first pid=")[0];
    let (comm, cmdline) = comm_and_cmdline(first);
    assert_eq!(comm, "first");
    assert!(cmdline.ends_with("__stem"), "{cmdline}");
    // The node is the supervisor's own child, not the stem's.
    assert_eq!(proc_status(first, "PPid").unwrap(), sup.pid().to_string());
    let stem = children_of(sup.pid())
        .into_iter()
        .find(|&p| p != first && comm_and_cmdline(p).1.ends_with("__stem"))
        .expect("a stem process");
    assert!(kill(stem, SIGKILL));
    assert!(wait_until(PATIENCE, || !alive(stem)));
    // The next script node gets a new stem.
    kill(first, SIGKILL);
    let out = sup.expect_stdout_count("[first] I am first", 2);
    let second = numbers_after(&out, "started first pid=")[1];
    assert_eq!(comm_and_cmdline(second).0, "first");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(children_of(sup.pid()).is_empty());
}

#[test]
fn script_nodes_can_be_started_by_exec() {
    let sandbox = Sandbox::new("nostem");
    sandbox.write(
        "s.rhai",
        r#"
        fn node_status(node, pid) { print(`started ${node} pid=${pid}`); }
        if Supervisor::is_supervisor() {
            Supervisor::create(#{name: "w", env: #{X: "1"}});
        } else {
            print(`I am ${Supervisor::node().name}, X=${getenv("X")}`);
        }
        "#,
    );
    let mut sup = sandbox.start_with(&["run", "--no-socket", "s.rhai"], |c| {
        c.env("RHAI_SUPERVISOR_NO_STEM", "1");
    });
    let out = sup.expect_stdout("[w] I am w, X=1");
    let pid = numbers_after(&out, "started w pid=")[0];
    assert!(comm_and_cmdline(pid).1.ends_with("__node w"));
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}
