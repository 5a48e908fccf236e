//! Round trips and bad input of the result records.

use super::*;
use crate::schema::CellKey;
use std::path::Path;

fn key() -> CellKey {
    CellKey {
        device: "local".into(),
        model: "m.gguf".into(),
        runtime: "burn".into(),
        backend: "flex".into(),
        quant: "q8".into(),
        threads: 2,
        batch: 1,
        kv_window: Some(64),
        prompt_tokens: 32,
        gen_tokens: 16,
        affinity: "all".into(),
        pacing_ms: 0,
        duration_s: 0,
        adaptive: "off".into(),
        lora: "none".into(),
        lora_rank: 0,
        lora_adapter: String::new(),
        kernel_tier: "auto".into(),
        perf_mode: "default".into(),
    }
}

fn file(rows: &[ResultRow]) -> Vec<u8> {
    let mut b = RESULT_COLUMNS.join(",").into_bytes();
    b.push(b'\n');
    for r in rows {
        b.extend(r.to_csv_line().unwrap());
    }
    b
}

#[test]
fn the_header_is_the_rows_field_order() {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.serialize(ResultRow::new("a#0".into(), &key(), 0, Status::Ok))
        .unwrap();
    let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
    assert_eq!(text.lines().next().unwrap(), RESULT_COLUMNS.join(","));
}

#[test]
fn a_note_with_newlines_commas_and_quotes_round_trips() {
    let mut r = ResultRow::new("a#0".into(), &key(), 0, Status::Failed);
    r.note = "agent said:\n  \"out of memory\", code 9\r\nbye".into();
    r.set(Metric::TtftS, Some(0.25));
    r.set(Metric::DecodeTokPerS, Some(f64::NAN));
    let b = file(&[r.clone(), r.clone()]);
    let f = parse_results(Path::new("results.csv"), &b).unwrap();
    assert_eq!(f.torn, None);
    assert_eq!(f.rows.len(), 2);
    assert_eq!(f.rows[0].1, r);
    assert_eq!(f.rows[1].1.note, r.note);
    assert_eq!(r.decode_tok_per_s, None, "NaN is not a measurement");
    // Line numbers count the lines inside quoted notes, as an editor shows them.
    assert_eq!(f.rows[1].0, 5, "the second row starts on line 5");
}

#[test]
fn a_torn_last_row_is_set_apart_wherever_it_was_cut() {
    let mut r = ResultRow::new("a#0".into(), &key(), 0, Status::Ok);
    r.note = "two\nlines".into();
    let whole = file(&[r.clone(), r.clone()]);
    let first_end = file(&[r.clone()]).len();
    // Every cut inside the second row leaves the first one and a torn tail.
    for cut in first_end + 1..whole.len() {
        let f = parse_results(Path::new("results.csv"), &whole[..cut])
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(f.rows.len(), 1, "cut at {cut}");
        let torn = f
            .torn
            .unwrap_or_else(|| panic!("cut at {cut}: no torn row"));
        assert_eq!(torn.offset as usize, first_end, "cut at {cut}");
        assert_eq!(torn.bytes, &whole[first_end..cut]);
    }
    let f = parse_results(Path::new("results.csv"), &whole).unwrap();
    assert_eq!((f.rows.len(), f.torn), (2, None));
}

#[test]
fn a_short_row_before_the_last_is_an_error_naming_its_line() {
    let r = ResultRow::new("a#0".into(), &key(), 0, Status::Ok);
    let mut b = file(std::slice::from_ref(&r));
    b.extend(b"x#1,s\n");
    b.extend(r.to_csv_line().unwrap());
    let e = parse_results(Path::new("results.csv"), &b)
        .unwrap_err()
        .to_string();
    assert!(e.contains("results.csv:3") && e.contains("fields"), "{e}");
}

#[test]
fn a_newer_major_version_is_refused_and_bad_values_name_their_column() {
    let mut r = ResultRow::new("a#0".into(), &key(), 0, Status::Ok);
    r.schema_version = "4.0".into();
    let e = parse_results(Path::new("r.csv"), &file(&[r]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("r.csv:2") && e.contains("newer"), "{e}");
    let mut r = ResultRow::new("a#0".into(), &key(), 0, Status::Ok);
    r.schema_version = "2.7".into();
    assert!(parse_results(Path::new("r.csv"), &file(&[r])).is_ok());
    let r = ResultRow::new("a#0".into(), &key(), 0, Status::Ok);
    let text = String::from_utf8(file(&[r]))
        .unwrap()
        .replace(",ok,", ",bogus,");
    let e = parse_results(Path::new("r.csv"), text.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("column status") && e.contains("bogus"), "{e}");
    let mut r = ResultRow::new("a#0".into(), &key(), 0, Status::Ok);
    r.set(Metric::TtftS, Some(0.125));
    let text = String::from_utf8(file(&[r]))
        .unwrap()
        .replace("0.125", "fast");
    let e = parse_results(Path::new("r.csv"), text.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("r.csv:2") && e.contains("column ttft_s"), "{e}");
}

#[test]
fn a_2x_power_source_is_read_as_the_energy_source() {
    // A 2.4 file: its `power_source` column named the energy's source.
    let header = RESULT_COLUMNS
        .iter()
        .filter(|c| **c != "energy_source")
        .copied()
        .collect::<Vec<_>>()
        .join(",");
    let mut r = ResultRow::new("a#0".into(), &key(), 0, Status::Ok);
    r.schema_version = "2.4".into();
    r.power_source = "battery (simulated)".into();
    let line = String::from_utf8(r.to_csv_line().unwrap())
        .unwrap()
        .replacen("battery (simulated),,", "battery (simulated),", 1);
    let text = format!("{header}\n{line}");
    let f = parse_results(Path::new("r.csv"), text.as_bytes()).unwrap();
    let row = &f.rows[0].1;
    assert_eq!(row.energy_source, "battery (simulated)");
    assert_eq!(row.power_source, "", "not recorded before 3.0");
    // A 3.0 row keeps both as written.
    let mut r = ResultRow::new("a#0".into(), &key(), 0, Status::Ok);
    r.power_source = "usb".into();
    r.energy_source = "battery".into();
    let f = parse_results(Path::new("r.csv"), &file(std::slice::from_ref(&r))).unwrap();
    assert_eq!(f.rows[0].1, r);
}

#[test]
fn files_from_before_versioning_still_read() {
    let text = "run_id,device,backend,quant,threads,batch,kv_window,prompt_tokens,gen_tokens,\
                affinity,repetition,status,ttft_s,note\n\
                a#0,local,flex,f32,1,1,full,16,16,all,0,ok,0.5,\n";
    let f = parse_results(Path::new("r.csv"), text.as_bytes()).unwrap();
    assert_eq!(f.rows.len(), 1);
    assert_eq!(f.rows[0].1.ttft_s, Some(0.5));
    assert_eq!(f.rows[0].1.kv_window, None);
}
