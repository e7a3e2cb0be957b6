//! The reconciler against a mocked API server (tower-test): each test plays the API server's
//! side of one reconcile, request by request, for one phase transition. The mock is strict:
//! every object the operator sends passes the API-conformance checker (the real API
//! server's validation rules), status writes must be server-side apply with the operator's
//! field manager, and pod lists are answered with only the pods their label and field
//! selectors match, as the API server would.

mod common;
#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use common::{NAMESPACE, UID, defaults, example_spec, pipeline};
use fruitpipe_operator::api::{FruitPipeline, Phase, Stage};
use fruitpipe_operator::conformance;
use fruitpipe_operator::controller::{Context, reconcile};
use fruitpipe_operator::jobs::{
    ANNOTATION_INDEX, LABEL_CONTROLLER_UID, LABEL_JOB_NAME, Run, pipeline_run_id, render,
};
use fruitpipe_operator::metrics::Metrics;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use serde_json::{Value, json};
use support::cluster::{merge, query_param};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The API server's side of the conversation.
struct ApiServer(Handle);

/// One request as the mock saw it.
struct Call {
    query: String,
    content_type: String,
    body: Value,
    respond: tower_test::mock::SendResponse<Response<Body>>,
}

/// Whether a pod matches `key=value,...` label terms and a `status.phase=X` field selector.
fn selected(pod: &Pod, labels: &str, fields: &str) -> bool {
    let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
    let labels_match = labels.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (key, value) = term.split_once('=').expect("equality selectors only");
        pod_labels.get(key).map(String::as_str) == Some(value)
    });
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    let fields_match = fields.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (key, value) = term.split_once('=').expect("equality selectors only");
        assert_eq!(
            key, "status.phase",
            "a field selector the mock does not serve"
        );
        phase.as_deref() == Some(value)
    });
    labels_match && fields_match
}

