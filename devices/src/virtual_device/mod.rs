//! A virtual Android device: a loopback adbd that a real adb server accepts with
//! `adb connect 127.0.0.1:PORT`, running commands on this host in a sandbox directory with a
//! simulated phone sysfs (see [`sim`]). It stands in for a phone in tests and lets a new user
//! try socbench without one. Its sensors are labelled simulated (`ro.socbench.virtual=1`).
//!
//! Protocol coverage: CNXN (no AUTH: the adb server accepts a device that does not ask),
//! OPEN/OKAY/WRTE/CLSE with one-packet-in-flight flow control and real checksums, the
//! `shell,v2` protocol (stdout, stderr, exit code, stdin), `shell:` and `exec:`, and `sync:`
//! (STAT, STA2, LST2, LIST, LIS2, SEND, RECV, DATA, DONE, QUIT).
//!
//! Plain std threads: one per connection, one per open stream, one for the model.

mod landlock;
mod sandbox;
mod services;
pub mod sim;
mod stream;
mod wire;

pub use sandbox::Sandbox;
pub use sim::SimParams;

use services::Service;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use stream::{StreamIn, StreamOut, Wire};
use wire::{A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION, A_WRTE, MAX_PAYLOAD, encode};

/// Features announced in the CNXN banner.
pub const FEATURES: &str = "shell_v2,cmd,stat_v2,ls_v2,fixed_push_mkdir";

/// How to start a virtual device.
#[derive(Debug, Clone)]
pub struct VirtualConfig {
    /// Loopback port; 0 picks a free one. Avoid 5555–5585: adb servers attach those by
    /// themselves.
    pub port: u16,
    /// `ro.product.model`.
    pub name: String,
    /// `x86_64` or `arm64-v8a` (`ro.product.cpu.abi`).
    pub abi: String,
    /// Directory for the sandbox (created; kept across restarts so deployed files survive).
    pub state_dir: PathBuf,
    /// The thermal / power model.
    pub sim: SimParams,
    /// Play a phone that does not honour thread pinning: agents it runs are moved to the CPUs
    /// they did not ask for (the `SOCBENCH_TEST_IGNORE_AFFINITY` hook).
    pub ignore_affinity: bool,
    /// Play a locked-down phone (`--profile locked`): reading its battery and thermal sysfs
    /// nodes ([`LOCKED_DIRS`]) fails with `Permission denied`, and `dumpsys battery` /
    /// `dumpsys thermalservice` are the way to them (every profile has those).
    pub locked: bool,
}

/// What the locked profile denies to the device's commands and sync service.
pub const LOCKED_DIRS: [&str; 2] = ["/sys/class/power_supply", "/sys/class/thermal"];

/// How the virtual device runs executables built for `abi`: natively when it is the host's
/// (`None`), under qemu user-mode emulation for `arm64-v8a` on another host.
fn emulator_for(abi: &str) -> io::Result<Option<PathBuf>> {
    let native = match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "arm64-v8a",
        other => other,
    };
    if abi == native {
        return Ok(None);
    }
    if abi != "arm64-v8a" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("ABI {abi:?} is not supported on this host (valid: {native}, arm64-v8a)"),
        ));
    }
    let candidates = ["qemu-aarch64-static", "qemu-aarch64"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|d| candidates.iter().map(move |c| d.join(c)))
        .find(|p| p.is_file())
        .map(Some)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "--abi arm64-v8a runs aarch64 executables under qemu-aarch64-static, which is not \
                 on PATH (Debian/Ubuntu: apt-get install qemu-user-static)",
            )
        })
}

/// A running virtual device.
#[derive(Debug)]
pub struct VirtualDevice {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    sandbox: Sandbox,
}

