//! The conditions a figure was measured under, read by the agent on the target: the CPU
//! frequency governor and limits per cluster (read after every repetition: thermal daemons move
//! `scaling_max_freq`), and the agent process's own SELinux mode, scheduling policy, cpuset and
//! allowed CPUs (read once, before any pin). Each is a short text, empty where the device does
//! not tell; the result rows carry them (see `socbench_reports::row::ResultRow`).

use crate::sensors::read_trim;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How the agent process runs (constant for one agent run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessConditions {
    /// `enforcing`, `permissive`, or empty where unknown (no SELinux, or not readable).
    pub selinux: String,
    /// Scheduling policy and nice value: `SCHED_OTHER nice 0`.
    pub sched: String,
    /// The cpuset (Android: `/top-app`, `/foreground`, `/` for a shell) or, without one, the
    /// cgroup v2 path.
    pub cpuset: String,
    /// CPUs the process may run on before any pin (`Cpus_allowed_list`: `0-7`).
    pub cpus_allowed: String,
}

/// CPU frequency policy per cluster (CPUs sharing a top frequency), in CPU order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreqConditions {
    /// Governor per cluster, `/`-joined: `schedutil/schedutil`.
    pub governor: String,
    /// `scaling_min_freq-scaling_max_freq` in MHz per cluster, `/`-joined: `300-1800/300-2800`.
    /// A maximum under the cluster's `cpuinfo_max_freq` is a cap (thermal, power HAL, a
    /// performance mode).
    pub freq_limits_mhz: String,
}

/// The name of a Linux scheduling policy number.
fn policy_name(p: u32) -> String {
    match p {
        0 => "SCHED_OTHER".into(),
        1 => "SCHED_FIFO".into(),
        2 => "SCHED_RR".into(),
        3 => "SCHED_BATCH".into(),
        5 => "SCHED_IDLE".into(),
        6 => "SCHED_DEADLINE".into(),
        n => format!("policy {n}"),
    }
}

/// `SCHED_… nice N` from a `/proc/<pid>/stat` line (fields 19 and 41).
pub fn sched_from_stat(stat: &str) -> Option<String> {
    // Fields after the command name, which may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let nice: i64 = f.get(19 - 3)?.parse().ok()?;
    let policy: u32 = f.get(41 - 3)?.parse().ok()?;
    Some(format!("{} nice {nice}", policy_name(policy)))
}

/// The process's conditions; `sysfs` is the sysfs root (`/` on a device), `proc_self` the
/// process's `/proc` directory.
pub fn process(sysfs: &Path, proc_self: &Path) -> ProcessConditions {
    let selinux = match read_trim(&sysfs.join("sys/fs/selinux/enforce")).as_deref() {
        Some("1") => "enforcing".to_owned(),
        Some("0") => "permissive".to_owned(),
        _ => std::process::Command::new("getenforce")
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_lowercase())
            .filter(|s| matches!(s.as_str(), "enforcing" | "permissive" | "disabled"))
            .unwrap_or_default(),
    };
    let sched = read_trim(&proc_self.join("stat"))
        .and_then(|s| sched_from_stat(&s))
        .unwrap_or_default();
    let cpuset = read_trim(&proc_self.join("cpuset"))
        .or_else(|| {
            read_trim(&proc_self.join("cgroup"))?
                .lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
        .unwrap_or_default();
    let cpus_allowed = read_trim(&proc_self.join("status"))
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Cpus_allowed_list:")
                    .map(|v| v.trim().to_owned())
            })
        })
        .unwrap_or_default();
    ProcessConditions {
        selinux,
        sched,
        cpuset,
        cpus_allowed,
    }
}

