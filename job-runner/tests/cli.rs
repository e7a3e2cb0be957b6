//! The real `fruitpipe` binary on real photos, on local folders: results, bad input and
//! re-runs.

mod support;

use std::io::Cursor;
use std::path::Path;
use std::process::Output;

use image::{DynamicImage, ImageFormat};
use support::{copy_sample, features_model, fruitpipe, pipeline, read_csv, run, stderr};

const CLASSES: [&str; 4] = ["Banana", "Lemon", "Kiwi", "Cocos"];

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Files that look like photos but are not, photos in unusual formats, and files that
/// must not be read at all.
fn add_awkward_files(input: &Path) {
    let broken = input.join("Training/Broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("empty.jpg"), b"").unwrap();
    std::fs::write(broken.join("text.jpg"), b"this is not a photo").unwrap();
    let real = std::fs::read(
        input
            .join("Training/Banana")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    std::fs::write(broken.join("truncated.jpg"), &real[..real.len() / 3]).unwrap();

    let odd = input.join("Training/Odd");
    std::fs::create_dir_all(&odd).unwrap();
    let gray = image::GrayImage::from_fn(100, 100, |x, y| image::Luma([(x + y) as u8]));
    std::fs::write(
        odd.join("gray.png"),
        encode(DynamicImage::ImageLuma8(gray), ImageFormat::Png),
    )
    .unwrap();
    let rgba = image::RgbaImage::from_fn(120, 80, |x, _| image::Rgba([200, 30, 30, (x * 2) as u8]));
    std::fs::write(
        odd.join("rgba.PNG"),
        encode(DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
    )
    .unwrap();

    std::fs::write(input.join("Training/notes.txt"), b"not an image").unwrap();
    std::fs::write(input.join("Training/Banana/.hidden.jpg"), &real).unwrap();
    std::fs::create_dir_all(input.join("_scratch/Banana")).unwrap();
    std::fs::write(input.join("_scratch/Banana/copy.jpg"), &real).unwrap();
}

fn run_pipeline(input: &Path, output: &Path, extra: &[&str]) -> Output {
    run(pipeline(input, output).args(["--batch", "8"]).args(extra))
}

#[test]
fn run_writes_a_row_per_usable_photo_and_lists_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    copy_sample(&input, &CLASSES, 4);
    add_awkward_files(&input);

    let result = run_pipeline(&input, &output, &["--shard-size", "7", "--components", "5"]);
    assert_eq!(result.status.code(), Some(0));
    assert!(stderr(&result).contains("features_pca.csv"));

    let rows = read_csv(&output.join("features_pca.csv"));
    let header = &rows[0];
    assert_eq!(header[..3], ["path", "label", "pc_1"]);
    assert_eq!(header.len(), 2 + 5);
    let photos = &rows[1..];
    // 4 classes x (4 Training + 2 Test) real photos, plus the gray and RGBA ones.
    assert_eq!(photos.len(), CLASSES.len() * 6 + 2);
    for row in photos {
        let path = Path::new(&row[0]);
        assert!(path.is_absolute() && path.is_file(), "{path:?}");
        assert_eq!(
            row[1],
            path.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
        );
        assert!(
            row[2..]
                .iter()
                .all(|value| value.parse::<f32>().unwrap().is_finite())
        );
    }
    let labels: std::collections::BTreeSet<_> = photos.iter().map(|row| row[1].as_str()).collect();
    assert_eq!(
        labels.into_iter().collect::<Vec<_>>(),
        ["Banana", "Cocos", "Kiwi", "Lemon", "Odd"]
    );

    let errors = read_csv(&output.join("errors.csv"));
    assert_eq!(errors[0], ["path", "reason"]);
    let reasons: Vec<(String, String)> = errors[1..]
        .iter()
        .map(|row| {
            (
                Path::new(&row[0])
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                row[1].clone(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons.contains(&("empty.jpg".into(), "empty file".into())));
    assert!(
        reasons
            .iter()
            .any(|(name, why)| name == "text.jpg" && why.contains("not a supported image"))
    );
    assert!(
        reasons
            .iter()
            .any(|(name, why)| name == "truncated.jpg" && why.contains("corrupt"))
    );

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["images_seen"], 29);
    assert_eq!(summary["images_used"], 26);
    assert_eq!(summary["images_skipped"], 3);
    assert_eq!(summary["shards"], 5);
    assert_eq!(summary["k"], 5);
    assert_eq!(summary["dim"], 1280);

    let model: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("pca_model.json")).unwrap()).unwrap();
    assert_eq!(model["k"], 5);
    assert_eq!(model["components"].as_array().unwrap().len(), 5);
    assert_eq!(model["components"][0].as_array().unwrap().len(), 1280);
    assert_eq!(model["mean"].as_array().unwrap().len(), 1280);
    assert_eq!(model["feature_model"]["preprocessing"]["size"], 100);
    assert_eq!(model["feature_model"]["preprocessing"]["preset"], "lite");
    assert_eq!(
        model["feature_model"]["sha256"],
        "9f9a4749a05fd82b8769fc522d7f410ddafbfdde0651217287c6d16fdfb1cdc6"
    );
}

#[test]
fn variance_threshold_picks_k_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    copy_sample(&input, &CLASSES, 4);
    let summary_file = dir.path().join("termination-log");
    let result = run_pipeline(
        &input,
        &output,
        &[
            "--variance",
            "0.8",
            "--summary-file",
            summary_file.to_str().unwrap(),
        ],
    );
    assert_eq!(result.status.code(), Some(0));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("summary.json")).unwrap()).unwrap();
    let k = summary["k"].as_u64().unwrap() as usize;
    let explained = summary["cumulative_explained_variance"].as_f64().unwrap();
    assert!(
        explained >= 0.8 && k > 1 && k < 24,
        "k = {k}, explained = {explained}"
    );
    let model: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("pca_model.json")).unwrap()).unwrap();
    let ratios: Vec<f64> = model["explained_variance_ratio"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value.as_f64().unwrap())
        .collect();
    assert_eq!(ratios.len(), k);
    assert!(
        ratios[..k - 1].iter().sum::<f64>() < 0.8,
        "k is not the smallest"
    );
    assert_eq!(read_csv(&output.join("features_pca.csv"))[0].len(), 2 + k);

    let termination: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary_file).unwrap()).unwrap();
    assert_eq!(termination["phase"], "run");
    assert_eq!(termination["k"], k);
    assert_eq!(termination["images"], 24);
    assert_eq!(
        termination["outputs"]["report"],
        output.join("report.html").to_str().unwrap()
    );
}

