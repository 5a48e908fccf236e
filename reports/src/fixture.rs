//! Hand-made result directories, for tests, examples and trying the report without a phone.
//!
//! [`Fixture::write`] writes what `socbench run` writes (`results.csv`, `samples.csv`,
//! `events.jsonl`, `manifest.json`) for two devices: a virtual phone with simulated sensors
//! (named `<script>alert(1)</script>`, to prove escaping) whose cells sweep quantization,
//! threads, prompt length, batch and KV window, and the local host with no sensors, one failed
//! and one lost cell. Values follow simple formulas with a fixed, repeating jitter, so the same
//! fixture always gives the same files.

use crate::row::{RESULT_COLUMNS, ResultRow, SAMPLE_COLUMNS, SampleRow, Status};
use crate::schema::{CellKey, Metric};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;

/// Serial of the fixture's virtual phone.
pub const PHONE: &str = "127.0.0.1:45001";
/// Its model name (markup, to prove that reports escape it).
pub const PHONE_NAME: &str = "<script>alert(1)</script>";

/// A fixture result set.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Multiplier on every throughput (0.8: a 20 % slower build).
    pub speed: f64,
    /// Relative size of the repetition-to-repetition jitter (0.01: about ±1 %).
    pub noise: f64,
    /// Repetitions per cell.
    pub reps: u32,
    /// Session id written in every row.
    pub session: String,
    /// Include the local host's failed and lost cells.
    pub failures: bool,
}

impl Default for Fixture {
    fn default() -> Self {
        Self {
            speed: 1.0,
            noise: 0.01,
            reps: 5,
            session: "20261124T120000Z-1".into(),
            failures: true,
        }
    }
}

/// `(quant, threads, batch, kv_window, prompt)` of the phone's cells.
const PHONE_CELLS: [(&str, u32, u32, Option<u32>, u32); 11] = [
    ("f32", 1, 1, None, 16),
    ("f32", 2, 1, None, 16),
    ("f32", 4, 1, None, 16),
    ("f32", 1, 1, None, 64),
    ("f32", 1, 2, None, 16),
    ("f32", 1, 1, Some(8), 16),
    ("f32", 1, 1, Some(16), 16),
    ("q8", 1, 1, None, 16),
    ("q8", 2, 1, None, 16),
    ("q8", 4, 1, None, 16),
    ("q8", 1, 1, None, 64),
];

/// Repeating jitter pattern (median 0, one larger swing).
const JITTER: [f64; 7] = [0.0, 1.0, -0.8, 0.4, -1.5, 0.7, -0.3];

const GEN: u32 = 16;
const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

struct Row {
    device: &'static str,
    quant: &'static str,
    threads: u32,
    batch: u32,
    kv: Option<u32>,
    prompt: u32,
    rep: u32,
    status: &'static str,
    values: Vec<(&'static str, String)>,
    note: String,
}

impl Row {
    fn cell(&self) -> String {
        format!(
            "{}|flex|{}|t{}|b{}|kv{}|p{}|g{GEN}|aall",
            self.device,
            self.quant,
            self.threads,
            self.batch,
            self.kv.map_or("full".into(), |k| k.to_string()),
            self.prompt
        )
    }

