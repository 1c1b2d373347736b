//! What `ctl events` (a `follow` of the topic `events`) carries: one `Event` per change
//! of a node's state (created, started, ready, health, stopping, exited, reviving,
//! failed, destroyed) and per applied reload, as JSON objects with stable field names.
//!
//! An event is plain data: the supervisor makes it where the change happens, the loop
//! publishes it to the followers, and clients (`ctl events`, `top`, other programs)
//! read it back. Fields that do not apply to a kind are left out of the JSON.

use serde::{Deserialize, Serialize};

use super::ExitInfo;

/// What happened, as it is spelled in `event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A node was created (`state` says whether it waits, starts or runs).
    Created,
    /// A node waits for its dependencies again (`waiting_for`).
    Waiting,
    /// A process of the node started (`pid`, `restarts`).
    Started,
    /// The node is ready (`pid`).
    Ready,
    /// Its health check changed its verdict (`health`: `healthy` or `unhealthy`,
    /// `reason`, `failures`, `limit`).
    Health,
    /// Its process is asked to stop (`pid`; `state` is `stopping` or `restarting`).
    Stopping,
    /// Its process ended (`pid`, `code` or `signal`, `uptime`).
    Exited,
    /// It is revived after `delay` seconds.
    Reviving,
    /// It is not revived any more, until restarted (`reason`).
    Failed,
    /// It is gone: destroyed and its last process has exited.
    Destroyed,
    /// A reload of the scripts was applied (no `node`; `summary`).
    Reloaded,
}

impl EventKind {
    /// Every kind, in the order of a node's life.
    pub const ALL: [EventKind; 11] = [
        EventKind::Created,
        EventKind::Waiting,
        EventKind::Started,
        EventKind::Ready,
        EventKind::Health,
        EventKind::Stopping,
        EventKind::Exited,
        EventKind::Reviving,
        EventKind::Failed,
        EventKind::Destroyed,
        EventKind::Reloaded,
    ];

    /// The name used in `event`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Waiting => "waiting",
            EventKind::Started => "started",
            EventKind::Ready => "ready",
            EventKind::Health => "health",
            EventKind::Stopping => "stopping",
            EventKind::Exited => "exited",
            EventKind::Reviving => "reviving",
            EventKind::Failed => "failed",
            EventKind::Destroyed => "destroyed",
            EventKind::Reloaded => "reloaded",
        }
    }

    /// The kind of this name.
    pub fn named(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One change, as a follower receives it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When, in RFC 3339 (UTC, milliseconds).
    pub ts: String,
    /// The node; absent for a change of the supervisor as a whole (a reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What happened: `created`, `waiting`, `started`, `ready`, `health`, `stopping`,
    /// `exited`, `reviving`, `failed`, `destroyed` or `reloaded`.
    pub event: String,
    /// The node's state after the change, as `status` names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The process concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    /// `exited`: the exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// `exited`: the signal that killed it (`SIGKILL`), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// `exited`: seconds the process ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<f64>,
    /// `reviving`: seconds until the new process starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<f64>,
    /// `started`: processes started after the first one, this one included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<i64>,
    /// `health`: `healthy` or `unhealthy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// `health`: consecutive failed checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<i64>,
    /// `health`: how many consecutive failed checks restart the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// `failed`, `health` (unhealthy): why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `created` (while waiting), `waiting`: the dependencies not met yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<Vec<String>>,
    /// `reloaded`: what the reload did, in a few words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl Event {
    /// An event of `kind` about `node` (or the supervisor, for `None`), now.
    pub fn new(kind: EventKind, node: Option<&str>) -> Event {
        Event {
            ts: crate::config::rfc3339(std::time::SystemTime::now()),
            node: node.map(str::to_string),
            event: kind.name().to_string(),
            ..Event::default()
        }
    }

    /// Its kind; `None` for a kind this program does not know (a newer supervisor's).
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::named(&self.event)
    }

    /// Sets `code` or `signal` from how a process ended.
    pub fn with_exit(mut self, exit: Option<ExitInfo>) -> Event {
        match exit {
            Some(ExitInfo::Code(code)) => self.code = Some(i64::from(code)),
            Some(ExitInfo::Signal(signal)) => self.signal = Some(ExitInfo::signal_name(signal)),
            None => {}
        }
        self
    }

    /// How the process ended, from `code` and `signal`.
    pub fn exit(&self) -> Option<String> {
        match (&self.code, &self.signal) {
            (Some(code), _) => Some(format!("code {code}")),
            (None, Some(signal)) => Some(signal.clone()),
            (None, None) => None,
        }
    }

    /// The event as one line of JSON, without a newline.
    pub fn to_json(&self) -> String {
        // Plain strings and numbers only: encoding cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// What happened, for a person, after the time and the node's name:
    /// `started (pid 4242)`, `exited with code 1 after 3.2 s`, `reviving in 2 s`.
    pub fn describe(&self) -> String {
        let pid = self.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        let waiting = |text: &str| match &self.waiting_for {
            Some(deps) if !deps.is_empty() => format!("{text}, waiting for {}", deps.join(", ")),
            _ => text.to_string(),
        };
        let reason = self
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        match self.kind() {
            Some(EventKind::Created) => waiting("created"),
            Some(EventKind::Waiting) => waiting("stopped"),
            Some(EventKind::Started) => match self.restarts {
                Some(n) if n > 0 => format!("started{pid}, restart {n}"),
                _ => format!("started{pid}"),
            },
            Some(EventKind::Ready) => format!("ready{pid}"),
            Some(EventKind::Health) => {
                let count = match (self.failures, self.limit) {
                    (Some(failures), Some(limit)) if failures > 0 => {
                        format!(" ({failures}/{limit})")
                    }
                    _ => String::new(),
                };
                format!(
                    "{}{count}{reason}",
                    self.health.as_deref().unwrap_or("health")
                )
            }
            Some(EventKind::Stopping) => match self.state.as_deref() {
                Some("restarting") => format!("restarting{pid}"),
                _ => format!("stopping{pid}"),
            },
            Some(EventKind::Exited) => {
                let how = match (&self.code, &self.signal) {
                    (Some(code), _) => format!("exited with code {code}"),
                    (None, Some(signal)) => format!("killed by {signal}"),
                    (None, None) => "exited".to_string(),
                };
                let after = self
                    .uptime
                    .map(|s| format!(" after {}", short_seconds(s)))
                    .unwrap_or_default();
                format!("{how}{pid}{after}")
            }
            Some(EventKind::Reviving) => match self.delay {
                Some(delay) if delay > 0.0 => format!("reviving in {}", short_seconds(delay)),
                _ => "reviving now".to_string(),
            },
            Some(EventKind::Failed) => format!("failed{reason}"),
            Some(EventKind::Destroyed) => "destroyed".to_string(),
            Some(EventKind::Reloaded) => match &self.summary {
                Some(summary) => format!("reload applied: {summary}"),
                None => "reload applied".to_string(),
            },
            None => self.event.clone(),
        }
    }
}

