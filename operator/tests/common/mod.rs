//! Builders shared by the operator tests.
#![allow(dead_code)]

use fruitpipe_operator::api::FruitPipeline;
use fruitpipe_operator::jobs::RunnerDefaults;

pub const NAMESPACE: &str = "fruit";
pub const UID: &str = "0d5c6e0a-4c1b-4f3e-9a43-1b9a6e1f0001";

/// The example pipeline, as the API server would hand it over: namespaced, with a uid and
/// a generation.
pub fn pipeline(spec: serde_json::Value) -> FruitPipeline {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "fruitpipe.dev/v1alpha1",
        "kind": "FruitPipeline",
        "metadata": {
            "name": "fruits-360",
            "namespace": NAMESPACE,
            "uid": UID,
            "generation": 1,
            "resourceVersion": "100",
        },
        "spec": spec,
    }))
    .expect("a valid FruitPipeline")
}

pub fn example_spec() -> serde_json::Value {
    serde_json::json!({
        "input": "s3://fruits/fruits360-sample",
        "output": { "uri": "s3://fruits/pca/fruits-360" },
        "model": { "uri": "s3://fruits/models/efficientnet_lite0_features.onnx", "size": 224 },
        "shardSize": 500,
        "parallelism": 4,
        "retries": 3,
        "pca": { "variance": 0.95 },
        "s3": {
            "endpoint": "http://minio.fruitpipe.svc:9000",
            "region": "us-east-1",
            "pathStyle": true,
            "credentialsSecret": "fruitpipe-s3"
        },
        "runner": { "resources": { "requests": { "cpu": "1", "memory": "1Gi" } } }
    })
}

pub fn defaults() -> RunnerDefaults {
    RunnerDefaults {
        image: "fruitpipe:test".into(),
        image_pull_policy: Some("IfNotPresent".into()),
        service_account: Some("fruitpipe-runner".into()),
        s3: Default::default(),
    }
}
