//! Adaptive precision under heat (`adaptive = "q8>q4@45"`): a cell that holds two model
//! variants loaded and runs the first until the device's hottest thermal zone reaches the
//! threshold, then the second; it goes back once the zone has cooled [`HYSTERESIS_C`] below
//! the threshold. The choice is made before every generation (a sustained session switches
//! between its generations; a plain repetition is one generation), and every switch is
//! recorded with its time and temperature.

use crate::engine::CellRun;
use serde::{Deserialize, Serialize};
use socbench_kernels::quant::QuantLevel;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;

/// How far below the threshold the hottest zone must cool before the cell switches back, °C.
pub const HYSTERESIS_C: f64 = 2.0;

/// The lowest and highest thresholds accepted, °C.
pub const THRESHOLD_RANGE_C: (f64, f64) = (20.0, 120.0);

/// Two levels and the temperature between them: `from>to@threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adaptive {
    /// The level run while the device is below the threshold.
    pub from: QuantLevel,
    /// The level run once the hottest zone has reached it.
    pub to: QuantLevel,
    /// Hottest-zone temperature that switches to `to`, °C.
    pub threshold_c: f64,
}

impl fmt::Display for Adaptive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}>{}@{}", self.from, self.to, self.threshold_c)
    }
}

impl FromStr for Adaptive {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let valid = "valid: `off`, or `FROM>TO@CELSIUS` such as `q8>q4@45`: run FROM, switch to \
                     TO once the hottest thermal zone reaches CELSIUS (20-120), two different \
                     levels";
        let bad = |why: String| format!("`{s}` is not a valid adaptive mode ({why}; {valid})");
        let (levels, threshold) = s
            .trim()
            .split_once('@')
            .ok_or_else(|| bad("no `@threshold`".into()))?;
        let (from, to) = levels
            .split_once('>')
            .ok_or_else(|| bad("no `>` between the two levels".into()))?;
        let from: QuantLevel = from.trim().parse().map_err(bad)?;
        let to: QuantLevel = to.trim().parse().map_err(bad)?;
        let threshold_c: f64 = threshold
            .trim()
            .parse()
            .map_err(|_| bad(format!("`{threshold}` is not a temperature")))?;
        let (lo, hi) = THRESHOLD_RANGE_C;
        if !(lo..=hi).contains(&threshold_c) {
            return Err(bad(format!("{threshold_c} °C is out of range")));
        }
        if from == to {
            return Err(bad("both levels are the same".into()));
        }
        Ok(Self {
            from,
            to,
            threshold_c,
        })
    }
}

/// A switch between the two levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switch {
    /// When (agent clock, s).
    pub t_s: f64,
    /// The level before.
    pub from: QuantLevel,
    /// The level after.
    pub to: QuantLevel,
    /// The hottest zone's temperature that decided it, °C.
    pub temp_c: f64,
}

/// Which of the two levels runs: the state a cell's repetitions share.
#[derive(Debug, Clone)]
pub struct Governor {
    spec: Adaptive,
    hot: bool,
}

impl Governor {
    /// Starts on `spec.from`.
    pub fn new(spec: Adaptive) -> Self {
        Self { spec, hot: false }
    }

    /// Whether the second level (`to`) runs now.
    pub fn on_second(&self) -> bool {
        self.hot
    }

    /// Decides before a generation, given the hottest zone now (`None`: no reading, no
    /// change); returns the switch when there is one.
    pub fn decide(&mut self, t_s: f64, temp_c: Option<f64>) -> Option<Switch> {
        let temp = temp_c?;
        let switch = if self.hot {
            temp <= self.spec.threshold_c - HYSTERESIS_C
        } else {
            temp >= self.spec.threshold_c
        };
        if !switch {
            return None;
        }
        self.hot = !self.hot;
        let (from, to) = if self.hot {
            (self.spec.from, self.spec.to)
        } else {
            (self.spec.to, self.spec.from)
        };
        Some(Switch {
            t_s,
            from,
            to,
            temp_c: temp,
        })
    }
}

/// What an adaptive repetition ran: the level it started on and every switch during it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveTrace {
    /// The level running when the repetition started.
    pub start: QuantLevel,
    /// Switches, in time order.
    pub switches: Vec<Switch>,
    /// Decisions taken (one before each generation; forced runs take none).
    #[serde(default)]
    pub decisions: usize,
    /// Of those, the ones without a temperature reading (the level was kept).
    #[serde(default)]
    pub unread: usize,
}

