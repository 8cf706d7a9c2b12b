//! Plain SVG line charts for the scaling benches (`docs/benchmarks/*.svg`): side-by-side
//! panels over one x axis, nothing to install to draw them.

// Each bench includes this module and draws with part of it.
#![allow(dead_code)]

use std::fmt::Write as _;

const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 240.0;
const MARGIN: f64 = 48.0;
const COLOURS: [&str; 4] = ["#1f6fb2", "#d1495b", "#2a9d8f", "#8a5cc2"];

/// How the x values are spaced.
#[derive(Clone, Copy)]
pub enum Axis {
    /// Decades apart (K = 10, 100, 1,000).
    Log10,
    /// Evenly (1 core, 2 cores).
    Linear,
}

/// One chart: its lines share the y scale, which starts at zero.
pub struct Panel<'a> {
    pub title: &'a str,
    pub series: Vec<Series<'a>>,
    /// A reference range drawn behind the lines, e.g. what another tool reports.
    pub band: Option<Band<'a>>,
    /// Decimals of the value labels.
    pub decimals: usize,
}

pub struct Series<'a> {
    /// Shown in a legend when a panel has more than one line.
    pub label: &'a str,
    pub points: Vec<(f64, f64)>,
}

pub struct Band<'a> {
    pub low: f64,
    pub high: f64,
    pub label: &'a str,
}

/// The panels side by side; every panel's x axis is labelled `{x_name}={x}` at `ticks`.
pub fn panels(x_name: &str, ticks: &[f64], axis: Axis, panels: &[Panel<'_>]) -> String {
    let (low, high) = ticks.iter().fold((f64::MAX, f64::MIN), |(low, high), &t| {
        (low.min(t), high.max(t))
    });
    let scale = |v: f64| match axis {
        Axis::Log10 => v.log10(),
        Axis::Linear => v,
    };
    let span = (scale(high) - scale(low)).max(1e-9);
    let x = |v: f64| MARGIN + (scale(v) - scale(low)) / span * (WIDTH - 2.0 * MARGIN);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"11\">\n",
        panels.len() as f64 * WIDTH
    );
    for (index, panel) in panels.iter().enumerate() {
        let top = panel.band.as_ref().map_or(0.0, |band| band.high);
        let max = panel
            .series
            .iter()
            .flat_map(|series| series.points.iter().map(|p| p.1))
            .fold(top, f64::max)
            .max(1e-9)
            * 1.15;
        let y = |v: f64| HEIGHT - MARGIN - v / max * (HEIGHT - 2.0 * MARGIN);
        let decimals = panel.decimals;
        writeln!(
            svg,
            "<g transform=\"translate({},0)\">",
            index as f64 * WIDTH
        )
        .unwrap();
        writeln!(
            svg,
            "<text x=\"{MARGIN}\" y=\"20\" font-size=\"13\">{}</text>",
            panel.title
        )
        .unwrap();
        writeln!(
            svg,
            "<line x1=\"{MARGIN}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#444\"/><line x1=\"{MARGIN}\" y1=\"{MARGIN}\" x2=\"{MARGIN}\" y2=\"{0}\" stroke=\"#444\"/>",
            HEIGHT - MARGIN,
            WIDTH - MARGIN
        )
        .unwrap();
        for &tick in ticks {
            writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_name}={tick}</text>",
                x(tick),
                HEIGHT - MARGIN + 16.0
            )
            .unwrap();
        }
        for tick in [0.0, max / 2.0, max / 1.15] {
            writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{tick:.decimals$}</text>",
                MARGIN - 4.0,
                y(tick) + 4.0
            )
            .unwrap();
        }
        if let Some(band) = &panel.band {
            writeln!(
                svg,
                "<rect x=\"{MARGIN}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#f4c27a\" opacity=\"0.5\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                y(band.high),
                WIDTH - 2.0 * MARGIN,
                y(band.low) - y(band.high),
                WIDTH - MARGIN - 4.0,
                y(band.high) - 4.0,
                band.label
            )
            .unwrap();
        }
        for (number, series) in panel.series.iter().enumerate() {
            let colour = COLOURS[number % COLOURS.len()];
            let line: Vec<String> = series
                .points
                .iter()
                .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
                .collect();
            writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                line.join(" ")
            )
            .unwrap();
            for &(px, py) in &series.points {
                writeln!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\">{py:.decimals$}</text>",
                    x(px),
                    y(py),
                    x(px) + 5.0,
                    y(py) - 6.0
                )
                .unwrap();
            }
            if panel.series.len() > 1 {
                let legend_y = 36.0 + 14.0 * number as f64;
                writeln!(
                    svg,
                    "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"3\" fill=\"{colour}\"/><text x=\"{}\" y=\"{legend_y}\">{}</text>",
                    MARGIN + 8.0,
                    legend_y - 4.0,
                    MARGIN + 22.0,
                    series.label
                )
                .unwrap();
            }
        }
        svg.push_str("</g>\n");
    }
    svg.push_str("</svg>\n");
    svg
}
