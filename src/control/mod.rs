//! Control of a running supervisor over a Unix domain socket: Zeek's
//! `SupervisorControl` events (`create_request`, `status_request`, ...) and what
//! supervisord users know as `supervisorctl`.
//!
//! This module owns the protocol: the requests (`Request`, `Command`), how a request
//! line is decoded (`decode`, a pure function, also driven by the fuzz target in
//! `fuzz/`), and the responses (`Response`). One JSON object per line each way; every
//! response echoes the `id` of its request. `docs/reference/control.md` is the
//! reference for other programs.
//!
//! - `server` is the control thread of a supervisor (`Runtime::listen`): one thread
//!   that accepts and reads every client with `poll`, hands each complete request to the
//!   loop thread as an `Event::Task`, and writes the answer back. The loop never waits
//!   for a client.
//! - `client` is the other end, for `ctl` and for programs in Rust. The REPL's
//!   `--attach` uses it:
//!
//! ```no_run
//! use rhai_supervisor::control::Client;
//!
//! // `--attach PATH`, else $RHAI_SUPERVISOR_SOCKET, else ./rhai-supervisor.sock
//! let attach: Option<std::path::PathBuf> = None;
//! let mut client = Client::connect(rhai_supervisor::control::socket_path(attach.as_deref()))?;
//! let evaluation = client.eval("40 + 2")?;
//! print!("{}", evaluation.output); // what the code printed
//! match evaluation.value {
//!     Ok(value) => println!("{value}"),      // `42`, rendered as the REPL shows values
//!     Err(error) => eprintln!("{error}"),    // a script error, with its position
//! }
//! # Ok::<(), rhai_supervisor::control::ClientError>(())
//! ```
//!
//! - `show` lays answers out for a person (the status table of `ctl` and the REPL).
//! - `ssh` reaches the supervisor of another host through the OpenSSH client, and
//!   `relay` is what runs there (`ctl __relay`): the socket over ssh's stdin and
//!   stdout, for `ctl --ssh` and `repl --attach --ssh`.
//!
//! Most requests get one response. `follow` gets a stream: its response first, then
//! `StreamEvent` lines (items, a count of missed items, the end) with the same `id`,
//! until the stream ends or the client hangs up. The loop publishes into a bounded
//! queue per follower (`crate::feed`), and the control thread writes from it, so a
//! follower that does not keep up loses items (and is told how many) instead of
//! slowing the supervisor; one that takes nothing for `write_timeout` is disconnected.

pub mod client;
mod handle;
pub mod relay;
pub mod server;
pub mod show;
pub mod ssh;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::NodeConfig;

pub use client::{Client, ClientError, Connection, Evaluation, Stream};
pub use server::{Limits, ListenError, Server};

pub use crate::config::{DEFAULT_SOCKET, SOCKET_ENV, socket_path};

/// The longest request line the supervisor reads (without its newline).
pub const MAX_LINE: usize = 1024 * 1024;

/// The commands, as they are spelled in `cmd`.
pub const COMMANDS: &[&str] = &[
    "create", "status", "restart", "destroy", "signal", "stop", "tail", "eval", "follow", "reload",
];

/// The kinds of stream a client can `follow`, as they are spelled in `topic`.
pub const TOPICS: &[&str] = &["output", "events"];

/// The `state` in the answer to `create` for a node that belongs to another host (its
/// own endpoint names that host): it was not started here.
pub const ELSEWHERE: &str = "elsewhere";

/// The refusal of a command for a node that does not exist. `ctl --ssh` recognises it
/// in the answers of the hosts a node does not run on.
pub fn no_such_node(name: &str) -> String {
    format!("node with name '{name}' does not exist")
}

/// One request: what to do, and the `id` its response will carry.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Any JSON value chosen by the client; `null` when the request had none.
    pub id: Value,
    /// What to do.
    pub command: Command,
}

