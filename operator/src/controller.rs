//! The reconciler: observe the run's Jobs, decide the next step, apply it.
//!
//! `decide` is a pure function of the resource and what was observed, so every phase
//! transition is testable without a cluster; `observe` and `apply` are the only parts that
//! talk to the API server.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::api::{FruitPipeline, FruitPipelineStatus, ImageCounts, Phase};
use crate::jobs::{self, LABEL_RUN, LABEL_STAGE, Run, RunnerDefaults, Stage};
use crate::metrics::Metrics;
use crate::status::{JobState, Outcome, job_state, set_condition};

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
        }
    }
}

/// The run's Jobs, by stage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub plan: Option<JobState>,
    pub extract: Option<JobState>,
    pub fit: Option<JobState>,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub create: Option<(Stage, Run)>,
    /// New (parallelism, suspend) for the running extract Job.
    pub update_extract: Option<(i32, bool)>,
    pub status: FruitPipelineStatus,
    pub event: Option<(EventType, String, String)>,
}

/// Checks only the operator can make; the schema already checked the rest.
pub fn validate(pipeline: &FruitPipeline) -> Result<(), String> {
    let spec = &pipeline.spec;
    for (field, uri) in [("input", &spec.input), ("output", &spec.output)] {
        let bucket = uri
            .strip_prefix("s3://")
            .map(|rest| rest.split('/').next().unwrap_or(""));
        if bucket.is_none_or(str::is_empty) {
            return Err(format!(
                "spec.{field} '{uri}' must be an s3://bucket/prefix URI"
            ));
        }
    }
    let output = spec.output.trim_end_matches('/');
    let input = spec.input.trim_end_matches('/');
    if output == input {
        return Err("spec.output must differ from spec.input".into());
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

/// The next step for `pipeline`, given its Jobs.
pub fn decide(pipeline: &FruitPipeline, observed: &Observed, now: &Time) -> Decision {
    let old = pipeline.status.clone().unwrap_or_default();
    let generation = pipeline.metadata.generation;
    let run_generation = old.run_generation.or(generation).unwrap_or(1);
    let mut status = FruitPipelineStatus {
        observed_generation: generation,
        run_generation: Some(run_generation),
        ..old.clone()
    };
    let run = |shards| Run {
        generation: run_generation,
        shards,
    };
    let mut decision = Decision {
        create: None,
        update_extract: None,
        status: FruitPipelineStatus::default(),
        event: None,
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

    let Some(plan) = &observed.plan else {
        if pipeline.spec.suspend {
            status.phase = Phase::Suspended;
        } else {
            status.phase = Phase::Planning;
            set_condition(
                &mut status.conditions,
                "Planned",
                false,
                "Planning",
                "listing the input",
                generation,
                now,
            );
            decision.create = Some((Stage::Plan, run(0)));
        }
        return finish(decision, &old, status);
    };
    match &plan.outcome {
        Outcome::Running => {
            status.phase = Phase::Planning;
            watch_pod_creation(&mut decision, &mut status, plan, generation, now);
            return finish(decision, &old, status);
        }
        Outcome::Failed { .. } => {
            let why = plan.failure().unwrap_or_default();
            fail_stage(&mut status, "PlanFailed", "plan", &why, generation, now);
            return finish(decision, &old, status);
        }
        Outcome::Succeeded => {}
    }
    let reported = plan.results.first().and_then(|result| result.shards);
    // Once recorded, the shard count outlives the plan pod (pods may be garbage-collected).
    let Some(shards) = reported.or((old.shards.total > 0).then_some(old.shards.total)) else {
        fail(
            &mut status,
            "PlanFailed",
            "the plan Job succeeded but its pod reported no shard count (termination message missing)",
            generation,
            now,
        );
        return finish(decision, &old, status);
    };
    status.shards.total = shards;
    let images = plan.results.first().and_then(|result| result.images);
    set_condition(
        &mut status.conditions,
        "Planned",
        true,
        "Planned",
        &match images {
            Some(images) => format!("{images} photos in {shards} shards"),
            None => format!("{shards} shards"),
        },
        generation,
        now,
    );

    let Some(extract) = &observed.extract else {
        if pipeline.spec.suspend {
            status.phase = Phase::Suspended;
        } else {
            status.phase = Phase::Extracting;
            set_condition(
                &mut status.conditions,
                "Extracted",
                false,
                "Extracting",
                "extracting features",
                generation,
                now,
            );
            decision.create = Some((Stage::Extract, run(shards)));
        }
        return finish(decision, &old, status);
    };
    status.shards.succeeded = extract.completed_indexes;
    status.shards.failed = extract.failed_indexes;
    status.images = ImageCounts {
        processed: extract
            .results
            .iter()
            .filter_map(|result| result.used)
            .sum(),
        skipped: extract
            .results
            .iter()
            .filter_map(|result| result.skipped)
            .sum(),
    };
    match &extract.outcome {
        Outcome::Running => {
            let wanted = (
                jobs::extract_parallelism(pipeline, shards),
                pipeline.spec.suspend,
            );
            if (extract.parallelism, extract.suspended) != (Some(wanted.0), wanted.1) {
                decision.update_extract = Some(wanted);
            }
            status.phase = if pipeline.spec.suspend {
                Phase::Suspended
            } else {
                watch_pod_creation(&mut decision, &mut status, extract, generation, now);
                Phase::Extracting
            };
            return finish(decision, &old, status);
        }
        Outcome::Failed { .. } => {
            let why = extract.failure().unwrap_or_default();
            fail_stage(
                &mut status,
                "ExtractFailed",
                "extract",
                &why,
                generation,
                now,
            );
            return finish(decision, &old, status);
        }
        Outcome::Succeeded => {}
    }
    status.shards.succeeded = shards;
    set_condition(
        &mut status.conditions,
        "Extracted",
        true,
        "Extracted",
        &format!(
            "{} photos turned into features, {} skipped",
            status.images.processed, status.images.skipped
        ),
        generation,
        now,
    );

    let Some(fit) = &observed.fit else {
        if pipeline.spec.suspend {
            status.phase = Phase::Suspended;
        } else {
            status.phase = Phase::Fitting;
            decision.create = Some((Stage::Fit, run(shards)));
        }
        return finish(decision, &old, status);
    };
    match &fit.outcome {
        Outcome::Running => {
            status.phase = Phase::Fitting;
            watch_pod_creation(&mut decision, &mut status, fit, generation, now);
        }
        Outcome::Failed { .. } => {
            let why = fit.failure().unwrap_or_default();
            fail_stage(&mut status, "FitFailed", "fit", &why, generation, now);
        }
        Outcome::Succeeded => {
            let result = fit.results.first().cloned().unwrap_or_default();
            status.phase = Phase::Succeeded;
            status.k = result.k;
            status.explained_variance = result.explained_variance;
            status.outputs = result.outputs;
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
        }
    }
    finish(decision, &old, status)
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
    let was_stuck = status
        .conditions
        .iter()
        .any(|condition| condition.type_ == "PodsCreated" && condition.status == "False");
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
        decision.event = Some((EventType::Warning, "PodsNotCreated".into(), message));
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

/// Adds the event for a phase change.
fn finish(
    mut decision: Decision,
    old: &FruitPipelineStatus,
    status: FruitPipelineStatus,
) -> Decision {
    if status.phase != old.phase {
        let (kind, note) = match status.phase {
            Phase::Failed => (
                EventType::Warning,
                status
                    .conditions
                    .iter()
                    .find(|condition| condition.type_ == "Failed")
                    .map(|condition| condition.message.clone())
                    .unwrap_or_default(),
            ),
            Phase::Succeeded => (
                EventType::Normal,
                status
                    .conditions
                    .iter()
                    .find(|condition| condition.type_ == "Succeeded")
                    .map(|condition| condition.message.clone())
                    .unwrap_or_default(),
            ),
            phase => (EventType::Normal, format!("{} -> {phase}", old.phase)),
        };
        decision.event = Some((kind, status.phase.to_string(), note));
    }
    decision.status = status;
    decision
}

/// Reads the run's Jobs and pods: two list calls, by the run's label.
pub async fn observe(
    client: &Client,
    pipeline: &FruitPipeline,
    generation: i64,
) -> Result<Observed> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    let selector = format!("{LABEL_RUN}={}", jobs::run_id(pipeline, generation));
    let params = ListParams::default().labels(&selector);
    let job_list = Api::<Job>::namespaced(client.clone(), &namespace)
        .list(&params)
        .await?;
    if job_list.items.is_empty() {
        return Ok(Observed::default());
    }
    let pod_list = Api::<Pod>::namespaced(client.clone(), &namespace)
        .list(&params)
        .await?;
    let mut observed = Observed::default();
    for job in &job_list.items {
        // Only Jobs this pipeline owns count, whatever their labels say.
        if !job
            .owner_references()
            .iter()
            .any(|owner| Some(&owner.uid) == pipeline.metadata.uid.as_ref())
        {
            continue;
        }
        let name = job.name_any();
        let pods: Vec<&Pod> = pod_list
            .items
            .iter()
            .filter(|pod| pod.labels().get(jobs::LABEL_JOB_NAME) == Some(&name))
            .collect();
        let state = job_state(job, &pods);
        match job.labels().get(LABEL_STAGE).map(String::as_str) {
            Some("plan") => observed.plan = Some(state),
            Some("extract") => observed.extract = Some(state),
            Some("fit") => observed.fit = Some(state),
            _ => {}
        }
    }
    Ok(observed)
}

/// Carries out a decision.
pub async fn apply(ctx: &Context, pipeline: &FruitPipeline, decision: &Decision) -> Result<()> {
    let namespace = pipeline
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    let name = pipeline.name_any();
    let job_api = Api::<Job>::namespaced(ctx.client.clone(), &namespace);
    if let Some((stage, run)) = decision.create {
        let job = jobs::render(pipeline, run, stage, &ctx.defaults);
        match job_api.create(&PostParams::default(), &job).await {
            Ok(_) => tracing::info!(pipeline = %name, job = %job.name_any(), "created Job"),
            // A Job of this name exists: an earlier reconcile made it; adopt it.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => return Err(err.into()),
        }
    }
    if let Some((parallelism, suspend)) = decision.update_extract {
        let job = jobs::job_name(
            pipeline,
            decision.status.run_generation.unwrap_or(1),
            Stage::Extract,
        );
        let patch = json!({ "spec": { "parallelism": parallelism, "suspend": suspend } });
        job_api
            .patch(&job, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if pipeline.status.as_ref() != Some(&decision.status) {
        let api = Api::<FruitPipeline>::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({ "status": decision.status });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if let Some((kind, reason, note)) = &decision.event {
        let event = Event {
            type_: *kind,
            reason: reason.clone(),
            note: Some(note.chars().take(1000).collect()),
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
    Ok(())
}

pub async fn reconcile(pipeline: Arc<FruitPipeline>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled();
    // Being deleted: its Jobs and pods go with it through their owner references.
    if pipeline.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let generation = pipeline
        .status
        .as_ref()
        .and_then(|status| status.run_generation)
        .or(pipeline.metadata.generation)
        .unwrap_or(1);
    let observed = observe(&ctx.client, &pipeline, generation).await?;
    let decision = decide(&pipeline, &observed, &Time(Timestamp::now()));
    apply(&ctx, &pipeline, &decision).await?;
    Ok(if decision.status.phase.is_finished() {
        Action::await_change()
    } else {
        Action::requeue(RESYNC)
    })
}

pub fn error_policy(pipeline: Arc<FruitPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(pipeline = %pipeline.name_any(), %error, "reconcile failed");
    ctx.metrics.failed();
    Action::requeue(Duration::from_secs(10))
}

/// Runs the controller until a shutdown signal.
pub async fn run(ctx: Arc<Context>, ready: Arc<std::sync::atomic::AtomicBool>) {
    let pipelines = Api::<FruitPipeline>::all(ctx.client.clone());
    let owned_jobs = Api::<Job>::all(ctx.client.clone());
    let controller = Controller::new(pipelines, watcher::Config::default()).owns(
        owned_jobs,
        watcher::Config::default().labels("app.kubernetes.io/managed-by=fruitpipe-operator"),
    );
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
