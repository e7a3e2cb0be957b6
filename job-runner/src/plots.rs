//! The two figures of a run, as PNG: `scree.png` (how much variance each component
//! explains) and `pc_scatter.png` (the photos on the first two components).
//!
//! Drawn with plotters into memory and encoded with `image`; the font is compiled in, so
//! that the distroless runner image, which has no font at all, draws the same pictures.

use std::collections::HashMap;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// Pixel size of `scree.png`.
pub const SCREE_SIZE: (u32, u32) = (1000, 560);
/// Pixel size of `pc_scatter.png`.
pub const SCATTER_SIZE: (u32, u32) = (1000, 720);
/// Photos drawn in `pc_scatter.png` at most: more only hide each other.
pub const SCATTER_POINTS: usize = 5_000;
/// Labels the scatter gives a colour and a legend entry; the others are grey.
pub const SCATTER_LEGEND: usize = 12;

const FONT: &str = "sans-serif";
static FONT_DATA: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

#[derive(Debug, thiserror::Error)]
#[error("cannot draw {figure}: {detail}")]
pub struct PlotError {
    figure: &'static str,
    detail: String,
}

/// One photo of the scatter's sample. `key` orders the sample: the photos with the
/// smallest keys are drawn, whichever shard they came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScatterPoint {
    pub key: u64,
    pub label: String,
    pub pc1: f32,
    /// 0 when the model kept a single component.
    pub pc2: f32,
}

/// Where a photo falls in the scatter's sample: the first 8 bytes of its path's sha256,
/// so that the sample depends on the photos only, not on shards or retries.
pub fn sample_key(path: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(path.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
}

/// Whether a photo is a candidate for the sample when `images` photos were fitted: each
/// shard keeps the keys under twice [`SCATTER_POINTS`]' share of the key space, so that
/// the candidates of all shards (about 10,000; fewer than 5,000 is 50 standard deviations
/// away) hold the [`SCATTER_POINTS`] smallest keys, which [`choose_sample`] keeps.
pub fn sample_candidate(key: u64, images: u64) -> bool {
    let share = (2 * SCATTER_POINTS) as f64 / images.max(1) as f64;
    share >= 1.0 || (key as f64) < share * 2f64.powi(64)
}

/// The sample drawn: the [`SCATTER_POINTS`] candidates with the smallest keys.
pub fn choose_sample(mut candidates: Vec<ScatterPoint>) -> Vec<ScatterPoint> {
    candidates.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| a.label.cmp(&b.label)));
    candidates.truncate(SCATTER_POINTS);
    candidates
}

/// `scree.png`: each component's share of the variance (log scale) and the cumulative
/// share, with the kept `k` and, when `k` was chosen by it, the variance threshold.
/// `ratios` holds every component's share, largest first.
pub fn scree_png(ratios: &[f64], k: usize, threshold: Option<f64>) -> Result<Vec<u8>, PlotError> {
    draw_png("scree.png", SCREE_SIZE, |area| {
        draw_scree(area, ratios, k, threshold)
    })
}

/// `pc_scatter.png`: PC1 against PC2, a colour for each of the most frequent labels.
pub fn scatter_png(points: &[ScatterPoint], k: usize) -> Result<Vec<u8>, PlotError> {
    draw_png("pc_scatter.png", SCATTER_SIZE, |area| {
        draw_scatter(area, points, k)
    })
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error + 'static>>;

fn draw_png(
    figure: &'static str,
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> DrawResult,
) -> Result<Vec<u8>, PlotError> {
    encode_figure(size, draw).map_err(|detail| PlotError { figure, detail })
}

fn encode_figure(
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> DrawResult,
) -> Result<Vec<u8>, String> {
    register_font();
    let mut pixels = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        draw(&area).map_err(|err| err.to_string())?;
        area.present().map_err(|err| err.to_string())?;
    }
    let image = image::RgbImage::from_raw(size.0, size.1, pixels).expect("buffer fits the size");
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|err| err.to_string())?;
    Ok(png)
}

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, FONT_DATA).is_err() {
            panic!("the embedded DejaVu Sans font does not parse");
        }
    });
}

/// Components shown: twice the kept ones, at least 20, and only those with some variance
/// (a log axis cannot show zero).
fn shown_components(ratios: &[f64], k: usize) -> usize {
    let positive = ratios.iter().take_while(|ratio| **ratio > 0.0).count();
    positive.min((2 * k).max(20)).max(1)
}