fn refuse_unless_conformant(what: &str, violations: Vec<conformance::Violation>) {
    assert!(
        violations.is_empty(),
        "the API server would refuse this {what}:\n{}",
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

impl ApiServer {
    async fn next(&mut self, method: Method, path: &str) -> Call {
        let (request, respond) = self
            .0
            .next_request()
            .await
            .expect("the reconciler stopped calling the API");
        let uri = request.uri().clone();
        assert_eq!(
            request.method(),
            method,
            "unexpected {} {uri}",
            request.method()
        );
        assert_eq!(uri.path(), path, "expected {method} {path}, got {uri}");
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Call {
            query: uri.query().unwrap_or_default().to_string(),
            content_type,
            body,
            respond,
        }
    }

    fn reply(respond: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
        respond.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }

    fn jobs_path() -> String {
        format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs")
    }

    /// The run's Jobs, listed by the run's label.
    async fn list_jobs(&mut self, jobs: Vec<Job>) {
        let call = self.next(Method::GET, &Self::jobs_path()).await;
        let selector = query_param(&call.query, "labelSelector").unwrap_or_default();
        let run = pipeline_run_id(&pipeline(example_spec()));
        assert_eq!(selector, format!("fruitpipe.dev/run={run}"));
        Self::reply(
            call.respond,
            200,
            &json!({ "apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": jobs }),
        );
    }

    /// Pods by selector: answers with those of `pods` that the request selects, and
    /// returns which phase was asked for.
    async fn list_pods(&mut self, pods: &[Pod]) -> String {
        let call = self
            .next(Method::GET, &format!("/api/v1/namespaces/{NAMESPACE}/pods"))
            .await;
        let labels = query_param(&call.query, "labelSelector").unwrap_or_default();
        let fields = query_param(&call.query, "fieldSelector").unwrap_or_default();
        assert!(
            labels.starts_with(LABEL_CONTROLLER_UID),
            "pods must be selected by their Job's UID, not {labels:?}"
        );
        let items: Vec<&Pod> = pods
            .iter()
            .filter(|pod| selected(pod, &labels, &fields))
            .collect();
        Self::reply(
            call.respond,
            200,
            &json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items }),
        );
        fields
    }

    async fn create_job(&mut self) -> Job {
        let call = self.next(Method::POST, &Self::jobs_path()).await;
        let mut job: Job = serde_json::from_value(call.body).unwrap();
        refuse_unless_conformant("Job", conformance::check_job(&job));
        job.metadata.uid = Some(format!("uid-{}", job.metadata.name.clone().unwrap()));
        Self::reply(call.respond, 201, &serde_json::to_value(&job).unwrap());
        job
    }

    async fn refuse_create(&mut self, code: u16, reason: &str, message: &str) {
        let call = self.next(Method::POST, &Self::jobs_path()).await;
        let status = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "code": code, "message": message });
        Self::reply(call.respond, code, &status);
    }

    /// The GET that follows a 409: who owns the Job of that name.
    async fn get_job(&mut self, job: &Job) {
        let name = job.metadata.name.clone().unwrap();
        let call = self
            .next(Method::GET, &format!("{}/{name}", Self::jobs_path()))
            .await;
        Self::reply(call.respond, 200, &serde_json::to_value(job).unwrap());
    }

    /// A merge patch of `job`; refused (test failure) where the API server refuses the
    /// update. Returns the patch.
    async fn patch_job(&mut self, job: &Job) -> Value {
        let name = job.metadata.name.clone().unwrap();
        let call = self
            .next(Method::PATCH, &format!("{}/{name}", Self::jobs_path()))
            .await;
        assert_eq!(call.content_type, "application/merge-patch+json");
        let mut patched = serde_json::to_value(job).unwrap();
        merge(&mut patched, &call.body);
        let patched: Job = serde_json::from_value(patched).unwrap();
        refuse_unless_conformant("Job update", conformance::check_job_update(job, &patched));
        Self::reply(call.respond, 200, &serde_json::to_value(&patched).unwrap());
        call.body
    }

    /// A server-side apply of the status subresource by the operator's field manager.
    async fn patch_status(&mut self, pipeline: &FruitPipeline) -> Value {
        let path = format!(
            "/apis/fruitpipe.dev/v1alpha1/namespaces/{NAMESPACE}/fruitpipelines/fruits-360/status"
        );
        let call = self.next(Method::PATCH, &path).await;
        assert_eq!(call.content_type, "application/apply-patch+yaml");
        assert_eq!(
            query_param(&call.query, "fieldManager").as_deref(),
            Some("fruitpipe-operator")
        );
        assert_eq!(query_param(&call.query, "force").as_deref(), Some("true"));
        assert_eq!(call.body["apiVersion"], "fruitpipe.dev/v1alpha1");
        assert_eq!(call.body["kind"], "FruitPipeline");
        let conditions: Vec<_> = serde_json::from_value(call.body["status"]["conditions"].clone())
            .expect("conditions of the Condition type");
        refuse_unless_conformant("status", conformance::check_conditions(&conditions));
        let mut updated = serde_json::to_value(pipeline).unwrap();
        updated["status"] = call.body["status"].clone();
        Self::reply(call.respond, 200, &updated);
        call.body["status"].clone()
    }

    async fn event(&mut self) -> Value {
        let call = self
            .next(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events"),
            )
            .await;
        let event = serde_json::from_value(call.body.clone()).expect("an events.k8s.io/v1 Event");
        refuse_unless_conformant("Event", conformance::check_event(&event));
        Self::reply(call.respond, 201, &call.body);
        call.body
    }
}

fn context() -> (Arc<Context>, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, NAMESPACE);
    (
        Arc::new(Context::new(
            client,
            defaults(),
            Arc::new(Metrics::default()),
        )),
        ApiServer(handle),
    )
}

/// Runs one reconcile against the scripted API server; fails on any call the script does
/// not expect (the reconcile then waits forever and times out).
async fn reconcile_with<F>(pipeline: FruitPipeline, script: impl FnOnce(ApiServer) -> F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (ctx, server) = context();
    let server = tokio::spawn(script(server));
    let result =
        tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(pipeline), ctx)).await;
    result
        .expect("reconcile made a call the API server did not expect")
        .expect("reconcile failed");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the script waited for a call that never came")
        .unwrap();
}

/// A pipeline whose status says `phase`, with `done` stages recorded.
fn with_status(
    mut pipeline: FruitPipeline,
    phase: Phase,
    shards: u32,
    done: &[Stage],
) -> FruitPipeline {
    let mut status = pipeline.status.take().unwrap_or_default();
    status.phase = phase;
    status.run_id = Some(pipeline_run_id(&pipeline));
    status.observed_generation = Some(1);
    status.shards.total = shards;
    status.completed_stages = done.to_vec();
    status.start_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    ));
    pipeline.status = Some(status);
    pipeline
}

fn job_name(stage: Stage) -> String {
    fruitpipe_operator::jobs::job_name(&pipeline_run_id(&pipeline(example_spec())), stage)
}

