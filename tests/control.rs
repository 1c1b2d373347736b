//! The control socket and `ctl`: a real supervisor, a real socket, real nodes; raw
//! clients for what `ctl` would never send.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use rhai_supervisor::control::{Client, Command, Target};
use serde_json::{Value, json};

use crate::util::*;

const SOCKET: &str = "rhai-supervisor.sock";

/// A supervisor script that reports node starts and its end.
const SCRIPT: &str = r#"
let greeting = "hello";
fn node_status(node, pid) { print(`started ${node} pid=${pid}`); }
fn zeek_init() { print("ready"); }
fn zeek_done() { print("zeek_done"); }
"#;

/// Starts `rhai-supervisor run s.rhai` (plus `extra` arguments) and waits until its
/// socket exists.
fn supervisor(sandbox: &Sandbox, extra: &[&str]) -> Process {
    sandbox.write("s.rhai", SCRIPT);
    let mut args = vec!["run", "s.rhai"];
    args.extend_from_slice(extra);
    let process = sandbox.start(&args);
    process.expect_stdout("ready");
    process
}

/// Waits for the socket file to appear.
fn wait_for_socket(path: &Path) {
    assert!(
        wait_until(PATIENCE, || path.exists()),
        "no socket at {}",
        path.display()
    );
}

fn ctl(sandbox: &Sandbox, args: &[&str]) -> Finished {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    sandbox.run(&all)
}

/// `ctl` that must succeed; returns its stdout.
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

