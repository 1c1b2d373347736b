//! The record types as Rhai custom types: `NodeConfig`, `ClusterEndpoint`, `NodeStatus`,
//! `Status`, and the `ClusterRole` enum.
//!
//! Each record lists its fields once (`Record::FIELDS`); from that one table come the
//! property getters and setters, construction from an object map (unknown keys and
//! wrong types are errors naming the field), and printing. An unset optional field
//! reads as `()`, and assigning `()` unsets it.

use std::collections::BTreeMap;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FLOAT, INT, ImmutableString, Map};

use crate::config::{
    ClusterEndpoint, ClusterRole, ExitInfo, NodeConfig, NodeStatus, Port, Status, seconds,
};

/// A record type seen from a script.
pub trait Record: Clone + Send + Sync + 'static {
    /// The name scripts see: `Supervisor::NodeConfig`.
    const TYPE_NAME: &'static str;
    /// Readable and writable fields, in printing order.
    const FIELDS: &'static [&'static str];
    /// Fields a map must give when it constructs the record.
    const REQUIRED: &'static [&'static str] = &[];
    /// Fields that can be read but not written.
    const COMPUTED: &'static [&'static str] = &[];

    fn blank() -> Self;
    /// The value of a field in `FIELDS` or `COMPUTED`.
    fn get(&self, field: &str) -> Dynamic;
    /// Assigns a field of `FIELDS`, checking the value's type.
    fn set(&mut self, field: &str, value: Dynamic) -> Result<(), String>;
}

