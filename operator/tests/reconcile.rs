//! The reconciler against a mocked API server (tower-test): each test plays the API server's
//! side of one reconcile, request by request, for one phase transition.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{NAMESPACE, defaults, example_spec, pipeline};
use fruitpipe_operator::api::{FruitPipeline, Phase};
use fruitpipe_operator::controller::{Context, reconcile};
use fruitpipe_operator::jobs::{ANNOTATION_INDEX, LABEL_JOB_NAME, Run, Stage, render};
use fruitpipe_operator::metrics::Metrics;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The API server's side of the conversation.
struct ApiServer(Handle);

impl ApiServer {
    async fn next(
        &mut self,
        method: Method,
        path: &str,
    ) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
        let (request, respond) = self
            .0
            .next_request()
            .await
            .expect("the reconciler stopped calling the API");
        let uri = request.uri().to_string();
        assert_eq!(
            request.method(),
            method,
            "unexpected {} {uri}",
            request.method()
        );
        assert!(
            uri.starts_with(path),
            "expected {method} {path}..., got {uri}"
        );
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (body, respond)
    }

    fn reply(respond: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
        respond.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }

    async fn list_jobs(&mut self, jobs: Vec<Job>) {
        let (_, respond) = self
            .next(
                Method::GET,
                &format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs?"),
            )
            .await;
        Self::reply(
            respond,
            200,
            &json!({ "apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": jobs }),
        );
    }

    async fn list_pods(&mut self, pods: Vec<Pod>) {
        let (_, respond) = self
            .next(
                Method::GET,
                &format!("/api/v1/namespaces/{NAMESPACE}/pods?"),
            )
            .await;
        Self::reply(
            respond,
            200,
            &json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods }),
        );
    }

    async fn create_job(&mut self) -> Job {
        let (body, respond) = self
            .next(
                Method::POST,
                &format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs?"),
            )
            .await;
        Self::reply(respond, 201, &body);
        serde_json::from_value(body).unwrap()
    }

    async fn create_job_conflict(&mut self) {
        let (_, respond) = self
            .next(
                Method::POST,
                &format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs?"),
            )
            .await;
        let status = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists" });
        Self::reply(respond, 409, &status);
    }

    async fn patch_job(&mut self, name: &str) -> Value {
        let (body, respond) = self
            .next(
                Method::PATCH,
                &format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}?"),
            )
            .await;
        let job = render(
            &pipeline(example_spec()),
            Run {
                generation: 1,
                shards: 3,
            },
            Stage::Extract,
            &defaults(),
        );
        Self::reply(respond, 200, &serde_json::to_value(job).unwrap());
        body
    }

    async fn patch_status(&mut self, pipeline: &FruitPipeline) -> Value {
        let path = format!(
            "/apis/fruitpipe.dev/v1alpha1/namespaces/{NAMESPACE}/fruitpipelines/fruits-360/status?"
        );
        let (body, respond) = self.next(Method::PATCH, &path).await;
        let mut updated = serde_json::to_value(pipeline).unwrap();
        updated["status"] = body["status"].clone();
        Self::reply(respond, 200, &updated);
        body["status"].clone()
    }

    async fn event(&mut self) -> Value {
        let (body, respond) = self
            .next(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events?"),
            )
            .await;
        Self::reply(respond, 201, &body);
        body
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

fn with_status(mut pipeline: FruitPipeline, phase: Phase, shards: u32) -> FruitPipeline {
    let mut status = pipeline.status.take().unwrap_or_default();
    status.phase = phase;
    status.run_generation = Some(1);
    status.observed_generation = Some(1);
    status.shards.total = shards;
    status.start_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    ));
    pipeline.status = Some(status);
    pipeline
}

fn job(pipeline: &FruitPipeline, stage: Stage, shards: u32, status: Value) -> Job {
    let mut job = render(
        pipeline,
        Run {
            generation: 1,
            shards,
        },
        stage,
        &defaults(),
    );
    job.status = Some(serde_json::from_value(status).unwrap());
    job
}

