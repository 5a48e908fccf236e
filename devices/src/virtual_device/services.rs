//! The services a stream can open: `shell,v2,…:cmd`, `shell:cmd`, `exec:cmd` and `sync:`.

use super::sandbox::Sandbox;
use super::stream::{Batched, StreamIn, StreamOut};
use std::io::{self, Read, Write};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

/// What an OPEN asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// Shell protocol v2: stdout, stderr and exit code as packets.
    ShellV2(String),
    /// Raw shell (`shell:`) or `exec:`: bytes both ways; `merge_stderr` for `shell:`.
    Raw { cmd: String, merge_stderr: bool },
    /// File sync.
    Sync,
}

/// Parses a service string; `None` for what this device does not offer.
pub fn parse(service: &str) -> Option<Service> {
    let service = service.trim_end_matches('\0');
    if service == "sync:" {
        return Some(Service::Sync);
    }
    if let Some(cmd) = service.strip_prefix("exec:") {
        return Some(Service::Raw {
            cmd: cmd.to_owned(),
            merge_stderr: false,
        });
    }
    let (head, cmd) = service.split_once(':')?;
    let mut parts = head.split(',');
    if parts.next()? != "shell" {
        return None;
    }
    let v2 = parts.any(|p| p == "v2");
    Some(if v2 {
        Service::ShellV2(cmd.to_owned())
    } else {
        Service::Raw {
            cmd: cmd.to_owned(),
            merge_stderr: true,
        }
    })
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn shell_packet(id: u8, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + data.len());
    p.push(id);
    p.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    p.extend_from_slice(data);
    p
}

/// Runs a command for a shell stream. Returns when the process exits or the stream closes.
pub fn run_shell(
    sandbox: &Sandbox,
    cmd: &str,
    v2: bool,
    merge_stderr: bool,
    mut input: StreamIn,
    out: Arc<StreamOut>,
) {
    let interactive = cmd.trim().is_empty();
    let mut command = sandbox.command(if interactive { "exec sh" } else { cmd });
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("sh: {e}\n");
            let _ = if v2 {
                out.write_all(&[shell_packet(2, msg.as_bytes()), shell_packet(3, &[127])].concat())
            } else {
                out.write_all(msg.as_bytes())
            };
            out.close();
            return;
        }
    };
    let pgid = child.id();
    sandbox.track(pgid);
    let mut stdin = child.stdin.take();
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        out.close();
        return;
    };
    // Host → process: stdin (v2 packets or raw bytes).
    let stdin_thread = std::thread::spawn(move || {
        if v2 {
            loop {
                let mut head = [0u8; 5];
                if input.read_exact(&mut head).is_err() {
                    break;
                }
                let Some(len) = shell_packet_len(&head) else {
                    break; // a length no client sends: the stream is not shell v2
                };
                let mut data = vec![0u8; len];
                if input.read_exact(&mut data).is_err() {
                    break;
                }
                match head[0] {
                    0 => {
                        if let Some(s) = stdin.as_mut() {
                            let _ = s.write_all(&data);
                        }
                    }
                    3 | 4 => stdin = None, // close stdin
                    _ => {}                // window size changes: no pty here
                }
            }
        } else {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Some(s) = stdin.as_mut() {
                    let _ = s.write_all(&buf[..n]);
                }
            }
        }
        drop(stdin);
    });
    // Process → host: stdout and stderr on their own threads so neither pipe fills.
    let pump = |mut r: Box<dyn Read + Send>, id: u8, out: Arc<StreamOut>| {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let payload = if v2 {
                            shell_packet(id, &buf[..n])
                        } else {
                            buf[..n].to_vec()
                        };
                        if out.write_all(&payload).is_err() {
                            break;
                        }
                    }
                }
            }
        })
    };
    let t_out = pump(Box::new(stdout), 1, Arc::clone(&out));
    let t_err = if v2 || merge_stderr {
        Some(pump(Box::new(stderr), 2, Arc::clone(&out)))
    } else {
        // exec: stderr is not sent; drain it so the process never blocks on it.
        std::thread::spawn(move || {
            let _ = io::copy(&mut stderr, &mut io::sink());
        });
        None
    };
    // Wait for the process, killing its group if the host closes the stream first.
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(exit_code(status)),
            Ok(None) => {}
            Err(_) => break None,
        }
        if out.closed.load(std::sync::atomic::Ordering::Relaxed) {
            sandbox.kill_group(pgid);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let _ = t_out.join();
    if let Some(t) = t_err {
        let _ = t.join();
    }
    // Background processes left in the group by the command are ended with it, as adbd does.
    sandbox.kill_group(pgid);
    sandbox.untrack(pgid);
    if let (Some(code), true) = (code, v2) {
        let _ = out.write_all(&shell_packet(
            3,
            &[u8::try_from(code & 0xff).unwrap_or(255)],
        ));
    }
    out.close();
    drop(stdin_thread);
}

