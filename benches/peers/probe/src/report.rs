//! The report: `summary.md` from `results.tsv` (one figure per run), with the median
//! over runs of each figure and, for rhai-supervisor against each peer, the median of
//! the ratios taken run by run; and `chart.svg`, start-up and revival latency against N
//! for every peer (see `chart`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

use crate::Row;
use crate::chart::{self, Panel, Series};
use crate::peers::{ALL, Peer};

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

/// The `q` quantile, by linear interpolation between the closest ranks.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The rows of a results file; lines that are not rows (the header, `#` comments) are
/// skipped.
fn read_rows(tsv: &Path) -> io::Result<Vec<Row>> {
    let text = fs::read_to_string(tsv)?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            Some(Row {
                run: f.first()?.parse().ok()?,
                n: f.get(1)?.parse().ok()?,
                subject: f.get(2)?.to_string(),
                metric: f.get(3)?.to_string(),
                value: f.get(4)?.parse().ok()?,
            })
        })
        .collect())
}

struct Data {
    /// (subject, metric, n) -> run -> value
    values: BTreeMap<(String, String, usize), BTreeMap<usize, f64>>,
    ns: Vec<usize>,
    subjects: Vec<String>,
}

impl Data {
    fn runs(&self, subject: &str, metric: &str, n: usize) -> Option<&BTreeMap<usize, f64>> {
        self.values
            .get(&(subject.to_string(), metric.to_string(), n))
    }

    fn median(&self, subject: &str, metric: &str, n: usize) -> Option<(f64, usize)> {
        let runs = self.runs(subject, metric, n)?;
        let v: Vec<f64> = runs.values().copied().collect();
        Some((median(&v), v.len()))
    }

    /// Median over runs of a(run) / b(run), for the runs that have both.
    fn ratio(&self, a: (&str, &str), b: (&str, &str), n: usize) -> Option<(f64, usize)> {
        let ra = self.runs(a.0, a.1, n)?;
        let rb = self.runs(b.0, b.1, n)?;
        let v: Vec<f64> = ra
            .iter()
            .filter_map(|(run, x)| rb.get(run).map(|y| x / y))
            .filter(|r| r.is_finite())
            .collect();
        if v.is_empty() {
            None
        } else {
            Some((median(&v), v.len()))
        }
    }
}

fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn fmt_mib(kib: f64) -> String {
    let mib = kib / 1024.0;
    if mib < 100.0 {
        format!("{mib:.1}")
    } else {
        format!("{mib:.0}")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r < 0.1 {
        format!("{r:.3}×")
    } else {
        format!("{r:.2}×")
    }
}

/// The figures of a results file, and how many runs it holds.
fn load(tsv: &Path) -> io::Result<(Data, usize)> {
    let rows = read_rows(tsv)?;
    let mut values: BTreeMap<(String, String, usize), BTreeMap<usize, f64>> = BTreeMap::new();
    let mut ns = BTreeSet::new();
    let mut subjects = BTreeSet::new();
    let mut runs = BTreeSet::new();
    for row in rows {
        ns.insert(row.n);
        subjects.insert(row.subject.clone());
        runs.insert(row.run);
        values
            .entry((row.subject, row.metric, row.n))
            .or_default()
            .insert(row.run, row.value);
    }
    let peers: Vec<String> = ALL
        .iter()
        .map(|p| p.name().to_string())
        .filter(|p| subjects.contains(p))
        .collect();
    let data = Data {
        values,
        ns: ns.into_iter().collect(),
        subjects: peers,
    };
    Ok((data, runs.len()))
}

/// `chart.svg` from the figures of `tsv`, written to `svg` (`peerbench --chart`): for a
/// results file of another run, or one written by hand from published tables.
pub fn write_chart(tsv: &Path, svg: &Path) -> io::Result<()> {
    let (data, _) = load(tsv)?;
    if !data.subjects.iter().any(|s| {
        ["startup_ms", "revival_min_ms"]
            .iter()
            .any(|m| data.ns.iter().any(|&n| data.median(s, m, n).is_some()))
    }) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} has no startup_ms or revival_min_ms figures",
                tsv.display()
            ),
        ));
    }
    fs::write(svg, chart(&data))
}

