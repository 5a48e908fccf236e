use super::*;
use crate::backend::BackendKind;
use crate::dequant::{dequantize, quantize_q4_1};
use crate::gguf::GgmlType;
use crate::load::SplitMix64;
use burn::prelude::*;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

/// A `[d_in, d_out]` weight whose values went through GGUF's Q4_1 encoder (per output row).
fn q4_1_weight(d_in: usize, d_out: usize) -> Vec<f32> {
    let raw = random(d_in * d_out, 5);
    let mut rows = vec![0f32; raw.len()];
    dequantize(GgmlType::Q4_1, &quantize_q4_1(&raw), &mut rows).expect("q4_1 decodes");
    let mut w = vec![0f32; raw.len()];
    for o in 0..d_out {
        for i in 0..d_in {
            w[i * d_out + o] = rows[o * d_in + i];
        }
    }
    w
}

/// `x W` in f64 from the weight the blocks stand for and unquantized activations.
fn exact(x: &[f32], w: &[f32], rows: usize, d_in: usize, d_out: usize) -> Vec<f32> {
    let mut y = vec![0f32; rows * d_out];
    for r in 0..rows {
        for o in 0..d_out {
            let dot: f64 = (0..d_in)
                .map(|i| f64::from(x[r * d_in + i]) * f64::from(w[i * d_out + o]))
                .sum();
            y[r * d_out + o] = dot as f32;
        }
    }
    y
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

const LAYOUTS: [Layout; 2] = [Layout::Lanes, Layout::Panels];

#[test]
fn q4_1_weights_from_a_q4_1_file_come_back_exactly() {
    // 48 outputs fill whole units of both layouts (4 and 16).
    let (d_in, d_out) = (96, 48);
    let w = q4_1_weight(d_in, d_out);
    for layout in LAYOUTS {
        let packed =
            PackedWeight::quantize_in(BlockFormat::Q4_1, layout, &w, d_in, d_out).expect("packs");
        let back = packed.dequantize();
        // ggml stores d and m in f16; recomputed from the decoded values and rounded to f16
        // again, they are the file's.
        let err = max_abs_diff(&back, &w);
        assert!(err < 1e-6, "{layout:?}: {err}");
        // Nibbles, and an f16 scale and minimum per block: the file's 20 bytes per 32.
        assert_eq!(
            packed.stored_bytes(),
            d_in * d_out / 2 + 4 * d_in * d_out / BLOCK
        );
    }
}

#[test]
fn q8_0_rounds_each_weight_to_half_a_step() {
    let (d_in, d_out) = (64, 32);
    let w = random(d_in * d_out, 9);
    for layout in LAYOUTS {
        let packed =
            PackedWeight::quantize_in(BlockFormat::Q8_0, layout, &w, d_in, d_out).expect("packs");
        let back = packed.dequantize();
        // Every block's step is max|w| / 127 <= 1 / 127, rounded to f16 (2^-11 relative).
        let err = max_abs_diff(&back, &w);
        assert!(
            err <= 0.5 / 127.0 * (1.0 + 1.0 / 1024.0) + 1e-7,
            "{layout:?}: {err}"
        );
        assert!(err > 0.0, "q8 of random weights cannot be exact");
        // A byte per weight and an f16 scale per block: the file's 34 bytes per 32.
        assert_eq!(
            packed.stored_bytes(),
            d_in * d_out + 2 * d_in * d_out / BLOCK
        );
    }
}

#[test]
fn both_layouts_hold_the_same_blocks() {
    // 70 outputs: a partial last unit in both layouts.
    let (d_in, d_out) = (64, 70);
    let w = random(d_in * d_out, 21);
    for format in [BlockFormat::Q8_0, BlockFormat::Q4_1, BlockFormat::Q4_0] {
        let [lanes, panels] = LAYOUTS.map(|layout| {
            PackedWeight::quantize_in(format, layout, &w, d_in, d_out).expect("packs")
        });
        assert_eq!(panels.layout(), Layout::Panels);
        assert_eq!(lanes.dequantize(), panels.dequantize(), "{format}");
        // The padding: 72 outputs in units of 4, 80 in units of 16.
        let per_output = lanes.stored_bytes() / 72;
        assert_eq!(panels.stored_bytes(), 80 * per_output, "{format}");
    }
}

#[test]
fn simd_and_portable_kernels_agree_for_every_row_count() {
    let (d_in, d_out) = (128, 70);
    for format in [BlockFormat::Q8_0, BlockFormat::Q4_1, BlockFormat::Q4_0] {
        for layout in LAYOUTS {
            let w =
                PackedWeight::quantize_in(format, layout, &random(d_in * d_out, 2), d_in, d_out)
                    .expect("packs");
            eprintln!("{format} {layout:?}: {} kernel", w.kernel_name());
            // 1 is decode; 4 and 8 are whole tiles; the others leave a remainder.
            for rows in [1, 3, 4, 5, 8, 13] {
                let x = random(rows * d_in, 40 + rows as u64);
                let fast = w.matmul(&x, rows);
                let reference = w.matmul_portable(&x, rows);
                let tol = 1e-5 * max_abs(&reference).max(1.0);
                let err = max_abs_diff(&fast, &reference);
                assert!(err <= tol, "{format} {layout:?} rows {rows}: {err} > {tol}");
            }
        }
    }
}

/// Many units and rows, so that tasks split the panels in pairs and leave an odd one over.
#[test]
fn kernels_agree_at_model_shapes_split_over_tasks() {
    let (d_in, d_out, rows) = (576, 208, 7);
    let x = random(rows * d_in, 77);
    for format in [BlockFormat::Q8_0, BlockFormat::Q4_1, BlockFormat::Q4_0] {
        for layout in LAYOUTS {
            let w =
                PackedWeight::quantize_in(format, layout, &random(d_in * d_out, 78), d_in, d_out)
                    .expect("packs");
            let reference = w.matmul_portable(&x, rows);
            let tol = 1e-5 * max_abs(&reference).max(1.0);
            let err = max_abs_diff(&w.matmul(&x, rows), &reference);
            assert!(err <= tol, "{format} {layout:?}: {err} > {tol}");
        }
    }
}

#[test]
fn products_match_the_dequantized_weight_within_activation_rounding() {
    let (d_in, d_out, rows) = (576, 48, 3);
    let x = random(rows * d_in, 11);
    for (format, w, layout) in [
        (BlockFormat::Q8_0, random(d_in * d_out, 12), Layout::Lanes),
        (BlockFormat::Q8_0, random(d_in * d_out, 12), Layout::Panels),
        (BlockFormat::Q4_1, q4_1_weight(d_in, d_out), Layout::Lanes),
        (BlockFormat::Q4_1, q4_1_weight(d_in, d_out), Layout::Panels),
        (BlockFormat::Q4_0, random(d_in * d_out, 13), Layout::Lanes),
        (BlockFormat::Q4_0, random(d_in * d_out, 13), Layout::Panels),
    ] {
        let packed = PackedWeight::quantize_in(format, layout, &w, d_in, d_out).expect("packs");
        let want = exact(&x, &packed.dequantize(), rows, d_in, d_out);
        let got = packed.matmul(&x, rows);
        // 8-bit activations: each product is off by at most half a step of |x| <= 1 times
        // |w| <= 1, summed over d_in inputs; in practice errors cancel far below that bound.
        let err = max_abs_diff(&got, &want);
        let scale = max_abs(&want);
        assert!(
            err < 0.01 * scale,
            "{format}: error {err} against outputs up to {scale}"
        );
    }
}

#[test]
fn q4_0_maps_each_blocks_extreme_to_minus_eight_and_rounds_the_rest() {
    let (d_in, d_out) = (64, 5);
    let w = random(d_in * d_out, 14);
    for layout in LAYOUTS {
        let packed =
            PackedWeight::quantize_in(BlockFormat::Q4_0, layout, &w, d_in, d_out).expect("packs");
        assert_eq!(packed.format(), BlockFormat::Q4_0);
        let back = packed.dequantize();
        for o in 0..d_out {
            for b in 0..d_in / BLOCK {
                let idx = |i: usize| (b * BLOCK + i) * d_out + o;
                let extreme = (0..BLOCK)
                    .map(|i| w[idx(i)])
                    .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
                let d = (extreme / 8.0).abs();
                for i in 0..BLOCK {
                    let v = w[idx(i)];
                    // The scale is stored in f16 (2^-11 relative).
                    if v == extreme {
                        let err = (back[idx(i)] - v).abs();
                        assert!(err <= v.abs() / 1024.0, "{layout:?}: the extreme, {err}");
                    } else {
                        // Half a step, or the clamp at +7 steps for values near -extreme.
                        let step = if v * extreme < 0.0 && v.abs() > 7.0 * d {
                            1.0
                        } else {
                            0.5
                        };
                        let tol = step * d * (1.0 + 1.0 / 256.0) + 1e-6;
                        assert!((back[idx(i)] - v).abs() <= tol, "{layout:?}");
                    }
                }
            }
        }
        // 4 bits and one f16 scale per 32 weights (the file's 18 bytes): no minimums held.
        let panels = d_out.div_ceil(layout.width()) * layout.width();
        assert_eq!(
            packed.stored_bytes(),
            panels * d_in / 2 + panels * d_in / BLOCK * 2
        );
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    assert_eq!(
        PackedWeight::quantize(BlockFormat::Q8_0, &[0.0; 40], 20, 2).unwrap_err(),
        PackError::Shape { d_in: 20, d_out: 2 }
    );
    let err = PackedWeight::quantize(BlockFormat::Q4_1, &[0.0; 10], 32, 2).unwrap_err();
    assert_eq!(err.to_string(), "10 values given for a 32x2 weight");
}

#[test]
fn burn_extension_runs_the_kernel_on_both_cpu_backends() {
    let (d_in, d_out) = (64, 20);
    let w = std::sync::Arc::new(
        PackedWeight::quantize(BlockFormat::Q8_0, &random(d_in * d_out, 3), d_in, d_out)
            .expect("packs"),
    );
    let x = random(2 * 3 * d_in, 4);
    let want = w.matmul(&x, 6);
    for backend in [BackendKind::Flex, BackendKind::NdArray] {
        let device = backend.device().expect("cpu backend");
        let t = Tensor::<3>::from_data(TensorData::new(x.clone(), [2, 3, d_in]), &device);
        let y = packed_matmul(t, &w);
        assert_eq!(y.dims(), [2, 3, d_out]);
        let got: Vec<f32> = y.into_data().try_to_vec().expect("f32 output");
        assert_eq!(got, want, "{backend}");
    }
}

#[test]
fn concatenated_products_equal_the_separate_ones_side_by_side() {
    // A layer's q, k, v shapes in small: different widths, one not a whole unit.
    let d_in = 96;
    let widths = [48, 16, 20];
    for layout in LAYOUTS {
        for format in [BlockFormat::Q8_0, BlockFormat::Q4_1, BlockFormat::Q4_0] {
            let weights: Vec<PackedWeight> = widths
                .iter()
                .enumerate()
                .map(|(i, &d_out)| {
                    let w = random(d_in * d_out, 60 + i as u64);
                    PackedWeight::quantize_in(format, layout, &w, d_in, d_out).expect("packs")
                })
                .collect();
            let refs: Vec<&PackedWeight> = weights.iter().collect();
            for rows in [1, 5] {
                let x = random(rows * d_in, 70 + rows as u64);
                let got = matmul_concat(&refs, &x, rows);
                let total: usize = widths.iter().sum();
                assert_eq!(got.len(), rows * total);
                let mut col0 = 0;
                for (w, &d_out) in weights.iter().zip(&widths) {
                    let alone = w.matmul(&x, rows);
                    for r in 0..rows {
                        assert_eq!(
                            &got[r * total + col0..][..d_out],
                            &alone[r * d_out..][..d_out],
                            "{format} {layout:?} rows {rows} row {r} from column {col0}"
                        );
                    }
                    col0 += d_out;
                }
            }
        }
    }
}

#[test]
fn simd_activation_quantizer_matches_the_portable_one() {
    // Ties of the rounding (max 127, so d = 1 and x / d = k + 1/2), zeros, random blocks.
    let mut blocks: Vec<[f32; BLOCK]> = vec![
        std::array::from_fn(|i| if i == 0 { 127.0 } else { i as f32 - 15.5 }),
        [0.0; BLOCK],
    ];
    let x = random(64 * BLOCK, 90);
    blocks.extend(x.as_chunks::<BLOCK>().0.iter().copied());
    let flat: Vec<f32> = blocks.iter().flatten().copied().collect();
    // With AVX-512 where the CPU has it, and without (AVX2 where it has that).
    for avx512 in [true, false] {
        let got = QuantizedRows::new(&flat, blocks.len(), BLOCK, avx512);
        for (k, block) in blocks.iter().enumerate() {
            let want = ActBlock::new(block);
            assert_eq!(got.values[k], want.q, "block {k}");
            assert_eq!(got.scales[k], want.d, "block {k}");
            assert_eq!(got.qsums[k], want.qsum, "block {k}");
            // Bit for bit: the sums feed Q4_1's `m Σx` (see `portable`).
            assert_eq!(got.sums[k].to_bits(), want.sum.to_bits(), "block {k}");
        }
    }
}

#[test]
fn swiglu_equals_burns_silu_of_the_gate_times_up() {
    let (d_in, d_ff) = (64, 48);
    let [gate, up] = [80, 81].map(|seed| {
        PackedWeight::quantize(BlockFormat::Q8_0, &random(d_in * d_ff, seed), d_in, d_ff)
            .expect("packs")
    });
    let device = BackendKind::Flex.device().expect("cpu backend");
    // 1 row runs the gating serially, 20 in parallel.
    for rows in [1, 20] {
        let x = random(rows * d_in, 82);
        let got = matmul_swiglu(&gate, &up, &x, rows);
        let t = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [rows, d_ff]), &device);
        let want =
            burn::tensor::activation::silu(t(gate.matmul(&x, rows))) * t(up.matmul(&x, rows));
        let want: Vec<f32> = want.into_data().try_to_vec().expect("f32 output");
        let err = max_abs_diff(&got, &want);
        assert!(err <= 1e-5 * max_abs(&want).max(1.0), "rows {rows}: {err}");
    }
}

