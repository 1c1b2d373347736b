//! Several hosts: one layout script (`examples/hosts/layout.rhai`) run by two
//! supervisors with different `--host`, reached through a real OpenSSH server that
//! each test starts on loopback addresses (127.0.0.2 and 127.0.0.3 play the two
//! hosts) with keys made for it, and the real ssh client.
//!
//! The server's `SetEnv` gives each "host" its own `RHAI_SUPERVISOR_SOCKET`, so the
//! relay there finds its supervisor as a local `ctl` would. The client runs through a
//! wrapper `ssh` first in `PATH` (OpenSSH reads `~/.ssh/config` from the passwd home,
//! not `$HOME`): our key, no known-hosts file, and a log of each run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const ALPHA: &str = "127.0.0.2";
const BETA: &str = "127.0.0.3";
/// Nothing listens there: a host that cannot be reached.
const NOWHERE: &str = "127.0.0.4";

fn layout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hosts/layout.rhai")
}

/// Installs openssh-server when sshd is missing (once for all tests).
fn ensure_sshd() {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if Path::new("/usr/sbin/sshd").exists() && Path::new("/usr/bin/ssh").exists() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/install-packages");
    let installed = Command::new(&script).status();
    assert!(
        installed.is_ok_and(|s| s.success()) && Path::new("/usr/sbin/sshd").exists(),
        "these tests need OpenSSH's server: {} failed (run it as root)",
        script.display()
    );
}

/// One `ssh-keygen` key pair at `path` (and `path.pub`).
fn keygen(path: &Path) {
    let made = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "rhai-supervisor-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("cannot run ssh-keygen");
    assert!(made.success(), "ssh-keygen failed for {}", path.display());
}

/// A port free on every address the test uses.
fn free_port() -> u16 {
    loop {
        let first = TcpListener::bind((ALPHA, 0)).expect("cannot bind on 127.0.0.2");
        let port = first.local_addr().unwrap().port();
        let others = [BETA, NOWHERE, "127.0.0.5"]
            .iter()
            .all(|address| TcpListener::bind((*address, port)).is_ok());
        if others {
            return port;
        }
    }
}

/// An sshd of the test's own, listening on 127.0.0.2 and 127.0.0.3 only. Killed, with
/// its sessions, when dropped.
struct Sshd {
    child: Child,
    port: u16,
    stderr: Collected,
}

impl Sshd {
    /// Starts sshd with its configuration and keys under `dir`; `sockets` are the
    /// control sockets of the two hosts, given to their sessions by `SetEnv`.
    fn start(dir: &Path, sockets: [&Path; 2]) -> Sshd {
        ensure_sshd();
        // sshd's privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        keygen(&dir.join("host_key"));
        keygen(&dir.join("user_key"));
        std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
        for _attempt in 0..5 {
            let port = free_port();
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "ListenAddress {ALPHA}:{port}\n\
                     ListenAddress {BETA}:{port}\n\
                     HostKey {dir}/host_key\n\
                     AuthorizedKeysFile {dir}/authorized_keys\n\
                     PidFile none\n\
                     StrictModes no\n\
                     UsePAM no\n\
                     PermitRootLogin prohibit-password\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     Match LocalAddress {ALPHA}\n\
                     \x20   SetEnv RHAI_SUPERVISOR_SOCKET={alpha}\n\
                     Match LocalAddress {BETA}\n\
                     \x20   SetEnv RHAI_SUPERVISOR_SOCKET={beta}\n",
                    dir = dir.display(),
                    alpha = sockets[0].display(),
                    beta = sockets[1].display(),
                ),
            )
            .unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot start sshd");
            let stderr = Collected::from(child.stderr.take().unwrap());
            let listening = stderr.wait_for(PATIENCE, |text| {
                text.contains(&format!("Server listening on {ALPHA} port {port}"))
                    && text.contains(&format!("Server listening on {BETA} port {port}"))
            });
            if listening.is_some() {
                return Sshd {
                    child,
                    port,
                    stderr,
                };
            }
            // Most likely the port was taken in between: another one.
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("sshd did not start on port {port}:\n{}", stderr.text());
        }
        panic!("sshd would not start");
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Each connection has a process of its own (in a session of its own): those go
        // first, then the listener.
        for session in children_of(self.child.id() as i32) {
            kill(session, SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- sshd:\n{}", self.stderr.text());
        }
    }
}

