//! Two plain SVG charts: forwarded rate per path, and the latency CDF of
//! each path at half its highest rate. Hand-written: a charting crate needs
//! a font stack to lay out text, and these charts need bars, lines and
//! labels only.

use std::fmt::Write as _;

use crate::report::Report;

const COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];
const LEFT: f64 = 270.0;
const WIDTH: f64 = 900.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(out: &mut String, height: f64, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" font-size="15" text-anchor="middle">{}</text>
"#,
        WIDTH / 2.0,
        escape(title)
    );
}

/// Horizontal bars: each path's forwarded Mpps, one bar per frame size.
pub fn throughput(report: &Report) -> String {
    let sizes = &report.settings.frame_sizes;
    let mut paths: Vec<_> = Vec::new();
    for e in &report.results {
        if !paths.contains(&e.path) {
            paths.push(e.path);
        }
    }
    let bar = 14.0;
    let row = bar * sizes.len() as f64 + 10.0;
    let height = 70.0 + row * paths.len() as f64 + 30.0;
    let max = report
        .results
        .iter()
        .map(|e| e.throughput.lossless_pps)
        .fold(1.0, f64::max)
        / 1e6;
    let scale = (WIDTH - LEFT - 80.0) / max;
    let mut out = String::new();
    header(
        &mut out,
        height,
        "Highest rate forwarded with at most 0.1 % lost (Mpps)",
    );
    for (i, path) in paths.iter().enumerate() {
        let y0 = 40.0 + row * i as f64;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y0 + row / 2.0,
            escape(path.name())
        );
        for (j, size) in sizes.iter().enumerate() {
            let Some(e) = report.entry(*path, *size) else {
                continue;
            };
            let mpps = e.throughput.lossless_pps / 1e6;
            let y = y0 + bar * j as f64;
            let _ = writeln!(
                out,
                r#"<rect x="{LEFT}" y="{y}" width="{:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{}">{mpps:.3}</text>"#,
                mpps * scale,
                bar - 2.0,
                COLOURS[j % COLOURS.len()],
                LEFT + mpps * scale + 4.0,
                y + bar - 4.0
            );
        }
    }
    let legend_y = height - 20.0;
    for (j, size) in sizes.iter().enumerate() {
        let x = LEFT + 120.0 * j as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{legend_y}">{size}-byte frames</text>"#,
            legend_y - 10.0,
            COLOURS[j % COLOURS.len()],
            x + 16.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The latency CDF of every path offered half its highest rate, log time.
pub fn latency_cdf(report: &Report, size: usize) -> String {
    let series: Vec<_> = report
        .results
        .iter()
        .filter(|e| e.frame_bytes == size)
        .filter_map(|e| {
            Some((
                e.path.name(),
                e.latency.iter().find(|l| l.load_percent == 50)?,
            ))
        })
        .filter(|(_, l)| !l.cdf.is_empty())
        .collect();
    let (height, top, bottom) = (480.0, 40.0, 400.0);
    let (left, right) = (70.0, WIDTH - 230.0);
    let lo = series
        .iter()
        .flat_map(|(_, l)| l.cdf.first())
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min)
        .max(0.1);
    let hi = series
        .iter()
        .flat_map(|(_, l)| l.cdf.last())
        .map(|p| p.0)
        .fold(1.0, f64::max);
    let (llo, lhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let x = |us: f64| left + (us.max(lo).log10() - llo) / (lhi - llo) * (right - left);
    let y = |share: f64| bottom - share * (bottom - top);
    let mut out = String::new();
    header(
        &mut out,
        height,
        &format!("Latency CDF at 50 % of each path's highest rate, {size}-byte frames"),
    );
    let _ = writeln!(
        out,
        r#"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>"#
    );
    let mut decade = llo;
    while decade <= lhi {
        let us = 10f64.powf(decade);
        let _ = writeln!(
            out,
            r#"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{bottom}" stroke="lightgrey"/><text x="{0:.1}" y="{1}" text-anchor="middle">{us} µs</text>"#,
            x(us),
            bottom + 16.0
        );
        decade += 1.0;
    }
    for share in [0.0, 0.5, 0.9, 0.99, 1.0] {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{share}</text>"#,
            left - 6.0,
            y(share) + 4.0
        );
    }
    for (i, (name, l)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = l
            .cdf
            .iter()
            .map(|(us, share)| format!("{:.1},{:.1}", x(*us), y(*share)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><rect x="{}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            points.join(" "),
            right + 10.0,
            top + 18.0 * i as f64,
            right + 26.0,
            top + 18.0 * i as f64 + 11.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}
