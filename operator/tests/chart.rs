//! The Helm chart, rendered by the real `helm` (scripts/setup.sh installs it into
//! .tools/bin): every manifest must parse into its Kubernetes type with no field lost, and
//! the ClusterRole must grant exactly what the operator uses.

use std::path::{Path, PathBuf};
use std::process::Command;

use fruitpipe_operator::rbac::RULES;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Probe, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn helm() -> PathBuf {
    if let Some(path) = std::env::var_os("HELM") {
        return PathBuf::from(path);
    }
    let local = repo().join(".tools/bin/helm");
    if local.is_file() {
        return local;
    }
    let found = std::env::var_os("PATH").map(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("helm"))
            .find(|path| path.is_file())
    });
    found.flatten().expect(
        "helm is not installed: run scripts/setup.sh (it puts helm in .tools/bin) or set HELM",
    )
}

fn template(extra: &[&str]) -> std::process::Output {
    Command::new(helm())
        .args(["template", "fp", "--namespace", "fruitpipe"])
        .arg(repo().join("charts/fruitpipe"))
        .args(extra)
        .output()
        .expect("cannot run helm")
}

fn render(extra: &[&str]) -> Vec<Value> {
    let output = template(extra);
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    text.split("\n---")
        .map(|doc| {
            doc.lines()
                .filter(|line| !line.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| {
            serde_saphyr::from_str::<Value>(&doc).unwrap_or_else(|err| panic!("{err}\n{doc}"))
        })
        .collect()
}

/// Parses a manifest into its type and back: a misspelt or misplaced field is dropped on
/// the way and shows up as a difference.
fn round_trip<T: DeserializeOwned + Serialize>(manifest: &Value) -> T {
    let typed: T =
        serde_json::from_value(manifest.clone()).unwrap_or_else(|err| panic!("{err}: {manifest}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, manifest,
        "fields were lost parsing {}",
        manifest["metadata"]["name"]
    );
    typed
}

#[test]
fn every_manifest_is_a_valid_kubernetes_object() {
    let manifests = render(&["--set", "metrics.serviceMonitor.enabled=true"]);
    let mut kinds: Vec<String> = Vec::new();
    for manifest in &manifests {
        let kind = manifest["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "Deployment" => {
                round_trip::<Deployment>(manifest);
            }
            "ServiceAccount" => {
                round_trip::<ServiceAccount>(manifest);
            }
            "ClusterRole" => {
                round_trip::<ClusterRole>(manifest);
            }
            "ClusterRoleBinding" => {
                round_trip::<ClusterRoleBinding>(manifest);
            }
            "Service" => {
                round_trip::<Service>(manifest);
            }
            "ServiceMonitor" => {
                assert_eq!(manifest["apiVersion"], "monitoring.coreos.com/v1");
                assert_eq!(manifest["spec"]["endpoints"][0]["path"], "/metrics");
            }
            other => panic!("unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "ServiceAccount",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
}

#[test]
fn the_cluster_role_grants_exactly_what_the_operator_uses() {
    let manifests = render(&[]);
    let role = manifests
        .iter()
        .find(|manifest| manifest["kind"] == "ClusterRole")
        .unwrap();
    let role: ClusterRole = round_trip(role);
    let mut granted: Vec<(String, String, Vec<String>)> = role
        .rules
        .unwrap()
        .into_iter()
        .flat_map(|rule| {
            let groups = rule.api_groups.unwrap_or_default();
            let resources = rule.resources.unwrap_or_default();
            let verbs = rule.verbs;
            groups.into_iter().flat_map(move |group| {
                let verbs = verbs.clone();
                resources
                    .clone()
                    .into_iter()
                    .map(move |resource| (group.clone(), resource, verbs.clone()))
            })
        })
        .collect();
    granted.sort();
    let mut needed: Vec<(String, String, Vec<String>)> = RULES
        .iter()
        .map(|rule| {
            (
                rule.api_group.into(),
                rule.resource.into(),
                rule.verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect();
    needed.sort();
    assert_eq!(granted, needed);
}

fn probe_path(probe: &Option<Probe>) -> Option<String> {
    probe
        .as_ref()
        .and_then(|probe| probe.http_get.as_ref())
        .and_then(|get| get.path.clone())
}

fn operator_deployment(manifests: &[Value]) -> Deployment {
    round_trip(
        manifests
            .iter()
            .find(|manifest| {
                manifest["kind"] == "Deployment"
                    && manifest["metadata"]["name"] == "fp-fruitpipe-operator"
            })
            .expect("the chart renders the operator Deployment"),
    )
}

#[test]
fn the_operator_deployment_is_probed_and_locked_down() {
    let manifests = render(&[
        "--set",
        "image.tag=1.2.3",
        "--set",
        "runner.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/r",
    ]);
    let spec = operator_deployment(&manifests).spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let pod = spec.template.spec.unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/fruitpipe/fruitpipe:1.2.3")
    );
    assert_eq!(
        probe_path(&container.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(
        (
            security.read_only_root_filesystem,
            security.allow_privilege_escalation
        ),
        (Some(true), Some(false))
    );
    assert_eq!(
        pod.security_context.unwrap().seccomp_profile.unwrap().type_,
        "RuntimeDefault"
    );
    let env: Vec<(String, Option<String>)> = container
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|var| (var.name, var.value))
        .collect();
    assert!(env.contains(&(
        "FRUITPIPE_RUNNER_IMAGE".into(),
        Some("ghcr.io/fruitpipe/fruitpipe:1.2.3".into())
    )));
    let runner_account = manifests
        .iter()
        .find(|manifest| {
            manifest["kind"] == "ServiceAccount"
                && manifest["metadata"]["name"] == "fp-fruitpipe-runner"
        })
        .unwrap();
    assert_eq!(
        runner_account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::1:role/r"
    );
}

#[test]
fn s3_defaults_reach_the_operator_only_when_set() {
    let operator_env = |extra: &[&str]| -> Vec<(String, String)> {
        let deployment = operator_deployment(&render(extra));
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .filter(|var| var.name.starts_with("FRUITPIPE_S3_"))
            .map(|var| (var.name, var.value.unwrap_or_default()))
            .collect()
    };
    assert_eq!(operator_env(&[]), []);
    let set = operator_env(&[
        "--set",
        "runner.s3.endpoint=http://minio.storage.svc:9000",
        "--set",
        "runner.s3.pathStyle=true",
        "--set",
        "runner.s3.credentialsSecret=minio-credentials",
    ]);
    assert_eq!(
        set,
        [
            ("FRUITPIPE_S3_ENDPOINT", "http://minio.storage.svc:9000"),
            ("FRUITPIPE_S3_PATH_STYLE", "true"),
            ("FRUITPIPE_S3_CREDENTIALS_SECRET", "minio-credentials"),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()))
    );
}

#[test]
fn wrong_values_fail_at_install_time() {
    for bad in [
        "operator.logFormat=xml",
        "runner.s3.endpoint=minio:9000",
        "runner.s3.credentialsSecret=Not_A_Name",
        "image.pullPolicy=Sometimes",
        "metrics.port=0",
        "nonsense=1",
        "identify.from=/local/folder",
        "identify.service.type=Ingress",
    ] {
        let output = template(&["--set", bad]);
        assert!(!output.status.success(), "helm accepted --set {bad}");
        assert!(
            String::from_utf8_lossy(&output.stderr)
                .contains("values don't meet the specifications"),
            "{bad}"
        );
    }
}

#[test]
fn the_chart_works_as_a_subchart_with_global_values() {
    // A parent chart passes `global` to every subchart; the schema must allow it.
    let output = template(&["--set", "global.imageRegistry=registry.example"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_chart_carries_the_same_crd_as_crds() {
    let chart =
        std::fs::read_to_string(repo().join("charts/fruitpipe/crds/fruitpipeline.yaml")).unwrap();
    let top = std::fs::read_to_string(repo().join("crds/fruitpipeline.yaml")).unwrap();
    assert!(
        chart == top,
        "charts/fruitpipe/crds/fruitpipeline.yaml differs from crds/: run scripts/sync-crd.sh"
    );
}

#[test]
fn the_identify_service_is_off_by_default_and_locked_down_when_on() {
    let off = render(&[]);
    assert!(
        !off.iter()
            .any(|manifest| manifest["metadata"]["name"] == "fp-fruitpipe-identify"),
        "identify is opt-in"
    );

    let manifests = render(&[
        "--set",
        "identify.enabled=true",
        "--set",
        "identify.from=s3://fruits/out",
        "--set",
        "runner.serviceAccount.namespace=pipelines",
        "--set",
        "runner.s3.endpoint=http://minio.storage.svc:9000",
        "--set",
        "runner.s3.credentialsSecret=minio-credentials",
        "--set",
        "identify.extraArgs={--max-upload,5000000}",
    ]);
    let named = |kind: &str| {
        manifests
            .iter()
            .find(|manifest| {
                manifest["kind"] == kind && manifest["metadata"]["name"] == "fp-fruitpipe-identify"
            })
            .unwrap_or_else(|| panic!("no identify {kind}"))
    };
    let deployment: Deployment = round_trip(named("Deployment"));
    let service: Service = round_trip(named("Service"));
    // Where the pipelines run, as their account, so that S3 works the same way.
    assert_eq!(deployment.metadata.namespace.as_deref(), Some("pipelines"));
    assert_eq!(service.metadata.namespace.as_deref(), Some("pipelines"));
    let spec = deployment.spec.unwrap();
    let selector = spec.selector.match_labels.unwrap();
    assert_eq!(selector["app.kubernetes.io/component"], "identify");
    assert_eq!(
        service.spec.unwrap().selector.unwrap(),
        selector,
        "the Service selects the identify pods, not the operator"
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("fp-fruitpipe-runner")
    );
    let container = &pod.containers[0];
    assert_eq!(
        container.args.as_deref().unwrap(),
        ["serve", "--max-upload", "5000000"]
    );
    assert_eq!(
        probe_path(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        probe_path(&container.liveness_probe).as_deref(),
        Some("/healthz")
    );
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(
        (
            security.read_only_root_filesystem,
            security.allow_privilege_escalation,
            security.run_as_non_root
        ),
        (Some(true), Some(false), Some(true))
    );
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    assert_eq!(
        pod.security_context.unwrap().seccomp_profile.unwrap().type_,
        "RuntimeDefault"
    );
    let env = container.env.clone().unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|var| var.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    assert_eq!(
        value("FRUITPIPE_FROM").value.as_deref(),
        Some("s3://fruits/out")
    );
    assert_eq!(
        value("AWS_ENDPOINT_URL").value.as_deref(),
        Some("http://minio.storage.svc:9000")
    );
    let secret = value("AWS_SECRET_ACCESS_KEY").value_from.unwrap();
    assert_eq!(secret.secret_key_ref.unwrap().name, "minio-credentials");

    let missing = template(&["--set", "identify.enabled=true"]);
    assert!(!missing.status.success(), "identify without a source");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("identify/from"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}