/// Kubernetes keeps 4 KiB of a termination message: with long output URIs the runner
/// leaves them out (the operator knows them from the spec) rather than the figures.
#[test]
fn a_termination_message_with_long_outputs_stays_under_4_kib() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES[..2], 2);
    let mut output = dir.path().to_path_buf();
    for level in 0..14 {
        output.push(format!("{level}-a-folder-name-long-enough-to-matter-here"));
    }
    let summary_file = dir.path().join("termination-log");
    let result = run_pipeline(
        &input,
        &output,
        &[
            "--components",
            "2",
            "--summary-file",
            summary_file.to_str().unwrap(),
        ],
    );
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let text = std::fs::read_to_string(&summary_file).unwrap();
    assert!(text.len() <= 4000, "{} bytes", text.len());
    let termination: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(termination["phase"], "run");
    assert_eq!(termination["k"], 2);
    assert!(termination.get("outputs").is_none(), "{text}");
    assert!(termination.get("error").is_none(), "{text}");
}

#[test]
fn components_are_whitened_by_default_and_plain_with_no_whiten() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES, 4);
    let (whitened, plain) = (dir.path().join("whitened"), dir.path().join("plain"));
    let result = run_pipeline(&input, &whitened, &["--components", "4"]);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let result = run_pipeline(&input, &plain, &["--components", "4", "--no-whiten"]);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));

    let model = |dir: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("pca_model.json")).unwrap()).unwrap()
    };
    assert_eq!(model(&whitened)["whiten"], true);
    assert_eq!(model(&plain)["whiten"], false);
    let eigenvalues: Vec<f64> = model(&plain)["eigenvalues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value.as_f64().unwrap())
        .collect();
    let (w, p) = (
        read_csv(&whitened.join("features_pca.csv")),
        read_csv(&plain.join("features_pca.csv")),
    );
    assert_eq!(w.len(), p.len());
    let mut sums = [0.0f64; 4];
    for (w_row, p_row) in w[1..].iter().zip(&p[1..]) {
        assert_eq!(w_row[0], p_row[0]);
        for c in 0..4 {
            let (w_value, p_value): (f64, f64) =
                (w_row[2 + c].parse().unwrap(), p_row[2 + c].parse().unwrap());
            let expected = p_value / eigenvalues[c].sqrt();
            assert!(
                (w_value - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                "component {c}: {w_value} is not {p_value} / sqrt({})",
                eigenvalues[c]
            );
            sums[c] += w_value * w_value;
        }
    }
    // Over the photos it was fitted on, each whitened component has unit variance.
    for (c, sum) in sums.iter().enumerate() {
        let variance = sum / (w.len() - 2) as f64;
        assert!(
            (variance - 1.0).abs() < 1e-3,
            "component {c}: variance {variance}"
        );
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(whitened.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["whiten"], true);
}

#[test]
fn include_keeps_only_matching_photos() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    copy_sample(&input, &CLASSES, 4);
    let result = run_pipeline(
        &input,
        &output,
        &["--include", "Test/**", "--components", "2"],
    );
    assert_eq!(result.status.code(), Some(0));
    let rows = read_csv(&output.join("features_pca.csv"));
    assert_eq!(rows.len() - 1, CLASSES.len() * 2);
    assert!(rows[1..].iter().all(|row| row[0].contains("/Test/")));

    let result = run_pipeline(&input, &output, &["--include", "*/Banana"]);
    assert_refused(&result, "matching --include */Banana");
    let result = run_pipeline(&input, &output, &["--include", "a{b"]);
    assert_refused(&result, "not a valid glob");
}

fn phase(args: &[&str], work: &Path) -> Output {
    run(fruitpipe().args(args).arg("--work").arg(work))
}

fn extract(work: &Path, index: usize) -> std::process::Command {
    let mut command = fruitpipe();
    command
        .args([
            "extract",
            "--size",
            "100",
            "--batch",
            "4",
            "--index",
            &index.to_string(),
        ])
        .arg("--model")
        .arg(features_model())
        .arg("--work")
        .arg(work);
    command
}

#[test]
fn a_killed_and_retried_shard_gives_byte_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(
        &input,
        &["Banana", "Lemon", "Kiwi", "Cocos", "Avocado", "Limes"],
        4,
    );
    let plan = |work: &Path| {
        let result = phase(
            &[
                "plan",
                "--shard-size",
                "12",
                "--input",
                input.to_str().unwrap(),
            ],
            work,
        );
        assert_eq!(result.status.code(), Some(0));
        assert_eq!(
            String::from_utf8_lossy(&result.stdout).trim(),
            "3 shards, 36 images"
        );
    };
    // fit, then project (shard 1 as an Indexed Job pod would, from JOB_COMPLETION_INDEX),
    // then assemble.
    let fit = |work: &Path, output: &Path| {
        let result = phase(
            &[
                "fit",
                "--components",
                "6",
                "--output",
                output.to_str().unwrap(),
            ],
            work,
        );
        assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
        for shard in ["0", "2"] {
            let result = phase(&["project", "--index", shard], work);
            assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
        }
        let result = run(fruitpipe()
            .args(["project", "--work"])
            .arg(work)
            .env("JOB_COMPLETION_INDEX", "1"));
        assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
        let result = phase(&["assemble", "--output", output.to_str().unwrap()], work);
        assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    };

    // Reference: every shard once, without trouble.
    let (work_a, out_a) = (dir.path().join("a/_work/x"), dir.path().join("a"));
    plan(&work_a);
    for shard in 0..3 {
        assert_eq!(run(&mut extract(&work_a, shard)).status.code(), Some(0));
    }
    fit(&work_a, &out_a);

    // Trouble: shard 1 is killed mid-run, then retried twice; shard 2 runs as an Indexed
    // Job pod would, from JOB_COMPLETION_INDEX.
    let (work_b, out_b) = (dir.path().join("b/_work/x"), dir.path().join("b"));
    plan(&work_b);
    assert_eq!(run(&mut extract(&work_b, 0)).status.code(), Some(0));
    let mut doomed = extract(&work_b, 1).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    for _ in 0..2 {
        assert_eq!(run(&mut extract(&work_b, 1)).status.code(), Some(0));
    }
    let summary_file = dir.path().join("termination-log");
    let mut from_env = fruitpipe();
    from_env
        .args(["extract", "--size", "100", "--batch", "4"])
        .arg("--model")
        .arg(features_model())
        .arg("--work")
        .arg(&work_b)
        .arg("--summary-file")
        .arg(&summary_file)
        .env("JOB_COMPLETION_INDEX", "2");
    assert_eq!(run(&mut from_env).status.code(), Some(0));
    let termination: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary_file).unwrap()).unwrap();
    assert_eq!(termination["shard"], 2);
    assert_eq!(termination["used"], 12);
    fit(&work_b, &out_b);

    for name in ["features_pca.csv", "pca_model.json", "errors.csv"] {
        let (a, b) = (
            std::fs::read(out_a.join(name)).unwrap(),
            std::fs::read(out_b.join(name)).unwrap(),
        );
        assert!(
            a == b,
            "{name} differs between the clean and the retried run"
        );
    }
    assert_eq!(read_csv(&out_a.join("features_pca.csv")).len(), 37);
}

