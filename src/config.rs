//! What a script or a control client asks for, and what the supervisor reports back:
//! `NodeConfig`, `ClusterEndpoint`, `ClusterRole`, `NodeStatus`, `Status`.
//!
//! These are plain data with serde derives (JSON is how a node receives its configuration
//! and how `ctl` speaks). Conversion from and to Rhai values lives in `script::records`;
//! turning a config into something that can be spawned lives in `process::plan`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Zeek's `Supervisor::ClusterRole`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClusterRole {
    #[default]
    #[serde(rename = "NONE", alias = "Supervisor::NONE")]
    None,
    #[serde(rename = "LOGGER", alias = "Supervisor::LOGGER")]
    Logger,
    #[serde(rename = "MANAGER", alias = "Supervisor::MANAGER")]
    Manager,
    #[serde(rename = "PROXY", alias = "Supervisor::PROXY")]
    Proxy,
    #[serde(rename = "WORKER", alias = "Supervisor::WORKER")]
    Worker,
}

impl ClusterRole {
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
    pub number: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
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

    pub fn from_int(number: i64) -> Result<Port, String> {
        u16::try_from(number)
            .map(Port::tcp)
            .map_err(|_| format!("port {number} is out of range (0-65535)"))
    }

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

/// Zeek's `Supervisor::ClusterEndpoint`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterEndpoint {
    pub role: ClusterRole,
    pub host: String,
    pub p: Port,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
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

/// Zeek's `Supervisor::NodeConfig`, plus the extensions marked below.
///
/// Durations are in seconds (an integer or a float), as a script writes them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcap_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bare_mode: Option<bool>,
    pub addl_base_scripts: Vec<String>,
    pub addl_user_scripts: Vec<String>,
    pub scripts: Vec<String>,
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_affinity: Option<i64>,
    pub cluster: BTreeMap<String, ClusterEndpoint>,
    /// Extension: run this program (argv) as the node instead of a script node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Extension: the first revival delay in seconds (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revival_delay: Option<f64>,
    /// Extension: the longest revival delay in seconds (default 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revival_max_delay: Option<f64>,
    /// Extension: seconds between SIGTERM and SIGKILL when the node is stopped (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<f64>,
    /// Extension: rotate `stdout_file`/`stderr_file` when they would grow past this size;
    /// the supervisor then writes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_max_bytes: Option<i64>,
    /// Extension: rotated files kept (`FILE.1` … `FILE.n`; default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_backups: Option<i64>,
    /// Extension: revivals allowed within `restart_window` before the node is marked
    /// failed (default: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<i64>,
    /// Extension: the window for `max_restarts`, in seconds (default 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_window: Option<f64>,
}

/// Rotated files kept when `output_backups` is not set.
pub const DEFAULT_OUTPUT_BACKUPS: u32 = 5;

impl NodeConfig {
    /// The rotation of this node's output files, if asked for: (max bytes, backups).
    pub fn rotation(&self) -> Option<(u64, u32)> {
        let max = u64::try_from(self.output_max_bytes?).ok()?;
        let backups = self
            .output_backups
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(DEFAULT_OUTPUT_BACKUPS);
        Some((max, backups))
    }

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
        if let Some(n) = self.output_backups {
            if !(0..=crate::process::rotate::MAX_BACKUPS).contains(&n) {
                return Err(format!(
                    "node '{}': output_backups must be between 0 and {}, not {n}",
                    self.name,
                    crate::process::rotate::MAX_BACKUPS
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
        for (field, value) in [
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
    pub line: String,
}

/// Zeek's `Supervisor::NodeStatus`, plus `state`, `restarts`, `exit`, `uptime` and `output`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeConfig,
    /// The live process; absent while the node waits to be revived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    /// `running`, `reviving`, `restarting` or `failed`.
    pub state: String,
    /// How many times the process was started again after the first start.
    pub restarts: i64,
    /// How the last process of this node ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    /// Seconds since the live process started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime: Option<f64>,
    /// The last lines of its captured output (filled in by `status(name)` for one node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<OutputLine>,
}

impl NodeStatus {
    pub fn new(node: NodeConfig) -> NodeStatus {
        NodeStatus {
            node,
            pid: None,
            state: String::new(),
            restarts: 0,
            exit: None,
            uptime: None,
            output: Vec::new(),
        }
    }
}

/// Zeek's `Supervisor::Status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub nodes: BTreeMap<String, NodeStatus>,
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
    fn seconds_refuse_nonsense() {
        assert_eq!(seconds(0.5).unwrap(), Duration::from_millis(500));
        assert!(seconds(-1.0).is_err());
        assert!(seconds(f64::NAN).is_err());
        assert!(seconds(1e12).is_err());
    }
}
