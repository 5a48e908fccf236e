//! Where the agent's threads actually ran: a phone may ignore or override a requested pin
//! (cpusets of the shell's cgroup, vendor schedulers), so the row says what happened, not what
//! was asked. Read from `/proc/self/task/*/stat`: each thread's CPU time and the CPU it last
//! ran on (field 39, `processor`).

use std::collections::HashMap;

/// CPU time (clock ticks, user + system) of each thread of this process, by thread id.
#[derive(Debug, Default, Clone)]
pub struct TaskTimes(HashMap<u32, u64>);

/// The fields of one `stat` line this module uses: CPU ticks and last CPU.
fn parse_stat(line: &str) -> Option<(u64, u32)> {
    // The command name (field 2) may hold spaces and parentheses: fields restart after the
    // last `)`, at field 3.
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let cpu: u32 = f.get(36)?.parse().ok()?;
    Some((utime + stime, cpu))
}

fn tasks() -> Vec<(u32, u64, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (ticks, cpu) = parse_stat(&stat)?;
            Some((tid, ticks, cpu))
        })
        .collect()
}

/// This process's threads' CPU times now.
pub fn snapshot() -> TaskTimes {
    TaskTimes(
        tasks()
            .into_iter()
            .map(|(t, ticks, _)| (t, ticks))
            .collect(),
    )
}

/// The CPUs (sorted, distinct) that the calling thread (which ran the model) and the threads
/// busy since `before` last ran on; empty where `/proc` cannot tell. CPU time counts in clock
/// ticks (10 ms), so a short run may show only the calling thread.
pub fn ran_on(before: &TaskTimes) -> Vec<u32> {
    let mut cpus: Vec<u32> = tasks()
        .into_iter()
        .filter(|(tid, ticks, _)| before.0.get(tid).is_none_or(|b| ticks > b))
        .map(|(_, _, cpu)| cpu)
        .collect();
    if let Some((_, cpu)) = std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
    {
        cpus.push(cpu);
    }
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// The CPUs to pin to for `requested`: the request itself, or, when the
/// `SOCBENCH_TEST_IGNORE_AFFINITY` hook is set (the virtual device's `--ignore-affinity`), the
/// allowed CPUs (`sched_getaffinity`) it did not ask for (a phone that moved the process
/// elsewhere); the request when there are none.
pub fn effective_pin(requested: &[u32], allowed: &[u32]) -> Vec<u32> {
    if std::env::var_os("SOCBENCH_TEST_IGNORE_AFFINITY").is_none() {
        return requested.to_vec();
    }
    let others: Vec<u32> = allowed
        .iter()
        .copied()
        .filter(|c| !requested.contains(c))
        .collect();
    if others.is_empty() {
        requested.to_vec()
    } else {
        others
    }
}

/// The CPUs this process may run on now (empty where the kernel does not say).
pub fn allowed() -> Vec<u32> {
    use nix::sched::{CpuSet, sched_getaffinity};
    let Ok(set) = sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .filter_map(|c| u32::try_from(c).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let tail = "S 1 1 1 0 -1 4194304 100 0 0 0 250 30 0 0 20 0 4 0 99 1000 200 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        assert_eq!(parse_stat(&format!("42 (a) b (c)) {tail}")), Some((280, 3)));
        assert_eq!(parse_stat("42 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_busy_thread_is_seen_on_a_cpu_this_process_may_use() {
        let before = snapshot();
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let cpus = ran_on(&before);
        assert!(!cpus.is_empty());
        let allowed = allowed();
        assert!(!allowed.is_empty());
        assert!(
            cpus.iter().all(|c| allowed.contains(c)),
            "{cpus:?} of {allowed:?}"
        );
    }
}
