//! Line charts as SVG, written by hand: panels side by side, each with a logarithmic
//! x axis (the number of children) and a logarithmic y axis, one line per supervisor,
//! and one legend below them. The figures span four decades (a 1 ms revival beside a
//! 1 s one), which a linear axis would flatten.

use std::fmt::Write as _;

pub struct Series {
    pub label: String,
    pub color: &'static str,
    /// Drawn thicker, for the subject of the benchmark.
    pub bold: bool,
    pub dashed: bool,
    /// (N, value); values that are not positive are left out (no place on a log axis).
    pub points: Vec<(f64, f64)>,
}

pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

const PANEL_WIDTH: f64 = 430.0;
const PLOT_LEFT: f64 = 62.0;
const PLOT_RIGHT: f64 = 16.0;
const PLOT_TOP: f64 = 74.0;
const PLOT_HEIGHT: f64 = 270.0;
const LEGEND_ROW: f64 = 20.0;
const LEGEND_COLUMNS: usize = 4;
const FONT: &str = "font-family=\"Helvetica, Arial, sans-serif\"";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The decades that hold every value: (lowest exponent, highest exponent).
fn decades(values: impl Iterator<Item = f64>) -> (i32, i32) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| *v > 0.0 && v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0, 1);
    }
    let (lo, hi) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (lo, hi.max(lo + 1))
}

fn tick_label(exponent: i32) -> String {
    if exponent >= 0 {
        format!("{}", 10f64.powi(exponent) as u64)
    } else {
        format!("{}", 10f64.powi(exponent))
    }
}

