//! Collectors: helper processes that watch nodes for the supervisor once its own table
//! of descriptors is nearly full.
//!
//! A captured node costs the process that watches it three descriptors: its pidfd and
//! the read ends of its stdout and stderr pipes. The limit on open files is per process
//! (20,000 on some hosts, and not always raisable), so one process can watch only so
//! many nodes. The supervisor watches nodes itself while it has room
//! (`local_capacity`: the limit less an eighth and 512 for everything else, over
//! three); past that, it hands each new node's descriptors to a collector
//! (`PROGRAM __collect`), a small process with a table of its own that runs the same
//! I/O loop (`reactor`) and sends back what it sees, framed on a stream socket: output
//! lines, exits, readiness. The supervisor then holds no descriptor for that node, and
//! one collector holds as many nodes as its limit allows (another starts when it is
//! full).
//!
//! What capture promises holds across the hop: stdout and stderr stay apart; lines keep
//! their order within a stream, since one socket carries them in the order the
//! collector read them; back pressure reaches the node, since a supervisor that does
//! not read stops the collector's writes, which stops its reads, which fills the node's
//! pipe; and an exit comes after the node's last lines, since the collector drains the
//! pipes before it reports the exit, on the same socket. The supervisor still reaps
//! every node by pid: nodes remain its children.
//!
//! Requests go the other way on a `SOCK_SEQPACKET` socket: one message per node with its
//! descriptors attached (`SCM_RIGHTS`). The supervisor registers a node with its I/O
//! thread before it sends it, so no frame about a node arrives before the I/O thread
//! knows the node.
//!
//! A collector that dies takes the read ends of its nodes' pipes with it. The I/O
//! thread then watches those nodes' pidfds itself (`pidfd_open` by pid: they are the
//! supervisor's children, not yet reaped) and stops them with SIGTERM, so that they are
//! revived with new pipes rather than run on with output that goes nowhere.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::prctl;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{Pid, getppid};

use super::reactor::{IoEvent, Reactor, Watch, Watcher};
use super::{ProcId, Stream, errno_text};

/// Where a collector finds its end of the request socket.
const REQUESTS_FD: RawFd = 3;
/// Where a collector finds its end of the event socket.
const EVENTS_FD: RawFd = 4;
/// What a collector writes first, once it is ready.
const HELLO: u8 = b'+';
/// How long the supervisor waits for a new collector, or for room to send it a node.
const PATIENCE: Duration = Duration::from_secs(5);
/// The most collectors one supervisor starts.
const MAX_COLLECTORS: usize = 64;
/// Descriptors a collector keeps for itself (its sockets, epoll, eventfd, stdio).
const COLLECTOR_RESERVE: u64 = 64;

/// The frame header: kind (1 byte), instance (8), payload length (4), little-endian.
pub const HEADER: usize = 13;
const KIND_STDOUT: u8 = 1;
const KIND_STDERR: u8 = 2;
const KIND_EXITED: u8 = 3;
const KIND_FD_READY: u8 = 4;
const KIND_RELEASED: u8 = 5;

/// Bits of a request: which descriptors follow the pidfd.
const HAS_STDOUT: u8 = 1;
const HAS_STDERR: u8 = 2;
const HAS_READY: u8 = 4;

/// What a collector tells the supervisor.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// Complete lines a node wrote.
    Output {
        proc: ProcId,
        stream: Stream,
        lines: &'a [u8],
    },
    /// The process exited; its output came before.
    Exited(ProcId),
    /// It wrote a newline to its readiness descriptor.
    FdReady(ProcId),
    /// The collector holds nothing of it any more.
    Released(ProcId),
}

