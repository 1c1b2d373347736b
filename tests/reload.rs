//! Reload: the supervisor's scripts edited and read again (`ctl reload`, SIGHUP,
//! `:reload`), with real processes: what is untouched keeps its process, what changed
//! runs with its new configuration, what was removed is gone, and a reload that cannot
//! be done changes nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Instant;

use serde_json::Value;

use crate::util::*;

/// The first version of the scripts: a manager and two workers from `zeek_init()`,
/// one node from a timer (a run-time node), a repeating tick, a global.
const V1: &str = r#"
let generation = 1;
fn node_status(node, pid) { print(`v1 started ${node} pid=${pid}`); }
fn node(name, level) {
    #{name: name, command: ["sleep", "300"], env: #{LEVEL: level}}
}
fn tick() {
    print("v1 tick");
    schedule(20, tick);
}
fn zeek_init() {
    Supervisor::create(node("manager", "1"));
    Supervisor::create(node("w1", "1"));
    Supervisor::create(node("w2", "1"));
    schedule(1, || Supervisor::create(node("timer", "1")));
    schedule(20, tick);
    print("ready");
}
"#;

/// The edit: w1 changes, w2 goes, w3 comes; new hooks, timers and globals.
const V2: &str = r#"
let generation = 2;
fn node_status(node, pid) { print(`v2 started ${node} pid=${pid}`); }
fn node(name, level) {
    #{name: name, command: ["sleep", "300"], env: #{LEVEL: level}}
}
fn tick() {
    print("v2 tick");
    schedule(20, tick);
}
fn zeek_init() {
    Supervisor::create(node("manager", "1"));
    Supervisor::create(node("w1", "2"));
    Supervisor::create(node("w3", "1"));
    schedule(20, tick);
    print("v2 ready");
}
"#;

/// The plan from V1 to V2.
const PLAN: &str = "= manager\n~ w1 (env.LEVEL: \"1\" -> \"2\")\n+ w3\n- w2\n";

fn ctl(sandbox: &Sandbox, args: &[&str]) -> Finished {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    sandbox.run(&all)
}

