//! The record types as Rhai custom types: `NodeConfig`, `ClusterEndpoint`, `NodeStatus`,
//! `Status`, and the `ClusterRole` enum.
//!
//! Each record lists its fields once (its `record!` table in `config`); from that table
//! come the property getters and setters registered here, construction from an object
//! map (`Record::from_map`), printing, and the names completion offers. An unset
//! optional field reads as `()`, and assigning `()` unsets it.

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map};

pub use crate::config::Record;
pub use crate::config::record::kind;
use crate::config::{ClusterEndpoint, ClusterRole, Fields, NodeConfig, NodeStatus, Status};

/// Builds a record from an object map.
pub fn from_map<R: Record>(map: Map) -> Result<R, String> {
    R::from_map(map)
}

/// Registers `R`'s name, properties and printing on `engine`.
pub fn register<R: Record>(engine: &mut Engine) {
    engine.register_type_with_name::<R>(R::TYPE_NAME);
    for &field in R::FIELDS.iter().chain(R::COMPUTED) {
        engine.register_get(field, move |r: &mut R| r.read(field));
    }
    for &field in R::FIELDS {
        engine.register_set(field, move |r: &mut R, value: Dynamic| {
            r.write(field, value)
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
            let v = record.read(f);
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
            let v = record.read(f);
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
            .then(|| record.read(name))
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
            ("p", (10001 as rhai::INT).into()),
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
}