/// Two supervisors of one layout, "manager-1" on 127.0.0.2 and "sensor-1" on
/// 127.0.0.3, and the sshd that reaches them.
struct Hosts {
    sandbox: Sandbox,
    alpha: Process,
    beta: Process,
    sshd: Sshd,
}

impl Hosts {
    fn start(name: &str) -> Hosts {
        let sandbox = Sandbox::new(name);
        let sockets = [
            sandbox.path("manager-1/rhai-supervisor.sock"),
            sandbox.path("sensor-1/rhai-supervisor.sock"),
        ];
        let sshd = Sshd::start(&sandbox.dir, [&sockets[0], &sockets[1]]);
        let supervisor = |host: &str| {
            let dir = sandbox.path(host);
            std::fs::create_dir_all(&dir).unwrap();
            let layout = layout();
            sandbox.start_with(
                &["run", "--host", host, layout.to_str().unwrap()],
                |command| {
                    command
                        .current_dir(&dir)
                        .env_remove("RHAI_SUPERVISOR_SOCKET");
                },
            )
        };
        let alpha = supervisor("manager-1");
        let beta = supervisor("sensor-1");
        for (process, nodes) in [
            (&alpha, &["manager", "logger", "proxy"][..]),
            (&beta, &["worker-1", "worker-2"][..]),
        ] {
            for node in nodes {
                process.expect_stdout(&format!("[{node}] up as"));
            }
        }
        let bin = sandbox.path("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let wrapper = bin.join("ssh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n\
                 printf '%s\\n' \"$*\" >> {log}\n\
                 exec /usr/bin/ssh -F /dev/null -i {key} -o IdentitiesOnly=yes \
                 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                 -o LogLevel=ERROR \"$@\"\n",
                log = sandbox.path("ssh.log").display(),
                key = sandbox.path("user_key").display(),
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        Hosts {
            sandbox,
            alpha,
            beta,
            sshd,
        }
    }

    /// `127.0.0.2:PORT`.
    fn alpha(&self) -> String {
        format!("{ALPHA}:{}", self.sshd.port)
    }

    fn beta(&self) -> String {
        format!("{BETA}:{}", self.sshd.port)
    }

    /// A host on which nothing listens.
    fn nowhere(&self) -> String {
        format!("{NOWHERE}:{}", self.sshd.port)
    }

    /// `rhai-supervisor ctl ARGS`, with our ssh, and this build as the remote program.
    fn ctl(&self, args: &[&str]) -> Finished {
        let mut all = vec!["ctl"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    fn run(&self, args: &[&str]) -> Finished {
        let path = format!(
            "{}:{}",
            self.sandbox.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        self.sandbox.run_with(args, |command| {
            command
                .env("PATH", path)
                .env("RHAI_SUPERVISOR_REMOTE_COMMAND", binary())
                .env_remove("RHAI_SUPERVISOR_SOCKET");
        })
    }

    /// How many times ssh was run.
    fn ssh_runs(&self) -> usize {
        self.sandbox.read("ssh.log").lines().count()
    }

    /// Stops both supervisors and sshd, and checks that nothing the test started is
    /// left: no supervisor, node, sshd session or relay.
    fn finish(self) {
        let Hosts {
            sandbox,
            mut alpha,
            mut beta,
            sshd,
        } = self;
        for process in [&alpha, &beta] {
            process.signal(SIGTERM);
        }
        assert_eq!(alpha.expect_exit(), Some(0), "{}", alpha.stderr());
        assert_eq!(beta.expect_exit(), Some(0), "{}", beta.stderr());
        drop(sshd);
        let mark = sandbox.dir.to_string_lossy().to_string();
        assert!(
            wait_until(PATIENCE, || processes_mentioning(&mark).is_empty()),
            "left running: {:?}",
            processes_mentioning(&mark)
        );
    }
}

/// Processes whose command line or environment names `mark`.
fn processes_mentioning(mark: &str) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != std::process::id() as i32 && alive(pid))
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let named = |bytes: &[u8]| String::from_utf8_lossy(bytes).contains(mark);
            (named(&cmdline) || named(&environ))
                .then(|| (pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .collect()
}

fn expect(out: &Finished, code: i32) {
    assert_eq!(
        out.code(),
        Some(code),
        "--- stdout:\n{}\n--- stderr:\n{}",
        out.stdout,
        out.stderr
    );
}

/// The `(HOST, NAME, STATE)` of each row of a status table, and its header.
fn rows(table: &str) -> (String, Vec<(String, String, String)>) {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or("").to_string();
    let rows = lines
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (cells[0].into(), cells[1].into(), cells[2].into())
        })
        .collect();
    (header, rows)
}

/// The JSON lines of `text`, by host.
fn json_by_host(text: &str) -> Vec<(String, Value)> {
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect(line);
            (value["host"].as_str().expect(line).to_string(), value)
        })
        .collect()
}

