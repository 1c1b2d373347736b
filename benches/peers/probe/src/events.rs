//! Process events from the kernel's proc connector (netlink `NETLINK_CONNECTOR`, group
//! `CN_IDX_PROC`): every fork, exec and exit on the machine, each stamped by the kernel
//! with `ktime_get_ns()`, which is `CLOCK_MONOTONIC`, the clock `now_ns` reads.
//!
//! So the benchmark never polls `/proc` to learn when a child runs: the time a child
//! started running is the kernel's stamp of its `exec`, and the time it was gone is the
//! stamp of its exit. The resolution is the clock's (nanoseconds); what the listener
//! thread costs happens after the stamp and does not enter the figures.
//!
//! A listener thread keeps the set of this process's descendants (following forks from
//! `root`), and logs only their events. For an `exec` it reads `/proc/PID/exe` at once
//! and tags the event when the program is the benchmark's child program (`pause`). The
//! kernel drops events when the socket buffer overflows (ENOBUFS); that is counted in
//! `lost()` and reported, not hidden.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub enum Ev {
    /// A new process (not a thread) `child`, forked by process `parent`.
    Fork { parent: i32, child: i32 },
    /// Process `pid` executed a program; `pause` when it is the benchmark's child.
    Exec { pid: i32, ts: u64, pause: bool },
    /// Process `pid` ended (it may still be a zombie until reaped).
    Exit { pid: i32, ts: u64 },
}

struct State {
    log: Vec<Ev>,
    tracked: HashSet<i32>,
    lost: u64,
}

pub struct Monitor {
    shared: Arc<(Mutex<State>, Condvar)>,
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of the kernel's event stamps.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_FORK: u32 = 0x1;
const PROC_EVENT_EXEC: u32 = 0x2;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;

impl Monitor {
    /// Subscribes to process events and starts following the descendants of `root`.
    pub fn start(root: i32, pause_exe: PathBuf) -> io::Result<Monitor> {
        // SAFETY: plain socket calls on a descriptor we own; the structs passed are
        // zero-initialised C structs of the sizes given.
        let fd = unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_CONNECTOR,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // A large buffer, so a burst of 1000 forks and execs is not dropped.
            let size: libc::c_int = 64 << 20;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            addr.nl_groups = CN_IDX_PROC;
            if libc::bind(
                fd,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            let mut msg = Vec::with_capacity(NLMSG_HDRLEN + CN_MSG_LEN + 4);
            let total = (NLMSG_HDRLEN + CN_MSG_LEN + 4) as u32;
            msg.extend_from_slice(&total.to_ne_bytes());
            msg.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
            msg.extend_from_slice(&0u16.to_ne_bytes());
            msg.extend_from_slice(&0u32.to_ne_bytes());
            msg.extend_from_slice(&(libc::getpid() as u32).to_ne_bytes());
            msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
            msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
            msg.extend_from_slice(&0u32.to_ne_bytes());
            msg.extend_from_slice(&0u32.to_ne_bytes());
            msg.extend_from_slice(&4u16.to_ne_bytes());
            msg.extend_from_slice(&0u16.to_ne_bytes());
            msg.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
            if libc::send(fd, msg.as_ptr() as *const libc::c_void, msg.len(), 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            fd
        };
        let shared = Arc::new((
            Mutex::new(State {
                log: Vec::new(),
                tracked: HashSet::from([root]),
                lost: 0,
            }),
            Condvar::new(),
        ));
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("proc-events".into())
            .spawn(move || listen(fd, &thread_shared, &pause_exe))?;
        Ok(Monitor { shared })
    }

    /// Index of the next event to come; events before it have been logged.
    pub fn cursor(&self) -> usize {
        self.shared.0.lock().unwrap().log.len()
    }

    /// Hands events from `cursor` on to `f` until it returns true (then true) or
    /// `deadline` passes (then false).
    pub fn wait(
        &self,
        cursor: &mut usize,
        deadline: Instant,
        mut f: impl FnMut(&Ev) -> bool,
    ) -> bool {
        let (lock, cvar) = &*self.shared;
        let mut state = lock.lock().unwrap();
        loop {
            while *cursor < state.log.len() {
                let ev = state.log[*cursor];
                *cursor += 1;
                if f(&ev) {
                    return true;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            state = cvar.wait_timeout(state, wait).unwrap().0;
            drop(state);
            crate::procfs::reap();
            state = lock.lock().unwrap();
        }
    }

    /// The live descendants of `root` (processes, not threads).
    pub fn tracked(&self) -> Vec<i32> {
        self.shared
            .0
            .lock()
            .unwrap()
            .tracked
            .iter()
            .copied()
            .collect()
    }

    /// How many times the kernel dropped events since the start.
    pub fn lost(&self) -> u64 {
        self.shared.0.lock().unwrap().lost
    }
}

fn listen(fd: i32, shared: &(Mutex<State>, Condvar), pause_exe: &PathBuf) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOBUFS) {
                shared.0.lock().unwrap().lost += 1;
            }
            continue;
        }
        let data = &buf[..n as usize];
        let mut state = shared.0.lock().unwrap();
        let mut offset = 0;
        let mut logged = false;
        while offset + NLMSG_HDRLEN <= data.len() {
            let len = u32_at(data, offset) as usize;
            if len < NLMSG_HDRLEN || offset + len > data.len() {
                break;
            }
            logged |= handle(&data[offset..offset + len], &mut state, pause_exe);
            offset += (len + 3) & !3;
        }
        drop(state);
        if logged {
            shared.1.notify_all();
        }
    }
}

/// One netlink message: `nlmsghdr`, `cn_msg`, `proc_event` (what, cpu, timestamp_ns,
/// then the event's data).
fn handle(msg: &[u8], state: &mut State, pause_exe: &PathBuf) -> bool {
    let ev = NLMSG_HDRLEN + CN_MSG_LEN;
    if msg.len() < ev + 16 + 8 {
        return false;
    }
    let what = u32_at(msg, ev);
    let ts = u64::from_ne_bytes(msg[ev + 8..ev + 16].try_into().unwrap());
    let data = ev + 16;
    match what {
        PROC_EVENT_FORK if msg.len() >= data + 16 => {
            let parent_tgid = i32_at(msg, data + 4);
            let child_pid = i32_at(msg, data + 8);
            let child_tgid = i32_at(msg, data + 12);
            if child_pid == child_tgid && state.tracked.contains(&parent_tgid) {
                state.tracked.insert(child_tgid);
                state.log.push(Ev::Fork {
                    parent: parent_tgid,
                    child: child_tgid,
                });
                return true;
            }
        }
        PROC_EVENT_EXEC => {
            let tgid = i32_at(msg, data + 4);
            if state.tracked.contains(&tgid) {
                let pause = std::fs::read_link(format!("/proc/{tgid}/exe"))
                    .map(|exe| &exe == pause_exe)
                    .unwrap_or(false);
                state.log.push(Ev::Exec {
                    pid: tgid,
                    ts,
                    pause,
                });
                return true;
            }
        }
        PROC_EVENT_EXIT => {
            let pid = i32_at(msg, data);
            let tgid = i32_at(msg, data + 4);
            if pid == tgid && state.tracked.remove(&tgid) {
                state.log.push(Ev::Exit { pid: tgid, ts });
                return true;
            }
        }
        _ => {}
    }
    false
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}
