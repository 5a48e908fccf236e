//! The output directory: append-only `results.csv` (one [`ResultRow`] per repetition, each
//! appended as one complete line in one write and synced), `samples.csv`, `events.jsonl` and
//! `manifest.json`.
//!
//! Opening a directory repairs what a crash can leave: a torn last row of `results.csv` (no
//! final newline, too few fields, or no `schema_version`) is moved to `results.csv.torn` and
//! the file cut back to its last complete row, so that repetition runs again and nothing is
//! ever appended onto half a line; `samples.csv` and `events.jsonl` lose only an unterminated
//! last line (moved to `<name>.torn` likewise). Both are buffered and flushed with every result
//! row, so a crash loses at most the samples since the last row.
//!
//! A later row for the same `run_id` supersedes an earlier non-`ok` one (that is how
//! `--resume` retries them); `ok` rows are never run again.

use anyhow::{Context, Result};
use socbench_reports::row::{ResultRow, SampleRow, Status, parse_results};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use socbench_reports::schema::{RESULT_COLUMNS, SAMPLE_COLUMNS};

/// An output directory open for appending.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    session: String,
    results: Mutex<File>,
    samples: Mutex<std::io::BufWriter<File>>,
    events: Mutex<std::io::BufWriter<File>>,
    repairs: Vec<String>,
}

/// Moves `bytes` (a torn tail of `path`) to `<path>.torn` and cuts `path` back to `keep`
/// bytes. The side file is written and synced first: the bytes are never only in memory.
fn set_aside(path: &Path, keep: u64, bytes: &[u8]) -> Result<String> {
    let side = PathBuf::from(format!("{}.torn", path.display()));
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&side)
        .with_context(|| format!("opening {}", side.display()))?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    f.sync_data()?;
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.set_len(keep)?;
    f.sync_data()?;
    Ok(format!(
        "{}: an incomplete last row ({} bytes, left by an interrupted write) was moved to {}",
        path.display(),
        bytes.len(),
        side.display()
    ))
}