// ---- sync ----

const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

struct StatV2 {
    error: u32,
    dev: u64,
    ino: u64,
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    size: u64,
    atime: i64,
    mtime: i64,
    ctime: i64,
}

fn copy_err(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

/// The stat of a resolved path; a refused one reports `EACCES`, as a phone does for a path
/// its shell user may not see.
fn stat_v2(path: &io::Result<std::path::PathBuf>, follow: bool) -> StatV2 {
    use std::os::unix::fs::MetadataExt;
    let md = match path {
        Err(_) => Err(io::Error::from_raw_os_error(13)),
        Ok(path) if follow => std::fs::metadata(path),
        Ok(path) => std::fs::symlink_metadata(path),
    };
    match md {
        Ok(m) => StatV2 {
            error: 0,
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            nlink: u32::try_from(m.nlink()).unwrap_or(u32::MAX),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            atime: m.atime(),
            mtime: m.mtime(),
            ctime: m.ctime(),
        },
        Err(e) => StatV2 {
            error: u32::try_from(e.raw_os_error().unwrap_or(2)).unwrap_or(2),
            dev: 0,
            ino: 0,
            mode: 0,
            nlink: 0,
            uid: 0,
            gid: 0,
            size: 0,
            atime: 0,
            mtime: 0,
            ctime: 0,
        },
    }
}

fn put_stat_v2(buf: &mut Vec<u8>, s: &StatV2) {
    buf.extend_from_slice(&s.error.to_le_bytes());
    buf.extend_from_slice(&s.dev.to_le_bytes());
    buf.extend_from_slice(&s.ino.to_le_bytes());
    buf.extend_from_slice(&s.mode.to_le_bytes());
    buf.extend_from_slice(&s.nlink.to_le_bytes());
    buf.extend_from_slice(&s.uid.to_le_bytes());
    buf.extend_from_slice(&s.gid.to_le_bytes());
    buf.extend_from_slice(&s.size.to_le_bytes());
    buf.extend_from_slice(&s.atime.to_le_bytes());
    buf.extend_from_slice(&s.mtime.to_le_bytes());
    buf.extend_from_slice(&s.ctime.to_le_bytes());
}

fn u32_of(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn fail(msg: &str) -> Vec<u8> {
    let mut b = b"FAIL".to_vec();
    b.extend_from_slice(&u32_of(msg.len() as u64).to_le_bytes());
    b.extend_from_slice(msg.as_bytes());
    b
}

/// Largest DATA chunk of the sync protocol.
const SYNC_DATA_MAX: usize = 64 * 1024;

/// Serves the sync protocol until QUIT or the stream closes.
pub fn run_sync(sandbox: &Sandbox, mut input: StreamIn, out: Arc<StreamOut>) {
    let result = sync_loop(sandbox, &mut input, &out);
    if let Err(e) = result
        && e.kind() != io::ErrorKind::UnexpectedEof
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        let _ = out.write_all(&fail(&e.to_string()));
    }
    out.close();
}

/// The largest shell v2 packet accepted from the host (adb sends stdin in packets of at most
/// its 256 KiB payload); the length is the client's word, so it is bounded before allocating.
const SHELL_PACKET_MAX: usize = 1 << 20;

/// The payload length of a shell v2 packet header (id, then a little-endian `u32`), if within
/// [`SHELL_PACKET_MAX`].
fn shell_packet_len(head: &[u8; 5]) -> Option<usize> {
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    (len <= SHELL_PACKET_MAX).then_some(len)
}

fn read_req(input: &mut StreamIn) -> io::Result<([u8; 4], u32)> {
    let mut h = [0u8; 8];
    input.read_exact(&mut h)?;
    Ok((
        [h[0], h[1], h[2], h[3]],
        u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
    ))
}

/// The longest path a sync request may name (adb's own limit).
const SYNC_PATH_MAX: u32 = 1024;

fn read_path(input: &mut StreamIn, len: u32) -> io::Result<String> {
    if len > SYNC_PATH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sync path of {len} bytes exceeds {SYNC_PATH_MAX}"),
        ));
    }
    let mut p = vec![0u8; len as usize];
    input.read_exact(&mut p)?;
    Ok(String::from_utf8_lossy(&p).into_owned())
}

