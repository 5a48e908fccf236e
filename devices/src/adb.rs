//! Android devices behind adb servers, through `adb_client`, and the few host queries
//! (`host:devices-l`, `host:connect`) socbench makes itself so that asking a remote or
//! non-default server never starts a stray local server on 5037.
//!
//! Exit status is carried in-band: every command runs as `cmd; printf '\n<marker><status>\n'`
//! with a marker unique to the call, so the status survives servers and devices without
//! shell protocol v2, and a stream that ends without the marker means the device went away.

use crate::device::{CommandOutput, Device, PushOutcome, WATCH_TICK, Watch, local_sha256};
use crate::error::{DeviceError, Result};
use crate::info::{DeviceInfo, DeviceKind};
use adb_client::ADBDeviceExt;
use adb_client::server_device::ADBServerDevice;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// The adb server socbench talks to when none is configured: `127.0.0.1` on
/// `ANDROID_ADB_SERVER_PORT`, else 5037.
pub fn default_server() -> SocketAddrV4 {
    let port = std::env::var("ANDROID_ADB_SERVER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5037);
    SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port)
}

/// Parses `HOST:PORT` (a name is resolved to its first IPv4 address).
pub fn parse_server(s: &str) -> std::result::Result<SocketAddrV4, String> {
    let bad =
        || format!("adb server `{s}`: expected HOST:PORT, e.g. 127.0.0.1:5037 or farm-3:5037");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("adb server `{s}`: {e}"))?
        .find_map(|a| match a {
            std::net::SocketAddr::V4(v4) => Some(v4),
            std::net::SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("adb server `{s}`: no IPv4 address"))
}

fn server_err(server: SocketAddrV4, detail: impl Into<String>) -> DeviceError {
    DeviceError::Server {
        server: server.to_string(),
        detail: detail.into(),
    }
}

/// One request of the adb server's smart-socket protocol; returns the reply payload.
fn host_request(server: SocketAddrV4, request: &str, read_payload: bool) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&server.into(), Duration::from_secs(5)).map_err(|e| {
        server_err(
            server,
            format!("cannot connect ({e}); is an adb server running there? (`adb -P PORT start-server`)"),
        )
    })?;
    let io = |e: std::io::Error| server_err(server, e.to_string());
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(io)?;
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    s.write_all(format!("{:04x}{request}", request.len()).as_bytes())
        .map_err(io)?;
    let mut status = [0u8; 4];
    s.read_exact(&mut status).map_err(io)?;
    let read_len_prefixed = |s: &mut TcpStream| -> Result<String> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).map_err(io)?;
        let n = usize::from_str_radix(std::str::from_utf8(&len).unwrap_or("x"), 16)
            .map_err(|_| server_err(server, "malformed length in reply"))?;
        let mut body = vec![0u8; n];
        s.read_exact(&mut body).map_err(io)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    match &status {
        b"OKAY" if read_payload => read_len_prefixed(&mut s),
        b"OKAY" => Ok(String::new()),
        b"FAIL" => Err(server_err(server, read_len_prefixed(&mut s)?)),
        other => Err(server_err(
            server,
            format!("unexpected reply {:?}", String::from_utf8_lossy(other)),
        )),
    }
}

/// A device as an adb server lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdbEntry {
    /// Serial.
    pub serial: String,
    /// `device`, `offline`, `unauthorized`, `recovery`…
    pub state: String,
    /// The server it was listed by.
    pub server: String,
    /// `key:value` details of `devices -l` (product, model, device, transport_id).
    pub details: Vec<(String, String)>,
}

/// Lists the devices of one adb server (`adb devices -l`).
pub fn list_devices(server: SocketAddrV4) -> Result<Vec<AdbEntry>> {
    let text = host_request(server, "host:devices-l", true)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let serial = words.next()?.to_owned();
            let state = words.next()?.to_owned();
            let details = words
                .filter_map(|w| w.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            Some(AdbEntry {
                serial,
                state,
                server: server.to_string(),
                details,
            })
        })
        .collect())
}

