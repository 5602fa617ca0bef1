//! The broker-neutral `reprocess-dlq` action: through the in-memory adapter (fast, exact) and
//! against the real RabbitMQ server.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use qmedic::Runtime;
use qmedic_tests::rabbit::{
    AMQP, connection_yaml, dead_lettering_queue, depth, fresh_queue, reject_all, watch,
};
use qmedic_tests::{call, failure, plugin_entry, runtime};
use serde_json::{Value, json};

fn memory_agent() -> Runtime {
    runtime(&format!(
        "connections:\n  mem: {{ kind: memory }}\nplugins:\n{}{}",
        plugin_entry("memory-adapter", ""),
        plugin_entry("broker-probe", "connections: [mem]"),
    ))
}

async fn publish(rt: &Runtime, queue: &str, bodies: Vec<String>, headers: Value) {
    let step = json!({ "op": "publish", "connection": "mem", "queue": queue, "bodies": bodies, "headers": headers });
    call(rt, "broker-probe", json!({ "steps": [step] }))
        .await
        .expect("publish");
}

async fn drain(rt: &Runtime, queue: &str) -> Vec<Value> {
    let step = json!({ "op": "receive-settle", "connection": "mem", "queue": queue, "max": 10_000, "how": "ack", "detail": true });
    let r = call(rt, "broker-probe", json!({ "steps": [step] }))
        .await
        .expect("drain");
    r["results"][0].as_array().expect("messages").clone()
}

/// Make `queue` exist on the in-memory broker, empty.
async fn create(rt: &Runtime, queue: &str) {
    publish(rt, queue, vec!["seed".into()], json!([])).await;
    drain(rt, queue).await;
}

#[tokio::test]
async fn moves_every_message_once_and_counts_its_redrives() {
    let rt = memory_agent();
    create(&rt, "orders").await;
    publish(
        &rt,
        "orders.dlq",
        (0..250).map(|i| format!("m{i}")).collect(),
        json!([["trace", "t"]]),
    )
    .await;
    let report = call(
        &rt,
        "reprocess-dlq",
        json!({ "connection": "mem", "queue": "orders.dlq", "to": "orders", "batch": 40 }),
    )
    .await
    .expect("redrive");
    assert_eq!(
        (
            report["moved"].as_u64(),
            report["parked"].as_u64(),
            report["skipped"].as_u64()
        ),
        (Some(250), Some(0), Some(0))
    );
    assert_eq!(report["destinations"], json!({ "orders": 250 }));
    let moved = drain(&rt, "orders").await;
    let bodies: BTreeSet<String> = moved
        .iter()
        .map(|m| m["body"].as_str().expect("body").to_string())
        .collect();
    assert_eq!(bodies, (0..250).map(|i| format!("m{i}")).collect());
    for m in &moved {
        let headers: Vec<(String, String)> =
            serde_json::from_value(m["headers"].clone()).expect("headers");
        assert!(
            headers.contains(&("trace".into(), "t".into())),
            "{headers:?}"
        );
        assert!(
            headers.contains(&("qmedic-redrives".into(), "1".into())),
            "{headers:?}"
        );
    }
    assert!(drain(&rt, "orders.dlq").await.is_empty());
}

#[tokio::test]
async fn a_message_past_max_redrives_is_parked_and_max_bounds_a_run() {
    let rt = memory_agent();
    create(&rt, "q").await;
    publish(
        &rt,
        "q.dlq",
        vec!["tired".into()],
        json!([["qmedic-redrives", "3"]]),
    )
    .await;
    publish(
        &rt,
        "q.dlq",
        (0..10).map(|i| format!("fresh{i}")).collect(),
        json!([]),
    )
    .await;
    let report = call(
        &rt,
        "reprocess-dlq",
        json!({ "connection": "mem", "queue": "q.dlq", "to": "q", "max-redrives": 3, "max": 6 }),
    )
    .await
    .expect("redrive");
    assert_eq!(report["parked"], 1);
    assert_eq!(report["moved"], 5, "max counts every message handled");
    assert_eq!(drain(&rt, "q.dlq.parking").await.len(), 1);
    assert_eq!(drain(&rt, "q").await.len(), 5);
    assert_eq!(
        drain(&rt, "q.dlq").await.len(),
        5,
        "the rest wait for the next run"
    );
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let rt = memory_agent();
    create(&rt, "d").await;
    publish(
        &rt,
        "d.dlq",
        (0..20).map(|i| format!("{i}")).collect(),
        json!([]),
    )
    .await;
    let report = call(
        &rt,
        "reprocess-dlq",
        json!({ "connection": "mem", "queue": "d.dlq", "to": "d", "dry-run": true }),
    )
    .await
    .expect("dry run");
    assert_eq!(report["moved"], 20);
    assert_eq!(report["dry-run"], true);
    assert!(drain(&rt, "d").await.is_empty());
}

