//! One client of the control socket: what it sent and has not been served, the answer
//! being written, and how far the connection has come (`Link`).

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{MsgFlags, send};
use serde_json::Value;

use super::Limits;
use crate::control::handle::Peer;
use crate::control::{MAX_LINE, Response};
use crate::feed::Follower;

/// A connection that streams: the id of its `follow` request, and its feed.
pub(super) struct Following {
    pub(super) id: Value,
    /// Shared only for the length of one `pump`; when the connection lets go of it, the
    /// feed is closed.
    pub(super) follower: std::sync::Arc<Follower>,
}

/// How far a connection has come, from the client's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Link {
    /// Both ways open.
    Open,
    /// The client shut down its sending side: no more requests will come, answers are
    /// still written.
    ReadClosed,
    /// The client is gone (or was dropped): answers are not written and the socket is
    /// not polled any more; lines it sent before are still served, in order. `eof`
    /// once everything it sent has been read.
    Gone { eof: bool },
}

/// One client.
pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) stream: UnixStream,
    pub(super) peer: Peer,
    /// Bytes read; those from `start` on are not yet taken as lines. Taking a line moves
    /// `start`, and the taken bytes are dropped before more are read, so many small
    /// requests sent ahead cost no copying per line.
    pub(super) input: Vec<u8>,
    pub(super) start: usize,
    /// Where the search for the next newline goes on: `input[start..scanned]` has none.
    pub(super) scanned: usize,
    /// The answer being written, and how much of it is written.
    pub(super) output: Vec<u8>,
    pub(super) written: usize,
    pub(super) output_since: Instant,
    /// The id of the request the loop is working on.
    pub(super) in_flight: Option<Value>,
    pub(super) link: Link,
    /// No more lines are taken; the connection ends once its answer is written.
    pub(super) closing: bool,
    /// Since when the connection waits for a request, and since when for the rest of a
    /// started line.
    pub(super) waiting_since: Instant,
    pub(super) line_since: Option<Instant>,
    pub(super) answered: u64,
    /// The feed of a `follow` request the loop is working on.
    pub(super) subscribing: Option<Follower>,
    /// The stream this connection carries (after the response to its `follow`): no
    /// request is taken until it ends.
    pub(super) follow: Option<Following>,
}

impl Conn {
    /// A connection just accepted.
    pub(super) fn new(id: u64, stream: UnixStream, peer: Peer) -> Conn {
        let now = Instant::now();
        Conn {
            id,
            stream,
            peer,
            input: Vec::new(),
            start: 0,
            scanned: 0,
            output: Vec::new(),
            written: 0,
            output_since: now,
            in_flight: None,
            link: Link::Open,
            closing: false,
            waiting_since: now,
            line_since: None,
            answered: 0,
            subscribing: None,
            follow: None,
        }
    }

    /// The client is gone: nothing more is written to it.
    pub(super) fn is_gone(&self) -> bool {
        matches!(self.link, Link::Gone { .. })
    }

    /// No more bytes will be read.
    pub(super) fn read_closed(&self) -> bool {
        matches!(self.link, Link::ReadClosed | Link::Gone { eof: true })
    }

    pub(super) fn set_gone(&mut self) {
        let eof = self.read_closed();
        self.link = Link::Gone { eof };
    }

    pub(super) fn set_read_closed(&mut self) {
        self.link = match self.link {
            Link::Open | Link::ReadClosed => Link::ReadClosed,
            Link::Gone { .. } => Link::Gone { eof: true },
        };
    }

    pub(super) fn output_pending(&self) -> bool {
        self.written < self.output.len()
    }

    /// Whether the connection can be dropped.
    pub(super) fn done(&self) -> bool {
        self.closing && self.in_flight.is_none() && (self.is_gone() || !self.output_pending())
    }

    /// When the connection has waited too long for what it waits for.
    pub(super) fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.is_gone() {
            return None;
        }
        if self.output_pending() {
            return Some(self.output_since + limits.write_timeout);
        }
        if self.in_flight.is_some() || self.closing || self.follow.is_some() {
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
    pub(super) fn pending(&self) -> usize {
        self.input.len() - self.start
    }

    /// The next complete line, without its newline.
    pub(super) fn take_line(&mut self) -> Option<Vec<u8>> {
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
    pub(super) fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.input[self.start..].to_vec();
        self.input.clear();
        (self.start, self.scanned) = (0, 0);
        rest
    }

    /// Drops the bytes already taken, before more are read.
    pub(super) fn compact(&mut self) {
        if self.start > 0 {
            self.input.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
    }

    pub(super) fn events(&self) -> PollFlags {
        let mut events = PollFlags::empty();
        if self.output_pending() {
            events |= PollFlags::POLLOUT;
        }
        // Read only while all input was searched for a line (none is waiting) and there
        // is room for one: what a client sends ahead stays in its socket buffer, and a
        // line over the limit is seen as such without reading all of it.
        let line_waiting = self.scanned < self.input.len();
        if !self.read_closed() && !self.closing && !line_waiting && self.pending() <= MAX_LINE {
            events |= PollFlags::POLLIN;
        }
        events
    }
}

/// Queues an answer for a client and writes what the socket takes now.
pub(super) fn respond(conn: &mut Conn, response: &Response) {
    conn.answered += 1;
    if conn.is_gone() {
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
pub(super) fn write_pending(conn: &mut Conn) {
    while conn.output_pending() {
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        match send(conn.stream.as_raw_fd(), &conn.output[conn.written..], flags) {
            Ok(n) => {
                conn.written += n;
                if conn.follow.is_some() {
                    // A stream never ends: what counts is that the client keeps taking it.
                    conn.output_since = Instant::now();
                }
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return,
            Err(_) => {
                // EPIPE, ECONNRESET: it left without its answer.
                conn.set_gone();
                break;
            }
        }
    }
    conn.output.clear();
    conn.written = 0;
    conn.waiting_since = Instant::now();
}

/// Queues stream lines for a client: like `respond`, but they answer nothing new.
pub(super) fn queue_stream(conn: &mut Conn, lines: &[u8]) {
    if conn.is_gone() || lines.is_empty() {
        return;
    }
    if conn.output_pending() {
        // Drop what was written, so a stream that never drains does not grow the buffer.
        conn.output.drain(..conn.written);
    } else {
        conn.output.clear();
        conn.output_since = Instant::now();
    }
    conn.written = 0;
    conn.output.extend_from_slice(lines);
}

/// Reads what the client sent, without blocking, until more than `limit` bytes wait.
pub(super) fn read_available(conn: &mut Conn, buffer: &mut [u8], limit: usize) {
    conn.compact();
    while conn.pending() <= limit && !conn.read_closed() {
        match (&conn.stream).read(buffer) {
            Ok(0) => conn.set_read_closed(),
            Ok(n) => {
                if conn.pending() == 0 && conn.line_since.is_none() {
                    conn.line_since = Some(Instant::now());
                }
                conn.input.extend_from_slice(&buffer[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                conn.set_read_closed();
                conn.set_gone();
            }
        }
    }
}

/// Tells a client why it is not served, if it listens right away, and hangs up.
pub(super) fn reject(stream: &UnixStream, error: &str) {
    let line = Response::error(Value::Null, error).to_line();
    let _ = send(
        stream.as_raw_fd(),
        &line,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    );
}
