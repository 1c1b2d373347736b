//! The REPL: driven through a real pseudo-terminal as a person would (keys, Ctrl-C,
//! Ctrl-D, Tab, history, typing ahead, pastes), and through a pipe as a script would.
//!
//! Terminal output is matched after removing escape sequences and carriage returns.
//! A fresh prompt always starts a line (`\nsup> `), while the editor redraws a line
//! in place; waiting for `\nsup> ` is how a test knows an input has been handled.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::pty::{Winsize, openpty};
use nix::sys::termios::{LocalFlags, tcgetattr};

use crate::util::*;

const PROMPT: &str = "\nsup> ";
const CONTINUATION: &str = "\n...> ";

/// The REPL on the far side of a pseudo-terminal.
struct Repl {
    child: Child,
    master: File,
    screen: Collected,
    /// How much of the (cleaned) output earlier expectations used up.
    seen: usize,
}

impl Repl {
    fn start(sandbox: &Sandbox, args: &[&str]) -> Repl {
        let mut command = Command::new(binary());
        command.arg("repl").args(args);
        Repl::spawn(sandbox, command)
    }

    /// Runs `command` in `sandbox` on a terminal of its own, as a shell runs it in a
    /// terminal window.
    fn spawn(sandbox: &Sandbox, mut command: Command) -> Repl {
        let size = Winsize {
            ws_row: 50,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&size, None).expect("cannot open a pseudo-terminal");
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
        }
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        command
            .current_dir(&sandbox.dir)
            .env("TERM", "xterm")
            .env("HOME", &sandbox.dir)
            .env("XDG_STATE_HOME", sandbox.path("state"))
            .env_remove("NO_COLOR")
            .stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave));
        // SAFETY: between fork and exec only setsid(2) and ioctl(2), both
        // async-signal-safe; the terminal becomes the child's controlling terminal, so
        // Ctrl-C reaches it as SIGINT and a shell there has job control.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("cannot start the program");
        drop(command);
        drop(pty.slave);
        let master = File::from(pty.master);
        let screen = Collected::from(master.try_clone().unwrap());
        Repl {
            child,
            master,
            screen,
            seen: 0,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Types `keys` (a line needs its own `\r`).
    fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// Types `line` and Enter.
    fn line(&mut self, line: &str) {
        self.send(line);
        self.send("\r");
    }

    /// Pastes `text` as a terminal does with bracketed paste on (the REPL turns it on).
    fn paste(&mut self, text: &str) {
        self.send(&format!("\x1b[200~{text}\x1b[201~"));
    }

    /// Everything shown so far, cleaned.
    fn text(&self) -> String {
        clean(&self.screen.text())
    }

    /// Waits until `needle` appears after what earlier expectations used; returns
    /// the text up to and including it.
    fn expect(&mut self, needle: &str) -> String {
        let seen = self.seen;
        let found = self.screen.wait_for(PATIENCE, |raw| {
            clean(raw).get(seen..).is_some_and(|t| t.contains(needle))
        });
        let text = match found {
            Some(raw) => clean(&raw),
            None => panic!(
                "the terminal never showed {needle:?} after:\n{}\n--- all:\n{}",
                self.text().get(seen..).unwrap_or(""),
                self.text()
            ),
        };
        let at = seen + text[seen..].find(needle).unwrap() + needle.len();
        self.seen = at;
        text[seen..at].to_string()
    }

    /// Waits until every one of `needles` appears after what earlier expectations
    /// used, in any order; returns the text up to the end of the last one.
    fn expect_all(&mut self, needles: &[&str]) -> String {
        let seen = self.seen;
        let all_there = |text: &str| needles.iter().all(|n| text.contains(n));
        let found = self.screen.wait_for(PATIENCE, |raw| {
            clean(raw).get(seen..).is_some_and(all_there)
        });
        let Some(raw) = found else {
            panic!(
                "the terminal never showed all of {needles:?} after:\n{}",
                self.text().get(seen..).unwrap_or("")
            );
        };
        let text = clean(&raw);
        let end = needles
            .iter()
            .filter_map(|n| text[seen..].find(n).map(|at| seen + at + n.len()))
            .max()
            .unwrap_or(seen);
        self.seen = end;
        text[seen..end].to_string()
    }

    /// Types a line (or lines), waits for its echo and then for the next prompt;
    /// returns what was shown from before the echo.
    fn enter(&mut self, line: &str) -> String {
        self.line(line);
        let mut shown = self.expect(line.rsplit('\n').next().unwrap_or(""));
        shown.push_str(&self.expect(PROMPT));
        self.wait_for_editor();
        shown
    }

    /// Ctrl-C at the prompt: waits for the fresh prompt. (Keys typed before it are
    /// lost with the input, as in a shell.)
    fn clear_input(&mut self) {
        self.send("\x03");
        self.expect(PROMPT);
        self.wait_for_editor();
    }

    /// Waits until the REPL holds the terminal in raw mode (from its start to its end:
    /// keys typed at any time wait for the editor, unechoed).
    fn wait_for_editor(&self) {
        let raw =
            || tcgetattr(&self.master).is_ok_and(|t| !t.local_flags.contains(LocalFlags::ICANON));
        assert!(
            wait_until(PATIENCE, raw),
            "the editor never waited for keys:\n{}",
            self.text()
        );
    }

    fn expect_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() >= deadline {
                panic!("the REPL did not exit; it showed:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Repl {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Terminal output without escape sequences and carriage returns.
fn clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\x1b' => match chars.next() {
                // CSI: parameters, then a final byte in @..~.
                Some('[') => {
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(d) = chars.next() {
                        if d == '\x07' || (d == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            _ => out.push(c),
        }
    }
    out
}

/// The lines of `shown` that are not the echo of `typed`, a prompt or empty.
fn other_lines<'a>(shown: &'a str, typed: &str) -> Vec<&'a str> {
    shown
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(typed) && !l.starts_with("sup>"))
        .collect()
}

