use super::*;
use crate::backend::BackendKind;
use crate::load::ModelSpec;
use crate::model::{KvCache, Llama, Logits};
use crate::quant::QuantLevel;
use burn::prelude::*;

fn tiny_config() -> LlamaConfig {
    let file = ModelSpec::SyntheticTiny.open().unwrap();
    LlamaConfig::from_gguf(&file).unwrap()
}

/// Logits of every position of a short prompt (prefill) and of one decode step after it.
fn logits(model: &Llama, device: &Device) -> Vec<f32> {
    let ids = |v: Vec<i64>| {
        let n = v.len();
        Tensor::<2, Int>::from_data(TensorData::new(v, [1, n]), device)
    };
    let mut cache = KvCache::new(model.n_layers(), None);
    let vec = |t: Tensor<3>| {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default()
    };
    let mut out = vec(model.forward(ids(vec![5, 17, 42, 99]), &mut cache, Logits::All));
    out.extend(vec(model.forward(ids(vec![7]), &mut cache, Logits::Last)));
    out
}

fn run(level: QuantLevel, lora: Option<(&LoraAdapters, LoraMode)>) -> Vec<f32> {
    let spec = ModelSpec::SyntheticTiny;
    let file = spec.open().unwrap();
    let device = BackendKind::Flex.device().unwrap();
    let m = spec
        .load_with_lora(&file, &device, level, BackendKind::Flex, lora)
        .unwrap();
    logits(&m.model, &device)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn norm(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

#[test]
fn unmerged_equals_merged_at_f32_and_both_differ_from_the_base() {
    let config = tiny_config();
    for rank in [8, 16] {
        let adapters = LoraAdapters::synthetic(rank, &config).unwrap();
        let base = run(QuantLevel::F32, None);
        let unmerged = run(QuantLevel::F32, Some((&adapters, LoraMode::Unmerged)));
        let merged = run(QuantLevel::F32, Some((&adapters, LoraMode::Merged)));
        let d = max_diff(&unmerged, &merged);
        assert!(d <= 1e-4, "rank {rank}: unmerged vs merged differ by {d}");
        assert!(
            max_diff(&base, &unmerged) > 1e-3,
            "rank {rank}: the adapters changed nothing"
        );
    }
}

#[test]
fn the_packed_path_adds_the_same_update_as_the_f32_path() {
    // At q8 the attention step runs on the host (packed weights): the adapter's products are
    // added there. Its effect on the logits must match the f32 path's, up to quantization.
    // An update ten times the synthetic one's: far above the q8 activations' rounding.
    let mut adapters = LoraAdapters::synthetic(8, &tiny_config()).unwrap();
    for pair in adapters.layers.iter_mut().flatten().flatten() {
        let p = Arc::make_mut(pair);
        p.b.iter_mut().for_each(|b| *b *= 10.0);
    }
    let with = |level| run(level, Some((&adapters, LoraMode::Unmerged)));
    let f32_delta = norm(&with(QuantLevel::F32), &run(QuantLevel::F32, None));
    let q8_base = run(QuantLevel::Q8, None);
    let q8 = with(QuantLevel::Q8);
    let q8_delta: Vec<f32> = q8.iter().zip(&q8_base).map(|(a, b)| a - b).collect();
    let f32_update: Vec<f32> = with(QuantLevel::F32)
        .iter()
        .zip(run(QuantLevel::F32, None))
        .map(|(a, b)| a - b)
        .collect();
    let gap = norm(&q8_delta, &f32_update);
    assert!(f32_delta > 1e-3, "no update at f32");
    assert!(
        gap < 0.25 * f32_delta,
        "q8 update differs from f32's by {gap} (f32 update {f32_delta})"
    );
    // Merged at q8 runs from weights quantized from the sum: not the same numbers, same kind.
    let merged = run(QuantLevel::Q8, Some((&adapters, LoraMode::Merged)));
    assert!(merged.iter().all(|v| v.is_finite()));
    assert!(norm(&merged, &q8_base) > 1e-3);
}

#[test]
fn a_peft_file_round_trips_with_its_scale_and_rotary_order() {
    let config = tiny_config();
    let dir = std::env::temp_dir().join(format!("socbench-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("adapter_model.safetensors");
    let adapters = LoraAdapters::synthetic(4, &config).unwrap();
    adapters.write_peft(&path, &config).unwrap();
    assert_eq!(peft_rank(&path).unwrap(), 4);
    let back = LoraAdapters::from_peft(&path, &config).unwrap();
    assert_eq!(back.rank, 4);
    assert_eq!(back.source, "adapter_model.safetensors");
    assert_eq!(back.layers, adapters.layers);
    // The file's query rows are in Hugging Face order: a different order from ours.
    let hd = config.head_dim();
    assert!((0..config.d_model).any(|o| hf_row(o, hd) != o));
    let mut seen: Vec<usize> = (0..config.d_model).map(|o| hf_row(o, hd)).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..config.d_model).collect::<Vec<_>>(),
        "a permutation"
    );
    // lora_alpha / r scales B.
    std::fs::write(
        dir.join("adapter_config.json"),
        r#"{"r": 4, "lora_alpha": 8}"#,
    )
    .unwrap();
    let scaled = LoraAdapters::from_peft(&path, &config).unwrap();
    let (a, b) = (
        scaled.layers[1][3].as_ref().unwrap(),
        adapters.layers[1][3].as_ref().unwrap(),
    );
    assert_eq!(a.a, b.a);
    assert!(
        a.b.iter()
            .zip(&b.b)
            .all(|(x, y)| (x - 2.0 * y).abs() < 1e-6)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_adapter_files_are_errors_naming_the_tensor() {
    let config = tiny_config();
    let dir = std::env::temp_dir().join(format!("socbench-lora-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.safetensors");
    let cases: [(&str, Vec<usize>, &str); 3] = [
        (
            "model.layers.0.mlp.up_proj.lora_A.weight",
            vec![4, 64],
            "attention projections",
        ),
        (
            "model.layers.0.self_attn.k_proj.lora_A.weight",
            vec![4, 63],
            "expected [4, 64]",
        ),
        (
            "model.layers.9.self_attn.q_proj.lora_A.weight",
            vec![4, 64],
            "the model has 2 layers",
        ),
    ];
    for (name, shape, want) in cases {
        let n = shape.iter().product();
        write_safetensors(&path, &[(name.into(), shape, vec![0.0; n])]).unwrap();
        let e = LoraAdapters::from_peft(&path, &config)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.safetensors") && e.contains(want), "{e}");
        if want != "attention projections" {
            assert!(e.contains(name), "{e}");
        }
    }
    let spec = LoraSpec {
        mode: LoraMode::Merged,
        rank: 0,
        file: None,
    };
    assert!(
        spec.adapters(&config)
            .unwrap_err()
            .to_string()
            .contains("1 to 256")
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn add_product_is_x_a_b_into_its_columns() {
    let pair = LoraPair {
        d_in: 3,
        d_out: 2,
        rank: 2,
        a: vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        b: vec![1.0, 2.0, 3.0, 4.0],
    };
    // x = [1, 2, 3]: x A = [4, 5]; (x A) B = [4 + 15, 8 + 20] = [19, 28].
    let x = [1.0, 2.0, 3.0, 0.0, 0.0, 1.0];
    let mut y = vec![0.5f32; 2 * 4];
    pair.add_product(&x, 2, &mut y, 4, 1);
    assert_eq!(y, [0.5, 19.5, 28.5, 0.5, 0.5, 4.5, 6.5, 0.5]);
    let mut w = vec![0f32; 6];
    pair.merge_into(&mut w);
    assert_eq!(w, [1.0, 2.0, 3.0, 4.0, 4.0, 6.0]);
}
