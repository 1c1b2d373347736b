//! Integration tests: the real binary, real processes, real signals and files.
//!
//! Modules:
//! - `layers`: the shape of the source: layers point one way, every unsafe block says why
//! - `cli`: command line, exit codes, error messages with positions, `exec`
//! - `api`: the `Supervisor` module, record types, Zeek's answers to bad requests
//! - `supervision`: revival, destroy, restart, shutdown, the supervisor's death
//! - `nodes`: what a supervised node sees (scripts, cluster, env, directory, files,
//!   affinity) and its output
//! - `output`: node output under load: order, completeness, bounds, rotation
//! - `readiness`: readiness of every kind, dependencies and their conditions, restart
//!   policies, stop order, `node_ready`/`node_exit`, health checks and watchdogs
//! - `signals`: stop signals, kill modes and `ctl signal`, with a real nginx
//! - `services`: real services: nodes as another user (groups, home, umask), env
//!   files, resource limits, a cgroup per node (OOM kills and their reason, pids, an
//!   escaped descendant stopped, nothing left behind), usage in status, the
//!   supervisor's own systemd notifications, PostgreSQL as user postgres
//! - `reliability`: faults in scripts, nodes and the OS; crash loops; leaks
//! - `control`: the control socket and `ctl`: every command, the socket file (mode,
//!   stale, taken, removed), bad and hostile clients, many clients, exit statuses
//! - `docs`: the documentation against the program: every Rhai block compiles, the
//!   README's and the guide's scripts run with the output they show, every record
//!   field, command and option is in the reference, every link leads somewhere
//! - `hosts`: several hosts: one layout under two supervisors with `--host`, `ctl --ssh`
//!   and `repl --attach --ssh` through a real OpenSSH server on loopback addresses
//!   (merged status and JSON, a remote restart, unreachable and hung hosts, refused
//!   host strings, output that is not an answer)
//! - `reload`: the scripts edited and read again (`ctl reload`, SIGHUP, `:reload`):
//!   untouched nodes keep their processes, changed ones get their new configuration,
//!   removed ones are gone, run-time nodes are left alone, failures change nothing,
//!   dry runs, and reloads at awkward moments
//! - `repl`: the interactive REPL through a pseudo-terminal (prompt, multi-line input,
//!   errors, Ctrl-C, completion, history, nodes, output above the prompt), and the
//!   same REPL reading a pipe
//! - `scale`: many nodes: collectors keep every promise of capture (streams apart, in
//!   order, before the exit), hold the descriptors the supervisor has no room for, and
//!   a collector's death costs its nodes a revival
//! - `watch`: watching a supervisor: JSON log lines, `ctl tail -f` (several followers,
//!   a follower that never reads), shell completions, the manual page
//! - `events`: `ctl events` for people and programs, several followers, a follower that
//!   falls behind (missed counts) and one that never reads (dropped, memory bounded)
//! - `metrics`: `--metrics`: the exposition through `promtool` and the Python client's
//!   parser, its figures following the nodes, clients that send nothing, garbage, huge
//!   requests or a thousand connections
//! - `top`: the live view in a real terminal (tmux): the table, following a node's
//!   output, restart, destroy after a confirmation, filter, a terminal too small and a
//!   resize, and leaving cleanly on q, Ctrl-C, SIGTERM and when the supervisor goes
//!
//! `util` holds the helpers: a sandbox directory per test, the binary started in it,
//! and waiting on conditions with deadlines.

mod util;

mod api;
mod cli;
mod control;
mod docs;
mod events;
mod hosts;
mod layers;
mod metrics;
mod nodes;
mod output;
mod readiness;
mod reliability;
mod reload;
mod repl;
mod scale;
mod services;
mod signals;
mod supervision;
mod top;
mod watch;