/// A Job as the API server holds it after the operator created it: with a UID, and the
/// controller-uid label the API server adds to its pod template.
fn job(pipeline: &FruitPipeline, stage: Stage, shards: u32, status: Value) -> Job {
    let run = Run {
        id: pipeline_run_id(pipeline),
        shards,
    };
    let mut job = render(pipeline, &run, stage, &defaults());
    let uid = format!("uid-{}", job.metadata.name.clone().unwrap());
    job.metadata.uid = Some(uid.clone());
    let template = job
        .spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap();
    let labels = template.labels.get_or_insert_with(Default::default);
    labels.insert(LABEL_CONTROLLER_UID.into(), uid);
    job.status = Some(serde_json::from_value(status).unwrap());
    job
}

fn complete() -> Value {
    json!({ "conditions": [{ "type": "Complete", "status": "True" }] })
}

fn failed(reason: &str) -> Value {
    json!({ "conditions": [{ "type": "Failed", "status": "True", "reason": reason, "message": "Job has failed" }] })
}

/// A pod of `job` in the given container state (`terminated` or `waiting`).
fn pod_in_state(job: &Job, index: Option<u32>, phase: &str, state: Value) -> Pod {
    let name = job.metadata.name.clone().unwrap();
    let mut labels = job
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    labels.insert(LABEL_JOB_NAME.into(), name.clone());
    let annotations = index
        .map(|index| json!({ ANNOTATION_INDEX: index.to_string() }))
        .unwrap_or(json!({}));
    serde_json::from_value(json!({
        "metadata": { "name": format!("{name}-{}-x7k2q", index.unwrap_or(0)), "labels": labels, "annotations": annotations },
        "status": { "phase": phase, "containerStatuses": [{
            "name": "fruitpipe", "image": "fruitpipe:test", "imageID": "", "ready": false, "restartCount": 0,
            "state": state
        }]}
    }))
    .unwrap()
}

/// A finished pod of `job` with the runner's exit code and termination message.
fn pod(job: &Job, index: Option<u32>, exit_code: i32, message: Value) -> Pod {
    let phase = if exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    pod_in_state(
        job,
        index,
        phase,
        json!({ "terminated": { "exitCode": exit_code, "message": message.to_string() } }),
    )
}

fn condition(status: &Value, type_: &str) -> Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|condition| condition["type"] == type_)
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn a_new_pipeline_starts_planning() {
    let pipeline = pipeline(example_spec());
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![]).await;
        let job = api.create_job().await;
        assert_eq!(job.metadata.name, Some(job_name(Stage::Plan)));
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Planning");
        assert_eq!(status["runId"], json!(pipeline_run_id(&seen)));
        assert_eq!(condition(&status, "Planned")["status"], "False");
        let event = api.event().await;
        assert_eq!(event["reason"], "Planning");
    })
    .await;
}

#[tokio::test]
async fn a_finished_plan_starts_an_indexed_extract_with_its_shard_count() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Planning, 0, &[]);
    let plan = job(&pipeline, Stage::Plan, 0, complete());
    let plan_pod = pod(
        &plan,
        None,
        0,
        json!({ "phase": "plan", "shards": 3, "images": 1200 }),
    );
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![plan]).await;
        assert_eq!(api.list_pods(&[plan_pod]).await, "status.phase=Succeeded");
        let extract = api.create_job().await;
        let spec = extract.spec.unwrap();
        assert_eq!(extract.metadata.name, Some(job_name(Stage::Extract)));
        assert_eq!(
            (spec.completions, spec.completion_mode.as_deref()),
            (Some(3), Some("Indexed"))
        );
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Extracting");
        assert_eq!(status["shards"]["total"], 3);
        assert_eq!(status["completedStages"], json!(["plan"]));
        assert!(
            condition(&status, "Planned")["message"]
                .as_str()
                .unwrap()
                .contains("1200 photos in 3 shards")
        );
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn a_failed_plan_fails_the_pipeline_with_the_runners_message() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Planning, 0, &[]);
    let plan = job(&pipeline, Stage::Plan, 0, failed("PodFailurePolicy"));
    let error = "no images (.jpg, .jpeg, .png) under s3://fruits/fruits360-sample/; check --input";
    let plan_pod = pod(&plan, None, 2, json!({ "phase": "plan", "error": error }));
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![plan]).await;
        assert_eq!(api.list_pods(&[plan_pod]).await, "status.phase=Failed");
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Failed");
        let failed = condition(&status, "Failed");
        assert_eq!(failed["reason"], "PlanFailed");
        assert!(
            failed["message"].as_str().unwrap().contains("no images"),
            "{failed}"
        );
        let event = api.event().await;
        assert_eq!(event["type"], "Warning");
        assert!(event["note"].as_str().unwrap().contains("no images"));
    })
    .await;
}

