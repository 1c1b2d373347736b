//! What a script or a control client asks for, and what the supervisor reports back:
//! `NodeConfig`, `ClusterEndpoint`, `ClusterRole`, `NodeStatus`, `Status`.
//!
//! These are plain data. Each record lists its fields once, in a `record!` table (see
//! `record`), from which come its JSON form (serde: how a node receives its
//! configuration and how `ctl` speaks) and its form in scripts (getters, setters,
//! construction from a map, printing). Registering them with an engine lives in
//! `script::records`; turning a config into something that can be spawned lives in
//! `process::plan`.
//!
//! `reload` holds what a reload reports (its plan, and the field-by-field difference
//! of two configurations).
//!
//! Also here: what every layer shares — the output `Stream`s, how a process ended
//! (`ExitInfo`), and the constants more than one layer needs.

pub mod event;
pub mod record;
pub mod reload;
pub mod services;
pub mod shapes;
pub mod time;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rhai::{Dynamic, INT, Map};

pub use event::{Event, EventKind};
pub use record::Fields;
use record::{
    Codec, Json, Omit, Seconds, SetError, kind, read_record_map, record, record_map, wrong,
};
pub use services::{Account, Amount, Limits, human_bytes};
pub use shapes::{
    Check, Condition, Dependencies, Dependency, Health, KillMode, Ready, RestartPolicy, SignalName,
};
pub use time::rfc3339;

/// The socket a supervisor listens on, and `ctl` talks to, when none is given: in the
/// current directory.
pub const DEFAULT_SOCKET: &str = "rhai-supervisor.sock";
/// The environment variable that chooses the socket for `run`, `repl` and `ctl`.
pub const SOCKET_ENV: &str = "RHAI_SUPERVISOR_SOCKET";
/// The program `ctl --ssh` and `repl --attach --ssh` run on the other host, unless
/// `--remote-command` or `RHAI_SUPERVISOR_REMOTE_COMMAND` say otherwise.
pub const DEFAULT_REMOTE_COMMAND: &str = "rhai-supervisor";
/// The environment variable that chooses the program run on the other host.
pub const REMOTE_COMMAND_ENV: &str = "RHAI_SUPERVISOR_REMOTE_COMMAND";
/// The most rotated output files a node may keep.
pub const MAX_BACKUPS: i64 = 1000;
/// The default time between the stop signal and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time one script call may run.
pub const DEFAULT_CALL_TIME: Duration = Duration::from_secs(1);

/// The socket to use: `given` if there is one, else `$RHAI_SUPERVISOR_SOCKET`, else
/// `rhai-supervisor.sock` in the current directory. An empty path counts as none.
pub fn socket_path(given: Option<&std::path::Path>) -> std::path::PathBuf {
    let given = given.filter(|p| !p.as_os_str().is_empty());
    let from_env = || std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty());
    match (given, from_env()) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(path)) => std::path::PathBuf::from(path),
        (None, None) => std::path::PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Which output stream of a node a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The node's standard output.
    Stdout,
    /// The node's standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Zeek's `Supervisor::ClusterRole`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClusterRole {
    #[default]
    #[serde(rename = "NONE", alias = "Supervisor::NONE")]
    /// `Supervisor::NONE`
    None,
    #[serde(rename = "LOGGER", alias = "Supervisor::LOGGER")]
    /// `Supervisor::LOGGER`
    Logger,
    #[serde(rename = "MANAGER", alias = "Supervisor::MANAGER")]
    /// `Supervisor::MANAGER`
    Manager,
    #[serde(rename = "PROXY", alias = "Supervisor::PROXY")]
    /// `Supervisor::PROXY`
    Proxy,
    #[serde(rename = "WORKER", alias = "Supervisor::WORKER")]
    /// `Supervisor::WORKER`
    Worker,
}

impl ClusterRole {
    /// Every role, in the order Zeek lists them.
    pub const ALL: [ClusterRole; 5] = [
        ClusterRole::None,
        ClusterRole::Logger,
        ClusterRole::Manager,
        ClusterRole::Proxy,
        ClusterRole::Worker,
    ];

