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
//!
//! Log lines are text by default (the program sets up `simplelog` onto a `Writer`), or
//! JSON objects, one per line (`JsonLogger`, `--log-format json`).

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

/// Writes each log record on stderr (or the installed sink) as one JSON object:
/// `{"ts":"2025-01-31T12:00:00.123Z","level":"info","msg":"...","node":"w1"}`.
///
/// `node` is present where a node is concerned: from the record's `node` key-value
/// (`log::info!(node = name; "...")`), else from the message itself, since every message
/// about a node names it as `node 'NAME'` (or Zeek's `node with name 'NAME'`).
pub struct JsonLogger {
    level: log::LevelFilter,
}

impl JsonLogger {
    /// Installs the logger for records up to `level`. Fails when a logger is already set.
    pub fn init(level: log::LevelFilter) -> Result<(), log::SetLoggerError> {
        log::set_boxed_logger(Box::new(JsonLogger { level }))?;
        log::set_max_level(level);
        Ok(())
    }
}

impl log::Log for JsonLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        let node = record
            .key_values()
            .get(log::kv::Key::from_str("node"))
            .map(|value| value.to_string())
            .or_else(|| node_in(&message).map(str::to_string));
        let mut line = json_line(
            std::time::SystemTime::now(),
            record.level(),
            &message,
            node.as_deref(),
        );
        line.push('\n');
        write(Stream::Stderr, line.as_bytes());
    }

    fn flush(&self) {}
}

/// One log record as a JSON object (without a newline).
pub fn json_line(
    at: std::time::SystemTime,
    level: log::Level,
    message: &str,
    node: Option<&str>,
) -> String {
    // Built by hand to keep the keys in this order; serde_json escapes each string.
    let text = |s: &str| serde_json::Value::from(s).to_string();
    let mut line = format!(
        "{{\"ts\":\"{}\",\"level\":\"{}\",\"msg\":{}",
        rfc3339(at),
        level.as_str().to_ascii_lowercase(),
        text(message)
    );
    if let Some(node) = node {
        line.push_str(",\"node\":");
        line.push_str(&text(node));
    }
    line.push('}');
    line
}

/// The node a log message is about: the name in its first `node 'NAME'` or
/// `node with name 'NAME'`.
pub fn node_in(message: &str) -> Option<&str> {
    let mut rest = message;
    while let Some(at) = rest.find("node ") {
        let after = &rest[at + "node ".len()..];
        let quoted = after.strip_prefix("with name ").unwrap_or(after);
        if let Some(name) = quoted.strip_prefix('\'') {
            if let Some(end) = name.find('\'') {
                if end > 0 {
                    return Some(&name[..end]);
                }
            }
        }
        rest = after;
    }
    None
}

pub use crate::config::time::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_is_found_in_the_message() {
        assert_eq!(node_in("node 'w1' started (pid 7)"), Some("w1"));
        assert_eq!(node_in("destroying node 'a-b' (pid 7)"), Some("a-b"));
        assert_eq!(node_in("node with name 'x' already exists"), Some("x"));
        assert_eq!(
            node_in("error (for node 'w2'; its lines are printed as they come)"),
            Some("w2")
        );
        assert_eq!(node_in("received SIGTERM; stopping every node"), None);
        assert_eq!(node_in("a node '' is no node"), None);
        assert_eq!(node_in("the node is gone; node 'z' too"), Some("z"));
    }

    #[test]
    fn log_lines_are_json_objects() {
        let line = json_line(
            std::time::UNIX_EPOCH,
            log::Level::Warn,
            "node 'w1' said \"hi\"\n",
            Some("w1"),
        );
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(value["level"], "warn");
        assert_eq!(value["msg"], "node 'w1' said \"hi\"\n");
        assert_eq!(value["node"], "w1");
        let plain = json_line(std::time::UNIX_EPOCH, log::Level::Info, "x", None);
        assert!(!plain.contains("node"), "{plain}");
    }

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