#[test]
fn status_of_two_hosts_merges_and_an_unreachable_one_hides_nothing() {
    let hosts = Hosts::start("hosts-status");
    let (a, b, nowhere) = (hosts.alpha(), hosts.beta(), hosts.nowhere());

    let out = hosts.ctl(&["--ssh", &a, "--ssh", &b, "status"]);
    expect(&out, 0);
    let (header, table) = rows(&out.stdout);
    assert!(header.starts_with("HOST  "), "{}", out.stdout);
    assert!(
        header.contains("NAME") && header.contains("LAST EXIT"),
        "{header}"
    );
    let expected = [
        (&a, "logger"),
        (&a, "manager"),
        (&a, "proxy"),
        (&b, "worker-1"),
        (&b, "worker-2"),
    ];
    assert_eq!(
        table
            .iter()
            .map(|(h, n, _)| (h.as_str(), n.as_str()))
            .collect::<Vec<_>>(),
        expected
            .iter()
            .map(|(h, n)| (h.as_str(), *n))
            .collect::<Vec<_>>(),
        "each host lists its own nodes only, in the order the hosts were given\n{}",
        out.stdout
    );
    assert!(table.iter().all(|(_, _, state)| state == "running"));

    // The unreachable host is reported; the others answer as before.
    let out = hosts.ctl(&["--ssh", &a, "--ssh", &nowhere, "--ssh", &b, "status"]);
    expect(&out, 3);
    assert_eq!(rows(&out.stdout).1.len(), 5, "{}", out.stdout);
    let complaint = lines_with(&out.stderr, &nowhere);
    assert_eq!(complaint.len(), 1, "{}", out.stderr);
    assert!(
        complaint[0].starts_with(&format!("rhai-supervisor: error: {nowhere}: ")),
        "{}",
        complaint[0]
    );
    assert!(
        complaint[0].contains("Connection refused"),
        "{}",
        complaint[0]
    );

    // JSON: one line per host, with "host"; the unreachable one says so.
    let out = hosts.ctl(&[
        "--ssh", &a, "--ssh", &nowhere, "--ssh", &b, "--json", "status",
    ]);
    expect(&out, 3);
    let answers = json_by_host(&out.stdout);
    let order: Vec<&str> = answers.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(order, [a.as_str(), nowhere.as_str(), b.as_str()]);
    let nodes = |value: &Value| -> Vec<String> {
        value["result"]["nodes"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(answers[0].1["ok"], true);
    assert_eq!(nodes(&answers[0].1), ["logger", "manager", "proxy"]);
    assert_eq!(nodes(&answers[2].1), ["worker-1", "worker-2"]);
    assert!(answers[2].1["result"]["nodes"]["worker-1"]["pid"].is_i64());
    assert_eq!(answers[1].1["ok"], false);
    assert_eq!(answers[1].1["unreachable"], true);
    assert!(
        answers[1].1["error"]
            .as_str()
            .unwrap()
            .contains("Connection refused")
    );

    // One node: the host that runs it answers; the other's "does not exist" is left out.
    let out = hosts.ctl(&["--ssh", &a, "--ssh", &b, "status", "worker-2"]);
    expect(&out, 0);
    let (_, table) = rows(&out.stdout);
    assert_eq!(table.len(), 1, "{}", out.stdout);
    assert_eq!(
        (table[0].0.as_str(), table[0].1.as_str()),
        (b.as_str(), "worker-2")
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    hosts.finish();
}

#[test]
fn a_node_restarts_on_its_own_host() {
    let hosts = Hosts::start("hosts-restart");
    let (a, b) = (hosts.alpha(), hosts.beta());
    let pid_of = |node: &str| -> i64 {
        let out = hosts.ctl(&["--ssh", &b, "--json", "status", node]);
        expect(&out, 0);
        let answers = json_by_host(&out.stdout);
        answers[0].1["result"]["nodes"][node]["pid"]
            .as_i64()
            .expect("a pid")
    };
    let before = pid_of("worker-1");

    let out = hosts.ctl(&["--ssh", &a, "--ssh", &b, "restart", "worker-1"]);
    expect(&out, 0);
    assert_eq!(out.stdout, format!("{b}: restarted node 'worker-1'\n"));
    hosts.beta.expect_stdout_count("[worker-1] up as", 2);
    let after = pid_of("worker-1");
    assert_ne!(before, after, "a new process");
    assert!(!alive(before as i32));

    // A node no host has: each one says so, and the exit status is a refusal.
    let out = hosts.ctl(&["--ssh", &a, "--ssh", &b, "restart", "nope"]);
    expect(&out, 1);
    for host in [&a, &b] {
        assert!(
            out.stderr.contains(&format!(
                "rhai-supervisor: error: {host}: node with name 'nope' does not exist"
            )),
            "{}",
            out.stderr
        );
    }

    // create goes to every host; only the host of the node's endpoint starts it.
    let config = r#"{"name": "worker-3", "command": ["sleep", "300"],
        "cluster": {"worker-3": {"role": "WORKER", "host": "sensor-1", "p": 27765}}}"#;
    let out = hosts.ctl(&["--ssh", &a, "--ssh", &b, "create", config]);
    expect(&out, 0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("{a}: node 'worker-3' belongs to host 'sensor-1'; it was not started here")
    );
    assert!(
        lines[1].starts_with(&format!("{b}: created node 'worker-3' (pid ")),
        "{}",
        out.stdout
    );

    // eval and its output, line by line, from each host.
    let out = hosts.ctl(&[
        "--ssh",
        &a,
        "--ssh",
        &b,
        "eval",
        r#"print("nodes here:"); Supervisor::status().nodes.len()"#,
    ]);
    expect(&out, 0);
    assert_eq!(
        out.stdout,
        format!("{a}: nodes here:\n{a}: 3\n{b}: nodes here:\n{b}: 3\n")
    );
    hosts.finish();
}

#[test]
fn a_hung_host_costs_its_timeout_and_holds_up_no_other() {
    let hosts = Hosts::start("hosts-hung");
    // It accepts connections (the kernel does, into the backlog) and never says a word.
    let silent = TcpListener::bind(("127.0.0.5", 0)).unwrap();
    let hung = format!("127.0.0.5:{}", silent.local_addr().unwrap().port());
    let a = hosts.alpha();
    let timeout = 6.0;
    let started = Instant::now();
    let out = hosts.ctl(&[
        "--ssh",
        &hung,
        "--ssh",
        &a,
        "--timeout",
        &timeout.to_string(),
        "status",
    ]);
    let took = started.elapsed();
    expect(&out, 3);
    assert_eq!(rows(&out.stdout).1.len(), 3, "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "rhai-supervisor: error: {hung}: no answer within 6 s"
        )),
        "{}",
        out.stderr
    );
    assert!(
        took >= Duration::from_secs_f64(timeout) && took < Duration::from_secs_f64(timeout + 20.0),
        "took {took:?}"
    );
    drop(silent);
    hosts.finish();
}

