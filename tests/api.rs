//! The `Supervisor` module: record types, the API's answers, Zeek's error strings.

use crate::util::*;

#[test]
fn records_have_getters_setters_printing_and_constructors() {
    let sandbox = Sandbox::new("records");
    sandbox.write(
        "r.rhai",
        r#"
        let c = Supervisor::NodeConfig("w1");
        print(type_of(c));
        print(c.interface == ());
        print(c.scripts.len());
        c.directory = "w1dir";
        c.scripts.push("a.rhai");
        c.cpu_affinity = 1;
        c.env.FOO = "bar";
        c.cluster = #{w1: #{role: Supervisor::WORKER, host: "127.0.0.1", p: 10001}};
        c.cluster.w1.role = Supervisor::PROXY;
        print(c.directory);
        print(c.scripts);
        print(c.env.FOO);
        print(c.cluster.w1.role);
        print(c.cluster.w1.p);
        c.cpu_affinity = ();
        print(c.cpu_affinity == ());
        print(c);
        let m = Supervisor::NodeConfig(#{name: "m", bare_mode: true, stop_timeout: 2});
        print(m.bare_mode);
        print(m.stop_timeout);
        let ep = Supervisor::ClusterEndpoint(#{role: "logger", host: "10.0.0.1", p: "5000/udp", interface: "eth0"});
        print(ep.role == Supervisor::LOGGER);
        print(ep.role != Supervisor::WORKER);
        print(`${ep.p} ${ep.interface} ${type_of(ep)}`);
        print(Supervisor::WORKER);
        print(type_of(Supervisor::WORKER));
        print(Supervisor::status());
        print(type_of(Supervisor::status()));
        "#,
    );
    let out = sandbox.run(&["exec", "r.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let expected = [
        "Supervisor::NodeConfig",
        "true",
        "0",
        "w1dir",
        "[\"a.rhai\"]",
        "bar",
        "Supervisor::PROXY",
        "10001/tcp",
        "true",
        "[name=w1, directory=w1dir, scripts=[a.rhai], env=#{FOO: bar}, cluster=#{w1: [role=Supervisor::PROXY, host=127.0.0.1, p=10001/tcp]}]",
        "true",
        "2.0",
        "true",
        "true",
        "5000/udp eth0 Supervisor::ClusterEndpoint",
        "Supervisor::WORKER",
        "Supervisor::ClusterRole",
        "[nodes=#{}]",
        "Supervisor::Status",
    ];
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        expected,
        "{}",
        out.stderr
    );
}

#[test]
fn bad_fields_are_script_errors_with_positions() {
    let sandbox = Sandbox::new("badfields");
    let cases = [
        (
            "let c = Supervisor::NodeConfig(\"x\");\nc.directory = 5;\n",
            "2:",
            "Supervisor::NodeConfig.directory must be a string or (), not integer",
        ),
        (
            "let c = Supervisor::NodeConfig(\"x\");\nc.nme = 5;\n",
            "2:",
            "nme",
        ),
        (
            "Supervisor::ClusterEndpoint(#{role: \"BOSS\", host: \"h\", p: 1});\n",
            "1:",
            "unknown role 'BOSS'",
        ),
        (
            "Supervisor::ClusterEndpoint(#{role: Supervisor::WORKER, p: 1});\n",
            "1:",
            "Supervisor::ClusterEndpoint needs field 'host'",
        ),
        (
            "Supervisor::NodeConfig(#{name: \"x\", revival_delay: -1});\n",
            "1:",
            "revival_delay must be a number of seconds >= 0",
        ),
        (
            "Supervisor::create(42);\n",
            "1:",
            "Supervisor::create needs a Supervisor::NodeConfig or a map, not integer",
        ),
        (
            "Supervisor::NodeConfig(#{name: \"x\", env: #{A: [1]}});\n",
            "1:",
            "Supervisor::NodeConfig.env.A must be a string, not array",
        ),
        (
            "schedule(-5, || 1);\n",
            "1:",
            "schedule: the delay must be a number of milliseconds >= 0",
        ),
    ];
    for (i, (script, position, message)) in cases.iter().enumerate() {
        let name = format!("case{i}.rhai");
        sandbox.write(&name, script);
        let out = sandbox.run(&["exec", &name]);
        assert_eq!(out.code(), Some(1), "{script}\n{}", out.stderr);
        assert!(
            out.stderr.contains(&format!("{name}:{position}")),
            "{script}\n{}",
            out.stderr
        );
        assert!(out.stderr.contains(message), "{script}\n{}", out.stderr);
    }
}

#[test]
fn zeek_answers_to_bad_requests() {
    let sandbox = Sandbox::new("zeekerrors");
    std::fs::write(sandbox.path("plainfile"), "").unwrap();
    sandbox.write(
        "z.rhai",
        r#"
        fn show(r) { print(`[${r}]`); }
        show(Supervisor::create(#{name: ""}));
        show(Supervisor::create(#{name: "a b"}));
        show(Supervisor::create(#{name: "x", command: ["sleep", "60"]}));
        show(Supervisor::create(#{name: "x", command: ["sleep", "60"]}));
        show(Supervisor::create(#{name: "y", interface: "eth0", pcap_file: "t.pcap"}));
        show(Supervisor::create(#{name: "d", directory: "plainfile/sub", command: ["true"]}));
        show(Supervisor::create(#{name: "c", cpu_affinity: 4096, command: ["true"]}));
        show(Supervisor::create(#{name: "p", command: ["/no/such/program"]}));
        show(Supervisor::create(#{name: "s", scripts: ["no-such-script.rhai"]}));
        print(Supervisor::destroy("nobody"));
        print(Supervisor::restart("nobody"));
        print(Supervisor::status("nobody").nodes.len());
        print(Supervisor::status().nodes.keys());
        print(Supervisor::destroy());
        print(Supervisor::status().nodes.len());
        print(Supervisor::destroy(""));
        terminate();
        "#,
    );
    let out = sandbox.run(&["run", "z.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "[node names must not be an empty string]");
    assert_eq!(lines[1], "[node names must not contain spaces: 'a b']");
    assert_eq!(lines[2], "[]");
    assert_eq!(lines[3], "[node with name 'x' already exists]");
    assert_eq!(
        lines[4],
        "[node with name 'y' has interface and pcap_file set]"
    );
    assert!(
        lines[5].starts_with("[node 'd': cannot create working directory 'plainfile/sub': "),
        "{}",
        lines[5]
    );
    assert!(
        lines[6]
            .starts_with("[node 'c': cpu_affinity 4096: no such core on this machine (available: "),
        "{}",
        lines[6]
    );
    assert_eq!(
        lines[7],
        "[node 'p': cannot start '/no/such/program': no such file or directory]"
    );
    assert_eq!(
        lines[8],
        "[node 's': cannot read script 'no-such-script.rhai': no such file or directory]"
    );
    assert_eq!(
        &lines[9..],
        ["false", "false", "0", "[\"x\"]", "true", "0", "true"]
    );
}

#[test]
fn status_reports_pid_state_and_extensions() {
    let sandbox = Sandbox::new("status");
    sandbox.write(
        "s.rhai",
        r#"
        Supervisor::create(#{name: "a", command: ["sleep", "60"]});
        Supervisor::create(#{name: "b", command: ["sleep", "60"]});
        let s = Supervisor::status("a");
        print(s.nodes.keys());
        let a = s.nodes.a;
        print(`${type_of(a)} ${a.node.name} ${a.state} ${a.restarts} ${a.exit == ()} ${a.pid > 0} ${a.uptime >= 0.0}`);
        print(Supervisor::status().nodes.keys());
        terminate();
        "#,
    );
    let out = sandbox.run(&["run", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "[\"a\"]\nSupervisor::NodeStatus a running 0 true true true\n[\"a\", \"b\"]\n"
    );
}

#[test]
fn a_supervised_node_cannot_use_the_supervisor_api() {
    let sandbox = Sandbox::new("nodeapi");
    sandbox.write(
        "n.rhai",
        r#"
        if Supervisor::is_supervisor() {
            Supervisor::create(#{name: "n1"});
        } else {
            print(`supervised=${Supervisor::is_supervised()} supervisor=${Supervisor::is_supervisor()}`);
            print(`create=[${Supervisor::create(#{name: "x"})}]`);
            print(`destroy=${Supervisor::destroy("n1")} restart=${Supervisor::restart()}`);
            print(`status=${Supervisor::status().nodes.len()}`);
            print(`node=${Supervisor::node().name}`);
            print("END");
        }
        "#,
    );
    let mut sup = sandbox.start(&["run", "n.rhai"]);
    let out = sup.expect_stdout("[n1] END");
    assert!(
        out.contains("[n1] supervised=true supervisor=false"),
        "{out}"
    );
    assert!(
        out.contains("[n1] create=[supervisor mode not enabled]"),
        "{out}"
    );
    assert!(out.contains("[n1] destroy=false restart=false"), "{out}");
    assert!(out.contains("[n1] status=0"), "{out}");
    assert!(out.contains("[n1] node=n1"), "{out}");
    sup.expect_stderr("Supervisor::destroy: supervisor mode not enabled");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}
