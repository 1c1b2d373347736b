//! Size-based rotation of a node's output file, done by the supervisor.
//!
//! With `output_max_bytes` set, a node's `stdout_file`/`stderr_file` is not handed to the
//! node: its output comes through the supervisor's pipe like captured output and is
//! written here, whole lines at a time. Before a line would take the file past the
//! limit, the file is rotated: `FILE.(n-1)` → `FILE.n`, …, `FILE` → `FILE.1`, and a new
//! `FILE` is started (mode 0600). Nothing is lost or split at the moment of rotation,
//! because lines are written whole and only between lines. A line longer than the limit
//! gets a file of its own.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::os_error;
use super::spawn::{give, open_output};
use crate::config::{NodeConfig, Stream};

/// The output files of one node that the supervisor writes (those it rotates), by
/// stream; none when the node's output goes to the supervisor or straight to its files.
#[derive(Debug, Default)]
pub struct OutputFiles {
    files: [Option<RotatingFile>; 2],
}

impl OutputFiles {
    /// Opens the rotated files of `config` (paths as `plan` resolves them).
    /// `owner` (uid, gid) is the node's user, when it has one: the files are its.
    pub fn open(
        config: &NodeConfig,
        cwd: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<OutputFiles, String> {
        let mut files = OutputFiles::default();
        let Some((max, backups)) = config.rotation() else {
            return Ok(files);
        };
        let base = match &config.directory {
            Some(dir) => cwd.join(dir),
            None => cwd.to_path_buf(),
        };
        for (slot, file) in files
            .files
            .iter_mut()
            .zip([&config.stdout_file, &config.stderr_file])
        {
            if let Some(file) = file {
                *slot = Some(
                    RotatingFile::open(&base.join(file), max, backups, owner)
                        .map_err(|e| format!("node '{}': {e}", config.name))?,
                );
            }
        }
        Ok(files)
    }

    /// Writes whole lines of `stream` to its file; false when the stream has none.
    pub fn write(&mut self, stream: Stream, lines: &[u8]) -> bool {
        match &mut self.files[stream as usize] {
            Some(file) => {
                file.write(lines);
                true
            }
            None => false,
        }
    }
}

#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    backups: u32,
    /// A write error is logged once, until writing works again.
    failing: bool,
    /// Only regular files are rotated: renaming `/dev/null` or a FIFO would be wrong.
    regular: bool,
    /// The node's user and group, who own its files.
    owner: Option<(u32, u32)>,
}

impl RotatingFile {
    /// Starts writing `path`. Output a previous supervisor left there is rotated away
    /// first (kept as `path.1` when backups are kept).
    pub fn open(
        path: &Path,
        max_bytes: u64,
        backups: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<RotatingFile, String> {
        let shown = path.display();
        let (regular, existing) = match std::fs::metadata(path) {
            Ok(meta) => (meta.is_file(), meta.len()),
            Err(_) => (true, 0),
        };
        if regular && existing > 0 && backups > 0 {
            shift_backups(path, backups).map_err(|e| format!("cannot rotate '{shown}': {e}"))?;
        }
        let file =
            open_output(path).map_err(|e| format!("cannot open '{shown}': {}", os_error(&e)))?;
        give(&file, owner).map_err(|e| format!("cannot give '{shown}' to its user: {e}"))?;
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size: 0,
            max_bytes: max_bytes.max(1),
            backups,
            failing: false,
            regular,
            owner,
        })
    }

    /// Appends whole lines (each ending in `\n`), rotating between lines when needed.
    pub fn write(&mut self, mut lines: &[u8]) {
        while !lines.is_empty() {
            let room = self.max_bytes.saturating_sub(self.size) as usize;
            // The longest run of whole lines that fits; at least one line in an empty file.
            let fits = match lines.get(..room.min(lines.len())) {
                Some(window) if window.len() == lines.len() => lines.len(),
                Some(window) => window
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1),
                None => 0,
            };
            let take = if fits > 0 {
                fits
            } else if self.size == 0 {
                lines
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(lines.len(), |i| i + 1)
            } else {
                self.rotate();
                continue;
            };
            self.append(&lines[..take]);
            lines = &lines[take..];
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.size += bytes.len() as u64;
                self.failing = false;
            }
            Err(e) => {
                // Still count the bytes, so a full disk does not stop rotation from
                // making room.
                self.size += bytes.len() as u64;
                if !self.failing {
                    log::error!(
                        "cannot write to '{}': {}; output is being lost",
                        self.path.display(),
                        os_error(&e)
                    );
                    self.failing = true;
                }
            }
        }
    }

    fn rotate(&mut self) {
        if !self.regular {
            self.size = 0;
            return;
        }
        let result = if self.backups > 0 {
            shift_backups(&self.path, self.backups)
        } else {
            Ok(())
        };
        let reopened = result.and_then(|()| {
            let file = open_output(&self.path).map_err(|e| os_error(&e))?;
            give(&file, self.owner)?;
            Ok(file)
        });
        match reopened {
            Ok(file) => {
                self.file = file;
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    log::error!("cannot rotate '{}': {e}", self.path.display());
                    self.failing = true;
                }
                // Keep writing where we are rather than lose lines.
            }
        }
        self.size = 0;
    }
}