    /// The bare constant name: `WORKER`.
    pub fn name(self) -> &'static str {
        match self {
            ClusterRole::None => "NONE",
            ClusterRole::Logger => "LOGGER",
            ClusterRole::Manager => "MANAGER",
            ClusterRole::Proxy => "PROXY",
            ClusterRole::Worker => "WORKER",
        }
    }

    /// Accepts `WORKER`, `worker` and `Supervisor::WORKER`.
    pub fn parse(text: &str) -> Option<ClusterRole> {
        let bare = text.strip_prefix("Supervisor::").unwrap_or(text);
        ClusterRole::ALL
            .into_iter()
            .find(|role| role.name().eq_ignore_ascii_case(bare))
    }
}

impl fmt::Display for ClusterRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Supervisor::{}", self.name())
    }
}

/// A Zeek `port`: a number and a transport protocol, written `10000/tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "PortRepr", into = "String")]
pub struct Port {
    /// The port number.
    pub number: u16,
    /// Its transport protocol.
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
/// The transport protocol of a `Port`.
pub enum Protocol {
    /// `tcp`
    Tcp,
    /// `udp`
    Udp,
    /// `icmp`
    Icmp,
    /// `unknown`
    Unknown,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Unknown => "unknown",
        }
    }
}

impl Port {
    /// A bare number means TCP, as in Zeek's cluster layouts.
    pub fn tcp(number: u16) -> Port {
        Port {
            number,
            protocol: Protocol::Tcp,
        }
    }

    /// A port from an integer (TCP), refusing what is out of range.
    pub fn from_int(number: i64) -> Result<Port, String> {
        u16::try_from(number)
            .map(Port::tcp)
            .map_err(|_| format!("port {number} is out of range (0-65535)"))
    }

    /// A port from `"10000/tcp"` or `"10000"`.
    pub fn parse(text: &str) -> Result<Port, String> {
        let bad = || format!("'{text}' is not a port (expected e.g. \"10000/tcp\" or 10000)");
        let (number, protocol) = match text.split_once('/') {
            Some((n, p)) => (n, p),
            None => (text, "tcp"),
        };
        let number: u16 = number.trim().parse().map_err(|_| bad())?;
        let protocol = match protocol.trim().to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            "unknown" => Protocol::Unknown,
            _ => return Err(bad()),
        };
        Ok(Port { number, protocol })
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.number, self.protocol.name())
    }
}

