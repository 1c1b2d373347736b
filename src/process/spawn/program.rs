//! Finding the program a command node runs, as `execvp` would, and checking it before
//! the clone: that it exists, is executable, and is a format the kernel will exec, so
//! that `create` reports a program that cannot start.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::super::errno_text;
use super::super::plan::SpawnPlan;

/// At most this many checked programs are remembered.
const FORMATS_KEPT: usize = 256;

/// The programs checked so far, by path, with what they were when checked.
#[derive(Default)]
pub(super) struct Programs {
    formats: HashMap<PathBuf, (FileId, bool)>,
}

impl Programs {
    /// Whether `program` (at `path`, as `meta` describes it) is known to exec: a native
    /// program, or a script whose interpreter is one. Remembered per version of the file.
    pub(super) fn known_format(&mut self, path: &Path, meta: &std::fs::Metadata) -> bool {
        let id = FileId::of(meta);
        if let Some((seen, known)) = self.formats.get(path) {
            if *seen == id {
                return *known;
            }
        }
        let known = format_known(path);
        if self.formats.len() >= FORMATS_KEPT {
            self.formats.clear();
        }
        self.formats.insert(path.to_path_buf(), (id, known));
        known
    }
}

/// Identifies a version of a file, to know when a checked program has changed.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Reads the start of the file: a native program (ELF), or a `#!` script whose
/// interpreter is an absolute path to a native program, is known to exec. Anything else
/// (a format of `binfmt_misc`, a script of a script) is left to the kernel, and its
/// spawn waits for the exec so that `create` reports a failure.
fn format_known(path: &Path) -> bool {
    fn head(path: &Path) -> Option<Vec<u8>> {
        let mut buf = Vec::with_capacity(256);
        File::open(path)
            .ok()?
            .take(256)
            .read_to_end(&mut buf)
            .ok()?;
        Some(buf)
    }
    let native = |path: &Path| {
        head(path).is_some_and(|buf| buf.starts_with(b"\x7fELF"))
            && executable(path).is_ok_and(|meta| meta.is_file())
    };
    let Some(buf) = head(path) else {
        return false;
    };
    if buf.starts_with(b"\x7fELF") {
        return true;
    }
    let Some(line) = buf.strip_prefix(b"#!".as_slice()) else {
        return false;
    };
    let Some(end) = line.iter().position(|&b| b == b'\n') else {
        return false; // longer than the kernel reads
    };
    let line = &line[..end];
    let start = line
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(line.len());
    let line = &line[start..];
    let len = line
        .iter()
        .position(|&b| b == b' ' || b == b'\t' || b == b'\r')
        .unwrap_or(line.len());
    let interpreter = Path::new(std::ffi::OsStr::from_bytes(&line[..len]));
    interpreter.is_absolute() && native(interpreter)
}

/// Where the program is, found as `execvp` would (a name with a `/` relative to the
/// node's directory, else along the node's `PATH`), and checked to be executable, so a
/// program that cannot start is reported by `create` rather than by the dying child.
pub(super) fn resolve(plan: &SpawnPlan) -> Result<(PathBuf, std::fs::Metadata), String> {
    let program = &plan.program;
    if program.as_os_str().as_bytes().contains(&b'/') {
        let path = match &plan.directory {
            Some(dir) if program.is_relative() => dir.join(program),
            _ => program.clone(),
        };
        return executable(&path)
            .map(|meta| (path, meta))
            .map_err(errno_text);
    }
    let path_var = plan
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = false;
    for dir in std::env::split_paths(&path_var) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        match executable(&candidate) {
            Ok(meta) => return Ok((candidate, meta)),
            Err(Errno::EACCES) => denied = true,
            Err(_) => {}
        }
    }
    Err(errno_text(if denied {
        Errno::EACCES
    } else {
        Errno::ENOENT
    }))
}

/// Whether `path` is a file this process may execute (as the kernel would refuse it:
/// a directory is EACCES); its metadata if so.
fn executable(path: &Path) -> Result<std::fs::Metadata, Errno> {
    let meta =
        std::fs::metadata(path).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    if meta.is_dir() {
        return Err(Errno::EACCES);
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).map(|()| meta)
}
