//! Letting go of the code that only start-up ran.
//!
//! Starting a supervisor runs a great deal of code once: parsing the command line,
//! building Rhai's packages and compiling the scripts. The kernel maps each page of a
//! program's code as it is first run (and its neighbours with it), and they stay in the
//! process's resident set for as long as it lives: about 4 MiB of this program's 7 MiB
//! of code, where a serving supervisor runs a few hundred KiB of it.
//!
//! So once start-up is over, `drop_startup_pages` drops the process's mappings of pages
//! that are copies of files: read-only private mappings of which no page was ever
//! written (`Anonymous: 0` in `/proc/self/smaps`; a file page may still count as dirty
//! while the file itself waits to be written back, as a freshly built program does). The pages stay in the page cache; what runs
//! afterwards is mapped again by a minor fault, so the resident set becomes the code
//! that serving actually runs. A mapping with a written page (relocated read-only data,
//! RELRO) is left alone: dropping it would bring back the file's unrelocated bytes.

/// Drops the page-table entries of clean, read-only file mappings; returns the KiB that
/// were resident in them.
pub fn drop_startup_pages() -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut dropped = 0;
    let mut mapping: Option<Mapping> = None;
    for line in smaps.lines() {
        if let Some(next) = Mapping::parse(line) {
            if let Some(done) = mapping.take() {
                dropped += done.drop_if_clean();
            }
            mapping = Some(next);
            continue;
        }
        let Some(current) = mapping.as_mut() else {
            continue;
        };
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        match key {
            "Rss:" => current.rss = value,
            "Anonymous:" => current.anonymous = value,
            _ => {}
        }
    }
    if let Some(done) = mapping {
        dropped += done.drop_if_clean();
    }
    dropped
}

struct Mapping {
    start: usize,
    end: usize,
    /// Read-only, private, and backed by a file.
    candidate: bool,
    rss: u64,
    anonymous: u64,
}

impl Mapping {
    /// A mapping's header line: `START-END PERMS OFFSET DEV INODE [PATH]`.
    fn parse(line: &str) -> Option<Mapping> {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        let perms = fields.next()?;
        if perms.len() != 4 {
            return None;
        }
        let _offset = fields.next()?;
        let _device = fields.next()?;
        let inode: u64 = fields.next()?.parse().ok()?;
        let path = fields.next().unwrap_or("");
        let candidate = perms.as_bytes()[1] == b'-'
            && perms.ends_with('p')
            && inode != 0
            && path.starts_with('/');
        Some(Mapping {
            start,
            end,
            candidate,
            rss: 0,
            anonymous: 0,
        })
    }

    fn drop_if_clean(&self) -> u64 {
        if !self.candidate || self.anonymous != 0 || self.rss == 0 {
            return 0;
        }
        // SAFETY: the range is a whole mapping of this process that is read-only, private
        // and has no written page: every page is the file's own, so dropping the entries
        // loses nothing, and the next access maps the same bytes again.
        let done = unsafe {
            nix::libc::madvise(
                self.start as *mut nix::libc::c_void,
                self.end - self.start,
                nix::libc::MADV_DONTNEED,
            )
        };
        if done == 0 { self.rss } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_clean_code_and_keeps_running() {
        let dropped = drop_startup_pages();
        assert!(dropped > 0, "nothing was dropped");
        // The code that runs next is mapped again.
        let text: String = (0..1000).map(|i| format!("{i}")).collect();
        assert!(text.len() > 1000);
        assert!(
            Mapping::parse("00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/x")
                .is_some_and(|m| m.candidate)
        );
        assert!(
            Mapping::parse("00400000-00452000 rw-p 00000000 08:02 173521 /usr/bin/x")
                .is_some_and(|m| !m.candidate)
        );
        assert!(
            Mapping::parse("7ffd-7ffe r--p 00000000 00:00 0 [vvar]").is_some_and(|m| !m.candidate)
        );
        assert!(Mapping::parse("Rss:                 480 kB").is_none());
    }
}