/// The whole chart: a title, a subtitle, the panels in a row, the legend below.
pub fn svg(title: &str, subtitle: &str, unit: &str, panels: &[Panel]) -> String {
    let mut labels: Vec<(&str, &'static str, bool, bool)> = Vec::new();
    for series in panels.iter().flat_map(|p| &p.series) {
        if !labels.iter().any(|l| l.0 == series.label) {
            labels.push((&series.label, series.color, series.bold, series.dashed));
        }
    }
    let width = PANEL_WIDTH * panels.len().max(1) as f64;
    let legend_top = PLOT_TOP + PLOT_HEIGHT + 52.0;
    let legend_rows = labels.len().div_ceil(LEGEND_COLUMNS);
    let height = legend_top + legend_rows as f64 * LEGEND_ROW + 8.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" {FONT}>"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"22\" font-size=\"15\" font-weight=\"bold\" text-anchor=\"middle\">{}</text>",
        width / 2.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"40\" font-size=\"11\" fill=\"#555555\" text-anchor=\"middle\">{}</text>",
        width / 2.0,
        escape(subtitle)
    );
    for (index, panel) in panels.iter().enumerate() {
        draw_panel(&mut s, panel, PANEL_WIDTH * index as f64, unit);
    }
    for (index, (label, color, bold, dashed)) in labels.iter().enumerate() {
        let column_width = width / LEGEND_COLUMNS as f64;
        let x = 24.0 + column_width * (index % LEGEND_COLUMNS) as f64;
        let y = legend_top + LEGEND_ROW * (index / LEGEND_COLUMNS) as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" \
             stroke-width=\"{}\"{}/>",
            x + 22.0,
            if *bold { 3.5 } else { 2.0 },
            if *dashed {
                " stroke-dasharray=\"5 3\""
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{color}\"/>",
            x + 11.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\"{}>{}</text>",
            x + 28.0,
            y + 4.0,
            if *bold { " font-weight=\"bold\"" } else { "" },
            escape(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn draw_panel(s: &mut String, panel: &Panel, left: f64, unit: &str) {
    let x0 = left + PLOT_LEFT;
    let plot_width = PANEL_WIDTH - PLOT_LEFT - PLOT_RIGHT;
    let y0 = PLOT_TOP;
    let points = || panel.series.iter().flat_map(|series| &series.points);
    let (ylo, yhi) = decades(points().map(|p| p.1));
    let mut ns: Vec<f64> = points().map(|p| p.0).filter(|n| *n > 0.0).collect();
    ns.sort_by(|a, b| a.total_cmp(b));
    ns.dedup();
    let (nlo, nhi) = match (ns.first(), ns.last()) {
        (Some(&lo), Some(&hi)) if hi > lo => (lo, hi),
        (Some(&lo), _) => (lo / 2.0, lo * 2.0),
        _ => (1.0, 10.0),
    };
    // A margin on both sides of the first and last N, a tenth of the span each.
    let pad = (nhi / nlo).log10() * 0.1;
    let (xlo, xhi) = (nlo.log10() - pad, nhi.log10() + pad);
    let x_of = |n: f64| x0 + (n.log10() - xlo) / (xhi - xlo) * plot_width;
    let y_of = |v: f64| y0 + (yhi as f64 - v.log10()) / (yhi - ylo) as f64 * PLOT_HEIGHT;

    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" font-weight=\"bold\" text-anchor=\"middle\">{}</text>",
        x0 + plot_width / 2.0,
        y0 - 14.0,
        escape(&panel.title)
    );
    // Grid: every decade labelled, 2..9 of each decade as faint lines.
    for exponent in ylo..=yhi {
        let base = 10f64.powi(exponent);
        let y = y_of(base);
        let _ = writeln!(
            s,
            "<line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#cccccc\"/>",
            x0 + plot_width
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            x0 - 6.0,
            y + 4.0,
            tick_label(exponent)
        );
        if exponent < yhi {
            for k in 2..10 {
                let y = y_of(base * k as f64);
                let _ = writeln!(
                    s,
                    "<line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eeeeee\"/>",
                    x0 + plot_width
                );
            }
        }
    }
    for &n in &ns {
        let x = x_of(n);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eeeeee\"/>",
            y0 + PLOT_HEIGHT
        );
        let _ = writeln!(
            s,
            "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">N={n}</text>",
            y0 + PLOT_HEIGHT + 16.0
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{plot_width:.1}\" height=\"{PLOT_HEIGHT:.1}\" \
         fill=\"none\" stroke=\"#888888\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">children (log scale)</text>",
        x0 + plot_width / 2.0,
        y0 + PLOT_HEIGHT + 32.0
    );
    let _ = writeln!(
        s,
        "<text transform=\"translate({:.1} {:.1}) rotate(-90)\" font-size=\"11\" text-anchor=\"middle\">{} (log scale)</text>",
        left + 16.0,
        y0 + PLOT_HEIGHT / 2.0,
        escape(unit)
    );
    // The subject last, so that it is drawn over the others.
    let mut order: Vec<&Series> = panel.series.iter().filter(|s| !s.bold).collect();
    order.extend(panel.series.iter().filter(|s| s.bold));
    for series in order {
        let points: Vec<(f64, f64, f64, f64)> = series
            .points
            .iter()
            .filter(|(n, v)| *n > 0.0 && *v > 0.0 && v.is_finite())
            .map(|&(n, v)| (n, v, x_of(n), y_of(v)))
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|(_, _, x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"{}>\
             <title>{}</title></polyline>",
            path.join(" "),
            series.color,
            if series.bold { 3.5 } else { 2.0 },
            if series.dashed {
                " stroke-dasharray=\"5 3\""
            } else {
                ""
            },
            escape(&series.label)
        );
        for &(n, v, x, y) in &points {
            let _ = writeln!(
                s,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{}\" fill=\"{}\"><title>{}, N={n}: {v} {}</title></circle>",
                if series.bold { 4 } else { 3 },
                series.color,
                escape(&series.label),
                escape(unit)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades_hold_every_value() {
        assert_eq!(decades([0.82, 1012.0].into_iter()), (-1, 4));
        assert_eq!(decades([16.1, 3904.0].into_iter()), (1, 4));
        assert_eq!(decades([100.0].into_iter()), (2, 3));
        assert_eq!(decades(std::iter::empty()), (0, 1));
    }

    #[test]
    fn a_chart_has_a_line_per_series_and_escapes_text() {
        let panel = Panel {
            title: "a < b".into(),
            series: vec![
                Series {
                    label: "one".into(),
                    color: "#000000",
                    bold: true,
                    dashed: false,
                    points: vec![(50.0, 1.0), (200.0, 2.0)],
                },
                Series {
                    label: "two & more".into(),
                    color: "#ff0000",
                    bold: false,
                    dashed: true,
                    points: vec![(50.0, 10.0), (200.0, 0.0)],
                },
            ],
        };
        let svg = svg("t", "s", "ms", &[panel]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        // The value 0 has no place on a log axis: three points are drawn, not four.
        assert_eq!(svg.matches("<circle").count(), 3 + 2);
        assert!(svg.contains("a &lt; b") && svg.contains("two &amp; more"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