/// The handle on a cell's adaptive run: which level runs, the switches so far, and a forced
/// level for warm-up runs (both variants warm, no decision taken).
#[derive(Debug, Clone)]
pub struct Adapter {
    governor: Rc<RefCell<Governor>>,
    switches: Rc<RefCell<Vec<Switch>>>,
    force: Rc<Cell<Option<bool>>>,
    start: Rc<Cell<bool>>,
    /// Decisions since `begin`, and those without a reading.
    decisions: Rc<Cell<(usize, usize)>>,
}

impl Adapter {
    /// Runs the next calls on the first (`Some(false)`) or second (`Some(true)`) level without
    /// deciding, or (`None`) decides again before each.
    pub fn force(&self, second: Option<bool>) {
        self.force.set(second);
    }

    /// Marks the start of a measured repetition. With `reset` (it passed the cool-down gate,
    /// as every sustained session does) it starts on the first level; otherwise on the level
    /// the last decision left.
    pub fn begin(&self, reset: bool) {
        self.switches.borrow_mut().clear();
        self.decisions.set((0, 0));
        let mut g = self.governor.borrow_mut();
        if reset {
            g.hot = false;
        }
        self.start.set(g.hot);
    }

    /// The repetition's trace since [`Adapter::begin`].
    pub fn finish(&self) -> AdaptiveTrace {
        let g = self.governor.borrow();
        AdaptiveTrace {
            start: if self.start.get() {
                g.spec.to
            } else {
                g.spec.from
            },
            switches: std::mem::take(&mut *self.switches.borrow_mut()),
            decisions: self.decisions.get().0,
            unread: self.decisions.take().1,
        }
    }
}

