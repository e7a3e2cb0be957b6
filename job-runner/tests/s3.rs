//! The runner against a real S3 server (s3s + s3s-fs) on a loopback port, over HTTP, with
//! the same aws-sdk-s3 client it uses against AWS or MinIO.

mod support;

use std::path::Path;
use std::process::Output;

use support::{S3Server, SilentEndpoint, copy_sample, features_model, read_csv, run, stderr};

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
    for name in [
        "pca_model.json",
        "summary.json",
        "errors.csv",
        "scree.png",
        "pc_scatter.png",
        "report.html",
    ] {
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
    // The figures too: their sample depends on the photos alone, not on retries.
    for name in [
        "features_pca.csv",
        "pca_model.json",
        "errors.csv",
        "scree.png",
        "pc_scatter.png",
    ] {
        let clean = std::fs::read(bucket.join("clean").join(name)).unwrap();
        let flaky = std::fs::read(bucket.join("flaky").join(name)).unwrap();
        assert!(clean == flaky, "{name} differs after retries");
    }
}

#[test]
fn a_store_that_keeps_failing_exits_with_a_retryable_code() {
    let root = tempfile::tempdir().unwrap();
    bucket_with_photos(&S3Server::start(root.path()));
    // Every request is throttled or fails on the server: the built-in retries run out, and
    // the pod should be retried (exit 1), not failed for good (exit 2).
    for (status, code) in [
        (503, "SlowDown"),
        (429, "TooManyRequests"),
        (400, "RequestTimeout"),
        (500, "InternalError"),
    ] {
        let failing = S3Server::start_answering(root.path(), status, code);
        let result = run(failing.fruitpipe().args([
            "plan",
            "--input",
            "s3://fruit/in",
            "--work",
            "s3://fruit/work",
        ]));
        assert_retryable(
            &result,
            &[
                &format!("listing of s3://fruit/in/ failed after 6 attempts: {code}"),
                "re-running the same command is safe",
            ],
        );
        assert_eq!(failing.faults(), 6, "{status} {code}: attempts seen");
    }
}

/// A failure a retry may fix: exit 1 and one line that says what failed and what to do.
fn assert_retryable(output: &Output, messages: &[&str]) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(1), "exit code for: {text}");
    for message in messages {
        assert!(text.contains(message), "expected '{message}' in: {text}");
    }
    assert_one_error_line(&text);
}

fn assert_refused(output: &Output, message: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(2), "exit code for: {text}");
    assert!(text.contains(message), "expected '{message}' in: {text}");
    assert_one_error_line(&text);
}

fn assert_one_error_line(text: &str) {
    assert!(!text.contains("panicked"), "{text}");
    let errors = text.lines().filter(|line| line.starts_with("error:"));
    assert_eq!(errors.count(), 1, "{text}");
}

/// Each phase's command, pointed at `s3://fruit` (the model is read from S3 by `extract`,
/// from a file by `run`, so both ways of loading it are covered).
fn every_phase() -> Vec<(&'static str, Vec<String>)> {
    let model = features_model().display().to_string();
    let strings = |args: &[&str]| args.iter().map(|arg| arg.to_string()).collect();
    vec![
        (
            "plan",
            strings(&[
                "plan",
                "--input",
                "s3://fruit/in",
                "--work",
                "s3://fruit/work",
            ]),
        ),
        (
            "extract",
            strings(&[
                "extract",
                "--work",
                "s3://fruit/work",
                "--index",
                "0",
                "--model",
                "s3://fruit/models/features.onnx",
            ]),
        ),
        (
            "fit",
            strings(&[
                "fit",
                "--work",
                "s3://fruit/work",
                "--output",
                "s3://fruit/out",
            ]),
        ),
        (
            "project",
            strings(&["project", "--work", "s3://fruit/work", "--index", "0"]),
        ),
        (
            "assemble",
            strings(&[
                "assemble",
                "--work",
                "s3://fruit/work",
                "--output",
                "s3://fruit/out",
            ]),
        ),
        (
            "run",
            strings(&[
                "run",
                "--input",
                "s3://fruit/in",
                "--output",
                "s3://fruit/out",
                "--model",
                &model,
                "--size",
                "100",
            ]),
        ),
    ]
}

