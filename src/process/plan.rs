//! From what the user wrote (`NodeConfig`) to what the backend runs (`SpawnPlan`).
//!
//! Planning resolves every relative path against the supervisor's working directory,
//! creates the node's directory, checks the core, the scripts and the environment, and
//! builds the JSON payload a script node starts from. Everything that can be refused
//! is refused here, with a message naming the node and the field, so that
//! `Supervisor::create` can report it instead of a node dying later.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sched::{CpuSet, sched_getaffinity};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{envfile, notify, os_error};
use crate::config::{Account, Limits, NodeConfig, Ready};

/// The environment variable through which a script node receives its `NodePayload`.
pub const NODE_ENV: &str = "RHAI_SUPERVISOR_NODE";

/// What a script node starts from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodePayload {
    pub config: NodeConfig,
    /// In load order: `addl_base_scripts`, the supervisor's scripts, `addl_user_scripts`,
    /// `scripts`; all absolute.
    pub scripts: Vec<PathBuf>,
    /// The supervisor's log level, so a node logs like its supervisor.
    pub log_level: String,
    /// The supervisor's time limit for one script call, in milliseconds.
    #[serde(default)]
    pub call_time_ms: Option<u64>,
    /// The node says `READY=1` on its notification socket once its `zeek_init()` has
    /// returned (it has no `ready` of its own).
    #[serde(default)]
    pub ready_after_init: bool,
}

/// The supervisor-wide inputs to every plan.
#[derive(Clone, Debug)]
pub struct Launcher {
    /// The supervisor's working directory when it started: relative paths are resolved
    /// against it.
    pub cwd: PathBuf,
    /// The program re-executed for script nodes, and its arguments before the node name.
    pub node_program: PathBuf,
    pub node_args: Vec<OsString>,
    /// The scripts given on the supervisor's command line (absolute).
    pub scripts: Vec<PathBuf>,
    pub log_level: log::LevelFilter,
    /// The cores this process may run on.
    pub cores: Vec<usize>,
    /// The open-file limits nodes get (the supervisor raises its own).
    pub child_nofile: Option<(u64, u64)>,
    /// Start script nodes by forking them from a stem process (see `stem`) rather than
    /// by exec.
    pub stem: bool,
    /// The time limit for one script call that script nodes get.
    pub call_time: std::time::Duration,
    /// The supervisor's notification socket, for the nodes that speak the protocol.
    pub notify_socket: Option<String>,
}

impl Launcher {
    /// A launcher that re-executes the current program as `PROGRAM __node NAME`.
    pub fn current(scripts: &[PathBuf], log_level: log::LevelFilter) -> std::io::Result<Launcher> {
        let cwd = std::env::current_dir()?;
        Ok(Launcher {
            scripts: scripts.iter().map(|s| cwd.join(s)).collect(),
            node_program: std::env::current_exe()?,
            node_args: vec!["__node".into()],
            cwd,
            log_level,
            cores: available_cores(),
            child_nofile: None,
            // RHAI_SUPERVISOR_NO_STEM=1 starts every script node by exec instead.
            stem: std::env::var_os("RHAI_SUPERVISOR_NO_STEM").is_none(),
            call_time: crate::config::DEFAULT_CALL_TIME,
            notify_socket: None,
        })
    }
}

/// The cores this process may run on, in order.
pub fn available_cores() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Where a stream of the node goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Through a pipe to the supervisor, line by line.
    Capture,
    /// Into this file, truncated at each start.
    File(PathBuf),
    /// Through a pipe to the supervisor, which writes this file and rotates it by size.
    Rotated(PathBuf),
}

/// A validated, ready-to-run description of one node process.
#[derive(Clone, Debug)]
pub struct SpawnPlan {
    pub name: Arc<str>,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Added to (or replacing entries of) the supervisor's environment.
    pub env: Vec<(OsString, OsString)>,
    /// Removed from the supervisor's environment.
    pub env_remove: Vec<OsString>,
    pub directory: Option<PathBuf>,
    pub stdout: Output,
    pub stderr: Output,
    pub cpu: Option<usize>,
    /// Sent to the node when the supervisor's loop thread dies.
    pub death_signal: Signal,
    /// Resource limits to set in the node: (`RLIMIT_*`, soft, hard, whether failing to
    /// set it is an error: not for the open-file limits given back to nodes).
    pub rlimits: Vec<(u32, u64, u64, bool)>,
    /// The user, group and supplementary groups it runs as, when they change.
    pub creds: Option<Creds>,
    /// Its file mode creation mask.
    pub umask: Option<u32>,
    /// The limits of the node as a whole, for a cgroup of its own.
    pub cgroup: Option<Limits>,
    /// What a script node starts from (also in `env`, for a node that is exec'd).
    pub payload: Option<NodePayload>,
    /// The descriptor on which the node says it is ready (`ready: #{fd: N}`).
    pub ready_fd: Option<i32>,
    /// `WATCHDOG_PID` is set to the node's own pid (it has a `watchdog`).
    pub watchdog_pid: bool,
}

