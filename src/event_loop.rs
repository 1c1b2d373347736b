//! The one loop: everything that happens reaches the loop thread as an `Event` on one
//! channel, and the loop blocks on that channel with the next deadline (a revival, a
//! SIGKILL, a `schedule`d closure) as its timeout. It never polls: with nothing due
//! and nothing arriving it sleeps in `recv`.
//!
//! It owns the `Host` (the Rhai engine), reaches the node table through the shared
//! `Context`, turns node output into `stdout_hook`/`stderr_hook` calls or `[node] line`
//! prints, turns node starts into `node_status` calls, and runs the shutdown: stop
//! every node, wait for the last one, `zeek_done()`, return the exit status.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use nix::sys::signal::Signal;
use rhai::{INT, ImmutableString};

use crate::process::lines;
use crate::process::{ProcId, Stream};
use crate::script::{ExitRequest, Hook, Host, Role, ScriptError, Shared};
use crate::supervisor::Notice;

/// Something for the loop to handle.
pub enum Event {
    /// Complete lines (each ending in `\n`) that a node wrote.
    Output {
        proc: ProcId,
        node: Arc<str>,
        stream: Stream,
        lines: Vec<u8>,
    },
    /// A process exited; all its output was sent before this.
    Exited { proc: ProcId },
    /// SIGTERM or SIGINT reached this process (or SIGCHLD, for a subreaper).
    Signal(Signal),
    /// Work from another thread (a REPL line, a control request), run on the loop.
    Task(Box<dyn FnOnce(&mut EventLoop) + Send>),
}

/// What SIGINT means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sigint {
    /// Shut down, as SIGTERM.
    Shutdown,
    /// Only stop the running statement (an interactive session); during shutdown,
    /// kill the nodes that are still stopping, as a second SIGTERM would.
    Interrupt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Nodes are being stopped; then `zeek_done()` if `clean`, and exit with `code`.
    Stopping {
        code: i32,
        clean: bool,
    },
}

pub struct EventLoop {
    host: Host,
    events: Receiver<Event>,
    /// Set by the signal handlers for SIGTERM/SIGINT before the event is queued, so a
    /// running script call can be stopped; cleared when the event is handled.
    interrupt: Arc<AtomicBool>,
    phase: Phase,
    sigint: Sigint,
    /// Hooks that already failed for a node: logged once, not for every line.
    failed_hooks: HashSet<(Arc<str>, Stream)>,
    /// Keep serving with nothing to do (supervisor, node); `exec` ends instead.
    serve_forever: bool,
}

impl EventLoop {
    pub fn new(
        host: Host,
        events: Receiver<Event>,
        interrupt: Arc<AtomicBool>,
        sigint: Sigint,
    ) -> EventLoop {
        let serve_forever = host.shared().borrow().role != Role::Plain;
        EventLoop {
            host,
            events,
            interrupt,
            phase: Phase::Serving,
            sigint,
            failed_hooks: HashSet::new(),
            serve_forever,
        }
    }

    pub fn host(&mut self) -> &mut Host {
        &mut self.host
    }

    pub fn shared(&self) -> Shared {
        self.host.shared().clone()
    }

    /// Loads the scripts and calls `zeek_init()`. A failure is returned after every node
    /// that the scripts created has been stopped again.
    pub fn start(&mut self, scripts: &[std::path::PathBuf]) -> Result<(), ScriptError> {
        let mut result = self.host.load(scripts);
        if result.is_ok() && self.host.shared().borrow().exit.is_none() {
            result = self.host.call_hook(Hook::ZeekInit, ()).map(drop);
        }
        if let Err(error) = result {
            self.begin_shutdown(1, false);
            self.run();
            return Err(error);
        }
        self.after_script();
        Ok(())
    }

    /// Serves until shutdown; returns the exit status.
    pub fn run(&mut self) -> i32 {
        loop {
            let now = Instant::now();
            self.fire_due(now);
            self.after_script();
            if let Some(code) = self.finished() {
                return code;
            }
            let event = match self.next_deadline() {
                Some(at) => self.events.recv_deadline(at),
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match event {
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    log::error!("the event channel closed; stopping");
                    return 1;
                }
            }
            // Take what else is ready before looking at the clock again.
            for _ in 0..256 {
                match self.events.try_recv() {
                    Ok(event) => self.handle(event),
                    Err(_) => break,
                }
            }
        }
    }

    /// Asks the loop to shut down as `terminate()` would.
    pub fn terminate(&mut self) {
        self.begin_shutdown(0, true);
    }