/// Start-up and revival latency (restart delay at its minimum) against N, one line per
/// peer, both axes logarithmic.
fn chart(data: &Data) -> String {
    let panel = |title: &str, metric: &str| Panel {
        title: title.to_string(),
        series: data
            .subjects
            .iter()
            .filter_map(|s| {
                let points: Vec<(f64, f64)> = data
                    .ns
                    .iter()
                    .filter_map(|&n| Some((n as f64, data.median(s, metric, n)?.0)))
                    .collect();
                let peer = Peer::from_name(s)?;
                (!points.is_empty()).then(|| Series {
                    label: plain_label(s),
                    color: color(peer),
                    bold: peer == Peer::Rhai,
                    dashed: peer == Peer::S6Ready,
                    points,
                })
            })
            .collect(),
    };
    chart::svg(
        "rhai-supervisor beside other supervisors, N children",
        "Each point is the median over runs (benches/peers.sh; method and tables in BENCHMARKS.md). Lower is better.",
        "ms",
        &[
            panel("Start-up: launch until all N run", "startup_ms"),
            panel("Revival after kill -9, minimum delay", "revival_min_ms"),
        ],
    )
}

fn color(peer: Peer) -> &'static str {
    match peer {
        Peer::Rhai => "#c0392b",
        Peer::Bash => "#555555",
        Peer::Supervisord => "#1f77b4",
        Peer::Circus => "#ff7f0e",
        Peer::S6 => "#2ca02c",
        Peer::S6Ready => "#2ca02c",
        Peer::Runit => "#9467bd",
        Peer::Pm2 => "#8c564b",
    }
}

