//! S3 stores as they differ from the in-process server: a bucket in another region than the
//! one requests are signed for (as AWS answers), and a store that refuses the newer
//! checksum headers (as older MinIO and Ceph do). The fault proxy plays both in front of
//! the real S3 server.

mod support;

use support::{
    FaultConfig, FaultProxy, S3Server, copy_sample, features_model, read_csv, run, stderr,
};

const CLASSES: [&str; 2] = ["Banana", "Kiwi"];

fn bucket_with_photos(server: &S3Server) {
    let bucket = server.bucket("fruit");
    copy_sample(&bucket.join("in"), &CLASSES, 3);
    std::fs::create_dir_all(bucket.join("models")).unwrap();
    std::fs::copy(features_model(), bucket.join("models/features.onnx")).unwrap();
}

fn run_through(proxy: &FaultProxy, output: &str, region: Option<&str>) -> std::process::Output {
    let mut command = proxy.fruitpipe();
    command.env_remove("AWS_REGION");
    if let Some(region) = region {
        command.env("AWS_REGION", region);
    }
    run(command.args([
        "run",
        "--input",
        "s3://fruit/in",
        "--output",
        output,
        "--model",
        "s3://fruit/models/features.onnx",
        "--size",
        "32",
        "--components",
        "2",
        "--s3-timeout",
        "5",
    ]))
}

#[test]
fn a_bucket_in_another_region_is_found_when_no_region_is_set() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    bucket_with_photos(&server);
    let proxy = FaultProxy::start(
        &server.endpoint,
        FaultConfig {
            region_redirect: Some("eu-west-3".into()),
            ..FaultConfig::default()
        },
    );

    let found = run_through(&proxy, "s3://fruit/out", None);
    assert_eq!(found.status.code(), Some(0), "{}", stderr(&found));
    let redirected = proxy.counts().redirected;
    assert!(redirected >= 1, "the region was never asked");
    let rows = read_csv(&root.path().join("fruit/out/features_pca.csv"));
    assert_eq!(
        rows.len() - 1,
        10,
        "3 Training and 2 Test photos of each class"
    );

    // A region that is set and wrong is the user's to fix: exit 2, naming the flag.
    let wrong = run_through(&proxy, "s3://fruit/out-2", Some("us-west-2"));
    assert_eq!(wrong.status.code(), Some(2), "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("--s3-region"), "{}", stderr(&wrong));
}

#[test]
fn a_store_without_the_newer_checksum_headers_works() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    bucket_with_photos(&server);
    let proxy = FaultProxy::start(
        &server.endpoint,
        FaultConfig {
            reject_checksum_headers: true,
            ..FaultConfig::default()
        },
    );
    let result = run_through(&proxy, "s3://fruit/out", Some("us-east-1"));
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(proxy.counts().checksum_rejected, 0);
    assert!(root.path().join("fruit/out/features_pca.csv").is_file());
}
