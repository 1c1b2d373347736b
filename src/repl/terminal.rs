//! The REPL on a terminal: a rustyline editor (Emacs keys, history in a file, Ctrl-R,
//! Tab completion) on the front end's thread, fed what is typed by `keys`, and an
//! output thread that prints everything else the process says above the prompt.
//!
//! Node output, script prints and logs reach `console::write` on the loop thread while
//! the user types. A `console::Sink` hands them to the output thread, which gives them
//! to rustyline's external printer: in the middle of an edit it clears the prompt,
//! prints, and draws the prompt and the half-typed line again. The loop thread never
//! waits for the terminal: the external printer blocks while the editor does not take
//! its messages (during a Ctrl-R search, say), so the sink only queues, and drops (and
//! counts) lines when the queue is full rather than stall supervision.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use nix::sys::termios::{SetArg, Termios, tcgetattr, tcsetattr};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::{DefaultHistory, History};
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, EditMode, Editor, ExternalPrinter, Helper};

use super::complete::{self, Want};
use super::evaluator::{Evaluator, Names};
use super::keys::{Feed, Keys, OnInterrupt};
use super::{Console, Gate, Read};
use crate::config::Stream;
use crate::console::{self, Sink};

const PROMPT: &str = "sup> ";
const CONTINUATION: &str = "...> ";
const PROMPT_STYLED: &str = "\x1b[1;32msup>\x1b[0m ";
const CONTINUATION_STYLED: &str = "\x1b[1;32m...>\x1b[0m ";
const RED: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

/// Lines that may wait for the terminal before more are dropped.
const OUTPUT_QUEUE: usize = 4096;
/// How long the REPL waits for earlier output to reach the screen before it shows the
/// prompt. Only a bound: output that is stuck goes out above the next prompt.
const FLUSH_PATIENCE: Duration = Duration::from_millis(250);
const HISTORY_SIZE: usize = 1000;

enum Out {
    /// Whole lines, for the terminal (stdout and stderr are the same screen here).
    Text(String),
    /// Answered once everything queued before it was printed.
    Flush(Sender<()>),
    /// The last message: the thread ends.
    Stop,
}

/// The way to the output thread.
#[derive(Clone)]
pub struct Output {
    queue: Sender<Out>,
    dropped: Arc<AtomicUsize>,
}

impl Output {
    /// Queues text (whole lines) for the terminal; falls back to writing it at once
    /// when the queue is full, since the caller is not the loop thread.
    fn print(&self, stream: Stream, text: String) {
        if let Err(unsent) = self.queue.try_send(Out::Text(text)) {
            if let Out::Text(text) = unsent.into_inner() {
                write_direct(stream, text.as_bytes());
            }
        }
    }

    /// Waits (at most `patience`) until what was queued so far has been printed.
    pub fn flush(&self, patience: Duration) {
        let (done, wait) = crossbeam_channel::bounded(1);
        if self.queue.try_send(Out::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(patience);
        }
    }
}

/// What the loop thread's output goes through while the editor is active.
struct QueueSink {
    output: Output,
    stderr_is_terminal: bool,
}

impl Sink for QueueSink {
    fn write(&self, stream: Stream, bytes: &[u8]) {
        // Errors and logs sent elsewhere (`2>file`) go there, not to the screen.
        if stream == Stream::Stderr && !self.stderr_is_terminal {
            write_direct(stream, bytes);
            return;
        }
        let text = String::from_utf8_lossy(bytes).into_owned();
        if self.output.queue.try_send(Out::Text(text)).is_err() {
            let lines = bytes.iter().filter(|&&b| b == b'\n').count().max(1);
            self.output.dropped.fetch_add(lines, Ordering::Relaxed);
        }
    }
}

fn write_direct(stream: Stream, bytes: &[u8]) {
    let _ = match stream {
        Stream::Stdout => std::io::stdout().lock().write_all(bytes),
        Stream::Stderr => std::io::stderr().lock().write_all(bytes),
    };
}

/// Starts the output thread, printing through `printer` (or straight to stdout when
/// the terminal has none).
/// Returns the way to it and a channel that disconnects when it has ended.
fn start_output<P: ExternalPrinter + Send + 'static>(
    printer: Option<P>,
) -> std::io::Result<(Output, Receiver<()>)> {
    let (queue, queued) = crossbeam_channel::bounded(OUTPUT_QUEUE);
    let dropped = Arc::new(AtomicUsize::new(0));
    let output = Output {
        queue,
        dropped: dropped.clone(),
    };
    let (ended, output_ended) = crossbeam_channel::bounded::<()>(0);
    std::thread::Builder::new()
        .name("repl-output".into())
        .spawn(move || {
            print_queued(printer, &queued, &dropped);
            drop(ended);
        })?;
    Ok((output, output_ended))
}