pub fn write(out: &Path) -> io::Result<()> {
    let (data, nruns) = load(&out.join("results.tsv"))?;
    fs::write(out.join("chart.svg"), chart(&data))?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Figures are medians over {nruns} run(s); a cell with fewer runs says so as `[k runs]`. \
         Ratios are rhai-supervisor's figure divided by the peer's, taken run by run, median \
         over runs: below 1 means rhai-supervisor is faster or smaller.\n"
    );

    let header = |md: &mut String, first: &str| {
        let _ = write!(md, "| {first} |");
        for n in &data.ns {
            let _ = write!(md, " N={n} |");
        }
        let _ = write!(md, "\n|---|");
        for _ in &data.ns {
            let _ = write!(md, "---:|");
        }
        md.push('\n');
    };
    let cell = |v: Option<(f64, usize)>, f: &dyn Fn(f64) -> String| match v {
        Some((x, k)) if k < nruns => format!("{} [{k} runs]", f(x)),
        Some((x, _)) => f(x),
        None => "—".to_string(),
    };

    let table = |md: &mut String,
                 title: &str,
                 metric: &str,
                 p90: Option<&str>,
                 f: &dyn Fn(f64) -> String,
                 ratios: bool| {
        let _ = writeln!(md, "### {title}\n");
        header(md, "supervisor");
        for s in &data.subjects {
            let _ = write!(md, "| {} |", label(s));
            for &n in &data.ns {
                let mut c = cell(data.median(s, metric, n), f);
                if let Some(p) = p90
                    && let Some((x, _)) = data.median(s, p, n)
                {
                    let _ = write!(c, " (p90 {})", f(x));
                }
                let _ = write!(md, " {c} |");
            }
            md.push('\n');
        }
        md.push('\n');
        if ratios && data.subjects.iter().any(|s| s == "rhai") {
            let _ = writeln!(md, "rhai-supervisor ÷ peer, {title}:\n");
            header(md, "peer");
            for s in data.subjects.iter().filter(|s| *s != "rhai") {
                let _ = write!(md, "| {} |", label(s));
                for &n in &data.ns {
                    let _ = write!(
                        md,
                        " {} |",
                        cell(data.ratio(("rhai", metric), (s, metric), n), &fmt_ratio)
                    );
                }
                md.push('\n');
            }
            md.push('\n');
        }
    };

    table(
        &mut md,
        "Start-up: launch until all N children run (ms)",
        "startup_ms",
        None,
        &fmt_ms,
        true,
    );
    table(
        &mut md,
        "Revival latency, restart delay at its minimum (ms; median of the per-run medians, p90 likewise)",
        "revival_min_ms",
        Some("revival_min_p90_ms"),
        &fmt_ms,
        true,
    );
    table(
        &mut md,
        "Revival latency, restart delay at its minimum: 99th percentile (ms)",
        "revival_min_p99_ms",
        None,
        &fmt_ms,
        true,
    );
    table(
        &mut md,
        "CPU per node death: the supervisor's processes, per kill and revival (µs; restart delay at its minimum)",
        "revival_min_cpu_us",
        None,
        &|v| format!("{v:.0}"),
        true,
    );
    table(
        &mut md,
        "`ctl status` with N nodes, rhai-supervisor only (ms; table with every node's usage, and JSON)",
        "status_table_ms",
        Some("status_json_ms"),
        &fmt_ms,
        false,
    );
    table(
        &mut md,
        "Revival latency, defaults (ms)",
        "revival_default_ms",
        Some("revival_default_p90_ms"),
        &fmt_ms,
        true,
    );
    table(
        &mut md,
        "Supervisor RSS with N children (MiB, summed over the supervisor's processes)",
        "rss_kib",
        None,
        &fmt_mib,
        true,
    );
    table(
        &mut md,
        "Supervisor PSS with N children (MiB)",
        "pss_kib",
        None,
        &fmt_mib,
        true,
    );
    table(
        &mut md,
        "Supervisor processes (not counting the children)",
        "supervisor_procs",
        None,
        &|v| format!("{v:.0}"),
        false,
    );
    table(
        &mut md,
        "Idle CPU: utime+stime ticks of the supervisor's processes over the idle period",
        "idle_ticks",
        None,
        &|v| format!("{v:.0}"),
        false,
    );
    table(
        &mut md,
        "Shutdown: stop signal until every child is gone (ms)",
        "sigterm_ms",
        None,
        &fmt_ms,
        true,
    );
    table(
        &mut md,
        "Shutdown: stop signal until the supervisor itself has exited (ms)",
        "sigterm_exit_ms",
        None,
        &fmt_ms,
        false,
    );
    table(
        &mut md,
        "Children left running 1 s after SIGKILL to the supervisor",
        "sigkill_left",
        None,
        &|v| format!("{v:.0}"),
        false,
    );
    table(
        &mut md,
        "Start-up with the minimum-delay configuration (ms; second launch)",
        "startup_min_ms",
        None,
        &fmt_ms,
        false,
    );

    // Script nodes against the floors.
    let script = ["rhai-script-nodes", "floor-exec", "floor-version"];
    if script.iter().any(|s| data.values.keys().any(|k| k.0 == *s)) {
        let _ = writeln!(
            md,
            "### Script nodes: launch until N nodes have each printed a first line (ms)\n"
        );
        header(&mut md, "what");
        for s in script {
            let _ = write!(md, "| {} |", label(s));
            for &n in &data.ns {
                let _ = write!(
                    md,
                    " {} |",
                    cell(data.median(s, "first_line_ms", n), &fmt_ms)
                );
            }
            md.push('\n');
        }
        for floor in ["floor-exec", "floor-version"] {
            let _ = write!(md, "| script nodes ÷ {} |", label(floor));
            for &n in &data.ns {
                let r = data.ratio(
                    ("rhai-script-nodes", "first_line_ms"),
                    (floor, "first_line_ms"),
                    n,
                );
                let _ = write!(md, " {} |", cell(r, &fmt_ratio));
            }
            md.push('\n');
        }
        md.push('\n');
    }

    if let Ok(notes) = fs::read_to_string(out.join("notes.txt"))
        && !notes.trim().is_empty()
    {
        let _ = writeln!(md, "### Notes from the run\n");
        for line in notes.lines() {
            let _ = writeln!(md, "- {line}");
        }
        md.push('\n');
    }
    let _ = writeln!(md, "### Configurations\n");
    let _ = writeln!(
        md,
        "| supervisor | defaults | minimum restart delay |\n|---|---|---|"
    );
    for s in &data.subjects {
        if let Some(p) = Peer::from_name(s) {
            let (d, m) = p.describe();
            let _ = writeln!(md, "| {} | {d} | {m} |", label(s));
        }
    }
    fs::write(out.join("summary.md"), md)
}

/// The label without Markdown, for the chart.
fn plain_label(subject: &str) -> String {
    match subject {
        "bash" => "bash wait -n loop".to_string(),
        "s6-ready" => "s6 + readiness".to_string(),
        other => label(other).replace("**", "").replace('`', ""),
    }
}

fn label(subject: &str) -> String {
    match subject {
        "rhai" => "**rhai-supervisor**".to_string(),
        "bash" => "bash `wait -n` loop".to_string(),
        "s6-ready" => "s6 + readiness (notification-fd)".to_string(),
        "rhai-script-nodes" => "**rhai-supervisor script nodes**".to_string(),
        "floor-exec" => "floor: spawn `rhai-supervisor exec` (same script) N times".to_string(),
        "floor-version" => "floor: spawn `rhai-supervisor --version` N times".to_string(),
        other => other.to_string(),
    }
}
