//! `--plot PATH`: perplexity against epoch, as PNG or SVG by the file's
//! extension. The font is compiled in (DejaVu Sans through plotters'
//! `ab_glyph` backend), so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use super::error::TrainError;
use super::metrics::EpochRecord;

/// The image formats `--plot` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotFormat {
    /// `.png`
    Png,
    /// `.svg`
    Svg,
}

impl PlotFormat {
    /// The format of `path` by its extension (case-insensitive).
    pub fn of(path: &Path) -> Result<Self, TrainError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("png") => Ok(PlotFormat::Png),
            Some("svg") => Ok(PlotFormat::Svg),
            _ => Err(TrainError::Config(format!(
                "--plot {}: the file name must end in .png or .svg",
                path.display()
            ))),
        }
    }
}

const SIZE: (u32, u32) = (800, 500);

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the `dejavu` crate;
        // should registration fail anyway, text falls back to nothing drawn
        // and the error surfaces from the drawing call.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Draws perplexity (log scale) against epoch for `history` into `path`.
pub fn plot_perplexity(
    path: &Path,
    history: &[EpochRecord],
    title: &str,
) -> Result<(), TrainError> {
    let format = PlotFormat::of(path)?;
    register_font();
    let result = match format {
        PlotFormat::Png => draw(
            BitMapBackend::new(path, SIZE).into_drawing_area(),
            history,
            title,
        ),
        PlotFormat::Svg => draw(
            SVGBackend::new(path, SIZE).into_drawing_area(),
            history,
            title,
        ),
    };
    result.map_err(|e| TrainError::Plot(format!("{}: {e}", path.display())))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    history: &[EpochRecord],
    title: &str,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let points: Vec<(f64, f64)> = history
        .iter()
        .filter(|r| r.perplexity.is_finite() && r.perplexity > 0.0)
        .map(|r| (r.epoch as f64, r.perplexity))
        .collect();
    let last_epoch = history.iter().map(|r| r.epoch).max().unwrap_or(1).max(1) as f64;
    // Whole decades, so that the log axis has labelled ticks at 1-2-5 steps.
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), &(_, p)| {
            (lo.min(p), hi.max(p))
        });
    let (lo, hi) = if points.is_empty() {
        (1.0, 10.0)
    } else {
        let lo = 10f64.powf(lo.log10().floor());
        (lo, 10f64.powf(hi.log10().ceil()).max(lo * 10.0))
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..last_epoch, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("perplexity")
        .y_labels(20)
        .y_label_formatter(&|v| format!("{v}"))
        // Integer labels only: no more labels than whole epochs, so a short
        // run does not print the same rounded epoch several times.
        .x_labels((last_epoch as usize).clamp(1, 10) + 1)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?;
    root.present()?;
    Ok(())
}
