//! The `FruitPipeline` custom resource (`fruitpipe.dev/v1alpha1`).
//!
//! What the API server can check is in the schema (ranges, enums, required fields, CEL
//! rules); what only the operator can check becomes a `Failed` phase with a condition.
//!
//! Changing a running pipeline: the fields that define the result (input, output and its
//! formats,
//! include, model, pca, s3, shardSize) are immutable, so a FruitPipeline always describes
//! the run it reports; create a new one to change them (a new object gets a new UID, hence
//! new Job names and a new work area). `parallelism` and `suspend` may change at any time:
//! `parallelism` applies to the running extract Job, `suspend` to whichever stage runs.
//! `retries` and `runner` apply to the Jobs not yet created.

// Several printer columns share `type_ = "integer"`, which this lint mistakes for a repeat.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "fruitpipe.dev";
pub const VERSION: &str = "v1alpha1";

#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fruitpipe.dev",
    version = "v1alpha1",
    kind = "FruitPipeline",
    namespaced,
    status = "FruitPipelineStatus",
    shortname = "fp",
    category = "fruitpipe",
    derive = "PartialEq",
    doc = "A run of the fruitpipe pipeline: photos in S3 -> CNN features -> PCA -> CSV in S3",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Done",
        type_ = "integer",
        json_path = ".status.shards.succeeded",
        description = "shards extracted"
    ),
    printcolumn(name = "Shards", type_ = "integer", json_path = ".status.shards.total"),
    printcolumn(
        name = "Images",
        type_ = "integer",
        json_path = ".status.images.processed"
    ),
    printcolumn(name = "K", type_ = "integer", json_path = ".status.k"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FruitPipelineSpec {
    /// Photos: an s3:// prefix, searched recursively; a photo's label is its folder name.
    #[x_kube(validation = Rule::new("self.startsWith('s3://') && size(self) > 5").message("must be an s3://bucket/prefix URI"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("is immutable; create a new FruitPipeline to change it"))]
    #[schemars(length(max = 2048))]
    pub input: String,

    /// Where the results go, and in which formats.
    #[x_kube(validation = Rule::new("self == oldSelf").message("is immutable; create a new FruitPipeline to change it"))]
    pub output: OutputSpec,

    /// Only photos whose path under `input` matches this glob (e.g. `Training/**`); empty
    /// means every photo.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("is immutable; create a new FruitPipeline to change it"))]
    pub include: String,

    /// The feature model.
    #[x_kube(validation = Rule::new("self == oldSelf").message("is immutable; create a new FruitPipeline to change it"))]
    pub model: ModelSpec,

    /// Photos per shard; each shard is one pod of the extract Job.
    #[serde(default = "default_shard_size")]
    #[schemars(range(min = 1, max = 1000000))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("is immutable; create a new FruitPipeline to change it"))]
    pub shard_size: u32,

    /// Extract (and project) pods running at once. May change while running.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 1000))]
    pub parallelism: u32,

    /// Retries per shard (and for plan, fit and assemble) before the pipeline fails.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub retries: u32,

    /// How many principal components to keep.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("is immutable; create a new FruitPipeline to change it"))]
    pub pca: PcaSpec,

    /// How to reach S3; empty for AWS with the pod's cloud identity (e.g. IRSA on EKS).
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("is immutable; create a new FruitPipeline to change it"))]
    pub s3: S3Spec,

    /// Pods of the pipeline: image, resources, placement.
    #[serde(default)]
    pub runner: RunnerSpec,

    /// Pause the pipeline: no new pods start, and the running stage's pods are stopped (plan
    /// and fit start again on resume, extract redoes only its unfinished shards). May change
    /// while running.
    #[serde(default)]
    pub suspend: bool,
}