/// Whom a node runs as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the user's, from the group database).
    pub groups: Vec<u32>,
}

/// Variables of the notification protocol, which a node gets only from its own
/// supervisor, never from the supervisor's environment (they would make it talk to the
/// supervisor's service manager).
const NOTIFY_ENV: [&str; 3] = [
    notify::SOCKET_ENV,
    notify::WATCHDOG_USEC_ENV,
    notify::WATCHDOG_PID_ENV,
];

/// Plans `config` for a start now. Creates the node's directory.
pub fn plan(config: &NodeConfig, launcher: &Launcher) -> Result<SpawnPlan, String> {
    let name = config.name.as_str();
    let fail = |what: String| format!("node '{name}': {what}");

    let account = account(config).map_err(fail)?;
    let directory = match &config.directory {
        Some(dir) => {
            check_path("directory", dir).map_err(fail)?;
            let path = launcher.cwd.join(dir);
            let created = !path.exists();
            std::fs::create_dir_all(&path).map_err(|e| {
                fail(format!(
                    "cannot create working directory '{dir}': {}",
                    os_error(&e)
                ))
            })?;
            // A directory made for the node is the node's.
            if let (true, Some(creds)) = (created, account.as_ref().and_then(|a| a.creds.as_ref()))
            {
                nix::unistd::chown(&path, Some(creds.uid.into()), Some(creds.gid.into())).map_err(
                    |e| {
                        fail(format!(
                            "cannot give the directory '{dir}' to user {}: {}",
                            creds.uid,
                            super::errno_text(e)
                        ))
                    },
                )?;
            }
            Some(path)
        }
        None => None,
    };
    let base = directory.as_deref().unwrap_or(&launcher.cwd);
    let rotated = config.rotation().is_some();
    let output = |field: &str, file: &Option<String>| -> Result<Output, String> {
        match file {
            Some(f) => {
                check_path(field, f).map_err(fail)?;
                if rotated {
                    Ok(Output::Rotated(base.join(f)))
                } else {
                    Ok(Output::File(base.join(f)))
                }
            }
            None => Ok(Output::Capture),
        }
    };
    let stdout = output("stdout_file", &config.stdout_file)?;
    let stderr = output("stderr_file", &config.stderr_file)?;

    let cpu = match config.cpu_affinity {
        Some(core) => {
            let ok = usize::try_from(core)
                .ok()
                .filter(|c| launcher.cores.contains(c));
            Some(ok.ok_or_else(|| {
                fail(format!(
                    "cpu_affinity {core}: no such core on this machine (available: {})",
                    core_list(&launcher.cores)
                ))
            })?)
        }
        None => None,
    };

    // From weakest to strongest: the user database, env_file, env.
    let mut env = Vec::with_capacity(config.env.len() + 5);
    if let Some(account) = &account {
        for (key, value) in &account.env {
            if !config.env.contains_key(*key) {
                env.push(((*key).into(), value.into()));
            }
        }
    }
    if let Some(file) = &config.env_file {
        check_path("env_file", file).map_err(fail)?;
        let entries =
            envfile::read(&launcher.cwd.join(file), file).map_err(|e| fail(e.to_string()))?;
        for (key, value) in entries {
            if !config.env.contains_key(&key) {
                env.push((key.into(), value.into()));
            }
        }
    }
    for (key, value) in &config.env {
        check_env(key, value).map_err(fail)?;
        env.push((key.into(), value.into()));
    }
    if !config.cluster.is_empty() {
        env.push(("CLUSTER_NODE".into(), name.into()));
    }
    // A script node always speaks the protocol (it says it is ready after zeek_init()
    // unless it has a `ready` of its own); a command node when asked to.
    let speaks_notify = config.command.is_none() || config.ready == Some(Ready::Notify);
    if let (true, Some(socket)) = (speaks_notify, &launcher.notify_socket) {
        env.push((notify::SOCKET_ENV.into(), socket.into()));
    }
    let watchdog = config.watchdog.and_then(|s| crate::config::seconds(s).ok());
    if let Some(period) = watchdog {
        env.push((
            notify::WATCHDOG_USEC_ENV.into(),
            period.as_micros().to_string().into(),
        ));
    }

    let mut script_payload = None;
    let (program, args, death_signal, env_remove) = match &config.command {
        Some(command) => {
            for arg in command {
                if arg.contains('\0') {
                    return Err(fail(format!(
                        "command argument {arg:?} contains a NUL byte"
                    )));
                }
            }
            let Some((program, args)) = command.split_first() else {
                return Err(fail("command must name a program to run".into()));
            };
            // A plain program leaves nothing to clean up if the supervisor vanishes.
            let args = args.iter().map(OsString::from).collect();
            let mut remove = vec![NODE_ENV.into()];
            remove.extend(NOTIFY_ENV.map(OsString::from));
            (PathBuf::from(program), args, Signal::SIGKILL, remove)
        }
        None => {
            let scripts = node_scripts(config, launcher).map_err(fail)?;
            let payload = NodePayload {
                config: config.clone(),
                scripts,
                log_level: launcher.log_level.to_string(),
                call_time_ms: Some(launcher.call_time.as_millis() as u64),
                ready_after_init: config.ready.is_none(),
            };
            let json = serde_json::to_string(&payload)
                .map_err(|e| fail(format!("cannot encode the node's configuration: {e}")))?;
            env.push((NODE_ENV.into(), json.into()));
            script_payload = Some(payload);
            let mut args = launcher.node_args.clone();
            args.push(name.into());
            // A script node shuts down cleanly (zeek_done) on SIGTERM.
            (
                launcher.node_program.clone(),
                args,
                Signal::SIGTERM,
                NOTIFY_ENV.map(OsString::from).to_vec(),
            )
        }
    };

    let limits = config.limits.clone().unwrap_or_default();
    let rlimits = rlimits(&limits, launcher.child_nofile).map_err(fail)?;

    Ok(SpawnPlan {
        name: Arc::from(name),
        program,
        args,
        env,
        env_remove,
        directory,
        stdout,
        stderr,
        cpu,
        death_signal,
        rlimits,
        creds: account.and_then(|a| a.creds),
        umask: config.umask.map(|m| m as u32),
        cgroup: limits.needs_cgroup().then_some(limits),
        payload: script_payload,
        ready_fd: match config.ready {
            Some(Ready::Fd(fd)) => Some(fd),
            _ => None,
        },
        watchdog_pid: watchdog.is_some(),
    })
}

