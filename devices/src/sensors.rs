//! The sensor sampler that runs on the target, next to the model.
//!
//! [`SensorSet::discover`] looks under a sysfs root (`/` on a device, the virtual device's
//! sandbox in tests) for what the device has: battery, thermal zones, cpufreq, GPU frequency,
//! on-device power monitor rails, hwmon and RAPL, and the process's own memory. A sensor the
//! device lacks is simply not in the set (reported as absent, never as zero), and a read that
//! fails in one sample is `None` in that sample.
//!
//! [`Sampler`] reads the set at a fixed rate on its own thread, timestamped with a monotonic
//! clock relative to an epoch the caller shares with its token timings.
//!
//! Battery conventions differ between phones: `current_now` is specified in µA but some
//! kernels report mA, and the sign of a discharging current is negative on some devices and
//! positive on others. socbench reports `battery_power_w` positive while discharging and
//! negative while charging (decided by `status`, not by the sign), and takes magnitudes below
//! 10 000 as mA (10 mA is implausibly low for a phone running a model; 10 A impossible).

use crate::services::{Field, Service};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What a sensor reads and how to turn the file into a number.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A file holding one integer, multiplied by `scale`.
    Scaled { path: PathBuf, scale: f64 },
    /// Battery power from `current_now` × `voltage_now`, sign from `status`.
    BatteryPower { dir: PathBuf },
    /// 1 while `status` says Charging or Full, else 0.
    Charging { dir: PathBuf },
    /// What powers the device, as an index of [`POWER_SOURCES`]: the first external supply
    /// whose `online` is 1, else the battery's `status` (charging from an unnamed supply, or
    /// not).
    PowerSupply {
        supplies: Vec<(PathBuf, u8)>,
        battery: Option<PathBuf>,
    },
    /// The IIO power monitor line for one rail (µW·s, cumulative), in joules.
    IioRail { path: PathBuf, rail: String },
    /// A `/proc/<pid>/status` field in kB, in bytes.
    ProcStatus { path: PathBuf, field: &'static str },
    /// A field of an Android service's text (`dumpsys battery`, `dumpsys thermalservice`).
    Service { service: Arc<Service>, field: Field },
}

/// Values of the `power_source` sensor, by code: what powered the device at the sample.
/// `external` is a battery that says it is charging while no supply it names is online.
pub const POWER_SOURCES: [&str; 5] = ["battery", "usb", "ac", "wireless", "external"];

/// The name of a `power_source` sample (`unknown` for anything that is not a code).
pub fn power_source_name(code: f64) -> &'static str {
    if code.is_finite() && code >= 0.0 && code.fract() == 0.0 {
        POWER_SOURCES
            .get(code as usize)
            .copied()
            .unwrap_or("unknown")
    } else {
        "unknown"
    }
}

/// The [`POWER_SOURCES`] code of a `power_supply` type, for the external ones.
fn supply_code(ty: &str) -> Option<u8> {
    match ty {
        "Mains" => Some(2),
        "Wireless" => Some(3),
        t if t.starts_with("USB") || t == "BrickID" => Some(1),
        _ => None,
    }
}

/// One sensor of a device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SensorMeta {
    /// Stable name used as the column / key (`battery_power_w`, `thermal_cpu-thermal_c`,
    /// `cpu4_freq_mhz`…).
    pub name: String,
    /// Unit (`W`, `°C`, `MHz`, `J`, `bytes`, `%`, `V`, `A`, `bool`).
    pub unit: String,
    /// `gauge` (instantaneous) or `counter` (cumulative: energy).
    pub kind: String,
    /// Where it is read from: a path relative to the sysfs root, or a command line.
    pub path: String,
    /// How it is read: `sysfs`, `proc` (this process's own `/proc` files), `dumpsys` (an
    /// Android service's text) or `hal` (the thermal HAL's temperatures, through
    /// `dumpsys thermalservice`). Empty in records from before sources were recorded (sysfs).
    #[serde(default)]
    pub source: String,
}