fn complete() -> Value {
    json!({ "conditions": [{ "type": "Complete", "status": "True" }] })
}

fn failed(reason: &str) -> Value {
    json!({ "conditions": [{ "type": "Failed", "status": "True", "reason": reason, "message": "Job has failed" }] })
}

fn pod(job: &Job, index: Option<u32>, exit_code: i32, message: Value) -> Pod {
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
        "metadata": { "name": format!("{name}-{}", index.unwrap_or(0)), "labels": labels, "annotations": annotations },
        "status": { "containerStatuses": [{
            "name": "fruitpipe", "image": "fruitpipe:test", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": exit_code, "message": message.to_string() } }
        }]}
    }))
    .unwrap()
}

#[tokio::test]
async fn a_new_pipeline_starts_planning() {
    let pipeline = pipeline(example_spec());
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![]).await;
        let job = api.create_job().await;
        assert_eq!(job.metadata.name.as_deref(), Some("fruits-360-g1-plan"));
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Planning");
        assert_eq!(status["runGeneration"], 1);
        assert_eq!(status["conditions"][0]["type"], "Planned");
        assert_eq!(status["conditions"][0]["status"], "False");
        let event = api.event().await;
        assert_eq!(event["reason"], "Planning");
    })
    .await;
}

#[tokio::test]
async fn a_finished_plan_starts_an_indexed_extract_with_its_shard_count() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Planning, 0);
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
        api.list_pods(vec![plan_pod]).await;
        let extract = api.create_job().await;
        let spec = extract.spec.unwrap();
        assert_eq!(
            extract.metadata.name.as_deref(),
            Some("fruits-360-g1-extract")
        );
        assert_eq!(
            (spec.completions, spec.completion_mode.as_deref()),
            (Some(3), Some("Indexed"))
        );
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Extracting");
        assert_eq!(status["shards"]["total"], 3);
        assert!(
            status["conditions"]
                .to_string()
                .contains("1200 photos in 3 shards")
        );
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn a_failed_plan_fails_the_pipeline_with_the_runners_message() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Planning, 0);
    let plan = job(&pipeline, Stage::Plan, 0, failed("PodFailurePolicy"));
    let error = "no images (.jpg, .jpeg, .png) under s3://fruits/fruits360-sample/; check --input";
    let plan_pod = pod(&plan, None, 2, json!({ "phase": "plan", "error": error }));
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![plan]).await;
        api.list_pods(vec![plan_pod]).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Failed");
        let failed = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Failed")
            .unwrap()
            .clone();
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
    let pipeline = with_status(pipeline(example_spec()), Phase::Extracting, 3);
    let plan = job(&pipeline, Stage::Plan, 0, complete());
    let plan_pod = pod(
        &plan,
        None,
        0,
        json!({ "phase": "plan", "shards": 3, "images": 1200 }),
    );
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
        api.list_pods(vec![plan_pod, done, broken]).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Failed");
        assert_eq!(
            status["shards"],
            json!({ "total": 3, "succeeded": 2, "failed": 1 })
        );
        assert_eq!(status["images"]["processed"], 500);
        let text = status["conditions"].to_string();
        assert!(
            text.contains("ExtractFailed") && text.contains("shard 1: download"),
            "{text}"
        );
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn a_running_extract_follows_parallelism_and_suspend_changes() {
    let mut spec = example_spec();
    spec["parallelism"] = json!(1);
    let mut pipeline = with_status(pipeline(spec), Phase::Extracting, 3);
    pipeline.metadata.generation = Some(2);
    let plan = job(&pipeline, Stage::Plan, 0, complete());
    let plan_pod = pod(
        &plan,
        None,
        0,
        json!({ "phase": "plan", "shards": 3, "images": 1200 }),
    );
    let mut running = render(
        &pipeline,
        Run {
            generation: 1,
            shards: 3,
        },
        Stage::Extract,
        &defaults(),
    );
    running.spec.as_mut().unwrap().parallelism = Some(3);
    running.status =
        Some(serde_json::from_value(json!({ "active": 3, "completedIndexes": "0" })).unwrap());
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![plan, running]).await;
        api.list_pods(vec![plan_pod]).await;
        let patch = api.patch_job("fruits-360-g1-extract").await;
        assert_eq!(
            patch,
            json!({ "spec": { "parallelism": 1, "suspend": false } })
        );
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Extracting");
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(
            status["runGeneration"], 1,
            "a parallelism change must not start a new run"
        );
        assert_eq!(status["shards"]["succeeded"], 1);
    })
    .await;
}

