//! Denies file reads under chosen directories to the commands the virtual device runs, with
//! Linux's Landlock: the locked profile's battery and thermal nodes then fail with `Permission
//! denied`, as they do for `adb shell` under SELinux on recent phones. Landlock binds root
//! too (file modes would not: the tests may run as root), and it is inherited by everything a
//! restricted process starts.
//!
//! Landlock grants, it cannot subtract: the ruleset handles file reads and allows them beneath
//! every directory entry from `/` down that is not a denied directory or on the way to one.
//! The ruleset is built when each command starts: what exists then beside the path to a denied
//! directory (`/tmp/…`, the state directory) is readable, including later files beneath it,
//! but a file a command creates later directly in a directory on that path is not (the sandbox
//! points `TMPDIR` inside it). Only reads are handled: writes, renames and links are left
//! alone.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `LANDLOCK_ACCESS_FS_READ_FILE`.
const READ_FILE: u64 = 1 << 2;
/// `LANDLOCK_RULE_PATH_BENEATH`.
const PATH_BENEATH: libc::c_int = 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// A Landlock ruleset that allows reading files everywhere but beneath the denied directories.
#[derive(Debug)]
pub struct DenyReads(OwnedFd);

impl DenyReads {
    /// The ruleset for `denied` (absolute, canonical directories); an error where the kernel
    /// has no Landlock.
    pub fn new(denied: &[PathBuf]) -> io::Result<Self> {
        let attr = RulesetAttr {
            handled_access_fs: READ_FILE,
        };
        // SAFETY: the attribute struct is valid for its size; the call returns a new file
        // descriptor (owned below) or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                std::mem::size_of::<RulesetAttr>(),
                0u32,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "the locked profile denies sysfs reads with Landlock, which this kernel \
                     refuses ({e}); it needs Linux 5.13+ with Landlock enabled"
                ),
            ));
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("file descriptor out of range"))?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nothing else.
        let ruleset = Self(unsafe { OwnedFd::from_raw_fd(fd) });
        ruleset.allow_beside(Path::new("/"), denied)?;
        Ok(ruleset)
    }

    /// Allows reads beneath each entry of `dir`, recursing into those on the way to a denied
    /// directory and skipping the denied ones.
    fn allow_beside(&self, dir: &Path, denied: &[PathBuf]) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if denied.contains(&path) {
                continue;
            }
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if is_dir && denied.iter().any(|d| d.starts_with(&path)) {
                self.allow_beside(&path, denied)?;
            } else {
                self.allow(&path);
            }
        }
        Ok(())
    }

    /// Allows reads beneath `path` (an entry that vanished or cannot be opened is left out:
    /// nothing can be read there anyway).
    fn allow(&self, path: &Path) {
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            // The entry itself, not what a symbolic link points at: a link to `/` beside the
            // sandbox would otherwise allow the whole tree, denied directories included. A
            // link gets no rule (reads through it are checked on the resolved path).
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
        else {
            return;
        };
        let is_dir = file.metadata().is_ok_and(|m| m.is_dir());
        // A rule on a file may only carry file rights, a rule on anything else none.
        let is_file = file.metadata().is_ok_and(|m| m.is_file());
        if !is_dir && !is_file {
            return;
        }
        let attr = PathBeneathAttr {
            allowed_access: READ_FILE,
            parent_fd: file.as_raw_fd(),
        };
        // SAFETY: the attribute is valid for the call; both descriptors are open. A rule the
        // kernel refuses leaves that entry unreadable: stricter, never looser.
        unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.0.as_raw_fd(),
                PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0u32,
            );
        }
    }

    /// Restricts the calling process (and all it starts) to the ruleset. Meant for a child
    /// between fork and exec: it only makes two system calls.
    pub fn restrict_self(&self) -> io::Result<()> {
        // SAFETY: plain system calls on integers; no memory is touched.
        unsafe {
            let (one, zero): (libc::c_ulong, libc::c_ulong) = (1, 0);
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, self.0.as_raw_fd(), 0u32) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
