//! `fruitpipe-operator render`: the Jobs the operator would create for a FruitPipeline,
//! without a cluster (like `helm template`), each checked against the API server's rules.

use crate::api::FruitPipeline;
use crate::conformance;
use crate::controller::validate;
use crate::jobs::{self, MAX_SHARDS, Run, RunnerDefaults, Stage};

/// Stands in for the UID the API server gives a new object, when the file has none.
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "cannot read the FruitPipeline: {0}; give one FruitPipeline as YAML (kubectl get fp NAME -o yaml works)"
    )]
    Parse(String),
    #[error("the FruitPipeline is not valid: {0}")]
    Invalid(String),
    #[error("--shards must be between 1 and {MAX_SHARDS}, not {0}")]
    Shards(u32),
    #[error("the API server would refuse Job {job}:\n  {violations}")]
    Refused { job: String, violations: String },
}

/// Parses one FruitPipeline, filling in what the API server would: a namespace and a UID.
pub fn parse_pipeline(yaml: &str, namespace: &str) -> Result<FruitPipeline, RenderError> {
    let mut pipeline: FruitPipeline =
        serde_saphyr::from_str(yaml).map_err(|err| RenderError::Parse(err.to_string()))?;
    if pipeline
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        return Err(RenderError::Invalid("metadata.name is missing".into()));
    }
    let name_errors =
        conformance::is_dns1123_subdomain(pipeline.metadata.name.as_deref().unwrap_or_default());
    if !name_errors.is_empty() {
        return Err(RenderError::Invalid(format!(
            "metadata.name: {}",
            name_errors.join("; ")
        )));
    }
    pipeline
        .metadata
        .namespace
        .get_or_insert_with(|| namespace.to_string());
    pipeline
        .metadata
        .uid
        .get_or_insert_with(|| PLACEHOLDER_UID.to_string());
    validate(&pipeline).map_err(RenderError::Invalid)?;
    Ok(pipeline)
}

/// Every Job of the run once plan has reported `shards` shards, in stage order.
pub fn jobs_for(
    pipeline: &FruitPipeline,
    shards: u32,
    defaults: &RunnerDefaults,
) -> Result<Vec<k8s_openapi::api::batch::v1::Job>, RenderError> {
    if !(1..=MAX_SHARDS).contains(&shards) {
        return Err(RenderError::Shards(shards));
    }
    let id = jobs::pipeline_run_id(pipeline);
    Stage::ALL
        .into_iter()
        .map(|stage| {
            let run = Run {
                id: id.clone(),
                shards: if stage == Stage::Plan { 0 } else { shards },
            };
            let job = jobs::render(pipeline, &run, stage, defaults);
            let violations = conformance::check_job(&job);
            if violations.is_empty() {
                Ok(job)
            } else {
                Err(RenderError::Refused {
                    job: job.metadata.name.clone().unwrap_or_default(),
                    violations: violations
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n  "),
                })
            }
        })
        .collect()
}

/// The Jobs as one multi-document YAML stream.
pub fn render_yaml(
    yaml: &str,
    namespace: &str,
    shards: u32,
    defaults: &RunnerDefaults,
) -> Result<String, RenderError> {
    let pipeline = parse_pipeline(yaml, namespace)?;
    let mut out = format!(
        "# Jobs of FruitPipeline {}/{} (run {}) once plan has reported {shards} shards.\n",
        pipeline.metadata.namespace.as_deref().unwrap_or_default(),
        pipeline.metadata.name.as_deref().unwrap_or_default(),
        jobs::pipeline_run_id(&pipeline),
    );
    if pipeline.metadata.uid.as_deref() == Some(PLACEHOLDER_UID) {
        out.push_str(
            "# The file has no metadata.uid: names use a placeholder; on a cluster the run id\n\
             # ends with a hash of the object's UID.\n",
        );
    }
    for job in jobs_for(&pipeline, shards, defaults)? {
        out.push_str("---\n");
        out.push_str(
            &serde_saphyr::to_string(&job).map_err(|err| RenderError::Parse(err.to_string()))?,
        );
    }
    Ok(out)
}
