//! A simulated cluster for the operator's tests: an in-memory API server that refuses what
//! the real one refuses (every object passes `fruitpipe_operator::conformance`), and a
//! harness that plays the Job controller and the kubelet for the Jobs the operator creates.
//!
//! Each pod runs the real `fruitpipe` binary with the args, env and termination-message path
//! of its pod spec (one process per index of an Indexed Job, with JOB_COMPLETION_INDEX),
//! against a real S3 server on loopback; or, in synthetic mode (API-load runs with
//! thousands of shards), reports a canned result. Semantics follow the upstream Job
//! controller (pkg/controller/job/job_controller.go): pods carry the Job's UID label;
//! Indexed Jobs run `parallelism` indexes per wave with per-index retries,
//! `maxFailedIndexes` and the podFailurePolicy; a suspended Job starts no pod and its
//! deleted pods count as no failure; a pod whose Secret is missing waits in
//! `CreateContainerConfigError` and uses up no retry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fruitpipe_operator::api::FruitPipeline;
use fruitpipe_operator::conformance;
use fruitpipe_operator::controller::{Context, reconcile};
use fruitpipe_operator::jobs::{
    ANNOTATION_INDEX, LABEL_CONTROLLER_UID, LABEL_JOB_NAME, RunnerDefaults,
};
use fruitpipe_operator::metrics::Metrics;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

pub const NAMESPACE: &str = "fruit";

/// API traffic, as the operator's client saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    pub calls: u64,
    /// Bytes of response bodies.
    pub bytes: u64,
    /// Pods in list responses.
    pub pods: u64,
    /// Calls per "VERB resource".
    pub by_call: BTreeMap<String, u64>,
}

/// What the API server stores.
#[derive(Default)]
pub struct Objects {
    pub pipeline: Value,
    pub jobs: BTreeMap<String, Value>,
    pub pods: Vec<Value>,
    pub events: Vec<Value>,
    /// Every (verb, API group, resource) the operator called.
    pub used: BTreeSet<(String, String, String)>,
    /// Creates the API server refused, with its message.
    pub refused: Vec<String>,
    pub traffic: Traffic,
    next_uid: u64,
}

impl Objects {
    fn uid(&mut self, kind: &str) -> String {
        self.next_uid += 1;
        format!("{kind}-{:08}-0000-4000-8000-000000000000", self.next_uid)
    }
}

/// A fault the harness injects into one attempt of one pod.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// The process is killed mid-run (node crash): a failed attempt, exit 137.
    Kill,
    /// The pod is evicted mid-run (a spot node reclaimed, a drain): killed, with the
    /// `DisruptionTarget` condition the kubelet sets.
    Evict,
    /// The kernel's OOM killer: exit 137 and `terminated.reason: OOMKilled`.
    Oom,
    /// The process is killed as soon as it starts, for pods too short to be caught
    /// mid-run: a failed attempt, exit 137.
    Crash,
}

pub struct PodRun {
    pub exit_code: i32,
    pub reason: &'static str,
    pub message: String,
    pub disrupted: bool,
}

pub struct Cluster {
    pub objects: Arc<Mutex<Objects>>,
    pub secrets: HashMap<String, HashMap<String, String>>,
    /// (job stage, index, attempt) -> fault.
    pub faults: HashMap<(String, u32, u32), Fault>,
    pub attempts: HashMap<(String, u32), u32>,
    /// Synthetic pods: (shards the plan reports, photos per shard); no process runs.
    pub synthetic: Option<(u32, u64)>,
    work: tempfile::TempDir,
}

pub fn merge(target: &mut Value, patch: &Value) {
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

pub fn percent_decode(text: &str) -> String {
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

pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| percent_decode(value))
    })
}

fn matches_labels(object: &Value, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .all(|term| {
            let (key, value) = term.split_once('=').expect("equality selectors only");
            object["metadata"]["labels"][key] == value
        })
}

