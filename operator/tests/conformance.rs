//! The API-conformance checker the API doubles use: the Jobs the operator renders pass it,
//! and objects the real API server (1.33) refuses are refused, each with the upstream rule.
//!
//! The refusal tables are written from the upstream tests where the stored copies have
//! them: `TestValidateJob` and `TestValidateJobUpdate` (pkg/apis/batch/validation/
//! validation_test.go), `TestValidateLabels` and `TestValidateConditions`
//! (staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation_test.go) and
//! `TestValidateEventCreateForNewV1Events` (pkg/apis/core/validation/events_test.go). Each
//! case names the upstream test case it follows, or the function when no upstream case was
//! found.

mod common;

use std::collections::BTreeMap;

use common::{NAMESPACE, defaults, example_spec, pipeline};
use fruitpipe_operator::conformance::{
    Violation, check_conditions, check_event, check_job, check_job_update, rules,
};
use fruitpipe_operator::jobs::{Run, Stage, pipeline_run_id, render};
use k8s_openapi::api::batch::v1::{Job, JobSpec, PodFailurePolicyOnPodConditionsPattern};
use k8s_openapi::api::core::v1::{ObjectReference, PodSpec};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

fn rendered(stage: Stage) -> Job {
    let pipeline = pipeline(example_spec());
    let run = Run {
        id: pipeline_run_id(&pipeline),
        shards: 7,
    };
    render(&pipeline, &run, stage, &defaults())
}

fn spec(job: &mut Job) -> &mut JobSpec {
    job.spec.as_mut().unwrap()
}

fn pod(job: &mut Job) -> &mut PodSpec {
    spec(job).template.spec.as_mut().unwrap()
}

fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_refused(case: &str, violations: &[Violation], field: &str, rule: &str) {
    assert!(
        violations
            .iter()
            .any(|v| v.field == field && v.rule == rule),
        "{case}: expected {field} refused by {rule}, got:\n{}",
        describe(violations)
    );
}

#[test]
fn the_jobs_the_operator_renders_pass() {
    for stage in Stage::ALL {
        let job = rendered(stage);
        let violations = check_job(&job);
        assert!(
            violations.is_empty(),
            "{stage:?}:\n{}",
            describe(&violations)
        );
    }
}

#[test]
fn rendered_jobs_pass_with_every_runner_option_set() {
    let mut spec = example_spec();
    spec["suspend"] = serde_json::json!(true);
    spec["runner"] = serde_json::json!({
        "image": "registry.example.com/fruitpipe/runner:1.2.3",
        "imagePullPolicy": "Always",
        "serviceAccountName": "runner.sa",
        "threads": 2,
        "nodeSelector": { "node.kubernetes.io/instance-type": "c7i.2xlarge" },
        "tolerations": [
            { "key": "spot", "operator": "Exists", "effect": "NoSchedule" },
            { "key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoExecute", "tolerationSeconds": 60 }
        ],
        "resources": {
            "requests": { "cpu": "500m", "memory": "1Gi", "ephemeral-storage": "2Gi" },
            "limits": { "cpu": "2", "memory": "1073741824" }
        }
    });
    let pipeline = pipeline(spec);
    let run = Run {
        id: pipeline_run_id(&pipeline),
        shards: 7,
    };
    for stage in Stage::ALL {
        let job = render(&pipeline, &run, stage, &defaults());
        let violations = check_job(&job);
        assert!(
            violations.is_empty(),
            "{stage:?}:\n{}",
            describe(&violations)
        );
    }
}

#[test]
fn the_servers_generated_selector_and_labels_pass() {
    // What pkg/registry/batch/job/strategy.go generateSelector adds on create.
    let mut job = rendered(Stage::Extract);
    let name = job.metadata.name.clone().unwrap();
    let uid = "4d5e6f".to_string();
    job.metadata.uid = Some(uid.clone());
    spec(&mut job).selector = Some(
        serde_json::from_value(serde_json::json!({
            "matchLabels": { "batch.kubernetes.io/controller-uid": uid }
        }))
        .unwrap(),
    );
    let labels = spec(&mut job)
        .template
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .get_or_insert_with(BTreeMap::new);
    for (key, value) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("job-name", &name),
    ] {
        labels.insert(key.into(), value.clone());
    }
    let violations = check_job(&job);
    assert!(violations.is_empty(), "{}", describe(&violations));
}

type Mutation = Box<dyn Fn(&mut Job)>;

struct Case {
    /// The upstream test case (or function) the case follows.
    upstream: &'static str,
    stage: Stage,
    mutate: Mutation,
    field: String,
    rule: &'static str,
}

fn case(
    upstream: &'static str,
    stage: Stage,
    mutate: impl Fn(&mut Job) + 'static,
    field: impl Into<String>,
    rule: &'static str,
) -> Case {
    Case {
        upstream,
        stage,
        mutate: Box::new(mutate),
        field: field.into(),
        rule,
    }
}

/// The index of the first env var taken from a Secret (the S3 credentials).
fn secret_env_index() -> usize {
    let mut job = rendered(Stage::Extract);
    pod(&mut job).containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .position(|var| var.value_from.is_some())
        .expect("the runner gets S3 credentials from a Secret")
}

fn exit_codes(job: &mut Job) -> &mut Vec<i32> {
    &mut spec(job).pod_failure_policy.as_mut().unwrap().rules[0]
        .on_exit_codes
        .as_mut()
        .unwrap()
        .values
}

fn container_env_name(job: &mut Job, name: &str) {
    pod(job).containers[0].env.as_mut().unwrap()[0].name = name.into();
}

fn requests(job: &mut Job) -> &mut BTreeMap<String, Quantity> {
    pod(job).containers[0]
        .resources
        .get_or_insert_with(Default::default)
        .requests
        .get_or_insert_with(BTreeMap::new)
}