    fn line(&self, session: &str) -> String {
        let key = CellKey {
            device: self.device.into(),
            model: MODEL.into(),
            runtime: "burn".into(),
            backend: "flex".into(),
            quant: self.quant.into(),
            threads: self.threads,
            batch: self.batch,
            kv_window: self.kv,
            prompt_tokens: self.prompt,
            gen_tokens: GEN,
            affinity: "all".into(),
            pacing_ms: 0,
            duration_s: 0,
            adaptive: "off".into(),
            lora: "none".into(),
            lora_rank: 0,
            lora_adapter: String::new(),
            kernel_tier: "auto".into(),
            perf_mode: "default".into(),
        };
        let status = Status::ALL
            .into_iter()
            .find(|s| s.name() == self.status)
            .unwrap_or(Status::Failed);
        let mut row = ResultRow::new(
            format!("{}#{}", self.cell(), self.rep),
            &key,
            self.rep,
            status,
        );
        row.session = session.to_owned();
        row.note = self.note.clone();
        for (name, value) in &self.values {
            match (*name, Metric::parse(name)) {
                (_, Some(m)) => row.set(m, value.parse().ok()),
                ("throttled", _) => row.throttled = value.parse().ok(),
                ("charging", _) => row.charging = value.parse().ok(),
                ("power_source", _) => row.power_source = value.clone(),
                ("energy_source", _) => row.energy_source = value.clone(),
                ("sensors", _) => row.sensors = value.clone(),
                ("kernel", _) => row.kernel = value.clone(),
                ("governor", _) => row.governor = value.clone(),
                ("freq_limits_mhz", _) => row.freq_limits_mhz = value.clone(),
                ("thermal_status_start", _) => row.thermal_status_start = value.parse().ok(),
                ("thermal_status_end", _) => row.thermal_status_end = value.parse().ok(),
                ("battery_pct_start", _) => row.battery_pct_start = value.parse().ok(),
                ("selinux", _) => row.selinux = value.clone(),
                ("sched", _) => row.sched = value.clone(),
                ("cpuset", _) => row.cpuset = value.clone(),
                ("cpus_allowed", _) => row.cpus_allowed = value.clone(),
                _ => {}
            }
        }
        let line = row.to_csv_line().unwrap_or_default();
        String::from_utf8_lossy(&line).trim_end().to_owned()
    }
}

/// The phone's roofs at `threads`: triad bytes/s and GEMM FLOP/s.
fn roofs(threads: u32) -> (f64, f64) {
    let t = f64::from(threads);
    (12e9 * t.powf(0.5), 200e9 * t)
}

impl Fixture {
    fn measure(&self, row: &mut Row, sensors: bool, t0: f64, throttled: bool) -> f64 {
        let j = 1.0 + self.noise * JITTER[(row.rep as usize) % JITTER.len()];
        let q = if row.quant == "q8" { 1.6 } else { 1.0 };
        let dev = if row.device == PHONE { 1.0 } else { 0.6 };
        let thr = if throttled { 0.8 } else { 1.0 };
        let decode = 20.0
            * f64::from(row.threads).powf(0.7)
            * q
            * f64::from(row.batch).powf(0.8)
            * dev
            * thr
            * self.speed
            * j;
        let prefill = 250.0 * f64::from(row.threads).powf(0.8) * q * dev * self.speed * j;
        let ttft = f64::from(row.batch * row.prompt) / prefill;
        let decode_s = f64::from(GEN) * f64::from(row.batch) / decode;
        let step_ms = decode_s / f64::from(GEN) * 1e3;
        let kv_positions = row.kv.unwrap_or(row.prompt + GEN);
        let rss = 600_000_000.0 / q + f64::from(kv_positions * row.batch) * 30_000.0;
        let mut v = vec![
            ("ttft_s", format!("{ttft}")),
            ("prefill_tok_per_s", format!("{prefill}")),
            ("decode_tok_per_s", format!("{decode}")),
            (
                "decode_ms_per_token",
                format!("{}", decode_s / f64::from(GEN) * 1e3),
            ),
            // A step-time spread a phone shows: the median a little under the mean, a tail.
            ("decode_p50_ms", format!("{}", step_ms * 0.97)),
            ("decode_p90_ms", format!("{}", step_ms * 1.08)),
            ("decode_p99_ms", format!("{}", step_ms * 1.35)),
            ("decode_max_ms", format!("{}", step_ms * 1.9)),
            ("peak_rss_bytes", format!("{:.0}", rss)),
            ("pss_bytes", format!("{:.0}", rss * 0.9)),
            ("model_bytes", "98362432".into()),
            ("load_s", format!("{:.3}", 0.1 + 0.05 * q)),
            (
                "kernel",
                if row.quant == "q8" {
                    if row.device == PHONE {
                        "arm-dotprod"
                    } else {
                        "x86-avx512vnni"
                    }
                } else {
                    "burn-flex"
                }
                .into(),
            ),
            (
                "weight_bytes_resident",
                format!("{:.0}", 560_000_000.0 / (q * 2.0)),
            ),
            (
                "kv_cache_bytes",
                format!("{}", u64::from(kv_positions * row.batch) * 46_080),
            ),
            (
                "weight_bytes_per_step",
                format!("{:.0}", 540_000_000.0 / (q * 2.0)),
            ),
            (
                "cooldown_wait_s",
                format!("{:.3}", 2.0 + f64::from(row.rep) * 0.5),
            ),
        ];
        if row.device == PHONE {
            // Against the phone's roofs in the manifest (see `roofs`).
            let (bw, gemm) = roofs(row.threads);
            let bytes = 540_000_000.0 / (q * 2.0);
            v.push((
                "decode_bw_fraction",
                format!("{}", bytes * decode / f64::from(row.batch) / bw),
            ));
            v.push((
                "prefill_gemm_fraction",
                format!("{}", 2.0 * 135_000_000.0 * prefill / gemm),
            ));
        }
        if sensors {
            let power = 1.6 + 0.45 * f64::from(row.threads) * thr;
            let dur = ttft + decode_s;
            v.extend([
                ("avg_power_w", format!("{power}")),
                ("energy_j", format!("{}", power * dur)),
                (
                    "energy_per_token_j",
                    format!("{}", power * dur / f64::from(GEN * row.batch)),
                ),
                ("prefill_energy_j", format!("{}", power * ttft)),
                ("decode_energy_j", format!("{}", power * decode_s)),
                ("start_temp_c", format!("{:.1}", 36.0 + t0 / 20.0)),
                ("max_temp_c", format!("{:.1}", 37.0 + t0 / 15.0)),
                ("throttled", throttled.to_string()),
                ("charging", "false".into()),
                ("power_source", "battery".into()),
                ("energy_source", "battery (simulated)".into()),
                ("sensors", "simulated".into()),
                // Run conditions: a thermal daemon caps the big cluster while it throttles.
                ("governor", "schedutil/schedutil".into()),
                (
                    "freq_limits_mhz",
                    if throttled {
                        "300-1800/300-2000"
                    } else {
                        "300-1800/300-2800"
                    }
                    .into(),
                ),
                ("thermal_status_start", "0".into()),
                (
                    "thermal_status_end",
                    if throttled { "3" } else { "0" }.into(),
                ),
                ("battery_pct_start", "80".into()),
                ("selinux", "enforcing".into()),
                ("sched", "SCHED_OTHER nice 0".into()),
                ("cpuset", "/".into()),
                ("cpus_allowed", "0-7".into()),
            ]);
        } else {
            v.extend([
                ("sensors", "none".into()),
                ("sched", "SCHED_OTHER nice 0".into()),
                ("cpuset", "/user.slice".into()),
                ("cpus_allowed", "0-3".into()),
            ]);
        }
        row.values = v;
        ttft + decode_s
    }

