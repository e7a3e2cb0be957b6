//! `fruitpipe-operator render`: the Jobs for any FruitPipeline, checked against the API
//! server's rules, for names of every length the CRD accepts.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::defaults;
use fruitpipe_operator::conformance;
use fruitpipe_operator::render::{jobs_for, parse_pipeline, render_yaml};
use k8s_openapi::api::batch::v1::Job;

fn example_pipeline() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/fruitpipeline.yaml"
    ))
    .unwrap();
    text.split("\n---\n").nth(1).unwrap().to_string()
}

/// A name of `length` characters, as legal as a FruitPipeline name may be: a DNS-1123
/// subdomain, with dots wherever they are allowed.
fn name_of_length(length: usize) -> String {
    let mut name: String = (0..length)
        .map(|i| {
            if i % 7 == 6 {
                '.'
            } else {
                char::from(b'a' + (i % 26) as u8)
            }
        })
        .collect();
    if name.ends_with('.') {
        name.pop();
        name.push('z');
    }
    name
}

#[test]
fn every_name_length_the_crd_accepts_gives_jobs_the_api_server_accepts() {
    let example = example_pipeline();
    for length in 1..=253 {
        let name = name_of_length(length);
        assert!(
            conformance::is_dns1123_subdomain(&name).is_empty(),
            "{name}"
        );
        let yaml = example.replace("name: fruits-360", &format!("name: {name}"));
        let pipeline = parse_pipeline(&yaml, "fruit").unwrap();
        for shards in [1, 9, 99_999, 100_000] {
            let jobs = jobs_for(&pipeline, shards, &defaults()).unwrap_or_else(|err| {
                panic!("name of {length} characters, {shards} shards: {err}")
            });
            assert_eq!(jobs.len(), 5);
            for job in &jobs {
                let violations = conformance::check_job(job);
                assert!(violations.is_empty(), "{name}: {violations:?}");
            }
        }
    }
}

#[test]
fn the_jobs_of_the_example_match_their_snapshot() {
    let rendered = render_yaml(&example_pipeline(), "fruit", 9, &defaults()).unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/snapshots/render-example.yaml"
    );
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == rendered,
        "render's output changed; if intended, run with UPDATE_SNAPSHOTS=1 and commit {path}\n{rendered}"
    );
    let documents: Vec<&str> = rendered.split("\n---\n").skip(1).collect();
    assert_eq!(documents.len(), 5);
    for document in documents {
        let job: Job = serde_saphyr::from_str(document).unwrap();
        assert!(conformance::check_job(&job).is_empty());
    }
}

#[test]
fn render_refuses_what_the_api_server_would_refuse() {
    let example = example_pipeline();
    let error = jobs_for(
        &parse_pipeline(&example, "fruit").unwrap(),
        100_001,
        &defaults(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("--shards"), "{error}");
    let bad_env = defaults();
    let mut pipeline = parse_pipeline(&example, "fruit").unwrap();
    pipeline.spec.runner.resources = Some(
        serde_json::from_value(serde_json::json!({
            "requests": { "memory": "2Gi" }, "limits": { "memory": "1Gi" }
        }))
        .unwrap(),
    );
    let error = jobs_for(&pipeline, 3, &bad_env).unwrap_err().to_string();
    assert!(
        error.contains("would refuse Job") && error.contains("memory"),
        "{error}"
    );
    let error = parse_pipeline(
        &example.replace("name: fruits-360", "name: Fruits_360"),
        "fruit",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("metadata.name"), "{error}");
}

fn operator_binary() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_fruitpipe-operator"))
}

#[test]
fn the_render_command_reads_stdin_and_takes_installation_defaults_from_the_environment() {
    let mut child = Command::new(operator_binary())
        .args([
            "render",
            "--file",
            "-",
            "--shards",
            "4",
            "--namespace",
            "fruit",
        ])
        .env("FRUITPIPE_RUNNER_IMAGE", "registry.example/fruitpipe:9.9")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(example_pipeline().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        text.matches("\n---\n").count() + usize::from(text.starts_with("---\n")),
        5
    );
    assert!(text.contains("image: registry.example/fruitpipe:9.9"));
    assert!(text.contains("completions: 4"));

    let output = Command::new(operator_binary())
        .args(["render", "--file", "/nonexistent.yaml", "--shards", "4"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read /nonexistent.yaml"));
}
