//! Cluster simulation: the real reconciler, an in-memory API server, and a harness that
//! plays the Job controller and the kubelet for the Jobs the operator renders. Every pod
//! runs the real `fruitpipe` binary with the args, env and termination-message path of its
//! rendered pod spec (one process per index of an Indexed Job, with JOB_COMPLETION_INDEX),
//! against a real S3 server on loopback. Exit codes and termination messages become Job and
//! pod status, following the Job's backoffLimit(PerIndex), maxFailedIndexes and
//! podFailurePolicy.

mod common;
#[allow(dead_code)]
#[path = "../../job-runner/tests/support/s3_server.rs"]
mod s3_server;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fruitpipe_operator::api::{FruitPipeline, Phase};
use fruitpipe_operator::controller::{Context, reconcile};
use fruitpipe_operator::jobs::{ANNOTATION_INDEX, LABEL_JOB_NAME, RunnerDefaults};
use fruitpipe_operator::metrics::Metrics;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
use serde_json::{Value, json};

const NAMESPACE: &str = "fruit";
const SECRET: &str = "s3-credentials";

/// What the API server stores.
#[derive(Default)]
struct Objects {
    pipeline: Value,
    jobs: BTreeMap<String, Value>,
    pods: Vec<Value>,
    events: Vec<Value>,
    /// Every (verb, API group, resource) the operator called.
    used: BTreeSet<(String, String, String)>,
}

/// A fault the harness injects into one attempt of one pod.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The process is killed mid-run (OOM kill, node crash): a failed attempt.
    Kill,
    /// The pod is evicted mid-run (a spot node reclaimed, a drain): killed, with the
    /// `DisruptionTarget` condition the kubelet sets.
    Evict,
}

struct Cluster {
    objects: Arc<Mutex<Objects>>,
    secrets: HashMap<String, HashMap<String, String>>,
    /// (job stage, index, attempt) -> fault.
    faults: HashMap<(String, u32, u32), Fault>,
    attempts: HashMap<(String, u32), u32>,
    work: tempfile::TempDir,
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn matches_selector(object: &Value, query: &str) -> bool {
    let selector = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("labelSelector="))
        .map(percent_decode)
        .unwrap_or_default();
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .all(|term| {
            let (key, value) = term.split_once('=').expect("equality selectors only");
            object["metadata"]["labels"][key] == value
        })
}

fn status_error(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason }),
    )
}

/// The API server: the handful of endpoints the operator uses, over the real kube client.
fn api_server(
    objects: Arc<Mutex<Objects>>,
    method: &Method,
    path: &str,
    query: &str,
    body: Value,
) -> (u16, Value) {
    let (verb, group, resource) =
        fruitpipe_operator::rbac::request_permission(method.as_str(), path);
    assert!(
        fruitpipe_operator::rbac::allows(&group, &resource, &verb),
        "the operator called {verb} on {group}/{resource}, which its RBAC does not grant"
    );
    let mut objects = objects.lock().unwrap();
    objects.used.insert((verb, group, resource));
    let jobs = format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs");
    let pipelines = format!("/apis/fruitpipe.dev/v1alpha1/namespaces/{NAMESPACE}/fruitpipelines/");
    match (method.as_str(), path) {
        ("GET", p) if p == jobs => {
            let items: Vec<Value> = objects
                .jobs
                .values()
                .filter(|job| matches_selector(job, query))
                .cloned()
                .collect();
            (
                200,
                json!({ "apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": items }),
            )
        }
        ("GET", p) if p == format!("/api/v1/namespaces/{NAMESPACE}/pods") => {
            let items: Vec<Value> = objects
                .pods
                .iter()
                .filter(|pod| matches_selector(pod, query))
                .cloned()
                .collect();
            (
                200,
                json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items }),
            )
        }
        ("POST", p) if p == jobs => {
            let name = body["metadata"]["name"].as_str().unwrap().to_string();
            if objects.jobs.contains_key(&name) {
                return status_error(409, "AlreadyExists");
            }
            let mut job = body;
            job["metadata"]["uid"] = json!(format!("job-{name}"));
            job["status"] = json!({});
            objects.jobs.insert(name, job.clone());
            (201, job)
        }
        ("PATCH", p) if p.starts_with(&jobs) => {
            let name = p.rsplit('/').next().unwrap();
            let Some(job) = objects.jobs.get_mut(name) else {
                return status_error(404, "NotFound");
            };
            merge(job, &body);
            (200, job.clone())
        }
        ("PATCH", p) if p.starts_with(&pipelines) && p.ends_with("/status") => {
            merge(&mut objects.pipeline["status"], &body["status"]);
            (200, objects.pipeline.clone())
        }
        ("POST", p) if p == format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events") => {
            objects.events.push(body.clone());
            (201, body)
        }
        _ => status_error(404, "NotFound"),
    }
}

