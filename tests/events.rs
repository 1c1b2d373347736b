//! `ctl events`: the supervisor's changes as they happen, for people and as JSON, to
//! several followers at once; a follower that falls behind is told how many events it
//! missed; one that never reads is dropped and costs the supervisor nothing lasting.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

/// A supervisor that logs at debug level (so a test sees each follower subscribe) and
/// lets a control `eval` run for 20 s (tests create thousands of nodes in one).
fn supervisor(sandbox: &Sandbox, env: &[(&str, &str)]) -> Process {
    sandbox.write("s.rhai", r#"fn zeek_init() { print("ready"); }"#);
    let process = sandbox.start_with(&["-v", "--call-time-limit", "20", "run", "s.rhai"], |c| {
        c.envs(env.iter().copied());
    });
    process.expect_stdout("ready");
    process
}

fn ctl_ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    let out = sandbox.run(&all);
    assert_eq!(out.code(), Some(0), "ctl {args:?}: {}", out.stderr);
    out.stdout
}

/// Waits until the supervisor has subscribed `count` followers of its events in all.
fn subscribed(sup: &Process, count: usize) {
    let needle = "follows the supervisor's events";
    let seen = sup
        .stderr
        .wait_for(PATIENCE, |t| t.matches(needle).count() >= count);
    assert!(seen.is_some(), "not {count} followers:\n{}", sup.stderr());
}

/// Creates `count` nodes that wait for a node that never comes (no process each), then
/// destroys them: two events per node.
fn churn(sandbox: &Sandbox, prefix: &str, count: usize) {
    let code = format!(
        r#"for i in 0..{count} {{
            Supervisor::create(#{{name: `{prefix}${{i}}`, command: ["true"], depends_on: ["never"]}});
        }}
        for i in 0..{count} {{ Supervisor::destroy(`{prefix}${{i}}`); }}"#
    );
    ctl_ok(sandbox, &["eval", &code]);
}

/// `HH:MM:SS rest`: the rest, after checking the time.
fn after_clock(line: &str) -> &str {
    let (clock, rest) = line.split_at(9);
    let bytes = clock.as_bytes();
    assert!(
        bytes[2] == b':' && bytes[5] == b':' && bytes[8] == b' ',
        "no time of day in {line:?}"
    );
    rest
}

