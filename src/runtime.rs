//! Assembling one process of any role: signal routing (SIGHUP too, for a supervisor
//! that reloads on it), the I/O thread, the shared
//! context, the Rhai host and the loop, in the order that matters (the interrupt flag
//! is registered before the reactor's signal pipe, so a script is already being
//! stopped when the loop hears of the signal).

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crossbeam_channel::Sender;
use nix::libc;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::Signal;

use crate::config::NodeConfig;
use crate::control;
use crate::event_loop::{Event, EventLoop, Sigint};
use crate::metrics;
use crate::process::Native;
use crate::process::plan::Launcher;
use crate::process::reactor::Reactor;
use crate::process::spawn::Slots;
use crate::script::{Context, Host, Limits, Nodes, Role, ScriptError};
use crate::supervisor::{Supervisor, ThisHost};

/// How many events may wait for the loop before the I/O thread (and with it, writing
/// nodes) is held back. With at most 128 KiB of output per event, this bounds the output
/// in flight to 16 MiB.
const EVENT_QUEUE: usize = 128;

/// Settings of a process, from the command line or an embedding program.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The limits of every script call.
    pub limits: Limits,
    /// What is logged (and what script nodes log).
    pub log_level: log::LevelFilter,
    /// What SIGINT means.
    pub sigint: Sigint,
    /// How script nodes are started; `None` re-executes the current program.
    pub(crate) launcher: Option<Launcher>,
    /// In the supervisor role, become a child subreaper: descendants that nodes leave
    /// behind are adopted, stopped with their node and reaped. This reaps every child
    /// of the process, so an embedding program that has children of its own leaves it
    /// off (the default); the command line turns it on.
    pub subreaper: bool,
    /// The names and addresses this host goes by in layouts (`run --host`): a node
    /// whose own cluster endpoint names another host is not started here. Empty: the
    /// machine's host name, `localhost`, loopback addresses and the addresses of its
    /// interfaces.
    pub host: Vec<String>,
    /// Serve Prometheus metrics at `HOST:PORT` (`run --metrics`; see `serve_metrics`).
    pub metrics: Option<String>,
    /// In the supervisor role, SIGHUP reloads the scripts (`EventLoop::reload`), as
    /// daemons re-read their configuration. Off by default, so that an embedding
    /// program keeps SIGHUP for itself; the command line turns it on.
    pub hangup_reloads: bool,
    /// In the supervisor role, tell the service manager named by `NOTIFY_SOCKET`
    /// (systemd's `Type=notify`) when the supervisor is ready, alive and stopping. An
    /// embedding program that speaks to its manager itself leaves it off (the
    /// default); `run` turns it on.
    pub notify_service_manager: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: Limits::default(),
            log_level: log::LevelFilter::Info,
            sigint: Sigint::Shutdown,
            launcher: None,
            subreaper: false,
            host: Vec::new(),
            metrics: None,
            hangup_reloads: false,
            notify_service_manager: false,
        }
    }
}

