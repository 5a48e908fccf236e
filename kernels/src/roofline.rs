//! The device's two ceilings, measured on the device: memory bandwidth (the STREAM triad,
//! `a[i] = b[i] + s·c[i]`) and f32 GEMM throughput, each per thread count.
//!
//! Decode at batch 1 streams every weight once per token, so `weight bytes × tokens/s` over
//! the triad bandwidth says how close decode is to the memory roof; prefill is matrix-matrix
//! work, so `2 × parameters × tokens/s` over the GEMM rate says how close it is to the compute
//! roof. The GEMM is `matrixmultiply`'s sgemm (a packed, SIMD microkernel; the one NdArray
//! uses), one independent product per thread, so the figure is what the cores can do rather
//! than how well one matmul splits.
//!
//! Every repetition's time is kept (`samples_s`); the figure reported is the best one, as
//! STREAM does: the roof is what the hardware can reach, not its average under interference.

use serde::{Deserialize, Serialize};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// How much work each measurement does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeOptions {
    /// Total bytes of the three triad arrays (split among the threads); well beyond the
    /// last-level cache.
    pub triad_bytes: usize,
    /// Side of the square GEMM each thread runs.
    pub gemm_n: usize,
    /// Timed repetitions per measurement.
    pub repetitions: usize,
    /// Target duration of one repetition (the work is sized to it after a calibration run).
    pub rep_time: Duration,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            triad_bytes: 192 << 20,
            gemm_n: 256,
            repetitions: 5,
            rep_time: Duration::from_millis(200),
        }
    }
}

impl ProbeOptions {
    /// Short: for tests and emulated devices. The triad arrays stay well beyond a last-level
    /// cache (24 MiB ones read as 5× the true bandwidth on a 2-vCPU EPYC).
    pub fn quick() -> Self {
        Self {
            triad_bytes: 96 << 20,
            gemm_n: 128,
            repetitions: 3,
            rep_time: Duration::from_millis(30),
        }
    }
}

/// One measurement at one thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoofPoint {
    /// Threads that ran at once.
    pub threads: usize,
    /// The best repetition's rate: GB/s (10⁹ bytes) for the triad, GFLOP/s for GEMM.
    pub best: f64,
    /// The median repetition's rate.
    pub median: f64,
    /// Bytes moved (triad) or floating-point operations (GEMM) per repetition.
    pub work_per_rep: f64,
    /// Every repetition's wall time, in order.
    pub samples_s: Vec<f64>,
}

/// The probe's result for one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Roofline {
    /// Triad bandwidth per thread count (GB/s).
    pub triad: Vec<RoofPoint>,
    /// f32 GEMM throughput per thread count (GFLOP/s).
    pub gemm: Vec<RoofPoint>,
    /// The options used.
    pub options: ProbeOptions,
}

impl Roofline {
    /// The best triad bandwidth in bytes/s with at most `threads` threads (the largest
    /// measured count not above it; the smallest measured otherwise).
    pub fn bandwidth_bytes_per_s(&self, threads: usize) -> Option<f64> {
        pick(&self.triad, threads).map(|p| p.best * 1e9)
    }

    /// The best GEMM rate in FLOP/s with at most `threads` threads.
    pub fn gemm_flop_per_s(&self, threads: usize) -> Option<f64> {
        pick(&self.gemm, threads).map(|p| p.best * 1e9)
    }
}

fn pick(points: &[RoofPoint], threads: usize) -> Option<&RoofPoint> {
    points
        .iter()
        .filter(|p| p.threads <= threads)
        .max_by_key(|p| p.threads)
        .or_else(|| points.iter().min_by_key(|p| p.threads))
}

fn point(threads: usize, work_per_rep: f64, samples_s: Vec<f64>) -> RoofPoint {
    let mut rates: Vec<f64> = samples_s
        .iter()
        .map(|t| work_per_rep / t.max(1e-12) / 1e9)
        .collect();
    rates.sort_by(f64::total_cmp);
    RoofPoint {
        threads,
        best: rates.last().copied().unwrap_or(0.0),
        median: rates.get(rates.len() / 2).copied().unwrap_or(0.0),
        work_per_rep,
        samples_s,
    }
}

