//! `fruitpipe identify` against the output of a real run on the shipped photos.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use fruitpipe_runner::identify::Engine;
use fruitpipe_runner::storage::{Location, Storage};
use support::{copy_sample, features_model, fruitpipe, logits_model, read_csv, run, stderr};

const CLASSES: [&str; 6] = ["Banana", "Lemon", "Kiwi", "Cocos", "Avocado", "Limes"];

/// One run on 4 Training and 2 Test photos of each class, made once per test binary.
fn pipeline_output() -> &'static Path {
    static OUTPUT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &OUTPUT
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let input = dir.path().join("in");
            copy_sample(&input, &CLASSES, 4);
            let output = dir.path().join("out");
            let result = run(fruitpipe()
                .args(["run", "--size", "100", "--components", "12", "--input"])
                .arg(&input)
                .arg("--output")
                .arg(&output)
                .arg("--model")
                .arg(features_model()));
            assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
            (dir, output)
        })
        .1
}

/// The first photo, by name, of a class of the run's input.
fn first_photo(split: &str, class: &str) -> String {
    let folder = pipeline_output().join("../in").join(split).join(class);
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    photos.sort();
    photos[0].to_string_lossy().into_owned()
}

fn identify(args: &[&str]) -> std::process::Command {
    let mut command = fruitpipe();
    command
        .arg("identify")
        .arg("--from")
        .arg(pipeline_output())
        .args(args);
    command
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn a_photo_of_the_index_projects_to_its_own_row() {
    let rows = read_csv(&pipeline_output().join("features_pca.csv"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let storage = Storage::local();
    let from = Location::Local(pipeline_output().to_path_buf());
    let engine = runtime
        .block_on(Engine::load(&storage, &from, None, 1))
        .unwrap();
    assert_eq!(engine.index.len(), rows.len() - 1);
    for row in rows[1..].iter().step_by(5) {
        let bytes = std::fs::read(&row[0]).unwrap();
        let components = engine.components(&row[0], &bytes).unwrap();
        for (c, (mine, theirs)) in components.iter().zip(&row[2..]).enumerate() {
            let theirs: f64 = theirs.parse().unwrap();
            assert!(
                (mine - theirs).abs() <= 1e-5 * theirs.abs().max(1.0),
                "{}: component {c} is {mine} here, {theirs} in features_pca.csv",
                row[0]
            );
        }
    }
}

#[test]
fn identify_names_the_fruit_with_its_nearest_photos() {
    let photos: Vec<String> = CLASSES
        .iter()
        .map(|class| first_photo("Test", class))
        .collect();
    let mut args = vec!["--json", "--top", "3"];
    args.extend(photos.iter().map(String::as_str));
    let result = run(&mut identify(&args));
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let answers = json_lines(&result.stdout);
    assert_eq!(answers.len(), CLASSES.len());
    for (answer, class) in answers.iter().zip(CLASSES) {
        // The photo is in the index: its nearest photo is itself.
        assert_eq!(answer["label"], class, "{answer}");
        let neighbours = answer["neighbours"].as_array().unwrap();
        assert_eq!(neighbours.len(), 3);
        assert!(
            neighbours[0]["path"].as_str().unwrap().ends_with(
                Path::new(answer["photo"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
            )
        );
        assert!(neighbours[0]["similarity"].as_f64().unwrap() > 0.9999);
        assert!(answer["score"].as_f64().unwrap() > 0.9999);
        let fruit = &answer["fruit"];
        assert!(
            fruit["common"]
                .as_str()
                .is_some_and(|common| !common.is_empty()),
            "{answer}"
        );
        assert!(
            fruit["botanical"].is_string() && fruit["about"].is_string(),
            "{answer}"
        );
    }

    // The text form, and a photo from standard input.
    let mut child = identify(&["-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&photos[2]).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("-: Kiwi (similarity 1.000"), "{text}");
    assert!(
        text.contains("Kiwifruit (Actinidia deliciosa, Actinidiaceae)"),
        "{text}"
    );
    assert_eq!(
        text.lines().count(),
        7,
        "the answer, the catalogue entry and 5 nearest photos: {text}"
    );
}

#[test]
fn unreadable_photos_get_a_line_each_and_exit_2_while_the_others_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "not a photo").unwrap();
    let good = first_photo("Training", "Lemon");
    let result = run(&mut identify(&[
        "--json",
        text.to_str().unwrap(),
        &good,
        "/nonexistent/photo.jpg",
    ]));
    assert_eq!(result.status.code(), Some(2));
    let answers = json_lines(&result.stdout);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0]["label"], "Lemon");
    let errors = stderr(&result);
    assert!(
        errors.contains("notes.jpg") && errors.contains("not a supported image"),
        "{errors}"
    );
    assert!(
        errors.contains("/nonexistent/photo.jpg does not exist"),
        "{errors}"
    );
    assert!(
        errors.contains("2 of 3 photos could not be identified"),
        "{errors}"
    );
}

#[test]
fn another_model_than_the_pipelines_is_refused_with_exit_2() {
    let photo = first_photo("Test", "Banana");
    let result = run(&mut identify(&[
        "--model",
        logits_model().to_str().unwrap(),
        &photo,
    ]));
    assert_eq!(result.status.code(), Some(2));
    assert!(
        stderr(&result).contains("is not the feature model the pipeline used"),
        "{}",
        stderr(&result)
    );
    // A copy of the right file elsewhere is fine.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.onnx");
    std::fs::copy(features_model(), &copy).unwrap();
    let result = run(&mut identify(&["--model", copy.to_str().unwrap(), &photo]));
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));

    let result = run(fruitpipe()
        .args(["identify", "--from", "/nonexistent/out"])
        .arg(&photo));
    assert_eq!(result.status.code(), Some(2));
    assert!(
        stderr(&result).contains("no pca_model.json"),
        "{}",
        stderr(&result)
    );
}

#[test]
fn catalogue_replaces_the_shipped_one_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = dir.path().join("fruits.toml");
    std::fs::write(
        &catalogue,
        "[\"Banana\"]\ncommon = \"Plantain\"\nbotanical = \"Musa\"\nfamily = \"Musaceae\"\nabout = \"Ours.\"\n",
    )
    .unwrap();
    let (banana, kiwi) = (
        first_photo("Training", "Banana"),
        first_photo("Training", "Kiwi"),
    );
    let result = run(&mut identify(&[
        "--json",
        "--catalogue",
        catalogue.to_str().unwrap(),
        &banana,
        &kiwi,
    ]));
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let answers = json_lines(&result.stdout);
    assert_eq!(answers[0]["fruit"]["common"], "Plantain");
    assert!(answers[1]["fruit"].is_null(), "{}", answers[1]);

    std::fs::write(&catalogue, "[\"Banana\"]\ncommon = 1\n").unwrap();
    let result = run(&mut identify(&[
        "--catalogue",
        catalogue.to_str().unwrap(),
        &banana,
    ]));
    assert_eq!(result.status.code(), Some(2));
    assert!(
        stderr(&result).contains("is not a fruit catalogue"),
        "{}",
        stderr(&result)
    );
}
