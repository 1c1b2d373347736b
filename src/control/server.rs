//! The control thread of a supervisor: one thread serves every client of the control
//! socket, so the loop thread never touches a socket and never waits for a client.
//!
//! It blocks in `poll` on an eventfd (woken by answers and by shutdown), the listening
//! socket and every connection, all nonblocking. Bytes become lines; each complete line
//! is decoded here (`decode`) and, if valid, sent to the loop as an `Event::Task`,
//! which runs the request (`handle::execute`) in order with everything else the loop
//! does, puts the answer on this thread's reply channel and wakes it. The answer is
//! then written to its client.
//!
//! One request per connection is in flight at a time: the next line of a connection is
//! looked at only once the previous answer has been written, so answers come in
//! request order and each client costs the loop at most one queued task. Everything a
//! client can make us hold is bounded: a line (`MAX_LINE`), one answer, a number of
//! clients, and the time it may take to send a line, to be idle, or to read its answer.
//!
//! The socket file: bound under a umask that makes it 0600 (then set 0600 explicitly,
//! in case a default ACL widened it), peers checked with `SO_PEERCRED` (same user or
//! root), a stale file from a dead supervisor replaced, a live one left alone, and the
//! file removed at shutdown if it is still ours.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, getsockopt, send, socket,
    sockopt::PeerCredentials,
};
use nix::sys::stat::{Mode, umask};
use serde_json::Value;

use super::handle::{Peer, execute};
use super::{MAX_LINE, Response, decode, too_long};
use crate::event_loop::{Event, EventLoop};
use crate::process::os_error;

/// How much a client may make the control thread hold or wait for.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Clients served at once; more are told so and disconnected.
    pub max_clients: usize,
    /// A new client must send a complete line, and a started line must be finished,
    /// within this time, or the connection is closed.
    pub request_timeout: Duration,
    /// A client that was answered and sends nothing more is disconnected after this.
    pub idle_timeout: Duration,
    /// A client must take its answer within this time, or it is disconnected.
    pub write_timeout: Duration,
    /// How long a request may wait for room in the loop's queue before the client is
    /// told that the supervisor is busy.
    pub busy_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 256,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The control socket cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "cannot listen on control socket '{0}': another supervisor is serving it (stop that one, or use --socket PATH or --no-socket)"
    )]
    InUse(String),
    #[error("cannot listen on control socket '{path}': {reason}")]
    Failed { path: String, reason: String },
}

/// A running control thread. Dropping it removes the socket file, answers what is still
/// in flight with an error, gives clients a moment to read, and ends the thread.
pub struct Server {
    path: PathBuf,
    /// Device and inode of the socket file we bound, to remove only our own.
    identity: (u64, u64),
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

/// What the control thread shares with the loop and with `Server`.
struct Control {
    waker: EventFd,
    stop: AtomicBool,
}

impl Control {
    fn wake(&self) {
        // Fails only when the counter would overflow: a wake-up is pending anyway.
        let _ = self.waker.write(1);
    }
}

/// How much the thread reads from a socket at once.
const READ_CHUNK: usize = 64 * 1024;
/// How long clients get to read the last answers when the supervisor shuts down.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);
/// How long accepting pauses after accept failed (say, out of file descriptors).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

impl Server {
    /// Binds `path` (relative to the current directory) and starts the control thread,
    /// which hands requests to the loop through `events`.
    ///
    /// The umask is changed for the moment of `bind`; call this before other threads of
    /// the program create files.
    pub fn start(
        path: &Path,
        events: Sender<Event>,
        limits: Limits,
    ) -> Result<Server, ListenError> {
        let failed = |reason: String| ListenError::Failed {
            path: path.display().to_string(),
            reason,
        };
        let path = std::path::absolute(path).map_err(|e| failed(os_error(&e)))?;
        let listener = bind(&path)?;
        listener
            .set_nonblocking(true)
            .map_err(|e| failed(os_error(&e)))?;
        let identity = std::fs::metadata(&path)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| failed(os_error(&e)))?;
        let waker = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| failed(format!("cannot create an eventfd: {}", e.desc())))?;
        let control = Arc::new(Control {
            waker,
            stop: AtomicBool::new(false),
        });
        let (reply_tx, reply_rx) = crossbeam_channel::unbounded();
        let serve = Serve {
            listener: Some(listener),
            control: control.clone(),
            events,
            reply_tx,
            reply_rx,
            conns: Vec::new(),
            next_conn: 1,
            own_uid: nix::unistd::geteuid().as_raw(),
            limits,
            accept_paused_until: None,
            buffer: vec![0; READ_CHUNK],
        };
        let thread = std::thread::Builder::new()
            .name("rhai-supervisor-control".into())
            .spawn(move || serve.run())
            .map_err(|e| failed(format!("cannot start the control thread: {}", os_error(&e))))?;
        log::info!("listening for control clients on '{}'", path.display());
        Ok(Server {
            path,
            identity,
            control,
            thread: Some(thread),
        })
    }

    /// The socket's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // First the file, so no new client finds us; then the thread, which answers what
        // is in flight and flushes within `SHUTDOWN_FLUSH`.
        remove_if_ours(&self.path, self.identity);
        self.control.stop.store(true, Ordering::SeqCst);
        self.control.wake();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the control thread panicked");
            }
        }
    }
}

