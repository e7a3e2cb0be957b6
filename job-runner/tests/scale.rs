//! A run of 1,000 shards through every phase against a real S3 server (s3s + s3s-fs) on
//! loopback: plan, extract (each shard), fit (statistics only), project (each shard) and
//! the server-side assembly of `features_pca.csv`, compared byte for byte with the same
//! photos run by `fruitpipe run` into a folder.
//!
//! The photos are 2,000 generated 8x8 PNGs and the model a real 8x8 -> 16-d linear ONNX
//! graph, so that the thousands of shards cost seconds. The phases run in this process,
//! one call per pod, as the Indexed Jobs would run them.
//!
//! A test binary of its own: the AWS SDK reads credentials from the environment, which is
//! set once here, before any thread reads it.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fruitpipe_runner::extract::{PhotoLimits, extract};
use fruitpipe_runner::fit::{FitOptions, fit};
use fruitpipe_runner::imaging::Preset;
use fruitpipe_runner::pca::Components;
use fruitpipe_runner::plan::plan;
use fruitpipe_runner::project::{load_projection, project};
use fruitpipe_runner::run::{ModelOptions, load_model};
use fruitpipe_runner::storage::compose::ComposeLimits;
use fruitpipe_runner::storage::{Location, Storage};
use fruitpipe_runner::work::WorkDir;
use indicatif::ProgressBar;
use support::S3Server;

const PHOTOS: usize = 2_000;
const SHARD_SIZE: usize = 2;
const SHARDS: usize = PHOTOS / SHARD_SIZE;
const LABELS: [&str; 10] = [
    "Apple Braeburn",
    "Banana",
    "Cherry 1",
    "Kiwi",
    "Lemon",
    "Mango",
    "Orange",
    "Pear",
    "Plum 3",
    "Walnut",
];

fn storage_for(endpoint: &str) -> Storage {
    support::in_process_storage(endpoint)
}

/// 8x8 PNGs whose colours depend on their label (so PCA has structure) and on their index.
fn write_photos(folder: &Path) {
    for i in 0..PHOTOS {
        let label = LABELS[i % LABELS.len()];
        let tint = (i % LABELS.len()) as u32 * 25;
        let photo = image::RgbImage::from_fn(8, 8, |x, y| {
            let noise = (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(x + 8 * y)
                % 40;
            image::Rgb([
                ((tint + noise) % 256) as u8,
                ((x * 30 + noise) % 256) as u8,
                ((y * 30 + tint / 2) % 256) as u8,
            ])
        });
        let dir = folder.join(label);
        std::fs::create_dir_all(&dir).unwrap();
        photo.save(dir.join(format!("{i:05}.png"))).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_shards_assemble_to_the_same_bytes_as_a_folder_run() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    let bucket = server.bucket("scale");
    write_photos(&bucket.join("in"));
    std::fs::create_dir_all(bucket.join("models")).unwrap();
    std::fs::write(
        bucket.join("models/linear.onnx"),
        support::linear_onnx(8, 16),
    )
    .unwrap();
    let model_uri = "s3://scale/models/linear.onnx";

    // The S3 path, phase by phase, one call per pod.
    let storage = Arc::new(storage_for(&server.endpoint));
    let output = Location::parse("s3://scale/out").unwrap();
    let work = WorkDir::new(output.join("_work/run-1"));
    let hidden = ProgressBar::hidden();
    let started = Instant::now();
    let input = Location::parse("s3://scale/in").unwrap();
    let planned = plan(&storage, &input, None, &work, SHARD_SIZE, &hidden)
        .await
        .unwrap();
    assert_eq!(planned.shards, SHARDS);
    let options = ModelOptions {
        uri: model_uri.into(),
        preset: Preset::Lite,
        size: None,
        threads: 1,
    };
    let model = Arc::new(Mutex::new(load_model(&storage, &options).await.unwrap()));
    for shard in 0..SHARDS {
        let limits = PhotoLimits::default();
        extract(&storage, &model, &work, shard, 32, limits, &hidden)
            .await
            .unwrap();
    }
    let extracted = started.elapsed().as_secs_f64();
    let fit_options = FitOptions {
        components: Components::Count(8),
        standardize: false,
        whiten: true,
        parquet: false,
    };
    let fitted = fit(&storage, &work, &output, fit_options).await.unwrap();
    assert_eq!(fitted.summary.images_used, PHOTOS as u64);
    let projection = load_projection(&storage, &work).await.unwrap();
    for shard in 0..SHARDS {
        project(&storage, &work, &projection, shard).await.unwrap();
    }
    let summary =
        fruitpipe_runner::assemble::assemble(&storage, &work, &output, ComposeLimits::default())
            .await
            .unwrap();
    eprintln!(
        "{SHARDS} shards over S3: extract {extracted:.1} s, all phases {:.1} s; assembly {:?}",
        started.elapsed().as_secs_f64(),
        summary.assembly
    );
    assert_eq!(summary.shards, SHARDS);
    let csv = std::fs::read(bucket.join("out/features_pca.csv")).unwrap();
    assert_eq!(
        summary.assembly.copied_bytes + summary.assembly.sent_bytes,
        csv.len() as u64
    );

    // The folder path: `fruitpipe run` on the same photos, its output in a folder.
    let local = root.path().join("local-out");
    let result = support::run(
        server
            .fruitpipe()
            .args(["run", "--input", "s3://scale/in", "--model", model_uri])
            .args(["--shard-size", &SHARD_SIZE.to_string(), "--components", "8"])
            .arg("--output")
            .arg(&local),
    );
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}",
        support::stderr(&result)
    );
    let folder_csv = std::fs::read(local.join("features_pca.csv")).unwrap();
    let rows = csv.iter().filter(|&&byte| byte == b'\n').count();
    assert_eq!(rows, PHOTOS + 1, "one header and one row per photo");
    assert!(
        csv == folder_csv,
        "the assembled CSV differs from the folder run's"
    );
    for name in ["pca_model.json", "errors.csv"] {
        assert!(
            std::fs::read(bucket.join("out").join(name)).unwrap()
                == std::fs::read(local.join(name)).unwrap(),
            "{name} differs"
        );
    }
}
