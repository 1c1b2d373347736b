//! The structured fields of running a real service (SPEC §7): whom a node runs as
//! (`user`, `group`: an `Account`) and what it may use (`limits`: `Limits`), parsed by
//! the same `Shape` from JSON and from scripts, as the fields of `shapes` are.
//!
//! Only the values are checked here; whether the user exists, whether the supervisor
//! may change to it, and whether a cgroup can be had are questions about the machine,
//! answered when the node is planned (`process::plan`).

use std::fmt;

use serde_json::{Map, Value};

use super::shapes::Shape;

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

/// A user or a group, by name or by number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Account {
    /// Looked up in the user (or group) database.
    Name(String),
    /// A numeric id, used as is (looked up only for its name and home).
    Id(u32),
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Name(name) => f.write_str(name),
            Account::Id(id) => write!(f, "{id}"),
        }
    }
}

impl Shape for Account {
    fn parse(v: &Value, at: &str) -> Result<Account, String> {
        match v {
            Value::String(name) if name.is_empty() => Err(format!("{at} must not be empty")),
            Value::String(name) if name.contains(['\0', ':', '\n']) => Err(format!(
                "{at}: {name:?} is not a name (it contains ':', a newline or a NUL byte)"
            )),
            Value::String(name) => Ok(Account::Name(name.clone())),
            Value::Number(n) => n
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .filter(|&id| id != u32::MAX)
                .map(Account::Id)
                .ok_or_else(|| format!("{at}: {n} is not an id (0 to 4294967294)")),
            other => Err(wrong(at, "a name or a number", other)),
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Account::Name(name) => Value::from(name.clone()),
            Account::Id(id) => Value::from(*id),
        }
    }
}

/// A resource limit of a process: a number, or none at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    /// `"unlimited"`.
    Unlimited,
    /// This many (bytes, descriptors, processes: as the limit counts).
    Of(u64),
}

impl Amount {
    /// As `setrlimit` takes it.
    pub fn raw(self) -> u64 {
        match self {
            Amount::Unlimited => u64::MAX,
            Amount::Of(n) => n,
        }
    }

    /// Reads a number or `"unlimited"`; with `bytes`, a size such as `"16M"` too.
    fn parse(v: &Value, at: &str, bytes: bool) -> Result<Amount, String> {
        match v {
            Value::String(s) if s == "unlimited" || s == "infinity" => Ok(Amount::Unlimited),
            Value::String(_) if bytes => parse_bytes(v, at).map(Amount::Of),
            Value::Number(n) => match n.as_u64() {
                Some(u64::MAX) | None => Err(format!("{at} must be 0 or more, not {n}")),
                Some(n) => Ok(Amount::Of(n)),
            },
            other if bytes => Err(wrong(
                at,
                "a size (\"16M\"), a number or \"unlimited\"",
                other,
            )),
            other => Err(wrong(at, "a number or \"unlimited\"", other)),
        }
    }

    fn to_value(self) -> Value {
        match self {
            Amount::Unlimited => Value::from("unlimited"),
            Amount::Of(n) => Value::from(n),
        }
    }
}

/// The smallest `memory` limit accepted: below it no program starts (it mostly
/// catches a unit written wrong, `"1K"` for `"1G"`).
pub const MIN_MEMORY: u64 = 1 << 20;
/// The smallest `cpu` limit: the kernel's smallest quota (1 ms per 100 ms period).
pub const MIN_CPU: f64 = 0.01;

/// `limits`: resource limits of the node's process (`setrlimit`, set before exec) and
/// of the node as a whole (a cgroup of its own).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Open files (`RLIMIT_NOFILE`).
    pub nofile: Option<Amount>,
    /// Core file size in bytes (`RLIMIT_CORE`); sizes as for `memory`.
    pub core: Option<Amount>,
    /// Processes of the node's user (`RLIMIT_NPROC`).
    pub nproc: Option<Amount>,
    /// Stack size in bytes (`RLIMIT_STACK`).
    pub stack: Option<Amount>,
    /// Locked memory in bytes (`RLIMIT_MEMLOCK`).
    pub memlock: Option<Amount>,
    /// Memory of the whole node, in bytes (cgroup).
    pub memory: Option<u64>,
    /// Tasks of the whole node (cgroup).
    pub pids: Option<u64>,
    /// Cores' worth of CPU time of the whole node (cgroup), e.g. 1.5.
    pub cpu: Option<f64>,
}

