//! The command line: usage, exit codes, script errors, `exec`.

use crate::util::*;

#[test]
fn help_and_version_exit_zero() {
    let sandbox = Sandbox::new("help");
    let help = sandbox.run(&["--help"]);
    assert_eq!(help.code(), Some(0));
    for command in ["run", "exec", "repl"] {
        assert!(help.stdout.contains(command), "{}", help.stdout);
    }
    let version = sandbox.run(&["--version"]);
    assert_eq!(version.code(), Some(0));
    assert!(
        version.stdout.starts_with("rhai-supervisor "),
        "{}",
        version.stdout
    );
}

#[test]
fn usage_errors_exit_two() {
    let sandbox = Sandbox::new("usage");
    assert_eq!(sandbox.run(&["bogus"]).code(), Some(2));
    assert_eq!(sandbox.run(&["run"]).code(), Some(2));
    assert_eq!(
        sandbox.run(&["exec", "--frobnicate", "x.rhai"]).code(),
        Some(2)
    );
    assert_eq!(sandbox.run(&[]).code(), Some(2));
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let sandbox = Sandbox::new("syntax");
    sandbox.write("bad.rhai", "let x = 1;\nlet y = ;\n");
    let out = sandbox.run(&["run", "bad.rhai"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .contains("rhai-supervisor: error: bad.rhai:2:9: "),
        "{}",
        out.stderr
    );
}

#[test]
fn a_syntax_error_in_any_file_runs_nothing() {
    let sandbox = Sandbox::new("syntax2");
    sandbox.write("a.rhai", "print(\"a ran\");\n");
    sandbox.write("b.rhai", "fn (\n");
    let out = sandbox.run(&["exec", "a.rhai", "b.rhai"]);
    assert_eq!(out.code(), Some(1));
    assert!(!out.stdout.contains("a ran"), "{}", out.stdout);
    assert!(out.stderr.contains("b.rhai:1:"), "{}", out.stderr);
}

#[test]
fn runtime_error_at_start_names_the_key_and_position() {
    let sandbox = Sandbox::new("badkey");
    sandbox.write(
        "key.rhai",
        "let x = 1;\n\nSupervisor::create(#{name: \"a\", dirctory: \"x\"});\n",
    );
    let out = sandbox.run(&["run", "key.rhai"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("key.rhai:3:13: Supervisor::NodeConfig has no field 'dirctory'; did you mean 'directory'?"),
        "{}",
        out.stderr
    );
}

#[test]
fn wrong_type_in_a_function_reports_the_chain() {
    let sandbox = Sandbox::new("badtype");
    sandbox.write(
        "t.rhai",
        "fn mk(n) {\n  Supervisor::NodeConfig(#{name: n, cpu_affinity: \"0\"})\n}\nlet c = mk(\"a\");\n",
    );
    let out = sandbox.run(&["exec", "t.rhai"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("t.rhai:4:9: in function 'mk' at 2:")
            && out.stderr.contains(
                "Supervisor::NodeConfig.cpu_affinity must be an integer or (), not string"
            ),
        "{}",
        out.stderr
    );
}

#[test]
fn missing_script_is_a_clear_error() {
    let sandbox = Sandbox::new("missing");
    let out = sandbox.run(&["run", "nothere.rhai"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .contains("cannot read script 'nothere.rhai': no such file or directory"),
        "{}",
        out.stderr
    );
}

#[test]
fn exec_has_no_role_runs_timers_and_ends() {
    let sandbox = Sandbox::new("exec");
    sandbox.write(
        "e.rhai",
        r#"
        print(`roles ${Supervisor::is_supervisor()} ${Supervisor::is_supervised()}`);
        print(`create: ${Supervisor::create(#{name: "x"})}`);
        print(`destroy: ${Supervisor::destroy("x")}`);
        print(`nodes: ${Supervisor::status().nodes.len()}`);
        let ticks = 0;
        fn zeek_init() { print("init"); }
        fn zeek_done() { print(`done after ${ticks} ticks`); }
        schedule(20, || { ticks += 1; schedule(20, || { ticks += 1; }); });
        "#,
    );
    let out = sandbox.run(&["exec", "e.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let expected = "roles false false\ncreate: supervisor mode not enabled\ndestroy: false\nnodes: 0\ninit\ndone after 2 ticks\n";
    assert_eq!(out.stdout, expected);
    assert!(
        out.stderr
            .contains("Supervisor::create: supervisor mode not enabled"),
        "{}",
        out.stderr
    );
}

#[test]
fn exit_code_comes_from_exit() {
    let sandbox = Sandbox::new("exit");
    sandbox.write("x.rhai", "fn zeek_done() { print(\"not reached\"); }\nprint(\"before\");\nexit(7);\nprint(\"after\");\n");
    let out = sandbox.run(&["exec", "x.rhai"]);
    assert_eq!(out.code(), Some(7));
    assert_eq!(out.stdout, "before\n");
}

#[test]
fn node_outside_a_node_is_a_script_error() {
    let sandbox = Sandbox::new("nodefn");
    sandbox.write("n.rhai", "let n = Supervisor::node();\n");
    let out = sandbox.run(&["exec", "n.rhai"]);
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("n.rhai:1:"), "{}", out.stderr);
    assert!(
        out.stderr.contains("not a supervised process"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_runaway_timer_is_stopped_and_the_loop_goes_on() {
    let sandbox = Sandbox::new("runaway");
    sandbox.write(
        "r.rhai",
        r#"
        fn helper() { undefined_function(); }
        schedule(1, || helper());
        schedule(2, || { while true {} });
        schedule(3, || { fn_that_recurses(0) });
        fn fn_that_recurses(n) { fn_that_recurses(n + 1) }
        schedule(4, || print("still alive"));
        "#,
    );
    let out = sandbox.run(&["exec", "r.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "still alive\n");
    assert!(
        out.stderr
            .contains("Function not found: undefined_function"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("a script call may not run longer"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Stack overflow"), "{}", out.stderr);
}

#[test]
fn globals_persist_across_hook_calls_and_scripts_share_them() {
    let sandbox = Sandbox::new("globals");
    sandbox.write("a.rhai", "let counter = 10;\nfn bump() { 1 }\n");
    sandbox.write(
        "b.rhai",
        "counter += bump();\nfn zeek_init() { counter += 1; }\nfn zeek_done() { counter += 1; print(`counter ${counter}`); }\n",
    );
    let out = sandbox.run(&["exec", "a.rhai", "b.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "counter 13\n");
}

#[test]
fn functions_see_and_change_globals_as_in_zeek() {
    let sandbox = Sandbox::new("fnglobals");
    sandbox.write(
        "g.rhai",
        r#"
        let packets = 0;
        const LIMIT = 3;
        fn count(n) { packets += n; packets }
        fn shadow(packets) { packets * 100 }
        fn try_const() { LIMIT = 5; }
        print(`from top level: ${count(2)}`);
        let later = "defined after the functions";
        fn read_later() { later }
        print(read_later());
        print(`shadowed: ${shadow(7)} global still ${packets}`);
        schedule(1, || { count(1); print(`in a timer: ${packets} of ${LIMIT}`); });
        fn zeek_done() {
            print(`at the end: ${packets}`);
            try_const();
        }
        "#,
    );
    let out = sandbox.run(&["exec", "g.rhai"]);
    assert_eq!(
        out.stdout,
        "from top level: 2\ndefined after the functions\nshadowed: 700 global still 2\nin a timer: 3 of 3\nat the end: 3\n"
    );
    assert!(
        out.stderr.contains("LIMIT"),
        "assigning a constant fails: {}",
        out.stderr
    );
}
