//! Prometheus metrics: reconciles, reconcile errors, and pipelines by phase.

use std::sync::Mutex;

use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::{FruitPipeline, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Counter,
    pipelines: Family<PhaseLabel, Gauge>,
    store: Mutex<Option<Store<FruitPipeline>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("fruitpipe_operator");
        let reconciles = Counter::default();
        let errors = Counter::default();
        let pipelines = Family::<PhaseLabel, Gauge>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and were retried",
            errors.clone(),
        );
        registry.register("pipelines", "FruitPipelines by phase", pipelines.clone());
        Metrics {
            registry,
            reconciles,
            errors,
            pipelines,
            store: Mutex::new(None),
        }
    }
}

const PHASES: [Phase; 7] = [
    Phase::Pending,
    Phase::Planning,
    Phase::Extracting,
    Phase::Fitting,
    Phase::Succeeded,
    Phase::Failed,
    Phase::Suspended,
];

impl Metrics {
    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    pub fn failed(&self) {
        self.errors.inc();
    }

    /// Pipelines by phase are counted from the controller's cache at each scrape.
    pub fn watch_phases(&self, store: Store<FruitPipeline>) {
        *self.store.lock().expect("metrics lock") = Some(store);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some(store) = self.store.lock().expect("metrics lock").as_ref() {
            let pipelines = store.state();
            for phase in PHASES {
                let count = pipelines
                    .iter()
                    .filter(|pipeline| {
                        pipeline
                            .status
                            .as_ref()
                            .map(|status| status.phase)
                            .unwrap_or_default()
                            == phase
                    })
                    .count();
                self.pipelines
                    .get_or_create(&PhaseLabel {
                        phase: phase.to_string(),
                    })
                    .set(count as i64);
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_in_prometheus_text_format() {
        let metrics = Metrics::default();
        metrics.reconciled();
        metrics.reconciled();
        metrics.failed();
        let text = metrics.render();
        assert!(
            text.contains("fruitpipe_operator_reconciles_total 2"),
            "{text}"
        );
        assert!(
            text.contains("fruitpipe_operator_reconcile_errors_total 1"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }

    fn pipeline_in(name: &str, phase: Option<Phase>) -> FruitPipeline {
        let mut pipeline: FruitPipeline = serde_json::from_value(serde_json::json!({
            "apiVersion": "fruitpipe.dev/v1alpha1",
            "kind": "FruitPipeline",
            "metadata": { "name": name, "namespace": "fruit" },
            "spec": {
                "input": "s3://fruit/in",
                "output": { "uri": "s3://fruit/out" },
                "model": { "uri": "s3://fruit/model.onnx" }
            }
        }))
        .unwrap();
        if let Some(phase) = phase {
            pipeline.status = Some(crate::api::FruitPipelineStatus {
                phase,
                ..Default::default()
            });
        }
        pipeline
    }

    #[test]
    fn counts_pipelines_by_phase_from_the_cache() {
        let (store, mut writer) = kube::runtime::reflector::store::<FruitPipeline>();
        for pipeline in [
            pipeline_in("new", None),
            pipeline_in("a", Some(Phase::Extracting)),
            pipeline_in("b", Some(Phase::Extracting)),
            pipeline_in("c", Some(Phase::Failed)),
        ] {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(pipeline));
        }
        let metrics = Metrics::default();
        metrics.watch_phases(store);
        let text = metrics.render();
        for line in [
            r#"fruitpipe_operator_pipelines{phase="Pending"} 1"#,
            r#"fruitpipe_operator_pipelines{phase="Extracting"} 2"#,
            r#"fruitpipe_operator_pipelines{phase="Failed"} 1"#,
            r#"fruitpipe_operator_pipelines{phase="Succeeded"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no '{line}' in:\n{text}");
        }
    }
}
