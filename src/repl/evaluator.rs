//! What the REPL asks of a supervisor, behind one trait, and the local answer to it.
//!
//! The REPL's front end (line editor, commands, rendering) only talks to an
//! `Evaluator`. `Local` serves it from this process: each request becomes an
//! `Event::Task` that runs on the loop thread (which owns the engine and the node
//! table) and sends its answer back on a channel of its own. Only text and plain data
//! cross threads: values are rendered on the loop thread. A remote implementation
//! (a REPL attached to a running supervisor's control socket) can answer the same
//! requests over the socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select};

use crate::config::Status;
use crate::config::reload::ReloadReport;
use crate::event_loop::{Event, EventLoop};
use crate::script::{ExitRequest, ScriptError, api::NOT_SUPERVISOR, records};

/// The answer to an input or a `:load`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The value to echo, rendered as a script's `to_debug` would (`None` for `()`,
    /// which a statement gives), or what went wrong.
    pub result: Result<Option<String>, ScriptError>,
    /// The input asked the supervisor to stop (`terminate()`, `exit(code)`): the
    /// session is over once the nodes have stopped.
    pub stopping: bool,
}

/// What completion needs to know about the program and the nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// Global variables and constants, and script functions.
    pub names: Vec<String>,
    /// The nodes' names.
    pub nodes: Vec<String>,
    /// What can follow a dot on the value at the path asked for (a global and its
    /// fields): `None` when the path names no such value.
    pub fields: Option<Vec<String>>,
}

/// Why a request got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unanswered {
    #[error("the supervisor has stopped")]
    Stopped,
    #[error("the supervisor is busy")]
    Busy,
    #[error("{0}")]
    Failed(String),
}

/// The supervisor as the REPL sees it.
pub trait Evaluator {
    /// Runs one complete input: statements, function definitions (hooks among them).
    fn eval(&mut self, code: &str) -> Result<Reply, Unanswered>;
    /// Runs a script file in the program, as the command line does (without calling
    /// `zeek_init()` again).
    fn load(&mut self, path: &Path) -> Result<Reply, Unanswered>;
    /// Every node's status, for `:status`.
    fn status(&mut self) -> Result<Status, Unanswered>;
    /// `:reload`: the command-line scripts again, and the difference applied (or with
    /// `dry_run` only shown); the plan, or why nothing changed. Returns once applied.
    fn reload(&mut self, dry_run: bool) -> Result<Result<ReloadReport, String>, Unanswered>;
    /// Names for completion, and the fields of the value at `path` (a global variable
    /// followed by field names), when `path` is not empty.
    fn names(&mut self, path: &[String]) -> Result<Names, Unanswered>;
    /// Ends the session: the supervisor stops every node, runs `zeek_done()` and
    /// finishes. Returns when it has.
    fn quit(&mut self) -> Result<(), Unanswered>;
}

/// How long completion waits for a loop that is busy with something else.
const COMPLETION_PATIENCE: Duration = Duration::from_millis(500);

/// The supervisor of this process, reached through its loop.
pub struct Local {
    events: Sender<Event>,
    /// Disconnected once the loop has returned: nothing sent to it will run.
    finished: Receiver<()>,
    /// The time limit of one input; `None` for none (Ctrl-C stops it instead).
    call_time: Option<Duration>,
}

impl Local {
    /// `events` reaches the loop; `finished` must disconnect when the loop returns.
    pub fn new(
        events: Sender<Event>,
        finished: Receiver<()>,
        call_time: Option<Duration>,
    ) -> Local {
        Local {
            events,
            finished,
            call_time,
        }
    }

