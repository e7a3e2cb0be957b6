//! Inputs and re-runs a hostile environment produces, on local folders: files that are not
//! photos, names the formats must carry, huge photos, a plan run twice into one work area,
//! a fit that fails after a good run. A tiny generated model keeps each run to seconds.

mod support;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{batch_mean_onnx, copy_sample, fruitpipe, identity_onnx, read_csv, run, stderr};

const CLASSES: [&str; 3] = ["Banana", "Kiwi", "Lemon"];

/// A model whose features are the mean of each colour channel: fast, and a real ONNX
/// model through the real runtime.
fn tiny_model(dir: &Path, shape: &[i64]) -> PathBuf {
    let path = dir.join(format!("identity_{}.onnx", shape[0]));
    std::fs::write(&path, identity_onnx(shape)).unwrap();
    path
}

fn pipeline(model: &Path, input: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut command = fruitpipe();
    command
        .args(["run", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .arg("--model")
        .arg(model)
        .args(["--size", "16", "--components", "2"])
        .args(extra);
    command
}

/// Runs `command`, killing it after `limit`: a hang is a failure, not a stuck test.
fn run_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    eprintln!(
        "exit: {:?}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn a_photo() -> Vec<u8> {
    std::fs::read(support::sample_photos().join("Training/Banana/11_100.jpg")).unwrap()
}

/// A valid JPEG whose frame header says `width` x `height` (the data is a small photo's:
/// only the header is ever read of it).
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut photo = a_photo();
    let sof = photo
        .windows(2)
        .position(|pair| pair[0] == 0xFF && matches!(pair[1], 0xC0 | 0xC2))
        .expect("a frame header");
    photo[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    photo[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    photo
}

fn mkfifo(path: &Path) {
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
}

/// Files under `dir`, all levels.
fn copy_count(dir: &str) -> usize {
    walk(Path::new(dir))
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() { walk(&path) } else { 1 }
        })
        .sum()
}

fn column(rows: &[Vec<String>], index: usize) -> BTreeSet<String> {
    rows[1..].iter().map(|row| row[index].clone()).collect()
}

#[test]
fn inputs_that_cannot_be_photos_are_skipped_and_listed_and_odd_names_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES, 4);
    let banana = input.join("Training/Banana");
    let input = std::fs::canonicalize(&input).unwrap();
    let banana = std::fs::canonicalize(banana).unwrap();
    let at = |name: &str| banana.join(name).to_string_lossy().into_owned();

    // Not photos, each one input: skipped and listed, never fatal, never a hang.
    mkfifo(&banana.join("pipe.jpg"));
    std::os::unix::fs::symlink(&banana, banana.join("loop")).unwrap();
    std::os::unix::fs::symlink(banana.join("nowhere.jpg"), banana.join("dangling.jpg")).unwrap();
    std::fs::write(banana.join("line\nbreak.jpg"), a_photo()).unwrap();
    let not_utf8 = banana.join(OsStr::from_bytes(b"caf\xe9.jpg"));
    std::fs::write(&not_utf8, a_photo()).unwrap();
    std::fs::write(banana.join("huge.jpg"), jpeg_claiming(12_000, 12_000)).unwrap();
    std::fs::File::create(banana.join("three-gib.jpg"))
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    // Photos with names the CSV must quote, and a "motion photo": all used.
    std::fs::write(banana.join("with, comma.jpg"), a_photo()).unwrap();
    std::fs::write(banana.join("with \"quotes\".jpg"), a_photo()).unwrap();
    let mut motion = a_photo();
    motion.extend(std::iter::repeat_n(7u8, 2_000_000));
    std::fs::write(banana.join("motion.jpg"), motion).unwrap();

    let output = dir.path().join("out");
    let model = tiny_model(dir.path(), &[-1, 3, -1, -1]);
    let result = run_within(
        &mut pipeline(&model, &input, &output, &[]),
        Duration::from_secs(120),
    );
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));

    let errors = read_csv(&output.join("errors.csv"));
    let reasons: std::collections::BTreeMap<String, String> = errors[1..]
        .iter()
        .map(|row| (row[0].clone(), row[1].clone()))
        .collect();
    let expected: BTreeSet<String> = [
        at("pipe.jpg"),
        at("loop"),
        at("dangling.jpg"),
        at("line\nbreak.jpg"),
        not_utf8.to_string_lossy().into_owned(),
        at("huge.jpg"),
        at("three-gib.jpg"),
    ]
    .into();
    assert_eq!(reasons.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (name, reason) in [
        ("pipe.jpg", "FIFO"),
        ("loop", "symbolic link loop"),
        ("dangling.jpg", "target does not exist"),
        ("line\nbreak.jpg", "line break"),
        ("huge.jpg", "--max-pixels"),
        ("three-gib.jpg", "--max-photo-bytes"),
    ] {
        assert!(reasons[&at(name)].contains(reason), "{name}: {reasons:?}");
    }

    let rows = read_csv(&output.join("features_pca.csv"));
    let paths = column(&rows, 0);
    for name in ["with, comma.jpg", "with \"quotes\".jpg", "motion.jpg"] {
        assert!(paths.contains(&at(name)), "{name} missing from the CSV");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["images_skipped"], expected.len());
    assert_eq!(summary["images_used"], rows.len() - 1);
    assert_eq!(
        summary["images_seen"],
        summary["images_used"].as_u64().unwrap() + expected.len() as u64
    );
    assert!(
        paths
            .iter()
            .all(|path| path.starts_with(input.to_str().unwrap()))
    );
}

fn phase(args: &[&str], model: &Path) -> Output {
    let mut command = fruitpipe();
    command.args(args);
    if args[0] == "extract" {
        command.arg("--model").arg(model).args(["--size", "16"]);
    }
    run(&mut command)
}

