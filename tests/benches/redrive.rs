//! Redrive throughput on the real RabbitMQ server: `reprocess-dlq` through the sandbox, against a
//! plain lapin loop doing the same consume → publish with confirms → ack in the same batches,
//! and a RabbitMQ dynamic shovel with `ack-mode: on-confirm` moving the same queue.
//!
//! Run with `cargo bench --profile dev -p qmedic-tests --bench redrive` (RabbitMQ with the
//! management and shovel plugins: `scripts/services.sh`). Prints msgs/s and ratios.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use qmedic_tests::runtime;
use serde_json::json;

const N: usize = 100_000;
const BATCH: usize = 500;
const SRC: &str = "qmedic-bench.src";
const DST: &str = "qmedic-bench.dst";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn fresh(ch: &Channel, name: &str) {
    ch.queue_delete(name.into(), Default::default())
        .await
        .expect("delete");
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
}

async fn depth(ch: &Channel, queue: &str) -> usize {
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), options, FieldTable::default())
        .await
        .expect("passive")
        .message_count() as usize
}

/// Empty queues, then `N` small persistent messages in the source.
async fn fill(ch: &Channel) {
    fresh(ch, SRC).await;
    fresh(ch, DST).await;
    for i in 0..N {
        let props = BasicProperties::default().with_delivery_mode(2);
        ch.basic_publish(
            "".into(),
            SRC.into(),
            BasicPublishOptions::default(),
            format!("m{i}").as_bytes(),
            props,
        )
        .await
        .expect("publish");
    }
    ch.wait_for_confirms().await.expect("confirms");
    assert_eq!(depth(ch, SRC).await, N);
}

async fn qmedic_redrive() -> Duration {
    let rt = runtime(
        "runtime:\n  limits:\n    timeout: 10m\nconnections:\n  rabbit:\n    kind: rabbitmq\n    url: amqp://127.0.0.1:5672/%2f\n    \
         http_url: http://127.0.0.1:15672/api\n    username: guest\n    password: guest\n",
    );
    let params = json!({ "connection": "rabbit", "queue": SRC, "to": DST, "max": N, "batch": BATCH, "force": true });
    let started = Instant::now();
    let report = rt
        .call_action("reprocess-dlq", &params.to_string())
        .await
        .outcome
        .expect("redrive");
    let elapsed = started.elapsed();
    assert!(report.contains(&format!("\"moved\":{N}")), "{report}");
    elapsed
}

async fn lapin_loop(conn: &Connection) -> Duration {
    let consume = conn.create_channel().await.expect("channel");
    let publish = conn.create_channel().await.expect("channel");
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    consume
        .basic_qos(1_000, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = consume
        .basic_consume(
            SRC.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let started = Instant::now();
    let mut moved = 0;
    while moved < N {
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH.min(N - moved) {
            batch.push(consumer.next().await.expect("stream").expect("delivery"));
        }
        for d in &batch {
            publish
                .basic_publish(
                    "".into(),
                    DST.into(),
                    BasicPublishOptions::default(),
                    &d.data,
                    d.properties.clone(),
                )
                .await
                .expect("publish");
        }
        publish.wait_for_confirms().await.expect("confirms");
        let last = batch.last().expect("non-empty").delivery_tag;
        consume
            .basic_ack(last, BasicAckOptions { multiple: true })
            .await
            .expect("ack");
        moved += batch.len();
    }
    started.elapsed()
}

fn management(method: &str, path: &str, body: Option<serde_json::Value>) {
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
    if let Some(b) = body {
        cmd.args(["-d", &b.to_string()]);
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
}

async fn shovel(ch: &Channel) -> Duration {
    let value = json!({ "value": {
        "src-protocol": "amqp091", "src-uri": "amqp://guest:guest@127.0.0.1", "src-queue": SRC,
        "dest-protocol": "amqp091", "dest-uri": "amqp://guest:guest@127.0.0.1", "dest-queue": DST,
        "ack-mode": "on-confirm", "src-prefetch-count": 1000, "src-delete-after": "never",
    }});
    let started = Instant::now();
    management("PUT", "/parameters/shovel/%2F/qmedic-bench", Some(value));
    while depth(ch, DST).await < N {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    management("DELETE", "/parameters/shovel/%2F/qmedic-bench", None);
    elapsed
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    tokio.block_on(async {
        let conn = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .expect("RabbitMQ");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");

        fill(&ch).await;
        let qmedic = qmedic_redrive().await;
        assert_eq!(depth(&ch, DST).await, N);
        fill(&ch).await;
        let lapin = lapin_loop(&conn).await;
        assert_eq!(depth(&ch, DST).await, N);
        fill(&ch).await;
        let shovel = shovel(&ch).await;
        assert_eq!(depth(&ch, SRC).await, 0);

        let rate = |d: Duration| N as f64 / d.as_secs_f64();
        println!("\nredrive of {N} small persistent messages, batches of {BATCH} (same run):");
        println!("{:<44} {:>10} {:>12}", "", "msgs/s", "speed ratio");
        for (name, d) in [
            ("qmedic reprocess-dlq (sandboxed plugin)", qmedic),
            ("plain lapin consume/publish-confirm/ack", lapin),
            ("RabbitMQ dynamic shovel (on-confirm)", shovel),
        ] {
            println!(
                "{name:<44} {:>10.0} {:>9.2}x",
                rate(d),
                qmedic.as_secs_f64() / d.as_secs_f64()
            );
        }
        fresh(&ch, SRC).await;
        fresh(&ch, DST).await;
    });
}