impl From<Port> for String {
    fn from(port: Port) -> String {
        port.to_string()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortRepr {
    Number(i64),
    Text(String),
}

impl TryFrom<PortRepr> for Port {
    type Error = String;
    fn try_from(repr: PortRepr) -> Result<Port, String> {
        match repr {
            PortRepr::Number(n) => Port::from_int(n),
            PortRepr::Text(t) => Port::parse(&t),
        }
    }
}

record! {
    /// Zeek's `Supervisor::ClusterEndpoint`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    #[serde(deny_unknown_fields)]
    pub struct ClusterEndpoint {
        /// The node's role in the cluster.
        role: ClusterRole,
        /// The host it runs on.
        host: String,
        /// Its port: `"10000/tcp"`, or an integer meaning TCP.
        p: Port,
        /// The network interface it reads, for a worker.
        interface: Option<String>,
    }
}

impl Default for ClusterEndpoint {
    fn default() -> Self {
        ClusterEndpoint {
            role: ClusterRole::None,
            host: String::new(),
            p: Port::tcp(0),
            interface: None,
        }
    }
}

record! {
    /// Zeek's `Supervisor::NodeConfig`, plus the extensions marked below.
    ///
    /// Durations are in seconds (an integer or a float), as a script writes them.
    #[derive(Clone, Debug, Default, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    pub struct NodeConfig {
        /// The node's unique name.
        name: String,
        /// The interface the node reads (passed to the node).
        interface: Option<String>,
        /// A capture file the node reads (passed to the node); not with `interface`.
        pcap_file: Option<String>,
        /// Its working directory, created if missing, relative to the supervisor's.
        directory: Option<String>,
        /// A file (relative to `directory`) for its stdout.
        stdout_file: Option<String>,
        /// A file (relative to `directory`) for its stderr.
        stderr_file: Option<String>,
        /// Accepted and passed on.
        bare_mode: Option<bool>,
        /// Scripts a script node loads before the supervisor's.
        addl_base_scripts: Vec<String>,
        /// Scripts a script node loads after the supervisor's.
        addl_user_scripts: Vec<String>,
        /// Scripts a script node loads last.
        scripts: Vec<String>,
        /// Environment variables set in the node.
        env: BTreeMap<String, String>,
        /// The core the node is pinned to.
        cpu_affinity: Option<i64>,
        /// The cluster layout: name → endpoint.
        cluster: BTreeMap<String, ClusterEndpoint>,
        /// Extension: run this program (argv) as the node instead of a script node.
        command: Option<Vec<String>>,
        /// Extension: the first revival delay in seconds (default 1).
        revival_delay: Option<f64> => Seconds,
        /// Extension: the longest revival delay in seconds (default 60).
        revival_max_delay: Option<f64> => Seconds,
        /// Extension: seconds between SIGTERM and SIGKILL when the node is stopped (default 10).
        stop_timeout: Option<f64> => Seconds,
        /// Extension: rotate `stdout_file`/`stderr_file` when they would grow past this
        /// size; the supervisor then writes them.
        output_max_bytes: Option<i64>,
        /// Extension: rotated files kept (`FILE.1` … `FILE.n`; default 5).
        output_backups: Option<i64>,
        /// Extension: also rotate `stdout_file`/`stderr_file` when an hour or a day (UTC)
        /// is over: `"hourly"` or `"daily"`; the supervisor then writes them.
        output_rotate_every: Option<String>,
        /// Extension: gzip rotated files (`FILE.1.gz` …), off the loop thread.
        output_compress: Option<bool>,
        /// Extension: revivals allowed within `restart_window` before the node is marked
        /// failed (default: no limit).
        max_restarts: Option<i64>,
        /// Extension: the window for `max_restarts`, in seconds (default 60).
        restart_window: Option<f64> => Seconds,
        /// Extension: how readiness is told: `"notify"`, `#{fd: N}`, `#{log: REGEX}`,
        /// `#{tcp: PORT}`, `#{exec: [...]}`, `#{http: URL}` (default: a command node is
        /// ready once exec'd, a script node once `zeek_init()` returned).
        ready: Option<Ready> => Json,
        /// Extension: seconds between two tries of a polled readiness check (default 0.1).
        ready_interval: Option<f64> => Seconds,
        /// Extension: seconds a started node may take to become ready (default 90).
        ready_timeout: Option<f64> => Seconds,
        /// Extension: nodes that must meet a condition before this one starts: names
        /// (ready), or a map name → condition or `#{condition, restart: true}`.
        depends_on: Option<Dependencies> => Json,
        /// Extension: `"always"` (default), `"on-failure"` or `"never"`.
        restart: Option<RestartPolicy> => Json,
        /// Extension: a liveness check once ready: `#{exec|tcp|http: ..., interval,
        /// timeout, failures}`.
        health: Option<Box<Health>> => Json,
        /// Extension: seconds within which a `ready: "notify"` node must send
        /// `WATCHDOG=1`.
        watchdog: Option<f64> => Seconds,
        /// Extension: the signal `destroy`, `restart` and shutdown send first (default TERM).
        stop_signal: Option<SignalName> => Json,
        /// Extension: whom the stop signal reaches: `"group"` (default), `"mixed"`,
        /// `"process"`.
        kill_mode: Option<KillMode> => Json,
        /// Extension: the user the node runs as, a name or a uid (needs a root
        /// supervisor); `HOME`, `USER` and `LOGNAME` come from its entry.
        user: Option<Account> => Json,
        /// Extension: the group the node runs as, a name or a gid (default: the user's).
        group: Option<Account> => Json,
        /// Extension: the node's file mode creation mask, e.g. `0o027`.
        umask: Option<i64>,
        /// Extension: a file of `KEY=VALUE` lines (relative to the supervisor's
        /// directory), read at every start; `env` wins over it.
        env_file: Option<String>,
        /// Extension: resource limits: `nofile`, `core`, `nproc`, `stack`, `memlock` of
        /// the process; `memory`, `pids`, `cpu` of the whole node (a cgroup of its own).
        limits: Option<Box<Limits>> => Json,
    }
}

/// Rotated files kept when `output_backups` is not set.
pub const DEFAULT_OUTPUT_BACKUPS: u32 = 5;

/// The period of `output_rotate_every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// At the start of every hour (UTC).
    Hourly,
    /// At the start of every day (midnight UTC).
    Daily,
}

