//! Kafka over rdkafka: per configured connection one idempotent producer and one offsets client
//! per consumer group, shared by every call; per adapter instance one group-less consumer per
//! topic and group.
//!
//! Consumers never join their group. They are assigned every partition at the group's committed
//! offsets, and commits go out as a standalone consumer's would (no generation), which is meant
//! for a group nobody else consumes in, such as the `qmedic-redrive.<topic>` groups the adapter
//! reads dead-letter topics with. So a replay never triggers a rebalance, and a run killed
//! mid-move leaves no member behind for the next run to wait on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::host::WitError;
use crate::host::bindings::adapter::qmedic::plugin::kafka::{
    GroupInfo, KafkaRecord, PartitionOffsets, Producing,
};

/// After the first record of a batch, how long `consume` waits for each further one. Records
/// librdkafka has already fetched arrive at once; this only ends a batch at a quiet partition.
const BATCH_LINGER: Duration = Duration::from_millis(5);
/// Longest a metadata, offset or commit request may take, within the call's deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The group name of the client that reads metadata and watermarks; it never joins or commits.
const METADATA_GROUP: &str = "qmedic-metadata";

/// The Kafka side of a connection: its bootstrap servers and the clients shared by every call.
pub(crate) struct KafkaPool {
    bootstrap: Option<String>,
    producer: Mutex<Option<FutureProducer>>,
    /// Clients that read offsets and commit for one group each, by group name.
    groups: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

impl KafkaPool {
    /// `url` is the connection's `kafka://host:port[,host:port...]`; other URLs leave the pool
    /// without servers, and Kafka calls on it say so.
    pub(crate) fn new(url: Option<&str>, username: Option<&str>) -> Result<Self, String> {
        let bootstrap = match url.and_then(|u| u.strip_prefix("kafka://")) {
            None => None,
            Some(rest) => {
                if username.is_some() {
                    return Err(
                        "Kafka connections with credentials (SASL) are not supported yet; \
                         remove username and password or reach the brokers on a listener \
                         without authentication"
                            .into(),
                    );
                }
                Some(bootstrap_servers(rest)?)
            }
        };
        Ok(KafkaPool {
            bootstrap,
            producer: Mutex::new(None),
            groups: Mutex::new(HashMap::new()),
        })
    }

    fn config(&self, conn: &str) -> Result<ClientConfig, WitError> {
        let servers = self.bootstrap.as_deref().ok_or_else(|| {
            WitError::Invalid(format!(
                "connection `{conn}` has no kafka:// url; set `url: kafka://host:9092` in the config"
            ))
        })?;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", servers)
            .set("client.id", "qmedic")
            .set("log_level", "3");
        Ok(config)
    }

    /// The connection's producer: idempotent (so librdkafka's retries never duplicate a record)
    /// with `acks=all`. Calls hand it whole batches, so lingering only delays: 1 ms measured
    /// fastest in the replay benchmark (5 ms: 0.78× of it; 0 ms: 0.87×).
    fn producer(&self, conn: &str) -> Result<FutureProducer, WitError> {
        let mut guard = self
            .producer
            .lock()
            .map_err(|_| WitError::Internal(format!("Kafka producer of `{conn}` is poisoned")))?;
        if let Some(p) = guard.as_ref() {
            return Ok(p.clone());
        }
        let producer: FutureProducer = self
            .config(conn)?
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "60000")
            .create()
            .map_err(|e| unavailable(conn, "cannot create a producer", &e))?;
        *guard = Some(producer.clone());
        Ok(producer)
    }

    fn forget_producer(&self) {
        if let Ok(mut guard) = self.producer.lock() {
            *guard = None;
        }
    }

