//! The last lines of a node's output, kept for inspection (`NodeStatus.output`, `ctl
//! tail`): what a user reads to see why a node keeps crashing.
//!
//! Each stream keeps its own last `TAIL_LINES` lines, numbered in arrival order so the two
//! can be merged back. In the steady state a new line reuses the buffer of the line it
//! pushes out, so keeping the tail allocates nothing per line.

use std::collections::VecDeque;

use crate::config::OutputLine;
use crate::config::Stream;

/// Lines kept per stream and node.
pub const TAIL_LINES: usize = 100;

#[derive(Clone, Debug, Default)]
pub struct OutputTail {
    streams: [VecDeque<(u64, String)>; 2],
    next: u64,
}

impl OutputTail {
    pub fn push(&mut self, stream: Stream, line: &str) {
        let kept = &mut self.streams[stream as usize];
        let mut text = if kept.len() >= TAIL_LINES {
            kept.pop_front().map(|(_, t)| t).unwrap_or_default()
        } else {
            String::new()
        };
        text.clear();
        text.push_str(line);
        kept.push_back((self.next, text));
        self.next += 1;
    }

    /// Both streams' kept lines, oldest first.
    pub fn lines(&self) -> Vec<OutputLine> {
        let [out, err] = &self.streams;
        let mut merged = Vec::with_capacity(out.len() + err.len());
        let (mut a, mut b) = (out.iter().peekable(), err.iter().peekable());
        loop {
            let take_out = match (a.peek(), b.peek()) {
                (Some((x, _)), Some((y, _))) => x < y,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_out {
                a.next().map(|line| (Stream::Stdout, line))
            } else {
                b.next().map(|line| (Stream::Stderr, line))
            };
            let Some((stream, (_, text))) = next else {
                break;
            };
            merged.push(OutputLine {
                stream: stream.name().to_string(),
                line: text.clone(),
            });
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_of_each_stream_in_arrival_order() {
        let mut tail = OutputTail::default();
        for i in 0..250 {
            tail.push(Stream::Stdout, &format!("out {i}"));
            if i % 50 == 0 {
                tail.push(Stream::Stderr, &format!("err {i}"));
            }
        }
        let lines = tail.lines();
        assert_eq!(lines.len(), TAIL_LINES + 5);
        assert_eq!(
            lines.iter().filter(|l| l.stream == "stdout").count(),
            TAIL_LINES
        );
        assert_eq!(lines[0].line, "err 0");
        let first_out = lines.iter().find(|l| l.stream == "stdout").unwrap();
        assert_eq!(first_out.line, "out 150");
        assert_eq!(lines.last().unwrap().line, "out 249");
        // err 200 arrived after out 200 and before out 201
        let at = lines.iter().position(|l| l.line == "err 200").unwrap();
        assert_eq!(lines[at - 1].line, "out 200");
        assert_eq!(lines[at + 1].line, "out 201");
    }
}