/// What a client can ask of the supervisor.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `Supervisor::create(config)` (boxed: a config is large next to the others).
    Create(Box<NodeConfig>),
    /// `Supervisor::status(name)`; `None` for every node. With `usage`, every node's
    /// status has what its processes use (`cpu`, `memory`), which costs a look at
    /// /proc per node; one node's has it anyway.
    Status {
        /// The node, or `None` for every node.
        node: Option<String>,
        /// Add every node's usage.
        usage: bool,
    },
    /// The status of these nodes (those that exist), with their usage and without
    /// their output: what a view samples of the nodes it shows (`status` with `nodes`).
    StatusOf(Vec<String>),
    /// `Supervisor::restart`.
    Restart(Target),
    /// `Supervisor::destroy`.
    Destroy(Target),
    /// `Supervisor::signal`: a signal (by name or number) to the main process.
    Signal {
        /// The node, or every node.
        target: Target,
        /// As written: `HUP`, `SIGHUP`, `1`.
        signal: String,
    },
    /// `terminate()`: stop every node, run `zeek_done()`, exit.
    Stop,
    /// The last lines of a node's output; at most `lines` of them when given.
    Tail {
        /// The node.
        node: String,
        /// At most this many, the newest.
        lines: Option<usize>,
    },
    /// Run Rhai code in the supervisor's engine, as a REPL line.
    Eval(String),
    /// Follow a stream: a first response, then the stream's lines (`StreamEvent`).
    Follow(Topic),
    /// Read the command-line scripts again and apply the difference (answered once it
    /// is applied); with `dry_run`, only say what would change.
    Reload {
        /// Change nothing: only the plan.
        dry_run: bool,
    },
}

/// What a `follow` request follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topic {
    /// A node's output: the response has its kept tail (as `tail`; at most `lines`
    /// lines when given), then each new line is an item
    /// `{"stream": "stdout" or "stderr", "line": TEXT}`, until the node is destroyed.
    Output {
        /// The node.
        node: String,
        /// At most this many lines of the kept tail, the newest.
        lines: Option<usize>,
    },
    /// The supervisor's events: the response has the status of every node (as
    /// `status`), then each change of a node is an item in the form of
    /// `config::Event`, until the supervisor stops.
    Events,
}

impl Topic {
    /// The name used in `topic`.
    pub fn name(&self) -> &'static str {
        match self {
            Topic::Output { .. } => "output",
            Topic::Events => "events",
        }
    }
}

/// The nodes a `restart` or `destroy` is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The node of this name.
    Node(String),
    /// Every node.
    All,
}

impl Command {
    /// `status` of one node or (`None`) of every node, without every node's usage.
    pub fn status(node: Option<String>) -> Command {
        Command::Status { node, usage: false }
    }

    /// The name used in `cmd`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create(_) => "create",
            Command::Status { .. } | Command::StatusOf(_) => "status",
            Command::Restart(_) => "restart",
            Command::Destroy(_) => "destroy",
            Command::Signal { .. } => "signal",
            Command::Stop => "stop",
            Command::Tail { .. } => "tail",
            Command::Eval(_) => "eval",
            Command::Follow(_) => "follow",
            Command::Reload { .. } => "reload",
        }
    }
}

/// A request line that cannot be served, with the `id` to answer it under (`null` when
/// the line had none, or was not a JSON object).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    /// The id to answer under.
    pub id: Value,
    /// Why the line cannot be served.
    pub error: String,
}

/// Decodes one request line (without its newline). Never panics, whatever the bytes.
pub fn decode(line: &[u8]) -> Result<Request, Rejected> {
    let reject = |id: &Value, error: String| Rejected {
        id: id.clone(),
        error,
    };
    if line.len() > MAX_LINE {
        return Err(reject(&Value::Null, too_long()));
    }
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| reject(&Value::Null, format!("the request is not valid JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(reject(
            &Value::Null,
            format!("a request must be a JSON object, not {}", kind(&value)),
        ));
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    let command = decode_command(object).map_err(|e| reject(&id, e))?;
    Ok(Request { id, command })
}

