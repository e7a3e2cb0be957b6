//! The runner against a real S3 server (s3s + s3s-fs) on a loopback port, over HTTP, with
//! the same aws-sdk-s3 client it uses against AWS or MinIO.

mod support;

use std::path::Path;

use support::{S3Server, copy_sample, features_model, read_csv, run, stderr};

const CLASSES: [&str; 4] = ["Banana", "Grape White", "Grape White 2", "Kiwi"];

#[test]
fn listing_more_than_a_thousand_objects_pages_through_all_of_them() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    let bucket = server.bucket("photos");
    let mut expected = Vec::new();
    for i in 0..1234 {
        let folder = bucket.join(format!("many/Class {}", i % 5));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("{i:04}.jpg")), b"x").unwrap();
        expected.push(format!("s3://photos/many/Class {}/{i:04}.jpg", i % 5));
    }
    std::fs::write(bucket.join("many/Class 0/readme.txt"), b"x").unwrap();
    expected.sort();

    let result = run(server.fruitpipe().args([
        "plan",
        "--input",
        "s3://photos/many",
        "--work",
        "s3://photos/work/run-1",
        "--shard-size",
        "500",
    ]));
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(
        String::from_utf8_lossy(&result.stdout).trim(),
        "3 shards, 1234 images"
    );
    let mut listed = Vec::new();
    for shard in 0..3 {
        let manifest = bucket.join(format!("work/run-1/shards/{shard:05}.txt"));
        let text = std::fs::read_to_string(manifest).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        assert_eq!(lines.len(), if shard < 2 { 500 } else { 234 });
        listed.extend(lines);
    }
    assert_eq!(listed, expected);
    assert!(bucket.join("work/run-1/plan.json").is_file());
}

fn run_over_s3(server: &S3Server, output: &str) -> std::process::Output {
    run(server
        .fruitpipe()
        .args([
            "run",
            "--input",
            "s3://fruit/in",
            "--output",
            output,
            "--model",
            "s3://fruit/models/features.onnx",
        ])
        .args(RUN_SETTINGS))
}

/// Small, fast settings shared by the S3 and the folder runs that are compared.
const RUN_SETTINGS: [&str; 8] = [
    "--size",
    "100",
    "--batch",
    "8",
    "--shard-size",
    "10",
    "--components",
    "4",
];

fn bucket_with_photos(server: &S3Server) -> std::path::PathBuf {
    let bucket = server.bucket("fruit");
    copy_sample(&bucket.join("in"), &CLASSES, 4);
    std::fs::create_dir_all(bucket.join("models")).unwrap();
    std::fs::copy(features_model(), bucket.join("models/features.onnx")).unwrap();
    bucket
}

/// Rows without the path prefix, which differs between a folder and a bucket.
fn rows_relative_to(csv: &Path, prefix: &str) -> Vec<Vec<String>> {
    read_csv(csv)
        .into_iter()
        .skip(1)
        .map(|mut row| {
            row[0] = row[0]
                .strip_prefix(prefix)
                .expect("path under the input")
                .to_string();
            row
        })
        .collect()
}

#[test]
fn a_bucket_and_a_folder_give_the_same_result() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    let bucket = bucket_with_photos(&server);

    let result = run_over_s3(&server, "s3://fruit/out");
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert!(stderr(&result).contains("s3://fruit/out/features_pca.csv"));
    let from_s3 = rows_relative_to(&bucket.join("out/features_pca.csv"), "s3://fruit/in/");
    assert_eq!(from_s3.len(), CLASSES.len() * 6);
    for name in ["pca_model.json", "summary.json", "errors.csv"] {
        assert!(bucket.join("out").join(name).is_file(), "{name} missing");
    }

    let local = tempfile::tempdir().unwrap();
    copy_sample(&local.path().join("in"), &CLASSES, 4);
    let output = local.path().join("out");
    let result = run(support::fruitpipe()
        .arg("run")
        .arg("--input")
        .arg(local.path().join("in"))
        .arg("--output")
        .arg(&output)
        .arg("--model")
        .arg(features_model())
        .args(RUN_SETTINGS));
    assert_eq!(result.status.code(), Some(0));
    let prefix = format!(
        "{}/",
        std::fs::canonicalize(local.path().join("in"))
            .unwrap()
            .display()
    );
    let from_folder = rows_relative_to(&output.join("features_pca.csv"), &prefix);
    assert_eq!(from_s3, from_folder);
}

#[test]
fn throttling_and_server_errors_are_retried_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    let bucket = bucket_with_photos(&server);
    let result = run_over_s3(&server, "s3://fruit/clean");
    assert_eq!(result.status.code(), Some(0));

    // A second server on the same folder answers every 4th request with 503 SlowDown.
    let flaky = S3Server::start_with_faults(root.path(), 4);
    let result = run_over_s3(&flaky, "s3://fruit/flaky");
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert!(
        flaky.faults() >= 10,
        "only {} faults were injected",
        flaky.faults()
    );
    for name in ["features_pca.csv", "pca_model.json", "errors.csv"] {
        let clean = std::fs::read(bucket.join("clean").join(name)).unwrap();
        let flaky = std::fs::read(bucket.join("flaky").join(name)).unwrap();
        assert!(clean == flaky, "{name} differs after retries");
    }
}

#[test]
fn a_store_that_keeps_failing_exits_with_a_retryable_code() {
    let root = tempfile::tempdir().unwrap();
    bucket_with_photos(&S3Server::start(root.path()));
    // Every request is throttled: the built-in retries run out, and the pod should be
    // retried (exit 1), not failed for good (exit 2).
    let throttled = S3Server::start_with_faults(root.path(), 1);
    let result = run(throttled.fruitpipe().args([
        "plan",
        "--input",
        "s3://fruit/in",
        "--work",
        "s3://fruit/work",
    ]));
    let text = stderr(&result);
    assert_eq!(result.status.code(), Some(1), "{text}");
    assert!(text.contains("failed after retries"), "{text}");
    assert!(
        text.contains("re-running the same command is safe"),
        "{text}"
    );
    assert!(throttled.faults() >= 6, "{} faults", throttled.faults());
}

fn assert_refused(output: &std::process::Output, message: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(2), "exit code for: {text}");
    assert!(text.contains(message), "expected '{message}' in: {text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn s3_mistakes_are_refused_with_exit_code_2() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start(root.path());
    bucket_with_photos(&server);
    let plan = |command: &mut std::process::Command, input: &str| {
        run(command.args(["plan", "--input", input, "--work", "s3://fruit/work"]))
    };

    let mut wrong_secret = server.fruitpipe();
    wrong_secret.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    assert_refused(&plan(&mut wrong_secret, "s3://fruit/in"), "refused");

    assert_refused(
        &plan(&mut server.fruitpipe(), "s3://no-such-bucket/in"),
        "does not exist",
    );
    assert_refused(
        &plan(&mut server.fruitpipe(), "s3://fruit/empty-prefix"),
        "no images",
    );

    let mut unreachable = server.fruitpipe();
    unreachable.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    assert_refused(
        &plan(&mut unreachable, "s3://fruit/in"),
        "cannot reach the S3 endpoint",
    );
}
