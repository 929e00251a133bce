//! Line plots as standalone SVG: linear or log₁₀ y axis, ticks, a legend, one polyline per series.
//!
//! Written by hand rather than with a plotting crate: the output must be byte-for-byte deterministic (the
//! report is compared across thread counts) and must not depend on system fonts. Points that cannot be drawn
//! (NaN, ±∞, or ≤ 0 on a log axis) break the line; the legend says how many a series lost that way, so a
//! gap is never silent.

use std::fmt::Write as _;

use crate::markup::escape;

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

/// The plotting area (the canvas grows around it to fit the legend).
const PW: f64 = 490.0;
const PH: f64 = 350.0;
const LEFT: f64 = 80.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// Vertical distance between legend entries.
const LEGEND_STEP: f64 = 18.0;
/// Width of one legend character at font size 12 (a generous estimate for sans-serif), for sizing.
const CHAR_W: f64 = 7.0;
/// Eight colours that stay apart (Tableau 10 without its grey and olive), each drawn solid, dashed and dotted,
/// with three marker shapes: 72 series get distinct styles before any repeats.
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const DASHES: [&str; 3] = ["", "7,3", "2,2"];

/// The style of series `k`: colour, dash pattern (empty: solid) and marker shape (0 circle, 1 square,
/// 2 triangle). Distinct for the first `8·3·3 = 72` series.
fn style(k: usize) -> (&'static str, &'static str, usize) {
    let color = COLORS[k % COLORS.len()];
    let dash = DASHES[(k / COLORS.len()) % DASHES.len()];
    let marker = (k / (COLORS.len() * DASHES.len())) % 3;
    (color, dash, marker)
}

/// A marker of shape `shape` at (x, y) with radius `r`.
fn marker(shape: usize, x: f64, y: f64, r: f64, color: &str) -> String {
    match shape {
        1 => format!(
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
            x - r,
            y - r,
            2.0 * r,
            2.0 * r
        ),
        2 => format!(
            r#"<path d="M{x:.1},{:.1}L{:.1},{:.1}L{:.1},{:.1}Z" fill="{color}"/>"#,
            y - 1.2 * r,
            x + 1.1 * r,
            y + 0.8 * r,
            x - 1.1 * r,
            y + 0.8 * r
        ),
        _ => format!(r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{color}"/>"#),
    }
}

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

    /// The plot with these lines added, each a name and its points.
    pub fn with_lines<N: Into<String>>(
        mut self,
        lines: impl IntoIterator<Item = (N, Vec<(f64, f64)>)>,
    ) -> Plot {
        for (name, points) in lines {
            self.line(name, points);
        }
        self
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
        let (pw, ph) = (PW, PH);
        // The legend: one entry per series (with the count of points it could not draw); the canvas grows to
        // fit the longest label and every entry.
        let labels: Vec<String> = self
            .series
            .iter()
            .map(|series| {
                let lost = series
                    .points
                    .iter()
                    .filter(|&&(x, y)| self.drawable(y).is_none() || !x.is_finite())
                    .count();
                let mut label = series.name.clone();
                if lost > 0 {
                    let why = if self.log_y {
                        "zero or non-finite"
                    } else {
                        "non-finite"
                    };
                    label += &format!(" ({lost} {why} not drawn)");
                }
                label
            })
            .collect();
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        let legend_w = 12.0 + 24.0 + CHAR_W * longest as f64 + 12.0;
        let w = (LEFT + pw + legend_w).max(LEFT + pw + 60.0).ceil();
        let h = (TOP + ph + BOTTOM).max(TOP + 10.0 + LEGEND_STEP * labels.len() as f64 + 10.0);
        let sx = |x: f64| LEFT + (x - xlo) / (xhi - xlo) * pw;
        let sy = |y: f64| TOP + ph - (y - ylo) / (yhi - ylo) * ph;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
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
            TOP + ph + BOTTOM - 12.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        for (k, (series, label)) in self.series.iter().zip(&labels).enumerate() {
            let (color, dash, shape) = style(k);
            let dash_attr = if dash.is_empty() {
                String::new()
            } else {
                format!(r#" stroke-dasharray="{dash}""#)
            };
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for &(x, y) in &series.points {
                match self.drawable(y).filter(|_| x.is_finite()) {
                    Some(v) => runs
                        .last_mut()
                        .into_iter()
                        .for_each(|r| r.push((sx(x), sy(v)))),
                    None => runs.push(Vec::new()),
                }
            }
            for run in runs.iter().filter(|r| !r.is_empty()) {
                let path: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                if run.len() == 1 {
                    let _ = writeln!(s, "{}", marker(shape, run[0].0, run[0].1, 2.5, color));
                } else {
                    let _ = writeln!(
                        s,
                        r#"<polyline fill="none" stroke="{color}" stroke-width="1.8"{dash_attr} points="{}"/>"#,
                        path.join(" ")
                    );
                    // Markers on short series, so lines that coincide still show every point.
                    if run.len() <= 40 {
                        for &(x, y) in run {
                            let _ = writeln!(s, "{}", marker(shape, x, y, 2.0, color));
                        }
                    }
                }
            }
            let ly = TOP + 10.0 + LEGEND_STEP * k as f64;
            let lx = LEFT + pw + 12.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"{dash_attr}/>{}<text x="{}" y="{}">{}</text>"#,
                lx + 18.0,
                marker(shape, lx + 9.0, ly, 2.5, color),
                lx + 24.0,
                ly + 4.0,
                escape(label)
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
        // The lone point after the gap, a marker on each of the 4 points of the two polylines, and one in
        // each of the two legend entries.
        assert_eq!(svg.matches("<circle").count(), 1 + 4 + 2);
        assert!(svg.contains("a (1 zero or non-finite not drawn)"));
        assert!(svg.contains(">1e-3<") && svg.contains(">1e1<"));
        assert_eq!(svg, p.svg());
    }

    #[test]
    fn many_series_keep_distinct_styles_and_the_legend_fits() {
        let styles: std::collections::HashSet<_> = (0..72).map(style).collect();
        assert_eq!(styles.len(), 72);
        let mut p = Plot::new("p", "", "x", "y", false);
        for k in 0..40 {
            p.line(
                format!("a fairly long series name number {k}"),
                vec![(0.0, k as f64), (1.0, k as f64 + 1.0)],
            );
        }
        let svg = p.svg();
        let attr = |name: &str| -> f64 {
            let at = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            svg[at..].split('"').next().unwrap().parse().unwrap()
        };
        let (w, h) = (attr("width"), attr("height"));
        // The last legend entry's baseline and the longest label's right end are inside the canvas.
        let last_y = TOP + 10.0 + LEGEND_STEP * 39.0 + 4.0;
        assert!(last_y < h, "{last_y} >= {h}");
        let longest = "a fairly long series name number 39".chars().count() as f64;
        let right = LEFT + PW + 12.0 + 24.0 + CHAR_W * longest;
        assert!(right < w, "{right} >= {w}");
    }

    #[test]
    fn ticks_cover_the_range() {
        let (t, a, b) = nice_ticks(0.3, 9.7, 6.0);
        assert!(a <= 0.3 && b >= 9.7 && t.len() >= 4 && t.len() <= 12);
        let empty = Plot::new("e", "", "", "", false).svg();
        assert!(empty.contains("</svg>"));
    }
}