/// Field selectors the API server serves for pods (pkg/registry/core/pod
/// `PodToSelectableFields`); we serve the one the operator may use.
fn matches_pod_fields(pod: &Value, selector: &str) -> Result<bool, String> {
    let mut all = true;
    for term in selector.split(',').filter(|term| !term.is_empty()) {
        let (key, value) = term.split_once('=').ok_or("equality selectors only")?;
        match key {
            "status.phase" => all &= pod["status"]["phase"] == value,
            "metadata.name" => all &= pod["metadata"]["name"] == value,
            _ => return Err(format!("field label not supported: {key}")),
        }
    }
    Ok(all)
}

fn status_error(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "code": code, "message": message }),
    )
}

fn violations_text(violations: &[conformance::Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One request to the API server.
struct ApiRequest<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a str,
    content_type: &'a str,
    body: Value,
}

/// The API server: the endpoints the operator uses, over the real kube client.
fn api_server(objects: &mut Objects, request: ApiRequest) -> (u16, Value) {
    let ApiRequest {
        method,
        path,
        query,
        content_type,
        body,
    } = request;
    let (verb, group, resource) =
        fruitpipe_operator::rbac::request_permission(method.as_str(), path);
    assert!(
        fruitpipe_operator::rbac::allows(&group, &resource, &verb),
        "the operator called {verb} on {group}/{resource}, which its RBAC does not grant"
    );
    objects.used.insert((verb, group, resource));
    let jobs = format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs");
    let pipelines = format!("/apis/fruitpipe.dev/v1alpha1/namespaces/{NAMESPACE}/fruitpipelines/");
    let selector = query_param(query, "labelSelector").unwrap_or_default();
    match (method.as_str(), path) {
        ("GET", p) if p == jobs => {
            let items: Vec<Value> = objects
                .jobs
                .values()
                .filter(|job| matches_labels(job, &selector))
                .cloned()
                .collect();
            (
                200,
                json!({ "apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": items }),
            )
        }
        ("GET", p) if p.starts_with(&format!("{jobs}/")) => {
            let name = p.rsplit('/').next().unwrap();
            match objects.jobs.get(name) {
                Some(job) => (200, job.clone()),
                None => status_error(404, "NotFound", &format!("jobs.batch \"{name}\" not found")),
            }
        }
        ("GET", p) if p == format!("/api/v1/namespaces/{NAMESPACE}/pods") => {
            let fields = query_param(query, "fieldSelector").unwrap_or_default();
            let mut items = Vec::new();
            for pod in &objects.pods {
                match matches_pod_fields(pod, &fields) {
                    Ok(true) if matches_labels(pod, &selector) => items.push(pod.clone()),
                    Ok(_) => {}
                    Err(message) => return status_error(400, "BadRequest", &message),
                }
            }
            let start: usize =
                query_param(query, "continue").map_or(0, |token| token.parse().unwrap());
            let limit =
                query_param(query, "limit").map_or(usize::MAX, |limit| limit.parse().unwrap());
            let end = start.saturating_add(limit).min(items.len());
            let next = if end < items.len() {
                json!(end.to_string())
            } else {
                json!(null)
            };
            let page: Vec<Value> = items[start..end].to_vec();
            objects.traffic.pods += page.len() as u64;
            (
                200,
                json!({ "apiVersion": "v1", "kind": "PodList", "metadata": { "continue": next }, "items": page }),
            )
        }
        ("POST", p) if p == jobs => {
            let mut job = body;
            let typed: k8s_openapi::api::batch::v1::Job =
                serde_json::from_value(job.clone()).expect("a Job");
            let violations = conformance::check_job(&typed);
            let name = job["metadata"]["name"].as_str().unwrap().to_string();
            if !violations.is_empty() {
                let message = format!(
                    "Job.batch \"{name}\" is invalid: {}",
                    violations_text(&violations)
                );
                objects.refused.push(message.clone());
                return status_error(422, "Invalid", &message);
            }
            if objects.jobs.contains_key(&name) {
                return status_error(
                    409,
                    "AlreadyExists",
                    &format!("jobs.batch \"{name}\" already exists"),
                );
            }
            // What the API server adds (pkg/registry/batch/job/strategy.go generateSelector).
            let uid = objects.uid("job");
            job["metadata"]["uid"] = json!(uid);
            job["metadata"]["creationTimestamp"] =
                json!(k8s_openapi::jiff::Timestamp::now().to_string());
            job["spec"]["selector"] = json!({ "matchLabels": { LABEL_CONTROLLER_UID: uid } });
            let labels = &mut job["spec"]["template"]["metadata"]["labels"];
            for (key, value) in [
                (LABEL_CONTROLLER_UID, uid.as_str()),
                ("controller-uid", uid.as_str()),
                (LABEL_JOB_NAME, name.as_str()),
                ("job-name", name.as_str()),
            ] {
                labels[key] = json!(value);
            }
            job["status"] = json!({});
            objects.jobs.insert(name, job.clone());
            (201, job)
        }
        ("PATCH", p) if p.starts_with(&format!("{jobs}/")) => {
            assert_eq!(content_type, "application/merge-patch+json");
            let name = p.rsplit('/').next().unwrap();
            let Some(job) = objects.jobs.get(name).cloned() else {
                return status_error(404, "NotFound", &format!("jobs.batch \"{name}\" not found"));
            };
            let mut patched = job.clone();
            merge(&mut patched, &body);
            let violations = conformance::check_job_update(
                &serde_json::from_value(job).unwrap(),
                &serde_json::from_value(patched.clone()).unwrap(),
            );
            if !violations.is_empty() {
                return status_error(422, "Invalid", &violations_text(&violations));
            }
            objects.jobs.insert(name.to_string(), patched.clone());
            (200, patched)
        }
        ("PATCH", p) if p.starts_with(&pipelines) && p.ends_with("/status") => {
            // Server-side apply by the operator's field manager; the operator owns all of
            // status, so the applied status replaces it.
            assert_eq!(
                content_type, "application/apply-patch+yaml",
                "status is written by server-side apply"
            );
            assert_eq!(
                query_param(query, "fieldManager").as_deref(),
                Some("fruitpipe-operator")
            );
            assert_eq!(body["apiVersion"], "fruitpipe.dev/v1alpha1");
            assert_eq!(body["kind"], "FruitPipeline");
            let conditions: Vec<_> =
                serde_json::from_value(body["status"]["conditions"].clone()).unwrap_or_default();
            let violations = conformance::check_conditions(&conditions);
            if !violations.is_empty() {
                return status_error(422, "Invalid", &violations_text(&violations));
            }
            objects.pipeline["status"] = body["status"].clone();
            (200, objects.pipeline.clone())
        }
        ("POST", p) if p == format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events") => {
            let event = serde_json::from_value(body.clone()).expect("an events.k8s.io/v1 Event");
            let violations = conformance::check_event(&event);
            assert!(
                violations.is_empty(),
                "the API server would refuse this Event: {}",
                violations_text(&violations)
            );
            objects.events.push(body.clone());
            (201, body)
        }
        _ => status_error(404, "NotFound", "no such endpoint in the simulation"),
    }
}

