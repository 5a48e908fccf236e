//! The virtual phone's file system: a directory on this host that stands for the phone's
//! `/data`, `/sdcard` and `/sys`, and the processes started in it.
//!
//! Its shell is an unauthenticated shell on loopback, for tests and demos, not a security
//! boundary: phone paths in command lines are rewritten into the sandbox, and everything else
//! (`/bin`, `/proc`, `/tmp`) is this host's. The sync service (push, pull, stat, list) is held
//! inside it: [`Sandbox::resolve`] refuses `..`, paths outside the mapped prefixes and symbolic
//! links that lead out.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Phone path prefixes that live inside the sandbox.
const MAPPED: [&str; 5] = ["/data", "/sdcard", "/storage", "/sys", "/system/bin"];

/// The sandbox directory and the process groups running in it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    root: PathBuf,
    groups: Arc<Mutex<HashSet<u32>>>,
    emulator: Option<PathBuf>,
    env: Vec<(String, String)>,
    /// Phone directories whose files no command and no sync request may read (the locked
    /// profile), as host paths inside the sandbox.
    denied: Vec<PathBuf>,
}

/// Words after which the next word is still in command position (`exec ./x`, `then ./x`).
const PREFIX_WORDS: [&[u8]; 8] = [
    b"exec", b"then", b"do", b"else", b"time", b"nohup", b"command", b"!",
];

/// Whether the word starting at `i` (after an optional opening quote) is a command name: first
/// in the line, or after `;`, `|`, `&`, `(`, a newline, a backquote, or one of
/// [`PREFIX_WORDS`].
fn command_position(bytes: &[u8], i: usize) -> bool {
    let mut j = i;
    if j > 0 && matches!(bytes[j - 1], b'\'' | b'"') {
        j -= 1;
    }
    while j > 0 && matches!(bytes[j - 1], b' ' | b'\t') {
        j -= 1;
    }
    if j == 0 || matches!(bytes[j - 1], b';' | b'|' | b'&' | b'(' | b'\n' | b'`') {
        return true;
    }
    let end = j;
    while j > 0
        && !matches!(
            bytes[j - 1],
            b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'('
        )
    {
        j -= 1;
    }
    PREFIX_WORDS.contains(&&bytes[j..end]) && command_position(bytes, j)
}

/// Whether a host file starts with the ELF magic.
fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"\x7fELF")
}

fn boundary_before(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t'
            | b'\n'
            | b'\''
            | b'"'
            | b'='
            | b'('
            | b';'
            | b'|'
            | b'&'
            | b'>'
            | b'<'
            | b':'
            | b'`'
    )
}

fn boundary_after(b: Option<&u8>) -> bool {
    b.is_none_or(|&b| b == b'/' || boundary_before(b) || b == b')' || b == b'*')
}