fn client(objects: Arc<Mutex<Objects>>) -> kube::Client {
    let service = tower::service_fn(move |request: Request<Body>| {
        let objects = Arc::clone(&objects);
        async move {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            let (code, reply) = api_server(
                objects,
                &parts.method,
                parts.uri.path(),
                parts.uri.query().unwrap_or(""),
                body,
            );
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            )
        }
    });
    kube::Client::new(service, NAMESPACE)
}

/// The `fruitpipe` binary cargo built for the workspace's tests.
fn fruitpipe_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("fruitpipe");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p fruitpipe-runner` (scripts/test.sh builds it)",
        binary.display()
    );
    binary
}

struct PodRun {
    exit_code: i32,
    message: String,
    disrupted: bool,
}

/// What a Job's podFailurePolicy does with a failed pod: its first matching rule's action,
/// else `Count` (one more failure against the backoff limit).
fn failure_action(job: &Value, run: &PodRun) -> String {
    let matches = |rule: &Value| {
        let by_exit_code = rule["onExitCodes"]["values"]
            .as_array()
            .is_some_and(|codes| {
                let listed = codes.contains(&json!(run.exit_code));
                match rule["onExitCodes"]["operator"].as_str() {
                    Some("In") => listed,
                    Some("NotIn") => !listed,
                    other => panic!("unknown operator {other:?}"),
                }
            });
        let by_condition = rule["onPodConditions"].as_array().is_some_and(|patterns| {
            run.disrupted
                && patterns
                    .iter()
                    .any(|pattern| pattern["type"] == "DisruptionTarget")
        });
        by_exit_code || by_condition
    };
    job["spec"]["podFailurePolicy"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|rule| matches(rule))
        .map_or("Count".into(), |rule| {
            rule["action"].as_str().unwrap().to_string()
        })
}

impl Cluster {
    fn new(pipeline: &FruitPipeline) -> Cluster {
        let objects = Objects {
            pipeline: serde_json::to_value(pipeline).unwrap(),
            ..Default::default()
        };
        let secret = HashMap::from([
            ("AWS_ACCESS_KEY_ID".to_string(), ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), SECRET_KEY.to_string()),
        ]);
        Cluster {
            objects: Arc::new(Mutex::new(objects)),
            secrets: HashMap::from([(SECRET.to_string(), secret)]),
            faults: HashMap::new(),
            attempts: HashMap::new(),
            work: tempfile::tempdir().unwrap(),
        }
    }

    fn pipeline(&self) -> FruitPipeline {
        serde_json::from_value(self.objects.lock().unwrap().pipeline.clone()).unwrap()
    }

    /// Runs one pod of `job`: the container's args and env, as the kubelet would.
    fn run_pod(&mut self, job: &Value, index: Option<u32>) -> PodRun {
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        let stage = job["metadata"]["labels"]["fruitpipe.dev/stage"]
            .as_str()
            .unwrap()
            .to_string();
        let attempt = {
            let counter = self
                .attempts
                .entry((stage.clone(), index.unwrap_or(0)))
                .or_insert(0);
            *counter += 1;
            *counter
        };
        let termination_path = container["terminationMessagePath"].as_str().unwrap();
        let termination_file = self
            .work
            .path()
            .join(format!("{stage}-{}-{attempt}.log", index.unwrap_or(0)));
        std::fs::write(&termination_file, "").unwrap();
        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|arg| {
                let arg = arg.as_str().unwrap();
                if arg == termination_path {
                    termination_file.display().to_string()
                } else {
                    arg.to_string()
                }
            })
            .collect();
        let mut command = std::process::Command::new(fruitpipe_binary());
        command
            .args(&args)
            .env_clear()
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for variable in container["env"].as_array().unwrap() {
            let name = variable["name"].as_str().unwrap();
            if let Some(value) = variable["value"].as_str() {
                command.env(name, value);
            } else if let Some(reference) = variable["valueFrom"]["secretKeyRef"].as_object() {
                let secret = &self.secrets[reference["name"].as_str().unwrap()];
                match secret.get(reference["key"].as_str().unwrap()) {
                    Some(value) => {
                        command.env(name, value);
                    }
                    None => assert_eq!(
                        reference.get("optional"),
                        Some(&json!(true)),
                        "missing secret key {name}"
                    ),
                }
            }
        }
        if let Some(index) = index {
            command.env("JOB_COMPLETION_INDEX", index.to_string());
        }
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let fault = self
            .faults
            .get(&(stage.clone(), index.unwrap_or(0), attempt))
            .copied();
        let output = match fault {
            Some(Fault::Kill | Fault::Evict) => {
                let mut child = command.spawn().unwrap();
                std::thread::sleep(Duration::from_millis(300));
                let _ = child.kill();
                child.wait_with_output().unwrap()
            }
            None => command.output().unwrap(),
        };
        use std::os::unix::process::ExitStatusExt;
        let exit_code = output
            .status
            .code()
            .unwrap_or_else(|| 128 + output.status.signal().unwrap_or(9));
        // The kubelet keeps at most 4096 bytes; FallbackToLogsOnError uses the log's tail.
        let mut message = std::fs::read_to_string(&termination_file).unwrap();
        if message.is_empty()
            && exit_code != 0
            && container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        {
            let log = String::from_utf8_lossy(&output.stderr);
            message = log[log.len().saturating_sub(2048)..].to_string();
        }
        message.truncate(4096);
        eprintln!(
            "pod {stage}[{}] attempt {attempt}: exit {exit_code}: {message}",
            index.map_or("-".into(), |i| i.to_string())
        );
        PodRun {
            exit_code,
            message,
            disrupted: matches!(fault, Some(Fault::Evict)),
        }
    }

    fn record_pod(&self, job: &Value, index: Option<u32>, attempt: u32, run: &PodRun) {
        let name = job["metadata"]["name"].as_str().unwrap();
        let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
        labels[LABEL_JOB_NAME] = json!(name);
        let annotations = index.map_or(
            json!({}),
            |index| json!({ ANNOTATION_INDEX: index.to_string() }),
        );
        let phase = if run.exit_code == 0 {
            "Succeeded"
        } else {
            "Failed"
        };
        let conditions = if run.disrupted {
            json!([{ "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI" }])
        } else {
            json!([])
        };
        self.objects.lock().unwrap().pods.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": format!("{name}-{}-{attempt}", index.unwrap_or(0)), "namespace": NAMESPACE, "labels": labels, "annotations": annotations },
            "status": { "phase": phase, "conditions": conditions, "containerStatuses": [{
                "name": "fruitpipe", "image": "fruitpipe", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": run.exit_code, "message": run.message } }
            }]}
        }));
    }

    /// Plays the Job controller once: every unfinished, unsuspended Job gets its pods run.
    fn step(&mut self) {
        let jobs: Vec<Value> = self
            .objects
            .lock()
            .unwrap()
            .jobs
            .values()
            .cloned()
            .collect();
        for job in jobs {
            let conditions = job["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !conditions.is_empty() || job["spec"]["suspend"] == true {
                continue;
            }
            let status = if job["spec"]["completionMode"] == "Indexed" {
                self.run_indexed(&job)
            } else {
                self.run_single(&job)
            };
            let name = job["metadata"]["name"].as_str().unwrap().to_string();
            merge(
                self.objects.lock().unwrap().jobs.get_mut(&name).unwrap(),
                &json!({ "status": status }),
            );
        }
    }

    fn run_single(&mut self, job: &Value) -> Value {
        let limit = job["spec"]["backoffLimit"].as_u64().unwrap_or(6) as u32;
        let (mut failures, mut attempt) = (0, 0);
        loop {
            attempt += 1;
            let run = self.run_pod(job, None);
            self.record_pod(job, None, attempt, &run);
            if run.exit_code == 0 {
                return json!({ "succeeded": 1, "conditions": [{ "type": "Complete", "status": "True" }] });
            }
            match failure_action(job, &run).as_str() {
                "FailJob" => {
                    return json!({ "failed": failures + 1, "conditions": [{ "type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": format!("Container fruitpipe failed with exit code {}", run.exit_code) }] });
                }
                "Ignore" => continue,
                _ => {}
            }
            failures += 1;
            if failures > limit {
                return json!({ "failed": failures, "conditions": [{ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit" }] });
            }
        }
    }

    fn run_indexed(&mut self, job: &Value) -> Value {
        let completions = job["spec"]["completions"].as_u64().unwrap() as u32;
        let limit = job["spec"]["backoffLimitPerIndex"].as_u64().unwrap() as u32;
        let max_failed = job["spec"]["maxFailedIndexes"].as_u64().unwrap_or(u64::MAX);
        let (mut completed, mut failed) = (Vec::new(), Vec::new());
        for index in 0..completions {
            let (mut failures, mut attempt) = (0, 0);
            loop {
                attempt += 1;
                let run = self.run_pod(job, Some(index));
                self.record_pod(job, Some(index), attempt, &run);
                if run.exit_code == 0 {
                    completed.push(index);
                    break;
                }
                match failure_action(job, &run).as_str() {
                    "FailJob" => {
                        return json!({
                            "completedIndexes": list(&completed), "failedIndexes": list(&[index]),
                            "conditions": [{ "type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": format!("Container fruitpipe for index {index} failed with exit code {}", run.exit_code) }]
                        });
                    }
                    "Ignore" => continue,
                    _ => {}
                }
                failures += 1;
                if failures > limit {
                    failed.push(index);
                    break;
                }
            }
            if failed.len() as u64 > max_failed {
                return json!({
                    "completedIndexes": list(&completed), "failedIndexes": list(&failed),
                    "conditions": [{ "type": "Failed", "status": "True", "reason": "MaxFailedIndexesExceeded", "message": "Job has exceeded maxFailedIndexes" }]
                });
            }
        }
        json!({ "completedIndexes": list(&completed), "succeeded": completed.len(), "conditions": [{ "type": "Complete", "status": "True" }] })
    }

    /// The operator's context, talking to this cluster's API server.
    fn operator(&self) -> Arc<Context> {
        let defaults = RunnerDefaults {
            image: "fruitpipe:test".into(),
            image_pull_policy: None,
            service_account: None,
            s3: Default::default(),
        };
        Arc::new(Context::new(
            client(Arc::clone(&self.objects)),
            defaults,
            Arc::new(Metrics::default()),
        ))
    }

    async fn reconcile(&self, operator: &Arc<Context>) -> FruitPipeline {
        reconcile(Arc::new(self.pipeline()), Arc::clone(operator))
            .await
            .expect("reconcile");
        self.pipeline()
    }

    /// A user's edit of the spec: the API server bumps the generation.
    fn edit_spec(&self, field: &str, value: Value) {
        let pipeline = &mut self.objects.lock().unwrap().pipeline;
        pipeline["spec"][field] = value;
        let generation = pipeline["metadata"]["generation"].as_i64().unwrap_or(1);
        pipeline["metadata"]["generation"] = json!(generation + 1);
    }

    /// Reconciles and plays the cluster until the pipeline finishes.
    async fn run_to_completion(&mut self) -> FruitPipeline {
        let operator = self.operator();
        for _ in 0..20 {
            let pipeline = self.reconcile(&operator).await;
            if pipeline
                .status
                .as_ref()
                .is_some_and(|status| status.phase.is_finished())
            {
                return pipeline;
            }
            tokio::task::block_in_place(|| self.step());
        }
        panic!("the pipeline did not finish: {:?}", self.pipeline().status);
    }
}

fn list(indexes: &[u32]) -> String {
    indexes
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// An S3 server holding photos of a few classes (both splits) and the features model.
fn s3_with_photos(root: &Path) -> S3Server {
    let server = S3Server::start(root);
    let bucket = server.bucket("fruits");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/fruits360-sample");
    for split in ["Training", "Test"] {
        for class in ["Banana", "Kiwi", "Lemon", "Cocos", "Avocado"] {
            let target = bucket.join("in").join(split).join(class);
            std::fs::create_dir_all(&target).unwrap();
            for entry in std::fs::read_dir(sample.join(split).join(class)).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
            }
        }
    }
    std::fs::create_dir_all(bucket.join("models")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../data/models/efficientnet_lite0_features.onnx"),
        bucket.join("models/features.onnx"),
    )
    .unwrap();
    server
}

fn pipeline_for(server: &S3Server, model: &str) -> FruitPipeline {
    common::pipeline(json!({
        "input": "s3://fruits/in",
        "output": "s3://fruits/out",
        "model": { "uri": model, "size": 100 },
        "shardSize": 8,
        "parallelism": 2,
        "retries": 2,
        "pca": { "components": 5 },
        "s3": { "endpoint": server.endpoint, "region": "us-east-1", "pathStyle": true, "credentialsSecret": SECRET }
    }))
}

fn csv_rows(server: &S3Server) -> Vec<String> {
    let text = std::fs::read_to_string(server.root.join("fruits/out/features_pca.csv")).unwrap();
    text.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_ends_succeeded_with_the_right_csv() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let mut cluster = Cluster::new(&pipeline_for(&server, "s3://fruits/models/features.onnx"));
    let pipeline = cluster.run_to_completion().await;
    let status = pipeline.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert_eq!((status.shards.total, status.shards.succeeded), (4, 4));
    assert_eq!((status.images.processed, status.images.skipped), (30, 0));
    assert_eq!(status.k, Some(5));
    assert_eq!(
        status.outputs.unwrap().features,
        "s3://fruits/out/features_pca.csv"
    );

    let rows = csv_rows(&server);
    assert_eq!(rows[0], "path,label,pc_1,pc_2,pc_3,pc_4,pc_5");
    assert_eq!(rows.len(), 31);
    for row in &rows[1..] {
        let fields: Vec<&str> = row.split(',').collect();
        let label = fields[0].rsplit('/').nth(1).unwrap();
        assert_eq!(fields[1], label);
        assert!(fields[0].starts_with("s3://fruits/in/"));
    }
    let objects = cluster.objects.lock().unwrap();
    let reasons: Vec<&str> = objects
        .events
        .iter()
        .map(|event| event["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["Planning", "Extracting", "Fitting", "Succeeded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_fails_once_is_retried_and_the_csv_is_the_same() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let mut clean = Cluster::new(&pipeline_for(&server, "s3://fruits/models/features.onnx"));
    clean.run_to_completion().await;
    let expected = csv_rows(&server);

    std::fs::remove_dir_all(server.root.join("fruits/out")).unwrap();
    let mut troubled = Cluster::new(&pipeline_for(&server, "s3://fruits/models/features.onnx"));
    troubled
        .faults
        .insert(("extract".into(), 1, 1), Fault::Kill);
    let pipeline = troubled.run_to_completion().await;
    assert_eq!(pipeline.status.unwrap().phase, Phase::Succeeded);
    assert_eq!(
        troubled.attempts[&("extract".to_string(), 1)],
        2,
        "index 1 was not retried"
    );
    assert!(
        csv_rows(&server) == expected,
        "the retried run's CSV differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_pod_does_not_use_up_a_retry() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let mut pipeline = pipeline_for(&server, "s3://fruits/models/features.onnx");
    pipeline.spec.retries = 0;
    let mut cluster = Cluster::new(&pipeline);
    // Index 0 is evicted twice (a spot node reclaimed, then a drain) before it runs whole.
    for attempt in [1, 2] {
        cluster
            .faults
            .insert(("extract".into(), 0, attempt), Fault::Evict);
    }
    let pipeline = cluster.run_to_completion().await;
    let status = pipeline.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert_eq!(cluster.attempts[&("extract".to_string(), 0)], 3);
    assert_eq!(status.shards.failed, 0);

    // The same kill without the disruption condition is a real failure: with no retries
    // left the pipeline fails, naming the shard.
    std::fs::remove_dir_all(server.root.join("fruits/out")).unwrap();
    let mut pipeline = pipeline_for(&server, "s3://fruits/models/features.onnx");
    pipeline.spec.retries = 0;
    let mut cluster = Cluster::new(&pipeline);
    cluster.faults.insert(("extract".into(), 0, 1), Fault::Kill);
    let status = cluster.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Failed);
    assert_eq!(status.shards.failed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_photo_is_skipped_and_counted() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    std::fs::write(
        server.root.join("fruits/in/Training/Kiwi/broken.jpg"),
        b"\xFF\xD8\xFF\xE0 not really a jpeg",
    )
    .unwrap();
    let mut cluster = Cluster::new(&pipeline_for(&server, "s3://fruits/models/features.onnx"));
    let status = cluster.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded);
    assert_eq!((status.images.processed, status.images.skipped), (30, 1));
    let errors = std::fs::read_to_string(server.root.join("fruits/out/errors.csv")).unwrap();
    assert!(
        errors.contains("s3://fruits/in/Training/Kiwi/broken.jpg"),
        "{errors}"
    );
    assert_eq!(csv_rows(&server).len(), 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_model_uri_fails_fast_with_a_clear_condition() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let mut cluster = Cluster::new(&pipeline_for(&server, "s3://fruits/models/missing.onnx"));
    let status = cluster.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Failed);
    let failed = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == "Failed")
        .unwrap();
    assert_eq!(failed.reason, "ExtractFailed");
    assert!(
        failed
            .message
            .contains("no model at s3://fruits/models/missing.onnx"),
        "{}",
        failed.message
    );
    // Exit code 2 fails the Job at once: one attempt, no retries.
    assert_eq!(cluster.attempts[&("extract".to_string(), 0)], 1);
    assert!(!server.root.join("fruits/out/features_pca.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallelism_and_suspend_apply_to_the_running_extract_job() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let mut cluster = Cluster::new(&pipeline_for(&server, "s3://fruits/models/features.onnx"));
    let operator = cluster.operator();
    cluster.reconcile(&operator).await;
    tokio::task::block_in_place(|| cluster.step()); // the plan pod runs
    let pipeline = cluster.reconcile(&operator).await;
    assert_eq!(pipeline.status.unwrap().phase, Phase::Extracting);
    let extract_job = |cluster: &Cluster| {
        let objects = cluster.objects.lock().unwrap();
        objects
            .jobs
            .values()
            .find(|job| job["spec"]["completionMode"] == "Indexed")
            .cloned()
            .unwrap()
    };
    assert_eq!(extract_job(&cluster)["spec"]["parallelism"], 2);

    cluster.edit_spec("parallelism", json!(1));
    cluster.edit_spec("suspend", json!(true));
    let pipeline = cluster.reconcile(&operator).await;
    assert_eq!(pipeline.status.unwrap().phase, Phase::Suspended);
    let job = extract_job(&cluster);
    assert_eq!(
        (&job["spec"]["parallelism"], &job["spec"]["suspend"]),
        (&json!(1), &json!(true))
    );
    tokio::task::block_in_place(|| cluster.step());
    assert!(
        !cluster.attempts.contains_key(&("extract".to_string(), 0)),
        "a suspended Job ran pods"
    );

    cluster.edit_spec("suspend", json!(false));
    let pipeline = cluster.run_to_completion().await;
    assert_eq!(pipeline.status.unwrap().phase, Phase::Succeeded);
    assert_eq!(extract_job(&cluster)["spec"]["suspend"], false);

    // The RBAC rules grant what this run used, plus what only the controller's watch
    // streams (which this harness replaces by calling reconcile) and the event recorder's
    // series updates (a repeated event) use. A grant outside both lists fails here.
    let mut used = cluster.objects.lock().unwrap().used.clone();
    for (verb, group, resource) in [
        ("list", "fruitpipe.dev", "fruitpipelines"),
        ("watch", "fruitpipe.dev", "fruitpipelines"),
        ("watch", "batch", "jobs"),
        ("patch", "events.k8s.io", "events"),
    ] {
        used.insert((verb.into(), group.into(), resource.into()));
    }
    let granted: BTreeSet<(String, String, String)> = fruitpipe_operator::rbac::RULES
        .iter()
        .flat_map(|rule| {
            rule.verbs.iter().map(|verb| {
                (
                    verb.to_string(),
                    rule.api_group.to_string(),
                    rule.resource.to_string(),
                )
            })
        })
        .collect();
    assert_eq!(granted, used);
}
