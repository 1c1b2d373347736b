//! `--metrics HOST:PORT`: the Prometheus text format at `GET /metrics`, computed when
//! asked, by one small thread of its own.
//!
//! The thread blocks in `poll` on an eventfd (woken by the loop's answers and by
//! shutdown), the listening TCP socket and its connections, all nonblocking. A request
//! is read up to its blank line and parsed with `httparse` (hyper's parser); for
//! `GET /metrics` the thread asks the loop for the node table's figures as a task
//! (`Event::Task`, as control requests travel), renders the text itself from them and
//! from `/proc/self` (`exposition`), and answers with `Connection: close`. Requests
//! that arrive while the loop is working on one are answered from the same figures, so
//! any number of scrapers cost the loop one look at the table at a time. Nothing runs
//! while nobody scrapes: there is no timer.
//!
//! What a client can make the thread hold is bounded: a request of `MAX_REQUEST`
//! bytes (431 past that), `MAX_CONNECTIONS` connections (a new one beyond that evicts
//! the oldest that has not sent its request, or is refused with 503), `REQUEST_TIMEOUT`
//! to send a request and `WRITE_TIMEOUT` to take an answer. Garbage is answered with
//! 400, other methods with 405 and other paths with 404. No client can block the loop:
//! the thread gives it at most one task at a time and never waits for it.
//!
//! `tiny_http` is not used: it serves each connection on a thread of its own (from a
//! pool that grows without a limit), so a thousand idle connections would be a
//! thousand threads.

pub(crate) mod exposition;

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{MsgFlags, send};

use crate::event_loop::{Event, EventLoop};
use crate::supervisor::Figures;
use exposition::{CONTENT_TYPE, Clock};

/// The longest request (its line and headers) read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its whole request within this time of connecting.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A client must take some of its answer at least this often.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for room in the loop's queue, and for the loop's answer,
/// before it is answered 503.
const BUSY_TIMEOUT: Duration = Duration::from_millis(500);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long accepting pauses after accept failed (out of file descriptors).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The metrics cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on '{address}': {reason}")]
pub struct MetricsError {
    /// The address as given.
    pub address: String,
    /// What went wrong.
    pub reason: String,
}

/// The thread that serves the metrics. Dropping it ends the thread and closes its
/// socket.
pub struct Server {
    address: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the thread shares with the loop's tasks and with `Server`.
struct Shared {
    waker: EventFd,
    stop: AtomicBool,
}

impl Shared {
    fn wake(&self) {
        // Fails only when the counter would overflow: a wake-up is pending anyway.
        let _ = self.waker.write(1);
    }
}

impl Server {
    /// Listens on `address` (`HOST:PORT`; port 0 picks a free one) and starts the thread,
    /// which asks the loop through `events`.
    pub fn start(address: &str, events: Sender<Event>) -> Result<Server, MetricsError> {
        let failed = |reason: String| MetricsError {
            address: address.to_string(),
            reason,
        };
        let listener =
            TcpListener::bind(address).map_err(|e| failed(crate::process::os_error(&e)))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| failed(crate::process::os_error(&e)))?;
        let bound = listener
            .local_addr()
            .map_err(|e| failed(crate::process::os_error(&e)))?;
        let waker = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| failed(format!("cannot create an eventfd: {}", e.desc())))?;
        let shared = Arc::new(Shared {
            waker,
            stop: AtomicBool::new(false),
        });
        let (answers_tx, answers) = crossbeam_channel::bounded(4);
        let serve = Serve {
            listener,
            shared: shared.clone(),
            events,
            answers_tx,
            answers,
            conns: Vec::new(),
            asked: None,
            accept_paused_until: None,
            clock: Clock::new(),
        };
        let thread = std::thread::Builder::new()
            .name("rhai-supervisor-metrics".into())
            .spawn(move || serve.run())
            .map_err(|e| failed(format!("cannot start its thread: {e}")))?;
        log::info!("serving metrics on http://{bound}/metrics");
        Ok(Server {
            address: bound,
            shared,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the metrics thread panicked");
            }
        }
    }
}

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading its request.
    Reading,
    /// Its request waits for the loop's figures (`head`: answered without a body).
    Waiting { head: bool },
    /// Writing its answer; closed once written.
    Writing,
}

struct Conn {
    stream: TcpStream,
    phase: Phase,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// When it connected, or when its answer last made progress.
    since: Instant,
    done: bool,
}

impl Conn {
    fn deadline(&self) -> Instant {
        match self.phase {
            Phase::Reading => self.since + REQUEST_TIMEOUT,
            Phase::Waiting { .. } => self.since + ANSWER_TIMEOUT,
            Phase::Writing => self.since + WRITE_TIMEOUT,
        }
    }

    fn events(&self) -> PollFlags {
        match self.phase {
            Phase::Reading => PollFlags::POLLIN,
            Phase::Waiting { .. } => PollFlags::empty(),
            Phase::Writing => PollFlags::POLLOUT,
        }
    }