impl Frame<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, proc, payload): (u8, ProcId, &[u8]) = match *self {
            Frame::Output {
                proc,
                stream: Stream::Stdout,
                lines,
            } => (KIND_STDOUT, proc, lines),
            Frame::Output {
                proc,
                stream: Stream::Stderr,
                lines,
            } => (KIND_STDERR, proc, lines),
            Frame::Exited(proc) => (KIND_EXITED, proc, &[]),
            Frame::FdReady(proc) => (KIND_FD_READY, proc, &[]),
            Frame::Released(proc) => (KIND_RELEASED, proc, &[]),
        };
        out.push(kind);
        out.extend_from_slice(&proc.0.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
    }

    /// The first frame of `buffer` and its length; `Ok(None)` when the frame is not
    /// complete yet.
    pub fn decode(buffer: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
        match buffer.first() {
            None => return Ok(None),
            Some(&kind) if !(KIND_STDOUT..=KIND_RELEASED).contains(&kind) => {
                return Err(format!("unknown frame kind {kind}"));
            }
            Some(_) => {}
        }
        if buffer.len() < HEADER {
            return Ok(None);
        }
        let proc = ProcId(u64::from_le_bytes(
            buffer[1..9].try_into().unwrap_or_default(),
        ));
        let len = u32::from_le_bytes(buffer[9..13].try_into().unwrap_or_default()) as usize;
        if buffer.len() < HEADER + len {
            return Ok(None);
        }
        let payload = &buffer[HEADER..HEADER + len];
        let frame = match buffer[0] {
            KIND_STDOUT | KIND_STDERR => Frame::Output {
                proc,
                stream: if buffer[0] == KIND_STDOUT {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                },
                lines: payload,
            },
            KIND_EXITED => Frame::Exited(proc),
            KIND_FD_READY => Frame::FdReady(proc),
            KIND_RELEASED => Frame::Released(proc),
            kind => return Err(format!("unknown frame kind {kind}")),
        };
        Ok(Some((frame, HEADER + len)))
    }
}

/// The supervisor's handle on one collector.
struct Collector {
    requests: OwnedFd,
    pid: Pid,
    /// Nodes it holds; the I/O thread counts down as it releases them.
    count: Arc<AtomicUsize>,
    /// Cleared by the I/O thread when the collector's socket ends.
    alive: Arc<AtomicBool>,
    reaped: bool,
}