/// Builds a record from an object map.
pub fn from_map<R: Record>(map: Map) -> Result<R, String> {
    for required in R::REQUIRED {
        if !map.contains_key(*required) {
            return Err(format!("{} needs field '{required}'", R::TYPE_NAME));
        }
    }
    let mut record = R::blank();
    for (key, value) in map {
        if !R::FIELDS.contains(&key.as_str()) {
            return Err(unknown_field::<R>(&key));
        }
        record.set(&key, value)?;
    }
    Ok(record)
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

/// Registers `R`'s name, properties and printing on `engine`.
pub fn register<R: Record>(engine: &mut Engine) {
    engine.register_type_with_name::<R>(R::TYPE_NAME);
    for &field in R::FIELDS.iter().chain(R::COMPUTED) {
        engine.register_get(field, move |r: &mut R| r.get(field));
    }
    for &field in R::FIELDS {
        engine.register_set(field, move |r: &mut R, value: Dynamic| {
            r.set(field, value)
                .map_err(|e| -> Box<EvalAltResult> { e.into() })
        });
    }
    engine.register_fn("to_string", |r: &mut R| show(r));
    engine.register_fn("to_debug", |r: &mut R| debug(r));
}

/// Registers `ClusterRole`: its name, comparison and printing.
pub fn register_role(engine: &mut Engine) {
    engine
        .register_type_with_name::<ClusterRole>("Supervisor::ClusterRole")
        .register_fn("==", |a: &mut ClusterRole, b: ClusterRole| *a == b)
        .register_fn("!=", |a: &mut ClusterRole, b: ClusterRole| *a != b)
        .register_fn("to_string", |r: &mut ClusterRole| r.to_string())
        .register_fn("to_debug", |r: &mut ClusterRole| r.to_string())
        .register_get("name", |r: &mut ClusterRole| r.name().to_string());
}

/// Zeek-like printing: `[name=w1, directory=w1]`, set fields only.
pub fn show<R: Record>(record: &R) -> String {
    let fields: Vec<String> = R::FIELDS
        .iter()
        .chain(R::COMPUTED)
        .filter_map(|f| {
            let v = record.get(f);
            (!is_empty(&v) || *f == R::FIELDS[0]).then(|| format!("{f}={}", render(&v, false)))
        })
        .collect();
    format!("[{}]", fields.join(", "))
}

/// Rhai-literal printing that reads back: `Supervisor::NodeConfig(#{name: "w1"})`.
pub fn debug<R: Record>(record: &R) -> String {
    let fields: Vec<String> = R::FIELDS
        .iter()
        .filter_map(|f| {
            let v = record.get(f);
            (!is_empty(&v) || *f == R::FIELDS[0]).then(|| format!("{f}: {}", render(&v, true)))
        })
        .collect();
    format!("{}(#{{{}}})", R::TYPE_NAME, fields.join(", "))
}

fn is_empty(v: &Dynamic) -> bool {
    v.is_unit()
        || v.read_lock::<Array>().is_some_and(|a| a.is_empty())
        || v.read_lock::<Map>().is_some_and(|m| m.is_empty())
}

/// Renders any value a record can hold, including records nested in maps.
pub fn render(v: &Dynamic, debug_form: bool) -> String {
    macro_rules! record {
        ($t:ty) => {
            if let Some(r) = v.read_lock::<$t>() {
                return if debug_form { debug(&*r) } else { show(&*r) };
            }
        };
    }
    record!(NodeConfig);
    record!(ClusterEndpoint);
    record!(NodeStatus);
    record!(Status);
    if let Some(role) = v.read_lock::<ClusterRole>() {
        return role.to_string();
    }
    if let Some(s) = v.read_lock::<ImmutableString>() {
        return if debug_form {
            format!("{:?}", s.as_str())
        } else {
            s.to_string()
        };
    }
    if let Some(a) = v.read_lock::<Array>() {
        let items: Vec<String> = a.iter().map(|x| render(x, debug_form)).collect();
        return format!("[{}]", items.join(", "));
    }
    if let Some(m) = v.read_lock::<Map>() {
        let items: Vec<String> = m
            .iter()
            .map(|(k, x)| format!("{}: {}", map_key(k), render(x, debug_form)))
            .collect();
        return format!("#{{{}}}", items.join(", "));
    }
    if v.is_unit() {
        return "()".into();
    }
    v.to_string()
}

/// The names a script can read after a dot on `v`: a record's fields, a map's keys,
/// a role's `name`. `None` for other values.
pub fn field_names(v: &Dynamic) -> Option<Vec<String>> {
    fn of<R: Record>() -> Vec<String> {
        R::FIELDS
            .iter()
            .chain(R::COMPUTED)
            .map(|f| f.to_string())
            .collect()
    }
    if v.is::<NodeConfig>() {
        Some(of::<NodeConfig>())
    } else if v.is::<ClusterEndpoint>() {
        Some(of::<ClusterEndpoint>())
    } else if v.is::<NodeStatus>() {
        Some(of::<NodeStatus>())
    } else if v.is::<Status>() {
        Some(of::<Status>())
    } else if v.is::<ClusterRole>() {
        Some(vec!["name".into()])
    } else {
        v.read_lock::<Map>()
            .map(|m| m.keys().map(|k| k.to_string()).collect())
    }
}

/// Every field name of every record type, for a dot after a value of unknown type.
pub fn all_field_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = [
        NodeConfig::FIELDS,
        NodeConfig::COMPUTED,
        ClusterEndpoint::FIELDS,
        NodeStatus::FIELDS,
        NodeStatus::COMPUTED,
        Status::FIELDS,
        &["name"],
    ]
    .concat();
    names.sort_unstable();
    names.dedup();
    names
}

/// What `v.name` reads, for a record, a map or a role; `None` when there is no such
/// field. Reading has no side effects.
pub fn field(v: &Dynamic, name: &str) -> Option<Dynamic> {
    fn get<R: Record>(v: &Dynamic, name: &str) -> Option<Dynamic> {
        let record = v.read_lock::<R>()?;
        R::FIELDS
            .iter()
            .chain(R::COMPUTED)
            .any(|f| *f == name)
            .then(|| record.get(name))
    }
    get::<NodeConfig>(v, name)
        .or_else(|| get::<ClusterEndpoint>(v, name))
        .or_else(|| get::<NodeStatus>(v, name))
        .or_else(|| get::<Status>(v, name))
        .or_else(|| v.read_lock::<Map>()?.get(name).cloned())
}

