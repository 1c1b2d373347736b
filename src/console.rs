//! Where this process's own output goes: node lines printed as `[node] line`, script
//! `print`/`eprint`/`debug`, and log messages.
//!
//! By default that is stdout and stderr. An interactive front end (the REPL) installs a
//! `Sink` that prints above its prompt instead, so that output arriving while the user
//! types does not garble the line being edited. Writes never fail: a closed stdout is
//! not a reason for a supervisor to stop.
//!
//! What a script prints (`print`, `debug`, `eprint`) can instead be captured for the
//! duration of one call on the loop thread (`capture`): a control client's `eval` gets
//! the text back rather than the supervisor's terminal.

use std::cell::RefCell;
use std::io::Write;
use std::sync::RwLock;

use crate::config::Stream;

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

/// The most text one `capture` keeps; the rest is replaced by a note.
pub const CAPTURE_LIMIT: usize = 1024 * 1024;

thread_local! {
    static CAPTURE: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

#[derive(Default)]
struct Captured {
    text: String,
    truncated: bool,
}

/// Writes one line that a script printed: to `stream`, or into the capture running on
/// this thread.
pub fn script_line(stream: Stream, text: &str) {
    let captured = CAPTURE.with(|capture| match capture.borrow_mut().as_mut() {
        Some(captured) => {
            if captured.text.len() + text.len() < CAPTURE_LIMIT {
                captured.text.push_str(text);
                captured.text.push('\n');
            } else {
                captured.truncated = true;
            }
            true
        }
        None => false,
    });
    if !captured {
        line(stream, text);
    }
}

/// Runs `f`, collecting the lines that scripts print on this thread meanwhile (both
/// streams, in order) instead of writing them. Returns `f`'s value and the text.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, String) {
    /// Puts back the outer capture even if `f` unwinds.
    struct Restore(Option<Option<Captured>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                CAPTURE.with(|capture| *capture.borrow_mut() = outer);
            }
        }
    }
    let outer = CAPTURE.with(|capture| capture.replace(Some(Captured::default())));
    let mut restore = Restore(Some(outer));
    let value = f();
    let captured = CAPTURE.with(|capture| capture.replace(restore.0.take().flatten()));
    let text = match captured {
        Some(Captured {
            mut text,
            truncated,
        }) => {
            if truncated {
                text.push_str(&format!(
                    "[output truncated: more than {CAPTURE_LIMIT} bytes]\n"
                ));
            }
            text
        }
        None => String::new(),
    };
    (value, text)
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
    /// A writer onto `stream`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_collects_script_lines_in_order_and_nests() {
        let ((), text) = capture(|| {
            script_line(Stream::Stdout, "one");
            script_line(Stream::Stderr, "two");
            let ((), inner) = capture(|| script_line(Stream::Stdout, "inner"));
            assert_eq!(inner, "inner\n");
            script_line(Stream::Stdout, "three");
        });
        assert_eq!(text, "one\ntwo\nthree\n");
    }

    #[test]
    fn capture_is_bounded() {
        let line = "x".repeat(1000);
        let ((), text) = capture(|| {
            for _ in 0..2 * CAPTURE_LIMIT / line.len() {
                script_line(Stream::Stdout, &line);
            }
        });
        assert!(text.len() <= CAPTURE_LIMIT + 100, "{}", text.len());
        assert!(text.ends_with("[output truncated: more than 1048576 bytes]\n"));
    }
}
