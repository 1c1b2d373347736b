//! The one I/O thread.
//!
//! It blocks in `epoll_wait` on: every node's pidfd and output pipes, a self-pipe that
//! signal handlers write to, and an eventfd the loop uses to hand it new processes. It
//! turns what it sees into `IoEvent`s on the loop's channel (whose own event type wraps
//! them: `From<IoEvent>`):
//!
//! - output bytes become `IoEvent::Output` with complete lines only (see `lines`);
//! - a readable pidfd (the process exited) first drains that process's pipes, flushes
//!   an unfinished last line, and only then sends `IoEvent::Exited`, so every line a
//!   node wrote reaches the loop before its exit does;
//! - the signals it is given (SIGTERM and SIGINT; SIGHUP for a supervisor that reloads
//!   on it; SIGCHLD for a subreaper) become `IoEvent::Signal`;
//! - datagrams on the notification socket (`notify`) become `IoEvent::Notify`, one per
//!   sender and wake-up, whatever a node sends;
//! - a newline on a node's readiness descriptor (`ready: #{fd: N}`) becomes
//!   `IoEvent::FdReady`;
//! - network checks (`probe`) are run here, with their timeouts as the only deadlines
//!   this thread ever has, and end as `IoEvent::Probed`.
//!
//! The channel to the loop is bounded: when the loop falls behind, `send` blocks, this
//! thread stops reading, the pipes fill, and writing nodes block. An output event holds
//! at most one 64 KiB read plus one unfinished line (at most `lines::MAX_LINE`), so the
//! output waiting for the loop is bounded by the queue length times 128 KiB.
//! The loop never waits for this thread, so the two cannot deadlock.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::Signal;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use nix::unistd::Pid;

use super::collector::{Frame, Link};
use super::lines::LineBuffer;
use super::notify::{Listener, Notification};
use super::probe::{NetProbe, Running};
use super::{ProcId, Stream, errno_text};

/// What the I/O thread tells the loop.
#[derive(Debug)]
pub enum IoEvent {
    /// Complete lines (each ending in `\n`) that a node wrote.
    Output {
        proc: ProcId,
        node: Arc<str>,
        stream: Stream,
        lines: Vec<u8>,
    },
    /// A process exited; all its output was sent before this.
    Exited { proc: ProcId },
    /// A signal the I/O thread was given reached this process.
    Signal(Signal),
    /// Process `pid` (by its credentials) said this on the notification socket.
    Notify {
        pid: Pid,
        notification: Notification,
    },
    /// Process `proc` wrote a newline to its readiness descriptor.
    FdReady { proc: ProcId },
    /// A network check ended.
    Probed {
        id: ProcId,
        result: Result<(), String>,
    },
}

/// How much one pipe may deliver before others get their turn: one buffer.
const READ_BUDGET: usize = BUFFER;
/// The read buffer, and so the most bytes (plus an unfinished line) one event carries.
const BUFFER: usize = 64 * 1024;
/// How much is drained from the pipes of a process that just exited: more than any pipe
/// holds, and bounded in case a surviving descendant keeps writing.
const EXIT_DRAIN_BUDGET: usize = 4 * 1024 * 1024;

const TOKEN_WAKE: u64 = u64::MAX;
const TOKEN_SIGNALS: u64 = u64::MAX - 1;
const TOKEN_NOTIFY: u64 = u64::MAX - 2;
/// Tokens of network checks: this bit and the check's index.
const TOKEN_PROBE: u64 = 1 << 62;
/// Tokens of collectors' event sockets: this bit and the collector's index.
const TOKEN_LINK: u64 = 1 << 61;
/// How much is read from one collector before others get their turn.
const LINK_BUDGET: usize = 4 * BUFFER;
const KIND_PIDFD: u64 = 0;
const KIND_STDOUT: u64 = 1;
const KIND_STDERR: u64 = 2;
const KIND_READY: u64 = 3;
/// How many notification datagrams are read before other descriptors get their turn.
const NOTIFY_BUDGET: usize = 1024;

/// A process for the reactor to watch.
#[derive(Debug)]
pub struct Watch {
    pub proc: ProcId,
    pub name: Arc<str>,
    pub pidfd: OwnedFd,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// The read end of its readiness descriptor (`ready: #{fd: N}`).
    pub ready: Option<OwnedFd>,
}