#[test]
fn jobs_the_api_server_refuses_are_refused() {
    let secret = secret_env_index();
    let cases = vec![
        // ValidateJob (pkg/apis/batch/validation): an Indexed Job's largest pod hostname,
        // `<name>-<completions-1>`, must be a DNS-1123 label. A 62-character name is a
        // valid Job name and label value, but `<name>-6` has 64 characters. (No upstream
        // test case for this rule was found in the stored validation_test.go.)
        case(
            "ValidateJob: maximumPodHostname too long",
            Stage::Extract,
            |job| job.metadata.name = Some("a".repeat(62)),
            "metadata.name",
            rules::VALIDATE_JOB,
        ),
        // ValidateJob: a dotted name is a valid DNS subdomain (a valid Job name) but the
        // Indexed pod hostname `fruits.360-extract-6` is not a DNS label.
        case(
            "ValidateJob: dotted name on an Indexed Job",
            Stage::Extract,
            |job| job.metadata.name = Some("fruits.360-extract".into()),
            "metadata.name",
            rules::VALIDATE_JOB,
        ),
        // generateSelector copies the Job name into the job-name pod labels; a name over 63
        // characters is then an invalid label value ("spec.template.labels: must be no
        // more than 63 characters", as clusters report it).
        case(
            "generateSelector + ValidateLabels: Job name longer than a label value",
            Stage::Plan,
            |job| job.metadata.name = Some("a".repeat(64)),
            "spec.template.labels",
            rules::GENERATE_SELECTOR,
        ),
        // TestValidateLabels, labelValueErrorCases {"toolongvalue": strings.Repeat("a", 64)}.
        case(
            "TestValidateLabels: toolongvalue",
            Stage::Fit,
            |job| {
                job.metadata
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert("toolongvalue".into(), "a".repeat(64));
            },
            "metadata.labels",
            rules::VALIDATE_LABELS,
        ),
        // TestValidateLabels, labelValueErrorCases {"nocommasallowed": "bad,value"}.
        case(
            "TestValidateLabels: nocommasallowed",
            Stage::Extract,
            |job| {
                spec(job)
                    .template
                    .metadata
                    .as_mut()
                    .unwrap()
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert("nocommasallowed".into(), "bad,value".into());
            },
            // ValidatePodTemplateSpec reports the pod labels as spec.template.labels.
            "spec.template.labels",
            rules::VALIDATE_LABELS,
        ),
        // TestValidateLabels, labelNameErrorCases {"only/one/slash": "bar"}.
        case(
            "TestValidateLabels: only/one/slash",
            Stage::Plan,
            |job| {
                job.metadata
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert("only/one/slash".into(), "bar".into());
            },
            "metadata.labels",
            rules::VALIDATE_LABELS,
        ),
        // ValidateAnnotations: keys and values together over TotalAnnotationSizeLimitB
        // (256 KiB). (Upstream test case not located.)
        case(
            "ValidateAnnotations: TotalAnnotationSizeLimitB",
            Stage::Plan,
            |job| {
                job.metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert("a".into(), "b".repeat(256 * 1024));
            },
            "metadata.annotations",
            rules::VALIDATE_ANNOTATIONS,
        ),
        // ValidateOwnerReferences: at most one controller. (Upstream test case not located.)
        case(
            "ValidateOwnerReferences: two controllers",
            Stage::Plan,
            |job| {
                let refs = job.metadata.owner_references.as_mut().unwrap();
                let mut other = refs[0].clone();
                other.name = "other".into();
                refs.push(other);
            },
            "metadata.ownerReferences",
            rules::VALIDATE_OWNER_REFERENCES,
        ),
        // TestValidateJob `spec.template.spec.restartPolicy: Invalid value: "OnFailure":
        // only "Never" is supported when podFailurePolicy is specified`.
        case(
            "TestValidateJob: restartPolicy OnFailure with podFailurePolicy",
            Stage::Extract,
            |job| pod(job).restart_policy = Some("OnFailure".into()),
            "spec.template.spec.restartPolicy",
            rules::VALIDATE_JOB_SPEC_INNER,
        ),
        // TestValidateJob "spec.template.spec.restartPolicy: Required value" (Always).
        case(
            "TestValidateJob: spec.template.spec.restartPolicy: Required value",
            Stage::Plan,
            |job| pod(job).restart_policy = None,
            "spec.template.spec.restartPolicy",
            rules::VALIDATE_JOB_SPEC_INNER,
        ),
        // TestValidateJob `spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid
        // value: []int32{19, 11}: must be ordered`.
        case(
            "TestValidateJob: onExitCodes values must be ordered",
            Stage::Extract,
            |job| *exit_codes(job) = vec![19, 11],
            "spec.podFailurePolicy.rules[0].onExitCodes.values",
            rules::VALIDATE_POD_FAILURE_POLICY_RULE_ON_EXIT_CODES,
        ),
        // TestValidateJob `spec.podFailurePolicy.rules[0].onExitCodes.values[1]: Duplicate
        // value: 11`.
        case(
            "TestValidateJob: onExitCodes values[1] duplicate 11",
            Stage::Fit,
            |job| *exit_codes(job) = vec![11, 11],
            "spec.podFailurePolicy.rules[0].onExitCodes.values[1]",
            rules::VALIDATE_POD_FAILURE_POLICY_RULE_ON_EXIT_CODES,
        ),
        // TestValidateJob `spec.podFailurePolicy.rules[0].onExitCodes.values[1]: Invalid
        // value: 0: must not be 0 for the In operator`.
        case(
            "TestValidateJob: In with 0",
            Stage::Extract,
            |job| *exit_codes(job) = vec![1, 0, 2],
            "spec.podFailurePolicy.rules[0].onExitCodes.values[1]",
            rules::VALIDATE_POD_FAILURE_POLICY_RULE_ON_EXIT_CODES,
        ),
        // TestValidateJob `spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid
        // value: []int32{}: at least one value is required`.
        case(
            "TestValidateJob: onExitCodes without values",
            Stage::Plan,
            |job| exit_codes(job).clear(),
            "spec.podFailurePolicy.rules[0].onExitCodes.values",
            rules::VALIDATE_POD_FAILURE_POLICY_RULE_ON_EXIT_CODES,
        ),
        // TestValidateJob `spec.podFailurePolicy.rules[1].onExitCodes.containerName:
        // Invalid value: "xyz": must be one of the container or initContainer names in the
        // pod template`.
        case(
            "TestValidateJob: unknown containerName xyz",
            Stage::Extract,
            |job| {
                spec(job).pod_failure_policy.as_mut().unwrap().rules[0]
                    .on_exit_codes
                    .as_mut()
                    .unwrap()
                    .container_name = Some("xyz".into());
            },
            "spec.podFailurePolicy.rules[0].onExitCodes.containerName",
            rules::VALIDATE_POD_FAILURE_POLICY_RULE_ON_EXIT_CODES,
        ),
        // TestValidateJob `spec.podFailurePolicy.rules[0].onExitCodes.operator: Unsupported
        // value: "UnknownOperator"`.
        case(
            "TestValidateJob: UnknownOperator",
            Stage::Plan,
            |job| {
                spec(job).pod_failure_policy.as_mut().unwrap().rules[0]
                    .on_exit_codes
                    .as_mut()
                    .unwrap()
                    .operator = "UnknownOperator".into();
            },
            "spec.podFailurePolicy.rules[0].onExitCodes.operator",
            rules::VALIDATE_POD_FAILURE_POLICY_RULE_ON_EXIT_CODES,
        ),
        // TestValidateJob `spec.podFailurePolicy.rules[0]: Invalid value: specifying both
        // OnExitCodes and OnPodConditions is not supported`.
        case(
            "TestValidateJob: both OnExitCodes and OnPodConditions",
            Stage::Extract,
            |job| {
                spec(job).pod_failure_policy.as_mut().unwrap().rules[0].on_pod_conditions =
                    Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]);
            },
            "spec.podFailurePolicy.rules[0]",
            rules::VALIDATE_POD_FAILURE_POLICY_RULE,
        ),
        // TestValidateJob `spec.podFailurePolicy.rules[0]: Invalid value: specifying one of
        // OnExitCodes and OnPodConditions is required`.
        case(
            "TestValidateJob: neither OnExitCodes nor OnPodConditions",
            Stage::Fit,
            |job| {
                spec(job).pod_failure_policy.as_mut().unwrap().rules[0].on_exit_codes = None;
            },
            "spec.podFailurePolicy.rules[0]",
            rules::VALIDATE_POD_FAILURE_POLICY_RULE,
        ),
        // TestValidateJob `spec.podFailurePolicy.rules[0].action: Unsupported value:
        // "UnknownAction"`.
        case(
            "TestValidateJob: UnknownAction",
            Stage::Plan,
            |job| {
                spec(job).pod_failure_policy.as_mut().unwrap().rules[0].action =
                    "UnknownAction".into()
            },
            "spec.podFailurePolicy.rules[0].action",
            rules::VALIDATE_POD_FAILURE_POLICY_RULE,
        ),
        // validatePodFailurePolicyRule: FailIndex "requires the backoffLimitPerIndex to be
        // set" (the Plan Job is NonIndexed, without backoffLimitPerIndex). (No upstream
        // test case for this message in the stored validation_test.go.)
        case(
            "validatePodFailurePolicyRule: FailIndex without backoffLimitPerIndex",
            Stage::Plan,
            |job| {
                spec(job).pod_failure_policy.as_mut().unwrap().rules[0].action = "FailIndex".into()
            },
            "spec.podFailurePolicy.rules[0].action",
            rules::VALIDATE_POD_FAILURE_POLICY_RULE,
        ),
        // TestValidateJob `spec.podFailurePolicy.rules[0].onPodConditions[0].type: Invalid
        // value: "Invalid Condition Type"`.
        case(
            "TestValidateJob: Invalid Condition Type",
            Stage::Extract,
            |job| {
                spec(job).pod_failure_policy.as_mut().unwrap().rules[1]
                    .on_pod_conditions
                    .as_mut()
                    .unwrap()[0]
                    .type_ = "Invalid Condition Type".into();
            },
            "spec.podFailurePolicy.rules[1].onPodConditions[0].type",
            rules::VALIDATE_POD_FAILURE_POLICY_RULE_ON_POD_CONDITIONS,
        ),
        // TestValidateJob `spec.podFailurePolicy.rules[0].onPodConditions[0].status:
        // Unsupported value: "UnknownStatus"`.
        case(
            "TestValidateJob: UnknownStatus",
            Stage::Extract,
            |job| {
                spec(job).pod_failure_policy.as_mut().unwrap().rules[1]
                    .on_pod_conditions
                    .as_mut()
                    .unwrap()[0]
                    .status = "UnknownStatus".into();
            },
            "spec.podFailurePolicy.rules[1].onPodConditions[0].status",
            rules::VALIDATE_POD_FAILURE_POLICY_RULE_ON_POD_CONDITIONS,
        ),
        // TestValidateJob "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed
        // completion mode".
        case(
            "TestValidateJob: backoffLimitPerIndex requires indexed completion mode",
            Stage::Plan,
            |job| spec(job).backoff_limit_per_index = Some(1),
            "spec.backoffLimitPerIndex",
            rules::VALIDATE_JOB_SPEC_INNER,
        ),
        // TestValidateJob "spec.maxFailedIndexes: Invalid value: 11: must be less than or
        // equal to completions" (completions 7 here).
        case(
            "TestValidateJob: maxFailedIndexes above completions",
            Stage::Extract,
            |job| spec(job).max_failed_indexes = Some(8),
            "spec.maxFailedIndexes",
            rules::VALIDATE_JOB_SPEC_INNER,
        ),
        // TestValidateJob "spec.backoffLimitPerIndex: Required value: when
        // maxFailedIndexes is specified".
        case(
            "TestValidateJob: maxFailedIndexes without backoffLimitPerIndex",
            Stage::Extract,
            |job| spec(job).backoff_limit_per_index = None,
            "spec.backoffLimitPerIndex",
            rules::VALIDATE_JOB_SPEC_INNER,
        ),
        // TestValidateJob "spec.parallelism: must be less than or equal to 100000 when
        // completion mode is Indexed".
        case(
            "TestValidateJob: parallelism above 100000 for Indexed",
            Stage::Extract,
            |job| spec(job).parallelism = Some(100_001),
            "spec.parallelism",
            rules::VALIDATE_JOB_SPEC_INNER,
        ),
        // TestValidateJob "spec.maxFailedIndexes: Required value: must be specified when
        // completions is above 100000".
        case(
            "TestValidateJob: maxFailedIndexes required above 100000 completions",
            Stage::Extract,
            |job| {
                spec(job).completions = Some(100_001);
                spec(job).max_failed_indexes = None;
                job.metadata.name = Some("x".into());
            },
            "spec.maxFailedIndexes",
            rules::VALIDATE_JOB_SPEC_INNER,
        ),
        // TestValidateJob "spec.completions: Required value: when completion mode is
        // Indexed".
        case(
            "TestValidateJob: completions required when Indexed",
            Stage::Extract,
            |job| spec(job).completions = None,
            "spec.completions",
            rules::VALIDATE_JOB_SPEC_INNER,
        ),
        // TestValidateJob "spec.parallelism:must be greater than or equal to 0".
        case(
            "TestValidateJob: spec.parallelism negative",
            Stage::Extract,
            |job| spec(job).parallelism = Some(-1),
            "spec.parallelism",
            rules::VALIDATE_NONNEGATIVE_FIELD,
        ),
        // TestValidateJob "spec.activeDeadlineSeconds:must be greater than or equal to 0".
        case(
            "TestValidateJob: spec.activeDeadlineSeconds negative",
            Stage::Fit,
            |job| spec(job).active_deadline_seconds = Some(-1),
            "spec.activeDeadlineSeconds",
            rules::VALIDATE_NONNEGATIVE_FIELD,
        ),
        // TestValidateJob "spec.backoffLimit:must be greater than or equal to 0".
        case(
            "TestValidateJob: spec.backoffLimit negative",
            Stage::Plan,
            |job| spec(job).backoff_limit = Some(-1),
            "spec.backoffLimit",
            rules::VALIDATE_NONNEGATIVE_FIELD,
        ),
        // validateResourceRequirements via Quantity.UnmarshalJSON / resource.ParseQuantity:
        // a quantity that does not parse is refused when the body is decoded.
        case(
            "resource.ParseQuantity: 1 core",
            Stage::Extract,
            |job| {
                requests(job).insert("cpu".into(), Quantity("1 core".into()));
            },
            "spec.template.spec.containers[0].resources.requests[cpu]",
            rules::PARSE_QUANTITY,
        ),
        // validateResourceRequirements: "must be less than or equal to cpu limit".
        case(
            "validateResourceRequirements: requests above limits",
            Stage::Fit,
            |job| {
                requests(job).insert("cpu".into(), Quantity("2".into()));
                pod(job).containers[0]
                    .resources
                    .as_mut()
                    .unwrap()
                    .limits
                    .get_or_insert_with(BTreeMap::new)
                    .insert("cpu".into(), Quantity("1500m".into()));
            },
            "spec.template.spec.containers[0].resources.requests",
            rules::VALIDATE_RESOURCE_REQUIREMENTS,
        ),
        // validateContainerResourceName: an unprefixed name that is not a standard
        // container resource.
        case(
            "validateContainerResourceName: gpu",
            Stage::Extract,
            |job| {
                requests(job).insert("gpu".into(), Quantity("1".into()));
            },
            "spec.template.spec.containers[0].resources.requests[gpu]",
            rules::VALIDATE_CONTAINER_RESOURCE_NAME,
        ),
        // ValidateResourceQuantityValue: a negative request.
        case(
            "ValidateResourceQuantityValue: negative memory",
            Stage::Plan,
            |job| {
                requests(job).insert("memory".into(), Quantity("-1Gi".into()));
            },
            "spec.template.spec.containers[0].resources.requests[memory]",
            rules::VALIDATE_RESOURCE_QUANTITY_VALUE,
        ),
        // ValidateEnv with IsRelaxedEnvVarName (1.33 default): '=' is never allowed.
        case(
            "IsRelaxedEnvVarName: AWS=KEY",
            Stage::Extract,
            |job| container_env_name(job, "AWS=KEY"),
            "spec.template.spec.containers[0].env[0].name",
            rules::IS_RELAXED_ENV_VAR_NAME,
        ),
        // ValidateEnv: non-ASCII names are refused even by the relaxed rule.
        case(
            "IsRelaxedEnvVarName: non-ASCII",
            Stage::Plan,
            |job| container_env_name(job, "ÉTAT"),
            "spec.template.spec.containers[0].env[0].name",
            rules::IS_RELAXED_ENV_VAR_NAME,
        ),
        // validateSecretKeySelector: key required.
        case(
            "validateSecretKeySelector: empty key",
            Stage::Extract,
            move |job| {
                let var = &mut pod(job).containers[0].env.as_mut().unwrap()[secret];
                var.value_from
                    .as_mut()
                    .unwrap()
                    .secret_key_ref
                    .as_mut()
                    .unwrap()
                    .key = String::new();
            },
            format!("spec.template.spec.containers[0].env[{secret}].valueFrom.secretKeyRef.key"),
            rules::VALIDATE_SECRET_KEY_SELECTOR,
        ),
        // validateEnvVarValueFrom: value and valueFrom together.
        case(
            "validateEnvVarValueFrom: value and valueFrom",
            Stage::Fit,
            move |job| {
                pod(job).containers[0].env.as_mut().unwrap()[secret].value = Some("inline".into());
            },
            format!("spec.template.spec.containers[0].env[{secret}].valueFrom"),
            rules::VALIDATE_ENV_VAR_VALUE_FROM,
        ),
        // validateContainerCommon: the container name is a DNS-1123 label.
        case(
            "validateContainerCommon: container name",
            Stage::Extract,
            |job| pod(job).containers[0].name = "Fruit_Pipe".into(),
            "spec.template.spec.containers[0].name",
            rules::IS_DNS1123_LABEL,
        ),
        // validateContainerCommon: image required.
        case(
            "validateContainerCommon: image required",
            Stage::Plan,
            |job| pod(job).containers[0].image = Some(String::new()),
            "spec.template.spec.containers[0].image",
            rules::VALIDATE_CONTAINER_COMMON,
        ),
        // validatePullPolicy.
        case(
            "validatePullPolicy: Sometimes",
            Stage::Fit,
            |job| pod(job).containers[0].image_pull_policy = Some("Sometimes".into()),
            "spec.template.spec.containers[0].imagePullPolicy",
            rules::VALIDATE_PULL_POLICY,
        ),
        // validateContainerCommon: terminationMessagePolicy.
        case(
            "validateContainerCommon: terminationMessagePolicy",
            Stage::Extract,
            |job| pod(job).containers[0].termination_message_policy = Some("Logs".into()),
            "spec.template.spec.containers[0].terminationMessagePolicy",
            rules::VALIDATE_CONTAINER_COMMON,
        ),
        // ValidateVolumeMounts: the mount names a volume of the pod.
        case(
            "ValidateVolumeMounts: unknown volume",
            Stage::Plan,
            |job| pod(job).containers[0].volume_mounts.as_mut().unwrap()[0].name = "scratch".into(),
            "spec.template.spec.containers[0].volumeMounts[0].name",
            rules::VALIDATE_VOLUME_MOUNTS,
        ),
        // validateVolumeSource: an emptyDir sizeLimit must not be negative.
        case(
            "validateVolumeSource: negative sizeLimit",
            Stage::Extract,
            |job| {
                pod(job).volumes.as_mut().unwrap()[0]
                    .empty_dir
                    .as_mut()
                    .unwrap()
                    .size_limit = Some(Quantity("-1Gi".into()));
            },
            "spec.template.spec.volumes[0].emptyDir.sizeLimit",
            rules::VALIDATE_VOLUME_SOURCE,
        ),
        // ValidateVolumes: the volume name is a DNS-1123 label.
        case(
            "ValidateVolumes: volume name",
            Stage::Fit,
            |job| {
                pod(job).volumes.as_mut().unwrap()[0].name = "tmp.dir".into();
            },
            "spec.template.spec.volumes[0].name",
            rules::IS_DNS1123_LABEL,
        ),
        // ValidatePodSpec: serviceAccountName is a DNS subdomain.
        case(
            "ValidatePodSpec: serviceAccountName",
            Stage::Extract,
            |job| pod(job).service_account_name = Some("Runner_SA".into()),
            "spec.template.spec.serviceAccountName",
            rules::VALIDATE_POD_SPEC,
        ),
        // validateSeccompProfileField: type values.
        case(
            "validateSeccompProfileField: Default",
            Stage::Plan,
            |job| {
                pod(job)
                    .security_context
                    .as_mut()
                    .unwrap()
                    .seccomp_profile
                    .as_mut()
                    .unwrap()
                    .type_ = "Default".into();
            },
            "spec.template.spec.securityContext.seccompProfile.type",
            rules::VALIDATE_SECCOMP_PROFILE_FIELD,
        ),
        // validatePodSpecSecurityContext / IsValidUserID: runAsUser >= 0.
        case(
            "IsValidUserID: negative runAsUser",
            Stage::Extract,
            |job| pod(job).security_context.as_mut().unwrap().run_as_user = Some(-1),
            "spec.template.spec.securityContext.runAsUser",
            rules::IS_VALID_USER_ID,
        ),
        // ValidateTolerations: operator Exists with a value.
        case(
            "ValidateTolerations: Exists with a value",
            Stage::Extract,
            |job| {
                pod(job).tolerations = Some(vec![
                    serde_json::from_value(serde_json::json!({
                        "key": "spot", "operator": "Exists", "value": "yes"
                    }))
                    .unwrap(),
                ]);
            },
            "spec.template.spec.tolerations[0].operator",
            rules::VALIDATE_TOLERATIONS,
        ),
        // ValidateObjectMeta: namespace is a DNS-1123 label.
        case(
            "ValidateNamespaceName: dotted namespace",
            Stage::Plan,
            |job| job.metadata.namespace = Some("fruit.ns".into()),
            "metadata.namespace",
            rules::VALIDATE_NAMESPACE_NAME,
        ),
        // ValidateObjectMeta with ValidateReplicationControllerName (NameIsDNSSubdomain).
        case(
            "NameIsDNSSubdomain: upper case Job name",
            Stage::Fit,
            |job| job.metadata.name = Some("Fruits-Fit".into()),
            "metadata.name",
            rules::NAME_IS_DNS_SUBDOMAIN,
        ),
        // TestValidateJob "spec.template.metadata.labels[batch.kubernetes.io/controller-uid]:
        // ... must be '1a2b3c'": a controller-uid pod label the server did not generate.
        case(
            "TestValidateJob: controller-uid label not generated",
            Stage::Extract,
            |job| {
                spec(job)
                    .template
                    .metadata
                    .as_mut()
                    .unwrap()
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert("batch.kubernetes.io/controller-uid".into(), "4d5e6f".into());
            },
            "spec.template.metadata.labels[batch.kubernetes.io/controller-uid]",
            rules::VALIDATE_GENERATED_SELECTOR,
        ),
        // TestValidateJob "spec.selector: Invalid value: ...: `selector` not
        // auto-generated".
        case(
            "TestValidateJob: selector not auto-generated",
            Stage::Plan,
            |job| {
                spec(job).selector = Some(
                    serde_json::from_value(serde_json::json!({ "matchLabels": { "a": "b" } }))
                        .unwrap(),
                );
            },
            "spec.selector",
            rules::VALIDATE_GENERATED_SELECTOR,
        ),
    ];
    for case in cases {
        let mut job = rendered(case.stage);
        assert!(check_job(&job).is_empty(), "{}: base Job", case.upstream);
        (case.mutate)(&mut job);
        assert_refused(case.upstream, &check_job(&job), &case.field, case.rule);
    }
}

