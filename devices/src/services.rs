//! Android's own services as sensor sources, for phones that deny `adb shell` their sysfs
//! battery and thermal nodes (SELinux on most recent phones).
//!
//! `dumpsys battery` gives the level, voltage, temperature, charge counter and what powers the
//! phone; `dumpsys thermalservice` gives the thermal HAL's temperatures (skin, CPU, GPU,
//! battery…) and the framework's thermal status (0 none … 6 shutdown). Neither gives the
//! battery current, so a phone read this way has no battery power or energy figure.
//!
//! `dumpsys battery` prints what the health HAL last pushed (on a change, or its periodic
//! update, about a minute apart), so its values move in steps, not every second; the thermal
//! HAL's temperatures are read when asked. A `dumpsys` call starts a process and asks
//! `system_server` over binder: tens of milliseconds on a phone. [`Service`] therefore runs it
//! at most once per [`SERVICE_PERIOD`]; a sample taken between two calls has no value for these
//! sensors (nothing is interpolated), and each sensor's
//! [`crate::sensors::SensorMeta::source`] says where it came from (`dumpsys`, or `hal` for the
//! thermal HAL's temperatures).

use crate::sensors::{SensorMeta, SensorSet, Source, sanitize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shortest time between two calls of one service by the sampler.
pub const SERVICE_PERIOD: Duration = Duration::from_secs(1);

/// What `dumpsys battery` reports (each field `None` when its line is absent or unreadable).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatteryDump {
    /// `level:` ÷ `scale:` in percent.
    pub level_pct: Option<f64>,
    /// `voltage:` (mV) in volts.
    pub voltage_v: Option<f64>,
    /// `temperature:` (tenths of °C) in °C.
    pub temp_c: Option<f64>,
    /// `Charge counter:` (µAh) in mAh.
    pub charge_mah: Option<f64>,
    /// `status:` (1 unknown, 2 charging, 3 discharging, 4 not charging, 5 full).
    pub status: Option<u8>,
    /// The external supplies named `… powered:` with their state, in the dump's order
    /// (`AC`, `USB`, `Wireless`, `Dock`).
    pub powered: Vec<(String, bool)>,
}

/// Parses `dumpsys battery`; `None` when the text is not a battery dump (no `level:` line).
pub fn parse_battery(text: &str) -> Option<BatteryDump> {
    let mut d = BatteryDump::default();
    let mut level = None;
    let mut scale = None;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        let num = || value.parse::<f64>().ok();
        match key.trim() {
            "level" => level = num(),
            "scale" => scale = num(),
            "voltage" => d.voltage_v = num().map(|mv| mv * 1e-3),
            "temperature" => d.temp_c = num().map(|t| t * 0.1),
            "Charge counter" => d.charge_mah = num().map(|uah| uah * 1e-3),
            "status" => d.status = value.parse().ok(),
            k => {
                if let Some(supply) = k.strip_suffix(" powered") {
                    d.powered.push((supply.to_owned(), value == "true"));
                }
            }
        }
    }
    let level = level?;
    d.level_pct = Some(match scale {
        Some(s) if s > 0.0 => level / s * 100.0,
        _ => level,
    });
    Some(d)
}

impl BatteryDump {
    /// What powers the phone, as a [`crate::sensors::POWER_SOURCES`] code: the first supply
    /// that says `powered: true` (Dock and unnamed ones as `external`), else on battery when
    /// the dump names its supplies and none is powered, else from `status` (charging, full or
    /// not charging: `external`; discharging: battery).
    pub fn power_source(&self) -> Option<f64> {
        if let Some((name, _)) = self.powered.iter().find(|(_, on)| *on) {
            return Some(match name.as_str() {
                "USB" => 1.0,
                "AC" => 2.0,
                "Wireless" => 3.0,
                _ => 4.0,
            });
        }
        if !self.powered.is_empty() {
            return Some(0.0);
        }
        // As the sysfs reading does: without a supply state, `not charging` (a charge limit
        // on a cable) may well be a cable.
        match self.status? {
            2 | 4 | 5 => Some(4.0),
            3 => Some(0.0),
            _ => None,
        }
    }

    /// 1 while charging or full, 0 otherwise (the sysfs `battery_charging` sensor's meaning).
    pub fn charging(&self) -> Option<f64> {
        self.status
            .filter(|s| (2..=5).contains(s))
            .map(|s| f64::from(u8::from(matches!(s, 2 | 5))))
    }
}

