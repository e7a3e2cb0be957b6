//! Why faer and not nalgebra for PCA: times the symmetric eigendecomposition of a
//! covariance-like matrix (the step `fit` spends its time in) with both, median of 3, in
//! the same run.
//!
//! cargo run --release --example eigen_bench -- 1280

use std::time::Instant;

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() {
    let dim: usize = std::env::args()
        .nth(1)
        .map_or(1280, |arg| arg.parse().expect("a size"));
    // A covariance of random data: symmetric, positive semi-definite, with a spread of
    // eigenvalues like real features.
    let mut seed = 42u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let rows = 2 * dim;
    let data = faer::Mat::<f64>::from_fn(rows, dim, |_, j| next() * (1.0 + j as f64 / 64.0));
    let covariance = data.transpose() * &data;
    let as_nalgebra = nalgebra::DMatrix::<f64>::from_fn(dim, dim, |i, j| covariance[(i, j)]);

    let time = |f: &mut dyn FnMut()| {
        median(
            (0..3)
                .map(|_| {
                    let started = Instant::now();
                    f();
                    started.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let faer_seconds = time(&mut || {
        std::hint::black_box(
            covariance
                .self_adjoint_eigen(faer::Side::Lower)
                .expect("converges"),
        );
    });
    let nalgebra_seconds = time(&mut || {
        std::hint::black_box(nalgebra::SymmetricEigen::new(as_nalgebra.clone()));
    });
    println!(
        "{dim}x{dim} symmetric eigendecomposition, median of 3: faer {faer_seconds:.2} s, nalgebra {nalgebra_seconds:.2} s, nalgebra/faer {:.1}x",
        nalgebra_seconds / faer_seconds
    );
}
