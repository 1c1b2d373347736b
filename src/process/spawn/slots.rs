//! The children between clone and exec, each in a spawn slot of its own.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::unistd::Pid;

use super::super::plan::SpawnPlan;
use super::super::{StartError, errno_text, os_error, raw};
use super::image::{Image, Step, child_main};
use super::program::Programs;

/// How many children may be between clone and exec at once (a burst of creates on a
/// loaded machine keeps many busy: 200 nodes started in 79 ms with 8 slots and 71 ms
/// with 32, median of 4 runs); fewer when the open-file limit is low.
const SLOTS: usize = 32;
const SLOTS_FEW: usize = 2;
/// The stack of a child between clone and exec: it only makes system calls.
const CHILD_STACK: usize = 64 * 1024;
/// How long the supervisor waits for children still between clone and exec when it
/// needs their slot or shuts down; past it, their memory is left to them.
const LAUNCH_WAIT: Duration = Duration::from_secs(2);

/// The children between clone and exec, each in a slot of its own: two descriptors
/// (opened when the supervisor starts, so their numbers are low, like the /dev/null all
/// children get as stdin) through which its stdout and stderr are handed over, a stack,
/// and the word the kernel clears when the child has exec'd or exited.
///
/// A child is made with `CLONE_VM | CLONE_FILES | CLONE_CHILD_CLEARTID`: nothing is
/// copied at the clone. Its first act is `close_range(above the slots,
/// CLOSE_RANGE_UNSHARE)`, with which the kernel gives it a table of only the descriptors
/// below that bound. So a spawn costs the same with 3 or 3,000 descriptors open in the
/// supervisor (3 per captured node), where a fork would copy them all and the exec close
/// them all again: a burst of N creates would be O(N^2).
///
/// Unlike `vfork`, the supervisor's thread need not be suspended until the exec: the
/// child runs on its slot's stack and reads what `spawn` prepared in its slot, which stay
/// untouched until the kernel clears the slot's word (`CLONE_CHILD_CLEARTID` does so
/// when the child releases the shared memory, at exec or exit). A slot is then free
/// again; its descriptors go back to /dev/null, or the node's pipes would never see
/// their end. When all slots are busy, the next spawn waits for the oldest.
///
/// Whether to wait for the exec is the caller's choice: a burst of creates from a script
/// is faster without (a 1000-node start-up took 0.42 s waiting and 0.31 s not, on two
/// cores), a single revival is faster with (0.8 ms against 2 ms from kill to exec: the
/// loop's work after a revival would otherwise come first).
pub struct Slots {
    /// /dev/null: every child's stdin, and what a free slot holds.
    null: OwnedFd,
    slots: Vec<Slot>,
    /// A child keeps the descriptors below this: the slots (and what was opened before
    /// them, all close-on-exec).
    keep_below: RawFd,
    /// The programs checked so far.
    programs: Programs,
    /// Why a child failed between clone and exec, by pid, until its exit is handled.
    failures: HashMap<Pid, String>,
}

struct Slot {
    /// stdout, stderr.
    /// stdout, stderr.
    fds: [OwnedFd; 2],
    shared: Box<Shared>,
    stack: Option<Stack>,
    launch: Option<Launch>,
}

/// What the child and the kernel write and the supervisor reads.
#[repr(C)]
#[derive(Default)]
struct Shared {
    /// Nonzero while the child may still use the slot; the kernel sets it to zero and
    /// wakes its futex when the child execs or exits (`CLONE_CHILD_CLEARTID`).
    busy: AtomicU32,
    /// `step << 32 | errno` when the child failed (steps count from 1), else 0.
    failed: AtomicU64,
}

/// A child that is (or was) using a slot.
struct Launch {
    pid: Pid,
    name: Arc<str>,
    program: PathBuf,
    /// Read by the child; freed only when the slot is free again.
    _image: Box<Image>,
    /// The write end of its readiness descriptor, which the child takes before its exec.
    _ready: Option<OwnedFd>,
    started: Instant,
}