    /// Queues an answer and writes what the socket takes now.
    fn answer(&mut self, response: Vec<u8>) {
        self.output = response;
        self.written = 0;
        self.phase = Phase::Writing;
        self.since = Instant::now();
        self.write();
    }

    fn write(&mut self) {
        while self.written < self.output.len() {
            let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
            match send(self.stream.as_raw_fd(), &self.output[self.written..], flags) {
                Ok(n) => {
                    self.written += n;
                    self.since = Instant::now();
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(_) => break,
            }
        }
        self.done = true;
    }

    /// Reads what came; once the request is complete (or wrong), says what to do.
    fn read(&mut self) -> Option<Request> {
        let mut buffer = [0u8; 4096];
        loop {
            let room = MAX_REQUEST + 1 - self.input.len().min(MAX_REQUEST);
            match (&self.stream).read(&mut buffer[..room.min(4096)]) {
                Ok(0) => {
                    // Gone before its request was complete.
                    self.done = true;
                    return None;
                }
                Ok(n) => self.input.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(_) => {
                    self.done = true;
                    return None;
                }
            }
            if let Some(request) = parse(&self.input) {
                return Some(request);
            }
        }
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` (`head`: `HEAD`).
    Metrics { head: bool },
    /// Answer at once with this status.
    Refuse(u16),
}

/// Parses the bytes of a request read so far; `None` while it is incomplete.
fn parse(input: &[u8]) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(input) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if input.len() > MAX_REQUEST => {
            return Some(Request::Refuse(431));
        }
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => return Some(Request::Refuse(431)),
        Err(_) => return Some(Request::Refuse(400)),
    }
    let path = request.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    let head = match request.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Some(Request::Refuse(405)),
    };
    if path != "/metrics" {
        return Some(Request::Refuse(404));
    }
    Some(Request::Metrics { head })
}

/// An HTTP/1.1 response that closes the connection.
fn response(status: u16, content_type: &str, body: &[u8], head: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body);
    }
    out
}

fn refusal(status: u16) -> Vec<u8> {
    let body = match status {
        400 => "bad request: this serves GET /metrics\n",
        404 => "not found: the metrics are at /metrics\n",
        405 => "method not allowed: GET or HEAD /metrics\n",
        431 => "request too large\n",
        _ => "the supervisor is busy; try again\n",
    };
    response(status, "text/plain; charset=utf-8", body.as_bytes(), false)
}

/// The thread's state.
struct Serve {
    listener: TcpListener,
    shared: Arc<Shared>,
    events: Sender<Event>,
    answers_tx: Sender<Vec<Figures>>,
    answers: Receiver<Vec<Figures>>,
    conns: Vec<Conn>,
    /// Since when the loop works on figures asked for.
    asked: Option<Instant>,
    accept_paused_until: Option<Instant>,
    clock: Clock,
}

impl Serve {
    fn run(mut self) {
        let mut ready: Vec<(usize, PollFlags)> = Vec::new();
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            self.expire(now);
            self.conns.retain(|c| !c.done);
            if self.accept_paused_until.is_some_and(|until| until <= now) {
                self.accept_paused_until = None;
            }
            let deadline = self
                .conns
                .iter()
                .map(Conn::deadline)
                .chain(self.accept_paused_until)
                .min();
            let timeout = match deadline {
                Some(at) => {
                    let wait = at.saturating_duration_since(now).as_millis() + 1;
                    PollTimeout::try_from(wait.min(i32::MAX as u128) as u64)
                        .unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            ready.clear();
            let accept = {
                let mut fds = Vec::with_capacity(2 + self.conns.len());
                fds.push(PollFd::new(self.shared.waker.as_fd(), PollFlags::POLLIN));
                let listening = self.accept_paused_until.is_none();
                if listening {
                    fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
                }
                let mut owners = Vec::with_capacity(self.conns.len());
                for (index, conn) in self.conns.iter().enumerate() {
                    let events = conn.events();
                    if !events.is_empty() {
                        fds.push(PollFd::new(conn.stream.as_fd(), events));
                        owners.push(index);
                    }
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        log::error!("the metrics thread cannot wait: {}", e.desc());
                        std::thread::sleep(ACCEPT_PAUSE);
                        continue;
                    }
                }
                let revents = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
                if !revents(&fds[0]).is_empty() {
                    let _ = self.shared.waker.read();
                }
                let first = if listening { 2 } else { 1 };
                for (fd, &index) in fds[first..].iter().zip(&owners) {
                    let flags = revents(fd);
                    if !flags.is_empty() {
                        ready.push((index, flags));
                    }
                }
                listening && !revents(&fds[1]).is_empty()
            };
            self.take_answers();
            for &(index, _) in &ready {
                self.service(index);
            }
            if accept {
                self.accept();
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let mut late = false;
        for conn in &mut self.conns {
            if conn.deadline() > now {
                continue;
            }
            match conn.phase {
                // No answer: one that never sent a request gets none.
                Phase::Reading | Phase::Writing => conn.done = true,
                Phase::Waiting { .. } => late = true,
            }
        }
        if late {
            // The loop did not answer in time (a script call that runs long).
            self.asked = None;
            for conn in &mut self.conns {
                if let Phase::Waiting { .. } = conn.phase {
                    conn.answer(refusal(503));
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: the backlog waits a moment.
                    log::debug!("metrics: cannot accept: {e}");
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: TcpStream) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        self.conns.retain(|c| !c.done);
        if self.conns.len() >= MAX_CONNECTIONS {
            // Room for the newcomer: the oldest connection that has sent nothing usable
            // goes; if every one is being served, the newcomer is refused.
            let oldest = self
                .conns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.phase == Phase::Reading)
                .min_by_key(|(_, c)| c.since)
                .map(|(index, _)| index);
            match oldest {
                Some(index) => {
                    self.conns.swap_remove(index);
                }
                None => {
                    let refused = refusal(503);
                    let _ = send(
                        stream.as_raw_fd(),
                        &refused,
                        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                    );
                    return;
                }
            }
        }
        let mut conn = Conn {
            stream,
            phase: Phase::Reading,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            since: Instant::now(),
            done: false,
        };
        // Most clients have sent their request by now.
        if let Some(request) = conn.read() {
            self.conns.push(conn);
            let index = self.conns.len() - 1;
            self.serve_request(index, request);
        } else {
            self.conns.push(conn);
        }
    }

    fn service(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        match conn.phase {
            Phase::Reading => {
                if let Some(request) = conn.read() {
                    self.serve_request(index, request);
                }
            }
            Phase::Writing => conn.write(),
            Phase::Waiting { .. } => {}
        }
    }

    fn serve_request(&mut self, index: usize, request: Request) {
        let conn = &mut self.conns[index];
        conn.input = Vec::new();
        match request {
            Request::Refuse(status) => conn.answer(refusal(status)),
            Request::Metrics { head } => {
                conn.phase = Phase::Waiting { head };
                conn.since = Instant::now();
                self.ask();
            }
        }
    }

    /// Asks the loop for the node table's figures, unless it is already asked.
    fn ask(&mut self) {
        // A task the loop never ran (it was stopping) does not hold up the next one.
        if self.asked.is_some_and(|at| at.elapsed() < ANSWER_TIMEOUT) {
            return;
        }
        let answers = self.answers_tx.clone();
        let shared = self.shared.clone();
        let task = move |event_loop: &mut EventLoop| {
            let figures = event_loop
                .nodes()
                .map(|nodes| nodes.borrow().figures())
                .unwrap_or_default();
            if answers.try_send(figures).is_ok() {
                shared.wake();
            }
        };
        match self
            .events
            .send_timeout(Event::Task(Box::new(task)), BUSY_TIMEOUT)
        {
            Ok(()) => self.asked = Some(Instant::now()),
            Err(SendTimeoutError::Timeout(_) | SendTimeoutError::Disconnected(_)) => {
                for conn in &mut self.conns {
                    if let Phase::Waiting { .. } = conn.phase {
                        conn.answer(refusal(503));
                    }
                }
            }
        }
    }

    /// Answers every waiting request from the figures the loop sent.
    fn take_answers(&mut self) {
        while let Ok(figures) = self.answers.try_recv() {
            self.asked = None;
            let body = exposition::render(&figures, self.clock.process().as_ref());
            let mut full = None;
            let mut headers_only = None;
            for conn in &mut self.conns {
                let Phase::Waiting { head } = conn.phase else {
                    continue;
                };
                let answer = if head {
                    headers_only
                        .get_or_insert_with(|| response(200, CONTENT_TYPE, body.as_bytes(), true))
                        .clone()
                } else {
                    full.get_or_insert_with(|| response(200, CONTENT_TYPE, body.as_bytes(), false))
                        .clone()
                };
                conn.answer(answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Request::Metrics { head: false })
        );
        assert_eq!(
            parse(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Some(Request::Metrics { head: true })
        );
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Some(Request::Refuse(404)));
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Request::Refuse(405))
        );
        assert_eq!(
            parse(b"\x00\x01garbage\r\n\r\n"),
            Some(Request::Refuse(400))
        );
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_REQUEST + 1, b'a');
        assert_eq!(parse(&huge), Some(Request::Refuse(431)));
    }

    #[test]
    fn responses_close_the_connection_and_say_their_length() {
        let text = String::from_utf8(response(200, CONTENT_TYPE, b"a 1\n", false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 4\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\na 1\n"));
        let head = String::from_utf8(response(200, CONTENT_TYPE, b"a 1\n", true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
        let refused = String::from_utf8(refusal(405)).unwrap();
        assert!(refused.contains("Allow: GET, HEAD\r\n"));
    }
}