impl Period {
    /// `hourly` or `daily`.
    pub fn parse(text: &str) -> Option<Period> {
        match text {
            "hourly" => Some(Period::Hourly),
            "daily" => Some(Period::Daily),
            _ => None,
        }
    }

    /// Its length.
    pub fn length(self) -> Duration {
        match self {
            Period::Hourly => Duration::from_secs(3600),
            Period::Daily => Duration::from_secs(86_400),
        }
    }
}

/// How the supervisor rotates a node's output files (`output_*` fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a line would take a file past this size.
    pub max_bytes: Option<u64>,
    /// Rotate when this period is over.
    pub every: Option<Period>,
    /// Rotated files kept.
    pub backups: u32,
    /// Gzip rotated files.
    pub compress: bool,
}

impl NodeConfig {
    /// The rotation of this node's output files, if asked for (by size or by time).
    pub fn rotation(&self) -> Option<Rotation> {
        let max_bytes = self.output_max_bytes.and_then(|n| u64::try_from(n).ok());
        let every = self.output_rotate_every.as_deref().and_then(Period::parse);
        if max_bytes.is_none() && every.is_none() {
            return None;
        }
        let backups = self
            .output_backups
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(DEFAULT_OUTPUT_BACKUPS);
        Some(Rotation {
            max_bytes,
            every,
            backups,
            compress: self.output_compress.unwrap_or(false),
        })
    }

    /// A configuration with only a name: a script node with every default.
    pub fn named(name: impl Into<String>) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            ..NodeConfig::default()
        }
    }

    /// The checks Zeek makes in `Supervisor::Create`, with Zeek's wording, plus the
    /// checks of the extension fields. Paths, cores and programs are checked when
    /// the node is planned (`process::plan`), since they depend on the machine.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("node names must not be an empty string".into());
        }
        if self.name.contains(' ') {
            return Err(format!(
                "node names must not contain spaces: '{}'",
                self.name
            ));
        }
        if let Some(c) = self.name.chars().find(|c| c.is_control() || *c == '/') {
            return Err(format!(
                "node names must not contain control characters or '/': {:?} has {c:?}",
                self.name
            ));
        }
        if self.interface.is_some() && self.pcap_file.is_some() {
            return Err(format!(
                "node with name '{}' has interface and pcap_file set",
                self.name
            ));
        }
        if let Some(command) = &self.command {
            if command.is_empty() || command[0].is_empty() {
                return Err(format!(
                    "node '{}': command must name a program to run",
                    self.name
                ));
            }
        }
        if let Some(max) = self.output_max_bytes {
            if max < 1 {
                return Err(format!(
                    "node '{}': output_max_bytes must be at least 1, not {max}",
                    self.name
                ));
            }
            if self.stdout_file.is_none() && self.stderr_file.is_none() {
                return Err(format!(
                    "node '{}': output_max_bytes needs stdout_file or stderr_file to rotate",
                    self.name
                ));
            }
        }
        if let Some(every) = &self.output_rotate_every {
            if Period::parse(every).is_none() {
                return Err(format!(
                    "node '{}': output_rotate_every must be \"hourly\" or \"daily\", not {every:?}",
                    self.name
                ));
            }
            if self.stdout_file.is_none() && self.stderr_file.is_none() {
                return Err(format!(
                    "node '{}': output_rotate_every needs stdout_file or stderr_file to rotate",
                    self.name
                ));
            }
        }
        if self.output_compress == Some(true)
            && self.output_max_bytes.is_none()
            && self.output_rotate_every.is_none()
        {
            return Err(format!(
                "node '{}': output_compress needs output_max_bytes or output_rotate_every (it compresses rotated files)",
                self.name
            ));
        }
        if let Some(n) = self.output_backups {
            if !(0..=MAX_BACKUPS).contains(&n) {
                return Err(format!(
                    "node '{}': output_backups must be between 0 and {}, not {n}",
                    self.name, MAX_BACKUPS
                ));
            }
        }
        if let Some(n) = self.max_restarts {
            if !(0..=i64::from(u32::MAX)).contains(&n) {
                return Err(format!(
                    "node '{}': max_restarts must be 0 or more, not {n}",
                    self.name
                ));
            }
        }
        if let Some(mask) = self.umask {
            if !(0..=0o777).contains(&mask) {
                return Err(format!(
                    "node '{}': umask must be from 0 to 0o777, not {mask:#o}",
                    self.name
                ));
            }
        }
        if let Some(file) = &self.env_file {
            if file.is_empty() || file.contains('\0') {
                return Err(format!("node '{}': env_file must name a file", self.name));
            }
        }
        if let Some(deps) = &self.depends_on {
            if deps.0.contains_key(&self.name) {
                return Err(format!(
                    "node '{}': depends_on names the node itself",
                    self.name
                ));
            }
        }
        let speaks_notify = match &self.ready {
            Some(Ready::Notify) => true,
            None => self.command.is_none(),
            Some(_) => false,
        };
        if self.watchdog.is_some() && !speaks_notify {
            return Err(format!(
                "node '{}': watchdog needs ready: \"notify\" (the node sends WATCHDOG=1 on the notification socket)",
                self.name
            ));
        }
        match &self.ready {
            Some(Ready::Fd(_)) if self.command.is_none() => {
                return Err(format!(
                    "node '{}': ready: #{{fd: N}} is for command nodes; a script node says it is ready with sd_notify(\"READY=1\") under ready: \"notify\"",
                    self.name
                ));
            }
            Some(Ready::Log(_))
                if self.stdout_file.is_some()
                    && self.stderr_file.is_some()
                    && self.output_max_bytes.is_none() =>
            {
                return Err(format!(
                    "node '{}': ready: #{{log: ...}} needs output that passes through the supervisor (stdout_file and stderr_file both go straight to files)",
                    self.name
                ));
            }
            _ => {}
        }
        if self.ready_interval == Some(0.0) {
            return Err(format!(
                "node '{}': ready_interval must be more than 0 seconds",
                self.name
            ));
        }
        for (field, value) in [
            ("ready_interval", self.ready_interval),
            ("ready_timeout", self.ready_timeout),
            ("watchdog", self.watchdog),
            ("revival_delay", self.revival_delay),
            ("revival_max_delay", self.revival_max_delay),
            ("stop_timeout", self.stop_timeout),
            ("restart_window", self.restart_window),
        ] {
            if let Some(v) = value {
                seconds(v).map_err(|e| format!("node '{}': {field} {e}", self.name))?;
            }
        }
        Ok(())
    }
}