#[test]
fn values_are_echoed_and_definitions_persist() {
    let sandbox = Sandbox::new("repl-values");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    let shown = repl.enter("let x = 40;");
    assert_eq!(other_lines(&shown, "let x = 40;"), Vec::<&str>::new());
    repl.enter("fn add(a, b) { a + b }");
    repl.enter("const LIMIT = 5;");
    let shown = repl.enter("add(x, 2) + LIMIT - 5");
    assert!(shown.contains("\n42\n"), "{shown}");
    let shown = repl.enter("x += 1; x");
    assert!(shown.contains("\n41\n"), "{shown}");
    let shown = repl.enter("Supervisor::status()");
    assert!(
        shown.contains("\nSupervisor::Status(#{nodes: #{}})\n"),
        "{shown}"
    );
    let shown = repl.enter("Supervisor::NodeConfig(\"w1\")");
    assert!(
        shown.contains("\nSupervisor::NodeConfig(#{name: \"w1\"})\n"),
        "{shown}"
    );
    let shown = repl.enter("LIMIT = 6;");
    assert!(shown.contains("error: "), "{shown}");
    repl.send("\x04");
    assert_eq!(repl.expect_exit(), Some(0));
}

#[test]
fn unfinished_statements_continue_on_the_next_line() {
    let sandbox = Sandbox::new("repl-multi");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    repl.line("fn triple(n) {");
    repl.expect(CONTINUATION);
    repl.line("  n * 3");
    repl.expect(CONTINUATION);
    repl.enter("}");
    repl.line("let m = #{a: 1,");
    repl.expect(CONTINUATION);
    repl.enter("  b: 2};");
    let shown = repl.enter("triple(m.b)");
    assert!(shown.contains("\n6\n"), "{shown}");
    repl.line("100 +");
    repl.expect(CONTINUATION);
    let shown = repl.enter("  23");
    assert!(shown.contains("\n123\n"), "{shown}");
    repl.line("let s = `two");
    repl.expect(CONTINUATION);
    repl.enter("lines`;");
    let shown = repl.enter("s.len()");
    assert!(shown.contains("\n9\n"), "{shown}");
    // Ctrl-D at the continuation prompt runs the statement as it stands, which
    // shows what is missing; the session goes on.
    repl.line("let open = [1, 2");
    repl.expect(CONTINUATION);
    repl.send("\x04");
    repl.expect("error: line ");
    repl.expect("  1 | let open = [1, 2\n");
    repl.expect(PROMPT);
    repl.wait_for_editor();
    // Ctrl-C at the continuation prompt forgets the unfinished statement.
    repl.line("fn never(");
    repl.expect(CONTINUATION);
    repl.clear_input();
    let shown = repl.enter("1 + 1");
    assert!(shown.contains("\n2\n"), "{shown}");
    repl.send("\x04");
    assert_eq!(repl.expect_exit(), Some(0));
}

