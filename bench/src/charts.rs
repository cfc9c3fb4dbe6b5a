//! SVG charts of a report, written by hand (no plotting dependency): throughput over time per
//! run, and latency percentile curves (x in "nines": 90 %, 99 %, 99.9 %…; y logarithmic).

use std::fmt::Write;

use crate::report::Run;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 260.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

struct Plot {
    svg: String,
    x_max: f64,
    y_min: f64,
    y_max: f64,
}

impl Plot {
    fn new(title: &str, x_label: &str, y_label: &str, x_max: f64, y_min: f64, y_max: f64) -> Plot {
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{title}</text>
<text x="{}" y="{}" text-anchor="middle">{x_label}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{y_label}</text>
<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="black"/>
"#,
            WIDTH / 2.0,
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
            HEIGHT - 12.0,
            TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
            TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
            WIDTH - LEFT - RIGHT,
            HEIGHT - TOP - BOTTOM,
        );
        Plot {
            svg,
            x_max: x_max.max(1e-9),
            y_min,
            y_max: y_max.max(y_min + 1e-9),
        }
    }

    fn x(&self, value: f64) -> f64 {
        LEFT + value / self.x_max * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, value: f64) -> f64 {
        let fraction = (value - self.y_min) / (self.y_max - self.y_min);
        HEIGHT - BOTTOM - fraction * (HEIGHT - TOP - BOTTOM)
    }

    fn x_tick(&mut self, value: f64, label: &str) {
        let x = self.x(value);
        let _ = writeln!(
            self.svg,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{TOP}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 16.0
        );
    }

    fn y_tick(&mut self, value: f64, label: &str) {
        let y = self.y(value);
        let _ = writeln!(
            self.svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }

    fn line(&mut self, index: usize, name: &str, points: &[(f64, f64)]) {
        let color = COLORS[index % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.x(*x), self.y(*y)))
            .collect();
        let _ = writeln!(
            self.svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.join(" ")
        );
        let legend_y = TOP + 10.0 + 18.0 * index as f64;
        let _ = writeln!(
            self.svg,
            r#"<rect x="{}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{}" y="{:.1}">{}</text>"#,
            WIDTH - RIGHT + 12.0,
            legend_y - 4.0,
            WIDTH - RIGHT + 32.0,
            legend_y + 1.0,
            escape(name)
        );
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>\n");
        self.svg
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round step for axis ticks near `range / 5`.
fn step(range: f64) -> f64 {
    let raw = (range / 5.0).max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    let scaled = raw / magnitude;
    let nice = if scaled <= 1.0 {
        1.0
    } else if scaled <= 2.0 {
        2.0
    } else if scaled <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// MB/s over time, one line per run that has a timeline.
pub fn throughput(runs: &[Run]) -> String {
    let runs: Vec<&Run> = runs.iter().filter(|run| !run.timeline.is_empty()).collect();
    let x_max = runs
        .iter()
        .flat_map(|run| run.timeline.iter().map(|(t, _)| *t))
        .fold(1.0, f64::max);
    let y_max = runs
        .iter()
        .flat_map(|run| run.timeline.iter().map(|(_, rate)| *rate))
        .fold(1.0, f64::max)
        * 1.1;
    let mut plot = Plot::new("Throughput over time", "seconds", "MB/s", x_max, 0.0, y_max);
    let x_step = step(x_max);
    let mut tick = 0.0;
    while tick <= x_max + 1e-9 {
        plot.x_tick(tick, &format!("{tick}"));
        tick += x_step;
    }
    let y_step = step(y_max);
    let mut tick = 0.0;
    while tick <= y_max + 1e-9 {
        plot.y_tick(tick, &format!("{tick}"));
        tick += y_step;
    }
    for (index, run) in runs.iter().enumerate() {
        plot.line(index, &run.name, &run.timeline);
    }
    plot.finish()
}

/// "Nines" of a percentile: 90 → 1, 99 → 2, 99.9 → 3.
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).max(1e-6).log10()
}

/// Latency percentile curves (the first latency of each run), log-scaled µs.
pub fn latency(runs: &[Run]) -> String {
    let curves: Vec<(&str, &[(f64, u64)])> = runs
        .iter()
        .filter_map(|run| {
            run.latency
                .first()
                .map(|latency| (run.name.as_str(), latency.curve.as_slice()))
        })
        .collect();
    let values = curves
        .iter()
        .flat_map(|(_, curve)| curve.iter().map(|(_, us)| *us as f64));
    let low = values
        .clone()
        .fold(f64::MAX, f64::min)
        .max(1.0)
        .log10()
        .floor();
    let high = values.fold(1.0, f64::max).max(10.0).log10().ceil();
    let x_max = nines(99.999);
    let mut plot = Plot::new(
        "Latency by percentile",
        "percentile",
        "µs (log scale)",
        x_max,
        low,
        high,
    );
    for (percentile, label) in [
        (0.0, "0"),
        (90.0, "90"),
        (99.0, "99"),
        (99.9, "99.9"),
        (99.99, "99.99"),
        (99.999, "99.999"),
    ] {
        plot.x_tick(nines(percentile), label);
    }
    let mut decade = low;
    while decade <= high + 1e-9 {
        plot.y_tick(decade, &format!("{}", 10f64.powf(decade)));
        decade += 1.0;
    }
    for (index, (name, curve)) in curves.iter().enumerate() {
        let points: Vec<(f64, f64)> = curve
            .iter()
            .map(|(percentile, us)| (nines(*percentile), (*us as f64).max(1.0).log10()))
            .collect();
        plot.line(index, name, &points);
    }
    plot.finish()
}