impl VirtualDevice {
    /// Binds the port, prepares the sandbox and starts serving.
    pub fn start(cfg: VirtualConfig) -> io::Result<Self> {
        if (5555..=5585).contains(&cfg.port) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "port {} is in 5555–5585, which adb servers probe and attach on their own; \
                     pick another (or 0 for a free one)",
                    cfg.port
                ),
            ));
        }
        let emulator = emulator_for(&cfg.abi)?;
        let listener = TcpListener::bind(("127.0.0.1", cfg.port))?;
        let addr = listener.local_addr()?;
        let root = cfg.state_dir.join("root");
        std::fs::create_dir_all(&root)?;
        let root = root.canonicalize()?;
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ncpu = u32::try_from(ncpu).unwrap_or(1);
        let props = vec![
            ("ro.product.model".to_owned(), cfg.name.clone()),
            ("ro.product.manufacturer".to_owned(), "socbench".to_owned()),
            ("ro.product.name".to_owned(), "socbench_virtual".to_owned()),
            ("ro.product.device".to_owned(), "virtual".to_owned()),
            // Timings of an emulated ABI are the emulator's: say so where the SoC is named.
            (
                "ro.product.board".to_owned(),
                match &emulator {
                    Some(emu) => format!(
                        "virtual-soc ({} emulated by {}: timings are the emulator's)",
                        cfg.abi,
                        emu.file_name()
                            .map_or("an emulator".into(), |n| n.to_string_lossy())
                    ),
                    None => "virtual-soc".to_owned(),
                },
            ),
            ("ro.product.cpu.abi".to_owned(), cfg.abi.clone()),
            ("ro.build.version.release".to_owned(), "14".to_owned()),
            ("ro.socbench.virtual".to_owned(), "1".to_owned()),
        ];
        // A restarted phone comes up in its default performance mode.
        std::fs::write(cfg.state_dir.join(sim::PERF_FILE), "default\n")?;
        let services = cfg.state_dir.join(sim::SERVICES_DIR);
        sim::init_tree(&root, &services, ncpu, &cfg.sim, &props)?;
        // SELinux: a locked-down phone enforces; the open profile plays a permissive
        // engineering build.
        let selinux = root.join("sys/fs/selinux");
        std::fs::create_dir_all(&selinux)?;
        std::fs::write(
            selinux.join("enforce"),
            if cfg.locked { "1\n" } else { "0\n" },
        )?;
        let power_file = cfg.state_dir.join(sim::POWER_FILE);
        std::fs::write(
            &power_file,
            if cfg.sim.usb_powered {
                "usb\n"
            } else {
                "battery\n"
            },
        )?;
        let mut sandbox = match emulator {
            Some(emu) => Sandbox::new(root).with_emulator(emu),
            None => Sandbox::new(root),
        };
        if cfg.locked {
            sandbox = sandbox.with_denied_reads(&LOCKED_DIRS)?;
        }
        if cfg.ignore_affinity {
            sandbox = sandbox.with_env("SOCBENCH_TEST_IGNORE_AFFINITY", "1");
        }
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (sb, st, p) = (sandbox.clone(), Arc::clone(&stop), cfg.sim.clone());
            std::thread::spawn(move || sim::run(sb, ncpu, p, power_file, st));
        }
        let banner = format!(
            "device::ro.product.name=socbench_virtual;ro.product.model={};ro.product.device=virtual;features={FEATURES}",
            cfg.name.replace([';', '='], "_")
        );
        {
            let (sb, st) = (sandbox.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if st.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (sb, banner, st) = (sb.clone(), banner.clone(), Arc::clone(&st));
                    std::thread::spawn(move || {
                        let _ = serve(conn, &sb, &banner, &st);
                    });
                }
            });
        }
        Ok(Self {
            addr,
            stop,
            sandbox,
        })
    }

    /// The address to `adb connect` to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The serial the adb server will give it (`127.0.0.1:PORT`).
    pub fn serial(&self) -> String {
        self.addr.to_string()
    }

    /// The sandbox directory standing for `/`.
    pub fn root(&self) -> &std::path::Path {
        self.sandbox.root()
    }
}

impl Drop for VirtualDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.sandbox.kill_all();
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

struct StreamState {
    input: Option<Sender<Vec<u8>>>,
    acks: Sender<()>,
    out: Arc<StreamOut>,
}

