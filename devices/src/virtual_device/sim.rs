//! The simulated phone sysfs: battery, thermal zones and cpufreq, driven by the real CPU time
//! of the processes the virtual device runs.
//!
//! Every `TICK` the model reads the CPU time (utime + stime) of all processes in the device's
//! process groups from `/proc`, turns it into a load in busy cores, and advances:
//! - power: `P = idle_w + per_core_w · busy_cores · (f / f_max)²` (dynamic power falls with
//!   frequency when throttled);
//! - SoC temperature: first order, `dT/dt = (ambient + r_th · P − T) / tau`;
//! - fixed-performance mode (`cmd power set-fixed-performance-mode-enabled true` writes
//!   [`PERF_FILE`]): every cluster at `fixed_ratio · f_max`, no throttling;
//! - cpufreq: the big cluster drops to `throttle_ratio · f_max` above `trip_c` and recovers
//!   below `trip_c − hysteresis_c` (`scaling_max_freq` capped there, as a thermal daemon
//!   does, and `scaling_cur_freq` with it);
//! - battery: `current = P / V`, reported negative while discharging (the Pixel convention),
//!   charge counter and capacity integrate it. On a USB cable (the [`POWER_FILE`] says `usb`;
//!   `--usb-powered` starts so) `usb/online` is 1, `status` Charging and the current is the
//!   port's supply less the load, positive.
//!
//! Files are replaced atomically (write + rename), so a reader never sees half a value.

use super::sandbox::Sandbox;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(50);
/// Kernel clock ticks per second for `/proc/<pid>/stat` times (100 on every Linux ABI that
/// Android and Debian ship).
const CLK_TCK: f64 = 100.0;

/// Parameters of the model. Defaults give a phone-like response on a seconds scale.
#[derive(Debug, Clone)]
pub struct SimParams {
    /// Power with nothing running (W).
    pub idle_w: f64,
    /// Power per fully busy core at full frequency (W).
    pub per_core_w: f64,
    /// Ambient temperature (°C); at rest the SoC settles at `ambient_c + r_th · idle_w`.
    pub ambient_c: f64,
    /// Thermal resistance (°C per W).
    pub r_th: f64,
    /// Thermal time constant (s).
    pub tau_s: f64,
    /// Throttling trip point (°C).
    pub trip_c: f64,
    /// Hysteresis below the trip point before the clock recovers (°C).
    pub hysteresis_c: f64,
    /// Frequency while throttled, as a fraction of the maximum.
    pub throttle_ratio: f64,
    /// Battery design capacity (µAh).
    pub battery_uah: f64,
    /// Start on a USB cable (`usb/online` 1, the battery charging). The state follows the
    /// device's [`POWER_FILE`] while it runs.
    pub usb_powered: bool,
    /// Current a USB port supplies (A): it carries the load, and charges the battery with
    /// what is left.
    pub usb_supply_a: f64,
    /// Clock of every cluster in fixed-performance mode, as a fraction of its maximum (set
    /// with `cmd power set-fixed-performance-mode-enabled true`; the [`PERF_FILE`] says).
    pub fixed_ratio: f64,
}

/// The file in the virtual device's state directory (outside its sandbox) that says what
/// powers it: `usb` or `battery`. Written at start; rewrite it to plug or unplug the cable
/// while the device runs.
pub const POWER_FILE: &str = "power";

/// The file in the virtual device's state directory that its `cmd power
/// set-fixed-performance-mode-enabled` writes: `fixed` while the mode is on.
pub const PERF_FILE: &str = "perf_mode";

/// The directory in the virtual device's state directory that holds what its `dumpsys`
/// prints: one file per service (`battery`, `thermalservice`), rewritten every tick.
pub const SERVICES_DIR: &str = "services";

/// Whether the power file says `usb` (absent or anything else: battery).
fn on_usb(power_file: &Path) -> bool {
    std::fs::read_to_string(power_file).is_ok_and(|s| s.trim() == "usb")
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            idle_w: 0.6,
            per_core_w: 2.0,
            ambient_c: 30.0,
            r_th: 8.0,
            tau_s: 20.0,
            trip_c: 50.0,
            hysteresis_c: 3.0,
            throttle_ratio: 0.6,
            battery_uah: 4_000_000.0,
            usb_powered: false,
            usb_supply_a: 1.5,
            fixed_ratio: 0.7,
        }
    }
}

