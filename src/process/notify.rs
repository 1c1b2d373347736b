//! systemd's notification protocol (`sd_notify(3)`), both ends.
//!
//! The sending end (`send`) is what a node's script calls as `sd_notify(text)`, what a
//! script node uses to say it is ready once its `zeek_init()` has returned, and what the
//! supervisor uses to talk to systemd: one datagram to `$NOTIFY_SOCKET`.
//!
//! The receiving end (`Listener`) is one datagram socket of the supervisor's, named in
//! the environment of the nodes that speak the protocol. It is abstract (`@...`), so a
//! node running as another user can reach it without file permissions; which node a
//! datagram is from is told by its sender's credentials (`SO_PASSCRED`), which the
//! kernel vouches for, never by its contents. Descriptors that arrive with a datagram
//! (`systemd-notify --ready` sends one with `BARRIER=1` and waits for it to be closed)
//! are closed at once; a datagram larger than the buffer is dropped whole.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, UnixCredentials,
    bind, recvmsg, sendto, setsockopt, socket, sockopt,
};
use nix::unistd::Pid;

/// The environment variable that names the socket.
pub const SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The variables of the protocol's watchdog.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";
/// The largest datagram read; systemd's own limit is the same order.
const BUFFER: usize = 4096;

/// What one or more datagrams of a sender said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notification {
    /// `READY=1`.
    pub ready: bool,
    /// The last `STATUS=` text.
    pub status: Option<String>,
    /// `WATCHDOG=1`.
    pub watchdog: bool,
    /// `STOPPING=1`.
    pub stopping: bool,
}

impl Notification {
    /// Reads the lines of one datagram; lines it does not know are ignored, as systemd
    /// does.
    pub fn parse(text: &str) -> Notification {
        let mut notification = Notification::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("READY", "1")) => notification.ready = true,
                Some(("WATCHDOG", "1")) => notification.watchdog = true,
                Some(("STOPPING", "1")) => notification.stopping = true,
                Some(("STATUS", status)) => notification.status = Some(status.to_string()),
                _ => {}
            }
        }
        notification
    }

    /// Folds a later datagram of the same sender in.
    fn merge(&mut self, later: Notification) {
        self.ready |= later.ready;
        self.watchdog |= later.watchdog;
        self.stopping |= later.stopping;
        if later.status.is_some() {
            self.status = later.status;
        }
    }
}

fn address(socket: &str) -> nix::Result<UnixAddr> {
    match socket.strip_prefix('@') {
        Some(name) => UnixAddr::new_abstract(name.as_bytes()),
        None => UnixAddr::new(socket),
    }
}

/// Sends `text` as one datagram to `$NOTIFY_SOCKET`. `Ok(false)` when it is not set.
pub fn send(text: &str) -> io::Result<bool> {
    match std::env::var(SOCKET_ENV) {
        Ok(socket) if !socket.is_empty() => send_to(&socket, text).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `text` as one datagram to the notification socket `socket` (`@name` or a path).
pub fn send_to(socket: &str, text: &str) -> io::Result<()> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let address = address(socket)?;
    sendto(
        fd.as_raw_fd(),
        text.as_bytes(),
        &address,
        MsgFlags::MSG_NOSIGNAL,
    )?;
    Ok(())
}

/// The supervisor's receiving socket.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    name: String,
}

impl Listener {
    /// Binds a fresh abstract socket for this process.
    pub fn bind() -> io::Result<Listener> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        setsockopt(&fd, sockopt::PassCred, &true)?;
        // A name nobody can guess before this process exists.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("rhai-supervisor/{}/{nonce:08x}/notify", std::process::id());
        bind(fd.as_raw_fd(), &UnixAddr::new_abstract(name.as_bytes())?)?;
        Ok(Listener {
            fd,
            name: format!("@{name}"),
        })
    }

    /// The value of `NOTIFY_SOCKET` for the nodes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor to wait on.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Reads up to `budget` datagrams that are waiting, and returns what each sender
    /// said, one entry per sender (so a node that floods costs one entry).
    pub fn receive(&self, budget: usize) -> Vec<(Pid, Notification)> {
        let mut said: Vec<(Pid, Notification)> = Vec::new();
        let mut buffer = [0u8; BUFFER];
        for _ in 0..budget {
            let mut space = nix::cmsg_space!(UnixCredentials, [RawFd; 16]);
            let mut iov = [io::IoSliceMut::new(&mut buffer)];
            let received = recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC,
            );
            let message = match received {
                Ok(message) => message,
                Err(Errno::EINTR) => continue,
                Err(_) => break, // EAGAIN: nothing more waits
            };
            let mut sender = None;
            for cmsg in message.cmsgs().into_iter().flatten() {
                match cmsg {
                    ControlMessageOwned::ScmCredentials(credentials) => {
                        sender = Some(Pid::from_raw(credentials.pid()));
                    }
                    ControlMessageOwned::ScmRights(fds) => {
                        for fd in fds {
                            // SAFETY: the kernel just gave us this descriptor; taking it
                            // closes it.
                            drop(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                    _ => {}
                }
            }
            let length = message.bytes;
            let truncated = message.flags.contains(MsgFlags::MSG_TRUNC) || length > BUFFER;
            let (Some(pid), false) = (sender, truncated) else {
                log::debug!(
                    "dropped a notification datagram ({length} bytes) without credentials or too large"
                );
                continue;
            };
            let text = String::from_utf8_lossy(&buffer[..length.min(BUFFER)]);
            let notification = Notification::parse(&text);
            match said.iter_mut().find(|(p, _)| *p == pid) {
                Some((_, earlier)) => earlier.merge(notification),
                None => said.push((pid, notification)),
            }
        }
        said
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_lines() {
        let n = Notification::parse("READY=1\nSTATUS=accepting connections\nMAINPID=4\n");
        assert!(n.ready && !n.watchdog);
        assert_eq!(n.status.as_deref(), Some("accepting connections"));
        assert_eq!(Notification::parse("READY=0\nX"), Notification::default());
    }

    #[test]
    fn datagrams_reach_the_listener_with_their_sender() {
        let listener = Listener::bind().unwrap();
        send_to(listener.name(), "STATUS=one").unwrap();
        send_to(listener.name(), "READY=1\nSTATUS=two").unwrap();
        send_to(listener.name(), &"x".repeat(BUFFER * 2)).unwrap();
        let said = listener.receive(16);
        assert_eq!(said.len(), 1, "{said:?}");
        let (pid, n) = &said[0];
        assert_eq!(pid.as_raw() as u32, std::process::id());
        assert!(n.ready);
        assert_eq!(n.status.as_deref(), Some("two"));
        assert!(listener.receive(16).is_empty());
    }
}