/// The error for a line over `MAX_LINE`.
pub fn too_long() -> String {
    format!("the request is longer than {} bytes (MAX_LINE)", MAX_LINE)
}

fn decode_command(mut object: Map<String, Value>) -> Result<Command, String> {
    let cmd = match object.remove("cmd") {
        Some(Value::String(cmd)) => cmd,
        Some(other) => return Err(format!("'cmd' must be a string, not {}", kind(&other))),
        None => {
            return Err(format!(
                "the request has no 'cmd' (one of: {})",
                COMMANDS.join(", ")
            ));
        }
    };
    let mut fields = Fields {
        cmd: &cmd,
        object,
        allowed: &[],
    };
    let command = match cmd.as_str() {
        "create" => {
            fields.allowed = &["config"];
            let config = match fields.take("config") {
                Some(config @ Value::Object(_)) => decode_config(config)?,
                Some(other) => {
                    return Err(format!(
                        "'config' must be an object (a NodeConfig), not {}",
                        kind(&other)
                    ));
                }
                None => return Err("create needs 'config' (a NodeConfig object)".into()),
            };
            Command::Create(Box::new(config))
        }
        "status" => {
            fields.allowed = &["node", "nodes", "usage"];
            let node = fields.string("node")?.filter(|n| !n.is_empty());
            let usage = fields.boolean("usage")?.unwrap_or(false);
            match (node, fields.strings("nodes")?) {
                (Some(_), Some(_)) => return Err("status takes 'node' or 'nodes', not both".into()),
                (node, None) => Command::Status { node, usage },
                (None, Some(nodes)) => Command::StatusOf(nodes),
            }
        }
        "restart" | "destroy" | "signal" => {
            fields.allowed = if cmd == "signal" {
                &["node", "all", "signal"]
            } else {
                &["node", "all"]
            };
            let node = fields.string("node")?;
            let all = fields.boolean("all")?.unwrap_or(false);
            let target = match (node, all) {
                (Some(_), true) => {
                    return Err(format!("{cmd} takes 'node' or 'all', not both"));
                }
                (Some(node), false) if node.is_empty() => {
                    return Err(format!(
                        "'node' must not be empty (to {cmd} every node, send \"all\": true)"
                    ));
                }
                (Some(node), false) => Target::Node(node),
                (None, true) => Target::All,
                (None, false) => {
                    return Err(format!("{cmd} needs 'node' (a node name) or \"all\": true"));
                }
            };
            match cmd.as_str() {
                "restart" => Command::Restart(target),
                "destroy" => Command::Destroy(target),
                _ => {
                    let signal = fields
                        .string("signal")?
                        .ok_or("signal needs 'signal' (a name such as \"HUP\", or a number)")?;
                    if crate::config::SignalName::lookup(&signal).is_none() {
                        return Err(format!(
                            "unknown signal '{signal}' (a name such as \"HUP\" or \"SIGUSR1\", or a number)"
                        ));
                    }
                    Command::Signal { target, signal }
                }
            }
        }
        "stop" => Command::Stop,
        "tail" => {
            fields.allowed = &["node", "lines"];
            let node = fields
                .string("node")?
                .ok_or("tail needs 'node' (a node name)")?;
            let lines = fields.count("lines")?;
            Command::Tail { node, lines }
        }
        "follow" => {
            fields.allowed = &["topic", "node", "lines"];
            let topic = fields
                .string("topic")?
                .ok_or_else(|| format!("follow needs 'topic' (one of: {})", TOPICS.join(", ")))?;
            match topic.as_str() {
                "output" => {
                    let node = fields
                        .string("node")?
                        .ok_or("follow of 'output' needs 'node' (a node name)")?;
                    let lines = fields.count("lines")?;
                    Command::Follow(Topic::Output { node, lines })
                }
                "events" => {
                    fields.allowed = &["topic"];
                    Command::Follow(Topic::Events)
                }
                _ => {
                    return Err(format!(
                        "unknown topic '{topic}' (one of: {})",
                        TOPICS.join(", ")
                    ));
                }
            }
        }
        "eval" => {
            fields.allowed = &["code"];
            let code = fields
                .string("code")?
                .ok_or("eval needs 'code' (Rhai source text)")?;
            Command::Eval(code)
        }
        "reload" => {
            fields.allowed = &["dry_run"];
            Command::Reload {
                dry_run: fields.boolean("dry_run")?.unwrap_or(false),
            }
        }
        _ => {
            return Err(format!(
                "unknown command '{cmd}' (one of: {})",
                COMMANDS.join(", ")
            ));
        }
    };
    fields.finish()?;
    Ok(command)
}

