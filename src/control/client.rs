//! The client end of the control socket, for `ctl`, the REPL's `--attach`, and any Rust
//! program that drives a supervisor; and `Connection`, what the REPL needs of either
//! this client or one through ssh (`control::ssh`).
//!
//! A `Client` keeps one connection and sends one request at a time, waiting for its
//! answer. The supervisor closes connections that stay idle (10 s before the first
//! request, 10 min after an answer), so a client may sit idle as long as it likes: when
//! a request finds its connection closed before any answer came, the client connects
//! again and sends it once more. That is safe: the supervisor answers every request it
//! has read, so a connection that ends without an answer had not delivered it.
//!
//! `follow` hands the connection over to a `Stream` of the lines that come after the
//! response; the client connects again for its next request.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{Command, Request, Response, StreamEvent, Topic};
use crate::process::os_error;

/// How long a client waits for an answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest answer a client accepts.
const MAX_RESPONSE: u64 = 256 * 1024 * 1024;

/// A request that got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the path, or we may not connect.
    #[error("cannot connect to the supervisor at '{path}': {reason}")]
    Connect {
        /// The socket's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection broke, or the supervisor closed it without answering.
    #[error("lost the connection to the supervisor at '{path}': {reason}")]
    Lost {
        /// The socket's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("no answer from the supervisor at '{path}' within {seconds} s")]
    Timeout {
        /// The socket's path.
        path: String,
        /// How long it waited.
        seconds: u64,
    },
    /// The answer is not a response to this request.
    #[error("the supervisor at '{path}' sent an invalid answer: {reason}")]
    Invalid {
        /// The socket's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The host of a supervisor reached through ssh cannot be reached (the connection
    /// or the login failed); the supervisor itself may be fine.
    #[error("cannot reach the supervisor at '{path}': {reason}")]
    Unreachable {
        /// The host, as given.
        path: String,
        /// What ssh said.
        reason: String,
    },
}

/// A way to ask a supervisor: over its socket (`Client`) or through ssh on another
/// host (`ssh::SshClient`).
pub trait Connection: Send {
    /// Sends `command` and returns the answer, which may say `ok: false`.
    fn call(&mut self, command: Command) -> Result<Response, ClientError>;

    /// Runs Rhai code in the supervisor, as a REPL line would.
    fn eval(&mut self, code: &str) -> Result<Evaluation, ClientError> {
        self.call(Command::Eval(code.to_string()))
            .map(Evaluation::from_response)
    }
}

impl Connection for Client {
    fn call(&mut self, command: Command) -> Result<Response, ClientError> {
        Client::call(self, command)
    }
}

/// A response with its result not parsed.
#[derive(serde::Deserialize)]
struct Lazy<'a> {
    id: Value,
    ok: bool,
    #[serde(borrow, default)]
    result: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    output: Option<String>,
}

impl Evaluation {
    /// What an answer to `eval` says.
    pub fn from_response(response: Response) -> Evaluation {
        let output = response.output.clone().unwrap_or_default();
        let value = if response.ok {
            match response.result {
                Some(Value::String(text)) => Ok(text),
                Some(other) => Ok(other.to_string()),
                None => Ok("()".into()),
            }
        } else {
            Err(response.error.unwrap_or_default())
        };
        Evaluation { output, value }
    }
}

/// A connection to a supervisor's control socket.
pub struct Client {
    path: PathBuf,
    connection: Option<BufReader<UnixStream>>,
    timeout: Option<Duration>,
    next_id: u64,
}

/// What an `eval` gave: the text the code printed, and its value (rendered as the REPL
/// shows values) or its error (with line and column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// What the code printed.
    pub output: String,
    /// Its value as the REPL shows it, or its error.
    pub value: Result<String, String>,
}

