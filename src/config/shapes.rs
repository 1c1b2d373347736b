//! The structured fields of a `NodeConfig` (readiness, health, dependencies, restart
//! policy), with one parser each that both JSON and scripts go through, so a value means
//! the same and is refused with the same words whichever way it comes.
//!
//! A script's value is turned into JSON data first (`record::to_json`); `Shape::parse`
//! reads that, naming the field and the part that is wrong.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// A structured field value: parsed from JSON data and written back as JSON data.
pub trait Shape: Sized {
    /// Reads `value`; `at` names the field in messages (`ready`,
    /// `Supervisor::NodeConfig.ready`).
    fn parse(value: &Value, at: &str) -> Result<Self, String>;
    /// The value as JSON data, in the form `parse` reads.
    fn to_value(&self) -> Value;
}

/// A boxed shape reads and writes as the shape (a record keeps its large, rarely set
/// fields boxed, so that a node's entry stays small).
impl<T: Shape> Shape for Box<T> {
    fn parse(value: &Value, at: &str) -> Result<Self, String> {
        T::parse(value, at).map(Box::new)
    }
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// Serde through `Shape`: `#[serde(with = "shape")]`-like helpers for a type.
macro_rules! serde_by_shape {
    ($t:ty, $field:literal) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.to_value().serialize(s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let value = Value::deserialize(d)?;
                <$t as Shape>::parse(&value, $field).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "()",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "map",
    }
}

fn wrong(at: &str, expected: &str, v: &Value) -> String {
    format!("{at} must be {expected}, not {}", kind(v))
}

/// The map's only entry whose key is one of `kinds` (the kind of check), and the rest.
fn one_of<'a>(
    map: &'a Map<String, Value>,
    kinds: &[&str],
    at: &str,
) -> Result<(&'a str, &'a Value), String> {
    let found: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| kinds.contains(&k.as_str()))
        .collect();
    match found.as_slice() {
        [(k, v)] => Ok((k.as_str(), v)),
        [] => Err(format!("{at} needs one of: {}", kinds.join(", "))),
        _ => Err(format!(
            "{at} takes one of {}, not several",
            kinds.join(", ")
        )),
    }
}

fn seconds(v: &Value, at: &str) -> Result<f64, String> {
    let secs = v
        .as_f64()
        .ok_or_else(|| wrong(at, "a number of seconds", v))?;
    super::seconds(secs).map_err(|e| format!("{at} {e}"))?;
    Ok(secs)
}

fn string_list(v: &Value, at: &str) -> Result<Vec<String>, String> {
    let Value::Array(items) = v else {
        return Err(wrong(at, "an array of strings", v));
    };
    let list: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{at}[{i}] must be a string, not {}", kind(item)))
        })
        .collect::<Result<_, _>>()?;
    if list.first().is_none_or(|p| p.is_empty()) {
        return Err(format!("{at} must name a program to run"));
    }
    if list.iter().any(|a| a.contains('\0')) {
        return Err(format!("{at}: an argument contains a NUL byte"));
    }
    Ok(list)
}

/// Where a TCP check connects: `PORT` (on 127.0.0.1) or `"HOST:PORT"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// A host name or an address (IPv6 in brackets when written with a port).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Target {
    fn parse(v: &Value, at: &str) -> Result<Target, String> {
        let port = |n: i64| {
            u16::try_from(n)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{at}: port {n} is out of range (1-65535)"))
        };
        match v {
            Value::Number(n) if n.is_i64() => Ok(Target {
                host: "127.0.0.1".into(),
                port: port(n.as_i64().unwrap_or(0))?,
            }),
            Value::String(text) => {
                let bad = || format!("{at}: '{text}' is not a port or HOST:PORT");
                let (host, number) = text.rsplit_once(':').ok_or_else(bad)?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.is_empty() {
                    return Err(bad());
                }
                let number: i64 = number.parse().map_err(|_| bad())?;
                Ok(Target {
                    host: host.to_string(),
                    port: port(number)?,
                })
            }
            other => Err(wrong(at, "a port or \"HOST:PORT\"", other)),
        }
    }
}

/// An HTTP URL a check fetches: `http://HOST[:PORT][/PATH]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// As written.
    pub text: String,
    /// Where it connects.
    pub target: Target,
    /// The path and query, from `/`.
    pub path: String,
}