/// What `dumpsys thermalservice` reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThermalDump {
    /// `Thermal Status:` (0 none, 1 light, 2 moderate, 3 severe, 4 critical, 5 emergency,
    /// 6 shutdown).
    pub status: Option<f64>,
    /// The HAL's current temperatures: (name, °C), from `Current temperatures from HAL:`.
    pub temps: Vec<(String, f64)>,
}

/// Parses `dumpsys thermalservice`; `None` when the text has neither a status nor a
/// temperature. Only the HAL's current readings count (`Cached temperatures:` holds the last
/// values the HAL pushed, which a sample would repeat), and only real temperatures: the
/// battery current limiter's voltage, current and percentage readings (types 6–8) are not.
pub fn parse_thermal(text: &str) -> Option<ThermalDump> {
    let mut d = ThermalDump::default();
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with([' ', '\t']) {
            section = line.trim();
            if let Some(v) = section.strip_prefix("Thermal Status:") {
                d.status = v.trim().parse().ok();
            }
            continue;
        }
        if section == "Current temperatures from HAL:"
            && let Some(t) = parse_temperature(line.trim())
        {
            d.temps.push(t);
        }
    }
    (d.status.is_some() || !d.temps.is_empty()).then_some(d)
}

/// `Temperature{mValue=44.637, mType=3, mName=skin, mStatus=2}` → ("skin", 44.637); `None`
/// for the BCL types (6 voltage, 7 current, 8 percentage), which are not temperatures.
fn parse_temperature(s: &str) -> Option<(String, f64)> {
    let body = s.strip_prefix("Temperature{")?.strip_suffix('}')?;
    let mut value = None;
    let mut name = None;
    let mut ty = None;
    for field in body.split(", ") {
        match field.split_once('=') {
            Some(("mValue", v)) => value = v.parse::<f64>().ok().filter(|v| v.is_finite()),
            Some(("mName", n)) => name = Some(n.to_owned()),
            Some(("mType", t)) => ty = t.parse::<i32>().ok(),
            _ => {}
        }
    }
    if matches!(ty, Some(6..=8)) {
        return None;
    }
    Some((name?, value?))
}

/// One Android service (`dumpsys battery`, `dumpsys thermalservice`) shared by the sensors
/// read from it: the sampler calls it at most once per period ([`Service::poll`]), single
/// readings reuse a text up to a period old ([`Service::latest`]).
#[derive(Debug)]
pub struct Service {
    args: Vec<String>,
    period: Duration,
    /// The last call's time and text, whoever made it.
    last: Mutex<Option<(Instant, Option<Arc<str>>)>>,
    /// When [`Service::poll`] last called it.
    polled: Mutex<Option<Instant>>,
}

impl Service {
    /// `dumpsys NAME`, called at most once per `period`.
    pub fn dumpsys(name: &str, period: Duration) -> Arc<Self> {
        Arc::new(Self {
            args: vec!["dumpsys".into(), name.into()],
            period,
            last: Mutex::new(None),
            polled: Mutex::new(None),
        })
    }

    /// The command line, for [`crate::sensors::SensorMeta::path`].
    pub fn command_line(&self) -> String {
        self.args.join(" ")
    }

    fn call(&self) -> Option<Arc<str>> {
        let out = std::process::Command::new(&self.args[0])
            .args(&self.args[1..])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        (out.status.success() && !text.trim().is_empty()).then(|| Arc::from(text.as_ref()))
    }

    /// The service's text, called now, when a period has passed since the last poll; `None`
    /// otherwise: the sampler's view, which repeats no value.
    pub fn poll(&self) -> Option<Arc<str>> {
        {
            let mut polled = self.polled.lock().ok()?;
            if polled.is_some_and(|t| t.elapsed() < self.period) {
                return None;
            }
            *polled = Some(Instant::now());
        }
        let text = self.call();
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), text.clone()));
        }
        text
    }

    /// The latest text, calling the service when the last call is a period old: for a single
    /// reading (waiting for the battery), where a value up to a period old is good enough.
    pub fn latest(&self) -> Option<Arc<str>> {
        let mut last = self.last.lock().ok()?;
        match last.as_ref() {
            Some((t, text)) if t.elapsed() < self.period => text.clone(),
            _ => {
                let text = self.call();
                *last = Some((Instant::now(), text.clone()));
                text
            }
        }
    }
}