#[test]
fn host_strings_that_could_be_options_or_shell_are_refused() {
    let hosts = Hosts::start("hosts-refused");
    let marker = hosts.sandbox.path("touched");
    let proxy = format!("-oProxyCommand=touch {}", marker.display());
    let shell = format!("h;touch {}", marker.display());
    let substitution = format!("$(touch {})", marker.display());
    let bad: &[(&str, &str)] = &[
        (&proxy, "must not start with '-'"),
        ("-p", "must not start with '-'"),
        (&shell, "';' is not allowed"),
        (&substitution, "'$' is not allowed"),
        ("two words", "a space is not allowed"),
        ("'quoted'", "is not allowed"),
        ("h:99999", "the port must be a number"),
    ];
    for (host, why) in bad {
        let joined = format!("--ssh={host}");
        for ssh in [vec!["--ssh", host], vec![joined.as_str()]] {
            let mut args = ssh.clone();
            args.push("status");
            let out = hosts.ctl(&args);
            expect(&out, 2);
            assert!(
                out.stderr.contains("invalid ssh host") && out.stderr.contains(why),
                "{host}: {}",
                out.stderr
            );
        }
    }
    // A good host beside a bad one: nothing is run at all.
    let out = hosts.ctl(&["--ssh", &hosts.alpha(), "--ssh", &shell, "status"]);
    expect(&out, 2);
    let out = hosts.run(&["repl", "--attach", "--ssh", &proxy]);
    expect(&out, 1);
    assert!(
        out.stderr.contains("must not start with '-'"),
        "{}",
        out.stderr
    );
    assert_eq!(hosts.ssh_runs(), 0, "ssh never ran");
    assert!(!marker.exists());
    hosts.finish();
}