/// A `NodeConfig` from JSON, with the same fields as the script API.
pub fn decode_config(config: Value) -> Result<NodeConfig, String> {
    serde_json::from_value(config).map_err(|e| format!("invalid node configuration: {e}"))
}

/// The fields of one request object, taken one by one; whatever is left is an error.
struct Fields<'a> {
    cmd: &'a str,
    object: Map<String, Value>,
    allowed: &'static [&'static str],
}

impl Fields<'_> {
    /// A field's value; an explicit `null` counts as absent.
    fn take(&mut self, key: &str) -> Option<Value> {
        self.object.remove(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("'{key}' must be a string, not {}", kind(&other))),
        }
    }

    /// An array of strings.
    fn strings(&mut self, key: &str) -> Result<Option<Vec<String>>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    other => Err(format!(
                        "'{key}' must be an array of strings, not of {}",
                        kind(&other)
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(format!(
                "'{key}' must be an array of strings, not {}",
                kind(&other)
            )),
        }
    }

    fn boolean(&mut self, key: &str) -> Result<Option<bool>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(format!(
                "'{key}' must be true or false, not {}",
                kind(&other)
            )),
        }
    }

    /// A whole number >= 0.
    fn count(&mut self, key: &str) -> Result<Option<usize>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                Ok(Some(n.as_u64().map_or(usize::MAX, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                })))
            }
            Some(other) => Err(format!(
                "'{key}' must be a whole number >= 0, not {}",
                describe(&other)
            )),
        }
    }

    fn finish(self) -> Result<(), String> {
        let Some(key) = self.object.keys().next() else {
            return Ok(());
        };
        let expected = if self.allowed.is_empty() {
            "it takes no fields besides 'id' and 'cmd'".to_string()
        } else {
            format!("fields: id, cmd, {}", self.allowed.join(", "))
        };
        Err(format!(
            "unknown field '{key}' for command '{}' ({expected})",
            self.cmd
        ))
    }
}

/// `a string`, `a number`: the kind of a JSON value, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A number shows itself, anything else its kind.
fn describe(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

impl Request {
    /// A request with this id.
    pub fn new(id: impl Into<Value>, command: Command) -> Request {
        Request {
            id: id.into(),
            command,
        }
    }

    /// The request as one JSON object, the form `decode` reads.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("id".into(), self.id.clone());
        object.insert("cmd".into(), self.command.name().into());
        match &self.command {
            Command::Create(config) => {
                // A NodeConfig always serializes (string keys, no custom serializers that fail).
                let config = serde_json::to_value(config).unwrap_or(Value::Null);
                object.insert("config".into(), config);
            }
            Command::Status { node, usage } => {
                if let Some(node) = node {
                    object.insert("node".into(), node.clone().into());
                }
                if *usage {
                    object.insert("usage".into(), true.into());
                }
            }
            Command::StatusOf(nodes) => {
                object.insert("nodes".into(), nodes.clone().into());
            }
            Command::Restart(target)
            | Command::Destroy(target)
            | Command::Signal { target, .. } => {
                match target {
                    Target::Node(node) => {
                        object.insert("node".into(), node.clone().into());
                    }
                    Target::All => {
                        object.insert("all".into(), true.into());
                    }
                }
                if let Command::Signal { signal, .. } = &self.command {
                    object.insert("signal".into(), signal.clone().into());
                }
            }
            Command::Stop => {}
            Command::Tail { node, lines } => {
                object.insert("node".into(), node.clone().into());
                if let Some(lines) = lines {
                    object.insert("lines".into(), (*lines as u64).into());
                }
            }
            Command::Eval(code) => {
                object.insert("code".into(), code.clone().into());
            }
            Command::Follow(topic) => {
                object.insert("topic".into(), topic.name().into());
                match topic {
                    Topic::Output { node, lines } => {
                        object.insert("node".into(), node.clone().into());
                        if let Some(lines) = lines {
                            object.insert("lines".into(), (*lines as u64).into());
                        }
                    }
                    Topic::Events => {}
                }
            }
            Command::Reload { dry_run } => {
                if *dry_run {
                    object.insert("dry_run".into(), true.into());
                }
            }
        }
        Value::Object(object)
    }
}