#[test]
fn defaults_the_api_server_applies_are_not_refused() {
    // SetDefaults_PodFailurePolicyOnPodConditionsPattern: an empty status becomes "True"
    // before validation (the upstream unit test "status: Required value" validates the
    // internal type without defaulting).
    let mut job = rendered(Stage::Extract);
    spec(&mut job).pod_failure_policy.as_mut().unwrap().rules[1]
        .on_pod_conditions
        .as_mut()
        .unwrap()[0]
        .status = String::new();
    assert!(check_job(&job).is_empty(), "{}", describe(&check_job(&job)));

    // Empty image pull and termination message policies are defaulted.
    let mut job = rendered(Stage::Plan);
    pod(&mut job).containers[0].image_pull_policy = None;
    pod(&mut job).containers[0].termination_message_policy = None;
    assert!(check_job(&job).is_empty(), "{}", describe(&check_job(&job)));

    // The namespace comes from the request path when the body has none.
    let mut job = rendered(Stage::Fit);
    job.metadata.namespace = None;
    assert!(check_job(&job).is_empty(), "{}", describe(&check_job(&job)));

    // 1.33 relaxes env var names (RelaxedEnvironmentVariableValidation, on by default):
    // printable ASCII other than '=' passes.
    let mut job = rendered(Stage::Extract);
    container_env_name(&mut job, "1 RELAXED:NAME");
    assert!(check_job(&job).is_empty(), "{}", describe(&check_job(&job)));
}

