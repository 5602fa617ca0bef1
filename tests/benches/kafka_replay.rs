//! Dead-letter replay throughput on the local Kafka-protocol broker: `reprocess-dlq` through the
//! sandbox and the Kafka adapter, against a plain rdkafka loop doing the same work in the same
//! batches: consume a batch, produce it (idempotent, acks=all) and wait for every delivery
//! report, then commit the batch's offsets.
//!
//! Run with `cargo bench --profile dev -p qmedic-tests --bench kafka_replay` (the broker:
//! `scripts/services.sh`). Prints msgs/s and the ratio, for each of `ROUNDS` alternating rounds.

use std::time::{Duration, Instant};

use qmedic_tests::kafka::{
    BOOTSTRAP, Batching, Record, connection_yaml, create_topic, produce, unique,
};
use qmedic_tests::timed_redrive;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

const N: usize = 50_000;
const BATCH: usize = 500;
const PARTITIONS: i32 = 3;
const ROUNDS: usize = 3;

/// A fresh dead-letter topic holding `N` records for a fresh origin topic; returns both names.
async fn fill() -> (String, String) {
    let origin = unique("qmedic-bench");
    let dlq = format!("{origin}.dlq");
    create_topic(&origin, PARTITIONS).await;
    create_topic(&dlq, PARTITIONS).await;
    let records: Vec<Record> = (0..N)
        .map(|i| {
            let mut r = Record::text(None, &format!("key-{i}"), &format!("value-{i}"));
            r.headers
                .push(("x-original-topic".into(), origin.as_bytes().to_vec()));
            r
        })
        .collect();
    produce(&dlq, &records, Batching::Batched).await;
    (origin, dlq)
}

async fn qmedic_replay(dlq: &str) -> Duration {
    let params = json!({ "connection": "kafka", "queue": dlq, "max": N, "batch": BATCH });
    timed_redrive(&connection_yaml(), params, N).await
}

async fn rdkafka_loop(origin: &str, dlq: &str) -> Duration {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", BOOTSTRAP)
        .set("group.id", format!("bench-{dlq}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(dlq, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", BOOTSTRAP)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // As the agent's producer is configured.
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut moved = 0;
    while moved < N {
        let mut pending = Vec::with_capacity(BATCH);
        let mut next = TopicPartitionList::new();
        while pending.len() < BATCH.min(N - moved) {
            let m = consumer.recv().await.expect("record");
            let mut headers = OwnedHeaders::new();
            for h in m
                .headers()
                .map(|h| h.iter().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(origin).headers(headers);
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            if let Some(v) = m.payload() {
                record = record.payload(v);
            }
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
            let _ = next.add_partition_offset(dlq, m.partition(), Offset::Offset(m.offset() + 1));
        }
        let count = pending.len();
        for d in futures_util::future::join_all(pending).await {
            d.expect("delivery report")
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
        consumer.commit(&next, CommitMode::Sync).expect("commit");
        moved += count;
    }
    started.elapsed()
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    tokio.block_on(async {
        let rate = |d: Duration| N as f64 / d.as_secs_f64();
        println!("\nreplay of {N} small records, {PARTITIONS} partitions, batches of {BATCH}:");
        println!(
            "{:<8} {:>18} {:>18} {:>8}",
            "round", "qmedic msgs/s", "rdkafka msgs/s", "ratio"
        );
        for round in 1..=ROUNDS {
            let (_, dlq) = fill().await;
            let qmedic = qmedic_replay(&dlq).await;
            let (origin, dlq) = fill().await;
            let plain = rdkafka_loop(&origin, &dlq).await;
            println!(
                "{round:<8} {:>18.0} {:>18.0} {:>7.2}x",
                rate(qmedic),
                rate(plain),
                plain.as_secs_f64() / qmedic.as_secs_f64()
            );
        }
    });
}
