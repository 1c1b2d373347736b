//! `rhai-supervisor repl [SCRIPT...]`: an interactive supervisor. The user types Rhai
//! statements; they run in the supervisor role, in the same program as the scripts,
//! and the nodes they create are real.
//!
//! Two threads take part. The loop thread (the main thread) runs the supervisor as
//! `run` does: it owns the engine and the node table and keeps serving events (node
//! output, revivals, timers, hooks) while the user types. The front end's thread reads
//! input, from a line editor on a terminal (`terminal`) or line by line from a pipe
//! (`Plain`); it sends each complete input to the loop through an `Evaluator` and
//! shows the answer. `Session` is what both front ends share: statements that go on
//! over several lines, `:commands`, echoing values, showing errors.
//!
//! Leaving: `:quit`, Ctrl-D or the end of piped input ask the loop to stop every node
//! and run `zeek_done()`; the process exits 0 when the loop returns. When the loop
//! stops on its own (SIGTERM, `terminate()` in a hook) while the front end waits for
//! a key, nothing can wake the editor: the terminal's settings are put back and the
//! process leaves without it (`Gate` tells the two threads about each other).

pub(crate) mod complete;
pub(crate) mod evaluator;
pub(crate) mod input;
mod keys;
pub(crate) mod remote;
pub(crate) mod render;
mod terminal;

use std::cell::RefCell;
use std::io::{BufRead, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};

pub(crate) use evaluator::{Evaluator, Local, Reply, Unanswered};
use input::{Command, Completeness};
use keys::OnInterrupt;

use crossbeam_channel::Sender;

use crate::event_loop::{Event, EventLoop};
use crate::script::ScriptError;

/// How wide values are laid out when the output is not a terminal.
const PLAIN_WIDTH: usize = 100;
/// How long the last output may take to reach the screen when the REPL leaves while
/// the editor waits for a key.
const FRONT_END_STACK: usize = 8 * 1024 * 1024;
const LAST_OUTPUT_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether the REPL runs on a terminal (with the line editor) rather than on a pipe.
pub fn interactive() -> bool {
    terminal::available()
}

/// The REPL's front end on a thread of its own, while the loop runs on the caller's
/// (`runtime::repl` assembles the two).
pub struct FrontEnd {
    thread: std::thread::JoinHandle<()>,
    gate: Arc<Gate>,
    /// Dropped when the loop has returned: the evaluator's requests end.
    finished: Sender<()>,
    saved_terminal: Option<terminal::SavedTerminal>,
    interactive: bool,
}

impl FrontEnd {
    /// Starts the front end, which hands inputs to the loop through `events`; each input
    /// runs under `call_time` (`None`: no limit, as at a terminal where Ctrl-C stops a
    /// statement).
    pub fn start(
        events: Sender<Event>,
        interactive: bool,
        call_time: Option<std::time::Duration>,
    ) -> Result<FrontEnd, String> {
        let (finished, loop_finished) = crossbeam_channel::bounded::<()>(0);
        let evaluator: Box<dyn Evaluator + Send> =
            Box::new(Local::new(events.clone(), loop_finished, call_time));
        let gate = Arc::new(Gate::default());
        let saved_terminal = if interactive {
            terminal::SavedTerminal::save()
        } else {
            None
        };
        let front_gate = gate.clone();
        let thread = std::thread::Builder::new()
            .name("repl".into())
            // Room for the parser's recursion on deeply nested input (see `input`).
            .stack_size(FRONT_END_STACK)
            .spawn(move || {
                let _stop_if_lost = StopIfLost(events);
                front_end(interactive, evaluator, front_gate, OnInterrupt::Signal)
            })
            .map_err(|e| format!("cannot start the REPL thread: {e}"))?;
        Ok(FrontEnd {
            thread,
            gate,
            finished,
            saved_terminal,
            interactive,
        })
    }

    /// The loop has returned: lets the front end finish, or leaves without it when it
    /// waits for a key it cannot be woken from.
    pub fn finish(self) {
        drop(self.finished);
        if self.gate.finish() {
            // The front end waits for a key (or a line) and cannot be woken: print what
            // is left, put the terminal back, and let the process end without it.
            if let Some(output) = self.gate.output() {
                output.flush(LAST_OUTPUT_PATIENCE);
            }
            crate::console::set_sink(None);
            if self.interactive {
                if let Some(saved) = self.saved_terminal {
                    saved.restore();
                }
                println!("\nthe supervisor has stopped; leaving the REPL");
            }
        } else {
            let _ = self.thread.join();
        }
    }
}

