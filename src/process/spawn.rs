//! Starting one node process from a `SpawnPlan`.
//!
//! The program is found and checked (exists, is executable, is a native program or a
//! script whose interpreter is) before the clone, so a program that cannot start is
//! reported by `Supervisor::create` itself. Everything the child needs is built before
//! the clone too (argv, envp, the CPU set, the open files and pipes); the child only
//! makes raw system calls (see `raw`): it takes a table of the few descriptors it needs,
//! joins its own process group, asks for the plan's death signal when the spawning
//! thread dies, re-checks that its parent is still the supervisor, sets up its streams,
//! directory, core and limits, and execs.
//!
//! The supervisor does not wait for the exec (see `Slots`): it goes on with the next
//! statement of the script, or the next revival, while the child execs on another core.
//! A step that fails in the child (rare once the checks passed: out of memory, an
//! environment too large for the kernel, a file being written) ends it with status 127,
//! and its reason is reported when its exit is handled (`Slots::finished`).
//!
//! Must be called on the loop thread: the parent-death signal fires when the thread
//! that forked exits, and the loop thread lives as long as the supervisor.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsString, c_char};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::libc;
use nix::unistd::{Pid, pipe2};

use super::plan::{Output, SpawnPlan};
use super::raw;
use super::{errno_text, os_error};

/// A started node process.
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    /// Readable once the process has exited.
    pub pidfd: OwnedFd,
    /// The supervisor's (non-blocking) read ends of captured streams.
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

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
/// At most this many checked programs are remembered.
const FORMATS_KEPT: usize = 256;

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
    /// The programs checked so far, by path, with what they were when checked.
    formats: HashMap<PathBuf, (FileId, bool)>,
    /// Why a child failed between clone and exec, by pid, until its exit is handled.
    failures: HashMap<Pid, String>,
}

struct Slot {
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
    started: Instant,
}

