//! Reading `results.csv` and `samples.csv`: complete rows with their lines, a torn last row
//! set apart, every other fault an error naming the file, line and column.

use super::{ResultRow, SAMPLE_COLUMNS, SCHEMA_MAJOR, SCHEMA_VERSION, SampleRow, Status};
use crate::schema::{CELL_COLUMNS, Metric, SchemaError};
use std::path::Path;

/// A last row cut short by a crash mid-write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornRow {
    /// Byte offset where it starts (the file's length once it is removed).
    pub offset: u64,
    /// Its 1-based line.
    pub line: usize,
    /// Its bytes, as found.
    pub bytes: Vec<u8>,
}

/// A parsed `results.csv`.
#[derive(Debug, Clone)]
pub struct ResultsFile {
    /// The header's column names.
    pub header: Vec<String>,
    /// Complete rows with their 1-based line, in file order.
    pub rows: Vec<(usize, ResultRow)>,
    /// The torn last row, if there is one.
    pub torn: Option<TornRow>,
}

/// Reads `results.csv` (any schema version up to [`SCHEMA_MAJOR`]). Errors name the file,
/// line and column; only a torn *last* row is tolerated, and reported in
/// [`ResultsFile::torn`].
pub fn parse_results(path: &Path, bytes: &[u8]) -> Result<ResultsFile, SchemaError> {
    let invalid = |line: usize, msg: String| SchemaError::Invalid {
        path: path.to_path_buf(),
        line,
        message: msg,
    };
    let (header, records, torn) = split_records(path, bytes)?;
    let missing: Vec<&str> = ["run_id"]
        .iter()
        .chain(&CELL_COLUMNS)
        .chain(&["repetition", "status"])
        .copied()
        // Added in 2.1 (older files are all `burn`), 3.2 (unpaced, default mode) and 3.3 (no
        // sustained session).
        .filter(|c| {
            !matches!(
                *c,
                "runtime"
                    | "pacing_ms"
                    | "perf_mode"
                    | "duration_s"
                    | "adaptive"
                    | "lora"
                    | "lora_rank"
                    | "lora_adapter"
                    | "kernel_tier"
            )
        })
        .filter(|c| !header.iter().any(|h| h == c))
        .collect();
    if !missing.is_empty() {
        return Err(invalid(
            1,
            format!(
                "not a socbench results file: missing column(s) {}",
                missing.join(", ")
            ),
        ));
    }
    let header_record = csv::StringRecord::from(header.clone());
    let version_col = header.iter().position(|h| h == "schema_version");
    let status_col = header.iter().position(|h| h == "status");
    let mut rows = Vec::with_capacity(records.len());
    for (line, rec) in records {
        let mut major_of_row = 1;
        if let Some(v) = status_col.and_then(|i| rec.get(i))
            && !Status::ALL.iter().any(|s| s.name() == v)
        {
            return Err(invalid(
                line,
                format!(
                    "column status: `{v}` is not valid (one of {})",
                    Status::ALL.map(Status::name).join(", ")
                ),
            ));
        }
        if let Some(v) = version_col.and_then(|i| rec.get(i)) {
            let major = v.split('.').next().and_then(|m| m.parse::<u32>().ok());
            match major {
                Some(m) if m <= SCHEMA_MAJOR => major_of_row = m,
                Some(_) => {
                    return Err(invalid(
                        line,
                        format!(
                            "schema_version {v} is newer than this socbench reads (up to \
                             {SCHEMA_MAJOR}.x): read it with a newer socbench"
                        ),
                    ));
                }
                None => {
                    return Err(invalid(
                        line,
                        format!(
                            "column schema_version: `{v}` is not a version such as {SCHEMA_VERSION}"
                        ),
                    ));
                }
            }
        }
        let mut row: ResultRow = rec.deserialize(Some(&header_record)).map_err(|e| {
            let column = match e.kind() {
                csv::ErrorKind::Deserialize { err, .. } => err
                    .field()
                    .and_then(|i| header.get(i as usize))
                    .map_or(String::new(), |c| format!("column {c}: ")),
                _ => String::new(),
            };
            let what = match e.kind() {
                csv::ErrorKind::Deserialize { err, .. } => err.kind().to_string(),
                _ => e.to_string(),
            };
            invalid(line, format!("{column}{what}"))
        })?;
        if major_of_row < 3 {
            // Before 3.0 `power_source` named where the energy came from; what powered the
            // device was not recorded.
            row.energy_source = std::mem::take(&mut row.power_source);
        }
        if row.run_id.is_empty() {
            return Err(invalid(
                line,
                "column run_id: empty (a run id is required)".into(),
            ));
        }
        for m in Metric::ALL {
            if row.metric(m).is_some_and(|v| !v.is_finite()) {
                return Err(invalid(
                    line,
                    format!(
                        "column {}: not a finite number (write it empty when not measured)",
                        m.name()
                    ),
                ));
            }
        }
        rows.push((line, row));
    }
    Ok(ResultsFile { header, rows, torn })
}