#[test]
fn the_operators_job_patches_pass() {
    // TestValidateJobUpdate "mutable fields": parallelism, activeDeadlineSeconds, suspend.
    let old = rendered(Stage::Extract);
    let mut new = old.clone();
    spec(&mut new).parallelism = Some(1);
    spec(&mut new).suspend = Some(true);
    spec(&mut new).active_deadline_seconds = Some(600);
    let violations = check_job_update(&old, &new);
    assert!(violations.is_empty(), "{}", describe(&violations));

    // validateCompletions: an Indexed Job may change completions in tandem with
    // parallelism (ElasticIndexedJob).
    let mut new = old.clone();
    spec(&mut new).completions = Some(5);
    spec(&mut new).parallelism = Some(5);
    let violations = check_job_update(&old, &new);
    assert!(violations.is_empty(), "{}", describe(&violations));

    // A parallelism patch on a NonIndexed Job whose stored form was never defaulted
    // (completions stays as it was).
    let old = rendered(Stage::Plan);
    let mut new = old.clone();
    spec(&mut new).parallelism = Some(2);
    let violations = check_job_update(&old, &new);
    assert!(violations.is_empty(), "{}", describe(&violations));
}

#[test]
fn job_updates_the_api_server_refuses_are_refused() {
    let cases: Vec<(&str, Stage, Mutation, &str, &str)> = vec![
        // TestValidateJobUpdate "immutable completions for non-indexed jobs".
        (
            "TestValidateJobUpdate: immutable completions for non-indexed jobs",
            Stage::Plan,
            Box::new(|job: &mut Job| spec(job).completions = Some(3)),
            "spec.completions",
            rules::VALIDATE_COMPLETIONS,
        ),
        // validateCompletions: an Indexed Job's completions change without parallelism.
        (
            "validateCompletions: can only be modified in tandem with spec.parallelism",
            Stage::Extract,
            Box::new(|job: &mut Job| spec(job).completions = Some(9)),
            "spec.completions",
            rules::VALIDATE_COMPLETIONS,
        ),
        // ValidateJobSpecUpdate: completionMode is immutable.
        (
            "ValidateJobSpecUpdate: completionMode",
            Stage::Extract,
            Box::new(|job: &mut Job| {
                spec(job).completion_mode = Some("NonIndexed".into());
                spec(job).backoff_limit_per_index = None;
                spec(job).max_failed_indexes = None;
            }),
            "spec.completionMode",
            rules::VALIDATE_IMMUTABLE_FIELD,
        ),
        // TestValidateJobUpdate "update pod failure policy".
        (
            "TestValidateJobUpdate: update pod failure policy",
            Stage::Fit,
            Box::new(|job: &mut Job| {
                let policy = spec(job).pod_failure_policy.as_mut().unwrap();
                let extra = policy.rules[1].clone();
                policy.rules.push(extra);
            }),
            "spec.podFailurePolicy",
            rules::VALIDATE_IMMUTABLE_FIELD,
        ),
        // TestValidateJobUpdate "remove pod failure policy".
        (
            "TestValidateJobUpdate: remove pod failure policy",
            Stage::Plan,
            Box::new(|job: &mut Job| spec(job).pod_failure_policy = None),
            "spec.podFailurePolicy",
            rules::VALIDATE_IMMUTABLE_FIELD,
        ),
        // TestValidateJobUpdate "update backoff limit per index".
        (
            "TestValidateJobUpdate: update backoff limit per index",
            Stage::Extract,
            Box::new(|job: &mut Job| spec(job).backoff_limit_per_index = Some(5)),
            "spec.backoffLimitPerIndex",
            rules::VALIDATE_IMMUTABLE_FIELD,
        ),
        // TestValidateJobUpdate "immutable selector".
        (
            "TestValidateJobUpdate: immutable selector",
            Stage::Extract,
            Box::new(|job: &mut Job| {
                let name = job.metadata.name.clone();
                spec(job).selector = Some(
                    serde_json::from_value(serde_json::json!({
                        "matchLabels": { "batch.kubernetes.io/job-name": name }
                    }))
                    .unwrap(),
                );
            }),
            "spec.selector",
            rules::VALIDATE_IMMUTABLE_FIELD,
        ),
        // validatePodTemplateUpdate: the template of a running Job is immutable (a new
        // image).
        (
            "validatePodTemplateUpdate: image",
            Stage::Extract,
            Box::new(|job: &mut Job| pod(job).containers[0].image = Some("fruitpipe:next".into())),
            "spec.template",
            rules::VALIDATE_POD_TEMPLATE_UPDATE,
        ),
        // TestValidateJobUpdate "add node affinity" without AllowMutableSchedulingDirectives:
        // a running (not suspended) Job may not change its node selector.
        (
            "TestValidateJobUpdate: node selector of a running Job",
            Stage::Fit,
            Box::new(|job: &mut Job| {
                pod(job).node_selector = Some(BTreeMap::from([(
                    "node.kubernetes.io/instance-type".into(),
                    "c7i.large".into(),
                )]));
            }),
            "spec.template",
            rules::VALIDATE_POD_TEMPLATE_UPDATE,
        ),
        // ValidateObjectMetaUpdate: the name is immutable.
        (
            "ValidateObjectMetaUpdate: name",
            Stage::Plan,
            Box::new(|job: &mut Job| job.metadata.name = Some("renamed-plan".into())),
            "metadata.name",
            rules::VALIDATE_IMMUTABLE_FIELD,
        ),
    ];
    for (upstream, stage, mutate, field, rule) in cases {
        let old = rendered(stage);
        let mut new = old.clone();
        mutate(&mut new);
        assert_refused(upstream, &check_job_update(&old, &new), field, rule);
    }
}

