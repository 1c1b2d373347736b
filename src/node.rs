//! What runs inside a supervised script node, and the stem that forks them.
//!
//! The supervisor starts a script node in one of two ways. By exec: this program again
//! as `PROGRAM __node NAME`, with the node's `NodePayload` (its `NodeConfig` and the
//! scripts to load) in an environment variable, which is read and removed here. Or
//! forked by the stem (`PROGRAM __stem`, `process::stem`), which builds Rhai's standard
//! library once (`serve_stem`) and hands each forked node its payload. Either way the
//! working directory, output streams, core, environment and parent-death signal are set
//! up before the node's scripts run, in the node role, until SIGTERM, `terminate()` or
//! `exit(code)`.

use std::sync::OnceLock;
use std::time::Duration;

use crate::process::plan::{NODE_ENV, NodePayload};
use crate::runtime::{Error, Runtime, Settings};
use crate::script::Role;

/// How a node forked by the stem sets up its logging (the program's choice).
static INIT_LOGGING: OnceLock<fn(log::LevelFilter)> = OnceLock::new();

/// Serves as the stem (`PROGRAM __stem`): builds Rhai's standard library, then forks
/// script nodes for the supervisor until it goes away. `init_logging` runs in each
/// forked node. Returns the stem's exit status.
pub fn serve_stem(init_logging: fn(log::LevelFilter)) -> i32 {
    serve_stem_with(init_logging)
}

/// Serves as a collector (`PROGRAM __collect`): watches nodes for a supervisor whose own
/// table of descriptors is full, until it goes away. Returns the exit status.
pub fn serve_collector() -> i32 {
    crate::process::collector::serve()
}

fn serve_stem_with(init_logging: fn(log::LevelFilter)) -> i32 {
    let _ = INIT_LOGGING.set(init_logging);
    crate::process::stem::serve(
        || {
            let _ = crate::script::standard_package();
        },
        run_forked,
    )
}

/// A node the stem forked, set up: logs as its supervisor does and runs its scripts.
fn run_forked(payload: NodePayload) -> i32 {
    let level = payload.log_level.parse().unwrap_or(log::LevelFilter::Info);
    if let Some(init) = INIT_LOGGING.get() {
        init(level);
    }
    let mut settings = Settings {
        log_level: level,
        ..Settings::default()
    };
    if let Some(ms) = payload.call_time_ms {
        settings.limits.call_time = Duration::from_millis(ms);
    }
    match run(payload, &settings) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rhai-supervisor: error: {e}");
            1
        }
    }
}

/// Reads this node's payload. Must be called before any thread is started: it removes
/// the payload from the environment.
pub fn take_payload() -> Result<NodePayload, String> {
    let json = std::env::var(NODE_ENV).map_err(|_| {
        format!("{NODE_ENV} is not set: '__node' is only for processes started by a supervisor")
    })?;
    // SAFETY: called at the start of main, before this process has any other thread, so
    // nothing can read the environment concurrently.
    unsafe { std::env::remove_var(NODE_ENV) };
    serde_json::from_str(&json)
        .map_err(|e| format!("the node payload in {NODE_ENV} is invalid: {e}"))
}

/// Runs the node's scripts; returns the exit status.
pub fn run(payload: NodePayload, settings: &Settings) -> Result<i32, Error> {
    let mut runtime = Runtime::new(Role::Node, &[], Some(payload.config), settings)?;
    runtime.start(&payload.scripts)?;
    if payload.ready_after_init {
        // The node has no readiness of its own: it is ready once zeek_init() returned.
        if let Err(e) = crate::process::notify::send("READY=1") {
            log::warn!("cannot tell the supervisor this node is ready: {e}");
        }
    }
    let code = runtime.run();
    // The process ends now: tearing the engine down would cost more than the node's
    // whole start did.
    runtime.finish();
    Ok(code)
}

/// For programs that embed the library and create script nodes: call this first in
/// `main`. Script nodes are started as `PROGRAM __node NAME` or forked from a stem
/// started as `PROGRAM __stem`, and a supervisor with more nodes than its table of
/// descriptors holds starts collectors as `PROGRAM __collect`; when this process is one
/// of those, this serves that role and returns the exit status. Otherwise it returns `None` at once.
pub fn serve_if_node(settings: &Settings) -> Option<i32> {
    let role = std::env::args_os().nth(1)?;
    if role == "__stem" {
        return Some(serve_stem(|_| {}));
    }
    if role == "__collect" {
        return Some(serve_collector());
    }
    if role != "__node" {
        return None;
    }
    let code = match take_payload() {
        Ok(payload) => match run(payload, settings) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("node: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("node: {e}");
            1
        }
    };
    Some(code)
}
