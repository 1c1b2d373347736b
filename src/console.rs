//! Where this process's own output goes: node lines printed as `[node] line`, script
//! `print`/`eprint`/`debug`, and log messages.
//!
//! By default that is stdout and stderr. An interactive front end (the REPL) installs a
//! `Sink` that prints above its prompt instead, so that output arriving while the user
//! types does not garble the line being edited. Writes never fail: a closed stdout is
//! not a reason for a supervisor to stop.

use std::io::Write;
use std::sync::RwLock;

use crate::process::Stream;

/// A destination for the process's output.
pub trait Sink: Send + Sync {
    /// Writes whole lines (each ending in `\n`) to `stream`.
    fn write(&self, stream: Stream, bytes: &[u8]);
}

static SINK: RwLock<Option<Box<dyn Sink>>> = RwLock::new(None);

/// Writes whole lines to the process's stdout or stderr, or to the installed sink.
pub fn write(stream: Stream, bytes: &[u8]) {
    if let Ok(sink) = SINK.read() {
        if let Some(sink) = sink.as_ref() {
            sink.write(stream, bytes);
            return;
        }
    }
    let _ = match stream {
        Stream::Stdout => std::io::stdout().lock().write_all(bytes),
        Stream::Stderr => std::io::stderr().lock().write_all(bytes),
    };
}

/// Writes one line (a newline is added).
pub fn line(stream: Stream, text: &str) {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    write(stream, &bytes);
}

/// Sends all output to `sink` from now on; `None` goes back to stdout and stderr.
pub fn set_sink(sink: Option<Box<dyn Sink>>) {
    if let Ok(mut current) = SINK.write() {
        *current = sink;
    }
}

/// An `io::Write` onto the console, for loggers. Buffers until a newline.
pub struct Writer {
    stream: Stream,
    pending: Vec<u8>,
}

impl Writer {
    pub fn new(stream: Stream) -> Writer {
        Writer {
            stream,
            pending: Vec::new(),
        }
    }
}

impl Write for Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        if let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') {
            let rest = self.pending.split_off(end + 1);
            write(self.stream, &self.pending);
            self.pending = rest;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.pending.push(b'\n');
            write(self.stream, &self.pending);
            self.pending.clear();
        }
        Ok(())
    }
}