#[test]
fn a_suspended_job_that_never_started_may_change_its_scheduling_directives() {
    // TestValidateJobUpdate "add node affinity" with AllowMutableSchedulingDirectives, which
    // the Job strategy sets for a suspended Job without status.startTime.
    let mut old = rendered(Stage::Extract);
    spec(&mut old).suspend = Some(true);
    let mut new = old.clone();
    pod(&mut new).node_selector = Some(BTreeMap::from([(
        "node.kubernetes.io/instance-type".into(),
        "c7i.large".into(),
    )]));
    pod(&mut new).tolerations = Some(vec![
        serde_json::from_value(serde_json::json!({ "key": "spot", "operator": "Exists" })).unwrap(),
    ]);
    let violations = check_job_update(&old, &new);
    assert!(violations.is_empty(), "{}", describe(&violations));

    // ...but not anything else in the template.
    let mut new = old.clone();
    pod(&mut new).containers[0].image = Some("fruitpipe:next".into());
    assert_refused(
        "validatePodTemplateUpdate: image of a suspended Job",
        &check_job_update(&old, &new),
        "spec.template",
        rules::VALIDATE_POD_TEMPLATE_UPDATE,
    );
}

fn now() -> Timestamp {
    Timestamp::from_second(1_760_000_000).unwrap()
}

