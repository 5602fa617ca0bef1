//! The Kafka adapter: broker-neutral `broker` calls in Kafka's terms of offsets and lag.
//!
//! A queue is a topic, or `topic:group` where a consumer group matters (Kafka topic names
//! cannot hold `:`).
//! - `stats` on `topic:group`: depth is the group's total lag (high watermark minus committed
//!   offset, summed over partitions; a partition the group never committed on counts every
//!   record in it), consumers the group's members, `extra` holds `partitions`, `members` and
//!   `lag.<partition>`, and `trend` the Burrow-style verdict of [`trend`] once three readings
//!   are in. In-flight is 0: Kafka does not tell what a group fetched and has not committed.
//!   On a bare `topic`: depth is the records in the log, consumers unknown (so an action's
//!   "destination has no consumers" check never refuses a topic), no trend.
//! - `receive` reads `topic` for group `topic:group`, by default `qmedic-redrive.<topic>`,
//!   without joining the group (see the host's `kafka` interface). Each message's `id` is the
//!   record key as text; the key itself travels in the `kafka.key` header (`kafka.key-hex` when
//!   it is not UTF-8), headers whose value is not UTF-8 or whose name starts with `kafka.` as
//!   `kafka.hex.<name>`, a null value as `kafka.null-value`, and the record's place as
//!   `kafka.partition` and `kafka.offset`.
//! - `publish` produces to each message's destination topic through the idempotent producer
//!   and returns once every record is written to all in-sync replicas. It restores the key,
//!   hex-carried headers and null values and drops the other `kafka.*` headers, so a replayed
//!   record arrives with the key, value and headers it left with (a null header value arrives
//!   empty; the timestamp is the new write's).
//! - `settle`: see [`ledger`]. `ack` commits each partition up to its first record still
//!   unsettled; `requeue` writes the records again at the end of their topic (confirmed), then
//!   settles them like an ack; `dead-letter` is refused: Kafka has no broker-side
//!   dead-lettering.
//! - `origin` of a dead-lettered record is the first of the `x-original-topic`, Kafka Connect's
//!   `__connect.errors.topic` and Spring's `kafka_dlt-original-topic` headers it carries.

mod ledger;
mod trend;

use std::cell::RefCell;

use qmedic_plugin_sdk::kafka::{self, KafkaRecord, Producing};
use qmedic_plugin_sdk::{
    Adapter, Error, Message, Outgoing, QueueStats, Settlement, clock, export_adapter, glob, log,
    state,
};

use ledger::{Held, Ledger, Place};
use trend::{Observation, Reading, Trend, Verdict, WINDOW};

thread_local! {
    static LEDGER: RefCell<Ledger> = RefCell::new(Ledger::default());
}

/// Headers that name the topic a dead-lettered record came from, in the order they are tried.
const ORIGIN_HEADERS: &[&str] = &[
    "x-original-topic",
    "__connect.errors.topic",
    "kafka_dlt-original-topic",
];
const KEY_HEADER: &str = "kafka.key";
const KEY_HEX_HEADER: &str = "kafka.key-hex";
const HEX_PREFIX: &str = "kafka.hex.";
const NULL_VALUE_HEADER: &str = "kafka.null-value";

/// A topic and the consumer group it is read for.
fn split(queue: &str) -> (&str, Option<&str>) {
    match queue.split_once(':') {
        Some((topic, group)) if !group.is_empty() => (topic, Some(group)),
        Some((topic, _)) => (topic, None),
        None => (queue, None),
    }
}

/// The group `receive` uses when the queue names none.
fn default_group(topic: &str) -> String {
    format!("qmedic-redrive.{topic}")
}

