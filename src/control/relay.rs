//! `rhai-supervisor ctl __relay`: the other end of `control::ssh`. It joins its stdin
//! and stdout (ssh's channel) to the control socket, byte for byte, until one side is
//! done: the protocol's lines pass through unchanged, so the supervisor sees an
//! ordinary client and the far end gets its answers as a local client would.
//!
//! When stdin ends (the far end has sent all it will), the socket's sending side is
//! shut down; the supervisor answers what it read and closes, and the relay leaves
//! once those answers are out. When stdout's reader goes away (ssh killed, the far end
//! gone), it leaves at once. One thread, one `poll`, no timeouts: the far end keeps
//! the time.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::process::{errno_text, os_error};

/// How much may wait in each direction before the relay stops reading that side.
const BUFFER: usize = 256 * 1024;

/// Why the relay could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No supervisor listens at the socket.
    #[error("cannot connect to the supervisor at '{path}': {reason}")]
    Connect {
        /// The socket's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("cannot relay the control socket '{path}': {reason}")]
    Io {
        /// The socket's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Relays between stdin/stdout and the supervisor at `socket` until both are done.
pub fn relay(socket: &Path) -> Result<(), RelayError> {
    let path = socket.display().to_string();
    let stream = UnixStream::connect(socket).map_err(|e| RelayError::Connect {
        path: path.clone(),
        reason: os_error(&e),
    })?;
    let io_error = |reason: String| RelayError::Io {
        path: path.clone(),
        reason,
    };
    stream
        .set_nonblocking(true)
        .map_err(|e| io_error(os_error(&e)))?;
    let stdin = io::stdin();
    let stdout = io::stdout();
    // Our stdin and stdout are ssh's pipes, ours alone; the flags go back as they were
    // in case they are someone's terminal.
    let _stdin_flags = Nonblocking::set(stdin.as_fd()).map_err(|e| io_error(errno_text(e)))?;
    let _stdout_flags = Nonblocking::set(stdout.as_fd()).map_err(|e| io_error(errno_text(e)))?;
    Pipes {
        input: stdin.as_fd(),
        output: stdout.as_fd(),
        socket: stream.as_fd(),
        to_socket: Vec::new(),
        to_output: Vec::new(),
        input_open: true,
        socket_open: true,
        shut_down: false,
    }
    .run(&stream)
    .map_err(|e| io_error(errno_text(e)))
}

struct Pipes<'a> {
    input: BorrowedFd<'a>,
    output: BorrowedFd<'a>,
    socket: BorrowedFd<'a>,
    to_socket: Vec<u8>,
    to_output: Vec<u8>,
    input_open: bool,
    socket_open: bool,
    shut_down: bool,
}

impl Pipes<'_> {
    fn run(&mut self, stream: &UnixStream) -> nix::Result<()> {
        loop {
            if !self.input_open && self.to_socket.is_empty() && !self.shut_down {
                // Everything sent: the supervisor answers it, then closes.
                let _ = stream.shutdown(std::net::Shutdown::Write);
                self.shut_down = true;
            }
            if !self.socket_open && self.to_output.is_empty() {
                return Ok(());
            }
            let mut input_events = PollFlags::empty();
            if self.input_open && self.to_socket.len() < BUFFER {
                input_events |= PollFlags::POLLIN;
            }
            let mut socket_events = PollFlags::empty();
            if self.socket_open && self.to_output.len() < BUFFER {
                socket_events |= PollFlags::POLLIN;
            }
            if !self.to_socket.is_empty() {
                socket_events |= PollFlags::POLLOUT;
            }
            let mut output_events = PollFlags::empty();
            if !self.to_output.is_empty() {
                output_events |= PollFlags::POLLOUT;
            }
            // stdout is always polled: POLLERR there means the far end has gone. A
            // socket or stdin that has ended is not: it would report POLLHUP forever.
            let socket_polled = self.socket_open || !self.to_socket.is_empty();
            let mut fds = vec![PollFd::new(self.output, output_events)];
            if socket_polled {
                fds.push(PollFd::new(self.socket, socket_events));
            }
            if self.input_open {
                fds.push(PollFd::new(self.input, input_events));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
            let revents = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
            let output = revents(&fds[0]);
            let socket = if socket_polled {
                revents(&fds[1])
            } else {
                PollFlags::empty()
            };
            let input = if self.input_open {
                fds.last().map_or(PollFlags::empty(), revents)
            } else {
                PollFlags::empty()
            };
            drop(fds);
            if output.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                return Ok(());
            }
            if !input.is_empty() {
                self.input_open = read_some(self.input, &mut self.to_socket)?;
            }
            if socket.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                && self.socket_open
                && self.to_output.len() < BUFFER
            {
                self.socket_open = read_some(self.socket, &mut self.to_output)?;
            }
            if socket.contains(PollFlags::POLLOUT) && !write_some(self.socket, &mut self.to_socket)?
            {
                // The supervisor is gone: nothing sent will be answered.
                self.to_socket.clear();
                self.input_open = false;
            }
            if output.contains(PollFlags::POLLOUT) && !write_some(self.output, &mut self.to_output)?
            {
                return Ok(());
            }
        }
    }
}

/// Reads what is there; false at the end of the stream.
fn read_some(fd: BorrowedFd<'_>, buffer: &mut Vec<u8>) -> nix::Result<bool> {
    let mut chunk = [0u8; 64 * 1024];
    match nix::unistd::read(fd, &mut chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(true),
        Err(Errno::ECONNRESET) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes what it can; false when the reader has gone.
fn write_some(fd: BorrowedFd<'_>, buffer: &mut Vec<u8>) -> nix::Result<bool> {
    match nix::unistd::write(fd, buffer) {
        Ok(n) => {
            buffer.drain(..n);
            Ok(true)
        }
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(true),
        Err(Errno::EPIPE | Errno::ECONNRESET) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A descriptor made non-blocking, with its flags put back when dropped.
struct Nonblocking<'a> {
    fd: BorrowedFd<'a>,
    flags: OFlag,
}

impl<'a> Nonblocking<'a> {
    fn set(fd: BorrowedFd<'a>) -> nix::Result<Nonblocking<'a>> {
        let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(Nonblocking { fd, flags })
    }
}

impl Drop for Nonblocking<'_> {
    fn drop(&mut self) {
        let _ = fcntl(self.fd, FcntlArg::F_SETFL(self.flags));
    }
}
