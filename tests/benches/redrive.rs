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
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use qmedic_tests::rabbit::{AMQP, connection_yaml, depth, fresh_queue, management};
use qmedic_tests::timed_redrive;
use serde_json::json;

const N: usize = 100_000;
const BATCH: usize = 500;
const SRC: &str = "qmedic-bench.src";
const DST: &str = "qmedic-bench.dst";
/// Empty queues, then `N` small persistent messages in the source.
async fn fill(ch: &Channel) {
    fresh_queue(ch, SRC, FieldTable::default()).await;
    fresh_queue(ch, DST, FieldTable::default()).await;
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
    assert_eq!(depth(ch, SRC).await as usize, N);
}

async fn qmedic_redrive() -> Duration {
    let params = json!({ "connection": "rabbit", "queue": SRC, "to": DST, "max": N, "batch": BATCH, "force": true });
    timed_redrive(&connection_yaml("http://127.0.0.1:15672/api"), params, N).await
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

async fn shovel(ch: &Channel) -> Duration {
    let value = json!({ "value": {
        "src-protocol": "amqp091", "src-uri": "amqp://guest:guest@127.0.0.1", "src-queue": SRC,
        "dest-protocol": "amqp091", "dest-uri": "amqp://guest:guest@127.0.0.1", "dest-queue": DST,
        "ack-mode": "on-confirm", "src-prefetch-count": 1000, "src-delete-after": "never",
    }});
    let started = Instant::now();
    management("PUT", "/parameters/shovel/%2F/qmedic-bench", Some(&value));
    while (depth(ch, DST).await as usize) < N {
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
        assert_eq!(depth(&ch, DST).await as usize, N);
        fill(&ch).await;
        let lapin = lapin_loop(&conn).await;
        assert_eq!(depth(&ch, DST).await as usize, N);
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
        fresh_queue(&ch, SRC, FieldTable::default()).await;
        fresh_queue(&ch, DST, FieldTable::default()).await;
    });
}
