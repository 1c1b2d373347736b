//! Integration tests: the real binary, real processes, real signals and files.
//!
//! Modules:
//! - `cli`: command line, exit codes, error messages with positions, `exec`
//! - `api`: the `Supervisor` module, record types, Zeek's answers to bad requests
//! - `supervision`: revival, destroy, restart, shutdown, the supervisor's death
//! - `nodes`: what a supervised node sees (scripts, cluster, env, directory, files,
//!   affinity) and its output
//! - `repl`: the interactive REPL through a pseudo-terminal (prompt, multi-line input,
//!   errors, Ctrl-C, completion, history, nodes, output above the prompt), and the
//!   same REPL reading a pipe
//!
//! `util` holds the helpers: a sandbox directory per test, the binary started in it,
//! and waiting on conditions with deadlines.

mod util;

mod api;
mod cli;
mod nodes;
mod repl;
mod supervision;
