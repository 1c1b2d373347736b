//! What `top` shows, and what the keys do to it, without a terminal: the node table as
//! the events tell it, the usage the status samples bring (CPU % from two samples of
//! a process's CPU time), the selection, the filter, the confirmation of a destroy, the
//! output of the node followed. Everything here is a plain function of what came in,
//! so it is tested without a supervisor or a screen.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::{Event, EventKind};

/// Lines of the followed node's output kept.
pub const OUTPUT_KEPT: usize = 1000;
/// How long a message stays in the footer.
const MESSAGE_TIME: Duration = Duration::from_secs(5);

/// One node as the table shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub state: String,
    pub pid: Option<i64>,
    /// When its process started (for the uptime).
    pub since: Option<Instant>,
    pub restarts: i64,
    /// CPU use over the last sample, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// The CPU seconds of the last sample, its time, and the pid they were of.
    pub cpu_seen: Option<(f64, Instant, i64)>,
    pub memory: Option<i64>,
    /// `ok`, `failing (1/3)`, or nothing without a health check.
    pub health: Option<String>,
    /// `code 1`, `SIGKILL`.
    pub last_exit: Option<String>,
}

/// What the keys are doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Typing a filter; the one before, for Esc.
    Filter {
        before: String,
    },
    /// Asking whether to destroy this node.
    Confirm(String),
}

/// What `top` must do after a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    Restart(String),
    Destroy(String),
    /// Follow this node's output below the table.
    Follow(String),
}

/// A key, as `top` reads it (so this module needs no terminal library).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Ctrl(char),
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Enter,
    Esc,
    Backspace,
}

/// The output pane.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// The node followed, and which follow this is (lines of an earlier one are
    /// dropped).
    pub node: Option<String>,
    pub generation: u64,
    /// Lines, oldest first; `true` for stderr.
    pub lines: VecDeque<(bool, String)>,
    /// Why the stream ended, once it has.
    pub ended: Option<String>,
}

/// Everything `top` shows.
#[derive(Debug)]
pub struct Model {
    /// Where the supervisor is, for the header.
    pub target: String,
    pub rows: BTreeMap<String, Row>,
    /// The selected node, by name, so that it stays selected as rows come and go.
    pub selected: Option<String>,
    pub filter: String,
    pub mode: Mode,
    pub message: Option<(String, Instant)>,
    pub output: Output,
    /// Events were missed: the next sample sets the whole table.
    pub resync: bool,
    /// Lines the page keys move by (the table's height, as last drawn).
    pub page: usize,
}

impl Model {
    pub fn new(target: String) -> Model {
        Model {
            target,
            rows: BTreeMap::new(),
            selected: None,
            filter: String::new(),
            mode: Mode::Normal,
            message: None,
            output: Output::default(),
            resync: false,
            page: 10,
        }
    }