/// The sensors found on a device.
#[derive(Debug, Clone)]
pub struct SensorSet {
    pub(crate) metas: Vec<SensorMeta>,
    pub(crate) sources: Vec<Source>,
}

/// A file's text without surrounding whitespace (`None` when it cannot be read).
pub(crate) fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_f64(path: &Path) -> Option<f64> {
    read_trim(path)?.parse().ok()
}

fn sorted_dir(path: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    // Natural order: cpu2 before cpu10.
    v.sort_by_key(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        let digits: String = name.chars().filter(char::is_ascii_digit).collect();
        (
            name.trim_end_matches(|c: char| c.is_ascii_digit())
                .to_owned(),
            digits.parse::<u64>().unwrap_or(0),
            name,
        )
    });
    v
}

pub(crate) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Parses an IIO power monitor `energy_value` file: a `t=<ms>` line, then
/// `CH<n>(T=<ms>)[<RAIL>], <µW·s>` lines. Returns (rail, joules).
pub fn parse_iio_energy(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let (head, value) = l.split_once(',')?;
            let rail = head.split_once('[')?.1.split_once(']')?.0;
            let uws: f64 = value.trim().parse().ok()?;
            Some((rail.to_owned(), uws * 1e-6))
        })
        .collect()
}

impl SensorSet {
    /// Finds the sensors under `root` (`/` on a real device), plus the memory of process `pid`
    /// (read from the real `/proc`, which is per process and never simulated).
    pub fn discover(root: &Path, pid: Option<u32>) -> Self {
        let mut set = Self {
            metas: Vec::new(),
            sources: Vec::new(),
        };
        let rel = |p: &Path| {
            format!(
                "/{}",
                p.strip_prefix(root)
                    .unwrap_or(p)
                    .display()
                    .to_string()
                    .trim_start_matches('/')
            )
        };
        let mut add = |name: String, unit: &str, kind: &str, path: String, src: Source| {
            let source = if path.starts_with("/proc/") {
                "proc"
            } else {
                "sysfs"
            };
            set.metas.push(SensorMeta {
                name,
                unit: unit.into(),
                kind: kind.into(),
                path,
                source: source.into(),
            });
            set.sources.push(src);
        };

        // What powers the device: external supplies with an `online` node, and the battery.
        let mut supplies = Vec::new();
        let mut battery = None;
        for dir in sorted_dir(&root.join("sys/class/power_supply")) {
            match read_trim(&dir.join("type")).as_deref() {
                Some("Battery") if battery.is_none() && dir.join("status").exists() => {
                    battery = Some(dir.clone());
                }
                Some(ty) if dir.join("online").exists() => {
                    if let Some(code) = supply_code(ty) {
                        supplies.push((dir.join("online"), code));
                    }
                }
                _ => {}
            }
        }
        if power_supply(&supplies, battery.as_deref()).is_some() {
            add(
                "power_source".into(),
                "code",
                "gauge",
                rel(&root.join("sys/class/power_supply")),
                Source::PowerSupply { supplies, battery },
            );
        }

        // Battery (the first power_supply of type Battery).
        for dir in sorted_dir(&root.join("sys/class/power_supply")) {
            if read_trim(&dir.join("type")).as_deref() != Some("Battery") {
                continue;
            }
            // Only nodes this process can read (SELinux denies many on phones: those come
            // from `dumpsys battery` instead, see `add_service_fallbacks`).
            let has = |f: &str| read_trim(&dir.join(f)).is_some();
            if has("current_now") && has("voltage_now") {
                add(
                    "battery_power_w".into(),
                    "W",
                    "gauge",
                    rel(&dir.join("current_now")),
                    Source::BatteryPower { dir: dir.clone() },
                );
            }
            if has("status") {
                add(
                    "battery_charging".into(),
                    "bool",
                    "gauge",
                    rel(&dir.join("status")),
                    Source::Charging { dir: dir.clone() },
                );
            }
            for (file, name, unit, scale) in [
                ("voltage_now", "battery_voltage_v", "V", 1e-6),
                ("charge_counter", "battery_charge_mah", "mAh", 1e-3),
                ("capacity", "battery_capacity_pct", "%", 1.0),
                ("temp", "battery_temp_c", "°C", 0.1),
            ] {
                if has(file) {
                    add(
                        name.into(),
                        unit,
                        "gauge",
                        rel(&dir.join(file)),
                        Source::Scaled {
                            path: dir.join(file),
                            scale,
                        },
                    );
                }
            }
            break;
        }

        // Thermal zones.
        for zone in sorted_dir(&root.join("sys/class/thermal")) {
            let is_zone = zone
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("thermal_zone"));
            if !is_zone || read_f64(&zone.join("temp")).is_none() {
                continue;
            }
            let zone_name = zone.file_name().map(|n| n.to_string_lossy().into_owned());
            let ty = read_trim(&zone.join("type")).unwrap_or_else(|| zone_name.unwrap_or_default());
            let name = format!("thermal_{}_c", sanitize(&ty));
            add(
                name,
                "°C",
                "gauge",
                rel(&zone.join("temp")),
                Source::Scaled {
                    path: zone.join("temp"),
                    scale: 1e-3,
                },
            );
        }

