//! The runbook engine alone: a 10-step playbook of built-ins (stats and list through the
//! in-memory adapter, conditions, `${{ }}` values, log, sleep 0s), from a scheduled tick to the
//! run recorded in a SQLite store, next to a no-op plugin call measured in the same run.
//!
//! Run with `cargo bench --profile dev -p qmedic-tests --bench engine`. After criterion's report
//! it prints runs/s and latency percentiles with their ratio to the plugin call.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use qmedic::playbook::{Catalog, Outcome};
use qmedic::{Executor, Metrics, Playbook, RunRequest, Runtime};
use qmedic_tests::{config, percentiles, plugin_entry};

const PLAYBOOK: &str = r#"
name: engine-bench
on:
  schedule: "* * * * * *"
params:
  queue: { type: string, default: bench }
  threshold: { type: int, default: 1000 }
steps:
  - id: depth
    uses: stats
    with: { connection: mem, queue: "${{ params.queue }}" }
  - id: queues
    uses: list
    with: { connection: mem, pattern: "b*" }
  - if: steps.depth.depth >= 0
    uses: log
    with: { message: "depth ${{ steps.depth.depth }}" }
  - uses: sleep
    with: { duration: 0s }
  - id: again
    uses: stats
    with: { connection: mem, queue: bench }
  - uses: log
    with: { message: "${{ steps.queues.len() }} queues" }
  - if: steps.again.depth > params.threshold
    uses: log
    with: { message: too deep }
  - uses: sleep
    with: { duration: 0s }
  - uses: log
    with: { message: "in flight ${{ steps.again.in_flight }}" }
  - uses: log
    with: { message: done }
"#;

struct Bench {
    tokio: tokio::runtime::Runtime,
    runtime: Runtime,
    executor: Executor,
    playbook: Arc<Playbook>,
    tick: AtomicI64,
    _dir: tempfile::TempDir,
}

fn setup() -> Bench {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&format!(
        "connections:\n  mem: {{ kind: memory }}\nplugins:\n{}{}{}",
        plugin_entry("memory-adapter", ""),
        plugin_entry("broker-probe", "connections: [mem]"),
        plugin_entry("noop", ""),
    ));
    let runtime = Runtime::new(&cfg).expect("runtime");
    let playbook = qmedic::playbook::parse(
        PLAYBOOK,
        std::path::Path::new("engine-bench.yaml"),
        &Catalog::new(&runtime, &cfg),
    )
    .expect("valid playbook");
    let db = dir.path().join("runs.db");
    let executor = tokio.block_on(async {
        let seed =
            r#"{"steps":[{"op":"publish","connection":"mem","queue":"bench","bodies":["x"]}]}"#;
        runtime
            .call_action("broker-probe", seed)
            .await
            .outcome
            .expect("seed the queue");
        let store = qmedic::store::open(db.to_str().expect("utf-8"))
            .await
            .expect("store");
        Executor::new(runtime.clone(), store, "bench".into(), Metrics::new())
    });
    Bench {
        tokio,
        runtime,
        executor,
        playbook: Arc::new(playbook),
        tick: AtomicI64::new(1_000_000),
        _dir: dir,
    }
}

impl Bench {
    /// One scheduled run: claim a new tick, run the steps, record everything.
    async fn run(&self) {
        let req = RunRequest {
            trigger: "schedule".into(),
            who: "schedule".into(),
            tick_at: Some(self.tick.fetch_add(1_000, Ordering::Relaxed)),
            ..RunRequest::default()
        };
        let s = self.executor.run(&self.playbook, req).await.expect("run");
        assert_eq!(s.outcome, Outcome::Succeeded, "{s:?}");
    }

