//! Reaching the supervisor of another host through the OpenSSH client, for `ctl --ssh`
//! and `repl --attach --ssh`. No supervisor listens on the network: ssh authenticates
//! and encrypts, and on the other host `rhai-supervisor ctl __relay` (`relay`) joins
//! ssh's stdin and stdout to the control socket there, finding it as a local `ctl`
//! would. Requests and answers cross as the protocol's lines, unchanged, and an answer
//! is checked as a local client checks it (one JSON response, with our id).
//!
//! Nothing goes through a local shell: ssh is started with its arguments apart
//! (`std::process::Command`), after the host string is checked (`Target::parse`), so
//! an option (`-oProxyCommand=...`) or shell syntax is refused before anything runs.
//! The other host's shell sees one command line: the remote program's words, `ctl`,
//! `--socket PATH` when one was given, `__relay`, each single-quoted (`quote`). What
//! the user sends (JSON, Rhai code) travels as protocol lines on stdin, never on that
//! line, so no login shell can mangle it.
//!
//! A `Session` is one ssh process; every wait in it has a deadline, and a session
//! dropped early kills its ssh, so a hung host costs its timeout and nothing more.

use std::io::{self, Read, Write};
use std::net::Ipv6Addr;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::client::{ClientError, Connection};
use super::{Command, Request, Response};
use crate::process::os_error;

/// The exit status ssh gives for its own failures (connection, authentication).
const SSH_FAILED: i32 = 255;
/// The exit status of `ctl` (and of the relay) when no supervisor answered.
pub const NO_SUPERVISOR: i32 = 3;
/// The longest answer accepted, as for a local client.
const MAX_ANSWER: usize = 256 * 1024 * 1024;
/// How much of ssh's stderr is kept to explain a failure.
const STDERR_KEPT: usize = 8 * 1024;
/// How long `ctl --ssh` waits for each host, and the REPL for the first answer from
/// the one it attaches to, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a session that has its answer may take to end by itself before its ssh
/// is killed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A host to reach: `[USER@]HOST[:PORT]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    user: Option<String>,
    host: String,
    port: Option<u16>,
    text: String,
}

