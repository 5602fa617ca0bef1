//! The shipped `playbooks/rabbitmq-dlq-redrive.yaml` against the real RabbitMQ server: it
//! leaves the dead letters alone while their origin has no consumer, and moves them all once it
//! has one.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use qmedic::playbook::Outcome;
use qmedic_tests::rabbit::{
    channel, connection_yaml, dead_lettering_queue, depth, fresh_queue, reject_all, watch,
};
use qmedic_tests::{run_request, shipped_playbook};

const ORIGIN: &str = "qmedic.pb.orders";
const DLQ: &str = "qmedic.pb.orders.dlq";

/// A manual run on this test's queues.
fn request() -> qmedic::RunRequest {
    let params = [
        ("connection", "rabbit"),
        ("queue", ORIGIN),
        ("dlq", DLQ),
        ("max", "100"),
    ];
    run_request(&params, false)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redrive_playbook_waits_for_a_healthy_consumer_then_moves_everything() {
    let (_conn, ch) = channel().await;
    fresh_queue(&ch, DLQ, FieldTable::default()).await;
    dead_lettering_queue(&ch, ORIGIN, DLQ).await;
    for i in 0..40 {
        ch.basic_publish(
            "".into(),
            ORIGIN.into(),
            BasicPublishOptions::default(),
            format!("order {i}").as_bytes(),
            BasicProperties::default().with_message_id(format!("order-{i}").into()),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    }
    reject_all(&ch, ORIGIN, 40, DLQ).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let connections = connection_yaml("http://127.0.0.1:15672/api");
    let (executor, playbook) =
        shipped_playbook(&connections, "rabbitmq-dlq-redrive", dir.path()).await;

    // No consumer on the origin: the redrive step is skipped and nothing moves.
    let s = executor.run(&playbook, request()).await.expect("run");
    assert_eq!(s.outcome, Outcome::Succeeded, "{s:?}");
    let redrive = s
        .steps
        .iter()
        .find(|st| st.step == "redrive")
        .expect("redrive step");
    assert_eq!(redrive.outcome, "skipped");
    assert!(
        s.steps.last().expect("log step").log[0].contains("40 dead letters wait"),
        "{s:?}"
    );
    assert_eq!(depth(&ch, DLQ).await, 40);

    // A consumer comes back: the next run moves every message to it.
    let mut consumer = watch(&ch, ORIGIN).await;
    let s = executor.run(&playbook, request()).await.expect("run");
    assert_eq!(s.outcome, Outcome::Succeeded, "{s:?}");
    let redrive = s
        .steps
        .iter()
        .find(|st| st.step == "redrive")
        .expect("redrive step");
    assert_eq!(redrive.outcome, "succeeded", "{redrive:?}");
    assert_eq!(redrive.output["moved"], 40, "{redrive:?}");
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < 40 {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a redriven message within 10 s")
            .expect("stream")
            .expect("delivery");
        ids.insert(d.properties.message_id().clone().expect("id").to_string());
    }
    assert_eq!(ids.len(), 40);
    assert_eq!(depth(&ch, DLQ).await, 0);
    assert_eq!(s.changes.len(), 1, "one change recorded: {:?}", s.changes);

    // The cooldown keeps the next trigger from redriving again straight away.
    let s = executor.run(&playbook, request()).await.expect("run");
    assert_eq!(s.outcome, Outcome::Cooldown);
}
