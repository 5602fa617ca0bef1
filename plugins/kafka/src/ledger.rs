//! What this adapter instance received and has not settled, and how far each partition may be
//! committed.
//!
//! Kafka commits a position, not a record: committing offset `n` settles everything before it.
//! So a partition is committed only up to its first record still unsettled, and a record that
//! must stay (a requeue) is first written again at the end of its topic, then settled like an
//! ack, so the commit can pass it without losing it.

use std::collections::{BTreeMap, HashMap};

use qmedic_plugin_sdk::Error;
use qmedic_plugin_sdk::kafka::Producing;

/// A partition of a topic as read for a group on a connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Place {
    pub(crate) conn: String,
    pub(crate) topic: String,
    pub(crate) group: String,
    pub(crate) partition: u32,
}

/// A received record, kept until it is settled so a requeue can write it again.
pub(crate) struct Held {
    pub(crate) place: Place,
    pub(crate) offset: u64,
    pub(crate) record: Producing,
}

#[derive(Default)]
struct Partition {
    /// Offsets handed out and not settled, with how many handles each has (a record fetched
    /// twice has two).
    unsettled: BTreeMap<u64, u32>,
    /// The highest offset settled.
    settled: Option<u64>,
    /// The offset last committed.
    committed: Option<u64>,
}

/// Commits to make: per (topic, group), each partition and its next offset.
pub(crate) type Commits = BTreeMap<(String, String), Vec<(u32, u64)>>;

#[derive(Default)]
pub(crate) struct Ledger {
    next_handle: u64,
    held: HashMap<u64, Held>,
    partitions: BTreeMap<Place, Partition>,
}

impl Ledger {
    /// Hold a received record; returns its handle.
    pub(crate) fn receive(&mut self, held: Held) -> u64 {
        self.next_handle += 1;
        *self
            .partitions
            .entry(held.place.clone())
            .or_default()
            .unsettled
            .entry(held.offset)
            .or_default() += 1;
        self.held.insert(self.next_handle, held);
        self.next_handle
    }

    /// The records behind `handles`, all of them received on `conn` and not yet settled; an
    /// error names the first that is not, and changes nothing.
    pub(crate) fn get(&self, conn: &str, handles: &[u64]) -> Result<Vec<&Held>, Error> {
        handles
            .iter()
            .map(|handle| {
                let held = self.held.get(handle).ok_or_else(|| {
                    Error::invalid(format!(
                        "handle {handle} was not received in this run or is already settled"
                    ))
                })?;
                if held.place.conn != conn {
                    return Err(Error::invalid(format!(
                        "handle {handle} was received on `{}`, not `{conn}`",
                        held.place.conn
                    )));
                }
                Ok(held)
            })
            .collect()
    }

    /// Settle `handles` (checked with [`Ledger::get`]) and return the commits whose point moved.
    pub(crate) fn settle(&mut self, handles: &[u64]) -> Commits {
        let mut touched = Vec::new();
        for handle in handles {
            let Some(held) = self.held.remove(handle) else {
                continue;
            };
            let p = self.partitions.entry(held.place.clone()).or_default();
            if let Some(count) = p.unsettled.get_mut(&held.offset) {
                *count -= 1;
                if *count == 0 {
                    p.unsettled.remove(&held.offset);
                }
            }
            p.settled = p.settled.max(Some(held.offset));
            touched.push(held.place);
        }
        touched.sort();
        touched.dedup();
        let mut commits = Commits::new();
        for place in touched {
            let p = self.partitions.entry(place.clone()).or_default();
            let Some(settled) = p.settled else { continue };
            let next = match p.unsettled.keys().next() {
                Some(first) => (*first).min(settled + 1),
                None => settled + 1,
            };
            if p.committed.is_none_or(|c| next > c) {
                commits
                    .entry((place.topic, place.group))
                    .or_default()
                    .push((place.partition, next));
            }
        }
        commits
    }

    /// Record that `offsets` of `topic` were committed for `group` on `conn`.
    pub(crate) fn committed(
        &mut self,
        conn: &str,
        (topic, group): &(String, String),
        offsets: &[(u32, u64)],
    ) {
        for &(partition, next) in offsets {
            let place = Place {
                conn: conn.to_string(),
                topic: topic.clone(),
                group: group.clone(),
                partition,
            };
            self.partitions.entry(place).or_default().committed = Some(next);
        }
    }
}
