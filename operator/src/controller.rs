//! The reconciler: observe the run's Jobs, decide the next step, apply it.
//!
//! `decide` is a pure function of the resource and what was observed, so every phase
//! transition is testable without a cluster; `observe` and `apply` are the only parts that
//! talk to the API server.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::api::{FruitPipeline, FruitPipelineStatus, ImageCounts, OutputFormat, Outputs, Phase};
use crate::jobs::{self, LABEL_CONTROLLER_UID, LABEL_RUN, LABEL_STAGE, Run, RunnerDefaults, Stage};
use crate::metrics::Metrics;
use crate::status::{self, JobState, Outcome, job_state, set_condition};

/// How often a running pipeline is looked at even when nothing changes.
const RESYNC: Duration = Duration::from_secs(60);
/// How long a Job may exist without a single pod before the pipeline says so.
pub const POD_CREATION_GRACE: Duration = Duration::from_secs(180);
pub const FIELD_MANAGER: &str = "fruitpipe-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the resource has no {0}")]
    MissingField(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub defaults: RunnerDefaults,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub backoff: Backoff,
}

impl Context {
    pub fn new(client: Client, defaults: RunnerDefaults, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            defaults,
            metrics,
            backoff: Backoff::default(),
        }
    }
}

/// The run's Jobs, by stage (stages that status records as done are not read).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    jobs: BTreeMap<Stage, JobState>,
}

impl Observed {
    pub fn stage(&self, stage: Stage) -> Option<&JobState> {
        self.jobs.get(&stage)
    }

    pub fn set(&mut self, stage: Stage, state: JobState) {
        self.jobs.insert(stage, state);
    }
}

/// A change to a running Job: `suspend` for every stage, `parallelism` for the per-shard
/// ones.
#[derive(Clone, Debug, PartialEq)]
pub struct JobUpdate {
    pub job: String,
    pub suspend: bool,
    pub parallelism: Option<i32>,
}

/// An event to record on the pipeline: type, reason, note.
pub type Note = (EventType, String, String);

/// What to do next.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub create: Option<(Stage, Run)>,
    pub update: Option<JobUpdate>,
    pub status: FruitPipelineStatus,
    pub events: Vec<Note>,
}

/// Checks only the operator can make; the schema already checked the rest.
pub fn validate(pipeline: &FruitPipeline) -> Result<(), String> {
    let spec = &pipeline.spec;
    for (field, uri) in [("input", &spec.input), ("output.uri", &spec.output.uri)] {
        let bucket = uri
            .strip_prefix("s3://")
            .map(|rest| rest.split('/').next().unwrap_or(""));
        if bucket.is_none_or(str::is_empty) {
            return Err(format!(
                "spec.{field} '{uri}' must be an s3://bucket/prefix URI"
            ));
        }
    }
    let output = spec.output.uri.trim_end_matches('/');
    let input = spec.input.trim_end_matches('/');
    if output == input {
        return Err("spec.output.uri must differ from spec.input".into());
    }
    if !spec.output.formats.contains(&OutputFormat::Csv) {
        return Err(
            "spec.output.formats must include csv: `fruitpipe identify` and `serve` read features_pca.csv".into(),
        );
    }
    if !spec.model.uri.starts_with("s3://") && !spec.model.uri.starts_with('/') {
        return Err(format!(
            "spec.model.uri '{}' must be an s3:// URI or an absolute path inside the runner image",
            spec.model.uri
        ));
    }
    if let (Some(_), Some(_)) = (spec.pca.components, spec.pca.variance) {
        return Err("spec.pca: give components or variance, not both".into());
    }
    if let Some(variance) = spec.pca.variance
        && !(variance > 0.0 && variance <= 1.0)
    {
        return Err(format!("spec.pca.variance {variance} must be in (0, 1]"));
    }
    Ok(())
}