pub fn client(objects: Arc<Mutex<Objects>>) -> kube::Client {
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
            let content_type = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|value| value.to_str().unwrap().to_string())
                .unwrap_or_default();
            let mut objects = objects.lock().unwrap();
            let (code, reply) = api_server(
                &mut objects,
                ApiRequest {
                    method: &parts.method,
                    path: parts.uri.path(),
                    query: parts.uri.query().unwrap_or(""),
                    content_type: &content_type,
                    body,
                },
            );
            let reply = serde_json::to_vec(&reply).unwrap();
            let traffic = &mut objects.traffic;
            traffic.calls += 1;
            traffic.bytes += reply.len() as u64;
            let (_, _, resource) = fruitpipe_operator::rbac::request_permission(
                parts.method.as_str(),
                parts.uri.path(),
            );
            *traffic
                .by_call
                .entry(format!("{} {resource}", parts.method))
                .or_default() += 1;
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(code)
                    .body(Body::from(reply))
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

fn list(indexes: &BTreeSet<u32>) -> String {
    indexes
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn stage_of(job: &Value) -> String {
    job["metadata"]["labels"]["fruitpipe.dev/stage"]
        .as_str()
        .unwrap()
        .to_string()
}

impl Cluster {
    pub fn new(
        pipeline: &FruitPipeline,
        secrets: HashMap<String, HashMap<String, String>>,
    ) -> Cluster {
        let objects = Objects {
            pipeline: serde_json::to_value(pipeline).unwrap(),
            ..Default::default()
        };
        Cluster {
            objects: Arc::new(Mutex::new(objects)),
            secrets,
            faults: HashMap::new(),
            attempts: HashMap::new(),
            synthetic: None,
            work: tempfile::tempdir().unwrap(),
        }
    }

    pub fn pipeline(&self) -> FruitPipeline {
        serde_json::from_value(self.objects.lock().unwrap().pipeline.clone()).unwrap()
    }

    pub fn job(&self, stage: &str) -> Option<Value> {
        let objects = self.objects.lock().unwrap();
        objects
            .jobs
            .values()
            .find(|job| stage_of(job) == stage)
            .cloned()
    }

    /// `kubectl delete job` (background propagation: its pods go too), or with
    /// `--cascade=orphan` (its pods stay, without the owner reference).
    pub fn delete_job(&self, stage: &str, orphan: bool) {
        let mut objects = self.objects.lock().unwrap();
        let name = objects
            .jobs
            .iter()
            .find(|(_, job)| stage_of(job) == stage)
            .map(|(name, _)| name.clone())
            .expect("the Job exists");
        let job = objects.jobs.remove(&name).unwrap();
        let uid = job["metadata"]["uid"].clone();
        if orphan {
            for pod in objects.pods.iter_mut() {
                if pod["metadata"]["labels"][LABEL_CONTROLLER_UID] == uid {
                    pod["metadata"]["ownerReferences"] = json!([]);
                }
            }
        } else {
            objects
                .pods
                .retain(|pod| pod["metadata"]["labels"][LABEL_CONTROLLER_UID] != uid);
        }
    }

    /// Why a pod of `job` cannot start yet: the kubelet's waiting reason and message.
    fn missing_config(&self, job: &Value) -> Option<String> {
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        for variable in container["env"].as_array().unwrap() {
            let Some(reference) = variable["valueFrom"]["secretKeyRef"].as_object() else {
                continue;
            };
            let name = reference["name"].as_str().unwrap();
            let key = reference["key"].as_str().unwrap();
            let optional = reference.get("optional") == Some(&json!(true));
            match self.secrets.get(name) {
                None if !optional => return Some(format!("secret \"{name}\" not found")),
                Some(secret) if !optional && !secret.contains_key(key) => {
                    return Some(format!(
                        "couldn't find key {key} in Secret {NAMESPACE}/{name}"
                    ));
                }
                _ => {}
            }
        }
        None
    }

    /// Runs one pod of `job`: the container's args and env, as the kubelet would.
    fn run_pod(&mut self, job: &Value, index: Option<u32>) -> PodRun {
        let stage = stage_of(job);
        let attempt = {
            let counter = self
                .attempts
                .entry((stage.clone(), index.unwrap_or(0)))
                .or_insert(0);
            *counter += 1;
            *counter
        };
        if let Some((shards, photos)) = self.synthetic {
            let message = match stage.as_str() {
                "plan" => {
                    json!({ "phase": "plan", "shards": shards, "images": u64::from(shards) * photos })
                }
                "extract" => {
                    json!({ "phase": "extract", "shard": index, "used": photos, "skipped": 0 })
                }
                "fit" => {
                    json!({ "phase": "fit", "images": u64::from(shards) * photos, "skipped": 0, "k": 5, "explainedVariance": 0.9 })
                }
                "project" => json!({ "phase": "project", "shard": index, "rows": photos }),
                _ => {
                    json!({ "phase": "assemble", "images": u64::from(shards) * photos, "skipped": 0, "k": 5, "explainedVariance": 0.9,
                            "outputs": { "features": "s3://fruits/out/features_pca.csv", "model": "s3://fruits/out/pca_model.json",
                                         "summary": "s3://fruits/out/summary.json", "errors": "s3://fruits/out/errors.csv" } })
                }
            };
            return PodRun {
                exit_code: 0,
                reason: "Completed",
                message: message.to_string(),
                disrupted: false,
            };
        }
        let container = &job["spec"]["template"]["spec"]["containers"][0];
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
                let secret = self.secrets.get(reference["name"].as_str().unwrap());
                if let Some(value) =
                    secret.and_then(|secret| secret.get(reference["key"].as_str().unwrap()))
                {
                    command.env(name, value);
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
            Some(Fault::Kill | Fault::Evict | Fault::Oom) => {
                let mut child = command.spawn().unwrap();
                std::thread::sleep(Duration::from_millis(300));
                let _ = child.kill();
                child.wait_with_output().unwrap()
            }
            Some(Fault::Crash) => {
                let mut child = command.spawn().unwrap();
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
        // The kubelet keeps at most 4096 bytes; FallbackToLogsOnError uses the log's tail
        // (at most 2048 bytes) when the file is empty and the container failed.
        let mut message = std::fs::read_to_string(&termination_file).unwrap();
        if message.is_empty()
            && exit_code != 0
            && container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        {
            let log = String::from_utf8_lossy(&output.stderr);
            let mut start = log.len().saturating_sub(2048);
            while !log.is_char_boundary(start) {
                start += 1;
            }
            message = log[start..].to_string();
        }
        message.truncate(4096);
        eprintln!(
            "pod {stage}[{}] attempt {attempt}: exit {exit_code}: {message}",
            index.map_or("-".into(), |i| i.to_string())
        );
        PodRun {
            exit_code,
            reason: match (fault, exit_code) {
                (Some(Fault::Oom), _) => "OOMKilled",
                (_, 0) => "Completed",
                _ => "Error",
            },
            message,
            disrupted: matches!(fault, Some(Fault::Evict)),
        }
    }

    /// A pod object as the Job controller creates it and the kubelet reports it.
    fn pod_object(
        &self,
        job: &Value,
        index: Option<u32>,
        phase: &str,
        state: Value,
        conditions: Value,
    ) -> Value {
        let name = job["metadata"]["name"].as_str().unwrap();
        let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
        let mut annotations = job["spec"]["template"]["metadata"]["annotations"].clone();
        let mut spec = job["spec"]["template"]["spec"].clone();
        if let Some(index) = index {
            labels[ANNOTATION_INDEX] = json!(index.to_string());
            annotations[ANNOTATION_INDEX] = json!(index.to_string());
            spec["hostname"] = json!(format!("{name}-{index}"));
        }
        let attempt = self.objects.lock().unwrap().pods.len();
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": format!("{name}-{}-{attempt:05}", index.unwrap_or(0)),
                "namespace": NAMESPACE,
                "uid": format!("pod-{attempt}"),
                "labels": labels, "annotations": annotations,
                "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true }]
            },
            "spec": spec,
            "status": { "phase": phase, "conditions": conditions, "containerStatuses": [{
                "name": "fruitpipe", "image": job["spec"]["template"]["spec"]["containers"][0]["image"], "imageID": "", "ready": false, "restartCount": 0,
                "state": state
            }]}
        })
    }

    fn record_pod(&self, job: &Value, index: Option<u32>, run: &PodRun) {
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
        let state = json!({ "terminated": { "exitCode": run.exit_code, "reason": run.reason, "message": run.message } });
        let pod = self.pod_object(job, index, phase, state, conditions);
        self.objects.lock().unwrap().pods.push(pod);
    }

    /// A pod that waits with `CreateContainerConfigError`, as the kubelet leaves it.
    fn record_waiting_pod(&self, job: &Value, index: Option<u32>, message: &str) {
        let uid = job["metadata"]["uid"].clone();
        let already = self.objects.lock().unwrap().pods.iter().any(|pod| {
            pod["metadata"]["labels"][LABEL_CONTROLLER_UID] == uid
                && pod["status"]["phase"] == "Pending"
        });
        if already {
            return;
        }
        let state =
            json!({ "waiting": { "reason": "CreateContainerConfigError", "message": message } });
        let pod = self.pod_object(job, index, "Pending", state, json!([]));
        self.objects.lock().unwrap().pods.push(pod);
    }

    fn remove_pending_pods(&self, job: &Value) {
        let uid = job["metadata"]["uid"].clone();
        self.objects.lock().unwrap().pods.retain(|pod| {
            !(pod["metadata"]["labels"][LABEL_CONTROLLER_UID] == uid
                && pod["status"]["phase"] == "Pending")
        });
    }

    fn set_job_status(&self, job: &Value, status: Value) {
        let name = job["metadata"]["name"].as_str().unwrap();
        let mut objects = self.objects.lock().unwrap();
        if let Some(stored) = objects.jobs.get_mut(name) {
            stored["status"] = status;
        }
    }

    /// Plays the Job controller once: every unfinished, unsuspended Job moves on by one
    /// wave (all of a NonIndexed Job; `parallelism` indexes of an Indexed one).
    pub fn step(&mut self) {
        let jobs: Vec<Value> = self
            .objects
            .lock()
            .unwrap()
            .jobs
            .values()
            .cloned()
            .collect();
        for job in jobs {
            let finished = job["status"]["conditions"]
                .as_array()
                .is_some_and(|conditions| !conditions.is_empty());
            if finished {
                continue;
            }
            if job["spec"]["suspend"] == true {
                // Suspension deletes active pods without counting them as failures.
                self.remove_pending_pods(&job);
                let mut status = job["status"].clone();
                status["active"] = json!(0);
                status["ready"] = json!(0);
                self.set_job_status(&job, status);
                continue;
            }
            if let Some(message) = self.missing_config(&job) {
                let index = (job["spec"]["completionMode"] == "Indexed").then_some(0);
                self.record_waiting_pod(&job, index, &message);
                let mut status = job["status"].clone();
                status["active"] = json!(1);
                status["ready"] = json!(0);
                self.set_job_status(&job, status);
                continue;
            }
            self.remove_pending_pods(&job);
            let status = if job["spec"]["completionMode"] == "Indexed" {
                self.run_indexed_wave(&job)
            } else {
                self.run_single(&job)
            };
            self.set_job_status(&job, status);
        }
    }

    fn run_single(&mut self, job: &Value) -> Value {
        let limit = job["spec"]["backoffLimit"].as_u64().unwrap_or(6) as u32;
        let mut failures = 0;
        loop {
            let run = self.run_pod(job, None);
            self.record_pod(job, None, &run);
            if run.exit_code == 0 {
                return json!({ "succeeded": 1, "failed": failures, "conditions": [{ "type": "Complete", "status": "True" }] });
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

    fn parse_indexes(text: &Value) -> BTreeSet<u32> {
        text.as_str()
            .unwrap_or_default()
            .split(',')
            .filter(|part| !part.is_empty())
            .flat_map(|part| match part.split_once('-') {
                Some((first, last)) => {
                    (first.parse().unwrap()..=last.parse().unwrap()).collect::<Vec<u32>>()
                }
                None => vec![part.parse().unwrap()],
            })
            .collect()
    }

    fn run_indexed_wave(&mut self, job: &Value) -> Value {
        let completions = job["spec"]["completions"].as_u64().unwrap() as u32;
        let parallelism = job["spec"]["parallelism"].as_u64().unwrap_or(1) as usize;
        let limit = job["spec"]["backoffLimitPerIndex"].as_u64().unwrap() as u32;
        let max_failed = job["spec"]["maxFailedIndexes"].as_u64().unwrap_or(u64::MAX);
        let mut completed = Self::parse_indexes(&job["status"]["completedIndexes"]);
        let mut failed = Self::parse_indexes(&job["status"]["failedIndexes"]);
        let wave: Vec<u32> = (0..completions)
            .filter(|index| !completed.contains(index) && !failed.contains(index))
            .take(parallelism)
            .collect();
        let mut failed_pods = job["status"]["failed"].as_u64().unwrap_or(0);
        for index in wave {
            let mut failures = 0;
            loop {
                let run = self.run_pod(job, Some(index));
                self.record_pod(job, Some(index), &run);
                if run.exit_code == 0 {
                    completed.insert(index);
                    break;
                }
                failed_pods += 1;
                match failure_action(job, &run).as_str() {
                    "FailJob" => {
                        failed.insert(index);
                        return json!({
                            "completedIndexes": list(&completed), "failedIndexes": list(&failed), "failed": failed_pods,
                            "conditions": [{ "type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": format!("Container fruitpipe for failed pod {index} with exit code {} matching FailJob rule at index 0", run.exit_code) }]
                        });
                    }
                    "Ignore" => continue,
                    _ => {}
                }
                failures += 1;
                if failures > limit {
                    failed.insert(index);
                    break;
                }
            }
            if failed.len() as u64 > max_failed {
                return json!({
                    "completedIndexes": list(&completed), "failedIndexes": list(&failed), "failed": failed_pods,
                    "conditions": [{ "type": "Failed", "status": "True", "reason": "MaxFailedIndexesExceeded", "message": "Job has exceeded maxFailedIndexes" }]
                });
            }
        }
        let mut status = json!({
            "completedIndexes": list(&completed), "succeeded": completed.len(), "failed": failed_pods,
            "active": 0, "ready": 0
        });
        if completed.len() as u32 == completions {
            status["conditions"] = json!([{ "type": "Complete", "status": "True" }]);
        }
        status
    }

    /// The operator's context, talking to this cluster's API server: a new one is an
    /// operator restart.
    pub fn operator(&self) -> Arc<Context> {
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

    pub async fn reconcile(&self, operator: &Arc<Context>) -> FruitPipeline {
        reconcile(Arc::new(self.pipeline()), Arc::clone(operator))
            .await
            .expect("reconcile");
        self.pipeline()
    }

    /// A user's edit of the spec: the API server bumps the generation.
    pub fn edit_spec(&self, field: &str, value: Value) {
        let pipeline = &mut self.objects.lock().unwrap().pipeline;
        pipeline["spec"][field] = value;
        let generation = pipeline["metadata"]["generation"].as_i64().unwrap_or(1);
        pipeline["metadata"]["generation"] = json!(generation + 1);
    }

    /// Reconciles and plays the cluster until the pipeline finishes; `restart` gives each
    /// reconcile a new operator.
    pub async fn run_to_completion_with(&mut self, restart: bool) -> FruitPipeline {
        let mut operator = self.operator();
        for _ in 0..200 {
            if restart {
                operator = self.operator();
            }
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

    pub async fn run_to_completion(&mut self) -> FruitPipeline {
        self.run_to_completion_with(false).await
    }

    pub fn event_reasons(&self) -> Vec<String> {
        self.objects
            .lock()
            .unwrap()
            .events
            .iter()
            .map(|event| event["reason"].as_str().unwrap().to_string())
            .collect()
    }
}