fn ctl_ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let out = ctl(sandbox, args);
    assert_eq!(
        out.code(),
        Some(0),
        "ctl {args:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Every node's pid (`None` while it has none), from `ctl --json status`.
fn pids(sandbox: &Sandbox) -> BTreeMap<String, Option<i32>> {
    let out = ctl_ok(sandbox, &["--json", "status"]);
    let response: Value = serde_json::from_str(&out).unwrap();
    response["result"]["nodes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, node)| (name.clone(), node["pid"].as_i64().map(|p| p as i32)))
        .collect()
}

fn pid(pids: &BTreeMap<String, Option<i32>>, name: &str) -> i32 {
    pids[name].unwrap_or_else(|| panic!("{name} has no pid: {pids:?}"))
}

fn env_of(pid: i32, key: &str) -> Option<String> {
    proc_env(pid)
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// Starts `run s.rhai` (plus `extra`) on V1 and waits until the timer's node is up.
fn supervisor(sandbox: &Sandbox, extra: &[&str]) -> Process {
    sandbox.write("s.rhai", V1);
    let mut args = vec!["run", "s.rhai"];
    args.extend_from_slice(extra);
    let process = sandbox.start(&args);
    process.expect_stdout("v1 started timer pid=");
    assert!(wait_until(PATIENCE, || sandbox
        .path("rhai-supervisor.sock")
        .exists()));
    process
}

/// What must hold once V2 is applied over V1 plus the run-time node `r1`.
fn check_applied(sandbox: &Sandbox, sup: &Process, before: &BTreeMap<String, Option<i32>>) {
    let after = pids(sandbox);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        ["manager", "r1", "timer", "w1", "w3"],
        "{after:?}"
    );
    for untouched in ["manager", "r1", "timer"] {
        assert_eq!(
            pid(&after, untouched),
            pid(before, untouched),
            "{untouched}"
        );
        assert!(alive(pid(&after, untouched)));
    }
    let (old_w1, new_w1) = (pid(before, "w1"), pid(&after, "w1"));
    assert_ne!(old_w1, new_w1);
    assert!(!alive(old_w1), "the old w1 is gone");
    assert_eq!(env_of(new_w1, "LEVEL").as_deref(), Some("2"));
    assert!(
        !alive(pid(before, "w2")),
        "the removed node's process is gone"
    );
    assert_eq!(env_of(pid(&after, "w3"), "LEVEL").as_deref(), Some("1"));
    // The new hook hears of the new processes, and of nothing else.
    let out = sup.expect_stdout(&format!("v2 started w1 pid={new_w1}"));
    sup.expect_stdout("v2 started w3 pid=");
    assert!(!out.contains("v2 started manager"), "{out}");
    assert!(!out.contains("v2 started timer"), "{out}");
}

#[test]
fn ctl_reload_changes_only_what_changed() {
    let sandbox = Sandbox::new("reload-ctl");
    let mut sup = supervisor(&sandbox, &[]);
    ctl_ok(
        &sandbox,
        &["create", r#"{"name": "r1", "command": ["sleep", "300"]}"#],
    );
    let before = pids(&sandbox);
    sandbox.write("s.rhai", V2);
    let started = Instant::now();
    let out = ctl(&sandbox, &["reload"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, PLAN);
    assert!(out.stderr.is_empty(), "no warnings: {}", out.stderr);
    assert!(started.elapsed() < PATIENCE);
    check_applied(&sandbox, &sup, &before);
    let log = sup.expect_stderr("reload applied in ");
    assert!(
        log.contains("reload: ~ w1 (env.LEVEL: \"1\" -> \"2\")"),
        "{log}"
    );

    // The same scripts again: nothing to do.
    let again = pids(&sandbox);
    assert_eq!(ctl_ok(&sandbox, &["reload"]), "= manager\n= w1\n= w3\n");
    assert_eq!(pids(&sandbox), again);

    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    for (name, pid) in again {
        assert!(!alive(pid.unwrap()), "{name} outlived the supervisor");
    }
}

#[test]
fn hooks_timers_and_globals_are_the_new_scripts() {
    let sandbox = Sandbox::new("reload-program");
    let sup = supervisor(&sandbox, &[]);
    sup.expect_stdout("v1 tick");
    sandbox.write("s.rhai", V2);
    ctl_ok(&sandbox, &["reload"]);
    let out = sup.expect_stdout("v2 tick");
    // The old timers went with the old program: no v1 tick after the first v2 tick.
    let v1_ticks = out.matches("v1 tick").count();
    let out = sup.expect_stdout_count("v2 tick", 4);
    assert_eq!(out.matches("v1 tick").count(), v1_ticks, "{out}");
    let last_v1 = out.rfind("v1 tick").unwrap();
    assert!(last_v1 < out.find("v2 tick").unwrap(), "{out}");
    // Globals start from the new top level; functions are the new ones.
    assert_eq!(ctl_ok(&sandbox, &["eval", "generation"]), "2\n");
    ctl_ok(
        &sandbox,
        &[
            "create",
            r#"{"name": "later", "command": ["sleep", "300"]}"#,
        ],
    );
    sup.expect_stdout("v2 started later pid=");
}

#[test]
fn sighup_reloads_as_ctl_does() {
    let sandbox = Sandbox::new("reload-hup");
    let sup = supervisor(&sandbox, &[]);
    ctl_ok(
        &sandbox,
        &["create", r#"{"name": "r1", "command": ["sleep", "300"]}"#],
    );
    let before = pids(&sandbox);
    sandbox.write("s.rhai", V2);
    sup.signal(SIGHUP);
    let log = sup.expect_stderr("reload applied in ");
    assert!(
        log.contains("received SIGHUP; reloading the scripts"),
        "{log}"
    );
    assert!(
        log.contains("reload: ~ w1 (env.LEVEL: \"1\" -> \"2\")"),
        "{log}"
    );
    assert!(log.contains("reload: + w3"), "{log}");
    assert!(log.contains("reload: - w2"), "{log}");
    check_applied(&sandbox, &sup, &before);

    // A broken edit: logged, nothing changes, and the supervisor goes on.
    let now = pids(&sandbox);
    sandbox.write("s.rhai", "fn zeek_init() {\n  let x = ;\n}\n");
    sup.signal(SIGHUP);
    let log = sup.expect_stderr("cannot reload: s.rhai:2:11: ");
    assert!(log.contains("nothing was reloaded"), "{log}");
    assert_eq!(pids(&sandbox), now);
}

#[test]
fn a_failed_reload_leaves_everything_as_it_was() {
    let sandbox = Sandbox::new("reload-fails");
    let sup = supervisor(&sandbox, &[]);
    let before = pids(&sandbox);

    // A syntax error: nothing runs.
    sandbox.write(
        "s.rhai",
        "let generation = 3;\nfn zeek_init() {\n  let x = 1 +* 2;\n}\n",
    );
    let out = ctl(&sandbox, &["reload"]);
    assert_eq!(out.code(), Some(1));
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .starts_with("rhai-supervisor: error: s.rhai:3:14: Unexpected '*'"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("nothing was reloaded"),
        "{}",
        out.stderr
    );

    // A runtime error in zeek_init() after creates: nothing is created.
    sandbox.write(
        "s.rhai",
        "let generation = 3;\nfn zeek_init() {\n  Supervisor::create(#{name: \"w9\", command: [\"sleep\", \"300\"]});\n  let x = missing;\n}\n",
    );
    let out = ctl(&sandbox, &["reload"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .contains("s.rhai:4:11: in hook 'zeek_init': Variable not found: missing"),
        "{}",
        out.stderr
    );

    // A file that cannot be read.
    std::fs::remove_file(sandbox.path("s.rhai")).unwrap();
    let out = ctl(&sandbox, &["reload"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("cannot read script 's.rhai'"),
        "{}",
        out.stderr
    );

    // A new node that cannot be started: refused before anything changes.
    sandbox.write(
        "s.rhai",
        "fn zeek_init() {\n  Supervisor::create(#{name: \"w9\", command: [\"/no/such/program\"]});\n}\n",
    );
    let out = ctl(&sandbox, &["reload"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("w9") && out.stderr.contains("/no/such/program"),
        "{}",
        out.stderr
    );

    // The old program goes on: its globals, its hooks, its nodes.
    assert_eq!(pids(&sandbox), before);
    assert_eq!(ctl_ok(&sandbox, &["eval", "generation"]), "1\n");
    ctl_ok(
        &sandbox,
        &["create", r#"{"name": "r2", "command": ["sleep", "300"]}"#],
    );
    sup.expect_stdout("v1 started r2 pid=");
    sup.expect_stdout("v1 tick");
}

#[test]
fn a_dry_run_changes_nothing() {
    let sandbox = Sandbox::new("reload-dry");
    let sup = supervisor(&sandbox, &[]);
    let before = pids(&sandbox);
    sandbox.write("s.rhai", V2);
    assert_eq!(ctl_ok(&sandbox, &["reload", "--dry-run"]), PLAN);
    let out = ctl_ok(&sandbox, &["--json", "reload", "--dry-run"]);
    let response: Value = serde_json::from_str(&out).unwrap();
    let result = &response["result"];
    assert_eq!(result["dry_run"], true);
    assert_eq!(
        result["nodes"][1],
        serde_json::json!({
            "node": "w1",
            "change": "restart",
            "fields": [{"field": "env.LEVEL", "old": "1", "new": "2"}]
        })
    );
    assert_eq!(result["nodes"][3]["change"], "destroy");
    // Nothing moved: the same processes, the old configuration, the old program.
    assert_eq!(pids(&sandbox), before);
    let status: Value =
        serde_json::from_str(&ctl_ok(&sandbox, &["--json", "status", "w1"])).unwrap();
    assert_eq!(status["result"]["nodes"]["w1"]["node"]["env"]["LEVEL"], "1");
    assert_eq!(ctl_ok(&sandbox, &["eval", "generation"]), "1\n");
    assert!(!sup.stdout().contains("v2 started"));
    // The real reload after it does what the dry run said.
    let out = ctl_ok(&sandbox, &["--json", "reload"]);
    let response: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(response["result"]["dry_run"], false);
    assert_eq!(response["result"]["nodes"], result["nodes"]);
}

#[test]
fn two_reloads_at_once_the_second_is_refused() {
    let sandbox = Sandbox::new("reload-twice");
    // w1 ignores SIGTERM: its restart waits, until the test kills it.
    let stubborn = |level: &str| {
        format!(
            "fn zeek_init() {{\n  Supervisor::create(#{{name: \"w1\", stop_timeout: 120, env: #{{LEVEL: \"{level}\"}},\n    command: [\"sh\", \"-c\", \"trap '' TERM; echo up; while :; do sleep 0.1; done\"]}});\n}}\n"
        )
    };
    sandbox.write("s.rhai", &stubborn("1"));
    let sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("[w1] up");
    let old = pid(&pids(&sandbox), "w1");
    sandbox.write("s.rhai", &stubborn("2"));
    let mut first = sandbox.start(&["ctl", "reload"]);
    sup.expect_stderr("restarting node 'w1'");
    let second = ctl(&sandbox, &["reload"]);
    assert_eq!(second.code(), Some(1));
    assert!(
        second.stderr.contains("a reload is already under way"),
        "{}",
        second.stderr
    );
    let dry = ctl(&sandbox, &["reload", "--dry-run"]);
    assert_eq!(dry.code(), Some(1), "a dry run waits its turn too");
    // The first is answered once the old process is gone.
    kill(old, SIGKILL);
    assert_eq!(first.expect_exit(), Some(0), "{}", first.stderr());
    assert_eq!(first.stdout(), "~ w1 (env.LEVEL: \"1\" -> \"2\")\n");
    let w1 = pid(&pids(&sandbox), "w1");
    assert_eq!(env_of(w1, "LEVEL").as_deref(), Some("2"));
    // Once it is done, the next one goes through.
    assert_eq!(ctl_ok(&sandbox, &["reload"]), "= w1\n");
}

#[test]
fn a_reload_during_shutdown_is_refused() {
    let sandbox = Sandbox::new("reload-shutdown");
    sandbox.write(
        "s.rhai",
        "fn zeek_init() {\n  Supervisor::create(#{name: \"w1\", stop_timeout: 120,\n    command: [\"sh\", \"-c\", \"trap '' TERM; echo up; while :; do sleep 0.1; done\"]});\n}\n",
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("[w1] up");
    assert!(wait_until(PATIENCE, || sandbox
        .path("rhai-supervisor.sock")
        .exists()));
    let w1 = pid(&pids(&sandbox), "w1");
    sup.signal(SIGTERM);
    sup.expect_stderr("stopping every node");
    let out = ctl(&sandbox, &["reload"]);
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("shutting down"), "{}", out.stderr);
    sup.signal(SIGHUP);
    sup.expect_stderr("cannot reload: the supervisor is shutting down");
    kill(w1, SIGKILL);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn a_reviving_node_that_changed_starts_now_with_its_new_configuration() {
    let sandbox = Sandbox::new("reload-reviving");
    let flaky = |mode: &str| {
        format!(
            "fn zeek_init() {{\n  Supervisor::create(#{{name: \"flaky\", revival_delay: 60, env: #{{MODE: \"{mode}\"}},\n    command: [\"sh\", \"-c\", \"test \\\"$MODE\\\" = good || exit 1; exec sleep 300\"]}});\n}}\n"
        )
    };
    sandbox.write("s.rhai", &flaky("bad"));
    let sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stderr("reviving it in 60.0 s");
    assert!(wait_until(PATIENCE, || sandbox
        .path("rhai-supervisor.sock")
        .exists()));
    assert_eq!(pids(&sandbox)["flaky"], None, "waiting to be revived");
    sandbox.write("s.rhai", &flaky("good"));
    assert_eq!(
        ctl_ok(&sandbox, &["reload"]),
        "~ flaky (env.MODE: \"bad\" -> \"good\")\n"
    );
    let flaky_pid = pid(&pids(&sandbox), "flaky");
    assert_eq!(env_of(flaky_pid, "MODE").as_deref(), Some("good"));
    let status: Value =
        serde_json::from_str(&ctl_ok(&sandbox, &["--json", "status", "flaky"])).unwrap();
    assert_eq!(status["result"]["nodes"]["flaky"]["state"], "running");
}

#[test]
fn a_script_that_creates_a_node_twice_gets_the_answer_create_gives() {
    let sandbox = Sandbox::new("reload-twice-created");
    let sup = supervisor(&sandbox, &[]);
    let before = pids(&sandbox);
    sandbox.write(
        "s.rhai",
        &V1.replace(
            "    print(\"ready\");",
            "    print(`second: ${Supervisor::create(node(\"w1\", \"9\"))}`);",
        ),
    );
    let out = ctl(&sandbox, &["reload"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "= manager\n= w1\n= w2\n");
    assert!(
        out.stderr.contains(
            "warning: Supervisor::create refused: s.rhai:17:34: node with name 'w1' already exists"
        ),
        "{}",
        out.stderr
    );
    sup.expect_stdout("second: node with name 'w1' already exists");
    let after = pids(&sandbox);
    assert_eq!(after, before, "the first create wins, as at a start");
    // The timer's node is a run-time node: the new scripts' timer is refused it.
    sup.expect_stderr("node with name 'timer' already exists");
    assert_eq!(pids(&sandbox), before);
}

#[test]
fn a_zeek_init_past_the_call_limit_changes_nothing() {
    let sandbox = Sandbox::new("reload-call-limit");
    let sup = supervisor(&sandbox, &["--call-time-limit", "0.3"]);
    let before = pids(&sandbox);
    sandbox.write(
        "s.rhai",
        "fn zeek_init() {\n  Supervisor::create(#{name: \"w9\", command: [\"sleep\", \"300\"]});\n  let n = 0;\n  while true { n += 1; }\n}\n",
    );
    let out = ctl(&sandbox, &["reload"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains(
            "s.rhai:1:16: in hook 'zeek_init': stopped after 300ms: a script call may not run longer"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(pids(&sandbox), before);
    // The loop went on: the old program's timer still ticks, and requests are served.
    let ticks = sup.stdout().matches("v1 tick").count();
    sup.expect_stdout_count("v1 tick", ticks + 2);
    assert_eq!(ctl_ok(&sandbox, &["eval", "generation"]), "1\n");
}

#[test]
fn run_time_nodes_are_never_touched() {
    let sandbox = Sandbox::new("reload-run-time");
    let sup = supervisor(&sandbox, &[]);
    ctl_ok(
        &sandbox,
        &["create", r#"{"name": "r1", "command": ["sleep", "300"]}"#],
    );
    ctl_ok(
        &sandbox,
        &[
            "eval",
            r#"Supervisor::create(#{name: "r2", command: ["sleep", "300"]})"#,
        ],
    );
    let before = pids(&sandbox);
    // Scripts that create none of the nodes: only the scripts' own go.
    sandbox.write("s.rhai", "fn zeek_init() {}\n");
    assert_eq!(ctl_ok(&sandbox, &["reload"]), "- manager\n- w1\n- w2\n");
    let after = pids(&sandbox);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        ["r1", "r2", "timer"],
        "{after:?}"
    );
    for name in ["r1", "r2", "timer"] {
        assert_eq!(after[name], before[name], "{name}");
    }
    for name in ["manager", "w1", "w2"] {
        assert!(!alive(pid(&before, name)), "{name}");
    }
    // Scripts that create a run-time node's name are refused it, as create would be.
    sandbox.write(
        "s.rhai",
        "fn zeek_init() {\n  Supervisor::create(#{name: \"r1\", command: [\"sleep\", \"1\"]});\n}\n",
    );
    let out = ctl(&sandbox, &["reload"]);
    assert_eq!(out.code(), Some(0));
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .contains("s.rhai:2:15: node with name 'r1' already exists"),
        "{}",
        out.stderr
    );
    assert_eq!(pids(&sandbox), after);
    drop(sup);
}

#[test]
fn the_repl_reloads_with_a_command() {
    let sandbox = Sandbox::new("reload-repl");
    sandbox.write("s.rhai", V1);
    let mut repl = sandbox.start_with(&["repl", "--no-socket", "s.rhai"], |c| {
        c.stdin(Stdio::piped());
    });
    repl.expect_stdout("v1 started timer pid=");
    let mut input = repl.child.stdin.take().unwrap();
    input
        .write_all(b"fn typed_here() { 7 }\ntyped_here()\n")
        .unwrap();
    repl.expect_stdout("7\n");
    sandbox.write("s.rhai", V2);
    input
        .write_all(b":reload --dry-run\n:reload\ngeneration\n:reload now\n")
        .unwrap();
    let out = repl.expect_stdout("reloaded: 1 created, 1 destroyed, 1 restarted, 1 unchanged\n");
    assert!(
        out.contains(&format!(
            "{PLAN}dry run, nothing changed; the plan: 1 created, 1 destroyed, 1 restarted, 1 unchanged\n"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("{PLAN}reloaded: ")), "{out}");
    repl.expect_stdout("v2 started w3 pid=");
    repl.expect_stdout("\n2\n");
    repl.expect_stderr(":reload takes --dry-run or nothing, not 'now'");
    // What was typed gave way to the scripts.
    input.write_all(b"typed_here()\n").unwrap();
    repl.expect_stderr("Function not found: typed_here");
    drop(input);
    assert_eq!(repl.expect_exit(), Some(0));

    // A REPL started without scripts has nothing to reload.
    let mut bare = sandbox.start_with(&["repl", "--no-socket"], |c| {
        c.stdin(Stdio::piped());
    });
    let mut input = bare.child.stdin.take().unwrap();
    input.write_all(b":reload\n").unwrap();
    drop(input);
    assert_eq!(bare.expect_exit(), Some(0));
    assert!(
        bare.stderr()
            .contains("nothing to reload: no scripts were named on the command line"),
        "{}",
        bare.stderr()
    );
}
