//! The Kafka adapter's `stats` against the local Kafka-protocol broker: lag per partition and
//! the Burrow-style trend, each status reached by driving a group into it. Fixtures are written
//! one record per batch so the broker's high watermarks are right (see `qmedic_tests::kafka`).

use qmedic::{QueueStats, Runtime};
use qmedic_tests::kafka::{
    Batching, Member, Record, commit, connection_yaml, create_topic, produce, unique,
};
use qmedic_tests::runtime;

const PARTITIONS: i32 = 3;

fn agent() -> Runtime {
    runtime(&connection_yaml())
}

/// `count` records on each of `partitions`, keyed `<tag>-<partition>-<i>`.
async fn fill(topic: &str, partitions: &[i32], count: usize, tag: &str) {
    let records: Vec<Record> = partitions
        .iter()
        .flat_map(|&p| {
            (0..count).map(move |i| Record::text(Some(p), &format!("{tag}-{p}-{i}"), "v"))
        })
        .collect();
    produce(topic, &records, Batching::OnePerBatch).await;
}

async fn stats(rt: &Runtime, topic: &str, group: &str) -> QueueStats {
    rt.stats("kafka", &format!("{topic}:{group}"))
        .await
        .expect("stats")
}

fn extra(s: &QueueStats, name: &str) -> Option<f64> {
    s.extra.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn lags(s: &QueueStats) -> Vec<u64> {
    (0..PARTITIONS)
        .map(|p| extra(s, &format!("lag.{p}")).expect("lag of every partition") as u64)
        .collect()
}

/// A topic with `PARTITIONS` partitions and a group name for it.
async fn topic_and_group(name: &str) -> (String, String) {
    let topic = unique(name);
    create_topic(&topic, PARTITIONS).await;
    let group = format!("{topic}-group");
    (topic, group)
}

#[tokio::test]
async fn lag_per_partition_is_produced_minus_committed() {
    let rt = agent();
    let (topic, group) = topic_and_group("qmedic-lag").await;

    // Nothing committed yet: every record counts.
    fill(&topic, &[0], 10, "a").await;
    fill(&topic, &[1], 4, "a").await;
    let s = stats(&rt, &topic, &group).await;
    assert_eq!(lags(&s), [10, 4, 0]);
    assert_eq!(s.depth, 14);
    assert_eq!(extra(&s, "partitions"), Some(3.0));
    assert_eq!(s.consumers, Some(0));

    commit(&group, &topic, &[(0, 7), (1, 4)]).await;
    let s = stats(&rt, &topic, &group).await;
    assert_eq!(lags(&s), [3, 0, 0]);
    assert_eq!(s.depth, 3);

    fill(&topic, &[1, 2], 5, "b").await;
    commit(&group, &topic, &[(2, 2)]).await;
    let s = stats(&rt, &topic, &group).await;
    assert_eq!(lags(&s), [10 - 7, 9 - 4, 5 - 2]);
    assert_eq!(s.depth, 3 + 5 + 3);

    // A bare topic reports the records in it and no group figures.
    let bare = rt.stats("kafka", &topic).await.expect("stats");
    assert_eq!(bare.depth, 24);
    assert_eq!((bare.consumers, bare.trend.as_deref()), (None, None));
}

#[tokio::test]
async fn a_group_that_caught_up_is_ok() {
    let rt = agent();
    let (topic, group) = topic_and_group("qmedic-trend-ok").await;
    fill(&topic, &[0, 1, 2], 4, "a").await;
    commit(&group, &topic, &[(0, 2), (1, 2), (2, 2)]).await;
    assert_eq!(
        stats(&rt, &topic, &group).await.trend,
        None,
        "one reading is no trend"
    );
    assert_eq!(stats(&rt, &topic, &group).await.trend, None);
    commit(&group, &topic, &[(0, 4), (1, 4), (2, 4)]).await;
    let s = stats(&rt, &topic, &group).await;
    assert_eq!(s.depth, 0);
    assert_eq!(s.trend.as_deref(), Some("OK"));
}

#[tokio::test]
async fn lag_growing_while_the_group_commits_is_warn() {
    let rt = agent();
    let (topic, group) = topic_and_group("qmedic-trend-warn").await;
    fill(&topic, &[0], 5, "a").await;
    commit(&group, &topic, &[(0, 1)]).await;
    let mut seen = Vec::new();
    for round in 0..3 {
        // Each round the group commits 1 more record while 3 more arrive.
        let s = stats(&rt, &topic, &group).await;
        seen.push(lags(&s)[0]);
        fill(&topic, &[0], 3, &format!("r{round}")).await;
        commit(&group, &topic, &[(0, 2 + round)]).await;
    }
    let s = stats(&rt, &topic, &group).await;
    seen.push(lags(&s)[0]);
    assert_eq!(seen, [4, 6, 8, 10], "lag as produced minus committed");
    assert_eq!(s.trend.as_deref(), Some("WARN"));
    assert_eq!(extra(&s, "trend.WARN.0"), Some(1.0));
}

#[tokio::test]
async fn a_member_that_never_commits_while_lag_waits_is_stall() {
    let rt = agent();
    let (topic, group) = topic_and_group("qmedic-trend-stall").await;
    fill(&topic, &[0, 1], 6, "a").await;
    commit(&group, &topic, &[(0, 2), (1, 6)]).await;
    let member = Member::join(&group, &topic);
    let mut last = None;
    for _ in 0..3 {
        let s = stats(&rt, &topic, &group).await;
        assert!(s.consumers >= Some(1), "the member counts: {s:?}");
        last = Some(s);
    }
    let s = last.expect("three readings");
    assert_eq!(lags(&s), [4, 0, 0]);
    assert_eq!(s.trend.as_deref(), Some("STALL"));
    assert_eq!(extra(&s, "trend.STALL.0"), Some(1.0));
    drop(member);
}

#[tokio::test]
async fn lag_with_no_member_and_no_commits_is_stop() {
    let rt = agent();
    let (topic, group) = topic_and_group("qmedic-trend-stop").await;
    fill(&topic, &[2], 5, "a").await;
    commit(&group, &topic, &[(2, 1)]).await;
    let mut trend = None;
    for i in 0..3 {
        // Records keep arriving; nobody reads them.
        fill(&topic, &[2], 1, &format!("late{i}")).await;
        let s = stats(&rt, &topic, &group).await;
        assert_eq!(s.consumers, Some(0));
        trend = s.trend;
    }
    assert_eq!(trend.as_deref(), Some("STOP"));
}

#[tokio::test]
async fn a_committed_offset_going_back_is_rewind() {
    let rt = agent();
    let (topic, group) = topic_and_group("qmedic-trend-rewind").await;
    fill(&topic, &[1], 20, "a").await;
    commit(&group, &topic, &[(1, 15)]).await;
    stats(&rt, &topic, &group).await;
    commit(&group, &topic, &[(1, 5)]).await;
    stats(&rt, &topic, &group).await;
    commit(&group, &topic, &[(1, 8)]).await;
    let s = stats(&rt, &topic, &group).await;
    assert_eq!(lags(&s), [0, 12, 0]);
    assert_eq!(s.trend.as_deref(), Some("REWIND"));
    assert_eq!(extra(&s, "trend.REWIND.1"), Some(1.0));
}

#[tokio::test]
async fn a_missing_topic_is_not_found() {
    let rt = agent();
    let err = rt
        .stats("kafka", "qmedic-no-such-topic:g")
        .await
        .expect_err("no such topic");
    assert!(
        err.to_string().contains("qmedic-no-such-topic"),
        "the error names the topic: {err}"
    );
}