/// A host string that is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid ssh host '{text}': {why}")]
pub struct BadTarget {
    /// The string as given (control characters escaped).
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

impl Target {
    /// Checks `[USER@]HOST[:PORT]`: HOST a host name (letters, digits, `.`, `-`, `_`, not
    /// starting with `-` or `.`), an IPv4 address, or an IPv6 address (in brackets when a
    /// port follows); USER of the same characters; PORT from 1 to 65535. Anything else is
    /// refused, so the string can never be an option or shell syntax to ssh.
    pub fn parse(text: &str) -> Result<Target, BadTarget> {
        let bad = |why: &str| BadTarget {
            text: text.escape_debug().to_string(),
            why: why.to_string(),
        };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if text.len() > 300 {
            return Err(bad("it is longer than 300 bytes"));
        }
        let (user, rest) = match text.split_once('@') {
            Some((user, rest)) => (Some(user), rest),
            None => (None, text),
        };
        if let Some(user) = user {
            if user.is_empty() {
                return Err(bad("the user name before '@' is empty"));
            }
            check_word(user, "user name").map_err(|why| bad(&why))?;
        }
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let Some((inside, after)) = bracketed.split_once(']') else {
                return Err(bad("'[' without its ']'"));
            };
            if inside.parse::<Ipv6Addr>().is_err() {
                return Err(bad("brackets hold an IPv6 address"));
            }
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(port) => Some(port),
                    None => return Err(bad("only ':PORT' may follow ']'")),
                },
            };
            (inside, port)
        } else if rest.matches(':').count() > 1 {
            // A bare IPv6 address: with no brackets, it takes no port.
            if rest.parse::<Ipv6Addr>().is_err() {
                return Err(bad(
                    "it is not an IPv6 address (give a port as [ADDRESS]:PORT)",
                ));
            }
            (rest, None)
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        if host.parse::<Ipv6Addr>().is_err() {
            check_word(host, "host").map_err(|why| bad(&why))?;
            if host.starts_with('.') {
                return Err(bad("a host must not start with '.'"));
            }
        }
        let port = match port {
            None => None,
            Some(digits) => match digits.parse::<u16>() {
                Ok(port) if port > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Some(port),
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        Ok(Target {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
            text: text.to_string(),
        })
    }

    /// The host (a name or an address), without user or port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The string as given, which names the host in output.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A user or host name: letters, digits, `.`, `-`, `_`, not starting with `-`.
fn check_word(word: &str, what: &str) -> Result<(), String> {
    if word.starts_with('-') {
        return Err(format!(
            "a {what} must not start with '-' (ssh would take it for an option)"
        ));
    }
    match word
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        Some(c) => Err(format!(
            "{} is not allowed in a {what} (only letters, digits, '.', '-' and '_')",
            shown(c)
        )),
        None => Ok(()),
    }
}

/// `' '`, `';'`, `'\n'`: a character as an error message shows it.
fn shown(c: char) -> String {
    match c {
        ' ' => "a space".to_string(),
        c => format!("'{}'", c.escape_debug()),
    }
}

/// `word` quoted for a POSIX shell (sh, bash, dash, zsh, ksh): in single quotes, inside
/// which nothing is special, with each `'` written as `'\''`.
pub fn quote(word: &str) -> String {
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('\'');
    for c in word.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// How the other end is run: the remote program and the socket to give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    program: Vec<String>,
    socket: Option<String>,
}

/// A remote command or socket that cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadRemote {
    /// `--remote-command ''`.
    #[error("the remote command is empty")]
    Empty,
    /// A newline (or another control character) in the remote command.
    #[error("the remote command must not contain control characters: {0:?}")]
    Control(String),
    /// A socket path that cannot be written on a command line.
    #[error("the socket path for another host must be UTF-8 without control characters: {0:?}")]
    Socket(String),
}

impl Remote {
    /// `program`: the remote program's words, separated by spaces (no shell syntax:
    /// each word reaches the other host as it is). `socket`: the control socket there;
    /// `None` lets the other host choose as its `ctl` would (`RHAI_SUPERVISOR_SOCKET` in
    /// its environment, else `rhai-supervisor.sock` in the login directory).
    pub fn new(program: &str, socket: Option<&Path>) -> Result<Remote, BadRemote> {
        if program.chars().any(char::is_control) {
            return Err(BadRemote::Control(program.to_string()));
        }
        let program: Vec<String> = program.split_whitespace().map(str::to_string).collect();
        if program.is_empty() {
            return Err(BadRemote::Empty);
        }
        let socket = match socket.filter(|p| !p.as_os_str().is_empty()) {
            None => None,
            Some(path) => match path.to_str() {
                Some(text) if !text.chars().any(char::is_control) => Some(text.to_string()),
                _ => return Err(BadRemote::Socket(path.display().to_string())),
            },
        };
        Ok(Remote { program, socket })
    }

    /// The command line the other host's shell runs.
    pub fn remote_line(&self) -> String {
        let mut words = self.program.clone();
        words.push("ctl".into());
        if let Some(socket) = &self.socket {
            words.push("--socket".into());
            words.push(socket.clone());
        }
        words.push("__relay".into());
        let quoted: Vec<String> = words.iter().map(|w| quote(w)).collect();
        quoted.join(" ")
    }

    /// The ssh command that reaches `target` and runs the relay there: no terminal, no
    /// escape character, no password prompt (a prompt would wait for nobody).
    pub fn ssh_command(&self, target: &Target) -> std::process::Command {
        let mut command = std::process::Command::new("ssh");
        command.args(["-T", "-e", "none", "-o", "BatchMode=yes"]);
        if let Some(port) = target.port {
            command.arg("-p").arg(port.to_string());
        }
        if let Some(user) = &target.user {
            command.arg("-l").arg(user);
        }
        command.arg("--").arg(&target.host).arg(self.remote_line());
        command
    }
}