fn sync_loop(sandbox: &Sandbox, input: &mut StreamIn, out: &StreamOut) -> io::Result<()> {
    loop {
        let (id, len) = read_req(input)?;
        match &id {
            b"QUIT" => return Ok(()),
            b"STAT" => {
                let s = stat_v2(&sandbox.resolve(&read_path(input, len)?), true);
                let mut b = b"STAT".to_vec();
                b.extend_from_slice(&s.mode.to_le_bytes());
                b.extend_from_slice(&u32_of(s.size).to_le_bytes());
                b.extend_from_slice(&u32_of(u64::try_from(s.mtime).unwrap_or(0)).to_le_bytes());
                out.write_all(&b)?;
            }
            b"STA2" | b"LST2" => {
                let s = stat_v2(&sandbox.resolve(&read_path(input, len)?), &id == b"STA2");
                let mut b = id.to_vec();
                put_stat_v2(&mut b, &s);
                out.write_all(&b)?;
            }
            b"LIST" | b"LIS2" => {
                // A refused directory lists as empty, as one the phone's user cannot read.
                let p = sandbox.resolve(&read_path(input, len)?);
                let v2 = &id == b"LIS2";
                let mut w = Batched::new(out, SYNC_DATA_MAX);
                let mut names: Vec<String> = p
                    .as_ref()
                    .map_err(|e| io::Error::new(e.kind(), e.to_string()))
                    .and_then(std::fs::read_dir)
                    .map(|rd| {
                        rd.filter_map(|e| {
                            e.ok().map(|e| e.file_name().to_string_lossy().into_owned())
                        })
                        .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                let entries = if p.is_ok() {
                    vec![".".to_owned(), "..".to_owned()]
                } else {
                    Vec::new()
                };
                for name in entries.into_iter().chain(names) {
                    let s = stat_v2(&p.as_ref().map(|d| d.join(&name)).map_err(copy_err), false);
                    let mut b = Vec::new();
                    if v2 {
                        b.extend_from_slice(b"DNT2");
                        put_stat_v2(&mut b, &s);
                    } else {
                        b.extend_from_slice(b"DENT");
                        b.extend_from_slice(&s.mode.to_le_bytes());
                        b.extend_from_slice(&u32_of(s.size).to_le_bytes());
                        b.extend_from_slice(
                            &u32_of(u64::try_from(s.mtime).unwrap_or(0)).to_le_bytes(),
                        );
                    }
                    b.extend_from_slice(&u32_of(name.len() as u64).to_le_bytes());
                    b.extend_from_slice(name.as_bytes());
                    w.write_all(&b)?;
                }
                let mut done = b"DONE".to_vec();
                done.resize(if v2 { 76 } else { 20 }, 0);
                w.write_all(&done)?;
                w.flush()?;
            }
            b"SEND" => {
                let spec = read_path(input, len)?;
                let (path, mode) = match spec.rsplit_once(',') {
                    Some((p, m)) => (p.to_owned(), m.parse::<u32>().unwrap_or(0o644)),
                    None => (spec.clone(), 0o644),
                };
                let mode = if mode & S_IFLNK == S_IFLNK && mode & S_IFREG != S_IFREG {
                    0o644
                } else {
                    mode
                };
                let reply = receive_file(sandbox.resolve(&path), mode & 0o7777, input)?;
                out.write_all(&reply)?;
            }
            b"RECV" => match sandbox.resolve(&read_path(input, len)?) {
                Ok(p) => send_file(&p, out)?,
                Err(e) => out.write_all(&fail(&e.to_string()))?,
            },
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown sync request {:?}", String::from_utf8_lossy(other)),
                ));
            }
        }
    }
}

