//! The sensor samples of one agent run and what a row derives from them over a repetition's
//! window: energy and its source, what powered the device, the fastest core's frequency.

use socbench_devices::sensors::SensorMeta;
use socbench_reports::derive;

/// Sensor samples of one agent run, for the per-repetition metrics.
#[derive(Debug, Default)]
pub struct Samples {
    /// The sensors, in the order of each sample's values.
    pub metas: Vec<SensorMeta>,
    /// `(t_s, values)` per sample, in time order.
    pub rows: Vec<(f64, Vec<Option<f64>>)>,
}

impl Samples {
    pub(super) fn series(&self, i: usize) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .filter_map(|(t, v)| v.get(i).copied().flatten().map(|x| (*t, x)))
            .collect()
    }

    pub(super) fn named(&self, pred: impl Fn(&SensorMeta) -> bool) -> Vec<Vec<(f64, f64)>> {
        self.metas
            .iter()
            .enumerate()
            .filter(|(_, m)| pred(m))
            .map(|(i, _)| self.series(i))
            .collect()
    }

    /// Energy over `[t0, t1]`: joules and the source's label. Without `use_battery` (the
    /// device was not on its battery, so its counters describe the supply) only RAPL counts.
    pub(super) fn energy(
        &self,
        t0: f64,
        t1: f64,
        simulated: bool,
        use_battery: bool,
    ) -> Option<(f64, String)> {
        let battery = self
            .named(|m| m.name == "battery_power_w")
            .pop()
            .filter(|_| use_battery);
        // Top-level RAPL domains only (`rapl_package-0`, not its sub-zones).
        let rapl = self.named(|m| {
            m.name.starts_with("rapl_") && m.name.matches(':').count() <= 1 && m.kind == "counter"
        });
        let (j, src) = derive::energy(battery.as_deref(), rapl.iter().map(Vec::as_slice), t0, t1)?;
        let label = if simulated {
            format!("{src} (simulated)")
        } else {
            src.to_owned()
        };
        Some((j, label))
    }

    /// What powered the device over `[t0, t1]`: the external supplies seen (sorted,
    /// `+`-joined when several), else `battery`; `unknown` without a reading.
    pub(super) fn power_source(&self, t0: f64, t1: f64) -> String {
        let Some(i) = self.metas.iter().position(|m| m.name == "power_source") else {
            return "unknown".into();
        };
        let seen: std::collections::BTreeSet<&str> = derive::states_during(&self.series(i), t0, t1)
            .into_iter()
            .map(socbench_devices::sensors::power_source_name)
            .collect();
        let external: Vec<&str> = seen
            .iter()
            .copied()
            .filter(|s| *s != "battery" && *s != "unknown")
            .collect();
        if !external.is_empty() {
            external.join("+")
        } else if seen.contains("battery") {
            "battery".into()
        } else {
            "unknown".into()
        }
    }

    /// Per sample time, the fastest core's frequency (MHz).
    pub(super) fn fastest_core(&self) -> Vec<(f64, f64)> {
        let idx: Vec<usize> = self
            .metas
            .iter()
            .enumerate()
            .filter(|(_, m)| m.name.starts_with("cpu") && m.name.ends_with("_freq_mhz"))
            .map(|(i, _)| i)
            .collect();
        self.rows
            .iter()
            .filter_map(|(t, v)| {
                idx.iter()
                    .filter_map(|&i| v.get(i).copied().flatten())
                    .reduce(f64::max)
                    .map(|f| (*t, f))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, kind: &str) -> SensorMeta {
        SensorMeta {
            name: name.into(),
            unit: String::new(),
            kind: kind.into(),
            path: String::new(),
            source: "sysfs".into(),
        }
    }

    #[test]
    fn off_battery_a_laptop_keeps_its_rapl_energy_and_the_supply_is_named() {
        // A laptop on its charger: battery power (charging, negative), RAPL, AC online.
        let s = Samples {
            metas: vec![
                meta("battery_power_w", "gauge"),
                meta("rapl_package-0_j", "counter"),
                meta("power_source", "gauge"),
            ],
            rows: (0..5)
                .map(|i| {
                    let t = f64::from(i);
                    (t, vec![Some(-3.0), Some(10.0 * t), Some(2.0)])
                })
                .collect(),
        };
        assert_eq!(s.power_source(1.0, 3.0), "ac");
        let (j, src) = s.energy(1.0, 3.0, false, false).unwrap();
        assert_eq!((j, src.as_str()), (20.0, "rapl"));
        let (_, src) = s.energy(1.0, 3.0, false, true).unwrap();
        assert_eq!(src, "battery", "the battery wins when it is in use");
    }
}
