//! The Jobs a FruitPipeline runs: names, work area and pod templates.
//!
//! Everything the runner needs goes in as flags and environment; results come back as the
//! JSON the runner writes to its termination message. The operator never touches S3.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, SeccompProfile, SecretKeySelector, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::api::{FruitPipeline, Preset, S3Spec};

/// Name of the runner container in every pod; podFailurePolicy refers to it.
pub const CONTAINER: &str = "fruitpipe";
/// Where the runner writes its JSON result, read back from the pod status.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Exit code for input or configuration a retry cannot fix (the runner's contract).
pub const EXIT_PERMANENT: i32 = 2;

/// The pipeline's full name (a label value cannot hold names over 63 characters or dots
/// at every position, so Jobs carry the bounded run id as a label and the name here).
pub const ANNOTATION_PIPELINE: &str = "fruitpipe.dev/pipeline";
pub const LABEL_STAGE: &str = "fruitpipe.dev/stage";
pub const LABEL_RUN: &str = "fruitpipe.dev/run";
/// Set by the Job controller on every pod it creates: the Job's name, and the Job's UID
/// (which tells a pod of this Job from a pod of a deleted Job of the same name).
pub const LABEL_JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const LABEL_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// Set by the Job controller on pods of Indexed Jobs.
pub const ANNOTATION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The most shards a run may have: the API server's soft limit on `completions` of an
/// Indexed Job with `backoffLimitPerIndex` (pkg/apis/batch/validation,
/// `completionsSoftLimit`), beyond which it caps parallelism at 10,000. More shards
/// means a larger `spec.shardSize`.
pub const MAX_SHARDS: u32 = 100_000;
/// Pod hostnames of an Indexed Job are `<job name>-<index>` and must be DNS-1123 labels
/// (63 characters): the Job name leaves room for the longest index.
const MAX_JOB_NAME: usize = 63 - "-99999".len();
/// The longest stage suffix of an Indexed Job's name ("-project" is as long); the
/// assemble Job is not Indexed, so its name only has to be a label value (63).
const LONGEST_STAGE: usize = "-extract".len();
/// Hex digits of the UID hash in a run id.
const RUN_HASH_DIGITS: usize = 10;

pub use crate::api::Stage;

/// Settings that come from the operator's installation rather than the resource.
#[derive(Clone, Debug, PartialEq)]
pub struct RunnerDefaults {
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub service_account: Option<String>,
    /// S3 settings for the fields a pipeline leaves empty (e.g. the cluster's MinIO).
    pub s3: S3Spec,
}

/// The pipeline's S3 settings, each empty field taken from the installation's defaults.
/// `pathStyle` is on when either turns it on.
pub fn s3_settings(spec: &S3Spec, defaults: &S3Spec) -> S3Spec {
    let given = |value: &Option<String>| value.clone().filter(|value| !value.is_empty());
    S3Spec {
        endpoint: given(&spec.endpoint).or_else(|| given(&defaults.endpoint)),
        region: given(&spec.region).or_else(|| given(&defaults.region)),
        path_style: spec.path_style || defaults.path_style,
        credentials_secret: given(&spec.credentials_secret)
            .or_else(|| given(&defaults.credentials_secret)),
    }
}

/// What a Job needs beyond the resource: the run it belongs to, and the shard count
/// (extract and project only).
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub id: String,
    pub shards: u32,
}

/// `<name>-<hash of the UID>`: a DNS-1123 label of at most 49 characters, so that every
/// Job name and pod hostname derived from it is valid whatever the pipeline's name (up to
/// 253 characters, dots allowed). The readable part is the name with dots turned into
/// dashes, cut to fit; the UID makes it unique to this object, so a pipeline deleted and
/// created again under the same name gets new Jobs and a new work area.
pub fn run_id(name: &str, uid: &str) -> String {
    let budget = MAX_JOB_NAME - LONGEST_STAGE - 1 - RUN_HASH_DIGITS;
    let readable: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(budget)
        .collect();
    let readable = readable.trim_matches('-');
    let hash = format!("{:016x}", fnv1a64(uid.as_bytes()));
    let hash = &hash[..RUN_HASH_DIGITS];
    if readable.is_empty() {
        format!("fp-{hash}")
    } else {
        format!("{readable}-{hash}")
    }
}

