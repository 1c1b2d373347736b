//! The supervisor under a service manager that speaks systemd's notification protocol
//! (`Type=notify`): with `NOTIFY_SOCKET` in the supervisor's own environment, it says
//!
//! - `READY=1` once `zeek_init()` has returned and every node it created has settled:
//!   is ready, or has ended, failed or passed its `ready_timeout` (see
//!   `Supervisor::unsettled`), so that units ordered after this one start when the
//!   cluster is up;
//! - `STATUS=` a one-line summary of the nodes, with `READY=1` and whenever a node
//!   changes state afterwards (at most once per loop turn);
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, when the manager set it for this process
//!   (`WATCHDOG_PID`, if set, names it): a timer of the loop, so a loop that hangs
//!   stops sending and is restarted by the manager;
//! - `STOPPING=1` when shutdown begins.
//!
//! Without `NOTIFY_SOCKET` none of this exists: no timer, no work per turn. Nodes never
//! see the supervisor's socket (`process::plan` removes it from their environment).

use std::time::{Duration, Instant};

use crate::process::notify;
use crate::supervisor::Supervisor;

pub struct ServiceManager {
    socket: String,
    /// Half the manager's watchdog period, when it has one for this process.
    ping_every: Option<Duration>,
    next_ping: Option<Instant>,
    /// The nodes `zeek_init()` created that have not settled; `None` before
    /// `zeek_init()` returned, and after `READY=1` was sent.
    pending: Option<Vec<String>>,
    ready_sent: bool,
    last_status: String,
    stopping_sent: bool,
}

impl ServiceManager {
    /// The manager named by this process's environment, if there is one.
    pub fn from_env() -> Option<ServiceManager> {
        let socket = std::env::var(notify::SOCKET_ENV)
            .ok()
            .filter(|s| !s.is_empty())?;
        let ours = std::env::var(notify::WATCHDOG_PID_ENV)
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let ping_every = std::env::var(notify::WATCHDOG_USEC_ENV)
            .ok()
            .and_then(|us| us.parse::<u64>().ok())
            .filter(|&us| us > 0 && ours)
            .map(|us| Duration::from_micros(us) / 2);
        log::debug!(
            "notifying the service manager at {socket}{}",
            ping_every.map_or(String::new(), |d| format!(", watchdog every {d:?}"))
        );
        Some(ServiceManager {
            socket,
            ping_every,
            next_ping: ping_every.map(|every| Instant::now() + every),
            pending: None,
            ready_sent: false,
            last_status: String::new(),
            stopping_sent: false,
        })
    }

    fn send(&self, text: &str) {
        if let Err(e) = notify::send_to(&self.socket, text) {
            log::warn!(
                "cannot notify the service manager at {}: {}",
                self.socket,
                crate::process::os_error(&e)
            );
        }
    }

    /// `zeek_init()` has returned: these are the nodes `READY=1` waits for.
    pub fn started(&mut self, nodes: Option<&Supervisor>) {
        self.pending = Some(
            nodes
                .map(|n| n.node_names().map(str::to_string).collect())
                .unwrap_or_default(),
        );
    }

    /// After a loop turn: `READY=1` once the nodes have settled, `STATUS=` when it
    /// changed.
    pub fn turn(&mut self, nodes: Option<&mut Supervisor>) {
        if self.stopping_sent {
            return;
        }
        let Some(nodes) = nodes else {
            if self.pending.take().is_some() {
                self.ready_sent = true;
                self.send("READY=1");
            }
            return;
        };
        let changed = nodes.take_changed();
        let mut ready = false;
        if let Some(pending) = self.pending.as_mut() {
            if changed || !self.ready_sent {
                nodes.unsettled(pending);
            }
            if pending.is_empty() {
                self.pending = None;
                self.ready_sent = true;
                ready = true;
            }
        }
        if !ready && !changed {
            return;
        }
        let status = nodes.summary();
        if ready {
            log::info!("ready: {status}");
            self.send(&format!("READY=1\nSTATUS={status}"));
            self.last_status = status;
        } else if status != self.last_status {
            self.send(&format!("STATUS={status}"));
            self.last_status = status;
        }
    }

    /// When the next `WATCHDOG=1` is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_ping
    }

    /// Sends `WATCHDOG=1` if it is due.
    pub fn fire_due(&mut self, now: Instant) {
        let (Some(at), Some(every)) = (self.next_ping, self.ping_every) else {
            return;
        };
        if at <= now {
            self.send("WATCHDOG=1");
            self.next_ping = Some(now + every);
        }
    }

    /// Shutdown has begun.
    pub fn stopping(&mut self) {
        if !self.stopping_sent {
            self.stopping_sent = true;
            self.send("STOPPING=1\nSTATUS=stopping");
        }
    }
}