    /// The client that reads and commits `group`'s offsets (or only metadata, for `None`).
    fn group_client(&self, conn: &str, group: Option<&str>) -> Result<Arc<BaseConsumer>, WitError> {
        let group = group.unwrap_or(METADATA_GROUP);
        let mut groups = self
            .groups
            .lock()
            .map_err(|_| WitError::Internal(format!("Kafka clients of `{conn}` are poisoned")))?;
        if let Some(c) = groups.get(group) {
            // Nothing else polls these clients: serve the events (errors, logs) librdkafka
            // queued since the last use, so they do not pile up. It never waits.
            let _ = c.poll(Duration::ZERO);
            return Ok(c.clone());
        }
        let client: BaseConsumer = self
            .config(conn)?
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| unavailable(conn, "cannot create a client", &e))?;
        let client = Arc::new(client);
        groups.insert(group.to_string(), client.clone());
        Ok(client)
    }

    /// A new consumer of `topic` for `group`, assigned every partition at the group's committed
    /// offsets (the oldest record where it has none).
    async fn consumer(
        &self,
        conn: &str,
        topic: &str,
        group: &str,
        timeout: Duration,
    ) -> Result<StreamConsumer, WitError> {
        let mut config = self.config(conn)?;
        let (conn, topic, group) = (conn.to_string(), topic.to_string(), group.to_string());
        blocking(move || assigned_consumer(&mut config, &conn, &topic, &group, timeout)).await
    }

    /// Every partition of `topic` with its watermarks and `group`'s committed offsets.
    pub(crate) async fn offsets(
        &self,
        conn: &str,
        topic: &str,
        group: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<PartitionOffsets>, WitError> {
        let client = self.group_client(conn, group)?;
        let has_group = group.is_some();
        let (conn, topic) = (conn.to_string(), topic.to_string());
        blocking(move || {
            // One deadline for every request of this call, however many partitions there are.
            let deadline = Instant::now() + timeout.min(REQUEST_TIMEOUT);
            let left = || deadline.saturating_duration_since(Instant::now());
            let ids = partitions(&*client, &conn, &topic, left())?;
            let committed = if has_group {
                committed_offsets(&*client, &conn, &topic, &ids, left())?
            } else {
                HashMap::new()
            };
            ids.into_iter()
                .map(|p| {
                    let (low, high) = client
                        .fetch_watermarks(&topic, p, left())
                        .map_err(|e| failed(&conn, &topic, "cannot read watermarks", &e))?;
                    Ok(PartitionOffsets {
                        partition: p as u32,
                        low: low.max(0) as u64,
                        high: high.max(0) as u64,
                        committed: committed.get(&p).copied(),
                    })
                })
                .collect()
        })
        .await
    }

    /// Topic names, internal ones left out.
    pub(crate) async fn topics(
        &self,
        conn: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, WitError> {
        let client = self.group_client(conn, None)?;
        let conn = conn.to_string();
        blocking(move || {
            let metadata = client
                .fetch_metadata(None, timeout.min(REQUEST_TIMEOUT))
                .map_err(|e| unavailable(&conn, "cannot read the cluster's metadata", &e))?;
            let mut names: Vec<String> = metadata
                .topics()
                .iter()
                .map(|t| t.name().to_string())
                .filter(|n| !n.starts_with("__"))
                .collect();
            names.sort();
            Ok(names)
        })
        .await
    }

    /// A group's state and member count, as its coordinator reports them.
    pub(crate) async fn describe_group(
        &self,
        conn: &str,
        group: &str,
        timeout: Duration,
    ) -> Result<GroupInfo, WitError> {
        let client = self.group_client(conn, None)?;
        let (conn, group) = (conn.to_string(), group.to_string());
        blocking(move || {
            let list = client
                .fetch_group_list(Some(&group), timeout.min(REQUEST_TIMEOUT))
                .map_err(|e| unavailable(&conn, &format!("cannot describe group `{group}`"), &e))?;
            Ok(match list.groups().iter().find(|g| g.name() == group) {
                Some(g) => GroupInfo {
                    state: g.state().to_string(),
                    members: g.members().len() as u32,
                },
                None => GroupInfo {
                    state: "Dead".into(),
                    members: 0,
                },
            })
        })
        .await
    }

    /// Produce every record and wait for all their delivery reports together.
    pub(crate) async fn produce(
        &self,
        conn: &str,
        records: Vec<Producing>,
        timeout: Duration,
    ) -> Result<(), WitError> {
        let producer = self.producer(conn)?;
        let deadline = Instant::now() + timeout;
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (key, value) in &r.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&r.topic).headers(headers);
            if let Some(key) = &r.key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = &r.value {
                record = record.payload(value.as_slice());
            }
            if let Some(p) = r.partition {
                record = record.partition(partition_id(p)?);
            }
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push((r.topic.as_str(), delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // librdkafka's queue is full: let it drain before handing it more.
                        if Instant::now() >= deadline {
                            return Err(WitError::Unavailable(format!(
                                "connection `{conn}`: the producer's queue stayed full until the \
                                 call's deadline; the brokers are not taking records"
                            )));
                        }
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        return Err(failed(
                            conn,
                            &r.topic,
                            "cannot hand a record to the producer",
                            &e,
                        ));
                    }
                }
            }
        }
        let reports = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            futures_util::future::join_all(pending.into_iter().map(|(topic, d)| async move {
                (topic, d.await)
            })),
        )
        .await
        .map_err(|_| {
            WitError::Unavailable(format!(
                "connection `{conn}`: not every record was acknowledged before the call's deadline; \
                 the batch may be partly written, so its source must stay unsettled"
            ))
        })?;
        for (topic, report) in reports {
            match report {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    if producer.client().fatal_error().is_some() {
                        // An idempotent producer that hit a fatal error refuses everything
                        // after; the next call gets a new one.
                        self.forget_producer();
                    }
                    return Err(failed(
                        conn,
                        topic,
                        "the broker did not accept a record",
                        &e,
                    ));
                }
                Err(_) => {
                    return Err(WitError::Unavailable(format!(
                        "connection `{conn}`: the producer shut down before a record to `{topic}` \
                         was acknowledged"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Commit `group`'s next offsets in `topic`, partition by partition.
    pub(crate) async fn commit(
        &self,
        conn: &str,
        topic: &str,
        group: &str,
        offsets: Vec<(u32, u64)>,
        timeout: Duration,
    ) -> Result<(), WitError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let client = self.group_client(conn, Some(group))?;
        let mut list = TopicPartitionList::new();
        for (p, o) in offsets {
            let offset = i64::try_from(o)
                .map_err(|_| WitError::Invalid(format!("offset {o} is out of Kafka's range")))?;
            list.add_partition_offset(topic, partition_id(p)?, Offset::Offset(offset))
                .map_err(|e| failed(conn, topic, "cannot build the commit", &e))?;
        }
        let limit = timeout.min(REQUEST_TIMEOUT);
        let (c, t, g) = (conn.to_string(), topic.to_string(), group.to_string());
        let commit = blocking(move || {
            client.commit(&list, CommitMode::Sync).map_err(|e| {
                let what = format!(
                    "cannot commit group `{g}`'s offsets (does another consumer use this group?)"
                );
                failed(&c, &t, &what, &e)
            })
        });
        tokio::time::timeout(limit, commit).await.map_err(|_| {
            WitError::Unavailable(format!(
                "connection `{conn}`, topic `{topic}`: group `{group}`'s commit was not confirmed \
                 within {limit:?}; the records it covers are written, and are read again if it \
                 did not land"
            ))
        })?
    }
}

/// One adapter instance's consumers, by connection, topic and group. Dropped with the instance,
/// which leaves every uncommitted record for the next reader.
#[derive(Default)]
pub(crate) struct KafkaSession {
    consumers: HashMap<(String, String, String), Arc<StreamConsumer>>,
}

impl Drop for KafkaSession {
    /// Closing a consumer waits for librdkafka; do it off the async workers.
    fn drop(&mut self) {
        let consumers = std::mem::take(&mut self.consumers);
        if consumers.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || drop(consumers));
            }
            Err(_) => drop(consumers),
        }
    }
}

