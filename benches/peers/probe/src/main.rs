//! peerbench: runs rhai-supervisor and other process supervisors side by side, each with
//! N children running the same tiny program (`pause`), and measures start-up, revival
//! latency, memory, idle CPU and shutdown. Started by `benches/peers.sh`, which builds it
//! and rhai-supervisor and installs the peers first; see BENCHMARKS.md for the method.
//!
//! Every time is taken from the kernel: the proc connector (`events`) stamps each fork,
//! exec and exit of the supervisors' process trees with CLOCK_MONOTONIC, and the
//! benchmark reads the same clock when it launches, kills or signals. Runs are
//! interleaved (run 1 of every peer, then run 2, ...) so that ratios can be taken pair
//! by pair within one run on a noisy machine.

mod chart;
mod events;
mod peers;
mod procfs;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use events::{Ev, Monitor, now_ns};
use peers::{Paths, Peer, Variant};

const USAGE: &str = "usage: peerbench --rhai BIN --pause BIN --cache DIR --bench DIR --out DIR \
[--n 50,200,1000] [--runs 3] [--only rhai,bash,...] [--idle-secs 10] [--revivals 20] \
[--revivals-default 20] [--no-script-nodes] | peerbench --report OUT_DIR | peerbench --chart RESULTS.tsv OUT.svg";

struct Options {
    ns: Vec<usize>,
    runs: usize,
    peers: Vec<Peer>,
    idle_secs: u64,
    revivals: usize,
    revivals_default: usize,
    script_nodes: bool,
    out: PathBuf,
    paths: Paths,
}

/// One figure of one run.
pub struct Row {
    pub run: usize,
    pub n: usize,
    pub subject: String,
    pub metric: String,
    pub value: f64,
}

struct Results {
    rows: Vec<Row>,
    file: File,
    notes: File,
    /// Every revival sample, for a closer look.
    samples: File,
}

impl Results {
    fn add(&mut self, run: usize, n: usize, subject: &str, metric: &str, value: f64) {
        let _ = writeln!(self.file, "{run}\t{n}\t{subject}\t{metric}\t{value}");
        println!("  run {run} n {n} {subject:<18} {metric:<24} {value:.3}");
        self.rows.push(Row {
            run,
            n,
            subject: subject.to_string(),
            metric: metric.to_string(),
            value,
        });
    }

