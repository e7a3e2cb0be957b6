//! The CRD and the example: what users apply must match what the code expects.

use fruitpipe_operator::api::{FruitPipeline, OutputFormat, Preset};
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
    let output = &spec["properties"]["output"];
    assert_eq!(output["required"], serde_json::json!(["uri"]));
    let formats = &output["properties"]["formats"];
    assert_eq!(
        formats["items"]["enum"],
        serde_json::json!(["csv", "parquet"])
    );
    assert_eq!(formats["x-kubernetes-list-type"], "set");
    assert_eq!(formats["default"], serde_json::json!(["csv"]));
    let format_rules = serde_json::to_string(&formats["x-kubernetes-validations"]).unwrap();
    assert!(format_rules.contains("'csv' in self"), "{format_rules}");
    let uri_rules =
        serde_json::to_string(&output["properties"]["uri"]["x-kubernetes-validations"]).unwrap();
    assert!(uri_rules.contains("startsWith('s3://')"), "{uri_rules}");
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
    assert_eq!(pipeline.spec.output.uri, "s3://fruits/pca/fruits-360");
    assert!(
        pipeline.spec.output.parquet(),
        "the example asks for Parquet"
    );
    assert_eq!(pipeline.spec.model.preset, Preset::Lite);
    assert_eq!(pipeline.spec.pca.variance, Some(0.95));
    assert_eq!(
        pipeline.spec.s3.credentials_secret.as_deref(),
        Some("fruitpipe-s3")
    );
    assert!(fruitpipe_operator::controller::validate(&pipeline).is_ok());
}

#[test]
fn a_pipeline_stored_with_output_as_a_uri_still_reads_as_csv_only() {
    // FruitPipelines created before `output.formats` existed hold the URI alone.
    let pipeline: FruitPipeline = serde_json::from_value(serde_json::json!({
        "apiVersion": "fruitpipe.dev/v1alpha1",
        "kind": "FruitPipeline",
        "metadata": { "name": "older" },
        "spec": { "input": "s3://b/in", "output": "s3://b/out", "model": { "uri": "s3://b/m.onnx" } }
    }))
    .unwrap();
    assert_eq!(pipeline.spec.output.uri, "s3://b/out");
    assert_eq!(pipeline.spec.output.formats, [OutputFormat::Csv]);
    assert!(fruitpipe_operator::controller::validate(&pipeline).is_ok());
    // Written back, it is the object the schema asks for.
    let written = serde_json::to_value(&pipeline.spec.output).unwrap();
    assert_eq!(
        written,
        serde_json::json!({ "uri": "s3://b/out", "formats": ["csv"] })
    );
}

#[test]
fn formats_without_csv_are_refused_by_the_operator_too() {
    let pipeline: FruitPipeline = serde_json::from_value(serde_json::json!({
        "apiVersion": "fruitpipe.dev/v1alpha1",
        "kind": "FruitPipeline",
        "metadata": { "name": "parquet-only" },
        "spec": { "input": "s3://b/in", "output": { "uri": "s3://b/out", "formats": ["parquet"] },
                  "model": { "uri": "s3://b/m.onnx" } }
    }))
    .unwrap();
    let refused = fruitpipe_operator::controller::validate(&pipeline).unwrap_err();
    assert!(refused.contains("must include csv"), "{refused}");
}

#[test]
fn a_minimal_pipeline_gets_the_documented_defaults() {
    let pipeline: FruitPipeline = serde_json::from_value(serde_json::json!({
        "apiVersion": "fruitpipe.dev/v1alpha1",
        "kind": "FruitPipeline",
        "metadata": { "name": "minimal" },
        "spec": { "input": "s3://b/in", "output": { "uri": "s3://b/out" }, "model": { "uri": "s3://b/m.onnx" } }
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