/// A child's stack, with an inaccessible page below it so that an overflow faults
/// instead of writing over the supervisor's memory.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    fn new() -> std::io::Result<Stack> {
        let guard = page_size();
        let len = guard + CHILD_STACK;
        // SAFETY: a fresh anonymous mapping, owned by this struct until it is dropped.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of the mapping just made.
        if unsafe { libc::mprotect(base, guard, libc::PROT_NONE) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The top of the stack, 16-byte aligned as the ABI wants.
    fn top(&self) -> *mut libc::c_void {
        let top = self.base as usize + self.len;
        (top - top % 16) as *mut libc::c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, used by no child any more (see `Slots`).
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

impl Slots {
    pub fn new() -> std::io::Result<Slots> {
        let open = || -> std::io::Result<OwnedFd> {
            Ok(nix::fcntl::open(
                "/dev/null",
                OFlag::O_RDWR | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )?)
        };
        let null = open()?;
        let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(0, |(_, hard)| hard);
        let count = if hard >= 1024 { SLOTS } else { SLOTS_FEW };
        let mut slots = Vec::with_capacity(count);
        let mut keep_below = null.as_raw_fd() + 1;
        for _ in 0..count {
            let fds = [open()?, open()?];
            for fd in &fds {
                keep_below = keep_below.max(fd.as_raw_fd() + 1);
            }
            slots.push(Slot {
                fds,
                shared: Box::default(),
                stack: None,
                launch: None,
            });
        }
        Ok(Slots {
            null,
            slots,
            keep_below,
            programs: Programs::default(),
            failures: HashMap::new(),
        })
    }

    /// Frees the slots of children that have exec'd or exited, keeping the reasons of
    /// those that failed for `finished`. Reads only the slots' words: a child that died
    /// without the kernel clearing its word is freed by `finished` or `wait`.
    pub fn reap(&mut self) {
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.launch.is_some() && slot.shared.busy.load(Ordering::Acquire) == 0 {
                self.release(index);
            }
        }
    }

    /// Process `pid` has exited and been reaped: frees its slot if it still has one, and
    /// says why it could not start, when it failed before its program ran.
    pub fn finished(&mut self, pid: Pid) -> Option<String> {
        if let Some(index) = self.slots.iter().position(|s| s.pid() == Some(pid)) {
            // Reaped, so the child's memory is gone whether or not the kernel cleared
            // the word (it does not for a child that dumped core).
            self.release(index);
        }
        self.failures.remove(&pid)
    }

    /// Frees slot `index`, whose child no longer uses it.
    fn release(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let Some(launch) = slot.launch.take() else {
            return;
        };
        slot.hand_back(self.null.as_raw_fd());
        let failed = slot.shared.failed.swap(0, Ordering::Acquire);
        slot.shared.busy.store(0, Ordering::Relaxed);
        if failed != 0 {
            let step = Step::from_code((failed >> 32) as u32);
            let errno = Errno::from_raw((failed & 0xffff_ffff) as i32);
            let why = match step {
                Step::Exec => format!(
                    "cannot start '{}': {}",
                    launch.program.display(),
                    errno_text(errno)
                ),
                step => format!("{}: {}", step.describe(), errno_text(errno)),
            };
            log::debug!(
                "node '{}' (pid {}) failed before its program ran: {why}",
                launch.name,
                launch.pid
            );
            self.failures.insert(launch.pid, why);
        } else {
            log::trace!(
                "node '{}' (pid {}) exec'd after {:?}",
                launch.name,
                launch.pid,
                launch.started.elapsed()
            );
        }
    }

    /// A free slot: one that is, or the oldest busy one once its child is done with it.
    fn free_slot(&mut self) -> usize {
        self.reap();
        if let Some(index) = self.slots.iter().position(|s| s.launch.is_none()) {
            return index;
        }
        let index = (0..self.slots.len())
            .min_by_key(|&i| self.slots[i].launch.as_ref().map(|l| l.started))
            .unwrap_or(0);
        if !self.slots[index].wait(Instant::now() + LAUNCH_WAIT) {
            // A child stuck between clone and exec (in a system call that does not
            // return): leave it its memory, and take a fresh slot's worth instead.
            let slot = &mut self.slots[index];
            log::warn!(
                "process {} has not exec'd in {:?}; leaving its memory to it",
                slot.pid().map_or(0, Pid::as_raw),
                LAUNCH_WAIT
            );
            slot.abandon();
            // Its descriptors are reused: the child, if it ever gets that far, may then
            // start with another node's streams, which is the lesser harm.
            return index;
        }
        self.release(index);
        index
    }

    /// Whether `program` (at `path`, as `meta` describes it) is known to exec.
    pub fn known_format(&mut self, path: &Path, meta: &std::fs::Metadata) -> bool {
        self.programs.known_format(path, meta)
    }

    /// Starts the child of `plan` (its `image` built) in a free slot, handing it
    /// `streams` (stdout, stderr) through the slot. With `wait`, returns once it has
    /// exec'd, or says why it could not.
    pub(super) fn launch(
        &mut self,
        mut image: Image,
        streams: [OwnedFd; 2],
        ready: Option<OwnedFd>,
        plan: &SpawnPlan,
        wait: bool,
    ) -> Result<Pid, StartError> {
        let name = &plan.name;
        let system = |what: String| StartError::System(format!("node '{name}': {what}"));
        let index = self.free_slot();
        let keep_below = self.keep_below;
        let null = self.null.as_raw_fd();
        let slot = &mut self.slots[index];
        if slot.stack.is_none() {
            slot.stack = Some(
                Stack::new()
                    .map_err(|e| system(format!("cannot make a stack: {}", os_error(&e))))?,
            );
        }
        // The slot carries this node's stdout and stderr until its exec.
        let fill = |index: usize, fd: RawFd| -> Result<(), Errno> {
            // SAFETY: dup3 onto a descriptor the slot owns.
            Errno::result(unsafe { libc::dup3(fd, slot.fds[index].as_raw_fd(), libc::O_CLOEXEC) })
                .map(drop)
        };
        let [stdout_end, stderr_end] = streams;
        let filled = fill(0, stdout_end.as_raw_fd()).and_then(|()| fill(1, stderr_end.as_raw_fd()));
        drop((stdout_end, stderr_end));
        if let Err(e) = filled {
            slot.hand_back(null);
            return Err(system(format!(
                "cannot pass the streams: {}",
                errno_text(e)
            )));
        }
        image.slots = [null, slot.fds[0].as_raw_fd(), slot.fds[1].as_raw_fd()];
        image.keep_below = keep_below;
        // A readiness descriptor is rare: rather than hold a slot descriptor for it, the
        // child's table keeps everything up to it, and the slot keeps it open until the
        // child is done with the table they share.
        if let (Some(fd), Some(to)) = (&ready, plan.ready_fd) {
            image.ready = Some((fd.as_raw_fd(), to));
            image.keep_below = keep_below.max(fd.as_raw_fd() + 1);
        }
        image.failed = &slot.shared.failed;
        let image = Box::new(image);
        slot.shared.failed.store(0, Ordering::Relaxed);
        slot.shared.busy.store(1, Ordering::Release);
        let stack_top = slot.stack.as_ref().map_or(std::ptr::null_mut(), Stack::top);
        let pid = {
            // SAFETY: sigset_t is plain bits, filled or set by the calls below.
            let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: the child runs `child_main` on the slot's stack with a pointer to
            // `image`; both stay untouched and alive until the kernel clears `busy` (at
            // the child's exec or exit) or the child is reaped (`Slots::release`).
            // Signals are blocked around the clone so that no handler of ours runs in the
            // child, which shares our memory; it restores the default actions before it
            // unblocks them.
            unsafe {
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
                let pid = libc::clone(
                    child_main,
                    stack_top,
                    libc::CLONE_VM | libc::CLONE_FILES | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD,
                    (&*image as *const Image).cast_mut().cast(),
                    std::ptr::null_mut::<libc::pid_t>(),
                    std::ptr::null_mut::<libc::c_void>(),
                    slot.shared.busy.as_ptr(),
                );
                let clone_error = Errno::last();
                libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                if pid < 0 {
                    Err(clone_error)
                } else {
                    Ok(Pid::from_raw(pid))
                }
            }
        };
        let pid = match pid {
            Ok(pid) => pid,
            Err(e) => {
                slot.shared.busy.store(0, Ordering::Relaxed);
                slot.hand_back(null);
                return Err(system(format!(
                    "cannot start '{}': {}",
                    plan.program.display(),
                    errno_text(e)
                )));
            }
        };
        // The child joins its own process group first thing, but may not have run yet:
        // make it so now, as shells do, so that a signal to the group reaches it at once.
        // (This fails harmlessly once it has exec'd, when it has done so itself.)
        let _ = nix::unistd::setpgid(pid, pid);
        slot.launch = Some(Launch {
            pid,
            name: plan.name.clone(),
            program: plan.program.clone(),
            _image: image,
            _ready: ready,
            started: Instant::now(),
        });
        if wait && slot.wait(Instant::now() + LAUNCH_WAIT) {
            self.release(index);
            if let Some(why) = self.failures.remove(&pid) {
                let _ = nix::sys::wait::waitpid(pid, None);
                return Err(StartError::Program(format!("node '{name}': {why}")));
            }
        }
        Ok(pid)
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        let deadline = Instant::now() + LAUNCH_WAIT;
        for slot in &mut self.slots {
            if slot.launch.is_some() && !slot.wait(deadline) {
                slot.abandon();
            }
        }
    }
}

impl Slot {
    /// Leaves the memory of a child that is still using it to that child (the kernel
    /// may still clear its word), and gives the slot fresh memory.
    fn abandon(&mut self) {
        std::mem::forget(self.launch.take());
        std::mem::forget(self.stack.take());
        std::mem::forget(std::mem::take(&mut self.shared));
    }

    fn pid(&self) -> Option<Pid> {
        self.launch.as_ref().map(|l| l.pid)
    }

    /// Points the slot's descriptors back at /dev/null (`null`), letting go of the
    /// node's streams: a pipe whose write end the slot still held would never end.
    fn hand_back(&self, null: RawFd) {
        for fd in &self.fds {
            // SAFETY: dup3 onto a descriptor the slot owns.
            unsafe { libc::dup3(null, fd.as_raw_fd(), libc::O_CLOEXEC) };
        }
    }

    /// Whether the child no longer uses the slot: the kernel cleared the word, or the
    /// child has exited (it may die without the word being cleared). Makes a system
    /// call while the word is set: for waiting, not for every look.
    fn done(&self) -> bool {
        let Some(launch) = &self.launch else {
            return true;
        };
        if self.shared.busy.load(Ordering::Acquire) == 0 {
            return true;
        }
        // SAFETY: siginfo_t is plain data; all zeros is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes into `info`; WNOWAIT leaves the child to be reaped by
        // whoever handles its exit.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                launch.pid.as_raw() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is set by waitid when a child was found, zero otherwise.
        r < 0 || unsafe { info.si_pid() } != 0
    }

    /// Waits until the child no longer uses the slot, or `deadline`.
    fn wait(&self, deadline: Instant) -> bool {
        loop {
            if self.done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let left = (deadline - now).min(Duration::from_millis(10));
            raw::futex_wait(self.shared.busy.as_ptr(), 1, left.as_nanos() as i64);
        }
    }
}
