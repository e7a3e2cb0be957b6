//! `--format csv,parquet`: the Parquet dataset beside the CSV, read back by the parquet
//! crate and by the Python readers people use (pyarrow and pandas, in the virtual
//! environment scripts/setup.sh makes; READERS_VENV names another). Without them the Python
//! half fails in CI (CI is set) and says it did not run elsewhere.

mod support;

use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use support::{copy_sample, read_csv, run, stderr};

const CLASSES: [&str; 4] = ["Banana", "Lemon", "Kiwi", "Cocos"];

fn pipeline(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    run(support::pipeline(input, output)
        .args(["--components", "12"])
        .args(extra))
}

fn parts(output: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(output.join("features_pca.parquet")) else {
        return Vec::new();
    };
    let mut parts: Vec<PathBuf> = entries.map(|entry| entry.unwrap().path()).collect();
    parts.sort();
    parts
}

fn summary(output: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(output.join("summary.json")).unwrap()).unwrap()
}

fn readers_python() -> Option<PathBuf> {
    let venv = std::env::var_os("READERS_VENV")
        .map_or_else(|| support::repo_root().join(".readers-venv"), PathBuf::from);
    let python = venv.join("bin/python");
    python.exists().then_some(python)
}

#[test]
fn parquet_parts_hold_the_csv_rows_and_say_how_they_were_made() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES, 4);
    let output = dir.path().join("out");
    let result = pipeline(
        &input,
        &output,
        &["--format", "csv,parquet", "--shard-size", "7"],
    );
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let shards = summary(&output)["shards"].as_u64().unwrap() as usize;
    assert!(shards > 1);
    let found = parts(&output);
    let names: Vec<String> = found
        .iter()
        .map(|part| part.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected: Vec<String> = (0..shards)
        .map(|shard| format!("part-{shard:05}.parquet"))
        .collect();
    assert_eq!(names, expected);
    assert_eq!(
        summary(&output)["outputs"]["parquet"],
        output
            .join("features_pca.parquet")
            .to_string_lossy()
            .as_ref()
    );

    // The parquet crate's own reader: rows, columns and metadata.
    let csv = read_csv(&output.join("features_pca.csv"));
    let mut rows = 0;
    for part in &found {
        let reader = SerializedFileReader::new(std::fs::File::open(part).unwrap()).unwrap();
        let meta = reader.metadata();
        rows += meta.file_metadata().num_rows();
        let schema = meta.file_metadata().schema_descr();
        let columns: Vec<String> = schema
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        assert_eq!(columns, csv[0]);
        let pairs: Vec<(String, Option<String>)> = meta
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        assert!(
            pairs.contains(&("fruitpipe.k".into(), Some("12".into()))),
            "{pairs:?}"
        );
        assert!(
            pairs.contains(&("fruitpipe.whiten".into(), Some("true".into()))),
            "{pairs:?}"
        );
    }
    assert_eq!(rows as usize, csv.len() - 1);

    // pandas and pyarrow, as a data scientist reads it.
    let Some(python) = readers_python() else {
        let message = "pyarrow and pandas are needed for the reader half of this test: run \
                       scripts/setup.sh (it makes .readers-venv) or set READERS_VENV";
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("NOT RUN: {message}");
        return;
    };
    let checked = run(std::process::Command::new(python)
        .arg(support::repo_root().join("job-runner/tests/readers/check_parquet.py"))
        .arg(&output)
        .arg(shards.to_string()));
    assert_eq!(
        checked.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        stderr(&checked)
    );
    eprintln!("{}", String::from_utf8_lossy(&checked.stdout));
}

#[test]
fn a_rerun_leaves_no_part_of_the_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    copy_sample(&input, &CLASSES, 4);
    let output = dir.path().join("out");
    let first = pipeline(
        &input,
        &output,
        &["--format", "csv,parquet", "--shard-size", "5"],
    );
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let before = parts(&output).len();
    // Fewer shards: the parts past them go.
    let second = pipeline(
        &input,
        &output,
        &["--format", "parquet,csv", "--shard-size", "100"],
    );
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(before > 1);
    assert_eq!(parts(&output).len(), 1);
    // No Parquet asked for: none stays.
    let third = pipeline(&input, &output, &[]);
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    assert_eq!(parts(&output).len(), 0);
    assert!(summary(&output)["outputs"].get("parquet").is_none());
}

#[test]
fn parquet_without_the_csv_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let result = pipeline(
        dir.path(),
        &dir.path().join("out"),
        &["--format", "parquet"],
    );
    assert_eq!(result.status.code(), Some(2));
    assert!(
        stderr(&result).contains("--format must include csv"),
        "{}",
        stderr(&result)
    );
    let result = pipeline(
        dir.path(),
        &dir.path().join("out"),
        &["--format", "csv,orc"],
    );
    assert_eq!(result.status.code(), Some(2));
    assert!(stderr(&result).contains("orc"), "{}", stderr(&result));
}