        // CPU frequency per CPU.
        for cpu in sorted_dir(&root.join("sys/devices/system/cpu")) {
            let Some(n) = cpu
                .file_name()
                .and_then(|n| n.to_string_lossy().strip_prefix("cpu")?.parse::<u32>().ok())
            else {
                continue;
            };
            let f = cpu.join("cpufreq/scaling_cur_freq");
            if read_f64(&f).is_some() {
                add(
                    format!("cpu{n}_freq_mhz"),
                    "MHz",
                    "gauge",
                    rel(&f),
                    Source::Scaled {
                        path: f,
                        scale: 1e-3,
                    },
                );
            }
        }

        // GPU frequency: Adreno (kgsl, Hz) or a devfreq GPU node (Hz).
        let kgsl = root.join("sys/class/kgsl/kgsl-3d0/gpuclk");
        if read_f64(&kgsl).is_some() {
            add(
                "gpu_freq_mhz".into(),
                "MHz",
                "gauge",
                rel(&kgsl),
                Source::Scaled {
                    path: kgsl,
                    scale: 1e-6,
                },
            );
        } else {
            for d in sorted_dir(&root.join("sys/class/devfreq")) {
                let name = d.file_name().map(|n| n.to_string_lossy().to_lowercase());
                let is_gpu = name
                    .is_some_and(|n| n.contains("gpu") || n.contains("mali") || n.contains("kgsl"));
                let f = d.join("cur_freq");
                if is_gpu && read_f64(&f).is_some() {
                    add(
                        "gpu_freq_mhz".into(),
                        "MHz",
                        "gauge",
                        rel(&f),
                        Source::Scaled {
                            path: f,
                            scale: 1e-6,
                        },
                    );
                    break;
                }
            }
        }

        // On-device power monitor rails (Pixel ODPM).
        for dev in sorted_dir(&root.join("sys/bus/iio/devices")) {
            let f = dev.join("energy_value");
            let Some(text) = read_trim(&f) else { continue };
            for (rail, _) in parse_iio_energy(&text) {
                add(
                    format!("rail_{}_j", sanitize(&rail)),
                    "J",
                    "counter",
                    rel(&f),
                    Source::IioRail {
                        path: f.clone(),
                        rail,
                    },
                );
            }
        }