#[test]
fn errors_point_at_the_input_and_the_session_goes_on() {
    let sandbox = Sandbox::new("repl-errors");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    let shown = repl.enter("let bad = 1 +* 2;");
    assert!(
        shown.contains("error: line 1, column 14: Unexpected '*'\n  1 | let bad = 1 +* 2;\n    |              ^\n"),
        "{shown}"
    );
    let shown = repl.enter("let y = 1; nope + 1");
    assert!(shown.contains("Variable not found: nope"), "{shown}");
    let shown = repl.enter("Supervisor::create(#{name: \"x\", nme: 1})");
    assert!(
        shown.contains("has no field 'nme'; did you mean 'name'?"),
        "{shown}"
    );
    assert!(
        shown.contains("  1 | Supervisor::create(#{name: \"x\", nme: 1})\n    |             ^"),
        "{shown}"
    );
    let shown = repl.enter("fn fails() { throw \"from a function\" }");
    assert_eq!(other_lines(&shown, "fn fails"), Vec::<&str>::new());
    let shown = repl.enter("  fails()");
    assert!(shown.contains("from a function"), "{shown}");
    assert!(shown.contains("\n    |   ^"), "{shown}");
    let shown = repl.enter(":frobnicate");
    assert!(shown.contains("unknown command ':frobnicate'"), "{shown}");
    let shown = repl.enter("\"still here\"");
    assert!(shown.contains("\n\"still here\"\n"), "{shown}");
    repl.send("\x04");
    assert_eq!(repl.expect_exit(), Some(0));
}

#[test]
fn ctrl_c_clears_the_input_and_stops_a_running_statement() {
    let sandbox = Sandbox::new("repl-ctrl-c");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    repl.send("let junk = ");
    repl.expect("let junk = ");
    repl.clear_input();
    // Had the input stayed, this would be `let junk = 7 * 6`, which echoes nothing.
    let shown = repl.enter("7 * 6");
    assert!(shown.contains("\n42\n"), "{shown}");
    // Longer than any time limit: only Ctrl-C ends it.
    repl.line("print(\"spinning\"); let n = 0; loop { n += 1; }");
    repl.expect("\nspinning\n");
    let started = Instant::now();
    repl.send("\x03");
    let shown = repl.expect(PROMPT);
    assert!(shown.contains("error: line 1, column "), "{shown}");
    assert!(shown.contains("interrupted"), "{shown}");
    assert!(started.elapsed() < PATIENCE);
    // The variables of the statement are still there, and so is the supervisor.
    let shown = repl.enter("n > 0");
    assert!(shown.contains("\ntrue\n"), "{shown}");
    repl.send("\x04");
    assert_eq!(repl.expect_exit(), Some(0));
}

