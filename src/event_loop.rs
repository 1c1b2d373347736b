//! The one loop: everything that happens reaches the loop thread as an `Event` on one
//! channel, and the loop blocks on that channel with the next deadline (a revival, a
//! SIGKILL, a `schedule`d closure) as its timeout. It never polls: with nothing due
//! and nothing arriving it sleeps in `recv`.
//!
//! It owns the `Host` (the Rhai engine) and the node table (`nodes`, in the supervisor
//! role; lent to the engine's `Supervisor` functions), turns node output into `stdout_hook`/`stderr_hook` calls or `[node] line`
//! prints, turns node starts into `node_status` calls, and runs the shutdown: stop
//! every node, wait for the last one, `zeek_done()`, return the exit status.
//!
//! It also publishes each node's output lines to the node's followers (`follow_output`,
//! `ctl tail -f`), through their bounded feeds (`feed`), and ends their streams when the
//! node is gone; and, after each event it handles, the changes the node table recorded
//! (`config::Event`) to the followers of the events (`follow_events`, `ctl events`,
//! `top`), whose streams end when the supervisor stops. Under a service manager
//! (`service`), it tells the manager when the supervisor is ready, alive and stopping.
//!
//! A reload (`reload`: `ctl reload`, SIGHUP, `:reload`) loads the command-line scripts
//! again into a fresh `Host` whose node table records instead of creating; if that
//! works, the node table plans and checks the difference, the loop swaps its `Host`
//! for the new one (its functions, hooks, globals and timers; the old timers are
//! dropped), and the plan is carried out. Whoever asked is answered once the plan is
//! applied, which may take a few turns while changed and removed nodes stop.

mod service;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use nix::sys::signal::Signal;
use rhai::{Dynamic, INT, ImmutableString};

use crate::config::reload::{Change, ReloadReport};
use crate::config::{ExitInfo, Stream};
use crate::feed::{ENTRY_COST, Feed, Subscribers};
use crate::process::ProcId;
use crate::process::lines;
use crate::process::reactor::IoEvent;
use crate::script::{Context, ExitRequest, Hook, Host, Mode, Nodes, Role, ScriptError, Shared};
use crate::supervisor::{Applying, CreateError, Notice, Recording};

/// Something for the loop to handle.
pub enum Event {
    /// From the I/O thread: node output, an exit, SIGTERM or SIGINT (or SIGCHLD, for a
    /// subreaper).
    Io(IoEvent),
    /// Work from another thread (a REPL line, a control request), run on the loop.
    Task(Box<dyn FnOnce(&mut EventLoop) + Send>),
}

impl From<IoEvent> for Event {
    fn from(event: IoEvent) -> Event {
        Event::Io(event)
    }
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

/// Why a reload changed nothing, or was not seen through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The new scripts failed to load or their `zeek_init()` failed (with where).
    #[error("{0}; nothing was reloaded, the running scripts go on")]
    Script(ScriptError),
    /// The new scripts called `terminate()` or `exit()` while they were evaluated.
    #[error(
        "the new scripts asked the supervisor to stop while they were evaluated; nothing was reloaded"
    )]
    ExitRequested,
    /// A new or changed node could not be started as configured.
    #[error("{0}; nothing was reloaded")]
    Refused(CreateError),
    /// Shutdown has begun.
    #[error("the supervisor is shutting down; nothing was reloaded")]
    ShuttingDown,
    /// Another reload's plan is still being carried out.
    #[error(
        "a reload is already under way (its changed nodes are still stopping); nothing was reloaded, try again once it is done"
    )]
    Busy,
    /// The process was started without scripts (a bare `repl`).
    #[error("nothing to reload: no scripts were named on the command line")]
    NoScripts,
    /// Not the supervisor role: there are no nodes to reload.
    #[error("supervisor mode not enabled")]
    NotSupervisor,
    /// Shutdown began while the plan was being carried out.
    #[error("the supervisor began shutting down before the reload was fully applied")]
    Interrupted,
}

/// Where the outcome of a reload goes, once it is applied (or has failed).
pub type ReloadDone = Box<dyn FnOnce(Result<ReloadReport, ReloadError>)>;

/// How far a reload went at once.
enum Begun {
    /// A dry run: the plan, and nothing else.
    Shown(ReloadReport),
    /// The plan is being carried out; done once `Applying` says so.
    Applying(ReloadReport, Applying),
}