fn assert_refused(output: &Output, message: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(2), "exit code for: {text}");
    assert!(text.contains(message), "expected '{message}' in: {text}");
    assert!(
        !text.contains("panicked") && !text.contains("backtrace"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|line| line.starts_with("error:"))
            .count(),
        1,
        "{text}"
    );
}

#[test]
fn bad_input_is_refused_with_exit_code_2_and_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    copy_sample(&photos, &["Banana"], 2);
    let out = dir.path().join("out");
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"not a model at all").unwrap();
    let not_images = dir.path().join("vectors.onnx");
    std::fs::write(&not_images, support::identity_onnx(&[-1, 5])).unwrap();
    let not_features = dir.path().join("three-d.onnx");
    std::fs::write(&not_features, support::three_d_output_onnx(100, 100)).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("Banana")).unwrap();
    std::fs::write(empty.join("Banana/readme.txt"), b"no photos here").unwrap();

    let with_model = |model: &Path, input: &Path, extra: &[&str]| {
        run(fruitpipe()
            .arg("run")
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(&out)
            .arg("--model")
            .arg(model)
            .args(["--size", "100"])
            .args(extra))
    };
    let model = features_model();

    assert_refused(&with_model(&model, &empty, &[]), "no images");
    assert_refused(
        &with_model(&model, &dir.path().join("nowhere"), &[]),
        "does not exist",
    );
    assert_refused(
        &with_model(&dir.path().join("missing.onnx"), &photos, &[]),
        "no model at",
    );
    assert_refused(
        &with_model(&garbage, &photos, &[]),
        "not a usable ONNX model",
    );
    assert_refused(&with_model(&not_images, &photos, &[]), "not an image batch");
    assert_refused(
        &with_model(&not_features, &photos, &[]),
        "the runner needs [batch, features] or a 4-D feature map",
    );
    assert_refused(
        &with_model(dir.path(), &photos, &[]),
        "is a folder where a file was expected",
    );
    assert_refused(
        &with_model(&model, &photos, &["--components", "2000"]),
        "more than the 1280 features",
    );
    assert_refused(
        &with_model(&model, &photos, &["--variance", "0"]),
        "outside (0, 1]",
    );
    assert_refused(
        &with_model(&model, &photos, &["--variance", "1.5"]),
        "outside (0, 1]",
    );
    assert_refused(
        &with_model(&model, &photos, &["--shard-size", "0"]),
        "--shard-size",
    );
    assert_refused(
        &with_model(&model, Path::new("gs://x/y"), &[]),
        "neither a local path",
    );
    assert_refused(
        &run(fruitpipe()
            .args(["extract", "--work"])
            .arg(dir.path())
            .arg("--model")
            .arg(&model)),
        "JOB_COMPLETION_INDEX",
    );
    assert_refused(
        &run(fruitpipe()
            .args(["fit", "--output"])
            .arg(&out)
            .arg("--work")
            .arg(dir.path())),
        "no plan at",
    );
    assert!(
        !out.join("features_pca.csv").exists(),
        "a refused run wrote a result"
    );
    // A run refused at the fit still lists what it skipped.
    assert_eq!(read_csv(&out.join("errors.csv")), [["path", "reason"]]);
}