/// `repl --attach`: the REPL on this thread, evaluating in the supervisor that serves
/// the control socket at `socket`. Leaving it leaves that supervisor running.
pub fn attach(socket: &Path) -> Result<i32, String> {
    let client = crate::control::Client::connect(socket).map_err(|e| e.to_string())?;
    Ok(attached(Box::new(client)))
}

/// `repl --attach [PATH] --ssh HOST`: the same, with the supervisor of another host,
/// reached through ssh (`control::ssh`); `socket` is its socket there (`None`: where
/// `ctl` would look on that host).
pub fn attach_over_ssh(
    host: &str,
    remote_command: &str,
    socket: Option<&Path>,
) -> Result<i32, String> {
    use crate::control::ssh::{Remote, SshClient, Target};
    let target = Target::parse(host).map_err(|e| e.to_string())?;
    let remote = Remote::new(remote_command, socket).map_err(|e| e.to_string())?;
    let client = SshClient::connect(
        remote,
        target.clone(),
        crate::control::client::DEFAULT_TIMEOUT,
    )
    .map_err(|e| format!("{target}: {e}"))?;
    Ok(attached(Box::new(client)))
}

fn attached(connection: Box<dyn crate::control::Connection>) -> i32 {
    let interactive = terminal::available();
    // Ctrl-C cannot stop a statement that runs there; it ends this process, as
    // SIGINT always did here.
    front_end(
        interactive,
        Box::new(remote::Remote::new(connection)),
        Arc::new(Gate::default()),
        OnInterrupt::Exit,
    );
    0
}

/// Stops the supervisor if the front end's thread ends in a panic: with nobody left
/// to type `:quit`, it would otherwise serve on unreachable.
struct StopIfLost(Sender<Event>);

impl Drop for StopIfLost {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self
                .0
                .send(Event::Task(Box::new(|event_loop: &mut EventLoop| {
                    log::error!("the REPL failed; stopping every node");
                    event_loop.terminate();
                })));
        }
    }
}

/// The front end's thread: a terminal or plain console, and the session on it.
fn front_end(
    interactive: bool,
    evaluator: Box<dyn Evaluator + Send>,
    gate: Arc<Gate>,
    on_interrupt: OnInterrupt,
) {
    let evaluator = Rc::new(RefCell::new(evaluator));
    let mut console: Box<dyn Console> = if interactive {
        match terminal::Terminal::open(evaluator.clone(), gate.clone(), on_interrupt) {
            Ok(terminal) => {
                gate.set_output(terminal.output());
                Box::new(terminal)
            }
            Err(e) => {
                eprintln!("rhai-supervisor: {e}; reading lines without an editor");
                Box::new(Plain { gate })
            }
        }
    } else {
        Box::new(Plain { gate })
    };
    if console.interactive() {
        console.show(&format!(
            "rhai-supervisor {}: Rhai statements run in the supervisor. :help for help, Ctrl-D to leave.",
            env!("CARGO_PKG_VERSION")
        ));
    }
    Session {
        console: console.as_mut(),
        evaluator,
        completeness: Completeness::default(),
    }
    .run();
}

/// What a console read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    Line(String),
    /// Ctrl-C: forget the input so far.
    Interrupted,
    /// Ctrl-D, or the end of piped input.
    End,
    /// The supervisor has stopped; the session is over.
    Gone,
}

/// Where a session reads its input and shows what it has to say.
pub(crate) trait Console {
    /// A person at a terminal (who can go on after Ctrl-D at `...>`).
    fn interactive(&self) -> bool;
    /// The next line; `continuation` when it continues an unfinished statement.
    fn read(&mut self, continuation: bool) -> Read;
    /// Keeps a complete input (or command) in the history.
    fn remember(&mut self, entry: &str);
    /// Shows a value, a table, a page of text.
    fn show(&mut self, text: &str);
    /// Shows an error, with the excerpt that points at it.
    fn error(&mut self, headline: &str, excerpt: Option<&str>);
    /// How many columns values may take.
    fn width(&mut self) -> usize;
    /// The session is over.
    fn close(&mut self);
}