/// The phase of a pipeline whose `stage` runs.
fn running_phase(stage: Stage) -> Phase {
    match stage {
        Stage::Plan => Phase::Planning,
        Stage::Extract => Phase::Extracting,
        Stage::Fit => Phase::Fitting,
        Stage::Project => Phase::Projecting,
        Stage::Assemble => Phase::Assembling,
    }
}

/// The next step for `pipeline`, given its Jobs.
pub fn decide(pipeline: &FruitPipeline, observed: &Observed, now: &Time) -> Decision {
    let old = pipeline.status.clone().unwrap_or_default();
    let generation = pipeline.metadata.generation;
    let run_id = old
        .run_id
        .clone()
        .unwrap_or_else(|| jobs::pipeline_run_id(pipeline));
    let mut status = FruitPipelineStatus {
        observed_generation: generation,
        run_id: Some(run_id.clone()),
        ..old.clone()
    };
    let mut decision = Decision {
        create: None,
        update: None,
        status: FruitPipelineStatus::default(),
        events: Vec::new(),
    };

    // A finished run stays finished: its Jobs may have been cleaned up since.
    if old.phase.is_finished() {
        decision.status = status;
        return decision;
    }
    if let Err(message) = validate(pipeline) {
        fail(&mut status, "InvalidSpec", &message, generation, now);
        return finish(decision, &old, status);
    }
    status.start_time.get_or_insert_with(|| now.clone());

    for stage in Stage::ALL {
        // A stage that status records as done is never run again, even if its Job is gone.
        if status.completed_stages.contains(&stage) {
            continue;
        }
        let Some(job) = observed.stage(stage) else {
            start_stage(&mut decision, &mut status, pipeline, stage, &run_id, now);
            return finish(decision, &old, status);
        };
        match stage {
            Stage::Extract => {
                status.shards.succeeded = job.completed_indexes;
                status.shards.failed = job.failed_indexes;
            }
            Stage::Project => {
                status.shards.projected = job.completed_indexes;
                status.shards.failed = job.failed_indexes;
            }
            _ => {}
        }
        match &job.outcome {
            Outcome::Running => {
                follow_running_job(&mut decision, &mut status, pipeline, stage, job, now);
                return finish(decision, &old, status);
            }
            Outcome::Failed { .. } => {
                let why = job.failure().unwrap_or_default();
                let reason = failed_reason(stage);
                fail_stage(&mut status, reason, stage.as_str(), &why, generation, now);
                return finish(decision, &old, status);
            }
            Outcome::Succeeded => {
                if let Err(message) = record_stage(&mut status, pipeline, stage, job, now) {
                    fail(&mut status, failed_reason(stage), &message, generation, now);
                    return finish(decision, &old, status);
                }
                status.completed_stages.push(stage);
                if status.phase == Phase::Succeeded {
                    break;
                }
            }
        }
    }
    finish(decision, &old, status)
}

/// The `Failed` condition's reason when `stage` fails.
fn failed_reason(stage: Stage) -> &'static str {
    match stage {
        Stage::Plan => "PlanFailed",
        Stage::Extract => "ExtractFailed",
        Stage::Fit => "FitFailed",
        Stage::Project => "ProjectFailed",
        Stage::Assemble => "AssembleFailed",
    }
}

/// Asks for the stage's Job, unless the pipeline is suspended.
fn start_stage(
    decision: &mut Decision,
    status: &mut FruitPipelineStatus,
    pipeline: &FruitPipeline,
    stage: Stage,
    run_id: &str,
    now: &Time,
) {
    if pipeline.spec.suspend {
        status.phase = Phase::Suspended;
        return;
    }
    status.phase = running_phase(stage);
    let generation = pipeline.metadata.generation;
    let progress = match stage {
        Stage::Plan => Some(("Planned", "Planning", "listing the input")),
        Stage::Extract => Some(("Extracted", "Extracting", "extracting features")),
        Stage::Fit => Some(("Fitted", "Fitting", "merging the shards' statistics")),
        Stage::Project => Some(("Projected", "Projecting", "projecting the shards")),
        Stage::Assemble => None,
    };
    if let Some((condition, reason, message)) = progress {
        set_condition(
            &mut status.conditions,
            condition,
            false,
            reason,
            message,
            generation,
            now,
        );
    }
    let run = Run {
        id: run_id.into(),
        shards: status.shards.total,
    };
    decision.create = Some((stage, run));
}

