//! rhai-supervisor: process supervision policy written in Rhai, with Zeek's Supervisor
//! API (`Supervisor::create`, `destroy`, `restart`, `status`, ...).
//!
//! # Theory of operation
//!
//! Data flows one way, **script → supervisor → process backend**, and everything that
//! happens comes back as an event on one loop.
//!
//! Threads:
//! - the **loop thread** (the main thread) owns all state: the Rhai engine and the
//!   loaded program (`script::Host`), the node table (`supervisor::Supervisor`), the
//!   timers. It spawns every node (the parent-death signal is tied to the thread that
//!   forks, and this one lives as long as the process). It blocks on one channel with
//!   the next deadline as timeout (`event_loop`), so an idle supervisor uses no CPU;
//! - the **I/O thread** (`process::reactor`) waits with epoll on every node's pidfd and
//!   output pipes and on the signal self-pipe, and sends `Event`s to the loop: output
//!   lines, exits (after the exiting node's output), SIGTERM/SIGINT;
//! - the **control thread** (`control::server`, in `run` unless `--no-socket`) serves
//!   every client of the control socket with `poll`: it reads request lines, decodes
//!   them, sends each to the loop as an `Event::Task`, and writes the answer that the
//!   task sends back on its reply channel. The loop never touches a client socket.
//! - in `repl`, the **REPL thread** (`repl`) runs the line editor; each complete input
//!   goes to the loop as an `Event::Task`, is evaluated there, and its rendered value
//!   comes back on a channel. An output thread prints node output, script prints and
//!   logs above the prompt (the `console` sink), so the loop never waits for the
//!   terminal. A keys thread (`repl::keys`) reads the terminal into a queue and feeds
//!   the editor a line at a time, so nothing typed ahead is lost.
//!
//! Processes: besides the nodes, a supervisor that runs script nodes has one helper
//! process, the **stem** (`process::stem`): single-threaded, with Rhai's standard
//! library built, it forks each script node on request so that the node is the
//! supervisor's own child but skips exec and the library's construction.
//!
//! No thread per node or per client; the channel is bounded, so a node that writes faster than the
//! loop handles lines is slowed by its full pipe instead of growing our memory.
//!
//! How an event travels, e.g. a node dies: its pidfd becomes readable → the I/O thread
//! drains the node's pipes (`Event::Output`), then sends `Event::Exited` → the loop
//! hands it to `Supervisor::process_exited`, which reaps the pid and asks the node's
//! state machine (`supervisor::node`) what next → a revival deadline is scheduled →
//! when due, the loop calls `Supervisor::fire_due`, which plans (`process::plan`) and
//! spawns (`process::spawn`) a new process, hands its pidfd and pipes to the I/O thread,
//! and leaves a `Notice` → the loop calls the script's `node_status(node, pid)`.
//!
//! A control request travels the same way: `ctl create` writes a line → the control
//! thread decodes it (`control::decode`) and queues an `Event::Task` → the loop runs it
//! (`control::handle`: `Supervisor::create`, as a script would) and sends the response
//! to the control thread, which writes it to the client → after the task the loop calls
//! `node_status` for the new node, as after any script call.
//!
//! Script-facing pieces live in `script` (engine, limits, hooks, the `Supervisor` and
//! `Cluster` modules, the record types); what a child runs is in `node`; assembling a
//! process of any role is `runtime`.

pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod event_loop;
pub mod node;
pub mod process;
pub mod repl;
pub mod runtime;
pub mod script;
pub mod supervisor;

pub use config::{ClusterEndpoint, ClusterRole, NodeConfig, NodeStatus, Status};
pub use runtime::{Error, Runtime, Settings};
pub use script::Role;