fn draw_scree(area: &Area, ratios: &[f64], k: usize, threshold: Option<f64>) -> DrawResult {
    area.fill(&WHITE)?;
    let shown = shown_components(ratios, k);
    let ratios = &ratios[..shown.min(ratios.len())];
    let largest = ratios
        .first()
        .copied()
        .unwrap_or(1.0)
        .max(f64::MIN_POSITIVE);
    let smallest = ratios
        .iter()
        .copied()
        .filter(|ratio| *ratio > 0.0)
        .fold(largest, f64::min);
    let x_range = 0.5..shown as f64 + 0.5;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Explained variance per principal component",
            (FONT, 24).into_font(),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .right_y_label_area_size(72)
        .build_cartesian_2d(x_range.clone(), (smallest / 2.0..largest * 2.0).log_scale())?
        .set_secondary_coord(x_range, 0.0..1.0);
    chart
        .configure_mesh()
        .x_desc("component")
        .y_desc("share of variance (log)")
        .x_label_formatter(&|value| format!("{value:.0}"))
        .light_line_style(RGBColor(238, 238, 238))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .y_label_formatter(&|value| format!("{value:.0e}"))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("cumulative share")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .y_label_formatter(&|value| format!("{value:.1}"))
        .draw()?;

    let each = RGBColor(31, 119, 180);
    let cumulative_colour = RGBColor(255, 127, 14);
    let marker = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(
            ratios.iter().enumerate().map(|(i, r)| (i as f64 + 1.0, *r)),
            each.stroke_width(2),
        ))?
        .label("each component")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], each.stroke_width(2)));
    let mut running = 0.0;
    let cumulative: Vec<(f64, f64)> = ratios
        .iter()
        .enumerate()
        .map(|(i, ratio)| {
            running += ratio;
            (i as f64 + 1.0, running)
        })
        .collect();
    chart
        .draw_secondary_series(LineSeries::new(
            cumulative,
            cumulative_colour.stroke_width(2),
        ))?
        .label("cumulative (right axis)")
        .legend(move |(x, y)| {
            PathElement::new([(x, y), (x + 20, y)], cumulative_colour.stroke_width(2))
        });
    chart
        .draw_secondary_series(DashedLineSeries::new(
            [(k as f64, 0.0), (k as f64, 1.0)],
            8,
            6,
            marker.stroke_width(2),
        ))?
        .label(format!("k = {k} kept"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], marker.stroke_width(2)));
    if let Some(threshold) = threshold {
        let grey = RGBColor(90, 90, 90);
        chart
            .draw_secondary_series(DashedLineSeries::new(
                [(0.5, threshold), (shown as f64 + 0.5, threshold)],
                4,
                4,
                grey.stroke_width(1),
            ))?
            .label(format!("threshold {:.1}%", threshold * 100.0))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The sample's labels by frequency (ties by name), at most [`SCATTER_LEGEND`].
fn frequent_labels(points: &[ScatterPoint]) -> Vec<(&str, usize)> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for point in points {
        *counts.entry(point.label.as_str()).or_default() += 1;
    }
    let mut counts: Vec<(&str, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts.truncate(SCATTER_LEGEND);
    counts
}

/// Distinct colours for the legend's labels (Tableau 10, then two more).
const PALETTE: [RGBColor; SCATTER_LEGEND] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(31, 31, 31),
    RGBColor(0, 0, 140),
    RGBColor(140, 0, 0),
];

fn bounds(values: impl Iterator<Item = f32>) -> std::ops::Range<f64> {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
        (low.min(v as f64), high.max(v as f64))
    });
    if !low.is_finite() || !high.is_finite() {
        return -1.0..1.0;
    }
    let pad = ((high - low) * 0.05).max(1e-6);
    low - pad..high + pad
}

fn draw_scatter(area: &Area, points: &[ScatterPoint], k: usize) -> DrawResult {
    area.fill(&WHITE)?;
    let (plot, legend) = area.split_horizontally(SCATTER_SIZE.0 - 250);
    let frequent = frequent_labels(points);
    let colour_of: HashMap<&str, RGBColor> = frequent
        .iter()
        .zip(PALETTE)
        .map(|((label, _), colour)| (*label, colour))
        .collect();
    let y_desc = if k >= 2 { "PC2" } else { "PC2 (none: k = 1)" };
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            format!(
                "Photos on the first two components ({} shown)",
                points.len()
            ),
            (FONT, 24).into_font(),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            bounds(points.iter().map(|p| p.pc1)),
            bounds(points.iter().map(|p| p.pc2)),
        )?;
    chart
        .configure_mesh()
        .x_desc("PC1")
        .y_desc(y_desc)
        .light_line_style(RGBColor(238, 238, 238))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    let grey = RGBColor(190, 190, 190);
    // The grey ones first, so that the coloured labels are drawn over them.
    chart.draw_series(
        points
            .iter()
            .filter(|p| !colour_of.contains_key(p.label.as_str()))
            .map(|p| Circle::new((p.pc1 as f64, p.pc2 as f64), 2, grey.filled())),
    )?;
    chart.draw_series(points.iter().filter_map(|p| {
        let colour = colour_of.get(p.label.as_str())?;
        Some(Circle::new(
            (p.pc1 as f64, p.pc2 as f64),
            3,
            colour.mix(0.8).filled(),
        ))
    }))?;
    draw_legend(&legend, &frequent, points.len(), grey)
}