    /// Shutdown has begun, or a script asked for it (`terminate()`, `exit(code)`) and
    /// the loop will begin it when the running call returns.
    pub fn is_stopping(&self) -> bool {
        self.phase != Phase::Serving || self.host.shared().borrow().exit.is_some()
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Output {
                node,
                stream,
                lines,
                ..
            } => self.output(&node, stream, &lines),
            Event::Exited { proc } => {
                if let Some(supervisor) = self.host.shared().borrow_mut().supervisor.as_mut() {
                    supervisor.process_exited(proc);
                }
            }
            Event::Signal(signal) => self.signal(signal),
            Event::Task(task) => task(self),
        }
        self.after_script();
    }

    fn signal(&mut self, signal: Signal) {
        if signal == Signal::SIGCHLD {
            if let Some(supervisor) = self.host.shared().borrow_mut().supervisor.as_mut() {
                supervisor.child_exited();
            }
            return;
        }
        self.interrupt.store(false, Ordering::SeqCst);
        // In an interactive session Ctrl-C only stops the running statement; once the
        // nodes are being stopped it is the impatient user's way to kill them now.
        if signal == Signal::SIGINT
            && self.sigint == Sigint::Interrupt
            && self.phase == Phase::Serving
        {
            return;
        }
        match self.phase {
            Phase::Serving => {
                log::info!("received {signal}; stopping every node");
                self.begin_shutdown(0, true);
            }
            Phase::Stopping { .. } => {
                log::warn!("received {signal} again; killing every node now");
                if let Some(supervisor) = self.host.shared().borrow_mut().supervisor.as_mut() {
                    supervisor.kill_all();
                }
            }
        }
    }

    /// Prints or hands to a hook each line of a node's output.
    fn output(&mut self, node: &Arc<str>, stream: Stream, data: &[u8]) {
        let to_file = match self.host.shared().borrow_mut().supervisor.as_mut() {
            Some(supervisor) => supervisor.take_output(node, stream, data),
            None => false,
        };
        if to_file {
            return;
        }
        let hook = match stream {
            Stream::Stdout => Hook::StdoutHook,
            Stream::Stderr => Hook::StderrHook,
        };
        // One UTF-8 check for the whole chunk; invalid bytes are replaced, and the
        // replacement never contains a newline, so lines stay lines.
        let text = String::from_utf8_lossy(data);
        if !self.host.defines(hook) {
            let count = memchr::memchr_iter(b'\n', data).count();
            let mut printed = Vec::with_capacity(text.len() + count * (node.len() + 3));
            for line in lines::split(text.as_bytes()) {
                push_line(&mut printed, node, line);
            }
            write_stream(stream, &printed);
            return;
        }
        let name = ImmutableString::from(&**node);
        for line in lines::split(text.as_bytes()) {
            let line = ImmutableString::from(String::from_utf8_lossy(line).as_ref());
            let keep = match self.host.call_hook(hook, (name.clone(), line.clone())) {
                Ok(Some(value)) => value.as_bool() != Ok(false),
                Ok(None) => true,
                Err(error) => {
                    if self.failed_hooks.insert((node.clone(), stream)) {
                        log::error!(
                            "{error} (for node '{node}'; its lines are printed as they come)"
                        );
                    }
                    true
                }
            };
            if keep {
                let mut printed = Vec::with_capacity(line.len() + node.len() + 4);
                push_line(&mut printed, node, line.as_bytes());
                write_stream(stream, &printed);
            }
        }
    }

    /// After any script ran: tell the script about node starts, and notice an exit request.
    fn after_script(&mut self) {
        loop {
            let notices = self
                .host
                .shared()
                .borrow_mut()
                .supervisor
                .as_mut()
                .map(|s| s.take_notices())
                .unwrap_or_default();
            if notices.is_empty() {
                break;
            }
            for notice in notices {
                let args = match notice {
                    Notice::Started { node, pid } => (node, pid.as_raw() as INT),
                    Notice::Failed { node } => (node, 0),
                };
                if let Err(error) = self.host.call_hook(Hook::NodeStatus, args) {
                    log::error!("{error}");
                }
            }
        }
        let request = self.host.shared().borrow().exit;
        match (request, self.phase) {
            (Some(ExitRequest::Terminate), Phase::Serving) => self.begin_shutdown(0, true),
            (Some(ExitRequest::Exit(code)), Phase::Serving) => self.begin_shutdown(code, false),
            (Some(ExitRequest::Exit(code)), Phase::Stopping { .. }) => {
                self.phase = Phase::Stopping { code, clean: false }
            }
            _ => {}
        }
    }

    fn begin_shutdown(&mut self, code: i32, clean: bool) {
        if self.phase != Phase::Serving {
            return;
        }
        self.phase = Phase::Stopping { code, clean };
        let shared = self.host.shared().clone();
        let mut context = shared.borrow_mut();
        context.timers.clear();
        if let Some(supervisor) = context.supervisor.as_mut() {
            supervisor.stop_all();
        }
    }

    /// The exit status once shutdown is complete.
    fn finished(&mut self) -> Option<i32> {
        if self.phase == Phase::Serving
            && !self.serve_forever
            && self.host.shared().borrow().timers.is_empty()
        {
            self.begin_shutdown(0, true);
        }
        let Phase::Stopping { code, clean } = self.phase else {
            return None;
        };
        let idle = self
            .host
            .shared()
            .borrow()
            .supervisor
            .as_ref()
            .is_none_or(|s| s.is_idle());
        if !idle {
            return None;
        }
        if clean {
            if let Err(error) = self.host.call_hook(Hook::ZeekDone, ()) {
                log::error!("{error}");
            }
            if let Some(ExitRequest::Exit(code)) = self.host.shared().borrow().exit {
                return Some(code);
            }
        }
        Some(code)
    }

    fn fire_due(&mut self, now: Instant) {
        let shared = self.host.shared().clone();
        if let Some(supervisor) = shared.borrow_mut().supervisor.as_mut() {
            supervisor.fire_due(now);
            supervisor.sweep(now);
        }
        while self.phase == Phase::Serving {
            let Some(callback) = shared.borrow_mut().timers.pop_due(now) else {
                break;
            };
            if let Err(error) = self.host.call_closure(&callback) {
                log::error!("{error}");
            }
            self.after_script();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let context = self.host.shared().borrow();
        let timers = context.timers.next_deadline();
        let supervisor = context.supervisor.as_ref().and_then(|s| s.next_deadline());
        match (timers, supervisor) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn push_line(out: &mut Vec<u8>, node: &str, line: &[u8]) {
    out.push(b'[');
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(b"] ");
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// Writes to the supervisor's own stdout or stderr (or the console sink).
fn write_stream(stream: Stream, bytes: &[u8]) {
    crate::console::write(stream, bytes);
}