/// GGML rows `[d_out][d_in]` of `ty` encoding `raw`, and the floats they decode to, in Burn's
/// `[d_in, d_out]` layout.
fn ggml_rows(ty: GgmlType, raw: &[f32], d_in: usize, d_out: usize) -> (Vec<u8>, Vec<f32>) {
    let bytes = match ty {
        GgmlType::Q8_0 => crate::dequant::quantize_q8_0(raw),
        GgmlType::Q4_1 => quantize_q4_1(raw),
        GgmlType::Q4_0 => raw
            .chunks_exact(BLOCK)
            .flat_map(|b| {
                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 8.0;
                let q = |v: f32| ((v / d).round() as i32 + 8).clamp(0, 15) as u8;
                let mut out = half::f16::from_f32(d).to_le_bytes().to_vec();
                out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
                out
            })
            .collect(),
        GgmlType::F16 => raw
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => raw.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let mut rows = vec![0f32; raw.len()];
    dequantize(ty, &bytes, &mut rows).expect("decodes");
    let mut w = vec![0f32; raw.len()];
    for o in 0..d_out {
        for i in 0..d_in {
            w[i * d_out + o] = rows[o * d_in + i];
        }
    }
    (bytes, w)
}

#[test]
fn packing_stored_blocks_equals_quantizing_their_values() {
    // 37 outputs: a partial last unit in both layouts.
    let (d_in, d_out) = (96, 37);
    let raw = random(d_in * d_out, 11);
    let types = [
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::Q4_0,
        GgmlType::F16,
        GgmlType::F32,
    ];
    for ty in types {
        let (bytes, w) = ggml_rows(ty, &raw, d_in, d_out);
        for format in [BlockFormat::Q8_0, BlockFormat::Q4_1, BlockFormat::Q4_0] {
            for layout in LAYOUTS {
                let case = format!("{ty} into {format} {layout:?}");
                let stored =
                    PackedWeight::from_ggml_rows_in(format, layout, ty, &bytes, d_in, d_out)
                        .expect(&case);
                let via_floats =
                    PackedWeight::quantize_in(format, layout, &w, d_in, d_out).expect(&case);
                let exact_copy = matches!(
                    (ty, format),
                    (GgmlType::Q8_0, BlockFormat::Q8_0)
                        | (GgmlType::Q4_1, BlockFormat::Q4_1)
                        | (GgmlType::Q4_0, BlockFormat::Q4_0)
                );
                if exact_copy {
                    // The file's own blocks, bit for bit.
                    assert_eq!(stored.dequantize(), w, "{case}");
                } else if (ty, format) == (GgmlType::Q4_0, BlockFormat::Q4_1) {
                    // `d (q - 8)` held as `-8 d + d q`: the same values up to float rounding.
                    let err = max_abs_diff(&stored.dequantize(), &w);
                    assert!(err <= 1e-6 * max_abs(&w), "{case}: {err}");
                } else {
                    // Re-quantized from the same 32 floats by the same quantizer.
                    assert_eq!(stored.dequantize(), via_floats.dequantize(), "{case}");
                }
                // And the kernels run the stored weight, padding included: within the 8-bit
                // activations' rounding of the exact product.
                let x = random(3 * d_in, 12);
                let want = exact(&x, &stored.dequantize(), 3, d_in, d_out);
                let err = max_abs_diff(&stored.matmul(&x, 3), &want);
                assert!(err <= 0.02 * max_abs(&want), "{case}: {err}");
                let mut column = vec![0f32; d_in];
                stored.column_into(d_out - 1, &mut column);
                let expected: Vec<f32> = (0..d_in).map(|i| w[i * d_out + d_out - 1]).collect();
                if exact_copy {
                    assert_eq!(column, expected, "{case}");
                }
            }
        }
    }
}

#[test]
fn stored_data_of_the_wrong_size_or_type_is_an_error() {
    let (d_in, d_out) = (64, 8);
    let (bytes, _) = ggml_rows(GgmlType::Q8_0, &random(d_in * d_out, 1), d_in, d_out);
    let pack =
        |ty, bytes: &[u8]| PackedWeight::from_ggml_rows(BlockFormat::Q8_0, ty, bytes, d_in, d_out);
    assert!(matches!(
        pack(GgmlType::Q8_0, &bytes[1..]),
        Err(PackError::Bytes { .. })
    ));
    assert!(matches!(
        pack(GgmlType::Other(16), &bytes),
        Err(PackError::Type { .. })
    ));
    assert!(pack(GgmlType::Q8_0, &bytes).is_ok());
}

#[test]
fn every_kernel_variant_this_cpu_has_agrees_with_the_portable_one() {
    let checks = self_check();
    let checked: std::collections::BTreeSet<&str> =
        checks.iter().map(|c| c.kernel.as_str()).collect();
    eprintln!("kernels: {:?}, checked: {checked:?}", kernel_names());
    for name in kernel_names() {
        assert!(
            name == "portable" || checked.contains(name),
            "{name} was not checked"
        );
    }
    assert!(kernel_names().contains(&kernel_name()));
    for c in &checks {
        assert!(c.ok(), "{c:?}");
    }
    // Every format, at decode and prefill row counts, for each variant.
    for kernel in &checked {
        for format in ["q8_0", "q4_1", "q4_0"] {
            let rows: Vec<usize> = checks
                .iter()
                .filter(|c| c.kernel == *kernel && c.format == format)
                .map(|c| c.rows)
                .collect();
            assert!(
                rows.contains(&1) && rows.contains(&8),
                "{kernel} {format}: {rows:?}"
            );
        }
    }
}

#[test]
fn a_runtime_runs_its_products_on_the_variant_it_was_given() {
    let w = PackedWeight::quantize(BlockFormat::Q8_0, &random(64 * 32, 3), 64, 32).expect("packs");
    for name in kernel_names() {
        let tier = KernelTier::parse(name).expect("a kernel name");
        let rt = crate::backend::Runtime::with_kernel(BackendKind::Flex, 2, tier).expect("opens");
        assert_eq!(rt.run(|_| w.kernel_name()), name);
        // Observed: what the product really dispatched to.
        let ran = rt.run(|_| {
            let _ = w.matmul(&random(3 * 64, 4), 3);
            last_kernel()
        });
        assert_eq!(ran, Some(name));
        assert_eq!(kernel_name_for(tier), name);
    }
    // The caller's thread is not a runtime's: the best variant.
    assert_eq!(w.kernel_name(), kernel_name());
    assert_eq!(kernel_name_for(KernelTier::Auto), kernel_name());
    // A variant of another architecture is refused when the runtime opens.
    let foreign = if cfg!(target_arch = "x86_64") {
        KernelTier::ArmNeon
    } else {
        KernelTier::X86Avx2
    };
    let err = crate::backend::Runtime::with_kernel(BackendKind::Flex, 1, foreign).unwrap_err();
    assert!(err.to_string().contains(foreign.name()), "{err}");
}

/// The rule for the quality column: whichever variant runs a level, the perplexity of
/// the quality text is the same within 0.1 % (here the seeded tiny model on every variant this
/// CPU has; `tests/quality.rs` holds SmolLM2 to it).
#[test]
fn every_kernel_variant_gives_the_same_perplexity_on_the_quality_text() {
    use crate::generate::{QUALITY_CHUNK, QUALITY_TEXT, perplexity};
    use crate::load::ModelSpec;
    use crate::quant::QuantLevel;
    use crate::session::ModelSession;
    for quant in [QuantLevel::Q8, QuantLevel::Q4, QuantLevel::Q4_0] {
        let mut seen: Vec<(&str, f64)> = Vec::new();
        for name in kernel_names() {
            let tier = KernelTier::parse(name).expect("a kernel name");
            let s = ModelSession::open_with(
                &ModelSpec::SyntheticTiny,
                BackendKind::Flex,
                quant,
                1,
                None,
                tier,
            )
            .expect("opens");
            let ids = s.loaded.tokenizer.encode(QUALITY_TEXT).expect("encodes");
            let p = perplexity(&s.rt, &s.loaded.model, &ids, QUALITY_CHUNK).expect("scores");
            seen.push((name, p.perplexity));
        }
        eprintln!("{quant}: {seen:?}");
        let reference = seen
            .iter()
            .find(|(n, _)| *n == "portable")
            .expect("the portable variant runs everywhere")
            .1;
        for (name, p) in &seen {
            assert!(
                (p / reference - 1.0).abs() <= 1e-3,
                "{quant} on {name}: {p} against portable's {reference}"
            );
        }
    }
}

/// Every variant's outputs equal the portable kernel's bit for bit (the same integer sums and
/// the same fused float steps in the same order): the quantized model then scores the same
/// whichever variant runs it, since the next product's 8-bit rounding would amplify even a
/// last-bit difference (`portable`'s note).
/// Every kernel variant this CPU has for `w`'s layout gives the portable kernel's outputs, bit
/// for bit.
fn assert_every_variant_equals_portable(w: &PackedWeight, x: &[f32], rows: usize, case: &str) {
    let reference = matmul_with(&[w], x, rows, Some(Kernel::Portable));
    for kernel in Kernel::available(w.layout()) {
        let got = matmul_with(&[w], x, rows, Some(kernel));
        let same = got
            .iter()
            .zip(&reference)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{case}: {} at {rows} rows", kernel.name());
    }
}

#[test]
fn every_kernel_variant_equals_the_portable_one_bit_for_bit() {
    // 53 outputs: a partial last panel; 96 inputs: three blocks; rows for every tile height.
    let (d_in, d_out) = (96, 53);
    for format in [BlockFormat::Q8_0, BlockFormat::Q4_1, BlockFormat::Q4_0] {
        for layout in LAYOUTS {
            let w =
                PackedWeight::quantize_in(format, layout, &random(d_in * d_out, 31), d_in, d_out)
                    .expect("packs");
            for rows in [1, 2, 3, 4, 5, 6, 7, 13] {
                let x = random(rows * d_in, 32 + rows as u64);
                assert_every_variant_equals_portable(&w, &x, rows, &format!("{format} {layout:?}"));
            }
        }
    }
}

/// The extremes a file can hold: Q8_0 values of -128 (the quantizer never writes them, a GGUF
/// file may), nibbles of 15 against activations of ±127 (the largest 16-bit partial sums of
/// the AVX2 kernel). Every variant still equals the portable one bit for bit.
#[test]
fn extreme_stored_values_run_alike_on_every_variant() {
    let (d_in, d_out) = (64, 37);
    let d = half::f16::from_f32(0.01).to_bits().to_le_bytes();
    let m = half::f16::from_f32(-0.05).to_bits().to_le_bytes();
    for (ty, format) in [
        (GgmlType::Q8_0, BlockFormat::Q8_0),
        (GgmlType::Q4_1, BlockFormat::Q4_1),
        (GgmlType::Q4_0, BlockFormat::Q4_0),
    ] {
        let block: Vec<u8> = match ty {
            GgmlType::Q8_0 => d.iter().copied().chain([0x80; BLOCK]).collect(),
            GgmlType::Q4_1 => d
                .iter()
                .chain(&m)
                .copied()
                .chain([0xFF; BLOCK / 2])
                .collect(),
            _ => d.iter().copied().chain([0xFF; BLOCK / 2]).collect(),
        };
        let bytes = block.repeat(d_out * d_in / BLOCK);
        for layout in LAYOUTS {
            let w = PackedWeight::from_ggml_rows_in(format, layout, ty, &bytes, d_in, d_out)
                .expect("packs");
            for rows in [1, 2, 5, 6, 7, 13] {
                // ±1 per block half: every activation quantizes to ±127.
                let x: Vec<f32> = (0..rows * d_in)
                    .map(|i| if (i / 16) % 3 == 0 { -1.0 } else { 1.0 })
                    .collect();
                assert_every_variant_equals_portable(&w, &x, rows, &format!("{ty} {layout:?}"));
            }
        }
    }
}

/// Rows of 256-value blocks (the K-quants: Q4_K and Q6_K here, random blocks) are decoded
/// whole and re-quantized: the same packed weight as quantizing their decoded values.
#[test]
fn k_quant_rows_pack_as_their_decoded_values() {
    let (d_in, d_out) = (512, 5);
    let mut rng = crate::load::SplitMix64(9);
    for (code, size) in [(12u32, 144usize), (14, 210)] {
        let ty = GgmlType::Other(code);
        let bytes = crate::dequant::random_blocks(ty, d_in * d_out / 256, &mut rng);
        let mut rows = vec![0f32; d_in * d_out];
        dequantize(ty, &bytes, &mut rows).expect("decodes");
        let mut w = vec![0f32; d_in * d_out];
        for o in 0..d_out {
            for i in 0..d_in {
                w[i * d_out + o] = rows[o * d_in + i];
            }
        }
        for format in [BlockFormat::Q8_0, BlockFormat::Q4_1, BlockFormat::Q4_0] {
            for layout in LAYOUTS {
                let case = format!("{ty} into {format} {layout:?}");
                let stored =
                    PackedWeight::from_ggml_rows_in(format, layout, ty, &bytes, d_in, d_out)
                        .expect(&case);
                let via_floats =
                    PackedWeight::quantize_in(format, layout, &w, d_in, d_out).expect(&case);
                assert_eq!(stored.dequantize(), via_floats.dequantize(), "{case}");
            }
        }
        // A row that is not a whole number of 256-value blocks is refused, not misread.
        let err =
            PackedWeight::from_ggml_rows(BlockFormat::Q8_0, ty, &bytes[..2 * size], 256 + 32, 1);
        assert!(matches!(err, Err(PackError::Bytes { .. })), "{err:?}");
    }
}