/// Binds a listening socket at `path`, mode 0600: replaces a stale socket file, refuses
/// to take over a live one.
fn bind(path: &Path) -> Result<UnixListener, ListenError> {
    let failed = |reason: String| ListenError::Failed {
        path: path.display().to_string(),
        reason,
    };
    match bind_private(path) {
        Ok(listener) => return Ok(listener),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
        Err(e) => return Err(failed(bind_error(path, &e))),
    }
    // Something is at `path`. A supervisor that answers keeps it; a socket nobody
    // listens on was left by a supervisor that died, and is replaced.
    let metadata = std::fs::symlink_metadata(path).map_err(|e| failed(os_error(&e)))?;
    if !metadata.file_type().is_socket() {
        return Err(failed("a file that is not a socket is in the way".into()));
    }
    match probe(path) {
        Probe::Live => return Err(ListenError::InUse(path.display().to_string())),
        Probe::Stale => {}
        Probe::Unknown(reason) => {
            return Err(failed(format!(
                "a socket is there and cannot be checked: {reason}"
            )));
        }
    }
    log::info!(
        "replacing stale control socket '{}' (no supervisor answers on it)",
        path.display()
    );
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(failed(format!(
                "cannot remove the stale socket: {}",
                os_error(&e)
            )));
        }
    }
    bind_private(path).map_err(|e| failed(bind_error(path, &e)))
}

fn bind_error(path: &Path, error: &io::Error) -> String {
    if error.kind() == io::ErrorKind::InvalidInput {
        // std refuses paths that do not fit in `sun_path`.
        format!(
            "the path is too long for a Unix socket ({} bytes; at most 107)",
            path.as_os_str().len()
        )
    } else {
        os_error(error)
    }
}

/// `bind` with a umask that leaves the file to its owner, then mode 0600 for certain.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

enum Probe {
    Live,
    Stale,
    Unknown(String),
}

/// Whether a supervisor listens at `path`. A nonblocking connect: a listener whose
/// backlog is full (a busy supervisor) counts as live instead of blocking us.
fn probe(path: &Path) -> Probe {
    let attempt = || -> nix::Result<()> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let address = UnixAddr::new(path)?;
        connect(fd.as_raw_fd(), &address)
    };
    match attempt() {
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => Probe::Live,
        Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => Probe::Stale,
        Err(e) => Probe::Unknown(e.desc().to_lowercase()),
    }
}