#[tokio::test]
async fn an_extract_index_out_of_retries_fails_the_pipeline_and_names_the_shard() {
    let pipeline = with_status(
        pipeline(example_spec()),
        Phase::Extracting,
        3,
        &[Stage::Plan],
    );
    // The plan Job is done and recorded: its pods are not read again.
    let plan = job(&pipeline, Stage::Plan, 0, complete());
    let mut extract_status = failed("FailedIndexes");
    extract_status["completedIndexes"] = json!("0,2");
    extract_status["failedIndexes"] = json!("1");
    let extract = job(&pipeline, Stage::Extract, 3, extract_status);
    let done = pod(
        &extract,
        Some(0),
        0,
        json!({ "phase": "extract", "shard": 0, "used": 500, "skipped": 0 }),
    );
    let broken = pod(
        &extract,
        Some(1),
        1,
        json!({ "phase": "extract", "error": "download of s3://fruits/x.jpg failed after retries: SlowDown" }),
    );
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![plan, extract]).await;
        api.list_pods(&[done, broken]).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Failed");
        assert_eq!(
            status["shards"],
            json!({ "total": 3, "succeeded": 2, "failed": 1, "projected": 0 })
        );
        let failed = condition(&status, "Failed");
        assert_eq!(failed["reason"], "ExtractFailed");
        assert!(
            failed["message"]
                .as_str()
                .unwrap()
                .contains("shard 1: exit code 1: download"),
            "{failed}"
        );
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn an_oom_killed_pod_says_out_of_memory_and_which_field_to_raise() {
    let mut spec = example_spec();
    spec["runner"]["resources"]["limits"] = json!({ "memory": "1Gi" });
    let pipeline = with_status(pipeline(spec), Phase::Extracting, 3, &[Stage::Plan]);
    let extract = job(&pipeline, Stage::Extract, 3, failed("FailedIndexes"));
    // FallbackToLogsOnError: the empty termination file gave way to the log's tail.
    let log = r#"{"level":"INFO","fields":{"message":"shard 2: 1200 photos"}}"#;
    let killed = pod_in_state(
        &extract,
        Some(2),
        "Failed",
        json!({ "terminated": { "exitCode": 137, "reason": "OOMKilled", "message": log } }),
    );
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![extract]).await;
        api.list_pods(&[killed]).await;
        let status = api.patch_status(&seen).await;
        let message = condition(&status, "Failed")["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.contains("shard 2: out of memory: raise spec.runner.resources.limits.memory")
                && message.contains("memory limit 1Gi"),
            "{message}"
        );
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn a_killed_pod_without_a_message_says_how_it_ended() {
    let pipeline = with_status(
        pipeline(example_spec()),
        Phase::Fitting,
        1,
        &[Stage::Plan, Stage::Extract],
    );
    let fit = job(&pipeline, Stage::Fit, 1, failed("BackoffLimitExceeded"));
    let killed = pod_in_state(
        &fit,
        None,
        "Failed",
        json!({ "terminated": { "exitCode": 137, "reason": "Error" } }),
    );
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![fit]).await;
        api.list_pods(&[killed]).await;
        let status = api.patch_status(&seen).await;
        let message = condition(&status, "Failed")["message"].clone();
        assert_eq!(message, "fit failed: killed by signal 9 (exit code 137)");
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn a_running_extract_follows_parallelism_and_suspend_changes() {
    let mut spec = example_spec();
    spec["parallelism"] = json!(1);
    let mut pipeline = with_status(pipeline(spec), Phase::Extracting, 3, &[Stage::Plan]);
    pipeline.metadata.generation = Some(2);
    let mut running = job(
        &pipeline,
        Stage::Extract,
        3,
        json!({ "active": 3, "ready": 3, "completedIndexes": "0" }),
    );
    running.spec.as_mut().unwrap().parallelism = Some(3);
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        // Every active pod is ready: no pod is read.
        api.list_jobs(vec![running.clone()]).await;
        let patch = api.patch_job(&running).await;
        assert_eq!(
            patch,
            json!({ "spec": { "parallelism": 1, "suspend": false } })
        );
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Extracting");
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(
            status["runId"],
            json!(pipeline_run_id(&seen)),
            "a parallelism change must not start a new run"
        );
        assert_eq!(status["shards"]["succeeded"], 1);
    })
    .await;
}

