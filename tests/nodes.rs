//! What a supervised node sees, and what becomes of its output.

use crate::util::*;

#[test]
fn script_nodes_load_their_scripts_in_zeek_order_as_one_program() {
    let sandbox = Sandbox::new("order");
    sandbox.write("base.rhai", "let trail = [\"base\"];\n");
    sandbox.write(
        "main.rhai",
        r#"
        if Supervisor::is_supervisor() {
            Supervisor::create(#{name: "w1", addl_base_scripts: ["base.rhai"], addl_user_scripts: ["user.rhai"], scripts: ["w1.rhai"]});
            Supervisor::create(#{name: "w2", addl_base_scripts: ["base.rhai"], scripts: ["w2.rhai"]});
        } else {
            trail.push("main");
        }
        fn zeek_init() {
            if Supervisor::is_supervised() { print(`${Supervisor::node().name}: ${trail}`); }
        }
        "#,
    );
    sandbox.write("user.rhai", "trail.push(\"user\");\n");
    sandbox.write("w1.rhai", "trail.push(\"w1 only\");\n");
    sandbox.write(
        "w2.rhai",
        "trail.push(helper());\nfn helper() { \"w2 only\" }\n",
    );
    let mut sup = sandbox.start(&["run", "main.rhai"]);
    let out = sup.expect_stdout("[w2] w2: ");
    let out = if out.contains("[w1] w1: ") {
        out
    } else {
        sup.expect_stdout("[w1] w1: ")
    };
    assert!(
        out.contains(r#"[w1] w1: ["base", "main", "user", "w1 only"]"#),
        "{out}"
    );
    assert!(
        out.contains(r#"[w2] w2: ["base", "main", "w2 only"]"#),
        "{out}"
    );
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn cluster_layout_env_and_directory() {
    let sandbox = Sandbox::new("cluster");
    sandbox.write(
        "c.rhai",
        r#"
        let layout = #{
            manager: Supervisor::ClusterEndpoint(#{role: Supervisor::MANAGER, host: "127.0.0.1", p: 27760}),
            w1: #{role: Supervisor::WORKER, host: "127.0.0.1", p: "27761/tcp", interface: "lo"},
        };
        fn node_status(node, pid) { print(`started ${node} pid=${pid}`); }
        if Supervisor::is_supervisor() {
            Supervisor::create(#{name: "w1", cluster: layout, directory: "nodes/w1", env: #{GREETING: "hello", N: 5}});
            Supervisor::create(#{name: "solo", directory: "nodes/solo"});
            Supervisor::create(#{name: "cmd", cluster: layout, env: #{GREETING: "hi"}, command: ["sleep", "300"]});
        }
        fn zeek_init() {
            if Supervisor::is_supervised() {
                if Cluster::node != "" {
                    let me = Cluster::nodes[Cluster::node];
                    print(`node=${Cluster::node} role=${me.role} p=${me.p} iface=${me.interface} size=${Cluster::nodes.len()}`);
                } else {
                    print(`no cluster: size=${Cluster::nodes.len()}`);
                }
                print(`env CLUSTER_NODE=${getenv("CLUSTER_NODE")} GREETING=${getenv("GREETING")} N=${getenv("N")}`);
                print(`payload hidden: ${getenv("RHAI_SUPERVISOR_NODE") == ()}`);
                print("ready");
            }
        }
        "#,
    );
    let mut sup = sandbox.start(&["run", "c.rhai"]);
    let out = sup.expect_stdout("[w1] ready");
    let out = if out.contains("[solo] ready") {
        out
    } else {
        sup.expect_stdout("[solo] ready")
    };
    assert!(
        out.contains("[w1] node=w1 role=Supervisor::WORKER p=27761/tcp iface=lo size=2"),
        "{out}"
    );
    assert!(
        out.contains("[w1] env CLUSTER_NODE=w1 GREETING=hello N=5"),
        "{out}"
    );
    assert!(
        out.contains("[solo] no cluster: size=0"),
        "a node without a cluster has no layout: {out}"
    );
    assert!(out.contains("[solo] env CLUSTER_NODE= GREETING="), "{out}");
    assert!(out.contains("[w1] payload hidden: true"), "{out}");
    let w1 = numbers_after(&out, "started w1 pid=")[0];
    assert_eq!(
        proc_cwd(w1).unwrap(),
        sandbox.path("nodes/w1").canonicalize().unwrap()
    );
    // A script node is forked from the stem, so its /proc environ is the stem's; what it
    // sees (getenv, above) and what its children inherit is its own. A command node's is
    // its own from the start.
    let out = sup.expect_stdout("started cmd pid=");
    let cmd = numbers_after(&out, "started cmd pid=")[0];
    // node_status comes right after the fork: the exec'd environment shows a moment later.
    let wanted = [
        ("CLUSTER_NODE".to_string(), "cmd".to_string()),
        ("GREETING".into(), "hi".into()),
    ];
    assert!(
        wait_until(PATIENCE, || {
            let env = proc_env(cmd);
            wanted.iter().all(|kv| env.contains(kv))
        }),
        "{:?}",
        proc_env(cmd)
    );
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn output_files_are_relative_to_the_directory_private_and_truncated_at_each_start() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new("files");
    sandbox.write(
        "f.rhai",
        r#"
        fn node_status(node, pid) {
            let s = Supervisor::status(node).nodes[node];
            print(`started ${node} restarts=${s.restarts}`);
        }
        Supervisor::create(#{name: "f", directory: "fdir", stdout_file: "out.log", stderr_file: "err.log",
            command: ["sh", "-c", "echo out-$$; echo err-$$ >&2; sleep 300"]});
        "#,
    );
    let mut sup = sandbox.start(&["run", "f.rhai"]);
    sup.expect_stdout("started f restarts=0");
    assert!(wait_until(PATIENCE, || sandbox
        .read("fdir/out.log")
        .starts_with("out-")));
    assert!(wait_until(PATIENCE, || sandbox
        .read("fdir/err.log")
        .starts_with("err-")));
    let first = sandbox.read("fdir/out.log");
    let mode = std::fs::metadata(sandbox.path("fdir/out.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // kill the node: the revived one truncates the file
    let pid: i32 = first.trim().trim_start_matches("out-").parse().unwrap();
    kill(pid, SIGKILL);
    sup.expect_stdout("started f restarts=1");
    assert!(wait_until(PATIENCE, || {
        let now = sandbox.read("fdir/out.log");
        now.starts_with("out-") && now != first
    }));
    assert_eq!(
        sandbox.read("fdir/out.log").lines().count(),
        1,
        "truncated, not appended"
    );
    assert!(
        !sup.stdout().contains("[f] out-"),
        "output went to the file, not the supervisor"
    );
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn cpu_affinity_pins_the_node() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let core = cores - 1;
    let sandbox = Sandbox::new("affinity");
    sandbox.write(
        "a.rhai",
        &format!(
            r#"
            fn node_status(node, pid) {{ print(`started ${{node}} pid=${{pid}}`); }}
            Supervisor::create(#{{name: "pinned", cpu_affinity: {core}, command: ["sleep", "300"]}});
            Supervisor::create(#{{name: "pinned_script", cpu_affinity: {core}}});
            "#
        ),
    );
    let mut sup = sandbox.start(&["run", "a.rhai"]);
    let out = sup.expect_stdout("started pinned_script pid=");
    for name in ["pinned", "pinned_script"] {
        let pid = numbers_after(&out, &format!("started {name} pid="))[0];
        // node_status comes right after the fork; the child pins itself a moment later.
        let pinned = || proc_status(pid, "Cpus_allowed_list") == Some(core.to_string());
        assert!(
            wait_until(PATIENCE, pinned),
            "{name}: {:?}",
            proc_status(pid, "Cpus_allowed_list")
        );
    }
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn output_is_prefixed_or_given_to_hooks() {
    let sandbox = Sandbox::new("hooks");
    sandbox.write(
        "h.rhai",
        r#"
        let seen = 0;
        fn stdout_hook(node, line) {
            seen += 1;
            if line.contains("secret") { return false; }
            if line == "last" { print(`hook saw ${seen} lines from ${node}`); }
            true
        }
        fn stderr_hook(node, line) {
            if node == "quiet" { return false; }
        }
        Supervisor::create(#{name: "loud", command: ["sh", "-c", "echo one; echo secret; echo two >&2; echo last"]});
        Supervisor::create(#{name: "quiet", command: ["sh", "-c", "echo hushed >&2"]});
        "#,
    );
    let mut sup = sandbox.start(&["run", "h.rhai"]);
    sup.expect_stdout("hook saw 3 lines from loud");
    // The hook prints before its line is printed: wait for the line too.
    let out = sup.expect_stdout("[loud] last\n");
    assert!(out.contains("hook saw 3 lines from loud"), "{out}");
    assert!(out.contains("[loud] one\n"), "{out}");
    assert!(out.contains("[loud] last\n"), "{out}");
    assert!(!out.contains("secret"), "{out}");
    let err = sup.expect_stderr("[loud] two");
    assert!(!err.contains("hushed"), "{err}");
    assert!(!out.contains("two"), "stderr stays on stderr");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(!sup.stderr().contains("hushed"));
}

#[test]
fn the_last_lines_arrive_before_the_exit() {
    let sandbox = Sandbox::new("lastlines");
    sandbox.write(
        "l.rhai",
        r#"
        let lines = 0;
        fn stdout_hook(node, line) { lines += 1; false }
        fn node_status(node, pid) {
            let s = Supervisor::status(node).nodes[node];
            if s.restarts > 0 {
                print(`lines before revival: ${lines}`);
                terminate();
            }
        }
        Supervisor::create(#{name: "burst", revival_delay: 0,
            command: ["sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; printf 'no newline'"]});
        "#,
    );
    let out = sandbox.run(&["run", "l.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("lines before revival: 2001"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_last_lines_are_kept_for_inspection() {
    let sandbox = Sandbox::new("tail");
    sandbox.write(
        "t.rhai",
        r#"
        fn stdout_hook(node, line) { false }
        fn stderr_hook(node, line) { false }
        fn node_status(node, pid) {
            let s = Supervisor::status(node).nodes[node];
            if s.restarts == 1 {
                let out = s.output;
                let stdout = out.filter(|l| l.stream == "stdout");
                let stderr = out.filter(|l| l.stream == "stderr");
                print(`kept ${stdout.len()} stdout lines from '${stdout[0].line}' to '${stdout[-1].line}'`);
                print(`stderr: ${stderr.map(|l| l.line)}`);
                print(`all-node status has no output: ${Supervisor::status().nodes[node].output.len()}`);
                terminate();
            }
        }
        Supervisor::create(#{name: "t", revival_delay: 0.05, command: ["sh", "-c",
            "i=0; while [ $i -lt 150 ]; do echo out $i; i=$((i+1)); done; echo 'why: config missing' >&2; echo bye; exit 2"]});
        "#,
    );
    let out = sandbox.run(&["run", "t.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    // 151 lines were written to stdout: the last 100 are kept.
    let expected = "kept 100 stdout lines from 'out 51' to 'bye'";
    assert!(out.stdout.contains(expected), "{}", out.stdout);
    let expected = "stderr: [\"why: config missing\"]";
    assert!(out.stdout.contains(expected), "{}", out.stdout);
    assert!(
        out.stdout.contains("all-node status has no output: 0"),
        "{}",
        out.stdout
    );
}
