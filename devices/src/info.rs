//! What a device is: identity, ABI, CPU topology, memory, battery, and whether its sensors are
//! real. Gathered with one shell script ([`PROBE_SCRIPT`]) that runs the same on the local host,
//! a phone and the virtual device, and parsed here, so every kind of target is described by the
//! same code.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How socbench reaches a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// This machine, without ADB.
    Local,
    /// An Android device (or anything speaking adbd) behind an adb server.
    Adb,
}

/// Whether sensor readings come from hardware or from a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorOrigin {
    /// Read from the device's own sysfs.
    Real,
    /// Produced by socbench's virtual device (power and thermal models driven by real CPU
    /// load). Reports label such figures as simulated.
    Simulated,
}

/// CPUs that share a maximum frequency: one cluster of a big.LITTLE design.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuCluster {
    /// `little`, `mid`, `big` (or `all` on a uniform CPU).
    pub name: String,
    /// Logical CPU numbers.
    pub cpus: Vec<u32>,
    /// Maximum frequency in kHz, when the device exposes cpufreq.
    pub max_khz: Option<u64>,
}

/// Everything socbench records about a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// `local`, or the adb serial.
    pub serial: String,
    /// How it is reached.
    pub kind: DeviceKind,
    /// The adb server (`host:port`) it was found on.
    pub adb_server: Option<String>,
    /// Manufacturer (`ro.product.manufacturer`), when known.
    pub manufacturer: Option<String>,
    /// Model name (`ro.product.model`, or the CPU model on a Linux host).
    pub model: Option<String>,
    /// SoC or board (`ro.soc.model`, `ro.board.platform`, `ro.product.board`).
    pub soc: Option<String>,
    /// Android-style ABI: `arm64-v8a`, `x86_64`, `armeabi-v7a`, `x86`, or the raw machine name.
    pub abi: String,
    /// OS release: Android version and kernel, or the Linux distribution and kernel.
    pub os_release: Option<String>,
    /// Logical CPUs.
    pub cpu_count: usize,
    /// Clusters by maximum frequency, slowest first.
    pub clusters: Vec<CpuCluster>,
    /// Total RAM in bytes.
    pub total_ram_bytes: Option<u64>,
    /// GPU model, when the device names it.
    pub gpu: Option<String>,
    /// Battery design capacity in µAh, when known.
    pub battery_design_uah: Option<u64>,
    /// Real or simulated sensors.
    pub sensors: SensorOrigin,
}

/// The script whose output [`DeviceInfo::parse`] reads. Every section starts with a `@@name`
/// line; a file a device lacks simply leaves its section empty.
pub const PROBE_SCRIPT: &str = r#"echo @@machine; uname -m
echo @@kernel; uname -r
echo @@props; getprop 2>/dev/null
echo @@cpuinfo; cat /proc/cpuinfo 2>/dev/null
echo @@possible; cat /sys/devices/system/cpu/possible 2>/dev/null
echo @@maxfreq; for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do [ -r "$f" ] && echo "$f $(cat "$f")"; done
echo @@meminfo; cat /proc/meminfo 2>/dev/null
echo @@battery; cat /sys/class/power_supply/battery/charge_full_design 2>/dev/null
echo @@gpu; cat /sys/class/kgsl/kgsl-3d0/gpu_model 2>/dev/null
echo @@osrelease; cat /etc/os-release 2>/dev/null
echo @@end"#;

fn sections(text: &str) -> BTreeMap<&str, Vec<&str>> {
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut current = "";
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("@@") {
            current = name.trim();
            out.entry(current).or_default();
        } else if !current.is_empty() {
            out.entry(current).or_default().push(line);
        }
    }
    out
}

