//! rhai-supervisor: process supervision policy written in Rhai, with Zeek's Supervisor
//! API (`Supervisor::create`, `destroy`, `restart`, `status`, ...).
//!
//! # Modules, top to bottom
//!
//! Each names only those below it (`tests/layers.rs` keeps it so):
//!
//! | module | what it owns |
//! |---|---|
//! | `main.rs`, `cli`, `ctl`, `top`, `node` | the command line, `ctl` (and its `--ssh` fan-out to other hosts), the live view `top` (a client of the events and output streams: `top::model` what it shows, `top::view` how), and what runs inside a script node (and the stem) |
//! | `runtime` | assembling one process of any role: signals, the I/O thread, the loop, the control socket, the metrics server, the REPL's front end |
//! | `control`, `metrics`, `repl` | front ends: control requests, metrics scrapes and typed statements, handed to the loop as tasks; the control client, and its reach to other hosts through ssh (`control::ssh`, `control::relay`); the Prometheus text format (`metrics::exposition`) |
//! | `event_loop` | the one loop: owns the engine and the node table, turns events into calls; tells a service manager (systemd) when the supervisor is ready, alive and stopping (`event_loop::service`) |
//! | `script` | the Rhai side: engine and limits, globals, hooks, the `Supervisor` and `Cluster` modules, records' registration, the node table as scripts reach it (`script::table`: the scripts' own nodes, run-time nodes, or a reload's recording) |
//! | `supervisor` | policy: the node table, each node's state machine (`supervisor::node`), revival and backoff, deadlines, which host a node belongs to (`supervisor::host`), a reload's plan and carrying it out (`supervisor::reload`) |
//! | `process` | mechanism: the `Backend` trait and the native backend (plan, spawn, stem, reactor, leftovers, a cgroup per node: `process::cgroup`) |
//! | `config`, `console`, `feed` | shared leaves: the records (one field table each), what a reload reports (`config::reload`), the events followers receive (`config::event`) and constants; where output goes; followers' bounded queues |
//!
//! # Who owns what
//!
//! The **node table** (`supervisor::Supervisor`) is owned by the loop
//! (`event_loop::EventLoop`, its field `nodes`), in the supervisor role only. The loop
//! lends it, as an `Rc<RefCell>` (`script::Nodes`, wrapped in each host's
//! `script::Table`), to the engine's `Supervisor::` functions, which borrow it for the
//! length of one call; the loop never holds a borrow while a script runs. The table
//! owns its nodes, and remembers who created each (the scripts, or anything at run
//! time); a node's state (`supervisor::node::State`) is the one place its process's
//! pid and stop deadline live. The supervisor reaches processes only through `process::Backend`.
//!
//! # Threads
//!
//! - the **loop thread** (the main thread) owns all state: the Rhai engine and the
//!   loaded program (`script::Host`), the node table, the timers. It spawns every node
//!   (the parent-death signal is tied to the thread that forks, and this one lives as
//!   long as the process). It blocks on one channel with the next deadline as timeout
//!   (`event_loop`), so an idle supervisor uses no CPU;
//! - the **I/O thread** (`process::reactor`) waits with epoll on every node's pidfd and
//!   output pipes and on the signal self-pipe, and sends `IoEvent`s to the loop: output
//!   lines, exits (after the exiting node's output), SIGTERM/SIGINT;
//! - the **control thread** (`control::server`, in `run` unless `--no-socket`) serves
//!   every client of the control socket with `poll`: it reads request lines, decodes
//!   them, sends each to the loop as an `Event::Task`, and writes the answer that the
//!   task sends back on its reply channel. The loop never touches a client socket.
//!   A `follow` request is answered with a stream: the loop publishes into the
//!   follower's bounded queue (`feed`), the control thread writes from it;
//! - in `repl`, the **REPL thread** (`repl`) runs the line editor; each complete input
//!   goes to the loop as an `Event::Task`, is evaluated there, and its rendered value
//!   comes back on a channel. An output thread prints node output, script prints and
//!   logs above the prompt (the `console` sink), so the loop never waits for the
//!   terminal. A keys thread (`repl::keys`) reads the terminal into a queue and feeds
//!   the editor a line at a time, so nothing typed ahead is lost;
//! - the **gzip worker** (`process::compress`), only once a node's rotated output files
//!   are to be compressed: one for the process, it numbers and compresses rotated files
//!   in order, so the loop only renames a file at a rotation;
//! - the **metrics thread** (`metrics`, with `--metrics`): it serves `GET /metrics` with
//!   `poll` like the control thread; for a scrape it asks the loop, as a task, for one
//!   look at the node table (`Supervisor::figures`), and renders the text itself. No
//!   timer: it sleeps while nobody scrapes.
//!
//! Processes: besides the nodes, a supervisor that runs script nodes has one helper
//! process, the **stem** (`process::stem`): single-threaded, with Rhai's standard
//! library built, it forks each script node on request so that the node is the
//! supervisor's own child but skips exec and the library's construction.
//!
//! No thread per node or per client; the channel is bounded, so a node that writes
//! faster than the loop handles lines is slowed by its full pipe instead of growing our
//! memory.
//!
//! # How a call travels, read downward
//!
//! A script calls `Supervisor::create(cfg)` → `script::api` converts the map into a
//! `config::NodeConfig` and calls `supervisor::Supervisor::create`, which checks it and
//! asks the backend (`process::Native::start`) to plan it (`process::plan`) and spawn it
//! (`process::spawn`: a clone that execs; `process::stem` for a script node), then hands
//! its pidfd and pipes to the I/O thread, and records the node in the `Running` state
//! with a `Notice` → after the script call, the loop calls the script's
//! `node_status(node, pid)`.
//!
//! The node dies: its pidfd becomes readable → the I/O thread drains its pipes
//! (`IoEvent::Output`), then sends `IoEvent::Exited` → the loop hands it to
//! `Supervisor::process_exited`, which has the backend reap it (`Backend::ended`) and
//! steps the node's state machine (`Node::step`) → the step says `ReviveAt(t)`, a
//! deadline the loop waits for → when due, `Supervisor::fire_due` steps the node with
//! `RevivalDue`, which says `Start`, and the backend starts a new process.
//!
//! A control request travels the same way: `ctl create` writes a line → the control
//! thread decodes it (`control::decode`) and queues an `Event::Task` → the loop runs it
//! (`control::handle`: `Supervisor::create`, as a script would) and sends the response
//! to the control thread, which writes it to the client.
//!
//! A reload (`ctl reload`, SIGHUP, `:reload`) is a task (or a signal event) too: the
//! loop loads the command-line scripts into a second `script::Host`, whose
//! `script::Table` records creates instead of making them (`Supervisor::record`); the
//! node table plans the difference from the nodes the scripts created
//! (`Supervisor::plan`) and checks it with the backend; the loop swaps in the new host
//! and the table carries the plan out (`Supervisor::apply_plan`); the one who asked is
//! answered once the loop finds it applied (`Supervisor::is_applied`).
//!
//! Across hosts nothing travels but ssh: `ctl --ssh HOST` starts `ssh HOST
//! rhai-supervisor ctl __relay` per host (`control::ssh`), writes the request line to
//! its stdin and reads the answer from its stdout; on that host the relay
//! (`control::relay`) copies both ways between ssh and the control socket, and the
//! request is served there like any other. `Supervisor::create` leaves a node whose
//! endpoint names another host to that host's supervisor (`supervisor::host`).
//!
//! `ctl tail -f` travels the same way once: the task (`control::handle`) takes the node's
//! kept tail and subscribes the follower's feed in the same loop turn; from then on the
//! loop, handling each `IoEvent::Output`, publishes the node's lines to its feeds
//! (`event_loop`), never waiting: a full feed counts what it misses. When the node leaves
//! the table (`Notice::Removed`), its feeds get their end.
//!
//! `ctl events` and `top` follow the topic `events`: the task answers with the status of
//! every node and subscribes the feed, and the table starts recording each change where
//! it happens (`Supervisor::tell`: in `create`, `start`, `process_exited`, `apply`,
//! `settle`, `remove`, the health checks; `reload_applied` for a reload) as a
//! `config::Event`. After each event it handles, the loop takes what was recorded and
//! publishes it to the followers (`EventLoop::publish_events`); once none is left, the
//! table records nothing any more.
//!
//! # The embedding API
//!
//! `Runtime` (with `Settings`) runs a supervisor in another program; the records of
//! `config` are what it creates nodes from; `node::serve_if_node` lets the program
//! serve its own script nodes; `control::Client` drives a running supervisor.
#![warn(missing_docs)]
// Since Rust 1.88 (the `rust-version`, for ratatui) clippy would have every nested
// `if let` written as a let chain; the source predates that and keeps its form.
#![allow(clippy::collapsible_if)]

#[doc(hidden)]
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
#[doc(hidden)]
pub mod ctl;
pub mod event_loop;
pub mod feed;
pub mod metrics;
pub mod node;
pub(crate) mod process;
pub mod repl;
pub mod runtime;
pub mod script;
pub(crate) mod supervisor;
#[doc(hidden)]
pub mod top;

pub use config::{ClusterEndpoint, ClusterRole, NodeConfig, NodeStatus, Status};
pub use runtime::{Error, Runtime, Settings};
pub use script::Role;