/// The answer to one request.
///
/// `ok: true` comes with `result` (`null` for `stop`); `ok: false` with `error`. An
/// `eval` answer also has `output`: what the code printed, in either case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id, echoed.
    pub id: Value,
    /// Whether the supervisor did what was asked.
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The answer, when `ok`.
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Why not, when not `ok`.
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// What an `eval` printed.
    pub output: Option<String>,
    /// The result already encoded as JSON, for an answer too big to build as a `Value`
    /// first (the status of every node): `to_line` writes it as `result`.
    #[serde(skip)]
    pub(crate) encoded: Option<String>,
}

impl Response {
    /// A successful answer.
    pub fn ok(id: Value, result: Value) -> Response {
        Response {
            id,
            ok: true,
            result: Some(result),
            error: None,
            output: None,
            encoded: None,
        }
    }

    /// A successful answer whose result is already JSON text.
    pub(crate) fn ok_encoded(id: Value, result: String) -> Response {
        Response {
            id,
            ok: true,
            result: None,
            error: None,
            output: None,
            encoded: Some(result),
        }
    }

    /// A refusal.
    pub fn error(id: Value, error: impl Into<String>) -> Response {
        Response {
            id,
            ok: false,
            result: None,
            error: Some(error.into()),
            output: None,
            encoded: None,
        }
    }

    /// Adds what the code printed.
    pub fn with_output(mut self, output: String) -> Response {
        self.output = Some(output);
        self
    }

    /// The response as one line of JSON, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        if let Some(result) = &self.encoded {
            let mut line = Vec::with_capacity(result.len() + 40);
            line.extend_from_slice(b"{\"id\":");
            line.extend_from_slice(self.id.to_string().as_bytes());
            line.extend_from_slice(b",\"ok\":true,\"result\":");
            line.extend_from_slice(result.as_bytes());
            line.extend_from_slice(b"}\n");
            return line;
        }
        let mut line = serde_json::to_vec(self).unwrap_or_else(|e| {
            // Only a value with non-string map keys fails to serialize; say so in-band.
            let fallback =
                Response::error(self.id.clone(), format!("cannot encode the response: {e}"));
            serde_json::to_vec(&fallback).unwrap_or_default()
        });
        line.push(b'\n');
        line
    }
}

/// A line of a stream, after the response to its `follow`: `{"id": ID, "item": ...}`,
/// `{"id": ID, "missed": N}` or `{"id": ID, "end": REASON}`. (Responses have `ok`; stream
/// lines do not.)
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// One item of the stream (for `output`: `{"stream": ..., "line": ...}`).
    Item(Value),
    /// This many items were left out here: the client did not read fast enough.
    Missed(u64),
    /// The stream is over (the node was destroyed, the supervisor is stopping).
    End(String),
}

/// `{"id": ID, "KEY": VALUE}` and a newline, `id` first (by hand: serde_json's maps sort
/// their keys).
pub(crate) fn stream_line(id: &Value, key: &str, value: &dyn std::fmt::Display) -> Vec<u8> {
    format!("{{\"id\":{id},\"{key}\":{value}}}\n").into_bytes()
}