/// Parses `getprop` output (`[key]: [value]` lines).
pub fn parse_getprop(lines: &[&str]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|l| {
            let (k, v) = l.split_once("]: [")?;
            let k = k.strip_prefix('[')?;
            let v = v.strip_suffix(']')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Maps `uname -m` to the Android ABI name.
pub fn abi_from_machine(machine: &str) -> String {
    match machine.trim() {
        "aarch64" | "arm64" => "arm64-v8a".into(),
        "x86_64" | "amd64" => "x86_64".into(),
        "armv7l" | "armv8l" | "armv7" => "armeabi-v7a".into(),
        "i686" | "i386" | "x86" => "x86".into(),
        other => other.into(),
    }
}

/// Parses a kernel CPU list (`0-3,6,8-9`).
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// Groups CPUs into clusters by maximum frequency: `little` < `mid` < `big` (`mid1`, `mid2`…
/// when there are more than three speeds, `all` when there is one).
pub fn clusters(cpus: &[u32], max_khz: &BTreeMap<u32, u64>) -> Vec<CpuCluster> {
    if max_khz.is_empty() {
        return vec![CpuCluster {
            name: "all".into(),
            cpus: cpus.to_vec(),
            max_khz: None,
        }];
    }
    let mut speeds: Vec<u64> = max_khz.values().copied().collect();
    speeds.sort_unstable();
    speeds.dedup();
    let n = speeds.len();
    speeds
        .iter()
        .enumerate()
        .map(|(i, &khz)| {
            let name = match (n, i) {
                (1, _) => "all".to_owned(),
                (_, 0) => "little".to_owned(),
                (_, i) if i == n - 1 => "big".to_owned(),
                (3, _) => "mid".to_owned(),
                (_, i) => format!("mid{i}"),
            };
            CpuCluster {
                name,
                cpus: max_khz
                    .iter()
                    .filter(|&(_, &f)| f == khz)
                    .map(|(&c, _)| c)
                    .collect(),
                max_khz: Some(khz),
            }
        })
        .collect()
}

impl DeviceInfo {
    /// Parses the output of [`PROBE_SCRIPT`].
    pub fn parse(serial: &str, kind: DeviceKind, adb_server: Option<String>, text: &str) -> Self {
        let s = sections(text);
        let get = |k: &str| s.get(k).map(Vec::as_slice).unwrap_or(&[]);
        let first = |k: &str| {
            get(k)
                .iter()
                .map(|l| l.trim())
                .find(|l| !l.is_empty())
                .map(str::to_owned)
        };
        let props = parse_getprop(get("props"));
        let prop = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| props.get(*k).filter(|v| !v.is_empty()).cloned())
        };
        let cpuinfo = get("cpuinfo");
        let cpuinfo_field = |key: &str| {
            cpuinfo.iter().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_owned())
            })
        };
        let processors: Vec<u32> = cpuinfo
            .iter()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "processor").then(|| v.trim().parse().ok())?
            })
            .collect();
        let cpus = first("possible")
            .and_then(|l| parse_cpu_list(&l))
            .unwrap_or(processors);
        let max_khz: BTreeMap<u32, u64> = get("maxfreq")
            .iter()
            .filter_map(|l| {
                let (path, khz) = l.trim().rsplit_once(' ')?;
                let cpu = path
                    .split('/')
                    .find_map(|c| c.strip_prefix("cpu")?.parse::<u32>().ok())?;
                Some((cpu, khz.parse().ok()?))
            })
            .collect();
        let total_ram_bytes = get("meminfo").iter().find_map(|l| {
            let rest = l.strip_prefix("MemTotal:")?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        });
        let machine = first("machine").unwrap_or_default();
        let abi = prop(&["ro.product.cpu.abi"]).unwrap_or_else(|| abi_from_machine(&machine));
        let kernel = first("kernel");
        let os_release = match prop(&["ro.build.version.release"]) {
            Some(android) => Some(format!(
                "Android {android}{}",
                kernel.map(|k| format!(", kernel {k}")).unwrap_or_default()
            )),
            None => {
                let distro = get("osrelease").iter().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_owned())
                });
                match (distro, kernel) {
                    (Some(d), Some(k)) => Some(format!("{d}, kernel {k}")),
                    (d, k) => d.or(k.map(|k| format!("Linux {k}"))),
                }
            }
        };
        let simulated = prop(&["ro.socbench.virtual"]).is_some_and(|v| v == "1");
        let cpus_sorted = {
            let mut c = cpus;
            c.sort_unstable();
            c.dedup();
            c
        };
        Self {
            serial: serial.to_owned(),
            kind,
            adb_server,
            manufacturer: prop(&["ro.product.manufacturer"]),
            model: prop(&["ro.product.model"]).or_else(|| cpuinfo_field("model name")),
            soc: prop(&["ro.soc.model", "ro.board.platform", "ro.product.board"])
                .or_else(|| cpuinfo_field("Hardware")),
            abi,
            os_release,
            cpu_count: cpus_sorted.len().max(1),
            clusters: clusters(&cpus_sorted, &max_khz),
            total_ram_bytes,
            gpu: first("gpu"),
            battery_design_uah: first("battery").and_then(|v| v.parse().ok()),
            sensors: if simulated {
                SensorOrigin::Simulated
            } else {
                SensorOrigin::Real
            },
        }
    }

    /// The CPUs of the named cluster (`big`, `little`, `mid`, `all`), if it exists.
    pub fn cluster_cpus(&self, name: &str) -> Option<Vec<u32>> {
        if name == "all" {
            return Some(self.clusters.iter().flat_map(|c| c.cpus.clone()).collect());
        }
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .or_else(|| {
                // A uniform CPU has one cluster: `big` and `little` both mean all of it.
                (self.clusters.len() == 1 && (name == "big" || name == "little"))
                    .then(|| &self.clusters[0])
            })
            .map(|c| c.cpus.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHONE: &str = "@@machine\naarch64\n@@kernel\n5.10.149\n@@props\n\
        [ro.product.model]: [Pixel 7]\n[ro.product.manufacturer]: [Google]\n\
        [ro.soc.model]: [GS201]\n[ro.product.cpu.abi]: [arm64-v8a]\n\
        [ro.build.version.release]: [14]\n@@cpuinfo\nprocessor\t: 0\nprocessor\t: 1\n\
        @@possible\n0-7\n@@maxfreq\n\
        /sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq 1803000\n\
        /sys/devices/system/cpu/cpu1/cpufreq/cpuinfo_max_freq 1803000\n\
        /sys/devices/system/cpu/cpu2/cpufreq/cpuinfo_max_freq 1803000\n\
        /sys/devices/system/cpu/cpu3/cpufreq/cpuinfo_max_freq 1803000\n\
        /sys/devices/system/cpu/cpu4/cpufreq/cpuinfo_max_freq 2348000\n\
        /sys/devices/system/cpu/cpu5/cpufreq/cpuinfo_max_freq 2348000\n\
        /sys/devices/system/cpu/cpu6/cpufreq/cpuinfo_max_freq 2850000\n\
        /sys/devices/system/cpu/cpu7/cpufreq/cpuinfo_max_freq 2850000\n\
        @@meminfo\nMemTotal:        7869560 kB\n@@battery\n4355000\n@@gpu\n@@osrelease\n@@end\n";

    #[test]
    fn phone_probe_parses() {
        let info = DeviceInfo::parse("abc", DeviceKind::Adb, None, PHONE);
        assert_eq!(info.model.as_deref(), Some("Pixel 7"));
        assert_eq!(info.soc.as_deref(), Some("GS201"));
        assert_eq!(info.abi, "arm64-v8a");
        assert_eq!(info.cpu_count, 8);
        let names: Vec<&str> = info.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["little", "mid", "big"]);
        assert_eq!(info.cluster_cpus("big"), Some(vec![6, 7]));
        assert_eq!(info.cluster_cpus("little"), Some(vec![0, 1, 2, 3]));
        assert_eq!(info.total_ram_bytes, Some(7_869_560 * 1024));
        assert_eq!(info.battery_design_uah, Some(4_355_000));
        assert_eq!(info.gpu, None);
        assert_eq!(
            info.os_release.as_deref(),
            Some("Android 14, kernel 5.10.149")
        );
        assert_eq!(info.sensors, SensorOrigin::Real);
    }

    #[test]
    fn uniform_host_has_one_cluster() {
        let text = "@@machine\nx86_64\n@@cpuinfo\nprocessor : 0\nmodel name : EPYC\n\
                    processor : 1\n@@possible\n@@maxfreq\n@@osrelease\nPRETTY_NAME=\"Debian\"\n";
        let info = DeviceInfo::parse("local", DeviceKind::Local, None, text);
        assert_eq!(info.abi, "x86_64");
        assert_eq!(info.cpu_count, 2);
        assert_eq!(info.clusters.len(), 1);
        assert_eq!(info.cluster_cpus("big"), Some(vec![0, 1]));
        assert_eq!(info.model.as_deref(), Some("EPYC"));
        assert_eq!(info.total_ram_bytes, None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(vec![0, 1, 2, 3, 6, 8, 9]));
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list("3-1"), None);
    }
}
