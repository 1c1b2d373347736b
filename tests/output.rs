//! Node output: nothing lost or reordered, bounded, files and rotation.

use crate::util::*;

#[test]
fn a_hundred_thousand_lines_arrive_in_order_before_the_revival() {
    let sandbox = Sandbox::new("100k");
    sandbox.write(
        "s.rhai",
        r#"
        let next = 0;
        let disorder = 0;
        fn stdout_hook(node, line) {
            if parse_int(line) != next { disorder += 1; }
            next += 1;
            false
        }
        fn node_status(node, pid) {
            if Supervisor::status(node).nodes[node].restarts == 1 {
                print(`before revival: ${next} lines, ${disorder} out of order`);
                terminate();
            }
        }
        Supervisor::create(#{name: "burst", revival_delay: 0,
            command: ["sh", "-c", "seq 0 99999"]});
        "#,
    );
    let out = sandbox.run(&["run", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("before revival: 100000 lines, 0 out of order"),
        "{}",
        out.stdout
    );
}

#[test]
fn default_printing_keeps_every_line_in_order() {
    let sandbox = Sandbox::new("print100k");
    sandbox.write(
        "s.rhai",
        r#"
        fn node_status(node, pid) {
            if Supervisor::status(node).nodes[node].restarts == 1 { terminate(); }
        }
        Supervisor::create(#{name: "p", revival_delay: 0, command: ["seq", "1", "50000"]});
        "#,
    );
    let out = sandbox.run(&["run", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let numbers: Vec<u32> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("[p] "))
        .map(|n| n.parse().unwrap())
        .collect();
    // The first run printed 1..=50000 in order (the second may have begun too).
    assert!(numbers.len() >= 50000, "{} lines", numbers.len());
    assert_eq!(numbers[..50000], (1..=50000).collect::<Vec<u32>>()[..]);
}

#[test]
fn a_last_line_without_newline_and_grandchild_output_arrive() {
    let sandbox = Sandbox::new("partial");
    sandbox.write(
        "s.rhai",
        r#"
        fn stdout_hook(node, line) { print(`${node} said '${line}'`); false }
        Supervisor::create(#{name: "partial", revival_delay: 100, command: ["printf", "first\nno newline"]});
        Supervisor::create(#{name: "family", revival_delay: 100,
            command: ["sh", "-c", "(sleep 0.2; echo from the grandchild) & echo from the child; wait"]});
        "#,
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("partial said 'no newline'");
    sup.expect_stdout("family said 'from the child'");
    sup.expect_stdout("family said 'from the grandchild'");
    assert!(sup.stdout().contains("partial said 'first'\n"));
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn bytes_that_are_not_utf8_are_replaced_and_long_lines_are_cut() {
    let sandbox = Sandbox::new("bytes");
    sandbox.write(
        "s.rhai",
        r#"
        fn stdout_hook(node, line) {
            if node == "bin" { print(`bin: ${line}`); }
            if node == "long" { print(`long: ${line.len()}`); }
            false
        }
        Supervisor::create(#{name: "bin", revival_delay: 100, command: ["printf", "ok \\377\\376 end\\n"]});
        Supervisor::create(#{name: "long", revival_delay: 100,
            command: ["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x; echo; echo done"]});
        "#,
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("bin: ok \u{FFFD}\u{FFFD} end");
    let out = sup.expect_stdout("long: 4\n");
    assert!(
        out.contains("long: 65536\nlong: 65536\nlong: 65536\nlong: 3392\nlong: 4\n"),
        "{out}"
    );
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn a_hook_that_throws_is_logged_once_and_its_lines_are_printed() {
    let sandbox = Sandbox::new("throwing");
    sandbox.write(
        "s.rhai",
        r#"
        fn stdout_hook(node, line) { throw `cannot handle ${line}`; }
        Supervisor::create(#{name: "t", revival_delay: 100, command: ["sh", "-c", "echo one; echo two; echo three"]});
        "#,
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("[t] three");
    let out = sup.stdout();
    assert!(out.contains("[t] one\n[t] two\n[t] three\n"), "{out}");
    let err = sup.expect_stderr("in hook 'stdout_hook'");
    assert_eq!(err.matches("in hook 'stdout_hook'").count(), 1, "{err}");
    assert!(err.contains("cannot handle one"), "{err}");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn rotation_keeps_n_backups_with_no_line_lost_or_split() {
    let sandbox = Sandbox::new("rotate");
    sandbox.write(
        "s.rhai",
        r#"
        let r = Supervisor::create(#{name: "r", directory: "logs", stdout_file: "out.log",
            output_max_bytes: 1000, output_backups: 3,
            command: ["sh", "-c", "i=0; while [ $i -lt 1000 ]; do printf 'line %04d\n' $i; i=$((i+1)); done; echo finished >&2; sleep 300"]});
        print(`create: [${r}]`);
        "#,
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("create: []");
    sup.expect_stderr("[r] finished");
    assert!(wait_until(PATIENCE, || sandbox
        .read("logs/out.log")
        .ends_with("line 0999\n")));
    // 10-byte lines, 1000-byte files: the current file and 3 backups hold lines 600..999.
    let mut kept = String::new();
    for name in ["out.log.3", "out.log.2", "out.log.1", "out.log"] {
        let text = sandbox.read(&format!("logs/{name}"));
        assert!(text.len() <= 1000, "{name} is {} bytes", text.len());
        assert!(text.ends_with('\n'), "{name} ends mid-line");
        kept.push_str(&text);
    }
    assert!(!sandbox.path("logs/out.log.4").exists());
    let expected: String = (600..1000).map(|i| format!("line {i:04}\n")).collect();
    assert_eq!(kept, expected);
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(sandbox.path("logs/out.log"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o600);
    assert!(
        !sup.stdout().contains("[r] line"),
        "rotated output is not printed"
    );
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn an_output_file_that_cannot_be_opened_fails_create() {
    let sandbox = Sandbox::new("badfile");
    sandbox.write(
        "s.rhai",
        r#"
        print(Supervisor::create(#{name: "a", stdout_file: "missing/dir/out.log", command: ["true"]}));
        print(Supervisor::create(#{name: "b", stderr_file: "missing/err.log", output_max_bytes: 10, command: ["true"]}));
        print(Supervisor::create(#{name: "c", output_max_bytes: 10, command: ["true"]}));
        print(Supervisor::create(#{name: "d", stdout_file: "x", output_backups: -1, command: ["true"]}));
        print(Supervisor::status().nodes.len());
        terminate();
        "#,
    );
    let out = sandbox.run(&["run", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("node 'a': cannot open stdout_file '")
            && lines[0].ends_with("out.log': no such file or directory"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("node 'b': cannot open '")
            && lines[1].ends_with("err.log': no such file or directory"),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        "node 'c': output_max_bytes needs stdout_file or stderr_file to rotate"
    );
    assert_eq!(
        lines[3],
        "node 'd': output_backups must be between 0 and 1000, not -1"
    );
    assert_eq!(lines[4], "0");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: i32) -> u64 {
    proc_status(pid, "VmRSS")
        .and_then(|v| v.trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_flooding_node_does_not_grow_the_supervisor() {
    let sandbox = Sandbox::new("flood");
    sandbox.write(
        "s.rhai",
        r#"
        let seen = 0;
        fn stdout_hook(node, line) {
            seen += 1;
            if seen % 100000 == 0 { print(`seen ${seen}`); }
            false
        }
        Supervisor::create(#{name: "flood", command: ["yes", "a line of output that keeps coming and coming and coming"]});
        "#,
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("seen 100000");
    let early = rss_kib(sup.pid());
    let mut peak = early;
    for n in [300_000, 500_000, 700_000] {
        sup.expect_stdout(&format!("seen {n}\n"));
        peak = peak.max(rss_kib(sup.pid()));
    }
    // The node writes far faster than a Rhai hook reads: only the bounded queue and the
    // pipe hold what waits. 16 MiB of queue plus the engine fit well in 64 MiB.
    eprintln!("flood: supervisor RSS {early} KiB early, {peak} KiB at most");
    assert!(
        peak < 64 * 1024,
        "supervisor grew to {peak} KiB (from {early} KiB)"
    );
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

/// The text of a rotated file, gunzipped when its name ends in `.gz`.
fn read_rotated(path: &std::path::Path) -> String {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else {
        return String::new();
    };
    let mut text = String::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{} is not gzip: {e}", path.display()));
    } else {
        std::io::BufReader::new(file)
            .read_to_string(&mut text)
            .unwrap();
    }
    text
}

/// Files in `dir` that are rotated but not yet compressed (staged, or being written).
fn compressing(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".rotating-") || n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Everything kept of `name` in `dir`, oldest first: `name.N.gz` … `name.1.gz`, `name`.
/// Panics if a backup number is missing in between or a file is not compressed.
fn all_rotated(dir: &std::path::Path, name: &str) -> (String, u32) {
    let mut count = 0;
    while dir.join(format!("{name}.{}.gz", count + 1)).exists() {
        count += 1;
    }
    assert!(
        !dir.join(format!("{name}.{}", count + 1)).exists(),
        "an uncompressed backup of {name}"
    );
    let mut text = String::new();
    for n in (1..=count).rev() {
        let part = read_rotated(&dir.join(format!("{name}.{n}.gz")));
        assert!(part.ends_with('\n'), "{name}.{n}.gz ends mid-line");
        text.push_str(&part);
    }
    text.push_str(&read_rotated(&dir.join(name)));
    (text, count)
}

#[test]
fn rotation_by_size_with_compression_keeps_every_line_once_in_order() {
    let sandbox = Sandbox::new("rotate-gzip");
    sandbox.write(
        "s.rhai",
        r#"
        let r = Supervisor::create(#{name: "z", directory: "logs", stdout_file: "out.log",
            output_max_bytes: 100000, output_backups: 100, output_compress: true,
            command: ["sh", "-c", "seq 1 200000; echo finished >&2; exec sleep 300"]});
        print(`create: [${r}]`);
        "#,
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("create: []");
    sup.expect_stderr("[z] finished");
    let logs = sandbox.path("logs");
    assert!(
        wait_until(PATIENCE, || sandbox
            .read("logs/out.log")
            .ends_with("\n200000\n")
            && compressing(&logs).is_empty()),
        "still compressing: {:?}",
        compressing(&logs)
    );
    let (text, backups) = all_rotated(&logs, "out.log");
    // 1,288,895 bytes in files of at most 100,000: 12 rotated files and the current one.
    assert_eq!(backups, 12);
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert!(
        text == expected,
        "lines lost, repeated or split across rotations"
    );
    for n in 1..=backups {
        let size = std::fs::metadata(logs.join(format!("out.log.{n}.gz")))
            .unwrap()
            .len();
        assert!(
            size < 100_000 / 2,
            "out.log.{n}.gz is {size} bytes: not compressed"
        );
    }
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn rotation_by_time_cuts_a_continuous_writer_between_lines() {
    let sandbox = Sandbox::new("rotate-time");
    sandbox.write(
        "s.rhai",
        r#"
        print(Supervisor::create(#{name: "t", directory: "logs", stdout_file: "out.log",
            output_rotate_every: "hourly", output_backups: 1000, output_compress: true,
            command: ["sh", "-c", "i=0; while :; do echo \"line $i\"; i=$((i+1)); done"]}));
        "#,
    );
    // The hour shortened to 200 ms (for tests only), so that a few pass.
    let mut sup = sandbox.start_with(&["run", "--no-socket", "s.rhai"], |c| {
        c.env("RHAI_SUPERVISOR_TEST_ROTATE_PERIOD_MS", "200");
    });
    sup.expect_stdout("\n");
    assert!(
        wait_until(PATIENCE, || sandbox.path("logs/out.log.4.gz").exists()),
        "no fourth rotation\n{}",
        sup.stderr()
    );
    // Shutdown stops the writer mid-stream and waits for the compression of what is
    // rotated.
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0), "{}", sup.stderr());
    let logs = sandbox.path("logs");
    assert!(compressing(&logs).is_empty(), "{:?}", compressing(&logs));
    let (text, backups) = all_rotated(&logs, "out.log");
    assert!(backups >= 4, "{backups} backups");
    let mut expected = 0;
    for line in text.lines() {
        assert_eq!(line, format!("line {expected}"), "after {expected} lines");
        expected += 1;
    }
    assert!(text.ends_with('\n'));
    assert!(expected > 0);
}

#[test]
fn wrong_rotation_settings_are_refused_naming_the_field() {
    let sandbox = Sandbox::new("rotate-bad");
    sandbox.write(
        "s.rhai",
        r#"
        print(Supervisor::create(#{name: "a", stdout_file: "x", output_rotate_every: "weekly", command: ["true"]}));
        print(Supervisor::create(#{name: "b", output_rotate_every: "daily", command: ["true"]}));
        print(Supervisor::create(#{name: "c", stdout_file: "x", output_compress: true, command: ["true"]}));
        try { Supervisor::create(#{name: "d", stdout_file: "x", output_compress: "yes"}); }
        catch (e) { print(e); }
        try { Supervisor::create(#{name: "e", stdout_file: "x", output_rotate_every: 3600}); }
        catch (e) { print(e); }
        print(Supervisor::status().nodes.len());
        terminate();
        "#,
    );
    let out = sandbox.run(&["run", "--no-socket", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        r#"node 'a': output_rotate_every must be "hourly" or "daily", not "weekly""#
    );
    assert_eq!(
        lines[1],
        "node 'b': output_rotate_every needs stdout_file or stderr_file to rotate"
    );
    assert_eq!(
        lines[2],
        "node 'c': output_compress needs output_max_bytes or output_rotate_every (it compresses rotated files)"
    );
    assert!(lines[3].contains("output_compress"), "{}", lines[3]);
    assert!(lines[4].contains("output_rotate_every"), "{}", lines[4]);
    assert_eq!(lines[5], "0");
}
