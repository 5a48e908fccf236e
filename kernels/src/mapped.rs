//! The bytes of a model file: mapped from disk, or owned (the synthetic model, tests).
//!
//! A model file is mapped rather than read, so that opening it costs nothing and only the
//! pages the loader touches are read. Once a tensor has been converted to the form the model
//! runs ([`FileBytes::release`]), its pages are handed back to the kernel, so the process never
//! holds the file and the converted weights at once: the peak resident memory of loading is
//! the converted model plus about one tensor.

// The one module of this crate that maps memory: `memmap2`'s map and `madvise` calls are
// `unsafe` because another process could change the file while it is mapped.
#![allow(unsafe_code)]

use std::fs::File;
use std::ops::Range;

/// A file's bytes.
#[derive(Debug)]
pub(crate) enum FileBytes {
    /// Read-only, private map of a file.
    Mapped(memmap2::Mmap),
    /// Bytes in memory.
    Owned(Vec<u8>),
}

impl FileBytes {
    /// Maps `file` read-only.
    pub(crate) fn map(file: &File) -> std::io::Result<Self> {
        if file.metadata()?.len() == 0 {
            // An empty map is an error on some systems; an empty file is simply truncated.
            return Ok(Self::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only and private. Its contents can change under us only if
        // another process writes the file while it is mapped, which socbench never does: model
        // files and its llama.cpp cache are written elsewhere and renamed into place. Every
        // read is bounds-checked against the length taken here. (llama.cpp maps model files
        // the same way.)
        let map = unsafe { memmap2::Mmap::map(file)? };
        #[cfg(unix)]
        {
            // Loading reads the file front to back; a failed hint changes nothing.
            let _ = map.advise(memmap2::Advice::Sequential);
        }
        Ok(Self::Mapped(map))
    }

    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
        }
    }

    /// Maps the pages of `range` in one call (`MADV_POPULATE_READ`, Linux 5.14+) rather than
    /// one page fault at a time as the loader reads them; a kernel without it (older Android)
    /// just faults them in.
    pub(crate) fn populate(&self, range: Range<usize>) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Self::Mapped(map) = self
            && range.end <= map.len()
            && !range.is_empty()
        {
            let _ = map.advise_range(memmap2::Advice::PopulateRead, range.start, range.len());
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = range;
    }

    /// Tells the kernel that `range` will not be read again soon, so its pages leave this
    /// process's resident set (they stay in the page cache, and a later read maps them back).
    /// Owned bytes are kept: they are the synthetic model's few kilobytes.
    pub(crate) fn release(&self, range: Range<usize>) {
        #[cfg(unix)]
        if let Self::Mapped(map) = self
            && range.end <= map.len()
            && !range.is_empty()
        {
            // SAFETY: on a private, read-only file map `MADV_DONTNEED` drops the pages of the
            // range from this process; the next access reads the file again, so every slice
            // handed out stays valid and keeps its contents. memmap2 checks the range against
            // the map and aligns its start down to a page. A failure only leaves pages resident.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    range.start,
                    range.len(),
                )
            };
        }
        #[cfg(not(unix))]
        let _ = range;
    }
}
