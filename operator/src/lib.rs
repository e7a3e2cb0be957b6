//! fruitpipe's control plane: the `FruitPipeline` resource and the controller that runs it
//! as Kubernetes Jobs (plan, Indexed extract, fit). See DESIGN.md.

pub mod api;
pub mod conformance;
pub mod controller;
pub mod jobs;
pub mod metrics;
pub mod rbac;
pub mod render;
pub mod server;
pub mod status;

use kube::CustomResourceExt;

/// The CRD as YAML, exactly as `crds/fruitpipeline.yaml` holds it.
pub fn crd_yaml() -> String {
    serde_saphyr::to_string(&api::FruitPipeline::crd()).expect("the CRD serialises to YAML")
}
