//! `socbench report` and `socbench compare`.

use crate::cli::{CompareArgs, ReportArgs};
use anyhow::{Context, Result, bail};
use socbench_reports::compare::{self, Options};
use socbench_reports::export::{self, Format};
use socbench_reports::schema::Metric;
use socbench_reports::{ResultSet, analyze, html};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn write_out(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// Renders the HTML report of `dirs` into `out`.
pub fn write_html(dirs: &[PathBuf], out: &Path) -> Result<()> {
    let set = ResultSet::load(dirs)?;
    let a = analyze(&set);
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
    let page = html::render(&set, &a);
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, page).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// `socbench report`.
pub fn report(a: &ReportArgs) -> Result<()> {
    if a.format == "html" {
        let out = a
            .out
            .clone()
            .unwrap_or_else(|| a.dirs[0].join("report.html"));
        write_html(&a.dirs, &out)?;
        eprintln!("wrote {}", out.display());
        return Ok(());
    }
    let Some(format) = Format::parse(&a.format) else {
        bail!(
            "--format {}: unknown format (valid: html, csv, json, md, junit)",
            a.format
        );
    };
    let set = ResultSet::load(&a.dirs)?;
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
    let analysis = analyze(&set);
    let mut text = export::render(&analysis, format);
    if format == Format::Markdown {
        // Burn beside llama.cpp, when the results hold both.
        let pairs = socbench_reports::runtimes::pairs(&set, &analysis);
        if !pairs.is_empty() {
            text.push('\n');
            text.push_str(&socbench_reports::runtimes::markdown(&pairs));
        }
    }
    write_out(a.out.as_deref(), &text)
}

/// Parses `5%`, `5 %` or `0.05`.
pub fn parse_threshold(s: &str) -> Result<f64> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
        None => t.parse::<f64>(),
    };
    match v {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
        _ => bail!(
            "--threshold {s}: expected a percentage below 100 % such as `5%`, or a fraction such as `0.05`"
        ),
    }
}

/// `socbench compare`: exit 1 on a significant regression.
pub fn compare(a: &CompareArgs) -> Result<ExitCode> {
    let threshold = parse_threshold(&a.threshold)?;
    let metrics = match &a.metric {
        None => Options::default().metrics,
        Some(list) => list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                let m = Metric::parse(s.trim()).filter(|m| m.higher_is_better().is_some());
                m.with_context(|| {
                    let valid: Vec<&str> = Metric::ALL
                        .iter()
                        .filter(|m| m.higher_is_better().is_some())
                        .map(|m| m.name())
                        .collect();
                    format!("--metric {s}: unknown metric (valid: {})", valid.join(", "))
                })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    if metrics.is_empty() {
        bail!("--metric is empty");
    }
    let format = a.format.as_str();
    if !["md", "markdown", "json", "junit", "html"].contains(&format) {
        bail!("--format {format}: unknown format (valid: md, json, junit, html)");
    }
    let base = ResultSet::load(std::slice::from_ref(&a.base)).context("BASE")?;
    let new = ResultSet::load(std::slice::from_ref(&a.new)).context("NEW")?;
    let (ba, na) = (analyze(&base), analyze(&new));
    let c = compare::compare(&base, &ba, &new, &na, &Options { threshold, metrics });
    if c.matched() == 0 {
        bail!(
            "no cell of {} matches one of {}: compare results of the same configurations and devices",
            a.new.display(),
            a.base.display()
        );
    }
    let text = match format {
        "json" => compare::json(&c),
        "junit" => compare::junit(&c),
        "html" => compare::html(
            &c,
            &a.base.display().to_string(),
            &a.new.display().to_string(),
        ),
        _ => compare::markdown(&c),
    };
    write_out(a.out.as_deref(), &text)?;
    Ok(if c.regressed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::parse_threshold;

    #[test]
    fn thresholds() {
        assert_eq!(parse_threshold("5%").unwrap(), 0.05);
        assert_eq!(parse_threshold("2.5 %").unwrap(), 0.025);
        assert_eq!(parse_threshold("0.1").unwrap(), 0.1);
        assert!(parse_threshold("150%").is_err());
        assert!(parse_threshold("-1%").is_err());
        assert!(parse_threshold("x").is_err());
    }
}