/// Identifies a version of a file, to know when a checked program has changed.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
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
            formats: HashMap::new(),
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

    /// Whether `program` (at `path`, as `meta` describes it) is known to exec: a native
    /// program, or a script whose interpreter is one. Remembered per version of the file.
    fn known_format(&mut self, path: &Path, meta: &std::fs::Metadata) -> bool {
        let id = FileId::of(meta);
        if let Some((seen, known)) = self.formats.get(path) {
            if *seen == id {
                return *known;
            }
        }
        let known = format_known(path);
        if self.formats.len() >= FORMATS_KEPT {
            self.formats.clear();
        }
        self.formats.insert(path.to_path_buf(), (id, known));
        known
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

/// Reads the start of the file: a native program (ELF), or a `#!` script whose
/// interpreter is an absolute path to a native program, is known to exec. Anything else
/// (a format of `binfmt_misc`, a script of a script) is left to the kernel, and its
/// spawn waits for the exec so that `create` reports a failure.
fn format_known(path: &Path) -> bool {
    fn head(path: &Path) -> Option<Vec<u8>> {
        let mut buf = Vec::with_capacity(256);
        File::open(path)
            .ok()?
            .take(256)
            .read_to_end(&mut buf)
            .ok()?;
        Some(buf)
    }
    let native = |path: &Path| {
        head(path).is_some_and(|buf| buf.starts_with(b"\x7fELF"))
            && executable(path).is_ok_and(|meta| meta.is_file())
    };
    let Some(buf) = head(path) else {
        return false;
    };
    if buf.starts_with(b"\x7fELF") {
        return true;
    }
    let Some(line) = buf.strip_prefix(b"#!".as_slice()) else {
        return false;
    };
    let Some(end) = line.iter().position(|&b| b == b'\n') else {
        return false; // longer than the kernel reads
    };
    let line = &line[..end];
    let start = line
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(line.len());
    let line = &line[start..];
    let len = line
        .iter()
        .position(|&b| b == b' ' || b == b'\t' || b == b'\r')
        .unwrap_or(line.len());
    let interpreter = Path::new(std::ffi::OsStr::from_bytes(&line[..len]));
    interpreter.is_absolute() && native(interpreter)
}

/// Starts `plan`. `supervisor` is this process's pid, which the child checks after
/// arming its death signal; `owner` is the instance tag its descendants inherit
/// (`tree::OWNER_ENV`). With `wait`, returns once the child has exec'd (or failed).
pub fn spawn(
    plan: &SpawnPlan,
    supervisor: Pid,
    owner: &str,
    slots: &mut Slots,
    wait: bool,
) -> Result<Spawned, String> {
    let name = &plan.name;
    let fail = |what: String| format!("node '{name}': {what}");
    let cannot_start = |reason: String| {
        fail(format!(
            "cannot start '{}': {reason}",
            plan.program.display()
        ))
    };
    let (program, meta) = resolve(plan).map_err(cannot_start)?;
    if let Some(dir) = &plan.directory {
        nix::unistd::access(dir.as_path(), nix::unistd::AccessFlags::X_OK).map_err(|e| {
            fail(format!(
                "cannot enter the directory '{}': {}",
                dir.display(),
                errno_text(e)
            ))
        })?;
    }
    // Wait for the exec when asked, when the program is not known to exec (so that its
    // failure is reported here), and on architectures where the child cannot avoid libc.
    let wait = wait || !raw::AVAILABLE || !slots.known_format(&program, &meta);
    let [(stdout_end, stdout), (stderr_end, stderr)] = streams(plan)?;

    // Everything the child touches, built now: it runs on borrowed memory and may not
    // allocate.
    let c = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| fail("an argument or variable contains a NUL byte".into()))
    };
    let program_c = c(program.as_os_str().as_bytes())?;
    let mut argv = vec![c(plan.program.as_os_str().as_bytes())?];
    for arg in &plan.args {
        argv.push(c(arg.as_bytes())?);
    }
    let mut envp = Vec::new();
    for (key, value) in environment(plan, owner) {
        let mut entry = key.into_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        envp.push(c(&entry)?);
    }
    let argv_ptrs: Vec<*const c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp_ptrs: Vec<*const c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let directory = match &plan.directory {
        Some(dir) => Some(c(dir.as_os_str().as_bytes())?),
        None => None,
    };
    let cpus = match plan.cpu {
        Some(core) if core < libc::CPU_SETSIZE as usize => {
            // SAFETY: cpu_set_t is plain bits; all zeros is the empty set, and `core` is
            // below CPU_SETSIZE, so CPU_SET stays within it.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            unsafe { libc::CPU_SET(core, &mut set) };
            Some(set)
        }
        Some(core) => return Err(fail(format!("cpu_affinity {core}: no such core"))),
        None => None,
    };

    let index = slots.free_slot();
    let keep_below = slots.keep_below;
    let null = slots.null.as_raw_fd();
    let slot = &mut slots.slots[index];
    if slot.stack.is_none() {
        slot.stack =
            Some(Stack::new().map_err(|e| fail(format!("cannot make a stack: {}", os_error(&e))))?);
    }
    // The slot carries this node's stdout and stderr until its exec.
    let fill = |index: usize, fd: RawFd| -> Result<(), Errno> {
        // SAFETY: dup3 onto a descriptor the slot owns.
        Errno::result(unsafe { libc::dup3(fd, slot.fds[index].as_raw_fd(), libc::O_CLOEXEC) })
            .map(drop)
    };
    let filled = fill(0, stdout_end.as_raw_fd()).and_then(|()| fill(1, stderr_end.as_raw_fd()));
    drop((stdout_end, stderr_end));
    if let Err(e) = filled {
        slot.hand_back(null);
        return Err(fail(format!("cannot pass the streams: {}", errno_text(e))));
    }
    let image = Box::new(Image {
        program: program_c,
        _argv: argv,
        _envp: envp,
        argv_ptrs,
        envp_ptrs,
        directory,
        cpus,
        slots: [null, slot.fds[0].as_raw_fd(), slot.fds[1].as_raw_fd()],
        keep_below,
        death_signal: plan.death_signal as libc::c_int,
        supervisor: supervisor.as_raw(),
        nofile: plan.nofile.map(|(soft, hard)| libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        }),
        failed: &slot.shared.failed,
    });
    slot.shared.failed.store(0, Ordering::Relaxed);
    slot.shared.busy.store(1, Ordering::Release);
    let stack_top = slot.stack.as_ref().map_or(std::ptr::null_mut(), Stack::top);
    let pid = {
        // SAFETY: sigset_t is plain bits, filled or set by the calls below.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: the child runs `child_main` on the slot's stack with a pointer to
        // `image`; both stay untouched and alive until the kernel clears `busy` (at the
        // child's exec or exit) or the child is reaped (`Slots::release`). Signals are
        // blocked around the clone so that no handler of ours runs in the child, which
        // shares our memory; it restores the default actions before it unblocks them.
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
            return Err(cannot_start(errno_text(e)));
        }
    };
    // The child joins its own process group first thing, but may not have run yet:
    // make it so now, as shells do, so that a signal to the group reaches it at once.
    // (This fails harmlessly once it has exec'd, when it has done so itself.)
    let _ = nix::unistd::setpgid(pid, pid);
    slot.launch = Some(Launch {
        pid,
        name: name.clone(),
        program: plan.program.clone(),
        _image: image,
        started: Instant::now(),
    });
    if wait && slot.wait(Instant::now() + LAUNCH_WAIT) {
        slots.release(index);
        if let Some(why) = slots.failures.remove(&pid) {
            let _ = nix::sys::wait::waitpid(pid, None);
            return Err(fail(why));
        }
    }
    let pidfd = match watch(pid, name) {
        Ok(fd) => fd,
        Err(e) => {
            // `watch` killed and reaped it.
            slots.finished(pid);
            return Err(e);
        }
    };
    Ok(Spawned {
        pid,
        pidfd,
        stdout,
        stderr,
    })
}

