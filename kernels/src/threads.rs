//! Observing the parallelism a computation really used.
//!
//! A thread setting can be silently ignored (a pool sized at first use, a backend that spawns
//! its own workers), so socbench measures instead of trusting it: it reads the CPU time of
//! every thread of the process from `/proc/self/task/*/stat` before and after the work, and
//! counts the threads that did a meaningful share of it.

use std::collections::HashMap;

/// CPU time (user + system, in clock ticks) of each thread of this process.
#[derive(Debug, Clone, Default)]
pub struct ThreadTimes(HashMap<u32, u64>);

impl ThreadTimes {
    /// Reads the current per-thread CPU times; empty where `/proc` is not available.
    pub fn now() -> Self {
        let mut times = HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return Self(times);
        };
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(ticks) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat_ticks)
            {
                times.insert(tid, ticks);
            }
        }
        Self(times)
    }

    /// Threads that used at least `min_share` of the CPU time spent since `earlier`, or
    /// `None` when no CPU time could be read (no `/proc`, or too short a run to measure).
    pub fn busy_since(&self, earlier: &ThreadTimes, min_share: f64) -> Option<usize> {
        self.busy_threads_since(earlier, min_share).map(|t| t.len())
    }

    /// The ids of the threads counted by [`busy_since`](Self::busy_since).
    pub fn busy_threads_since(&self, earlier: &ThreadTimes, min_share: f64) -> Option<Vec<u32>> {
        let deltas: Vec<(u32, u64)> = self
            .0
            .iter()
            .map(|(&tid, &t)| {
                (
                    tid,
                    t.saturating_sub(earlier.0.get(&tid).copied().unwrap_or(0)),
                )
            })
            .collect();
        let total: u64 = deltas.iter().map(|(_, d)| d).sum();
        if total < 10 {
            return None;
        }
        Some(
            deltas
                .into_iter()
                .filter(|&(_, d)| d as f64 >= min_share * total as f64)
                .map(|(tid, _)| tid)
                .collect(),
        )
    }
}

/// The kernel id of the calling thread, where `/proc` provides it.
pub fn current_tid() -> Option<u32> {
    std::fs::read_link("/proc/thread-self")
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// utime + stime from a `/proc/[pid]/task/[tid]/stat` line. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_a_tricky_name() {
        let line = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(line), Some(333));
    }

    #[test]
    fn counts_exactly_the_threads_that_worked() {
        use std::sync::mpsc;
        let before = ThreadTimes::now();
        let mut exits = Vec::new();
        let mut handles = Vec::new();
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..2 {
            let (exit_tx, exit_rx) = mpsc::channel::<()>();
            let done_tx = done_tx.clone();
            exits.push(exit_tx);
            handles.push(std::thread::spawn(move || {
                let tid = current_tid();
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while start.elapsed().as_millis() < 400 {
                    x = x.wrapping_add(std::hint::black_box(1));
                }
                done_tx.send(()).ok();
                exit_rx.recv().ok(); // stay alive, idle, until measured
                (tid, x)
            }));
        }
        // The main thread sleeps meanwhile, so only the two spinners accumulate time.
        for _ in 0..2 {
            done_rx.recv().ok();
        }
        let after = ThreadTimes::now();
        drop(exits);
        let tids: Vec<u32> = handles
            .into_iter()
            .filter_map(|h| h.join().ok().and_then(|(tid, _)| tid))
            .collect();
        assert_eq!(tids.len(), 2, "thread ids readable from /proc");
        // Other tests may run beside this one in the process: only require that both
        // spinners count as busy and the sleeping main thread does not.
        let busy = after.busy_threads_since(&before, 0.1).unwrap_or_default();
        for tid in &tids {
            assert!(
                busy.contains(tid),
                "spinner {tid} not counted among {busy:?}"
            );
        }
        let main = current_tid().unwrap_or(0);
        assert!(
            !busy.contains(&main),
            "the sleeping main thread counted as busy"
        );
    }
}