/// Keeps a running Job in line with the spec (suspend, parallelism) and says when its pods
/// do not start.
fn follow_running_job(
    decision: &mut Decision,
    status: &mut FruitPipelineStatus,
    pipeline: &FruitPipeline,
    stage: Stage,
    job: &JobState,
    now: &Time,
) {
    let suspend = pipeline.spec.suspend;
    let parallelism = stage
        .is_per_shard()
        .then(|| jobs::extract_parallelism(pipeline, status.shards.total));
    let parallelism_differs = parallelism.is_some() && job.parallelism != parallelism;
    if job.suspended != suspend || parallelism_differs {
        decision.update = Some(JobUpdate {
            job: job.name.clone(),
            suspend,
            parallelism,
        });
    }
    if suspend {
        status.phase = Phase::Suspended;
        return;
    }
    status.phase = running_phase(stage);
    let generation = pipeline.metadata.generation;
    watch_pod_creation(decision, status, job, generation, now);
    watch_pods_starting(decision, status, job, generation, now);
}

/// Takes in what a finished stage reported; an error says why the result is unusable.
fn record_stage(
    status: &mut FruitPipelineStatus,
    pipeline: &FruitPipeline,
    stage: Stage,
    job: &JobState,
    now: &Time,
) -> Result<(), String> {
    let generation = pipeline.metadata.generation;
    let result = job.results.first().cloned().unwrap_or_default();
    match stage {
        Stage::Plan => {
            let Some(shards) = result.shards else {
                return Err(
                    "the plan Job succeeded but its pod reported no shard count \
                            (termination message missing); delete and re-create the \
                            FruitPipeline to run it again"
                        .into(),
                );
            };
            if shards > jobs::MAX_SHARDS {
                return Err(format!(
                    "the input makes {shards} shards of {} photos, more than the {} an Indexed \
                     Job may have; raise spec.shardSize to at least {}",
                    pipeline.spec.shard_size,
                    jobs::MAX_SHARDS,
                    (u64::from(shards) * u64::from(pipeline.spec.shard_size))
                        .div_ceil(u64::from(jobs::MAX_SHARDS))
                ));
            }
            status.shards.total = shards;
            let message = match result.images {
                Some(images) => format!("{images} photos in {shards} shards"),
                None => format!("{shards} shards"),
            };
            set_condition(
                &mut status.conditions,
                "Planned",
                true,
                "Planned",
                &message,
                generation,
                now,
            );
        }
        Stage::Extract => {
            status.shards.succeeded = status.shards.total;
            status.images = ImageCounts {
                processed: job.results.iter().filter_map(|result| result.used).sum(),
                skipped: job.results.iter().filter_map(|result| result.skipped).sum(),
            };
            let message = format!(
                "{} photos turned into features, {} skipped",
                status.images.processed, status.images.skipped
            );
            set_condition(
                &mut status.conditions,
                "Extracted",
                true,
                "Extracted",
                &message,
                generation,
                now,
            );
        }
        Stage::Fit => {
            status.k = result.k;
            status.explained_variance = result.explained_variance;
            // A runner from before the project stage wrote every output in fit.
            if result.outputs.is_some() {
                return record_success(status, &result, generation, now);
            }
            let message = format!(
                "k = {} explaining {:.1}% of the variance",
                status.k.unwrap_or_default(),
                100.0 * status.explained_variance.unwrap_or_default(),
            );
            set_condition(
                &mut status.conditions,
                "Fitted",
                true,
                "Fitted",
                &message,
                generation,
                now,
            );
        }
        Stage::Project => {
            status.shards.projected = status.shards.total;
            let rows: u64 = job.results.iter().filter_map(|result| result.rows).sum();
            let message = format!("{rows} photos projected in {} shards", status.shards.total);
            set_condition(
                &mut status.conditions,
                "Projected",
                true,
                "Projected",
                &message,
                generation,
                now,
            );
        }
        Stage::Assemble => {
            // A runner drops `outputs` from a termination message that would pass 4 KiB
            // (long URIs); the names are fixed, so they are known from the spec.
            let mut result = result;
            if result.outputs.is_none() {
                result.outputs = Some(Outputs::under(&pipeline.spec.output));
            }
            return record_success(status, &result, generation, now);
        }
    }
    Ok(())
}

