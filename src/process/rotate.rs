//! Rotation of a node's output files, done by the supervisor: by size, by time, or both,
//! with the rotated files optionally gzip-compressed.
//!
//! With `output_max_bytes` or `output_rotate_every` set, a node's
//! `stdout_file`/`stderr_file` is not handed to the node: its output comes through the
//! supervisor's pipe like captured output and is written here, whole lines at a time.
//! The file is rotated before a line would take it past `output_max_bytes`, and when the
//! hour or day (UTC) it was started in is over: `FILE.(n-1)` → `FILE.n`, …, `FILE` →
//! `FILE.1`, and a new `FILE` is started (mode 0600). Nothing is lost or split at the
//! moment of rotation, because lines are written whole and only between lines. A line
//! longer than the limit gets a file of its own.
//!
//! Time is checked at each write (a line never lands in the file of a period that is
//! over) and, for a file that goes quiet, when the supervisor's deadline for the end of
//! the period comes (`rotate_due`): the loop sleeps until then, it does not poll. An
//! empty file is not rotated. With `output_compress`, the loop only renames the file to
//! a staging name and the compression worker (`compress`) does the rest.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::compress::{self, Job, numbered, shift_backups};
use super::os_error;
use super::spawn::{give, open_output};
use crate::config::{NodeConfig, Rotation, Stream};

/// For tests only: replaces the length of `output_rotate_every`'s hour or day with this
/// many milliseconds, so rotation by time can be seen without waiting an hour.
pub const TEST_PERIOD_ENV: &str = "RHAI_SUPERVISOR_TEST_ROTATE_PERIOD_MS";

/// The output files of one node that the supervisor writes (those it rotates), by
/// stream; none when the node's output goes to the supervisor or straight to its files.
#[derive(Debug, Default)]
pub struct OutputFiles {
    files: [Option<RotatingFile>; 2],
}

impl OutputFiles {
    /// Opens the rotated files of `config` (paths as `plan` resolves them). `owner`
    /// (uid, gid) is the node's user, when it has one: the files are its.
    pub fn open(
        config: &NodeConfig,
        cwd: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<OutputFiles, String> {
        let mut files = OutputFiles::default();
        let Some(rotation) = config.rotation() else {
            return Ok(files);
        };
        let mut policy = Policy::of(&rotation);
        policy.owner = owner;
        if policy.period.is_some() {
            if let Some(ms) = std::env::var(TEST_PERIOD_ENV)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&ms| ms > 0)
            {
                policy.period = Some(Duration::from_millis(ms));
            }
        }
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
                    RotatingFile::open(&base.join(file), policy)
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

    /// How long until the period of a file rotated by time is over; `None` when no file
    /// rotates by time.
    pub fn until_rotation(&self) -> Option<Duration> {
        let now = SystemTime::now();
        self.files
            .iter()
            .flatten()
            .filter_map(|f| Some((f.period_end?, f.policy.period?)))
            // No longer than a period, should the wall clock have been set back.
            .map(|(end, period)| {
                end.duration_since(now)
                    .unwrap_or(Duration::ZERO)
                    .min(period)
            })
            .min()
    }

    /// Rotates the files whose period is over (those that hold anything).
    pub fn rotate_due(&mut self) {
        let now = SystemTime::now();
        for file in self.files.iter_mut().flatten() {
            file.rotate_if_over(now);
        }
    }
}

/// When a file is rotated, and what is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Rotate before a line would take the file past this size.
    pub max_bytes: u64,
    /// Rotate when the period (counted from the Unix epoch, so hours and days of UTC) is
    /// over.
    pub period: Option<Duration>,
    /// Rotated files kept.
    pub backups: u32,
    /// Gzip rotated files.
    pub compress: bool,
    /// The node's user and group, who own its files.
    pub owner: Option<(u32, u32)>,
}

impl Policy {
    fn of(rotation: &Rotation) -> Policy {
        Policy {
            max_bytes: rotation.max_bytes.unwrap_or(u64::MAX).max(1),
            period: rotation.every.map(|p| p.length()),
            backups: rotation.backups,
            compress: rotation.compress,
            owner: None,
        }
    }
}

/// The end of the period of length `period` that `now` is in.
fn period_end(now: SystemTime, period: Duration) -> SystemTime {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let period_ms = period.as_millis().max(1);
    let end_ms = (since_epoch.as_millis() / period_ms + 1) * period_ms;
    UNIX_EPOCH + Duration::from_millis(u64::try_from(end_ms).unwrap_or(u64::MAX))
}

#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    policy: Policy,
    /// When the current period is over (rotation by time).
    period_end: Option<SystemTime>,
    /// The number of the next staging name (`FILE.rotating-N`).
    next_staged: u64,
    /// A write error is logged once, until writing works again.
    failing: bool,
    /// Only regular files are rotated: renaming `/dev/null` or a FIFO would be wrong.
    regular: bool,
}

