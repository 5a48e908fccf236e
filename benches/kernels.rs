//! Criterion benches of the kernels at the model's shapes.
//!
//! - `matmul/<backend>/<level>/<d_in>x<d_out>/rows<R>`: one projection `[R, d_in] × [d_in,
//!   d_out]` at SmolLM2's shapes (576×576, 576×1536, 1536×576, 576×49152), rows 1 (decode) and
//!   128 (prefill), at every level the backend runs (the support table in `quant.rs`). On the
//!   CPU backends q8 and q4 are socbench's packed kernels (`kernels/src/qmatmul`) with this
//!   CPU's best variant; `q8-x86-avx2` and the like, the same blocks on each other SIMD variant
//!   this CPU has (`--kernel`); `q8-burn` the product through Burn's own quantized tensors.
//! - `decode_step/<backend>/<level>/kv<W>`: one token through the whole model after a
//!   256-token context, full cache or a 64-position window (attention cost with the window).
//! - `prefill/<backend>/<level>/p128`: a 128-token prompt.
//! - `sampler/read`: one read of every sensor this host has; `sampler/decode_16` with the
//!   sampler off and at 50 Hz: what sampling costs the model.
//!
//! Run: `cargo bench --bench kernels [-- FILTER]`. The model benches use SmolLM2 when it is in
//! the cache (`socbench fetch-model`), else the seeded tiny model (said on stderr).
//! `cargo test --workspace` runs each bench once as a smoke test, on the tiny model and the
//! smallest shape, so the suite stays quick.
#![allow(clippy::unwrap_used)] // a bench that cannot set up should stop loudly

use burn::prelude::*;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use socbench_devices::sensors::{Sampler, SensorSet};
use socbench_kernels::backend::{BackendKind, Runtime};
use socbench_kernels::load::{LoadedModel, ModelSpec, SplitMix64};
use socbench_kernels::model::{KvCache, Logits, Proj};
use socbench_kernels::qmatmul::{self, KernelTier};
use socbench_kernels::quant::{self, QuantLevel};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SHAPES: [(usize, usize); 4] = [(576, 576), (576, 1536), (1536, 576), (576, 49152)];
const LEVELS: [QuantLevel; 3] = [QuantLevel::F32, QuantLevel::Q8, QuantLevel::Q4];

/// `cargo bench` passes `--bench`; `cargo test` does not (smoke mode).
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn backends() -> Vec<BackendKind> {
    // wgpu only where an adapter exists (Mesa's lavapipe counts).
    BackendKind::built()
        .into_iter()
        .filter(|b| Runtime::new(*b, 1).is_ok())
        .collect()
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    (0..n).map(|_| (rng.next_f32() - 0.5) * 0.1).collect()
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for backend in backends() {
        let rt = Runtime::new(backend, 1).unwrap();
        for level in LEVELS {
            if level.support(backend).is_err() {
                continue;
            }
            let shapes = if measuring() {
                &SHAPES[..]
            } else {
                &SHAPES[..1]
            };
            for &(d_in, d_out) in shapes {
                let weight = || {
                    rt.run(|d| {
                        Proj::new(Tensor::from_data(
                            TensorData::new(random(d_in * d_out, 7), [d_in, d_out]),
                            d,
                        ))
                    })
                };
                let mut variants = Vec::new();
                let mut proj = weight();
                rt.run(|_| quant::quantize_proj(&mut proj, level, backend));
                variants.push((level.to_string(), proj));
                // The other SIMD variants this CPU has, on the same blocks: a runtime each.
                let mut tiers = Vec::new();
                if quant::packed_format(level, backend).is_some() {
                    for name in qmatmul::kernel_names() {
                        let tier = KernelTier::parse(name).unwrap();
                        if name != "portable" && name != qmatmul::kernel_name() {
                            let rt = Runtime::with_kernel(backend, 1, tier).unwrap();
                            tiers.push((format!("{level}-{name}"), rt));
                        }
                    }
                }
                if quant::packed_format(level, backend).is_some() && level == QuantLevel::Q8 {
                    let mut stock = weight();
                    rt.run(|_| quant::quantize_proj_burn(&mut stock, level, backend));
                    variants.push((format!("{level}-burn"), stock));
                }
                let runs: Vec<(&str, &Proj, &Runtime)> = variants
                    .iter()
                    .map(|(n, p)| (n.as_str(), p, &rt))
                    .chain(tiers.iter().map(|(n, t)| (n.as_str(), &variants[0].1, t)))
                    .collect();
                for (name, proj, rt) in runs {
                    for rows in [1, 128] {
                        let x: Tensor<2> = rt.run(|d| {
                            let data = TensorData::new(random(rows * d_in, 9), [rows, d_in]);
                            Tensor::from_data(data, d)
                        });
                        let id = format!("{backend}/{name}/{d_in}x{d_out}/rows{rows}");
                        g.bench_function(BenchmarkId::from_parameter(id), |b| {
                            b.iter(|| {
                                rt.run(|_| {
                                    let y = proj.forward(x.clone());
                                    black_box(y.into_data());
                                })
                            })
                        });
                    }
                }
            }
        }
    }
    g.finish();
}