/// The run is done: what the last stage reported becomes the pipeline's result.
fn record_success(
    status: &mut FruitPipelineStatus,
    result: &status::RunnerResult,
    generation: Option<i64>,
    now: &Time,
) -> Result<(), String> {
    status.phase = Phase::Succeeded;
    status.k = result.k.or(status.k);
    status.explained_variance = result.explained_variance.or(status.explained_variance);
    status.outputs = result.outputs.clone();
    if let (Some(used), Some(skipped)) = (result.images, result.skipped) {
        status.images = ImageCounts {
            processed: used,
            skipped,
        };
    }
    status.completion_time = Some(now.clone());
    let message = format!(
        "k = {} explaining {:.1}% of the variance; {} photos, {} skipped",
        status.k.unwrap_or_default(),
        100.0 * status.explained_variance.unwrap_or_default(),
        status.images.processed,
        status.images.skipped
    );
    set_condition(
        &mut status.conditions,
        "Succeeded",
        true,
        "Succeeded",
        &message,
        generation,
        now,
    );
    Ok(())
}

fn condition_is(status: &FruitPipelineStatus, type_: &str, value: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|condition| condition.type_ == type_ && condition.status == value)
}

/// Says so in the status (condition `PodsCreated`) and with a Warning event when a running
/// Job has had no pod for [`POD_CREATION_GRACE`]. The Job controller reports why only in the
/// Job's own events (a missing ServiceAccount, a ResourceQuota, an admission policy), which
/// users watching the FruitPipeline would not see.
fn watch_pod_creation(
    decision: &mut Decision,
    status: &mut FruitPipelineStatus,
    job: &JobState,
    generation: Option<i64>,
    now: &Time,
) {
    let was_stuck = condition_is(status, "PodsCreated", "False");
    if job.has_pods || job.suspended {
        if was_stuck {
            let message = format!("Job {} has pods", job.name);
            set_condition(
                &mut status.conditions,
                "PodsCreated",
                true,
                "PodsCreated",
                &message,
                generation,
                now,
            );
        }
        return;
    }
    let Some(created) = &job.created else { return };
    let waited = now.0.duration_since(created.0).as_secs();
    if waited < POD_CREATION_GRACE.as_secs() as i64 {
        return;
    }
    let message = format!(
        "Job {name} has created no pod since {created}; `kubectl describe job {name}` says why \
         (often: the pods' ServiceAccount does not exist in this namespace, a ResourceQuota, \
         or an admission policy)",
        name = job.name,
        created = created.0,
    );
    set_condition(
        &mut status.conditions,
        "PodsCreated",
        false,
        "PodsNotCreated",
        &message,
        generation,
        now,
    );
    if !was_stuck {
        decision
            .events
            .push((EventType::Warning, "PodsNotCreated".into(), message));
    }
}

