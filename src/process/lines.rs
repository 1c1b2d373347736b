//! Splitting a pipe's bytes into lines, with a bound on how long a line may grow.
//!
//! Bytes arrive in arbitrary pieces; a `LineBuffer` keeps the unfinished tail of one
//! stream and hands out complete lines, each ending in `\n`. A line longer than
//! `MAX_LINE` bytes is cut into pieces of at most `MAX_LINE` bytes (at a UTF-8 character
//! boundary where there is one near), so a node that never writes a newline cannot make
//! the supervisor buffer without limit.

use memchr::{memchr, memrchr};

/// The longest line delivered to a hook or printed, in bytes (without the newline).
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    /// Appends `data` and moves every complete line into `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        // Fast path: nothing pending and no room in `data` for an over-long line, so
        // everything up to the last newline is whole lines: one search, one copy.
        if self.partial.is_empty() && data.len() <= MAX_LINE + 1 {
            if let Some(last) = memrchr(b'\n', data) {
                out.extend_from_slice(&data[..=last]);
                data = &data[last + 1..];
            }
            if data.len() <= MAX_LINE {
                self.partial.extend_from_slice(data);
                return;
            }
        }
        while !data.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let window = &data[..data.len().min(room + 1)];
            if let Some(i) = memchr(b'\n', window) {
                out.extend_from_slice(&self.partial);
                self.partial.clear();
                out.extend_from_slice(&data[..=i]);
                data = &data[i + 1..];
            } else if data.len() <= room {
                self.partial.extend_from_slice(data);
                return;
            } else {
                let cut = char_boundary(data, room);
                out.extend_from_slice(&self.partial);
                self.partial.clear();
                out.extend_from_slice(&data[..cut]);
                out.push(b'\n');
                data = &data[cut..];
            }
        }
    }

    /// Moves an unfinished last line, if any, into `out` with a newline added.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            out.extend_from_slice(&self.partial);
            out.push(b'\n');
            self.partial.clear();
        }
    }
}

/// Moves a cut at `at` back to the start of the UTF-8 character it would split, if the
/// character starts within the last 3 bytes before it; otherwise cuts at `at`.
fn char_boundary(data: &[u8], at: usize) -> usize {
    let mut cut = at;
    while cut > 0 && at - cut < 3 && data[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    if cut == 0 || data[cut] & 0xC0 == 0x80 {
        at
    } else {
        cut
    }
}

/// The last `n` lines of a buffer filled by `LineBuffer` (each ending in `\n`).
pub fn last(buffer: &[u8], n: usize) -> &[u8] {
    let mut start = buffer.len();
    for _ in 0..n {
        match memrchr(b'\n', &buffer[..start.saturating_sub(1)]) {
            Some(i) if start > 0 => start = i + 1,
            _ => return buffer,
        }
    }
    &buffer[start..]
}

/// Iterates over the lines of a buffer filled by `LineBuffer`, without the newlines.
pub fn split(buffer: &[u8]) -> impl Iterator<Item = &[u8]> {
    buffer
        .split_inclusive(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\n").unwrap_or(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut buffer = LineBuffer::default();
        let mut out = Vec::new();
        for piece in pieces {
            buffer.push(piece, &mut out);
        }
        buffer.finish(&mut out);
        split(&out).map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn lines_across_pieces() {
        assert_eq!(
            feed(&[b"ab", b"c\nd", b"\n\nef"]),
            vec![b"abc".to_vec(), b"d".to_vec(), b"".to_vec(), b"ef".to_vec()]
        );
        assert!(feed(&[]).is_empty());
        assert_eq!(feed(&[b"\n"]), vec![b"".to_vec()]);
    }

    #[test]
    fn long_lines_are_cut_at_the_limit() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let lines = feed(&[&long[..100], &long[100..], b"\nend\n"]);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1].len(), MAX_LINE);
        assert_eq!(lines[2].len(), 10);
        assert_eq!(lines[3], b"end");
        // exactly MAX_LINE bytes is one line, not a line and an empty one
        let exact = [vec![b'y'; MAX_LINE], b"\n".to_vec()].concat();
        assert_eq!(feed(&[&exact]).len(), 1);
    }

    #[test]
    fn the_last_lines_of_a_buffer() {
        assert_eq!(last(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last(b"a\nb\nc\n", 3), b"a\nb\nc\n");
        assert_eq!(last(b"a\nb\nc\n", 9), b"a\nb\nc\n");
        assert_eq!(last(b"a\n", 1), b"a\n");
        assert_eq!(last(b"\n\n", 1), b"\n");
        assert_eq!(last(b"", 1), b"");
        assert_eq!(last(b"a\nb\n", 0), b"");
    }

    #[test]
    fn the_fast_path_and_the_slow_path_agree() {
        let text: Vec<u8> = (0..5000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        for piece in [1, 7, 100, 4096, MAX_LINE + 1, text.len()] {
            let pieces: Vec<&[u8]> = text.chunks(piece).collect();
            let lines = feed(&pieces);
            assert_eq!(lines.len(), 5000, "pieces of {piece}");
            assert_eq!(lines[4999], b"line 4999");
        }
    }

    #[test]
    fn cuts_do_not_split_characters() {
        let mut text = vec![b'a'; MAX_LINE - 1];
        text.extend_from_slice("é".as_bytes());
        text.push(b'\n');
        let lines = feed(&[&text]);
        assert_eq!(lines.len(), 2);
        assert!(std::str::from_utf8(&lines[0]).is_ok());
        assert_eq!(lines[1], "é".as_bytes());
    }
}
