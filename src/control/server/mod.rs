//! The control thread of a supervisor: one thread serves every client of the control
//! socket, so the loop thread never touches a socket and never waits for a client.
//!
//! It blocks in `poll` on an eventfd (woken by answers and by shutdown), the listening
//! socket and every connection, all nonblocking. Bytes become lines; each complete line
//! is decoded here (`decode`) and, if valid, sent to the loop as an `Event::Task`,
//! which runs the request (`handle::execute`) in order with everything else the loop
//! does, puts the answer on this thread's reply channel and wakes it (a reload's
//! answer, once it is applied). The answer is then written to its client.
//!
//! One request per connection is in flight at a time: the next line of a connection is
//! looked at only once the previous answer has been written, so answers come in
//! request order and each client costs the loop at most one queued task. Everything a
//! client can make us hold is bounded: a line (`MAX_LINE`), one answer, a number of
//! clients, and the time it may take to send a line, to be idle, or to read its answer.
//!
//! A `follow` request is in flight until its stream ends: after its response the
//! connection carries stream lines, which this thread takes from the follower's feed
//! (`crate::feed`, filled by the loop) whenever the connection's output runs short.
//! The feed's budget, this thread's share of the output (`STREAM_SHORT`) and the
//! socket's buffer bound what a follower costs; a follower that takes nothing for
//! `write_timeout` is disconnected, which closes its feed.
//!
//! The socket file is `socket`'s business, a connection `conn`'s; peers are checked
//! with `SO_PEERCRED` (same user or root).

mod conn;
mod socket;

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
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
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use serde_json::Value;

use super::handle::{Peer, execute};
use super::{Command, MAX_LINE, Response, decode, stream_line, too_long};
use crate::event_loop::{Event, EventLoop};
use crate::feed::{Entry, Follower};
use crate::process::os_error;
use conn::{Conn, Following, queue_stream, read_available, reject, respond, write_pending};
use socket::{bind, remove_if_ours};

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

/// For tests only: replaces `write_timeout` with this many milliseconds, so that a
/// follower that never reads is seen dropped without waiting 10 s.
pub const TEST_WRITE_TIMEOUT_ENV: &str = "RHAI_SUPERVISOR_TEST_WRITE_TIMEOUT_MS";