impl Collector {
    /// Starts `PROGRAM __collect` and waits until it says it is ready. Returns it with
    /// the supervisor's end of its event socket.
    fn start(program: &Path, supervisor: Pid) -> Result<(Collector, UnixStream), String> {
        let pair = |kind| {
            socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC)
                .map_err(|e| format!("cannot create a socket pair: {}", errno_text(e)))
        };
        let (requests, requests_theirs) = pair(SockType::SeqPacket)?;
        let (events, events_theirs) = pair(SockType::Stream)?;
        let (a, b) = (requests_theirs.as_raw_fd(), events_theirs.as_raw_fd());
        let mut command = Command::new(program);
        command
            .arg("__collect")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        // SAFETY: runs between fork and exec; only raw system calls on values made before
        // the fork. Both ends are first copied above the fixed numbers, so that placing
        // one cannot overwrite the other; dup2 clears close-on-exec on the copies.
        unsafe {
            command.pre_exec(move || {
                let high_a = nix::libc::fcntl(a, nix::libc::F_DUPFD_CLOEXEC, 10);
                let high_b = nix::libc::fcntl(b, nix::libc::F_DUPFD_CLOEXEC, 10);
                if high_a < 0
                    || high_b < 0
                    || nix::libc::dup2(high_a, REQUESTS_FD) < 0
                    || nix::libc::dup2(high_b, EVENTS_FD) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                prctl::set_pdeathsig(Signal::SIGKILL)?;
                if getppid() != supervisor {
                    nix::libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| {
            format!(
                "cannot start '{}': {}",
                program.display(),
                super::os_error(&e)
            )
        })?;
        let pid = Pid::from_raw(child.id() as i32);
        drop(child);
        drop((requests_theirs, events_theirs));
        let mut collector = Collector {
            requests,
            pid,
            count: Arc::new(AtomicUsize::new(0)),
            alive: Arc::new(AtomicBool::new(true)),
            reaped: false,
        };
        let mut events = UnixStream::from(events);
        let greeted = greeted(&mut events);
        if !greeted {
            collector.stop();
            return Err(format!(
                "'{} __collect' did not start as a collector",
                program.display()
            ));
        }
        events
            .set_nonblocking(true)
            .map_err(|e| format!("cannot set up the collector's socket: {e}"))?;
        let timeout = nix::sys::time::TimeVal::new(PATIENCE.as_secs() as i64, 0);
        let _ = nix::sys::socket::setsockopt(
            &collector.requests,
            nix::sys::socket::sockopt::SendTimeout,
            &timeout,
        );
        Ok((collector, events))
    }

    /// Hands a node's descriptors to the collector; they are closed here once sent.
    fn send(&self, watch: &Watch) -> Result<(), String> {
        let mut fds = vec![watch.pidfd.as_raw_fd()];
        let mut flags = 0;
        for (fd, bit) in [
            (&watch.stdout, HAS_STDOUT),
            (&watch.stderr, HAS_STDERR),
            (&watch.ready, HAS_READY),
        ] {
            if let Some(fd) = fd {
                fds.push(fd.as_raw_fd());
                flags |= bit;
            }
        }
        let mut message = Vec::with_capacity(9 + watch.name.len());
        message.extend_from_slice(&watch.proc.0.to_le_bytes());
        message.push(flags);
        message.extend_from_slice(watch.name.as_bytes());
        loop {
            match sendmsg::<()>(
                self.requests.as_raw_fd(),
                &[IoSlice::new(&message)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(errno_text(e)),
            }
        }
    }

    /// Ends it (it also ends by itself when its request socket closes).
    fn stop(&mut self) {
        if !self.reaped {
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
            self.reaped = true;
        }
    }
}

/// Waits (up to `PATIENCE`, through signals) for a new collector's hello.
fn greeted(events: &mut UnixStream) -> bool {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = PollTimeout::try_from(left.as_millis() as i32).unwrap_or(PollTimeout::MAX);
        let mut ready = [PollFd::new(
            std::os::fd::AsFd::as_fd(&*events),
            PollFlags::POLLIN,
        )];
        match poll(&mut ready, timeout) {
            Ok(0) => return false,
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
    let mut hello = [0u8; 1];
    loop {
        match events.read(&mut hello) {
            Ok(1) => return hello[0] == HELLO,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => return false,
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // The pid is still the collector's: the subreaper's looks leave it alone and
        // only this handle collects it, so it cannot have been reused.
        self.stop();
    }
}

/// Where each node is watched: by the supervisor's own I/O thread while its table has
/// room, else by a collector.
pub struct Outlets {
    watcher: Watcher,
    program: PathBuf,
    supervisor: Pid,
    /// Nodes the I/O thread watches before collectors are used.
    local_capacity: usize,
    /// Nodes one collector watches.
    per_collector: usize,
    collectors: Vec<Collector>,
    /// A collector could not be started: nodes are watched here, whatever it costs.
    disabled: bool,
}

impl Outlets {
    /// Watches nodes with `watcher`, and with collectors run as `program __collect`
    /// when this process's limit on open files (as it is now) would be reached. Under a
    /// limit below 1024 no collector is used.
    pub fn new(watcher: Watcher, program: PathBuf, supervisor: Pid) -> Outlets {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
        let local_capacity = if soft < 1024 {
            usize::MAX
        } else {
            ((soft - soft / 8 - 512) / 3) as usize
        };
        Outlets {
            watcher,
            program,
            supervisor,
            local_capacity,
            per_collector: (hard.saturating_sub(COLLECTOR_RESERVE) / 3).max(1) as usize,
            collectors: Vec::new(),
            disabled: false,
        }
    }

    /// For tests: watch at most `local` nodes here and `each` per collector.
    pub fn set_capacities(&mut self, local: usize, each: usize) {
        self.local_capacity = local;
        self.per_collector = each.max(1);
    }

    /// Hands a new process to the I/O thread, or to a collector.
    pub fn watch(&mut self, watch: Watch, pid: Pid) {
        if self.disabled || self.watcher.local() < self.local_capacity {
            return self.watcher.watch(watch);
        }
        let Some(index) = self.collector_with_room() else {
            return self.watcher.watch(watch);
        };
        let collector = &self.collectors[index];
        self.watcher
            .spilled(index, watch.proc, pid, watch.name.clone());
        collector.count.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = collector.send(&watch) {
            log::error!(
                "cannot hand node '{}' to the collector (pid {}): {e}; watching it here",
                watch.name,
                collector.pid
            );
            self.watcher.unspilled(index, watch.proc);
            collector.count.fetch_sub(1, Ordering::SeqCst);
            self.watcher.watch(watch);
        }
    }

    fn collector_with_room(&mut self) -> Option<usize> {
        if let Some(index) = self.collectors.iter().position(|c| {
            c.alive.load(Ordering::SeqCst) && c.count.load(Ordering::SeqCst) < self.per_collector
        }) {
            return Some(index);
        }
        if self.collectors.len() >= MAX_COLLECTORS {
            return None;
        }
        match Collector::start(&self.program, self.supervisor) {
            Ok((collector, events)) => {
                let index = self.collectors.len();
                log::info!(
                    "this process's table of descriptors is nearly full: new nodes are \
                     watched by a collector (pid {}, up to {} nodes)",
                    collector.pid,
                    self.per_collector
                );
                self.watcher.link(
                    index,
                    events,
                    collector.pid,
                    collector.count.clone(),
                    collector.alive.clone(),
                );
                self.collectors.push(collector);
                Some(index)
            }
            Err(e) => {
                log::warn!("cannot start a collector ({e}); every node is watched here");
                self.disabled = true;
                None
            }
        }
    }

    /// The collectors' pids: children of this process that are not nodes.
    pub fn helpers(&self) -> impl Iterator<Item = Pid> + '_ {
        self.collectors.iter().filter(|c| !c.reaped).map(|c| c.pid)
    }

    /// Collects collectors that have died.
    pub fn tidy(&mut self) {
        for collector in &mut self.collectors {
            if !collector.reaped && !collector.alive.load(Ordering::SeqCst) {
                collector.stop();
            }
        }
    }

    /// A helper found dead by a look: collected if it is a collector.
    pub fn died(&mut self, pid: Pid) -> bool {
        let Some(collector) = self.collectors.iter_mut().find(|c| c.pid == pid) else {
            return false;
        };
        collector.alive.store(false, Ordering::SeqCst);
        if !collector.reaped {
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
            collector.reaped = true;
        }
        true
    }
}

/// What a collector's I/O thread hands its writer.
enum Out {
    Io(IoEvent),
    Released(ProcId),
}

impl From<IoEvent> for Out {
    fn from(event: IoEvent) -> Out {
        Out::Io(event)
    }
}

/// The collector's side (`PROGRAM __collect`): watches the nodes the supervisor sends
/// until the supervisor closes the request socket. Returns the exit status.
pub fn serve() -> i32 {
    // SAFETY: the supervisor put our ends of the socket pairs at these descriptors
    // before exec, and nothing else in this process owns them.
    let (requests, events) = unsafe {
        (
            OwnedFd::from_raw_fd(REQUESTS_FD),
            OwnedFd::from_raw_fd(EVENTS_FD),
        )
    };
    for fd in [&requests, &events] {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
    let (sender, receiver) = crossbeam_channel::bounded::<Out>(128);
    let released = sender.clone();
    let reactor = match Reactor::start_collector(
        sender,
        Box::new(move |proc| {
            let _ = released.send(Out::Released(proc));
        }),
    ) {
        Ok(reactor) => reactor,
        Err(e) => {
            eprintln!("collector: cannot start the I/O thread: {e}");
            return 1;
        }
    };
    let watcher = reactor.watcher();
    let mut events = UnixStream::from(events);
    if events.write_all(&[HELLO]).is_err() {
        return 0;
    }
    let writer = std::thread::Builder::new()
        .name("rhai-supervisor-collect".into())
        .spawn(move || write_frames(events, receiver));
    if writer.is_err() {
        eprintln!("collector: cannot start the writer thread");
        return 1;
    }
    read_requests(&requests, &watcher);
    // The supervisor has gone, or is done with us.
    0
}

/// Reads nodes from the supervisor and hands them to the I/O thread, until the socket
/// ends.
fn read_requests(requests: &OwnedFd, watcher: &Watcher) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let (bytes, fds) = match recvmsg::<()>(
            requests.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => {
                let mut fds = Vec::new();
                for cmsg in message.cmsgs().into_iter().flatten() {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        fds.extend(raw.into_iter().map(|fd| {
                            // SAFETY: the kernel just gave us these descriptors; we own them.
                            unsafe { OwnedFd::from_raw_fd(fd) }
                        }));
                    }
                }
                (message.bytes, fds)
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        };
        if bytes == 0 {
            return;
        }
        match request(&buffer[..bytes], fds) {
            Ok(watch) => watcher.watch(watch),
            Err(e) => eprintln!("collector: an invalid request: {e}"),
        }
    }
}

/// A request as a `Watch`: instance (8 bytes), flags (1), name; descriptors pidfd, then
/// stdout, stderr, ready as the flags say.
fn request(message: &[u8], fds: Vec<OwnedFd>) -> Result<Watch, String> {
    if message.len() < 9 {
        return Err("too short".into());
    }
    let proc = ProcId(u64::from_le_bytes(
        message[..8].try_into().unwrap_or_default(),
    ));
    let flags = message[8];
    let name: Arc<str> = String::from_utf8_lossy(&message[9..]).into();
    let mut fds = fds.into_iter();
    let pidfd = fds.next().ok_or("no pidfd")?;
    let mut take = |bit: u8| {
        if flags & bit != 0 {
            fds.next().ok_or("a descriptor is missing").map(Some)
        } else {
            Ok(None)
        }
    };
    let stdout = take(HAS_STDOUT)?;
    let stderr = take(HAS_STDERR)?;
    let ready = take(HAS_READY)?;
    Ok(Watch {
        proc,
        name,
        pidfd,
        stdout,
        stderr,
        ready,
    })
}

/// Writes what the I/O thread sees as frames, a batch per write, until the supervisor
/// stops reading for good; then the collector ends.
fn write_frames(mut events: UnixStream, receiver: crossbeam_channel::Receiver<Out>) {
    let mut buffer = Vec::with_capacity(256 * 1024);
    while let Ok(first) = receiver.recv() {
        buffer.clear();
        encode(&first, &mut buffer);
        while buffer.len() < 128 * 1024 {
            match receiver.try_recv() {
                Ok(next) => encode(&next, &mut buffer),
                Err(_) => break,
            }
        }
        if events.write_all(&buffer).is_err() {
            std::process::exit(0);
        }
    }
}

fn encode(out: &Out, buffer: &mut Vec<u8>) {
    let frame = match out {
        Out::Io(IoEvent::Output {
            proc,
            stream,
            lines,
            ..
        }) => Frame::Output {
            proc: *proc,
            stream: *stream,
            lines,
        },
        Out::Io(IoEvent::Exited { proc }) => Frame::Exited(*proc),
        Out::Io(IoEvent::FdReady { proc }) => Frame::FdReady(*proc),
        Out::Released(proc) => Frame::Released(*proc),
        // A collector has no signals, notification socket or checks.
        Out::Io(_) => return,
    };
    frame.encode(buffer);
}

/// What the supervisor's I/O thread keeps of one collector.
pub struct Link {
    pub events: UnixStream,
    pub pid: Pid,
    pub count: Arc<AtomicUsize>,
    pub alive: Arc<AtomicBool>,
    /// Bytes read that do not make a whole frame yet.
    pub pending: Vec<u8>,
    /// The nodes it watches that have not exited: their names and pids.
    pub procs: HashMap<ProcId, (Arc<str>, Pid)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_their_whole_payload() {
        let mut buffer = Vec::new();
        let frames = [
            Frame::Output {
                proc: ProcId(7),
                stream: Stream::Stderr,
                lines: b"a\nb\n",
            },
            Frame::Exited(ProcId(7)),
            Frame::FdReady(ProcId(1 << 40)),
            Frame::Released(ProcId(7)),
        ];
        for frame in &frames {
            frame.encode(&mut buffer);
        }
        let mut at = 0;
        for frame in &frames {
            // Every prefix short of the whole frame is incomplete.
            let (_, len) = Frame::decode(&buffer[at..]).unwrap().unwrap();
            for cut in 0..len {
                assert_eq!(Frame::decode(&buffer[at..at + cut]).unwrap(), None);
            }
            let (decoded, len) = Frame::decode(&buffer[at..]).unwrap().unwrap();
            assert_eq!(&decoded, frame);
            at += len;
        }
        assert_eq!(at, buffer.len());
        assert!(Frame::decode(&[9; HEADER]).is_err());
    }
}