fn model_spec() -> ModelSpec {
    if !measuring() {
        return ModelSpec::SyntheticTiny;
    }
    let cached = std::env::var_os("SOCBENCH_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/socbench"))
        })
        .map(|d| d.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    match cached.filter(|p| p.is_file()) {
        Some(p) => ModelSpec::File(p),
        None => {
            eprintln!(
                "SmolLM2 is not in the cache (`socbench fetch-model`): benching the tiny model"
            );
            ModelSpec::SyntheticTiny
        }
    }
}

fn open(backend: BackendKind, level: QuantLevel) -> (Runtime, LoadedModel) {
    let rt = Runtime::new(backend, 1).unwrap();
    let mut loaded = rt.run(|d| model_spec().load(d)).unwrap();
    rt.run(|_| quant::apply(&mut loaded.model, level, backend));
    (rt, loaded)
}

fn tokens(n: usize, vocab: usize, d: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = (0..n).map(|i| ((i * 37 + 11) % vocab) as i64).collect();
    Tensor::from_data(TensorData::new(ids, [1, n]), d)
}

fn model_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("model");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for backend in backends() {
        for level in [QuantLevel::F32, QuantLevel::Q8] {
            if level.support(backend).is_err() {
                continue;
            }
            let (rt, loaded) = open(backend, level);
            let vocab = loaded.config.vocab_size;
            let n_layers = loaded.model.n_layers();
            for window in [None, Some(64)] {
                // A 256-token context, then one step at a time from a copy of that cache.
                let mut base = KvCache::new(n_layers, window);
                rt.run(|d| {
                    black_box(
                        loaded
                            .model
                            .forward(tokens(256, vocab, d), &mut base, Logits::Last),
                    );
                });
                let kv = window.map_or("full".to_owned(), |w| w.to_string());
                g.bench_function(format!("decode_step/{backend}/{level}/kv{kv}"), |b| {
                    b.iter_batched(
                        || base.clone(),
                        |mut cache| {
                            rt.run(|d| {
                                let y = loaded.model.forward(
                                    tokens(1, vocab, d),
                                    &mut cache,
                                    Logits::Last,
                                );
                                black_box(y.into_data());
                            })
                        },
                        criterion::BatchSize::LargeInput,
                    )
                });
            }
            g.bench_function(format!("prefill/{backend}/{level}/p128"), |b| {
                b.iter(|| {
                    rt.run(|d| {
                        let mut cache = KvCache::new(n_layers, None);
                        let y =
                            loaded
                                .model
                                .forward(tokens(128, vocab, d), &mut cache, Logits::Last);
                        black_box(y.into_data());
                    })
                })
            });
        }
    }
    g.finish();
}

fn sampler(c: &mut Criterion) {
    let set = SensorSet::discover(std::path::Path::new("/"), Some(std::process::id()));
    let mut g = c.benchmark_group("sampler");
    g.sample_size(20);
    g.bench_function("read", |b| b.iter(|| black_box(set.read())));
    // What sampling at 50 Hz costs decode: 16 tokens with the sampler off, then on.
    let (rt, loaded) = open(BackendKind::Flex, QuantLevel::F32);
    let vocab = loaded.config.vocab_size;
    let n_layers = loaded.model.n_layers();
    let decode16 = || {
        rt.run(|d| {
            let mut cache = KvCache::new(n_layers, None);
            for _ in 0..16 {
                let y = loaded
                    .model
                    .forward(tokens(1, vocab, d), &mut cache, Logits::Last);
                black_box(y.into_data());
            }
        })
    };
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("decode_16/sampler_off", |b| b.iter(decode16));
    let on = Sampler::start(set.clone(), 50.0, Instant::now(), |s| {
        black_box(s);
    });
    g.bench_function("decode_16/sampler_50hz", |b| b.iter(decode16));
    on.stop();
    g.finish();
}

criterion_group!(benches, matmul, model_benches, sampler);
criterion_main!(benches);
