//! The command line (clap): `run`, `exec`, `repl`, `ctl`, `completions`, `man`, the
//! hidden `__node` a supervisor uses to start a script node, and `ctl __relay`, which
//! `ctl --ssh` runs on the other host. Shell completions and the manual page are
//! generated from these same definitions (`completions`, `man_page`).

use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::{DEFAULT_REMOTE_COMMAND, REMOTE_COMMAND_ENV, SOCKET_ENV, socket_path};

#[derive(Debug, Parser)]
#[command(
    name = "rhai-supervisor",
    version,
    about = "Process supervision policy written in Rhai, with Zeek's Supervisor API",
    propagate_version = true
)]
pub struct Cli {
    /// Log more (-v: debug, -vv: trace).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log less (-q: warnings, -qq: errors, -qqq: nothing).
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
    /// The longest a script call (a file's top level, a hook, a scheduled closure) may
    /// run before it is stopped, in seconds.
    #[arg(long, global = true, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
    pub call_time_limit: std::time::Duration,
    /// How the supervisor's own log lines are written on stderr: as text, or as one JSON
    /// object per line (ts, level, msg, and node where one is concerned).
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start as the supervisor: load the scripts, call zeek_init(), serve until
    /// terminate(), SIGTERM or SIGINT, then stop every node and call zeek_done().
    Run {
        /// Scripts to load, in order, as one program (script nodes load them too).
        #[arg(required = true, value_name = "SCRIPT")]
        scripts: Vec<PathBuf>,
        #[command(flatten)]
        socket: SocketArgs,
        #[command(flatten)]
        host: HostArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Run scripts with no supervisor role; exit when they are done (no timers left).
    Exec {
        #[arg(required = true, value_name = "SCRIPT")]
        scripts: Vec<PathBuf>,
    },
    /// An interactive supervisor: Rhai statements typed at a prompt run in the
    /// supervisor, and the nodes they create are real. Ctrl-D or :quit stops every node,
    /// runs zeek_done() and leaves. When stdin is not a terminal, statements are read
    /// from it line by line, without a prompt, until its end.
    Repl {
        /// Scripts to load first, in order, as `run` does (script nodes load them too).
        #[arg(value_name = "SCRIPT")]
        scripts: Vec<PathBuf>,
        /// Evaluate in a running supervisor over its control socket instead (at PATH, or
        /// where `ctl` would look) rather than start one.
        #[arg(long, value_name = "PATH", num_args = 0..=1, conflicts_with_all = ["scripts", "host"])]
        attach: Option<Option<PathBuf>>,
        /// With --attach: the supervisor runs on this host, reached with ssh; PATH is
        /// its socket there (default: where `ctl` would look on that host).
        #[arg(
            long,
            value_name = "[USER@]HOST[:PORT]",
            requires = "attach",
            allow_hyphen_values = true
        )]
        ssh: Option<String>,
        /// With --ssh: the program to run on the other host (words separated by spaces).
        // No `requires = "ssh"`: clap would count the environment variable as given.
        #[arg(long, value_name = "COMMAND", env = REMOTE_COMMAND_ENV, default_value = DEFAULT_REMOTE_COMMAND)]
        remote_command: String,
        #[command(flatten)]
        socket: SocketArgs,
        #[command(flatten)]
        host: HostArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Control a running supervisor over its Unix socket.
    Ctl(CtlArgs),
    /// A live, full-screen view of a running supervisor's nodes: state, pid, uptime,
    /// restarts, CPU %, memory, health, last exit, and the output of the node followed.
    #[command(
        after_help = "Keys: up/down or j/k select; Enter follows the selected node's output; r restarts it; d destroys it (after y); / filters by name or state (Esc clears); q or Ctrl-C quits."
    )]
    Top(TopArgs),
    /// Print a completion script for SHELL on stdout, e.g.
    /// `rhai-supervisor completions bash > ~/.local/share/bash-completion/completions/rhai-supervisor`.
    Completions {
        /// The shell: bash, zsh, fish (also elvish, powershell).
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, e.g. `rhai-supervisor man | man -l -`.
    Man,
    /// Fork script nodes for a supervisor (started by a supervisor, not by hand).
    #[command(name = "__stem", hide = true)]
    Stem,
    /// Watch nodes for a supervisor whose descriptor table is full (started by a
    /// supervisor, not by hand).
    #[command(name = "__collect", hide = true)]
    Collect,
    /// Run as a supervised script node (started by a supervisor, not by hand).
    #[command(name = "__node", hide = true)]
    Node {
        /// The node's name (for `ps`; the configuration comes from the environment).
        name: String,
    },
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `[INFO] message`, for a person.
    #[default]
    Text,
    /// `{"ts": ..., "level": ..., "msg": ..., "node": ...}`, one object per line.
    Json,
}

