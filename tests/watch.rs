//! Watching a supervisor: JSON log lines, `ctl tail -f` (the follow stream of the
//! control socket), shell completions and the manual page.

use serde_json::Value;

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
        for word in ["run", "exec", "repl", "ctl", "tail", "log-format"] {
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