/// Between the loop thread and the front end: whether the front end waits for input
/// (and would not notice the end of the loop), and whether the loop has finished.
#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    reading: bool,
    finished: bool,
    output: Option<terminal::Output>,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Before the front end waits for input: false once the loop has finished.
    pub(crate) fn begin_read(&self) -> bool {
        let mut state = self.lock();
        state.reading = !state.finished;
        state.reading
    }

    /// After the wait: false once the loop has finished.
    pub(crate) fn end_read(&self) -> bool {
        let mut state = self.lock();
        state.reading = false;
        !state.finished
    }

    /// The loop has finished. True when the front end is waiting for input: then it
    /// will not see this in time, and the process leaves without it.
    fn finish(&self) -> bool {
        let mut state = self.lock();
        state.finished = true;
        state.reading
    }

    fn set_output(&self, output: terminal::Output) {
        self.lock().output = Some(output);
    }

    fn output(&self) -> Option<terminal::Output> {
        self.lock().output.clone()
    }
}

/// Input from a pipe or a file: a line at a time, no prompt, no colours; values on
/// stdout, errors on stderr.
struct Plain {
    gate: Arc<Gate>,
}

impl Console for Plain {
    fn interactive(&self) -> bool {
        false
    }

    fn read(&mut self, _continuation: bool) -> Read {
        if !self.gate.begin_read() {
            return Read::Gone;
        }
        let mut bytes = Vec::new();
        let result = std::io::stdin().lock().read_until(b'\n', &mut bytes);
        if !self.gate.end_read() {
            return Read::Gone;
        }
        match result {
            Ok(0) => Read::End,
            Ok(_) => {
                let text = String::from_utf8_lossy(&bytes);
                Read::Line(text.trim_end_matches(['\n', '\r']).to_string())
            }
            Err(e) => {
                self.error(&format!("cannot read the input: {e}"), None);
                Read::End
            }
        }
    }

    fn remember(&mut self, _entry: &str) {}

    fn show(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    }

    fn error(&mut self, headline: &str, excerpt: Option<&str>) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "error: {headline}");
        if let Some(excerpt) = excerpt {
            let _ = writeln!(err, "{excerpt}");
        }
    }

    fn width(&mut self) -> usize {
        PLAIN_WIDTH
    }

    fn close(&mut self) {}
}

/// What to do after an input.
enum Next {
    Continue,
    /// End the session: stop the supervisor and wait for it.
    Leave,
    /// The supervisor has stopped already.
    Gone,
}

/// One REPL session on a console.
pub(crate) struct Session<'a> {
    console: &'a mut dyn Console,
    evaluator: Rc<RefCell<Box<dyn Evaluator + Send>>>,
    completeness: Completeness,
}