#[test]
fn events_tell_each_change_to_several_followers_until_the_supervisor_stops() {
    let sandbox = Sandbox::new("events");
    let mut sup = supervisor(&sandbox, &[]);
    let mut text = sandbox.start(&["ctl", "events"]);
    let mut json = sandbox.start(&["ctl", "events", "--json"]);
    subscribed(&sup, 2);
    ctl_ok(
        &sandbox,
        &[
            "create",
            r#"{"name": "crash", "command": ["sh", "-c", "exit 3"], "revival_delay": 0.2, "max_restarts": 1}"#,
        ],
    );
    text.expect_stdout("crash failed");
    ctl_ok(
        &sandbox,
        &["create", r#"{"name": "web", "command": ["sleep", "300"]}"#],
    );
    ctl_ok(&sandbox, &["restart", "web"]);
    text.expect_stdout("web started");
    text.expect_stdout_count("web started", 2);
    ctl_ok(&sandbox, &["destroy", "web"]);
    text.expect_stdout("web destroyed");
    ctl_ok(&sandbox, &["stop"]);
    for follower in [&mut text, &mut json] {
        assert_eq!(follower.expect_exit(), Some(0), "{}", follower.stderr());
    }
    assert_eq!(sup.expect_exit(), Some(0));

    // For a person: the local time, the node, what happened.
    let printed = text.stdout();
    let lines: Vec<&str> = printed.lines().map(after_clock).collect();
    let crash: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("crash "))
        .copied()
        .collect();
    let pids = numbers_after(&printed, "crash started (pid ");
    assert_eq!(pids.len(), 2, "{lines:?}");
    assert_eq!(crash[0], "crash created");
    assert_eq!(crash[1], format!("crash started (pid {})", pids[0]));
    assert_eq!(crash[2], format!("crash ready (pid {})", pids[0]));
    assert!(
        crash[3].starts_with(&format!(
            "crash exited with code 3 (pid {}) after ",
            pids[0]
        )),
        "{crash:?}"
    );
    assert_eq!(crash[4], "crash reviving in 0.2 s");
    assert_eq!(
        crash[5],
        format!("crash started (pid {}), restart 1", pids[1])
    );
    assert!(
        crash[7].starts_with("crash exited with code 3"),
        "{crash:?}"
    );
    assert_eq!(
        crash[8],
        "crash failed: it was revived 1 times within 60.0 s"
    );
    assert_eq!(crash.last(), Some(&"crash destroyed"), "at shutdown");
    let web: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("web "))
        .copied()
        .collect();
    assert!(web[3].starts_with("web restarting (pid "), "{web:?}");
    assert!(web[4].starts_with("web killed by SIGTERM"), "{web:?}");
    assert!(web[5].ends_with(", restart 1"), "{web:?}");
    assert!(web[7].starts_with("web stopping (pid "), "{web:?}");
    assert_eq!(web.last(), Some(&"web destroyed"));
    assert_eq!(
        text.stderr(),
        "rhai-supervisor: the supervisor is stopping\n"
    );

    // For programs: one object per event, ts, node and event first, then the end.
    let objects: Vec<Value> = json
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(
        objects.last(),
        Some(&json!({"end": "the supervisor is stopping"}))
    );
    let first_line = json.stdout().lines().next().unwrap().to_string();
    assert!(
        first_line.starts_with("{\"ts\":\"")
            && first_line.contains("\",\"node\":\"crash\",\"event\":\"created\""),
        "{first_line}"
    );
    let kinds: Vec<&str> = objects
        .iter()
        .filter(|o| o["node"] == "crash")
        .map(|o| o["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "started",
            "ready",
            "exited",
            "reviving",
            "started",
            "ready",
            "exited",
            "failed",
            "destroyed"
        ]
    );
    let exited = objects
        .iter()
        .find(|o| o["node"] == "crash" && o["event"] == "exited")
        .unwrap();
    assert_eq!(exited["code"], 3);
    assert_eq!(exited["pid"], pids[0]);
    assert!(exited["uptime"].as_f64().unwrap() >= 0.0);
    assert_eq!(exited["state"], "reviving");
    let reviving = objects.iter().find(|o| o["event"] == "reviving").unwrap();
    assert_eq!(reviving["delay"], 0.2);
    let killed = objects
        .iter()
        .find(|o| o["node"] == "web" && o["event"] == "exited")
        .unwrap();
    assert_eq!(killed["signal"], "SIGTERM");
    assert_eq!(
        killed.get("code"),
        None,
        "fields that do not apply are left out"
    );
    for object in &objects[..objects.len() - 1] {
        let ts = object["ts"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
    }

    // No supervisor: exit status 3.
    let none = sandbox.run(&["ctl", "events"]);
    assert_eq!(none.code(), Some(3), "{}", none.stderr);
    let ssh = sandbox.run(&["ctl", "--ssh", "h1", "events"]);
    assert_eq!(ssh.code(), Some(2), "{}", ssh.stderr);
}