/// A client speaking the protocol by hand.
struct Raw {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let stream = UnixStream::connect(path).expect("cannot connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Raw { stream, reader }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn recv(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("no answer in time");
        assert!(n > 0 && line.ends_with('\n'), "connection closed: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn ask(&mut self, request: Value) -> Value {
        self.send(format!("{request}\n").as_bytes());
        self.recv()
    }

    /// Waits until the supervisor closes the connection; returns what came before.
    fn until_closed(&mut self) -> String {
        let mut rest = String::new();
        match self.reader.read_to_string(&mut rest) {
            Ok(_) => rest,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => rest,
            Err(e) => panic!("the connection was not closed in time: {e}"),
        }
    }
}

#[test]
fn every_command_over_ctl() {
    let sandbox = Sandbox::new("ctl-all");
    let mut sup = supervisor(&sandbox, &[]);

    // create: the node starts and the script's node_status hook fires for it.
    let out = ctl_ok(
        &sandbox,
        &[
            "create",
            r#"{"name": "w1", "command": ["sh", "-c", "echo out-line; echo err-line >&2; exec sleep 300"]}"#,
        ],
    );
    assert!(out.starts_with("created node 'w1' (pid "), "{out}");
    let pid = numbers_after(&out, "(pid ")[0];
    assert!(alive(pid));
    sup.expect_stdout(&format!("started w1 pid={pid}"));

    // create from a file.
    sandbox.write("w2.json", r#"{"name": "w2", "command": ["sleep", "300"]}"#);
    let out = ctl_ok(&sandbox, &["create", "@w2.json"]);
    assert!(out.starts_with("created node 'w2'"), "{out}");

    // status: an aligned table, one row per node.
    let table = ctl_ok(&sandbox, &["status"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME  STATE    PID"), "{table}");
    assert!(lines[0].contains("RESTARTS  UPTIME  CPU%"), "{table}");
    assert!(lines[0].ends_with("LAST EXIT"), "{table}");
    assert!(
        lines[1].starts_with(&format!("w1    running  {pid}")),
        "{table}"
    );
    assert!(lines[2].starts_with("w2    running  "), "{table}");
    let state_column = lines[0].find("STATE").unwrap();
    assert!(
        lines
            .iter()
            .all(|l| l[state_column..].starts_with(['S', 'r']))
    );
    let one = ctl_ok(&sandbox, &["status", "w2"]);
    assert_eq!(one.lines().count(), 2, "{one}");

    // status --json: the response, with Zeek's NodeStatus fields.
    let json: Value = serde_json::from_str(&ctl_ok(&sandbox, &["--json", "status", "w1"])).unwrap();
    assert_eq!(json["ok"], true);
    let w1 = &json["result"]["nodes"]["w1"];
    assert_eq!(w1["pid"], pid);
    assert_eq!(w1["state"], "running");
    assert_eq!(w1["node"]["name"], "w1");

    // tail: stdout lines to stdout, stderr lines to stderr.
    // The two pipes are read independently: wait for both lines.
    assert!(wait_until(PATIENCE, || {
        let tail = ctl(&sandbox, &["tail", "w1"]);
        (tail.stdout.as_str(), tail.stderr.as_str()) == ("out-line\n", "err-line\n")
    }));
    let last: Value =
        serde_json::from_str(&ctl_ok(&sandbox, &["--json", "tail", "w1", "-n", "1"])).unwrap();
    assert_eq!(last["result"].as_array().map(Vec::len), Some(1), "{last}");

    // eval: in the supervisor's engine, with the scripts' globals; output comes back.
    let out = ctl_ok(
        &sandbox,
        &["eval", r#"print(greeting); greeting + " world""#],
    );
    assert_eq!(out, "hello\n\"hello world\"\n");
    let out = ctl_ok(&sandbox, &["eval", "Supervisor::status().nodes.len()"]);
    assert_eq!(out, "2\n");
    assert!(
        !sup.stdout().contains("hello\n"),
        "eval's print leaked to the supervisor"
    );

    // restart: a new process; node_status fires again.
    let out = ctl_ok(&sandbox, &["restart", "w1"]);
    assert_eq!(out, "restarted node 'w1'\n");
    let text = sup.expect_stdout_count("started w1 pid=", 2);
    assert_ne!(numbers_after(&text, "started w1 pid=")[1], pid);
    assert_eq!(
        ctl_ok(&sandbox, &["restart", "--all"]),
        "restarted 2 nodes: w1, w2\n"
    );

    // destroy one, then every node.
    assert_eq!(
        ctl_ok(&sandbox, &["destroy", "w1"]),
        "destroyed node 'w1'\n"
    );
    assert!(wait_until(PATIENCE, || !alive(pid)));
    assert_eq!(
        ctl_ok(&sandbox, &["destroy", "--all"]),
        "destroyed node 'w2'\n"
    );
    assert_eq!(
        ctl_ok(&sandbox, &["destroy", "--all"]),
        "there are no nodes\n"
    );
    assert_eq!(ctl_ok(&sandbox, &["status"]).lines().count(), 1);

    // stop: a clean shutdown, and the socket file goes.
    assert_eq!(ctl_ok(&sandbox, &["stop"]), "the supervisor is stopping\n");
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(sup.stdout().contains("zeek_done"), "{}", sup.stdout());
    assert!(!sandbox.path(SOCKET).exists());
}

#[test]
fn ctl_exit_statuses() {
    let sandbox = Sandbox::new("ctl-exit");
    // 3: no supervisor.
    let out = ctl(&sandbox, &["status"]);
    assert_eq!(out.code(), Some(3), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("cannot connect to the supervisor at 'rhai-supervisor.sock'"),
        "{}",
        out.stderr
    );
    // 2: usage, and JSON that is no NodeConfig (checked before anything is sent).
    let usage: &[&[&str]] = &[
        &[],
        &["destroy"],
        &["restart", "w1", "--all"],
        &["tail"],
        &["create", "{not json"],
        &["create", r#"{"name": "a", "dirctory": "x"}"#],
        &["create", "@no-such-file.json"],
        &["frobnicate"],
    ];
    for args in usage {
        let out = ctl(&sandbox, args);
        assert_eq!(out.code(), Some(2), "ctl {args:?}: {}", out.stderr);
    }
    assert!(
        ctl(&sandbox, &["create", r#"{"name": "a", "dirctory": "x"}"#])
            .stderr
            .contains("unknown field `dirctory`")
    );

    let mut sup = supervisor(&sandbox, &[]);
    ctl_ok(
        &sandbox,
        &["create", r#"{"name": "w1", "command": ["sleep", "300"]}"#],
    );
    // 1: the supervisor says no, and why.
    let refusals: &[(&[&str], &str)] = &[
        (&["status", "nope"], "node with name 'nope' does not exist"),
        (&["destroy", "nope"], "node with name 'nope' does not exist"),
        (&["restart", "nope"], "node with name 'nope' does not exist"),
        (&["tail", "nope"], "node with name 'nope' does not exist"),
        (
            &["create", r#"{"name": "w1", "command": ["sleep", "300"]}"#],
            "node with name 'w1' already exists",
        ),
        (
            &["create", r#"{"name": "a b"}"#],
            "node names must not contain spaces: 'a b'",
        ),
        (
            &[
                "create",
                r#"{"name": "x", "command": ["/no/such/program"]}"#,
            ],
            "node 'x': cannot start '/no/such/program': no such file or directory",
        ),
        (
            &["eval", "undefined_function()"],
            "Function not found: undefined_function",
        ),
        (&["eval", "let = ;"], "line 1, column 5"),
    ];
    for (args, why) in refusals {
        let out = ctl(&sandbox, args);
        assert_eq!(out.code(), Some(1), "ctl {args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("rhai-supervisor: error: ") && out.stderr.contains(why),
            "ctl {args:?}: {}",
            out.stderr
        );
    }
    // --json gives the same exit statuses, and the response on stdout.
    let out = ctl(&sandbox, &["--json", "destroy", "nope"]);
    assert_eq!(out.code(), Some(1));
    let response: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(response["ok"], false);
    assert_eq!(response["error"], "node with name 'nope' does not exist");
    // An eval error still returns what was printed before it.
    let out = ctl(&sandbox, &["eval", "print(\"before\"); throw \"boom\";"]);
    assert_eq!((out.code(), out.stdout.as_str()), (Some(1), "before\n"));
    assert!(out.stderr.contains("boom"), "{}", out.stderr);

    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    // 3 again: the socket file is gone with the supervisor.
    assert_eq!(ctl(&sandbox, &["status"]).code(), Some(3));
}

#[test]
fn the_socket_is_private_and_removed_at_shutdown() {
    let sandbox = Sandbox::new("ctl-mode");
    let mut sup = supervisor(&sandbox, &[]);
    let path = sandbox.path(SOCKET);
    let metadata = std::fs::symlink_metadata(&path).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(!path.exists());
}

#[test]
fn a_second_supervisor_on_the_same_socket_is_refused() {
    let sandbox = Sandbox::new("ctl-second");
    let mut first = supervisor(&sandbox, &[]);
    ctl_ok(
        &sandbox,
        &["create", r#"{"name": "w1", "command": ["sleep", "300"]}"#],
    );
    sandbox.write(
        "other.rhai",
        "Supervisor::create(#{name: \"x\", command: [\"sleep\", \"300\"]});\n",
    );
    let second = sandbox.run(&["run", "other.rhai"]);
    assert_eq!(second.code(), Some(1), "{}", second.stderr);
    assert!(
        second.stderr.contains("cannot listen on control socket")
            && second.stderr.contains("another supervisor is serving it"),
        "{}",
        second.stderr
    );
    // It refused before running its script, and the first one still serves.
    assert!(
        !second.stderr.contains("node 'x' started"),
        "{}",
        second.stderr
    );
    assert!(ctl_ok(&sandbox, &["status"]).contains("w1"));
    first.signal(SIGTERM);
    assert_eq!(first.expect_exit(), Some(0));
}

#[test]
fn a_stale_socket_is_replaced_and_other_files_are_not() {
    let sandbox = Sandbox::new("ctl-stale");
    let path = sandbox.path(SOCKET);
    // A socket file nobody listens on, as a killed supervisor leaves it.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut sup = supervisor(&sandbox, &[]);
    sup.expect_stderr("replacing stale control socket");
    assert_eq!(ctl_ok(&sandbox, &["status"]).lines().count(), 1);
    // Killed with SIGKILL, it leaves its socket; the next supervisor takes it over.
    sup.signal(SIGKILL);
    sup.expect_exit();
    assert!(path.exists());
    let mut next = supervisor(&sandbox, &[]);
    ctl_ok(&sandbox, &["status"]);
    next.signal(SIGTERM);
    assert_eq!(next.expect_exit(), Some(0));

    // A file that is not a socket is never removed.
    sandbox.write("regular.sock", "mine\n");
    let out = sandbox.run(&["run", "s.rhai", "--socket", "regular.sock"]);
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("is not a socket"), "{}", out.stderr);
    assert_eq!(sandbox.read("regular.sock"), "mine\n");
}

#[test]
fn socket_flags_and_environment() {
    let sandbox = Sandbox::new("ctl-flags");
    std::fs::create_dir_all(sandbox.path("run")).unwrap();
    // --socket PATH, relative to where the supervisor starts.
    let mut sup = supervisor(&sandbox, &["--socket", "run/control.sock"]);
    assert!(!sandbox.path(SOCKET).exists());
    assert_eq!(ctl(&sandbox, &["status"]).code(), Some(3));
    ctl_ok(&sandbox, &["--socket", "run/control.sock", "status"]);
    ctl_ok(&sandbox, &["status", "--socket", "run/control.sock"]);
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(!sandbox.path("run/control.sock").exists());

    // RHAI_SUPERVISOR_SOCKET, for both ends.
    let env_path = sandbox.path("run/env.sock");
    let env = |c: &mut std::process::Command| {
        c.env("RHAI_SUPERVISOR_SOCKET", sandbox.path("run/env.sock"));
    };
    let mut sup = sandbox.start_with(&["run", "s.rhai"], env);
    sup.expect_stdout("ready");
    wait_for_socket(&env_path);
    let mut status = sandbox.start_with(&["ctl", "status"], env);
    assert_eq!(status.expect_exit(), Some(0), "{}", status.stderr());
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));

    // --no-socket wins over the environment.
    let mut sup = sandbox.start_with(&["run", "s.rhai", "--no-socket"], env);
    sup.expect_stdout("ready");
    assert!(!env_path.exists() && !sandbox.path(SOCKET).exists());
    assert!(!sup.stderr().contains("listening for control clients"));
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));

    // A path too long for a Unix socket is a clear error.
    let long = format!("{}.sock", "x".repeat(120));
    let out = sandbox.run(&["run", "s.rhai", "--socket", &long]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("too long for a Unix socket"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_requests_get_errors_and_the_connection_goes_on() {
    let sandbox = Sandbox::new("ctl-bad");
    let mut sup = supervisor(&sandbox, &[]);
    let mut raw = Raw::connect(&sandbox.path(SOCKET));
    let cases: &[(&str, Value, &str)] = &[
        (
            "this is not json",
            Value::Null,
            "the request is not valid JSON",
        ),
        (
            "[1, 2]",
            Value::Null,
            "a request must be a JSON object, not an array",
        ),
        (r#"{"id": 1}"#, json!(1), "the request has no 'cmd'"),
        (
            r#"{"id": 2, "cmd": "frobnicate"}"#,
            json!(2),
            "unknown command 'frobnicate'",
        ),
        (
            r#"{"id": 3, "cmd": 7}"#,
            json!(3),
            "'cmd' must be a string, not a number",
        ),
        (
            r#"{"id": 4, "cmd": "status", "node": ["w1"]}"#,
            json!(4),
            "'node' must be a string",
        ),
        (
            r#"{"id": 5, "cmd": "destroy"}"#,
            json!(5),
            "destroy needs 'node'",
        ),
        (
            r#"{"id": 6, "cmd": "status", "nod": "w1"}"#,
            json!(6),
            "unknown field 'nod'",
        ),
        (
            r#"{"id": 7, "cmd": "create", "config": {"name": 5}}"#,
            json!(7),
            "invalid node configuration",
        ),
        (
            r#"{"id": 8, "cmd": "create", "config": {"name": "a", "env": {"A": 1}}}"#,
            json!(8),
            "invalid node configuration",
        ),
        (
            r#"{"id": 9, "cmd": "tail", "node": "a", "lines": "all"}"#,
            json!(9),
            "'lines' must be a whole number",
        ),
    ];
    for (line, id, error) in cases {
        raw.send(format!("{line}\n").as_bytes());
        let answer = raw.recv();
        assert_eq!(answer["id"], *id, "{line} -> {answer}");
        assert_eq!(answer["ok"], false, "{line} -> {answer}");
        let text = answer["error"].as_str().unwrap();
        assert!(text.contains(error), "{line} -> {text}");
    }
    // Invalid UTF-8, a NUL byte, blank lines (ignored), CRLF: still one answer each, in order.
    raw.send(b"\xff\xfe\x00\n\n   \r\n{\"id\": \"after\", \"cmd\": \"status\"}\r\n");
    assert_eq!(
        raw.recv()["error"]
            .as_str()
            .map(|e| e.contains("not valid JSON")),
        Some(true)
    );
    let answer = raw.recv();
    assert_eq!(
        (answer["id"].as_str(), answer["ok"].as_bool()),
        (Some("after"), Some(true))
    );
    // Any JSON value is an id, echoed as it came; no id gives null.
    let id = json!({"client": "x", "seq": [1, 2.5, null]});
    assert_eq!(
        raw.ask(json!({"id": id.clone(), "cmd": "status"}))["id"],
        id
    );
    assert_eq!(raw.ask(json!({"cmd": "status"}))["id"], Value::Null);
    // Requests sent ahead (2000, about 100 KB, one write) are answered in order.
    let mut batch = String::new();
    for i in 0..2000 {
        batch.push_str(&json!({"id": i, "cmd": "eval", "code": format!("{i} * 3")}).to_string());
        batch.push('\n');
    }
    raw.send(batch.as_bytes());
    for i in 0..2000 {
        let answer = raw.recv();
        assert_eq!(answer["id"], i);
        assert_eq!(answer["result"], (i * 3).to_string());
    }
    // The supervisor is unharmed.
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn an_oversized_request_is_refused_and_dropped() {
    let sandbox = Sandbox::new("ctl-big");
    let mut sup = supervisor(&sandbox, &[]);
    let path = sandbox.path(SOCKET);
    let mut big = Raw::connect(&path);
    // Two MiB with no newline: refused once the limit is passed, not read to the end.
    let chunk = vec![b'x'; 64 * 1024];
    let writer = {
        let mut stream = big.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..32 {
                if stream.write_all(&chunk).is_err() {
                    return false;
                }
            }
            true
        })
    };
    let answer = big.recv();
    assert_eq!(answer["ok"], false);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("longer than 1048576 bytes"),
        "{answer}"
    );
    big.until_closed();
    let _ = writer.join();
    // A line just under the limit is fine.
    let mut near = Raw::connect(&path);
    let code = format!("\"{}\".len()", "y".repeat(1024 * 1024 - 64));
    let answer = near.ask(json!({"id": 1, "cmd": "eval", "code": code}));
    assert_eq!(answer["result"], (1024 * 1024 - 64).to_string(), "{answer}");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn a_silent_client_is_dropped_and_does_not_hold_up_others() {
    let sandbox = Sandbox::new("ctl-silent");
    let mut sup = supervisor(&sandbox, &["-v"]);
    let path = sandbox.path(SOCKET);
    let started = Instant::now();
    let mut client = Client::connect(&path).unwrap();
    let mut silent = Raw::connect(&path);
    let mut half = Raw::connect(&path);
    half.send(br#"{"id": 1, "cmd": "sta"#);
    // Others are served meanwhile.
    let mut other = Raw::connect(&path);
    for i in 0..3 {
        assert_eq!(other.ask(json!({"id": i, "cmd": "status"}))["ok"], true);
    }
    // Both are dropped after the request timeout (10 s), with nothing sent to them.
    assert_eq!(silent.until_closed(), "");
    assert_eq!(half.until_closed(), "");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    sup.expect_stderr("sent no request in time");
    sup.expect_stderr("did not finish its request line in time");
    // A client that was answered is not held to that timeout.
    assert_eq!(other.ask(json!({"id": 9, "cmd": "status"}))["ok"], true);
    // The Rust client's unused connection was closed too; it connects again by itself.
    assert_eq!(client.eval("1 + 1").unwrap().value, Ok("2".into()));
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn a_client_that_does_not_read_is_dropped() {
    let sandbox = Sandbox::new("ctl-noread");
    let mut sup = supervisor(&sandbox, &["-v"]);
    let path = sandbox.path(SOCKET);
    let mut greedy = Raw::connect(&path);
    // An answer of several MiB that the client never reads.
    greedy.send(br#"{"id": 1, "cmd": "eval", "code": "let s = \"0123456789abcdef\"; while s.len() < 8000000 { s += s; } s"}"#);
    greedy.send(b"\n");
    let mut other = Raw::connect(&path);
    assert_eq!(other.ask(json!({"id": 1, "cmd": "status"}))["ok"], true);
    sup.expect_stderr("does not read its answer");
    assert_eq!(other.ask(json!({"id": 2, "cmd": "status"}))["ok"], true);
    drop(greedy);
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn a_hundred_clients_at_once() {
    let sandbox = Sandbox::new("ctl-many");
    let mut sup = supervisor(&sandbox, &[]);
    let path = sandbox.path(SOCKET);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(100));
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut raw = Raw::connect(&path);
                barrier.wait();
                for round in 0..3 {
                    let id = json!([i, round]);
                    let answer = raw.ask(json!({"id": id.clone(), "cmd": "eval", "code": format!("{i} * 1000 + {round}")}));
                    assert_eq!(answer["id"], id);
                    assert_eq!(answer["result"], (i * 1000 + round).to_string());
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client failed");
    }
    // A client that leaves mid-request loses its answer, nothing else: the node it
    // asked for is created, and the next client is served.
    let mut leaver = Raw::connect(&path);
    leaver.send(
        br#"{"id": 1, "cmd": "create", "config": {"name": "orphan", "command": ["sleep", "300"]}}"#,
    );
    leaver.send(b"\n");
    drop(leaver);
    assert!(wait_until(PATIENCE, || ctl(
        &sandbox,
        &["status", "orphan"]
    )
    .code()
        == Some(0)));
    sup.expect_stdout("started orphan pid=");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn the_client_api_for_programs() {
    let sandbox = Sandbox::new("ctl-api");
    let mut sup = supervisor(&sandbox, &[]);
    let mut client = Client::connect(sandbox.path(SOCKET)).unwrap();
    let evaluation = client.eval("print(\"a\"); print(greeting); 6 * 7").unwrap();
    assert_eq!(evaluation.output, "a\nhello\n");
    assert_eq!(evaluation.value, Ok("42".into()));
    let evaluation = client.eval("nope").unwrap();
    assert!(
        evaluation
            .value
            .unwrap_err()
            .contains("Variable not found: nope")
    );
    // Functions and globals defined by one eval are there for the next, and for hooks.
    client
        .eval("let seen = []; fn node_status(node, pid) { seen.push(node); }")
        .unwrap();
    let mut config = rhai_supervisor::NodeConfig::named("w1");
    config.command = Some(vec!["sleep".into(), "300".into()]);
    let response = client.call(Command::Create(Box::new(config))).unwrap();
    assert!(response.ok, "{response:?}");
    assert!(wait_until(PATIENCE, || client.eval("seen").unwrap().value
        == Ok("[\"w1\"]".into())));
    let response = client
        .call(Command::Destroy(Target::Node("w2".into())))
        .unwrap();
    assert_eq!(
        response.error.as_deref(),
        Some("node with name 'w2' does not exist")
    );
    assert!(client.call(Command::Destroy(Target::All)).unwrap().ok);
    client.call(Command::Stop).unwrap();
    assert_eq!(sup.expect_exit(), Some(0));
    let error = client.eval("1").unwrap_err().to_string();
    assert!(error.contains("supervisor"), "{error}");
}

#[test]
fn only_the_same_user_or_root_may_connect() {
    if !is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let sandbox = Sandbox::new("ctl-peer");
    let mut sup = supervisor(&sandbox, &[]);
    let path = sandbox.path(SOCKET);
    let as_nobody = |c: &mut std::process::Command| {
        std::os::unix::process::CommandExt::uid(c, 65534);
        std::os::unix::process::CommandExt::gid(c, 65534);
    };
    // The file's mode keeps other users out...
    let mut denied = sandbox.start_with(&["ctl", "status"], as_nobody);
    assert_eq!(denied.expect_exit(), Some(3));
    assert!(
        denied.stderr().contains("permission denied"),
        "{}",
        denied.stderr()
    );
    // ...and so does the supervisor's own check when the mode is widened.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut refused = sandbox.start_with(&["ctl", "status"], as_nobody);
    assert_eq!(refused.expect_exit(), Some(1));
    assert!(
        refused
            .stderr()
            .contains("permission denied: only uid 0 and root may control this supervisor"),
        "{}",
        refused.stderr()
    );
    sup.expect_stderr("refused a control client of uid 65534");
    ctl_ok(&sandbox, &["status"]);
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|v| v.split_whitespace().nth(1) == Some("0"))
            })
        })
        .unwrap_or(false)
}
