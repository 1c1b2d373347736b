//! The socket file of the control socket: bound under a umask that makes it 0600 (then
//! set 0600 explicitly, in case a default ACL widened it), a stale file from a dead
//! supervisor replaced, a live one left alone, and the file removed at shutdown if it
//! is still ours.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use nix::sys::stat::{Mode, umask};

use super::ListenError;
use crate::process::os_error;

/// Binds a listening socket at `path`, mode 0600: replaces a stale socket file, refuses
/// to take over a live one.
pub(super) fn bind(path: &Path) -> Result<UnixListener, ListenError> {
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
pub(super) fn remove_if_ours(path: &Path, identity: (u64, u64)) {
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