/// A raw client of the control socket.
fn raw(sandbox: &Sandbox) -> (UnixStream, BufReader<UnixStream>) {
    let stream = UnixStream::connect(sandbox.path("rhai-supervisor.sock")).unwrap();
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
fn a_slow_follower_is_told_how_many_events_it_missed() {
    let sandbox = Sandbox::new("events-missed");
    let mut sup = supervisor(&sandbox, &[]);
    ctl_ok(
        &sandbox,
        &[
            "create",
            r#"{"name": "before", "command": ["sleep", "300"]}"#,
        ],
    );
    let (mut stream, mut reader) = raw(&sandbox);
    stream
        .write_all(b"{\"id\":\"e\",\"cmd\":\"follow\",\"topic\":\"events\"}\n")
        .unwrap();
    // The response is the status of every node: where each one stands.
    let response = recv(&mut reader);
    assert_eq!(response["ok"], true, "{response}");
    assert_eq!(response["result"]["nodes"]["before"]["state"], "running");
    // 6,000 events while this follower reads nothing: more than its buffers hold. The
    // loop publishes them after the eval's answer and before it answers the next
    // request.
    churn(&sandbox, "n", 3000);
    ctl_ok(&sandbox, &["status"]);
    let mut items = 0u64;
    let mut missed = 0u64;
    let mut marked = false;
    loop {
        let line = recv(&mut reader);
        assert_eq!(line["id"], "e");
        if let Some(item) = line.get("item") {
            if item["node"] == "after" {
                break;
            }
            let node = item["node"].as_str().unwrap();
            assert!(node.starts_with('n'), "{item}");
            assert!(
                item["event"] == "created" || item["event"] == "destroyed",
                "{item}"
            );
            items += 1;
        } else if let Some(n) = line.get("missed") {
            assert!(n.as_u64().unwrap() > 0);
            missed += n.as_u64().unwrap();
            // The count is the last of what was queued: from here on there is room.
            if !marked {
                marked = true;
                ctl_ok(
                    &sandbox,
                    &[
                        "create",
                        r#"{"name": "after", "command": ["sleep", "300"]}"#,
                    ],
                );
            }
        } else {
            panic!("the stream ended: {line}");
        }
    }
    assert!(missed > 0, "a follower that read nothing missed nothing?");
    assert!(items > 0);
    assert_eq!(items + missed, 6000, "every event is received or counted");
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
fn a_follower_that_never_reads_is_dropped_and_the_supervisor_stays_small() {
    let sandbox = Sandbox::new("events-stuck");
    // A write timeout of 1 s instead of 10 s, so the drop is seen soon.
    let mut sup = supervisor(
        &sandbox,
        &[("RHAI_SUPERVISOR_TEST_WRITE_TIMEOUT_MS", "1000")],
    );
    let (mut stuck, mut stuck_reader) = raw(&sandbox);
    stuck
        .write_all(b"{\"id\":1,\"cmd\":\"follow\",\"topic\":\"events\"}\n")
        .unwrap();
    let mut reading = sandbox.start(&["ctl", "events", "--json"]);
    subscribed(&sup, 2);
    let early = rss_kib(sup.pid());
    let mut peak = early;
    let mut rounds = 0;
    let started = Instant::now();
    // Events keep coming while the stuck follower reads nothing, until it is dropped.
    while !sup.stderr().contains("dropping a follower") {
        assert!(started.elapsed() < PATIENCE, "{}", sup.stderr());
        churn(&sandbox, &format!("r{rounds}-"), 500);
        rounds += 1;
        peak = peak.max(rss_kib(sup.pid()));
    }
    eprintln!("stuck events follower: {rounds} rounds; RSS {early} KiB early, {peak} KiB at most");
    assert!(peak < 64 * 1024, "the supervisor grew to {peak} KiB");
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
    // The reading follower went on all along, and is still served.
    ctl_ok(
        &sandbox,
        &["create", r#"{"name": "last", "command": ["sleep", "300"]}"#],
    );
    reading.expect_stdout("\"node\":\"last\",\"event\":\"created\"");
    let answered = Instant::now();
    ctl_ok(&sandbox, &["status"]);
    assert!(answered.elapsed() < Duration::from_secs(5));
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert_eq!(reading.expect_exit(), Some(0));
}

#[test]
fn an_applied_reload_is_told_after_what_it_did() {
    let sandbox = Sandbox::new("events-reload");
    let mut sup = supervisor(&sandbox, &[]);
    let mut text = sandbox.start(&["ctl", "events"]);
    subscribed(&sup, 1);
    sandbox.write(
        "s.rhai",
        r#"fn zeek_init() {
            Supervisor::create(#{name: "extra", command: ["sleep", "300"]});
        }"#,
    );
    ctl_ok(&sandbox, &["reload"]);
    let printed = text.expect_stdout("reload applied");
    let lines: Vec<&str> = printed.lines().map(after_clock).collect();
    let created = lines.iter().position(|l| *l == "extra created").unwrap();
    let applied = lines
        .iter()
        .position(|l| *l == "reload applied: 1 created, 0 destroyed, 0 restarted, 0 unchanged")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(created < applied, "{lines:?}");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert_eq!(text.expect_exit(), Some(0));
}
