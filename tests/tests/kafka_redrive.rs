//! `reprocess-dlq` replaying a Kafka dead-letter topic through the Kafka adapter, against the
//! local Kafka-protocol broker, and the same plugin binary moving RabbitMQ dead letters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{FieldTable, ShortString};
use qmedic_tests::kafka::{
    Batching, Record, committed, connection_yaml, create_topic, key_counts, produce, read_all,
    unique,
};
use qmedic_tests::rabbit::{self, dead_lettering_queue, fresh_queue, reject_all, watch};
use qmedic_tests::{call, runtime};
use serde_json::json;

const PARTITIONS: i32 = 3;

/// The three header conventions that name a dead letter's origin topic.
const ORIGIN_HEADERS: [&str; 3] = [
    "x-original-topic",
    "__connect.errors.topic",
    "kafka_dlt-original-topic",
];

/// `n` dead letters for `origin`: unique keys, values with a non-UTF-8 byte (every 1,000th a
/// null value), a trace header, a binary header, a header named like the adapter's own, and the
/// origin under each convention in turn.
fn dead_letters(n: usize, origin: &str) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            partition: None,
            key: Some(format!("key-{i}").into_bytes()),
            value: (i % 1_000 != 0)
                .then(|| [format!("value-{i}-").into_bytes(), vec![0xff, i as u8]].concat()),
            headers: vec![
                (
                    ORIGIN_HEADERS[i % ORIGIN_HEADERS.len()].into(),
                    origin.as_bytes().to_vec(),
                ),
                ("trace".into(), format!("t-{i}").into_bytes()),
                ("bin".into(), vec![0x00, 0xfe, (i % 251) as u8]),
                ("kafka.key".into(), b"not the key".to_vec()),
            ],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_dead_letters_replay_intact_and_commit_the_dlq_group() {
    const N: usize = 10_000;
    let origin = unique("qmedic-replay");
    let dlq = format!("{origin}.dlq");
    create_topic(&origin, PARTITIONS).await;
    create_topic(&dlq, PARTITIONS).await;
    let sent = dead_letters(N, &origin);
    produce(&dlq, &sent, Batching::OnePerBatch).await;

    let rt = runtime(&connection_yaml());
    let report = call(
        &rt,
        "reprocess-dlq",
        json!({ "connection": "kafka", "queue": dlq, "max": 20_000, "batch": 500 }),
    )
    .await
    .expect("replay");
    assert_eq!(report["moved"], N as u64, "{report}");
    assert_eq!(report["destinations"], json!({ origin.clone(): N }));

    let arrived = read_all(&origin, PARTITIONS, N + 1, Duration::from_secs(5)).await;
    assert_eq!(arrived.len(), N, "each record exactly once, none extra");
    let counts = key_counts(&arrived);
    assert_eq!(counts.len(), N);
    assert!(counts.values().all(|c| *c == 1));
    let by_key: BTreeMap<Vec<u8>, &Record> = sent
        .iter()
        .map(|r| (r.key.clone().unwrap_or_default(), r))
        .collect();
    for (_, _, got) in &arrived {
        let want = by_key[got.key.as_ref().expect("key kept")];
        assert_eq!(got.value, want.value, "value kept");
        let mut expected = want.headers.clone();
        expected.push(("qmedic-redrives".into(), b"1".to_vec()));
        assert_eq!(
            got.headers.iter().cloned().collect::<BTreeSet<_>>(),
            expected.into_iter().collect::<BTreeSet<_>>(),
            "headers kept, with the redrive counter added"
        );
    }

    // The DLQ group committed past every record of every partition.
    let written = read_all(&dlq, PARTITIONS, N, Duration::from_secs(5)).await;
    let mut ends = vec![0i64; PARTITIONS as usize];
    for (p, offset, _) in &written {
        ends[*p as usize] = ends[*p as usize].max(offset + 1);
    }
    assert_eq!(
        committed(&format!("qmedic-redrive.{dlq}"), &dlq, PARTITIONS).await,
        ends
    );

    // A second replay finds nothing left.
    let again = call(
        &rt,
        "reprocess-dlq",
        json!({ "connection": "kafka", "queue": dlq, "max": 20_000, "batch": 500 }),
    )
    .await
    .expect("second replay");
    assert_eq!(again["moved"], 0, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_filter_leaves_are_written_back_to_the_dlq_and_never_moved_twice() {
    const N: usize = 300;
    let origin = unique("qmedic-filter");
    let dlq = format!("{origin}.dlq");
    create_topic(&origin, 1).await;
    create_topic(&dlq, 1).await;
    let mut sent = dead_letters(N, &origin);
    for (i, r) in sent.iter_mut().enumerate() {
        let tenant = if i % 3 == 0 { "acme" } else { "other" };
        r.headers
            .push(("tenant".into(), tenant.as_bytes().to_vec()));
        r.partition = Some(0);
    }
    produce(&dlq, &sent, Batching::OnePerBatch).await;
    let rt = runtime(&connection_yaml());
    let params = json!({
        "connection": "kafka", "queue": dlq, "batch": 50,
        "filter": "headers[\"tenant\"] == \"acme\"",
    });
    let report = call(&rt, "reprocess-dlq", params.clone())
        .await
        .expect("replay");
    assert_eq!(
        (report["moved"].as_u64(), report["skipped"].as_u64()),
        (Some(100), Some(200))
    );

    // The 200 left were written again at the end of the DLQ, then the group committed past all
    // 300 originals: nothing moved is read again.
    let group = format!("qmedic-redrive.{dlq}");
    assert_eq!(committed(&group, &dlq, 1).await, [N as i64]);
    let dlq_now = read_all(&dlq, 1, N + 201, Duration::from_secs(3)).await;
    assert_eq!(dlq_now.len(), N + 200);
    let again = call(&rt, "reprocess-dlq", params)
        .await
        .expect("second replay");
    assert_eq!(
        (again["moved"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(200))
    );
    let arrived = read_all(&origin, 1, 101, Duration::from_secs(3)).await;
    let counts = key_counts(&arrived);
    assert_eq!(arrived.len(), 100, "each acme record once");
    assert!(
        (0..N)
            .step_by(3)
            .all(|i| counts.get(format!("key-{i}").as_bytes()) == Some(&1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reprocess_dlq_binary_moves_rabbitmq_and_kafka_dead_letters() {
    const N: usize = 50;
    let yaml = format!(
        "{}{}",
        connection_yaml(),
        rabbit::connection_yaml("http://127.0.0.1:15672/api").replacen("connections:\n", "", 1)
    );
    let rt = runtime(&yaml);
    let digest = |rt: &qmedic::Runtime| rt.plugin("reprocess-dlq").expect("loaded").info().sha256;
    let before = digest(&rt);

    // RabbitMQ: dead letters rejected from a queue into its DLQ.
    let (_conn, ch) = rabbit::channel().await;
    fresh_queue(&ch, "qmedic-both", FieldTable::default()).await;
    let rabbit_dlq = fresh_queue(&ch, "qmedic-both.dlq", FieldTable::default()).await;
    dead_lettering_queue(&ch, "qmedic-both.in", &rabbit_dlq).await;
    for i in 0..N {
        ch.basic_publish(
            "".into(),
            "qmedic-both.in".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_message_id(ShortString::from(format!("id-{i}"))),
        )
        .await
        .expect("publish");
    }
    reject_all(&ch, "qmedic-both.in", N as u32, &rabbit_dlq).await;
    let report = call(
        &rt,
        "reprocess-dlq",
        json!({ "connection": "rabbit", "queue": rabbit_dlq, "to": "qmedic-both", "force": true }),
    )
    .await
    .expect("RabbitMQ redrive");
    assert_eq!(report["moved"], N as u64, "{report}");
    let mut consumer = watch(&ch, "qmedic-both").await;
    for _ in 0..N {
        tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a redriven message")
            .expect("stream")
            .expect("delivery");
    }
    let after_rabbit = digest(&rt);

    // Kafka: the same plugin, through the Kafka adapter.
    let origin = unique("qmedic-both");
    let dlq = format!("{origin}.dlq");
    create_topic(&origin, 1).await;
    create_topic(&dlq, 1).await;
    produce(&dlq, &dead_letters(N, &origin), Batching::Batched).await;
    let report = call(
        &rt,
        "reprocess-dlq",
        json!({ "connection": "kafka", "queue": dlq }),
    )
    .await
    .expect("Kafka replay");
    assert_eq!(report["moved"], N as u64, "{report}");
    assert_eq!(
        read_all(&origin, 1, N, Duration::from_secs(5)).await.len(),
        N
    );

    assert_eq!(before, after_rabbit);
    assert_eq!(after_rabbit, digest(&rt), "one binary served both brokers");
    assert_eq!(
        rt.plugin("reprocess-dlq").expect("loaded").info().origin,
        qmedic::Origin::BuiltIn
    );
    // And it knows neither broker: no broker-specific line in its source.
    let source = include_str!("../../plugins/reprocess-dlq/src/lib.rs").to_lowercase();
    for broker in ["kafka", "rabbit", "amqp"] {
        assert!(!source.contains(broker), "reprocess-dlq mentions {broker}");
    }
}