    /// Runs `work` on the loop thread and waits for its answer, at most `patience`
    /// (`None`: as long as it takes).
    fn ask<T: Send + 'static>(
        &self,
        patience: Option<Duration>,
        work: impl FnOnce(&mut EventLoop) -> T + Send + 'static,
    ) -> Result<T, Unanswered> {
        let (answer, answered) = crossbeam_channel::bounded(1);
        let task = Event::Task(Box::new(move |event_loop: &mut EventLoop| {
            // The asker may have given up waiting; then the answer is not needed.
            let _ = answer.send(work(event_loop));
        }));
        select! {
            send(self.events, task) -> sent => sent.map_err(|_| Unanswered::Stopped)?,
            recv(self.finished) -> _ => return Err(Unanswered::Stopped),
        }
        let timeout = match patience {
            Some(patience) => crossbeam_channel::after(patience),
            None => crossbeam_channel::never(),
        };
        select! {
            recv(answered) -> reply => reply.map_err(|_| Unanswered::Stopped),
            recv(self.finished) -> _ => Err(Unanswered::Stopped),
            recv(timeout) -> _ => Err(Unanswered::Busy),
        }
    }
}

impl Evaluator for Local {
    fn eval(&mut self, code: &str) -> Result<Reply, Unanswered> {
        let code = code.to_string();
        let call_time = self.call_time;
        self.ask(None, move |event_loop| {
            let result = event_loop.host().eval_limited(&code, call_time);
            let result =
                result.map(|value| (!value.is_unit()).then(|| event_loop.host().show(&value)));
            reply(event_loop, result)
        })
    }

    fn load(&mut self, path: &Path) -> Result<Reply, Unanswered> {
        let path = PathBuf::from(path);
        self.ask(None, move |event_loop| {
            let result = event_loop.host().load(&[path]).map(|()| None);
            reply(event_loop, result)
        })
    }

    fn status(&mut self) -> Result<Status, Unanswered> {
        self.ask(None, |event_loop| {
            event_loop
                .nodes()
                .map(|nodes| nodes.borrow().status_with_usage(""))
                .ok_or_else(|| NOT_SUPERVISOR.to_string())
        })?
        .map_err(Unanswered::Failed)
    }

    fn reload(&mut self, dry_run: bool) -> Result<Result<ReloadReport, String>, Unanswered> {
        // Answered once the plan is applied, a few loop turns later: the loop keeps
        // the sender until then.
        let (answer, answered) = crossbeam_channel::bounded(1);
        let task = Event::Task(Box::new(move |event_loop: &mut EventLoop| {
            event_loop.reload(
                dry_run,
                Box::new(move |outcome| {
                    let _ = answer.send(outcome.map_err(|e| e.to_string()));
                }),
            );
        }));
        select! {
            send(self.events, task) -> sent => sent.map_err(|_| Unanswered::Stopped)?,
            recv(self.finished) -> _ => return Err(Unanswered::Stopped),
        }
        select! {
            recv(answered) -> reply => reply.map_err(|_| Unanswered::Stopped),
            recv(self.finished) -> _ => Err(Unanswered::Stopped),
        }
    }

    fn names(&mut self, path: &[String]) -> Result<Names, Unanswered> {
        let path = path.to_vec();
        self.ask(Some(COMPLETION_PATIENCE), move |event_loop| {
            let host = event_loop.host();
            let mut names = host.names();
            names.sort_unstable();
            names.dedup();
            let fields = path.split_first().and_then(|(global, rest)| {
                let mut value = host.global(global)?;
                for name in rest {
                    value = records::field(&value, name)?;
                }
                records::field_names(&value)
            });
            let nodes = event_loop
                .nodes()
                .map(|n| n.borrow().node_names().map(str::to_string).collect())
                .unwrap_or_default();
            Names {
                names,
                nodes,
                fields,
            }
        })
    }

    fn quit(&mut self) -> Result<(), Unanswered> {
        match self.ask(None, |event_loop| event_loop.terminate()) {
            Ok(()) | Err(Unanswered::Stopped) => {}
            Err(e) => return Err(e),
        }
        // The loop returns once every node has stopped and zeek_done() has run.
        let _ = self.finished.recv();
        Ok(())
    }
}

/// The reply to an input, on the loop thread: notes whether it asked the supervisor
/// to stop. After `exit(code)` there is nothing to show: the code is the process's
/// exit status, not a value.
fn reply(event_loop: &mut EventLoop, result: Result<Option<String>, ScriptError>) -> Reply {
    let exit = event_loop.shared().borrow().exit;
    let result = match exit {
        Some(ExitRequest::Exit(_)) => Ok(None),
        _ => result,
    };
    Reply {
        result,
        stopping: event_loop.is_stopping(),
    }
}
