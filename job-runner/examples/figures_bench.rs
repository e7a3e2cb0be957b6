//! What the figures add to `assemble`: drawing `scree.png` (a 1280-component spectrum) and
//! `pc_scatter.png` (the full 5,000-photo sample over 131 labels), against a baseline
//! measured in the same run: formatting 5,000 photos as CSV rows at k = 115 (what
//! `project` does for every 5,000 photos). The ratios say what the figures cost in
//! photos' worth of CSV formatting.
//!
//! cargo run --release --example figures_bench -- 5   (rounds; the median is printed)

use std::time::Instant;

use fruitpipe_runner::output::CsvRows;
use fruitpipe_runner::plots::{self, SCATTER_POINTS, ScatterPoint};

fn median_seconds(rounds: usize, mut work: impl FnMut() -> usize) -> f64 {
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(work());
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(5, |arg| arg.parse().expect("a number of rounds"));
    let k = 115;
    let mut seed = 11u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let raw: Vec<f64> = (1..=1280).map(|i| 1.0 / (i as f64).powf(1.3)).collect();
    let total: f64 = raw.iter().sum();
    let spectrum: Vec<f64> = raw.iter().map(|r| r / total).collect();
    let points: Vec<ScatterPoint> = (0..SCATTER_POINTS)
        .map(|i| ScatterPoint {
            key: i as u64,
            label: format!("Fruit {}", i % 131),
            pc1: (next() * 4.0 - 2.0) as f32,
            pc2: (next() * 4.0 - 2.0) as f32,
        })
        .collect();
    let components: Vec<f64> = (0..SCATTER_POINTS * k).map(|_| next() - 0.5).collect();

    let csv = median_seconds(rounds, || {
        let mut rows = CsvRows::new(k);
        for (i, row) in components.chunks_exact(k).enumerate() {
            rows.write(&format!("s3://fruits/Training/Fruit/{i}.jpg"), "Fruit", row);
        }
        rows.take().len()
    });
    let scree = median_seconds(rounds, || {
        plots::scree_png(&spectrum, k, Some(0.95)).unwrap().len()
    });
    let scatter = median_seconds(rounds, || plots::scatter_png(&points, k).unwrap().len());
    println!("baseline: 5,000 CSV rows at k = {k}: {:.1} ms", csv * 1e3);
    println!(
        "scree.png: {:.1} ms ({:.2}x the baseline)",
        scree * 1e3,
        scree / csv
    );
    println!(
        "pc_scatter.png, {SCATTER_POINTS} points: {:.1} ms ({:.2}x the baseline)",
        scatter * 1e3,
        scatter / csv
    );
}