/// The longest duration any setting accepts: a year.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Converts a setting in seconds into a `Duration`, refusing what makes no sense.
pub fn seconds(value: f64) -> Result<Duration, String> {
    if !value.is_finite() || value < 0.0 {
        return Err(format!("must be a number of seconds >= 0, not {value}"));
    }
    if value > MAX_SECONDS {
        return Err(format!(
            "must be at most a year ({MAX_SECONDS} s), not {value}"
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

/// How a node process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitInfo {
    /// It called exit with this code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
}

impl ExitInfo {
    /// `SIGKILL` for 9; `signal N` for a number with no name.
    pub fn signal_name(signal: i32) -> String {
        nix::sys::signal::Signal::try_from(signal)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {signal}"))
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitInfo::Code(code) => write!(f, "exited with code {code}"),
            ExitInfo::Signal(sig) => write!(f, "killed by {}", ExitInfo::signal_name(*sig)),
        }
    }
}

/// One line of a node's output, as kept for inspection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line, without its newline.
    pub line: String,
}

record! {
    /// Zeek's `Supervisor::NodeStatus`, plus `state`, `restarts`, `exit`, `uptime` and
    /// `output`.
    #[derive(Clone, Debug, PartialEq)]
    pub struct NodeStatus {
        /// The node's configuration.
        node: NodeConfig,
        /// The live process; absent while the node waits to be revived.
        pid: Option<i64>,
        /// `waiting`, `starting`, `running`, `reviving`, `restarting`, `stopping`,
        /// `exited` or `failed`.
        state: String,
        /// How many times the process was started again after the first start.
        restarts: i64,
        /// How the last process of this node ended.
        exit: Option<ExitInfo>,
        /// Seconds since the live process started.
        uptime: Option<f64>,
        /// While `waiting`: the dependencies not met yet.
        waiting_for: Option<Vec<String>>,
        /// What the node last said with `STATUS=` (the notify protocol).
        status_text: Option<String>,
        /// `"ok"` or `"failing (2/3): why"`, for a node with a health check.
        health: Option<String>,
        /// While `stopping` or `restarting`: seconds since it was asked to stop.
        stopping_for: Option<f64>,
        /// Why the last process ended, when the supervisor knows more than its exit
        /// status: `out of memory (limit 64 MiB)`.
        exit_reason: Option<String>,
        /// Seconds of CPU its live processes have used (filled in by `status(name)`).
        cpu: Option<f64>,
        /// Bytes of memory its live processes use (filled in by `status(name)`).
        memory: Option<i64>,
    }
    json_only {
        /// The last lines of its captured output (filled in by `status(name)` for one node).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        output: Vec<OutputLine>,
    }
}

impl NodeStatus {
    /// The status of `node`, with nothing known yet.
    pub fn new(node: NodeConfig) -> NodeStatus {
        NodeStatus {
            node,
            pid: None,
            state: String::new(),
            restarts: 0,
            exit: None,
            uptime: None,
            waiting_for: None,
            status_text: None,
            health: None,
            stopping_for: None,
            exit_reason: None,
            cpu: None,
            memory: None,
            output: Vec::new(),
        }
    }
}

record! {
    /// Zeek's `Supervisor::Status`.
    #[derive(Clone, Debug, Default, PartialEq)]
    pub struct Status {
        /// Every node's status, by name.
        nodes: BTreeMap<String, NodeStatus>,
    }
}

/// A record type seen from a script: its name, the fields a map must give, and the
/// fields computed from others (readable, not writable).
pub trait Record: Fields + Clone + Send + Sync + 'static {
    /// The name scripts see: `Supervisor::NodeConfig`.
    const TYPE_NAME: &'static str;
    /// Fields a map must give when it constructs the record.
    const REQUIRED: &'static [&'static str] = &[];
    /// Fields that can be read but not written.
    const COMPUTED: &'static [&'static str] = &[];

    /// The record with every field at its default (required fields empty).
    fn blank() -> Self;

    /// The value of a field of `COMPUTED`.
    fn computed(&self, _field: &str) -> Dynamic {
        Dynamic::UNIT
    }

    /// The value of a field of `FIELDS` or `COMPUTED` (`()` for another name).
    fn read(&self, field: &str) -> Dynamic {
        self.get(field).unwrap_or_else(|| self.computed(field))
    }

    /// Assigns a field of `FIELDS`, checking the value's type.
    fn write(&mut self, field: &str, value: Dynamic) -> Result<(), String> {
        match self.set(field, value, Self::TYPE_NAME) {
            Ok(()) => Ok(()),
            Err(SetError::Unknown) => Err(unknown_field::<Self>(field)),
            Err(SetError::Invalid(message)) => Err(message),
        }
    }

    /// Builds the record from an object map: unknown keys and wrong types are errors
    /// naming the field.
    fn from_map(map: Map) -> Result<Self, String> {
        for required in Self::REQUIRED {
            if !map.contains_key(*required) {
                return Err(format!("{} needs field '{required}'", Self::TYPE_NAME));
            }
        }
        let mut record = Self::blank();
        for (key, value) in map {
            record.write(&key, value)?;
        }
        Ok(record)
    }
}

