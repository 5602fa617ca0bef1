//! The built-in RabbitMQ adapter against the real server on 127.0.0.1:5672 (management API on
//! :15672; `scripts/services.sh` enables it). Queues are set up and checked with lapin directly.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use qmedic::Runtime;
use qmedic_tests::{failure, plugin_entry, runtime};
use serde_json::{Value, json};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn agent(http_url: &str) -> Runtime {
    runtime(&format!(
        "connections:\n  rabbit:\n    kind: rabbitmq\n    url: amqp://127.0.0.1:5672/%2f\n    http_url: {http_url}\n    \
         username: guest\n    password: guest\nplugins:\n{}",
        plugin_entry("broker-probe", "connections: [rabbit]"),
    ))
}

/// A fresh, empty queue named for this test.
async fn queue(channel: &Channel, name: &str) -> String {
    let name = format!("qmedic-test.{name}");
    channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    channel
        .queue_purge(name.as_str().into(), QueuePurgeOptions::default())
        .await
        .expect("purge");
    name
}

async fn channel() -> (Connection, Channel) {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("RabbitMQ on 127.0.0.1:5672");
    let channel = conn.create_channel().await.expect("channel");
    (conn, channel)
}

async fn probe(rt: &Runtime, steps: Value) -> Result<Vec<Value>, qmedic::CallError> {
    let report = rt
        .call_action("broker-probe", &json!({ "steps": steps }).to_string())
        .await
        .outcome?;
    Ok(
        serde_json::from_str::<Value>(&report).expect("JSON")["results"]
            .as_array()
            .expect("results")
            .clone(),
    )
}

async fn depth(channel: &Channel, queue: &str) -> u32 {
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .expect("passive declare")
        .message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_stats_receive_and_settle_on_a_real_queue() {
    let (_conn, ch) = channel().await;
    let q = queue(&ch, "basic").await;
    let rt = agent("http://127.0.0.1:15672/api");

    let r = probe(&rt, json!([{ "op": "publish", "connection": "rabbit", "queue": q, "bodies": ["a", "b", "c", "d", "e"] }]))
        .await
        .expect("publish");
    assert_eq!(r[0], 5);
    assert_eq!(
        depth(&ch, &q).await,
        5,
        "confirmed publishes are in the queue"
    );

    // The management API refreshes its figures every few seconds.
    let started = Instant::now();
    loop {
        let r = probe(
            &rt,
            json!([{ "op": "stats", "connection": "rabbit", "queue": q }]),
        )
        .await
        .expect("stats");
        if r[0]["depth"] == 5 {
            assert_eq!(r[0]["consumers"], 0);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "management stats never showed 5: {}",
            r[0]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let r = probe(
        &rt,
        json!([
            { "op": "receive-settle", "connection": "rabbit", "queue": q, "max": 2, "how": "requeue" },
            { "op": "receive-settle", "connection": "rabbit", "queue": q, "max": 10, "how": "ack" },
        ]),
    )
    .await
    .expect("receive");
    assert_eq!(r[0].as_array().expect("bodies").len(), 2);
    assert_eq!(
        r[1].as_array().expect("bodies").len(),
        5,
        "requeued messages come back in the same call"
    );
    assert_eq!(depth(&ch, &q).await, 0);

    let list = probe(
        &rt,
        json!([{ "op": "list", "connection": "rabbit", "pattern": "qmedic-test.bas*" }]),
    )
    .await
    .expect("list");
    assert_eq!(list[0], json!([q]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_fall_back_to_a_passive_declare_and_say_so() {
    let (_conn, ch) = channel().await;
    let q = queue(&ch, "fallback").await;
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    // Nothing listens on port 1: the management API is unreachable.
    let rt = agent("http://127.0.0.1:1/api");
    let r = probe(
        &rt,
        json!([{ "op": "stats", "connection": "rabbit", "queue": q }]),
    )
    .await
    .expect("stats");
    assert_eq!(r[0]["depth"], 1);
    assert_eq!(r[0]["extra"], json!([["source.passive-declare", 1.0]]));

    let msg = failure(
        "not-found",
        probe(
            &rt,
            json!([{ "op": "stats", "connection": "rabbit", "queue": "qmedic-test.absent" }]),
        )
        .await,
    );
    assert!(msg.contains("qmedic-test.absent"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_message_keeps_its_body_properties_and_typed_headers() {
    let (_conn, ch) = channel().await;
    let from = queue(&ch, "move-from").await;
    let to = queue(&ch, "move-to").await;
    let mut inner = FieldTable::default();
    inner.insert(
        ShortString::from("reason"),
        AMQPValue::LongString(LongString::from("rejected")),
    );
    let mut headers = FieldTable::default();
    headers.insert(ShortString::from("attempt"), AMQPValue::LongInt(3));
    headers.insert(
        ShortString::from("trace"),
        AMQPValue::LongString(LongString::from("abc-123")),
    );
    headers.insert(
        ShortString::from("x-history"),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(inner)])),
    );
    let properties = BasicProperties::default()
        .with_message_id(ShortString::from("m-1"))
        .with_content_type(ShortString::from("application/json"))
        .with_priority(4)
        .with_delivery_mode(2)
        .with_headers(headers);
    ch.basic_publish(
        "".into(),
        from.as_str().into(),
        BasicPublishOptions::default(),
        b"{\"order\":42}",
        properties.clone(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");

    let rt = agent("http://127.0.0.1:15672/api");
    let r = probe(
        &rt,
        json!([{ "op": "move", "connection": "rabbit", "from": from, "to": to, "max": 10 }]),
    )
    .await
    .expect("move");
    assert_eq!(r[0], 1);
    assert_eq!(depth(&ch, &from).await, 0);

    let mut consumer = ch
        .basic_consume(
            to.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let moved = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("a message")
        .expect("stream")
        .expect("delivery");
    assert_eq!(moved.data, b"{\"order\":42}");
    assert_eq!(
        moved.properties, properties,
        "properties and typed headers survive the move"
    );
}