#[tokio::test]
async fn a_filter_moves_only_matching_messages() {
    let rt = memory_agent();
    create(&rt, "f").await;
    publish(
        &rt,
        "f.dlq",
        (0..6).map(|i| format!("a{i}")).collect(),
        json!([["tenant", "acme"]]),
    )
    .await;
    publish(
        &rt,
        "f.dlq",
        (0..4).map(|i| format!("b{i}")).collect(),
        json!([["tenant", "globex"]]),
    )
    .await;
    let params = json!({ "connection": "mem", "queue": "f.dlq", "to": "f", "filter": "headers[\"tenant\"] == \"acme\" && deliveries < 5" });
    let report = call(&rt, "reprocess-dlq", params)
        .await
        .expect("filtered redrive");
    assert_eq!(
        (report["moved"].as_u64(), report["skipped"].as_u64()),
        (Some(6), Some(4))
    );
    let moved: BTreeSet<String> = drain(&rt, "f")
        .await
        .iter()
        .map(|m| m["body"].as_str().expect("body").into())
        .collect();
    assert_eq!(moved, (0..6).map(|i| format!("a{i}")).collect());
    assert_eq!(drain(&rt, "f.dlq").await.len(), 4, "the others stay");

    let msg = failure(
        "invalid",
        call(
            &rt,
            "reprocess-dlq",
            json!({ "connection": "mem", "queue": "f.dlq", "to": "f", "filter": "headers[" }),
        )
        .await,
    );
    assert!(msg.contains("does not parse"), "{msg}");
    // Filters are expressions: no statements, so no loops. One that builds a huge string hits
    // the size limit and the run fails, leaving every message.
    publish(&rt, "f.dlq", vec!["x".into()], json!([])).await;
    let params = json!({ "connection": "mem", "queue": "f.dlq", "to": "f", "filter": "\"a\".pad(1000000, \"b\").len() > 0" });
    let msg = failure("invalid", call(&rt, "reprocess-dlq", params).await);
    assert!(msg.contains("failed on message"), "{msg}");
    assert_eq!(drain(&rt, "f.dlq").await.len(), 1);
}

#[tokio::test]
async fn bad_parameters_are_invalid() {
    let rt = memory_agent();
    let msg = failure(
        "invalid",
        call(
            &rt,
            "reprocess-dlq",
            json!({ "connection": "mem", "queue": "x", "rat": 5 }),
        )
        .await,
    );
    assert!(msg.contains("unknown field `rat`"), "{msg}");
    let msg = failure(
        "invalid",
        call(
            &rt,
            "reprocess-dlq",
            json!({ "connection": "mem", "queue": "x", "rate": -1 }),
        )
        .await,
    );
    assert!(msg.contains("rate must be a positive"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_rabbitmq_messages_go_home_exactly_once() {
    const N: usize = 10_000;
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let ch = conn.create_channel().await.expect("channel");
    let dlq = fresh_queue(&ch, "qmedic-test.redrive.dlq", FieldTable::default()).await;
    let orders = dead_lettering_queue(&ch, "qmedic-test.redrive", &dlq).await;
    for i in 0..N {
        let props =
            BasicProperties::default().with_message_id(ShortString::from(format!("id-{i}")));
        ch.basic_publish(
            "".into(),
            orders.as_str().into(),
            BasicPublishOptions::default(),
            format!("body-{i}").as_bytes(),
            props,
        )
        .await
        .expect("publish");
    }
    reject_all(&ch, &orders, N as u32, &dlq).await;

    let rt = runtime(&connection_yaml("http://127.0.0.1:15672/api"));
    // No consumer on the origin: refused, nothing moves.
    let params = json!({ "connection": "rabbit", "queue": dlq, "max": 100_000, "batch": 200 });
    let msg = failure("invalid", call(&rt, "reprocess-dlq", params.clone()).await);
    assert!(msg.contains("has no consumers"), "{msg}");

    let mut forced = params;
    forced["force"] = json!(true);
    let report = call(&rt, "reprocess-dlq", forced).await.expect("redrive");
    assert_eq!(report["moved"], N as u64, "{report}");
    assert_eq!(report["destinations"], json!({ orders.clone(): N }));

    let started = Instant::now();
    while depth(&ch, &orders).await < N as u32 || depth(&ch, &dlq).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redriven messages did not all arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut consumer = watch(&ch, &orders).await;
    let mut ids = BTreeSet::new();
    for _ in 0..N {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("delivery")
            .expect("stream")
            .expect("ok");
        let id = d
            .properties
            .message_id()
            .clone()
            .expect("message id kept")
            .to_string();
        assert_eq!(
            String::from_utf8_lossy(&d.data),
            id.replace("id-", "body-"),
            "body kept"
        );
        let headers = d.properties.headers().clone().expect("headers");
        assert!(
            headers.inner().contains_key(&ShortString::from("x-death")),
            "x-death kept"
        );
        assert_eq!(
            headers.inner().get(&ShortString::from("qmedic-redrives")),
            Some(&AMQPValue::LongString("1".into()))
        );
        ids.insert(id);
    }
    assert_eq!(ids.len(), N, "every id exactly once");
    assert_eq!(depth(&ch, &dlq).await, 0);
}