/// Reads DATA… DONE from the host into `path` (consumed, then refused with FAIL when the path
/// was); returns the OKAY or FAIL reply.
fn receive_file(
    path: io::Result<std::path::PathBuf>,
    mode: u32,
    input: &mut StreamIn,
) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let mut error: Option<String> = None;
    let path = path.unwrap_or_else(|e| {
        error = Some(e.to_string());
        std::path::PathBuf::new()
    });
    let tmp = path.with_extension("socbench-partial");
    let mut file = if error.is_some() {
        None
    } else {
        path.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(&tmp))
            .map_err(|e| error = Some(format!("{}: {e}", path.display())))
            .ok()
    };
    loop {
        let (id, len) = read_req(input)?;
        match &id {
            b"DATA" => {
                if len > SYNC_DATA_MAX as u32 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("sync DATA of {len} bytes exceeds {SYNC_DATA_MAX}"),
                    ));
                }
                let mut remaining = len as usize;
                let mut buf = vec![0u8; remaining.min(SYNC_DATA_MAX * 4)];
                while remaining > 0 {
                    let n = remaining.min(buf.len());
                    input.read_exact(&mut buf[..n])?;
                    if let Some(f) = file.as_mut()
                        && let Err(e) = f.write_all(&buf[..n])
                    {
                        error = Some(format!("{}: {e}", path.display()));
                        file = None;
                    }
                    remaining -= n;
                }
            }
            b"DONE" => {
                // `len` is the mtime here.
                drop(file);
                if let Some(e) = error {
                    if !tmp.as_os_str().is_empty() {
                        let _ = std::fs::remove_file(&tmp);
                    }
                    return Ok(fail(&e));
                }
                let finish = std::fs::rename(&tmp, &path).and_then(|()| {
                    std::fs::set_permissions(
                        &path,
                        std::fs::Permissions::from_mode(mode.max(0o600)),
                    )
                });
                if let Ok(f) = std::fs::File::options().write(true).open(&path) {
                    let t = UNIX_EPOCH + std::time::Duration::from_secs(u64::from(len));
                    let _ = f.set_modified(t);
                }
                return Ok(match finish {
                    Ok(()) => {
                        let mut ok = b"OKAY".to_vec();
                        ok.extend_from_slice(&0u32.to_le_bytes());
                        ok
                    }
                    Err(e) => fail(&format!("{}: {e}", path.display())),
                });
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "unexpected {:?} during SEND",
                        String::from_utf8_lossy(other)
                    ),
                ));
            }
        }
    }
}

/// Sends `path` as DATA… DONE, or FAIL.
fn send_file(path: &std::path::Path, out: &StreamOut) -> io::Result<()> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) if std::fs::metadata(path).is_ok_and(|m| m.is_file()) => f,
        Ok(_) => return out.write_all(&fail(&format!("{}: not a regular file", path.display()))),
        Err(e) => return out.write_all(&fail(&format!("{}: {e}", path.display()))),
    };
    let mut buf = vec![0u8; SYNC_DATA_MAX];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut b = Vec::with_capacity(8 + n);
        b.extend_from_slice(b"DATA");
        b.extend_from_slice(&u32_of(n as u64).to_le_bytes());
        b.extend_from_slice(&buf[..n]);
        out.write_all(&b)?;
    }
    let mut done = b"DONE".to_vec();
    done.extend_from_slice(&0u32.to_le_bytes());
    out.write_all(&done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_packets_longer_than_the_bound_are_refused() {
        assert_eq!(shell_packet_len(&[0, 16, 0, 0, 0]), Some(16));
        assert_eq!(shell_packet_len(&[0, 0, 0, 16, 0]), Some(SHELL_PACKET_MAX));
        assert_eq!(shell_packet_len(&[0, 1, 0, 16, 0]), None);
        assert_eq!(shell_packet_len(&[0, 255, 255, 255, 255]), None);
    }

    #[test]
    fn services_parse() {
        assert_eq!(parse("sync:\0"), Some(Service::Sync));
        assert_eq!(
            parse("shell,v2,TERM=xterm,raw:echo hi"),
            Some(Service::ShellV2("echo hi".into()))
        );
        assert_eq!(
            parse("shell:ls"),
            Some(Service::Raw {
                cmd: "ls".into(),
                merge_stderr: true
            })
        );
        assert_eq!(
            parse("exec:cat /x"),
            Some(Service::Raw {
                cmd: "cat /x".into(),
                merge_stderr: false
            })
        );
        assert_eq!(parse("framebuffer:"), None);
        assert_eq!(parse("reverse:forward:tcp:1;tcp:2"), None);
    }
}