fn map_key(key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// A friendly name for the type of a value, for error messages.
pub fn kind(v: &Dynamic) -> &'static str {
    if v.is_unit() {
        "()"
    } else if v.is_string() {
        "string"
    } else if v.is_int() {
        "integer"
    } else if v.is_float() {
        "float"
    } else if v.is_bool() {
        "bool"
    } else if v.is_char() {
        "char"
    } else if v.is_array() {
        "array"
    } else if v.is_map() {
        "map"
    } else if v.is_fnptr() {
        "function pointer"
    } else if v.is::<NodeConfig>() {
        "Supervisor::NodeConfig"
    } else if v.is::<ClusterEndpoint>() {
        "Supervisor::ClusterEndpoint"
    } else if v.is::<ClusterRole>() {
        "Supervisor::ClusterRole"
    } else if v.is::<NodeStatus>() {
        "Supervisor::NodeStatus"
    } else if v.is::<Status>() {
        "Supervisor::Status"
    } else {
        "another type"
    }
}

/// Type checks for one field of one record, with messages that name both.
struct Field<'a> {
    record: &'static str,
    name: &'a str,
}

impl Field<'_> {
    fn wrong(&self, expected: &str, v: &Dynamic) -> String {
        format!(
            "{}.{} must be {expected}, not {}",
            self.record,
            self.name,
            kind(v)
        )
    }

    fn string(&self, v: Dynamic) -> Result<String, String> {
        match v.clone().into_immutable_string() {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(self.wrong("a string", &v)),
        }
    }

    fn opt_string(&self, v: Dynamic) -> Result<Option<String>, String> {
        if v.is_unit() {
            return Ok(None);
        }
        match v.clone().into_immutable_string() {
            Ok(s) => Ok(Some(s.to_string())),
            Err(_) => Err(self.wrong("a string or ()", &v)),
        }
    }

    fn opt_bool(&self, v: Dynamic) -> Result<Option<bool>, String> {
        if v.is_unit() {
            return Ok(None);
        }
        v.as_bool()
            .map(Some)
            .map_err(|_| self.wrong("a bool or ()", &v))
    }

    fn opt_int(&self, v: Dynamic) -> Result<Option<i64>, String> {
        if v.is_unit() {
            return Ok(None);
        }
        v.as_int()
            .map(Some)
            .map_err(|_| self.wrong("an integer or ()", &v))
    }

    fn int(&self, v: Dynamic) -> Result<i64, String> {
        v.as_int().map_err(|_| self.wrong("an integer", &v))
    }

    /// Seconds as an integer or a float; `()` unsets.
    fn opt_seconds(&self, v: Dynamic) -> Result<Option<f64>, String> {
        let secs = if v.is_unit() {
            return Ok(None);
        } else if let Ok(i) = v.as_int() {
            i as f64
        } else if let Ok(f) = v.as_float() {
            f
        } else {
            return Err(self.wrong("a number of seconds or ()", &v));
        };
        seconds(secs).map_err(|e| format!("{}.{} {e}", self.record, self.name))?;
        Ok(Some(secs))
    }

    fn opt_float(&self, v: Dynamic) -> Result<Option<f64>, String> {
        if v.is_unit() {
            return Ok(None);
        }
        v.as_float()
            .or_else(|_| v.as_int().map(|i| i as f64))
            .map(Some)
            .map_err(|_| self.wrong("a number or ()", &v))
    }

    fn strings(&self, v: Dynamic) -> Result<Vec<String>, String> {
        let Some(array) = v.read_lock::<Array>().map(|a| a.clone()) else {
            return Err(self.wrong("an array of strings", &v));
        };
        array
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                item.clone()
                    .into_immutable_string()
                    .map(|s| s.to_string())
                    .map_err(|_| {
                        format!(
                            "{}.{}[{i}] must be a string, not {}",
                            self.record,
                            self.name,
                            kind(&item)
                        )
                    })
            })
            .collect()
    }

    fn opt_strings(&self, v: Dynamic) -> Result<Option<Vec<String>>, String> {
        if v.is_unit() {
            Ok(None)
        } else {
            self.strings(v).map(Some)
        }
    }

    fn string_map(&self, v: Dynamic) -> Result<BTreeMap<String, String>, String> {
        let Some(map) = v.read_lock::<Map>().map(|m| m.clone()) else {
            return Err(self.wrong("a map of strings", &v));
        };
        map.into_iter()
            .map(|(k, item)| {
                // Numbers and bools are accepted and written as text, as a shell would.
                let text = if item.is_string() || item.is_int() || item.is_float() || item.is_bool()
                {
                    Ok(item.to_string())
                } else {
                    Err(format!(
                        "{}.{}.{k} must be a string, not {}",
                        self.record,
                        self.name,
                        kind(&item)
                    ))
                };
                text.map(|t| (k.to_string(), t))
            })
            .collect()
    }

    fn cluster(&self, v: Dynamic) -> Result<BTreeMap<String, ClusterEndpoint>, String> {
        let Some(map) = v.read_lock::<Map>().map(|m| m.clone()) else {
            return Err(self.wrong("a map of Supervisor::ClusterEndpoint", &v));
        };
        map.into_iter()
            .map(|(k, item)| {
                let endpoint = if let Some(ep) = item.read_lock::<ClusterEndpoint>() {
                    ep.clone()
                } else if let Some(m) = item.read_lock::<Map>().map(|m| m.clone()) {
                    from_map::<ClusterEndpoint>(m)
                        .map_err(|e| format!("{}.{}.{k}: {e}", self.record, self.name))?
                } else {
                    return Err(format!(
                        "{}.{}.{k} must be a Supervisor::ClusterEndpoint or a map, not {}",
                        self.record,
                        self.name,
                        kind(&item)
                    ));
                };
                Ok((k.to_string(), endpoint))
            })
            .collect()
    }
}

