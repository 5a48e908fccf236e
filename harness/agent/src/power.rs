//! `run --require-battery`: before a cell, wait (bounded) until the device says it runs on its
//! battery, because battery counters read on a cable describe the charger, not the workload.

use socbench_devices::sensors::{SensorSet, power_source_name};
use std::time::{Duration, Instant};

/// How the wait ended.
#[derive(Debug, PartialEq)]
pub enum BatteryWait {
    /// On battery after this many seconds.
    Ready(f64),
    /// Not on battery within the limit, or no way to tell: the reason for the skipped cell.
    Refused(String),
    /// The stop file appeared while waiting.
    Interrupted,
}

/// Polls the `power_source` sensor every `poll` until it reads `battery`, for at most
/// `max_wait_s` seconds.
pub fn wait_for_battery(
    set: &SensorSet,
    max_wait_s: f64,
    poll: Duration,
    stop_requested: &dyn Fn() -> bool,
) -> BatteryWait {
    let Some(i) = set.index("power_source") else {
        return BatteryWait::Refused(
            "--require-battery: the device reports no power-supply state (no readable \
             /sys/class/power_supply, no `dumpsys battery`), so running on battery cannot be \
             confirmed"
                .into(),
        );
    };
    let start = Instant::now();
    loop {
        let now = set.read_one(i).map_or("unknown", power_source_name);
        let waited = start.elapsed().as_secs_f64();
        if now == "battery" {
            return BatteryWait::Ready(waited);
        }
        if waited >= max_wait_s {
            let given = if max_wait_s > 0.0 {
                format!(" for the {max_wait_s:.0} s it was given")
            } else {
                String::new()
            };
            return BatteryWait::Refused(format!(
                "--require-battery: the device was on {now} power{given}; unplug it and connect \
                 over wireless debugging (adb connect PHONE:PORT), or raise --battery-wait"
            ));
        }
        if stop_requested() {
            return BatteryWait::Interrupted;
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn waits_for_the_cable_to_go_then_refuses_after_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().to_path_buf();
        write(&r, "sys/class/power_supply/usb/type", "USB\n");
        write(&r, "sys/class/power_supply/usb/online", "1\n");
        let set = SensorSet::discover(&r, None);
        let never = || false;
        let poll = Duration::from_millis(10);
        match wait_for_battery(&set, 0.05, poll, &never) {
            BatteryWait::Refused(why) => assert!(why.contains("on usb power"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Unplugged while waiting: ready, after roughly the time it took.
        let unplug = {
            let r = r.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                write(&r, "sys/class/power_supply/usb/online", "0\n");
            })
        };
        match wait_for_battery(&set, 10.0, poll, &never) {
            BatteryWait::Ready(s) => assert!((0.05..5.0).contains(&s), "{s}"),
            other => panic!("{other:?}"),
        }
        unplug.join().unwrap();
        write(&r, "sys/class/power_supply/usb/online", "1\n");
        assert_eq!(
            wait_for_battery(&set, 10.0, poll, &|| true),
            BatteryWait::Interrupted
        );
        let empty = SensorSet::discover(&dir.path().join("none"), None);
        assert!(matches!(
            wait_for_battery(&empty, 10.0, poll, &never),
            BatteryWait::Refused(why) if why.contains("no power-supply state")
        ));
    }
}