/// The frequency governor and limits per cluster under the sysfs root `sysfs`: one per
/// cpufreq policy (`cpufreq/policyN`, the CPUs that share a clock, as phones and most Linux
/// hosts have them), else per run of CPUs with the same `cpuinfo_max_freq`.
pub fn freq(sysfs: &Path) -> FreqConditions {
    let cpu_root = sysfs.join("sys/devices/system/cpu");
    let numbered = |dir: &Path, prefix: &str| -> Vec<(u32, std::path::PathBuf)> {
        let mut v: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| {
                    let e = e.ok()?;
                    let n = e.file_name().to_str()?.strip_prefix(prefix)?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
            })
            .unwrap_or_default();
        v.sort_unstable_by_key(|(n, _)| *n);
        v
    };
    let mut dirs: Vec<std::path::PathBuf> = numbered(&cpu_root.join("cpufreq"), "policy")
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d.join("cpuinfo_max_freq").exists())
        .collect();
    if dirs.is_empty() {
        let mut last_top = None;
        for (_, cpu) in numbered(&cpu_root, "cpu") {
            let d = cpu.join("cpufreq");
            let Some(top) = read_trim(&d.join("cpuinfo_max_freq")) else {
                continue;
            };
            if last_top.as_ref() != Some(&top) {
                dirs.push(d);
                last_top = Some(top);
            }
        }
    }
    let mhz = |d: &Path, f: &str| {
        read_trim(&d.join(f))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or("?".to_owned(), |khz| (khz / 1000).to_string())
    };
    FreqConditions {
        governor: dirs
            .iter()
            .map(|d| read_trim(&d.join("scaling_governor")).unwrap_or_else(|| "?".into()))
            .collect::<Vec<_>>()
            .join("/"),
        freq_limits_mhz: dirs
            .iter()
            .map(|d| {
                format!(
                    "{}-{}",
                    mhz(d, "scaling_min_freq"),
                    mhz(d, "scaling_max_freq")
                )
            })
            .collect::<Vec<_>>()
            .join("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::tests::write;
    use std::fs;

    #[test]
    fn clusters_and_their_limits() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for (cpu, top, gov, max) in [
            (0, 1_800_000, "schedutil", 1_800_000),
            (1, 1_800_000, "schedutil", 1_800_000),
            (2, 2_800_000, "performance", 2_000_000),
            (10, 2_800_000, "performance", 2_000_000),
        ] {
            let d = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq");
            write(r, &format!("{d}/cpuinfo_max_freq"), &format!("{top}\n"));
            write(r, &format!("{d}/scaling_governor"), &format!("{gov}\n"));
            write(r, &format!("{d}/scaling_min_freq"), "300000\n");
            write(r, &format!("{d}/scaling_max_freq"), &format!("{max}\n"));
        }
        fs::create_dir_all(r.join("sys/devices/system/cpu/cpufreq")).unwrap();
        let f = freq(r);
        assert_eq!(f.governor, "schedutil/performance");
        assert_eq!(f.freq_limits_mhz, "300-1800/300-2000");
        // Policy directories, where the kernel has them, decide the clusters: two with the
        // same top frequency stay two.
        for (p, gov, max) in [
            (0, "schedutil", 1_800_000),
            (4, "schedutil", 1_700_000),
            (6, "performance", 1_800_000),
        ] {
            let d = format!("sys/devices/system/cpu/cpufreq/policy{p}");
            write(r, &format!("{d}/cpuinfo_max_freq"), "1800000\n");
            write(r, &format!("{d}/scaling_governor"), &format!("{gov}\n"));
            write(r, &format!("{d}/scaling_min_freq"), "500000\n");
            write(r, &format!("{d}/scaling_max_freq"), &format!("{max}\n"));
        }
        let f = freq(r);
        assert_eq!(f.governor, "schedutil/schedutil/performance");
        assert_eq!(f.freq_limits_mhz, "500-1800/500-1700/500-1800");
        assert_eq!(freq(&r.join("none")), FreqConditions::default());
    }

    #[test]
    fn process_conditions_from_proc_and_selinux() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "sys/fs/selinux/enforce", "1\n");
        let stat = "4242 (socbench (agent)) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 -5 \
                    3 0 100 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 3 0 3 0 0 0";
        write(r, "proc/stat", stat);
        write(r, "proc/cpuset", "/top-app\n");
        write(r, "proc/status", "Name:\tagent\nCpus_allowed_list:\t0-7\n");
        let p = process(r, &r.join("proc"));
        assert_eq!(p.selinux, "enforcing");
        assert_eq!(p.sched, "SCHED_BATCH nice -5");
        assert_eq!(p.cpuset, "/top-app");
        assert_eq!(p.cpus_allowed, "0-7");
        // No cpuset file: the cgroup v2 path; permissive.
        fs::remove_file(r.join("proc/cpuset")).unwrap();
        write(r, "proc/cgroup", "0::/user.slice/session-1.scope\n");
        write(r, "sys/fs/selinux/enforce", "0\n");
        let p = process(r, &r.join("proc"));
        assert_eq!(p.cpuset, "/user.slice/session-1.scope");
        assert_eq!(p.selinux, "permissive");
        assert_eq!(sched_from_stat("1 (x) S 1"), None);
    }
}
