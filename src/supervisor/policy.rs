//! When a node that keeps failing is revived, and when it is given up on.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::{NodeConfig, seconds};

/// The exit code with which a node says it must not be revived (s6's convention).
pub const PERMANENT_FAILURE_EXIT: i32 = 125;

/// Zeek's policy (1 s, doubled every third consecutive failure, forgotten after 30 s of
/// uptime), with settable first and longest delays, and an optional bound on revivals
/// within a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevivalPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// A process that ran at least this long ends a run of failures.
    pub reset_after: Duration,
    /// Revivals allowed within `restart_window` before the node is marked failed.
    pub max_restarts: Option<u32>,
    pub restart_window: Duration,
}

impl Default for RevivalPolicy {
    fn default() -> Self {
        RevivalPolicy {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            reset_after: Duration::from_secs(30),
            max_restarts: None,
            restart_window: Duration::from_secs(60),
        }
    }
}

impl RevivalPolicy {
    /// The policy of `config`, from its extension fields over the defaults.
    pub fn of(config: &NodeConfig) -> RevivalPolicy {
        let mut policy = RevivalPolicy::default();
        if let Some(Ok(d)) = config.revival_delay.map(seconds) {
            policy.first_delay = d;
        }
        if let Some(Ok(d)) = config.revival_max_delay.map(seconds) {
            policy.max_delay = d;
        }
        policy.max_restarts = config.max_restarts.and_then(|n| u32::try_from(n).ok());
        if let Some(Ok(d)) = config.restart_window.map(seconds) {
            policy.restart_window = d;
        }
        policy
    }

    /// The wait before the revival that follows `failures` consecutive failures (>= 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1) / 3;
        let factor = 1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX);
        self.first_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay.max(self.first_delay))
    }
}

/// Why a node is no longer revived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// It exited with `PERMANENT_FAILURE_EXIT`.
    PermanentExit,
    /// It was revived `max_restarts` times within `restart_window`.
    TooManyRestarts { restarts: u32, window: Duration },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::PermanentExit => write!(
                f,
                "it exited with code {PERMANENT_FAILURE_EXIT}, which means: do not revive"
            ),
            Failure::TooManyRestarts { restarts, window } => write!(
                f,
                "it was revived {restarts} times within {}",
                human(*window)
            ),
        }
    }
}

/// A node's run of failures, kept across its processes.
#[derive(Clone, Debug, Default)]
pub struct Failures {
    /// Consecutive premature exits, for the revival delay.
    pub count: u32,
    /// When it was revived lately, for `max_restarts`.
    revivals: VecDeque<Instant>,
}

/// What the policy says after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Revive after this delay.
    ReviveIn(Duration),
    /// Give up.
    GiveUp(Failure),
}

impl Failures {
    /// One more failure at `now`: when to revive, or to give up.
    pub fn add(&mut self, policy: &RevivalPolicy, now: Instant) -> Verdict {
        self.count = self.count.saturating_add(1);
        if let Some(max) = policy.max_restarts {
            let window = policy.restart_window;
            while self
                .revivals
                .front()
                .is_some_and(|&t| now.duration_since(t) > window)
            {
                self.revivals.pop_front();
            }
            if self.revivals.len() >= max as usize {
                return Verdict::GiveUp(Failure::TooManyRestarts {
                    restarts: max,
                    window,
                });
            }
            self.revivals.push_back(now);
        }
        Verdict::ReviveIn(policy.delay(self.count))
    }

    /// A process ran long enough, or the node was restarted by hand: start over.
    pub fn forget(&mut self) {
        self.count = 0;
    }

    /// `restart` also forgets the revivals counted for `max_restarts`.
    pub fn clear(&mut self) {
        self.count = 0;
        self.revivals.clear();
    }
}

/// `250 ms`, `1.5 s`: a delay as a person reads it.
pub fn human(delay: Duration) -> String {
    if delay < Duration::from_secs(1) {
        format!("{} ms", delay.as_millis())
    } else {
        format!("{:.1} s", delay.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeek_delays_double_every_third_failure_up_to_the_cap() {
        let policy = RevivalPolicy::default();
        let secs: Vec<u64> = (1..=22).map(|f| policy.delay(f).as_secs()).collect();
        assert_eq!(
            secs,
            [
                1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 60, 60, 60, 60
            ]
        );
        let zero = RevivalPolicy {
            first_delay: Duration::ZERO,
            ..policy
        };
        assert_eq!(zero.delay(50), Duration::ZERO);
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn max_restarts_counts_within_the_window() {
        let policy = RevivalPolicy {
            max_restarts: Some(2),
            restart_window: Duration::from_secs(10),
            ..RevivalPolicy::default()
        };
        let t0 = Instant::now();
        let mut failures = Failures::default();
        assert!(matches!(failures.add(&policy, t0), Verdict::ReviveIn(_)));
        assert!(matches!(
            failures.add(&policy, t0 + Duration::from_secs(1)),
            Verdict::ReviveIn(_)
        ));
        assert_eq!(
            failures.add(&policy, t0 + Duration::from_secs(2)),
            Verdict::GiveUp(Failure::TooManyRestarts {
                restarts: 2,
                window: Duration::from_secs(10)
            })
        );
        // the first two have left the window
        assert!(matches!(
            failures.add(&policy, t0 + Duration::from_secs(13)),
            Verdict::ReviveIn(_)
        ));
    }
}