#[test]
fn shards_of_an_earlier_plan_are_never_merged_into_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES, 4);
    let model = tiny_model(dir.path(), &[-1, 3, -1, -1]);
    let work = dir.path().join("work");
    let (input, work) = (input.to_str().unwrap(), work.to_str().unwrap());
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();

    let plan = |size: &str| {
        let result = phase(
            &[
                "plan",
                "--input",
                input,
                "--work",
                work,
                "--shard-size",
                size,
            ],
            &model,
        );
        assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    };
    let extract = |index: &str| {
        let result = phase(&["extract", "--work", work, "--index", index], &model);
        assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    };
    plan("8");
    for index in ["0", "1", "2"] {
        extract(index);
    }
    // Planned again with another shard size; only shard 0 is extracted again.
    plan("12");
    extract("0");
    let fit = phase(
        &["fit", "--work", work, "--output", out, "--components", "2"],
        &model,
    );
    assert_eq!(fit.status.code(), Some(2), "{}", stderr(&fit));
    let message = stderr(&fit);
    assert!(message.contains("belongs to another plan"), "{message}");
    assert!(message.contains("--index 1"), "{message}");
    assert!(!Path::new(out).join("features_pca.csv").exists());

    extract("1");
    let images = copy_count(input);
    let fit = phase(
        &["fit", "--work", work, "--output", out, "--components", "2"],
        &model,
    );
    assert_eq!(fit.status.code(), Some(0), "{}", stderr(&fit));
    for index in 0..images.div_ceil(12) {
        let index = index.to_string();
        let project = phase(&["project", "--work", work, "--index", &index], &model);
        assert_eq!(project.status.code(), Some(0), "{}", stderr(&project));
    }
    let assemble = phase(&["assemble", "--work", work, "--output", out], &model);
    assert_eq!(assemble.status.code(), Some(0), "{}", stderr(&assemble));
    let rows = read_csv(&Path::new(out).join("features_pca.csv"));
    assert_eq!(rows.len() - 1, images, "one row per photo, no duplicates");
    assert_eq!(column(&rows, 0).len(), images);
}

#[test]
fn a_fit_that_fails_leaves_no_summary_of_an_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES, 2);
    let model = tiny_model(dir.path(), &[-1, 3, -1, -1]);
    let output = dir.path().join("out");
    let first = run(&mut pipeline(&model, &input, &output, &[]));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(output.join("summary.json").exists());

    // The same output, now with one usable photo: the fit fails.
    let lonely = dir.path().join("lonely");
    copy_sample(&lonely, &["Kiwi"], 1);
    std::fs::remove_dir_all(lonely.join("Test")).unwrap();
    let second = run(&mut pipeline(&model, &lonely, &output, &[]));
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert!(
        !output.join("summary.json").exists(),
        "a summary.json of the earlier run still says the output is complete"
    );
}

#[test]
fn outputs_have_one_mode_and_no_temporary_file_is_left_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES, 2);
    let model = tiny_model(dir.path(), &[-1, 3, -1, -1]);
    let output = dir.path().join("out");
    let temporary = dir.path().join("tmp");
    std::fs::create_dir(&temporary).unwrap();
    let result = run(pipeline(&model, &input, &output, &[]).env("TMPDIR", &temporary));
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(std::fs::read_dir(&temporary).unwrap().count(), 0);

    let mode = |name: &str| {
        std::fs::metadata(output.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    for name in ["features_pca.csv", "pca_model.json", "errors.csv"] {
        assert_eq!(mode(name), mode("summary.json"), "{name}");
    }
    let hidden: Vec<_> = std::fs::read_dir(&output)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn a_model_with_a_fixed_batch_gets_batches_of_that_size() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES, 3);
    let dynamic = tiny_model(dir.path(), &[-1, 3, 16, 16]);
    let fixed = tiny_model(dir.path(), &[1, 3, 16, 16]);
    let reference = dir.path().join("dynamic");
    let result = run(&mut pipeline(
        &dynamic,
        &input,
        &reference,
        &["--batch", "8"],
    ));
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let output = dir.path().join("fixed");
    let result = run(&mut pipeline(&fixed, &input, &output, &["--batch", "8"]));
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(
        std::fs::read(output.join("features_pca.csv")).unwrap(),
        std::fs::read(reference.join("features_pca.csv")).unwrap()
    );
}

#[test]
fn a_model_that_returns_fewer_rows_than_photos_is_refused_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES, 3);
    let model = dir.path().join("batch_mean.onnx");
    std::fs::write(&model, batch_mean_onnx(16, 16)).unwrap();
    let output = dir.path().join("out");
    let result = run(&mut pipeline(&model, &input, &output, &["--batch", "4"]));
    assert_eq!(result.status.code(), Some(2), "{}", stderr(&result));
    let message = stderr(&result);
    assert!(message.contains("for a batch of 4 photos"), "{message}");
    assert!(!output.join("features_pca.csv").exists());
}

#[test]
fn the_inference_batch_does_not_change_a_bit_of_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(
        &input,
        &["Banana", "Kiwi", "Lemon", "Cocos", "Grape White"],
        10,
    );
    let model = support::features_model();
    let csv = |batch: &str| {
        let output = dir.path().join(format!("batch-{batch}"));
        let mut command = fruitpipe();
        command
            .args(["run", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .arg("--model")
            .arg(&model)
            .args(["--size", "32", "--components", "20", "--batch", batch]);
        let result = run(&mut command);
        assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
        std::fs::read(output.join("features_pca.csv")).unwrap()
    };
    let reference = csv("32");
    for batch in ["1", "7", "100"] {
        assert!(csv(batch) == reference, "--batch {batch} changed the CSV");
    }
}