enum Command {
    Watch(Watch),
    Probe(NetProbe),
    /// A collector's event socket, at its index.
    Link(usize, Link),
    /// A node about to be handed to collector `link`: its frames name it by `proc`.
    Spilled {
        link: usize,
        proc: ProcId,
        pid: Pid,
        name: Arc<str>,
    },
    /// It was not handed over after all.
    Unspilled {
        link: usize,
        proc: ProcId,
    },
    Stop,
}

/// Called by the I/O thread when it holds nothing of a process any more.
pub type OnRelease = Box<dyn Fn(ProcId) + Send>;

/// The I/O thread itself: dropping it stops the thread and its signal routing.
pub struct Reactor {
    watcher: Watcher,
    /// The notification socket's name, when there is one.
    notify_socket: Option<String>,
    thread: Option<JoinHandle<()>>,
    signal_ids: Vec<signal_hook::SigId>,
}

/// Hands processes to the I/O thread; cheap to clone.
#[derive(Clone)]
pub struct Watcher {
    commands: Sender<Command>,
    waker: Arc<EventFd>,
    /// Processes the I/O thread watches itself (or has been handed and will).
    local: Arc<AtomicUsize>,
}

impl Reactor {
    /// Starts the I/O thread, which sends to `events`, and routes `signals` to it. With
    /// `notify`, it also listens on a notification socket of its own.
    pub fn start<E: From<IoEvent> + Send + 'static>(
        events: Sender<E>,
        signals: &[Signal],
        notify: bool,
    ) -> io::Result<Reactor> {
        Reactor::start_with(events, signals, notify, None)
    }

    /// The I/O thread of a collector (`collector`): no signals and no notification
    /// socket; `on_release` hears of every process it is done with.
    pub fn start_collector<E: From<IoEvent> + Send + 'static>(
        events: Sender<E>,
        on_release: OnRelease,
    ) -> io::Result<Reactor> {
        Reactor::start_with(events, &[], false, Some(on_release))
    }

    fn start_with<E: From<IoEvent> + Send + 'static>(
        events: Sender<E>,
        signals: &[Signal],
        notify: bool,
        on_release: Option<OnRelease>,
    ) -> io::Result<Reactor> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let waker = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        epoll.add(
            waker.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WAKE),
        )?;

        let (signal_read, signal_write) = UnixStream::pair()?;
        signal_read.set_nonblocking(true)?;
        epoll.add(
            &signal_read,
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNALS),
        )?;
        let mut flags = Vec::new();
        let mut signal_ids = Vec::new();
        for &signal in signals {
            let flag = Arc::new(AtomicBool::new(false));
            // The flag is registered first so that it is set before the pipe wakes us.
            signal_ids.push(signal_hook::flag::register(signal as i32, flag.clone())?);
            signal_ids.push(signal_hook::low_level::pipe::register(
                signal as i32,
                signal_write.try_clone()?,
            )?);
            flags.push((signal, flag));
        }

        let notify = if notify {
            let listener = Listener::bind()?;
            epoll.add(
                listener.fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_NOTIFY),
            )?;
            Some(listener)
        } else {
            None
        };
        let notify_socket = notify.as_ref().map(|l| l.name().to_string());
        let (commands, command_rx) = crossbeam_channel::unbounded();
        let local = Arc::new(AtomicUsize::new(0));
        let io = Io {
            local: local.clone(),
            on_release,
            links: Vec::new(),
            notify,
            probes: Vec::new(),
            probe_deadlines: BinaryHeap::new(),
            epoll,
            waker: waker.clone(),
            signal_pipe: signal_read,
            signal_flags: flags,
            commands: command_rx,
            events,
            slots: Vec::new(),
            free: Vec::new(),
            buffer: vec![0; BUFFER],
        };
        let thread = std::thread::Builder::new()
            .name("rhai-supervisor-io".into())
            .spawn(move || io.run())?;
        Ok(Reactor {
            notify_socket,
            watcher: Watcher {
                commands,
                waker,
                local,
            },
            thread: Some(thread),
            signal_ids,
        })
    }

    pub fn watcher(&self) -> Watcher {
        self.watcher.clone()
    }

    /// The name nodes find in `NOTIFY_SOCKET`.
    pub fn notify_socket(&self) -> Option<&str> {
        self.notify_socket.as_deref()
    }
}

impl Watcher {
    /// Hands a freshly spawned process to the I/O thread.
    pub fn watch(&self, watch: Watch) {
        self.local.fetch_add(1, Ordering::SeqCst);
        self.send(Command::Watch(watch));
    }

