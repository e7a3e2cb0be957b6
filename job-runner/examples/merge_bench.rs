//! What `fit` costs per shard: decoding one shard's partial statistics (a `partials/*.bin`
//! work file) and merging it into the running total, for thousands of shards, and what
//! the eigendecomposition and projection cost once. S3 transfer is not included: multiply
//! the partial's size by the number of shards and divide by the pod's S3 throughput.
//!
//! cargo run --release --example merge_bench -- 1280 2000 10000   (K=64 sets the k projected)

use std::time::Instant;

use fruitpipe_runner::pca::{self, Components};
use fruitpipe_runner::stats::Moments;

fn main() {
    let mut args = std::env::args().skip(1);
    let dim: usize = args
        .next()
        .map_or(1280, |arg| arg.parse().expect("a dimension"));
    let counts: Vec<usize> = args
        .map(|arg| arg.parse().expect("a shard count"))
        .collect();
    let counts = if counts.is_empty() {
        vec![2000, 10000]
    } else {
        counts
    };

    // One shard's statistics from 256 pseudo-random rows; every shard merged is a copy of
    // it, decoded from bytes as `fit` decodes what it downloads.
    let mut seed = 7u64;
    let rows: Vec<f32> = (0..256 * dim)
        .map(|_| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 40) as f32) / (1u64 << 24) as f32
        })
        .collect();
    let shard = Moments::of_batch(&rows, dim);
    let bytes = shard.to_bytes();
    println!(
        "dim {dim}: one partial is {:.1} MB",
        bytes.len() as f64 / 1e6
    );

    for &count in &counts {
        let started = Instant::now();
        let mut total = Moments::new(dim);
        for _ in 0..count {
            let partial = Moments::from_bytes(shard.n, dim, &bytes).expect("valid partial");
            total.merge(&partial);
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{count} shards: decode + merge {seconds:.2} s ({:.2} ms per shard); {:.1} GB of partials to download",
            1e3 * seconds / count as f64,
            count as f64 * bytes.len() as f64 / 1e9
        );
    }

    let mut total = Moments::new(dim);
    for _ in 0..8 {
        total.merge(&shard);
    }
    total.add_batch(&rows);
    let started = Instant::now();
    let k = std::env::var("K").map_or(64, |k| k.parse().expect("K is a number"));
    let fitted = pca::fit(&total, Components::Count(k), false).expect("fit");
    println!(
        "eigendecomposition and k selection: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let mut projected = 0;
    for block in rows.chunks(256 * dim).cycle().take(40) {
        projected += fitted.project(block).len() / fitted.k;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "projection at k = {}: {:.0} rows/s",
        fitted.k,
        projected as f64 / seconds
    );
}
