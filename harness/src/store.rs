//! The output directory: append-only `results.csv` (one row per measured repetition, flushed
//! as it is written), `samples.csv`, `events.jsonl` and `manifest.json`.
//!
//! A later row for the same `run_id` supersedes an earlier `failed`/`device_lost` one (that is
//! how `--resume` retries them); `ok` rows are never run again.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Columns of `results.csv`, in order.
pub const RESULT_COLUMNS: [&str; 29] = [
    "run_id",
    "device",
    "backend",
    "quant",
    "threads",
    "batch",
    "kv_window",
    "prompt_tokens",
    "gen_tokens",
    "affinity",
    "repetition",
    "status",
    "ttft_s",
    "prefill_tok_per_s",
    "decode_tok_per_s",
    "decode_ms_per_token",
    "peak_rss_bytes",
    "model_bytes",
    "avg_power_w",
    "energy_j",
    "energy_per_token_j",
    "start_temp_c",
    "max_temp_c",
    "throttled",
    "charging",
    "cooldown_wait_s",
    "power_source",
    "sensors",
    "note",
];

/// Columns of `samples.csv`.
pub const SAMPLE_COLUMNS: [&str; 6] = ["device", "agent_run", "cell", "t_s", "sensor", "value"];

/// Quotes a CSV field when needed (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Splits one CSV line (no embedded newlines: socbench never writes them unquoted).
pub fn csv_split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// An output directory open for appending.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    results: Mutex<File>,
    samples: Mutex<std::io::BufWriter<File>>,
    events: Mutex<std::io::BufWriter<File>>,
}

fn open_append(path: &Path, header: &[&str]) -> Result<File> {
    let new = !path.exists() || std::fs::metadata(path).is_ok_and(|m| m.len() == 0);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if new && !header.is_empty() {
        writeln!(f, "{}", header.join(","))?;
    }
    Ok(f)
}

impl Store {
    /// Opens (creating) `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            results: Mutex::new(open_append(&dir.join("results.csv"), &RESULT_COLUMNS)?),
            samples: Mutex::new(std::io::BufWriter::new(open_append(
                &dir.join("samples.csv"),
                &SAMPLE_COLUMNS,
            )?)),
            events: Mutex::new(std::io::BufWriter::new(open_append(
                &dir.join("events.jsonl"),
                &[],
            )?)),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one result row (values in [`RESULT_COLUMNS`] order) and flushes it to disk.
    pub fn append_result(&self, row: &[String]) -> Result<()> {
        let line: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
        let mut f = self
            .results
            .lock()
            .map_err(|_| anyhow::anyhow!("results writer poisoned"))?;
        writeln!(f, "{}", line.join(","))?;
        f.flush()?;
        f.sync_data()?;
        Ok(())
    }

    /// Appends sensor samples (buffered; flushed with [`Store::flush`]).
    pub fn append_samples(&self, rows: &[[String; 6]]) -> Result<()> {
        let mut f = self
            .samples
            .lock()
            .map_err(|_| anyhow::anyhow!("samples writer poisoned"))?;
        for r in rows {
            let line: Vec<String> = r.iter().map(|x| csv_field(x)).collect();
            writeln!(f, "{}", line.join(","))?;
        }
        Ok(())
    }

    /// Appends one event line.
    pub fn append_event(&self, line: &str) -> Result<()> {
        let mut f = self
            .events
            .lock()
            .map_err(|_| anyhow::anyhow!("events writer poisoned"))?;
        writeln!(f, "{line}")?;
        Ok(())
    }

    /// Flushes the buffered files.
    pub fn flush(&self) -> Result<()> {
        if let Ok(mut f) = self.samples.lock() {
            f.flush()?;
        }
        if let Ok(mut f) = self.events.lock() {
            f.flush()?;
        }
        Ok(())
    }

    /// Writes `manifest.json` atomically.
    pub fn write_manifest(&self, manifest: &serde_json::Value) -> Result<()> {
        let tmp = self.dir.join("manifest.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(manifest)?)?;
        std::fs::rename(&tmp, self.dir.join("manifest.json"))?;
        Ok(())
    }
}

/// Latest status per `run_id` in an existing `results.csv` (empty when there is none).
pub fn done_runs(dir: &Path) -> Result<HashMap<String, String>> {
    let path = dir.join("results.csv");
    let Ok(f) = File::open(&path) else {
        return Ok(HashMap::new());
    };
    let mut lines = BufReader::new(f).lines();
    let header = lines.next().transpose()?.unwrap_or_default();
    let cols = csv_split(&header);
    let (Some(id), Some(st)) = (
        cols.iter().position(|c| c == "run_id"),
        cols.iter().position(|c| c == "status"),
    ) else {
        anyhow::bail!(
            "{}: not a socbench results file (no run_id/status columns)",
            path.display()
        );
    };
    let mut out = HashMap::new();
    for (i, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let f = csv_split(&line);
        match (f.get(id), f.get(st)) {
            (Some(id), Some(st)) => {
                // An ok row is final; otherwise the latest row wins.
                if out.get(id).is_none_or(|s| s != "ok") {
                    out.insert(id.clone(), st.clone());
                }
            }
            // A torn last line (power cut mid-write) is ignored; the run is redone.
            _ => eprintln!(
                "warning: {}:{}: incomplete row ignored",
                path.display(),
                i + 2
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip() {
        let fields = ["a", "b,c", "say \"hi\"", ""];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        assert_eq!(csv_split(&line.join(",")), fields);
    }

    #[test]
    fn resume_keeps_ok_and_retries_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut row = vec![String::new(); RESULT_COLUMNS.len()];
        for (id, st) in [
            ("a#0", "ok"),
            ("b#0", "device_lost"),
            ("a#0", "failed"),
            ("c#0", "failed"),
            ("c#0", "ok"),
        ] {
            row[0] = id.into();
            row[11] = st.into();
            s.append_result(&row).unwrap();
        }
        let done = done_runs(dir.path()).unwrap();
        assert_eq!(done["a#0"], "ok");
        assert_eq!(done["b#0"], "device_lost");
        assert_eq!(done["c#0"], "ok");
    }
}