        // Linux host: hwmon temperatures and power, RAPL energy.
        for hw in sorted_dir(&root.join("sys/class/hwmon")) {
            let chip = read_trim(&hw.join("name")).unwrap_or_else(|| "hwmon".into());
            for f in sorted_dir(&hw) {
                let file = f.file_name().map(|n| n.to_string_lossy().into_owned());
                let file = file.unwrap_or_default();
                let (unit, scale, suffix) = if file.starts_with("temp") && file.ends_with("_input")
                {
                    ("°C", 1e-3, "c")
                } else if file.starts_with("power") && file.ends_with("_input") {
                    ("W", 1e-6, "w")
                } else {
                    continue;
                };
                if read_f64(&f).is_none() {
                    continue;
                }
                let stem = file.trim_end_matches("_input");
                add(
                    format!("hwmon_{}_{}_{suffix}", sanitize(&chip), stem),
                    unit,
                    "gauge",
                    rel(&f),
                    Source::Scaled { path: f, scale },
                );
            }
        }
        for rapl in sorted_dir(&root.join("sys/class/powercap")) {
            let f = rapl.join("energy_uj");
            if read_f64(&f).is_none() {
                continue;
            }
            let domain = read_trim(&rapl.join("name")).unwrap_or_default();
            let id = rapl.file_name().map(|n| n.to_string_lossy().into_owned());
            add(
                format!(
                    "rapl_{}_{}_j",
                    sanitize(&id.unwrap_or_default()),
                    sanitize(&domain)
                ),
                "J",
                "counter",
                rel(&f),
                Source::Scaled {
                    path: f,
                    scale: 1e-6,
                },
            );
        }

        if let Some(pid) = pid {
            let status = PathBuf::from(format!("/proc/{pid}/status"));
            for (field, name) in [
                ("VmRSS:", "process_rss_bytes"),
                ("VmHWM:", "process_hwm_bytes"),
            ] {
                add(
                    name.into(),
                    "bytes",
                    "gauge",
                    status.display().to_string(),
                    Source::ProcStatus {
                        path: status.clone(),
                        field,
                    },
                );
            }
        }
        set.add_service_fallbacks();
        dedup_names(&mut set.metas);
        set
    }

    /// The sensors, in the order of every sample's values.
    pub fn metas(&self) -> &[SensorMeta] {
        &self.metas
    }

    /// Whether the set has no sensor at all.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// Reads every sensor once. A sensor read from an Android service has a value only in
    /// the samples where the service was called (at most once per [`SERVICE_PERIOD`](crate::services::SERVICE_PERIOD)).
    pub fn read(&self) -> Vec<Option<f64>> {
        // One call per service per sample, shared by the sensors read from it.
        let mut texts: Vec<(*const Service, Option<Arc<str>>)> = Vec::new();
        self.sources
            .iter()
            .map(|src| match src {
                Source::Service { service, field } => {
                    let key = Arc::as_ptr(service);
                    let text = match texts.iter().find(|(k, _)| *k == key) {
                        Some((_, t)) => t.clone(),
                        None => {
                            let t = service.poll();
                            texts.push((key, t.clone()));
                            t
                        }
                    };
                    field.read(&text?)
                }
                other => read_source(other),
            })
            .collect()
    }

    /// Reads the sensor at `index` alone (`None` past the end, or when unreadable); one read
    /// from an Android service may be up to a [`SERVICE_PERIOD`](crate::services::SERVICE_PERIOD) old.
    pub fn read_one(&self, index: usize) -> Option<f64> {
        match self.sources.get(index)? {
            Source::Service { service, field } => field.read(&service.latest()?),
            other => read_source(other),
        }
    }

    /// Index of the named sensor.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.metas.iter().position(|m| m.name == name)
    }
}

/// Two thermal zones may share a type: the second becomes `…_2_c`, and so on.
fn dedup_names(metas: &mut [SensorMeta]) {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for m in metas.iter_mut() {
        let n = seen.entry(m.name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            let (stem, unit) = m.name.rsplit_once('_').unwrap_or((&m.name, ""));
            m.name = format!("{stem}_{}_{unit}", *n);
        }
    }
}

fn battery_power(dir: &Path) -> Option<f64> {
    let current = read_f64(&dir.join("current_now"))?;
    let voltage = read_f64(&dir.join("voltage_now"))?;
    // current_now in µA per the kernel ABI; some kernels use mA.
    let amps = if current != 0.0 && current.abs() < 10_000.0 {
        current * 1e-3
    } else {
        current * 1e-6
    };
    // voltage_now in µV; some use mV.
    let volts = if voltage < 100_000.0 {
        voltage * 1e-3
    } else {
        voltage * 1e-6
    };
    let watts = (amps * volts).abs();
    Some(if is_charging(dir)? { -watts } else { watts })
}