    /// Writes the fixture into `dir` (created if needed).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut results = RESULT_COLUMNS.join(",");
        results.push('\n');
        let mut samples = SAMPLE_COLUMNS.join(",");
        samples.push('\n');
        let mut events = String::new();
        let host0 = 1_795_000_000.0;
        // The phone: one agent run per quantization level, cells back to back.
        for (run_no, quant) in ["f32", "q8"].into_iter().enumerate() {
            let run = format!("127.0.0.1_45001-{}", run_no + 1);
            let host = host0 + 120.0 * run_no as f64;
            let _ = writeln!(
                events,
                "{}",
                json!({"event":"hello","device":PHONE,"agent_run":run,"t_s":0.0,"host_unix_s":host,"pid":1})
            );
            let mut t = 0.5;
            let mut spans = Vec::new();
            for &(q, threads, batch, kv, prompt) in PHONE_CELLS.iter().filter(|c| c.0 == quant) {
                let mut row = Row {
                    device: PHONE,
                    quant: q,
                    threads,
                    batch,
                    kv,
                    prompt,
                    rep: 0,
                    status: "ok",
                    values: Vec::new(),
                    note: String::new(),
                };
                let cell = row.cell();
                let start = t;
                let _ = writeln!(
                    events,
                    "{}",
                    json!({"event":"cell_start","device":PHONE,"agent_run":run,"cell":cell,"t_s":start,"host_unix_s":host + start})
                );
                for rep in 0..self.reps {
                    row.rep = rep;
                    // The phone throttles in the second agent run, from 8 s on.
                    let throttled = run_no == 1 && t > 8.0;
                    let d = self.measure(&mut row, true, t + 120.0 * run_no as f64, throttled);
                    let _ = writeln!(results, "{}", row.line(&self.session));
                    spans.push((t, t + d, threads, throttled));
                    t += d + 0.1;
                }
                let _ = writeln!(
                    events,
                    "{}",
                    json!({"event":"cell_end","device":PHONE,"agent_run":run,"cell":cell,"t_s":t,"host_unix_s":host + t})
                );
                t += 0.5;
            }
            // Sensor samples at 10 Hz over the run.
            let end = t;
            let mut s = 0.0;
            while s <= end {
                let busy = spans.iter().find(|sp| s >= sp.0 && s <= sp.1);
                let throttled = busy.is_some_and(|b| b.3);
                let power = busy.map_or(0.6, |b| 1.6 + 0.45 * f64::from(b.2));
                let temp = 36.0 + (s + 120.0 * run_no as f64) / 15.0;
                let big = if throttled { 2000.0 } else { 2800.0 };
                for (name, v) in [
                    ("battery_power_w", power),
                    ("battery_voltage_v", 3.9),
                    ("battery_charging", 0.0),
                    ("thermal_soc-thermal_c", temp),
                    ("thermal_skin-therm_c", temp - 4.0),
                    ("cpu0_freq_mhz", 1800.0),
                    ("cpu1_freq_mhz", big),
                ] {
                    let cell = busy.map_or(String::new(), |_| String::from("-"));
                    let row = SampleRow {
                        device: PHONE.into(),
                        agent_run: run.clone(),
                        cell,
                        // Four decimals, as the runner writes sample times.
                        t_s: format!("{s:.4}").parse().unwrap_or(s),
                        sensor: name.into(),
                        value: v,
                        source: "sysfs".into(),
                    };
                    let line = row.to_csv_line().unwrap_or_default();
                    samples.push_str(&String::from_utf8_lossy(&line));
                }
                s += 0.1;
            }
            let _ = writeln!(
                events,
                "{}",
                json!({"event":"done","device":PHONE,"agent_run":run,"t_s":end,"host_unix_s":host + end})
            );
        }
        // The local host: no sensors; two cells shared with the phone, one failed, one lost.
        let mut local: Vec<(&'static str, u32, &'static str, String)> = vec![
            ("f32", 1, "ok", String::new()),
            ("f32", 2, "ok", String::new()),
        ];
        if self.failures {
            local.push((
                "q8",
                1,
                "failed",
                "agent killed by signal 9 (out of memory?)".into(),
            ));
            local.push(("q8", 2, "device_lost", "device local went away".into()));
        }
        for (quant, threads, status, note) in local {
            for rep in 0..self.reps {
                let mut row = Row {
                    device: "local",
                    quant,
                    threads,
                    batch: 1,
                    kv: None,
                    prompt: 16,
                    rep,
                    status,
                    values: Vec::new(),
                    note: note.clone(),
                };
                if status == "ok" {
                    self.measure(&mut row, false, 0.0, false);
                } else {
                    row.values = vec![("sensors", "none".into())];
                }
                let _ = writeln!(results, "{}", row.line(&self.session));
            }
        }
        let roofline = |threads: &[u32]| {
            let pts = |f: &dyn Fn(u32) -> f64| {
                threads
                    .iter()
                    .map(|&t| {
                        json!({"threads": t, "best": f(t) / 1e9, "median": f(t) / 1e9 * 0.97,
                                     "work_per_rep": 1e9, "samples_s": [0.2, 0.21, 0.2]})
                    })
                    .collect::<Vec<_>>()
            };
            json!({"triad": pts(&|t| roofs(t).0), "gemm": pts(&|t| roofs(t).1)})
        };
        let info = |serial: &str, name: &str, sensors: &str, battery: Option<u64>| {
            let outcome = if serial == PHONE {
                json!({"rows": {}, "stopped": null, "cooldown_baseline_c": 35.0,
                       "roofline": roofline(&[1, 2, 4])})
            } else {
                Value::Null
            };
            json!({"target": {"kind": "adb", "serial": serial}, "cells": 0, "outcome": outcome,
                   "info": {"serial": serial, "kind": if serial == "local" {"local"} else {"adb"},
                            "manufacturer": "socbench", "model": name, "soc": "virtual-soc", "abi": "x86_64",
                            "os_release": "Android 14", "cpu_count": 2,
                            "clusters": [{"name": "little", "cpus": [0], "max_khz": 1_800_000},
                                         {"name": "big", "cpus": [1], "max_khz": 2_800_000}],
                            "total_ram_bytes": 8_000_000_000u64, "gpu": null,
                            "battery_design_uah": battery, "sensors": sensors}})
        };
        let manifest = json!({
            "socbench_version": "0.1.0",
            "git_hash": "fixture",
            "build_profile": "release",
            "started_unix_s": 1_795_000_000u64,
            "finished": true,
            "interrupted": false,
            "command_line": ["socbench", "run", "--device", "all"],
            "model": format!("/cache/{MODEL}"),
            "model_bytes": 98_362_432u64,
            "sweep": {"backend": ["flex"], "quant": ["f32", "q8"], "repetitions": self.reps},
            "devices": [info(PHONE, PHONE_NAME, "simulated", Some(4_000_000)), info("local", "Test host", "none", None)],
            "sessions": [{"id": self.session}],
        });
        std::fs::write(dir.join("results.csv"), results)?;
        std::fs::write(dir.join("samples.csv"), samples)?;
        std::fs::write(dir.join("events.jsonl"), events)?;
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_string_pretty(&manifest).unwrap_or_default(),
        )?;
        Ok(())
    }

    /// Cells the fixture writes (phone and local host).
    pub fn cells(&self) -> usize {
        PHONE_CELLS.len() + if self.failures { 4 } else { 2 }
    }
}

