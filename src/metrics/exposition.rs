//! The Prometheus text format (version 0.0.4) of what a supervisor shows: each node's
//! figures, labelled `node`, and the supervisor's own `process_*` figures, with the
//! names and meanings that Prometheus' own clients give those.
//!
//! Each family is one group of lines, `# HELP` and `# TYPE` first; label values are
//! escaped as the format says (`\\`, `\"`, `\n`).

use std::fmt::Write;

use crate::supervisor::{Figures, STATE_NAMES};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The supervisor's own figures, as Prometheus' clients name them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Process {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// Since the Unix epoch.
    pub start_time_seconds: f64,
    /// Descriptors open now.
    pub open_fds: u64,
    /// The soft limit on open descriptors.
    pub max_fds: u64,
}

/// What the process reads once: the ticks of its CPU times and its start, the size of
/// a page, and when the machine booted.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    ticks_per_second: f64,
    page_size: u64,
    boot_time: Option<f64>,
}

impl Clock {
    /// Reads what does not change while the process runs.
    pub fn new() -> Clock {
        use nix::unistd::{SysconfVar, sysconf};
        let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
        let page = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096);
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            stat.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|t| t.trim().parse::<f64>().ok())
        });
        Clock {
            ticks_per_second: ticks.max(1) as f64,
            page_size: page.max(1) as u64,
            boot_time,
        }
    }

    /// This process's figures now, from `/proc/self` and its open-file limit; `None`
    /// when `/proc` cannot be read.
    pub fn process(&self) -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name, which is in parentheses and may hold any
        // byte: field 3 (state) is the first after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        let ticks = field(14)? + field(15)?;
        let start = field(22)? as f64 / self.ticks_per_second;
        let open_fds = open_fds();
        let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(0, |(soft, _)| soft);
        Some(Process {
            cpu_seconds: ticks as f64 / self.ticks_per_second,
            resident_bytes: field(24)? * self.page_size,
            virtual_bytes: field(23)?,
            start_time_seconds: self.boot_time.map_or(0.0, |boot| boot + start),
            open_fds,
            max_fds,
        })
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// How many descriptors this process has open. Linux (6.2 on) gives the count as the
/// size of `/proc/self/fd`, one `stat`; listing the directory instead makes the kernel
/// build an entry per descriptor, three per node of a supervisor.
fn open_fds() -> u64 {
    match std::fs::metadata("/proc/self/fd") {
        Ok(meta) if meta.len() > 0 => meta.len(),
        _ => std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
    }
}

/// The exposition of `nodes` (by name) and of `process`.
pub fn render(nodes: &[Figures], process: Option<&Process>) -> String {
    // About 700 bytes per node (eight lines of states among them).
    let mut text = String::with_capacity(2048 + nodes.len() * 720);
    let labels: Vec<String> = nodes
        .iter()
        .map(|n| format!("node=\"{}\"", escape(&n.name)))
        .collect();
    let mut family = |name: &str, kind: &str, help: &str, samples: &mut dyn FnMut(&mut String)| {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} {kind}");
        samples(&mut text);
    };
    let per_node = |name: &str, value: &dyn Fn(&Figures) -> Option<String>| {
        let mut lines = String::new();
        for (node, label) in nodes.iter().zip(&labels) {
            if let Some(value) = value(node) {
                let _ = writeln!(lines, "{name}{{{label}}} {value}");
            }
        }
        lines
    };
    let flag = |on: bool| Some(if on { "1" } else { "0" }.to_string());
    family(
        "rhai_supervisor_node_up",
        "gauge",
        "Whether the node has a process that is not being stopped (starting or running).",
        &mut |t| t.push_str(&per_node("rhai_supervisor_node_up", &|n| flag(n.up))),
    );
    family(
        "rhai_supervisor_node_ready",
        "gauge",
        "Whether the node is ready (running).",
        &mut |t| t.push_str(&per_node("rhai_supervisor_node_ready", &|n| flag(n.ready))),
    );
    family(
        "rhai_supervisor_node_restarts_total",
        "counter",
        "Processes of the node started after its first one (revivals and restarts).",
        &mut |t| {
            t.push_str(&per_node("rhai_supervisor_node_restarts_total", &|n| {
                Some(n.restarts.to_string())
            }))
        },
    );
    family(
        "rhai_supervisor_node_cpu_seconds_total",
        "counter",
        "CPU time (user and system) of the node's current process and what it started, in seconds.",
        &mut |t| {
            t.push_str(&per_node("rhai_supervisor_node_cpu_seconds_total", &|n| {
                n.cpu.map(number)
            }))
        },
    );
    family(
        "rhai_supervisor_node_memory_bytes",
        "gauge",
        "Memory the node's current process and what it started use, in bytes.",
        &mut |t| {
            t.push_str(&per_node("rhai_supervisor_node_memory_bytes", &|n| {
                n.memory.map(|m| m.to_string())
            }))
        },
    );
    family(
        "rhai_supervisor_node_state",
        "gauge",
        "The node's state: 1 for the state it is in, 0 for the others.",
        &mut |t| {
            for (node, label) in nodes.iter().zip(&labels) {
                for state in STATE_NAMES {
                    let on = u8::from(node.state == state);
                    let _ = writeln!(
                        t,
                        "rhai_supervisor_node_state{{{label},state=\"{state}\"}} {on}"
                    );
                }
            }
        },
    );
    if let Some(process) = process {
        let mut one = |name: &str, kind: &str, help: &str, value: String| {
            family(name, kind, help, &mut |t| {
                let _ = writeln!(t, "{name} {value}");
            })
        };
        one(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            number(process.cpu_seconds),
        );
        one(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            process.resident_bytes.to_string(),
        );
        one(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            process.virtual_bytes.to_string(),
        );
        one(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            number(process.start_time_seconds),
        );
        one(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            process.open_fds.to_string(),
        );
        one(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            process.max_fds.to_string(),
        );
    }
    text
}

