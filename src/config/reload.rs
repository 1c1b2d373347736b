//! What a reload reports: the plan, one line per node (`+ w3`, `- w2`,
//! `~ w1 (cpu_affinity: 1 -> 2)`, `= manager`), and the field-by-field difference
//! between two configurations of a node that it shows.
//!
//! These are plain data, as they travel in JSON (`ctl reload --json`) and as `ctl`, the
//! REPL and the log print them. Making the plan and carrying it out is the
//! supervisor's (`supervisor::reload`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Fields, NodeConfig};

/// What a reload does to one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// `+`: the new scripts create it and it does not exist: it is created.
    Create,
    /// `-`: the old scripts created it and the new ones do not: it is destroyed.
    Destroy,
    /// `~`: its configuration differs: it is restarted with the new one.
    Restart,
    /// `=`: the same configuration: it is left running as it is.
    Keep,
}

impl Change {
    /// The mark at the start of a plan line.
    pub fn mark(self) -> char {
        match self {
            Change::Create => '+',
            Change::Destroy => '-',
            Change::Restart => '~',
            Change::Keep => '=',
        }
    }
}

/// One field (or one entry of a map field, `env.LEVEL`) that differs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The field, with the keys that lead into maps: `cpu_affinity`, `env.LEVEL`,
    /// `cluster.w1.p`.
    pub field: String,
    /// The value before, as JSON; `null` where it was unset (or the entry absent).
    pub old: Value,
    /// The value after, likewise.
    pub new: Value,
}

/// One line of the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanLine {
    /// The node.
    pub node: String,
    /// What happens to it.
    pub change: Change,
    /// For `restart`: what differs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

/// What a reload did, or with `dry_run` would do.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Nothing was changed: the plan is only shown.
    pub dry_run: bool,
    /// One line per node: the nodes the new scripts create, in their order, then the
    /// nodes they no longer create, in stop order.
    pub nodes: Vec<PlanLine>,
    /// The creates of the new scripts that were refused, as the scripts were told
    /// (`s.rhai:7:5: node with name 'w1' already exists`); those nodes are not in the
    /// plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// What could not be carried out (a new node whose process would not start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl ReloadReport {
    /// How many lines have `change`.
    pub fn count(&self, change: Change) -> usize {
        self.nodes.iter().filter(|l| l.change == change).count()
    }

    /// `1 created, 0 destroyed, 1 restarted, 997 unchanged`.
    pub fn summary(&self) -> String {
        format!(
            "{} created, {} destroyed, {} restarted, {} unchanged",
            self.count(Change::Create),
            self.count(Change::Destroy),
            self.count(Change::Restart),
            self.count(Change::Keep)
        )
    }
}

impl fmt::Display for PlanLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.change.mark(), self.node)?;
        if !self.fields.is_empty() {
            let changes: Vec<String> = self
                .fields
                .iter()
                .map(|c| format!("{}: {} -> {}", c.field, compact(&c.old), compact(&c.new)))
                .collect();
            write!(f, " ({})", changes.join(", "))?;
        }
        Ok(())
    }
}

/// The fields of `new` that differ from `old`, in the record's field order. A map
/// field (`env`, `cluster`) is compared entry by entry, and so are the maps inside it,
/// so a change to one endpoint of a large layout is one short entry; any other value
/// (arrays among them) is shown whole.
pub fn changes(old: &NodeConfig, new: &NodeConfig) -> Vec<FieldChange> {
    if old == new {
        return Vec::new();
    }
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        // A NodeConfig always serializes to an object (string keys only).
        return Vec::new();
    };
    let mut found = Vec::new();
    let empty = NodeConfig::default();
    for field in NodeConfig::FIELDS {
        // An empty list or map is left out of JSON, as an unset field is.
        let absent = || match empty.get(field) {
            Some(value) if value.is_array() => Value::Array(Vec::new()),
            Some(value) if value.is_map() => Value::Object(Default::default()),
            _ => Value::Null,
        };
        let before = old.get(*field).cloned().unwrap_or_else(absent);
        let after = new.get(*field).cloned().unwrap_or_else(absent);
        differences(field, &before, &after, &mut found);
    }
    found
}

/// Adds to `found` how `after` differs from `before`, at `path`.
fn differences(path: &str, before: &Value, after: &Value, found: &mut Vec<FieldChange>) {
    if before == after {
        return;
    }
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            // Both maps: entry by entry, in key order (serde_json's maps are sorted).
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                let here = format!("{path}{}", key_step(key));
                differences(
                    &here,
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    found,
                );
            }
        }
        _ => found.push(FieldChange {
            field: path.to_string(),
            old: before.clone(),
            new: after.clone(),
        }),
    }
}

/// `.LEVEL` for a key that reads as a name, `["a b"]` for any other.
fn key_step(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!(".{key}")
    } else {
        format!("[{}]", Value::String(key.to_string()))
    }
}

/// A value on one line, written as a script would write it: `()` for unset, strings
/// quoted, `[1, 2]`, `#{role: "WORKER", p: "10000/tcp"}`.
pub fn compact(value: &Value) -> String {
    let mut out = String::new();
    write_compact(value, &mut out);
    out
}

