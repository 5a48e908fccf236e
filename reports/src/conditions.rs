//! Run conditions: what a row was measured under (CPU frequency governor and limits, SELinux,
//! the agent's scheduling and cpuset, Android's thermal status), read from the rows' condition
//! columns, compared between repetitions and cells so the report can flag figures that were
//! not measured alike.

use crate::row::ResultRow;
use serde::Serialize;

/// The conditions of one row that should be equal for two figures to compare (the thermal
/// status and battery level move on their own and are reported apart).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Conditions {
    /// Governor per cluster (`schedutil/schedutil`).
    pub governor: String,
    /// `min-max` MHz per cluster (`300-1800/300-2800`).
    pub freq_limits_mhz: String,
    /// `enforcing`, `permissive`, or empty.
    pub selinux: String,
    /// Scheduling policy and nice value of the agent.
    pub sched: String,
    /// The agent's cpuset or cgroup.
    pub cpuset: String,
    /// CPUs the agent was allowed before any pin.
    pub cpus_allowed: String,
}

/// The names of Android's thermal status levels (`PowerManager.THERMAL_STATUS_*`).
pub const THERMAL_STATUS: [&str; 7] = [
    "none",
    "light",
    "moderate",
    "severe",
    "critical",
    "emergency",
    "shutdown",
];

/// `N (name)` for a thermal status level.
pub fn thermal_status_text(level: u8) -> String {
    match THERMAL_STATUS.get(usize::from(level)) {
        Some(name) => format!("{level} ({name})"),
        None => level.to_string(),
    }
}

impl Conditions {
    /// The conditions of a row.
    pub fn of(row: &ResultRow) -> Self {
        Self {
            governor: row.governor.clone(),
            freq_limits_mhz: row.freq_limits_mhz.clone(),
            selinux: row.selinux.clone(),
            sched: row.sched.clone(),
            cpuset: row.cpuset.clone(),
            cpus_allowed: row.cpus_allowed.clone(),
        }
    }

    /// Whether nothing was recorded (rows from before 3.1, a failed agent).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn fields(&self) -> [(&'static str, &str); 6] {
        [
            ("governor", &self.governor),
            ("frequency limits (MHz)", &self.freq_limits_mhz),
            ("SELinux", &self.selinux),
            ("scheduling", &self.sched),
            ("cpuset", &self.cpuset),
            ("CPUs allowed", &self.cpus_allowed),
        ]
    }

    /// One line: `governor schedutil/schedutil; frequency limits (MHz) 300-1800/300-2800; …`
    /// (fields the device did not tell are left out).
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .fields()
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if parts.is_empty() {
            "not recorded".into()
        } else {
            parts.join("; ")
        }
    }

    /// What differs from `other`: `frequency limits (MHz) 300-1800/300-2800 → 300-1800/300-2000`.
    pub fn differences(&self, other: &Self) -> Vec<String> {
        self.fields()
            .iter()
            .zip(other.fields())
            .filter(|(a, b)| a.1 != b.1)
            .map(|((k, a), (_, b))| {
                let show = |s: &str| {
                    if s.is_empty() {
                        "?".to_owned()
                    } else {
                        s.to_owned()
                    }
                };
                format!("{k} {} → {}", show(a), show(b))
            })
            .collect()
    }
}

/// The reader's warnings for the measured rows of one cell: conditions that changed between
/// its repetitions, and an Android thermal status above `none` at its start or rising during it.
pub fn warnings(distinct: &[Conditions], status: (Option<u8>, Option<u8>)) -> Vec<String> {
    let mut w = Vec::new();
    if let [first, rest @ ..] = distinct {
        for other in rest {
            w.push(format!(
                "run conditions changed between repetitions: {}",
                first.differences(other).join(", ")
            ));
        }
    }
    match status {
        (Some(s), _) if s > 0 => w.push(format!(
            "started at Android thermal status {}: the device was already limiting itself",
            thermal_status_text(s)
        )),
        (Some(s), Some(e)) if e > s => w.push(format!(
            "Android thermal status rose from {} to {} during the cell",
            thermal_status_text(s),
            thermal_status_text(e)
        )),
        _ => {}
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(limits: &str) -> Conditions {
        Conditions {
            governor: "schedutil/schedutil".into(),
            freq_limits_mhz: limits.into(),
            selinux: "enforcing".into(),
            sched: "SCHED_OTHER nice 0".into(),
            cpuset: "/".into(),
            cpus_allowed: "0-7".into(),
        }
    }

    #[test]
    fn differences_and_warnings() {
        let a = c("300-1800/300-2800");
        let b = c("300-1800/300-2000");
        assert_eq!(
            a.differences(&b),
            vec!["frequency limits (MHz) 300-1800/300-2800 → 300-1800/300-2000"]
        );
        assert!(
            a.describe()
                .starts_with("governor schedutil/schedutil; frequency limits")
        );
        assert_eq!(Conditions::default().describe(), "not recorded");
        assert!(warnings(std::slice::from_ref(&a), (Some(0), Some(0))).is_empty());
        let w = warnings(&[a.clone(), b], (Some(0), Some(2)));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("300-1800/300-2800 → 300-1800/300-2000"));
        assert_eq!(
            w[1],
            "Android thermal status rose from 0 (none) to 2 (moderate) during the cell"
        );
        let w = warnings(&[a], (Some(3), Some(3)));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("3 (severe)"), "{w:?}");
        assert_eq!(thermal_status_text(9), "9");
    }
}