/// `0.01 s`, `0.5 s`, `3.2 s`, `12 s`, `1500 s`: seconds as a person reads them.
pub fn short_seconds(seconds: f64) -> String {
    let text = if seconds >= 10.0 {
        format!("{seconds:.0}")
    } else if seconds >= 0.095 {
        format!("{seconds:.1}")
    } else {
        format!("{seconds:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text} s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        let mut event = Event::new(kind, Some("web"));
        event.ts = "2025-03-12T10:01:02.417Z".into();
        event
    }

    #[test]
    fn the_json_has_ts_node_and_event_first_and_only_what_applies() {
        let mut started = event(EventKind::Started);
        started.state = Some("running".into());
        started.pid = Some(4242);
        started.restarts = Some(0);
        assert_eq!(
            started.to_json(),
            r#"{"ts":"2025-03-12T10:01:02.417Z","node":"web","event":"started","state":"running","pid":4242,"restarts":0}"#
        );
        let back: Event = serde_json::from_str(&started.to_json()).unwrap();
        assert_eq!(back, started);
        let mut reload = Event::new(EventKind::Reloaded, None);
        reload.summary = Some("1 created".into());
        assert!(!reload.to_json().contains("node"), "{}", reload.to_json());
    }

    #[test]
    fn each_kind_reads_as_a_phrase() {
        let mut exited = event(EventKind::Exited).with_exit(Some(ExitInfo::Code(1)));
        exited.pid = Some(7);
        exited.uptime = Some(3.24);
        assert_eq!(exited.describe(), "exited with code 1 (pid 7) after 3.2 s");
        let killed = event(EventKind::Exited).with_exit(Some(ExitInfo::Signal(9)));
        assert_eq!(killed.describe(), "killed by SIGKILL");
        assert_eq!(killed.exit().as_deref(), Some("SIGKILL"));
        let mut reviving = event(EventKind::Reviving);
        reviving.delay = Some(2.0);
        assert_eq!(reviving.describe(), "reviving in 2 s");
        reviving.delay = Some(0.0);
        assert_eq!(reviving.describe(), "reviving now");
        let mut health = event(EventKind::Health);
        health.health = Some("unhealthy".into());
        health.failures = Some(2);
        health.limit = Some(3);
        health.reason = Some("connection refused".into());
        assert_eq!(health.describe(), "unhealthy (2/3): connection refused");
        let mut restarting = event(EventKind::Stopping);
        restarting.state = Some("restarting".into());
        restarting.pid = Some(9);
        assert_eq!(restarting.describe(), "restarting (pid 9)");
        let mut created = event(EventKind::Created);
        created.waiting_for = Some(vec!["db".into()]);
        assert_eq!(created.describe(), "created, waiting for db");
        let unknown = Event {
            event: "teleported".into(),
            ..event(EventKind::Created)
        };
        assert_eq!(unknown.describe(), "teleported");
        for kind in EventKind::ALL {
            assert_eq!(EventKind::named(kind.name()), Some(kind));
        }
    }

    #[test]
    fn seconds_read_naturally() {
        assert_eq!(short_seconds(0.5), "0.5 s");
        assert_eq!(short_seconds(2.0), "2 s");
        assert_eq!(short_seconds(9.96), "10 s");
        assert_eq!(short_seconds(61.4), "61 s");
        assert_eq!(short_seconds(0.0138), "0.01 s");
        assert_eq!(short_seconds(0.001), "0 s");
        assert_eq!(short_seconds(100.0), "100 s");
    }
}