/// Removes the socket file if it is still the one we bound.
fn remove_if_ours(path: &Path, identity: (u64, u64)) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if (m.dev(), m.ino()) == identity => {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!(
                    "cannot remove control socket '{}': {}",
                    path.display(),
                    os_error(&e)
                );
            }
        }
        _ => {}
    }
}

/// An answer from the loop for connection `conn`.
struct Reply {
    conn: u64,
    response: Response,
}

/// The control thread's state.
struct Serve {
    listener: Option<UnixListener>,
    control: Arc<Control>,
    events: Sender<Event>,
    reply_tx: Sender<Reply>,
    reply_rx: Receiver<Reply>,
    conns: Vec<Conn>,
    next_conn: u64,
    own_uid: u32,
    limits: Limits,
    accept_paused_until: Option<Instant>,
    buffer: Vec<u8>,
}

/// One client.
struct Conn {
    id: u64,
    stream: UnixStream,
    peer: Peer,
    /// Bytes read; those from `start` on are not yet taken as lines. Taking a line moves
    /// `start`, and the taken bytes are dropped before more are read, so many small
    /// requests sent ahead cost no copying per line.
    input: Vec<u8>,
    start: usize,
    /// Where the search for the next newline goes on: `input[start..scanned]` has none.
    scanned: usize,
    /// The answer being written, and how much of it is written.
    output: Vec<u8>,
    written: usize,
    output_since: Instant,
    /// The id of the request the loop is working on.
    in_flight: Option<Value>,
    /// The client shut down its sending side: no more requests will come.
    read_closed: bool,
    /// The client is gone (or was dropped): answers are not written, the socket is not
    /// polled any more; lines it sent before are still served, in order.
    gone: bool,
    /// No more lines are taken; the connection ends once its answer is written.
    closing: bool,
    /// Since when the connection waits for a request, and since when for the rest of a
    /// started line.
    waiting_since: Instant,
    line_since: Option<Instant>,
    answered: u64,
}

impl Conn {
    fn output_pending(&self) -> bool {
        self.written < self.output.len()
    }

    /// Whether the connection can be dropped.
    fn done(&self) -> bool {
        self.closing && self.in_flight.is_none() && (self.gone || !self.output_pending())
    }

    /// When the connection has waited too long for what it waits for.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.gone {
            return None;
        }
        if self.output_pending() {
            return Some(self.output_since + limits.write_timeout);
        }
        if self.in_flight.is_some() || self.closing {
            return None;
        }
        if let Some(since) = self.line_since {
            return Some(since + limits.request_timeout);
        }
        if self.answered == 0 {
            Some(self.waiting_since + limits.request_timeout)
        } else {
            Some(self.waiting_since + limits.idle_timeout)
        }
    }

    /// The bytes not yet taken as lines.
    fn pending(&self) -> usize {
        self.input.len() - self.start
    }

    /// The next complete line, without its newline.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        let Some(found) = memchr::memchr(b'\n', &self.input[self.scanned..]) else {
            self.scanned = self.input.len();
            return None;
        };
        let at = self.scanned + found;
        let line = self.input[self.start..at].to_vec();
        self.start = at + 1;
        self.scanned = self.start;
        self.line_since = if self.pending() == 0 {
            None
        } else {
            Some(Instant::now())
        };
        Some(line)
    }

    /// The rest, when no newline will come to end it.
    fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.input[self.start..].to_vec();
        self.input.clear();
        (self.start, self.scanned) = (0, 0);
        rest
    }

    /// Drops the bytes already taken, before more are read.
    fn compact(&mut self) {
        if self.start > 0 {
            self.input.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
    }

    fn events(&self) -> PollFlags {
        let mut events = PollFlags::empty();
        if self.output_pending() {
            events |= PollFlags::POLLOUT;
        }
        // Read only while all input was searched for a line (none is waiting) and there
        // is room for one: what a client sends ahead stays in its socket buffer, and a
        // line over the limit is seen as such without reading all of it.
        let line_waiting = self.scanned < self.input.len();
        if !self.read_closed && !self.closing && !line_waiting && self.pending() <= MAX_LINE {
            events |= PollFlags::POLLIN;
        }
        events
    }
}

