//! A small SVG line plot for benchmark reports: y against x (x on a log scale), one line per
//! series, with axes, ticks and a legend. No dependency: the figures are few.

use std::fmt::Write;

/// One line of the plot: its name and (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A "nice" step for about five ticks up to `max`.
fn step(max: f64) -> f64 {
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(magnitude * 10.0)
}

/// The plot as an SVG document.
pub fn svg(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let (width, height) = (720.0, 440.0);
    let (left, right, top, bottom) = (80.0, 230.0, 50.0, 60.0);
    let xs: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    let (x_min, x_max) = (xs.iter().copied().fold(f64::MAX, f64::min), xs.iter().copied().fold(f64::MIN, f64::max));
    let y_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0, f64::max);
    let y_step = step(y_max);
    let y_top = (y_max / y_step).ceil() * y_step;
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let span = (x_max.ln() - x_min.ln()).max(f64::EPSILON);
    let px = |x: f64| left + (x.ln() - x_min.ln()) / span * plot_w;
    let py = |y: f64| top + plot_h - y / y_top * plot_h;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{width}" height="{height}" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{left}" y="28" font-size="15">{}</text>"#, escape(title));
    let mut y = 0.0;
    while y <= y_top + f64::EPSILON {
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            py(y),
            left + plot_w,
            left - 6.0,
            py(y) + 4.0,
            y
        );
        y += y_step;
    }
    let mut ticks: Vec<f64> = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for x in ticks {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{1:.1}" stroke="#eee"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{x}</text>"##,
            px(x),
            top + plot_h,
            top + plot_h + 18.0
        );
    }
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{0:.1}" stroke="#333"/>"##,
        top + plot_h,
        left + plot_w
    );
    let _ = writeln!(
        out,
        r#"<text x="{0:.1}" y="{1:.1}" text-anchor="middle">{2}</text>"#,
        left + plot_w / 2.0,
        height - 18.0,
        escape(x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(22 {0:.1}) rotate(-90)" text-anchor="middle">{1}</text>"#,
        top + plot_h / 2.0,
        escape(y_label)
    );
    for (i, line) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = line.points.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let _ =
            writeln!(out, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#, points.join(" "));
        for (x, y) in &line.points {
            let _ = writeln!(out, r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"#, px(*x), py(*y));
        }
        let ly = top + 10.0 + i as f64 * 22.0;
        let lx = left + plot_w + 20.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{0}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{1}" y="{2}">{3}</text>"#,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            escape(line.name)
        );
    }
    out.push_str("</svg>\n");
    out
}