/// Plans one try of an `exec` check of `config`'s node: `argv` in the node's directory
/// and environment, its output captured (for the message of a failed try).
pub fn check(
    config: &NodeConfig,
    argv: &[String],
    launcher: &Launcher,
) -> Result<SpawnPlan, String> {
    let mut node = config.clone();
    node.command = Some(argv.to_vec());
    node.stdout_file = None;
    node.stderr_file = None;
    node.output_max_bytes = None;
    node.ready = None;
    node.watchdog = None;
    node.cpu_affinity = None;
    // A check gets the node's user and process limits, not a cgroup of its own.
    if let Some(limits) = &mut node.limits {
        limits.memory = None;
        limits.pids = None;
        limits.cpu = None;
    }
    let mut plan = plan(&node, launcher)?;
    plan.name = Arc::from(format!("{} check", config.name));
    Ok(plan)
}

/// Whom a node runs as, from `user` and `group`, and what its environment gets from
/// the user database.
struct Resolved {
    /// `None` when nothing changes (a supervisor not run by root, named as itself).
    creds: Option<Creds>,
    env: Vec<(&'static str, String)>,
}

fn account(config: &NodeConfig) -> Result<Option<Resolved>, String> {
    use nix::unistd::{Gid, Group, Uid, User, getegid, geteuid, getgrouplist};
    if config.user.is_none() && config.group.is_none() {
        return Ok(None);
    }
    let lookup_failed = |what: &str, e: nix::errno::Errno| {
        format!("cannot look up {what}: {}", super::errno_text(e))
    };
    let user = match &config.user {
        Some(Account::Name(name)) => Some(
            User::from_name(name)
                .map_err(|e| lookup_failed(&format!("user '{name}'"), e))?
                .ok_or_else(|| format!("no such user '{name}'"))?,
        ),
        // A number need not be in the database.
        Some(Account::Id(uid)) => User::from_uid(Uid::from_raw(*uid))
            .map_err(|e| lookup_failed(&format!("user {uid}"), e))?,
        None => None,
    };
    let uid = match (&config.user, &user) {
        (_, Some(user)) => user.uid.as_raw(),
        (Some(Account::Id(uid)), None) => *uid,
        _ => geteuid().as_raw(),
    };
    let gid = match &config.group {
        Some(Account::Name(name)) => Group::from_name(name)
            .map_err(|e| lookup_failed(&format!("group '{name}'"), e))?
            .ok_or_else(|| format!("no such group '{name}'"))?
            .gid
            .as_raw(),
        Some(Account::Id(gid)) => *gid,
        None => match (&user, &config.user) {
            (Some(user), _) => user.gid.as_raw(),
            (None, Some(Account::Id(uid))) => {
                return Err(format!(
                    "user {uid} has no entry in the user database: set group too"
                ));
            }
            _ => getegid().as_raw(),
        },
    };
    let groups = match &user {
        Some(user) => {
            let name = std::ffi::CString::new(user.name.as_bytes())
                .map_err(|_| format!("user '{}' has a NUL byte in its name", user.name))?;
            getgrouplist(&name, Gid::from_raw(gid))
                .map_err(|e| lookup_failed(&format!("the groups of user '{}'", user.name), e))?
                .into_iter()
                .map(Gid::as_raw)
                .collect()
        }
        None => vec![gid],
    };
    let same = uid == geteuid().as_raw() && gid == getegid().as_raw();
    if !geteuid().is_root() && !same {
        let field = if config.user.is_some() {
            "user"
        } else {
            "group"
        };
        return Err(format!(
            "{field}: changing user needs root (this supervisor runs as uid {})",
            geteuid()
        ));
    }
    let mut env = Vec::new();
    if config.user.is_some() {
        match &user {
            Some(user) => {
                env.push(("HOME", user.dir.to_string_lossy().into_owned()));
                env.push(("USER", user.name.clone()));
                env.push(("LOGNAME", user.name.clone()));
            }
            None => {
                env.push(("HOME", "/".to_string()));
                env.push(("USER", uid.to_string()));
                env.push(("LOGNAME", uid.to_string()));
            }
        }
    }
    Ok(Some(Resolved {
        creds: (!same || geteuid().is_root()).then_some(Creds { uid, gid, groups }),
        env,
    }))
}

/// The resource limits a node's process gets: those of `limits`, and the open-file
/// limits the supervisor started with (`restored`: it raises its own) unless `nofile`
/// is set. A limit above the hard limit is refused unless this process may raise it.
fn rlimits(
    limits: &Limits,
    restored: Option<(u64, u64)>,
) -> Result<Vec<(u32, u64, u64, bool)>, String> {
    use nix::sys::resource::{Resource, getrlimit};
    let mut set = Vec::new();
    if let (None, Some((soft, hard))) = (limits.nofile, restored) {
        #[allow(clippy::unnecessary_cast)] // its type differs between C libraries
        set.push((nix::libc::RLIMIT_NOFILE as u32, soft, hard, false));
    }
    for (field, resource, amount) in limits.rlimits() {
        let value = amount.raw();
        let current = match field {
            "nofile" => getrlimit(Resource::RLIMIT_NOFILE),
            "core" => getrlimit(Resource::RLIMIT_CORE),
            "nproc" => getrlimit(Resource::RLIMIT_NPROC),
            "stack" => getrlimit(Resource::RLIMIT_STACK),
            _ => getrlimit(Resource::RLIMIT_MEMLOCK),
        };
        // The supervisor raised its own open-file limit to the hard limit; the hard
        // limit is what bounds the node.
        if let Ok((_, hard)) = current {
            if value > hard && !may_raise_limits() {
                let shown = |n: u64| {
                    if n == u64::MAX {
                        "unlimited".to_string()
                    } else {
                        n.to_string()
                    }
                };
                return Err(format!(
                    "limits.{field} {} is above this supervisor's hard limit ({}), which it may not raise",
                    shown(value),
                    shown(hard)
                ));
            }
        }
        set.push((resource, value, value, true));
    }
    Ok(set)
}

/// Whether this process has CAP_SYS_RESOURCE (bit 24 of its effective capabilities).
fn may_raise_limits() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// The scripts a script node loads, in order, resolved and checked.
fn node_scripts(config: &NodeConfig, launcher: &Launcher) -> Result<Vec<PathBuf>, String> {
    let mut all = Vec::new();
    let resolve = |field: &str, list: &[String], all: &mut Vec<PathBuf>| -> Result<(), String> {
        for script in list {
            check_path(field, script)?;
            let path = launcher.cwd.join(script);
            check_script(&path, script)?;
            all.push(path);
        }
        Ok(())
    };
    resolve("addl_base_scripts", &config.addl_base_scripts, &mut all)?;
    all.extend(launcher.scripts.iter().cloned());
    resolve("addl_user_scripts", &config.addl_user_scripts, &mut all)?;
    resolve("scripts", &config.scripts, &mut all)?;
    Ok(all)
}

fn check_script(path: &Path, as_written: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(format!("script '{as_written}' is not a file")),
        Err(e) => Err(format!(
            "cannot read script '{as_written}': {}",
            os_error(&e)
        )),
    }
}