/// A record as a broker-neutral message. Header values that are not UTF-8, and headers whose
/// own name starts with `kafka.`, travel hex-encoded as `kafka.hex.<name>`, so `publish` can
/// restore every header exactly.
fn message(topic: &str, record: &KafkaRecord, handle: u64) -> Message {
    let mut headers = Vec::with_capacity(record.headers.len() + 4);
    let mut origin = None;
    for (name, value) in &record.headers {
        match std::str::from_utf8(value) {
            Ok(text) if !name.starts_with("kafka.") => {
                if origin.is_none() && ORIGIN_HEADERS.contains(&name.as_str()) {
                    origin = Some(text.to_string());
                }
                headers.push((name.clone(), text.to_string()));
            }
            _ => headers.push((format!("{HEX_PREFIX}{name}"), hex::encode(value))),
        }
    }
    let id = match &record.key {
        Some(key) => match std::str::from_utf8(key) {
            Ok(text) => {
                headers.push((KEY_HEADER.into(), text.to_string()));
                Some(text.to_string())
            }
            Err(_) => {
                headers.push((KEY_HEX_HEADER.into(), hex::encode(key)));
                None
            }
        },
        None => None,
    };
    if record.value.is_none() {
        headers.push((NULL_VALUE_HEADER.into(), "true".into()));
    }
    headers.push(("kafka.partition".into(), record.partition.to_string()));
    headers.push(("kafka.offset".into(), record.offset.to_string()));
    Message {
        handle,
        id,
        body: record.value.clone().unwrap_or_default(),
        headers,
        deliveries: 1,
        origin: origin.filter(|o| o != topic),
    }
}

fn producing(m: Outgoing) -> Result<Producing, Error> {
    if m.destination.contains(':') {
        return Err(Error::invalid(format!(
            "`{}` is not a topic name (Kafka topic names cannot hold `:`); publish to a topic, \
             and give reprocess-dlq a `parking` topic when its dead-letter queue names a group",
            m.destination
        )));
    }
    let mut key = m.key.map(String::into_bytes);
    let mut headers = Vec::with_capacity(m.headers.len());
    let mut null_value = false;
    for (name, value) in m.headers {
        if name == KEY_HEADER {
            key.get_or_insert(value.into_bytes());
        } else if name == KEY_HEX_HEADER {
            let bytes = hex::decode(&value).map_err(|e| {
                Error::invalid(format!(
                    "a message for `{}` has header {KEY_HEX_HEADER} that is not hex ({e}); \
                     it must hold the key as the adapter gave it",
                    m.destination
                ))
            })?;
            key.get_or_insert(bytes);
        } else if name == NULL_VALUE_HEADER {
            null_value = value == "true";
        } else if let Some(original) = name.strip_prefix(HEX_PREFIX) {
            let bytes = hex::decode(&value).map_err(|e| {
                Error::invalid(format!(
                    "a message for `{}` has header {name} that is not hex ({e}); it must hold \
                     the value as the adapter gave it",
                    m.destination
                ))
            })?;
            headers.push((original.to_string(), bytes));
        } else if !name.starts_with("kafka.") {
            headers.push((name, value.into_bytes()));
        }
    }
    Ok(Producing {
        topic: m.destination,
        partition: None,
        key,
        value: if null_value && m.body.is_empty() {
            None
        } else {
            Some(m.body)
        },
        headers,
    })
}

/// Add a reading of `group` on `topic` to its window in state and judge the window.
fn observe(
    conn: &str,
    topic: &str,
    group: &str,
    reading: Observation,
) -> Result<Option<Verdict>, Error> {
    let key = format!("trend/{conn}/{topic}/{group}");
    let mut window: Vec<Observation> = match state::get(&key)? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            log::warn(&format!(
                "the lag window of {group} on {topic} is unreadable ({e}); starting a new one"
            ));
            Vec::new()
        }),
        None => Vec::new(),
    };
    window.push(reading);
    if window.len() > WINDOW {
        window.drain(..window.len() - WINDOW);
    }
    let mut bytes = serde_json::to_vec(&window)
        .map_err(|e| Error::internal(format!("cannot encode the lag window: {e}")))?;
    // State values are capped at 64 KiB; a topic with very many partitions keeps fewer readings.
    while bytes.len() > 60 << 10 && window.len() > 1 {
        window.remove(0);
        bytes = serde_json::to_vec(&window)
            .map_err(|e| Error::internal(format!("cannot encode the lag window: {e}")))?;
    }
    state::set(&key, &bytes)?;
    Ok(trend::judge(&window))
}

struct KafkaAdapter;

