//! The nearest-photo search alone: an index of ROWS random rows of K components, QUERIES
//! searches; prints milliseconds per search. Used to size the search against inference
//! in bench/serve.sh.
//!
//! cargo run --release --example search_bench -- ROWS K QUERIES

use std::time::Instant;

use fruitpipe_runner::index::Index;
use fruitpipe_runner::storage::Location;

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|arg| arg.parse())
        .collect::<Result<_, _>>()?;
    let [rows, k, queries] = args[..] else {
        anyhow::bail!("usage: search_bench ROWS K QUERIES");
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut csv = String::from("path,label");
    for c in 1..=k {
        csv.push_str(&format!(",pc_{c}"));
    }
    csv.push('\n');
    for row in 0..rows {
        csv.push_str(&format!("photo{row}.jpg,Label {}", row % 100));
        for _ in 0..k {
            csv.push_str(&format!(",{:.5}", next()));
        }
        csv.push('\n');
    }
    let index = Index::from_csv(csv.as_bytes(), &Location::parse("bench.csv")?)?;
    let queries: Vec<Vec<f64>> = (0..queries)
        .map(|_| (0..k).map(|_| next()).collect())
        .collect();
    let started = Instant::now();
    let mut checksum = 0.0;
    for query in &queries {
        checksum += index.nearest(query, 50)[0].similarity;
    }
    let millis = started.elapsed().as_secs_f64() * 1000.0 / queries.len() as f64;
    println!("{millis:.3} ms per search ({rows} rows, k = {k}; checksum {checksum:.3})");
    Ok(())
}
