//! A cgroup per node process, for the limits of a node as a whole (`limits.memory`,
//! `pids`, `cpu`), for stopping all of it, and for what it uses.
//!
//! Two layouts exist in the field, and which one serves is found once, when the first
//! node needs a cgroup (`Cgroups::layout`), from `/proc/self/cgroup` and
//! `/proc/self/mountinfo`:
//!
//! - **cgroup v2**, where the supervisor's own cgroup in the unified hierarchy offers
//!   the controllers (its `cgroup.controllers`) and may be written: a delegated
//!   subtree (systemd's `Delegate=yes`), or the root for a root supervisor. Since v2
//!   lets only leaves hold processes, a supervisor that is not at the root first moves
//!   itself (and what it started) into a leaf `supervisor` beside the nodes, and
//!   enables the controllers below; a cgroup that also holds processes that are not
//!   its own (a login session's scope) is left alone. Nodes go in
//!   `OWN/rhai-supervisor.PID/NODE`.
//! - **cgroup v1**, each controller a hierarchy of its own, where those are mounted
//!   and writable: `MOUNT/OWN/rhai-supervisor.PID/NODE` in each hierarchy a node's
//!   limits need (memory, pids, cpu).
//!
//! v2 is taken when it offers any of the three controllers; else v1 when any of them is
//! mounted and writable; else a node with such a limit is refused, and the message
//! says why for each layout. The `PID` in the path keeps supervisors that share a
//! cgroup apart; what a supervisor killed by SIGKILL left is removed by the next one
//! that makes its directory there.
//!
//! Each process of a node gets a fresh cgroup (`NodeCgroup`), made before it is
//! cloned and joined by the child itself before exec: it writes `0` (itself) to the
//! `cgroup.procs` of each of its directories, through descriptors opened before the
//! clone. So what it uses and whether it was killed for memory are its own, and the
//! cgroup is removed once it and everything it started have ended (`Backend::ended`
//! stops those). A name still in use (the previous process's remnants being stopped)
//! gives the next one `NODE.2`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use super::Usage;
use crate::config::Limits;

/// The controllers a node's limits use, as each layout names them.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// The CFS period the `cpu` limit is a share of, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// Which hierarchy a node's cgroup lives in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The unified hierarchy: the nodes' parent directory, and the controllers it
    /// offers.
    V2 {
        base: PathBuf,
        controllers: Vec<String>,
    },
    /// One hierarchy per controller: (controller, the nodes' parent directory in it,
    /// whether `cpuacct` is in the same hierarchy).
    V1 { hierarchies: Vec<V1Hierarchy> },
}

/// A v1 hierarchy that holds a controller the nodes use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub controller: &'static str,
    pub base: PathBuf,
    /// `cpuacct` is mounted together with it (then `cpuacct.usage` counts CPU time).
    pub cpuacct: bool,
}