/// Runs `work(thread index, iterations)` on `threads` threads at once, `reps` times, and
/// returns the time of each repetition: all threads leave a barrier together, each times its
/// own work, and the repetition lasts as long as the slowest (timing on the workers, not on a
/// coordinator that may be scheduled late). `setup` builds each thread's private state on
/// that thread, so its memory is first touched where it is used.
fn timed<S>(
    threads: usize,
    reps: usize,
    iterations: usize,
    setup: impl Fn(usize) -> S + Sync,
    work: impl Fn(&mut S, usize) + Sync,
) -> Vec<f64> {
    let start = Barrier::new(threads);
    let per_thread: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (start, setup, work) = (&start, &setup, &work);
                s.spawn(move || {
                    let mut state = setup(t);
                    (0..reps)
                        .map(|_| {
                            start.wait();
                            let t0 = Instant::now();
                            work(&mut state, iterations);
                            t0.elapsed().as_secs_f64()
                        })
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    (0..reps)
        .map(|r| {
            per_thread
                .iter()
                .filter_map(|v| v.get(r).copied())
                .fold(0.0, f64::max)
        })
        .collect()
}

/// Iterations that make one repetition last about `target`, from one calibration run.
fn calibrate(one: f64, target: Duration) -> usize {
    ((target.as_secs_f64() / one.max(1e-9)).ceil() as usize).clamp(1, 1 << 20)
}

/// STREAM triad bandwidth with `threads` threads. Bytes are counted as STREAM counts them: two
/// loads and one store per element (12 bytes for f32); the write-allocate read is not counted.
pub fn triad(threads: usize, opts: &ProbeOptions) -> RoofPoint {
    let threads = threads.max(1);
    // Three f32 arrays per thread.
    let per_thread = (opts.triad_bytes / 12 / threads).max(1024);
    let setup = |t: usize| {
        let b = vec![1.0f32 + t as f32; per_thread];
        let c = vec![2.0f32; per_thread];
        let a = vec![0.0f32; per_thread];
        (a, b, c)
    };
    let work = |(a, b, c): &mut (Vec<f32>, Vec<f32>, Vec<f32>), iterations: usize| {
        let s = 3.0f32;
        for _ in 0..iterations {
            for ((x, y), z) in a.iter_mut().zip(b.iter()).zip(c.iter()) {
                *x = y + s * z;
            }
            std::hint::black_box(&mut *a);
        }
    };
    let one = timed(threads, 1, 1, setup, work)[0];
    let iterations = calibrate(one, opts.rep_time);
    let samples = timed(threads, opts.repetitions, iterations, setup, work);
    let bytes = (12 * per_thread * threads * iterations) as f64;
    point(threads, bytes, samples)
}

/// f32 GEMM throughput with `threads` threads, each multiplying its own `n × n` matrices.
///
/// Call [`crate::backend::set_matmul_threads`]`(1)` first in a process that probes: each
/// product must run on its caller's thread, not on `matrixmultiply`'s own pool.
pub fn gemm(threads: usize, opts: &ProbeOptions) -> RoofPoint {
    use ndarray::Array2;
    use ndarray::linalg::general_mat_mul;
    let threads = threads.max(1);
    let n = opts.gemm_n.max(8);
    let setup = |t: usize| {
        let a = Array2::from_shape_fn((n, n), |(i, j)| ((i * 7 + j * 3 + t) % 17) as f32 * 0.1);
        let b = Array2::from_shape_fn((n, n), |(i, j)| ((i + j * 5) % 13) as f32 * 0.1);
        let c = Array2::<f32>::zeros((n, n));
        (a, b, c)
    };
    let work = |(a, b, c): &mut (Array2<f32>, Array2<f32>, Array2<f32>), iterations: usize| {
        for _ in 0..iterations {
            general_mat_mul(1.0, a, b, 0.0, c);
            std::hint::black_box(&mut *c);
        }
    };
    let one = timed(threads, 1, 1, setup, work)[0];
    let iterations = calibrate(one, opts.rep_time);
    let samples = timed(threads, opts.repetitions, iterations, setup, work);
    let flops = (2 * n * n * n * threads * iterations) as f64;
    point(threads, flops, samples)
}

/// The thread counts a device is probed at: powers of two up to its CPU count, and the count
/// itself.
pub fn default_thread_counts(cpus: usize) -> Vec<usize> {
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |t| Some(t * 2))
        .take_while(|&t| t <= cpus.max(1))
        .collect();
    if v.last() != Some(&cpus.max(1)) {
        v.push(cpus.max(1));
    }
    v
}

/// Measures both roofs at every thread count in `threads`.
pub fn probe(threads: &[usize], opts: &ProbeOptions) -> Roofline {
    Roofline {
        triad: threads.iter().map(|&t| triad(t, opts)).collect(),
        gemm: threads.iter().map(|&t| gemm(t, opts)).collect(),
        options: *opts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_measures_positive_rates_and_keeps_every_sample() {
        let opts = ProbeOptions::quick();
        let r = probe(&[1, 2], &opts);
        for p in r.triad.iter().chain(&r.gemm) {
            assert_eq!(p.samples_s.len(), opts.repetitions);
            assert!(p.best >= p.median && p.median > 0.0, "{p:?}");
            assert!(p.samples_s.iter().all(|t| *t > 0.0), "{p:?}");
        }
        // Units: a triad in GB/s and a GEMM in GFLOP/s on any machine that runs this test
        // are between a tenth and a few thousand.
        assert!((0.1..5000.0).contains(&r.triad[0].best), "{:?}", r.triad[0]);
        assert!((0.1..5000.0).contains(&r.gemm[0].best), "{:?}", r.gemm[0]);
        assert_eq!(r.bandwidth_bytes_per_s(1), Some(r.triad[0].best * 1e9));
        assert_eq!(r.gemm_flop_per_s(8), Some(r.gemm[1].best * 1e9));
    }

    #[test]
    fn thread_counts_are_powers_of_two_and_the_cpu_count() {
        assert_eq!(default_thread_counts(1), vec![1]);
        assert_eq!(default_thread_counts(2), vec![1, 2]);
        assert_eq!(default_thread_counts(6), vec![1, 2, 4, 6]);
        assert_eq!(default_thread_counts(8), vec![1, 2, 4, 8]);
    }

    #[test]
    fn a_roof_below_every_measured_count_falls_back_to_the_smallest() {
        let p = |threads, best| RoofPoint {
            threads,
            best,
            median: best,
            work_per_rep: 1.0,
            samples_s: vec![1.0],
        };
        let r = Roofline {
            triad: vec![p(2, 10.0), p(4, 20.0)],
            gemm: vec![],
            options: ProbeOptions::quick(),
        };
        assert_eq!(r.bandwidth_bytes_per_s(1), Some(10e9));
        assert_eq!(r.bandwidth_bytes_per_s(3), Some(10e9));
        assert_eq!(r.bandwidth_bytes_per_s(16), Some(20e9));
        assert_eq!(r.gemm_flop_per_s(1), None);
    }
}
