//! An adaptive cell's row figures: how often it switched level and what share of its tokens
//! the second level generated.

use socbench_agent::adaptive::AdaptiveTrace;
use socbench_agent::plan::RepResult;
use socbench_kernels::quant::QuantLevel;
use socbench_reports::row::ResultRow;
use socbench_reports::schema::Metric;

/// Sets `switches` and `second_level_share` of `row`; `second` is the level the cell switches
/// to under heat. Decisions taken without a temperature reading are said in the row's note.
pub(super) fn apply(row: &mut ResultRow, r: &RepResult, trace: &AdaptiveTrace, second: QuantLevel) {
    row.set(Metric::Switches, Some(trace.switches.len() as f64));
    let level_at = |t: f64| {
        trace
            .switches
            .iter()
            .take_while(|s| s.t_s <= t)
            .last()
            .map_or(trace.start, |s| s.to)
    };
    // A session's tokens each at its time; a plain repetition is one generation, decided
    // before it started.
    let times: Vec<f64> = match &r.session {
        Some(s) => s.token_s.clone(),
        None => vec![r.t_end_s],
    };
    if trace.unread > 0 {
        // The same words for every repetition, so a cell lists them once.
        let blind = "no temperature reading before some adaptive decisions (the level was kept)";
        row.note = if row.note.is_empty() {
            blind.to_owned()
        } else {
            format!("{}; {blind}", row.note)
        };
    }
    if !times.is_empty() {
        let on_second = times.iter().filter(|&&t| level_at(t) == second).count();
        row.set(
            Metric::SecondLevelShare,
            Some(on_second as f64 / times.len() as f64),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socbench_agent::adaptive::Switch;
    use socbench_agent::plan::SessionTrace;
    use socbench_reports::row::Status;
    use socbench_reports::schema::CellKey;

    #[test]
    fn the_share_counts_the_tokens_made_after_a_switch_to_the_second_level() {
        let key: CellKey = socbench_reports::fixture::cell_key("d", "m", "q8");
        let mut row = ResultRow::new("x#0".into(), &key, 0, Status::Ok);
        let r: RepResult = serde_json::from_value(serde_json::json!({
            "cell": "c", "repetition": 0, "t_start_s": 0.0, "t_first_token_s": 0.1,
            "t_end_s": 10.0, "ttft_s": 0.1, "decode_s": [], "prompt_tokens": 1, "batch": 1,
            "peak_rss_bytes": null, "peak_rss_is_per_rep": false,
        }))
        .unwrap();
        let switch = |t_s, from, to| Switch {
            t_s,
            from,
            to,
            temp_c: 45.0,
        };
        let trace = AdaptiveTrace {
            start: QuantLevel::Q8,
            switches: vec![
                switch(4.0, QuantLevel::Q8, QuantLevel::Q4),
                switch(8.0, QuantLevel::Q4, QuantLevel::Q8),
            ],
            decisions: 3,
            unread: 0,
        };
        let session = RepResult {
            session: Some(SessionTrace {
                generations: 3,
                token_s: (0..10).map(|i| f64::from(i) + 0.5).collect(),
            }),
            ..r.clone()
        };
        apply(&mut row, &session, &trace, QuantLevel::Q4);
        assert_eq!(row.metric(Metric::Switches), Some(2.0));
        // Tokens at 4.5 … 7.5 came from q4.
        assert_eq!(row.metric(Metric::SecondLevelShare), Some(0.4));
        assert!(row.note.is_empty(), "every decision had its reading");
        // One generation after a single switch to q4: all of it.
        let trace = AdaptiveTrace {
            start: QuantLevel::Q8,
            switches: trace.switches[..1].to_vec(),
            decisions: 1,
            unread: 0,
        };
        apply(&mut row, &r, &trace, QuantLevel::Q4);
        assert_eq!(row.metric(Metric::SecondLevelShare), Some(1.0));
        // Decisions without a reading are said, after any note already there.
        row.note = "pinned elsewhere".into();
        let blind = AdaptiveTrace {
            decisions: 5,
            unread: 2,
            ..trace
        };
        apply(&mut row, &r, &blind, QuantLevel::Q4);
        assert_eq!(
            row.note,
            "pinned elsewhere; no temperature reading before some adaptive decisions (the level \
             was kept)"
        );
    }
}