/// A process that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    /// A script failed to load or to run at start.
    Script(#[from] ScriptError),
    #[error("cannot start: {0}")]
    /// Something the process needs could not be set up.
    Setup(String),
    #[error("{0}")]
    /// The control socket cannot be listened on.
    Listen(#[from] control::ListenError),
    #[error("{0}")]
    /// The metrics cannot be served.
    Metrics(#[from] metrics::MetricsError),
}

/// One assembled process, ready to load scripts and serve.
pub struct Runtime {
    event_loop: EventLoop,
    events: Sender<Event>,
    // After the loop, whose end makes a request that waits for room in its queue give
    // up at once; dropping it answers what is in flight and removes the socket file.
    control: Option<control::Server>,
    metrics: Option<metrics::Server>,
    // Dropped last: it routes signals and owns the I/O thread.
    _reactor: Reactor,
}

impl Runtime {
    /// Sets up a process of `role`. `scripts` are the command-line scripts (which script
    /// nodes load too); `node` is this node's configuration in a supervised node.
    pub fn new(
        role: Role,
        scripts: &[PathBuf],
        node: Option<NodeConfig>,
        settings: &Settings,
    ) -> Result<Runtime, Error> {
        let setup = |what: &str, e: std::io::Error| Error::Setup(format!("{what}: {e}"));
        let interrupt = Arc::new(AtomicBool::new(false));
        for signal in [Signal::SIGTERM, Signal::SIGINT] {
            signal_hook::flag::register(signal as i32, interrupt.clone())
                .map_err(|e| setup("cannot handle signals", e))?;
        }
        // First, so that their descriptor numbers are low (see `spawn::Slots`).
        let slots = if role == Role::Supervisor {
            Some(Slots::new().map_err(|e| setup("cannot open /dev/null", e))?)
        } else {
            None
        };
        let adopting = role == Role::Supervisor && settings.subreaper;
        if adopting {
            nix::sys::prctl::set_child_subreaper(true)
                .map_err(|e| setup("cannot become a child subreaper", e.into()))?;
        }
        let mut signals = vec![Signal::SIGTERM, Signal::SIGINT];
        if role == Role::Supervisor && settings.hangup_reloads {
            signals.push(Signal::SIGHUP);
        }
        if adopting {
            signals.push(Signal::SIGCHLD);
        }
        let nofile = if role == Role::Supervisor {
            let limits = raise_nofile_limit();
            presize_descriptor_table();
            limits
        } else {
            None
        };
        let (events, event_rx) = crossbeam_channel::bounded(EVENT_QUEUE);
        let reactor = Reactor::start(events.clone(), &signals, role == Role::Supervisor)
            .map_err(|e| setup("cannot start the I/O thread", e))?;

        let mut context = Context::new(role);
        context.node = node;
        let mut nodes: Option<Nodes> = None;
        if role == Role::Supervisor {
            let mut launcher = match &settings.launcher {
                Some(l) => l.clone(),
                None => Launcher::current(scripts, settings.log_level)
                    .map_err(|e| setup("cannot find this program", e))?,
            };
            launcher.child_nofile = nofile;
            launcher.notify_socket = reactor.notify_socket().map(str::to_string);
            launcher.call_time = settings.limits.call_time;
            let Some(slots) = slots else {
                return Err(Error::Setup("no spawn slots".into()));
            };
            let backend = Native::new(launcher, reactor.watcher(), slots, adopting);
            let here = if settings.host.is_empty() {
                ThisHost::machine()
            } else {
                ThisHost::named(&settings.host)
            };
            let supervisor = Supervisor::new(Box::new(backend), here);
            nodes = Some(Rc::new(RefCell::new(supervisor)));
        }
        let host = Host::new(
            context.shared(),
            nodes.clone(),
            settings.limits,
            interrupt.clone(),
        );
        let mut event_loop = EventLoop::new(host, nodes, event_rx, interrupt, settings.sigint);
        if role == Role::Supervisor && settings.notify_service_manager {
            event_loop.notify_service_manager();
        }
        Ok(Runtime {
            event_loop,
            events,
            control: None,
            metrics: None,
            _reactor: reactor,
        })
    }

    /// Serves control clients on the Unix socket at `path` (see `control`), from now on
    /// until this runtime is dropped. Requests wait for the loop: they are served once
    /// `start` or `run` runs it. Fails when another supervisor serves `path`.
    ///
    /// The process's umask is changed for the moment the socket is bound (so the file
    /// is never reachable by others): call this before the program's other threads
    /// create files.
    pub fn listen(&mut self, path: &std::path::Path) -> Result<(), Error> {
        self.listen_with(path, control::Limits::default())
    }

    /// `listen` with other limits on what clients may do.
    pub fn listen_with(
        &mut self,
        path: &std::path::Path,
        limits: control::Limits,
    ) -> Result<(), Error> {
        let server = control::Server::start(path, self.events.clone(), limits)?;
        self.control = Some(server);
        Ok(())
    }

    /// Serves Prometheus metrics at `http://ADDRESS/metrics` (`HOST:PORT`; port 0 picks a
    /// free one), from now on until this runtime is dropped: see `metrics`. Requests
    /// are answered once `start` or `run` runs the loop.
    pub fn serve_metrics(&mut self, address: &str) -> Result<std::net::SocketAddr, Error> {
        let server = metrics::Server::start(address, self.events.clone())?;
        let bound = server.address();
        self.metrics = Some(server);
        Ok(bound)
    }

    /// Ends a process that is about to exit: the control socket is closed and its file
    /// removed, and the rest (the engine, the node table) is left for the exit to
    /// reclaim, which is much cheaper than tearing it down piece by piece.
    pub fn finish(mut self) {
        drop(self.metrics.take());
        drop(self.control.take());
        finish_compression();
        std::mem::forget(self);
    }

    /// The control socket's absolute path, when listening.
    pub fn control_socket(&self) -> Option<&std::path::Path> {
        self.control.as_ref().map(control::Server::path)
    }

    /// Loads the scripts and runs `zeek_init()`; on failure every node is stopped again.
    pub fn start(&mut self, scripts: &[PathBuf]) -> Result<(), Error> {
        self.event_loop.start(scripts).map_err(Error::Script)
    }

    /// Serves until shutdown; returns the exit status.
    pub fn run(&mut self) -> i32 {
        self.event_loop.run()
    }

    /// A way for other threads to hand work to the loop (`Event::Task`).
    pub fn sender(&self) -> Sender<Event> {
        self.events.clone()
    }

    /// The loop, to drive it from Rust.
    pub fn event_loop(&mut self) -> &mut EventLoop {
        &mut self.event_loop
    }

    /// Runs Rhai code in the loaded program (functions it defines become hooks).
    pub fn eval(&mut self, code: &str) -> Result<rhai::Dynamic, ScriptError> {
        self.event_loop.host().eval(code)
    }

    /// `Supervisor::create` from Rust. An error in the supervisor role only.
    pub fn create(&mut self, config: NodeConfig) -> Result<(), String> {
        match self.event_loop.nodes() {
            Some(nodes) => nodes
                .borrow_mut()
                .create(config)
                .map(drop)
                .map_err(|e| e.to_string()),
            None => Err(crate::script::api::NOT_SUPERVISOR.into()),
        }
    }
}

/// How many descriptors a supervisor's table holds from the start: enough for about
/// 1,300 captured nodes (three each).
const DESCRIPTORS_AHEAD: u64 = 4096;

/// Grows this process's descriptor table now to hold `DESCRIPTORS_AHEAD` descriptors
/// (fewer under a lower limit). The kernel grows a table by doubling, and in a process
/// with a second thread (or a child sharing the table) each step waits for an RCU grace
/// period: 5 to 15 ms here, four times in a burst of 200 creates, with the loop's thread
/// asleep. Before the I/O thread starts it costs nothing; the table takes 8 bytes of
/// kernel memory per entry, and a fork copies only up to the highest open descriptor.
fn presize_descriptor_table() {
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let top = DESCRIPTORS_AHEAD.min(soft).saturating_sub(1);
    let Ok(top) = libc::c_int::try_from(top) else {
        return;
    };
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor, closed again at once.
    let fd = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, top) };
    if fd >= 0 {
        // SAFETY: `fd` was just made here and nothing else knows it.
        unsafe { libc::close(fd) };
    }
}

