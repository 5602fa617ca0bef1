//! The lag trend of a consumer group, judged the way Burrow judges it: not by one lag figure
//! but by how committed offsets and lag moved over a window of observations.
//!
//! Each `stats` call on `topic:group` adds one observation; the window is the last
//! [`WINDOW`] of them, so the cadence of whatever calls `stats` (a playbook's schedule) sets
//! its length in time. Per partition, in this order:
//! - **REWIND**: the committed offset went backwards between two observations, or vanished
//!   (the group's offsets were deleted).
//! - **OK**: lag was zero at some observation (the group caught up within the window).
//! - **STOP**: the committed offset never moved and the group has no members: nobody is
//!   consuming, so nobody commits.
//! - **STALL**: the committed offset never moved while the group has members: they are stuck
//!   (a poison record, a hung handler).
//! - **WARN**: the committed offset moved, but lag grew or held at every step and ended higher:
//!   consumers are falling behind.
//! - **OK** otherwise.
//!
//! The group's trend is its worst partition's, in the order OK < WARN < REWIND < STALL < STOP.
//! Kafka does not say when a group last committed, so STOP (commits stopped) is told from STALL
//! (commits going nowhere) by whether the group has members.

use serde::{Deserialize, Serialize};

/// Observations kept per topic and group.
pub(crate) const WINDOW: usize = 10;
/// Observations needed before a trend is judged.
pub(crate) const MIN_OBSERVATIONS: usize = 3;

/// One `stats` reading of a group on a topic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Observation {
    /// When, in milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    /// Members of the group at that time.
    pub(crate) members: u32,
    pub(crate) partitions: Vec<Reading>,
}

/// One partition in an observation (short field names: the window is kept in plugin state).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub(crate) struct Reading {
    #[serde(rename = "p")]
    pub(crate) partition: u32,
    /// The group's committed offset, if it committed one.
    #[serde(rename = "c")]
    pub(crate) committed: Option<u64>,
    #[serde(rename = "l")]
    pub(crate) low: u64,
    #[serde(rename = "h")]
    pub(crate) high: u64,
}

impl Reading {
    /// Records after the committed offset, or every record in the log when the group never
    /// committed on this partition.
    pub(crate) fn lag(&self) -> u64 {
        self.high.saturating_sub(self.committed.unwrap_or(self.low))
    }
}

/// A trend verdict, ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Trend {
    Ok,
    Warn,
    Rewind,
    Stall,
    Stop,
}

impl Trend {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Trend::Ok => "OK",
            Trend::Warn => "WARN",
            Trend::Rewind => "REWIND",
            Trend::Stall => "STALL",
            Trend::Stop => "STOP",
        }
    }
}

/// A group's trend and each partition's.
pub(crate) struct Verdict {
    /// The worst partition's.
    pub(crate) group: Trend,
    pub(crate) partitions: Vec<(u32, Trend)>,
}

/// The group's trend over `window` (oldest first), with each partition's verdict; `None` until
/// [`MIN_OBSERVATIONS`] are in.
pub(crate) fn judge(window: &[Observation]) -> Option<Verdict> {
    if window.len() < MIN_OBSERVATIONS {
        return None;
    }
    let last = window.last()?;
    let mut verdicts = Vec::new();
    for reading in &last.partitions {
        let series: Vec<Reading> = window
            .iter()
            .filter_map(|o| {
                o.partitions
                    .iter()
                    .find(|r| r.partition == reading.partition)
                    .copied()
            })
            .collect();
        // A partition new to the window (added to the topic) is not judged until it has enough
        // readings of its own.
        let trend = if series.len() < MIN_OBSERVATIONS {
            Trend::Ok
        } else {
            partition_trend(&series, last.members)
        };
        verdicts.push((reading.partition, trend));
    }
    let group = verdicts.iter().map(|(_, t)| *t).max().unwrap_or(Trend::Ok);
    Some(Verdict {
        group,
        partitions: verdicts,
    })
}

/// One partition's verdict from its readings, oldest first.
fn partition_trend(series: &[Reading], members: u32) -> Trend {
    let rewound = series
        .windows(2)
        .any(|w| match (w[0].committed, w[1].committed) {
            (Some(before), Some(after)) => after < before,
            (Some(_), None) => true,
            _ => false,
        });
    if rewound {
        return Trend::Rewind;
    }
    let lags: Vec<u64> = series.iter().map(Reading::lag).collect();
    if lags.contains(&0) {
        return Trend::Ok;
    }
    let (first, last) = (series[0].committed, series[series.len() - 1].committed);
    if first == last {
        return if members == 0 {
            Trend::Stop
        } else {
            Trend::Stall
        };
    }
    let growing = lags.windows(2).all(|w| w[1] >= w[0]) && lags[lags.len() - 1] > lags[0];
    if growing { Trend::Warn } else { Trend::Ok }
}