    fn note(&mut self, text: String) {
        println!("  note: {text}");
        let _ = writeln!(self.notes, "{text}");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--report") {
        let Some(out) = args.get(1) else {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        };
        return match report::write(&PathBuf::from(out)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("peerbench: error: cannot write the report: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.first().map(String::as_str) == Some("--chart") {
        let (Some(tsv), Some(svg)) = (args.get(1), args.get(2)) else {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        };
        return match report::write_chart(&PathBuf::from(tsv), &PathBuf::from(svg)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("peerbench: error: cannot write the chart: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("peerbench: error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerbench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut ns = vec![50, 200, 1000];
    let mut runs = 3;
    let mut only: Option<Vec<Peer>> = None;
    let mut idle_secs = 10;
    let mut revivals = 20;
    let mut revivals_default = 20;
    let mut script_nodes = true;
    let (mut rhai, mut pause, mut cache, mut bench, mut out) = (None, None, None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        let number = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{arg}: not a number: {v}"))
        };
        match arg.as_str() {
            "--n" => {
                ns = value()?
                    .split(',')
                    .map(|v| v.parse().map_err(|_| format!("--n: not a number: {v}")))
                    .collect::<Result<_, _>>()?
            }
            "--runs" => runs = number(value()?)?,
            "--idle-secs" => idle_secs = number(value()?)? as u64,
            "--revivals" => revivals = number(value()?)?,
            "--revivals-default" => revivals_default = number(value()?)?,
            "--no-script-nodes" => script_nodes = false,
            "--only" => {
                only = Some(
                    value()?
                        .split(',')
                        .map(|v| Peer::from_name(v).ok_or(format!("--only: unknown peer {v}")))
                        .collect::<Result<_, _>>()?,
                )
            }
            "--rhai" => rhai = Some(PathBuf::from(value()?)),
            "--pause" => pause = Some(PathBuf::from(value()?)),
            "--cache" => cache = Some(PathBuf::from(value()?)),
            "--bench" => bench = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let canonical = |p: Option<PathBuf>, name: &str| {
        let p = p.ok_or(format!("{name} is required"))?;
        fs::canonicalize(&p).map_err(|e| format!("{name} {}: {e}", p.display()))
    };
    Ok(Options {
        ns,
        runs: runs.max(1),
        peers: only.unwrap_or_else(|| peers::ALL.to_vec()),
        idle_secs,
        revivals,
        revivals_default,
        script_nodes,
        out: out.ok_or("--out is required")?,
        paths: Paths {
            rhai: canonical(rhai, "--rhai")?,
            pause: canonical(pause, "--pause")?,
            cache: canonical(cache, "--cache")?,
            bench: canonical(bench, "--bench")?,
        },
    })
}

fn run(o: &Options) -> io::Result<()> {
    procfs::setup_self();
    fs::create_dir_all(&o.out)?;
    let probe = std::process::id() as i32;
    let mon = Monitor::start(probe, o.paths.pause.clone())
        .map_err(|e| io::Error::other(format!("cannot subscribe to process events: {e}")))?;
    let mut results = Results {
        rows: Vec::new(),
        file: File::create(o.out.join("results.tsv"))?,
        notes: File::create(o.out.join("notes.txt"))?,
        samples: File::create(o.out.join("revival-samples.tsv"))?,
    };
    let _ = writeln!(results.file, "run\tn\tsubject\tmetric\tvalue");

    let skipped = fs::read_to_string(o.paths.cache.join("skipped")).unwrap_or_default();
    let mut peers = Vec::new();
    for &peer in &o.peers {
        match peer.check(&o.paths, &skipped) {
            Ok(()) => peers.push(peer),
            Err(why) => results.note(format!("skipped {why}")),
        }
    }
    let mut config = File::create(o.out.join("config.txt"))?;
    writeln!(
        config,
        "ns={:?} runs={} idle_secs={} revivals={} revivals_default={} peers={}",
        o.ns,
        o.runs,
        o.idle_secs,
        o.revivals,
        o.revivals_default,
        peers.iter().map(|p| p.name()).collect::<Vec<_>>().join(",")
    )?;

    let started = Instant::now();
    for run in 1..=o.runs {
        for &n in &o.ns {
            // Rotate the order each run, so no peer always goes first or last.
            let mut order = peers.clone();
            if !order.is_empty() {
                let k = (run - 1) % order.len();
                order.rotate_left(k);
            }
            for peer in order {
                println!(
                    "[{:>5.0}s] run {run}/{} n {n}: {}",
                    started.elapsed().as_secs_f64(),
                    o.runs,
                    peer.name()
                );
                measure_peer(o, &mon, &mut results, run, n, peer)?;
            }
            if o.script_nodes && peers.contains(&Peer::Rhai) {
                println!(
                    "[{:>5.0}s] run {run}/{} n {n}: script nodes and floors",
                    started.elapsed().as_secs_f64(),
                    o.runs
                );
                measure_script_nodes(o, &mon, &mut results, run, n)?;
            }
        }
    }
    if mon.lost() > 0 {
        results.note(format!(
            "the kernel dropped process events {} times (socket buffer full); figures from those moments may be missing",
            mon.lost()
        ));
    }
    results.note(format!(
        "total duration {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    drop(results);
    report::write(&o.out)?;
    println!(
        "report: {} and chart.svg",
        o.out.join("summary.md").display()
    );
    Ok(())
}

/// A running child program.
struct Running {
    parent: i32,
    exec_ts: u64,
}

/// What the events of one launch have shown so far.
#[derive(Default)]
struct Tree {
    parent_of: HashMap<i32, i32>,
    running: BTreeMap<i32, Running>,
    exited: HashMap<i32, u64>,
}

impl Tree {
    fn apply(&mut self, ev: &Ev) {
        match *ev {
            Ev::Fork { parent, child, .. } => {
                self.parent_of.insert(child, parent);
            }
            Ev::Exec { pid, ts, pause } => {
                if pause {
                    let parent = self.parent_of.get(&pid).copied().unwrap_or(0);
                    self.running.insert(
                        pid,
                        Running {
                            parent,
                            exec_ts: ts,
                        },
                    );
                } else {
                    self.running.remove(&pid);
                }
            }
            Ev::Exit { pid, ts } => {
                self.running.remove(&pid);
                self.exited.insert(pid, ts);
            }
        }
    }
}

/// One started supervisor and what is known of its tree.
struct Launch<'a> {
    mon: &'a Monitor,
    cursor: usize,
    root: i32,
    launched_ns: u64,
    tree: Tree,
}

impl<'a> Launch<'a> {
    fn start(mon: &'a Monitor, mut command: Command) -> io::Result<Launch<'a>> {
        let cursor = mon.cursor();
        let launched_ns = now_ns();
        let child = command.spawn()?;
        let root = child.id() as i32;
        // Reaped by `procfs::reap` (this process is a subreaper and reaps everything).
        drop(child);
        Ok(Launch {
            mon,
            cursor,
            root,
            launched_ns,
            tree: Tree::default(),
        })
    }

    /// Applies events until `done` says so (true) or `deadline` (false).
    fn pump(&mut self, deadline: Instant, mut done: impl FnMut(&Tree, &Ev) -> bool) -> bool {
        let tree = &mut self.tree;
        self.mon.wait(&mut self.cursor, deadline, |ev| {
            tree.apply(ev);
            done(tree, ev)
        })
    }

    fn idle(&mut self, time: Duration) {
        self.pump(Instant::now() + time, |_, _| false);
    }

    /// Waits until `n` children run; the kernel's stamp of the last one's exec. Gives up
    /// after `timeout`, or when no child has started for 20 s.
    fn wait_running(&mut self, n: usize, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        let mut at = None;
        loop {
            let before = self.tree.running.len();
            let stall = (Instant::now() + Duration::from_secs(20)).min(deadline);
            let done = self.pump(stall, |tree, ev| {
                if let Ev::Exec {
                    ts, pause: true, ..
                } = ev
                    && tree.running.len() >= n
                {
                    at = Some(*ts);
                    return true;
                }
                false
            });
            if done || Instant::now() >= deadline || self.tree.running.len() == before {
                return at;
            }
        }
    }

    /// The supervisor's own processes: the live tree less the children and the
    /// benchmark itself.
    fn supervisor_pids(&self) -> Vec<i32> {
        let probe = std::process::id() as i32;
        self.mon
            .tracked()
            .into_iter()
            .filter(|p| *p != probe && !self.tree.running.contains_key(p))
            .collect()
    }

    fn root_exited(&self) -> Option<u64> {
        self.tree.exited.get(&self.root).copied()
    }
}

fn startup_timeout(n: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(100) * n as u32
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn fresh_dir(o: &Options, name: &str) -> io::Result<PathBuf> {
    let dir = o.paths.cache.join("run").join(name);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Starts `peer` with `variant` and records its start-up: `startup_ms` at the defaults,
/// `startup_min_ms` with the minimum delay. `None`, with a note and everything cleaned
/// up, when not all N children came up.
fn start_all<'a>(
    o: &Options,
    mon: &'a Monitor,
    res: &mut Results,
    run: usize,
    n: usize,
    peer: Peer,
    variant: Variant,
) -> io::Result<Option<Launch<'a>>> {
    let name = peer.name();
    let (tag, figure) = match variant {
        Variant::Defaults => ("defaults", "startup_ms"),
        Variant::Min => ("min", "startup_min_ms"),
    };
    let dir = fresh_dir(o, &format!("{name}-{n}-{tag}"))?;
    let command = peer.prepare(&o.paths, &dir, n, variant)?;
    let mut launch = Launch::start(mon, command)?;
    match launch.wait_running(n, startup_timeout(n)) {
        Some(ts) => {
            res.add(run, n, name, figure, ms(ts - launch.launched_ns));
            Ok(Some(launch))
        }
        None => {
            res.note(format!(
                "{name} n={n} run {run}: only {} of {n} children running ({tag}; gave up after 20 s without a new one, or {:?}); see {}",
                launch.tree.running.len(),
                startup_timeout(n),
                dir.display()
            ));
            cleanup(mon);
            Ok(None)
        }
    }
}

fn measure_peer(
    o: &Options,
    mon: &Monitor,
    res: &mut Results,
    run: usize,
    n: usize,
    peer: Peer,
) -> io::Result<()> {
    let name = peer.name();

    // Launch A, the peer at its defaults: start-up, memory, idle CPU, revival, SIGTERM.
    let Some(mut launch) = start_all(o, mon, res, run, n, peer, Variant::Defaults)? else {
        return Ok(());
    };
    // Settle: whatever the supervisor does right after the last start, and every child
    // up for over 1 s (supervisord's startsecs, the 1 s throttles of s6 and runit).
    launch.idle(Duration::from_millis(1500));
    if launch.tree.running.len() < n {
        res.note(format!(
            "{name} n={n} run {run}: {} children left of {n} after settling",
            launch.tree.running.len()
        ));
    }
    let pids = launch.supervisor_pids();
    let (mut rss, mut pss) = (0, 0);
    for &pid in &pids {
        if let Some((r, p)) = procfs::memory_kib(pid) {
            rss += r;
            pss += p;
        }
    }
    res.add(run, n, name, "rss_kib", rss as f64);
    res.add(run, n, name, "pss_kib", pss as f64);
    res.add(run, n, name, "supervisor_procs", pids.len() as f64);
    let before: HashMap<i32, u64> = pids
        .iter()
        .filter_map(|&p| procfs::cpu_ticks(p).map(|t| (p, t)))
        .collect();
    let forks_before = launch.tree.parent_of.len();
    launch.idle(Duration::from_secs(o.idle_secs));
    let mut ticks = 0;
    for pid in launch.supervisor_pids() {
        if let Some(now) = procfs::cpu_ticks(pid) {
            ticks += now - before.get(&pid).copied().unwrap_or(0);
        }
    }
    res.add(run, n, name, "idle_ticks", ticks as f64);
    if peer == Peer::Rhai {
        status_times(o, res, run, n);
    }
    let idle_forks = launch.tree.parent_of.len() - forks_before;
    if idle_forks > 0 {
        res.note(format!(
            "{name} n={n} run {run}: {idle_forks} processes started while idle"
        ));
    }
    revivals(
        &mut launch,
        res,
        run,
        n,
        peer,
        Variant::Defaults,
        "revival_default",
        o.revivals_default,
    );
    // Shutdown: the stop signal, until every child is gone, and until the supervisor is.
    let signalled = now_ns();
    procfs::kill(launch.root, peer.stop_signal());
    let mut last_exit = 0;
    let all_gone = launch.pump(Instant::now() + Duration::from_secs(60), |tree, ev| {
        if let Ev::Exit { ts, .. } = ev {
            last_exit = *ts;
        }
        tree.running.is_empty()
    });
    if all_gone {
        res.add(
            run,
            n,
            name,
            "sigterm_ms",
            ms(last_exit.max(signalled) - signalled),
        );
    } else {
        res.note(format!(
            "{name} n={n} run {run}: {} children still running 60 s after the stop signal",
            launch.tree.running.len()
        ));
    }
    let root = launch.root;
    launch.pump(
        Instant::now() + Duration::from_secs(30),
        |_, ev| matches!(ev, Ev::Exit { pid, .. } if *pid == root),
    );
    if let Some(ts) = launch.root_exited() {
        res.add(run, n, name, "sigterm_exit_ms", ms(ts - signalled));
    }
    cleanup(mon);

    // Launch B, the restart delay at its minimum: revival, then SIGKILL.
    let Some(mut launch) = start_all(o, mon, res, run, n, peer, Variant::Min)? else {
        return Ok(());
    };
    launch.idle(Duration::from_millis(1500));
    revivals(
        &mut launch,
        res,
        run,
        n,
        peer,
        Variant::Min,
        "revival_min",
        o.revivals,
    );
    procfs::kill(launch.root, libc::SIGKILL);
    launch.idle(Duration::from_secs(1));
    res.add(
        run,
        n,
        name,
        "sigkill_left",
        launch.tree.running.len() as f64,
    );
    cleanup(mon);
    Ok(())
}

/// Kills `count` children one at a time, each a different child that has run since the
/// start, and times each until its replacement (a new child of the same parent) has
/// executed the child program. Records the median and the 90th percentile.
#[allow(clippy::too_many_arguments)]
fn revivals(
    launch: &mut Launch,
    res: &mut Results,
    run: usize,
    n: usize,
    peer: Peer,
    variant: Variant,
    metric: &str,
    count: usize,
) {
    let name = peer.name();
    if count == 0 {
        return;
    }
    let mut victims: Vec<(u64, i32)> = launch
        .tree
        .running
        .iter()
        .map(|(&pid, r)| (r.exec_ts, pid))
        .collect();
    victims.sort();
    let mut samples = Vec::new();
    let gap_span = peer.kill_gap_span(variant).as_micros() as u64;
    // What the supervisor's processes spend on the kills: the death, the revival, and
    // whatever each one costs it afterwards (the kills are spaced by idle gaps).
    let cpu = |launch: &Launch| -> u64 {
        launch
            .supervisor_pids()
            .iter()
            .filter_map(|&p| procfs::cpu_ns(p))
            .sum()
    };
    let cpu_before = cpu(launch);
    let mut rng = Rng::new((run * 1_000_003 + n) as u64 ^ fnv(name) ^ fnv(metric));
    for (_, victim) in victims.into_iter().take(count) {
        let Some(parent) = launch.tree.running.get(&victim).map(|r| r.parent) else {
            continue;
        };
        let killed = now_ns();
        procfs::kill(victim, libc::SIGKILL);
        let mut revived = None;
        launch.pump(Instant::now() + Duration::from_secs(30), |tree, ev| {
            if let Ev::Exec {
                pid,
                ts,
                pause: true,
            } = *ev
                && pid != victim
                && tree.parent_of.get(&pid) == Some(&parent)
            {
                revived = Some(ts);
                return true;
            }
            false
        });
        match revived {
            Some(ts) => samples.push(ms(ts - killed)),
            None => {
                res.note(format!(
                    "{name} n={n} run {run}: {metric}: no replacement within 30 s of killing pid {victim}"
                ));
                break;
            }
        }
        // A gap before the next kill: 20 ms for the supervisor to finish what it does
        // after a start, plus a random part, so a kill does not always fall at the same
        // point of a supervisor's polling period.
        launch.idle(Duration::from_millis(20) + Duration::from_micros(rng.below(gap_span)));
    }
    if samples.is_empty() {
        return;
    }
    let cpu_after = cpu(launch);
    res.add(
        run,
        n,
        name,
        &format!("{metric}_cpu_us"),
        cpu_after.saturating_sub(cpu_before) as f64 / 1e3 / samples.len() as f64,
    );
    let _ = writeln!(res.samples, "{run}\t{n}\t{name}\t{metric}\t{samples:?}");
    res.add(
        run,
        n,
        name,
        &format!("{metric}_ms"),
        report::median(&samples),
    );
    res.add(
        run,
        n,
        name,
        &format!("{metric}_p90_ms"),
        report::percentile(&samples, 0.9),
    );
    res.add(
        run,
        n,
        name,
        &format!("{metric}_p99_ms"),
        report::percentile(&samples, 0.99),
    );
}

/// rhai-supervisor only: how long `ctl status` takes with N nodes, as a table (which
/// reads every node's usage from /proc) and as JSON; the median of 5 of each, from the
/// start of `ctl` to its exit.
fn status_times(o: &Options, res: &mut Results, run: usize, n: usize) {
    let socket = o
        .paths
        .cache
        .join("run")
        .join(format!("rhai-{n}-defaults"))
        .join("rhai-supervisor.sock");
    for (metric, json) in [("status_table_ms", false), ("status_json_ms", true)] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let mut command = Command::new(&o.paths.rhai);
            command.arg("ctl").arg("--socket").arg(&socket);
            if json {
                command.arg("--json");
            }
            command.arg("status").stdout(Stdio::null()).stderr(Stdio::null());
            let start = Instant::now();
            match command.status() {
                Ok(status) if status.success() => times.push(start.elapsed().as_secs_f64() * 1e3),
                _ => break,
            }
        }
        if times.len() == 5 {
            res.add(run, n, "rhai", metric, report::median(&times));
        } else {
            res.note(format!("rhai n={n} run {run}: ctl status failed ({metric})"));
        }
    }
}

/// xorshift64*: a seeded random gap, so a run can be repeated exactly.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Kills what is left of the benchmark's process tree and waits until it is gone.
fn cleanup(mon: &Monitor) {
    let probe = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<i32> = mon
            .tracked()
            .into_iter()
            .filter(|&p| p != probe && std::path::Path::new(&format!("/proc/{p}")).exists())
            .collect();
        procfs::reap();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let names: Vec<String> = left
                .iter()
                .map(|&p| format!("{p} {}", procfs::comm(p)))
                .collect();
            eprintln!("peerbench: warning: processes left after cleanup: {names:?}");
            return;
        }
        for &pid in &left {
            procfs::kill(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// rhai-supervisor's script nodes: N nodes, each printing a first line in
/// `zeek_init()`, against spawning the same binary N times from this process.
fn measure_script_nodes(
    o: &Options,
    mon: &Monitor,
    res: &mut Results,
    run: usize,
    n: usize,
) -> io::Result<()> {
    let dir = fresh_dir(o, &format!("script-nodes-{n}"))?;
    let script = dir.join("nodes.rhai");
    fs::write(
        &script,
        format!(
            "// {n} script nodes; each prints one line when it has started.\n\
             fn zeek_init() {{\n    \
                 if Supervisor::is_supervisor() {{\n        \
                     for i in 0..{n} {{\n            \
                         let res = Supervisor::create(#{{name: `s${{i}}`, revival_delay: 0}});\n            \
                         if res != \"\" {{ print(res); }}\n        \
                     }}\n    \
                 }} else {{\n        \
                     print(\"up\");\n    \
                 }}\n\
             }}\n"
        ),
    )?;
    let rhai = o.paths.rhai.clone();
    let mut steps = ["nodes", "floor-exec", "floor-version"];
    steps.rotate_left((run - 1) % 3);
    for step in steps {
        match step {
            "nodes" => {
                let mut command = Command::new(&rhai);
                command
                    .arg("run")
                    .arg(&script)
                    .current_dir(&dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(File::create(dir.join("stderr.log"))?);
                let launched = now_ns();
                let mut child = command.spawn()?;
                let root = child.id() as i32;
                let stdout = child.stdout.take().unwrap();
                drop(child);
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let mut seen = 0;
                    let mut reader = BufReader::new(stdout);
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 {
                        if line.ends_with("] up\n") {
                            seen += 1;
                            if seen == n {
                                let _ = tx.send(now_ns());
                            }
                        }
                        line.clear();
                    }
                });
                match rx.recv_timeout(startup_timeout(n)) {
                    Ok(ts) => res.add(
                        run,
                        n,
                        "rhai-script-nodes",
                        "first_line_ms",
                        ms(ts - launched),
                    ),
                    Err(_) => res.note(format!(
                        "script nodes n={n} run {run}: not all {n} first lines within {:?}",
                        startup_timeout(n)
                    )),
                }
                procfs::kill(root, libc::SIGTERM);
                let mut cursor = mon.cursor();
                let probe = std::process::id() as i32;
                let deadline = Instant::now() + Duration::from_secs(30);
                while mon.tracked().iter().any(|&p| p != probe) && Instant::now() < deadline {
                    mon.wait(
                        &mut cursor,
                        Instant::now() + Duration::from_millis(20),
                        |_| false,
                    );
                }
                cleanup(mon);
            }
            "floor-exec" => {
                let args = ["exec".to_string(), script.display().to_string()];
                match floor(&rhai, &args, n) {
                    Ok(t) => res.add(run, n, "floor-exec", "first_line_ms", t),
                    Err(e) => res.note(format!("floor-exec n={n} run {run}: {e}")),
                }
                cleanup(mon);
            }
            _ => {
                match floor(&rhai, &["--version".to_string()], n) {
                    Ok(t) => res.add(run, n, "floor-version", "first_line_ms", t),
                    Err(e) => res.note(format!("floor-version n={n} run {run}: {e}")),
                }
                cleanup(mon);
            }
        }
    }
    Ok(())
}

/// The floor: this process spawns `program args` N times back to back (std's
/// `Command`, as a minimal Rust loop would), each with its stdout on a pipe, and waits
/// until every one has written its first line. Milliseconds from the first spawn to
/// the last first line.
fn floor(program: &PathBuf, args: &[String], n: usize) -> io::Result<f64> {
    let started = now_ns();
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        children.push(
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    let mut fds: Vec<libc::pollfd> = children
        .iter()
        .map(|c| libc::pollfd {
            fd: c.stdout.as_ref().unwrap().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut remaining = n;
    let mut failed = 0;
    let mut last = started;
    let deadline = Instant::now() + startup_timeout(n);
    let mut buf = [0u8; 4096];
    while remaining > 0 && Instant::now() < deadline {
        // SAFETY: poll reads and writes the pollfd array we own, of the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if ready <= 0 {
            continue;
        }
        for (i, pfd) in fds.iter_mut().enumerate() {
            if pfd.fd < 0 || pfd.revents == 0 {
                continue;
            }
            let stdout = children[i].stdout.as_mut().unwrap();
            let got = stdout.read(&mut buf).unwrap_or(0);
            if got == 0 || buf[..got].contains(&b'\n') {
                if got == 0 {
                    failed += 1;
                }
                last = now_ns();
                pfd.fd = -1;
                remaining -= 1;
            }
        }
    }
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    if remaining > 0 || failed > 0 {
        return Err(io::Error::other(format!(
            "{remaining} of {n} gave no line in time, {failed} ended without one"
        )));
    }
    Ok(ms(last - started))
}