/// A field of a service's text.
#[derive(Debug, Clone)]
pub enum Field {
    /// Battery level (%).
    BatteryLevel,
    /// Battery voltage (V).
    BatteryVoltage,
    /// Battery temperature (°C).
    BatteryTemp,
    /// Charge counter (mAh).
    BatteryCharge,
    /// 1 charging or full, 0 not.
    BatteryCharging,
    /// What powers the phone (a `POWER_SOURCES` code).
    PowerSource,
    /// The framework's thermal status (0–6).
    ThermalStatus,
    /// A HAL temperature by name (°C).
    HalTemp(String),
}

impl Field {
    /// The field's value in a service's text.
    pub fn read(&self, text: &str) -> Option<f64> {
        match self {
            Field::ThermalStatus => parse_thermal(text)?.status,
            Field::HalTemp(name) => parse_thermal(text)?
                .temps
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v),
            battery => {
                let b = parse_battery(text)?;
                match battery {
                    Field::BatteryLevel => b.level_pct,
                    Field::BatteryVoltage => b.voltage_v,
                    Field::BatteryTemp => b.temp_c,
                    Field::BatteryCharge => b.charge_mah,
                    Field::BatteryCharging => b.charging(),
                    _ => b.power_source(),
                }
            }
        }
    }
}

impl SensorSet {
    /// Battery and thermal sensors from Android's services where sysfs gave none: `dumpsys
    /// battery` for each battery sensor missing, `dumpsys thermalservice` (the HAL's
    /// temperatures and the thermal status) when no thermal zone was readable. Nothing where
    /// the services do not answer (not Android).
    pub(crate) fn add_service_fallbacks(&mut self) {
        let battery_fields = [
            ("power_source", "code", Field::PowerSource),
            ("battery_charging", "bool", Field::BatteryCharging),
            ("battery_voltage_v", "V", Field::BatteryVoltage),
            ("battery_charge_mah", "mAh", Field::BatteryCharge),
            ("battery_capacity_pct", "%", Field::BatteryLevel),
            ("battery_temp_c", "°C", Field::BatteryTemp),
        ];
        let missing: Vec<_> = battery_fields
            .into_iter()
            .filter(|(name, ..)| self.index(name).is_none())
            .collect();
        if !missing.is_empty() {
            let service = Service::dumpsys("battery", SERVICE_PERIOD);
            if let Some(text) = service.latest() {
                for (name, unit, field) in missing {
                    if field.read(&text).is_some() {
                        self.push_service(name.into(), unit, "dumpsys", &service, field);
                    }
                }
            }
        }
        if !self.metas.iter().any(|m| m.name.starts_with("thermal_")) {
            let service = Service::dumpsys("thermalservice", SERVICE_PERIOD);
            if let Some(dump) = service.latest().and_then(|t| parse_thermal(&t)) {
                if dump.status.is_some() {
                    let field = Field::ThermalStatus;
                    self.push_service(
                        "android_thermal_status".into(),
                        "level",
                        "dumpsys",
                        &service,
                        field,
                    );
                }
                for (name, _) in dump.temps {
                    let sensor = format!("thermal_{}_c", sanitize(&name));
                    let field = Field::HalTemp(name);
                    self.push_service(sensor, "°C", "hal", &service, field);
                }
            }
        }
    }

