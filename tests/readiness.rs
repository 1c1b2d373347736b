//! Readiness, dependencies, restart policies, stop order, hooks, health and watchdogs,
//! with real programs: `systemd-notify`, shells writing to descriptors, a Python HTTP
//! server, and nodes that fail if they start too early.

use serde_json::Value;

use crate::util::*;

fn ctl(sandbox: &Sandbox, args: &[&str]) -> Finished {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    sandbox.run(&all)
}

/// `ctl --json status` as JSON, once the supervisor answers (its socket file exists a
/// moment before it listens).
fn status(sandbox: &Sandbox) -> Value {
    let mut out = None;
    assert!(
        wait_until(PATIENCE, || {
            let answer = ctl(sandbox, &["--json", "status"]);
            let answered = answer.code() != Some(3);
            out = Some(answer);
            answered
        }),
        "the supervisor never answered"
    );
    let out = out.unwrap();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let response: Value = serde_json::from_str(&out.stdout).unwrap();
    response["result"]["nodes"].clone()
}

/// Waits until `node`'s state is `state`; returns the status of every node then.
fn wait_state(sandbox: &Sandbox, sup: &Process, node: &str, state: &str) -> Value {
    let mut last = Value::Null;
    let reached = wait_until(PATIENCE, || {
        last = status(sandbox);
        last[node]["state"] == state
    });
    assert!(
        reached,
        "{node} never became {state}: {last:#}\n--- stderr:\n{}",
        sup.stderr()
    );
    last
}

#[test]
fn a_dependent_starts_only_once_its_dependency_said_ready() {
    let sandbox = Sandbox::new("notify-order");
    // The dependency gets ready only when the flag file exists, and says so with
    // systemd-notify; the dependent fails for good if it starts before.
    sandbox.write(
        "s.rhai",
        r#"
        Supervisor::create(#{name: "db", ready: "notify", command: ["sh", "-c",
            "while [ ! -e go ]; do sleep 0.05; done; touch up; systemd-notify --ready --status='accepting connections'; exec sleep 300"]});
        Supervisor::create(#{name: "app", depends_on: ["db"], command: ["sh", "-c",
            "if [ -e up ]; then echo 'started after db'; exec sleep 300; else echo 'too early'; exit 125; fi"]});
        fn node_ready(node) { print(`ready: ${node}`); }
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    let nodes = wait_state(&sandbox, &sup, "db", "starting");
    assert_eq!(nodes["app"]["state"], "waiting");
    assert_eq!(nodes["app"]["waiting_for"], serde_json::json!(["db"]));
    assert!(nodes["app"].get("pid").is_none());
    // The table shows what a node waits for.
    let table = ctl(&sandbox, &["status"]).stdout;
    assert!(table.contains("waiting for db"), "{table}");
    sandbox.write("go", "");
    let nodes = wait_state(&sandbox, &sup, "app", "running");
    assert_eq!(nodes["db"]["state"], "running");
    assert_eq!(nodes["db"]["status_text"], "accepting connections");
    sup.expect_stdout("[app] started after db");
    sup.expect_stdout("ready: db");
    assert!(!sup.stdout().contains("too early"), "{}", sup.stdout());
    // node_ready comes after node_status for that start, for every kind of node
    sup.expect_stdout("ready: app");
}