impl Layout {
    /// `cgroup v2 at ...` or `cgroup v1 (memory at ..., pids at ...)`, for the log.
    pub fn describe(&self) -> String {
        match self {
            Layout::V2 { base, controllers } => format!(
                "cgroup v2, nodes under {} (controllers: {})",
                base.display(),
                controllers.join(" ")
            ),
            Layout::V1 { hierarchies } => format!(
                "cgroup v1, nodes under {}",
                hierarchies
                    .iter()
                    .map(|h| format!("{} ({})", h.base.display(), h.controller))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn offers(&self, controller: &str) -> bool {
        match self {
            Layout::V2 { controllers, .. } => controllers.iter().any(|c| c == controller),
            Layout::V1 { hierarchies } => hierarchies.iter().any(|h| h.controller == controller),
        }
    }
}

/// The supervisor's cgroups: the layout, found when first needed, and the nodes'
/// parent directories, made when first needed.
#[derive(Debug, Default)]
pub struct Cgroups {
    /// `None` until a node needs a cgroup; then the layout, or why there is none.
    layout: Option<Result<Layout, String>>,
    /// The parent directories made so far (removed at the end, once empty).
    made: Vec<PathBuf>,
}

impl Cgroups {
    /// The layout, found the first time (see the module's docs).
    pub fn layout(&mut self) -> Result<&Layout, String> {
        if self.layout.is_none() {
            let found = detect();
            match &found {
                Ok(layout) => log::info!("node cgroups: {}", layout.describe()),
                Err(why) => log::debug!("no cgroups for nodes: {why}"),
            }
            self.layout = Some(found);
        }
        match self.layout.as_ref() {
            Some(Ok(layout)) => Ok(layout),
            Some(Err(why)) => Err(why.clone()),
            None => Err("no cgroup layout".into()),
        }
    }

    /// Whether a node with `limits` can have its cgroup; the error names the field.
    pub fn check(&mut self, limits: &Limits) -> Result<(), String> {
        let layout = self.layout().map_err(|why| {
            format!(
                "limits.{} needs a cgroup, and none can be made here: {why}",
                limits.cgroup_field()
            )
        })?;
        for (field, controller) in wanted(limits) {
            if !layout.offers(controller) {
                return Err(format!(
                    "limits.{field} needs the {controller} controller, which {} does not offer",
                    match layout {
                        Layout::V2 { .. } => "this supervisor's cgroup v2",
                        Layout::V1 { .. } => "no mounted cgroup v1 hierarchy",
                    }
                ));
            }
        }
        Ok(())
    }

    /// Makes a cgroup for a process of node `name` with `limits` set. Nothing is left
    /// behind when it fails.
    pub fn create(&mut self, name: &str, limits: &Limits) -> Result<NodeCgroup, String> {
        self.check(limits)?;
        let layout = self.layout()?.clone();
        let field = limits.cgroup_field();
        let (version, parents): (Version, Vec<(PathBuf, &'static str, bool)>) = match &layout {
            Layout::V2 { base, .. } => (Version::V2, vec![(base.clone(), "", false)]),
            Layout::V1 { hierarchies } => (
                Version::V1,
                hierarchies
                    .iter()
                    .filter(|h| wanted(limits).iter().any(|(_, c)| *c == h.controller))
                    .map(|h| (h.base.clone(), h.controller, h.cpuacct))
                    .collect(),
            ),
        };
        for (parent, _, _) in &parents {
            self.make_parent(parent, version).map_err(|why| {
                format!(
                    "limits.{field}: cannot make the cgroup {}: {why}",
                    parent.display()
                )
            })?;
        }
        let dirs: Vec<PathBuf> = parents.iter().map(|(p, _, _)| p.clone()).collect();
        let leaf = free_name(name, &dirs)
            .map_err(|why| format!("limits.{field}: cannot make a cgroup: {why}"))?;
        let cgroup = NodeCgroup {
            version,
            dirs: dirs.iter().map(|p| p.join(&leaf)).collect(),
            controllers: parents.iter().map(|(_, c, _)| *c).collect(),
            cpuacct: parents.iter().any(|(_, _, acct)| *acct),
            memory_limit: limits.memory,
        };
        if let Err(why) = cgroup.set_limits(limits) {
            cgroup.remove();
            return Err(why);
        }
        Ok(cgroup)
    }

    /// Makes the nodes' parent directory `dir` if this supervisor has not yet, removing
    /// what dead supervisors left beside it; in v2, with the controllers enabled below.
    fn make_parent(&mut self, dir: &Path, version: Version) -> Result<(), String> {
        if self.made.iter().any(|d| d == dir) {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            remove_stale(parent);
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(super::os_error(&e)),
        }
        self.made.push(dir.to_path_buf());
        if version == Version::V2 {
            let available = read_words(&dir.join("cgroup.controllers"));
            let enable: Vec<String> = CONTROLLERS
                .iter()
                .filter(|c| available.iter().any(|a| a == *c))
                .map(|c| format!("+{c}"))
                .collect();
            write_file(&dir.join("cgroup.subtree_control"), &enable.join(" "))
                .map_err(|why| format!("cannot enable {} below it: {why}", enable.join(" ")))?;
        }
        Ok(())
    }

    /// Removes the nodes' parent directories this supervisor made, if they are empty
    /// (at the end).
    pub fn remove_parents(&mut self) {
        for dir in self.made.drain(..) {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// The controllers `limits` need, with their field.
fn wanted(limits: &Limits) -> Vec<(&'static str, &'static str)> {
    let mut wanted = Vec::new();
    if limits.memory.is_some() {
        wanted.push(("memory", "memory"));
    }
    if limits.pids.is_some() {
        wanted.push(("pids", "pids"));
    }
    if limits.cpu.is_some() {
        wanted.push(("cpu", "cpu"));
    }
    wanted
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The cgroup of one node process: a directory in each hierarchy it uses (one in v2).
#[derive(Debug)]
pub struct NodeCgroup {
    pub version: Version,
    pub dirs: Vec<PathBuf>,
    /// v1: the controller of each of `dirs`.
    controllers: Vec<&'static str>,
    /// v1: `cpuacct` shares a hierarchy with one of `dirs`.
    cpuacct: bool,
    /// Its memory limit, for the message of an OOM kill.
    pub memory_limit: Option<u64>,
}

impl NodeCgroup {
    /// Opens the `cgroup.procs` of each directory for writing, for the child to join
    /// them before its exec.
    pub fn open_procs(&self) -> Result<Vec<OwnedFd>, String> {
        self.dirs
            .iter()
            .map(|dir| {
                open(
                    &dir.join("cgroup.procs"),
                    OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| {
                    format!(
                        "cannot open {}/cgroup.procs: {}",
                        dir.display(),
                        super::errno_text(e)
                    )
                })
            })
            .collect()
    }

    /// The `cgroup.procs` files, for a child that opens them itself (the stem's).
    pub fn procs_paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    fn set_limits(&self, limits: &Limits) -> Result<(), String> {
        let set =
            |controller: &str, file: &str, value: String, field: &str| -> Result<(), String> {
                let dir = match self.version {
                    Version::V2 => self.dirs.first(),
                    Version::V1 => self
                        .controllers
                        .iter()
                        .position(|c| *c == controller)
                        .and_then(|i| self.dirs.get(i)),
                };
                let Some(dir) = dir else {
                    return Err(format!("limits.{field}: no {controller} cgroup"));
                };
                write_file(&dir.join(file), &value)
                    .map_err(|why| format!("limits.{field}: cannot set {file} to {value}: {why}"))
            };
        let v2 = self.version == Version::V2;
        if let Some(bytes) = limits.memory {
            let file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            set("memory", file, bytes.to_string(), "memory")?;
        }
        if let Some(n) = limits.pids {
            set("pids", "pids.max", n.to_string(), "pids")?;
        }
        if let Some(cores) = limits.cpu {
            let quota = ((cores * CPU_PERIOD_US as f64).round() as u64).max(1000);
            if v2 {
                set("cpu", "cpu.max", format!("{quota} {CPU_PERIOD_US}"), "cpu")?;
            } else {
                set("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string(), "cpu")?;
                set("cpu", "cpu.cfs_quota_us", quota.to_string(), "cpu")?;
            }
        }
        Ok(())
    }

    /// The processes in it now.
    pub fn pids(&self) -> Vec<Pid> {
        let Some(dir) = self.dirs.first() else {
            return Vec::new();
        };
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .map(Pid::from_raw)
            .collect()
    }

    /// Sends `signal` to every process in it, including those that fork meanwhile.
    pub fn signal(&self, signal: Signal) {
        if signal == Signal::SIGKILL && self.version == Version::V2 {
            // The kernel kills the whole cgroup at once, forks or not (Linux 5.14).
            if let Some(dir) = self.dirs.first() {
                if write_file(&dir.join("cgroup.kill"), "1").is_ok() {
                    return;
                }
            }
        }
        let mut sent: Vec<Pid> = Vec::new();
        // A process may fork while it is being signalled: look again until a look finds
        // no one new (a bounded number of times).
        for _ in 0..16 {
            let fresh: Vec<Pid> = self
                .pids()
                .into_iter()
                .filter(|p| !sent.contains(p))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for pid in fresh {
                match kill(pid, signal) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(e) => {
                        log::debug!("cannot send {signal} to {pid}: {}", super::errno_text(e))
                    }
                }
                sent.push(pid);
            }
        }
    }

    /// No process is left in it.
    pub fn is_empty(&self) -> bool {
        match (self.version, self.dirs.first()) {
            (Version::V2, Some(dir)) => std::fs::read_to_string(dir.join("cgroup.events"))
                .map(|events| events.lines().any(|l| l == "populated 0"))
                .unwrap_or(true),
            (_, Some(_)) => self.pids().is_empty(),
            (_, None) => true,
        }
    }

    /// Removes its directories; true once none is left.
    pub fn remove(&self) -> bool {
        let mut gone = true;
        for dir in &self.dirs {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => gone = false,
            }
        }
        gone
    }

    /// Whether the kernel killed a process in it for passing its memory limit.
    pub fn oom_killed(&self) -> bool {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        self.dirs.iter().any(|dir| {
            std::fs::read_to_string(dir.join(file)).is_ok_and(|text| {
                text.lines().any(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
        })
    }

    /// What its processes use: the cgroup's own counters where it has them, else the
    /// sum over the processes in it.
    pub fn usage(&self) -> Usage {
        let counter = |file: &str, key: Option<&str>| -> Option<u64> {
            self.dirs.iter().find_map(|dir| {
                let text = std::fs::read_to_string(dir.join(file)).ok()?;
                match key {
                    None => text.trim().parse().ok(),
                    Some(key) => text
                        .lines()
                        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok()),
                }
            })
        };
        let (cpu, memory) = match self.version {
            Version::V2 => (
                counter("cpu.stat", Some("usage_usec ")).map(|us| us as f64 / 1e6),
                counter("memory.current", None),
            ),
            Version::V1 => (
                self.cpuacct
                    .then(|| counter("cpuacct.usage", None).map(|ns| ns as f64 / 1e9))
                    .flatten(),
                counter("memory.usage_in_bytes", None),
            ),
        };
        let summed = (cpu.is_none() || memory.is_none()).then(|| {
            self.pids()
                .into_iter()
                .filter_map(|pid| super::tree::usage_of(pid.as_raw()))
                .fold(Usage::default(), |a, (_, u)| Usage {
                    cpu: a.cpu + u.cpu,
                    memory: a.memory + u.memory,
                })
        });
        Usage {
            cpu: cpu.or(summed.map(|s| s.cpu)).unwrap_or(0.0),
            memory: memory.or(summed.map(|s| s.memory)).unwrap_or(0),
        }
    }
}

/// The first free name for a cgroup of node `name` in every one of `parents`: the name
/// itself (escaped where it would look like a control file), then `NAME.2`, ...
fn free_name(name: &str, parents: &[PathBuf]) -> Result<String, String> {
    let base = escape(name);
    for n in 1..1000 {
        let leaf = if n == 1 {
            base.clone()
        } else {
            format!("{base}.{n}")
        };
        let mut made: Vec<PathBuf> = Vec::new();
        let mut taken = false;
        for parent in parents {
            let dir = parent.join(&leaf);
            match std::fs::create_dir(&dir) {
                Ok(()) => made.push(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    taken = true;
                    break;
                }
                Err(e) => {
                    for dir in &made {
                        let _ = std::fs::remove_dir(dir);
                    }
                    return Err(format!("{}: {}", dir.display(), super::os_error(&e)));
                }
            }
        }
        if !taken {
            return Ok(leaf);
        }
        for dir in &made {
            let _ = std::fs::remove_dir(dir);
        }
    }
    Err(format!("every name for '{name}' is taken"))
}

/// A node's name as a cgroup directory: as it is, unless it could be taken for one of
/// the kernel's files (`tasks`, `cgroup.procs`, `memory.max`) or a hidden name; then
/// with a `_` before it, as systemd does.
fn escape(name: &str) -> String {
    const FILES: [&str; 3] = ["tasks", "notify_on_release", "release_agent"];
    const PREFIXES: [&str; 16] = [
        "cgroup",
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "pids",
        "io",
        "blkio",
        "devices",
        "freezer",
        "hugetlb",
        "net_cls",
        "net_prio",
        "perf_event",
        "rdma",
        "misc",
    ];
    let looks_special = name.starts_with(['.', '_'])
        || FILES.contains(&name)
        || name
            .split_once('.')
            .is_some_and(|(prefix, _)| PREFIXES.contains(&prefix));
    if looks_special {
        format!("_{name}")
    } else {
        name.to_string()
    }
}

/// Removes what dead supervisors left in `parent`: `rhai-supervisor.PID` directories
/// whose process is gone, and the empty cgroups in them.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("rhai-supervisor."))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten() {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
        }
        if std::fs::remove_dir(&dir).is_ok() {
            log::info!(
                "removed {}, left by a supervisor that is gone",
                dir.display()
            );
        }
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| super::os_error(&e))
}

fn read_words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A mount of a cgroup file system, from `/proc/self/mountinfo`.
#[derive(Debug)]
struct Mount {
    /// The cgroup path its root is (`/` unless the mount shows only part of the tree).
    root: String,
    point: PathBuf,
    v2: bool,
    /// v1: its controllers (from the super options).
    controllers: Vec<String>,
}

fn mounts() -> Vec<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let _source = after.next();
            let options = after.next().unwrap_or("");
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            Some(Mount {
                root: unescape(fields.get(3)?),
                point: PathBuf::from(unescape(fields.get(4)?)),
                v2,
                controllers: options.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// mountinfo writes spaces and the like as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(n)) => {
                out.push(n);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the cgroup `path` of a hierarchy is, under `mount`.
fn under(mount: &Mount, path: &str) -> PathBuf {
    let relative = match path.strip_prefix(mount.root.trim_end_matches('/')) {
        Some(rest) => rest,
        None => path,
    };
    mount.point.join(relative.trim_start_matches('/'))
}

fn writable(dir: &Path) -> Result<(), String> {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(|e| {
        format!(
            "{} is not writable ({})",
            dir.display(),
            super::errno_text(e)
        )
    })
}

/// Finds the layout (see the module's docs).
fn detect() -> Result<Layout, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {}", super::os_error(&e)))?;
    let mounts = mounts();
    let base_name = format!("rhai-supervisor.{}", std::process::id());
    let v2 = detect_v2(&own, &mounts, &base_name);
    let v2_why = match v2 {
        Ok(layout) => return Ok(layout),
        Err(why) => why,
    };
    let v1 = detect_v1(&own, &mounts, &base_name);
    match v1 {
        Ok(layout) => Ok(layout),
        Err(v1_why) => Err(format!("cgroup v2: {v2_why}; cgroup v1: {v1_why}")),
    }
}

fn detect_v2(own: &str, mounts: &[Mount], base_name: &str) -> Result<Layout, String> {
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2")?;
    let mount = mounts
        .iter()
        .find(|m| m.v2)
        .ok_or("no cgroup2 file system is mounted")?;
    let dir = under(mount, path);
    let offered = read_words(&dir.join("cgroup.controllers"));
    let controllers: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| offered.iter().any(|o| o == *c))
        .map(|c| c.to_string())
        .collect();
    if controllers.is_empty() {
        return Err(format!(
            "{} offers none of memory, pids, cpu (it has: {})",
            dir.display(),
            if offered.is_empty() {
                "none".to_string()
            } else {
                offered.join(" ")
            }
        ));
    }
    writable(&dir)?;
    let enable: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    if path != "/" {
        // Only leaves hold processes: move ours (this process and what it started)
        // into a leaf, then enable the controllers. A cgroup that holds others (a
        // login session's scope: the shell that started us) is not ours to rearrange.
        let me = std::process::id() as i32;
        let procs: Vec<i32> = read_words(&dir.join("cgroup.procs"))
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        if let Some(stranger) = procs.iter().find(|&&pid| !descends_from(pid, me)) {
            return Err(format!(
                "{} holds other processes than this supervisor's (pid {stranger}); give it a cgroup of its own (a unit with Delegate=yes, or systemd-run -p Delegate=yes)",
                dir.display()
            ));
        }
        let leaf = dir.join("supervisor");
        match std::fs::create_dir(&leaf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(format!(
                    "cannot make {}: {}",
                    leaf.display(),
                    super::os_error(&e)
                ));
            }
        }
        for pid in procs {
            let _ = write_file(&leaf.join("cgroup.procs"), &pid.to_string());
        }
    }
    write_file(&dir.join("cgroup.subtree_control"), &enable.join(" ")).map_err(|why| {
        format!(
            "cannot enable {} in {}: {why}",
            enable.join(" "),
            dir.display()
        )
    })?;
    Ok(Layout::V2 {
        base: dir.join(base_name),
        controllers,
    })
}

/// Whether `pid` is `ancestor` or one of its descendants.
fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut at = pid;
    for _ in 0..64 {
        if at == ancestor {
            return true;
        }
        match super::tree::parent_of(at) {
            Some(parent) if parent > 1 => at = parent,
            _ => return false,
        }
    }
    false
}

fn detect_v1(own: &str, mounts: &[Mount], base_name: &str) -> Result<Layout, String> {
    let mut hierarchies = Vec::new();
    let mut missing = Vec::new();
    for controller in CONTROLLERS {
        let Some(mount) = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
        else {
            missing.push(format!("{controller} is not mounted"));
            continue;
        };
        // This process's place in that hierarchy: the line that lists the controller.
        let path = own
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ':');
                let _id = parts.next()?;
                let list = parts.next()?;
                let path = parts.next()?;
                list.split(',').any(|c| c == controller).then_some(path)
            })
            .next()
            .unwrap_or("/");
        let dir = under(mount, path);
        if let Err(why) = writable(&dir) {
            missing.push(format!("{controller}: {why}"));
            continue;
        }
        hierarchies.push(V1Hierarchy {
            controller,
            base: dir.join(base_name),
            cpuacct: mount.controllers.iter().any(|c| c == "cpuacct"),
        });
    }
    if hierarchies.is_empty() {
        return Err(missing.join(", "));
    }
    for why in &missing {
        log::debug!("cgroup v1: {why}");
    }
    Ok(Layout::V1 { hierarchies })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_look_like_control_files_are_escaped() {
        assert_eq!(escape("db"), "db");
        assert_eq!(escape("w1.2"), "w1.2");
        assert_eq!(escape("tasks"), "_tasks");
        assert_eq!(escape("memory.max"), "_memory.max");
        assert_eq!(escape(".."), "_..");
        assert_eq!(escape("_x"), "__x");
    }

    /// The v2 mechanics (placement, listing, usage, `cgroup.kill`, `populated 0`,
    /// removal) on whatever cgroup2 mount there is, even one without controllers
    /// (hybrid machines have one at /sys/fs/cgroup/unified). Needs root.
    #[test]
    fn a_v2_cgroup_holds_kills_and_goes() {
        let Some(mount) = mounts().into_iter().find(|m| m.v2) else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        let dir = mount
            .point
            .join(format!("rhai-supervisor-unit.{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() {
            eprintln!("skipped: cannot make a cgroup in {}", mount.point.display());
            return;
        }
        let cgroup = NodeCgroup {
            version: Version::V2,
            dirs: vec![dir.clone()],
            controllers: vec![""],
            cpuacct: false,
            memory_limit: None,
        };
        assert!(cgroup.is_empty());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        write_file(&dir.join("cgroup.procs"), &pid.to_string()).unwrap();
        assert_eq!(cgroup.pids(), vec![pid]);
        assert!(!cgroup.is_empty());
        assert!(cgroup.usage().memory > 0, "{:?}", cgroup.usage());
        assert!(!cgroup.remove(), "not while it holds a process");
        cgroup.signal(Signal::SIGKILL);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cgroup.is_empty() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(cgroup.is_empty());
        assert!(cgroup.remove());
        assert!(!dir.exists());
    }

    #[test]
    fn mountinfo_fields_are_unescaped() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        let mount = Mount {
            root: "/lxc/c1".into(),
            point: "/sys/fs/cgroup/memory".into(),
            v2: false,
            controllers: vec!["memory".into()],
        };
        assert_eq!(
            under(&mount, "/lxc/c1/x"),
            PathBuf::from("/sys/fs/cgroup/memory/x")
        );
        assert_eq!(under(&mount, "/"), PathBuf::from("/sys/fs/cgroup/memory/"));
    }
}