#[tokio::test]
async fn suspend_stops_a_running_plan_and_fit_too() {
    for (stage, phase, done) in [
        (Stage::Plan, Phase::Planning, vec![]),
        (
            Stage::Fit,
            Phase::Fitting,
            vec![Stage::Plan, Stage::Extract],
        ),
    ] {
        let mut spec = example_spec();
        spec["suspend"] = json!(true);
        let pipeline = with_status(pipeline(spec), phase, 1, &done);
        // Created before the user set suspend.
        let mut running = job(&pipeline, stage, 1, json!({ "active": 1, "ready": 1 }));
        running.spec.as_mut().unwrap().suspend = Some(false);
        let seen = pipeline.clone();
        reconcile_with(pipeline, |mut api| async move {
            api.list_jobs(vec![running.clone()]).await;
            let patch = api.patch_job(&running).await;
            assert_eq!(patch, json!({ "spec": { "suspend": true } }));
            let status = api.patch_status(&seen).await;
            assert_eq!(status["phase"], "Suspended");
            let event = api.event().await;
            assert_eq!(event["reason"], "Suspended");
        })
        .await;
    }
}

#[tokio::test]
async fn a_finished_extract_starts_the_fit() {
    let pipeline = with_status(
        pipeline(example_spec()),
        Phase::Extracting,
        2,
        &[Stage::Plan],
    );
    let mut extract_status = complete();
    extract_status["completedIndexes"] = json!("0-1");
    let extract = job(&pipeline, Stage::Extract, 2, extract_status);
    let pods = vec![
        pod(
            &extract,
            Some(0),
            0,
            json!({ "phase": "extract", "used": 499, "skipped": 1 }),
        ),
        pod(
            &extract,
            Some(1),
            0,
            json!({ "phase": "extract", "used": 400, "skipped": 0 }),
        ),
    ];
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![extract]).await;
        api.list_pods(&pods).await;
        let fit = api.create_job().await;
        assert_eq!(fit.metadata.name, Some(job_name(Stage::Fit)));
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Fitting");
        assert_eq!(status["images"], json!({ "processed": 899, "skipped": 1 }));
        assert_eq!(status["shards"]["succeeded"], 2);
        assert_eq!(status["completedStages"], json!(["plan", "extract"]));
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn pods_of_a_deleted_job_with_the_same_name_are_not_read() {
    // The extract Job was deleted with --cascade=orphan and created again: the old pods
    // keep the job-name label but not the new Job's UID.
    let pipeline = with_status(
        pipeline(example_spec()),
        Phase::Extracting,
        1,
        &[Stage::Plan],
    );
    let mut extract_status = complete();
    extract_status["completedIndexes"] = json!("0");
    let extract = job(&pipeline, Stage::Extract, 1, extract_status);
    let mine = pod(
        &extract,
        Some(0),
        0,
        json!({ "phase": "extract", "used": 10, "skipped": 0 }),
    );
    let mut stale = pod(
        &extract,
        Some(0),
        0,
        json!({ "phase": "extract", "used": 999, "skipped": 7 }),
    );
    stale
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(LABEL_CONTROLLER_UID.into(), "uid-of-the-deleted-job".into());
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![extract]).await;
        api.list_pods(&[stale, mine]).await;
        api.create_job().await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["images"], json!({ "processed": 10, "skipped": 0 }));
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn a_failed_fit_fails_the_pipeline() {
    let pipeline = with_status(
        pipeline(example_spec()),
        Phase::Fitting,
        1,
        &[Stage::Plan, Stage::Extract],
    );
    let fit = job(&pipeline, Stage::Fit, 1, failed("PodFailurePolicy"));
    let pods = [pod(
        &fit,
        None,
        2,
        json!({ "phase": "fit", "error": "--components 2000 is more than the 1280 features the model produces; give at most 1280" }),
    )];
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![fit]).await;
        api.list_pods(&pods).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Failed");
        let failed = condition(&status, "Failed");
        assert_eq!(failed["reason"], "FitFailed");
        assert!(
            failed["message"].as_str().unwrap().contains("at most 1280"),
            "{failed}"
        );
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn a_finished_fit_reports_k_variance_and_outputs() {
    let pipeline = with_status(
        pipeline(example_spec()),
        Phase::Fitting,
        1,
        &[Stage::Plan, Stage::Extract],
    );
    let fit = job(&pipeline, Stage::Fit, 1, complete());
    let outputs = json!({
        "features": "s3://fruits/pca/fruits-360/features_pca.csv",
        "model": "s3://fruits/pca/fruits-360/pca_model.json",
        "summary": "s3://fruits/pca/fruits-360/summary.json",
        "errors": "s3://fruits/pca/fruits-360/errors.csv"
    });
    let pods = [pod(
        &fit,
        None,
        0,
        json!({ "phase": "fit", "images": 10, "skipped": 0, "k": 7, "explainedVariance": 0.951, "outputs": outputs }),
    )];
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![fit]).await;
        api.list_pods(&pods).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Succeeded");
        assert_eq!(status["k"], 7);
        assert_eq!(status["explainedVariance"], 0.951);
        assert_eq!(status["outputs"], outputs);
        assert_eq!(status["completedStages"], json!(["plan", "extract", "fit"]));
        assert!(status["completionTime"].is_string());
        let event = api.event().await;
        assert_eq!(event["reason"], "Succeeded");
    })
    .await;
}