/// Where a supervisor listens for control clients (`run`, `repl`).
#[derive(Clone, Debug, Args)]
pub struct SocketArgs {
    /// Listen for control clients (`ctl`) on this Unix socket
    /// [default: rhai-supervisor.sock in the current directory]
    #[arg(long, value_name = "PATH", env = SOCKET_ENV)]
    pub socket: Option<PathBuf>,
    /// Do not listen on a control socket.
    #[arg(long)]
    pub no_socket: bool,
}

/// Where a supervisor serves its metrics (`run`, `repl`).
#[derive(Clone, Debug, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any free port, said
    /// in the log).
    #[arg(long = "metrics", id = "metrics", value_name = "HOST:PORT", value_parser = parse_address)]
    pub address: Option<String>,
}

/// Which nodes of a layout are this host's (`run`, `repl`).
#[derive(Clone, Debug, Args)]
pub struct HostArgs {
    /// This host's name (or address) in the layout: a node whose own cluster endpoint
    /// names another host is not started here. Repeat it for a host known by several
    /// names. [default: the host name, localhost, loopback and the interfaces'
    /// addresses]
    #[arg(long = "host", id = "host", value_name = "NAME")]
    pub names: Vec<String>,
}

impl SocketArgs {
    /// The socket to listen on; `None` with `--no-socket`.
    pub fn path(&self) -> Option<PathBuf> {
        if self.no_socket {
            return None;
        }
        Some(socket_path(self.socket.as_deref()))
    }
}

/// `rhai-supervisor top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The supervisor's control socket (with --ssh: on that host) [default:
    /// $RHAI_SUPERVISOR_SOCKET, else rhai-supervisor.sock in the current directory]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The supervisor runs on this host, reached with ssh (as `ctl --ssh`).
    #[arg(long, value_name = "[USER@]HOST[:PORT]", allow_hyphen_values = true)]
    pub ssh: Option<String>,
    /// With --ssh: the program to run on the other host (words separated by spaces).
    #[arg(long, value_name = "COMMAND", env = REMOTE_COMMAND_ENV, default_value = DEFAULT_REMOTE_COMMAND)]
    pub remote_command: String,
}

/// `rhai-supervisor ctl`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 done; 1 the supervisor refused (unknown node, \
    a create it refused, a script error in eval or reload); 2 usage (including create JSON that is \
    not a NodeConfig); 3 no supervisor answered. With --ssh, the worst of the hosts'."
)]
pub struct CtlArgs {
    /// The supervisor's control socket (with --ssh: on the other hosts)
    /// [default: $RHAI_SUPERVISOR_SOCKET, else rhai-supervisor.sock in the current
    /// directory]
    // Not clap's `env`: under --ssh, a socket given here is passed to the other hosts,
    // and this host's environment is not theirs.
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the supervisor's answer as JSON (one line; with --ssh one line per host,
    /// with "host"), for programs.
    #[arg(long, global = true)]
    pub json: bool,
    /// Run the command on the supervisor of this host instead, through ssh; repeat it
    /// for several hosts, which are asked in parallel.
    // Values that look like options are taken, so that the check of the host string
    // (not clap's "unexpected argument") says why `-oProxyCommand=...` is refused.
    #[arg(
        long = "ssh",
        value_name = "[USER@]HOST[:PORT]",
        global = true,
        allow_hyphen_values = true
    )]
    pub ssh: Vec<String>,
    /// How long to wait for an answer (for each host, at once) [default: 10 with
    /// --ssh, else 30]
    #[arg(long, value_name = "SECONDS", global = true, value_parser = parse_seconds)]
    pub timeout: Option<std::time::Duration>,
    /// With --ssh: the program to run on the other hosts (words separated by spaces).
    #[arg(long, value_name = "COMMAND", env = REMOTE_COMMAND_ENV, default_value = DEFAULT_REMOTE_COMMAND, global = true)]
    pub remote_command: String,
    #[command(subcommand)]
    pub command: CtlCommand,
}

