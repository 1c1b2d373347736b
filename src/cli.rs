//! The command line (clap): `run`, `exec`, `repl`, and the hidden `__node` a supervisor
//! uses to start a script node.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

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
    },
    /// Run as a supervised script node (started by a supervisor, not by hand).
    #[command(name = "__node", hide = true)]
    Node {
        /// The node's name (for `ps`; the configuration comes from the environment).
        name: String,
    },
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