/// The run id of a pipeline, as the API server hands it over (with a UID).
pub fn pipeline_run_id(pipeline: &FruitPipeline) -> String {
    run_id(
        pipeline.metadata.name.as_deref().unwrap_or_default(),
        pipeline.metadata.uid.as_deref().unwrap_or_default(),
    )
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub fn job_name(run: &str, stage: Stage) -> String {
    format!("{run}-{}", stage.as_str())
}

/// The run's work area under the output prefix.
pub fn work_uri(pipeline: &FruitPipeline, run: &str) -> String {
    format!(
        "{}/_work/{run}",
        pipeline.spec.output.uri.trim_end_matches('/')
    )
}

fn preset_flag(preset: Preset) -> &'static str {
    match preset {
        Preset::Lite => "lite",
        Preset::Torch => "torch",
        Preset::Tf => "tf",
        Preset::Caffe => "caffe",
    }
}

/// The runner's command line for one stage.
pub fn runner_args(pipeline: &FruitPipeline, run: &Run, stage: Stage) -> Vec<String> {
    let spec = &pipeline.spec;
    let work = work_uri(pipeline, &run.id);
    let mut args: Vec<String> = vec![stage.as_str().into(), "--work".into(), work];
    match stage {
        Stage::Plan => {
            args.extend(["--input".into(), spec.input.clone()]);
            args.extend(["--shard-size".into(), spec.shard_size.to_string()]);
            if !spec.include.is_empty() {
                args.extend(["--include".into(), spec.include.clone()]);
            }
        }
        Stage::Extract => {
            args.extend(["--model".into(), spec.model.uri.clone()]);
            args.extend(["--preset".into(), preset_flag(spec.model.preset).into()]);
            if let Some(size) = spec.model.size {
                args.extend(["--size".into(), size.to_string()]);
            }
            if let Some(threads) = spec.runner.threads {
                args.extend(["--threads".into(), threads.to_string()]);
            }
        }
        Stage::Project => {}
        Stage::Assemble => {
            args.extend(["--output".into(), spec.output.uri.clone()]);
        }
        Stage::Fit => {
            args.extend(["--output".into(), spec.output.uri.clone()]);
            args.extend(["--format".into(), spec.output.format_flag()]);
            match (spec.pca.components, spec.pca.variance) {
                (Some(k), _) => args.extend(["--components".into(), k.to_string()]),
                (None, Some(variance)) => args.extend(["--variance".into(), variance.to_string()]),
                (None, None) => {}
            }
            if spec.pca.standardize {
                args.push("--standardize".into());
            }
            if !spec.pca.whiten {
                args.push("--no-whiten".into());
            }
        }
    }
    args.extend(["--summary-file".into(), TERMINATION_LOG.into()]);
    args
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn secret_env(name: &str, secret: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: name.into(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Environment of the runner: S3 settings, and credentials only by reference.
pub fn runner_env(pipeline: &FruitPipeline, defaults: &RunnerDefaults) -> Vec<EnvVar> {
    let s3 = s3_settings(&pipeline.spec.s3, &defaults.s3);
    let mut vars = vec![
        env("TMPDIR", "/tmp"),
        env("FRUITPIPE_LOG_FORMAT", "json"),
        env("RUST_LOG", "info"),
    ];
    if let Some(endpoint) = s3.endpoint.as_deref() {
        vars.push(env("AWS_ENDPOINT_URL", endpoint));
    }
    if let Some(region) = s3.region.as_deref() {
        vars.push(env("AWS_REGION", region));
    }
    if s3.path_style {
        vars.push(env("FRUITPIPE_S3_PATH_STYLE", "true"));
    }
    if let Some(secret) = s3.credentials_secret.as_deref() {
        vars.push(secret_env("AWS_ACCESS_KEY_ID", secret, false));
        vars.push(secret_env("AWS_SECRET_ACCESS_KEY", secret, false));
        vars.push(secret_env("AWS_SESSION_TOKEN", secret, true));
    }
    vars
}

/// Labels of a stage's Job and pods: bounded, valid values only (the run id, not the
/// pipeline's name).
pub fn labels(run: &str, stage: Stage) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "fruitpipe".into()),
        ("app.kubernetes.io/component".into(), stage.as_str().into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "fruitpipe-operator".into(),
        ),
        (LABEL_RUN.into(), run.into()),
        (LABEL_STAGE.into(), stage.as_str().into()),
    ])
}