impl Session<'_> {
    /// Reads and runs inputs until the session ends, then ends the supervisor.
    pub(crate) fn run(mut self) {
        let mut pending = String::new();
        let leave = loop {
            let next = match self.console.read(!pending.is_empty()) {
                Read::Gone => Next::Gone,
                Read::Interrupted => {
                    pending.clear();
                    Next::Continue
                }
                Read::End if pending.is_empty() => Next::Leave,
                Read::End => {
                    // An unfinished statement: run it as it stands, which shows what is
                    // missing. On a terminal the session goes on.
                    let code = std::mem::take(&mut pending);
                    self.console.remember(&code);
                    match self.eval(&code) {
                        Next::Continue if !self.console.interactive() => Next::Leave,
                        next => next,
                    }
                }
                Read::Line(line) => self.line(&mut pending, &line),
            };
            match next {
                Next::Continue => {}
                Next::Leave => break true,
                Next::Gone => break false,
            }
        };
        if leave {
            let quit = self.evaluator.borrow_mut().quit();
            if let Err(e) = quit {
                self.console.error(&e.to_string(), None);
            }
        }
        self.console.close();
    }

    /// A line of input: a command, or part or all of a statement.
    fn line(&mut self, pending: &mut String, line: &str) -> Next {
        if pending.is_empty() {
            if let Some(command) = Command::parse(line) {
                self.console.remember(line.trim());
                return self.command(command);
            }
            if line.trim().is_empty() {
                return Next::Continue;
            }
        } else {
            pending.push('\n');
        }
        pending.push_str(line);
        if self.completeness.is_incomplete(pending) {
            return Next::Continue;
        }
        let code = std::mem::take(pending);
        self.console.remember(&code);
        self.eval(&code)
    }

    fn eval(&mut self, code: &str) -> Next {
        let reply = self.evaluator.borrow_mut().eval(code);
        self.reply(reply, Some(code), None)
    }

    fn command(&mut self, command: Command) -> Next {
        match command {
            Command::Help => self.console.show(render::HELP),
            Command::Quit => return Next::Leave,
            Command::Bad(message) => self.console.error(&message, None),
            Command::Status => {
                let status = self.evaluator.borrow_mut().status();
                match status {
                    Ok(status) => self.console.show(&render::status_table(&status)),
                    Err(Unanswered::Stopped) => return Next::Gone,
                    Err(e) => self.console.error(&e.to_string(), None),
                }
            }
            Command::Load(file) => {
                let path = Path::new(&file);
                let reply = self.evaluator.borrow_mut().load(path);
                return self.reply(reply, None, Some(&file));
            }
            Command::Reload { dry_run } => {
                let outcome = self.evaluator.borrow_mut().reload(dry_run);
                match outcome {
                    Ok(Ok(report)) => self.console.show(&render::reload(&report)),
                    Ok(Err(error)) => self.console.error(&error, None),
                    Err(Unanswered::Stopped) => return Next::Gone,
                    Err(e) => self.console.error(&e.to_string(), None),
                }
            }
        }
        Next::Continue
    }

    /// Shows the answer to an input (`code`) or to `:load` of `loaded`.
    fn reply(
        &mut self,
        reply: Result<Reply, Unanswered>,
        code: Option<&str>,
        loaded: Option<&str>,
    ) -> Next {
        let reply = match reply {
            Ok(reply) => reply,
            Err(Unanswered::Stopped) => return Next::Gone,
            Err(e) => {
                self.console.error(&e.to_string(), None);
                return Next::Continue;
            }
        };
        match reply.result {
            Ok(Some(value)) => {
                let width = self.console.width();
                self.console.show(&render::pretty(&value, width));
            }
            Ok(None) => {
                if let Some(file) = loaded {
                    self.console.show(&format!("loaded {file}"));
                }
            }
            Err(error) => self.script_error(&error, code),
        }
        if reply.stopping {
            Next::Leave
        } else {
            Next::Continue
        }
    }

    /// Shows a script error with the line it names: from the input, or from the file
    /// the error is in.
    fn script_error(&mut self, error: &ScriptError, code: Option<&str>) {
        let source = match &error.file {
            Some(file) => std::fs::read_to_string(file).ok(),
            None => code.map(str::to_string),
        };
        let excerpt = match (source, error.line) {
            (Some(source), Some(line)) => render::excerpt(&source, line, error.column),
            _ => None,
        };
        self.console.error(&error.render(), excerpt.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::config::Status;
    use evaluator::Names;

    /// Plays back lines and keeps what the session shows.
    struct Script {
        reads: VecDeque<Read>,
        interactive: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Console for Script {
        fn interactive(&self) -> bool {
            self.interactive
        }
        fn read(&mut self, continuation: bool) -> Read {
            let read = self.reads.pop_front().unwrap_or(Read::End);
            if continuation {
                self.log.lock().unwrap().push("...>".into());
            }
            read
        }
        fn remember(&mut self, entry: &str) {
            self.log.lock().unwrap().push(format!("history {entry:?}"));
        }
        fn show(&mut self, text: &str) {
            self.log.lock().unwrap().push(format!("show {text}"));
        }
        fn error(&mut self, headline: &str, excerpt: Option<&str>) {
            let excerpt = excerpt.map(|e| format!("\n{e}")).unwrap_or_default();
            self.log
                .lock()
                .unwrap()
                .push(format!("error {headline}{excerpt}"));
        }
        fn width(&mut self) -> usize {
            80
        }
        fn close(&mut self) {
            self.log.lock().unwrap().push("close".into());
        }
    }

    /// Answers from a table and keeps what it was asked.
    struct Fake {
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Evaluator for Fake {
        fn eval(&mut self, code: &str) -> Result<Reply, Unanswered> {
            self.log.lock().unwrap().push(format!("eval {code:?}"));
            let result = match code {
                "stop()" => return Err(Unanswered::Stopped),
                "terminate()" => Ok(Some("true".into())),
                "oops" => Err(ScriptError {
                    file: None,
                    line: Some(1),
                    column: Some(2),
                    message: "broken".into(),
                }),
                c if c.starts_with("let") || c.starts_with("fn") => Ok(None),
                _ => Ok(Some("42".into())),
            };
            Ok(Reply {
                result,
                stopping: code == "terminate()",
            })
        }
        fn load(&mut self, path: &Path) -> Result<Reply, Unanswered> {
            self.log
                .lock()
                .unwrap()
                .push(format!("load {}", path.display()));
            Ok(Reply {
                result: Ok(None),
                stopping: false,
            })
        }
        fn status(&mut self) -> Result<Status, Unanswered> {
            Ok(Status::default())
        }
        fn reload(
            &mut self,
            dry_run: bool,
        ) -> Result<Result<crate::config::reload::ReloadReport, String>, Unanswered> {
            self.log.lock().unwrap().push(format!("reload {dry_run}"));
            if dry_run {
                return Ok(Err("s.rhai:1:1: broken; nothing was reloaded".into()));
            }
            Ok(Ok(crate::config::reload::ReloadReport {
                nodes: vec![crate::config::reload::PlanLine {
                    node: "w1".into(),
                    change: crate::config::reload::Change::Create,
                    fields: Vec::new(),
                }],
                ..Default::default()
            }))
        }
        fn names(&mut self, _: &[String]) -> Result<Names, Unanswered> {
            Ok(Names::default())
        }
        fn quit(&mut self) -> Result<(), Unanswered> {
            self.log.lock().unwrap().push("quit".into());
            Ok(())
        }
    }

    fn session(interactive: bool, reads: Vec<Read>) -> Vec<String> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut console = Script {
            reads: reads.into(),
            interactive,
            log: log.clone(),
        };
        let evaluator: Box<dyn Evaluator + Send> = Box::new(Fake { log: log.clone() });
        Session {
            console: &mut console,
            evaluator: Rc::new(RefCell::new(evaluator)),
            completeness: Completeness::default(),
        }
        .run();
        log.lock().unwrap().clone()
    }

    fn line(text: &str) -> Read {
        Read::Line(text.into())
    }

    #[test]
    fn an_unfinished_statement_is_sent_once_it_is_complete() {
        let log = session(
            true,
            vec![line("fn f(x) {"), line("  x"), line("}"), line("f(1)")],
        );
        assert_eq!(
            log,
            [
                "...>",
                "...>",
                "history \"fn f(x) {\\n  x\\n}\"",
                "eval \"fn f(x) {\\n  x\\n}\"",
                "history \"f(1)\"",
                "eval \"f(1)\"",
                "show 42",
                "quit",
                "close",
            ]
        );
    }

    #[test]
    fn commands_errors_and_ctrl_c() {
        let log = session(
            true,
            vec![
                line(""),
                line(":load x.rhai"),
                line(":status"),
                line(":reload"),
                line(":reload --dry-run"),
                line("fn g() {"),
                Read::Interrupted,
                line("oops"),
                line(":bogus"),
                line(":quit"),
                line("never read"),
            ],
        );
        assert_eq!(
            log,
            [
                "history \":load x.rhai\"",
                "load x.rhai",
                "show loaded x.rhai",
                "history \":status\"",
                "show no nodes",
                "history \":reload\"",
                "reload false",
                "show + w1\nreloaded: 1 created, 0 destroyed, 0 restarted, 0 unchanged",
                "history \":reload --dry-run\"",
                "reload true",
                "error s.rhai:1:1: broken; nothing was reloaded",
                "...>",
                "history \"oops\"",
                "eval \"oops\"",
                "error line 1, column 2: broken\n  1 | oops\n    |  ^",
                "history \":bogus\"",
                "error unknown command ':bogus' (:help lists them)",
                "history \":quit\"",
                "quit",
                "close",
            ]
        );
    }

    #[test]
    fn the_end_of_piped_input_runs_what_is_pending_and_quits() {
        let log = session(false, vec![line("let a = ["), Read::End, line("1")]);
        assert_eq!(
            log,
            [
                "...>",
                "history \"let a = [\"",
                "eval \"let a = [\"",
                "quit",
                "close"
            ]
        );
    }

    #[test]
    fn a_stopping_supervisor_ends_the_session() {
        let log = session(true, vec![line("terminate()"), line("1")]);
        assert_eq!(&log[2..], ["show true", "quit", "close"]);
        // Already gone: nothing to stop.
        let log = session(true, vec![line("stop()"), line("1")]);
        assert_eq!(&log[2..], ["close"]);
        let log = session(true, vec![Read::Gone]);
        assert_eq!(log, ["close"]);
    }
}