impl Limits {
    /// The fields, in printing order.
    pub const FIELDS: [&'static str; 8] = [
        "nofile", "core", "nproc", "stack", "memlock", "memory", "pids", "cpu",
    ];

    /// The process limits that are set: (field, resource number of `setrlimit`, value).
    pub fn rlimits(&self) -> Vec<(&'static str, u32, Amount)> {
        use nix::libc;
        [
            ("nofile", libc::RLIMIT_NOFILE, self.nofile),
            ("core", libc::RLIMIT_CORE, self.core),
            ("nproc", libc::RLIMIT_NPROC, self.nproc),
            ("stack", libc::RLIMIT_STACK, self.stack),
            ("memlock", libc::RLIMIT_MEMLOCK, self.memlock),
        ]
        .into_iter()
        // The type of the `RLIMIT_*` constants differs between C libraries.
        .filter_map(|(field, resource, amount)| {
            #[allow(clippy::unnecessary_cast)]
            Some((field, resource as u32, amount?))
        })
        .collect()
    }

    /// Whether the node needs a cgroup of its own.
    pub fn needs_cgroup(&self) -> bool {
        self.memory.is_some() || self.pids.is_some() || self.cpu.is_some()
    }

    /// The first field that asks for a cgroup, for messages.
    pub fn cgroup_field(&self) -> &'static str {
        if self.memory.is_some() {
            "memory"
        } else if self.pids.is_some() {
            "pids"
        } else {
            "cpu"
        }
    }
}

/// Reads a size in bytes: a number, or text with a suffix of powers of 1024 (`"512M"`,
/// `"1.5G"`, `"64MiB"`, `"100k"`).
pub fn parse_bytes(v: &Value, at: &str) -> Result<u64, String> {
    let text = match v {
        Value::Number(n) => {
            return n
                .as_u64()
                .ok_or_else(|| format!("{at} must be a number of bytes, not {n}"));
        }
        Value::String(text) => text.trim(),
        other => {
            return Err(wrong(
                at,
                "a number of bytes or a size such as \"512M\"",
                other,
            ));
        }
    };
    let bad =
        || format!("{at}: '{text}' is not a size (a number of bytes, or e.g. \"512M\", \"2G\")");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let scale: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// A size as a person writes it: `64 MiB`, `1.5 GiB`, `800 KiB`, `100 bytes`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (scale, unit) in UNITS {
        if bytes >= scale {
            let value = bytes as f64 / scale as f64;
            return if bytes.is_multiple_of(scale) {
                format!("{} {unit}", bytes / scale)
            } else if value >= 100.0 {
                format!("{value:.0} {unit}")
            } else {
                format!("{value:.1} {unit}")
            };
        }
    }
    format!("{bytes} bytes")
}

/// A size as `parse_bytes` reads it back, as short as it is exact: `"512M"`, `"1536K"`.
fn compact_bytes(bytes: u64) -> Value {
    for (scale, unit) in [
        (1u64 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return Value::from(format!("{}{unit}", bytes / scale));
        }
    }
    Value::from(bytes)
}

