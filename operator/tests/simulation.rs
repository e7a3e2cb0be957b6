//! Cluster simulation: the real reconciler, a strict in-memory API server, and a harness
//! that plays the Job controller and the kubelet (tests/support/cluster.rs), running the
//! real `fruitpipe` binary per pod against a real S3 server on loopback. Each scenario
//! ends in the right phase, with the same CSV as a clean run where the run succeeds.

mod common;
#[allow(dead_code)]
#[path = "../../job-runner/tests/support/s3_server.rs"]
mod s3_server;
#[allow(dead_code)]
mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use fruitpipe_operator::api::{FruitPipeline, Phase, Stage};
use s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
use serde_json::json;
use support::cluster::{Cluster, Fault};

const SECRET: &str = "s3-credentials";

fn secrets() -> HashMap<String, HashMap<String, String>> {
    let secret = HashMap::from([
        ("AWS_ACCESS_KEY_ID".to_string(), ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), SECRET_KEY.to_string()),
    ]);
    HashMap::from([(SECRET.to_string(), secret)])
}

fn new_cluster(pipeline: &FruitPipeline) -> Cluster {
    Cluster::new(pipeline, secrets())
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
        "output": { "uri": "s3://fruits/out" },
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
    let mut cluster = new_cluster(&pipeline_for(&server, "s3://fruits/models/features.onnx"));
    let pipeline = cluster.run_to_completion().await;
    let status = pipeline.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert_eq!(
        (
            status.shards.total,
            status.shards.succeeded,
            status.shards.projected
        ),
        (4, 4, 4)
    );
    assert_eq!((status.images.processed, status.images.skipped), (30, 0));
    assert_eq!(status.k, Some(5));
    let outputs = status.outputs.unwrap();
    assert_eq!(outputs.features, "s3://fruits/out/features_pca.csv");
    assert_eq!(
        outputs.report.as_deref(),
        Some("s3://fruits/out/report.html"),
        "the status lists the report with the other outputs"
    );
    assert_eq!(
        outputs.parquet, None,
        "CSV only unless output.formats says parquet"
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
    assert_eq!(
        cluster.event_reasons(),
        [
            "Planning",
            "Extracting",
            "Fitting",
            "Projecting",
            "Assembling",
            "Succeeded"
        ]
    );
    let fitted = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Fitted")
        .unwrap();
    assert!(
        fitted.message.starts_with("k = 5 explaining "),
        "{}",
        fitted.message
    );
    let projected = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Projected")
        .unwrap();
    assert_eq!(projected.message, "30 photos projected in 4 shards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_index_that_fails_once_is_retried_and_the_csv_is_the_same() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let expected = clean_csv(&server, &pipeline_for(&server, features())).await;
    let mut troubled = new_cluster(&pipeline_for(&server, features()));
    troubled
        .faults
        .insert(("project".into(), 2, 1), Fault::Crash);
    let status = troubled.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert_eq!(
        troubled.attempts[&("project".to_string(), 2)],
        2,
        "project index 2 was not retried"
    );
    assert_eq!(troubled.attempts[&("fit".to_string(), 0)], 1);
    assert_eq!(status.shards.projected, 4);
    assert!(
        csv_rows(&server) == expected,
        "a retried project index changed the CSV"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_between_fit_and_project_does_not_fit_again() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let expected = clean_csv(&server, &pipeline_for(&server, features())).await;
    let mut cluster = new_cluster(&pipeline_for(&server, features()));
    let operator = cluster.operator();
    for _ in 0..50 {
        let pipeline = cluster.reconcile(&operator).await;
        let status = pipeline.status.unwrap();
        if status.completed_stages.contains(&Stage::Fit) {
            assert_eq!(status.phase, Phase::Projecting);
            break;
        }
        tokio::task::block_in_place(|| cluster.step());
    }
    assert!(cluster.job("project").is_some(), "the project Job exists");
    // The operator goes away; meanwhile someone cleans up the finished fit Job.
    drop(operator);
    cluster.delete_job("fit", false);
    let status = cluster.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert_eq!(
        cluster.attempts[&("fit".to_string(), 0)],
        1,
        "fit ran again"
    );
    assert!(
        cluster.job("fit").is_none(),
        "the fit Job was created again"
    );
    assert_eq!(csv_rows(&server), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_fails_once_is_retried_and_the_csv_is_the_same() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let mut clean = new_cluster(&pipeline_for(&server, "s3://fruits/models/features.onnx"));
    clean.run_to_completion().await;
    let expected = csv_rows(&server);

    std::fs::remove_dir_all(server.root.join("fruits/out")).unwrap();
    let mut troubled = new_cluster(&pipeline_for(&server, "s3://fruits/models/features.onnx"));
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
    let mut cluster = new_cluster(&pipeline);
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
    let mut cluster = new_cluster(&pipeline);
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
    let mut cluster = new_cluster(&pipeline_for(&server, "s3://fruits/models/features.onnx"));
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
    let mut cluster = new_cluster(&pipeline_for(&server, "s3://fruits/models/missing.onnx"));
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
    let mut cluster = new_cluster(&pipeline_for(&server, "s3://fruits/models/features.onnx"));
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
        // Only on a 409 (the conflict scenario below uses it).
        ("get", "batch", "jobs"),
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

/// A clean run's CSV for `pipeline`, to compare troubled runs against.
async fn clean_csv(server: &S3Server, pipeline: &FruitPipeline) -> Vec<String> {
    let mut clean = new_cluster(pipeline);
    let status = clean.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    let rows = csv_rows(server);
    std::fs::remove_dir_all(server.root.join("fruits/out")).unwrap();
    rows
}

fn features() -> &'static str {
    "s3://fruits/models/features.onnx"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_dotted_name_runs_like_any_other() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let expected = clean_csv(&server, &pipeline_for(&server, features())).await;
    let mut pipeline = pipeline_for(&server, features());
    let name = "fruits-360.training-set-for-the-app-engine-v2-2026-november1";
    assert_eq!(name.len(), 60);
    pipeline.metadata.name = Some(name.into());
    let mut cluster = new_cluster(&pipeline);
    let status = cluster.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert!(cluster.objects.lock().unwrap().refused.is_empty());
    assert_eq!(csv_rows(&server), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_finished_plan_job_is_not_run_again() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let expected = clean_csv(&server, &pipeline_for(&server, features())).await;
    let mut cluster = new_cluster(&pipeline_for(&server, features()));
    let operator = cluster.operator();
    cluster.reconcile(&operator).await;
    tokio::task::block_in_place(|| cluster.step()); // plan runs
    let pipeline = cluster.reconcile(&operator).await; // extract is created
    assert_eq!(pipeline.status.unwrap().phase, Phase::Extracting);
    cluster.delete_job("plan", false);
    let status = cluster.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert_eq!(
        cluster.attempts[&("plan".to_string(), 0)],
        1,
        "plan ran again"
    );
    assert!(cluster.job("plan").is_none());
    assert_eq!(csv_rows(&server), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_pipeline_never_shares_jobs_or_work_with_the_old_one() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    // The new pipeline changes the shard size, which is why it was re-created.
    let mut new_spec = pipeline_for(&server, features());
    new_spec.spec.shard_size = 5;
    let expected = clean_csv(&server, &new_spec).await;

    // The old pipeline planned and created its extract Job; then it was deleted. Its
    // Jobs go with it, but one of its pods is still in its grace period.
    let mut old = new_cluster(&pipeline_for(&server, features()));
    let operator = old.operator();
    old.reconcile(&operator).await;
    tokio::task::block_in_place(|| old.step());
    old.reconcile(&operator).await;
    let old_extract = old.job("extract").unwrap();

    let mut new_pipeline = new_spec.clone();
    new_pipeline.metadata.uid = Some("0d5c6e0a-4c1b-4f3e-9a43-1b9a6e1f0002".into());
    let mut new = new_cluster(&new_pipeline);
    // The old run's Job still exists when the new pipeline starts (foreground deletion).
    new.objects.lock().unwrap().jobs.insert(
        old_extract["metadata"]["name"].as_str().unwrap().into(),
        old_extract.clone(),
    );
    let operator = new.operator();
    new.reconcile(&operator).await;
    tokio::task::block_in_place(|| new.step()); // new plan
    new.reconcile(&operator).await; // new extract created: no 409, no adoption
    let new_name = fruitpipe_operator::jobs::job_name(
        &fruitpipe_operator::jobs::pipeline_run_id(&new_pipeline),
        Stage::Extract,
    );
    let new_extract = new.objects.lock().unwrap().jobs[&new_name].clone();
    assert_ne!(
        new_extract["metadata"]["name"],
        old_extract["metadata"]["name"]
    );
    // The old run's pods run alongside (the harness plays every Job it holds) and write
    // their shards before the new run's fit.
    let old_name = old_extract["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::task::block_in_place(|| {
        while new.objects.lock().unwrap().jobs[&old_name]["status"]["conditions"].is_null() {
            new.step();
        }
    });
    let status = new.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert_eq!(
        csv_rows(&server),
        expected,
        "the old run's pods changed the new run's CSV"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_pods_of_a_deleted_job_do_not_feed_the_status() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let expected = clean_csv(&server, &pipeline_for(&server, features())).await;
    let mut cluster = new_cluster(&pipeline_for(&server, features()));
    // Index 0's first pod fails; the extract Job is then deleted with --cascade=orphan.
    cluster.faults.insert(("extract".into(), 0, 1), Fault::Kill);
    let operator = cluster.operator();
    cluster.reconcile(&operator).await;
    tokio::task::block_in_place(|| cluster.step());
    cluster.reconcile(&operator).await;
    tokio::task::block_in_place(|| cluster.step()); // one wave of extract
    cluster.delete_job("extract", true);
    let orphans = cluster.objects.lock().unwrap().pods.len();
    assert!(orphans >= 3, "plan pod and at least two extract pods");
    let status = cluster.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    // Counted once: the orphans' results (and failure) are not the new Job's.
    assert_eq!((status.images.processed, status.images.skipped), (30, 0));
    assert_eq!(csv_rows(&server), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waiting_for_its_secret_is_reported_then_runs_when_it_appears() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let expected = clean_csv(&server, &pipeline_for(&server, features())).await;
    let mut cluster = Cluster::new(&pipeline_for(&server, features()), HashMap::new());
    let operator = cluster.operator();
    cluster.reconcile(&operator).await;
    for _ in 0..3 {
        tokio::task::block_in_place(|| cluster.step());
        let status = cluster.reconcile(&operator).await.status.unwrap();
        assert_eq!(status.phase, Phase::Planning);
        let stuck = status
            .conditions
            .iter()
            .find(|condition| condition.type_ == "PodsStarted")
            .expect("a PodsStarted condition");
        assert_eq!(
            (stuck.status.as_str(), stuck.reason.as_str()),
            ("False", "CreateContainerConfigError")
        );
        assert!(
            stuck
                .message
                .contains("secret \"s3-credentials\" not found"),
            "{}",
            stuck.message
        );
    }
    let warnings = |cluster: &Cluster| {
        cluster
            .event_reasons()
            .iter()
            .filter(|reason| *reason == "CreateContainerConfigError")
            .count()
    };
    assert_eq!(
        warnings(&cluster),
        1,
        "one event per reason, not per reconcile"
    );

    cluster.secrets = secrets();
    let status = cluster.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    let started = status
        .conditions
        .iter()
        .find(|c| c.type_ == "PodsStarted")
        .unwrap();
    assert_eq!(started.status, "True");
    assert_eq!(warnings(&cluster), 1);
    assert_eq!(csv_rows(&server), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_pod_says_which_limit_to_raise() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let mut pipeline = pipeline_for(&server, features());
    pipeline.spec.retries = 0;
    pipeline.spec.runner.resources =
        Some(serde_json::from_value(json!({ "limits": { "memory": "512Mi" } })).unwrap());
    let mut cluster = new_cluster(&pipeline);
    cluster.faults.insert(("extract".into(), 1, 1), Fault::Oom);
    let status = cluster.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Failed);
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert!(
        failed
            .message
            .contains("shard 1: out of memory: raise spec.runner.resources.limits.memory")
            && failed.message.contains("512Mi"),
        "{}",
        failed.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_between_every_pair_of_stages_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let expected = clean_csv(&server, &pipeline_for(&server, features())).await;
    let mut cluster = new_cluster(&pipeline_for(&server, features()));
    let status = cluster.run_to_completion_with(true).await.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert_eq!(cluster.attempts[&("plan".to_string(), 0)], 1);
    assert_eq!(cluster.attempts[&("fit".to_string(), 0)], 1);
    assert_eq!(cluster.attempts[&("assemble".to_string(), 0)], 1);
    for index in 0..4 {
        assert_eq!(cluster.attempts[&("project".to_string(), index)], 1);
    }
    assert_eq!(cluster.objects.lock().unwrap().jobs.len(), 5);
    assert_eq!(csv_rows(&server), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_holds_every_stage_and_resume_finishes_the_run() {
    let root = tempfile::tempdir().unwrap();
    let server = s3_with_photos(root.path());
    let expected = clean_csv(&server, &pipeline_for(&server, features())).await;
    for (stage, waves_before) in [
        ("plan", 0),
        ("extract", 1),
        ("fit", 3),
        ("project", 4),
        ("assemble", 6),
    ] {
        let mut cluster = new_cluster(&pipeline_for(&server, features()));
        let operator = cluster.operator();
        cluster.reconcile(&operator).await;
        for _ in 0..waves_before {
            tokio::task::block_in_place(|| cluster.step());
            cluster.reconcile(&operator).await;
        }
        assert!(cluster.job(stage).is_some(), "the {stage} Job exists");
        let ran_before = cluster.attempts.keys().filter(|(s, _)| s == stage).count();
        cluster.edit_spec("suspend", json!(true));
        let status = cluster.reconcile(&operator).await.status.unwrap();
        assert_eq!(status.phase, Phase::Suspended, "{stage}");
        assert_eq!(
            cluster.job(stage).unwrap()["spec"]["suspend"],
            true,
            "{stage}"
        );
        tokio::task::block_in_place(|| cluster.step());
        tokio::task::block_in_place(|| cluster.step());
        let ran = cluster.attempts.keys().filter(|(s, _)| s == stage).count();
        assert_eq!(ran, ran_before, "a suspended {stage} Job ran pods");

        cluster.edit_spec("suspend", json!(false));
        let status = cluster.run_to_completion().await.status.unwrap();
        assert_eq!(
            status.phase,
            Phase::Succeeded,
            "{stage}: {:?}",
            status.conditions
        );
        assert_eq!(csv_rows(&server), expected, "{stage}");
        std::fs::remove_dir_all(server.root.join("fruits/out")).unwrap();
    }
}

/// API load of a 2,000-shard run (pods report canned results; no process runs): the Job
/// controller finishes `parallelism` indexes per wave and the operator reconciles after
/// each wave, as a Job status change would make it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2000_shard_run_reads_each_pod_at_most_once() {
    let mut pipeline = common::pipeline(json!({
        "input": "s3://fruits/in", "output": { "uri": "s3://fruits/out" },
        "model": { "uri": "s3://fruits/models/features.onnx" },
        "shardSize": 2000, "parallelism": 50,
        "s3": { "credentialsSecret": SECRET }
    }));
    pipeline.metadata.name = Some("fruits-360-full".into());
    let shards = 2000;
    let mut cluster = new_cluster(&pipeline);
    cluster.synthetic = Some((shards, 2000));
    let status = cluster.run_to_completion().await.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.conditions);
    assert_eq!(status.shards.total, shards);
    assert_eq!(status.images.processed, 4_000_000);
    let traffic = cluster.objects.lock().unwrap().traffic.clone();
    let pods = cluster.objects.lock().unwrap().pods.len() as u64;
    eprintln!(
        "2,000-shard run: {} API calls, {:.1} MB of responses, {} pods returned for {} pods; calls: {:?}",
        traffic.calls,
        traffic.bytes as f64 / 1e6,
        traffic.pods,
        pods,
        traffic.by_call
    );
    assert_eq!(pods, 2 * u64::from(shards) + 3);
    assert!(
        traffic.pods <= pods,
        "pods read more than once: {} for {pods}",
        traffic.pods
    );
    // About two calls per wave of each Indexed Job (extract, then project), whatever the
    // number of pods.
    assert!(traffic.calls < 250, "{} calls", traffic.calls);
}