    /// The store writes one run makes (run, audit ×2, ten steps, finish), without the steps.
    async fn writes(&self) {
        use qmedic::store::{AuditEntry, Finish, NewRun, StepRecord};
        let store = self.executor.store();
        let id = store
            .start_run(&NewRun {
                playbook: "writes".into(),
                trigger: "schedule".into(),
                who: "schedule".into(),
                agent: "bench".into(),
                tick_at: Some(self.tick.fetch_add(1_000, Ordering::Relaxed)),
                params: serde_json::json!({}),
                dry_run: false,
                target: "writes".into(),
                started_at: 0,
            })
            .await
            .expect("start")
            .expect("claimed");
        let audit = AuditEntry {
            at: 0,
            agent: "bench".into(),
            run_id: Some(id),
            event: "run-started".into(),
            detail: serde_json::json!({}),
        };
        store.audit(&audit).await.expect("audit");
        for idx in 0..10 {
            let step = StepRecord {
                idx,
                step: "s".into(),
                uses: "log".into(),
                input: serde_json::json!({ "message": "x" }),
                output: serde_json::json!({ "message": "x" }),
                outcome: "succeeded".into(),
                error: None,
                log: Vec::new(),
                started_at: 0,
                duration_ms: 0,
            };
            store.record_step(id, &step).await.expect("step");
        }
        let finish = Finish {
            outcome: "succeeded".into(),
            error: None,
            changes: serde_json::json!([]),
            lease: None,
            finished_at: 0,
        };
        store.finish_run(id, &finish).await.expect("finish");
        store.audit(&audit).await.expect("audit");
    }

    async fn noop(&self) {
        self.runtime
            .call_action("noop", "{}")
            .await
            .outcome
            .expect("noop");
    }
}

fn engine(c: &mut Criterion) {
    let b = setup();
    let mut group = c.benchmark_group("engine");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    group.bench_function("noop_plugin_call", |bench| {
        bench.iter_custom(|iters| {
            b.tokio.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    b.noop().await;
                }
                started.elapsed()
            })
        })
    });
    group.bench_function("ten_step_playbook_run", |bench| {
        bench.iter_custom(|iters| {
            b.tokio.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    b.run().await;
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

/// Latency of one run at a time, and throughput with 8 runs in flight.
fn table() {
    let b = Arc::new(setup());
    let (runs, noops, writes) = b.tokio.block_on(async {
        let mut noops = Vec::new();
        for _ in 0..3_000 {
            let started = Instant::now();
            b.noop().await;
            noops.push(started.elapsed().as_secs_f64() * 1e6);
        }
        let mut runs = Vec::new();
        for _ in 0..1_000 {
            let started = Instant::now();
            b.run().await;
            runs.push(started.elapsed().as_secs_f64() * 1e6);
        }
        let mut writes = Vec::new();
        for _ in 0..1_000 {
            let started = Instant::now();
            b.writes().await;
            writes.push(started.elapsed().as_secs_f64() * 1e6);
        }
        (runs, noops, writes)
    });
    let sequential = runs.len() as f64 / (runs.iter().sum::<f64>() / 1e6);
    let total = 2_000;
    let started = Instant::now();
    b.tokio.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    for _ in 0..total / 8 {
                        b.run().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("runner");
        }
    });
    let concurrent = f64::from(total) / started.elapsed().as_secs_f64();
    let (noop_median, noop_p99) = percentiles(noops);
    let (run_median, run_p99) = percentiles(runs);
    println!("\nrunbook engine (same run; SQLite store, WAL):");
    println!("{:<44} {:>11} {:>11} {:>10}", "", "median", "p99", "÷ noop");
    println!(
        "{:<44} {:>9.1}µs {:>9.1}µs {:>10}",
        "no-op plugin call (baseline)", noop_median, noop_p99, "1"
    );
    println!(
        "{:<44} {:>9.1}µs {:>9.1}µs {:>9.1}x",
        "10-step playbook, tick to recorded run",
        run_median,
        run_p99,
        run_median / noop_median
    );
    let (writes_median, writes_p99) = percentiles(writes);
    println!(
        "{:<44} {:>9.1}µs {:>9.1}µs {:>9.1}x",
        "  of which: its 14 store writes alone",
        writes_median,
        writes_p99,
        writes_median / noop_median
    );
    println!("runs/s one at a time: {sequential:.0}; with 8 in flight: {concurrent:.0}");
}

criterion_group!(benches, engine);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    table();
}
