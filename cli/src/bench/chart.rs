//! `kpl bench --chart`: user records/s over time and the latency distribution, per run; for a
//! sweep, packing efficiency and p99 latency against the swept value.
//!
//! The SVG is written directly (two line charts need no font machinery; plotters would need
//! fontconfig for its text); PNG is that SVG rendered by resvg with the system's fonts.

use std::fmt::Write as _;
use std::path::Path;

use super::report::RunReport;

pub enum Format {
    Svg,
    Png,
}

/// The format a chart path asks for, or why it is not one we write.
pub fn format_of(path: &Path) -> Result<Format, String> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
    {
        Some(e) if e == "svg" => Ok(Format::Svg),
        Some(e) if e == "png" => Ok(Format::Png),
        _ => Err(format!(
            "--chart {}: the file name must end in .svg or .png",
            path.display()
        )),
    }
}

const W: f64 = 960.0;
const H: f64 = 720.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;

/// A step of 1, 2 or 5 times a power of ten giving about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn label(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

struct Panel<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    top: f64,
    height: f64,
    x_max: f64,
    y_max: f64,
    /// Labels of evenly spaced x positions (a sweep's values at 0.5, 1.5, ...): the x axis is
    /// then these instead of numbers.
    categories: &'a [String],
}

impl Panel<'_> {
    fn x(&self, v: f64) -> f64 {
        LEFT + v / self.x_max * (W - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        self.top + self.height - v / self.y_max * self.height
    }

    fn axes(&self, svg: &mut String) {
        let (bottom, right) = (self.top + self.height, W - RIGHT);
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{}" font-size="16" font-weight="bold">{}</text>"#,
            self.top - 14.0,
            self.title
        );
        let step = tick_step(self.y_max);
        let mut v = 0.0;
        while v <= self.y_max + 1e-9 {
            let y = self.y(v);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"##,
                LEFT - 6.0,
                y + 4.0,
                label(v)
            );
            v += step;
        }
        let ticks: Vec<(f64, String)> = if self.categories.is_empty() {
            let step = tick_step(self.x_max);
            let n = (self.x_max / step + 1e-9).floor() as usize;
            (0..=n)
                .map(|i| (i as f64 * step, label(i as f64 * step)))
                .collect()
        } else {
            let at = |i: usize| i as f64 + 0.5;
            self.categories
                .iter()
                .enumerate()
                .map(|(i, c)| (at(i), c.clone()))
                .collect()
        };
        for (v, text) in ticks {
            let x = self.x(v);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" font-size="12" text-anchor="middle">{text}</text>"##,
                bottom + 5.0,
                bottom + 20.0,
            );
        }
        let _ = writeln!(
            svg,
            r##"<polyline points="{LEFT},{} {LEFT},{bottom} {right},{bottom}" fill="none" stroke="#333"/>"##,
            self.top
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" font-size="13" text-anchor="middle">{}</text>"#,
            (LEFT + right) / 2.0,
            bottom + 40.0,
            self.x_label
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(24 {:.1}) rotate(-90)" font-size="13" text-anchor="middle">{}</text>"#,
            self.top + self.height / 2.0,
            self.y_label
        );
    }

    fn line(&self, svg: &mut String, points: &[(f64, f64)], colour: &str) {
        let pts: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.x(*x), self.y(*y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            pts.join(" ")
        );
    }
}

fn colour(r: &RunReport) -> &'static str {
    if r.aggregation { "#1f77b4" } else { "#ff7f0e" }
}

fn name(r: &RunReport) -> &'static str {
    if r.aggregation {
        "aggregation on"
    } else {
        "aggregation off"
    }
}

/// A figure of a run (or of a producer's part), as a chart plots it.
type Figure<T> = fn(&T) -> f64;

/// One line of the legend, at the top: row `row`, in `colour`.
fn legend(svg: &mut String, row: usize, colour: &str, text: &str) {
    let y = 16.0 + row as f64 * 18.0;
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{y}" width="18" height="4" fill="{colour}"/><text x="{}" y="{}" font-size="13">{text}</text>"#,
        LEFT + 24.0,
        y + 7.0,
    );
}