/// Which consumer of a session: a topic read for a group on a connection.
pub(crate) struct Reader<'a> {
    pub(crate) conn: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) group: &'a str,
}

impl KafkaSession {
    /// Up to `max` records for `reader`, waiting at most `wait` for the first; `left` is what
    /// remains of the call's time, for opening the consumer.
    pub(crate) async fn consume(
        &mut self,
        pool: &KafkaPool,
        reader: Reader<'_>,
        max: u32,
        wait: Duration,
        left: Duration,
    ) -> Result<Vec<KafkaRecord>, WitError> {
        let Reader { conn, topic, group } = reader;
        let key = (conn.to_string(), topic.to_string(), group.to_string());
        let consumer = match self.consumers.get(&key) {
            Some(c) => c.clone(),
            None => {
                let timeout = left.min(REQUEST_TIMEOUT);
                let consumer = pool.consumer(conn, topic, group, timeout).await?;
                let consumer = Arc::new(consumer);
                self.consumers.insert(key.clone(), consumer.clone());
                consumer
            }
        };
        let mut records = Vec::new();
        let mut limit = wait;
        while records.len() < max as usize {
            // A record librdkafka already holds is taken without arming a timer.
            let next = match consumer.recv().now_or_never() {
                Some(ready) => Ok(ready),
                None => tokio::time::timeout(limit, consumer.recv()).await,
            };
            let next = match next {
                Err(_) => break,
                // Records already taken are returned and the consumer goes on; if the error
                // lasts, the next call meets it with none. Then the consumer is dropped, so the
                // call after starts again at the committed offsets and nothing this consumer
                // skipped can be committed past.
                Ok(Err(_)) if !records.is_empty() => break,
                Ok(Err(e)) => {
                    self.consumers.remove(&key);
                    return Err(failed(conn, topic, "cannot fetch records", &e));
                }
                Ok(Ok(m)) => m,
            };
            records.push(KafkaRecord {
                partition: next.partition() as u32,
                offset: next.offset().max(0) as u64,
                key: next.key().map(<[u8]>::to_vec),
                value: next.payload().map(<[u8]>::to_vec),
                headers: next
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
                timestamp_ms: next
                    .timestamp()
                    .to_millis()
                    .and_then(|t| u64::try_from(t).ok()),
            });
            limit = BATCH_LINGER;
        }
        Ok(records)
    }
}