#[tokio::test]
async fn a_finished_extract_starts_the_fit() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Extracting, 2);
    let plan = job(&pipeline, Stage::Plan, 0, complete());
    let plan_pod = pod(
        &plan,
        None,
        0,
        json!({ "phase": "plan", "shards": 2, "images": 900 }),
    );
    let mut extract_status = complete();
    extract_status["completedIndexes"] = json!("0-1");
    let extract = job(&pipeline, Stage::Extract, 2, extract_status);
    let pods = vec![
        plan_pod,
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
        api.list_jobs(vec![plan, extract]).await;
        api.list_pods(pods).await;
        let fit = api.create_job().await;
        assert_eq!(fit.metadata.name.as_deref(), Some("fruits-360-g1-fit"));
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Fitting");
        assert_eq!(status["images"], json!({ "processed": 899, "skipped": 1 }));
        assert_eq!(status["shards"]["succeeded"], 2);
        api.event().await;
    })
    .await;
}

fn finished_extract(pipeline: &FruitPipeline) -> (Vec<Job>, Vec<Pod>) {
    let plan = job(pipeline, Stage::Plan, 0, complete());
    let plan_pod = pod(
        &plan,
        None,
        0,
        json!({ "phase": "plan", "shards": 1, "images": 10 }),
    );
    let mut extract_status = complete();
    extract_status["completedIndexes"] = json!("0");
    let extract = job(pipeline, Stage::Extract, 1, extract_status);
    let extract_pod = pod(
        &extract,
        Some(0),
        0,
        json!({ "phase": "extract", "used": 10, "skipped": 0 }),
    );
    (vec![plan, extract], vec![plan_pod, extract_pod])
}

