//! The HTML report: one self-contained file (inline CSS, inline SVG charts, no script, nothing
//! fetched), readable offline and printable. A Content-Security-Policy of `default-src 'none'`
//! makes the browser refuse any fetch, should one ever slip in.
//!
//! Every text that comes from a device or a file goes through [`xml`].

use crate::analysis::{Analysis, CellSummary, DeviceSummary, NOMINAL_BATTERY_V, is_cpu_freq};
use crate::charts::{self, Point, Series, Timeline, XyChart};
use crate::escape::xml;
use crate::schema::{Metric, ResultSet, Status, sig3};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

mod adaptive_section;
mod conditions_section;
mod latency_section;
mod lora_section;
mod runtimes_section;
mod sustained_section;
mod sweep_charts;

/// The page's style sheet (also used by the comparison page).
pub const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222;line-height:1.4}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:right;vertical-align:top}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
td small{display:block;color:#777;white-space:nowrap}
tr.bad td{background:#fdecea}tr.good td{background:#e8f5e9}td.good{background:#e8f5e9}td.bad{background:#fdecea}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4rem .7rem;margin:.6rem 0}
.sim{color:#8a5a00;font-size:.75em;font-weight:600}
.na{color:#777;font-style:italic}
figure.chart{margin:1rem 0 1.6rem;break-inside:avoid}
figure.chart svg{max-width:100%;height:auto;display:block}
figcaption{font-size:.85rem;color:#444;margin-top:.3rem}
pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;font-size:.8rem}
code{font-size:.9em}
dl{display:grid;grid-template-columns:max-content auto;gap:.1rem 1rem;font-size:.9rem}dt{color:#555}dd{margin:0}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}table,figure{break-inside:avoid}}
";

/// Metrics of the summary table, in column order.
const TABLE: [Metric; 14] = [
    Metric::ModelBytes,
    Metric::LoadS,
    Metric::WeightBytesResident,
    Metric::KvCacheBytes,
    Metric::PeakRssBytes,
    Metric::PssBytes,
    Metric::TtftS,
    Metric::DecodeMsPerToken,
    Metric::DecodeTokPerS,
    Metric::PrefillTokPerS,
    Metric::AvgPowerW,
    Metric::EnergyPerTokenJ,
    Metric::Battery30MinPct,
    Metric::MaxTempC,
];

/// The page being written.
#[derive(Debug, Default)]
struct Page {
    body: String,
}

impl Page {
    fn figure(&mut self, id: &str, title: &str, svg: Result<String, String>, caption: &str) {
        match svg {
            Ok(svg) => {
                let _ = writeln!(
                    self.body,
                    "<figure class=\"chart\" id=\"{}\"><h4>{}</h4>{svg}<figcaption>{caption}</figcaption></figure>",
                    xml(id),
                    xml(title)
                );
            }
            Err(e) => {
                let _ = writeln!(self.body, "<p class=\"na\">{}: {}</p>", xml(title), xml(&e));
            }
        }
    }

    fn na(&mut self, title: &str, why: &str) {
        let _ = writeln!(
            self.body,
            "<p class=\"na\"><strong>{}</strong>: {}</p>",
            xml(title),
            xml(why)
        );
    }
}

/// Energy counters (`rapl_*_j`, `rail_*_j`) turned into watts between samples.
fn counter_power(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    pts.windows(2)
        .filter(|w| w[1].0 > w[0].0 && w[1].1 >= w[0].1)
        .map(|w| {
            (
                (w[0].0 + w[1].0) / 2.0,
                (w[1].1 - w[0].1) / (w[1].0 - w[0].0),
            )
        })
        .collect()
}

fn timelines(page: &mut Page, set: &ResultSet, d: &DeviceSummary) {
    let runs: Vec<&crate::schema::AgentRun> = set
        .agent_runs
        .iter()
        .filter(|r| r.device == d.serial && !r.sensors.is_empty())
        .collect();
    let label = format!("{} ({})", d.name, d.serial);
    if runs.is_empty() {
        page.na(
            &format!("Sensor timelines of {label}"),
            "no sensor samples were recorded on this device",
        );
        return;
    }
    // Agent runs placed on one time axis: by the host clock when the events carry it, else
    // one after another.
    let base = runs.iter().filter_map(|r| r.host_unix_s).reduce(f64::min);
    let mut offsets = Vec::new();
    let mut cursor = 0.0;
    for r in &runs {
        let end = r
            .sensors
            .values()
            .filter_map(|s| s.last().map(|p| p.0))
            .fold(0.0, f64::max);
        let off = match (r.host_unix_s, base) {
            (Some(h), Some(b)) => h - b,
            _ => cursor,
        };
        offsets.push(off);
        cursor = off + end + 1.0;
    }
    let mut boundaries = Vec::new();
    let mut throttled = Vec::new();
    type Named = BTreeMap<String, Vec<(f64, f64)>>;
    let mut groups: BTreeMap<&str, Named> = BTreeMap::new();
    for (r, off) in runs.iter().zip(&offsets) {
        boundaries.extend(r.cells.iter().map(|c| c.1 + off));
        let mut fastest: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for (name, pts) in &r.sensors {
            let shifted = || pts.iter().map(|p| (p.0 + off, p.1));
            let (group, series): (&str, Vec<(f64, f64)>) = if name == "battery_power_w" {
                ("power", shifted().collect())
            } else if (name.starts_with("rapl_") || name.starts_with("rail_"))
                && name.ends_with("_j")
            {
                (
                    "power",
                    counter_power(pts)
                        .into_iter()
                        .map(|p| (p.0 + off, p.1))
                        .collect(),
                )
            } else if name.starts_with("thermal_") || name == "battery_temp_c" {
                ("temperature", shifted().collect())
            } else if is_cpu_freq(name) {
                for &(t, v) in pts {
                    let e = fastest.entry(t.to_bits()).or_insert((t, v));
                    e.1 = e.1.max(v);
                }
                ("frequency", shifted().collect())
            } else {
                continue;
            };
            groups
                .entry(group)
                .or_default()
                .entry(name.clone())
                .or_default()
                .extend(series);
        }
        if let Some(top) = d.top_freq_mhz {
            throttled.extend(
                fastest
                    .values()
                    .filter(|(_, f)| *f < 0.9 * top)
                    .map(|(t, _)| t + off),
            );
        }
    }
    let sim = if d.sensors == "simulated" {
        " Simulated sensors (virtual ADB device): these are model outputs, not phone readings."
    } else {
        ""
    };
    let caption = format!(
        "Grey lines: cell starts. Red ticks: samples where the fastest core ran below 90 % of its top frequency.{sim}"
    );
    for (group, unit, title) in [
        ("power", "W", "Power"),
        ("temperature", "°C", "Temperature"),
        ("frequency", "MHz", "CPU frequency"),
    ] {
        let full_title = format!("{title} timeline of {label}");
        let Some(series) = groups.get(group) else {
            page.na(&full_title, &format!("no {} sensor on this device", group));
            continue;
        };
        let mut series: Vec<(String, Vec<(f64, f64)>)> = series
            .iter()
            .map(|(n, pts)| {
                let mut pts = pts.clone();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                (n.clone(), charts::downsample(&pts, 1200))
            })
            .collect();
        // The hottest zones first, when there are too many to draw.
        series.sort_by(|a, b| {
            let peak = |s: &[(f64, f64)]| s.iter().map(|p| p.1).fold(f64::MIN, f64::max);
            peak(&b.1).total_cmp(&peak(&a.1)).then(a.0.cmp(&b.0))
        });
        let total = series.len();
        let t = Timeline {
            y_label: format!("{title} ({unit})"),
            series,
            boundaries: boundaries.clone(),
            throttled: charts::downsample(
                &throttled.iter().map(|t| (*t, 0.0)).collect::<Vec<_>>(),
                600,
            )
            .into_iter()
            .map(|p| p.0)
            .collect(),
            x_from_zero: false,
            y_from_zero: false,
        };
        let id = format!("timeline-{group}-{}", slug(&d.serial));
        page.figure(
            &id,
            &full_title,
            charts::timeline(&t),
            &xml(&format!("{caption}{}", sweep_charts::omitted(total))),
        );
    }
    sensor_sources(page, &runs);
}

/// Which sensor came from where: sysfs, or Android's services where sysfs was denied.
fn sensor_sources(page: &mut Page, runs: &[&crate::schema::AgentRun]) {
    let mut by_source: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for r in runs {
        for (sensor, sources) in &r.sources {
            for s in sources.split('+') {
                by_source.entry(s).or_default().insert(sensor);
            }
        }
    }
    if by_source.is_empty() {
        return;
    }
    let explain = |s: &str| match s {
        "sysfs" => "sysfs (kernel nodes, every sample)",
        "proc" => "proc (the agent's own /proc files, every sample)",
        "dumpsys" => {
            "dumpsys (Android's services, where sysfs was denied; at most once a second, no value in between)"
        }
        "hal" => {
            "hal (the thermal HAL through dumpsys thermalservice, where sysfs was denied; at most once a second)"
        }
        _ => "other",
    };
    let items: Vec<String> = by_source
        .iter()
        .map(|(s, names)| {
            let names: Vec<&str> = names.iter().copied().collect();
            format!(
                "<li><b>{}</b> — {}: {}</li>",
                xml(s),
                xml(explain(s)),
                xml(&names.join(", "))
            )
        })
        .collect();
    page.body.push_str(&format!(
        "<p class=\"note\">Sensor sources:</p><ul class=\"sources\">{}</ul>\n",
        items.join("")
    ));
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// What is missing or simulated, said where the numbers would be.
fn metric_cell(c: &CellSummary, m: Metric) -> String {
    let Some(s) = c.metric(m) else {
        let why = if c.count(Status::Ok) == 0 {
            "no successful repetition"
        } else if m.needs_power()
            && c.sensors != "none"
            && m == Metric::Battery30MinPct
            && c.metric(Metric::AvgPowerW).is_some()
        {
            "battery capacity unknown"
        } else if m.needs_power() || m.needs_thermal() {
            "no sensor"
        } else {
            "not measured"
        };
        return format!("<td class=\"na\">{why}</td>");
    };
    let sim = if c.sensors == "simulated" && (m.needs_power() || m.needs_thermal()) {
        " <span class=\"sim\" title=\"simulated sensor\">sim</span>"
    } else {
        ""
    };
    let (lo, hi) = (m.format(s.median_ci95.0), m.format(s.median_ci95.1));
    let ci = if s.n > 1 && lo != hi {
        format!("<small>{} – {}</small>", xml(&lo), xml(&hi))
    } else {
        String::new()
    };
    let outl = if s.outliers > 0 {
        format!(" <small>{} outlier(s)</small>", s.outliers)
    } else {
        String::new()
    };
    format!("<td>{}{sim}{ci}{outl}</td>", xml(&m.format(s.median)))
}

fn runs_cell(c: &CellSummary) -> String {
    let mut parts = vec![format!("{} ok", c.count(Status::Ok))];
    for s in [Status::Failed, Status::DeviceLost, Status::Skipped] {
        if c.count(s) > 0 {
            parts.push(format!("{} {}", c.count(s), s.name()));
        }
    }
    parts.join(", ")
}

fn summary_tables(page: &mut Page, a: &Analysis) {
    for d in &a.devices {
        let _ = writeln!(
            page.body,
            "<h3 id=\"device-{}\">{} <code>{}</code>{}</h3>",
            xml(&slug(&d.serial)),
            xml(&d.name),
            xml(&d.serial),
            if d.sensors == "simulated" {
                " <span class=\"sim\">simulated sensors</span>"
            } else {
                ""
            }
        );
        match d.sensors.as_str() {
            "simulated" => page.body.push_str("<p class=\"note\">This is socbench's virtual ADB device: its power, temperature and frequency sensors are simulated from the real CPU load of the host. Latency and memory are real measurements of this host.</p>\n"),
            "none" => page.body.push_str("<p class=\"note\">This device exposed no power or thermal sensor: energy, battery and temperature columns are empty, not zero.</p>\n"),
            _ => {}
        }
        if let Some(wh) = d.battery_wh {
            let _ = writeln!(
                page.body,
                "<p>Battery: {:.2} Wh ({}).</p>",
                wh,
                if d.battery_voltage_measured {
                    "design capacity × measured voltage".to_owned()
                } else {
                    format!("design capacity × nominal {NOMINAL_BATTERY_V} V")
                }
            );
        }
        page.body
            .push_str("<table class=\"summary\"><thead><tr><th>Configuration</th><th>Kernel</th>");
        for m in TABLE {
            let _ = write!(page.body, "<th>{}</th>", xml(m.label()));
        }
        page.body.push_str("<th>Runs</th></tr></thead><tbody>\n");
        for c in a.cells_of(&d.serial) {
            let class = if c.has_failures() { "cell bad" } else { "cell" };
            let _ = write!(
                page.body,
                "<tr class=\"{class}\" data-cell=\"{}\"><td><code>{}</code></td>",
                xml(&format!("{}|{}", c.key.device, a.label(&c.key))),
                xml(&a.label(&c.key))
            );
            // The code that ran the products (a packed kernel variant, Burn's, llama.cpp's).
            let _ = write!(page.body, "<td><code>{}</code></td>", xml(&c.kernel));
            for m in TABLE {
                page.body.push_str(&metric_cell(c, m));
            }
            let _ = writeln!(page.body, "<td>{}</td></tr>", xml(&runs_cell(c)));
        }
        page.body.push_str("</tbody></table>\n");
    }
}

/// The cells with a median for `m`.
fn cells_with(a: &Analysis, m: Metric) -> Vec<&CellSummary> {
    a.cells.iter().filter(|c| c.metric(m).is_some()).collect()
}

/// Opens a table row with the cell's device and configuration.
fn row_start(page: &mut Page, a: &Analysis, c: &CellSummary) {
    let _ = write!(
        page.body,
        "<tr><td>{}</td><td><code>{}</code></td>",
        xml(&c.key.device),
        xml(&a.label(&c.key))
    );
}

/// Energy by phase, for cells where a power sensor was read.
fn energy_table(page: &mut Page, a: &Analysis) {
    let cells: Vec<&CellSummary> = a
        .cells
        .iter()
        .filter(|c| {
            c.metric(Metric::EnergyJ).is_some()
                || (!c.external_power().is_empty() && c.energy_source.starts_with("battery"))
        })
        .collect();
    page.body.push_str("<h3>Energy by phase</h3>\n");
    if cells.is_empty() {
        page.na("Energy by phase", "no device had a power sensor");
        return;
    }
    page.body.push_str("<table class=\"energy\"><thead><tr><th>Device</th><th>Configuration</th><th>Prefill energy</th><th>Decode energy</th><th>Total</th><th>Energy/token</th><th>Avg power</th><th>Source</th></tr></thead><tbody>\n");
    for c in cells {
        row_start(page, a, c);
        let external = c.external_power().join(", ");
        if c.metric(Metric::EnergyJ).is_none() {
            // Battery counters on a cable describe the charger: no number is the honest one.
            let _ = writeln!(
                page.body,
                "<td colspan=\"5\" class=\"external-power\">on external power ({}) — not the \
                 workload's</td><td>{}</td></tr>",
                xml(&external),
                xml(&c.energy_source)
            );
            continue;
        }
        for m in [
            Metric::PrefillEnergyJ,
            Metric::DecodeEnergyJ,
            Metric::EnergyJ,
            Metric::EnergyPerTokenJ,
            Metric::AvgPowerW,
        ] {
            page.body.push_str(&metric_cell(c, m));
        }
        // Battery figures withheld for some repetitions (RAPL is kept on any supply).
        let withheld = c.energy_source.starts_with("battery")
            && c.metric(Metric::EnergyJ).map_or(0, |m| m.n) < c.count(Status::Ok);
        let source = if external.is_empty() || !withheld {
            c.energy_source.clone()
        } else {
            format!(
                "{}; repetitions on external power ({external}) not counted",
                c.energy_source
            )
        };
        let _ = writeln!(page.body, "<td>{}</td></tr>", xml(&source));
    }
    page.body.push_str("</tbody></table>\n<p>Trapezoid-rule integrals of the power samples over each phase: prefill from the repetition's start to its first token, decode from there to its end. Battery energy is written only for repetitions during which the device reported it ran on its battery (the <code>power_source</code> column): on a USB cable or a charger the battery counters describe the supply. For real battery figures, unplug the phone and use wireless debugging (<code>adb connect phone:port</code>), with <code>socbench run --require-battery</code>.</p>\n<h3>Temperature and throttling</h3>\n");
}

/// Perplexity of the quality text beside decode speed, per quantization level, relative to f32
/// on the same device and backend.
fn quality_vs_speed(page: &mut Page, a: &Analysis) {
    let scored = cells_with(a, Metric::Perplexity);
    page.body.push_str("<h3>Quality vs speed</h3>\n");
    if scored.is_empty() {
        page.na(
            "Quality vs speed",
            "no perplexity measurements (run the sweep with `quality = true` or `--quality`)",
        );
        return;
    }
    page.body.push_str("<table class=\"quality\"><thead><tr><th>Device</th><th>Configuration</th><th>Perplexity</th><th>vs f32</th><th>Decode tok/s</th><th>Weights/step</th></tr></thead><tbody>\n");
    for c in &scored {
        let ppl = c.metric(Metric::Perplexity).map_or(f64::NAN, |s| s.median);
        let rel = f32_change(&scored, c).map_or("–".to_owned(), |r| format!("{r:+.2} %"));
        let _ = write!(
            page.body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>",
            xml(&c.key.device),
            xml(&a.label(&c.key)),
            xml(&Metric::Perplexity.format(ppl)),
            xml(&rel)
        );
        page.body.push_str(&metric_cell(c, Metric::DecodeTokPerS));
        page.body
            .push_str(&metric_cell(c, Metric::WeightBytesPerStep));
        page.body.push_str("</tr>\n");
    }
    page.body.push_str("</tbody></table>\n<p>Perplexity of the built-in English text (about 750 tokens, in independent chunks of 128), measured once per model variant on the device.</p>\n");
    // The same as a chart: one point per configuration, one colour per quantization level.
    let mut by_quant: BTreeMap<&str, Vec<Point>> = BTreeMap::new();
    for c in &scored {
        if let (Some(rel), Some(decode)) = (f32_change(&scored, c), c.metric(Metric::DecodeTokPerS))
        {
            by_quant.entry(&c.key.quant).or_default().push(Point {
                x: decode.median,
                y: rel,
                lo: rel,
                hi: rel,
            });
        }
    }
    let title = "Quality vs speed";
    if by_quant.is_empty() {
        page.na(
            title,
            "not drawn: no configuration has both a decode figure and an f32 perplexity to compare with",
        );
        return;
    }
    let total = by_quant.len();
    let chart = XyChart {
        x_label: "decode (tok/s, median)".into(),
        y_label: "perplexity vs f32 (%)".into(),
        series: by_quant
            .into_iter()
            .map(|(quant, mut points)| {
                points.sort_by(|a, b| a.x.total_cmp(&b.x));
                Series {
                    name: quant.to_owned(),
                    points,
                }
            })
            .collect(),
        join: false,
        y_from_zero: true,
        categories: None,
    };
    let caption = format!(
        "Each point is one configuration: across, its median decode throughput; up, its perplexity change from f32 on the same device and backend (lower is better; perplexity is measured once per variant, so it has no interval).{}",
        sweep_charts::omitted(total)
    );
    page.figure(
        "quality-vs-speed",
        title,
        charts::xy_chart(&chart),
        &xml(&caption),
    );
}

/// Perplexity change of `c` from the f32 cell of the same device, model and backend (any other
/// axes), in percent.
fn f32_change(scored: &[&CellSummary], c: &CellSummary) -> Option<f64> {
    let ppl = c.metric(Metric::Perplexity)?.median;
    let base = scored
        .iter()
        .find(|b| {
            b.key.quant == "f32"
                && b.key.device == c.key.device
                && b.key.model == c.key.model
                && b.key.backend == c.key.backend
        })?
        .metric(Metric::Perplexity)?
        .median;
    Some((ppl / base - 1.0) * 100.0)
}

/// The measured roofs per device, and how close each cell came to them.
fn roofline(page: &mut Page, set: &ResultSet, a: &Analysis) {
    if set.rooflines.is_empty() {
        page.na(
            "Roofline",
            "no device was probed (`probe = false`, or results from before the probe existed)",
        );
    } else {
        page.body.push_str("<table class=\"roofs\"><thead><tr><th>Device</th><th>Threads</th><th>Triad bandwidth</th><th>f32 GEMM</th></tr></thead><tbody>\n");
        for (serial, roof) in &set.rooflines {
            let points = |kind: &str| -> Vec<(u64, f64)> {
                roof[kind]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .filter_map(|p| Some((p["threads"].as_u64()?, p["best"].as_f64()?)))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (triad, gemm) = (points("triad"), points("gemm"));
            let mut threads: Vec<u64> = triad.iter().chain(&gemm).map(|p| p.0).collect();
            threads.sort_unstable();
            threads.dedup();
            for t in threads {
                let find = |pts: &[(u64, f64)], unit: &str| {
                    pts.iter()
                        .find(|p| p.0 == t)
                        .map_or("–".to_owned(), |p| format!("{} {unit}", sig3(p.1)))
                };
                let _ = writeln!(
                    page.body,
                    "<tr><td>{}</td><td>{t}</td><td>{}</td><td>{}</td></tr>",
                    xml(serial),
                    xml(&find(&triad, "GB/s")),
                    xml(&find(&gemm, "GFLOP/s"))
                );
            }
        }
        page.body.push_str("</tbody></table>\n<p>Measured on each device by <code>socbench-agent probe</code>: STREAM triad (best of the repetitions, 12 bytes per f32 element) and one independent 256×256 sgemm per thread.</p>\n");
    }
    let cells = cells_with(a, Metric::WeightBytesPerStep);
    if cells.is_empty() {
        return;
    }
    page.body.push_str("<table class=\"roofline\"><thead><tr><th>Device</th><th>Configuration</th><th>Weights/step</th><th>Decode tok/s</th><th>Decode, % of triad</th><th>Prefill tok/s</th><th>Prefill, % of GEMM</th></tr></thead><tbody>\n");
    for c in cells {
        row_start(page, a, c);
        for m in [
            Metric::WeightBytesPerStep,
            Metric::DecodeTokPerS,
            Metric::DecodeBwFraction,
            Metric::PrefillTokPerS,
            Metric::PrefillGemmFraction,
        ] {
            page.body.push_str(&metric_cell(c, m));
        }
        page.body.push_str("</tr>\n");
    }
    page.body.push_str("</tbody></table>\n<p>Decode at batch B streams every weight once per step of B tokens: weight bytes × steps/s over the triad bandwidth at the cell's thread count. Prefill: 2 × weights FLOPs per prompt token over the GEMM rate. Attention and activations are not counted, so these are lower bounds on the traffic and work done; GPU cells are not compared with the CPU's roofs.</p>\n");
}

fn thermal_table(page: &mut Page, a: &Analysis) {
    energy_table(page, a);
    page.body.push_str("<table class=\"thermal\"><thead><tr><th>Device</th><th>Configuration</th><th>Start temp</th><th>Max temp</th><th>Cool-down wait</th><th>Throttled reps</th><th>Time to throttle</th><th>Sustained / peak</th><th>Charging</th></tr></thead><tbody>\n");
    for c in &a.cells {
        let f = |m: Metric| c.metric(m).map_or("–".to_owned(), |s| m.format(s.median));
        let frac = |(n, of): (usize, usize)| {
            if of == 0 {
                "unknown".to_owned()
            } else {
                format!("{n} of {of}")
            }
        };
        let _ = writeln!(
            page.body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            xml(&c.key.device),
            xml(&a.label(&c.key)),
            xml(&f(Metric::StartTempC)),
            xml(&f(Metric::MaxTempC)),
            xml(&f(Metric::CooldownWaitS)),
            frac(c.throttled_reps),
            c.time_to_throttle_s
                .map_or("–".into(), |t| format!("{t:.1} s")),
            c.sustained_to_peak
                .map_or("–".into(), |r| format!("{r:.2}")),
            frac(c.charging_reps),
        );
    }
    page.body.push_str("</tbody></table>\n<p>Sustained / peak: decode throughput of the last repetition over the best one. Time to throttle: from the cell's start to the first sample with the fastest core below 90 % of its top frequency. For a sustained session, both are the session's own (see Sustained sessions).</p>\n");
}

fn sessions_table(page: &mut Page, a: &Analysis) {
    let cells: Vec<&CellSummary> = a
        .cells
        .iter()
        .filter(|c| c.session_spread.is_some())
        .collect();
    if cells.is_empty() {
        page.na(
            "Variance between sessions",
            "every cell was measured in one session only",
        );
        return;
    }
    page.body.push_str("<table class=\"sessions\"><thead><tr><th>Device</th><th>Configuration</th><th>Sessions</th><th>Within-session CV</th><th>Between-session CV</th></tr></thead><tbody>\n");
    for c in cells {
        if let Some((n, w, b)) = c.session_spread {
            let _ = writeln!(
                page.body,
                "<tr><td>{}</td><td><code>{}</code></td><td>{n}</td><td>{:.1} %</td><td>{:.1} %</td></tr>",
                xml(&c.key.device),
                xml(&a.label(&c.key)),
                w * 100.0,
                b * 100.0
            );
        }
    }
    page.body.push_str("</tbody></table>\n<p>Coefficient of variation of decode throughput: pooled within sessions, and between session medians. A between-session CV well above the within-session one means conditions (temperature, charge, background load) changed between sessions.</p>\n");
}

fn failures(page: &mut Page, a: &Analysis) {
    let bad: Vec<&CellSummary> = a
        .cells
        .iter()
        .filter(|c| c.has_failures() || c.count(Status::Skipped) > 0 || !c.warnings.is_empty())
        .collect();
    if bad.is_empty() {
        page.body.push_str("<p>Every repetition completed.</p>\n");
        return;
    }
    page.body.push_str("<ul class=\"failures\">\n");
    for c in bad {
        let _ = writeln!(
            page.body,
            "<li><code>{}</code> <code>{}</code>: {} — {}</li>",
            xml(&c.key.device),
            xml(&a.label(&c.key)),
            xml(&runs_cell(c)),
            xml(&c
                .notes
                .iter()
                .chain(&c.warnings)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "))
        );
    }
    page.body.push_str("</ul>\n");
}

fn dl(out: &mut String, rows: &[(&str, String)]) {
    out.push_str("<dl>");
    for (k, v) in rows {
        if !v.is_empty() {
            let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", xml(k), xml(v));
        }
    }
    out.push_str("</dl>\n");
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn provenance(page: &mut Page, set: &ResultSet) {
    let _ = writeln!(
        page.body,
        "<p>Rendered by socbench {} from {} result director{}.</p>",
        env!("CARGO_PKG_VERSION"),
        set.sources.len(),
        if set.sources.len() == 1 { "y" } else { "ies" }
    );
    for s in &set.sources {
        let _ = writeln!(
            page.body,
            "<h3><code>{}</code></h3>",
            xml(&s.dir.display().to_string())
        );
        let Some(m) = &s.manifest else {
            page.na(
                "manifest.json",
                "missing or unreadable: no provenance for this directory",
            );
            continue;
        };
        let cmd = m["command_line"]
            .as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        dl(
            &mut page.body,
            &[
                ("socbench", text(&m["socbench_version"])),
                ("git", text(&m["git_hash"])),
                ("build profile", text(&m["build_profile"])),
                ("started (Unix s)", text(&m["started_unix_s"])),
                ("finished", text(&m["finished"])),
                ("interrupted", text(&m["interrupted"])),
                ("model", text(&m["model"])),
                ("model file bytes", text(&m["model_bytes"])),
                ("command line", cmd),
            ],
        );
        if let Some(devs) = m["devices"].as_array() {
            page.body.push_str("<table class=\"devices\"><thead><tr><th>Serial</th><th>Kind</th><th>Model</th><th>SoC</th><th>ABI</th><th>OS</th><th>CPUs</th><th>Clusters</th><th>RAM</th><th>GPU</th><th>Battery</th><th>Sensors</th></tr></thead><tbody>\n");
            for d in devs {
                let i = &d["info"];
                let clusters = i["clusters"]
                    .as_array()
                    .map(|cs| {
                        cs.iter()
                            .map(|c| {
                                format!(
                                    "{}: {} @ {} MHz",
                                    text(&c["name"]),
                                    c["cpus"].as_array().map_or(0, Vec::len),
                                    c["max_khz"]
                                        .as_f64()
                                        .map_or("?".into(), |k| format!("{:.0}", k / 1000.0))
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let ram = i["total_ram_bytes"].as_f64().map_or(String::new(), |b| {
                    format!("{:.1} GiB", b / (1u64 << 30) as f64)
                });
                let battery = i["battery_design_uah"]
                    .as_f64()
                    .map_or(String::new(), |u| format!("{:.0} mAh", u / 1000.0));
                let cells = [
                    text(&i["serial"]),
                    text(&i["kind"]),
                    format!("{} {}", text(&i["manufacturer"]), text(&i["model"])),
                    text(&i["soc"]),
                    text(&i["abi"]),
                    text(&i["os_release"]),
                    text(&i["cpu_count"]),
                    clusters,
                    ram,
                    text(&i["gpu"]),
                    battery,
                    text(&i["sensors"]),
                ];
                page.body.push_str("<tr>");
                for c in cells {
                    let _ = write!(page.body, "<td>{}</td>", xml(c.trim()));
                }
                page.body.push_str("</tr>\n");
            }
            page.body.push_str("</tbody></table>\n");
        }
        let plan = serde_json::to_string_pretty(&m["sweep"]).unwrap_or_default();
        let _ = writeln!(
            page.body,
            "<details><summary>Sweep plan</summary><pre>{}</pre></details>",
            xml(&plan)
        );
    }
    if !set.warnings.is_empty() {
        page.body.push_str("<h3>Reading warnings</h3><ul>\n");
        for w in &set.warnings {
            let _ = writeln!(page.body, "<li>{}</li>", xml(w));
        }
        page.body.push_str("</ul>\n");
    }
}

/// Renders the report of `set` (analysed as `a`).
pub fn render(set: &ResultSet, a: &Analysis) -> String {
    let mut page = Page::default();
    let totals = a.totals();
    let count = |s: Status| totals.get(&s).copied().unwrap_or(0);
    let dirs: Vec<String> = set
        .sources
        .iter()
        .map(|s| s.dir.display().to_string())
        .collect();
    let _ = writeln!(
        page.body,
        "<p>{} cells on {} device{} from <code>{}</code>: {} repetitions ok, {} failed, {} lost with their device, {} skipped{}.</p>",
        a.cells.len(),
        a.devices.len(),
        if a.devices.len() == 1 { "" } else { "s" },
        xml(&dirs.join(", ")),
        count(Status::Ok),
        count(Status::Failed),
        count(Status::DeviceLost),
        count(Status::Skipped),
        if set.superseded > 0 {
            format!(" ({} earlier rows superseded by retries)", set.superseded)
        } else {
            String::new()
        }
    );
    let mut sustained = String::new();
    if sustained_section::any(a) {
        sustained.push_str("<a href=\"#sustained\">Sustained</a> · ");
    }
    if adaptive_section::any(a) {
        sustained.push_str("<a href=\"#adaptive\">Adaptive</a> · ");
    }
    if lora_section::any(a) {
        sustained.push_str("<a href=\"#lora\">LoRA</a> · ");
    }
    let _ = writeln!(
        page.body,
        "<nav><a href=\"#summary\">Summary</a> · <a href=\"#charts\">Charts</a> · <a href=\"#token-latency\">Per-token latency</a> · <a href=\"#runtimes\">Runtimes</a> · <a href=\"#timelines\">Timelines</a> · <a href=\"#roofline\">Roofline</a> · <a href=\"#thermal\">Thermal</a> · {sustained}<a href=\"#conditions\">Conditions</a> · <a href=\"#sessions\">Sessions</a> · <a href=\"#failures\">Failures</a> · <a href=\"#provenance\">Provenance</a></nav>"
    );
    page.body.push_str("<h2 id=\"summary\">Summary</h2>\n<p>Medians over the successful repetitions of each cell; below each, its 95 % bootstrap confidence interval. Outliers (modified Z-score above 3.5) are counted, never dropped.</p>\n");
    summary_tables(&mut page, a);
    page.body.push_str("<h2 id=\"charts\">Charts</h2>\n");
    sweep_charts::render(&mut page, a);
    page.body
        .push_str("<h2 id=\"token-latency\">Per-token latency</h2>\n");
    latency_section::render(&mut page, a);
    page.body.push_str("<h2 id=\"runtimes\">Runtimes</h2>\n");
    runtimes_section::render(&mut page, set, a);
    page.body
        .push_str("<h2 id=\"timelines\">Sensor timelines</h2>\n");
    for d in &a.devices {
        timelines(&mut page, set, d);
    }
    page.body.push_str("<h2 id=\"roofline\">Roofline</h2>\n");
    roofline(&mut page, set, a);
    page.body
        .push_str("<h2 id=\"thermal\">Energy and thermal behaviour</h2>\n");
    thermal_table(&mut page, a);
    if sustained_section::any(a) {
        page.body
            .push_str("<h2 id=\"sustained\">Sustained sessions</h2>\n");
        sustained_section::render(&mut page, set, a);
    }
    if adaptive_section::any(a) {
        page.body
            .push_str("<h2 id=\"adaptive\">Adaptive precision</h2>\n");
        adaptive_section::render(&mut page, set, a);
    }
    if lora_section::any(a) {
        page.body.push_str("<h2 id=\"lora\">LoRA adapters</h2>\n");
        lora_section::render(&mut page, set, a);
    }
    page.body
        .push_str("<h2 id=\"conditions\">Run conditions</h2>\n");
    conditions_section::render(&mut page, a);
    page.body.push_str("<h2 id=\"sessions\">Sessions</h2>\n");
    sessions_table(&mut page, a);
    page.body
        .push_str("<h2 id=\"failures\">Failures and warnings</h2>\n");
    failures(&mut page, a);
    page.body
        .push_str("<h2 id=\"provenance\">Provenance</h2>\n");
    provenance(&mut page, set);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
<title>socbench report</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>socbench report</h1>\n{}</body>\n</html>\n",
        page.body
    )
}

/// Ids of the charts [`render`] draws for `set`, in page order (for tests and tooling).
pub fn chart_ids(set: &ResultSet, a: &Analysis) -> Vec<String> {
    let html = render(set, a);
    html.match_indices("<figure class=\"chart\" id=\"")
        .filter_map(|(i, m)| {
            let rest = &html[i + m.len()..];
            rest.find('"').map(|e| rest[..e].to_owned())
        })
        .collect()
}
