//! The throughput floor: ONNX Runtime alone on photos decoded and preprocessed beforehand,
//! with the same model, size, batch and threads as `fruitpipe run`. Used by
//! bench/throughput.sh as the baseline `fruitpipe run` is compared with.
//!
//! cargo run --release --example inference_floor -- MODEL PHOTO_DIR IMAGES SIZE BATCH THREADS [SPIN]
//!
//! SPIN is 1 (ONNX Runtime's default: worker threads keep spinning between inferences, as
//! in `fruitpipe run`) or 0 (they stop after each, as in `fruitpipe serve`).

use std::time::Instant;

use fruitpipe_runner::imaging::Preset;
use fruitpipe_runner::model::Model;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, spin) = match args.as_slice() {
        [rest @ .., spin] if rest.len() == 6 => (rest, spin != "0"),
        rest => (rest, true),
    };
    let [model, photos, images, size, batch, threads] = args else {
        anyhow::bail!("usage: inference_floor MODEL PHOTO_DIR IMAGES SIZE BATCH THREADS [SPIN]");
    };
    let (images, size, batch, threads): (usize, u32, usize, usize) = (
        images.parse()?,
        size.parse()?,
        batch.parse()?,
        threads.parse()?,
    );
    let bytes = std::fs::read(model)?;
    let mut model =
        Model::load_with_spinning(&bytes, model, Preset::Lite, Some(size), threads, spin)?;

    // Decode a batch worth of distinct photos once; inference cost does not depend on
    // the pixel values, so cycling through them measures the network alone.
    let mut tensors = Vec::new();
    for entry in walk(std::path::Path::new(photos))?.into_iter().take(batch) {
        let data = std::fs::read(entry)?;
        tensors.push(
            model
                .info
                .preprocessing
                .tensor_from_bytes(&data, fruitpipe_runner::imaging::DEFAULT_MAX_PIXELS)
                .map_err(anyhow::Error::msg)?,
        );
    }
    anyhow::ensure!(!tensors.is_empty(), "no photos under {photos}");

    let started = Instant::now();
    let mut done = 0;
    let mut input = Vec::new();
    while done < images {
        let count = batch.min(images - done);
        input.clear();
        for i in 0..count {
            input.extend_from_slice(&tensors[i % tensors.len()]);
        }
        model.features(&input, count)?;
        done += count;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{:.1}", images as f64 / seconds);
    Ok(())
}

fn walk(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(walk(&path)?);
        } else if path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("jpg"))
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}