fn unknown_field<R: Record>(key: &str) -> String {
    let suggestion = R::FIELDS
        .iter()
        .map(|f| (edit_distance(f, key), f))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, f)| format!("; did you mean '{f}'?"))
        .unwrap_or_default();
    format!(
        "{} has no field '{key}'{suggestion} (fields: {})",
        R::TYPE_NAME,
        R::FIELDS.join(", ")
    )
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

impl Record for NodeConfig {
    const TYPE_NAME: &'static str = "Supervisor::NodeConfig";
    const REQUIRED: &'static [&'static str] = &["name"];
    fn blank() -> Self {
        NodeConfig::default()
    }
}

impl Record for ClusterEndpoint {
    const TYPE_NAME: &'static str = "Supervisor::ClusterEndpoint";
    const REQUIRED: &'static [&'static str] = &["role", "host", "p"];
    fn blank() -> Self {
        ClusterEndpoint::default()
    }
}

impl Record for NodeStatus {
    const TYPE_NAME: &'static str = "Supervisor::NodeStatus";
    const COMPUTED: &'static [&'static str] = &["exit_code", "exit_signal", "output"];
    fn blank() -> Self {
        NodeStatus::new(NodeConfig::default())
    }
    fn computed(&self, field: &str) -> Dynamic {
        match field {
            "exit_code" => match self.exit {
                Some(ExitInfo::Code(c)) => (c as INT).into(),
                _ => Dynamic::UNIT,
            },
            "exit_signal" => match self.exit {
                Some(ExitInfo::Signal(s)) => ExitInfo::signal_name(s).into(),
                _ => Dynamic::UNIT,
            },
            "output" => Dynamic::from_array(
                self.output
                    .iter()
                    .map(|l| {
                        let mut m = Map::new();
                        m.insert("stream".into(), l.stream.clone().into());
                        m.insert("line".into(), l.line.clone().into());
                        Dynamic::from_map(m)
                    })
                    .collect(),
            ),
            _ => Dynamic::UNIT,
        }
    }
}

