//! The latency plot: latency (ms, linear) against percentile on the usual
//! HDR "nines" axis (0%, 90%, 99%, 99.9%, ...), one line per series, as a PNG.
//!
//! plotters draws the lines into an RGB buffer with no font feature enabled
//! (its font backends need fontconfig/freetype or a font file), so every
//! piece of text — title, legend, tick labels — is drawn here from the
//! public-domain 8×8 ASCII glyphs of `font8x8`, and `png` encodes the buffer.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use font8x8::legacy::BASIC_LEGACY;
use plotters::prelude::*;
use thiserror::Error;

use crate::latency::Latencies;

pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 540;
/// Text is the 8×8 glyphs scaled up by this.
const TEXT_SCALE: i32 = 2;
const GLYPH: i32 = 8 * TEXT_SCALE;
/// Plot area margins in pixels: room for the title, legend and labels.
const LEFT: i32 = 110;
const RIGHT: i32 = 60;
const TOP: i32 = 50;
const BOTTOM: i32 = 60;
/// Most nines shown: 99.999%.
const MAX_NINES: f64 = 5.0;
const SAMPLES: usize = 400;
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
const GRID: RGBColor = RGBColor(220, 220, 220);
const INK: RGBColor = RGBColor(0, 0, 0);

#[derive(Debug, Error)]
pub enum PlotError {
    #[error("nothing to plot: no latency was recorded")]
    Empty,
    #[error("drawing the plot failed: {0}")]
    Draw(String),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("encoding the PNG failed: {0}")]
    Encode(#[from] png::EncodingError),
}

type PlotResult<T> = Result<T, PlotError>;

fn draw_err<E: std::fmt::Debug>(e: E) -> PlotError {
    PlotError::Draw(format!("{e:?}"))
}

/// Draws `series` (name, latencies) under `title` and writes a PNG to `path`.
///
/// # Errors
/// [`PlotError::Empty`] when no series has a value; I/O and encoding errors.
pub fn write_png(path: &Path, title: &str, series: &[(String, &Latencies)]) -> PlotResult<()> {
    let rgb = render(title, series)?;
    let io = |source| PlotError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::create(path).map_err(io)?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&rgb)?;
    writer.finish()?;
    Ok(())
}

/// One curve: (nines, milliseconds) points.
struct Curve {
    name: String,
    points: Vec<(f64, f64)>,
    p99_ms: f64,
}