impl Shape for Limits {
    fn parse(v: &Value, at: &str) -> Result<Limits, String> {
        let Value::Object(map) = v else {
            return Err(wrong(at, "a map", v));
        };
        let mut limits = Limits::default();
        for (key, value) in map {
            let field = format!("{at}.{key}");
            match key.as_str() {
                "nofile" => limits.nofile = Some(Amount::parse(value, &field, false)?),
                "core" => limits.core = Some(Amount::parse(value, &field, true)?),
                "nproc" => limits.nproc = Some(Amount::parse(value, &field, false)?),
                "stack" => limits.stack = Some(Amount::parse(value, &field, true)?),
                "memlock" => limits.memlock = Some(Amount::parse(value, &field, true)?),
                "memory" => {
                    let bytes = parse_bytes(value, &field)?;
                    if bytes < MIN_MEMORY {
                        return Err(format!(
                            "{field}: {} is below what a process needs (at least {})",
                            match value {
                                Value::String(s) => format!("'{s}'"),
                                other => format!("{other} bytes"),
                            },
                            human_bytes(MIN_MEMORY)
                        ));
                    }
                    limits.memory = Some(bytes);
                }
                "pids" => {
                    let n = value
                        .as_u64()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| match value {
                            Value::Number(n) => format!("{field} must be 1 or more, not {n}"),
                            other => wrong(&field, "a number of tasks", other),
                        })?;
                    limits.pids = Some(n);
                }
                "cpu" => {
                    let cores = value
                        .as_f64()
                        .ok_or_else(|| wrong(&field, "a number of cores (e.g. 1.5)", value))?;
                    if !(MIN_CPU..=1_000_000.0).contains(&cores) {
                        return Err(format!(
                            "{field} must be a number of cores from {MIN_CPU}, not {cores}"
                        ));
                    }
                    limits.cpu = Some(cores);
                }
                other => {
                    return Err(format!(
                        "{at} has no field '{other}' (fields: {})",
                        Limits::FIELDS.join(", ")
                    ));
                }
            }
        }
        Ok(limits)
    }

    fn to_value(&self) -> Value {
        let mut map = Map::new();
        for (field, amount) in [
            ("nofile", self.nofile),
            ("core", self.core),
            ("nproc", self.nproc),
            ("stack", self.stack),
            ("memlock", self.memlock),
        ] {
            if let Some(amount) = amount {
                map.insert(field.into(), amount.to_value());
            }
        }
        if let Some(bytes) = self.memory {
            map.insert("memory".into(), compact_bytes(bytes));
        }
        if let Some(n) = self.pids {
            map.insert("pids".into(), Value::from(n));
        }
        if let Some(cores) = self.cpu {
            map.insert("cpu".into(), Value::from(cores));
        }
        Value::Object(map)
    }
}

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
serde_by_shape!(Account, "user");
serde_by_shape!(Limits, "limits");

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accounts_by_name_or_number() {
        let p = |v: Value| Account::parse(&v, "user");
        assert_eq!(p(json!("postgres")), Ok(Account::Name("postgres".into())));
        assert_eq!(p(json!(70)), Ok(Account::Id(70)));
        assert!(p(json!(-1)).unwrap_err().contains("not an id"));
        assert!(p(json!("")).unwrap_err().contains("must not be empty"));
        assert!(p(json!(true)).unwrap_err().contains("a name or a number"));
        assert_eq!(p(Account::Id(3).to_value()), Ok(Account::Id(3)));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        let p = |v: Value| parse_bytes(&v, "limits.memory");
        assert_eq!(p(json!("512M")), Ok(512 << 20));
        assert_eq!(p(json!("64MiB")), Ok(64 << 20));
        assert_eq!(p(json!("1.5G")), Ok(3 << 29));
        assert_eq!(p(json!("100k")), Ok(100 << 10));
        assert_eq!(p(json!(4096)), Ok(4096));
        assert!(p(json!("12X")).unwrap_err().contains("is not a size"));
        assert!(p(json!(-3)).is_err());
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }

    #[test]
    fn limits_parse_check_and_round_trip() {
        let p = |v: Value| Limits::parse(&v, "limits");
        let limits = p(
            json!({"nofile": 4096, "core": "unlimited", "memory": "512M",
            "pids": 100, "cpu": 1.5}),
        )
        .unwrap();
        assert_eq!(limits.nofile, Some(Amount::Of(4096)));
        assert_eq!(limits.core, Some(Amount::Unlimited));
        assert_eq!(limits.memory, Some(512 << 20));
        assert!(limits.needs_cgroup());
        assert_eq!(limits.rlimits().len(), 2);
        assert_eq!(p(limits.to_value()), Ok(limits));
        for (bad, words) in [
            (
                json!({"memory": "1K"}),
                "limits.memory: '1K' is below what a process needs",
            ),
            (
                json!({"memory": true}),
                "limits.memory must be a number of bytes",
            ),
            (json!({"pids": 0}), "limits.pids must be 1 or more"),
            (
                json!({"cpu": 0}),
                "limits.cpu must be a number of cores from 0.01",
            ),
            (
                json!({"cpu": "two"}),
                "limits.cpu must be a number of cores",
            ),
            (
                json!({"nofile": "many"}),
                "limits.nofile must be a number or \"unlimited\"",
            ),
            (json!({"nofiles": 3}), "limits has no field 'nofiles'"),
            (json!(5), "limits must be a map"),
        ] {
            let err = p(bad.clone()).unwrap_err();
            assert!(err.contains(words), "{bad}: {err}");
        }
        assert!(!p(json!({"nofile": 10})).unwrap().needs_cgroup());
    }
}