#[test]
fn help_explains_every_shared_flag_with_defaults() {
    let output = run(fruitpipe().args(["run", "--help"]));
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--input",
        "--output",
        "--model",
        "--preset",
        "--size",
        "--batch",
        "--threads",
        "--shard-size",
        "--components",
        "--variance",
        "--standardize",
        "--whiten",
        "--no-whiten",
        "--s3-endpoint",
        "--s3-region",
        "--s3-path-style",
        "--s3-timeout",
        "--summary-file",
    ] {
        assert!(help.contains(flag), "run --help lacks {flag}");
    }
    assert!(help.contains("[default: 0.95]") && help.contains("[default: 2000]"));
    assert!(help.contains("3.7x faster"));
}

/// The progress lines of `command` (stderr is a pipe here, not a terminal), parsed.
fn progress_lines(command: &mut std::process::Command) -> Vec<serde_json::Value> {
    let result = run(command
        .env("RUST_LOG", "warn,fruitpipe_runner::progress=info")
        .args(["--log-format", "json", "--progress-interval", "0.05"]));
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    stderr(&result)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "fruitpipe_runner::progress")
        .map(|line| line["fields"].clone())
        .collect()
}

#[test]
fn without_a_terminal_each_phase_logs_progress_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES, 3);
    let output = dir.path().join("out");
    let lines =
        progress_lines(pipeline(&input, &output).args(["--batch", "4", "--shard-size", "5"]));
    // 3 Training and 2 Test photos of each of the 4 classes.
    let photos = 20;
    for phase in ["extract", "project"] {
        let ends: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|line| line["phase"] == phase && line["shard"].is_u64())
            .collect();
        // One line at each of the 4 shards' end, in order, counting up to every photo.
        let shards: Vec<u64> = ends
            .iter()
            .map(|line| line["shard"].as_u64().unwrap())
            .collect();
        assert_eq!(shards, [0, 1, 2, 3], "{phase}: {lines:#?}");
        let done: Vec<u64> = ends
            .iter()
            .map(|line| line["done"].as_u64().unwrap())
            .collect();
        assert!(done.windows(2).all(|pair| pair[0] < pair[1]), "{done:?}");
        assert_eq!(*done.last().unwrap(), photos);
        for line in &ends {
            assert_eq!(line["total"], photos);
            assert!(line["per_second"].as_f64().unwrap() > 0.0, "{line}");
            assert!(line["eta_seconds"].as_f64().unwrap() >= 0.0, "{line}");
            let message = line["message"].as_str().unwrap();
            assert!(
                message.starts_with(&format!("{phase}: {}/{photos} photos (", line["done"])),
                "{message}"
            );
            assert!(message.contains(" photos/s, ETA "), "{message}");
        }
    }
    assert!(
        lines.iter().any(|line| line["shard"].is_null()),
        "periodic lines between shards' ends: {lines:#?}"
    );

    // Text logs carry the same message, with no terminal colour codes.
    let result = run(pipeline(&input, &output)
        .env("RUST_LOG", "warn,fruitpipe_runner::progress=info")
        .args(["--shard-size", "12"]));
    let text = stderr(&result);
    assert!(text.contains("extract: 20/20 photos (100%), "), "{text}");
    assert!(text.contains("(shard 1 done)"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

#[test]
fn an_extract_pod_logs_its_shard_moving() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES, 3);
    let work = dir.path().join("work");
    let planned = phase(
        &[
            "plan",
            "--shard-size",
            "10",
            "--input",
            input.to_str().unwrap(),
        ],
        &work,
    );
    assert_eq!(planned.status.code(), Some(0), "{}", stderr(&planned));
    let lines = progress_lines(&mut extract(&work, 1));
    let last = lines.last().expect("progress lines");
    // The pod's shard is its whole.
    let shard_photos = std::fs::read_to_string(work.join("shards/00001.txt"))
        .unwrap()
        .lines()
        .count() as u64;
    assert_eq!(
        (last["done"].as_u64(), last["total"].as_u64()),
        (Some(shard_photos), Some(shard_photos)),
        "{lines:#?}"
    );
    assert_eq!(last["shard"], 1);
    assert_eq!(last["phase"], "extract");
}
