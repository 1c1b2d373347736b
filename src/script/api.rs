//! The script API: the `Supervisor` module (Zeek's names), the `Cluster` module of a
//! node, and the builtins `terminate`, `exit`, `getenv`, `eprint`, `schedule`,
//! `sd_notify`.
//!
//! A thin adapter: it converts values and errors and calls the node table; policy
//! lives in `supervisor`. Every function with an effect is registered volatile, so the
//! optimizer never runs it at compile time.

use std::rc::Rc;
use std::time::Instant;

use rhai::{
    Dynamic, Engine, EvalAltResult, FnPtr, FuncRegistration, INT, Map, Module, NativeCallContext,
};

use super::records::{self, from_map, kind};
use super::{ExitRequest, Role, Shared, Table};
use crate::config::{ClusterEndpoint, ClusterRole, Fields, NodeConfig, NodeStatus, Status, Stream};

type Result<T> = std::result::Result<T, Box<EvalAltResult>>;

/// Zeek's answer when the supervisor API is used outside the supervisor.
pub const NOT_SUPERVISOR: &str = "supervisor mode not enabled";
/// Zeek's answer when `Supervisor::node()` is used outside a supervised node.
pub const NOT_SUPERVISED: &str = "not a supervised process";

/// Registers everything scripts can call. `nodes` is the node table, in the supervisor
/// role.
pub fn register(engine: &mut Engine, shared: &Shared, nodes: Option<Rc<Table>>) {
    records::register::<NodeConfig>(engine);
    records::register::<ClusterEndpoint>(engine);
    records::register::<NodeStatus>(engine);
    records::register::<Status>(engine);
    records::register_role(engine);
    engine.register_static_module("Supervisor", supervisor_module(shared, nodes).into());
    engine.register_static_module("Cluster", cluster_module(shared).into());
    builtins(engine, shared);
}

/// An error from a namespaced call, stamped with the call's position (rhai leaves it
/// empty for `Module::function` calls).
fn error_at(message: String, ctx: &NativeCallContext) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(message.into(), ctx.call_position()).into()
}

/// Runs `f` without counting its time against the running script call's limit: the
/// limit is there to stop scripts that loop forever, not to cut short a script that
/// starts a thousand processes.
fn uncounted<T>(shared: &Shared, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    let deadline = shared.borrow().call_deadline.clone();
    if let Some(at) = deadline.get() {
        deadline.set(Some(at + started.elapsed()));
    }
    value
}

/// The names of the functions and constants in the `Supervisor` module, for completion.
pub const SUPERVISOR_NAMES: &[&str] = &[
    "create",
    "destroy",
    "restart",
    "status",
    "signal",
    "is_supervisor",
    "is_supervised",
    "node",
    "NodeConfig",
    "ClusterEndpoint",
    "NONE",
    "LOGGER",
    "MANAGER",
    "PROXY",
    "WORKER",
];