fn print_queued<P: ExternalPrinter>(
    mut printer: Option<P>,
    queued: &Receiver<Out>,
    dropped: &AtomicUsize,
) {
    let mut print = |text: String| match printer.as_mut() {
        Some(p) => {
            if p.print(text.clone()).is_err() {
                write_direct(Stream::Stdout, text.as_bytes());
            }
        }
        None => write_direct(Stream::Stdout, text.as_bytes()),
    };
    for out in queued {
        match out {
            Out::Text(text) => print(text),
            Out::Flush(done) => {
                let _ = done.send(());
            }
            Out::Stop => return,
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            print(format!(
                "({lost} lines of output were not shown: the terminal was busy)\n"
            ));
        }
    }
}

/// The terminal's settings before the REPL changed them, to put back if it must leave
/// while the editor waits for a key (the supervisor was told to stop). Kept with the
/// terminal itself, since the editor's side of `keys` takes its place on fd 0.
pub struct SavedTerminal {
    terminal: OwnedFd,
    settings: Termios,
}

impl SavedTerminal {
    pub fn save() -> Option<SavedTerminal> {
        let stdin = std::io::stdin();
        let settings = tcgetattr(&stdin).ok()?;
        let terminal = stdin.as_fd().try_clone_to_owned().ok()?;
        Some(SavedTerminal { terminal, settings })
    }

    /// Puts the settings back (and turns bracketed paste off again).
    pub fn restore(&self) {
        let _ = tcsetattr(&self.terminal, SetArg::TCSADRAIN, &self.settings);
        write_direct(Stream::Stdout, b"\x1b[?2004l");
    }
}

/// Completion for the editor: reads the line, asks the evaluator what it needs.
struct ReplHelper {
    evaluator: Rc<RefCell<Box<dyn Evaluator + Send>>>,
    files: FilenameCompleter,
    /// What feeds the editor its keys (none where rustyline reads stdin itself).
    feed: Option<Arc<Feed>>,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        context: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let want = complete::analyse(line, pos);
        if want == Want::File {
            return self.files.complete(line, pos, context);
        }
        let names = if want.needs_names() {
            // Without an answer (a busy loop) the fixed names are still offered.
            self.evaluator
                .try_borrow_mut()
                .ok()
                .and_then(|mut e| e.names(want.path()).ok())
                .unwrap_or_default()
        } else {
            Names::default()
        };
        let start = match &want {
            Want::Command { start, .. }
            | Want::Supervisor { start, .. }
            | Want::NodeInString { start, .. }
            | Want::SignalInString { start, .. }
            | Want::NodeArgument { start }
            | Want::Field { start, .. }
            | Want::Name { start, .. } => *start,
            Want::Nothing | Want::File => pos,
        };
        let pairs = complete::candidates(&want, &names)
            .into_iter()
            .map(|c| Pair {
                display: c.display,
                replacement: c.replacement,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;

    /// No hints. rustyline asks for one on every redraw, the first time after it has
    /// put its terminal in raw mode and before it reads a key: the moment the feeder
    /// needs (see `keys`).
    fn hint(&self, _line: &str, _pos: usize, _context: &rustyline::Context<'_>) -> Option<String> {
        if let Some(feed) = &self.feed {
            feed.editor_reading();
        }
        None
    }
}

impl Highlighter for ReplHelper {}

impl Validator for ReplHelper {}

impl Helper for ReplHelper {}

/// Where the history is kept: `$XDG_STATE_HOME/rhai-supervisor/history`, else
/// `~/.local/state/rhai-supervisor/history`; `None` with neither variable set.
pub fn history_path() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let state = absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local").join("state")))?;
    Some(state.join("rhai-supervisor").join("history"))
}

/// The REPL's console on a terminal.
pub struct Terminal {
    editor: Editor<ReplHelper, DefaultHistory>,
    /// The terminal's input, read by us and fed to the editor (none where rustyline
    /// cannot drive the terminal and reads lines from stdin).
    keys: Option<Keys>,
    output: Output,
    /// Disconnects when the output thread has ended.
    output_ended: Receiver<()>,
    gate: Arc<Gate>,
    history: Option<PathBuf>,
    /// Complaints about the history file are made once.
    history_failed: bool,
    colour: bool,
}

impl Terminal {
    /// Sets up the editor, the terminal's input and the output thread, and sends the
    /// process's output through it until `close`. `on_interrupt`: what Ctrl-C does
    /// while a statement runs.
    pub fn open(
        evaluator: Rc<RefCell<Box<dyn Evaluator + Send>>>,
        gate: Arc<Gate>,
        on_interrupt: OnInterrupt,
    ) -> Result<Terminal, String> {
        let config = Config::builder()
            .edit_mode(EditMode::Emacs)
            .completion_type(CompletionType::List)
            .auto_add_history(false)
            .history_ignore_space(true)
            // `keys` keeps bracketed paste on for the whole session, and the feeder
            // relies on rustyline not reading (for the cursor position) before its
            // first redraw.
            .bracketed_paste(false)
            .check_cursor_position(false)
            .history_ignore_dups(true)
            .and_then(|c| c.max_history_size(HISTORY_SIZE))
            .map_err(|e| format!("cannot set up the line editor: {e}"))?
            .build();
        let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
        let mut editor: Editor<ReplHelper, DefaultHistory> = Editor::with_config(config)
            .map_err(|e| format!("cannot set up the line editor: {e}"))?;
        let history = history_path();
        let mut history_failed = false;
        if let Some(path) = &history {
            match editor.load_history(path) {
                Ok(()) => {}
                Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    log::warn!("cannot read the history '{}': {e}", path.display());
                    history_failed = true;
                }
            }
        }
        // A terminal rustyline cannot drive (TERM=dumb) has no external printer:
        // output is then written as it comes, and rustyline reads lines from stdin.
        let printer = editor.create_external_printer().ok();
        let drives_terminal = printer.is_some();
        let (output, output_ended) =
            start_output(printer).map_err(|e| format!("cannot start the output thread: {e}"))?;
        let keys = if drives_terminal {
            // Printed above the prompt, even nothing makes the editor draw it again.
            let printer = output.clone();
            let redraw = Box::new(move || printer.print(Stream::Stdout, String::new()));
            let keys = Keys::start(on_interrupt, redraw)
                .map_err(|e| format!("cannot take over the terminal's input: {e}"))?;
            Some(keys)
        } else {
            None
        };
        editor.set_helper(Some(ReplHelper {
            evaluator,
            files: FilenameCompleter::new(),
            feed: keys.as_ref().map(Keys::feed),
        }));
        console::set_sink(Some(Box::new(QueueSink {
            output: output.clone(),
            stderr_is_terminal: std::io::stderr().is_terminal(),
        })));
        Ok(Terminal {
            editor,
            keys,
            output,
            output_ended,
            gate,
            history,
            history_failed,
            colour,
        })
    }

