//! Helpers for qmedic's integration tests: where the fixture plugins are, and agent configs
//! that load them pinned by their real digests.

use std::path::{Path, PathBuf};

pub mod agent;
pub mod kafka;
pub mod rabbit;

use std::fmt::Debug;

use qmedic::{CallError, Config, Runtime};
use serde_json::Value;

/// The `.wasm` of a fixture plugin built from `tests/plugins/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("QMEDIC_FIXTURES"))
        .join(name)
        .join(format!("{name}.wasm"))
}

/// Hex sha256 of a fixture's `.wasm`.
pub fn fixture_sha256(name: &str) -> String {
    let wasm =
        std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("fixture {name} is not built: {e}"));
    qmedic::sha256_hex(&wasm)
}

/// A `plugins:` entry loading fixture `name`, pinned, with extra YAML lines (grants, limits)
/// indented under it.
pub fn plugin_entry(name: &str, extra: &str) -> String {
    let mut entry = format!(
        "  {name}:\n    path: {}\n    sha256: {}\n",
        fixture(name).display(),
        fixture_sha256(name)
    );
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        entry += &format!("    {line}\n");
    }
    entry
}

/// Parse a config written by a test, caching compiled plugins under the build's temp folder.
pub fn config(yaml: &str) -> Config {
    let cache = Path::new(env!("QMEDIC_FIXTURES")).with_file_name("plugin-cache");
    let cache_line = format!("runtime:\n  cache_dir: {}\n", cache.display());
    let yaml = if yaml.contains("runtime:\n") {
        yaml.replacen("runtime:\n", &cache_line, 1)
    } else {
        format!("{cache_line}{yaml}")
    };
    Config::parse(&yaml, Path::new("test.yaml"))
        .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{yaml}"))
}

/// A runtime for a config written by a test.
pub fn runtime(yaml: &str) -> Runtime {
    Runtime::new(&config(yaml)).unwrap_or_else(|e| panic!("runtime does not start: {e}"))
}

/// The message of the `kind` error (`denied`, `invalid`, `not-found`, ...) that a plugin
/// returned on purpose; panics on success or on any other outcome.
pub fn failure<T: Debug>(kind: &str, outcome: Result<T, CallError>) -> String {
    if let Err(CallError::Plugin { error, .. }) = &outcome
        && error.kind() == kind
    {
        return error.message().to_string();
    }
    panic!("expected a `{kind}` error, got {outcome:?}")
}

/// Run an action with JSON parameters and parse its JSON report.
pub async fn call(rt: &Runtime, plugin: &str, params: Value) -> Result<Value, CallError> {
    let report = rt.call_action(plugin, &params.to_string()).await.outcome?;
    Ok(serde_json::from_str(&report).expect("the report is JSON"))
}

/// A manual run request with text params, as `qmedic run --param k=v` makes one.
pub fn run_request(params: &[(&str, &str)], dry_run: bool) -> qmedic::RunRequest {
    qmedic::RunRequest {
        trigger: "manual".into(),
        who: "test".into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
        dry_run,
        ..qmedic::RunRequest::default()
    }
}

/// An executor for an agent with `connections` (a `connections:` block) and a SQLite store in
/// `dir`, and the shipped `playbooks/<name>.yaml` loaded and validated against that agent.
pub async fn shipped_playbook(
    connections: &str,
    name: &str,
    dir: &Path,
) -> (qmedic::Executor, qmedic::playbook::Playbook) {
    let cfg = config(connections);
    let runtime = Runtime::new(&cfg).expect("runtime");
    let catalog = qmedic::playbook::Catalog::new(&runtime, &cfg);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../playbooks/{name}.yaml"));
    let playbook = qmedic::playbook::load(&file, &catalog)
        .unwrap_or_else(|e| panic!("the shipped playbook {name} is invalid: {e}"));
    let store = qmedic::store::open(dir.join("runs.db").to_str().expect("utf-8"))
        .await
        .expect("store");
    let executor = qmedic::Executor::new(runtime, store, "test".into(), qmedic::Metrics::new());
    (executor, playbook)
}

/// Run `reprocess-dlq` with `params` in an agent for `connections` (a `connections:` block) whose
/// calls may take 10 minutes; assert it moved `moved` messages and return how long it took. For
/// the throughput benchmarks.
pub async fn timed_redrive(connections: &str, params: Value, moved: usize) -> std::time::Duration {
    let rt = runtime(&format!(
        "runtime:\n  limits:\n    timeout: 10m\n{connections}"
    ));
    let started = std::time::Instant::now();
    let report = rt
        .call_action("reprocess-dlq", &params.to_string())
        .await
        .outcome
        .expect("redrive");
    let elapsed = started.elapsed();
    assert!(report.contains(&format!("\"moved\":{moved}")), "{report}");
    elapsed
}

/// Median and 99th percentile of `samples`, for the benchmarks' tables.
pub fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}