impl Url {
    fn parse(v: &Value, at: &str) -> Result<Url, String> {
        let Value::String(text) = v else {
            return Err(wrong(at, "an http:// URL", v));
        };
        let bad = |why: &str| format!("{at}: '{text}' {why}");
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| bad("is not an http:// URL (https is not supported)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("has no host, or has user information"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("has spaces or control characters in its path"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("has a bad address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("has a bad port"))?,
                None if after.is_empty() => 80,
                None => return Err(bad("has a bad address")),
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, p)) => (
                    host.to_string(),
                    p.parse().map_err(|_| bad("has a bad port"))?,
                ),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(bad("has no host or port"));
        }
        Ok(Url {
            text: text.clone(),
            target: Target { host, port },
            path: path.to_string(),
        })
    }
}

/// A check that is tried again and again: of readiness, or of health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// A TCP connection succeeds.
    Tcp(Target),
    /// The command (in the node's directory, environment and user) exits 0.
    Exec(Vec<String>),
    /// An HTTP GET answers 2xx.
    Http(Url),
}

impl Check {
    const KINDS: [&'static str; 3] = ["tcp", "exec", "http"];

    fn parse(kind: &str, v: &Value, at: &str) -> Result<Check, String> {
        let at = format!("{at}.{kind}");
        match kind {
            "tcp" => Target::parse(v, &at).map(Check::Tcp),
            "exec" => string_list(v, &at).map(Check::Exec),
            _ => Url::parse(v, &at).map(Check::Http),
        }
    }

    fn entry(&self) -> (&'static str, Value) {
        match self {
            Check::Tcp(t) if t.host == "127.0.0.1" => ("tcp", Value::from(t.port)),
            Check::Tcp(t) => ("tcp", Value::from(t.to_string())),
            Check::Exec(argv) => ("exec", Value::from(argv.clone())),
            Check::Http(url) => ("http", Value::from(url.text.clone())),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Tcp(t) => write!(f, "tcp {t}"),
            Check::Exec(argv) => write!(f, "exec {}", argv.join(" ")),
            Check::Http(url) => write!(f, "http {}", url.text),
        }
    }
}

/// How a node's readiness is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ready {
    /// systemd's notification protocol: `READY=1` on `$NOTIFY_SOCKET`.
    Notify,
    /// s6's: a newline written to this descriptor.
    Fd(i32),
    /// A line of output matches this regular expression.
    Log(String),
    /// A polled check succeeds.
    Check(Check),
}

impl Shape for Ready {
    fn parse(v: &Value, at: &str) -> Result<Ready, String> {
        let kinds = ["fd", "log", "tcp", "exec", "http"];
        let map = match v {
            Value::String(s) if s == "notify" => return Ok(Ready::Notify),
            Value::String(s) => {
                return Err(format!(
                    "{at}: unknown readiness '{s}' (\"notify\", or a map with one of: {})",
                    kinds.join(", ")
                ));
            }
            Value::Object(map) => map,
            other => return Err(wrong(at, "\"notify\" or a map", other)),
        };
        let (kind, value) = one_of(map, &kinds, at)?;
        if let Some(extra) = map.keys().find(|k| k.as_str() != kind) {
            return Err(format!("{at} has no field '{extra}' (with {kind})"));
        }
        match kind {
            "fd" => {
                let fd = value
                    .as_i64()
                    .ok_or_else(|| wrong(&format!("{at}.fd"), "a descriptor number", value))?;
                if !(3..=1023).contains(&fd) {
                    return Err(format!(
                        "{at}.fd must be a descriptor from 3 to 1023 (0-2 are the standard streams), not {fd}"
                    ));
                }
                Ok(Ready::Fd(fd as i32))
            }
            "log" => {
                let Value::String(pattern) = value else {
                    return Err(wrong(&format!("{at}.log"), "a regular expression", value));
                };
                regex::Regex::new(pattern).map_err(|e| {
                    format!("{at}.log: the regular expression does not compile: {e}")
                })?;
                Ok(Ready::Log(pattern.clone()))
            }
            kind => Check::parse(kind, value, at).map(Ready::Check),
        }
    }

    fn to_value(&self) -> Value {
        let entry = match self {
            Ready::Notify => return Value::from("notify"),
            Ready::Fd(fd) => ("fd", Value::from(*fd)),
            Ready::Log(pattern) => ("log", Value::from(pattern.clone())),
            Ready::Check(check) => check.entry(),
        };
        Value::Object(Map::from_iter([(entry.0.to_string(), entry.1)]))
    }
}
serde_by_shape!(Ready, "ready");

/// A liveness check of a ready node.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    /// What is tried.
    pub check: Check,
    /// Seconds between two tries (default 10).
    pub interval: Option<f64>,
    /// Seconds one try may take (default 2).
    pub timeout: Option<f64>,
    /// Consecutive failures that restart the node (default 3).
    pub failures: Option<i64>,
}