/// A reload whose plan is being carried out.
struct Reloading {
    report: ReloadReport,
    applying: Applying,
    done: ReloadDone,
    since: Instant,
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

/// The loop: the engine, the node table and the timers, and the events they wait for.
pub struct EventLoop {
    host: Host,
    /// The node table, in the supervisor role.
    nodes: Option<Nodes>,
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
    /// Who follows each node's output, by node name.
    output_followers: HashMap<String, Subscribers>,
    /// Who follows the supervisor's events.
    event_followers: Subscribers,
    /// The command-line scripts, which a reload reads again.
    scripts: Vec<PathBuf>,
    reloading: Option<Reloading>,
    /// Start-up's code pages were let go (`process::trim`).
    trimmed: bool,
    /// The service manager to tell about readiness, liveness and shutdown, if any.
    service: Option<service::ServiceManager>,
}

impl EventLoop {
    /// A loop over `host` (and `nodes`, in the supervisor role) that takes its events from `events`; `interrupt` is the flag the signal handlers set.
    pub fn new(
        host: Host,
        nodes: Option<Nodes>,
        events: Receiver<Event>,
        interrupt: Arc<AtomicBool>,
        sigint: Sigint,
    ) -> EventLoop {
        let serve_forever = host.shared().borrow().role != Role::Plain;
        EventLoop {
            host,
            nodes,
            events,
            interrupt,
            phase: Phase::Serving,
            sigint,
            failed_hooks: HashSet::new(),
            serve_forever,
            output_followers: HashMap::new(),
            event_followers: Subscribers::default(),
            scripts: Vec::new(),
            reloading: None,
            trimmed: false,
            service: None,
        }
    }

    /// Tells the service manager named by `NOTIFY_SOCKET` in this process's environment
    /// (systemd's `Type=notify`) when the supervisor is ready, alive and stopping; see
    /// `service`. Nothing happens without the variable.
    pub fn notify_service_manager(&mut self) {
        self.service = service::ServiceManager::from_env();
    }

    /// The Rhai host: to evaluate code in the loaded program.
    pub fn host(&mut self) -> &mut Host {
        &mut self.host
    }

    /// The script context (role, timers, exit request).
    pub fn shared(&self) -> Shared {
        self.host.shared().clone()
    }

    /// The node table, in the supervisor role.
    pub fn nodes(&self) -> Option<&Nodes> {
        self.nodes.as_ref()
    }

    /// Loads the scripts and calls `zeek_init()`. A failure is returned after every node
    /// that the scripts created has been stopped again.
    pub fn start(&mut self, scripts: &[PathBuf]) -> Result<(), ScriptError> {
        self.scripts = scripts.to_vec();
        let mut result = self.host.load(scripts);
        if result.is_ok() && self.host.shared().borrow().exit.is_none() {
            result = self.host.call_hook(Hook::ZeekInit, ()).map(drop);
        }
        // From now on, nodes are created at run time: a reload leaves them alone.
        if let Some(table) = self.host.table() {
            table.set_mode(Mode::Serving);
        }
        if let Err(error) = result {
            self.begin_shutdown(1, false);
            self.run();
            return Err(error);
        }
        self.after_script();
        if let Some(service) = self.service.as_mut() {
            service.started(self.nodes.as_ref().map(|n| n.borrow()).as_deref());
        }
        Ok(())
    }