    /// The names shown, in order: those that match the filter.
    pub fn visible(&self) -> Vec<&str> {
        let filter = self.filter.to_lowercase();
        self.rows
            .iter()
            .filter(|(name, row)| {
                filter.is_empty()
                    || name.to_lowercase().contains(&filter)
                    || row.state.contains(&filter)
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Where the selection is among the visible rows (and it is made valid: the first
    /// row when nothing or a hidden row is selected).
    pub fn selected_index(&mut self) -> Option<usize> {
        let visible = self.visible();
        let index = self
            .selected
            .as_deref()
            .and_then(|s| visible.iter().position(|n| *n == s));
        match index {
            Some(index) => Some(index),
            None => {
                let first = visible.first().map(|s| s.to_string());
                self.selected = first;
                self.selected.as_ref().map(|_| 0)
            }
        }
    }

    /// Sets the table from a status (`{"nodes": {NAME: NodeStatus}}`): at the start, and
    /// after events were missed.
    pub fn set_status(&mut self, status: &Value, now: Instant) {
        let Some(nodes) = status.get("nodes").and_then(Value::as_object) else {
            return;
        };
        let mut rows = BTreeMap::new();
        for (name, node) in nodes {
            let mut row = self.rows.remove(name).unwrap_or_default();
            row.state = text(node, "state").unwrap_or_default();
            row.pid = node.get("pid").and_then(Value::as_i64);
            row.restarts = node.get("restarts").and_then(Value::as_i64).unwrap_or(0);
            row.since = uptime(node).map(|up| now.checked_sub(up).unwrap_or(now));
            row.health = text(node, "health").map(|h| short_health(&h));
            row.last_exit = exit(node);
            usage(&mut row, node, now);
            rows.insert(name.clone(), row);
        }
        self.rows = rows;
        self.resync = false;
    }

    /// A status sample (once a second): the usage of each node, from which CPU % comes.
    /// The table itself follows the events; only after missed events does a sample set
    /// it whole.
    pub fn sample(&mut self, status: &Value, now: Instant) {
        if self.resync {
            return self.set_status(status, now);
        }
        let Some(nodes) = status.get("nodes").and_then(Value::as_object) else {
            return;
        };
        for (name, node) in nodes {
            if let Some(row) = self.rows.get_mut(name) {
                if row.pid.is_some() && row.pid == node.get("pid").and_then(Value::as_i64) {
                    if let Some(up) = uptime(node) {
                        row.since = Some(now.checked_sub(up).unwrap_or(now));
                    }
                    row.health = text(node, "health").map(|h| short_health(&h));
                    usage(row, node, now);
                }
            }
        }
    }

    /// One event of the supervisor.
    pub fn event(&mut self, event: &Event, now: Instant) {
        let Some(kind) = event.kind() else {
            return;
        };
        if kind == EventKind::Reloaded {
            self.say(event.describe(), now);
            return;
        }
        let Some(name) = &event.node else {
            return;
        };
        if kind == EventKind::Destroyed {
            self.rows.remove(name);
            return;
        }
        let row = self.rows.entry(name.clone()).or_default();
        if let Some(state) = &event.state {
            row.state = state.clone();
        }
        match kind {
            EventKind::Started => {
                row.pid = event.pid;
                row.since = Some(now);
                row.restarts = event.restarts.unwrap_or(row.restarts);
                row.cpu_percent = None;
                row.cpu_seen = None;
                row.memory = None;
            }
            EventKind::Exited => {
                row.pid = None;
                row.since = None;
                row.cpu_percent = None;
                row.cpu_seen = None;
                row.memory = None;
                row.health = None;
                row.last_exit = event.exit();
            }
            EventKind::Health => {
                row.health = match event.health.as_deref() {
                    Some("healthy") => Some("ok".into()),
                    _ => Some(match (event.failures, event.limit) {
                        (Some(f), Some(l)) => format!("failing {f}/{l}"),
                        _ => "failing".into(),
                    }),
                };
            }
            EventKind::Ready
            | EventKind::Stopping
            | EventKind::Created
            | EventKind::Waiting
            | EventKind::Reviving
            | EventKind::Failed
            | EventKind::Destroyed
            | EventKind::Reloaded => {}
        }
    }

    /// Events were left out: the table is set from the next sample.
    pub fn missed(&mut self) {
        self.resync = true;
    }

    /// Shows `text` in the footer for a while.
    pub fn say(&mut self, text: String, now: Instant) {
        self.message = Some((text, now));
    }

    /// The footer's message, while it lasts.
    pub fn message(&self, now: Instant) -> Option<&str> {
        self.message
            .as_ref()
            .filter(|(_, at)| now.duration_since(*at) < MESSAGE_TIME)
            .map(|(text, _)| text.as_str())
    }

    /// When the footer's message goes (the view is drawn again then).
    pub fn message_until(&self) -> Option<Instant> {
        self.message.as_ref().map(|(_, at)| *at + MESSAGE_TIME)
    }

    /// Starts following `node`'s output: what came of an earlier follow is dropped.
    pub fn follow(&mut self, node: &str) -> u64 {
        self.output.generation += 1;
        self.output.node = Some(node.to_string());
        self.output.lines.clear();
        self.output.ended = None;
        self.output.generation
    }

    /// Lines of the output followed (of follow `generation`).
    pub fn output_lines(&mut self, generation: u64, lines: Vec<(bool, String)>) {
        if generation != self.output.generation {
            return;
        }
        self.output.lines.extend(lines);
        let excess = self.output.lines.len().saturating_sub(OUTPUT_KEPT);
        self.output.lines.drain(..excess);
    }

    /// The output followed ended (or could not start), for this reason.
    pub fn output_ended(&mut self, generation: u64, reason: String) {
        if generation == self.output.generation {
            self.output.ended = Some(reason);
        }
    }

    /// A key: what it changes here, and what `top` must do.
    pub fn key(&mut self, key: Key, now: Instant) -> Action {
        if key == Key::Ctrl('c') {
            return Action::Quit;
        }
        match self.mode.clone() {
            Mode::Confirm(node) => {
                self.mode = Mode::Normal;
                if matches!(key, Key::Char('y') | Key::Char('Y')) {
                    self.say(format!("destroying node '{node}'"), now);
                    return Action::Destroy(node);
                }
                self.say(format!("node '{node}' is left as it is"), now);
                Action::None
            }
            Mode::Filter { before } => {
                match key {
                    Key::Enter => self.mode = Mode::Normal,
                    Key::Esc => {
                        self.filter = before;
                        self.mode = Mode::Normal;
                    }
                    Key::Backspace => {
                        self.filter.pop();
                    }
                    Key::Char(c) if !c.is_control() => self.filter.push(c),
                    _ => {}
                }
                Action::None
            }
            Mode::Normal => self.normal_key(key, now),
        }
    }

    fn normal_key(&mut self, key: Key, now: Instant) -> Action {
        let count = self.visible().len();
        let index = self.selected_index();
        let step = |by: isize| -> Option<usize> {
            let last = count.checked_sub(1)?;
            let at = index.unwrap_or(0) as isize + by;
            Some(at.clamp(0, last as isize) as usize)
        };
        let moved = match key {
            Key::Char('q') => return Action::Quit,
            Key::Up | Key::Char('k') => step(-1),
            Key::Down | Key::Char('j') => step(1),
            Key::PageUp => step(-(self.page.max(1) as isize)),
            Key::PageDown => step(self.page.max(1) as isize),
            Key::Home | Key::Char('g') => step(isize::MIN / 2),
            Key::End | Key::Char('G') => step(isize::MAX / 2),
            Key::Char('/') => {
                self.mode = Mode::Filter {
                    before: self.filter.clone(),
                };
                return Action::None;
            }
            Key::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                return Action::None;
            }
            Key::Enter => {
                return match self.selected.clone() {
                    Some(node) => Action::Follow(node),
                    None => Action::None,
                };
            }
            Key::Char('r') => {
                return match self.selected.clone() {
                    Some(node) => {
                        self.say(format!("restarting node '{node}'"), now);
                        Action::Restart(node)
                    }
                    None => Action::None,
                };
            }
            Key::Char('d') => {
                if let Some(node) = self.selected.clone() {
                    self.mode = Mode::Confirm(node);
                }
                return Action::None;
            }
            _ => return Action::None,
        };
        if let Some(at) = moved {
            self.selected = self.visible().get(at).map(|s| s.to_string());
        }
        Action::None
    }
}

fn text(node: &Value, key: &str) -> Option<String> {
    node.get(key).and_then(Value::as_str).map(str::to_string)
}

fn uptime(node: &Value) -> Option<Duration> {
    node.get("uptime")
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// `code 1`, `SIGKILL`, from a status's `exit`.
fn exit(node: &Value) -> Option<String> {
    let exit = node.get("exit")?;
    if let Some(code) = exit.get("code").and_then(Value::as_i64) {
        return Some(format!("code {code}"));
    }
    let signal = exit.get("signal").and_then(Value::as_i64)?;
    Some(crate::config::ExitInfo::signal_name(signal as i32))
}

/// `ok`, or `failing 1/3` of `failing (1/3): why`.
fn short_health(health: &str) -> String {
    match health.strip_prefix("failing (") {
        Some(rest) => format!("failing {}", rest.split(')').next().unwrap_or("")),
        None => health.to_string(),
    }
}

/// Takes a sample's `cpu` (seconds) and `memory` (bytes): CPU % is the CPU time used
/// since the last sample of the same process, over the time between them.
fn usage(row: &mut Row, node: &Value, now: Instant) {
    row.memory = node.get("memory").and_then(Value::as_i64);
    let (Some(cpu), Some(pid)) = (node.get("cpu").and_then(Value::as_f64), row.pid) else {
        row.cpu_percent = None;
        row.cpu_seen = None;
        return;
    };
    if let Some((before, at, seen_pid)) = row.cpu_seen {
        let elapsed = now.duration_since(at).as_secs_f64();
        if seen_pid == pid && elapsed > 0.05 {
            row.cpu_percent = Some(((cpu - before) / elapsed * 100.0).max(0.0));
        }
    }
    row.cpu_seen = Some((cpu, now, pid));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model() -> Model {
        let mut model = Model::new("rhai-supervisor.sock".into());
        let status = json!({"nodes": {
            "db": {"state": "running", "pid": 10, "restarts": 0, "uptime": 5.0, "health": "ok"},
            "web": {"state": "running", "pid": 11, "restarts": 2, "uptime": 65.0,
                    "exit": {"signal": 9}},
            "worker": {"state": "failed", "restarts": 5, "exit": {"code": 3},
                       "health": "failing (3/3): no"},
        }});
        model.set_status(&status, Instant::now());
        model
    }

    fn event(node: &str, kind: EventKind, state: &str) -> Event {
        let mut event = Event::new(kind, Some(node));
        event.state = Some(state.into());
        event
    }

    #[test]
    fn a_status_sets_the_table() {
        let model = model();
        assert_eq!(model.visible(), ["db", "web", "worker"]);
        let web = &model.rows["web"];
        assert_eq!((web.pid, web.restarts), (Some(11), 2));
        assert_eq!(web.last_exit.as_deref(), Some("SIGKILL"));
        assert!(web.since.unwrap().elapsed() >= Duration::from_secs(64));
        let worker = &model.rows["worker"];
        assert_eq!(worker.last_exit.as_deref(), Some("code 3"));
        assert_eq!(worker.health.as_deref(), Some("failing 3/3"));
    }

    #[test]
    fn events_move_the_rows() {
        let mut model = model();
        let now = Instant::now();
        let mut exited = event("web", EventKind::Exited, "reviving")
            .with_exit(Some(crate::config::ExitInfo::Code(1)));
        exited.pid = Some(11);
        model.event(&exited, now);
        let web = &model.rows["web"];
        assert_eq!((web.state.as_str(), web.pid), ("reviving", None));
        assert_eq!(web.last_exit.as_deref(), Some("code 1"));
        let mut started = event("web", EventKind::Started, "running");
        started.pid = Some(20);
        started.restarts = Some(3);
        model.event(&started, now);
        assert_eq!(
            (model.rows["web"].pid, model.rows["web"].restarts),
            (Some(20), 3)
        );
        model.event(&event("new", EventKind::Created, "waiting"), now);
        assert_eq!(model.rows["new"].state, "waiting");
        let mut unhealthy = event("db", EventKind::Health, "running");
        unhealthy.health = Some("unhealthy".into());
        unhealthy.failures = Some(1);
        unhealthy.limit = Some(3);
        model.event(&unhealthy, now);
        assert_eq!(model.rows["db"].health.as_deref(), Some("failing 1/3"));
        model.event(&event("db", EventKind::Destroyed, ""), now);
        assert!(!model.rows.contains_key("db"));
        let mut reload = Event::new(EventKind::Reloaded, None);
        reload.summary = Some("1 created".into());
        model.event(&reload, now);
        assert_eq!(model.message(now), Some("reload applied: 1 created"));
        let unknown = Event {
            event: "teleported".into(),
            ..event("web", EventKind::Created, "x")
        };
        model.event(&unknown, now);
        assert_eq!(
            model.rows["web"].state, "running",
            "unknown kinds are ignored"
        );
    }

    #[test]
    fn cpu_percent_comes_from_two_samples_of_one_process() {
        let mut model = model();
        let t0 = Instant::now();
        let sample = |cpu: f64, pid: i64| {
            json!({"nodes": {"web": {"state": "running", "pid": pid, "cpu": cpu,
                                     "memory": 1_048_576, "uptime": 70.0}}})
        };
        model.sample(&sample(1.0, 11), t0);
        assert_eq!(
            model.rows["web"].cpu_percent, None,
            "one sample says nothing"
        );
        assert_eq!(model.rows["web"].memory, Some(1_048_576));
        model.sample(&sample(1.5, 11), t0 + Duration::from_secs(2));
        assert_eq!(model.rows["web"].cpu_percent, Some(25.0));
        // A sample of another process than the table's (it restarted meanwhile) is
        // not taken.
        model.sample(&sample(0.1, 99), t0 + Duration::from_secs(3));
        assert_eq!(model.rows["web"].cpu_percent, Some(25.0));
        // Samples never add or remove rows, unless events were missed.
        model.sample(&json!({"nodes": {}}), t0);
        assert_eq!(model.rows.len(), 3);
        model.missed();
        model.sample(&json!({"nodes": {"only": {"state": "running"}}}), t0);
        assert_eq!(model.visible(), ["only"]);
        assert!(!model.resync);
    }

    #[test]
    fn keys_select_filter_confirm_and_act() {
        let mut model = model();
        let now = Instant::now();
        assert_eq!(model.selected_index(), Some(0));
        assert_eq!(model.key(Key::Down, now), Action::None);
        assert_eq!(model.key(Key::Char('j'), now), Action::None);
        assert_eq!(model.selected.as_deref(), Some("worker"));
        model.key(Key::Down, now);
        assert_eq!(
            model.selected.as_deref(),
            Some("worker"),
            "stays at the end"
        );
        model.key(Key::Char('k'), now);
        assert_eq!(model.key(Key::Enter, now), Action::Follow("web".into()));
        assert_eq!(
            model.key(Key::Char('r'), now),
            Action::Restart("web".into())
        );
        // d asks first; anything but y keeps the node.
        assert_eq!(model.key(Key::Char('d'), now), Action::None);
        assert_eq!(model.mode, Mode::Confirm("web".into()));
        assert_eq!(model.key(Key::Char('n'), now), Action::None);
        assert_eq!(model.message(now), Some("node 'web' is left as it is"));
        model.key(Key::Char('d'), now);
        assert_eq!(
            model.key(Key::Char('y'), now),
            Action::Destroy("web".into())
        );
        // A filter as typed; Esc while typing puts the old one back.
        model.key(Key::Char('/'), now);
        for c in "wor".chars() {
            model.key(Key::Char(c), now);
        }
        assert_eq!(model.visible(), ["worker"]);
        assert_eq!(model.selected_index(), Some(0));
        assert_eq!(model.selected.as_deref(), Some("worker"));
        model.key(Key::Enter, now);
        assert_eq!(model.mode, Mode::Normal);
        model.key(Key::Char('/'), now);
        model.key(Key::Backspace, now);
        model.key(Key::Esc, now);
        assert_eq!(model.filter, "wor");
        model.key(Key::Esc, now);
        assert_eq!(model.filter, "", "Esc clears a filter");
        // The filter matches states too.
        model.filter = "fail".into();
        assert_eq!(model.visible(), ["worker"]);
        assert_eq!(model.key(Key::Char('q'), now), Action::Quit);
        model.mode = Mode::Filter {
            before: String::new(),
        };
        assert_eq!(model.key(Key::Ctrl('c'), now), Action::Quit);
    }

    #[test]
    fn the_output_of_an_earlier_follow_is_dropped() {
        let mut model = model();
        let first = model.follow("web");
        model.output_lines(first, vec![(false, "a".into())]);
        let second = model.follow("db");
        model.output_lines(first, vec![(false, "late".into())]);
        model.output_lines(second, vec![(true, "b".into())]);
        assert_eq!(
            model.output.lines.iter().collect::<Vec<_>>(),
            [&(true, "b".to_string())]
        );
        model.output_ended(first, "old".into());
        assert_eq!(model.output.ended, None);
        let many: Vec<(bool, String)> = (0..OUTPUT_KEPT + 5)
            .map(|i| (false, i.to_string()))
            .collect();
        model.output_lines(second, many);
        assert_eq!(model.output.lines.len(), OUTPUT_KEPT);
        assert_eq!(
            model.output.lines.back().unwrap().1,
            (OUTPUT_KEPT + 4).to_string()
        );
    }
}
