//! The Jobs the operator renders. A snapshot per stage makes every change to them a
//! visible diff (`UPDATE_SNAPSHOTS=1 cargo test -p fruitpipe-operator --test jobs` rewrites
//! them); the assertions below pin what must never change by accident.

mod common;

use common::{UID, defaults, example_spec, pipeline};
use fruitpipe_operator::jobs::{Run, Stage, job_name, pipeline_run_id, render, run_id, work_uri};
use k8s_openapi::api::batch::v1::Job;

fn run() -> Run {
    Run {
        id: run_id("fruits-360", UID),
        shards: 7,
    }
}

fn check_snapshot(stage: Stage, job: &Job) {
    let path = format!(
        "{}/tests/snapshots/{}.yaml",
        env!("CARGO_MANIFEST_DIR"),
        stage.as_str()
    );
    let rendered = serde_saphyr::to_string(job).unwrap();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != rendered {
        panic!(
            "the {} Job changed; if intended, run with UPDATE_SNAPSHOTS=1 and commit {path}\n--- committed\n{committed}\n--- rendered\n{rendered}",
            stage.as_str()
        );
    }
}

#[test]
fn rendered_jobs_match_their_snapshots() {
    let pipeline = pipeline(example_spec());
    for stage in Stage::ALL {
        check_snapshot(stage, &render(&pipeline, &run(), stage, &defaults()));
    }
}

#[test]
fn names_and_work_area_come_from_the_name_and_the_uid() {
    let pipeline = pipeline(example_spec());
    let id = pipeline_run_id(&pipeline);
    assert_eq!(id, run_id("fruits-360", UID));
    let hash = id
        .strip_prefix("fruits-360-")
        .expect("the name comes first");
    assert_eq!(hash.len(), 10);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(job_name(&id, Stage::Extract), format!("{id}-extract"));
    assert_eq!(
        work_uri(&pipeline, &id),
        format!("s3://fruits/pca/fruits-360/_work/{id}")
    );

    // Deleted and created again under the same name: a new UID, a new run.
    let recreated = run_id("fruits-360", "0d5c6e0a-4c1b-4f3e-9a43-1b9a6e1f0002");
    assert_ne!(recreated, id);
    assert!(recreated.starts_with("fruits-360-"));

    // Dots and long names: the readable part is cut and dashed, the hash keeps it unique.
    let long = run_id(&format!("{}.b", "a".repeat(250)), UID);
    assert!(long.len() <= 49, "{long}");
    assert!(!long.contains('.'));
    assert_ne!(long, run_id(&format!("{}.c", "a".repeat(250)), "other-uid"));
    assert_eq!(run_id("fruits.v2", UID), format!("fruits-v2-{hash}"));
}

#[test]
fn extract_is_an_indexed_job_with_per_index_retries_and_a_failure_policy() {
    let pipeline = pipeline(example_spec());
    let job = render(&pipeline, &run(), Stage::Extract, &defaults());
    let spec = job.spec.unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!(spec.completions, Some(7));
    assert_eq!(spec.parallelism, Some(4));
    assert_eq!(spec.backoff_limit_per_index, Some(3));
    assert_eq!(spec.max_failed_indexes, Some(0));
    let rules = spec.pod_failure_policy.unwrap().rules;
    assert_eq!(rules[0].action, "FailJob");
    assert_eq!(rules[0].on_exit_codes.as_ref().unwrap().values, vec![2]);
    assert_eq!(rules[1].action, "Ignore");
    assert_eq!(
        rules[1].on_pod_conditions.as_ref().unwrap()[0].type_,
        "DisruptionTarget"
    );

    // Fewer shards than parallelism: no idle pods asked for.
    let small = render(
        &pipeline,
        &Run {
            id: run_id("fruits-360", UID),
            shards: 2,
        },
        Stage::Extract,
        &defaults(),
    );
    assert_eq!(small.spec.unwrap().parallelism, Some(2));
}

#[test]
fn pods_are_locked_down_and_credentials_stay_in_the_secret() {
    let pipeline = pipeline(example_spec());
    for stage in Stage::ALL {
        let job = render(&pipeline, &run(), stage, &defaults());
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), (UID, Some(true)));
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let pod_security = pod.security_context.unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.unwrap().type_,
            "RuntimeDefault"
        );
        let container = &pod.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            container.volume_mounts.as_ref().unwrap()[0].mount_path,
            "/tmp"
        );
        assert_eq!(
            container.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        let args = container.args.as_ref().unwrap();
        assert_eq!(args[0], stage.as_str());
        assert!(
            args.windows(2)
                .any(|pair| pair == ["--summary-file", "/dev/termination-log"])
        );
        for variable in container.env.as_ref().unwrap() {
            if variable.name.starts_with("AWS_ACCESS") || variable.name.starts_with("AWS_SECRET") {
                assert!(variable.value.is_none(), "{} is inline", variable.name);
                let reference = variable
                    .value_from
                    .as_ref()
                    .unwrap()
                    .secret_key_ref
                    .as_ref()
                    .unwrap();
                assert_eq!(reference.name, "fruitpipe-s3");
            }
        }
        let text = serde_json::to_string(container).unwrap();
        assert!(
            !text.contains("fruitpipe-secret"),
            "a credential leaked into the pod spec"
        );
    }
}

