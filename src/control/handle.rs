//! What the loop thread does with a control request: the same calls a script makes
//! (`Supervisor::create`, `status`, ...), run between other events like a script call,
//! so `node_status` fires for a node created this way once the request is done.
//!
//! Most requests are answered at once; a `reload` is answered once its plan is applied
//! (the nodes it restarts have stopped and started again), a few loop turns later, so
//! the answer goes to a `Respond` that the loop keeps until then.

use std::sync::Arc;

use serde_json::Value;

use super::{Command, ELSEWHERE, Request, Response, Target, Topic, no_such_node};
use crate::config::NodeStatus;
use crate::event_loop::EventLoop;
use crate::feed::Feed;
use crate::script::api::NOT_SUPERVISOR;
use crate::supervisor::{Placed, Supervisor};

/// Who sent a request (from `SO_PEERCRED`), for the log.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
}

/// Where the answer to a request goes.
pub type Respond = Box<dyn FnOnce(Response)>;

/// Runs one request on the loop thread; its answer goes to `respond`, now or (for a
/// reload) once the request is done. A `follow` request comes with the feed to publish
/// its stream into.
pub fn execute(
    event_loop: &mut EventLoop,
    peer: Peer,
    request: Request,
    feed: Option<Arc<Feed>>,
    respond: Respond,
) {
    let Request { id, command } = request;
    log::debug!(
        "control request from pid {}: {} (id {id})",
        peer.pid,
        command.name()
    );
    if let Command::Reload { dry_run } = command {
        log::info!(
            "control client (pid {}) asks for a reload{}",
            peer.pid,
            if dry_run { " (dry run)" } else { "" }
        );
        event_loop.reload(
            dry_run,
            Box::new(move |outcome| {
                respond(match outcome {
                    Ok(report) => match to_json(&report) {
                        Ok(value) => Response::ok(id, value),
                        Err(error) => Response::error(id, error),
                    },
                    Err(error) => Response::error(id, error.to_string()),
                })
            }),
        );
        return;
    }
    respond(answer(event_loop, peer, id, command, feed));
}

/// The answer to a request that is answered at once.
fn answer(
    event_loop: &mut EventLoop,
    peer: Peer,
    id: Value,
    command: Command,
    feed: Option<Arc<Feed>>,
) -> Response {
    match command {
        Command::Eval(code) => {
            let (result, output) = crate::console::capture(|| event_loop.host().eval(&code));
            let response = match result {
                Ok(value) => Response::ok(id, Value::String(event_loop.host().show(&value))),
                Err(error) => Response::error(id, error.to_string()),
            };
            response.with_output(output)
        }
        Command::Follow(Topic::Output { node, lines }) => {
            let Some(feed) = feed else {
                return Response::error(id, "follow needs a connection of its own to stream on");
            };
            let tail = match event_loop.nodes() {
                Some(nodes) => nodes.borrow().tail(&node),
                None => return Response::error(id, NOT_SUPERVISOR),
            };
            let Some(mut tail) = tail else {
                return Response::error(id, format!("node with name '{node}' does not exist"));
            };
            if let Some(keep) = lines {
                tail.drain(..tail.len().saturating_sub(keep));
            }
            log::debug!(
                "control client (pid {}) follows the output of node '{node}'",
                peer.pid
            );
            // In the same loop turn as the tail: no line is missed or repeated between.
            event_loop.follow_output(&node, feed);
            match to_json(&tail) {
                Ok(result) => Response::ok(id, result),
                Err(error) => Response::error(id, error),
            }
        }
        Command::Follow(Topic::Events) => {
            let Some(feed) = feed else {
                return Response::error(id, "follow needs a connection of its own to stream on");
            };
            let status = match event_loop.nodes() {
                Some(nodes) => nodes.borrow().status(""),
                None => return Response::error(id, NOT_SUPERVISOR),
            };
            log::debug!(
                "control client (pid {}) follows the supervisor's events",
                peer.pid
            );
            // In the same loop turn as the status: no change is missed or told twice.
            event_loop.follow_events(feed);
            encoded(id, &status)
        }
        Command::StatusOf(names) => match event_loop.nodes() {
            Some(nodes) => encoded(id, &nodes.borrow().status_of(&names)),
            None => Response::error(id, NOT_SUPERVISOR),
        },
        Command::Status { node: name, usage } => {
            let Some(nodes) = event_loop.nodes() else {
                return Response::error(id, NOT_SUPERVISOR);
            };
            let name = name.unwrap_or_default();
            // Every node's with what its processes use, for the table's CPU % and MEM;
            // one node's has it anyway.
            let status = if name.is_empty() && usage {
                nodes.borrow().status_with_usage("")
            } else {
                nodes.borrow().status(&name)
            };
            if !name.is_empty() && status.nodes.is_empty() {
                return Response::error(id, no_such_node(&name));
            }
            encoded(id, &status)
        }
        Command::Stop => {
            log::info!(
                "control client (pid {}) asked the supervisor to stop",
                peer.pid
            );
            event_loop.terminate();
            Response::ok(id, Value::Null)
        }
        command => match event_loop.nodes() {
            Some(nodes) => match on_nodes(&mut nodes.borrow_mut(), peer, command) {
                Ok(result) => Response::ok(id, result),
                Err(error) => Response::error(id, error),
            },
            None => Response::error(id, NOT_SUPERVISOR),
        },
    }
}