    /// How many processes the I/O thread watches itself.
    pub fn local(&self) -> usize {
        self.local.load(Ordering::SeqCst)
    }

    /// Reads collector `index`'s frames from `events` from now on.
    pub fn link(
        &self,
        index: usize,
        events: UnixStream,
        pid: Pid,
        count: Arc<AtomicUsize>,
        alive: Arc<AtomicBool>,
    ) {
        self.send(Command::Link(
            index,
            Link {
                events,
                pid,
                count,
                alive,
                pending: Vec::new(),
                procs: std::collections::HashMap::new(),
            },
        ));
    }

    /// Process `proc` (pid `pid`) is about to be handed to collector `link`.
    pub fn spilled(&self, link: usize, proc: ProcId, pid: Pid, name: Arc<str>) {
        self.send(Command::Spilled {
            link,
            proc,
            pid,
            name,
        });
    }

    /// `spilled`, taken back: the collector did not get it.
    pub fn unspilled(&self, link: usize, proc: ProcId) {
        self.send(Command::Unspilled { link, proc });
    }

    /// Runs a network check; its end comes as `IoEvent::Probed`.
    pub fn probe(&self, probe: NetProbe) {
        self.send(Command::Probe(probe));
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            // An eventfd write fails only when the counter would overflow, in which case
            // the thread has a wake-up pending anyway.
            let _ = self.waker.write(1);
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        for id in self.signal_ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        self.watcher.send(Command::Stop);
        // Joining could wait on a full event channel whose reader is gone with us; the
        // thread notices the closed channel on its next send and ends by itself.
        drop(self.thread.take());
    }
}

/// One watched process: its pidfd until it exits, its pipes until they reach EOF.
struct Slot {
    proc: ProcId,
    name: Arc<str>,
    pidfd: Option<OwnedFd>,
    pipes: [Option<Pipe>; 2],
    ready: Option<OwnedFd>,
}

struct Pipe {
    fd: OwnedFd,
    lines: LineBuffer,
}

struct Io<E> {
    /// Counts the processes watched here (down, as they are released).
    local: Arc<AtomicUsize>,
    on_release: Option<OnRelease>,
    /// Collectors' event sockets, by index.
    links: Vec<Option<Link>>,
    notify: Option<Listener>,
    /// Network checks under way, by index (their tokens), and when each times out.
    probes: Vec<Option<Running>>,
    probe_deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    epoll: Epoll,
    waker: Arc<EventFd>,
    signal_pipe: UnixStream,
    signal_flags: Vec<(Signal, Arc<AtomicBool>)>,
    commands: Receiver<Command>,
    events: Sender<E>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    buffer: Vec<u8>,
}

/// The event channel is gone: the loop has ended, and so does this thread.
struct Closed;

impl<E: From<IoEvent>> Io<E> {
    /// Sends to the loop; fails once the loop has gone.
    fn send(&self, event: IoEvent) -> Result<(), Closed> {
        self.events.send(E::from(event)).map_err(|_| Closed)
    }