#[test]
fn only_the_node_and_its_descendants_can_say_it_is_ready() {
    let sandbox = Sandbox::new("notify-creds");
    sandbox.write(
        "s.rhai",
        r#"Supervisor::create(#{name: "db", ready: "notify", command: ["sh", "-c", "echo $NOTIFY_SOCKET > socket; exec sleep 300"]});"#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    assert!(wait_until(PATIENCE, || !sandbox
        .read("socket")
        .trim()
        .is_empty()));
    let socket = sandbox.read("socket").trim().to_string();
    assert!(socket.starts_with('@'), "an abstract socket: {socket}");
    // This test process is no node's: its READY=1 does not count.
    let sent = std::process::Command::new("systemd-notify")
        .arg("--ready")
        .env("NOTIFY_SOCKET", &socket)
        .status()
        .unwrap();
    assert!(sent.success());
    // Floods, large datagrams and descriptors from a stranger cost nothing either.
    let flood = std::process::Command::new("python3")
        .args([
            "-c",
            r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
addr = "\0" + sys.argv[1][1:]
for i in range(5000):
    s.sendto(b"READY=1\nSTATUS=flood %d" % i, addr)
s.sendto(b"READY=1\n" + b"x" * 60000, addr)
r, w = os.pipe()
s.connect(addr)
socket.send_fds(s, [b"READY=1"], [r, w])
"#,
            &socket,
        ])
        .status()
        .unwrap();
    assert!(flood.success());
    let nodes = status(&sandbox);
    assert_eq!(nodes["db"]["state"], "starting", "{nodes:#}");
    assert!(nodes["db"].get("status_text").is_none(), "{nodes:#}");
    drop(sup);
}

#[test]
fn a_node_flooding_its_socket_still_gets_ready_and_passes_nothing_on() {
    let sandbox = Sandbox::new("notify-flood");
    sandbox.write(
        "flood.py",
        r#"
import os, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
addr = "\0" + os.environ["NOTIFY_SOCKET"][1:]
for i in range(20000):
    s.sendto(b"STATUS=busy %d" % i, addr)
r, w = os.pipe()
open("passed", "w").write(str(os.fstat(r).st_ino))
s.connect(addr)
socket.send_fds(s, [b"STATUS=with descriptors"], [r, w])
os.close(r)
os.close(w)
s.send(b"READY=1\nSTATUS=done")
os.execvp("sleep", ["sleep", "300"])
"#,
    );
    sandbox.write(
        "s.rhai",
        r#"Supervisor::create(#{name: "f", ready: "notify", command: ["python3", "flood.py"]});"#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    let nodes = wait_state(&sandbox, &sup, "f", "running");
    assert_eq!(nodes["f"]["status_text"], "done");
    // The descriptors it sent were closed at once: the supervisor holds none of them.
    let passed = format!("pipe:[{}]", sandbox.read("passed").trim());
    let held = std::fs::read_dir(format!("/proc/{}/fd", sup.pid()))
        .unwrap()
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == passed));
    assert!(
        !held,
        "the supervisor holds the pipe it was sent ({passed})"
    );
}