/// A supervisor holds three descriptors per captured node: raise the soft limit on open
/// files to the hard limit. Returns the original limits, which nodes get back.
fn raise_nofile_limit() -> Option<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            log::debug!(
                "cannot raise the open file limit: {}",
                crate::process::errno_text(e)
            );
            return None;
        }
    }
    Some((soft, hard))
}

/// `rhai-supervisor repl`: loads `scripts` (and runs `zeek_init()`), then serves the
/// loop on this thread and the REPL's front end on another until the session ends.
/// Returns the exit status.
pub fn repl(
    scripts: &[PathBuf],
    socket: Option<PathBuf>,
    settings: &Settings,
) -> Result<i32, Error> {
    let interactive = crate::repl::interactive();
    let mut settings = settings.clone();
    settings.sigint = Sigint::Interrupt;
    let mut runtime = Runtime::new(Role::Supervisor, scripts, None, &settings)?;
    if let Some(path) = socket {
        runtime.listen(&path)?;
    }
    if let Some(address) = &settings.metrics {
        runtime.serve_metrics(address)?;
    }
    runtime.start(scripts)?;
    // On a terminal, Ctrl-C stops a statement that runs too long; from a pipe, the
    // usual time limit does.
    let call_time = (!interactive).then_some(settings.limits.call_time);
    let front_end = match crate::repl::FrontEnd::start(runtime.sender(), interactive, call_time) {
        Ok(front_end) => front_end,
        Err(e) => {
            runtime.event_loop().terminate();
            runtime.run();
            return Err(Error::Setup(e));
        }
    };
    let code = runtime.run();
    front_end.finish();
    finish_compression();
    Ok(code)
}

/// How long an exiting supervisor waits for rotated files still being compressed.
const COMPRESSION_GRACE: Duration = Duration::from_secs(10);

/// Lets the compression worker finish the rotated files queued so far (those it does
/// not finish are compressed when their node's file is opened again).
fn finish_compression() {
    crate::process::compress::finish(COMPRESSION_GRACE);
}
