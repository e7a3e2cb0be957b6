//! Time per photo of decode + resize + normalise, single-threaded (bench helper).
use fruitpipe_runner::imaging::{Layout, Preprocessing, Preset};
fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let size: u32 = std::env::args().nth(2).unwrap().parse().unwrap();
    let mut photos = Vec::new();
    for class in std::fs::read_dir(&dir).unwrap() {
        for photo in std::fs::read_dir(class.unwrap().path()).unwrap() {
            photos.push(std::fs::read(photo.unwrap().path()).unwrap());
        }
    }
    let p = Preprocessing {
        preset: Preset::Lite,
        size,
        layout: Layout::Nchw,
        exif_orientation: true,
    };
    let t = std::time::Instant::now();
    let mut decode = std::time::Duration::ZERO;
    for bytes in &photos {
        let t0 = std::time::Instant::now();
        let image = fruitpipe_runner::imaging::decode_rgb(
            bytes,
            fruitpipe_runner::imaging::DEFAULT_MAX_PIXELS,
            true,
        )
        .unwrap();
        decode += t0.elapsed();
        let mut out = vec![0.0; p.tensor_len()];
        p.write_tensor(&image, &mut out);
    }
    let total = t.elapsed().as_secs_f64() * 1000.0 / photos.len() as f64;
    println!(
        "{} photos: {:.3} ms/photo total, {:.3} ms decode",
        photos.len(),
        total,
        decode.as_secs_f64() * 1000.0 / photos.len() as f64
    );
}