impl Client {
    /// Connects to the supervisor listening at `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let mut client = Client {
            path: path.as_ref().to_path_buf(),
            connection: None,
            timeout: Some(DEFAULT_TIMEOUT),
            next_id: 1,
        };
        client.reconnect()?;
        Ok(client)
    }

    /// How long to wait for each answer; `None` waits as long as it takes.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
        if let Some(connection) = &self.connection {
            let _ = connection.get_ref().set_read_timeout(timeout);
        }
    }

    /// The socket this client talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `command` with a fresh numeric id and returns the answer, which may say
    /// `ok: false` (the supervisor refused: unknown node, bad config, script error).
    pub fn call(&mut self, command: Command) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.request(&Request::new(id, command))
    }

    /// Sends `request` and returns its answer.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.request_with(request, false)
    }

    /// `call`, with the answer's result left as JSON text (in `Response::encoded`, which
    /// `to_line` writes back as it came) instead of parsed: for big answers that are
    /// printed as they are, or read into records directly.
    pub(crate) fn call_encoded(&mut self, command: Command) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.request_with(&Request::new(id, command), true)
    }

    fn request_with(&mut self, request: &Request, encoded: bool) -> Result<Response, ClientError> {
        let mut line = serde_json::to_vec(&request.to_json()).map_err(|e| self.invalid(e))?;
        line.push(b'\n');
        let answer = match self.exchange(&line) {
            Err(Attempt::Unanswered(_)) => {
                // The supervisor closed the connection (idle, or restarted): a new one.
                self.reconnect()?;
                self.exchange(&line)
            }
            other => other,
        };
        let answer = answer.map_err(|attempt| match attempt {
            Attempt::Unanswered(reason) | Attempt::Broken(reason) => {
                self.connection = None;
                ClientError::Lost {
                    path: self.display(),
                    reason,
                }
            }
            Attempt::TimedOut => {
                self.connection = None;
                ClientError::Timeout {
                    path: self.display(),
                    seconds: self.timeout.map_or(0, |t| t.as_secs()),
                }
            }
        })?;
        let response = if encoded {
            let lazy: Lazy = serde_json::from_slice(&answer).map_err(|e| self.invalid(e))?;
            Response {
                id: lazy.id,
                ok: lazy.ok,
                result: None,
                error: lazy.error,
                output: lazy.output,
                encoded: lazy.result.map(|raw| raw.get().to_string()),
            }
        } else {
            serde_json::from_slice(&answer).map_err(|e| self.invalid(e))?
        };
        if response.id.is_null() && !response.ok && !request.id.is_null() {
            // Refused as a whole (too many clients, not allowed): the reason is the answer.
            self.connection = None;
            return Ok(response);
        }
        if response.id != request.id {
            self.connection = None;
            return Err(self.invalid(format!(
                "it answers request {} instead of {}",
                response.id, request.id
            )));
        }
        Ok(response)
    }

    /// Follows a stream (`follow`): returns the response (for `output`, the node's kept
    /// tail) and, when it says `ok`, the stream that follows it on this connection.
    /// Reading the stream waits as long as it takes for the next line.
    pub fn follow(&mut self, topic: Topic) -> Result<(Response, Option<Stream>), ClientError> {
        let response = self.call(Command::Follow(topic))?;
        if !response.ok {
            return Ok((response, None));
        }
        let Some(reader) = self.connection.take() else {
            return Err(ClientError::Lost {
                path: self.display(),
                reason: "the connection closed after the answer".into(),
            });
        };
        let _ = reader.get_ref().set_read_timeout(None);
        let stream = Stream {
            path: self.path.clone(),
            id: response.id.clone(),
            reader,
            over: false,
        };
        Ok((response, Some(stream)))
    }

    /// Runs Rhai code in the supervisor, as a REPL line would.
    pub fn eval(&mut self, code: &str) -> Result<Evaluation, ClientError> {
        self.call(Command::Eval(code.to_string()))
            .map(Evaluation::from_response)
    }

    fn reconnect(&mut self) -> Result<(), ClientError> {
        self.connection = None;
        let stream = UnixStream::connect(&self.path).map_err(|e| ClientError::Connect {
            path: self.display(),
            reason: os_error(&e),
        })?;
        let _ = stream.set_read_timeout(self.timeout);
        self.connection = Some(BufReader::new(stream));
        Ok(())
    }

    /// Writes one request line and reads one answer line.
    fn exchange(&mut self, line: &[u8]) -> Result<Vec<u8>, Attempt> {
        let Some(connection) = self.connection.as_mut() else {
            return Err(Attempt::Unanswered("not connected".into()));
        };
        let written = connection.get_mut().write_all(line);
        if let Err(e) = &written {
            if !matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                return Err(Attempt::Broken(os_error(e)));
            }
            // Closed on us; a refusal (not allowed, too many clients) may be waiting.
        }
        let mut answer = Vec::new();
        let read = connection
            .by_ref()
            .take(MAX_RESPONSE)
            .read_until(b'\n', &mut answer);
        match (read, written) {
            (Ok(_), _) if answer.ends_with(b"\n") => Ok(answer),
            (_, Err(e)) => Err(Attempt::Unanswered(os_error(&e))),
            (read, Ok(())) => Self::read_failure(read, &answer),
        }
    }

    fn read_failure(read: io::Result<usize>, answer: &[u8]) -> Result<Vec<u8>, Attempt> {
        match read {
            Ok(_) if answer.is_empty() => Err(Attempt::Unanswered(
                "the supervisor closed the connection without answering".into(),
            )),
            Ok(_) => Err(Attempt::Broken("the answer was cut off".into())),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(Attempt::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && answer.is_empty() => {
                Err(Attempt::Unanswered(os_error(&e)))
            }
            Err(e) => Err(Attempt::Broken(os_error(&e))),
        }
    }

    fn display(&self) -> String {
        self.path.display().to_string()
    }

    fn invalid(&self, reason: impl ToString) -> ClientError {
        ClientError::Invalid {
            path: self.display(),
            reason: reason.to_string(),
        }
    }
}

/// The lines of a stream after the response to its `follow`, as they come; the last is
/// `StreamEvent::End`. An error ends it too (the supervisor went away without ending it:
/// killed, or it dropped this follower for not reading).
pub struct Stream {
    path: PathBuf,
    id: Value,
    reader: BufReader<UnixStream>,
    over: bool,
}

impl Iterator for Stream {
    type Item = Result<StreamEvent, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.over {
            return None;
        }
        let path = self.path.display().to_string();
        let mut line = Vec::new();
        let read = self
            .reader
            .by_ref()
            .take(MAX_RESPONSE)
            .read_until(b'\n', &mut line);
        let event = match read {
            Ok(_) if line.ends_with(b"\n") => {
                match StreamEvent::from_line(&line[..line.len() - 1]) {
                    Ok((id, _)) if id != self.id => Err(ClientError::Invalid {
                        path,
                        reason: format!("a stream line of request {id} instead of {}", self.id),
                    }),
                    Ok((_, event)) => Ok(event),
                    Err(reason) => Err(ClientError::Invalid { path, reason }),
                }
            }
            Ok(_) => Err(ClientError::Lost {
                path,
                reason: "the stream stopped without its end".into(),
            }),
            Err(e) => Err(ClientError::Lost {
                path,
                reason: os_error(&e),
            }),
        };
        self.over = !matches!(event, Ok(StreamEvent::Item(_) | StreamEvent::Missed(_)));
        Some(event)
    }
}

/// How one exchange failed.
enum Attempt {
    /// Closed before any answer came: the request was not served.
    Unanswered(String),
    /// Broken in a way that leaves open whether it was served.
    Broken(String),
    TimedOut,
}