fn is_charging(dir: &Path) -> Option<bool> {
    let status = read_trim(&dir.join("status"))?;
    Some(matches!(status.as_str(), "Charging" | "Full"))
}

fn power_supply(supplies: &[(PathBuf, u8)], battery: Option<&Path>) -> Option<f64> {
    let mut known = false;
    for (online, code) in supplies {
        if let Some(v) = read_f64(online) {
            known = true;
            if v > 0.0 {
                return Some(f64::from(*code));
            }
        }
    }
    let status = battery.and_then(|b| read_trim(&b.join("status")));
    match status.as_deref() {
        Some("Charging" | "Full") => Some(4.0),
        Some("Discharging") => Some(0.0),
        // `Not charging` (a charge limit) or `Unknown`: on battery only when every supply is
        // known to be offline; without a readable supply, a cable cannot be ruled out.
        _ if known => Some(0.0),
        Some("Not charging") => Some(4.0),
        _ => None,
    }
}

fn read_source(src: &Source) -> Option<f64> {
    match src {
        Source::Scaled { path, scale } => read_f64(path).map(|v| v * scale),
        Source::BatteryPower { dir } => battery_power(dir),
        Source::Charging { dir } => is_charging(dir).map(|c| f64::from(u8::from(c))),
        Source::PowerSupply { supplies, battery } => power_supply(supplies, battery.as_deref()),
        Source::IioRail { path, rail } => parse_iio_energy(&read_trim(path)?)
            .into_iter()
            .find(|(r, _)| r == rail)
            .map(|(_, j)| j),
        Source::ProcStatus { path, field } => proc_status_bytes(path, field).map(|b| b as f64),
        Source::Service { service, field } => field.read(&service.latest()?),
    }
}

/// This process's own memory: a `kB` field of `/proc/self/status` (`VmRSS:`, `VmHWM:`…), or
/// `Pss:` from `/proc/self/smaps_rollup` (Linux 4.14+: shared pages counted by this process's
/// share of them, as Android's memory accounting does), in bytes; `None` where unreadable.
pub fn own_memory_bytes(field: &str) -> Option<u64> {
    let file = if field == "Pss:" {
        "/proc/self/smaps_rollup"
    } else {
        "/proc/self/status"
    };
    proc_status_bytes(Path::new(file), field)
}

/// A `kB` field of a `/proc/<pid>/status` file (`VmRSS:`, `VmHWM:`…), in bytes.
pub fn proc_status_bytes(path: &Path, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// One reading of every sensor of a [`SensorSet`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Seconds since the sampler's epoch (monotonic clock).
    pub t_s: f64,
    /// One value per sensor, in [`SensorSet::metas`] order; `None` when the read failed.
    pub values: Vec<Option<f64>>,
}