/// What to do about a pod that cannot start, by the kubelet's (or scheduler's) reason.
fn stuck_pod_hint(reason: &str) -> &'static str {
    match reason {
        "CreateContainerConfigError" => {
            "check that the Secret the pods use (spec.s3.credentialsSecret or the \
             installation's default) exists in this namespace with the keys \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        }
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" => {
            "check spec.runner.image (or the installation's runner image) and that the \
             nodes may pull it"
        }
        "ErrImageNeverPull" => {
            "the image pull policy is Never and the image is not on the node: load it there \
             (kind load docker-image) or change spec.runner.imagePullPolicy"
        }
        "Unschedulable" => {
            "no node can take the pods: check spec.runner.resources, nodeSelector and \
             tolerations against the cluster's nodes"
        }
        _ => "`kubectl describe pod` shows the details",
    }
}

/// Says so in the status (condition `PodsStarted`) and, once per reason, with a Warning
/// event when a pod of a running Job waits for something that will not come by itself.
fn watch_pods_starting(
    decision: &mut Decision,
    status: &mut FruitPipelineStatus,
    job: &JobState,
    generation: Option<i64>,
    now: &Time,
) {
    let previous = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == "PodsStarted")
        .cloned();
    let Some(stuck) = &job.stuck else {
        if previous.is_some_and(|condition| condition.status == "False") {
            let message = format!("pods of Job {} start", job.name);
            set_condition(
                &mut status.conditions,
                "PodsStarted",
                true,
                "PodsStarted",
                &message,
                generation,
                now,
            );
        }
        return;
    };
    let message = format!(
        "pod {} cannot start: {}: {}; {}",
        stuck.pod,
        stuck.reason,
        stuck.message,
        stuck_pod_hint(&stuck.reason)
    );
    let reported = previous
        .is_some_and(|condition| condition.status == "False" && condition.reason == stuck.reason);
    set_condition(
        &mut status.conditions,
        "PodsStarted",
        false,
        &stuck.reason,
        &message,
        generation,
        now,
    );
    if !reported {
        decision
            .events
            .push((EventType::Warning, stuck.reason.clone(), message));
    }
}

fn fail_stage(
    status: &mut FruitPipelineStatus,
    reason: &str,
    stage: &str,
    why: &str,
    generation: Option<i64>,
    now: &Time,
) {
    fail(
        status,
        reason,
        &format!("{stage} failed: {why}"),
        generation,
        now,
    );
}

fn fail(
    status: &mut FruitPipelineStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    status.phase = Phase::Failed;
    status.completion_time = Some(now.clone());
    set_condition(
        &mut status.conditions,
        "Failed",
        true,
        reason,
        message,
        generation,
        now,
    );
}

fn condition_message(status: &FruitPipelineStatus, type_: &str) -> String {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == type_)
        .map(|condition| condition.message.clone())
        .unwrap_or_default()
}

/// Adds the event for a phase change.
fn finish(
    mut decision: Decision,
    old: &FruitPipelineStatus,
    status: FruitPipelineStatus,
) -> Decision {
    if status.phase != old.phase {
        let (kind, note) = match status.phase {
            Phase::Failed => (EventType::Warning, condition_message(&status, "Failed")),
            Phase::Succeeded => (EventType::Normal, condition_message(&status, "Succeeded")),
            phase => (EventType::Normal, format!("{} -> {phase}", old.phase)),
        };
        decision.events.push((kind, status.phase.to_string(), note));
    }
    decision.status = status;
    decision
}

/// Why the API server refused to create a Job.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// The condition reason: `JobInvalid`, `JobConflict`, or the API server's own reason.
    pub reason: String,
    pub message: String,
    /// True when no retry can help without a change of the spec (a 422).
    pub permanent: bool,
}