/// What the child was doing when it failed; the value is what it reports (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    Descriptors = 1,
    Streams = 2,
    Directory = 3,
    Core = 4,
    Exec = 5,
}

impl Step {
    fn from_code(code: u32) -> Step {
        match code {
            1 => Step::Descriptors,
            2 => Step::Streams,
            3 => Step::Directory,
            4 => Step::Core,
            _ => Step::Exec,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Step::Descriptors => "cannot set up the descriptors",
            Step::Streams => "cannot set up the standard streams",
            Step::Directory => "cannot enter the directory",
            Step::Core => "cannot pin to the core",
            Step::Exec => "cannot start the program",
        }
    }
}

/// What the child needs, all of it made before the clone and left alone until the
/// child is done with it.
struct Image {
    program: CString,
    /// Owners of what the pointer arrays point to.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    directory: Option<CString>,
    cpus: Option<libc::cpu_set_t>,
    /// stdin, stdout, stderr, as placed in the slot.
    slots: [RawFd; 3],
    /// The descriptors the child's own table keeps (the slots and below).
    keep_below: RawFd,
    death_signal: libc::c_int,
    supervisor: libc::pid_t,
    nofile: Option<libc::rlimit>,
    /// Where the child says why it failed (in the slot's `Shared`).
    failed: *const AtomicU64,
}

/// The signals a node gets at their default action: every one this program or a
/// library it uses may catch or ignore, and those a launching shell may ignore.
const RESET_SIGNALS: [libc::c_int; 16] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGPIPE,
    libc::SIGCHLD,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGWINCH,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTSTP,
    libc::SIGCONT,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a pointer to its `Image`, alive until the child is done.
    let image = unsafe { &*arg.cast::<Image>() };
    image.exec()
}

impl Image {
    /// In the child, between clone and exec: only raw system calls, no libc (which
    /// would write the supervisor's `errno`), no allocation; it never returns.
    fn exec(&self) -> ! {
        let fail = |step: Step, result: isize| -> ! {
            let errno = (-result) as u64 & 0xffff_ffff;
            // SAFETY: `failed` points into the slot, alive until the child is done; the
            // store is seen by the supervisor once the kernel clears the slot's word.
            unsafe {
                (*self.failed).store((step as u64) << 32 | errno, Ordering::Release);
                raw::exit_group(127)
            }
        };
        // SAFETY: each call is a plain system call on values prepared before the clone.
        unsafe {
            // A table of our own, of the low descriptors only.
            let r = raw::close_range(self.keep_below as u32, u32::MAX, libc::CLOSE_RANGE_UNSHARE);
            if r < 0 {
                let r = raw::unshare(libc::CLONE_FILES);
                if r < 0 {
                    fail(Step::Descriptors, r);
                }
            }
            // Handlers of the supervisor (and of the libraries it uses) must not run
            // here: the memory is shared. And a node starts with every signal at its
            // default action, as a service should, whatever the supervisor inherited:
            // a shell starts background jobs with SIGINT and SIGQUIT ignored, Rust
            // ignores SIGPIPE.
            for signal in RESET_SIGNALS {
                raw::default_action(signal);
            }
            for (target, &fd) in self.slots.iter().enumerate() {
                let r = raw::dup3(fd, target as libc::c_int);
                if r < 0 {
                    fail(Step::Streams, r);
                }
            }
            if raw::close_range(3, u32::MAX, 0) < 0 {
                for &fd in &self.slots {
                    raw::close(fd);
                }
            }
            raw::setpgid_self();
            raw::set_death_signal(self.death_signal);
            if raw::getppid() != self.supervisor {
                raw::exit_group(1);
            }
            if let Some(dir) = &self.directory {
                let r = raw::chdir(dir.as_ptr());
                if r < 0 {
                    fail(Step::Directory, r);
                }
            }
            if let Some(set) = &self.cpus {
                let r = raw::set_affinity(set);
                if r < 0 {
                    fail(Step::Core, r);
                }
            }
            if let Some(limit) = &self.nofile {
                raw::set_nofile(limit);
            }
            raw::unblock_all();
            let r = raw::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            );
            fail(Step::Exec, r)
        }
    }
}