impl Serve {
    fn run(mut self) {
        let mut ready: Vec<(usize, PollFlags)> = Vec::new();
        loop {
            if self.control.stop.load(Ordering::SeqCst) {
                self.finish();
                return;
            }
            let now = Instant::now();
            self.expire(now);
            self.conns.retain(|c| !c.done());
            if self.accept_paused_until.is_some_and(|until| until <= now) {
                self.accept_paused_until = None;
            }
            let timeout = match self.next_deadline() {
                Some(at) => poll_timeout(at.saturating_duration_since(now)),
                None => PollTimeout::NONE,
            };

            ready.clear();
            let (woken, accept) = {
                let mut fds = Vec::with_capacity(2 + self.conns.len());
                let mut owners = Vec::with_capacity(self.conns.len());
                fds.push(PollFd::new(self.control.waker.as_fd(), PollFlags::POLLIN));
                let listening = match &self.listener {
                    Some(listener) if self.accept_paused_until.is_none() => {
                        fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
                        true
                    }
                    _ => false,
                };
                for (index, conn) in self.conns.iter().enumerate() {
                    // A gone client is no longer polled: it would report POLLHUP forever.
                    if !conn.gone {
                        fds.push(PollFd::new(conn.stream.as_fd(), conn.events()));
                        owners.push(index);
                    }
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        log::error!("the control thread cannot wait for clients: {}", e.desc());
                        std::thread::sleep(ACCEPT_PAUSE);
                        continue;
                    }
                }
                let revents = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
                let woken = !revents(&fds[0]).is_empty();
                let accept = listening && !revents(&fds[1]).is_empty();
                let first_conn = if listening { 2 } else { 1 };
                for (fd, &index) in fds[first_conn..].iter().zip(&owners) {
                    let flags = revents(fd);
                    if !flags.is_empty() {
                        ready.push((index, flags));
                    }
                }
                (woken, accept)
            };

            if woken {
                let _ = self.control.waker.read();
            }
            self.take_replies();
            if accept {
                self.accept();
            }
            for &(index, flags) in &ready {
                self.service(index, flags);
            }
            for index in 0..self.conns.len() {
                self.advance(index);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let conns = self.conns.iter().filter_map(|c| c.deadline(&self.limits));
        conns.chain(self.accept_paused_until).min()
    }

    /// Drops clients that waited too long or keep us waiting.
    fn expire(&mut self, now: Instant) {
        for conn in &mut self.conns {
            let Some(deadline) = conn.deadline(&self.limits) else {
                continue;
            };
            if deadline > now {
                continue;
            }
            let why = if conn.output_pending() {
                "does not read its answer"
            } else if conn.line_since.is_some() {
                "did not finish its request line in time"
            } else if conn.answered == 0 {
                "sent no request in time"
            } else {
                "was idle too long"
            };
            log::debug!("dropping control client (pid {}): it {why}", conn.peer.pid);
            // No message: a client reading later would take it for the answer to its
            // next request. A client that finds the connection closed reconnects.
            conn.gone = true;
            conn.closing = true;
        }
    }

    fn take_replies(&mut self) {
        while let Ok(Reply { conn, response }) = self.reply_rx.try_recv() {
            let Some(index) = self.conns.iter().position(|c| c.id == conn) else {
                continue;
            };
            let conn = &mut self.conns[index];
            conn.in_flight = None;
            respond(conn, &response);
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("cannot accept a control client: {}", os_error(&e));
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: UnixStream) {
        if let Err(e) = stream.set_nonblocking(true) {
            log::warn!("cannot set up a control client: {}", os_error(&e));
            return;
        }
        let credentials = match getsockopt(&stream, PeerCredentials) {
            Ok(credentials) => credentials,
            Err(e) => {
                log::warn!("cannot identify a control client: {}", e.desc());
                return;
            }
        };
        let peer = Peer {
            pid: credentials.pid(),
            uid: credentials.uid(),
        };
        if peer.uid != self.own_uid && peer.uid != 0 {
            log::warn!(
                "refused a control client of uid {} (pid {}): only uid {} and root may control this supervisor",
                peer.uid,
                peer.pid,
                self.own_uid
            );
            reject(
                &stream,
                &format!(
                    "permission denied: only uid {} and root may control this supervisor",
                    self.own_uid
                ),
            );
            return;
        }
        if self.conns.len() >= self.limits.max_clients {
            log::warn!(
                "refused a control client (pid {}): already serving {} clients",
                peer.pid,
                self.conns.len()
            );
            reject(
                &stream,
                &format!(
                    "too many clients: the supervisor serves at most {} at once",
                    self.limits.max_clients
                ),
            );
            return;
        }
        log::debug!(
            "control client connected (pid {}, uid {})",
            peer.pid,
            peer.uid
        );
        let now = Instant::now();
        self.conns.push(Conn {
            id: self.next_conn,
            stream,
            peer,
            input: Vec::new(),
            start: 0,
            scanned: 0,
            output: Vec::new(),
            written: 0,
            output_since: now,
            in_flight: None,
            read_closed: false,
            gone: false,
            closing: false,
            waiting_since: now,
            line_since: None,
            answered: 0,
        });
        self.next_conn += 1;
    }

    /// Acts on what `poll` reported for a connection.
    fn service(&mut self, index: usize, flags: PollFlags) {
        let conn = &mut self.conns[index];
        if flags.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
            conn.gone = true;
            read_available(conn, &mut self.buffer, 2 * MAX_LINE);
            return;
        }
        if flags.contains(PollFlags::POLLHUP) {
            // Gone: what it sent before hanging up is still served (its answers are not).
            conn.gone = true;
            read_available(conn, &mut self.buffer, 2 * MAX_LINE);
            return;
        }
        if flags.contains(PollFlags::POLLOUT) {
            write_pending(conn);
        }
        if flags.contains(PollFlags::POLLIN) {
            read_available(conn, &mut self.buffer, MAX_LINE + 1);
        }
    }

    /// Takes the connection's next line if it is ready for one: decodes it, and either
    /// answers at once (a bad request) or hands it to the loop.
    fn advance(&mut self, index: usize) {
        loop {
            let conn = &mut self.conns[index];
            if conn.in_flight.is_some() || conn.closing || (!conn.gone && conn.output_pending()) {
                return;
            }
            let line = match conn.take_line() {
                Some(line) => line,
                None if conn.pending() > MAX_LINE => {
                    log::debug!(
                        "dropping control client (pid {}): its request line is too long",
                        conn.peer.pid
                    );
                    respond(conn, &Response::error(Value::Null, too_long()));
                    conn.closing = true;
                    return;
                }
                None if conn.read_closed || conn.gone => {
                    if conn.pending() == 0 {
                        conn.closing = true;
                        return;
                    }
                    // The last line may lack its newline.
                    conn.take_rest()
                }
                None => return,
            };
            if line.len() > MAX_LINE {
                respond(conn, &Response::error(Value::Null, too_long()));
                conn.closing = true;
                return;
            }
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match decode(line) {
                Ok(request) => self.submit(index, request),
                Err(rejected) => {
                    log::debug!(
                        "bad control request from pid {}: {}",
                        conn.peer.pid,
                        rejected.error
                    );
                    respond(conn, &Response::error(rejected.id, rejected.error));
                }
            }
        }
    }

    /// Hands a request to the loop.
    fn submit(&mut self, index: usize, request: super::Request) {
        let conn = &mut self.conns[index];
        let (id, conn_id, peer) = (request.id.clone(), conn.id, conn.peer);
        let replies = self.reply_tx.clone();
        let control = self.control.clone();
        let task = move |event_loop: &mut EventLoop| {
            let response = execute(event_loop, peer, request);
            if replies
                .send(Reply {
                    conn: conn_id,
                    response,
                })
                .is_ok()
            {
                control.wake();
            }
        };
        match self
            .events
            .send_timeout(Event::Task(Box::new(task)), self.limits.busy_timeout)
        {
            Ok(()) => self.conns[index].in_flight = Some(id),
            Err(SendTimeoutError::Timeout(_)) => respond(
                &mut self.conns[index],
                &Response::error(id, "the supervisor is busy; try again"),
            ),
            Err(SendTimeoutError::Disconnected(_)) => {
                let conn = &mut self.conns[index];
                respond(
                    conn,
                    &Response::error(id, "the supervisor is shutting down"),
                );
                conn.closing = true;
            }
        }
    }

    /// Shutdown: answer what is in flight with an error, flush, close.
    fn finish(&mut self) {
        self.listener = None;
        self.take_replies();
        for conn in &mut self.conns {
            if let Some(id) = conn.in_flight.take() {
                respond(
                    conn,
                    &Response::error(id, "the supervisor stopped before answering"),
                );
            }
            conn.closing = true;
        }
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        loop {
            self.conns.retain(|c| !c.gone && c.output_pending());
            let now = Instant::now();
            if self.conns.is_empty() || now >= deadline {
                return;
            }
            let mut fds: Vec<PollFd> = self
                .conns
                .iter()
                .map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLOUT))
                .collect();
            if let Err(e) = poll(&mut fds, poll_timeout(deadline - now)) {
                if e != Errno::EINTR {
                    return;
                }
            }
            drop(fds);
            for conn in &mut self.conns {
                write_pending(conn);
            }
        }
    }
}