struct Cluster {
    cpus: Vec<u32>,
    max_khz: u64,
    throttles: bool,
}

fn clusters(ncpu: u32) -> Vec<Cluster> {
    if ncpu <= 1 {
        return vec![Cluster {
            cpus: vec![0],
            max_khz: 2_400_000,
            throttles: true,
        }];
    }
    let little = ncpu / 2;
    vec![
        Cluster {
            cpus: (0..little).collect(),
            max_khz: 1_800_000,
            throttles: false,
        },
        Cluster {
            cpus: (little..ncpu).collect(),
            max_khz: 2_800_000,
            throttles: true,
        },
    ]
}

fn put(path: &Path, value: impl std::fmt::Display) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, format!("{value}\n")).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Writes the static part of the tree (types, topology, getprop) and the first values.
pub fn init_tree(
    root: &Path,
    services: &Path,
    ncpu: u32,
    p: &SimParams,
    props: &[(String, String)],
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mk = |rel: &str| std::fs::create_dir_all(root.join(rel));
    mk("data/local/tmp")?;
    mk("sdcard")?;
    mk("system/bin")?;
    let bat = root.join("sys/class/power_supply/battery");
    std::fs::create_dir_all(&bat)?;
    put(&bat.join("type"), "Battery");
    put(
        &bat.join("status"),
        if p.usb_powered {
            "Charging"
        } else {
            "Discharging"
        },
    );
    put(&bat.join("charge_full_design"), p.battery_uah as u64);
    put(&bat.join("charge_counter"), (p.battery_uah * 0.8) as u64);
    put(&bat.join("capacity"), 80);
    put(&bat.join("voltage_now"), 3_950_000);
    put(&bat.join("current_now"), 0);
    put(&bat.join("temp"), (p.ambient_c * 10.0) as i64);
    let usb = root.join("sys/class/power_supply/usb");
    std::fs::create_dir_all(&usb)?;
    put(&usb.join("type"), "USB");
    put(&usb.join("online"), u8::from(p.usb_powered));
    for (i, ty) in ["soc-thermal", "skin-therm"].iter().enumerate() {
        let z = root.join(format!("sys/class/thermal/thermal_zone{i}"));
        std::fs::create_dir_all(&z)?;
        put(&z.join("type"), ty);
        put(
            &z.join("temp"),
            ((p.ambient_c + p.r_th * p.idle_w) * 1000.0) as i64,
        );
    }
    let cpu_root = root.join("sys/devices/system/cpu");
    std::fs::create_dir_all(&cpu_root)?;
    put(
        &cpu_root.join("possible"),
        format!("0-{}", ncpu.saturating_sub(1)),
    );
    for c in clusters(ncpu) {
        for cpu in &c.cpus {
            let d = cpu_root.join(format!("cpu{cpu}/cpufreq"));
            std::fs::create_dir_all(&d)?;
            put(&d.join("cpuinfo_max_freq"), c.max_khz);
            put(&d.join("scaling_governor"), "schedutil");
            put(&d.join("scaling_min_freq"), 300_000);
            put(&d.join("scaling_max_freq"), c.max_khz);
            put(&d.join("scaling_cur_freq"), c.max_khz);
        }
    }
    // getprop: prints all properties, or one.
    let mut script =
        String::from("#!/bin/sh\n# socbench virtual device\nif [ $# -eq 0 ]; then\ncat <<'EOF'\n");
    for (k, v) in props {
        script.push_str(&format!("[{k}]: [{v}]\n"));
    }
    script.push_str("EOF\nelse\ncase \"$1\" in\n");
    for (k, v) in props {
        script.push_str(&format!("  {k}) echo {};;\n", crate::shell::quote(v)));
    }
    script.push_str("  *) echo;;\nesac\nfi\n");
    let gp = root.join("system/bin/getprop");
    std::fs::write(&gp, script)?;
    std::fs::set_permissions(&gp, std::fs::Permissions::from_mode(0o755))?;
    // dumpsys: prints the simulation's service texts (first argument that is not an option).
    std::fs::create_dir_all(services)?;
    let dir = crate::shell::quote(&services.display().to_string());
    let script = format!(
        "#!/bin/sh\n# socbench virtual device: Android's dumpsys, answered from the simulation\n\
         svc=\nfor a in \"$@\"; do case \"$a\" in -*) ;; *) svc=$a; break;; esac; done\n\
         case \"$svc\" in battery|thermalservice) cat {dir}/\"$svc\";;\n\
         *) echo \"Can't find service: $svc\";;\nesac\n"
    );
    let ds = root.join("system/bin/dumpsys");
    std::fs::write(&ds, script)?;
    std::fs::set_permissions(&ds, std::fs::Permissions::from_mode(0o755))?;
    // cmd: the power service's fixed-performance mode (Android 11+), into the state directory.
    let perf = services.parent().unwrap_or(services).join(PERF_FILE);
    let perf = crate::shell::quote(&perf.display().to_string());
    let script = format!(
        "#!/bin/sh\n# socbench virtual device: Android's cmd (power: fixed-performance mode)\n\
         if [ \"$1\" = power ] && [ \"$2\" = set-fixed-performance-mode-enabled ]; then\n\
         case \"$3\" in true) echo fixed > {perf};; false) echo default > {perf};;\n\
         *) echo \"Error: expected true or false\"; exit 255;; esac\nexit 0\nfi\n\
         echo \"Can't find service: $1\"\nexit 255\n"
    );
    let cmd = root.join("system/bin/cmd");
    std::fs::write(&cmd, script)?;
    std::fs::set_permissions(&cmd, std::fs::Permissions::from_mode(0o755))?;
    let idle = p.ambient_c + p.r_th * p.idle_w;
    let state = ServiceState {
        usb: p.usb_powered,
        level_pct: 80.0,
        volts: 3.95,
        charge_uah: p.battery_uah * 0.8,
        soc_c: idle,
        skin_c: p.ambient_c + (idle - p.ambient_c) * 0.5,
        thermal_status: 0,
    };
    state.write(services);
    Ok(())
}

