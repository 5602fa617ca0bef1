//! A `qmedic redrive` killed with SIGKILL in the middle of a move, then run again: every message
//! is at the destination or still in the dead-letter queue, none lost; duplicates are bounded by
//! one batch. Against the real RabbitMQ server.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use qmedic_tests::rabbit::{depth, fresh_queue};

const N: usize = 50_000;
const BATCH: usize = 500;

/// Every message id in `queue`, with how many times it is there; the queue is emptied.
async fn ids(ch: &Channel, queue: &str) -> BTreeMap<String, u32> {
    let n = depth(ch, queue).await;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = ch
        .basic_consume(queue.into(), "".into(), options, FieldTable::default())
        .await
        .expect("consume");
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("delivery")
            .expect("stream")
            .expect("ok");
        *seen
            .entry(d.properties.message_id().clone().expect("id").to_string())
            .or_insert(0) += 1;
    }
    seen
}

fn redrive(config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qmedic"));
    cmd.arg("--config").arg(config).args([
        "redrive",
        "rabbit",
        "qmedic-kill.dlq",
        "--to",
        "qmedic-kill",
        "--force",
    ]);
    cmd.args([
        "--max",
        &N.to_string(),
        "--batch",
        &BATCH.to_string(),
        "--output",
        "json",
    ]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_killed_mid_move_loses_nothing() {
    let conn = Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ on 127.0.0.1:5672");
    let ch = conn.create_channel().await.expect("channel");
    fresh_queue(&ch, "qmedic-kill.dlq", FieldTable::default()).await;
    fresh_queue(&ch, "qmedic-kill", FieldTable::default()).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    for i in 0..N {
        let props = BasicProperties::default()
            .with_message_id(ShortString::from(format!("id-{i}")))
            .with_delivery_mode(2);
        ch.basic_publish(
            "".into(),
            "qmedic-kill.dlq".into(),
            BasicPublishOptions::default(),
            b"payload",
            props,
        )
        .await
        .expect("publish");
    }
    ch.wait_for_confirms().await.expect("confirms");
    assert_eq!(depth(&ch, "qmedic-kill.dlq").await, N as u32);

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("qmedic.yaml");
    std::fs::write(
        &config,
        format!(
            "runtime:\n  cache_dir: {}\n  limits:\n    timeout: 10m\nconnections:\n  rabbit:\n    kind: rabbitmq\n    \
             url: amqp://127.0.0.1:5672/%2f\n    http_url: http://127.0.0.1:15672/api\n    username: guest\n    password: guest\n",
            dir.path().join("cache").display()
        ),
    )
    .expect("config");

    let mut first = redrive(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while (depth(&ch, "qmedic-kill").await as usize) < N / 5 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the redrive made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let at_kill = depth(&ch, "qmedic-kill").await as usize;
    assert!(
        at_kill < N,
        "killed too late to test anything ({at_kill} already moved)"
    );

    // The broker requeues what the killed process held unacknowledged once its connection drops.
    let out = redrive(&config).output().expect("second run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dest = ids(&ch, "qmedic-kill").await;
    let left = ids(&ch, "qmedic-kill.dlq").await;
    let mut missing = 0;
    for i in 0..N {
        let id = format!("id-{i}");
        if !dest.contains_key(&id) && !left.contains_key(&id) {
            missing += 1;
        }
    }
    let delivered: u32 = dest.values().sum();
    let duplicates = delivered as usize - dest.len();
    eprintln!("killed after {at_kill} of {N} arrived; {duplicates} duplicates after the rerun");
    assert_eq!(missing, 0, "no message may be lost");
    assert!(left.is_empty(), "the second run moves the rest");
    assert!(
        duplicates <= BATCH,
        "{duplicates} duplicates, more than one batch of {BATCH}"
    );
}