/// The node's environment: the supervisor's, without `env_remove`, with the plan's
/// entries and the owner tag.
fn environment(plan: &SpawnPlan, owner: &str) -> Vec<(OsString, OsString)> {
    // The supervisor's own environment does not change while it runs: read it once.
    static BASE: std::sync::OnceLock<BTreeMap<OsString, OsString>> = std::sync::OnceLock::new();
    let mut env = BASE.get_or_init(|| std::env::vars_os().collect()).clone();
    for key in &plan.env_remove {
        env.remove(key);
    }
    for (key, value) in &plan.env {
        env.insert(key.clone(), value.clone());
    }
    env.insert(super::tree::OWNER_ENV.into(), owner.into());
    env.into_iter().collect()
}

/// Where the program is, found as `execvp` would (a name with a `/` relative to the
/// node's directory, else along the node's `PATH`), and checked to be executable, so a
/// program that cannot start is reported by `create` rather than by the dying child.
fn resolve(plan: &SpawnPlan) -> Result<(PathBuf, std::fs::Metadata), String> {
    let program = &plan.program;
    if program.as_os_str().as_bytes().contains(&b'/') {
        let path = match &plan.directory {
            Some(dir) if program.is_relative() => dir.join(program),
            _ => program.clone(),
        };
        return executable(&path)
            .map(|meta| (path, meta))
            .map_err(errno_text);
    }
    let path_var = plan
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = false;
    for dir in std::env::split_paths(&path_var) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        match executable(&candidate) {
            Ok(meta) => return Ok((candidate, meta)),
            Err(Errno::EACCES) => denied = true,
            Err(_) => {}
        }
    }
    Err(errno_text(if denied {
        Errno::EACCES
    } else {
        Errno::ENOENT
    }))
}

/// Whether `path` is a file this process may execute (as the kernel would refuse it:
/// a directory is EACCES); its metadata if so.
fn executable(path: &Path) -> Result<std::fs::Metadata, Errno> {
    let meta =
        std::fs::metadata(path).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    if meta.is_dir() {
        return Err(Errno::EACCES);
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).map(|()| meta)
}

/// A pidfd for our new child `pid`; if there is none, the child is taken down again at
/// once, since its exit would go unseen.
pub fn watch(pid: Pid, name: &str) -> Result<OwnedFd, String> {
    match pidfd_open(pid) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            super::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(format!("node '{name}': cannot watch pid {pid}: {e}"))
        }
    }
}

/// The node's stdout and stderr: for each, the child's end and, when captured, the
/// supervisor's (non-blocking) read end.
pub fn streams(plan: &SpawnPlan) -> Result<[(OwnedFd, Option<OwnedFd>); 2], String> {
    let name = &plan.name;
    let stdout = stream(&plan.stdout, "stdout_file").map_err(|e| format!("node '{name}': {e}"))?;
    let stderr = stream(&plan.stderr, "stderr_file").map_err(|e| format!("node '{name}': {e}"))?;
    Ok([stdout, stderr])
}

fn stream(output: &Output, field: &str) -> Result<(OwnedFd, Option<OwnedFd>), String> {
    match output {
        Output::Capture | Output::Rotated(_) => {
            let (read, write) = pipe2(OFlag::O_CLOEXEC)
                .map_err(|e| format!("cannot create a pipe: {}", crate::process::errno_text(e)))?;
            fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                .map_err(|e| format!("cannot set up a pipe: {}", crate::process::errno_text(e)))?;
            Ok((write, Some(read)))
        }
        Output::File(path) => {
            let file = open_output(path).map_err(|e| {
                format!("cannot open {field} '{}': {}", path.display(), os_error(&e))
            })?;
            Ok((file.into(), None))
        }
    }
}

/// Opens an output file as Zeek does: created with mode 0600, truncated, appending.
pub fn open_output(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_APPEND)
        .open(path)
}

/// A pidfd for our child `pid`. The child cannot have been reaped yet (only we reap it),
/// so the pid still names it even if it has already exited.
fn pidfd_open(pid: Pid) -> Result<OwnedFd, String> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no
    // memory is passed.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(super::errno_text(nix::errno::Errno::last()));
    }
    // SAFETY: the descriptor was just returned to us by the kernel and is owned by no one
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