fn write_compact(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("()"),
        Value::Bool(_) | Value::Number(_) | Value::String(_) => out.push_str(&value.to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_compact(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push_str("#{");
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                match key_step(key).strip_prefix('.') {
                    Some(name) if !name.contains('-') => out.push_str(name),
                    _ => out.push_str(&Value::String(key.clone()).to_string()),
                }
                out.push_str(": ");
                write_compact(item, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterEndpoint, ClusterRole, Port};
    use serde_json::json;

    fn worker() -> NodeConfig {
        let mut config = NodeConfig::named("w1");
        config.command = Some(vec!["sleep".into(), "60".into()]);
        config
    }

    fn shown(old: &NodeConfig, new: &NodeConfig) -> String {
        PlanLine {
            node: new.name.clone(),
            change: Change::Restart,
            fields: changes(old, new),
        }
        .to_string()
    }

    #[test]
    fn the_same_configuration_has_no_changes() {
        assert!(changes(&worker(), &worker()).is_empty());
    }

    #[test]
    fn scalar_fields_show_old_and_new() {
        let mut old = worker();
        old.cpu_affinity = Some(1);
        let mut new = old.clone();
        new.cpu_affinity = Some(2);
        assert_eq!(
            changes(&old, &new),
            [FieldChange {
                field: "cpu_affinity".into(),
                old: json!(1),
                new: json!(2)
            }]
        );
        assert_eq!(shown(&old, &new), "~ w1 (cpu_affinity: 1 -> 2)");
        // set and unset
        new.cpu_affinity = None;
        new.directory = Some("w1".into());
        new.stop_timeout = Some(2.5);
        assert_eq!(
            shown(&old, &new),
            "~ w1 (directory: () -> \"w1\", cpu_affinity: 1 -> (), stop_timeout: () -> 2.5)"
        );
    }

    #[test]
    fn arrays_are_shown_whole() {
        let old = worker();
        let mut new = worker();
        new.command = Some(vec!["sleep".into(), "61".into()]);
        new.scripts = vec!["a.zeek".into()];
        assert_eq!(
            shown(&old, &new),
            "~ w1 (scripts: [] -> [\"a.zeek\"], command: [\"sleep\", \"60\"] -> [\"sleep\", \"61\"])"
        );
    }

    #[test]
    fn maps_are_compared_entry_by_entry() {
        let mut old = worker();
        old.env.insert("LEVEL".into(), "1".into());
        old.env.insert("KEEP".into(), "x".into());
        old.env.insert("GONE".into(), "y".into());
        let mut new = worker();
        new.env.insert("LEVEL".into(), "2".into());
        new.env.insert("KEEP".into(), "x".into());
        new.env.insert("a b".into(), "z".into());
        assert_eq!(
            changes(&old, &new),
            [
                FieldChange {
                    field: "env.GONE".into(),
                    old: json!("y"),
                    new: Value::Null
                },
                FieldChange {
                    field: "env.LEVEL".into(),
                    old: json!("1"),
                    new: json!("2")
                },
                FieldChange {
                    field: "env[\"a b\"]".into(),
                    old: Value::Null,
                    new: json!("z")
                },
            ]
        );
    }

    #[test]
    fn a_layout_change_names_the_endpoint_and_its_field() {
        let endpoint = |role, port| ClusterEndpoint {
            role,
            host: "127.0.0.1".into(),
            p: Port::tcp(port),
            interface: None,
        };
        let mut old = worker();
        old.cluster
            .insert("manager".into(), endpoint(ClusterRole::Manager, 10000));
        old.cluster
            .insert("w1".into(), endpoint(ClusterRole::Worker, 10001));
        let mut new = old.clone();
        new.cluster.get_mut("w1").unwrap().p = Port::tcp(10011);
        new.cluster
            .insert("w2".into(), endpoint(ClusterRole::Worker, 10002));
        assert_eq!(
            shown(&old, &new),
            "~ w1 (cluster.w1.p: \"10001/tcp\" -> \"10011/tcp\", cluster.w2: () -> #{host: \"127.0.0.1\", p: \"10002/tcp\", role: \"WORKER\"})"
        );
    }

    #[test]
    fn a_value_that_changes_kind_is_shown_whole() {
        let mut old = worker();
        old.ready = Some(crate::config::Ready::Notify);
        let mut new = worker();
        new.ready = serde_json::from_value(json!({"tcp": 8080})).unwrap();
        let fields = changes(&old, &new);
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].field, "ready");
        assert_eq!(fields[0].old, json!("notify"));
        assert!(fields[0].new.is_object(), "{:?}", fields[0].new);
    }

    #[test]
    fn lines_and_reports_print_and_travel() {
        let keep = PlanLine {
            node: "manager".into(),
            change: Change::Keep,
            fields: Vec::new(),
        };
        assert_eq!(keep.to_string(), "= manager");
        let report = ReloadReport {
            dry_run: true,
            nodes: vec![
                PlanLine {
                    node: "w3".into(),
                    change: Change::Create,
                    fields: Vec::new(),
                },
                keep,
                PlanLine {
                    node: "w2".into(),
                    change: Change::Destroy,
                    fields: Vec::new(),
                },
            ],
            refused: vec!["s.rhai:3:1: node with name 'w1' already exists".into()],
            errors: Vec::new(),
        };
        let text: Vec<String> = report.nodes.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["+ w3", "= manager", "- w2"]);
        assert_eq!(
            report.summary(),
            "1 created, 1 destroyed, 0 restarted, 1 unchanged"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["nodes"][0], json!({"node": "w3", "change": "create"}));
        assert!(json.get("errors").is_none());
        assert_eq!(
            serde_json::from_value::<ReloadReport>(json).unwrap(),
            report
        );
        assert_eq!(compact(&json!({"a-b": [1, null]})), "#{\"a-b\": [1, ()]}");
    }
}
