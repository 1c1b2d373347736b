//! Running real services (SPEC §7): nodes as another user with its groups, home and
//! umask; environment files; resource limits in `/proc/PID/limits`; a cgroup per node
//! (an OOM kill with its reason, a pids limit, a descendant that escaped its process
//! group and environment stopped with its node, nothing left behind); what nodes use
//! in `status`; the supervisor's own systemd notifications; PostgreSQL as user
//! postgres, ready by `notify`, with a dependent that queries it.
//!
//! Tests that need root (changing user, cgroups) say so and pass when not root; those
//! that need cgroups also when the machine has none the supervisor may use. Nodes run as
//! daemon and postgres, never as nobody, whose processes `reliability` counts.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

fn ctl(sandbox: &Sandbox, args: &[&str]) -> Finished {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    sandbox.run(&all)
}

/// `ctl --json status [NAME]` as JSON, once the supervisor answers.
fn status_of(sandbox: &Sandbox, name: Option<&str>) -> Value {
    let mut args = vec!["--json", "status"];
    args.extend(name);
    let mut out = None;
    assert!(
        wait_until(PATIENCE, || {
            let answer = ctl(sandbox, &args);
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

fn status(sandbox: &Sandbox) -> Value {
    status_of(sandbox, None)
}

/// Waits until `node` has a pid in state `running`; returns it.
fn running_pid(sandbox: &Sandbox, sup: &Process, node: &str) -> i32 {
    let mut last = Value::Null;
    let up = wait_until(PATIENCE, || {
        last = status(sandbox);
        last[node]["state"] == "running" && last[node]["pid"].is_i64()
    });
    assert!(
        up,
        "{node} never ran: {last:#}\n--- stderr:\n{}",
        sup.stderr()
    );
    last[node]["pid"].as_i64().unwrap() as i32
}

/// The supervisor of a test whose nodes have cgroups: stopped with SIGTERM, and waited
/// for, when the test ends (by a panic too), so that it stops every process in its
/// nodes' cgroups and removes them, which a SIGKILL would leave to the next supervisor.
struct Supervised(Process);

impl std::ops::Deref for Supervised {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Ok(None) = self.0.child.try_wait() {
            self.0.signal(SIGTERM);
            let _ = self.0.wait_exit(PATIENCE);
        }
    }
}

/// Python itself, not a shim in `PATH` that forks (which a pids limit would refuse).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped, it needs root");
    true
}

/// The directory of `pid`'s cgroup that holds `controller` (v1), or its v2 cgroup.
fn cgroup_dir(pid: i32, controller: &str) -> Option<PathBuf> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let v1 = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _ = parts.next()?;
        let list = parts.next()?;
        let path = parts.next()?;
        list.split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    });
    let find_mount = |v2: bool| {
        mounts.lines().find_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let _ = after.next();
            let options = after.next().unwrap_or("");
            let fields: Vec<&str> = before.split(' ').collect();
            let ok = if v2 {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup" && options.split(',').any(|o| o == controller)
            };
            ok.then(|| (fields[3].to_string(), PathBuf::from(fields[4])))
        })
    };
    let (path, (root, point)) = match v1 {
        Some(path) if path != "/" => (path, find_mount(false)?),
        _ => {
            let path = own.lines().find_map(|l| l.strip_prefix("0::"))?.to_string();
            (path, find_mount(true)?)
        }
    };
    let relative = path
        .strip_prefix(root.trim_end_matches('/'))
        .unwrap_or(&path)
        .trim_start_matches('/')
        .to_string();
    Some(point.join(relative))
}

/// Whether a create's answer says that no cgroup can be had here.
fn no_cgroups(answer: &str) -> bool {
    answer.contains("needs a cgroup, and none can be made here")
        || answer.contains("controller, which")
}

/// Every directory named `rhai-supervisor.PID` (for the supervisor `pid`) under the
/// cgroup mounts, and every cgroup below them.
fn supervisor_cgroups(pid: i32) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let name = format!("rhai-supervisor.{pid}");
    fn walk(dir: &Path, name: &str, depth: usize, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            if entry.file_name().to_str() == Some(name) {
                found.push(path.clone());
                if let Ok(children) = std::fs::read_dir(&path) {
                    for child in children.flatten() {
                        if child.file_type().is_ok_and(|t| t.is_dir()) {
                            found.push(child.path());
                        }
                    }
                }
            } else if depth < 4 {
                walk(&path, name, depth + 1, found);
            }
        }
    }
    walk(Path::new("/sys/fs/cgroup"), &name, 0, &mut found);
    found
}

/// The node cgroups (below the `rhai-supervisor.PID` directories) of supervisor `pid`.
fn node_cgroups(pid: i32) -> Vec<PathBuf> {
    let base = format!("rhai-supervisor.{pid}");
    supervisor_cgroups(pid)
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()) != Some(base.as_str()))
        .collect()
}

/// A `/proc/PID/limits` row: (soft, hard).
fn limit(pid: i32, row: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no {row} in {limits}"));
    let mut values = line[row.len()..].split_whitespace();
    (
        values.next().unwrap().to_string(),
        values.next().unwrap().to_string(),
    )
}