/// Queues an answer for a client and writes what the socket takes now.
fn respond(conn: &mut Conn, response: &Response) {
    conn.answered += 1;
    if conn.gone {
        return;
    }
    if !conn.output_pending() {
        conn.output.clear();
        conn.written = 0;
        conn.output_since = Instant::now();
    }
    conn.output.extend_from_slice(&response.to_line());
    write_pending(conn);
}

/// Writes as much of the pending answer as the socket takes without blocking.
fn write_pending(conn: &mut Conn) {
    while conn.output_pending() {
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        match send(conn.stream.as_raw_fd(), &conn.output[conn.written..], flags) {
            Ok(n) => conn.written += n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return,
            Err(_) => {
                // EPIPE, ECONNRESET: it left without its answer.
                conn.gone = true;
                break;
            }
        }
    }
    conn.output.clear();
    conn.written = 0;
    conn.waiting_since = Instant::now();
}

/// Reads what the client sent, without blocking, until more than `limit` bytes wait.
fn read_available(conn: &mut Conn, buffer: &mut [u8], limit: usize) {
    conn.compact();
    while conn.pending() <= limit && !conn.read_closed {
        match (&conn.stream).read(buffer) {
            Ok(0) => conn.read_closed = true,
            Ok(n) => {
                if conn.pending() == 0 && conn.line_since.is_none() {
                    conn.line_since = Some(Instant::now());
                }
                conn.input.extend_from_slice(&buffer[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                conn.read_closed = true;
                conn.gone = true;
            }
        }
    }
}

/// Tells a client why it is not served, if it listens right away, and hangs up.
fn reject(stream: &UnixStream, error: &str) {
    let line = Response::error(Value::Null, error).to_line();
    let _ = send(
        stream.as_raw_fd(),
        &line,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    );
}

/// A poll timeout that does not wake before `wait` is over.
fn poll_timeout(wait: Duration) -> PollTimeout {
    let millis = wait.as_millis().saturating_add(1);
    PollTimeout::try_from(millis.min(i32::MAX as u128) as u64).unwrap_or(PollTimeout::MAX)
}