    /// Serves until shutdown; returns the exit status.
    pub fn run(&mut self) -> i32 {
        loop {
            let now = Instant::now();
            self.fire_due(now);
            self.after_script();
            if let Some(service) = self.service.as_mut() {
                service.turn(self.nodes.as_ref().map(|n| n.borrow_mut()).as_deref_mut());
            }
            if let Some(code) = self.finished() {
                return code;
            }
            if !self.trimmed && self.events.is_empty() {
                // Start-up is over: the code only it ran need not stay resident.
                self.trimmed = true;
                let kib = crate::process::trim::drop_startup_pages();
                log::debug!("start-up is over; let go of {kib} KiB of code pages");
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

    /// From now on, gives each line of the output of node `node` to `feed`, as an item
    /// `{"stream": "stdout" or "stderr", "line": TEXT}`, until the node is gone.
    pub fn follow_output(&mut self, node: &str, feed: std::sync::Arc<Feed>) {
        self.output_followers
            .entry(node.to_string())
            .or_default()
            .add(feed);
    }

    /// From now on, gives each change of a node (and each applied reload) to `feed`, as
    /// an item in the form of `config::Event`, until the supervisor stops.
    pub fn follow_events(&mut self, feed: Arc<Feed>) {
        if let Some(nodes) = &self.nodes {
            nodes.borrow_mut().watch(true);
        }
        self.event_followers.add(feed);
    }

    /// Shutdown has begun, or a script asked for it (`terminate()`, `exit(code)`) and
    /// the loop will begin it when the running call returns.
    pub fn is_stopping(&self) -> bool {
        self.phase != Phase::Serving || self.host.shared().borrow().exit.is_some()
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Io(IoEvent::Output {
                proc,
                node,
                stream,
                lines,
            }) => self.output(proc, &node, stream, &lines),
            Event::Io(IoEvent::Exited { proc }) => {
                if let Some(nodes) = &self.nodes {
                    let mut nodes = nodes.borrow_mut();
                    // A node_exit hook may keep the node down: revivals then wait for it.
                    nodes.set_exit_hook(self.host.defines(Hook::NodeExit));
                    nodes.process_exited(proc);
                }
            }
            Event::Io(IoEvent::Notify { pid, notification }) => {
                if let Some(nodes) = &self.nodes {
                    nodes.borrow_mut().notified(pid, notification);
                }
            }
            Event::Io(IoEvent::FdReady { proc }) => {
                if let Some(nodes) = &self.nodes {
                    nodes.borrow_mut().fd_ready(proc);
                }
            }
            Event::Io(IoEvent::Probed { id, result }) => {
                if let Some(nodes) = &self.nodes {
                    nodes.borrow_mut().probed(id, result);
                }
            }
            Event::Io(IoEvent::Signal(signal)) => self.signal(signal),
            Event::Task(task) => task(self),
        }
        self.after_script();
    }

    fn signal(&mut self, signal: Signal) {
        if signal == Signal::SIGHUP {
            // As daemons do: re-read the configuration. The outcome is in the log.
            log::info!("received SIGHUP; reloading the scripts");
            self.reload(false, Box::new(drop));
            return;
        }
        if signal == Signal::SIGCHLD {
            if let Some(nodes) = &self.nodes {
                nodes.borrow_mut().child_exited();
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
                if let Some(nodes) = &self.nodes {
                    nodes.borrow_mut().kill_all();
                }
            }
        }
    }

    /// Prints or hands to a hook each line of a node's output.
    fn output(&mut self, proc: ProcId, node: &Arc<str>, stream: Stream, data: &[u8]) {
        if !self.output_followers.is_empty() {
            self.publish_output(node, stream, data);
        }
        let to_file = match &self.nodes {
            Some(nodes) => nodes.borrow_mut().take_output(proc, stream, data),
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

    /// Gives the lines of `data` to the followers of `node`.
    fn publish_output(&mut self, node: &str, stream: Stream, data: &[u8]) {
        let Some(followers) = self.output_followers.get_mut(node) else {
            return;
        };
        // Lines are looked at one by one only as far as some follower has room; the rest
        // are only counted, so a follower that is behind costs a count per chunk.
        let room = followers.room();
        let (mut texts, mut weights) = (Vec::new(), Vec::new());
        let (mut used, mut consumed) = (0, 0);
        for line in lines::split(data) {
            if used >= room {
                break;
            }
            consumed += line.len() + 1;
            let text = String::from_utf8_lossy(line);
            let weight = text.len() + 32;
            used += weight + ENTRY_COST;
            texts.push(text);
            weights.push(weight);
        }
        // Each item's JSON is made only if a follower has room for it.
        if !weights.is_empty() {
            followers.publish_batch(&weights, |i| {
                let line = serde_json::to_string(&texts[i]).unwrap_or_default();
                format!("{{\"stream\":\"{}\",\"line\":{line}}}", stream.name())
            });
        }
        let rest = data.get(consumed..).unwrap_or_default();
        followers.miss(memchr::memchr_iter(b'\n', rest).count() as u64);
        if followers.is_empty() {
            self.output_followers.remove(node);
        }
    }

    /// A node left the table: its followers' streams end, unless a new node of that
    /// name already exists (then they follow that one).
    fn node_removed(&mut self, node: &str) {
        let recreated = self
            .nodes
            .as_ref()
            .is_some_and(|nodes| nodes.borrow().exists(node));
        if recreated {
            return;
        }
        if let Some(mut followers) = self.output_followers.remove(node) {
            let reason = if self.phase == Phase::Serving {
                format!("node '{node}' was destroyed")
            } else {
                "the supervisor is stopping".to_string()
            };
            followers.end(&reason);
        }
    }

    /// Gives the changes the node table recorded to the followers of the events; when
    /// the last follower is gone, the table stops recording them.
    fn publish_events(&mut self) {
        let Some(nodes) = &self.nodes else {
            return;
        };
        if self.event_followers.is_empty() {
            return;
        }
        let events = nodes.borrow_mut().take_events();
        for event in events {
            let item = event.to_json();
            self.event_followers.publish(item.len(), || item);
        }
        if self.event_followers.is_empty() {
            nodes.borrow_mut().watch(false);
        }
    }

    /// The supervisor stops: the last changes go out, and the streams of the events end.
    fn end_event_streams(&mut self) {
        self.publish_events();
        self.event_followers.end("the supervisor is stopping");
        if let Some(nodes) = &self.nodes {
            nodes.borrow_mut().watch(false);
        }
    }

    /// After any script ran: tell the script about node starts, and notice an exit request.
    fn after_script(&mut self) {
        loop {
            self.publish_events();
            let notices = self
                .nodes
                .as_ref()
                .map(|nodes| nodes.borrow_mut().take_notices())
                .unwrap_or_default();
            if notices.is_empty() {
                break;
            }
            for notice in notices {
                let called = match notice {
                    Notice::Started { node, pid } => self
                        .host
                        .call_hook(Hook::NodeStatus, (node, pid.as_raw() as INT)),
                    Notice::Failed { node } => {
                        self.host.call_hook(Hook::NodeStatus, (node, 0 as INT))
                    }
                    Notice::Ready { node } => self.host.call_hook(Hook::NodeReady, (node,)),
                    Notice::Exited {
                        node,
                        exit,
                        uptime,
                        reason,
                    } => {
                        let mut info = rhai::Map::new();
                        let (code, signal) = match exit {
                            Some(ExitInfo::Code(code)) => ((code as INT).into(), Dynamic::UNIT),
                            Some(ExitInfo::Signal(s)) => {
                                (Dynamic::UNIT, ExitInfo::signal_name(s).into())
                            }
                            None => (Dynamic::UNIT, Dynamic::UNIT),
                        };
                        info.insert("code".into(), code);
                        info.insert("signal".into(), signal);
                        info.insert("uptime".into(), (uptime as rhai::FLOAT).into());
                        info.insert("reason".into(), reason.map_or(Dynamic::UNIT, Dynamic::from));
                        let answer = self
                            .host
                            .call_hook(Hook::NodeExit, (node.clone(), Dynamic::from_map(info)));
                        if let Ok(Some(value)) = &answer {
                            if value.as_bool() == Ok(false) {
                                if let Some(nodes) = &self.nodes {
                                    nodes.borrow_mut().keep_down(&node);
                                }
                            }
                        }
                        answer
                    }
                    Notice::Removed { node } => {
                        self.node_removed(&node);
                        continue;
                    }
                };
                if let Err(error) = called {
                    log::error!("{error}");
                }
            }
        }
        self.reload_progress();
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
        if let Some(reloading) = self.reloading.take() {
            log::warn!("shutdown began before the reload was fully applied");
            (reloading.done)(Err(ReloadError::Interrupted));
        }
        if let Some(service) = self.service.as_mut() {
            service.stopping();
        }
        self.host.shared().borrow_mut().timers.clear();
        if let Some(nodes) = &self.nodes {
            nodes.borrow_mut().stop_all();
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
        let idle = self.nodes.as_ref().is_none_or(|n| n.borrow().is_idle());
        if !idle {
            return None;
        }
        self.end_event_streams();
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

    /// Reads the command-line scripts again and applies the difference (or, with
    /// `dry_run`, only works it out); `done` gets the plan once it is applied, or why
    /// nothing changed. See the module's docs.
    pub fn reload(&mut self, dry_run: bool, done: ReloadDone) {
        let since = Instant::now();
        match self.begin_reload(dry_run) {
            Err(error) => {
                log::error!("cannot reload: {error}");
                done(Err(error));
            }
            Ok(Begun::Shown(report)) => done(Ok(report)),
            Ok(Begun::Applying(report, applying)) => {
                self.reloading = Some(Reloading {
                    report,
                    applying,
                    done,
                    since,
                });
                // Answered here if nothing needs to stop first, else once it has.
                self.after_script();
            }
        }
    }

    /// A reload up to the point where the plan is being carried out.
    fn begin_reload(&mut self, dry_run: bool) -> Result<Begun, ReloadError> {
        let Some(nodes) = self.nodes.clone() else {
            return Err(ReloadError::NotSupervisor);
        };
        if self.is_stopping() {
            return Err(ReloadError::ShuttingDown);
        }
        if self.reloading.is_some() {
            return Err(ReloadError::Busy);
        }
        if self.scripts.is_empty() {
            return Err(ReloadError::NoScripts);
        }
        let names: Vec<String> = self
            .scripts
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        log::info!(
            "{} the scripts: {}",
            if dry_run {
                "dry run of reloading"
            } else {
                "reloading"
            },
            names.join(", ")
        );
        let started = Instant::now();
        let (host, recording) = self.evaluate(&nodes)?;
        let evaluated = Instant::now();
        let plan = nodes.borrow().plan(recording);
        let mut report = plan.report(dry_run);
        let planned = Instant::now();
        for line in report.nodes.iter().filter(|l| l.change != Change::Keep) {
            log::info!("reload: {line}");
        }
        log::info!(
            "reload plan: {} (scripts evaluated in {:.1} ms, planned in {:.1} ms)",
            report.summary(),
            millis(evaluated - started),
            millis(planned - evaluated)
        );
        if dry_run {
            return Ok(Begun::Shown(report));
        }
        let checked = nodes
            .borrow_mut()
            .check(&plan)
            .map_err(ReloadError::Refused)?;
        // The new program takes over before the plan runs, so the hooks called for
        // what it does (node_status of a new process) are the new ones. The old
        // program, and its timers, go.
        drop(std::mem::replace(&mut self.host, host));
        self.failed_hooks.clear();
        let (applying, errors) = nodes.borrow_mut().apply_plan(plan, checked);
        report.errors = errors;
        Ok(Begun::Applying(report, applying))
    }

    /// Runs the new scripts' top level and `zeek_init()` in a fresh engine whose
    /// creates are recorded: the engine and what they asked for.
    fn evaluate(&mut self, nodes: &Nodes) -> Result<(Host, Recording), ReloadError> {
        let context = Context::new(Role::Supervisor).shared();
        let mut host = Host::new(
            context,
            Some(nodes.clone()),
            self.host.limits(),
            self.interrupt.clone(),
        );
        let Some(table) = host.table().cloned() else {
            return Err(ReloadError::NotSupervisor);
        };
        table.set_mode(Mode::Recording(Recording::default()));
        let mut result = host.load(&self.scripts);
        if result.is_ok() && host.shared().borrow().exit.is_none() {
            result = host.call_hook(Hook::ZeekInit, ()).map(drop);
        }
        if host.shared().borrow().exit.is_some() {
            return Err(ReloadError::ExitRequested);
        }
        result.map_err(ReloadError::Script)?;
        match table.set_mode(Mode::Serving) {
            Mode::Recording(recording) => Ok((host, recording)),
            Mode::Loading | Mode::Serving => Err(ReloadError::NotSupervisor),
        }
    }

    /// Answers a reload whose plan has been carried out.
    fn reload_progress(&mut self) {
        let applied = match (&self.reloading, &self.nodes) {
            (Some(reloading), Some(nodes)) => nodes.borrow().is_applied(&reloading.applying),
            _ => false,
        };
        if !applied {
            return;
        }
        if let Some(reloading) = self.reloading.take() {
            log::info!(
                "reload applied in {:.1} ms",
                millis(reloading.since.elapsed())
            );
            if let Some(nodes) = &self.nodes {
                nodes
                    .borrow_mut()
                    .reload_applied(&reloading.report.summary());
            }
            self.publish_events();
            (reloading.done)(Ok(reloading.report));
        }
    }

    fn fire_due(&mut self, now: Instant) {
        if let Some(service) = self.service.as_mut() {
            service.fire_due(now);
        }
        let shared = self.host.shared().clone();
        if let Some(nodes) = &self.nodes {
            nodes.borrow_mut().fire_due(now);
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
        let timers = self.host.shared().borrow().timers.next_deadline();
        let supervisor = self.nodes.as_ref().and_then(|n| n.borrow().next_deadline());
        let service = self.service.as_ref().and_then(|s| s.next_deadline());
        [timers, supervisor, service].into_iter().flatten().min()
    }
}

fn millis(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
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