/// `adb connect ADDR` through the server; returns its message.
pub fn connect(server: SocketAddrV4, addr: &str) -> Result<String> {
    let msg = host_request(server, &format!("host:connect:{addr}"), true)?;
    if msg.contains("connected to") {
        Ok(msg)
    } else {
        Err(server_err(server, msg))
    }
}

/// `adb disconnect ADDR`.
pub fn disconnect(server: SocketAddrV4, addr: &str) -> Result<String> {
    host_request(server, &format!("host:disconnect:{addr}"), true)
}

/// An Android device behind an adb server.
#[derive(Debug, Clone)]
pub struct AdbDevice {
    serial: String,
    server: SocketAddrV4,
}

fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        t & 0xffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

enum Event {
    Line(Vec<u8>),
    Done(std::result::Result<(), String>, Vec<u8>),
}

/// Splits written bytes into lines and forwards them.
struct LineSink {
    tx: std::sync::mpsc::Sender<Event>,
    partial: Vec<u8>,
}

impl Write for LineSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let _ = self.tx.send(Event::Line(line));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AdbDevice {
    /// A device on `server`. Nothing is contacted until the first operation.
    pub fn new(serial: &str, server: SocketAddrV4) -> Self {
        Self {
            serial: serial.to_owned(),
            server,
        }
    }

    /// The server it is reached through.
    pub fn server(&self) -> SocketAddrV4 {
        self.server
    }

    fn client(&self) -> ADBServerDevice {
        ADBServerDevice::new(self.serial.clone(), Some(self.server))
    }

    fn map_err(&self, what: &str, e: impl std::fmt::Display) -> DeviceError {
        let detail = e.to_string();
        let lower = detail.to_lowercase();
        if lower.contains("not found") || lower.contains("offline") || lower.contains("no devices")
        {
            DeviceError::NotFound {
                serial: self.serial.clone(),
                detail: format!("{what}: {detail}"),
            }
        } else if lower.contains("connection refused") {
            server_err(self.server, format!("{what}: {detail}"))
        } else {
            DeviceError::Disconnected {
                serial: self.serial.clone(),
                detail: format!("{what}: {detail}"),
            }
        }
    }

    /// Runs `f` on a worker thread with a time limit: a device that stops answering never
    /// hangs the caller (the worker ends when the server drops the connection).
    fn with_timeout<T: Send + 'static>(
        &self,
        what: &str,
        timeout: Duration,
        f: impl FnOnce(ADBServerDevice) -> std::result::Result<T, String> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = channel();
        let client = self.client();
        std::thread::spawn(move || {
            let _ = tx.send(f(client));
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_err(what, e)),
            Err(RecvTimeoutError::Timeout) => Err(DeviceError::Timeout {
                serial: self.serial.clone(),
                what: what.to_owned(),
                after: timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(self.map_err(what, "worker ended")),
        }
    }
}

impl Device for AdbDevice {
    fn serial(&self) -> &str {
        &self.serial
    }

    fn info(&mut self) -> Result<DeviceInfo> {
        let server = self.server.to_string();
        self.probe_info(DeviceKind::Adb, Some(server))
    }