impl Adapter for KafkaAdapter {
    fn stats(conn: String, queue: String) -> Result<QueueStats, Error> {
        let (topic, group) = split(&queue);
        let offsets = kafka::offsets(&conn, topic, group)?;
        let mut stats = QueueStats {
            extra: vec![("partitions".to_string(), offsets.len() as f64)],
            ..QueueStats::with_depth(0)
        };
        let Some(group) = group else {
            stats.depth = offsets.iter().map(|o| o.high.saturating_sub(o.low)).sum();
            return Ok(stats);
        };
        let readings: Vec<Reading> = offsets
            .iter()
            .map(|o| Reading {
                partition: o.partition,
                committed: o.committed,
                low: o.low,
                high: o.high,
            })
            .collect();
        let info = kafka::describe_group(&conn, group)?;
        stats
            .extra
            .push(("members".into(), f64::from(info.members)));
        for r in &readings {
            stats
                .extra
                .push((format!("lag.{}", r.partition), r.lag() as f64));
        }
        stats.depth = readings.iter().map(Reading::lag).sum();
        stats.consumers = Some(info.members);
        let judged = observe(
            &conn,
            topic,
            group,
            Observation {
                at_ms: clock::now_ms(),
                members: info.members,
                partitions: readings,
            },
        )?;
        stats.trend = judged.map(|verdict| {
            for (partition, trend) in verdict.partitions {
                if trend != Trend::Ok {
                    let name = format!("trend.{}.{}", trend.as_str(), partition);
                    stats.extra.push((name, 1.0));
                }
            }
            verdict.group.as_str().to_string()
        });
        Ok(stats)
    }

    fn list(conn: String, pattern: String) -> Result<Vec<String>, Error> {
        Ok(kafka::topics(&conn)?
            .into_iter()
            .filter(|t| glob(&pattern, t))
            .collect())
    }

    fn receive(conn: String, queue: String, max: u32, wait_ms: u32) -> Result<Vec<Message>, Error> {
        let (topic, group) = split(&queue);
        let group = group.map_or_else(|| default_group(topic), str::to_string);
        let records = kafka::consume(&conn, topic, &group, max, wait_ms)?;
        Ok(LEDGER.with_borrow_mut(|ledger| {
            records
                .into_iter()
                .map(|record| {
                    let place = Place {
                        conn: conn.clone(),
                        topic: topic.to_string(),
                        group: group.clone(),
                        partition: record.partition,
                    };
                    let offset = record.offset;
                    // Kept to write it again if it is requeued.
                    let again = Producing {
                        topic: topic.to_string(),
                        partition: Some(record.partition),
                        key: record.key.clone(),
                        value: record.value.clone(),
                        headers: record.headers.clone(),
                    };
                    let handle = ledger.receive(Held {
                        place,
                        offset,
                        record: again,
                    });
                    message(topic, &record, handle)
                })
                .collect()
        }))
    }

    fn publish(conn: String, msgs: Vec<Outgoing>) -> Result<(), Error> {
        let records = msgs
            .into_iter()
            .map(producing)
            .collect::<Result<Vec<_>, _>>()?;
        kafka::produce(&conn, &records)
    }

    fn settle(conn: String, handles: Vec<u64>, how: Settlement) -> Result<(), Error> {
        let again: Vec<Producing> = LEDGER.with_borrow(|ledger| {
            let held = ledger.get(&conn, &handles)?;
            Ok::<_, Error>(match how {
                Settlement::Ack => Vec::new(),
                Settlement::Requeue => held.iter().map(|h| h.record.clone()).collect(),
                Settlement::DeadLetter => {
                    return Err(Error::invalid(
                        "Kafka has no broker-side dead-lettering; publish the records to a \
                         dead-letter topic, then ack them",
                    ));
                }
            })
        })?;
        // A requeued record goes back to the end of its topic before the commit may pass it.
        if !again.is_empty() {
            kafka::produce(&conn, &again)?;
        }
        let commits = LEDGER.with_borrow_mut(|ledger| ledger.settle(&handles));
        for (place, offsets) in commits {
            kafka::commit(&conn, &place.0, &place.1, &offsets)?;
            LEDGER.with_borrow_mut(|ledger| ledger.committed(&conn, &place, &offsets));
        }
        Ok(())
    }

    fn set_limit(_conn: String, queue: String, name: String, _value: u64) -> Result<(), Error> {
        Err(Error::invalid(format!(
            "Kafka has no limit `{name}` qmedic can set on `{queue}`: a consumer's fetch sizes \
             are its own configuration"
        )))
    }
}

export_adapter!(KafkaAdapter);