    fn run(mut self) {
        let mut ready = vec![EpollEvent::empty(); 256];
        loop {
            // The only deadlines here are those of network checks under way.
            let timeout = match self.probe_deadlines.peek() {
                Some(Reverse((at, _))) => {
                    let ms = at.saturating_duration_since(Instant::now()).as_millis() + 1;
                    EpollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                        .unwrap_or(EpollTimeout::NONE)
                }
                None => EpollTimeout::NONE,
            };
            let n = match self.epoll.wait(&mut ready, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("the I/O thread cannot wait for events: {}", errno_text(e));
                    return;
                }
            };
            for event in &ready[..n] {
                let outcome = match event.data() {
                    TOKEN_WAKE => self.take_commands(),
                    TOKEN_SIGNALS => self.take_signals(),
                    TOKEN_NOTIFY => self.take_notifications(),
                    token if token & TOKEN_PROBE != 0 => {
                        self.advance_probe((token & !TOKEN_PROBE) as usize)
                    }
                    token if token & TOKEN_LINK != 0 => {
                        self.read_link((token & !TOKEN_LINK) as usize)
                    }
                    token => self.ready(token),
                };
                if outcome.is_err() {
                    return;
                }
            }
            if self.expire_probes().is_err() {
                return;
            }
        }
    }

    fn take_notifications(&mut self) -> Result<(), Closed> {
        let Some(listener) = &self.notify else {
            return Ok(());
        };
        for (pid, notification) in listener.receive(NOTIFY_BUDGET) {
            self.send(IoEvent::Notify { pid, notification })?;
        }
        Ok(())
    }

    fn start_probe(&mut self, probe: NetProbe) -> Result<(), Closed> {
        let id = probe.id;
        let running = match Running::start(probe, Instant::now()) {
            Ok(running) => running,
            Err(error) => {
                return self.send(IoEvent::Probed {
                    id,
                    result: Err(error),
                });
            }
        };
        let index = match self.probes.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.probes.push(None);
                self.probes.len() - 1
            }
        };
        if let Err(e) = self.epoll.add(
            running.fd(),
            EpollEvent::new(running.interest(), TOKEN_PROBE | index as u64),
        ) {
            return self.send(IoEvent::Probed {
                id,
                result: Err(format!("cannot wait for the check: {}", errno_text(e))),
            });
        }
        self.probe_deadlines
            .push(Reverse((running.deadline, index)));
        self.probes[index] = Some(running);
        Ok(())
    }

    fn advance_probe(&mut self, index: usize) -> Result<(), Closed> {
        let Some(Some(running)) = self.probes.get_mut(index) else {
            return Ok(());
        };
        match running.advance() {
            None => {
                let mut event = EpollEvent::new(running.interest(), TOKEN_PROBE | index as u64);
                let _ = self.epoll.modify(running.fd(), &mut event);
                Ok(())
            }
            Some(result) => self.finish_probe(index, result),
        }
    }

    fn finish_probe(&mut self, index: usize, result: Result<(), String>) -> Result<(), Closed> {
        let Some(running) = self.probes.get_mut(index).and_then(Option::take) else {
            return Ok(());
        };
        let _ = self.epoll.delete(running.fd());
        self.send(IoEvent::Probed {
            id: running.probe.id,
            result,
        })
    }

    /// Checks whose time is up fail.
    fn expire_probes(&mut self) -> Result<(), Closed> {
        let now = Instant::now();
        while let Some(Reverse((at, index))) = self.probe_deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.probe_deadlines.pop();
            // A deadline of a check that ended already, or of an earlier one in its place.
            let due = matches!(self.probes.get(index), Some(Some(r)) if r.deadline == at);
            if due {
                let error = self.probes[index]
                    .as_ref()
                    .map(Running::timed_out)
                    .unwrap_or_default();
                self.finish_probe(index, Err(error))?;
            }
        }
        Ok(())
    }

    fn take_commands(&mut self) -> Result<(), Closed> {
        let _ = self.waker.read();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Watch(watch) => self.add(watch),
                Command::Probe(probe) => self.start_probe(probe)?,
                Command::Link(index, link) => self.add_link(index, link),
                Command::Spilled {
                    link,
                    proc,
                    pid,
                    name,
                } => {
                    if let Some(Some(link)) = self.links.get_mut(link) {
                        link.procs.insert(proc, (name, pid));
                    }
                }
                Command::Unspilled { link, proc } => {
                    if let Some(Some(link)) = self.links.get_mut(link) {
                        link.procs.remove(&proc);
                    }
                }
                Command::Stop => return Err(Closed),
            }
        }
        Ok(())
    }

    fn take_signals(&mut self) -> Result<(), Closed> {
        let mut sink = [0u8; 64];
        while matches!(io::Read::read(&mut &self.signal_pipe, &mut sink), Ok(n) if n > 0) {}
        for (signal, flag) in &self.signal_flags {
            if flag.swap(false, Ordering::SeqCst) {
                self.send(IoEvent::Signal(*signal))?;
            }
        }
        Ok(())
    }

    fn add(&mut self, watch: Watch) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let base = (index as u64) << 2;
        let register = |fd: &OwnedFd, kind: u64| {
            if let Err(e) = self
                .epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, base | kind))
            {
                log::error!(
                    "cannot watch node '{}' (epoll: {}); its exit or output will be missed",
                    watch.name,
                    errno_text(e)
                );
            }
        };
        register(&watch.pidfd, KIND_PIDFD);
        if let Some(fd) = &watch.stdout {
            register(fd, KIND_STDOUT);
        }
        if let Some(fd) = &watch.stderr {
            register(fd, KIND_STDERR);
        }
        if let Some(fd) = &watch.ready {
            register(fd, KIND_READY);
        }
        let pipe = |fd: Option<OwnedFd>| {
            fd.map(|fd| Pipe {
                fd,
                lines: LineBuffer::default(),
            })
        };
        self.slots[index] = Some(Slot {
            proc: watch.proc,
            name: watch.name,
            pidfd: Some(watch.pidfd),
            pipes: [pipe(watch.stdout), pipe(watch.stderr)],
            ready: watch.ready,
        });
    }

    fn ready(&mut self, token: u64) -> Result<(), Closed> {
        let index = (token >> 2) as usize;
        if !matches!(self.slots.get(index), Some(Some(_))) {
            return Ok(()); // closed earlier in this batch
        }
        match token & 3 {
            KIND_PIDFD => self.exited(index),
            KIND_STDOUT => self.read(index, 0, READ_BUDGET, false),
            KIND_STDERR => self.read(index, 1, READ_BUDGET, false),
            _ => self.read_ready(index),
        }
    }

    /// The readiness descriptor is readable: a newline means ready; the end of it, or
    /// what else is written, closes it.
    fn read_ready(&mut self, index: usize) -> Result<(), Closed> {
        let Some(slot) = self.slots[index].as_mut() else {
            return Ok(());
        };
        let Some(fd) = &slot.ready else {
            return Ok(());
        };
        let mut buffer = [0u8; 512];
        let (ready, done) = match nix::unistd::read(fd, &mut buffer) {
            Ok(0) => (false, true),
            Ok(n) => {
                let ready = buffer[..n].contains(&b'\n');
                (ready, ready)
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => (false, false),
            Err(_) => (false, true),
        };
        let proc = slot.proc;
        if done {
            if let Some(fd) = slot.ready.take() {
                let _ = self.epoll.delete(&fd);
            }
            self.release_if_done(index);
        }
        if ready {
            self.send(IoEvent::FdReady { proc })?;
        }
        Ok(())
    }

    /// Reads up to `budget` bytes from one pipe and sends the complete lines, one event
    /// per read (so an event holds at most one buffer's worth plus an unfinished line);
    /// with `flush`, an unfinished last line too.
    fn read(
        &mut self,
        index: usize,
        which: usize,
        budget: usize,
        flush: bool,
    ) -> Result<(), Closed> {
        let mut total = 0;
        loop {
            let Some(slot) = self.slots[index].as_mut() else {
                return Ok(());
            };
            let Some(pipe) = slot.pipes[which].as_mut() else {
                return Ok(());
            };
            let mut lines = Vec::new();
            let (mut done, mut eof) = (false, false);
            match nix::unistd::read(&pipe.fd, &mut self.buffer) {
                Ok(0) => eof = true,
                Ok(n) => {
                    pipe.lines.push(&self.buffer[..n], &mut lines);
                    total += n;
                    // A short read emptied the pipe; a full budget gives others a turn.
                    done = total >= budget || n < self.buffer.len();
                }
                Err(Errno::EAGAIN) => done = true,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!(
                        "cannot read output of node '{}': {}",
                        slot.name,
                        errno_text(e)
                    );
                    eof = true;
                }
            }
            if eof || (done && flush) {
                pipe.lines.finish(&mut lines);
            }
            if eof {
                let _ = self.epoll.delete(&pipe.fd);
                slot.pipes[which] = None;
            }
            let stream = if which == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            let (proc, node) = (slot.proc, slot.name.clone());
            if eof {
                self.release_if_done(index);
            }
            if !lines.is_empty() {
                self.send(IoEvent::Output {
                    proc,
                    node,
                    stream,
                    lines,
                })?;
            }
            if eof || done {
                return Ok(());
            }
        }
    }

    /// The process exited: drain its pipes, then report the exit.
    fn exited(&mut self, index: usize) -> Result<(), Closed> {
        let Some(slot) = self.slots[index].as_mut() else {
            return Ok(());
        };
        if let Some(pidfd) = slot.pidfd.take() {
            let _ = self.epoll.delete(&pidfd);
        }
        if let Some(ready) = slot.ready.take() {
            let _ = self.epoll.delete(&ready);
        }
        let proc = slot.proc;
        for which in 0..2 {
            self.read(index, which, EXIT_DRAIN_BUDGET, true)?;
        }
        self.release_if_done(index);
        self.send(IoEvent::Exited { proc })
    }

    fn release_if_done(&mut self, index: usize) {
        if let Some(slot) = &self.slots[index] {
            if slot.pidfd.is_none()
                && slot.ready.is_none()
                && slot.pipes.iter().all(Option::is_none)
            {
                let proc = slot.proc;
                self.slots[index] = None;
                self.free.push(index);
                let _ = self
                    .local
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                if let Some(on_release) = &self.on_release {
                    on_release(proc);
                }
            }
        }
    }

    fn add_link(&mut self, index: usize, link: Link) {
        if let Err(e) = self.epoll.add(
            &link.events,
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LINK | index as u64),
        ) {
            log::error!(
                "cannot wait for the collector (pid {}): {}",
                link.pid,
                errno_text(e)
            );
        }
        if self.links.len() <= index {
            self.links.resize_with(index + 1, || None);
        }
        self.links[index] = Some(link);
    }

    /// A collector's socket is readable: its frames become events, as the same
    /// happenings of a process watched here would.
    fn read_link(&mut self, index: usize) -> Result<(), Closed> {
        // A node is registered before it is handed over: take registrations first, so
        // that every frame's node is known.
        self.take_commands()?;
        let mut lost = false;
        let mut total = 0;
        loop {
            let Some(Some(link)) = self.links.get_mut(index) else {
                return Ok(());
            };
            match io::Read::read(&mut &link.events, &mut self.buffer) {
                Ok(0) => {
                    lost = true;
                    break;
                }
                Ok(n) => {
                    link.pending.extend_from_slice(&self.buffer[..n]);
                    total += n;
                    if n < self.buffer.len() || total >= LINK_BUDGET {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    lost = true;
                    break;
                }
            }
        }
        let mut events = Vec::new();
        if let Some(Some(link)) = self.links.get_mut(index) {
            let mut at = 0;
            loop {
                match Frame::decode(&link.pending[at..]) {
                    Ok(Some((frame, len))) => {
                        at += len;
                        match frame {
                            Frame::Output {
                                proc,
                                stream,
                                lines,
                            } => {
                                let node = match link.procs.get(&proc) {
                                    Some((name, _)) => name.clone(),
                                    None => Arc::from("?"),
                                };
                                events.push(IoEvent::Output {
                                    proc,
                                    node,
                                    stream,
                                    lines: lines.to_vec(),
                                });
                            }
                            Frame::Exited(proc) => {
                                // Reaped by the loop from now on: never watched again.
                                link.procs.remove(&proc);
                                events.push(IoEvent::Exited { proc });
                            }
                            Frame::FdReady(proc) => events.push(IoEvent::FdReady { proc }),
                            Frame::Released(proc) => {
                                link.procs.remove(&proc);
                                let _ = link.count.fetch_update(
                                    Ordering::SeqCst,
                                    Ordering::SeqCst,
                                    |n| n.checked_sub(1),
                                );
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        log::error!("the collector (pid {}) sent {e}", link.pid);
                        lost = true;
                        break;
                    }
                }
            }
            link.pending.drain(..at);
        }
        for event in events {
            self.send(event)?;
        }
        if lost {
            self.lose_link(index)?;
        }
        Ok(())
    }

    /// A collector has gone, and the read ends of its nodes' pipes with it: their exits
    /// are watched here now, and they are stopped, to be revived with new pipes.
    fn lose_link(&mut self, index: usize) -> Result<(), Closed> {
        let Some(link) = self.links.get_mut(index).and_then(Option::take) else {
            return Ok(());
        };
        let _ = self.epoll.delete(&link.events);
        link.alive.store(false, Ordering::SeqCst);
        if !link.procs.is_empty() {
            log::error!(
                "the collector (pid {}) has gone, and the output pipes of its {} nodes \
                 with it: they are stopped, to be revived with new pipes",
                link.pid,
                link.procs.len()
            );
        }
        for (proc, (name, pid)) in link.procs {
            match super::spawn::pidfd_open(pid) {
                Ok(pidfd) => {
                    self.local.fetch_add(1, Ordering::SeqCst);
                    self.add(Watch {
                        proc,
                        name,
                        pidfd,
                        stdout: None,
                        stderr: None,
                        ready: None,
                    });
                    super::signal_group(pid, Signal::SIGTERM);
                }
                Err(e) => {
                    log::error!("cannot watch node '{name}' (pid {pid}) any more: {e}");
                    super::signal_group(pid, Signal::SIGKILL);
                    self.send(IoEvent::Exited { proc })?;
                }
            }
        }
        Ok(())
    }
}