/// Why a host gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    /// ssh itself could not be started.
    #[error("cannot run ssh: {0}")]
    Spawn(String),
    /// ssh failed: no connection, refused authentication, unknown host key.
    #[error("{0}")]
    Unreachable(String),
    /// The relay ran there but no supervisor answered on the socket.
    #[error("{0}")]
    NoSupervisor(String),
    /// Nothing within the timeout.
    #[error("no answer within {0}")]
    Timeout(String),
    /// Something came back that is not the protocol's answer.
    #[error("the answer is not a control response: {0}")]
    Invalid(String),
}

/// `10 s`, `0.5 s`.
pub fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

/// One ssh process running the relay on another host.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    /// What came on stdout and is not taken as an answer yet.
    received: Vec<u8>,
    /// The end of what came on stderr.
    errors: Vec<u8>,
    /// The wait allowed for an answer, for messages.
    timeout: Duration,
    /// Answers taken so far.
    answered: u64,
}

impl Session {
    /// Starts ssh to `target`; `timeout` is what its callers allow an answer (for
    /// messages: each exchange has its own deadline).
    pub fn open(remote: &Remote, target: &Target, timeout: Duration) -> Result<Session, SshError> {
        let mut command = remote.ssh_command(target);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| SshError::Spawn(os_error(&e)))?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let session = Session {
            child,
            stdin,
            stdout,
            stderr,
            received: Vec::new(),
            errors: Vec::new(),
            timeout,
            answered: 0,
        };
        // Each wait is poll with a deadline; a read or write must never block beyond it.
        let nonblocking = [
            session.stdin.as_ref().map(|s| set_nonblocking(s.as_fd())),
            session.stdout.as_ref().map(|s| set_nonblocking(s.as_fd())),
            session.stderr.as_ref().map(|s| set_nonblocking(s.as_fd())),
        ];
        for outcome in nonblocking.into_iter().flatten() {
            outcome.map_err(|e| SshError::Spawn(crate::process::errno_text(e)))?;
        }
        Ok(session)
    }

    /// How many answers this session has delivered.
    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// Sends `request` and waits, until `deadline`, for its answer.
    pub fn exchange(&mut self, request: &Request, deadline: Instant) -> Result<Response, SshError> {
        let mut line = serde_json::to_vec(&request.to_json())
            .map_err(|e| SshError::Invalid(format!("cannot encode the request: {e}")))?;
        line.push(b'\n');
        let mut unsent: &[u8] = &line;
        loop {
            if let Some(end) = self.received.iter().position(|&b| b == b'\n') {
                let answer: Vec<u8> = self.received.drain(..=end).collect();
                self.answered += 1;
                return check_answer(&answer, request);
            }
            if self.received.len() > MAX_ANSWER {
                return Err(SshError::Invalid(format!(
                    "an answer longer than {MAX_ANSWER} bytes"
                )));
            }
            if self.stdout.is_none() {
                return Err(self.ended(deadline));
            }
            let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
                return Err(SshError::Timeout(seconds(self.timeout)));
            };
            self.pump(&mut unsent, wait)?;
        }
    }

    /// Ends the session: ssh's stdin is closed, so the relay there ends once the
    /// supervisor has answered what it was sent; ssh is given a moment to leave, and
    /// killed if it does not, by `deadline` at the latest.
    pub fn close(mut self, deadline: Instant) {
        self.stdin = None;
        let deadline = deadline.min(Instant::now() + CLOSE_GRACE);
        while self.stdout.is_some() || self.stderr.is_some() {
            let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            self.received.clear();
            if self.pump(&mut &[][..], wait).is_err() {
                break;
            }
        }
        // Drop reaps ssh, killing it first if it is still there.
    }

    /// One wait of at most `wait`: writes what it can of `unsent`, reads what came.
    fn pump(&mut self, unsent: &mut &[u8], wait: Duration) -> Result<(), SshError> {
        let mut fds = Vec::with_capacity(3);
        let mut which = Vec::with_capacity(3);
        if let (Some(stdin), false) = (&self.stdin, unsent.is_empty()) {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLOUT));
            which.push(Pipe::Stdin);
        }
        if let Some(stdout) = &self.stdout {
            fds.push(PollFd::new(stdout.as_fd(), PollFlags::POLLIN));
            which.push(Pipe::Stdout);
        }
        if let Some(stderr) = &self.stderr {
            fds.push(PollFd::new(stderr.as_fd(), PollFlags::POLLIN));
            which.push(Pipe::Stderr);
        }
        if fds.is_empty() {
            return Ok(());
        }
        let millis = wait.as_millis().saturating_add(1).min(i32::MAX as u128) as u64;
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                return Err(SshError::Unreachable(format!(
                    "cannot wait for ssh: {}",
                    crate::process::errno_text(e)
                )));
            }
        }
        let ready: Vec<Pipe> = fds
            .iter()
            .zip(&which)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, &w)| w)
            .collect();
        drop(fds);
        for pipe in ready {
            match pipe {
                Pipe::Stdin => self.write_some(unsent),
                Pipe::Stdout => {
                    if !read_into(&mut self.stdout, &mut self.received) {
                        self.stdout = None;
                    }
                }
                Pipe::Stderr => {
                    if !read_into(&mut self.stderr, &mut self.errors) {
                        self.stderr = None;
                    }
                    let excess = self.errors.len().saturating_sub(STDERR_KEPT);
                    self.errors.drain(..excess);
                }
            }
        }
        Ok(())
    }

    fn write_some(&mut self, unsent: &mut &[u8]) {
        let Some(stdin) = self.stdin.as_mut() else {
            return;
        };
        match stdin.write(unsent) {
            Ok(n) => *unsent = &unsent[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            // ssh has gone (its stdout will end too): nothing more can be sent.
            Err(_) => {
                self.stdin = None;
                *unsent = &[];
            }
        }
    }

    /// The session ended without (another) answer: why, from ssh's exit status and the
    /// last thing it or the relay said on stderr.
    fn ended(&mut self, deadline: Instant) -> SshError {
        if !self.received.is_empty() {
            let cut = String::from_utf8_lossy(&self.received).to_string();
            return SshError::Invalid(format!("an answer cut off: {}", excerpt(&cut)));
        }
        // Its stderr may still hold the reason; then its exit status.
        while self.stderr.is_some() {
            let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            if self.pump(&mut &[][..], wait).is_err() {
                break;
            }
        }
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.code(),
                Ok(None) if Instant::now() < deadline => {
                    // ssh closed its output and is about to exit; this wait is short.
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => return SshError::Timeout(seconds(self.timeout)),
                Err(e) => {
                    return SshError::Unreachable(format!(
                        "cannot learn how ssh ended: {}",
                        os_error(&e)
                    ));
                }
            }
        };
        let said = last_line(&self.errors);
        match status {
            Some(SSH_FAILED) => {
                SshError::Unreachable(said.unwrap_or_else(|| "ssh failed (exit status 255)".into()))
            }
            Some(NO_SUPERVISOR) => SshError::NoSupervisor(
                said.unwrap_or_else(|| "no supervisor answered there".into()),
            ),
            Some(0) if self.answered > 0 => {
                SshError::NoSupervisor("the supervisor there closed the connection".into())
            }
            code => {
                let status = code.map_or("a signal".to_string(), |c| format!("exit status {c}"));
                let said = said.map_or(String::new(), |s| format!(": {s}"));
                // 2 is a usage error: a program there without `ctl __relay`.
                let hint = if code == Some(2) {
                    " (is the same version of rhai-supervisor installed there?)"
                } else {
                    ""
                };
                SshError::Unreachable(format!(
                    "the relay on the other host ended with {status}{said}{hint}"
                ))
            }
        }
    }
}