/// Where the results go: `features_pca.csv`, `pca_model.json`, `summary.json`,
/// `errors.csv`, `report.html`, `scree.png`, `pc_scatter.png`, and with `parquet`
/// the dataset `features_pca.parquet/` (one part per shard).
///
/// Objects written before this was an object hold `output` as a plain URI string; they
/// still read (see [`OutputSpec`]'s `Deserialize`), new ones must use the object.
#[derive(KubeSchema, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// An s3:// prefix.
    #[x_kube(validation = Rule::new("self.startsWith('s3://') && size(self) > 5").message("must be an s3://bucket/prefix URI"))]
    #[schemars(length(max = 2048))]
    pub uri: String,

    /// Formats of the principal components: `csv` (always written: identify and serve read
    /// it) and optionally `parquet`.
    #[serde(default = "default_formats")]
    #[schemars(length(min = 1, max = 2), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("'csv' in self").message("must include csv: `fruitpipe identify` and `serve` read features_pca.csv"))]
    pub formats: Vec<OutputFormat>,
}

impl OutputSpec {
    pub fn parquet(&self) -> bool {
        self.formats.contains(&OutputFormat::Parquet)
    }

    /// The runner's `--format` value.
    pub fn format_flag(&self) -> String {
        let mut names: Vec<&str> = self.formats.iter().map(|format| format.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.join(",")
    }
}

/// `output` as stored: the object, or the URI alone (FruitPipelines created before
/// `formats` existed), which means CSV only.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredOutput {
    Uri(String),
    #[serde(rename_all = "camelCase")]
    Spec {
        uri: String,
        #[serde(default = "default_formats")]
        formats: Vec<OutputFormat>,
    },
}

impl<'de> Deserialize<'de> for OutputSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match StoredOutput::deserialize(deserializer)? {
            StoredOutput::Uri(uri) => OutputSpec {
                uri,
                formats: default_formats(),
            },
            StoredOutput::Spec { uri, formats } => OutputSpec { uri, formats },
        })
    }
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Csv,
    Parquet,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Csv => "csv",
            OutputFormat::Parquet => "parquet",
        }
    }
}

fn default_formats() -> Vec<OutputFormat> {
    vec![OutputFormat::Csv]
}

impl Outputs {
    /// The URIs a run into `output` writes: the runner's file names (job-runner's
    /// `output.rs`), for a termination message that had no room for them.
    pub fn under(output: &OutputSpec) -> Outputs {
        let base = output.uri.trim_end_matches('/');
        let at = |name: &str| format!("{base}/{name}");
        Outputs {
            features: at("features_pca.csv"),
            model: at("pca_model.json"),
            summary: at("summary.json"),
            errors: at("errors.csv"),
            report: Some(at("report.html")),
            scree: Some(at("scree.png")),
            scatter: Some(at("pc_scatter.png")),
            parquet: output.parquet().then(|| at("features_pca.parquet")),
        }
    }
}

/// The ONNX model that turns a photo into a feature vector.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// An s3:// URI of an ONNX model, or a path inside the runner image.
    #[schemars(length(min = 1))]
    pub uri: String,

    /// Pixel preprocessing the model was trained with.
    #[serde(default)]
    pub preset: Preset,

    /// Input size in pixels; unset means the model's own, else 224.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16, max = 2048))]
    pub size: Option<u32>,
}

#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// (x - 127) / 128, EfficientNet-Lite.
    #[default]
    Lite,
    /// ImageNet mean and standard deviation, PyTorch.
    Torch,
    /// [-1, 1], Keras MobileNet and Inception.
    Tf,
    /// BGR, mean subtracted, Keras VGG and ResNet.
    Caffe,
}

/// How many principal components to keep: `components`, or the fewest reaching `variance`
/// (0.95 when neither is given).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.components) && has(self.variance))").message("give components or variance, not both"))]
pub struct PcaSpec {
    /// Keep exactly this many components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub components: Option<u32>,

    /// Keep the fewest components explaining this fraction of the variance, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("must be in (0, 1]"))]
    pub variance: Option<f64>,

    /// PCA on the correlation matrix (scale each feature to unit variance first).
    #[serde(default)]
    pub standardize: bool,

    /// Divide each component by the square root of its eigenvalue (whitening), so that
    /// photos compared by cosine weigh every component alike: more accurate nearest
    /// neighbours on Fruits-360. On unless set to false.
    #[serde(default = "default_whiten")]
    pub whiten: bool,
}