/// The opening of a chart's SVG: its size and a white background.
fn open_svg() -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    )
}

/// The chart as SVG text.
pub fn svg(runs: &[RunReport]) -> String {
    let mut svg = open_svg();
    let max_of = |f: &dyn Fn(&RunReport) -> f64| runs.iter().map(f).fold(0.0f64, f64::max);
    let rate = Panel {
        title: "User records put per second",
        x_label: "seconds since the start of the run",
        y_label: "user records/s",
        top: 70.0,
        height: 240.0,
        x_max: max_of(&|r| r.rate_over_time.last().map_or(0.0, |p| p.0)).max(1e-3),
        y_max: (max_of(&|r| r.rate_over_time.iter().map(|p| p.1).fold(0.0, f64::max)) * 1.1)
            .max(1.0),
        categories: &[],
    };
    rate.axes(&mut svg);
    for r in runs {
        let mut points = vec![(0.0, 0.0)];
        points.extend(r.rate_over_time.iter().copied());
        rate.line(&mut svg, &points, colour(r));
    }
    // To the 99.9th percentile: one slow outlier would otherwise squash every curve flat.
    let p999 = |r: &RunReport| {
        let q = &r.latency_quantiles_ms;
        q.get(q.len().saturating_sub(2)).copied().unwrap_or(0.0)
    };
    let latency = Panel {
        title: "Latency from send to receipt (share of records at or below)",
        x_label: "milliseconds (to the 99.9th percentile)",
        y_label: "% of records",
        top: 420.0,
        height: 220.0,
        x_max: (max_of(&p999) * 1.05).max(1.0),
        y_max: 100.0,
        categories: &[],
    };
    latency.axes(&mut svg);
    for r in runs {
        let q = &r.latency_quantiles_ms;
        let points: Vec<(f64, f64)> = q
            .iter()
            .enumerate()
            .filter(|(_, ms)| **ms <= latency.x_max)
            .map(|(i, ms)| (*ms, i as f64 / (q.len().max(2) - 1) as f64 * 100.0))
            .collect();
        latency.line(&mut svg, &points, colour(r));
    }
    for (i, r) in runs.iter().enumerate() {
        let text = format!(
            "{}: {:.0} user records/s, p50 {:.0} ms, p99 {:.0} ms; a month: ${:.2} provisioned ({} shards), ${:.2} on demand",
            name(r),
            r.user_records_per_second,
            r.latency_ms_p50,
            r.latency_ms_p99,
            r.bill.provisioned_monthly_usd,
            r.bill.shards_needed,
            r.bill.on_demand_monthly_usd
        );
        legend(&mut svg, i, colour(r), &text);
    }
    svg.push_str("</svg>\n");
    svg
}