impl Record for Status {
    const TYPE_NAME: &'static str = "Supervisor::Status";
    fn blank() -> Self {
        Status::default()
    }
}

// How the record-valued and enum-valued fields read and write in scripts.

impl Codec<ClusterRole> for ClusterRole {
    fn read(value: &ClusterRole) -> Dynamic {
        Dynamic::from(*value)
    }
    fn write(v: Dynamic, at: &str) -> Result<ClusterRole, String> {
        if let Some(role) = v.read_lock::<ClusterRole>() {
            return Ok(*role);
        }
        let Ok(text) = v.clone().into_immutable_string() else {
            return Err(wrong(at, "a Supervisor::ClusterRole", &v));
        };
        ClusterRole::parse(&text).ok_or_else(|| {
            format!("{at}: unknown role '{text}' (one of NONE, LOGGER, MANAGER, PROXY, WORKER)")
        })
    }
}
impl Omit for ClusterRole {}

impl Codec<Port> for Port {
    fn read(value: &Port) -> Dynamic {
        value.to_string().into()
    }
    fn write(v: Dynamic, at: &str) -> Result<Port, String> {
        let port = if let Ok(n) = v.as_int() {
            Port::from_int(n)
        } else if let Ok(text) = v.clone().into_immutable_string() {
            Port::parse(&text)
        } else {
            return Err(wrong(at, "a port (\"10000/tcp\" or an integer)", &v));
        };
        port.map_err(|e| format!("{at}: {e}"))
    }
}
impl Omit for Port {}

impl Omit for BTreeMap<String, ClusterEndpoint> {
    fn omit(&self) -> bool {
        self.is_empty()
    }
}

/// Every node is listed, none or many.
impl Omit for BTreeMap<String, NodeStatus> {}

impl Codec<BTreeMap<String, ClusterEndpoint>> for BTreeMap<String, ClusterEndpoint> {
    fn read(value: &BTreeMap<String, ClusterEndpoint>) -> Dynamic {
        read_record_map(value)
    }
    fn write(v: Dynamic, at: &str) -> Result<BTreeMap<String, ClusterEndpoint>, String> {
        record_map(
            &v,
            at,
            "Supervisor::ClusterEndpoint",
            ClusterEndpoint::from_map,
        )
    }
}

impl Codec<NodeConfig> for NodeConfig {
    fn read(value: &NodeConfig) -> Dynamic {
        Dynamic::from(value.clone())
    }
    fn write(v: Dynamic, at: &str) -> Result<NodeConfig, String> {
        v.read_lock::<NodeConfig>()
            .map(|c| c.clone())
            .ok_or_else(|| wrong(at, "a Supervisor::NodeConfig", &v))
    }
}
impl Omit for NodeConfig {}

/// How the last process ended, as text (`exited with code 3`); only `()` is assigned.
impl Codec<Option<ExitInfo>> for Option<ExitInfo> {
    fn read(value: &Option<ExitInfo>) -> Dynamic {
        value.map_or(Dynamic::UNIT, |e| e.to_string().into())
    }
    fn write(v: Dynamic, at: &str) -> Result<Option<ExitInfo>, String> {
        if v.is_unit() {
            Ok(None)
        } else {
            Err(wrong(at, "()", &v))
        }
    }
}