impl CtlArgs {
    pub fn socket_path(&self) -> PathBuf {
        socket_path(self.socket.as_deref())
    }
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Show every node, or one: state, pid, restarts, uptime, CPU %, memory, last exit.
    Status {
        /// Only this node.
        name: Option<String>,
        /// With --json, every node's cpu and memory too (the table always has them; one
        /// node's status always has them).
        #[arg(long)]
        usage: bool,
    },
    /// Create a node from a NodeConfig in JSON (the fields of the script API).
    #[command(
        after_help = "Example: ctl create '{\"name\": \"w1\", \"command\": [\"sleep\", \"60\"]}'"
    )]
    Create {
        /// The configuration as JSON, or @FILE to read it from a file (@- for stdin).
        #[arg(value_name = "JSON|@FILE")]
        config: String,
    },
    /// Stop a node (or every node) and forget it.
    Destroy {
        /// The node.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Every node.
        #[arg(long)]
        all: bool,
    },
    /// Stop a node (or every node) and start it again.
    Restart {
        /// The node.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Every node.
        #[arg(long)]
        all: bool,
    },
    /// Send a signal to a node's main process (or every node's), e.g. HUP to make it
    /// re-read its configuration.
    #[command(after_help = "Examples: ctl signal web HUP; ctl signal --all USR1")]
    Signal {
        /// The node and the signal (a name such as HUP or SIGHUP, or a number); with
        /// --all, the signal only.
        #[arg(value_name = "NAME SIGNAL", num_args = 1..=2, required = true)]
        args: Vec<String>,
        /// Every node.
        #[arg(long)]
        all: bool,
    },
    /// Stop the supervisor: every node is stopped, then it runs zeek_done() and exits.
    Stop,
    /// Print the last lines a node wrote (stdout lines to stdout, stderr lines to stderr);
    /// with -f, then every new line as it comes.
    Tail {
        /// The node.
        name: String,
        /// At most this many lines (of those kept).
        #[arg(short = 'n', long, value_name = "N")]
        lines: Option<usize>,
        /// Follow: go on printing new lines until interrupted, or until the node is
        /// destroyed or the supervisor stops.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Follow the supervisor's events: one line per change of a node (created, started,
    /// ready, health, stopping, exited, reviving, failed, destroyed) and per applied
    /// reload, as they happen, until interrupted or the supervisor stops. With --json,
    /// one JSON object per event.
    #[command(
        after_help = "Example line: 03:12:01 web started (pid 4242). JSON fields: ts, node, event, state, pid, code, signal, uptime, delay, restarts, health, failures, limit, reason, waiting_for, summary."
    )]
    Events,
    /// Run Rhai code in the supervisor (like a REPL line); print its output and value.
    Eval {
        /// The code, or - to read it from stdin.
        code: String,
    },
    /// Read the supervisor's scripts again and apply the difference: create the nodes
    /// they add, destroy those they drop, restart those whose configuration changed,
    /// leave the rest running; print the plan, one node a line (+ - ~ =), once it is
    /// applied. The same as SIGHUP to the supervisor.
    #[command(
        after_help = "Exit status: 0 applied; 1 the new scripts failed (nothing changed), or a node could not be created."
    )]
    Reload {
        /// Only print the plan: change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Relay the control socket over stdin and stdout (what `--ssh` runs on the other
    /// host).
    #[command(name = "__relay", hide = true)]
    Relay,
}

impl Cli {
    pub fn log_level(&self) -> log::LevelFilter {
        use log::LevelFilter::*;
        match (self.verbose, self.quiet) {
            (0, 0) => Info,
            (1, _) => Debug,
            (v, _) if v >= 2 => Trace,
            (_, 1) => Warn,
            (_, 2) => Error,
            _ => Off,
        }
    }
}

/// The completion script for `shell`. (Made in memory: the generator panics when its
/// writer fails, say on a closed pipe.)
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    // The generators offer hidden subcommands too: leave out `__node` and `__stem`.
    let full = Cli::command();
    let mut command = clap::Command::new("rhai-supervisor")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "rhai-supervisor", &mut script);
    script
}

/// Writes the manual page, in roff, to `out`.
pub fn man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// `HOST:PORT`, `[::1]:PORT`: an address to listen on (the host is looked up when
/// listening).
fn parse_address(text: &str) -> Result<String, String> {
    let port = text
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok());
    match port {
        Some(_) => Ok(text.to_string()),
        None => Err(format!(
            "'{text}' is not HOST:PORT (such as 127.0.0.1:9100 or localhost:0)"
        )),
    }
}

fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if value <= 0.0 {
        return Err(format!("must be more than 0 seconds, not {text}"));
    }
    crate::config::seconds(value)
}