    fn run_watched(
        &mut self,
        argv: &[&str],
        timeout: Duration,
        watch: &mut dyn FnMut(Option<&str>) -> Watch,
    ) -> Result<CommandOutput> {
        let command = crate::shell::join(argv);
        let marker = format!("__socbench_status_{}__", nonce());
        let wrapped = format!("{command}; printf '\\n{marker}%d\\n' $?");
        let (tx, rx) = channel::<Event>();
        let mut client = self.client();
        std::thread::spawn(move || {
            let mut sink = LineSink {
                tx: tx.clone(),
                partial: Vec::new(),
            };
            let mut stderr = Vec::new();
            let r = client
                .shell_command(&wrapped, Some(&mut sink), Some(&mut stderr))
                .map(drop)
                .map_err(|e| e.to_string());
            if !sink.partial.is_empty() {
                let rest = std::mem::take(&mut sink.partial);
                let _ = tx.send(Event::Line(rest));
            }
            let _ = tx.send(Event::Done(r, stderr));
        });
        let deadline = Instant::now() + timeout;
        let mut stdout = Vec::new();
        let mut held: Option<Vec<u8>> = None;
        let mut status: Option<i32> = None;
        let mut next = Watch::Continue;
        loop {
            if next == Watch::Stop {
                // The worker stays blocked until the remote process ends: the caller ends it.
                return Err(DeviceError::Stopped {
                    serial: self.serial.clone(),
                    what: command,
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(WATCH_TICK)) {
                Ok(Event::Line(line)) => {
                    let text = String::from_utf8_lossy(&line);
                    let trimmed = text.trim_end_matches(['\n', '\r']);
                    if let Some(code) = trimmed.strip_prefix(&marker) {
                        status = code.trim().parse().ok();
                        // The line before the marker ends with the newline we added: drop
                        // it if it is empty, else it was the command's unterminated last line.
                        if let Some(h) = held.take() {
                            let h = h.strip_suffix(b"\n").unwrap_or(&h).to_vec();
                            if !h.is_empty() {
                                next = watch(Some(&String::from_utf8_lossy(&h)));
                                stdout.extend_from_slice(&h);
                            }
                        }
                        continue;
                    }
                    if let Some(h) = held.replace(line) {
                        let s = String::from_utf8_lossy(&h);
                        next = watch(Some(s.trim_end_matches(['\n', '\r'])));
                        stdout.extend_from_slice(&h);
                    }
                }
                Ok(Event::Done(r, stderr)) => {
                    return match (status, r) {
                        (Some(status), _) => Ok(CommandOutput {
                            status,
                            stdout,
                            stderr,
                        }),
                        (None, Err(e)) => Err(self.map_err(&command, e)),
                        (None, Ok(())) => Err(DeviceError::Disconnected {
                            serial: self.serial.clone(),
                            detail: format!("`{command}` ended without its exit status"),
                        }),
                    };
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => next = watch(None),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(DeviceError::Timeout {
                        serial: self.serial.clone(),
                        what: command,
                        after: timeout,
                    });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.map_err(&command, "shell worker ended"));
                }
            }
        }
    }

    fn push(&mut self, local: &Path, remote: &str) -> Result<PushOutcome> {
        let sha = local_sha256(local)?;
        if self.sha256(remote)?.as_deref() == Some(sha.as_str()) {
            return Ok(PushOutcome::Skipped);
        }
        if let Some((parent, _)) = remote.rsplit_once('/')
            && !parent.is_empty()
        {
            self.mkdir(parent)?;
        }
        let size = std::fs::metadata(local)
            .map_err(|source| DeviceError::LocalIo {
                path: local.display().to_string(),
                source,
            })?
            .len();
        let file = std::fs::File::open(local).map_err(|source| DeviceError::LocalIo {
            path: local.display().to_string(),
            source,
        })?;
        let remote_owned = remote.to_owned();
        // Generous: 1 MB/s plus a minute.
        let timeout = Duration::from_secs(60 + size / 1_000_000);
        self.with_timeout(&format!("push {remote}"), timeout, move |mut c| {
            c.push(file, &remote_owned).map_err(|e| e.to_string())
        })?;
        if self.sha256(remote)?.as_deref() != Some(sha.as_str()) {
            return Err(DeviceError::Protocol {
                serial: self.serial.clone(),
                detail: format!(
                    "{remote}: content differs from {} after push",
                    local.display()
                ),
            });
        }
        Ok(PushOutcome::Pushed(size))
    }

    fn pull(&mut self, remote: &str, local: &Path) -> Result<()> {
        let remote_owned = remote.to_owned();
        let data = self.with_timeout(
            &format!("pull {remote}"),
            Duration::from_secs(600),
            move |mut c| {
                let mut buf = Vec::new();
                c.pull(&remote_owned, &mut buf).map_err(|e| e.to_string())?;
                Ok(buf)
            },
        )?;
        std::fs::write(local, data).map_err(|source| DeviceError::LocalIo {
            path: local.display().to_string(),
            source,
        })
    }
}