/// Takes a refused create into the decision: a permanent refusal fails the pipeline, any
/// other sets `JobsCreated=False` (with an event when the reason or message is new) and the
/// reconcile is retried with backoff.
pub fn record_refusal(
    mut decision: Decision,
    pipeline: &FruitPipeline,
    refusal: &Refusal,
    now: &Time,
) -> Decision {
    let old = pipeline.status.clone().unwrap_or_default();
    let generation = pipeline.metadata.generation;
    let mut status = decision.status.clone();
    decision.events.clear();
    decision.create = None;
    if refusal.permanent {
        fail(
            &mut status,
            &refusal.reason,
            &refusal.message,
            generation,
            now,
        );
        return finish(decision, &old, status);
    }
    let repeated = old.conditions.iter().any(|condition| {
        condition.type_ == "JobsCreated"
            && condition.status == "False"
            && condition.reason == refusal.reason
            && condition.message == refusal.message
    });
    set_condition(
        &mut status.conditions,
        "JobsCreated",
        false,
        &refusal.reason,
        &refusal.message,
        generation,
        now,
    );
    let mut decision = finish(decision, &old, status);
    if !repeated {
        decision.events.push((
            EventType::Warning,
            refusal.reason.clone(),
            refusal.message.clone(),
        ));
    }
    decision
}

/// Clears `JobsCreated=False` once a Job could be created.
fn record_created(
    status: &mut FruitPipelineStatus,
    job: &str,
    generation: Option<i64>,
    now: &Time,
) {
    if condition_is(status, "JobsCreated", "False") {
        set_condition(
            &mut status.conditions,
            "JobsCreated",
            true,
            "JobsCreated",
            &format!("created Job {job}"),
            generation,
            now,
        );
    }
}

/// Pods read per list call: a 2,000-shard extract Job's pods come in pages, never in one
/// response.
const POD_PAGE: u32 = 500;

/// Reads the run's Jobs (one list call, by the run's label) and, for each stage not yet
/// recorded as done, the few pods that matter now (see [`status::pods_to_read`]).
pub async fn observe(
    client: &Client,
    pipeline: &FruitPipeline,
    run_id: &str,
    done: &[Stage],
) -> Result<Observed> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    let uid = pipeline
        .metadata
        .uid
        .as_ref()
        .ok_or(Error::MissingField("uid"))?;
    let params = ListParams::default().labels(&format!("{LABEL_RUN}={run_id}"));
    let job_list = Api::<Job>::namespaced(client.clone(), &namespace)
        .list(&params)
        .await?;
    let pod_api = Api::<Pod>::namespaced(client.clone(), &namespace);
    let mut observed = Observed::default();
    for job in &job_list.items {
        // Only Jobs this pipeline owns count, whatever their labels say.
        if !is_owned_by(job, uid) {
            continue;
        }
        let Some(stage) = job
            .labels()
            .get(LABEL_STAGE)
            .and_then(|label| Stage::from_label(label))
        else {
            continue;
        };
        if done.contains(&stage) {
            continue;
        }
        let pods = match (status::pods_to_read(job), job.metadata.uid.as_deref()) {
            (Some(phase), Some(job_uid)) => list_pods(&pod_api, job_uid, phase).await?,
            _ => Vec::new(),
        };
        observed.set(stage, job_state(job, &pods));
    }
    Ok(observed)
}

fn is_owned_by(job: &Job, uid: &str) -> bool {
    job.owner_references()
        .iter()
        .any(|owner| owner.uid == uid && owner.controller == Some(true))
}

/// The pods of the Job with this UID in this phase, page by page. The Job controller labels
/// its pods with the Job's UID, so pods of a deleted Job of the same name never count.
async fn list_pods(api: &Api<Pod>, job_uid: &str, phase: &str) -> Result<Vec<Pod>> {
    let mut params = ListParams::default()
        .labels(&format!("{LABEL_CONTROLLER_UID}={job_uid}"))
        .fields(&format!("status.phase={phase}"))
        .limit(POD_PAGE);
    let mut pods = Vec::new();
    loop {
        let page = api.list(&params).await?;
        pods.extend(page.items);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(pods),
        }
    }
}

/// How a create ended.
enum Creation {
    Created,
    Refused(Refusal),
}