/// What the simulated `dumpsys battery` and `dumpsys thermalservice` report.
struct ServiceState {
    usb: bool,
    level_pct: f64,
    volts: f64,
    charge_uah: f64,
    soc_c: f64,
    skin_c: f64,
    thermal_status: u8,
}

impl ServiceState {
    /// Writes both texts in Android's formats (AOSP `BatteryService` and
    /// `ThermalManagerService` dumps).
    fn write(&self, dir: &Path) {
        let battery = format!(
            "Current Battery Service state:\n  AC powered: false\n  USB powered: {}\n  \
             Wireless powered: false\n  Dock powered: false\n  Max charging current: {}\n  \
             Max charging voltage: 5000000\n  Charge counter: {}\n  status: {}\n  health: 2\n  \
             present: true\n  level: {}\n  scale: 100\n  voltage: {}\n  temperature: {}\n  \
             technology: Li-ion\n",
            self.usb,
            if self.usb { 1_500_000 } else { 0 },
            self.charge_uah.round() as i64,
            if self.usb { 2 } else { 3 },
            self.level_pct.round() as i64,
            (self.volts * 1e3).round() as i64,
            (self.skin_c * 10.0).round() as i64,
        );
        let temp = |name: &str, ty: u8, v: f64| {
            format!(
                "\tTemperature{{mValue={v:.3}, mType={ty}, mName={name}, mStatus={}}}\n",
                self.thermal_status
            )
        };
        let thermal = format!(
            "IsStatusOverride: false\nThermal Status: {}\nHAL Ready: true\nHAL connection:\n\
             \tThermalHAL AIDL 1 (socbench simulation)  connected: yes\n\
             Current temperatures from HAL:\n{}{}{}Current cooling devices from HAL:\n",
            self.thermal_status,
            temp("cpu", 0, self.soc_c),
            temp("battery", 2, self.skin_c),
            temp("skin", 3, self.skin_c),
        );
        put_text(&dir.join("battery"), &battery);
        put_text(&dir.join("thermalservice"), &thermal);
    }
}

