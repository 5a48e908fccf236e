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

pub use socbench_reports::schema::{RESULT_COLUMNS, SAMPLE_COLUMNS, csv_field, csv_split};

/// An output directory open for appending.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    session: String,
    results: Mutex<File>,
    samples: Mutex<std::io::BufWriter<File>>,
    events: Mutex<std::io::BufWriter<File>>,
}

fn open_append(path: &Path, header: &[&str]) -> Result<File> {
    let new = !path.exists() || std::fs::metadata(path).is_ok_and(|m| m.len() == 0);
    if !new && !header.is_empty() {
        // Appending rows of one layout under the header of another would corrupt the file.
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut first = String::new();
        BufReader::new(f).read_line(&mut first)?;
        if first.trim_end() != header.join(",") {
            anyhow::bail!(
                "{}: written by a different socbench version (its columns are not {}); resume it with that version, or start a new directory",
                path.display(),
                header.join(",")
            );
        }
    }
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
    /// Opens (creating) `dir` for the session `session` (the id in every row it writes).
    pub fn open(dir: &Path, session: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            session: session.to_owned(),
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

    /// This session's id.
    pub fn session(&self) -> &str {
        &self.session
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
    fn resume_keeps_ok_and_retries_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "s1").unwrap();
        let status = RESULT_COLUMNS.iter().position(|c| *c == "status").unwrap();
        let mut row = vec![String::new(); RESULT_COLUMNS.len()];
        for (id, st) in [
            ("a#0", "ok"),
            ("b#0", "device_lost"),
            ("a#0", "failed"),
            ("c#0", "failed"),
            ("c#0", "ok"),
        ] {
            row[0] = id.into();
            row[status] = st.into();
            s.append_result(&row).unwrap();
        }
        let done = done_runs(dir.path()).unwrap();
        assert_eq!(done["a#0"], "ok");
        assert_eq!(done["b#0"], "device_lost");
        assert_eq!(done["c#0"], "ok");
    }

    #[test]
    fn a_directory_of_another_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("results.csv"), "run_id,status\na#0,ok\n").unwrap();
        let e = Store::open(dir.path(), "s1").unwrap_err().to_string();
        assert!(
            e.contains("results.csv") && e.contains("different socbench version"),
            "{e}"
        );
    }
}