/// The commands that work on the node table.
fn on_nodes(supervisor: &mut Supervisor, peer: Peer, command: Command) -> Result<Value, String> {
    let missing = no_such_node;
    match command {
        Command::Create(config) => {
            let name = config.name.clone();
            log::info!("control client (pid {}) creates node '{name}'", peer.pid);
            if let Placed::Elsewhere(_) = supervisor
                .create((*config).clone())
                .map_err(|e| e.to_string())?
            {
                // Answered as a script's create is: done, by another host's supervisor.
                let mut status = NodeStatus::new(*config);
                status.state = ELSEWHERE.into();
                return to_json(&status);
            }
            let mut status = supervisor.status(&name);
            match status.nodes.remove(&name) {
                Some(node) => to_json(&node),
                None => Err(missing(&name)),
            }
        }
        Command::Status { .. } | Command::StatusOf(_) => Err("answered by `answer`".into()),
        Command::Tail { node, lines } => {
            let mut tail = supervisor.tail(&node).ok_or_else(|| missing(&node))?;
            if let Some(keep) = lines {
                tail.drain(..tail.len().saturating_sub(keep));
            }
            to_json(&tail)
        }
        Command::Destroy(target) => {
            let names =
                targets(supervisor, &target).ok_or_else(|| missing(target_name(&target)))?;
            log::info!(
                "control client (pid {}) destroys {}",
                peer.pid,
                describe(&target)
            );
            supervisor.destroy(target_name(&target));
            Ok(names.into())
        }
        Command::Restart(target) => {
            let names =
                targets(supervisor, &target).ok_or_else(|| missing(target_name(&target)))?;
            log::info!(
                "control client (pid {}) restarts {}",
                peer.pid,
                describe(&target)
            );
            if !supervisor.restart(target_name(&target)) {
                return Err("the supervisor is shutting down".into());
            }
            Ok(names.into())
        }
        Command::Signal { target, signal } => {
            let names =
                targets(supervisor, &target).ok_or_else(|| missing(target_name(&target)))?;
            let Some(number) = crate::config::SignalName::lookup(&signal) else {
                return Err(format!("unknown signal '{signal}'"));
            };
            log::info!(
                "control client (pid {}) sends {} to {}",
                peer.pid,
                number.as_str(),
                describe(&target)
            );
            supervisor
                .signal(target_name(&target), number)
                .map_err(|e| e.to_string())?;
            Ok(names.into())
        }
        Command::Eval(_) | Command::Stop | Command::Follow(_) | Command::Reload { .. } => {
            Err("not a node command".into())
        }
    }
}

/// The names a target stands for now; `None` for an unknown node.
fn targets(supervisor: &Supervisor, target: &Target) -> Option<Vec<String>> {
    match target {
        Target::All => Some(supervisor.node_names().map(str::to_string).collect()),
        Target::Node(name) => supervisor
            .node_names()
            .any(|n| n == name)
            .then(|| vec![name.clone()]),
    }
}

/// The name the script API takes: `""` for every node.
fn target_name(target: &Target) -> &str {
    match target {
        Target::All => "",
        Target::Node(name) => name,
    }
}

fn describe(target: &Target) -> String {
    match target {
        Target::All => "every node".into(),
        Target::Node(name) => format!("node '{name}'"),
    }
}

/// A status answer, encoded straight from the records: at 10,000 nodes, building a
/// `Value` first would cost more than the rest of the answer.
fn encoded(id: Value, status: &crate::config::Status) -> Response {
    match serde_json::to_string(status) {
        Ok(text) => Response::ok_encoded(id, text),
        Err(e) => Response::error(id, format!("cannot encode the status: {e}")),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, String> {
    serde_json::to_value(value).map_err(|e| format!("cannot encode the answer: {e}"))
}