/// One run that decides, before each generation, which of `first` (`spec.from`) and `second`
/// (`spec.to`) to run, from the hottest zone `temp` reads now; `now` is the agent clock.
pub fn wrap<'e>(
    spec: Adaptive,
    mut first: CellRun<'e>,
    mut second: CellRun<'e>,
    now: &'e dyn Fn() -> f64,
    temp: Box<dyn Fn() -> Option<f64> + 'e>,
) -> (CellRun<'e>, Adapter) {
    let adapter = Adapter {
        governor: Rc::new(RefCell::new(Governor::new(spec))),
        switches: Rc::default(),
        force: Rc::default(),
        start: Rc::default(),
        decisions: Rc::default(),
    };
    let a = adapter.clone();
    let run: CellRun<'e> = Box::new(move |prompt: &[u32]| {
        let on_second = match a.force.get() {
            Some(second) => second,
            None => {
                let mut g = a.governor.borrow_mut();
                let reading = temp();
                let (n, unread) = a.decisions.get();
                a.decisions
                    .set((n + 1, unread + usize::from(reading.is_none())));
                if let Some(s) = g.decide(now(), reading) {
                    a.switches.borrow_mut().push(s);
                }
                g.on_second()
            }
        };
        if on_second {
            second(prompt)
        } else {
            first(prompt)
        }
    });
    (run, adapter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_reads_and_writes_back_and_bad_ones_say_what_is_valid() {
        let a: Adaptive = "q8>q4@45".parse().unwrap();
        assert_eq!(
            a,
            Adaptive {
                from: QuantLevel::Q8,
                to: QuantLevel::Q4,
                threshold_c: 45.0
            }
        );
        assert_eq!(a.to_string(), "q8>q4@45");
        assert_eq!(
            "f32 > q8 @ 41.5".parse::<Adaptive>().unwrap().to_string(),
            "f32>q8@41.5"
        );
        for bad in [
            "q8>q4",
            "q8@45",
            "q8>q9@45",
            "q8>q4@hot",
            "q8>q4@200",
            "q4>q4@45",
        ] {
            let e = bad.parse::<Adaptive>().unwrap_err();
            assert!(e.contains(bad) && e.contains("q8>q4@45"), "{e}");
        }
    }

    #[test]
    fn the_governor_switches_at_the_threshold_and_back_below_the_hysteresis() {
        let mut g = Governor::new("q8>q4@45".parse().unwrap());
        assert_eq!(g.decide(1.0, Some(44.9)), None);
        assert_eq!(g.decide(1.5, None), None, "no reading, no change");
        let s = g.decide(2.0, Some(45.0)).unwrap();
        assert_eq!(
            (s.from, s.to, s.temp_c),
            (QuantLevel::Q8, QuantLevel::Q4, 45.0)
        );
        assert!(g.on_second());
        assert_eq!(g.decide(3.0, Some(43.5)), None, "inside the hysteresis");
        let s = g.decide(4.0, Some(43.0)).unwrap();
        assert_eq!((s.from, s.to, s.t_s), (QuantLevel::Q4, QuantLevel::Q8, 4.0));
        assert!(!g.on_second());
    }

    /// A level's run: one generation whose only token is `q`, to tell which level ran.
    fn level(q: u32) -> CellRun<'static> {
        use socbench_kernels::generate::Generation;
        use std::time::Duration;
        Box::new(move |_p: &[u32]| {
            Ok(Generation {
                gen_ids: vec![vec![q]],
                ttft: Duration::ZERO,
                decode: Vec::new(),
                token_at: vec![Duration::ZERO],
                kv_cache_bytes: 0,
            })
        })
    }

    #[test]
    fn a_wrapped_run_follows_the_temperature_and_records_each_switch() {
        let temps = Rc::new(RefCell::new(vec![40.0, 46.0, 44.0, 42.0]));
        let t = temps.clone();
        let now = || 7.0;
        let (mut run, adapter) = wrap(
            "q8>q4@45".parse().unwrap(),
            level(8),
            level(4),
            &now,
            Box::new(move || Some(t.borrow_mut().remove(0))),
        );
        adapter.force(Some(true));
        assert_eq!(run(&[1]).unwrap().gen_ids, vec![vec![4]], "warm-up forced");
        adapter.force(None);
        adapter.begin(false);
        let ran: Vec<u32> = (0..4).map(|_| run(&[1]).unwrap().gen_ids[0][0]).collect();
        assert_eq!(ran, vec![8, 4, 4, 8]);
        let trace = adapter.finish();
        assert_eq!(trace.start, QuantLevel::Q8);
        let at: Vec<f64> = trace.switches.iter().map(|s| s.temp_c).collect();
        assert_eq!(at, vec![46.0, 42.0]);
        assert_eq!((trace.decisions, trace.unread), (4, 0));
        assert!(adapter.finish().switches.is_empty(), "taken once");
        // A repetition that ends hot leaves the next one starting on the first level.
        temps.borrow_mut().extend([46.0, 44.0]);
        assert_eq!(run(&[1]).unwrap().gen_ids, vec![vec![4]]);
        adapter.begin(true);
        assert_eq!(run(&[1]).unwrap().gen_ids, vec![vec![8]], "44 °C: below 45");
        assert_eq!(adapter.finish().start, QuantLevel::Q8);
        // Without the gate the decision carries over (44 °C is inside the hysteresis).
        temps.borrow_mut().extend([46.0, 44.0]);
        assert_eq!(run(&[1]).unwrap().gen_ids, vec![vec![4]]);
        adapter.begin(false);
        assert_eq!(run(&[1]).unwrap().gen_ids, vec![vec![4]]);
        assert_eq!(adapter.finish().start, QuantLevel::Q4);
    }

    /// A decision without a temperature keeps the level and is counted, so the row can say
    /// how much of the repetition ran blind.
    #[test]
    fn decisions_without_a_reading_keep_the_level_and_are_counted() {
        let temps = Rc::new(RefCell::new(vec![Some(46.0), None, None, Some(40.0)]));
        let t = temps.clone();
        let now = || 1.0;
        let (mut run, adapter) = wrap(
            "q8>q4@45".parse().unwrap(),
            level(8),
            level(4),
            &now,
            Box::new(move || t.borrow_mut().remove(0)),
        );
        adapter.begin(true);
        let ran: Vec<u32> = (0..4).map(|_| run(&[1]).unwrap().gen_ids[0][0]).collect();
        assert_eq!(ran, vec![4, 4, 4, 8]);
        let trace = adapter.finish();
        assert_eq!((trace.decisions, trace.unread), (4, 2));
        assert_eq!(trace.switches.len(), 2);
        // Counted per repetition: a decision before `begin` is not the next one's.
        temps.borrow_mut().push(None);
        run(&[1]).unwrap();
        adapter.begin(false);
        let next = adapter.finish();
        assert_eq!((next.decisions, next.unread), (0, 0));
    }
}
