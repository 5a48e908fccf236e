//! What `socbench run` shows while it works: on a terminal, one live bar per device
//! (repetitions done of planned, the current cell, its temperature, ETA) with log lines printed
//! above the bars; anywhere else (CI logs, a pipe), plain `[device] …` lines, each repetition
//! with its count and ETA, so a log read later tells the same story.
//!
//! The ETA counts a sustained session as what it is, its planned length (stretched by the
//! overrun sessions so far have shown), and the other repetitions at their pace so far: one
//! hour-long session among quick cells is not averaged away.
//!
//! `SOCBENCH_PROGRESS=plain` forces plain lines on a terminal; `CI` being set does too.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The display for one `socbench run`; hands out one [`DeviceProgress`] per device.
#[derive(Debug, Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Bars when stderr is a terminal (and neither `CI` nor `SOCBENCH_PROGRESS=plain` is set),
    /// plain lines otherwise.
    pub fn new() -> Self {
        let forced_plain = std::env::var_os("CI").is_some()
            || std::env::var("SOCBENCH_PROGRESS").is_ok_and(|v| v == "plain");
        if std::io::stderr().is_terminal() && !forced_plain {
            Self::bars(ProgressDrawTarget::stderr())
        } else {
            Self::plain()
        }
    }

    /// Plain log lines on stderr.
    pub fn plain() -> Self {
        Self { multi: None }
    }

    /// Bars drawn to `target`.
    pub fn bars(target: ProgressDrawTarget) -> Self {
        Self {
            multi: Some(MultiProgress::with_draw_target(target)),
        }
    }

    /// A line for the whole run (above the bars on a terminal).
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// The display of one device with these repetitions to run: each one's sustained-session
    /// length in seconds (0 for an ordinary repetition).
    pub fn device(&self, serial: &str, sessions_s: &[u32]) -> DeviceProgress {
        let total = sessions_s.len();
        let eta: Arc<Mutex<Option<(Instant, Duration)>>> = Arc::default();
        let bar = self.multi.as_ref().map(|m| {
            // The ETA counts down between repetitions (the bar's steady tick redraws it).
            let shown = eta.clone();
            let countdown = move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let at = *shown.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((at, left)) = at {
                    let _ = write!(w, "  ETA {}", format_eta(left.saturating_sub(at.elapsed())));
                }
            };
            let style = ProgressStyle::with_template(
                "{prefix:>21.bold} [{bar:24}] {pos}/{len} reps  {msg}{eta_left}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("eta_left", countdown)
            .progress_chars("=> ");
            let b = m.add(ProgressBar::new(total as u64).with_style(style));
            b.set_prefix(serial.to_owned());
            b.enable_steady_tick(Duration::from_millis(500));
            b
        });
        DeviceProgress {
            serial: serial.to_owned(),
            bar,
            eta,
            state: Arc::new(Mutex::new(State {
                total,
                done: 0,
                plain_left: sessions_s.iter().filter(|&&s| s == 0).count(),
                plain_measured: 0,
                plain_time: Duration::ZERO,
                session_left_s: sessions_s.iter().map(|&s| u64::from(s)).sum(),
                session_measured_s: 0,
                session_time: Duration::ZERO,
                last: Instant::now(),
                cell: String::new(),
                temp_c: None,
                lines: Vec::new(),
            })),
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct State {
    total: usize,
    done: usize,
    /// Ordinary repetitions still to run; those measured (`ok`) so far and the time they took.
    plain_left: usize,
    plain_measured: usize,
    plain_time: Duration,
    /// Planned seconds of the sustained sessions still to run and of those measured, and the
    /// time those measured took.
    session_left_s: u64,
    session_measured_s: u64,
    session_time: Duration,
    /// When the last repetition was done (or the device started).
    last: Instant,
    cell: String,
    temp_c: Option<f64>,
    /// Plain lines printed, kept for tests of this module.
    lines: Vec<String>,
}

/// One device's share of the display. Cheap to clone; every clone updates the same bar.
#[derive(Debug, Clone)]
pub struct DeviceProgress {
    serial: String,
    bar: Option<ProgressBar>,
    /// The last ETA and when it was worked out (the bar counts down from it).
    eta: Arc<Mutex<Option<(Instant, Duration)>>>,
    state: Arc<Mutex<State>>,
}

/// `1h02m`, `3m05s`, `42s`.
pub fn format_eta(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

impl DeviceProgress {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, line: String) {
        match &self.bar {
            Some(b) => b.println(&line),
            None => eprintln!("{line}"),
        }
        self.state().lines.push(line);
    }

    /// A log line for this device.
    pub fn log(&self, msg: &str) {
        self.emit(format!("[{}] {msg}", self.serial));
    }

    /// The cell now running.
    pub fn cell(&self, describe: &str) {
        self.state().cell = describe.to_owned();
        self.redraw();
    }

    /// The device's latest temperature (°C).
    pub fn temperature(&self, c: f64) {
        self.state().temp_c = Some(c);
        self.redraw();
    }

    /// Time left, once something is done: the ordinary repetitions left at the pace of those
    /// measured, the sessions left at their planned length times the overrun of those
    /// measured. Repetitions that were not measured (failed, skipped, lost) are no longer
    /// left, but say nothing of the pace.
    fn eta(st: &State) -> Option<Duration> {
        if st.done == 0 || st.done >= st.total {
            return None;
        }
        let plain = match (st.plain_left, st.plain_measured) {
            (0, _) => 0.0,
            (_, 0) => return None,
            (left, n) => st.plain_time.as_secs_f64() / n as f64 * left as f64,
        };
        let overrun = if st.session_measured_s > 0 {
            st.session_time.as_secs_f64() / st.session_measured_s as f64
        } else {
            1.0
        };
        Some(Duration::from_secs_f64(
            plain + st.session_left_s as f64 * overrun,
        ))
    }

    fn redraw(&self) {
        if let Some(b) = &self.bar {
            let st = self.state();
            let msg = format!(
                "{}{}",
                st.cell,
                st.temp_c.map_or(String::new(), |t| format!("  {t:.1} °C"))
            );
            drop(st);
            b.set_message(msg);
        }
    }

    /// A repetition's row was written: `session_s` is its cell's sustained-session length (0
    /// for an ordinary one), `measured` whether the row is `ok` (the time since the last row
    /// was spent measuring it); `msg`, if any, says how it went.
    pub fn rep_done(&self, session_s: u32, measured: bool, msg: Option<&str>) {
        let (done, total, eta) = {
            let mut st = self.state();
            st.done += 1;
            let took = st.last.elapsed();
            st.last = Instant::now();
            if session_s > 0 {
                st.session_left_s = st.session_left_s.saturating_sub(u64::from(session_s));
                if measured {
                    st.session_time += took;
                    st.session_measured_s += u64::from(session_s);
                }
            } else {
                st.plain_left = st.plain_left.saturating_sub(1);
                if measured {
                    st.plain_time += took;
                    st.plain_measured += 1;
                }
            }
            (st.done, st.total, Self::eta(&st))
        };
        *self.eta.lock().unwrap_or_else(PoisonError::into_inner) = eta.map(|d| (Instant::now(), d));
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        self.redraw();
        if let Some(msg) = msg {
            let eta = eta.map_or(String::new(), |d| format!(" (ETA {})", format_eta(d)));
            self.emit(format!("[{}] [{done}/{total}] {msg}{eta}", self.serial));
        }
    }

    /// The device is done (or stopped): the bar stays with a final word.
    pub fn finish(&self, word: &str) {
        if let Some(b) = &self.bar {
            b.finish_with_message(word.to_owned());
        }
    }

    /// Lines printed so far (plain or above the bar).
    pub fn lines(&self) -> Vec<String> {
        self.state().lines.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_count_repetitions_and_give_an_eta() {
        let p = Progress::plain();
        let d = p.device("phone-1", &[0; 4]);
        d.cell("flex f32 t1");
        d.rep_done(0, true, None);
        d.rep_done(0, true, Some("flex f32 t1 rep 2/2: TTFT 3.0 ms"));
        let lines = d.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("[phone-1] [2/4] flex f32 t1 rep 2/2: TTFT 3.0 ms (ETA "),
            "{lines:?}"
        );
        d.rep_done(0, true, None);
        d.rep_done(0, true, Some("last"));
        // Nothing left: no ETA.
        assert_eq!(d.lines()[1], "[phone-1] [4/4] last");
        d.log("device lost");
        assert_eq!(d.lines()[2], "[phone-1] device lost");
    }

    #[test]
    fn bars_count_the_same_repetitions() {
        let p = Progress::bars(ProgressDrawTarget::hidden());
        let d = p.device("127.0.0.1:7100", &[0, 0, 90]);
        d.temperature(41.5);
        d.rep_done(0, true, Some("one"));
        d.rep_done(0, true, Some("two"));
        let bar = d.bar.clone().unwrap();
        assert_eq!((bar.position(), bar.length()), (2, Some(3)));
        assert!(bar.message().ends_with("41.5 °C"), "{}", bar.message());
        // The bar counts down from the last ETA: the session's 90 s.
        let (at, left) = d.eta.lock().unwrap().unwrap();
        assert_eq!(left, Duration::from_secs(90));
        assert!(at.elapsed() < Duration::from_secs(90));
        d.finish("done");
        assert!(bar.is_finished());
    }

    /// A session left is its planned length, however quick the ordinary repetitions were;
    /// a session that overran stretches the next ones by as much.
    #[test]
    fn the_eta_counts_sessions_at_their_length() {
        let d = Progress::plain().device("phone-1", &[0, 0, 30, 30]);
        d.rep_done(0, true, None);
        d.rep_done(0, true, Some("quick"));
        assert_eq!(d.lines()[0], "[phone-1] [2/4] quick (ETA 1m00s)");
        // A session that took twice its length (the clock moved back rather than waited on).
        {
            let mut st = d.state();
            st.last = st.last.checked_sub(Duration::from_secs(60)).unwrap();
        }
        d.rep_done(30, true, Some("session"));
        assert_eq!(d.lines()[1], "[phone-1] [3/4] session (ETA 1m00s)");
    }

    /// A session that was not measured (skipped, failed early, lost) is no longer left but
    /// says nothing of how long sessions take; nor does an ordinary repetition that failed.
    #[test]
    fn repetitions_not_measured_leave_the_pace_alone() {
        let d = Progress::plain().device("phone-1", &[0, 0, 0, 30, 30, 30]);
        d.rep_done(0, true, None);
        {
            let mut st = d.state();
            st.last = st.last.checked_sub(Duration::from_secs(10)).unwrap();
        }
        d.rep_done(0, false, Some("failed at once"));
        // One ordinary repetition left at the measured one's pace (≈0 s), three sessions.
        assert_eq!(d.lines()[0], "[phone-1] [2/6] failed at once (ETA 1m30s)");
        d.rep_done(30, false, Some("skipped"));
        assert_eq!(d.lines()[1], "[phone-1] [3/6] skipped (ETA 1m00s)");
    }

    #[test]
    fn eta_reads_like_a_clock() {
        assert_eq!(format_eta(Duration::from_secs(42)), "42s");
        assert_eq!(format_eta(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_eta(Duration::from_secs(3720)), "1h02m");
    }
}
