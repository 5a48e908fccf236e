//! Charts as inline SVG, drawn with plotters' SVG backend (text is left to the browser's
//! fonts, so nothing is loaded from the system or the network).

use plotters::prelude::*;

/// Ten colours that stay apart from each other in print and for common colour blindness
/// (Tableau 10).
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Most series one chart draws (the rest are named in the caption).
pub const MAX_SERIES: usize = 10;

/// The colour of series `i`.
pub fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// A measured point: the median and its confidence interval.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Position on the x axis.
    pub x: f64,
    /// Median.
    pub y: f64,
    /// Lower end of the interval.
    pub lo: f64,
    /// Upper end of the interval.
    pub hi: f64,
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<Point>,
}

/// A chart of medians with error bars against a numeric or categorical axis.
#[derive(Debug, Clone)]
pub struct XyChart {
    /// Axis title under the x axis.
    pub x_label: String,
    /// Axis title beside the y axis.
    pub y_label: String,
    /// The series.
    pub series: Vec<Series>,
    /// Join each series' points with lines (a sweep along an ordered axis).
    pub join: bool,
    /// Start the y axis at zero (throughput, memory: differences are not exaggerated).
    pub y_from_zero: bool,
    /// Labels of categorical x positions 0, 1, 2, … (sweep values are discrete: 1, 2, 4, 8
    /// threads sit at equal distances, labelled as they are).
    pub categories: Option<Vec<String>>,
}

fn range(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero && lo > 0.0 {
        lo = 0.0;
    }
    if hi - lo < 1e-12 {
        let pad = if hi.abs() > 0.0 { hi.abs() * 0.1 } else { 1.0 };
        lo -= pad;
        hi += pad;
    }
    let pad = (hi - lo) * 0.08;
    (if from_zero && lo >= 0.0 { lo } else { lo - pad }, hi + pad)
}

fn err(e: impl std::fmt::Debug) -> String {
    format!("drawing a chart: {e:?}")
}

/// Draws `c` and returns the SVG text.
pub fn xy_chart(c: &XyChart) -> Result<String, String> {
    let mut svg = String::new();
    let tx = |x: f64| x;
    {
        let root = SVGBackend::with_string(&mut svg, (760, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (x0, x1) = match &c.categories {
            Some(cats) => (-0.5, cats.len() as f64 - 0.5),
            None => {
                let (a, b) = range(
                    c.series
                        .iter()
                        .flat_map(|s| s.points.iter().map(|p| tx(p.x))),
                    false,
                );
                (a, b)
            }
        };
        let (y0, y1) = range(
            c.series
                .iter()
                .flat_map(|s| s.points.iter().flat_map(|p| [p.lo, p.hi, p.y])),
            c.y_from_zero,
        );
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        let cats = c.categories.clone();
        let x_fmt = move |x: &f64| -> String {
            match &cats {
                Some(cats) => {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 {
                        cats.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                }
                None => crate::schema::sig3(*x),
            }
        };
        let y_fmt = |y: &f64| crate::schema::sig3(*y);
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(c.x_label.as_str())
            .y_desc(c.y_label.as_str())
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 13));
        if let Some(cats) = &c.categories {
            mesh.x_labels(cats.len() + 1);
        }
        mesh.draw().map_err(err)?;
        for (i, s) in c.series.iter().take(MAX_SERIES).enumerate() {
            let col = color(i);
            let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (tx(p.x), p.y)).collect();
            if c.join {
                chart
                    .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                    .map_err(err)?;
            }
            chart
                .draw_series(s.points.iter().map(|p| {
                    ErrorBar::new_vertical(tx(p.x), p.lo, p.y, p.hi, col.stroke_width(1), 8)
                }))
                .map_err(err)?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, col.filled())))
                .map_err(err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A sensor timeline: raw samples against time, with cell boundaries and throttle markers.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Axis title beside the y axis.
    pub y_label: String,
    /// `(name, [(t_s, value)])`.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// Times at which a cell started.
    pub boundaries: Vec<f64>,
    /// Times at which the device was throttling.
    pub throttled: Vec<f64>,
    /// Start the time axis at zero (a session's curves, against time since its start).
    pub x_from_zero: bool,
    /// Start the y axis at zero (throughput: a drop is not exaggerated).
    pub y_from_zero: bool,
}

/// Draws `t` and returns the SVG text.
pub fn timeline(t: &Timeline) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 260)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (x0, x1) = range(
            t.series.iter().flat_map(|s| s.1.iter().map(|p| p.0)),
            t.x_from_zero,
        );
        let (y0, y1) = range(
            t.series.iter().flat_map(|s| s.1.iter().map(|p| p.1)),
            t.y_from_zero,
        );
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(38)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc(t.y_label.as_str())
            .x_label_formatter(&|x| crate::schema::sig3(*x))
            .y_label_formatter(&|y| crate::schema::sig3(*y))
            .light_line_style(RGBColor(240, 240, 240))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        let grey = RGBColor(170, 170, 170);
        chart
            .draw_series(
                t.boundaries
                    .iter()
                    .filter(|b| **b >= x0 && **b <= x1)
                    .map(|&b| PathElement::new(vec![(b, y0), (b, y1)], grey.stroke_width(1))),
            )
            .map_err(err)?;
        let red = RGBColor(200, 0, 0);
        let mark = (y1 - y0) * 0.04;
        chart
            .draw_series(
                t.throttled
                    .iter()
                    .map(|&x| PathElement::new(vec![(x, y1), (x, y1 - mark)], red.stroke_width(2))),
            )
            .map_err(err)?;
        for (i, (name, pts)) in t.series.iter().take(MAX_SERIES).enumerate() {
            let col = color(i);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(1)))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], col.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// At most `n` points, as bucket means (keeps long timelines small in the page).
pub fn downsample(pts: &[(f64, f64)], n: usize) -> Vec<(f64, f64)> {
    if pts.len() <= n || n == 0 {
        return pts.to_vec();
    }
    let per = pts.len().div_ceil(n);
    pts.chunks(per)
        .map(|c| {
            let k = c.len() as f64;
            (
                c.iter().map(|p| p.0).sum::<f64>() / k,
                c.iter().map(|p| p.1).sum::<f64>() / k,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_with_its_legend() {
        let c = XyChart {
            x_label: "threads".into(),
            y_label: "tok/s".into(),
            series: vec![Series {
                name: "q8 <b>".into(),
                points: vec![
                    Point {
                        x: 1.0,
                        y: 10.0,
                        lo: 9.0,
                        hi: 11.0,
                    },
                    Point {
                        x: 2.0,
                        y: 18.0,
                        lo: 17.0,
                        hi: 19.0,
                    },
                ],
            }],
            join: true,
            y_from_zero: true,
            categories: None,
        };
        let svg = xy_chart(&c).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50]);
        assert!(svg.contains("q8 &lt;b&gt;"), "legend text is escaped");
        assert!(!svg.contains("<b>"));
    }

    #[test]
    fn downsampling_keeps_the_mean_and_the_bound() {
        let pts: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, 2.0)).collect();
        let d = downsample(&pts, 100);
        assert!(d.len() <= 100);
        assert!(d.iter().all(|p| p.1 == 2.0));
        assert_eq!(downsample(&pts[..5], 100).len(), 5);
    }
}