fn check_path(field: &str, path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if path.contains('\0') {
        return Err(format!("{field} {path:?} contains a NUL byte"));
    }
    Ok(())
}

fn check_env(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("env keys must not be empty".into());
    }
    if key.contains('=') || key.contains('\0') {
        return Err(format!(
            "env key {key:?} must not contain '=' or a NUL byte"
        ));
    }
    if value.contains('\0') {
        return Err(format!("env value of {key} contains a NUL byte"));
    }
    Ok(())
}

/// `0-3,6` for a sorted list of cores.
fn core_list(cores: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &core in cores {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == core => *end = core,
            _ => ranges.push((core, core)),
        }
    }
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launcher(dir: &Path) -> Launcher {
        Launcher {
            cwd: dir.to_path_buf(),
            node_program: "/bin/true".into(),
            node_args: vec!["__node".into()],
            scripts: vec![dir.join("main.rhai")],
            log_level: log::LevelFilter::Info,
            cores: vec![0, 1],
            child_nofile: None,
            stem: false,
            call_time: std::time::Duration::from_secs(1),
            notify_socket: Some("@test".into()),
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rs-plan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn script_node_loads_in_zeek_order() {
        let dir = temp_dir("order");
        for f in ["base.rhai", "user.rhai", "w.rhai"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let mut cfg = NodeConfig::named("w1");
        cfg.addl_base_scripts = vec!["base.rhai".into()];
        cfg.addl_user_scripts = vec!["user.rhai".into()];
        cfg.scripts = vec!["w.rhai".into()];
        cfg.directory = Some("nodes/w1".into());
        let plan = plan(&cfg, &launcher(&dir)).unwrap();
        assert!(dir.join("nodes/w1").is_dir());
        assert_eq!(
            plan.directory.as_deref(),
            Some(dir.join("nodes/w1").as_path())
        );
        let (_, json) = plan.env.iter().find(|(k, _)| k == NODE_ENV).unwrap();
        let payload: NodePayload = serde_json::from_str(json.to_str().unwrap()).unwrap();
        let names: Vec<_> = payload
            .scripts
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["base.rhai", "main.rhai", "user.rhai", "w.rhai"]);
        assert_eq!(plan.death_signal, Signal::SIGTERM);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refusals_name_node_and_field() {
        let dir = temp_dir("refuse");
        let l = launcher(&dir);
        let mut cfg = NodeConfig::named("w1");
        cfg.scripts = vec!["missing.rhai".into()];
        let err = plan(&cfg, &l).unwrap_err();
        assert!(
            err.starts_with("node 'w1': cannot read script 'missing.rhai'"),
            "{err}"
        );

        let mut cfg = NodeConfig::named("w1");
        cfg.cpu_affinity = Some(7);
        let err = plan(&cfg, &l).unwrap_err();
        assert_eq!(
            err,
            "node 'w1': cpu_affinity 7: no such core on this machine (available: 0-1)"
        );

        let mut cfg = NodeConfig::named("w1");
        cfg.env.insert("A=B".into(), "x".into());
        assert!(plan(&cfg, &l).unwrap_err().contains("must not contain '='"));

        std::fs::write(dir.join("file"), "").unwrap();
        let mut cfg = NodeConfig::named("w1");
        cfg.directory = Some("file/sub".into());
        let err = plan(&cfg, &l).unwrap_err();
        assert!(
            err.starts_with("node 'w1': cannot create working directory 'file/sub': "),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn command_nodes_and_cluster_env() {
        let dir = temp_dir("cmd");
        let mut cfg = NodeConfig::named("c");
        cfg.command = Some(vec!["sleep".into(), "5".into()]);
        cfg.cluster.insert("c".into(), Default::default());
        cfg.stdout_file = Some("out.log".into());
        let plan = plan(&cfg, &launcher(&dir)).unwrap();
        assert_eq!(plan.program, PathBuf::from("sleep"));
        assert_eq!(plan.args, vec![OsString::from("5")]);
        assert_eq!(plan.death_signal, Signal::SIGKILL);
        assert!(plan.env.contains(&("CLUSTER_NODE".into(), "c".into())));
        assert_eq!(plan.stdout, Output::File(dir.join("out.log")));
        assert_eq!(plan.stderr, Output::Capture);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn core_lists() {
        assert_eq!(core_list(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(core_list(&[]), "none");
    }
}
