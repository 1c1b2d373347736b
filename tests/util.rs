//! Helpers for the integration tests: a temporary directory per test, the real binary
//! started in it with its output collected as it arrives, and waiting on conditions
//! with deadlines (never fixed sleeps).

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any condition may take to come true on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rhai-supervisor")
}

/// Polls `condition` until it holds or `timeout` passes. For conditions on the
/// outside world (a pid gone, a file written) that send no notification.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A directory of its own for one test, removed when the test passes.
pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "rhai-supervisor-test-{}-{n}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Sandbox { dir }
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Runs the binary to completion (within `PATIENCE`).
    pub fn run(&self, args: &[&str]) -> Finished {
        let mut process = self.start(args);
        let status = process
            .wait_exit(PATIENCE)
            .expect("the command did not finish in time");
        Finished {
            status,
            stdout: process.stdout(),
            stderr: process.stderr(),
        }
    }

    /// Runs the binary to completion (within `PATIENCE`), with `adjust` applied to its
    /// command first (environment, directory).
    pub fn run_with(&self, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Finished {
        let mut process = self.start_with(args, adjust);
        let status = process
            .wait_exit(PATIENCE)
            .expect("the command did not finish in time");
        Finished {
            status,
            stdout: process.stdout(),
            stderr: process.stderr(),
        }
    }

    /// Starts the binary in the background.
    pub fn start(&self, args: &[&str]) -> Process {
        self.start_with(args, |_| {})
    }

    pub fn start_with(&self, args: &[&str], adjust: impl FnOnce(&mut Command)) -> Process {
        let mut command = Command::new(binary());
        command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        adjust(&mut command);
        let mut child = command.spawn().expect("cannot start the binary");
        let stdout = Collected::from(child.stdout.take().unwrap());
        let stderr = Collected::from(child.stderr.take().unwrap());
        Process {
            child,
            stdout,
            stderr,
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Text a stream has produced so far, with a way to wait for more.
#[derive(Clone, Default)]
pub struct Collected {
    inner: Arc<(Mutex<(String, bool)>, Condvar)>,
}

impl Collected {
    pub fn from(mut stream: impl Read + Send + 'static) -> Collected {
        let collected = Collected::default();
        let sink = collected.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                let (lock, cond) = &*sink.inner;
                let mut state = lock.lock().unwrap();
                if n == 0 {
                    state.1 = true;
                    cond.notify_all();
                    return;
                }
                state.0.push_str(&String::from_utf8_lossy(&buf[..n]));
                cond.notify_all();
            }
        });
        collected
    }

    pub fn text(&self) -> String {
        self.inner.0.lock().unwrap().0.clone()
    }

    /// Waits until the text satisfies `condition`; returns the text then.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.inner;
        let mut state = lock.lock().unwrap();
        loop {
            if condition(&state.0) {
                return Some(state.0.clone());
            }
            let now = Instant::now();
            if now >= deadline || state.1 {
                return if condition(&state.0) {
                    Some(state.0.clone())
                } else {
                    None
                };
            }
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}

/// The binary running in the background. Killed (with SIGKILL) if the test ends first.
pub struct Process {
    pub child: Child,
    pub stdout: Collected,
    pub stderr: Collected,
}

impl Process {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits until stdout contains `needle`; panics with both streams if it does not.
    pub fn expect_stdout(&self, needle: &str) -> String {
        self.expect_stdout_count(needle, 1)
    }

    /// Waits until stdout contains `needle` at least `count` times.
    pub fn expect_stdout_count(&self, needle: &str, count: usize) -> String {
        match self
            .stdout
            .wait_for(PATIENCE, |t| t.matches(needle).count() >= count)
        {
            Some(text) => text,
            None => panic!(
                "stdout never had {count} × {needle:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                self.stdout(),
                self.stderr()
            ),
        }
    }

    pub fn expect_stderr(&self, needle: &str) -> String {
        match self.stderr.wait_for(PATIENCE, |t| t.contains(needle)) {
            Some(text) => text,
            None => panic!(
                "stderr never had {needle:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                self.stdout(),
                self.stderr()
            ),
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with our own child's pid.
        unsafe { libc_kill(self.pid(), signal) };
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the readers see the end of both streams.
                self.stdout.wait_for(Duration::from_secs(5), |_| false);
                self.stderr.wait_for(Duration::from_secs(5), |_| false);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the exit and returns its code, panicking with the output if it does not come.
    pub fn expect_exit(&mut self) -> Option<i32> {
        match self.wait_exit(PATIENCE) {
            Some(status) => status.code(),
            None => panic!(
                "the supervisor did not exit\n--- stdout:\n{}\n--- stderr:\n{}",
                self.stdout(),
                self.stderr()
            ),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

pub const SIGHUP: i32 = 1;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;
pub const SIGINT: i32 = 2;
pub const SIGSTOP: i32 = 19;
pub const SIGCONT: i32 = 18;

/// Sends a signal to any process.
pub fn kill(pid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) takes plain integers.
    unsafe { libc_kill(pid, signal) == 0 }
}

/// Whether `pid` names a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// A field of `/proc/PID/status`, such as `Cpus_allowed_list`.
pub fn proc_status(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')
            .map(|v| v.trim().to_string())
    })
}

/// The working directory of a process.
pub fn proc_cwd(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// The environment of a process.
pub fn proc_env(pid: i32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// All integers that follow `prefix` in `text`, in order: `numbers_after("pid=", ..)`.
pub fn numbers_after(text: &str, prefix: &str) -> Vec<i32> {
    text.match_indices(prefix)
        .filter_map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .collect()
}

/// The lines of `text` that contain `needle`.
pub fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// How many descriptors a process has open.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Children of `pid` that are zombies (exited, not reaped).
pub fn zombie_children(pid: i32) -> Vec<i32> {
    children_where(pid, |state| state == "Z")
}

/// Runs `f` in the child before exec (for limits and user changes in tests).
pub fn before_exec(
    command: &mut std::process::Command,
    f: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closures given in the tests only make system calls (setrlimit).
    unsafe {
        command.pre_exec(f);
    }
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    proc_status(std::process::id() as i32, "Uid")
        .is_some_and(|uid| uid.split_whitespace().next() == Some("0"))
}

/// Live (not zombie) children of `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    children_where(pid, |state| state != "Z")
}

/// Children of `pid` whose state (`R`, `S`, `Z`, ...) satisfies `wanted`.
fn children_where(pid: i32, wanted: impl Fn(&str) -> bool) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                return false;
            };
            let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
            let state = fields.next().unwrap_or("");
            let parent = fields.next().and_then(|f| f.parse::<i32>().ok());
            wanted(state) && parent == Some(pid)
        })
        .collect()
}