impl RotatingFile {
    /// Starts writing `path`. Output a previous supervisor left there is rotated away
    /// first (kept as `path.1` when backups are kept), and so are rotated files whose
    /// compression it did not finish.
    pub fn open(path: &Path, policy: Policy) -> Result<RotatingFile, String> {
        Self::open_at(path, policy, SystemTime::now())
    }

    fn open_at(path: &Path, policy: Policy, now: SystemTime) -> Result<RotatingFile, String> {
        let shown = path.display();
        let (regular, existing) = match std::fs::metadata(path) {
            Ok(meta) => (meta.is_file(), meta.len()),
            Err(_) => (true, 0),
        };
        let mut next_staged = 0;
        if regular && policy.compress && policy.backups > 0 {
            for (n, staged) in leftover_staged(path) {
                next_staged = next_staged.max(n + 1);
                let job = Job {
                    base: path.to_path_buf(),
                    staged,
                    backups: policy.backups,
                };
                if let Err(job) = compress::submit(job) {
                    let _ = std::fs::rename(&job.staged, numbered(path, 1, ""));
                }
            }
        }
        if regular && existing > 0 && policy.backups > 0 {
            stage_or_shift(path, policy, &mut next_staged)
                .map_err(|e| format!("cannot rotate '{shown}': {e}"))?;
        }
        let file =
            open_output(path).map_err(|e| format!("cannot open '{shown}': {}", os_error(&e)))?;
        give(&file, policy.owner).map_err(|e| format!("cannot give '{shown}' to its user: {e}"))?;
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size: 0,
            policy,
            period_end: policy.period.map(|p| period_end(now, p)),
            next_staged,
            failing: false,
            regular,
        })
    }

    /// Appends whole lines (each ending in `\n`), rotating between lines when needed.
    pub fn write(&mut self, lines: &[u8]) {
        self.write_at(lines, SystemTime::now());
    }

    fn write_at(&mut self, mut lines: &[u8], now: SystemTime) {
        self.rotate_if_over(now);
        while !lines.is_empty() {
            let room = self.policy.max_bytes.saturating_sub(self.size);
            let room = usize::try_from(room).unwrap_or(usize::MAX);
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

    /// Rotates the file if its period is over at `now` and it holds anything; starts the
    /// next period either way.
    fn rotate_if_over(&mut self, now: SystemTime) {
        let (Some(end), Some(period)) = (self.period_end, self.policy.period) else {
            return;
        };
        if now < end {
            // The wall clock was set back by more than a period: count from now.
            if end.duration_since(now).unwrap_or(Duration::ZERO) > period {
                self.period_end = Some(period_end(now, period));
            }
            return;
        }
        if self.size > 0 {
            self.rotate();
        }
        self.period_end = Some(period_end(now, period));
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
        let policy = self.policy;
        let next_staged = &mut self.next_staged;
        let reopened = open_output_keeping(&self.path, policy.backups > 0, |path| {
            stage_or_shift(path, policy, next_staged)
        })
        .and_then(|file| give(&file, policy.owner).map(|()| file));
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

/// Opens `path` afresh; first, when `keep`, moves what it holds out of the way with
/// `move_away`.
fn open_output_keeping(
    path: &Path,
    keep: bool,
    move_away: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<File, String> {
    if keep {
        move_away(path)?;
    }
    open_output(path).map_err(|e| os_error(&e))
}

/// Moves `path` out of the way at a rotation: to a staging name for the compression
/// worker (which numbers the backups), or, without compression, to `path.1` after
/// shifting the backups here.
fn stage_or_shift(path: &Path, policy: Policy, next_staged: &mut u64) -> Result<(), String> {
    if policy.compress {
        let staged = staged_path(path, *next_staged);
        *next_staged += 1;
        std::fs::rename(path, &staged).map_err(|e| os_error(&e))?;
        let job = Job {
            base: path.to_path_buf(),
            staged,
            backups: policy.backups,
        };
        return match compress::submit(job) {
            Ok(()) => Ok(()),
            // No worker: keep it uncompressed, numbered here.
            Err(job) => {
                shift_backups(path, policy.backups)?;
                std::fs::rename(&job.staged, numbered(path, 1, "")).map_err(|e| os_error(&e))
            }
        };
    }
    shift_backups(path, policy.backups)?;
    std::fs::rename(path, numbered(path, 1, "")).map_err(|e| os_error(&e))
}

/// `FILE.rotating-N`.
fn staged_path(path: &Path, n: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".rotating-{n}"));
    PathBuf::from(name)
}

/// Staged files of `path` that a previous supervisor left, oldest first.
fn leftover_staged(path: &Path) -> Vec<(u64, PathBuf)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.rotating-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let file_name = entry.file_name();
            let n = file_name.to_str()?.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, entry.path()))
        })
        .collect();
    found.sort();
    found
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

    fn by_size(max_bytes: u64, backups: u32) -> Policy {
        Policy {
            max_bytes,
            period: None,
            backups,
            compress: false,
            owner: None,
        }
    }

    fn gunzip(path: &Path) -> String {
        use std::io::Read;
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn periods_end_on_the_hour_and_at_midnight_utc() {
        let hour = Duration::from_secs(3600);
        let day = Duration::from_secs(86_400);
        // 2023-11-14T22:13:20Z
        assert_eq!(period_end(at(1_700_000_000), hour), at(1_700_002_800));
        assert_eq!(period_end(at(1_700_000_000), day), at(1_700_006_400));
        // At the boundary itself, the next period has begun.
        assert_eq!(period_end(at(1_700_006_400), day), at(1_700_092_800));
    }

    #[test]
    fn a_file_rotates_when_its_hour_is_over_and_not_when_empty() {
        let d = dir("time");
        let path = d.join("out.log");
        let policy = Policy {
            max_bytes: u64::MAX,
            period: Some(Duration::from_secs(3600)),
            backups: 5,
            compress: false,
            owner: None,
        };
        let start = 1_700_000_000; // 22:13:20
        let mut file = RotatingFile::open_at(&path, policy, at(start)).unwrap();
        file.write_at(b"a\n", at(start));
        file.write_at(b"b\n", at(start + 2799)); // 22:59:59
        file.write_at(b"c\n", at(start + 2800)); // 23:00:00: a new file
        assert_eq!(read(&d.join("out.log.1")), "a\nb\n");
        assert_eq!(read(&path), "c\n");
        // A quiet hour: the deadline rotates it; a second quiet hour leaves the empty file.
        file.rotate_if_over(at(start + 2800 + 3600));
        assert_eq!(read(&d.join("out.log.1")), "c\n");
        assert_eq!(read(&path), "");
        file.rotate_if_over(at(start + 2800 + 7200));
        assert_eq!(read(&d.join("out.log.2")), "a\nb\n");
        assert!(!d.join("out.log.3").exists());
        // The clock set back a day: the period is counted from the new time.
        file.write_at(b"d\n", at(start - 86_400));
        file.write_at(b"e\n", at(start - 86_400 + 2800));
        assert_eq!(read(&d.join("out.log.1")), "d\n");
        assert_eq!(read(&path), "e\n");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotated_files_are_compressed_with_every_line_once_in_order() {
        let d = dir("gzip");
        let path = d.join("out.log");
        let policy = Policy {
            max_bytes: 1000,
            period: None,
            backups: 100,
            compress: true,
            owner: None,
        };
        let mut file = RotatingFile::open(&path, policy).unwrap();
        let mut all = String::new();
        for i in 0..1000 {
            let line = format!("line {i:04}\n");
            all.push_str(&line);
            file.write(line.as_bytes());
        }
        assert!(compress::finish(Duration::from_secs(30)));
        let mut kept = String::new();
        for n in (1..=9).rev() {
            let rotated = d.join(format!("out.log.{n}.gz"));
            assert!(rotated.exists(), "no {}", rotated.display());
            kept.push_str(&gunzip(&rotated));
        }
        assert!(!d.join("out.log.10.gz").exists());
        kept.push_str(&read(&path));
        assert_eq!(kept, all);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn staged_files_left_by_a_killed_supervisor_are_compressed_at_open() {
        let d = dir("leftover");
        let path = d.join("out.log");
        std::fs::write(d.join("out.log.rotating-3"), "older\n").unwrap();
        std::fs::write(d.join("out.log.rotating-7"), "newer\n").unwrap();
        std::fs::write(&path, "last\n").unwrap();
        let policy = Policy {
            max_bytes: 1000,
            period: None,
            backups: 5,
            compress: true,
            owner: None,
        };
        let mut file = RotatingFile::open(&path, policy).unwrap();
        file.write(b"new\n");
        assert!(compress::finish(Duration::from_secs(30)));
        assert_eq!(gunzip(&d.join("out.log.3.gz")), "older\n");
        assert_eq!(gunzip(&d.join("out.log.2.gz")), "newer\n");
        assert_eq!(gunzip(&d.join("out.log.1.gz")), "last\n");
        assert_eq!(read(&path), "new\n");
        assert!(!d.join("out.log.rotating-8").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotates_between_lines_and_keeps_n_backups() {
        let d = dir("n");
        let path = d.join("out.log");
        let mut file = RotatingFile::open(&path, by_size(20, 2)).unwrap();
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
        let mut file = RotatingFile::open(&path, by_size(10, 5)).unwrap();
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
        let mut file = RotatingFile::open(&path, by_size(10, 0)).unwrap();
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
        let mut file = RotatingFile::open(&link, by_size(4, 3)).unwrap();
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
        let mut file = RotatingFile::open(&path, by_size(100, 1)).unwrap();
        file.write(b"new\n");
        assert_eq!(read(&d.join("out.log.1")), "from before\n");
        assert_eq!(read(&path), "new\n");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
