//! The signals real services expect: a stop signal and a kill mode of their own, and a
//! signal sent on demand; with a real nginx (Debian's `nginx-light`, installed here if
//! it is missing) on a loopback port.

use std::path::Path;
use std::process::Command;

use crate::util::*;

/// nginx, installed from Debian's packages when the machine lacks it.
fn nginx() -> &'static str {
    static NGINX: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    NGINX.get_or_init(|| {
        if !Path::new("/usr/sbin/nginx").exists() {
            // The same installer as CI's: no package starts a system service.
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/install-packages");
            let installed = Command::new("sh").arg(script).status();
            assert!(
                installed.is_ok_and(|s| s.success()),
                "nginx is missing and .ci/install-packages cannot install nginx-light"
            );
        }
    });
    "/usr/sbin/nginx"
}

fn ctl(sandbox: &Sandbox, args: &[&str]) -> Finished {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    sandbox.run(&all)
}

/// A supervisor running nginx on a free loopback port, with `settings` added to its
/// node; returns it and the error log's path.
fn with_nginx(sandbox: &Sandbox, settings: &str) -> Process {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = sandbox.dir.display().to_string();
    sandbox.write(
        "nginx.conf",
        &format!(
            "worker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log notice;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"hello\\n\"; }} }} }}\n"
        ),
    );
    std::fs::create_dir_all(sandbox.path("tmp")).unwrap();
    sandbox.write(
        "s.rhai",
        &format!(
            r#"Supervisor::create(#{{name: "web", command: ["{}", "-c", "{dir}/nginx.conf", "-p", "{dir}", "-g", "daemon off;"],
                ready: #{{http: "http://127.0.0.1:{port}/"}}, {settings}}});"#,
            nginx()
        ),
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stderr("node 'web' is ready");
    sup
}

/// Stops the supervisor cleanly and waits until nginx and its workers are gone: nginx's
/// workers outlive a master that was killed, so a test must not just kill the
/// supervisor.
fn stop(mut sup: Process, master: i32) {
    let workers = workers(master);
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(wait_until(PATIENCE, || !alive(master)
        && workers.iter().all(|w| !alive(*w))));
}

fn master(sandbox: &Sandbox) -> i32 {
    sandbox.read("nginx.pid").trim().parse().unwrap()
}

fn workers(master: i32) -> Vec<i32> {
    children_of(master)
}

#[test]
fn hup_through_ctl_makes_nginx_reconfigure_without_a_restart() {
    let sandbox = Sandbox::new("nginx-hup");
    let sup = with_nginx(&sandbox, r#"stop_signal: "QUIT", kill_mode: "mixed""#);
    let pid = master(&sandbox);
    let out = ctl(&sandbox, &["signal", "web", "HUP"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "sent HUP to node 'web'\n");
    assert!(
        wait_until(PATIENCE, || sandbox
            .read("error.log")
            .contains("reconfiguring")),
        "{}",
        sandbox.read("error.log")
    );
    sup.expect_stderr(&format!("sent SIGHUP to node 'web' (pid {pid})"));
    assert_eq!(master(&sandbox), pid, "the same master");
    assert!(alive(pid));
    // unknown nodes and signals
    assert_eq!(ctl(&sandbox, &["signal", "nope", "HUP"]).code(), Some(1));
    let bad = ctl(&sandbox, &["signal", "web", "NOPE"]);
    assert_eq!(bad.code(), Some(2));
    assert!(
        bad.stderr.contains("unknown signal 'NOPE'"),
        "{}",
        bad.stderr
    );
    stop(sup, pid);
}

#[test]
fn quit_and_mixed_give_nginx_a_graceful_shutdown() {
    let sandbox = Sandbox::new("nginx-quit");
    let sup = with_nginx(&sandbox, r#"stop_signal: "QUIT", kill_mode: "mixed""#);
    let pid = master(&sandbox);
    let workers = workers(pid);
    assert_eq!(workers.len(), 2, "two workers");
    let out = ctl(&sandbox, &["destroy", "web"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    sup.expect_stderr(&format!("sent SIGQUIT to node 'web' (pid {pid})"));
    assert!(wait_until(PATIENCE, || !alive(pid)
        && workers.iter().all(|w| !alive(*w))));
    let log = sandbox.read("error.log");
    assert!(log.contains("gracefully shutting down"), "{log}");
    // Only the master heard from the supervisor; its workers were told by the master.
    let from_supervisor = format!("received from {}", sup.pid());
    assert_eq!(log.matches(&from_supervisor).count(), 1, "{log}");
    assert!(log.contains("signal 3 (SIGQUIT) received"), "{log}");
    stop(sup, pid);
}

#[test]
fn the_default_group_signal_reaches_every_worker() {
    // For contrast: with the defaults (TERM to the group) the workers hear the
    // supervisor themselves.
    let sandbox = Sandbox::new("nginx-group");
    let sup = with_nginx(&sandbox, "");
    let pid = master(&sandbox);
    let out = ctl(&sandbox, &["destroy", "web"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(wait_until(PATIENCE, || !alive(pid)));
    let from_supervisor = format!("received from {}", sup.pid());
    assert!(
        wait_until(PATIENCE, || sandbox
            .read("error.log")
            .matches(&from_supervisor)
            .count()
            >= 2),
        "{}",
        sandbox.read("error.log")
    );
    stop(sup, pid);
}

#[test]
fn a_node_that_ignores_its_stop_signal_is_killed_whole_at_the_timeout() {
    let sandbox = Sandbox::new("ignore-stop");
    sandbox.write(
        "s.rhai",
        r#"
        Supervisor::create(#{name: "deaf", stop_timeout: 0.5, stop_signal: "USR1", kill_mode: "mixed",
            command: ["sh", "-c", "trap '' USR1; sleep 300 & echo $! > child; wait; wait"]});
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    assert!(wait_until(PATIENCE, || !sandbox
        .read("child")
        .trim()
        .is_empty()));
    let child: i32 = sandbox.read("child").trim().parse().unwrap();
    let out = ctl(&sandbox, &["--json", "status", "deaf"]);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let main = status["result"]["nodes"]["deaf"]["pid"].as_i64().unwrap() as i32;
    let out = ctl(&sandbox, &["destroy", "deaf"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    sup.expect_stderr(&format!("sent SIGUSR1 to node 'deaf' (pid {main})"));
    sup.expect_stderr("did not stop in time; sending SIGKILL");
    assert!(wait_until(PATIENCE, || !alive(main) && !alive(child)));
}

#[test]
fn stopping_shows_since_when_and_signal_works_from_scripts() {
    let sandbox = Sandbox::new("stopping-for");
    sandbox.write(
        "s.rhai",
        r#"
        Supervisor::create(#{name: "slow", stop_timeout: 30, command: ["sh", "-c", "trap 'sleep 1; exit 0' TERM; while true; do sleep 0.05; done"]});
        Supervisor::create(#{name: "hup", command: ["sh", "-c", "trap 'echo got HUP' HUP; while true; do sleep 0.05; done"]});
        fn zeek_init() {
            schedule(300, || {
                print(`unknown node: ${Supervisor::signal("nope", "HUP")}`);
                print(`unknown signal: ${Supervisor::signal("hup", "NOPE")}`);
                print(`hup: ${Supervisor::signal("hup", "HUP")}`);
                print(`by number: ${Supervisor::signal("hup", 1)}`);
                Supervisor::restart("slow");
                let s = Supervisor::status("slow").nodes.slow;
                print(`${s.state} for ${s.stopping_for >= 0.0}`);
            });
        }
        "#,
    );
    let sup = sandbox.start(&["run", "s.rhai"]);
    sup.expect_stdout("unknown node: false");
    sup.expect_stdout("unknown signal: false");
    sup.expect_stdout("hup: true");
    sup.expect_stdout("by number: true");
    // (two HUPs close together may reach the shell's trap as one)
    sup.expect_stdout("[hup] got HUP");
    sup.expect_stdout("restarting for true");
    sup.expect_stderr("Supervisor::signal: node with name 'nope' does not exist");
    sup.expect_stderr("Supervisor::signal: unknown signal 'NOPE'");
    let table = ctl(&sandbox, &["status"]).stdout;
    assert!(table.contains("stopping for"), "{table}");
}

#[test]
fn bad_stop_signals_are_refused() {
    let sandbox = Sandbox::new("bad-signal");
    sandbox.write(
        "s.rhai",
        r#"
        for sig in ["NOPE", 0, -9] {
            try { Supervisor::create(#{name: "x", command: ["true"], stop_signal: sig}); }
            catch (e) { print(e); }
        }
        try { Supervisor::create(#{name: "x", command: ["true"], kill_mode: "all"}); }
        catch (e) { print(e); }
        print(Supervisor::create(#{name: "k", command: ["sleep", "9"], stop_signal: "KILL", kill_mode: "mixed"}));
        print("done");
        terminate();
        "#,
    );
    let out = sandbox.run(&["run", "s.rhai"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("Supervisor::NodeConfig.stop_signal: unknown signal 'NOPE'"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("unknown signal '0'"), "{}", out.stdout);
    assert!(out.stdout.contains("unknown signal '-9'"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("Supervisor::NodeConfig.kill_mode: unknown mode 'all'"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\n\ndone") || out.stdout.contains("\ndone"),
        "{}",
        out.stdout
    );
}
