//! The broker connection closed from the server side (`rabbitmqctl close_all_connections`) in
//! the middle of a redrive: a clear error or a clean continuation on a new connection, never a
//! loss. In a file of its own because it closes every connection on the server, and test files
//! run one after another.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use qmedic_tests::rabbit::{AMQP, connection_yaml, depth, fresh_queue};
use qmedic_tests::{call, failure, runtime};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_server_mid_run_loses_nothing() {
    const N: usize = 20_000;
    const BATCH: usize = 250;
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let ch = conn.create_channel().await.expect("channel");
    let dlq = fresh_queue(&ch, "qmedic-test.drop.dlq", FieldTable::default()).await;
    let dest = fresh_queue(&ch, "qmedic-test.drop", FieldTable::default()).await;
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    for i in 0..N {
        let props =
            BasicProperties::default().with_message_id(ShortString::from(format!("id-{i}")));
        ch.basic_publish(
            "".into(),
            dlq.as_str().into(),
            BasicPublishOptions::default(),
            b"x",
            props,
        )
        .await
        .expect("publish");
    }
    ch.wait_for_confirms().await.expect("confirms");
    assert_eq!(
        depth(&ch, &dlq).await,
        N as u32,
        "all {N} messages are in the dead-letter queue"
    );

    let rt = runtime(&format!(
        "runtime:\n  limits:\n    timeout: 5m\n{}",
        connection_yaml("http://127.0.0.1:15672/api")
    ));
    let params = json!({ "connection": "rabbit", "queue": dlq, "to": dest, "max": N, "batch": BATCH, "force": true, "rate": 4000 });
    let first = {
        let rt = rt.clone();
        let params = params.clone();
        tokio::spawn(async move { call(&rt, "reprocess-dlq", params).await })
    };
    let started = Instant::now();
    while depth(&ch, &dest).await < (N / 10) as u32 {
        assert!(started.elapsed() < Duration::from_secs(30), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["close_all_connections", "qmedic test: connection drop"])
        .output()
        .expect("rabbitmqctl");
    assert!(
        closed.status.success(),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
    // Either a clear error, or a clean continuation on a new connection between batches.
    match first.await.expect("task") {
        Ok(report) => eprintln!("the first run reconnected and finished: {report}"),
        Err(e) => {
            let msg = failure("unavailable", Err::<(), _>(e));
            eprintln!("the first run stopped: {msg}");
            assert!(msg.contains("connection `rabbit`"), "a clear error: {msg}");
        }
    }

    // Our own connection was closed too.
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("reconnect");
    let ch = conn.create_channel().await.expect("channel");
    let started = Instant::now();
    while (depth(&ch, &dest).await + depth(&ch, &dlq).await) < N as u32 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "messages in flight never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    call(&rt, "reprocess-dlq", params)
        .await
        .expect("the rerun reconnects and finishes");

    let total = depth(&ch, &dest).await as usize;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = ch
        .basic_consume(
            dest.as_str().into(),
            "".into(),
            options,
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut ids = BTreeSet::new();
    for _ in 0..total {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("delivery")
            .expect("stream")
            .expect("ok");
        ids.insert(d.properties.message_id().clone().expect("id").to_string());
    }
    eprintln!(
        "dest total {total}, unique {}, dlq {}",
        ids.len(),
        depth(&ch, &dlq).await
    );
    assert_eq!(ids.len(), N, "every id arrived");
    assert_eq!(depth(&ch, &dlq).await, 0);
    assert!(
        total - N <= BATCH,
        "{} duplicates, more than one batch",
        total - N
    );
}
