//! The network checks of readiness and health (`tcp`, `http`), run by the I/O thread
//! without blocking it: a nonblocking connect waited for with epoll, then for `http` a
//! `GET` written and the response's status line read (parsed by `httparse`, the small,
//! allocation-free parser hyper is built on), each bounded by the check's timeout.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::EpollFlags;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, SockaddrIn, SockaddrIn6, connect, getsockopt,
    recv, send, socket, sockopt,
};

use super::{ProcId, errno_text};

/// The most of an HTTP response that is read before its status line must be complete.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// One try of a network check.
#[derive(Clone, Debug)]
pub struct NetProbe {
    /// Names the try in its answer (`IoEvent::Probed`).
    pub id: ProcId,
    pub addr: SocketAddr,
    /// For an `http` check: what to ask for.
    pub http: Option<HttpGet>,
    pub timeout: Duration,
}

/// An HTTP GET request.
#[derive(Clone, Debug)]
pub struct HttpGet {
    /// The `Host` header.
    pub host: String,
    /// The path and query.
    pub path: String,
}

#[derive(Debug)]
enum Phase {
    Connecting,
    Writing,
    Reading,
}

/// A try under way.
#[derive(Debug)]
pub struct Running {
    pub probe: NetProbe,
    socket: OwnedFd,
    phase: Phase,
    pub deadline: Instant,
    request: Vec<u8>,
    written: usize,
    response: Vec<u8>,
}

impl Running {
    /// Starts connecting. An error is the try's result at once.
    pub fn start(probe: NetProbe, now: Instant) -> Result<Running, String> {
        let family = match probe.addr {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let socket = socket(
            family,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| format!("cannot make a socket: {}", errno_text(e)))?;
        let result = match probe.addr {
            SocketAddr::V4(a) => connect(socket.as_raw_fd(), &SockaddrIn::from(a)),
            SocketAddr::V6(a) => connect(socket.as_raw_fd(), &SockaddrIn6::from(a)),
        };
        match result {
            Ok(()) | Err(Errno::EINPROGRESS) => {}
            Err(e) => return Err(connect_error(e, &probe)),
        }
        let request = match &probe.http {
            Some(get) => format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: rhai-supervisor\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                get.path, get.host
            )
            .into_bytes(),
            None => Vec::new(),
        };
        Ok(Running {
            deadline: now + probe.timeout,
            probe,
            socket,
            phase: Phase::Connecting,
            request,
            written: 0,
            response: Vec::new(),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// What to wait for next.
    pub fn interest(&self) -> EpollFlags {
        match self.phase {
            Phase::Connecting | Phase::Writing => EpollFlags::EPOLLOUT,
            Phase::Reading => EpollFlags::EPOLLIN,
        }
    }

    /// Goes on after the socket became ready; `Some` with the result when the try is
    /// over.
    pub fn advance(&mut self) -> Option<Result<(), String>> {
        loop {
            match self.phase {
                Phase::Connecting => {
                    match getsockopt(&self.socket, sockopt::SocketError) {
                        Ok(0) => {}
                        Ok(code) => {
                            return Some(Err(connect_error(Errno::from_raw(code), &self.probe)));
                        }
                        Err(e) => return Some(Err(connect_error(e, &self.probe))),
                    }
                    if self.probe.http.is_none() {
                        return Some(Ok(()));
                    }
                    self.phase = Phase::Writing;
                }
                Phase::Writing => {
                    while self.written < self.request.len() {
                        match send(
                            self.socket.as_raw_fd(),
                            &self.request[self.written..],
                            MsgFlags::MSG_NOSIGNAL,
                        ) {
                            Ok(n) => self.written += n,
                            Err(Errno::EINTR) => {}
                            Err(Errno::EAGAIN) => return None,
                            Err(e) => {
                                return Some(Err(format!(
                                    "cannot send the request: {}",
                                    errno_text(e)
                                )));
                            }
                        }
                    }
                    self.phase = Phase::Reading;
                }
                Phase::Reading => {
                    let mut buffer = [0u8; 4096];
                    match recv(self.socket.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
                        Ok(0) => {
                            return Some(self.head().unwrap_or_else(|| {
                                Err("the connection closed before a response".into())
                            }));
                        }
                        Ok(n) => {
                            self.response.extend_from_slice(&buffer[..n]);
                            if let Some(result) = self.head() {
                                return Some(result);
                            }
                            if self.response.len() > MAX_RESPONSE_HEAD {
                                return Some(Err("the response's head is too long".into()));
                            }
                        }
                        Err(Errno::EINTR) => {}
                        Err(Errno::EAGAIN) => return None,
                        Err(e) => {
                            return Some(Err(format!(
                                "cannot read the response: {}",
                                errno_text(e)
                            )));
                        }
                    }
                }
            }
        }
    }

    /// The result, once the status line and headers have arrived (or cannot be HTTP):
    /// `Ok` for a 2xx status.
    fn head(&self) -> Option<Result<(), String>> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&self.response) {
            Ok(httparse::Status::Complete(_)) => Some(match response.code {
                Some(code) if (200..300).contains(&code) => Ok(()),
                Some(code) => Err(
                    format!("HTTP {code} {}", response.reason.unwrap_or_default())
                        .trim_end()
                        .to_string(),
                ),
                None => Err("the response has no status".into()),
            }),
            Ok(httparse::Status::Partial) => None,
            Err(e) => Some(Err(format!("the response is not HTTP: {e}"))),
        }
    }

    /// The result when the deadline passed first.
    pub fn timed_out(&self) -> String {
        format!(
            "no answer from {} within {:?}",
            self.probe.addr, self.probe.timeout
        )
    }
}

fn connect_error(errno: Errno, probe: &NetProbe) -> String {
    format!("cannot connect to {}: {}", probe.addr, errno_text(errno))
}