/// A consumer of `topic` for `group`, assigned every partition at the group's committed offsets
/// (the oldest record where it has none). It never joins the group.
fn assigned_consumer(
    config: &mut ClientConfig,
    conn: &str,
    topic: &str,
    group: &str,
    timeout: Duration,
) -> Result<StreamConsumer, WitError> {
    let consumer: StreamConsumer = config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| unavailable(conn, "cannot create a consumer", &e))?;
    let ids = partitions(&consumer, conn, topic, timeout)?;
    let committed = committed_offsets(&consumer, conn, topic, &ids, timeout)?;
    let mut assignment = TopicPartitionList::new();
    for p in ids {
        let start = match committed.get(&p) {
            Some(&o) => Offset::Offset(o as i64),
            None => Offset::Beginning,
        };
        assignment
            .add_partition_offset(topic, p, start)
            .map_err(|e| failed(conn, topic, "cannot assign a partition", &e))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| failed(conn, topic, "cannot assign the topic's partitions", &e))?;
    Ok(consumer)
}

/// The consumer group's committed offsets (the next record it reads) on `ids` of `topic`, where
/// it has one; the client's `group.id` names the group.
fn committed_offsets<C: Consumer>(
    client: &C,
    conn: &str,
    topic: &str,
    ids: &[i32],
    timeout: Duration,
) -> Result<HashMap<i32, u64>, WitError> {
    let mut wanted = TopicPartitionList::new();
    for p in ids {
        wanted.add_partition(topic, *p);
    }
    let answer = client
        .committed_offsets(wanted, timeout)
        .map_err(|e| failed(conn, topic, "cannot read the group's committed offsets", &e))?;
    Ok(answer
        .elements_for_topic(topic)
        .into_iter()
        .filter_map(|elem| match elem.offset() {
            Offset::Offset(o) if o >= 0 => Some((elem.partition(), o as u64)),
            _ => None,
        })
        .collect())
}