    /// A handle on the output thread, for the main thread.
    pub fn output(&self) -> Output {
        self.output.clone()
    }

    fn save_history(&mut self) {
        let Some(path) = &self.history else {
            return;
        };
        let result = match path.parent() {
            Some(dir) => std::fs::create_dir_all(dir).map_err(ReadlineError::from),
            None => Ok(()),
        }
        .and_then(|()| self.editor.append_history(path));
        if let Err(e) = result {
            if !self.history_failed {
                self.history_failed = true;
                self.error(
                    &format!("cannot save the history in '{}': {e}", path.display()),
                    None,
                );
            }
        }
    }
}

impl Console for Terminal {
    fn interactive(&self) -> bool {
        true
    }

    fn read(&mut self, continuation: bool) -> Read {
        self.output.flush(FLUSH_PATIENCE);
        if !self.gate.begin_read() {
            return Read::Gone;
        }
        let line = if continuation {
            self.editor.readline(&(CONTINUATION, CONTINUATION_STYLED))
        } else {
            self.editor.readline(&(PROMPT, PROMPT_STYLED))
        };
        if let Some(keys) = &self.keys {
            keys.feed().editor_done();
        }
        if !self.gate.end_read() {
            return Read::Gone;
        }
        match line {
            Ok(line) => Read::Line(line),
            Err(ReadlineError::Interrupted) => Read::Interrupted,
            Err(ReadlineError::Eof) => Read::End,
            Err(e) => {
                self.error(&format!("cannot read the terminal: {e}"), None);
                Read::End
            }
        }
    }

    fn remember(&mut self, entry: &str) {
        match self.editor.history_mut().add(entry) {
            Ok(true) => self.save_history(),
            Ok(false) => {}
            Err(e) => log::debug!("cannot add to the history: {e}"),
        }
    }

    fn show(&mut self, text: &str) {
        self.output.print(Stream::Stdout, format!("{text}\n"));
    }

    fn error(&mut self, headline: &str, excerpt: Option<&str>) {
        let mut text = if self.colour {
            format!("{RED}error:{RESET} {headline}\n")
        } else {
            format!("error: {headline}\n")
        };
        if let Some(excerpt) = excerpt {
            text.push_str(excerpt);
            text.push('\n');
        }
        self.output.print(Stream::Stdout, text);
    }

    fn width(&mut self) -> usize {
        // rustyline keeps the size up to date (it handles SIGWINCH).
        let columns = self.editor.dimensions().map_or(80, |(columns, _)| columns);
        usize::from(columns).saturating_sub(1).max(20)
    }

    fn close(&mut self) {
        console::set_sink(None);
        // Bounded waits: a message stuck in the editor must not keep the REPL open.
        if self
            .output
            .queue
            .send_timeout(Out::Stop, FLUSH_PATIENCE)
            .is_ok()
        {
            let _ = self.output_ended.recv_timeout(4 * FLUSH_PATIENCE);
        }
        if let Some(keys) = self.keys.as_mut() {
            keys.close();
        }
    }
}

/// Whether this process can run the REPL on a terminal.
pub fn available() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}