/// A runner leaves `outputs` out of a termination message that would pass 4 KiB; the
/// status still lists them, from the spec.
#[tokio::test]
async fn an_assemble_without_room_for_its_outputs_still_lists_them() {
    let mut spec = example_spec();
    spec["output"]["formats"] = json!(["csv", "parquet"]);
    let pipeline = with_status(
        pipeline(spec),
        Phase::Assembling,
        1,
        &[Stage::Plan, Stage::Extract, Stage::Fit, Stage::Project],
    );
    let assemble = job(&pipeline, Stage::Assemble, 1, complete());
    let pods = [pod(
        &assemble,
        None,
        0,
        json!({ "phase": "assemble", "images": 10, "skipped": 0, "k": 7, "explainedVariance": 0.951 }),
    )];
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![assemble]).await;
        api.list_pods(&pods).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Succeeded");
        let base = "s3://fruits/pca/fruits-360";
        assert_eq!(
            status["outputs"],
            json!({
                "features": format!("{base}/features_pca.csv"),
                "model": format!("{base}/pca_model.json"),
                "summary": format!("{base}/summary.json"),
                "errors": format!("{base}/errors.csv"),
                "report": format!("{base}/report.html"),
                "scree": format!("{base}/scree.png"),
                "scatter": format!("{base}/pc_scatter.png"),
                "parquet": format!("{base}/features_pca.parquet"),
            })
        );
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn an_invalid_spec_fails_with_a_condition_that_says_what_to_fix() {
    let mut spec = example_spec();
    spec["model"]["uri"] = json!("models/features.onnx");
    let pipeline = pipeline(spec);
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![]).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Failed");
        let failed = condition(&status, "Failed");
        assert_eq!(failed["reason"], "InvalidSpec");
        assert!(
            failed["message"]
                .as_str()
                .unwrap()
                .contains("spec.model.uri")
        );
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn a_restarted_operator_adopts_its_jobs_instead_of_duplicating_them() {
    // Status already says Planning and the plan Job is still running: nothing to create.
    let planning = with_status(pipeline(example_spec()), Phase::Planning, 0, &[]);
    let plan = job(
        &planning,
        Stage::Plan,
        0,
        json!({ "active": 1, "ready": 1 }),
    );
    reconcile_with(planning, |mut api| async move {
        api.list_jobs(vec![plan]).await;
        // Status unchanged: no patch, no event.
    })
    .await;

    // The status write was lost after the Job was created: the create meets the existing
    // Job (409), which this pipeline owns, and carries on.
    let pipeline = pipeline(example_spec());
    let mine = job(&pipeline, Stage::Plan, 0, json!({}));
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![]).await;
        api.refuse_create(409, "AlreadyExists", "jobs.batch already exists")
            .await;
        api.get_job(&mine).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Planning");
        assert!(
            status["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["type"] != "JobsCreated")
        );
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn a_job_of_another_owner_under_our_name_is_a_conflict_not_an_adoption() {
    let pipeline = pipeline(example_spec());
    let mut stranger = job(&pipeline, Stage::Plan, 0, complete());
    let owner = &mut stranger.metadata.owner_references.as_mut().unwrap()[0];
    owner.uid = "0d5c6e0a-0000-0000-0000-old-pipeline".into();
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        // Listed by the run's label, but not ours: ignored, and its pods never read.
        api.list_jobs(vec![stranger.clone()]).await;
        api.refuse_create(409, "AlreadyExists", "jobs.batch already exists")
            .await;
        api.get_job(&stranger).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Planning");
        let conflict = condition(&status, "JobsCreated");
        assert_eq!(
            (&conflict["status"], &conflict["reason"]),
            (&json!("False"), &json!("JobConflict"))
        );
        let message = conflict["message"].as_str().unwrap();
        assert!(
            message.contains("old-pipeline") && message.contains(UID),
            "{message}"
        );
        api.event().await;
        let warning = api.event().await;
        assert_eq!(
            (&warning["type"], &warning["reason"]),
            (&json!("Warning"), &json!("JobConflict"))
        );
    })
    .await;
}

