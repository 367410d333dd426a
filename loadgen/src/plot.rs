//! The bench plot: delivered rate (slowest target) against offered rate, with the ideal diagonal and
//! each point's loss percentage, as SVG (no font files needed).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::stats::BenchRow;

/// Writes the plot of `rows` to `path`.
pub fn delivered_vs_offered(path: &Path, rows: &[BenchRow], fanout: usize) -> Result<()> {
    let points: Vec<(f64, f64, f64)> = rows
        .iter()
        .map(|r| {
            let secs = r.sent as f64 / r.sent_rate.max(1e-9);
            let worst = r.delivered.iter().copied().min().unwrap_or(0) as f64 / secs.max(1e-9);
            let loss = r.loss_pct.iter().copied().fold(0.0, f64::max);
            (r.sent_rate / 1000.0, worst / 1000.0, loss)
        })
        .collect();
    let top = points.iter().map(|p| p.0.max(p.1)).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("delivered vs offered, fan-out {fanout} (label: worst target loss %)"),
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..top, 0.0..top)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("offered (sent) rate, k datagrams/s")
        .y_desc("delivered rate, slowest target, k datagrams/s")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (top, top)], BLACK.mix(0.3)))
        .map_err(|e| anyhow!("{e}"))?
        .label("lossless");
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.0, p.1)),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| anyhow!("{e}"))?
        .label("delivered");
    chart
        .draw_series(points.iter().map(|&(x, y, loss)| {
            EmptyElement::at((x, y))
                + Circle::new((0, 0), 4, BLUE.filled())
                + Text::new(format!("{loss:.2}%"), (6, -16), ("sans-serif", 14))
        }))
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