impl Health {
    /// Seconds between two tries when `interval` is not set.
    pub const DEFAULT_INTERVAL: f64 = 10.0;
    /// Seconds one try may take when `timeout` is not set.
    pub const DEFAULT_TIMEOUT: f64 = 2.0;
    /// Consecutive failures that restart the node when `failures` is not set.
    pub const DEFAULT_FAILURES: u32 = 3;
}

impl Shape for Health {
    fn parse(v: &Value, at: &str) -> Result<Health, String> {
        let Value::Object(map) = v else {
            return Err(wrong(at, "a map", v));
        };
        let (kind, value) = one_of(map, &Check::KINDS, at)?;
        let mut health = Health {
            check: Check::parse(kind, value, at)?,
            interval: None,
            timeout: None,
            failures: None,
        };
        for (key, value) in map {
            let field = format!("{at}.{key}");
            match key.as_str() {
                k if k == kind => {}
                "interval" => health.interval = Some(positive(seconds(value, &field)?, &field)?),
                "timeout" => health.timeout = Some(positive(seconds(value, &field)?, &field)?),
                "failures" => {
                    let n = value
                        .as_i64()
                        .filter(|n| (1..=1_000_000).contains(n))
                        .ok_or_else(|| {
                            format!("{field} must be a whole number from 1, not {value}")
                        })?;
                    health.failures = Some(n);
                }
                other => {
                    return Err(format!(
                        "{at} has no field '{other}' (fields: exec, tcp or http; interval, timeout, failures)"
                    ));
                }
            }
        }
        Ok(health)
    }

    fn to_value(&self) -> Value {
        let (kind, value) = self.check.entry();
        let mut map = Map::from_iter([(kind.to_string(), value)]);
        if let Some(s) = self.interval {
            map.insert("interval".into(), Value::from(s));
        }
        if let Some(s) = self.timeout {
            map.insert("timeout".into(), Value::from(s));
        }
        if let Some(n) = self.failures {
            map.insert("failures".into(), Value::from(n));
        }
        Value::Object(map)
    }
}
serde_by_shape!(Health, "health");

fn positive(secs: f64, at: &str) -> Result<f64, String> {
    if secs > 0.0 {
        Ok(secs)
    } else {
        Err(format!("{at} must be more than 0 seconds"))
    }
}

/// When a dependency is met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    /// Its process runs (ready or not).
    Started,
    /// It is ready.
    Ready,
    /// It ended and is not revived, whatever its status.
    Exited,
    /// It ended with status 0 and is not revived.
    Succeeded,
}

impl Condition {
    /// As scripts write it.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Ready => "ready",
            Condition::Exited => "exited",
            Condition::Succeeded => "succeeded",
        }
    }

    fn parse(v: &Value, at: &str) -> Result<Condition, String> {
        let all = [
            Condition::Started,
            Condition::Ready,
            Condition::Exited,
            Condition::Succeeded,
        ];
        let Value::String(text) = v else {
            return Err(wrong(at, "a condition", v));
        };
        all.into_iter().find(|c| c.name() == text).ok_or_else(|| {
            format!("{at}: unknown condition '{text}' (one of: started, ready, exited, succeeded)")
        })
    }
}

/// One dependency of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dependency {
    /// When it is met.
    pub condition: Condition,
    /// The dependent is stopped when the dependency's process ends or restarts, and
    /// started again when the condition holds again.
    pub restart: bool,
}

/// The nodes a node depends on, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dependencies(pub BTreeMap<String, Dependency>);

