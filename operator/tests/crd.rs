//! The CRD and the example: what users apply must match what the code expects.

use fruitpipe_operator::api::{FruitPipeline, Preset};
use kube::CustomResourceExt;

fn repo_file(path: &str) -> String {
    let full = concat!(env!("CARGO_MANIFEST_DIR"), "/../").to_string() + path;
    std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("{full}: {err}"))
}

#[test]
fn the_committed_crd_matches_the_code() {
    let committed = repo_file("crds/fruitpipeline.yaml");
    assert!(
        committed == fruitpipe_operator::crd_yaml(),
        "crds/fruitpipeline.yaml is out of date: run `cargo run -p fruitpipe-operator --bin crdgen > crds/fruitpipeline.yaml`"
    );
}

#[test]
fn the_crd_has_what_kubectl_users_rely_on() {
    let crd = FruitPipeline::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("fruitpipelines.fruitpipe.dev")
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["fp".to_string()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|column| column.name.as_str())
        .collect();
    assert_eq!(columns, ["Phase", "Done", "Shards", "Images", "K", "Age"]);
}

#[test]
fn the_schema_is_structural() {
    // The API server refuses enums that list null and nested anyOf/oneOf with types.
    let yaml = repo_file("crds/fruitpipeline.yaml");
    for (number, line) in yaml.lines().enumerate() {
        assert!(
            !line.trim_start().starts_with("- null"),
            "line {}: enum lists null",
            number + 1
        );
        assert!(
            !line.contains("anyOf") && !line.contains("oneOf"),
            "line {}: {line}",
            number + 1
        );
    }
    let schema = serde_json::to_value(&FruitPipeline::crd().spec.versions[0].schema).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<_> = spec["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["input", "model", "output"]);
    assert_eq!(
        spec["properties"]["model"]["properties"]["preset"]["enum"],
        serde_json::json!(["lite", "torch", "tf", "caffe"])
    );
    assert_eq!(
        spec["properties"]["parallelism"]["minimum"].as_f64(),
        Some(1.0)
    );
    let rules =
        serde_json::to_string(&spec["properties"]["pca"]["x-kubernetes-validations"]).unwrap();
    assert!(
        rules.contains("components or variance, not both"),
        "{rules}"
    );
    for immutable in [
        "input",
        "output",
        "include",
        "model",
        "pca",
        "s3",
        "shardSize",
    ] {
        let rules =
            serde_json::to_string(&spec["properties"][immutable]["x-kubernetes-validations"])
                .unwrap();
        assert!(
            rules.contains("self == oldSelf"),
            "{immutable} is not immutable: {rules}"
        );
    }
    for mutable in ["parallelism", "suspend", "retries"] {
        assert!(
            spec["properties"][mutable]["x-kubernetes-validations"].is_null(),
            "{mutable} should stay mutable"
        );
    }
}

#[test]
fn the_example_is_a_valid_pipeline() {
    let text = repo_file("examples/fruitpipeline.yaml");
    let pipeline_doc = text
        .split("\n---\n")
        .nth(1)
        .expect("the example has a Secret and a FruitPipeline");
    let pipeline: FruitPipeline = serde_saphyr::from_str(pipeline_doc).unwrap();
    assert_eq!(pipeline.spec.input, "s3://fruits/fruits360-sample");
    assert_eq!(pipeline.spec.model.preset, Preset::Lite);
    assert_eq!(pipeline.spec.pca.variance, Some(0.95));
    assert_eq!(
        pipeline.spec.s3.credentials_secret.as_deref(),
        Some("fruitpipe-s3")
    );
    assert!(fruitpipe_operator::controller::validate(&pipeline).is_ok());
}

#[test]
fn a_minimal_pipeline_gets_the_documented_defaults() {
    let pipeline: FruitPipeline = serde_json::from_value(serde_json::json!({
        "apiVersion": "fruitpipe.dev/v1alpha1",
        "kind": "FruitPipeline",
        "metadata": { "name": "minimal" },
        "spec": { "input": "s3://b/in", "output": "s3://b/out", "model": { "uri": "s3://b/m.onnx" } }
    }))
    .unwrap();
    let spec = &pipeline.spec;
    assert_eq!(
        (spec.shard_size, spec.parallelism, spec.retries),
        (2000, 4, 3)
    );
    assert_eq!(
        (spec.pca.components, spec.pca.variance, spec.pca.standardize),
        (None, None, false)
    );
    assert_eq!(spec.model.preset, Preset::Lite);
    assert!(!spec.suspend && spec.include.is_empty() && spec.s3.credentials_secret.is_none());
}