impl Default for PcaSpec {
    fn default() -> Self {
        PcaSpec {
            components: None,
            variance: None,
            standardize: false,
            whiten: default_whiten(),
        }
    }
}

fn default_whiten() -> bool {
    true
}

/// Connection to S3 or an S3-compatible store.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// Endpoint URL of an S3-compatible store (MinIO, Ceph); empty for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// Region; empty for the pod's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,

    /// Path-style addressing (ENDPOINT/BUCKET), which MinIO needs.
    #[serde(default)]
    pub path_style: bool,

    /// A Secret in this namespace with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    /// (and optionally AWS_SESSION_TOKEN). Empty: the pod's cloud identity (IRSA) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// Settings of the pipeline's pods.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunnerSpec {
    /// Runner image; empty for the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Always, IfNotPresent or Never; empty for the Kubernetes default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['Always', 'IfNotPresent', 'Never']").message("must be Always, IfNotPresent or Never"))]
    pub image_pull_policy: Option<String>,

    /// Inference threads per pod; empty for the pod's CPU count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub threads: Option<u32>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Service account of the pods (e.g. one annotated for IRSA); empty for the
    /// operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Seconds each stage's Job may run (counted again after a resume) before Kubernetes
    /// stops it and the pipeline fails; empty for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,

    /// Size limit of each pod's scratch space (`/tmp`, an emptyDir), e.g. `2Gi`; a pod over
    /// it is evicted. Empty for no limit beyond the node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmp_size_limit: Option<Quantity>,
}

fn default_shard_size() -> u32 {
    2000
}
fn default_parallelism() -> u32 {
    4
}
fn default_retries() -> u32 {
    3
}

/// The stages of a run, in order; each is one Job.
#[derive(
    JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Plan,
    Extract,
    Fit,
    Project,
    Assemble,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Plan,
        Stage::Extract,
        Stage::Fit,
        Stage::Project,
        Stage::Assemble,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Plan => "plan",
            Stage::Extract => "extract",
            Stage::Fit => "fit",
            Stage::Project => "project",
            Stage::Assemble => "assemble",
        }
    }

    pub fn from_label(label: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|stage| stage.as_str() == label)
    }

    /// Indexed Jobs, one pod per shard.
    pub fn is_per_shard(self) -> bool {
        matches!(self, Stage::Extract | Stage::Project)
    }
}

/// Where a pipeline is.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Pending,
    Planning,
    Extracting,
    Fitting,
    Projecting,
    Assembling,
    Succeeded,
    Failed,
    Suspended,
}

impl Phase {
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FruitPipelineStatus {
    #[serde(default)]
    pub phase: Phase,

    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Names the run's Jobs (label `fruitpipe.dev/run`) and its work area; derived from the
    /// resource's UID, so a re-created pipeline of the same name never shares them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,

    /// Stages that finished; never run again, even when their Job is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub completed_stages: Vec<Stage>,

    /// Planned, Extracted, Succeeded and Failed, as the Kubernetes API conventions describe;
    /// JobsCreated, PodsCreated and PodsStarted when something stands in the way.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    #[serde(default)]
    pub shards: ShardCounts,

    #[serde(default)]
    pub images: ImageCounts,

    /// Principal components kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u32>,

    /// Share of the variance the kept components explain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explained_variance: Option<f64>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ShardCounts {
    pub total: u32,
    /// Shards extracted.
    pub succeeded: u32,
    /// Shards whose extract or project pod ran out of retries.
    pub failed: u32,
    /// Shards projected (their part of features_pca.csv written).
    #[serde(default)]
    pub projected: u32,
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageCounts {
    /// Photos turned into features.
    pub processed: u64,
    /// Photos skipped (listed in errors.csv).
    pub skipped: u64,
}

/// URIs of the results.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    pub features: String,
    pub model: String,
    pub summary: String,
    pub errors: String,
    /// `report.html`: the run on one page, figures inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scree: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scatter: Option<String>,
    /// The Parquet dataset `features_pca.parquet/`, with `output.formats` holding parquet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<String>,
}