fn env_of(pid: i32, key: &str) -> Option<String> {
    proc_env(pid)
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// The owner (uid, gid) of a file.
fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

/// The uid, gid and groups of a user, from `id`.
fn ids(user: &str) -> (u32, u32, Vec<u32>) {
    let id = |flag: &str| {
        let out = std::process::Command::new("id")
            .args([flag, user])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut groups: Vec<u32> = id("-G")
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    groups.sort_unstable();
    (id("-u").parse().unwrap(), id("-g").parse().unwrap(), groups)
}

#[test]
fn a_command_node_runs_as_another_user_with_its_groups_home_and_umask() {
    if skip_unless_root("a_command_node_runs_as_another_user") {
        return;
    }
    let sandbox = Sandbox::new("user-command");
    sandbox.write(
        "s.rhai",
        r#"
        Supervisor::create(#{name: "pg", user: "postgres", umask: 0o027, directory: "pg",
            stdout_file: "out.log", command: ["sh", "-c", "touch made; exec sleep 300"]});
        Supervisor::create(#{name: "gid", user: "postgres", group: "nogroup",
            env: #{HOME: "/srv/elsewhere"}, command: ["sleep", "300"]});
        Supervisor::create(#{name: "num", user: 1, group: 1, command: ["sleep", "300"]});
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    let (uid, gid, mut groups) = ids("postgres");
    let pid = running_pid(&sandbox, &sup, "pg");
    let uids = proc_status(pid, "Uid").unwrap();
    assert_eq!(uids, format!("{uid}\t{uid}\t{uid}\t{uid}"));
    let gids = proc_status(pid, "Gid").unwrap();
    assert_eq!(gids, format!("{gid}\t{gid}\t{gid}\t{gid}"));
    let mut seen: Vec<u32> = proc_status(pid, "Groups")
        .unwrap()
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    seen.sort_unstable();
    groups.dedup();
    assert_eq!(seen, groups, "the user's supplementary groups");
    assert_eq!(proc_status(pid, "Umask").as_deref(), Some("0027"));
    let home = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            let fields: Vec<&str> = l.split(':').collect();
            (fields[0] == "postgres").then(|| fields[5].to_string())
        })
        .unwrap();
    assert_eq!(env_of(pid, "HOME"), Some(home));
    assert_eq!(env_of(pid, "USER").as_deref(), Some("postgres"));
    assert_eq!(env_of(pid, "LOGNAME").as_deref(), Some("postgres"));
    // The directory made for it, its output file and what it makes are its own.
    assert_eq!(owner(&sandbox.path("pg")), (uid, gid));
    assert_eq!(owner(&sandbox.path("pg/out.log")), (uid, gid));
    assert!(wait_until(PATIENCE, || sandbox.path("pg/made").exists()));
    assert_eq!(owner(&sandbox.path("pg/made")), (uid, gid));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(sandbox.path("pg/made"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "made under umask 027");

    // group: another group than the user's; env wins over the user database.
    let pid = running_pid(&sandbox, &sup, "gid");
    let nogroup = ids("nobody").1;
    assert_eq!(
        proc_status(pid, "Gid").unwrap().split('\t').next(),
        Some(nogroup.to_string().as_str())
    );
    assert_eq!(env_of(pid, "HOME").as_deref(), Some("/srv/elsewhere"));
    // Numbers work as well as names.
    let pid = running_pid(&sandbox, &sup, "num");
    assert!(proc_status(pid, "Uid").unwrap().starts_with("1\t"));
    assert_eq!(env_of(pid, "USER").as_deref(), Some("daemon"));
}

#[test]
fn a_script_node_runs_as_another_user_and_the_stem_stays_root() {
    if skip_unless_root("a_script_node_runs_as_another_user") {
        return;
    }
    for stem in [true, false] {
        let sandbox = Sandbox::new("user-script");
        sandbox.write(
            "s.rhai",
            r#"
            fn zeek_init() {
                if Supervisor::is_supervisor() {
                    Supervisor::create(#{name: "sn", user: "daemon", umask: 0o077});
                } else {
                    print(`node runs as ${getenv("USER")} in ${getenv("HOME")}`);
                }
            }
            "#,
        );
        let sup = sandbox.start_with(&["run", "s.rhai"], |c| {
            if !stem {
                c.env("RHAI_SUPERVISOR_NO_STEM", "1");
            }
        });
        sup.expect_stdout("[sn] node runs as daemon in /usr/sbin");
        let pid = running_pid(&sandbox, &sup, "sn");
        assert!(proc_status(pid, "Uid").unwrap().starts_with("1\t"));
        assert_eq!(proc_status(pid, "Umask").as_deref(), Some("0077"));
        // The stem (the supervisor's other child) is still root.
        for child in children_of(sup.pid()) {
            if child != pid {
                assert!(
                    proc_status(child, "Uid").unwrap().starts_with("0\t"),
                    "child {child} of the supervisor"
                );
            }
        }
        sup.signal(SIGTERM);
    }
}

#[test]
fn unknown_users_and_a_supervisor_that_is_not_root_are_refused() {
    let sandbox = Sandbox::new("user-refused");
    sandbox.write(
        "s.rhai",
        r#"
        print(Supervisor::create(#{name: "db", user: "postgress", command: ["true"]}));
        print(Supervisor::create(#{name: "g", group: "no-such-group", command: ["true"]}));
        print(Supervisor::create(#{name: "u", user: "root", command: ["true"]}));
        print(Supervisor::create(#{name: "m", limits: #{memory: "64M"}, command: ["true"]}));
        print(`nodes: ${Supervisor::status().nodes.len()}`);
        terminate();
        "#,
    );
    let out = sandbox.run(&["run", "--no-socket", "s.rhai"]);
    assert!(
        out.stdout.contains("node 'db': no such user 'postgress'"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("node 'g': no such group 'no-such-group'"),
        "{}",
        out.stdout
    );
    if !is_root() {
        eprintln!("unknown_users_and_a_supervisor_that_is_not_root_are_refused: root part skipped");
        return;
    }
    // The same supervisor, not run by root (as daemon: tests/reliability.rs counts the
    // processes of nobody).
    let (daemon, daemon_group, _) = ids("daemon");
    std::os::unix::fs::chown(&sandbox.dir, Some(daemon), Some(daemon_group)).unwrap();
    let out = sandbox.run_with(&["run", "--no-socket", "s.rhai"], |c| {
        use std::os::unix::process::CommandExt;
        c.uid(daemon).gid(daemon_group);
    });
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0], "node 'db': no such user 'postgress'",
        "{}",
        out.stdout
    );
    assert!(
        lines[2].starts_with("node 'u': user: changing user needs root"),
        "{}",
        out.stdout
    );
    assert!(
        lines[3].starts_with("node 'm': limits.memory needs a cgroup, and none can be made here: "),
        "{}",
        out.stdout
    );
    assert_eq!(lines[4], "nodes: 0", "{}", out.stdout);
}

#[test]
fn environment_files_in_every_syntax_read_at_every_start_with_env_winning() {
    let sandbox = Sandbox::new("env-file");
    sandbox.write(
        "app.env",
        "# settings of the app\n\nPLAIN=plain value # a comment\nexport EXPORTED=yes\n\
         SINGLE='single $HOME # kept'\nDOUBLE=\"line one\\nline two\"\nOVERRIDDEN=from the file\n\
         MULTI='first\nsecond'\nEMPTY=\n",
    );
    sandbox.write(
        "s.rhai",
        r#"
        Supervisor::create(#{name: "app", env_file: "app.env", env: #{OVERRIDDEN: "from env"},
            directory: "app", command: ["sh", "-c", "env > env.txt; exec sleep 300"]});
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    let pid = running_pid(&sandbox, &sup, "app");
    assert_eq!(env_of(pid, "PLAIN").as_deref(), Some("plain value"));
    assert_eq!(env_of(pid, "EXPORTED").as_deref(), Some("yes"));
    assert_eq!(
        env_of(pid, "SINGLE").as_deref(),
        Some("single $HOME # kept")
    );
    assert_eq!(env_of(pid, "DOUBLE").as_deref(), Some("line one\nline two"));
    assert_eq!(env_of(pid, "MULTI").as_deref(), Some("first\nsecond"));
    assert_eq!(env_of(pid, "EMPTY").as_deref(), Some(""));
    assert_eq!(env_of(pid, "OVERRIDDEN").as_deref(), Some("from env"));
    // Read again at the next start.
    sandbox.write("app.env", "PLAIN=changed\n");
    assert_eq!(ctl(&sandbox, &["restart", "app"]).code(), Some(0));
    let mut new_pid = pid;
    assert!(wait_until(PATIENCE, || {
        new_pid = running_pid(&sandbox, &sup, "app");
        new_pid != pid
    }));
    assert_eq!(env_of(new_pid, "PLAIN").as_deref(), Some("changed"));
    assert_eq!(env_of(new_pid, "EXPORTED"), None);
    // A file broken before a revival: a failed start, logged with file and line, and
    // tried again with the backoff.
    sandbox.write("app.env", "PLAIN=fine\nthis is not an entry\n");
    kill(new_pid, SIGKILL);
    sup.expect_stderr(
        "cannot revive node 'app': env_file 'app.env' line 2: expected KEY=VALUE, found \"this is not an entry\"",
    );
    sandbox.write("app.env", "PLAIN=mended\n");
    let mended = wait_until(PATIENCE, || {
        let nodes = status(&sandbox);
        nodes["app"]["pid"]
            .as_i64()
            .is_some_and(|p| env_of(p as i32, "PLAIN").as_deref() == Some("mended"))
    });
    assert!(mended, "{}", sup.stderr());
}

#[test]
fn bad_environment_files_are_refused_by_create_with_file_and_line() {
    let sandbox = Sandbox::new("env-file-bad");
    sandbox.write("bad.env", "GOOD=1\n\n2BAD=x\n");
    sandbox.write("quote.env", "A='open\nB=2\n");
    std::fs::create_dir_all(sandbox.path("conf.d")).unwrap();
    sandbox.write(
        "s.rhai",
        r#"
        for f in ["bad.env", "quote.env", "conf.d", "missing.env"] {
            print(Supervisor::create(#{name: "x", env_file: f, command: ["true"]}));
        }
        print(Supervisor::create(#{name: "x", env_file: 3, command: ["true"]}));
        terminate();
        "#,
    );
    let out = sandbox.run(&["run", "--no-socket", "s.rhai"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "node 'x': env_file 'bad.env' line 3: \"2BAD\" is not a variable name (letters, digits, '_' and '.', not starting with a digit)",
            "node 'x': env_file 'quote.env' line 1: A: the ' quote is not closed",
            "node 'x': cannot read env_file 'conf.d': it is a directory",
            "node 'x': cannot read env_file 'missing.env': no such file or directory",
        ],
        "{}",
        out.stdout
    );
    assert_eq!(
        out.code(),
        Some(1),
        "the last create is a script error: {out:?}",
        out = out.stderr
    );
    assert!(
        out.stderr
            .contains("Supervisor::NodeConfig.env_file must be a string or (), not integer"),
        "{}",
        out.stderr
    );
}

#[test]
fn resource_limits_are_set_before_exec() {
    let sandbox = Sandbox::new("rlimits");
    sandbox.write(
        "s.rhai",
        r#"
        Supervisor::create(#{name: "lim", limits: #{nofile: 1000, core: "unlimited",
            stack: "16M", memlock: 65536, nproc: 4000}, command: ["sleep", "300"]});
        fn zeek_init() {
            if Supervisor::is_supervised() { return; }
            Supervisor::create(#{name: "snode", limits: #{nofile: 900, core: 0}});
        }
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    let pid = running_pid(&sandbox, &sup, "lim");
    assert_eq!(limit(pid, "Max open files"), ("1000".into(), "1000".into()));
    assert_eq!(
        limit(pid, "Max core file size"),
        ("unlimited".into(), "unlimited".into())
    );
    assert_eq!(
        limit(pid, "Max stack size"),
        ((16 << 20).to_string(), (16 << 20).to_string())
    );
    assert_eq!(
        limit(pid, "Max locked memory"),
        ("65536".into(), "65536".into())
    );
    assert_eq!(limit(pid, "Max processes"), ("4000".into(), "4000".into()));
    // A script node (forked by the stem) too.
    let pid = running_pid(&sandbox, &sup, "snode");
    assert_eq!(limit(pid, "Max open files"), ("900".into(), "900".into()));
    assert_eq!(limit(pid, "Max core file size"), ("0".into(), "0".into()));
}

#[test]
fn limits_of_the_wrong_type_or_size_are_refused_naming_node_and_field() {
    let sandbox = Sandbox::new("limits-bad");
    sandbox.write(
        "s.rhai",
        r#"
        for limits in [#{memory: "1K"}, #{memory: true}, #{pids: 0}, #{cpu: -1},
                       #{nofile: "lots"}, #{nofiles: 3}, #{nofile: 100000000}] {
            let answer = "";
            try {
                answer = Supervisor::create(#{name: "db", limits: limits, command: ["true"]});
            } catch (e) {
                answer = `error: ${e}`;
            }
            print(answer);
        }
        print(Supervisor::create(#{name: "db", umask: 0o1777, command: ["true"]}));
        print(`nodes: ${Supervisor::status().nodes.len()}`);
        terminate();
        "#,
    );
    let out = sandbox.run(&["run", "--no-socket", "s.rhai"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let expected = [
        "limits.memory: '1K' is below what a process needs (at least 1 MiB)",
        "limits.memory must be a number of bytes or a size such as \"512M\", not bool",
        "limits.pids must be 1 or more, not 0",
        "limits.cpu must be a number of cores from 0.01, not -1",
        "limits.nofile must be a number or \"unlimited\", not string",
        "limits has no field 'nofiles'",
        "node 'db': limits.nofile 100000000 is above this supervisor's hard limit",
        "node 'db': umask must be from 0 to 0o777, not 0o1777",
    ];
    for (line, words) in lines.iter().zip(expected) {
        assert!(
            line.contains(words),
            "{line:?} should say {words:?}\n{}",
            out.stdout
        );
    }
    assert_eq!(lines.last(), Some(&"nodes: 0"), "{}", out.stdout);
}

#[test]
fn a_node_past_its_memory_limit_is_killed_named_and_revived() {
    if skip_unless_root("a_node_past_its_memory_limit_is_killed") {
        return;
    }
    let sandbox = Sandbox::new("oom");
    sandbox.write(
        "hog.py",
        "import time\nheld = []\nprint('allocating', flush=True)\nwhile True:\n    held.append(bytearray(8 << 20))\n    time.sleep(0.01)\n",
    );
    sandbox.write(
        "s.rhai",
        &r#"
        print(Supervisor::create(#{name: "hog", limits: #{memory: "64M"}, revival_delay: 0.2,
            command: ["PYTHON", "hog.py"]}));
        fn node_exit(node, exit) {
            print(`exit of ${node}: signal ${exit.signal}, reason ${exit.reason}`);
        }
        "#
        .replace("PYTHON", python()),
    );
    let sup = Supervised(sandbox.start(&["run", "s.rhai"]));
    let first = sup
        .expect_stdout("\n")
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    if no_cgroups(&first) {
        eprintln!("a_node_past_its_memory_limit_is_killed: skipped, no cgroups here: {first}");
        return;
    }
    assert_eq!(first, "", "create: {}", sup.stderr());
    sup.expect_stdout("exit of hog: signal SIGKILL, reason out of memory (limit 64 MiB)");
    sup.expect_stderr("killed by SIGKILL: out of memory (limit 64 MiB); reviving it in");
    // Revived as usual, and status says why the last one ended.
    let mut nodes = Value::Null;
    assert!(wait_until(PATIENCE, || {
        nodes = status(&sandbox);
        nodes["hog"]["restarts"].as_i64() >= Some(1)
    }));
    let reason = nodes["hog"]["exit_reason"].clone();
    assert!(
        reason == "out of memory (limit 64 MiB)" || reason.is_null(),
        "{nodes:#}"
    );
    assert!(wait_until(
        PATIENCE,
        || status(&sandbox)["hog"]["exit_reason"] == "out of memory (limit 64 MiB)"
    ));
    let table = ctl(&sandbox, &["status"]).stdout;
    assert!(
        table.contains("SIGKILL: out of memory (limit 64 MiB)"),
        "{table}"
    );
}

#[test]
fn a_pids_limit_holds_the_whole_node() {
    if skip_unless_root("a_pids_limit_holds_the_whole_node") {
        return;
    }
    let sandbox = Sandbox::new("pids");
    sandbox.write(
        "forks.py",
        "import subprocess, time\nstarted = 0\nfor i in range(20):\n    try:\n        subprocess.Popen(['sleep', '300'])\n        started += 1\n    except OSError:\n        pass\nopen('tried', 'w').write(str(started))\ntime.sleep(300)\n",
    );
    sandbox.write(
        "s.rhai",
        &r#"
        print(Supervisor::create(#{name: "forks", limits: #{pids: 5}, directory: "f",
            command: ["PYTHON", "../forks.py"]}));
        "#
        .replace("PYTHON", python()),
    );
    let sup = Supervised(sandbox.start(&["run", "s.rhai"]));
    let first = sup
        .expect_stdout("\n")
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    if no_cgroups(&first) {
        eprintln!("a_pids_limit_holds_the_whole_node: skipped, no cgroups here: {first}");
        return;
    }
    let pid = running_pid(&sandbox, &sup, "forks");
    assert!(
        wait_until(PATIENCE, || !sandbox.read("f/tried").is_empty()),
        "{}",
        sup.stderr()
    );
    let started: u32 = sandbox.read("f/tried").parse().unwrap();
    assert!(
        (1..=4).contains(&started),
        "{started} of 20 children started"
    );
    let dir = cgroup_dir(pid, "pids").expect("the node's pids cgroup");
    assert_eq!(
        std::fs::read_to_string(dir.join("pids.max"))
            .unwrap()
            .trim(),
        "5"
    );
    let current: u32 = std::fs::read_to_string(dir.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(current <= 5, "{current} tasks");
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert!(procs.lines().count() <= 5, "{procs}");
    // The supervisor is not in it.
    assert!(!procs.lines().any(|p| p == sup.pid().to_string()));
    // Stopped, the supervisor stops all of the node (its children too) and removes its
    // cgroups.
    let in_it: Vec<i32> = procs.lines().filter_map(|p| p.parse().ok()).collect();
    let sup_pid = sup.pid();
    drop(sup);
    assert!(in_it.iter().all(|&p| !alive(p)), "{in_it:?}");
    assert!(
        supervisor_cgroups(sup_pid).is_empty(),
        "{:?}",
        supervisor_cgroups(sup_pid)
    );
}

#[test]
fn a_descendant_that_escaped_its_group_and_environment_is_stopped_with_its_node() {
    if skip_unless_root("a_descendant_that_escaped") {
        return;
    }
    let sandbox = Sandbox::new("escape");
    // The helper leaves the node's process group and session (setsid) and clears its
    // environment (env -i), so neither the group nor the owner tag reaches it; its
    // parent exits, so it is not even the node's descendant any more.
    let escape = "setsid env -i sh -c 'echo $$ > escaped; exec sleep 300' & wait; exec sleep 300";
    sandbox.write(
        "s.rhai",
        &format!(
            r#"
            print(Supervisor::create(#{{name: "boxed", limits: #{{pids: 100}}, directory: "boxed",
                command: ["sh", "-c", "{escape}"]}}));
            print(Supervisor::create(#{{name: "loose", directory: "loose",
                command: ["sh", "-c", "{escape}"]}}));
            "#
        ),
    );
    let sup = Supervised(sandbox.start(&["run", "s.rhai"]));
    let first = sup
        .expect_stdout("\n")
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    if no_cgroups(&first) {
        eprintln!("a_descendant_that_escaped: skipped, no cgroups here: {first}");
        return;
    }
    let escaped = |node: &str| -> i32 {
        let file = sandbox.path(&format!("{node}/escaped"));
        assert!(wait_until(PATIENCE, || std::fs::read_to_string(&file)
            .is_ok_and(|t| t.ends_with('\n'))));
        std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let boxed_pid = running_pid(&sandbox, &sup, "boxed");
    let boxed = escaped("boxed");
    let loose = escaped("loose");
    running_pid(&sandbox, &sup, "loose");
    assert!(alive(boxed) && alive(loose));
    assert!(
        env_of(boxed, "RHAI_SUPERVISOR_OWNER").is_none(),
        "its environment is clear"
    );
    let cgroup = cgroup_dir(boxed_pid, "pids").unwrap();
    assert!(
        std::fs::read_to_string(cgroup.join("cgroup.procs"))
            .unwrap()
            .lines()
            .any(|p| p == boxed.to_string())
    );
    assert_eq!(ctl(&sandbox, &["destroy", "boxed"]).code(), Some(0));
    assert_eq!(ctl(&sandbox, &["destroy", "loose"]).code(), Some(0));
    assert!(
        wait_until(PATIENCE, || !alive(boxed)),
        "the escaped process of a node with a cgroup is stopped with it"
    );
    // Its cgroup is gone with it, while the supervisor runs on.
    assert!(
        wait_until(PATIENCE, || !cgroup.exists()),
        "{}",
        cgroup.display()
    );
    assert!(wait_until(PATIENCE, || node_cgroups(sup.pid()).is_empty()));
    // Without a cgroup nothing reaches it (the limit the README states).
    assert!(wait_until(PATIENCE, || status(&sandbox)
        .get("loose")
        .is_none()));
    assert!(alive(loose), "a node without a cgroup cannot reach it");
    kill(loose, SIGKILL);
}

#[test]
fn no_cgroup_is_left_after_a_destroy_a_refused_create_or_the_supervisor() {
    if skip_unless_root("no_cgroup_is_left") {
        return;
    }
    let sandbox = Sandbox::new("cgroup-leaks");
    sandbox.write(
        "s.rhai",
        r#"
        print(Supervisor::create(#{name: "a", limits: #{memory: "128M", pids: 50, cpu: 0.5},
            command: ["sleep", "300"]}));
        print(Supervisor::create(#{name: "missing", limits: #{pids: 10},
            command: ["/no/such/program"]}));
        try {
            Supervisor::create(#{name: "tiny", limits: #{memory: "1K"}, command: ["true"]});
        } catch (e) {
            print(e);
        }
        print("created");
        "#,
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    let out = sup.expect_stdout("created\n");
    let lines: Vec<&str> = out.lines().collect();
    if no_cgroups(lines[0]) {
        eprintln!("no_cgroup_is_left: skipped, no cgroups here: {}", lines[0]);
        return;
    }
    assert_eq!(lines[0], "", "{out}\n{}", sup.stderr());
    assert!(
        lines[1].starts_with("node 'missing': cannot start '/no/such/program'"),
        "{out}"
    );
    assert!(
        lines[2].contains("limits.memory: '1K' is below what a process needs"),
        "{out}"
    );
    let pid = running_pid(&sandbox, &sup, "a");
    // "running" comes with the clone; the cgroup is joined just before the exec.
    assert!(wait_until(PATIENCE, || std::fs::read_to_string(format!(
        "/proc/{pid}/comm"
    ))
    .is_ok_and(|c| c.trim() == "sleep")));
    // Its limits, in each controller's cgroup.
    for (controller, file, value) in [
        (
            "memory",
            "memory.limit_in_bytes",
            (128u64 << 20).to_string(),
        ),
        ("pids", "pids.max", "50".to_string()),
    ] {
        let Some(dir) = cgroup_dir(pid, controller) else {
            continue;
        };
        let v2 = dir.join("memory.max").exists() || !dir.join(file).exists();
        let file = match (v2, controller) {
            (true, "memory") => "memory.max",
            _ => file,
        };
        assert_eq!(
            std::fs::read_to_string(dir.join(file)).unwrap().trim(),
            value,
            "{}",
            dir.display()
        );
    }
    // Only the live node has a cgroup: the refused ones left none.
    let cgroups = node_cgroups(sup.pid());
    assert!(!cgroups.is_empty());
    assert!(
        cgroups
            .iter()
            .all(|c| c.file_name().and_then(|n| n.to_str()) == Some("a")),
        "{cgroups:?}"
    );
    assert_eq!(ctl(&sandbox, &["destroy", "a"]).code(), Some(0));
    assert!(
        wait_until(PATIENCE, || node_cgroups(sup.pid()).is_empty()),
        "{:?}",
        node_cgroups(sup.pid())
    );
    // And at the end, not even the supervisor's own directories.
    let sup_pid = sup.pid();
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(
        supervisor_cgroups(sup_pid).is_empty(),
        "{:?}",
        supervisor_cgroups(sup_pid)
    );
}

#[test]
fn status_of_a_node_says_what_its_processes_use() {
    let sandbox = Sandbox::new("usage");
    // Busy for a moment (with a child that burns CPU too), then idle.
    sandbox.write(
        "busy.py",
        "import sys, time\nheld = bytearray(int(sys.argv[1]) << 20)\nfor i in range(0, len(held), 4096):\n    held[i] = 1\nwhile time.process_time() < 0.4:\n    pass\ntime.sleep(300)\n",
    );
    let busy = format!("{py} busy.py 0 & exec {py} busy.py 40", py = python());
    let cgroup_limits = if is_root() {
        "limits: #{pids: 100},"
    } else {
        ""
    };
    sandbox.write(
        "s.rhai",
        &format!(
            r#"
            Supervisor::create(#{{name: "plain", command: ["sh", "-c", "{busy}"]}});
            let answer = Supervisor::create(#{{name: "boxed", {cgroup_limits} command: ["sh", "-c", "{busy}"]}});
            if answer != "" {{
                print(`no cgroup: ${{answer}}`);
                Supervisor::create(#{{name: "boxed", command: ["sh", "-c", "{busy}"]}});
            }}
            fn report() {{
                let s = Supervisor::status("plain").nodes.plain;
                print(`script sees cpu ${{s.cpu}} memory ${{s.memory}}`);
                let all = Supervisor::status().nodes.plain;
                print(`every node: cpu unset ${{all.cpu == ()}}`);
            }}
            "#
        ),
    );
    let sup = Supervised(sandbox.start(&["run", "s.rhai"]));
    for node in ["plain", "boxed"] {
        let mut nodes = Value::Null;
        let used = wait_until(PATIENCE, || {
            nodes = status_of(&sandbox, Some(node));
            nodes[node]["cpu"].as_f64().is_some_and(|c| c >= 0.5)
                && nodes[node]["memory"]
                    .as_i64()
                    .is_some_and(|m| m >= 40 << 20)
        });
        assert!(used, "{node}: {nodes:#}\n{}", sup.stderr());
    }
    // The table shows CPU % and memory.
    let table = ctl(&sandbox, &["status"]).stdout;
    let header = table.lines().next().unwrap();
    assert!(header.contains("CPU%") && header.contains("MEM"), "{table}");
    let row = table.lines().find(|l| l.starts_with("plain")).unwrap();
    assert!(row.contains('%') && row.contains('M'), "{table}");
    // A script asking for one node gets it; asking for all costs nothing.
    let out = ctl(&sandbox, &["eval", "report()"]);
    let seen = numbers_after(&out.stdout, "memory ");
    assert!(
        out.stdout.contains("script sees cpu ") && seen.first().is_some_and(|&m| m >= 40 << 20),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("every node: cpu unset true"),
        "{}",
        out.stdout
    );
}

/// Datagrams a test receives on a socket it listens on, as a supervisor under systemd
/// would send them to the service manager.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
    got: Vec<(Instant, String)>,
}

impl Manager {
    fn listen(sandbox: &Sandbox) -> Manager {
        let path = sandbox.path("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Manager {
            socket,
            path,
            got: Vec::new(),
        }
    }

    /// Waits until a datagram holds `line` (one received before counts); returns it.
    fn expect(&mut self, line: &str) -> String {
        if let Some((_, d)) = self.got.iter().find(|(_, d)| d.lines().any(|l| l == line)) {
            return d.clone();
        }
        self.expect_new(line)
    }

    /// Waits until a datagram that arrives from now on holds `line`.
    fn expect_new(&mut self, line: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut buffer = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {line:?} in {:?}", self.got);
            self.socket.set_read_timeout(Some(left)).unwrap();
            let Ok(n) = self.socket.recv(&mut buffer) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            self.got.push((Instant::now(), text.clone()));
            if text.lines().any(|l| l == line) {
                return text;
            }
        }
    }

    fn said(&self, line: &str) -> bool {
        self.got.iter().any(|(_, d)| d.lines().any(|l| l == line))
    }
}

#[test]
fn under_systemd_the_supervisor_says_ready_status_watchdog_and_stopping() {
    let sandbox = Sandbox::new("systemd");
    let mut manager = Manager::listen(&sandbox);
    // `slow` is ready only once the test creates `go`: READY=1 must wait for it.
    sandbox.write(
        "s.rhai",
        r#"
        Supervisor::create(#{name: "slow", ready: #{log: "^up$"}, command: ["sh", "-c",
            "while [ ! -e go ]; do sleep 0.02; done; echo up; exec sleep 300"]});
        Supervisor::create(#{name: "fast", command: ["sleep", "300"]});
        Supervisor::create(#{name: "app", depends_on: ["slow"], command: ["sleep", "300"]});
        "#,
    );
    let mut sup = sandbox.start_with(&["run", "s.rhai"], |c| {
        c.env("NOTIFY_SOCKET", &manager.path)
            .env("WATCHDOG_USEC", "300000");
    });
    manager.expect("WATCHDOG=1");
    // Still starting: no READY=1, and the nodes never see the manager's socket.
    let nodes = status(&sandbox);
    assert_eq!(nodes["slow"]["state"], "starting");
    let fast = nodes["fast"]["pid"].as_i64().unwrap() as i32;
    assert_eq!(env_of(fast, "NOTIFY_SOCKET"), None);
    assert_eq!(env_of(fast, "WATCHDOG_USEC"), None);
    manager.expect_new("WATCHDOG=1");
    assert!(!manager.said("READY=1"), "{:?}", manager.got);
    sandbox.write("go", "");
    let ready = manager.expect("READY=1");
    assert!(
        ready.contains("STATUS=3 nodes: 3 running"),
        "READY once slow, and app after it, are up: {ready:?}"
    );
    // Pings keep coming, about every 150 ms.
    let pings_from = Instant::now();
    for _ in 0..3 {
        manager.expect_new("WATCHDOG=1");
    }
    assert!(pings_from.elapsed() < Duration::from_secs(10));
    // A node that changes state is a new STATUS=.
    assert_eq!(ctl(&sandbox, &["destroy", "fast"]).code(), Some(0));
    manager.expect("STATUS=2 nodes: 2 running");
    sup.signal(SIGTERM);
    manager.expect("STOPPING=1");
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn without_a_watchdog_period_no_watchdog_is_sent() {
    let sandbox = Sandbox::new("systemd-plain");
    let mut manager = Manager::listen(&sandbox);
    sandbox.write(
        "s.rhai",
        r#"Supervisor::create(#{name: "a", command: ["sleep", "300"]});"#,
    );
    let mut sup = sandbox.start_with(&["run", "s.rhai"], |c| {
        c.env("NOTIFY_SOCKET", &manager.path);
    });
    let ready = manager.expect("READY=1");
    assert!(ready.contains("STATUS=1 node: 1 running"), "{ready:?}");
    sup.signal(SIGTERM);
    manager.expect("STOPPING=1");
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(!manager.said("WATCHDOG=1"), "{:?}", manager.got);
}

/// The directory of PostgreSQL's programs, if it is installed.
fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("postgres").exists() && bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

#[test]
fn postgresql_runs_as_user_postgres_ready_by_notify_with_a_dependent_using_it() {
    if skip_unless_root("postgresql_runs_as_user_postgres") {
        return;
    }
    let Some(bin) = postgres_bin() else {
        eprintln!("postgresql_runs_as_user_postgres: skipped, PostgreSQL is not installed");
        return;
    };
    let sandbox = Sandbox::new("postgres");
    let sockets = sandbox.path("pg");
    let port = 20000 + (std::process::id() % 20000);
    let bin = bin.display();
    sandbox.write(
        "s.rhai",
        &format!(
            r#"
            // The cluster is made once, by a one-shot node as postgres; the server starts
            // when that has succeeded and is ready when it says so (sd_notify).
            Supervisor::create(#{{name: "initdb", user: "postgres", directory: "pg",
                restart: "never",
                command: ["sh", "-c", "[ -e data/PG_VERSION ] || exec {bin}/initdb -D data -A trust -U postgres"]}});
            Supervisor::create(#{{name: "db", user: "postgres", directory: "pg",
                depends_on: #{{initdb: "succeeded"}}, ready: "notify", ready_timeout: 60,
                stop_signal: "INT", kill_mode: "mixed", limits: #{{nofile: 1024}},
                command: ["{bin}/postgres", "-D", "data", "-c", "listen_addresses=",
                          "-k", "{sockets}", "-p", "{port}"]}});
            Supervisor::create(#{{name: "app", depends_on: ["db"], restart: "never",
                command: ["psql", "-h", "{sockets}", "-p", "{port}", "-U", "postgres",
                          "-Atc", "select 'answer ' || (6 * 7)"]}});
            fn node_ready(node) {{ print(`ready: ${{node}}`); }}
            "#,
            sockets = sockets.display()
        ),
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("ready: db");
    sup.expect_stdout("[app] answer 42");
    let nodes = status(&sandbox);
    assert_eq!(nodes["initdb"]["state"], "exited", "{nodes:#}");
    assert_eq!(nodes["app"]["state"], "exited", "{nodes:#}");
    let db = nodes["db"]["pid"].as_i64().unwrap() as i32;
    let (uid, _, _) = ids("postgres");
    assert!(
        proc_status(db, "Uid")
            .unwrap()
            .starts_with(&format!("{uid}\t"))
    );
    assert_eq!(owner(&sandbox.path("pg/data/PG_VERSION")).0, uid);
    assert_eq!(limit(db, "Max open files").0, "1024");
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(!alive(db));
    assert!(
        sup.stderr().contains("node 'db' (pid ") && !sup.stderr().contains("SIGKILL"),
        "a clean, fast shutdown: {}",
        sup.stderr()
    );
}
