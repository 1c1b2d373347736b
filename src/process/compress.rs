//! Gzip of rotated output files, off the loop thread: one worker thread for the whole
//! process, started at the first rotation that asks for it (not a thread per node).
//!
//! At a rotation the loop only renames `FILE` to a staging name (`FILE.rotating-N`),
//! opens a new `FILE` and queues a `Job`. The worker takes jobs in order, so the
//! numbering of one file's backups is done by one thread only: it shifts `FILE.k.gz` to
//! `FILE.(k+1).gz` (and plain `FILE.k` the same way, from runs without compression),
//! writes the staged file as `FILE.1.gz` (through `FILE.1.gz.tmp`, so a reader never
//! sees half a file under the final name) and removes the staged file. Until then the
//! lines are in the staged file, whole: nothing is lost while the worker is behind.
//!
//! A worker that falls behind (a node flooding a small `output_max_bytes`) skips the
//! compression of a staged file that later jobs of the same file would push past
//! `output_backups` anyway, so its backlog, on disk and in time, stays bounded. If the
//! compression fails, the staged file becomes `FILE.1`, uncompressed, rather than lost.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::os_error;

/// One rotated file to shift in and compress.
#[derive(Debug)]
pub struct Job {
    /// The file the node writes (`FILE`).
    pub base: PathBuf,
    /// Where its rotated content waits (`FILE.rotating-N`).
    pub staged: PathBuf,
    /// Backups kept (at least 1: with none, nothing is staged).
    pub backups: u32,
}

/// The worker's queue and its count of unfinished jobs.
struct Compressor {
    jobs: Sender<Job>,
    pending: Arc<(Mutex<usize>, Condvar)>,
}

static COMPRESSOR: OnceLock<Option<Compressor>> = OnceLock::new();

fn compressor() -> Option<&'static Compressor> {
    COMPRESSOR
        .get_or_init(|| {
            let (jobs, queue) = crossbeam_channel::unbounded();
            let pending = Arc::new((Mutex::new(0), Condvar::new()));
            let counted = pending.clone();
            let started = std::thread::Builder::new()
                .name("rhai-supervisor-gzip".into())
                .spawn(move || work(queue, &counted));
            match started {
                Ok(_) => Some(Compressor { jobs, pending }),
                Err(e) => {
                    log::error!(
                        "cannot start the compression thread: {}; rotated files are kept uncompressed",
                        os_error(&e)
                    );
                    None
                }
            }
        })
        .as_ref()
}

/// Queues a job. Gives it back when there is no worker (it could not be started).
pub fn submit(job: Job) -> Result<(), Job> {
    let Some(compressor) = compressor() else {
        return Err(job);
    };
    let (count, _) = &*compressor.pending;
    *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    compressor.jobs.send(job).map_err(|e| {
        *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        e.into_inner()
    })
}

/// Waits until every queued job is done, at most `timeout`. False if some are left (their
/// staged files are picked up when the node's file is opened again).
pub fn finish(timeout: Duration) -> bool {
    let Some(Some(compressor)) = COMPRESSOR.get() else {
        return true;
    };
    let (count, done) = &*compressor.pending;
    let deadline = Instant::now() + timeout;
    let mut left = count.lock().unwrap_or_else(|e| e.into_inner());
    while *left > 0 {
        let now = Instant::now();
        if now >= deadline {
            log::warn!(
                "{} rotated output files were not compressed before exit; they are compressed when their node starts again",
                *left
            );
            return false;
        }
        left = done
            .wait_timeout(left, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}

fn work(queue: Receiver<Job>, pending: &(Mutex<usize>, Condvar)) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match queue.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return,
            }
        }
        waiting.extend(queue.try_iter());
        let Some(job) = waiting.pop_front() else {
            continue;
        };
        let later = waiting.iter().filter(|j| j.base == job.base).count();
        if later >= job.backups as usize {
            // Later rotations push it past the last backup: it would be removed unread.
            remove(&job.staged);
        } else {
            rotate_in(&job);
        }
        let (count, done) = pending;
        let mut left = count.lock().unwrap_or_else(|e| e.into_inner());
        *left = left.saturating_sub(1);
        done.notify_all();
    }
}