impl Shape for Dependencies {
    fn parse(v: &Value, at: &str) -> Result<Dependencies, String> {
        let name = |n: &str, at: &str| -> Result<String, String> {
            if n.is_empty() || n.contains(' ') {
                Err(format!("{at}: '{n}' is not a node name"))
            } else {
                Ok(n.to_string())
            }
        };
        let mut deps = BTreeMap::new();
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let Value::String(n) = item else {
                        return Err(format!("{at}[{i}] must be a node name, not {}", kind(item)));
                    };
                    deps.insert(
                        name(n, at)?,
                        Dependency {
                            condition: Condition::Ready,
                            restart: false,
                        },
                    );
                }
            }
            Value::Object(map) => {
                for (n, item) in map {
                    let at = format!("{at}.{n}");
                    let dependency = match item {
                        Value::String(_) => Dependency {
                            condition: Condition::parse(item, &at)?,
                            restart: false,
                        },
                        Value::Object(spec) => {
                            let mut dependency = Dependency {
                                condition: Condition::Ready,
                                restart: false,
                            };
                            for (key, value) in spec {
                                match key.as_str() {
                                    "condition" => {
                                        dependency.condition =
                                            Condition::parse(value, &format!("{at}.condition"))?
                                    }
                                    "restart" => {
                                        dependency.restart = value.as_bool().ok_or_else(|| {
                                            wrong(&format!("{at}.restart"), "a bool", value)
                                        })?
                                    }
                                    other => {
                                        return Err(format!(
                                            "{at} has no field '{other}' (fields: condition, restart)"
                                        ));
                                    }
                                }
                            }
                            dependency
                        }
                        other => {
                            return Err(wrong(&at, "a condition or #{condition, restart}", other));
                        }
                    };
                    deps.insert(name(n, &at)?, dependency);
                }
            }
            other => return Err(wrong(at, "an array of node names or a map", other)),
        }
        Ok(Dependencies(deps))
    }

    fn to_value(&self) -> Value {
        let plain = self
            .0
            .values()
            .all(|d| d.condition == Condition::Ready && !d.restart);
        if plain {
            return Value::from(self.0.keys().cloned().collect::<Vec<_>>());
        }
        Value::Object(
            self.0
                .iter()
                .map(|(name, d)| {
                    let value = if d.restart {
                        serde_json::json!({"condition": d.condition.name(), "restart": true})
                    } else {
                        Value::from(d.condition.name())
                    };
                    (name.clone(), value)
                })
                .collect(),
        )
    }
}
serde_by_shape!(Dependencies, "depends_on");

/// Whether a node is revived when its process ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Always (Zeek's way).
    #[default]
    Always,
    /// Not after an exit with status 0.
    OnFailure,
    /// Never: a one-shot job.
    Never,
}

impl RestartPolicy {
    /// As scripts write it.
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

impl Shape for RestartPolicy {
    fn parse(v: &Value, at: &str) -> Result<RestartPolicy, String> {
        let Value::String(text) = v else {
            return Err(wrong(at, "\"always\", \"on-failure\" or \"never\"", v));
        };
        [
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ]
        .into_iter()
        .find(|p| p.name() == text)
        .ok_or_else(|| format!("{at}: unknown policy '{text}' (one of: always, on-failure, never)"))
    }

    fn to_value(&self) -> Value {
        Value::from(self.name())
    }
}
serde_by_shape!(RestartPolicy, "restart");

/// A signal, written as a name (`"QUIT"`, `"SIGQUIT"`) or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalName(pub nix::sys::signal::Signal);

impl SignalName {
    /// Reads `QUIT`, `sigquit`, `SIGQUIT` or a number; `None` for anything else.
    pub fn lookup(text: &str) -> Option<nix::sys::signal::Signal> {
        use std::str::FromStr;
        let upper = text.trim().to_ascii_uppercase();
        if let Ok(n) = upper.parse::<i32>() {
            return nix::sys::signal::Signal::try_from(n).ok();
        }
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        nix::sys::signal::Signal::from_str(&name).ok()
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl Shape for SignalName {
    fn parse(v: &Value, at: &str) -> Result<SignalName, String> {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) if n.is_i64() => n.to_string(),
            other => return Err(wrong(at, "a signal name or number", other)),
        };
        SignalName::lookup(&text)
            .map(SignalName)
            .ok_or_else(|| format!("{at}: unknown signal '{text}' (a name such as \"TERM\" or \"SIGQUIT\", or a number from 1 to 31)"))
    }

    fn to_value(&self) -> Value {
        Value::from(self.0.as_str().trim_start_matches("SIG"))
    }
}
serde_by_shape!(SignalName, "stop_signal");

/// Whom the stop signal reaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KillMode {
    /// The node's whole process group (or cgroup).
    #[default]
    Group,
    /// The main process; SIGKILL to whatever is left of the group at the stop timeout.
    Mixed,
    /// The main process only, ever.
    Process,
}

impl KillMode {
    /// As scripts write it.
    pub fn name(self) -> &'static str {
        match self {
            KillMode::Group => "group",
            KillMode::Mixed => "mixed",
            KillMode::Process => "process",
        }
    }
}

impl Shape for KillMode {
    fn parse(v: &Value, at: &str) -> Result<KillMode, String> {
        let Value::String(text) = v else {
            return Err(wrong(at, "\"group\", \"mixed\" or \"process\"", v));
        };
        [KillMode::Group, KillMode::Mixed, KillMode::Process]
            .into_iter()
            .find(|m| m.name() == text)
            .ok_or_else(|| format!("{at}: unknown mode '{text}' (one of: group, mixed, process)"))
    }