/// Creates a stage's Job. A 409 is checked: a Job of that name owned by this pipeline (an
/// earlier reconcile made it) is adopted; one owned by anything else is a conflict.
async fn create_job(api: &Api<Job>, job: &Job, uid: &str) -> Result<Creation> {
    let name = job.name_any();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let status = match api.create(&params, job).await {
        Ok(_) => {
            tracing::info!(job = %name, "created Job");
            return Ok(Creation::Created);
        }
        Err(kube::Error::Api(status)) => status,
        Err(err) => return Err(err.into()),
    };
    let refusal = match status.code {
        409 => {
            let existing = api.get(&name).await?;
            if is_owned_by(&existing, uid) {
                return Ok(Creation::Created);
            }
            let owner = existing
                .owner_references()
                .iter()
                .find(|owner| owner.controller == Some(true))
                .map_or("no controller".to_string(), |owner| {
                    format!("{} {} (uid {})", owner.kind, owner.name, owner.uid)
                });
            Refusal {
                reason: "JobConflict".into(),
                message: format!(
                    "Job {name} already exists and belongs to {owner}, not to this \
                     FruitPipeline (uid {uid}); delete that Job (kubectl delete job {name}) \
                     and the pipeline goes on"
                ),
                permanent: false,
            }
        }
        422 => Refusal {
            reason: "JobInvalid".into(),
            message: format!(
                "the API server refused Job {name}: {}; fix the FruitPipeline's spec and \
                 create it again",
                status.message
            ),
            permanent: true,
        },
        400..=499 => Refusal {
            reason: if status.reason.is_empty() {
                "CreateRefused".into()
            } else {
                status.reason.clone()
            },
            message: format!(
                "the API server refused Job {name} ({} {}): {}; retrying with backoff",
                status.code, status.reason, status.message
            ),
            permanent: false,
        },
        _ => return Err(kube::Error::Api(status).into()),
    };
    tracing::warn!(job = %name, reason = %refusal.reason, message = %refusal.message, "Job refused");
    Ok(Creation::Refused(refusal))
}

/// Cuts an event note to the 1,024 bytes the API server allows (not characters:
/// k8s.io/kubernetes/pkg/apis/core/validation.ValidateEventCreate), at a character boundary.
pub fn event_note(note: &str) -> String {
    const NOTE_LIMIT: usize = 1024;
    if note.len() <= NOTE_LIMIT {
        return note.to_string();
    }
    let mut end = NOTE_LIMIT - "...".len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

/// What `apply` did that decides when to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// A create was refused; look again with backoff.
    Refused,
}

/// Carries out a decision.
pub async fn apply(
    ctx: &Context,
    pipeline: &FruitPipeline,
    mut decision: Decision,
    now: &Time,
) -> Result<(Decision, Applied)> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    let uid = pipeline
        .metadata
        .uid
        .as_ref()
        .ok_or(Error::MissingField("uid"))?;
    let name = pipeline.name_any();
    let job_api = Api::<Job>::namespaced(ctx.client.clone(), &namespace);
    let mut applied = Applied::Done;
    if let Some((stage, run)) = decision.create.clone() {
        let job = jobs::render(pipeline, &run, stage, &ctx.defaults);
        match create_job(&job_api, &job, uid).await? {
            Creation::Created => record_created(
                &mut decision.status,
                &job.name_any(),
                pipeline.metadata.generation,
                now,
            ),
            Creation::Refused(refusal) => {
                decision = record_refusal(decision, pipeline, &refusal, now);
                applied = Applied::Refused;
            }
        }
    }
    if let Some(update) = &decision.update {
        let mut spec = json!({ "suspend": update.suspend });
        if let Some(parallelism) = update.parallelism {
            spec["parallelism"] = json!(parallelism);
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        job_api
            .patch(
                &update.job,
                &params,
                &Patch::Merge(&json!({ "spec": spec })),
            )
            .await?;
    }
    if pipeline.status.as_ref() != Some(&decision.status) {
        write_status(ctx, &namespace, &name, &decision.status).await?;
    }
    for (kind, reason, note) in &decision.events {
        let event = Event {
            type_: *kind,
            reason: reason.clone(),
            note: Some(event_note(note)),
            action: "Reconcile".into(),
            secondary: None,
        };
        // An event that cannot be recorded must not stop the pipeline.
        if let Err(err) = ctx
            .recorder
            .publish(&event, &pipeline.object_ref(&()))
            .await
        {
            tracing::warn!(pipeline = %name, error = %err, "cannot record event");
        }
    }
    Ok((decision, applied))
}