impl StreamEvent {
    /// The line for the stream of request `id`, newline included.
    pub fn to_line(&self, id: &Value) -> Vec<u8> {
        match self {
            StreamEvent::Item(item) => stream_line(id, "item", item),
            StreamEvent::Missed(n) => stream_line(id, "missed", &Value::from(*n)),
            StreamEvent::End(reason) => stream_line(id, "end", &Value::from(reason.as_str())),
        }
    }

    /// Reads a stream line: its id and event.
    pub fn from_line(line: &[u8]) -> Result<(Value, StreamEvent), String> {
        let value: Value = serde_json::from_slice(line)
            .map_err(|e| format!("a stream line is not valid JSON: {e}"))?;
        let Value::Object(mut object) = value else {
            return Err("a stream line must be a JSON object".into());
        };
        let id = object.remove("id").unwrap_or(Value::Null);
        let event = if let Some(item) = object.remove("item") {
            StreamEvent::Item(item)
        } else if let Some(missed) = object.remove("missed") {
            StreamEvent::Missed(missed.as_u64().ok_or("'missed' must be a whole number")?)
        } else if let Some(end) = object.remove("end") {
            StreamEvent::End(end.as_str().unwrap_or_default().to_string())
        } else {
            return Err("a stream line needs 'item', 'missed' or 'end'".into());
        };
        Ok((id, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Request {
        decode(line.as_bytes()).unwrap_or_else(|r| panic!("{line}: {}", r.error))
    }

    fn err(line: &str) -> Rejected {
        match decode(line.as_bytes()) {
            Ok(r) => panic!("{line} decoded as {r:?}"),
            Err(r) => r,
        }
    }

    #[test]
    fn every_command_decodes() {
        assert_eq!(
            ok(r#"{"id":1,"cmd":"status"}"#),
            Request::new(1, Command::status(None))
        );
        assert_eq!(
            ok(r#"{"id":"a","cmd":"status","node":"w1"}"#).command,
            Command::status(Some("w1".into()))
        );
        assert_eq!(
            ok(r#"{"cmd":"status","node":""}"#).command,
            Command::status(None)
        );
        assert_eq!(
            ok(r#"{"cmd":"status","nodes":["a","b"]}"#).command,
            Command::StatusOf(vec!["a".into(), "b".into()])
        );
        assert!(
            err(r#"{"cmd":"status","nodes":["a",1]}"#)
                .error
                .contains("array of strings")
        );
        assert!(
            err(r#"{"cmd":"status","node":"a","nodes":[]}"#)
                .error
                .contains("not both")
        );
        assert_eq!(ok(r#"{"cmd":"status"}"#).id, Value::Null);
        assert_eq!(
            ok(r#"{"cmd":"destroy","all":true}"#).command,
            Command::Destroy(Target::All)
        );
        assert_eq!(
            ok(r#"{"cmd":"restart","node":"w1"}"#).command,
            Command::Restart(Target::Node("w1".into()))
        );
        assert_eq!(
            ok(r#"{"cmd":"stop","id":[1,2]}"#).id,
            serde_json::json!([1, 2])
        );
        assert_eq!(
            ok(r#"{"cmd":"tail","node":"w1","lines":5}"#).command,
            Command::Tail {
                node: "w1".into(),
                lines: Some(5)
            }
        );
        assert_eq!(
            ok(r#"{"cmd":"eval","code":"1 + 1"}"#).command,
            Command::Eval("1 + 1".into())
        );
        assert_eq!(
            ok(r#"{"cmd":"reload"}"#).command,
            Command::Reload { dry_run: false }
        );
        assert_eq!(
            ok(r#"{"cmd":"reload","dry_run":true}"#).command,
            Command::Reload { dry_run: true }
        );
        assert!(
            err(r#"{"cmd":"reload","dry_run":"yes"}"#)
                .error
                .contains("true or false")
        );
        assert!(
            err(r#"{"cmd":"reload","dryrun":true}"#)
                .error
                .contains("unknown field 'dryrun'")
        );
        let Command::Create(config) =
            ok(r#"{"cmd":"create","config":{"name":"w1","command":["sleep","9"]}}"#).command
        else {
            panic!("not a create");
        };
        assert_eq!(config.name, "w1");
        assert_eq!(config.command, Some(vec!["sleep".into(), "9".into()]));
    }

    #[test]
    fn bad_requests_are_described_and_keep_their_id() {
        assert!(err("{").error.starts_with("the request is not valid JSON"));
        assert_eq!(
            err("[1]").error,
            "a request must be a JSON object, not an array"
        );
        assert_eq!(err(r#"{"id":7}"#).id, Value::from(7));
        assert!(
            err(r#"{"id":7}"#)
                .error
                .starts_with("the request has no 'cmd'")
        );
        let unknown = err(r#"{"id":"x","cmd":"frob"}"#);
        assert_eq!(unknown.id, Value::from("x"));
        assert!(
            unknown.error.starts_with("unknown command 'frob'"),
            "{}",
            unknown.error
        );
        assert_eq!(
            err(r#"{"cmd":5}"#).error,
            "'cmd' must be a string, not a number"
        );
        assert_eq!(
            err(r#"{"cmd":"status","node":3}"#).error,
            "'node' must be a string, not a number"
        );
        assert_eq!(
            err(r#"{"cmd":"status","nod":"w1"}"#).error,
            "unknown field 'nod' for command 'status' (fields: id, cmd, node, nodes, usage)"
        );
        assert!(
            err(r#"{"cmd":"stop","now":true}"#)
                .error
                .contains("takes no fields")
        );
        assert!(err(r#"{"cmd":"destroy"}"#).error.contains("needs 'node'"));
        assert!(
            err(r#"{"cmd":"destroy","node":""}"#)
                .error
                .contains("must not be empty")
        );
        assert!(
            err(r#"{"cmd":"restart","node":"a","all":true}"#)
                .error
                .contains("not both")
        );
        assert!(
            err(r#"{"cmd":"destroy","all":"yes"}"#)
                .error
                .contains("true or false")
        );
        assert!(
            err(r#"{"cmd":"tail","node":"a","lines":-1}"#)
                .error
                .contains("-1")
        );
        assert!(err(r#"{"cmd":"tail"}"#).error.contains("needs 'node'"));
        assert!(
            err(r#"{"cmd":"eval","code":1}"#)
                .error
                .contains("must be a string")
        );
        let typo = err(r#"{"cmd":"create","config":{"name":"a","dirctory":"x"}}"#).error;
        assert!(
            typo.contains("invalid node configuration") && typo.contains("dirctory"),
            "{typo}"
        );
        let wrong = err(r#"{"cmd":"create","config":{"name":"a","cpu_affinity":"0"}}"#).error;
        assert!(wrong.contains("invalid node configuration"), "{wrong}");
        assert!(
            err(r#"{"cmd":"create","config":"w1"}"#)
                .error
                .contains("must be an object")
        );
        assert!(err("\u{0}\u{ff}").error.contains("not valid JSON"));
    }

    #[test]
    fn follow_names_its_topic() {
        assert_eq!(
            ok(r#"{"id":1,"cmd":"follow","topic":"output","node":"w1","lines":3}"#).command,
            Command::Follow(Topic::Output {
                node: "w1".into(),
                lines: Some(3)
            })
        );
        assert_eq!(
            err(r#"{"cmd":"follow","node":"w1"}"#).error,
            "follow needs 'topic' (one of: output, events)"
        );
        assert_eq!(
            err(r#"{"cmd":"follow","topic":"weather"}"#).error,
            "unknown topic 'weather' (one of: output, events)"
        );
        assert!(
            err(r#"{"cmd":"follow","topic":"output"}"#)
                .error
                .contains("needs 'node'")
        );
        assert!(
            err(r#"{"cmd":"follow","topic":"output","node":"w1","lines":"all"}"#)
                .error
                .contains("whole number")
        );
        assert!(
            err(r#"{"cmd":"follow","topic":"output","node":"w1","since":1}"#)
                .error
                .starts_with("unknown field 'since'")
        );
        assert_eq!(
            ok(r#"{"id":2,"cmd":"follow","topic":"events"}"#).command,
            Command::Follow(Topic::Events)
        );
        assert_eq!(
            err(r#"{"cmd":"follow","topic":"events","node":"w1"}"#).error,
            "unknown field 'node' for command 'follow' (fields: id, cmd, topic)"
        );
    }

    #[test]
    fn stream_lines_round_trip_and_have_no_ok() {
        let id = Value::from(7);
        for event in [
            StreamEvent::Item(serde_json::json!({"stream": "stdout", "line": "hi"})),
            StreamEvent::Missed(12),
            StreamEvent::End("node 'w1' was destroyed".into()),
        ] {
            let line = event.to_line(&id);
            assert!(line.ends_with(b"\n"));
            let text = String::from_utf8(line.clone()).unwrap();
            assert!(!text.contains("\"ok\""), "{text}");
            assert_eq!(
                StreamEvent::from_line(&line[..line.len() - 1]).unwrap(),
                (id.clone(), event)
            );
        }
        assert_eq!(
            String::from_utf8(StreamEvent::Missed(3).to_line(&id)).unwrap(),
            "{\"id\":7,\"missed\":3}\n"
        );
        assert!(StreamEvent::from_line(b"{\"id\":1,\"ok\":true}").is_err());
    }

    #[test]
    fn an_oversized_line_is_refused_before_parsing() {
        let mut line = br#"{"cmd":"eval","code":""#.to_vec();
        line.resize(MAX_LINE + 1, b'x');
        assert_eq!(decode(&line).unwrap_err().error, too_long());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let line = "[".repeat(100_000);
        assert!(decode(line.as_bytes()).is_err());
        let mut line = r#"{"cmd":"status","node":"#.to_string();
        line.push_str(&"{\"a\":".repeat(50_000));
        assert!(decode(line.as_bytes()).is_err());
    }

    #[test]
    fn requests_round_trip() {
        let mut config = NodeConfig::named("w1");
        config.directory = Some("w1".into());
        config.revival_delay = Some(0.5);
        let requests = [
            Request::new(1, Command::Create(Box::new(config))),
            Request::new("two", Command::status(None)),
            Request::new(3, Command::status(Some("w1".into()))),
            Request::new(13, Command::StatusOf(vec!["w1".into(), "w2".into()])),
            Request::new(4, Command::Restart(Target::All)),
            Request::new(5, Command::Destroy(Target::Node("w1".into()))),
            Request::new(
                9,
                Command::Signal {
                    target: Target::All,
                    signal: "HUP".into(),
                },
            ),
            Request::new(Value::Null, Command::Stop),
            Request::new(
                7,
                Command::Tail {
                    node: "w1".into(),
                    lines: Some(10),
                },
            ),
            Request::new(8, Command::Eval("print(1);\n2".into())),
            Request::new(
                9,
                Command::Follow(Topic::Output {
                    node: "w1".into(),
                    lines: Some(0),
                }),
            ),
            Request::new(
                10,
                Command::Follow(Topic::Output {
                    node: "w1".into(),
                    lines: None,
                }),
            ),
            Request::new(10, Command::Reload { dry_run: false }),
            Request::new(11, Command::Reload { dry_run: true }),
            Request::new(12, Command::Follow(Topic::Events)),
        ];
        for request in requests {
            let line = serde_json::to_vec(&request.to_json()).unwrap();
            assert_eq!(decode(&line).unwrap(), request);
        }
    }

    #[test]
    fn responses_are_one_line_with_the_documented_fields() {
        let line = Response::ok(Value::from(1), Value::Null).to_line();
        assert_eq!(line, b"{\"id\":1,\"ok\":true,\"result\":null}\n");
        let line = Response::error(Value::from("a"), "no\nway")
            .with_output("x\n".into())
            .to_line();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"id\":\"a\",\"ok\":false,\"error\":\"no\\nway\",\"output\":\"x\\n\"}\n"
        );
    }
}
