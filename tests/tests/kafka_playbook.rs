//! The shipped `playbooks/kafka-dlq-replay.yaml` against the local Kafka-protocol broker: it
//! warns while the consumer group is stalled and leaves the dead letters alone, then replays
//! them all once the group is OK.

use std::time::Duration;

use qmedic::playbook::{Outcome, RunSummary};
use qmedic::store::StepRecord;
use qmedic_tests::kafka::{
    Batching, Member, Record, commit, connection_yaml, create_topic, key_counts, produce, read_all,
    unique,
};
use qmedic_tests::{run_request, shipped_playbook};

fn step<'a>(s: &'a RunSummary, id: &str) -> &'a StepRecord {
    s.steps
        .iter()
        .find(|st| st.step == id)
        .unwrap_or_else(|| panic!("no step {id}: {s:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_replay_playbook_warns_on_a_stall_and_replays_once_the_group_is_ok() {
    let topic = unique("qmedic-pb");
    let dlq = format!("{topic}.dlq");
    let group = format!("{topic}-consumer");
    create_topic(&topic, 1).await;
    create_topic(&dlq, 1).await;
    let main: Vec<Record> = (0..10)
        .map(|i| Record::text(Some(0), &format!("order-{i}"), "o"))
        .collect();
    produce(&topic, &main, Batching::OnePerBatch).await;
    let dead: Vec<Record> = (0..30)
        .map(|i| {
            let mut r = Record::text(Some(0), &format!("dead-{i}"), "d");
            r.headers
                .push(("x-original-topic".into(), topic.as_bytes().to_vec()));
            r
        })
        .collect();
    produce(&dlq, &dead, Batching::OnePerBatch).await;
    commit(&group, &topic, &[(0, 4)]).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let (executor, playbook) =
        shipped_playbook(&connection_yaml(), "kafka-dlq-replay", dir.path()).await;
    let params = [
        ("connection", "kafka"),
        ("topic", topic.as_str()),
        ("group", group.as_str()),
        ("dlq", dlq.as_str()),
    ];

    // A member holds the group but commits nothing while 6 records wait: after three readings
    // the trend is STALL, the run warns, and nothing is replayed.
    let member = Member::join(&group, &topic);
    let mut last = None;
    for _ in 0..3 {
        let s = executor
            .run(&playbook, run_request(&params, false))
            .await
            .expect("run");
        assert_eq!(s.outcome, Outcome::Succeeded, "{s:?}");
        assert_eq!(step(&s, "replay").outcome, "skipped");
        last = Some(s);
    }
    let s = last.expect("three runs");
    assert_eq!(step(&s, "health").output, "STALL", "{s:?}");
    let warning = &step(&s, "health").log;
    assert!(
        warning
            .iter()
            .any(|l| l.starts_with("warning: ") && l.contains("is stalled")),
        "{warning:?}"
    );
    assert!(
        read_all(&topic, 1, 11, Duration::from_secs(2)).await.len() == 10,
        "nothing replayed while the group stalls"
    );

    // The group catches up: the trend is OK and every dead letter goes back.
    drop(member);
    commit(&group, &topic, &[(0, 10)]).await;
    let s = executor
        .run(&playbook, run_request(&params, false))
        .await
        .expect("run");
    assert_eq!(s.outcome, Outcome::Succeeded, "{s:?}");
    assert_eq!(step(&s, "health").output, "OK", "{s:?}");
    let replay = step(&s, "replay");
    assert_eq!(replay.outcome, "succeeded", "{replay:?}");
    assert_eq!(replay.output["moved"], 30, "{replay:?}");
    let counts = key_counts(&read_all(&topic, 1, 41, Duration::from_secs(5)).await);
    assert_eq!(counts.len(), 40);
    assert!((0..30).all(|i| counts.get(format!("dead-{i}").as_bytes()) == Some(&1)));
}