/// A one-thread, one-sequence Burn Flex cell of `model` at `quant` on `device` (prompt and
/// generation of one token, full KV window), for tests that need a key and nothing more.
pub fn cell_key(device: &str, model: &str, quant: &str) -> CellKey {
    CellKey {
        device: device.into(),
        model: model.into(),
        runtime: "burn".into(),
        backend: "flex".into(),
        quant: quant.into(),
        threads: 1,
        batch: 1,
        kv_window: None,
        prompt_tokens: 1,
        gen_tokens: 1,
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

/// A result directory (`results.csv` only) with one configuration of the local host measured
/// on both runtimes, three repetitions each: Burn (flex) decodes and prefills at 1.5× and
/// holds 4× the memory of llama.cpp and loads in 2× its time, with the same jitter on both
/// sides. No energy.
pub fn write_runtime_pair(dir: &Path) -> std::io::Result<()> {
    let mut out = RESULT_COLUMNS.join(",");
    out.push('\n');
    let sides = [
        ("burn", "flex", "flex", 1.5, 400e6, 0.2),
        ("llama.cpp", "cpu", "llama.cpp-cpu", 1.0, 100e6, 0.1),
    ];
    for (runtime, backend, engine, speed, rss, load_s) in sides {
        for rep in 0..3u32 {
            let key = CellKey {
                device: "local".into(),
                model: MODEL.into(),
                runtime: runtime.into(),
                backend: backend.into(),
                quant: "q8".into(),
                threads: 1,
                batch: 1,
                kv_window: None,
                prompt_tokens: 16,
                gen_tokens: GEN,
                affinity: "all".into(),
                pacing_ms: 0,
                duration_s: 0,
                adaptive: "off".into(),
                lora: "none".into(),
                lora_rank: 0,
                lora_adapter: String::new(),
                kernel_tier: "auto".into(),
                perf_mode: "default".into(),
            };
            let run_id = format!("{MODEL}@0|local|{engine}|q8|t1|b1|kvfull|p16|g{GEN}|aall#{rep}");
            let mut row = ResultRow::new(run_id, &key, rep, Status::Ok);
            let j = 1.0 + 0.05 * JITTER[rep as usize];
            let (decode, prefill) = (20.0 * speed * j, 300.0 * speed * j);
            row.set(Metric::DecodeTokPerS, Some(decode));
            row.set(Metric::PrefillTokPerS, Some(prefill));
            row.set(Metric::TtftS, Some(16.0 / prefill));
            row.set(Metric::PeakRssBytes, Some(rss));
            row.set(Metric::LoadS, Some(load_s));
            row.session = "20261130T120000Z-1".into();
            let line = row
                .to_csv_line()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            out.push_str(&String::from_utf8_lossy(&line));
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("results.csv"), out)
}