#[test]
fn stage_arguments_carry_the_spec() {
    let pipeline = pipeline(example_spec());
    let args = |stage| {
        render(&pipeline, &run(), stage, &defaults())
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .args
            .clone()
            .unwrap()
            .join(" ")
    };
    let work = format!(
        "--work s3://fruits/pca/fruits-360/_work/{}",
        run_id("fruits-360", UID)
    );
    assert_eq!(
        args(Stage::Plan),
        format!(
            "plan {work} --input s3://fruits/fruits360-sample --shard-size 500 --summary-file /dev/termination-log"
        )
    );
    assert_eq!(
        args(Stage::Extract),
        format!(
            "extract {work} --model s3://fruits/models/efficientnet_lite0_features.onnx --preset lite --size 224 --summary-file /dev/termination-log"
        )
    );
    assert_eq!(
        args(Stage::Fit),
        format!(
            "fit {work} --output s3://fruits/pca/fruits-360 --format csv --variance 0.95 --summary-file /dev/termination-log"
        )
    );
    assert!(
        common::pipeline(example_spec()).spec.pca.whiten,
        "whiten is on unless set to false"
    );
    let mut no_pca = example_spec();
    no_pca.as_object_mut().unwrap().remove("pca");
    assert!(common::pipeline(no_pca).spec.pca.whiten);
    let fit_args_of = |spec| {
        let fit = render(&common::pipeline(spec), &run(), Stage::Fit, &defaults());
        fit.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap()
            .join(" ")
    };
    let mut plain = example_spec();
    plain["pca"] = serde_json::json!({ "components": 64, "whiten": false });
    let fit_args = fit_args_of(plain);
    assert!(
        fit_args.contains("--components 64 --no-whiten"),
        "{fit_args}"
    );
    let mut parquet = example_spec();
    parquet["output"]["formats"] = serde_json::json!(["parquet", "csv"]);
    let fit_args = fit_args_of(parquet);
    assert!(
        fit_args.contains("--output s3://fruits/pca/fruits-360 --format csv,parquet "),
        "output.formats reaches the fit pod: {fit_args}"
    );
    assert!(
        !args(Stage::Fit).contains("whiten"),
        "whitening is the runner's default"
    );
    assert_eq!(
        args(Stage::Project),
        format!("project {work} --summary-file /dev/termination-log")
    );
    assert_eq!(
        args(Stage::Assemble),
        format!(
            "assemble {work} --output s3://fruits/pca/fruits-360 --summary-file /dev/termination-log"
        )
    );
}

#[test]
fn empty_s3_fields_take_the_installation_defaults() {
    let env = |spec: serde_json::Value| -> Vec<(String, String)> {
        let mut installation = defaults();
        installation.s3 = serde_json::from_value(serde_json::json!({
            "endpoint": "http://minio.storage.svc:9000",
            "region": "eu-west-3",
            "pathStyle": true,
            "credentialsSecret": "cluster-s3"
        }))
        .unwrap();
        let job = render(&pipeline(spec), &run(), Stage::Plan, &installation);
        job.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .filter(|var| var.name.starts_with("AWS_") || var.name.contains("S3"))
            .map(|var| {
                let value = var
                    .value
                    .unwrap_or_else(|| var.value_from.unwrap().secret_key_ref.unwrap().name);
                (var.name, value)
            })
            .collect()
    };
    let pair = |name: &str, value: &str| (name.to_string(), value.to_string());

    let mut spec = example_spec();
    spec["s3"] = serde_json::json!({});
    assert_eq!(
        env(spec),
        [
            pair("AWS_ENDPOINT_URL", "http://minio.storage.svc:9000"),
            pair("AWS_REGION", "eu-west-3"),
            pair("FRUITPIPE_S3_PATH_STYLE", "true"),
            pair("AWS_ACCESS_KEY_ID", "cluster-s3"),
            pair("AWS_SECRET_ACCESS_KEY", "cluster-s3"),
            pair("AWS_SESSION_TOKEN", "cluster-s3"),
        ]
    );
    // What the pipeline names wins.
    let named = env(example_spec());
    assert!(named.contains(&pair("AWS_ENDPOINT_URL", "http://minio.fruitpipe.svc:9000")));
    assert!(named.contains(&pair("AWS_REGION", "us-east-1")));
    assert!(named.contains(&pair("AWS_ACCESS_KEY_ID", "fruitpipe-s3")));
}

#[test]
fn every_stage_honours_suspend_the_deadline_and_the_tmp_limit() {
    let mut spec = example_spec();
    spec["suspend"] = serde_json::json!(true);
    spec["runner"]["activeDeadlineSeconds"] = serde_json::json!(3600);
    spec["runner"]["tmpSizeLimit"] = serde_json::json!("2Gi");
    let pipeline = pipeline(spec);
    for stage in Stage::ALL {
        let job = render(&pipeline, &run(), stage, &defaults());
        let labels = job.metadata.labels.clone().unwrap();
        assert!(labels.values().all(|value| value.len() <= 63), "{labels:?}");
        assert_eq!(
            job.metadata.annotations.unwrap()["fruitpipe.dev/pipeline"],
            "fruits-360"
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.suspend, Some(true), "{}", stage.as_str());
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        let volume = &spec.template.spec.unwrap().volumes.unwrap()[0];
        assert_eq!(
            volume
                .empty_dir
                .as_ref()
                .unwrap()
                .size_limit
                .as_ref()
                .unwrap()
                .0,
            "2Gi"
        );
    }
}

#[test]
fn event_notes_are_cut_to_1024_bytes_at_a_character_boundary() {
    use fruitpipe_operator::controller::event_note;
    assert_eq!(event_note("short"), "short");
    let long = "é".repeat(600); // 1,200 bytes
    let note = event_note(&long);
    assert!(
        note.len() <= 1024 && note.ends_with("..."),
        "{}",
        note.len()
    );
    assert!(note.starts_with("éé"));
}