#[tokio::test]
async fn a_failed_fit_fails_the_pipeline() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Fitting, 1);
    let (mut jobs, mut pods) = finished_extract(&pipeline);
    let fit = job(&pipeline, Stage::Fit, 1, failed("PodFailurePolicy"));
    pods.push(pod(&fit, None, 2, json!({ "phase": "fit", "error": "--components 2000 is more than the 1280 features the model produces; give at most 1280" })));
    jobs.push(fit);
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(jobs).await;
        api.list_pods(pods).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Failed");
        let text = status["conditions"].to_string();
        assert!(
            text.contains("FitFailed") && text.contains("at most 1280"),
            "{text}"
        );
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn a_finished_fit_reports_k_variance_and_outputs() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Fitting, 1);
    let (mut jobs, mut pods) = finished_extract(&pipeline);
    let fit = job(&pipeline, Stage::Fit, 1, complete());
    let outputs = json!({
        "features": "s3://fruits/pca/fruits-360/features_pca.csv",
        "model": "s3://fruits/pca/fruits-360/pca_model.json",
        "summary": "s3://fruits/pca/fruits-360/summary.json",
        "errors": "s3://fruits/pca/fruits-360/errors.csv"
    });
    pods.push(pod(&fit, None, 0, json!({ "phase": "fit", "images": 10, "skipped": 0, "k": 7, "explainedVariance": 0.951, "outputs": outputs })));
    jobs.push(fit);
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(jobs).await;
        api.list_pods(pods).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Succeeded");
        assert_eq!(status["k"], 7);
        assert_eq!(status["explainedVariance"], 0.951);
        assert_eq!(status["outputs"], outputs);
        assert!(status["completionTime"].is_string());
        let event = api.event().await;
        assert_eq!(event["reason"], "Succeeded");
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
        let text = status["conditions"].to_string();
        assert!(
            text.contains("InvalidSpec") && text.contains("spec.model.uri"),
            "{text}"
        );
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn a_restarted_operator_adopts_its_jobs_instead_of_duplicating_them() {
    // Status already says Planning and the plan Job is still running: nothing to create.
    let planning = with_status(pipeline(example_spec()), Phase::Planning, 0);
    let plan = job(&planning, Stage::Plan, 0, json!({ "active": 1 }));
    reconcile_with(planning, |mut api| async move {
        api.list_jobs(vec![plan]).await;
        api.list_pods(vec![]).await;
        // Status unchanged: no patch, no event.
    })
    .await;

    // The status write was lost after the Job was created: the create meets the existing
    // Job (409) and carries on.
    let pipeline = pipeline(example_spec());
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![]).await;
        api.create_job_conflict().await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Planning");
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn jobs_of_other_owners_are_ignored() {
    let pipeline = pipeline(example_spec());
    let mut stranger = job(&pipeline, Stage::Plan, 0, complete());
    stranger.metadata.owner_references.as_mut().unwrap()[0].uid = "someone-else".into();
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![stranger]).await;
        api.list_pods(vec![]).await;
        api.create_job_conflict().await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Planning");
        api.event().await;
    })
    .await;
}

#[tokio::test]
async fn a_pipeline_being_deleted_is_left_to_garbage_collection() {
    let mut pipeline = with_status(pipeline(example_spec()), Phase::Extracting, 3);
    pipeline.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    // No API call at all: the Jobs' owner references make Kubernetes delete them.
    reconcile_with(pipeline, |_api| async move {}).await;
}

#[tokio::test]
async fn the_shard_count_survives_the_plan_pod() {
    // The plan pod was garbage-collected after the status recorded 3 shards.
    let pipeline = with_status(pipeline(example_spec()), Phase::Extracting, 3);
    let plan = job(&pipeline, Stage::Plan, 0, complete());
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![plan]).await;
        api.list_pods(vec![]).await;
        let extract = api.create_job().await;
        assert_eq!(extract.spec.unwrap().completions, Some(3));
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Extracting");
    })
    .await;
}

#[tokio::test]
async fn a_finished_pipeline_is_not_run_again() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Succeeded, 1);
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![]).await;
    })
    .await;
}

#[tokio::test]
async fn a_job_without_pods_for_minutes_is_reported() {
    let pipeline = with_status(pipeline(example_spec()), Phase::Planning, 0);
    let mut plan = job(&pipeline, Stage::Plan, 0, json!({}));
    let long_ago =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(600);
    plan.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        long_ago,
    ));
    let seen = pipeline.clone();
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![plan]).await;
        api.list_pods(vec![]).await;
        let status = api.patch_status(&seen).await;
        assert_eq!(status["phase"], "Planning");
        let condition = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|condition| condition["type"] == "PodsCreated")
            .expect("a PodsCreated condition")
            .clone();
        assert_eq!(condition["status"], "False");
        let message = condition["message"].as_str().unwrap();
        assert!(
            message.contains("kubectl describe job fruits-360-g1-plan"),
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
    let pipeline = with_status(pipeline(example_spec()), Phase::Planning, 0);
    let mut plan = job(&pipeline, Stage::Plan, 0, json!({}));
    plan.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    // Nothing changed: no status patch, no event.
    reconcile_with(pipeline, |mut api| async move {
        api.list_jobs(vec![plan]).await;
        api.list_pods(vec![]).await;
    })
    .await;
}