/// One of ssh's standard streams.
#[derive(Clone, Copy)]
enum Pipe {
    Stdin,
    Stdout,
    Stderr,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// Reads what is there into `buffer`; false at the end of the stream (or an error).
fn read_into<R: Read>(stream: &mut Option<R>, buffer: &mut Vec<u8>) -> bool {
    let Some(stream) = stream.as_mut() else {
        return false;
    };
    let mut chunk = [0u8; 16 * 1024];
    // A bounded helping per call, so a flood is checked against MAX_ANSWER as it grows.
    for _ in 0..64 {
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    true
}

/// The line of `bytes` that says what went wrong: the last error of ours (or of clap,
/// whose usage lines follow it), else the last line with text in it (ssh's, a shell's).
fn last_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("rhai-supervisor: error: ") || l.starts_with("error: "))
        .or(lines.last())?;
    let line = line
        .strip_prefix("rhai-supervisor: error: ")
        .unwrap_or(line);
    Some(excerpt(line))
}

/// At most 300 characters of `text`, control characters escaped: what the other side
/// sent is shown, not obeyed (no terminal escapes reach ours).
fn excerpt(text: &str) -> String {
    let mut shown: String = text.trim_end().chars().take(300).collect();
    if shown.len() < text.trim_end().len() {
        shown.push_str("...");
    }
    shown
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_debug().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// One line that must be the answer to `request`.
fn check_answer(line: &[u8], request: &Request) -> Result<Response, SshError> {
    let text = String::from_utf8_lossy(line);
    let response: Response = serde_json::from_slice(line)
        .map_err(|_| SshError::Invalid(format!("'{}'", excerpt(&text))))?;
    if response.id.is_null() && !response.ok && !request.id.is_null() {
        // Refused as a whole (too many clients, not allowed): the reason is the answer.
        return Ok(response);
    }
    if response.id != request.id {
        return Err(SshError::Invalid(format!(
            "it answers request {} instead of {}",
            response.id, request.id
        )));
    }
    if response.ok == response.error.is_some() {
        return Err(SshError::Invalid(format!("'{}'", excerpt(&text))));
    }
    Ok(response)
}

/// Sends one command to the supervisor of `target` and returns its answer; waits no
/// longer than `timeout`, ssh's connection and login included.
pub fn call(
    remote: &Remote,
    target: &Target,
    command: Command,
    timeout: Duration,
) -> Result<Response, SshError> {
    let deadline = Instant::now() + timeout;
    let mut session = Session::open(remote, target, timeout)?;
    let response = session.exchange(&Request::new(1, command), deadline)?;
    session.close(deadline);
    Ok(response)
}

/// A supervisor on another host, for the REPL: one ssh session kept open, opened
/// again when the supervisor closed the idle connection.
pub struct SshClient {
    remote: Remote,
    target: Target,
    session: Option<Session>,
    timeout: Duration,
    next_id: u64,
}

impl SshClient {
    /// Reaches the supervisor of `target` and checks that it answers (within
    /// `DEFAULT_TIMEOUT`); later answers may take `timeout`.
    pub fn connect(
        remote: Remote,
        target: Target,
        timeout: Duration,
    ) -> Result<SshClient, SshError> {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let mut session = Session::open(&remote, &target, DEFAULT_TIMEOUT)?;
        let response = session.exchange(&Request::new(0, Command::status(None)), deadline)?;
        if !response.ok {
            // Refused as a whole (not allowed, too many clients).
            return Err(SshError::NoSupervisor(response.error.unwrap_or_default()));
        }
        Ok(SshClient {
            remote,
            target,
            session: Some(session),
            timeout,
            next_id: 1,
        })
    }

    fn error(&self, error: SshError) -> ClientError {
        let path = self.target.to_string();
        match error {
            SshError::Spawn(reason) | SshError::Unreachable(reason) => {
                ClientError::Unreachable { path, reason }
            }
            SshError::NoSupervisor(reason) => ClientError::Connect { path, reason },
            SshError::Timeout(_) => ClientError::Timeout {
                path,
                seconds: self.timeout.as_secs(),
            },
            SshError::Invalid(reason) => ClientError::Invalid { path, reason },
        }
    }
}

impl Connection for SshClient {
    fn call(&mut self, command: Command) -> Result<Response, ClientError> {
        let request = Request::new(self.next_id, command);
        self.next_id += 1;
        let deadline = Instant::now() + self.timeout;
        for attempt in 0..2 {
            let session = match &mut self.session {
                Some(session) => session,
                None => {
                    let opened = Session::open(&self.remote, &self.target, self.timeout)
                        .map_err(|e| self.error(e))?;
                    self.session.insert(opened)
                }
            };
            let had_answered = session.answered() > 0;
            match session.exchange(&request, deadline) {
                Ok(response) => return Ok(response),
                Err(error) => {
                    self.session = None;
                    // A session that served before and ended without answering was
                    // closed while idle: the request was not read there. Once more.
                    let idle_end =
                        matches!(error, SshError::NoSupervisor(_) | SshError::Unreachable(_));
                    if !(attempt == 0 && had_answered && idle_end) {
                        return Err(self.error(error));
                    }
                }
            }
        }
        Err(self.error(SshError::NoSupervisor(
            "no supervisor answered there".into(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        Target::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn good_hosts_are_taken_apart() {
        let t = Target::parse("zeek@sensor-1.example.org:2222").unwrap();
        assert_eq!(
            (t.user.as_deref(), t.host(), t.port),
            (Some("zeek"), "sensor-1.example.org", Some(2222))
        );
        let t = Target::parse("127.0.0.2").unwrap();
        assert_eq!(
            (t.user.as_deref(), t.host(), t.port),
            (None, "127.0.0.2", None)
        );
        let t = Target::parse("[fd00::2]:22").unwrap();
        assert_eq!((t.host(), t.port), ("fd00::2", Some(22)));
        let t = Target::parse("root@fd00::2").unwrap();
        assert_eq!(
            (t.user.as_deref(), t.host(), t.port),
            (Some("root"), "fd00::2", None)
        );
        assert_eq!(Target::parse("a_b").unwrap().to_string(), "a_b");
    }

    #[test]
    fn options_and_shell_syntax_are_refused() {
        assert!(refused("-oProxyCommand=touch /tmp/x").contains("must not start with '-'"));
        assert!(refused("-p").contains("must not start with '-'"));
        assert!(refused("-l@host").contains("user name must not start with '-'"));
        assert!(refused("host;reboot").contains("';' is not allowed"));
        assert!(refused("a b").contains("a space is not allowed"));
        assert!(refused("h`id`").contains("'`' is not allowed"));
        assert!(refused("$(id)").contains("'$' is not allowed"));
        assert!(refused("'h'").contains("'\\'' is not allowed"));
        assert!(refused("\"h\"").contains("is not allowed"));
        assert!(refused("h\nx").contains("'\\n' is not allowed"));
        assert!(refused("h|x").contains("is not allowed"));
        assert!(
            refused("ssh://h").contains("is not allowed") || refused("ssh://h").contains("port")
        );
        assert!(refused("").contains("empty"));
        assert!(refused("@h").contains("user name before '@' is empty"));
        assert!(refused("u@").contains("the host is empty"));
        assert!(refused("a@b@c").contains("'@' is not allowed"));
        assert!(refused(".h").contains("must not start with '.'"));
        assert!(refused("h:0").contains("port must be a number"));
        assert!(refused("h:65536").contains("port must be a number"));
        assert!(refused("h:+22").contains("port must be a number"));
        assert!(refused("h:").contains("port must be a number"));
        assert!(refused("[h]:22").contains("IPv6"));
        assert!(refused("[::1]x").contains("only ':PORT'"));
        assert!(refused("a:b:c").contains("IPv6"));
        assert!(refused(&"h".repeat(400)).contains("longer than 300"));
    }

    #[test]
    fn quoting_leaves_nothing_to_the_shell() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(
            quote("$(id) `id` ; | & > \\ \" *"),
            "'$(id) `id` ; | & > \\ \" *'"
        );
    }

    #[test]
    fn the_remote_line_is_quoted_words() {
        let remote =
            Remote::new("sudo -n /opt/rs bin", Some(Path::new("/run/x y/'s.sock"))).unwrap();
        assert_eq!(
            remote.remote_line(),
            "'sudo' '-n' '/opt/rs' 'bin' 'ctl' '--socket' '/run/x y/'\\''s.sock' '__relay'"
        );
        let remote = Remote::new("rhai-supervisor", None).unwrap();
        assert_eq!(remote.remote_line(), "'rhai-supervisor' 'ctl' '__relay'");
        assert_eq!(Remote::new("  ", None).unwrap_err(), BadRemote::Empty);
        assert!(matches!(
            Remote::new("a\nb", None),
            Err(BadRemote::Control(_))
        ));
        assert!(matches!(
            Remote::new("a", Some(Path::new("s\n"))),
            Err(BadRemote::Socket(_))
        ));
    }

    #[test]
    fn the_ssh_command_has_the_host_after_its_options() {
        let remote = Remote::new("rs", None).unwrap();
        let command = remote.ssh_command(&Target::parse("zeek@h:2200").unwrap());
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-T",
                "-e",
                "none",
                "-o",
                "BatchMode=yes",
                "-p",
                "2200",
                "-l",
                "zeek",
                "--",
                "h",
                "'rs' 'ctl' '__relay'"
            ]
        );
    }

    #[test]
    fn answers_are_checked() {
        let request = Request::new(7, Command::status(None));
        assert!(check_answer(b"{\"id\":7,\"ok\":true,\"result\":{}}\n", &request).is_ok());
        let wrong_id =
            check_answer(b"{\"id\":8,\"ok\":true,\"result\":{}}\n", &request).unwrap_err();
        assert!(
            wrong_id
                .to_string()
                .contains("answers request 8 instead of 7"),
            "{wrong_id}"
        );
        let junk = check_answer(b"Welcome to \x1b[31mhost\n", &request).unwrap_err();
        assert_eq!(
            junk.to_string(),
            "the answer is not a control response: 'Welcome to \\u{1b}[31mhost'"
        );
        assert!(check_answer(b"{\"id\":7,\"ok\":true,\"error\":\"x\"}\n", &request).is_err());
        assert!(check_answer(b"[1]\n", &request).is_err());
        let refused = check_answer(
            b"{\"id\":null,\"ok\":false,\"error\":\"too many clients\"}\n",
            &request,
        );
        assert_eq!(refused.unwrap().error.as_deref(), Some("too many clients"));
    }

    #[test]
    fn last_lines_explain() {
        assert_eq!(
            last_line(b"Warning: x\nssh: connect to host h port 22: Connection refused\n\n")
                .as_deref(),
            Some("ssh: connect to host h port 22: Connection refused")
        );
        assert_eq!(
            last_line(b"rhai-supervisor: error: cannot connect\n").as_deref(),
            Some("cannot connect")
        );
        assert_eq!(last_line(b"  \n"), None);
        assert_eq!(
            last_line(b"error: unrecognized subcommand '__relay'\n\nUsage: x\n\nFor more information, try '--help'.\n").as_deref(),
            Some("error: unrecognized subcommand '__relay'")
        );
        assert_eq!(seconds(Duration::from_millis(500)), "0.5 s");
        assert_eq!(seconds(Duration::from_secs(10)), "10 s");
    }
}
