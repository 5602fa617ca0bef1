//! The real RabbitMQ server on 127.0.0.1 (guest/guest), for tests and benchmarks: queues are set
//! up and checked with lapin and the management API directly, independently of qmedic.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicRejectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::Value;

/// The server's AMQP address with credentials.
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A `connections:` entry named `rabbit` for the local server, its management API at `http_url`.
pub fn connection_yaml(http_url: &str) -> String {
    format!(
        "connections:\n  rabbit:\n    kind: rabbitmq\n    url: amqp://127.0.0.1:5672/%2f\n    http_url: {http_url}\n    \
         username: guest\n    password: guest\n"
    )
}

/// A connection and a channel on it.
pub async fn channel() -> (Connection, Channel) {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 (scripts/services.sh starts it)");
    let channel = conn.create_channel().await.expect("channel");
    (conn, channel)
}

/// `name` deleted and declared again, durable and empty, with `arguments`.
pub async fn fresh_queue(channel: &Channel, name: &str, arguments: FieldTable) -> String {
    channel
        .queue_delete(name.into(), Default::default())
        .await
        .expect("delete");
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(name.into(), options, arguments)
        .await
        .expect("declare");
    name.to_string()
}

/// Messages ready in `queue` (a passive declare: live, unlike the management API).
pub async fn depth(channel: &Channel, queue: &str) -> u32 {
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

/// Call the management API with curl; the body of the answer.
pub fn management(method: &str, path: &str, body: Option<&Value>) -> String {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-fsS",
        "-u",
        "guest:guest",
        "-X",
        method,
        "-H",
        "content-type: application/json",
    ]);
    if let Some(body) = body {
        cmd.args(["-d", &body.to_string()]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:15672/api{path}"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{method} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A durable queue `name` that dead-letters to `dlq` through the default exchange.
pub async fn dead_lettering_queue(channel: &Channel, name: &str, dlq: &str) -> String {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dlq.into()),
    );
    fresh_queue(channel, name, args).await
}

/// Act as a failing consumer: take `count` messages from `queue` and reject each without
/// requeue, so RabbitMQ dead-letters them with `x-death`; return once `dlq` holds them all.
pub async fn reject_all(channel: &Channel, queue: &str, count: u32, dlq: &str) {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "failing".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    for _ in 0..count {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a delivery within 10 s")
            .expect("stream")
            .expect("delivery");
        d.reject(BasicRejectOptions { requeue: false })
            .await
            .expect("reject");
    }
    channel
        .basic_cancel("failing".into(), Default::default())
        .await
        .expect("cancel");
    let started = Instant::now();
    while depth(channel, dlq).await < count {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not all messages reached {dlq}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A consumer that takes every message `queue` receives from now on, without acks: for checking
/// what arrived.
pub async fn watch(channel: &Channel, queue: &str) -> lapin::Consumer {
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume")
}