#[test]
fn output_that_is_not_an_answer_is_reported_not_trusted() {
    let hosts = Hosts::start("hosts-junk");
    let (a, b) = (hosts.alpha(), hosts.beta());
    // On the other host, `echo` instead of the relay: a line, but no answer.
    let out = hosts.ctl(&[
        "--ssh",
        &a,
        "--remote-command",
        "echo {\"ok\":true}",
        "status",
    ]);
    expect(&out, 3);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "{a}: the answer is not a control response: '{{\"ok\":true}} ctl __relay'"
        )),
        "{}",
        out.stderr
    );
    // A program that is not there: its shell's complaint is the reason.
    let out = hosts.ctl(&[
        "--ssh",
        &b,
        "--remote-command",
        "/no/such/program",
        "status",
    ]);
    expect(&out, 3);
    assert!(
        out.stderr.contains(&format!(
            "{b}: the relay on the other host ended with exit status 127"
        )),
        "{}",
        out.stderr
    );
    hosts.finish();
}

#[test]
fn the_socket_given_is_the_one_used_there() {
    let hosts = Hosts::start("hosts-socket");
    let a = hosts.alpha();
    // Through host alpha's sshd, the socket of sensor-1's supervisor: --socket wins
    // over the environment there.
    let beta_socket = hosts.sandbox.path("sensor-1/rhai-supervisor.sock");
    let out = hosts.ctl(&[
        "--ssh",
        &a,
        "--socket",
        beta_socket.to_str().unwrap(),
        "status",
    ]);
    expect(&out, 0);
    let names: Vec<String> = rows(&out.stdout).1.into_iter().map(|r| r.1).collect();
    assert_eq!(names, ["worker-1", "worker-2"], "{}", out.stdout);
    // No supervisor at the socket given: reported as no supervisor answering.
    let out = hosts.ctl(&["--ssh", &a, "--socket", "/nonexistent/x.sock", "status"]);
    expect(&out, 3);
    assert!(
        out.stderr.contains(&format!(
            "{a}: cannot connect to the supervisor at '/nonexistent/x.sock'"
        )),
        "{}",
        out.stderr
    );
    hosts.finish();
}