/// Opens `path` for appending with `header` as its first line, after checking that an existing
/// file has that header and repairing a torn tail. Returns what was repaired.
fn open_append(path: &Path, header: &[&str], results: bool) -> Result<(File, Option<String>)> {
    let existing = std::fs::read(path).unwrap_or_default();
    let mut repaired = None;
    if !existing.is_empty() {
        if !header.is_empty() {
            let first = existing.split(|&b| b == b'\n').next().unwrap_or_default();
            if String::from_utf8_lossy(first).trim_end() != header.join(",") {
                // Appending rows of one layout under the header of another would corrupt it.
                anyhow::bail!(
                    "{}: written by a different socbench version (its columns are not {}); \
                     resume it with that version, or start a new directory (--out)",
                    path.display(),
                    header.join(",")
                );
            }
        }
        let torn = if results {
            parse_results(path, &existing)?
                .torn
                .map(|t| (t.offset, t.bytes))
        } else if !existing.ends_with(b"\n") {
            let keep = existing
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            Some((keep as u64, existing[keep..].to_vec()))
        } else {
            None
        };
        if let Some((keep, bytes)) = torn {
            repaired = Some(set_aside(path, keep, &bytes)?);
        }
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if f.metadata()?.len() == 0 && !header.is_empty() {
        f.write_all(format!("{}\n", header.join(",")).as_bytes())?;
        f.sync_data()?;
    }
    Ok((f, repaired))
}

impl Store {
    /// Opens (creating) `dir` for the session `session` (the id in every row it writes),
    /// repairing torn tails (see the module docs).
    pub fn open(dir: &Path, session: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (results, r1) = open_append(&dir.join("results.csv"), &RESULT_COLUMNS, true)?;
        let (samples, r2) = open_append(&dir.join("samples.csv"), &SAMPLE_COLUMNS, false)?;
        let (events, r3) = open_append(&dir.join("events.jsonl"), &[], false)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            session: session.to_owned(),
            results: Mutex::new(results),
            samples: Mutex::new(std::io::BufWriter::new(samples)),
            events: Mutex::new(std::io::BufWriter::new(events)),
            repairs: [r1, r2, r3].into_iter().flatten().collect(),
        })
    }

    /// What opening the directory repaired, one message per file.
    pub fn repairs(&self) -> &[String] {
        &self.repairs
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This session's id.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Appends one result row as one write of a complete line, then syncs it to disk. A write
    /// that fails part-way (a full disk) is cut back off, so the file never holds half a row
    /// that the next one would be glued onto.
    pub fn append_result(&self, row: &ResultRow) -> Result<()> {
        let line = row.to_csv_line().context("encoding a result row")?;
        let mut f = self
            .results
            .lock()
            .map_err(|_| anyhow::anyhow!("results writer poisoned"))?;
        let before = f.metadata()?.len();
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
            let _ = f.set_len(before);
            return Err(e).context("appending to results.csv");
        }
        Ok(())
    }

    /// Appends sensor samples (buffered; flushed with [`Store::flush`]).
    pub fn append_samples(&self, rows: &[SampleRow]) -> Result<()> {
        let mut f = self
            .samples
            .lock()
            .map_err(|_| anyhow::anyhow!("samples writer poisoned"))?;
        for r in rows {
            f.write_all(&r.to_csv_line().context("encoding a sample")?)?;
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

/// What the directory holds for one run id: its effective row's status and note (an `ok` row
/// is final; otherwise the latest row wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Status of the effective row.
    pub status: Status,
    /// Its note.
    pub note: String,
}

/// The effective row per `run_id` in an existing `results.csv` (empty when there is none).
/// A torn last row is left out: the store sets it aside when it opens the directory.
pub fn done_runs(dir: &Path) -> Result<HashMap<String, Stored>> {
    let path = dir.join("results.csv");
    let bytes = match std::fs::read(&path) {
        Ok(b) if !b.is_empty() => b,
        _ => return Ok(HashMap::new()),
    };
    let file = parse_results(&path, &bytes)?;
    let mut out: HashMap<String, Stored> = HashMap::new();
    for (_, r) in file.rows {
        if out.get(&r.run_id).is_none_or(|s| s.status != Status::Ok) {
            out.insert(
                r.run_id,
                Stored {
                    status: r.status,
                    note: r.note,
                },
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, status: Status) -> ResultRow {
        let key = socbench_reports::fixture::cell_key("local", "m", "f32");
        ResultRow::new(id.into(), &key, 0, status)
    }

    #[test]
    fn resume_keeps_ok_and_retries_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "s1").unwrap();
        for (id, st) in [
            ("a#0", Status::Ok),
            ("b#0", Status::DeviceLost),
            ("a#0", Status::Failed),
            ("c#0", Status::Failed),
            ("c#0", Status::Ok),
        ] {
            s.append_result(&row(id, st)).unwrap();
        }
        let done = done_runs(dir.path()).unwrap();
        assert_eq!(done["a#0"].status, Status::Ok);
        assert_eq!(done["b#0"].status, Status::DeviceLost);
        assert_eq!(done["c#0"].status, Status::Ok);
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

    #[test]
    fn a_torn_last_row_is_set_aside_and_the_next_row_stands_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        {
            let s = Store::open(dir.path(), "s1").unwrap();
            s.append_result(&row("a#0", Status::Ok)).unwrap();
            s.append_result(&row("b#0", Status::Ok)).unwrap();
        }
        // Cut the last row after its status column, as a crash between writes would.
        let text = std::fs::read_to_string(&path).unwrap();
        let cut = text.rfind(",ok,").unwrap() + 3;
        std::fs::write(&path, &text[..cut]).unwrap();
        std::fs::write(
            dir.path().join("samples.csv"),
            format!("{}\nd,r,c,1.0,x,2,sysfs", SAMPLE_COLUMNS.join(",")),
        )
        .unwrap();
        let s = Store::open(dir.path(), "s2").unwrap();
        assert_eq!(s.repairs().len(), 2, "{:?}", s.repairs());
        let done = done_runs(dir.path()).unwrap();
        assert!(
            done.contains_key("a#0") && !done.contains_key("b#0"),
            "{done:?}"
        );
        s.append_result(&row("b#0", Status::Ok)).unwrap();
        let done = done_runs(dir.path()).unwrap();
        assert_eq!(done["b#0"].status, Status::Ok);
        let torn = std::fs::read_to_string(dir.path().join("results.csv.torn")).unwrap();
        assert_eq!(torn.trim_end(), &text[text.rfind("b#0").unwrap()..cut]);
        let samples = std::fs::read_to_string(dir.path().join("samples.csv")).unwrap();
        assert!(samples.ends_with("source\n"), "{samples}");
    }
}