fn opt<T: Into<Dynamic> + Clone>(v: &Option<T>) -> Dynamic {
    v.clone().map_or(Dynamic::UNIT, Into::into)
}

fn strings(v: &[String]) -> Dynamic {
    Dynamic::from_array(v.iter().map(|s| Dynamic::from(s.clone())).collect())
}

fn string_map(m: &BTreeMap<String, String>) -> Dynamic {
    Dynamic::from_map(
        m.iter()
            .map(|(k, v)| (k.into(), Dynamic::from(v.clone())))
            .collect(),
    )
}

impl Record for NodeConfig {
    const TYPE_NAME: &'static str = "Supervisor::NodeConfig";
    const FIELDS: &'static [&'static str] = &[
        "name",
        "interface",
        "pcap_file",
        "directory",
        "stdout_file",
        "stderr_file",
        "bare_mode",
        "addl_base_scripts",
        "addl_user_scripts",
        "scripts",
        "env",
        "cpu_affinity",
        "cluster",
        "command",
        "revival_delay",
        "revival_max_delay",
        "stop_timeout",
        "output_max_bytes",
        "output_backups",
        "max_restarts",
        "restart_window",
    ];
    const REQUIRED: &'static [&'static str] = &["name"];

    fn blank() -> Self {
        NodeConfig::default()
    }

    fn get(&self, field: &str) -> Dynamic {
        match field {
            "name" => self.name.clone().into(),
            "interface" => opt(&self.interface),
            "pcap_file" => opt(&self.pcap_file),
            "directory" => opt(&self.directory),
            "stdout_file" => opt(&self.stdout_file),
            "stderr_file" => opt(&self.stderr_file),
            "bare_mode" => opt(&self.bare_mode),
            "addl_base_scripts" => strings(&self.addl_base_scripts),
            "addl_user_scripts" => strings(&self.addl_user_scripts),
            "scripts" => strings(&self.scripts),
            "env" => string_map(&self.env),
            "cpu_affinity" => opt(&self.cpu_affinity.map(|c| c as INT)),
            "cluster" => Dynamic::from_map(
                self.cluster
                    .iter()
                    .map(|(k, ep)| (k.into(), Dynamic::from(ep.clone())))
                    .collect(),
            ),
            "command" => self.command.as_deref().map_or(Dynamic::UNIT, strings),
            "revival_delay" => opt(&self.revival_delay.map(|s| s as FLOAT)),
            "revival_max_delay" => opt(&self.revival_max_delay.map(|s| s as FLOAT)),
            "stop_timeout" => opt(&self.stop_timeout.map(|s| s as FLOAT)),
            "output_max_bytes" => opt(&self.output_max_bytes.map(|n| n as INT)),
            "output_backups" => opt(&self.output_backups.map(|n| n as INT)),
            "max_restarts" => opt(&self.max_restarts.map(|n| n as INT)),
            "restart_window" => opt(&self.restart_window.map(|s| s as FLOAT)),
            _ => Dynamic::UNIT,
        }
    }

    fn set(&mut self, field: &str, v: Dynamic) -> Result<(), String> {
        let f = Field {
            record: Self::TYPE_NAME,
            name: field,
        };
        match field {
            "name" => self.name = f.string(v)?,
            "interface" => self.interface = f.opt_string(v)?,
            "pcap_file" => self.pcap_file = f.opt_string(v)?,
            "directory" => self.directory = f.opt_string(v)?,
            "stdout_file" => self.stdout_file = f.opt_string(v)?,
            "stderr_file" => self.stderr_file = f.opt_string(v)?,
            "bare_mode" => self.bare_mode = f.opt_bool(v)?,
            "addl_base_scripts" => self.addl_base_scripts = f.strings(v)?,
            "addl_user_scripts" => self.addl_user_scripts = f.strings(v)?,
            "scripts" => self.scripts = f.strings(v)?,
            "env" => self.env = f.string_map(v)?,
            "cpu_affinity" => self.cpu_affinity = f.opt_int(v)?,
            "cluster" => self.cluster = f.cluster(v)?,
            "command" => self.command = f.opt_strings(v)?,
            "revival_delay" => self.revival_delay = f.opt_seconds(v)?,
            "revival_max_delay" => self.revival_max_delay = f.opt_seconds(v)?,
            "stop_timeout" => self.stop_timeout = f.opt_seconds(v)?,
            "output_max_bytes" => self.output_max_bytes = f.opt_int(v)?,
            "output_backups" => self.output_backups = f.opt_int(v)?,
            "max_restarts" => self.max_restarts = f.opt_int(v)?,
            "restart_window" => self.restart_window = f.opt_seconds(v)?,
            _ => return Err(unknown_field::<Self>(field)),
        }
        Ok(())
    }
}