/// The partition ids of `topic`; `not-found` when the cluster does not know it.
fn partitions<C: Consumer>(
    client: &C,
    conn: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, WitError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| failed(conn, topic, "cannot read the topic's metadata", &e))?;
    let missing = || {
        WitError::NotFound(format!(
            "topic `{topic}` does not exist on connection `{conn}`"
        ))
    };
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(missing)?;
    if let Some(code) = t.error() {
        let code = RDKafkaErrorCode::from(code);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition {
            return Err(missing());
        }
        let e = KafkaError::MetadataFetch(code);
        return Err(failed(
            conn,
            topic,
            "the cluster's metadata has an error",
            &e,
        ));
    }
    if t.partitions().is_empty() {
        return Err(missing());
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// A partition number as librdkafka takes it.
fn partition_id(p: u32) -> Result<i32, WitError> {
    i32::try_from(p)
        .map_err(|_| WitError::Invalid(format!("partition {p} is out of Kafka's range")))
}

/// `kafka://` addresses as librdkafka's `bootstrap.servers`.
fn bootstrap_servers(rest: &str) -> Result<String, String> {
    let servers: Vec<&str> = rest
        .trim_end_matches('/')
        .split(',')
        .map(str::trim)
        .collect();
    for s in &servers {
        let port_ok = s
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!(
                "`{s}` in url `kafka://{rest}` is not host:port; write kafka://host:9092[,host2:9092]"
            ));
        }
    }
    Ok(servers.join(","))
}

/// Run a blocking rdkafka request off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WitError> + Send + 'static,
) -> Result<T, WitError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WitError::Internal(format!("a Kafka request panicked: {e}")))?
}

fn unavailable(conn: &str, what: &str, e: &KafkaError) -> WitError {
    WitError::Unavailable(format!("connection `{conn}`: {what}: {e}"))
}

/// A failure on `topic`, classified by what retrying can do about it.
fn failed(conn: &str, topic: &str, what: &str, e: &KafkaError) -> WitError {
    let text = format!("connection `{conn}`, topic `{topic}`: {what}: {e}");
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            WitError::NotFound(text)
        }
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed,
        ) => WitError::Denied(text),
        Some(
            RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidPartitions
            | RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::InvalidRecord,
        ) => WitError::Invalid(text),
        _ => WitError::Unavailable(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_servers_take_a_list_of_host_ports() {
        assert_eq!(
            bootstrap_servers("a:9092, b:9093/").as_deref(),
            Ok("a:9092,b:9093")
        );
        for bad in ["a", ":9092", "a:port", "a:9092,"] {
            assert!(
                bootstrap_servers(bad)
                    .unwrap_err()
                    .contains("not host:port"),
                "{bad}"
            );
        }
    }

    #[test]
    fn credentials_are_refused_until_sasl_is_supported() {
        let err = KafkaPool::new(Some("kafka://h:9092"), Some("u"))
            .err()
            .unwrap();
        assert!(err.contains("SASL"), "{err}");
    }

    #[test]
    fn other_urls_leave_the_pool_without_servers() {
        let pool = KafkaPool::new(Some("amqp://h/"), None).unwrap();
        let err = pool.config("c").err().unwrap();
        assert!(matches!(err, WitError::Invalid(m) if m.contains("kafka://")));
    }
}