fn supervisor_module(shared: &Shared, nodes: Option<Rc<Table>>) -> Module {
    let mut m = Module::new();
    for role in ClusterRole::ALL {
        m.set_var(role.name(), role);
    }

    FuncRegistration::new("NodeConfig")
        .set_into_module(&mut m, |name: &str| NodeConfig::named(name));
    FuncRegistration::new("NodeConfig").set_into_module(
        &mut m,
        |ctx: NativeCallContext, map: Map| -> Result<NodeConfig> {
            from_map(map).map_err(|e| error_at(e, &ctx))
        },
    );
    FuncRegistration::new("ClusterEndpoint").set_into_module(
        &mut m,
        |ctx: NativeCallContext, map: Map| -> Result<ClusterEndpoint> {
            from_map(map).map_err(|e| error_at(e, &ctx))
        },
    );

    let (s, table) = (shared.clone(), nodes.clone());
    FuncRegistration::new("create")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, value: Dynamic| -> Result<String> {
                let config = if let Some(c) = value.read_lock::<NodeConfig>() {
                    c.clone()
                } else if let Some(map) = value.read_lock::<Map>().map(|m| m.clone()) {
                    from_map::<NodeConfig>(map).map_err(|e| error_at(e, &ctx))?
                } else {
                    return Err(error_at(
                        format!(
                            "Supervisor::create needs a Supervisor::NodeConfig or a map, not {}",
                            kind(&value)
                        ),
                        &ctx,
                    ));
                };
                let created = uncounted(&s, || table.as_ref().map(|nodes| nodes.create(config)));
                if let (Some(table), Some(Err(e))) = (&table, &created) {
                    // A reload reports the creates its scripts got refused, and where.
                    table.refused(format!("{}{e}", where_called(&ctx)));
                }
                Ok(match created {
                    None => {
                        log::error!("Supervisor::create: {NOT_SUPERVISOR}");
                        NOT_SUPERVISOR.into()
                    }
                    // A node of another host is that host's to start: done, as far as
                    // this script is concerned.
                    Some(Ok(_placed)) => String::new(),
                    Some(Err(e)) => {
                        log::warn!("Supervisor::create: {e}");
                        e.to_string()
                    }
                })
            },
        );

    for (name, op) in [("destroy", Op::Destroy), ("restart", Op::Restart)] {
        let (s, table) = (shared.clone(), nodes.clone());
        FuncRegistration::new(name)
            .with_volatility(true)
            .set_into_module(&mut m, move |node: &str| {
                uncounted(&s, || op.run(table.as_ref(), node))
            });
        let (s, table) = (shared.clone(), nodes.clone());
        FuncRegistration::new(name)
            .with_volatility(true)
            .set_into_module(&mut m, move || uncounted(&s, || op.run(table.as_ref(), "")));
    }

    {
        let table = nodes.clone();
        let signal = move |node: &str, signal: Dynamic| -> bool {
            let Some(nodes) = table.as_ref() else {
                log::error!("Supervisor::signal: {NOT_SUPERVISOR}");
                return false;
            };
            let name = if signal.is_int() {
                signal.as_int().map(|n| n.to_string()).unwrap_or_default()
            } else {
                signal.to_string()
            };
            let Some(signal) = crate::config::SignalName::lookup(&name) else {
                log::error!(
                    "Supervisor::signal: unknown signal '{name}' (a name such as \"HUP\" or \"SIGUSR1\", or a number)"
                );
                return false;
            };
            match nodes.signal(node, signal) {
                Ok(sent) => sent.is_some(),
                Err(e) => {
                    log::error!("Supervisor::signal: {e}");
                    false
                }
            }
        };
        FuncRegistration::new("signal")
            .with_volatility(true)
            .set_into_module(&mut m, signal);
    }

    let table = nodes.clone();
    FuncRegistration::new("status")
        .with_volatility(true)
        .set_into_module(&mut m, move |node: &str| status(table.as_ref(), node));
    let table = nodes;
    FuncRegistration::new("status")
        .with_volatility(true)
        .set_into_module(&mut m, move || status(table.as_ref(), ""));

    let s = shared.clone();
    FuncRegistration::new("is_supervisor")
        .with_volatility(true)
        .set_into_module(&mut m, move || s.borrow().role == Role::Supervisor);
    let s = shared.clone();
    FuncRegistration::new("is_supervised")
        .with_volatility(true)
        .set_into_module(&mut m, move || s.borrow().role == Role::Node);
    let s = shared.clone();
    FuncRegistration::new("node")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext| -> Result<NodeConfig> {
                s.borrow()
                    .node
                    .clone()
                    .ok_or_else(|| error_at(format!("Supervisor::node: {NOT_SUPERVISED}"), &ctx))
            },
        );
    m
}

#[derive(Clone, Copy)]
enum Op {
    Destroy,
    Restart,
}

impl Op {
    fn run(self, nodes: Option<&Rc<Table>>, node: &str) -> bool {
        let name = match self {
            Op::Destroy => "destroy",
            Op::Restart => "restart",
        };
        let Some(nodes) = nodes else {
            log::error!("Supervisor::{name}: {NOT_SUPERVISOR}");
            return false;
        };
        match self {
            Op::Destroy => nodes.destroy(node),
            Op::Restart => nodes.restart(node),
        }
    }
}

