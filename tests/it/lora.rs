//! Issue #20's LoRA acceptance: a sweep with `lora = none, unmerged, merged` runs on the local
//! host with SmolLM2 at f32 and q8, every row says how its adapters ran, and the report's LoRA
//! section sets each adapter cell against its base cell (speed, memory, perplexity). A PEFT
//! adapter file runs in place of the synthetic adapters; a bad one is refused before any work.
// (Unmerged = merged at f32 within 1e-4: `socbench_kernels::lora` unit tests.)
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{assert_success, real_model, rows, socbench};
use socbench_reports::row::{ResultRow, Status};

fn base_args(model: &str) -> Vec<&str> {
    vec![
        "run",
        "--device",
        "local",
        "--model",
        model,
        "--threads",
        "1",
        "--prompt-tokens",
        "16",
        "--gen-tokens",
        "8",
        "--repetitions",
        "2",
        "--warmup",
        "0",
        "--no-probe",
        "--no-cooldown",
    ]
}

#[test]
fn a_lora_sweep_on_the_host_reports_the_overhead_against_the_base_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = real_model().display().to_string();
    let mut args = base_args(&model);
    args.extend([
        "--quant",
        "f32,q8",
        "--lora-mode",
        "none,unmerged,merged",
        "--lora-rank",
        "16",
        "--quality",
        "--out",
    ]);
    assert_success(&socbench().args(&args).arg(&out).output().unwrap());
    let r = rows(&out);
    assert_eq!(r.len(), 2 * 3 * 2, "{r:?}");
    for row in &r {
        assert_eq!(row.status, Status::Ok, "{row:?}");
        let (rank, adapter) = match row.lora.as_str() {
            "none" => (0, ""),
            "unmerged" | "merged" => (16, "synthetic"),
            other => panic!("lora = {other}"),
        };
        assert_eq!((row.lora_rank, row.lora_adapter.as_str()), (rank, adapter));
        assert!(row.perplexity.is_some(), "{row:?}");
    }
    let cell = |quant: &str, lora: &str| {
        r.iter()
            .find(|x| x.quant == quant && x.lora == lora)
            .unwrap()
    };
    for quant in ["f32", "q8"] {
        let (base, unmerged, merged) = (
            cell(quant, "none"),
            cell(quant, "unmerged"),
            cell(quant, "merged"),
        );
        // The adapters change the model: not the base model's perplexity, not far from it.
        let ppl = |x: &ResultRow| x.perplexity.unwrap();
        for x in [unmerged, merged] {
            let ratio = ppl(x) / ppl(base);
            assert!(
                ratio != 1.0 && (0.5..2.0).contains(&ratio),
                "{quant}: {ratio}"
            );
        }
        // Unmerged adapters are held and read beside the weights; merged ones are not.
        let bytes = |x: &ResultRow| x.weight_bytes_resident.unwrap();
        assert!(bytes(unmerged) > bytes(base), "{quant}");
        assert_eq!(bytes(merged), bytes(base), "{quant}");
    }
    // At f32 merged and unmerged are the same model.
    let (u, m) = (cell("f32", "unmerged"), cell("f32", "merged"));
    assert!(
        (u.perplexity.unwrap() - m.perplexity.unwrap()).abs() < 1e-3 * m.perplexity.unwrap(),
        "{u:?} {m:?}"
    );

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let t = &html[html.find("<table class=\"lora\"").unwrap()..];
    let table = &t[..t.find("</table>").unwrap()];
    for label in [
        "flex f32 t1 b1 kv=full p16 g8 a=all lora=unmerged/r16",
        "flex f32 t1 b1 kv=full p16 g8 a=all lora=merged/r16",
        "flex q8 t1 b1 kv=full p16 g8 a=all lora=unmerged/r16",
        "flex q8 t1 b1 kv=full p16 g8 a=all lora=merged/r16",
    ] {
        let row = &table[table
            .find(label)
            .unwrap_or_else(|| panic!("{label}: {table}"))..];
        let row = &row[..row.find("</tr>").unwrap()];
        // Decode, TTFT, peak RAM and perplexity, each a ratio with its interval.
        assert_eq!(row.matches("<b>×").count(), 4, "{row}");
        assert_eq!(row.matches(" [").count(), 4, "{row}");
    }
    assert!(html.contains("id=\"lora-vs-decode\""), "the lever chart");
}

#[test]
fn a_peft_adapter_file_runs_in_place_of_the_synthetic_one_and_a_bad_one_is_refused() {
    use socbench_kernels::load::ModelSpec;
    use socbench_kernels::lora::LoraAdapters;
    use socbench_kernels::model::LlamaConfig;
    let dir = tempfile::tempdir().unwrap();
    let file = ModelSpec::SyntheticTiny.open().unwrap();
    let config = LlamaConfig::from_gguf(&file).unwrap();
    let adapter = dir.path().join("adapter_model.safetensors");
    LoraAdapters::synthetic(4, &config)
        .unwrap()
        .write_peft(&adapter, &config)
        .unwrap();
    std::fs::write(
        dir.path().join("adapter_config.json"),
        r#"{"r": 4, "lora_alpha": 8}"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut args = base_args("synthetic:tiny");
    args.extend(["--quant", "q8", "--lora-mode", "unmerged", "--lora"]);
    let adapter_arg = adapter.display().to_string();
    args.push(&adapter_arg);
    // A rank the file does not have: refused up front.
    let mut bad = args.clone();
    bad.extend(["--lora-rank", "16", "--out"]);
    args.push("--out");
    assert_success(&socbench().args(&args).arg(&out).output().unwrap());
    let r = rows(&out);
    assert_eq!(r.len(), 2, "{r:?}");
    for row in &r {
        assert_eq!(row.status, Status::Ok, "{row:?}");
        assert_eq!(
            (row.lora.as_str(), row.lora_rank, row.lora_adapter.as_str()),
            ("unmerged", 4, "adapter_model.safetensors")
        );
        assert!(
            row.run_id.contains("|lora-unmerged-r4-adapter_model#"),
            "{}",
            row.run_id
        );
    }
    let o = socbench()
        .args(&bad)
        .arg(dir.path().join("out2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("rank 4"), "{err}");
    // An adapter for another model (a layer it does not have), and a file that is not an
    // adapter: refused before any device, naming the file.
    let mut config2 = config.clone();
    config2.n_layers = 3;
    LoraAdapters::synthetic(4, &config2)
        .unwrap()
        .write_peft(&adapter, &config2)
        .unwrap();
    let o = socbench()
        .args(&args)
        .arg(dir.path().join("out4"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("layer 2, the model has 2 layers"),
        "{err}"
    );
    std::fs::write(&adapter, b"not safetensors").unwrap();
    let o = socbench()
        .args(&args)
        .arg(dir.path().join("out3"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("adapter_model.safetensors")
            && err.contains("not a safetensors file")
            && !err.contains("panicked"),
        "{err}"
    );
    assert!(!dir.path().join("out3").join("results.csv").exists());
}
