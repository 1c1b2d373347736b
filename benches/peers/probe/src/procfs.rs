//! What `/proc` tells about a process, and the few system calls the benchmark makes.

use std::fs;

/// Resident and proportional set size in KiB, from `/proc/PID/smaps_rollup`.
pub fn memory_kib(pid: i32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// utime + stime of a process (all its threads), in clock ticks, from `/proc/PID/stat`.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // state is field 3 of stat, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of a process (all its threads) in nanoseconds, from the scheduler's own
/// count (`/proc/PID/task/*/schedstat`): precise where clock ticks are 10 ms.
pub fn cpu_ns(pid: i32) -> Option<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("schedstat")) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(total)
}

/// The command name (`comm`) of a process.
pub fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn kill(pid: i32, signal: i32) {
    // SAFETY: kill takes two integers.
    unsafe { libc::kill(pid, signal) };
}

/// Reaps every child that has ended. This process is a subreaper, so orphans of the
/// supervisors under test end up here.
pub fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int, which we own.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

/// Become a subreaper, raise the open-file limit to its hard limit (the floor keeps a
/// pipe per child open), and ask for a precise timer slack.
pub fn setup_self() {
    // SAFETY: prctl and rlimit calls with plain integers and a struct we own.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