impl Record for ClusterEndpoint {
    const TYPE_NAME: &'static str = "Supervisor::ClusterEndpoint";
    const FIELDS: &'static [&'static str] = &["role", "host", "p", "interface"];
    const REQUIRED: &'static [&'static str] = &["role", "host", "p"];

    fn blank() -> Self {
        ClusterEndpoint::default()
    }

    fn get(&self, field: &str) -> Dynamic {
        match field {
            "role" => Dynamic::from(self.role),
            "host" => self.host.clone().into(),
            "p" => self.p.to_string().into(),
            "interface" => opt(&self.interface),
            _ => Dynamic::UNIT,
        }
    }

    fn set(&mut self, field: &str, v: Dynamic) -> Result<(), String> {
        let f = Field {
            record: Self::TYPE_NAME,
            name: field,
        };
        match field {
            "role" => {
                self.role = if let Some(role) = v.read_lock::<ClusterRole>() {
                    *role
                } else if let Ok(text) = v.clone().into_immutable_string() {
                    ClusterRole::parse(&text).ok_or_else(|| {
                        format!(
                            "{}.role: unknown role '{text}' (one of NONE, LOGGER, MANAGER, PROXY, WORKER)",
                            Self::TYPE_NAME
                        )
                    })?
                } else {
                    return Err(f.wrong("a Supervisor::ClusterRole", &v));
                }
            }
            "host" => self.host = f.string(v)?,
            "p" => {
                self.p = if let Ok(n) = v.as_int() {
                    Port::from_int(n)
                } else if let Ok(text) = v.clone().into_immutable_string() {
                    Port::parse(&text)
                } else {
                    return Err(f.wrong("a port (\"10000/tcp\" or an integer)", &v));
                }
                .map_err(|e| format!("{}.p: {e}", Self::TYPE_NAME))?
            }
            "interface" => self.interface = f.opt_string(v)?,
            _ => return Err(unknown_field::<Self>(field)),
        }
        Ok(())
    }
}