#[tokio::test]
async fn a_job_the_api_server_refuses_fails_the_pipeline_with_its_message() {
    let pipeline = pipeline(example_spec());
    let seen = pipeline.clone();
    let message =
        "Job.batch \"x\" is invalid: spec.template.spec.containers[0].image: Required value";
    reconcile_with(pipeline, move |mut api| async move {
        api.list_jobs(vec![]).await;
        api.refuse_create(422, "Invalid", message).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Failed");
        let failed = condition(&status, "Failed");
        assert_eq!(failed["reason"], "JobInvalid");
        assert!(
            failed["message"]
                .as_str()
                .unwrap()
                .contains("containers[0].image: Required value")
        );
        let event = api.event().await;
        assert_eq!(
            (&event["type"], &event["reason"]),
            (&json!("Warning"), &json!("Failed"))
        );
    })
    .await;
}

#[tokio::test]
async fn a_quota_refusal_is_reported_once_and_retried() {
    let quota = "jobs.batch \"x\" is forbidden: exceeded quota: compute, requested: count/jobs.batch=1, used: count/jobs.batch=10, limited: count/jobs.batch=10";
    let pipeline = pipeline(example_spec());
    let seen = pipeline.clone();
    let (ctx, mut api) = context();
    let script = tokio::spawn(async move {
        api.list_jobs(vec![]).await;
        api.refuse_create(403, "Forbidden", quota).await;
        let status = api.patch_status(&seen).await;
        let refused = condition(&status, "JobsCreated");
        assert_eq!(
            (&refused["status"], &refused["reason"]),
            (&json!("False"), &json!("Forbidden"))
        );
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("exceeded quota")
        );
        assert_eq!(status["phase"], "Planning");
        api.event().await;
        let warning = api.event().await;
        assert_eq!(warning["reason"], "Forbidden");
        (api, status)
    });
    let first = reconcile(Arc::new(pipeline.clone()), Arc::clone(&ctx))
        .await
        .unwrap();
    let (mut api, status) = script.await.unwrap();
    assert_eq!(
        first,
        kube::runtime::controller::Action::requeue(Duration::from_secs(5))
    );

    // The next look meets the same refusal: no new event, and a longer wait.
    let mut again = pipeline.clone();
    again.status = Some(serde_json::from_value(status).unwrap());
    let script = tokio::spawn(async move {
        api.list_jobs(vec![]).await;
        api.refuse_create(403, "Forbidden", quota).await;
    });
    let second = reconcile(Arc::new(again), ctx).await.unwrap();
    script.await.unwrap();
    assert_eq!(
        second,
        kube::runtime::controller::Action::requeue(Duration::from_secs(10))
    );
}

#[tokio::test]
async fn a_pipeline_being_deleted_is_left_to_garbage_collection() {
    let mut pipeline = with_status(
        pipeline(example_spec()),
        Phase::Extracting,
        3,
        &[Stage::Plan],
    );
    pipeline.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    // No API call at all: the Jobs' owner references make Kubernetes delete them.
    reconcile_with(pipeline, |_api| async move {}).await;
}

#[tokio::test]
async fn a_deleted_finished_job_does_not_rewind_the_pipeline() {
    // Plan finished and was recorded; then its Job was deleted (kubectl delete job, or a
    // TTL a policy injected). The pipeline goes on to extract, never back to plan.
    let pipeline = with_status(
        pipeline(example_spec()),
        Phase::Extracting,
        3,
        &[Stage::Plan],
    );
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![]).await;
        let extract = api.create_job().await;
        assert_eq!(extract.metadata.name, Some(job_name(Stage::Extract)));
        assert_eq!(extract.spec.unwrap().completions, Some(3));
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Extracting");
    })
    .await;
}

#[tokio::test]
async fn a_finished_pipeline_is_not_run_again() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Succeeded, 1, &Stage::ALL);
    // No API call: nothing to look at.
    reconcile_with(pipeline, |_api| async move {}).await;
}