/// Writes the whole status by server-side apply with the operator's field manager, so a
/// field the operator no longer sets is removed, not left behind.
async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &FruitPipelineStatus,
) -> Result<()> {
    let api = Api::<FruitPipeline>::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": FruitPipeline::api_version(&()),
        "kind": FruitPipeline::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

pub async fn reconcile(pipeline: Arc<FruitPipeline>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled();
    // Being deleted: its Jobs and pods go with it through their owner references.
    if pipeline.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let status = pipeline.status.clone().unwrap_or_default();
    let run_id = status
        .run_id
        .clone()
        .unwrap_or_else(|| jobs::pipeline_run_id(&pipeline));
    let observed = if status.phase.is_finished() {
        Observed::default()
    } else {
        observe(&ctx.client, &pipeline, &run_id, &status.completed_stages).await?
    };
    let now = Time(Timestamp::now());
    let decision = decide(&pipeline, &observed, &now);
    let (decision, applied) = apply(&ctx, &pipeline, decision, &now).await?;
    let key = backoff_key(&pipeline);
    Ok(match applied {
        Applied::Refused => Action::requeue(ctx.backoff.next_delay(&key)),
        Applied::Done => {
            ctx.backoff.reset(&key);
            if decision.status.phase.is_finished() {
                Action::await_change()
            } else {
                Action::requeue(RESYNC)
            }
        }
    })
}

fn backoff_key(pipeline: &FruitPipeline) -> String {
    format!(
        "{}/{}",
        pipeline.namespace().unwrap_or_default(),
        pipeline.name_any()
    )
}

/// Per-pipeline exponential backoff for refused creates and failed API calls: 5 s, 10 s,
/// 20 s ... up to 5 minutes, reset by a reconcile that goes through.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(300);

    pub fn next_delay(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|err| err.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        let delay = Self::FIRST.saturating_mul(1 << (*count).min(16));
        *count += 1;
        delay.min(Self::MAX)
    }

    pub fn reset(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|err| err.into_inner());
        failures.remove(key);
    }
}

pub fn error_policy(pipeline: Arc<FruitPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next_delay(&backoff_key(&pipeline));
    tracing::warn!(pipeline = %pipeline.name_any(), %error, retry_in = ?delay, "reconcile failed");
    ctx.metrics.failed();
    Action::requeue(delay)
}

/// Reconciles triggered within this time of each other are merged into one: a Job's
/// status changes with every pod, and one look per burst is enough.
const DEBOUNCE: Duration = Duration::from_secs(2);

/// Runs the controller until a shutdown signal.
pub async fn run(ctx: Arc<Context>, ready: Arc<std::sync::atomic::AtomicBool>) {
    let pipelines = Api::<FruitPipeline>::all(ctx.client.clone());
    let owned_jobs = Api::<Job>::all(ctx.client.clone());
    let controller = Controller::new(pipelines, watcher::Config::default())
        .owns(
            owned_jobs,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=fruitpipe-operator"),
        )
        .with_config(controller::Config::default().debounce(DEBOUNCE));
    let store = controller.store();
    ctx.metrics.watch_phases(store.clone());
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            ready.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
        })
        .await;
}