impl Sandbox {
    /// A sandbox rooted at `root` (which must exist).
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            groups: Arc::default(),
            emulator: None,
            env: Vec::new(),
            denied: Vec::new(),
        }
    }

    /// Denies reading files beneath the phone directories `phone_dirs` (`/sys/class/thermal`…)
    /// to every command the device runs (with Linux Landlock) and to its
    /// sync service: they fail with `Permission denied`, as on a phone under SELinux. An error
    /// where the kernel cannot enforce it.
    pub fn with_denied_reads(mut self, phone_dirs: &[&str]) -> std::io::Result<Self> {
        let root = self.root.canonicalize()?;
        self.denied = phone_dirs
            .iter()
            .map(|d| root.join(d.trim_start_matches('/')))
            .collect();
        super::landlock::DenyReads::new(&self.denied)?;
        Ok(self)
    }

    /// Sets `key=value` in the environment of every command the device runs (its test hooks).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs the phone's executables under `emulator` (`qemu-aarch64-static` for an arm64
    /// phone on an x86_64 host): an ELF file inside the sandbox named in command position is
    /// started as `emulator FILE …`, the way the kernel's binfmt handler would. Files outside the
    /// sandbox (the host's `sh`, `cat`, `sha256sum`, standing for the phone's toybox) run as
    /// they are.
    pub fn with_emulator(mut self, emulator: PathBuf) -> Self {
        self.emulator = Some(emulator);
        self
    }

    /// The directory standing for `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a sync request's phone path lives in the sandbox, or why it is refused
    /// (`PermissionDenied`): not absolute, a `..` component, outside the mapped prefixes
    /// (`/data`, `/sdcard`, `/storage`, `/sys`, `/system/bin`), or through a symbolic link
    /// (the path itself or a directory on the way) that resolves outside the sandbox.
    pub fn resolve(&self, phone: &str) -> std::io::Result<PathBuf> {
        let deny = |why: &str| {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{phone:?}: {why} (the virtual device serves {} only)",
                    MAPPED.join(", ")
                ),
            ))
        };
        if !phone.starts_with('/') || phone.contains('\0') {
            return deny("not an absolute phone path");
        }
        let mut parts = Vec::new();
        for c in phone.split('/') {
            match c {
                "" | "." => {}
                ".." => return deny("`..` is not allowed"),
                c => parts.push(c),
            }
        }
        let rel = parts.join("/");
        let normal = format!("/{rel}");
        if !MAPPED
            .iter()
            .any(|m| normal == *m || normal.starts_with(&format!("{m}/")))
        {
            return deny("outside the sandbox");
        }
        let path = self.root.join(&rel);
        let root = self.root.canonicalize()?;
        if self.denied.iter().any(|d| root.join(&rel).starts_with(d)) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{phone:?}: Permission denied (the locked profile)"),
            ));
        }
        // The deepest part of the path that exists (a dangling link counts) must resolve
        // inside the root; what is created below it then is inside too (no `..`).
        let mut probe = path.as_path();
        loop {
            if probe.symlink_metadata().is_ok() {
                match probe.canonicalize() {
                    Ok(c) if c.starts_with(&root) => break,
                    _ => return deny("a symbolic link leads out of the sandbox"),
                }
            }
            match probe.parent() {
                Some(p) if p.starts_with(&self.root) => probe = p,
                _ => break,
            }
        }
        Ok(path)
    }

    /// Where a phone path named in a command line lives on this host.
    fn map_path(&self, phone: &str) -> PathBuf {
        if MAPPED
            .iter()
            .any(|m| phone == *m || phone.starts_with(&format!("{m}/")))
        {
            self.root.join(phone.trim_start_matches('/'))
        } else {
            PathBuf::from(phone)
        }
    }

    /// Rewrites phone paths in a command line into the sandbox: a mapped prefix that starts a
    /// word (after a space, quote, `=`, `;`, `|`, `&`, `(`, `<`, `>` or `:`) and ends at `/`,
    /// a word boundary or the end. With an emulator, an ELF named in command position is
    /// prefixed with it (see [`Sandbox::with_emulator`]).
    pub fn map_command(&self, cmd: &str) -> String {
        let root = self.root.display().to_string();
        let bytes = cmd.as_bytes();
        let mut out = String::with_capacity(cmd.len() + 64);
        let mut i = 0;
        'outer: while i < bytes.len() {
            if bytes[i] == b'/' && (i == 0 || boundary_before(bytes[i - 1])) {
                for m in MAPPED {
                    if cmd[i..].starts_with(m) && boundary_after(bytes.get(i + m.len())) {
                        if let Some(emu) = &self.emulator {
                            let end = cmd[i..]
                                .find(|c: char| {
                                    c.is_ascii() && (boundary_before(c as u8) || c == ')')
                                })
                                .map_or(cmd.len(), |n| i + n);
                            if command_position(bytes, i) && is_elf(&self.map_path(&cmd[i..end])) {
                                // Before the opening quote, if any, so the emulator is a word
                                // of its own.
                                let quote = (i > 0 && matches!(bytes[i - 1], b'\'' | b'"'))
                                    .then(|| out.pop())
                                    .flatten();
                                out.push_str(&emu.display().to_string());
                                out.push(' ');
                                out.extend(quote);
                            }
                        }
                        out.push_str(&root);
                        out.push_str(m);
                        i += m.len();
                        continue 'outer;
                    }
                }
            }
            let ch = cmd[i..].chars().next().unwrap_or('\u{fffd}');
            out.push(ch);
            i += ch.len_utf8().max(1);
        }
        out
    }

    /// A `sh -c` command for a phone command line, with the sandbox's environment. The caller
    /// spawns it; it runs in its own process group so the load model can find its processes
    /// and a closed stream can kill all of them.
    pub fn command(&self, phone_cmd: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new("sh");
        c.arg("-c").arg(self.map_command(phone_cmd));
        let bin = self.root.join("system/bin");
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        c.env("PATH", format!("{}:{path}", bin.display()))
            .env("HOME", self.root.join("data/local/tmp"))
            // As on Android; under the locked profile files made directly in the host's /tmp
            // after a command started could not be read back (see `landlock`).
            .env("TMPDIR", self.root.join("data/local/tmp"))
            .env("ANDROID_DATA", self.root.join("data"))
            .env("SOCBENCH_SYSFS_ROOT", &self.root)
            .current_dir(self.root.join("data/local/tmp"))
            .process_group(0);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if !self.denied.is_empty() {
            // Built now, so what was created since the device started is covered (see
            // `landlock`); a ruleset that cannot be built fails the spawn rather than run the
            // command unrestricted.
            let rules = super::landlock::DenyReads::new(&self.denied)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EPERM));
            // SAFETY: the hook makes two system calls and allocates nothing.
            #[allow(unsafe_code)]
            unsafe {
                c.pre_exec(move || match &rules {
                    Ok(r) => r.restrict_self(),
                    Err(code) => Err(std::io::Error::from_raw_os_error(*code)),
                });
            }
        }
        c
    }

    /// Records a started process group (its leader's pid).
    pub fn track(&self, pgid: u32) {
        if let Ok(mut g) = self.groups.lock() {
            g.insert(pgid);
        }
    }

    /// Forgets a finished group.
    pub fn untrack(&self, pgid: u32) {
        if let Ok(mut g) = self.groups.lock() {
            g.remove(&pgid);
        }
    }

    /// Process groups currently running.
    pub fn groups(&self) -> HashSet<u32> {
        self.groups.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Kills a command's whole tree: its process group and every descendant (some tools,
    /// `timeout` among them, move into process groups of their own).
    pub fn kill_group(&self, pgid: u32) {
        use nix::sys::signal::{Signal, kill, killpg};
        use nix::unistd::Pid;
        let mut roots = HashSet::new();
        roots.insert(pgid);
        let tree = process_tree(&roots);
        if let Ok(pid) = i32::try_from(pgid) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for p in tree.keys() {
            if let Ok(pid) = i32::try_from(*p) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// Kills every group (device shutting down).
    pub fn kill_all(&self) {
        for g in self.groups() {
            self.kill_group(g);
        }
    }
}

/// Every live process in the given process groups or descended from one of their leaders,
/// with its CPU time so far (utime + stime, in clock ticks), read from `/proc`.
pub fn process_tree(roots: &HashSet<u32>) -> std::collections::HashMap<u32, u64> {
    let mut out = std::collections::HashMap::new();
    if roots.is_empty() {
        return out;
    }
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    // (pid, ppid, pgrp, ticks)
    let mut all = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the parenthesised name: state(0) ppid(1) pgrp(2) … utime(11) stime(12).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        if let (Some(ppid), Some(pgrp), Some(ut), Some(st)) = (num(1), num(2), num(11), num(12)) {
            all.push((pid, ppid, pgrp, ut + st));
        }
    }
    let mut members: HashSet<u32> = all
        .iter()
        .filter(|(pid, _, pgrp, _)| {
            roots.contains(pid) || u32::try_from(*pgrp).is_ok_and(|g| roots.contains(&g))
        })
        .map(|(pid, ..)| *pid)
        .collect();
    // Close over descendants.
    loop {
        let before = members.len();
        for (pid, ppid, ..) in &all {
            if u32::try_from(*ppid).is_ok_and(|p| members.contains(&p)) {
                members.insert(*pid);
            }
        }
        if members.len() == before {
            break;
        }
    }
    for (pid, _, _, ticks) in all {
        if members.contains(&pid) {
            out.insert(pid, ticks);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elves_in_command_position_run_under_the_emulator() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("data/local/tmp")).unwrap();
        std::fs::write(root.join("data/local/tmp/agent"), b"\x7fELF\x02\x01rest").unwrap();
        std::fs::write(root.join("data/local/tmp/script"), b"#!/bin/sh\n").unwrap();
        let s = Sandbox::new(root.clone()).with_emulator(PathBuf::from("/usr/bin/qemu"));
        let r = root.display();
        let agent = "/data/local/tmp/agent";
        let cases = [
            (
                format!("{agent} run x"),
                format!("/usr/bin/qemu {r}{agent} run x"),
            ),
            (
                format!("'{agent}' run"),
                format!("/usr/bin/qemu '{r}{agent}' run"),
            ),
            (
                format!("cd /data; exec {agent}"),
                format!("cd {r}/data; exec /usr/bin/qemu {r}{agent}"),
            ),
            (
                format!("a && {agent}|b"),
                format!("a && /usr/bin/qemu {r}{agent}|b"),
            ),
            // Arguments are files, not commands.
            (
                format!("sha256sum {agent}"),
                format!("sha256sum {r}{agent}"),
            ),
            (
                format!("chmod 755 '{agent}'"),
                format!("chmod 755 '{r}{agent}'"),
            ),
            (
                format!("echo exec {agent}"),
                format!("echo exec {r}{agent}"),
            ),
            // Not an ELF: the shell runs it.
            (
                "/data/local/tmp/script".into(),
                format!("{r}/data/local/tmp/script"),
            ),
        ];
        for (cmd, want) in cases {
            assert_eq!(s.map_command(&cmd), want, "{cmd}");
        }
        // Without an emulator nothing is prefixed.
        assert_eq!(
            Sandbox::new(root.clone()).map_command(agent),
            format!("{r}{agent}")
        );
    }

    #[test]
    fn phone_paths_map_and_others_do_not() {
        let s = Sandbox::new(PathBuf::from("/tmp/vd"));
        assert_eq!(
            s.map_command("cat /sys/class/x; ls '/data/local/tmp' /proc/sys/kernel /system/bin/sh"),
            "cat /tmp/vd/sys/class/x; ls '/tmp/vd/data/local/tmp' /proc/sys/kernel /tmp/vd/system/bin/sh"
        );
        assert_eq!(
            s.map_command("echo /database /sysfs x/data"),
            "echo /database /sysfs x/data"
        );
        assert_eq!(
            s.map_path("/data/local/tmp/a"),
            PathBuf::from("/tmp/vd/data/local/tmp/a")
        );
        assert_eq!(s.map_path("/etc/hosts"), PathBuf::from("/etc/hosts"));
        assert_eq!(
            s.map_command("for f in /sys/devices/cpu[0-9]*/x"),
            "for f in /tmp/vd/sys/devices/cpu[0-9]*/x"
        );
    }

    #[test]
    fn sync_paths_stay_inside_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vd");
        std::fs::create_dir_all(root.join("data/local/tmp")).unwrap();
        std::fs::create_dir_all(root.join("sdcard")).unwrap();
        let s = Sandbox::new(root.clone());
        assert_eq!(
            s.resolve("/data/local/tmp/new/a.bin").unwrap(),
            root.join("data/local/tmp/new/a.bin")
        );
        assert_eq!(
            s.resolve("//data/./local").unwrap(),
            root.join("data/local")
        );
        for bad in [
            "/etc/passwd",
            "/data/../../etc/passwd",
            "/data/local/tmp/../../../x",
            "data/local/tmp/a",
            "/",
            "/proc/self/environ",
            "/database",
        ] {
            let e = s.resolve(bad).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{bad}");
            assert!(e.to_string().contains("serves /data"), "{e}");
        }
        // A link out (a directory on the way, or the file itself, dangling or not) is refused;
        // a link that stays inside is followed.
        std::os::unix::fs::symlink("/etc", root.join("data/local/tmp/out")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("sdcard/f")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", root.join("sdcard/dangling")).unwrap();
        std::os::unix::fs::symlink(root.join("data/local"), root.join("sdcard/in")).unwrap();
        for bad in [
            "/data/local/tmp/out/passwd",
            "/data/local/tmp/out/new-file",
            "/sdcard/f",
            "/sdcard/dangling",
        ] {
            let e = s.resolve(bad).unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{bad}: {e}");
        }
        assert_eq!(
            s.resolve("/sdcard/in/tmp").unwrap(),
            root.join("sdcard/in/tmp")
        );
    }
}