/// `s.rhai:7:5: ` for the call of a native function, as far as it is known.
fn where_called(ctx: &NativeCallContext) -> String {
    let pos = ctx.call_position();
    let file = ctx
        .call_source()
        .map(|s| format!("{s}:"))
        .unwrap_or_default();
    match (pos.line(), pos.position()) {
        (Some(line), Some(column)) => format!("{file}{line}:{column}: "),
        (Some(line), None) => format!("{file}{line}: "),
        _ => file.replace(':', ": "),
    }
}

fn status(nodes: Option<&Rc<Table>>, node: &str) -> Status {
    match nodes {
        Some(nodes) => nodes.status(node),
        None => {
            log::error!("Supervisor::status: {NOT_SUPERVISOR}");
            Status::default()
        }
    }
}

/// `Cluster::node` (this node's name) and `Cluster::nodes` (the layout), as Zeek's
/// cluster framework fills them from the node's `cluster` table.
fn cluster_module(shared: &Shared) -> Module {
    let mut m = Module::new();
    let context = shared.borrow();
    let (name, layout) = match &context.node {
        Some(cfg) if !cfg.cluster.is_empty() => (
            cfg.name.clone(),
            cfg.get("cluster").unwrap_or(Dynamic::UNIT),
        ),
        _ => (String::new(), Dynamic::from_map(Map::new())),
    };
    m.set_var("node", name);
    m.set_var("nodes", layout);
    m
}

fn builtins(engine: &mut Engine, shared: &Shared) {
    let s = shared.clone();
    engine.register_fn("terminate", move || {
        let mut context = s.borrow_mut();
        let first = context.exit.is_none();
        context.request_exit(ExitRequest::Terminate);
        first
    });
    for with_code in [true, false] {
        let s = shared.clone();
        let exit = move |ctx: &NativeCallContext, code: INT| -> Result<()> {
            let code = i32::try_from(code).unwrap_or(i32::MAX);
            s.borrow_mut().request_exit(ExitRequest::Exit(code));
            Err(EvalAltResult::Exit(Dynamic::from(code as INT), ctx.call_position()).into())
        };
        if with_code {
            engine.register_fn("exit", move |ctx: NativeCallContext, code: INT| {
                exit(&ctx, code)
            });
        } else {
            engine.register_fn("exit", move |ctx: NativeCallContext| exit(&ctx, 0));
        }
    }
    // Every role: a node tells its supervisor (or the supervisor tells systemd).
    engine.register_fn("sd_notify", |text: &str| -> bool {
        match crate::process::notify::send(text) {
            Ok(sent) => sent,
            Err(e) => {
                log::warn!("sd_notify: cannot send to $NOTIFY_SOCKET: {e}");
                false
            }
        }
    });
    engine.register_fn("getenv", |name: &str| -> Dynamic {
        std::env::var(name).map_or(Dynamic::UNIT, Into::into)
    });
    engine.register_fn("eprint", |text: Dynamic| {
        let text = if text.is_string() {
            text.to_string()
        } else {
            records::render(&text, false)
        };
        crate::console::script_line(Stream::Stderr, &text);
    });
    let s = shared.clone();
    engine.register_fn(
        "schedule",
        move |ctx: NativeCallContext, millis: Dynamic, callback: FnPtr| -> Result<()> {
            let ms = if let Ok(i) = millis.as_int() {
                i as f64
            } else if let Ok(f) = millis.as_float() {
                f
            } else {
                return Err(error_at(
                    format!(
                        "schedule: the delay must be a number of milliseconds, not {}",
                        kind(&millis)
                    ),
                    &ctx,
                ));
            };
            let delay = crate::config::seconds(ms / 1000.0).map_err(|_| {
                error_at(
                    format!("schedule: the delay must be a number of milliseconds >= 0, not {ms}"),
                    &ctx,
                )
            })?;
            s.borrow_mut().timers.add(Instant::now() + delay, callback);
            Ok(())
        },
    );
}
