//! `--metrics HOST:PORT`: the exposition read by two real parsers of the format
//! (`promtool check metrics` and the Python client's parser), its figures following
//! the nodes, and clients that send nothing, garbage, huge requests or a thousand
//! connections, none of which holds up supervision.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// A supervisor serving metrics on a free loopback port; and that port.
fn supervisor(sandbox: &Sandbox) -> (Process, u16) {
    sandbox.write("s.rhai", r#"fn zeek_init() { print("ready"); }"#);
    let process = sandbox.start(&["run", "--metrics", "127.0.0.1:0", "s.rhai"]);
    process.expect_stdout("ready");
    let log = process.expect_stderr("/metrics");
    let port = numbers_after(&log, "serving metrics on http://127.0.0.1:")[0] as u16;
    (process, port)
}

fn ctl_ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    let out = sandbox.run(&all);
    assert_eq!(out.code(), Some(0), "ctl {args:?}: {}", out.stderr);
    out.stdout
}

/// Sends `request` and reads until the server closes: the status code, headers and
/// body.
fn http(port: u16, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

fn scrape(port: u16) -> String {
    let (status, head, body) = http(port, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// Makes sure a program the test needs is there, installing the CI's packages once if
/// not; false (after a loud message) only when that is impossible here.
fn have(what: &str, present: impl Fn() -> bool) -> bool {
    if present() {
        return true;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/install-packages");
    let _ = Command::new("sh").arg(script).status();
    if present() {
        return true;
    }
    eprintln!(
        "\n*** SKIPPED: {what} is missing and .ci/install-packages could not install it ***\n"
    );
    false
}

const PYTHON: &str = "/usr/bin/python3";

/// The samples as the Python client's parser reads them: (name, labels, value).
fn python_samples(text: &str) -> Vec<(String, serde_json::Map<String, Value>, f64)> {
    let program = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = Command::new(PYTHON)
        .args(["-c", program])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<(String, serde_json::Map<String, Value>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    parsed
}

fn value(
    samples: &[(String, serde_json::Map<String, Value>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k) == Some(&Value::from(*v)))
        })
        .map(|(_, _, v)| *v)
}

#[test]
fn the_exposition_passes_real_parsers_and_follows_the_nodes() {
    let sandbox = Sandbox::new("metrics");
    let (mut sup, port) = supervisor(&sandbox);
    ctl_ok(
        &sandbox,
        &["create", r#"{"name": "web", "command": ["sleep", "300"]}"#],
    );
    ctl_ok(
        &sandbox,
        &[
            "create",
            r#"{"name": "crash", "command": ["sh", "-c", "exit 3"], "revival_delay": 0.1, "max_restarts": 1}"#,
        ],
    );
    // A name with the characters a label value must escape.
    ctl_ok(
        &sandbox,
        &[
            "create",
            r#"{"name": "we\"ird\\name", "command": ["sleep", "300"]}"#,
        ],
    );
    ctl_ok(&sandbox, &["restart", "web"]);
    assert!(wait_until(PATIENCE, || {
        let text = ctl_ok(&sandbox, &["status"]);
        text.lines()
            .any(|l| l.starts_with("crash ") && l.contains("failed"))
            && text
                .lines()
                .any(|l| l.starts_with("web ") && l.contains("running  "))
    }));
    let text = scrape(port);

    if have("promtool", || {
        Command::new("promtool").arg("--version").output().is_ok()
    }) {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    if have("the Python prometheus_client", || {
        Command::new(PYTHON)
            .args(["-c", "import prometheus_client"])
            .status()
            .is_ok_and(|s| s.success())
    }) {
        let samples = python_samples(&text);
        let node = |name: &'static str| [("node", name)];
        assert_eq!(
            value(&samples, "rhai_supervisor_node_up", &node("web")),
            Some(1.0)
        );
        assert_eq!(
            value(&samples, "rhai_supervisor_node_ready", &node("web")),
            Some(1.0)
        );
        assert_eq!(
            value(
                &samples,
                "rhai_supervisor_node_restarts_total",
                &node("web")
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&samples, "rhai_supervisor_node_up", &node("crash")),
            Some(0.0)
        );
        assert_eq!(
            value(
                &samples,
                "rhai_supervisor_node_state",
                &[("node", "crash"), ("state", "failed")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &samples,
                "rhai_supervisor_node_state",
                &[("node", "crash"), ("state", "running")]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &samples,
                "rhai_supervisor_node_up",
                &[("node", "we\"ird\\name")]
            ),
            Some(1.0),
            "the escaped name reads back"
        );
        // What the node's processes use: from its cgroup or its process tree.
        let cpu = value(
            &samples,
            "rhai_supervisor_node_cpu_seconds_total",
            &node("web"),
        );
        assert!(cpu.is_some_and(|c| c >= 0.0), "{cpu:?}");
        let memory = value(&samples, "rhai_supervisor_node_memory_bytes", &node("web"));
        assert!(memory.is_some_and(|m| m > 0.0), "{memory:?}");
        assert_eq!(
            value(
                &samples,
                "rhai_supervisor_node_memory_bytes",
                &node("crash")
            ),
            None,
            "no process, no usage"
        );
        let states = samples
            .iter()
            .filter(|(n, l, _)| n == "rhai_supervisor_node_state" && l["node"] == "web")
            .count();
        assert_eq!(states, 8, "one sample per state");
        assert!(value(&samples, "process_open_fds", &[]).unwrap() > 3.0);
        assert!(value(&samples, "process_max_fds", &[]).unwrap() >= 1024.0);
        assert!(value(&samples, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
        assert!(value(&samples, "process_virtual_memory_bytes", &[]).unwrap() > 1e6);
        // Whole clock ticks: a supervisor that has used less than one shows 0.
        assert!(value(&samples, "process_cpu_seconds_total", &[]).unwrap() >= 0.0);
        let started = value(&samples, "process_start_time_seconds", &[]).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(started > now - 600.0 && started <= now + 1.0, "{started}");
    }

    // A destroyed node leaves the exposition.
    ctl_ok(&sandbox, &["destroy", "crash"]);
    assert!(!scrape(port).contains("node=\"crash\""));
    // HEAD has the headers only.
    let (status, head, body) = http(port, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""), "{head}");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));

    // Bad addresses are refused before anything starts.
    let bad = sandbox.run(&["run", "--metrics", "nowhere", "s.rhai"]);
    assert_eq!(bad.code(), Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("is not HOST:PORT"), "{}", bad.stderr);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let busy = sandbox.run(&["run", "--no-socket", "--metrics", &address, "s.rhai"]);
    assert_eq!(busy.code(), Some(1), "{}", busy.stderr);
    assert!(
        busy.stderr
            .contains(&format!("cannot serve metrics on '{address}'")),
        "{}",
        busy.stderr
    );
}

/// How long `ctl status` takes to answer.
fn status_takes(sandbox: &Sandbox) -> Duration {
    let asked = Instant::now();
    ctl_ok(sandbox, &["status"]);
    asked.elapsed()
}

#[test]
fn bad_clients_are_bounded_and_never_hold_up_supervision() {
    let sandbox = Sandbox::new("metrics-bad");
    let (mut sup, port) = supervisor(&sandbox);
    ctl_ok(
        &sandbox,
        &["create", r#"{"name": "web", "command": ["sleep", "300"]}"#],
    );
    let baseline = open_fds(sup.pid());

    // One that connects and sends nothing: closed after the request timeout (5 s).
    let connected = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent.set_read_timeout(Some(PATIENCE)).unwrap();

    // Garbage, other methods, other paths: answered at once.
    let (status, _, _) = http(port, b"\x00\x01\x02 hello\r\n\r\n");
    assert_eq!(status, 400);
    let (status, head, _) = http(port, b"DELETE /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    let (status, _, body) = http(port, b"GET /admin HTTP/1.1\r\n\r\n");
    assert_eq!(status, 404);
    assert!(body.contains("/metrics"));

    // A huge request: refused once it is past 8 KiB, without reading the rest.
    let mut huge = TcpStream::connect(("127.0.0.1", port)).unwrap();
    huge.set_read_timeout(Some(PATIENCE)).unwrap();
    huge.write_all(b"GET /metrics HTTP/1.1\r\nX-Filler: ")
        .unwrap();
    let filler = vec![b'a'; 64 * 1024];
    // The server stops reading: writing more fails or fills the socket, never blocks
    // for long (the write side is nonblocking).
    huge.set_nonblocking(true).unwrap();
    for _ in 0..16 {
        if huge.write(&filler).is_err() {
            break;
        }
    }
    huge.set_nonblocking(false).unwrap();
    let mut answer = Vec::new();
    let _ = huge.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "{answer}"
    );

    // A thousand connections at once that send nothing: the supervisor holds at most
    // 64, answers others with 503 or drops them, and still supervises and scrapes.
    let mut crowd = Vec::new();
    for _ in 0..1000 {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        crowd.push(stream);
    }
    assert!(status_takes(&sandbox) < Duration::from_secs(2));
    let text = scrape(port);
    assert!(text.contains("rhai_supervisor_node_up{node=\"web\"} 1"));
    let held = open_fds(sup.pid());
    assert!(
        held <= baseline + 64 + 8,
        "{held} descriptors open, {baseline} before"
    );
    ctl_ok(&sandbox, &["restart", "web"]);
    assert!(wait_until(PATIENCE, || {
        ctl_ok(&sandbox, &["status", "web"]).contains("running")
    }));
    // Each of the crowd is answered with 503, or closed: none is left hanging.
    let mut refused = 0;
    for mut stream in crowd {
        let mut answer = Vec::new();
        match stream.read_to_end(&mut answer) {
            Ok(_) if answer.starts_with(b"HTTP/1.1 503 ") => refused += 1,
            Ok(_) => assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer)),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    eprintln!("a crowd of 1000: {refused} answered 503, the rest closed");

    // The silent one is closed too, without an answer, after about 5 s.
    let mut rest = Vec::new();
    let read = silent.read_to_end(&mut rest);
    assert!(read.is_ok_and(|n| n == 0) || rest.is_empty());
    let waited = connected.elapsed();
    assert!(waited >= Duration::from_secs(4), "closed after {waited:?}");
    assert!(
        wait_until(PATIENCE, || open_fds(sup.pid()) <= baseline + 2),
        "{} descriptors open, {baseline} before",
        open_fds(sup.pid())
    );
    assert!(scrape(port).contains("rhai_supervisor_node_restarts_total{node=\"web\"} 1"));
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}
