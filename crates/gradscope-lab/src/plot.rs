//! Line plots as standalone SVG: linear or log₁₀ y axis, ticks, a legend, one polyline per series.
//!
//! Written by hand rather than with a plotting crate: the output must be byte-for-byte deterministic (the
//! report is compared across thread counts) and must not depend on system fonts. Points that cannot be drawn
//! (NaN, ±∞, or ≤ 0 on a log axis) break the line; the legend says how many a series lost that way, so a
//! gap is never silent.

use std::fmt::Write as _;

use crate::output::escape;

/// One named line.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points in order.
    pub points: Vec<(f64, f64)>,
}

/// A line plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Plot {
    /// File stem (`<name>.svg`).
    pub name: String,
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Log₁₀ y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const W: f64 = 860.0;
const H: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 290.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

impl Plot {
    /// A plot with no series.
    pub fn new(name: &str, title: &str, x_label: &str, y_label: &str, log_y: bool) -> Plot {
        Plot {
            name: name.into(),
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_y,
            series: Vec::new(),
        }
    }

    /// Add a line.
    pub fn line(&mut self, name: impl Into<String>, points: Vec<(f64, f64)>) {
        self.series.push(Series {
            name: name.into(),
            points,
        });
    }

    fn drawable(&self, y: f64) -> Option<f64> {
        if !y.is_finite() {
            None
        } else if self.log_y {
            (y > 0.0).then(|| y.log10())
        } else {
            Some(y)
        }
    }

    /// The SVG document.
    pub fn svg(&self) -> String {
        let pts = || {
            self.series.iter().flat_map(|s| {
                s.points
                    .iter()
                    .filter(|p| p.0.is_finite())
                    .filter_map(|&(x, y)| self.drawable(y).map(|y| (x, y)))
            })
        };
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in pts() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-300 {
            (x0, x1) = (x0 - 0.5, x1 + 0.5);
        }
        let (yt, ylo, yhi) = if self.log_y {
            let lo = y0.floor();
            let hi = if y1.ceil() > lo { y1.ceil() } else { lo + 1.0 };
            let step = ((hi - lo) / 8.0).ceil().max(1.0);
            let ticks: Vec<f64> = (0..)
                .map(|k| lo + step * k as f64)
                .take_while(|&t| t <= hi + 1e-9)
                .collect();
            (ticks, lo, hi)
        } else {
            let (lo, hi) = if y1 - y0 < 1e-300 {
                (y0 - 0.5, y1 + 0.5)
            } else {
                (y0, y1)
            };
            nice_ticks(lo, hi, 6.0)
        };
        let (xt, xlo, xhi) = nice_ticks(x0, x1, 8.0);
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let sx = |x: f64| LEFT + (x - xlo) / (xhi - xlo) * pw;
        let sy = |y: f64| TOP + ph - (y - ylo) / (yhi - ylo) * ph;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
            LEFT + pw / 2.0,
            escape(&self.title)
        );
        for &t in &yt {
            let y = sy(t);
            let label = if self.log_y {
                format!("1e{}", t as i64)
            } else {
                tick_label(t)
            };
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0
            );
        }
        for &t in &xt {
            let x = sx(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                tick_label(t)
            );
        }
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 12.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        for (k, series) in self.series.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            let mut lost = 0usize;
            for &(x, y) in &series.points {
                match self.drawable(y).filter(|_| x.is_finite()) {
                    Some(v) => runs
                        .last_mut()
                        .into_iter()
                        .for_each(|r| r.push((sx(x), sy(v)))),
                    None => {
                        lost += 1;
                        runs.push(Vec::new());
                    }
                }
            }
            for run in runs.iter().filter(|r| !r.is_empty()) {
                let path: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                if run.len() == 1 {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                        run[0].0, run[0].1
                    );
                } else {
                    let _ = writeln!(
                        s,
                        r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
                        path.join(" ")
                    );
                    // Markers on short series, so lines that coincide still show every point.
                    if run.len() <= 40 {
                        for (x, y) in run {
                            let _ = writeln!(
                                s,
                                r#"<circle cx="{x:.1}" cy="{y:.1}" r="2" fill="{color}"/>"#
                            );
                        }
                    }
                }
            }
            let ly = TOP + 10.0 + 18.0 * k as f64;
            let lx = LEFT + pw + 12.0;
            let mut label = series.name.clone();
            if lost > 0 {
                let why = if self.log_y {
                    "zero or non-finite"
                } else {
                    "non-finite"
                };
                label += &format!(" ({lost} {why} not drawn)");
            }
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                lx + 18.0,
                lx + 24.0,
                ly + 4.0,
                escape(&label)
            );
        }
        s += "</svg>\n";
        s
    }
}

/// Round tick positions covering [lo, hi], about `target` intervals: (ticks, axis low, axis high).
fn nice_ticks(lo: f64, hi: f64, target: f64) -> (Vec<f64>, f64, f64) {
    let span = hi - lo;
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    let a = (lo / step).floor() * step;
    let b = (hi / step).ceil() * step;
    let n = ((b - a) / step).round() as usize;
    ((0..=n).map(|k| a + step * k as f64).collect(), a, b)
}

fn tick_label(t: f64) -> String {
    let t = if t.abs() < 1e-12 { 0.0 } else { t };
    if t != 0.0 && (t.abs() >= 1e5 || t.abs() < 1e-3) {
        format!("{t:.1e}")
    } else {
        let s = format!("{t:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_lines_and_counts_what_it_cannot_draw() {
        let mut p = Plot::new("p", "t <&>", "layer", "norm", true);
        p.line("a", vec![(1.0, 1e-3), (2.0, 1e-1), (3.0, 0.0), (4.0, 10.0)]);
        p.line("b", vec![(1.0, 1.0), (2.0, 2.0)]);
        let svg = p.svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // The lone point after the gap, and a marker on each of the 4 points of the two polylines.
        assert_eq!(svg.matches("<circle").count(), 1 + 4);
        assert!(svg.contains("a (1 zero or non-finite not drawn)"));
        assert!(svg.contains(">1e-3<") && svg.contains(">1e1<"));
        assert_eq!(svg, p.svg());
    }

    #[test]
    fn ticks_cover_the_range() {
        let (t, a, b) = nice_ticks(0.3, 9.7, 6.0);
        assert!(a <= 0.3 && b >= 9.7 && t.len() >= 4 && t.len() <= 12);
        let empty = Plot::new("e", "", "", "", false).svg();
        assert!(empty.contains("</svg>"));
    }
}