    fn to_value(&self) -> Value {
        Value::from(self.name())
    }
}
serde_by_shape!(KillMode, "kill_mode");

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readiness_in_every_form() {
        let p = |v: Value| Ready::parse(&v, "ready");
        assert_eq!(p(json!("notify")), Ok(Ready::Notify));
        assert_eq!(p(json!({"fd": 3})), Ok(Ready::Fd(3)));
        assert_eq!(
            p(json!({"tcp": 5432})),
            Ok(Ready::Check(Check::Tcp(Target {
                host: "127.0.0.1".into(),
                port: 5432
            })))
        );
        let Ok(Ready::Check(Check::Http(url))) = p(json!({"http": "http://[::1]:8080/up?x=1"}))
        else {
            panic!()
        };
        assert_eq!((url.target.host.as_str(), url.target.port), ("::1", 8080));
        assert_eq!(url.path, "/up?x=1");
        for (bad, words) in [
            (json!({"tcp": "nope"}), "'nope' is not a port"),
            (json!({"tcp": 70000}), "out of range"),
            (json!({"log": "("}), "does not compile"),
            (json!({"fd": 1}), "from 3 to 1023"),
            (json!("ready"), "unknown readiness 'ready'"),
            (json!({"http": "https://x/"}), "https is not supported"),
            (json!({"exec": []}), "must name a program"),
            (json!({"tcp": 1, "exec": ["x"]}), "not several"),
            (json!({"frob": 1}), "needs one of"),
        ] {
            let err = p(bad.clone()).unwrap_err();
            assert!(
                err.starts_with("ready") && err.contains(words),
                "{bad}: {err}"
            );
        }
        for ready in [
            Ready::Notify,
            Ready::Fd(5),
            Ready::Log("^up$".into()),
            p(json!({"tcp": "db:5432"})).unwrap(),
            p(json!({"exec": ["pg_isready"]})).unwrap(),
        ] {
            assert_eq!(p(ready.to_value()), Ok(ready));
        }
    }

    #[test]
    fn dependencies_as_a_list_or_a_map() {
        let p = |v: Value| Dependencies::parse(&v, "depends_on");
        let deps = p(json!(["db", "logger"])).unwrap();
        assert_eq!(deps.0["db"].condition, Condition::Ready);
        assert_eq!(deps.to_value(), json!(["db", "logger"]));
        let deps =
            p(json!({"migrate": "succeeded", "db": {"condition": "started", "restart": true}}))
                .unwrap();
        assert_eq!(deps.0["migrate"].condition, Condition::Succeeded);
        assert!(deps.0["db"].restart);
        assert_eq!(p(deps.to_value()), Ok(deps));
        let err = p(json!({"db": "up"})).unwrap_err();
        assert!(err.contains("unknown condition 'up'"), "{err}");
        assert!(
            p(json!({"db": {"when": "x"}}))
                .unwrap_err()
                .contains("no field 'when'")
        );
        assert!(p(json!([1])).unwrap_err().contains("must be a node name"));
    }

    #[test]
    fn signals_by_name_or_number() {
        use nix::sys::signal::Signal;
        let p = |v: Value| SignalName::parse(&v, "stop_signal").map(|s| s.0);
        assert_eq!(p(json!("QUIT")), Ok(Signal::SIGQUIT));
        assert_eq!(p(json!("SIGhup")), Ok(Signal::SIGHUP));
        assert_eq!(p(json!(9)), Ok(Signal::SIGKILL));
        for bad in [json!("NOPE"), json!(0), json!(-9), json!(true)] {
            assert!(
                p(bad.clone()).unwrap_err().starts_with("stop_signal"),
                "{bad}"
            );
        }
        assert_eq!(SignalName(Signal::SIGQUIT).to_value(), json!("QUIT"));
        assert_eq!(
            KillMode::parse(&json!("mixed"), "kill_mode"),
            Ok(KillMode::Mixed)
        );
    }

    #[test]
    fn health_and_restart() {
        let h = Health::parse(&json!({"tcp": 80, "interval": 5, "failures": 2}), "health").unwrap();
        assert_eq!(h.interval, Some(5.0));
        assert_eq!(Health::parse(&h.to_value(), "health"), Ok(h));
        assert!(
            Health::parse(&json!({"tcp": 80, "timeout": -1}), "health")
                .unwrap_err()
                .contains("health.timeout")
        );
        assert!(Health::parse(&json!({"interval": 1}), "health").is_err());
        assert_eq!(
            RestartPolicy::parse(&json!("on-failure"), "restart"),
            Ok(RestartPolicy::OnFailure)
        );
        assert!(
            RestartPolicy::parse(&json!("sometimes"), "restart")
                .unwrap_err()
                .contains("unknown policy")
        );
    }
}
