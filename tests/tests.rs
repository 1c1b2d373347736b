//! Integration tests: the real binary, real processes, real signals and files.
//!
//! Modules:
//! - `cli`: command line, exit codes, error messages with positions, `exec`
//! - `api`: the `Supervisor` module, record types, Zeek's answers to bad requests
//! - `supervision`: revival, destroy, restart, shutdown, the supervisor's death
//! - `nodes`: what a supervised node sees (scripts, cluster, env, directory, files,
//!   affinity) and its output
//! - `output`: node output under load: order, completeness, bounds, rotation
//! - `reliability`: faults in scripts, nodes and the OS; crash loops; leaks
//! - `control`: the control socket and `ctl`: every command, the socket file (mode,
//!   stale, taken, removed), bad and hostile clients, many clients, exit statuses
//! - `repl`: the interactive REPL through a pseudo-terminal (prompt, multi-line input,
//!   errors, Ctrl-C, completion, history, nodes, output above the prompt), and the
//!   same REPL reading a pipe
//! - `watch`: watching a supervisor: JSON log lines, `ctl tail -f` (several followers,
//!   a follower that never reads), shell completions, the manual page
//!
//! `util` holds the helpers: a sandbox directory per test, the binary started in it,
//! and waiting on conditions with deadlines.

mod util;

mod api;
mod cli;
mod control;
mod layers;
mod nodes;
mod output;
mod reliability;
mod repl;
mod supervision;
mod watch;