/// An events.k8s.io/v1 Event as kube's `Recorder` builds it for the pipeline.
fn event(note: &str) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some("fruits-360.186f6a3c1b2d4e5f".into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        action: Some("Reconcile".into()),
        reason: Some("PodsNotCreated".into()),
        note: Some(note.into()),
        type_: Some("Warning".into()),
        event_time: Some(MicroTime(now())),
        reporting_controller: Some("fruitpipe-operator".into()),
        reporting_instance: Some("fruitpipe-operator-7d9f8c6b5-x2x4z".into()),
        regarding: Some(ObjectReference {
            api_version: Some("fruitpipe.dev/v1alpha1".into()),
            kind: Some("FruitPipeline".into()),
            name: Some("fruits-360".into()),
            namespace: Some(NAMESPACE.into()),
            uid: Some(common::UID.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn events_the_recorder_builds_pass() {
    assert!(check_event(&event("Job created")).is_empty());
    let mut repeated = event("Job created");
    repeated.series = Some(EventSeries {
        count: 2,
        last_observed_time: MicroTime(now()),
    });
    assert!(check_event(&repeated).is_empty());
}

#[test]
fn event_notes_are_limited_in_bytes() {
    // TestValidateEventCreateForNewV1Events "too long message": NoteLengthLimit is 1,024
    // and Go's len() counts bytes.
    assert!(check_event(&event(&"a".repeat(1024))).is_empty());
    assert_refused(
        "TestValidateEventCreateForNewV1Events: too long message",
        &check_event(&event(&"a".repeat(1025))),
        "message",
        rules::LEGACY_VALIDATE_EVENT,
    );
    // 400 'é' are 800 bytes: accepted; 600 are 1,200 bytes: refused, though only 600
    // characters.
    assert!(check_event(&event(&"é".repeat(400))).is_empty());
    assert_refused(
        "TestValidateEventCreateForNewV1Events: too long message (multibyte)",
        &check_event(&event(&"é".repeat(600))),
        "message",
        rules::LEGACY_VALIDATE_EVENT,
    );
}

#[test]
fn events_the_api_server_refuses_are_refused() {
    type EventMutation = Box<dyn Fn(&mut Event)>;
    let cases: Vec<(&str, EventMutation, &str, &str)> = vec![
        // TestValidateEventCreateForNewV1Events "missing EventTime".
        (
            "TestValidateEventCreateForNewV1Events: missing EventTime",
            Box::new(|e: &mut Event| e.event_time = None),
            "eventTime",
            rules::VALIDATE_EVENT_CREATE,
        ),
        // TestValidateEventCreateForNewV1Events "not qualified reportingController".
        (
            "TestValidateEventCreateForNewV1Events: not qualified reportingController",
            Box::new(|e: &mut Event| e.reporting_controller = Some("my-contr@ller".into())),
            "reportingController",
            rules::LEGACY_VALIDATE_EVENT,
        ),
        // TestValidateEventCreateForNewV1Events "too long reporting instance".
        (
            "TestValidateEventCreateForNewV1Events: too long reporting instance",
            Box::new(|e: &mut Event| e.reporting_instance = Some("x".repeat(129))),
            "reportingInstance",
            rules::LEGACY_VALIDATE_EVENT,
        ),
        // legacyValidateEvent: reportingInstance required.
        (
            "legacyValidateEvent: missing reportingInstance",
            Box::new(|e: &mut Event| e.reporting_instance = None),
            "reportingInstance",
            rules::LEGACY_VALIDATE_EVENT,
        ),
        // TestValidateEventCreateForNewV1Events "missing reason".
        (
            "TestValidateEventCreateForNewV1Events: missing reason",
            Box::new(|e: &mut Event| e.reason = None),
            "reason",
            rules::LEGACY_VALIDATE_EVENT,
        ),
        // legacyValidateEvent: reason at most 128 characters.
        (
            "legacyValidateEvent: reason too long",
            Box::new(|e: &mut Event| e.reason = Some("R".repeat(129))),
            "reason",
            rules::LEGACY_VALIDATE_EVENT,
        ),
        // TestValidateEventCreateForNewV1Events "missing action".
        (
            "TestValidateEventCreateForNewV1Events: missing action",
            Box::new(|e: &mut Event| e.action = None),
            "action",
            rules::LEGACY_VALIDATE_EVENT,
        ),
        // ValidateEventCreate: type must be Normal or Warning.
        (
            "ValidateEventCreate: type Error",
            Box::new(|e: &mut Event| e.type_ = Some("Error".into())),
            "type",
            rules::VALIDATE_EVENT_CREATE,
        ),
        // legacyValidateEvent: an event about nothing namespaced, outside default and
        // kube-system (no regarding object).
        (
            "legacyValidateEvent: no regarding object in a namespace",
            Box::new(|e: &mut Event| e.regarding = None),
            "involvedObject.namespace",
            rules::LEGACY_VALIDATE_EVENT,
        ),
        // validateV1EventSeries: count at least 2.
        (
            "validateV1EventSeries: count 1",
            Box::new(|e: &mut Event| {
                e.series = Some(EventSeries {
                    count: 1,
                    last_observed_time: MicroTime(now()),
                });
            }),
            "series.count",
            rules::VALIDATE_V1_EVENT_SERIES,
        ),
        // ValidateEventCreate: deprecatedCount must be unset.
        (
            "ValidateEventCreate: deprecatedCount",
            Box::new(|e: &mut Event| e.deprecated_count = Some(3)),
            "count",
            rules::VALIDATE_EVENT_CREATE,
        ),
        // ValidateEventCreate (ValidateObjectMeta, NameIsDNSSubdomain): missing name.
        (
            "TestValidateEventCreateForNewV1Events: missing name in objectMeta",
            Box::new(|e: &mut Event| e.metadata.name = None),
            "metadata.name",
            rules::VALIDATE_OBJECT_META,
        ),
    ];
    for (upstream, mutate, field, rule) in cases {
        let mut e = event("Job created");
        mutate(&mut e);
        assert_refused(upstream, &check_event(&e), field, rule);
    }
}

fn condition(type_: &str, reason: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: reason.into(),
        message: "All shards planned".into(),
        observed_generation: Some(1),
        last_transition_time: Time(now()),
    }
}

#[test]
fn conditions_the_operator_sets_pass() {
    let conditions = [
        condition("Planned", "PlanSucceeded"),
        condition("Extracted", "ExtractSucceeded"),
        condition("fruitpipe.dev/Custom", "A_b,c:d"),
    ];
    assert!(check_conditions(&conditions).is_empty());
}

#[test]
fn conditions_the_api_server_refuses_are_refused() {
    // TestValidateConditions "bunch-of-invalid-fields" (reason "invalid;val"); here a
    // reason with a space.
    assert_refused(
        "TestValidateConditions: bunch-of-invalid-fields (reason)",
        &check_conditions(&[condition("Planned", "Plan Succeeded")]),
        "status.conditions[0].reason",
        rules::VALIDATE_CONDITION,
    );
    // TestValidateConditions "duplicates".
    assert_refused(
        "TestValidateConditions: duplicates",
        &check_conditions(&[
            condition("First", "Ok"),
            condition("Second", "Ok"),
            condition("First", "Ok"),
        ]),
        "status.conditions[2].type",
        rules::VALIDATE_CONDITIONS,
    );
    // TestValidateConditions "reason-does-not-end-in-delimiter".
    assert_refused(
        "TestValidateConditions: reason-does-not-end-in-delimiter",
        &check_conditions(&[condition("First", "valid,val:")]),
        "status.conditions[0].reason",
        rules::VALIDATE_CONDITION,
    );
    // TestValidateConditions "bunch-of-invalid-fields": type ":invalid", status
    // "unknown", observedGeneration -1, zero lastTransitionTime.
    let mut bad = condition(":invalid", "Ok");
    bad.status = "unknown".into();
    bad.observed_generation = Some(-1);
    bad.last_transition_time = Time(Timestamp::from_second(-62_135_596_800).unwrap());
    let violations = check_conditions(&[bad]);
    for field in [
        "status.conditions[0].type",
        "status.conditions[0].status",
        "status.conditions[0].observedGeneration",
        "status.conditions[0].lastTransitionTime",
    ] {
        assert_refused(
            "TestValidateConditions: bunch-of-invalid-fields",
            &violations,
            field,
            rules::VALIDATE_CONDITION,
        );
    }
    // ValidateCondition: reason at most 1,024 bytes, message at most 32 KiB.
    let mut long = condition("Planned", &"R".repeat(1025));
    long.message = "m".repeat(32 * 1024 + 1);
    let violations = check_conditions(&[long]);
    assert_refused(
        "ValidateCondition: reason too long",
        &violations,
        "status.conditions[0].reason",
        rules::VALIDATE_CONDITION,
    );
    assert_refused(
        "ValidateCondition: message too long",
        &violations,
        "status.conditions[0].message",
        rules::VALIDATE_CONDITION,
    );
}