fn put_text(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Runs the model until `stop` is set; `power_file` is the [`POWER_FILE`].
pub fn run(
    sandbox: Sandbox,
    ncpu: u32,
    p: SimParams,
    power_file: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) {
    let root = sandbox.root().to_path_buf();
    let bat = root.join("sys/class/power_supply/battery");
    let usb_dir = root.join("sys/class/power_supply/usb");
    let zones = [
        root.join("sys/class/thermal/thermal_zone0/temp"),
        root.join("sys/class/thermal/thermal_zone1/temp"),
    ];
    let services = power_file
        .parent()
        .map_or_else(|| root.join(SERVICES_DIR), |d| d.join(SERVICES_DIR));
    let perf_file = power_file
        .parent()
        .map_or_else(|| root.join(PERF_FILE), |d| d.join(PERF_FILE));
    let cl = clusters(ncpu);
    // Start at the idle equilibrium, so temperature only moves with load.
    let mut temp = p.ambient_c + p.r_th * p.idle_w;
    let mut charge_uah = p.battery_uah * 0.8;
    let mut throttled = false;
    let mut last_ticks: HashMap<u32, u64> = HashMap::new();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let dt = now.duration_since(last).as_secs_f64();
        last = now;
        let ticks = super::sandbox::process_tree(&sandbox.groups());
        let busy_ticks: u64 = ticks
            .iter()
            .map(|(pid, t)| t.saturating_sub(last_ticks.get(pid).copied().unwrap_or(0)))
            .sum();
        last_ticks = ticks;
        let busy_cores = (busy_ticks as f64 / CLK_TCK / dt).clamp(0.0, f64::from(ncpu));
        // Fixed-performance mode holds every cluster at a lower clock it can sustain.
        let fixed = std::fs::read_to_string(&perf_file).is_ok_and(|s| s.trim() == "fixed");
        let f_ratio = if fixed {
            p.fixed_ratio
        } else if throttled {
            p.throttle_ratio
        } else {
            1.0
        };
        let power = p.idle_w + p.per_core_w * busy_cores * f_ratio * f_ratio;
        temp += (p.ambient_c + p.r_th * power - temp) * (dt / p.tau_s).min(1.0);
        if temp >= p.trip_c {
            throttled = true;
        } else if temp < p.trip_c - p.hysteresis_c {
            throttled = false;
        }
        let soc = (charge_uah / p.battery_uah).clamp(0.0, 1.0);
        let volts = 3.5 + 0.7 * soc;
        // Battery current, negative while discharging (the Pixel convention): on a cable the
        // port carries the load and charges the battery with the rest.
        let usb = on_usb(&power_file);
        let amps = if usb {
            (p.usb_supply_a - power / volts).max(0.0)
        } else {
            -power / volts
        };
        charge_uah = (charge_uah + amps * 1e6 * dt / 3600.0).clamp(0.0, p.battery_uah);
        put(&usb_dir.join("online"), u8::from(usb));
        put(
            &bat.join("status"),
            if usb { "Charging" } else { "Discharging" },
        );
        put(&bat.join("current_now"), (amps * 1e6).round() as i64);
        put(&bat.join("voltage_now"), (volts * 1e6).round() as i64);
        put(&bat.join("charge_counter"), charge_uah.round() as i64);
        put(&bat.join("capacity"), (soc * 100.0).round() as i64);
        let skin = p.ambient_c + (temp - p.ambient_c) * 0.5;
        put(&bat.join("temp"), (skin * 10.0).round() as i64);
        put(&zones[0], (temp * 1000.0).round() as i64);
        put(&zones[1], (skin * 1000.0).round() as i64);
        // The framework's thermal status: light 6 °C below the trip point, moderate 3 °C
        // below, severe while throttled.
        let thermal_status = if throttled {
            3
        } else if temp >= p.trip_c - 3.0 {
            2
        } else {
            u8::from(temp >= p.trip_c - 6.0)
        };
        ServiceState {
            usb,
            level_pct: soc * 100.0,
            volts,
            charge_uah,
            soc_c: temp,
            skin_c: skin,
            thermal_status,
        }
        .write(&services);
        for c in &cl {
            let khz = if fixed {
                (c.max_khz as f64 * p.fixed_ratio).round() as u64
            } else if throttled && c.throttles {
                (c.max_khz as f64 * p.throttle_ratio).round() as u64
            } else {
                c.max_khz
            };
            for cpu in &c.cpus {
                let dir = root.join(format!("sys/devices/system/cpu/cpu{cpu}/cpufreq"));
                put(&dir.join("scaling_cur_freq"), khz);
                // The way phones throttle: a thermal daemon (or the power HAL's fixed mode)
                // caps the policy's maximum.
                if c.throttles || fixed {
                    put(&dir.join("scaling_max_freq"), khz);
                } else {
                    put(&dir.join("scaling_max_freq"), c.max_khz);
                }
            }
        }
    }
}