/// A sweep's chart as SVG text: PUT payload unit efficiency and p99 latency at each value of
/// the swept property, a line per aggregation mode.
pub fn sweep_svg(runs: &[RunReport]) -> String {
    let Some(property) = runs
        .iter()
        .find_map(|r| r.setting.as_ref().map(|s| s.name.clone()))
    else {
        return svg(runs);
    };
    let mut values: Vec<String> = Vec::new();
    for r in runs {
        if let Some(s) = &r.setting
            && !values.contains(&s.value)
        {
            values.push(s.value.clone());
        }
    }
    let at = |r: &RunReport| {
        r.setting
            .as_ref()
            .and_then(|s| values.iter().position(|v| *v == s.value))
            .map_or(0.0, |i| i as f64 + 0.5)
    };
    let mut svg = open_svg();
    let x_label = format!("{property} (each value a run)");
    let efficiency = Panel {
        title: "PUT payload unit efficiency (minimum units for the bytes / units used)",
        x_label: &x_label,
        y_label: "% efficiency",
        top: 95.0,
        height: 215.0,
        x_max: values.len() as f64,
        y_max: 100.0,
        categories: &values,
    };
    let latency = Panel {
        title: "Latency p99, send to receipt",
        x_label: &x_label,
        y_label: "milliseconds",
        top: 420.0,
        height: 220.0,
        x_max: values.len() as f64,
        y_max: (runs.iter().map(|r| r.latency_ms_p99).fold(0.0, f64::max) * 1.1).max(1.0),
        categories: &values,
    };
    efficiency.axes(&mut svg);
    latency.axes(&mut svg);
    for aggregation in [true, false] {
        let mode: Vec<&RunReport> = runs
            .iter()
            .filter(|r| r.aggregation == aggregation)
            .collect();
        let Some(first) = mode.first() else { continue };
        let value: [(&Panel<'_>, Figure<RunReport>); 2] = [
            (&efficiency, |r| r.payload_unit_efficiency_percent),
            (&latency, |r| r.latency_ms_p99),
        ];
        for (panel, f) in value {
            let points: Vec<(f64, f64)> = mode.iter().map(|r| (at(r), f(r))).collect();
            panel.line(&mut svg, &points, colour(first));
            // A dot at each run: the line only joins them.
            for (x, y) in points {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/>"#,
                    panel.x(x),
                    panel.y(y),
                    colour(first)
                );
            }
        }
        legend(
            &mut svg,
            usize::from(!aggregation),
            colour(first),
            name(first),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A fleet's chart as SVG text: each producer's share of the records put and the share of its
/// entries throttled, as bars.
pub fn fleet_svg(run: &RunReport) -> String {
    let mut svg = open_svg();
    let n = run.producers.len().max(1);
    let names: Vec<String> = (1..=n).map(|i| format!("producer {i}")).collect();
    let panels = [
        (
            "Share of the user records put",
            95.0,
            (|p| p.share_percent) as Figure<super::fleet::ProducerShare>,
        ),
        ("Entries throttled, of its entries sent", 430.0, |p| {
            p.throttled_percent
        }),
    ];
    for (title, top, value) in panels {
        let panel = Panel {
            title,
            x_label: "",
            y_label: "%",
            top,
            height: 215.0,
            x_max: n as f64,
            y_max: 100.0,
            categories: &names,
        };
        panel.axes(&mut svg);
        let width = (panel.x(1.0) - panel.x(0.0)) * 0.6;
        for (i, p) in run.producers.iter().enumerate() {
            let v = value(p);
            let _ = writeln!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{v:.1}%</text>"#,
                panel.x(i as f64 + 0.5) - width / 2.0,
                panel.y(v),
                panel.y(0.0) - panel.y(v),
                colour(run),
                panel.x(i as f64 + 0.5),
                panel.y(v) - 4.0,
            );
        }
    }
    legend(&mut svg, 0, colour(run), name(run));
    svg.push_str("</svg>\n");
    svg
}

/// Writes the chart of `runs` to `path`, as SVG or PNG by its extension: a sweep's chart when
/// the runs were made at a sweep's values.
pub fn write(path: &Path, runs: &[RunReport]) -> Result<(), String> {
    let text = if runs.iter().any(|r| r.setting.is_some()) {
        sweep_svg(runs)
    } else {
        svg(runs)
    };
    let bytes = match format_of(path)? {
        Format::Svg => text.into_bytes(),
        Format::Png => png(&text)?,
    };
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn png(svg: &str) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    // "sans-serif" maps to Arial by default, absent on most Linux machines: map it to a sans
    // font that is installed, or any font at all.
    let families: Vec<String> = options
        .fontdb
        .faces()
        .flat_map(|f| f.families.iter().map(|(name, _)| name.clone()))
        .collect();
    let preferred = [
        "DejaVu Sans",
        "Liberation Sans",
        "Noto Sans",
        "Helvetica",
        "Arial",
    ];
    match preferred
        .iter()
        .find(|p| families.iter().any(|f| f == *p))
        .map(|p| p.to_string())
        .or_else(|| families.first().cloned())
    {
        Some(family) => options.fontdb_mut().set_sans_serif_family(family),
        None => eprintln!("kpl bench: no system fonts found; the PNG chart has no text (use .svg)"),
    }
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| format!("chart: {e}"))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or("chart: the image has no area")?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| format!("chart: {e}"))
}