#[test]
fn readiness_by_descriptor_log_line_tcp_http_and_exec() {
    let sandbox = Sandbox::new("ready-kinds");
    let port = free_port();
    sandbox.write(
        "s.rhai",
        &format!(
            r#"
        let order = [];
        fn node_ready(node) {{ order.push(node); print(`ready: ${{node}}`); }}
        Supervisor::create(#{{name: "fd", ready: #{{fd: 5}}, command: ["sh", "-c", "sleep 0.2; echo >&5; exec sleep 300"]}});
        Supervisor::create(#{{name: "log", ready: #{{log: "^listening on [0-9]+$"}}, command: ["sh", "-c", "echo starting; echo 'listening on x'; sleep 0.2; echo 'listening on 80' >&2; exec sleep 300"]}});
        Supervisor::create(#{{name: "web", ready: #{{http: "http://127.0.0.1:{port}/"}}, ready_interval: 0.05, command: ["python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]}});
        Supervisor::create(#{{name: "tcp", ready: #{{tcp: {port}}}, depends_on: #{{web: "started"}}, command: ["sleep", "300"]}});
        Supervisor::create(#{{name: "ex", ready: #{{exec: ["test", "-e", "flag"]}}, ready_interval: 0.05, command: ["sleep", "300"]}});
        "#
        ),
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    for node in ["fd", "log", "web", "tcp"] {
        wait_state(&sandbox, &sup, node, "running");
    }
    assert_eq!(status(&sandbox)["ex"]["state"], "starting");
    sandbox.write("flag", "");
    wait_state(&sandbox, &sup, "ex", "running");
    sup.expect_stdout("ready: ex");
}

#[test]
fn not_ready_in_time_is_a_failed_start() {
    let sandbox = Sandbox::new("ready-timeout");
    sandbox.write(
        "s.rhai",
        r#"
        fn node_status(node, pid) { print(`start ${node} ${pid}`); }
        Supervisor::create(#{name: "slow", ready: "notify", ready_timeout: 0.3, revival_delay: 0.1, command: ["sleep", "300"]});
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stderr("node 'slow' not ready after 0.3s");
    sup.expect_stdout_count("start slow", 2);
    let status = status(&sandbox);
    assert!(
        status["slow"]["restarts"].as_i64().unwrap() >= 1,
        "{status:#}"
    );
}

#[test]
fn a_one_shot_job_runs_before_the_app_and_stays_exited() {
    let sandbox = Sandbox::new("one-shot");
    sandbox.write(
        "s.rhai",
        r#"
        Supervisor::create(#{name: "migrate", restart: "never", command: ["sh", "-c", "sleep 0.2; echo migrated > done"]});
        Supervisor::create(#{name: "app", depends_on: #{migrate: "succeeded"}, command: ["sh", "-c", "cat done; exec sleep 300"]});
        Supervisor::create(#{name: "bad", restart: "on-failure", revival_delay: 0.05, command: ["sh", "-c", "[ -e twice ] && exit 0; touch twice; exit 1"]});
        Supervisor::create(#{name: "after-bad", depends_on: #{bad: "exited"}, command: ["sleep", "300"]});
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    let nodes = wait_state(&sandbox, &sup, "app", "running");
    assert_eq!(nodes["migrate"]["state"], "exited");
    assert_eq!(nodes["migrate"]["exit"], serde_json::json!({"code": 0}));
    sup.expect_stdout("[app] migrated");
    // on-failure: revived after exit 1, not after exit 0
    let nodes = wait_state(&sandbox, &sup, "after-bad", "running");
    assert_eq!(nodes["bad"]["state"], "exited");
    assert_eq!(nodes["bad"]["restarts"], 1);
}

#[test]
fn a_failed_dependency_is_named_and_logged_once() {
    let sandbox = Sandbox::new("hopeless");
    sandbox.write(
        "s.rhai",
        r#"
        Supervisor::create(#{name: "migrate", restart: "never", command: ["sh", "-c", "exit 3"]});
        Supervisor::create(#{name: "app", depends_on: #{migrate: "succeeded"}, command: ["sleep", "300"]});
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    wait_state(&sandbox, &sup, "migrate", "exited");
    let line = "node 'app' waits for 'migrate' to be succeeded, which it can no longer be: it exited unsuccessfully";
    sup.expect_stderr(line);
    let nodes = status(&sandbox);
    assert_eq!(nodes["app"]["state"], "waiting");
    assert_eq!(nodes["app"]["waiting_for"], serde_json::json!(["migrate"]));
    assert_eq!(sup.stderr().matches(line).count(), 1);
}

#[test]
fn the_cluster_stops_in_reverse_order() {
    let sandbox = Sandbox::new("stop-order");
    // Each node takes a moment to stop and says so, so an early SIGTERM would show; it
    // is ready once its trap is set.
    let node = |name: &str| {
        format!(
            r#"["sh", "-c", "trap 'echo {name} got TERM; sleep 0.2; echo {name} gone; exit 0' TERM; echo up; while true; do sleep 0.05; done"], ready: #{{log: "^up$"}}"#
        )
    };
    sandbox.write(
        "s.rhai",
        &format!(
            r#"
        Supervisor::create(#{{name: "logger", command: {}}});
        Supervisor::create(#{{name: "manager", depends_on: ["logger"], command: {}}});
        Supervisor::create(#{{name: "worker-1", depends_on: ["manager"], command: {}}});
        Supervisor::create(#{{name: "worker-2", depends_on: ["manager"], command: {}}});
        fn node_ready(node) {{ if node == "worker-2" {{ print("all up"); }} }}
        "#,
            node("logger"),
            node("manager"),
            node("worker-1"),
            node("worker-2")
        ),
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("all up");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    let out = sup.stdout();
    let at = |line: &str| {
        out.find(line)
            .unwrap_or_else(|| panic!("no {line:?} in\n{out}"))
    };
    for worker in ["worker-1", "worker-2"] {
        assert!(
            at(&format!("{worker} gone")) < at("manager got TERM"),
            "{out}"
        );
    }
    assert!(at("manager gone") < at("logger got TERM"), "{out}");
}

#[test]
fn a_dependent_with_restart_true_restarts_with_its_dependency() {
    let sandbox = Sandbox::new("restart-with");
    sandbox.write(
        "s.rhai",
        r#"
        Supervisor::create(#{name: "db", command: ["sleep", "300"]});
        Supervisor::create(#{name: "app", depends_on: #{db: #{condition: "ready", restart: true}}, command: ["sleep", "300"]});
        Supervisor::create(#{name: "cache", depends_on: ["db"], command: ["sleep", "300"]});
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    let before = wait_state(&sandbox, &sup, "app", "running");
    let out = ctl(&sandbox, &["restart", "db"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let mut after = Value::Null;
    assert!(wait_until(PATIENCE, || {
        after = status(&sandbox);
        after["app"]["state"] == "running" && after["app"]["pid"] != before["app"]["pid"]
    }));
    assert_ne!(after["db"]["pid"], before["db"]["pid"]);
    assert_eq!(
        after["cache"]["pid"], before["cache"]["pid"],
        "without restart: true"
    );
    assert!(!alive(before["app"]["pid"].as_i64().unwrap() as i32));
}

#[test]
fn node_exit_can_keep_a_node_down_and_sd_notify_works_in_script_nodes() {
    let sandbox = Sandbox::new("hooks");
    sandbox.write(
        "s.rhai",
        r#"
        fn zeek_init() {
            if Supervisor::is_supervisor() {
                Supervisor::create(#{name: "crash", revival_delay: 0, command: ["sh", "-c", "exit 4"]});
                Supervisor::create(#{name: "s", ready: "notify"});
            } else {
                schedule(100, || print(`sent: ${sd_notify("READY=1\nSTATUS=warmed up")}`));
            }
        }
        fn node_exit(node, exit) {
            print(`exit: ${node} code=${exit.code} no-signal=${exit.signal == ()} up=${exit.uptime >= 0.0}`);
            false
        }
        fn node_ready(node) { print(`ready: ${node}`); }
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("exit: crash code=4 no-signal=true up=true");
    let nodes = wait_state(&sandbox, &sup, "crash", "exited");
    assert_eq!(
        nodes["crash"]["restarts"], 0,
        "kept down before any revival"
    );
    sup.expect_stdout("[s] sent: true");
    let nodes = wait_state(&sandbox, &sup, "s", "running");
    assert_eq!(nodes["s"]["status_text"], "warmed up");
    sup.expect_stdout("ready: s");
    // outside a supervised node, sd_notify has nowhere to send
    sandbox.write("x.rhai", r#"print(`sent: ${sd_notify("READY=1")}`);"#);
    let out = sandbox.run(&["exec", "x.rhai"]);
    assert!(out.stdout.contains("sent: false"), "{}", out.stdout);
}

#[test]
fn a_failing_health_check_restarts_the_node() {
    let sandbox = Sandbox::new("health");
    sandbox.write("healthy", "");
    sandbox.write(
        "s.rhai",
        r#"
        Supervisor::create(#{name: "web", revival_delay: 0.1, command: ["sleep", "300"],
            health: #{exec: ["sh", "-c", "test -e healthy || { echo 'no healthy file'; exit 1; }"], interval: 0.2, timeout: 1, failures: 2}});
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    let before = wait_state(&sandbox, &sup, "web", "running");
    assert_eq!(before["web"]["health"], "ok");
    std::fs::remove_file(sandbox.path("healthy")).unwrap();
    sup.expect_stderr(
        "node 'web' failed its health check (1/2): exited with code 1: no healthy file",
    );
    sup.expect_stderr("node 'web' failed its health check (exec sh -c");
    let mut after = Value::Null;
    assert!(wait_until(PATIENCE, || {
        after = status(&sandbox);
        after["web"]["restarts"].as_i64() >= Some(1)
    }));
    sandbox.write("healthy", "");
    assert!(wait_until(PATIENCE, || {
        after = status(&sandbox);
        after["web"]["state"] == "running" && after["web"]["health"] == "ok"
    }));
}

#[test]
fn a_silent_watchdog_gets_the_node_aborted_and_revived() {
    let sandbox = Sandbox::new("watchdog");
    sandbox.write(
        "s.rhai",
        r#"
        fn zeek_init() {
            if Supervisor::is_supervisor() {
                Supervisor::create(#{name: "quiet", ready: "notify", watchdog: 0.5, revival_delay: 0.1});
                Supervisor::create(#{name: "pinger", ready: "notify", watchdog: 0.5});
            } else {
                print(`usec=${getenv("WATCHDOG_USEC")} pid-set=${getenv("WATCHDOG_PID") != ()}`);
                sd_notify("READY=1");
                if Cluster::node == "" && Supervisor::node().name == "pinger" { ping(); }
            }
        }
        fn ping() { sd_notify("WATCHDOG=1"); schedule(100, ping); }
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("[quiet] usec=500000 pid-set=true");
    sup.expect_stderr("node 'quiet' (pid ");
    sup.expect_stderr("sent no WATCHDOG=1 for 500 ms; sending SIGABRT");
    let mut nodes = Value::Null;
    assert!(wait_until(PATIENCE, || {
        nodes = status(&sandbox);
        nodes["quiet"]["restarts"].as_i64() >= Some(1)
    }));
    assert_eq!(nodes["pinger"]["restarts"], 0, "{nodes:#}");
    assert_eq!(nodes["pinger"]["state"], "running");
}

#[test]
fn bad_readiness_and_dependency_settings_are_refused_by_create() {
    let sandbox = Sandbox::new("ready-bad");
    sandbox.write(
        "s.rhai",
        r#"
        let cases = [
            #{name: "a", command: ["true"], ready: #{tcp: "nope"}},
            #{name: "b", command: ["true"], depends_on: #{db: "up"}},
            #{name: "c", command: ["true"], ready: #{log: "(unclosed"}},
            #{name: "d", command: ["true"], ready_timeout: -1},
            #{name: "e", command: ["true"], depends_on: ["e"]},
            #{name: "f", command: ["true"], watchdog: 5},
            #{name: "g", command: ["true"], restart: "sometimes"},
            #{name: "h", command: ["true"], ready: "eventually"},
            #{name: "i", command: ["true"], health: #{interval: 1}},
        ];
        for c in cases {
            try { print(`${c.name}: ${Supervisor::create(c)}`); } catch (e) { print(`${c.name}: ${e}`); }
        }
        Supervisor::create(#{name: "x", command: ["sleep", "9"], depends_on: ["y"]});
        print(`cycle: ${Supervisor::create(#{name: "y", command: ["sleep", "9"], depends_on: ["x"]})}`);
        print(`nodes: ${Supervisor::status().nodes.keys()}`);
        terminate();
        "#,
    );
    let out = sandbox.run(&["run", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    for expected in [
        "a: Supervisor::NodeConfig.ready.tcp: 'nope' is not a port or HOST:PORT",
        "b: Supervisor::NodeConfig.depends_on.db: unknown condition 'up'",
        "c: Supervisor::NodeConfig.ready.log: the regular expression does not compile",
        "d: Supervisor::NodeConfig.ready_timeout must be a number of seconds >= 0, not -1",
        "e: node 'e': depends_on names the node itself",
        "f: node 'f': watchdog needs ready: \"notify\"",
        "g: Supervisor::NodeConfig.restart: unknown policy 'sometimes'",
        "h: Supervisor::NodeConfig.ready: unknown readiness 'eventually'",
        "i: Supervisor::NodeConfig.health needs one of: tcp, exec, http",
        "cycle: node 'y': dependency cycle: y -> x -> y",
        "nodes: [\"x\"]",
    ] {
        assert!(
            out.stdout.contains(expected),
            "{expected:?} not in\n{}",
            out.stdout
        );
    }
}

/// A TCP port nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
