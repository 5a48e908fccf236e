//! A private adb server on a free port and virtual devices, started and stopped by PID.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port outside 5037 and 5555–5585 (which adb servers probe by themselves).
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port != 5037 && !(5555..=5585).contains(&port) {
            return port;
        }
    }
}

fn port_opens(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// `adb` from PATH, with a clear message when it is missing.
pub fn adb_path() -> String {
    let ok = Command::new("adb")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "these tests need the real adb server: install it with `apt-get install -y adb` \
         (.ci/run does)"
    );
    "adb".into()
}

/// An adb server in the foreground (`adb server nodaemon`) on its own port; killed on drop.
pub struct AdbServer {
    pub port: u16,
    child: Child,
}

impl AdbServer {
    pub fn start() -> Self {
        // One start at a time: a fresh machine's first servers all try to create
        // ~/.android/adbkey at once.
        static START: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = START.lock().unwrap_or_else(|e| e.into_inner());
        let log =
            std::env::temp_dir().join(format!("socbench-test-adb-{}.log", std::process::id()));
        for _attempt in 0..3 {
            let port = free_port();
            let mut child = Command::new(adb_path())
                .args(["-P", &port.to_string(), "server", "nodaemon"])
                .env("ANDROID_ADB_SERVER_PORT", port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            if port_opens(port, Duration::from_secs(20)) {
                return Self { port, child };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "adb server did not start three times; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, self.port)
    }

    /// The `adb` CLI talking to this server.
    pub fn adb(&self) -> Command {
        let mut c = Command::new("adb");
        c.args(["-P", &self.port.to_string()])
            .env("ANDROID_ADB_SERVER_PORT", self.port.to_string());
        c
    }

    /// `adb connect`, then waits until the device is listed as `device`.
    pub fn connect(&self, serial: &str) {
        let out = self.adb().args(["connect", serial]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("connected to"),
            "adb connect {serial}: {text}"
        );
        self.wait_state(serial, "device");
    }

    /// Waits until `serial` has `state` (`device`, `offline`) or is gone (`gone`).
    pub fn wait_state(&self, serial: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let list = socbench_devices::adb::list_devices(self.addr()).unwrap();
            let now = list
                .iter()
                .find(|e| e.serial == serial)
                .map(|e| e.state.as_str());
            if now == Some(state) || (state == "gone" && now.is_none()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{serial} never became {state} (is {now:?})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for AdbServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `socbench virtual-device` as a child process; killed (SIGKILL) on drop.
pub struct VirtualPhone {
    pub serial: String,
    pub child: Child,
}

impl VirtualPhone {
    pub fn start(state_dir: &Path, extra: &[&str]) -> Self {
        Self::start_on(0, state_dir, extra)
    }

    pub fn start_on(port: u16, state_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(port, state_dir, extra, &[])
    }

    /// As [`VirtualPhone::start_on`], with `env` set for the phone and what it runs (e.g.
    /// `QEMU_CPU`, the CPU model qemu-user emulates).
    pub fn start_with_env(
        port: u16,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let bin = assert_cmd::cargo::cargo_bin("socbench");
        let mut child = Command::new(bin)
            .args(["virtual-device", "--port", &port.to_string(), "--state-dir"])
            .arg(state_dir)
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let serial = line.trim().to_owned();
        assert!(
            serial.starts_with("127.0.0.1:"),
            "virtual-device printed {line:?}"
        );
        Self { serial, child }
    }

    pub fn port(&self) -> u16 {
        self.serial.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for VirtualPhone {
    fn drop(&mut self) {
        self.kill();
    }
}