    fn push_service(
        &mut self,
        name: String,
        unit: &str,
        source: &str,
        service: &Arc<Service>,
        field: Field,
    ) {
        self.metas.push(SensorMeta {
            name,
            unit: unit.into(),
            kind: "gauge".into(),
            path: service.command_line(),
            source: source.into(),
        });
        self.sources.push(Source::Service {
            service: Arc::clone(service),
            field,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATTERY: &str = "Current Battery Service state:\n  AC powered: false\n  USB powered: true\n  \
        Wireless powered: false\n  Dock powered: false\n  Max charging current: 500000\n  \
        Max charging voltage: 5000000\n  Charge counter: 3012000\n  status: 2\n  health: 2\n  \
        present: true\n  level: 76\n  scale: 100\n  voltage: 4012\n  temperature: 291\n  \
        technology: Li-ion\n";

    #[test]
    fn battery_dump_fields_and_power_source() {
        let b = parse_battery(BATTERY).unwrap();
        assert_eq!(b.level_pct, Some(76.0));
        assert!((b.voltage_v.unwrap() - 4.012).abs() < 1e-9);
        assert!((b.temp_c.unwrap() - 29.1).abs() < 1e-9);
        assert!((b.charge_mah.unwrap() - 3012.0).abs() < 1e-9);
        assert_eq!(b.status, Some(2));
        assert_eq!(b.power_source(), Some(1.0));
        assert_eq!(b.charging(), Some(1.0));
        // Unplugged: every supply false, discharging.
        let off = BATTERY
            .replace("USB powered: true", "USB powered: false")
            .replace("status: 2", "status: 3");
        let b = parse_battery(&off).unwrap();
        assert_eq!((b.power_source(), b.charging()), (Some(0.0), Some(0.0)));
        // AC, wireless, dock.
        for (line, code) in [("AC", 2.0), ("Wireless", 3.0), ("Dock", 4.0)] {
            let t = off.replace(
                &format!("{line} powered: false"),
                &format!("{line} powered: true"),
            );
            assert_eq!(
                parse_battery(&t).unwrap().power_source(),
                Some(code),
                "{line}"
            );
        }
        // No supply lines (old or trimmed dumps): from the status alone.
        let bare = "  status: 5\n  level: 100\n";
        assert_eq!(parse_battery(bare).unwrap().power_source(), Some(4.0));
        assert_eq!(
            parse_battery("  status: 1\n  level: 3\n")
                .unwrap()
                .power_source(),
            None
        );
        // Not a battery dump.
        assert_eq!(parse_battery("Can't find service: battery\n"), None);
        // Level on another scale.
        let half = parse_battery("  level: 25\n  scale: 50\n").unwrap();
        assert_eq!(half.level_pct, Some(50.0));
    }

    const THERMAL: &str = "IsStatusOverride: false\nThermalEventListeners:\n\tcallbacks: 1\n\
        Thermal Status: 2\nCached temperatures:\n\tTemperature{mValue=30.0, mType=3, mName=skin, mStatus=0}\n\
        HAL Ready: true\nHAL connection:\n\tThermalHAL AIDL 1  connected: yes\n\
        Current temperatures from HAL:\n\tTemperature{mValue=44.637, mType=3, mName=skin, mStatus=2}\n\
        \tTemperature{mValue=39.2, mType=2, mName=battery, mStatus=0}\n\
        \tTemperature{mValue=NaN, mType=0, mName=cpu0, mStatus=0}\n\
        \tTemperature{mValue=3.7, mType=6, mName=vbat, mStatus=0}\n\
        Current cooling devices from HAL:\n\tCoolingDevice{mValue=11, mType=2, mName=cpu0}\n";

    #[test]
    fn thermal_dump_status_and_hal_temperatures() {
        let t = parse_thermal(THERMAL).unwrap();
        assert_eq!(t.status, Some(2.0));
        assert_eq!(
            t.temps,
            vec![("skin".to_owned(), 44.637), ("battery".to_owned(), 39.2)]
        );
        assert_eq!(Field::HalTemp("battery".into()).read(THERMAL), Some(39.2));
        assert_eq!(Field::HalTemp("cpu0".into()).read(THERMAL), None);
        assert_eq!(Field::ThermalStatus.read(THERMAL), Some(2.0));
        assert_eq!(
            Field::HalTemp("vbat".into()).read(THERMAL),
            None,
            "a voltage"
        );
        // Without a HAL section, only the status: cached values would repeat.
        let cached = THERMAL.split("HAL Ready").next().unwrap();
        let t = parse_thermal(cached).unwrap();
        assert_eq!((t.status, t.temps.len()), (Some(2.0), 0));
        assert_eq!(parse_thermal("Can't find service: thermalservice\n"), None);
    }

    #[test]
    fn a_service_is_called_once_per_period() {
        let s = Service {
            // Each call is a new shell: a new pid, a new text.
            args: vec!["sh".into(), "-c".into(), "echo $$".into()],
            period: Duration::from_secs(3600),
            last: Mutex::new(None),
            polled: Mutex::new(None),
        };
        let cached = s
            .latest()
            .expect("latest() calls the command the first time");
        let first = s
            .poll()
            .expect("the first poll calls the command, whatever latest() did");
        assert_ne!(first, cached, "a fresh call, not the cached text");
        assert_eq!(
            s.poll(),
            None,
            "a second poll within the period repeats nothing"
        );
        assert_eq!(s.latest(), Some(first), "latest() hands back the last text");
        let missing = Service::dumpsys("battery-no-such", Duration::ZERO);
        // No dumpsys on this host (or one that fails): no text, no panic.
        let _ = missing.poll();
    }
}
