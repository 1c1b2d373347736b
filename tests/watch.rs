//! Watching a supervisor: JSON log lines, `ctl tail -f` (the follow stream of the
//! control socket), shell completions and the manual page.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use rhai_supervisor::control::{Client, Command, StreamEvent, Topic};
use serde_json::{Value, json};

use crate::util::*;

/// Every line of `stderr` as a JSON object; panics on a line that is not one.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}\n{stderr}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn is_rfc3339_utc(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

#[test]
fn json_log_lines_parse_and_name_their_node() {
    let sandbox = Sandbox::new("jsonlog");
    sandbox.write(
        "s.rhai",
        r#"
        fn node_status(node, pid) {
            if Supervisor::status(node).nodes[node].restarts == 1 { terminate(); }
        }
        Supervisor::create(#{name: "w1", revival_delay: 0, command: ["sh", "-c", "exit 3"]});
        print(Supervisor::create(#{name: "w1", command: ["true"]}));
        "#,
    );
    let out = sandbox.run(&["--log-format", "json", "run", "--no-socket", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let lines = json_lines(&out.stderr);
    assert!(lines.len() >= 3, "{}", out.stderr);
    for line in &lines {
        let ts = line["ts"].as_str().unwrap_or_default();
        assert!(is_rfc3339_utc(ts), "ts {ts:?} in {line}");
        let level = line["level"].as_str().unwrap_or_default();
        assert!(
            ["error", "warn", "info", "debug", "trace"].contains(&level),
            "{line}"
        );
        let msg = line["msg"].as_str().expect("msg is a string");
        if msg.contains("node 'w1'") {
            assert_eq!(line["node"], "w1", "{line}");
        }
    }
    let exited = lines
        .iter()
        .find(|l| l["msg"].as_str().unwrap().contains("exited with code 3"))
        .unwrap_or_else(|| panic!("no exit logged:\n{}", out.stderr));
    assert_eq!(exited["level"], "warn");
    assert_eq!(exited["node"], "w1");
    let started = lines
        .iter()
        .filter(|l| l["msg"].as_str().unwrap().starts_with("node 'w1' started"))
        .count();
    assert_eq!(started, 2, "{}", out.stderr);
    // What the script printed is not a log line: it stays on stdout as it was.
    assert!(
        out.stdout.contains("node with name 'w1' already exists"),
        "{}",
        out.stdout
    );
}

#[test]
fn json_logs_without_a_node_have_no_node_and_text_stays_the_default() {
    let sandbox = Sandbox::new("jsonlog-plain");
    sandbox.write("s.rhai", "terminate();\n");
    let json = sandbox.run(&["run", "--log-format", "json", "s.rhai"]);
    assert_eq!(json.code(), Some(0), "{}", json.stderr);
    let lines = json_lines(&json.stderr);
    let listening = lines
        .iter()
        .find(|l| {
            l["msg"]
                .as_str()
                .unwrap()
                .starts_with("listening for control clients")
        })
        .unwrap_or_else(|| panic!("{}", json.stderr));
    assert_eq!(listening["level"], "info");
    assert!(listening.get("node").is_none(), "{listening}");

    let text = sandbox.run(&["run", "s.rhai"]);
    assert_eq!(text.code(), Some(0), "{}", text.stderr);
    assert!(
        text.stderr.contains("listening for control clients") && !text.stderr.contains("{\"ts\""),
        "{}",
        text.stderr
    );

    let bad = sandbox.run(&["--log-format", "xml", "run", "s.rhai"]);
    assert_eq!(bad.code(), Some(2));
    assert!(bad.stderr.contains("xml"), "{}", bad.stderr);
}

#[test]
fn the_repl_logs_json_too() {
    let sandbox = Sandbox::new("jsonlog-repl");
    let mut repl = sandbox.start_with(&["repl", "--no-socket", "--log-format", "json"], |c| {
        c.stdin(std::process::Stdio::piped());
    });
    {
        use std::io::Write;
        let mut stdin = repl.child.stdin.take().unwrap();
        stdin
            .write_all(b"Supervisor::create(#{name: \"r1\", command: [\"sleep\", \"60\"]});\n")
            .unwrap();
    }
    assert_eq!(repl.expect_exit(), Some(0), "{}", repl.stderr());
    let lines = json_lines(&repl.stderr());
    assert!(
        lines
            .iter()
            .any(|l| l["node"] == "r1"
                && l["msg"].as_str().unwrap().starts_with("node 'r1' started")),
        "{}",
        repl.stderr()
    );
}

#[test]
fn completions_for_each_shell_name_the_subcommands() {
    let sandbox = Sandbox::new("completions");
    for shell in ["bash", "zsh", "fish"] {
        let out = sandbox.run(&["completions", shell]);
        assert_eq!(out.code(), Some(0), "{shell}: {}", out.stderr);
        assert!(out.stdout.len() > 500, "{shell}: {}", out.stdout);
        for word in ["run", "exec", "repl", "ctl", "tail", "log-format", "follow"] {
            assert!(out.stdout.contains(word), "{shell} lacks {word}");
        }
        assert!(
            !out.stdout.contains("__node") && !out.stdout.contains("__stem"),
            "{shell} offers a hidden subcommand"
        );
    }
    // The bash script is valid bash.
    let script = sandbox.write(
        "rhai-supervisor.bash",
        &sandbox.run(&["completions", "bash"]).stdout,
    );
    let checked = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status();
    if let Ok(status) = checked {
        assert!(status.success(), "bash -n refused the completion script");
    }
    let bad = sandbox.run(&["completions", "tcsh"]);
    assert_eq!(bad.code(), Some(2));
}

#[test]
fn the_man_page_renders() {
    let sandbox = Sandbox::new("man");
    let out = sandbox.run(&["man"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let page = out.stdout;
    assert!(page.contains(".TH rhai-supervisor 1"), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "no {section}:\n{page}");
    }
    for word in ["run", "ctl", "completions", "log\\-format"] {
        assert!(page.contains(word), "no {word}:\n{page}");
    }
    assert!(!page.contains("__node"));
}

/// A supervisor whose script prints `ready`, serving the default socket in `sandbox`.
fn supervisor(sandbox: &Sandbox) -> Process {
    sandbox.write("s.rhai", r#"fn zeek_init() { print("ready"); }"#);
    let process = sandbox.start(&["run", "s.rhai"]);
    process.expect_stdout("ready");
    process
}

fn socket(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox.path("rhai-supervisor.sock")
}

fn ctl_ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    let out = sandbox.run(&all);
    assert_eq!(out.code(), Some(0), "ctl {args:?}: {}", out.stderr);
    out.stdout
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("cannot run mkfifo");
    assert!(made.success());
}

/// Creates node `name` in directory `name`, a shell that prints `first`, then for each
/// line written to `NAME/in.fifo` prints `got LINE` on stdout and `err LINE` on stderr.
fn echo_node(sandbox: &Sandbox, name: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(sandbox.path(name)).unwrap();
    let fifo = sandbox.path(&format!("{name}/in.fifo"));
    mkfifo(&fifo);
    let config = json!({
        "name": name, "directory": name,
        "command": ["sh", "-c",
            "echo first; exec 3<>in.fifo; while read line <&3; do echo \"got $line\"; echo \"err $line\" >&2; done"],
    });
    ctl_ok(sandbox, &["create", &config.to_string()]);
    let mut client = Client::connect(socket(sandbox)).unwrap();
    assert!(
        wait_until(PATIENCE, || {
            let tail = client
                .call(Command::Tail {
                    node: name.into(),
                    lines: None,
                })
                .unwrap();
            tail.result.is_some_and(|r| r.to_string().contains("first"))
        }),
        "node {name} never said first"
    );
    fifo
}

/// Writes `text` into the FIFO (the node holds it open, so this does not block).
fn feed_fifo(fifo: &Path, text: &str) {
    let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
    pipe.write_all(text.as_bytes()).unwrap();
}

#[test]
fn tail_follow_prints_the_tail_then_new_lines_for_two_followers_until_destroyed() {
    let sandbox = Sandbox::new("tail-f");
    let mut sup = supervisor(&sandbox);
    let fifo = echo_node(&sandbox, "w");
    let mut first = sandbox.start(&["ctl", "tail", "-f", "w"]);
    let mut second = sandbox.start(&["ctl", "tail", "--follow", "w", "-n", "1"]);
    // The kept tail comes first: once it is printed, the follower is subscribed.
    first.expect_stdout("first\n");
    second.expect_stdout("first\n");
    feed_fifo(&fifo, "one\ntwo\n");
    for follower in [&first, &second] {
        let out = follower.expect_stdout("got two\n");
        assert_eq!(out, "first\ngot one\ngot two\n");
        let err = follower.expect_stderr("err two\n");
        assert!(err.contains("err one\nerr two\n"), "{err}");
    }
    feed_fifo(&fifo, "three\n");
    first.expect_stdout("got three\n");
    second.expect_stdout("got three\n");
    ctl_ok(&sandbox, &["destroy", "w"]);
    for follower in [&mut first, &mut second] {
        assert_eq!(follower.expect_exit(), Some(0), "{}", follower.stderr());
        assert!(
            follower
                .stderr()
                .ends_with("rhai-supervisor: node 'w' was destroyed\n"),
            "{}",
            follower.stderr()
        );
    }
    // An unknown node is refused at once.
    let missing = sandbox.run(&["ctl", "tail", "-f", "nope"]);
    assert_eq!(missing.code(), Some(1));
    assert!(
        missing
            .stderr
            .contains("node with name 'nope' does not exist"),
        "{}",
        missing.stderr
    );
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn a_follow_ends_when_the_supervisor_stops_or_goes_away() {
    let sandbox = Sandbox::new("tail-f-stop");
    let mut sup = supervisor(&sandbox);
    echo_node(&sandbox, "s");
    let mut json = sandbox.start(&["ctl", "--json", "tail", "-f", "s"]);
    let first = json.expect_stdout("\n");
    let response: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(response["ok"], true);
    assert_eq!(
        response["result"][0],
        json!({"stream": "stdout", "line": "first"})
    );
    ctl_ok(&sandbox, &["stop"]);
    assert_eq!(json.expect_exit(), Some(0), "{}", json.stderr());
    let last: Value = serde_json::from_str(json.stdout().lines().last().unwrap()).unwrap();
    assert_eq!(
        last,
        json!({"id": response["id"], "end": "the supervisor is stopping"})
    );
    assert_eq!(sup.expect_exit(), Some(0));

    // Killed: the follower says it lost the supervisor (exit status 3).
    let sup = supervisor(&sandbox);
    echo_node(&sandbox, "k");
    let mut follower = sandbox.start(&["ctl", "tail", "-f", "k"]);
    follower.expect_stdout("first\n");
    sup.signal(SIGKILL);
    assert_eq!(follower.expect_exit(), Some(3), "{}", follower.stderr());
    assert!(
        follower.stderr().contains("lost the connection"),
        "{}",
        follower.stderr()
    );
}

/// A raw client of the control socket.
fn raw(sandbox: &Sandbox) -> (UnixStream, BufReader<UnixStream>) {
    let stream = UnixStream::connect(socket(sandbox)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

fn recv(reader: &mut BufReader<UnixStream>) -> Value {
    let mut line = String::new();
    let n = reader.read_line(&mut line).expect("no line in time");
    assert!(n > 0, "the connection closed");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn a_slow_follower_is_told_how_many_lines_it_missed_where_it_missed_them() {
    let sandbox = Sandbox::new("tail-f-missed");
    let mut sup = supervisor(&sandbox);
    std::fs::create_dir_all(sandbox.path("m")).unwrap();
    let gate = sandbox.path("m/go.fifo");
    mkfifo(&gate);
    let config = json!({"name": "m", "directory": "m",
        "command": ["sh", "-c", "read go < go.fifo; seq 1 100000; exec sleep 300"]});
    ctl_ok(&sandbox, &["create", &config.to_string()]);
    let (mut stream, mut reader) = raw(&sandbox);
    stream
        .write_all(
            b"{\"id\":\"f\",\"cmd\":\"follow\",\"topic\":\"output\",\"node\":\"m\",\"lines\":0}\n",
        )
        .unwrap();
    let response = recv(&mut reader);
    assert_eq!(response, json!({"id": "f", "ok": true, "result": []}));
    // The node writes 100,000 lines while this follower reads nothing.
    feed_fifo(&gate, "go\n");
    let mut client = Client::connect(socket(&sandbox)).unwrap();
    assert!(wait_until(PATIENCE, || {
        let tail = client
            .call(Command::Tail {
                node: "m".into(),
                lines: Some(1),
            })
            .unwrap();
        tail.result == Some(json!([{"stream": "stdout", "line": "100000"}]))
    }));
    ctl_ok(&sandbox, &["destroy", "m"]);
    // Now it reads: each line in order, and where lines are missing, how many.
    let mut next = 1;
    let mut missed = 0;
    loop {
        let line = recv(&mut reader);
        assert_eq!(line["id"], "f");
        if let Some(item) = line.get("item") {
            assert_eq!(item["stream"], "stdout");
            assert_eq!(item["line"], next.to_string(), "after {missed} missed");
            next += 1;
        } else if let Some(n) = line.get("missed") {
            let n = n.as_u64().unwrap();
            assert!(n > 0);
            missed += n;
            next += n;
        } else {
            assert_eq!(line["end"], "node 'm' was destroyed");
            break;
        }
    }
    assert_eq!(next, 100_001, "every line is either received or counted");
    assert!(missed > 0, "a follower that read nothing missed nothing?");
    assert!(missed < 100_000);
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    proc_status(pid, "VmRSS")
        .and_then(|v| v.trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_follower_that_never_reads_is_dropped_and_slows_nothing() {
    let sandbox = Sandbox::new("tail-f-stuck");
    let mut sup = supervisor(&sandbox);
    ctl_ok(
        &sandbox,
        &[
            "create",
            // Written by the supervisor (to /dev/null, which is never rotated), not printed:
            // this test's pipe would be the bottleneck, not the supervisor.
            r#"{"name": "flood", "stdout_file": "/dev/null", "output_max_bytes": 1000000000,
                "command": ["yes", "a line of output that keeps coming and coming"]}"#,
        ],
    );
    // One follower that never reads, and one that does.
    let (mut stuck, mut stuck_reader) = raw(&sandbox);
    stuck
        .write_all(
            b"{\"id\":1,\"cmd\":\"follow\",\"topic\":\"output\",\"node\":\"flood\",\"lines\":0}\n",
        )
        .unwrap();
    let mut client = Client::connect(socket(&sandbox)).unwrap();
    let (response, stream) = client
        .follow(Topic::Output {
            node: "flood".into(),
            lines: Some(0),
        })
        .unwrap();
    assert!(response.ok, "{response:?}");
    let mut reading = stream.unwrap();
    let reader = std::thread::spawn(move || {
        let mut items = 0u64;
        for event in &mut reading {
            match event {
                Ok(StreamEvent::Item(_)) => items += 1,
                Ok(StreamEvent::Missed(_)) => {}
                Ok(StreamEvent::End(_)) | Err(_) => break,
            }
        }
        items
    });
    // While the stuck follower's buffers are full, the supervisor answers at once and
    // does not grow.
    let early = rss_kib(sup.pid());
    let mut peak = early;
    let mut slowest = Duration::ZERO;
    let mut status = Client::connect(socket(&sandbox)).unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let asked = Instant::now();
        let answer = status.call(Command::status(None)).unwrap();
        assert!(answer.ok);
        slowest = slowest.max(asked.elapsed());
        peak = peak.max(rss_kib(sup.pid()));
    }
    eprintln!(
        "stuck follower: status took at most {slowest:?}; RSS {early} KiB early, {peak} KiB at most"
    );
    assert!(slowest < Duration::from_secs(5), "status took {slowest:?}");
    assert!(peak < 64 * 1024, "the supervisor grew to {peak} KiB");
    // After the write timeout (10 s) with nothing taken, it is disconnected.
    sup.expect_stderr("dropping a follower");
    assert!(
        sup.stderr().contains("took nothing of its stream in time"),
        "{}",
        sup.stderr()
    );
    let mut rest = Vec::new();
    match stuck_reader.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(
        rest.len() < 4 * 1024 * 1024,
        "{} bytes were queued",
        rest.len()
    );
    // The other follower went on reading all along, and ends with the node.
    ctl_ok(&sandbox, &["destroy", "flood"]);
    let items = reader.join().unwrap();
    assert!(items > 1000, "the reading follower got {items} lines");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}