/// A label value as the format writes it.
pub fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A sample value: Rust prints finite numbers in a form the format reads (`0.25`, `3`).
fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else if value.is_nan() {
        "NaN".into()
    } else if value > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: &'static str) -> Figures {
        Figures {
            name: name.into(),
            state,
            up: state == "running",
            ready: state == "running",
            restarts: 2,
            cpu: Some(0.25),
            memory: Some(4096),
        }
    }

    #[test]
    fn each_family_is_one_group_with_help_and_type() {
        let text = render(
            &[node("w1", "running"), node("w2", "failed")],
            Some(&Process {
                cpu_seconds: 1.5,
                resident_bytes: 10,
                virtual_bytes: 20,
                start_time_seconds: 1_700_000_000.25,
                open_fds: 7,
                max_fds: 1024,
            }),
        );
        let mut families = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(Some(&name.to_string()), families.last(), "{line}");
            }
        }
        assert_eq!(families.len(), 12, "{families:?}");
        assert!(text.contains("rhai_supervisor_node_up{node=\"w1\"} 1\n"));
        assert!(text.contains("rhai_supervisor_node_up{node=\"w2\"} 0\n"));
        assert!(text.contains("rhai_supervisor_node_restarts_total{node=\"w1\"} 2\n"));
        assert!(text.contains("rhai_supervisor_node_cpu_seconds_total{node=\"w1\"} 0.25\n"));
        assert!(text.contains("rhai_supervisor_node_state{node=\"w2\",state=\"failed\"} 1\n"));
        assert!(text.contains("rhai_supervisor_node_state{node=\"w2\",state=\"running\"} 0\n"));
        assert!(text.contains("process_start_time_seconds 1700000000.25\n"));
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_are_escaped_and_unknown_usage_is_left_out() {
        let mut odd = node("a\"b\\c\nd", "waiting");
        odd.cpu = None;
        odd.memory = None;
        let text = render(&[odd], None);
        assert!(
            text.contains(r#"rhai_supervisor_node_up{node="a\"b\\c\nd"} 0"#),
            "{text}"
        );
        assert!(!text.contains("rhai_supervisor_node_cpu_seconds_total{"));
        assert!(!text.contains("process_"));
    }

    #[test]
    fn this_process_figures_are_read() {
        let process = Clock::new().process().expect("/proc/self");
        assert!(process.resident_bytes > 0 && process.virtual_bytes > process.resident_bytes);
        assert!(process.open_fds >= 3 && process.max_fds >= process.open_fds);
        let listed = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        assert!(
            process.open_fds.abs_diff(listed) <= 2,
            "{process:?} {listed}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            process.start_time_seconds > now - 3600.0 && process.start_time_seconds <= now + 1.0,
            "{process:?}"
        );
    }
}