/// Shifts the backups of `job.base` and writes the staged file as `FILE.1.gz`.
fn rotate_in(job: &Job) {
    let shown = job.base.display();
    if let Err(e) = shift_backups(&job.base, job.backups) {
        log::error!("cannot rotate '{shown}': {e}");
    }
    let first = numbered(&job.base, 1, ".gz");
    let partial = numbered(&job.base, 1, ".gz.tmp");
    let written = gzip(&job.staged, &partial).and_then(|()| {
        std::fs::rename(&partial, &first).map_err(|e| format!("cannot rename: {}", os_error(&e)))
    });
    match written {
        Ok(()) => remove(&job.staged),
        Err(e) => {
            remove(&partial);
            log::error!("cannot compress rotated '{shown}': {e}; it is kept uncompressed");
            if let Err(e) = std::fs::rename(&job.staged, numbered(&job.base, 1, "")) {
                log::error!(
                    "cannot keep rotated '{shown}': {}; it stays as '{}'",
                    os_error(&e),
                    job.staged.display()
                );
            }
        }
    }
}

/// `FILE.(n-1)` → `FILE.n`, …, `FILE.1` → `FILE.2`, in both forms (`.gz` and plain).
pub fn shift_backups(base: &Path, backups: u32) -> Result<(), String> {
    for i in (1..backups).rev() {
        for suffix in [".gz", ""] {
            match std::fs::rename(numbered(base, i, suffix), numbered(base, i + 1, suffix)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(os_error(&e)),
            }
        }
    }
    Ok(())
}

/// `FILE.n` with `suffix` after the number.
pub fn numbered(base: &Path, n: u32, suffix: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{n}{suffix}"));
    PathBuf::from(name)
}

fn gzip(from: &Path, to: &Path) -> Result<(), String> {
    let mut input = File::open(from).map_err(|e| format!("cannot read it: {}", os_error(&e)))?;
    let output = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| format!("cannot create '{}': {}", to.display(), os_error(&e)))?;
    let mut encoder =
        flate2::write::GzEncoder::new(BufWriter::new(output), flate2::Compression::default());
    std::io::copy(&mut input, &mut encoder).map_err(|e| os_error(&e))?;
    let mut output = encoder.finish().map_err(|e| os_error(&e))?;
    output.flush().map_err(|e| os_error(&e))
}

fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove '{}': {}", path.display(), os_error(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rs-gzip-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn gunzip(path: &Path) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    #[test]
    fn jobs_shift_backups_and_compress_in_order() {
        let d = dir("order");
        let base = d.join("out.log");
        for i in 0..4 {
            let staged = d.join(format!("out.log.rotating-{i}"));
            std::fs::write(&staged, format!("file {i}\n")).unwrap();
            submit(Job {
                base: base.clone(),
                staged,
                backups: 3,
            })
            .unwrap();
        }
        assert!(finish(Duration::from_secs(30)));
        assert_eq!(gunzip(&d.join("out.log.1.gz")), "file 3\n");
        assert_eq!(gunzip(&d.join("out.log.2.gz")), "file 2\n");
        assert_eq!(gunzip(&d.join("out.log.3.gz")), "file 1\n");
        assert!(!d.join("out.log.4.gz").exists());
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("rotating") || n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_that_cannot_be_compressed_is_kept_plain() {
        let d = dir("fail");
        let base = d.join("out.log");
        // The partial file's place is taken by a directory: the gzip cannot be written.
        std::fs::create_dir(d.join("out.log.1.gz.tmp")).unwrap();
        let staged = d.join("out.log.rotating-0");
        std::fs::write(&staged, "kept\n").unwrap();
        submit(Job {
            base: base.clone(),
            staged,
            backups: 2,
        })
        .unwrap();
        assert!(finish(Duration::from_secs(30)));
        assert_eq!(
            std::fs::read_to_string(d.join("out.log.1")).unwrap(),
            "kept\n"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
