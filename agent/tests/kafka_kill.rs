//! `qmedic redrive` on a Kafka dead-letter topic killed with SIGKILL mid-replay, then run
//! again: every record reaches its origin topic, none lost; duplicates are bounded by one batch.
//! `qmedic stats` then reads the dead-letter group's lag through the same adapter. Against the
//! local Kafka-protocol broker.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qmedic_tests::kafka::{
    Batching, Record, committed, create_topic, key_counts, produce, read_all, unique,
};

const N: usize = 50_000;
const BATCH: usize = 500;
const PARTITIONS: i32 = 2;

fn qmedic(config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qmedic"));
    cmd.arg("--config").arg(config);
    cmd
}

fn redrive(config: &std::path::Path, dlq: &str) -> Command {
    let mut cmd = qmedic(config);
    cmd.args(["redrive", "kafka", dlq, "--output", "json"]);
    cmd.args(["--max", &N.to_string(), "--batch", &BATCH.to_string()]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_replay_killed_mid_move_loses_nothing() {
    let origin = unique("qmedic-kill");
    let dlq = format!("{origin}.dlq");
    let group = format!("qmedic-redrive.{dlq}");
    create_topic(&origin, PARTITIONS).await;
    create_topic(&dlq, PARTITIONS).await;
    let records: Vec<Record> = (0..N)
        .map(|i| {
            let mut r = Record::text(None, &format!("key-{i}"), "payload");
            r.headers
                .push(("x-original-topic".into(), origin.as_bytes().to_vec()));
            r
        })
        .collect();
    // The rerun resumes inside the topic: one record per batch (see `qmedic_tests::kafka`).
    produce(&dlq, &records, Batching::OnePerBatch).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("qmedic.yaml");
    std::fs::write(
        &config,
        format!(
            "runtime:\n  cache_dir: {}\n  limits:\n    timeout: 10m\nconnections:\n  kafka:\n    \
             kind: kafka\n    url: kafka://127.0.0.1:9092\n",
            dir.path().join("cache").display()
        ),
    )
    .expect("config");

    let mut first = redrive(&config, &dlq)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    loop {
        let done: i64 = committed(&group, &dlq, PARTITIONS)
            .await
            .iter()
            .map(|o| o.max(&0))
            .sum();
        if done as usize >= N / 5 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the replay made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let at_kill: i64 = committed(&group, &dlq, PARTITIONS).await.iter().sum();
    assert!(
        (at_kill as usize) < N,
        "killed too late to test anything ({at_kill} already committed)"
    );

    let out = redrive(&config, &dlq).output().expect("second run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("second run: {}", String::from_utf8_lossy(&out.stdout));

    let arrived = read_all(&origin, PARTITIONS, N + BATCH + 1, Duration::from_secs(5)).await;
    let counts = key_counts(&arrived);
    let missing = (0..N)
        .filter(|i| !counts.contains_key(format!("key-{i}").as_bytes()))
        .count();
    let duplicates = arrived.len() - counts.len();
    eprintln!(
        "killed with {at_kill} of {N} committed; {} arrived, {missing} missing, {duplicates} \
         duplicates after the rerun",
        arrived.len()
    );
    assert_eq!(missing, 0, "no record may be lost");
    assert_eq!(counts.len(), N, "nothing but the dead letters arrived");
    assert!(
        duplicates <= BATCH,
        "{duplicates} duplicates, more than one batch of {BATCH}"
    );

    // The dead-letter group is at the end of the topic: `qmedic stats` shows no lag.
    let out = qmedic(&config)
        .args([
            "stats",
            "kafka",
            &format!("{dlq}:{group}"),
            "--output",
            "json",
        ])
        .output()
        .expect("stats");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON stats");
    assert_eq!(stats["depth"], 0, "{stats}");
    let committed_total: i64 = committed(&group, &dlq, PARTITIONS).await.iter().sum();
    assert_eq!(committed_total as usize, N);
}