impl Record for NodeStatus {
    const TYPE_NAME: &'static str = "Supervisor::NodeStatus";
    const FIELDS: &'static [&'static str] = &["node", "pid", "state", "restarts", "exit", "uptime"];
    const COMPUTED: &'static [&'static str] = &["exit_code", "exit_signal", "output"];

    fn blank() -> Self {
        NodeStatus::new(NodeConfig::default())
    }

    fn get(&self, field: &str) -> Dynamic {
        match field {
            "node" => Dynamic::from(self.node.clone()),
            "pid" => opt(&self.pid.map(|p| p as INT)),
            "state" => self.state.clone().into(),
            "restarts" => (self.restarts as INT).into(),
            "exit" => self.exit.map_or(Dynamic::UNIT, |e| e.to_string().into()),
            "uptime" => opt(&self.uptime.map(|u| u as FLOAT)),
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

    fn set(&mut self, field: &str, v: Dynamic) -> Result<(), String> {
        let f = Field {
            record: Self::TYPE_NAME,
            name: field,
        };
        match field {
            "node" => {
                self.node = v
                    .read_lock::<NodeConfig>()
                    .map(|c| c.clone())
                    .ok_or_else(|| f.wrong("a Supervisor::NodeConfig", &v))?
            }
            "pid" => self.pid = f.opt_int(v)?,
            "state" => self.state = f.string(v)?,
            "restarts" => self.restarts = f.int(v)?,
            "exit" if v.is_unit() => self.exit = None,
            "exit" => return Err(f.wrong("()", &v)),
            "uptime" => self.uptime = f.opt_float(v)?,
            _ => return Err(unknown_field::<Self>(field)),
        }
        Ok(())
    }
}

impl Record for Status {
    const TYPE_NAME: &'static str = "Supervisor::Status";
    const FIELDS: &'static [&'static str] = &["nodes"];

    fn blank() -> Self {
        Status::default()
    }

    fn get(&self, field: &str) -> Dynamic {
        match field {
            "nodes" => Dynamic::from_map(
                self.nodes
                    .iter()
                    .map(|(k, s)| (k.into(), Dynamic::from(s.clone())))
                    .collect(),
            ),
            _ => Dynamic::UNIT,
        }
    }

    fn set(&mut self, field: &str, v: Dynamic) -> Result<(), String> {
        match field {
            "nodes" => {
                let Some(map) = v.read_lock::<Map>().map(|m| m.clone()) else {
                    return Err(format!(
                        "{}.nodes must be a map, not {}",
                        Self::TYPE_NAME,
                        kind(&v)
                    ));
                };
                let mut nodes = BTreeMap::new();
                for (k, item) in map {
                    let status = item
                        .read_lock::<NodeStatus>()
                        .map(|s| s.clone())
                        .ok_or_else(|| {
                            format!(
                                "{}.nodes.{k} must be a Supervisor::NodeStatus, not {}",
                                Self::TYPE_NAME,
                                kind(&item)
                            )
                        })?;
                    nodes.insert(k.to_string(), status);
                }
                self.nodes = nodes;
                Ok(())
            }
            _ => Err(unknown_field::<Self>(field)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Dynamic)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect()
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let err = from_map::<NodeConfig>(map(&[("name", "w1".into()), ("dirctory", "x".into())]))
            .unwrap_err();
        assert!(
            err.starts_with(
                "Supervisor::NodeConfig has no field 'dirctory'; did you mean 'directory'?"
            ),
            "{err}"
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err =
            from_map::<NodeConfig>(map(&[("name", "w1".into()), ("cpu_affinity", "0".into())]))
                .unwrap_err();
        assert_eq!(
            err,
            "Supervisor::NodeConfig.cpu_affinity must be an integer or (), not string"
        );
        let err = from_map::<NodeConfig>(map(&[
            ("name", "w1".into()),
            ("scripts", Dynamic::from_array(vec![1.into()])),
        ]))
        .unwrap_err();
        assert_eq!(
            err,
            "Supervisor::NodeConfig.scripts[0] must be a string, not integer"
        );
        let err = from_map::<NodeConfig>(map(&[])).unwrap_err();
        assert_eq!(err, "Supervisor::NodeConfig needs field 'name'");
    }

    #[test]
    fn nested_endpoints_from_maps_or_records() {
        let ep = map(&[
            ("role", Dynamic::from(ClusterRole::Worker)),
            ("host", "127.0.0.1".into()),
            ("p", (10001 as INT).into()),
        ]);
        let cfg = from_map::<NodeConfig>(map(&[
            ("name", "w1".into()),
            (
                "cluster",
                Dynamic::from_map(map(&[("w1", Dynamic::from_map(ep))])),
            ),
        ]))
        .unwrap();
        assert_eq!(cfg.cluster["w1"].role, ClusterRole::Worker);
        assert_eq!(cfg.cluster["w1"].p.to_string(), "10001/tcp");
        let bad = map(&[
            ("role", "BOSS".into()),
            ("host", "h".into()),
            ("p", 1.into()),
        ]);
        let err = from_map::<ClusterEndpoint>(bad).unwrap_err();
        assert!(err.contains("unknown role 'BOSS'"), "{err}");
    }

    #[test]
    fn printing() {
        let mut cfg = NodeConfig::named("w1");
        cfg.scripts = vec!["a.rhai".into()];
        cfg.cpu_affinity = Some(1);
        assert_eq!(show(&cfg), "[name=w1, scripts=[a.rhai], cpu_affinity=1]");
        assert_eq!(
            debug(&cfg),
            r#"Supervisor::NodeConfig(#{name: "w1", scripts: ["a.rhai"], cpu_affinity: 1})"#
        );
    }

    #[test]
    fn fields_for_completion() {
        let mut cfg = NodeConfig::named("w1");
        cfg.cluster.insert("m".into(), ClusterEndpoint::default());
        let v = Dynamic::from(cfg);
        let names = field_names(&v).unwrap();
        assert!(names.contains(&"directory".to_string()), "{names:?}");
        let cluster = field(&v, "cluster").unwrap();
        assert_eq!(field_names(&cluster).unwrap(), vec!["m".to_string()]);
        let endpoint = field(&cluster, "m").unwrap();
        assert!(
            field_names(&endpoint)
                .unwrap()
                .contains(&"role".to_string())
        );
        assert!(field(&v, "nonsense").is_none());
        assert!(field_names(&Dynamic::from(3_i64)).is_none());
        let all = all_field_names();
        assert!(all.contains(&"restarts") && all.contains(&"p") && all.contains(&"nodes"));
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("directory", "dirctory"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
