//! How a supervisor's answers are shown to a person: the status table of `ctl status`
//! and the REPL's `:status`, and the table of several hosts (`ctl --ssh`).

use crate::config::{ExitInfo, NodeStatus, Status};

/// `NAME STATE PID RESTARTS UPTIME CPU% MEM LAST EXIT`, one row per node, columns
/// aligned; `CPU%` and `MEM` when the status has what nodes use, and `INFO` last when a
/// node has something to say (what it waits for, since when it is stopping, a failing
/// health check, its `STATUS=` text).
pub fn status_table(status: &Status) -> String {
    let mut rows = vec![HEADERS.iter().map(|h| h.to_string()).collect()];
    rows.extend(status.nodes.iter().map(|(name, node)| row(name, node)));
    aligned(&without_empty_columns(rows))
}

/// The status of several hosts in one table: `HOST` first, then the columns of
/// `status_table`; hosts in the order given, each one's nodes by name.
pub fn status_table_by_host(hosts: &[(String, Status)]) -> String {
    let mut header = vec!["HOST".to_string()];
    header.extend(HEADERS.iter().map(|h| h.to_string()));
    let mut rows = vec![header];
    for (host, status) in hosts {
        for (name, node) in &status.nodes {
            let mut cells = vec![host.clone()];
            cells.extend(row(name, node));
            rows.push(cells);
        }
    }
    aligned(&without_empty_columns(rows))
}

const HEADERS: [&str; 9] = [
    "NAME",
    "STATE",
    "PID",
    "RESTARTS",
    "UPTIME",
    "CPU%",
    "MEM",
    "LAST EXIT",
    "INFO",
];

/// The `INFO` column (the last) only when some node has something in it; `CPU%` and
/// `MEM` only when some node has a figure.
fn without_empty_columns(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    let Some(header) = rows.first() else {
        return rows;
    };
    let width = header.len();
    let empty = |rows: &[Vec<String>], column: usize, blank: &str| {
        rows[1..]
            .iter()
            .all(|row| row.get(column).is_none_or(|c| c.is_empty() || c == blank))
    };
    let mut drop: Vec<usize> = Vec::new();
    if empty(&rows, width - 1, "") {
        drop.push(width - 1);
    }
    for column in ["CPU%", "MEM"] {
        if let Some(at) = header.iter().position(|h| h == column) {
            if empty(&rows, at, "-") {
                drop.push(at);
            }
        }
    }
    drop.sort_unstable();
    for row in &mut rows {
        for &at in drop.iter().rev() {
            if at < row.len() {
                row.remove(at);
            }
        }
    }
    rows
}

fn row(name: &str, node: &NodeStatus) -> Vec<String> {
    vec![
        name.to_string(),
        node.state.clone(),
        node.pid.map_or("-".into(), |p| p.to_string()),
        node.restarts.to_string(),
        node.uptime.map_or("-".into(), uptime),
        cpu_percent(node),
        node.memory
            .map_or("-".into(), |bytes| memory(bytes.max(0) as u64)),
        last_exit(node),
        info(node),
    ]
}

/// The share of one core the live process has used on average since it started, as
/// `ps` shows it: `12.5%`.
fn cpu_percent(node: &NodeStatus) -> String {
    match (node.cpu, node.uptime) {
        (Some(cpu), Some(up)) if up > 0.0 => format!("{:.1}%", 100.0 * cpu / up),
        (Some(_), _) => "0.0%".into(),
        (None, _) => "-".into(),
    }
}

/// `850K`, `12.3M`, `1.2G`.
pub fn memory(bytes: u64) -> String {
    let units = [(1u64 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (scale, unit) in units {
        if bytes >= scale {
            let value = bytes as f64 / scale as f64;
            return if value >= 100.0 {
                format!("{value:.0}{unit}")
            } else {
                format!("{value:.1}{unit}")
            };
        }
    }
    format!("{bytes}B")
}

fn last_exit(node: &NodeStatus) -> String {
    let Some(exit) = node.exit else {
        return "-".into();
    };
    let text = match exit {
        ExitInfo::Code(code) => format!("code {code}"),
        ExitInfo::Signal(signal) => ExitInfo::signal_name(signal),
    };
    match &node.exit_reason {
        Some(reason) => format!("{text}: {reason}"),
        None => text,
    }
}

/// The rows as lines, each column as wide as its widest cell, two spaces apart.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let mut widths = vec![0; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[column]));
            }
        }
        table.push_str(line.trim_end());
        table.push('\n');
    }
    table
}