fn serve(conn: TcpStream, sandbox: &Sandbox, banner: &str, stop: &AtomicBool) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let wire: Wire = Arc::new(Mutex::new(conn.try_clone()?));
    let mut reader = io::BufReader::new(conn);
    let mut max_payload = MAX_PAYLOAD as usize;
    let streams: Arc<Mutex<HashMap<u32, StreamState>>> = Arc::default();
    let mut next_id: u32 = 1;
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let p = match wire::read_packet(&mut reader) {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        match p.cmd {
            A_CNXN => {
                max_payload = (p.arg1 as usize).clamp(1024, MAX_PAYLOAD as usize);
                stream::send(
                    &wire,
                    &encode(A_CNXN, A_VERSION, MAX_PAYLOAD, banner.as_bytes()),
                )?;
            }
            A_AUTH => {
                // We never ask for AUTH; answer a stray one with our banner again.
                stream::send(
                    &wire,
                    &encode(A_CNXN, A_VERSION, MAX_PAYLOAD, banner.as_bytes()),
                )?;
            }
            A_OPEN => {
                let remote = p.arg0;
                let name = String::from_utf8_lossy(&p.data).into_owned();
                let Some(service) = services::parse(&name) else {
                    stream::send(&wire, &encode(A_CLSE, 0, remote, &[]))?;
                    continue;
                };
                let local = next_id;
                next_id = next_id.wrapping_add(1).max(1);
                let (in_tx, in_rx) = channel();
                let (ack_tx, ack_rx) = channel();
                let closed = Arc::new(AtomicBool::new(false));
                let out = Arc::new(StreamOut::new(
                    Arc::clone(&wire),
                    local,
                    remote,
                    max_payload,
                    ack_rx,
                    closed,
                ));
                if let Ok(mut s) = streams.lock() {
                    s.insert(
                        local,
                        StreamState {
                            input: Some(in_tx),
                            acks: ack_tx,
                            out: Arc::clone(&out),
                        },
                    );
                }
                stream::send(&wire, &encode(A_OKAY, local, remote, &[]))?;
                let (sb, all) = (sandbox.clone(), Arc::clone(&streams));
                std::thread::spawn(move || {
                    let input = StreamIn::new(in_rx);
                    match service {
                        Service::ShellV2(cmd) => {
                            services::run_shell(&sb, &cmd, true, false, input, Arc::clone(&out));
                        }
                        Service::Raw { cmd, merge_stderr } => {
                            services::run_shell(
                                &sb,
                                &cmd,
                                false,
                                merge_stderr,
                                input,
                                Arc::clone(&out),
                            );
                        }
                        Service::Sync => services::run_sync(&sb, input, Arc::clone(&out)),
                    }
                    out.close();
                    if let Ok(mut s) = all.lock() {
                        s.remove(&local);
                    }
                });
            }
            A_WRTE => {
                let local = p.arg1;
                let known = streams.lock().ok().and_then(|s| {
                    s.get(&local)
                        .map(|st| st.input.as_ref().map(|tx| tx.send(p.data.clone())))
                });
                match known {
                    Some(_) => stream::send(&wire, &encode(A_OKAY, local, p.arg0, &[]))?,
                    None => stream::send(&wire, &encode(A_CLSE, local, p.arg0, &[]))?,
                }
            }
            A_OKAY => {
                if let Ok(s) = streams.lock()
                    && let Some(st) = s.get(&p.arg1)
                {
                    let _ = st.acks.send(());
                }
            }
            A_CLSE => {
                if let Ok(mut s) = streams.lock()
                    && let Some(st) = s.get_mut(&p.arg1)
                {
                    st.input = None;
                    st.out.close();
                }
            }
            _ => {}
        }
    };
    // Connection gone: end every stream (their processes are killed by the services).
    if let Ok(mut s) = streams.lock() {
        for (_, st) in s.drain() {
            st.out.closed.store(true, Ordering::Relaxed);
        }
    }
    result
}