#[test]
fn an_endpoint_that_refuses_connections_is_retryable_in_every_phase() {
    // A DNS blip or a proxy sidecar not ready yet in one of many pods looks like this; exit
    // 2 would fail the whole pipeline, so even a never-reached endpoint exits 1.
    let endpoint = support::refused_endpoint();
    let dir = tempfile::tempdir().unwrap();
    for (phase, args) in every_phase() {
        let summary = dir.path().join(format!("{phase}.json"));
        let result = run(support::fruitpipe_for(&endpoint)
            .args(&args)
            .arg("--summary-file")
            .arg(&summary));
        let expected = format!("cannot reach the S3 endpoint {endpoint} (for s3://fruit/");
        assert_retryable(
            &result,
            &[
                &expected,
                ": connection refused (after 6 attempts); check --s3-endpoint / AWS_ENDPOINT_URL, or retry",
            ],
        );
        // The operator reads the same line from the termination message.
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        assert_eq!(written["phase"], phase);
        assert!(
            written["error"].as_str().unwrap().contains(&expected),
            "{written}"
        );
    }
}

#[test]
fn an_endpoint_that_never_answers_times_out_with_exit_1() {
    let silent = SilentEndpoint::start();
    let result = run(support::fruitpipe_for(&silent.endpoint)
        .env("FRUITPIPE_S3_TIMEOUT", "0.3")
        .args([
            "plan",
            "--input",
            "s3://fruit/in",
            "--work",
            "s3://fruit/work",
        ]));
    assert_retryable(
        &result,
        &[
            &format!("cannot reach the S3 endpoint {}", silent.endpoint),
            "no answer within 300ms (--s3-timeout) (after 6 attempts)",
        ],
    );
    // Each timed-out attempt gives up its connection; the retries open new ones.
    assert_eq!(silent.connections(), 6);

    // The flag says the same as the variable, and a timeout must be positive.
    let result = run(support::fruitpipe_for(&silent.endpoint).args([
        "fit",
        "--s3-timeout",
        "0.3",
        "--work",
        "s3://fruit/work",
        "--output",
        "s3://fruit/out",
    ]));
    assert_retryable(&result, &["no answer within 300ms"]);
    let result = run(support::fruitpipe_for(&silent.endpoint).args([
        "plan",
        "--s3-timeout",
        "0",
        "--input",
        "s3://fruit/in",
        "--work",
        "s3://fruit/work",
    ]));
    assert_eq!(result.status.code(), Some(2), "{}", stderr(&result));
    assert!(stderr(&result).contains("not a positive number of seconds"));
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

    let mut unknown_key = server.fruitpipe();
    unknown_key.env("AWS_ACCESS_KEY_ID", "nobody");
    assert_refused(&plan(&mut unknown_key, "s3://fruit/in"), "refused");

    let mut no_credentials = support::fruitpipe();
    no_credentials
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .env("FRUITPIPE_S3_PATH_STYLE", "true");
    assert_refused(
        &plan(&mut no_credentials, "s3://fruit/in"),
        "no usable credentials were found",
    );

    let denied = S3Server::start_answering(root.path(), 403, "AccessDenied");
    assert_refused(
        &plan(&mut denied.fruitpipe(), "s3://fruit/in"),
        "access to s3://fruit/in/ was refused (AccessDenied",
    );
    assert_eq!(denied.faults(), 1, "an AccessDenied was retried");

    let elsewhere = S3Server::start_answering(root.path(), 301, "PermanentRedirect");
    assert_refused(
        &plan(&mut elsewhere.fruitpipe(), "s3://fruit/in"),
        "set --s3-region",
    );

    assert_refused(
        &plan(&mut server.fruitpipe(), "s3://no-such-bucket/in"),
        "does not exist (no such bucket)",
    );
    assert_refused(
        &plan(&mut server.fruitpipe(), "s3://fruit/empty-prefix"),
        "no images",
    );
    assert_refused(
        &plan(&mut server.fruitpipe(), "s3:///in"),
        "names no bucket",
    );

    let mut malformed_endpoint = server.fruitpipe();
    malformed_endpoint.env("AWS_ENDPOINT_URL", "not-a-url");
    assert_refused(
        &plan(&mut malformed_endpoint, "s3://fruit/in"),
        "was not a valid URI",
    );

    assert_refused(
        &run(server.fruitpipe().args([
            "extract",
            "--work",
            "s3://fruit/work",
            "--index",
            "0",
            "--model",
            "s3://fruit/models/missing.onnx",
        ])),
        "no model at s3://fruit/models/missing.onnx",
    );
}