/// What a node has to say beyond its state, for the `INFO` column.
fn info(node: &NodeStatus) -> String {
    let mut parts = Vec::new();
    if let Some(waiting) = &node.waiting_for {
        parts.push(format!("waiting for {}", waiting.join(", ")));
    }
    if let Some(seconds) = node.stopping_for {
        parts.push(format!("stopping for {}", uptime(seconds)));
    }
    if let Some(health) = node.health.as_deref().filter(|h| *h != "ok") {
        parts.push(format!("health {health}"));
    }
    if let Some(text) = &node.status_text {
        parts.push(text.clone());
    }
    parts.join("; ")
}

/// `42s`, `5m03s`, `2h05m`, `3d04h`.
pub fn uptime(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;

    #[test]
    fn uptimes_read_naturally() {
        assert_eq!(uptime(0.4), "0s");
        assert_eq!(uptime(59.9), "59s");
        assert_eq!(uptime(183.0), "3m03s");
        assert_eq!(uptime(7500.0), "2h05m");
        assert_eq!(uptime(273_600.0), "3d04h");
    }

    #[test]
    fn the_status_table_is_aligned() {
        let mut status = Status::default();
        let mut w1 = NodeStatus::new(NodeConfig::named("w1"));
        w1.state = "running".into();
        w1.pid = Some(4242);
        w1.uptime = Some(65.0);
        let mut long = NodeStatus::new(NodeConfig::named("logger-with-a-long-name"));
        long.state = "reviving".into();
        long.restarts = 12;
        long.exit = Some(ExitInfo::Signal(9));
        status.nodes.insert("w1".into(), w1);
        status.nodes.insert("logger-with-a-long-name".into(), long);
        let expected = "\
NAME                     STATE     PID   RESTARTS  UPTIME  LAST EXIT
logger-with-a-long-name  reviving  -     12        -       SIGKILL
w1                       running   4242  0         1m05s   -
";
        assert_eq!(status_table(&status), expected);
    }

    #[test]
    fn usage_columns_when_known() {
        let mut status = Status::default();
        let mut db = NodeStatus::new(NodeConfig::named("db"));
        db.state = "running".into();
        db.pid = Some(77);
        db.uptime = Some(10.0);
        db.cpu = Some(2.5);
        db.memory = Some(12 << 20);
        db.exit = Some(ExitInfo::Signal(9));
        db.exit_reason = Some("out of memory (limit 64 MiB)".into());
        status.nodes.insert("db".into(), db);
        let expected = "\
NAME  STATE    PID  RESTARTS  UPTIME  CPU%   MEM    LAST EXIT
db    running  77   0         10s     25.0%  12.0M  SIGKILL: out of memory (limit 64 MiB)
";
        assert_eq!(status_table(&status), expected);
        assert_eq!(memory(850 << 10), "850K");
        assert_eq!(memory(3 << 29), "1.5G");
    }

    #[test]
    fn the_table_of_several_hosts_leads_with_the_host() {
        let node = |state: &str, pid: i64| {
            let mut status = NodeStatus::new(NodeConfig::named("x"));
            status.state = state.into();
            status.pid = Some(pid);
            status
        };
        let mut alpha = Status::default();
        alpha.nodes.insert("manager".into(), node("running", 10));
        alpha.nodes.insert("logger".into(), node("running", 11));
        let mut beta = Status::default();
        beta.nodes.insert("worker-1".into(), node("reviving", 12));
        let table = status_table_by_host(&[
            ("beta.example.org".into(), beta),
            ("alpha".into(), alpha),
            ("empty".into(), Status::default()),
        ]);
        let expected = "\
HOST              NAME      STATE     PID  RESTARTS  UPTIME  LAST EXIT
beta.example.org  worker-1  reviving  12   0         -       -
alpha             logger    running   11   0         -       -
alpha             manager   running   10   0         -       -
";
        assert_eq!(table, expected);
    }
}
