//! The process's own memory: how many malloc arenas it keeps, giving freed
//! heap back to the kernel, and letting go of code pages that only the start
//! needed. glibc-specific tunables; elsewhere these do nothing.

/// glibc gives every thread its own malloc arena; with a handful of threads
/// that leaves freed memory stranded. Two arenas keep resident memory low at
/// no measurable cost here. Call before any thread starts.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Give the kernel back the free pages of every malloc arena. glibc only
/// returns the top of its main heap on its own; the buffers of a burst of
/// calls, freed in the middle of an arena, stay resident until this.
pub fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' locks itself; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Unmap from this process the resident pages of the executable's and its
/// libraries' code and read-only data that were never written (so are still
/// the file's pages): the start-up ran code that a running server never runs
/// again (argument parsing, the policy's compiler, migrations, schemas), and
/// it stays resident otherwise. Pages the server does use fault back in from
/// the page cache the next time they run. (The kernel drops such clean pages
/// by itself under memory pressure; this only does it early.) Mappings with
/// any written page (relocated data: dropping it would bring back the
/// unrelocated file contents) are left alone, as are writable ones. Returns
/// the KiB dropped (also logged at debug level).
pub fn drop_clean_file_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return 0;
        };
        let mut dropped = 0;
        for mapping in file_mappings(&smaps) {
            if !mapping.never_written() {
                continue;
            }
            // SAFETY: the range is a whole mapping of a file that this process
            // never wrote (no anonymous pages, no write permission): dropping
            // its pages only makes later accesses read them again from the file.
            let done = unsafe {
                libc::madvise(
                    mapping.start as *mut libc::c_void,
                    mapping.end - mapping.start,
                    libc::MADV_DONTNEED,
                )
            };
            if done == 0 {
                dropped += mapping.rss_kib;
            }
        }
        tracing::debug!(dropped_kib = dropped, "clean file pages dropped");
        dropped
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// One file-backed mapping from `/proc/self/smaps`.
#[derive(Debug, PartialEq)]
struct FileMapping<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    path: &'a str,
    rss_kib: usize,
    anonymous_kib: usize,
}

impl FileMapping<'_> {
    fn never_written(&self) -> bool {
        self.perms.starts_with('r')
            && self.perms.as_bytes().get(1) == Some(&b'-')
            && self.perms.ends_with('p')
            && self.anonymous_kib == 0
    }
}

/// The file-backed mappings of an smaps text (header line, then fields).
fn file_mappings(smaps: &str) -> Vec<FileMapping<'_>> {
    let mut out: Vec<FileMapping<'_>> = Vec::new();
    let mut current: Option<FileMapping<'_>> = None;
    for line in smaps.lines() {
        if let Some((field, value)) = line.split_once(':')
            && !field.contains(' ')
            && !field.contains('-')
        {
            if let Some(m) = current.as_mut() {
                let kib = value.trim().trim_end_matches(" kB").parse().unwrap_or(0);
                match field {
                    "Rss" => m.rss_kib = kib,
                    "Anonymous" => m.anonymous_kib = kib,
                    _ => {}
                }
            }
            continue;
        }
        out.extend(current.take());
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        let path = parts.nth(3).unwrap_or("");
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        current = Some(FileMapping {
            start,
            end,
            perms,
            path,
            rss_kib: 0,
            anonymous_kib: 0,
        });
    }
    out.extend(current);
    out.retain(|m| m.path.starts_with('/'));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d4c0a00000-55d4c0b00000 r--p 00000000 fd:01 1234                       /usr/bin/arbiter
Size:               1024 kB
Rss:                 120 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
55d4c0b00000-55d4c0c00000 r-xp 00100000 fd:01 1234                       /usr/bin/arbiter
Rss:                 900 kB
Anonymous:             0 kB
55d4c0c00000-55d4c0c10000 r--p 00200000 fd:01 1234                       /usr/bin/arbiter
Rss:                  64 kB
Anonymous:            64 kB
55d4c0c10000-55d4c0c20000 rw-p 00210000 fd:01 1234                       /usr/bin/arbiter
Rss:                   8 kB
Anonymous:             8 kB
7f0000000000-7f0000008000 rw-s 00000000 fd:01 99                         /w/.arbiter/arbiter.db-shm
Rss:                  32 kB
Anonymous:             0 kB
7f0000010000-7f0000020000 rw-p 00000000 00:00 0 
Rss:                  64 kB
Anonymous:            64 kB
7ffc00000000-7ffc00002000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn smaps_file_mappings_are_read_with_their_counts() {
        let mappings = file_mappings(SMAPS);
        let summary: Vec<_> = mappings
            .iter()
            .map(|m| {
                (
                    m.start,
                    m.end - m.start,
                    m.perms,
                    m.path,
                    m.rss_kib,
                    m.anonymous_kib,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (0x55d4c0a00000, 0x100000, "r--p", "/usr/bin/arbiter", 120, 0),
                (0x55d4c0b00000, 0x100000, "r-xp", "/usr/bin/arbiter", 900, 0),
                (0x55d4c0c00000, 0x10000, "r--p", "/usr/bin/arbiter", 64, 64),
                (0x55d4c0c10000, 0x10000, "rw-p", "/usr/bin/arbiter", 8, 8),
                (
                    0x7f0000000000,
                    0x8000,
                    "rw-s",
                    "/w/.arbiter/arbiter.db-shm",
                    32,
                    0
                ),
            ]
        );
    }

    #[test]
    fn only_unwritten_private_read_only_file_mappings_are_dropped() {
        let dropped: Vec<_> = file_mappings(SMAPS)
            .into_iter()
            .filter(FileMapping::never_written)
            .map(|m| m.perms)
            .collect();
        // Not the relocated read-only data (anonymous pages), not the
        // writable data, not the shared database mapping.
        assert_eq!(dropped, ["r--p", "r-xp"]);
    }

    fn resident_file_kib() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn dropping_clean_file_pages_lowers_resident_file_memory_and_code_still_runs() {
        // Fault in some of this test binary's code and data first.
        let before_text: String = (0..1000).map(|i| format!("{i:x}")).collect();
        let before = resident_file_kib();
        let dropped = drop_clean_file_pages();
        let after = resident_file_kib();
        assert!(dropped > 0, "nothing was dropped");
        assert!(
            after < before,
            "RssFile {before} kB before, {after} kB after"
        );
        // The same code and read-only data, faulted back in from the files.
        let after_text: String = (0..1000).map(|i| format!("{i:x}")).collect();
        assert_eq!(before_text, after_text);
        assert!(serde_json::from_str::<serde_json::Value>(r#"{"a":[1,2]}"#).is_ok());
    }
}
