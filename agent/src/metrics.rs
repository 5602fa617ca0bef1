//! What `/metrics` shows: runs by playbook and outcome, step durations, plugin failures and
//! lease state, in the Prometheus text format.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The agent's metrics. Cheap to clone; every clone records into the same registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    runs: Family<Labels, Counter>,
    steps: HistogramFamily,
    plugin_failures: Family<Labels, Counter>,
    leases: Family<Labels, Gauge>,
    lease_losses: Family<Labels, Counter>,
}

fn step_histogram() -> Histogram {
    // 1 ms to about 4.5 minutes.
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every qmedic metric in it.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("qmedic");
        let runs = Family::<Labels, Counter>::default();
        registry.register(
            "runs",
            "Playbook runs by playbook and outcome",
            runs.clone(),
        );
        let steps = HistogramFamily::new_with_constructor(step_histogram);
        registry.register(
            "step_duration_seconds",
            "How long playbook steps took, by playbook, step and what they used",
            steps.clone(),
        );
        let plugin_failures = Family::<Labels, Counter>::default();
        registry.register(
            "plugin_failures",
            "Plugin calls that failed, by plugin and kind of failure",
            plugin_failures.clone(),
        );
        let leases = Family::<Labels, Gauge>::default();
        registry.register(
            "lease_held",
            "1 while this agent holds the lease on a lock key",
            leases.clone(),
        );
        let lease_losses = Family::<Labels, Counter>::default();
        registry.register(
            "lease_lost",
            "Runs that lost their lease before a change, by lock key",
            lease_losses.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                runs,
                steps,
                plugin_failures,
                leases,
                lease_losses,
            }),
        }
    }

    /// Count a run.
    pub fn run(&self, playbook: &str, outcome: &str) {
        self.inner
            .runs
            .get_or_create(&vec![
                ("playbook".into(), playbook.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
    }

    /// Time a step.
    pub fn step(&self, playbook: &str, step: &str, uses: &str, seconds: f64) {
        self.inner
            .steps
            .get_or_create(&vec![
                ("playbook".into(), playbook.into()),
                ("step".into(), step.into()),
                ("uses".into(), uses.into()),
            ])
            .observe(seconds);
    }

    /// Count a failed plugin call.
    pub fn plugin_failure(&self, plugin: &str, kind: &str) {
        self.inner
            .plugin_failures
            .get_or_create(&vec![
                ("plugin".into(), plugin.into()),
                ("kind".into(), kind.into()),
            ])
            .inc();
    }

    /// Whether this agent holds the lease on `key`.
    pub fn lease_held(&self, key: &str, held: bool) {
        self.inner
            .leases
            .get_or_create(&vec![("key".into(), key.into())])
            .set(i64::from(held));
    }

    /// Count a run stopped because its lease was lost.
    pub fn lease_lost(&self, key: &str) {
        self.inner
            .lease_losses
            .get_or_create(&vec![("key".into(), key.into())])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.inner.registry).is_err() {
            return "# qmedic: metrics could not be encoded\n".into();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_counted_by_playbook_and_outcome() {
        let m = Metrics::new();
        m.run("orders", "succeeded");
        m.run("orders", "succeeded");
        let text = m.encode();
        assert!(
            text.contains("qmedic_runs_total{playbook=\"orders\",outcome=\"succeeded\"} 2"),
            "{text}"
        );
    }
}