/// Sample rows with their 1-based lines, and the torn last row if there is one.
pub type SamplesFile = (Vec<(usize, SampleRow)>, Option<TornRow>);

/// Sensor samples of `samples.csv` with their lines, and a torn last row if any.
pub fn parse_samples(path: &Path, bytes: &[u8]) -> Result<SamplesFile, SchemaError> {
    let (header, records, torn) = split_records(path, bytes)?;
    if SAMPLE_COLUMNS
        .iter()
        .any(|c| !matches!(*c, "cell" | "source") && !header.iter().any(|h| h == c))
    {
        return Err(SchemaError::Invalid {
            path: path.to_path_buf(),
            line: 1,
            message: format!("header must name the columns {}", SAMPLE_COLUMNS.join(",")),
        });
    }
    let header_record = csv::StringRecord::from(header);
    let mut rows = Vec::with_capacity(records.len());
    for (line, rec) in records {
        let row: SampleRow =
            rec.deserialize(Some(&header_record))
                .map_err(|e| SchemaError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    message: format!(
                        "expected device,agent_run,cell,t_s,sensor,value[,source] with numeric \
                         t_s and value ({e})"
                    ),
                })?;
        rows.push((line, row));
    }
    Ok((rows, torn))
}

type Records = (
    Vec<String>,
    Vec<(usize, csv::StringRecord)>,
    Option<TornRow>,
);

/// The header and the complete records of a CSV file written by socbench; a last record
/// without its newline, with too few fields or (when the file has that column) without its
/// `schema_version` is returned as torn. Any other short record is an error.
fn split_records(path: &Path, bytes: &[u8]) -> Result<Records, SchemaError> {
    let invalid = |line: usize, msg: String| SchemaError::Invalid {
        path: path.to_path_buf(),
        line,
        message: msg,
    };
    if bytes.is_empty() {
        return Err(invalid(1, "empty file: no header row".into()));
    }
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(bytes);
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| invalid(1, format!("header: {e}")))?
        .iter()
        .map(str::to_owned)
        .collect();
    let version_col = header.iter().position(|h| h == "schema_version");
    let mut all = Vec::new();
    loop {
        let mut rec = csv::ByteRecord::new();
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let (byte, line) = rec.position().map_or((0, 0), |p| (p.byte(), p.line()));
                all.push((byte, line as usize, rec));
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                return Err(invalid(line, e.to_string()));
            }
        }
    }
    let n = all.len();
    let mut torn = None;
    let mut records = Vec::with_capacity(n);
    for (i, (offset, line, rec)) in all.into_iter().enumerate() {
        let last = i + 1 == n;
        // A write cut inside a multi-byte character leaves bytes that are not UTF-8.
        let text = csv::StringRecord::from_byte_record(rec).ok();
        let complete = text.as_ref().is_some_and(|r| {
            r.len() == header.len()
                && version_col.is_none_or(|i| r.get(i).is_some_and(|v| !v.is_empty()))
        });
        match text {
            Some(rec) if complete && (!last || bytes.ends_with(b"\n")) => records.push((line, rec)),
            _ if last => {
                let start = usize::try_from(offset)
                    .unwrap_or(bytes.len())
                    .min(bytes.len());
                torn = Some(TornRow {
                    offset,
                    line,
                    bytes: bytes[start..].to_vec(),
                });
            }
            Some(rec) if rec.len() != header.len() => {
                return Err(invalid(
                    line,
                    format!("{} fields, expected {}", rec.len(), header.len()),
                ));
            }
            Some(_) => {
                return Err(invalid(
                    line,
                    "column schema_version: empty (every complete row ends with it)".into(),
                ));
            }
            None => return Err(invalid(line, "not UTF-8 text".into())),
        }
    }
    Ok((header, records, torn))
}