/// Reads a [`SensorSet`] at a fixed rate on its own thread, handing each sample to a callback.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Sampler {
    /// Starts sampling `set` at `rate_hz`, timestamps relative to `epoch`. Ticks are scheduled
    /// on absolute deadlines, so a slow read does not shift later ones; a tick that is missed
    /// entirely is skipped, not bunched up.
    pub fn start(
        set: SensorSet,
        rate_hz: f64,
        epoch: Instant,
        mut on_sample: impl FnMut(Sample) + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_secs_f64(1.0 / rate_hz.clamp(0.1, 1000.0));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("socbench-sampler".into())
            .spawn(move || {
                let mut next = Instant::now();
                let mut n = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let values = set.read();
                    on_sample(Sample {
                        t_s: t.duration_since(epoch).as_secs_f64(),
                        values,
                    });
                    n += 1;
                    next += period;
                    let now = Instant::now();
                    while next < now {
                        next += period;
                    }
                    // Sleep in short slices so stop() returns promptly.
                    while !flag.load(Ordering::Relaxed) {
                        let left = next.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        std::thread::sleep(left.min(Duration::from_millis(20)));
                    }
                }
                n
            })
            .ok();
        Self { stop, handle }
    }

    /// Stops the thread and returns how many samples it took.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or(0)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    /// Writes `text` to `root/rel`, creating its directories (a fake sysfs).
    pub(crate) fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn value(set: &SensorSet, vals: &[Option<f64>], name: &str) -> Option<f64> {
        vals[set
            .index(name)
            .unwrap_or_else(|| panic!("no sensor {name}"))]
    }

    #[test]
    fn phone_tree_is_discovered_and_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let bat = "sys/class/power_supply/battery";
        write(r, &format!("{bat}/type"), "Battery\n");
        write(r, &format!("{bat}/status"), "Discharging\n");
        // Negative-while-discharging convention, µA and µV.
        write(r, &format!("{bat}/current_now"), "-500000\n");
        write(r, &format!("{bat}/voltage_now"), "4000000\n");
        write(r, &format!("{bat}/capacity"), "87\n");
        write(r, &format!("{bat}/temp"), "312\n");
        write(r, "sys/class/power_supply/usb/type", "USB\n");
        write(r, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
        write(r, "sys/class/thermal/thermal_zone0/temp", "45500\n");
        write(r, "sys/class/thermal/thermal_zone1/type", "cpu-thermal\n");
        write(r, "sys/class/thermal/thermal_zone1/temp", "46000\n");
        write(
            r,
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
            "1800000\n",
        );
        write(
            r,
            "sys/devices/system/cpu/cpu10/cpufreq/scaling_cur_freq",
            "2400000\n",
        );
        write(
            r,
            "sys/devices/system/cpu/cpu2/cpufreq/scaling_cur_freq",
            "1000000\n",
        );
        write(
            r,
            "sys/bus/iio/devices/iio:device0/energy_value",
            "t=1000\nCH0(T=1000)[S4M_VDD_CPUCL0], 2500000\nCH1(T=1000)[VSYS_PWR_DISPLAY], 10\n",
        );
        let set = SensorSet::discover(r, None);
        let names: Vec<&str> = set.metas().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "power_source",
                "battery_power_w",
                "battery_charging",
                "battery_voltage_v",
                "battery_capacity_pct",
                "battery_temp_c",
                "thermal_cpu-thermal_c",
                "thermal_cpu-thermal_2_c",
                "cpu0_freq_mhz",
                "cpu2_freq_mhz",
                "cpu10_freq_mhz",
                "rail_s4m_vdd_cpucl0_j",
                "rail_vsys_pwr_display_j",
            ]
        );
        let v = set.read();
        assert!((value(&set, &v, "battery_power_w").unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(value(&set, &v, "battery_charging"), Some(0.0));
        assert!((value(&set, &v, "battery_temp_c").unwrap() - 31.2).abs() < 1e-9);
        assert!((value(&set, &v, "thermal_cpu-thermal_c").unwrap() - 45.5).abs() < 1e-9);
        assert_eq!(value(&set, &v, "cpu10_freq_mhz"), Some(2400.0));
        assert!((value(&set, &v, "rail_s4m_vdd_cpucl0_j").unwrap() - 2.5).abs() < 1e-9);

        // Positive-while-discharging convention in mA gives the same power.
        write(r, &format!("{bat}/current_now"), "500\n");
        let v = set.read();
        assert!((value(&set, &v, "battery_power_w").unwrap() - 2.0).abs() < 1e-9);
        // Charging: negative power whatever the sign of the current.
        write(r, &format!("{bat}/status"), "Charging\n");
        let v = set.read();
        assert!((value(&set, &v, "battery_power_w").unwrap() + 2.0).abs() < 1e-9);
        assert_eq!(value(&set, &v, "battery_charging"), Some(1.0));
        // No supply with an `online` node: the battery's status decides.
        assert_eq!(value(&set, &v, "power_source"), Some(4.0));
        // A file that disappears reads as None, not zero.
        fs::remove_file(r.join("sys/class/thermal/thermal_zone0/temp")).unwrap();
        assert_eq!(value(&set, &set.read(), "thermal_cpu-thermal_c"), None);
    }

    #[test]
    fn the_power_source_follows_the_supplies_online() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "sys/class/power_supply/ac/type", "Mains\n");
        write(r, "sys/class/power_supply/ac/online", "0\n");
        write(r, "sys/class/power_supply/battery/type", "Battery\n");
        write(r, "sys/class/power_supply/battery/status", "Discharging\n");
        write(r, "sys/class/power_supply/usb/type", "USB_PD\n");
        write(r, "sys/class/power_supply/usb/online", "0\n");
        write(r, "sys/class/power_supply/wireless/type", "Wireless\n");
        write(r, "sys/class/power_supply/wireless/online", "0\n");
        let set = SensorSet::discover(r, None);
        let now = || value(&set, &set.read(), "power_source").map(power_source_name);
        assert_eq!(now(), Some("battery"));
        write(r, "sys/class/power_supply/usb/online", "1\n");
        // A cable can power the phone while charging is paused: `online` decides, not status.
        write(r, "sys/class/power_supply/battery/status", "Not charging\n");
        assert_eq!(now(), Some("usb"));
        write(r, "sys/class/power_supply/usb/online", "0\n");
        write(r, "sys/class/power_supply/wireless/online", "1\n");
        assert_eq!(now(), Some("wireless"));
        write(r, "sys/class/power_supply/wireless/online", "0\n");
        write(r, "sys/class/power_supply/ac/online", "1\n");
        assert_eq!(now(), Some("ac"));
        write(r, "sys/class/power_supply/ac/online", "0\n");
        write(r, "sys/class/power_supply/battery/status", "Charging\n");
        assert_eq!(now(), Some("external"));
        // Every supply offline: a paused charge is still the battery.
        write(r, "sys/class/power_supply/battery/status", "Not charging\n");
        assert_eq!(now(), Some("battery"));
        // No supply readable (SELinux): the status alone, and a paused charge may be a cable.
        for s in ["ac", "usb", "wireless"] {
            fs::remove_file(r.join(format!("sys/class/power_supply/{s}/online"))).unwrap();
        }
        assert_eq!(now(), Some("external"));
        write(r, "sys/class/power_supply/battery/status", "Unknown\n");
        assert_eq!(now(), None);
        write(r, "sys/class/power_supply/battery/status", "Discharging\n");
        assert_eq!(now(), Some("battery"));
        // Nothing readable: no value, not "battery".
        fs::remove_file(r.join("sys/class/power_supply/battery/status")).unwrap();
        assert_eq!(now(), None);
        assert_eq!(power_source_name(7.0), "unknown");
        assert_eq!(power_source_name(0.5), "unknown");
    }

    #[test]
    fn empty_root_has_no_sensors_and_own_memory_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let set = SensorSet::discover(dir.path(), None);
        assert!(set.is_empty());
        let set = SensorSet::discover(dir.path(), Some(std::process::id()));
        let v = set.read();
        let rss = value(&set, &v, "process_rss_bytes").unwrap();
        let hwm = value(&set, &v, "process_hwm_bytes").unwrap();
        assert!(rss > 1e5 && hwm >= rss, "rss {rss} hwm {hwm}");
    }

    #[test]
    fn sampler_keeps_its_rate() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "sys/class/thermal/thermal_zone0/temp",
            "40000\n",
        );
        let set = SensorSet::discover(dir.path(), None);
        let (tx, rx) = std::sync::mpsc::channel();
        let epoch = Instant::now();
        let s = Sampler::start(set, 50.0, epoch, move |x| {
            let _ = tx.send(x);
        });
        std::thread::sleep(Duration::from_millis(500));
        let n = s.stop();
        let samples: Vec<Sample> = rx.try_iter().collect();
        assert_eq!(samples.len() as u64, n);
        // 25 expected; generous bounds against a loaded CI machine, but a sampler that
        // ignores its rate (1 sample, or thousands) fails.
        assert!((10..=30).contains(&n), "{n} samples in 0.5 s at 50 Hz");
        assert!(samples.windows(2).all(|w| w[1].t_s > w[0].t_s));
        assert!(samples.iter().all(|s| s.values == vec![Some(40.0)]));
    }
}