/// Exit code 2 fails the Job at once (a retry cannot help); a pod evicted or preempted
/// (spot node reclaimed, drain) does not use up a retry.
fn failure_policy() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(CONTAINER.into()),
                    operator: "In".into(),
                    values: vec![EXIT_PERMANENT],
                }),
                ..Default::default()
            },
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
                ..Default::default()
            },
        ],
    }
}

fn annotations(pipeline: &FruitPipeline) -> BTreeMap<String, String> {
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    BTreeMap::from([(ANNOTATION_PIPELINE.into(), name)])
}

fn pod_template(
    pipeline: &FruitPipeline,
    run: &Run,
    stage: Stage,
    defaults: &RunnerDefaults,
) -> PodTemplateSpec {
    let runner = &pipeline.spec.runner;
    let image = runner
        .image
        .clone()
        .unwrap_or_else(|| defaults.image.clone());
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image),
        image_pull_policy: runner
            .image_pull_policy
            .clone()
            .or_else(|| defaults.image_pull_policy.clone()),
        args: Some(runner_args(pipeline, run, stage)),
        env: Some(runner_env(pipeline, defaults)),
        resources: runner.resources.clone(),
        termination_message_path: Some(TERMINATION_LOG.into()),
        // A crash before the runner writes its result still leaves the log's tail.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(&run.id, stage)),
            annotations: Some(annotations(pipeline)),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            service_account_name: runner
                .service_account_name
                .clone()
                .or_else(|| defaults.service_account.clone()),
            node_selector: runner.node_selector.clone(),
            tolerations: runner.tolerations.clone(),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                fs_group: Some(65532),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            volumes: Some(vec![Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: runner.tmp_size_limit.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// The Job for one stage of a run, owned by the pipeline (deleting the pipeline deletes
/// its Jobs and their pods).
pub fn render(pipeline: &FruitPipeline, run: &Run, stage: Stage, defaults: &RunnerDefaults) -> Job {
    let spec = &pipeline.spec;
    let retries = spec.retries as i32;
    let mut job_spec = JobSpec {
        template: pod_template(pipeline, run, stage, defaults),
        pod_failure_policy: Some(failure_policy()),
        // Every stage honours `suspend`: a Job created while the pipeline is suspended
        // starts no pod until resumed.
        suspend: Some(spec.suspend),
        active_deadline_seconds: spec.runner.active_deadline_seconds,
        ..Default::default()
    };
    match stage {
        Stage::Extract | Stage::Project => {
            let shards = run.shards.max(1) as i32;
            job_spec.completion_mode = Some("Indexed".into());
            job_spec.completions = Some(shards);
            job_spec.parallelism = Some(extract_parallelism(pipeline, run.shards));
            job_spec.backoff_limit_per_index = Some(retries);
            // One shard out of retries dooms the result: stop at once.
            job_spec.max_failed_indexes = Some(0);
        }
        Stage::Plan | Stage::Fit | Stage::Assemble => {
            job_spec.backoff_limit = Some(retries);
        }
    }
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&run.id, stage)),
            namespace: pipeline.metadata.namespace.clone(),
            labels: Some(labels(&run.id, stage)),
            annotations: Some(annotations(pipeline)),
            owner_references: pipeline.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..Default::default()
        },
        spec: Some(job_spec),
        ..Default::default()
    }
}

/// Extract (and project) pods at once: what the spec asks, never more than there are shards.
pub fn extract_parallelism(pipeline: &FruitPipeline, shards: u32) -> i32 {
    pipeline.spec.parallelism.min(shards.max(1)) as i32
}
