//! The cost of the plugin boundary, next to a plain native function call measured in the same
//! run: a no-op action call (instantiate from `InstancePre`, run, drop), a host-call round trip,
//! and a `broker.stats` routed through an adapter plugin.
//!
//! Run with `cargo bench -p qmedic-tests --bench plugin_boundary`. After criterion's report it
//! prints a table of medians and 99th percentiles with ratios to the native call.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use qmedic::Runtime;
use qmedic_tests::{percentiles, plugin_entry, runtime};

fn agent() -> Runtime {
    runtime(&format!(
        "connections:\n  mem: {{ kind: memory }}\nplugins:\n{}{}{}{}",
        plugin_entry("noop", ""),
        plugin_entry("host-calls", ""),
        plugin_entry("memory-adapter", ""),
        plugin_entry("broker-probe", "connections: [mem]"),
    ))
}

const ROUTED: &str = r#"{"steps":[{"op":"stats","connection":"mem","queue":"bench"}]}"#;

#[inline(never)]
fn native(a: u64, b: u64) -> u64 {
    a.wrapping_mul(31).wrapping_add(b)
}

async fn call(rt: &Runtime, plugin: &str, params: &str) {
    if let Err(e) = rt.call_action(plugin, params).await.outcome {
        panic!("{plugin}: {e}");
    }
}

/// Time of `n` host calls made inside one plugin call, less the same call making none.
async fn host_calls(rt: &Runtime, n: u64) -> Duration {
    let started = Instant::now();
    call(rt, "host-calls", &n.to_string()).await;
    let with = started.elapsed();
    let started = Instant::now();
    call(rt, "host-calls", "0").await;
    with.saturating_sub(started.elapsed())
}

fn boundary(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let rt = agent();
    tokio.block_on(async {
        call(
            &rt,
            "broker-probe",
            r#"{"steps":[{"op":"publish","connection":"mem","queue":"bench","bodies":["x"]}]}"#,
        )
        .await;
    });

    let mut group = c.benchmark_group("boundary");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("native_fn_call", |b| {
        b.iter(|| native(black_box(7), black_box(11)))
    });
    group.bench_function("noop_action_call", |b| {
        b.iter_custom(|iters| {
            tokio.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    call(&rt, "noop", "{}").await;
                }
                started.elapsed()
            })
        })
    });
    group.bench_function("host_call_round_trip", |b| {
        b.iter_custom(|iters| tokio.block_on(host_calls(&rt, iters)))
    });
    group.bench_function("routed_broker_stats_call", |b| {
        b.iter_custom(|iters| {
            tokio.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    call(&rt, "broker-probe", ROUTED).await;
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

/// Per-call medians and p99s. Calls too short to time one by one are timed in batches and
/// divided, so the figures are per call in every row.
fn table() {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let rt = agent();
    const BATCH: u32 = 1_000;
    let native_samples: Vec<f64> = (0..5_000)
        .map(|_| {
            let started = Instant::now();
            for i in 0..BATCH {
                black_box(native(black_box(u64::from(i)), 11));
            }
            started.elapsed().as_nanos() as f64 / f64::from(BATCH)
        })
        .collect();
    let (noop, host, routed) = tokio.block_on(async {
        call(
            &rt,
            "broker-probe",
            r#"{"steps":[{"op":"publish","connection":"mem","queue":"bench","bodies":["x"]}]}"#,
        )
        .await;
        let mut noop = Vec::new();
        let mut routed = Vec::new();
        for _ in 0..10_000 {
            let started = Instant::now();
            call(&rt, "noop", "{}").await;
            noop.push(started.elapsed().as_nanos() as f64);
        }
        for _ in 0..2_000 {
            let started = Instant::now();
            call(&rt, "broker-probe", ROUTED).await;
            routed.push(started.elapsed().as_nanos() as f64);
        }
        let mut host = Vec::new();
        for _ in 0..2_000 {
            host.push(host_calls(&rt, u64::from(BATCH)).await.as_nanos() as f64 / f64::from(BATCH));
        }
        (noop, host, routed)
    });
    let (native_median, native_p99) = percentiles(native_samples);
    println!("\nplugin boundary, per call (same run):");
    println!(
        "{:<34} {:>12} {:>12} {:>16}",
        "", "median", "p99", "median / native"
    );
    println!(
        "{:<34} {:>10.1}ns {:>10.1}ns {:>16}",
        "native fn call", native_median, native_p99, "1"
    );
    for (name, samples) in [
        ("host-call round trip", host),
        ("no-op action call (inst+run+drop)", noop),
        ("broker.stats routed via adapter", routed),
    ] {
        let (median, p99) = percentiles(samples);
        println!(
            "{name:<34} {:>10.2}µs {:>10.2}µs {:>15.0}x",
            median / 1_000.0,
            p99 / 1_000.0,
            median / native_median
        );
    }
}

criterion_group!(benches, boundary);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    table();
}