/// Renders into an RGB buffer of `WIDTH × HEIGHT`.
///
/// # Errors
/// [`PlotError::Empty`] when no series has a value.
pub fn render(title: &str, series: &[(String, &Latencies)]) -> PlotResult<Vec<u8>> {
    let with_data: Vec<_> = series.iter().filter(|(_, l)| l.count() > 0).collect();
    if with_data.is_empty() {
        return Err(PlotError::Empty);
    }
    // Show as many nines as the largest sample supports (at least 99%).
    let max_count = with_data.iter().map(|(_, l)| l.count()).max().unwrap_or(1);
    let nines = (max_count as f64).log10().floor().clamp(2.0, MAX_NINES);
    let curves: Vec<Curve> = with_data
        .iter()
        .map(|(name, latencies)| Curve {
            name: name.clone(),
            points: (0..=SAMPLES)
                .map(|i| {
                    let x = nines * i as f64 / SAMPLES as f64;
                    let quantile = 1.0 - 10f64.powf(-x);
                    (x, ms(latencies.at_quantile(quantile)))
                })
                .collect(),
            p99_ms: ms(latencies.at_quantile(0.99)),
        })
        .collect();
    let top_ms = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let (y_step, y_max) = nice_axis(top_ms);

    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let area = root.margin(TOP as u32, BOTTOM as u32, LEFT as u32, RIGHT as u32);
        let mut chart = ChartBuilder::on(&area)
            .build_cartesian_2d(0f64..nines, 0f64..y_max)
            .map_err(draw_err)?;

        // Grid and tick labels.
        let mut y = 0.0;
        while y <= y_max + y_step / 2.0 {
            chart
                .draw_series(LineSeries::new([(0.0, y), (nines, y)], GRID))
                .map_err(draw_err)?;
            let (px, py) = chart.backend_coord(&(0.0, y));
            let label = format!("{} ms", decimal(y, y_step));
            text(&root, px - 8 - width(&label), py - GLYPH / 2, &label, INK)?;
            y += y_step;
        }
        for k in 0..=nines as u32 {
            let x = f64::from(k);
            chart
                .draw_series(LineSeries::new([(x, 0.0), (x, y_max)], GRID))
                .map_err(draw_err)?;
            let (px, py) = chart.backend_coord(&(x, 0.0));
            let label = percentile_label(k);
            text(&root, px - width(&label) / 2, py + 8, &label, INK)?;
        }
        // Axes.
        chart
            .draw_series(LineSeries::new(
                [(0.0, y_max), (0.0, 0.0), (nines, 0.0)],
                INK,
            ))
            .map_err(draw_err)?;

        for (curve, color) in curves.iter().zip(PALETTE.iter().cycle()) {
            chart
                .draw_series(LineSeries::new(
                    curve.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(draw_err)?;
        }
        // Legend, top left inside the plot area, on white so that no line
        // crosses its text.
        let labels: Vec<String> = curves
            .iter()
            .map(|c| format!("{}  p99 {:.3} ms", c.name, c.p99_ms))
            .collect();
        let (lx, ly) = (LEFT + 10, TOP + 10);
        let legend_width = labels.iter().map(|l| width(l)).max().unwrap_or(0) + 64;
        let legend_height = labels.len() as i32 * (GLYPH + 8) + 8;
        let corners = [(lx, ly), (lx + legend_width, ly + legend_height)];
        root.draw(&Rectangle::new(corners, WHITE.filled()))
            .map_err(draw_err)?;
        root.draw(&Rectangle::new(corners, GRID))
            .map_err(draw_err)?;
        for (i, (label, color)) in labels.iter().zip(PALETTE.iter().cycle()).enumerate() {
            let y = ly + 8 + i as i32 * (GLYPH + 8);
            root.draw(&Rectangle::new(
                [(lx + 8, y + GLYPH / 2 - 2), (lx + 38, y + GLYPH / 2 + 2)],
                color.filled(),
            ))
            .map_err(draw_err)?;
            text(&root, lx + 48, y, label, INK)?;
        }

        text(&root, LEFT, (TOP - GLYPH) / 2, title, INK)?;
        let caption = "latency by percentile";
        let caption_y = HEIGHT as i32 - BOTTOM / 2;
        text(
            &root,
            LEFT + (WIDTH as i32 - LEFT - RIGHT - width(caption)) / 2,
            caption_y,
            caption,
            INK,
        )?;
        root.present().map_err(draw_err)?;
    }
    Ok(rgb)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// A step of 1, 2 or 5 × 10^k giving about 5 grid lines, and the axis top.
fn nice_axis(top: f64) -> (f64, f64) {
    let top = if top > 0.0 { top } else { 1.0 };
    let raw = top / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (step, (top / step).ceil() * step)
}

/// `value` with as many decimals as `step` needs.
fn decimal(value: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{value:.decimals$}")
}

/// 0 → `0%`, 1 → `90%`, 2 → `99%`, 3 → `99.9%`, ...
fn percentile_label(nines: u32) -> String {
    match nines {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        2 => "99%".to_owned(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

fn width(s: &str) -> i32 {
    s.chars().count() as i32 * GLYPH
}

/// Draws `s` with its top-left corner at (x, y); characters outside ASCII
/// are left blank.
fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x: i32,
    y: i32,
    s: &str,
    color: RGBColor,
) -> PlotResult<()> {
    for (i, c) in s.chars().enumerate() {
        let Some(rows) = u32::from(c)
            .try_into()
            .ok()
            .and_then(|ascii: usize| BASIC_LEGACY.get(ascii))
        else {
            continue;
        };
        let gx = x + i as i32 * GLYPH;
        for (row, bits) in rows.iter().enumerate() {
            for col in 0..8 {
                // Bit 0 is the leftmost pixel.
                if bits & (1 << col) != 0 {
                    let px = gx + col * TEXT_SCALE;
                    let py = y + row as i32 * TEXT_SCALE;
                    area.draw(&Rectangle::new(
                        // One pixel wider than the cell: the thin 8×8
                        // strokes read better slightly bold.
                        [(px, py), (px + TEXT_SCALE, py + TEXT_SCALE - 1)],
                        color.filled(),
                    ))
                    .map_err(draw_err)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(nice_axis(4.3), (1.0, 5.0));
        assert_eq!(nice_axis(0.37), (0.1, 0.4));
        assert_eq!(nice_axis(0.0), (0.2, 1.0));
        let (step, top) = nice_axis(123.0);
        assert_eq!((step, top), (50.0, 150.0));
    }

    #[test]
    fn percentile_labels_count_nines() {
        let labels: Vec<String> = (0..=5).map(percentile_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn rendering_draws_something_and_refuses_nothing() {
        let mut l = Latencies::new();
        for i in 1..=10_000u64 {
            l.record(i * 1_000);
        }
        let rgb = render("test", &[("one".to_owned(), &l)]).unwrap();
        assert_eq!(rgb.len(), (WIDTH * HEIGHT * 3) as usize);
        assert!(rgb.iter().any(|&b| b != 255), "the image is blank");
        assert!(matches!(
            render("empty", &[("none".to_owned(), &Latencies::new())]),
            Err(PlotError::Empty)
        ));
    }
}