#[test]
fn a_photo_refused_for_its_own_reasons_is_skipped_and_the_run_goes_on() {
    let root = tempfile::tempdir().unwrap();
    let server = S3Server::start_refusing(
        root.path(),
        &[
            ("denied.jpg", 403, "AccessDenied"),
            ("archived.jpg", 403, "InvalidObjectState"),
            ("sealed.jpg", 400, "KMS.DisabledException"),
        ],
    );
    let bucket = bucket_with_photos(&server);
    let banana = bucket.join("in/Training/Banana");
    let photo = std::fs::read_dir(&banana)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for name in ["denied.jpg", "archived.jpg", "sealed.jpg", "gone.jpg"] {
        std::fs::copy(&photo, banana.join(name)).unwrap();
    }
    let phase = |args: &[&str]| {
        let result = run(server.fruitpipe().args(args));
        assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    };
    phase(&[
        "plan",
        "--input",
        "s3://fruit/in",
        "--work",
        "s3://fruit/work",
        "--shard-size",
        "10",
    ]);
    // Deleted after the listing, before its shard is read.
    std::fs::remove_file(banana.join("gone.jpg")).unwrap();
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bucket.join("work/plan.json")).unwrap()).unwrap();
    for index in 0..plan["shards"].as_u64().unwrap() {
        phase(&[
            "extract",
            "--work",
            "s3://fruit/work",
            "--index",
            &index.to_string(),
            "--model",
            "s3://fruit/models/features.onnx",
            "--size",
            "32",
        ]);
    }
    phase(&[
        "fit",
        "--work",
        "s3://fruit/work",
        "--output",
        "s3://fruit/out",
        "--components",
        "2",
    ]);
    for index in 0..plan["shards"].as_u64().unwrap() {
        phase(&[
            "project",
            "--work",
            "s3://fruit/work",
            "--index",
            &index.to_string(),
        ]);
    }
    phase(&[
        "assemble",
        "--work",
        "s3://fruit/work",
        "--output",
        "s3://fruit/out",
    ]);
    let errors = read_csv(&bucket.join("out/errors.csv"));
    let reasons: std::collections::BTreeMap<String, String> = errors[1..]
        .iter()
        .map(|row| (row[0].clone(), row[1].clone()))
        .collect();
    let key = |name: &str| format!("s3://fruit/in/Training/Banana/{name}");
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for (name, reason) in [
        ("denied.jpg", "access denied (AccessDenied"),
        ("archived.jpg", "archived"),
        ("sealed.jpg", "KMS key"),
        ("gone.jpg", "missing"),
    ] {
        assert!(reasons[&key(name)].contains(reason), "{name}: {reasons:?}");
    }
    let rows = read_csv(&bucket.join("out/features_pca.csv"));
    assert_eq!(
        rows.len() - 1,
        plan["images"].as_u64().unwrap() as usize - 4
    );
}

#[test]
fn access_denied_on_every_photo_is_a_configuration_error() {
    let root = tempfile::tempdir().unwrap();
    // Listing works, reading any photo does not: a policy without s3:GetObject.
    let server = S3Server::start_refusing(root.path(), &[("/fruit/in/", 403, "AccessDenied")]);
    bucket_with_photos(&server);
    let result = run_over_s3(&server, "s3://fruit/out");
    assert_refused(&result, "photos of shard 0 were refused");
    assert!(
        stderr(&result).contains("s3:GetObject"),
        "{}",
        stderr(&result)
    );
}