impl Codec<BTreeMap<String, NodeStatus>> for BTreeMap<String, NodeStatus> {
    fn read(value: &BTreeMap<String, NodeStatus>) -> Dynamic {
        read_record_map(value)
    }
    fn write(v: Dynamic, at: &str) -> Result<BTreeMap<String, NodeStatus>, String> {
        let Some(map) = v.read_lock::<Map>() else {
            return Err(wrong(at, "a map", &v));
        };
        map.iter()
            .map(|(k, item)| {
                item.read_lock::<NodeStatus>()
                    .map(|s| (k.to_string(), s.clone()))
                    .ok_or_else(|| {
                        format!(
                            "{at}.{k} must be a Supervisor::NodeStatus, not {}",
                            kind(item)
                        )
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeek_messages_for_bad_names() {
        let check = |name: &str| NodeConfig::named(name).validate().unwrap_err();
        assert_eq!(check(""), "node names must not be an empty string");
        assert_eq!(check("a b"), "node names must not contain spaces: 'a b'");
        let mut both = NodeConfig::named("x");
        both.interface = Some("eth0".into());
        both.pcap_file = Some("t.pcap".into());
        assert_eq!(
            both.validate().unwrap_err(),
            "node with name 'x' has interface and pcap_file set"
        );
        assert!(check("a\0b").contains("control characters"));
    }

    #[test]
    fn roles_parse_in_every_spelling() {
        for role in ClusterRole::ALL {
            assert_eq!(ClusterRole::parse(role.name()), Some(role));
            assert_eq!(ClusterRole::parse(&role.to_string()), Some(role));
            assert_eq!(ClusterRole::parse(&role.name().to_lowercase()), Some(role));
        }
        assert_eq!(ClusterRole::parse("BOSS"), None);
    }

    #[test]
    fn ports_parse_and_print() {
        assert_eq!(Port::parse("10000/tcp").unwrap().to_string(), "10000/tcp");
        assert_eq!(Port::parse("53/UDP").unwrap().to_string(), "53/udp");
        assert_eq!(Port::from_int(47761).unwrap().to_string(), "47761/tcp");
        assert!(Port::parse("70000/tcp").is_err());
        assert!(Port::parse("80/sctpx").is_err());
        assert!(Port::from_int(-1).is_err());
    }

    #[test]
    fn node_config_round_trips_through_json() {
        let mut cfg = NodeConfig::named("w1");
        cfg.directory = Some("w1".into());
        cfg.cluster.insert(
            "w1".into(),
            ClusterEndpoint {
                role: ClusterRole::Worker,
                host: "127.0.0.1".into(),
                p: Port::tcp(10001),
                interface: Some("eth0".into()),
            },
        );
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"role\":\"WORKER\""), "{json}");
        assert!(json.contains("\"p\":\"10001/tcp\""), "{json}");
        let back: NodeConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        let err = serde_json::from_str::<NodeConfig>(r#"{"name":"a","dirctory":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dirctory"), "{err}");
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("directory", "dirctory"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn rotation_by_size_time_or_both() {
        let mut cfg = NodeConfig::named("r");
        cfg.stdout_file = Some("out.log".into());
        assert_eq!(cfg.rotation(), None);
        cfg.output_rotate_every = Some("daily".into());
        let rotation = cfg.rotation().unwrap();
        assert_eq!(rotation.every, Some(Period::Daily));
        assert_eq!(rotation.max_bytes, None);
        assert_eq!(rotation.backups, DEFAULT_OUTPUT_BACKUPS);
        assert!(!rotation.compress);
        cfg.output_max_bytes = Some(10);
        cfg.output_compress = Some(true);
        cfg.output_backups = Some(2);
        let rotation = cfg.rotation().unwrap();
        assert_eq!((rotation.max_bytes, rotation.backups), (Some(10), 2));
        assert!(rotation.compress);
        assert!(cfg.validate().is_ok());
        cfg.output_rotate_every = Some("Hourly".into());
        assert!(cfg.validate().unwrap_err().contains("output_rotate_every"));
        assert_eq!(Period::Hourly.length(), Duration::from_secs(3600));
    }

    #[test]
    fn seconds_refuse_nonsense() {
        assert_eq!(seconds(0.5).unwrap(), Duration::from_millis(500));
        assert!(seconds(-1.0).is_err());
        assert!(seconds(f64::NAN).is_err());
        assert!(seconds(1e12).is_err());
    }
}