#[tokio::test]
async fn a_job_without_pods_for_minutes_is_reported() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Planning, 0, &[]);
    let mut plan = job(&pipeline, Stage::Plan, 0, json!({}));
    let long_ago =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(600);
    plan.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        long_ago,
    ));
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![plan]).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Planning");
        let condition = condition(&status, "PodsCreated");
        assert_eq!(condition["status"], "False");
        let message = condition["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("kubectl describe job {}", job_name(Stage::Plan))),
            "{message}"
        );
        let event = api.event().await;
        assert_eq!(
            (&event["type"], &event["reason"]),
            (&json!("Warning"), &json!("PodsNotCreated"))
        );
    })
    .await;
}

#[tokio::test]
async fn a_young_job_without_pods_is_left_alone() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Planning, 0, &[]);
    let mut plan = job(&pipeline, Stage::Plan, 0, json!({}));
    plan.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    // Nothing changed: no status patch, no event.
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![plan]).await;
    })
    .await;
}

#[tokio::test]
async fn a_pod_that_cannot_start_is_reported_once_per_reason() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Planning, 0, &[]);
    let plan = job(
        &pipeline,
        Stage::Plan,
        0,
        json!({ "active": 1, "ready": 0 }),
    );
    let waiting = pod_in_state(
        &plan,
        None,
        "Pending",
        json!({ "waiting": { "reason": "CreateContainerConfigError", "message": "secret \"fruitpipe-s3\" not found" } }),
    );
    let seen = pipeline.clone();
    let (plan2, waiting2) = (plan.clone(), waiting.clone());
    let (status_tx, status_rx) = tokio::sync::oneshot::channel();
    reconcile_with(pipeline.clone(), |mut api| async move {
        api.list_jobs(vec![plan]).await;
        assert_eq!(api.list_pods(&[waiting]).await, "status.phase=Pending");
        let status = api.patch_status(&seen).await;
        let stuck = condition(&status, "PodsStarted");
        assert_eq!(
            (&stuck["status"], &stuck["reason"]),
            (&json!("False"), &json!("CreateContainerConfigError"))
        );
        let message = stuck["message"].as_str().unwrap();
        assert!(
            message.contains("secret \"fruitpipe-s3\" not found")
                && message.contains("AWS_ACCESS_KEY_ID"),
            "{message}"
        );
        let event = api.event().await;
        assert_eq!(
            (&event["type"], &event["reason"]),
            (&json!("Warning"), &json!("CreateContainerConfigError"))
        );
        status_tx.send(status).unwrap();
    })
    .await;

    // Still stuck for the same reason: the status stays as it is, no second event.
    let mut again = pipeline.clone();
    again.status = Some(serde_json::from_value(status_rx.await.unwrap()).unwrap());
    reconcile_with(again.clone(), |mut api| async move {
        api.list_jobs(vec![plan2]).await;
        api.list_pods(&[waiting2]).await;
    })
    .await;

    // The Secret appeared and the pod runs: the condition turns True.
    let running = job(&again, Stage::Plan, 0, json!({ "active": 1, "ready": 1 }));
    let seen = again.clone();
    reconcile_with(again, |mut api| async move {
        api.list_jobs(vec![running]).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(condition(&status, "PodsStarted")["status"], "True");
    })
    .await;
}

#[tokio::test]
async fn an_unschedulable_pod_is_reported_with_the_schedulers_words() {
    let pipeline = with_status(
        pipeline(example_spec()),
        Phase::Extracting,
        2,
        &[Stage::Plan],
    );
    let extract = job(
        &pipeline,
        Stage::Extract,
        2,
        json!({ "active": 2, "ready": 1 }),
    );
    let mut pending: Pod = pod_in_state(
        &extract,
        Some(1),
        "Pending",
        json!({ "waiting": { "reason": "ContainerCreating" } }),
    );
    let status = pending.status.as_mut().unwrap();
    status.container_statuses = None;
    status.conditions = Some(vec![
        serde_json::from_value(json!({
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory."
        }))
        .unwrap(),
    ]);
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![extract]).await;
        api.list_pods(&[pending]).await;
        let status = api.patch_status(&seen).await;
        let stuck = condition(&status, "PodsStarted");
        assert_eq!(stuck["reason"], "Unschedulable");
        assert!(
            stuck["message"]
                .as_str()
                .unwrap()
                .contains("3 Insufficient memory")
        );
        api.event().await;
    })
    .await;
}
