//! `rhai-supervisor top` in a real terminal: tmux runs it in a pane of a given size,
//! `send-keys` types and `capture-pane` reads the screen, polled until what is looked
//! for is there (with a deadline). Each test has a tmux server of its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::util::*;

/// Installs tmux when it is missing (once for all tests).
fn ensure_tmux() {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let present = || Command::new("tmux").arg("-V").output().is_ok();
    if present() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/install-packages");
    let installed = Command::new(&script).status();
    assert!(
        installed.is_ok_and(|s| s.success()) && present(),
        "these tests need tmux: {} failed (run it as root)",
        script.display()
    );
}

/// A tmux server with one pane running a shell command.
pub struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Runs `command` (a shell command line) in `dir`, in a pane of `width`×`height`;
    /// after it, the pane says `top-exited=STATUS` and whether the terminal is back in
    /// canonical mode (`stty` prints `icanon`, not `-icanon`).
    pub fn start(dir: &Path, width: u16, height: u16, command: &str) -> Tmux {
        ensure_tmux();
        // A socket of its own each: a server just told to go may still hold the last.
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let socket = dir.join(format!("tmux-{n}.sock"));
        let script = format!(
            "cd '{}' && {command}; echo top-exited=$?; stty -a | tr ' ' '\\n' | grep -x -- '-\\?icanon'; exec sleep 300",
            dir.display()
        );
        let started = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["-f", "/dev/null", "new-session", "-d", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(script)
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .status()
            .unwrap();
        assert!(started.success());
        Tmux { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Waits until the screen satisfies `condition`; returns it then.
    pub fn wait(&self, what: &str, mut condition: impl FnMut(&str) -> bool) -> String {
        let mut last = String::new();
        if wait_until(PATIENCE, || {
            last = self.screen();
            condition(&last)
        }) {
            return last;
        }
        panic!("the screen never showed {what}:\n{last}");
    }

    pub fn shows(&self, needle: &str) -> String {
        self.wait(needle, |s| s.contains(needle))
    }

    /// Whether the pane is on the alternate screen (a full-screen program draws there).
    fn alternate(&self) -> bool {
        self.tmux(&["display-message", "-p", "#{alternate_on}"])
            .trim()
            == "1"
    }

    /// The process running in the pane's shell: `top`.
    fn top_pid(&self) -> i32 {
        let shell: i32 = self
            .tmux(&["display-message", "-p", "#{pane_pid}"])
            .trim()
            .parse()
            .unwrap();
        let mut found = Vec::new();
        assert!(wait_until(PATIENCE, || {
            found = children_of(shell);
            !found.is_empty()
        }));
        found[0]
    }

    /// Waits for `top` to leave, and checks the terminal was put back.
    pub fn expect_exit(&self, status: i32) -> String {
        let exited = format!("top-exited={status}");
        let screen = self.wait(&exited, |s| {
            s.contains(&exited) && s.lines().any(|l| l.trim_end().ends_with("icanon"))
        });
        assert!(
            !self.alternate(),
            "still on the alternate screen:\n{screen}"
        );
        let mode = screen
            .lines()
            .find(|l| l.trim_end().ends_with("icanon"))
            .unwrap_or_else(|| panic!("no stty line:\n{screen}"));
        assert_eq!(mode.trim(), "icanon", "raw mode left on:\n{screen}");
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

fn supervisor(sandbox: &Sandbox) -> Process {
    sandbox.write(
        "s.rhai",
        r#"fn zeek_init() {
            Supervisor::create(#{name: "web", command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]});
            Supervisor::create(#{name: "db", command: ["sleep", "300"]});
            print("ready");
        }"#,
    );
    let process = sandbox.start(&["run", "s.rhai"]);
    process.expect_stdout("ready");
    process
}

fn ctl(sandbox: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["ctl"];
    all.extend_from_slice(args);
    sandbox.run(&all).stdout
}

/// The screen's row of a node (the table's), if it is shown.
pub fn row<'a>(screen: &'a str, node: &str) -> Option<&'a str> {
    screen.lines().find(|l| {
        l.get(2..)
            .is_some_and(|rest| rest.starts_with(&format!("{node} ")))
    })
}

#[test]
fn top_shows_the_nodes_and_its_keys_act_on_them() {
    let sandbox = Sandbox::new("top");
    let mut sup = supervisor(&sandbox);
    let tmux = Tmux::start(&sandbox.dir, 80, 24, &format!("'{}' top", binary()));
    let screen = tmux.wait("both nodes running", |s| {
        row(s, "web").is_some_and(|r| r.contains("running"))
            && row(s, "db").is_some_and(|r| r.contains("running"))
    });
    assert!(tmux.alternate());
    let lines: Vec<&str> = screen.lines().collect();
    assert!(
        lines[0].starts_with("rhai-supervisor top  2 nodes: 2 running"),
        "{screen}"
    );
    for header in [
        "NODE",
        "STATE",
        "PID",
        "UPTIME",
        "CPU%",
        "MEM",
        "RESTARTS",
        "HEALTH",
        "LAST EXIT",
    ] {
        assert!(lines[1].contains(header), "{header}:\n{screen}");
    }
    assert!(row(&screen, "db").unwrap().starts_with("> db"), "{screen}");
    assert!(lines[23].starts_with("q quit"), "{screen}");
    let pid = numbers_after(&ctl(&sandbox, &["status", "web"]), "running  ")[0];
    assert!(
        row(&screen, "web").unwrap().contains(&pid.to_string()),
        "{screen}"
    );

    // The second's sample brings what the processes use: MEM, then CPU % (from two).
    let screen = tmux.wait("usage of db", |s| {
        row(s, "db").is_some_and(|r| r.contains('K') || r.contains('M'))
    });
    let cells: Vec<&str> = row(&screen, "db").unwrap().split_whitespace().collect();
    let cpu = cells[cells.iter().position(|c| *c == "db").unwrap() + 4];
    assert!(cpu.parse::<f64>().is_ok() || cpu == "-", "CPU% {cells:?}");
    tmux.wait("CPU % of db", |s| {
        row(s, "db").is_some_and(|r| r.split_whitespace().any(|c| c == "0.0"))
    });
    // Down to web, Enter: its output follows below the table.
    tmux.keys(&["j", "Enter"]);
    tmux.shows("output of web");
    tmux.wait("web's output", |s| s.contains("tick "));

    // r restarts the selected node.
    tmux.keys(&["r"]);
    let screen = tmux.wait("web restarted", |s| {
        row(s, "web").is_some_and(|r| r.contains(" 1 ") && r.contains("SIGTERM"))
    });
    assert!(
        !row(&screen, "web").unwrap().contains(&pid.to_string()),
        "{screen}"
    );
    assert!(ctl(&sandbox, &["status", "web"]).contains("running"));

    // d asks first: n keeps the node, y destroys it.
    tmux.keys(&["d"]);
    tmux.shows("destroy node 'web'? y destroys it, any other key keeps it");
    tmux.keys(&["n"]);
    tmux.shows("node 'web' is left as it is");
    assert!(ctl(&sandbox, &["status"]).contains("web"));
    tmux.keys(&["d"]);
    tmux.shows("destroy node 'web'?");
    tmux.keys(&["y"]);
    tmux.wait("web gone", |s| {
        row(s, "web").is_none() && s.contains("1 node: 1 running")
    });
    assert!(!ctl(&sandbox, &["status"]).contains("web"));
    tmux.shows("(node 'web' was destroyed)");

    // / filters by name or state; Esc clears it.
    tmux.keys(&["/", "z", "z", "Enter"]);
    tmux.shows("no node matches 'zz'");
    tmux.keys(&["Escape"]);
    tmux.wait("db again", |s| row(s, "db").is_some());

    // A node created elsewhere appears at once: the view follows the events.
    ctl(
        &sandbox,
        &["create", r#"{"name": "late", "command": ["sleep", "300"]}"#],
    );
    tmux.wait("the new node", |s| {
        row(s, "late").is_some_and(|r| r.contains("running"))
    });

    tmux.keys(&["q"]);
    tmux.expect_exit(0);
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn a_terminal_too_small_is_told_so_and_a_resize_redraws() {
    let sandbox = Sandbox::new("top-small");
    let mut sup = supervisor(&sandbox);
    let tmux = Tmux::start(&sandbox.dir, 80, 24, &format!("'{}' top", binary()));
    tmux.wait("the table", |s| row(s, "web").is_some());
    tmux.tmux(&["resize-window", "-x", "40", "-y", "10"]);
    let screen = tmux.shows("terminal too small: 40x10");
    assert!(screen.contains("needs at least 50x12"), "{screen}");
    assert!(row(&screen, "web").is_none(), "{screen}");
    tmux.tmux(&["resize-window", "-x", "100", "-y", "30"]);
    let screen = tmux.wait("the table again", |s| row(s, "web").is_some());
    assert!(!screen.contains("too small"), "{screen}");
    // Ctrl-C leaves as q does.
    tmux.keys(&["C-c"]);
    tmux.expect_exit(0);
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
}

#[test]
fn top_leaves_when_the_supervisor_stops_or_goes_away_or_on_a_signal() {
    let sandbox = Sandbox::new("top-gone");
    // The supervisor stops: top says so and leaves with status 0.
    let mut sup = supervisor(&sandbox);
    let tmux = Tmux::start(&sandbox.dir, 80, 24, &format!("'{}' top", binary()));
    tmux.wait("the table", |s| row(s, "web").is_some());
    ctl(&sandbox, &["stop"]);
    let screen = tmux.expect_exit(0);
    assert!(
        screen.contains("rhai-supervisor: the supervisor is stopping"),
        "{screen}"
    );
    assert_eq!(sup.expect_exit(), Some(0));
    drop(tmux);

    // Killed: top says it lost the supervisor, status 3.
    let sup = supervisor(&sandbox);
    let tmux = Tmux::start(&sandbox.dir, 80, 24, &format!("'{}' top", binary()));
    tmux.wait("the table", |s| row(s, "web").is_some());
    sup.signal(SIGKILL);
    let screen = tmux.expect_exit(3);
    assert!(screen.contains("lost the connection"), "{screen}");
    drop(tmux);
    // (The nodes of the killed supervisor die with it: their parent-death signal.)

    // SIGTERM to top: it leaves cleanly too.
    let mut sup = supervisor(&sandbox);
    let tmux = Tmux::start(&sandbox.dir, 80, 24, &format!("'{}' top", binary()));
    tmux.wait("the table", |s| row(s, "web").is_some());
    assert!(kill(tmux.top_pid(), SIGTERM));
    tmux.expect_exit(0);
    drop(tmux);
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));

    // No supervisor: said before the screen is taken, status 3.
    let tmux = Tmux::start(
        &sandbox.dir,
        80,
        24,
        &format!("'{}' top --socket nowhere.sock", binary()),
    );
    let screen = tmux.expect_exit(3);
    assert!(
        screen.contains("cannot connect to the supervisor at 'nowhere.sock'"),
        "{screen}"
    );
    // Not on a terminal: a usage error.
    let out = sandbox.run(&["top"]);
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("top needs a terminal"),
        "{}",
        out.stderr
    );
}