/// `FILE.(n-1)` → `FILE.n`, …, `FILE` → `FILE.1`.
fn shift_backups(path: &Path, backups: u32) -> Result<(), String> {
    let numbered = |i: u32| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{i}"));
        PathBuf::from(name)
    };
    for i in (1..backups).rev() {
        match std::fs::rename(numbered(i), numbered(i + 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(os_error(&e)),
        }
    }
    std::fs::rename(path, numbered(1)).map_err(|e| os_error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rs-rotate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotates_between_lines_and_keeps_n_backups() {
        let d = dir("n");
        let path = d.join("out.log");
        let mut file = RotatingFile::open(&path, 20, 2, None).unwrap();
        let mut all = String::new();
        for i in 0..10 {
            let line = format!("line {i:02}\n"); // 8 bytes
            all.push_str(&line);
            file.write(line.as_bytes());
        }
        // 2 lines (16 bytes) per file: 10 lines → 5 files, of which 3 are kept.
        assert_eq!(read(&path), "line 08\nline 09\n");
        assert_eq!(read(&d.join("out.log.1")), "line 06\nline 07\n");
        assert_eq!(read(&d.join("out.log.2")), "line 04\nline 05\n");
        assert!(!d.join("out.log.3").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn chunks_are_split_at_line_boundaries_and_long_lines_get_their_own_file() {
        let d = dir("chunk");
        let path = d.join("out.log");
        let mut file = RotatingFile::open(&path, 10, 5, None).unwrap();
        file.write(b"aaaa\nbbbb\ncccc\n");
        file.write(b"this line is longer than ten bytes\nz\n");
        let files: Vec<String> = (1..=4)
            .rev()
            .map(|i| read(&d.join(format!("out.log.{i}"))))
            .collect();
        assert_eq!(
            files,
            [
                "",
                "aaaa\nbbbb\n",
                "cccc\n",
                "this line is longer than ten bytes\n"
            ]
        );
        assert_eq!(read(&path), "z\n");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn without_backups_the_file_starts_over() {
        let d = dir("zero");
        let path = d.join("out.log");
        let mut file = RotatingFile::open(&path, 10, 0, None).unwrap();
        file.write(b"12345678\nabc\n");
        assert_eq!(read(&path), "abc\n");
        assert!(!d.join("out.log.1").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn special_files_are_written_but_never_renamed() {
        let d = dir("special");
        let link = d.join("null.log");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let mut file = RotatingFile::open(&link, 4, 3, None).unwrap();
        file.write(b"123\n456\n789\n");
        assert!(std::path::Path::new("/dev/null").exists());
        assert!(!d.join("null.log.1").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_old_file_is_kept_as_the_first_backup() {
        let d = dir("old");
        let path = d.join("out.log");
        std::fs::write(&path, "from before\n").unwrap();
        let mut file = RotatingFile::open(&path, 100, 1, None).unwrap();
        file.write(b"new\n");
        assert_eq!(read(&d.join("out.log.1")), "from before\n");
        assert_eq!(read(&path), "new\n");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
