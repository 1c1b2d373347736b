//! How `top` reaches its supervisor: a connection to the control socket, or, with
//! `--ssh HOST`, an ssh process that runs the relay there (`ctl __relay`, as `ctl
//! --ssh` and `repl --attach --ssh` do). Either way the protocol's lines go out on one
//! side and come back on the other, so the rest of `top` does not care which.
//!
//! `top` opens a few links: one that carries the events stream, one for the status
//! sample and the commands, one for the output of the node it follows. A link is read
//! by one thread, blocking; another thread ends it with its `Closer` (shutting the
//! socket down, or killing ssh), which ends the reader's wait.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use crate::control::ssh::{Remote, Target};
use crate::control::{Command, Request, Response, StreamEvent};

/// The longest line a link accepts.
const MAX_LINE: u64 = 256 * 1024 * 1024;

/// Where the supervisor is.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Its control socket, here.
    Local(PathBuf),
    /// Another host, through ssh and the relay there.
    Ssh {
        /// How the relay is run there.
        remote: Remote,
        /// The host.
        target: Target,
    },
}

impl Transport {
    /// What the header shows: the socket's path, or the host.
    pub fn describe(&self) -> String {
        match self {
            Transport::Local(path) => path.display().to_string(),
            Transport::Ssh { target, .. } => target.to_string(),
        }
    }

    /// A new link.
    pub fn open(&self) -> Result<Link, String> {
        match self {
            Transport::Local(path) => {
                let stream = UnixStream::connect(path).map_err(|e| {
                    format!(
                        "cannot connect to the supervisor at '{}': {} (is a supervisor running? its socket is chosen with --socket PATH or {})",
                        path.display(),
                        crate::process::os_error(&e),
                        crate::config::SOCKET_ENV
                    )
                })?;
                let writer = stream
                    .try_clone()
                    .map_err(|e| crate::process::os_error(&e))?;
                let closer = stream
                    .try_clone()
                    .map_err(|e| crate::process::os_error(&e))?;
                Ok(Link {
                    reader: BufReader::new(Box::new(stream)),
                    writer: Box::new(writer),
                    closer: Closer(Arc::new(Mutex::new(Some(Ending::Socket(closer))))),
                    where_: self.describe(),
                    next_id: 1,
                })
            }
            Transport::Ssh { remote, target } => {
                let mut command = remote.ssh_command(target);
                command
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null());
                let mut child = command
                    .spawn()
                    .map_err(|e| format!("cannot run ssh: {}", crate::process::os_error(&e)))?;
                let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                    return Err("cannot run ssh: no pipes".into());
                };
                Ok(Link {
                    reader: BufReader::new(Box::new(stdout)),
                    writer: Box::new(stdin),
                    closer: Closer(Arc::new(Mutex::new(Some(Ending::Child(child))))),
                    where_: self.describe(),
                    next_id: 1,
                })
            }
        }
    }
}

/// One connection to the supervisor.
pub struct Link {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Box<dyn Write + Send>,
    closer: Closer,
    where_: String,
    next_id: u64,
}

/// Ends a link from any thread; the link's reader then sees its end.
#[derive(Clone)]
pub struct Closer(Arc<Mutex<Option<Ending>>>);

enum Ending {
    Socket(UnixStream),
    Child(Child),
}

impl Closer {
    /// Ends the link (once; later calls do nothing).
    pub fn close(&self) {
        let ending = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        match ending {
            Some(Ending::Socket(stream)) => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            Some(Ending::Child(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {}
        }
    }
}

impl Link {
    /// A handle that ends this link from another thread.
    pub fn closer(&self) -> Closer {
        self.closer.clone()
    }

    /// Sends `command` and reads its response.
    pub fn call(&mut self, command: Command) -> Result<Response, String> {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request::new(id, command);
        let mut line = serde_json::to_vec(&request.to_json()).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .and_then(|()| self.writer.flush())
            .map_err(|e| self.lost(&crate::process::os_error(&e)))?;
        let line = self.line()?;
        let response: Response = serde_json::from_slice(&line).map_err(|e| {
            format!(
                "the supervisor at '{}' sent an invalid answer: {e}",
                self.where_
            )
        })?;
        if response.id != id && !response.id.is_null() {
            return Err(format!(
                "the supervisor at '{}' answered request {} instead of {id}",
                self.where_, response.id
            ));
        }
        Ok(response)
    }

    /// The next line of a stream, after its `follow` was answered.
    pub fn next_event(&mut self) -> Result<StreamEvent, String> {
        let line = self.line()?;
        StreamEvent::from_line(&line).map(|(_, event)| event)
    }

    /// One line, without its newline.
    fn line(&mut self) -> Result<Vec<u8>, String> {
        let mut line = Vec::new();
        match self
            .reader
            .by_ref()
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
        {
            Ok(_) if line.ends_with(b"\n") => {
                line.pop();
                Ok(line)
            }
            Ok(_) => Err(self.lost("the connection closed")),
            Err(e) => Err(self.lost(&crate::process::os_error(&e))),
        }
    }

    fn lost(&self, reason: &str) -> String {
        format!(
            "lost the connection to the supervisor at '{}': {reason}",
            self.where_
        )
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.closer.close();
    }
}