#[test]
fn lines_that_arrive_together_all_run_in_order() {
    let sandbox = Sandbox::new("repl-type-ahead");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    // Two lines in one read, as when typed faster than the first one runs.
    repl.send("let x = 40;\rx + 2\r");
    repl.expect("let x = 40;\n");
    repl.expect("sup> x + 2\n42\n");
    repl.expect("sup> ");
    // The end of a line and another, arriving during an edit.
    repl.send("let a = ");
    repl.expect("let a = ");
    repl.send("1;\ra + 1\r");
    repl.expect("\n2\n");
    // Text pasted without bracketed paste, or sent by `tmux send-keys`: the lines of
    // a function go on at `...>`, and it runs once it is whole.
    repl.send("fn twice(n) {\r  n * 2\r}\rtwice(21)\r");
    repl.expect("...>   n * 2\n");
    repl.expect("...> }\n");
    repl.expect("sup> twice(21)\n42\n");
    // (At the prompt: while a statement runs, Ctrl-C would stop it instead.)
    repl.expect("sup> ");
    // Keys that end an input with what follows them: Ctrl-C forgets the line so far,
    // Ctrl-D at `...>` runs the unfinished statement; what comes after still runs.
    repl.send("let junk = \x037 * 6\r");
    repl.expect("sup> 7 * 6\n42\n");
    repl.send("let open = [1,\r\x04x + 3\r");
    repl.expect("error: line ");
    repl.expect("sup> x + 3\n43\n");
    repl.expect("sup> ");
    repl.send("\x04");
    assert_eq!(repl.expect_exit(), Some(0));
    // The terminal is given back as it was.
    let settings = tcgetattr(&repl.master).unwrap();
    assert!(
        settings
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG),
        "the terminal was left in raw mode: {:?}",
        settings.local_flags
    );
}