#[test]
fn the_repl_attaches_to_a_supervisor_on_another_host() {
    let hosts = Hosts::start("hosts-repl");
    let b = hosts.beta();
    let path = format!(
        "{}:{}",
        hosts.sandbox.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut repl = hosts
        .sandbox
        .start_with(&["repl", "--attach", "--ssh", &b], |command| {
            command
                .env("PATH", &path)
                .env("RHAI_SUPERVISOR_REMOTE_COMMAND", binary())
                .stdin(Stdio::piped());
        });
    {
        use std::io::Write;
        let mut stdin = repl.child.stdin.take().unwrap();
        stdin
            .write_all(b"print(`here: ${Supervisor::status().nodes.keys()}`);\n:status\n")
            .unwrap();
    }
    assert_eq!(repl.expect_exit(), Some(0), "{}", repl.stderr());
    let out = repl.stdout();
    assert!(out.contains(r#"here: ["worker-1", "worker-2"]"#), "{out}");
    assert!(
        lines_with(&out, "worker-2")
            .iter()
            .any(|l| l.contains("running")),
        "{out}"
    );
    // Leaving the REPL leaves the supervisor running.
    assert!(alive(hosts.beta.pid()));
    hosts.finish();
}

#[test]
fn top_shows_the_supervisor_of_another_host() {
    use crate::top::{Tmux, row};
    let hosts = Hosts::start("hosts-top");
    let command = format!(
        "PATH='{}':\"$PATH\" RHAI_SUPERVISOR_REMOTE_COMMAND='{}' '{}' top --ssh {}",
        hosts.sandbox.path("bin").display(),
        binary(),
        binary(),
        hosts.alpha()
    );
    let tmux = Tmux::start(&hosts.sandbox.dir, 80, 24, &command);
    let screen = tmux.wait("the nodes of manager-1", |s| {
        ["logger", "manager", "proxy"]
            .iter()
            .all(|n| row(s, n).is_some_and(|r| r.contains("running")))
    });
    assert!(
        screen.contains(&hosts.alpha()),
        "the host in the header:\n{screen}"
    );
    assert!(row(&screen, "worker-1").is_none(), "{screen}");
    // Enter follows the output there; r restarts there.
    tmux.keys(&["Enter"]);
    tmux.shows("output of logger");
    tmux.shows("up as Supervisor::LOGGER");
    tmux.keys(&["r"]);
    tmux.wait("logger restarted", |s| {
        row(s, "logger").is_some_and(|r| r.contains("running") && r.contains(" 1 "))
    });
    let status = hosts.ctl(&["--ssh", &hosts.alpha(), "status", "logger"]);
    assert!(
        lines_with(&status.stdout, "logger")
            .iter()
            .any(|l| l.contains("running  ") && l.split_whitespace().nth(4) == Some("1")),
        "{}",
        status.stdout
    );
    tmux.keys(&["q"]);
    tmux.expect_exit(0);
    drop(tmux);
    // Its ssh sessions and relays are gone with it.
    hosts.finish();
}

#[test]
fn without_host_the_machine_runs_what_names_it() {
    let sandbox = Sandbox::new("hosts-default");
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let name = name.trim();
    sandbox.write(
        "layout.rhai",
        &format!(
            r#"
            let layout = #{{
                by_name: #{{role: Supervisor::WORKER, host: "{upper}", p: 1}},
                by_localhost: #{{role: Supervisor::WORKER, host: "localhost", p: 2}},
                by_loopback: #{{role: Supervisor::WORKER, host: "127.0.0.1", p: 3}},
                by_v6_loopback: #{{role: Supervisor::WORKER, host: "::1", p: 4}},
                elsewhere: #{{role: Supervisor::WORKER, host: "elsewhere.invalid", p: 5}},
                other_address: #{{role: Supervisor::WORKER, host: "192.0.2.254", p: 6}},
            }};
            for name in layout.keys() {{
                let res = Supervisor::create(#{{name: name, cluster: layout, command: ["sleep", "300"]}});
                print(`${{name}}: "${{res}}"`);
            }}
            // A node with no endpoint of its own is local.
            print(`solo: "${{Supervisor::create(#{{name: "solo", cluster: #{{}}, command: ["sleep", "300"]}})}}"`);
            print(`local nodes: ${{Supervisor::status().nodes.keys()}}.`);
            "#,
            upper = name.to_uppercase(),
        ),
    );
    let mut sup = sandbox.start(&["-v", "run", "--no-socket", "layout.rhai"]);
    let out = sup.expect_stdout("].\n");
    for node in [
        "by_name",
        "by_localhost",
        "by_loopback",
        "elsewhere",
        "other_address",
    ] {
        assert!(
            out.contains(&format!("{node}: \"\"")),
            "create says done: {out}"
        );
    }
    assert!(
        out.contains(
            r#"local nodes: ["by_localhost", "by_loopback", "by_name", "by_v6_loopback", "solo"]."#
        ),
        "{out}"
    );
    sup.expect_stderr(
        "node 'elsewhere' belongs to host 'elsewhere.invalid'; it is not started here",
    );
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn timeouts_and_the_remote_command_setting_leave_local_use_alone() {
    let sandbox = Sandbox::new("hosts-local");
    sandbox.write("s.rhai", "fn zeek_init() { print(\"ready\"); }");
    let sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("ready");
    let with_remote_command = |command: &mut Command| {
        command.env("RHAI_SUPERVISOR_REMOTE_COMMAND", "/no/such/program");
    };
    // The setting for other hosts changes nothing here.
    let out = sandbox.run_with(&["ctl", "status"], with_remote_command);
    expect(&out, 0);
    let out = sandbox.run_with(
        &["ctl", "--timeout", "5", "eval", "1 + 1"],
        with_remote_command,
    );
    expect(&out, 0);
    assert_eq!(out.stdout, "2\n");
    // A supervisor that does not answer: --timeout bounds the wait.
    sup.signal(SIGSTOP);
    let started = Instant::now();
    let out = sandbox.run(&["ctl", "--timeout", "1", "status"]);
    expect(&out, 3);
    assert!(
        out.stderr.contains("no answer from the supervisor"),
        "{}",
        out.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    sup.signal(SIGCONT);
    let out = sandbox.run(&["ctl", "status"]);
    expect(&out, 0);
}