impl Default for Limits {
    fn default() -> Self {
        let write_timeout = std::env::var(TEST_WRITE_TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map_or(Duration::from_secs(10), Duration::from_millis);
        Limits {
            max_clients: 256,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            write_timeout,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The control socket cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A live supervisor answers on the socket.
    #[error(
        "cannot listen on control socket '{0}': another supervisor is serving it (stop that one, or use --socket PATH or --no-socket)"
    )]
    InUse(
        /// The socket's path.
        String,
    ),
    /// The socket cannot be made.
    #[error("cannot listen on control socket '{path}': {reason}")]
    Failed {
        /// The socket's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
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
/// What a follower's feed may hold: about 2,000 lines of 30 bytes, or fewer longer ones.
pub const FEED_BUDGET: usize = 128 * 1024;
/// A streaming connection's output is refilled from its feed when less than this waits.
const STREAM_SHORT: usize = 64 * 1024;

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
                    if !conn.is_gone() {
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
                self.pump(index);
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
            let why = if conn.follow.is_some() {
                "took nothing of its stream in time"
            } else if conn.output_pending() {
                "does not read its answer"
            } else if conn.line_since.is_some() {
                "did not finish its request line in time"
            } else if conn.answered == 0 {
                "sent no request in time"
            } else {
                "was idle too long"
            };
            if conn.follow.is_some() {
                // Worth telling: someone who follows a node just lost its stream.
                log::info!("dropping a follower (pid {}): it {why}", conn.peer.pid);
            } else {
                log::debug!("dropping control client (pid {}): it {why}", conn.peer.pid);
            }
            // No message: a client reading later would take it for the answer to its
            // next request. A client that finds the connection closed reconnects.
            conn.set_gone();
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
            if let Some(follower) = conn.subscribing.take() {
                if response.ok && !conn.is_gone() {
                    conn.follow = Some(Following {
                        id: response.id,
                        follower: std::sync::Arc::new(follower),
                    });
                }
            }
        }
    }

    /// Moves stream lines from a following connection's feed to its output while the
    /// output runs short; ends the stream when the feed has ended or the client is gone.
    fn pump(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        let Some(following) = &conn.follow else {
            return;
        };
        // Handles of our own for the length of this call, so `conn` can be written to.
        let (id, follower) = (following.id.clone(), following.follower.clone());
        if conn.is_gone() || conn.closing {
            conn.follow = None; // closes the feed
            return;
        }
        // Until the feed is empty (its next item wakes this thread) or the socket is full
        // (it wakes this thread when the client reads): stopping anywhere else would
        // leave entries that nothing comes back for.
        let mut entries = Vec::new();
        let mut lines = Vec::new();
        let mut ended = false;
        loop {
            lines.clear();
            while !ended && conn.output.len() - conn.written + lines.len() < STREAM_SHORT {
                entries.clear();
                follower.take(STREAM_SHORT, &mut entries);
                if entries.is_empty() {
                    break;
                }
                for entry in &entries {
                    ended |= encode_entry(&id, entry, &mut lines);
                }
            }
            if lines.is_empty() {
                break;
            }
            queue_stream(conn, &lines);
            write_pending(conn);
            if ended || conn.output_pending() || conn.is_gone() {
                break;
            }
        }
        if ended {
            conn.follow = None;
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
        self.conns.push(Conn::new(self.next_conn, stream, peer));
        self.next_conn += 1;
    }

    /// Acts on what `poll` reported for a connection.
    fn service(&mut self, index: usize, flags: PollFlags) {
        let conn = &mut self.conns[index];
        if flags.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
            conn.set_gone();
            read_available(conn, &mut self.buffer, 2 * MAX_LINE);
            return;
        }
        if flags.contains(PollFlags::POLLHUP) {
            // Gone: what it sent before hanging up is still served (its answers are not).
            conn.set_gone();
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
            if conn.in_flight.is_some()
                || conn.follow.is_some()
                || conn.closing
                || (!conn.is_gone() && conn.output_pending())
            {
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
                None if conn.read_closed() || conn.is_gone() => {
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
        let feed = if matches!(request.command, Command::Follow(_)) {
            let waker = self.control.clone();
            let follower = Follower::new(FEED_BUDGET, move || waker.wake());
            let feed = follower.feed();
            conn.subscribing = Some(follower);
            Some(feed)
        } else {
            None
        };
        let task = move |event_loop: &mut EventLoop| {
            let respond = move |response| {
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
            execute(event_loop, peer, request, feed, Box::new(respond));
        };
        match self
            .events
            .send_timeout(Event::Task(Box::new(task)), self.limits.busy_timeout)
        {
            Ok(()) => self.conns[index].in_flight = Some(id),
            Err(SendTimeoutError::Timeout(_)) => {
                let conn = &mut self.conns[index];
                conn.subscribing = None;
                respond(
                    conn,
                    &Response::error(id, "the supervisor is busy; try again"),
                );
            }
            Err(SendTimeoutError::Disconnected(_)) => {
                let conn = &mut self.conns[index];
                conn.subscribing = None;
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
                conn.subscribing = None;
                respond(
                    conn,
                    &Response::error(id, "the supervisor stopped before answering"),
                );
            }
            // A stream gets what its feed still holds, then its end.
            if let Some(following) = conn.follow.take() {
                let mut entries = Vec::new();
                following.follower.take(usize::MAX, &mut entries);
                let mut lines = Vec::new();
                let mut ended = false;
                for entry in &entries {
                    ended |= encode_entry(&following.id, entry, &mut lines);
                }
                if !ended {
                    let end = Entry::End("the supervisor is stopping".into());
                    encode_entry(&following.id, &end, &mut lines);
                }
                queue_stream(conn, &lines);
                write_pending(conn);
            }
            conn.closing = true;
        }
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        loop {
            self.conns.retain(|c| !c.is_gone() && c.output_pending());
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

/// Appends the stream line of `entry` for request `id`; true for the stream's end.
fn encode_entry(id: &Value, entry: &Entry, lines: &mut Vec<u8>) -> bool {
    let line = match entry {
        Entry::Item(item) => stream_line(id, "item", item),
        Entry::Missed(n) => stream_line(id, "missed", &Value::from(*n)),
        Entry::End(reason) => stream_line(id, "end", &Value::from(reason.as_str())),
    };
    lines.extend_from_slice(&line);
    matches!(entry, Entry::End(_))
}

/// A poll timeout that does not wake before `wait` is over.
fn poll_timeout(wait: Duration) -> PollTimeout {
    let millis = wait.as_millis().saturating_add(1);
    PollTimeout::try_from(millis.min(i32::MAX as u128) as u64).unwrap_or(PollTimeout::MAX)
}