#[test]
fn what_is_typed_while_a_statement_runs_runs_after_it() {
    let sandbox = Sandbox::new("repl-type-while-busy");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    repl.line(r#"print("started"); let t = timestamp(); while t.elapsed < 1.0 {} "done""#);
    repl.expect("\nstarted\n");
    repl.send("40 + 2\r");
    repl.paste("let late = 1;\nlate + 1\n");
    let shown = repl.expect("\"done\"\n");
    // Nothing echoed the keys meanwhile: they are shown when the editor takes them.
    assert!(!shown.contains("40 + 2"), "{shown}");
    repl.expect("sup> 40 + 2\n42\n");
    repl.expect("sup> let late = 1;\n");
    repl.expect("sup> late + 1\n2\n");
    repl.expect("sup> ");
    repl.send("\x04");
    assert_eq!(repl.expect_exit(), Some(0));
}

#[test]
fn a_pasted_block_runs_statement_by_statement() {
    let sandbox = Sandbox::new("repl-paste");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    repl.paste("let y = 5;\ny * 2\nprint(`y=${y}`);\n");
    // Each statement is shown at its prompt, as if typed, and runs in turn.
    for shown in [
        "sup> let y = 5;\n",
        "sup> y * 2\n10\n",
        "sup> print(`y=${y}`);\ny=5\n",
    ] {
        repl.expect(shown);
    }
    repl.expect("sup> ");
    assert!(!repl.text().contains("error"), "{}", repl.text());
    // A function over several lines stays one statement. A tab in a paste is text,
    // not completion; lines may end in CR LF.
    repl.paste("fn area(w, h) {\r\n\tlet a = w * h;\r\n\ta\r\n}\r\narea(6, 7)\r\n");
    repl.expect("sup> fn area(w, h) {\n");
    repl.expect("...> \tlet a = w * h;\n");
    repl.expect("...> \ta\n");
    repl.expect("...> }\n");
    repl.expect("sup> area(6, 7)\n42\n");
    repl.expect("sup> ");
    // Up brings the function back as one entry, above the call.
    repl.send("\x1b[A\x1b[A");
    repl.expect("let a = w * h;");
    repl.clear_input();
    // A map over several lines is one statement too.
    repl.paste("let sizes = #{\n    small: 1,\n    large: 9\n};\nsizes.large\n");
    repl.expect("...>     large: 9\n");
    repl.expect("sup> sizes.large\n9\n");
    repl.expect("sup> ");
    // The last line of a paste without a newline at its end waits to be finished.
    repl.paste("area(2, 3)");
    repl.expect("area(2, 3)");
    repl.line(" * 10");
    repl.expect("\n60\n");
    repl.expect("sup> ");
    repl.send("\x04");
    assert_eq!(repl.expect_exit(), Some(0));
}

#[test]
fn a_thousand_line_paste_runs_every_line_in_order() {
    let sandbox = Sandbox::new("repl-paste-1000");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    repl.enter("let seen = [];");
    let check = "let in_order = true; for i in 0..seen.len() { if seen[i] != i { in_order = false } } [seen.len(), in_order]";
    let lines: String = (0..1000).map(|i| format!("seen.push({i});\n")).collect();
    repl.paste(&lines);
    repl.expect("sup> seen.push(999);\n");
    let shown = repl.enter(check);
    assert!(shown.contains("\n[1000, true]\n"), "{shown}");
    // The same typed in one go (as `tmux send-keys` or `expect` would).
    let lines: String = (1000..2000).map(|i| format!("seen.push({i});\r")).collect();
    repl.send(&lines);
    repl.expect("sup> seen.push(1999);\n");
    let shown = repl.enter(check);
    assert!(shown.contains("\n[2000, true]\n"), "{shown}");
    assert!(!repl.text().contains("error"), "{}", repl.text());
    repl.send("\x04");
    assert_eq!(repl.expect_exit(), Some(0));
}

#[test]
fn ctrl_c_stops_the_running_statement_and_what_was_typed_around_it_runs() {
    let sandbox = Sandbox::new("repl-ctrl-c-type-ahead");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    repl.line(r#"print("spinning"); let n = 0; loop { n += 1; }"#);
    repl.expect("\nspinning\n");
    // Typed before Ctrl-C, and with it in one read: the loop never ends by itself, so
    // all of it arrives while the statement runs.
    repl.send("2 + 2\r");
    repl.send("\x03n > 0\r");
    let shown = repl.expect("interrupted");
    assert!(shown.contains("error: line 1, column "), "{shown}");
    repl.expect("sup> 2 + 2\n4\n");
    repl.expect("sup> n > 0\ntrue\n");
    repl.expect("sup> ");
    repl.send("\x04");
    assert_eq!(repl.expect_exit(), Some(0));
}

#[test]
fn ctrl_z_suspends_the_repl_and_fg_brings_it_back() {
    let sandbox = Sandbox::new("repl-job-control");
    // An interactive shell on the terminal, with job control, runs the REPL as a job.
    let mut shell = Command::new("sh");
    shell.arg("-i").env("PS1", "$ ").env("ENV", "/dev/null");
    let mut repl = Repl::spawn(&sandbox, shell);
    repl.expect("$ ");
    repl.line(&format!("'{}' repl --no-socket", binary()));
    repl.expect(PROMPT);
    repl.enter("let q = 7;");
    // At the prompt.
    repl.send("\x1a");
    repl.expect("Stopped");
    repl.expect("$ ");
    repl.line("fg");
    repl.expect(PROMPT);
    let shown = repl.enter("q * 6");
    assert!(shown.contains("\n42\n"), "{shown}");
    // While a statement runs; what was typed before Ctrl-Z runs after it.
    repl.line(r#"print("started"); let t = timestamp(); while t.elapsed < 1.0 {} "done""#);
    repl.expect("\nstarted\n");
    repl.send("q + 1\r\x1a");
    repl.expect("Stopped");
    repl.expect("$ ");
    repl.line("fg");
    repl.expect("\"done\"\n");
    repl.expect("sup> q + 1\n8\n");
    repl.send("\x04");
    repl.expect("$ ");
    repl.line("exit");
    assert_eq!(repl.expect_exit(), Some(0));
}

#[test]
fn ctrl_z_with_no_shell_to_continue_the_repl_changes_nothing() {
    // Alone in its session, the REPL's process group has no shell to continue it:
    // the kernel drops the stop, and the session goes on with its terminal in raw mode.
    let sandbox = Sandbox::new("repl-orphan-ctrl-z");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    repl.send("\x1a");
    let shown = repl.enter("1 + 1");
    assert!(shown.contains("\n2\n"), "{shown}");
    repl.line(r#"print("started"); let t = timestamp(); while t.elapsed < 0.5 {} "done""#);
    repl.expect("\nstarted\n");
    repl.send("\x1a2 + 2\r");
    repl.expect("\"done\"\n");
    repl.expect("sup> 2 + 2\n4\n");
    repl.wait_for_editor();
    repl.send("\x04");
    assert_eq!(repl.expect_exit(), Some(0));
}

#[test]
fn tab_completes_api_names_fields_and_node_names() {
    let sandbox = Sandbox::new("repl-complete");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    // One candidate: completed in place (the call's parenthesis included).
    repl.send("Supervisor::sta\t");
    repl.expect("Supervisor::status(");
    let shown = repl.enter(")");
    assert!(
        shown.contains("Supervisor::Status(#{nodes: #{}})"),
        "{shown}"
    );
    // Several: a second Tab lists them.
    repl.send("Supervisor::\t\t");
    repl.expect_all(&[
        "create",
        "destroy",
        "status",
        "NodeConfig",
        "MANAGER",
        "WORKER",
    ]);
    // Below the list, the prompt and the input are drawn again.
    repl.expect("\nsup> Supervisor::");
    repl.clear_input();
    // Fields of a global, by its value.
    repl.enter("let settings = #{zebra_stripes: 7};");
    repl.send("settings.zeb\t");
    repl.expect("settings.zebra_stripes");
    let shown = repl.enter("");
    assert!(shown.contains("\n7\n"), "{shown}");
    repl.enter("let cfg = Supervisor::NodeConfig(\"c1\");");
    repl.send("cfg.direc\t");
    repl.expect("cfg.directory");
    repl.enter(" = \"d1\";");
    let shown = repl.enter("cfg");
    assert!(shown.contains("directory: \"d1\""), "{shown}");
    // Node names inside the string argument of status/destroy/restart.
    let shown = repl.enter(r#"Supervisor::create(#{name: "alpha1", command: ["sleep", "300"]})"#);
    assert!(shown.contains("\n\"\"\n"), "{shown}");
    repl.send("Supervisor::status(\"alp\t");
    repl.expect("\"alpha1\"");
    // Had the name not been completed, this status would have no entry.
    let shown = repl.enter(").nodes.len()");
    assert!(shown.contains("\n1\n"), "{shown}");
    repl.send("Supervisor::destroy(\t");
    repl.expect("destroy(\"alpha1\"");
    let shown = repl.enter(")");
    assert!(shown.contains("\ntrue\n"), "{shown}");
    repl.send("\x04");
    assert_eq!(repl.expect_exit(), Some(0));
}

#[test]
fn a_node_made_at_the_prompt_shows_in_status_and_is_gone_after_ctrl_d() {
    let sandbox = Sandbox::new("repl-node");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    repl.enter("fn zeek_done() { print(\"zeek_done ran\") }");
    repl.enter("fn node_status(node, pid) { print(`node_status ${node} ${pid}`) }");
    repl.line(r#"Supervisor::create(#{name: "sleeper", command: ["sleep", "300"]})"#);
    // The value and what the hook printed, in either order.
    repl.expect_all(&["\n\"\"\n", "node_status sleeper "]);
    repl.wait_for_editor();
    let shown = repl.enter(":status");
    let header = shown
        .lines()
        .find(|l| l.starts_with("NAME"))
        .unwrap_or_else(|| panic!("no table: {shown}"));
    for column in ["STATE", "PID", "RESTARTS", "UPTIME", "LAST EXIT"] {
        assert!(header.contains(column), "{shown}");
    }
    let row = shown
        .lines()
        .find(|l| l.starts_with("sleeper "))
        .unwrap_or_else(|| panic!("no row for the node: {shown}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "running", "{row}");
    let pid: i32 = cells[2].parse().unwrap();
    assert!(alive(pid));
    assert_eq!(
        proc_status(pid, "PPid").and_then(|p| p.parse().ok()),
        Some(repl.pid())
    );
    repl.send("\x04");
    repl.expect("zeek_done ran");
    assert_eq!(repl.expect_exit(), Some(0));
    assert!(
        wait_until(PATIENCE, || !alive(pid)),
        "the node outlived the REPL"
    );
}

#[test]
fn node_output_is_printed_above_the_line_being_typed() {
    let sandbox = Sandbox::new("repl-output");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    repl.line(
        r#"Supervisor::create(#{name: "ticker", command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done"]})"#,
    );
    repl.expect_all(&["\n\"\"\n", "[ticker] tick-1\n"]);
    repl.wait_for_editor();
    // Idle at the prompt, the node's lines arrive, each above a prompt drawn again.
    let last = numbers_after(&repl.text(), "[ticker] tick-")
        .into_iter()
        .max()
        .unwrap();
    repl.expect(&format!("[ticker] tick-{}\nsup> ", last + 1));
    repl.send("let typed = 12");
    repl.expect("let typed = 12");
    let text = repl.text();
    let last = numbers_after(&text, "[ticker] tick-")
        .into_iter()
        .max()
        .unwrap();
    // Two more lines while the input waits: each is printed on a line of its own,
    // and the prompt and the unfinished input are drawn again below it.
    let needle = format!("[ticker] tick-{}\n", last + 2);
    repl.expect(&needle);
    repl.expect("\nsup> let typed = 12");
    repl.line(" + 30; typed");
    repl.expect("\n42\n");
    repl.wait_for_editor();
    repl.send("\x04");
    assert_eq!(repl.expect_exit(), Some(0));
}

#[test]
fn history_is_kept_across_sessions() {
    let sandbox = Sandbox::new("repl-history");
    let mut first = Repl::start(&sandbox, &[]);
    first.expect(PROMPT);
    first.enter("let remembered = 7;");
    first.line("fn twice(n) {");
    first.expect(CONTINUATION);
    first.line("  n * 2");
    first.expect(CONTINUATION);
    first.enter("}");
    first.send("\x04");
    assert_eq!(first.expect_exit(), Some(0));
    let history = sandbox.read("state/rhai-supervisor/history");
    assert!(history.contains("let remembered = 7;"), "{history}");

    let mut second = Repl::start(&sandbox, &[]);
    second.expect(PROMPT);
    // Ctrl-R finds the earlier statement; Enter runs it.
    second.send("\x12rememb");
    second.expect("let remembered = 7;");
    second.enter("");
    // Up brings back the multi-line function as one entry.
    second.send("\x1b[A\x1b[A");
    second.expect("n * 2");
    second.enter("");
    let shown = second.enter("twice(remembered)");
    assert!(shown.contains("\n14\n"), "{shown}");
    second.send("\x04");
    assert_eq!(second.expect_exit(), Some(0));
}

#[test]
fn sigterm_at_the_prompt_stops_the_nodes_and_gives_the_terminal_back() {
    let sandbox = Sandbox::new("repl-sigterm");
    let mut repl = Repl::start(&sandbox, &[]);
    repl.expect(PROMPT);
    repl.enter("fn node_status(node, pid) { print(`pid=${pid}`) }");
    repl.line(r#"Supervisor::create(#{name: "sleeper", command: ["sleep", "300"]})"#);
    repl.expect_all(&["\n\"\"\n", "pid="]);
    repl.wait_for_editor();
    let pid = numbers_after(&repl.text(), "pid=")[0];
    repl.send("let half = ");
    repl.expect("let half = ");
    assert!(kill(repl.pid(), SIGTERM));
    repl.expect("the supervisor has stopped");
    assert_eq!(repl.expect_exit(), Some(0));
    assert!(!alive(pid));
    let settings = tcgetattr(&repl.master).unwrap();
    assert!(
        settings
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG),
        "the terminal was left in raw mode: {:?}",
        settings.local_flags
    );
}

#[test]
fn a_pipe_is_read_line_by_line_without_a_prompt() {
    let sandbox = Sandbox::new("repl-pipe");
    sandbox.write(
        "lib.rhai",
        "let from_script = 2;\nfn helper() { 40 }\nfn zeek_init() { print(\"zeek_init ran\") }\nfn zeek_done() { print(\"zeek_done ran\") }\n",
    );
    sandbox.write(
        "hooks.rhai",
        "fn node_status(node, pid) { print(`started ${node} pid=${pid}`) }\n",
    );
    let mut sup = sandbox.start_with(&["repl", "lib.rhai"], |c| {
        c.stdin(Stdio::piped());
    });
    let mut input = sup.child.stdin.take().unwrap();
    input
        .write_all(
            b"helper() + from_script\n\
              fn f(a) {\n  a * 3\n}\n\
              f(2)\n\
              let bad = 1 +* 2;\n\
              while true {}\n\
              \"still going\"\n\
              :load hooks.rhai\n\
              Supervisor::create(#{name: \"w1\", command: [\"sleep\", \"300\"]})\n\
              :status\n",
        )
        .unwrap();
    let out = sup.expect_stdout("started w1 pid=");
    let pid = numbers_after(&out, "started w1 pid=")[0];
    // A hook defined here sees the node's output from now on.
    input
        .write_all(b"fn stdout_hook(node, line) { print(`hooked ${line}`); false }\nSupervisor::create(#{name: \"w2\", command: [\"echo\", \"hello\"]})\n")
        .unwrap();
    sup.expect_stdout("hooked hello");
    input.write_all(b"fn unfinished() {\n").unwrap();
    drop(input);
    assert_eq!(sup.expect_exit(), Some(0));
    let out = sup.stdout();
    let err = sup.stderr();
    assert!(
        out.starts_with("zeek_init ran\n42\n6\n\"still going\"\nloaded hooks.rhai\n"),
        "{out}"
    );
    assert!(!out.contains("sup>") && !out.contains('\x1b'), "{out}");
    assert!(out.contains("NAME  STATE    PID"), "{out}");
    assert!(!out.contains("[w2] hello"), "{out}");
    assert!(out.trim_end().ends_with("zeek_done ran"), "{out}");
    assert!(
        err.contains("error: line 1, column 14: Unexpected '*'\n  1 | let bad = 1 +* 2;\n    |              ^\n"),
        "{err}"
    );
    assert!(err.contains("stopped after 1s"), "{err}");
    assert!(err.contains("  1 | fn unfinished() {\n"), "{err}");
    assert!(!alive(pid));
}

#[test]
fn a_script_that_fails_at_start_ends_the_repl_as_run_does() {
    let sandbox = Sandbox::new("repl-bad-script");
    sandbox.write("bad.rhai", "let x = 1;\nlet y = ;\n");
    let out = sandbox.run(&["repl", "bad.rhai"]);
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("bad.rhai:2:9: "), "{}", out.stderr);
}

#[test]
fn an_attached_repl_evaluates_in_the_running_supervisor() {
    let sandbox = Sandbox::new("repl-attach");
    sandbox.write(
        "s.rhai",
        "let counter = 41;\nfn node_status(node, pid) { print(`started ${node} pid=${pid}`) }\n",
    );
    let mut sup = sandbox.start(&["run", "s.rhai"]);
    assert!(wait_until(PATIENCE, || sandbox
        .path("rhai-supervisor.sock")
        .exists()));
    let mut repl = sandbox.start_with(&["repl", "--attach"], |c| {
        c.stdin(Stdio::piped());
    });
    let mut input = repl.child.stdin.take().unwrap();
    input
        .write_all(
            b"counter += 1; counter\n\
              print(\"printed there\"); 7\n\
              Supervisor::create(#{name: \"w1\", command: [\"sleep\", \"300\"]})\n\
              :status\n\
              let bad = 1 +* 2;\n",
        )
        .unwrap();
    drop(input);
    assert_eq!(repl.expect_exit(), Some(0));
    let out = repl.stdout();
    assert!(out.starts_with("42\nprinted there\n7\n\"\"\n"), "{out}");
    assert!(
        out.contains("NAME  STATE    PID") && out.contains("w1    running"),
        "{out}"
    );
    assert!(
        repl.stderr().contains("Unexpected '*'"),
        "{}",
        repl.stderr()
    );
    // The node was made in the supervisor, whose hook ran there, and it outlives the REPL.
    let started = sup.expect_stdout("started w1 pid=");
    let pid = numbers_after(&started, "started w1 pid=")[0];
    assert!(alive(pid));
    sup.signal(SIGTERM);
    assert_eq!(sup.expect_exit(), Some(0));
    assert!(!alive(pid));
}

#[test]
fn attaching_with_no_supervisor_is_a_clear_error() {
    let sandbox = Sandbox::new("repl-attach-none");
    let out = sandbox.run(&["repl", "--attach", "nothing.sock"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("cannot connect to the supervisor at"),
        "{}",
        out.stderr
    );
}
