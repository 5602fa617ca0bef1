//! The Kafka-protocol broker on 127.0.0.1:9092 (tansu, started by `scripts/services.sh`), for
//! tests and benchmarks: topics are made, filled, committed and read back with rdkafka
//! directly, independently of qmedic.
//!
//! tansu 0.6 mishandles record batches of more than one record in two ways: its high watermark
//! counts batches, not records, and a fetch from an offset inside such a batch skips the rest of
//! the batch (and further reads can repeat records). Real Kafka does neither. Offsets, commits and
//! fetches from a batch's first record are right. So every fixture a test reads watermarks of, or
//! that a reader resumes inside (a dead-letter topic replayed again after a kill), is written one
//! record per batch ([`Batching::OnePerBatch`]); topics read once from the start may be batched.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// The broker's address.
pub const BOOTSTRAP: &str = "127.0.0.1:9092";

/// A `connections:` entry named `kafka` for the local broker.
pub fn connection_yaml() -> String {
    format!("connections:\n  kafka:\n    kind: kafka\n    url: kafka://{BOOTSTRAP}\n")
}

fn client() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", BOOTSTRAP).set("log_level", "3");
    c
}

/// A topic name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Create `topic` with `partitions` partitions.
pub async fn create_topic(topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client()
        .create()
        .expect("Kafka admin client for 127.0.0.1:9092 (scripts/services.sh starts tansu)");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

/// A record to write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// A record with a text key and value and no headers, to `partition` if given.
    pub fn text(partition: Option<i32>, key: &str, value: &str) -> Record {
        Record {
            partition,
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
        }
    }
}

/// How the fixture producer groups records.
#[derive(Debug, Clone, Copy)]
pub enum Batching {
    /// As librdkafka likes: fast.
    Batched,
    /// One record per batch, so tansu's watermarks and mid-topic fetches stay right.
    OnePerBatch,
}

/// Write `records` to `topic` and wait until every one is acknowledged.
pub async fn produce(topic: &str, records: &[Record], batching: Batching) {
    let mut config = client();
    config
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    if let Batching::OnePerBatch = batching {
        config.set("batch.num.messages", "1");
    }
    let producer: FutureProducer = config.create().expect("producer");
    for chunk in records.chunks(5_000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for r in chunk {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
            if let Some(k) = &r.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                record = record.payload(v.as_slice());
            }
            if let Some(p) = r.partition {
                record = record.partition(p);
            }
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        for d in futures_util::future::join_all(pending).await {
            d.expect("delivery report")
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
    }
}

/// Commit `group`'s offsets on `topic` from outside the group: (partition, next offset).
pub async fn commit(group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let mut list = TopicPartitionList::new();
    for &(p, o) in offsets {
        list.add_partition_offset(topic, p, Offset::Offset(o))
            .expect("offset");
    }
    let consumer: BaseConsumer = client()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
        .await
        .expect("join")
        .expect("commit");
}

/// `group`'s committed offsets on `topic`'s partitions, -1 where it has none.
pub async fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let consumer: BaseConsumer = client().set("group.id", group).create().expect("consumer");
    let answer = tokio::task::spawn_blocking(move || {
        consumer.committed_offsets(list, Duration::from_secs(10))
    })
    .await
    .expect("join")
    .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match answer.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect()
}

/// Every record of `topic`'s `partitions` from the start, reading until `expected` have come
/// or nothing more came for `quiet`.
pub async fn read_all(
    topic: &str,
    partitions: i32,
    expected: usize,
    quiet: Duration,
) -> Vec<(i32, i64, Record)> {
    let consumer: BaseConsumer = client()
        .set("group.id", unique("qmedic-test-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&list).expect("assign");
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut last = Instant::now();
        while out.len() < expected && last.elapsed() < quiet {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last = Instant::now();
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push((
                        m.partition(),
                        m.offset(),
                        Record {
                            partition: Some(m.partition()),
                            key: m.key().map(<[u8]>::to_vec),
                            value: m.payload().map(<[u8]>::to_vec),
                            headers,
                        },
                    ));
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out
    })
    .await
    .expect("join")
}

/// How many times each key occurs among `records`.
pub fn key_counts(records: &[(i32, i64, Record)]) -> HashMap<Vec<u8>, u32> {
    let mut counts = HashMap::new();
    for (_, _, r) in records {
        *counts.entry(r.key.clone().unwrap_or_default()).or_insert(0) += 1;
    }
    counts
}

/// A live member of a consumer group: it joins, keeps polling (so it stays a member) and
/// never commits. Dropping it leaves the group.
pub struct Member {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    /// Join `group` on `topic`; returns once the coordinator counts it as a member.
    pub fn join(group: &str, topic: &str) -> Member {
        let consumer: BaseConsumer = client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(50));
            }
            consumer.unsubscribe();
        });
        let member = Member {
            stop,
            thread: Some(thread),
        };
        let started = Instant::now();
        loop {
            let admin: BaseConsumer = client().create().expect("client");
            let members = admin
                .fetch_group_list(Some(group), Duration::from_secs(5))
                .ok()
                .and_then(|l| {
                    l.groups()
                        .iter()
                        .find(|g| g.name() == group)
                        .map(|g| g.members().len())
                })
                .unwrap_or(0);
            if members > 0 {
                return member;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "group {group} did not get a member"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