fn draw_legend(
    area: &Area,
    frequent: &[(&str, usize)],
    total: usize,
    grey: RGBColor,
) -> DrawResult {
    let row = 24;
    let mut y = 70;
    area.draw(&Text::new(
        "most frequent labels",
        (10, y - 30),
        (FONT, 15).into_font(),
    ))?;
    for ((label, count), colour) in frequent.iter().zip(PALETTE) {
        area.draw(&Circle::new((18, y), 5, colour.filled()))?;
        area.draw(&Text::new(
            format!("{} ({count})", shorten(label, 22)),
            (30, y - 8),
            (FONT, 14).into_font(),
        ))?;
        y += row;
    }
    let others = total - frequent.iter().map(|(_, count)| count).sum::<usize>();
    if others > 0 {
        area.draw(&Circle::new((18, y), 5, grey.filled()))?;
        area.draw(&Text::new(
            format!("other labels ({others})"),
            (30, y - 8),
            (FONT, 14).into_font(),
        ))?;
    }
    Ok(())
}

fn shorten(label: &str, chars: usize) -> String {
    if label.chars().count() <= chars {
        return label.to_string();
    }
    let mut short: String = label.chars().take(chars - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(png: &[u8]) -> image::RgbImage {
        image::load_from_memory_with_format(png, image::ImageFormat::Png)
            .expect("a valid PNG")
            .to_rgb8()
    }

    #[test]
    fn scree_is_a_png_of_its_size_with_something_drawn() {
        let ratios: Vec<f64> = (1..=300).map(|i| 1.0 / (i as f64).powi(2)).collect();
        let total: f64 = ratios.iter().sum();
        let ratios: Vec<f64> = ratios.iter().map(|r| r / total).collect();
        let image = decoded(&scree_png(&ratios, 40, Some(0.99)).unwrap());
        assert_eq!(image.dimensions(), SCREE_SIZE);
        let coloured = image.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(coloured > 5_000, "only {coloured} pixels drawn");
    }

    #[test]
    fn scree_survives_a_spectrum_with_zeros_and_a_single_component() {
        let png = scree_png(&[1.0, 0.0, 0.0], 1, None).unwrap();
        assert_eq!(decoded(&png).dimensions(), SCREE_SIZE);
    }

    #[test]
    fn scatter_colours_the_most_frequent_labels_and_greys_the_rest() {
        let mut points = Vec::new();
        for label in 0..20 {
            for i in 0..(40 - label) {
                points.push(ScatterPoint {
                    key: points.len() as u64,
                    label: format!("Fruit {label}"),
                    pc1: (label * 3 + i % 5) as f32,
                    pc2: (i as f32).sin() * label as f32,
                });
            }
        }
        let frequent = frequent_labels(&points);
        assert_eq!(frequent.len(), SCATTER_LEGEND);
        assert_eq!(frequent[0], ("Fruit 0", 40));
        let image = decoded(&scatter_png(&points, 2).unwrap());
        assert_eq!(image.dimensions(), SCATTER_SIZE);
        // Only the plot, not the legend: its points are drawn at 80% over white.
        let plot_has = |colour: RGBColor, alpha: f64| {
            let blend = |c: u8| c as f64 * alpha + 255.0 * (1.0 - alpha);
            let expected = [blend(colour.0), blend(colour.1), blend(colour.2)];
            image.enumerate_pixels().any(|(x, _, p)| {
                x < SCATTER_SIZE.0 - 250
                    && p.0
                        .iter()
                        .zip(expected)
                        .all(|(a, b)| (*a as f64 - b).abs() <= 2.0)
            })
        };
        assert!(plot_has(RGBColor(190, 190, 190), 1.0), "no grey point");
        assert!(
            plot_has(PALETTE[0], 0.8),
            "no point in the first label's colour"
        );
    }

    #[test]
    fn the_sample_is_the_smallest_keys_of_all_shards_whatever_the_split() {
        let images = 40_000u64;
        let paths: Vec<String> = (0..images)
            .map(|i| format!("Apple {}/{i}.jpg", i % 7))
            .collect();
        let candidates_of = |paths: &[String]| -> Vec<ScatterPoint> {
            paths
                .iter()
                .map(|path| (sample_key(path), path))
                .filter(|(key, _)| sample_candidate(*key, images))
                .map(|(key, path)| ScatterPoint {
                    key,
                    label: path[..7].to_string(),
                    pc1: 0.0,
                    pc2: 0.0,
                })
                .collect()
        };
        let whole = choose_sample(candidates_of(&paths));
        let split: Vec<ScatterPoint> = paths.chunks(3_000).flat_map(candidates_of).collect();
        assert!(split.len() > SCATTER_POINTS && split.len() < 3 * SCATTER_POINTS);
        let split = choose_sample(split);
        assert_eq!(whole, split);
        assert_eq!(whole.len(), SCATTER_POINTS);
        let mut all_keys: Vec<u64> = paths.iter().map(|p| sample_key(p)).collect();
        all_keys.sort();
        assert_eq!(whole.last().unwrap().key, all_keys[SCATTER_POINTS - 1]);
    }

    #[test]
    fn a_small_run_is_sampled_whole() {
        assert!(sample_candidate(u64::MAX, 9_000));
        assert!(!sample_candidate(u64::MAX, 20_000));
    }

    #[test]
    fn scatter_of_nothing_is_still_a_picture() {
        let png = scatter_png(&[], 1).unwrap();
        assert_eq!(decoded(&png).dimensions(), SCATTER_SIZE);
    }
}
